/* store_helpers.c - helpers shared by the store tests. */
#include <limits.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include "unit.h"
#include "store_helpers.h"
#include "../../store/stats.h"

const char *test_store_dir(void)
{
	static char dirbuf[PATH_MAX];
	snprintf(dirbuf, sizeof(dirbuf), "%s/store", unit_tmpdir());
	return dirbuf;
}

int count_rows(const char *sql)
{
	char db[PATH_MAX + 16];
	sqlite3 *h = NULL;
	sqlite3_stmt *q = NULL;
	int n = -1;
	snprintf(db, sizeof(db), "%s/index.db", test_store_dir());
	if (sqlite3_open(db, &h) == SQLITE_OK && sqlite3_prepare_v2(h, sql, -1, &q, NULL) == SQLITE_OK &&
	    sqlite3_step(q) == SQLITE_ROW)
		n = sqlite3_column_int(q, 0);
	sqlite3_finalize(q);
	sqlite3_close(h);
	return n;
}

/* The per-repo download rows of a report (what `stats` prints first). */
enum hm_err pulls_of(struct hm_ctx *ctx, struct store *st, const char *repo, struct store_stats_row **rows,
			    size_t *n)
{
	struct store_stats_query q = {.repo = repo, .since = INT64_MIN, .until = INT64_MAX, .legacy = 1};
	struct store_report r;
	enum hm_err err = store_report(ctx, st, &q, &r);
	if (err)
		return err;
	*rows = r.pulls;
	*n = r.npulls;
	r.pulls = NULL;
	r.npulls = 0;
	store_report_release(&r);
	return HM_OK;
}

/* The per-repo served rows of a report (the SERVED table of `stats`). */
enum hm_err served_of(struct hm_ctx *ctx, struct store *st, const char *repo, struct store_served_row **rows,
			     size_t *n)
{
	struct store_stats_query q = {.repo = repo, .since = INT64_MIN, .until = INT64_MAX, .legacy = 1};
	struct store_report r;
	enum hm_err err = store_report(ctx, st, &q, &r);
	if (err)
		return err;
	*rows = r.served;
	*n = r.nserved;
	r.served = NULL;
	r.nserved = 0;
	store_report_release(&r);
	return HM_OK;
}
