/* client.c - S3 requests signed by libcurl's CURLOPT_AWS_SIGV4, with the
 * workarounds Debian's curl 7.88 needs (x-amz-content-sha256 sent by us,
 * valueless query keys written "uploads=", query parameters pre-sorted and
 * encoded: 7.88 signs the query as written), retries with fetch's backoff on
 * 5xx/SlowDown and dropped connections, uploads with digest checks. */
#include <curl/curl.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "s3-int.h"
#include "../fetch/fetch.h"

#define MIB (1024ull * 1024)
#define S3_MIN_PART (5 * MIB)
#define S3_MAX_PARTS 10000
#define S3_MAX_SINGLE (5ull * 1024 * MIB)
#define ERR_BODY_MAX (64 * 1024)

/* ---- client ---- */

static char *dup_or(const char *s)
{
	return s ? util_strdup(s) : NULL;
}

enum hm_err s3_client_new(struct hm_ctx *ctx, const struct s3_config *cfg, struct s3_client **out)
{
	struct s3_client *c = calloc(1, sizeof(*c));
	*out = NULL;
	if (!c)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	c->cfg = *cfg;
	c->cfg.endpoint = dup_or(cfg->endpoint);
	c->cfg.region = dup_or(cfg->region);
	c->cfg.access_key = dup_or(cfg->access_key);
	c->cfg.secret_key = dup_or(cfg->secret_key);
	c->cfg.session_token = dup_or(cfg->session_token);
	c->cfg.bucket = dup_or(cfg->bucket);
	c->cfg.prefix = dup_or(cfg->prefix ? cfg->prefix : "");
	if (!c->cfg.part_size)
		c->cfg.part_size = 16 * MIB;
	if (c->cfg.part_size < S3_MIN_PART)
		c->cfg.part_size = S3_MIN_PART;
	if (!c->cfg.single_max)
		c->cfg.single_max = 64 * MIB;
	if (c->cfg.single_max > S3_MAX_SINGLE)
		c->cfg.single_max = S3_MAX_SINGLE;
	if (c->cfg.retries <= 0)
		c->cfg.retries = 5;
	c->sigv4 = util_asprintf("aws:amz:%s:s3", cfg->region);
	c->userpwd = util_asprintf("%s:%s", cfg->access_key, cfg->secret_key);
	if (!c->cfg.endpoint || !c->cfg.region || !c->cfg.access_key || !c->cfg.secret_key || !c->cfg.bucket ||
	    !c->cfg.prefix || (cfg->session_token && !c->cfg.session_token) || !c->sigv4 || !c->userpwd) {
		s3_client_free(c);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	*out = c;
	return HM_OK;
}

void s3_client_free(struct s3_client *c)
{
	if (!c)
		return;
	s3_config_release(&c->cfg);
	free(c->sigv4);
	if (c->userpwd) {
		OPENSSL_cleanse(c->userpwd, strlen(c->userpwd));
		free(c->userpwd);
	}
	free(c);
}

const struct s3_config *s3_client_config(const struct s3_client *c)
{
	return &c->cfg;
}

void s3_key(const struct s3_client *c, const char *rest, char *buf, size_t len)
{
	if (*c->cfg.prefix)
		snprintf(buf, len, "%s/%s", c->cfg.prefix, rest);
	else
		snprintf(buf, len, "%s", rest);
}

/* ---- one request ---- */



static size_t read_cb(char *dst, size_t size, size_t nmemb, void *ud)
{
	struct req *r = ud;
	size_t want = size * nmemb;
	uint64_t left = r->len - r->pos;
	ssize_t got;
	if (want > left)
		want = (size_t)left;
	if (!want)
		return 0;
	if (r->buf) {
		memcpy(dst, r->buf + r->pos, want);
		got = (ssize_t)want;
	} else {
		do
			got = pread(r->fd, dst, want, (off_t)(r->off + r->pos));
		while (got < 0 && errno == EINTR);
		if (got <= 0)
			return CURL_READFUNC_ABORT;
		if (r->sha)
			EVP_DigestUpdate(r->sha, dst, (size_t)got);
		if (r->md5)
			EVP_DigestUpdate(r->md5, dst, (size_t)got);
	}
	r->pos += (uint64_t)got;
	return (size_t)got;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
	struct req *r = ud;
	size_t n = size * nmemb;
	/* only a successful answer's body goes to the sink */
	if (r->sink && r->status >= 200 && r->status < 300) {
		if (r->sink(r->ud, data, n)) {
			r->sink_stopped = 1;
			return 0;
		}
		r->delivered += n;
		return n;
	}
	size_t max = r->sink || r->status >= 300 ? ERR_BODY_MAX : r->body_max;
	if (r->body.len + n > max) {
		r->too_big = 1;
		return 0;
	}
	if (util_buf_add(&r->body, data, n))
		return 0;
	return n;
}

/* A transfer stops when the caller's cancel flag is set (^C, or an upload
 * given up: s3_mpu_free must not wait for a part to finish). */
static int xferinfo_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return hm_cancelled(ud) ? 1 : 0;
}

