/* api.c - the Hub's JSON API over stored (or pulled-through) revisions:
 * repo info, revision info, tree with pagination, paths-info, refs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "serve-int.h"
#include "../store/index.h"

#define MAX_PATHS_INFO 10000

/* ---- the file lists of stored commits ----
 * Loading a commit's 100,000 files from the index takes a good part of a
 * second; a client walking its tree pages (or a lab asking for the same
 * model) would pay it on every request. A commit's files never change, so
 * the last LISTS_SLOTS lists read are kept, refcounted, for LISTS_TTL (a
 * revision removed with 'rm' stops being listed, as with the answer cache).
 * Lists of more than LISTS_MAX_FILES in all are not kept. */
#define LISTS_SLOTS 4
#define LISTS_TTL 60.0
#define LISTS_MAX_FILES 4000000

struct srv_list {
	char key[300];           /* type|repo|commit */
	struct store_file *sf;
	struct srv_file *files;
	size_t n;
	int64_t modified;
	int refs;                /* the slot's own + one per borrower */
	double at;
};

struct srv_lists {
	pthread_mutex_t mu;
	struct srv_list *slot[LISTS_SLOTS];
};

static void list_unref(struct srv_lists *l, struct srv_list *e)
{
	int last;
	pthread_mutex_lock(&l->mu);
	last = --e->refs == 0;
	pthread_mutex_unlock(&l->mu);
	if (last) {
		store_files_free(e->sf, e->n);
		free(e->files);
		free(e);
	}
}

enum hm_err srv_lists_init(struct srv *s)
{
	struct srv_lists *l = calloc(1, sizeof(*l));
	if (!l)
		return hm_fail(s->ctx, HM_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&l->mu, NULL);
	s->lists = l;
	return HM_OK;
}

void srv_lists_free(struct srv *s)
{
	struct srv_lists *l = s->lists;
	if (!l)
		return;
	for (int i = 0; i < LISTS_SLOTS; i++)
		if (l->slot[i])
			list_unref(l, l->slot[i]);
	pthread_mutex_destroy(&l->mu);
	free(l);
	s->lists = NULL;
}

/* A borrowed list for key, or NULL. */
static struct srv_list *lists_get(struct srv_lists *l, const char *key)
{
	struct srv_list *e = NULL;
	double now = util_now();
	if (!l)
		return NULL;
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < LISTS_SLOTS; i++)
		if (l->slot[i] && !strcmp(l->slot[i]->key, key) && now - l->slot[i]->at < LISTS_TTL) {
			e = l->slot[i];
			e->refs++;
			break;
		}
	pthread_mutex_unlock(&l->mu);
	return e;
}

/* Keeps e (taking one reference for the slot) in place of the oldest. */
static void lists_put(struct srv_lists *l, struct srv_list *e)
{
	struct srv_list *old = NULL;
	size_t total = e->n;
	int victim = 0;
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < LISTS_SLOTS; i++) {
		if (!l->slot[i] || !strcmp(l->slot[i]->key, e->key)) {
			victim = i;
			break;
		}
		if (l->slot[i]->at < l->slot[victim]->at)
			victim = i;
	}
	for (int i = 0; i < LISTS_SLOTS; i++)
		if (i != victim && l->slot[i])
			total += l->slot[i]->n;
	if (total <= LISTS_MAX_FILES) {
		old = l->slot[victim];
		l->slot[victim] = e;
		e->refs++;
	}
	pthread_mutex_unlock(&l->mu);
	if (old)
		list_unref(l, old);
}

void srv_rev_release(struct srv *s, struct srv_rev *r)
{
	store_files_free(r->sf, r->nsf);
	if (r->list_hold)
		list_unref(s->lists, r->list_hold);
	else
		free(r->files);
	if (r->fe_hold)
		srv_up_release(s, r->fe_hold);
	memset(r, 0, sizeof(*r));
}

/* Reads the files of a resolved commit from the index into a new list
 * (one reference, the caller's). */
