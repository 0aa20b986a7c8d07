/* ui_repos.c - the home page (what is mirrored, the store, the server's
 * modes) and a repo's page (revisions, refs, files, conversions, smoke
 * tests, downloads, and the commands that use this mirror). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/statvfs.h>
#include "ui-int.h"
#include "../store/artifacts.h"
#include "../store/index.h"
#include "../store/smoke.h"
#include "../store/stats.h"

/* ---- home ---- */

struct home_row {
	const struct store_repo_info *ri;
	const struct store_served_row *sv; /* NULL: never served */
};

static int cmp_served_key(const void *a, const void *b)
{
	const struct store_served_row *const *x = a, *const *y = b;
	return strcmp((*x)->key, (*y)->key);
}

static uint64_t served_files(const struct home_row *r)
{
	return r->sv ? r->sv->files : 0;
}

static int cmp_name(const void *a, const void *b)
{
	const struct home_row *x = a, *y = b;
	int c = strcmp(x->ri->name, y->ri->name);
	return c ? c : strcmp(x->ri->type, y->ri->type);
}

static int cmp_size(const void *a, const void *b)
{
	const struct home_row *x = a, *y = b;
	return x->ri->bytes != y->ri->bytes ? (x->ri->bytes < y->ri->bytes ? 1 : -1) : cmp_name(a, b);
}

static int cmp_served(const void *a, const void *b)
{
	uint64_t u = served_files(a), v = served_files(b);
	return u != v ? (u < v ? 1 : -1) : cmp_name(a, b);
}

static int cmp_recent(const void *a, const void *b)
{
	const struct home_row *x = a, *y = b;
	return x->ri->last_pulled != y->ri->last_pulled ? (x->ri->last_pulled < y->ri->last_pulled ? 1 : -1)
							: cmp_name(a, b);
}

static const struct {
	const char *name, *label;
	int (*cmp)(const void *, const void *);
} sorts[] = {
	{"name", "name", cmp_name},
	{"size", "size", cmp_size},
	{"served", "files served", cmp_served},
	{"recent", "last pulled", cmp_recent},
};

/* The page's own URL with another page number (the filter kept). */
static void home_href(struct ui_page *p, const char *qs, const char *type, const char *sort, long page)
{
	ui_raw(p, "/?q=");
	ui_url(p, qs, 0);
	ui_raw(p, "&amp;type=");
	ui_url(p, type, 0);
	ui_raw(p, "&amp;sort=");
	ui_url(p, sort, 0);
	ui_fmt(p, "&amp;page=%ld", page);
}

/* The upstream URL without credentials (user:pass@ never shown). */
static void upstream_text(struct ui_page *p, const char *url)
{
	const char *scheme = strstr(url, "://"), *host = scheme ? scheme + 3 : url, *at, *slash;
	slash = strchr(host, '/');
	at = memchr(host, '@', slash ? (size_t)(slash - host) : strlen(host));
	if (at) {
		ui_textn(p, url, (size_t)(host - url));
		ui_text(p, at + 1);
	} else {
		ui_text(p, url);
	}
}

static void card_size(struct ui_page *p, const char *label, uint64_t n, const char *id)
{
	char h[32];
	ui_fmt(p, "<div class=\"card\" id=\"%s\" data-v=\"%llu\"><b title=\"%llu bytes\">%s</b><span>%s</span></div>", id,
	       (unsigned long long)n, (unsigned long long)n, util_human_size(n, h, sizeof(h)), label);
}

/* Only SCHEME://HOST[:PORT] of an external tracker's URL: its path may hold
 * a passkey, and userinfo a password. */
static void tracker_text(struct ui_page *p, const char *url)
{
	const char *h = strstr(url, "://"), *e, *at;
	if (!h) {
		ui_raw(p, "(external)");
		return;
	}
	h += 3;
	e = h + strcspn(h, "/?#");
	at = memchr(h, '@', (size_t)(e - h));
	ui_textn(p, url, (size_t)(h - url));
	if (at)
		h = at + 1;
	ui_textn(p, h, (size_t)(e - h));
}

/* The P2P part of the scale-out line: off, or what the swarm does now. */
static void p2p_state(struct ui_page *p)
{
	struct srv *s = p->q->s;
	const struct srv_opts *o = s->o;
	uint64_t up, down;
	int peers, tport;
	size_t torrents;
	char h1[32], h2[32], thost[256];

	if (!o->p2p) {
		ui_raw(p, "<span id=\"p2p\" data-on=\"0\">P2P swarm: off (start serve with <code>--p2p</code> "
			  "to seed blobs to lab machines over BitTorrent v2)</span>");
		return;
	}
	srv_p2p_totals(s, &up, &down, &peers, &torrents);
	ui_fmt(p, "<span id=\"p2p\" data-on=\"1\" data-torrents=\"%zu\" data-peers=\"%d\" data-up=\"%llu\" "
		  "data-down=\"%llu\">P2P swarm: %s %zu blob%s to %d peer%s, %s sent, %s received", torrents, peers,
	       (unsigned long long)up, (unsigned long long)down, o->upstream ? "edge, sharing" : "seeding", torrents,
	       torrents == 1 ? "" : "s", peers, peers == 1 ? "" : "s", util_human_size(up, h1, sizeof(h1)),
	       util_human_size(down, h2, sizeof(h2)));
	if ((tport = srv_p2p_own_tracker(s, thost, sizeof(thost))) > 0) {
		ui_raw(p, "; tracker: opentracker on <code>");
		ui_text(p, thost[0] ? thost : "0.0.0.0");
		ui_fmt(p, ":%d</code>", tport);
	} else if (o->tracker) {
		ui_raw(p, "; tracker: <code>");
		tracker_text(p, o->tracker);
		ui_raw(p, "</code>");
	} else if (o->upstream) {
		ui_raw(p, "; tracker: the upstream mirror's");
	}
	if (o->p2p_upload_rate > 0)
		ui_fmt(p, "; upload capped at %s/s", util_human_size((uint64_t)o->p2p_upload_rate, h1, sizeof(h1)));
	ui_raw(p, o->p2p_private ? "; gated repos shared too (--p2p-private)" : "");
	ui_raw(p, "</span>");
}

