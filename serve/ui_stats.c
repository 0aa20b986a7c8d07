/* ui_stats.c - the statistics page (the numbers of `stats --json` for a
 * date range, and the charts), the charts themselves (SVG, drawn by
 * store/chart.c as `stats --chart` draws them), and the activity page
 * (pull-throughs in flight, the last requests). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ui-int.h"
#include "../store/stats.h"

#define MAX_TOP 1000

/* The range and repo of a statistics request. Returns 0, or -1 with msg set. */
struct range {
	char since[64], until[64], repo[300], key[300], source[16];
	long top;
	struct store_stats_query q;
};

static int parse_range(struct ui_page *p, struct range *r, char *msg, size_t len)
{
	struct hm_ctx ctx = {0};
	int64_t now = util_unix_time();
	const char *v;
	memset(r, 0, sizeof(*r));
	r->q.since = INT64_MIN;
	r->q.until = INT64_MAX;
	r->top = ui_arg_long(p->c, "top", 10, MAX_TOP);
	r->q.top = (size_t)r->top;
	msg[0] = 0;
	if ((v = ui_arg(p->c, "since", r->since, sizeof(r->since))) && *v &&
	    store_parse_time(&ctx, v, now, 0, &r->q.since)) {
		snprintf(msg, len, "since (from): %s", ctx.errmsg);
		return -1;
	}
	if ((v = ui_arg(p->c, "until", r->until, sizeof(r->until))) && *v &&
	    store_parse_time(&ctx, v, now, 1, &r->q.until)) {
		snprintf(msg, len, "until (to): %s", ctx.errmsg);
		return -1;
	}
	if ((v = ui_arg(p->c, "source", r->source, sizeof(r->source))) && *v)
		r->q.source = !strcmp(v, "pulls") ? STORE_SOURCE_PULLS : !strcmp(v, "served") ? STORE_SOURCE_SERVED
											   : STORE_SOURCE_ALL;
	if (r->q.since >= r->q.until) {
		snprintf(msg, len, "the start of the range must be before its end");
		return -1;
	}
	if ((v = ui_arg(p->c, "repo", r->repo, sizeof(r->repo))) && *v) {
		/* "type:name", "datasets/name" or "name" (a model) */
		const char *colon = strchr(v, ':');
		if (colon)
			snprintf(r->key, sizeof(r->key), "%s", v);
		else if (!strncmp(v, "datasets/", 9))
			snprintf(r->key, sizeof(r->key), "dataset:%s", v + 9);
		else
			snprintf(r->key, sizeof(r->key), "model:%s", v);
		colon = strchr(r->key, ':');
		if (!srv_repo_allowed(p->q->s, colon + 1)) {
			snprintf(msg, len, "no repository '%s' in the mirror", colon + 1);
			return -1;
		}
		r->q.repo = r->key;
	}
	return 0;
}

/* The name part of a "type:name" key. */
static const char *key_name(const char *key)
{
	const char *colon = key ? strchr(key, ':') : NULL;
	return colon ? colon + 1 : key ? key : "";
}

/* Drops rows of repos --allow hides, then keeps the first top. */
static void filter_rows(struct srv *s, struct store_report *rep, enum store_by by, size_t top)
{
	size_t k = 0;
	if (!rep->by[by])
		return;
	for (size_t i = 0; i < rep->nby[by]; i++) {
		struct store_agg a = rep->by[by][i];
		if (s->o->nallow && !srv_repo_allowed(s, key_name(a.key))) {
			free(a.key);
			free(a.path);
			continue;
		}
		rep->by[by][i] = rep->by[by][k];
		rep->by[by][k++] = a;
	}
	rep->nkeys[by] = k;
	for (size_t i = top && k > top ? top : k; i < k; i++) {
		free(rep->by[by][i].key);
		free(rep->by[by][i].path);
		rep->by[by][i].key = rep->by[by][i].path = NULL;
	}
	rep->nby[by] = top && k > top ? top : k;
}

