/* test_engine.c - unit tests of engine/: number formats, every SIMD kernel
 * against the portable one, the thread pool, the sampler, and a tiny GGUF
 * model written with the library's writer (loaded, run, and refused when
 * broken). The numerics against an independent reference are in
 * tests/e2e/test_engine.py. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "../../engine/engine-int.h"
#include "../../formats/half.h"

UNIT_TEST(engine_half_floats)
{
	CHECK(fmt_f16_to_f32(0x3c00) == 1.0f);
	CHECK(fmt_f16_to_f32(0xc000) == -2.0f);
	CHECK(fmt_f16_to_f32(0x7bff) == 65504.0f);
	CHECK(fmt_f16_to_f32(0x0001) == ldexpf(1, -24));
	CHECK(fmt_f16_to_f32(0x03ff) == ldexpf(1023, -24));
	CHECK(fmt_f16_to_f32(0x8000) == 0 && signbit(fmt_f16_to_f32(0x8000)));
	CHECK(isinf(fmt_f16_to_f32(0x7c00)) && isnan(fmt_f16_to_f32(0x7e00)));
	CHECK(fmt_bf16_to_f32(0x3f80) == 1.0f);
	CHECK(fmt_bf16_to_f32(0xc0a0) == -5.0f);
	/* every binary16 value survives the round trip through binary32 (the
	 * engine reads with the conversion convert/ writes with) */
	int bad = 0;
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = fmt_f16_to_f32((uint16_t)h);
		if (isnan(f) ? !isnan(fmt_f16_to_f32(fmt_f32_to_f16(f))) : fmt_f32_to_f16(f) != h)
			bad++;
	}
	CHECK(bad == 0);
}

