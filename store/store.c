/* store.c - opening the store, blob files, per-key locks, and queued index rows.
 *
 * Crash rule: an index row never names a blob that is not fully on disk. A
 * blob is renamed into place first (after fsync when durable), and its row is
 * written only by store_flush, which syncs the filesystem first when any
 * blob skipped its own fsync.
 *
 * A struct store belongs to one thread at a time (its row queues have no lock);
 * processes share a store through SQLite locking and flock. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "store-int.h"
#include "../util/util.h"
#include "../s3/s3.h"

enum hm_err store_errno_err(int e)
{
	if (e == ENOSPC || e == EDQUOT)
		return HM_ERR_NOSPC;
	return e == ENOMEM ? HM_ERR_NOMEM : HM_ERR_IO;
}

enum hm_err store_db_fail(struct hm_ctx *ctx, struct store *st, const char *what)
{
	int code = sqlite3_extended_errcode(st->db) & 0xff;
	enum hm_err err = code == SQLITE_FULL ? HM_ERR_NOSPC :
			  code == SQLITE_NOMEM ? HM_ERR_NOMEM : HM_ERR_DB;
	char holders[160] = "";

	/* after the busy timeout: say who else has the store open */
	if (code == SQLITE_BUSY)
		store_holders(st, holders, sizeof(holders));
	return hm_fail(ctx, err, "cannot %s in '%s/index.db': %s%s%s%s", what, st->dir, sqlite3_errmsg(st->db),
		       holders[0] ? " (the store is open in " : "", holders, holders[0] ? ")" : "");
}

/* Switches index.db to WAL. Changing the journal mode takes an exclusive
 * lock without SQLite's busy handler, so stores opened by several
 * processes at once (the first pulls into a new store) wait here. */
static enum hm_err set_wal(struct hm_ctx *ctx, struct store *st)
{
	double deadline = util_now() + 30;
	for (;;) {
		int rc = sqlite3_exec(st->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) & 0xff;
		struct timespec ts = {0, 20 * 1000 * 1000};
		if (rc == SQLITE_OK)
			return HM_OK;
		if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || util_now() > deadline)
			return store_db_fail(ctx, st, "switch to WAL mode");
		if (hm_cancelled(ctx))
			return hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
		nanosleep(&ts, NULL);
	}
}

enum hm_err store_prepare(struct hm_ctx *ctx, struct store *st, const char *sql,
			  sqlite3_stmt **stmt)
{
	*stmt = NULL;
	if (sqlite3_prepare_v2(st->db, sql, -1, stmt, NULL) != SQLITE_OK)
		return store_db_fail(ctx, st, "prepare a query");
	return HM_OK;
}

enum hm_err store_exec(struct hm_ctx *ctx, struct store *st, const char *sql)
{
	if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return store_db_fail(ctx, st, "run a statement");
	return HM_OK;
}

void store_rollback(struct store *st)
{
	if (!sqlite3_get_autocommit(st->db))
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

int store_type_ok(const char *type)
{
	return type && (!strcmp(type, "model") || !strcmp(type, "dataset"));
}

static enum hm_err mkdir_in(struct hm_ctx *ctx, const char *dir, const char *sub)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", dir, sub) >= (int)sizeof(path))
		return hm_fail(ctx, HM_ERR_USAGE, "store path '%s' is too long", dir);
	if (util_mkdir_p(path, 0755) < 0)
		return hm_fail(ctx, store_errno_err(errno), "cannot create '%s': %s", path,
			       strerror(errno));
	return HM_OK;
}

int store_has_blob_files(const char *dir)
{
	char top[PATH_MAX], sub[PATH_MAX];
	struct dirent *e, *se;
	int found = 0;
	DIR *d, *sd;

	if (snprintf(top, sizeof(top), "%s/blobs/sha256", dir) >= (int)sizeof(top) || !(d = opendir(top)))
		return 0;
	while (!found && (e = readdir(d))) {
		if (!util_is_hex(e->d_name, 2) ||
		    snprintf(sub, sizeof(sub), "%s/%s", top, e->d_name) >= (int)sizeof(sub) || !(sd = opendir(sub)))
			continue;
		while (!found && (se = readdir(sd)))
			found = util_is_hex(se->d_name, 64);
		closedir(sd);
	}
	closedir(d);
	return found;
}

