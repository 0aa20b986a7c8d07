/* open.c - opening a store by name: a local directory (store.c) or an
 * s3://BUCKET[/PREFIX] store (remote.c, whose index is a local cache). On
 * top of both, so that neither needs the other by name. */
#include "store-int.h"
#include "../s3/s3.h"

enum hm_err store_open(struct hm_ctx *ctx, const char *dir, struct store **out)
{
	return store_open_mode(ctx, dir, STORE_CREATE, out);
}

enum hm_err store_open_mode(struct hm_ctx *ctx, const char *dir, enum store_mode mode, struct store **out)
{
	*out = NULL;
	if (s3_is_uri(dir))
		return store_remote_open(ctx, dir, out);
	return store_open_local(ctx, dir, mode, out);
}
