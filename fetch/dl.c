/* dl.c - the download scheduler: files in parallel over one libcurl multi
 * handle, large files split into byte ranges that are re-split onto idle
 * connections (so a slow tail does not dominate), resume from persisted
 * ranges, retries with backoff, stall replacement, and hashing on a
 * background thread that follows the contiguous written prefix, so that a
 * file is verified moments after its last byte arrives.
 *
 * Threads: the main thread owns curl and every segment; the hasher thread
 * reads only x->size/fd/frontier/hash fields under g->mu; the syncer thread
 * fdatasyncs part files and writes resume states from snapshots. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fetch-int.h"
#include "resume.h"
#include "../verify/verify.h"

#define MIN_SPLIT (4ull << 20)     /* never split below 2 x this */
#define PIECE_MIN (8ull << 20)     /* files are fetched as pieces in ascending order */
#define PIECE_MAX (64ull << 20)
#define WBUF_SIZE (256u << 10)     /* curl hands over 16 KiB at a time: write in bigger blocks */
#define FLUSH_EVERY 0.1            /* seconds: progress (and a streaming server) must not wait for a full block */
#define SPLIT_ALIGN (64ull << 10)
#define BUFFER_SIZE (512L << 10)
#define HASH_CHUNK (4ull << 20)
#define CHECKPOINT_EVERY 0.1       /* seconds between records of the written ranges (no fsync) */
#define SYNC_EVERY 1.0             /* seconds between fdatasyncs (ranges that survive a reboot) */
#define MAX_REDIRECTS 10
#define MAX_RESTARTS 1             /* whole-file restarts after a digest mismatch */

enum seg_state { SEG_IDLE, SEG_ACTIVE, SEG_WAIT, SEG_DONE };

struct xfer;

struct seg {
	uint64_t start, pos, end;     /* [start,pos) written, [pos,end) to fetch */
	char *wbuf;                   /* received, not yet written: [pos, pos+wlen) */
	size_t wlen;
	double flushed_at;            /* a slow trickle is written out at least every FLUSH_EVERY */
	enum seg_state state;
	struct xfer *x;
	CURL *h;
	struct curl_slist *hdrs;
	struct fetch_resp resp;
	struct fetch_guard guard;
	char errbuf[CURL_ERROR_SIZE];
	long os_errno;                /* CURLINFO_OS_ERRNO of the last transfer */
	char *url;                    /* URL of the current request */
	int redirects;
	int checked;                  /* status of this response looked at */
	int discard;                  /* response body is not file data */
	int cut;                      /* stopped on purpose at end */
	int bad_range;                /* server answered a different range */
	int norange_restart;          /* server ignored Range mid-file */
	int fails;                    /* failures in a row */
	int progressed;               /* data arrived in this attempt */
	double wait_until;
	double t_req;                 /* when the current request started (for the request log) */
};

enum x_state { X_PENDING, X_RUNNING, X_FINISHED };

struct xfer {
	struct fetch_job *job;
	struct dl *g;
	enum x_state state;
	int fd;
	struct seg **segs;            /* sorted by start, tiling [0,size) */
	size_t nsegs, segcap;
	char *eff_url;                /* where the bytes are (after redirects) */
	int ranges_ok, norange;
	int active;                   /* connections in use */
	int collapse;                 /* one 200 response covers the file */
	int failed;                   /* err set, stop the rest */
	int restarts;
	double t_start, retry_begin_at, last_ckpt;
	/* shared with the hasher (g->mu) */
	uint64_t size, frontier, hash_pos;
	struct verify_hasher *hasher;
	int hash_on;                  /* the hasher may work on it */
	int hash_busy, hash_err, complete, hashed;
	/* shared with the syncer (g->mu) */
	int sync_busy;
	/* the syncer's own (or after quiesce): the ranges last fdatasync'd */
	struct fetch_range *synced;
	size_t nsynced;
	double last_sync;
};

struct dl {
	struct hm_ctx *ctx;
	struct fetch_client *c;
	const struct fetch_callbacks *cb;
	CURLM *multi;
	struct xfer *xs;
	size_t nx;
	/* the loops visit only files that are running, and look for new and
	 * unfinished ones from where they stopped: with 100,000 files, a scan
	 * of every file per turn would be quadratic */
	struct xfer **run;            /* running files, in start order (g->mu for changes) */
	size_t nrun;
	size_t next_pending, first_unfinished;
	int active;                   /* connections in use overall */
	/* reused between pieces: no allocation churn per request */
	CURL **easy_pool;
	char **buf_pool;
	size_t neasy, nbuf;           /* both pools hold at most `connections` */
	enum hm_err fatal;
	char fatal_msg[512];
	char boot[FETCH_BOOT_ID_MAX]; /* resume states are tagged with it */
	uint64_t total, done_bytes;
	uint64_t base_bytes;          /* of done_bytes: on disk before this run (resumed, present) */
	size_t nfinished;             /* files finished (done, skipped or failed) */
	/* threads */
	pthread_t hasher, syncer;
	int threads_started;
	pthread_mutex_t mu;
	pthread_cond_t cv_hash, cv_sync, cv_idle;
	int stop;
	/* syncer work: one pending snapshot per file */
	struct sync_item {
		struct xfer *x;
		struct fetch_range *r;
		size_t n;
	} *sync_q;
	size_t sync_n, sync_cap;
};

/* Copies a message, cut to fit. */
static void msg_copy(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);
	memcpy(dst, src, n);
	dst[n] = 0;
}

void fetch_job_release(struct fetch_job *j)
{
	free(j->host);
	free(j->errmsg);
	free(j->merkle_layer);
	j->host = j->errmsg = NULL;
	j->merkle_layer = NULL;
	j->merkle_layer_len = 0;
	j->has_merkle = 0;
}

void fetch_job_fail(struct fetch_job *j, enum hm_err err, const char *msg)
{
	j->err = err;
	free(j->errmsg);
	j->errmsg = msg ? util_strndup(msg, 511) : NULL;
}

static void set_job_err(struct xfer *x, enum hm_err e, const char *msg)
{
	if (x->job->err)
		return;
	fetch_job_fail(x->job, e, msg);
}

