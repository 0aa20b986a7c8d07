/* smoke.c - smoke-test results in the index. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "store-int.h"
#include "../util/util.h"

enum hm_err store_record_smoke(struct hm_ctx *ctx, struct store *st, const struct store_smoke *s)
{
	sqlite3_stmt *q = NULL;
	enum hm_err err;
	if (!s->repo_type || !s->repo || !s->commit || !s->model)
		return hm_fail(ctx, HM_ERR_USAGE, "a smoke result needs a repo, a commit and a model");
	if ((err = store_prepare(ctx, st,
				 "INSERT INTO smoke_results (repo_type, repo, commit_sha, artifact_sha256, model, pass,"
				 " reason, load_s, prompt_tps, gen_tps, peak_rss, created_at, architecture, engine_version)"
				 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)", &q)))
		return err;
	sqlite3_bind_text(q, 1, s->repo_type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, s->repo, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, s->commit, -1, SQLITE_STATIC);
	if (s->artifact_sha256)
		sqlite3_bind_text(q, 4, s->artifact_sha256, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 5, s->model, -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 6, s->pass ? 1 : 0);
	if (s->reason && *s->reason)
		sqlite3_bind_text(q, 7, s->reason, -1, SQLITE_STATIC);
	sqlite3_bind_double(q, 8, s->load_s);
	sqlite3_bind_double(q, 9, s->prompt_tps);
	sqlite3_bind_double(q, 10, s->gen_tps);
	sqlite3_bind_int64(q, 11, (sqlite3_int64)s->peak_rss);
	sqlite3_bind_int64(q, 12, s->created_at ? s->created_at : util_unix_time());
	if (s->architecture)
		sqlite3_bind_text(q, 13, s->architecture, -1, SQLITE_STATIC);
	if (s->engine_version)
		sqlite3_bind_text(q, 14, s->engine_version, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		err = store_db_fail(ctx, st, "record a smoke test");
	sqlite3_finalize(q);
	return err;
}

static char *dup_col(sqlite3_stmt *q, int i)
{
	const unsigned char *t = sqlite3_column_text(q, i);
	return t ? util_strdup((const char *)t) : NULL;
}

enum hm_err store_list_smoke(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			     struct store_smoke_row **out, size_t *n)
{
	sqlite3_stmt *q = NULL;
	struct store_smoke_row *v = NULL;
	size_t len = 0, cap = 0;
	enum hm_err err;
	int rc;

	*out = NULL;
	*n = 0;
	if ((err = store_prepare(ctx, st,
				 "SELECT commit_sha, artifact_sha256, model, reason, pass, load_s, prompt_tps, gen_tps,"
				 " peak_rss, created_at, architecture, engine_version FROM smoke_results"
				 " WHERE repo_type = ?1 AND repo = ?2"
				 " ORDER BY created_at DESC, id DESC", &q)))
		return err;
	sqlite3_bind_text(q, 1, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, repo, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (len == cap) {
			size_t nc = cap ? cap * 2 : 8;
			void *p = realloc(v, nc * sizeof(*v));
			if (!p)
				goto nomem;
			v = p;
			cap = nc;
		}
		struct store_smoke_row *r = &v[len];
		memset(r, 0, sizeof(*r));
		len++;
		snprintf(r->commit, sizeof(r->commit), "%s", (const char *)sqlite3_column_text(q, 0));
		r->artifact_sha256 = dup_col(q, 1);
		r->model = dup_col(q, 2);
		r->reason = dup_col(q, 3);
		r->pass = sqlite3_column_int(q, 4);
		r->load_s = sqlite3_column_double(q, 5);
		r->prompt_tps = sqlite3_column_double(q, 6);
		r->gen_tps = sqlite3_column_double(q, 7);
		r->peak_rss = (uint64_t)sqlite3_column_int64(q, 8);
		r->created_at = sqlite3_column_int64(q, 9);
		r->architecture = dup_col(q, 10);
		r->engine_version = dup_col(q, 11);
		if (!r->model)
			goto nomem;
	}
	if (rc != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "list smoke tests");
		goto out;
	}
	*out = v;
	*n = len;
	v = NULL;
	len = 0;
	goto out;
nomem:
	err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
out:
	sqlite3_finalize(q);
	store_smoke_rows_free(v, len);
	return err;
}

void store_smoke_rows_free(struct store_smoke_row *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++) {
		free(v[i].artifact_sha256);
		free(v[i].architecture);
		free(v[i].engine_version);
		free(v[i].model);
		free(v[i].reason);
	}
	free(v);
}
