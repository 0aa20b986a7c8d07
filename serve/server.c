/* server.c - the daemon: listening, one thread per connection (handlers may
 * wait on a pull-through without stalling anyone else), bounded connections
 * and memory, authentication, dispatch, the access log, graceful shutdown. */
#include <arpa/inet.h>
#include <malloc.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "serve-int.h"
#include "ui.h"

#define MAX_POST_BODY (1u << 20)

/* Raises the soft file limit to the hard one; if that still cannot hold a
 * socket and a blob per connection, lowers --max-connections (with a
 * warning event): out of descriptors, every request would fail. */
static void fd_budget(struct srv *s)
{
	struct rlimit rl;
	int want = s->o->max_connections > 0 ? s->o->max_connections : 1024;
	s->max_conns = want;
	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_cur != rl.rlim_max) {
		struct rlimit up = rl;
		up.rlim_cur = rl.rlim_max == RLIM_INFINITY ? (rlim_t)1 << 20 : rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl = up;
	}
	if (rl.rlim_cur == RLIM_INFINITY)
		return;
	/* per connection a socket and the blob it sends, for the reserve too;
	 * plus the store handles (index, WAL, shm, lock), logs and upstream */
	long fixed = 64 + 4L * SRV_STORE_POOL, per = 2;
	long need = per * (want + want / 8 + 16) + fixed;
	if ((long)rl.rlim_cur >= need)
		return;
	long fit = (((long)rl.rlim_cur - fixed) / per - 16) * 8 / 9;
	s->max_conns = fit < 1 ? 1 : (int)fit;
	char msg[256];
	snprintf(msg, sizeof(msg),
		 "the file limit (ulimit -n) is %llu: --max-connections lowered from %d to %d (raise the limit to serve more)",
		 (unsigned long long)rl.rlim_cur, want, s->max_conns);
	struct hm_event ev = {.kind = HM_EV_INFO, .msg = msg};
	hm_emit(s->ctx, &ev);
}

static int authorized(struct srv *s, struct MHD_Connection *c)
{
	const char *h;
	if (!s->o->ntokens)
		return 1;
	h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	if (!h || strncasecmp(h, "Bearer ", 7))
		return 0;
	h += 7;
	while (*h == ' ')
		h++;
	return srv_token_ok(s, h);
}

/* ---- connections: the header deadline and the per-address cap ---- */

static void addr_text(const struct sockaddr *sa, char *buf, size_t cap)
{
	buf[0] = 0;
	if (!sa)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf, (socklen_t)cap);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf, (socklen_t)cap);
}

static int max_conns(const struct srv *s)
{
	return s->max_conns > 0 ? s->max_conns : 1024;
}

/* Connections per client address; 0 = no cap. */
static int per_client(const struct srv *s)
{
	return s->o->max_per_client == 0 ? 256 : s->o->max_per_client < 0 ? 0 : s->o->max_per_client;
}

static double header_timeout(const struct srv *s)
{
	return s->o->header_timeout > 0 ? s->o->header_timeout : 10;
}

static double idle_timeout(const struct srv *s)
{
	return s->o->timeout > 0 ? s->o->timeout : 60;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct srv *s = cls;
	struct srv_conn *k = *socket_context;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci;
		int same = 0;
		k = calloc(1, sizeof(*k));
		if (!k)
			return;
		ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		k->fd = ci ? ci->connect_fd : -1;
		ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		addr_text(ci ? ci->client_addr : NULL, k->addr, sizeof(k->addr));
		k->deadline = util_now() + header_timeout(s);
		pthread_mutex_lock(&s->conn_mu);
		if (per_client(s))
			for (struct srv_conn *o = s->conns; o; o = o->next)
				same += !strcmp(o->addr, k->addr);
		s->nconns++;
		k->over = s->nconns > max_conns(s) ? 1 : per_client(s) && same >= per_client(s) ? 2 : 0;
		k->next = s->conns;
		if (s->conns)
			s->conns->prev = k;
		s->conns = k;
		pthread_mutex_unlock(&s->conn_mu);
		*socket_context = k;
	} else if (k) {
		pthread_mutex_lock(&s->conn_mu);
		if (k->prev)
			k->prev->next = k->next;
		else
			s->conns = k->next;
		if (k->next)
			k->next->prev = k->prev;
		s->nconns--;
		pthread_mutex_unlock(&s->conn_mu);
		free(k);
		*socket_context = NULL;
	}
}

