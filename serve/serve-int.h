/* serve-int.h - internals shared by the serve/ files. */
#ifndef SERVE_INT_H
#define SERVE_INT_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>
#include "serve.h"
#include "../store/store.h"
#include "../fetch/fetch.h"
#include "../util/util.h"
#include "../store/index.h"

#define SRV_MAX_SEGS 64
#define SRV_STORE_POOL 16  /* store handles open at most */

struct srv_upstream;   /* pull-through state (upstream.c) */

/* One client connection (MHD's socket context), tracked for the header
 * deadline and the per-address cap. Under srv.conn_mu. */
struct srv_conn {
	int fd;
	char addr[64];
	double deadline;         /* the next request's headers must be in by then (0: in a request) */
	int over;                /* over a limit: answer 503 (1 all connections, 2 per address) */
	int cut;                 /* shut down by the watchdog */
	struct srv_conn *prev, *next;
};
struct srv_metrics;    /* counters, histogram, served-row queue (metrics.c) */
struct srv_p2p;        /* the BitTorrent seeder and tracker (torrent.c) */

struct srv {
	struct hm_ctx *ctx;
	const struct srv_opts *o;
	struct MHD_Daemon *d;
	/* store handles: a struct store is for one thread at a time */
	pthread_mutex_t pool_mu;
	pthread_cond_t pool_cv;
	struct store **pool;
	size_t npool, cappool;
	size_t nopen;            /* handles in existence (at most SRV_STORE_POOL): bounds the fds on index.db */
	int max_conns;           /* --max-connections, clamped to the file limit */
	struct srv_upstream *up;
	struct srv_metrics *m;
	struct srv_p2p *p2p;     /* NULL without --p2p */
	struct mirror_swarm *swarm; /* p2p's swarm (set by srv_p2p_init) for pull-through: NULL without --p2p */
	struct srv_ui *ui;       /* the web pages' state (ui.c); NULL with --no-ui */
	struct srv_api_cache *api_cache; /* rendered API answers (api.c) */
	struct srv_lists *lists; /* file lists of stored commits, shared by requests (api.c) */
	pthread_mutex_t log_mu;
	int inflight_requests;   /* under log_mu: requests not yet completed */
	/* connections (conn_mu) and the watchdog that enforces header deadlines */
	pthread_mutex_t conn_mu;
	pthread_cond_t conn_cv;
	struct srv_conn *conns;
	int nconns;
	int watchdog_stop;
	pthread_t watchdog;
	int watchdog_on;
};

/* A request being answered (MHD's con_cls). */
struct srv_req {
	struct srv *s;
	double t0;
	int64_t started_at;
	char method[8];
	const char *kind;        /* "file" | "api" | "other" */
	char repo_type[16];
	char repo[200];
	char revision[256];
	char *path;              /* file path, or the URL path */
	char *url;               /* the URL path as sent (for the access log and Link) */
	int status;
	uint64_t planned;        /* body bytes queued (fd/buffer responses) */
	uint64_t streamed;       /* body bytes sent by callback responses */
	int streaming;
	const char *cache;       /* "hit" | "miss" | NULL */
	struct util_buf body;    /* POST body */
	int body_too_big;
	char client[64];
	const char *client_token; /* the client's bearer token (MHD's memory, valid during the request) */
	int ui;                  /* a web page's request: not recorded as mirror traffic */
	int needs_token;         /* its repo was pulled with a token: Cache-Control private */
	struct srv_conn *conn;   /* its connection (may be NULL) */
	char retry_after[16];    /* Retry-After of a 503 ("" = 5) */
	/* for the access log (Combined Log Format) */
	struct timespec wall0;   /* when the request came, wall clock */
	char version[12];        /* HTTP/1.1 */
	char user_agent[200], referer[200];
};

/* A parsed request path. */
struct srv_route {
	enum { R_NONE, R_METRICS, R_REPO_INFO, R_REVISION, R_TREE, R_PATHS_INFO, R_REFS, R_RESOLVE,
	       R_TORRENT,          /* /api/hubmirror/torrents/<sha256> (path = the sha256) */
	       R_REV_TORRENTS      /* /api/{models,datasets}/<repo>/torrents/<rev> */
	} what;
	const char *type;        /* "model" | "dataset" */
	char repo[200];
	char rev[256];
	char path[4200];         /* tree subpath or file path ("" if none) */
	int bad;                 /* malformed: 400 */
};

/* Percent-decodes the raw path into segments and classifies it. */
void srv_route_parse(const char *url, struct srv_route *r);
/* Percent-decodes [s, s+n) into out (cap bytes, NUL-terminated); with plus,
 * '+' is a space. Returns the length, or -1 for a bad escape, a NUL or an
 * output longer than cap - 1. */
