/* matmul.c - matrix products of a weight matrix with a batch of activation
 * rows (a prompt's tokens, or the one token of a generation step), the way
 * llama.cpp's CPU backend computes them: Q8_0/Q4_0 weights are dotted with
 * activations quantized once per product to 8 bits in blocks of 32 (scale
 * max|x|/127, round to nearest even), in integer arithmetic (AVX-512 VNNI
 * dpbusd, AVX2 maddubs, or plain C); F32/F16/BF16 weights with F32
 * activations. Weights stay in their blocked layout in the read-only mapping.
 *
 * Every output element is computed by the same sequence of operations
 * whatever the batch size, its place in a register tile or the number of
 * threads, so a prompt run as one batch gives bit for bit the logits of the
 * same prompt run token by token, and runs repeat exactly. */
#include <math.h>
#include <string.h>
#include "engine-int.h"

#if defined(__x86_64__) || defined(__i386__)
#define ENG_X86 1
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static inline uint16_t ld16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

int eng_type_int8(uint32_t t)
{
	return t == FMT_GGML_Q8_0 || t == FMT_GGML_Q4_0;
}

/* ---- portable ---- */

static void quant_c(const float *x, size_t n, int8_t *q, float *d)
{
	for (size_t b = 0; b < n / ENG_QK; b++, x += ENG_QK, q += ENG_QK) {
		float amax = 0;
		for (int j = 0; j < ENG_QK; j++)
			amax = fmaxf(amax, fabsf(x[j]));
		float s = amax / 127.0f, id = s != 0 ? 1.0f / s : 0.0f;
		d[b] = s;
		for (int j = 0; j < ENG_QK; j++)
			q[j] = (int8_t)nearbyintf(x[j] * id);
	}
}

/* Unpacks one weight block (Q8_0 or Q4_0) to 32 signed values; returns its scale. */
static inline float wblock_c(uint32_t type, const unsigned char *w, int8_t *v)
{
	if (type == FMT_GGML_Q8_0) {
		memcpy(v, w + 2, ENG_QK);
	} else {
		for (int j = 0; j < ENG_QK / 2; j++) {
			v[j] = (int8_t)((w[2 + j] & 0x0f) - 8);
			v[j + ENG_QK / 2] = (int8_t)((w[2 + j] >> 4) - 8);
		}
	}
	return fmt_f16_to_f32(ld16(w));
}

static void mm_int8_c(const struct eng_mm_args *a)
{
	const size_t nb = a->cols / ENG_QK, bs = a->w->type == FMT_GGML_Q8_0 ? 34 : 18;
	int8_t v[ENG_QK];
	for (size_t r = a->r0; r < a->r1; r++)
		for (size_t t = 0; t < a->n; t++) {
			const unsigned char *w = a->w->data + r * a->w->row_bytes;
			const int8_t *x = a->xq + t * a->cols;
			const float *xd = a->xd + t * nb;
			float acc = 0;
			for (size_t b = 0; b < nb; b++, w += bs, x += ENG_QK) {
				float dw = wblock_c(a->w->type, w, v);
				int32_t s = 0;
				for (int j = 0; j < ENG_QK; j++)
					s += v[j] * x[j];
				/* a product, then a sum (two statements: never one fused
				 * multiply-add), as the AMX kernel computes it */
				float p = (float)s * (dw * xd[b]);
				acc += p;
			}
			a->y[t * a->ystride + r] = acc;
		}
}

/* F32/F16/BF16 weights: one dot product per output through the level's dot kernel. */
static void mm_float_dot(const struct eng_mm_args *a)
{
	eng_dot_fn dot = a->k->dot[eng_type_slot(a->w->type)];
	for (size_t r = a->r0; r < a->r1; r++)
		for (size_t t = 0; t < a->n; t++)
			a->y[t * a->ystride + r] = dot(a->w->data + r * a->w->row_bytes, a->x + t * a->xstride, a->cols);
}

const struct eng_mm_kernels eng_mm_c = {quant_c, mm_int8_c, mm_float_dot, NULL, NULL, NULL};

/* The n rows of a tile from r, for kernels that read rows in place; a
 * short tile (past r1) repeats its last row, whose outputs are not stored. */
static inline void tile_rows(const struct eng_mm_args *a, size_t r, int n, const unsigned char **wr)
{
	for (int i = 0; i < n; i++) {
		size_t rr = r + (size_t)i < a->r1 ? r + (size_t)i : a->r1 - 1;
		wr[i] = a->w->data + rr * a->w->row_bytes;
	}
}

#ifdef ENG_X86
/* ---- AVX2: the sign trick (|w| unsigned times x with w's sign, maddubs) ---- */
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static void quant_avx2(const float *x, size_t n, int8_t *q, float *d)
{
	const __m256 sign = _mm256_set1_ps(-0.0f);
	for (size_t b = 0; b < n / ENG_QK; b++, x += ENG_QK, q += ENG_QK) {
		__m256 v[4], m;
		for (int i = 0; i < 4; i++)
			v[i] = _mm256_loadu_ps(x + 8 * i);
		m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
				  _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
		__m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
		h = _mm_max_ps(h, _mm_movehl_ps(h, h));
		h = _mm_max_ss(h, _mm_movehdup_ps(h));
		float amax = _mm_cvtss_f32(h), s = amax / 127.0f, id = s != 0 ? 1.0f / s : 0.0f;
		d[b] = s;
		__m256 vid = _mm256_set1_ps(id);
		__m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v[0], vid)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v[1], vid));
		__m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v[2], vid)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v[3], vid));
		/* packs interleave 128-bit lanes: undo with a permute */
		__m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
		p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
		_mm256_storeu_si256((__m256i *)(void *)q, p);
	}
}

AVX2 static inline __m256i wblock_avx2(uint32_t type, const unsigned char *w)
{
	if (type == FMT_GGML_Q8_0)
		return _mm256_loadu_si256((const __m256i *)(const void *)(w + 2));
	__m128i q = _mm_loadu_si128((const __m128i *)(const void *)(w + 2)), m4 = _mm_set1_epi8(0x0f);
	__m256i v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
	return _mm256_sub_epi8(v, _mm256_set1_epi8(8));
}

AVX2 static inline float scale_f16(const unsigned char *p)
{
	return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(ld16(p))));
}

AVX2 static inline float hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

