/* test_statcache.c - the statistics cache (schema v6): a report read through
 * it equals one read from the tables, row for row, after new rows, changes,
 * deletions, malformed chunks, odd values, a migration from v5, a failing
 * packer and concurrent writers. */
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "unit.h"
#include "store_helpers.h"
#include "../../store/store.h"
#include "../../store/stats.h"

#define DAY 86400
#define T0 ((int64_t)19500 * DAY)

static int exec_sql(const char *sql)
{
	char db[PATH_MAX + 16];
	sqlite3 *h = NULL;
	int rc;
	snprintf(db, sizeof(db), "%s/index.db", test_store_dir());
	if (sqlite3_open(db, &h) != SQLITE_OK)
		return -1;
	sqlite3_busy_timeout(h, 30000);
	rc = sqlite3_exec(h, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		printf("  sql failed: %s: %s\n", sql, sqlite3_errmsg(h));
	sqlite3_close(h);
	return rc == SQLITE_OK ? 0 : -1;
}

static uint64_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return *s >> 33;
}

/* Download i of a varied history: repos of both types, failures, zero bytes or seconds. */
static void gen_download(uint64_t *s, int64_t t, struct store_download *d, char *path, size_t len)
{
	static const char *const repos[] = {"org/a", "org/b", "org2/c", "x/d", "y/e", "z/f"};
	static const char *const ends[] = {"hub.example", "cdn.example", "mirror:8080", NULL};
	uint64_t r = rnd(s);
	memset(d, 0, sizeof(*d));
	d->repo_type = r % 7 ? "model" : "dataset";
	d->repo = repos[rnd(s) % 6];
	snprintf(path, len, "dir/f%02u.bin", (unsigned)(rnd(s) % 40));
	d->path = path;
	d->revision = "1111111111111111111111111111111111111111";
	d->bytes = rnd(s) % 5 ? rnd(s) % (1u << 30) : 0;
	d->size = d->bytes;
	d->seconds = rnd(s) % 6 ? (double)(rnd(s) % 100000) / 1000 : 0;
	d->retries = (int)(rnd(s) % 4);
	d->result = rnd(s) % 20 ? "ok" : "failed";
	d->endpoint = ends[rnd(s) % 4];
	d->started_at = t;
}

/* Request i the server answered: files and API calls, GET and HEAD, no repo
 * (NULL or ""), hits and misses and errors. */
static void gen_served(uint64_t *s, int64_t t, struct store_served *v, char *path, size_t len)
{
	static const char *const types[] = {"model", "dataset", "", NULL};
	static const char *const repos[] = {"org/a", "org/b", "x/d", "", NULL};
	static const char *const caches[] = {"hit", "miss", NULL};
	static const char *const clients[] = {"10.0.0.1", "10.0.0.2", "::1", NULL};
	memset(v, 0, sizeof(*v));
	v->kind = rnd(s) % 4 ? "file" : "api";
	v->method = rnd(s) % 5 ? "GET" : "HEAD";
	v->repo_type = types[rnd(s) % 4];
	v->repo = repos[rnd(s) % 5];
	snprintf(path, len, "f%02u.bin", (unsigned)(rnd(s) % 25));
	v->path = rnd(s) % 9 ? path : NULL;
	v->status = rnd(s) % 8 ? 200 : 404;
	v->bytes = rnd(s) % (1u << 28);
	v->seconds = (double)(rnd(s) % 5000) / 1000;
	v->client = clients[rnd(s) % 4];
	v->cache = caches[rnd(s) % 3];
	v->started_at = t;
}

/* Records n downloads and n / 2 served requests, flushing every 300 rows. */
static int add_rows(struct hm_ctx *ctx, struct store *st, uint64_t *s, int n, int64_t t0)
{
	struct store_served v[300];
	char paths[300][32], path[32];
	int nv = 0;
	for (int i = 0; i < n; i++) {
		struct store_download d;
		int64_t t = t0 + (int64_t)(i * 37 % (90 * DAY));
		gen_download(s, t, &d, path, sizeof(path));
		if (store_record_download(ctx, st, &d) || (i % 300 == 299 && store_flush(ctx, st)))
			return -1;
		if (i % 2) {
			gen_served(s, t, &v[nv], paths[nv], sizeof(paths[nv]));
			if (++nv == 300) {
				if (store_record_served(ctx, st, v, (size_t)nv))
					return -1;
				nv = 0;
			}
		}
	}
	return store_flush(ctx, st) || store_record_served(ctx, st, v, (size_t)nv) ? -1 : 0;
}

