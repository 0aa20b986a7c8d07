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

/* The index of a store this user cannot write, as it is: a schema too old
 * (which only a writer could upgrade) or too new is refused. */
static enum hm_err open_readonly(struct hm_ctx *ctx, struct store *st, const char *dir, const char *path)
{
	enum hm_err err;
	int version = 0;

	if ((err = open_db_readonly(ctx, st, path, &version)))
		return err;
	sqlite3_busy_timeout(st->db, 30000);
	sqlite3_extended_result_codes(st->db, 1);
	if (version == 0)
		return not_a_store(ctx, dir, "its index.db has no hubmirror schema");
	if (version > store_schema_latest())
		return hm_fail(ctx, HM_ERR_DB, "'%s' has schema version %d, newer than this hubmirror knows (%d)", path,
			       version, store_schema_latest());
	if (version < store_schema_latest())
		return hm_fail(ctx, HM_ERR_DB, "'%s' has schema version %d and this hubmirror needs %d, which a"
			       " read-only user cannot upgrade: run any writing command (e.g. 'hubmirror gc"
			       " --dry-run') as a user who can write the store", path, version, store_schema_latest());
	st->schema = version;
	return HM_OK;
}

/* The writable side of store_open_local: gc.lock shared, index.db opened,
 * its schema judged, created or brought up to date. */
static enum hm_err open_writable(struct hm_ctx *ctx, struct store *st, const char *dir, const char *path,
				 enum store_mode mode)
{
	enum hm_err err = HM_OK;
	char tmp[PATH_MAX];

	/* Every open store holds gc.lock shared, so gc can tell whether a pull
	 * might be between adopting a blob and recording the revision. flock
	 * needs no write access: a read-only descriptor does for a file of
	 * another user's. */
	snprintf(tmp, sizeof(tmp), "%s/tmp/gc.lock", dir);
	st->gc_fd = open(tmp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (st->gc_fd < 0 && errno == EACCES)
		st->gc_fd = open(tmp, O_RDONLY | O_CLOEXEC);
	if (st->gc_fd < 0 || flock(st->gc_fd, LOCK_SH) < 0)
		return hm_fail(ctx, store_errno_err(errno), "cannot lock '%s': %s", tmp, strerror(errno));

	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | (mode == STORE_CREATE || mode == STORE_REBUILD ?
								      SQLITE_OPEN_CREATE : 0), NULL) != SQLITE_OK)
		return hm_fail(ctx, HM_ERR_DB, "cannot open '%s': %s", path,
			       st->db ? sqlite3_errmsg(st->db) : "out of memory");
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
		return err;
	if (mode != STORE_REBUILD && read_version(st->db) == 0) {
		if (store_has_blob_files(dir))
			return lost_index(ctx, dir);
		if (mode != STORE_CREATE)
			return not_a_store(ctx, dir, "its index.db has no hubmirror schema");
	}
	/* NORMAL is safe in WAL mode: a power loss may drop the last commits but
	 * never corrupts, and blobs are on disk before their rows anyway. */
	if ((err = set_wal(ctx, st)) ||
	    (err = store_exec(ctx, st, "PRAGMA synchronous=NORMAL")) ||
	    (err = store_exec(ctx, st, "PRAGMA foreign_keys=ON")) ||
	    /* up to 32 MiB of pages (SQLite's default is 2 MiB, allocated as
	     * used): the indexes keyed by SHA-256 take rows at random places,
	     * and a repo of 100,000 files otherwise reads a page back from the
	     * OS for nearly every row it adds */
	    (err = store_exec(ctx, st, "PRAGMA cache_size=-32768")))
		return err;
	return store_migrate(ctx, st);
}

enum hm_err store_open_local(struct hm_ctx *ctx, const char *dir, enum store_mode mode, struct store **out)
{
	enum hm_err err = HM_OK;
	struct store *st;
	char path[PATH_MAX], tmp[PATH_MAX], *db_name = NULL;
	struct stat sb;
	int have_index;

	*out = NULL;
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
		if ((err = open_readonly(ctx, st, dir, path)))
			goto out;
		*out = st;
		st = NULL;
		goto out;
	}

	if ((err = open_writable(ctx, st, dir, path, mode)))
		goto out;
	*out = st;
	st = NULL;
out:
	if (st)
		store_close(st);
	return err;
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
		store_sc_builder_free(st->sc);
		sqlite3_close_v2(st->db);
	}
	for (size_t i = 0; i < st->ndls; i++)
		store_pending_dl_release(&st->dls[i]);
	free(st->dls);
	free(st->blobs);
	if (st->remote)
		st->backend->free(st->remote);
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
		return st->backend->blob_has(ctx, st, sha256, size, present);
	if (store_pending_blob(st, sha256)) {
		indexed = store_pending_blob(st, sha256)->size == size;
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
	if (st->remote && (err = st->backend->upload(ctx, st, tmp_path, sha256, size)))
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

enum hm_err store_blob_local(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size)
{
	return st->remote ? st->backend->blob_local(ctx, st, sha256, size) : HM_OK;
}
