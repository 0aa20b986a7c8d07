/* gc.c - removes blobs no revision (or artifact) references and abandoned partial downloads.
 *
 * A pull adopts blobs before it records its revision, so an unreferenced
 * blob may be one a running pull is about to use. Every open store holds
 * tmp/gc.lock shared; when gc can take it exclusively nobody else has the
 * store open and everything unreferenced goes. Otherwise gc is careful: it
 * keeps recent blobs, files without rows and lock files. */
#include <dirent.h>
#include <ftw.h>
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

/* How old an unreferenced blob must be before a gc that shares the store removes it. */
#define GC_SHARED_GRACE_S 3600

struct victim {
	char sha256[65];
	uint64_t size;
};

/* Deletes the rows of unreferenced blobs in one transaction, then their
 * files: a crash in between leaves files without rows, never the reverse. */
static enum hm_err gc_blobs(struct hm_ctx *ctx, struct store *st, int exclusive,
			    struct store_gc_result *r)
{
	enum hm_err err;
	sqlite3_stmt *sel = NULL, *del = NULL;
	struct victim *v = NULL;
	size_t n = 0, cap = 0;
	int64_t cutoff = exclusive ? INT64_MAX : util_unix_time() - GC_SHARED_GRACE_S;
	char path[PATH_MAX];
	int rc;

	if ((err = store_exec(ctx, st, "BEGIN IMMEDIATE")))
		return err;
	if ((err = store_prepare(ctx, st, "SELECT sha256, size FROM blobs b WHERE added_at < ?1 AND"
				 " NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = b.sha256) AND"
				 " NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.sha256 = b.sha256)", &sel)) ||
	    (err = store_prepare(ctx, st, "DELETE FROM blobs WHERE sha256 = ?1", &del)))
		goto out;
	sqlite3_bind_int64(sel, 1, cutoff);
	while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
		const char *s = (const char *)sqlite3_column_text(sel, 0);
		if (!s || !util_is_hex(s, 64))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			void *p = realloc(v, nc * sizeof(*v));
			if (!p) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory collecting garbage");
				goto out;
			}
			v = p;
			cap = nc;
		}
		memcpy(v[n].sha256, s, 65);
		v[n].size = (uint64_t)sqlite3_column_int64(sel, 1);
		n++;
	}
	if (rc != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "find unreferenced blobs");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		sqlite3_reset(del);
		sqlite3_bind_text(del, 1, v[i].sha256, -1, SQLITE_STATIC);
		if (sqlite3_step(del) != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "remove a blob");
			goto out;
		}
	}
	if ((err = store_exec(ctx, st, "COMMIT")))
		goto out;
	for (size_t i = 0; i < n; i++) {
		store_blob_path(st, v[i].sha256, path, sizeof(path));
		if (unlink(path) < 0 && errno != ENOENT) {
			err = hm_fail(ctx, HM_ERR_IO, "cannot remove '%s': %s", path, strerror(errno));
			goto out;
		}
		r->blobs_removed++;
		r->bytes_removed += v[i].size;
	}
out:
	sqlite3_finalize(sel);
	sqlite3_finalize(del);
	free(v);
	store_rollback(st);
	return err;
}

/* Blob files with no row: left by a crash between rename and flush. Only
 * safe when no other process could be about to flush their rows. */
static enum hm_err gc_orphans(struct hm_ctx *ctx, struct store *st, struct store_gc_result *r)
{
	enum hm_err err = HM_OK;
	sqlite3_stmt *q = NULL;
	char top[PATH_MAX], sub[PATH_MAX], path[PATH_MAX];
	DIR *d = NULL, *sd = NULL;
	struct dirent *e, *se;

	snprintf(top, sizeof(top), "%s/blobs/sha256", st->dir);
	d = opendir(top);
	if (!d)
		return hm_fail(ctx, HM_ERR_IO, "cannot open '%s': %s", top, strerror(errno));
	if ((err = store_prepare(ctx, st, "SELECT 1 FROM blobs WHERE sha256 = ?1", &q)))
		goto out;
	while ((e = readdir(d))) {
		if (strlen(e->d_name) != 2 || !util_is_hex(e->d_name, 2))
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", top, e->d_name) >= (int)sizeof(sub))
			continue;
		sd = opendir(sub);
		if (!sd)
			continue;
		while ((se = readdir(sd))) {
			struct stat sb;
			int rc;
			if (se->d_name[0] == '.')
				continue;
			if (snprintf(path, sizeof(path), "%s/%s", sub, se->d_name) >= (int)sizeof(path))
				continue;
			if (util_is_hex(se->d_name, 64) && !strncmp(se->d_name, e->d_name, 2)) {
				sqlite3_reset(q);
				sqlite3_bind_text(q, 1, se->d_name, -1, SQLITE_TRANSIENT);
				rc = sqlite3_step(q);
				if (rc == SQLITE_ROW)
					continue;
				if (rc != SQLITE_DONE) {
					err = store_db_fail(ctx, st, "look up a blob");
					goto out;
				}
			}
			if (lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode) || unlink(path) < 0)
				continue;
			r->blobs_removed++;
			r->bytes_removed += (uint64_t)sb.st_size;
		}
		closedir(sd);
		sd = NULL;
		rmdir(sub); /* only succeeds when empty */
	}
