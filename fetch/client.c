/* client.c - the client object and the pieces every request shares:
 * origins, redirects, the token rule, headers and error mapping. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include "fetch-int.h"

#define HM_VERSION "0.1.0"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

char *fetch_origin_of(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL, *out = NULL;
	if (!u)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
		goto out;
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
		goto out;
	if (strcasecmp(scheme, "http") && strcasecmp(scheme, "https"))
		goto out;
	out = util_asprintf("%s://%s:%s", scheme, host, port);
	if (out)
		for (char *p = out; *p; p++)
			*p = (char)tolower((unsigned char)*p);
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return out;
}

char *fetch_url_join(const char *base, const char *location)
{
	CURLU *u = curl_url();
	char *s = NULL, *out = NULL;
	if (!u)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_URL, location, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_URL, &s, 0) == CURLUE_OK) {
		char *o = fetch_origin_of(s);
		if (o) /* only http(s) targets */
			out = util_strdup(s);
		free(o);
	}
	curl_free(s);
	curl_url_cleanup(u);
	return out;
}

/* ---- the redirect guard (SSRF) ---- */

enum addr_class { AC_PUBLIC = 0, AC_LOOPBACK = 1, AC_PRIVATE = 2, AC_LINKLOCAL = 4, AC_SPECIAL = 8 };

static enum addr_class class_v4(const unsigned char *a)
{
	if (a[0] == 127)
		return AC_LOOPBACK;
	if (a[0] == 169 && a[1] == 254)
		return AC_LINKLOCAL;
	if (a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
	    (a[0] == 100 && (a[1] & 0xc0) == 64)) /* RFC 1918 and CGNAT */
		return AC_PRIVATE;
	if (a[0] == 0 || a[0] >= 224) /* "this network" (reaches the host), multicast, reserved */
		return AC_SPECIAL;
	return AC_PUBLIC;
}

static enum addr_class class_of(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return class_v4((const unsigned char *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr);
	if (sa->sa_family == AF_INET6) {
		const unsigned char *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		static const unsigned char zero[16] = {0};
		if (!memcmp(a, mapped, 12)) /* ::ffff:a.b.c.d */
			return class_v4(a + 12);
		if (!memcmp(a, zero, 15))
			return a[15] == 1 ? AC_LOOPBACK : AC_SPECIAL; /* ::1, :: */
		if (!memcmp(a, zero, 12)) /* ::a.b.c.d (deprecated compatible form) */
			return class_v4(a + 12);
		if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
			return AC_LINKLOCAL; /* fe80::/10 */
		if ((a[0] & 0xfe) == 0xfc || (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0))
			return AC_PRIVATE; /* fc00::/7 unique local, fec0::/10 site-local */
		if (a[0] == 0xff)
			return AC_SPECIAL; /* multicast */
		return AC_PUBLIC;
	}
	return AC_SPECIAL;
}

/* Why an address may not be used for a redirect target; NULL if it may. */
static const char *refusal(struct fetch_client *c, enum addr_class k)
{
	int ep = __atomic_load_n(&c->ep_classes, __ATOMIC_RELAXED);
	switch (k) {
	case AC_PUBLIC:
		return NULL;
	case AC_LINKLOCAL:
		return "a link-local address (cloud metadata services live there)";
	case AC_SPECIAL:
		return "an unspecified, multicast or reserved address";
	case AC_LOOPBACK:
		return c->allow_private || (ep & AC_LOOPBACK) ? NULL : "a loopback address";
	case AC_PRIVATE:
		return c->allow_private || (ep & AC_PRIVATE) ? NULL : "a private-network address";
	}
	return "an unknown address";
}

static void addr_text(const struct sockaddr *sa, char *buf, size_t cap)
{
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf, (socklen_t)cap);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf, (socklen_t)cap);
	else
		snprintf(buf, cap, "(family %d)", sa->sa_family);
}