/* Cuts connections whose request line and headers did not all arrive in
 * time (MHD's own timeout counts only idle time, so a client trickling a
 * byte at a time would hold its thread for ever: slowloris). */
static void *watchdog_main(void *arg)
{
	struct srv *s = arg;
	pthread_mutex_lock(&s->conn_mu);
	while (!s->watchdog_stop) {
		double now = util_now();
		for (struct srv_conn *k = s->conns; k; k = k->next)
			if (k->deadline > 0 && now > k->deadline && !k->cut && k->fd >= 0) {
				/* the connection's thread sees end of input and closes it */
				shutdown(k->fd, SHUT_RDWR);
				k->cut = 1;
			}
		util_cond_wait_ms(&s->conn_cv, &s->conn_mu, 250);
	}
	pthread_mutex_unlock(&s->conn_mu);
	return NULL;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			       const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	struct srv *s = cls;
	struct srv_req *q = *con_cls;
	struct srv_route r;
	if (!q) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		q->s = s;
		q->t0 = util_now();
		q->started_at = util_unix_time();
		clock_gettime(CLOCK_REALTIME, &q->wall0);
		snprintf(q->version, sizeof(q->version), "%.11s", version ? version : "-");
		const char *hv = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT);
		snprintf(q->user_agent, sizeof(q->user_agent), "%s", hv ? hv : "-");
		hv = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_REFERER);
		snprintf(q->referer, sizeof(q->referer), "%s", hv ? hv : "-");
		q->kind = "other";
		snprintf(q->method, sizeof(q->method), "%.7s", method);
		q->path = util_strndup(url, 2048);
		q->url = util_strndup(url, 2048);
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		addr_text(ci ? ci->client_addr : NULL, q->client, sizeof(q->client));
		*con_cls = q;
		ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		if (ci && ci->socket_context) {
			q->conn = ci->socket_context;
			pthread_mutex_lock(&s->conn_mu);
			q->conn->deadline = 0; /* the headers are in */
			pthread_mutex_unlock(&s->conn_mu);
		}
		pthread_mutex_lock(&s->log_mu);
		s->inflight_requests++;
		pthread_mutex_unlock(&s->log_mu);
		return MHD_YES;
	}
	if (q->conn && q->conn->over) {
		if (q->conn->over == 2)
			return srv_send_error(q, c, 503, NULL, "too many connections from %s (at most %d per client address)",
					      q->conn->addr, per_client(s));
		return srv_send_error(q, c, 503, NULL, "too many connections (at most %d)", max_conns(s));
	}
	if (!strcmp(method, "POST") && *upload_size) {
		if (q->body.len + *upload_size > MAX_POST_BODY)
			q->body_too_big = 1;
		else if (util_buf_add(&q->body, upload, *upload_size))
			q->body_too_big = 1;
		*upload_size = 0;
		return MHD_YES;
	}
	if (srv_ui_claims(s, url)) /* the web pages authenticate themselves */
		return srv_ui_handle(q, c, url, method);
	if (strcmp(method, "GET") && strcmp(method, "HEAD") && strcmp(method, "POST"))
		return srv_send_error(q, c, 405, NULL, "method not allowed");
	if (!authorized(s, c))
		return srv_send_error(q, c, 401, NULL, "a valid bearer token is required");
	{
		const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
		if (h && !strncasecmp(h, "Bearer ", 7) && h[7])
			q->client_token = h + 7;
	}
	if (q->body_too_big)
		return srv_send_error(q, c, 413, NULL, "request body too large");
	srv_route_parse(url, &r);
	if (r.bad)
		return srv_send_error(q, c, 400, NULL, "bad request path");
	if (r.what == R_METRICS)
		return srv_metrics_send(q, c);
	if (r.what == R_NONE)
		return srv_send_error(q, c, 404, NULL, "not found");
	if (r.what == R_TORRENT)
		return srv_p2p_torrent(q, c, &r);
	snprintf(q->repo_type, sizeof(q->repo_type), "%s", r.type);
	snprintf(q->repo, sizeof(q->repo), "%s", r.repo);
	snprintf(q->revision, sizeof(q->revision), "%s", r.rev);
	if (!srv_repo_allowed(s, r.repo))
		return srv_send_error(q, c, 404, "RepoNotFound", "repository '%s' not found", r.repo);
	if (r.what == R_REV_TORRENTS)
		return srv_p2p_rev_torrents(q, c, &r);
	if (r.what == R_RESOLVE) {
		q->kind = "file";
		free(q->path);
		q->path = util_strdup(r.path);
		if (strcmp(method, "GET") && strcmp(method, "HEAD"))
			return srv_send_error(q, c, 405, NULL, "method not allowed");
		return srv_file(q, c, &r);
	}
	q->kind = "api";
	if ((r.what == R_PATHS_INFO) != !strcmp(method, "POST"))
		return srv_send_error(q, c, 405, NULL, "method not allowed");
	return srv_api(q, c, &r);
}

