/* hfdir.h - the one reader of a Hugging Face model directory's JSON files:
 * config.json (the model's shape, rope scaling, sliding window, soft-capping,
 * NoPE layers, experts) and tokenizer_config.json (special tokens, chat
 * template), for convert/ and engine/ alike, so that the two never disagree
 * on what a file says or on what is out of bounds.
 *
 * The reader checks types and bounds of every field it hands out; what a
 * consumer supports (an architecture, a rope type, a NoPE pattern) is the
 * consumer's call. Every failure is HM_ERR_BAD_INPUT (HM_ERR_NOMEM for
 * memory) with a one-line ctx->errmsg that starts with the caller's name
 * for the file and names the field: "'d/config.json': 'rope_theta' is not
 * a positive number". Nothing here prints or exits. */
#ifndef FORMATS_HFDIR_H
#define FORMATS_HFDIR_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"

#define FMT_HF_CONFIG_MAX (4u << 20)   /* config.json bytes (real ones are a few KiB) */
#define FMT_HF_TOKCFG_MAX (32u << 20)  /* tokenizer_config.json bytes (added_tokens_decoder can be large) */
#define FMT_HF_MAX_SIZE (1u << 30)     /* any size or count in config.json */
#define FMT_HF_MAX_LAYERS 65536        /* entries of a per-layer list */
#define FMT_HF_MAX_FACTORS 65536       /* entries of long_factor / short_factor */
#define FMT_HF_MAX_TOKEN 4096          /* bytes of a special token's text */

/* The model families both convert/ and engine/ know. */
enum fmt_hf_family {
	FMT_HF_UNKNOWN,
	FMT_HF_LLAMA,       /* LlamaForCausalLM, LLaMAForCausalLM, MistralForCausalLM */
	FMT_HF_QWEN2,
	FMT_HF_QWEN3,
	FMT_HF_QWEN3MOE,
	FMT_HF_MIXTRAL,
	FMT_HF_SMOLLM3,
	FMT_HF_PHI3,        /* Phi-3, Phi-4-mini */
	FMT_HF_GEMMA2,
	FMT_HF_GEMMA3,
};

/* "LlamaForCausalLM, ..." for messages. */
#define FMT_HF_ARCHS "LlamaForCausalLM, LLaMAForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM," \
	" SmolLM3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, Qwen3MoeForCausalLM," \
	" MixtralForCausalLM"

enum fmt_hf_rope {
	FMT_HF_ROPE_NONE,     /* no rope_scaling, or type "default" */
	FMT_HF_ROPE_LINEAR,
	FMT_HF_ROPE_LLAMA3,
	FMT_HF_ROPE_LONGROPE, /* "longrope" or its old name "su" (Phi-3) */
	FMT_HF_ROPE_YARN,
	FMT_HF_ROPE_OTHER,    /* named in rope_type_name; the consumer refuses it */
};

/* A number that may be absent: has is 0 when the key is missing or null. */
struct fmt_hf_num {
	int has;
	double v;
};
struct fmt_hf_u32 {
	int has;
	uint32_t v;
};

/* n's value, or def when absent. */
static inline double fmt_hf_num_or(struct fmt_hf_num n, double def)
{
	return n.has ? n.v : def;
}

/* config.json. Sizes are 1..FMT_HF_MAX_SIZE unless said otherwise. */
struct fmt_hf_config {
	char arch[64];        /* architectures[0], or "" (then model_type chose the family) */
	char model_type[64];
	enum fmt_hf_family family;
	/* hidden_size, num_hidden_layers, num_attention_heads: required;
	 * intermediate_size: required (for Mixtral, each expert's width) */
	uint32_t hidden_size, n_layer, n_head, intermediate_size;
	struct fmt_hf_u32 n_kv_head, vocab_size, max_position_embeddings, head_dim;
	struct fmt_hf_u32 original_max_position_embeddings; /* top level (Phi-3) */
	struct fmt_hf_num rms_norm_eps;       /* 0 < eps < 1 */
	struct fmt_hf_num rope_theta;         /* > 0, <= 1e12 */
	struct fmt_hf_num partial_rotary_factor; /* 0 < f <= 1 */
	int tie_word_embeddings;  /* -1 absent, 0, 1 */
	int mlp_bias;             /* 0, 1 */
	/* rope_scaling */
	enum fmt_hf_rope rope;
	char rope_type_name[33];  /* rope_type (or type), as given, cut at 32 bytes */
	struct fmt_hf_num rope_factor;        /* > 0, <= 1e6 */
	struct fmt_hf_num low_freq_factor, high_freq_factor; /* > 0, <= 1e6 */
	struct fmt_hf_u32 rope_original_max;  /* rope_scaling.original_max_position_embeddings */
	struct fmt_hf_num attention_factor;   /* > 0, < 100 */
	float *long_factor, *short_factor;    /* positive, n_long / n_short of them (owned); NULL when absent */
	size_t n_long, n_short;
	/* Gemma */
	char hidden_activation[33]; /* hidden_activation, else hidden_act; "" when neither */
	struct fmt_hf_num query_pre_attn_scalar;  /* > 0, < 1e9 */
	struct fmt_hf_num attn_logit_softcapping; /* >= 0, < 1e6 (null: absent) */
	struct fmt_hf_num final_logit_softcapping;
	struct fmt_hf_num rope_local_base_freq;   /* > 0, <= 1e12 */
	struct fmt_hf_u32 sliding_window;         /* 0..FMT_HF_MAX_SIZE */
	struct fmt_hf_u32 sliding_window_pattern;
	unsigned char *layer_sliding; /* layer_types, n_layer entries: 1 sliding_attention, 0 full (owned); NULL when absent */
	/* SmolLM3 */
	unsigned char *no_rope_layers; /* n_layer entries of 0 (no rope) or 1 (owned); NULL when absent */
	/* experts (num_experts for Qwen3-MoE, num_local_experts for Mixtral) */
	struct fmt_hf_u32 n_expert, n_expert_used, moe_intermediate_size;
	uint32_t decoder_sparse_step; /* 1 when absent */
	size_t n_mlp_only_layers;     /* entries of mlp_only_layers */
	int norm_topk_prob;           /* -1 absent, 0, 1 */
	/* ids in config.json (the first when a list): -1 when absent */
	int64_t bos_token_id, eos_token_id, pad_token_id;
};