/* Runs the report; with --allow every row is read and hidden ones dropped. */
static enum hm_err report(struct srv *s, struct store_stats_query *q, struct store_report *rep, char *msg,
			  size_t len)
{
	struct hm_ctx ctx = {0};
	struct store *st = srv_store_take(s);
	size_t top = q->top;
	enum hm_err err;
	memset(rep, 0, sizeof(*rep));
	if (!st) {
		snprintf(msg, len, "cannot open the store");
		return HM_ERR_DB;
	}
	if (s->o->nallow)
		q->top = 0;
	err = store_report(&ctx, st, q, rep);
	srv_store_put(s, st);
	q->top = top;
	if (err) {
		snprintf(msg, len, "%s", ctx.errmsg[0] ? ctx.errmsg : hm_strerror(err));
		return err;
	}
	if (s->o->nallow) {
		filter_rows(s, rep, STORE_BY_REPO, top);
		filter_rows(s, rep, STORE_BY_FILE, top);
		size_t k = 0;
		for (size_t i = 0; i < rep->nserved; i++) {
			if (rep->served[i].key && !srv_repo_allowed(s, key_name(rep->served[i].key))) {
				free(rep->served[i].key);
				continue;
			}
			rep->served[k++] = rep->served[i];
		}
		rep->nserved = k;
	}
	return HM_OK;
}

/* ---- charts ---- */

static const char *const chart_kinds[] = {"days", "repos", "files", "sources", "cache"};

/* A bar's label for a repo key: the name, "datasets/" before a dataset's. */
static char *repo_label(const char *key, const char *path)
{
	const char *name = key_name(key);
	int ds = key && !strncmp(key, "dataset:", 8);
	return util_asprintf("%s%s%s%s", ds ? "datasets/" : "", name, path ? ": " : "", path ? path : "");
}

#define SOURCE_DAYS 31

/* Pulled vs served: the whole range (from the endpoint rows of rep), then
 * each of the last SOURCE_DAYS days with transfers, two bars a row. */
static int sources_chart(struct srv *s, const struct range *r, const struct store_report *rep, struct util_buf *b)
{
	struct store_report by[2];
	struct store_chart_bar *bars = NULL;
	size_t nb = 0, i = 0, k = 0, n0, n1;
	char msg[1100];
	int e = -1;

	memset(by, 0, sizeof(by));
	for (int src = 0; src < 2; src++) {
		struct store_stats_query q = r->q;
		q.want = 1u << STORE_BY_DAY;
		q.top = 0;
		q.by_key = 1;
		q.legacy = 0;
		q.source = src ? STORE_SOURCE_SERVED : STORE_SOURCE_PULLS;
		if (report(s, &q, &by[src], msg, sizeof(msg)))
			goto out;
	}
	n0 = by[0].nby[STORE_BY_DAY];
	n1 = by[1].nby[STORE_BY_DAY];
	if (!(bars = calloc(n0 + n1 + 1, sizeof(*bars))))
		goto out;
	bars[nb++] = (struct store_chart_bar){"whole range", 0, 0};
	for (size_t j = 0; j < rep->nby[STORE_BY_ENDPOINT]; j++) {
		const struct store_agg *a = &rep->by[STORE_BY_ENDPOINT][j];
		if (a->source && !strcmp(a->source, "serve"))
			bars[0].value2 += a->bytes;
		else
			bars[0].value += a->bytes;
	}
	/* both lists are oldest first: merge them by day */
	while (i < n0 || k < n1) {
		const struct store_agg *x = i < n0 ? &by[0].by[STORE_BY_DAY][i] : NULL,
				       *y = k < n1 ? &by[1].by[STORE_BY_DAY][k] : NULL;
		int c = !x ? 1 : !y ? -1 : strcmp(x->key, y->key);
		bars[nb].label = c <= 0 ? x->key : y->key;
		bars[nb].value = c <= 0 ? x->bytes : 0;
		bars[nb].value2 = c >= 0 ? y->bytes : 0;
		nb++;
		i += c <= 0;
		k += c >= 0;
	}
	if (nb - 1 > SOURCE_DAYS) { /* keep the newest days */
		memmove(bars + 1, bars + nb - SOURCE_DAYS, SOURCE_DAYS * sizeof(*bars));
		nb = 1 + SOURCE_DAYS;
	}
	e = store_chart_bars(b, nb - 1 >= SOURCE_DAYS ? "Pulled vs served (bytes; the last 31 days with transfers)"
						       : "Pulled vs served (bytes, per day UTC)",
			     "pulled from upstream hubs", "served to clients", 1, bars, nb);
out:
	free(bars);
	store_report_release(&by[0]);
	store_report_release(&by[1]);
	return e;
}