static size_t header_cb(char *buf, size_t size, size_t nmemb, void *ud)
{
	struct req *r = ud;
	size_t n = size * nmemb;
	if (n >= 5 && !memcmp(buf, "HTTP/", 5)) {
		/* a new response (after 100 Continue or a retry): forget the old one */
		const char *sp = memchr(buf, ' ', n);
		r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		r->etag[0] = 0;
		r->content_length = -1;
		return n;
	}
	if (n > 5 && !strncasecmp(buf, "ETag:", 5)) {
		size_t i = 5, j = 0;
		while (i < n && (buf[i] == ' ' || buf[i] == '"'))
			i++;
		while (i < n && buf[i] != '"' && buf[i] != '\r' && buf[i] != '\n' && j + 1 < sizeof(r->etag))
			r->etag[j++] = buf[i++];
		r->etag[j] = 0;
	} else if (n > 15 && !strncasecmp(buf, "Content-Length:", 15)) {
		r->content_length = strtoll(buf + 15, NULL, 10);
	}
	return n;
}

/* S3's error Code and Message from an error body. */
static void error_words(const struct req *r, char *code, size_t clen, char *msg, size_t mlen)
{
	code[0] = msg[0] = 0;
	if (!r->body.len)
		return;
	s3_xml_get(r->body.buf, r->body.len, "Code", code, clen);
	s3_xml_get(r->body.buf, r->body.len, "Message", msg, mlen);
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	for (char *p = code; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
			*p = '?';
}

static enum hm_err status_err(struct hm_ctx *ctx, const struct s3_client *c, const struct req *r)
{
	char code[64], msg[200], what[1200];
	error_words(r, code, sizeof(code), msg, sizeof(msg));
	if (r->key && *r->key)
		snprintf(what, sizeof(what), "s3://%s/%s", c->cfg.bucket, r->key);
	else
		snprintf(what, sizeof(what), "s3://%s", c->cfg.bucket);
	if (!strcmp(code, "NoSuchBucket"))
		return hm_fail(ctx, HM_ERR_NOT_FOUND, "bucket '%s' does not exist at %s", c->cfg.bucket,
			       c->cfg.endpoint);
	if (r->status == 404 || !strcmp(code, "NoSuchKey") || !strcmp(code, "NoSuchUpload"))
		return hm_fail(ctx, HM_ERR_NOT_FOUND, "%s not found%s%s", what, code[0] ? ": " : "", code);
	if (r->status == 401 || r->status == 403 || !strcmp(code, "InvalidAccessKeyId") ||
	    !strcmp(code, "SignatureDoesNotMatch") || !strcmp(code, "AccessDenied"))
		return hm_fail(ctx, HM_ERR_AUTH,
			       "access to %s denied (HTTP %ld%s%s): check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION",
			       what, r->status, code[0] ? " " : "", code);
	if (!strcmp(code, "BadDigest") || !strcmp(code, "XAmzContentSHA256Mismatch") ||
	    !strcmp(code, "InvalidDigest"))
		return hm_fail(ctx, HM_ERR_CORRUPT, "%s: the server received other bytes than were sent (%s)", what,
			       code);
	if (r->status == 507 || !strcmp(code, "QuotaExceeded") || !strcmp(code, "EntityTooLarge"))
		return hm_fail(ctx, HM_ERR_NOSPC, "%s: the object store refused the data (%s)", what,
			       code[0] ? code : "HTTP 507");
	return hm_fail(ctx, HM_ERR_HTTP, "unexpected HTTP %ld from the object store for %s%s%s%s%s", r->status, what,
		       code[0] ? " (" : "", code, code[0] ? ")" : "", msg[0] ? "" : "");
}

static int retryable(const struct req *r)
{
	char code[64], msg[8];
	if (fetch_http_retryable(r->status))
		return 1;
	error_words(r, code, sizeof(code), msg, sizeof(msg));
	return !strcmp(code, "SlowDown") || !strcmp(code, "InternalError") || !strcmp(code, "RequestTimeout");
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Forgets what an earlier attempt of r received. */
static void attempt_reset(struct req *r)
{
	r->status = 0;
	r->pos = 0;
	r->etag[0] = 0;
	r->content_length = -1;
	r->too_big = r->sink_stopped = 0;
	util_buf_release(&r->body);
	if (r->sha && r->sha_base)
		EVP_MD_CTX_copy_ex(r->sha, r->sha_base);
	if (r->md5)
		EVP_DigestInit_ex(r->md5, EVP_md5(), NULL);
}

/* The request's own headers (payload hash, session token, range) into
 * *hdrs (the caller's to free, also on failure). 0, or -1 out of memory. */
static int attempt_headers(const struct s3_client *c, const struct req *r, struct curl_slist **hdrs)
{
	struct curl_slist *t;
	char hv[1200], range[64];

	snprintf(hv, sizeof(hv), "x-amz-content-sha256: %s", r->payload_sha ? r->payload_sha : "UNSIGNED-PAYLOAD");
	t = curl_slist_append(*hdrs, hv);
	if (t)
		*hdrs = t;
	if (t && c->cfg.session_token) {
		snprintf(hv, sizeof(hv), "x-amz-security-token: %s", c->cfg.session_token);
		t = curl_slist_append(*hdrs, hv);
		OPENSSL_cleanse(hv, sizeof(hv));
		if (t)
			*hdrs = t;
	}
	if (t && (r->range || r->delivered)) {
		if (r->delivered)
			snprintf(range, sizeof(range), "Range: bytes=%llu-", (unsigned long long)r->delivered);
		else
			snprintf(range, sizeof(range), "Range: %s", r->range);
		t = curl_slist_append(*hdrs, range);
		if (t)
			*hdrs = t;
	}
	/* no "Expect:" override: curl 7.88 signs the empty header it then drops */
	return t ? 0 : -1;
}

/* Sets up handle h (just reset) for one attempt of r. */
static void attempt_setopts(struct hm_ctx *ctx, const struct s3_client *c, CURL *h, struct req *r, const char *url,
			    struct curl_slist *hdrs, char *errbuf)
{
	errbuf[0] = 0;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "hubmirror-s3");
	curl_easy_setopt(h, CURLOPT_AWS_SIGV4, c->sigv4);
	curl_easy_setopt(h, CURLOPT_USERPWD, c->userpwd);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	if (ctx->cancel) {
		curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
		curl_easy_setopt(h, CURLOPT_XFERINFODATA, ctx);
	}
	if (!strcmp(r->method, "HEAD")) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (!strcmp(r->method, "PUT")) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(h, CURLOPT_READDATA, r);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->len);
		/* fewer, larger reads and digest updates than the 64 KiB default */
		curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 1L << 20);
		if (c->cfg.send_rate)
			curl_easy_setopt(h, CURLOPT_MAX_SEND_SPEED_LARGE, (curl_off_t)c->cfg.send_rate);
	} else if (!strcmp(r->method, "POST")) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->buf ? r->buf : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->buf ? r->buflen : 0));
	} else if (strcmp(r->method, "GET")) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
	} else if (r->sink) {
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024);
	}
}

