/* test_convert.c - convert/: fp16/bf16 rounding, the ggml reference
 * quantizers on hand-computed blocks, the thread pool, and a conversion
 * whose output is damaged before the check. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "unit.h"
#include "../../convert/convert.h"
#include "../../verify/verify.h"
#include "../../convert/convert-int.h"
#include "../../formats/formats-int.h" /* the single-file reader and the safetensors writer */
#include "../../util/util.h"

static float from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

UNIT_TEST(convert_f16_rounding)
{
	CHECK(fmt_f32_to_f16(1.0f) == 0x3C00);
	CHECK(fmt_f32_to_f16(-2.0f) == 0xC000);
	CHECK(fmt_f32_to_f16(65504.0f) == 0x7BFF);
	CHECK(fmt_f32_to_f16(65520.0f) == 0x7C00);          /* rounds up to inf */
	CHECK(fmt_f32_to_f16(65519.0f) == 0x7BFF);
	CHECK(fmt_f32_to_f16(ldexpf(1, -24)) == 0x0001);    /* smallest subnormal */
	CHECK(fmt_f32_to_f16(ldexpf(1, -25)) == 0x0000);    /* tie to even: 0 */
	CHECK(fmt_f32_to_f16(ldexpf(3, -25)) == 0x0002);    /* tie to even: 2 */
	CHECK(fmt_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3C00); /* tie to even, down */
	CHECK(fmt_f32_to_f16(1.0f + ldexpf(3, -11)) == 0x3C02); /* tie to even, up */
	CHECK((fmt_f32_to_f16(NAN) & 0x7C00) == 0x7C00 && (fmt_f32_to_f16(NAN) & 0x03FF));
	/* every finite half survives f16 -> f32 -> f16 */
	for (uint32_t h = 0; h < 0x10000; h++) {
		if ((h & 0x7C00) == 0x7C00 && (h & 0x03FF))
			continue;
		CHECK(fmt_f32_to_f16(fmt_f16_to_f32((uint16_t)h)) == h);
	}
	CHECK(fmt_f16_to_f32(0x3555) == from_bits(0x3EAAA000));
}

UNIT_TEST(convert_f16_bulk_matches_scalar)
{
	enum { N = 4099 };
	float *x = malloc(N * sizeof(float)), *back = malloc(N * sizeof(float));
	unsigned char *out = malloc(N * 2);
	uint32_t s = 12345;
	CHECK(x && out && back);
	for (int i = 0; i < N; i++) {
		s = s * 1103515245u + 12345u;
		x[i] = from_bits((s & 0x8FFFFFFFu) | 0x30000000u); /* wide range incl. f16 subnormals and overflow */
	}
	conv_store(CONV_OUT_F16, x, N, out);
	for (int i = 0; i < N; i++)
		CHECK((uint16_t)(out[2 * i] | out[2 * i + 1] << 8) == fmt_f32_to_f16(x[i]));
	conv_load_out(CONV_OUT_F16, out, N, back);
	for (int i = 0; i < N; i++)
		CHECK(back[i] == fmt_f16_to_f32(fmt_f32_to_f16(x[i])) || isnan(back[i]));
	free(x);
	free(out);
	free(back);
}

UNIT_TEST(convert_bf16_rounding)
{
	CHECK(fmt_f32_to_bf16(1.0f) == 0x3F80);
	CHECK(fmt_f32_to_bf16(from_bits(0x3F808000)) == 0x3F80); /* tie, even stays */
	CHECK(fmt_f32_to_bf16(from_bits(0x3F818000)) == 0x3F82); /* tie, odd rounds up */
	CHECK(fmt_f32_to_bf16(from_bits(0x3F808001)) == 0x3F81);
	CHECK(fmt_f32_to_bf16(from_bits(0x7F800001)) == 0x7FC0); /* signalling NaN made quiet */
	CHECK(fmt_f32_to_bf16(from_bits(0x7F7FFFFF)) == 0x7F80); /* max float rounds to inf */
	CHECK(fmt_bf16_to_f32(0xC040) == -3.0f);
}

