/* common.c - file mapping, atomic streamed output, UTF-8 checks, and the
 * dtype tables of safetensors and ggml. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../util/pool.h"
#include "../util/util.h"
#include "formats-int.h"

#define OUT_BUF (1u << 20)
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

enum hm_err fmt_map_open(struct hm_ctx *ctx, const char *path, struct fmt_map *m)
{
	struct stat st;
	int fd;
	m->p = NULL;
	m->size = 0;
	m->in_memory = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hm_fail(ctx, errno == ENOENT ? HM_ERR_NOT_FOUND : HM_ERR_IO, "cannot open '%s': %s", path,
			       strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int e = errno;
		close(fd);
		return hm_fail(ctx, HM_ERR_IO, "cannot read '%s': %s", path,
			       S_ISDIR(st.st_mode) ? "is a directory" : e ? strerror(e) : "not a regular file");
	}
	m->size = (uint64_t)st.st_size;
	if (m->size > SIZE_MAX) {
		close(fd);
		return hm_fail(ctx, HM_ERR_IO, "cannot map '%s': too big", path);
	}
	if (m->size) {
		void *p = mmap(NULL, (size_t)m->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED) {
			int e = errno;
			close(fd);
			return hm_fail(ctx, HM_ERR_IO, "cannot map '%s': %s", path, strerror(e));
		}
		m->p = p;
	}
	close(fd);
	return HM_OK;
}

/* The kernel's transparent huge pages are on for memory that asks. */
static int thp_available(void)
{
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

#define TO_MEMORY_CHUNK ((size_t)16 << 20)

struct to_memory {
	const unsigned char *src;
	unsigned char *dst;
	size_t size, pg;
};

/* Chunk i: the file's pages mapped in one call (not a fault a page),
 * copied, then let go. */
static void to_memory_task(void *arg, size_t i, int worker)
{
	const struct to_memory *j = arg;
	size_t off = i * TO_MEMORY_CHUNK, n = j->size - off < TO_MEMORY_CHUNK ? j->size - off : TO_MEMORY_CHUNK;
	size_t np = (n + j->pg - 1) / j->pg * j->pg;
	(void)worker;
	(void)madvise((void *)(j->src + off), np, MADV_POPULATE_READ);
	memcpy(j->dst + off, j->src + off, n);
	(void)madvise((void *)(j->src + off), np, MADV_DONTNEED);
}

int fmt_map_to_memory(struct fmt_map *m, struct util_pool *pool)
{
	const size_t huge = (size_t)2 << 20;
	long pg = sysconf(_SC_PAGESIZE);
	if (m->in_memory)
		return 1;
	if (!m->p || pg <= 0 || (uintptr_t)m->p % huge || !thp_available())
		return 0;
	const size_t len = ((size_t)m->size + (size_t)pg - 1) / (size_t)pg * (size_t)pg;
	/* 2 MiB-aligned anonymous memory: over-allocate, trim both ends */
	unsigned char *raw = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return 0;
	unsigned char *a = (unsigned char *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
	if (a > raw)
		munmap(raw, (size_t)(a - raw));
	if (raw + len + huge > a + len)
		munmap(a + len, (size_t)(raw + len + huge - (a + len)));
	(void)madvise(a, len, MADV_HUGEPAGE);
	/* chunk by chunk, each chunk of the file mapping let go once copied:
	 * the process never holds much more than one copy */
	struct to_memory j = {m->p, a, (size_t)m->size, (size_t)pg};
	size_t n = ((size_t)m->size + TO_MEMORY_CHUNK - 1) / TO_MEMORY_CHUNK;
	if (pool)
		util_pool_run(pool, to_memory_task, &j, n);
	else
		for (size_t i = 0; i < n; i++)
			to_memory_task(&j, i, 0);
	if (mprotect(a, len, PROT_READ) != 0 ||
	    mremap(a, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)m->p) == MAP_FAILED) {
		munmap(a, len); /* the file mapping is still there (pages come back from the page cache) */
		return 0;
	}
	m->in_memory = 1;
	return 1;
}

void fmt_map_close(struct fmt_map *m)
{
	if (m && m->p)
		munmap((void *)m->p, (size_t)m->size);
	if (m) {
		m->p = NULL;
		m->size = 0;
		m->in_memory = 0;
	}
}

enum hm_err fmt_out_open(struct hm_ctx *ctx, const char *path, struct fmt_out *o)
{
	memset(o, 0, sizeof(*o));
	o->ctx = ctx;
	o->fd = -1;
	o->path = util_strdup(path);
	o->tmp = util_asprintf("%s.tmp-XXXXXX", path);
	o->buf = malloc(OUT_BUF);
	if (!o->path || !o->tmp || !o->buf)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	o->fd = mkstemp(o->tmp);
	if (o->fd < 0) {
		int e = errno;
		free(o->tmp);
		o->tmp = NULL;
		return hm_fail(ctx, e == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO, "cannot create '%s': %s", path, strerror(e));
	}
	if (fchmod(o->fd, 0644) < 0)
		return hm_fail(ctx, HM_ERR_IO, "cannot chmod '%s': %s", o->tmp, strerror(errno));
	return HM_OK;
}

/* The most one write() hands the kernel. Multi-megabyte writes of fresh
 * page cache were 2-3x slower than 256 KiB ones on the Linux 6.18 / ext4
 * machine bench/convert.sh ran on (medians 4.9 s vs 1.5 s for a 2.2 GB
 * output, interleaved runs); 64-128 KiB gained nothing more. */
#define WRITE_MAX (256u << 10)

static enum hm_err write_all(struct fmt_out *o, const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = write(o->fd, p, n < WRITE_MAX ? n : WRITE_MAX);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return hm_fail(o->ctx, errno == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO, "cannot write '%s': %s",
				       o->path, strerror(errno));
		}
		p += w;
		n -= (size_t)w;
	}
	return HM_OK;
}

