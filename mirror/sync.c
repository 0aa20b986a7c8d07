/* sync.c - provisioning from a manifest: the lab's list of models, pulled,
 * checked out and pinned in a lockfile (MANIFEST.lock) that can be replayed
 * exactly with --locked. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sync.h"
#include "../util/util.h"
#include "../store/checkout.h"
#include "../store/index.h"

#define MANIFEST_MAX (1u << 20)
#define LOCK_MAX (256u << 20)

static void entry_free(struct sync_entry *e)
{
	for (size_t i = 0; i < e->ninclude; i++)
		free(e->include[i]);
	for (size_t i = 0; i < e->nexclude; i++)
		free(e->exclude[i]);
	free(e->include);
	free(e->exclude);
	free(e->repo);
	free(e->rev);
	free(e->convert);
}

void sync_manifest_free(struct sync_manifest *m)
{
	for (size_t i = 0; i < m->n; i++)
		entry_free(&m->v[i]);
	free(m->v);
	memset(m, 0, sizeof(*m));
}

/* Splits "a,b,c" into a new array of strings. */
static int split_list(const char *s, char ***out, size_t *n)
{
	char *copy = util_strdup(s), *save = NULL;
	size_t cap = 1;
	if (!copy)
		return -1;
	for (const char *p = s; *p; p++)
		cap += *p == ',';
	*out = calloc(cap, sizeof(**out));
	*n = 0;
	if (!*out) {
		free(copy);
		return -1;
	}
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
		if (*t && !((*out)[(*n)++] = util_strdup(t))) {
			free(copy);
			return -1;
		}
	free(copy);
	return 0;
}

enum hm_err sync_manifest_parse(struct hm_ctx *ctx, const char *name, const char *text, size_t len,
				struct sync_manifest *m)
{
	char *copy = util_strndup(text, len), *save = NULL;
	int lineno = 0;
	enum hm_err err = HM_OK;

	memset(m, 0, sizeof(*m));
	if (!copy)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if (strlen(copy) != len) {
		free(copy);
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "%s: contains a NUL byte", name);
	}
	/* strtok_r skips empty lines, so count lines by hand */
	char *line = copy;
	while (line && !err) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		char *tok = strtok_r(line, " \t\r", &save);
		if (tok) {
			if (m->n == m->cap) {
				size_t nc = m->cap ? m->cap * 2 : 16;
				struct sync_entry *nv = realloc(m->v, nc * sizeof(*nv));
				if (!nv) {
					err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
					break;
				}
				m->v = nv;
				m->cap = nc;
			}
			struct sync_entry *e = &m->v[m->n++];
			memset(e, 0, sizeof(*e));
			e->line = lineno;
			e->type = "model";
			char *at = strchr(tok, '@');
			if (at) {
				*at = 0;
				e->rev = util_strdup(at + 1);
				if (!e->rev || !*e->rev || strlen(e->rev) > 255) {
					err = hm_fail(ctx, HM_ERR_BAD_INPUT, "%s:%d: empty or overlong revision after '@'", name, lineno);
					break;
				}
			}
			if (!strncmp(tok, "datasets/", 9)) {
				e->type = "dataset";
				tok += 9;
			}
			if (!util_repo_id_is_valid(tok)) {
				err = hm_fail(ctx, HM_ERR_BAD_INPUT, "%s:%d: invalid repository id '%.100s'", name, lineno, tok);
				break;
			}
			e->repo = util_strdup(tok);
			for (char *kv = strtok_r(NULL, " \t\r", &save); kv && !err; kv = strtok_r(NULL, " \t\r", &save)) {
				char *eq = strchr(kv, '=');
				if (!eq) {
					err = hm_fail(ctx, HM_ERR_BAD_INPUT, "%s:%d: expected KEY=VALUE, got '%.100s'", name, lineno, kv);
					break;
				}
				*eq = 0;
				const char *v = eq + 1;
				if (!strcmp(kv, "type")) {
					if (!strcmp(v, "model") || !strcmp(v, "dataset"))
						e->type = !strcmp(v, "model") ? "model" : "dataset";
					else
						err = hm_fail(ctx, HM_ERR_BAD_INPUT, "%s:%d: type must be model or dataset", name, lineno);
				} else if (!strcmp(kv, "include")) {
					if (split_list(v, &e->include, &e->ninclude))
						err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				} else if (!strcmp(kv, "exclude")) {
					if (split_list(v, &e->exclude, &e->nexclude))
						err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				} else if (!strcmp(kv, "convert")) {
					free(e->convert);
					e->convert = util_strdup(v);
				} else if (!strcmp(kv, "smoke")) {
					if (!strcmp(v, "yes") || !strcmp(v, "no"))
						e->smoke = !strcmp(v, "yes");
					else
						err = hm_fail(ctx, HM_ERR_BAD_INPUT, "%s:%d: smoke must be yes or no", name, lineno);
				} else {
					err = hm_fail(ctx, HM_ERR_BAD_INPUT,
						      "%s:%d: unknown key '%.40s' (known: type, include, exclude, convert, smoke)",
						      name, lineno, kv);
				}
			}
			for (size_t k = 0; k + 1 < m->n && !err; k++)
				if (!strcmp(m->v[k].repo, e->repo) && !strcmp(m->v[k].type, e->type))
					err = hm_fail(ctx, HM_ERR_BAD_INPUT, "%s:%d: '%s' is listed twice (line %d)", name,
						      lineno, e->repo, m->v[k].line);
		}
		line = nl ? nl + 1 : NULL;
	}
	free(copy);
	if (err)
		sync_manifest_free(m);
	return err;
}

