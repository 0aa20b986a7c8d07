/* st_writer.c - the streaming safetensors writer: tensors are declared
 * first, their bytes follow in declaration order, packed. */
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "../util/util.h"
#include "formats-int.h"

struct st_decl {
	char *name;
	enum fmt_dtype dtype;
	int ndim;
	uint64_t shape[FMT_MAX_DIMS];
	uint64_t nbytes;
};

struct fmt_st_writer {
	struct hm_ctx *ctx;
	struct fmt_out out;
	struct st_decl *t;
	size_t n, cap;
	json_t *meta;
	int started, failed;
	uint64_t total, done;
};

enum hm_err fmt_st_writer_new(struct hm_ctx *ctx, const char *path, struct fmt_st_writer **out)
{
	struct fmt_st_writer *w = calloc(1, sizeof(*w));
	enum hm_err err;
	*out = NULL;
	if (!w || !(w->meta = json_object())) {
		free(w);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	w->ctx = ctx;
	if ((err = fmt_out_open(ctx, path, &w->out))) {
		fmt_st_writer_free(w);
		return err;
	}
	*out = w;
	return HM_OK;
}

void fmt_st_writer_free(struct fmt_st_writer *w)
{
	if (!w)
		return;
	fmt_out_release(&w->out);
	for (size_t i = 0; i < w->n; i++)
		free(w->t[i].name);
	free(w->t);
	json_decref(w->meta);
	free(w);
}

static enum hm_err too_late(struct fmt_st_writer *w)
{
	return hm_fail(w->ctx, HM_ERR_USAGE, "'%s': header already written", w->out.path);
}

enum hm_err fmt_st_writer_meta(struct fmt_st_writer *w, const char *key, const char *value)
{
	json_t *v;
	if (w->started)
		return too_late(w);
	if (!(v = json_string(value)) || !util_utf8_valid((const unsigned char *)key, strlen(key))) {
		json_decref(v);
		return hm_fail(w->ctx, HM_ERR_USAGE, "metadata '%s' is not valid UTF-8", key);
	}
	if (json_object_set_new(w->meta, key, v) < 0)
		return hm_fail(w->ctx, HM_ERR_NOMEM, "out of memory");
	return HM_OK;
}

enum hm_err fmt_st_writer_add(struct fmt_st_writer *w, const char *name, enum fmt_dtype dtype, int ndim,
			      const uint64_t *shape)
{
	struct st_decl *d;
	uint64_t n = 1, bits = fmt_dtype_bits(dtype);
	if (w->started)
		return too_late(w);
	if (!bits || ndim < 0 || ndim > FMT_MAX_DIMS)
		return hm_fail(w->ctx, HM_ERR_USAGE, "tensor '%s': bad dtype or rank", name);
	if (!*name || !strcmp(name, "__metadata__") || !util_utf8_valid((const unsigned char *)name, strlen(name)))
		return hm_fail(w->ctx, HM_ERR_USAGE, "tensor name '%s' is not allowed", name);
	for (size_t i = 0; i < w->n; i++)
		if (!strcmp(w->t[i].name, name))
			return hm_fail(w->ctx, HM_ERR_USAGE, "tensor '%s' declared twice", name);
	for (int i = 0; i < ndim; i++) {
		if (shape[i] > (1ull << 48) || (shape[i] && n > (UINT64_MAX / bits) / shape[i]))
			return hm_fail(w->ctx, HM_ERR_USAGE, "tensor '%s': shape too large", name);
		n *= shape[i];
	}
	if (n * bits % 8)
		return hm_fail(w->ctx, HM_ERR_USAGE, "tensor '%s' is not a whole number of bytes", name);
	if (w->total > (1ull << 62) - n * bits / 8)
		return hm_fail(w->ctx, HM_ERR_USAGE, "tensor '%s': file too large", name);
	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 64;
		struct st_decl *t = realloc(w->t, cap * sizeof(*t));
		if (!t)
			return hm_fail(w->ctx, HM_ERR_NOMEM, "out of memory");
		w->t = t;
		w->cap = cap;
	}
	d = &w->t[w->n];
	memset(d, 0, sizeof(*d));
	if (!(d->name = util_strdup(name)))
		return hm_fail(w->ctx, HM_ERR_NOMEM, "out of memory");
	d->dtype = dtype;
	d->ndim = ndim;
	if (ndim)
		memcpy(d->shape, shape, (size_t)ndim * sizeof(*shape));
	d->nbytes = n * bits / 8;
	w->total += d->nbytes;
	w->n++;
	return HM_OK;
}

