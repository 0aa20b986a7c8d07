/* s3-int.h - internals shared by the s3/ files. */
#ifndef S3_INT_H
#define S3_INT_H

#include "s3.h"
#include <curl/curl.h>
#include <openssl/evp.h>
#include "../util/util.h"

struct s3_client {
	struct s3_config cfg;
	char *sigv4;            /* "aws:amz:REGION:s3" */
	char *userpwd;          /* "ACCESS:SECRET" (wiped on free) */
};

/* URI-encodes s into b (unreserved characters kept; '/' kept when keep_slash). */
int s3_uri_encode(struct util_buf *b, const char *s, int keep_slash) HM_MUST_CHECK;
/* The URL of key (path-style or virtual-hosted) and, in *host (may be NULL,
 * caller frees), the Host the signature covers. Caller frees; NULL when out of memory. */
char *s3_object_url(const struct s3_config *cfg, const char *key, char **host);
void s3_sha256_hex(const void *data, size_t n, char out[65]);

/* One request (client.c). */
struct req {
	const char *method;         /* GET PUT POST DELETE HEAD */
	const char *key;            /* "" = the bucket */
	const char *query;          /* canonical query or NULL */
	const char *range;          /* "bytes=..." or NULL */
	/* body from a file region ... */
	int fd;
	uint64_t off, len;
	/* ... or from memory */
	const char *buf;
	size_t buflen;
	const char *payload_sha;    /* x-amz-content-sha256 value; NULL: UNSIGNED-PAYLOAD */
	const EVP_MD_CTX *sha_base; /* digests of the file body sent: reset from base each try */
	EVP_MD_CTX *sha, *md5;
	/* response body: to sink, else collected (up to body_max) */
	int (*sink)(void *ud, const void *data, size_t n);
	void *ud;
	size_t body_max;
	/* out */
	long status;
	struct util_buf body;
	char etag[128];
	int64_t content_length;
	uint64_t delivered;         /* bytes given to sink (a retry resumes after them) */
	uint64_t pos;               /* upload position in this try */
	int sink_stopped, too_big;
};

void s3_req_init(struct req *r, const char *method, const char *key);
/* Runs r with retries on handle h (reused for keep-alive). An HTTP status
 * >= 300 is an error (HM_ERR_NOT_FOUND for 404 ...); retries are announced
 * as HM_EV_RETRY events on ctx. */
enum hm_err s3_perform(struct hm_ctx *ctx, struct s3_client *c, CURL *h, struct req *r) HM_MUST_CHECK;
enum hm_err s3_check_key(struct hm_ctx *ctx, const char *key) HM_MUST_CHECK;
/* "partNumber=N&uploadId=ID" (part > 0) or "uploadId=ID" into q (emptied first). */
int s3_upload_query(struct util_buf *q, int part, const char *upload_id) HM_MUST_CHECK;
/* Hex of the first n bytes of m's digest (finalizes m). */
void s3_final_hex(EVP_MD_CTX *m, char *out, size_t n);

#endif