enum MHD_Result ui_chart(struct srv_req *q, struct MHD_Connection *c)
{
	struct ui_page p0 = {q, c, UTIL_BUF_INIT, 0, 0, NULL}, *p = &p0;
	struct range r;
	struct store_report rep;
	struct util_buf b = UTIL_BUF_INIT;
	struct store_chart_bar *bars = NULL;
	char msg[1100], kbuf[16], sub[400];
	const char *k = ui_arg(c, "k", kbuf, sizeof(kbuf));
	int kind = -1, e = 0;
	size_t nb = 0;
	enum MHD_Result ret;

	for (int i = 0; k && i < (int)(sizeof(chart_kinds) / sizeof(chart_kinds[0])); i++)
		if (!strcmp(k, chart_kinds[i]))
			kind = i;
	if (kind < 0)
		return srv_send_error(q, c, 404, NULL, "no such chart");
	if (parse_range(p, &r, msg, sizeof(msg)))
		return srv_send_error(q, c, 400, NULL, "%s", msg);
	static const unsigned want[] = {1u << STORE_BY_DAY, 1u << STORE_BY_REPO, 1u << STORE_BY_FILE,
					1u << STORE_BY_ENDPOINT, 1u << STORE_BY_REPO};
	r.q.want = want[kind];
	if (kind == 0 || kind == 3)
		r.q.top = 0;
	r.q.by_key = kind == 0;
	if (report(q->s, &r.q, &rep, msg, sizeof(msg))) {
		store_report_release(&rep);
		return srv_send_error(q, c, 500, NULL, "%s", msg);
	}
	snprintf(sub, sizeof(sub), "%s%s, %s .. %s", r.q.repo ? key_name(r.q.repo) : "all repositories",
		 r.q.source == STORE_SOURCE_SERVED ? " (files served)" : r.q.source == STORE_SOURCE_PULLS ? " (pulls)" : "",
		 r.since[0] ? r.since : "the beginning", r.until[0] ? r.until : "now");
	if (kind == 0) {
		e = store_chart_days(&b, rep.by[STORE_BY_DAY], rep.nby[STORE_BY_DAY], sub);
	} else {
		enum store_by by = (enum store_by)(kind == 2 ? STORE_BY_FILE : kind == 3 ? STORE_BY_ENDPOINT : STORE_BY_REPO);
		size_t n = rep.nby[by];
		bars = calloc(n + 3, sizeof(*bars));
		if (!bars) {
			e = -1;
			goto done;
		}
		if (kind == 3) {
			e = sources_chart(q->s, &r, &rep, &b);
			goto done;
		}
		if (kind == 4) {
			bars[nb++] = (struct store_chart_bar){"all repositories", rep.total.hits, rep.total.misses};
		}
		for (size_t i = 0; i < n; i++) {
			const struct store_agg *a = &rep.by[by][i];
			char *lab = repo_label(a->key, kind == 2 ? a->path : NULL);
			if (!lab) {
				e = -1;
				goto done;
			}
			bars[nb++] = (struct store_chart_bar){lab, kind == 4 ? a->hits : a->bytes, kind == 4 ? a->misses : 0};
		}
		if (kind == 1)
			e = store_chart_bars(&b, "Top repositories by bytes", "bytes (pulls and files served)", NULL, 1, bars,
					     nb);
		else if (kind == 2)
			e = store_chart_bars(&b, "Top files by bytes", "bytes (pulls and files served)", NULL, 1, bars, nb);
		else
			e = store_chart_bars(&b, "Cache hits vs misses (files served)", "hits", "misses (pulled through)", 0,
					     bars, nb);
		for (size_t i = kind == 4 ? 1 : 0; i < nb; i++)
			free((char *)bars[i].label);
	}
done:
	free(bars);
	store_report_release(&rep);
	if (e || p->err) {
		util_buf_release(&b);
		return srv_send_error(q, c, 500, NULL, "out of memory drawing the chart");
	}
	size_t len = b.len;
	ret = ui_send_body(q, c, 200, "image/svg+xml", util_buf_detach(&b), len, 0);
	return ret;
}

/* ---- the statistics page ---- */

static void range_args(struct ui_page *p, const struct range *r)
{
	ui_raw(p, "since=");
	ui_url(p, r->since, 0);
	ui_raw(p, "&amp;until=");
	ui_url(p, r->until, 0);
	ui_raw(p, "&amp;repo=");
	ui_url(p, r->repo, 0);
	ui_fmt(p, "&amp;top=%ld", r->top);
}