/* ---------- hasher thread ---------- */

static void *hasher_main(void *arg)
{
	struct dl *g = arg;
	struct hm_ctx quiet = {0};
	pthread_mutex_lock(&g->mu);
	while (!g->stop) {
		struct xfer *w = NULL;
		for (size_t i = 0; i < g->nrun; i++) {
			struct xfer *x = g->run[i];
			if (x->hash_on && !x->hashed && !x->hash_err &&
			    (x->frontier > x->hash_pos || (x->complete && x->hash_pos == x->size))) {
				w = x;
				break;
			}
		}
		if (!w) {
			pthread_cond_wait(&g->cv_hash, &g->mu);
			continue;
		}
		uint64_t from = w->hash_pos, n = w->frontier - w->hash_pos;
		if (n > HASH_CHUNK)
			n = HASH_CHUNK;
		w->hash_busy = 1;
		pthread_mutex_unlock(&g->mu);
		enum hm_err e = n ? verify_hash_range(&quiet, w->fd, w->hasher, from, n) : HM_OK;
		pthread_mutex_lock(&g->mu);
		w->hash_busy = 0;
		if (e)
			w->hash_err = 1;
		else
			w->hash_pos += n;
		if (w->complete && w->hash_pos == w->size)
			w->hashed = 1;
		pthread_cond_broadcast(&g->cv_idle);
		if (w->hashed || e)
			curl_multi_wakeup(g->multi);
	}
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

/* ---------- syncer thread ---------- */

static void *syncer_main(void *arg)
{
	struct dl *g = arg;
	pthread_mutex_lock(&g->mu);
	while (!g->stop || g->sync_n) {
		if (!g->sync_n) {
			pthread_cond_wait(&g->cv_sync, &g->mu);
			continue;
		}
		struct sync_item it = g->sync_q[--g->sync_n];
		struct xfer *x = it.x;
		it.x->sync_busy = 1;
		pthread_mutex_unlock(&g->mu);
		/* every time: the written ranges (a kill -9 keeps them in the page
		 * cache); every SYNC_EVERY: data first, then the record of it, so
		 * a range is listed as done only once durable */
		double now = util_now();
		int durable = 0;
		if (now - x->last_sync >= SYNC_EVERY && fdatasync(x->fd) == 0) {
			struct fetch_range *c = malloc((it.n ? it.n : 1) * sizeof(*c));
			if (c) {
				memcpy(c, it.r, it.n * sizeof(*c));
				free(x->synced);
				x->synced = c;
				x->nsynced = it.n;
				durable = 1;
			}
			x->last_sync = now;
		}
		(void)fetch_state_save(x->job->state_path, x->size, g->boot, x->synced, x->nsynced, it.r, it.n, durable);
		free(it.r);
		pthread_mutex_lock(&g->mu);
		it.x->sync_busy = 0;
		pthread_cond_broadcast(&g->cv_idle);
	}
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

/* Snapshot of the ranges on disk: [start,pos) of every segment, merged. */
static struct fetch_range *snapshot(struct xfer *x, size_t *n)
{
	struct fetch_range *r = calloc(x->nsegs + 1, sizeof(*r));
	size_t k = 0;
	if (!r)
		return NULL;
	for (size_t i = 0; i < x->nsegs; i++) {
		struct seg *s = x->segs[i];
		if (s->pos <= s->start)
			continue;
		if (k && r[k - 1].end == s->start)
			r[k - 1].end = s->pos;
		else
			r[k++] = (struct fetch_range){s->start, s->pos};
	}
	*n = k;
	return r;
}

/* Queues a checkpoint for the syncer (replacing an older pending one). */
static void checkpoint(struct dl *g, struct xfer *x)
{
	size_t n;
	struct fetch_range *r = snapshot(x, &n);
	if (!r)
		return;
	pthread_mutex_lock(&g->mu);
	for (size_t i = 0; i < g->sync_n; i++)
		if (g->sync_q[i].x == x) {
			free(g->sync_q[i].r);
			g->sync_q[i].r = r;
			g->sync_q[i].n = n;
			r = NULL;
			break;
		}
	if (r) {
		if (g->sync_n == g->sync_cap) {
			size_t nc = g->sync_cap ? g->sync_cap * 2 : 16;
			void *nq = realloc(g->sync_q, nc * sizeof(*g->sync_q));
			if (!nq) {
				free(r);
				pthread_mutex_unlock(&g->mu);
				return;
			}
			g->sync_q = nq;
			g->sync_cap = nc;
		}
		g->sync_q[g->sync_n++] = (struct sync_item){x, r, n};
	}
	pthread_cond_signal(&g->cv_sync);
	pthread_mutex_unlock(&g->mu);
	x->last_ckpt = util_now();
}

/* Waits until neither thread works on x, and drops its queued checkpoint. */
static void quiesce(struct dl *g, struct xfer *x)
{
	pthread_mutex_lock(&g->mu);
	for (size_t i = 0; i < g->sync_n; i++)
		if (g->sync_q[i].x == x) {
			free(g->sync_q[i].r);
			g->sync_q[i] = g->sync_q[--g->sync_n];
			break;
		}
	x->hash_on = 0;
	while (x->hash_busy || x->sync_busy)
		pthread_cond_wait(&g->cv_idle, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

/* Lets the hasher work on x again. */
static void hash_resume(struct dl *g, struct xfer *x)
{
	pthread_mutex_lock(&g->mu);
	x->hash_on = 1;
	pthread_cond_signal(&g->cv_hash);
	pthread_mutex_unlock(&g->mu);
}

/* Recomputes the contiguous written prefix and wakes the hasher. */
static void advance_frontier(struct dl *g, struct xfer *x)
{
	uint64_t f = 0;
	for (size_t i = 0; i < x->nsegs; i++) {
		struct seg *s = x->segs[i];
		if (s->start != f)
			break;
		f = s->pos;
		if (s->pos != s->end)
			break;
	}
	int complete = f == x->size, changed = 0;
	pthread_mutex_lock(&g->mu);
	if (f != x->frontier || complete != x->complete) {
		x->frontier = f;
		x->complete = complete;
		changed = 1;
		pthread_cond_signal(&g->cv_hash);
	}
	pthread_mutex_unlock(&g->mu);
	if (changed && g->cb && g->cb->progress)
		g->cb->progress(g->cb->ud, x->job, f);
}

/* ---------- segments ---------- */

static struct seg *seg_new(struct xfer *x, uint64_t start, uint64_t pos, uint64_t end)
{
	struct seg *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->start = start;
	s->pos = pos;
	s->end = end;
	s->x = x;
	s->state = pos == end ? SEG_DONE : SEG_IDLE;
	return s;
}

static int seg_insert(struct xfer *x, size_t at, struct seg *s)
{
	if (x->nsegs == x->segcap) {
		size_t nc = x->segcap ? x->segcap * 2 : 8;
		struct seg **ns = realloc(x->segs, nc * sizeof(*ns));
		if (!ns)
			return -1;
		x->segs = ns;
		x->segcap = nc;
	}
	memmove(&x->segs[at + 1], &x->segs[at], (x->nsegs - at) * sizeof(*x->segs));
	x->segs[at] = s;
	x->nsegs++;
	return 0;
}

/* Writes the buffered bytes at pos. Returns 0, or -1 (g->fatal set). */
static int seg_flush(struct dl *g, struct seg *s)
{
	struct xfer *x = s->x;
	for (size_t off = 0; off < s->wlen;) {
		ssize_t w = pwrite(x->fd, s->wbuf + off, s->wlen - off, (off_t)(s->pos + off));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (!g->fatal) {
				g->fatal = errno == ENOSPC || errno == EDQUOT ? HM_ERR_NOSPC : HM_ERR_IO;
				snprintf(g->fatal_msg, sizeof(g->fatal_msg), "cannot write '%s': %s",
					 x->job->part_path, strerror(errno));
				/* this job's own error; the others stop without naming its file */
				set_job_err(x, g->fatal, g->fatal_msg);
			}
			s->wlen = 0;
			return -1;
		}
		off += (size_t)w;
	}
	if (!s->wlen)
		return 0;
	s->pos += s->wlen;
	g->done_bytes += s->wlen;
	s->wlen = 0;
	if (x->segs && s->start <= x->frontier && x->frontier <= s->pos)
		advance_frontier(g, x);
	return 0;
}

static void seg_stop(struct dl *g, struct seg *s)
{
	if (s->wlen)
		(void)seg_flush(g, s);
	if (s->wbuf) {
		if (g->nbuf < (size_t)g->c->connections)
			g->buf_pool[g->nbuf++] = s->wbuf;
		else
			free(s->wbuf);
		s->wbuf = NULL;
	}
	if (s->h) {
		curl_multi_remove_handle(g->multi, s->h);
		if (g->neasy < (size_t)g->c->connections)
			g->easy_pool[g->neasy++] = s->h;
		else
			curl_easy_cleanup(s->h);
		s->h = NULL;
		s->x->active--;
		g->active--;
	}
	curl_slist_free_all(s->hdrs);
	s->hdrs = NULL;
}

static void seg_free(struct dl *g, struct seg *s)
{
	seg_stop(g, s);
	free(s->url);
	free(s->wbuf);
	free(s);
}

static void xfer_drop_segs(struct dl *g, struct xfer *x)
{
	for (size_t i = 0; i < x->nsegs; i++)
		seg_free(g, x->segs[i]);
	free(x->segs);
	x->segs = NULL;
	x->nsegs = x->segcap = 0;
}

static size_t write_cb(char *data, size_t size, size_t nm, void *ud)
{
	struct seg *s = ud;
	struct xfer *x = s->x;
	struct dl *g = x->g;
	size_t len = size * nm, n;

	if (!s->checked) {
		long st = s->resp.status;
		s->checked = 1;
		if (st == 206) {
			if (!s->resp.has_content_range || s->resp.cr_start != s->pos ||
			    s->resp.cr_total != x->size) {
				s->bad_range = 1;
				return 0;
			}
			if (!x->eff_url) {
				x->eff_url = util_strdup(s->url);
				x->ranges_ok = 1;
			}
		} else if (st == 200) {
			if (s->resp.content_length >= 0 && (uint64_t)s->resp.content_length != x->size) {
				s->bad_range = 1;
				return 0;
			}
			if (s->pos != 0) {
				/* the server ignores Range: start the file over in one piece */
				s->norange_restart = 1;
				return 0;
			}
			/* the whole body from byte 0: it covers every segment */
			x->norange = 1;
			x->collapse = 1;
			s->end = x->size;
			if (!x->eff_url)
				x->eff_url = util_strdup(s->url);
		} else {
			s->discard = 1;
		}
	}
	if (s->discard)
		return len;
	x->job->bytes_wire += len;
	n = len;
	if (n > s->end - s->pos - s->wlen)
		n = (size_t)(s->end - s->pos - s->wlen);
	if (!s->wbuf && g->nbuf)
		s->wbuf = g->buf_pool[--g->nbuf];
	if (!s->wbuf && !(s->wbuf = malloc(WBUF_SIZE))) {
		if (!g->fatal) {
			g->fatal = HM_ERR_NOMEM;
			snprintf(g->fatal_msg, sizeof(g->fatal_msg), "out of memory");
		}
		return 0;
	}
	for (size_t off = 0; off < n;) {
		size_t k = n - off;
		if (k > WBUF_SIZE - s->wlen)
			k = WBUF_SIZE - s->wlen;
		memcpy(s->wbuf + s->wlen, data + off, k);
		s->wlen += k;
		off += k;
		if ((s->wlen == WBUF_SIZE || s->pos + s->wlen == s->end) && seg_flush(g, s))
			return 0;
	}
	if (s->wlen) {
		double now = util_now();
		if (now - s->flushed_at >= FLUSH_EVERY) {
			s->flushed_at = now;
			if (seg_flush(g, s))
				return 0;
		}
	}
	s->progressed = 1;
	if (n < len) {
		s->cut = 1;
		return n; /* stops this transfer: the rest belongs to another segment */
	}
	return len;
}

static enum hm_err seg_start(struct dl *g, struct seg *s)
{
	struct xfer *x = s->x;
	CURL *h;
	char range[64];
	enum hm_err err;

	if (!s->url) {
		s->url = util_strdup(x->eff_url ? x->eff_url : x->job->url);
		s->redirects = 0;
		if (!s->url)
			return hm_fail(g->ctx, HM_ERR_NOMEM, "out of memory");
	}
	if (g->neasy) {
		h = g->easy_pool[--g->neasy];
		curl_easy_reset(h);
	} else if (!(h = curl_easy_init())) {
		return hm_fail(g->ctx, HM_ERR_NOMEM, "out of memory");
	}
	err = fetch_easy_setup(g->ctx, g->c, h, s->url, &s->hdrs, &s->guard);
	if (err) {
		curl_easy_cleanup(h);
		return err;
	}
	fetch_resp_reset(&s->resp);
	s->checked = s->discard = s->cut = s->bad_range = s->norange_restart = s->progressed = 0;
	s->errbuf[0] = 0;
	s->h = h;
	curl_easy_setopt(h, CURLOPT_PRIVATE, (char *)s);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, fetch_header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &s->resp);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, s->errbuf);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, BUFFER_SIZE);
	/* one TCP connection per range, as with aria2: per-connection caps add up */
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	if (!x->norange) {
		snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)s->pos,
			 (unsigned long long)(s->end - 1));
		curl_easy_setopt(h, CURLOPT_RANGE, range);
	}
	if (curl_multi_add_handle(g->multi, h) != CURLM_OK) {
		s->h = NULL;
		curl_easy_cleanup(h);
		return hm_fail(g->ctx, HM_ERR_NOMEM, "cannot start a transfer");
	}
	s->state = SEG_ACTIVE;
	s->t_req = util_now();
	x->active++;
	g->active++;
	if (x->active > x->job->connections)
		x->job->connections = x->active;
	return HM_OK;
}

