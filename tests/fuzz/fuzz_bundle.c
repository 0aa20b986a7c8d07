/* fuzz_bundle.c - libFuzzer target: a bundle (untrusted archive: tar,
 * compressed or not) imported from memory into a scratch store. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <unistd.h>
#include "../../bundle/bundle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct store *scratch_st;
static char dir[64];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0; /* keep going */
}

static void cleanup(void)
{
	store_close(scratch_st);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* One scratch store for the whole run (opening one per input would be most
 * of the time spent), removed at exit. */
static struct store *scratch(void)
{
	if (!scratch_st) {
		struct hm_ctx ctx = {0};
		snprintf(dir, sizeof(dir), "/tmp/hm-fuzz-bundle-XXXXXX");
		if (!mkdtemp(dir) || store_open(&ctx, dir, &scratch_st) != HM_OK)
			abort();
		atexit(cleanup);
	}
	return scratch_st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hm_ctx ctx = {0};
	struct bundle_import_result r;
	struct store *st = scratch();
	enum hm_err err = bundle_import_memory(&ctx, st, data, size, "fuzz", NULL, &r);
	/* a failed import records nothing */
	if (err && r.nrecorded)
		abort();
	if (!err)
		for (size_t i = 0; i < r.nrevs; i++)
			if (!r.revs[i].repo || !r.revs[i].repo[0] || r.revs[i].repo[0] == '/')
				abort();
	bundle_import_result_release(&r);
	return 0;
}
