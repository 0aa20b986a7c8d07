/* test_formats.c - safetensors and GGUF: writers read back by the readers,
 * sharded sets, and a hand-made malformed file for every rejection rule. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "../../util/util.h"
#include "../../formats/formats-int.h" /* the single-file reader and the safetensors writer */

static char path_buf[4][512];

static const char *tpath(int slot, const char *name)
{
	snprintf(path_buf[slot], sizeof(path_buf[slot]), "%s/%s", unit_tmpdir(), name);
	return path_buf[slot];
}

static int write_bytes(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	if (n && fwrite(p, 1, n, f) != n) {
		fclose(f);
		return -1;
	}
	return fclose(f);
}

/* ---- safetensors ---- */

/* N (8 bytes LE) + header + ndata zero bytes. */
static int st_file(const char *path, const char *header, size_t ndata)
{
	size_t h = strlen(header), n = 8 + h + ndata;
	unsigned char *p = calloc(1, n);
	int r;
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)((uint64_t)h >> (8 * i));
	memcpy(p + 8, header, h);
	r = write_bytes(path, p, n);
	free(p);
	return r;
}

/* Opens path and expects HM_ERR_BAD_INPUT with a message naming the file and needle. */
static int st_rejects(const char *path, const char *needle)
{
	struct hm_ctx ctx = {0};
	struct fmt_st *st = NULL;
	enum hm_err err = fmt_st_open(&ctx, path, &st);
	fmt_st_close(st);
	if (err != HM_ERR_BAD_INPUT || !strstr(ctx.errmsg, needle) || !strstr(ctx.errmsg, path)) {
		printf("  got %d '%s', wanted '%s'\n", err, ctx.errmsg, needle);
		return 0;
	}
	return 1;
}

static int st_bad(const char *header, size_t ndata, const char *needle)
{
	const char *p = tpath(0, "bad.safetensors");
	return st_file(p, header, ndata) == 0 && st_rejects(p, needle);
}

UNIT_TEST(formats_st_roundtrip)
{
	struct hm_ctx ctx = {0};
	struct fmt_st_writer *w = NULL;
	struct fmt_st *st = NULL;
	const struct fmt_st_tensor *t;
	float a[6] = {1, 2, 3, 4, 5, 6};
	uint16_t b[4] = {1, 2, 3, 4};
	unsigned char c[3] = {0x12, 0x34, 0x56}, s = 7;
	uint64_t sa[2] = {2, 3}, sb[1] = {4}, sc[2] = {3, 2}, sz[3] = {0, 5, 2};
	const char *path = tpath(0, "m.safetensors"), *k, *v;
	unsigned char all[24 + 8 + 3 + 1];

	CHECK(fmt_st_writer_new(&ctx, path, &w) == HM_OK);
	CHECK(fmt_st_writer_meta(w, "format", "pt") == HM_OK);
	CHECK(fmt_st_writer_add(w, "a.weight", FMT_F32, 2, sa) == HM_OK);
	CHECK(fmt_st_writer_add(w, "b", FMT_BF16, 1, sb) == HM_OK);
	CHECK(fmt_st_writer_add(w, "c\xc3\xa9", FMT_F4, 2, sc) == HM_OK);
	CHECK(fmt_st_writer_add(w, "empty", FMT_F16, 3, sz) == HM_OK);
	CHECK(fmt_st_writer_add(w, "scalar", FMT_U8, 0, NULL) == HM_OK);
	CHECK(fmt_st_writer_add(w, "b", FMT_F32, 1, sb) == HM_ERR_USAGE);
	CHECK(fmt_st_writer_add(w, "__metadata__", FMT_F32, 1, sb) == HM_ERR_USAGE);
	memcpy(all, a, 24);
	memcpy(all + 24, b, 8);
	memcpy(all + 32, c, 3);
	all[35] = s;
	/* odd chunks across tensor boundaries */
	CHECK(fmt_st_writer_write(w, all, 5) == HM_OK);
	CHECK(fmt_st_writer_write(w, all + 5, 22) == HM_OK);
	CHECK(fmt_st_writer_write(w, all + 27, 9) == HM_OK);
	CHECK(fmt_st_writer_add(w, "late", FMT_F32, 1, sb) == HM_ERR_USAGE);
	CHECK(fmt_st_writer_finish(w) == HM_OK);
	fmt_st_writer_free(w);

	CHECK(fmt_st_open(&ctx, path, &st) == HM_OK);
	CHECK(fmt_st_header_len(st) % 8 == 0);
	CHECK(fmt_st_count(st) == 5);
	CHECK(fmt_st_meta_count(st) == 1);
	fmt_st_meta(st, 0, &k, &v);
	CHECK_STR(k, "format");
	CHECK_STR(v, "pt");
	CHECK_STR(fmt_st_meta_get(st, "format"), "pt");
	t = fmt_st_tensor(st, 0);
	CHECK_STR(t->name, "a.weight");
	CHECK(t->dtype == FMT_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->nelem == 6);
	CHECK(t->nbytes == 24 && !memcmp(t->data, a, 24));
	CHECK(t->file_offset == 8 + fmt_st_header_len(st));
	t = fmt_st_find(st, "c\xc3\xa9");
	CHECK(t && t->dtype == FMT_F4 && t->nbytes == 3 && !memcmp(t->data, c, 3));
	t = fmt_st_find(st, "b");
	CHECK(t && t->dtype == FMT_BF16 && !memcmp(t->data, b, 8));
	t = fmt_st_find(st, "empty");
	CHECK(t && t->nbytes == 0 && t->nelem == 0 && t->ndim == 3);
	t = fmt_st_find(st, "scalar");
	CHECK(t && t->ndim == 0 && t->nelem == 1 && t->nbytes == 1 && t->data[0] == 7);
	CHECK(fmt_st_find(st, "nope") == NULL);
	CHECK(fmt_st_file_size(st) == 8 + fmt_st_header_len(st) + 36);
	fmt_st_close(st);
}

