/* resume.h - persisted byte ranges of a partial download (internal to fetch/). */
#ifndef FETCH_RESUME_H
#define FETCH_RESUME_H

#include <stddef.h>
#include <stdint.h>

struct fetch_range {
	uint64_t start, end; /* [start, end) is on disk */
};

/* Writes the state atomically. Returns 0 or -1 (errno). */
int fetch_state_save(const char *path, uint64_t size, const struct fetch_range *r, size_t n);
/* Reads a state written for a file of this size: sorted, non-overlapping,
 * in-bounds ranges. Returns -1 when missing or not trustworthy (start over).
 * *out is owned by the caller (free). */
int fetch_state_load(const char *path, uint64_t size, struct fetch_range **out, size_t *n);

#endif