AVX2 static void mm_int8_avx2(const struct eng_mm_args *a)
{
	const size_t nb = a->cols / ENG_QK, bs = a->w->type == FMT_GGML_Q8_0 ? 34 : 18;
	const __m256i ones = _mm256_set1_epi16(1);
	for (size_t r = a->r0; r < a->r1; r++)
		for (size_t t = 0; t < a->n; t++) {
			const unsigned char *w = a->w->data + r * a->w->row_bytes;
			const int8_t *x = a->xq + t * a->cols;
			const float *xd = a->xd + t * nb;
			__m256 acc = _mm256_setzero_ps();
			for (size_t b = 0; b < nb; b++, w += bs, x += ENG_QK) {
				__m256i wv = wblock_avx2(a->w->type, w);
				__m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)x);
				__m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
				acc = _mm256_fmadd_ps(_mm256_set1_ps(scale_f16(w) * xd[b]), _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), acc);
			}
			a->y[t * a->ystride + r] = hsum8(acc);
		}
}

const struct eng_mm_kernels eng_mm_avx2 = {quant_avx2, mm_int8_avx2, mm_float_dot, NULL, NULL, NULL};

/* ---- AVX-512 VNNI: register tiles of 4 rows x up to 4 tokens ----
 * dpbusd multiplies unsigned by signed bytes: the weights go in as w + 128
 * (unsigned) against the signed activations, and the accumulator starts at
 * -128 * (sum of the activations), computed once per token and block pair. */
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define TR ENG_MM_TR

VNNI static void quant_vnni(const float *x, size_t n, int8_t *q, float *d)
{
	for (size_t b = 0; b < n / ENG_QK; b++, x += ENG_QK, q += ENG_QK) {
		__m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
		float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
		float s = amax / 127.0f, id = s != 0 ? 1.0f / s : 0.0f;
		d[b] = s;
		__m512 vid = _mm512_set1_ps(id);
		_mm_storeu_si128((__m128i *)(void *)q, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, vid))));
		_mm_storeu_si128((__m128i *)(void *)(q + 16), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, vid))));
	}
}

/* Two weight blocks (b, b+1; only b when one) as unsigned bytes w + 128
 * (a missing second block meets zero activations). */
VNNI static inline __m512i wpair_vnni(uint32_t type, const unsigned char *w, size_t bs, int one)
{
	if (type == FMT_GGML_Q8_0) {
		__m256i lo = _mm256_loadu_si256((const __m256i *)(const void *)(w + 2));
		__m256i hi = one ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i *)(const void *)(w + bs + 2));
		__m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
		return _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
	}
	__m128i q0 = _mm_loadu_si128((const __m128i *)(const void *)(w + 2));
	__m128i q1 = one ? _mm_set1_epi8(0x00) : _mm_loadu_si128((const __m128i *)(const void *)(w + bs + 2));
	__m256i a = _mm256_set_m128i(_mm_srli_epi16(q0, 4), q0), b = _mm256_set_m128i(_mm_srli_epi16(q1, 4), q1);
	__m512i v = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1), _mm512_set1_epi8(0x0f));
	return _mm512_add_epi8(v, _mm512_set1_epi8(120)); /* nibble - 8 + 128 */
}

/* The scales of the two blocks, each in 8 lanes. */
VNNI static inline __m512 wscale_vnni(const unsigned char *w, size_t bs, int one)
{
	uint32_t h = ld16(w) | (one ? 0u : (uint32_t)ld16(w + bs) << 16);
	__m512 s = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128((int)h)));
	return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1), s);
}

VNNI static inline __m512 xscale_vnni(const float *d, int one)
{
	__m128 s = one ? _mm_load_ss(d) : _mm_castsi128_ps(_mm_loadl_epi64((const __m128i_u *)(const void *)d));
	return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
				     _mm512_castps128_ps512(s));
}

/* Per pair of blocks of an activation row: -128 * (sum of each 4 values),
 * then the two scales in 8 lanes each (ENG_XT_BYTES). */
VNNI static void prep_vnni(const int8_t *q, const float *d, size_t n, unsigned char *out)
{
	const size_t nb = n / ENG_QK;
	for (size_t b = 0; b < nb; b += 2, out += 128) {
		const int one = b + 1 == nb;
		__m512i xv = one ? _mm512_maskz_loadu_epi8(0xffffffffull, q + b * ENG_QK) : _mm512_loadu_si512(q + b * ENG_QK);
		__m512i neg = _mm512_sub_epi32(_mm512_setzero_si512(),
					       _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), xv));
		_mm512_storeu_si512(out, neg);
		_mm512_storeu_ps(out + 64, xscale_vnni(d + b, one));
	}
}

/* y[t][r] for TR rows from r (read in place) and NT tokens from t: the
 * path of a generation step and of short batches. */
VNNI static inline __attribute__((always_inline)) void tile_int8_vnni(const struct eng_mm_args *a,
									 const unsigned char *const *wr, size_t r, size_t t,
									 const int NT)
{
	const uint32_t type = a->w->type;
	const size_t nb = a->cols / ENG_QK, bs = type == FMT_GGML_Q8_0 ? 34 : 18;
	const size_t xtb = ENG_XT_BYTES(a->cols);
	const __m512i x80 = _mm512_set1_epi8((char)0x80);
	__m512 acc[TR][4];
	_Pragma("GCC unroll 4")
	for (int i = 0; i < TR; i++)
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++)
			acc[i][j] = _mm512_setzero_ps();
	for (size_t b = 0; b < nb; b += 2) {
		const int one = b + 1 == nb;
		__m512i wv[TR];
		__m512 ws[TR];
		_Pragma("GCC unroll 4")
		for (int i = 0; i < TR; i++) {
			wv[i] = wpair_vnni(type, wr[i] + b * bs, bs, one);
			ws[i] = wscale_vnni(wr[i] + b * bs, bs, one);
		}
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++) {
			const int8_t *xp = a->xq + (t + (size_t)j) * a->cols + b * ENG_QK;
			__m512i xv = one ? _mm512_maskz_loadu_epi8(0xffffffffull, xp) : _mm512_loadu_si512(xp), neg;
			__m512 xs;
			if (a->xt) {
				const unsigned char *e = a->xt + (t + (size_t)j) * xtb + b / 2 * 128;
				neg = _mm512_loadu_si512(e);
				xs = _mm512_loadu_ps(e + 64);
			} else {
				neg = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), x80, xv));
				xs = xscale_vnni(a->xd + (t + (size_t)j) * nb + b, one);
			}
			_Pragma("GCC unroll 4")
			for (int i = 0; i < TR; i++) {
				__m512i p = _mm512_dpbusd_epi32(neg, wv[i], xv);
				acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(ws[i], xs), acc[i][j]);
			}
		}
	}
	for (int i = 0; i < TR && r + (size_t)i < a->r1; i++)
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++)
			a->y[(t + (size_t)j) * a->ystride + r + (size_t)i] = _mm512_reduce_add_ps(acc[i][j]);
}