static int str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static int near(double a, double b)
{
	return fabs(a - b) <= 1e-9 * (fabs(b) + 1);
}

/* Every number of two rows: exact, but for the sum of seconds (its order of addition differs). */
static int agg_eq(const struct store_agg *a, const struct store_agg *b)
{
	int ok = str_eq(a->key, b->key) && str_eq(a->path, b->path) && str_eq(a->source, b->source) &&
		 a->day == b->day && a->count == b->count && a->bytes == b->bytes && a->retries == b->retries &&
		 a->failures == b->failures && a->hits == b->hits && a->misses == b->misses && a->nrates == b->nrates &&
		 a->median_rate == b->median_rate && a->p95_rate == b->p95_rate && near(a->seconds, b->seconds);
	if (!ok)
		printf("  %s %s: count %llu/%llu bytes %llu/%llu median %.17g/%.17g p95 %.17g/%.17g\n",
		       a->key ? a->key : "(total)", a->path ? a->path : "", (unsigned long long)a->count,
		       (unsigned long long)b->count, (unsigned long long)a->bytes, (unsigned long long)b->bytes,
		       a->median_rate, b->median_rate, a->p95_rate, b->p95_rate);
	return ok;
}

static int reports_eq(const struct store_report *a, const struct store_report *b)
{
	if (!agg_eq(&a->total, &b->total))
		return 0;
	for (int by = 0; by < STORE_BY_N; by++) {
		if (a->nby[by] != b->nby[by] || a->nkeys[by] != b->nkeys[by]) {
			printf("  breakdown %d: %zu/%zu rows, %zu/%zu keys\n", by, a->nby[by], b->nby[by], a->nkeys[by],
			       b->nkeys[by]);
			return 0;
		}
		for (size_t i = 0; i < a->nby[by]; i++)
			if (!agg_eq(&a->by[by][i], &b->by[by][i]))
				return 0;
	}
	if (a->npulls != b->npulls || a->nserved != b->nserved)
		return 0;
	for (size_t i = 0; i < a->npulls; i++) {
		const struct store_stats_row *x = &a->pulls[i], *y = &b->pulls[i];
		if (!str_eq(x->key, y->key) || x->files != y->files || x->bytes != y->bytes ||
		    x->failures != y->failures || x->retries != y->retries || !near(x->seconds, y->seconds))
			return 0;
	}
	for (size_t i = 0; i < a->nserved; i++) {
		const struct store_served_row *x = &a->served[i], *y = &b->served[i];
		if (!str_eq(x->key, y->key) || x->requests != y->requests || x->files != y->files ||
		    x->bytes != y->bytes || x->hits != y->hits || x->misses != y->misses || x->errors != y->errors ||
		    !near(x->seconds, y->seconds))
			return 0;
	}
	return 1;
}

/* 1 when the report of q through the cache equals the one from the tables;
 * *count (may be NULL): its transfers. */
static int cache_agrees(struct hm_ctx *ctx, struct store *st, struct store_stats_query q, uint64_t *count)
{
	struct store_report a, b;
	int ok;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	q.scan = STORE_SCAN_CACHE;
	ok = store_report(ctx, st, &q, &a) == HM_OK;
	q.scan = STORE_SCAN_TABLES;
	ok = ok && store_report(ctx, st, &q, &b) == HM_OK && reports_eq(&a, &b);
	if (ok && count)
		*count = a.total.count;
	store_report_release(&a);
	store_report_release(&b);
	return ok;
}

