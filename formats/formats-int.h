/* formats-int.h - pieces shared by the readers and writers of formats/. */
#ifndef FORMATS_INT_H
#define FORMATS_INT_H

#include <stddef.h>
#include <stdint.h>
#include "formats.h"

/* ==== used only inside formats/ (and by its unit and fuzz tests) ==== */

/* ---- safetensors dtypes ---- */

/* Bits per element (F4: 4, F6_*: 6, BF16: 16 ...); 0 out of range. */
unsigned fmt_dtype_bits(enum fmt_dtype d);
/* Parses a dtype name; returns 0, or -1 when unknown. */
int fmt_dtype_parse(const char *name, enum fmt_dtype *out);

/* ---- safetensors reader: one file (the public way in is a set, fmt_st_open_dir) ---- */

/* Maps and validates path. On success *out is the caller's (fmt_st_close). */
enum hm_err fmt_st_open(struct hm_ctx *ctx, const char *path, struct fmt_st **out) HM_MUST_CHECK;
/* Unmaps. Accepts NULL. */
void fmt_st_close(struct fmt_st *st);
const char *fmt_st_path(const struct fmt_st *st);
/* By name; NULL if absent. */
const struct fmt_st_tensor *fmt_st_find(const struct fmt_st *st, const char *name);
/* The value of a __metadata__ key; NULL if absent. */
const char *fmt_st_meta_get(const struct fmt_st *st, const char *key);
/* Size of the JSON header (N). */
uint64_t fmt_st_header_len(const struct fmt_st *st);

/* The index's metadata.total_size, or -1 when absent (or a single file). */
int64_t fmt_st_set_total_size(const struct fmt_st_set *set);

/* ---- safetensors writer ---- */

struct fmt_st_writer;

/* Starts writing path (a temp file beside it until _finish). */
enum hm_err fmt_st_writer_new(struct hm_ctx *ctx, const char *path, struct fmt_st_writer **out) HM_MUST_CHECK;
/* A __metadata__ entry (copied). Before the first _write. */
enum hm_err fmt_st_writer_meta(struct fmt_st_writer *w, const char *key, const char *value) HM_MUST_CHECK;
/* Declares the next tensor (copied); data follows in declaration order,
 * packed. Names are unique valid UTF-8, not "__metadata__". Before the first _write. */
enum hm_err fmt_st_writer_add(struct fmt_st_writer *w, const char *name, enum fmt_dtype dtype, int ndim,
			      const uint64_t *shape) HM_MUST_CHECK;
/* Appends n bytes of tensor data (any chunking; tensors back to back in
 * declaration order). The first call writes the header. */
enum hm_err fmt_st_writer_write(struct fmt_st_writer *w, const void *data, size_t n) HM_MUST_CHECK;
/* Checks every byte was written, fsyncs and renames into place. */
enum hm_err fmt_st_writer_finish(struct fmt_st_writer *w) HM_MUST_CHECK;
/* Frees; an unfinished file is removed. Accepts NULL. */
void fmt_st_writer_free(struct fmt_st_writer *w);

/* ---- GGUF ---- */

/* Parses a type name ("Q8_0"); 0 or -1. */
int fmt_ggml_type_parse(const char *name, uint32_t *out);

/* ==== internals of the readers and writers ==== */

/* Copies at most 96 of the n bytes of untrusted text s for a message into
 * buf (cap bytes), control bytes as '?', "..." when cut; returns buf. */
const char *fmt_shown(const char *s, size_t n, char *buf, size_t cap);

/* A read-only mapping of a whole file. */
struct fmt_map {
	const unsigned char *p; /* NULL for an empty file */
	uint64_t size;
	int in_memory;          /* fmt_map_to_memory moved it */
};
/* Maps path (a regular file). HM_ERR_IO with the message on ctx. */
enum hm_err fmt_map_open(struct hm_ctx *ctx, const char *path, struct fmt_map *m) HM_MUST_CHECK;
void fmt_map_close(struct fmt_map *m);
/* Moves the mapped file's bytes into private memory backed by transparent
 * huge pages, at the same addresses (the file's pages are let go chunk by
 * chunk, so the process holds about one copy). Streaming a model's weights
 * through 2 MiB pages misses the TLB 512 times less than through the page
 * cache's 4 KiB pages. Returns 1 when done; 0 (the mapping as it was) when
 * the kernel has no huge pages for it, the mapping is not 2 MiB-aligned, or
 * memory runs short. Copies on pool's threads when pool is not NULL. */
int fmt_map_to_memory(struct fmt_map *m, struct util_pool *pool);

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
