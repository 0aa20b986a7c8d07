/* checkouts.c - the checkouts of stored revisions (`hubmirror checkout`,
 * sync --to), recorded so that verify can check the hard-linked ones and
 * --repair re-link them after repairing a blob. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "store-int.h"
#include "../util/util.h"

static const char *layout_name(enum store_layout l)
{
	return l == STORE_LAYOUT_HF_CACHE ? "hf-cache" : "files";
}

enum hm_err store_record_checkout(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				  const char *commit, const char *dir, enum store_layout layout, int copy)
{
	sqlite3_stmt *q = NULL;
	enum hm_err err;
	int rc;

	/* a reader who cannot write the store gets copies (no hard links into
	 * it), which need no record */
	if (st->readonly)
		return HM_OK;
	if ((err = store_exec(ctx, st, "BEGIN IMMEDIATE")))
		return err;
	/* a plain tree holds one revision: a newer checkout there replaces the record */
	if (layout == STORE_LAYOUT_FILES) {
		if ((err = store_prepare(ctx, st, "DELETE FROM checkouts WHERE dir = ?1 AND layout = 'files'", &q)))
			goto out;
		sqlite3_bind_text(q, 1, dir, -1, SQLITE_STATIC);
		if (sqlite3_step(q) != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "forget a checkout");
			goto out;
		}
		sqlite3_finalize(q);
		q = NULL;
	}
	if ((err = store_prepare(ctx, st, "INSERT INTO checkouts(revision_id, dir, layout, copy, created_at)"
				 " SELECT r.id, ?4, ?5, ?6, ?7 FROM revisions r JOIN repos p ON p.id = r.repo_id"
				 " WHERE p.type = ?1 AND p.name = ?2 AND r.commit_sha = ?3"
				 " ON CONFLICT(revision_id, dir, layout) DO UPDATE SET copy = excluded.copy,"
				 " created_at = excluded.created_at", &q)))
		goto out;
	sqlite3_bind_text(q, 1, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, repo, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, commit, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, dir, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 5, layout_name(layout), -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 6, copy != 0);
	sqlite3_bind_int64(q, 7, (sqlite3_int64)time(NULL));
	rc = sqlite3_step(q);
	if (rc != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "record a checkout");
		goto out;
	}
	if (!sqlite3_changes(st->db)) {
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "revision %.12s of %s '%s' not found in the store", commit, type, repo);
		goto out;
	}
	sqlite3_finalize(q);
	q = NULL;
	err = store_exec(ctx, st, "COMMIT");
out:
	sqlite3_finalize(q);
	if (err)
		store_rollback(st);
	return err;
}

enum hm_err store_list_checkouts(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				 struct store_checkout_info **out, size_t *n)
{
	sqlite3_stmt *q = NULL;
	struct store_checkout_info *v = NULL;
	size_t len = 0, cap = 0;
	enum hm_err err;
	int rc;

	*out = NULL;
	*n = 0;
	if ((err = store_prepare(ctx, st, "SELECT p.type, p.name, r.commit_sha, c.dir, c.layout, c.copy FROM checkouts c"
				 " JOIN revisions r ON r.id = c.revision_id JOIN repos p ON p.id = r.repo_id"
				 " WHERE (?1 IS NULL OR (p.type = ?1 AND p.name = ?2)) ORDER BY c.id", &q)))
		return err;
	if (type)
		sqlite3_bind_text(q, 1, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, repo ? repo : "", -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (len == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct store_checkout_info *nv = realloc(v, nc * sizeof(*nv));
			if (!nv) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				goto out;
			}
			v = nv;
			cap = nc;
		}
		struct store_checkout_info *c = &v[len++];
		const char *t = (const char *)sqlite3_column_text(q, 0), *r = (const char *)sqlite3_column_text(q, 1);
		const char *cm = (const char *)sqlite3_column_text(q, 2), *d = (const char *)sqlite3_column_text(q, 3);
		const char *l = (const char *)sqlite3_column_text(q, 4);
		memset(c, 0, sizeof(*c));
		snprintf(c->type, sizeof(c->type), "%s", t ? t : "");
		snprintf(c->commit, sizeof(c->commit), "%s", cm ? cm : "");
		c->repo = util_strdup(r ? r : "");
		c->dir = util_strdup(d ? d : "");
		c->layout = l && !strcmp(l, "hf-cache") ? STORE_LAYOUT_HF_CACHE : STORE_LAYOUT_FILES;
		c->copy = sqlite3_column_int(q, 5);
		if (!c->repo || !c->dir) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
	}
	if (rc != SQLITE_DONE)
		err = store_db_fail(ctx, st, "list checkouts");
out:
	sqlite3_finalize(q);
	if (err) {
		store_checkouts_free(v, len);
		return err;
	}
	*out = v;
	*n = len;
	return HM_OK;
}

void store_checkouts_free(struct store_checkout_info *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].repo);
		free(v[i].dir);
	}
	free(v);
}