/* What attempt number attempt of r, which ended with rc, means: 1 when it
 * is the last (*err says how it went), 0 to try again. */
static int attempt_done(struct hm_ctx *ctx, const struct s3_client *c, const struct req *r, CURLcode rc,
			int attempt, const char *errbuf, enum hm_err *err)
{
	if (rc == CURLE_OK && r->status >= 200 && r->status < 300)
		*err = HM_OK;
	else if (rc == CURLE_ABORTED_BY_CALLBACK && hm_cancelled(ctx))
		*err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
	else if (r->sink_stopped)
		*err = hm_fail(ctx, HM_ERR_CANCELLED, "stopped reading s3://%s/%s", c->cfg.bucket, r->key);
	else if (rc == CURLE_OK && r->status >= 300 && !retryable(r))
		*err = status_err(ctx, c, r);
	else if (r->too_big)
		*err = hm_fail(ctx, HM_ERR_BAD_INPUT, "s3://%s/%s is larger than expected", c->cfg.bucket, r->key);
	else if (rc == CURLE_ABORTED_BY_CALLBACK || rc == CURLE_READ_ERROR)
		*err = hm_fail(ctx, HM_ERR_IO, "cannot read the data to upload to s3://%s/%s: %s", c->cfg.bucket,
			       r->key, strerror(errno));
	else if (hm_cancelled(ctx))
		*err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
	else if (attempt > c->cfg.retries && rc != CURLE_OK)
		*err = hm_fail(ctx, rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST
					    ? HM_ERR_UNREACHABLE : HM_ERR_NET,
			       "object store %s: %s (after %d tries)", c->cfg.endpoint,
			       errbuf[0] ? errbuf : curl_easy_strerror(rc), attempt);
	else if (attempt > c->cfg.retries)
		*err = status_err(ctx, c, r);
	else
		return 0;
	return 1;
}

