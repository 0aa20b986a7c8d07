/* fetch-int.h - internals shared by the fetch/ files. */
#ifndef FETCH_INT_H
#define FETCH_INT_H

#include <curl/curl.h>
#include "fetch.h"
#include "../util/util.h"

struct fetch_client {
	char *endpoint;       /* no trailing slash */
	char *origin;         /* scheme://host:port of the endpoint, lowercased */
	char *token;          /* NULL if none */
	char *user_agent;
	int connections, retries;
	double timeout, connect_timeout, meta_timeout;
	char endpoint_from[64], timeout_from[64], meta_timeout_from[64];
	int allow_private;    /* --allow-private-redirects */
	int ep_classes;       /* address classes the endpoint was reached at (atomic bits) */
};

/* Per-transfer guard against redirects to internal addresses (SSRF): the
 * address a connection is about to use is checked after name resolution,
 * in curl's open-socket callback. Lives as long as the transfer. */
struct fetch_guard {
	struct fetch_client *c;
	int foreign;              /* the URL is not on the endpoint's origin */
	int proxied;              /* a proxy resolves names: the host string is checked instead */
	int refused;              /* a connection was refused */
	char addr[64];            /* the refused address */
	const char *why;          /* "a link-local address" ... */
	char target[256];         /* scheme://host:port of the refused URL */
};

/* Headers of one HTTP response that the client reads. */
struct fetch_resp {
	long status;
	char location[2048];
	char error_code[64];      /* X-Error-Code */
	char error_message[256];  /* X-Error-Message */
	char link_next[2048];     /* Link rel="next" */
	char content_type[128];
	double retry_after;       /* seconds, -1 if absent */
	int has_content_range;
	uint64_t cr_start, cr_end, cr_total; /* Content-Range */
	int64_t content_length;   /* -1 if absent */
	int www_authenticate;     /* the server asks for credentials (401 + WWW-Authenticate) */
};

void fetch_resp_reset(struct fetch_resp *r);
/* curl header callback filling a struct fetch_resp (userdata). */
size_t fetch_header_cb(char *buf, size_t size, size_t n, void *ud);
/* scheme://host:port of url, lowercased; NULL if not an http(s) URL. Caller frees. */
char *fetch_origin_of(const char *url);
/* Resolves location against base (relative or absolute). Caller frees; NULL if invalid. */
char *fetch_url_join(const char *base, const char *location);
/* Follows a redirect: location resolved against base, counted in *count
 * (at most max). *out (caller frees) is the new URL; on error the message
 * names the subject (what) and the refused target (non-http schemes too). */
enum hm_err fetch_follow(struct hm_ctx *ctx, const char *base, const char *location, int *count, int max,
			 const char *what, char **out) HM_MUST_CHECK;
/* The error of a transfer the guard stopped (g->refused). */
enum hm_err fetch_guard_err(struct hm_ctx *ctx, const struct fetch_guard *g, const char *what);
/* Applies common options (user agent, timeouts, proxies from env, no
 * automatic redirects, the address guard) and the Authorization header when
 * url is on the endpoint's origin. *hdrs receives the list to free after
 * the transfer; guard (caller's storage) must outlive the transfer. */
enum hm_err fetch_easy_setup(struct hm_ctx *ctx, struct fetch_client *c, CURL *h, const char *url,
			     struct curl_slist **hdrs, struct fetch_guard *guard) HM_MUST_CHECK;
/* Maps a curl error to ours with a message in plain words naming the
 * server (token-free) and, for timeouts, the setting that chose the limit.
 * os_errno: CURLINFO_OS_ERRNO of the transfer; api: an API call (metadata
 * timeout) rather than a download (stall timeout). */
enum hm_err fetch_curl_err(struct hm_ctx *ctx, const struct fetch_client *c, CURLcode rc, long os_errno,
			   const char *url, int api);
/* Maps an error status + X-Error-Code to ours with a one-line message. what names the subject. */
enum hm_err fetch_status_err(struct hm_ctx *ctx, const struct fetch_resp *r, const char *what,
			     int have_token);
/* Seconds to wait before retry number n (1-based), honouring Retry-After. */
double fetch_backoff(int n, const struct fetch_resp *r);
/* The request log (--verbose, HF_DEBUG=1): emits HM_EV_HTTP with the URL
 * cut before its query (signed CDN URLs carry credentials there) and without
 * userinfo. status 0: no HTTP answer. */
void fetch_log_http(struct hm_ctx *ctx, const char *method, const char *url, long status, double seconds);
/* Whether a status is worth retrying. */
int fetch_status_retryable(long status);

#endif
