/* rebuild.c - rebuilding a lost index from the blobs (`hubmirror rebuild-index`). */
#include <stdio.h>
#include <string.h>
#include "mirror.h"
#include "../verify/verify.h"
#include "../store/index.h"

struct rebuild_ud {
	struct hm_ctx *ctx;
	void (*on_bad)(void *ud, const char *path);
	void *ud;
};

/* The store names the file; verify/ hashes it. */
static int check_blob(void *ud, const char *path, const char *sha256, char git_oid[41], uint64_t *size)
{
	struct rebuild_ud *r = ud;
	struct hm_ctx quiet = {0};
	char sha[65];

	if (hm_cancelled(r->ctx))
		return -1;
	quiet.cancel = r->ctx->cancel;
	if (verify_file(&quiet, path, 1, sha, git_oid, size) != HM_OK)
		return hm_cancelled(r->ctx) ? -1 : 0;
	return strcmp(sha, sha256) == 0;
}

static void bad_blob(void *ud, const char *path)
{
	struct rebuild_ud *r = ud;
	if (r->on_bad)
		r->on_bad(r->ud, path);
}

enum hm_err mirror_rebuild_index(struct hm_ctx *ctx, struct store *st, void (*on_bad)(void *ud, const char *path),
				 void *ud, struct store_rebuild_result *res)
{
	struct rebuild_ud r = {ctx, on_bad, ud};
	return store_rebuild_index(ctx, st, check_blob, &r, bad_blob, res);
}
