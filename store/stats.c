/* stats.c - per-repo transfer statistics from the downloads table. */
#include <stdlib.h>
#include <string.h>
#include "store-int.h"
#include "../util/util.h"

/* One column list for both the per-repo rows and the total row. */
#define STATS_COLS                                                                   \
	" count(*) FILTER (WHERE result <> 'failed'), coalesce(sum(bytes), 0),"       \
	" count(*) FILTER (WHERE result = 'failed'), coalesce(sum(retries), 0),"      \
	" coalesce(sum(seconds), 0) FROM downloads"                                   \
	" WHERE (?1 IS NULL OR repo = ?1) AND (?2 IS NULL OR repo_type = ?2)"

enum hm_err store_stats_filter(struct hm_ctx *ctx, const char *repo, char **type, const char **name)
{
	const char *colon = repo ? strchr(repo, ':') : NULL;

	*type = NULL;
	*name = repo;
	/* "type:name" filters both; a bare name matches it in any type */
	if (colon) {
		if (!(*type = util_strndup(repo, (size_t)(colon - repo))))
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory reading statistics");
		*name = colon + 1;
	}
	return HM_OK;
}

enum hm_err store_stats(struct hm_ctx *ctx, struct store *st, const char *repo,
			struct store_stats_row **out, size_t *n)
{
	static const char *const sql[2] = {
		"SELECT repo_type || ':' || repo," STATS_COLS " GROUP BY 1 ORDER BY 1",
		"SELECT NULL," STATS_COLS,
	};
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	struct store_stats_row *v = NULL;
	size_t len = 0, cap = 0;
	char *type = NULL;
	const char *name = NULL;
	int rc;

	*out = NULL;
	*n = 0;
	if ((err = store_flush(ctx, st)))
		return err;
	if ((err = store_stats_filter(ctx, repo, &type, &name)))
		return err;
	for (int pass = 0; pass < 2; pass++) {
		if ((err = store_prepare(ctx, st, sql[pass], &q)))
			goto out;
		if (name)
			sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
		if (type)
			sqlite3_bind_text(q, 2, type, -1, SQLITE_STATIC);
		while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
			struct store_stats_row *row;
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
			row->files = (uint64_t)sqlite3_column_int64(q, 1);
			row->bytes = (uint64_t)sqlite3_column_int64(q, 2);
			row->failures = (uint64_t)sqlite3_column_int64(q, 3);
			row->retries = (uint64_t)sqlite3_column_int64(q, 4);
			row->seconds = sqlite3_column_double(q, 5);
			len++;
		}
		if (rc != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "read statistics");
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
	err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory reading statistics");
out:
	sqlite3_finalize(q);
	store_stats_free(v, len);
	free(type);
	return err;
}

void store_stats_free(struct store_stats_row *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].key);
	free(v);
}
