/* test_stats.c - the statistics report (every breakdown, percentiles, filters,
 * --top), time parsing, schema v3 and store usage (du), on hand-computed data. */
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "unit.h"
#include "../../store/store.h"
#include "../../verify/verify.h"
#include "../../util/util.h"
#include "../../store/index.h"
#include "../../store/stats.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#define C1 "1111111111111111111111111111111111111111"
#define C2 "2222222222222222222222222222222222222222"
#define DAY 86400
#define D0 ((int64_t)19000 * DAY) /* 2022-01-08 */

static char dirbuf[PATH_MAX];

static const char *stats_store(void)
{
	snprintf(dirbuf, sizeof(dirbuf), "%s/store", unit_tmpdir());
	return dirbuf;
}

static int near(double a, double b)
{
	return fabs(a - b) < 1e-6 * (fabs(b) + 1);
}

/* Checks one row: count, bytes, retries, failures, hits, misses, median, p95. */
static int row_is(const struct store_agg *a, uint64_t count, uint64_t bytes, uint64_t retries, uint64_t failures,
		  uint64_t hits, uint64_t misses, double median, double p95)
{
	int ok = a->count == count && a->bytes == bytes && a->retries == retries && a->failures == failures &&
		 a->hits == hits && a->misses == misses && near(a->median_rate, median) && near(a->p95_rate, p95);
	if (!ok)
		printf("  row %s%s%s: count %llu bytes %llu retries %llu failures %llu hits %llu misses %llu"
		       " median %g p95 %g\n", a->key ? a->key : "(total)", a->path ? " " : "", a->path ? a->path : "",
		       (unsigned long long)a->count, (unsigned long long)a->bytes, (unsigned long long)a->retries,
		       (unsigned long long)a->failures, (unsigned long long)a->hits, (unsigned long long)a->misses,
		       a->median_rate, a->p95_rate);
	return ok;
}

/* The small history every report test reads (see the expected values below). */
static int fill(struct hm_ctx *ctx, struct store *st)
{
	static const struct store_download d[] = {
		{"model", "org/a", C1, "w.bin", NULL, 1000, 1000, 1.0, 4, 1, "ok", NULL, "hub.example", D0 + 10},
		{"model", "org/a", C1, "w.bin", NULL, 3000, 3000, 1.0, 4, 0, "ok", NULL, "cdn.example", D0 + 100},
		{"model", "org/a", C1, "x.bin", NULL, 900, 500, 0.5, 4, 2, "failed", "reset", "hub.example", D0 + DAY + 5},
		{"dataset", "org/a", C2, "d.csv", NULL, 0, 0, 0.0, 1, 0, "ok", NULL, "hub.example", D0 + DAY + 50},
		{"model", "org/b", C2, "y.bin", NULL, 8000, 8000, 2.0, 4, 0, "ok", NULL, "hub.example", D0 + 2 * DAY + 1},
	};
	static const struct store_served s[] = {
		{"file", "GET", "model", "org/a", "main", "w.bin", 200, 2000, 0.5, "10.0.0.1", "hit", D0 + 200},
		{"file", "GET", "model", "org/b", "main", "y.bin", 200, 6000, 3.0, "10.0.0.2", "miss", D0 + 2 * DAY + 2},
		{"file", "GET", "model", "org/b", "main", "z.bin", 404, 0, 0.1, "10.0.0.2", NULL, D0 + 2 * DAY + 3},
		{"file", "HEAD", "model", "org/a", "main", "w.bin", 200, 0, 0.01, "10.0.0.1", "hit", D0 + 300},
		{"api", "GET", "model", "org/a", NULL, "/api/models/org/a", 200, 300, 0.01, "10.0.0.1", NULL, D0 + 400},
	};
	for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++)
		if (store_record_download(ctx, st, &d[i]))
			return -1;
	return store_record_served(ctx, st, s, sizeof(s) / sizeof(s[0])) ? -1 : 0;
}

static struct store_stats_query all_query(void)
{
	struct store_stats_query q = {NULL, INT64_MIN, INT64_MAX, 0, (1u << STORE_BY_N) - 1, 0, 1, STORE_SCAN_AUTO, STORE_SOURCE_ALL};
	return q;
}

