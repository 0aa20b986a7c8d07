/* stats.c - transfer statistics (downloads and served files: totals,
 * breakdowns, throughput percentiles) and store usage (du). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "store-int.h"
#include "../util/util.h"


enum hm_err store_stats_filter(struct hm_ctx *ctx, const char *repo, char **type, const char **name)
{
	const char *colon = repo ? strchr(repo, ':') : NULL;

	*type = NULL;
	*name = repo;
	/* "type:name" filters both; a bare name matches it in any type */
	if (colon) {
		if (!(*type = util_strndup(repo, (size_t)(colon - repo))))
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory reading statistics");
		*name = colon + 1;
	}
	return HM_OK;
}

void store_stats_free(struct store_stats_row *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].key);
	free(v);
}

/* ---- --since / --until ---- */

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;
	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* Reads exactly n digits at *p. */
static int digits(const char **p, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++, (*p)++) {
		if (**p < '0' || **p > '9')
			return -1;
		*v = *v * 10 + (**p - '0');
	}
	return 0;
}

static int parse_iso(const char *s, int upper, int64_t *out)
{
	const char *p = s;
	int y, mo, d, h = 0, mi = 0, sec = 0, tzh = 0, tzm = 0, sign = 0;
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d))
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
	    (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)))
		return -1;
	if (!*p) {
		/* a day as an upper bound includes that day */
		*out = (days_from_civil(y, mo, d) + (upper ? 1 : 0)) * 86400;
		return 0;
	}
	if ((*p != 'T' && *p != 't' && *p != ' ') || (p++, digits(&p, 2, &h)) || *p++ != ':' || digits(&p, 2, &mi))
		return -1;
	if (*p == ':') {
		p++;
		if (digits(&p, 2, &sec))
			return -1;
		if (*p == '.' || *p == ',') {
			p++;
			if (*p < '0' || *p > '9')
				return -1;
			while (*p >= '0' && *p <= '9')
				p++;
		}
	}
	if (h > 23 || mi > 59 || sec > 60)
		return -1;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '-' ? -1 : 1;
		if (digits(&p, 2, &tzh))
			return -1;
		if (*p == ':')
			p++;
		if (digits(&p, 2, &tzm) || tzh > 23 || tzm > 59)
			return -1;
	}
	if (*p)
		return -1;
	*out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - sign * (tzh * 3600 + tzm * 60);
	return 0;
}

enum hm_err store_parse_time(struct hm_ctx *ctx, const char *s, int64_t now, int upper, int64_t *out)
{
	const char *p = s;
	int64_t n = 0;

	if (!s || !*s)
		return hm_fail(ctx, HM_ERR_USAGE, "empty time");
	while (*p >= '0' && *p <= '9') {
		if (n > (INT64_MAX - 9) / 10 / 604800)
			return hm_fail(ctx, HM_ERR_USAGE, "time '%s' is out of range", s);
		n = n * 10 + (*p++ - '0');
	}
	if (p > s && !*p) {
		*out = n;
		return HM_OK;
	}
	if (p > s && p[1] == '\0' && strchr("smhdw", *p)) {
		static const int64_t unit[] = {1, 60, 3600, 86400, 604800};
		*out = now - n * unit[strchr("smhdw", *p) - "smhdw"];
		return HM_OK;
	}
	if (parse_iso(s, upper, out) == 0)
		return HM_OK;
	return hm_fail(ctx, HM_ERR_USAGE, "cannot read time '%s': expected YYYY-MM-DD, an ISO-8601 time"
		       " (2024-05-01T12:00:00Z), unix seconds, or a span like 7d, 24h, 30m", s);
}

/* ---- the report ---- */

/* A group of transfers with the same key. */
struct grp {
	const char *k;    /* key bytes, owned by the map's kmap (may hold a NUL:
			     file keys are "type:name\0path") */
	size_t klen;
	struct store_agg a; /* from its sums once the scan is over (gmap_settle) */
};
#define NONE UINT32_MAX

/* An array of n indexes, all NONE. */
static uint32_t *idmap_new(size_t n)
{
	uint32_t *m = malloc((n ? n : 1) * sizeof(*m));
	if (m)
		memset(m, 0xff, (n ? n : 1) * sizeof(*m));
	return m;
}

/* What the scan adds up per group: one cache line, apart from the rest of
 * the group (a million transfers over fifty thousand files touch a group
 * at random for each). */
struct sums {
	uint64_t count, bytes, retries, failures, hits, misses, nrates;
	double seconds;
};

/* Groups by key: g[i] and h[i] are the group of key i of keys (until
 * sort_groups_by_key). */
struct gmap {
	struct store_kmap keys;
	struct grp *g;
	struct sums *h;   /* 64-byte aligned */
	size_t n, cap;
};

/* Index of the group for key k (made when new); -1 when out of memory. */
static int64_t gmap_get(struct gmap *m, const char *k, size_t n)
{
	int added;
	int64_t i = store_kmap_get(&m->keys, k, n, &added);
	struct grp *g;

	if (i < 0 || !added)
		return i;
	if (m->n == m->cap) {
		size_t nc = m->cap ? m->cap * 2 : 64;
		void *p = realloc(m->g, nc * sizeof(*m->g)), *h = NULL;
		if (!p)
			return -1;
		m->g = p;
		if (posix_memalign(&h, 64, nc * sizeof(*m->h)))
			return -1;
		if (m->n)
			memcpy(h, m->h, m->n * sizeof(*m->h));
		free(m->h);
		m->h = h;
		m->cap = nc;
	}
	memset(&m->h[m->n], 0, sizeof(*m->h));
	g = &m->g[m->n++];
	memset(g, 0, sizeof(*g));
	g->k = m->keys.keys[i].k;
	g->klen = n;
	return i;
}

static void sums_to_agg(const struct sums *h, struct store_agg *a)
{
	a->count = h->count;
	a->bytes = h->bytes;
	a->retries = h->retries;
	a->failures = h->failures;
	a->hits = h->hits;
	a->misses = h->misses;
	a->nrates = h->nrates;
	a->seconds = h->seconds;
}

/* Moves the sums of the scan into the groups. */
static void gmap_settle(struct gmap *m)
{
	for (size_t i = 0; i < m->n; i++)
		sums_to_agg(&m->h[i], &m->g[i].a);
}

static void gmap_release(struct gmap *m)
{
	store_kmap_release(&m->keys);
	free(m->g);
	free(m->h);
	memset(m, 0, sizeof(*m));
}

/* One transfer as read from either table. */
struct xfer {
	const char *type, *repo, *path, *peer;
	size_t lt, lr, lp, le;
	uint32_t rid, fid, pid;   /* from a chunk: dictionary ids of repo, file, peer (the
				     strings are set only to make a key: xfer_strings); else 0 */
	int has_repo;             /* a repo type and name, both non-empty */
	int64_t started_at;
	uint64_t bytes, retries;
	double seconds;
	int failed, hit, miss, serve;
};