/* tile_int8_vnni for one token (a generation step), its accumulators in
 * plain variables (the array of the general tile went to the stack after
 * every FMA). The same operations in the same order. */
#define ROW1(i)                                                                                                   \
	__m512 acc##i = _mm512_setzero_ps();                                                                      \
	const unsigned char *w##i = wr[i]
#define STEP1(i)                                                                                                  \
	acc##i = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(neg, wpair_vnni(type, w##i + b * bs, bs, one), xv)), \
				 _mm512_mul_ps(wscale_vnni(w##i + b * bs, bs, one), xs), acc##i)
#define STORE1(i)                                                                                                 \
	if (r + (i) < a->r1)                                                                                      \
	a->y[t * a->ystride + r + (i)] = _mm512_reduce_add_ps(acc##i)
/* One pair of blocks (b, b+1; only b when one) of every row; TYPE and ONE
 * are constants in each expansion, so the loop carries no branches. */
#define PAIR1(ONE)                                                                                                \
	do {                                                                                                      \
		const int one = (ONE);                                                                            \
		const int8_t *xp = a->xq + t * a->cols + b * ENG_QK;                                               \
		__m512i xv = one ? _mm512_maskz_loadu_epi8(0xffffffffull, xp) : _mm512_loadu_si512(xp), neg;      \
		__m512 xs;                                                                                        \
		if (a->xt) {                                                                                      \
			const unsigned char *e = a->xt + t * xtb + b / 2 * 128;                                   \
			neg = _mm512_loadu_si512(e);                                                              \
			xs = _mm512_loadu_ps(e + 64);                                                             \
		} else {                                                                                          \
			neg = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), x80, xv)); \
			xs = xscale_vnni(a->xd + t * nb + b, one);                                                \
		}                                                                                                 \
		for (const size_t pe = (b / 2 + 1) * TR * 2 * bs; po < pe; po += 64)                             \
			_mm_prefetch((const char *)(nx + po), _MM_HINT_T1);                                        \
		STEP1(0);                                                                                         \
		STEP1(1);                                                                                         \
		STEP1(2);                                                                                         \
		STEP1(3);                                                                                         \
	} while (0)
VNNI static inline __attribute__((always_inline)) void tile1_vnni(const struct eng_mm_args *a,
								     const unsigned char *const *wr, size_t r, size_t t,
								     const uint32_t type)
{
	const size_t nb = a->cols / ENG_QK, bs = type == FMT_GGML_Q8_0 ? 34 : 18;
	const size_t xtb = ENG_XT_BYTES(a->cols);
	const __m512i x80 = _mm512_set1_epi8((char)0x80);
	/* The next tile's rows follow these: each pair of blocks asks L2 for as
	 * many of its bytes as this tile reads, one stream the memory keeps up
	 * with (measured on a Xeon, 2 threads, rows from DRAM: 1.3x the rate of
	 * asking L1 for each row 1 KiB ahead, which the hardware streams too) */
	const unsigned char *nx = wr[0] + TR * a->w->row_bytes;
	size_t po = 0; /* bytes of it asked for */
	ROW1(0);
	ROW1(1);
	ROW1(2);
	ROW1(3);
	size_t b = 0;
	for (; b + 1 < nb; b += 2)
		PAIR1(0);
	if (b < nb)
		PAIR1(1);
	STORE1(0);
	STORE1(1);
	STORE1(2);
	STORE1(3);
}
VNNI static void tile1_int8_vnni(const struct eng_mm_args *a, const unsigned char *const *wr, size_t r, size_t t)
{
	if (a->w->type == FMT_GGML_Q8_0)
		tile1_vnni(a, wr, r, t, FMT_GGML_Q8_0);
	else
		tile1_vnni(a, wr, r, t, FMT_GGML_Q4_0);
}
#undef ROW1
#undef STEP1
#undef PAIR1
#undef STORE1

/* ---- the batch path (more than 4 tokens) ----
 * The roles of dpbusd's operands swap: the weights go in as signed bytes and
 * the activations as unsigned x + 128 (|x| <= 127), so the correction
 * -128 * (sum of each 4 weights) belongs to the weight row and is computed
 * once per row tile, and a token costs 64 bytes per pair of blocks plus its
 * two scales. The integer sums, the scales and the order of the float
 * operations are those of tile_int8_vnni: both paths give the same bits. */

#define PW_BYTES 192 /* per row and pair: signed weights, their correction, their scales */

/* TR rows laid out pair by pair: for pair p, row i at o + (p * TR + i) * PW_BYTES. */
VNNI static void prep_rows_s_vnni(const struct eng_mm_args *a, const unsigned char *const *wr, unsigned char *o)
{
	const uint32_t type = a->w->type;
	const size_t nb = a->cols / ENG_QK, bs = type == FMT_GGML_Q8_0 ? 34 : 18;
	const __m512i u80 = _mm512_set1_epi8((char)0x80), z = _mm512_setzero_si512();
	for (size_t b = 0; b < nb; b += 2)
		for (int i = 0; i < TR; i++, o += PW_BYTES) {
			const int one = b + 1 == nb;
			/* w + 128 from wpair_vnni, back to signed */
			__m512i wv = _mm512_xor_si512(wpair_vnni(type, wr[i] + b * bs, bs, one), u80);
			if (one) /* the missing block: zero weights, not -128 */
				wv = _mm512_maskz_mov_epi8(0xffffffffull, wv);
			_mm512_storeu_si512(o, wv);
			_mm512_storeu_si512(o + 64, _mm512_sub_epi32(z, _mm512_dpbusd_epi32(z, u80, wv)));
			_mm512_storeu_ps(o + 128, wscale_vnni(wr[i] + b * bs, bs, one));
		}
}

/* y[t][r] for the TR rows from r (prepared in pw) and 4 tokens from t (a
 * short tile repeats its last token: every output's operations are its own,
 * so the repeats change nothing). The 16 accumulators are plain variables:
 * as an array, GCC stored each one back to the stack after every FMA. */
#define XLOAD(j)                                                                                                  \
	const int8_t *xp##j = a->xq + tt[j] * a->cols + b * ENG_QK;                                                \
	__m512i xu##j = _mm512_xor_si512(one ? _mm512_maskz_loadu_epi8(0xffffffffull, xp##j) : _mm512_loadu_si512(xp##j), \
					 u80);                                                                      \
	__m512 xs##j = xscale_vnni(a->xd + tt[j] * nb + b, one)
