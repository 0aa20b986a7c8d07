/* numeric.c - dtype conversion and the Q8_0/Q4_0 reference quantizers,
 * bit-exact with ggml (ggml-quants.c *_ref, ggml-impl.h fp16 conversion). */
#include <math.h>
#include <pthread.h>
#include <string.h>
#include "convert-int.h"
#include "../formats/half.h"

static inline void put_f16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static inline uint16_t get_u16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* The largest |source - dequantized| a Q8_0/Q4_0 block whose largest
 * magnitude is amax may show. Inline so that the SIMD check inlines it
 * (calling SSE-encoded code from AVX code costs a state transition per
 * block). */
static inline float quant_bound(enum conv_out_type t, float amax)
{
	/* Q8_0: d = amax/127, error d/2; Q4_0: d = amax/8, error d (the top
	 * step is clamped); plus 127 (8) steps of the scale's F16 rounding, and
	 * a little for the float arithmetic */
	float d = t == CONV_OUT_Q8_0 ? amax / 127 : amax / 8;
	float steps = t == CONV_OUT_Q8_0 ? 127 : 8;
	float bound = (t == CONV_OUT_Q8_0 ? d * 0.5f : d) + steps * (d * 0x1p-11f + 0x1p-25f);
	return bound + bound * 0x1p-16f + amax * 0x1p-20f;
}

void conv_quantize_q8_0(const float *x, unsigned char *out, size_t n)
{
	for (size_t b = 0; b < n / CONV_QK; b++, x += CONV_QK, out += 34) {
		float amax = 0.0f;
		for (int j = 0; j < CONV_QK; j++) {
			float v = fabsf(x[j]);
			amax = amax > v ? amax : v;
		}
		const float d = amax / ((1 << 7) - 1);
		const float id = d ? 1.0f / d : 0.0f;
		put_f16(out, fmt_f32_to_f16(d));
		for (int j = 0; j < CONV_QK; j++)
			out[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
	}
}

void conv_quantize_q4_0(const float *x, unsigned char *out, size_t n)
{
	for (size_t b = 0; b < n / CONV_QK; b++, x += CONV_QK, out += 18) {
		float amax = 0.0f, max = 0.0f;
		for (int j = 0; j < CONV_QK; j++) {
			const float v = x[j];
			if (amax < fabsf(v)) {
				amax = fabsf(v);
				max = v;
			}
		}
		const float d = max / -8;
		const float id = d ? 1.0f / d : 0.0f;
		put_f16(out, fmt_f32_to_f16(d));
		for (int j = 0; j < CONV_QK / 2; j++) {
			const float x0 = x[j] * id, x1 = x[CONV_QK / 2 + j] * id;
			int8_t a = (int8_t)(x0 + 8.5f), c = (int8_t)(x1 + 8.5f);
			const uint8_t xi0 = (uint8_t)(a < 15 ? a : 15), xi1 = (uint8_t)(c < 15 ? c : 15);
			out[2 + j] = (unsigned char)(xi0 | (xi1 << 4));
		}
	}
}

void conv_dequantize_q8_0(const unsigned char *in, float *y, size_t n)
{
	for (size_t b = 0; b < n / CONV_QK; b++, in += 34, y += CONV_QK) {
		const float d = fmt_f16_to_f32(get_u16(in));
		for (int j = 0; j < CONV_QK; j++)
			y[j] = (float)(int8_t)in[2 + j] * d;
	}
}

void conv_dequantize_q4_0(const unsigned char *in, float *y, size_t n)
{
	for (size_t b = 0; b < n / CONV_QK; b++, in += 18, y += CONV_QK) {
		const float d = fmt_f16_to_f32(get_u16(in));
		for (int j = 0; j < CONV_QK / 2; j++) {
			y[j] = (float)((in[2 + j] & 0x0F) - 8) * d;
			y[j + CONV_QK / 2] = (float)((in[2 + j] >> 4) - 8) * d;
		}
	}
}

/* ---- bulk paths ---- */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#include <cpuid.h>

__attribute__((target("avx,f16c"))) static void f32_to_f16_f16c(const float *x, uint16_t *y, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(y + i),
				 _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
	for (; i < n; i++)
		y[i] = fmt_f32_to_f16(x[i]);
}

__attribute__((target("avx2"))) static void bf16_to_f32_avx2(const unsigned char *x, float *y, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(x + 2 * i)));
		_mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
	}
	for (; i < n; i++)
		y[i] = fmt_bf16_to_f32(get_u16(x + 2 * i));
}