UNIT_TEST(engine_dequantize_blocks)
{
	unsigned char q8[34], q4[18];
	float y[32];
	q8[0] = 0x00, q8[1] = 0x38; /* fp16 0.5 */
	for (int j = 0; j < 32; j++)
		q8[2 + j] = (unsigned char)(int8_t)(j - 16);
	CHECK(eng_dequantize(FMT_GGML_Q8_0, q8, y, 32) == 0);
	for (int j = 0; j < 32; j++)
		CHECK(y[j] == (float)(j - 16) * 0.5f);
	q4[0] = 0x00, q4[1] = 0x40; /* fp16 2.0 */
	for (int j = 0; j < 16; j++)
		q4[2 + j] = (unsigned char)(j | (15 - j) << 4);
	CHECK(eng_dequantize(FMT_GGML_Q4_0, q4, y, 32) == 0);
	for (int j = 0; j < 16; j++) {
		CHECK(y[j] == (float)(j - 8) * 2);           /* low nibble: element j */
		CHECK(y[j + 16] == (float)(15 - j - 8) * 2); /* high nibble: element j+16 */
	}
	CHECK(eng_dequantize(FMT_GGML_Q4_0, q4, y, 31) == -1);
	CHECK(eng_dequantize(FMT_GGML_Q4_1, q4, y, 32) == -1);
	CHECK(eng_type_supported(FMT_GGML_BF16) && !eng_type_supported(FMT_GGML_Q6_K));
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Every kernel level this CPU has agrees with the portable one, at odd
 * lengths and unaligned rows. */
UNIT_TEST(engine_kernels_agree)
{
	enum { N = 32 * 13 };
	static const uint32_t types[] = {FMT_GGML_F32, FMT_GGML_F16, FMT_GGML_BF16, FMT_GGML_Q8_0, FMT_GGML_Q4_0};
	unsigned char *w = malloc(N * 4 + 1);
	float x[N], ref[N];
	uint64_t s = 42;
	const struct eng_kernels *c = eng_kernels_get(ENG_SIMD_SCALAR);
	CHECK(c && c->level == ENG_SIMD_SCALAR && eng_kernels_get(ENG_SIMD_AUTO));
	for (int i = 0; i < N; i++)
		x[i] = (float)((int)(rng_next(&s) % 2001) - 1000) / 1000.0f;
	for (size_t t = 0; t < sizeof(types) / sizeof(*types); t++) {
		unsigned char *row = w + 1; /* deliberately unaligned */
		for (int i = 0; i < N * 4; i++)
			row[i] = (unsigned char)rng_next(&s);
		if (types[t] == FMT_GGML_F32 || types[t] == FMT_GGML_F16 || types[t] == FMT_GGML_BF16)
			for (int i = 0; i < N; i++) { /* finite values of a sane size */
				float v = (float)((int)(rng_next(&s) % 2001) - 1000) / 500.0f;
				if (types[t] == FMT_GGML_F32)
					memcpy(row + 4 * i, &v, 4);
				else if (types[t] == FMT_GGML_BF16) {
					uint32_t u;
					memcpy(&u, &v, 4);
					row[2 * i] = (unsigned char)(u >> 16), row[2 * i + 1] = (unsigned char)(u >> 24);
				} else {
					row[2 * i] = (unsigned char)rng_next(&s), row[2 * i + 1] = (unsigned char)(rng_next(&s) % 0x78);
				}
			}
		else
			for (int b = 0; b < N / 32; b++) { /* small positive scales */
				size_t bs = types[t] == FMT_GGML_Q8_0 ? 34 : 18;
				row[b * bs] = 0, row[b * bs + 1] = 0x20;
			}
		int slot = eng_type_slot(types[t]);
		size_t lens[] = {N, types[t] <= FMT_GGML_F16 || types[t] == FMT_GGML_BF16 ? N - 5 : N - 32, 32, 7};
		for (size_t li = 0; li < 4; li++) {
			size_t n = lens[li];
			if ((types[t] == FMT_GGML_Q8_0 || types[t] == FMT_GGML_Q4_0) && n % 32)
				continue;
			float want = c->dot[slot](row, x, n);
			CHECK(eng_dequantize(types[t], row, ref, n) == 0);
			double exact = 0, mag = 0;
			for (size_t i = 0; i < n; i++)
				exact += (double)ref[i] * x[i], mag += fabs((double)ref[i] * x[i]);
			CHECK(fabs(want - exact) <= 1e-5 * mag + 1e-6);
			for (int lv = ENG_SIMD_AVX2; lv <= ENG_SIMD_AVX512; lv++) {
				const struct eng_kernels *k = eng_kernels_get((enum eng_simd)lv);
				if (!k)
					continue;
				float got = k->dot[slot](row, x, n);
				CHECK(fabs(got - exact) <= 1e-5 * mag + 1e-6);
			}
		}
	}
	CHECK(eng_kernels_get(eng_simd_best()) != NULL);
	free(w);
}

struct count_arg {
	atomic_int hits[1000];
};

static void count_task(void *arg, size_t task, int worker)
{
	struct count_arg *a = arg;
	(void)worker;
	atomic_fetch_add(&a->hits[task], 1);
}

UNIT_TEST(engine_pool_runs_every_task_once)
{
	struct util_pool *p = util_pool_new(4);
	static struct count_arg a;
	CHECK(p && util_pool_size(p) == 4);
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < 1000; i++)
			atomic_store(&a.hits[i], 0);
		size_t n = (size_t)(round * 20 % 1000);
		util_pool_run(p, count_task, &a, n);
		for (size_t i = 0; i < 1000; i++)
			CHECK(atomic_load(&a.hits[i]) == (i < n));
	}
	util_pool_free(p);
	util_pool_free(NULL);
}

UNIT_TEST(engine_sampler)
{
	struct hm_ctx ctx = {0};
	struct eng_sampler *g = NULL, *a = NULL, *b = NULL;
	float lg[8], l2[8];
	uint32_t sa[32], sb[32];
	CHECK(eng_sampler_new(&ctx, 8, 1.0f, 2.0f, 1, &g) == HM_ERR_USAGE && !g);
	CHECK(eng_sampler_new(&ctx, 8, 0.0f, 0.0f, 1, &g) == HM_OK);
	for (int i = 0; i < 8; i++)
		lg[i] = (float)(i % 5);
	CHECK(eng_sample(g, lg) == 4);
	CHECK(eng_sampler_new(&ctx, 8, 0.8f, 0.9f, 7, &a) == HM_OK);
	CHECK(eng_sampler_new(&ctx, 8, 0.8f, 0.9f, 7, &b) == HM_OK);
	int differs = 0;
	for (int r = 0; r < 32; r++) {
		for (int i = 0; i < 8; i++)
			lg[i] = l2[i] = (float)i * 0.3f;
		sa[r] = eng_sample(a, lg);
		sb[r] = eng_sample(b, l2);
		CHECK(sa[r] == sb[r] && sa[r] < 8);
		differs |= sa[r] != sa[0];
	}
	CHECK(differs);
	/* a tiny nucleus is the most likely token */
	eng_sampler_free(a);
	CHECK(eng_sampler_new(&ctx, 8, 1.0f, 1e-6f, 3, &a) == HM_OK);
	for (int i = 0; i < 8; i++)
		lg[i] = (float)(i == 2) * 3;
	CHECK(eng_sample(a, lg) == 2);
	eng_sampler_free(a);
	eng_sampler_free(b);
	eng_sampler_free(g);
	eng_sampler_free(NULL);
}

