/* gguf_writer.c - the streaming GGUF v3 writer: metadata and tensor infos
 * first, then tensor data in declaration order with alignment padding. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "../util/util.h"
#include "formats-int.h"

struct gguf_decl {
	char *name;
	int ndim;
	uint64_t ne[FMT_GGUF_MAX_DIMS];
	uint32_t type;
	uint64_t nbytes;
};

struct fmt_gguf_writer {
	struct hm_ctx *ctx;
	struct fmt_out out;
	struct util_buf kv;       /* encoded KV pairs */
	char **keys;
	size_t nkeys, capkeys;
	struct gguf_decl *t;
	size_t nt, capt;
	uint32_t alignment;
	int started, failed;
	size_t cur;               /* tensor being written */
	uint64_t cur_done;
};

enum hm_err fmt_gguf_writer_new(struct hm_ctx *ctx, const char *path, struct fmt_gguf_writer **out)
{
	struct fmt_gguf_writer *w = calloc(1, sizeof(*w));
	enum hm_err err;
	*out = NULL;
	if (!w)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	w->ctx = ctx;
	w->alignment = FMT_GGUF_DEFAULT_ALIGNMENT;
	if ((err = fmt_out_open(ctx, path, &w->out))) {
		fmt_gguf_writer_free(w);
		return err;
	}
	*out = w;
	return HM_OK;
}

void fmt_gguf_writer_free(struct fmt_gguf_writer *w)
{
	if (!w)
		return;
	fmt_out_release(&w->out);
	util_buf_release(&w->kv);
	for (size_t i = 0; i < w->nkeys; i++)
		free(w->keys[i]);
	free(w->keys);
	for (size_t i = 0; i < w->nt; i++)
		free(w->t[i].name);
	free(w->t);
	free(w);
}

static enum hm_err nomem(struct fmt_gguf_writer *w)
{
	return hm_fail(w->ctx, HM_ERR_NOMEM, "out of memory");
}

static int put64(struct util_buf *b, uint64_t v)
{
	unsigned char p[8];
	fmt_put_le64(p, v);
	return util_buf_add(b, p, 8);
}

static int put32(struct util_buf *b, uint32_t v)
{
	unsigned char p[4];
	fmt_put_le32(p, v);
	return util_buf_add(b, p, 4);
}

static int put_str(struct util_buf *b, const char *s)
{
	size_t n = strlen(s);
	return put64(b, n) < 0 || util_buf_add(b, s, n) < 0 ? -1 : 0;
}

/* Checks and records key, then encodes it and the value type. */
static enum hm_err begin_kv(struct fmt_gguf_writer *w, const char *key, enum fmt_gguf_vtype t)
{
	if (w->started)
		return hm_fail(w->ctx, HM_ERR_USAGE, "'%s': header already written", w->out.path);
	if (!util_utf8_valid((const unsigned char *)key, strlen(key)))
		return hm_fail(w->ctx, HM_ERR_USAGE, "metadata key is not valid UTF-8");
	for (size_t i = 0; i < w->nkeys; i++)
		if (!strcmp(w->keys[i], key))
			return hm_fail(w->ctx, HM_ERR_USAGE, "metadata key '%s' added twice", key);
	if (w->nkeys == w->capkeys) {
		size_t cap = w->capkeys ? 2 * w->capkeys : 32;
		char **k = realloc(w->keys, cap * sizeof(*k));
		if (!k)
			return nomem(w);
		w->keys = k;
		w->capkeys = cap;
	}
	if (!(w->keys[w->nkeys] = util_strdup(key)))
		return nomem(w);
	w->nkeys++;
	if (put_str(&w->kv, key) < 0 || put32(&w->kv, t) < 0)
		return nomem(w);
	return HM_OK;
}

static enum hm_err add_scalar(struct fmt_gguf_writer *w, const char *key, enum fmt_gguf_vtype t, uint64_t bits,
			      size_t size)
{
	unsigned char p[8];
	enum hm_err err = begin_kv(w, key, t);
	if (err)
		return err;
	fmt_put_le64(p, bits);
	return util_buf_add(&w->kv, p, size) < 0 ? nomem(w) : HM_OK;
}

