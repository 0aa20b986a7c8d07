/* report_rows.h - the per-repo rows of a statistics report (store_report
 * with legacy rows), taken out of the report for the store tests. */
#ifndef REPORT_ROWS_H
#define REPORT_ROWS_H

#include "../../store/store.h"

enum hm_err pulls_of(struct hm_ctx *ctx, struct store *st, const char *repo, struct store_stats_row **rows,
		     size_t *n);
enum hm_err served_of(struct hm_ctx *ctx, struct store *st, const char *repo, struct store_served_row **rows,
		      size_t *n);

#endif