/* A tiny random GGUF llama: dim 32, 2 heads of 16 (1 kv head), ffn 64, vocab 40. */
static uint32_t tiny_vocab = 40; /* the tiny model's vocabulary (its token_embd rows) */

static enum hm_err write_tiny_typed(const char *path, int drop_ffn_up, uint32_t layers_kv, uint32_t type)
{
	struct hm_ctx ctx = {0};
	struct fmt_gguf_writer *w = NULL;
	enum { D = 32, F = 64, KV = 16 };
	const uint32_t V = tiny_vocab;
	struct {
		const char *name;
		uint64_t ne[2];
		int ndim;
	} ts[] = {
		{"token_embd.weight", {D, V}, 2},    {"output_norm.weight", {D, 1}, 1},
		{"blk.0.attn_norm.weight", {D, 1}, 1}, {"blk.0.attn_q.weight", {D, D}, 2},
		{"blk.0.attn_k.weight", {D, KV}, 2},  {"blk.0.attn_v.weight", {D, KV}, 2},
		{"blk.0.attn_output.weight", {D, D}, 2}, {"blk.0.ffn_norm.weight", {D, 1}, 1},
		{"blk.0.ffn_gate.weight", {D, F}, 2}, {"blk.0.ffn_up.weight", {D, F}, 2},
		{"blk.0.ffn_down.weight", {F, D}, 2},
	};
	enum hm_err err;
	uint64_t s = 9;
	if ((err = fmt_gguf_writer_new(&ctx, path, &w)) ||
	    (err = fmt_gguf_writer_str(w, "general.architecture", "llama")) ||
	    (err = fmt_gguf_writer_u32(w, "llama.block_count", layers_kv)) ||
	    (err = fmt_gguf_writer_u32(w, "llama.context_length", 64)) ||
	    (err = fmt_gguf_writer_u32(w, "llama.embedding_length", D)) ||
	    (err = fmt_gguf_writer_u32(w, "llama.feed_forward_length", F)) ||
	    (err = fmt_gguf_writer_u32(w, "llama.attention.head_count", 2)) ||
	    (err = fmt_gguf_writer_u32(w, "llama.attention.head_count_kv", 1)) ||
	    (err = fmt_gguf_writer_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)))
		goto out;
	for (size_t i = 0; i < sizeof(ts) / sizeof(*ts); i++)
		if (!(drop_ffn_up && !strcmp(ts[i].name, "blk.0.ffn_up.weight")) &&
		    (err = fmt_gguf_writer_add_tensor(w, ts[i].name, ts[i].ndim, ts[i].ne,
						       ts[i].ndim == 2 ? type : FMT_GGML_F32)))
			goto out;
	for (size_t i = 0; i < sizeof(ts) / sizeof(*ts); i++) {
		if (drop_ffn_up && !strcmp(ts[i].name, "blk.0.ffn_up.weight"))
			continue;
		if (ts[i].ndim == 2 && type == FMT_GGML_Q8_0) { /* scales 2^-8 and up, values -127..127 */
			for (uint64_t e = 0; e < ts[i].ne[0] * ts[i].ne[1] / 32; e++) {
				unsigned char blk[34] = {(unsigned char)rng_next(&s), (unsigned char)(0x1c + rng_next(&s) % 3)};
				for (int j = 2; j < 34; j++)
					blk[j] = (unsigned char)(int8_t)((int)(rng_next(&s) % 255) - 127);
				if ((err = fmt_gguf_writer_write(w, blk, sizeof(blk))))
					goto out;
			}
			continue;
		}
		for (uint64_t e = 0; e < ts[i].ne[0] * ts[i].ne[1]; e++) {
			float v = ts[i].ndim == 1 ? 1.0f : (float)((int)(rng_next(&s) % 201) - 100) / 400.0f;
			uint16_t h = fmt_f32_to_f16(v);
			if ((err = ts[i].ndim == 2 && type == FMT_GGML_F16 ? fmt_gguf_writer_write(w, &h, 2)
									     : fmt_gguf_writer_write(w, &v, 4)))
				goto out;
		}
	}
	err = fmt_gguf_writer_finish(w);
