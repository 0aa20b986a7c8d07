/* engine-int.h - pieces shared by the files of engine/: the loaded model,
 * the kernels table and the thread pool. */
#ifndef ENGINE_INT_H
#define ENGINE_INT_H

#include <stddef.h>
#include <stdint.h>
#include "engine.h"
#include "../formats/formats.h"
#include "../formats/half.h"
#include "../util/pool.h"

#define ENG_QK 32 /* elements per Q8_0/Q4_0 block */

/* A matrix used in place: rows of cols elements of ggml type type. */
struct eng_weight {
	uint32_t type;
	uint64_t rows, cols;
	size_t row_bytes;
	const unsigned char *data; /* into a read-only mapping */
};

struct eng_layer {
	float *attn_norm, *ffn_norm; /* dim, owned */
	float *bq, *bk, *bv, *bo;    /* projection biases (Qwen2: q/k/v), owned; NULL when absent */
	float *q_norm, *k_norm;      /* head_dim, per-head RMSNorm of q and k (Qwen3), owned; else NULL */
	int nope;                    /* no rope on this layer (SmolLM3) */
	int swa;                     /* a sliding-window layer (Gemma) */
	float *post_attn_norm, *post_ffn_norm; /* dim, Gemma's extra norms, owned; else NULL */
	struct eng_weight router;    /* n_expert x dim (MoE) */
	struct eng_weight *e_gate, *e_up, *e_down; /* n_expert each (views), owned arrays; NULL when dense */
	struct eng_weight wq, wk, wv, wo, w_gate, w_up, w_down;
};

struct eng_model {
	struct eng_config cfg;
	struct fmt_gguf *gguf;     /* one of the two is set */
	struct fmt_st_set *st;
	struct eng_weight tok_embd, output; /* output = tok_embd when tied */
	float *out_norm;            /* dim, owned */
	struct eng_layer *layers;   /* n_layer, owned */
	double *inv_freq;           /* head_dim/2 rope frequencies, scaling applied */
	double *inv_freq_swa;       /* those of sliding-window layers (Gemma 3); NULL: inv_freq */
};

/* Dot products of one weight row (raw bytes, any alignment) with n floats. */
typedef float (*eng_dot_fn)(const unsigned char *w, const float *x, size_t n);

/* One query head of one token against cached positions t0..t1-1 (attn.c). */
struct eng_attn_args {
	const float *q;          /* hd */
	const float *kt;         /* the KV head's keys transposed: hd rows of positions, kt_stride apart */
	const float *v;          /* the KV head's values: a row of hd per position, v_stride apart */
	size_t kt_stride, v_stride;
	uint32_t hd, t0, t1;
	float scale, cap;        /* scores * scale; cap > 0: cap * tanh(score / cap) */
	float *att;              /* scratch, indexed by position (t1 entries), per query att_stride apart */
	float *o;                /* hd: the softmax-weighted mix of values */
	/* nq (0 or 1: one; at most ENG_ATTN_GROUP) query heads of the same KV
	 * head and position, hd apart in q and in o: their keys and values are
	 * read once for all of them. Each one's result is the same to the bit
	 * as run alone. */
	uint32_t nq;
	size_t att_stride;
};
#define ENG_ATTN_GROUP 8
typedef void (*eng_attn_fn)(const struct eng_attn_args *a);
void eng_attn_c(const struct eng_attn_args *a);
#if defined(__x86_64__) || defined(__i386__)
void eng_attn_avx512(const struct eng_attn_args *a);
#endif

struct eng_kernels {
	enum eng_simd level;
	eng_dot_fn dot[5]; /* by eng_type_slot() */
	const struct eng_mm_kernels *mm;
	eng_attn_fn attn;
};

/* One piece of a matrix product: rows r0..r1 of w times n activation rows,
 * into y[t * ystride + r]. x (F32, xstride apart) for float weights; xq
 * (n x cols int8) and xd (n x cols/32 scales) for Q8_0/Q4_0 weights. */
struct eng_mm_args {
	const struct eng_kernels *k;
	const struct eng_weight *w;
	size_t r0, r1, n, cols;
	const float *x;
	size_t xstride;
	const int8_t *xq;
	const float *xd;
	float *y;
	size_t ystride;
	float *scr; /* the worker's scratch: ENG_MM_TR rows of cols floats; NULL when none */
	const unsigned char *xt; /* the rows' ENG_XT_BYTES(cols) prepared by kernels->prep, or NULL */
	const unsigned char *xa; /* the rows packed by kernels->pack (ENG_XA_BYTES), or NULL */
};

