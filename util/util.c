/* util.c - buffers, strings, hex, untrusted-name validation, globbing, time. */
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "util.h"

/* Grows b so that n more bytes plus the NUL fit; the buffer is untouched on failure. */
static int buf_grow(struct util_buf *b, size_t n)
{
	size_t want, cap;
	char *p;
	if (n > SIZE_MAX - b->len - 1)
		return -1;
	want = b->len + n + 1;
	if (want <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < want)
		cap = cap > SIZE_MAX / 2 ? want : cap * 2;
	p = realloc(b->buf, cap);
	if (!p)
		return -1;
	b->buf = p;
	b->cap = cap;
	return 0;
}

int util_buf_add(struct util_buf *b, const void *data, size_t n)
{
	if (buf_grow(b, n) < 0)
		return -1;
	if (n)
		memcpy(b->buf + b->len, data, n);
	b->len += n;
	b->buf[b->len] = '\0';
	return 0;
}

int util_buf_adds(struct util_buf *b, const char *s)
{
	return util_buf_add(b, s, strlen(s));
}

int util_buf_printf(struct util_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;
	char probe[1];

	va_start(ap, fmt);
	n = vsnprintf(probe, sizeof(probe), fmt, ap);
	va_end(ap);
	if (n < 0 || buf_grow(b, (size_t)n) < 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

char *util_buf_detach(struct util_buf *b)
{
	char *s = b->buf;
	if (!s)
		s = calloc(1, 1); /* callers expect a string even when nothing was added */
	b->buf = NULL;
	b->len = b->cap = 0;
	return s;
}

void util_buf_release(struct util_buf *b)
{
	free(b->buf);
	b->buf = NULL;
	b->len = b->cap = 0;
}

char *util_strdup(const char *s)
{
	return s ? util_strndup(s, strlen(s)) : NULL;
}

char *util_strndup(const char *s, size_t n)
{
	char *p;
	size_t len = strnlen(s, n);
	p = malloc(len + 1);
	if (!p)
		return NULL;
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

char *util_asprintf(const char *fmt, ...)
{
	va_list ap;
	int n;
	char *p;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	p = malloc((size_t)n + 1);
	if (!p)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

void util_hex(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

int util_is_hex(const char *s, size_t n)
{
	if (!s)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[n] == '\0';
}

long util_utf8_next(const unsigned char *s, size_t n, size_t *len)
{
	unsigned c = s[0];
	long cp;
	size_t k;
	if (c < 0x80) {
		*len = 1;
		return c;
	}
	if (c >= 0xc2 && c <= 0xdf)
		k = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		k = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		k = 4, cp = c & 0x07;
	else {
		*len = 1;
		return -1;
	}
	if (k > n) {
		*len = 1;
		return -1;
	}
	for (size_t i = 1; i < k; i++) {
		if ((s[i] & 0xc0) != 0x80) {
			*len = 1;
			return -1;
		}
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	*len = k;
	if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff)) {
		*len = 1;
		return -1;
	}
	return cp;
}

int util_utf8_valid(const unsigned char *s, size_t n)
{
	size_t len;
	for (size_t i = 0; i < n; i += len)
		if (util_utf8_next(s + i, n - i, &len) < 0)
			return 0;
	return 1;
}

int util_path_is_safe(const char *path)
{
	const unsigned char *s = (const unsigned char *)path;
	const unsigned char *comp = s;
	size_t len;

	if (!path || !*path || *path == '/')
		return 0;
	len = strnlen(path, 4097);
	if (len > 4096)
		return 0;
	for (const unsigned char *p = s;; ) {
		if (*p == '/' || *p == '\0') {
			size_t clen = (size_t)(p - comp);
			if (clen == 0)
				return 0;
			if (clen == 1 && comp[0] == '.')
				return 0;
			if (clen == 2 && comp[0] == '.' && comp[1] == '.')
				return 0;
			/* a checkout must never plant git metadata (hooks, config) */
			if (clen == 4 && !strncasecmp((const char *)comp, ".git", 4))
				return 0;
			if (*p == '\0')
				return 1;
			comp = ++p;
			continue;
		}
		if (*p < 0x20 || *p == 0x7f || *p == '\\')
			return 0;
		size_t n;
		if (util_utf8_next(p, strnlen((const char *)p, 4), &n) < 0)
			n = 0;
		if (!n)
			return 0;
		p += n;
	}
}

/* One part of a repo id: 1..96 of [A-Za-z0-9._-], no '-'/'.' at the edges,
 * no "--" (the HF cache uses it as the org/name separator) and no "..". */
static int repo_part_ok(const char *s, size_t n)
{
	if (n < 1 || n > 96)
		return 0;
	if (s[0] == '-' || s[0] == '.' || s[n - 1] == '-' || s[n - 1] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
		if (i > 0 && (c == '-' || c == '.') && s[i - 1] == c)
			return 0;
	}
	return 1;
}

int util_repo_id_is_valid(const char *id)
{
	const char *slash;
	if (!id)
		return 0;
	slash = strchr(id, '/');
	if (!slash)
		return repo_part_ok(id, strlen(id));
	if (strchr(slash + 1, '/'))
		return 0;
	return repo_part_ok(id, (size_t)(slash - id)) && repo_part_ok(slash + 1, strlen(slash + 1));
}

int util_glob_match(const char *pattern, const char *path)
{
	size_t n;
	int r;
	char *p;

	if (!pattern || !path)
		return 0;
	n = strlen(pattern);
	/* huggingface_hub appends a star to a pattern ending in a slash. */
	if (n && pattern[n - 1] == '/') {
		p = util_asprintf("%s*", pattern);
		if (!p)
			return 0;
		r = util_glob_match(p, path);
		free(p);
		return r;
	}
	/* No FNM_PATHNAME: '*' crosses '/', no FNM_PERIOD: '*' matches a leading
	 * dot, FNM_NOESCAPE: Python's fnmatch has no escapes. */
	return fnmatch(pattern, path, FNM_NOESCAPE) == 0;
}

const char *util_human_size(uint64_t n, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)n;
	size_t u = 0;
	if (n < 1024) {
		snprintf(buf, len, "%llu B", (unsigned long long)n);
		return buf;
	}
	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

double util_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void util_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, long ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(cv, mu, &ts);
}

int64_t util_unix_time(void)
{
	return (int64_t)time(NULL);
}

size_t util_json_depth(const char *buf, size_t len)
{
	size_t depth = 0, max = 0;
	int in_str = 0;
	for (size_t i = 0; i < len; i++) {
		char c = buf[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
		} else if (c == '"') {
			in_str = 1;
		} else if (c == '[' || c == '{') {
			if (++depth > max)
				max = depth;
		} else if ((c == ']' || c == '}') && depth) {
			depth--;
		}
	}
	return max;
}
