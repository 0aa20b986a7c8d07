/* store.h - the content-addressed blob store: opening it, blobs, locks and
 * partial downloads. The rest of its public interface is split by topic:
 *   index.h      revisions, files, refs and listings (and rebuild-index)
 *   checkout.h   checkouts of stored revisions
 *   gc.h         garbage collection
 *   stats.h      transfer statistics, served requests, reports, du, charts
 *   smoke.h      smoke-test results
 *   artifacts.h  conversions of stored revisions
 *   torrents.h   BitTorrent v2 torrents of blobs
 * store-int.h is for the files of store/ only.
 *
 * Layout under the store directory:
 *   blobs/sha256/<2 hex>/<64 hex>   read-only blobs named by content SHA-256
 *   tmp/                            partial downloads, resume state, locks
 *   index.db                        SQLite (WAL) index, versioned schema
 * Nothing in here touches the network. */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"

struct store;

/* How a store is opened (store_open_mode).
 *   CREATE   read-write; a directory that is not a store yet becomes one
 *            (pull, import, sync).
 *   WRITE    read-write; dir must be a store (gc, rm, convert ...).
 *   READ     dir must be a store; read-write when this user can write it
 *            (so statistics caches stay current), else read-only: no lock
 *            file, no directories made, index.db opened read-only (as an
 *            immutable file when no writer left a WAL behind). Writes then
 *            fail with HM_ERR_IO naming the store as read-only; store_readonly() tells.
 *   REBUILD  read-write; also opens a store whose index.db is missing or
 *            empty while blobs exist (store_rebuild_index then indexes them).
 * Every mode refuses, with HM_ERR_DB and a message naming the recovery, a
 * store whose index.db is missing or empty while blobs/ holds blobs: a new
 * empty index would let gc delete every one of them. A directory that is
 * not a store gives HM_ERR_NOT_FOUND ("not a hubmirror store") unless CREATE. */
enum store_mode { STORE_CREATE, STORE_WRITE, STORE_READ, STORE_REBUILD };
/* Opens the store at dir (see enum store_mode): makes the layout when
 * writable, opens index.db in WAL mode with a busy timeout, runs pending
 * migrations. On success *out is owned by the caller (store_close). */
enum hm_err store_open_mode(struct hm_ctx *ctx, const char *dir, enum store_mode mode,
			    struct store **out) HM_MUST_CHECK;
/* store_open_mode(ctx, dir, STORE_CREATE, out). */
enum hm_err store_open(struct hm_ctx *ctx, const char *dir, struct store **out) HM_MUST_CHECK;
/* 1 when the store was opened read-only (STORE_READ on a store this user
 * cannot write, or a read-only filesystem). */
int store_readonly(const struct store *st);
/* Describes the other processes that have the store open (holders of
 * tmp/gc.lock other than this one), e.g. "pid 412 (hubmirror)", into buf;
 * "" when none is known. Reads /proc/locks (Linux). */
void store_holders(const struct store *st, char *buf, size_t len);

/* dir may also be "s3://BUCKET[/PREFIX]" (credentials and endpoint from the
 * AWS_* environment, see s3/s3.h): blobs and revision metadata then live in
 * the bucket, and the index is a cache in a local directory
 * ($HUBMIRROR_S3_CACHE, else $XDG_CACHE_HOME/hubmirror/s3/HOST/BUCKET/PREFIX)
 * that is brought up to date from the bucket when the store is opened. */

/* 1 when the store keeps its blobs in an S3 bucket. */
int store_is_remote(const struct store *st);
/* The store as the user named it: the directory, or the s3:// URI. */
const char *store_name(const struct store *st);
/* Refreshes the index cache of an S3 store from the bucket (revisions added
 * or removed by other nodes, refs), unless it was refreshed less than
 * min_age seconds ago. A no-op for a local store. */
enum hm_err store_remote_sync(struct hm_ctx *ctx, struct store *st, double min_age) HM_MUST_CHECK;
/* A presigned GET URL of a blob of an S3 store, valid for expires seconds
 * (caller frees); NULL for a local store or when out of memory. */
