/* rebuild.c - the index against the blob files: rebuilding the index from
 * the blobs (after index.db was lost), and finding blobs it does not know. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include "store-int.h"
#include "../util/util.h"

/* How old a blob file without a row must be before verify reports it while
 * another process has the store open (a pull adopts blobs before it writes
 * their rows); gc waits as long. */
#define UNKNOWN_GRACE_S 3600

/* Calls fn for each file blobs/sha256/<2>/<64 hex> (the name is its
 * expected SHA-256); fn returns non-zero to stop with that error. */
static enum hm_err each_blob_file(struct hm_ctx *ctx, struct store *st,
				  enum hm_err (*fn)(void *ud, const char *path, const char *name), void *ud)
{
	char top[PATH_MAX], sub[PATH_MAX], path[PATH_MAX];
	struct dirent *e, *se;
	enum hm_err err = HM_OK;
	DIR *d, *sd;

	snprintf(top, sizeof(top), "%s/blobs/sha256", st->dir);
	d = opendir(top);
	if (!d)
		return errno == ENOENT ? HM_OK : hm_fail(ctx, HM_ERR_IO, "cannot open '%s': %s", top, strerror(errno));
	while (!err && (e = readdir(d))) {
		if (!util_is_hex(e->d_name, 2) || snprintf(sub, sizeof(sub), "%s/%s", top, e->d_name) >= (int)sizeof(sub))
			continue;
		if (!(sd = opendir(sub))) {
			err = hm_fail(ctx, HM_ERR_IO, "cannot open '%s': %s", sub, strerror(errno));
			break;
		}
		while (!err && (se = readdir(sd))) {
			if (!util_is_hex(se->d_name, 64) || strncmp(se->d_name, e->d_name, 2) ||
			    snprintf(path, sizeof(path), "%s/%s", sub, se->d_name) >= (int)sizeof(path))
				continue;
			if (hm_cancelled(ctx))
				err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
			else
				err = fn(ud, path, se->d_name);
		}
		closedir(sd);
	}
	closedir(d);
	return err;
}

