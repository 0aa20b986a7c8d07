/* index.c - the SQLite schema, its migrations, and revision records and queries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "store-int.h"
#include "../util/util.h"

/* migrations[i] takes the schema from version i to i + 1. Append only: a
 * released entry never changes, PRAGMA user_version says how far a store is. */
static const char *const migrations[] = {
	/* v1 */
	"CREATE TABLE repos ("
	"  id INTEGER PRIMARY KEY,"
	"  type TEXT NOT NULL,"
	"  name TEXT NOT NULL,"
	"  UNIQUE(type, name));"
	"CREATE TABLE revisions ("
	"  id INTEGER PRIMARY KEY,"
	"  repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,"
	"  commit_sha TEXT NOT NULL,"
	"  pulled_at INTEGER NOT NULL,"
	"  UNIQUE(repo_id, commit_sha));"
	"CREATE TABLE refs ("
	"  repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,"
	"  name TEXT NOT NULL,"
	"  commit_sha TEXT NOT NULL,"
	"  updated_at INTEGER NOT NULL,"
	"  PRIMARY KEY(repo_id, name));"
	"CREATE TABLE ref_history ("
	"  repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,"
	"  name TEXT NOT NULL,"
	"  commit_sha TEXT NOT NULL,"
	"  seen_at INTEGER NOT NULL);"
	"CREATE TABLE blobs ("
	"  sha256 TEXT PRIMARY KEY,"
	"  size INTEGER NOT NULL,"
	"  added_at INTEGER NOT NULL);"
	"CREATE TABLE blob_oids ("
	"  git_oid TEXT PRIMARY KEY,"
	"  sha256 TEXT NOT NULL REFERENCES blobs(sha256) ON DELETE CASCADE);"
	"CREATE TABLE files ("
	"  revision_id INTEGER NOT NULL REFERENCES revisions(id) ON DELETE CASCADE,"
	"  path TEXT NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  sha256 TEXT NOT NULL REFERENCES blobs(sha256),"
	"  git_oid TEXT NOT NULL DEFAULT '',"
	"  lfs INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY(revision_id, path));"
	"CREATE TABLE downloads ("
	"  id INTEGER PRIMARY KEY,"
	"  repo_type TEXT NOT NULL,"
	"  repo TEXT NOT NULL,"
	"  revision TEXT,"
	"  path TEXT NOT NULL,"
	"  sha256 TEXT,"
	"  size INTEGER NOT NULL DEFAULT 0,"
	"  bytes INTEGER NOT NULL DEFAULT 0,"
	"  seconds REAL NOT NULL DEFAULT 0,"
	"  connections INTEGER NOT NULL DEFAULT 0,"
	"  retries INTEGER NOT NULL DEFAULT 0,"
	"  result TEXT NOT NULL,"
	"  error TEXT,"
	"  endpoint TEXT,"
	"  started_at INTEGER NOT NULL);"
	"CREATE INDEX files_sha256 ON files(sha256);"
	"CREATE INDEX blob_oids_sha256 ON blob_oids(sha256);"
	"CREATE INDEX ref_history_repo ON ref_history(repo_id, name);"
	"CREATE INDEX downloads_started_at ON downloads(started_at);"
	"CREATE INDEX downloads_repo ON downloads(repo);",
	/* v2: requests answered by `hubmirror serve` */
	"CREATE TABLE served ("
	"  id INTEGER PRIMARY KEY,"
	"  kind TEXT NOT NULL,"
	"  method TEXT NOT NULL,"
	"  repo_type TEXT,"
	"  repo TEXT,"
	"  revision TEXT,"
	"  path TEXT,"
	"  status INTEGER NOT NULL DEFAULT 0,"
	"  bytes INTEGER NOT NULL DEFAULT 0,"
	"  seconds REAL NOT NULL DEFAULT 0,"
	"  client TEXT,"
	"  cache TEXT,"
	"  started_at INTEGER NOT NULL);"
	"CREATE INDEX served_started_at ON served(started_at);"
	"CREATE INDEX served_repo ON served(repo);",
	/* v3: covering indexes for `hubmirror stats`: a time range (or everything)
	 * is read from the index alone, about half the pages of the table */
	"CREATE INDEX downloads_stats ON downloads(started_at, repo_type, repo, path, endpoint, bytes,"
	"  seconds, retries, result);"
	"CREATE INDEX served_stats ON served(started_at, kind, method, repo_type, repo, path, client,"
	"  status, bytes, seconds, cache);",
	/* v4: conversions of stored revisions (`hubmirror convert`), kept as
	 * blobs; they go with their revision (rm) and keep their blob (gc) */
	"CREATE TABLE artifacts ("
	"  id INTEGER PRIMARY KEY,"
	"  revision_id INTEGER NOT NULL REFERENCES revisions(id) ON DELETE CASCADE,"
	"  repo_type TEXT NOT NULL,"
	"  repo TEXT NOT NULL,"
	"  commit_sha TEXT NOT NULL,"
	"  format TEXT NOT NULL,"
	"  options TEXT NOT NULL,"
	"  sha256 TEXT NOT NULL REFERENCES blobs(sha256),"
	"  size INTEGER NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  UNIQUE(revision_id, format, options));"
	"CREATE INDEX artifacts_sha256 ON artifacts(sha256);",
	/* v5: smoke tests of stored revisions and their conversions (`hubmirror smoke`) */
	"CREATE TABLE smoke_results ("
	"  id INTEGER PRIMARY KEY,"
	"  repo_type TEXT NOT NULL,"
	"  repo TEXT NOT NULL,"
	"  commit_sha TEXT NOT NULL,"
	"  artifact_sha256 TEXT,"
	"  model TEXT NOT NULL,"
	"  pass INTEGER NOT NULL,"
	"  reason TEXT,"
	"  load_s REAL, prompt_tps REAL, gen_tps REAL, peak_rss INTEGER,"
	"  created_at INTEGER NOT NULL);"
	"CREATE INDEX smoke_results_repo ON smoke_results(repo_type, repo);",
	/* v6: the statistics cache (statcache.c). The rows of downloads and
	 * served, packed a chunk of ids at a time into columns of integers
	 * (strings become ids of the dictionaries below), so that a report over
	 * a million rows reads a few dozen megabytes and hashes no string. It
	 * is derived data: the triggers drop every chunk from the first id a
	 * change touches, so the chunks always cover ids 1..last_id of each
	 * table exactly as the table is; ids after that are read from the
	 * table. Chunks are rebuilt by the next writer or report. Dictionary
	 * ids are never reused (AUTOINCREMENT): a chunk naming a deleted one
	 * is read from the table, never credited to a newer name. */
	"CREATE TABLE stats_repos ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  type BLOB,"
	"  name BLOB);"
	"CREATE TABLE stats_files ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  repo INTEGER NOT NULL,"
	"  path BLOB NOT NULL,"
	"  UNIQUE(repo, path));"
	"CREATE TABLE stats_peers ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  key BLOB NOT NULL UNIQUE);"
	"CREATE TABLE stats_chunks ("
	"  id INTEGER PRIMARY KEY,"
	"  tbl INTEGER NOT NULL,"
	"  first_id INTEGER NOT NULL,"
	"  last_id INTEGER NOT NULL,"
	"  min_t INTEGER,"
	"  max_t INTEGER,"
	"  data BLOB,"
	"  UNIQUE(tbl, last_id));"
	"CREATE TRIGGER downloads_stats_ins AFTER INSERT ON downloads"
	"  WHEN NEW.id <= (SELECT max(last_id) FROM stats_chunks WHERE tbl = 0)"
	"  BEGIN DELETE FROM stats_chunks WHERE tbl = 0 AND last_id >= NEW.id; END;"
	"CREATE TRIGGER downloads_stats_del AFTER DELETE ON downloads"
	"  WHEN OLD.id <= (SELECT max(last_id) FROM stats_chunks WHERE tbl = 0)"
	"  BEGIN DELETE FROM stats_chunks WHERE tbl = 0 AND last_id >= OLD.id; END;"
	"CREATE TRIGGER downloads_stats_upd AFTER UPDATE ON downloads"
	"  BEGIN DELETE FROM stats_chunks WHERE tbl = 0 AND last_id >= min(OLD.id, NEW.id); END;"
	"CREATE TRIGGER served_stats_ins AFTER INSERT ON served"
	"  WHEN NEW.id <= (SELECT max(last_id) FROM stats_chunks WHERE tbl = 1)"
	"  BEGIN DELETE FROM stats_chunks WHERE tbl = 1 AND last_id >= NEW.id; END;"
	"CREATE TRIGGER served_stats_del AFTER DELETE ON served"
	"  WHEN OLD.id <= (SELECT max(last_id) FROM stats_chunks WHERE tbl = 1)"
	"  BEGIN DELETE FROM stats_chunks WHERE tbl = 1 AND last_id >= OLD.id; END;"
	"CREATE TRIGGER served_stats_upd AFTER UPDATE ON served"
	"  BEGIN DELETE FROM stats_chunks WHERE tbl = 1 AND last_id >= min(OLD.id, NEW.id); END;",
	/* v7: checkouts of stored revisions (checkouts.c), so that verify can
	 * check the hard-linked ones and --repair re-link them */
	"CREATE TABLE checkouts ("
	"  id INTEGER PRIMARY KEY,"
	"  revision_id INTEGER NOT NULL REFERENCES revisions(id) ON DELETE CASCADE,"
	"  dir TEXT NOT NULL,"
	"  layout TEXT NOT NULL,"
	"  copy INTEGER NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  UNIQUE(revision_id, dir, layout));",
	/* v8: what a smoke test ran: the model's architecture and the engine's
	 * version (a later engine can tell which results to re-check) */
	"ALTER TABLE smoke_results ADD COLUMN architecture TEXT;"
	"ALTER TABLE smoke_results ADD COLUMN engine_version TEXT;",
	/* v9: the BitTorrent v2 torrent of a blob (p2p/, torrents.c): the
	 * bencoded torrent (info dict and piece layers, no announce URL) and
	 * its v2 info-hash, made once per blob and piece size. */
	"CREATE TABLE torrents ("
	"  sha256 TEXT PRIMARY KEY,"
	"  info_hash TEXT NOT NULL,"
	"  piece_size INTEGER NOT NULL,"
	"  torrent BLOB NOT NULL);",
	/* v10: a repo whose last pull needed a token (gated or private upstream):
	 * serve --p2p keeps its blobs out of the swarm without --p2p-private */
	"ALTER TABLE repos ADD COLUMN needs_token INTEGER NOT NULL DEFAULT 0;",
};
#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

