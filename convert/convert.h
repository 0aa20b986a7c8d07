/* convert.h - Hugging Face checkpoints (LlamaForCausalLM, MistralForCausalLM;
 * F32/F16/BF16 safetensors, or else PyTorch .bin mapped in place) to GGUF
 * the way llama.cpp's convert_hf_to_gguf.py does: tensor names, Q/K row
 * permutation, metadata, tokenizer, dtype conversion and Q8_0/Q4_0
 * quantization bit-exact with ggml's reference.
 *
 * Streaming: tensors are converted in bounded chunks by a thread pool and
 * written through the GGUF writer; source pages are dropped behind the
 * cursor, so memory stays bounded whatever the model size. Every value is
 * checked against the source as it is converted, the written header is
 * read back and compared with the plan, and a thread hashes the file as
 * it is written, before it is handed over.
 * Where files come from and where the output goes (store, -o) is the
 * caller's business: convert/ only reads the paths it is given. */
#ifndef CONVERT_H
#define CONVERT_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"

/* Bumped whenever the bytes conv_to_gguf writes for the same input change:
 * part of the cache key of stored conversions. */
#define CONV_VERSION 1

enum conv_type { CONV_F32, CONV_F16, CONV_BF16, CONV_Q8_0, CONV_Q4_0, CONV_TYPE__COUNT };

/* "f32", "f16", "bf16", "q8_0", "q4_0"; NULL out of range. */
const char *conv_type_name(enum conv_type t);
/* Parses a type name (case-insensitive); 0, or -1 when unknown. */
int conv_type_parse(const char *s, enum conv_type *out);

/* Maps a model file name ("config.json", a shard name from the index ...)
 * to a path to open, into buf (len bytes). Returns HM_ERR_NOT_FOUND (message
 * optional) when the source has no such file. Same shape as
 * fmt_st_resolve_fn so shards resolve through it. */
typedef enum hm_err (*conv_resolve_fn)(struct hm_ctx *ctx, void *ud, const char *name, char *buf, size_t len);

struct conv_source {
	conv_resolve_fn resolve;
	void *ud;
	const char *label;  /* for messages and the default general.name ("org/name" or a dir) */
};

struct conv_options {
	enum conv_type type;
	int threads;        /* 0 = one per online CPU */
	const char *name;   /* general.name; NULL = derived from the label */
	uint64_t fault_flip; /* tests only: flip a bit of the last tensor's converted
			      * bytes, this many bytes from its end, before the check (0 = never) */
	int no_sha256;       /* 1: skip the SHA-256 of the output (res->sha256 stays "") */
};

struct conv_result {
	char sha256[65];    /* of the output file */
	uint64_t size;
	size_t ntensors;
	char arch[64];      /* the config's architecture */
	char tokenizer[16]; /* "llama" | "gpt2" | "" (none) */
	char pre[32];       /* tokenizer.ggml.pre */
	int pre_unrecognized; /* a byte-level BPE pre-tokenizer no llama.cpp name fits: "default" written */
	size_t nvocab;
	uint64_t nparams;
	size_t nquant, nf16_fallback; /* tensors quantized; rows not a block multiple -> F16 */
	double max_abs_err; /* largest |source - output| seen by the check */
	double seconds_convert, seconds_check;
};

/* Converts the model src describes to a GGUF file at out_path (written
 * beside it and renamed into place only after the check passed; an
 * existing file there is replaced). HM_ERR_BAD_INPUT for unsupported or
 * malformed models, HM_ERR_CORRUPT when the check fails (nothing is left
 * at out_path then). res is filled on success. */
enum hm_err conv_to_gguf(struct hm_ctx *ctx, const struct conv_source *src, const struct conv_options *opt,
			 const char *out_path, struct conv_result *res) HM_MUST_CHECK;

/* ---- numeric pieces (exposed for tests and the checker) ---- */

#define CONV_QK 32 /* elements per Q8_0/Q4_0 block */
/* ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref: n is a multiple
 * of 32; out gets n/32 blocks of 34 / 18 bytes. */
void conv_quantize_q8_0(const float *x, unsigned char *out, size_t n);
void conv_quantize_q4_0(const float *x, unsigned char *out, size_t n);
/* Dequantizes n elements (a multiple of 32). */
void conv_dequantize_q8_0(const unsigned char *in, float *y, size_t n);
void conv_dequantize_q4_0(const unsigned char *in, float *y, size_t n);

#endif
