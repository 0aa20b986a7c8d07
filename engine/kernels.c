/* kernels.c - number formats and the dot products behind every matrix-vector
 * product: a portable version, and AVX2/FMA/F16C and AVX-512 versions
 * compiled with target attributes and picked at run time (so one binary
 * runs everywhere and uses what the CPU has). */
#include <math.h>
#include <string.h>
#include "engine-int.h"

#if defined(__x86_64__) || defined(__i386__)
#define ENG_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static inline uint16_t ld16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline float ldf(const unsigned char *p)
{
	float f;
	memcpy(&f, p, 4);
	return f;
}

int eng_type_supported(uint32_t t)
{
	return eng_type_slot(t) >= 0;
}

int eng_dequantize(uint32_t t, const void *src, float *dst, size_t n)
{
	const unsigned char *p = src;
	switch (t) {
	case FMT_GGML_F32:
		memcpy(dst, p, n * 4);
		return 0;
	case FMT_GGML_F16:
		for (size_t i = 0; i < n; i++)
			dst[i] = fmt_f16_to_f32(ld16(p + 2 * i));
		return 0;
	case FMT_GGML_BF16:
		for (size_t i = 0; i < n; i++)
			dst[i] = fmt_bf16_to_f32(ld16(p + 2 * i));
		return 0;
	case FMT_GGML_Q8_0:
		if (n % ENG_QK)
			return -1;
		for (size_t b = 0; b < n / ENG_QK; b++, p += 34, dst += ENG_QK) {
			float d = fmt_f16_to_f32(ld16(p));
			for (int j = 0; j < ENG_QK; j++)
				dst[j] = (float)(int8_t)p[2 + j] * d;
		}
		return 0;
	case FMT_GGML_Q4_0:
		if (n % ENG_QK)
			return -1;
		for (size_t b = 0; b < n / ENG_QK; b++, p += 18, dst += ENG_QK) {
			float d = fmt_f16_to_f32(ld16(p));
			for (int j = 0; j < ENG_QK / 2; j++) {
				dst[j] = (float)((p[2 + j] & 0x0f) - 8) * d;
				dst[j + ENG_QK / 2] = (float)((p[2 + j] >> 4) - 8) * d;
			}
		}
		return 0;
	default:
		return -1;
	}
}

/* ---- portable kernels ---- */

static float dot_f32_c(const unsigned char *w, const float *x, size_t n)
{
	float s[4] = {0, 0, 0, 0};
	size_t i = 0;
	for (; i + 4 <= n; i += 4)
		for (int j = 0; j < 4; j++)
			s[j] += ldf(w + 4 * (i + j)) * x[i + j];
	for (; i < n; i++)
		s[0] += ldf(w + 4 * i) * x[i];
	return (s[0] + s[1]) + (s[2] + s[3]);
}

static float dot_f16_c(const unsigned char *w, const float *x, size_t n)
{
	float s = 0;
	for (size_t i = 0; i < n; i++)
		s += fmt_f16_to_f32(ld16(w + 2 * i)) * x[i];
	return s;
}

static float dot_bf16_c(const unsigned char *w, const float *x, size_t n)
{
	float s = 0;
	for (size_t i = 0; i < n; i++)
		s += fmt_bf16_to_f32(ld16(w + 2 * i)) * x[i];
	return s;
}

static float dot_q8_0_c(const unsigned char *w, const float *x, size_t n)
{
	float s = 0;
	for (size_t b = 0; b < n / ENG_QK; b++, w += 34, x += ENG_QK) {
		float bs = 0;
		for (int j = 0; j < ENG_QK; j++)
			bs += (float)(int8_t)w[2 + j] * x[j];
		s += bs * fmt_f16_to_f32(ld16(w));
	}
	return s;
}

static float dot_q4_0_c(const unsigned char *w, const float *x, size_t n)
{
	float s = 0;
	for (size_t b = 0; b < n / ENG_QK; b++, w += 18, x += ENG_QK) {
		float bs = 0;
		for (int j = 0; j < ENG_QK / 2; j++)
			bs += (float)((w[2 + j] & 0x0f) - 8) * x[j] + (float)((w[2 + j] >> 4) - 8) * x[j + ENG_QK / 2];
		s += bs * fmt_f16_to_f32(ld16(w));
	}
	return s;
}

