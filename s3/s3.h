/* s3.h - the S3 API client: SigV4 header signing through libcurl, a SigV4
 * query presigner, single and multipart uploads with digest checks,
 * downloads, listing. It knows buckets and keys, never repos or revisions.
 *
 * Keys are restricted to the characters that need no URI encoding
 * (A-Z a-z 0-9 - . _ ~ /): Debian's curl 7.88 signs the path as sent and
 * only from 8.9.0 encodes it. Secrets are never put in messages. */
#ifndef S3_H
#define S3_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"

/* Where and as whom. Strings are owned (s3_config_release). */
struct s3_config {
	char *endpoint;         /* scheme://host[:port], no trailing slash */
	char *region;
	char *access_key, *secret_key, *session_token; /* token may be NULL */
	char *bucket;
	char *prefix;           /* "" or "a/b" (no leading or trailing '/') */
	int path_style;         /* 1: endpoint/bucket/key; 0: bucket.host/key */
	uint64_t part_size;     /* multipart part size (0: 16 MiB, raised to fit 10,000 parts) */
	uint64_t single_max;    /* largest single PUT (0: 64 MiB; at most 5 GiB) */
	uint64_t send_rate;     /* bytes/s cap per upload connection (0: none) */
	int parallel;           /* multipart parts sent at once (0: 4) */
	int retries;            /* failures in a row tolerated per request (0: 5) */
};

/* Parses "s3://BUCKET[/PREFIX]" and reads the AWS conventions from the
 * environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
 * AWS_REGION / AWS_DEFAULT_REGION (default us-east-1), AWS_ENDPOINT_URL_S3 /
 * AWS_ENDPOINT_URL (path-style; default https://s3.REGION.amazonaws.com,
 * virtual-hosted), and HUBMIRROR_S3_PART_SIZE, HUBMIRROR_S3_SINGLE_MAX,
 * HUBMIRROR_S3_SEND_RATE (bytes), HUBMIRROR_S3_PARALLEL (parts at once). HM_ERR_USAGE with a one-line message when
 * the URI or a variable is malformed or credentials are missing. */
enum hm_err s3_config_from_env(struct hm_ctx *ctx, const char *uri, struct s3_config *cfg) HM_MUST_CHECK;
void s3_config_release(struct s3_config *cfg);
/* 1 when s looks like an s3:// store. */
int s3_is_uri(const char *s);
/* 1 when key is a usable object key (see above), at most 1024 bytes. */
int s3_key_ok(const char *key);

struct s3_client;
/* Takes a copy of cfg. *out owned by the caller (s3_client_free). */
enum hm_err s3_client_new(struct hm_ctx *ctx, const struct s3_config *cfg, struct s3_client **out) HM_MUST_CHECK;
void s3_client_free(struct s3_client *c);
const struct s3_config *s3_client_config(const struct s3_client *c);
/* "PREFIX/rest" or "rest" when there is no prefix, into buf. */
void s3_key(const struct s3_client *c, const char *rest, char *buf, size_t len);

/* ---- presigning ---- */

/* A presigned URL for method ("GET", "HEAD", "PUT") on key, valid for
 * expires seconds (1..604800) from now (unix seconds). Caller frees; NULL
 * when out of memory or the key is unusable. */
char *s3_presign(const struct s3_config *cfg, const char *method, const char *key, int64_t now,
		 int expires);
/* The SigV4 signing key and signature steps, exposed for tests:
 * hex HMAC-SHA256 signature of string_to_sign under the secret/date/region/"s3" chain. */
void s3_sigv4_signature(const char *secret, const char *date8, const char *region, const char *service,
			const char *string_to_sign, char out[65]);

/* ---- objects ---- */

/* Uploads size bytes of fd (read with pread from offset 0) as key. The
 * content SHA-256 is computed while sending and must equal sha256 (64 hex);
 * the object becomes visible only when it matched: a single PUT carries the
 * digest as x-amz-content-sha256 (the server checks it), a multipart upload
 * is completed only after the digest of every part sent matched, else
 * aborted. Above cfg->single_max the upload is multipart and resumes an
 * unfinished upload of the same key, reusing parts whose MD5 matches
 * (ListParts). *sent (may be NULL) receives the bytes sent this time. */
enum hm_err s3_put_file(struct hm_ctx *ctx, struct s3_client *c, const char *key, int fd, uint64_t size,
			const char *sha256, uint64_t *sent) HM_MUST_CHECK;