/* Parses config.json text (len bytes). where names the file in messages
 * (a path, or "config.json of 'org/name'"). On success *out is filled and
 * owns its arrays (fmt_hf_config_release); on error *out holds nothing to
 * free. */
enum hm_err fmt_hf_config_parse(struct hm_ctx *ctx, const char *text, size_t len, const char *where,
				struct fmt_hf_config *out) HM_MUST_CHECK;
/* Reads and parses the file at path (at most FMT_HF_CONFIG_MAX bytes); where
 * as above (NULL: the path). HM_ERR_NOT_FOUND when there is no such file. */
enum hm_err fmt_hf_config_load(struct hm_ctx *ctx, const char *path, const char *where,
			       struct fmt_hf_config *out) HM_MUST_CHECK;
/* Frees what *c owns; accepts a zeroed or released struct. */
void fmt_hf_config_release(struct fmt_hf_config *c);

/* tokenizer_config.json. Strings are NUL-terminated and owned; NULL when
 * absent or null. A token is given as "text" or {"content": "text"}. */
struct fmt_hf_tokcfg {
	char *bos, *eos, *unk, *sep, *pad;
	int add_bos, add_eos;  /* -1 absent, 0, 1 */
	char *chat_template;   /* the string, or the entry named "default" of a list */
	size_t chat_template_len;
};

/* Parses tokenizer_config.json text; where as for config.json. */
enum hm_err fmt_hf_tokcfg_parse(struct hm_ctx *ctx, const char *text, size_t len, const char *where,
				struct fmt_hf_tokcfg *out) HM_MUST_CHECK;
/* Reads and parses the file (at most FMT_HF_TOKCFG_MAX bytes). HM_ERR_NOT_FOUND
 * when there is no such file. */
enum hm_err fmt_hf_tokcfg_load(struct hm_ctx *ctx, const char *path, const char *where,
			       struct fmt_hf_tokcfg *out) HM_MUST_CHECK;
void fmt_hf_tokcfg_release(struct fmt_hf_tokcfg *t);

/* ---- tokenizer.json's pre-tokenizer ---- */

struct json_t;

/* What a pre_tokenizer (flattened through Sequence) is made of. */
struct fmt_hf_pre {
	int bytelevel;         /* a ByteLevel step */
	int bytelevel_regex;   /* ... that splits with GPT-2's regex (use_regex) */
	int digits;            /* 0 none, 1 Digits with individual_digits, 2 without */
	int metaspace;         /* a Metaspace step */
	int nsplit;            /* Split steps */
	const char *regex;     /* the last Split's Regex (borrowed from the JSON), or NULL */
	const char *name;      /* llama.cpp's name for it: "llama-bpe", "qwen2", "smollm", "gpt-2", or
				* "default" when none fits (chosen by the regex rather than llama.cpp's
				* hash of a probe text's encoding) */
};

/* Calls fn on every pre-tokenizer of pt (flattening Sequence; depth is
 * bounded by the JSON parser's). */
void fmt_hf_pre_walk(struct json_t *pt, void (*fn)(struct json_t *, void *), void *ud);
/* Scans tokenizer.json's "pre_tokenizer" (NULL: none) into *out. */
void fmt_hf_pre_scan(struct json_t *pre_tokenizer, struct fmt_hf_pre *out);

#endif