struct scan {
	const struct store_stats_query *q;
	struct gmap m[STORE_BY_N];
	struct gmap pulls, served;
	struct sums pulls_total, served_total;
	double *rates;            /* per transfer with a rate, in scan order */
	double *wts;              /* its bytes: the percentiles are weighted by them */
	int64_t *t0;              /* when it started (unix seconds) */
	double *dur;              /* its seconds: [t0, t0 + dur) counts in the wall time */
	uint32_t *gid[STORE_BY_N];/* its group in each breakdown */
	size_t nrates, caprates;
	struct sums total;
	char *kbuf;
	size_t kcap;
	/* reading the statistics cache: its dictionaries, and per id the
	 * group it has in a map (NONE until its first transfer) */
	const struct store_sc_dict *dict;
	uint32_t *idmap[STORE_BY_N], *idpulls, *idserved;
	int64_t day, day_g;       /* the day found last and its group (-1: none) */
};

static void agg_add(struct sums *a, const struct xfer *x, int rated)
{
	a->count++;
	a->bytes += x->bytes;
	a->retries += x->retries;
	a->failures += (uint64_t)x->failed;
	a->hits += (uint64_t)x->hit;
	a->misses += (uint64_t)x->miss;
	a->seconds += x->seconds;
	a->nrates += (uint64_t)rated;
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - ((a % b) != 0 && ((a < 0) != (b < 0)));
}

/* Builds the key of x in breakdown by into s->kbuf; returns its length, or -1. */
static int64_t make_key(struct scan *s, enum store_by by, const struct xfer *x)
{
	size_t lt = x->lt, lr = x->lr, lp = x->lp, le = x->le;
	size_t need = lt + lr + lp + le + 16;
	char *k;
	if (need > s->kcap) {
		char *p = realloc(s->kbuf, need * 2);
		if (!p)
			return -1;
		s->kbuf = p;
		s->kcap = need * 2;
	}
	k = s->kbuf;
	switch (by) {
	case STORE_BY_DAY: {
		int64_t day = floor_div(x->started_at, 86400);
		memcpy(k, &day, sizeof(day));
		return (int64_t)sizeof(day);
	}
	case STORE_BY_ENDPOINT:
		k[0] = x->serve ? 's' : 'p';
		memcpy(k + 1, x->peer, le);
		return (int64_t)le + 1;
	case STORE_BY_FILE:
	case STORE_BY_REPO:
	default:
		memcpy(k, x->type, lt);
		k[lt] = ':';
		memcpy(k + lt + 1, x->repo, lr);
		if (by == STORE_BY_REPO)
			return (int64_t)(lt + 1 + lr);
		k[lt + 1 + lr] = '\0';
		memcpy(k + lt + 2 + lr, x->path, lp);
		return (int64_t)(lt + 2 + lr + lp);
	}
}

/* Points the strings of x (from a chunk) at its dictionary entries. */
static void xfer_strings(const struct store_sc_dict *d, struct xfer *x)
{
	x->type = d->text + d->rtype[x->rid].off;
	x->lt = d->rtype[x->rid].len;
	x->repo = d->text + d->rname[x->rid].off;
	x->lr = d->rname[x->rid].len;
	if (x->fid) {
		x->path = d->text + d->fpath[x->fid].off;
		x->lp = d->fpath[x->fid].len;
	}
	if (x->pid) {
		x->peer = d->text + d->peer[x->pid].off + 1;
		x->le = d->peer[x->pid].len - 1;
	}
}

/* The group of x in map m: a transfer from a chunk finds it through the
 * ids of its strings (its key is made once per id), others by key. */
static int64_t group_of(struct scan *s, struct gmap *m, uint32_t *idmap, enum store_by by, struct xfer *x)
{
	uint32_t id = by == STORE_BY_REPO ? x->rid : by == STORE_BY_FILE ? x->fid : by == STORE_BY_ENDPOINT ? x->pid : 0;
	int64_t len, g;

	if (by == STORE_BY_DAY) {
		/* transfers come in time order, mostly: a day at a time */
		int64_t day = floor_div(x->started_at, 86400);
		if (s->day_g >= 0 && day == s->day)
			return s->day_g;
		if ((len = make_key(s, by, x)) < 0 || (g = gmap_get(m, s->kbuf, (size_t)len)) < 0)
			return -1;
		s->day = day;
		return s->day_g = g;
	}
	if (id && idmap && idmap[id] != NONE)
		return idmap[id];
	if (x->rid)
		xfer_strings(s->dict, x);
	if ((len = make_key(s, by, x)) < 0 || (g = gmap_get(m, s->kbuf, (size_t)len)) < 0)
		return -1;
	if (id && idmap)
		idmap[id] = (uint32_t)g;
	return g;
}

/* Room for n rates (and their groups) in all. */
static int scan_reserve(struct scan *s, size_t n)
{
	void *p;
	if (n <= s->caprates)
		return 0;
	if (!(p = realloc(s->rates, n * sizeof(*s->rates))))
		return -1;
	s->rates = p;
	if (!(p = realloc(s->wts, n * sizeof(*s->wts))))
		return -1;
	s->wts = p;
	if (!(p = realloc(s->t0, n * sizeof(*s->t0))))
		return -1;
	s->t0 = p;
	if (!(p = realloc(s->dur, n * sizeof(*s->dur))))
		return -1;
	s->dur = p;
	for (int b = 0; b < STORE_BY_N; b++) {
		if (!(s->q->want & (1u << b)))
			continue;
		if (!(p = realloc(s->gid[b], n * sizeof(*s->gid[b]))))
			return -1;
		s->gid[b] = p;
	}
	s->caprates = n;
	return 0;
}

static int scan_add(struct scan *s, struct xfer *x)
{
	int rated = x->bytes > 0 && x->seconds > 0;
	if ((s->q->source == STORE_SOURCE_PULLS && x->serve) || (s->q->source == STORE_SOURCE_SERVED && !x->serve))
		return 0;
	if (rated && s->nrates == s->caprates && scan_reserve(s, s->caprates ? s->caprates * 2 : 4096))
		return -1;
	for (int b = 0; b < STORE_BY_N; b++) {
		int64_t g;
		if (!(s->q->want & (1u << b)))
			continue;
		if ((g = group_of(s, &s->m[b], s->idmap[b], (enum store_by)b, x)) < 0)
			return -1;
		agg_add(&s->m[b].h[g], x, rated);
		if (rated)
			s->gid[b][s->nrates] = (uint32_t)g;
	}
	if (s->q->legacy && !x->serve) {
		int64_t g;
		if ((g = group_of(s, &s->pulls, s->idpulls, STORE_BY_REPO, x)) < 0)
			return -1;
		agg_add(&s->pulls.h[g], x, 0);
		agg_add(&s->pulls_total, x, 0);
	}
	agg_add(&s->total, x, rated);
	if (rated) {
		s->t0[s->nrates] = x->started_at;
		s->dur[s->nrates] = x->seconds;
		s->wts[s->nrates] = (double)x->bytes;
		s->rates[s->nrates++] = (double)x->bytes / x->seconds;
	}
	return 0;
}