static enum hm_err list_load(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			     const char *commit, struct srv_list **out)
{
	struct store_rev_info *rv = NULL;
	size_t nrv = 0;
	enum hm_err err;
	struct srv_list *e = calloc(1, sizeof(*e));

	*out = NULL;
	if (!e)
		return HM_ERR_NOMEM;
	e->refs = 1;
	e->at = util_now();
	snprintf(e->key, sizeof(e->key), "%s|%s|%s", type, repo, commit);
	if ((err = store_list_files(ctx, st, type, repo, commit, &e->sf, &e->n))) {
		free(e);
		return err;
	}
	if (!store_list_revisions(ctx, st, type, repo, &rv, &nrv))
		for (size_t i = 0; i < nrv; i++)
			if (!strcmp(rv[i].commit, commit))
				e->modified = rv[i].pulled_at;
	store_rev_info_free(rv, nrv);
	e->files = calloc(e->n ? e->n : 1, sizeof(*e->files));
	if (!e->files) {
		store_files_free(e->sf, e->n);
		free(e);
		return HM_ERR_NOMEM;
	}
	for (size_t i = 0; i < e->n; i++)
		e->files[i] = (struct srv_file){e->sf[i].path, e->sf[i].size, e->sf[i].sha256, e->sf[i].git_oid,
						e->sf[i].lfs};
	*out = e;
	return HM_OK;
}

/* Local lookup: NULL or "HEAD" means main (else the latest pulled). */
static enum hm_err local_rev(struct srv *s, const char *type, const char *repo, const char *rev,
			     struct srv_rev *out)
{
	struct hm_ctx ctx = {0};
	struct store *st = srv_store_take(s);
	struct srv_list *e = NULL;
	char key[300];
	enum hm_err err;

	if (!st)
		return HM_ERR_DB;
	if (rev && !strcmp(rev, "HEAD"))
		rev = NULL;
	err = store_resolve(&ctx, st, type, repo, rev, out->commit);
	if (err == HM_ERR_NOT_FOUND && store_is_remote(st) && !store_remote_sync(&ctx, st, 1.0)) {
		/* an S3 store: another node may have pulled it since */
		ctx.errmsg[0] = 0;
		err = store_resolve(&ctx, st, type, repo, rev, out->commit);
	}
	if (!err && (size_t)snprintf(key, sizeof(key), "%s|%s|%s", type, repo, out->commit) >= sizeof(key))
		key[0] = 0; /* not cached */
	if (!err && !(key[0] && (e = lists_get(s->lists, key))) && !(err = list_load(&ctx, st, type, repo, out->commit, &e)) &&
	    key[0])
		lists_put(s->lists, e);
	srv_store_put(s, st);
	if (err)
		return err;
	out->files = e->files;
	out->nfiles = e->n;
	out->modified = e->modified;
	out->list_hold = e;
	return HM_OK;
}

static int file_cmp(const void *a, const void *b)
{
	return strcmp(((const struct srv_file *)a)->path, ((const struct srv_file *)b)->path);
}

enum hm_err srv_get_rev(struct srv *s, struct srv_req *q, const char *type, const char *repo,
			const char *rev, struct srv_rev *out, int *local)
{
	const struct fetch_entry *fe = NULL;
	size_t n = 0;
	enum hm_err err;

	memset(out, 0, sizeof(*out));
	*local = 1;
	err = local_rev(s, type, repo, rev, out);
	/* a branch may have moved upstream; a full commit never does */
	if (!err || err != HM_ERR_NOT_FOUND || !srv_up_enabled(s)) {
		if (err == HM_ERR_NOT_FOUND)
			err = HM_ERR_REV_NOT_FOUND;
		return err;
	}
	srv_rev_release(s, out);
	*local = 0;
	err = srv_up_rev(s, q, type, repo, rev && strcmp(rev, "HEAD") ? rev : "main", out->commit, &fe, &n,
			 &out->fe_hold);
	if (err)
		return err;
	out->modified = util_unix_time();
	out->files = calloc(n ? n : 1, sizeof(*out->files));
	if (!out->files)
		return HM_ERR_NOMEM;
	for (size_t i = 0; i < n; i++)
		out->files[i] = (struct srv_file){fe[i].path, fe[i].size, fe[i].lfs ? fe[i].sha256 : "", fe[i].oid,
						  fe[i].lfs};
	out->nfiles = n;
	/* the tree walk wants them in path order, as the index keeps them */
	for (size_t i = 1; i < n; i++)
		if (strcmp(out->files[i - 1].path, out->files[i].path) > 0) {
			qsort(out->files, n, sizeof(*out->files), file_cmp);
			break;
		}
	return HM_OK;
}