enum hm_err fmt_gguf_writer_u8(struct fmt_gguf_writer *w, const char *key, uint8_t v)
{
	return add_scalar(w, key, FMT_GGUF_U8, v, 1);
}
enum hm_err fmt_gguf_writer_i8(struct fmt_gguf_writer *w, const char *key, int8_t v)
{
	return add_scalar(w, key, FMT_GGUF_I8, (uint8_t)v, 1);
}
enum hm_err fmt_gguf_writer_u16(struct fmt_gguf_writer *w, const char *key, uint16_t v)
{
	return add_scalar(w, key, FMT_GGUF_U16, v, 2);
}
enum hm_err fmt_gguf_writer_i16(struct fmt_gguf_writer *w, const char *key, int16_t v)
{
	return add_scalar(w, key, FMT_GGUF_I16, (uint16_t)v, 2);
}
enum hm_err fmt_gguf_writer_u32(struct fmt_gguf_writer *w, const char *key, uint32_t v)
{
	if (!strcmp(key, "general.alignment")) {
		if (!v || (v & (v - 1)))
			return hm_fail(w->ctx, HM_ERR_USAGE, "general.alignment %" PRIu32 " is not a power of two", v);
		if (!w->started)
			w->alignment = v;
	}
	return add_scalar(w, key, FMT_GGUF_U32, v, 4);
}
enum hm_err fmt_gguf_writer_i32(struct fmt_gguf_writer *w, const char *key, int32_t v)
{
	return add_scalar(w, key, FMT_GGUF_I32, (uint32_t)v, 4);
}
enum hm_err fmt_gguf_writer_u64(struct fmt_gguf_writer *w, const char *key, uint64_t v)
{
	return add_scalar(w, key, FMT_GGUF_U64, v, 8);
}
enum hm_err fmt_gguf_writer_i64(struct fmt_gguf_writer *w, const char *key, int64_t v)
{
	return add_scalar(w, key, FMT_GGUF_I64, (uint64_t)v, 8);
}
enum hm_err fmt_gguf_writer_f32(struct fmt_gguf_writer *w, const char *key, float v)
{
	uint32_t u;
	memcpy(&u, &v, 4);
	return add_scalar(w, key, FMT_GGUF_F32, u, 4);
}
enum hm_err fmt_gguf_writer_f64(struct fmt_gguf_writer *w, const char *key, double v)
{
	uint64_t u;
	memcpy(&u, &v, 8);
	return add_scalar(w, key, FMT_GGUF_F64, u, 8);
}
enum hm_err fmt_gguf_writer_bool(struct fmt_gguf_writer *w, const char *key, int v)
{
	return add_scalar(w, key, FMT_GGUF_BOOL, v != 0, 1);
}

enum hm_err fmt_gguf_writer_str(struct fmt_gguf_writer *w, const char *key, const char *v)
{
	enum hm_err err = begin_kv(w, key, FMT_GGUF_STRING);
	if (err)
		return err;
	return put_str(&w->kv, v) < 0 ? nomem(w) : HM_OK;
}

