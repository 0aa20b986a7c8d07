/* multipart.c - uploads of files: one PUT up to cfg->single_max, multipart
 * above it. A multipart upload (struct s3_mpu) may start while its file is
 * still being written: a part is sent as soon as the bytes before its end are
 * on disk (s3_mpu_avail), up to cfg->parallel parts at once, each on its own
 * connection, each part's MD5 checked against the ETag the server returns. A
 * thread that follows the written prefix computes the whole file's SHA-256,
 * and CompleteMultipartUpload is sent only when it matched. An unfinished
 * upload of the same key (a killed pull) is resumed, reusing the parts whose
 * MD5 matches the file (ListParts).
 *
 * Memory is bounded whatever the file size: parts are read from the file
 * while sending (curl's 1 MiB upload buffer per connection), never held.
 *
 * Threads: the caller's (avail, finish, free), one lead (creates or finds the
 * upload, then hashes), cfg->parallel workers (parts). Everything shared is
 * under m->mu; parts[i] belongs to the worker that took part i. */
#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "s3-int.h"

#define MIB (1024ull * 1024)
#define S3_MIN_PART (5 * MIB)
#define S3_MAX_PARTS 10000
#define READ_CHUNK (1u << 20)

struct mpu_part {
	char etag[128];         /* listed (a resumed upload) or returned by the PUT */
	uint64_t size;
};

struct s3_mpu {
	struct s3_client *c;
	char key[1100];
	int fd;
	uint64_t size, psize;
	int nparts;
	struct mpu_part *parts;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t lead, *workers;
	int nworkers;           /* started */
	int lead_started;

	/* under mu */
	uint64_t avail;         /* [0, avail) of the file is final */
	int ready;              /* the upload id is known, parts listed */
	int next;               /* next part to take */
	int ndone;              /* parts on the server */
	uint64_t hashed;        /* the SHA-256 covers [0, hashed) */
	uint64_t sent;          /* bytes sent in parts this time */
	enum hm_err err;        /* the first failure */
	char errmsg[1024];
	volatile sig_atomic_t halt; /* give up: an error, or s3_mpu_free */

	EVP_MD_CTX *sha;        /* the lead's */
	char id[512];           /* the upload id, written by the lead before ready */
};

void s3_final_hex(EVP_MD_CTX *m, char *out, size_t n)
{
	unsigned char d[32];
	unsigned int l = 0;
	EVP_DigestFinal_ex(m, d, &l);
	util_hex(d, l < n ? l : n, out);
}

static uint64_t part_size_for(const struct s3_client *c, uint64_t size)
{
	uint64_t p = c->cfg.part_size;
	uint64_t need = (size + S3_MAX_PARTS - 1) / S3_MAX_PARTS;
	if (p < need)
		p = (need + MIB - 1) / MIB * MIB;
	return p < S3_MIN_PART ? S3_MIN_PART : p;
}

/* Records the first failure and stops everyone. Called with mu held. */
static void fail_locked(struct s3_mpu *m, enum hm_err err, const char *msg)
{
	if (!m->err) {
		m->err = err;
		snprintf(m->errmsg, sizeof(m->errmsg), "%s", msg && *msg ? msg : hm_strerror(err));
	}
	m->halt = 1;
	pthread_cond_broadcast(&m->cv);
}

static void fail(struct s3_mpu *m, enum hm_err err, const char *msg)
{
	pthread_mutex_lock(&m->mu);
	fail_locked(m, err, msg);
	pthread_mutex_unlock(&m->mu);
}

/* ---- finding or creating the upload ---- */

struct find_upload {
	const char *key;
	char id[512];
	int64_t initiated;
};

static int find_upload_cb(void *ud, const struct s3_upload *u)
{
	struct find_upload *f = ud;
	if (!strcmp(u->key, f->key) && (!f->id[0] || u->initiated >= f->initiated)) {
		snprintf(f->id, sizeof(f->id), "%s", u->upload_id);
		f->initiated = u->initiated;
	}
	return 0;
}

static void unquote(char *s)
{
	size_t n;
	char *e = s;
	while (*e == '"')
		e++;
	memmove(s, e, strlen(e) + 1);
	n = strlen(s);
	while (n && s[n - 1] == '"')
		s[--n] = 0;
}

/* The parts an unfinished upload already has (ListParts, all pages). */
static enum hm_err list_parts(struct hm_ctx *ctx, struct s3_mpu *m, CURL *h)
{
	enum hm_err err = HM_OK;
	struct util_buf q = UTIL_BUF_INIT;
	char marker[32] = "", item[1024];
	struct req r;

