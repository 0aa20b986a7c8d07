/* util.h - small shared pieces: buffers, strings, paths, files, globbing. */
#ifndef UTIL_H
#define UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include "hm.h"

/* Growable byte buffer (git's strbuf). buf is always NUL-terminated. */
struct util_buf {
	char *buf;
	size_t len, cap;
};
#define UTIL_BUF_INIT {NULL, 0, 0}
/* All return 0, or -1 when out of memory (the buffer is left as it was). */
int util_buf_add(struct util_buf *b, const void *data, size_t n) HM_MUST_CHECK;
int util_buf_adds(struct util_buf *b, const char *s) HM_MUST_CHECK;
int util_buf_printf(struct util_buf *b, const char *fmt, ...) HM_PRINTF(2, 3) HM_MUST_CHECK;
/* Hands the string to the caller (who frees it) and resets the buffer. */
char *util_buf_detach(struct util_buf *b);
void util_buf_release(struct util_buf *b);

/* xmalloc-style helpers: return NULL on failure, never abort. */
char *util_strdup(const char *s);
char *util_strndup(const char *s, size_t n);
char *util_asprintf(const char *fmt, ...) HM_PRINTF(1, 2);

/* Hex encoding: out must hold 2*n+1. */
void util_hex(const unsigned char *in, size_t n, char *out);
/* 1 when s is exactly n lowercase hex digits. */
int util_is_hex(const char *s, size_t n);
/* Decodes the UTF-8 sequence at s (n > 0 bytes left) into *len bytes: its
 * code point, or -1 with *len = 1 for an invalid one (RFC 3629: no
 * overlongs, surrogates or code points past U+10FFFF; cut short). The one
 * UTF-8 reader of the tree. */
long util_utf8_next(const unsigned char *s, size_t n, size_t *len);
/* 1 when s[0..n) is valid UTF-8 (as util_utf8_next reads it). */
int util_utf8_valid(const unsigned char *s, size_t n);

/* Validates a repository-relative path from an untrusted source (hub tree,
 * archive, URL): non-empty, relative, no "." / ".." / empty components, no
 * backslash, no control bytes, no ".git" component, valid UTF-8, at most
 * 4096 bytes. Returns 1 if safe. */
int util_path_is_safe(const char *path);
/* Validates a repo id: "name" or "org/name", [A-Za-z0-9._-], no "--" or ".."
 * at the edges, at most 96 chars per part. Returns 1 if valid. */
int util_repo_id_is_valid(const char *id);

/* mkdir -p; mode for created dirs. Returns 0 or -1 with errno. */
int util_mkdir_p(const char *path, mode_t mode);
/* Creates the parent directories of a file path. */
int util_mkdir_parents(const char *path, mode_t mode);
/* fsync a directory by path (after rename). */
int util_fsync_dir(const char *dir);
/* Write a whole file atomically: tmp in the same dir, fsync, rename. */
int util_write_file_atomic(const char *path, const void *data, size_t n);
/* Reads a whole file (at most max bytes) into *out (caller frees); -1 on error/too big. */
int util_read_file(const char *path, size_t max, char **out, size_t *len);
/* Monotonic seconds, and wall-clock unix seconds. */
double util_now(void);
/* pthread_cond_timedwait for at most ms milliseconds from now (mu held). */
void util_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, long ms);
int64_t util_unix_time(void);

/* Glob match for include/exclude patterns, like huggingface_hub's fnmatch:
 * '*' also matches '/', so "*.json" matches "a/b.json". Returns 1 on match. */
int util_glob_match(const char *pattern, const char *path);

/* Human-readable size ("1.5 GiB") into buf. */
const char *util_human_size(uint64_t n, char *buf, size_t len);

/* The deepest nesting of arrays and objects in the JSON text buf[0..len)
 * (brackets inside strings do not count). jansson parses and frees
 * recursively, up to 2048 levels: a thread with a small stack checks the
 * depth of untrusted JSON first. */
size_t util_json_depth(const char *buf, size_t len);

#endif