/* quantize_row_q8_0_ref, vectorized without changing a bit: the same float
 * operations, and roundf done exactly (truncate, then step away from zero
 * when the dropped fraction is at least one half). */
__attribute__((target("avx2,f16c"))) static void q8_0_avx2(const float *x, unsigned char *out, size_t n)
{
	const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
	const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
	for (size_t b = 0; b < n / CONV_QK; b++, x += CONV_QK, out += 34) {
		__m256 v[4], m = _mm256_setzero_ps();
		__m256i q[4];
		for (int k = 0; k < 4; k++) {
			v[k] = _mm256_loadu_ps(x + 8 * k);
			m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[k]));
		}
		__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
		m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
		m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
		const float amax = _mm_cvtss_f32(m4);
		const float d = amax / ((1 << 7) - 1);
		const float id = d ? 1.0f / d : 0.0f;
		const __m256 vid = _mm256_set1_ps(id);
		put_f16(out, (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
		for (int k = 0; k < 4; k++) {
			__m256 p = _mm256_mul_ps(v[k], vid);
			__m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
			__m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(p, t));
			__m256 step = _mm256_or_ps(one, _mm256_and_ps(sign, p));
			t = _mm256_add_ps(t, _mm256_and_ps(step, _mm256_cmp_ps(frac, half, _CMP_GE_OQ)));
			q[k] = _mm256_cvtps_epi32(t);
		}
		__m256i a = _mm256_packs_epi32(q[0], q[1]), c = _mm256_packs_epi32(q[2], q[3]);
		__m256i r = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, c), perm);
		_mm256_storeu_si256((__m256i *)(void *)(out + 2), r);
	}
}

/* quantize_row_q4_0_ref, vectorized without changing a bit for finite
 * input (NaN/Inf make the reference's cast undefined; the check refuses
 * such blocks either way): the first
 * element of the largest magnitude gives the signed max (NaNs are never
 * picked, as in the reference), then the same multiply, add and
 * truncation per element. */
__attribute__((target("avx2,f16c"))) static void q4_0_avx2(const float *x, unsigned char *out, size_t n)
{
	const __m256 sign = _mm256_set1_ps(-0.0f), off = _mm256_set1_ps(8.5f);
	const __m256i fifteen = _mm256_set1_epi32(15);
	for (size_t b = 0; b < n / CONV_QK; b++, x += CONV_QK, out += 18) {
		__m256 v[4], m = _mm256_setzero_ps();
		__m256i q[4];
		unsigned mask = 0;
		for (int k = 0; k < 4; k++) {
			v[k] = _mm256_loadu_ps(x + 8 * k);
			/* max(|v|, m) keeps m where |v| is NaN */
			m = _mm256_max_ps(_mm256_andnot_ps(sign, v[k]), m);
		}
		__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
		m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
		m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
		const float amax = _mm_cvtss_f32(m4);
		float max = 0.0f;
		if (amax > 0.0f) {
			const __m256 va = _mm256_set1_ps(amax);
			for (int k = 0; k < 4; k++)
				mask |= (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v[k]), va,
										   _CMP_EQ_OQ)) << (8 * k);
			max = x[__builtin_ctz(mask)];
		}
		const float d = max / -8;
		const float id = d ? 1.0f / d : 0.0f;
		const __m256 vid = _mm256_set1_ps(id);
		put_f16(out, (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
		for (int k = 0; k < 4; k++) {
			__m256 t = _mm256_add_ps(_mm256_mul_ps(v[k], vid), off);
			q[k] = _mm256_min_epi32(_mm256_cvttps_epi32(t), fifteen);
		}
		/* byte j: element j in the low nibble, element j+16 in the high one */
		__m256i b0 = _mm256_or_si256(q[0], _mm256_slli_epi32(q[2], 4));
		__m256i b1 = _mm256_or_si256(q[1], _mm256_slli_epi32(q[3], 4));
		__m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(b0, b1), 0xD8);
		__m256i u = _mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0x08);
		_mm_storeu_si128((__m128i *)(void *)(out + 2), _mm256_castsi256_si128(u));
	}
}

