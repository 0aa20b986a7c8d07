/* gguf.c - the memory-mapped GGUF v2/v3 reader, validating like ggml's
 * gguf.cpp: bounded counts and lengths, unique keys and tensor names, known
 * types, and tensor offsets that are exactly the running sum of padded sizes. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../util/util.h"
#include "formats-int.h"

#define MAX_LEN (1ull << 30)   /* strings and arrays: 1 GiB (elements) */
#define MAX_DEPTH 8            /* nested arrays */
#define MIN_KV 13              /* key length, type, one byte */
#define MIN_TENSOR 24          /* name length, n_dims, type, offset */

struct fmt_gguf {
	char *path;
	struct fmt_map map;
	uint32_t version, alignment;
	uint64_t data_offset;
	struct fmt_gguf_kv *kv;
	size_t nkv;
	struct fmt_gguf_tensor *t;
	size_t nt;
	const struct fmt_gguf_kv **kv_by_key;
	const struct fmt_gguf_tensor **t_by_name;
};

/* A bounded read cursor. */
struct cur {
	const unsigned char *p, *end, *base;
};

static enum hm_err bad(struct hm_ctx *ctx, const struct fmt_gguf *g, const char *fmt, ...) HM_PRINTF(3, 4);
static enum hm_err bad(struct hm_ctx *ctx, const struct fmt_gguf *g, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': %s", g->path, msg);
}

static int take(struct cur *c, size_t n, const unsigned char **out)
{
	if ((size_t)(c->end - c->p) < n)
		return -1;
	*out = c->p;
	c->p += n;
	return 0;
}

static int rd32(struct cur *c, uint32_t *v)
{
	const unsigned char *p;
	if (take(c, 4, &p))
		return -1;
	*v = fmt_le32(p);
	return 0;
}

static int rd64(struct cur *c, uint64_t *v)
{
	const unsigned char *p;
	if (take(c, 8, &p))
		return -1;
	*v = fmt_le64(p);
	return 0;
}

