/* fuzz_gguf.c - libFuzzer target: a GGUF file (any bytes). What the reader
 * accepts must be in bounds, and every metadata value must walk cleanly. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../../formats/formats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t *lo, *hi;

static void in_bounds(const void *p, uint64_t n)
{
	const uint8_t *q = p;
	if (n && (q < lo || q > hi || n > (uint64_t)(hi - q)))
		abort();
}

static uint64_t walk(const struct fmt_gguf_value *v, int depth)
{
	struct fmt_gguf_iter it;
	struct fmt_gguf_value e;
	uint64_t n = 0, sum = 0;
	if (depth > 16)
		abort();
	if (v->type == FMT_GGUF_STRING)
		in_bounds(v->str, v->len);
	if (v->type != FMT_GGUF_ARRAY)
		return v->u + (uint64_t)v->i + v->len;
	in_bounds(v->raw, v->raw_len);
	fmt_gguf_iter_init(&it, v);
	while (fmt_gguf_iter_next(&it, &e)) {
		if (e.type != v->elem)
			abort();
		sum += walk(&e, depth + 1);
		n++;
	}
	if (n != v->count)
		abort();
	return sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64];
	struct hm_ctx ctx = {0};
	struct fmt_gguf *g = NULL;
	FILE *f;
	snprintf(path, sizeof(path), "/tmp/hm-fuzz-gguf-%ld", (long)getpid());
	if (!(f = fopen(path, "wb")))
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	if (fmt_gguf_open(&ctx, path, &g) == HM_OK) {
		volatile uint64_t sink = 0;
		uint32_t a = fmt_gguf_alignment(g);
		if (!a || (a & (a - 1)) || fmt_gguf_data_offset(g) % a)
			abort();
		for (size_t i = 0; i < fmt_gguf_kv_count(g); i++) {
			const struct fmt_gguf_kv *kv = fmt_gguf_kv(g, i);
			lo = NULL; /* values point into the mapping, not into data: check lengths only */
			if (fmt_gguf_find_kv(g, kv->key) != kv)
				abort();
			if (kv->v.type == FMT_GGUF_ARRAY || kv->v.type == FMT_GGUF_STRING) {
				lo = (const uint8_t *)(kv->v.type == FMT_GGUF_ARRAY ? (const void *)kv->v.raw : kv->v.str);
				hi = lo + (kv->v.type == FMT_GGUF_ARRAY ? kv->v.raw_len : kv->v.len);
			}
			sink += walk(&kv->v, 0);
		}
		for (size_t i = 0; i < fmt_gguf_tensor_count(g); i++) {
			const struct fmt_gguf_tensor *t = fmt_gguf_tensor(g, i);
			uint64_t start = fmt_gguf_data_offset(g) + t->offset;
			if (strlen(t->name) >= FMT_GGUF_MAX_NAME || fmt_gguf_find_tensor(g, t->name) != t || t->offset % a)
				abort();
			if (t->nbytes && (start + t->nbytes > size || t->data[0] != data[start] ||
					  t->data[t->nbytes - 1] != data[start + t->nbytes - 1]))
				abort();
		}
		(void)sink;
		fmt_gguf_close(g);
	} else if (!ctx.errmsg[0]) {
		abort();
	}
	unlink(path);
	return 0;
}