static const char *col_text(sqlite3_stmt *q, int i)
{
	const char *t = (const char *)sqlite3_column_text(q, i);
	return t ? t : "";
}

/* Text column i and its length. */
static const char *col_textn(sqlite3_stmt *q, int i, size_t *n)
{
	const char *t = (const char *)sqlite3_column_text(q, i);
	*n = t ? (size_t)sqlite3_column_bytes(q, i) : 0;
	return t ? t : "";
}

/* Ids of a table to read: (lo, hi]; all of them when lo is 0 and hi INT64_MAX. */
struct idrange {
	int64_t lo, hi;
};
/* (lo, hi]; lo = INT64_MIN: no lower bound (ids may be 0 or negative: a
 * rowid is whatever a writer chose), hi = INT64_MAX: no upper bound */
#define ALL_IDS ((struct idrange){INT64_MIN, INT64_MAX})

/* Appends the repo and time conditions of the query (bound as ?1..?4) and
 * the id range (?5, ?6). Over a range of ids the other conditions are kept
 * from the indexes ("+"): the range is a few rows, the time span may be most. */
static void where_range(char *sql, size_t len, const struct store_stats_query *q, const char *name,
			const char *type, struct idrange ids)
{
	size_t n = strlen(sql);
	int by_id = ids.lo > INT64_MIN || ids.hi < INT64_MAX;
	const char *p = by_id ? "+" : "";
	snprintf(sql + n, len - n, "%s%s%s%s%s%s%s%s%s%s%s",
		 name ? " AND " : "", name ? p : "", name ? "repo = ?1" : "",
		 type ? " AND " : "", type ? p : "", type ? "repo_type = ?2" : "",
		 q->since != INT64_MIN ? " AND " : "", q->since != INT64_MIN ? p : "", q->since != INT64_MIN ? "started_at >= ?3" : "",
		 ids.lo > INT64_MIN ? " AND id > ?5" : "", ids.hi < INT64_MAX ? " AND id <= ?6" : "");
	n = strlen(sql);
	if (q->until != INT64_MAX)
		snprintf(sql + n, len - n, " AND %sstarted_at < ?4", p);
}

/* Per repo served requests (every kind), as store_served_stats counts them. */
static int served_legacy_add(struct scan *s, struct xfer *x, int file, int error)
{
	struct sums *a = &s->served_total;
	for (int pass = 0; pass < 2; pass++) {
		if (pass) {
			int64_t g;
			/* requests that named no repo count in the total only */
			if (!x->has_repo)
				break;
			if ((g = group_of(s, &s->served, s->idserved, STORE_BY_REPO, x)) < 0)
				return -1;
			a = &s->served.h[g];
		}
		a->count++;
		a->nrates += (uint64_t)file; /* files */
		a->bytes += x->bytes;
		a->hits += (uint64_t)x->hit;
		a->misses += (uint64_t)x->miss;
		a->failures += (uint64_t)error;
		a->seconds += x->seconds;
	}
	return 0;
}

/* Adds the transfers of one table (ids in the range) read row by row. */
static enum hm_err scan_table(struct hm_ctx *ctx, sqlite3 *db, struct scan *s, int serve,
			      const char *name, const char *type, struct idrange ids)
{
	char sql[768];
	sqlite3_stmt *q = NULL;
	enum hm_err err = HM_OK;
	unsigned w = s->q->want;
	/* only the columns this report needs (each costs a call per row);
	 * all of them are in the covering indexes downloads_stats / served_stats */
	int need_repo = (w & ((1u << STORE_BY_REPO) | (1u << STORE_BY_FILE))) || s->q->legacy;
	int need_path = !!(w & (1u << STORE_BY_FILE)), need_peer = !!(w & (1u << STORE_BY_ENDPOINT));
	int rc;

	snprintf(sql, sizeof(sql), "SELECT bytes, seconds, %s, %s, %s, %s, %s, %s",
		 w & (1u << STORE_BY_DAY) ? "started_at" : "0", need_repo ? "repo_type" : "NULL", need_repo ? "repo" : "NULL", need_path ? "path" : "NULL",
		 need_peer ? (serve ? "client" : "endpoint") : "NULL",
		 serve ? "status, cache = 'hit', cache = 'miss', kind = 'file', method = 'GET' FROM served WHERE 1"
		       : "retries, result = 'failed' FROM downloads WHERE 1");
	/* legacy served rows count every request; transfers only file GETs */
	if (serve && !s->q->legacy)
		snprintf(sql + strlen(sql), sizeof(sql) - strlen(sql), " AND kind = 'file' AND method = 'GET'");
	where_range(sql, sizeof(sql), s->q, name, type, ids);
	if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
		return hm_fail(ctx, HM_ERR_DB, "cannot read statistics: %s", sqlite3_errmsg(db));
	if (name)
		sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	if (type)
		sqlite3_bind_text(q, 2, type, -1, SQLITE_STATIC);
	if (s->q->since != INT64_MIN)
		sqlite3_bind_int64(q, 3, s->q->since);
	if (s->q->until != INT64_MAX)
		sqlite3_bind_int64(q, 4, s->q->until);
	if (ids.lo > INT64_MIN || ids.hi < INT64_MAX) {
		/* a parameter the SQL leaves out is SQLITE_RANGE here: harmless */
		sqlite3_bind_int64(q, 5, ids.lo);
		sqlite3_bind_int64(q, 6, ids.hi);
	}
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		struct xfer x;
		int64_t b = sqlite3_column_int64(q, 0);
		memset(&x, 0, sizeof(x));
		x.bytes = b > 0 ? (uint64_t)b : 0;
		x.seconds = sqlite3_column_double(q, 1);
		if (x.seconds < 0)
			x.seconds = 0;
		x.started_at = sqlite3_column_int64(q, 2);
		x.type = need_repo ? col_textn(q, 3, &x.lt) : "";
		x.repo = need_repo ? col_textn(q, 4, &x.lr) : "";
		x.has_repo = x.lt && x.lr;
		x.path = need_path ? col_textn(q, 5, &x.lp) : "";
		x.peer = need_peer ? col_textn(q, 6, &x.le) : "";
		x.serve = serve;
		if (serve) {
			x.failed = sqlite3_column_int(q, 7) >= 400;
			x.hit = sqlite3_column_int(q, 8);
			x.miss = sqlite3_column_int(q, 9);
			if (s->q->legacy && served_legacy_add(s, &x, sqlite3_column_int(q, 10), x.failed))
				goto nomem;
			if (!sqlite3_column_int(q, 10) || !sqlite3_column_int(q, 11))
				continue;
		} else {
			int64_t r = sqlite3_column_int64(q, 7);
			x.retries = r > 0 ? (uint64_t)r : 0;
			x.failed = sqlite3_column_int(q, 8);
		}
		if (scan_add(s, &x))
			goto nomem;
		if ((s->total.count & 0xffff) == 0 && hm_cancelled(ctx)) {
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
			break;
		}
	}
	if (!err && rc != SQLITE_DONE)
		err = hm_fail(ctx, rc == SQLITE_NOMEM ? HM_ERR_NOMEM : HM_ERR_DB, "cannot read statistics: %s",
			      sqlite3_errmsg(db));
	sqlite3_finalize(q);
	return err;