static void home_status(struct ui_page *p, size_t nrepos)
{
	struct srv *s = p->q->s;
	struct srv_ui *u = s->ui;
	const struct srv_opts *o = s->o;
	uint64_t disk = u->du_disk, logical = u->du_logical, saved = u->du_saved;
	struct statvfs vf;
	int du = u->have_du;

	ui_raw(p, "<div class=\"cards\">");
	ui_fmt(p, "<div class=\"card\" id=\"nrepos\" data-v=\"%zu\"><b>%zu</b><span>repositories%s</span></div>", nrepos,
	       nrepos, o->nallow ? " (shown by --allow)" : "");
	if (du) {
		card_size(p, u->remote ? "local cache on disk" : "store on disk", disk, "disk");
		card_size(p, "files in all revisions", logical, "logical");
		card_size(p, "saved by deduplication", saved, "saved");
	}
	if (!statvfs(u->local_dir[0] ? u->local_dir : o->store_dir, &vf))
		card_size(p, u->remote ? "free disk (cache)" : "free disk", (uint64_t)vf.f_bavail * vf.f_frsize, "free");
	ui_raw(p, "</div><div class=\"cards\">");
	ui_raw(p, "<div class=\"card\" id=\"upstream\"><b>");
	if (o->upstream && o->upstream->endpoint && !o->offline)
		upstream_text(p, o->upstream->endpoint);
	else
		ui_raw(p, "none");
	ui_raw(p, "</b><span>upstream (pull-through)</span></div>");
	ui_fmt(p, "<div class=\"card\" id=\"mode\"><b>%s</b><span>mode</span></div>",
	       o->offline ? "offline" : o->upstream ? "online, pull-through" : "store only");
	ui_fmt(p, "<div class=\"card\" id=\"tokens\"><b>%s</b><span>%s</span></div>",
	       o->ntokens ? "token required" : "open",
	       o->forward_token ? "client tokens forwarded upstream" : "access");
	if (o->nallow) {
		ui_raw(p, "<div class=\"card\" id=\"allow\"><b>");
		for (size_t i = 0; i < o->nallow; i++) {
			ui_raw(p, i ? " " : "");
			ui_raw(p, "<code>");
			ui_text(p, o->allow[i]);
			ui_raw(p, "</code>");
		}
		ui_raw(p, "</b><span>served repos (--allow)</span></div>");
	}
	ui_raw(p, "</div>");
	/* Scale-out state: the P2P swarm (torrents seeded, peers, bytes, the
	 * tracker) and the object-storage backend (an s3:// store). */
	ui_raw(p, "<div class=\"scaleout\" id=\"scaleout\"><b>Scale-out</b>: ");
	p2p_state(p);
	ui_raw(p, "; <span id=\"objstore\">object storage: ");
	if (u->remote) {
		ui_raw(p, "<code>");
		ui_text(p, u->store_name);
		ui_raw(p, "</code> (blobs in the bucket, LFS files sent as presigned redirects; this node's index is a "
			  "cache of it)</span></div>");
	} else {
		ui_raw(p, "not configured (blobs on the local disk)</span></div>");
	}
}

void ui_cache_release(struct srv_ui *u)
{
	store_repo_info_free(u->repos, u->nrepos);
	u->repos = NULL;
	u->nrepos = 0;
	store_report_release(&u->served);
	free(u->sv);
	u->sv = NULL;
	u->nsv = 0;
	u->have_repos = u->have_served = u->have_du = 0;
}

/* Brings the cached home data up to date (under cache_mu). */
static enum hm_err refresh(struct srv *s, struct hm_ctx *ctx)
{
	struct srv_ui *u = s->ui;
	struct store *st = srv_store_take(s);
	uint64_t version;
	double now = util_now();
	enum hm_err err;

	if (!st)
		return hm_fail(ctx, HM_ERR_DB, "cannot open the store");
	if ((err = store_repos_version(ctx, st, &version)))
		goto out;
	u->remote = store_is_remote(st);
	snprintf(u->store_name, sizeof(u->store_name), "%s", store_name(st));
	snprintf(u->local_dir, sizeof(u->local_dir), "%s", store_dir(st));
	if (!u->have_repos || version != u->version) {
		store_repo_info_free(u->repos, u->nrepos);
		u->repos = NULL;
		u->nrepos = 0;
		u->have_repos = 0;
		if ((err = store_list_repos(ctx, st, &u->repos, &u->nrepos)))
			goto out;
		u->have_repos = 1;
		u->version = version;
	}
	if (!u->have_served || now - u->served_at > UI_SERVED_TTL) {
		struct store_stats_query sq = {NULL, INT64_MIN, INT64_MAX, 0, 0, 0, 1, STORE_SCAN_AUTO, STORE_SOURCE_ALL};
		store_report_release(&u->served);
		free(u->sv);
		u->sv = NULL;
		u->nsv = 0;
		u->have_served = 0;
		if ((err = store_report(ctx, st, &sq, &u->served)))
			goto out;
		if (!(u->sv = calloc(u->served.nserved + 1, sizeof(*u->sv)))) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < u->served.nserved; i++)
			if (u->served.served[i].key)
				u->sv[u->nsv++] = &u->served.served[i];
		qsort(u->sv, u->nsv, sizeof(*u->sv), cmp_served_key);
		u->have_served = 1;
		u->served_at = now;
	}
	/* usage by time only: a walk of blobs/ is the slow part */
	if (!u->have_du || now - u->du_at > UI_DU_TTL) {
		struct store_du d;
		struct hm_ctx quiet = {0};
		memset(&d, 0, sizeof(d));
		/* usage is shown when it can be read; the page works without */
		u->have_du = !store_du(&quiet, st, 1, &d);
		u->du_disk = d.disk;
		u->du_logical = d.logical;
		u->du_unique = d.unique;
		u->du_saved = d.saved;
		u->du_blobs = d.nblobs;
		u->du_at = now;
		store_du_release(&d);
	}