int store_schema_latest(void)
{
	return NMIGRATIONS;
}

static enum hm_err user_version(struct hm_ctx *ctx, struct store *st, int *v)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	if ((err = store_prepare(ctx, st, "PRAGMA user_version", &q)))
		return err;
	if (sqlite3_step(q) == SQLITE_ROW)
		*v = sqlite3_column_int(q, 0);
	else
		err = store_db_fail(ctx, st, "read the schema version");
	sqlite3_finalize(q);
	return err;
}

enum hm_err store_migrate(struct hm_ctx *ctx, struct store *st)
{
	enum hm_err err;
	int v = 0;

	if ((err = user_version(ctx, st, &v)))
		return err;
	if (v == NMIGRATIONS)
		goto done;
	/* Take the write lock before looking again: a concurrent opener may
	 * have migrated in between. */
	if ((err = store_exec(ctx, st, "BEGIN IMMEDIATE")))
		return err;
	if ((err = user_version(ctx, st, &v)))
		goto fail;
	if (v > NMIGRATIONS) {
		err = hm_fail(ctx, HM_ERR_DB, "'%s/index.db' has schema version %d, newer than this"
			      " hubmirror knows (%d)", st->dir, v, NMIGRATIONS);
		goto fail;
	}
	for (; v < NMIGRATIONS; v++) {
		char sql[64];
		if ((err = store_exec(ctx, st, migrations[v])))
			goto fail;
		/* PRAGMA takes no bound parameters; v is our own integer */
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		if ((err = store_exec(ctx, st, sql)))
			goto fail;
	}
	if ((err = store_exec(ctx, st, "COMMIT")))
		goto fail;
done:
	st->schema = v;
	return HM_OK;
fail:
	store_rollback(st);
	return err;
}