enum hm_err store_ro_fail(struct hm_ctx *ctx, struct store *st, const char *what)
{
	return hm_fail(ctx, HM_ERR_IO, "cannot %s: the store '%s' is read-only for this user", what, st->dir);
}

int store_readonly(const struct store *st)
{
	return st->readonly;
}

/* The refusal for a store whose index is gone while its blobs are not. */
static enum hm_err lost_index(struct hm_ctx *ctx, const char *dir)
{
	return hm_fail(ctx, HM_ERR_DB,
		       "'%s/index.db' is missing or empty but the store holds blobs: not opening it, as an empty"
		       " index would let gc delete them all; run 'hubmirror --store %s rebuild-index' to index the"
		       " blobs again (pulling the repos afterwards downloads nothing), or restore index.db from a"
		       " backup", dir, dir);
}

static enum hm_err not_a_store(struct hm_ctx *ctx, const char *dir, const char *why)
{
	return hm_fail(ctx, HM_ERR_NOT_FOUND,
		       "'%s' is not a hubmirror store (%s): check --store or $HUBMIRROR_HOME; 'pull', 'import'"
		       " and 'sync' create a store", dir, why);
}

/* Reads PRAGMA user_version; -1 when the database cannot be read. */
static int read_version(sqlite3 *db)
{
	sqlite3_stmt *q = NULL;
	int v = -1;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK &&
	    sqlite3_step(q) == SQLITE_ROW)
		v = sqlite3_column_int(q, 0);
	sqlite3_finalize(q);
	return v;
}

/* Opens index.db read-only. Without write access to the directory SQLite
 * cannot make the WAL index (-shm); when no writer left a WAL behind the
 * file is complete on its own, and opening it immutable needs neither. */
static enum hm_err open_db_readonly(struct hm_ctx *ctx, struct store *st, const char *path, int *version)
{
	struct util_buf uri = UTIL_BUF_INIT;
	char wal[PATH_MAX];
	int ok;

	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    (*version = read_version(st->db)) >= 0)
		return HM_OK;
	sqlite3_close_v2(st->db);
	st->db = NULL;
	if (snprintf(wal, sizeof(wal), "%s-wal", path) >= (int)sizeof(wal) || access(wal, F_OK) == 0)
		return hm_fail(ctx, HM_ERR_DB, "cannot read '%s' read-only while a writer's '%s' exists and its"
			       " index cannot be made: try again when the writer is done", path, wal);
	ok = !util_buf_adds(&uri, "file:");
	for (const unsigned char *c = (const unsigned char *)path; ok && *c; c++) {
		if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		    strchr("/-._~", *c))
			ok = !util_buf_add(&uri, c, 1);
		else
			ok = !util_buf_printf(&uri, "%%%02X", *c);
	}
	ok = ok && !util_buf_adds(&uri, "?immutable=1");
	if (!ok) {
		util_buf_release(&uri);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory opening '%s'", path);
	}
	if (sqlite3_open_v2(uri.buf, &st->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK ||
	    (*version = read_version(st->db)) < 0) {
		enum hm_err err = hm_fail(ctx, HM_ERR_DB, "cannot read '%s': %s", path,
					  st->db ? sqlite3_errmsg(st->db) : "out of memory");
		util_buf_release(&uri);
		return err;
	}
	free(st->db_name);
	st->db_name = util_buf_detach(&uri);
	st->db_flags = SQLITE_OPEN_URI;
	return HM_OK;
}

enum hm_err store_open(struct hm_ctx *ctx, const char *dir, struct store **out)
{
	return store_open_mode(ctx, dir, STORE_CREATE, out);
}

enum hm_err store_open_mode(struct hm_ctx *ctx, const char *dir, enum store_mode mode, struct store **out)
{
	enum hm_err err = HM_OK;
	struct store *st;
	char path[PATH_MAX], tmp[PATH_MAX], *db_name = NULL;
	struct stat sb;
	int have_index, version = 0;