#define STEP(i, j)                                                                                                \
	acc##i##j = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(neg, xu##j, wv)), _mm512_mul_ps(ws, xs##j), \
				    acc##i##j)
#define ROW(i)                                                                                                    \
	do {                                                                                                      \
		const unsigned char *e = pw + (size_t)(i) * PW_BYTES;                                             \
		__m512i wv = _mm512_loadu_si512(e), neg = _mm512_loadu_si512(e + 64);                              \
		__m512 ws = _mm512_loadu_ps(e + 128);                                                              \
		STEP(i, 0);                                                                                       \
		STEP(i, 1);                                                                                       \
		STEP(i, 2);                                                                                       \
		STEP(i, 3);                                                                                       \
	} while (0)
#define STORE(i, j)                                                                                               \
	if (r + (i) < a->r1 && (j) < nt)                                                                          \
	a->y[tt[j] * a->ystride + r + (i)] = _mm512_reduce_add_ps(acc##i##j)

VNNI static void tile_int8_s_vnni(const struct eng_mm_args *a, const unsigned char *pw, size_t r, size_t t, size_t nt)
{
	const size_t nb = a->cols / ENG_QK;
	const __m512i u80 = _mm512_set1_epi8((char)0x80);
	const size_t tt[4] = {t, t + (nt > 1), t + (nt > 2 ? 2 : nt - 1), t + (nt > 3 ? 3 : nt - 1)};
	__m512 acc00 = _mm512_setzero_ps(), acc01 = acc00, acc02 = acc00, acc03 = acc00;
	__m512 acc10 = acc00, acc11 = acc00, acc12 = acc00, acc13 = acc00;
	__m512 acc20 = acc00, acc21 = acc00, acc22 = acc00, acc23 = acc00;
	__m512 acc30 = acc00, acc31 = acc00, acc32 = acc00, acc33 = acc00;
	for (size_t b = 0; b < nb; b += 2, pw += TR * PW_BYTES) {
		const int one = b + 1 == nb;
		XLOAD(0);
		XLOAD(1);
		XLOAD(2);
		XLOAD(3);
		ROW(0);
		ROW(1);
		ROW(2);
		ROW(3);
	}
	STORE(0, 0); STORE(0, 1); STORE(0, 2); STORE(0, 3);
	STORE(1, 0); STORE(1, 1); STORE(1, 2); STORE(1, 3);
	STORE(2, 0); STORE(2, 1); STORE(2, 2); STORE(2, 3);
	STORE(3, 0); STORE(3, 1); STORE(3, 2); STORE(3, 3);
}
#undef XLOAD
#undef STEP
#undef ROW
#undef STORE

/* Tokens per block of the batch path: the block's 8-bit rows (and scales)
 * stay in the core's L2 cache while every row tile of the task passes over
 * them (streaming all of a long prompt's activations from L3 for each tile
 * of 4 rows cost more than the arithmetic). */
static size_t token_block(size_t cols, size_t bytes_per_elem)
{
	size_t tb = (size_t)192 * 1024 / (cols * bytes_per_elem);
	return tb < 4 ? 4 : tb / 4 * 4;
}

VNNI static void mm_int8_vnni(const struct eng_mm_args *a)
{
	const size_t np = (a->cols / ENG_QK + 1) / 2;
	/* the scratch holds ENG_MM_TR * cols floats: enough for TR prepared rows */
	unsigned char *pw = a->scr && a->n > 4 && TR * np * PW_BYTES <= TR * a->cols * sizeof(float)
				    ? (unsigned char *)a->scr : NULL;
	if (!pw) {
		for (size_t r = a->r0; r < a->r1; r += TR) {
			const unsigned char *wr[TR];
			tile_rows(a, r, TR, wr);
			size_t t = 0;
			if (a->n == 1) {
				tile1_int8_vnni(a, wr, r, 0);
				continue;
			}
			for (; t + 3 <= a->n; t += 3)
				tile_int8_vnni(a, wr, r, t, 3);
			switch (a->n - t) {
			case 2: tile_int8_vnni(a, wr, r, t, 2); break;
			case 1: tile_int8_vnni(a, wr, r, t, 1); break;
			}
		}
		return;
	}
	const size_t tb = token_block(a->cols, 1);
	for (size_t t0 = 0; t0 < a->n; t0 += tb) {
		const size_t t1 = a->n - t0 < tb ? a->n : t0 + tb;
		for (size_t r = a->r0; r < a->r1; r += TR) {
			const unsigned char *wr[TR];
			tile_rows(a, r, TR, wr);
			prep_rows_s_vnni(a, wr, pw);
			for (size_t t = t0; t < t1; t += 4)
				tile_int8_s_vnni(a, pw, r, t, t1 - t < 4 ? t1 - t : 4);
		}
	}
}

/* Float weights: 16 columns at a time, converted once per row for all tokens of the tile. */
VNNI static inline __m512 wload16(uint32_t type, const unsigned char *w, size_t i, __mmask16 m)
{
	if (type == FMT_GGML_F32)
		return _mm512_maskz_loadu_ps(m, w + 4 * i);
	__m256i h = _mm256_maskz_loadu_epi16(m, w + 2 * i);
	if (type == FMT_GGML_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* y[t][r] for TR rows from r and 4 tokens from t (a short tile repeats its
 * last token), 16 columns at a time; the accumulators in plain variables. */
#define FX(j) __m512 x##j = _mm512_maskz_loadu_ps(m, a->x + tt[j] * a->xstride + c)
#define FROW(i)                                                                                                   \
	do {                                                                                                      \
		__m512 wv = wload16(type, wr[i], c, m);                                                           \
		acc##i##0 = _mm512_fmadd_ps(wv, x0, acc##i##0);                                                   \
		acc##i##1 = _mm512_fmadd_ps(wv, x1, acc##i##1);                                                   \
		acc##i##2 = _mm512_fmadd_ps(wv, x2, acc##i##2);                                                   \
		acc##i##3 = _mm512_fmadd_ps(wv, x3, acc##i##3);                                                   \
	} while (0)
#define FSTORE(i, j)                                                                                              \
	if (r + (i) < a->r1 && (j) < nt)                                                                          \
	a->y[tt[j] * a->ystride + r + (i)] = _mm512_reduce_add_ps(acc##i##j)
VNNI static void tile_float_vnni(const struct eng_mm_args *a, const unsigned char *const *wr, uint32_t type, size_t r,
				 size_t t, size_t nt)
{
	const size_t tt[4] = {t, t + (nt > 1), t + (nt > 2 ? 2 : nt - 1), t + (nt > 3 ? 3 : nt - 1)};
	__m512 acc00 = _mm512_setzero_ps(), acc01 = acc00, acc02 = acc00, acc03 = acc00;
	__m512 acc10 = acc00, acc11 = acc00, acc12 = acc00, acc13 = acc00;
	__m512 acc20 = acc00, acc21 = acc00, acc22 = acc00, acc23 = acc00;
	__m512 acc30 = acc00, acc31 = acc00, acc32 = acc00, acc33 = acc00;
	for (size_t c = 0; c < a->cols; c += 16) {
		__mmask16 m = a->cols - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (a->cols - c)) - 1);
		FX(0);
		FX(1);
		FX(2);
		FX(3);
		FROW(0);
		FROW(1);
		FROW(2);
		FROW(3);
	}
	FSTORE(0, 0); FSTORE(0, 1); FSTORE(0, 2); FSTORE(0, 3);
	FSTORE(1, 0); FSTORE(1, 1); FSTORE(1, 2); FSTORE(1, 3);
	FSTORE(2, 0); FSTORE(2, 1); FSTORE(2, 2); FSTORE(2, 3);
	FSTORE(3, 0); FSTORE(3, 1); FSTORE(3, 2); FSTORE(3, 3);
}
#undef FX
#undef FROW
#undef FSTORE

/* tile_float_vnni for one token (a generation step). */
VNNI static void tile1_float_vnni(const struct eng_mm_args *a, const unsigned char *const *wr, uint32_t type, size_t r,
				  size_t t)
{
	__m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
	for (size_t c = 0; c < a->cols; c += 16) {
		__mmask16 m = a->cols - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (a->cols - c)) - 1);
		__m512 x0 = _mm512_maskz_loadu_ps(m, a->x + t * a->xstride + c);
		acc0 = _mm512_fmadd_ps(wload16(type, wr[0], c, m), x0, acc0);
		acc1 = _mm512_fmadd_ps(wload16(type, wr[1], c, m), x0, acc1);
		acc2 = _mm512_fmadd_ps(wload16(type, wr[2], c, m), x0, acc2);
		acc3 = _mm512_fmadd_ps(wload16(type, wr[3], c, m), x0, acc3);
	}
	const __m512 v[4] = {acc0, acc1, acc2, acc3};
	for (int i = 0; i < TR && r + (size_t)i < a->r1; i++)
		a->y[t * a->ystride + r + (size_t)i] = _mm512_reduce_add_ps(v[i]);
}