/* Whether the repo exists at all in the store. */
static int repo_known(struct srv *s, const char *type, const char *repo)
{
	struct hm_ctx ctx = {0};
	struct store *st = srv_store_take(s);
	struct store_rev_info *rv = NULL;
	size_t n = 0;
	if (!st)
		return 0;
	if (store_list_revisions(&ctx, st, type, repo, &rv, &n))
		n = 0;
	store_rev_info_free(rv, n);
	srv_store_put(s, st);
	return n > 0;
}

/* Answers a failed revision lookup the way the Hub does. */
static enum MHD_Result rev_error(struct srv_req *q, struct MHD_Connection *c, enum hm_err err, const char *type,
				 const char *repo, const char *rev, const char *upmsg)
{
	if (err == HM_ERR_REV_NOT_FOUND && !repo_known(q->s, type, repo) && !srv_up_enabled(q->s))
		err = HM_ERR_REPO_NOT_FOUND;
	if (err == HM_ERR_REPO_NOT_FOUND)
		return srv_send_error(q, c, 404, "RepoNotFound", "Repository not found: %s '%s'", type, repo);
	if (err == HM_ERR_REV_NOT_FOUND)
		return srv_send_error(q, c, 404, "RevisionNotFound", "Invalid rev id: %s", rev ? rev : "main");
	return srv_send_err(q, c, err, upmsg && *upmsg ? upmsg : hm_strerror(err));
}

static unsigned pointer_size(uint64_t size)
{
	char d[32];
	/* "version https://git-lfs.github.com/spec/v1\n" "oid sha256:<64>\n" "size <n>\n" */
	return 43 + 76 + 6 + (unsigned)snprintf(d, sizeof(d), "%llu", (unsigned long long)size);
}

static json_t *lfs_json(const struct srv_file *f)
{
	return json_pack("{s:s, s:I, s:I}", "oid", f->sha256, "size", (json_int_t)f->size, "pointerSize",
			 (json_int_t)pointer_size(f->size));
}

static int query_flag(struct MHD_Connection *c, const char *name)
{
	const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
	return v && (!strcasecmp(v, "true") || !strcmp(v, "1"));
}

/* private: the mirror needs a token (--token-file, or an upstream token),
 * so a client that pulls with one knows its copy is not public. */
static json_t *repo_info(struct MHD_Connection *c, const struct srv_route *r, const struct srv_rev *rv, int private_)
{
	char when[40];
	int blobs = query_flag(c, "blobs");
	json_t *sib = json_array();
	for (size_t i = 0; i < rv->nfiles; i++) {
		const struct srv_file *f = &rv->files[i];
		json_t *o = json_pack("{s:s}", "rfilename", f->path);
		if (blobs) {
			json_object_set_new(o, "size", json_integer((json_int_t)f->size));
			json_object_set_new(o, "blobId", json_string(f->oid));
			if (f->lfs)
				json_object_set_new(o, "lfs", json_pack("{s:s, s:I, s:I}", "sha256", f->sha256, "size",
									(json_int_t)f->size, "pointerSize",
									(json_int_t)pointer_size(f->size)));
		}
		json_array_append_new(sib, o);
	}
	srv_iso_time(rv->modified, when, sizeof(when));
	json_t *j = json_pack("{s:s, s:s, s:s, s:b, s:b, s:b, s:s, s:o, s:i, s:i, s:o}", "_id", rv->commit, "id", r->repo,
			      "sha", rv->commit, "private", private_, "gated", 0, "disabled", 0, "lastModified", when,
			      "siblings", sib, "downloads", 0, "likes", 0, "tags", json_array());
	if (!strcmp(r->type, "model"))
		json_object_set_new(j, "modelId", json_string(r->repo));
	return j;
}