/* The check of quantized blocks (see conv_check_quant), 8 lanes at a time:
 * the scale must be the F16 of the reference's, every value the reference's rounding
 * of x/d, stated as inequalities rather than recomputed (Q8_0: roundf, so
 * |x*id - q| < 1/2, or exactly 1/2 with |q| > |x*id|; Q4_0: the
 * truncation of x*id + 8.5 clamped at 15, so q <= t < q+1, or q = 15 and
 * t >= 15), and every dequantized value within the block's bound. Returns
 * 1 when all hold, else 0 with *bad the first failing element. */
__attribute__((target("avx2,f16c"))) static int check_quant_avx2(enum conv_out_type t, const float *x,
								const unsigned char *in, size_t n, float *maxerr,
								size_t *bad)
{
	const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
	const __m256 f15 = _mm256_set1_ps(15.0f), off = _mm256_set1_ps(8.5f);
	__m256 worst = _mm256_setzero_ps();
	const size_t bs = t == CONV_OUT_Q8_0 ? 34 : 18;
	int ok = 1;
	for (size_t b = 0; b < n / CONV_QK; b++, x += CONV_QK, in += bs) {
		__m256 v[4], m = _mm256_setzero_ps(), y[4], q[4];
		unsigned fail = 0;
		float d;
		for (int k = 0; k < 4; k++) {
			v[k] = _mm256_loadu_ps(x + 8 * k);
			m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[k]));
		}
		__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
		m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
		m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
		const float amax = _mm_cvtss_f32(m4);
		if (t == CONV_OUT_Q8_0) {
			d = amax / ((1 << 7) - 1);
			for (int k = 0; k < 4; k++)
				q[k] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
					_mm_loadl_epi64((const __m128i *)(const void *)(in + 2 + 8 * k))));
		} else {
			float max = 0.0f;
			if (amax > 0.0f) {
				size_t j = 0;
				while (j < CONV_QK && fabsf(x[j]) != amax)
					j++;
				max = j < CONV_QK ? x[j] : amax; /* (a NaN block: the bound check fails it) */
			}
			d = max / -8;
			const __m256i lo = _mm256_set1_epi32(15);
			for (int k = 0; k < 2; k++) {
				__m256i qq = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(in + 2 + 8 * k)));
				q[k] = _mm256_cvtepi32_ps(_mm256_and_si256(qq, lo));
				q[k + 2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(qq, 4));
			}
		}
		const float id = d ? 1.0f / d : 0.0f;
		const __m256 vid = _mm256_set1_ps(id);
		const __m256 dd = _mm256_set1_ps(_cvtsh_ss(get_u16(in)));
		const __m256 vlim = _mm256_set1_ps(quant_bound(t, amax));
		/* the scale: blame the block's first element (F16C here; the scalar
		 * check uses fmt_f32_to_f16, and a unit test holds them equal) */
		if (get_u16(in) != (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
			fail |= 1;
		for (int k = 0; k < 4; k++) {
			__m256 good;
			if (t == CONV_OUT_Q8_0) {
				__m256 p = _mm256_mul_ps(v[k], vid);
				__m256 ad = _mm256_andnot_ps(sign, _mm256_sub_ps(p, q[k]));
				__m256 tie = _mm256_and_ps(_mm256_cmp_ps(ad, half, _CMP_EQ_OQ),
							   _mm256_cmp_ps(_mm256_andnot_ps(sign, q[k]),
									 _mm256_andnot_ps(sign, p), _CMP_GT_OQ));
				good = _mm256_or_ps(_mm256_cmp_ps(ad, half, _CMP_LT_OQ), tie);
				y[k] = _mm256_mul_ps(q[k], dd);
			} else {
				__m256 tt = _mm256_add_ps(_mm256_mul_ps(v[k], vid), off);
				__m256 in_step = _mm256_and_ps(_mm256_cmp_ps(q[k], tt, _CMP_LE_OQ),
							       _mm256_cmp_ps(tt, _mm256_add_ps(q[k], one), _CMP_LT_OQ));
				__m256 clamped = _mm256_and_ps(_mm256_cmp_ps(q[k], f15, _CMP_EQ_OQ),
							       _mm256_cmp_ps(tt, f15, _CMP_GE_OQ));
				good = _mm256_or_ps(in_step, clamped);
				y[k] = _mm256_mul_ps(_mm256_sub_ps(q[k], _mm256_set1_ps(8.0f)), dd);
			}
			__m256 e = _mm256_andnot_ps(sign, _mm256_sub_ps(v[k], y[k]));
			/* NaN compares false: not good */
			good = _mm256_and_ps(good, _mm256_cmp_ps(e, vlim, _CMP_LE_OQ));
			fail |= (unsigned)(~_mm256_movemask_ps(good) & 0xFF) << (8 * k);
			worst = _mm256_max_ps(worst, e);
		}
		if (fail && ok) {
			ok = 0;
			*bad = b * CONV_QK + (size_t)__builtin_ctz(fail);
		}
	}
	__m128 w4 = _mm_max_ps(_mm256_castps256_ps128(worst), _mm256_extractf128_ps(worst, 1));
	w4 = _mm_max_ps(w4, _mm_movehl_ps(w4, w4));
	w4 = _mm_max_ss(w4, _mm_movehdup_ps(w4));
	if (_mm_cvtss_f32(w4) > *maxerr)
		*maxerr = _mm_cvtss_f32(w4);
	return ok;
}

