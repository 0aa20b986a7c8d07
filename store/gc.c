/* gc.c - removes blobs no revision (or artifact) references, abandoned
 * partial downloads and the debris of interrupted conversions.
 *
 * A pull adopts blobs before it records its revision, so an unreferenced
 * blob may be one a running pull is about to use. Every open store holds
 * tmp/gc.lock shared; when gc can take it exclusively nobody else has the
 * store open and every unreferenced blob goes. Otherwise gc is careful: it
 * keeps recent blobs and files without rows, and says so.
 *
 * A partial download is what a later pull resumes: it stays while younger
 * than the caller's age (and always while a download holds its lock). */
#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "store-int.h"
#include "../util/util.h"

/* How old an unreferenced blob must be before a gc that shares the store removes it. */
#define GC_SHARED_GRACE_S 3600

struct victim {
	char sha256[65];
	uint64_t size;
};

static void tell(const struct store_gc_opts *o, const char *kind, const char *name, uint64_t bytes,
		 int removed, const char *why)
{
	struct store_gc_item it = {kind, name, bytes, removed, why};
	if (o && o->on_item)
		o->on_item(o->ud, &it);
}

/* Deletes the rows of unreferenced blobs in one transaction, then their
 * files: a crash in between leaves files without rows, never the reverse. */
static enum hm_err gc_blobs(struct hm_ctx *ctx, struct store *st, const struct store_gc_opts *o, int exclusive,
			    struct store_gc_result *r)
{
	enum hm_err err;
	sqlite3_stmt *sel = NULL, *del = NULL;
	struct victim *v = NULL;
	size_t n = 0, cap = 0;
	int64_t cutoff = exclusive ? INT64_MAX : util_unix_time() - GC_SHARED_GRACE_S;
	char path[PATH_MAX], name[128];
	int rc;

	if ((err = store_exec(ctx, st, "BEGIN IMMEDIATE")))
		return err;
	if ((err = store_prepare(ctx, st, "SELECT sha256, size, added_at FROM blobs b WHERE"
				 " NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = b.sha256) AND"
				 " NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.sha256 = b.sha256)", &sel)) ||
	    (err = store_prepare(ctx, st, "DELETE FROM blobs WHERE sha256 = ?1", &del)))
		goto out;
	while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
		const char *s = (const char *)sqlite3_column_text(sel, 0);
		uint64_t size = (uint64_t)sqlite3_column_int64(sel, 1);
		if (!s || !util_is_hex(s, 64))
			continue;
		snprintf(name, sizeof(name), "blobs/sha256/%.2s/%s", s, s);
		if (sqlite3_column_int64(sel, 2) >= cutoff) {
			r->blobs_kept++;
			r->bytes_kept += size;
			tell(o, "blob", name, size, 0, "unreferenced, but added within the hour while another process"
			     " has the store open (a pull may be about to record it)");
			continue;
		}
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
		v[n].size = size;
		n++;
	}
	if (rc != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "find unreferenced blobs");
		goto out;
	}
	for (size_t i = 0; i < n && !o->dry_run; i++) {
		sqlite3_reset(del);
		sqlite3_bind_text(del, 1, v[i].sha256, -1, SQLITE_STATIC);
		if (sqlite3_step(del) != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "remove a blob");
			goto out;
		}
	}
	if (!o->dry_run && (err = store_exec(ctx, st, "COMMIT")))
		goto out;
	for (size_t i = 0; i < n; i++) {
		store_blob_path(st, v[i].sha256, path, sizeof(path));
		if (!o->dry_run && unlink(path) < 0 && errno != ENOENT) {
			err = hm_fail(ctx, HM_ERR_IO, "cannot remove '%s': %s", path, strerror(errno));
			goto out;
		}
		r->blobs_removed++;
		r->bytes_removed += v[i].size;
		snprintf(name, sizeof(name), "blobs/sha256/%.2s/%s", v[i].sha256, v[i].sha256);
		tell(o, "blob", name, v[i].size, 1, "no stored revision or conversion uses it");
	}
out:
	sqlite3_finalize(sel);
	sqlite3_finalize(del);
	free(v);
	store_rollback(st);
	return err;
}

/* Blob files with no row: left by a crash between rename and flush. Only
 * removed when no other process could be about to flush their rows. */