static json_t *entry_json(const struct srv_file *f, const struct srv_rev *rv, int expand)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "type", "file", "path", f->path, "size", (json_int_t)f->size,
			      "oid", f->oid);
	if (f->lfs)
		json_object_set_new(o, "lfs", lfs_json(f));
	if (expand) {
		char when[40];
		json_object_set_new(o, "lastCommit", json_pack("{s:s, s:s, s:s}", "id", rv->commit, "title", "",
								"date", srv_iso_time(rv->modified, when, sizeof(when))));
		json_object_set_new(o, "securityFileStatus", json_pack("{s:s}", "status", "unscanned"));
	}
	return o;
}

static json_t *dir_json(const char *path, size_t len)
{
	json_t *o = json_pack("{s:s, s:s#, s:i, s:s}", "type", "directory", "path", path, (int)len, "size", 0, "oid",
			      "0000000000000000000000000000000000000000");
	return o;
}

/* ---- tree listings ----
 * A revision's files are sorted by path (byte order), so the files under a
 * directory are one run of them: a directory is new at a file when the file
 * before it is not under it. A listing is the files' runs of entries: for
 * each file, the directories that start there, then the file (recursive);
 * or its top-level directory when it starts there, else the file itself
 * (one level, the rest of the directory's run skipped). A page resumes at a
 * cursor (file, entries of its run already sent) with no walk from the
 * start, so a client paging through 100,000 files costs linear time. */
#define CURSOR_RUN 65536 /* cursor = file * CURSOR_RUN + entries of its run sent */