static struct store_stats_query query(const char *repo, int64_t since, int64_t until)
{
	struct store_stats_query q = {repo, since, until, 0, (1u << STORE_BY_N) - 1, 0, 1, STORE_SCAN_AUTO, STORE_SOURCE_ALL};
	return q;
}

/* The transfers the tables hold: downloads, and served file GETs. */
static int transfers(void)
{
	return count_rows("SELECT (SELECT count(*) FROM downloads) + (SELECT count(*) FROM served"
			  " WHERE kind = 'file' AND method = 'GET')");
}

/* Every query the tests compare: all, a time range, repo filters with and without a type. */
static int all_agree(struct hm_ctx *ctx, struct store *st)
{
	static const char *const repos[] = {NULL, "model:org/a", "org/a", "dataset:x/d", ":org/b", "model:", "none/such"};
	uint64_t n = 0;
	for (size_t i = 0; i < sizeof(repos) / sizeof(repos[0]); i++) {
		if (!cache_agrees(ctx, st, query(repos[i], INT64_MIN, INT64_MAX), i ? NULL : &n) ||
		    !cache_agrees(ctx, st, query(repos[i], T0 + 10 * DAY, T0 + 40 * DAY), NULL) ||
		    !cache_agrees(ctx, st, query(repos[i], T0 + 3 * DAY + 5, INT64_MAX), NULL)) {
			printf("  differs for repo %s\n", repos[i] ? repos[i] : "(all)");
			return 0;
		}
	}
	if ((int)n != transfers()) {
		printf("  %llu transfers, the tables hold %d\n", (unsigned long long)n, transfers());
		return 0;
	}
	return 1;
}

UNIT_TEST(statcache_matches_tables)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	uint64_t s = 1;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(add_rows(&ctx, st, &s, 10000, T0) == 0);
	/* the writers packed what filled a chunk */
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 0 AND data IS NOT NULL") == 2);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 1") == 1);
	CHECK(all_agree(&ctx, st));
	store_close(st);
}

UNIT_TEST(statcache_sees_rows_added_after_a_query)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_stats_query q = query(NULL, INT64_MIN, INT64_MAX);
	uint64_t s = 2, n0 = 0, n1 = 0, n2 = 0;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(add_rows(&ctx, st, &s, 9000, T0) == 0);
	CHECK(cache_agrees(&ctx, st, q, &n0));
	/* fewer than a chunk: read from the table */
	CHECK(add_rows(&ctx, st, &s, 10, T0 + 100 * DAY) == 0);
	CHECK(cache_agrees(&ctx, st, q, &n1));
	CHECK(n1 > n0 && (int)n1 == transfers());
	/* more than a chunk: packed, and read from the chunks */
	CHECK(add_rows(&ctx, st, &s, 5000, T0 + 101 * DAY) == 0);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 0") == 3);
	CHECK(cache_agrees(&ctx, st, q, &n2));
	CHECK(n2 > n1 && (int)n2 == transfers());
	CHECK(all_agree(&ctx, st));
	store_close(st);
}

UNIT_TEST(statcache_follows_updates_and_deletes)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	uint64_t s = 3, n0 = 0, n = 0;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(add_rows(&ctx, st, &s, 10000, T0) == 0);
	CHECK(cache_agrees(&ctx, st, query(NULL, INT64_MIN, INT64_MAX), &n0));
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 0") == 2);

	/* a change in the second chunk drops it, not the first */
	CHECK(exec_sql("UPDATE downloads SET bytes = 12345678, seconds = 0.5 WHERE id = 5000") == 0);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 0") == 1);
	CHECK(all_agree(&ctx, st));
	/* the report packed it again; now a deletion in the first */
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 0") == 2);
	CHECK(exec_sql("DELETE FROM downloads WHERE id = 7") == 0);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 0") == 0);
	CHECK(cache_agrees(&ctx, st, query(NULL, INT64_MIN, INT64_MAX), &n));
	CHECK(n == n0 - 1);
	/* an id below the packed ones comes back */
	CHECK(exec_sql("INSERT INTO downloads(id, repo_type, repo, path, bytes, seconds, result, started_at)"
		       " VALUES (7, 'model', 'new/repo', 'a.bin', 999, 1.5, 'ok', 1700000000)") == 0);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 0") == 0);
	CHECK(cache_agrees(&ctx, st, query(NULL, INT64_MIN, INT64_MAX), &n));
	CHECK(n == n0);
	CHECK(all_agree(&ctx, st));
	/* served rows too; every row gone */
	CHECK(exec_sql("UPDATE served SET status = 500 WHERE id = 100") == 0);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 1") == 0);
	CHECK(all_agree(&ctx, st));
	CHECK(exec_sql("DELETE FROM served; DELETE FROM downloads") == 0);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks") == 0);
	CHECK(cache_agrees(&ctx, st, query(NULL, INT64_MIN, INT64_MAX), &n));
	CHECK(n == 0);
	store_close(st);
}