UNIT_TEST(stats_report_breakdowns)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_report r;
	struct store_stats_query q = all_query();
	const struct store_agg *v;

	memset(&r, 0, sizeof(r));
	CHECK(store_open(&ctx, stats_store(), &st) == HM_OK);
	CHECK(fill(&ctx, st) == 0);
	CHECK(store_report(&ctx, st, &q, &r) == HM_OK);

	/* every transfer: 5 pulls, 3 served GETs of files (not the HEAD, not the API call);
	 * rates (bytes) 1000 (1000) 3000 (3000) 1000 (500) 4000 (8000) (pulls), 4000 (2000) 2000 (6000)
	 * (served); weighted by bytes: half of the 20500 bytes moved at 3000 B/s or less, 95% at 4000 */
	CHECK(row_is(&r.total, 8, 20500, 3, 2, 1, 1, 3000, 4000));
	CHECK(r.total.nrates == 6);

	v = r.by[STORE_BY_REPO];
	CHECK(r.nby[STORE_BY_REPO] == 3 && r.nkeys[STORE_BY_REPO] == 3);
	CHECK_STR(v[0].key, "model:org/b");
	CHECK(row_is(&v[0], 3, 14000, 0, 1, 0, 1, 4000, 4000));
	CHECK_STR(v[1].key, "model:org/a");
	CHECK(row_is(&v[1], 4, 6500, 3, 1, 1, 0, 3000, 4000));
	CHECK_STR(v[2].key, "dataset:org/a");
	CHECK(row_is(&v[2], 1, 0, 0, 0, 0, 0, 0, 0));

	v = r.by[STORE_BY_FILE];
	CHECK(r.nby[STORE_BY_FILE] == 5);
	CHECK_STR(v[0].key, "model:org/b");
	CHECK_STR(v[0].path, "y.bin");
	CHECK(row_is(&v[0], 2, 14000, 0, 0, 0, 1, 4000, 4000));
	CHECK_STR(v[1].key, "model:org/a");
	CHECK_STR(v[1].path, "w.bin");
	CHECK(row_is(&v[1], 3, 6000, 1, 0, 1, 0, 3000, 4000));
	CHECK_STR(v[2].path, "x.bin");
	CHECK(row_is(&v[2], 1, 500, 2, 1, 0, 0, 1000, 1000));
	/* equal bytes: by key */
	CHECK_STR(v[3].key, "dataset:org/a");
	CHECK_STR(v[3].path, "d.csv");
	CHECK_STR(v[4].key, "model:org/b");
	CHECK_STR(v[4].path, "z.bin");
	CHECK(row_is(&v[4], 1, 0, 0, 1, 0, 0, 0, 0));

	v = r.by[STORE_BY_DAY];
	CHECK(r.nby[STORE_BY_DAY] == 3);
	CHECK_STR(v[0].key, "2022-01-10");
	CHECK(v[0].day == D0 + 2 * DAY);
	CHECK(row_is(&v[0], 3, 14000, 0, 1, 0, 1, 4000, 4000));
	CHECK_STR(v[1].key, "2022-01-08");
	CHECK(row_is(&v[1], 3, 6000, 1, 0, 1, 0, 3000, 4000));
	CHECK_STR(v[2].key, "2022-01-09");
	CHECK(row_is(&v[2], 2, 500, 2, 1, 0, 0, 1000, 1000));

	v = r.by[STORE_BY_ENDPOINT];
	CHECK(r.nby[STORE_BY_ENDPOINT] == 4);
	CHECK_STR(v[0].key, "hub.example");
	CHECK_STR(v[0].source, "pull");
	CHECK(row_is(&v[0], 4, 9500, 3, 1, 0, 0, 4000, 4000));
	CHECK_STR(v[1].key, "10.0.0.2");
	CHECK_STR(v[1].source, "serve");
	CHECK(row_is(&v[1], 2, 6000, 0, 1, 0, 1, 2000, 2000));
	CHECK_STR(v[2].key, "cdn.example");
	CHECK(row_is(&v[2], 1, 3000, 0, 0, 0, 0, 3000, 3000));
	CHECK_STR(v[3].key, "10.0.0.1");
	CHECK(row_is(&v[3], 1, 2000, 0, 0, 1, 0, 4000, 4000));

	/* what store_stats and store_served_stats say, from the same scan */
	CHECK(r.npulls == 4);
	CHECK_STR(r.pulls[0].key, "dataset:org/a");
	CHECK_STR(r.pulls[1].key, "model:org/a");
	CHECK(r.pulls[1].files == 2 && r.pulls[1].bytes == 4500 && r.pulls[1].failures == 1 && r.pulls[1].retries == 3);
	CHECK(r.pulls[3].key == NULL && r.pulls[3].files == 4 && r.pulls[3].bytes == 12500);
	CHECK(r.nserved == 3);
	CHECK_STR(r.served[0].key, "model:org/a");
	CHECK(r.served[0].requests == 3 && r.served[0].files == 2 && r.served[0].hits == 2 && r.served[0].bytes == 2300);
	CHECK(r.served[2].key == NULL && r.served[2].requests == 5 && r.served[2].files == 4 &&
	      r.served[2].bytes == 8300 && r.served[2].hits == 2 && r.served[2].misses == 1 && r.served[2].errors == 1);
	store_report_release(&r);
	store_close(st);
}