/* A multipart upload that runs while its file is being written: parts are
 * sent, cfg->parallel at once, as soon as s3_mpu_avail says their bytes are
 * final; each part's MD5 is checked against its ETag and the file's SHA-256
 * is computed as its prefix grows. It resumes an unfinished upload of the
 * same key, reusing parts whose MD5 matches (ListParts). Memory is bounded
 * (no part is held in memory). fd is duplicated: the caller keeps its own.
 * Errors that happen in the background are reported by s3_mpu_finish.
 * *out owned by the caller: s3_mpu_finish or s3_mpu_free. */
struct s3_mpu;
enum hm_err s3_mpu_start(struct hm_ctx *ctx, struct s3_client *c, const char *key, int fd, uint64_t size,
			 struct s3_mpu **out) HM_MUST_CHECK;
/* Bytes [0, written) of the file are final (it never goes back: a file
 * that starts over needs a new s3_mpu). */
void s3_mpu_avail(struct s3_mpu *m, uint64_t written);
/* The whole file is written: waits for the parts, then completes the upload
 * when the file's SHA-256 is sha256, else aborts it (HM_ERR_CORRUPT). Other
 * failures keep the finished parts for the next try. Frees m in every case.
 * *sent (may be NULL) receives the bytes sent this time. */
enum hm_err s3_mpu_finish(struct hm_ctx *ctx, struct s3_mpu *m, const char *sha256, uint64_t *sent) HM_MUST_CHECK;
/* Stops and frees m without completing it (its parts stay for a later try);
 * NULL is fine. */
void s3_mpu_free(struct s3_mpu *m);

/* Puts a small object from memory (signed with its real payload digest). */
enum hm_err s3_put_buf(struct hm_ctx *ctx, struct s3_client *c, const char *key, const void *data,
		       size_t len) HM_MUST_CHECK;
/* Gets a whole object of at most max bytes into *out (caller frees; NUL
 * after the bytes). HM_ERR_NOT_FOUND when there is no such key. */
enum hm_err s3_get_buf(struct hm_ctx *ctx, struct s3_client *c, const char *key, size_t max, char **out,
		       size_t *len) HM_MUST_CHECK;
/* Streams an object to fn (returns 0 to go on, non-zero to stop with
 * HM_ERR_CANCELLED); *size receives the object's size. */
enum hm_err s3_get(struct hm_ctx *ctx, struct s3_client *c, const char *key,
		   int (*fn)(void *ud, const void *data, size_t n), void *ud, uint64_t *size) HM_MUST_CHECK;
/* *exists and *size of key. */
enum hm_err s3_head(struct hm_ctx *ctx, struct s3_client *c, const char *key, int *exists,
		    uint64_t *size) HM_MUST_CHECK;
/* Deletes key (no error when it does not exist). */
enum hm_err s3_delete(struct hm_ctx *ctx, struct s3_client *c, const char *key) HM_MUST_CHECK;
/* Checks that the bucket exists and the credentials are accepted. */
enum hm_err s3_check_bucket(struct hm_ctx *ctx, struct s3_client *c) HM_MUST_CHECK;

/* One listed object. */
struct s3_object {
	const char *key;
	uint64_t size;
	int64_t mtime;          /* unix seconds */
	const char *etag;       /* without quotes */
};
/* Lists every object under prefix (ListObjectsV2, all pages); fn returns 0
 * to go on. */
enum hm_err s3_list(struct hm_ctx *ctx, struct s3_client *c, const char *prefix,
		    int (*fn)(void *ud, const struct s3_object *o), void *ud) HM_MUST_CHECK;

/* One unfinished multipart upload. */
struct s3_upload {
	const char *key, *upload_id;
	int64_t initiated;      /* unix seconds */
};
enum hm_err s3_list_uploads(struct hm_ctx *ctx, struct s3_client *c, const char *prefix,
			    int (*fn)(void *ud, const struct s3_upload *u), void *ud) HM_MUST_CHECK;
enum hm_err s3_abort_upload(struct hm_ctx *ctx, struct s3_client *c, const char *key,
			    const char *upload_id) HM_MUST_CHECK;

/* ---- helpers shared with tests ---- */

/* Finds the text of the first <tag>...</tag> at or after *pos in xml[0..n),
 * entity-decoded into out (truncated to len - 1); advances *pos past it.
 * Returns 1 when found. */
int s3_xml_next(const char *xml, size_t n, size_t *pos, const char *tag, char *out, size_t len);
/* The first <tag>...</tag> of xml[0..n), as s3_xml_next from the start. */
int s3_xml_get(const char *xml, size_t n, const char *tag, char *out, size_t len);
/* Parses an ISO 8601 UTC time ("2026-12-03T07:54:50.000Z"); -1 when malformed. */
int64_t s3_parse_time(const char *s);

#endif