/* ---- float weights, batches of more than 4 tokens ----
 * Register tiles of 6 rows x 4 tokens (24 accumulators) over chunks of
 * FK columns: the chunk's 6 rows (F16/BF16 widened to F32, exactly) stay in
 * L1 while the token tiles of a block pass over them, each tile's
 * accumulators stored between chunks. Per output, the FMAs over the columns
 * run 16 at a time in order, as in tile1_float_vnni, and end in the same
 * reduction: the same bits as a token alone. (Measured on a Xeon with
 * AVX-512, 2 threads, F16 5632 x 2048 by 256 tokens: 6 x 4 over 512
 * columns 200 GFLOPS; 8 x 3 over 256 columns 150; 4 x 4 over the whole
 * row, the shorter-batch tile, about 105.) */
#define FK 512   /* columns per chunk */
#define FR 6     /* rows per tile */
#define FT 4     /* tokens per tile */
#define FTB 48   /* most tokens per block (a multiple of FT) */

/* ac (FR x FT vectors) += the chunk's nc columns of w (FR rows, FK apart)
 * times the FT token rows xp[0..] (at the chunk's first column). */
VNNI static void tile_fchunk(__m512 *ac, const float *w, const float *const *xp, const float *const *xn, size_t nc)
{
	__m512 acc[FR][FT];
	_Pragma("GCC unroll 8")
	for (int i = 0; i < FR; i++)
		_Pragma("GCC unroll 8")
		for (int j = 0; j < FT; j++)
			acc[i][j] = ac[i * FT + j];
	size_t c = 0;
	for (; c + 16 <= nc; c += 16) {
		__m512 xv[FT];
		_Pragma("GCC unroll 8")
		for (int j = 0; j < FT; j++) {
			xv[j] = _mm512_loadu_ps(xp[j] + c);
			_mm_prefetch((const char *)(xn[j] + c), _MM_HINT_T0);
		}
		_Pragma("GCC unroll 8")
		for (int i = 0; i < FR; i++) {
			__m512 wv = _mm512_load_ps(w + (size_t)i * FK + c);
			_Pragma("GCC unroll 8")
			for (int j = 0; j < FT; j++)
				acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
		}
	}
	if (c < nc) { /* the row's tail */
		__mmask16 m = (__mmask16)((1u << (nc - c)) - 1);
		__m512 xv[FT];
		_Pragma("GCC unroll 8")
		for (int j = 0; j < FT; j++)
			xv[j] = _mm512_maskz_loadu_ps(m, xp[j] + c);
		_Pragma("GCC unroll 8")
		for (int i = 0; i < FR; i++) {
			__m512 wv = _mm512_maskz_loadu_ps(m, w + (size_t)i * FK + c);
			_Pragma("GCC unroll 8")
			for (int j = 0; j < FT; j++)
				acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
		}
	}
	_Pragma("GCC unroll 8")
	for (int i = 0; i < FR; i++)
		_Pragma("GCC unroll 8")
		for (int j = 0; j < FT; j++)
			ac[i * FT + j] = acc[i][j];
}

