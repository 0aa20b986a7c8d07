/* resume.c - the resume state of a partial download: which byte ranges of
 * the part file are on disk. Two lists: ranges fdatasync'd before they were
 * recorded (they survive a reboot), and ranges written (they survive a
 * kill -9 of the process, since the page cache keeps them, but not a
 * reboot), tagged with the boot id. A text file, replaced atomically, read
 * back with every bound checked. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fetch.h"
#include "resume.h"
#include "../util/util.h"

#define STATE_MAX_BYTES (1u << 20)
#define STATE_MAX_RANGES 4096

void fetch_boot_id(char out[FETCH_BOOT_ID_MAX])
{
	char *data = NULL;
	size_t len = 0, j = 0;
	out[0] = 0;
	if (util_read_file("/proc/sys/kernel/random/boot_id", 256, &data, &len))
		return;
	for (size_t i = 0; i < len && j + 1 < FETCH_BOOT_ID_MAX; i++)
		if ((data[i] >= '0' && data[i] <= '9') || (data[i] >= 'a' && data[i] <= 'f') || data[i] == '-')
			out[j++] = data[i];
	out[j] = 0;
	free(data);
}

/* Replaces path with data: write a temp file, rename it (no fsync). */
static int write_quick(const char *path, const void *data, size_t n)
{
	char *tmp = util_asprintf("%s.w", path);
	int fd, rc = -1;
	if (!tmp)
		return -1;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		const char *p = data;
		size_t left = n;
		while (left) {
			ssize_t w = write(fd, p, left);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			p += w;
			left -= (size_t)w;
		}
		if (close(fd) == 0 && !left && rename(tmp, path) == 0)
			rc = 0;
		else
			unlink(tmp);
	}
	free(tmp);
	return rc;
}

int fetch_state_save(const char *path, uint64_t size, const char *boot, const struct fetch_range *done,
		     size_t ndone, const struct fetch_range *written, size_t nwritten, int durable)
{
	struct util_buf b = UTIL_BUF_INIT;
	int rc = -1;
	if (util_buf_printf(&b, "hubmirror-partial 2\nsize %llu\n", (unsigned long long)size))
		goto out;
	if (boot && *boot && util_buf_printf(&b, "boot %s\n", boot))
		goto out;
	for (size_t i = 0; i < ndone; i++)
		if (done[i].end > done[i].start &&
		    util_buf_printf(&b, "done %llu %llu\n", (unsigned long long)done[i].start,
				    (unsigned long long)done[i].end))
			goto out;
	for (size_t i = 0; i < nwritten; i++)
		if (written[i].end > written[i].start &&
		    util_buf_printf(&b, "written %llu %llu\n", (unsigned long long)written[i].start,
				    (unsigned long long)written[i].end))
			goto out;
	rc = durable ? util_write_file_atomic(path, b.buf, b.len) : write_quick(path, b.buf, b.len);
out:
	util_buf_release(&b);
	return rc;
}

static int cmp_range(const void *a, const void *b)
{
	const struct fetch_range *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* Sorts and checks a list: in bounds, disjoint. */
static int check_ranges(struct fetch_range *r, size_t n)
{
	qsort(r, n, sizeof(*r), cmp_range);
	for (size_t i = 1; i < n; i++)
		if (r[i].start < r[i - 1].end)
			return -1; /* overlapping ranges: not ours */
	return 0;
}

int fetch_state_load(const char *path, uint64_t size, const char *boot, struct fetch_range **out, size_t *n)
{
	char *data = NULL, *line, *save = NULL;
	size_t len, nd = 0, nw = 0;
	struct fetch_range *d = NULL, *w = NULL;
	char sboot[FETCH_BOOT_ID_MAX] = "";
	int rc = -1, first = 1, have_size = 0, version = 0;

	*out = NULL;
	*n = 0;
	if (util_read_file(path, STATE_MAX_BYTES, &data, &len))
		return -1;
	d = calloc(STATE_MAX_RANGES, sizeof(*d));
	w = calloc(STATE_MAX_RANGES, sizeof(*w));
	if (!d || !w)
		goto out;
	for (line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned long long a, b;
		char tail;
		if (first) {
			if (!strcmp(line, "hubmirror-partial 1"))
				version = 1;
			else if (!strcmp(line, "hubmirror-partial 2"))
				version = 2;
			else
				goto out;
			first = 0;
		} else if (sscanf(line, "size %llu%c", &a, &tail) == 1) {
			if (a != size)
				goto out;
			have_size = 1;
		} else if (version == 2 && !strncmp(line, "boot ", 5)) {
			if (strlen(line + 5) >= sizeof(sboot))
				goto out;
			strcpy(sboot, line + 5);
		} else if (sscanf(line, "done %llu %llu%c", &a, &b, &tail) == 2) {
			if (a >= b || b > size || nd == STATE_MAX_RANGES)
				goto out;
			d[nd++] = (struct fetch_range){a, b};
		} else if (version == 2 && sscanf(line, "written %llu %llu%c", &a, &b, &tail) == 2) {
			if (a >= b || b > size || nw == STATE_MAX_RANGES)
				goto out;
			w[nw++] = (struct fetch_range){a, b};
		} else {
			goto out;
		}
	}
	if (first || !have_size || check_ranges(d, nd) || check_ranges(w, nw))
		goto out;
	if (nw && sboot[0] && boot && !strcmp(sboot, boot)) {
		/* the same boot: what was written is still in the page cache */
		*out = w;
		*n = nw;
		w = NULL;
	} else {
		*out = d;
		*n = nd;
		d = NULL;
	}
	rc = 0;
out:
	free(d);
	free(w);
	free(data);
	return rc;
}

int fetch_resume_adopt(const char *state_path, uint64_t size, const uint64_t *ranges, size_t n)
{
	char boot[FETCH_BOOT_ID_MAX];
	struct fetch_range *r = n ? calloc(n, sizeof(*r)) : NULL;
	int rc;
	if (n && !r)
		return -1;
	for (size_t i = 0; i < n; i++) {
		r[i].start = ranges[2 * i];
		r[i].end = ranges[2 * i + 1];
		if (r[i].start >= r[i].end || r[i].end > size || (i && r[i].start < r[i - 1].end)) {
			free(r);
			errno = EINVAL;
			return -1;
		}
	}
	fetch_boot_id(boot);
	rc = fetch_state_save(state_path, size, boot, NULL, 0, r, n, 1);
	free(r);
	return rc;
}
