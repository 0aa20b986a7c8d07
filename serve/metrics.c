/* metrics.c - what the server did: Prometheus counters and a latency
 * histogram in memory, and every request queued for the `served` table,
 * written in batches by a background thread so no request waits on SQLite. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "serve-int.h"
#include "../store/stats.h"

#define FLUSH_EVERY_S 1.0
#define QUEUE_MAX 100000 /* beyond this, rows are dropped (and counted) rather than eat memory */
#define STORE_SIZE_TTL_S 10.0 /* the store's size is a walk of blobs/: at most this often */

static const double buckets[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

struct row {
	struct store_served r;
	char *strs[7];
};

struct srv_metrics {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t th;
	int started, stop;
	/* counters */
	uint64_t req_file, req_api, req_other;
	uint64_t status_2xx, status_3xx, status_4xx, status_5xx;
	uint64_t bytes_sent, hits, misses, dropped_rows;
	uint64_t hist[NBUCKETS + 1];
	double hist_sum;
	uint64_t hist_count;
	/* the queue */
	struct row *q;
	size_t nq, capq;
	/* the store's size, read at most every STORE_SIZE_TTL_S (under du_mu) */
	pthread_mutex_t du_mu;
	int have_du;
	uint64_t store_bytes, store_blobs;
	double du_at;
};

static void row_free(struct row *w)
{
	for (int i = 0; i < 7; i++)
		free(w->strs[i]);
}

static void flush_rows(struct srv *s, struct row *rows, size_t n)
{
	struct store_served *v;
	struct store *st;
	struct hm_ctx quiet = {0};
	if (!n)
		return;
	v = calloc(n, sizeof(*v));
	st = srv_store_take(s);
	if (v && st && !store_readonly(st)) {
		for (size_t i = 0; i < n; i++)
			v[i] = rows[i].r;
		if (store_record_served(&quiet, st, v, n) && s->o->access_log)
			fprintf(s->o->access_log, "hubmirror: cannot record served requests: %s\n", quiet.errmsg);
	}
	srv_store_put(s, st);
	free(v);
	for (size_t i = 0; i < n; i++)
		row_free(&rows[i]);
}

static void *flusher(void *arg)
{
	struct srv *s = arg;
	struct srv_metrics *m = s->m;
	double last_trim = 0;
	pthread_mutex_lock(&m->mu);
	for (;;) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)FLUSH_EVERY_S;
		while (!m->stop && !m->nq)
			pthread_cond_timedwait(&m->cv, &m->mu, &ts);
		if (!m->stop)
			pthread_cond_timedwait(&m->cv, &m->mu, &ts); /* gather a batch */
		struct row *rows = m->q;
		size_t n = m->nq;
		m->q = NULL;
		m->nq = m->capq = 0;
		int stop = m->stop;
		pthread_mutex_unlock(&m->mu);
		flush_rows(s, rows, n);
		free(rows);
		/* give memory freed by finished connection threads back to the system */
		if (util_now() - last_trim > 5.0) {
			malloc_trim(0);
			last_trim = util_now();
		}
		pthread_mutex_lock(&m->mu);
		if (stop && !m->nq)
			break;
	}
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

