/* attn.c - query heads of one token against the KV cache: scores, softmax,
 * mix of values; the query heads that share a KV head together (each key
 * and value is read once for up to ENG_ATTN_GROUP of them). The keys are
 * cached transposed (per KV head, head_dim rows of ctx_len positions), so
 * the scores of 16 positions are one vector of FMAs with no horizontal sums;
 * the values stay one row per position. A portable version and an AVX-512
 * one, picked with the other kernels. */
#include <math.h>
#include <string.h>
#include "engine-int.h"

#if defined(__x86_64__) || defined(__i386__)
#define ENG_X86 1
#include <immintrin.h>
#endif

/* att[t] for t in t0..t1-1 from raw dot products: scaled, soft-capped. */
static void scale_cap(const struct eng_attn_args *a, float *att)
{
	for (uint32_t t = a->t0; t < a->t1; t++) {
		float v = att[t] * a->scale;
		att[t] = a->cap > 0 ? a->cap * tanhf(v / a->cap) : v;
	}
}

static void attn1_c(const struct eng_attn_args *a)
{
	float *att = a->att, max = -INFINITY, sum = 0;
	for (uint32_t t = a->t0; t < a->t1; t++)
		att[t] = 0;
	for (uint32_t i = 0; i < a->hd; i++) {
		const float qi = a->q[i], *k = a->kt + (size_t)i * a->kt_stride;
		for (uint32_t t = a->t0; t < a->t1; t++)
			att[t] += qi * k[t];
	}
	scale_cap(a, att);
	for (uint32_t t = a->t0; t < a->t1; t++)
		max = att[t] > max ? att[t] : max;
	for (uint32_t t = a->t0; t < a->t1; t++)
		sum += att[t] = expf(att[t] - max);
	memset(a->o, 0, a->hd * sizeof(float));
	for (uint32_t t = a->t0; t < a->t1; t++) {
		const float *v = a->v + (size_t)t * a->v_stride, w = att[t] / sum;
		for (uint32_t i = 0; i < a->hd; i++)
			a->o[i] += w * v[i];
	}
}

void eng_attn_c(const struct eng_attn_args *a)
{
	struct eng_attn_args one = *a;
	for (uint32_t g = 0; g < (a->nq ? a->nq : 1); g++) {
		one.q = a->q + (size_t)g * a->hd;
		one.o = a->o + (size_t)g * a->hd;
		one.att = a->att + g * a->att_stride;
		attn1_c(&one);
	}
}

#ifdef ENG_X86
#define AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

/* e^x for x <= 0 (larger inputs are not used here), within 2 ulp:
 * 2^n * p(r) with x = n ln2 + r, |r| <= ln2/2, p a degree-6 polynomial. */
AVX512 static inline __m512 exp512(__m512 x)
{
	x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504089f)),
					_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
	__m512 p = _mm512_set1_ps(1.0f / 720);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	return _mm512_scalef_ps(p, n);
}

