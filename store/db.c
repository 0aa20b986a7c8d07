/* db.c - the store's bottom layer, below every other file of store/ (which
 * all use it, and which it never calls): SQLite statements and the errors
 * they end in, blob and temp-file paths, per-key locks, and who else holds
 * the store. (curl keeps such shared helpers in lib/curlx/ for the same
 * reason: no file of the folder then calls another in a circle.) */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "store-int.h"
#include "../util/util.h"

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

void store_blob_path(const struct store *st, const char *sha256, char *buf, size_t len)
{
	snprintf(buf, len, "%s/blobs/sha256/%.2s/%s", st->dir, sha256, sha256);
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

/* Where key's lock lies in tmp/keys.lock: a 62-bit FNV-1a hash (positive
 * offsets; two keys share a byte once in 2^62, which only makes one wait). */
static off_t key_offset(const char *key)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *key; key++)
		h = (h ^ (unsigned char)*key) * 1099511628211ULL;
	return (off_t)(h & 0x3fffffffffffffffULL);
}

int store_key_lock(struct store *st, const char *key, int *fd)
{
	char path[PATH_MAX];
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = key_offset(key), .l_len = 1};
	int lfd;

	*fd = -1;
	/* One byte of one file per key, not a file per key: a file created and
	 * removed per blob costs ext4 a scan of recently freed inodes at every
	 * create, which grows with the number of files pulled. An open file
	 * description of its own per lock, so two locks of one process exclude
	 * each other as two processes' do; the lock goes with the last close. */
	snprintf(path, sizeof(path), "%s/tmp/" STORE_KEYS_LOCK, st->dir);
	lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lfd < 0)
		return -1;
	while (fcntl(lfd, F_OFD_SETLK, &fl) < 0) {
		int e = errno;
		if (e == EINTR)
			continue;
		close(lfd);
		errno = e == EACCES || e == EAGAIN ? EWOULDBLOCK : e;
		return -1;
	}
	*fd = lfd;
	return 0;
}

enum hm_err store_lock_try(struct hm_ctx *ctx, struct store *st, const char *key, int *fd)
{
	*fd = -1;
	if (!key_ok(key))
		return hm_fail(ctx, HM_ERR_USAGE, "invalid lock key '%s'", key ? key : "");
	if (st->readonly)
		return store_ro_fail(ctx, st, "lock a download");
	if (store_key_lock(st, key, fd) == 0)
		return HM_OK;
	if (errno == EWOULDBLOCK)
		return hm_fail(ctx, HM_ERR_LOCKED, "'%s' is locked by another process", key);
	return hm_fail(ctx, store_errno_err(errno), "cannot lock '%s' in '%s/tmp/" STORE_KEYS_LOCK "': %s", key,
		       st->dir, strerror(errno));
}

void store_unlock(struct store *st, const char *key, int fd)
{
	(void)st;
	(void)key;
	if (fd >= 0)
		close(fd);
}

void store_holders(const struct store *st, char *buf, size_t len)
{
	char path[PATH_MAX], line[512];
	struct stat sb;
	size_t used = 0;
	FILE *f;

	if (len)
		buf[0] = '\0';
	snprintf(path, sizeof(path), "%s/tmp/gc.lock", st->dir);
	if (stat(path, &sb) < 0 || !(f = fopen("/proc/locks", "re")))
		return;
	/* "1: FLOCK  ADVISORY  READ  1234 08:01:5678 0 EOF" ("-> " marks a waiter) */
	while (fgets(line, sizeof(line), f)) {
		char *p = strchr(line, ':'), type[16], comm[64] = "";
		unsigned maj, mnr;
		unsigned long long ino;
		long pid;
		if (!p)
			continue;
		p++;
		while (*p == ' ')
			p++;
		if (!strncmp(p, "->", 2))
			continue;
		if (sscanf(p, "%15s %*s %*s %ld %x:%x:%llu", type, &pid, &maj, &mnr, &ino) != 5 ||
		    strcmp(type, "FLOCK") || ino != (unsigned long long)sb.st_ino || maj != major(sb.st_dev) ||
		    mnr != minor(sb.st_dev) || pid == (long)getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
		FILE *c = fopen(path, "re");
		if (c) {
			if (fgets(comm, sizeof(comm), c))
				comm[strcspn(comm, "\n")] = '\0';
			fclose(c);
		}
		int n = snprintf(buf + used, len - used, "%spid %ld%s%s%s", used ? ", " : "", pid, *comm ? " (" : "",
				 comm, *comm ? ")" : "");
		if (n < 0 || (size_t)n >= len - used) {
			buf[used] = '\0';
			break;
		}
		used += (size_t)n;
	}
	fclose(f);
}