/* x may be unaligned (a tensor inside a zip, say): bytes, not uint16_t. */
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const unsigned char *x, float *y, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(x + 2 * i))));
	for (; i < n; i++)
		y[i] = fmt_f16_to_f32(get_u16(x + 2 * i));
}
#endif

/* What the CPU has, found once: pthread_once makes the one write visible to
 * every thread (a lazily filled static would be a data race under C11). */
static struct {
	int avx2, f16c;
} cpu;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void cpu_probe(void)
{
#ifdef HAVE_X86
	unsigned a, b, c, d;
	cpu.avx2 = __builtin_cpu_supports("avx2");
	/* clang's __builtin_cpu_supports does not know "f16c": ask cpuid (leaf 1, ecx bit 29) */
	cpu.f16c = __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
#endif
}

static int have_avx2(void)
{
	pthread_once(&cpu_once, cpu_probe);
	return cpu.avx2;
}

static int have_f16c(void)
{
	pthread_once(&cpu_once, cpu_probe);
	return cpu.f16c;
}

void conv_load_f32(const unsigned char *src, enum fmt_dtype dt, size_t n, float *out)
{
	switch (dt) {
	case FMT_F32:
		memcpy(out, src, n * 4);
		break;
	case FMT_BF16:
#ifdef HAVE_X86
		if (have_avx2()) {
			bf16_to_f32_avx2(src, out, n);
			break;
		}
#endif
		for (size_t i = 0; i < n; i++)
			out[i] = fmt_bf16_to_f32(get_u16(src + 2 * i));
		break;
	case FMT_F16:
#ifdef HAVE_X86
		if (have_f16c()) {
			f16_to_f32_f16c(src, out, n);
			break;
		}
#endif
		for (size_t i = 0; i < n; i++)
			out[i] = fmt_f16_to_f32(get_u16(src + 2 * i));
		break;
	default:
		memset(out, 0, n * 4);
	}
}