out:
	srv_store_put(s, st);
	return err;
}

void ui_warm(struct srv *s)
{
	struct hm_ctx quiet = {0};
	pthread_mutex_lock(&s->ui->cache_mu);
	if (refresh(s, &quiet)) {
		/* the first page view tries again and shows the error */
	}
	pthread_mutex_unlock(&s->ui->cache_mu);
}

/* The search form of the home page, with the query's values. */
static void home_form(struct ui_page *p, const char *qs, const char *type, size_t si)
{
	ui_raw(p, "<form class=\"bar\" id=\"search\" method=\"get\" action=\"/\" role=\"search\">"
		  "<label>Name contains<input type=\"search\" name=\"q\" id=\"q\" value=\"");
	ui_text(p, qs);
	ui_raw(p, "\" placeholder=\"org/name\" autocomplete=\"off\"></label><label>Type<select name=\"type\">");
	ui_fmt(p, "<option value=\"\">all</option><option value=\"model\"%s>models</option>"
		  "<option value=\"dataset\"%s>datasets</option></select></label><label>Sort<select name=\"sort\">",
	       !strcmp(type, "model") ? " selected" : "", !strcmp(type, "dataset") ? " selected" : "");
	for (size_t i = 0; i < sizeof(sorts) / sizeof(sorts[0]); i++)
		ui_fmt(p, "<option value=\"%s\"%s>%s</option>", sorts[i].name, i == si ? " selected" : "", sorts[i].label);
	ui_raw(p, "</select></label><button>Search</button></form>\n<section id=\"repos\">");
}

/* One repository of the home page's table. */
static void home_table_row(struct ui_page *p, const struct home_row *row)
{
	const struct store_repo_info *r = row->ri;
	char h[40];

	ui_raw(p, "<tr data-repo=\"");
	ui_text(p, r->type);
	ui_raw(p, ":");
	ui_text(p, r->name);
	ui_fmt(p, "\"><td><span class=\"badge\">%s</span></td><td class=\"name\"><a href=\"",
	       !strcmp(r->type, "dataset") ? "dataset" : "model");
	ui_repo_href(p, r->type, r->name);
	ui_raw(p, "\">");
	ui_text(p, r->name);
	ui_raw(p, "</a></td>");
	ui_num_cell(p, r->nrevisions);
	ui_size_cell(p, r->bytes);
	ui_fmt(p, "<td class=\"hide-s\">%s</td>", ui_time(r->last_pulled, h, sizeof(h)));
	if (row->sv) {
		char hb[32];
		ui_fmt(p, "<td class=\"num\" data-v=\"%" PRIu64 "\" title=\"%s in %" PRIu64 " requests\">%" PRIu64 "</td>",
		       row->sv->files, util_human_size(row->sv->bytes, hb, sizeof(hb)), row->sv->requests,
		       row->sv->files);
	} else {
		ui_num_cell(p, 0);
	}
	ui_raw(p, "</tr>\n");
}

/* Links to the previous and next pages of the home page's table. */
static void home_pager(struct ui_page *p, const char *qs, const char *type, const char *sort, long page, long pages)
{
	ui_raw(p, "<nav class=\"pager\">");
	if (page > 1) {
		ui_raw(p, "<a rel=\"prev\" href=\"");
		home_href(p, qs, type, sort, page - 1);
		ui_raw(p, "\">&larr; previous</a>");
	}
	ui_fmt(p, "<span id=\"pageof\">page %ld of %ld</span>", page, pages);
	if (page < pages) {
		ui_raw(p, "<a rel=\"next\" href=\"");
		home_href(p, qs, type, sort, page + 1);
		ui_raw(p, "\">next &rarr;</a>");
	}
	ui_raw(p, "</nav>");
}

enum MHD_Result ui_home(struct ui_page *p)
{
	struct srv *s = p->q->s;
	struct srv_ui *u = s->ui;
	struct hm_ctx ctx = {0};
	struct home_row *rows = NULL;
	size_t nrows = 0;
	char qbuf[256], tbuf[16], sbuf[16];
	const char *qs = ui_arg(p->c, "q", qbuf, sizeof(qbuf)), *type = ui_arg(p->c, "type", tbuf, sizeof(tbuf)),
		   *sort = ui_arg(p->c, "sort", sbuf, sizeof(sbuf));
	long page = ui_arg_long(p->c, "page", 1, 1000000), pages;
	size_t si = 0;
	enum hm_err err;
	enum MHD_Result ret;

