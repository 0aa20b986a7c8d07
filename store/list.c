/* list.c - listing repos, revisions and files from the index. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include "store-int.h"
#include "../util/util.h"

/* Grows *v (of elem-size items) to hold one more; zeroes the new slot. */
static int grow(void **v, size_t *cap, size_t n, size_t elem)
{
	if (n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		void *p = realloc(*v, nc * elem);
		if (!p)
			return -1;
		*v = p;
		*cap = nc;
	}
	memset((char *)*v + n * elem, 0, elem);
	return 0;
}

static const char *col_text(sqlite3_stmt *q, int i)
{
	const char *s = (const char *)sqlite3_column_text(q, i);
	return s ? s : "";
}

enum hm_err store_list_repos(struct hm_ctx *ctx, struct store *st,
			     struct store_repo_info **out, size_t *n)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	struct store_repo_info *v = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if ((err = store_prepare(ctx, st,
				 /* one pass over revisions and files, not one per repo */
				 "SELECT r.type, r.name, coalesce(a.n, 0), coalesce(b.bytes, 0), coalesce(a.last, 0)"
				 " FROM repos r"
				 " LEFT JOIN (SELECT repo_id, count(*) AS n, max(pulled_at) AS last FROM revisions"
				 "  GROUP BY repo_id) a ON a.repo_id = r.id"
				 " LEFT JOIN (SELECT v.repo_id, sum(f.size) AS bytes FROM files f JOIN revisions v"
				 "  ON f.revision_id = v.id GROUP BY v.repo_id) b ON b.repo_id = r.id"
				 " ORDER BY r.type, r.name", &q)))
		goto out;
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (grow((void **)&v, &cap, len, sizeof(*v)) < 0)
			goto nomem;
		struct store_repo_info *r = &v[len];
		snprintf(r->type, sizeof(r->type), "%s", col_text(q, 0));
		r->name = util_strdup(col_text(q, 1));
		if (!r->name)
			goto nomem;
		r->nrevisions = (size_t)sqlite3_column_int64(q, 2);
		r->bytes = (uint64_t)sqlite3_column_int64(q, 3);
		r->last_pulled = sqlite3_column_int64(q, 4);
		len++;
	}
	if (rc != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "list repositories");
		goto out;
	}
	*out = v;
	*n = len;
	v = NULL;
	goto out;
nomem:
	err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory listing repositories");
out:
	sqlite3_finalize(q);
	store_repo_info_free(v, len);
	return err;
}

enum hm_err store_repos_version(struct hm_ctx *ctx, struct store *st, uint64_t *v)
{
	sqlite3_stmt *q = NULL;
	enum hm_err err;
	*v = 0;
	if ((err = store_prepare(ctx, st,
				 "SELECT (SELECT count(*) FROM repos), (SELECT coalesce(max(id), 0) FROM repos),"
				 " count(*), coalesce(max(id), 0), coalesce(sum(pulled_at), 0) FROM revisions", &q)))
		return err;
	if (sqlite3_step(q) == SQLITE_ROW) {
		uint64_t h = 1469598103934665603ull; /* FNV-1a over the five numbers */
		for (int i = 0; i < 5; i++) {
			uint64_t x = (uint64_t)sqlite3_column_int64(q, i);
			for (int k = 0; k < 8; k++, x >>= 8)
				h = (h ^ (x & 0xff)) * 1099511628211ull;
		}
		*v = h;
	} else {
		err = store_db_fail(ctx, st, "read the index version");
	}
	sqlite3_finalize(q);
	return err;
}

