/* engine.h - the bundled inference engine: decoder-only transformers (Llama
 * 2/3, Mistral, Mixtral, SmolLM 1-3, TinyLlama, Qwen2/3/3-MoE, Gemma 2/3,
 * Phi-3/4) loaded from GGUF or safetensors checkpoints.
 *
 * Weights are never copied: matrices are used in place in the readers'
 * read-only mappings (only the small norm vectors are decoded into owned
 * float arrays), so resident memory is about the weights plus the KV cache.
 * GGUF models ("llama" architecture) carry Q/K rows permuted for the
 * interleaved rope of llama.cpp; safetensors models keep Hugging Face order
 * and use the half-split (rotate_half) rope. Matrix types: F32, F16, BF16,
 * Q8_0 and Q4_0 (GGUF), F32, F16, BF16 (safetensors). As in llama.cpp,
 * Q8_0/Q4_0 matrices multiply activations quantized to 8 bits (Q8_0 blocks
 * of 32, scale max|x|/127, round to nearest even) in integer arithmetic;
 * F32/F16/BF16 matrices multiply F32 activations.
 *
 * Every file is untrusted: a successful open means every tensor the forward
 * pass touches is present with the right shape and a supported type, and
 * the configuration is within sane bounds. Errors are HM_ERR_BAD_INPUT with
 * ctx->errmsg naming the file and the problem. Nothing here prints or exits. */
#ifndef ENGINE_H
#define ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"

/* Bounds on what a model may declare (larger ones are refused as absurd). */
#define ENG_MAX_LAYERS 1024
#define ENG_MAX_DIM 65536
#define ENG_MAX_HEADS 1024
#define ENG_MAX_HEAD_DIM 1024
#define ENG_MAX_FFN (1u << 20)
#define ENG_MAX_VOCAB (1u << 24)
#define ENG_MAX_EXPERTS 1024
#define ENG_MAX_CTX (1u << 20)
/* The context eng_state_new uses when asked for 0 and the model's is larger. */
#define ENG_DEFAULT_CTX 4096

/* The engine's version, recorded with smoke results: bumped whenever what
 * it computes for some model changes (a new architecture, different
 * arithmetic), so that a later engine knows which results to re-check. */
#define ENG_VERSION "2"

/* What eng_model_open runs: GGUF general.architecture values, and
 * config.json architectures. */
#define ENG_GGUF_ARCHS "llama (Llama, Mistral, Mixtral), qwen2, qwen3, qwen3moe, smollm3, gemma2, gemma3, phi3"
#define ENG_HF_ARCHS                                                                                                   \
	"LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, SmolLM3ForCausalLM, "                \
	"Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, Qwen3MoeForCausalLM, MixtralForCausalLM"

