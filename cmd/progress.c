/* progress.c - progress on stderr, drawn from hm_event: a one-line bar that
 * fits the terminal on a tty, periodic plain lines otherwise (CI logs),
 * every retry, and the request log of --verbose / HF_DEBUG=1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "cmd.h"

#define PLAIN_INTERVAL 5.0 /* seconds between plain lines (aria2c's --summary-interval is 60) */

static int env_true(const char *name)
{
	const char *v = getenv(name);
	return v && *v && strcmp(v, "0") && strcasecmp(v, "false") && strcasecmp(v, "no") && strcasecmp(v, "off");
}

void cmd_progress_init(struct cmd_env *env, int verbose)
{
	struct cmd_progress *p = &env->prog;
	const char *iv = getenv("HUBMIRROR_PROGRESS_INTERVAL");
	memset(p, 0, sizeof(*p));
	p->interval = PLAIN_INTERVAL;
	if (iv && *iv) {
		double d = strtod(iv, NULL);
		if (d > 0)
			p->interval = d;
	}
	p->t_start = util_now();
	p->last_plain = p->t_start;
	if (env->quiet || env_true("HF_HUB_DISABLE_PROGRESS_BARS"))
		p->mode = CMD_PROGRESS_NONE;
	else
		p->mode = isatty(2) ? CMD_PROGRESS_BAR : CMD_PROGRESS_PLAIN;
	env->progress = p->mode == CMD_PROGRESS_BAR;
	env->ctx.verbose = verbose || env_true("HF_DEBUG");
	env->ctx.on_event = cmd_progress_event;
	env->ctx.event_ud = env;
}

void cmd_progress_label(struct cmd_env *env, const char *type, const char *repo)
{
	env->prog.files_here = env->prog.files_total = 0;
	snprintf(env->prog.label, sizeof(env->prog.label), "%s%s", type && !strcmp(type, "dataset") ? "datasets/" : "",
		 repo ? repo : "");
}

