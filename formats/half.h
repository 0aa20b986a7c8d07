/* half.h - IEEE binary16 and bfloat16 to and from binary32, bit-exact with
 * ggml (ggml-impl.h) and numpy: the one conversion that convert/ writes
 * with and engine/ reads with. Inline: the kernels call it per element. */
#ifndef FORMATS_HALF_H
#define FORMATS_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t fmt_f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static inline float fmt_f32_from(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* binary16 from binary32, round to nearest even (ggml's GGML_FP32_TO_FP16,
 * numpy astype): the FP16 library's branch-free conversion, whose float adds
 * round in hardware. */
static inline uint16_t fmt_f32_to_f16(float f)
{
	const float scale_to_inf = 0x1.0p+112f, scale_to_zero = 0x1.0p-110f;
	float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
	const uint32_t w = fmt_f32_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
	uint32_t bias = shl1_w & 0xFF000000u;
	if (bias < 0x71000000u)
		bias = 0x71000000u;
	base = fmt_f32_from((bias >> 1) + 0x07800000u) + base;
	const uint32_t bits = fmt_f32_bits(base);
	const uint32_t exp_bits = (bits >> 13) & 0x00007C00u, mantissa_bits = bits & 0x00000FFFu;
	const uint32_t nonsign = exp_bits + mantissa_bits;
	return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

/* binary16 to binary32 (exact). */
static inline float fmt_f16_to_f32(uint16_t h)
{
	const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
	const uint32_t exp_offset = 0xE0u << 23;
	const float exp_scale = 0x1.0p-112f;
	const float normalized = fmt_f32_from((two_w >> 4) + exp_offset) * exp_scale;
	const uint32_t magic_mask = 126u << 23;
	const float magic_bias = 0.5f;
	const float denormalized = fmt_f32_from((two_w >> 17) | magic_mask) - magic_bias;
	const uint32_t denormalized_cutoff = 1u << 27;
	const uint32_t result = sign | (two_w < denormalized_cutoff ? fmt_f32_bits(denormalized) : fmt_f32_bits(normalized));
	return fmt_f32_from(result);
}

/* bfloat16 from binary32: NaN -> quiet NaN, else round to nearest even. */
static inline uint16_t fmt_f32_to_bf16(float f)
{
	uint32_t u = fmt_f32_bits(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: force quiet */
		return (uint16_t)((u >> 16) | 64);
	return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

/* bfloat16 to binary32 (exact). */
static inline float fmt_bf16_to_f32(uint16_t h)
{
	return fmt_f32_from((uint32_t)h << 16);
}

#endif