enum hm_err fmt_gguf_writer_arr(struct fmt_gguf_writer *w, const char *key, enum fmt_gguf_vtype elem,
				const void *data, uint64_t count)
{
	static const unsigned char sz[FMT_GGUF_VTYPE__COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
	const unsigned char *p = data;
	enum hm_err err;
	size_t s = (unsigned)elem < FMT_GGUF_VTYPE__COUNT ? sz[elem] : 0;
	if (!s || count > (1ull << 30))
		return hm_fail(w->ctx, HM_ERR_USAGE, "metadata '%s': bad array type or size", key);
	if ((err = begin_kv(w, key, FMT_GGUF_ARRAY)))
		return err;
	if (put32(&w->kv, elem) < 0 || put64(&w->kv, count) < 0)
		return nomem(w);
	for (uint64_t i = 0; i < count; i++, p += s) {
		unsigned char le[8];
		uint64_t v = 0;
		if (s == 1)
			v = p[0];
		else if (s == 2) {
			uint16_t x;
			memcpy(&x, p, 2);
			v = x;
		} else if (s == 4) {
			uint32_t x;
			memcpy(&x, p, 4);
			v = x;
		} else
			memcpy(&v, p, 8);
		fmt_put_le64(le, v);
		if (util_buf_add(&w->kv, le, s) < 0)
			return nomem(w);
	}
	return HM_OK;
}

enum hm_err fmt_gguf_writer_str_arr(struct fmt_gguf_writer *w, const char *key, const char *const *v,
				    uint64_t count)
{
	enum hm_err err;
	if (count > (1ull << 30))
		return hm_fail(w->ctx, HM_ERR_USAGE, "metadata '%s': array too large", key);
	if ((err = begin_kv(w, key, FMT_GGUF_ARRAY)))
		return err;
	if (put32(&w->kv, FMT_GGUF_STRING) < 0 || put64(&w->kv, count) < 0)
		return nomem(w);
	for (uint64_t i = 0; i < count; i++)
		if (put_str(&w->kv, v[i]) < 0)
			return nomem(w);
	return HM_OK;
}

enum hm_err fmt_gguf_writer_add_tensor(struct fmt_gguf_writer *w, const char *name, int ndim, const uint64_t *ne,
				       uint32_t type)
{
	struct gguf_decl *d;
	uint64_t full[FMT_GGUF_MAX_DIMS] = {1, 1, 1, 1};
	if (w->started)
		return hm_fail(w->ctx, HM_ERR_USAGE, "'%s': header already written", w->out.path);
	if (strlen(name) >= FMT_GGUF_MAX_NAME || !util_utf8_valid((const unsigned char *)name, strlen(name)))
		return hm_fail(w->ctx, HM_ERR_USAGE, "tensor name '%s' is too long or not UTF-8", name);
	if (ndim < 1 || ndim > FMT_GGUF_MAX_DIMS)
		return hm_fail(w->ctx, HM_ERR_USAGE, "tensor '%s': %d dimensions (1 to 4)", name, ndim);
	for (size_t i = 0; i < w->nt; i++)
		if (!strcmp(w->t[i].name, name))
			return hm_fail(w->ctx, HM_ERR_USAGE, "tensor '%s' declared twice", name);
	memcpy(full, ne, (size_t)ndim * sizeof(*ne));
	if (w->nt == w->capt) {
		size_t cap = w->capt ? 2 * w->capt : 64;
		struct gguf_decl *t = realloc(w->t, cap * sizeof(*t));
		if (!t)
			return nomem(w);
		w->t = t;
		w->capt = cap;
	}
	d = &w->t[w->nt];
	memset(d, 0, sizeof(*d));
	if (fmt_ggml_nbytes(type, FMT_GGUF_MAX_DIMS, full, &d->nbytes) < 0)
		return hm_fail(w->ctx, HM_ERR_USAGE, "tensor '%s': unknown type %" PRIu32 ", or ne0 %" PRIu64
						     " not a multiple of its block size", name, type, ne[0]);
	if (!(d->name = util_strdup(name)))
		return nomem(w);
	d->ndim = ndim;
	memcpy(d->ne, full, sizeof(full));
	d->type = type;
	w->nt++;
	return HM_OK;
}

static uint64_t pad(uint64_t n, uint64_t a)
{
	return (a - n % a) % a;
}

static enum hm_err write_header(struct fmt_gguf_writer *w)
{
	struct util_buf h = UTIL_BUF_INIT;
	uint64_t off = 0;
	enum hm_err err;
	if (put32(&h, 0x46554747) < 0 || put32(&h, 3) < 0 || put64(&h, w->nt) < 0 || put64(&h, w->nkeys) < 0 ||
	    util_buf_add(&h, w->kv.buf ? w->kv.buf : "", w->kv.len) < 0)
		goto nomem;
	for (size_t i = 0; i < w->nt; i++) {
		const struct gguf_decl *d = &w->t[i];
		if (put_str(&h, d->name) < 0 || put32(&h, (uint32_t)d->ndim) < 0)
			goto nomem;
		for (int k = 0; k < d->ndim; k++)
			if (put64(&h, d->ne[k]) < 0)
				goto nomem;
		if (put32(&h, d->type) < 0 || put64(&h, off) < 0)
			goto nomem;
		off += d->nbytes + pad(d->nbytes, w->alignment);
	}
	if ((err = fmt_out_write(&w->out, h.buf, h.len)) || (err = fmt_out_zeros(&w->out, pad(h.len, w->alignment))))
		goto out;
	w->started = 1;
	goto out;
nomem:
	err = nomem(w);
out:
	util_buf_release(&h);
	return err;
}

/* Finishes tensors that are complete (padding each), skipping empty ones. */
static enum hm_err advance(struct fmt_gguf_writer *w)
{
	enum hm_err err;
	while (w->cur < w->nt && w->cur_done == w->t[w->cur].nbytes) {
		if ((err = fmt_out_zeros(&w->out, pad(w->t[w->cur].nbytes, w->alignment))))
			return err;
		w->cur++;
		w->cur_done = 0;
	}
	return HM_OK;
}

enum hm_err fmt_gguf_writer_write(struct fmt_gguf_writer *w, const void *data, size_t n)
{
	const unsigned char *p = data;
	enum hm_err err;
	if (w->failed)
		return hm_fail(w->ctx, HM_ERR_USAGE, "'%s': an earlier write failed", w->out.path);
	if ((!w->started && (err = write_header(w))) || (err = advance(w)))
		goto fail;
	while (n) {
		uint64_t left;
		size_t k;
		if (w->cur >= w->nt) {
			err = hm_fail(w->ctx, HM_ERR_USAGE, "'%s': more tensor data than declared", w->out.path);
			goto fail;
		}
		left = w->t[w->cur].nbytes - w->cur_done;
		k = n < left ? n : (size_t)left;
		if ((err = fmt_out_write(&w->out, p, k)))
			goto fail;
		w->cur_done += k;
		p += k;
		n -= k;
		if ((err = advance(w)))
			goto fail;
	}
	return HM_OK;
fail:
	w->failed = 1;
	return err;
}

enum hm_err fmt_gguf_writer_flush(struct fmt_gguf_writer *w, int *fd, uint64_t *flushed)
{
	enum hm_err err;
	if (w->failed)
		return hm_fail(w->ctx, HM_ERR_USAGE, "'%s': an earlier write failed", w->out.path);
	if ((err = fmt_out_flush(&w->out, flushed))) {
		w->failed = 1;
		return err;
	}
	if (fd)
		*fd = w->out.fd;
	return HM_OK;
}

enum hm_err fmt_gguf_writer_finish(struct fmt_gguf_writer *w)
{
	enum hm_err err;
	if ((err = fmt_gguf_writer_write(w, "", 0)))
		return err;
	if (w->cur < w->nt)
		return hm_fail(w->ctx, HM_ERR_USAGE, "'%s': tensor '%s' has %" PRIu64 " of %" PRIu64 " bytes written",
			       w->out.path, w->t[w->cur].name, w->cur_done, w->t[w->cur].nbytes);
	return fmt_out_commit(&w->out);
}
