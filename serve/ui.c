/* ui.c - the web pages' entry: dispatch, sign-in (bearer token or a login
 * cookie), the embedded stylesheet and script, and the ring of recent
 * requests. The HTML writer and the page frame are in ui_page.c; the pages
 * themselves in ui_repos.c (home, repo) and ui_stats.c (statistics, charts,
 * activity). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "ui-int.h"

#define COOKIE "hm_ui"
#define MAX_TOKEN 1024


/* ---- state ---- */

static void *warm_main(void *arg)
{
	ui_warm(arg);
	return NULL;
}

enum hm_err srv_ui_init(struct srv *s)
{
	struct srv_ui *u = calloc(1, sizeof(*u));
	if (!u)
		return hm_fail(s->ctx, HM_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&u->mu, NULL);
	pthread_mutex_init(&u->cache_mu, NULL);
	s->ui = u;
	u->warm_started = !pthread_create(&u->warm, NULL, warm_main, s);
	return HM_OK;
}

void srv_ui_free(struct srv *s)
{
	if (!s->ui)
		return;
	if (s->ui->warm_started)
		pthread_join(s->ui->warm, NULL);
	ui_cache_release(s->ui);
	pthread_mutex_destroy(&s->ui->mu);
	pthread_mutex_destroy(&s->ui->cache_mu);
	free(s->ui);
	s->ui = NULL;
}

void srv_ui_log(struct srv *s, const struct srv_req *q, uint64_t bytes, double seconds)
{
	struct srv_ui *u = s->ui;
	struct ui_logent *e;
	if (!u)
		return;
	pthread_mutex_lock(&u->mu);
	e = &u->ring[u->head];
	u->head = (u->head + 1) % UI_RING;
	if (u->count < UI_RING)
		u->count++;
	e->at = q->started_at;
	snprintf(e->client, sizeof(e->client), "%s", q->client);
	snprintf(e->method, sizeof(e->method), "%s", q->method);
	snprintf(e->url, sizeof(e->url), "%s", q->url ? q->url : "");
	snprintf(e->repo, sizeof(e->repo), "%s", q->repo);
	e->status = q->status;
	e->bytes = bytes;
	e->seconds = seconds;
	snprintf(e->cache, sizeof(e->cache), "%s", q->cache ? q->cache : "");
	pthread_mutex_unlock(&u->mu);
}

/* The value of a field of an application/x-www-form-urlencoded body. */
static const char *body_field(const struct srv_req *q, const char *name, char *buf, size_t len)
{
	const char *s = q->body.buf, *end;
	size_t nl = strlen(name);
	if (!s)
		return NULL;
	end = s + q->body.len;
	while (s < end) {
		const char *amp = memchr(s, '&', (size_t)(end - s));
		const char *fe = amp ? amp : end;
		if ((size_t)(fe - s) > nl && !strncmp(s, name, nl) && s[nl] == '=')
			return srv_pct_decode(s + nl + 1, (size_t)(fe - s) - nl - 1, buf, len, 1) < 0 ? NULL : buf;
		s = fe + 1;
	}
	return NULL;
}

/* ---- signing in ---- */

/* The token in the login cookie (stored hex-encoded: any byte survives). */
static int cookie_token(struct MHD_Connection *c, char *tok, size_t len)
{
	const char *v = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, COOKIE);
	size_t n = v ? strlen(v) : 0, k = 0;
	if (!n || n % 2 || n / 2 >= len)
		return 0;
	for (size_t i = 0; i < n; i += 2) {
		int a = srv_hexval((unsigned char)v[i]), b = srv_hexval((unsigned char)v[i + 1]);
		if (a < 0 || b < 0 || !(a | b))
			return 0;
		tok[k++] = (char)(a * 16 + b);
	}
	tok[k] = 0;
	return 1;
}