static inline __mmask16 tail16(uint32_t left)
{
	return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* The scores of NQ queries, 16 positions at a time: each key vector is
 * loaded once for all of them. Per position, the FMAs over the dimensions
 * run in order, as for a query alone. */
AVX512 static inline __attribute__((always_inline)) void scores512(const struct eng_attn_args *a, const int NQ)
{
	const uint32_t t0 = a->t0, t1 = a->t1, hd = a->hd;
	for (uint32_t t = t0; t < t1; t += 32) {
		const __mmask16 m0 = tail16(t1 - t), m1 = t + 16 < t1 ? tail16(t1 - t - 16) : 0;
		__m512 s0[ENG_ATTN_GROUP], s1[ENG_ATTN_GROUP];
		_Pragma("GCC unroll 8")
		for (int g = 0; g < NQ; g++)
			s0[g] = s1[g] = _mm512_setzero_ps();
		for (uint32_t i = 0; i < hd; i++) {
			const float *k = a->kt + (size_t)i * a->kt_stride + t;
			const __m512 k0 = _mm512_maskz_loadu_ps(m0, k), k1 = _mm512_maskz_loadu_ps(m1, k + 16);
			_Pragma("GCC unroll 8")
			for (int g = 0; g < NQ; g++) {
				const __m512 qi = _mm512_set1_ps(a->q[(size_t)g * hd + i]);
				s0[g] = _mm512_fmadd_ps(qi, k0, s0[g]);
				s1[g] = _mm512_fmadd_ps(qi, k1, s1[g]);
			}
		}
		_Pragma("GCC unroll 8")
		for (int g = 0; g < NQ; g++) {
			_mm512_mask_storeu_ps(a->att + g * a->att_stride + t, m0, s0[g]);
			_mm512_mask_storeu_ps(a->att + g * a->att_stride + t + 16, m1, s1[g]);
		}
	}
}

/* The mix of NQ queries' weights (att, unnormalized), 32 dimensions at a
 * time: each value row is loaded once for all of them; per dimension, the
 * FMAs over the positions run in order. */
AVX512 static inline __attribute__((always_inline)) void mix512(const struct eng_attn_args *a, const float *inv,
								 const int NQ)
{
	const uint32_t t0 = a->t0, t1 = a->t1, hd = a->hd;
	for (uint32_t i = 0; i < hd; i += 32) {
		const __mmask16 m0 = tail16(hd - i), m1 = i + 16 < hd ? tail16(hd - i - 16) : 0;
		__m512 o0[ENG_ATTN_GROUP], o1[ENG_ATTN_GROUP];
		_Pragma("GCC unroll 8")
		for (int g = 0; g < NQ; g++)
			o0[g] = o1[g] = _mm512_setzero_ps();
		for (uint32_t t = t0; t < t1; t++) {
			const float *v = a->v + (size_t)t * a->v_stride + i;
			const __m512 v0 = _mm512_maskz_loadu_ps(m0, v), v1 = _mm512_maskz_loadu_ps(m1, v + 16);
			_Pragma("GCC unroll 8")
			for (int g = 0; g < NQ; g++) {
				const __m512 w = _mm512_set1_ps(a->att[g * a->att_stride + t]);
				o0[g] = _mm512_fmadd_ps(w, v0, o0[g]);
				o1[g] = _mm512_fmadd_ps(w, v1, o1[g]);
			}
		}
		_Pragma("GCC unroll 8")
		for (int g = 0; g < NQ; g++) {
			const __m512 vi = _mm512_set1_ps(inv[g]);
			_mm512_mask_storeu_ps(a->o + (size_t)g * hd + i, m0, _mm512_mul_ps(o0[g], vi));
			_mm512_mask_storeu_ps(a->o + (size_t)g * hd + i + 16, m1, _mm512_mul_ps(o1[g], vi));
		}
	}
}

/* Scale (or soft-cap), max, exp and sum of one query's scores; returns 1 / sum. */
AVX512 static float softmax512(const struct eng_attn_args *a, float *att)
{
	const uint32_t t0 = a->t0, t1 = a->t1;
	if (a->cap > 0) {
		scale_cap(a, att);
	} else {
		__m512 sc = _mm512_set1_ps(a->scale);
		for (uint32_t t = t0; t < t1; t += 16) {
			__mmask16 m = tail16(t1 - t);
			_mm512_mask_storeu_ps(att + t, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, att + t), sc));
		}
	}
	__m512 mx = _mm512_set1_ps(-INFINITY), sm = _mm512_setzero_ps();
	for (uint32_t t = t0; t < t1; t += 16) {
		__mmask16 m = tail16(t1 - t);
		mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, att + t));
	}
	__m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
	for (uint32_t t = t0; t < t1; t += 16) {
		__mmask16 m = tail16(t1 - t);
		__m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, att + t), vmax));
		sm = _mm512_mask_add_ps(sm, m, sm, e);
		_mm512_mask_storeu_ps(att + t, m, e);
	}
	return 1.0f / _mm512_reduce_add_ps(sm);
}

#define ATTN_NQ(N)                                                                                                \
	case N:                                                                                                   \
		scores512(a, N);                                                                                  \
		for (uint32_t g = 0; g < N; g++)                                                                  \
			inv[g] = softmax512(a, a->att + g * a->att_stride);                                       \
		mix512(a, inv, N);                                                                                \
		break
AVX512 void eng_attn_avx512(const struct eng_attn_args *a)
{
	float inv[ENG_ATTN_GROUP];
	switch (a->nq > 1 ? a->nq : 1) {
		ATTN_NQ(1);
		ATTN_NQ(2);
		ATTN_NQ(3);
		ATTN_NQ(4);
		ATTN_NQ(5);
		ATTN_NQ(6);
		ATTN_NQ(7);
		ATTN_NQ(8);
	default: /* more than a group: in groups */
		for (uint32_t g = 0; g < a->nq; g += ENG_ATTN_GROUP) {
			struct eng_attn_args p = *a;
			p.nq = a->nq - g < ENG_ATTN_GROUP ? a->nq - g : ENG_ATTN_GROUP;
			p.q = a->q + (size_t)g * a->hd;
			p.o = a->o + (size_t)g * a->hd;
			p.att = a->att + g * a->att_stride;
			eng_attn_avx512(&p);
		}
	}
}
#undef ATTN_NQ
#endif