UNIT_TEST(stats_report_filters_and_top)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_report r;
	struct store_stats_query q = all_query();

	memset(&r, 0, sizeof(r));
	CHECK(store_open(&ctx, stats_store(), &st) == HM_OK);
	CHECK(fill(&ctx, st) == 0);

	q.top = 2;
	CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
	CHECK(r.nby[STORE_BY_REPO] == 2 && r.nkeys[STORE_BY_REPO] == 3);
	CHECK(r.nby[STORE_BY_FILE] == 2 && r.nkeys[STORE_BY_FILE] == 5);
	CHECK_STR(r.by[STORE_BY_FILE][1].path, "w.bin");
	CHECK(r.total.count == 8); /* --top cuts rows, not the total */
	store_report_release(&r);

	/* oldest day first, for the chart */
	q.top = 0;
	q.by_key = 1;
	CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
	CHECK_STR(r.by[STORE_BY_DAY][0].key, "2022-01-08");
	CHECK_STR(r.by[STORE_BY_DAY][2].key, "2022-01-10");
	CHECK_STR(r.by[STORE_BY_REPO][0].key, "dataset:org/a");
	store_report_release(&r);

	/* a bare name matches both types */
	q = all_query();
	q.repo = "org/a";
	CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
	CHECK(row_is(&r.total, 5, 6500, 3, 1, 1, 0, 3000, 4000));
	CHECK(r.nby[STORE_BY_REPO] == 2);
	CHECK(r.nserved == 2 && r.served[1].requests == 3);
	store_report_release(&r);
	q.repo = "dataset:org/a";
	CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
	CHECK(row_is(&r.total, 1, 0, 0, 0, 0, 0, 0, 0));
	store_report_release(&r);

	/* [since, until): the second day only */
	q = all_query();
	q.since = D0 + DAY;
	q.until = D0 + 2 * DAY;
	CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
	CHECK(row_is(&r.total, 2, 500, 2, 1, 0, 0, 1000, 1000));
	CHECK(r.nby[STORE_BY_DAY] == 1);
	CHECK(r.nserved == 1 && r.served[0].requests == 0);
	store_report_release(&r);
	q.since = D0 + 2 * DAY + 2; /* the served GET at +2 is in, the pull at +1 is not */
	q.until = INT64_MAX;
	CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
	CHECK(row_is(&r.total, 2, 6000, 0, 1, 0, 1, 2000, 2000));
	store_report_release(&r);

	/* only what is asked for */
	q = all_query();
	q.want = 1u << STORE_BY_DAY;
	q.legacy = 0;
	CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
	CHECK(r.by[STORE_BY_REPO] == NULL && r.by[STORE_BY_DAY] && r.pulls == NULL && r.served == NULL);
	CHECK(r.total.count == 8);
	store_report_release(&r);
	store_report_release(&r); /* twice is harmless */
	store_close(st);
}