static void agg_head(struct ui_page *p, const char *id, const char *lead)
{
	ui_fmt(p, "<div class=\"scroll\"><table id=\"%s\"><thead><tr>%s<th class=\"num\">Count</th>"
		  "<th class=\"num\">Bytes</th><th class=\"num hide-s\">Seconds</th><th class=\"num\">Median rate</th>"
		  "<th class=\"num hide-s\">p95 rate</th><th class=\"num hide-s\">Retries</th><th class=\"num\">Failed</th>"
		  "<th class=\"num\">Hits</th><th class=\"num\">Misses</th></tr></thead><tbody>", id, lead);
}

static void agg_cells(struct ui_page *p, const struct store_agg *a)
{
	char h[32];
	ui_num_cell(p, a->count);
	ui_size_cell(p, a->bytes);
	ui_fmt(p, "<td class=\"num hide-s\" data-v=\"%.3f\">%.1f</td>", a->seconds, a->seconds);
	ui_fmt(p, "<td class=\"num\" data-v=\"%.1f\">%s/s</td>", a->median_rate,
	       util_human_size((uint64_t)a->median_rate, h, sizeof(h)));
	ui_fmt(p, "<td class=\"num hide-s\" data-v=\"%.1f\">%s/s</td>", a->p95_rate,
	       util_human_size((uint64_t)a->p95_rate, h, sizeof(h)));
	ui_fmt(p, "<td class=\"num hide-s\" data-v=\"%" PRIu64 "\">%" PRIu64 "</td>", a->retries, a->retries);
	ui_num_cell(p, a->failures);
	ui_num_cell(p, a->hits);
	ui_num_cell(p, a->misses);
}

static void agg_table(struct ui_page *p, const struct store_report *rep, enum store_by by)
{
	static const char *const ids[] = {"by_repo", "by_file", "by_day", "by_endpoint"};
	static const char *const leads[] = {"<th>Repository</th>", "<th>Repository</th><th>File</th>", "<th>Day (UTC)</th>",
					    "<th>Source</th><th>Endpoint or client</th>"};
	agg_head(p, ids[by], leads[by]);
	for (size_t i = 0; i < rep->nby[by]; i++) {
		const struct store_agg *a = &rep->by[by][i];
		ui_raw(p, "<tr data-key=\"");
		ui_text(p, a->key);
		if (a->path) {
			ui_raw(p, "\" data-path=\"");
			ui_text(p, a->path);
		}
		ui_raw(p, "\">");
		if (by == STORE_BY_REPO || by == STORE_BY_FILE) {
			const char *colon = strchr(a->key, ':');
			ui_raw(p, "<td class=\"name\">");
			if (colon) {
				char type[16];
				snprintf(type, sizeof(type), "%.*s", (int)(colon - a->key), a->key);
				ui_raw(p, "<a href=\"");
				ui_repo_href(p, type, colon + 1);
				ui_raw(p, "\">");
				ui_raw(p, !strcmp(type, "dataset") ? "datasets/" : "");
				ui_text(p, colon + 1);
				ui_raw(p, "</a>");
			} else {
				ui_text(p, a->key);
			}
			ui_raw(p, "</td>");
			if (by == STORE_BY_FILE) {
				ui_raw(p, "<td class=\"name\">");
				ui_text(p, a->path);
				ui_raw(p, "</td>");
			}
		} else if (by == STORE_BY_ENDPOINT) {
			ui_raw(p, "<td>");
			ui_text(p, a->source);
			ui_raw(p, "</td><td class=\"name\">");
			ui_text(p, a->key[0] ? a->key : "-");
			ui_raw(p, "</td>");
		} else {
			ui_raw(p, "<td>");
			ui_text(p, a->key);
			ui_raw(p, "</td>");
		}
		agg_cells(p, a);
		ui_raw(p, "</tr>\n");
	}
	ui_fmt(p, "<tr class=\"total\"><td%s><b>total</b></td>", by == STORE_BY_FILE || by == STORE_BY_ENDPOINT ?
								   " colspan=\"2\"" : "");
	agg_cells(p, &rep->total);
	ui_raw(p, "</tr></tbody></table></div>");
	if (rep->nkeys[by] > rep->nby[by])
		ui_fmt(p, "<p class=\"mut\">%zu more not shown (raise \"rows\").</p>", rep->nkeys[by] - rep->nby[by]);
}