nomem:
	sqlite3_finalize(q);
	return hm_fail(ctx, HM_ERR_NOMEM, "out of memory reading statistics");
}

/* ---- reading the statistics cache ---- */

/* Transfers of one repo below which its report reads the tables through the
 * repo indexes instead of the whole cache. */
#define STATS_FEW 50000

/* 1 when every id of chunk c names an entry of the dictionaries loaded. */
static int chunk_ids_ok(const struct scan *s, const struct store_sc_chunk *c)
{
	const struct store_sc_dict *d = s->dict;
	for (size_t i = 0; i < c->n; i++) {
		uint32_t r = store_sc_u32(c->repo, i), f = store_sc_u32(c->file, i), p = store_sc_u32(c->peer, i);
		if (r >= d->nrepo || !d->has_repo[r] || (d->has_file && (f >= d->nfile || !d->has_file[f])) ||
		    (d->has_peer && (p >= d->npeer || !d->has_peer[p] || d->peer[p].len < 1)))
			return 0;
	}
	return 1;
}

/* Adds the transfers of chunk c (of served when serve) that the query covers. */
static int add_chunk(struct scan *s, const struct store_sc_chunk *c, int serve, const unsigned char *match)
{
	const struct store_sc_dict *d = s->dict;
	const struct store_stats_query *q = s->q;
	const uint32_t *fmap = s->idmap[STORE_BY_FILE];
	struct xfer x;

	memset(&x, 0, sizeof(x));
	x.serve = serve;
	x.path = x.peer = "";
	for (size_t i = 0; i < c->n; i++) {
		int64_t t = (int64_t)store_sc_u64(c->t, i);
		uint32_t r = store_sc_u32(c->repo, i);
		unsigned f = c->flags[i];

		/* files are many and come in no order: fetch the sums of a
		 * row ahead while this one is added */
		if (fmap && i + 8 < c->n) {
			uint32_t g = fmap[store_sc_u32(c->file, i + 8)];
			if (g != NONE)
				__builtin_prefetch(&s->m[STORE_BY_FILE].h[g], 1);
		}

		if ((q->since != INT64_MIN && t < q->since) || (q->until != INT64_MAX && t >= q->until) ||
		    (match && !match[r]))
			continue;
		x.started_at = t;
		x.bytes = store_sc_u64(c->bytes, i);
		x.seconds = store_sc_f64(c->seconds, i);
		x.retries = store_sc_u32(c->retries, i);
		x.failed = !!(f & STORE_SC_FAILED);
		x.hit = !!(f & STORE_SC_HIT);
		x.miss = !!(f & STORE_SC_MISS);
		x.has_repo = !!(f & STORE_SC_REPO);
		x.rid = r;
		x.fid = d->has_file ? store_sc_u32(c->file, i) : 0;
		x.pid = d->has_peer ? store_sc_u32(c->peer, i) : 0;
		if (serve) {
			if (q->legacy && served_legacy_add(s, &x, !!(f & STORE_SC_FILE), x.failed))
				return -1;
			if (!(f & STORE_SC_FILE) || !(f & STORE_SC_GET))
				continue;
		}
		if (scan_add(s, &x))
			return -1;
	}
	return 0;
}

/* Adds the transfers of one table from its chunks, and from the table the
 * ids no valid chunk holds: those after the last chunk, and any whose chunk
 * is malformed or names ids the dictionaries lack (then the table is right). */
static enum hm_err scan_cached(struct hm_ctx *ctx, sqlite3 *db, struct scan *s, int serve, const char *name,
			       const char *type, const unsigned char *match)
{
	sqlite3_stmt *q = NULL;
	enum hm_err err = HM_OK;
	int64_t done = INT64_MIN; /* ids up to this one are read (chunks start at id 0: ids <= 0 come
				   * from the table, before the first chunk) */
	int rc;

	if (sqlite3_prepare_v2(db, "SELECT first_id, last_id, min_t, max_t, data FROM stats_chunks WHERE tbl = ?1"
			       " ORDER BY last_id", -1, &q, NULL) != SQLITE_OK)
		return hm_fail(ctx, HM_ERR_DB, "cannot read statistics: %s", sqlite3_errmsg(db));
	sqlite3_bind_int(q, 1, serve);
	while (!err && (rc = sqlite3_step(q)) == SQLITE_ROW) {
		int64_t first = sqlite3_column_int64(q, 0), last = sqlite3_column_int64(q, 1);
		struct store_sc_chunk c;
		const void *blob;

		if (last <= done)
			continue;
		if (first < done) { /* overlaps what is read: not ours to trust */
			err = scan_table(ctx, db, s, serve, name, type, (struct idrange){done, last});
			done = last;
			continue;
		}
		if (first > done && (err = scan_table(ctx, db, s, serve, name, type, (struct idrange){done, first})))
			break;
		done = last;
		/* a chunk with no data holds values only the table can say */
		if (sqlite3_column_type(q, 4) == SQLITE_NULL) {
			err = scan_table(ctx, db, s, serve, name, type, (struct idrange){first, last});
			continue;
		}
		if ((s->q->since != INT64_MIN && sqlite3_column_int64(q, 3) < s->q->since) ||
		    (s->q->until != INT64_MAX && sqlite3_column_int64(q, 2) >= s->q->until))
			continue;
		blob = sqlite3_column_blob(q, 4);
		if (store_sc_decode(blob, (size_t)sqlite3_column_bytes(q, 4), &c) || !chunk_ids_ok(s, &c)) {
			err = scan_table(ctx, db, s, serve, name, type, (struct idrange){first, last});
			continue;
		}
		if (add_chunk(s, &c, serve, match))
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory reading statistics");
		else if (hm_cancelled(ctx))
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
	}
	if (!err && rc != SQLITE_DONE)
		err = hm_fail(ctx, rc == SQLITE_NOMEM ? HM_ERR_NOMEM : HM_ERR_DB, "cannot read statistics: %s",
			      sqlite3_errmsg(db));
	sqlite3_finalize(q);
	if (!err)
		err = scan_table(ctx, db, s, serve, name, type, (struct idrange){done, INT64_MAX});
	return err;
}

