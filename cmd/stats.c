/* stats.c - `hubmirror stats`: transfer statistics as a table, JSON, CSV or an SVG chart. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cmd.h"
#include "../mirror/mirror.h"
#include "../store/stats.h"

/* What the options of stats_opts[] below set (a->o). */
struct stats_vals {
	const char *repo, *since, *until, *by, *top, *chart;
	int csv;
};

static const struct cmd_opt stats_opts[] = {
	CMD_OPT_STR(struct stats_vals, repo, "repo", 0, "REPO", "only this repository"),
	CMD_OPT_STR(struct stats_vals, since, "since", 0, "TIME", "transfers started at or after TIME (YYYY-MM-DD, ISO-8601, unix seconds, 7d, 24h)"),
	CMD_OPT_STR(struct stats_vals, until, "until", 0, "TIME", "transfers started before TIME (a YYYY-MM-DD includes that day)"),
	CMD_OPT_STR(struct stats_vals, by, "by", 0, "WHAT", "breakdown the table and --csv show: repo (default), file, day or endpoint"),
	CMD_OPT_STR(struct stats_vals, top, "top", 'n', "N", "rows per breakdown, most bytes first (default 10; 0 = all)"),
	CMD_OPT_FLAG(struct stats_vals, csv, "csv", 0, "the breakdown as CSV (RFC 4180) instead of a table"),
	CMD_OPT_STR(struct stats_vals, chart, "chart", 0, "FILE.svg", "also draw bytes per day and throughput over time as an SVG"),
	CMD_OPT_END,
};

static const char *const by_names[STORE_BY_N] = {"repo", "file", "day", "endpoint"};

/* ---- JSON ---- */

/* Sets "repo" and "repo_type" on o from a "type:name" key. */
static void stats_set_repo(json_t *o, const char *key)
{
	const char *colon = strchr(key, ':');
	json_object_set_new(o, "repo", json_string(colon ? colon + 1 : key));
	json_object_set_new(o, "repo_type", json_stringn(key, colon ? (size_t)(colon - key) : 0));
}

static json_t *served_json(const struct store_served_row *v, size_t n)
{
	json_t *repos = json_array(), *total = NULL;
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "requests", (json_int_t)v[i].requests,
				      "files", (json_int_t)v[i].files, "bytes", (json_int_t)v[i].bytes, "hits",
				      (json_int_t)v[i].hits, "misses", (json_int_t)v[i].misses, "errors",
				      (json_int_t)v[i].errors, "seconds", v[i].seconds);
		if (v[i].key) {
			stats_set_repo(o, v[i].key);
			json_array_append_new(repos, o);
		} else {
			total = o;
		}
	}
	return json_pack("{s:o, s:o}", "total", total ? total : json_object(), "repos", repos);
}

static json_t *agg_json(const struct store_agg *a, enum store_by by)
{
	json_t *o = json_pack("{s:I, s:I, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I}", "count", (json_int_t)a->count,
			      "bytes", (json_int_t)a->bytes, "seconds", a->seconds, "rate",
			      a->seconds > 0 ? (double)a->bytes / a->seconds : 0.0, "median_rate", a->median_rate,
			      "p95_rate", a->p95_rate, "retries", (json_int_t)a->retries, "failures",
			      (json_int_t)a->failures, "hits", (json_int_t)a->hits, "misses", (json_int_t)a->misses);
	if (!a->key)
		return o;
	switch (by) {
	case STORE_BY_FILE:
		json_object_set_new(o, "path", json_string(a->path));
		/* fall through */
	case STORE_BY_REPO:
		stats_set_repo(o, a->key);
		break;
	case STORE_BY_DAY:
		json_object_set_new(o, "day", json_string(a->key));
		json_object_set_new(o, "start", json_integer(a->day));
		break;
	case STORE_BY_ENDPOINT:
	default:
		json_object_set_new(o, "endpoint", json_string(a->key));
		json_object_set_new(o, "source", json_string(a->source));
		break;
	}
	return o;
}

/* ---- text and CSV ---- */

#define NCOLS 11
#define CELL 512