/* ---------- files ---------- */

/* Piece size: about eight pieces per connection, so the contiguous prefix
 * that the hasher follows trails the download by a few pieces only, and
 * each request still carries enough bytes to amortize its round trip. */
static uint64_t piece_size(const struct dl *g, const struct xfer *x)
{
	uint64_t p = x->size / ((uint64_t)g->c->connections * 8);
	if (p < PIECE_MIN)
		p = PIECE_MIN;
	if (p > PIECE_MAX)
		p = PIECE_MAX;
	return p - p % (1ull << 20);
}

/* Appends idle segments covering [from, to): pieces, or one when the
 * server ignores ranges. */
static int add_gap(struct dl *g, struct xfer *x, uint64_t from, uint64_t to)
{
	uint64_t piece = x->norange ? to - from : piece_size(g, x);
	while (from < to) {
		uint64_t end = to - from > piece + piece / 2 ? from + piece : to;
		struct seg *s = seg_new(x, from, from, end);
		if (!s || seg_insert(x, x->nsegs, s)) {
			free(s);
			return -1;
		}
		from = end;
	}
	return 0;
}

static enum hm_err xfer_reset(struct dl *g, struct xfer *x)
{
	quiesce(g, x);
	xfer_drop_segs(g, x);
	if (ftruncate(x->fd, 0) != 0)
		return hm_fail(g->ctx, HM_ERR_IO, "cannot truncate '%s': %s", x->job->part_path, strerror(errno));
	unlink(x->job->state_path);
	free(x->synced);
	x->synced = NULL;
	x->nsynced = 0;
	verify_hasher_free(x->hasher);
	x->hasher = verify_hasher_new(x->job->expect_git_oid ? (int64_t)x->size : -1);
	if (x->hasher && x->job->merkle_piece > 0 && verify_hasher_want_merkle(x->hasher, x->job->merkle_piece))
		return hm_fail(g->ctx, HM_ERR_NOMEM, "out of memory");
	if (!x->hasher || add_gap(g, x, 0, x->size))
		return hm_fail(g->ctx, HM_ERR_NOMEM, "out of memory");
	pthread_mutex_lock(&g->mu);
	x->frontier = x->hash_pos = 0;
	x->complete = x->hashed = x->hash_err = 0;
	pthread_mutex_unlock(&g->mu);
	advance_frontier(g, x);
	hash_resume(g, x);
	return HM_OK;
}