/* The first file in [lo, hi) whose path is >= (key, kl), by its first kl bytes. */
static size_t lower_bound(const struct srv_file *f, size_t lo, size_t hi, const char *key, size_t kl)
{
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strncmp(f[mid].path, key, kl) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The run of files under the directory (p, dl): [i, end). */
static size_t dir_end(const struct srv_file *f, size_t i, size_t hi, const char *p, size_t dl)
{
	char key[4096];
	if (dl + 1 >= sizeof(key)) { /* paths are shorter than this; walk for safety */
		while (i < hi && !strncmp(f[i].path, p, dl) && f[i].path[dl] == '/')
			i++;
		return i;
	}
	memcpy(key, p, dl);
	key[dl] = '/' + 1; /* the first string after every "p/..." */
	return lower_bound(f, i, hi, key, dl + 1);
}

/* Whether file i (> lo) continues the directory (p, dl) of the file before. */
static int under_prev(const struct srv_file *f, size_t i, size_t lo, const char *p, size_t dl)
{
	return i > lo && !strncmp(f[i - 1].path, p, dl) && f[i - 1].path[dl] == '/';
}

struct tree_walk {
	const struct srv_rev *rv;
	size_t pl;               /* prefix length (0: the root) */
	int recursive, expand;
	size_t lo, hi;           /* the files under the prefix */
};

/* Appends the entries of file i's run from entry skip on to out while out
 * has fewer than page; returns how many of the run it appended, and sets
 * *runlen and *next_file (the file after the run). */
static size_t walk_run(const struct tree_walk *w, size_t i, size_t skip, size_t page, json_t *out, size_t *runlen,
		       size_t *next_file)
{
	const struct srv_file *f = w->rv->files;
	const char *p = f[i].path, *rest = p + (w->pl ? w->pl + 1 : 0);
	size_t idx = 0, added = 0;

	*next_file = i + 1;
	for (const char *sl = strchr(rest, '/'); sl; sl = w->recursive ? strchr(sl + 1, '/') : NULL) {
		size_t dl = (size_t)(sl - p);
		if (!w->recursive)
			*next_file = dir_end(f, i, w->hi, p, dl);
		if (under_prev(f, i, w->lo, p, dl)) {
			if (!w->recursive) { /* inside a directory already listed */
				*runlen = idx;
				return added;
			}
			continue;
		}
		if (idx >= skip && json_array_size(out) < page) {
			json_array_append_new(out, dir_json(p, dl));
			added++;
		}
		idx++;
		if (!w->recursive) {
			*runlen = idx;
			return added;
		}
	}
	if (idx >= skip && json_array_size(out) < page) {
		json_array_append_new(out, entry_json(&f[i], w->rv, w->expand));
		added++;
	}
	*runlen = idx + 1;
	return added;
}

/* Builds the page at cursor (file, skip) into out; *next gets the next
 * page's cursor (0: none). Returns -1 for a cursor outside the listing. */
static int tree_walk(const struct tree_walk *w, size_t file, size_t skip, size_t page, json_t *out, size_t *next)
{
	size_t i = file;
	*next = 0;
	if (i < w->lo || i > w->hi)
		return -1;
	while (i < w->hi) {
		size_t runlen, nf, got;
		if (json_array_size(out) >= page) {
			*next = i * CURSOR_RUN + skip;
			return 0;
		}
		got = walk_run(w, i, skip, page, out, &runlen, &nf);
		if (skip + got < runlen) { /* the page filled inside this run */
			*next = i * CURSOR_RUN + skip + got;
			return 0;
		}
		skip = 0;
		i = nf;
	}
	return 0;
}

/* Builds one tree page: the JSON text and the next cursor (0 if none).
 * Returns NULL with *status set when the answer is an error. */
static char *tree_page(struct MHD_Connection *c, const struct srv_route *r, const struct srv_rev *rv, size_t page,
		       size_t *next, int *status)
{
	const char *cur = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "cursor");
	struct tree_walk w = {rv, strlen(r->path), query_flag(c, "recursive"), query_flag(c, "expand"), 0, rv->nfiles};
	size_t file = 0, skip = 0;
	json_t *out;
	char *txt;

	*next = 0;
	if (w.pl) {
		char key[4096];
		if (w.pl + 1 >= sizeof(key)) {
			*status = 404;
			return NULL;
		}
		memcpy(key, r->path, w.pl);
		key[w.pl] = '/';
		w.lo = lower_bound(rv->files, 0, rv->nfiles, key, w.pl + 1);
		w.hi = dir_end(rv->files, w.lo, rv->nfiles, r->path, w.pl);
		if (w.lo == w.hi) {
			*status = 404;
			return NULL;
		}
	}
	file = w.lo;
	if (cur) {
		char *end;
		unsigned long long v = strtoull(cur, &end, 10);
		if (end == cur || *end || *cur == '-' || v / CURSOR_RUN > SIZE_MAX) {
			*status = 400;
			return NULL;
		}
		file = (size_t)(v / CURSOR_RUN);
		skip = (size_t)(v % CURSOR_RUN);
	}
	out = json_array();
	if (!out || tree_walk(&w, file, skip, page, out, next)) {
		json_decref(out);
		*status = out ? 400 : 500;
		return NULL;
	}
	txt = json_dumps(out, JSON_COMPACT);
	json_decref(out);
	*status = txt ? 200 : 500;
	return txt;
}

/* Sends a JSON text (taking it), with the tree's Link header when next != 0. */
static enum MHD_Result send_text(struct srv_req *q, struct MHD_Connection *c, char *txt, size_t next)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(txt), txt, MHD_RESPMEM_MUST_FREE);
	int bad;
	if (!resp) {
		free(txt);
		return MHD_NO;
	}
	bad = srv_header(resp, "Content-Type", "application/json; charset=utf-8");
	if (next) {
		const char *host = srv_safe_host(c), *qm = strchr(q->url ? q->url : "", '?');
		char link[4400];
		int recursive = query_flag(c, "recursive"), expand = query_flag(c, "expand");
		snprintf(link, sizeof(link), "<%s%s%.*s?recursive=%s&expand=%s&cursor=%zu>; rel=\"next\"",
			 host ? "http://" : "", host ? host : "", (int)(qm ? (size_t)(qm - q->url) : strlen(q->url ? q->url : "")),
			 q->url ? q->url : "", recursive ? "true" : "false", expand ? "true" : "false", next);
		bad |= srv_header(resp, "Link", link);
	}
	q->planned = strlen(txt);
	return srv_queue(q, c, 200, resp, bad);
}