UNIT_TEST(statcache_reads_the_table_for_bad_chunks)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	uint64_t s = 4, n0 = 0, n = 0;
	static const char *const harm[] = {
		/* malformed data */
		"UPDATE stats_chunks SET data = x'484d533100100000' WHERE tbl = 0 AND first_id = 0",
		"UPDATE stats_chunks SET data = substr(data, 1, 1000) WHERE tbl = 1",
		"UPDATE stats_chunks SET data = x'00' || substr(data, 2) WHERE tbl = 0 AND first_id > 0",
		/* a gap between chunks, and chunks that overlap */
		"DELETE FROM stats_chunks WHERE tbl = 0 AND first_id = 0",
		"INSERT INTO stats_chunks(tbl, first_id, last_id, min_t, max_t, data)"
		" SELECT tbl, first_id + 10, last_id + 10, min_t, max_t, data FROM stats_chunks WHERE tbl = 0",
		/* ids the dictionaries lack */
		"DELETE FROM stats_files WHERE id = 3",
		"DELETE FROM stats_peers WHERE id = 2",
		"DELETE FROM stats_repos WHERE id = 1",
	};

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(add_rows(&ctx, st, &s, 10000, T0) == 0);
	CHECK(cache_agrees(&ctx, st, query(NULL, INT64_MIN, INT64_MAX), &n0));
	for (size_t i = 0; i < sizeof(harm) / sizeof(harm[0]); i++) {
		/* packed again (the last round dropped the chunks) */
		CHECK(cache_agrees(&ctx, st, query(NULL, INT64_MIN, INT64_MAX), NULL));
		CHECK(count_rows("SELECT count(*) FROM stats_chunks") == 3);
		CHECK(exec_sql(harm[i]) == 0);
		CHECK(all_agree(&ctx, st));
		CHECK(cache_agrees(&ctx, st, query(NULL, INT64_MIN, INT64_MAX), &n));
		CHECK(n == n0);
		/* back to a sound cache (the dictionaries refill as chunks are packed) */
		CHECK(exec_sql("DELETE FROM stats_chunks") == 0);
	}
	store_close(st);
}

UNIT_TEST(statcache_odd_values_come_from_the_table)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	uint64_t s = 5;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	/* values a chunk cannot hold as SQL compares them: a real or text
	 * started_at, a blob repo, retries past 32 bits, a negative day */
	CHECK(exec_sql("INSERT INTO downloads(repo_type, repo, path, bytes, seconds, retries, result, started_at) VALUES"
		       " ('model', 'odd/a', 'x', 10, 1, 0, 'ok', 1690000000.5),"
		       " ('model', 'odd/a', 'x', 20, 1, 0, 'ok', '1690000000'),"
		       " ('model', CAST('org/a' AS BLOB), 'x', 30, 1, 0, 'ok', 1690000000),"
		       " ('model', 'odd/b', 'y', 40, 1, 5000000000, 'ok', 1690000000),"
		       " ('model', 'odd/b', 'y', -40, -1, -3, 'failed', -86401)") == 0);
	CHECK(add_rows(&ctx, st, &s, 9000, T0) == 0);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 0 AND data IS NULL") == 1);
	CHECK(all_agree(&ctx, st));
	CHECK(cache_agrees(&ctx, st, query("model:odd/b", INT64_MIN, INT64_MAX), NULL));
	CHECK(cache_agrees(&ctx, st, query("org/a", 1690000000, 1690000001), NULL));
	CHECK(cache_agrees(&ctx, st, query(NULL, INT64_MIN, 0), NULL));
	store_close(st);
}