	s3_req_init(&r, "GET", m->key);
	for (;;) {
		size_t pos = 0;
		char truncated[16] = "";
		q.len = 0;
		if ((marker[0] && util_buf_printf(&q, "part-number-marker=%s&", marker)) ||
		    util_buf_adds(&q, "uploadId=") || s3_uri_encode(&q, m->id, 0)) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		s3_req_init(&r, "GET", m->key);
		r.query = q.buf;
		if ((err = s3_perform(ctx, m->c, h, &r)))
			goto out;
		while (s3_xml_next(r.body.buf, r.body.len, &pos, "Part", item, sizeof(item))) {
			char num[16] = "", etag[128] = "", size[32] = "";
			size_t n = strlen(item);
			long pn;
			s3_xml_get(item, n, "PartNumber", num, sizeof(num));
			s3_xml_get(item, n, "ETag", etag, sizeof(etag));
			s3_xml_get(item, n, "Size", size, sizeof(size));
			pn = strtol(num, NULL, 10);
			if (pn >= 1 && pn <= m->nparts) {
				unquote(etag);
				snprintf(m->parts[pn - 1].etag, sizeof(m->parts[pn - 1].etag), "%s", etag);
				m->parts[pn - 1].size = strtoull(size, NULL, 10);
			}
		}
		s3_xml_get(r.body.buf, r.body.len, "IsTruncated", truncated, sizeof(truncated));
		if (strcmp(truncated, "true") ||
		    !s3_xml_get(r.body.buf, r.body.len, "NextPartNumberMarker", marker, sizeof(marker)))
			break;
		util_buf_release(&r.body);
	}
out:
	util_buf_release(&r.body);
	util_buf_release(&q);
	return err;
}

/* Resumes the newest unfinished upload of the key (a killed pull) or starts one. */
static enum hm_err setup(struct hm_ctx *ctx, struct s3_mpu *m)
{
	struct find_upload fu = {.key = m->key};
	CURL *h = curl_easy_init();
	enum hm_err err;
	struct req r;

	s3_req_init(&r, "POST", m->key);
	if (!h)
		return hm_fail(ctx, HM_ERR_NOMEM, "cannot create a curl handle");
	if ((err = s3_list_uploads(ctx, m->c, m->key, find_upload_cb, &fu)))
		goto out;
	if (fu.id[0]) {
		snprintf(m->id, sizeof(m->id), "%s", fu.id);
		if ((err = list_parts(ctx, m, h))) {
			if (err != HM_ERR_NOT_FOUND)
				goto out;
			/* aborted meanwhile: start over */
			ctx->errmsg[0] = 0;
			err = HM_OK;
			m->id[0] = 0;
			memset(m->parts, 0, (size_t)m->nparts * sizeof(*m->parts));
		}
	}
	if (!m->id[0]) {
		size_t pos = 0;
		r.query = "uploads=";
		if ((err = s3_perform(ctx, m->c, h, &r)))
			goto out;
		if (!s3_xml_next(r.body.buf, r.body.len, &pos, "UploadId", m->id, sizeof(m->id)) || !m->id[0])
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "the object store sent no UploadId for s3://%s/%s",
				      m->c->cfg.bucket, m->key);
	}
out:
	util_buf_release(&r.body);
	curl_easy_cleanup(h);
	return err;
}

/* ---- threads ---- */