/* Opens the part file and builds segments from the resume state. */
static enum hm_err xfer_open(struct dl *g, struct xfer *x)
{
	struct fetch_job *j = x->job;
	struct fetch_range *r = NULL;
	size_t nr = 0;
	uint64_t at = 0;
	struct stat st;

	x->size = j->size;
	x->fd = open(j->part_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (x->fd < 0)
		return hm_fail(g->ctx, errno == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO, "cannot open '%s': %s",
			       j->part_path, strerror(errno));
	x->hasher = verify_hasher_new(j->expect_git_oid ? (int64_t)x->size : -1);
	if (!x->hasher || (j->merkle_piece > 0 && verify_hasher_want_merkle(x->hasher, j->merkle_piece)))
		return hm_fail(g->ctx, HM_ERR_NOMEM, "out of memory");
	if (fstat(x->fd, &st) == 0 && st.st_size > 0 && fetch_state_load(j->state_path, x->size, g->boot, &r, &nr) == 0) {
		/* trust only ranges the part file actually reaches */
		while (nr && r[nr - 1].end > (uint64_t)st.st_size)
			nr--;
	} else {
		nr = 0;
		if (ftruncate(x->fd, 0) != 0)
			return hm_fail(g->ctx, HM_ERR_IO, "cannot truncate '%s': %s", j->part_path, strerror(errno));
	}
	for (size_t i = 0; i <= nr; i++) {
		uint64_t gap_end = i < nr ? r[i].start : x->size;
		if (gap_end > at && add_gap(g, x, at, gap_end))
			goto nomem;
		if (i < nr) {
			struct seg *s = seg_new(x, r[i].start, r[i].end, r[i].end);
			if (!s || seg_insert(x, x->nsegs, s))
				goto nomem;
			j->bytes_resumed += r[i].end - r[i].start;
			at = r[i].end;
		}
	}
	free(r);
	g->done_bytes += j->bytes_resumed;
	g->base_bytes += j->bytes_resumed;
	advance_frontier(g, x);
	hash_resume(g, x);
	return HM_OK;
nomem:
	free(r);
	return hm_fail(g->ctx, HM_ERR_NOMEM, "out of memory");
}

static void xfer_close(struct dl *g, struct xfer *x)
{
	quiesce(g, x);
	xfer_drop_segs(g, x);
	if (x->fd >= 0)
		close(x->fd);
	x->fd = -1;
	verify_hasher_free(x->hasher);
	x->hasher = NULL;
	free(x->synced);
	x->synced = NULL;
	x->nsynced = 0;
	free(x->eff_url);
	x->eff_url = NULL;
	if (x->state != X_FINISHED)
		g->nfinished++;
	x->state = X_FINISHED;
	x->job->seconds = util_now() - x->t_start;
}

/* Ends a job: verified success or failure; calls back. */
static void xfer_finish(struct dl *g, struct xfer *x)
{
	struct fetch_job *j = x->job;
	int ok = !j->err;
	if (x->eff_url) {
		char *o = fetch_origin_of(x->eff_url);
		if (o) {
			free(j->host);
			j->host = o;
		}
	}
	if (!ok) {
		/* keep what is on disk for the next run */
		if (j->err != HM_ERR_CORRUPT && x->fd >= 0 && x->segs) {
			size_t n;
			struct fetch_range *r = snapshot(x, &n);
			quiesce(g, x);
			if (r && fdatasync(x->fd) == 0)
				(void)fetch_state_save(j->state_path, x->size, g->boot, r, n, r, n, 1);
			free(r);
		}
	}
	xfer_close(g, x);
	if (ok)
		unlink(j->state_path);
	struct hm_event ev = {.kind = HM_EV_FILE_DONE, .name = j->name, .total = j->size, .err = j->err,
			      .msg = j->err ? (j->errmsg ? j->errmsg : hm_strerror(j->err)) : NULL};
	hm_emit(g->ctx, &ev);
	if (g->cb && g->cb->done) {
		enum hm_err e = g->cb->done(g->cb->ud, j);
		if (e && !g->fatal) {
			g->fatal = e;
			msg_copy(g->fatal_msg, sizeof(g->fatal_msg), g->ctx->errmsg);
		}
	}
}

/* Called when the hasher reached the end: compare digests. */
static void xfer_verify(struct dl *g, struct xfer *x)
{
	struct fetch_job *j = x->job;
	char sha[65], oid[41] = "";
	verify_hasher_final(x->hasher, sha, oid);
	int bad = (j->expect_sha256 && strcmp(sha, j->expect_sha256)) ||
		  (j->expect_git_oid && strcmp(oid, j->expect_git_oid));
	if (bad && x->restarts < MAX_RESTARTS) {
		x->restarts++;
		j->retries++;
		struct hm_event ev = {.kind = HM_EV_RETRY, .name = j->name, .msg = "checksum mismatch, downloading again"};
		hm_emit(g->ctx, &ev);
		free(x->eff_url);
		x->eff_url = NULL;
		x->norange = x->ranges_ok = 0;
		g->done_bytes -= x->size < g->done_bytes ? x->size : g->done_bytes;
		g->base_bytes -= x->job->bytes_resumed < g->base_bytes ? x->job->bytes_resumed : g->base_bytes;
		x->job->bytes_resumed = 0;
		enum hm_err e = xfer_reset(g, x);
		if (e) {
			set_job_err(x, e, g->ctx->errmsg);
			xfer_finish(g, x);
		}
		return;
	}
	memcpy(j->sha256, sha, sizeof(sha));
	memcpy(j->git_oid, oid, sizeof(oid));
	if (!bad && verify_hasher_merkle(x->hasher)) {
		/* the torrent's tree, from this same pass (no read of the blob later) */
		const unsigned char *layer = NULL;
		size_t ll = 0;
		free(j->merkle_layer);
		j->merkle_layer = NULL;
		j->has_merkle = 0;
		if (!verify_merkle_final(verify_hasher_merkle(x->hasher), j->merkle_root, &layer, &ll) &&
		    (!ll || (j->merkle_layer = malloc(ll)))) {
			if (ll)
				memcpy(j->merkle_layer, layer, ll);
			j->merkle_layer_len = ll;
			j->has_merkle = 1;
		}
	}
	if (bad) {
		char m[512];
		if (j->expect_sha256 && strcmp(sha, j->expect_sha256))
			snprintf(m, sizeof(m), "'%s' failed verification: expected sha256 %s, got %s (corrupt data from the server)",
				 j->name, j->expect_sha256, sha);
		else
			snprintf(m, sizeof(m), "'%s' failed verification: expected git oid %s, got %s (corrupt data from the server)",
				 j->name, j->expect_git_oid, oid);
		set_job_err(x, HM_ERR_CORRUPT, m);
		unlink(j->part_path);
		unlink(j->state_path);
	}
	xfer_finish(g, x);
}

/* A segment gave up: the file fails; stop its other transfers. */
static void xfer_fail(struct dl *g, struct xfer *x, enum hm_err e, const char *msg)
{
	set_job_err(x, e, msg);
	x->failed = 1;
	for (size_t i = 0; i < x->nsegs; i++)
		seg_stop(g, x->segs[i]);
	xfer_finish(g, x);
}

/* ---------- completion of one transfer ---------- */

static void seg_retry(struct dl *g, struct seg *s, const struct fetch_resp *r, enum hm_err e, const char *msg)
{
	struct xfer *x = s->x;
	if (s->progressed)
		s->fails = 0; /* a stall after progress costs no retry */
	s->fails++;
	x->job->retries++;
	if (s->fails > g->c->retries) {
		xfer_fail(g, x, e, msg);
		return;
	}
	s->state = SEG_WAIT;
	double wait = s->progressed && !r ? 0 : fetch_backoff(s->fails, r);
	s->wait_until = util_now() + wait;
	struct hm_event ev = {.kind = HM_EV_RETRY, .name = x->job->name, .msg = msg, .attempt = s->fails,
			      .attempts = g->c->retries, .backoff = wait, .status = r ? r->status : 0};
	hm_emit(g->ctx, &ev);
}

static void seg_done(struct dl *g, struct seg *s, CURLcode rc)
{
	struct xfer *x = s->x;
	struct fetch_resp r = s->resp;
	char msg[512], what[600];
	int was_cut = s->cut;

	if (g->ctx->verbose && s->url)
		fetch_log_http(g->ctx, "GET", s->url, rc == CURLE_OK || was_cut ? r.status : 0, util_now() - s->t_req);
	seg_stop(g, s);
	if (x->state != X_RUNNING || x->failed)
		return;
	if (g->fatal)
		return;
	snprintf(what, sizeof(what), "'%s'", x->job->name);
	if (s->norange_restart) {
		/* the server ignores Range: one connection from byte 0 */
		free(x->eff_url);
		x->eff_url = util_strdup(s->url);
		x->norange = 1;
		enum hm_err e = xfer_reset(g, x);
		if (e)
			xfer_fail(g, x, e, g->ctx->errmsg);
		return;
	}
	if (s->bad_range) {
		snprintf(msg, sizeof(msg), "the server sent the wrong byte range or size for '%s'", x->job->name);
		seg_retry(g, s, NULL, HM_ERR_CORRUPT, msg);
		if (!x->failed && s->state == SEG_WAIT) {
			free(s->url);
			s->url = NULL;
		}
		return;
	}
	if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && was_cut)) {
		if (r.status >= 300 && r.status < 400) {
			struct hm_ctx tmp = {0};
			char *nu = NULL;
			enum hm_err e = r.location[0] ? fetch_follow(&tmp, s->url, r.location, &s->redirects, MAX_REDIRECTS, what, &nu)
						      : hm_fail(&tmp, HM_ERR_HTTP, "a redirect without a Location for %s", what);
			if (e) {
				xfer_fail(g, x, e, tmp.errmsg);
				return;
			}
			free(s->url);
			s->url = nu;
			s->state = SEG_IDLE;
			return;
		}
		if (r.status == 200 || r.status == 206) {
			if (s->pos == s->end) {
				s->state = SEG_DONE;
				s->fails = 0;
				return;
			}
			snprintf(msg, sizeof(msg), "the server closed '%s' early", x->job->name);
			seg_retry(g, s, NULL, HM_ERR_NET, msg);
			return;
		}
		if (r.status == 416) {
			/* the server thinks the file is shorter than the hub said */
			snprintf(msg, sizeof(msg), "the server refused the byte range of '%s' (HTTP 416): its size differs from the hub's listing", x->job->name);
			seg_retry(g, s, NULL, HM_ERR_CORRUPT, msg);
			return;
		}
		struct hm_ctx tmp = {0};
		enum hm_err e = fetch_status_err(&tmp, &r, what, g->c->token != NULL);
		char *o = fetch_origin_of(s->url);
		int foreign = o && strcmp(o, g->c->origin);
		free(o);
		if ((r.status == 401 || r.status == 403) && foreign && x->eff_url) {
			/* a signed CDN URL expired: resolve again */
			free(x->eff_url);
			x->eff_url = NULL;
			free(s->url);
			s->url = NULL;
			seg_retry(g, s, &r, e, tmp.errmsg);
			return;
		}
		if (fetch_status_retryable(r.status)) {
			seg_retry(g, s, &r, e, tmp.errmsg);
			return;
		}
		xfer_fail(g, x, e, tmp.errmsg);
		return;
	}
	if (rc == CURLE_WRITE_ERROR && g->fatal)
		return;
	struct hm_ctx tmp = {0};
	if (s->guard.refused) {
		/* never retried: the hub pointed at an address it must not */
		enum hm_err ge = fetch_guard_err(&tmp, &s->guard, what);
		xfer_fail(g, x, ge, tmp.errmsg);
		return;
	}
	enum hm_err e = fetch_curl_err(&tmp, g->c, rc, s->os_errno, s->url, 0);
	if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST) {
		/* a redirect target may be the dead one: start from the resolve URL next time */
		free(s->url);
		s->url = NULL;
	}
	seg_retry(g, s, NULL, e, tmp.errmsg);
}