UNIT_TEST(convert_q8_0_reference)
{
	float x[64], y[64];
	unsigned char q[68];
	/* block 1: amax 127 -> d 1, id 1: roundf sends halves away from zero */
	for (int j = 0; j < 32; j++)
		x[j] = 0;
	x[0] = 127.0f;
	x[1] = 2.5f;
	x[2] = -2.5f;
	x[3] = 0.49999997f;
	x[4] = -126.5f;
	/* block 2: j - 16, amax 16 */
	for (int j = 0; j < 32; j++)
		x[32 + j] = (float)(j - 16);
	conv_quantize_q8_0(x, q, 64);
	CHECK(q[0] == 0x00 && q[1] == 0x3C); /* d = 1.0 as f16 */
	CHECK((int8_t)q[2] == 127 && (int8_t)q[3] == 3 && (int8_t)q[4] == -3 && (int8_t)q[5] == 0 &&
	      (int8_t)q[6] == -127);
	CHECK((uint16_t)(q[34] | q[35] << 8) == fmt_f32_to_f16(16.0f / 127));
	CHECK((int8_t)q[36] == -127 && (int8_t)q[36 + 17] == 8 && (int8_t)q[36 + 18] == 16 &&
	      (int8_t)q[36 + 31] == 119);
	conv_dequantize_q8_0(q, y, 64);
	for (int j = 0; j < 64; j++) {
		float d = j < 32 ? 1.0f : 16.0f / 127;
		CHECK(fabsf(x[j] - y[j]) <= d * 0.5f + 127 * d * 0x1p-11f + 1e-6f);
	}
	/* an all-zero block: d 0, every q 0 */
	memset(x, 0, sizeof(x));
	conv_quantize_q8_0(x, q, 32);
	for (int j = 0; j < 34; j++)
		CHECK(q[j] == 0);
}

/* Fills n floats (whole blocks of 32) with seeded values in
 * +-[0, spread/2), the scale of block b growing as 1 + b % spread. */
static void fill_blocks(float *x, size_t n, uint32_t seed, int spread)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		x[i] = ((float)(seed >> 8) / (float)(1u << 24) - 0.5f) * (float)(1 + (i / 32) % (size_t)spread);
	}
}

UNIT_TEST(convert_q8_0_vector_matches_reference)
{
	enum { N = 32 * 512 };
	float *x = malloc(N * sizeof(float));
	unsigned char *a = malloc(N / 32 * 34), *b = malloc(N / 32 * 34);
	CHECK(x && a && b);
	fill_blocks(x, N, 99u, 7);
	/* blocks whose scaled values land exactly on halves: amax 127 gives d = 1 */
	for (int blk = 0; blk < 64; blk++) {
		x[blk * 32] = blk % 2 ? -127.0f : 127.0f;
		for (int j = 1; j < 32; j++)
			x[blk * 32 + j] = (float)((j * 7 + blk) % 200 - 100) + 0.5f;
	}
	memset(x + 64 * 32, 0, 32 * sizeof(float)); /* and an all-zero block */
	conv_store(CONV_OUT_Q8_0, x, N, a);
	conv_quantize_q8_0(x, b, N);
	CHECK(memcmp(a, b, N / 32 * 34) == 0);
	free(x);
	free(a);
	free(b);
}