enum hm_err store_repo_id(struct hm_ctx *ctx, struct store *st, const char *type,
			  const char *repo, int64_t *id)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	int rc;

	if ((err = store_prepare(ctx, st, "SELECT id FROM repos WHERE type = ?1 AND name = ?2", &q)))
		return err;
	sqlite3_bind_text(q, 1, type ? type : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, repo ? repo : "", -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		*id = sqlite3_column_int64(q, 0);
	else if (rc == SQLITE_DONE)
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "%s '%s' not found in the store",
			      type ? type : "repo", repo ? repo : "");
	else
		err = store_db_fail(ctx, st, "look up a repository");
	sqlite3_finalize(q);
	return err;
}

/* Runs a statement that returns at most one integer; *v untouched when no row. */
static enum hm_err step_int(struct hm_ctx *ctx, struct store *st, sqlite3_stmt *q,
			    const char *what, int64_t *v, int *found)
{
	int rc = sqlite3_step(q);
	*found = 0;
	if (rc == SQLITE_ROW) {
		*v = sqlite3_column_int64(q, 0);
		*found = 1;
		return HM_OK;
	}
	return rc == SQLITE_DONE ? HM_OK : store_db_fail(ctx, st, what);
}

static enum hm_err validate_revision(struct hm_ctx *ctx, const char *type, const char *repo,
				     const char *commit, const char *ref,
				     const struct store_file *files, size_t n)
{
	if (!store_type_ok(type))
		return hm_fail(ctx, HM_ERR_USAGE, "unknown repo type '%s'", type ? type : "");
	if (!util_repo_id_is_valid(repo))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid repo id '%s'", repo ? repo : "");
	if (!util_is_hex(commit, 40))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid commit '%s'", commit ? commit : "");
	/* refs become paths in the HF cache layout (refs/<ref>) */
	if (ref && !util_path_is_safe(ref))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid ref '%s'", ref);
	for (size_t i = 0; i < n; i++) {
		const struct store_file *f = &files[i];
		if (!f->path || !util_path_is_safe(f->path))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "unsafe path '%s'", f->path ? f->path : "");
		if (!util_is_hex(f->sha256, 64))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid sha256 for '%s'", f->path);
		if (f->git_oid[0] && !util_is_hex(f->git_oid, 40))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid git oid for '%s'", f->path);
	}
	return HM_OK;
}