/* ---------- scheduling ---------- */

/* Splits the biggest remaining range onto a free connection. */
static int try_split(struct dl *g)
{
	struct seg *best = NULL;
	struct xfer *bx = NULL;
	size_t bi = 0;
	uint64_t best_left = 0;
	for (size_t i = 0; i < g->nrun; i++) {
		struct xfer *x = g->run[i];
		if (x->state != X_RUNNING || !x->ranges_ok || x->norange || !x->eff_url || x->failed)
			continue;
		for (size_t k = 0; k < x->nsegs; k++) {
			struct seg *s = x->segs[k];
			uint64_t left = s->end - s->pos - s->wlen;
			if ((s->state == SEG_ACTIVE || s->state == SEG_WAIT) && left > best_left) {
				best = s;
				bx = x;
				bi = k;
				best_left = left;
			}
		}
	}
	if (!best || best_left < 2 * MIN_SPLIT)
		return 0;
	uint64_t at = best->pos + best->wlen, mid = at + best_left / 2;
	mid -= mid % SPLIT_ALIGN;
	if (mid <= at || mid >= best->end)
		return 0;
	struct seg *ns = seg_new(bx, mid, mid, best->end);
	if (!ns || seg_insert(bx, bi + 1, ns)) {
		free(ns);
		return 0;
	}
	best->end = mid;
	if (seg_start(g, ns)) {
		ns->state = SEG_IDLE;
		return 0;
	}
	return 1;
}