/* 0: refused; 1: open or bearer; 2: the cookie. */
static int signed_in(struct srv *s, struct MHD_Connection *c)
{
	const char *h;
	char tok[MAX_TOKEN + 1];
	int ok = 0;
	if (!s->o->ntokens)
		return 1;
	h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	if (h && !strncasecmp(h, "Bearer ", 7)) {
		h += 7;
		while (*h == ' ')
			h++;
		if (srv_token_ok(s, h))
			return 1;
	}
	if (cookie_token(c, tok, sizeof(tok)))
		ok = srv_token_ok(s, tok) ? 2 : 0;
	memset(tok, 0, sizeof(tok));
	return ok;
}

static enum MHD_Result login_page(struct ui_page *p, int status, const char *msg)
{
	ui_begin(p, "Sign in", NULL);
	ui_raw(p, "<h1>Sign in</h1><p>This mirror asks for a token (<code>serve --token-file</code>). "
		  "Scripts and clients send it as <code>Authorization: Bearer TOKEN</code>.</p>");
	if (msg) {
		ui_raw(p, "<p class=\"msg\">");
		ui_text(p, msg);
		ui_raw(p, "</p>");
	}
	ui_raw(p, "<form class=\"login\" method=\"post\" action=\"/ui/login\"><label>Token "
		  "<input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus></label>"
		  "<button>Sign in</button></form>");
	ui_end(p);
	return ui_send(p, status);
}

static enum MHD_Result redirect(struct srv_req *q, struct MHD_Connection *c, const char *to, const char *cookie)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!r)
		return MHD_NO;
	return srv_queue(q, c, 303, r,
			 srv_header(r, "Location", to) | srv_header(r, "Cache-Control", "no-store") |
				 (cookie ? srv_header(r, "Set-Cookie", cookie) : 0));
}

static enum MHD_Result login_post(struct ui_page *p)
{
	struct srv *s = p->q->s;
	char tok[MAX_TOKEN + 1], cookie[2 * MAX_TOKEN + 128];
	const char *t = body_field(p->q, "token", tok, sizeof(tok));
	enum MHD_Result ret;
	if (!s->o->ntokens)
		return redirect(p->q, p->c, "/", NULL);
	if (!t || !*t || !srv_token_ok(s, t)) {
		memset(tok, 0, sizeof(tok));
		return login_page(p, 401, "That token is not accepted.");
	}
	size_t k = (size_t)snprintf(cookie, sizeof(cookie), COOKIE "=");
	util_hex((const unsigned char *)t, strlen(t), cookie + k);
	k = strlen(cookie);
	snprintf(cookie + k, sizeof(cookie) - k, "; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000");
	ret = redirect(p->q, p->c, "/", cookie);
	memset(tok, 0, sizeof(tok));
	memset(cookie, 0, sizeof(cookie));
	return ret;
}

/* ---- the embedded assets ---- */

