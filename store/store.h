/* store.h - the content-addressed blob store and its SQLite index.
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

/* One file of a revision, as recorded in the index. */
struct store_file {
	char *path;         /* repo-relative, validated */
	uint64_t size;
	char sha256[65];    /* content SHA-256 (the blob name) */
	char git_oid[41];   /* git blob oid from the hub ("" if unknown); for LFS files the pointer's oid */
	int lfs;
};

/* One file transfer, for statistics (one row of `downloads`). */
struct store_download {
	const char *repo_type;  /* "model" | "dataset" */
	const char *repo;
	const char *revision;   /* commit */
	const char *path;
	const char *sha256;     /* may be NULL on failure */
	uint64_t size;          /* file size */
	uint64_t bytes;         /* bytes over the wire */
	double seconds;
	int connections;
	int retries;
	const char *result;     /* "ok" | "failed" | "cached" */
	const char *error;      /* NULL on success */
	const char *endpoint;   /* host the bytes came from, without credentials */
	int64_t started_at;     /* unix seconds */
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

struct store_stats_row {
	char *key;              /* repo "type:name" (or NULL for the total row) */
	uint64_t files, bytes, failures, retries;
	double seconds;
};

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
/* Queues a download row for the next flush. */
enum hm_err store_record_download(struct hm_ctx *ctx, struct store *st,
				  const struct store_download *d) HM_MUST_CHECK;
/* Makes queued blobs durable (syncfs when needed) and writes all queued
 * rows in one transaction. */
enum hm_err store_flush(struct hm_ctx *ctx, struct store *st) HM_MUST_CHECK;

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

/* One thing gc removed (or with dry_run would remove), or kept and why. */
struct store_gc_item {
	const char *kind;       /* "blob" (unreferenced), "orphan" (blob file without a row),
				   "partial" (a download's .part/.state), "scratch" (tmp/convert-*, tmp/run),
				   "lock" (a lock file left alone) */
	const char *name;       /* path relative to the store */
	uint64_t bytes;
	int removed;            /* 1: removed (or would be); 0: kept */
	const char *why;        /* why it goes or stays, in words */
};
struct store_gc_opts {
	int dry_run;            /* remove nothing; report what would go */
	int force;              /* collect even when the index knows no revision */
	int64_t keep_partials_s; /* keep partial downloads written to within this many seconds
				   (a later pull resumes them); 0 removes every unused one */
	void (*on_item)(void *ud, const struct store_gc_item *it); /* may be NULL */
	void *ud;
};
struct store_gc_result {
	uint64_t blobs_removed, bytes_removed;      /* blob files, orphans included */
	uint64_t partials_removed, partial_bytes_removed; /* one per download (.part + .state) */
	uint64_t scratch_removed, scratch_bytes_removed;  /* interrupted conversions, engine checkouts */
	uint64_t blobs_kept, bytes_kept;            /* unreferenced, kept: another process has the store open */
	uint64_t orphans_kept;                      /* files without rows, not touched for the same reason */
	uint64_t partials_young, partial_bytes_young; /* kept: younger than keep_partials_s */
	uint64_t partials_busy;                     /* kept: a running download holds them */
	char holders[160];                          /* who else had the store open (store_holders) */
};
/* Removes blob files and rows no file or artifact references, partial
 * downloads (tmp/<key>.part, tmp/<key>.state) whose lock is free and that
 * are older than o->keep_partials_s, the debris of interrupted conversions
 * and stale lock files; r counts what went and what stayed, and o->on_item
 * hears each item. While another process has the store open, unreferenced
 * blobs younger than an hour and files without rows stay (a pull may be
 * about to record them). Refuses (HM_ERR_DB, nothing removed) when the
 * index knows no revision and recorded no transfer (pull, import) but blobs
 * exist, unless o->force: that is what a lost, rebuilt or replaced index
 * looks like (after 'rm' of all that was pulled, the transfers stay), and
 * gc would delete everything
 * (while another process has the store open - a first pull - blobs are
 * left alone instead, and the rest collected). */
enum hm_err store_gc(struct hm_ctx *ctx, struct store *st, const struct store_gc_opts *o,
		     struct store_gc_result *r) HM_MUST_CHECK;

enum store_layout { STORE_LAYOUT_FILES, STORE_LAYOUT_HF_CACHE };
/* Materializes a revision under dir. FILES: dir/<path> (hard links, copies
 * across filesystems; existing files with other content are replaced).
 * HF_CACHE: dir/{models|datasets}--org--name/{blobs/<etag>, snapshots/<commit>/<path>
 * as relative symlinks ../../blobs/<etag>, refs/<ref>} where etag is the
 * sha256 for LFS files and the git oid otherwise; ref may be NULL.
 * Hard-linked files share the blob's inode: editing one in place (after a
 * chmod) would change the store, which verify reports. With copy set, every
 * file is an independent writable copy (a reflink where the filesystem can). */
enum hm_err store_checkout(struct hm_ctx *ctx, struct store *st, const char *type,
			   const char *repo, const char *commit, const char *ref,
			   const char *dir, enum store_layout layout, int copy) HM_MUST_CHECK;

/* A checkout of a stored revision, as recorded (mirror_checkout). */
struct store_checkout_info {
	char type[16];
	char *repo;
	char commit[41];
	char *dir;              /* absolute: the tree (files) or the HF_HUB_CACHE (hf-cache) */
	enum store_layout layout;
	int copy;               /* independent copies: nothing to keep in step */
};
/* Records a checkout of a stored revision into dir (absolute); a files
 * checkout replaces the record of an earlier one into the same dir.
 * HM_ERR_NOT_FOUND when the revision is not stored. */
enum hm_err store_record_checkout(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				  const char *commit, const char *dir, enum store_layout layout, int copy) HM_MUST_CHECK;
/* The recorded checkouts of a repo (type and repo NULL: of all), oldest
 * first; *out freed with store_checkouts_free. Removing a revision (rm)
 * forgets its checkouts. */
enum hm_err store_list_checkouts(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				 struct store_checkout_info **out, size_t *n) HM_MUST_CHECK;
void store_checkouts_free(struct store_checkout_info *v, size_t n);

/* Frees the per-repo rows of a report (store_report). */
void store_stats_free(struct store_stats_row *v, size_t n);

/* ---- served requests (hubmirror serve) ---- */

/* One request answered by the server (one row of `served`). */
struct store_served {
	const char *kind;       /* "file" | "api" | "other" */
	const char *method;     /* "GET" | "HEAD" | "POST" */
	const char *repo_type;  /* NULL when the request named no repo */
	const char *repo;
	const char *revision;   /* as asked (ref or commit); may be NULL */
	const char *path;       /* file path for kind "file", else the URL path */
	int status;
	uint64_t bytes;         /* body bytes sent */
	double seconds;
	const char *client;     /* client address */
	const char *cache;      /* "hit" | "miss" (pulled through) | NULL */
	int64_t started_at;     /* unix seconds */
};
/* Writes rows in one transaction (the server batches them). */
enum hm_err store_record_served(struct hm_ctx *ctx, struct store *st, const struct store_served *rows,
				size_t n) HM_MUST_CHECK;

struct store_served_row {
	char *key;              /* "type:name", or NULL for the total row (last) */
	uint64_t requests, files, bytes, hits, misses, errors; /* errors: status >= 400 */
	double seconds;
};
/* Frees the served rows of a report (store_report). */
void store_served_stats_free(struct store_served_row *v, size_t n);

/* ---- statistics report and housekeeping (stats.c; `hubmirror stats`, `du`) ---- */

/* Breakdowns of a report. */
enum store_by { STORE_BY_REPO, STORE_BY_FILE, STORE_BY_DAY, STORE_BY_ENDPOINT, STORE_BY_N };

/* How a report reads the transfers: AUTO chooses (the statistics cache,
 * or for a repo with few transfers its rows through the repo indexes);
 * TABLES reads every row from its table; CACHE always reads the cache. */
enum store_scan { STORE_SCAN_AUTO, STORE_SCAN_TABLES, STORE_SCAN_CACHE };

/* Which transfers a report counts (the legacy served rows are every request either way). */
enum store_source { STORE_SOURCE_ALL, STORE_SOURCE_PULLS, STORE_SOURCE_SERVED };

/* What a report covers. Transfers are downloads rows (pulls) and served
 * rows of kind "file" answered to a GET (`serve`). */
struct store_stats_query {
	const char *repo;       /* "type:name" or "name"; NULL = all */
	int64_t since, until;   /* started_at in [since, until); INT64_MIN / INT64_MAX = open */
	size_t top;             /* rows per breakdown, largest bytes first; 0 = all */
	unsigned want;          /* (1u << STORE_BY_x) for each breakdown to compute */
	int by_key;             /* order breakdowns by key (day: oldest first) instead of bytes */
	int legacy;             /* also fill the report's pulls and served rows */
	enum store_scan scan;   /* how to read the transfers (the same numbers either way) */
	enum store_source source; /* which transfers: all (0), pulls only, files served only */
};

/* One aggregated row. Rates are bytes/s of each transfer with bytes > 0 and
 * seconds > 0; median and p95 are weighted by the transfers' bytes (the
 * smallest rate at or below which half, or 95%, of the bytes moved), 0 when
 * there is none. */
struct store_agg {
	char *key;              /* repo and file: "type:name"; day "YYYY-MM-DD" (UTC);
				   endpoint: host (pulls) or client address (serve); NULL: total */
	char *path;             /* STORE_BY_FILE: the file; else NULL */
	const char *source;     /* STORE_BY_ENDPOINT: "pull" | "serve"; else NULL (static) */
	int64_t day;            /* STORE_BY_DAY: unix seconds of 00:00 UTC */
	uint64_t count;         /* transfers, failed ones included */
	uint64_t bytes, retries, failures, hits, misses, nrates;
	double seconds, median_rate, p95_rate;
};

/* A report: released with store_report_release (also after a failure). */
struct store_report {
	struct store_agg total;                 /* every transfer in range */
	struct store_agg *by[STORE_BY_N];       /* NULL for breakdowns not wanted */
	size_t nby[STORE_BY_N];
	size_t nkeys[STORE_BY_N];               /* distinct keys before the --top cut */
	/* downloads only, per repo ordered by key, total row (key NULL) last,
	 * restricted to the query's repo and time range (with q->legacy) */
	struct store_stats_row *pulls;
	size_t npulls;
	/* every served request (API calls too), per repo, total row last,
	 * restricted to the query's repo and time range (with q->legacy) */
	struct store_served_row *served;
	size_t nserved;
};
/* One pass over the transfers: the chunks of the statistics cache (schema
 * v6, packed first when a chunk's worth of rows waits) and the rows after
 * them; a repo with few transfers through the repo indexes instead. */
enum hm_err store_report(struct hm_ctx *ctx, struct store *st, const struct store_stats_query *q,
			 struct store_report *out) HM_MUST_CHECK;
void store_report_release(struct store_report *r);

/* Parses a time for --since/--until: unix seconds, YYYY-MM-DD (UTC; as an
 * upper bound it means the end of that day), YYYY-MM-DDTHH:MM[:SS[.frac]]
 * with Z or +HH:MM/-HH:MM (UTC when none), or a span back from now: N
 * followed by s, m, h, d or w. HM_ERR_USAGE (message on ctx) otherwise. */
enum hm_err store_parse_time(struct hm_ctx *ctx, const char *s, int64_t now, int upper,
			     int64_t *out) HM_MUST_CHECK;

/* served_stats restricted to started_at in [since, until). */

struct store_du_repo {
	char *key;              /* "type:name" */
	uint64_t logical;       /* sum of file sizes over its revisions */
	uint64_t unique;        /* sum of the sizes of its distinct blobs */
	size_t nrevisions;
};
struct store_du {
	uint64_t disk;          /* sum of the sizes of the files under blobs/ */
	uint64_t nblobs;        /* files under blobs/ */
	uint64_t logical;       /* sum of file sizes over every revision */
	uint64_t unique;        /* sum of the sizes of the distinct blobs revisions use */
	uint64_t saved;         /* logical - unique: what deduplication saves */
	uint64_t partial;       /* bytes of partial downloads in tmp/ */
	uint64_t npartial;
	/* an S3 store: disk/nblobs/partial are its node's local cache, these the bucket's */
	int remote;
	uint64_t bucket_bytes;  /* blob objects under PREFIX/blobs/ */
	uint64_t bucket_blobs;
	uint64_t bucket_uploads; /* unfinished multipart uploads under PREFIX */
	struct store_du_repo *by_unique, *by_logical; /* largest first, top of each */
	size_t nby_unique, nby_logical, nrepos;
};
/* Store usage; top limits each repo list (0 = all). Release with store_du_release. */
enum hm_err store_du(struct hm_ctx *ctx, struct store *st, size_t top, struct store_du *out) HM_MUST_CHECK;
void store_du_release(struct store_du *d);
/* An S3 store's bucket side of du (bucket_bytes, bucket_blobs,
 * bucket_uploads): lists every blob object, so it costs one request per
 * 1,000 objects and is left out of store_du (which /metrics calls often).
 * A no-op for a local store. */
enum hm_err store_du_bucket(struct hm_ctx *ctx, struct store *st, struct store_du *d) HM_MUST_CHECK;

/* ---- smoke tests (smoke.c; `hubmirror smoke`, shown by `ls REPO`) ---- */

struct store_smoke {
	const char *repo_type, *repo, *commit;
	const char *artifact_sha256;   /* the GGUF conversion tested, or NULL: the revision itself */
	const char *model;             /* what was tested, in words */
	int pass;
	const char *reason;            /* NULL or "" when it passed */
	double load_s, prompt_tps, gen_tps;
	uint64_t peak_rss;
	int64_t created_at;
	const char *architecture;      /* the engine's name for it ("qwen3", ...), or NULL */
	const char *engine_version;    /* ENG_VERSION of the engine that ran it, or NULL */
};
enum hm_err store_record_smoke(struct hm_ctx *ctx, struct store *st, const struct store_smoke *s) HM_MUST_CHECK;

struct store_smoke_row {
	char commit[41];
	char *artifact_sha256;         /* NULL for the revision itself */
	char *model, *reason;
	char *architecture, *engine_version; /* NULL for results recorded before they were */
	int pass;
	double load_s, prompt_tps, gen_tps;
	uint64_t peak_rss;
	int64_t created_at;
};
/* A repo's smoke results, newest first; freed with store_smoke_rows_free. */
enum hm_err store_list_smoke(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			     struct store_smoke_row **out, size_t *n) HM_MUST_CHECK;
void store_smoke_rows_free(struct store_smoke_row *v, size_t n);

/* ---- artifacts: conversions of stored revisions (artifacts.c; `hubmirror convert`) ---- */

/* One conversion, as recorded. Strings are owned (store_artifact_release). */
struct store_artifact {
	int64_t id;             /* the row */
	char *repo_type, *repo;
	char commit[41];        /* the source revision */
	char *format;           /* "gguf" */
	char *options;          /* canonical options, e.g. "type=q8_0 conv=1" */
	char sha256[65];        /* the output's blob */
	uint64_t size;
	int64_t created_at;     /* unix seconds */
};
/* The artifact of (revision, format, options) when recorded and its blob is
 * present (*found = 1; out is the caller's to release). HM_ERR_NOT_FOUND
 * when the revision is not stored. */
enum hm_err store_find_artifact(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				const char *commit, const char *format, const char *options,
				struct store_artifact *out, int *found) HM_MUST_CHECK;
/* Records (or replaces) the artifact of (revision, format, options); the
 * blob must have been adopted (this flushes queued rows first). Removing
 * the revision (rm) removes its artifacts; gc keeps blobs artifacts use. */
enum hm_err store_record_artifact(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				  const char *commit, const char *format, const char *options, const char *sha256,
				  uint64_t size) HM_MUST_CHECK;
/* A repo's artifacts over all its revisions, newest first (*out freed with store_artifacts_free). */
enum hm_err store_list_artifacts(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				 struct store_artifact **out, size_t *n) HM_MUST_CHECK;
void store_artifact_release(struct store_artifact *a);
void store_artifacts_free(struct store_artifact *v, size_t n);
/* A fresh path under the store's tmp/ to build an artifact in (then
 * store_blob_adopt it): tmp/convert-<pid>-<random><suffix>. */
enum hm_err store_artifact_tmp(struct hm_ctx *ctx, struct store *st, const char *suffix, char *buf,
			       size_t len) HM_MUST_CHECK;
/* Copies blob sha256 to dst (a writable file of the user's; reflinked where
 * the filesystem can), atomically: temp beside dst, fsync, rename. */
enum hm_err store_artifact_export(struct hm_ctx *ctx, struct store *st, const char *sha256,
				  const char *dst) HM_MUST_CHECK;

/* ---- BitTorrent v2 torrents of blobs (torrents.c; serve --p2p, pull --p2p) ---- */

/* The stored torrent of a blob for a piece size (0: any; *buf malloc'd,
 * the caller's); *found = 0 when none was made yet. */
enum hm_err store_torrent_get(struct hm_ctx *ctx, struct store *st, const char *sha256, int piece_size,
			      unsigned char **buf, size_t *len, char info_hash[65], int *found) HM_MUST_CHECK;
/* Records (or replaces) the torrent of a blob; written at once. */
enum hm_err store_torrent_put(struct hm_ctx *ctx, struct store *st, const char *sha256, int piece_size,
			      const unsigned char *buf, size_t len, const char *info_hash) HM_MUST_CHECK;
/* The repos ("type:name") whose stored revisions list blob sha256, sorted;
 * none when no revision lists it. Free with store_strings_free. With
 * needs_token non-NULL, *needs_token gets a malloc'd array (the caller's,
 * NULL when n is 0) saying which of them were pulled with a token from a
 * gated or private upstream (store_repo_set_needs_token). */
enum hm_err store_blob_repos(struct hm_ctx *ctx, struct store *st, const char *sha256, char ***repos,
			     size_t *n, unsigned char **needs_token) HM_MUST_CHECK;
/* Records whether the repo's last pull needed a token (its hub said gated
 * or private, or did not say public, and a token was sent). A repo not in
 * the index is left alone. */
enum hm_err store_repo_set_needs_token(struct hm_ctx *ctx, struct store *st, const char *type, const char *name,
				       int needs) HM_MUST_CHECK;
void store_strings_free(char **v, size_t n);
/* The blobs with a stored torrent of this piece size (0: any) that a stored
 * revision lists (*sha malloc'd, the caller's). */
enum hm_err store_torrents_listed(struct hm_ctx *ctx, struct store *st, int piece_size, char (**sha)[65],
				  size_t *n) HM_MUST_CHECK;
/* ---- charts (chart.c): standalone SVG documents, for `stats --chart` and `serve`'s pages ---- */

struct util_buf;
/* Appends the chart of days (STORE_BY_DAY rows, oldest first): bytes per day
 * as bars and each day's median throughput as a line. Returns 0, or -1 when
 * out of memory. */
int store_chart_days(struct util_buf *b, const struct store_agg *days, size_t nd, const char *subtitle) HM_MUST_CHECK;
/* One row of a bar chart; value2 is the second series' (when there is one). */
struct store_chart_bar {
	const char *label;
	uint64_t value, value2;
};
/* Appends horizontal bars, one row per item (two bars a row when name2 is
 * non-NULL), values as sizes when bytes is set, else counts. 0 or -1 (memory). */
int store_chart_bars(struct util_buf *b, const char *title, const char *name1, const char *name2, int bytes,
		     const struct store_chart_bar *v, size_t n) HM_MUST_CHECK;

#endif
