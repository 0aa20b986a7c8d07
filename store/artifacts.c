/* artifacts.c - conversions of stored revisions (GGUF files made by
 * `hubmirror convert`): blobs like any other, recorded with the revision
 * and options they came from so a repeated conversion is a cache hit. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "store-int.h"
#include "../util/util.h"

static enum hm_err revision_id(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			       const char *commit, int64_t *id)
{
	sqlite3_stmt *q = NULL;
	enum hm_err err;
	int rc;
	if ((err = store_prepare(ctx, st, "SELECT r.id FROM revisions r JOIN repos p ON p.id = r.repo_id"
				 " WHERE p.type = ?1 AND p.name = ?2 AND r.commit_sha = ?3", &q)))
		return err;
	sqlite3_bind_text(q, 1, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, repo, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, commit, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		*id = sqlite3_column_int64(q, 0);
	else if (rc == SQLITE_DONE)
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "revision %.12s of %s '%s' not found in the store", commit, type,
			      repo);
	else
		err = store_db_fail(ctx, st, "look up a revision");
	sqlite3_finalize(q);
	return err;
}

static char *col_dup(sqlite3_stmt *q, int i)
{
	const unsigned char *s = sqlite3_column_text(q, i);
	return util_strdup(s ? (const char *)s : "");
}

static enum hm_err read_row(struct hm_ctx *ctx, sqlite3_stmt *q, struct store_artifact *a)
{
	const unsigned char *c = sqlite3_column_text(q, 2), *h = sqlite3_column_text(q, 5);
	memset(a, 0, sizeof(*a));
	a->repo_type = col_dup(q, 0);
	a->repo = col_dup(q, 1);
	a->format = col_dup(q, 3);
	a->options = col_dup(q, 4);
	snprintf(a->commit, sizeof(a->commit), "%s", c ? (const char *)c : "");
	snprintf(a->sha256, sizeof(a->sha256), "%s", h ? (const char *)h : "");
	a->size = (uint64_t)sqlite3_column_int64(q, 6);
	a->created_at = sqlite3_column_int64(q, 7);
	a->id = sqlite3_column_int64(q, 8);
	if (!a->repo_type || !a->repo || !a->format || !a->options)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	return HM_OK;
}

#define ART_COLS "repo_type, repo, commit_sha, format, options, sha256, size, created_at, id"

enum hm_err store_find_artifact(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				const char *commit, const char *format, const char *options,
				struct store_artifact *out, int *found)
{
	sqlite3_stmt *q = NULL;
	enum hm_err err;
	int64_t rid;
	int rc, present = 0;

	*found = 0;
	memset(out, 0, sizeof(*out));
	if ((err = revision_id(ctx, st, type, repo, commit, &rid)))
		return err;
	if ((err = store_prepare(ctx, st, "SELECT " ART_COLS " FROM artifacts WHERE revision_id = ?1 AND format = ?2"
				 " AND options = ?3", &q)))
		return err;
	sqlite3_bind_int64(q, 1, rid);
	sqlite3_bind_text(q, 2, format, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, options, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		err = read_row(ctx, q, out);
	else if (rc != SQLITE_DONE)
		err = store_db_fail(ctx, st, "look up an artifact");
	sqlite3_finalize(q);
	if (err || rc != SQLITE_ROW) {
		store_artifact_release(out);
		return err;
	}
	/* a row whose blob went missing is no hit: the conversion runs again */
	if ((err = store_blob_has(ctx, st, out->sha256, out->size, &present)) || !present) {
		store_artifact_release(out);
		return err;
	}
	*found = 1;
	return HM_OK;
}

enum hm_err store_record_artifact(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				  const char *commit, const char *format, const char *options, const char *sha256,
				  uint64_t size)
{
	sqlite3_stmt *q = NULL;
	enum hm_err err;
	int64_t rid;

	if (!util_is_hex(sha256, 64))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid sha256 '%s'", sha256);
	if ((err = store_flush(ctx, st)) || (err = store_exec(ctx, st, "BEGIN IMMEDIATE")))
		return err;
	if ((err = revision_id(ctx, st, type, repo, commit, &rid)))
		goto out;
	if ((err = store_prepare(ctx, st, "INSERT INTO artifacts(revision_id, repo_type, repo, commit_sha, format,"
				 " options, sha256, size, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
				 " ON CONFLICT(revision_id, format, options) DO UPDATE SET sha256 = excluded.sha256,"
				 " size = excluded.size, created_at = excluded.created_at", &q)))
		goto out;
	sqlite3_bind_int64(q, 1, rid);
	sqlite3_bind_text(q, 2, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, repo, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, commit, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 5, format, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 6, options, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 7, sha256, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 8, (sqlite3_int64)size);
	sqlite3_bind_int64(q, 9, util_unix_time());
	if (sqlite3_step(q) != SQLITE_DONE)
		err = store_db_fail(ctx, st, "record an artifact");
	else
		err = store_exec(ctx, st, "COMMIT");
	/* an S3 store: an object says the blob is used (gc on any node keeps it) */
	if (!err && st->remote && !st->backend->syncing(st))
		err = st->backend->put_artifact(ctx, st, type, repo, commit, format, options, sha256, size);
out:
	sqlite3_finalize(q);
	if (err)
		store_rollback(st);
	return err;
}