/* What a level's prep may store per activation row (AVX-512 VNNI: per pair
 * of blocks, the -128 * sum correction and the two scales, 64 bytes each). */
#define ENG_XT_BYTES(cols) ((((cols) / 32 + 1) / 2) * 128)

#define ENG_MM_TR 4 /* rows per register tile */

/* What a level's packs store for n activation rows, per group of 16 rows
 * (AMX): for 8-bit activations each block's 16 x 32 bytes in the tiles'
 * dword-interleaved layout, then the blocks' 16 scales (cols + cols / 8
 * bytes a row); for float activations their bf16 high and low parts in
 * pairs (4 * cols bytes a row). */
#define ENG_XA_BYTES(n, cols) ((((n) + 15) / 16) * 16 * 4 * (cols))
/* Matrix products start handing out rows in chunks of a multiple of this
 * (the AMX kernel's tile of 16 rows). */
#define ENG_MM_CHUNK 16

struct eng_mm_kernels {
	/* n (a multiple of 32) floats to int8 blocks: d = max|x|/127, q = round(x/d) */
	void (*quant)(const float *x, size_t n, int8_t *q, float *d);
	void (*int8)(const struct eng_mm_args *a);  /* Q8_0, Q4_0 weights */
	void (*flt)(const struct eng_mm_args *a);   /* F32, F16, BF16 weights */
	/* optional: what the int8 kernel needs per activation row, computed once
	 * per product from its 8-bit form (NULL: nothing) */
	void (*prep)(const int8_t *q, const float *d, size_t n, unsigned char *out);
	/* optional: activation row t (n values) into xa, for batches of two or more rows */
	void (*pack)(const int8_t *q, const float *d, size_t n, size_t t, unsigned char *xa);
	/* optional: the same for the float kernel (F32 row t of n values, n a multiple of 32) */
	void (*pack_f)(const float *x, size_t n, size_t t, unsigned char *xa);
};
extern const struct eng_mm_kernels eng_mm_c;
#if defined(__x86_64__) || defined(__i386__)
extern const struct eng_mm_kernels eng_mm_avx2, eng_mm_vnni, eng_mm_amx;
/* 1 when the CPU has AMX-INT8 and the kernel let this process use the tile state. */
int eng_amx_usable(void);
#endif
/* 1 for the types computed against 8-bit activations (Q8_0, Q4_0). */
int eng_type_int8(uint32_t t);

/* 0..4 for F32, F16, BF16, Q8_0, Q4_0; -1 otherwise (inline: kernels.c and
 * matmul.c both index their tables with it). */
static inline int eng_type_slot(uint32_t t)
{
	switch (t) {
	case FMT_GGML_F32: return 0;
	case FMT_GGML_F16: return 1;
	case FMT_GGML_BF16: return 2;
	case FMT_GGML_Q8_0: return 3;
	case FMT_GGML_Q4_0: return 4;
	default: return -1;
	}
}
/* The kernels of a level the CPU supports, or NULL. AUTO = best. */
const struct eng_kernels *eng_kernels_get(enum eng_simd level);

/* Activation rows shared by up to three products: n rows of cols floats,
 * stride apart; q (n * cols) and d (n * cols / 32) are scratch for their
 * 8-bit form, filled when a weight needs it. */
struct eng_act {
	const float *x;
	size_t n, cols, stride;
	int8_t *q;
	float *d;
	float *scr;      /* per-worker scratch, scr_len floats each (>= ENG_MM_TR * cols); may be NULL */
	size_t scr_len;
	unsigned char *xt; /* n * ENG_XT_BYTES(cols) for the kernels' prep; may be NULL */
	unsigned char *xa; /* ENG_XA_BYTES(n, cols) for the kernels' pack; may be NULL */
};
/* A product Y = X W^T: y[t * ystride + r] for every row r of w. */
struct eng_mm {
	const struct eng_weight *w;
	float *y;
	size_t ystride;
};
/* Runs up to three products of the same activations as one batch of tasks. */
void eng_matmul_run(struct util_pool *p, const struct eng_kernels *k, const struct eng_act *a, const struct eng_mm *mm,
		    int n);

#endif
