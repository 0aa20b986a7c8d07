/* s3-int.h - internals shared by the s3/ files. */
#ifndef S3_INT_H
#define S3_INT_H

#include "s3.h"
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

#endif