static const char app_css[] =
	":root{--fg:#1d232b;--mut:#5b6673;--bg:#fff;--alt:#f5f7fa;--line:#dde3ea;--acc:#2f6fd0;--ok:#1f7a3a;--bad:#b42318}\n"
	"*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;"
	"color:var(--fg);background:var(--bg)}\n"
	"header{display:flex;flex-wrap:wrap;align-items:center;gap:.4em 1.2em;padding:.6em 1.2em;background:#14213d;color:#fff}\n"
	"header a{color:#dfe7f5;text-decoration:none}header a.on,header a:hover{color:#fff;text-decoration:underline}\n"
	".brand{font-weight:700;font-size:1.15em;color:#fff!important}nav{display:flex;gap:1em;flex-wrap:wrap}\n"
	"form.out{margin-left:auto}form.out button{font-size:.85em}\n"
	"main{max-width:1200px;margin:0 auto;padding:1em 1.2em 2em}h1{font-size:1.5em;margin:.3em 0 .6em;overflow-wrap:anywhere}\n"
	"h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid var(--line);padding-bottom:.2em}"
	"h3{font-size:.95em;margin:.8em 0 .3em;color:var(--mut)}pre{margin:0}\n"
	"a{color:var(--acc)}code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em}\n"
	".cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.6em;margin:.4em 0 1em}\n"
	".card{background:var(--alt);border:1px solid var(--line);border-radius:6px;padding:.5em .7em}\n"
	".card b{display:block;font-size:1.2em;overflow-wrap:anywhere}.card span{color:var(--mut);font-size:.85em}\n"
	".scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}table{border-collapse:collapse;width:100%}\n"
	"th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid var(--line);vertical-align:top}\n"
	"th{background:var(--alt);font-weight:600;white-space:nowrap}td.num,th.num{text-align:right;white-space:nowrap}\n"
	"tbody tr:hover{background:#f0f5ff}td.name{overflow-wrap:anywhere;min-width:12em}\n"
	".sha{font-family:ui-monospace,monospace;font-size:.8em;color:var(--mut);word-break:break-all}\n"
	".badge{display:inline-block;padding:0 .45em;margin:0 .2em .1em 0;border-radius:9px;background:#e6eefb;font-size:.8em}\n"
	".pass{color:var(--ok);font-weight:600}.fail{color:var(--bad);font-weight:600}.mut{color:var(--mut)}\n"
	".ctl{background:#fde2e1;color:var(--bad)}.msg{padding:.6em .8em;background:#fff4e5;border:1px solid #f0c36d;border-radius:6px}\n"
	"form.bar{display:flex;flex-wrap:wrap;gap:.5em;align-items:end;margin:.5em 0}\n"
	"form.bar label{display:flex;flex-direction:column;font-size:.85em;color:var(--mut)}\n"
	"input,select,button{font:inherit;padding:.3em .5em;border:1px solid var(--line);border-radius:5px}\n"
	"button{background:var(--acc);color:#fff;border-color:var(--acc);cursor:pointer}input[type=search]{min-width:16em}\n"
	".pager{display:flex;gap:1em;align-items:center;margin:.7em 0}\n"
	"pre.cmd{background:#0f1722;color:#e8eef7;padding:.7em 4.8em .7em .9em;border-radius:6px;overflow-x:auto;white-space:pre}\n"
	".cmdbox{position:relative}.cmdbox button.copy{position:absolute;top:.4em;right:.4em;font-size:.75em;padding:.15em .5em}\n"
	"img.chart{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px;background:#fff}\n"
	".charts{display:grid;grid-template-columns:1fr;gap:1em;max-width:960px}figure{margin:0}\n"
	"progress{width:12em}footer{color:var(--mut);font-size:.8em;text-align:center;padding:1em}\n"
	".scaleout{border:1px dashed var(--line);border-radius:6px;padding:.5em .8em;color:var(--mut)}\n"
	"@media (max-width:640px){main{padding:.6em}th,td{padding:.3em .35em}.hide-s{display:none}"
	"input[type=search]{min-width:0;width:100%}}\n";

/* Live filtering of the home page (the same server-rendered rows, fetched
 * as the user types), and copy buttons on commands. Without script the
 * search box is a plain GET form and the commands are selectable text. */
static const char app_js[] =
	"'use strict';\n"
	"document.addEventListener('DOMContentLoaded',function(){\n"
	" var f=document.getElementById('search'),box=document.getElementById('repos');\n"
	" if(f&&box&&window.fetch&&window.DOMParser){var t=null,seq=0;\n"
	"  f.addEventListener('input',function(){clearTimeout(t);t=setTimeout(function(){\n"
	"   var u='/?'+new URLSearchParams(new FormData(f)).toString(),my=++seq;\n"
	"   fetch(u,{credentials:'same-origin'}).then(function(r){return r.ok?r.text():null}).then(function(h){\n"
	"    if(!h||my!==seq)return;var d=new DOMParser().parseFromString(h,'text/html'),n=d.getElementById('repos');\n"
	"    if(n){box.replaceWith(n);box=n;history.replaceState(null,'',u);}\n"
	"   }).catch(function(){});},200);});}\n"
	" document.querySelectorAll('pre.cmd').forEach(function(pre){\n"
	"  var b=document.createElement('button');b.type='button';b.className='copy';b.textContent='Copy';\n"
	"  b.addEventListener('click',function(){var s=pre.textContent,done=function(){b.textContent='Copied';"
	"setTimeout(function(){b.textContent='Copy'},1500)};\n"
	"   if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(s).then(done,function(){});}\n"
	"   else{var r=document.createRange();r.selectNodeContents(pre);var sel=getSelection();sel.removeAllRanges();"
	"sel.addRange(r);try{document.execCommand('copy');done();}catch(e){}}});\n"
	"  pre.parentNode.appendChild(b);});\n"
	"});\n";

