/* attn.c - one query head of one token against the KV cache: scores, softmax,
 * mix of values. The keys are cached transposed (per KV head, head_dim rows
 * of ctx_len positions), so the scores of 16 positions are one vector of
 * FMAs with no horizontal sums; the values stay one row per position. A
 * portable version and an AVX-512 one, picked with the other kernels. */
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

void eng_attn_c(const struct eng_attn_args *a)
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

AVX512 void eng_attn_avx512(const struct eng_attn_args *a)
{
	float *att = a->att;
	const uint32_t t0 = a->t0, t1 = a->t1, hd = a->hd;
	/* scores, 64 positions at a time (four independent chains of FMAs) */
	for (uint32_t t = t0; t < t1; t += 64) {
		__mmask16 m[4];
		__m512 s[4];
		for (int j = 0; j < 4; j++) {
			uint32_t tj = t + 16 * (uint32_t)j;
			m[j] = tj < t1 ? tail16(t1 - tj) : 0;
			s[j] = _mm512_setzero_ps();
		}
		for (uint32_t i = 0; i < hd; i++) {
			const float *k = a->kt + (size_t)i * a->kt_stride + t;
			__m512 qi = _mm512_set1_ps(a->q[i]);
			for (int j = 0; j < 4; j++)
				s[j] = _mm512_fmadd_ps(qi, _mm512_maskz_loadu_ps(m[j], k + 16 * j), s[j]);
		}
		for (int j = 0; j < 4; j++)
			_mm512_mask_storeu_ps(att + t + 16 * j, m[j], s[j]);
	}
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
	const float inv = 1.0f / _mm512_reduce_add_ps(sm);
	/* the mix, 64 dimensions at a time */
	for (uint32_t i = 0; i < hd; i += 64) {
		__mmask16 m[4];
		__m512 o[4];
		for (int j = 0; j < 4; j++) {
			uint32_t ij = i + 16 * (uint32_t)j;
			m[j] = ij < hd ? tail16(hd - ij) : 0;
			o[j] = _mm512_setzero_ps();
		}
		for (uint32_t t = t0; t < t1; t++) {
			const float *v = a->v + (size_t)t * a->v_stride + i;
			__m512 w = _mm512_set1_ps(att[t]);
			for (int j = 0; j < 4; j++)
				o[j] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m[j], v + 16 * j), o[j]);
		}
		__m512 vi = _mm512_set1_ps(inv);
		for (int j = 0; j < 4; j++)
			_mm512_mask_storeu_ps(a->o + i + 16 * j, m[j], _mm512_mul_ps(o[j], vi));
	}
}
#endif