/* Runs r with retries on handle h (reused for keep-alive). An HTTP status
 * >= 300 is an error (HM_ERR_NOT_FOUND for 404 ...), except that the caller
 * can read r->status when it returns HM_OK. */
enum hm_err s3_perform(struct hm_ctx *ctx, struct s3_client *c, CURL *h, struct req *r)
{
	enum hm_err err = HM_OK;
	struct util_buf url = UTIL_BUF_INIT;
	struct curl_slist *hdrs = NULL;
	char errbuf[CURL_ERROR_SIZE], *base = NULL;
	int attempt = 0;

	base = s3_object_url(&c->cfg, r->key ? r->key : "", NULL);
	if (!base || util_buf_adds(&url, base) ||
	    (r->query && (util_buf_adds(&url, "?") || util_buf_adds(&url, r->query)))) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		CURLcode rc;
		double wait;

		curl_slist_free_all(hdrs);
		hdrs = NULL;
		curl_easy_reset(h);
		attempt_reset(r);
		if (attempt_headers(c, r, &hdrs)) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		attempt_setopts(ctx, c, h, r, url.buf, hdrs, errbuf);
		rc = curl_easy_perform(h);
		attempt++;
		if (attempt_done(ctx, c, r, rc, attempt, errbuf, &err))
			break;
		wait = fetch_retry_delay(attempt, -1);
		{
			char m[256];
			snprintf(m, sizeof(m), "object store: %s, retrying in %.1fs",
				 rc != CURLE_OK ? curl_easy_strerror(rc) : "server busy", wait);
			struct hm_event ev = {.kind = HM_EV_RETRY, .name = r->key, .msg = m};
			hm_emit(ctx, &ev);
		}
		sleep_s(wait);
	}