UNIT_TEST(convert_q4_0_vector_matches_reference)
{
	enum { N = 32 * 512 };
	float *x = malloc(N * sizeof(float));
	unsigned char *a = malloc(N / 32 * 18), *b = malloc(N / 32 * 18);
	CHECK(x && a && b);
	fill_blocks(x, N, 7u, 5);
	/* ties of magnitude (the first wins, whatever its sign), values that
	 * land on the clamp and on exact halves, an all-zero block, a NaN */
	for (int blk = 0; blk < 64; blk++) {
		float *v = x + blk * 32;
		v[blk % 32] = blk % 2 ? -8.0f : 8.0f;
		v[(blk + 5) % 32] = blk % 2 ? 8.0f : -8.0f;
		v[(blk + 9) % 32] = 7.0f + 0.5f * (float)(blk % 3);
	}
	memset(x + 64 * 32, 0, 32 * sizeof(float));
	x[65 * 32 + 3] = NAN;
	conv_store(CONV_OUT_Q4_0, x, N, a);
	conv_quantize_q4_0(x, b, N);
	/* the NaN block is undefined in the reference (a NaN cast to int): skip it */
	memset(a + 65 * 18, 0, 18);
	memset(b + 65 * 18, 0, 18);
	CHECK(memcmp(a, b, N / 32 * 18) == 0);
	free(x);
	free(a);
	free(b);
}

/* The check of quantized blocks, SIMD and scalar alike: the reference's
 * own bytes pass; any one flipped bit of a block (scale or value) fails,
 * naming an element of that block. */
UNIT_TEST(convert_check_quant_catches_every_flip)
{
	enum { N = 32 * 64 };
	float *x = malloc(N * sizeof(float)), *scratch = malloc(N * sizeof(float));
	unsigned char *q = malloc(N / 32 * 34);
	CHECK(x && scratch && q);
	fill_blocks(x, N, 5u, 9);
	for (int j = 0; j < 32; j++) /* values landing on exact halves (Q8_0: d = 1) */
		x[32 + j] = j ? (float)(j * 3 % 120) - 60.5f : 127.0f;
	memset(x + 64, 0, 32 * sizeof(float)); /* an all-zero block */
	for (int t = CONV_OUT_Q8_0; t <= CONV_OUT_Q4_0; t++) {
		const size_t bs = t == CONV_OUT_Q8_0 ? 34 : 18, nb = N / 32 * bs;
		float worst = 0;
		size_t bad = 0;
		if (t == CONV_OUT_Q8_0)
			conv_quantize_q8_0(x, q, N);
		else
			conv_quantize_q4_0(x, q, N);
		CHECK(conv_check_quant((enum conv_out_type)t, x, q, N, scratch, &worst, &bad) == 1);
		CHECK(conv_check_quant_scalar((enum conv_out_type)t, x, q, N, scratch, &worst, &bad) == 1);
		CHECK(worst > 0);
		for (size_t byte = 0; byte < nb; byte += 7) {
			for (int bit = 0; bit < 8; bit++) {
				int simd, scalar;
				size_t b1 = SIZE_MAX, b2 = SIZE_MAX;
				q[byte] ^= (unsigned char)(1u << bit);
				simd = conv_check_quant((enum conv_out_type)t, x, q, N, scratch, &worst, &b1);
				scalar = conv_check_quant_scalar((enum conv_out_type)t, x, q, N, scratch, &worst, &b2);
				q[byte] ^= (unsigned char)(1u << bit);
				CHECK(simd == 0 && scalar == 0);
				CHECK(b1 / 32 == byte / bs && b2 / 32 == byte / bs);
			}
		}
	}
	free(x);
	free(scratch);
	free(q);
}

