/* fetch.h - the Hub API client and the segmented, resumable downloader.
 * All of libcurl lives behind this header. Nothing here touches SQLite or prints. */
#ifndef FETCH_H
#define FETCH_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"

struct fetch_client;

struct fetch_client_opts {
	const char *endpoint;   /* base URL, e.g. https://huggingface.co (no trailing slash needed) */
	const char *token;      /* may be NULL; sent only to the endpoint's own origin */
	int connections;        /* total parallel connections (default 8) */
	int retries;            /* failures in a row tolerated per transfer (default 5) */
	double timeout;         /* seconds without progress before a download connection is replaced (default 30) */
	double connect_timeout; /* seconds (default 10) */
	double meta_timeout;    /* API calls: seconds to connect, and without data, before a retry (default 10) */
	/* where the values came from, for messages ("--endpoint", "HF_HUB_ETAG_TIMEOUT" ...); may be NULL */
	const char *endpoint_from, *timeout_from, *meta_timeout_from;
	int allow_private_redirects; /* follow redirects to loopback/private addresses
				      * even when the endpoint is not in those ranges */
};

/* Creates a client. *out is owned by the caller (fetch_client_free). The
 * token is copied; it is never put in error messages. */
enum hm_err fetch_client_new(struct hm_ctx *ctx, const struct fetch_client_opts *opts,
			     struct fetch_client **out) HM_MUST_CHECK;
void fetch_client_free(struct fetch_client *c);
/* The endpoint without trailing slash (no credentials in it). */
const char *fetch_client_endpoint(const struct fetch_client *c);

/* ---- Hub API ---- */

/* Resolves rev (branch, tag, commit, refs/pr/N; NULL = "main") of repo
 * (type "model" or "dataset") to a 40-hex commit. */
enum hm_err fetch_hub_revision(struct hm_ctx *ctx, struct fetch_client *c, const char *type,
			       const char *repo, const char *rev, char commit[41]) HM_MUST_CHECK;

/* fetch_hub_revision, and whether the hub says the repo is gated (its
 * "gated" field is "auto" or "manual"); gated may be NULL. restricted (may
 * be NULL) gets 1 unless the answer says the repo is public ("private":
 * false and "gated": false): a copy made with a token is then not for
 * everyone. */
enum hm_err fetch_hub_revision_info(struct hm_ctx *ctx, struct fetch_client *c, const char *type,
				    const char *repo, const char *rev, char commit[41], int *gated,
				    int *restricted) HM_MUST_CHECK;
/* Whether the client sends a token to its endpoint. */
int fetch_client_has_token(const struct fetch_client *c);

struct fetch_entry {
	char *path;          /* validated with util_path_is_safe */
	uint64_t size;
	char oid[41];        /* git blob oid (of the LFS pointer for LFS files) */
	int lfs;
	char sha256[65];     /* LFS content sha256, "" for regular files */
};
/* Lists every file of a commit (recursive, following Link rel="next").
 * Unsafe names, malformed entries, duplicates: HM_ERR_BAD_INPUT.
 * *out owned by the caller (fetch_entries_free). */
enum hm_err fetch_hub_tree(struct hm_ctx *ctx, struct fetch_client *c, const char *type,
			   const char *repo, const char *commit,
			   struct fetch_entry **out, size_t *n) HM_MUST_CHECK;
void fetch_entries_free(struct fetch_entry *v, size_t n);
/* Parses one tree page (a JSON list) with the same checks; for tests and fuzzing. */
enum hm_err fetch_parse_tree(struct hm_ctx *ctx, const char *data, size_t size,
			     struct fetch_entry **out, size_t *n) HM_MUST_CHECK;

/* URL of a file: {endpoint}/[datasets/]{repo}/resolve/{rev}/{path, escaped}. Caller frees. */
char *fetch_resolve_url(const struct fetch_client *c, const char *type, const char *repo,
			const char *rev, const char *path);

/* ---- Downloader ---- */