static enum hm_err record_files(struct hm_ctx *ctx, struct store *st, int64_t rev_id,
				const struct store_file *files, size_t n)
{
	enum hm_err err;
	sqlite3_stmt *del = NULL, *blob = NULL, *ins = NULL;
	int64_t size;
	int found;

	if ((err = store_prepare(ctx, st, "DELETE FROM files WHERE revision_id = ?1", &del)) ||
	    (err = store_prepare(ctx, st, "SELECT size FROM blobs WHERE sha256 = ?1", &blob)) ||
	    (err = store_prepare(ctx, st, "INSERT INTO files(revision_id, path, size, sha256, git_oid,"
				 " lfs) VALUES (?1, ?2, ?3, ?4, ?5, ?6)", &ins)))
		goto out;
	sqlite3_bind_int64(del, 1, rev_id);
	if (sqlite3_step(del) != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "replace the files of a revision");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct store_file *f = &files[i];
		sqlite3_reset(blob);
		sqlite3_bind_text(blob, 1, f->sha256, -1, SQLITE_STATIC);
		if ((err = step_int(ctx, st, blob, "look up a blob", &size, &found)))
			goto out;
		if (!found || (uint64_t)size != f->size) {
			err = hm_fail(ctx, HM_ERR_NOT_FOUND, "the content of '%s' (%s) not found in the store",
				      f->path, f->sha256);
			goto out;
		}
		sqlite3_reset(ins);
		sqlite3_bind_int64(ins, 1, rev_id);
		sqlite3_bind_text(ins, 2, f->path, -1, SQLITE_STATIC);
		sqlite3_bind_int64(ins, 3, (sqlite3_int64)f->size);
		sqlite3_bind_text(ins, 4, f->sha256, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 5, f->git_oid, -1, SQLITE_STATIC);
		sqlite3_bind_int(ins, 6, f->lfs ? 1 : 0);
		if (sqlite3_step(ins) != SQLITE_DONE) {
			err = (sqlite3_extended_errcode(st->db) == SQLITE_CONSTRAINT_PRIMARYKEY)
				      ? hm_fail(ctx, HM_ERR_BAD_INPUT, "path '%s' is listed twice", f->path)
				      : store_db_fail(ctx, st, "insert a file");
			goto out;
		}
	}
out:
	sqlite3_finalize(del);
	sqlite3_finalize(blob);
	sqlite3_finalize(ins);
	return err;
}

