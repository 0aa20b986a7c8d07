/* files.c - a file answer with the headers real clients read (X-Repo-Commit,
 * ETag, X-Linked-*, Content-Length, Accept-Ranges), byte ranges, 304s and
 * open errors: what resolve.c (stored files), upstream.c (pulled through)
 * and s3redirect.c (presigned) all send with. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include "serve-int.h"

/* Reads decimal digits at *p (no sign, no space: strtoull would take "-5"
 * and " 5"), saturating at UINT64_MAX. Returns 0 and advances, or -1. */
static int read_pos(const char **p, uint64_t *out)
{
	const char *q = *p;
	uint64_t v = 0;
	int n = 0;
	while (*q >= '0' && *q <= '9') {
		uint64_t d = (uint64_t)(*q++ - '0');
		n++;
		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
	}
	if (!n)
		return -1;
	*p = q;
	*out = v;
	return 0;
}

/* Parses a single "bytes=" range against size (RFC 9110 14.1.1). Returns 0
 * with no Range or one to ignore (other unit, several ranges, bad syntax:
 * the whole body), 1 with [*from, *from + *len), -1 unsatisfiable. */
int srv_parse_range(const char *h, uint64_t size, uint64_t *from, uint64_t *len)
{
	uint64_t a = 0, b = 0;
	int has_b = 0;
	const char *p;
	if (!h)
		return 0;
	while (*h == ' ' || *h == '\t')
		h++;
	if (strncasecmp(h, "bytes=", 6))
		return 0; /* an unknown unit is ignored */
	p = h + 6;
	if (strchr(p, ','))
		return 0; /* several ranges: answer with the whole body */
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '-') {
		/* suffix: the last N bytes */
		p++;
		if (read_pos(&p, &b))
			return 0;
	} else {
		if (read_pos(&p, &a) || *p++ != '-')
			return 0;
		if (*p >= '0' && *p <= '9') {
			if (read_pos(&p, &b))
				return 0;
			has_b = 1;
		}
	}
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p)
		return 0; /* trailing garbage: not a valid range */
	if (h[6 + strspn(h + 6, " \t")] == '-') {
		if (!b || !size)
			return -1;
		if (b > size)
			b = size;
		*from = size - b;
		*len = b;
		return 1;
	}
	if (has_b && a > b)
		return 0; /* last < first is invalid syntax: ignored */
	if (a >= size)
		return -1;
	if (!has_b || b >= size)
		b = size - 1;
	*from = a;
	*len = b - a + 1;
	return 1;
}

/* The headers every file answer carries: 0, or -1 when one was refused. */
static int file_headers(struct MHD_Response *resp, const char *commit, const struct srv_file *f)
{
	char etag[80], sz[32];
	int bad = srv_header(resp, "X-Repo-Commit", commit) | srv_header(resp, "Accept-Ranges", "bytes") |
		  srv_header(resp, "Content-Type", "application/octet-stream");
	if (f->lfs) {
		snprintf(etag, sizeof(etag), "\"%s\"", f->sha256);
		bad |= srv_header(resp, "X-Linked-Etag", etag);
		snprintf(sz, sizeof(sz), "%llu", (unsigned long long)f->size);
		bad |= srv_header(resp, "X-Linked-Size", sz);
	} else {
		snprintf(etag, sizeof(etag), "\"%s\"", f->oid);
	}
	return bad | srv_header(resp, "ETag", etag);
}

/* Cache-Control for HTTP caches in front of the server: an answer for a
 * commit never changes; one for a branch or tag may, so it is reused
 * briefly and then revalidated by ETag; an answer that needed a token (from
 * this server, or from the upstream the repo was pulled from) is for that
 * client only. */
static const char *cache_control(const struct srv_req *q)
{
	const struct srv *s = q->s;
	if (srv_token_guarded(s) || (s->o->forward_token && q->client_token) || q->needs_token)
		return "private";
	if (util_is_hex(q->revision, 40))
		return "public, max-age=31536000, immutable";
	return "public, max-age=30, must-revalidate";
}

/* Whether If-None-Match names etag (quoted), or is "*". Weak forms compare
 * equal (RFC 9110 13.1.2 uses the weak comparison here). */