enum hm_err sync_manifest_load(struct hm_ctx *ctx, const char *path, struct sync_manifest *m)
{
	char *data = NULL;
	size_t len;
	enum hm_err err;
	if (util_read_file(path, MANIFEST_MAX, &data, &len))
		return hm_fail(ctx, HM_ERR_USAGE, "cannot read the manifest '%s': %s", path,
			       errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
	err = sync_manifest_parse(ctx, path, data, len, m);
	free(data);
	return err;
}

/* ---- the lock ---- */

void sync_lock_free(struct sync_lock *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].repo);
		for (size_t k = 0; k < l->v[i].nfiles; k++)
			free(l->v[i].files[k].path);
		free(l->v[i].files);
	}
	free(l->v);
	memset(l, 0, sizeof(*l));
}

enum hm_err sync_lock_load(struct hm_ctx *ctx, const char *path, struct sync_lock *l)
{
	json_error_t je;
	json_t *j, *models, *mo;
	size_t i;
	enum hm_err err = HM_OK;
	char *data = NULL;
	size_t len;

	memset(l, 0, sizeof(*l));
	if (util_read_file(path, LOCK_MAX, &data, &len))
		return hm_fail(ctx, HM_ERR_NOT_FOUND, "cannot read the lockfile '%s': %s", path, strerror(errno));
	j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	free(data);
	if (!j)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "%s: malformed JSON: %s (line %d)", path, je.text, je.line);
	models = json_object_get(j, "models");
	if (json_integer_value(json_object_get(j, "version")) != 1 || !json_is_array(models)) {
		json_decref(j);
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "%s: not a hubmirror lockfile (version 1)", path);
	}
	l->v = calloc(json_array_size(models) + 1, sizeof(*l->v));
	if (!l->v) {
		json_decref(j);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	json_array_foreach(models, i, mo) {
		const char *repo = json_string_value(json_object_get(mo, "repo"));
		const char *type = json_string_value(json_object_get(mo, "type"));
		const char *commit = json_string_value(json_object_get(mo, "commit"));
		json_t *files = json_object_get(mo, "files"), *fo;
		size_t k;
		if (!repo || !util_repo_id_is_valid(repo) || !type || (strcmp(type, "model") && strcmp(type, "dataset")) ||
		    !commit || !util_is_hex(commit, 40) || !json_is_array(files)) {
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "%s: model #%zu is malformed", path, i + 1);
			break;
		}
		struct sync_locked *m = &l->v[l->n++];
		m->repo = util_strdup(repo);
		m->type = !strcmp(type, "model") ? "model" : "dataset";
		memcpy(m->commit, commit, 41);
		m->files = calloc(json_array_size(files) + 1, sizeof(*m->files));
		if (!m->repo || !m->files) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			break;
		}
		json_array_foreach(files, k, fo) {
			const char *p = json_string_value(json_object_get(fo, "path"));
			const char *sha = json_string_value(json_object_get(fo, "sha256"));
			json_t *sz = json_object_get(fo, "size");
			if (!p || !util_path_is_safe(p) || !sha || !util_is_hex(sha, 64) || !json_is_integer(sz) ||
			    json_integer_value(sz) < 0) {
				err = hm_fail(ctx, HM_ERR_BAD_INPUT, "%s: a file of '%s' is malformed", path, repo);
				break;
			}
			struct sync_locked_file *f = &m->files[m->nfiles++];
			f->path = util_strdup(p);
			f->size = (uint64_t)json_integer_value(sz);
			memcpy(f->sha256, sha, 65);
			if (!f->path) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				break;
			}
		}
		if (err)
			break;
	}
	json_decref(j);
	if (err)
		sync_lock_free(l);
	return err;
}

