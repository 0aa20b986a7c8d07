/* formats-int.h - pieces shared by the readers and writers of formats/. */
#ifndef FORMATS_INT_H
#define FORMATS_INT_H

#include <stddef.h>
#include <stdint.h>
#include "formats.h"

/* A read-only mapping of a whole file. */
struct fmt_map {
	const unsigned char *p; /* NULL for an empty file */
	uint64_t size;
};
/* Maps path (a regular file). HM_ERR_IO with the message on ctx. */
enum hm_err fmt_map_open(struct hm_ctx *ctx, const char *path, struct fmt_map *m) HM_MUST_CHECK;
void fmt_map_close(struct fmt_map *m);

/* A reader over a mapping another parser validated (a torch zip): takes
 * map and t[0..n) with their malloc'd names, on error too (t itself is
 * malloc'd and taken). Every t[i].data must lie inside the mapping, with
 * t[i].data - t[i].file_offset its start. */
enum hm_err fmt_st_adopt(struct hm_ctx *ctx, const char *path, struct fmt_map *map, struct fmt_st_tensor *t,
			 size_t n, struct fmt_st **out) HM_MUST_CHECK;
/* A set of already open shards: takes shards[0..n) and names[0..n) (each
 * and the arrays, malloc'd), on error too. Tensor names must be unique
 * across shards. */
enum hm_err fmt_st_set_adopt(struct hm_ctx *ctx, struct fmt_st **shards, char **names, size_t n,
			     struct fmt_st_set **out) HM_MUST_CHECK;

/* An output file written through a temp file beside path. */
struct fmt_out {
	struct hm_ctx *ctx;
	char *path, *tmp;
	int fd;
	uint64_t written;
	uint64_t wb_from;   /* where the next writeback hint starts */
	unsigned char *buf; /* write buffer */
	size_t nbuf;
};
enum hm_err fmt_out_open(struct hm_ctx *ctx, const char *path, struct fmt_out *o) HM_MUST_CHECK;
enum hm_err fmt_out_write(struct fmt_out *o, const void *data, size_t n) HM_MUST_CHECK;
enum hm_err fmt_out_zeros(struct fmt_out *o, size_t n) HM_MUST_CHECK;
/* Writes out what is buffered and starts the disk writes of everything
 * written since the last call; *flushed (if not NULL) gets the size of the
 * file so far. */
enum hm_err fmt_out_flush(struct fmt_out *o, uint64_t *flushed) HM_MUST_CHECK;
/* Flushes, fsyncs, renames into place, syncs the directory. */
enum hm_err fmt_out_commit(struct fmt_out *o) HM_MUST_CHECK;
/* Closes and removes the temp file if not committed; frees. */
void fmt_out_release(struct fmt_out *o);


static inline uint64_t fmt_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}
static inline uint32_t fmt_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void fmt_put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}
static inline void fmt_put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

#endif