/* Collects "paths" from a form body (paths=a&paths=b) or a JSON body. */
static int paths_from_body(struct srv_req *q, struct MHD_Connection *c, char ***out, size_t *n, int *expand)
{
	const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
	char **v = NULL;
	size_t len = 0;
	*out = NULL;
	*n = 0;
	*expand = 0;
	if (!q->body.buf)
		return 0;
	if (ct && strstr(ct, "json")) {
		json_error_t je;
		json_t *j, *ps, *e;
		size_t i;
		/* a flat object; deep nesting would recurse through jansson on
		 * this thread's 256 KiB stack (MHD_OPTION_THREAD_STACK_SIZE) */
		if (util_json_depth(q->body.buf, q->body.len) > 8)
			return -1;
		j = json_loadb(q->body.buf, q->body.len, 0, &je);
		if (!j)
			return -1;
		ps = json_object_get(j, "paths");
		*expand = json_is_true(json_object_get(j, "expand"));
		if (json_is_string(ps)) {
			v = calloc(1, sizeof(*v));
			if (v)
				v[len++] = util_strdup(json_string_value(ps));
		} else if (json_is_array(ps) && json_array_size(ps) <= MAX_PATHS_INFO) {
			v = calloc(json_array_size(ps) + 1, sizeof(*v));
			json_array_foreach(ps, i, e) if (v && json_is_string(e)) v[len++] = util_strdup(json_string_value(e));
		} else {
			json_decref(j);
			return -1;
		}
		json_decref(j);
	} else {
		/* application/x-www-form-urlencoded */
		char *save = NULL, *body = util_strdup(q->body.buf);
		if (!body)
			return -1;
		v = calloc(MAX_PATHS_INFO + 1, sizeof(*v));
		for (char *kv = strtok_r(body, "&", &save); kv && v && len < MAX_PATHS_INFO; kv = strtok_r(NULL, "&", &save)) {
			char *eq = strchr(kv, '=');
			if (!eq)
				continue;
			*eq = 0;
			char *val = eq + 1;
			/* decode + and %XX in place */
			char *w = val;
			for (char *p = val; *p; p++) {
				if (*p == '+')
					*w++ = ' ';
				else if (*p == '%' && p[1] && p[2]) {
					char hx[3] = {p[1], p[2], 0};
					char *e2;
					long ch = strtol(hx, &e2, 16);
					if (*e2 || ch == 0) {
						free(body);
						goto bad;
					}
					*w++ = (char)ch;
					p += 2;
				} else
					*w++ = *p;
			}
			*w = 0;
			if (!strcmp(kv, "paths") || !strcmp(kv, "paths[]"))
				v[len++] = util_strdup(val);
			else if (!strcmp(kv, "expand"))
				*expand = !strcasecmp(val, "true") || !strcmp(val, "1");
		}
		free(body);
	}
	if (!v)
		return -1;
	*out = v;
	*n = len;
	return 0;
bad:
	for (size_t i = 0; i < len; i++)
		free(v[i]);
	free(v);
	return -1;
}

static enum MHD_Result paths_info(struct srv_req *q, struct MHD_Connection *c, const struct srv_rev *rv)
{
	char **paths;
	size_t n;
	int expand;
	json_t *a;
	if (paths_from_body(q, c, &paths, &n, &expand))
		return srv_send_error(q, c, 400, NULL, "malformed paths-info body");
	a = json_array();
	for (size_t i = 0; i < n; i++) {
		const char *p = paths[i];
		if (!p)
			continue;
		size_t pl = strlen(p);
		int dir = 0;
		for (size_t k = 0; k < rv->nfiles; k++) {
			if (!strcmp(rv->files[k].path, p)) {
				json_array_append_new(a, entry_json(&rv->files[k], rv, expand));
				break;
			}
			if (!dir && pl && !strncmp(rv->files[k].path, p, pl) && rv->files[k].path[pl] == '/') {
				json_array_append_new(a, dir_json(p, pl));
				dir = 1;
			}
		}
	}
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	return srv_send_json(q, c, 200, a);
}

