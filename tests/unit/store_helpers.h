/* store_helpers.h - shared by the store tests: the test's store directory,
 * a count query on its index, and the per-repo rows of a statistics report
 * (store_report with legacy rows). */
#ifndef STORE_HELPERS_H
#define STORE_HELPERS_H

#include "../../store/store.h"
#include "../../store/stats.h"

/* unit_tmpdir()/store: the store of the running test. */
const char *test_store_dir(void);
/* The first column of the first row of sql on the test store's index.db, -1 on error. */
int count_rows(const char *sql);
enum hm_err pulls_of(struct hm_ctx *ctx, struct store *st, const char *repo, struct store_stats_row **rows,
		     size_t *n);
enum hm_err served_of(struct hm_ctx *ctx, struct store *st, const char *repo, struct store_served_row **rows,
		      size_t *n);

#endif