	if (!qs)
		qs = "";
	if (!type || (strcmp(type, "model") && strcmp(type, "dataset")))
		type = "";
	for (size_t i = 0; sort && i < sizeof(sorts) / sizeof(sorts[0]); i++)
		if (!strcmp(sort, sorts[i].name))
			si = i;
	pthread_mutex_lock(&u->cache_mu);
	if ((err = refresh(s, &ctx))) {
		ret = ui_message(p, 500, "Store unavailable", ctx.errmsg[0] ? ctx.errmsg : hm_strerror(err));
		goto out;
	}
	const struct store_repo_info *ri = u->repos;
	const struct store_served_row **sv = u->sv;
	size_t n = u->nrepos, nsv = u->nsv;
	if (!(rows = calloc(n + 1, sizeof(*rows)))) {
		ret = srv_send_error(p->q, p->c, 500, NULL, "out of memory");
		goto out;
	}
	size_t nvisible = 0;
	for (size_t i = 0; i < n; i++) {
		char key[256];
		struct store_served_row k = {key, 0, 0, 0, 0, 0, 0, 0}, *kp = &k;
		const struct store_served_row **hit;
		if (!srv_repo_allowed(s, ri[i].name))
			continue;
		nvisible++;
		if ((*type && strcmp(type, ri[i].type)) || (*qs && !strcasestr(ri[i].name, qs)))
			continue;
		snprintf(key, sizeof(key), "%s:%s", ri[i].type, ri[i].name);
		hit = bsearch(&kp, sv, nsv, sizeof(*sv), cmp_served_key);
		rows[nrows].ri = &ri[i];
		rows[nrows].sv = hit ? *hit : NULL;
		nrows++;
	}
	if (si)
		qsort(rows, nrows, sizeof(*rows), sorts[si].cmp);
	pages = nrows ? (long)((nrows + UI_PER_PAGE - 1) / UI_PER_PAGE) : 1;
	if (page > pages)
		page = pages;

	ui_begin(p, "Repositories", "home");
	ui_raw(p, "<h1>Mirrored repositories</h1>");
	home_status(p, nvisible);
	home_form(p, qs, type, si);
	ui_fmt(p, "<p class=\"mut\" id=\"count\" data-v=\"%zu\">%zu %s%s</p>", nrows, nrows,
	       nrows == 1 ? "repository" : "repositories", *qs || *type ? " match" : "");
	ui_raw(p, "<div class=\"scroll\"><table id=\"repotable\"><thead><tr><th>Type</th><th>Repository</th>"
		  "<th class=\"num\">Revisions</th><th class=\"num\">Size</th><th class=\"hide-s\">Last pull</th>"
		  "<th class=\"num\">Files served</th></tr></thead><tbody>");
	for (size_t i = (size_t)(page - 1) * UI_PER_PAGE; i < nrows && i < (size_t)page * UI_PER_PAGE; i++)
		home_table_row(p, &rows[i]);
	if (!nrows)
		ui_raw(p, n ? "<tr><td colspan=\"6\">No repository matches.</td></tr>"
			    : "<tr><td colspan=\"6\">The store is empty: <code>hubmirror pull ORG/NAME</code> mirrors a "
			      "repository (or clients pull through, with <code>--upstream</code>).</td></tr>");
	ui_raw(p, "</tbody></table></div>");
	if (pages > 1)
		home_pager(p, qs, type, sorts[si].name, page, pages);
	ui_raw(p, "</section>");
	ui_end(p);
	ret = ui_send(p, 200);
out:
	pthread_mutex_unlock(&u->cache_mu);
	free(rows);
	return ret;
}

/* ---- a repo ---- */

/* Appends s for a POSIX shell: as is when plain, else single-quoted. */
static void sh_word(struct util_buf *b, const char *s, int *err)
{
	int plain = *s != 0;
	for (const char *c = s; *c && plain; c++)
		plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
			strchr("-._/@:=+,", *c);
	if (plain) {
		*err |= util_buf_adds(b, s);
		return;
	}
	*err |= util_buf_adds(b, "'");
	for (const char *c = s; *c; c++)
		*err |= *c == '\'' ? util_buf_adds(b, "'\\''") : util_buf_add(b, c, 1);
	*err |= util_buf_adds(b, "'");
}

/* Appends s as a Python string literal. */
static void py_str(struct util_buf *b, const char *s, int *err)
{
	*err |= util_buf_adds(b, "\"");
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c == '"' || *c == '\\') {
			char e[3] = {'\\', (char)*c, 0};
			*err |= util_buf_adds(b, e);
		} else if (*c < 0x20 || *c == 0x7f) {
			*err |= util_buf_printf(b, "\\x%02x", *c);
		} else {
			*err |= util_buf_add(b, c, 1);
		}
	}
	*err |= util_buf_adds(b, "\"");
}

static void cmd_block(struct ui_page *p, const char *id, const char *title, const char *text)
{
	ui_fmt(p, "<h3>%s</h3><div class=\"cmdbox\"><pre class=\"cmd\" id=\"%s\">", title, id);
	/* line by line: the escaper shows a newline inside a value as [U+000A] */
	for (const char *l = text; *l;) {
		const char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l) : strlen(l);
		ui_textn(p, l, len);
		if (!nl)
			break;
		ui_raw(p, "\n");
		l = nl + 1;
	}
	ui_raw(p, "</pre></div>");
}