static enum hm_err gc_orphans(struct hm_ctx *ctx, struct store *st, const struct store_gc_opts *o, int exclusive,
			      struct store_gc_result *r)
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
			if (lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
				continue;
			if (!exclusive) {
				r->orphans_kept++;
				tell(o, "orphan", path + strlen(st->dir) + 1, (uint64_t)sb.st_size, 0,
				     "a file without an index row, while another process has the store open (a pull"
				     " may be about to record it)");
				continue;
			}
			if (!o->dry_run && unlink(path) < 0)
				continue;
			r->blobs_removed++;
			r->bytes_removed += (uint64_t)sb.st_size;
			tell(o, "orphan", path + strlen(st->dir) + 1, (uint64_t)sb.st_size, 1,
			     "a file under blobs/ without an index row (left by a crash)");
		}
		closedir(sd);
		sd = NULL;
		if (exclusive && !o->dry_run)
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

/* What tmp/ holds for one download key. */
struct partial {
	char *key;
	uint64_t bytes;     /* .part + .state */
	int64_t mtime;      /* the newest of them */
	int files;          /* .part and .state present */
};

static int cmp_partial(const void *a, const void *b)
{
	return strcmp(((const struct partial *)a)->key, ((const struct partial *)b)->key);
}

static const char *days(int64_t s, char *buf, size_t len)
{
	if (s % 86400 == 0)
		snprintf(buf, len, "%lld day%s", (long long)(s / 86400), s == 86400 ? "" : "s");
	else
		snprintf(buf, len, "%lld s", (long long)s);
	return buf;
}

/* 1 when key names the temp of a running import or S3 transfer
 * ("bundle-<pid>-<n>", "s3-<sha256>-<pid>"): those take no per-key lock,
 * their pid says whether they are in use. */
static int temp_owner_alive(const char *key)
{
	const char *p = NULL;
	char *end;
	long pid;

	if (!strncmp(key, "bundle-", 7))
		p = key + 7;
	else if (!strncmp(key, "s3-", 3) && strrchr(key, '-') > key + 2)
		p = strrchr(key, '-') + 1;
	if (!p)
		return 0;
	pid = strtol(p, &end, 10);
	if (end == p || pid <= 0 || (*end && *end != '-'))
		return 0;
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* Takes key's lock, and the lock file <key>.lock that versions before
 * .keys.lock took (a pull of one may still run): 0 with both (*oldfd -1
 * when there is no such file), -1 when either is held. */
static int partial_lock(struct store *st, const char *key, const char *lock, int *fd, int *oldfd)
{
	*oldfd = -1;
	if (store_key_lock(st, key, fd) < 0)
		return -1;
	if (store_lock_path(st, lock, 0, oldfd) < 0 && errno != ENOENT) {
		close(*fd);
		*fd = -1;
		return -1;
	}
	return 0;
}

/* Partials (.part/.state) whose per-key lock is free belong to no running
 * download; they go once older than o->keep_partials_s. A lock file alone
 * goes too (taken first, so no download is using it). */
static enum hm_err gc_partials(struct hm_ctx *ctx, struct store *st, const struct store_gc_opts *o,
			       struct store_gc_result *r)
{
	char dir[PATH_MAX], path[PATH_MAX], lock[PATH_MAX], why[160], age[32];
	struct partial *v = NULL;
	size_t n = 0, cap = 0, k = 0;
	enum hm_err err = HM_OK;
	int64_t now = util_unix_time();
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/tmp", st->dir);
	d = opendir(dir);
	if (!d)
		return hm_fail(ctx, HM_ERR_IO, "cannot open '%s': %s", dir, strerror(errno));
	while ((e = readdir(d))) {
		struct stat sb;
		size_t stem;
		int data = 1;
		if (!has_suffix(e->d_name, ".part", &stem) && !has_suffix(e->d_name, ".state", &stem)) {
			if (!has_suffix(e->d_name, ".lock", &stem))
				continue;
			data = 0;
		}
		/* (no key starts with a dot: .keys.lock holds every key's lock) */
		if (!strncmp(e->d_name, "convert-", 8) || (stem == 2 && !strncmp(e->d_name, "gc", 2)) ||
		    e->d_name[0] == '.')
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int)sizeof(path) ||
		    lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
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
		v[n].key = util_strndup(e->d_name, stem);
		if (!v[n].key) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory collecting garbage");
			goto out;
		}
		v[n].bytes = data ? (uint64_t)sb.st_size : 0;
		v[n].mtime = data ? (int64_t)sb.st_mtime : INT64_MIN;
		v[n].files = data;
		n++;
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_partial);
	/* merge each key's entries into its first */
	for (size_t i = 0; i < n; i++) {
		if (k && !strcmp(v[k - 1].key, v[i].key)) {
			v[k - 1].bytes += v[i].bytes;
			v[k - 1].files += v[i].files;
			if (v[i].mtime > v[k - 1].mtime)
				v[k - 1].mtime = v[i].mtime;
			free(v[i].key);
			continue;
		}
		v[k++] = v[i];
	}
	n = k;
	for (size_t i = 0; i < n; i++) {
		char part[PATH_MAX], state[PATH_MAX];
		int fd = -1, oldfd = -1;
		if (snprintf(lock, sizeof(lock), "%s/%s.lock", dir, v[i].key) >= (int)sizeof(lock))
			continue;
		snprintf(path, sizeof(path), "tmp/%s.part", v[i].key);
		if (temp_owner_alive(v[i].key) || partial_lock(st, v[i].key, lock, &fd, &oldfd) < 0) {
			if (v[i].files) {
				r->partials_busy++;
				tell(o, "partial", path, v[i].bytes, 0, "a running download is using it");
			}
			continue;
		}
		if (!v[i].files) {
			/* a lock file alone is debris (a process killed holding it) */
			store_unlock_path(lock, oldfd);
			close(fd);
			continue;
		}
		if (o->keep_partials_s > 0 && now - v[i].mtime < o->keep_partials_s) {
			r->partials_young++;
			r->partial_bytes_young += v[i].bytes;
			snprintf(why, sizeof(why), "younger than %s: the same pull resumes it",
				 days(o->keep_partials_s, age, sizeof(age)));
			tell(o, "partial", path, v[i].bytes, 0, why);
			/* (a lock file is no data: a dry run removes it as well) */
			store_unlock_path(lock, oldfd);
			close(fd);
			continue;
		}
		if (!o->dry_run) {
			store_part_paths(st, v[i].key, part, state, sizeof(part));
			unlink(part);
			unlink(state);
		}
		store_unlock_path(lock, oldfd);
		close(fd);
		r->partials_removed++;
		r->partial_bytes_removed += v[i].bytes;
		snprintf(why, sizeof(why), "%s no download is using it",
			 o->keep_partials_s > 0 ? "older than the kept age, and" : "");
		tell(o, "partial", path, v[i].bytes, 1, why + (o->keep_partials_s > 0 ? 0 : 1));
	}