out:
	curl_slist_free_all(hdrs);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_USERPWD, NULL);
	free(base);
	util_buf_release(&url);
	return err;
}

void s3_req_init(struct req *r, const char *method, const char *key)
{
	memset(r, 0, sizeof(*r));
	r->method = method;
	r->key = key;
	r->fd = -1;
	r->body_max = 16 * MIB;
	r->content_length = -1;
}

/* One-shot request on a fresh handle. */
static enum hm_err run(struct hm_ctx *ctx, struct s3_client *c, struct req *r)
{
	CURL *h = curl_easy_init();
	enum hm_err err;
	if (!h)
		return hm_fail(ctx, HM_ERR_NOMEM, "cannot create a curl handle");
	err = s3_perform(ctx, c, h, r);
	curl_easy_cleanup(h);
	return err;
}

enum hm_err s3_check_key(struct hm_ctx *ctx, const char *key)
{
	if (!s3_key_ok(key))
		return hm_fail(ctx, HM_ERR_USAGE, "invalid object key '%s'", key ? key : "");
	return HM_OK;
}

/* r as a request of method on object key, once the key is checked. */
static enum hm_err key_req(struct hm_ctx *ctx, struct req *r, const char *method, const char *key)
{
	s3_req_init(r, method, key);
	return s3_check_key(ctx, key);
}

/* Runs r; a 404 for the object (not for a missing bucket) is HM_OK with
 * *absent = 1. */
static enum hm_err run_absent(struct hm_ctx *ctx, struct s3_client *c, struct req *r, int *absent)
{
	enum hm_err err = run(ctx, c, r);
	*absent = 0;
	if (err == HM_ERR_NOT_FOUND && r->status == 404) {
		char code[64], msg[8];
		error_words(r, code, sizeof(code), msg, sizeof(msg));
		if (strcmp(code, "NoSuchBucket")) {
			ctx->errmsg[0] = 0;
			*absent = 1;
			err = HM_OK;
		}
	}
	return err;
}

/* ---- objects ---- */

enum hm_err s3_put_buf(struct hm_ctx *ctx, struct s3_client *c, const char *key, const void *data, size_t len)
{
	struct req r;
	char sha[65];
	enum hm_err err;
	s3_sha256_hex(data, len, sha);
	if ((err = key_req(ctx, &r, "PUT", key)))
		return err;
	r.buf = data ? data : "";
	r.len = r.buflen = len;
	r.payload_sha = sha;
	err = run(ctx, c, &r);
	util_buf_release(&r.body);
	return err;
}

enum hm_err s3_get_buf(struct hm_ctx *ctx, struct s3_client *c, const char *key, size_t max, char **out,
		       size_t *len)
{
	struct req r;
	enum hm_err err;
	*out = NULL;
	*len = 0;
	if ((err = key_req(ctx, &r, "GET", key)))
		return err;
	r.body_max = max;
	err = run(ctx, c, &r);
	if (!err) {
		if (!r.body.buf && util_buf_add(&r.body, "", 0)) {
			util_buf_release(&r.body);
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		}
		*len = r.body.len;
		*out = util_buf_detach(&r.body);
	}
	util_buf_release(&r.body);
	return err;
}

enum hm_err s3_get(struct hm_ctx *ctx, struct s3_client *c, const char *key,
		   int (*fn)(void *ud, const void *data, size_t n), void *ud, uint64_t *size)
{
	struct req r;
	enum hm_err err;
	if ((err = key_req(ctx, &r, "GET", key)))
		return err;
	r.sink = fn;
	r.ud = ud;
	err = run(ctx, c, &r);
	if (!err && size)
		*size = r.delivered;
	util_buf_release(&r.body);
	return err;
}