enum hm_err store_list_artifacts(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				 struct store_artifact **out, size_t *n)
{
	sqlite3_stmt *q = NULL;
	struct store_artifact *v = NULL;
	size_t cnt = 0, cap = 0;
	enum hm_err err;
	int rc;

	*out = NULL;
	*n = 0;
	if ((err = store_prepare(ctx, st, "SELECT " ART_COLS " FROM artifacts WHERE repo_type = ?1 AND repo = ?2"
				 " ORDER BY created_at DESC, id DESC", &q)))
		return err;
	sqlite3_bind_text(q, 1, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, repo, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (cnt == cap) {
			size_t nc = cap ? 2 * cap : 8;
			void *p = realloc(v, nc * sizeof(*v));
			if (!p) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				break;
			}
			v = p;
			cap = nc;
		}
		err = read_row(ctx, q, &v[cnt]);
		cnt++;
		if (err)
			break;
	}
	if (!err && rc != SQLITE_DONE)
		err = store_db_fail(ctx, st, "list artifacts");
	sqlite3_finalize(q);
	if (err) {
		store_artifacts_free(v, cnt);
		return err;
	}
	*out = v;
	*n = cnt;
	return HM_OK;
}

enum hm_err store_artifact_tmp(struct hm_ctx *ctx, struct store *st, const char *suffix, char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char r[8];
	char tag[17];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	ssize_t got = fd >= 0 ? read(fd, r, sizeof(r)) : -1;
	if (fd >= 0)
		close(fd);
	if (got != (ssize_t)sizeof(r))
		return hm_fail(ctx, HM_ERR_IO, "cannot read /dev/urandom");
	for (int i = 0; i < 8; i++) {
		tag[2 * i] = hex[r[i] >> 4];
		tag[2 * i + 1] = hex[r[i] & 15];
	}
	tag[16] = '\0';
	if (st->readonly)
		return store_ro_fail(ctx, st, "make a temp file");
	if (snprintf(buf, len, "%s/tmp/convert-%ld-%s%s", st->dir, (long)getpid(), tag, suffix) >= (int)len)
		return hm_fail(ctx, HM_ERR_IO, "store path too long");
	/* debris of conversions that were killed goes first */
	store_sweep_scratch(st, 0, NULL, NULL);
	/* The temp's lock, held until store_close, says its owner is alive; a
	 * pid alone could be reused or live in another pid namespace. */
	char *lock = util_asprintf("%s/tmp/convert-%ld-%s.lock", st->dir, (long)getpid(), tag);
	int *fds = realloc(st->tmp_locks, (st->ntmp_locks + 1) * sizeof(*fds));
	if (fds)
		st->tmp_locks = fds;
	char **paths = fds ? realloc(st->tmp_lock_paths, (st->ntmp_locks + 1) * sizeof(*paths)) : NULL;
	if (paths)
		st->tmp_lock_paths = paths;
	if (!lock || !fds || !paths) {
		free(lock);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	if (store_lock_path(st, lock, 1, &fd) < 0) {
		enum hm_err err = hm_fail(ctx, store_errno_err(errno), "cannot lock '%s': %s", lock, strerror(errno));
		free(lock);
		return err;
	}
	st->tmp_locks[st->ntmp_locks] = fd;
	st->tmp_lock_paths[st->ntmp_locks++] = lock;
	return HM_OK;
}

enum hm_err store_artifact_export(struct hm_ctx *ctx, struct store *st, const char *sha256, const char *dst)
{
	char blob[PATH_MAX], *tmp = util_asprintf("%s.tmp-%ld", dst, (long)getpid());
	char *dir = NULL, *slash;
	enum hm_err err;
	int fd;

	if (!tmp)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	store_blob_path(st, sha256, blob, sizeof(blob));
	unlink(tmp);
	if ((err = store_copy_file(ctx, blob, tmp, 1)))
		goto out;
	fd = open(tmp, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0) {
		err = hm_fail(ctx, store_errno_err(errno), "cannot write '%s': %s", dst, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	close(fd);
	if (rename(tmp, dst) < 0) {
		err = hm_fail(ctx, store_errno_err(errno), "cannot rename to '%s': %s", dst, strerror(errno));
		goto out;
	}
	dir = util_strdup(dst);
	slash = dir ? strrchr(dir, '/') : NULL;
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	if (dir && util_fsync_dir(slash ? dir : ".") < 0)
		err = hm_fail(ctx, HM_ERR_IO, "cannot sync the directory of '%s': %s", dst, strerror(errno));
out:
	if (err)
		unlink(tmp);
	free(tmp);
	free(dir);
	return err;
}