int srv_pct_decode(const char *s, size_t n, char *out, size_t cap, int plus);
/* The value of one hex digit, or -1. */
int srv_hexval(int ch);

/* ---- respond.c: below every handler ---- */

/* Adds the header name: value to resp: 0, or -1 when MHD refuses it (a CR
 * or LF in the value, or no memory). A response missing a header it needs
 * is not sent: callers answer 500 instead (or close, for an error answer). */
int srv_header(struct MHD_Response *resp, const char *name, const char *value) HM_MUST_CHECK;
/* Queues resp (status) and drops the caller's reference; hdr_failed (what
 * srv_header calls returned, or-ed) answers 500 instead of a response
 * missing a header. */
enum MHD_Result srv_queue(struct srv_req *q, struct MHD_Connection *c, unsigned status, struct MHD_Response *resp,
			  int hdr_failed);

/* Store handle pool: at most SRV_STORE_POOL handles exist; take waits for
 * one (up to 30 s) when all are in use. NULL when none could be had. */
struct store *srv_store_take(struct srv *s);
void srv_store_put(struct srv *s, struct store *st);

/* Responses. All return the MHD result of queueing. */
enum MHD_Result srv_send_json(struct srv_req *q, struct MHD_Connection *c, int status, json_t *j);
enum MHD_Result srv_send_error(struct srv_req *q, struct MHD_Connection *c, int status, const char *code,
			       const char *fmt, ...) HM_PRINTF(5, 6);
/* Maps a store/fetch error to the Hub's error answer. */
enum MHD_Result srv_send_err(struct srv_req *q, struct MHD_Connection *c, enum hm_err err, const char *msg);

/* A file of a revision, from the store or from the upstream listing. */
struct srv_file {
	const char *path;
	uint64_t size;
	const char *sha256;      /* content sha256 ("" if unknown) */
	const char *oid;         /* git oid from the hub (LFS pointer oid for LFS files) */
	int lfs;
};

/* A revision to answer API calls from: local or upstream. */
struct srv_rev {
	char commit[41];
	int64_t modified;        /* unix seconds */
	struct srv_file *files;
	size_t nfiles;
	/* owners */
	struct store_file *sf;
	size_t nsf;
	struct fetch_entry *fe;  /* borrowed from the upstream cache (refcounted) */
	void *fe_hold;
	void *list_hold;         /* files borrowed from srv_lists (refcounted) */
};
void srv_rev_release(struct srv *s, struct srv_rev *r);
/* The cache of stored commits' file lists (a commit's files never change):
 * a big repo's tree pages and repo info cost one index read, not one each. */
/* The Host header when it is a plain host[:port] (safe to echo); else NULL. */
const char *srv_safe_host(struct MHD_Connection *c);
/* Whether what this server hands out may need a token: it asks clients for
 * one (--token-file), or it pulls through with an upstream token (whose
 * repos may be gated or private). */
int srv_token_guarded(const struct srv *s);
enum hm_err srv_lists_init(struct srv *s);
void srv_lists_free(struct srv *s);

/* Finds a revision locally, else (pull-through) upstream. On error the
 * answer has been sent (*sent = 1) or err says what to send. */
enum hm_err srv_get_rev(struct srv *s, struct srv_req *q, const char *type, const char *repo,
			const char *rev, struct srv_rev *out, int *local) HM_MUST_CHECK;

enum MHD_Result srv_api(struct srv_req *q, struct MHD_Connection *c, const struct srv_route *r);
/* The cache of rendered answers (s->api_cache): made at start, dropped at
 * shutdown; srv_api_free accepts a server without one. */
enum hm_err srv_api_init(struct srv *s) HM_MUST_CHECK;
void srv_api_free(struct srv *s);
enum MHD_Result srv_file(struct srv_req *q, struct MHD_Connection *c, const struct srv_route *r);
/* Parses a single "bytes=" Range header h against size (RFC 9110 14.1.1):
 * 0 with none or one to ignore (the whole body), 1 with [*from, *from +
 * *len), -1 unsatisfiable. */
int srv_parse_range(const char *h, uint64_t size, uint64_t *from, uint64_t *len);
/* Answers 416 with Content-Range: bytes * / size. */
enum MHD_Result srv_unsatisfiable(struct srv_req *q, struct MHD_Connection *c, uint64_t size);
/* Answers a failed open() of a blob by its errno: out of descriptors is 503
 * with Retry-After, a missing blob 500 naming verify --repair. */