out:
	fmt_gguf_writer_free(w);
	return err;
}

static enum hm_err write_tiny(const char *path, int drop_ffn_up, uint32_t layers_kv)
{
	return write_tiny_typed(path, drop_ffn_up, layers_kv, FMT_GGML_F32);
}

UNIT_TEST(engine_tiny_gguf_runs)
{
	struct hm_ctx ctx = {0};
	struct eng_model *m = NULL;
	struct eng_state *s1 = NULL, *s4 = NULL;
	char path[4096];
	float a[40], b[40];
	snprintf(path, sizeof(path), "%s/tiny.gguf", unit_tmpdir());
	CHECK(write_tiny(path, 0, 1) == HM_OK);
	CHECK(eng_model_open(&ctx, path, &m) == HM_OK);
	const struct eng_config *c = eng_model_config(m);
	CHECK(c->dim == 32 && c->n_head == 2 && c->n_kv_head == 1 && c->head_dim == 16 && c->vocab == 40);
	CHECK(c->tied && c->interleaved_rope && c->rope_theta == 10000.0f && !strcmp(c->format, "gguf"));
	CHECK(eng_state_new(&ctx, m, 0, 1, ENG_SIMD_SCALAR, &s1) == HM_OK);
	CHECK(eng_state_ctx_len(s1) == 64 && eng_state_threads(s1) == 1);
	CHECK(eng_state_new(&ctx, m, 16, 4, ENG_SIMD_AUTO, &s4) == HM_OK);
	CHECK(eng_state_kv_bytes(s4) == 2ull * 16 * 16 * 4);
	for (uint32_t pos = 0; pos < 5; pos++) {
		CHECK(eng_forward(&ctx, s1, pos * 7 % 40, pos, a) == HM_OK);
		CHECK(eng_forward(&ctx, s4, pos * 7 % 40, pos, b) == HM_OK);
		for (int i = 0; i < 40; i++)
			CHECK(isfinite(a[i]) && fabsf(a[i] - b[i]) <= 1e-4f);
	}
	CHECK(eng_forward(&ctx, s4, 40, 5, b) == HM_ERR_USAGE);
	CHECK(eng_forward(&ctx, s4, 1, 16, b) == HM_ERR_USAGE);
	eng_state_free(s1);
	eng_state_free(s4);
	eng_model_close(m);
	eng_model_close(NULL);
	eng_state_free(NULL);
}

UNIT_TEST(engine_refuses_broken_gguf)
{
	struct hm_ctx ctx = {0};
	struct eng_model *m = NULL;
	char path[4096];
	snprintf(path, sizeof(path), "%s/broken.gguf", unit_tmpdir());
	CHECK(write_tiny(path, 1, 1) == HM_OK);
	CHECK(eng_model_open(&ctx, path, &m) == HM_ERR_BAD_INPUT && !m);
	CHECK(strstr(ctx.errmsg, "missing tensor 'blk.0.ffn_up.weight'"));
	CHECK(write_tiny(path, 0, 2000) == HM_OK);
	CHECK(eng_model_open(&ctx, path, &m) == HM_ERR_BAD_INPUT && !m);
	CHECK(strstr(ctx.errmsg, "block count 2000 is out of range"));
	CHECK(write_tiny(path, 0, 2) == HM_OK);
	CHECK(eng_model_open(&ctx, path, &m) == HM_ERR_BAD_INPUT && !m);
	CHECK(strstr(ctx.errmsg, "missing tensor 'blk.1."));
}