static const char favicon[] =
	"<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><rect width=\"16\" height=\"16\" rx=\"3\""
	" fill=\"#14213d\"/><path d=\"M4 4v8M12 4v8M4 8h8\" stroke=\"#fff\" stroke-width=\"2\"/></svg>\n";

static enum MHD_Result asset(struct srv_req *q, struct MHD_Connection *c, const char *type, const char *data)
{
	char *copy = util_strdup(data);
	if (!copy)
		return MHD_NO;
	return ui_send_body(q, c, 200, type, copy, strlen(copy), 1);
}

/* ---- dispatch ---- */

int srv_ui_claims(const struct srv *s, const char *url)
{
	struct srv_route r;
	if (!s->ui || !url)
		return 0;
	if (!strcmp(url, "/"))
		return 1;
	if (strncmp(url, "/ui", 3) || (url[3] && url[3] != '/'))
		return 0;
	/* "/ui/x/resolve/main/f" is the file of a repo "ui/x": the API's */
	srv_route_parse(url, &r);
	return r.what == R_NONE && !r.bad;
}

enum MHD_Result srv_ui_handle(struct srv_req *q, struct MHD_Connection *c, const char *url, const char *method)
{
	struct ui_page page;
	int post = !strcmp(method, "POST"), who;
	enum MHD_Result ret;

	memset(&page, 0, sizeof(page));
	page.q = q;
	page.c = c;
	q->ui = 1;
	if (strcmp(method, "GET") && strcmp(method, "HEAD") && !post)
		return srv_send_error(q, c, 405, NULL, "method not allowed");
	if (!strcmp(url, "/ui/app.css"))
		return asset(q, c, "text/css; charset=utf-8", app_css);
	if (!strcmp(url, "/ui/app.js"))
		return asset(q, c, "text/javascript; charset=utf-8", app_js);
	if (!strcmp(url, "/ui/favicon.svg"))
		return asset(q, c, "image/svg+xml", favicon);
	if (!strcmp(url, "/ui/login"))
		return post ? login_post(&page) : login_page(&page, 200, NULL);
	if (!strcmp(url, "/ui/logout") && post)
		return redirect(q, c, "/ui/login", COOKIE "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
	if (q->body_too_big)
		return srv_send_error(q, c, 413, NULL, "request body too large");
	who = signed_in(q->s, c);
	if (!who)
		return login_page(&page, 401, NULL);
	page.cookie_auth = who == 2;
	if (post)
		return srv_send_error(q, c, 405, NULL, "method not allowed");
	if (!strcmp(url, "/") || !strcmp(url, "/ui") || !strcmp(url, "/ui/"))
		ret = ui_home(&page);
	else if (!strncmp(url, "/ui/repo/", 9))
		ret = ui_repo(&page, url + 9);
	else if (!strcmp(url, "/ui/stats"))
		ret = ui_stats(&page);
	else if (!strcmp(url, "/ui/chart.svg"))
		ret = ui_chart(q, c);
	else if (!strcmp(url, "/ui/activity"))
		ret = ui_activity(&page);
	else
		ret = ui_message(&page, 404, "Not found", "There is no page at this address.");
	util_buf_release(&page.b);
	return ret;
}