out:
	for (size_t i = 0; i < n; i++)
		free(v[i].key);
	free(v);
	closedir(d);
	return err;
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

/* Bytes of the files under path (or of path itself), without following links. */
static uint64_t path_bytes(const char *path, int depth)
{
	struct stat sb;
	struct dirent *e;
	uint64_t sum = 0;
	DIR *d;

	if (lstat(path, &sb) < 0)
		return 0;
	if (S_ISREG(sb.st_mode))
		return (uint64_t)sb.st_size;
	if (!S_ISDIR(sb.st_mode) || depth > 16 || !(d = opendir(path)))
		return 0;
	while ((e = readdir(d))) {
		char sub[PATH_MAX];
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
		    snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name) >= (int)sizeof(sub))
			continue;
		sum += path_bytes(sub, depth + 1);
	}
	closedir(d);
	return sum;
}

/* The owner of tmp/convert-<pid>-<tag>...: 1 gone, 0 alive (its lock is
 * held), -1 cannot tell (no lock, and its pid is alive or unreadable).
 * *lockfd receives its lock (taken) when it has one. */
static int convert_owner_gone(struct store *st, const char *dir, const char *name, int *lockfd, char *lock,
			      size_t len)
{
	const char *p = name + 8, *dash = strchr(p, '-');
	char *end;
	long pid;

	*lockfd = -1;
	if (!dash || strlen(dash + 1) < 16)
		return -1;
	pid = strtol(p, &end, 10);
	if (end != dash || pid <= 0)
		return -1;
	if (snprintf(lock, len, "%s/%.*s.lock", dir, (int)(dash + 17 - name), name) >= (int)len)
		return -1;
	if (store_lock_path(st, lock, 0, lockfd) == 0)
		return 1;
	if (errno != ENOENT)
		return 0;
	/* no lock file: a temp made before locks, or its lock already swept */
	return kill((pid_t)pid, 0) < 0 && errno == ESRCH ? 1 : -1;
}

