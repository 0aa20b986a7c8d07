/* served.c - requests answered by `hubmirror serve`: recording and statistics. */
#include <stdlib.h>
#include <string.h>
#include "store-int.h"
#include "../util/util.h"

static void bind_text_or_null(sqlite3_stmt *q, int i, const char *s)
{
	if (s)
		sqlite3_bind_text(q, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(q, i);
}

enum hm_err store_record_served(struct hm_ctx *ctx, struct store *st, const struct store_served *rows,
				size_t n)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;

	if (!n)
		return HM_OK;
	/* check the whole batch first: it is written completely or not at all */
	for (size_t i = 0; i < n; i++)
		if (!rows[i].kind || !rows[i].method)
			return hm_fail(ctx, HM_ERR_USAGE, "served request record lacks a kind or method");
	if ((err = store_exec(ctx, st, "BEGIN IMMEDIATE")))
		return err;
	if ((err = store_prepare(ctx, st, "INSERT INTO served(kind, method, repo_type, repo, revision,"
				 " path, status, bytes, seconds, client, cache, started_at)"
				 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)", &q)))
		goto out;
	for (size_t i = 0; i < n; i++) {
		const struct store_served *r = &rows[i];
		sqlite3_reset(q);
		sqlite3_bind_text(q, 1, r->kind, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, r->method, -1, SQLITE_STATIC);
		bind_text_or_null(q, 3, r->repo_type);
		bind_text_or_null(q, 4, r->repo);
		bind_text_or_null(q, 5, r->revision);
		bind_text_or_null(q, 6, r->path);
		sqlite3_bind_int(q, 7, r->status);
		sqlite3_bind_int64(q, 8, (sqlite3_int64)r->bytes);
		sqlite3_bind_double(q, 9, r->seconds);
		bind_text_or_null(q, 10, r->client);
		bind_text_or_null(q, 11, r->cache);
		sqlite3_bind_int64(q, 12, r->started_at);
		if (sqlite3_step(q) != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "record a served request");
			goto out;
		}
	}
	err = store_exec(ctx, st, "COMMIT");
out:
	sqlite3_finalize(q);
	if (err)
		store_rollback(st);
	return err;
}

/* One column list for both the per-repo rows and the total row. */
#define SERVED_COLS                                                                          \
	" count(*), count(*) FILTER (WHERE kind = 'file'), coalesce(sum(bytes), 0),"          \
	" count(*) FILTER (WHERE cache = 'hit'), count(*) FILTER (WHERE cache = 'miss'),"     \
	" count(*) FILTER (WHERE status >= 400), coalesce(sum(seconds), 0) FROM served"       \
	" WHERE (?1 IS NULL OR repo = ?1) AND (?2 IS NULL OR repo_type = ?2)"             \
	" AND started_at >= ?3 AND started_at < ?4"

enum hm_err store_served_stats(struct hm_ctx *ctx, struct store *st, const char *repo,
			       struct store_served_row **out, size_t *n)
{
	return store_served_stats_range(ctx, st, repo, INT64_MIN, INT64_MAX, out, n);
}

enum hm_err store_served_stats_range(struct hm_ctx *ctx, struct store *st, const char *repo,
				     int64_t since, int64_t until, struct store_served_row **out,
				     size_t *n)
{
	/* requests that named no repo have no key: they count in the total only */
	static const char *const sql[2] = {
		"SELECT repo_type || ':' || repo," SERVED_COLS
		" AND repo IS NOT NULL AND repo_type IS NOT NULL GROUP BY 1 ORDER BY 1",
		"SELECT NULL," SERVED_COLS,
	};
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	struct store_served_row *v = NULL;
	size_t len = 0, cap = 0;
	char *type = NULL;
	const char *name = NULL;
	int rc;

	*out = NULL;
	*n = 0;
	if ((err = store_stats_filter(ctx, repo, &type, &name)))
		return err;
	for (int pass = 0; pass < 2; pass++) {
		if ((err = store_prepare(ctx, st, sql[pass], &q)))
			goto out;
		if (name)
			sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
		if (type)
			sqlite3_bind_text(q, 2, type, -1, SQLITE_STATIC);
		sqlite3_bind_int64(q, 3, since);
		sqlite3_bind_int64(q, 4, until);
		while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
			struct store_served_row *row;
			if (len == cap) {
				size_t nc = cap ? cap * 2 : 16;
				void *p = realloc(v, nc * sizeof(*v));
				if (!p)
					goto nomem;
				v = p;
				cap = nc;
			}
			row = &v[len];
			memset(row, 0, sizeof(*row));
			if (pass == 0 && !(row->key = util_strdup((const char *)sqlite3_column_text(q, 0))))
				goto nomem;
			row->requests = (uint64_t)sqlite3_column_int64(q, 1);
			row->files = (uint64_t)sqlite3_column_int64(q, 2);
			row->bytes = (uint64_t)sqlite3_column_int64(q, 3);
			row->hits = (uint64_t)sqlite3_column_int64(q, 4);
			row->misses = (uint64_t)sqlite3_column_int64(q, 5);
			row->errors = (uint64_t)sqlite3_column_int64(q, 6);
			row->seconds = sqlite3_column_double(q, 7);
			len++;
		}
		if (rc != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "read served statistics");
			goto out;
		}
		sqlite3_finalize(q);
		q = NULL;
	}
	*out = v;
	*n = len;
	v = NULL;
	goto out;
nomem:
	err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory reading served statistics");
out:
	sqlite3_finalize(q);
	store_served_stats_free(v, len);
	free(type);
	return err;
}

void store_served_stats_free(struct store_served_row *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].key);
	free(v);
}