void conv_store(enum conv_out_type t, const float *x, size_t n, unsigned char *out)
{
	switch (t) {
	case CONV_OUT_F32:
		memcpy(out, x, n * 4);
		break;
	case CONV_OUT_F16:
#ifdef HAVE_X86
		if (have_f16c()) {
			f32_to_f16_f16c(x, (uint16_t *)(void *)out, n);
			break;
		}
#endif
		for (size_t i = 0; i < n; i++)
			put_f16(out + 2 * i, fmt_f32_to_f16(x[i]));
		break;
	case CONV_OUT_BF16:
		for (size_t i = 0; i < n; i++)
			put_f16(out + 2 * i, fmt_f32_to_bf16(x[i]));
		break;
	case CONV_OUT_Q8_0:
#ifdef HAVE_X86
		if (have_avx2()) {
			q8_0_avx2(x, out, n);
			break;
		}
#endif
		conv_quantize_q8_0(x, out, n);
		break;
	case CONV_OUT_Q4_0:
#ifdef HAVE_X86
		if (have_avx2() && have_f16c()) {
			q4_0_avx2(x, out, n);
			break;
		}
#endif
		conv_quantize_q4_0(x, out, n);
		break;
	}
}

int conv_check_quant(enum conv_out_type t, const float *x, const unsigned char *in, size_t n, float *scratch,
		     float *maxerr, size_t *bad)
{
#ifdef HAVE_X86
	if (have_avx2() && have_f16c())
		return check_quant_avx2(t, x, in, n, maxerr, bad);
#endif
	return conv_check_quant_scalar(t, x, in, n, scratch, maxerr, bad);
}

int conv_check_quant_scalar(enum conv_out_type t, const float *x, const unsigned char *in, size_t n, float *scratch,
			    float *maxerr, size_t *bad)
{
	const size_t bs = t == CONV_OUT_Q8_0 ? 34 : 18;
	int ok = 1;
	conv_load_out(t, in, n, scratch);
	for (size_t b = 0; b < n; b += CONV_QK) {
		const unsigned char *blk = in + b / CONV_QK * bs;
		float amax = 0, max = 0, d, id, lim;
		size_t first = SIZE_MAX;
		for (size_t j = b; j < b + CONV_QK; j++)
			if (fabsf(x[j]) > amax) {
				amax = fabsf(x[j]);
				max = x[j];
			}
		d = t == CONV_OUT_Q8_0 ? amax / ((1 << 7) - 1) : max / -8;
		id = d ? 1.0f / d : 0.0f;
		lim = quant_bound(t, amax);
		if (get_u16(blk) != fmt_f32_to_f16(d))
			first = b;
		for (size_t j = b; j < b + CONV_QK && first == SIZE_MAX; j++) {
			size_t k = j - b;
			float e = fabsf(x[j] - scratch[j]), p, q;
			int good;
			if (t == CONV_OUT_Q8_0) {
				p = x[j] * id;
				q = (float)(int8_t)blk[2 + k];
				good = fabsf(p - q) < 0.5f || (fabsf(p - q) == 0.5f && fabsf(q) > fabsf(p));
			} else {
				p = x[j] * id + 8.5f;
				q = (float)(k < CONV_QK / 2 ? blk[2 + k] & 15 : blk[2 + k - CONV_QK / 2] >> 4);
				good = (q <= p && p < q + 1) || (q == 15 && p >= 15);
			}
			if (!good || !(e <= lim))
				first = j;
			else if (e > *maxerr)
				*maxerr = e;
		}
		if (first != SIZE_MAX && ok) {
			ok = 0;
			*bad = first;
		}
	}
	return ok;
}

void conv_load_out(enum conv_out_type t, const unsigned char *in, size_t n, float *y)
{
	switch (t) {
	case CONV_OUT_F32:
		memcpy(y, in, n * 4);
		break;
	case CONV_OUT_F16:
		conv_load_f32(in, FMT_F16, n, y);
		break;
	case CONV_OUT_BF16:
		conv_load_f32(in, FMT_BF16, n, y);
		break;
	case CONV_OUT_Q8_0:
		conv_dequantize_q8_0(in, y, n);
		break;
	case CONV_OUT_Q4_0:
		conv_dequantize_q4_0(in, y, n);
		break;
	}
}