/* Copies s for a terminal: control bytes become '?'. */
static void cell(char *out, const char *s)
{
	size_t i = 0;
	for (; s && *s && i < CELL - 1; s++)
		out[i++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
	out[i] = '\0';
}

/* The cells of a row; returns how many lead (left-aligned key columns). */
static int row_cells(const struct store_agg *a, enum store_by by, int human, char c[NCOLS][CELL], int *ncols)
{
	int k = 0, lead;
	if (!a) { /* the header */
		static const char *const keys[STORE_BY_N][2] = {
			{"REPO", NULL}, {"REPO", "FILE"}, {"DAY", NULL}, {"SOURCE", "ENDPOINT"}};
		static const char *const nums[] = {"COUNT", "BYTES", "SECONDS", "MEDIAN RATE", "P95 RATE",
						   "RETRIES", "FAILED", "HITS", "MISSES"};
		cell(c[k++], keys[by][0]);
		if (keys[by][1])
			cell(c[k++], keys[by][1]);
		lead = k;
		for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
			cell(c[k++], nums[i]);
		*ncols = k;
		return lead;
	}
	if (!a->key) {
		cell(c[k++], "total");
		if (by == STORE_BY_FILE || by == STORE_BY_ENDPOINT)
			cell(c[k++], "");
	} else if (by == STORE_BY_ENDPOINT) {
		cell(c[k++], a->source);
		cell(c[k++], a->key[0] ? a->key : "-");
	} else {
		cell(c[k++], a->key);
		if (by == STORE_BY_FILE)
			cell(c[k++], a->path);
	}
	lead = k;
	snprintf(c[k++], CELL, "%" PRIu64, a->count);
	if (human)
		util_human_size(a->bytes, c[k++], CELL);
	else
		snprintf(c[k++], CELL, "%" PRIu64, a->bytes);
	snprintf(c[k++], CELL, human ? "%.1f" : "%.3f", a->seconds);
	if (human) {
		cmd_rate(a->median_rate, c[k++], CELL);
		cmd_rate(a->p95_rate, c[k++], CELL);
	} else {
		snprintf(c[k++], CELL, "%.1f", a->median_rate);
		snprintf(c[k++], CELL, "%.1f", a->p95_rate);
	}
	snprintf(c[k++], CELL, "%" PRIu64, a->retries);
	snprintf(c[k++], CELL, "%" PRIu64, a->failures);
	snprintf(c[k++], CELL, "%" PRIu64, a->hits);
	snprintf(c[k++], CELL, "%" PRIu64, a->misses);
	*ncols = k;
	return lead;
}

static int by_date(const void *a, const void *b)
{
	int64_t x = ((const struct store_agg *)a)->day, y = ((const struct store_agg *)b)->day;
	return x < y ? -1 : x > y;
}

static void print_table(const struct cmd_env *env, const struct store_report *r, enum store_by by)
{
	char c[NCOLS][CELL]; /* 5.6 KiB */
	int n = 0, lead = 0;
	size_t nrows = r->nby[by];
	struct cmd_table tab = {0};
	const char *row[NCOLS];
	char align[NCOLS + 1], flex[NCOLS + 1];

	/* header, rows, total; the names (lead columns) give way to a narrow terminal */
	for (size_t i = 0; i < nrows + 2; i++) {
		const struct store_agg *a = i == 0 ? NULL : i <= nrows ? &r->by[by][i - 1] : &r->total;
		lead = row_cells(a, by, 1, c, &n);
		for (int j = 0; j < n && j < NCOLS; j++) {
			row[j] = c[j];
			align[j] = j < lead ? 'l' : 'r';
			flex[j] = j < lead ? 'y' : 'n';
		}
		align[n] = flex[n] = 0;
		if (i == 0)
			cmd_table_init(&tab, n, row, align, flex);
		else
			cmd_table_row(&tab, row);
	}
	cmd_table_print(env, &tab, stdout);
	cmd_table_release(&tab);
	if (r->nkeys[by] > nrows)
		printf("(%zu more %ss; --top N shows more, --top 0 all)\n", r->nkeys[by] - nrows, by_names[by]);
}

/* One CSV field (RFC 4180: quoted when it holds a comma, quote or line break). */
static void csv_field(const char *s, int last)
{
	if (strpbrk(s, ",\"\r\n")) {
		putchar('"');
		for (; *s; s++) {
			if (*s == '"')
				putchar('"');
			putchar(*s);
		}
		putchar('"');
	} else {
		fputs(s, stdout);
	}
	fputs(last ? "\r\n" : ",", stdout);
}

static void print_csv(const struct store_report *r, enum store_by by)
{
	static const char *const heads[STORE_BY_N] = {"repo_type,repo", "repo_type,repo,path", "day",
						      "source,endpoint"};
	char c[NCOLS][CELL]; /* 5.6 KiB */
	int n;

	printf("%s,count,bytes,seconds,median_rate,p95_rate,retries,failures,hits,misses\r\n", heads[by]);
	for (size_t i = 0; i < r->nby[by]; i++) {
		const struct store_agg *a = &r->by[by][i];
		int lead = row_cells(a, by, 0, c, &n), j = 0;
		if (by == STORE_BY_REPO || by == STORE_BY_FILE) {
			/* "type:name" as two fields */
			const char *colon = strchr(a->key, ':');
			char type[32];
			snprintf(type, sizeof(type), "%.*s", colon ? (int)(colon - a->key) : 0, a->key);
			csv_field(type, 0);
			csv_field(colon ? colon + 1 : a->key, 0);
			if (by == STORE_BY_FILE)
				csv_field(a->path, 0);
			j = lead;
		} else if (by == STORE_BY_ENDPOINT) {
			csv_field(a->source, 0);
			csv_field(a->key, 0);
			j = lead;
		}
		for (; j < n; j++)
			csv_field(c[j], j + 1 == n);
	}
}

static void served_print(const struct store_served_row *v, size_t n)
{
	/* the total row is last: nothing served, no table */
	if (!n || !v[n - 1].requests)
		return;
	printf("\nSERVED (every request 'hubmirror serve' answered)\n%-48s %8s %8s %10s %8s %8s %7s\n", "REPO",
	       "REQUESTS", "FILES", "BYTES", "HITS", "MISSES", "ERRORS");
	for (size_t i = 0; i < n; i++) {
		char h[32];
		printf("%-48s %8llu %8llu %10s %8llu %8llu %7llu\n", v[i].key ? v[i].key : "total",
		       (unsigned long long)v[i].requests, (unsigned long long)v[i].files,
		       util_human_size(v[i].bytes, h, sizeof(h)), (unsigned long long)v[i].hits,
		       (unsigned long long)v[i].misses, (unsigned long long)v[i].errors);
	}
}

static const char *time_text(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (gmtime_r(&tt, &tm))
		strftime(buf, len, "%Y-%m-%d %H:%M UTC", &tm);
	else
		snprintf(buf, len, "%lld", (long long)t);
	return buf;
}

static int write_chart(struct cmd_env *env, struct store *st, const struct store_stats_query *base,
		       const char *file)
{
	struct store_stats_query q = *base;
	struct store_report r;
	struct util_buf b = UTIL_BUF_INIT, sub = UTIL_BUF_INIT;
	char t1[40], t2[40];
	enum hm_err err;
	int rc = 0;

	q.want = 1u << STORE_BY_DAY;
	q.top = 0;
	q.by_key = 1;
	q.legacy = 0;
	if ((err = store_report(&env->ctx, st, &q, &r))) {
		store_report_release(&r);
		return cmd_error(env, err);
	}
	if (util_buf_printf(&sub, "%s%s%s .. %s", q.repo ? q.repo : "all repositories", ", ",
			    q.since == INT64_MIN ? "the beginning" : time_text(q.since, t1, sizeof(t1)),
			    q.until == INT64_MAX ? "now" : time_text(q.until, t2, sizeof(t2))) ||
	    store_chart_days(&b, r.by[STORE_BY_DAY], r.nby[STORE_BY_DAY], sub.buf)) {
		rc = cmd_error(env, hm_fail(&env->ctx, HM_ERR_NOMEM, "out of memory drawing the chart"));
	} else if (util_write_file_atomic(file, b.buf, b.len) < 0) {
		rc = cmd_error(env, hm_fail(&env->ctx, HM_ERR_IO, "cannot write '%s': %s", file, strerror(errno)));
	}
	util_buf_release(&b);
	util_buf_release(&sub);
	store_report_release(&r);
	return rc;
}

/* ---- the command ---- */

static int stats_run(struct cmd_env *env, struct cmd_args *a)
{
	const struct stats_vals *opt = a->o;
	struct store *st = NULL;
	struct store_report rep;
	struct store_stats_query q = {NULL, INT64_MIN, INT64_MAX, 10, 0, 0, 0, STORE_SCAN_AUTO, STORE_SOURCE_ALL};
	enum hm_err err;
	enum store_by by = STORE_BY_REPO;
	char key[300];
	const char *r = opt->repo, *bys = opt->by, *chart = opt->chart;
	int top, csv = opt->csv, rc = 0;
	int64_t now = util_unix_time();

	memset(&rep, 0, sizeof(rep));
	if (a->npos)
		return cmd_usage_error(&cmd_stats, "stats takes no arguments");
	if (cmd_int_opt(a, &opt->top, 10, 0, 1000000000, &top))
		return 2;
	q.top = (size_t)top;
	if (bys) {
		int found = 0;
		for (int i = 0; i < STORE_BY_N; i++)
			if (!strcmp(bys, by_names[i])) {
				by = (enum store_by)i;
				found = 1;
			}
		if (!found)
			return cmd_usage_error(&cmd_stats, "unknown --by '%s': expected repo, file, day or endpoint", bys);
	}
	if (csv && env->json)
		return cmd_usage_error(&cmd_stats, "--csv and --json: choose one");
	if (chart && !*chart)
		return cmd_usage_error(&cmd_stats, "--chart needs a file name");
	if ((opt->since && store_parse_time(&env->ctx, opt->since, now, 0, &q.since)) ||
	    (opt->until && store_parse_time(&env->ctx, opt->until, now, 1, &q.until)))
		return cmd_usage_error(&cmd_stats, "%s", env->ctx.errmsg);
	if (q.since >= q.until)
		return cmd_usage_error(&cmd_stats, "--since must be before --until");
	if (r) {
		char buf[256];
		const char *type, *repo;
		if ((err = mirror_parse_repo(&env->ctx, r, NULL, buf, sizeof(buf), &type, &repo)))
			return cmd_error(env, err);
		snprintf(key, sizeof(key), "%s:%s", type, repo);
		q.repo = key;
	}
	q.want = env->json ? (1u << STORE_BY_N) - 1 : 1u << by;
	q.legacy = !csv;
	if ((err = cmd_open_store_mode(env, STORE_READ, &st)) || (err = store_report(&env->ctx, st, &q, &rep))) {
		rc = cmd_error(env, err);
		goto out;
	}
	/* --top keeps the days with the most bytes; they read in date order */
	if (rep.by[STORE_BY_DAY])
		qsort(rep.by[STORE_BY_DAY], rep.nby[STORE_BY_DAY], sizeof(*rep.by[STORE_BY_DAY]), by_date);
	if (chart && (rc = write_chart(env, st, &q, chart)))
		goto out;
	if (env->json) {
		/* schema 2: the pull-only "total" and "repos" of older versions are
		 * gone; by_repo and overall say the same for every transfer */
		json_t *o = json_pack("{s:o, s:o, s:I}", "overall", agg_json(&rep.total, STORE_BY_REPO), "served",
				      served_json(rep.served, rep.nserved), "top", (json_int_t)q.top);
		for (int b = 0; b < STORE_BY_N; b++) {
			json_t *list = json_array();
			char name[32];
			for (size_t i = 0; i < rep.nby[b]; i++)
				json_array_append_new(list, agg_json(&rep.by[b][i], (enum store_by)b));
			snprintf(name, sizeof(name), "by_%s", by_names[b]);
			json_object_set_new(o, name, list);
		}
		json_object_set_new(o, "store", json_string(store_name(st)));
		json_object_set_new(o, "since", q.since == INT64_MIN ? json_null() : json_integer(q.since));
		json_object_set_new(o, "until", q.until == INT64_MAX ? json_null() : json_integer(q.until));
		if (chart)
			json_object_set_new(o, "chart", json_string(chart));
		cmd_print_json(o);
	} else if (csv) {
		print_csv(&rep, by);
	} else {
		cmd_print_store(env, st);
		print_table(env, &rep, by);
		served_print(rep.served, rep.nserved);
		if (chart && !env->quiet)
			printf("\nchart written to %s\n", chart);
	}
out:
	store_report_release(&rep);
	store_close(st);
	return rc;
}

const struct cmd cmd_stats = {
	"stats", "[--repo REPO] [--since TIME] [--until TIME] [--by repo|file|day|endpoint] [--top N] [--csv] [--chart FILE.svg]",
	"Download and serving statistics: totals and breakdowns by repo, file, day, endpoint.",
	"Counts every transfer: each file a pull downloaded (or failed to), and each file\n"
	"'hubmirror serve' sent for a GET. Per row: transfers, bytes, seconds (wall time:\n"
	"while at least one of the row's transfers moved bytes, so parallel downloads\n"
	"count once; bytes over seconds is the rate you saw), the median\n"
	"and 95th percentile of the transfers' throughput (bytes/s of each transfer that\n"
	"moved bytes, weighted by its bytes: the rate at or below which half, or 95%, of\n"
	"the bytes moved, so that small files do not hide the large ones' rate),\n"
	"retries, failures (failed pulls, served status >= 400), cache hits and misses\n"
	"of the server. The table shows one breakdown (--by) and a total line;\n"
	"below it every request the server answered (API calls too), per repo.\n"
	"--json prints all four breakdowns (by_repo, by_file, by_day, by_endpoint: pulls\n"
	"by endpoint host, served files by client address) and the served requests\n"
	"('served').\n"
	"TIME is unix seconds, YYYY-MM-DD (UTC), 2024-05-01T12:00:00Z or +02:00, or a span\n"
	"back from now: 90s, 30m, 24h, 7d, 2w. --chart draws an SVG of bytes per day and\n"
	"each day's throughput (bytes over wall seconds, MiB/s); any browser opens it.\n"
	"--by day is in date order; a pull's endpoint is the host that sent the bytes.",
	stats_opts, sizeof(struct stats_vals), stats_run,
};
