/* fuzz_state.c - libFuzzer target: a resume state file (may be damaged). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "../../fetch/resume.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64];
	struct fetch_range *r = NULL;
	size_t n = 0;
	snprintf(path, sizeof(path), "/tmp/hm-fuzz-state-%ld", (long)getpid());
	FILE *f = fopen(path, "wb");
	if (!f)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	if (fetch_state_load(path, 1000000, (size & 1) ? "fuzz-boot" : "", &r, &n) == 0) {
		/* what is accepted is sorted, in bounds and disjoint */
		for (size_t i = 0; i < n; i++)
			if (r[i].start >= r[i].end || r[i].end > 1000000 || (i && r[i].start < r[i - 1].end))
				abort();
		free(r);
	}
	unlink(path);
	return 0;
}