static enum MHD_Result refs(struct srv_req *q, struct MHD_Connection *c, const struct srv_route *r)
{
	struct hm_ctx ctx = {0};
	struct store *st = srv_store_take(q->s);
	struct store_rev_info *rv = NULL;
	size_t n = 0;
	json_t *branches = json_array(), *tags = json_array(), *prs = json_array();
	if (!st || store_list_revisions(&ctx, st, r->type, r->repo, &rv, &n) || !n) {
		srv_store_put(q->s, st);
		json_decref(branches);
		json_decref(tags);
		json_decref(prs);
		return srv_send_error(q, c, 404, "RepoNotFound", "Repository not found: %s '%s'", r->type, r->repo);
	}
	srv_store_put(q->s, st);
	for (size_t i = 0; i < n; i++) {
		char buf[4096];
		snprintf(buf, sizeof(buf), "%s", rv[i].refs ? rv[i].refs : "");
		for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			char full[300];
			int pr = !strncmp(t, "refs/pr/", 8);
			snprintf(full, sizeof(full), "%s%s", pr ? "" : "refs/heads/", t);
			json_array_append_new(pr ? prs : branches,
					      json_pack("{s:s, s:s, s:s}", "name", pr ? t + 8 : t, "ref", full,
							"targetCommit", rv[i].commit));
		}
	}
	store_rev_info_free(rv, n);
	return srv_send_json(q, c, 200,
			     json_pack("{s:o, s:o, s:o, s:o}", "branches", branches, "tags", tags, "converts",
				       json_array(), "pullRequests", prs));
}

/* ---- a cache of rendered answers ----
 * A commit's listing never changes, so repo-info and tree answers are kept
 * by (what, repo, commit, query): a lab of machines asking for the same
 * model costs one rendering. Entries expire after CACHE_TTL so that a
 * revision removed with 'rm' stops being advertised. */
#define CACHE_SLOTS 64
#define CACHE_TTL 60.0
#define CACHE_MAX_BODY (4u << 20)

struct cached {
	char key[700];
	char *body;
	size_t next;
	double at, used;
};

struct srv_api_cache {
	pthread_mutex_t mu;
	struct cached slot[CACHE_SLOTS];
};

enum hm_err srv_api_init(struct srv *s)
{
	if (!(s->api_cache = calloc(1, sizeof(*s->api_cache))))
		return hm_fail(s->ctx, HM_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&s->api_cache->mu, NULL);
	return HM_OK;
}

void srv_api_free(struct srv *s)
{
	struct srv_api_cache *ac = s->api_cache;
	if (!ac)
		return;
	for (int i = 0; i < CACHE_SLOTS; i++)
		free(ac->slot[i].body);
	pthread_mutex_destroy(&ac->mu);
	free(ac);
	s->api_cache = NULL;
}

static char *cache_get(struct srv *s, const char *key, size_t *next)
{
	struct srv_api_cache *ac = s->api_cache;
	struct cached *cache = ac->slot;
	char *out = NULL;
	double now = util_now();
	pthread_mutex_lock(&ac->mu);
	for (int i = 0; i < CACHE_SLOTS; i++)
		if (cache[i].body && !strcmp(cache[i].key, key) && now - cache[i].at < CACHE_TTL) {
			out = util_strdup(cache[i].body);
			*next = cache[i].next;
			cache[i].used = now;
			break;
		}
	pthread_mutex_unlock(&ac->mu);
	return out;
}