enum hm_err srv_metrics_init(struct srv *s)
{
	struct srv_metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return hm_fail(s->ctx, HM_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&m->mu, NULL);
	pthread_mutex_init(&m->du_mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	s->m = m;
	if (pthread_create(&m->th, NULL, flusher, s))
		return hm_fail(s->ctx, HM_ERR_NOMEM, "cannot start a thread");
	m->started = 1;
	return HM_OK;
}

void srv_metrics_free(struct srv *s)
{
	struct srv_metrics *m = s->m;
	if (!m)
		return;
	if (m->started) {
		pthread_mutex_lock(&m->mu);
		m->stop = 1;
		pthread_cond_signal(&m->cv);
		pthread_mutex_unlock(&m->mu);
		pthread_join(m->th, NULL);
	}
	for (size_t i = 0; i < m->nq; i++)
		row_free(&m->q[i]);
	free(m->q);
	pthread_mutex_destroy(&m->mu);
	pthread_mutex_destroy(&m->du_mu);
	pthread_cond_destroy(&m->cv);
	free(m);
	s->m = NULL;
}

static char *dup_or_null(const char *v)
{
	return v && *v ? util_strdup(v) : NULL;
}

void srv_metrics_record(struct srv *s, const struct srv_req *q, uint64_t bytes, double seconds)
{
	struct srv_metrics *m = s->m;
	struct row w;
	int is_file = !strcmp(q->kind, "file");

	memset(&w, 0, sizeof(w));
	w.strs[0] = util_strdup(q->method);
	w.strs[1] = dup_or_null(q->repo[0] ? q->repo_type : NULL);
	w.strs[2] = dup_or_null(q->repo);
	w.strs[3] = dup_or_null(q->revision);
	w.strs[4] = dup_or_null(q->path);
	w.strs[5] = dup_or_null(q->client);
	w.r = (struct store_served){
		.kind = q->kind, .method = w.strs[0], .repo_type = w.strs[1], .repo = w.strs[2],
		.revision = w.strs[3], .path = w.strs[4], .status = q->status, .bytes = bytes,
		.seconds = seconds, .client = w.strs[5], .cache = q->cache, .started_at = q->started_at,
	};
	pthread_mutex_lock(&m->mu);
	if (is_file)
		m->req_file++;
	else if (!strcmp(q->kind, "api"))
		m->req_api++;
	else
		m->req_other++;
	if (q->status < 300)
		m->status_2xx++;
	else if (q->status < 400)
		m->status_3xx++;
	else if (q->status < 500)
		m->status_4xx++;
	else
		m->status_5xx++;
	m->bytes_sent += bytes;
	if (q->cache && !strcmp(q->cache, "hit"))
		m->hits++;
	else if (q->cache && !strcmp(q->cache, "miss"))
		m->misses++;
	size_t b = 0;
	while (b < NBUCKETS && seconds > buckets[b])
		b++;
	m->hist[b]++;
	m->hist_sum += seconds;
	m->hist_count++;
	if (m->nq == m->capq && m->capq < QUEUE_MAX) {
		size_t nc = m->capq ? m->capq * 2 : 256;
		struct row *nq = realloc(m->q, nc * sizeof(*nq));
		if (nq) {
			m->q = nq;
			m->capq = nc;
		}
	}
	if (m->nq < m->capq) {
		m->q[m->nq++] = w;
		if (m->nq == 1)
			pthread_cond_signal(&m->cv);
	} else {
		m->dropped_rows++;
		row_free(&w);
	}
	pthread_mutex_unlock(&m->mu);
}

/* The store's bytes and files under blobs/ into *bytes, *blobs; 0 when they
 * cannot be read (then the series are left out). */
static int store_size(struct srv *s, uint64_t *bytes, uint64_t *blobs)
{
	struct srv_metrics *m = s->m;
	int have;
	pthread_mutex_lock(&m->du_mu);
	if (!m->have_du || util_now() - m->du_at > STORE_SIZE_TTL_S) {
		struct store *st = srv_store_take(s);
		struct store_du d;
		struct hm_ctx quiet = {0};
		memset(&d, 0, sizeof(d));
		m->have_du = st && !store_du(&quiet, st, 1, &d);
		m->store_bytes = d.disk;
		m->store_blobs = d.nblobs;
		m->du_at = util_now();
		store_du_release(&d);
		srv_store_put(s, st);
	}
	have = m->have_du;
	*bytes = m->store_bytes;
	*blobs = m->store_blobs;
	pthread_mutex_unlock(&m->du_mu);
	return have;
}

enum MHD_Result srv_metrics_send(struct srv_req *q, struct MHD_Connection *c)
{
	struct srv_metrics *m = q->s->m;
	struct util_buf b = UTIL_BUF_INIT;
	struct MHD_Response *resp;
	int bad = 0, inflight, pulling;
	uint64_t cum = 0, up_bytes, up_errors, st_bytes, st_blobs;
	int have_size = store_size(q->s, &st_bytes, &st_blobs);