UNIT_TEST(stats_report_empty_store)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_report r;
	struct store_stats_query q = all_query();

	CHECK(store_open(&ctx, stats_store(), &st) == HM_OK);
	CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
	CHECK(row_is(&r.total, 0, 0, 0, 0, 0, 0, 0, 0));
	for (int b = 0; b < STORE_BY_N; b++)
		CHECK(r.nby[b] == 0 && r.by[b]);
	CHECK(r.npulls == 1 && r.pulls[0].key == NULL && r.nserved == 1);
	store_report_release(&r);
	store_close(st);
}

struct rate_w {
	double rate, bytes;
};

static int cmp_rate(const void *a, const void *b)
{
	double x = ((const struct rate_w *)a)->rate, y = ((const struct rate_w *)b)->rate;
	return (x > y) - (x < y);
}

/* The smallest rate at or below which q of the bytes moved, of v sorted by rate. */
static double weighted_rank(const struct rate_w *v, int n, double q)
{
	double total = 0, cum = 0;
	for (int i = 0; i < n; i++)
		total += v[i].bytes;
	for (int i = 0; i < n; i++)
		if ((cum += v[i].bytes) >= q * total)
			return v[i].rate;
	return v[n - 1].rate;
}

/* Percentiles (weighted by bytes) of many transfers in one group against a sort, with ties. */
UNIT_TEST(stats_percentiles_match_sorting)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_report r;
	struct store_stats_query q = all_query();
	struct rate_w *rates = NULL;
	unsigned seed = 12345;

	CHECK(store_open(&ctx, stats_store(), &st) == HM_OK);
	for (int n = 1; n <= 2001; n += 500) {
		rates = calloc((size_t)n, sizeof(*rates));
		CHECK(rates != NULL);
		for (int i = 0; i < n; i++) {
			char path[32];
			struct store_download d = {"model", "org/p", C1, path, NULL, 0, 0, 1.0, 1, 0, "ok", NULL, "h",
						   1000 + i};
			seed = seed * 1103515245 + 12345;
			d.bytes = 1 + (seed >> 16) % 97; /* many ties */
			d.seconds = 1.0 + (double)(i % 3);
			rates[i].rate = (double)d.bytes / d.seconds;
			rates[i].bytes = (double)d.bytes;
			snprintf(path, sizeof(path), "f%d", i % 7);
			CHECK(store_record_download(&ctx, st, &d) == HM_OK);
		}
		qsort(rates, (size_t)n, sizeof(*rates), cmp_rate);
		CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
		CHECK(r.total.nrates == (uint64_t)n);
		CHECK(near(r.total.median_rate, weighted_rank(rates, n, 0.5)));
		CHECK(near(r.total.p95_rate, weighted_rank(rates, n, 0.95)));
		store_report_release(&r);
		free(rates);
		rates = NULL;
		store_close(st);
		/* a fresh history for the next size */
		char cmd[PATH_MAX + 16];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", stats_store());
		CHECK(system(cmd) == 0);
		st = NULL;
		CHECK(store_open(&ctx, stats_store(), &st) == HM_OK);
	}
	store_close(st);
}