/* curl's open-socket callback: the resolved address, before any connect. */
static curl_socket_t guard_open(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct fetch_guard *g = ud;
	(void)purpose;
	enum addr_class k = class_of(&a->addr);
	if (!g->foreign) {
		/* the endpoint's own ranges become allowed redirect targets */
		if (k == AC_LOOPBACK || k == AC_PRIVATE)
			__atomic_fetch_or(&g->c->ep_classes, (int)k, __ATOMIC_RELAXED);
	} else if (!g->proxied) {
		const char *why = refusal(g->c, k);
		if (why) {
			g->refused = 1;
			g->why = why;
			addr_text(&a->addr, g->addr, sizeof(g->addr));
			return CURL_SOCKET_BAD;
		}
	}
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* With a proxy the proxy resolves names: only literal addresses can be checked. */
static int proxy_in_env(const char *url)
{
	static const char *const https[] = {"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", NULL};
	static const char *const http[] = {"http_proxy", "all_proxy", "ALL_PROXY", NULL};
	const char *const *list = !strncasecmp(url, "https:", 6) ? https : http;
	for (; *list; list++) {
		const char *e = getenv(*list);
		if (e && *e)
			return 1;
	}
	return 0;
}

/* Checks a literal address in the host of url (the proxy case). Returns 1 if refused. */
static int guard_literal(struct fetch_guard *g, const char *url)
{
	CURLU *u = curl_url();
	char *host = NULL;
	int refused = 0;
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		struct sockaddr_storage ss;
		char h[128];
		size_t n = strlen(host);
		memset(&ss, 0, sizeof(ss));
		if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(h)) {
			memcpy(h, host + 1, n - 2);
			h[n - 2] = 0;
			if (inet_pton(AF_INET6, h, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
				ss.ss_family = AF_INET6;
		} else if (n < sizeof(h) && inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
			ss.ss_family = AF_INET;
		}
		if (ss.ss_family) {
			const char *why = refusal(g->c, class_of((struct sockaddr *)&ss));
			if (why) {
				g->refused = refused = 1;
				g->why = why;
				addr_text((struct sockaddr *)&ss, g->addr, sizeof(g->addr));
			}
		}
	}
	curl_free(host);
	curl_url_cleanup(u);
	return refused;
}

/* Printable, bounded copy of an untrusted URL for a message. */
static void quote_url(char *dst, size_t cap, const char *s)
{
	size_t j = 0;
	for (; *s && j + 4 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		dst[j++] = ch >= 0x21 && ch < 0x7f && ch != '\'' ? (char)ch : '?';
	}
	if (*s && j + 4 <= cap) {
		memcpy(dst + j, "...", 3);
		j += 3;
	}
	dst[j] = 0;
}

enum hm_err fetch_guard_err(struct hm_ctx *ctx, const struct fetch_guard *g, const char *what)
{
	return hm_fail(ctx, HM_ERR_BAD_INPUT,
		       "refusing to follow the redirect%s%s to '%s': it resolves to %s, %s%s", what ? " for " : "",
		       what ? what : "", g->target, g->addr, g->why ? g->why : "a refused address",
		       g->why && strstr(g->why, "link-local") ? ""
		       : g->why && (strstr(g->why, "loopback") || strstr(g->why, "private"))
			       ? " (--allow-private-redirects allows it)"
			       : "");
}

enum hm_err fetch_follow(struct hm_ctx *ctx, const char *base, const char *location, int *count, int max,
			 const char *what, char **out)
{
	char q[300];
	*out = NULL;
	quote_url(q, sizeof(q), location);
	if (++*count > max)
		return hm_fail(ctx, HM_ERR_HTTP, "too many redirects for %s (more than %d)", what, max);
	*out = fetch_url_join(base, location);
	if (*out)
		return HM_OK;
	{
		/* name what was refused: a scheme other than http(s), or garbage */
		CURLU *u = curl_url();
		char *scheme = NULL;
		enum hm_err e;
		if (u && curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
		    curl_url_set(u, CURLUPART_URL, location, 0) == CURLUE_OK &&
		    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK)
			e = hm_fail(ctx, HM_ERR_BAD_INPUT,
				    "refusing to follow the redirect for %s to '%s': scheme '%s' is not http or https",
				    what, q, scheme);
		else
			e = hm_fail(ctx, HM_ERR_BAD_INPUT, "bad redirect for %s: cannot use 'Location: %s'", what, q);
		curl_free(scheme);
		curl_url_cleanup(u);
		return e;
	}
}

enum hm_err fetch_client_new(struct hm_ctx *ctx, const struct fetch_client_opts *opts,
			     struct fetch_client **out)
{
	struct fetch_client *c;
	const char *ep = opts->endpoint && *opts->endpoint ? opts->endpoint : "https://huggingface.co";
	size_t len;

	pthread_once(&curl_once, curl_init_once);
	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	len = strlen(ep);
	while (len && ep[len - 1] == '/')
		len--;
	c->endpoint = util_strndup(ep, len);
	c->origin = c->endpoint ? fetch_origin_of(c->endpoint) : NULL;
	if (!c->endpoint || !c->origin) {
		fetch_client_free(c);
		return hm_fail(ctx, HM_ERR_USAGE, "invalid endpoint '%s': expected an http(s) URL", ep);
	}
	if (strchr(c->endpoint, '@')) {
		fetch_client_free(c);
		return hm_fail(ctx, HM_ERR_USAGE, "invalid endpoint: credentials in the URL are not supported; use --token");
	}
	if (opts->token && *opts->token) {
		for (const char *p = opts->token; *p; p++)
			if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
				fetch_client_free(c);
				return hm_fail(ctx, HM_ERR_USAGE, "invalid token: it contains spaces or control characters");
			}
		c->token = util_strdup(opts->token);
	}
	c->user_agent = util_asprintf("hubmirror/%s; %s", HM_VERSION, curl_version());
	c->connections = opts->connections > 0 ? opts->connections : 8;
	if (c->connections > 64)
		c->connections = 64;
	c->retries = opts->retries >= 0 ? opts->retries : 5;
	c->timeout = opts->timeout > 0 ? opts->timeout : 30;
	c->connect_timeout = opts->connect_timeout > 0 ? opts->connect_timeout : 10;
	c->meta_timeout = opts->meta_timeout > 0 ? opts->meta_timeout : 10;
	snprintf(c->endpoint_from, sizeof(c->endpoint_from), "%s", opts->endpoint_from ? opts->endpoint_from : "--endpoint");
	snprintf(c->timeout_from, sizeof(c->timeout_from), "%s", opts->timeout_from ? opts->timeout_from : "--timeout");
	snprintf(c->meta_timeout_from, sizeof(c->meta_timeout_from), "%s",
		 opts->meta_timeout_from ? opts->meta_timeout_from : "HF_HUB_ETAG_TIMEOUT");
	c->allow_private = opts->allow_private_redirects;
	if (!c->user_agent || (opts->token && *opts->token && !c->token)) {
		fetch_client_free(c);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	*out = c;
	return HM_OK;
}

void fetch_client_free(struct fetch_client *c)
{
	if (!c)
		return;
	free(c->endpoint);
	free(c->origin);
	if (c->token) {
		/* do not leave the secret lying in freed memory */
		volatile char *p = c->token;
		while (*p)
			*p++ = 0;
		free(c->token);
	}
	free(c->user_agent);
	free(c);
}

int fetch_client_has_token(const struct fetch_client *c)
{
	return c && c->token != NULL;
}

const char *fetch_client_endpoint(const struct fetch_client *c)
{
	return c->endpoint;
}

void fetch_resp_reset(struct fetch_resp *r)
{
	memset(r, 0, sizeof(*r));
	r->retry_after = -1;
	r->content_length = -1;
}

/* Copies a header value (trimmed) into dst. */
static void hdr_copy(char *dst, size_t cap, const char *v, size_t n)
{
	while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
		n--;
	while (n && *v == ' ') {
		v++;
		n--;
	}
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, v, n);
	dst[n] = 0;
}

