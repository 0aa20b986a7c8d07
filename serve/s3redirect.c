/* s3redirect.c - /resolve/ on an S3 store: an LFS file's GET is answered
 * with 302 to a presigned URL of its blob, so the bytes come from the object
 * store's gateways, as huggingface.co does with its CDN. The 302 carries the
 * Hub's headers (X-Repo-Commit, X-Linked-Etag, X-Linked-Size, ETag) because
 * clients keep the first response's headers, and RGW's own ETag is an MD5.
 * HEAD is answered here (a URL presigned for GET answers HEAD with 403);
 * small non-LFS files are copied into the local cache and sent from there. */
#include <stdlib.h>
#include <string.h>
#include "serve-int.h"
#include "../store/index.h"

static ssize_t no_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	(void)pos;
	(void)buf;
	(void)max;
	return MHD_CONTENT_READER_END_OF_STREAM;
}

int srv_s3_file(struct srv_req *q, struct MHD_Connection *c, struct store *st, const char *commit,
		const struct store_file *sf, enum MHD_Result *ret)
{
	struct srv_file f = {sf->path, sf->size, sf->sha256, sf->git_oid, sf->lfs};
	struct MHD_Response *resp;
	struct hm_ctx ctx = {0};
	int expires = q->s->o->presign_expires > 0 ? q->s->o->presign_expires : 300;

	q->cache = "hit";
	/* a client that has the file (If-None-Match) gets 304 from the node */
	if (srv_not_modified(q, c, commit, &f, ret))
		return 1;
	if (!strcmp(q->method, "HEAD")) {
		/* the size for Content-Length; MHD sends no body to a HEAD */
		resp = MHD_create_response_from_callback(sf->size, 4096, no_body, NULL, NULL);
		if (!resp) {
			*ret = MHD_NO;
			return 1;
		}
		*ret = srv_queue_file_headers(q, c, resp, commit, &f, 200);
		return 1;
	}
	if (!sf->lfs) {
		if (store_blob_local(&ctx, st, sf->sha256, sf->size)) {
			*ret = srv_send_error(q, c, 502, NULL, "cannot read the file from the object store");
			return 1;
		}
		return 0;
	}
	char *url = store_blob_url(st, sf->sha256, expires);
	if (!url) {
		*ret = srv_send_error(q, c, 500, NULL, "cannot presign the file's URL");
		return 1;
	}
	resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		free(url);
		*ret = MHD_NO;
		return 1;
	}
	/* the URL expires: caches must not keep the redirect longer than that */
	int bad = srv_header(resp, "Location", url) | srv_header(resp, "Cache-Control", "private, max-age=0");
	free(url);
	if (bad) {
		MHD_destroy_response(resp);
		*ret = srv_send_error(q, c, 500, NULL, "cannot set the response headers");
		return 1;
	}
	*ret = srv_queue_file_headers(q, c, resp, commit, &f, 302);
	return 1;
}