/* At least the rows of both tables: the sum of their largest ids. */
static enum hm_err max_rows(struct hm_ctx *ctx, sqlite3 *db, int64_t *n)
{
	sqlite3_stmt *q = NULL;
	*n = 0;
	if (sqlite3_prepare_v2(db, "SELECT coalesce((SELECT max(id) FROM downloads), 0)"
			       " + coalesce((SELECT max(id) FROM served), 0)", -1, &q, NULL) != SQLITE_OK ||
	    sqlite3_step(q) != SQLITE_ROW) {
		sqlite3_finalize(q);
		return hm_fail(ctx, HM_ERR_DB, "cannot read statistics: %s", sqlite3_errmsg(db));
	}
	*n = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	if (*n < 0)
		*n = 0;
	return HM_OK;
}

/* Reads both tables through the cache: dictionaries, the repo filter as a
 * set of repo ids, id maps for the breakdowns that key on a dictionary. */
static enum hm_err scan_with_cache(struct hm_ctx *ctx, sqlite3 *db, struct scan *s, const char *name,
				   const char *type)
{
	struct store_sc_dict d;
	unsigned w = s->q->want;
	unsigned char *match = NULL;
	int64_t most = 0;
	enum hm_err err;

	if ((err = store_sc_dict_load(ctx, db, !!(w & (1u << STORE_BY_FILE)), !!(w & (1u << STORE_BY_ENDPOINT)), &d)))
		goto out;
	s->dict = &d;
	if (name) {
		size_t ln = strlen(name), lt = type ? strlen(type) : 0;
		if (!(match = calloc(d.nrepo, 1)))
			goto nomem;
		/* as repo = ?1 AND repo_type = ?2 would: NULL matches nothing */
		for (size_t r = 0; r < d.nrepo; r++)
			match[r] = d.has_repo[r] && !d.rname[r].null && d.rname[r].len == ln &&
				   !memcmp(d.text + d.rname[r].off, name, ln) &&
				   (!type || (!d.rtype[r].null && d.rtype[r].len == lt &&
					      !memcmp(d.text + d.rtype[r].off, type, lt)));
	}
	if (((w & (1u << STORE_BY_REPO)) && !(s->idmap[STORE_BY_REPO] = idmap_new(d.nrepo))) ||
	    ((w & (1u << STORE_BY_FILE)) && !(s->idmap[STORE_BY_FILE] = idmap_new(d.nfile))) ||
	    ((w & (1u << STORE_BY_ENDPOINT)) && !(s->idmap[STORE_BY_ENDPOINT] = idmap_new(d.npeer))) ||
	    (s->q->legacy && (!(s->idpulls = idmap_new(d.nrepo)) || !(s->idserved = idmap_new(d.nrepo)))))
		goto nomem;
	/* as many rates as there can be, at once: no copies as they grow, and
	 * what a narrower query leaves untouched of a large allocation costs
	 * no memory; ids can be sparse, so past 16M rows, and when the
	 * allocation fails, the arrays grow as they fill instead */
	if ((err = max_rows(ctx, db, &most)))
		goto out;
	(void)scan_reserve(s, most < (1 << 24) ? (size_t)most : (size_t)1 << 24);
	if (!(err = scan_cached(ctx, db, s, 0, name, type, match)))
		err = scan_cached(ctx, db, s, 1, name, type, match);
	goto out;
nomem:
	err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory reading statistics");
out:
	s->dict = NULL;
	free(match);
	store_sc_dict_release(&d);
	return err;
}

/* Transfers of the repo filter (both tables), counted on the repo indexes. */
static enum hm_err count_repo(struct hm_ctx *ctx, sqlite3 *db, const char *name, const char *type, int64_t *n)
{
	sqlite3_stmt *q = NULL;
	char sql[256];
	const char *t = type ? " AND repo_type = ?2" : "";
	snprintf(sql, sizeof(sql), "SELECT (SELECT count(*) FROM downloads WHERE repo = ?1%s)"
		 " + (SELECT count(*) FROM served WHERE repo = ?1%s)", t, t);
	if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
		return hm_fail(ctx, HM_ERR_DB, "cannot read statistics: %s", sqlite3_errmsg(db));
	sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	if (type)
		sqlite3_bind_text(q, 2, type, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_ROW) {
		sqlite3_finalize(q);
		return hm_fail(ctx, HM_ERR_DB, "cannot read statistics: %s", sqlite3_errmsg(db));
	}
	*n = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	return HM_OK;
}

/* The smallest value x of v[0..n) such that the weights (w, parallel to v)
 * of the values <= x add up to at least target (> 0, at most their sum);
 * reorders both. Quickselect with a three-way partition: expected O(n). */
static double wkth(double *v, double *w, size_t n, double target)
{
	size_t lo = 0, hi = n; /* the answer is in v[lo..hi) */
	while (hi - lo > 1) {
		double a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi - 1], pivot, t, wl = 0, we = 0;
		size_t lt = lo, i = lo, gt = hi;
		/* median of three; a three-way partition copes with many equal values */
		pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
		while (i < gt) {
			if (v[i] < pivot) {
				t = v[i], v[i] = v[lt], v[lt] = t;
				t = w[i], w[i] = w[lt], w[lt] = t;
				wl += w[lt];
				i++, lt++;
			} else if (v[i] > pivot) {
				gt--;
				t = v[i], v[i] = v[gt], v[gt] = t;
				t = w[i], w[i] = w[gt], w[gt] = t;
			} else {
				we += w[i];
				i++;
			}
		}
		if (target <= wl)
			hi = lt;
		else if (target <= wl + we)
			return pivot;
		else
			target -= wl + we, lo = gt;
	}
	return v[lo];
}

/* Median and p95 of the rates v weighted by the bytes w (nearest rank over
 * the bytes): the smallest rate at or below which half (95%) of the bytes
 * moved. Weighted so that many small files, whose rate is mostly latency,
 * do not hide the rate of the large ones (a 15 MiB/s pull of one big file and
 * a hundred small ones is 15 MiB/s, not the small files' KiB/s). */
static void percentiles(double *v, double *w, size_t n, struct store_agg *a)
{
	double total = 0;
	a->median_rate = a->p95_rate = 0;
	for (size_t i = 0; i < n; i++)
		total += w[i];
	if (!n || !(total > 0))
		return;
	a->p95_rate = wkth(v, w, n, 0.95 * total);
	a->median_rate = wkth(v, w, n, 0.5 * total);
}

static int cmp_key(const struct grp *a, const struct grp *b, enum store_by by)
{
	size_t n = a->klen < b->klen ? a->klen : b->klen;
	int c;
	if (by == STORE_BY_DAY) {
		int64_t x, y;
		memcpy(&x, a->k, sizeof(x));
		memcpy(&y, b->k, sizeof(y));
		return (x > y) - (x < y);
	}
	c = memcmp(a->k, b->k, n);
	return c ? c : (a->klen > b->klen) - (a->klen < b->klen);
}

/* Ordering of the rows: 1 when a comes before b. */
static int before(const struct grp *a, const struct grp *b, enum store_by by, int by_key)
{
	if (!by_key && a->a.bytes != b->a.bytes)
		return a->a.bytes > b->a.bytes;
	return cmp_key(a, b, by) < 0;
}

