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
	else
		store_stats_maintain(ctx, st);
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