static enum hm_err record_ref(struct hm_ctx *ctx, struct store *st, int64_t repo_id,
			      const char *ref, const char *commit, int64_t now)
{
	enum hm_err err;
	sqlite3_stmt *hist = NULL, *up = NULL;

	/* history gets a row only when the ref moves (or first appears) */
	if ((err = store_prepare(ctx, st,
				 "INSERT INTO ref_history(repo_id, name, commit_sha, seen_at)"
				 " SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM refs"
				 " WHERE repo_id = ?1 AND name = ?2 AND commit_sha = ?3)", &hist)) ||
	    (err = store_prepare(ctx, st,
				 "INSERT INTO refs(repo_id, name, commit_sha, updated_at)"
				 " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(repo_id, name) DO UPDATE SET"
				 " commit_sha = excluded.commit_sha, updated_at = excluded.updated_at",
				 &up)))
		goto out;
	for (int i = 0; i < 2; i++) {
		sqlite3_stmt *q = i ? up : hist;
		sqlite3_bind_int64(q, 1, repo_id);
		sqlite3_bind_text(q, 2, ref, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, commit, -1, SQLITE_STATIC);
		sqlite3_bind_int64(q, 4, now);
		if (sqlite3_step(q) != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "update a ref");
			goto out;
		}
	}
out:
	sqlite3_finalize(hist);
	sqlite3_finalize(up);
	return err;
}

enum hm_err store_record_revision(struct hm_ctx *ctx, struct store *st, const char *type,
				  const char *repo, const char *commit, const char *ref,
				  const struct store_file *files, size_t n)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	int64_t repo_id = 0, rev_id = 0, now = util_unix_time();
	int found;

	if ((err = validate_revision(ctx, type, repo, commit, ref, files, n)))
		return err;
	if ((err = store_flush(ctx, st)))
		return err;
	if ((err = store_exec(ctx, st, "BEGIN IMMEDIATE")))
		return err;

	if ((err = store_prepare(ctx, st, "INSERT INTO repos(type, name) VALUES (?1, ?2)"
				 " ON CONFLICT(type, name) DO UPDATE SET name = excluded.name"
				 " RETURNING id", &q)))
		goto out;
	sqlite3_bind_text(q, 1, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, repo, -1, SQLITE_STATIC);
	if ((err = step_int(ctx, st, q, "insert a repository", &repo_id, &found)))
		goto out;
	sqlite3_finalize(q);

	if ((err = store_prepare(ctx, st, "INSERT INTO revisions(repo_id, commit_sha, pulled_at)"
				 " VALUES (?1, ?2, ?3) ON CONFLICT(repo_id, commit_sha) DO UPDATE SET"
				 " pulled_at = excluded.pulled_at RETURNING id", &q)))
		goto out;
	sqlite3_bind_int64(q, 1, repo_id);
	sqlite3_bind_text(q, 2, commit, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 3, now);
	if ((err = step_int(ctx, st, q, "insert a revision", &rev_id, &found)))
		goto out;
	sqlite3_finalize(q);
	q = NULL;

	if ((err = record_files(ctx, st, rev_id, files, n)))
		goto out;
	if (ref && (err = record_ref(ctx, st, repo_id, ref, commit, now)))
		goto out;
	err = store_exec(ctx, st, "COMMIT");
	/* an S3 store: the revision object goes up after all of its blobs */
	if (!err && st->remote && !st->backend->syncing(st))
		err = st->backend->put_revision(ctx, st, type, repo, commit, ref);
out:
	sqlite3_finalize(q);
	if (err)
		store_rollback(st);
	return err;
}

/* 1 when s is 1..40 hex digits (either case). */
static int hexish(const char *s, size_t *len)
{
	size_t n = strlen(s);
	*len = n;
	if (n == 0 || n > 40)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
		      (s[i] >= 'A' && s[i] <= 'F')))
			return 0;
	return 1;
}

/* Copies the first text column of the one or two rows q yields. */
static enum hm_err first_commit(struct hm_ctx *ctx, struct store *st, sqlite3_stmt *q,
				char commit[41], int *nrows)
{
	int rc;
	*nrows = 0;
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		const char *c = (const char *)sqlite3_column_text(q, 0);
		if (*nrows == 0 && c)
			snprintf(commit, 41, "%s", c);
		if (++*nrows == 2)
			return HM_OK;
	}
	return rc == SQLITE_DONE ? HM_OK : store_db_fail(ctx, st, "resolve a revision");
}