void store_sweep_scratch(struct store *st, int all, const struct store_gc_opts *o, struct store_gc_result *r)
{
	char dir[PATH_MAX], p[PATH_MAX], lock[PATH_MAX];
	struct dirent *e;
	DIR *d;
	int dry = o && o->dry_run;

	snprintf(dir, sizeof(dir), "%s/tmp", st->dir);
	d = opendir(dir);
	if (!d)
		return;
	while ((e = readdir(d))) {
		int lockfd = -1, is_run = !strcmp(e->d_name, "run");
		size_t stem;
		uint64_t bytes;
		if (strncmp(e->d_name, "convert-", 8) && !(all && is_run))
			continue;
		/* a lock goes with its temp, below */
		if (has_suffix(e->d_name, ".lock", &stem))
			continue;
		if (snprintf(p, sizeof(p), "%s/%s", dir, e->d_name) >= (int)sizeof(p))
			continue;
		if (!is_run) {
			/* a held lock keeps its temp even from a gc alone: its owner
			 * may live in another pid namespace */
			int gone = convert_owner_gone(st, dir, e->d_name, &lockfd, lock, sizeof(lock));
			if (gone == 0 || (gone < 0 && !all))
				continue;
		}
		bytes = path_bytes(p, 0);
		if (!dry)
			nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		if (lockfd >= 0) {
			if (dry)
				close(lockfd);
			else
				store_unlock_path(lock, lockfd);
		}
		if (r && !is_run) {
			r->scratch_removed++;
			r->scratch_bytes_removed += bytes;
		}
		tell(o, "scratch", p + strlen(st->dir) + 1, bytes, 1,
		     is_run ? "the engine's checkouts, made again on demand" :
			      "the temp file of a conversion whose process is gone");
	}
	closedir(d);
	/* locks whose temp is gone (the conversion was killed after its temp went) */
	if (dry || !(d = opendir(dir)))
		return;
	while ((e = readdir(d))) {
		size_t stem;
		int fd;
		if (strncmp(e->d_name, "convert-", 8) || !has_suffix(e->d_name, ".lock", &stem) ||
		    snprintf(p, sizeof(p), "%s/%s", dir, e->d_name) >= (int)sizeof(p))
			continue;
		if (store_lock_path(st, p, 0, &fd) == 0)
			store_unlock_path(p, fd);
	}
	closedir(d);
}

/* *none = 1 when the index knows no revision and recorded no transfer
 * ever: a new, rebuilt or replaced index (after 'rm' of everything that was
 * pulled, the transfers stay); *blobs counts its blob rows. */
static enum hm_err no_revisions(struct hm_ctx *ctx, struct store *st, int *none, uint64_t *blobs)
{
	sqlite3_stmt *q = NULL;
	enum hm_err err;

	*none = 0;
	*blobs = 0;
	if ((err = store_prepare(ctx, st, "SELECT EXISTS (SELECT 1 FROM revisions) OR EXISTS (SELECT 1 FROM downloads),"
				 " (SELECT count(*) FROM blobs)", &q)))
		return err;
	if (sqlite3_step(q) != SQLITE_ROW) {
		err = store_db_fail(ctx, st, "count revisions");
	} else {
		*none = sqlite3_column_int64(q, 0) == 0;
		*blobs = (uint64_t)sqlite3_column_int64(q, 1);
	}
	sqlite3_finalize(q);
	return err;
}

enum hm_err store_gc(struct hm_ctx *ctx, struct store *st, const struct store_gc_opts *opts,
		     struct store_gc_result *r)
{
	static const struct store_gc_opts none = {0};
	const struct store_gc_opts *o = opts ? opts : &none;
	enum hm_err err;
	uint64_t nblobs;
	int exclusive, norev;

	memset(r, 0, sizeof(*r));
	if (st->readonly)
		return store_ro_fail(ctx, st, "collect garbage");
	if ((err = store_flush(ctx, st)))
		return err;
	if ((err = no_revisions(ctx, st, &norev, &nblobs)))
		return err;
	norev = norev && !o->force && (nblobs || store_has_blob_files(st->dir));
	/* converting our shared lock may drop it on failure; take it back then */
	exclusive = flock(st->gc_fd, LOCK_EX | LOCK_NB) == 0;
	if (norev && exclusive) {
		flock(st->gc_fd, LOCK_SH);
		return hm_fail(ctx, HM_ERR_DB,
			       "the index of '%s' knows no revision and no pull but the store holds blobs: gc would"
			       " delete them all (a lost or replaced index.db looks like this). 'hubmirror"
			       " rebuild-index' indexes them and pulling the repos again records their revisions"
			       " without downloading; 'hubmirror gc --force' deletes them", st->dir);
	}
	if (!exclusive)
		store_holders(st, r->holders, sizeof(r->holders));
	/* no revision yet while another process has the store open: a first
	 * pull is adopting its blobs; leave every blob alone */
	if (!norev && (err = gc_blobs(ctx, st, o, exclusive, r)))
		goto out;
	if (!norev && (err = gc_orphans(ctx, st, o, exclusive, r)))
		goto out;
	store_sweep_scratch(st, exclusive, o, r);
	err = gc_partials(ctx, st, o, r);
	if (!err && st->remote)
		err = st->backend->gc(ctx, st, r);
out:
	flock(st->gc_fd, LOCK_SH);
	return err;
}
