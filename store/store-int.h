/* store-int.h - internals shared by the store/ files; nothing outside store/ includes it. */
#ifndef STORE_INT_H
#define STORE_INT_H

#include <sqlite3.h>
#include "store.h"

/* A blobs row (and maybe a blob_oids row) waiting for store_flush. */
struct store_pending_blob {
	char sha256[65];
	char git_oid[41]; /* "" when none */
	uint64_t size;
};

/* A downloads row waiting for store_flush; the strings are owned copies. */
struct store_pending_dl {
	struct store_download d;
	char *strs[8];
};

struct store {
	char *dir;
	sqlite3 *db;
	int schema;
	int blobs_fd;  /* blobs/sha256, for syncfs before rows of non-durable blobs */
	int gc_fd;     /* tmp/gc.lock, held shared while open; gc wants it exclusive */
	int need_sync; /* a non-durable blob was adopted since the last flush */
	struct store_pending_blob *blobs;
	size_t nblobs, capblobs;
	struct store_pending_dl *dls;
	size_t ndls, capdls;
};

/* Records a SQLite failure (with what we were doing) on ctx; SQLITE_FULL is NOSPC. */
enum hm_err store_db_fail(struct hm_ctx *ctx, struct store *st, const char *what);
/* Maps an errno to the library error (ENOSPC/EDQUOT -> NOSPC). */
enum hm_err store_errno_err(int e);
/* Prepares sql; on failure records the error. */
enum hm_err store_prepare(struct hm_ctx *ctx, struct store *st, const char *sql,
			  sqlite3_stmt **stmt) HM_MUST_CHECK;
/* Runs a statement without data (BEGIN, COMMIT, schema). */
enum hm_err store_exec(struct hm_ctx *ctx, struct store *st, const char *sql) HM_MUST_CHECK;
void store_rollback(struct store *st);
/* Creates the schema or brings it up to date (index.c). */
enum hm_err store_migrate(struct hm_ctx *ctx, struct store *st) HM_MUST_CHECK;
/* id of repo (type, name); HM_ERR_NOT_FOUND when it isn't stored. */
enum hm_err store_repo_id(struct hm_ctx *ctx, struct store *st, const char *type,
			  const char *repo, int64_t *id) HM_MUST_CHECK;
/* "model" and "dataset" are the only repo types the store knows. */
int store_type_ok(const char *type);
/* Splits a statistics filter: "type:name" gives *type (owned, free it) and
 * *name (inside repo); a bare name gives *type NULL; NULL gives both NULL. */
enum hm_err store_stats_filter(struct hm_ctx *ctx, const char *repo, char **type,
			       const char **name) HM_MUST_CHECK;
/* A set of byte strings (kmap.c), each with a dense index in insertion
 * order. Zero-initialised it is empty; the keys are owned copies (with a NUL
 * after the last byte) whose addresses never change. */
struct store_key {
	char *k;
	size_t len;
};
struct store_kmap {
	struct store_key *keys;
	size_t n, cap;
	uint64_t *tab;    /* open addressing: index + 1, high half the key's hash; 0 = empty */
	size_t tcap;      /* power of two */
	size_t last;      /* index + 1 of the key found last, 0 = none */
};
/* Index of key k[0..n) (*added = 1 when it was new); -1 when out of memory. */
int64_t store_kmap_get(struct store_kmap *m, const char *k, size_t n, int *added);
void store_kmap_release(struct store_kmap *m);

/* Copies src to a new file dst (mode 0444); used when hard links cannot cross filesystems. */
enum hm_err store_copy_file(struct hm_ctx *ctx, const char *src, const char *dst, int writable) HM_MUST_CHECK;

#endif
