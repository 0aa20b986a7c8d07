/* fuzz_safetensors.c - libFuzzer target: a safetensors file (any bytes).
 * What the reader accepts must be in bounds, tile the data buffer, and
 * survive a rewrite through the writer unchanged. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../../formats/formats-int.h" /* the single-file reader and the safetensors writer */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void rewrite(const struct fmt_st *st, const char *path)
{
	struct hm_ctx ctx = {0};
	struct fmt_st_writer *w = NULL;
	struct fmt_st *back = NULL;
	size_t n = fmt_st_count(st);
	if (fmt_st_writer_new(&ctx, path, &w))
		return;
	for (size_t i = 0; i < fmt_st_meta_count(st); i++) {
		const char *k, *v;
		fmt_st_meta(st, i, &k, &v);
		if (fmt_st_writer_meta(w, k, v))
			abort();
	}
	for (size_t i = 0; i < n; i++) {
		const struct fmt_st_tensor *t = fmt_st_tensor(st, i);
		if (fmt_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape)) {
			fmt_st_writer_free(w); /* a name the writer refuses (e.g. empty) */
			return;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (fmt_st_writer_write(w, fmt_st_tensor(st, i)->data, fmt_st_tensor(st, i)->nbytes))
			abort();
	if (fmt_st_writer_finish(w) || fmt_st_open(&ctx, path, &back))
		abort();
	fmt_st_writer_free(w);
	if (fmt_st_count(back) != n)
		abort();
	for (size_t i = 0; i < n; i++) {
		const struct fmt_st_tensor *a = fmt_st_tensor(st, i), *b = fmt_st_find(back, a->name);
		if (!b || b->nbytes != a->nbytes || b->dtype != a->dtype || b->ndim != a->ndim ||
		    (a->nbytes && memcmp(a->data, b->data, a->nbytes)))
			abort();
	}
	fmt_st_close(back);
	unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64], out[80];
	struct hm_ctx ctx = {0};
	struct fmt_st *st = NULL;
	FILE *f;
	snprintf(path, sizeof(path), "/tmp/hm-fuzz-st-%ld", (long)getpid());
	snprintf(out, sizeof(out), "%s.out", path);
	if (!(f = fopen(path, "wb")))
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	if (fmt_st_open(&ctx, path, &st) == HM_OK) {
		uint64_t end = 8 + fmt_st_header_len(st);
		for (size_t i = 0; i < fmt_st_count(st); i++) {
			const struct fmt_st_tensor *t = fmt_st_tensor(st, i);
			if (t->file_offset != end || t->file_offset + t->nbytes > size || fmt_st_find(st, t->name) != t)
				abort();
			if (t->nbytes && (t->data[0] != data[t->file_offset] || t->data[t->nbytes - 1] != data[end + t->nbytes - 1]))
				abort();
			end += t->nbytes;
		}
		if (end != size)
			abort();
		rewrite(st, out);
		fmt_st_close(st);
	} else if (!ctx.errmsg[0]) {
		abort(); /* every failure says why */
	}
	unlink(path);
	return 0;
}