static void cache_put(struct srv *s, const char *key, const char *body, size_t next)
{
	struct srv_api_cache *ac = s->api_cache;
	struct cached *cache = ac->slot;
	int victim = 0;
	char *copy;
	if (strlen(key) >= sizeof(cache[0].key) || strlen(body) > CACHE_MAX_BODY || !(copy = util_strdup(body)))
		return;
	pthread_mutex_lock(&ac->mu);
	for (int i = 0; i < CACHE_SLOTS; i++) {
		if (!cache[i].body || !strcmp(cache[i].key, key)) {
			victim = i;
			break;
		}
		if (cache[i].used < cache[victim].used)
			victim = i;
	}
	free(cache[victim].body);
	snprintf(cache[victim].key, sizeof(cache[victim].key), "%s", key);
	cache[victim].body = copy;
	cache[victim].next = next;
	cache[victim].at = cache[victim].used = util_now();
	pthread_mutex_unlock(&ac->mu);
}

/* The local commit for rev (NULL/HEAD: main, else latest), or "" if not stored. */
static void local_commit(struct srv *s, const char *type, const char *repo, const char *rev, char commit[41])
{
	struct hm_ctx ctx = {0};
	struct store *st = srv_store_take(s);
	commit[0] = 0;
	if (rev && !strcmp(rev, "HEAD"))
		rev = NULL;
	if (!st || store_resolve(&ctx, st, type, repo, rev, commit))
		commit[0] = 0;
	srv_store_put(s, st);
}

enum MHD_Result srv_api(struct srv_req *q, struct MHD_Connection *c, const struct srv_route *r)
{
	struct srv_rev rv;
	int local, status = 200;
	enum hm_err err;
	size_t page = q->s->o->page_size > 0 ? (size_t)q->s->o->page_size : 1000, next = 0;
	char commit[41], key[700] = "";
	char *txt = NULL;
	const char *rev = r->what == R_REPO_INFO ? NULL : r->rev;

	if (r->what == R_REFS)
		return refs(q, c, r);
	if (r->what == R_TREE && query_flag(c, "expand") && q->s->o->page_size <= 0)
		page = 50; /* like the Hub: smaller pages with expand */
	if (r->what != R_PATHS_INFO) {
		local_commit(q->s, r->type, r->repo, rev, commit);
		if (commit[0]) {
			const char *cur = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "cursor");
			const char *sub = r->what == R_TREE ? r->path : "";
			/* a key that would not fit is not cached (a cut key could match another path) */
			if (strlen(sub) < 300 && (!cur || strlen(cur) < 40)) {
				snprintf(key, sizeof(key), "%d|%s|%s|%s|b%d|r%d|e%d|%.300s|%.40s|%zu", r->what == R_TREE, r->type,
					 r->repo, commit, query_flag(c, "blobs"), query_flag(c, "recursive"),
					 query_flag(c, "expand"), sub, cur ? cur : "", page);
				if ((txt = cache_get(q->s, key, &next)))
					return send_text(q, c, txt, next);
			}
		}
	}
	err = srv_get_rev(q->s, q, r->type, r->repo, rev, &rv, &local);
	if (err) {
		srv_rev_release(q->s, &rv);
		return rev_error(q, c, err, r->type, r->repo, r->rev[0] ? r->rev : "main", NULL);
	}
	switch (r->what) {
	case R_REPO_INFO:
	case R_REVISION: {
		json_t *j = repo_info(c, r, &rv,
				      srv_token_guarded(q->s));
		txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		status = txt ? 200 : 500;
		break;
	}
	case R_TREE:
		txt = tree_page(c, r, &rv, page, &next, &status);
		break;
	case R_PATHS_INFO: {
		enum MHD_Result ret = paths_info(q, c, &rv);
		srv_rev_release(q->s, &rv);
		return ret;
	}
	default:
		status = 404;
	}
	if (txt && local && key[0] && !strcmp(rv.commit, commit))
		cache_put(q->s, key, txt, next);
	if (!txt) {
		char c40[41];
		memcpy(c40, rv.commit, sizeof(c40));
		srv_rev_release(q->s, &rv);
		if (status == 404)
			return srv_send_error(q, c, 404, "EntryNotFound", "%s does not exist on %s", r->path, c40);
		if (status == 400)
			return srv_send_error(q, c, 400, NULL, "invalid cursor");
		return srv_send_error(q, c, 500, NULL, "out of memory");
	}
	srv_rev_release(q->s, &rv);
	return send_text(q, c, txt, next);
}