static void commands(struct ui_page *p, const char *type, const char *name, const char *rev)
{
	const char *host = srv_safe_host(p->c);
	struct util_buf b = UTIL_BUF_INIT, ep = UTIL_BUF_INIT;
	int e = 0, ds = !strcmp(type, "dataset"), tok = p->q->s->o->ntokens > 0;

	e |= util_buf_printf(&ep, "http://%s", host ? host : "HOST:PORT");
	ui_raw(p, "<h2 id=\"use\">Use this mirror</h2>");
	if (tok)
		ui_raw(p, "<p>This mirror asks for a token: set <code>HF_TOKEN</code> (or pass <code>--token</code>).</p>");
	/* hf download */
	e |= util_buf_printf(&b, "%sHF_ENDPOINT=%s hf download ", tok ? "HF_TOKEN=... " : "", ep.buf);
	sh_word(&b, name, &e);
	if (ds)
		e |= util_buf_adds(&b, " --repo-type dataset");
	if (rev) {
		e |= util_buf_adds(&b, " --revision ");
		sh_word(&b, rev, &e);
	}
	if (!e)
		cmd_block(p, "cmd-hf", "Command line (huggingface_hub)", b.buf);
	util_buf_release(&b);
	/* Python */
	e |= util_buf_printf(&b, "import os\nos.environ[\"HF_ENDPOINT\"] = \"%s\"  # before importing huggingface_hub\n",
			     ep.buf);
	if (tok)
		e |= util_buf_adds(&b, "os.environ[\"HF_TOKEN\"] = \"...\"\n");
	e |= util_buf_adds(&b, "from huggingface_hub import snapshot_download\n\npath = snapshot_download(");
	py_str(&b, name, &e);
	e |= util_buf_printf(&b, ", repo_type=\"%s\"", ds ? "dataset" : "model");
	if (rev) {
		e |= util_buf_adds(&b, ", revision=");
		py_str(&b, rev, &e);
	}
	e |= util_buf_adds(&b, ")");
	if (!e)
		cmd_block(p, "cmd-py", "Python", b.buf);
	util_buf_release(&b);
	/* hubmirror pull */
	e |= util_buf_adds(&b, "hubmirror pull ");
	sh_word(&b, name, &e);
	if (ds)
		e |= util_buf_adds(&b, " --repo-type dataset");
	if (rev) {
		e |= util_buf_adds(&b, " --revision ");
		sh_word(&b, rev, &e);
	}
	e |= util_buf_printf(&b, " --endpoint %s", ep.buf);
	if (!e)
		cmd_block(p, "cmd-pull", "Another hubmirror", b.buf);
	util_buf_release(&b);
	/* a sync manifest line */
	e |= util_buf_printf(&b, "# models.txt, then: hubmirror sync models.txt --endpoint %s --to DIR\n%s%s%s%s", ep.buf,
			     name, rev ? "@" : "", rev ? rev : "", ds ? " type=dataset" : "");
	if (!e)
		cmd_block(p, "cmd-sync", "A line for a sync manifest", b.buf);
	util_buf_release(&b);
	util_buf_release(&ep);
	if (e)
		p->err = 1;
}

/* The download URL of a file: /[datasets/]NAME/resolve/COMMIT/PATH. */
static void file_href(struct ui_page *p, const char *type, const char *name, const char *commit, const char *path)
{
	ui_raw(p, !strcmp(type, "dataset") ? "/datasets/" : "/");
	ui_url(p, name, 1);
	ui_raw(p, "/resolve/");
	ui_url(p, commit, 0);
	ui_raw(p, "/");
	ui_url(p, path, 1);
}

/* The page's own URL with a revision and a directory. */
static void self_href(struct ui_page *p, const char *type, const char *name, const char *rev, const char *dir,
		      long page)
{
	ui_repo_href(p, type, name);
	ui_raw(p, "?rev=");
	ui_url(p, rev, 0);
	if (dir && *dir) {
		ui_raw(p, "&amp;dir=");
		ui_url(p, dir, 0);
	}
	if (page > 1)
		ui_fmt(p, "&amp;page=%ld", page);
	ui_raw(p, "#files");
}

struct dir_ent {
	const char *name;   /* points into a file's path */
	size_t len;
	uint64_t bytes;
	size_t files;
	const struct store_file *f; /* NULL for a directory */
};

