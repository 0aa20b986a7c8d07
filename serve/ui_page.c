/* ui_page.c - what every web page is written with, below ui.c (sign-in,
 * dispatch) and the pages (ui_repos.c, ui_stats.c): the HTML writer and its
 * escapers, the page frame, sending a page with its security headers, and
 * query arguments.
 *
 * Every page is sent with a Content-Security-Policy that allows only this
 * origin's stylesheet, script and images: no inline script runs even if an
 * escaper were wrong, and nothing is loaded from elsewhere. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "ui-int.h"

static const char csp[] = "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self';"
			  " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/* ---- writing HTML ---- */

void ui_raw(struct ui_page *p, const char *s)
{
	if (!p->err && util_buf_adds(&p->b, s))
		p->err = 1;
}

void ui_fmt(struct ui_page *p, const char *fmt, ...)
{
	char small[512], *big = NULL;
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0) {
		p->err = 1;
		return;
	}
	if ((size_t)n >= sizeof(small)) {
		big = malloc((size_t)n + 1);
		if (!big) {
			p->err = 1;
			return;
		}
		va_start(ap, fmt);
		vsnprintf(big, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	ui_raw(p, big ? big : small);
	free(big);
}

/* Characters that change how text around them is shown without showing
 * themselves: bidirectional overrides and marks, zero-width ones. */
static int invisible(long cp)
{
	return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0) || cp == 0xad || cp == 0x61c ||
	       (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x206f) ||
	       cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb);
}

void ui_textn(struct ui_page *p, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run = 0; /* run: bytes at u + i - run that need no escape */
	while (i < n && !p->err) {
		size_t len;
		long cp = util_utf8_next(u + i, n - i, &len);
		const char *e = NULL;
		char tmp[24];
		switch (cp) {
		case '&': e = "&amp;"; break;
		case '<': e = "&lt;"; break;
		case '>': e = "&gt;"; break;
		case '"': e = "&quot;"; break;
		case '\'': e = "&#39;"; break;
		default:
			if (cp < 0)
				e = "\xef\xbf\xbd"; /* U+FFFD */
			else if (invisible(cp)) {
				snprintf(tmp, sizeof(tmp), "[U+%04lX]", cp);
				e = tmp;
			}
		}
		if (e) {
			if (run && util_buf_add(&p->b, u + i - run, run))
				p->err = 1;
			run = 0;
			ui_raw(p, e);
		} else {
			run += len;
		}
		i += len;
	}
	if (run && !p->err && util_buf_add(&p->b, u + i - run, run))
		p->err = 1;
}

void ui_text(struct ui_page *p, const char *s)
{
	if (s)
		ui_textn(p, s, strlen(s));
}

void ui_url(struct ui_page *p, const char *s, int keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	char buf[256];
	size_t k = 0;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (k > sizeof(buf) - 4) {
			buf[k] = 0;
			ui_raw(p, buf);
			k = 0;
		}
		if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
		    *c == '.' || *c == '_' || *c == '~' || (keep_slash && *c == '/')) {
			buf[k++] = (char)*c;
		} else {
			buf[k++] = '%';
			buf[k++] = hex[*c >> 4];
			buf[k++] = hex[*c & 15];
		}
	}
	buf[k] = 0;
	ui_raw(p, buf);
}

void ui_size_cell(struct ui_page *p, uint64_t n)
{
	char h[32];
	ui_fmt(p, "<td class=\"num\" data-v=\"%llu\" title=\"%llu bytes\">%s</td>", (unsigned long long)n,
	       (unsigned long long)n, util_human_size(n, h, sizeof(h)));
}

void ui_num_cell(struct ui_page *p, uint64_t n)
{
	ui_fmt(p, "<td class=\"num\" data-v=\"%llu\">%llu</td>", (unsigned long long)n, (unsigned long long)n);
}

const char *ui_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (t <= 0 || !gmtime_r(&tt, &tm))
		snprintf(buf, len, "-");
	else
		strftime(buf, len, "%Y-%m-%d %H:%M UTC", &tm);
	return buf;
}

void ui_repo_href(struct ui_page *p, const char *type, const char *name)
{
	ui_raw(p, "/ui/repo/");
	ui_url(p, type, 0);
	ui_raw(p, "/");
	ui_url(p, name, 1);
}

/* ---- the frame ---- */