static void schedule(struct dl *g, double now)
{
	/* 1. waiting and idle segments of running files */
	for (size_t i = 0; i < g->nrun && g->active < g->c->connections; i++) {
		struct xfer *x = g->run[i];
		if (x->state != X_RUNNING || x->failed)
			continue;
		for (size_t k = 0; k < x->nsegs && g->active < g->c->connections; k++) {
			struct seg *s = x->segs[k];
			if (s->state == SEG_WAIT && s->wait_until <= now)
				s->state = SEG_IDLE;
			if (s->state != SEG_IDLE)
				continue;
			/* until the real location is known, one request finds it */
			if (!x->eff_url && x->active > 0)
				break;
			if (x->eff_url && !x->ranges_ok && x->active > 0)
				break;
			enum hm_err se = seg_start(g, s);
			if (se) {
				xfer_fail(g, x, se, g->ctx->errmsg);
				break;
			}
		}
	}
	/* 2. new files */
	while (g->next_pending < g->nx && g->xs[g->next_pending].state != X_PENDING)
		g->next_pending++;
	for (size_t i = g->next_pending; i < g->nx && g->active < g->c->connections && !g->fatal; i++) {
		struct xfer *x = &g->xs[i];
		if (x->state != X_PENDING || x->retry_begin_at > now)
			continue;
		int b = g->cb && g->cb->begin ? g->cb->begin(g->cb->ud, x->job) : 0;
		if (b == 2) {
			x->retry_begin_at = now + 0.2;
			continue;
		}
		if (b == 1) {
			x->state = X_FINISHED;
			g->nfinished++;
			g->done_bytes += x->job->size;
			g->base_bytes += x->job->size;
			continue;
		}
		if (b == 3) {
			x->state = X_FINISHED;
			g->nfinished++;
			g->fatal = x->job->err ? x->job->err : HM_ERR_NOMEM;
			msg_copy(g->fatal_msg, sizeof(g->fatal_msg), x->job->errmsg ? x->job->errmsg : hm_strerror(g->fatal));
			continue;
		}
		x->state = X_RUNNING;
		pthread_mutex_lock(&g->mu);
		g->run[g->nrun++] = x;
		pthread_mutex_unlock(&g->mu);
		x->t_start = now;
		x->last_ckpt = now;
		struct hm_event ev = {.kind = HM_EV_FILE_START, .name = x->job->name, .total = x->job->size};
		hm_emit(g->ctx, &ev);
		enum hm_err e = xfer_open(g, x);
		if (e) {
			if (e == HM_ERR_NOSPC || e == HM_ERR_NOMEM) {
				g->fatal = e;
				msg_copy(g->fatal_msg, sizeof(g->fatal_msg), g->ctx->errmsg);
			}
			xfer_fail(g, x, e, g->ctx->errmsg);
			continue;
		}
		for (size_t k = 0; k < x->nsegs && g->active < g->c->connections; k++)
			if (x->segs[k]->state == SEG_IDLE) {
				enum hm_err se = seg_start(g, x->segs[k]);
				if (se)
					xfer_fail(g, x, se, g->ctx->errmsg);
				break; /* one request first, to learn the location */
			}
	}
	/* 3. idle connections help the slowest remaining ranges */
	while (g->active < g->c->connections && try_split(g))
		;
}

