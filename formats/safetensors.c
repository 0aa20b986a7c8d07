/* safetensors.c - the memory-mapped safetensors reader, validating the
 * header as strictly as huggingface/safetensors does. */
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../util/util.h"
#include "formats-int.h"

struct fmt_st {
	char *path;
	struct fmt_map map;
	uint64_t hlen;
	struct fmt_st_tensor *t;
	size_t n;
	const struct fmt_st_tensor **by_name; /* sorted by name, for find */
	char **meta;                          /* key, value, key, value ... */
	size_t nmeta;
};

static enum hm_err bad(struct fmt_st *st, struct hm_ctx *ctx, const char *fmt, ...) HM_PRINTF(3, 4);
static enum hm_err bad(struct fmt_st *st, struct hm_ctx *ctx, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': %s", st->path, msg);
}

static int cmp_offsets(const void *a, const void *b)
{
	const struct fmt_st_tensor *x = a, *y = b;
	/* file_offset holds BEGIN and nbytes END while validating */
	if (x->file_offset != y->file_offset)
		return x->file_offset < y->file_offset ? -1 : 1;
	if (x->nbytes != y->nbytes)
		return x->nbytes < y->nbytes ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int cmp_names(const void *a, const void *b)
{
	const struct fmt_st_tensor *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

static enum hm_err parse_meta(struct hm_ctx *ctx, struct fmt_st *st, json_t *m)
{
	const char *k;
	json_t *v;
	if (!json_is_object(m))
		return bad(st, ctx, "'__metadata__' is not an object of strings");
	st->meta = calloc(2 * json_object_size(m) + 1, sizeof(char *));
	if (!st->meta)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	json_object_foreach(m, k, v) {
		if (!json_is_string(v))
			return bad(st, ctx, "'__metadata__' value of '%s' is not a string", k);
		st->meta[2 * st->nmeta] = util_strdup(k);
		st->meta[2 * st->nmeta + 1] = util_strdup(json_string_value(v));
		if (!st->meta[2 * st->nmeta] || !st->meta[2 * st->nmeta + 1]) {
			st->nmeta++;
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		}
		st->nmeta++;
	}
	return HM_OK;
}

/* One entry -> t (file_offset = BEGIN and nbytes = END for now). */
static enum hm_err parse_entry(struct hm_ctx *ctx, struct fmt_st *st, const char *name, json_t *e,
			       struct fmt_st_tensor *t)
{
	json_t *dt = json_object_get(e, "dtype"), *sh = json_object_get(e, "shape");
	json_t *off = json_object_get(e, "data_offsets");
	size_t i;
	json_t *d;
	if (!json_is_object(e))
		return bad(st, ctx, "tensor '%s' is not an object", name);
	if (!json_is_string(dt))
		return bad(st, ctx, "tensor '%s' has no dtype string", name);
	if (fmt_dtype_parse(json_string_value(dt), &t->dtype) < 0)
		return bad(st, ctx, "tensor '%s' has an unknown dtype '%.32s'", name, json_string_value(dt));
	if (!json_is_array(sh))
		return bad(st, ctx, "tensor '%s' has no shape list", name);
	if (json_array_size(sh) > FMT_MAX_DIMS)
		return bad(st, ctx, "tensor '%s' has %zu dimensions (at most %d)", name, json_array_size(sh),
			   FMT_MAX_DIMS);
	t->ndim = (int)json_array_size(sh);
	json_array_foreach(sh, i, d) {
		if (!json_is_integer(d) || json_integer_value(d) < 0)
			return bad(st, ctx, "tensor '%s' has a shape that is not a list of non-negative integers", name);
		t->shape[i] = (uint64_t)json_integer_value(d);
	}
	if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
	    !json_is_integer(json_array_get(off, 1)) || json_integer_value(json_array_get(off, 0)) < 0 ||
	    json_integer_value(json_array_get(off, 1)) < 0)
		return bad(st, ctx, "tensor '%s' has data_offsets that are not [BEGIN, END] non-negative integers", name);
	t->file_offset = (uint64_t)json_integer_value(json_array_get(off, 0));
	t->nbytes = (uint64_t)json_integer_value(json_array_get(off, 1));
	if (!(t->name = util_strdup(name)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	return HM_OK;
}

static void shape_str(const struct fmt_st_tensor *t, char *buf, size_t len)
{
	size_t l = 0;
	buf[0] = 0;
	l += (size_t)snprintf(buf, len, "[");
	for (int d = 0; d < t->ndim && l < len; d++)
		l += (size_t)snprintf(buf + l, len - l, "%s%" PRIu64, d ? ", " : "", t->shape[d]);
	if (l < len)
		snprintf(buf + l, len - l, "]");
}

/* Sorted by offsets, the tensors must tile [0, data) exactly, each holding
 * shape x dtype bytes (safetensors' Metadata::validate). */
static enum hm_err check_layout(struct hm_ctx *ctx, struct fmt_st *st, uint64_t data)
{
	uint64_t start = 0;
	qsort(st->t, st->n, sizeof(*st->t), cmp_offsets);
	for (size_t i = 0; i < st->n; i++) {
		struct fmt_st_tensor *t = &st->t[i];
		uint64_t b = t->file_offset, e = t->nbytes, n = 1;
		unsigned bits = fmt_dtype_bits(t->dtype);
		char sh[256];
		if (e < b)
			return bad(st, ctx, "tensor '%s' ends at %" PRIu64 " before it begins at %" PRIu64, t->name, e, b);
		if (b != start) {
			if (!i)
				return bad(st, ctx, "tensor '%s' starts at %" PRIu64 " but the data begins at 0 (a gap)",
					   t->name, b);
			return bad(st, ctx, "tensor '%s' starts at %" PRIu64 " but the previous one ends at %" PRIu64 " (%s)",
				   t->name, b, start, b < start ? "an overlap" : "a gap");
		}
		start = e;
		for (int d = 0; d < t->ndim; d++) {
			if (t->shape[d] && n > UINT64_MAX / t->shape[d])
				return bad(st, ctx, "tensor '%s': the element count of its shape overflows", t->name);
			n *= t->shape[d];
		}
		shape_str(t, sh, sizeof(sh));
		if (n > UINT64_MAX / bits)
			return bad(st, ctx, "tensor '%s': shape %s x %u bits overflows", t->name, sh, bits);
		if (n * bits % 8)
			return bad(st, ctx, "tensor '%s': shape %s of %s is not a whole number of bytes", t->name, sh,
				   fmt_dtype_name(t->dtype));
		if (n * bits / 8 != e - b)
			return bad(st, ctx, "tensor '%s': shape %s of %s needs %" PRIu64 " bytes but data_offsets hold %" PRIu64,
				   t->name, sh, fmt_dtype_name(t->dtype), n * bits / 8, e - b);
		t->nelem = n;
		if (e > data)
			return bad(st, ctx, "tensor '%s' ends at %" PRIu64 " but the data is %" PRIu64 " bytes", t->name, e,
				   data);
	}
	if (start != data)
		return bad(st, ctx, "%" PRIu64 " trailing bytes after the last tensor (it ends at %" PRIu64
				    " but the data is %" PRIu64 " bytes)", data - start, start, data);
	for (size_t i = 0; i < st->n; i++) {
		struct fmt_st_tensor *t = &st->t[i];
		uint64_t b = t->file_offset;
		t->nbytes = t->nbytes - b;
		t->file_offset = 8 + st->hlen + b;
		t->data = st->map.p + t->file_offset;
	}
	return HM_OK;
}

static enum hm_err parse(struct hm_ctx *ctx, struct fmt_st *st)
{
	const unsigned char *p = st->map.p;
	uint64_t size = st->map.size, n;
	json_t *root = NULL, *v;
	json_error_t je;
	const char *k;
	enum hm_err err = HM_OK;

	if (size < 8)
		return bad(st, ctx, "%" PRIu64 " bytes is too short for a safetensors file (8-byte header length)", size);
	n = fmt_le64(p);
	st->hlen = n;
	if (n > FMT_ST_MAX_HEADER)
		return bad(st, ctx, "header length %" PRIu64 " is over the limit of %d bytes", n, FMT_ST_MAX_HEADER);
	if (n > UINT64_MAX - 8 || n + 8 > size)
		return bad(st, ctx, "header length %" PRIu64 " goes past the end of the file (%" PRIu64 " bytes)", n, size);
	if (!n || p[8] != '{')
		return bad(st, ctx, "header does not start with '{'");
	if (!util_utf8_valid(p + 8, (size_t)n))
		return bad(st, ctx, "header is not valid UTF-8");
	root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return bad(st, ctx, "header is not valid JSON: %s", je.text);
	if (!json_is_object(root)) {
		err = bad(st, ctx, "header is not a JSON object");
		goto out;
	}
	st->t = calloc(json_object_size(root) + 1, sizeof(*st->t));
	if (!st->t) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	json_object_foreach(root, k, v) {
		if (!strcmp(k, "__metadata__"))
			err = parse_meta(ctx, st, v);
		else if ((err = parse_entry(ctx, st, k, v, &st->t[st->n])) == HM_OK)
			st->n++;
		if (err)
			goto out;
	}
	if ((err = check_layout(ctx, st, size - 8 - n)))
		goto out;
	st->by_name = malloc((st->n + 1) * sizeof(*st->by_name));
	if (!st->by_name) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < st->n; i++)
		st->by_name[i] = &st->t[i];
	qsort(st->by_name, st->n, sizeof(*st->by_name), cmp_names);
out:
	json_decref(root);
	return err;
}

enum hm_err fmt_st_open(struct hm_ctx *ctx, const char *path, struct fmt_st **out)
{
	struct fmt_st *st = calloc(1, sizeof(*st));
	enum hm_err err;
	*out = NULL;
	if (!st || !(st->path = util_strdup(path))) {
		free(st);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	if ((err = fmt_map_open(ctx, path, &st->map)) || (err = parse(ctx, st))) {
		fmt_st_close(st);
		return err;
	}
	*out = st;
	return HM_OK;
}

static int cmp_data(const void *a, const void *b)
{
	const struct fmt_st_tensor *x = a, *y = b;
	if (x->file_offset != y->file_offset)
		return x->file_offset < y->file_offset ? -1 : 1;
	return strcmp(x->name, y->name);
}

enum hm_err fmt_st_adopt(struct hm_ctx *ctx, const char *path, struct fmt_map *map, struct fmt_st_tensor *t,
			 size_t n, struct fmt_st **out)
{
	struct fmt_st *st = calloc(1, sizeof(*st));
	*out = NULL;
	if (!st || !(st->path = util_strdup(path))) {
		free(st);
		for (size_t i = 0; i < n; i++)
			free((char *)t[i].name);
		free(t);
		fmt_map_close(map);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	st->map = *map;
	map->p = NULL;
	map->size = 0;
	st->t = t;
	st->n = n;
	qsort(st->t, n, sizeof(*st->t), cmp_data);
	if (!(st->by_name = malloc((n + 1) * sizeof(*st->by_name)))) {
		fmt_st_close(st);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++)
		st->by_name[i] = &st->t[i];
	qsort(st->by_name, n, sizeof(*st->by_name), cmp_names);
	*out = st;
	return HM_OK;
}

void fmt_st_close(struct fmt_st *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->n; i++)
		free((char *)st->t[i].name);
	for (size_t i = 0; i < 2 * st->nmeta; i++)
		free(st->meta[i]);
	free(st->meta);
	free(st->t);
	free(st->by_name);
	fmt_map_close(&st->map);
	free(st->path);
	free(st);
}

const char *fmt_st_path(const struct fmt_st *st)
{
	return st->path;
}

size_t fmt_st_count(const struct fmt_st *st)
{
	return st->n;
}

const struct fmt_st_tensor *fmt_st_tensor(const struct fmt_st *st, size_t i)
{
	return i < st->n ? &st->t[i] : NULL;
}

const struct fmt_st_tensor *fmt_st_find(const struct fmt_st *st, const char *name)
{
	size_t lo = 0, hi = st->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, st->by_name[mid]->name);
		if (!c)
			return st->by_name[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

size_t fmt_st_meta_count(const struct fmt_st *st)
{
	return st->nmeta;
}

void fmt_st_meta(const struct fmt_st *st, size_t i, const char **key, const char **value)
{
	*key = i < st->nmeta ? st->meta[2 * i] : NULL;
	*value = i < st->nmeta ? st->meta[2 * i + 1] : NULL;
}

const char *fmt_st_meta_get(const struct fmt_st *st, const char *key)
{
	for (size_t i = 0; i < st->nmeta; i++)
		if (!strcmp(st->meta[2 * i], key))
			return st->meta[2 * i + 1];
	return NULL;
}

uint64_t fmt_st_header_len(const struct fmt_st *st)
{
	return st->hlen;
}

uint64_t fmt_st_file_size(const struct fmt_st *st)
{
	return st->map.size;
}