void ui_begin(struct ui_page *p, const char *title, const char *active)
{
	static const char *const nav[][2] = {{"home", "/"}, {"stats", "/ui/stats"}, {"activity", "/ui/activity"}};
	static const char *const names[] = {"Repositories", "Statistics", "Activity"};
	ui_raw(p, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
		  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
		  "<link rel=\"icon\" href=\"/ui/favicon.svg\"><link rel=\"stylesheet\" href=\"/ui/app.css\"><script src=\"/ui/app.js\" defer></script>");
	if (p->extra_head)
		ui_raw(p, p->extra_head);
	ui_raw(p, "<title>");
	ui_text(p, title);
	ui_raw(p, " - hubmirror</title></head>\n<body><header><a class=\"brand\" href=\"/\">hubmirror</a><nav>");
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		ui_fmt(p, "<a href=\"%s\"%s>%s</a>", nav[i][1], active && !strcmp(active, nav[i][0]) ? " class=\"on\"" : "",
		       names[i]);
	ui_raw(p, "</nav>");
	if (p->cookie_auth)
		ui_raw(p, "<form class=\"out\" method=\"post\" action=\"/ui/logout\"><button>Sign out</button></form>");
	ui_raw(p, "</header>\n<main>");
}

void ui_end(struct ui_page *p)
{
	ui_raw(p, "</main><footer>hubmirror: a Hugging Face mirror. API at this address: "
		  "<code>HF_ENDPOINT</code>. Data from the store's index.</footer></body></html>\n");
}

static int security_headers(struct MHD_Response *r, const char *policy)
{
	return srv_header(r, "Content-Security-Policy", policy) | srv_header(r, "X-Content-Type-Options", "nosniff") |
	       srv_header(r, "Referrer-Policy", "no-referrer") | srv_header(r, "X-Frame-Options", "DENY");
}

enum MHD_Result ui_send_body(struct srv_req *q, struct MHD_Connection *c, int status, const char *type,
			     char *body, size_t len, int cacheable)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	int bad;
	if (!r) {
		free(body);
		return MHD_NO;
	}
	bad = srv_header(r, "Content-Type", type) |
	      srv_header(r, "Cache-Control", cacheable ? "max-age=300" : "no-store") |
	      security_headers(r, !strncmp(type, "text/html", 9) ? csp : "default-src 'none'");
	if (status == 401)
		bad |= srv_header(r, "WWW-Authenticate", "Bearer");
	q->planned = len;
	return srv_queue(q, c, (unsigned)status, r, bad);
}

enum MHD_Result ui_send(struct ui_page *p, int status)
{
	if (p->err) {
		util_buf_release(&p->b);
		return srv_send_error(p->q, p->c, 500, NULL, "out of memory");
	}
	size_t len = p->b.len;
	char *body = util_buf_detach(&p->b);
	if (!body)
		return MHD_NO;
	return ui_send_body(p->q, p->c, status, "text/html; charset=utf-8", body, len, 0);
}

enum MHD_Result ui_message(struct ui_page *p, int status, const char *title, const char *msg)
{
	util_buf_release(&p->b);
	p->err = 0;
	ui_begin(p, title, NULL);
	ui_raw(p, "<h1>");
	ui_text(p, title);
	ui_raw(p, "</h1><p class=\"msg\">");
	ui_text(p, msg);
	ui_raw(p, "</p><p><a href=\"/\">All repositories</a></p>");
	ui_end(p);
	return ui_send(p, status);
}

/* ---- query arguments ---- */

/* Percent-decodes s into buf ('+' as a space too with plus); NULL when
 * bad, holding a NUL, or too long. */
static const char *url_decode(const char *s, size_t n, char *buf, size_t len, int plus)
{
	return srv_pct_decode(s, n, buf, len, plus) < 0 ? NULL : buf;
}

const char *ui_arg(struct MHD_Connection *c, const char *name, char *buf, size_t len)
{
	const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
	if (!v)
		return NULL;
	return url_decode(v, strlen(v), buf, len, 1);
}

const char *ui_path_decode(const char *s, size_t n, char *buf, size_t len)
{
	return url_decode(s, n, buf, len, 0);
}

long ui_arg_long(struct MHD_Connection *c, const char *name, long def, long max)
{
	char buf[32], *end;
	const char *v = ui_arg(c, name, buf, sizeof(buf));
	long n;
	if (!v || !*v)
		return def;
	n = strtol(v, &end, 10);
	if (*end || n < 1)
		return def;
	return n > max ? max : n;
}