struct sort_ctx {
	struct grp *g;
	enum store_by by;
	int by_key;
};

static void sift_down(uint32_t *h, size_t n, size_t i, const struct sort_ctx *c)
{
	/* a heap whose root is the row that comes last */
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < n && before(&c->g[h[m]], &c->g[h[l]], c->by, c->by_key))
			m = l;
		if (r < n && before(&c->g[h[m]], &c->g[h[r]], c->by, c->by_key))
			m = r;
		if (m == i)
			return;
		uint32_t t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

/* Chooses the first top rows (all when top is 0) of m, in order, into idx; returns how many. */
static size_t choose(const struct gmap *m, enum store_by by, int by_key, size_t top, uint32_t *idx)
{
	struct sort_ctx c = {m->g, by, by_key};
	size_t k = top && top < m->n ? top : m->n, n = 0;
	/* a bounded heap: O(groups * log top) however many groups there are */
	for (size_t i = 0; i < m->n; i++) {
		if (n < k) {
			idx[n++] = (uint32_t)i;
			if (n == k)
				for (size_t j = k / 2 + 1; j-- > 0;)
					sift_down(idx, n, j, &c);
		} else if (k && before(&m->g[i], &m->g[idx[0]], by, by_key)) {
			idx[0] = (uint32_t)i;
			sift_down(idx, n, 0, &c);
		}
	}
	/* heap sort: pop the last row to the end */
	for (size_t end = n; end > 1; end--) {
		uint32_t t = idx[0];
		idx[0] = idx[end - 1];
		idx[end - 1] = t;
		sift_down(idx, end - 1, 0, &c);
	}
	return n;
}

static void day_text(int64_t day, char *buf, size_t len)
{
	time_t t = (time_t)(day * 86400);
	struct tm tm;
	if (gmtime_r(&t, &tm))
		strftime(buf, len, "%Y-%m-%d", &tm);
	else
		snprintf(buf, len, "day %lld", (long long)day);
}

/* Moves group g into the row out (key strings made from the key bytes). */
static int fill_row(struct grp *g, enum store_by by, struct store_agg *out)
{
	*out = g->a;
	out->key = out->path = NULL;
	out->source = NULL;
	if (by == STORE_BY_DAY) {
		char buf[32];
		memcpy(&out->day, g->k, sizeof(out->day));
		day_text(out->day, buf, sizeof(buf));
		out->day *= 86400;
		return (out->key = util_strdup(buf)) ? 0 : -1;
	}
	if (by == STORE_BY_ENDPOINT) {
		out->source = g->k[0] == 's' ? "serve" : "pull";
		return (out->key = util_strndup(g->k + 1, g->klen - 1)) ? 0 : -1;
	}
	if (by == STORE_BY_FILE) {
		size_t n = strlen(g->k); /* up to the NUL between repo and path */
		if (!(out->key = util_strndup(g->k, n)))
			return -1;
		return (out->path = util_strndup(g->k + n + 1, g->klen - n - 1)) ? 0 : -1;
	}
	return (out->key = util_strndup(g->k, g->klen)) ? 0 : -1;
}

/* The order of the rated transfers by start (ties in scan order): an LSD
 * radix sort of started_at, 16 bits a pass. NULL when out of memory. */
