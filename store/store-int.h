/* store-int.h - internals shared by the store/ files; nothing outside store/ includes it. */
#ifndef STORE_INT_H
#define STORE_INT_H

#include <sqlite3.h>
#include <string.h>
#include "store.h"
#include "artifacts.h"
#include "checkout.h"
#include "gc.h"
#include "index.h"
#include "smoke.h"
#include "stats.h"
#include "torrents.h"

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

struct store_remote; /* remote.c: the S3 bucket behind an s3:// store */

/* A second blob backend behind a store (remote.c: an S3 bucket). store.c
 * index.c, artifacts.c, checkout.c and gc.c call it through this table, never
 * by name: the backend opens
 * a local store as its cache and so sits above them (SQLite's VFS is the
 * model). */
struct store_backend {
	void (*free)(struct store_remote *r);
	/* store_blob_has of such a store */
	enum hm_err (*blob_has)(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size,
				int *present);
	/* a verified temp file into the backend, before it is adopted locally */
	enum hm_err (*upload)(struct hm_ctx *ctx, struct store *st, const char *tmp_path, const char *sha256,
			      uint64_t size);
	/* after a revision is recorded, and before its rows go */
	enum hm_err (*put_revision)(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				    const char *commit, const char *ref);
	enum hm_err (*rm)(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			  const char *commit);
	/* store_blob_local of such a store */
	enum hm_err (*blob_local)(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size);
	/* the backend's side of gc */
	enum hm_err (*gc)(struct hm_ctx *ctx, struct store *st, struct store_gc_result *r);
	/* after an artifact is recorded */
	enum hm_err (*put_artifact)(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				    const char *commit, const char *format, const char *options, const char *sha256,
				    uint64_t size);
	/* 1 while the index is refilled from the backend (nothing is written back) */
	int (*syncing)(const struct store *st);
};

struct store {
	char *dir;
	struct store_remote *remote; /* NULL for a local store */
	const struct store_backend *backend; /* set with remote */
	sqlite3 *db;
	int schema;
	int blobs_fd;  /* blobs/sha256, for syncfs before rows of non-durable blobs */
	int gc_fd;     /* tmp/gc.lock, held shared while open; gc wants it exclusive (-1 read-only) */
	int readonly;  /* opened read-only (store_readonly) */
	int *tmp_locks; /* held locks of this process's temp files (tmp/convert-*.lock) */
	char **tmp_lock_paths;
	size_t ntmp_locks;
	char *db_name; /* what a second read connection opens: index.db's path, or its immutable URI */
	int db_flags;  /* SQLITE_OPEN_URI for the URI */
	int need_sync; /* a non-durable blob was adopted since the last flush */
	struct store_sc_builder *sc; /* the statistics packer between flushes (statcache.c), or NULL */
	struct store_pending_blob *blobs;
	size_t nblobs, capblobs;
	struct store_pending_dl *dls;
	size_t ndls, capdls;
};

/* ---- db.c: below every other file of store/ ---- */

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
/* Takes the lock file path exclusively without blocking (creating it when
 * create is set): 0 and *fd on success; -1 with errno (EWOULDBLOCK: held,
 * ENOENT: no such lock) otherwise. Lock files are removed on release
 * (store_unlock_path), so a lock on an inode the path no longer names is
 * retried. */
int store_lock_path(struct store *st, const char *path, int create, int *fd);
/* Removes the lock file and releases it. Accepts fd -1. */
void store_unlock_path(const char *path, int fd);
/* The per-key locks of downloads (store_lock_try): one byte each of this
 * file in tmp/, never removed (a name no key can have). */
#define STORE_KEYS_LOCK ".keys.lock"
/* Takes key's lock without blocking: 0 and *fd (released by close) on
 * success; -1 with errno (EWOULDBLOCK: held, by this process too) otherwise.
 * The key is not checked: callers pass key_ok keys. */
int store_key_lock(struct store *st, const char *key, int *fd);
/* Removes the temp files in tmp/ of conversions whose process is gone
 * (their lock tmp/convert-<pid>-<tag>.lock is free, or without one their
 * pid is dead); with all set (gc holding the store alone) also those
 * without a lock whatever their pid, and the engine's tmp/run checkouts. A
 * held lock always keeps its temp. Counts into r and tells o when non-NULL. */
void store_sweep_scratch(struct store *st, int all, const struct store_gc_opts *o, struct store_gc_result *r);
/* The error a write to a read-only store gives. */
enum hm_err store_ro_fail(struct hm_ctx *ctx, struct store *st, const char *what);
/* 1 when blobs/sha256/<2 hex>/ under dir holds at least one file named by 64 hex digits. */
int store_has_blob_files(const char *dir);
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

/* ---- store.c ---- */

/* store_open_mode of a local directory (open.c sends s3:// URIs to
 * store_remote_open, which opens its cache with this). */
enum hm_err store_open_local(struct hm_ctx *ctx, const char *dir, enum store_mode mode,
			     struct store **out) HM_MUST_CHECK;

/* ---- rows.c: rows queued for store_flush ---- */

/* The queued blobs row of sha256, or NULL. */
struct store_pending_blob *store_pending_blob(struct store *st, const char *sha256);
/* Frees the strings of a queued downloads row. */
void store_pending_dl_release(struct store_pending_dl *p);

/* ---- the S3 blob backend (remote.c) ---- */

/* Opens an s3://BUCKET[/PREFIX] store: its index is a cache in a local
 * directory, refreshed from the bucket's revision objects. */