VNNI static void mm_float_batch_vnni(const struct eng_mm_args *a)
{
	_Alignas(64) float wc[FR * FK];
	_Alignas(64) __m512 acc[FTB / FT * FR * FT];
	const uint32_t type = a->w->type;
	for (size_t t0 = 0; t0 < a->n; t0 += FTB) {
		const size_t t1 = a->n - t0 < FTB ? a->n : t0 + FTB, ntt = (t1 - t0 + FT - 1) / FT;
		for (size_t r = a->r0; r < a->r1; r += FR) {
			const unsigned char *wr[FR];
			tile_rows(a, r, FR, wr);
			for (size_t e = 0; e < ntt * FR * FT; e++)
				acc[e] = _mm512_setzero_ps();
			for (size_t c0 = 0; c0 < a->cols; c0 += FK) {
				const size_t nc = a->cols - c0 < FK ? a->cols - c0 : FK;
				for (int i = 0; i < FR; i++)
					for (size_t c = 0; c < nc; c += 16) {
						__mmask16 m = nc - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nc - c)) - 1);
						_mm512_store_ps(wc + (size_t)i * FK + c, wload16(type, wr[i], c0 + c, m));
					}
				/* the next chunk's rows from memory into L2 while this one runs
				 * (each row's chunk is a short run the hardware does not see coming) */
				{
					const size_t es = type == FMT_GGML_F32 ? 4 : 2;
					if (c0 + FK < a->cols) {
						const size_t nn = a->cols - c0 - FK < FK ? a->cols - c0 - FK : FK;
						for (int i = 0; i < FR; i++)
							for (size_t o = 0; o < nn * es; o += 64)
								_mm_prefetch((const char *)(wr[i] + (c0 + FK) * es + o), _MM_HINT_T1);
					} else if (r + 2 * FR <= a->r1) { /* the next row tile's first chunk */
						const size_t nn = a->cols < FK ? a->cols : FK;
						for (int i = 0; i < FR; i++)
							for (size_t o = 0; o < nn * es; o += 64)
								_mm_prefetch((const char *)(wr[i] + FR * a->w->row_bytes + o), _MM_HINT_T1);
					}
				}
				const float *xp[FT], *xn[FT];
				for (size_t k = 0; k < ntt; k++) {
					for (size_t j = 0; j < FT; j++) { /* a short tile repeats its last token */
						size_t u = t0 + k * FT + j < t1 ? t0 + k * FT + j : t1 - 1;
						xp[j] = a->x + u * a->xstride + c0;
						/* the next tile's tokens into L1 meanwhile (after the
						 * last tile: the first, in the next chunk) */
						size_t kn = k + 1 < ntt ? k + 1 : 0, cn = k + 1 < ntt || c0 + FK >= a->cols ? c0 : c0 + FK;
						u = t0 + kn * FT + j < t1 ? t0 + kn * FT + j : t1 - 1;
						xn[j] = a->x + u * a->xstride + cn;
					}
					tile_fchunk(acc + k * FR * FT, wc, xp, xn, nc);
				}
			}
			for (size_t k = 0; k < ntt; k++)
				for (int i = 0; i < FR && r + (size_t)i < a->r1; i++)
					for (size_t j = 0; j < FT && t0 + k * FT + j < t1; j++)
						a->y[(t0 + k * FT + j) * a->ystride + r + (size_t)i] =
							_mm512_reduce_add_ps(acc[k * FR * FT + (size_t)i * FT + j]);
		}
	}
}
#undef FK
#undef FR
#undef FT
#undef FTB

/* Up to 4 tokens: tiles of 4 rows x 4 tokens, rows read in place. */
VNNI static void mm_float_vnni(const struct eng_mm_args *a)
{
	if (a->n > 4) {
		mm_float_batch_vnni(a);
		return;
	}
	for (size_t r = a->r0; r < a->r1; r += TR) {
		const unsigned char *wr[TR];
		tile_rows(a, r, TR, wr);
		if (a->n == 1)
			tile1_float_vnni(a, wr, a->w->type, r, 0);
		else
			tile_float_vnni(a, wr, a->w->type, r, 0, a->n);
	}
}

const struct eng_mm_kernels eng_mm_vnni = {quant_vnni, mm_int8_vnni, mm_float_vnni, prep_vnni, NULL, NULL};

/* ---- AMX: Q8_0 weights times batches of 16 tokens in tiles ----
 * TDPBSSD multiplies a tile of 16 weight rows x 32 signed bytes (one block
 * of each row, loaded in place with the row stride) by a tile of the block's
 * 32 signed activations for 16 tokens (packed by pack_amx: 8 rows of the 16
 * tokens' 4-byte groups), into 16 x 16 exact int32 sums. Each sum is then
 * scaled and added per block in the scalar level's order (mm_int8_c: acc +
 * (float)s * (dw * dx), no fused multiply-add), so a batch gives the scalar
 * level's bits. A tile op costs about as much for 1 token as for 16: one
 * token, Q4_0 weights and rows short of a tile of 16 go to the VNNI or the
 * portable kernels. The tile state is granted to the process once
 * (eng_amx_usable) and configured on every call (it is per thread). */
#define AMX __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define AMX_ROWS 16

struct amx_cfg {
	uint8_t palette, start_row, reserved[14];
	uint16_t colsb[16];
	uint8_t rows[16];
};

/* Row t into its group of 16 (t / 16) at column t % 16: per block b, the
 * 32 bytes as 8 dwords at b * 512 + k * 64 + (t % 16) * 4; after the
 * blocks, the scale at nb * 512 + (b * 16 + t % 16) * 4. */
static void pack_amx(const int8_t *q, const float *d, size_t n, size_t t, unsigned char *xa)
{
	const size_t nb = n / ENG_QK, col = t % 16;
	unsigned char *g = xa + t / 16 * 16 * (n + nb * 4);
	for (size_t b = 0; b < nb; b++)
		for (size_t k = 0; k < ENG_QK / 4; k++)
			memcpy(g + b * 512 + k * 64 + col * 4, q + b * ENG_QK + k * 4, 4);
	for (size_t b = 0; b < nb; b++)
		memcpy(g + nb * 512 + (b * 16 + col) * 4, d + b, 4);
}

/* The 16 rows' scales of every block (as floats, 16 a block) into ws. */
AMX static void wscales_amx(const struct eng_mm_args *a, const unsigned char *w, float *ws)
{
	const size_t nb = a->cols / ENG_QK, rb = a->w->row_bytes;
	if (rb <= (size_t)INT32_MAX / AMX_ROWS) {
		const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
						       _mm512_set1_epi32((int)rb));
		for (size_t b = 0; b < nb; b++) {
			__m512i h = _mm512_i32gather_epi32(idx, w + b * 34, 1);
			_mm512_storeu_ps(ws + b * 16, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h)));
		}
		return;
	}
	for (size_t b = 0; b < nb; b++)
		for (int m = 0; m < AMX_ROWS; m++)
			ws[b * 16 + m] = scale_f16(w + m * rb + b * 34);
}

#define EPI(m)                                                                                                    \
	acc##m = _mm512_add_ps(acc##m, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cb + (m) * 16)),        \
						  _mm512_mul_ps(_mm512_set1_ps(wsb[m]), xs)))
#define EPILOGUE(cbuf, bb)                                                                                        \
	do {                                                                                                      \
		const int32_t *cb = (cbuf);                                                                       \
		const float *wsb = ws + (bb) * 16;                                                                \
		const __m512 xs = _mm512_maskz_loadu_ps(tm, xsc + (bb) * 16);                                      \
		EPI(0); EPI(1); EPI(2); EPI(3); EPI(4); EPI(5); EPI(6); EPI(7);                                   \
		EPI(8); EPI(9); EPI(10); EPI(11); EPI(12); EPI(13); EPI(14); EPI(15);                             \
	} while (0)
