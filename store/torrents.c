/* torrents.c - the BitTorrent v2 torrent of each blob (made by p2p/, kept
 * here so it is hashed once), and which repos list a blob (the swarm serves
 * only blobs some stored revision lists). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "store-int.h"
#include "../util/util.h"

enum hm_err store_torrent_get(struct hm_ctx *ctx, struct store *st, const char *sha256, int piece_size,
			      unsigned char **buf, size_t *len, char info_hash[65], int *found)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	int rc;

	*buf = NULL;
	*len = 0;
	*found = 0;
	if ((err = store_prepare(ctx, st, "SELECT torrent, info_hash FROM torrents WHERE sha256 = ?1 AND (?2 = 0 OR piece_size = ?2)",
				 &q)))
		return err;
	sqlite3_bind_text(q, 1, sha256, -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 2, piece_size);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const void *b = sqlite3_column_blob(q, 0);
		int n = sqlite3_column_bytes(q, 0);
		const char *ih = (const char *)sqlite3_column_text(q, 1);
		*buf = malloc(n > 0 ? (size_t)n : 1);
		if (!*buf) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		} else {
			if (n > 0)
				memcpy(*buf, b, (size_t)n);
			*len = (size_t)(n > 0 ? n : 0);
			snprintf(info_hash, 65, "%s", ih ? ih : "");
			*found = 1;
		}
	} else if (rc != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "read a torrent");
	}
	sqlite3_finalize(q);
	return err;
}

enum hm_err store_torrent_put(struct hm_ctx *ctx, struct store *st, const char *sha256, int piece_size,
			      const unsigned char *buf, size_t len, const char *info_hash)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;

	if ((err = store_prepare(ctx, st, "INSERT OR REPLACE INTO torrents(sha256, info_hash, piece_size, torrent)"
				 " VALUES (?1, ?2, ?3, ?4)", &q)))
		return err;
	sqlite3_bind_text(q, 1, sha256, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, info_hash, -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 3, piece_size);
	sqlite3_bind_blob(q, 4, buf, (int)len, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		err = store_db_fail(ctx, st, "record a torrent");
	sqlite3_finalize(q);
	return err;
}

void store_strings_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

enum hm_err store_blob_repos(struct hm_ctx *ctx, struct store *st, const char *sha256, char ***repos, size_t *n,
			     unsigned char **needs_token)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	char **v = NULL;
	unsigned char *nt = NULL;
	size_t cap = 0;
	int rc;

	*repos = NULL;
	*n = 0;
	if (needs_token)
		*needs_token = NULL;
	if ((err = store_prepare(ctx, st,
				 "SELECT p.type, p.name, max(p.needs_token) FROM files f JOIN revisions r ON r.id = f.revision_id"
				 " JOIN repos p ON p.id = r.repo_id WHERE f.sha256 = ?1 GROUP BY p.type, p.name"
				 " ORDER BY p.type, p.name",
				 &q)))
		return err;
	sqlite3_bind_text(q, 1, sha256, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		char key[512];
		snprintf(key, sizeof(key), "%s:%s", sqlite3_column_text(q, 0), sqlite3_column_text(q, 1));
		if (*n == cap) {
			size_t nc = cap ? cap * 2 : 4;
			char **nv = realloc(v, nc * sizeof(*nv));
			unsigned char *nn = nv ? realloc(nt, nc) : NULL;
			if (nv)
				v = nv;
			if (!nv || !nn) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				break;
			}
			nt = nn;
			cap = nc;
		}
		nt[*n] = sqlite3_column_int(q, 2) != 0;
		if (!(v[*n] = util_strdup(key))) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			break;
		}
		(*n)++;
	}
	if (!err && rc != SQLITE_DONE)
		err = store_db_fail(ctx, st, "list the repos of a blob");
	sqlite3_finalize(q);
	if (err) {
		store_strings_free(v, *n);
		free(nt);
		*n = 0;
		return err;
	}
	*repos = v;
	if (needs_token)
		*needs_token = nt;
	else
		free(nt);
	return HM_OK;
}

enum hm_err store_repo_set_needs_token(struct hm_ctx *ctx, struct store *st, const char *type, const char *name,
				       int needs)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;

	if ((err = store_prepare(ctx, st, "UPDATE repos SET needs_token = ?3 WHERE type = ?1 AND name = ?2", &q)))
		return err;
	sqlite3_bind_text(q, 1, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 3, needs != 0);
	if (sqlite3_step(q) != SQLITE_DONE)
		err = store_db_fail(ctx, st, "record that a repo needs a token");
	sqlite3_finalize(q);
	return err;
}

enum hm_err store_repo_needs_token(struct hm_ctx *ctx, struct store *st, const char *type, const char *name,
				   int *needs)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	int rc;

	*needs = 0;
	if ((err = store_prepare(ctx, st, "SELECT needs_token FROM repos WHERE type = ?1 AND name = ?2", &q)))
		return err;
	sqlite3_bind_text(q, 1, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		*needs = sqlite3_column_int(q, 0) != 0;
	else if (rc != SQLITE_DONE)
		err = store_db_fail(ctx, st, "read whether a repo needs a token");
	sqlite3_finalize(q);
	return err;
}

enum hm_err store_torrents_listed(struct hm_ctx *ctx, struct store *st, int piece_size, char (**sha)[65], size_t *n)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	char(*v)[65] = NULL;
	size_t cap = 0;
	int rc;

	*sha = NULL;
	*n = 0;
	if ((err = store_prepare(ctx, st,
				 "SELECT t.sha256 FROM torrents t WHERE (?1 = 0 OR t.piece_size = ?1) AND EXISTS"
				 " (SELECT 1 FROM files f WHERE f.sha256 = t.sha256)", &q)))
		return err;
	sqlite3_bind_int(q, 1, piece_size);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (*n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			char(*nv)[65] = realloc(v, nc * sizeof(*nv));
			if (!nv) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				break;
			}
			v = nv;
			cap = nc;
		}
		snprintf(v[*n], 65, "%s", sqlite3_column_text(q, 0));
		(*n)++;
	}
	if (!err && rc != SQLITE_DONE)
		err = store_db_fail(ctx, st, "list torrents");
	sqlite3_finalize(q);
	if (err) {
		free(v);
		*n = 0;
		return err;
	}
	*sha = v;
	return HM_OK;
}