static void files_section(struct ui_page *p, const char *type, const char *name, const char *commit, const char *rev,
			  const char *dir, const struct store_file *f, size_t nf)
{
	size_t dl = strlen(dir), nd = 0, nfi = 0;
	struct dir_ent *dirs = calloc(nf + 1, sizeof(*dirs)), *fl = calloc(nf + 1, sizeof(*fl));
	long page = ui_arg_long(p->c, "page", 1, 1000000), pages;
	uint64_t total = 0;

	if (!dirs || !fl) {
		p->err = 1;
		goto out;
	}
	/* files are sorted by path: a directory's files are consecutive */
	for (size_t i = 0; i < nf; i++) {
		const char *path = f[i].path, *rest, *sl;
		if (dl && (strncmp(path, dir, dl) || path[dl] != '/'))
			continue;
		rest = dl ? path + dl + 1 : path;
		total += f[i].size;
		sl = strchr(rest, '/');
		if (sl) {
			size_t len = (size_t)(sl - rest);
			if (!nd || dirs[nd - 1].len != len || strncmp(dirs[nd - 1].name, rest, len))
				dirs[nd++] = (struct dir_ent){rest, len, 0, 0, NULL};
			dirs[nd - 1].bytes += f[i].size;
			dirs[nd - 1].files++;
		} else {
			fl[nfi++] = (struct dir_ent){rest, strlen(rest), f[i].size, 1, &f[i]};
		}
	}
	ui_raw(p, "<h2 id=\"files\">Files at <span class=\"mono\">");
	ui_textn(p, commit, 12);
	ui_raw(p, "</span></h2><p class=\"crumbs\"><a href=\"");
	self_href(p, type, name, rev, "", 1);
	ui_raw(p, "\">");
	ui_text(p, name);
	ui_raw(p, "</a>");
	/* breadcrumbs: every parent of dir */
	for (size_t i = 0; dl && i <= dl; i++) {
		if (i < dl && dir[i] != '/')
			continue;
		char sub[4200];
		size_t start = i;
		while (start > 0 && dir[start - 1] != '/')
			start--;
		snprintf(sub, sizeof(sub), "%.*s", (int)i, dir);
		ui_raw(p, " / <a href=\"");
		self_href(p, type, name, rev, sub, 1);
		ui_raw(p, "\">");
		ui_textn(p, dir + start, i - start);
		ui_raw(p, "</a>");
	}
	ui_raw(p, "</p>");
	if (dl && !nd && !nfi) {
		ui_raw(p, "<p class=\"msg\">No such directory in this revision.</p>");
		goto out;
	}
	size_t nall = nd + nfi;
	pages = nall ? (long)((nall + UI_FILES_PER_PAGE - 1) / UI_FILES_PER_PAGE) : 1;
	if (page > pages)
		page = pages;
	ui_fmt(p, "<p class=\"mut\">%zu files, ", nfi);
	{
		char h[32];
		ui_fmt(p, "%zu directories here; %s in all</p>", nd, util_human_size(total, h, sizeof(h)));
	}
	ui_raw(p, "<div class=\"scroll\"><table id=\"filetable\"><thead><tr><th>Name</th><th class=\"num\">Size</th>"
		  "<th>SHA-256</th></tr></thead><tbody>");
	for (size_t i = (size_t)(page - 1) * UI_FILES_PER_PAGE; i < nall && i < (size_t)page * UI_FILES_PER_PAGE; i++) {
		const struct dir_ent *d = i < nd ? &dirs[i] : &fl[i - nd];
		if (!d->f) {
			char sub[4200];
			snprintf(sub, sizeof(sub), "%s%s%.*s", dir, dl ? "/" : "", (int)d->len, d->name);
			ui_raw(p, "<tr class=\"dir\"><td class=\"name\"><a href=\"");
			self_href(p, type, name, rev, sub, 1);
			ui_raw(p, "\">");
			ui_textn(p, d->name, d->len);
			ui_fmt(p, "/</a></td>");
			ui_size_cell(p, d->bytes);
			ui_fmt(p, "<td class=\"mut\">%zu files</td></tr>\n", d->files);
			continue;
		}
		ui_raw(p, "<tr class=\"file\" data-path=\"");
		ui_text(p, d->f->path);
		ui_raw(p, "\"><td class=\"name\"><a href=\"");
		file_href(p, type, name, commit, d->f->path);
		ui_raw(p, "\" download>");
		ui_text(p, d->name);
		ui_raw(p, "</a>");
		if (d->f->lfs)
			ui_raw(p, " <span class=\"badge\">LFS</span>");
		ui_raw(p, "</td>");
		ui_size_cell(p, d->f->size);
		ui_raw(p, "<td class=\"sha\">");
		ui_text(p, d->f->sha256);
		ui_raw(p, "</td></tr>\n");
	}
	ui_raw(p, "</tbody></table></div>");
	if (pages > 1) {
		ui_raw(p, "<nav class=\"pager\">");
		if (page > 1) {
			ui_raw(p, "<a rel=\"prev\" href=\"");
			self_href(p, type, name, rev, dir, page - 1);
			ui_raw(p, "\">&larr; previous</a>");
		}
		ui_fmt(p, "<span>page %ld of %ld</span>", page, pages);
		if (page < pages) {
			ui_raw(p, "<a rel=\"next\" href=\"");
			self_href(p, type, name, rev, dir, page + 1);
			ui_raw(p, "\">next &rarr;</a>");
		}
		ui_raw(p, "</nav>");
	}
out:
	free(dirs);
	free(fl);
}

static void revisions_section(struct ui_page *p, const char *type, const char *name, const char *commit,
			      const struct store_rev_info *rv, size_t nrv)
{
	char w[40];
	ui_raw(p, "<h2 id=\"revisions\">Revisions and refs</h2><div class=\"scroll\"><table id=\"revtable\"><thead><tr>"
		  "<th>Commit</th><th>Refs</th><th class=\"hide-s\">Pulled</th><th class=\"num\">Files</th>"
		  "<th class=\"num\">Size</th></tr></thead><tbody>");
	for (size_t i = 0; i < nrv; i++) {
		int cur = !strcmp(rv[i].commit, commit);
		ui_raw(p, cur ? "<tr class=\"cur\" data-commit=\"" : "<tr data-commit=\"");
		ui_text(p, rv[i].commit);
		ui_raw(p, "\"><td class=\"mono\"><a href=\"");
		self_href(p, type, name, rv[i].commit, "", 1);
		ui_raw(p, "\" title=\"");
		ui_text(p, rv[i].commit);
		ui_raw(p, "\">");
		ui_textn(p, rv[i].commit, 12);
		ui_raw(p, cur ? "</a> (shown)</td><td>" : "</a></td><td>");
		/* refs: comma-separated names */
		for (const char *r = rv[i].refs ? rv[i].refs : ""; *r;) {
			const char *comma = strchr(r, ',');
			size_t len = comma ? (size_t)(comma - r) : strlen(r);
			ui_raw(p, "<span class=\"badge ref\">");
			ui_textn(p, r, len);
			ui_raw(p, "</span>");
			r += len + (comma ? 1 : 0);
		}
		ui_fmt(p, "</td><td class=\"hide-s\">%s</td>", ui_time(rv[i].pulled_at, w, sizeof(w)));
		ui_num_cell(p, rv[i].nfiles);
		ui_size_cell(p, rv[i].bytes);
		ui_raw(p, "</tr>\n");
	}
	ui_raw(p, "</tbody></table></div>");
}