static enum hm_err out_flush(struct fmt_out *o)
{
	enum hm_err err = write_all(o, o->buf, o->nbuf);
	o->nbuf = 0;
	return err;
}

enum hm_err fmt_out_write(struct fmt_out *o, const void *data, size_t n)
{
	const unsigned char *p = data;
	enum hm_err err;
	while (n) {
		size_t k;
		if (!o->nbuf && n >= OUT_BUF) {
			/* large writes go straight from the caller's buffer */
			if ((err = write_all(o, p, n)))
				return err;
			o->written += n;
			return HM_OK;
		}
		k = OUT_BUF - o->nbuf < n ? OUT_BUF - o->nbuf : n;
		memcpy(o->buf + o->nbuf, p, k);
		o->nbuf += k;
		o->written += k;
		p += k;
		n -= k;
		if (o->nbuf == OUT_BUF && (err = out_flush(o)))
			return err;
	}
	return HM_OK;
}

enum hm_err fmt_out_flush(struct fmt_out *o, uint64_t *flushed)
{
	enum hm_err err = out_flush(o);
	if (err)
		return err;
#ifdef SYNC_FILE_RANGE_WRITE
	/* start the disk writes now, so that the fsync at the end has little
	 * left to wait for (a hint: failures show at that fsync) */
	if (o->written > o->wb_from) {
		(void)sync_file_range(o->fd, (off_t)o->wb_from, (off_t)(o->written - o->wb_from), SYNC_FILE_RANGE_WRITE);
		o->wb_from = o->written;
	}
#endif
	if (flushed)
		*flushed = o->written;
	return HM_OK;
}

enum hm_err fmt_out_zeros(struct fmt_out *o, size_t n)
{
	static const unsigned char zeros[256];
	enum hm_err err;
	while (n) {
		size_t k = n < sizeof(zeros) ? n : sizeof(zeros);
		if ((err = fmt_out_write(o, zeros, k)))
			return err;
		n -= k;
	}
	return HM_OK;
}