static int hdr_is(const char *buf, size_t len, const char *name, const char **val, size_t *vlen)
{
	size_t nl = strlen(name);
	if (len <= nl || buf[nl] != ':' || strncasecmp(buf, name, nl))
		return 0;
	*val = buf + nl + 1;
	*vlen = len - nl - 1;
	return 1;
}

/* Finds the URL of rel="next" in a Link header value. */
static void parse_link_next(struct fetch_resp *r, const char *v)
{
	const char *p = v;
	while ((p = strchr(p, '<'))) {
		const char *e = strchr(p, '>');
		if (!e)
			return;
		const char *params = e + 1, *stop = strchr(params, ',');
		size_t plen = stop ? (size_t)(stop - params) : strlen(params);
		char pbuf[256];
		hdr_copy(pbuf, sizeof(pbuf), params, plen);
		if (strstr(pbuf, "rel=\"next\"") || strstr(pbuf, "rel=next")) {
			size_t ulen = (size_t)(e - p - 1);
			if (ulen < sizeof(r->link_next)) {
				memcpy(r->link_next, p + 1, ulen);
				r->link_next[ulen] = 0;
			}
			return;
		}
		p = e + 1;
	}
}

size_t fetch_header_cb(char *buf, size_t size, size_t n, void *ud)
{
	struct fetch_resp *r = ud;
	size_t len = size * n;
	const char *v;
	size_t vl;
	char tmp[2048];

	if (len >= 5 && !strncmp(buf, "HTTP/", 5)) {
		/* a new response (after 1xx or a redirect): start over */
		/* the line is not NUL-terminated: parse a bounded copy */
		fetch_resp_reset(r);
		hdr_copy(tmp, sizeof(tmp), buf, len);
		const char *sp = strchr(tmp, ' ');
		if (sp)
			r->status = strtol(sp + 1, NULL, 10);
		return len;
	}
	if (hdr_is(buf, len, "location", &v, &vl))
		hdr_copy(r->location, sizeof(r->location), v, vl);
	else if (hdr_is(buf, len, "x-error-code", &v, &vl))
		hdr_copy(r->error_code, sizeof(r->error_code), v, vl);
	else if (hdr_is(buf, len, "x-error-message", &v, &vl))
		hdr_copy(r->error_message, sizeof(r->error_message), v, vl);
	else if (hdr_is(buf, len, "www-authenticate", &v, &vl))
		r->www_authenticate = 1;
	else if (hdr_is(buf, len, "content-type", &v, &vl))
		hdr_copy(r->content_type, sizeof(r->content_type), v, vl);
	else if (hdr_is(buf, len, "link", &v, &vl)) {
		hdr_copy(tmp, sizeof(tmp), v, vl);
		parse_link_next(r, tmp);
	} else if (hdr_is(buf, len, "retry-after", &v, &vl)) {
		hdr_copy(tmp, sizeof(tmp), v, vl);
		char *end;
		double s = strtod(tmp, &end);
		if (end != tmp && s >= 0)
			r->retry_after = s > 300 ? 300 : s;
	} else if (hdr_is(buf, len, "content-length", &v, &vl)) {
		hdr_copy(tmp, sizeof(tmp), v, vl);
		char *end;
		long long cl = strtoll(tmp, &end, 10);
		if (end != tmp && cl >= 0)
			r->content_length = cl;
	} else if (hdr_is(buf, len, "content-range", &v, &vl)) {
		unsigned long long a, b, t;
		hdr_copy(tmp, sizeof(tmp), v, vl);
		if (sscanf(tmp, "bytes %llu-%llu/%llu", &a, &b, &t) == 3 && a <= b && b < t) {
			r->has_content_range = 1;
			r->cr_start = a;
			r->cr_end = b;
			r->cr_total = t;
		}
	}
	return len;
}