static json_t *entry(const struct st_decl *d, uint64_t begin)
{
	json_t *shape = json_array();
	for (int i = 0; shape && i < d->ndim; i++)
		if (json_array_append_new(shape, json_integer((json_int_t)d->shape[i])) < 0) {
			json_decref(shape);
			return NULL;
		}
	if (!shape)
		return NULL;
	return json_pack("{s:s, s:o, s:[I, I]}", "dtype", fmt_dtype_name(d->dtype), "shape", shape, "data_offsets",
			 (json_int_t)begin, (json_int_t)(begin + d->nbytes));
}

static enum hm_err write_header(struct fmt_st_writer *w)
{
	json_t *h = json_object();
	char *s = NULL;
	uint64_t off = 0;
	size_t len, pad;
	unsigned char n8[8];
	enum hm_err err = HM_OK;
	if (!h)
		return hm_fail(w->ctx, HM_ERR_NOMEM, "out of memory");
	if (json_object_size(w->meta) && json_object_set(h, "__metadata__", w->meta) < 0)
		goto nomem;
	for (size_t i = 0; i < w->n; i++) {
		json_t *e = entry(&w->t[i], off);
		if (!e || json_object_set_new(h, w->t[i].name, e) < 0)
			goto nomem;
		off += w->t[i].nbytes;
	}
	if (!(s = json_dumps(h, JSON_COMPACT)))
		goto nomem;
	len = strlen(s);
	pad = (8 - len % 8) % 8;
	if (len + pad > FMT_ST_MAX_HEADER) {
		err = hm_fail(w->ctx, HM_ERR_USAGE, "'%s': the header would be %zu bytes (at most %d)", w->out.path,
			      len + pad, FMT_ST_MAX_HEADER);
		goto out;
	}
	fmt_put_le64(n8, len + pad);
	if ((err = fmt_out_write(&w->out, n8, 8)) || (err = fmt_out_write(&w->out, s, len)) ||
	    (err = fmt_out_write(&w->out, "        ", pad)))
		goto out;
	w->started = 1;
	goto out;
nomem:
	err = hm_fail(w->ctx, HM_ERR_NOMEM, "out of memory");
out:
	free(s);
	json_decref(h);
	return err;
}

enum hm_err fmt_st_writer_write(struct fmt_st_writer *w, const void *data, size_t n)
{
	enum hm_err err;
	if (w->failed)
		return hm_fail(w->ctx, HM_ERR_USAGE, "'%s': an earlier write failed", w->out.path);
	if (!w->started && (err = write_header(w))) {
		w->failed = 1;
		return err;
	}
	if (n > w->total - w->done) {
		w->failed = 1;
		return hm_fail(w->ctx, HM_ERR_USAGE, "'%s': %zu bytes more than the %" PRIu64 " declared", w->out.path,
			       n - (size_t)(w->total - w->done), w->total);
	}
	if ((err = fmt_out_write(&w->out, data, n))) {
		w->failed = 1;
		return err;
	}
	w->done += n;
	return HM_OK;
}

enum hm_err fmt_st_writer_finish(struct fmt_st_writer *w)
{
	enum hm_err err;
	if ((err = fmt_st_writer_write(w, "", 0)))
		return err;
	if (w->done != w->total)
		return hm_fail(w->ctx, HM_ERR_USAGE, "'%s': %" PRIu64 " of %" PRIu64 " data bytes written", w->out.path,
			       w->done, w->total);
	return fmt_out_commit(&w->out);
}
