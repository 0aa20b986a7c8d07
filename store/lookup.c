/* lookup.c - point lookups the server needs on every request (one file of a
 * revision), without listing the whole revision. */
#include <stdio.h>
#include <string.h>
#include "store-int.h"
#include "../util/util.h"

enum hm_err store_find_file(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			    const char *commit, const char *path, struct store_file *out, int64_t *pulled_at)
{
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	int64_t repo_id;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((err = store_repo_id(ctx, st, type, repo, &repo_id)))
		return err;
	if ((err = store_prepare(ctx, st,
				 "SELECT f.path, f.size, f.sha256, f.git_oid, f.lfs, r.pulled_at FROM revisions r"
				 " JOIN files f ON f.revision_id = r.id"
				 " WHERE r.repo_id = ?1 AND r.commit_sha = ?2 AND f.path = ?3", &q)))
		return err;
	sqlite3_bind_int64(q, 1, repo_id);
	sqlite3_bind_text(q, 2, commit, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, path, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_DONE) {
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "'%s' not found in %s '%s' at %s", path, type, repo, commit);
	} else if (rc != SQLITE_ROW) {
		err = store_db_fail(ctx, st, "look up a file");
	} else {
		const char *sha = (const char *)sqlite3_column_text(q, 2);
		const char *oid = (const char *)sqlite3_column_text(q, 3);
		out->path = util_strdup((const char *)sqlite3_column_text(q, 0));
		out->size = (uint64_t)sqlite3_column_int64(q, 1);
		snprintf(out->sha256, sizeof(out->sha256), "%s", sha ? sha : "");
		snprintf(out->git_oid, sizeof(out->git_oid), "%s", oid ? oid : "");
		out->lfs = sqlite3_column_int(q, 4);
		if (pulled_at)
			*pulled_at = sqlite3_column_int64(q, 5);
		if (!out->path)
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	sqlite3_finalize(q);
	return err;
}