struct fetch_job {
	/* in */
	const char *name;        /* for progress and messages (the repo path) */
	const char *url;         /* resolve URL on the endpoint */
	uint64_t size;           /* expected size */
	const char *part_path;   /* where the bytes go (resumed if a state exists) */
	const char *state_path;  /* resume state: which ranges are on disk */
	const char *expect_sha256; /* 64 hex or NULL */
	const char *expect_git_oid; /* 40 hex or NULL (also computes git oid when set) */
	int merkle_piece;        /* > 0: also the BitTorrent v2 tree for this piece size */
	void *user;
	/* out */
	char sha256[65];
	char git_oid[41];
	uint64_t bytes_wire;     /* body bytes received, including ones thrown away */
	uint64_t bytes_resumed;  /* bytes that were already on disk */
	double seconds;
	int connections;         /* most connections used at once */
	int retries;
	char *host;              /* scheme://host[:port] the bytes came from, or NULL */
	int has_merkle;          /* merkle_root/merkle_layer are set (verified file) */
	unsigned char merkle_root[32];
	unsigned char *merkle_layer; /* malloc'd, the caller frees it (NULL: none) */
	size_t merkle_layer_len;
	enum hm_err err;
	char *errmsg;            /* why err, or NULL (out of memory: hm_strerror(err)) */
};
/* host, errmsg and merkle_layer are malloc'd by fetch_download (a job of
 * 100,000 carries no fixed buffers); the caller frees them with this.
 * Accepts a zeroed job. */
void fetch_job_release(struct fetch_job *j);
/* Sets j's error and message (a copy, at most 511 bytes), replacing any. */
void fetch_job_fail(struct fetch_job *j, enum hm_err err, const char *msg);

struct fetch_callbacks {
	/* Before a job starts: 0 start it, 1 skip it (nothing to do), 2 try
	 * again later (e.g. locked by another process), 3 stop everything (the
	 * callback set job->err with fetch_job_fail: out of memory). */
	int (*begin)(void *ud, struct fetch_job *job);
	/* After a job ended (job->err says how); the part file is verified
	 * when err == HM_OK. Returns HM_OK or a fatal error that stops all. */
	enum hm_err (*done)(void *ud, struct fetch_job *job);
	/* Optional: the bytes [0, contiguous) of the part file are written
	 * (fewer than before means the file started over). */
	void (*progress)(void *ud, struct fetch_job *job, uint64_t contiguous);
	void *ud;
};

/* Downloads jobs in parallel over the client's connections, splitting large
 * files into ranges, resuming from state files, retrying, verifying
 * (size + SHA-256 / git oid) before calling done. Returns HM_OK when every
 * job succeeded or was skipped; the first job error otherwise (each job
 * carries its own); HM_ERR_CANCELLED / HM_ERR_NOSPC stop everything. */
enum hm_err fetch_download(struct hm_ctx *ctx, struct fetch_client *c, struct fetch_job **jobs,
			   size_t n, const struct fetch_callbacks *cb) HM_MUST_CHECK;

/* Takes over a part file written by another transport (the swarm): the
 * byte ranges [start, end) given as n pairs (2 * n numbers, in order,
 * non-overlapping) are on disk, written under this boot (not synced: a
 * machine crash makes them be fetched again). A fetch_download of a job
 * with these part_path and state_path then fetches only the gaps, and still
 * hashes the whole file before it is done. Returns 0 or -1 (errno). */
int fetch_resume_adopt(const char *state_path, uint64_t size, const uint64_t *ranges, size_t n);

/* GETs the BitTorrent v2 torrent of blob sha256 from a hubmirror endpoint
 * (serve --p2p: {endpoint}/api/hubmirror/torrents/<sha256>), at most max
 * bytes, one try. *buf malloc'd, the caller's. A 404 (the endpoint does not
 * list the blob) is HM_ERR_ENTRY_NOT_FOUND, a 403 HM_ERR_AUTH or _GATED. */
enum hm_err fetch_blob_torrent(struct hm_ctx *ctx, struct fetch_client *c, const char *sha256, size_t max,
			       unsigned char **buf, size_t *len) HM_MUST_CHECK;
/* The retry policy, shared with the S3 client: whether an HTTP status is
 * worth another try, and the seconds to wait before retry n (1-based);
 * retry_after < 0 when the server sent none. */
int fetch_http_retryable(long status);
double fetch_retry_delay(int n, double retry_after);

#endif