enum hm_err store_remote_open(struct hm_ctx *ctx, const char *uri, struct store **out) HM_MUST_CHECK;
void store_remote_free(struct store_remote *r);
/* Remote side of store_blob_has (index, else a HEAD of the object). */
enum hm_err store_remote_blob_has(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size,
				  int *present) HM_MUST_CHECK;
/* Uploads a verified temp file as the blob's object (before it is adopted locally). */
enum hm_err store_remote_upload(struct hm_ctx *ctx, struct store *st, const char *tmp_path, const char *sha256,
				uint64_t size) HM_MUST_CHECK;
/* Writes the revision object (and the ref's) after the revision is recorded. */
enum hm_err store_remote_put_revision(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				      const char *commit, const char *ref) HM_MUST_CHECK;
/* Deletes the revision objects (all of the repo's when commit is NULL) and
 * the refs pointing at them, before the index rows go. */
enum hm_err store_remote_rm(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			    const char *commit) HM_MUST_CHECK;
/* Records an artifact in the bucket: artifacts/<type>/<repo>/<commit>/<sha256>. */
enum hm_err store_remote_put_artifact(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				      const char *commit, const char *format, const char *options,
				      const char *sha256, uint64_t size) HM_MUST_CHECK;
/* Bucket side of gc: unreferenced blob objects and stale multipart uploads. */
enum hm_err store_remote_gc(struct hm_ctx *ctx, struct store *st, struct store_gc_result *r) HM_MUST_CHECK;
/* 1 while the index is being refreshed from the bucket (nothing is written back). */
int store_remote_syncing(const struct store *st);
/* Queues a blobs row (as store_blob_adopt does) for the next flush. */
enum hm_err store_queue_blob(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size,
			     const char *git_oid) HM_MUST_CHECK;
/* Whether a blobs row (queued or stored) has this sha256 and size. */
enum hm_err store_blob_indexed(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size,
			       int *yes) HM_MUST_CHECK;

/* Copies src to a new file dst (mode 0444); used when hard links cannot cross filesystems. */
enum hm_err store_copy_file(struct hm_ctx *ctx, const char *src, const char *dst, int writable) HM_MUST_CHECK;

/* ---- the statistics cache (statcache.c, schema v6) ---- */
/* Frees st->sc (accepts NULL); store_close calls it. */
void store_sc_builder_free(struct store_sc_builder *b);

#define STORE_SC_CHUNK 4096 /* rows of a chunk */
#define STORE_SC_ROW 41     /* bytes a row takes in a chunk */
/* flags of a row in a chunk */
#define STORE_SC_FAILED 1u  /* downloads: result 'failed'; served: status >= 400 */
#define STORE_SC_HIT 2u     /* served: cache 'hit' */
#define STORE_SC_MISS 4u    /* served: cache 'miss' */
#define STORE_SC_FILE 8u    /* served: kind 'file' */
#define STORE_SC_GET 16u    /* served: method 'GET' */
#define STORE_SC_REPO 32u   /* a non-empty repo type and name */

/* One chunk's columns, pointing into its blob (read them with store_sc_*). */
struct store_sc_chunk {
	size_t n;
	const unsigned char *t, *bytes, *seconds, *retries, *repo, *file, *peer, *flags;
};
/* Checks a chunk's blob and points c at its columns; -1 when it is malformed. */
int store_sc_decode(const void *blob, size_t len, struct store_sc_chunk *c);

static inline uint64_t store_sc_u64(const unsigned char *col, size_t i)
{
	uint64_t v;
	memcpy(&v, col + 8 * i, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

static inline uint32_t store_sc_u32(const unsigned char *col, size_t i)
{
	uint32_t v;
	memcpy(&v, col + 4 * i, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap32(v);
#endif
	return v;
}

static inline double store_sc_f64(const unsigned char *col, size_t i)
{
	uint64_t v = store_sc_u64(col, i);
	double d;
	memcpy(&d, &v, sizeof(d));
	return d;
}

/* A string of a dictionary: text + off, len bytes (NUL after them). */
struct store_sc_str {
	size_t off, len;
	int null;               /* SQL NULL (len 0) */
};
/* The dictionaries as a report reads them: index = id, 1 .. n - 1; has_*[id]
 * is 0 for ids with no row. */
struct store_sc_dict {
	size_t nrepo, nfile, npeer;
	unsigned char *has_repo, *has_file, *has_peer;
	struct store_sc_str *rtype, *rname;     /* per repo id */
	struct store_sc_str *fpath;             /* per file id */
	uint32_t *frepo;                        /* per file id: its repo id */
	struct store_sc_str *peer;              /* per peer id: 'p' (pulls) or 's' (serve), then the host/client */
	char *text;
	size_t len, cap;
};
/* Loads the repo dictionary, and those of files and peers when asked. */
enum hm_err store_sc_dict_load(struct hm_ctx *ctx, sqlite3 *db, int files, int peers,
			       struct store_sc_dict *d) HM_MUST_CHECK;
void store_sc_dict_release(struct store_sc_dict *d);
/* Packs every full chunk's worth of rows of downloads and served that no
 * chunk holds yet, a few chunks a transaction; *chunks (may be NULL): how many. */
enum hm_err store_stats_pack(struct hm_ctx *ctx, struct store *st, size_t *chunks) HM_MUST_CHECK;
/* store_stats_pack for writers whose rows are committed: a failure leaves
 * the rows to be read from their table and clears ctx's message. */
void store_stats_maintain(struct hm_ctx *ctx, struct store *st);

#endif