/* The configuration of an open model. */
struct eng_config {
	uint32_t dim;          /* embedding length (hidden_size) */
	uint32_t n_layer;
	uint32_t n_head;
	uint32_t n_kv_head;    /* grouped-query attention: divides n_head */
	uint32_t head_dim;     /* q/k/v width per head (dim / n_head unless stated) */
	uint32_t n_rot;        /* leading dims of each q/k head that rope rotates (partial_rotary_factor
				* x head_dim, Phi-4-mini; head_dim elsewhere); the rest pass through */
	uint32_t ffn_dim;      /* feed-forward (intermediate) width */
	uint32_t vocab;        /* rows of the embedding and of the classifier */
	uint32_t ctx_len;      /* the model's trained context length */
	float rope_theta;      /* rope frequency base */
	float rope_scale;      /* linear rope scaling factor (1 = none) */
	int rope_llama3;       /* per-frequency Llama 3 scaling factors in use */
	float norm_eps;        /* RMSNorm epsilon */
	int tied;              /* classifier is the token embedding */
	int interleaved_rope;  /* 1: GGUF llama (permuted Q/K); 0: half-split (HF order, GGUF qwen2) */
	int qkv_bias;          /* q/k/v projections must have biases (Qwen2) */
	int qk_norm;           /* per-head RMSNorm of q and k before rope (Qwen3) */
	uint32_t nope_step;    /* GGUF smollm3: layers l with (l + 1) % nope_step == 0 skip rope (0: none) */
	/* Gemma 2/3 (0 elsewhere); their norm weights are held as 1 + w */
	int gemma;             /* 2 or 3 */
	float emb_scale;       /* embeddings times this (sqrt(dim)); 0: none */
	int gelu;              /* GeGLU (tanh GELU) instead of SwiGLU */
	int sandwich;          /* post-attention, pre- and post-FFN norms */
	float attn_scale;      /* scores times this; 0: 1/sqrt(head_dim) */
	float attn_softcap;    /* scores = cap * tanh(scores / cap); 0: none */
	float final_softcap;   /* the same for the logits */
	uint32_t swa_window;   /* sliding-window layers see the last swa_window positions (0: none) */
	uint32_t swa_period;   /* layer l slides when l % swa_period < swa_period - 1 */
	float rope_theta_swa;  /* rope base of sliding layers (Gemma 3), unscaled */
	int fused;             /* Phi-3: q/k/v and gate/up are rows of two fused matrices */
	int rope_longrope;     /* Phi-3 LongRoPE factors in use (long or short, by the default context) */
	float rope_mscale;     /* cos and sin times this (LongRoPE attention factor; 1 = none) */
	/* mixtures of experts (Qwen3-MoE, Mixtral): a router picks n_expert_used
	 * of n_expert SwiGLU experts of width expert_ffn per token (softmax, top-k,
	 * weights renormalized over the k); only their weights are read */
	uint32_t n_expert, n_expert_used, expert_ffn;
	const char *arch;      /* GGUF architecture name: one of ENG_GGUF_ARCHS */
	uint32_t weight_type;  /* ggml type id of the attention/FFN matrices (layer 0 q) */
	uint64_t weight_bytes; /* bytes of all tensors used */
	const char *format;    /* "gguf", "safetensors" or "pytorch" */
};

struct eng_model;
struct eng_state;

/* Opens a model (Llama, Mistral, Mixtral, Qwen2, Qwen3, Qwen3-MoE, SmolLM3, Gemma 2, Gemma 3 text,
 * Phi-3/Phi-4). path: a .gguf file; or a directory
 * holding config.json and model.safetensors (or model.safetensors.index.json
 * and its shards, or else PyTorch pytorch_model.bin(.index.json)); or a
 * .safetensors / *.index.json file with config.json beside it. On success
 * *out is the caller's (eng_model_close). */
enum hm_err eng_model_open(struct hm_ctx *ctx, const char *path, struct eng_model **out) HM_MUST_CHECK;
/* Unmaps and frees. Accepts NULL. Every state of the model must be freed first. */
void eng_model_close(struct eng_model *m);
/* The model's configuration (owned by the model). */
const struct eng_config *eng_model_config(const struct eng_model *m);

/* SIMD levels of the kernels, chosen at run time from what the CPU has:
 * AVX2 (+FMA, F16C), AVX-512F, AVX-512 with BW, VL and VNNI (integer dot
 * products of 8-bit weights and activations), and AVX-512 VNNI with AMX
 * tiles (Sapphire Rapids and later, where the kernel grants the tile state):
 * a batch of two or more tokens through Q8_0 weights runs on AMX-INT8,
 * which sums each block of 32 products exactly, as the scalar level does;
 * through F16 weights on AMX-BF16 (each weight and activation as two bf16,
 * within about 2^-16 of each product); one token (a generation step) runs
 * the VNNI kernels. */
enum eng_simd { ENG_SIMD_AUTO = 0, ENG_SIMD_SCALAR, ENG_SIMD_AVX2, ENG_SIMD_AVX512, ENG_SIMD_AVX512VNNI, ENG_SIMD_AMX };
/* "scalar", "avx2", "avx512", "avx512vnni", "amx" ("auto" for AUTO); NULL out of range. */
const char *eng_simd_name(enum eng_simd s);
/* The best level this CPU runs (never AUTO). */
enum eng_simd eng_simd_best(void);

/* A decoding state: KV cache for ctx_len positions (0 = the model's, capped
 * at ENG_DEFAULT_CTX), scratch buffers, and a pool of threads workers
 * (0 = one per online CPU, at most 64). simd picks the kernels
 * (ENG_SIMD_AUTO = best; a level the CPU lacks is HM_ERR_USAGE). The state
 * keeps a pointer to m. *out is the caller's (eng_state_free). */
