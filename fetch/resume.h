/* resume.h - persisted byte ranges of a partial download (internal to fetch/). */
#ifndef FETCH_RESUME_H
#define FETCH_RESUME_H

#include <stddef.h>
#include <stdint.h>

struct fetch_range {
	uint64_t start, end; /* [start, end) is on disk */
};

#define FETCH_BOOT_ID_MAX 64

/* The machine's boot id (/proc/sys/kernel/random/boot_id), "" if unknown. */
void fetch_boot_id(char out[FETCH_BOOT_ID_MAX]);

/* Writes the state atomically: `done` ranges were fdatasync'd before this
 * call, `written` ranges were written (in the page cache: they survive a
 * crash of the process, not of the machine), both under the boot id. With
 * durable the file is fsync'd (util_write_file_atomic), else only renamed
 * into place. Returns 0 or -1 (errno). */
int fetch_state_save(const char *path, uint64_t size, const char *boot, const struct fetch_range *done,
		     size_t ndone, const struct fetch_range *written, size_t nwritten, int durable);
/* Reads a state written for a file of this size: the written ranges when
 * it was written under this boot id, else only the synced ones; sorted,
 * non-overlapping, in-bounds. Returns -1 when missing or not trustworthy
 * (start over). *out is owned by the caller (free). */
int fetch_state_load(const char *path, uint64_t size, const char *boot, struct fetch_range **out, size_t *n);

#endif