static void served_table(struct ui_page *p, const struct store_report *rep)
{
	ui_raw(p, "<div class=\"scroll\"><table id=\"served\"><thead><tr><th>Repository</th><th class=\"num\">Requests</th>"
		  "<th class=\"num\">Files</th><th class=\"num\">Bytes</th><th class=\"num\">Hits</th>"
		  "<th class=\"num\">Misses</th><th class=\"num\">Errors</th></tr></thead><tbody>");
	for (size_t i = 0; i < rep->nserved; i++) {
		const struct store_served_row *v = &rep->served[i];
		ui_raw(p, v->key ? "<tr data-key=\"" : "<tr class=\"total\" data-key=\"");
		ui_text(p, v->key ? v->key : "total");
		ui_raw(p, "\"><td class=\"name\">");
		ui_text(p, v->key ? v->key : "total");
		ui_raw(p, "</td>");
		ui_num_cell(p, v->requests);
		ui_num_cell(p, v->files);
		ui_size_cell(p, v->bytes);
		ui_num_cell(p, v->hits);
		ui_num_cell(p, v->misses);
		ui_num_cell(p, v->errors);
		ui_raw(p, "</tr>\n");
	}
	ui_raw(p, "</tbody></table></div>");
}

static void chart_img(struct ui_page *p, const struct range *r, const char *kind, const char *alt, int h)
{
	ui_fmt(p, "<figure><img class=\"chart\" id=\"chart-%s\" width=\"900\" height=\"%d\" alt=\"%s\" src=\"/ui/chart.svg?k=%s&amp;",
	       kind, h, alt, kind);
	range_args(p, r);
	ui_raw(p, "\"></figure>");
}

enum MHD_Result ui_stats(struct ui_page *p)
{
	struct range r;
	struct store_report rep;
	char msg[1100], h[32];
	int bad = parse_range(p, &r, msg, sizeof(msg)) ? 1 : 0;
	const struct store_agg *t;