static int etag_matches(struct MHD_Connection *c, const char *etag)
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
	size_t el = strlen(etag);
	if (!h)
		return 0;
	while (*h) {
		while (*h == ' ' || *h == '\t' || *h == ',')
			h++;
		if (!*h)
			break;
		const char *e = strchr(h, ',');
		size_t n = e ? (size_t)(e - h) : strlen(h);
		while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
			n--;
		const char *t = h;
		if (n > 2 && t[0] == 'W' && t[1] == '/') {
			t += 2;
			n -= 2;
		}
		if ((n == 1 && *t == '*') || (n == el && !memcmp(t, etag, n)))
			return 1;
		h = e ? e + 1 : h + strlen(h);
	}
	return 0;
}

static void file_etag(const struct srv_file *f, char *etag, size_t cap)
{
	snprintf(etag, cap, "\"%s\"", f->lfs ? f->sha256 : f->oid);
}

int srv_not_modified(struct srv_req *q, struct MHD_Connection *c, const char *commit, const struct srv_file *f,
		     enum MHD_Result *ret)
{
	char etag[80];
	struct MHD_Response *resp;
	file_etag(f, etag, sizeof(etag));
	if ((strcmp(q->method, "GET") && strcmp(q->method, "HEAD")) || !etag_matches(c, etag))
		return 0;
	resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		*ret = MHD_NO;
		return 1;
	}
	q->planned = 0;
	*ret = srv_queue(q, c, 304, resp,
			 file_headers(resp, commit, f) | srv_header(resp, "Cache-Control", cache_control(q)));
	return 1;
}

/* Sends a file answer whose body comes from resp (already created). */
static enum MHD_Result queue_file(struct srv_req *q, struct MHD_Connection *c, struct MHD_Response *resp,
				  const char *commit, const struct srv_file *f, int ranged, uint64_t from,
				  uint64_t len)
{
	enum MHD_Result ret;
	int bad;
	if (srv_not_modified(q, c, commit, f, &ret)) {
		MHD_destroy_response(resp); /* closes its file */
		return ret;
	}
	bad = file_headers(resp, commit, f) | srv_header(resp, "Cache-Control", cache_control(q));
	if (ranged) {
		char cr[96];
		snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)from,
			 (unsigned long long)(from + len - 1), (unsigned long long)f->size);
		bad |= srv_header(resp, "Content-Range", cr);
	}
	q->planned = len;
	return srv_queue(q, c, ranged ? 206 : 200, resp, bad);
}

enum MHD_Result srv_unsatisfiable(struct srv_req *q, struct MHD_Connection *c, uint64_t size)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	char cr[64];
	if (!resp)
		return MHD_NO;
	snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
	return srv_queue(q, c, 416, resp, srv_header(resp, "Content-Range", cr));
}

enum MHD_Result srv_queue_file_headers(struct srv_req *q, struct MHD_Connection *c, struct MHD_Response *resp,
				       const char *commit, const struct srv_file *f, int status)
{
	int bad = file_headers(resp, commit, f);
	if (status != 302)
		bad |= srv_header(resp, "Cache-Control", cache_control(q));
	return srv_queue(q, c, (unsigned)status, resp, bad);
}

enum MHD_Result srv_open_error(struct srv_req *q, struct MHD_Connection *c, int e)
{
	if (e == EMFILE || e == ENFILE || e == ENOMEM) {
		/* out of descriptors: a moment later the request may well work */
		snprintf(q->retry_after, sizeof(q->retry_after), "1");
		return srv_send_error(q, c, 503, NULL, "the server is out of file descriptors (%s): try again", strerror(e));
	}
	if (e == ENOENT)
		return srv_send_error(q, c, 500, NULL, "the stored blob is missing: run 'hubmirror verify --repair'");
	return srv_send_error(q, c, 500, NULL, "cannot open the stored blob: %s", strerror(e));
}

enum MHD_Result srv_queue_file(struct srv_req *q, struct MHD_Connection *c, struct MHD_Response *resp,
			       const char *commit, const struct srv_file *f, int ranged, uint64_t from, uint64_t len)
{
	return queue_file(q, c, resp, commit, f, ranged, from, len);
}
