/* files.c - /resolve/: a stored file with the headers real clients read
 * (X-Repo-Commit, ETag, X-Linked-*, Content-Length, Accept-Ranges), byte
 * ranges, and the body sent straight from the blob with sendfile. */
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
static int parse_range(const char *h, uint64_t size, uint64_t *from, uint64_t *len)
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

/* The headers every file answer carries. */
static void file_headers(struct MHD_Response *resp, const char *commit, const struct srv_file *f)
{
	char etag[80], sz[32];
	MHD_add_response_header(resp, "X-Repo-Commit", commit);
	MHD_add_response_header(resp, "Accept-Ranges", "bytes");
	MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
	if (f->lfs) {
		snprintf(etag, sizeof(etag), "\"%s\"", f->sha256);
		MHD_add_response_header(resp, "X-Linked-Etag", etag);
		snprintf(sz, sizeof(sz), "%llu", (unsigned long long)f->size);
		MHD_add_response_header(resp, "X-Linked-Size", sz);
	} else {
		snprintf(etag, sizeof(etag), "\"%s\"", f->oid);
	}
	MHD_add_response_header(resp, "ETag", etag);
}

/* Cache-Control for HTTP caches in front of the server: an answer for a
 * commit never changes; one for a branch or tag may, so it is reused
 * briefly and then revalidated by ETag; an answer that needed a token is
 * for that client only. */
static const char *cache_control(const struct srv_req *q)
{
	const struct srv *s = q->s;
	if (s->o->ntokens || (s->o->forward_token && q->client_token))
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
	file_headers(resp, commit, f);
	MHD_add_response_header(resp, "Cache-Control", cache_control(q));
	q->status = 304;
	q->planned = 0;
	*ret = MHD_queue_response(c, 304, resp);
	MHD_destroy_response(resp);
	return 1;
}

/* Sends a file answer whose body comes from resp (already created). */
static enum MHD_Result queue_file(struct srv_req *q, struct MHD_Connection *c, struct MHD_Response *resp,
				  const char *commit, const struct srv_file *f, int ranged, uint64_t from,
				  uint64_t len)
{
	enum MHD_Result ret;
	int status = ranged ? 206 : 200;
	if (srv_not_modified(q, c, commit, f, &ret)) {
		MHD_destroy_response(resp); /* closes its file */
		return ret;
	}
	file_headers(resp, commit, f);
	MHD_add_response_header(resp, "Cache-Control", cache_control(q));
	if (ranged) {
		char cr[96];
		snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)from,
			 (unsigned long long)(from + len - 1), (unsigned long long)f->size);
		MHD_add_response_header(resp, "Content-Range", cr);
	}
	q->status = status;
	q->planned = len;
	ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result unsatisfiable(struct srv_req *q, struct MHD_Connection *c, uint64_t size)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	char cr[64];
	enum MHD_Result ret;
	if (!resp)
		return MHD_NO;
	snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
	MHD_add_response_header(resp, "Content-Range", cr);
	q->status = 416;
	ret = MHD_queue_response(c, 416, resp);
	MHD_destroy_response(resp);
	return ret;
}

enum MHD_Result srv_file(struct srv_req *q, struct MHD_Connection *c, const struct srv_route *r)
{
	struct srv *s = q->s;
	struct store *st = srv_store_take(s);
	struct hm_ctx ctx = {0};
	struct store_file sf;
	char commit[41], blob[4096];
	const char *rev = !strcmp(r->rev, "HEAD") ? NULL : r->rev;
	enum hm_err err;
	uint64_t from = 0, len;
	int ranged, fd;