/* The matrix products of every level agree with the portable ones (R rows,
 * C columns, N tokens), and each output is the same to the bit whatever the
 * batch it was computed in; at the AMX level, a batch through Q8_0 weights
 * gives the portable level's bits (exact block sums, scaled and added in
 * the same order), and one token alone (the VNNI kernel) agrees with it to
 * rounding. Returns early (leaking, in a failing test) on the first failed
 * check. */
static void matmul_case(size_t R, size_t C, size_t N)
{
	static const uint32_t types[] = {FMT_GGML_F32, FMT_GGML_F16, FMT_GGML_BF16, FMT_GGML_Q8_0, FMT_GGML_Q4_0};
	unsigned char *w = malloc(R * C * 4);
	float *x = malloc(N * C * sizeof(float)), *y = malloc(N * R * sizeof(float)), *y1 = malloc(R * sizeof(float));
	float *ref = malloc(N * R * sizeof(float)), *d = malloc(N * C / 32 * sizeof(float));
	float *scr = malloc(3 * ENG_MM_TR * C * sizeof(float)); /* widened rows, 3 workers */
	unsigned char *xt = malloc(N * ENG_XT_BYTES(C));         /* prepared activations */
	unsigned char *xa = malloc(ENG_XA_BYTES(N, C));          /* packed activations */
	int8_t *q = malloc(N * C);
	uint64_t s = 7;
	struct util_pool *p = util_pool_new(3);
	CHECK(w && x && y && y1 && ref && d && q && p && scr && xt && xa);
	for (size_t i = 0; i < N * C; i++)
		x[i] = (float)((int)(rng_next(&s) % 2001) - 1000) / 300.0f;
	for (size_t t = 0; t < sizeof(types) / sizeof(*types); t++) {
		if (C % 32 && eng_type_int8(types[t])) /* rows of whole blocks only */
			continue;
		uint32_t bs = fmt_ggml_block_size(types[t]), ts = fmt_ggml_type_size(types[t]);
		size_t rb = C / bs * ts;
		for (size_t i = 0; i < R * rb; i++)
			w[i] = (unsigned char)rng_next(&s);
		for (size_t e = 0; e < R * rb / ts; e++) { /* finite values; block scales small and positive */
			unsigned char *v = w + e * ts;
			if (types[t] == FMT_GGML_F32)
				v[3] = (unsigned char)(0x3c + rng_next(&s) % 4);
			else if (types[t] == FMT_GGML_F16 || types[t] == FMT_GGML_Q8_0 || types[t] == FMT_GGML_Q4_0)
				v[1] = (unsigned char)(rng_next(&s) % 0x30);
			else
				v[1] = (unsigned char)(0x3c + rng_next(&s) % 4);
		}
		struct eng_weight wt = {types[t], R, C, rb, w};
		for (int lv = ENG_SIMD_SCALAR; lv <= ENG_SIMD_AMX; lv++) {
			const struct eng_kernels *k = eng_kernels_get((enum eng_simd)lv);
			if (!k)
				continue;
			/* AMX tiles for batches: Q8_0 (the scalar level's bits) and F16
			 * (bf16 parts, within 1e-5 of the FMA path) */
			const int exact = lv == ENG_SIMD_AMX && types[t] == FMT_GGML_Q8_0;
			const int tiles = exact || (lv == ENG_SIMD_AMX && types[t] == FMT_GGML_F16 && C % 32 == 0);
			struct eng_act a = {x, N, C, C, q, d, scr, ENG_MM_TR * C, xt, xa};
			struct eng_mm mm = {&wt, y, R};
			memset(y, 0xff, N * R * sizeof(float));
			eng_matmul_run(p, k, &a, &mm, 1);
			if (lv == ENG_SIMD_SCALAR)
				memcpy(ref, y, N * R * sizeof(float));
			/* float sums of C terms in another order: rounding grows about as sqrt(C) */
			const float tol = 1e-4f * (C > 256 ? sqrtf((float)C / 256) : 1);
			for (size_t i = 0; i < N * R; i++)
				CHECK(isfinite(y[i]) && fabsf(y[i] - ref[i]) <= tol * (1 + fabsf(ref[i])));
			if (exact)
				CHECK(!memcmp(y, ref, N * R * sizeof(float)));
			for (size_t tok = 0; tok < N; tok++) { /* one row alone: the same bits */
				struct eng_act a1 = {x + tok * C, 1, C, C, q, d, NULL, 0, NULL, NULL};
				struct eng_mm m1 = {&wt, y1, 0};
				eng_matmul_run(p, k, &a1, &m1, 1);
				for (size_t i = 0; tiles && i < R; i++)
					CHECK(fabsf(y1[i] - y[tok * R + i]) <= tol * (1 + fabsf(y[tok * R + i])));
				CHECK(tiles || !memcmp(y1, y + tok * R, R * sizeof(float)));
			}
			if (tiles && N >= 4) { /* the batch in two, each of two or more: the same bits */
				size_t h = N / 2;
				struct eng_act a1 = {x, h, C, C, q, d, scr, ENG_MM_TR * C, xt, xa};
				struct eng_act a2 = {x + h * C, N - h, C, C, q, d, scr, ENG_MM_TR * C, xt, xa};
				float *yy = malloc(N * R * sizeof(float));
				CHECK(yy);
				struct eng_mm m1 = {&wt, yy, R};
				eng_matmul_run(p, k, &a1, &m1, 1);
				m1.y = yy + h * R;
				eng_matmul_run(p, k, &a2, &m1, 1);
				int same = !memcmp(yy, y, N * R * sizeof(float));
				free(yy);
				CHECK(same);
			}
		}
	}
	util_pool_free(p);
	free(w);
	free(x);
	free(y);
	free(y1);
	free(ref);
	free(d);
	free(q);
	free(scr);
	free(xt);
	free(xa);
}