static uint32_t *start_order(const struct scan *s)
{
	size_t n = s->nrates;
	uint32_t *a = malloc((n ? n : 1) * sizeof(*a)), *b = malloc((n ? n : 1) * sizeof(*b)), *t;
	size_t *cnt = malloc(((size_t)1 << 16) * sizeof(*cnt));
	if (!a || !b || !cnt) {
		free(a);
		free(b);
		free(cnt);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		a[i] = (uint32_t)i;
	for (int shift = 0; shift < 64; shift += 16) {
		size_t sum = 0;
		memset(cnt, 0, ((size_t)1 << 16) * sizeof(*cnt));
		/* the sign bit flipped: negative times sort first */
		for (size_t i = 0; i < n; i++)
			cnt[(((uint64_t)s->t0[a[i]] ^ ((uint64_t)1 << 63)) >> shift) & 0xffff]++;
		for (size_t d = 0; d < ((size_t)1 << 16); d++) {
			size_t c = cnt[d];
			cnt[d] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			b[cnt[(((uint64_t)s->t0[a[i]] ^ ((uint64_t)1 << 63)) >> shift) & 0xffff]++] = a[i];
		t = a, a = b, b = t;
	}
	free(b);
	free(cnt);
	return a;
}

/* A union of intervals fed in order of their starts. */
struct wall {
	double acc, run_s, run_e;
	int open;
};

static void wall_add(struct wall *w, double a, double b)
{
	if (w->open && a <= w->run_e) {
		if (b > w->run_e)
			w->run_e = b;
		return;
	}
	if (w->open)
		w->acc += w->run_e - w->run_s;
	w->run_s = a, w->run_e = b, w->open = 1;
}

static double wall_total(const struct wall *w)
{
	return w->acc + (w->open ? w->run_e - w->run_s : 0);
}

/* Seconds as wall time: the time during which at least one transfer of the
 * row that moved bytes ran, so that bytes over seconds is the rate a user
 * saw (eight parallel connections for ten seconds are ten seconds, not
 * eighty). ord: the transfers by start (start_order); slot maps a group
 * to its row of out (NONE: not shown); by < 0: the total. */
static int wall_times(const struct scan *s, const uint32_t *ord, int by, const uint32_t *slot, size_t k,
		      struct store_agg *out)
{
	struct wall *w = calloc(k ? k : 1, sizeof(*w));
	if (!w)
		return -1;
	for (size_t j = 0; j < s->nrates; j++) {
		uint32_t i = ord[j], sl = by < 0 ? 0 : slot[s->gid[by][i]];
		if (sl != NONE)
			wall_add(&w[sl], (double)s->t0[i], (double)s->t0[i] + s->dur[i]);
	}
	for (size_t i = 0; i < k; i++)
		out[i].seconds = wall_total(&w[i]);
	free(w);
	return 0;
}

static int finish_breakdown(struct scan *s, const uint32_t *ord, enum store_by by, struct store_report *r)
{
	struct gmap *m = &s->m[by];
	uint32_t *idx = NULL, *slot = NULL;
	size_t *off = NULL, k, total = 0;
	double *tmp = NULL, *tmpw = NULL;
	int ret = -1;

	gmap_settle(m);
	r->nkeys[by] = m->n;
	if (!(idx = malloc((m->n ? m->n : 1) * sizeof(*idx))) || !(slot = idmap_new(m->n)))
		goto out;
	k = choose(m, by, s->q->by_key, s->q->top, idx);
	if (!(r->by[by] = calloc(k ? k : 1, sizeof(*r->by[by]))) || !(off = calloc(k + 1, sizeof(*off))))
		goto out;
	/* slot[group]: its index among the chosen rows, or NONE */
	for (size_t i = 0; i < k; i++) {
		slot[idx[i]] = (uint32_t)i;
		off[i] = total;
		total += m->g[idx[i]].a.nrates;
	}
	off[k] = total;
	/* gather the rates of the chosen rows, each row's together */
	if (!(tmp = malloc((total ? total : 1) * sizeof(*tmp))) || !(tmpw = malloc((total ? total : 1) * sizeof(*tmpw))))
		goto out;
	{
		size_t *pos = calloc(k + 1, sizeof(*pos));
		if (!pos)
			goto out;
		memcpy(pos, off, (k + 1) * sizeof(*pos));
		for (size_t i = 0; i < s->nrates; i++) {
			uint32_t sl = slot[s->gid[by][i]];
			if (sl != NONE) {
				tmpw[pos[sl]] = s->wts[i];
				tmp[pos[sl]++] = s->rates[i];
			}
		}
		free(pos);
	}
	for (size_t i = 0; i < k; i++) {
		struct store_agg *row = &r->by[by][i];
		if (fill_row(&m->g[idx[i]], by, row))
			goto out;
		r->nby[by] = i + 1;
		percentiles(tmp + off[i], tmpw + off[i], off[i + 1] - off[i], row);
	}
	if (wall_times(s, ord, (int)by, slot, k, r->by[by]))
		goto out;
	ret = 0;
out:
	free(idx);
	free(slot);
	free(off);
	free(tmp);
	free(tmpw);
	return ret;
}

static int cmp_grp_key(const void *a, const void *b)
{
	return cmp_key(a, b, STORE_BY_REPO);
}

/* Orders a map's groups by key for the per-repo rows; after it g[i] is no
 * longer the group of key i, so the map takes no more look-ups. */
static void sort_groups_by_key(struct gmap *m)
{
	if (m->n)
		qsort(m->g, m->n, sizeof(*m->g), cmp_grp_key);
	m->keys.last = 0;
}

static int finish_pulls(struct scan *s, struct store_report *r)
{
	struct gmap *m = &s->pulls;
	struct store_stats_row *v = calloc(m->n + 1, sizeof(*v));
	struct store_agg tot;
	if (!v)
		return -1;
	gmap_settle(m);
	sort_groups_by_key(m);
	sums_to_agg(&s->pulls_total, &tot);
	r->pulls = v;
	for (size_t i = 0; i <= m->n; i++) {
		const struct store_agg *a = i < m->n ? &m->g[i].a : &tot;
		if (i < m->n && !(v[i].key = util_strndup(m->g[i].k, m->g[i].klen)))
			return -1;
		r->npulls = i + 1;
		v[i].files = a->count - a->failures;
		v[i].bytes = a->bytes;
		v[i].failures = a->failures;
		v[i].retries = a->retries;
		v[i].seconds = a->seconds;
	}
	return 0;
}

static int finish_served(struct scan *s, struct store_report *r)
{
	struct gmap *m = &s->served;
	struct store_served_row *v = calloc(m->n + 1, sizeof(*v));
	struct store_agg tot;
	if (!v)
		return -1;
	gmap_settle(m);
	sort_groups_by_key(m);
	sums_to_agg(&s->served_total, &tot);
	r->served = v;
	for (size_t i = 0; i <= m->n; i++) {
		const struct store_agg *a = i < m->n ? &m->g[i].a : &tot;
		if (i < m->n && !(v[i].key = util_strndup(m->g[i].k, m->g[i].klen)))
			return -1;
		r->nserved = i + 1;
		v[i].requests = a->count;
		v[i].files = a->nrates;
		v[i].bytes = a->bytes;
		v[i].hits = a->hits;
		v[i].misses = a->misses;
		v[i].errors = a->failures;
		v[i].seconds = a->seconds;
	}
	return 0;
}

/* A read-only connection of its own for the report's scan: without the
 * store connection's mutex (taken on every column of every row, a tenth of
 * the time) and reading through a memory map (no copy of every page); one
 * read transaction, so both tables come from the same snapshot. */
static enum hm_err open_reader(struct hm_ctx *ctx, struct store *st, sqlite3 **db)
{
	/* the store's own name for index.db: an immutable URI when read-only */
	const char *path = st->db_name;
	if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | st->db_flags, NULL) != SQLITE_OK ||
	    sqlite3_busy_timeout(*db, 30000) != SQLITE_OK ||
	    sqlite3_exec(*db, "PRAGMA mmap_size = 1073741824; BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		enum hm_err err = hm_fail(ctx, HM_ERR_DB, "cannot read '%s': %s", path,
					  *db ? sqlite3_errmsg(*db) : "out of memory");
		sqlite3_close(*db);
		*db = NULL;
		return err;
	}
	return HM_OK;
}

enum hm_err store_report(struct hm_ctx *ctx, struct store *st, const struct store_stats_query *q,
			 struct store_report *out)
{
	struct scan s;
	enum hm_err err;
	char *type = NULL;
	const char *name = NULL;
	sqlite3 *db = NULL;
	int64_t nrepo = 0;
	int cached;
	uint32_t *ord = NULL;

	memset(out, 0, sizeof(*out));
	memset(&s, 0, sizeof(s));
	s.q = q;
	s.day_g = -1;
	if ((err = store_flush(ctx, st)))
		return err;
	if ((err = store_stats_filter(ctx, q->repo, &type, &name)))
		return err;
	/* a repo with few transfers is quicker to read through the repo indexes */
	if (name && q->scan == STORE_SCAN_AUTO && (err = count_repo(ctx, st->db, name, type, &nrepo)))
		goto out;
	cached = q->scan == STORE_SCAN_CACHE || (q->scan == STORE_SCAN_AUTO && (!name || nrepo >= STATS_FEW));
	/* pack what no chunk holds yet (after a migration or a bulk insert);
	 * without it the report is as right, and slower */
	if (cached && !st->readonly && (err = store_stats_pack(ctx, st, NULL))) {
		if (err == HM_ERR_CANCELLED)
			goto out;
		ctx->errmsg[0] = '\0';
		err = HM_OK;
	}
	if ((err = open_reader(ctx, st, &db)))
		goto out;
	if (cached) {
		err = scan_with_cache(ctx, db, &s, name, type);
	} else {
		err = scan_table(ctx, db, &s, 0, name, type, ALL_IDS);
		if (!err)
			err = scan_table(ctx, db, &s, 1, name, type, ALL_IDS);
	}
	sqlite3_close(db);
	if (err)
		goto out;
	if (!(ord = start_order(&s)))
		goto nomem;
	for (int b = 0; b < STORE_BY_N; b++)
		if ((q->want & (1u << b)) && finish_breakdown(&s, ord, (enum store_by)b, out))
			goto nomem;
	if (q->legacy && (finish_pulls(&s, out) || finish_served(&s, out)))
		goto nomem;
	sums_to_agg(&s.total, &out->total);
	if (wall_times(&s, ord, -1, NULL, 1, &out->total))
		goto nomem;
	percentiles(s.rates, s.wts, s.nrates, &out->total);
	goto out;
nomem:
	err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory reading statistics");
out:
	for (int b = 0; b < STORE_BY_N; b++) {
		gmap_release(&s.m[b]);
		free(s.gid[b]);
		free(s.idmap[b]);
	}
	free(s.idpulls);
	free(s.idserved);
	gmap_release(&s.pulls);
	gmap_release(&s.served);
	free(s.rates);
	free(s.wts);
	free(s.t0);
	free(s.dur);
	free(ord);
	free(s.kbuf);
	free(type);
	return err;
}

