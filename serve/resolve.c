/* resolve.c - /resolve/: a stored file (the body sent straight from the
 * blob with sendfile), from the object store (s3redirect.c), or pulled
 * through from upstream (upstream.c); which part is missing decides the
 * Hub's error code. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "serve-int.h"
#include "../store/index.h"
#include "../store/torrents.h"

/* A file the store does not have: the Hub's error code for what is
 * missing, or (with an upstream) pulled through. */
static enum MHD_Result not_stored(struct srv_req *q, struct MHD_Connection *c, const struct srv_route *r)
{
	struct srv *s = q->s;
	struct hm_ctx ctx = {0};
	const struct fetch_entry *fe = NULL, *hit = NULL;
	const char *rev = !strcmp(r->rev, "HEAD") ? NULL : r->rev;
	char commit[41];
	size_t n = 0;
	void *hold = NULL;
	enum MHD_Result ret;
	enum hm_err err;
	uint64_t from = 0, len;
	int ranged;

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
	ranged = srv_parse_range(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range"), hit->size, &from, &len);
	if (ranged < 0) {
		srv_up_release(s, hold);
		return srv_unsatisfiable(q, c, hit->size);
	}
	if (!ranged)
		len = hit->size;
	ret = srv_up_serve_file(q, c, r->type, r->repo, commit, hit, fe, n, rev && !util_is_hex(rev, 40) ? rev : (rev ? NULL : "main"),
				from, len, ranged);
	srv_up_release(s, hold);
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
	if (!err) {
		int nt = 0;
		struct hm_ctx tc = {0};
		/* not known: answer as for a token-protected repo (never public by mistake) */
		q->needs_token = store_repo_needs_token(&tc, st, r->type, r->repo, &nt) ? 1 : nt;
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
	if (err == HM_ERR_NOT_FOUND)
		return not_stored(q, c, r);
	if (err)
		return srv_send_err(q, c, err, ctx.errmsg);
	q->cache = "hit";
	struct srv_file f = {sf.path, sf.size, sf.sha256, sf.git_oid, sf.lfs};
	ranged = srv_parse_range(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range"), sf.size, &from, &len);
	if (ranged < 0) {
		free(sf.path);
		return srv_unsatisfiable(q, c, sf.size);
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
	enum MHD_Result ret = srv_queue_file(q, c, resp, commit, &f, ranged, from, len);
	free(sf.path);
	return ret;
}