UNIT_TEST(statcache_store_migrated_from_v5)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_report a, b;
	struct store_stats_query q = query(NULL, INT64_MIN, INT64_MAX);
	uint64_t s = 6;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(add_rows(&ctx, st, &s, 10000, T0) == 0);
	q.scan = STORE_SCAN_TABLES;
	CHECK(store_report(&ctx, st, &q, &a) == HM_OK);
	store_close(st);
	/* v6 only adds objects, v7 a table, v8 two columns, v9 a table, v10 a column: without them, and
	 * at version 5, this is the store version 5 wrote */
	CHECK(exec_sql("DROP TABLE stats_chunks; DROP TABLE stats_repos; DROP TABLE stats_files;"
		       " DROP TABLE stats_peers; DROP TRIGGER downloads_stats_ins; DROP TRIGGER downloads_stats_del;"
		       " DROP TRIGGER downloads_stats_upd; DROP TRIGGER served_stats_ins; DROP TRIGGER served_stats_del;"
		       " DROP TRIGGER served_stats_upd; DROP TABLE checkouts; ALTER TABLE smoke_results DROP COLUMN architecture;"
		       " ALTER TABLE smoke_results DROP COLUMN engine_version; DROP TABLE torrents;"
		       " ALTER TABLE repos DROP COLUMN needs_token;"
		       " PRAGMA user_version = 5") == 0);
	CHECK(count_rows("SELECT count(*) FROM sqlite_master WHERE name LIKE 'stats_%' OR sql LIKE '%stats_chunks%'") == 0);
	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(store_schema_version(st) == store_schema_latest() && store_schema_latest() >= 8);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks") == 0);
	/* the first report packs the history, and says what version 5 said */
	q.scan = STORE_SCAN_AUTO;
	CHECK(store_report(&ctx, st, &q, &b) == HM_OK);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks") == 3);
	CHECK(reports_eq(&a, &b));
	CHECK(all_agree(&ctx, st));
	store_report_release(&a);
	store_report_release(&b);
	store_close(st);
}

UNIT_TEST(statcache_failing_packer_loses_nothing)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	uint64_t s = 7, n = 0;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(exec_sql("CREATE TRIGGER no_chunks BEFORE INSERT ON stats_chunks BEGIN SELECT RAISE(ABORT, 'no'); END") == 0);
	/* the rows are written, the chunks are not, the report is right */
	CHECK(add_rows(&ctx, st, &s, 10000, T0) == 0);
	CHECK(ctx.errmsg[0] == '\0');
	CHECK(count_rows("SELECT count(*) FROM downloads") == 10000);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks") == 0);
	/* nor did a dictionary entry of the rolled back packing stay */
	CHECK(count_rows("SELECT count(*) FROM stats_files") == 0);
	CHECK(cache_agrees(&ctx, st, query(NULL, INT64_MIN, INT64_MAX), &n));
	CHECK((int)n == transfers());
	CHECK(exec_sql("DROP TRIGGER no_chunks") == 0);
	CHECK(all_agree(&ctx, st));
	CHECK(count_rows("SELECT count(*) FROM stats_chunks") == 3);
	store_close(st);
}