/* Batch sizes around the 4x4 tile, rows not a multiple of the tile, an odd
 * number of blocks; and rows so long that a batch of 6 tokens runs in two
 * blocks of tokens (the kernels keep a block's activations in L2). */
UNIT_TEST(engine_matmul_levels_agree)
{
	matmul_case(7, 32 * 5, 6);
	matmul_case(7, 32 * 5, 9);
	matmul_case(5, 32 * 801, 6);
	/* AMX: tiles of 16 rows and a rest, groups of 16 tokens and a short one,
	 * an odd number of blocks, two tokens (the smallest batch) */
	matmul_case(53, 32 * 7, 37);
	matmul_case(32, 32 * 4, 2);
	matmul_case(19, 32 * 1, 16);
	/* rows of TinyLlama's FFN (176 blocks; F16: 22 chunks of 256 columns), two token groups */
	matmul_case(32, 32 * 176, 18);
	/* float weights in batches: chunks of columns with a tail of 9, rows
	 * short of a tile, a short token tile */
	matmul_case(13, 512 * 2 + 16 * 3 + 9, 11);
}

/* The AMX level exists exactly where the CPU has AMX-INT8 and the kernel
 * grants the tile state, and it is then the best level. */
UNIT_TEST(engine_amx_level)
{
	const struct eng_kernels *k = eng_kernels_get(ENG_SIMD_AMX);
	CHECK(!strcmp(eng_simd_name(ENG_SIMD_AMX), "amx") && !eng_simd_name((enum eng_simd)(ENG_SIMD_AMX + 1)));
#if defined(__x86_64__)
	CHECK(!k == !eng_amx_usable());
#endif
	if (k)
		CHECK(eng_simd_best() == ENG_SIMD_AMX && k->level == ENG_SIMD_AMX);
	else
		CHECK(eng_simd_best() != ENG_SIMD_AMX);
}

/* The attention kernel of every level agrees with the portable one: head
 * sizes with and without a tail of 16, windows starting past 0, soft-capping. */
