/* fuzz_pickle.c - libFuzzer target for the restricted unpickler: input
 * starting "PK" is a whole torch zip (opened, every tensor read back, then
 * mapped in place as the GGUF converter maps it), anything else is a
 * data.pkl. What is accepted must be self-consistent; every refusal must
 * say why. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../../formats/torch-int.h" /* the reader itself */
#include "../../formats/formats-int.h" /* fmt_dtype_bits */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_tensor(const struct fmt_pt_tensor *t)
{
	uint64_t n = 1;
	if (!t->name || !t->name[0] || !t->storage || t->ndim < 0 || t->ndim > FMT_MAX_DIMS)
		abort();
	for (int d = 0; d < t->ndim; d++)
		n *= t->shape[d];
	if (n != t->nelem || t->nbytes != t->nelem * (fmt_dtype_bits(t->dtype) / 8) ||
	    t->offset + t->nelem > t->storage_numel)
		abort();
}

/* The mapped view: every tensor inside the file, its bytes readable. */
static void map(const char *path, size_t size)
{
	struct hm_ctx ctx = {0};
	struct fmt_st_set *set = NULL;
	volatile unsigned char sink = 0;
	if (fmt_pt_map_single(&ctx, path, &set) != HM_OK) {
		if (!ctx.errmsg[0] || set)
			abort();
		return;
	}
	for (size_t i = 0; i < fmt_st_set_count(set); i++) {
		const struct fmt_st_tensor *t = fmt_st_set_tensor(set, i);
		if (t->file_offset > size || t->nbytes > size - t->file_offset ||
		    fmt_st_set_find(set, t->name) == NULL)
			abort();
		for (uint64_t b = 0; b < t->nbytes; b++)
			sink ^= t->data[b];
	}
	(void)sink;
	fmt_st_set_close(set);
}

static void zip(const uint8_t *data, size_t size)
{
	char path[64];
	struct hm_ctx ctx = {0};
	struct fmt_pt *pt = NULL;
	FILE *f;
	snprintf(path, sizeof(path), "/tmp/hm-fuzz-pt-%ld", (long)getpid());
	if (!(f = fopen(path, "wb")))
		return;
	fwrite(data, 1, size, f);
	fclose(f);
	if (fmt_pt_open(&ctx, path, &pt) == HM_OK) {
		for (size_t i = 0; i < fmt_pt_count(pt); i++) {
			const struct fmt_pt_tensor *t = fmt_pt_tensor(pt, i);
			void *buf;
			check_tensor(t);
			if (t->byte_offset + t->nbytes > t->storage_bytes || t->storage_bytes > size)
				abort();
			if (t->nbytes > (1u << 20) || !(buf = malloc(t->nbytes ? t->nbytes : 1)))
				continue;
			if (fmt_pt_read(pt, i, buf, t->nbytes) != HM_OK && !ctx.errmsg[0])
				abort();
			free(buf);
		}
		fmt_pt_close(pt);
		map(path, size);
	} else if (!ctx.errmsg[0]) {
		abort();
	}
	unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hm_ctx ctx = {0};
	struct fmt_pt_pickle *pk = NULL;
	if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
		zip(data, size);
		return 0;
	}
	if (fmt_pt_pickle_parse(&ctx, "fuzz.bin", data, size, &pk) == HM_OK) {
		for (size_t i = 0; i < fmt_pt_pickle_count(pk); i++)
			check_tensor(fmt_pt_pickle_tensor(pk, i));
		fmt_pt_pickle_free(pk);
	} else if (!ctx.errmsg[0] || pk) {
		abort();
	}
	return 0;
}
