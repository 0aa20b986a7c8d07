/* respond.c - what every handler of the server uses, below all of them:
 * the pool of store handles, JSON and error answers, response headers,
 * the token and allow-list checks. (server.c dispatches to the handlers;
 * they reach back only to here, never to server.c.) */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "serve-int.h"

int srv_header(struct MHD_Response *resp, const char *name, const char *value)
{
	return MHD_add_response_header(resp, name, value) == MHD_YES ? 0 : -1;
}

enum MHD_Result srv_queue(struct srv_req *q, struct MHD_Connection *c, unsigned status, struct MHD_Response *resp,
			  int hdr_failed)
{
	enum MHD_Result ret;
	if (hdr_failed) {
		MHD_destroy_response(resp);
		return srv_send_error(q, c, 500, NULL, "cannot set the response headers");
	}
	q->status = (int)status;
	ret = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

struct store *srv_store_take(struct srv *s)
{
	struct store *st = NULL;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 30;
	pthread_mutex_lock(&s->pool_mu);
	while (!s->npool && s->nopen >= SRV_STORE_POOL)
		if (pthread_cond_timedwait(&s->pool_cv, &s->pool_mu, &until) == ETIMEDOUT)
			break;
	if (s->npool) {
		st = s->pool[--s->npool];
		pthread_mutex_unlock(&s->pool_mu);
		return st;
	}
	if (s->nopen >= SRV_STORE_POOL) {
		pthread_mutex_unlock(&s->pool_mu);
		return NULL;
	}
	s->nopen++;
	pthread_mutex_unlock(&s->pool_mu);
	struct hm_ctx quiet = {0};
	if (store_open_mode(&quiet, s->o->store_dir, STORE_READ, &st)) {
		int e = errno;
		st = NULL;
		pthread_mutex_lock(&s->pool_mu);
		s->nopen--;
		pthread_cond_signal(&s->pool_cv);
		pthread_mutex_unlock(&s->pool_mu);
		errno = e;
	}
	return st;
}

void srv_store_put(struct srv *s, struct store *st)
{
	if (!st)
		return;
	pthread_mutex_lock(&s->pool_mu);
	if (s->npool == s->cappool) {
		size_t nc = s->cappool ? s->cappool * 2 : 16;
		struct store **np = realloc(s->pool, nc * sizeof(*np));
		if (!np) {
			s->nopen--;
			pthread_cond_signal(&s->pool_cv);
			pthread_mutex_unlock(&s->pool_mu);
			store_close(st);
			return;
		}
		s->pool = np;
		s->cappool = nc;
	}
	s->pool[s->npool++] = st;
	pthread_cond_signal(&s->pool_cv);
	pthread_mutex_unlock(&s->pool_mu);
}

const char *srv_iso_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
	return buf;
}

int srv_repo_allowed(const struct srv *s, const char *repo)
{
	if (!s->o->nallow)
		return 1;
	for (size_t i = 0; i < s->o->nallow; i++)
		if (util_glob_match(s->o->allow[i], repo))
			return 1;
	return 0;
}

enum MHD_Result srv_send_json(struct srv_req *q, struct MHD_Connection *c, int status, json_t *j)
{
	char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	json_decref(j);
	if (!txt)
		return MHD_NO;
	size_t len = strlen(txt);
	resp = MHD_create_response_from_buffer(len, txt, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(txt);
		return MHD_NO;
	}
	if (srv_header(resp, "Content-Type", "application/json; charset=utf-8")) {
		MHD_destroy_response(resp);
		return MHD_NO;
	}
	q->status = status;
	q->planned = len;
	ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

enum MHD_Result srv_send_error(struct srv_req *q, struct MHD_Connection *c, int status, const char *code,
			       const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char *txt;
	json_t *j;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	j = json_pack("{s:s}", "error", msg);
	txt = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	json_decref(j);
	if (!txt)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(txt), txt, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(txt);
		return MHD_NO;
	}
	/* header values must stay one printable line */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	/* an error answer that cannot carry its headers (no memory) is not
	 * sent half-made: the connection is closed instead */
	if (srv_header(resp, "Content-Type", "application/json; charset=utf-8") ||
	    (code && srv_header(resp, "X-Error-Code", code)) || srv_header(resp, "X-Error-Message", msg) ||
	    (status == 401 && srv_header(resp, "WWW-Authenticate", "Bearer")) ||
	    (status == 503 && srv_header(resp, "Retry-After", q->retry_after[0] ? q->retry_after : "5")) ||
	    (q->conn && q->conn->over && srv_header(resp, "Connection", "close"))) {
		MHD_destroy_response(resp);
		return MHD_NO;
	}
	q->status = status;
	q->planned = strlen(txt);
	ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

enum MHD_Result srv_send_err(struct srv_req *q, struct MHD_Connection *c, enum hm_err err, const char *msg)
{
	switch (err) {
	case HM_ERR_REPO_NOT_FOUND:
		return srv_send_error(q, c, 404, "RepoNotFound", "%s", msg);
	case HM_ERR_REV_NOT_FOUND:
		return srv_send_error(q, c, 404, "RevisionNotFound", "%s", msg);
	case HM_ERR_ENTRY_NOT_FOUND:
		return srv_send_error(q, c, 404, "EntryNotFound", "%s", msg);
	case HM_ERR_GATED:
		return srv_send_error(q, c, 403, "GatedRepo", "%s", msg);
	case HM_ERR_USAGE:
	case HM_ERR_BAD_INPUT:
		return srv_send_error(q, c, 400, NULL, "%s", msg);
	case HM_ERR_RATE_LIMITED:
		return srv_send_error(q, c, 429, NULL, "%s", msg);
	case HM_ERR_UNREACHABLE:
	case HM_ERR_NET:
	case HM_ERR_HTTP:
	case HM_ERR_CORRUPT:
		return srv_send_error(q, c, 502, NULL, "upstream: %s", msg);
	case HM_ERR_NOT_FOUND:
		return srv_send_error(q, c, 404, "EntryNotFound", "%s", msg);
	default:
		return srv_send_error(q, c, 500, NULL, "%s", msg);
	}
}

/* Constant-time comparison, so a wrong token leaks no timing. */
static int same_secret(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char d = (unsigned char)(la != lb);
	for (size_t i = 0; i < la; i++)
		d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
	return d == 0;
}

int srv_token_ok(const struct srv *s, const char *tok)
{
	int ok = 0;
	for (size_t i = 0; i < s->o->ntokens; i++)
		ok |= same_secret(tok, s->o->tokens[i]);
	return ok;
}

/* Host header, if it is a plain host[:port]; else NULL. */
int srv_token_guarded(const struct srv *s)
{
	return s->o->ntokens || (s->o->upstream && s->o->upstream->token);
}

const char *srv_safe_host(struct MHD_Connection *c)
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
	if (!h || !*h || strlen(h) > 255)
		return NULL;
	for (const char *p = h; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
		      *p == '-' || *p == ':' || *p == '[' || *p == ']'))
			return NULL;
	return h;
}