enum MHD_Result srv_open_error(struct srv_req *q, struct MHD_Connection *c, int e);
/* Answers 304 when If-None-Match names the file's ETag (GET/HEAD): returns
 * 1 with *ret set, else 0 (nothing sent). */
int srv_not_modified(struct srv_req *q, struct MHD_Connection *c, const char *commit, const struct srv_file *f,
		     enum MHD_Result *ret);
/* Queues a file answer (headers, Content-Range, Cache-Control; 304 when the
 * client's copy is current) with the body in resp. */
enum MHD_Result srv_queue_file(struct srv_req *q, struct MHD_Connection *c, struct MHD_Response *resp,
			       const char *commit, const struct srv_file *f, int ranged, uint64_t from, uint64_t len);

/* Queues resp (no Range handling) with the file headers and status. */
enum MHD_Result srv_queue_file_headers(struct srv_req *q, struct MHD_Connection *c, struct MHD_Response *resp,
				       const char *commit, const struct srv_file *f, int status);
/* An S3 store's answer for a stored file (s3redirect.c): returns 1 with
 * *ret set when it answered (HEAD, 302 for LFS GETs, errors), 0 when the file
 * is now in the local cache for the usual answer. */
int srv_s3_file(struct srv_req *q, struct MHD_Connection *c, struct store *st, const char *commit,
		const struct store_file *sf, enum MHD_Result *ret);

/* Pull-through (upstream.c). */
enum hm_err srv_up_init(struct srv *s) HM_MUST_CHECK;
/* For /metrics: bytes pull-throughs took from the upstream, pull-throughs
 * that failed, and those running now (all 0 without an upstream). */
void srv_up_totals(struct srv *s, uint64_t *bytes, uint64_t *errors, int *running);
void srv_up_free(struct srv *s);
/* Cancels pull-through downloads (they keep their resume state). */
void srv_up_stop(struct srv *s);
int srv_up_enabled(const struct srv *s);
/* Upstream revision listing (cached). *hold keeps entries alive until srv_up_release. */
enum hm_err srv_up_rev(struct srv *s, struct srv_req *q, const char *type, const char *repo, const char *rev,
		       char commit[41], const struct fetch_entry **fe, size_t *n, void **hold) HM_MUST_CHECK;
void srv_up_release(struct srv *s, void *hold);
/* Streams a file that is not in the store, pulling it through once. */
enum MHD_Result srv_up_serve_file(struct srv_req *q, struct MHD_Connection *c, const char *type,
				  const char *repo, const char *commit, const struct fetch_entry *e,
				  const struct fetch_entry *all, size_t nall, const char *ref,
				  uint64_t from, uint64_t len, int ranged);

/* Pull-throughs in flight, for the activity page: at most max, newest first. */
struct srv_up_progress {
	char type[16], repo[200], path[512];  /* path cut at 511 bytes */
	uint64_t size, done;                  /* done: contiguous bytes written so far */
	int64_t started;                      /* unix seconds */
	int readers;                          /* clients waiting on it */
};
size_t srv_up_progress(struct srv *s, struct srv_up_progress *out, size_t max);

/* Metrics and the served-request log (metrics.c). */
enum hm_err srv_metrics_init(struct srv *s) HM_MUST_CHECK;
void srv_metrics_free(struct srv *s);   /* flushes the log */
void srv_metrics_record(struct srv *s, const struct srv_req *q, uint64_t bytes, double seconds);
enum MHD_Result srv_metrics_send(struct srv_req *q, struct MHD_Connection *c);

int srv_repo_allowed(const struct srv *s, const char *repo);

/* BitTorrent (torrent.c); all no-ops without --p2p. */
enum hm_err srv_p2p_init(struct srv *s) HM_MUST_CHECK;
void srv_p2p_free(struct srv *s);
void srv_p2p_totals(const struct srv *s, uint64_t *up, uint64_t *down, int *peers, size_t *torrents);
/* The port of the opentracker serve runs (its listen address into host), or
 * 0 when it runs none (no --p2p, an external --tracker, an edge). */
int srv_p2p_own_tracker(const struct srv *s, char *host, size_t hl);
enum MHD_Result srv_p2p_torrent(struct srv_req *q, struct MHD_Connection *c, const struct srv_route *r);
enum MHD_Result srv_p2p_rev_torrents(struct srv_req *q, struct MHD_Connection *c, const struct srv_route *r);
/* 1 when tok is one of the accepted tokens (constant time per token). */
int srv_token_ok(const struct srv *s, const char *tok);
const char *srv_iso_time(int64_t t, char *buf, size_t len);

#endif