	*out = NULL;
	if (s3_is_uri(dir))
		return store_remote_open(ctx, dir, out);
	if (!dir || !*dir || strlen(dir) > PATH_MAX - 200)
		return hm_fail(ctx, HM_ERR_USAGE, "store path '%s' is empty or too long", dir ? dir : "");
	snprintf(path, sizeof(path), "%s/index.db", dir);
	if (!(db_name = util_strdup(path)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory opening store '%s'", dir);
	/* (a 0-byte index.db next to no blobs may be a store being created:
	 * its schema is judged below, once its creator is done) */
	if (stat(path, &sb) == 0)
		have_index = S_ISREG(sb.st_mode) && (sb.st_size > 0 || !store_has_blob_files(dir));
	else if (errno == ENOENT || errno == ENOTDIR)
		have_index = 0;
	else
		have_index = -1;
	st = calloc(1, sizeof(*st));
	if (!st) {
		free(db_name);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory opening store '%s'", dir);
	}
	st->blobs_fd = st->gc_fd = -1;
	st->db_name = db_name;
	if (have_index < 0) {
		err = hm_fail(ctx, HM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
		goto out;
	}
	if (!have_index && mode != STORE_REBUILD && store_has_blob_files(dir)) {
		err = lost_index(ctx, dir);
		goto out;
	}
	if (!have_index && (mode == STORE_WRITE || mode == STORE_READ)) {
		err = not_a_store(ctx, dir, stat(dir, &sb) == 0 ? "it has no index.db" : "no such directory");
		goto out;
	}
	st->dir = util_strdup(dir);
	if (!st->dir) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory opening store '%s'", dir);
		goto out;
	}
	if (have_index && mode != STORE_READ && (access(dir, W_OK) < 0 || access(path, W_OK) < 0)) {
		err = hm_fail(ctx, HM_ERR_IO, "cannot write the store '%s': %s (this command changes it; 'ls',"
			      " 'stats', 'du', 'verify', 'checkout --copy' and 'serve' only read)", dir, strerror(errno));
		goto out;
	}
	/* a reader that cannot write (another user's store, a read-only
	 * filesystem) takes no lock and makes nothing */
	snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
	if (mode == STORE_READ &&
	    (access(dir, W_OK) < 0 || access(path, W_OK) < 0 || (access(tmp, W_OK) < 0 && errno != ENOENT)))
		st->readonly = 1;

	if (!st->readonly && ((err = mkdir_in(ctx, dir, "blobs/sha256")) || (err = mkdir_in(ctx, dir, "tmp"))))
		goto out;
	snprintf(tmp, sizeof(tmp), "%s/blobs/sha256", dir);
	st->blobs_fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->blobs_fd < 0 && !(st->readonly && errno == ENOENT)) {
		err = hm_fail(ctx, HM_ERR_IO, "cannot open '%s': %s", tmp, strerror(errno));
		goto out;
	}
	if (st->readonly) {
		if ((err = open_db_readonly(ctx, st, path, &version)))
			goto out;
		sqlite3_busy_timeout(st->db, 30000);
		sqlite3_extended_result_codes(st->db, 1);
		if (version == 0) {
			err = not_a_store(ctx, dir, "its index.db has no hubmirror schema");
			goto out;
		}
		if (version > store_schema_latest()) {
			err = hm_fail(ctx, HM_ERR_DB, "'%s' has schema version %d, newer than this hubmirror knows (%d)",
				      path, version, store_schema_latest());
			goto out;
		}
		if (version < store_schema_latest()) {
			err = hm_fail(ctx, HM_ERR_DB, "'%s' has schema version %d and this hubmirror needs %d, which a"
				      " read-only user cannot upgrade: run any writing command (e.g. 'hubmirror gc"
				      " --dry-run') as a user who can write the store", path, version,
				      store_schema_latest());
			goto out;
		}
		st->schema = version;
		*out = st;
		st = NULL;
		goto out;
	}

	/* Every open store holds gc.lock shared, so gc can tell whether a pull
	 * might be between adopting a blob and recording the revision. flock
	 * needs no write access: a read-only descriptor does for a file of
	 * another user's. */
	snprintf(tmp, sizeof(tmp), "%s/tmp/gc.lock", dir);
	st->gc_fd = open(tmp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (st->gc_fd < 0 && errno == EACCES)
		st->gc_fd = open(tmp, O_RDONLY | O_CLOEXEC);
	if (st->gc_fd < 0 || flock(st->gc_fd, LOCK_SH) < 0) {
		err = hm_fail(ctx, store_errno_err(errno), "cannot lock '%s': %s", tmp, strerror(errno));
		goto out;
	}

	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | (mode == STORE_CREATE || mode == STORE_REBUILD ?
								      SQLITE_OPEN_CREATE : 0), NULL) != SQLITE_OK) {
		err = hm_fail(ctx, HM_ERR_DB, "cannot open '%s': %s", path,
			      st->db ? sqlite3_errmsg(st->db) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(st->db, 30000);
	sqlite3_extended_result_codes(st->db, 1);
	/* A store being created has index.db before its schema: wait for the
	 * creator's transaction (the write lock) before judging. An index
	 * without our schema (just created, or emptied) next to blobs is a lost
	 * index, not a new store. */
	if (mode != STORE_REBUILD && mode != STORE_CREATE && read_version(st->db) == 0 &&
	    (err = store_exec(ctx, st, "BEGIN IMMEDIATE")) == HM_OK)
		err = store_exec(ctx, st, "COMMIT");
	if (err)
		goto out;
	if (mode != STORE_REBUILD && (version = read_version(st->db)) == 0) {
		if (store_has_blob_files(dir)) {
			err = lost_index(ctx, dir);
			goto out;
		}
		if (mode != STORE_CREATE) {
			err = not_a_store(ctx, dir, "its index.db has no hubmirror schema");
			goto out;
		}
	}
	/* NORMAL is safe in WAL mode: a power loss may drop the last commits but
	 * never corrupts, and blobs are on disk before their rows anyway. */
	if ((err = set_wal(ctx, st)) ||
	    (err = store_exec(ctx, st, "PRAGMA synchronous=NORMAL")) ||
	    (err = store_exec(ctx, st, "PRAGMA foreign_keys=ON")))
		goto out;
	if ((err = store_migrate(ctx, st)))
		goto out;
	*out = st;
	st = NULL;
out:
	if (st)
		store_close(st);
	return err;
}

static void pending_dl_release(struct store_pending_dl *p)
{
	for (size_t i = 0; i < sizeof(p->strs) / sizeof(p->strs[0]); i++)
		free(p->strs[i]);
}

void store_close(struct store *st)
{
	struct hm_ctx ctx = {0};
	if (!st)
		return;
	if (st->db) {
		/* best effort: a failed flush leaves blobs without rows, which gc or
		 * the next pull's adopt reclaims */
		if (store_flush(&ctx, st) != HM_OK)
			ctx.errmsg[0] = '\0';
		sqlite3_close_v2(st->db);
	}
	for (size_t i = 0; i < st->ndls; i++)
		pending_dl_release(&st->dls[i]);
	free(st->dls);
	free(st->blobs);
	store_remote_free(st->remote);
	if (st->blobs_fd >= 0)
		close(st->blobs_fd);
	if (st->gc_fd >= 0)
		close(st->gc_fd);
	for (size_t i = 0; i < st->ntmp_locks; i++) {
		store_unlock_path(st->tmp_lock_paths[i], st->tmp_locks[i]);
		free(st->tmp_lock_paths[i]);
	}
	free(st->tmp_locks);
	free(st->tmp_lock_paths);
	free(st->db_name);
	free(st->dir);
	free(st);
}

const char *store_dir(const struct store *st)
{
	return st->dir;
}

int store_schema_version(const struct store *st)
{
	return st->schema;
}

void store_blob_path(const struct store *st, const char *sha256, char *buf, size_t len)
{
	snprintf(buf, len, "%s/blobs/sha256/%.2s/%s", st->dir, sha256, sha256);
}

static struct store_pending_blob *pending_blob(struct store *st, const char *sha256)
{
	for (size_t i = 0; i < st->nblobs; i++)
		if (!strcmp(st->blobs[i].sha256, sha256))
			return &st->blobs[i];
	return NULL;
}

enum hm_err store_blob_has(struct hm_ctx *ctx, struct store *st, const char *sha256,
			   uint64_t size, int *present)
{
	enum hm_err err = HM_OK;
	sqlite3_stmt *q = NULL;
	char path[PATH_MAX];
	struct stat sb;
	int indexed = 0, rc;

	*present = 0;
	if (!util_is_hex(sha256, 64))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid sha256 '%s'", sha256);
	if (st->remote)
		return store_remote_blob_has(ctx, st, sha256, size, present);
	if (pending_blob(st, sha256)) {
		indexed = pending_blob(st, sha256)->size == size;
	} else {
		if ((err = store_prepare(ctx, st, "SELECT size FROM blobs WHERE sha256 = ?1", &q)))
			goto out;
		sqlite3_bind_text(q, 1, sha256, -1, SQLITE_STATIC);
		rc = sqlite3_step(q);
		if (rc == SQLITE_ROW)
			indexed = (uint64_t)sqlite3_column_int64(q, 0) == size;
		else if (rc != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "look up a blob");
			goto out;
		}
	}
	if (!indexed)
		goto out;
	store_blob_path(st, sha256, path, sizeof(path));
	if (stat(path, &sb) == 0)
		*present = S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == size;
	else if (errno != ENOENT)
		err = hm_fail(ctx, HM_ERR_IO, "cannot stat '%s': %s", path, strerror(errno));
out:
	sqlite3_finalize(q);
	return err;
}

enum hm_err store_blob_by_git_oid(struct hm_ctx *ctx, struct store *st, const char *git_oid,
				  char sha256[65], uint64_t *size, int *found)
{
	enum hm_err err = HM_OK;
	sqlite3_stmt *q = NULL;
	int rc;

	*found = 0;
	if (!util_is_hex(git_oid, 40))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid git oid '%s'", git_oid);
	for (size_t i = 0; i < st->nblobs; i++) {
		if (!strcmp(st->blobs[i].git_oid, git_oid)) {
			memcpy(sha256, st->blobs[i].sha256, 65);
			*size = st->blobs[i].size;
			*found = 1;
			return HM_OK;
		}
	}
	if ((err = store_prepare(ctx, st,
				 "SELECT b.sha256, b.size FROM blob_oids o JOIN blobs b ON b.sha256 = o.sha256"
				 " WHERE o.git_oid = ?1", &q)))
		goto out;
	sqlite3_bind_text(q, 1, git_oid, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const char *s = (const char *)sqlite3_column_text(q, 0);
		if (s && util_is_hex(s, 64)) {
			memcpy(sha256, s, 65);
			*size = (uint64_t)sqlite3_column_int64(q, 1);
			*found = 1;
		}
	} else if (rc != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "look up a git oid");
	}
out:
	sqlite3_finalize(q);
	return err;
}