	memset(&rep, 0, sizeof(rep));
	r.q.want = (1u << STORE_BY_N) - 1;
	r.q.legacy = 1;
	if (!bad && report(p->q->s, &r.q, &rep, msg, sizeof(msg)))
		bad = 2;
	ui_begin(p, "Statistics", "stats");
	ui_raw(p, "<h1>Statistics</h1><p class=\"mut\">Every transfer: the files pulls downloaded and the files this "
		  "mirror served (the numbers of <code>hubmirror stats --json</code>). Days are UTC.</p>"
		  "<form class=\"bar\" method=\"get\" action=\"/ui/stats\"><label>From<input type=\"date\" name=\"since\" value=\"");
	ui_text(p, r.since);
	ui_raw(p, "\"></label><label>To (inclusive)<input type=\"date\" name=\"until\" value=\"");
	ui_text(p, r.until);
	ui_raw(p, "\"></label><label>Repository<input type=\"text\" name=\"repo\" placeholder=\"org/name\" value=\"");
	ui_text(p, r.repo);
	ui_fmt(p, "\"></label><label>Rows<input type=\"number\" name=\"top\" min=\"1\" max=\"%d\" value=\"%ld\"></label>"
		  "<button>Show</button></form>", MAX_TOP, r.top);
	if (bad) {
		ui_raw(p, "<p class=\"msg\" id=\"error\">");
		ui_text(p, msg);
		ui_raw(p, "</p>");
		ui_end(p);
		store_report_release(&rep);
		return ui_send(p, bad == 1 ? 400 : 500);
	}
	t = &rep.total;
	ui_raw(p, "<div class=\"cards\" id=\"overall\">");
	ui_fmt(p, "<div class=\"card\" id=\"o-count\" data-v=\"%" PRIu64 "\"><b>%" PRIu64 "</b><span>transfers</span></div>",
	       t->count, t->count);
	ui_fmt(p, "<div class=\"card\" id=\"o-bytes\" data-v=\"%" PRIu64 "\"><b>%s</b><span>bytes</span></div>", t->bytes,
	       util_human_size(t->bytes, h, sizeof(h)));
	ui_fmt(p, "<div class=\"card\" id=\"o-median\" data-v=\"%.1f\"><b>%s/s</b><span>median throughput</span></div>",
	       t->median_rate, util_human_size((uint64_t)t->median_rate, h, sizeof(h)));
	ui_fmt(p, "<div class=\"card\" id=\"o-p95\" data-v=\"%.1f\"><b>%s/s</b><span>p95 throughput</span></div>",
	       t->p95_rate, util_human_size((uint64_t)t->p95_rate, h, sizeof(h)));
	ui_fmt(p, "<div class=\"card\" id=\"o-hits\" data-v=\"%" PRIu64 "\"><b>%" PRIu64 "</b><span>cache hits</span></div>",
	       t->hits, t->hits);
	ui_fmt(p, "<div class=\"card\" id=\"o-misses\" data-v=\"%" PRIu64 "\"><b>%" PRIu64
		  "</b><span>misses (pulled through)</span></div>", t->misses, t->misses);
	ui_fmt(p, "<div class=\"card\" id=\"o-failures\" data-v=\"%" PRIu64 "\"><b>%" PRIu64 "</b><span>failed</span></div>",
	       t->failures, t->failures);
	ui_fmt(p, "<div class=\"card\" id=\"o-retries\" data-v=\"%" PRIu64 "\"><b>%" PRIu64 "</b><span>retries</span></div>",
	       t->retries, t->retries);
	ui_raw(p, "</div>");
	if (p->q->s->o->nallow)
		ui_raw(p, "<p class=\"mut\">With <code>--allow</code>, rows of other repositories are hidden; totals, days "
			  "and endpoints count every transfer.</p>");
	ui_raw(p, "<h2>Charts</h2><div class=\"charts\">");
	chart_img(p, &r, "days", "bytes per day and throughput over time", 700);
	chart_img(p, &r, "repos", "top repositories by bytes", (int)(100 + 30 * (rep.nby[STORE_BY_REPO] ? rep.nby[STORE_BY_REPO] : 1)));
	chart_img(p, &r, "files", "top files by bytes", (int)(100 + 30 * (rep.nby[STORE_BY_FILE] ? rep.nby[STORE_BY_FILE] : 1)));
	{
		size_t days = rep.nkeys[STORE_BY_DAY] < SOURCE_DAYS ? rep.nkeys[STORE_BY_DAY] : SOURCE_DAYS;
		chart_img(p, &r, "sources", "bytes pulled vs served, per day", (int)(100 + 30 * (days + 1)));
	}
	chart_img(p, &r, "cache", "cache hits vs misses", (int)(130 + 30 * rep.nby[STORE_BY_REPO]));
	ui_raw(p, "</div><h2>By repository</h2>");
	agg_table(p, &rep, STORE_BY_REPO);
	ui_raw(p, "<h2>By file</h2>");
	agg_table(p, &rep, STORE_BY_FILE);
	ui_raw(p, "<h2>By day</h2>");
	agg_table(p, &rep, STORE_BY_DAY);
	ui_raw(p, "<h2>By endpoint (pulls) and client (served)</h2>");
	agg_table(p, &rep, STORE_BY_ENDPOINT);
	ui_raw(p, "<h2>Requests served</h2><p class=\"mut\">Every request this mirror answered, API calls too.</p>");
	served_table(p, &rep);
	ui_end(p);
	store_report_release(&rep);
	return ui_send(p, 200);
}

/* ---- activity ---- */

enum MHD_Result ui_activity(struct ui_page *p)
{
	struct srv *s = p->q->s;
	struct srv_up_progress up[64];
	struct ui_logent *ring = NULL;
	size_t nup = srv_up_progress(s, up, sizeof(up) / sizeof(up[0])), nlog = 0;
	long want = ui_arg_long(p->c, "n", 50, UI_RING), refresh = ui_arg_long(p->c, "refresh", 5, 3600);
	int64_t now = util_unix_time();
	int busy;
	char w[40], h1[32], h2[32], rb[8];
	const char *rarg = ui_arg(p->c, "refresh", rb, sizeof(rb));
	int norefresh = rarg && !strcmp(rarg, "0");

	ring = calloc(UI_RING, sizeof(*ring));
	if (!ring)
		return srv_send_error(p->q, p->c, 500, NULL, "out of memory");
	pthread_mutex_lock(&s->ui->mu);
	for (size_t i = 0; i < s->ui->count && (long)nlog < want; i++)
		ring[nlog++] = s->ui->ring[(s->ui->head + UI_RING - 1 - i) % UI_RING];
	pthread_mutex_unlock(&s->ui->mu);
	pthread_mutex_lock(&s->log_mu);
	busy = s->inflight_requests - 1; /* not this one */
	pthread_mutex_unlock(&s->log_mu);