out:
	if (sd)
		closedir(sd);
	closedir(d);
	sqlite3_finalize(q);
	return err;
}

static int has_suffix(const char *s, const char *suf, size_t *stem)
{
	size_t n = strlen(s), m = strlen(suf);
	if (n <= m || strcmp(s + n - m, suf))
		return 0;
	*stem = n - m;
	return 1;
}

/* Partials (.part/.state) whose per-key lock is free belong to no running
 * download; a stale .lock alone goes too when gc owns the store. */
static enum hm_err gc_partials(struct hm_ctx *ctx, struct store *st, int exclusive,
			       struct store_gc_result *r)
{
	char dir[PATH_MAX], lock[PATH_MAX], part[PATH_MAX], state[PATH_MAX];
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/tmp", st->dir);
	d = opendir(dir);
	if (!d)
		return hm_fail(ctx, HM_ERR_IO, "cannot open '%s': %s", dir, strerror(errno));
	while ((e = readdir(d))) {
		char key[256];
		size_t stem;
		int fd, removed = 0, is_lock = 0;

		if (!has_suffix(e->d_name, ".part", &stem) && !has_suffix(e->d_name, ".state", &stem)) {
			if (!exclusive || !has_suffix(e->d_name, ".lock", &stem))
				continue;
			is_lock = 1;
		}
		if (stem >= sizeof(key))
			continue;
		memcpy(key, e->d_name, stem);
		key[stem] = '\0';
		if (!strcmp(key, "gc"))
			continue;
		if (snprintf(lock, sizeof(lock), "%s/%s.lock", dir, key) >= (int)sizeof(lock))
			continue;
		fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			close(fd);
			continue;
		}
		store_part_paths(st, key, part, state, sizeof(part));
		removed += unlink(part) == 0;
		removed += unlink(state) == 0;
		/* with the store to ourselves nobody can be opening this lock */
		if (exclusive)
			unlink(lock);
		close(fd);
		if (removed && !is_lock)
			r->partials_removed++;
	}
	closedir(d);
	return HM_OK;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	/* never chmod here: checkout files are hard links sharing the blobs' inodes */
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0; /* keep going past what cannot be removed */
}

/* With the store to ourselves: debris of interrupted conversions
 * (tmp/convert-*) and the engine's checkouts (tmp/run/, hard links that
 * run/smoke recreate on demand). */
static void gc_scratch(struct store *st, struct store_gc_result *r)
{
	char dir[PATH_MAX], p[PATH_MAX];
	struct dirent *e;
	DIR *d;
	snprintf(dir, sizeof(dir), "%s/tmp", st->dir);
	d = opendir(dir);
	if (!d)
		return;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "convert-", 8) && strcmp(e->d_name, "run"))
			continue;
		if (snprintf(p, sizeof(p), "%s/%s", dir, e->d_name) >= (int)sizeof(p))
			continue;
		nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		if (!strncmp(e->d_name, "convert-", 8))
			r->partials_removed++;
	}
	closedir(d);
}

enum hm_err store_gc(struct hm_ctx *ctx, struct store *st, struct store_gc_result *r)
{
	enum hm_err err;
	int exclusive;

	memset(r, 0, sizeof(*r));
	if ((err = store_flush(ctx, st)))
		return err;
	/* converting our shared lock may drop it on failure; take it back then */
	exclusive = flock(st->gc_fd, LOCK_EX | LOCK_NB) == 0;
	if ((err = gc_blobs(ctx, st, exclusive, r)))
		goto out;
	if (exclusive && (err = gc_orphans(ctx, st, r)))
		goto out;
	if (exclusive)
		gc_scratch(st, r);
	err = gc_partials(ctx, st, exclusive, r);
	if (!err && st->remote)
		err = store_remote_gc(ctx, st, r);
out:
	flock(st->gc_fd, LOCK_SH);
	return err;
}