static void artifacts_section(struct ui_page *p, const struct store_artifact *a, size_t na,
			      const struct store_smoke_row *sm, size_t nsm)
{
	char w[40];
	ui_raw(p, "<h2 id=\"conversions\">Conversions</h2>");
	if (!na)
		ui_raw(p, "<p class=\"mut\">None: <code>hubmirror convert REPO --type q8_0</code> stores one.</p>");
	else
		ui_raw(p, "<div class=\"scroll\"><table id=\"arttable\"><thead><tr><th>Format</th><th>Options</th>"
			  "<th>Of commit</th><th class=\"num\">Size</th><th>SHA-256</th><th class=\"hide-s\">Made</th>"
			  "</tr></thead><tbody>");
	for (size_t i = 0; i < na; i++) {
		ui_raw(p, "<tr><td>");
		ui_text(p, a[i].format);
		ui_raw(p, "</td><td class=\"mono\">");
		ui_text(p, a[i].options);
		ui_raw(p, "</td><td class=\"mono\">");
		ui_textn(p, a[i].commit, 12);
		ui_raw(p, "</td>");
		ui_size_cell(p, a[i].size);
		ui_raw(p, "<td class=\"sha\">");
		ui_text(p, a[i].sha256);
		ui_fmt(p, "</td><td class=\"hide-s\">%s</td></tr>\n", ui_time(a[i].created_at, w, sizeof(w)));
	}
	if (na)
		ui_raw(p, "</tbody></table></div>");
	ui_raw(p, "<h2 id=\"smoke\">Smoke tests</h2>");
	if (!nsm) {
		ui_raw(p, "<p class=\"mut\">None: <code>hubmirror smoke REPO</code> loads the model and generates a few "
			  "tokens.</p>");
		return;
	}
	ui_raw(p, "<div class=\"scroll\"><table id=\"smoketable\"><thead><tr><th>Result</th><th>Commit</th><th>Model</th>"
		  "<th class=\"num\">Load</th><th class=\"num\">Prompt</th><th class=\"num\">Generate</th>"
		  "<th class=\"hide-s\">When</th><th>Reason</th></tr></thead><tbody>");
	for (size_t i = 0; i < nsm; i++) {
		ui_fmt(p, "<tr><td class=\"%s\">%s</td><td class=\"mono\">", sm[i].pass ? "pass" : "fail",
		       sm[i].pass ? "PASS" : "FAIL");
		ui_textn(p, sm[i].commit, 12);
		if (sm[i].artifact_sha256) {
			ui_raw(p, " <span class=\"badge\" title=\"");
			ui_text(p, sm[i].artifact_sha256);
			ui_raw(p, "\">gguf</span>");
		}
		ui_raw(p, "</td><td>");
		ui_text(p, sm[i].model);
		ui_fmt(p, "</td><td class=\"num\">%.2f s</td><td class=\"num\">%.1f tok/s</td><td class=\"num\">%.1f tok/s</td>"
			  "<td class=\"hide-s\">%s</td><td>",
		       sm[i].load_s, sm[i].prompt_tps, sm[i].gen_tps, ui_time(sm[i].created_at, w, sizeof(w)));
		ui_text(p, sm[i].reason ? sm[i].reason : "");
		ui_raw(p, "</td></tr>\n");
	}
	ui_raw(p, "</tbody></table></div>");
}

static void downloads_section(struct ui_page *p, const char *key, const struct store_report *r)
{
	const struct store_served_row *sv = NULL;
	char h[32], rt[32];
	for (size_t i = 0; i < r->nserved; i++)
		if (r->served[i].key)
			sv = &r->served[i];
	ui_raw(p, "<h2 id=\"downloads\">Downloads</h2><div class=\"cards\">");
	ui_fmt(p, "<div class=\"card\" id=\"xfers\" data-v=\"%" PRIu64 "\"><b>%" PRIu64 "</b><span>transfers (pulls and "
		  "files served)</span></div>", r->total.count, r->total.count);
	ui_fmt(p, "<div class=\"card\" id=\"xbytes\" data-v=\"%" PRIu64 "\"><b>%s</b><span>bytes moved</span></div>",
	       r->total.bytes, util_human_size(r->total.bytes, h, sizeof(h)));
	ui_fmt(p, "<div class=\"card\" id=\"served\" data-v=\"%" PRIu64 "\"><b>%" PRIu64 "</b><span>files served by this "
		  "mirror</span></div>", sv ? sv->files : 0, sv ? sv->files : 0);
	ui_fmt(p, "<div class=\"card\" id=\"hits\" data-v=\"%" PRIu64 "\"><b>%" PRIu64 " / %" PRIu64
		  "</b><span>cache hits / misses</span></div>", r->total.hits, r->total.hits, r->total.misses);
	ui_fmt(p, "<div class=\"card\"><b>%s</b><span>median throughput</span></div></div>",
	       util_human_size((uint64_t)r->total.median_rate, rt, sizeof(rt)));
	ui_raw(p, "<h3>Files served per day (bytes and throughput)</h3><p><img class=\"chart\" id=\"chart-served\" "
		  "width=\"900\" height=\"700\" alt=\"bytes this mirror served per day, and throughput, for this "
		  "repository\" src=\"/ui/chart.svg?k=days&amp;source=served&amp;repo=");
	ui_url(p, key, 0);
	ui_raw(p, "\"></p>");
	if (r->nby[STORE_BY_FILE]) {
		ui_raw(p, "<h3>Most downloaded files</h3><div class=\"scroll\"><table id=\"topfiles\"><thead><tr><th>File</th>"
			  "<th class=\"num\">Transfers</th><th class=\"num\">Bytes</th></tr></thead><tbody>");
		for (size_t i = 0; i < r->nby[STORE_BY_FILE]; i++) {
			const struct store_agg *a = &r->by[STORE_BY_FILE][i];
			ui_raw(p, "<tr><td class=\"name\">");
			ui_text(p, a->path);
			ui_raw(p, "</td>");
			ui_num_cell(p, a->count);
			ui_size_cell(p, a->bytes);
			ui_raw(p, "</tr>");
		}
		ui_raw(p, "</tbody></table></div>");
	}
	ui_fmt(p, "<p><a href=\"/ui/stats?repo=");
	ui_url(p, key, 0);
	ui_raw(p, "\">All statistics of this repository</a></p>");
}