enum hm_err store_list_revisions(struct hm_ctx *ctx, struct store *st, const char *type,
				 const char *repo, struct store_rev_info **out, size_t *n)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	struct store_rev_info *v = NULL;
	size_t len = 0, cap = 0;
	int64_t repo_id;
	int rc;

	*out = NULL;
	*n = 0;
	if ((err = store_repo_id(ctx, st, type, repo, &repo_id)))
		return err;
	if ((err = store_prepare(ctx, st,
				 "SELECT v.commit_sha, v.pulled_at,"
				 " (SELECT group_concat(name, ',') FROM (SELECT name FROM refs"
				 "  WHERE repo_id = v.repo_id AND commit_sha = v.commit_sha ORDER BY name)),"
				 " (SELECT count(*) FROM files f WHERE f.revision_id = v.id),"
				 " (SELECT coalesce(sum(size), 0) FROM files f WHERE f.revision_id = v.id)"
				 " FROM revisions v WHERE v.repo_id = ?1 ORDER BY v.pulled_at DESC, v.id DESC",
				 &q)))
		goto out;
	sqlite3_bind_int64(q, 1, repo_id);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (grow((void **)&v, &cap, len, sizeof(*v)) < 0)
			goto nomem;
		struct store_rev_info *r = &v[len];
		snprintf(r->commit, sizeof(r->commit), "%s", col_text(q, 0));
		r->pulled_at = sqlite3_column_int64(q, 1);
		r->refs = util_strdup(col_text(q, 2));
		if (!r->refs)
			goto nomem;
		r->nfiles = (size_t)sqlite3_column_int64(q, 3);
		r->bytes = (uint64_t)sqlite3_column_int64(q, 4);
		len++;
	}
	if (rc != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "list revisions");
		goto out;
	}
	*out = v;
	*n = len;
	v = NULL;
	goto out;
nomem:
	err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory listing revisions");
out:
	sqlite3_finalize(q);
	store_rev_info_free(v, len);
	return err;
}

enum hm_err store_list_files(struct hm_ctx *ctx, struct store *st, const char *type,
			     const char *repo, const char *commit,
			     struct store_file **out, size_t *n)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	struct store_file *v = NULL;
	size_t len = 0, cap = 0;
	int64_t repo_id, rev_id = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if ((err = store_repo_id(ctx, st, type, repo, &repo_id)))
		return err;
	if ((err = store_prepare(ctx, st, "SELECT id FROM revisions WHERE repo_id = ?1 AND commit_sha = ?2", &q)))
		goto out;
	sqlite3_bind_int64(q, 1, repo_id);
	sqlite3_bind_text(q, 2, commit ? commit : "", -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_DONE) {
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "revision '%s' of %s '%s' not found in the store",
			      commit ? commit : "", type, repo);
		goto out;
	} else if (rc != SQLITE_ROW) {
		err = store_db_fail(ctx, st, "look up a revision");
		goto out;
	}
	rev_id = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	if ((err = store_prepare(ctx, st, "SELECT path, size, sha256, git_oid, lfs FROM files"
				 " WHERE revision_id = ?1 ORDER BY path", &q)))
		goto out;
	sqlite3_bind_int64(q, 1, rev_id);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (grow((void **)&v, &cap, len, sizeof(*v)) < 0)
			goto nomem;
		struct store_file *f = &v[len];
		f->path = util_strdup(col_text(q, 0));
		if (!f->path)
			goto nomem;
		f->size = (uint64_t)sqlite3_column_int64(q, 1);
		snprintf(f->sha256, sizeof(f->sha256), "%s", col_text(q, 2));
		snprintf(f->git_oid, sizeof(f->git_oid), "%s", col_text(q, 3));
		f->lfs = sqlite3_column_int(q, 4);
		len++;
	}
	if (rc != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "list files");
		goto out;
	}
	*out = v;
	*n = len;
	v = NULL;
	goto out;
nomem:
	err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory listing files");
out:
	sqlite3_finalize(q);
	store_files_free(v, len);
	return err;
}

void store_repo_info_free(struct store_repo_info *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

void store_rev_info_free(struct store_rev_info *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].refs);
	free(v);
}

void store_files_free(struct store_file *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].path);
	free(v);
}

void store_artifact_release(struct store_artifact *a)
{
	if (!a)
		return;
	free(a->repo_type);
	free(a->repo);
	free(a->format);
	free(a->options);
	memset(a, 0, sizeof(*a));
}

void store_artifacts_free(struct store_artifact *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		store_artifact_release(&v[i]);
	free(v);
}
