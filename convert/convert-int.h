/* convert-int.h - pieces shared by the files of convert/. */
#ifndef CONVERT_INT_H
#define CONVERT_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "convert.h"
#include "../formats/formats.h"
#include "../formats/half.h"
#include "../formats/hfdir.h"
#include "../util/pool.h"

/* The type one output tensor gets (ggml ids). */
enum conv_out_type {
	CONV_OUT_F32 = FMT_GGML_F32,
	CONV_OUT_F16 = FMT_GGML_F16,
	CONV_OUT_Q4_0 = FMT_GGML_Q4_0,
	CONV_OUT_Q8_0 = FMT_GGML_Q8_0,
	CONV_OUT_BF16 = FMT_GGML_BF16,
};

/* n source elements of dtype dt (F32/F16/BF16, little-endian) to float. */
void conv_load_f32(const unsigned char *src, enum fmt_dtype dt, size_t n, float *out);
/* n floats to the output encoding (n a multiple of 32 for Q types). */
void conv_store(enum conv_out_type t, const float *x, size_t n, unsigned char *out);
/* Decodes n output elements back to float. */
void conv_load_out(enum conv_out_type t, const unsigned char *in, size_t n, float *y);

/* Checks n source values x (a multiple of 32) against their quantized
 * blocks in: 1 when every block's scale is the reference quantizer's, every
 * quantized value its rounding of the source (stated as inequalities, not
 * recomputed), and every dequantized value within its block's bound (NaN
 * never is); raises *maxerr. Else 0 with *bad the first failing element (a
 * wrong scale blames its block's first). scratch holds n floats. */
int conv_check_quant(enum conv_out_type t, const float *x, const unsigned char *in, size_t n, float *scratch,
		     float *maxerr, size_t *bad);
/* The same without SIMD (what machines without AVX2/F16C run; for tests). */
int conv_check_quant_scalar(enum conv_out_type t, const float *x, const unsigned char *in, size_t n, float *scratch,
			    float *maxerr, size_t *bad);


/* Reads a JSON file of at most max bytes from the source; *out NULL (and
 * HM_OK) when the source has no such file and optional is set. */
enum hm_err conv_read_json(struct hm_ctx *ctx, const struct conv_source *src, const char *name, int optional,
			   json_t **out) HM_MUST_CHECK;

/* Reads the source's config.json through formats/hfdir (HM_ERR_BAD_INPUT
 * when it is missing or malformed); *out owns arrays (fmt_hf_config_release). */
enum hm_err conv_read_config(struct hm_ctx *ctx, const struct conv_source *src, struct fmt_hf_config *out) HM_MUST_CHECK;
/* Reads the source's tokenizer_config.json; an absent file leaves *out
 * empty (no strings, add_bos/add_eos -1) and returns HM_OK. */
enum hm_err conv_read_tokcfg(struct hm_ctx *ctx, const struct conv_source *src, struct fmt_hf_tokcfg *out) HM_MUST_CHECK;

/* Writes the tokenizer.ggml.* (and tokenizer.chat_template) metadata from
 * tokenizer.json / tokenizer_config.json (config: config.json), with
 * n_vocab entries (padded with [PADn] tokens when the vocabulary is
 * smaller). HM_ERR_BAD_INPUT for tokenizers it does not know. Fills
 * res->tokenizer, res->pre and res->nvocab. No tokenizer.json: nothing is
 * written and res->tokenizer stays "". */
enum hm_err conv_write_vocab(struct hm_ctx *ctx, const struct conv_source *src, const struct fmt_hf_config *config,
			     uint64_t n_vocab,
			     struct fmt_gguf_writer *w, struct conv_result *res) HM_MUST_CHECK;

#endif