static const struct eng_kernels kernels_c = {
	ENG_SIMD_SCALAR, {dot_f32_c, dot_f16_c, dot_bf16_c, dot_q8_0_c, dot_q4_0_c}, &eng_mm_c, eng_attn_c};

#ifdef ENG_X86
/* ---- AVX2 + FMA + F16C ---- */
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float hsum256(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

AVX2 static float dot_f32_avx2(const unsigned char *w, const float *x, size_t n)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
	const float *wf = (const float *)(const void *)w; /* loadu: any alignment */
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wf + i), _mm256_loadu_ps(x + i), a0);
		a1 = _mm256_fmadd_ps(_mm256_loadu_ps(wf + i + 8), _mm256_loadu_ps(x + i + 8), a1);
		a2 = _mm256_fmadd_ps(_mm256_loadu_ps(wf + i + 16), _mm256_loadu_ps(x + i + 16), a2);
		a3 = _mm256_fmadd_ps(_mm256_loadu_ps(wf + i + 24), _mm256_loadu_ps(x + i + 24), a3);
	}
	for (; i + 8 <= n; i += 8)
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wf + i), _mm256_loadu_ps(x + i), a0);
	float s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
	for (; i < n; i++)
		s += ldf(w + 4 * i) * x[i];
	return s;
}

AVX2 static float dot_f16_avx2(const unsigned char *w, const float *x, size_t n)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w + 2 * i)));
		__m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w + 2 * i + 16)));
		a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
		a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
	}
	float s = hsum256(_mm256_add_ps(a0, a1));
	for (; i < n; i++)
		s += fmt_f16_to_f32(ld16(w + 2 * i)) * x[i];
	return s;
}

AVX2 static inline __m256 bf16x8_avx2(const unsigned char *p)
{
	__m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
	return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

AVX2 static float dot_bf16_avx2(const unsigned char *w, const float *x, size_t n)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		a0 = _mm256_fmadd_ps(bf16x8_avx2(w + 2 * i), _mm256_loadu_ps(x + i), a0);
		a1 = _mm256_fmadd_ps(bf16x8_avx2(w + 2 * i + 16), _mm256_loadu_ps(x + i + 8), a1);
	}
	float s = hsum256(_mm256_add_ps(a0, a1));
	for (; i < n; i++)
		s += fmt_bf16_to_f32(ld16(w + 2 * i)) * x[i];
	return s;
}

AVX2 static inline __m256 i8x8_avx2(__m128i v)
{
	return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

/* A block's fp16 scale, by F16C (a call to the portable decoder per block costs more than the block). */
AVX2 static inline float scale_f16c(const unsigned char *p)
{
	return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(ld16(p))));
}

/* One Q8_0 block times 32 activations, unscaled. */
AVX2 static inline __m256 q8_block_avx2(const unsigned char *w, const float *x)
{
	__m128i q0 = _mm_loadu_si128((const __m128i *)(const void *)(w + 2));
	__m128i q1 = _mm_loadu_si128((const __m128i *)(const void *)(w + 18));
	__m256 s0 = _mm256_mul_ps(i8x8_avx2(q0), _mm256_loadu_ps(x));
	__m256 s1 = _mm256_mul_ps(i8x8_avx2(_mm_srli_si128(q0, 8)), _mm256_loadu_ps(x + 8));
	s0 = _mm256_fmadd_ps(i8x8_avx2(q1), _mm256_loadu_ps(x + 16), s0);
	s1 = _mm256_fmadd_ps(i8x8_avx2(_mm_srli_si128(q1, 8)), _mm256_loadu_ps(x + 24), s1);
	return _mm256_add_ps(s0, s1);
}

AVX2 static float dot_q8_0_avx2(const unsigned char *w, const float *x, size_t n)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	size_t b = 0, nb = n / ENG_QK;
	for (; b + 2 <= nb; b += 2, w += 68, x += 2 * ENG_QK) {
		a0 = _mm256_fmadd_ps(_mm256_set1_ps(scale_f16c(w)), q8_block_avx2(w, x), a0);
		a1 = _mm256_fmadd_ps(_mm256_set1_ps(scale_f16c(w + 34)), q8_block_avx2(w + 34, x + ENG_QK), a1);
	}
	if (b < nb)
		a0 = _mm256_fmadd_ps(_mm256_set1_ps(scale_f16c(w)), q8_block_avx2(w, x), a0);
	return hsum256(_mm256_add_ps(a0, a1));
}