UNIT_TEST(engine_attention_levels_agree)
{
	enum { HD = 80, T = 150 };
	float *q = malloc(HD * sizeof(float)), *kt = malloc(HD * T * sizeof(float)), *v = malloc(T * 96 * sizeof(float));
	float *att = malloc(T * sizeof(float)), o[HD], ref[HD];
	uint64_t s = 11;
	CHECK(q && kt && v && att);
	for (int i = 0; i < HD; i++)
		q[i] = (float)((int)(rng_next(&s) % 2001) - 1000) / 400.0f;
	for (int i = 0; i < HD * T; i++)
		kt[i] = (float)((int)(rng_next(&s) % 2001) - 1000) / 400.0f;
	for (int i = 0; i < T * 96; i++)
		v[i] = (float)((int)(rng_next(&s) % 2001) - 1000) / 1000.0f;
	static const uint32_t hds[] = {64, 80, 16, 8}, t0s[] = {0, 0, 37, 5}, t1s[] = {1, 150, 150, 70};
	static const float caps[] = {0, 0, 0, 30.0f};
	for (int c = 0; c < 4; c++) {
		struct eng_attn_args a = {q, kt, v, T, 96, hds[c], t0s[c], t1s[c], 0.125f, caps[c], att, ref, 1, T};
		eng_attn_c(&a);
		for (int lv = ENG_SIMD_SCALAR; lv <= ENG_SIMD_AMX; lv++) {
			const struct eng_kernels *k = eng_kernels_get((enum eng_simd)lv);
			if (!k)
				continue;
			memset(o, 0xff, sizeof(o));
			a.o = o;
			k->attn(&a);
			for (uint32_t i = 0; i < hds[c]; i++) /* values of size 1: errors of a few ulp */
				CHECK(isfinite(o[i]) && fabsf(o[i] - ref[i]) <= 2e-6f);
		}
	}
	free(q);
	free(kt);
	free(v);
	free(att);
}

/* Query heads run as a group (their keys and values read once) give each
 * head's bits alone, at every level: 3 heads, a full group of 8, and 11
 * (a group and 3). */
UNIT_TEST(engine_attention_groups)
{
	enum { HD = 64, T = 90, NQ = 11 };
	float *q = malloc(NQ * HD * sizeof(float)), *kt = malloc(HD * T * sizeof(float)), *v = malloc(T * HD * sizeof(float));
	float *att = malloc(NQ * T * sizeof(float)), *o = malloc(NQ * HD * sizeof(float)), one[HD];
	uint64_t s = 5;
	CHECK(q && kt && v && att && o);
	for (int i = 0; i < NQ * HD; i++)
		q[i] = (float)((int)(rng_next(&s) % 2001) - 1000) / 400.0f;
	for (int i = 0; i < HD * T; i++)
		kt[i] = (float)((int)(rng_next(&s) % 2001) - 1000) / 400.0f;
	for (int i = 0; i < T * HD; i++)
		v[i] = (float)((int)(rng_next(&s) % 2001) - 1000) / 1000.0f;
	static const uint32_t nqs[] = {3, 8, 11};
	for (int lv = ENG_SIMD_SCALAR; lv <= ENG_SIMD_AMX; lv++) {
		const struct eng_kernels *k = eng_kernels_get((enum eng_simd)lv);
		if (!k)
			continue;
		for (int c = 0; c < 3; c++) {
			struct eng_attn_args a = {q, kt, v, T, HD, HD, 7, 83, 0.125f, c == 2 ? 20.0f : 0, att, o, nqs[c], T};
			memset(o, 0xff, NQ * HD * sizeof(float));
			k->attn(&a);
			for (uint32_t g = 0; g < nqs[c]; g++) {
				struct eng_attn_args a1 = {q + g * HD, kt, v, T, HD, HD, 7, 83, 0.125f, a.cap, att, one, 1, T};
				k->attn(&a1);
				CHECK(!memcmp(one, o + g * HD, sizeof(one)));
			}
		}
	}
	free(q);
	free(kt);
	free(v);
	free(att);
	free(o);
}

/* A prompt run as one batch gives the logits of the same prompt run token
 * by token, to the bit, at every level, for F32 weights. Through Q8_0 and
 * F16 weights at the AMX level a batch runs on tiles (exact block sums;
 * bf16 parts), a token alone does not: there the logits agree to rounding,
 * and any split of the prompt into batches of two or more tokens, on any
 * number of threads, gives the same bits. */