UNIT_TEST(stats_parse_time)
{
	struct hm_ctx ctx = {0};
	int64_t t = 0, now = 1000000;
	static const char *const bad[] = {"", "yesterday", "2024-13-01", "2023-02-29", "2024-01-32", "7x", "-5",
					  "2024-01-01T25:00", "2024-01-01T12", "2024-1-1", "12d5", "2024-01-01Z",
					  "2024-01-01T12:00:00+2", "99999999999999999999999"};

	CHECK(store_parse_time(&ctx, "1700000000", now, 0, &t) == HM_OK && t == 1700000000);
	CHECK(store_parse_time(&ctx, "2024-01-01", now, 0, &t) == HM_OK && t == 1704067200);
	CHECK(store_parse_time(&ctx, "2024-01-01", now, 1, &t) == HM_OK && t == 1704067200 + DAY);
	CHECK(store_parse_time(&ctx, "2024-02-29", now, 0, &t) == HM_OK && t == 1709164800);
	CHECK(store_parse_time(&ctx, "1969-12-31", now, 0, &t) == HM_OK && t == -DAY);
	CHECK(store_parse_time(&ctx, "2024-01-01T12:00:00Z", now, 0, &t) == HM_OK && t == 1704110400);
	CHECK(store_parse_time(&ctx, "2024-01-01T12:00:00Z", now, 1, &t) == HM_OK && t == 1704110400);
	CHECK(store_parse_time(&ctx, "2024-01-01T12:00", now, 0, &t) == HM_OK && t == 1704110400);
	CHECK(store_parse_time(&ctx, "2024-01-01 12:00:00.75", now, 0, &t) == HM_OK && t == 1704110400);
	CHECK(store_parse_time(&ctx, "2024-01-01T12:00:00+02:00", now, 0, &t) == HM_OK && t == 1704103200);
	CHECK(store_parse_time(&ctx, "2024-01-01T12:00:00-0130", now, 0, &t) == HM_OK && t == 1704115800);
	CHECK(store_parse_time(&ctx, "7d", now, 0, &t) == HM_OK && t == now - 7 * DAY);
	CHECK(store_parse_time(&ctx, "24h", now, 0, &t) == HM_OK && t == now - DAY);
	CHECK(store_parse_time(&ctx, "30m", now, 0, &t) == HM_OK && t == now - 1800);
	CHECK(store_parse_time(&ctx, "90s", now, 0, &t) == HM_OK && t == now - 90);
	CHECK(store_parse_time(&ctx, "2w", now, 0, &t) == HM_OK && t == now - 14 * DAY);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ctx.errmsg[0] = 0;
		CHECK(store_parse_time(&ctx, bad[i], now, 0, &t) == HM_ERR_USAGE);
		CHECK(ctx.errmsg[0] != 0);
	}
}

static int count_indexes(const char *names)
{
	char db[PATH_MAX], sql[256];
	sqlite3 *h = NULL;
	sqlite3_stmt *q = NULL;
	int n = -1;
	snprintf(db, sizeof(db), "%s/index.db", stats_store());
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN (%s)", names);
	if (sqlite3_open(db, &h) == SQLITE_OK && sqlite3_prepare_v2(h, sql, -1, &q, NULL) == SQLITE_OK &&
	    sqlite3_step(q) == SQLITE_ROW)
		n = sqlite3_column_int(q, 0);
	sqlite3_finalize(q);
	sqlite3_close(h);
	return n;
}

UNIT_TEST(stats_schema_v3_indexes)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	CHECK(store_open(&ctx, stats_store(), &st) == HM_OK);
	CHECK(store_schema_version(st) >= 3);
	store_close(st);
	CHECK(count_indexes("'downloads_stats', 'served_stats'") == 2);
}

/* Writes content into the store as a blob; f gets its sha256 and size. */
static enum hm_err put_blob(struct hm_ctx *ctx, struct store *st, const char *path, const char *content,
			    struct store_file *f)
{
	char tmp[PATH_MAX];
	FILE *fh;
	uint64_t size;
	enum hm_err err;
	static int seq;

	memset(f, 0, sizeof(*f));
	snprintf(tmp, sizeof(tmp), "%s/tmp/du%ld-%d.tmp", store_dir(st), (long)getpid(), seq++);
	if (!(fh = fopen(tmp, "wb")) || fwrite(content, 1, strlen(content), fh) != strlen(content) || fclose(fh))
		return HM_ERR_IO;
	if ((err = verify_file(ctx, tmp, 1, f->sha256, f->git_oid, &size)))
		return err;
	f->path = (char *)path;
	f->size = size;
	return store_blob_adopt(ctx, st, tmp, f->sha256, size, f->git_oid, 1);
}