enum hm_err eng_state_new(struct hm_ctx *ctx, const struct eng_model *m, uint32_t ctx_len, int threads,
			  enum eng_simd simd, struct eng_state **out) HM_MUST_CHECK;
/* Stops the workers and frees. Accepts NULL. */
void eng_state_free(struct eng_state *s);
/* The model the state runs. */
const struct eng_model *eng_state_model(const struct eng_state *s);
/* The state's context length, thread count and kernel level. */
uint32_t eng_state_ctx_len(const struct eng_state *s);
int eng_state_threads(const struct eng_state *s);
enum eng_simd eng_state_simd(const struct eng_state *s);
/* Bytes of the KV cache. */
uint64_t eng_state_kv_bytes(const struct eng_state *s);

/* Runs token at position pos (positions 0..pos-1 must have been run before
 * on this state; running pos again overwrites it and everything after it is
 * forgotten) and writes vocab logits into logits (may be NULL to only fill
 * the cache). HM_ERR_USAGE for a token >= vocab or pos >= ctx_len. */
enum hm_err eng_forward(struct hm_ctx *ctx, struct eng_state *s, uint32_t token, uint32_t pos,
			float *logits) HM_MUST_CHECK;

/* Runs n tokens at positions pos0..pos0+n-1 as a batch (each layer's
 * products over all of them at once, causal attention within the batch),
 * the same arithmetic as n calls of eng_forward, so the same logits to the
 * bit; logits (may be NULL) are those of the last token. HM_ERR_USAGE for
 * n = 0, a token >= vocab or a position >= ctx_len. */
enum hm_err eng_forward_batch(struct hm_ctx *ctx, struct eng_state *s, const uint32_t *tokens, size_t n,
			      uint32_t pos0, float *logits) HM_MUST_CHECK;

/* ---- sampling ---- */

/* temperature 0 (or below) = greedy argmax; otherwise softmax(logits / T),
 * then, when 0 < top_p < 1, the smallest set of most likely tokens whose
 * mass exceeds top_p, and a draw from a xorshift64* generator seeded with
 * seed (same seed, same draws). */
struct eng_sampler;
enum hm_err eng_sampler_new(struct hm_ctx *ctx, uint32_t vocab, float temperature, float top_p, uint64_t seed,
			    struct eng_sampler **out) HM_MUST_CHECK;
void eng_sampler_free(struct eng_sampler *s);
/* Picks a token from n = vocab logits (overwritten with scratch values). */
uint32_t eng_sample(struct eng_sampler *s, float *logits);

/* Called with each generated token; a non-zero return stops generation. */
typedef int (*eng_token_fn)(void *ud, uint32_t token);

struct eng_gen_opts {
	size_t max_new;        /* tokens to generate at most */
	int64_t eos;           /* stop after this token (-1: never) */
	eng_token_fn on_token; /* may be NULL */
	void *ud;
};

/* Runs the prompt (n_prompt >= 1 tokens) from position 0, then samples up
 * to opts->max_new tokens into out (room for max_new), each fed back, until
 * eos, a stop from on_token, the end of the context, or ctx->cancel.
 * *n_out = tokens written. HM_ERR_USAGE when the prompt does not fit. */
enum hm_err eng_generate(struct hm_ctx *ctx, struct eng_state *s, struct eng_sampler *smp, const uint32_t *prompt,
			 size_t n_prompt, const struct eng_gen_opts *opts, uint32_t *out, size_t *n_out) HM_MUST_CHECK;

/* ---- numeric helpers ---- */

/* 1 when ggml type id t is one the engine computes with (F32, F16, BF16, Q8_0, Q4_0). */
int eng_type_supported(uint32_t t);
/* Decodes n elements (a multiple of 32 for Q8_0/Q4_0) of ggml type t at src
 * into dst. Q8_0: 34-byte blocks, fp16 d + int8 q[32], value q*d. Q4_0:
 * 18-byte blocks, fp16 d + 16 bytes, byte j = element j (low nibble) |
 * element j+16 (high nibble), value (nibble-8)*d. Returns -1 for an
 * unsupported type or a bad n. */
int eng_dequantize(uint32_t t, const void *src, float *dst, size_t n);

#endif