/* *known = 1 when blobs has a row for sha256. */
static enum hm_err known_blob(struct hm_ctx *ctx, struct store *st, sqlite3_stmt *q, const char *sha256,
			      int *known)
{
	int rc;
	sqlite3_reset(q);
	sqlite3_bind_text(q, 1, sha256, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(q);
	*known = rc == SQLITE_ROW;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_db_fail(ctx, st, "look up a blob");
	return HM_OK;
}

struct rebuild {
	struct hm_ctx *ctx;
	struct store *st;
	sqlite3_stmt *q;
	store_blob_check_fn check;
	void (*on_bad)(void *ud, const char *path);
	void *ud;
	struct store_rebuild_result *r;
};

static enum hm_err rebuild_one(void *ud, const char *path, const char *name)
{
	struct rebuild *b = ud;
	struct store *st = b->st;
	enum hm_err err;
	char oid[41] = "";
	uint64_t size = 0;
	int known, ok;

	if ((err = known_blob(b->ctx, st, b->q, name, &known)))
		return err;
	if (known) {
		b->r->blobs_known++;
		return HM_OK;
	}
	ok = b->check(b->ud, path, name, oid, &size);
	if (ok < 0)
		return hm_fail(b->ctx, HM_ERR_CANCELLED, "interrupted");
	if (!ok) {
		b->r->blobs_bad++;
		if (b->on_bad)
			b->on_bad(b->ud, path);
		return HM_OK;
	}
	/* queued like an adopted blob; the file is already in place and was
	 * durable long ago, so no sync is owed */
	if (st->nblobs == st->capblobs) {
		size_t cap = st->capblobs ? st->capblobs * 2 : 64;
		void *p = realloc(st->blobs, cap * sizeof(*st->blobs));
		if (!p)
			return hm_fail(b->ctx, HM_ERR_NOMEM, "out of memory rebuilding the index");
		st->blobs = p;
		st->capblobs = cap;
	}
	struct store_pending_blob *pb = &st->blobs[st->nblobs++];
	memcpy(pb->sha256, name, 65);
	snprintf(pb->git_oid, sizeof(pb->git_oid), "%s", util_is_hex(oid, 40) ? oid : "");
	pb->size = size;
	b->r->blobs_added++;
	b->r->bytes_added += size;
	/* rows go in batches: a long rebuild that is interrupted keeps its work */
	if (st->nblobs >= 1024)
		return store_flush(b->ctx, st);
	return HM_OK;
}

enum hm_err store_rebuild_index(struct hm_ctx *ctx, struct store *st, store_blob_check_fn check, void *ud,
				void (*on_bad)(void *ud, const char *path), struct store_rebuild_result *r)
{
	struct rebuild b = {ctx, st, NULL, check, on_bad, ud, r};
	enum hm_err err, e2;

	memset(r, 0, sizeof(*r));
	if (st->readonly)
		return store_ro_fail(ctx, st, "rebuild the index");
	if ((err = store_prepare(ctx, st, "SELECT 1 FROM blobs WHERE sha256 = ?1", &b.q)))
		return err;
	err = each_blob_file(ctx, st, rebuild_one, &b);
	sqlite3_finalize(b.q);
	/* what was hashed is recorded even when the walk stopped early */
	e2 = store_flush(err ? &(struct hm_ctx){0} : ctx, st);
	return err ? err : e2;
}

struct unknown {
	struct hm_ctx *ctx;
	struct store *st;
	sqlite3_stmt *q;
	int alone;
	int64_t cutoff;
	void (*on_unknown)(void *ud, const char *path, uint64_t size);
	void *ud;
	uint64_t n;
};

static enum hm_err unknown_one(void *ud, const char *path, const char *name)
{
	struct unknown *u = ud;
	enum hm_err err;
	struct stat sb;
	int known;

	if ((err = known_blob(u->ctx, u->st, u->q, name, &known)) || known)
		return err;
	if (lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
		return HM_OK;
	/* rename sets ctime: a blob adopted moments ago may be a running pull's */
	if (!u->alone && (int64_t)sb.st_ctime > u->cutoff)
		return HM_OK;
	u->n++;
	if (u->on_unknown)
		u->on_unknown(u->ud, path, (uint64_t)sb.st_size);
	return HM_OK;
}

/* 1 when no other process has the store open (gc.lock can be taken
 * exclusively); the shared lock of a writable open is kept. */
static int store_alone(struct store *st)
{
	char path[PATH_MAX];
	int fd = st->gc_fd, alone;

	if (fd < 0) {
		snprintf(path, sizeof(path), "%s/tmp/gc.lock", st->dir);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return errno == ENOENT;
	}
	alone = flock(fd, LOCK_EX | LOCK_NB) == 0;
	if (fd != st->gc_fd)
		close(fd);
	else
		flock(fd, LOCK_SH);
	return alone;
}

enum hm_err store_check_index(struct hm_ctx *ctx, struct store *st,
			      void (*on_unknown)(void *ud, const char *path, uint64_t size),
			      void (*on_db)(void *ud, const char *line), void *ud, uint64_t *nunknown, int *db_ok)
{
	struct unknown u = {ctx, st, NULL, 0, 0, on_unknown, ud, 0};
	sqlite3_stmt *q = NULL;
	enum hm_err err;
	int rc, lines = 0;

	*nunknown = 0;
	*db_ok = 1;
	if ((err = store_flush(ctx, st)))
		return err;
	if ((err = store_prepare(ctx, st, "PRAGMA quick_check", &q)))
		return err;
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		const char *line = (const char *)sqlite3_column_text(q, 0);
		if (line && !strcmp(line, "ok"))
			continue;
		*db_ok = 0;
		/* quick_check stops at 100 lines itself */
		if (on_db && lines++ < 100)
			on_db(ud, line ? line : "(null)");
	}
	sqlite3_finalize(q);
	if (rc != SQLITE_DONE) {
		/* a corrupt file may fail the check itself */
		*db_ok = 0;
		if (on_db)
			on_db(ud, sqlite3_errmsg(st->db));
		return HM_OK;
	}
	u.alone = store_alone(st);
	u.cutoff = util_unix_time() - UNKNOWN_GRACE_S;
	if ((err = store_prepare(ctx, st, "SELECT 1 FROM blobs WHERE sha256 = ?1", &u.q)))
		return err;
	err = each_blob_file(ctx, st, unknown_one, &u);
	sqlite3_finalize(u.q);
	*nunknown = u.n;
	return err;
}