	if (!st) {
		snprintf(q->retry_after, sizeof(q->retry_after), "1");
		return srv_send_error(q, c, 503, NULL, "the store is busy or cannot be opened: try again");
	}
	err = store_resolve(&ctx, st, r->type, r->repo, rev, commit);
	if (!err)
		err = store_find_file(&ctx, st, r->type, r->repo, commit, r->path, &sf, NULL);
	if (err == HM_ERR_NOT_FOUND && store_is_remote(st) && !store_remote_sync(&ctx, st, 1.0)) {
		/* an S3 store: another node may have pulled it since */
		ctx.errmsg[0] = 0;
		err = store_resolve(&ctx, st, r->type, r->repo, rev, commit);
		if (!err)
			err = store_find_file(&ctx, st, r->type, r->repo, commit, r->path, &sf, NULL);
	}
	if (!err && store_is_remote(st)) {
		/* HEAD and LFS GETs are answered here; the rest comes from the local cache */
		enum MHD_Result ret;
		if (srv_s3_file(q, c, st, commit, &sf, &ret)) {
			srv_store_put(s, st);
			free(sf.path);
			return ret;
		}
	}
	if (!err)
		store_blob_path(st, sf.sha256, blob, sizeof(blob));
	srv_store_put(s, st);
	if (err) {
		const struct fetch_entry *fe = NULL, *hit = NULL;
		size_t n = 0;
		void *hold = NULL;
		enum MHD_Result ret;
		if (err != HM_ERR_NOT_FOUND)
			return srv_send_err(q, c, err, ctx.errmsg);
		if (!srv_up_enabled(s)) {
			/* which part is missing decides the error code */
			struct srv_rev rv;
			int local;
			enum hm_err e2 = srv_get_rev(s, q, r->type, r->repo, r->rev, &rv, &local);
			srv_rev_release(s, &rv);
			if (e2 == HM_ERR_REV_NOT_FOUND) {
				struct store *st2 = srv_store_take(s);
				struct store_rev_info *ri = NULL;
				size_t nri = 0;
				if (st2 && store_list_revisions(&ctx, st2, r->type, r->repo, &ri, &nri))
					nri = 0;
				store_rev_info_free(ri, nri);
				srv_store_put(s, st2);
				if (!nri)
					return srv_send_error(q, c, 404, "RepoNotFound", "Repository not found: %s", r->repo);
				return srv_send_error(q, c, 404, "RevisionNotFound", "Invalid rev id: %s", r->rev);
			}
			return srv_send_error(q, c, 404, "EntryNotFound", "%s does not exist on %s", r->path, r->rev);
		}
		/* pull-through */
		err = srv_up_rev(s, q, r->type, r->repo, rev ? rev : "main", commit, &fe, &n, &hold);
		if (err) {
			if (err == HM_ERR_REPO_NOT_FOUND)
				return srv_send_error(q, c, 404, "RepoNotFound", "Repository not found: %s", r->repo);
			if (err == HM_ERR_REV_NOT_FOUND)
				return srv_send_error(q, c, 404, "RevisionNotFound", "Invalid rev id: %s", r->rev);
			return srv_send_err(q, c, err, "the upstream hub failed");
		}
		for (size_t i = 0; i < n && !hit; i++)
			if (!strcmp(fe[i].path, r->path))
				hit = &fe[i];
		if (!hit) {
			srv_up_release(s, hold);
			return srv_send_error(q, c, 404, "EntryNotFound", "%s does not exist on %s", r->path, r->rev);
		}
		ranged = parse_range(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range"), hit->size, &from, &len);
		if (ranged < 0) {
			srv_up_release(s, hold);
			return unsatisfiable(q, c, hit->size);
		}
		if (!ranged)
			len = hit->size;
		ret = srv_up_serve_file(q, c, r->type, r->repo, commit, hit, fe, n, rev && !util_is_hex(rev, 40) ? rev : (rev ? NULL : "main"),
					from, len, ranged);
		srv_up_release(s, hold);
		return ret;
	}
	q->cache = "hit";
	struct srv_file f = {sf.path, sf.size, sf.sha256, sf.git_oid, sf.lfs};
	ranged = parse_range(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range"), sf.size, &from, &len);
	if (ranged < 0) {
		free(sf.path);
		return unsatisfiable(q, c, sf.size);
	}
	if (!ranged)
		len = sf.size;
	fd = open(blob, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		free(sf.path);
		return srv_open_error(q, c, e);
	}
	/* MHD sends it with sendfile and closes fd when done */
	struct MHD_Response *resp = len ? MHD_create_response_from_fd_at_offset64(len, fd, (int64_t)from)
					: MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!len)
		close(fd);
	if (!resp) {
		if (len)
			close(fd);
		free(sf.path);
		return MHD_NO;
	}
	enum MHD_Result ret = queue_file(q, c, resp, commit, &f, ranged, from, len);
	free(sf.path);
	return ret;
}

enum MHD_Result srv_queue_file_headers(struct srv_req *q, struct MHD_Connection *c, struct MHD_Response *resp,
				       const char *commit, const struct srv_file *f, int status)
{
	enum MHD_Result ret;
	file_headers(resp, commit, f);
	if (status != 302)
		MHD_add_response_header(resp, "Cache-Control", cache_control(q));
	q->status = status;
	ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
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