/* Drops finished files from the running list (keeping the order). */
static void run_compact(struct dl *g)
{
	size_t k = 0;
	pthread_mutex_lock(&g->mu);
	for (size_t i = 0; i < g->nrun; i++)
		if (g->run[i]->state == X_RUNNING)
			g->run[k++] = g->run[i];
	g->nrun = k;
	pthread_mutex_unlock(&g->mu);
}

static void post_process(struct dl *g, double now)
{
	for (size_t i = 0; i < g->nrun; i++) {
		struct xfer *x = g->run[i];
		if (x->state != X_RUNNING)
			continue;
		if (x->collapse) {
			/* one response carries the whole file: drop the other ranges */
			x->collapse = 0;
			struct seg *keep = NULL;
			for (size_t k = 0; k < x->nsegs; k++)
				if (x->segs[k]->start == 0 && !keep)
					keep = x->segs[k];
				else
					seg_free(g, x->segs[k]);
			x->segs[0] = keep;
			x->nsegs = keep ? 1 : 0;
			advance_frontier(g, x);
		}
		pthread_mutex_lock(&g->mu);
		int hashed = x->hashed, herr = x->hash_err;
		pthread_mutex_unlock(&g->mu);
		if (herr) {
			quiesce(g, x);
			xfer_fail(g, x, HM_ERR_IO, "cannot read back a partial download to hash it");
			continue;
		}
		if (hashed) {
			quiesce(g, x);
			xfer_verify(g, x);
			continue;
		}
		if (now - x->last_ckpt >= CHECKPOINT_EVERY && x->size > 0)
			checkpoint(g, x);
	}
	run_compact(g);
}

static int all_finished(struct dl *g)
{
	while (g->first_unfinished < g->nx && g->xs[g->first_unfinished].state == X_FINISHED)
		g->first_unfinished++;
	return g->first_unfinished == g->nx;
}

/* The downloader's state and threads for n jobs (n > 0). */
static enum hm_err dl_init(struct dl *g, struct hm_ctx *ctx, struct fetch_client *c, struct fetch_job **jobs,
			   size_t n, const struct fetch_callbacks *cb)
{
	memset(g, 0, sizeof(*g));
	g->ctx = ctx;
	g->c = c;
	g->cb = cb;
	g->xs = calloc(n, sizeof(*g->xs));
	g->run = calloc(n, sizeof(*g->run));
	g->multi = curl_multi_init();
	g->easy_pool = calloc((size_t)c->connections, sizeof(*g->easy_pool));
	g->buf_pool = calloc((size_t)c->connections, sizeof(*g->buf_pool));
	if (!g->xs || !g->run || !g->multi || !g->easy_pool || !g->buf_pool)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	g->nx = n;
	fetch_boot_id(g->boot);
	for (size_t i = 0; i < n; i++) {
		g->xs[i].job = jobs[i];
		g->xs[i].g = g;
		g->xs[i].fd = -1;
		jobs[i]->err = HM_OK;
		free(jobs[i]->errmsg);
		jobs[i]->errmsg = NULL;
		g->total += jobs[i]->size;
	}
	curl_multi_setopt(g->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)c->connections);
	curl_multi_setopt(g->multi, CURLMOPT_MAXCONNECTS, (long)c->connections * 2);
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv_hash, NULL);
	pthread_cond_init(&g->cv_sync, NULL);
	pthread_cond_init(&g->cv_idle, NULL);
	if (pthread_create(&g->hasher, NULL, hasher_main, g) == 0) {
		if (pthread_create(&g->syncer, NULL, syncer_main, g) == 0)
			g->threads_started = 2;
		else
			g->threads_started = 1;
	}
	if (g->threads_started != 2)
		return hm_fail(ctx, HM_ERR_NOMEM, "cannot start threads");
	return HM_OK;
}