/* Text from the network, escaped for a log line: no quotes, backslashes or
 * control bytes, and no spaces unless the field is quoted. */
static void log_escaped(FILE *f, const char *s, int spaces)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		fprintf(f, (*p < (spaces ? 0x20 : 0x21) || *p >= 0x7f || *p == '"' || *p == '\\') ? "\\x%02x" : "%c", *p);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct srv *s = cls;
	struct srv_req *q = *con_cls;
	(void)c;
	if (!q)
		return;
	double secs = util_now() - q->t0;
	uint64_t bytes = q->streaming ? q->streamed : (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? q->planned : 0);
	if (!strcmp(q->method, "HEAD"))
		bytes = 0;
	if (q->status) {
		if (!q->ui) { /* page views are not mirror traffic */
			srv_metrics_record(s, q, bytes, secs);
			srv_ui_log(s, q, bytes, secs);
		}
		if (s->o->access_log) {
			/* the Combined Log Format (Apache, nginx), the time to the
			 * millisecond, then the seconds taken and the cache result */
			char when[64], ms[24];
			struct tm tm;
			gmtime_r(&q->wall0.tv_sec, &tm);
			strftime(when, sizeof(when), "%d/%b/%Y:%H:%M:%S", &tm);
			snprintf(ms, sizeof(ms), "%03d", (int)(q->wall0.tv_nsec / 1000000) % 1000);
			pthread_mutex_lock(&s->log_mu);
			fprintf(s->o->access_log, "%s - - [%s.%s +0000] \"%s ", q->client[0] ? q->client : "-", when, ms, q->method);
			log_escaped(s->o->access_log, q->url ? q->url : "", 0);
			fprintf(s->o->access_log, " %s\" %d %llu \"", q->version, q->status, (unsigned long long)bytes);
			log_escaped(s->o->access_log, q->referer, 1);
			fputs("\" \"", s->o->access_log);
			log_escaped(s->o->access_log, q->user_agent, 1);
			fprintf(s->o->access_log, "\" %.3f %s%s\n", secs, q->cache ? q->cache : "-",
				toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted");
			fflush(s->o->access_log);
			pthread_mutex_unlock(&s->log_mu);
		}
	}
	pthread_mutex_lock(&s->log_mu);
	s->inflight_requests--;
	pthread_mutex_unlock(&s->log_mu);
	if (q->conn) {
		/* keep-alive: the next request gets the idle time, then the header deadline */
		pthread_mutex_lock(&s->conn_mu);
		q->conn->deadline = util_now() + idle_timeout(s) + header_timeout(s);
		pthread_mutex_unlock(&s->conn_mu);
	}
	util_buf_release(&q->body);
	free(q->path);
	free(q->url);
	free(q);
	*con_cls = NULL;
}

/* MHD would decode the path before we split it; we split first, then decode
 * each segment ourselves (route.c). Query arguments are decoded here. */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
	(void)cls;
	(void)c;
	return strlen(s);
}

