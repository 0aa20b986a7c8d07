/* hm.h - the shared context and error type every library function speaks. */
#ifndef HM_H
#define HM_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#define HM_MUST_CHECK __attribute__((warn_unused_result))
#define HM_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* One error type for the whole library (curl's CURLcode). Human detail
 * (file, URL, status) goes into ctx->errmsg. */
enum hm_err {
	HM_OK = 0,
	HM_ERR_NOMEM,
	HM_ERR_IO,          /* filesystem error */
	HM_ERR_NOSPC,       /* disk full: abort at once, never retried */
	HM_ERR_USAGE,       /* bad arguments from the user */
	HM_ERR_BAD_INPUT,   /* malformed/hostile data from a hub, file or archive */
	HM_ERR_NET,         /* transport error after retries */
	HM_ERR_UNREACHABLE, /* could not connect at all */
	HM_ERR_HTTP,        /* unexpected HTTP status */
	HM_ERR_REPO_NOT_FOUND,
	HM_ERR_REV_NOT_FOUND,
	HM_ERR_ENTRY_NOT_FOUND,
	HM_ERR_GATED,
	HM_ERR_AUTH,        /* bad or missing token */
	HM_ERR_RATE_LIMITED,
	HM_ERR_CORRUPT,     /* digest or size mismatch */
	HM_ERR_DB,          /* SQLite error */
	HM_ERR_NOT_FOUND,   /* not in the local store */
	HM_ERR_CANCELLED,   /* interrupted by the user */
	HM_ERR_LOCKED,      /* held by another process */
	HM_ERR__COUNT
};

/* Short, stable, lowercase name of an error ("not found", "corrupt" ...). */
const char *hm_strerror(enum hm_err err);

/* Progress events, emitted by long operations; the command layer draws them. */
enum hm_event_kind {
	HM_EV_FILE_START,  /* name, total */
	HM_EV_PROGRESS,    /* done/total over all work, rate */
	HM_EV_FILE_DONE,   /* name, total; err set on failure */
	HM_EV_RETRY,       /* name; detail in msg; attempt/attempts, backoff, status */
	HM_EV_INFO,        /* msg */
	HM_EV_HTTP         /* one finished HTTP request, only when ctx->verbose:
			      method, name = URL without its query, status, seconds */
};

struct hm_event {
	enum hm_event_kind kind;
	const char *name;
	const char *msg;
	uint64_t done, total;
	double rate; /* bytes/s, from this run's transfers only */
	enum hm_err err;
	/* HM_EV_PROGRESS of a download: bytes that were on disk before this run
	 * (resumed parts, files present), files finished of files, connections
	 * in use now. */
	uint64_t resumed;
	int files_done, files_total, active;
	/* HM_EV_RETRY: this was failure `attempt` of `attempts` tolerated; the
	 * next try comes in `backoff` seconds; status is the HTTP status (0 if
	 * the transfer failed below HTTP). HM_EV_HTTP: status and seconds. */
	int attempt, attempts;
	double backoff, seconds;
	long status;
	const char *method;
};

/* The context passed down through every layer (no mutable globals). */
struct hm_ctx {
	char errmsg[1024];                 /* detail of the last error */
	volatile sig_atomic_t *cancel;     /* set by a signal handler; may be NULL */
	int verbose;
	void (*on_event)(void *ud, const struct hm_event *ev); /* may be NULL */
	void *event_ud;
};

/* Record an error's detail on the context and return it (for `return hm_fail(...)`). */
enum hm_err hm_fail(struct hm_ctx *ctx, enum hm_err err, const char *fmt, ...) HM_PRINTF(3, 4);
/* Emit a progress event if someone listens. */
void hm_emit(struct hm_ctx *ctx, const struct hm_event *ev);
/* Non-zero when the user asked to stop. */
int hm_cancelled(const struct hm_ctx *ctx);

#endif