static json_t *str_array(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

enum hm_err sync_lock_write(struct hm_ctx *ctx, const char *path, const struct sync_manifest *m,
			    const struct sync_result *r)
{
	json_t *models = json_array(), *j;
	char *txt;
	int rc;
	for (size_t i = 0; i < m->n; i++) {
		const struct sync_entry *e = &m->v[i];
		const struct sync_result_model *rm = &r->v[i];
		if (!rm->commit[0])
			continue; /* failed before it was resolved: not locked */
		json_t *files = json_array();
		for (size_t k = 0; k < rm->nfiles; k++)
			json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "path", rm->files[k].path, "size",
							       (json_int_t)rm->files[k].size, "sha256", rm->files[k].sha256));
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o}", "repo", e->repo, "type", e->type, "revision",
				      e->rev ? e->rev : "main", "commit", rm->commit, "include",
				      str_array(e->include, e->ninclude), "exclude", str_array(e->exclude, e->nexclude),
				      "files", files);
		json_array_append_new(models, o);
	}
	j = json_pack("{s:i, s:s, s:o}", "version", 1, "generator", "hubmirror sync", "models", models);
	txt = json_dumps(j, JSON_INDENT(2));
	json_decref(j);
	if (!txt)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	char *withnl = util_asprintf("%s\n", txt);
	free(txt);
	if (!withnl)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	rc = util_write_file_atomic(path, withnl, strlen(withnl));
	free(withnl);
	if (rc)
		return hm_fail(ctx, errno == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO, "cannot write '%s': %s", path,
			       strerror(errno));
	return HM_OK;
}

/* ---- running it ---- */

void sync_result_release(struct sync_result *r)
{
	for (size_t i = 0; i < r->n; i++) {
		for (size_t k = 0; k < r->v[i].nfiles; k++)
			free(r->v[i].files[k].path);
		free(r->v[i].files);
	}
	free(r->v);
	memset(r, 0, sizeof(*r));
}

static void set_status(struct sync_result_model *rm, const char *status, const char *detail)
{
	size_t n = detail ? strnlen(detail, sizeof(rm->detail) - 1) : 0;
	snprintf(rm->status, sizeof(rm->status), "%s", status);
	if (n)
		memcpy(rm->detail, detail, n);
	rm->detail[n] = 0;
}

static int cmp_file_path(const void *a, const void *b)
{
	return strcmp((*(const struct mirror_file *const *)a)->path, (*(const struct mirror_file *const *)b)->path);
}

/* A locked model: the hub must still serve exactly what was locked; then
 * the revision is recorded under the locked name too. */
static enum hm_err check_locked(struct hm_ctx *ctx, struct store *st, const struct sync_entry *e,
				const struct sync_locked *lk, const struct mirror_pull_result *r)
{
	enum hm_err err = HM_OK;
	/* the hub must still serve exactly what was locked (looked up in
	 * the pulled files sorted by path: a repo may hold 100,000) */
	const struct mirror_file **byp = calloc(r->nfiles ? r->nfiles : 1, sizeof(*byp));
	if (!byp)
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t q = 0; byp && q < r->nfiles; q++)
		byp[q] = &r->files[q];
	if (byp)
		qsort(byp, r->nfiles, sizeof(*byp), cmp_file_path);
	for (size_t k = 0; k < lk->nfiles && !err; k++) {
		const struct sync_locked_file *lf = &lk->files[k];
		struct mirror_file key = {.path = lf->path};
		const struct mirror_file *kp = &key, **hit = bsearch(&kp, byp, r->nfiles, sizeof(*byp), cmp_file_path);
		int ok = hit && (*hit)->size == lf->size && !strcmp((*hit)->sha256, lf->sha256);
		if (!ok)
			err = hm_fail(ctx, HM_ERR_CORRUPT, "'%s' of %s at %.12s differs from the lock", lf->path, e->repo,
				      lk->commit);
	}
	free(byp);
	if (!err) /* a locked install records the revision under the locked name too */
		err = mirror_record_result(ctx, st, e->type, e->repo, lk->commit,
					   e->rev && !util_is_hex(e->rev, 40) ? e->rev : (e->rev ? NULL : "main"), r);
	return err;
}

