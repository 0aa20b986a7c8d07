/* fuzz_tree.c - libFuzzer target: a hub tree page (untrusted API JSON). */
#include <stdint.h>
#include <stdlib.h>
#include "../../fetch/fetch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hm_ctx ctx = {0};
	struct fetch_entry *v = NULL;
	size_t n = 0;
	if (fetch_parse_tree(&ctx, (const char *)data, size, &v, &n) == HM_OK) {
		/* whatever passed must be safe to use as a path */
		for (size_t i = 0; i < n; i++)
			if (!v[i].path[0] || v[i].path[0] == '/')
				abort();
		fetch_entries_free(v, n);
	}
	return 0;
}