void store_report_release(struct store_report *r)
{
	if (!r)
		return;
	for (int b = 0; b < STORE_BY_N; b++) {
		for (size_t i = 0; i < r->nby[b]; i++) {
			free(r->by[b][i].key);
			free(r->by[b][i].path);
		}
		free(r->by[b]);
	}
	store_stats_free(r->pulls, r->npulls);
	store_served_stats_free(r->served, r->nserved);
	memset(r, 0, sizeof(*r));
}

/* ---- du ---- */

/* Adds the sizes of the regular files under dir (depth levels deep) to *bytes and *n. */
static void sum_files(const char *dir, int depth, const char *suffix, uint64_t *bytes, uint64_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[PATH_MAX];
	struct stat sb;

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int)sizeof(path) ||
		    lstat(path, &sb) < 0)
			continue;
		if (S_ISDIR(sb.st_mode) && depth > 0) {
			sum_files(path, depth - 1, suffix, bytes, n);
		} else if (S_ISREG(sb.st_mode)) {
			size_t l = strlen(e->d_name), ls = suffix ? strlen(suffix) : 0;
			if (suffix && (l < ls || strcmp(e->d_name + l - ls, suffix)))
				continue;
			*bytes += (uint64_t)sb.st_size;
			(*n)++;
		}
	}
	closedir(d);
}

static int cmp_du_unique(const void *a, const void *b)
{
	const struct store_du_repo *x = a, *y = b;
	if (x->unique != y->unique)
		return x->unique < y->unique ? 1 : -1;
	return strcmp(x->key, y->key);
}

static int cmp_du_logical(const void *a, const void *b)
{
	const struct store_du_repo *x = a, *y = b;
	if (x->logical != y->logical)
		return x->logical < y->logical ? 1 : -1;
	return strcmp(x->key, y->key);
}

static void du_repos_free(struct store_du_repo *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].key);
	free(v);
}

/* A copy of the first n rows of v (keys duplicated). */
static struct store_du_repo *du_head(const struct store_du_repo *v, size_t n)
{
	struct store_du_repo *c = calloc(n ? n : 1, sizeof(*c));
	if (!c)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		c[i] = v[i];
		if (!(c[i].key = util_strdup(v[i].key))) {
			du_repos_free(c, i);
			return NULL;
		}
	}
	return c;
}

enum hm_err store_du(struct hm_ctx *ctx, struct store *st, size_t top, struct store_du *out)
{
	static const char *const sql[2] = {
		"SELECT coalesce(sum(f.size), 0), (SELECT coalesce(sum(size), 0) FROM blobs WHERE sha256 IN"
		" (SELECT sha256 FROM files)) FROM files f",
		/* per repo: logical bytes, bytes of its distinct blobs, revisions */
		"SELECT r.type || ':' || r.name,"
		" (SELECT coalesce(sum(f.size), 0) FROM revisions v JOIN files f ON f.revision_id = v.id"
		"  WHERE v.repo_id = r.id),"
		" (SELECT coalesce(sum(size), 0) FROM (SELECT DISTINCT f.sha256, f.size FROM revisions v"
		"  JOIN files f ON f.revision_id = v.id WHERE v.repo_id = r.id)),"
		" (SELECT count(*) FROM revisions v WHERE v.repo_id = r.id)"
		" FROM repos r",
	};
	enum hm_err err;
	sqlite3_stmt *q = NULL;
	struct store_du_repo *v = NULL;
	size_t len = 0, cap = 0, k;
	char path[PATH_MAX];
	int rc;

	memset(out, 0, sizeof(*out));
	if ((err = store_flush(ctx, st)))
		return err;
	snprintf(path, sizeof(path), "%s/blobs", st->dir);
	sum_files(path, 2, NULL, &out->disk, &out->nblobs);
	snprintf(path, sizeof(path), "%s/tmp", st->dir);
	sum_files(path, 0, ".part", &out->partial, &out->npartial);
	out->remote = st->remote != NULL;
	if ((err = store_exec(ctx, st, "BEGIN")))
		return err;
	if ((err = store_prepare(ctx, st, sql[0], &q)))
		goto out;
	if (sqlite3_step(q) != SQLITE_ROW) {
		err = store_db_fail(ctx, st, "read store usage");
		goto out;
	}
	out->logical = (uint64_t)sqlite3_column_int64(q, 0);
	out->unique = (uint64_t)sqlite3_column_int64(q, 1);
	out->saved = out->logical > out->unique ? out->logical - out->unique : 0;
	sqlite3_finalize(q);
	if ((err = store_prepare(ctx, st, sql[1], &q)))
		goto out;
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (len == cap) {
			size_t nc = cap ? cap * 2 : 16;
			void *p = realloc(v, nc * sizeof(*v));
			if (!p)
				goto nomem;
			v = p;
			cap = nc;
		}
		memset(&v[len], 0, sizeof(v[len]));
		if (!(v[len].key = util_strdup(col_text(q, 0))))
			goto nomem;
		v[len].logical = (uint64_t)sqlite3_column_int64(q, 1);
		v[len].unique = (uint64_t)sqlite3_column_int64(q, 2);
		v[len].nrevisions = (size_t)sqlite3_column_int64(q, 3);
		len++;
	}
	if (rc != SQLITE_DONE) {
		err = store_db_fail(ctx, st, "read store usage");
		goto out;
	}
	out->nrepos = len;
	k = top && top < len ? top : len;
	if (len)
		qsort(v, len, sizeof(*v), cmp_du_unique);
	if (!(out->by_unique = du_head(v, k)))
		goto nomem;
	out->nby_unique = k;
	if (len)
		qsort(v, len, sizeof(*v), cmp_du_logical);
	if (!(out->by_logical = du_head(v, k)))
		goto nomem;
	out->nby_logical = k;
	goto out;
nomem:
	err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory reading store usage");
out:
	sqlite3_finalize(q);
	store_rollback(st);
	du_repos_free(v, len);
	return err;
}

void store_du_release(struct store_du *d)
{
	if (!d)
		return;
	du_repos_free(d->by_unique, d->nby_unique);
	du_repos_free(d->by_logical, d->nby_logical);
	memset(d, 0, sizeof(*d));
}
