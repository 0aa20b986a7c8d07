/* ui-int.h - what the web page files (ui.c, ui_repos.c, ui_stats.c) share:
 * the page state, an HTML writer whose every untrusted string goes through
 * an escaper for its context, query arguments, and the page frame. */
#ifndef SERVE_UI_INT_H
#define SERVE_UI_INT_H

#include "serve-int.h"
#include "ui.h"
#include "../store/index.h"
#include "../store/stats.h"

#define UI_RING 200          /* requests kept for the activity page */
#define UI_PER_PAGE 50       /* repos per page on the home page */
#define UI_FILES_PER_PAGE 500

/* One completed request, for the activity page. */
struct ui_logent {
	int64_t at;
	char client[64];
	char method[8];
	char url[256];           /* as sent (raw, escaped when shown) */
	char repo[200];          /* "" when none: hidden when --allow hides it */
	int status;
	uint64_t bytes;
	double seconds;
	char cache[8];
};

struct srv_ui {
	pthread_mutex_t mu;
	struct ui_logent ring[UI_RING];
	size_t head, count;      /* next slot, slots filled */
	/* The home page's data, under cache_mu (a home page is rendered under
	 * it): the repo list, reread when the index version changes; the files
	 * served per repo, reread after UI_SERVED_TTL; the store's usage, after
	 * UI_DU_TTL or a version change. A store of 10,000 repos takes a few
	 * hundred milliseconds to read, and renders from here in a few. */
	pthread_mutex_t cache_mu;
	pthread_t warm;          /* reads the cache once at start, so the first visitor need not */
	int warm_started;
	int have_repos, have_served, have_du;
	uint64_t version;
	struct store_repo_info *repos;
	size_t nrepos;
	double served_at, du_at;
	struct store_report served;
	const struct store_served_row **sv;  /* served rows with a key, sorted by key */
	size_t nsv;
	uint64_t du_disk, du_logical, du_unique, du_saved, du_blobs;
	int remote;              /* blobs in an S3 bucket (store_is_remote) */
	char store_name[512];    /* the directory or the s3:// URI */
	char local_dir[4096];    /* where the index (and, for S3, the cache) lives: for free disk */
};

#define UI_SERVED_TTL 2.0
#define UI_DU_TTL 30.0

/* A page being written. Writes never fail one by one: the first out of
 * memory sets err and ui_send answers 500. */
struct ui_page {
	struct srv_req *q;
	struct MHD_Connection *c;
	struct util_buf b;
	int err;
	int cookie_auth;         /* signed in with the login cookie (offer to sign out) */
	const char *extra_head;  /* trusted markup for <head> (meta refresh), or NULL */
};

/* Trusted markup and numbers. */
void ui_raw(struct ui_page *p, const char *s);
void ui_fmt(struct ui_page *p, const char *fmt, ...) HM_PRINTF(2, 3);
/* Untrusted text, escaped for HTML text and for a double-quoted attribute
 * value alike: markup characters become entities, invalid UTF-8 becomes
 * U+FFFD, and control, bidirectional and zero-width characters are shown as
 * "[U+202E]" so that a name cannot hide or reorder what is shown. */
void ui_text(struct ui_page *p, const char *s);
void ui_textn(struct ui_page *p, const char *s, size_t n);
/* Untrusted text percent-encoded for a URL path or query (all but
 * [A-Za-z0-9-._~], and '/' too unless keep_slash): safe in an attribute. */
void ui_url(struct ui_page *p, const char *s, int keep_slash);
/* A size as "1.5 GiB" with the exact byte count in a data-v attribute (the
 * tests read it) and a tooltip. */
void ui_size_cell(struct ui_page *p, uint64_t n);
/* A number cell (data-v with the exact value). */
void ui_num_cell(struct ui_page *p, uint64_t n);
/* "2024-05-01 12:00 UTC" ("-" for 0). */
const char *ui_time(int64_t t, char *buf, size_t len);
/* The link to a repo's page: /ui/repo/TYPE/NAME. */
void ui_repo_href(struct ui_page *p, const char *type, const char *name);

/* The frame: <!doctype>, head, navigation (active: "home", "stats", "activity"). */
void ui_begin(struct ui_page *p, const char *title, const char *active);
void ui_end(struct ui_page *p);
/* Sends the page (taking its buffer) as text/html with the security headers. */
enum MHD_Result ui_send(struct ui_page *p, int status);
/* Sends a short page with a message (escaped). */
enum MHD_Result ui_message(struct ui_page *p, int status, const char *title, const char *msg);
/* Sends bytes of a given type (charts, assets), taking body. */
enum MHD_Result ui_send_body(struct srv_req *q, struct MHD_Connection *c, int status, const char *type,
			     char *body, size_t len, int cacheable);

/* A query argument, percent-decoded into buf (NULL when absent or bad). */
const char *ui_arg(struct MHD_Connection *c, const char *name, char *buf, size_t len);
/* Percent-decodes n bytes of a URL path into buf; NULL when bad or too long. */
const char *ui_path_decode(const char *s, size_t n, char *buf, size_t len);
/* A positive integer argument, clamped to [1, max]; def when absent/bad. */
long ui_arg_long(struct MHD_Connection *c, const char *name, long def, long max);

/* Reads the home page's data into the cache (the warm-up thread). */
void ui_warm(struct srv *s);
/* Releases the home page's cached data (at shutdown). */
void ui_cache_release(struct srv_ui *u);

/* Pages. */
enum MHD_Result ui_home(struct ui_page *p);
enum MHD_Result ui_repo(struct ui_page *p, const char *rest);
enum MHD_Result ui_stats(struct ui_page *p);
enum MHD_Result ui_chart(struct srv_req *q, struct MHD_Connection *c);
enum MHD_Result ui_activity(struct ui_page *p);

#endif
