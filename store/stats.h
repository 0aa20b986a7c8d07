/* stats.h - transfer statistics: downloads and served requests as recorded,
 * reports over them, store usage (du), and charts (stats.c, served.c,
 * statcache.c, chart.c; `hubmirror stats`, `du`, serve's pages). */
#ifndef STORE_STATS_H
#define STORE_STATS_H

#include "store.h"

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

struct store_stats_row {
	char *key;              /* repo "type:name" (or NULL for the total row) */
	uint64_t files, bytes, failures, retries;
	double seconds;
};

/* Queues a download row for the next flush. */
enum hm_err store_record_download(struct hm_ctx *ctx, struct store *st,
				  const struct store_download *d) HM_MUST_CHECK;

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