/* Stops the threads and frees what dl_init and the transfers left. */
static void dl_release(struct dl *g)
{
	if (g->threads_started) {
		pthread_mutex_lock(&g->mu);
		g->stop = 1;
		pthread_cond_broadcast(&g->cv_hash);
		pthread_cond_broadcast(&g->cv_sync);
		pthread_mutex_unlock(&g->mu);
		pthread_join(g->hasher, NULL);
		if (g->threads_started == 2)
			pthread_join(g->syncer, NULL);
	}
	if (g->xs)
		for (size_t i = 0; i < g->nx; i++) {
			xfer_drop_segs(g, &g->xs[i]);
			if (g->xs[i].fd >= 0)
				close(g->xs[i].fd);
			verify_hasher_free(g->xs[i].hasher);
			free(g->xs[i].synced);
			free(g->xs[i].eff_url);
		}
	for (size_t i = 0; i < g->sync_n; i++)
		free(g->sync_q[i].r);
	free(g->sync_q);
	for (size_t i = 0; i < g->neasy; i++)
		curl_easy_cleanup(g->easy_pool[i]);
	for (size_t i = 0; i < g->nbuf; i++)
		free(g->buf_pool[i]);
	free(g->easy_pool);
	free(g->buf_pool);
	if (g->multi)
		curl_multi_cleanup(g->multi);
	if (g->threads_started) {
		pthread_mutex_destroy(&g->mu);
		pthread_cond_destroy(&g->cv_hash);
		pthread_cond_destroy(&g->cv_sync);
		pthread_cond_destroy(&g->cv_idle);
	}
	free(g->xs);
	free(g->run);
}

/* The transfer rate: this run's bytes only (a resumed part or a file
 * already present is no speed), an exponential average over ~3 s. */
struct dl_rate {
	double t0, t;
	uint64_t b;
	double rate;
};

static void emit_progress(struct dl *g, struct dl_rate *r, double now)
{
	uint64_t fresh = g->done_bytes > g->base_bytes ? g->done_bytes - g->base_bytes : 0;
	double dt = now - r->t, elapsed = now - r->t0;
	if (dt >= 1.0 || (!r->rate && elapsed >= 0.5 && fresh)) {
		double inst = (double)(fresh - r->b) / (dt > 0 ? dt : 1);
		if (fresh < r->b) /* a file started over */
			inst = 0;
		r->rate = r->rate ? 0.7 * r->rate + 0.3 * inst : inst;
		r->b = fresh;
		r->t = now;
	}
	struct hm_event ev = {.kind = HM_EV_PROGRESS, .done = g->done_bytes, .total = g->total, .rate = r->rate,
			      .resumed = g->base_bytes, .files_done = (int)g->nfinished,
			      .files_total = (int)g->nx, .active = g->active};
	hm_emit(g->ctx, &ev);
}

/* Hands finished requests to their segments. */
static void reap(struct dl *g)
{
	int nmsg;
	CURLMsg *m;
	while ((m = curl_multi_info_read(g->multi, &nmsg))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		struct seg *s = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
		if (s) {
			s->os_errno = 0;
			curl_easy_getinfo(m->easy_handle, CURLINFO_OS_ERRNO, &s->os_errno);
			seg_done(g, s, m->data.result);
		}
	}
}

/* After the loop: stops what still runs (keeping resume states) and
 * returns the first error, err or a job's. */
static enum hm_err stop_all(struct dl *g, enum hm_err err)
{
	struct hm_ctx *ctx = g->ctx;
	if (g->fatal && !err)
		err = hm_fail(ctx, g->fatal, "%s", g->fatal_msg);
	for (size_t i = 0; i < g->nx; i++) {
		struct xfer *x = &g->xs[i];
		if (x->state == X_RUNNING) {
			char why[512];
			if (g->fatal && !x->job->err)
				snprintf(why, sizeof(why), "stopped before the end: %s", hm_strerror(g->fatal));
			else
				msg_copy(why, sizeof(why), err ? ctx->errmsg : "interrupted");
			xfer_fail(g, x, err ? err : HM_ERR_CANCELLED, why);
		} else if (x->state == X_PENDING) {
			set_job_err(x, err ? err : HM_ERR_CANCELLED, "not started");
			x->state = X_FINISHED;
		}
	}
	if (!err)
		for (size_t i = 0; i < g->nx; i++) {
			struct fetch_job *j = g->xs[i].job;
			if (j->err) {
				err = hm_fail(ctx, j->err, "%s", j->errmsg ? j->errmsg : hm_strerror(j->err));
				break;
			}
		}
	return err;
}

enum hm_err fetch_download(struct hm_ctx *ctx, struct fetch_client *c, struct fetch_job **jobs,
			   size_t n, const struct fetch_callbacks *cb)
{
	struct dl g;
	enum hm_err err;
	double last_ev = 0;
	struct dl_rate rate = {.t0 = util_now()};

	if (!n)
		return HM_OK;
	rate.t = rate.t0;
	if ((err = dl_init(&g, ctx, c, jobs, n, cb)))
		goto out;
	while (!all_finished(&g) && !g.fatal) {
		double now = util_now();
		int still;
		if (hm_cancelled(ctx)) {
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
			break;
		}
		schedule(&g, now);
		curl_multi_perform(g.multi, &still);
		reap(&g);
		post_process(&g, util_now());
		if (now - last_ev >= 0.2) {
			emit_progress(&g, &rate, now);
			last_ev = now;
		}
		if (all_finished(&g) || g.fatal)
			break;
		/* sleep until traffic, a hasher wake-up, or the next timer */
		curl_multi_poll(g.multi, NULL, 0, 100, NULL);
	}
	err = stop_all(&g, err);
out:
	dl_release(&g);
	return err;
}