enum hm_err fetch_easy_setup(struct hm_ctx *ctx, struct fetch_client *c, CURL *h, const char *url,
			     struct curl_slist **hdrs, struct fetch_guard *guard)
{
	char *origin = fetch_origin_of(url);
	struct curl_slist *l = NULL, *t;

	*hdrs = NULL;
	if (!origin)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "refusing to fetch a non-http(s) URL");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_USERAGENT, c->user_agent);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* we follow, to apply the token rule */
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_timeout * 1000));
	/* a connection that moves less than 1 byte/s for `timeout` seconds is stalled */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)(c->timeout < 1 ? 1 : c->timeout));
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, NULL);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	memset(guard, 0, sizeof(*guard));
	guard->c = c;
	guard->foreign = strcmp(origin, c->origin) != 0;
	snprintf(guard->target, sizeof(guard->target), "%s", origin);
	if (guard->foreign && proxy_in_env(url)) {
		guard->proxied = 1;
		if (guard_literal(guard, url)) {
			free(origin);
			return fetch_guard_err(ctx, guard, NULL);
		}
	}
	curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, guard_open);
	curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, guard);
	if (c->token && !strcmp(origin, c->origin)) {
		char *a = util_asprintf("Authorization: Bearer %s", c->token);
		if (!a) {
			free(origin);
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		}
		t = curl_slist_append(l, a);
		memset(a, 0, strlen(a));
		free(a);
		if (!t) {
			free(origin);
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		}
		l = t;
	}
	free(origin);
	*hdrs = l;
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, l);
	return HM_OK;
}