enum hm_err s3_head(struct hm_ctx *ctx, struct s3_client *c, const char *key, int *exists, uint64_t *size)
{
	struct req r;
	enum hm_err err;
	*exists = 0;
	int absent = 0;
	if ((err = key_req(ctx, &r, "HEAD", key)))
		return err;
	err = run_absent(ctx, c, &r, &absent);
	if (!err && !absent) {
		*exists = 1;
		if (size)
			*size = r.content_length >= 0 ? (uint64_t)r.content_length : 0;
	}
	util_buf_release(&r.body);
	return err;
}

enum hm_err s3_delete(struct hm_ctx *ctx, struct s3_client *c, const char *key)
{
	struct req r;
	enum hm_err err;
	int absent = 0;
	if ((err = key_req(ctx, &r, "DELETE", key)))
		return err;
	err = run_absent(ctx, c, &r, &absent); /* deleting what is gone is done */
	util_buf_release(&r.body);
	return err;
}

enum hm_err s3_check_bucket(struct hm_ctx *ctx, struct s3_client *c)
{
	struct req r;
	enum hm_err err;
	s3_req_init(&r, "GET", "");
	r.query = "list-type=2&max-keys=1";
	err = run(ctx, c, &r);
	util_buf_release(&r.body);
	return err;
}

/* ---- listing ---- */

/* One page of a bucket listing with this query (NULL: building it ran out
 * of memory), into r->body. */
static enum hm_err list_page(struct hm_ctx *ctx, struct s3_client *c, CURL *h, struct req *r, const char *query)
{
	if (!query)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	s3_req_init(r, "GET", "");
	r->query = query;
	return s3_perform(ctx, c, h, r);
}

enum hm_err s3_list(struct hm_ctx *ctx, struct s3_client *c, const char *prefix,
		    int (*fn)(void *ud, const struct s3_object *o), void *ud)
{
	enum hm_err err = HM_OK;
	struct util_buf q = UTIL_BUF_INIT;
	char token[1024] = "", *item = NULL;
	CURL *h = curl_easy_init();
	struct req r;

	s3_req_init(&r, "GET", "");
	item = malloc(8192);
	if (!h || !item) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		size_t pos = 0;
		char truncated[16] = "";
		int oom = 0;
		q.len = 0;
		if (q.buf)
			q.buf[0] = 0;
		if ((token[0] && (util_buf_adds(&q, "continuation-token=") || s3_uri_encode(&q, token, 0) ||
				  util_buf_adds(&q, "&"))) ||
		    util_buf_adds(&q, "list-type=2&prefix=") || s3_uri_encode(&q, prefix, 0))
			oom = 1;
		if ((err = list_page(ctx, c, h, &r, oom ? NULL : q.buf)))
			goto out;
		while (s3_xml_next(r.body.buf, r.body.len, &pos, "Contents", item, 8192)) {
			char key[1100] = "", lm[64] = "", etag[128] = "", size[32] = "";
			size_t n = strlen(item);
			struct s3_object o;
			s3_xml_get(item, n, "Key", key, sizeof(key));
			s3_xml_get(item, n, "LastModified", lm, sizeof(lm));
			s3_xml_get(item, n, "ETag", etag, sizeof(etag));
			s3_xml_get(item, n, "Size", size, sizeof(size));
			{
				/* ETags are listed with quotes */
				char *e = etag;
				size_t el;
				while (*e == '"')
					e++;
				el = strlen(e);
				while (el && e[el - 1] == '"')
					e[--el] = 0;
				o.etag = e;
			}
			o.key = key;
			o.size = strtoull(size, NULL, 10);
			o.mtime = s3_parse_time(lm);
			if (fn(ud, &o))
				goto out;
		}
		s3_xml_get(r.body.buf, r.body.len, "IsTruncated", truncated, sizeof(truncated));
		if (strcmp(truncated, "true") ||
		    !s3_xml_get(r.body.buf, r.body.len, "NextContinuationToken", token, sizeof(token)) ||
		    !token[0])
			break;
		util_buf_release(&r.body);
	}