/* One model: pull (as listed or as locked), check the lock, check out. */
static void sync_one(struct hm_ctx *ctx, struct store *st, struct fetch_client *fc, const struct sync_entry *e,
		     const struct sync_locked *lk, const struct sync_opts *so, struct sync_result_model *rm)
{
	struct mirror_pull_result res;
	const char **only = NULL;
	enum hm_err err;

	ctx->errmsg[0] = 0;
	if ((e->convert || e->smoke) && !so->post) {
		set_status(rm, "failed", "convert= and smoke= need a caller that can convert and test");
		return;
	}
	struct mirror_pull_opts o = {
		.type = e->type, .repo = e->repo, .revision = e->rev,
		.include = (const char *const *)e->include, .ninclude = e->ninclude,
		.exclude = (const char *const *)e->exclude, .nexclude = e->nexclude,
		.swarm = so->swarm,
		.offline = so->offline,
	};
	if (lk) {
		only = calloc(lk->nfiles ? lk->nfiles : 1, sizeof(*only));
		if (!only) {
			set_status(rm, "failed", "out of memory");
			return;
		}
		for (size_t k = 0; k < lk->nfiles; k++)
			only[k] = lk->files[k].path;
		o.revision = lk->commit;
		o.include = o.exclude = NULL;
		o.ninclude = o.nexclude = 0;
		o.only = only;
		o.nonly = lk->nfiles;
		o.prefer_store = 1; /* pinned: a store that holds it needs no network */
	}
	err = mirror_pull(ctx, st, fc, &o, &res);
	if (res.commit[0])
		memcpy(rm->commit, res.commit, 41);
	if (!err && lk)
		err = check_locked(ctx, st, e, lk, &res);
	free(only);
	if (err) {
		if (lk && (err == HM_ERR_REV_NOT_FOUND || err == HM_ERR_ENTRY_NOT_FOUND))
			snprintf(ctx->errmsg, sizeof(ctx->errmsg),
				 "the hub no longer has the locked commit %.12s of '%s' (or a locked file of it)", lk->commit,
				 e->repo);
		set_status(rm, "failed", ctx->errmsg[0] ? ctx->errmsg : hm_strerror(err));
		mirror_pull_result_release(&res);
		return;
	}
	rm->files = calloc(res.nfiles ? res.nfiles : 1, sizeof(*rm->files));
	if (!rm->files) {
		set_status(rm, "failed", "out of memory");
		mirror_pull_result_release(&res);
		return;
	}
	for (size_t q = 0; q < res.nfiles; q++) {
		rm->files[q].path = util_strdup(res.files[q].path);
		rm->files[q].size = res.files[q].size;
		memcpy(rm->files[q].sha256, res.files[q].sha256, 65);
		rm->nfiles++;
		rm->bytes += res.files[q].size;
	}
	rm->bytes_downloaded = res.bytes_downloaded;
	rm->files_downloaded = res.ndownloaded;
	set_status(rm, res.ndownloaded ? "pulled" : "up to date", NULL);
	mirror_pull_result_release(&res);
	if (so->to) {
		char dir[4096];
		if (so->layout == STORE_LAYOUT_HF_CACHE)
			snprintf(dir, sizeof(dir), "%s", so->to);
		else
			snprintf(dir, sizeof(dir), "%s/%s%s", so->to, !strcmp(e->type, "dataset") ? "datasets/" : "", e->repo);
		const char *ref = e->rev ? (util_is_hex(e->rev, 40) ? NULL : e->rev) : "main";
		err = mirror_checkout(ctx, st, e->type, e->repo, rm->commit, ref, dir, so->layout, 0);
		if (err) {
			set_status(rm, "failed", ctx->errmsg);
			return;
		}
		rm->checked_out = 1;
	}
	if ((e->convert || e->smoke) && so->post) {
		char verdict[512] = "";
		int bad = so->post(so->post_ud, e, rm->commit, verdict, sizeof(verdict));
		if (bad)
			set_status(rm, "failed", verdict[0] ? verdict : "conversion or smoke test failed");
		else
			set_status(rm, e->smoke ? "smoke passed" : "converted", verdict);
	}
}

enum hm_err sync_run(struct hm_ctx *ctx, struct store *st, struct fetch_client *fc, const struct sync_manifest *m,
		     const struct sync_lock *lock, const struct sync_opts *so, struct sync_result *r)
{
	memset(r, 0, sizeof(*r));
	r->v = calloc(m->n ? m->n : 1, sizeof(*r->v));
	if (!r->v)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	r->n = m->n;
	for (size_t i = 0; i < m->n; i++) {
		const struct sync_entry *e = &m->v[i];
		const struct sync_locked *lk = NULL;
		if (hm_cancelled(ctx)) {
			for (size_t k = i; k < m->n; k++)
				set_status(&r->v[k], "failed", "interrupted");
			r->nfailed += m->n - i;
			return hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
		}
		if (lock) {
			for (size_t k = 0; k < lock->n && !lk; k++)
				if (!strcmp(lock->v[k].repo, e->repo) && !strcmp(lock->v[k].type, e->type))
					lk = &lock->v[k];
			if (!lk) {
				set_status(&r->v[i], "failed", "not in the lockfile: run sync without --locked to update it");
				r->nfailed++;
				continue;
			}
		}
		struct hm_event ev = {.kind = HM_EV_INFO, .name = e->repo, .msg = "sync"};
		hm_emit(ctx, &ev);
		sync_one(ctx, st, fc, e, lk, so, &r->v[i]);
		if (!strcmp(r->v[i].status, "failed"))
			r->nfailed++;
	}
	return HM_OK;
}
