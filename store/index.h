/* index.h - what the store's index records of repos: revisions, their files
 * and refs, listings, removal; and rebuilding the index from the blobs. */
#ifndef STORE_INDEX_H
#define STORE_INDEX_H

#include "store.h"


/* One file of a revision, as recorded in the index. */
struct store_file {
	char *path;         /* repo-relative, validated */
	uint64_t size;
	char sha256[65];    /* content SHA-256 (the blob name) */
	char git_oid[41];   /* git blob oid from the hub ("" if unknown); for LFS files the pointer's oid */
	int lfs;
};

struct store_repo_info {
	char type[16];
	char *name;
	size_t nrevisions;
	uint64_t bytes;         /* sum of file sizes of all revisions (logical) */
	int64_t last_pulled;    /* newest revision's pulled_at (pull or pull-through); 0 if none */
};

struct store_rev_info {
	char commit[41];
	char *refs;             /* comma-separated ref names pointing here now ("" if none) */
	int64_t pulled_at;
	size_t nfiles;
	uint64_t bytes;
};

/* Records a complete revision in one transaction (after flushing queued
 * rows): upserts the repo, the revision (commit, pulled_at), replaces its
 * files, and when ref is non-NULL points ref at commit (keeping history of
 * which commits a ref pointed at and when). Every file's blob must already
 * be in the index. type is "model" or "dataset". */
enum hm_err store_record_revision(struct hm_ctx *ctx, struct store *st, const char *type,
				  const char *repo, const char *commit, const char *ref,
				  const struct store_file *files, size_t n) HM_MUST_CHECK;

/* Resolves rev for a stored repo: NULL means the ref "main", else the most
 * recently pulled revision; a ref name; a full commit; or a unique commit
 * prefix of at least 7 hex. HM_ERR_NOT_FOUND if the repo or rev isn't stored. */
enum hm_err store_resolve(struct hm_ctx *ctx, struct store *st, const char *type,
			  const char *repo, const char *rev, char commit[41]) HM_MUST_CHECK;

/* Listing. Arrays are owned by the caller and freed with the _free helpers. */
enum hm_err store_list_repos(struct hm_ctx *ctx, struct store *st,
			     struct store_repo_info **out, size_t *n) HM_MUST_CHECK;
enum hm_err store_list_revisions(struct hm_ctx *ctx, struct store *st, const char *type,
				 const char *repo, struct store_rev_info **out, size_t *n) HM_MUST_CHECK;
enum hm_err store_list_files(struct hm_ctx *ctx, struct store *st, const char *type,
			     const char *repo, const char *commit,
			     struct store_file **out, size_t *n) HM_MUST_CHECK;
void store_repo_info_free(struct store_repo_info *v, size_t n);
/* A number that changes when repos or revisions are added, removed or
 * pulled again (what store_list_repos returns may then differ): for caches. */
enum hm_err store_repos_version(struct hm_ctx *ctx, struct store *st, uint64_t *v) HM_MUST_CHECK;
/* One file of a stored revision (out->path owned by the caller, free it);
 * HM_ERR_NOT_FOUND when the repo, revision or path isn't stored. */
enum hm_err store_find_file(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			    const char *commit, const char *path, struct store_file *out,
			    int64_t *pulled_at) HM_MUST_CHECK;
void store_rev_info_free(struct store_rev_info *v, size_t n);
void store_files_free(struct store_file *v, size_t n);

/* Removes a revision (or all revisions when commit is NULL) of a repo from
 * the index (blobs stay until gc). HM_ERR_NOT_FOUND if nothing matched. */
enum hm_err store_rm(struct hm_ctx *ctx, struct store *st, const char *type,
		     const char *repo, const char *commit) HM_MUST_CHECK;

/* ---- rebuilding the index (rebuild-index) ---- */

/* A blob file whose name the caller must check: path is its file, sha256
 * the name. The callback hashes it and returns 1 when the content has that
 * SHA-256 (filling git_oid, the git blob oid, and size), 0 when not, -1 to
 * stop (cancelled). The store never hashes (verify/ does). */
typedef int (*store_blob_check_fn)(void *ud, const char *path, const char *sha256, char git_oid[41],
				   uint64_t *size);
struct store_rebuild_result {
	uint64_t blobs_known;     /* already in the index */
	uint64_t blobs_added, bytes_added;
	uint64_t blobs_bad;       /* content does not match the name: left as they are, not indexed */
};
/* Indexes every blob file the index does not know (a store opened with
 * STORE_REBUILD after its index.db was lost, or an index restored from an
 * older backup): each is hashed through check, then gets its blobs row and
 * git oid row, so a later pull finds it without downloading. Revisions are
 * not recreated (pull them again: nothing is downloaded). on_bad (may be
 * NULL) hears of each blob whose content does not match its name. */
enum hm_err store_rebuild_index(struct hm_ctx *ctx, struct store *st, store_blob_check_fn check, void *ud,
				void (*on_bad)(void *ud, const char *path), struct store_rebuild_result *r) HM_MUST_CHECK;
/* Blob files under blobs/ the index has no row for (on_unknown hears each,
 * with its path and size), and SQLite's PRAGMA quick_check of index.db
 * (*db_ok = 0 and on_db hears each line it reports when it is not "ok").
 * Blob files younger than an hour are skipped while another process has
 * the store open: a pull may be about to record them. */
enum hm_err store_check_index(struct hm_ctx *ctx, struct store *st,
			      void (*on_unknown)(void *ud, const char *path, uint64_t size),
			      void (*on_db)(void *ud, const char *line), void *ud, uint64_t *nunknown,
			      int *db_ok) HM_MUST_CHECK;

#endif