enum hm_err fetch_curl_err(struct hm_ctx *ctx, const struct fetch_client *c, CURLcode rc, long os_errno,
			   const char *url, int api)
{
	char *origin = fetch_origin_of(url);
	const char *where = origin ? origin : "the server";
	int ep = origin && !strcmp(origin, c->origin);
	const char *who = ep ? "the hub at" : "the download server at";
	char from[160] = "";
	enum hm_err e;
	if (ep)
		snprintf(from, sizeof(from), " (the endpoint comes from %s)", c->endpoint_from);
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
		e = hm_fail(ctx, HM_ERR_UNREACHABLE, "cannot find %s '%s': the host name does not resolve%s", who, where, from);
		break;
	case CURLE_COULDNT_RESOLVE_PROXY:
		e = hm_fail(ctx, HM_ERR_UNREACHABLE, "cannot find the proxy's host (check http_proxy, https_proxy, ALL_PROXY)");
		break;
	case CURLE_COULDNT_CONNECT:
		if (os_errno == ECONNREFUSED)
			e = hm_fail(ctx, HM_ERR_UNREACHABLE, "cannot connect to %s '%s': connection refused, nothing listens there%s",
				    who, where, from);
		else if (os_errno == ETIMEDOUT || !os_errno)
			e = hm_fail(ctx, HM_ERR_UNREACHABLE, "cannot connect to %s '%s': no answer within %g s (%s)%s", who, where,
				    api ? c->meta_timeout : c->connect_timeout,
				    api ? c->meta_timeout_from : "the connect timeout", from);
		else
			e = hm_fail(ctx, HM_ERR_UNREACHABLE, "cannot connect to %s '%s': %s%s", who, where, strerror((int)os_errno), from);
		break;
	case CURLE_OPERATION_TIMEDOUT:
		if (api)
			e = hm_fail(ctx, HM_ERR_NET, "%s '%s' sent no answer within %g s (%s)%s", who, where, c->meta_timeout,
				    c->meta_timeout_from, from);
		else
			e = hm_fail(ctx, HM_ERR_NET, "%s '%s' stopped sending data for %g s (%s)", who, where, c->timeout,
				    c->timeout_from);
		break;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
		e = hm_fail(ctx, HM_ERR_NET, "cannot make a TLS connection to '%s': the certificate or TLS setup was refused (%s)",
			    where, curl_easy_strerror(rc));
		break;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		e = hm_fail(ctx, HM_ERR_NET, "%s '%s' closed the connection early", who, where);
		break;
	default:
		e = hm_fail(ctx, HM_ERR_NET, "transfer from '%s' failed: %s", where, curl_easy_strerror(rc));
	}
	free(origin);
	return e;
}

void fetch_log_http(struct hm_ctx *ctx, const char *method, const char *url, long status, double seconds)
{
	char clean[1024];
	const char *p = strstr(url, "://"), *at, *host;
	size_t n = 0;
	if (!ctx || !ctx->verbose)
		return;
	host = p ? p + 3 : url;
	/* drop user:password@ before the host */
	at = strchr(host, '@');
	if (at && at < host + strcspn(host, "/?#"))
		host = at + 1;
	if (p) {
		n = (size_t)(p + 3 - url);
		memcpy(clean, url, n < sizeof(clean) ? n : 0);
	}
	size_t rest = strcspn(host, "?#");
	if (n + rest >= sizeof(clean))
		rest = sizeof(clean) - n - 1;
	memcpy(clean + n, host, rest);
	clean[n + rest] = 0;
	struct hm_event ev = {.kind = HM_EV_HTTP, .name = clean, .method = method, .status = status, .seconds = seconds};
	hm_emit(ctx, &ev);
}

