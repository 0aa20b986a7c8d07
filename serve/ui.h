/* ui.h - the web pages of `serve` (server-rendered HTML, assets embedded):
 * what server.c calls. Pages live at "/" and under "/ui/", and only at
 * paths the Hub API does not use (the route parser answers R_NONE). */
#ifndef SERVE_UI_H
#define SERVE_UI_H

#include <microhttpd.h>
#include <stdint.h>
#include "../util/hm.h"

struct srv;
struct srv_req;

/* Creates the pages' state on s (s->ui). HM_ERR_NOMEM on failure. */
enum hm_err srv_ui_init(struct srv *s) HM_MUST_CHECK;
/* Frees it; accepts a server without one. */
void srv_ui_free(struct srv *s);
/* 1 when url is a page's (and the pages are on): "/" or "/ui", "/ui/...",
 * never a path the API answers. */
int srv_ui_claims(const struct srv *s, const char *url);
/* Answers a page (after the request body, if any, was read into q->body).
 * Does its own authentication: a bearer token, or the login cookie. */
enum MHD_Result srv_ui_handle(struct srv_req *q, struct MHD_Connection *c, const char *url, const char *method);
/* Remembers a completed request for the activity page (a ring of the last
 * ones; the pages' own requests are not kept). */
void srv_ui_log(struct srv *s, const struct srv_req *q, uint64_t bytes, double seconds);

#endif