static enum hm_err read_full(struct hm_ctx *ctx, int fd, void *buf, size_t n, uint64_t off)
{
	char *p = buf;
	while (n) {
		ssize_t got = pread(fd, p, n, (off_t)off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return hm_fail(ctx, HM_ERR_IO, "cannot read the data to upload: %s",
				       got < 0 ? strerror(errno) : "file shrank");
		p += got;
		n -= (size_t)got;
		off += (uint64_t)got;
	}
	return HM_OK;
}

/* Finds or creates the upload, lets the workers go, then hashes the file
 * as its written prefix grows. */
static void *lead_main(void *arg)
{
	struct s3_mpu *m = arg;
	struct hm_ctx ctx = {.cancel = &m->halt};
	unsigned char *buf = malloc(READ_CHUNK);
	enum hm_err err;

	if (!buf) {
		fail(m, HM_ERR_NOMEM, "out of memory");
		return NULL;
	}
	if ((err = setup(&ctx, m))) {
		fail(m, err, ctx.errmsg);
		free(buf);
		return NULL;
	}
	pthread_mutex_lock(&m->mu);
	m->ready = 1;
	pthread_cond_broadcast(&m->cv);
	while (!m->halt && m->hashed < m->size) {
		uint64_t from = m->hashed, to = m->avail;
		if (from >= to) {
			pthread_cond_wait(&m->cv, &m->mu);
			continue;
		}
		pthread_mutex_unlock(&m->mu);
		while (from < to && !m->halt) {
			size_t n = to - from > READ_CHUNK ? READ_CHUNK : (size_t)(to - from);
			if ((err = read_full(&ctx, m->fd, buf, n, from)))
				break;
			EVP_DigestUpdate(m->sha, buf, n);
			from += n;
		}
		pthread_mutex_lock(&m->mu);
		if (err) {
			fail_locked(m, err, ctx.errmsg);
			break;
		}
		m->hashed = from;
		pthread_cond_broadcast(&m->cv);
	}
	pthread_mutex_unlock(&m->mu);
	free(buf);
	return NULL;
}

/* MD5 (hex) of a file region, read locally. */
static enum hm_err md5_region(struct hm_ctx *ctx, int fd, uint64_t off, uint64_t len, char md5hex[33])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char *buf = malloc(READ_CHUNK);
	enum hm_err err = HM_OK;
	if (!md || !buf) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	EVP_DigestInit_ex(md, EVP_md5(), NULL);
	while (len) {
		size_t n = len > READ_CHUNK ? READ_CHUNK : (size_t)len;
		if ((err = read_full(ctx, fd, buf, n, off)))
			goto out;
		EVP_DigestUpdate(md, buf, n);
		off += n;
		len -= n;
	}
	s3_final_hex(md, md5hex, 16);
out:
	EVP_MD_CTX_free(md);
	free(buf);
	return err;
}

/* Part i: reused when the server has it with our MD5, else sent. *sent
 * receives the bytes sent. */
static enum hm_err do_part(struct hm_ctx *ctx, struct s3_mpu *m, CURL *h, EVP_MD_CTX *md5, int i,
			   uint64_t *sent)
{
	uint64_t off = (uint64_t)i * m->psize, len = m->size - off < m->psize ? m->size - off : m->psize;
	struct mpu_part *p = &m->parts[i];
	struct util_buf q = UTIL_BUF_INIT;
	char md5hex[33];
	enum hm_err err;
	struct req r;

	*sent = 0;
	if (p->etag[0] && p->size == len) {
		/* a finished part of a resumed upload */
		if ((err = md5_region(ctx, m->fd, off, len, md5hex)))
			return err;
		if (!strcasecmp(md5hex, p->etag))
			return HM_OK;
	}
	if (s3_upload_query(&q, i + 1, m->id))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	s3_req_init(&r, "PUT", m->key);
	r.query = q.buf;
	r.fd = m->fd;
	r.off = off;
	r.len = len;
	r.md5 = md5;
	err = s3_perform(ctx, m->c, h, &r);
	if (!err) {
		s3_final_hex(md5, md5hex, 16);
		if (strcasecmp(md5hex, r.etag))
			err = hm_fail(ctx, HM_ERR_CORRUPT, "s3://%s/%s: part %d arrived damaged (ETag %s, sent MD5 %s)",
				      m->c->cfg.bucket, m->key, i + 1, r.etag, md5hex);
	}
	if (!err) {
		snprintf(p->etag, sizeof(p->etag), "%s", r.etag);
		p->size = len;
		*sent = len;
	}
	util_buf_release(&r.body);
	util_buf_release(&q);
	return err;
}