UNIT_TEST(formats_st_writer_misuse)
{
	struct hm_ctx ctx = {0};
	struct fmt_st_writer *w = NULL;
	uint64_t s1[1] = {2};
	const char *path = tpath(0, "w.safetensors");
	char buf[16] = {0};
	FILE *f;
	CHECK(fmt_st_writer_new(&ctx, path, &w) == HM_OK);
	CHECK(fmt_st_writer_add(w, "x", FMT_F32, 1, s1) == HM_OK);
	CHECK(fmt_st_writer_write(w, buf, 4) == HM_OK);
	CHECK(fmt_st_writer_finish(w) == HM_ERR_USAGE); /* 4 of 8 bytes */
	CHECK(fmt_st_writer_write(w, buf, 16) == HM_ERR_USAGE);
	fmt_st_writer_free(w);
	CHECK((f = fopen(path, "rb")) == NULL); /* nothing left behind */
	CHECK(fmt_st_writer_new(&ctx, path, &w) == HM_OK);
	CHECK(fmt_st_writer_add(w, "x", FMT_F32, 1, s1) == HM_OK);
	CHECK(fmt_st_writer_write(w, buf, 9) == HM_ERR_USAGE);
	fmt_st_writer_free(w);
	CHECK(fmt_st_writer_new(&ctx, path, &w) == HM_OK);
	CHECK(fmt_st_writer_finish(w) == HM_OK); /* no tensors is a valid file */
	fmt_st_writer_free(w);
	struct fmt_st *st = NULL;
	CHECK(fmt_st_open(&ctx, path, &st) == HM_OK);
	CHECK(fmt_st_count(st) == 0);
	fmt_st_close(st);
}

UNIT_TEST(formats_st_rejects_framing)
{
	const char *p = tpath(0, "short.safetensors");
	unsigned char n[8] = {0};
	CHECK(write_bytes(p, "\x02\0\0\0\0\0", 6) == 0);
	CHECK(st_rejects(p, "too short"));
	CHECK(write_bytes(p, "", 0) == 0);
	CHECK(st_rejects(p, "too short"));
	/* N = 100,000,001 */
	uint64_t big = 100000001;
	for (int i = 0; i < 8; i++)
		n[i] = (unsigned char)(big >> (8 * i));
	CHECK(write_bytes(p, n, 8) == 0);
	CHECK(st_rejects(p, "over the limit"));
	memset(n, 0xff, 8); /* N + 8 overflows */
	CHECK(write_bytes(p, n, 8) == 0);
	CHECK(st_rejects(p, "over the limit"));
	memset(n, 0, 8);
	n[0] = 200; /* past EOF */
	CHECK(write_bytes(p, n, 8) == 0);
	CHECK(st_rejects(p, "past the end of the file"));
	CHECK(st_bad("[]", 0, "start with '{'"));
	CHECK(st_bad(" {}", 0, "start with '{'"));
	CHECK(st_bad("{\"a\xff\":1}", 0, "UTF-8"));
	CHECK(st_bad("{\"a\xc0\xaf\":1}", 0, "UTF-8"));  /* overlong */
	CHECK(st_bad("{\"a\":", 0, "not valid JSON"));
	CHECK(st_bad("{} x", 0, "not valid JSON"));
	CHECK(st_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
		     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "duplicate"));
	CHECK(st_bad("{\"a\":[]}", 0, "not an object"));
	CHECK(st_bad("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__"));
	CHECK(st_bad("{\"__metadata__\":[]}", 0, "__metadata__"));
}

UNIT_TEST(formats_st_accepts_padding_and_scalars)
{
	struct hm_ctx ctx = {0};
	struct fmt_st *st = NULL;
	const char *p = tpath(0, "ok.safetensors");
	CHECK(st_file(p, "{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]},"
			 "\"z\":{\"dtype\":\"I32\",\"shape\":[0,4],\"data_offsets\":[8,8]}}     ", 8) == 0);
	CHECK(fmt_st_open(&ctx, p, &st) == HM_OK);
	CHECK(fmt_st_count(st) == 2);
	CHECK(fmt_st_find(st, "s")->nbytes == 8);
	fmt_st_close(st);
}

#define T1(dtype, shape, off) "{\"a\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" off "}}"