int cmd_term_width(void)
{
	struct winsize ws;
	const char *c = getenv("COLUMNS");
	/* asked at every redraw: a resized terminal (SIGWINCH) is followed
	 * without a signal handler and its process-wide flag */
	if (isatty(2) && ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	if (isatty(1) && ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	if (c && atoi(c) > 0)
		return atoi(c);
	return 80;
}

static const char *eta_str(double s, char *buf, size_t len)
{
	long t = (long)(s + 0.5);
	if (t >= 100 * 3600)
		snprintf(buf, len, "eta >99h");
	else if (t >= 3600)
		snprintf(buf, len, "eta %ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(buf, len, "eta %ld:%02ld", t / 60, t % 60);
	return buf;
}

/* The pieces of a progress line, most important first. */
enum { P_PCT, P_BYTES, P_RATE, P_ETA, P_FILES, P_LABEL, P_CONNS, P_RESUMED, P_N };
/* the order in which they appear */
static const int show_order[] = {P_LABEL, P_PCT, P_BYTES, P_RATE, P_ETA, P_FILES, P_CONNS, P_RESUMED};

static void pieces(const struct cmd_env *env, const struct hm_event *ev, char p[P_N][320], int plain)
{
	char a[32], b[32], r[32];
	for (int i = 0; i < P_N; i++)
		p[i][0] = 0;
	if (env->prog.label[0])
		snprintf(p[P_LABEL], sizeof(p[P_LABEL]), "%s", env->prog.label);
	else if (ev->name)
		snprintf(p[P_LABEL], sizeof(p[P_LABEL]), "%s", ev->name);
	snprintf(p[P_PCT], sizeof(p[P_PCT]), "%3d%%", (int)(100.0 * (double)ev->done / (double)ev->total));
	snprintf(p[P_BYTES], sizeof(p[P_BYTES]), plain ? "%s of %s" : "%s/%s", util_human_size(ev->done, a, sizeof(a)),
		 util_human_size(ev->total, b, sizeof(b)));
	if (ev->rate > 0)
		cmd_rate(ev->rate, p[P_RATE], sizeof(p[P_RATE]));
	if (ev->rate > 0 && ev->done < ev->total)
		eta_str((double)(ev->total - ev->done) / ev->rate, p[P_ETA], sizeof(p[P_ETA]));
	/* files of the revision: those already here count as done */
	int fdone = ev->files_done, ftotal = ev->files_total;
	if (env->prog.files_total >= ftotal + env->prog.files_here) {
		fdone += env->prog.files_here;
		ftotal = env->prog.files_total;
	}
	if (ftotal > 1)
		snprintf(p[P_FILES], sizeof(p[P_FILES]), "%d/%d files", fdone, ftotal);
	if (ev->active > 0)
		snprintf(p[P_CONNS], sizeof(p[P_CONNS]), "%d conn%s", ev->active, ev->active == 1 ? "" : "s");
	if (ev->resumed > 0 && ev->resumed < ev->total)
		snprintf(p[P_RESUMED], sizeof(p[P_RESUMED]), "resumed from %s", util_human_size(ev->resumed, r, sizeof(r)));
	(void)r;
}

/* Draws the bar line: at most width-1 columns (the last one would wrap on
 * some terminals), dropping the least important pieces first, then the bar,
 * then cutting the label. */
static void draw_bar(struct cmd_env *env, const struct hm_event *ev)
{
	char p[P_N][320], line[1024], tail[512];
	int room = cmd_term_width() - 1, drop[P_N] = {0}, bar, n = 0;
	size_t tl, ll;
	if (room > (int)sizeof(line) - 64)
		room = (int)sizeof(line) - 64;
	pieces(env, ev, p, 0);
	ll = strlen(p[P_LABEL]);
	if (ll > 12 && (int)ll > room / 2) {
		/* a long repo name keeps its end, where names differ */
		size_t keep = (size_t)(room / 2 > 12 ? room / 2 : 12) - 3;
		memmove(p[P_LABEL] + 3, p[P_LABEL] + ll - keep, keep + 1);
		memcpy(p[P_LABEL], "...", 3);
	}
	for (;;) {
		tl = 0;
		tail[0] = 0;
		for (size_t k = 0; k < sizeof(show_order) / sizeof(show_order[0]); k++) {
			int i = show_order[k];
			if (i == P_LABEL || drop[i] || !p[i][0])
				continue;
			tl += (size_t)snprintf(tail + tl, sizeof(tail) - tl, "%s%s", tl ? "  " : "", p[i]);
			if (tl >= sizeof(tail))
				tl = sizeof(tail) - 1;
		}
		ll = drop[P_LABEL] ? 0 : strlen(p[P_LABEL]);
		/* label " [" bar "] " tail */
		bar = room - (int)ll - (ll ? 1 : 0) - 3 - (int)tl;
		if (bar >= 12)
			break;
		/* too narrow for a bar: drop the least important piece left */
		int victim = -1;
		for (int i = P_N - 1; i > P_BYTES && victim < 0; i--)
			if (!drop[i] && p[i][0])
				victim = i;
		if (victim < 0)
			break;
		drop[victim] = 1;
	}
	if (bar > 42)
		bar = 42;
	if (ll)
		n += snprintf(line + n, sizeof(line) - (size_t)n, "%s ", p[P_LABEL]);
	if (bar >= 12) {
		int fill = (int)((double)(bar - 2) * (double)ev->done / (double)ev->total);
		line[n++] = '[';
		for (int i = 0; i < bar - 2; i++)
			line[n++] = i < fill ? '=' : (i == fill ? '>' : ' ');
		line[n++] = ']';
		line[n++] = ' ';
	}
	n += snprintf(line + n, sizeof(line) - (size_t)n, "%s", tail);
	if (n > room)
		n = room > 0 ? room : 0;
	line[n] = 0;
	/* \r, the line, erase to the end of the line: no stale characters */
	fprintf(stderr, "\r%s\x1b[K", line);
	fflush(stderr);
	env->prog.drawn = 1;
}

static void plain_line(struct cmd_env *env, const struct hm_event *ev)
{
	char p[P_N][320], line[1024];
	size_t n = 0;
	pieces(env, ev, p, 1);
	n += (size_t)snprintf(line + n, sizeof(line) - n, "hubmirror: %s%s", p[P_LABEL], p[P_LABEL][0] ? ": " : "");
	static const int plain_order[] = {P_FILES, P_BYTES, P_PCT, P_RATE, P_ETA, P_CONNS, P_RESUMED};
	int first = 1;
	for (size_t k = 0; k < sizeof(plain_order) / sizeof(plain_order[0]) && n < sizeof(line); k++) {
		int i = plain_order[k];
		const char *s = p[i];
		while (*s == ' ')
			s++;
		if (!*s)
			continue;
		n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s%s%s", first ? "" : (i == P_PCT ? " (" : ", "),
				      s, i == P_PCT ? ")" : "", i == P_CONNS ? "" : "");
		first = 0;
	}
	fprintf(stderr, "%s\n", line);
	fflush(stderr);
}

static void retry_line(struct cmd_env *env, const struct hm_event *ev)
{
	char why[300], wait[32];
	if (ev->status)
		snprintf(why, sizeof(why), "HTTP %ld", ev->status);
	else
		snprintf(why, sizeof(why), "%s", ev->msg && *ev->msg ? ev->msg : "failed");
	if (ev->backoff >= 1 || ev->backoff == 0)
		snprintf(wait, sizeof(wait), "%.0f s", ev->backoff);
	else
		snprintf(wait, sizeof(wait), "%.1f s", ev->backoff);
	cmd_progress_end(env);
	if (ev->attempts > 0)
		fprintf(stderr, "hubmirror: retrying %s in %s (%d/%d): %s\n", ev->name ? ev->name : "", wait, ev->attempt,
			ev->attempts, why);
	else
		fprintf(stderr, "hubmirror: retrying %s: %s\n", ev->name ? ev->name : "", why);
	fflush(stderr);
}

void cmd_progress_event(void *ud, const struct hm_event *ev)
{
	struct cmd_env *env = ud;
	struct cmd_progress *p = &env->prog;
	if (ev->kind == HM_EV_HTTP) {
		cmd_progress_end(env);
		if (ev->status)
			fprintf(stderr, "hubmirror: http: %s %s -> %ld (%.3f s)\n", ev->method ? ev->method : "GET",
				ev->name ? ev->name : "", ev->status, ev->seconds);
		else
			fprintf(stderr, "hubmirror: http: %s %s -> no answer (%.3f s)\n", ev->method ? ev->method : "GET",
				ev->name ? ev->name : "", ev->seconds);
		return;
	}
	if (ev->kind == HM_EV_INFO && ev->msg && !strcmp(ev->msg, "files")) {
		p->files_here = ev->files_done;
		p->files_total = ev->files_total;
		return;
	}
	if (ev->kind == HM_EV_INFO && ev->name && ev->msg && !strcmp(ev->msg, "sync")) {
		snprintf(p->label, sizeof(p->label), "%s", ev->name);
		return;
	}
	if (p->mode == CMD_PROGRESS_NONE && !env->ctx.verbose)
		return;
	if (ev->kind == HM_EV_RETRY) {
		if (!env->quiet)
			retry_line(env, ev);
		return;
	}
	if (ev->kind != HM_EV_PROGRESS || !ev->total)
		return;
	if (p->mode == CMD_PROGRESS_BAR) {
		draw_bar(env, ev);
	} else if (p->mode == CMD_PROGRESS_PLAIN) {
		double now = util_now();
		if (now - p->last_plain >= p->interval) {
			p->last_plain = now;
			plain_line(env, ev);
		}
	}
}

void cmd_progress_end(struct cmd_env *env)
{
	if (env && env->prog.drawn) {
		fputs("\r\x1b[K", stderr);
		fflush(stderr);
		env->prog.drawn = 0;
	}
}

const char *cmd_rate(double bps, char *buf, size_t len)
{
	char h[32];
	snprintf(buf, len, "%s/s", util_human_size((uint64_t)(bps < 0 ? 0 : bps), h, sizeof(h)));
	return buf;
}
