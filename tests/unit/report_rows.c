/* report_rows.c - the per-repo rows of a statistics report, for the store tests. */
#include <stdint.h>
#include "report_rows.h"

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