enum hm_err store_resolve(struct hm_ctx *ctx, struct store *st, const char *type,
			  const char *repo, const char *rev, char commit[41])
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	int64_t repo_id;
	int nrows = 0;
	size_t len;
	char lower[41];

	commit[0] = '\0';
	if ((err = store_repo_id(ctx, st, type, repo, &repo_id)))
		return err;

	/* a ref wins over a commit prefix, as in git */
	if ((err = store_prepare(ctx, st, "SELECT commit_sha FROM refs WHERE repo_id = ?1 AND name = ?2", &q)))
		goto out;
	sqlite3_bind_int64(q, 1, repo_id);
	sqlite3_bind_text(q, 2, rev ? rev : "main", -1, SQLITE_STATIC);
	if ((err = first_commit(ctx, st, q, commit, &nrows)) || nrows)
		goto out;
	sqlite3_finalize(q);
	q = NULL;

	if (!rev) {
		if ((err = store_prepare(ctx, st, "SELECT commit_sha FROM revisions WHERE repo_id = ?1"
					 " ORDER BY pulled_at DESC, id DESC LIMIT 1", &q)))
			goto out;
		sqlite3_bind_int64(q, 1, repo_id);
		if ((err = first_commit(ctx, st, q, commit, &nrows)))
			goto out;
		if (!nrows)
			err = hm_fail(ctx, HM_ERR_NOT_FOUND, "%s '%s' has no stored revision", type, repo);
		goto out;
	}

	if (!hexish(rev, &len) || len < 7) {
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "revision '%s' of %s '%s' not found in the store",
			      rev, type, repo);
		goto out;
	}
	for (size_t i = 0; i <= len; i++)
		lower[i] = (rev[i] >= 'A' && rev[i] <= 'F') ? (char)(rev[i] - 'A' + 'a') : rev[i];
	if ((err = store_prepare(ctx, st, "SELECT commit_sha FROM revisions WHERE repo_id = ?1"
				 " AND substr(commit_sha, 1, ?2) = ?3 LIMIT 2", &q)))
		goto out;
	sqlite3_bind_int64(q, 1, repo_id);
	sqlite3_bind_int(q, 2, (int)len);
	sqlite3_bind_text(q, 3, lower, -1, SQLITE_STATIC);
	if ((err = first_commit(ctx, st, q, commit, &nrows)))
		goto out;
	if (nrows == 0)
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "revision '%s' of %s '%s' not found in the store",
			      rev, type, repo);
	else if (nrows > 1)
		err = hm_fail(ctx, HM_ERR_USAGE, "revision '%s' of %s '%s' is ambiguous", rev, type, repo);
out:
	sqlite3_finalize(q);
	if (err)
		commit[0] = '\0';
	return err;
}

enum hm_err store_rm(struct hm_ctx *ctx, struct store *st, const char *type,
		     const char *repo, const char *commit)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	int64_t repo_id;

	if (st->remote && !st->backend->syncing(st) && (err = st->backend->rm(ctx, st, type, repo, commit)))
		return err;
	if ((err = store_exec(ctx, st, "BEGIN IMMEDIATE")))
		return err;
	if ((err = store_repo_id(ctx, st, type, repo, &repo_id)))
		goto out;
	if (!commit) {
		/* cascades to revisions, files, refs and ref history */
		if ((err = store_prepare(ctx, st, "DELETE FROM repos WHERE id = ?1", &q)))
			goto out;
		sqlite3_bind_int64(q, 1, repo_id);
		if (sqlite3_step(q) != SQLITE_DONE)
			err = store_db_fail(ctx, st, "remove a repository");
		goto commit;
	}
	if ((err = store_prepare(ctx, st, "DELETE FROM revisions WHERE repo_id = ?1 AND commit_sha = ?2", &q)))
		goto out;
	sqlite3_bind_int64(q, 1, repo_id);
	sqlite3_bind_text(q, 2, commit, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "remove a revision");
		goto out;
	}
	if (sqlite3_changes(st->db) == 0) {
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "revision '%s' of %s '%s' not found in the store",
			      commit, type, repo);
		goto out;
	}
	sqlite3_finalize(q);
	/* refs must never point at a revision that is gone */
	if ((err = store_prepare(ctx, st, "DELETE FROM refs WHERE repo_id = ?1 AND commit_sha = ?2", &q)))
		goto out;
	sqlite3_bind_int64(q, 1, repo_id);
	sqlite3_bind_text(q, 2, commit, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "remove refs");
		goto out;
	}
	sqlite3_finalize(q);
	if ((err = store_prepare(ctx, st, "DELETE FROM repos WHERE id = ?1 AND NOT EXISTS"
				 " (SELECT 1 FROM revisions WHERE repo_id = ?1)", &q)))
		goto out;
	sqlite3_bind_int64(q, 1, repo_id);
	if (sqlite3_step(q) != SQLITE_DONE)
		err = store_db_fail(ctx, st, "remove an empty repository");
commit:
	if (!err)
		err = store_exec(ctx, st, "COMMIT");
out:
	sqlite3_finalize(q);
	if (err)
		store_rollback(st);
	return err;
}