	srv_up_totals(q->s, &up_bytes, &up_errors, &pulling);
	pthread_mutex_lock(&q->s->log_mu);
	inflight = q->s->inflight_requests;
	pthread_mutex_unlock(&q->s->log_mu);
	pthread_mutex_lock(&m->mu);
	bad |= util_buf_printf(&b,
			       "# HELP hubmirror_requests_total Requests answered, by kind and status class.\n"
			       "# TYPE hubmirror_requests_total counter\n"
			       "hubmirror_requests_total{kind=\"file\"} %llu\n"
			       "hubmirror_requests_total{kind=\"api\"} %llu\n"
			       "hubmirror_requests_total{kind=\"other\"} %llu\n"
			       "# HELP hubmirror_responses_total Responses by status class.\n"
			       "# TYPE hubmirror_responses_total counter\n"
			       "hubmirror_responses_total{code=\"2xx\"} %llu\n"
			       "hubmirror_responses_total{code=\"3xx\"} %llu\n"
			       "hubmirror_responses_total{code=\"4xx\"} %llu\n"
			       "hubmirror_responses_total{code=\"5xx\"} %llu\n"
			       "# HELP hubmirror_served_bytes_total Body bytes sent.\n"
			       "# TYPE hubmirror_served_bytes_total counter\n"
			       "hubmirror_served_bytes_total %llu\n"
			       "# HELP hubmirror_cache_total File requests answered from the store (hit) or pulled through (miss).\n"
			       "# TYPE hubmirror_cache_total counter\n"
			       "hubmirror_cache_total{result=\"hit\"} %llu\n"
			       "hubmirror_cache_total{result=\"miss\"} %llu\n"
			       "# HELP hubmirror_log_dropped_total Request records dropped because the log queue was full.\n"
			       "# TYPE hubmirror_log_dropped_total counter\n"
			       "hubmirror_log_dropped_total %llu\n"
			       "# HELP hubmirror_request_duration_seconds Time to answer a request, body included.\n"
			       "# TYPE hubmirror_request_duration_seconds histogram\n",
			       (unsigned long long)m->req_file, (unsigned long long)m->req_api,
			       (unsigned long long)m->req_other, (unsigned long long)m->status_2xx,
			       (unsigned long long)m->status_3xx, (unsigned long long)m->status_4xx,
			       (unsigned long long)m->status_5xx, (unsigned long long)m->bytes_sent,
			       (unsigned long long)m->hits, (unsigned long long)m->misses,
			       (unsigned long long)m->dropped_rows);
	for (size_t i = 0; i < NBUCKETS; i++) {
		cum += m->hist[i];
		bad |= util_buf_printf(&b, "hubmirror_request_duration_seconds_bucket{le=\"%g\"} %llu\n", buckets[i],
				       (unsigned long long)cum);
	}
	bad |= util_buf_printf(&b,
			       "hubmirror_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
			       "hubmirror_request_duration_seconds_sum %.6f\n"
			       "hubmirror_request_duration_seconds_count %llu\n",
			       (unsigned long long)m->hist_count, m->hist_sum, (unsigned long long)m->hist_count);
	pthread_mutex_unlock(&m->mu);
	bad |= util_buf_printf(&b,
			       "# HELP hubmirror_requests_in_flight Requests being answered now (this one included).\n"
			       "# TYPE hubmirror_requests_in_flight gauge\n"
			       "hubmirror_requests_in_flight %d\n"
			       "# HELP hubmirror_pull_throughs_in_flight Files being pulled through from the upstream now.\n"
			       "# TYPE hubmirror_pull_throughs_in_flight gauge\n"
			       "hubmirror_pull_throughs_in_flight %d\n"
			       "# HELP hubmirror_upstream_bytes_total Bytes pull-throughs downloaded from the upstream.\n"
			       "# TYPE hubmirror_upstream_bytes_total counter\n"
			       "hubmirror_upstream_bytes_total %llu\n"
			       "# HELP hubmirror_upstream_errors_total Pull-throughs that failed.\n"
			       "# TYPE hubmirror_upstream_errors_total counter\n"
			       "hubmirror_upstream_errors_total %llu\n",
			       inflight, pulling, (unsigned long long)up_bytes, (unsigned long long)up_errors);
	if (have_size)
		bad |= util_buf_printf(&b,
				       "# HELP hubmirror_store_bytes Bytes of the store's blobs on disk (read at most every %g s).\n"
				       "# TYPE hubmirror_store_bytes gauge\n"
				       "hubmirror_store_bytes %llu\n"
				       "# HELP hubmirror_store_blobs Blob files in the store.\n"
				       "# TYPE hubmirror_store_blobs gauge\n"
				       "hubmirror_store_blobs %llu\n",
				       STORE_SIZE_TTL_S, (unsigned long long)st_bytes, (unsigned long long)st_blobs);
	if (q->s->p2p) {
		uint64_t up, down;
		int peers;
		size_t torrents;
		srv_p2p_totals(q->s, &up, &down, &peers, &torrents);
		bad |= util_buf_printf(&b,
				       "# HELP hubmirror_p2p_uploaded_bytes_total Payload bytes uploaded to BitTorrent peers.\n"
				       "# TYPE hubmirror_p2p_uploaded_bytes_total counter\n"
				       "hubmirror_p2p_uploaded_bytes_total %llu\n"
				       "# HELP hubmirror_p2p_downloaded_bytes_total Payload bytes downloaded from BitTorrent peers.\n"
				       "# TYPE hubmirror_p2p_downloaded_bytes_total counter\n"
				       "hubmirror_p2p_downloaded_bytes_total %llu\n"
				       "# HELP hubmirror_p2p_peers Peers connected now.\n"
				       "# TYPE hubmirror_p2p_peers gauge\n"
				       "hubmirror_p2p_peers %d\n"
				       "# HELP hubmirror_p2p_torrents Torrents in the session (seeding or downloading).\n"
				       "# TYPE hubmirror_p2p_torrents gauge\n"
				       "hubmirror_p2p_torrents %zu\n",
				       (unsigned long long)up, (unsigned long long)down, peers, torrents);
	}
	if (bad) {
		util_buf_release(&b);
		return MHD_NO;
	}
	q->kind = "other";
	q->status = 200;
	q->planned = b.len;
	resp = MHD_create_response_from_buffer(b.len, b.buf, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		util_buf_release(&b);
		return MHD_NO;
	}
	return srv_queue(q, c, 200, resp, srv_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8"));
}