static enum hm_err parse_listen(struct hm_ctx *ctx, const char *l, struct sockaddr_storage *ss)
{
	char host[128];
	const char *colon = strrchr(l, ':');
	long port;
	char *end;
	memset(ss, 0, sizeof(*ss));
	if (!colon || (size_t)(colon - l) >= sizeof(host))
		return hm_fail(ctx, HM_ERR_USAGE, "invalid --listen '%s': expected ADDR:PORT", l);
	memcpy(host, l, (size_t)(colon - l));
	host[colon - l] = 0;
	port = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end || port < 0 || port > 65535)
		return hm_fail(ctx, HM_ERR_USAGE, "invalid port in --listen '%s'", l);
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
		host[strlen(host) - 1] = 0;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
			return hm_fail(ctx, HM_ERR_USAGE, "invalid address in --listen '%s'", l);
		return HM_OK;
	}
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	a4->sin_family = AF_INET;
	a4->sin_port = htons((uint16_t)port);
	if (!host[0] || !strcmp(host, "*"))
		a4->sin_addr.s_addr = htonl(INADDR_ANY);
	else if (!strcmp(host, "localhost"))
		a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
		return hm_fail(ctx, HM_ERR_USAGE, "invalid address in --listen '%s' (use an IP address)", l);
	return HM_OK;
}

/* Binds the listening socket ourselves: SO_REUSEADDR (a restart is not held
 * up by TIME_WAIT) but never SO_REUSEPORT, so a second server on a port in
 * use fails instead of sharing it (and answering at random). */
static enum hm_err open_listener(struct hm_ctx *ctx, const char *l, const struct sockaddr_storage *ss, int *out)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;
	socklen_t len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	*out = -1;
	if (fd < 0)
		return hm_fail(ctx, HM_ERR_IO, "cannot listen on '%s': %s", l, strerror(errno));
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, 511) != 0) {
		int e = errno;
		close(fd);
		if (e == EADDRINUSE)
			return hm_fail(ctx, HM_ERR_IO, "cannot listen on '%s': address already in use (is another server running there?)", l);
		return hm_fail(ctx, HM_ERR_IO, "cannot listen on '%s': %s", l, strerror(e));
	}
	*out = fd;
	return HM_OK;
}

/* Tells the caller (on_listening) the URL the daemon answers at. */
static void announce(struct srv *s, const struct sockaddr_storage *ss)
{
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	char addr[INET6_ADDRSTRLEN] = "127.0.0.1", url[200];
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, addr, sizeof(addr));
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, addr, sizeof(addr));
	snprintf(url, sizeof(url), ss->ss_family == AF_INET6 ? "http://[%s]:%u" : "http://%s:%u", addr,
		 di ? (unsigned)di->port : 0);
	if (s->o->on_listening)
		s->o->on_listening(s->o->ud, url);
}