UNIT_TEST(engine_batch_equals_sequential)
{
	struct hm_ctx ctx = {0};
	struct eng_model *m = NULL;
	char path[4096];
	float a[40], b[40];
	uint32_t toks[7] = {3, 9, 27, 1, 39, 12, 5};
	snprintf(path, sizeof(path), "%s/tinyb.gguf", unit_tmpdir());
	static const uint32_t wtypes[] = {FMT_GGML_F32, FMT_GGML_Q8_0, FMT_GGML_F16};
	for (int wt = 0; wt < 3; wt++) {
		const int tiled = wtypes[wt] != FMT_GGML_F32;
		CHECK(write_tiny_typed(path, 0, 1, wtypes[wt]) == HM_OK);
		CHECK(eng_model_open(&ctx, path, &m) == HM_OK);
		for (int lv = ENG_SIMD_SCALAR; lv <= ENG_SIMD_AMX; lv++) {
			struct eng_state *s1 = NULL, *s2 = NULL;
			if (!eng_kernels_get((enum eng_simd)lv))
				continue;
			CHECK(eng_state_new(&ctx, m, 16, 2, (enum eng_simd)lv, &s1) == HM_OK);
			CHECK(eng_state_new(&ctx, m, 16, 3, (enum eng_simd)lv, &s2) == HM_OK);
			for (uint32_t i = 0; i < 7; i++)
				CHECK(eng_forward(&ctx, s1, toks[i], i, a) == HM_OK);
			CHECK(eng_forward_batch(&ctx, s2, toks, 7, 0, b) == HM_OK);
			if (tiled && lv == ENG_SIMD_AMX) {
				float c[40];
				for (int i = 0; i < 40; i++)
					CHECK(fabsf(a[i] - b[i]) <= 1e-4f * (1 + fabsf(a[i])));
				CHECK(eng_forward_batch(&ctx, s1, toks, 4, 0, c) == HM_OK); /* 4 + 3 on 2 threads */
				CHECK(eng_forward_batch(&ctx, s1, toks + 4, 3, 4, c) == HM_OK);
				CHECK(!memcmp(b, c, sizeof(c)));
			} else {
				CHECK(!memcmp(a, b, sizeof(a)));
			}
			CHECK(eng_forward_batch(&ctx, s2, toks, 0, 0, b) == HM_ERR_USAGE);
			CHECK(eng_forward_batch(&ctx, s2, toks, 7, 10, b) == HM_ERR_USAGE);
			eng_state_free(s1);
			eng_state_free(s2);
		}
		eng_model_close(m);
		m = NULL;
	}
}

/* A dense GGUF's weights move into huge-page memory when a state is made
 * (HUBMIRROR_MMAP=1 keeps the file mapping): the same logits either way. A
 * vocabulary of 20000 (a 2.6 MB file: the kernel maps it 2 MiB-aligned). */
UNIT_TEST(engine_weights_to_memory)
{
	struct hm_ctx ctx = {0};
	char path[4096];
	enum { V = 20000 };
	float *a = malloc(V * sizeof(float)), *b = malloc(V * sizeof(float));
	uint32_t toks[5] = {3, 9, 27, 1, 19999};
	CHECK(a && b);
	snprintf(path, sizeof(path), "%s/tinym.gguf", unit_tmpdir());
	tiny_vocab = V;
	enum hm_err werr = write_tiny(path, 0, 1);
	tiny_vocab = 40;
	CHECK(werr == HM_OK);
	for (int keep = 1; keep >= 0; keep--) {
		struct eng_model *m = NULL;
		struct eng_state *s = NULL;
		if (keep)
			CHECK(setenv("HUBMIRROR_MMAP", "1", 1) == 0);
		else
			CHECK(unsetenv("HUBMIRROR_MMAP") == 0);
		CHECK(eng_model_open(&ctx, path, &m) == HM_OK);
		CHECK(unit_in_file_mapping(m->layers[0].wq.data) == 1);
		CHECK(eng_state_new(&ctx, m, 16, 2, ENG_SIMD_AUTO, &s) == HM_OK);
		int file = unit_in_file_mapping(m->layers[0].wq.data);
		if (keep)
			CHECK(file == 1);
		else if (file)
			printf("  (no transparent huge pages here, or an unaligned mapping: the file stays mapped)\n");
		CHECK(eng_forward_batch(&ctx, s, toks, 5, 0, keep ? a : b) == HM_OK);
		eng_state_free(s);
		eng_model_close(m);
	}
	CHECK(!memcmp(a, b, V * sizeof(float)));
	free(a);
	free(b);
}
