/* test_served.c - the served-requests table: migration v2, recording, statistics. */
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "unit.h"
#include "store_helpers.h"
#include "../../store/store.h"
#include "../../util/util.h"
#include "../../store/index.h"
#include "../../store/stats.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

/* The v1 schema exactly as hubmirror 1 created it (migrations never change
 * once released), with a few rows, to check the upgrade keeps them. */
static const char v1_store[] =
	"CREATE TABLE repos (id INTEGER PRIMARY KEY, type TEXT NOT NULL, name TEXT NOT NULL,"
	"  UNIQUE(type, name));"
	"CREATE TABLE revisions (id INTEGER PRIMARY KEY,"
	"  repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,"
	"  commit_sha TEXT NOT NULL, pulled_at INTEGER NOT NULL, UNIQUE(repo_id, commit_sha));"
	"CREATE TABLE refs (repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,"
	"  name TEXT NOT NULL, commit_sha TEXT NOT NULL, updated_at INTEGER NOT NULL,"
	"  PRIMARY KEY(repo_id, name));"
	"CREATE TABLE ref_history (repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,"
	"  name TEXT NOT NULL, commit_sha TEXT NOT NULL, seen_at INTEGER NOT NULL);"
	"CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, added_at INTEGER NOT NULL);"
	"CREATE TABLE blob_oids (git_oid TEXT PRIMARY KEY,"
	"  sha256 TEXT NOT NULL REFERENCES blobs(sha256) ON DELETE CASCADE);"
	"CREATE TABLE files (revision_id INTEGER NOT NULL REFERENCES revisions(id) ON DELETE CASCADE,"
	"  path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL REFERENCES blobs(sha256),"
	"  git_oid TEXT NOT NULL DEFAULT '', lfs INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY(revision_id, path));"
	"CREATE TABLE downloads (id INTEGER PRIMARY KEY, repo_type TEXT NOT NULL, repo TEXT NOT NULL,"
	"  revision TEXT, path TEXT NOT NULL, sha256 TEXT, size INTEGER NOT NULL DEFAULT 0,"
	"  bytes INTEGER NOT NULL DEFAULT 0, seconds REAL NOT NULL DEFAULT 0,"
	"  connections INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL DEFAULT 0,"
	"  result TEXT NOT NULL, error TEXT, endpoint TEXT, started_at INTEGER NOT NULL);"
	"CREATE INDEX files_sha256 ON files(sha256);"
	"CREATE INDEX blob_oids_sha256 ON blob_oids(sha256);"
	"CREATE INDEX ref_history_repo ON ref_history(repo_id, name);"
	"CREATE INDEX downloads_started_at ON downloads(started_at);"
	"CREATE INDEX downloads_repo ON downloads(repo);"
	"PRAGMA user_version = 1;"
	"INSERT INTO repos(id, type, name) VALUES (1, 'model', 'org/old');"
	"INSERT INTO revisions(id, repo_id, commit_sha, pulled_at)"
	"  VALUES (1, 1, '1111111111111111111111111111111111111111', 5);"
	"INSERT INTO refs VALUES (1, 'main', '1111111111111111111111111111111111111111', 5);"
	"INSERT INTO blobs VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 3, 5);"
	"INSERT INTO files(revision_id, path, size, sha256)"
	"  VALUES (1, 'a.txt', 3, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa');"
	"INSERT INTO downloads(repo_type, repo, path, bytes, seconds, result, started_at)"
	"  VALUES ('model', 'org/old', 'a.txt', 3, 0.25, 'ok', 5);";