/* One Q4_0 block times 32 activations, unscaled. */
AVX2 static inline __m256 q4_block_avx2(const unsigned char *w, const float *x)
{
	const __m128i m4 = _mm_set1_epi8(0x0f), e8 = _mm_set1_epi8(8);
	__m128i q = _mm_loadu_si128((const __m128i *)(const void *)(w + 2));
	__m128i lo = _mm_sub_epi8(_mm_and_si128(q, m4), e8);
	__m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), e8);
	__m256 s0 = _mm256_mul_ps(i8x8_avx2(lo), _mm256_loadu_ps(x));
	__m256 s1 = _mm256_mul_ps(i8x8_avx2(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8));
	s0 = _mm256_fmadd_ps(i8x8_avx2(hi), _mm256_loadu_ps(x + 16), s0);
	s1 = _mm256_fmadd_ps(i8x8_avx2(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s1);
	return _mm256_add_ps(s0, s1);
}

AVX2 static float dot_q4_0_avx2(const unsigned char *w, const float *x, size_t n)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	size_t b = 0, nb = n / ENG_QK;
	for (; b + 2 <= nb; b += 2, w += 36, x += 2 * ENG_QK) {
		a0 = _mm256_fmadd_ps(_mm256_set1_ps(scale_f16c(w)), q4_block_avx2(w, x), a0);
		a1 = _mm256_fmadd_ps(_mm256_set1_ps(scale_f16c(w + 18)), q4_block_avx2(w + 18, x + ENG_QK), a1);
	}
	if (b < nb)
		a0 = _mm256_fmadd_ps(_mm256_set1_ps(scale_f16c(w)), q4_block_avx2(w, x), a0);
	return hsum256(_mm256_add_ps(a0, a1));
}

static const struct eng_kernels kernels_avx2 = {
	ENG_SIMD_AVX2, {dot_f32_avx2, dot_f16_avx2, dot_bf16_avx2, dot_q8_0_avx2, dot_q4_0_avx2}, &eng_mm_avx2, eng_attn_c};

/* ---- AVX-512F ---- */
#define AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

AVX512 static float dot_f32_avx512(const unsigned char *w, const float *x, size_t n)
{
	__m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
	const float *wf = (const float *)(const void *)w;
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wf + i), _mm512_loadu_ps(x + i), a0);
		a1 = _mm512_fmadd_ps(_mm512_loadu_ps(wf + i + 16), _mm512_loadu_ps(x + i + 16), a1);
	}
	for (; i + 16 <= n; i += 16)
		a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wf + i), _mm512_loadu_ps(x + i), a0);
	float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
	for (; i < n; i++)
		s += ldf(w + 4 * i) * x[i];
	return s;
}

AVX512 static float dot_f16_avx512(const unsigned char *w, const float *x, size_t n)
{
	__m512 a0 = _mm512_setzero_ps();
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 wv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(w + 2 * i)));
		a0 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + i), a0);
	}
	float s = _mm512_reduce_add_ps(a0);
	for (; i < n; i++)
		s += fmt_f16_to_f32(ld16(w + 2 * i)) * x[i];
	return s;
}

AVX512 static float dot_bf16_avx512(const unsigned char *w, const float *x, size_t n)
{
	__m512 a0 = _mm512_setzero_ps();
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(w + 2 * i)));
		a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), _mm512_loadu_ps(x + i), a0);
	}
	float s = _mm512_reduce_add_ps(a0);
	for (; i < n; i++)
		s += fmt_bf16_to_f32(ld16(w + 2 * i)) * x[i];
	return s;
}

AVX512 static inline float scale_f16c512(const unsigned char *p)
{
	return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(ld16(p))));
}

AVX512 static inline __m512 q8_block_avx512(const unsigned char *w, const float *x)
{
	__m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(w + 2))));
	__m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(w + 18))));
	return _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(q0, _mm512_loadu_ps(x)));
}