/* Waits for the answers in progress to finish, at most the client timeout. */
static void drain_requests(struct srv *s)
{
	double deadline = util_now() + (s->o->timeout > 0 ? s->o->timeout : 60);
	for (;;) {
		pthread_mutex_lock(&s->log_mu);
		int busy = s->inflight_requests;
		pthread_mutex_unlock(&s->log_mu);
		if (!busy || util_now() > deadline)
			break;
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

enum hm_err srv_run(struct hm_ctx *ctx, const struct srv_opts *o)
{
	struct srv s;
	struct sockaddr_storage ss;
	enum hm_err err;
	struct store *st = NULL;
	int lfd = -1;
	const char *listen_at = o->listen ? o->listen : "127.0.0.1:8080";
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
			 MHD_USE_ITC;

	memset(&s, 0, sizeof(s));
	/* one thread per connection: without a cap glibc gives many of them an
	 * arena of their own, and memory freed there is seldom returned */
	mallopt(M_ARENA_MAX, 4);
	s.ctx = ctx;
	s.o = o;
	pthread_mutex_init(&s.pool_mu, NULL);
	pthread_cond_init(&s.pool_cv, NULL);
	pthread_mutex_init(&s.log_mu, NULL);
	pthread_mutex_init(&s.conn_mu, NULL);
	pthread_cond_init(&s.conn_cv, NULL);
	if ((err = parse_listen(ctx, listen_at, &ss)))
		goto out;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* open (and migrate) the store once up front: a broken store fails here */
	/* a directory that is not a store is refused (a typo), unless the
	 * server pulls through: that is a pull, which makes the store */
	err = store_open_mode(ctx, o->store_dir, STORE_READ, &st);
	if (err == HM_ERR_NOT_FOUND && o->upstream && !o->offline) {
		ctx->errmsg[0] = '\0';
		err = store_open_mode(ctx, o->store_dir, STORE_CREATE, &st);
	}
	if (err)
		goto out;
	/* a store this user cannot write is served as it is */
	if (store_readonly(st) && o->access_log)
		fprintf(o->access_log, "hubmirror: note: the store '%s' is read-only for this user: serving it"
			" without recording statistics%s\n", o->store_dir, o->upstream ? " or pulling through" : "");
	s.nopen = 1;
	srv_store_put(&s, st);
	fd_budget(&s);
	if ((err = srv_api_init(&s)) || (err = srv_metrics_init(&s)) || (err = srv_lists_init(&s)) ||
	    (err = srv_up_init(&s)) || (err = srv_p2p_init(&s)) || (!o->no_ui && (err = srv_ui_init(&s))) ||
	    (err = open_listener(ctx, listen_at, &ss, &lfd)))
		goto out;
	if (pthread_create(&s.watchdog, NULL, watchdog_main, &s)) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "cannot start a thread");
		goto out;
	}
	s.watchdog_on = 1;
	/* connections over --max-connections (up to a reserve) are accepted to
	 * be answered 503; past the reserve MHD closes them at once */
	s.d = MHD_start_daemon(flags, 0, NULL, NULL, handler, &s,
			       MHD_OPTION_LISTEN_SOCKET, lfd,
			       MHD_OPTION_CONNECTION_LIMIT, (unsigned)(max_conns(&s) + max_conns(&s) / 8 + 16),
			       MHD_OPTION_NOTIFY_CONNECTION, on_connection, &s,
			       MHD_OPTION_PER_IP_CONNECTION_LIMIT, 0u,
			       MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(o->timeout > 0 ? o->timeout : 60),
			       MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 << 10),
			       MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256 << 10),
			       MHD_OPTION_NOTIFY_COMPLETED, completed, &s,
			       MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL,
			       MHD_OPTION_END);
	if (!s.d) {
		err = hm_fail(ctx, HM_ERR_IO, "cannot listen on '%s': %s", listen_at, strerror(errno));
		goto out;
	}
	announce(&s, &ss);
	while (!hm_cancelled(ctx)) {
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	/* graceful: stop accepting, let answers in progress finish (bounded by
	 * the client timeout), then close what is left (idle keep-alives) */
	if (MHD_quiesce_daemon(s.d) == lfd && lfd >= 0) {
		close(lfd); /* ours: MHD no longer uses it */
		lfd = -1;
	}
	drain_requests(&s);
	srv_up_stop(&s);
	MHD_stop_daemon(s.d);
	s.d = NULL;
out:
	if (s.d)
		MHD_stop_daemon(s.d);
	else if (lfd >= 0 && err)
		close(lfd);
	if (s.watchdog_on) {
		pthread_mutex_lock(&s.conn_mu);
		s.watchdog_stop = 1;
		pthread_cond_broadcast(&s.conn_cv);
		pthread_mutex_unlock(&s.conn_mu);
		pthread_join(s.watchdog, NULL);
	}
	srv_ui_free(&s);
	srv_up_free(&s);
	srv_p2p_free(&s);
	srv_metrics_free(&s);
	srv_api_free(&s);
	srv_lists_free(&s);
	for (size_t i = 0; i < s.npool; i++)
		store_close(s.pool[i]);
	free(s.pool);
	pthread_mutex_destroy(&s.pool_mu);
	pthread_cond_destroy(&s.pool_cv);
	pthread_mutex_destroy(&s.log_mu);
	pthread_mutex_destroy(&s.conn_mu);
	pthread_cond_destroy(&s.conn_cv);
	return err;
}