UNIT_TEST(served_migrates_v1_store)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_stats_row *rows = NULL;
	struct store_served_row *sv = NULL;
	char db[PATH_MAX], commit[41];
	sqlite3 *h = NULL;
	size_t n = 0;
	struct store_served r = {
		.kind = "file", .method = "GET", .repo_type = "model", .repo = "org/old",
		.path = "a.txt", .status = 200, .bytes = 3, .cache = "hit", .started_at = 6,
	};

	CHECK(util_mkdir_p(test_store_dir(), 0755) == 0);
	snprintf(db, sizeof(db), "%s/index.db", test_store_dir());
	CHECK(sqlite3_open(db, &h) == SQLITE_OK);
	CHECK(sqlite3_exec(h, v1_store, NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(h);
	CHECK(count_rows("PRAGMA user_version") == 1);

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(store_schema_version(st) == store_schema_latest());
	CHECK(store_resolve(&ctx, st, "model", "org/old", NULL, commit) == HM_OK);
	CHECK_STR(commit, "1111111111111111111111111111111111111111");
	CHECK(pulls_of(&ctx, st, NULL, &rows, &n) == HM_OK);
	CHECK(n == 2 && rows[0].files == 1 && rows[0].bytes == 3);
	store_stats_free(rows, n);
	CHECK(store_record_served(&ctx, st, &r, 1) == HM_OK);
	CHECK(served_of(&ctx, st, NULL, &sv, &n) == HM_OK);
	CHECK(n == 2 && sv[0].requests == 1 && sv[0].hits == 1);
	store_served_stats_free(sv, n);
	store_close(st);

	CHECK(count_rows("PRAGMA user_version") == store_schema_latest());
	CHECK(count_rows("SELECT count(*) FROM files") == 1);
	CHECK(count_rows("SELECT count(*) FROM downloads") == 1);
	CHECK(count_rows("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN"
			" ('served_started_at','served_repo')") == 2);
	/* opening again changes nothing */
	st = NULL;
	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(store_schema_version(st) == store_schema_latest());
	store_close(st);
	CHECK(count_rows("SELECT count(*) FROM served") == 1);
}

UNIT_TEST(served_record_and_stats)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_served_row *v = NULL;
	size_t n = 0;
	struct store_served rows[] = {
		{"file", "GET", "model", "org/a", "main", "w.bin", 200, 1000, 0.5, "127.0.0.1", "hit", 10},
		{"file", "GET", "model", "org/a", "main", "x.bin", 200, 2000, 1.5, "127.0.0.1", "miss", 11},
		{"file", "HEAD", "model", "org/a", "main", "y.bin", 404, 0, 0.25, "10.0.0.2", NULL, 12},
		{"api", "GET", "model", "org/a", NULL, "/api/models/org/a", 200, 300, 0.25, "10.0.0.2", NULL, 12},
		{"file", "GET", "dataset", "org/a", "v1", "d.csv", 200, 50, 1.0, "10.0.0.3", "hit", 13},
		{"other", "GET", NULL, NULL, NULL, "/metrics", 200, 7, 0.0, "10.0.0.4", NULL, 14},
		{"api", "POST", NULL, NULL, NULL, "/api/whoami", 500, 0, 0.5, NULL, NULL, 15},
	};
	struct store_served bad = {.kind = "file", .method = NULL};

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(served_of(&ctx, st, NULL, &v, &n) == HM_OK);
	CHECK(n == 1 && v[0].key == NULL && v[0].requests == 0 && v[0].bytes == 0 && v[0].seconds == 0);
	store_served_stats_free(v, n);

	CHECK(store_record_served(&ctx, st, rows, 0) == HM_OK);
	CHECK(store_record_served(&ctx, st, rows, sizeof(rows) / sizeof(rows[0])) == HM_OK);
	/* a bad row refuses the whole batch */
	{
		struct store_served two[2] = {rows[0], bad};
		CHECK(store_record_served(&ctx, st, two, 2) == HM_ERR_USAGE);
	}

	CHECK(served_of(&ctx, st, NULL, &v, &n) == HM_OK);
	CHECK(n == 3);
	CHECK_STR(v[0].key, "dataset:org/a");
	CHECK(v[0].requests == 1 && v[0].files == 1 && v[0].bytes == 50 && v[0].hits == 1);
	CHECK(v[0].misses == 0 && v[0].errors == 0);
	CHECK_STR(v[1].key, "model:org/a");
	CHECK(v[1].requests == 4 && v[1].files == 3 && v[1].bytes == 3300);
	CHECK(v[1].hits == 1 && v[1].misses == 1 && v[1].errors == 1);
	CHECK(v[1].seconds > 2.49 && v[1].seconds < 2.51);
	/* rows without a repo count only here */
	CHECK(v[2].key == NULL && v[2].requests == 7 && v[2].files == 4 && v[2].bytes == 3357);
	CHECK(v[2].hits == 2 && v[2].misses == 1 && v[2].errors == 2);
	CHECK(v[2].seconds > 3.99 && v[2].seconds < 4.01);
	store_served_stats_free(v, n);

	CHECK(served_of(&ctx, st, "model:org/a", &v, &n) == HM_OK);
	CHECK(n == 2);
	CHECK_STR(v[0].key, "model:org/a");
	CHECK(v[1].key == NULL && v[1].requests == 4 && v[1].bytes == 3300);
	store_served_stats_free(v, n);
	/* a bare name matches in every type */
	CHECK(served_of(&ctx, st, "org/a", &v, &n) == HM_OK);
	CHECK(n == 3 && v[2].key == NULL && v[2].requests == 5);
	store_served_stats_free(v, n);
	CHECK(served_of(&ctx, st, "model:org/none", &v, &n) == HM_OK);
	CHECK(n == 1 && v[0].key == NULL && v[0].requests == 0);
	store_served_stats_free(v, n);
	store_served_stats_free(NULL, 0);
	store_close(st);

	CHECK(count_rows("SELECT count(*) FROM served") == 7);
	CHECK(count_rows("SELECT count(*) FROM served WHERE repo IS NULL AND revision IS NULL"
			" AND client IS NULL AND cache IS NULL") == 1);
	CHECK(count_rows("SELECT count(*) FROM served WHERE method = 'HEAD' AND status = 404"
			" AND path = 'y.bin' AND started_at = 12") == 1);
}

/* The server hands over thousands of rows at once from its logging thread;
 * one transaction and one statement keep that cheap (target: 10,000 rows
 * well under 100 ms). Prints the time; asserts only the count. */
UNIT_TEST(served_record_batch_speed)
{
	enum { N = 10000 };
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_served *rows = calloc(N, sizeof(*rows));
	struct store_served_row *v = NULL;
	struct timespec t0, t1;
	size_t n = 0;
	char repos[4][16];
	double ms;

	CHECK(rows != NULL);
	for (int i = 0; i < 4; i++)
		snprintf(repos[i], sizeof(repos[i]), "org/r%d", i);
	for (int i = 0; i < N; i++) {
		rows[i] = (struct store_served){"file", "GET", "model", repos[i % 4], "main",
			"model-00001-of-00004.safetensors", i % 50 ? 200 : 404, 4096, 0.001,
			"192.168.1.20", i % 3 ? "hit" : "miss", 1700000000 + i};
	}
	if (store_open(&ctx, test_store_dir(), &st) != HM_OK) {
		free(rows);
		CHECK(0);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	enum hm_err err = store_record_served(&ctx, st, rows, N);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	free(rows);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	printf("  store_record_served: %d rows in %.1f ms\n", N, ms);
	CHECK(err == HM_OK);
	CHECK(served_of(&ctx, st, NULL, &v, &n) == HM_OK);
	CHECK(n == 5 && v[4].requests == N && v[4].bytes == (uint64_t)N * 4096 && v[4].errors == N / 50);
	store_served_stats_free(v, n);
	store_close(st);
}