UNIT_TEST(convert_q4_0_reference)
{
	float x[32], y[32];
	unsigned char q[18];
	for (int j = 0; j < 32; j++)
		x[j] = 0;
	x[0] = -8.0f;  /* the largest magnitude, negative: d = -8 / -8 = 1 */
	x[1] = 7.6f;   /* 16.1 -> clamped to 15 */
	x[2] = 8.0f;   /* same magnitude later: the first one wins */
	x[16] = -0.4f; /* 8.1 -> 8 */
	x[17] = 3.0f;  /* 11.5 -> 11 */
	conv_quantize_q4_0(x, q, 32);
	CHECK(q[0] == 0x00 && q[1] == 0x3C);
	CHECK((q[2] & 15) == 0 && (q[2] >> 4) == 8);  /* x[0], x[16] */
	CHECK((q[3] & 15) == 15 && (q[3] >> 4) == 11); /* x[1], x[17] */
	CHECK((q[4] & 15) == 15 && (q[5] & 15) == 8);
	conv_dequantize_q4_0(q, y, 32);
	CHECK(y[0] == -8.0f && y[1] == 7.0f && y[16] == 0.0f && y[17] == 3.0f);
	for (int j = 0; j < 32; j++)
		CHECK(fabsf(x[j] - y[j]) <= 1.0f); /* the format's bound: d (the clamped top step) */
}

static void add_task(void *arg, size_t task, int worker)
{
	unsigned long *sums = arg;
	(void)worker;
	__atomic_add_fetch(&sums[task % 4], task, __ATOMIC_RELAXED);
}

UNIT_TEST(convert_pool_batches)
{
	struct util_pool *p = util_pool_new(4);
	unsigned long sums[4];
	CHECK(p);
	for (int round = 0; round < 50; round++) {
		size_t n = (size_t)(round * 37 % 1000);
		unsigned long want = 0, got = 0;
		memset(sums, 0, sizeof(sums));
		util_pool_start(p, add_task, sums, n);
		util_pool_wait(p);
		for (size_t i = 0; i < n; i++)
			want += i;
		for (int i = 0; i < 4; i++)
			got += sums[i];
		CHECK(got == want);
	}
	util_pool_free(p);
}

/* A 1-layer model (no tokenizer) written with the library's own writer. */
static void tiny_model(const char *dir)
{
	struct hm_ctx ctx = {0};
	struct fmt_st_writer *w = NULL;
	static const char *cfg = "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
				 " \"intermediate_size\": 96, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
				 " \"num_key_value_heads\": 1, \"vocab_size\": 40, \"max_position_embeddings\": 32,"
				 " \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0}";
	static const struct {
		const char *name;
		uint64_t r, c;
	} t[] = {
		{"model.embed_tokens.weight", 40, 64}, {"model.norm.weight", 64, 0}, {"lm_head.weight", 40, 64},
		{"model.layers.0.input_layernorm.weight", 64, 0}, {"model.layers.0.post_attention_layernorm.weight", 64, 0},
		{"model.layers.0.self_attn.q_proj.weight", 64, 64}, {"model.layers.0.self_attn.k_proj.weight", 32, 64},
		{"model.layers.0.self_attn.v_proj.weight", 32, 64}, {"model.layers.0.self_attn.o_proj.weight", 64, 64},
		{"model.layers.0.mlp.gate_proj.weight", 96, 64}, {"model.layers.0.mlp.up_proj.weight", 96, 64},
		{"model.layers.0.mlp.down_proj.weight", 64, 96},
	};
	char path[512];
	snprintf(path, sizeof(path), "%s/config.json", dir);
	if (util_write_file_atomic(path, cfg, strlen(cfg)) < 0)
		return;
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	if (fmt_st_writer_new(&ctx, path, &w))
		return;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		uint64_t shape[2] = {t[i].r, t[i].c};
		if (fmt_st_writer_add(w, t[i].name, FMT_BF16, t[i].c ? 2 : 1, shape))
			goto out;
	}
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		uint64_t n = t[i].r * (t[i].c ? t[i].c : 1);
		for (uint64_t k = 0; k < n; k++) {
			uint16_t v = fmt_f32_to_bf16((float)((k * 2654435761u + i) % 1000) / 4000.0f - 0.12f);
			unsigned char b[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
			if (fmt_st_writer_write(w, b, 2))
				goto out;
		}
	}
	if (fmt_st_writer_finish(w))
		goto out;
out:
	fmt_st_writer_free(w);
}