char *store_blob_url(struct store *st, const char *sha256, int expires);
/* Makes sure the blob's file is at store_blob_path: for an S3 store it is
 * downloaded into the local cache and verified (SHA-256 and size). A no-op
 * for a local store. */
enum hm_err store_blob_local(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size) HM_MUST_CHECK;
/* An S3 store: the part file at part_path, to become blob sha256 of size
 * bytes, has its first written bytes final. Its multipart upload then runs
 * while the rest downloads, and store_blob_adopt only waits for the last
 * parts. Fewer bytes than before mean the file started over (the upload
 * starts over too, reusing only parts whose MD5 still matches). Best effort:
 * on any trouble the upload simply happens in store_blob_adopt. A no-op for a
 * local store and for blobs small enough for one PUT. */
void store_blob_streaming(struct store *st, const char *sha256, uint64_t size, const char *part_path,
			  uint64_t written);
/* Stops the upload store_blob_streaming started for sha256 (a failed
 * download); the parts sent stay for a later try. A no-op when none runs. */
void store_blob_streaming_stop(struct store *st, const char *sha256);
/* Re-hashes a blob where it is kept: *problem = NULL (good), "missing" or "corrupt". */
enum hm_err store_blob_check(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size,
			     const char **problem) HM_MUST_CHECK;
/* Throws a bad blob away so the next pull fetches it again: the file (and
 * for an S3 store the object). Its rows stay. */
enum hm_err store_blob_discard(struct hm_ctx *ctx, struct store *st, const char *sha256) HM_MUST_CHECK;

/* Flushes pending rows (store_flush) and closes. Accepts NULL. */
void store_close(struct store *st);
const char *store_dir(const struct store *st);
/* The schema version in use, and the newest this build knows. */
int store_schema_version(const struct store *st);
int store_schema_latest(void);

/* Path of a blob (whether or not it exists). */
void store_blob_path(const struct store *st, const char *sha256, char *buf, size_t len);
/* *present = 1 when the index has the blob and the file exists with that size. */
enum hm_err store_blob_has(struct hm_ctx *ctx, struct store *st, const char *sha256,
			   uint64_t size, int *present) HM_MUST_CHECK;
/* Finds the blob whose content has this git blob oid (recorded for
 * regular files that were verified). *found = 0 if none. */
enum hm_err store_blob_by_git_oid(struct hm_ctx *ctx, struct store *st, const char *git_oid,
				  char sha256[65], uint64_t *size, int *found) HM_MUST_CHECK;

/* Paths of the partial download and its resume state for a key
 * (an LFS sha256, or "git-<oid>"): tmp/<key>.part and tmp/<key>.state. */
void store_part_paths(const struct store *st, const char *key,
		      char *part, char *state, size_t len);
/* Takes the per-key lock without blocking (a byte of tmp/.keys.lock, local
 * to the store). Returns HM_ERR_LOCKED if another process, or another lock
 * of this one, holds it; on success *fd is the lock to release with
 * store_unlock. */
enum hm_err store_lock_try(struct hm_ctx *ctx, struct store *st, const char *key, int *fd) HM_MUST_CHECK;
/* Releases the lock (accepts fd -1). No file per key is left behind. */
void store_unlock(struct store *st, const char *key, int fd);

/* Moves a verified temp file (anywhere under the store) into place as blob
 * sha256: chmod 0444, fsync when durable, rename, fsync the dir. If the blob
 * already exists the temp file is removed. Queues the blobs row (and the
 * git_oid mapping when git_oid is non-NULL) for the next store_flush.
 * When durable is 0 the caller promises a store_flush (which syncs the
 * filesystem before writing rows) - this is how many small files avoid one
 * fsync each. */
enum hm_err store_blob_adopt(struct hm_ctx *ctx, struct store *st, const char *tmp_path,
			     const char *sha256, uint64_t size, const char *git_oid,
			     int durable) HM_MUST_CHECK;
/* Makes queued blobs durable (syncfs when needed) and writes all queued
 * rows in one transaction. */
enum hm_err store_flush(struct hm_ctx *ctx, struct store *st) HM_MUST_CHECK;

#endif
