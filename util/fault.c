/* fault.c - fault injection for tests: fails the Nth write, fsync, rename or
 * malloc that hubmirror's own code makes (SQLite's and jq's habit of
 * simulated I/O and allocation failures, so the ENOSPC and out-of-memory
 * paths get run at all).
 *
 * The Makefile links every program with -Wl,--wrap=write,... (FAULT_WRAP),
 * so calls from hubmirror's objects reach the __wrap_ functions below and
 * calls inside shared libraries (libc's stdio, SQLite, libcurl) do not.
 * Nothing outside this file refers to it: a program linked without the wrap
 * flags never pulls it out of libhubmirror.a.
 *
 *   HUBMIRROR_FAULT=write:N    the Nth write()/pwrite() fails with ENOSPC
 *   HUBMIRROR_FAULT=fsync:N    the Nth fsync()/fdatasync()/syncfs() fails with EIO
 *   HUBMIRROR_FAULT=rename:N   the Nth rename() fails with ENOSPC
 *   HUBMIRROR_FAULT=malloc:N   the Nth malloc/calloc/realloc/strdup/strndup
 *                              returns NULL (ENOMEM)
 *   HUBMIRROR_FAULT=count      nothing fails; only counts
 *   HUBMIRROR_FAULT_LOG=FILE   at exit, append one line to FILE:
 *                              "write=N fsync=N rename=N malloc=N fired=0|1"
 *
 * One call fails, the ones after it succeed again (a transient ENOSPC). The
 * counters are process-wide and atomic; the settings are read once, before
 * main(), and never change, so the wrappers need no lock. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum fault_kind { F_WRITE, F_FSYNC, F_RENAME, F_MALLOC, F_NKINDS };

static const char *const fault_names[F_NKINDS] = { "write", "fsync", "rename", "malloc" };

/* Written once by fault_init() before main(); read-only afterwards. */
static int fault_on;		/* HUBMIRROR_FAULT is set */
static int fault_kind = -1;	/* which kind fails, -1: none (count only) */
static unsigned long fault_nth;
static atomic_ulong fault_calls[F_NKINDS];
static atomic_int fault_fired;

ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __real_pwrite(int fd, const void *buf, size_t n, off_t off);
int __real_fsync(int fd);
int __real_fdatasync(int fd);
int __real_syncfs(int fd);
int __real_rename(const char *from, const char *to);
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);

ssize_t __wrap_write(int fd, const void *buf, size_t n);
ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off);
int __wrap_fsync(int fd);
int __wrap_fdatasync(int fd);
int __wrap_syncfs(int fd);
int __wrap_rename(const char *from, const char *to);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

__attribute__((constructor)) static void fault_init(void)
{
	const char *v = getenv("HUBMIRROR_FAULT");
	if (!v || !*v)
		return;
	fault_on = 1;
	for (int k = 0; k < F_NKINDS; k++) {
		size_t len = strlen(fault_names[k]);
		if (strncmp(v, fault_names[k], len) == 0 && v[len] == ':') {
			char *end;
			unsigned long n = strtoul(v + len + 1, &end, 10);
			if (*end == '\0' && n > 0) {
				fault_kind = k;
				fault_nth = n;
			}
		}
	}
}

__attribute__((destructor)) static void fault_report(void)
{
	const char *log = getenv("HUBMIRROR_FAULT_LOG");
	if (!fault_on || !log || !*log)
		return;
	FILE *f = fopen(log, "a");
	if (!f)
		return;
	fprintf(f, "write=%lu fsync=%lu rename=%lu malloc=%lu fired=%d\n",
		atomic_load(&fault_calls[F_WRITE]), atomic_load(&fault_calls[F_FSYNC]),
		atomic_load(&fault_calls[F_RENAME]), atomic_load(&fault_calls[F_MALLOC]),
		atomic_load(&fault_fired));
	fclose(f);
}

/* Counts one call of kind k; true when this is the call that must fail
 * (errno is then set to err). */
static int fault_hit(int k, int err)
{
	if (!fault_on)
		return 0;
	unsigned long n = atomic_fetch_add(&fault_calls[k], 1) + 1;
	if (k != fault_kind || n != fault_nth)
		return 0;
	atomic_store(&fault_fired, 1);
	errno = err;
	return 1;
}

ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
	return fault_hit(F_WRITE, ENOSPC) ? -1 : __real_write(fd, buf, n);
}

ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	return fault_hit(F_WRITE, ENOSPC) ? -1 : __real_pwrite(fd, buf, n, off);
}

int __wrap_fsync(int fd)
{
	return fault_hit(F_FSYNC, EIO) ? -1 : __real_fsync(fd);
}

int __wrap_fdatasync(int fd)
{
	return fault_hit(F_FSYNC, EIO) ? -1 : __real_fdatasync(fd);
}

int __wrap_syncfs(int fd)
{
	return fault_hit(F_FSYNC, EIO) ? -1 : __real_syncfs(fd);
}

int __wrap_rename(const char *from, const char *to)
{
	return fault_hit(F_RENAME, ENOSPC) ? -1 : __real_rename(from, to);
}

void *__wrap_malloc(size_t n)
{
	return fault_hit(F_MALLOC, ENOMEM) ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return fault_hit(F_MALLOC, ENOMEM) ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
	return fault_hit(F_MALLOC, ENOMEM) ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
	return fault_hit(F_MALLOC, ENOMEM) ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return fault_hit(F_MALLOC, ENOMEM) ? NULL : __real_strndup(s, n);
}