UNIT_TEST(formats_st_rejects_entries)
{
	CHECK(st_bad(T1("F33", "[1]", "[0,4]"), 4, "unknown dtype 'F33'"));
	CHECK(st_bad("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "no dtype"));
	CHECK(st_bad(T1("F32", "4", "[0,4]"), 4, "no shape list"));
	CHECK(st_bad(T1("F32", "[-1]", "[0,4]"), 4, "non-negative integers"));
	CHECK(st_bad(T1("F32", "[1.0]", "[0,4]"), 4, "non-negative integers"));
	CHECK(st_bad(T1("F32", "[\"1\"]", "[0,4]"), 4, "non-negative integers"));
	CHECK(st_bad(T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4, "9 dimensions"));
	CHECK(st_bad(T1("U8", "[4611686018427387904,4]", "[0,4]"), 4, "overflows"));
	CHECK(st_bad(T1("F32", "[2305843009213693952]", "[0,4]"), 4, "overflows"));
	CHECK(st_bad(T1("F4", "[3]", "[0,2]"), 2, "whole number of bytes"));
	CHECK(st_bad(T1("F6_E2M3", "[3]", "[0,2]"), 2, "whole number of bytes"));
	CHECK(st_bad(T1("F32", "[2]", "[0,4]"), 4, "needs 8 bytes but data_offsets hold 4"));
	CHECK(st_bad(T1("F32", "[1]", "[0]"), 4, "data_offsets"));
	CHECK(st_bad(T1("F32", "[1]", "[0,4,8]"), 4, "data_offsets"));
	CHECK(st_bad(T1("F32", "[1]", "[\"0\",4]"), 4, "data_offsets"));
	CHECK(st_bad(T1("F32", "[1]", "[-4,0]"), 4, "data_offsets"));
	CHECK(st_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets"));
	CHECK(st_bad(T1("F32", "[1]", "[8,4]"), 8, "ends at 4 before it begins at 8"));
	CHECK(st_bad(T1("F32", "[1]", "[4,8]"), 8, "gap"));
	CHECK(st_bad(T1("U8", "[100]", "[0,100]"), 96, "tensor 'a' ends at 100 but the data is 96 bytes"));
	CHECK(st_bad(T1("U8", "[4]", "[0,4]"), 5, "1 trailing bytes"));
	CHECK(st_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
		     "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}", 12, "an overlap"));
	CHECK(st_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
		     "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}", 12, "a gap"));
	CHECK(st_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
		     "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "an overlap"));
	CHECK(st_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},"
		     "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 9, "trailing"));
}

/* ---- sharded ---- */

static int shard(const char *path, const char *const *names, size_t n)
{
	struct hm_ctx ctx = {0};
	struct fmt_st_writer *w = NULL;
	uint64_t s[1] = {2};
	float v[2] = {1, 2};
	int ok = fmt_st_writer_new(&ctx, path, &w) == HM_OK;
	for (size_t i = 0; ok && i < n; i++)
		ok = fmt_st_writer_add(w, names[i], FMT_F32, 1, s) == HM_OK;
	for (size_t i = 0; ok && i < n; i++)
		ok = fmt_st_writer_write(w, v, 8) == HM_OK;
	ok = ok && fmt_st_writer_finish(w) == HM_OK;
	fmt_st_writer_free(w);
	return ok;
}

static int index_file(const char *json)
{
	return write_bytes(tpath(2, "model.safetensors.index.json"), json, strlen(json)) == 0;
}

static int set_rejects(const char *needle)
{
	struct hm_ctx ctx = {0};
	struct fmt_st_set *set = NULL;
	enum hm_err err = fmt_st_open_dir(&ctx, unit_tmpdir(), &set);
	fmt_st_set_close(set);
	if (err != HM_ERR_BAD_INPUT || !strstr(ctx.errmsg, needle)) {
		printf("  got %d '%s', wanted '%s'\n", err, ctx.errmsg, needle);
		return 0;
	}
	return 1;
}

UNIT_TEST(formats_st_sharded)
{
	struct hm_ctx ctx = {0};
	struct fmt_st_set *set = NULL;
	const char *a[] = {"l.0.w", "l.0.b"}, *b[] = {"l.1.w"};
	const struct fmt_st_tensor *t;
	CHECK(shard(tpath(0, "model-00001-of-00002.safetensors"), a, 2));
	CHECK(shard(tpath(1, "model-00002-of-00002.safetensors"), b, 1));
	CHECK(index_file("{\"metadata\":{\"total_size\":24},\"weight_map\":{"
			 "\"l.0.w\":\"model-00001-of-00002.safetensors\",\"l.0.b\":\"model-00001-of-00002.safetensors\","
			 "\"l.1.w\":\"model-00002-of-00002.safetensors\"}}"));
	CHECK(fmt_st_open_dir(&ctx, unit_tmpdir(), &set) == HM_OK);
	CHECK(fmt_st_set_count(set) == 3 && fmt_st_set_nshards(set) == 2);
	CHECK(fmt_st_set_total_size(set) == 24);
	t = fmt_st_set_find(set, "l.1.w");
	CHECK(t && t->shard == 1 && t->nbytes == 8 && ((const float *)(const void *)t->data)[1] == 2);
	CHECK_STR(fmt_st_set_shard_name(set, t->shard), "model-00002-of-00002.safetensors");
	CHECK(fmt_st_set_find(set, "l.0.b")->shard == 0);
	CHECK(fmt_st_count(fmt_st_set_shard(set, 0)) == 2);
	fmt_st_set_close(set);
	CHECK(fmt_st_open_dir(&ctx, tpath(2, "model.safetensors.index.json"), &set) == HM_OK);
	CHECK(fmt_st_set_count(set) == 3);
	fmt_st_set_close(set);
	CHECK(fmt_st_open_dir(&ctx, tpath(0, "model-00001-of-00002.safetensors"), &set) == HM_OK);
	CHECK(fmt_st_set_count(set) == 2 && fmt_st_set_total_size(set) == -1);
	fmt_st_set_close(set);

	/* the weight_map must agree with the shards */
	CHECK(index_file("{\"weight_map\":{\"l.0.w\":\"../model-00001-of-00002.safetensors\"}}"));
	CHECK(set_rejects("is not a file name in the index's directory"));
	CHECK(index_file("{\"weight_map\":{\"l.0.w\":\"sub/model-00001-of-00002.safetensors\"}}"));
	CHECK(set_rejects("is not a file name"));
	CHECK(index_file("{\"weight_map\":{\"l.0.w\":\"/etc/passwd\"}}"));
	CHECK(set_rejects("is not a file name"));
	CHECK(index_file("{\"weight_map\":{\"l.0.w\":7}}"));
	CHECK(set_rejects("not a file name"));
	CHECK(index_file("{\"weight_map\":[]}"));
	CHECK(set_rejects("weight_map"));
	CHECK(index_file("{\"weight_map\":{\"l.0.w\":\"a\",\"l.0.w\":\"b\"}}"));
	CHECK(set_rejects("duplicate"));
	CHECK(index_file("{\"weight_map\":{\"l.0.w\":\"model-00001-of-00002.safetensors\","
			 "\"l.0.b\":\"model-00001-of-00002.safetensors\",\"l.9\":\"model-00001-of-00002.safetensors\"}}"));
	CHECK(set_rejects("tensor 'l.9' is not in its shard"));
	CHECK(index_file("{\"weight_map\":{\"l.0.w\":\"model-00002-of-00002.safetensors\","
			 "\"l.0.b\":\"model-00001-of-00002.safetensors\",\"l.1.w\":\"model-00002-of-00002.safetensors\"}}"));
	CHECK(set_rejects("tensor 'l.0.w' is listed in 'model-00002-of-00002.safetensors'"));
	CHECK(index_file("{\"weight_map\":{\"l.0.w\":\"model-00001-of-00002.safetensors\"}}"));
	CHECK(set_rejects("which the weight_map does not list"));
	CHECK(index_file("{\"weight_map\":{\"l.0.w\":\"model-00009-of-00009.safetensors\"}}"));
	CHECK(set_rejects("is missing"));
	CHECK(index_file("{\"weight_map\":{\"l.0.w\":\"x.safetensors\"}}"));
	const char *dup[] = {"l.0.w"};
	CHECK(shard(tpath(0, "x.safetensors"), dup, 1));
	CHECK(index_file("{\"weight_map\":{\"l.0.w\":\"model-00001-of-00002.safetensors\","
			 "\"l.0.b\":\"model-00001-of-00002.safetensors\",\"x\":\"x.safetensors\"}}"));
	CHECK(set_rejects("in two shards"));
	CHECK(index_file("{\"metadata\":{\"total_size\":\"big\"},\"weight_map\":{}}"));
	CHECK(set_rejects("total_size"));
}

UNIT_TEST(formats_st_dir_single)
{
	struct hm_ctx ctx = {0};
	struct fmt_st_set *set = NULL;
	const char *a[] = {"w"};
	CHECK(fmt_st_open_dir(&ctx, unit_tmpdir(), &set) == HM_ERR_NOT_FOUND);
	CHECK(shard(tpath(0, "model.safetensors"), a, 1));
	CHECK(fmt_st_open_dir(&ctx, unit_tmpdir(), &set) == HM_OK);
	CHECK(fmt_st_set_count(set) == 1 && fmt_st_set_find(set, "w"));
	fmt_st_set_close(set);
}


/* ---- GGUF ---- */

static void gadd(struct util_buf *b, const void *p, size_t n)
{
	if (util_buf_add(b, p, n) < 0)
		abort();
}

static void g32(struct util_buf *b, uint32_t v)
{
	unsigned char p[4];
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
	gadd(b, p, 4);
}

static void g64(struct util_buf *b, uint64_t v)
{
	unsigned char p[8];
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
	gadd(b, p, 8);
}

static void gstr(struct util_buf *b, const char *s)
{
	g64(b, strlen(s));
	gadd(b, s, strlen(s));
}

static void ghead(struct util_buf *b, uint32_t version, uint64_t nt, uint64_t nkv)
{
	gadd(b, "GGUF", 4);
	g32(b, version);
	g64(b, nt);
	g64(b, nkv);
}

/* A tensor info with up to 2 dims (n_dims may say more). */
static void gtensor(struct util_buf *b, const char *name, uint32_t n_dims, uint64_t ne0, uint64_t ne1, uint32_t type,
		    uint64_t off)
{
	gstr(b, name);
	g32(b, n_dims);
	for (uint32_t i = 0; i < n_dims; i++)
		g64(b, i == 0 ? ne0 : i == 1 ? ne1 : 1);
	g32(b, type);
	g64(b, off);
}

static void gpad(struct util_buf *b, size_t a, size_t extra)
{
	static const char z[4096];
	gadd(b, z, (a - b->len % a) % a + extra);
}

static int gguf_rejects(struct util_buf *b, const char *needle)
{
	struct hm_ctx ctx = {0};
	struct fmt_gguf *g = NULL;
	const char *path = tpath(0, "bad.gguf");
	enum hm_err err;
	int ok = write_bytes(path, b->buf, b->len) == 0;
	util_buf_release(b);
	err = fmt_gguf_open(&ctx, path, &g);
	fmt_gguf_close(g);
	if (!ok || err != HM_ERR_BAD_INPUT || !strstr(ctx.errmsg, needle) || !strstr(ctx.errmsg, path)) {
		printf("  got %d '%s', wanted '%s'\n", err, ctx.errmsg, needle);
		return 0;
	}
	return 1;
}

UNIT_TEST(formats_gguf_roundtrip)
{
	struct hm_ctx ctx = {0};
	struct fmt_gguf_writer *w = NULL;
	struct fmt_gguf *g = NULL;
	const struct fmt_gguf_kv *kv;
	const struct fmt_gguf_tensor *t;
	struct fmt_gguf_iter it;
	struct fmt_gguf_value v;
	const char *path = tpath(0, "m.gguf"), *toks[] = {"<s>", "h\xc3\xa9llo", ""};
	int32_t ints[3] = {-1, 2, 70000};
	float fl[2] = {0.5f, -2.0f};
	uint64_t ne_a[2] = {3, 2}, ne_q[2] = {64, 2}, ne_h[1] = {5}, ne_i[1] = {7};
	float a[6] = {1, 2, 3, 4, 5, 6};
	unsigned char q[136], h[10], i32[28];
	for (size_t i = 0; i < sizeof(q); i++)
		q[i] = (unsigned char)i;
	memset(h, 0x3c, sizeof(h));
	memset(i32, 0x11, sizeof(i32));

	CHECK(fmt_gguf_writer_new(&ctx, path, &w) == HM_OK);
	CHECK(fmt_gguf_writer_str(w, "general.architecture", "llama") == HM_OK);
	CHECK(fmt_gguf_writer_u32(w, "general.alignment", 64) == HM_OK);
	CHECK(fmt_gguf_writer_u8(w, "t.u8", 200) == HM_OK);
	CHECK(fmt_gguf_writer_i8(w, "t.i8", -100) == HM_OK);
	CHECK(fmt_gguf_writer_u16(w, "t.u16", 60000) == HM_OK);
	CHECK(fmt_gguf_writer_i16(w, "t.i16", -30000) == HM_OK);
	CHECK(fmt_gguf_writer_i32(w, "t.i32", -7) == HM_OK);
	CHECK(fmt_gguf_writer_u64(w, "t.u64", 1ull << 40) == HM_OK);
	CHECK(fmt_gguf_writer_i64(w, "t.i64", -(1ll << 40)) == HM_OK);
	CHECK(fmt_gguf_writer_f32(w, "t.f32", 1e-5f) == HM_OK);
	CHECK(fmt_gguf_writer_f64(w, "t.f64", 3.25) == HM_OK);
	CHECK(fmt_gguf_writer_bool(w, "t.bool", 1) == HM_OK);
	CHECK(fmt_gguf_writer_str_arr(w, "tokenizer.ggml.tokens", toks, 3) == HM_OK);
	CHECK(fmt_gguf_writer_arr(w, "t.ints", FMT_GGUF_I32, ints, 3) == HM_OK);
	CHECK(fmt_gguf_writer_arr(w, "t.floats", FMT_GGUF_F32, fl, 2) == HM_OK);
	CHECK(fmt_gguf_writer_arr(w, "t.none", FMT_GGUF_U8, NULL, 0) == HM_OK);
	CHECK(fmt_gguf_writer_u8(w, "t.u8", 1) == HM_ERR_USAGE);
	CHECK(fmt_gguf_writer_u32(w, "general.alignment2", 3) == HM_OK);
	CHECK(fmt_gguf_writer_add_tensor(w, "a", 2, ne_a, FMT_GGML_F32) == HM_OK);
	CHECK(fmt_gguf_writer_add_tensor(w, "q", 2, ne_q, FMT_GGML_Q8_0) == HM_OK);
	CHECK(fmt_gguf_writer_add_tensor(w, "h", 1, ne_h, FMT_GGML_F16) == HM_OK);
	CHECK(fmt_gguf_writer_add_tensor(w, "i", 1, ne_i, FMT_GGML_I32) == HM_OK);
	CHECK(fmt_gguf_writer_add_tensor(w, "a", 1, ne_i, FMT_GGML_I32) == HM_ERR_USAGE);
	CHECK(fmt_gguf_writer_add_tensor(w, "bad", 1, ne_h, FMT_GGML_Q4_0) == HM_ERR_USAGE);
	CHECK(fmt_gguf_writer_add_tensor(w, "x123456789x123456789x123456789x123456789x123456789x123456789xyzw", 1,
					 ne_h, FMT_GGML_F32) == HM_ERR_USAGE);
	CHECK(fmt_gguf_writer_write(w, a, 10) == HM_OK);
	CHECK(fmt_gguf_writer_write(w, (const char *)a + 10, 14) == HM_OK);
	CHECK(fmt_gguf_writer_write(w, q, 100) == HM_OK);
	CHECK(fmt_gguf_writer_write(w, q + 100, 36) == HM_OK);
	CHECK(fmt_gguf_writer_write(w, h, 10) == HM_OK);
	CHECK(fmt_gguf_writer_finish(w) == HM_ERR_USAGE); /* 'i' missing */
	CHECK(fmt_gguf_writer_write(w, i32, 28) == HM_OK);
	CHECK(fmt_gguf_writer_write(w, i32, 1) == HM_ERR_USAGE);
	fmt_gguf_writer_free(w);

	/* again, completely */
	CHECK(fmt_gguf_writer_new(&ctx, path, &w) == HM_OK);
	CHECK(fmt_gguf_writer_str(w, "general.architecture", "llama") == HM_OK);
	CHECK(fmt_gguf_writer_u32(w, "general.alignment", 64) == HM_OK);
	CHECK(fmt_gguf_writer_i64(w, "t.i64", -(1ll << 40)) == HM_OK);
	CHECK(fmt_gguf_writer_f32(w, "t.f32", 1e-5f) == HM_OK);
	CHECK(fmt_gguf_writer_bool(w, "t.bool", 1) == HM_OK);
	CHECK(fmt_gguf_writer_i16(w, "t.i16", -30000) == HM_OK);
	CHECK(fmt_gguf_writer_str_arr(w, "tokenizer.ggml.tokens", toks, 3) == HM_OK);
	CHECK(fmt_gguf_writer_arr(w, "t.ints", FMT_GGUF_I32, ints, 3) == HM_OK);
	CHECK(fmt_gguf_writer_arr(w, "t.floats", FMT_GGUF_F32, fl, 2) == HM_OK);
	CHECK(fmt_gguf_writer_add_tensor(w, "a", 2, ne_a, FMT_GGML_F32) == HM_OK);
	CHECK(fmt_gguf_writer_add_tensor(w, "q", 2, ne_q, FMT_GGML_Q8_0) == HM_OK);
	CHECK(fmt_gguf_writer_add_tensor(w, "h", 1, ne_h, FMT_GGML_F16) == HM_OK);
	CHECK(fmt_gguf_writer_add_tensor(w, "i", 1, ne_i, FMT_GGML_I32) == HM_OK);
	CHECK(fmt_gguf_writer_write(w, a, 24) == HM_OK);
	CHECK(fmt_gguf_writer_write(w, q, 136) == HM_OK);
	CHECK(fmt_gguf_writer_write(w, h, 5) == HM_OK);
	CHECK(fmt_gguf_writer_write(w, h + 5, 5) == HM_OK);
	CHECK(fmt_gguf_writer_write(w, i32, 28) == HM_OK);
	CHECK(fmt_gguf_writer_finish(w) == HM_OK);
	fmt_gguf_writer_free(w);

	CHECK(fmt_gguf_open(&ctx, path, &g) == HM_OK);
	CHECK(fmt_gguf_version(g) == 3 && fmt_gguf_alignment(g) == 64);
	CHECK(fmt_gguf_data_offset(g) % 64 == 0);
	CHECK(fmt_gguf_kv_count(g) == 9 && fmt_gguf_tensor_count(g) == 4);
	CHECK_STR(fmt_gguf_kv(g, 0)->key, "general.architecture");
	kv = fmt_gguf_kv(g, 0);
	CHECK(kv->v.type == FMT_GGUF_STRING && kv->v.len == 5 && !memcmp(kv->v.str, "llama", 5));
	CHECK((kv = fmt_gguf_find_kv(g, "t.i64")) && kv->v.type == FMT_GGUF_I64 && kv->v.i == -(1ll << 40));
	CHECK((kv = fmt_gguf_find_kv(g, "t.f32")) && kv->v.f == (double)1e-5f);
	CHECK((kv = fmt_gguf_find_kv(g, "t.bool")) && kv->v.type == FMT_GGUF_BOOL && kv->v.u == 1);
	CHECK((kv = fmt_gguf_find_kv(g, "t.i16")) && kv->v.i == -30000);
	CHECK((kv = fmt_gguf_find_kv(g, "tokenizer.ggml.tokens")) && kv->v.type == FMT_GGUF_ARRAY);
	CHECK(kv->v.elem == FMT_GGUF_STRING && kv->v.count == 3);
	fmt_gguf_iter_init(&it, &kv->v);
	for (int i = 0; i < 3; i++) {
		CHECK(fmt_gguf_iter_next(&it, &v) == 1);
		CHECK(v.type == FMT_GGUF_STRING && v.len == strlen(toks[i]) && !memcmp(v.str, toks[i], v.len));
	}
	CHECK(fmt_gguf_iter_next(&it, &v) == 0);
	CHECK((kv = fmt_gguf_find_kv(g, "t.ints")) && kv->v.elem == FMT_GGUF_I32 && kv->v.raw_len == 12);
	fmt_gguf_iter_init(&it, &kv->v);
	for (int i = 0; i < 3; i++)
		CHECK(fmt_gguf_iter_next(&it, &v) == 1 && v.i == ints[i]);
	CHECK((kv = fmt_gguf_find_kv(g, "t.floats")) && kv->v.count == 2);
	fmt_gguf_iter_init(&it, &kv->v);
	CHECK(fmt_gguf_iter_next(&it, &v) && v.f == 0.5 && fmt_gguf_iter_next(&it, &v) && v.f == -2.0);
	CHECK(fmt_gguf_find_kv(g, "nope") == NULL);
	t = fmt_gguf_find_tensor(g, "a");
	CHECK(t && t->ndim == 2 && t->ne[0] == 3 && t->ne[1] == 2 && t->type == FMT_GGML_F32 && t->nelem == 6);
	CHECK(t->offset == 0 && t->nbytes == 24 && !memcmp(t->data, a, 24));
	t = fmt_gguf_find_tensor(g, "q");
	CHECK(t && t->offset == 64 && t->nbytes == 136 && t->nelem == 128 && !memcmp(t->data, q, 136));
	t = fmt_gguf_find_tensor(g, "h");
	CHECK(t && t->offset == 256 && t->nbytes == 10 && !memcmp(t->data, h, 10));
	t = fmt_gguf_tensor(g, 3);
	CHECK_STR(t->name, "i");
	CHECK(t->offset == 320 && !memcmp(t->data, i32, 28));
	CHECK(fmt_gguf_file_size(g) == fmt_gguf_data_offset(g) + 384);
	fmt_gguf_close(g);
}

UNIT_TEST(formats_ggml_types)
{
	uint64_t ne[4] = {256, 3, 1, 1}, n;
	uint32_t t;
	CHECK(fmt_ggml_nbytes(FMT_GGML_Q8_0, 2, ne, &n) == 0 && n == 8 * 34 * 3);
	CHECK(fmt_ggml_nbytes(FMT_GGML_Q4_0, 2, ne, &n) == 0 && n == 8 * 18 * 3);
	CHECK(fmt_ggml_nbytes(FMT_GGML_Q4_K, 2, ne, &n) == 0 && n == 144 * 3);
	CHECK(fmt_ggml_nbytes(FMT_GGML_Q6_K, 2, ne, &n) == 0 && n == 210 * 3);
	CHECK(fmt_ggml_nbytes(FMT_GGML_BF16, 2, ne, &n) == 0 && n == 2 * 256 * 3);
	CHECK(fmt_ggml_nbytes(FMT_GGML_F64, 2, ne, &n) == 0 && n == 8 * 256 * 3);
	ne[0] = 48;
	CHECK(fmt_ggml_nbytes(FMT_GGML_Q4_K, 2, ne, &n) == -1);
	CHECK(fmt_ggml_nbytes(4, 2, ne, &n) == -1);
	CHECK(fmt_ggml_type_name(4) == NULL && fmt_ggml_type_name(99) == NULL);
	CHECK_STR(fmt_ggml_type_name(FMT_GGML_Q2_K), "Q2_K");
	CHECK(fmt_ggml_type_parse("BF16", &t) == 0 && t == 30);
	CHECK(fmt_ggml_type_parse("Q4_2", &t) == -1);
	CHECK(fmt_ggml_block_size(FMT_GGML_Q8_K) == 256 && fmt_ggml_type_size(FMT_GGML_Q8_K) == 292);
}

/* A valid file around one metadata value (type t, body bytes). */
static void gguf_kv_file(struct util_buf *b, uint32_t t, const void *body, size_t n)
{
	ghead(b, 3, 0, 1);
	gstr(b, "k");
	g32(b, t);
	gadd(b, body, n);
}

UNIT_TEST(formats_gguf_rejects_header)
{
	struct util_buf b = UTIL_BUF_INIT;
	gadd(&b, "GGUF\3\0\0\0", 8);
	CHECK(gguf_rejects(&b, "too short"));
	ghead(&b, 3, 0, 0);
	b.buf[0] = 'X';
	CHECK(gguf_rejects(&b, "bad magic"));
	ghead(&b, 1, 0, 0);
	CHECK(gguf_rejects(&b, "version 1 is not supported"));
	ghead(&b, 4, 0, 0);
	CHECK(gguf_rejects(&b, "version 4 is not supported"));
	ghead(&b, 0x03000000, 0, 0); /* big-endian */
	CHECK(gguf_rejects(&b, "is not supported"));
	ghead(&b, 3, 0, 1000);
	CHECK(gguf_rejects(&b, "1000 metadata entries cannot fit"));
	ghead(&b, 3, UINT64_MAX, 0);
	CHECK(gguf_rejects(&b, "tensors cannot fit"));
	ghead(&b, 2, 0, 0); /* v2 and an empty file are fine */
	{
		struct hm_ctx ctx = {0};
		struct fmt_gguf *g = NULL;
		CHECK(write_bytes(tpath(1, "v2.gguf"), b.buf, b.len) == 0);
		util_buf_release(&b);
		CHECK(fmt_gguf_open(&ctx, tpath(1, "v2.gguf"), &g) == HM_OK);
		CHECK(fmt_gguf_version(g) == 2 && fmt_gguf_alignment(g) == 32 && fmt_gguf_tensor_count(g) == 0);
		fmt_gguf_close(g);
	}
}

UNIT_TEST(formats_gguf_rejects_metadata)
{
	struct util_buf b = UTIL_BUF_INIT;
	unsigned char body[64] = {0};
	/* key of 2 GiB */
	ghead(&b, 3, 0, 1);
	g64(&b, 1ull << 31);
	gpad(&b, 1, 32);
	CHECK(gguf_rejects(&b, "is over 1 GiB"));
	/* key cut short */
	ghead(&b, 3, 0, 1);
	g64(&b, 30);
	gadd(&b, "abc", 3);
	gpad(&b, 1, 10);
	CHECK(gguf_rejects(&b, "past the end"));
	/* key with a NUL */
	ghead(&b, 3, 0, 1);
	g64(&b, 3);
	gadd(&b, "a\0b", 3);
	g32(&b, 0);
	gadd(&b, "x", 1);
	gpad(&b, 1, 8);
	CHECK(gguf_rejects(&b, "UTF-8"));
	/* a string value of 2 GiB */
	for (int i = 0; i < 8; i++)
		body[i] = (unsigned char)((1ull << 31) >> (8 * i));
	gguf_kv_file(&b, FMT_GGUF_STRING, body, 16);
	CHECK(gguf_rejects(&b, "metadata 'k': string of 2147483648 bytes is over 1 GiB"));
	/* a string value past EOF */
	memset(body, 0, sizeof(body));
	body[0] = 100;
	gguf_kv_file(&b, FMT_GGUF_STRING, body, 16);
	CHECK(gguf_rejects(&b, "goes past the end"));
	/* an array of 2^31 elements */
	memset(body, 0, sizeof(body));
	body[0] = FMT_GGUF_U8;
	body[4 + 3] = 0x80; /* count = 2^31 */
	gguf_kv_file(&b, FMT_GGUF_ARRAY, body, 24);
	CHECK(gguf_rejects(&b, "over the 1 GiB limit"));
	/* an array past EOF */
	memset(body, 0, sizeof(body));
	body[0] = FMT_GGUF_U32;
	body[4] = 100;
	gguf_kv_file(&b, FMT_GGUF_ARRAY, body, 24);
	CHECK(gguf_rejects(&b, "goes past the end"));
	/* a string array longer than the file */
	memset(body, 0, sizeof(body));
	body[0] = FMT_GGUF_STRING;
	body[4] = 100;
	gguf_kv_file(&b, FMT_GGUF_ARRAY, body, 24);
	CHECK(gguf_rejects(&b, "goes past the end"));
	/* unknown value types */
	gguf_kv_file(&b, 13, body, 8);
	CHECK(gguf_rejects(&b, "unknown value type 13"));
	memset(body, 0, sizeof(body));
	body[0] = 77;
	gguf_kv_file(&b, FMT_GGUF_ARRAY, body, 24);
	CHECK(gguf_rejects(&b, "array of unknown value type 77"));
	/* nesting too deep: array of array of ... */
	ghead(&b, 3, 0, 1);
	gstr(&b, "k");
	g32(&b, FMT_GGUF_ARRAY);
	for (int i = 0; i < 20; i++) {
		g32(&b, FMT_GGUF_ARRAY);
		g64(&b, 1);
	}
	gpad(&b, 1, 16);
	CHECK(gguf_rejects(&b, "nested"));
	/* scalar cut short */
	gguf_kv_file(&b, FMT_GGUF_U64, body, 4);
	CHECK(gguf_rejects(&b, "past the end"));
	/* duplicate keys */
	ghead(&b, 3, 0, 2);
	gstr(&b, "general.name");
	g32(&b, FMT_GGUF_U8);
	gadd(&b, "x", 1);
	gstr(&b, "general.name");
	g32(&b, FMT_GGUF_U8);
	gadd(&b, "y", 1);
	CHECK(gguf_rejects(&b, "duplicate metadata key 'general.name'"));
	/* alignment: u32 power of two */
	ghead(&b, 3, 0, 1);
	gstr(&b, "general.alignment");
	g32(&b, FMT_GGUF_U32);
	g32(&b, 48);
	gpad(&b, 1, 8);
	CHECK(gguf_rejects(&b, "48 is not a power of two"));
	ghead(&b, 3, 0, 1);
	gstr(&b, "general.alignment");
	g32(&b, FMT_GGUF_U32);
	g32(&b, 0);
	gpad(&b, 1, 8);
	CHECK(gguf_rejects(&b, "not a power of two"));
	ghead(&b, 3, 0, 1);
	gstr(&b, "general.alignment");
	g32(&b, FMT_GGUF_U64);
	g64(&b, 32);
	CHECK(gguf_rejects(&b, "not a u32"));
}

/* Header with no metadata and n tensors follows; the caller adds infos. */
UNIT_TEST(formats_gguf_rejects_tensors)
{
	struct util_buf b = UTIL_BUF_INIT;
	const char *long_name = "x123456789x123456789x123456789x123456789x123456789x123456789xyzw"; /* 64 */
	ghead(&b, 3, 1, 0);
	gtensor(&b, long_name, 1, 4, 1, FMT_GGML_F32, 0);
	gpad(&b, 32, 32);
	CHECK(gguf_rejects(&b, "is 64 bytes (at most 63)"));
	ghead(&b, 3, 1, 0);
	gtensor(&b, "t", 5, 4, 1, FMT_GGML_F32, 0);
	gpad(&b, 32, 32);
	CHECK(gguf_rejects(&b, "tensor 't' has 5 dimensions (at most 4)"));
	ghead(&b, 3, 1, 0);
	gtensor(&b, "t", 2, 1ull << 32, 1ull << 32, FMT_GGML_F32, 0);
	gpad(&b, 32, 32);
	CHECK(gguf_rejects(&b, "overflows"));
	ghead(&b, 3, 1, 0);
	gtensor(&b, "t", 1, 1ull << 63, 1, FMT_GGML_F32, 0);
	gpad(&b, 32, 32);
	CHECK(gguf_rejects(&b, "overflows"));
	ghead(&b, 3, 1, 0);
	gtensor(&b, "t", 2, 1ull << 61, 2, FMT_GGML_F32, 0); /* elements fit, bytes do not */
	gpad(&b, 32, 32);
	CHECK(gguf_rejects(&b, "overflows"));
	ghead(&b, 3, 1, 0);
	gtensor(&b, "t", 1, 4, 1, 4, 0);
	gpad(&b, 32, 32);
	CHECK(gguf_rejects(&b, "unknown type id 4"));
	ghead(&b, 3, 1, 0);
	gtensor(&b, "t", 1, 4, 1, 1000, 0);
	gpad(&b, 32, 32);
	CHECK(gguf_rejects(&b, "unknown type id 1000"));
	ghead(&b, 3, 1, 0);
	gtensor(&b, "t", 1, 48, 1, FMT_GGML_Q8_0, 0);
	gpad(&b, 32, 64);
	CHECK(gguf_rejects(&b, "ne0 48 is not a multiple of the Q8_0 block size 32"));
	ghead(&b, 3, 2, 0);
	gtensor(&b, "t", 1, 4, 1, FMT_GGML_F32, 0);
	gtensor(&b, "t", 1, 4, 1, FMT_GGML_F32, 32);
	gpad(&b, 32, 64);
	CHECK(gguf_rejects(&b, "duplicate tensor name 't'"));
	ghead(&b, 3, 1, 0);
	gtensor(&b, "t", 1, 4, 1, FMT_GGML_F32, 16);
	gpad(&b, 32, 64);
	CHECK(gguf_rejects(&b, "offset 16 is not aligned to 32"));
	ghead(&b, 3, 2, 0);
	gtensor(&b, "a", 1, 4, 1, FMT_GGML_F32, 0);
	gtensor(&b, "b", 1, 4, 1, FMT_GGML_F32, 64); /* should be 32 */
	gpad(&b, 32, 128);
	CHECK(gguf_rejects(&b, "tensor 'b' is at offset 64 but the previous tensors end at 32"));
	ghead(&b, 3, 2, 0);
	gtensor(&b, "a", 1, 4, 1, FMT_GGML_F32, 32); /* out of order */
	gtensor(&b, "b", 1, 4, 1, FMT_GGML_F32, 0);
	gpad(&b, 32, 64);
	CHECK(gguf_rejects(&b, "previous tensors end at 0"));
	ghead(&b, 3, 1, 0);
	gtensor(&b, "t", 2, 32, 2, FMT_GGML_F32, 0);
	gpad(&b, 32, 200); /* needs 256 */
	CHECK(gguf_rejects(&b, "tensor 't' (256 bytes at data offset 0) goes past the end of the file"));
	ghead(&b, 3, 1, 0);
	gtensor(&b, "t", 1, 4, 1, FMT_GGML_F32, 0);
	CHECK(gguf_rejects(&b, "past the end of the file")); /* no data section at all */
	ghead(&b, 3, 1, 0);
	gstr(&b, "t");
	g32(&b, 2);
	g64(&b, 4);
	g32(&b, 1); /* half of ne1 */
	CHECK(gguf_rejects(&b, "tensor 't' is cut short"));
}

/* A mapped file moved into memory keeps its bytes at the same addresses,
 * read-only, no longer backed by the file; a mapping that is not 2 MiB
 * aligned stays as it is. */
UNIT_TEST(formats_map_to_memory)
{
	struct hm_ctx ctx = {0};
	struct fmt_map m;
	char path[4096];
	const size_t n = ((size_t)5 << 20) + 12345;
	unsigned char *want = malloc(n);
	uint64_t s = 3;
	CHECK(want);
	for (size_t i = 0; i < n; i++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		want[i] = (unsigned char)(s >> 24);
	}
	snprintf(path, sizeof(path), "%s/tomem.bin", unit_tmpdir());
	FILE *f = fopen(path, "wb");
	CHECK(f && fwrite(want, 1, n, f) == n && fclose(f) == 0);
	CHECK(fmt_map_open(&ctx, path, &m) == HM_OK && m.p && m.size == n && !m.in_memory);
	CHECK(unit_in_file_mapping(m.p) == 1);
	const unsigned char *at = m.p;
	struct fmt_map shifted = {m.p + 4096, n - 4096, 0};
	CHECK(fmt_map_to_memory(&shifted, NULL) == 0 && !shifted.in_memory);
	int moved = fmt_map_to_memory(&m, NULL);
	CHECK(m.p == at && !memcmp(m.p, want, n));
	if (moved) {
		CHECK(m.in_memory && unit_in_file_mapping(m.p) == 0);
		CHECK(fmt_map_to_memory(&m, NULL) == 1 && m.p == at); /* once */
	} else {
		CHECK(!m.in_memory && unit_in_file_mapping(m.p) == 1);
		printf("  (no transparent huge pages here, or an unaligned mapping: the file stays mapped)\n");
	}
	fmt_map_close(&m);
	CHECK(!m.p && !m.in_memory);
	free(want);
}
