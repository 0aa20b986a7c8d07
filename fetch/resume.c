/* resume.c - the resume state of a partial download: which byte ranges of
 * the part file are on disk (fdatasync'd before they are recorded). A text
 * file, rewritten atomically, read back with every bound checked. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "resume.h"
#include "../util/util.h"

#define STATE_MAX_BYTES (1u << 20)
#define STATE_MAX_RANGES 4096

int fetch_state_save(const char *path, uint64_t size, const struct fetch_range *r, size_t n)
{
	struct util_buf b = UTIL_BUF_INIT;
	int rc = -1;
	if (util_buf_printf(&b, "hubmirror-partial 1\nsize %llu\n", (unsigned long long)size))
		goto out;
	for (size_t i = 0; i < n; i++)
		if (r[i].end > r[i].start &&
		    util_buf_printf(&b, "done %llu %llu\n", (unsigned long long)r[i].start,
				    (unsigned long long)r[i].end))
			goto out;
	rc = util_write_file_atomic(path, b.buf, b.len);
out:
	util_buf_release(&b);
	return rc;
}

static int cmp_range(const void *a, const void *b)
{
	const struct fetch_range *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

int fetch_state_load(const char *path, uint64_t size, struct fetch_range **out, size_t *n)
{
	char *data = NULL, *line, *save = NULL;
	size_t len, cnt = 0;
	struct fetch_range *r = NULL;
	int rc = -1, first = 1, have_size = 0;

	*out = NULL;
	*n = 0;
	if (util_read_file(path, STATE_MAX_BYTES, &data, &len))
		return -1;
	r = calloc(STATE_MAX_RANGES, sizeof(*r));
	if (!r)
		goto out;
	for (line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned long long a, b;
		char tail;
		if (first) {
			if (strcmp(line, "hubmirror-partial 1"))
				goto out;
			first = 0;
		} else if (sscanf(line, "size %llu%c", &a, &tail) == 1) {
			if (a != size)
				goto out;
			have_size = 1;
		} else if (sscanf(line, "done %llu %llu%c", &a, &b, &tail) == 2) {
			if (a >= b || b > size || cnt == STATE_MAX_RANGES)
				goto out;
			r[cnt].start = a;
			r[cnt].end = b;
			cnt++;
		} else {
			goto out;
		}
	}
	if (first || !have_size)
		goto out;
	qsort(r, cnt, sizeof(*r), cmp_range);
	for (size_t i = 1; i < cnt; i++)
		if (r[i].start < r[i - 1].end)
			goto out; /* overlapping ranges: not ours */
	*out = r;
	*n = cnt;
	r = NULL;
	rc = 0;
out:
	free(r);
	free(data);
	return rc;
}