out:
	util_buf_release(&r.body);
	util_buf_release(&q);
	free(item);
	if (h)
		curl_easy_cleanup(h);
	return err;
}

enum hm_err s3_list_uploads(struct hm_ctx *ctx, struct s3_client *c, const char *prefix,
			    int (*fn)(void *ud, const struct s3_upload *u), void *ud)
{
	enum hm_err err = HM_OK;
	struct util_buf q = UTIL_BUF_INIT;
	char kmark[1100] = "", umark[512] = "", item[4096];
	CURL *h = curl_easy_init();
	struct req r;

	s3_req_init(&r, "GET", "");
	if (!h)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (;;) {
		size_t pos = 0;
		char truncated[16] = "";
		int oom = 0;
		q.len = 0;
		/* sorted: key-marker, prefix, upload-id-marker, uploads */
		if ((kmark[0] && (util_buf_adds(&q, "key-marker=") || s3_uri_encode(&q, kmark, 0) ||
				  util_buf_adds(&q, "&"))) ||
		    util_buf_adds(&q, "prefix=") || s3_uri_encode(&q, prefix, 0) ||
		    (umark[0] && (util_buf_adds(&q, "&upload-id-marker=") || s3_uri_encode(&q, umark, 0))) ||
		    util_buf_adds(&q, "&uploads="))
			oom = 1;
		if ((err = list_page(ctx, c, h, &r, oom ? NULL : q.buf)))
			goto out;
		while (s3_xml_next(r.body.buf, r.body.len, &pos, "Upload", item, sizeof(item))) {
			char key[1100] = "", id[512] = "", init[64] = "";
			size_t n = strlen(item);
			struct s3_upload u;
			s3_xml_get(item, n, "Key", key, sizeof(key));
			s3_xml_get(item, n, "UploadId", id, sizeof(id));
			s3_xml_get(item, n, "Initiated", init, sizeof(init));
			u.key = key;
			u.upload_id = id;
			u.initiated = s3_parse_time(init);
			if (key[0] && id[0] && fn(ud, &u))
				goto out;
		}
		s3_xml_get(r.body.buf, r.body.len, "IsTruncated", truncated, sizeof(truncated));
		if (strcmp(truncated, "true"))
			break;
		s3_xml_get(r.body.buf, r.body.len, "NextKeyMarker", kmark, sizeof(kmark));
		s3_xml_get(r.body.buf, r.body.len, "NextUploadIdMarker", umark, sizeof(umark));
		if (!kmark[0])
			break;
		util_buf_release(&r.body);
	}
out:
	util_buf_release(&r.body);
	util_buf_release(&q);
	curl_easy_cleanup(h);
	return err;
}

int s3_upload_query(struct util_buf *q, int part, const char *upload_id)
{
	q->len = 0;
	if (q->buf)
		q->buf[0] = 0;
	if (part > 0 && util_buf_printf(q, "partNumber=%d&", part))
		return -1;
	return util_buf_adds(q, "uploadId=") || s3_uri_encode(q, upload_id, 0) ? -1 : 0;
}

enum hm_err s3_abort_upload(struct hm_ctx *ctx, struct s3_client *c, const char *key, const char *upload_id)
{
	struct util_buf q = UTIL_BUF_INIT;
	struct req r;
	enum hm_err err;
	if ((err = key_req(ctx, &r, "DELETE", key)))
		return err;
	if (s3_upload_query(&q, 0, upload_id)) {
		util_buf_release(&q);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	r.query = q.buf;
	err = run(ctx, c, &r);
	if (err == HM_ERR_NOT_FOUND) {
		ctx->errmsg[0] = 0;
		err = HM_OK;
	}
	util_buf_release(&r.body);
	util_buf_release(&q);
	return err;
}

