/* route.c - turns a raw request path into a route. The path is split on '/'
 * BEFORE percent-decoding, so "refs%2Fpr%2F1" stays one segment and an
 * encoded "%2e%2e" or "%2f" can never smuggle a separator past the checks. */
#include <string.h>
#include "serve-int.h"

int srv_hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Decodes [s, s+n) into out (cap bytes); with plus, '+' is a space (query
 * strings and forms). Returns the length or -1 (bad escape, NUL, too long). */
int srv_pct_decode(const char *s, size_t n, char *out, size_t cap, int plus)
{
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		int ch = (unsigned char)s[i];
		if (ch == '+' && plus)
			ch = ' ';
		else if (ch == '%') {
			int a, b;
			if (i + 2 >= n)
				return -1;
			a = srv_hexval((unsigned char)s[i + 1]);
			b = srv_hexval((unsigned char)s[i + 2]);
			if (a < 0 || b < 0)
				return -1;
			ch = a * 16 + b;
			i += 2;
		}
		if (ch == 0 || j + 1 >= cap)
			return -1;
		out[j++] = (char)ch;
	}
	out[j] = 0;
	return (int)j;
}

static int is_op(const char *s)
{
	return !strcmp(s, "revision") || !strcmp(s, "tree") || !strcmp(s, "paths-info") || !strcmp(s, "refs") ||
	       !strcmp(s, "torrents");
}

/* Joins segs[from..n) with '/' into out; 0 or -1 if unsafe / too long. */
static int join(char segs[][256], int from, int n, char *out, size_t cap)
{
	size_t j = 0;
	out[0] = 0;
	for (int i = from; i < n; i++) {
		size_t l = strlen(segs[i]);
		if (j + l + 2 > cap)
			return -1;
		if (i > from)
			out[j++] = '/';
		memcpy(out + j, segs[i], l);
		j += l;
		out[j] = 0;
	}
	return 0;
}

void srv_route_parse(const char *url, struct srv_route *r)
{
	static __thread char segs[SRV_MAX_SEGS][256];
	int n = 0, k = 0;
	const char *p = url;

	memset(r, 0, sizeof(*r));
	r->type = "model";
	if (!url || url[0] != '/') {
		r->bad = 1;
		return;
	}
	p++;
	while (*p) {
		const char *e = strchr(p, '/');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (n == SRV_MAX_SEGS || srv_pct_decode(p, len, segs[n], sizeof(segs[n]), 0) < 0) {
			r->bad = 1;
			return;
		}
		n++;
		if (!e)
			break;
		p = e + 1;
		if (!*p) { /* trailing slash: an empty last segment */
			segs[n][0] = 0;
			n++;
			break;
		}
	}
	if (n == 1 && !strcmp(segs[0], "metrics")) {
		r->what = R_METRICS;
		return;
	}
	if (n == 4 && !strcmp(segs[0], "api") && !strcmp(segs[1], "hubmirror") && !strcmp(segs[2], "torrents")) {
		if (!util_is_hex(segs[3], 64)) {
			r->bad = 1;
			return;
		}
		strcpy(r->path, segs[3]);
		r->what = R_TORRENT;
		return;
	}
	if (n >= 3 && !strcmp(segs[0], "api") && (!strcmp(segs[1], "models") || !strcmp(segs[1], "datasets"))) {
		r->type = !strcmp(segs[1], "datasets") ? "dataset" : "model";
		k = 2;
		int rl; /* repo segments */
		if (n - k >= 3 && is_op(segs[k + 2]))
			rl = 2;
		else if (n - k >= 2 && is_op(segs[k + 1]))
			rl = 1;
		else if (n - k <= 2)
			rl = n - k;
		else {
			r->bad = 1;
			return;
		}
		if (join(segs, k, k + rl, r->repo, sizeof(r->repo)) || !util_repo_id_is_valid(r->repo)) {
			r->bad = 1;
			return;
		}
		k += rl;
		if (k == n) {
			r->what = R_REPO_INFO;
			return;
		}
		const char *op = segs[k++];
		if (!strcmp(op, "refs") && k == n) {
			r->what = R_REFS;
			return;
		}
		if (k >= n || !segs[k][0] || strlen(segs[k]) >= sizeof(r->rev)) {
			r->bad = 1;
			return;
		}
		strcpy(r->rev, segs[k++]);
		if (!strcmp(op, "revision") && k == n)
			r->what = R_REVISION;
		else if (!strcmp(op, "paths-info") && k == n)
			r->what = R_PATHS_INFO;
		else if (!strcmp(op, "torrents") && k == n)
			r->what = R_REV_TORRENTS;
		else if (!strcmp(op, "tree")) {
			r->what = R_TREE;
			if (k < n && (join(segs, k, n, r->path, sizeof(r->path)) ||
				      (r->path[0] && !util_path_is_safe(r->path))))
				r->bad = 1;
		} else
			r->bad = 1;
		return;
	}
	/* [datasets/]REPO/resolve/REV/PATH */
	if (n >= 1 && !strcmp(segs[0], "datasets")) {
		r->type = "dataset";
		k = 1;
	}
	int rl;
	if (n - k >= 5 && !strcmp(segs[k + 2], "resolve"))
		rl = 2;
	else if (n - k >= 4 && !strcmp(segs[k + 1], "resolve"))
		rl = 1;
	else
		return; /* R_NONE: 404 */
	if (join(segs, k, k + rl, r->repo, sizeof(r->repo)) || !util_repo_id_is_valid(r->repo)) {
		r->bad = 1;
		return;
	}
	k += rl + 1;
	if (!segs[k][0] || strlen(segs[k]) >= sizeof(r->rev)) {
		r->bad = 1;
		return;
	}
	strcpy(r->rev, segs[k++]);
	if (join(segs, k, n, r->path, sizeof(r->path)) || !util_path_is_safe(r->path)) {
		r->bad = 1;
		return;
	}
	r->what = R_RESOLVE;
}
