/* rows.c - index rows queued by a pull and written in one transaction by
 * store_flush: blobs adopted (a row only once the bytes are durable) and
 * downloads recorded. Below store.c, index.c and remote.c, which all flush. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "store-int.h"
#include "../util/util.h"

void store_pending_dl_release(struct store_pending_dl *p)
{
	for (size_t i = 0; i < sizeof(p->strs) / sizeof(p->strs[0]); i++)
		free(p->strs[i]);
}

struct store_pending_blob *store_pending_blob(struct store *st, const char *sha256)
{
	for (size_t i = 0; i < st->nblobs; i++)
		if (!strcmp(st->blobs[i].sha256, sha256))
			return &st->blobs[i];
	return NULL;
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
			store_pending_dl_release(p);
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
		store_pending_dl_release(&st->dls[i]);
	if (st->ndls)
		store_stats_maintain(ctx, st);
	st->ndls = 0;
	st->nblobs = 0;
	return HM_OK;
}

enum hm_err store_queue_blob(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size,
			     const char *git_oid)
{
	if (store_pending_blob(st, sha256))
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
	if (store_pending_blob(st, sha256)) {
		*yes = store_pending_blob(st, sha256)->size == size;
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