enum hm_err fmt_out_commit(struct fmt_out *o)
{
	enum hm_err err;
	char *slash, *dir;
	if ((err = out_flush(o)))
		return err;
	{
		int rc = fsync(o->fd), e = errno;
		if (close(o->fd) < 0 && rc == 0) {
			rc = -1;
			e = errno;
		}
		o->fd = -1; /* closed either way */
		if (rc < 0)
			return hm_fail(o->ctx, e == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO, "cannot write '%s': %s", o->path,
				       strerror(e));
	}
	if (rename(o->tmp, o->path) < 0)
		return hm_fail(o->ctx, HM_ERR_IO, "cannot rename to '%s': %s", o->path, strerror(errno));
	free(o->tmp);
	o->tmp = NULL;
	slash = strrchr(o->path, '/');
	dir = slash ? util_strndup(o->path, slash == o->path ? 1 : (size_t)(slash - o->path)) : util_strdup(".");
	if (dir && util_fsync_dir(dir) < 0) {
		free(dir);
		return hm_fail(o->ctx, HM_ERR_IO, "cannot sync the directory of '%s': %s", o->path, strerror(errno));
	}
	free(dir);
	return HM_OK;
}

void fmt_out_release(struct fmt_out *o)
{
	if (o->fd >= 0)
		close(o->fd);
	if (o->tmp)
		unlink(o->tmp);
	free(o->tmp);
	free(o->path);
	free(o->buf);
	memset(o, 0, sizeof(*o));
	o->fd = -1;
}

/* ---- safetensors dtypes ---- */