static size_t scalar_size(uint32_t t)
{
	static const unsigned char sz[FMT_GGUF_VTYPE__COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
	return t < FMT_GGUF_VTYPE__COUNT ? sz[t] : 0;
}

static void decode_scalar(uint32_t t, const unsigned char *p, struct fmt_gguf_value *v)
{
	uint32_t u32;
	uint64_t u64;
	v->type = (enum fmt_gguf_vtype)t;
	switch (t) {
	case FMT_GGUF_U8: v->u = p[0]; break;
	case FMT_GGUF_I8: v->i = (int8_t)p[0]; break;
	case FMT_GGUF_BOOL: v->u = p[0] != 0; break;
	case FMT_GGUF_U16: v->u = (uint16_t)(p[0] | p[1] << 8); break;
	case FMT_GGUF_I16: v->i = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
	case FMT_GGUF_U32: v->u = fmt_le32(p); break;
	case FMT_GGUF_I32: v->i = (int32_t)fmt_le32(p); break;
	case FMT_GGUF_F32: {
		float f;
		u32 = fmt_le32(p);
		memcpy(&f, &u32, 4);
		v->f = f;
		break;
	}
	case FMT_GGUF_U64: v->u = fmt_le64(p); break;
	case FMT_GGUF_I64: v->i = (int64_t)fmt_le64(p); break;
	case FMT_GGUF_F64:
		u64 = fmt_le64(p);
		memcpy(&v->f, &u64, 8);
		break;
	}
}

/* Reads one value of type t at c into v. On failure returns -1 with a
 * reason in why (never for validated bytes). */
static int read_value(struct cur *c, uint32_t t, int depth, struct fmt_gguf_value *v, char *why, size_t wl)
{
	const unsigned char *p;
	uint64_t n = 0;
	memset(v, 0, sizeof(*v));
	v->type = (enum fmt_gguf_vtype)t;
	if (t >= FMT_GGUF_VTYPE__COUNT) {
		snprintf(why, wl, "unknown value type %" PRIu32, t);
		return -1;
	}
	if (t == FMT_GGUF_STRING) {
		if (rd64(c, &n) || n > MAX_LEN || take(c, (size_t)n, &p)) {
			snprintf(why, wl, n > MAX_LEN ? "string of %" PRIu64 " bytes is over 1 GiB"
						      : "string of %" PRIu64 " bytes goes past the end of the file", n);
			return -1;
		}
		v->str = (const char *)p;
		v->len = n;
		return 0;
	}
	if (t == FMT_GGUF_ARRAY) {
		uint32_t et;
		const unsigned char *start;
		if (depth >= MAX_DEPTH) {
			snprintf(why, wl, "arrays nested more than %d deep", MAX_DEPTH);
			return -1;
		}
		if (rd32(c, &et) || rd64(c, &n)) {
			snprintf(why, wl, "array header goes past the end of the file");
			return -1;
		}
		if (et >= FMT_GGUF_VTYPE__COUNT) {
			snprintf(why, wl, "array of unknown value type %" PRIu32, et);
			return -1;
		}
		if (n > MAX_LEN) {
			snprintf(why, wl, "array of %" PRIu64 " elements is over the 1 GiB limit", n);
			return -1;
		}
		v->elem = (enum fmt_gguf_vtype)et;
		v->count = n;
		start = c->p;
		if (scalar_size(et)) {
			if (take(c, (size_t)(n * scalar_size(et)), &p)) {
				snprintf(why, wl, "array of %" PRIu64 " elements goes past the end of the file", n);
				return -1;
			}
		} else {
			struct fmt_gguf_value e;
			/* each element takes at least 8 bytes: the walk is bounded by the file */
			if (n > (uint64_t)(c->end - c->p) / 8) {
				snprintf(why, wl, "array of %" PRIu64 " elements goes past the end of the file", n);
				return -1;
			}
			for (uint64_t i = 0; i < n; i++)
				if (read_value(c, et, depth + 1, &e, why, wl) < 0)
					return -1;
		}
		v->raw = start;
		v->raw_len = (uint64_t)(c->p - start);
		return 0;
	}
	if (take(c, scalar_size(t), &p)) {
		snprintf(why, wl, "value goes past the end of the file");
		return -1;
	}
	decode_scalar(t, p, v);
	return 0;
}

void fmt_gguf_iter_init(struct fmt_gguf_iter *it, const struct fmt_gguf_value *arr)
{
	it->arr = arr;
	it->p = arr->raw;
	it->i = 0;
}

int fmt_gguf_iter_next(struct fmt_gguf_iter *it, struct fmt_gguf_value *out)
{
	struct cur c;
	char why[8];
	if (it->arr->type != FMT_GGUF_ARRAY || it->i >= it->arr->count)
		return 0;
	c.p = it->p;
	c.end = it->arr->raw + it->arr->raw_len;
	if (read_value(&c, it->arr->elem, 1, out, why, sizeof(why)) < 0)
		return 0;
	it->p = c.p;
	it->i++;
	return 1;
}

/* A length-prefixed name, copied NUL-terminated; no NUL inside, valid UTF-8. */
static int read_name(struct cur *c, uint64_t max, char **out, uint64_t *len)
{
	const unsigned char *p;
	uint64_t n;
	*out = NULL;
	if (rd64(c, &n))
		return -1;
	*len = n;
	if (n > max || take(c, (size_t)n, &p))
		return -1;
	if (memchr(p, 0, (size_t)n) || !util_utf8_valid(p, (size_t)n))
		return -2;
	*out = util_strndup((const char *)p, (size_t)n);
	return *out ? 0 : -3;
}

static int cmp_kv(const void *a, const void *b)
{
	return strcmp((*(const struct fmt_gguf_kv *const *)a)->key, (*(const struct fmt_gguf_kv *const *)b)->key);
}

static int cmp_t(const void *a, const void *b)
{
	return strcmp((*(const struct fmt_gguf_tensor *const *)a)->name,
		      (*(const struct fmt_gguf_tensor *const *)b)->name);
}

static enum hm_err read_kvs(struct hm_ctx *ctx, struct fmt_gguf *g, struct cur *c, uint64_t nkv)
{
	for (uint64_t i = 0; i < nkv; i++) {
		struct fmt_gguf_kv *kv = &g->kv[i];
		uint64_t len;
		uint32_t t;
		char why[160];
		int r = read_name(c, MAX_LEN, (char **)&kv->key, &len);
		if (r == -3)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		if (r)
			return bad(ctx, g, "metadata key %" PRIu64 " %s", i,
				   r == -2 ? "is not valid UTF-8 (or holds a NUL)"
				   : len > MAX_LEN ? "is over 1 GiB" : "goes past the end of the file");
		g->nkv++;
		if (rd32(c, &t))
			return bad(ctx, g, "metadata '%s' is cut short by the end of the file", kv->key);
		if (read_value(c, t, 0, &kv->v, why, sizeof(why)) < 0)
			return bad(ctx, g, "metadata '%s': %s", kv->key, why);
	}
	for (size_t i = 0; i < g->nkv; i++)
		g->kv_by_key[i] = &g->kv[i];
	qsort(g->kv_by_key, g->nkv, sizeof(*g->kv_by_key), cmp_kv);
	for (size_t i = 1; i < g->nkv; i++)
		if (!strcmp(g->kv_by_key[i]->key, g->kv_by_key[i - 1]->key))
			return bad(ctx, g, "duplicate metadata key '%s'", g->kv_by_key[i]->key);
	return HM_OK;
}

static enum hm_err read_alignment(struct hm_ctx *ctx, struct fmt_gguf *g)
{
	const struct fmt_gguf_kv *a = fmt_gguf_find_kv(g, "general.alignment");
	g->alignment = FMT_GGUF_DEFAULT_ALIGNMENT;
	if (!a)
		return HM_OK;
	if (a->v.type != FMT_GGUF_U32)
		return bad(ctx, g, "general.alignment is a %s, not a u32", fmt_gguf_vtype_name(a->v.type));
	if (!a->v.u || (a->v.u & (a->v.u - 1)))
		return bad(ctx, g, "general.alignment %" PRIu64 " is not a power of two", a->v.u);
	g->alignment = (uint32_t)a->v.u;
	return HM_OK;
}

static enum hm_err read_tensor(struct hm_ctx *ctx, struct fmt_gguf *g, struct cur *c, uint64_t i)
{
	struct fmt_gguf_tensor *t = &g->t[i];
	uint64_t len, nd;
	uint32_t n_dims;
	int r = read_name(c, MAX_LEN, (char **)&t->name, &len);
	if (r == -3)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if (r)
		return bad(ctx, g, "name of tensor %" PRIu64 " %s", i,
			   r == -2 ? "is not valid UTF-8 (or holds a NUL)" : "goes past the end of the file");
	g->nt++;
	if (len >= FMT_GGUF_MAX_NAME)
		return bad(ctx, g, "tensor name '%.80s' is %" PRIu64 " bytes (at most %d)", t->name, len,
			   FMT_GGUF_MAX_NAME - 1);
	if (rd32(c, &n_dims))
		return bad(ctx, g, "tensor '%s' is cut short by the end of the file", t->name);
	if (n_dims > FMT_GGUF_MAX_DIMS)
		return bad(ctx, g, "tensor '%s' has %" PRIu32 " dimensions (at most %d)", t->name, n_dims,
			   FMT_GGUF_MAX_DIMS);
	t->ndim = (int)n_dims;
	nd = 1;
	for (int d = 0; d < FMT_GGUF_MAX_DIMS; d++) {
		t->ne[d] = 1;
		if (d >= t->ndim)
			continue;
		if (rd64(c, &t->ne[d]))
			return bad(ctx, g, "tensor '%s' is cut short by the end of the file", t->name);
		if (t->ne[d] > (uint64_t)INT64_MAX || (t->ne[d] && nd > (uint64_t)INT64_MAX / t->ne[d]))
			return bad(ctx, g, "tensor '%s': the element count of its dimensions overflows", t->name);
		nd *= t->ne[d];
	}
	t->nelem = nd;
	if (rd32(c, &t->type) || rd64(c, &t->offset))
		return bad(ctx, g, "tensor '%s' is cut short by the end of the file", t->name);
	if (!fmt_ggml_block_size(t->type))
		return bad(ctx, g, "tensor '%s' has an unknown type id %" PRIu32, t->name, t->type);
	if (t->ne[0] % fmt_ggml_block_size(t->type))
		return bad(ctx, g, "tensor '%s': ne0 %" PRIu64 " is not a multiple of the %s block size %" PRIu32,
			   t->name, t->ne[0], fmt_ggml_type_name(t->type), fmt_ggml_block_size(t->type));
	if (fmt_ggml_nbytes(t->type, FMT_GGUF_MAX_DIMS, t->ne, &t->nbytes) < 0)
		return bad(ctx, g, "tensor '%s': its size overflows", t->name);
	return HM_OK;
}

/* Offsets are the running sum of padded sizes; every tensor is in the file. */
static enum hm_err check_offsets(struct hm_ctx *ctx, struct fmt_gguf *g)
{
	uint64_t want = 0, a = g->alignment, size = g->map.size;
	for (size_t i = 0; i < g->nt; i++) {
		struct fmt_gguf_tensor *t = &g->t[i];
		uint64_t padded;
		if (t->offset % a)
			return bad(ctx, g, "tensor '%s' offset %" PRIu64 " is not aligned to %" PRIu64, t->name, t->offset, a);
		if (t->offset != want)
			return bad(ctx, g, "tensor '%s' is at offset %" PRIu64 " but the previous tensors end at %" PRIu64,
				   t->name, t->offset, want);
		if (g->data_offset > size || t->offset > size - g->data_offset ||
		    t->nbytes > size - g->data_offset - t->offset) {
			if (t->nbytes)
				return bad(ctx, g, "tensor '%s' (%" PRIu64 " bytes at data offset %" PRIu64
						   ") goes past the end of the file (%" PRIu64 " bytes)",
					   t->name, t->nbytes, t->offset, size);
			t->data = g->map.p + size;
		} else {
			t->data = g->map.p + g->data_offset + t->offset;
		}
		padded = t->nbytes + (a - t->nbytes % a) % a;
		if (padded < t->nbytes || want > UINT64_MAX - padded)
			return bad(ctx, g, "tensor '%s': the data size overflows", t->name);
		want += padded;
	}
	return HM_OK;
}

static enum hm_err parse(struct hm_ctx *ctx, struct fmt_gguf *g)
{
	struct cur c;
	uint64_t nt, nkv, pos;
	uint32_t magic;
	enum hm_err err;
	if (g->map.size < 24) /* also: no mapping for an empty file */
		return bad(ctx, g, "%" PRIu64 " bytes is too short for a GGUF file", g->map.size);
	c.p = c.base = g->map.p;
	c.end = g->map.p + g->map.size;
	if (rd32(&c, &magic) || magic != 0x46554747)
		return bad(ctx, g, "not a GGUF file (bad magic)");
	if (rd32(&c, &g->version) || g->version < 2 || g->version > 3)
		return bad(ctx, g, "GGUF version %" PRIu32 " is not supported (2 or 3)", g->version);
	if (rd64(&c, &nt) || rd64(&c, &nkv))
		return bad(ctx, g, "header is cut short");
	if (nkv > (uint64_t)(c.end - c.p) / MIN_KV)
		return bad(ctx, g, "%" PRIu64 " metadata entries cannot fit in the file", nkv);
	if (nt > (uint64_t)(c.end - c.p) / MIN_TENSOR)
		return bad(ctx, g, "%" PRIu64 " tensors cannot fit in the file", nt);
	g->kv = calloc((size_t)nkv + 1, sizeof(*g->kv));
	g->kv_by_key = calloc((size_t)nkv + 1, sizeof(*g->kv_by_key));
	g->t = calloc((size_t)nt + 1, sizeof(*g->t));
	g->t_by_name = calloc((size_t)nt + 1, sizeof(*g->t_by_name));
	if (!g->kv || !g->kv_by_key || !g->t || !g->t_by_name)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if ((err = read_kvs(ctx, g, &c, nkv)) || (err = read_alignment(ctx, g)))
		return err;
	for (uint64_t i = 0; i < nt; i++)
		if ((err = read_tensor(ctx, g, &c, i)))
			return err;
	for (size_t i = 0; i < g->nt; i++)
		g->t_by_name[i] = &g->t[i];
	qsort(g->t_by_name, g->nt, sizeof(*g->t_by_name), cmp_t);
	for (size_t i = 1; i < g->nt; i++)
		if (!strcmp(g->t_by_name[i]->name, g->t_by_name[i - 1]->name))
			return bad(ctx, g, "duplicate tensor name '%s'", g->t_by_name[i]->name);
	pos = (uint64_t)(c.p - c.base);
	g->data_offset = pos + (g->alignment - pos % g->alignment) % g->alignment;
	return check_offsets(ctx, g);
}

enum hm_err fmt_gguf_open(struct hm_ctx *ctx, const char *path, struct fmt_gguf **out)
{
	struct fmt_gguf *g = calloc(1, sizeof(*g));
	enum hm_err err;
	*out = NULL;
	if (!g || !(g->path = util_strdup(path))) {
		free(g);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	if ((err = fmt_map_open(ctx, path, &g->map)) || (err = parse(ctx, g))) {
		fmt_gguf_close(g);
		return err;
	}
	*out = g;
	return HM_OK;
}

int fmt_gguf_to_memory(struct fmt_gguf *g, struct util_pool *pool)
{
	return fmt_map_to_memory(&g->map, pool);
}

void fmt_gguf_close(struct fmt_gguf *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->nkv; i++)
		free((char *)g->kv[i].key);
	for (size_t i = 0; i < g->nt; i++)
		free((char *)g->t[i].name);
	free(g->kv);
	free(g->kv_by_key);
	free(g->t);
	free(g->t_by_name);
	fmt_map_close(&g->map);
	free(g->path);
	free(g);
}

const char *fmt_gguf_path(const struct fmt_gguf *g) { return g->path; }
uint32_t fmt_gguf_version(const struct fmt_gguf *g) { return g->version; }
uint32_t fmt_gguf_alignment(const struct fmt_gguf *g) { return g->alignment; }
uint64_t fmt_gguf_data_offset(const struct fmt_gguf *g) { return g->data_offset; }
uint64_t fmt_gguf_file_size(const struct fmt_gguf *g) { return g->map.size; }
size_t fmt_gguf_kv_count(const struct fmt_gguf *g) { return g->nkv; }
size_t fmt_gguf_tensor_count(const struct fmt_gguf *g) { return g->nt; }

const struct fmt_gguf_kv *fmt_gguf_kv(const struct fmt_gguf *g, size_t i)
{
	return i < g->nkv ? &g->kv[i] : NULL;
}

const struct fmt_gguf_tensor *fmt_gguf_tensor(const struct fmt_gguf *g, size_t i)
{
	return i < g->nt ? &g->t[i] : NULL;
}

const struct fmt_gguf_kv *fmt_gguf_find_kv(const struct fmt_gguf *g, const char *key)
{
	size_t lo = 0, hi = g->nkv;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(key, g->kv_by_key[mid]->key);
		if (!c)
			return g->kv_by_key[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

const struct fmt_gguf_tensor *fmt_gguf_find_tensor(const struct fmt_gguf *g, const char *name)
{
	size_t lo = 0, hi = g->nt;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, g->t_by_name[mid]->name);
		if (!c)
			return g->t_by_name[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}