#define OUT(m) _mm512_store_ps(o + (m) * 16, acc##m)

/* y for the 16 rows from r (weights at w, their scales in ws) and the nt
 * (<= 16) tokens of group g. Two blocks in flight: the second block's tile
 * op runs while the first one's sums are scaled. */
AMX static void tile_amx(const struct eng_mm_args *a, const unsigned char *w, const float *ws, size_t r, size_t g,
			 size_t nt, const unsigned char *pf)
{
	const size_t nb = a->cols / ENG_QK, rb = a->w->row_bytes;
	const unsigned char *xg = a->xa + g * 16 * (a->cols + nb * 4);
	const float *xsc = (const float *)(const void *)(xg + nb * 512);
	const __mmask16 tm = (__mmask16)(nt >= 16 ? 0xffffu : (1u << nt) - 1);
	_Alignas(64) int32_t c0[256], c1[256];
	_Alignas(64) float o[256];
	__m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0, acc4 = acc0, acc5 = acc0;
	__m512 acc6 = acc0, acc7 = acc0, acc8 = acc0, acc9 = acc0, acc10 = acc0, acc11 = acc0;
	__m512 acc12 = acc0, acc13 = acc0, acc14 = acc0, acc15 = acc0;
	size_t b = 0;
	for (; b + 1 < nb; b += 2) {
		if (pf) /* the next row tile's two blocks, from memory into L2 */
			for (int m = 0; m < AMX_ROWS; m++) {
				_mm_prefetch((const char *)(pf + m * rb + b * 34), _MM_HINT_T1);
				_mm_prefetch((const char *)(pf + m * rb + b * 34 + 64), _MM_HINT_T1);
			}
		_tile_zero(0);
		_tile_zero(1);
		_tile_loadd(2, w + b * 34 + 2, rb);
		_tile_loadd(4, xg + b * 512, 64);
		_tile_dpbssd(0, 2, 4);
		_tile_loadd(3, w + (b + 1) * 34 + 2, rb);
		_tile_loadd(5, xg + (b + 1) * 512, 64);
		_tile_dpbssd(1, 3, 5);
		_tile_stored(0, c0, 64);
		EPILOGUE(c0, b);
		_tile_stored(1, c1, 64);
		EPILOGUE(c1, b + 1);
	}
	if (b < nb) {
		_tile_zero(0);
		_tile_loadd(2, w + b * 34 + 2, rb);
		_tile_loadd(4, xg + b * 512, 64);
		_tile_dpbssd(0, 2, 4);
		_tile_stored(0, c0, 64);
		EPILOGUE(c0, b);
	}
	OUT(0); OUT(1); OUT(2); OUT(3); OUT(4); OUT(5); OUT(6); OUT(7);
	OUT(8); OUT(9); OUT(10); OUT(11); OUT(12); OUT(13); OUT(14); OUT(15);
	for (size_t j = 0; j < nt; j++)
		for (int m = 0; m < AMX_ROWS; m++)
			a->y[(g * 16 + j) * a->ystride + r + (size_t)m] = o[m * 16 + (int)j];
}
#undef EPI
#undef EPILOGUE
#undef OUT

AMX static void mm_int8_amx(const struct eng_mm_args *a)
{
	const size_t nb = a->cols / ENG_QK;
	if (a->w->type != FMT_GGML_Q8_0 || !a->xa || a->n < 2 || a->r1 - a->r0 < AMX_ROWS) {
		if (a->w->type == FMT_GGML_Q8_0 && a->xa && a->n >= 2) /* a batch's bits: short of a tile */
			mm_int8_c(a);
		else
			mm_int8_vnni(a);
		return;
	}
	/* the scales of a row tile (cols / 2 floats) in the worker's scratch
	 * (ENG_MM_TR * cols floats); without one, the same bits portably */
	float *ws = a->scr;
	if (!ws) {
		mm_int8_c(a);
		return;
	}
	const size_t rend = a->r0 + (a->r1 - a->r0) / AMX_ROWS * AMX_ROWS, ng = (a->n + 15) / 16;
	/* groups of 16 tokens whose packed activations stay in L2 while the row tiles pass */
	size_t gpb = (size_t)1024 * 1024 / (16 * (a->cols + nb * 4));
	if (gpb < 1)
		gpb = 1;
	static const struct amx_cfg cfg = {
		1, 0, {0}, {64, 64, 32, 32, 64, 64}, {16, 16, 16, 16, 8, 8}};
	_tile_loadconfig(&cfg);
	for (size_t g0 = 0; g0 < ng; g0 += gpb) {
		const size_t g1 = ng - g0 < gpb ? ng : g0 + gpb;
		for (size_t r = a->r0; r < rend; r += AMX_ROWS) {
			const unsigned char *w = a->w->data + r * a->w->row_bytes;
			wscales_amx(a, w, ws);
			/* while the first group runs, the next row tile comes in */
			const unsigned char *pf = r + 2 * AMX_ROWS <= rend ? w + AMX_ROWS * a->w->row_bytes : NULL;
			for (size_t g = g0; g < g1; g++)
				tile_amx(a, w, ws, r, g, a->n - g * 16 < 16 ? a->n - g * 16 : 16, g == g0 ? pf : NULL);
		}
	}
	_tile_release();
	if (rend < a->r1) { /* the rows short of a tile: the same bits, portably */
		struct eng_mm_args rest = *a;
		rest.r0 = rend;
		mm_int8_c(&rest);
	}
}

/* ---- AMX: F16 weights times batches of 16 tokens in bf16 tiles ----
 * TDPBF16PS multiplies bf16 pairs and adds in F32. An F16 weight is the
 * exact sum of two bf16 (w = hi + lo: 8 bits and the 3 left); an F32
 * activation is split the same way (x = hi + lo + e, |e| <= 2^-17 |x|).
 * Three products per tile, hi*hi + hi*lo + lo*hi (lo*lo is below 2^-18 of
 * the product), leave each term within about 2^-16 of w*x, the sums in F32
 * in the tiles: TinyLlama's shape (22 layers) moves its logits by 1.2-1.6e-4
 * of max |logit| against the FMA path, and the tiles run several times its
 * speed. Every output's operations are
 * its own (its row, its token, the columns 32 at a time in order): any
 * batch of two or more tokens, on any number of threads, gives the same
 * bits; one token (a generation step) runs the FMA kernel. */
#define AMXBF __attribute__((target("amx-tile,amx-bf16,avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define BK 256 /* columns of a row tile widened at a time */
#define BG 8   /* most token groups of 16 a block */