AVX512 static float dot_q8_0_avx512(const unsigned char *w, const float *x, size_t n)
{
	__m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
	size_t b = 0, nb = n / ENG_QK;
	for (; b + 2 <= nb; b += 2, w += 68, x += 2 * ENG_QK) {
		a0 = _mm512_fmadd_ps(_mm512_set1_ps(scale_f16c512(w)), q8_block_avx512(w, x), a0);
		a1 = _mm512_fmadd_ps(_mm512_set1_ps(scale_f16c512(w + 34)), q8_block_avx512(w + 34, x + ENG_QK), a1);
	}
	if (b < nb)
		a0 = _mm512_fmadd_ps(_mm512_set1_ps(scale_f16c512(w)), q8_block_avx512(w, x), a0);
	return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

AVX512 static inline __m512 q4_block_avx512(const unsigned char *w, const float *x)
{
	const __m128i m4 = _mm_set1_epi8(0x0f), e8 = _mm_set1_epi8(8);
	__m128i q = _mm_loadu_si128((const __m128i *)(const void *)(w + 2));
	__m128i lo = _mm_sub_epi8(_mm_and_si128(q, m4), e8);
	__m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), e8);
	__m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), _mm512_loadu_ps(x));
	return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), _mm512_loadu_ps(x + 16), s);
}

AVX512 static float dot_q4_0_avx512(const unsigned char *w, const float *x, size_t n)
{
	__m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
	size_t b = 0, nb = n / ENG_QK;
	for (; b + 2 <= nb; b += 2, w += 36, x += 2 * ENG_QK) {
		a0 = _mm512_fmadd_ps(_mm512_set1_ps(scale_f16c512(w)), q4_block_avx512(w, x), a0);
		a1 = _mm512_fmadd_ps(_mm512_set1_ps(scale_f16c512(w + 18)), q4_block_avx512(w + 18, x + ENG_QK), a1);
	}
	if (b < nb)
		a0 = _mm512_fmadd_ps(_mm512_set1_ps(scale_f16c512(w)), q4_block_avx512(w, x), a0);
	return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

static const struct eng_kernels kernels_avx512 = {
	ENG_SIMD_AVX512, {dot_f32_avx512, dot_f16_avx512, dot_bf16_avx512, dot_q8_0_avx512, dot_q4_0_avx512}, &eng_mm_avx2, eng_attn_avx512};
/* the dot products of AVX-512F; the matrix products of AVX-512 VNNI */
static const struct eng_kernels kernels_vnni = {
	ENG_SIMD_AVX512VNNI, {dot_f32_avx512, dot_f16_avx512, dot_bf16_avx512, dot_q8_0_avx512, dot_q4_0_avx512},
	&eng_mm_vnni, eng_attn_avx512};
/* the VNNI level with AMX tiles for batches through Q8_0 weights */
static const struct eng_kernels kernels_amx = {
	ENG_SIMD_AMX, {dot_f32_avx512, dot_f16_avx512, dot_bf16_avx512, dot_q8_0_avx512, dot_q4_0_avx512},
	&eng_mm_amx, eng_attn_avx512};

/* F16C through cpuid: clang's __builtin_cpu_supports has no "f16c". */
static int have_f16c(void)
{
	unsigned a, b, c, d;
	return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

static int have_avx2(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && have_f16c();
}

static int have_avx512(void)
{
	return have_avx2() && __builtin_cpu_supports("avx512f");
}

static int have_vnni(void)
{
	return have_avx512() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
	       __builtin_cpu_supports("avx512vnni");
}
#endif

enum eng_simd eng_simd_best(void)
{
#ifdef ENG_X86
	if (have_vnni() && eng_amx_usable())
		return ENG_SIMD_AMX;
	if (have_vnni())
		return ENG_SIMD_AVX512VNNI;
	if (have_avx512())
		return ENG_SIMD_AVX512;
	if (have_avx2())
		return ENG_SIMD_AVX2;
#endif
	return ENG_SIMD_SCALAR;
}

const char *eng_simd_name(enum eng_simd s)
{
	static const char *const names[] = {"auto", "scalar", "avx2", "avx512", "avx512vnni", "amx"};
	return (unsigned)s < sizeof(names) / sizeof(*names) ? names[s] : NULL;
}

const struct eng_kernels *eng_kernels_get(enum eng_simd level)
{
	enum eng_simd best = eng_simd_best();
	if (level == ENG_SIMD_AUTO)
		level = best;
	if (level == ENG_SIMD_SCALAR)
		return &kernels_c;
	if (level > best)
		return NULL;
#ifdef ENG_X86
	return level == ENG_SIMD_AVX2 ? &kernels_avx2 : level == ENG_SIMD_AVX512 ? &kernels_avx512
	       : level == ENG_SIMD_AVX512VNNI ? &kernels_vnni : level == ENG_SIMD_AMX ? &kernels_amx : NULL;
#else
	return NULL;
#endif
}