static const struct {
	const char *name;
	unsigned bits;
} st_dtypes[FMT_DTYPE__COUNT] = {
	[FMT_BOOL] = {"BOOL", 8}, [FMT_F4] = {"F4", 4}, [FMT_F6_E2M3] = {"F6_E2M3", 6},
	[FMT_F6_E3M2] = {"F6_E3M2", 6}, [FMT_U8] = {"U8", 8}, [FMT_I8] = {"I8", 8},
	[FMT_F8_E5M2] = {"F8_E5M2", 8}, [FMT_F8_E4M3] = {"F8_E4M3", 8}, [FMT_F8_E8M0] = {"F8_E8M0", 8},
	[FMT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8}, [FMT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
	[FMT_I16] = {"I16", 16}, [FMT_U16] = {"U16", 16}, [FMT_F16] = {"F16", 16}, [FMT_BF16] = {"BF16", 16},
	[FMT_I32] = {"I32", 32}, [FMT_U32] = {"U32", 32}, [FMT_F32] = {"F32", 32}, [FMT_C64] = {"C64", 64},
	[FMT_F64] = {"F64", 64}, [FMT_I64] = {"I64", 64}, [FMT_U64] = {"U64", 64},
};

const char *fmt_dtype_name(enum fmt_dtype d)
{
	return (unsigned)d < FMT_DTYPE__COUNT ? st_dtypes[d].name : NULL;
}

unsigned fmt_dtype_bits(enum fmt_dtype d)
{
	return (unsigned)d < FMT_DTYPE__COUNT ? st_dtypes[d].bits : 0;
}

int fmt_dtype_parse(const char *name, enum fmt_dtype *out)
{
	for (int i = 0; i < FMT_DTYPE__COUNT; i++)
		if (!strcmp(st_dtypes[i].name, name)) {
			*out = (enum fmt_dtype)i;
			return 0;
		}
	return -1;
}

/* ---- ggml types (ggml.c type_traits: block size, bytes per block) ---- */

static const struct {
	const char *name;
	uint32_t blck, size;
} ggml_types[FMT_GGML_TYPE__COUNT] = {
	[FMT_GGML_F32] = {"F32", 1, 4}, [FMT_GGML_F16] = {"F16", 1, 2},
	[FMT_GGML_Q4_0] = {"Q4_0", 32, 18}, [FMT_GGML_Q4_1] = {"Q4_1", 32, 20},
	[FMT_GGML_Q5_0] = {"Q5_0", 32, 22}, [FMT_GGML_Q5_1] = {"Q5_1", 32, 24},
	[FMT_GGML_Q8_0] = {"Q8_0", 32, 34}, [FMT_GGML_Q8_1] = {"Q8_1", 32, 36},
	[FMT_GGML_Q2_K] = {"Q2_K", 256, 84}, [FMT_GGML_Q3_K] = {"Q3_K", 256, 110},
	[FMT_GGML_Q4_K] = {"Q4_K", 256, 144}, [FMT_GGML_Q5_K] = {"Q5_K", 256, 176},
	[FMT_GGML_Q6_K] = {"Q6_K", 256, 210}, [FMT_GGML_Q8_K] = {"Q8_K", 256, 292},
	[FMT_GGML_IQ2_XXS] = {"IQ2_XXS", 256, 66}, [FMT_GGML_IQ2_XS] = {"IQ2_XS", 256, 74},
	[FMT_GGML_IQ3_XXS] = {"IQ3_XXS", 256, 98}, [FMT_GGML_IQ1_S] = {"IQ1_S", 256, 50},
	[FMT_GGML_IQ4_NL] = {"IQ4_NL", 32, 18}, [FMT_GGML_IQ3_S] = {"IQ3_S", 256, 110},
	[FMT_GGML_IQ2_S] = {"IQ2_S", 256, 82}, [FMT_GGML_IQ4_XS] = {"IQ4_XS", 256, 136},
	[FMT_GGML_I8] = {"I8", 1, 1}, [FMT_GGML_I16] = {"I16", 1, 2}, [FMT_GGML_I32] = {"I32", 1, 4},
	[FMT_GGML_I64] = {"I64", 1, 8}, [FMT_GGML_F64] = {"F64", 1, 8}, [FMT_GGML_IQ1_M] = {"IQ1_M", 256, 56},
	[FMT_GGML_BF16] = {"BF16", 1, 2}, [FMT_GGML_TQ1_0] = {"TQ1_0", 256, 54},
	[FMT_GGML_TQ2_0] = {"TQ2_0", 256, 66}, [FMT_GGML_MXFP4] = {"MXFP4", 32, 17},
};

const char *fmt_ggml_type_name(uint32_t type)
{
	return type < FMT_GGML_TYPE__COUNT ? ggml_types[type].name : NULL;
}

uint32_t fmt_ggml_block_size(uint32_t type)
{
	return type < FMT_GGML_TYPE__COUNT ? ggml_types[type].blck : 0;
}

uint32_t fmt_ggml_type_size(uint32_t type)
{
	return type < FMT_GGML_TYPE__COUNT ? ggml_types[type].size : 0;
}

int fmt_ggml_type_parse(const char *name, uint32_t *out)
{
	for (uint32_t i = 0; i < FMT_GGML_TYPE__COUNT; i++)
		if (ggml_types[i].name && !strcmp(ggml_types[i].name, name)) {
			*out = i;
			return 0;
		}
	return -1;
}

int fmt_ggml_nbytes(uint32_t type, int ndim, const uint64_t *ne, uint64_t *out)
{
	uint32_t blck = fmt_ggml_block_size(type);
	uint64_t n;
	if (!blck || ndim < 0 || ndim > FMT_GGUF_MAX_DIMS)
		return -1;
	if (ndim == 0) {
		n = 1;
		if (blck != 1)
			return -1;
	} else {
		if (ne[0] % blck)
			return -1;
		n = ne[0] / blck;
		for (int d = 1; d < ndim; d++) {
			if (ne[d] && n > (uint64_t)INT64_MAX / ne[d])
				return -1;
			n *= ne[d];
		}
	}
	if (n > (uint64_t)INT64_MAX / fmt_ggml_type_size(type))
		return -1;
	*out = n * fmt_ggml_type_size(type);
	return 0;
}

const char *fmt_gguf_vtype_name(uint32_t t)
{
	static const char *const names[FMT_GGUF_VTYPE__COUNT] = {
		"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
	};
	return t < FMT_GGUF_VTYPE__COUNT ? names[t] : NULL;
}

const char *fmt_shown(const char *s, size_t n, char *buf, size_t cap)
{
	size_t j = 0;
	for (size_t i = 0; i < n && j + 4 < cap && i < 96; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	if (n > 96 && j + 4 < cap) {
		memcpy(buf + j, "...", 3);
		j += 3;
	}
	buf[j] = 0;
	return buf;
}