int fetch_status_retryable(long status)
{
	return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
	       status == 504;
}

double fetch_backoff(int n, const struct fetch_resp *r)
{
	double d = 0.25;
	if (r && r->retry_after >= 0)
		return r->retry_after + 0.1;
	for (int i = 1; i < n && d < 8; i++)
		d *= 2;
	return d > 8 ? 8 : d;
}

int fetch_http_retryable(long status)
{
	return fetch_status_retryable(status);
}

double fetch_retry_delay(int n, double retry_after)
{
	struct fetch_resp r;
	fetch_resp_reset(&r);
	r.retry_after = retry_after;
	return fetch_backoff(n, &r);
}

enum hm_err fetch_status_err(struct hm_ctx *ctx, const struct fetch_resp *r, const char *what,
			     int have_token)
{
	const char *code = r->error_code;
	char msg[300] = "";
	/* the server's own words, sanitized: printable ASCII only */
	if (r->error_message[0]) {
		size_t j = 0;
		msg[j++] = ':';
		msg[j++] = ' ';
		for (size_t i = 0; r->error_message[i] && j < sizeof(msg) - 1; i++) {
			unsigned char ch = (unsigned char)r->error_message[i];
			msg[j++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
		}
		msg[j] = 0;
	}
	if (!strcmp(code, "GatedRepo")) {
		/* the Hub's 403 names the page where access is requested */
		char url[256] = "";
		const char *u = strstr(r->error_message, "https://");
		if (!u)
			u = strstr(r->error_message, "http://");
		if (u) {
			size_t n = strcspn(u, " \t\"'<>");
			while (n && (u[n - 1] == '.' || u[n - 1] == ','))
				n--;
			snprintf(url, sizeof(url), "%.*s", (int)(n < sizeof(url) ? n : sizeof(url) - 1), u);
			for (char *p = url; *p; p++)
				if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
					*p = '?';
		}
		if (have_token)
			return hm_fail(ctx, HM_ERR_GATED, "the token has no access to gated %s: request access at %s",
				       what, url[0] ? url : "the repository's page on the hub");
		return hm_fail(ctx, HM_ERR_GATED, "%s is gated: request access at %s, then set HF_TOKEN", what,
			       url[0] ? url : "the repository's page on the hub");
	}
	if (r->status == 401 && r->www_authenticate && strcmp(code, "RepoNotFound"))
		/* a private mirror wants a token: its own words say so */
		return hm_fail(ctx, HM_ERR_AUTH, "%s: the server requires a token (HTTP 401)%s%s", what,
			       have_token ? ", and refused the one given" : "; set HF_TOKEN or save it in $HF_HOME/token",
			       msg);
	if (!strcmp(code, "RepoNotFound") || (!code[0] && r->status == 401 && !have_token))
		return hm_fail(ctx, HM_ERR_REPO_NOT_FOUND,
			       "%s not found: check the name and --repo-type%s", what,
			       have_token ? "" : "; if it is private, pass a token with --token or HF_TOKEN");
	if (!strcmp(code, "RevisionNotFound"))
		return hm_fail(ctx, HM_ERR_REV_NOT_FOUND, "revision not found for %s%s", what, msg);
	if (!strcmp(code, "EntryNotFound"))
		return hm_fail(ctx, HM_ERR_ENTRY_NOT_FOUND, "file not found: %s", what);
	if (r->status == 401 || r->status == 403)
		return hm_fail(ctx, HM_ERR_AUTH, "access to %s denied (HTTP %ld)%s%s", what, r->status,
			       have_token ? ": the token is invalid or has no access" : ": pass a token with --token or HF_TOKEN", msg);
	if (r->status == 429)
		return hm_fail(ctx, HM_ERR_RATE_LIMITED, "rate limited by the hub (HTTP 429) for %s: wait and try again, or use a token", what);
	if (r->status == 404)
		return hm_fail(ctx, HM_ERR_ENTRY_NOT_FOUND, "%s not found (HTTP 404)", what);
	return hm_fail(ctx, HM_ERR_HTTP, "unexpected HTTP %ld for %s%s", r->status, what, msg);
}