UNIT_TEST(statcache_concurrent_writers)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	pid_t pids[3];
	int status;
	uint64_t n = 0;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	for (int p = 0; p < 3; p++) {
		pids[p] = fork();
		CHECK(pids[p] >= 0);
		if (pids[p] == 0) {
			struct hm_ctx c = {0};
			struct store *w = NULL;
			uint64_t s = 100 + (uint64_t)p;
			int rc = store_open(&c, test_store_dir(), &w) == HM_OK &&
				 add_rows(&c, w, &s, 6000, T0 + p * DAY) == 0 ? 0 : 1;
			store_close(w);
			_exit(rc);
		}
	}
	/* reports while they write: each one consistent with itself */
	for (int i = 0; i < 6; i++) {
		struct store_report r;
		struct store_stats_query q = query(NULL, INT64_MIN, INT64_MAX);
		uint64_t sum = 0, total;
		memset(&r, 0, sizeof(r));
		CHECK(store_report(&ctx, st, &q, &r) == HM_OK);
		for (size_t k = 0; k < r.nby[STORE_BY_DAY]; k++)
			sum += r.by[STORE_BY_DAY][k].count;
		total = r.total.count;
		store_report_release(&r);
		CHECK(sum == total);
		usleep(20000);
	}
	for (int p = 0; p < 3; p++) {
		CHECK(waitpid(pids[p], &status, 0) == pids[p]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	CHECK(count_rows("SELECT count(*) FROM downloads") == 18000);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 0") == 4);
	CHECK(cache_agrees(&ctx, st, query(NULL, INT64_MIN, INT64_MAX), &n));
	CHECK((int)n == transfers());
	CHECK(all_agree(&ctx, st));
	store_close(st);
}

/* The columns of downloads but its id, repo_type and repo: for copying rows by hand. */
#define DL_COLS "revision, path, sha256, size, bytes, seconds, connections, retries, result, error, endpoint, started_at"

/* Rowids a writer chose by hand (0, negative) are before every chunk: read
 * from the table, counted once, whether or not chunks exist. */
UNIT_TEST(statcache_counts_ids_of_zero_and_below)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	uint64_t s = 11;
	static const char *const cols = "repo_type, repo, " DL_COLS;
	char sql[1024];

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(add_rows(&ctx, st, &s, 10, T0) == 0);
	for (int id = 0; id >= -5; id -= 5) {
		snprintf(sql, sizeof(sql), "INSERT INTO downloads(id, %s) SELECT %d, %s FROM downloads"
			 " WHERE id = (SELECT min(id) FROM downloads WHERE id > 0)", cols, id, cols);
		CHECK(exec_sql(sql) == 0);
	}
	CHECK(add_rows(&ctx, st, &s, 9000, T0 + DAY) == 0);
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 0") >= 2);
	CHECK(all_agree(&ctx, st));
	/* an id moved below zero by an update */
	CHECK(exec_sql("UPDATE downloads SET id = -1 WHERE id = 5") == 0);
	CHECK(all_agree(&ctx, st)); /* the update dropped the chunks: this report packs them again */
	CHECK(count_rows("SELECT count(*) FROM stats_chunks WHERE tbl = 0") >= 2);
	CHECK(all_agree(&ctx, st));
	store_close(st);
}

/* A deleted dictionary entry's id is never given to another name: the
 * chunks naming it are read from the table, not credited to the newcomer. */
UNIT_TEST(statcache_dictionary_ids_are_not_reused)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	uint64_t s = 12;
	static const char *const cols = DL_COLS;
	char sql[1024];

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(add_rows(&ctx, st, &s, 5000, T0) == 0);
	CHECK(cache_agrees(&ctx, st, query(NULL, INT64_MIN, INT64_MAX), NULL));
	CHECK(exec_sql("DELETE FROM stats_repos WHERE id = (SELECT max(id) FROM stats_repos)") == 0);
	/* after the packed rows: only a new repo's, enough for a chunk of their own */
	CHECK(exec_sql("DELETE FROM downloads WHERE id > (SELECT max(last_id) FROM stats_chunks WHERE tbl = 0)") == 0);
	snprintf(sql, sizeof(sql), "INSERT INTO downloads(repo_type, repo, %s) SELECT 'model', 'brand/new', %s"
		 " FROM downloads ORDER BY id LIMIT 4500", cols, cols);
	CHECK(exec_sql(sql) == 0);
	CHECK(all_agree(&ctx, st));
	CHECK(count_rows("SELECT count(*) FROM stats_repos WHERE CAST(name AS TEXT) = 'brand/new'") == 1);
	CHECK(cache_agrees(&ctx, st, query("model:brand/new", INT64_MIN, INT64_MAX), NULL));
	store_close(st);
}