static enum hm_err resolve(struct hm_ctx *ctx, void *ud, const char *name, char *buf, size_t len)
{
	(void)ctx;
	snprintf(buf, len, "%s/%s", (const char *)ud, name);
	return access(buf, R_OK) == 0 ? HM_OK : HM_ERR_NOT_FOUND;
}

UNIT_TEST(convert_check_catches_damage)
{
	struct hm_ctx ctx = {0};
	struct conv_result res;
	struct conv_source src = {resolve, (void *)unit_tmpdir(), "tiny"};
	struct conv_options o = {.type = CONV_Q8_0, .threads = 2};
	struct fmt_gguf *g = NULL;
	char out[512];

	tiny_model(unit_tmpdir());
	snprintf(out, sizeof(out), "%s/tiny.gguf", unit_tmpdir());
	CHECK(conv_to_gguf(&ctx, &src, &o, out, &res) == HM_OK);
	CHECK(res.ntensors == 12 && res.nquant == 9 && !res.tokenizer[0] && res.size > 0);
	{
		/* the hash taken while writing is the file's */
		char sha[65];
		uint64_t size = 0;
		CHECK(verify_file(&ctx, out, 0, sha, NULL, &size) == HM_OK);
		CHECK(!strcmp(sha, res.sha256) && size == res.size);
		o.no_sha256 = 1;
		CHECK(conv_to_gguf(&ctx, &src, &o, out, &res) == HM_OK);
		CHECK(res.sha256[0] == '\0' && res.size == size);
		CHECK(verify_file(&ctx, out, 0, sha, NULL, &size) == HM_OK && size == res.size);
		o.no_sha256 = 0;
	}
	CHECK(fmt_gguf_open(&ctx, out, &g) == HM_OK);
	CHECK(fmt_gguf_tensor_count(g) == 12);
	CHECK(fmt_gguf_find_tensor(g, "blk.0.attn_k.weight")->type == FMT_GGML_Q8_0);
	CHECK(fmt_gguf_find_tensor(g, "blk.0.attn_norm.weight")->type == FMT_GGML_F32);
	fmt_gguf_close(g);
	unlink(out);
	/* one flipped bit in the last tensor's data: an error, nothing left */
	for (int t = 0; t < CONV_TYPE__COUNT; t++) {
		o.type = (enum conv_type)t;
		o.fault_flip = 10;
		ctx.errmsg[0] = '\0';
		CHECK(conv_to_gguf(&ctx, &src, &o, out, &res) == HM_ERR_CORRUPT);
		CHECK(strstr(ctx.errmsg, "check failed") != NULL);
		CHECK(access(out, F_OK) != 0);
	}
	/* every single-bit flip of a quantized tensor's bytes, scale or value, is caught */
	for (int t = CONV_Q8_0; t <= CONV_Q4_0; t++) {
		int caught = 0, tries = 0;
		o.type = (enum conv_type)t;
		o.threads = 1;
		for (uint64_t f = 1; f <= 400; f += 3, tries++) {
			o.fault_flip = f;
			if (conv_to_gguf(&ctx, &src, &o, out, &res) == HM_ERR_CORRUPT && strstr(ctx.errmsg, "check failed"))
				caught++;
		}
		CHECK(caught == tries);
		CHECK(access(out, F_OK) != 0);
	}
	o.threads = 2;
	/* a flip past the last tensor injects nothing: refused, not ignored */
	o.fault_flip = (uint64_t)1 << 40;
	CHECK(conv_to_gguf(&ctx, &src, &o, out, &res) == HM_ERR_USAGE);
	o.type = CONV_F16;
	o.fault_flip = 0;
	CHECK(conv_to_gguf(&ctx, &src, &o, out, &res) == HM_OK);
	CHECK(conv_type_parse("Q8_0", &o.type) == 0 && o.type == CONV_Q8_0 && conv_type_parse("q5_k", &o.type) < 0);
}