/* The cards under the title: the revision shown, its files and size, downloads. */
static void summary(struct ui_page *p, const char *commit, const struct store_rev_info *rv, size_t nrv,
		    const struct store_report *r)
{
	char h[32], w[40];
	uint64_t served = 0;
	for (size_t i = 0; i < r->nserved; i++)
		if (r->served[i].key)
			served = r->served[i].files;
	ui_raw(p, "<div class=\"cards\">");
	for (size_t i = 0; i < nrv; i++) {
		if (strcmp(rv[i].commit, commit))
			continue;
		ui_raw(p, "<div class=\"card\"><b class=\"mono\">");
		ui_textn(p, commit, 12);
		ui_raw(p, "</b><span>");
		ui_text(p, rv[i].refs && *rv[i].refs ? rv[i].refs : "revision");
		ui_fmt(p, "</span></div><div class=\"card\"><b>%zu</b><span>files</span></div>"
			  "<div class=\"card\"><b>%s</b><span>size</span></div>"
			  "<div class=\"card\"><b>%s</b><span>pulled</span></div>",
		       rv[i].nfiles, util_human_size(rv[i].bytes, h, sizeof(h)), ui_time(rv[i].pulled_at, w, sizeof(w)));
	}
	ui_fmt(p, "<div class=\"card\"><b>%zu</b><span>revisions stored</span></div>"
		  "<div class=\"card\"><b>%" PRIu64 "</b><span>files served</span></div></div>", nrv, served);
}

enum MHD_Result ui_repo(struct ui_page *p, const char *rest)
{
	struct srv *s = p->q->s;
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_rev_info *rv = NULL;
	struct store_file *f = NULL;
	struct store_artifact *art = NULL;
	struct store_smoke_row *sm = NULL;
	struct store_report rep;
	size_t nrv = 0, nf = 0, nart = 0, nsm = 0;
	char type[16], name[256], key[300], commit[41], rbuf[256], dbuf[4200];
	const char *slash = strchr(rest, '/'), *rev = ui_arg(p->c, "rev", rbuf, sizeof(rbuf)),
		   *dir = ui_arg(p->c, "dir", dbuf, sizeof(dbuf));
	enum hm_err err;
	enum MHD_Result ret;

	memset(&rep, 0, sizeof(rep));
	if (!slash || (size_t)(slash - rest) >= sizeof(type) ||
	    !ui_path_decode(slash + 1, strlen(slash + 1), name, sizeof(name)))
		return ui_message(p, 404, "Not found", "There is no page at this address.");
	snprintf(type, sizeof(type), "%.*s", (int)(slash - rest), rest);
	if ((strcmp(type, "model") && strcmp(type, "dataset")) || !*name || !srv_repo_allowed(s, name))
		return ui_message(p, 404, "Not found", "This repository is not in the mirror.");
	if (rev && !*rev)
		rev = NULL;
	if (!dir)
		dir = "";
	while (*dir == '/')
		dir++;
	snprintf(key, sizeof(key), "%s:%s", type, name);
	if (!(st = srv_store_take(s)))
		return ui_message(p, 500, "Store unavailable", "cannot open the store");
	err = store_resolve(&ctx, st, type, name, rev, commit);
	if (err == HM_ERR_NOT_FOUND) {
		int known = !store_list_revisions(&ctx, st, type, name, &rv, &nrv) && nrv;
		srv_store_put(s, st);
		store_rev_info_free(rv, nrv);
		return ui_message(p, 404, "Not found", known ? "This revision is not in the mirror."
							      : "This repository is not in the mirror.");
	}
	if (!err)
		err = store_list_revisions(&ctx, st, type, name, &rv, &nrv);
	if (!err)
		err = store_list_files(&ctx, st, type, name, commit, &f, &nf);
	if (!err)
		err = store_list_artifacts(&ctx, st, type, name, &art, &nart);
	if (!err)
		err = store_list_smoke(&ctx, st, type, name, &sm, &nsm);
	if (!err) {
		struct store_stats_query sq = {key, INT64_MIN, INT64_MAX, 10, 1u << STORE_BY_FILE, 0, 1, STORE_SCAN_AUTO, STORE_SOURCE_ALL};
		err = store_report(&ctx, st, &sq, &rep);
	}
	srv_store_put(s, st);
	if (err) {
		ret = ui_message(p, 500, "Store unavailable", ctx.errmsg[0] ? ctx.errmsg : hm_strerror(err));
		goto out;
	}
	ui_begin(p, name, "home");
	ui_fmt(p, "<h1><span class=\"badge\">%s</span> ", !strcmp(type, "dataset") ? "dataset" : "model");
	ui_text(p, name);
	ui_raw(p, "</h1>");
	summary(p, commit, rv, nrv, &rep);
	commands(p, type, name, rev);
	revisions_section(p, type, name, commit, rv, nrv);
	files_section(p, type, name, commit, rev ? rev : commit, dir, f, nf);
	artifacts_section(p, art, nart, sm, nsm);
	downloads_section(p, key, &rep);
	ui_end(p);
	ret = ui_send(p, 200);
out:
	store_report_release(&rep);
	store_rev_info_free(rv, nrv);
	store_files_free(f, nf);
	store_artifacts_free(art, nart);
	store_smoke_rows_free(sm, nsm);
	return ret;
}