/* Takes the next part whose bytes are on disk, until none is left. */
static void *worker_main(void *arg)
{
	struct s3_mpu *m = arg;
	struct hm_ctx ctx = {.cancel = &m->halt};
	CURL *h = curl_easy_init();
	EVP_MD_CTX *md5 = EVP_MD_CTX_new();

	if (!h || !md5) {
		fail(m, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	pthread_mutex_lock(&m->mu);
	while (!m->halt) {
		if (m->ready && m->next >= m->nparts)
			break;
		if (m->ready) {
			int i = m->next;
			uint64_t end = (uint64_t)(i + 1) * m->psize;
			if (end > m->size)
				end = m->size;
			if (end <= m->avail) {
				uint64_t sent = 0;
				enum hm_err err;
				m->next++;
				pthread_mutex_unlock(&m->mu);
				ctx.errmsg[0] = 0;
				err = do_part(&ctx, m, h, md5, i, &sent);
				pthread_mutex_lock(&m->mu);
				if (err) {
					fail_locked(m, err, ctx.errmsg);
					break;
				}
				m->ndone++;
				m->sent += sent;
				pthread_cond_broadcast(&m->cv);
				continue;
			}
		}
		pthread_cond_wait(&m->cv, &m->mu);
	}
	pthread_mutex_unlock(&m->mu);
out:
	EVP_MD_CTX_free(md5);
	if (h)
		curl_easy_cleanup(h);
	return NULL;
}

/* ---- the interface ---- */

enum hm_err s3_mpu_start(struct hm_ctx *ctx, struct s3_client *c, const char *key, int fd, uint64_t size,
			 struct s3_mpu **out)
{
	struct s3_mpu *m;
	enum hm_err err;
	int nw = c->cfg.parallel > 0 ? c->cfg.parallel : 4;

	*out = NULL;
	if ((err = s3_check_key(ctx, key)))
		return err;
	if (!size)
		return hm_fail(ctx, HM_ERR_USAGE, "a multipart upload needs data");
	m = calloc(1, sizeof(*m));
	if (!m)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	m->c = c;
	m->fd = -1;
	snprintf(m->key, sizeof(m->key), "%s", key);
	m->size = size;
	m->psize = part_size_for(c, size);
	m->nparts = (int)((size + m->psize - 1) / m->psize);
	if (nw > m->nparts)
		nw = m->nparts;
	m->parts = calloc((size_t)m->nparts, sizeof(*m->parts));
	m->workers = calloc((size_t)nw, sizeof(*m->workers));
	m->sha = EVP_MD_CTX_new();
	m->fd = dup(fd);
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	if (!m->parts || !m->workers || !m->sha || m->fd < 0) {
		err = hm_fail(ctx, m->fd < 0 ? HM_ERR_IO : HM_ERR_NOMEM, "cannot start an upload of s3://%s/%s: %s",
			      c->cfg.bucket, key, m->fd < 0 ? strerror(errno) : "out of memory");
		goto fail;
	}
	EVP_DigestInit_ex(m->sha, EVP_sha256(), NULL);
	if (pthread_create(&m->lead, NULL, lead_main, m)) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "cannot start a thread");
		goto fail;
	}
	m->lead_started = 1;
	for (; m->nworkers < nw; m->nworkers++)
		if (pthread_create(&m->workers[m->nworkers], NULL, worker_main, m)) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "cannot start a thread");
			goto fail;
		}
	*out = m;
	return HM_OK;
fail:
	s3_mpu_free(m);
	return err;
}

void s3_mpu_avail(struct s3_mpu *m, uint64_t written)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->mu);
	if (written > m->size)
		written = m->size;
	if (written > m->avail) {
		m->avail = written;
		pthread_cond_broadcast(&m->cv);
	}
	pthread_mutex_unlock(&m->mu);
}

static void join_all(struct s3_mpu *m)
{
	if (m->lead_started)
		pthread_join(m->lead, NULL);
	m->lead_started = 0;
	for (int i = 0; i < m->nworkers; i++)
		pthread_join(m->workers[i], NULL);
	m->nworkers = 0;
}

void s3_mpu_free(struct s3_mpu *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->mu);
	m->halt = 1;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
	join_all(m);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cv);
	if (m->fd >= 0)
		close(m->fd);
	EVP_MD_CTX_free(m->sha);
	free(m->parts);
	free(m->workers);
	free(m);
}

static enum hm_err complete(struct hm_ctx *ctx, struct s3_mpu *m)
{
	struct util_buf q = UTIL_BUF_INIT, body = UTIL_BUF_INIT;
	CURL *h = curl_easy_init();
	enum hm_err err = HM_OK;
	struct req r;

	s3_req_init(&r, "POST", m->key);
	if (!h || util_buf_adds(&body, "<CompleteMultipartUpload>")) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < m->nparts; i++)
		if (util_buf_printf(&body, "<Part><PartNumber>%d</PartNumber><ETag>\"%s\"</ETag></Part>", i + 1,
				    m->parts[i].etag)) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
	if (util_buf_adds(&body, "</CompleteMultipartUpload>") || s3_upload_query(&q, 0, m->id)) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	r.query = q.buf;
	r.buf = body.buf;
	r.buflen = body.len;
	if ((err = s3_perform(ctx, m->c, h, &r)))
		goto out;
	{
		/* CompleteMultipartUpload can fail with 200 and an Error body */
		size_t pos = 0;
		char code[64] = "";
		if (s3_xml_next(r.body.buf, r.body.len, &pos, "Code", code, sizeof(code)) && code[0])
			err = hm_fail(ctx, HM_ERR_HTTP, "s3://%s/%s: completing the upload failed (%s)",
				      m->c->cfg.bucket, m->key, code);
	}