	char head[80];
	snprintf(head, sizeof(head), "<meta http-equiv=\"refresh\" content=\"%ld\">", refresh);
	if (!norefresh)
		p->extra_head = head;
	ui_begin(p, "Activity", "activity");
	ui_fmt(p, "<h1>Activity</h1><p class=\"mut\">%s <a href=\"/ui/activity%s\">%s</a></p>",
	       norefresh ? "Not refreshing." : "This page refreshes every few seconds.", norefresh ? "" : "?refresh=0",
	       norefresh ? "Refresh automatically" : "Stop refreshing");
	ui_fmt(p, "<div class=\"cards\"><div class=\"card\" id=\"busy\" data-v=\"%d\"><b>%d</b><span>other requests in "
		  "progress</span></div><div class=\"card\" id=\"npull\" data-v=\"%zu\"><b>%zu</b><span>pull-throughs in "
		  "flight</span></div></div>", busy < 0 ? 0 : busy, busy < 0 ? 0 : busy, nup, nup);
	ui_raw(p, "<h2>Pull-throughs in flight</h2>");
	if (!nup)
		ui_raw(p, srv_up_enabled(s) ? "<p class=\"mut\">None right now.</p>"
					    : "<p class=\"mut\">None: this server has no upstream (<code>--upstream</code>).</p>");
	else
		ui_raw(p, "<div class=\"scroll\"><table id=\"pulls\"><thead><tr><th>Repository</th><th>File</th>"
			  "<th>Progress</th><th class=\"num\">Rate</th><th class=\"num\">Clients</th></tr></thead><tbody>");
	for (size_t i = 0; i < nup; i++) {
		double secs = (double)(now - up[i].started), rate = secs > 0 ? (double)up[i].done / secs : 0;
		ui_raw(p, "<tr><td class=\"name\">");
		ui_text(p, !strcmp(up[i].type, "dataset") ? "datasets/" : "");
		ui_text(p, up[i].repo);
		ui_raw(p, "</td><td class=\"name\">");
		ui_text(p, up[i].path);
		ui_fmt(p, "</td><td><progress max=\"%" PRIu64 "\" value=\"%" PRIu64 "\"></progress> %s of %s</td>"
			  "<td class=\"num\">%s/s</td><td class=\"num\">%d</td></tr>\n",
		       up[i].size ? up[i].size : 1, up[i].done, util_human_size(up[i].done, h1, sizeof(h1)),
		       util_human_size(up[i].size, h2, sizeof(h2)), util_human_size((uint64_t)rate, w, sizeof(w)),
		       up[i].readers);
	}
	if (nup)
		ui_raw(p, "</tbody></table></div>");
	ui_fmt(p, "<h2>Last requests</h2><p class=\"mut\">The newest %zu of the last %d (web pages not counted).</p>", nlog,
	       UI_RING);
	ui_raw(p, "<div class=\"scroll\"><table id=\"requests\"><thead><tr><th>When</th><th class=\"hide-s\">Client</th>"
		  "<th>Request</th><th class=\"num\">Status</th><th class=\"num\">Bytes</th><th class=\"num hide-s\">Seconds</th>"
		  "<th>Cache</th></tr></thead><tbody>");
	for (size_t i = 0; i < nlog; i++) {
		const struct ui_logent *e = &ring[i];
		int hidden = e->repo[0] && !srv_repo_allowed(s, e->repo);
		ui_fmt(p, "<tr><td>%s</td><td class=\"hide-s\">", ui_time(e->at, w, sizeof(w)));
		ui_text(p, e->client);
		ui_raw(p, "</td><td class=\"name\"><span class=\"mono\">");
		ui_text(p, e->method);
		ui_raw(p, " ");
		ui_text(p, hidden ? "(a repository --allow hides)" : e->url);
		ui_fmt(p, "</span></td><td class=\"num\">%d</td>", e->status);
		ui_size_cell(p, e->bytes);
		ui_fmt(p, "<td class=\"num hide-s\">%.3f</td><td>", e->seconds);
		ui_text(p, e->cache[0] ? e->cache : "");
		ui_raw(p, "</td></tr>\n");
	}
	if (!nlog)
		ui_raw(p, "<tr><td colspan=\"7\">No request yet.</td></tr>");
	ui_raw(p, "</tbody></table></div>");
	ui_end(p);
	free(ring);
	return ui_send(p, 200);
}