/* Keys name files in tmp/: an LFS sha256 or "git-<oid>"; anything else could
 * escape the directory or collide with gc.lock. */
static int key_ok(const char *key)
{
	size_t n = key ? strlen(key) : 0;
	if (n == 0 || n > 128 || key[0] == '.' || key[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = key[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return strcmp(key, "gc") != 0;
}

void store_part_paths(const struct store *st, const char *key, char *part, char *state, size_t len)
{
	if (part)
		snprintf(part, len, "%s/tmp/%s.part", st->dir, key);
	if (state)
		snprintf(state, len, "%s/tmp/%s.state", st->dir, key);
}

int store_lock_path(struct store *st, const char *path, int create, int *fd)
{
	struct stat a, b;
	int lfd;

	*fd = -1;
	for (;;) {
		lfd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
		if (lfd < 0)
			return -1;
		while (flock(lfd, LOCK_EX | LOCK_NB) < 0) {
			int e = errno;
			if (e == EINTR)
				continue;
			close(lfd);
			errno = e;
			return -1;
		}
		/* The holder before us removes the file when it lets go, so the
		 * inode we locked may be one nobody else can find any more: only a
		 * lock on the file the path names now excludes anyone. */
		if (fstat(lfd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
			break;
		close(lfd);
		if (!create) {
			errno = ENOENT;
			return -1;
		}
	}
	(void)st;
	*fd = lfd;
	return 0;
}

void store_unlock_path(const char *path, int fd)
{
	/* unlinked while still held: whoever opened the old inode in the
	 * meantime notices (store_lock_path) and opens the path again */
	if (fd < 0)
		return;
	unlink(path);
	close(fd);
}

enum hm_err store_lock_try(struct hm_ctx *ctx, struct store *st, const char *key, int *fd)
{
	char path[PATH_MAX];

	*fd = -1;
	if (!key_ok(key))
		return hm_fail(ctx, HM_ERR_USAGE, "invalid lock key '%s'", key ? key : "");
	if (st->readonly)
		return store_ro_fail(ctx, st, "lock a download");
	snprintf(path, sizeof(path), "%s/tmp/%s.lock", st->dir, key);
	if (store_lock_path(st, path, 1, fd) == 0)
		return HM_OK;
	if (errno == EWOULDBLOCK)
		return hm_fail(ctx, HM_ERR_LOCKED, "'%s' is locked by another process", key);
	return hm_fail(ctx, store_errno_err(errno), "cannot lock '%s': %s", path, strerror(errno));
}

void store_unlock(struct store *st, const char *key, int fd)
{
	char path[PATH_MAX];

	if (fd < 0)
		return;
	if (!key_ok(key)) {
		close(fd);
		return;
	}
	/* no lock file outlives its use: one per blob would pile up until gc */
	snprintf(path, sizeof(path), "%s/tmp/%s.lock", st->dir, key);
	store_unlock_path(path, fd);
}

enum hm_err store_blob_adopt(struct hm_ctx *ctx, struct store *st, const char *tmp_path,
			     const char *sha256, uint64_t size, const char *git_oid, int durable)
{
	enum hm_err err = HM_OK;
	char dst[PATH_MAX], dir[PATH_MAX];
	struct stat sb;
	int fd = -1, made_dir = 0;

	if (!util_is_hex(sha256, 64))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid sha256 '%s'", sha256 ? sha256 : "");
	if (st->readonly)
		return store_ro_fail(ctx, st, "add a blob");
	if (git_oid && *git_oid && !util_is_hex(git_oid, 40))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid git oid '%s'", git_oid);
	/* an S3 store: the object first (visible only when complete and
	 * matching); the file stays in the local cache */
	if (st->remote && (err = store_remote_upload(ctx, st, tmp_path, sha256, size)))
		return err;
	if (st->nblobs == st->capblobs) {
		size_t cap = st->capblobs ? st->capblobs * 2 : 64;
		void *p = realloc(st->blobs, cap * sizeof(*st->blobs));
		if (!p)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory adopting '%s'", tmp_path);
		st->blobs = p;
		st->capblobs = cap;
	}

	fd = open(tmp_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hm_fail(ctx, store_errno_err(errno), "cannot open '%s': %s", tmp_path, strerror(errno));
	if (fstat(fd, &sb) < 0) {
		err = hm_fail(ctx, HM_ERR_IO, "cannot stat '%s': %s", tmp_path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != size) {
		err = hm_fail(ctx, HM_ERR_CORRUPT, "'%s' has %lld bytes, expected %llu", tmp_path,
			      (long long)sb.st_size, (unsigned long long)size);
		goto out;
	}
	if (fchmod(fd, 0444) < 0) {
		err = hm_fail(ctx, HM_ERR_IO, "cannot chmod '%s': %s", tmp_path, strerror(errno));
		goto out;
	}
	if (durable && fsync(fd) < 0) {
		err = hm_fail(ctx, store_errno_err(errno), "cannot sync '%s': %s", tmp_path, strerror(errno));
		goto out;
	}

	snprintf(dir, sizeof(dir), "%s/blobs/sha256/%.2s", st->dir, sha256);
	if (mkdir(dir, 0755) == 0)
		made_dir = 1;
	else if (errno != EEXIST) {
		err = hm_fail(ctx, store_errno_err(errno), "cannot create '%s': %s", dir, strerror(errno));
		goto out;
	}
	store_blob_path(st, sha256, dst, sizeof(dst));
	/* Another process may have won the race; a same-size file is that blob
	 * (blobs only ever appear by rename). A wrong size is debris from a
	 * power loss before a non-durable flush: replace it. */
	if (lstat(dst, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == size) {
		if (unlink(tmp_path) < 0 && errno != ENOENT) {
			err = hm_fail(ctx, HM_ERR_IO, "cannot remove '%s': %s", tmp_path, strerror(errno));
			goto out;
		}
	} else if (rename(tmp_path, dst) < 0) {
		err = hm_fail(ctx, store_errno_err(errno), "cannot rename '%s' to '%s': %s", tmp_path,
			      dst, strerror(errno));
		goto out;
	}
	if (durable) {
		if (util_fsync_dir(dir) < 0 ||
		    (made_dir && fsync(st->blobs_fd) < 0)) {
			err = hm_fail(ctx, store_errno_err(errno), "cannot sync '%s': %s", dir, strerror(errno));
			goto out;
		}
	} else {
		st->need_sync = 1;
	}

	struct store_pending_blob *pb = &st->blobs[st->nblobs++];
	memcpy(pb->sha256, sha256, 65);
	snprintf(pb->git_oid, sizeof(pb->git_oid), "%s", git_oid ? git_oid : "");
	pb->size = size;
out:
	if (fd >= 0)
		close(fd);
	return err;
}

enum hm_err store_record_download(struct hm_ctx *ctx, struct store *st, const struct store_download *d)
{
	struct store_pending_dl *p;
	const char *src[8];
	const char **dst[8];

	if (!d->repo_type || !d->repo || !d->path || !d->result)
		return hm_fail(ctx, HM_ERR_USAGE, "download record lacks a repo, path or result");
	if (st->ndls == st->capdls) {
		size_t cap = st->capdls ? st->capdls * 2 : 32;
		void *np = realloc(st->dls, cap * sizeof(*st->dls));
		if (!np)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory recording a download");
		st->dls = np;
		st->capdls = cap;
	}
	p = &st->dls[st->ndls];
	memset(p, 0, sizeof(*p));
	p->d = *d;
	src[0] = d->repo_type, dst[0] = &p->d.repo_type;
	src[1] = d->repo, dst[1] = &p->d.repo;
	src[2] = d->revision, dst[2] = &p->d.revision;
	src[3] = d->path, dst[3] = &p->d.path;
	src[4] = d->sha256, dst[4] = &p->d.sha256;
	src[5] = d->result, dst[5] = &p->d.result;
	src[6] = d->error, dst[6] = &p->d.error;
	src[7] = d->endpoint, dst[7] = &p->d.endpoint;
	for (int i = 0; i < 8; i++) {
		if (!src[i]) {
			*dst[i] = NULL;
			continue;
		}
		p->strs[i] = util_strdup(src[i]);
		if (!p->strs[i]) {
			pending_dl_release(p);
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory recording a download");
		}
		*dst[i] = p->strs[i];
	}
	st->ndls++;
	return HM_OK;
}

static void bind_opt_text(sqlite3_stmt *q, int i, const char *s)
{
	if (s)
		sqlite3_bind_text(q, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(q, i);
}

/* Inserts every queued row; the caller holds the transaction. */
static enum hm_err flush_rows(struct hm_ctx *ctx, struct store *st)
{
	enum hm_err err = HM_OK;
	sqlite3_stmt *qb = NULL, *qo = NULL, *qd = NULL;
	int64_t now = util_unix_time();

	if ((err = store_prepare(ctx, st, "INSERT OR IGNORE INTO blobs(sha256, size, added_at)"
				 " VALUES (?1, ?2, ?3)", &qb)) ||
	    (err = store_prepare(ctx, st, "INSERT OR REPLACE INTO blob_oids(git_oid, sha256)"
				 " VALUES (?1, ?2)", &qo)) ||
	    (err = store_prepare(ctx, st, "INSERT INTO downloads(repo_type, repo, revision, path,"
				 " sha256, size, bytes, seconds, connections, retries, result, error,"
				 " endpoint, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
				 " ?10, ?11, ?12, ?13, ?14)", &qd)))
		goto out;
	for (size_t i = 0; i < st->nblobs; i++) {
		const struct store_pending_blob *b = &st->blobs[i];
		sqlite3_reset(qb);
		sqlite3_bind_text(qb, 1, b->sha256, -1, SQLITE_STATIC);
		sqlite3_bind_int64(qb, 2, (sqlite3_int64)b->size);
		sqlite3_bind_int64(qb, 3, now);
		if (sqlite3_step(qb) != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "insert a blob");
			goto out;
		}
		if (!b->git_oid[0])
			continue;
		sqlite3_reset(qo);
		sqlite3_bind_text(qo, 1, b->git_oid, -1, SQLITE_STATIC);
		sqlite3_bind_text(qo, 2, b->sha256, -1, SQLITE_STATIC);
		if (sqlite3_step(qo) != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "insert a git oid");
			goto out;
		}
	}
	for (size_t i = 0; i < st->ndls; i++) {
		const struct store_download *d = &st->dls[i].d;
		sqlite3_reset(qd);
		sqlite3_bind_text(qd, 1, d->repo_type, -1, SQLITE_STATIC);
		sqlite3_bind_text(qd, 2, d->repo, -1, SQLITE_STATIC);
		bind_opt_text(qd, 3, d->revision);
		sqlite3_bind_text(qd, 4, d->path, -1, SQLITE_STATIC);
		bind_opt_text(qd, 5, d->sha256);
		sqlite3_bind_int64(qd, 6, (sqlite3_int64)d->size);
		sqlite3_bind_int64(qd, 7, (sqlite3_int64)d->bytes);
		sqlite3_bind_double(qd, 8, d->seconds);
		sqlite3_bind_int(qd, 9, d->connections);
		sqlite3_bind_int(qd, 10, d->retries);
		sqlite3_bind_text(qd, 11, d->result, -1, SQLITE_STATIC);
		bind_opt_text(qd, 12, d->error);
		bind_opt_text(qd, 13, d->endpoint);
		sqlite3_bind_int64(qd, 14, d->started_at);
		if (sqlite3_step(qd) != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "insert a download");
			goto out;
		}
	}
out:
	sqlite3_finalize(qb);
	sqlite3_finalize(qo);
	sqlite3_finalize(qd);
	return err;
}

enum hm_err store_flush(struct hm_ctx *ctx, struct store *st)
{
	enum hm_err err;

	if (!st->nblobs && !st->ndls)
		return HM_OK;
	if (st->readonly)
		return store_ro_fail(ctx, st, "record downloads");
	/* rows may only name blobs whose bytes are durable */
	if (st->need_sync) {
		if (syncfs(st->blobs_fd) < 0)
			return hm_fail(ctx, store_errno_err(errno), "cannot sync '%s': %s", st->dir,
				       strerror(errno));
		st->need_sync = 0;
	}
	if ((err = store_exec(ctx, st, "BEGIN IMMEDIATE")))
		return err;
	if ((err = flush_rows(ctx, st)) || (err = store_exec(ctx, st, "COMMIT"))) {
		store_rollback(st);
		return err;
	}
	for (size_t i = 0; i < st->ndls; i++)
		pending_dl_release(&st->dls[i]);
	if (st->ndls)
		store_stats_maintain(ctx, st);
	st->ndls = 0;
	st->nblobs = 0;
	return HM_OK;
}

enum hm_err store_queue_blob(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size,
			     const char *git_oid)
{
	if (pending_blob(st, sha256))
		return HM_OK;
	if (st->nblobs == st->capblobs) {
		size_t cap = st->capblobs ? st->capblobs * 2 : 64;
		void *p = realloc(st->blobs, cap * sizeof(*st->blobs));
		if (!p)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		st->blobs = p;
		st->capblobs = cap;
	}
	struct store_pending_blob *pb = &st->blobs[st->nblobs++];
	memcpy(pb->sha256, sha256, 65);
	snprintf(pb->git_oid, sizeof(pb->git_oid), "%s", git_oid ? git_oid : "");
	pb->size = size;
	return HM_OK;
}

enum hm_err store_blob_indexed(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size, int *yes)
{
	enum hm_err err = HM_OK;
	sqlite3_stmt *q = NULL;
	int rc;
	*yes = 0;
	if (pending_blob(st, sha256)) {
		*yes = pending_blob(st, sha256)->size == size;
		return HM_OK;
	}
	if ((err = store_prepare(ctx, st, "SELECT size FROM blobs WHERE sha256 = ?1", &q)))
		return err;
	sqlite3_bind_text(q, 1, sha256, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		*yes = (uint64_t)sqlite3_column_int64(q, 0) == size;
	else if (rc != SQLITE_DONE)
		err = store_db_fail(ctx, st, "look up a blob");
	sqlite3_finalize(q);
	return err;
}