out:
	util_buf_release(&r.body);
	util_buf_release(&q);
	util_buf_release(&body);
	if (h)
		curl_easy_cleanup(h);
	return err;
}

enum hm_err s3_mpu_finish(struct hm_ctx *ctx, struct s3_mpu *m, const char *sha256, uint64_t *sent)
{
	enum hm_err err = HM_OK;
	char got[65];

	if (sent)
		*sent = 0;
	if (!sha256 || !util_is_hex(sha256, 64)) {
		s3_mpu_free(m);
		return hm_fail(ctx, HM_ERR_USAGE, "an upload needs the content's SHA-256");
	}
	pthread_mutex_lock(&m->mu);
	m->avail = m->size;
	pthread_cond_broadcast(&m->cv);
	while (!m->err && !(m->ndone == m->nparts && m->hashed == m->size)) {
		if (hm_cancelled(ctx)) {
			fail_locked(m, HM_ERR_CANCELLED, "interrupted");
			break;
		}
		/* wake up now and then to notice the user's ^C */
		util_cond_wait_ms(&m->cv, &m->mu, 200);
	}
	pthread_mutex_unlock(&m->mu);
	join_all(m);
	if (m->err) {
		err = hm_fail(ctx, m->err, "%s", m->errmsg);
		goto out;
	}
	s3_final_hex(m->sha, got, 32);
	if (strcmp(got, sha256)) {
		err = hm_fail(ctx, HM_ERR_CORRUPT, "s3://%s/%s: the data has SHA-256 %s, expected %s; upload aborted",
			      m->c->cfg.bucket, m->key, got, sha256);
		goto out;
	}
	if ((err = complete(ctx, m)))
		goto out;
	if (sent)
		*sent = m->sent;
	m->id[0] = 0; /* done: nothing to abort */
out:
	/* a digest mismatch must never become visible; other failures keep the
	 * parts for the next try (gc aborts stale uploads) */
	if (err == HM_ERR_CORRUPT && m->id[0]) {
		struct hm_ctx quiet = {0};
		if (s3_abort_upload(&quiet, m->c, m->key, m->id))
			quiet.errmsg[0] = 0;
	}
	s3_mpu_free(m);
	return err;
}

/* ---- whole files ---- */

enum hm_err s3_put_file(struct hm_ctx *ctx, struct s3_client *c, const char *key, int fd, uint64_t size,
			const char *sha256, uint64_t *sent)
{
	enum hm_err err;
	if (sent)
		*sent = 0;
	if ((err = s3_check_key(ctx, key)))
		return err;
	if (!sha256 || !util_is_hex(sha256, 64))
		return hm_fail(ctx, HM_ERR_USAGE, "an upload needs the content's SHA-256");
	if (size > c->cfg.single_max) {
		struct s3_mpu *m;
		if ((err = s3_mpu_start(ctx, c, key, fd, size, &m)))
			return err;
		return s3_mpu_finish(ctx, m, sha256, sent);
	}
	/* x-amz-content-sha256 carries the digest: the server refuses other bytes */
	struct req r;
	EVP_MD_CTX *sha = EVP_MD_CTX_new(), *base = EVP_MD_CTX_new();
	CURL *h = curl_easy_init();
	char got[65];
	if (!sha || !base || !h) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	EVP_DigestInit_ex(base, EVP_sha256(), NULL);
	s3_req_init(&r, "PUT", key);
	r.fd = fd;
	r.len = size;
	r.payload_sha = sha256;
	r.sha_base = base;
	r.sha = sha;
	err = s3_perform(ctx, c, h, &r);
	if (!err) {
		s3_final_hex(sha, got, 32);
		if (strcmp(got, sha256)) {
			/* the server took bytes that are not the blob: take it back */
			struct hm_ctx quiet = {0};
			if (s3_delete(&quiet, c, key))
				quiet.errmsg[0] = 0;
			err = hm_fail(ctx, HM_ERR_CORRUPT, "s3://%s/%s: the data has SHA-256 %s, expected %s",
				      c->cfg.bucket, key, got, sha256);
		} else if (sent) {
			*sent = size;
		}
	}
	util_buf_release(&r.body);
out:
	EVP_MD_CTX_free(sha);
	EVP_MD_CTX_free(base);
	if (h)
		curl_easy_cleanup(h);
	return err;
}