UNIT_TEST(stats_du)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_du d;
	struct store_file a1[2], a2[2], b1[1];
	char part[PATH_MAX];
	FILE *fh;

	memset(&d, 0, sizeof(d));
	CHECK(store_open(&ctx, stats_store(), &st) == HM_OK);
	CHECK(store_du(&ctx, st, 10, &d) == HM_OK);
	CHECK(d.disk == 0 && d.nblobs == 0 && d.logical == 0 && d.nrepos == 0 && d.nby_unique == 0);
	store_du_release(&d);

	/* org/a: two revisions sharing a.txt; org/b: the same content as a.txt */
	CHECK(put_blob(&ctx, st, "a.txt", "hello", &a1[0]) == HM_OK);
	CHECK(put_blob(&ctx, st, "b.txt", "world!", &a1[1]) == HM_OK);
	CHECK(put_blob(&ctx, st, "a.txt", "hello", &a2[0]) == HM_OK);
	CHECK(put_blob(&ctx, st, "c.txt", "xyz", &a2[1]) == HM_OK);
	CHECK(put_blob(&ctx, st, "z.txt", "hello", &b1[0]) == HM_OK);
	CHECK(store_flush(&ctx, st) == HM_OK);
	CHECK(store_record_revision(&ctx, st, "model", "org/a", C1, NULL, a1, 2) == HM_OK);
	CHECK(store_record_revision(&ctx, st, "model", "org/a", C2, "main", a2, 2) == HM_OK);
	CHECK(store_record_revision(&ctx, st, "dataset", "org/b", C1, "main", b1, 1) == HM_OK);
	snprintf(part, sizeof(part), "%s/tmp/abc.part", store_dir(st));
	CHECK((fh = fopen(part, "wb")) != NULL && fwrite("1234567", 1, 7, fh) == 7 && fclose(fh) == 0);

	CHECK(store_du(&ctx, st, 0, &d) == HM_OK);
	CHECK(d.disk == 14 && d.nblobs == 3);
	CHECK(d.logical == 24 && d.unique == 14 && d.saved == 10);
	CHECK(d.partial == 7 && d.npartial == 1);
	CHECK(d.nrepos == 2 && d.nby_unique == 2 && d.nby_logical == 2);
	CHECK_STR(d.by_unique[0].key, "model:org/a");
	CHECK(d.by_unique[0].unique == 14 && d.by_unique[0].logical == 19 && d.by_unique[0].nrevisions == 2);
	CHECK_STR(d.by_unique[1].key, "dataset:org/b");
	CHECK(d.by_unique[1].unique == 5 && d.by_unique[1].logical == 5);
	CHECK_STR(d.by_logical[0].key, "model:org/a");
	store_du_release(&d);

	CHECK(store_du(&ctx, st, 1, &d) == HM_OK);
	CHECK(d.nrepos == 2 && d.nby_unique == 1 && d.nby_logical == 1);
	store_du_release(&d);
	store_du_release(&d);
	store_close(st);
}

/* source: pulls only and files served only add up to every transfer, by
 * either way of reading (the cache, the tables). */
UNIT_TEST(stats_report_source_filter)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_report r;
	struct store_stats_query q = all_query();
	static const enum store_scan scans[] = {STORE_SCAN_TABLES, STORE_SCAN_CACHE};

	memset(&r, 0, sizeof(r));
	CHECK(store_open(&ctx, stats_store(), &st) == HM_OK);
	CHECK(fill(&ctx, st) == 0);
	for (size_t i = 0; i < sizeof(scans) / sizeof(scans[0]); i++) {
		q.scan = scans[i];
		q.source = STORE_SOURCE_PULLS;
		CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
		/* 5 pulls: 1000 + 3000 + 500 + 0 + 8000 bytes, rates 1000 3000 1000 4000:
		 * 8000 of the 12500 bytes at 4000 B/s */
		CHECK(row_is(&r.total, 5, 12500, 3, 1, 0, 0, 4000, 4000));
		CHECK(r.nby[STORE_BY_ENDPOINT] == 2);
		store_report_release(&r);
		q.source = STORE_SOURCE_SERVED;
		CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
		/* 3 file GETs served: 2000 + 6000 + 0 bytes, rates 4000 2000 */
		CHECK(row_is(&r.total, 3, 8000, 0, 1, 1, 1, 2000, 4000));
		CHECK(r.nby[STORE_BY_DAY] == 2 && r.by[STORE_BY_DAY][0].bytes == 6000 && r.by[STORE_BY_DAY][1].bytes == 2000);
		store_report_release(&r);
	}
	store_close(st);
}