/* What the CPU and the kernel grant, written once under pthread_once
 * (amx_once, in amx_ask) before any read. */
static struct {
	int granted; /* AMX-INT8 and the tile state */
	int bf16;    /* AMX-BF16 and AVX512-BF16 too */
} amx;

/* Row t into its group of 16 at column t % 16: per step of 32 columns s,
 * the high parts at s * 2048 + k * 64 + (t % 16) * 4 (k the pair of
 * columns 2k, 2k + 1), the low parts 1024 after. */
AMXBF static void pack_f_bf(const float *x, size_t n, size_t t, unsigned char *xa)
{
	unsigned char *g = xa + t / 16 * 16 * 4 * n + t % 16 * 4;
	const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
					       _mm512_set1_epi32(64));
	for (size_t s = 0; s < n / 32; s++, x += 32, g += 2048) {
		__m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
		__m512 h0 = _mm512_castsi512_ps(_mm512_slli_epi32(
			_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x0)), 16));
		__m512 h1 = _mm512_castsi512_ps(_mm512_slli_epi32(
			_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x1)), 16));
		_mm512_i32scatter_epi32(g, idx, (__m512i)_mm512_cvtne2ps_pbh(x1, x0), 1);
		_mm512_i32scatter_epi32(g + 1024, idx,
					(__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(x1, h1), _mm512_sub_ps(x0, h0)), 1);
	}
}

static void pack_f_amx(const float *x, size_t n, size_t t, unsigned char *xa)
{
	if (amx.bf16) /* else mm_float_amx does not read it (and the CPU may lack AVX512-BF16) */
		pack_f_bf(x, n, t, xa);
}

/* Columns c0..c0+nc of the 16 rows at w (F16) as bf16 high and low parts,
 * BK apart. */
AMXBF static void widen_bf(const struct eng_mm_args *a, const unsigned char *w, size_t c0, size_t nc, uint16_t *hi,
			   uint16_t *lo)
{
	for (int m = 0; m < 16; m++)
		for (size_t c = 0; c < nc; c += 16) {
			__m512 f = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(
				w + (size_t)m * a->w->row_bytes + (c0 + c) * 2)));
			__m256bh h = _mm512_cvtneps_pbh(f);
			__m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16));
			_mm256_store_si256((__m256i *)(void *)(hi + m * BK + c), (__m256i)h);
			_mm256_store_si256((__m256i *)(void *)(lo + m * BK + c), (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(f, hf)));
		}
}

AMXBF static void mm_float_bf(const struct eng_mm_args *a)
{
	_Alignas(64) uint16_t hi[AMX_ROWS * BK], lo[AMX_ROWS * BK];
	_Alignas(64) float cacc[BG][256];
	const size_t rend = a->r0 + (a->r1 - a->r0) / AMX_ROWS * AMX_ROWS, ng = (a->n + 15) / 16, gstride = 16 * 4 * a->cols;
	static const struct amx_cfg cfg = {
		1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};
	_tile_loadconfig(&cfg);
	for (size_t g0 = 0; g0 < ng; g0 += BG) {
		const size_t g1 = ng - g0 < BG ? ng : g0 + BG;
		for (size_t r = a->r0; r < rend; r += AMX_ROWS) {
			const unsigned char *w = a->w->data + r * a->w->row_bytes;
			memset(cacc, 0, sizeof(cacc));
			for (size_t c0 = 0; c0 < a->cols; c0 += BK) {
				const size_t nc = a->cols - c0 < BK ? a->cols - c0 : BK;
				widen_bf(a, w, c0, nc, hi, lo);
				for (size_t g = g0; g < g1; g += 2) {
					const int two = g + 1 < g1;
					const unsigned char *b0 = a->xa + g * gstride + c0 / 32 * 2048, *b1 = b0 + gstride;
					_tile_loadd(0, cacc[g - g0], 64);
					if (two)
						_tile_loadd(1, cacc[g + 1 - g0], 64);
					for (size_t s = 0; s < nc / 32; s++) {
						_tile_loadd(2, hi + s * 32, BK * 2);
						_tile_loadd(3, lo + s * 32, BK * 2);
						_tile_loadd(4, b0 + s * 2048, 64);
						_tile_loadd(5, b0 + s * 2048 + 1024, 64);
						_tile_dpbf16ps(0, 2, 4);
						_tile_dpbf16ps(0, 2, 5);
						_tile_dpbf16ps(0, 3, 4);
						if (two) {
							_tile_loadd(6, b1 + s * 2048, 64);
							_tile_loadd(7, b1 + s * 2048 + 1024, 64);
							_tile_dpbf16ps(1, 2, 6);
							_tile_dpbf16ps(1, 2, 7);
							_tile_dpbf16ps(1, 3, 6);
						}
					}
					_tile_stored(0, cacc[g - g0], 64);
					if (two)
						_tile_stored(1, cacc[g + 1 - g0], 64);
				}
			}
			for (size_t g = g0; g < g1; g++)
				for (size_t j = 0; j < 16 && g * 16 + j < a->n; j++)
					for (int m = 0; m < AMX_ROWS; m++)
						a->y[(g * 16 + j) * a->ystride + r + (size_t)m] = cacc[g - g0][m * 16 + (int)j];
		}
	}
	_tile_release();
	if (rend < a->r1) { /* the rows short of a tile */
		struct eng_mm_args rest = *a;
		rest.r0 = rend;
		mm_float_vnni(&rest);
	}
}
#undef BK
#undef BG

/* F16 batches on the tiles; the rest (and a CPU without AMX-BF16) on FMAs */
static void mm_float_amx(const struct eng_mm_args *a)
{
	if (amx.bf16 && a->w->type == FMT_GGML_F16 && a->xa && a->n >= 2 && a->cols % 32 == 0 &&
	    a->r1 - a->r0 >= AMX_ROWS)
		mm_float_bf(a);
	else
		mm_float_vnni(a);
}

const struct eng_mm_kernels eng_mm_amx = {quant_vnni, mm_int8_amx, mm_float_amx, prep_vnni, pack_amx, pack_f_amx};

/* The tile data state is off for a process until it asks the kernel
 * (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA, Linux 5.16 and later). */
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static void amx_ask(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 25)))
		return;
	amx.granted = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
	/* F16 batches also want AMX-BF16 (7.0 EDX bit 22) and AVX512-BF16 (7.1 EAX bit 5) */
	unsigned a1, b1, c1, d1;
	amx.bf16 = amx.granted && (d & (1u << 22)) && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && (a1 & (1u << 5));
}

int eng_amx_usable(void)
{
	pthread_once(&amx_once, amx_ask);
	return amx.granted;
}
#endif
