/* tokenizer.h - the engine's tokenizer: text <-> token ids for the two BPE
 * families of Llama-style models, loaded from a tokenizer.json (plus an
 * optional tokenizer_config.json) or from a GGUF file's tokenizer.ggml.*
 * metadata.
 *
 * SentencePiece-style BPE (Llama 2, TinyLlama; GGUF model "llama"):
 * spaces become U+2581, a U+2581 is prepended, text splits into code
 * points (a code point absent from the vocabulary becomes its <0xHH> byte
 * tokens), then the adjacent pair with the best merge rank (tokenizer.json)
 * or whose concatenation scores highest (GGUF scores) merges, repeatedly.
 *
 * Byte-level BPE (Llama 3, SmolLM, Qwen2, GPT-2; GGUF model "gpt2"): the
 * text is split by the model's pre-tokenizer regex (PCRE2), each piece's
 * bytes map to the GPT-2 byte alphabet, and pairs merge by rank; with
 * ignore_merges (Llama 3) a piece already in the vocabulary is one token.
 *
 * In both, added/special tokens (tokenizer.json added_tokens; GGUF control
 * and user-defined tokens) found verbatim in the text are split out first,
 * longest match first. Files are untrusted: sizes and strings are checked,
 * failures are HM_ERR_BAD_INPUT with ctx->errmsg naming the problem.
 * A tokenizer is read-only once open: encode/decode may run concurrently. */
#ifndef ENG_TOKENIZER_H
#define ENG_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"

struct fmt_gguf;

#define ENG_TOK_MAX_VOCAB (1u << 22)   /* ids and vocabulary sizes above are refused */
#define ENG_TOK_MAX_TEXT (4u << 20)    /* bytes of text one encode call takes */
#define ENG_TOK_MAX_FILE (256u << 20)  /* tokenizer.json / tokenizer_config.json size */

enum eng_tok_kind { ENG_TOK_SPM = 1, ENG_TOK_BPE = 2 };

/* GGUF token types (tokenizer.ggml.token_type). */
enum eng_tok_type {
	ENG_TOK_NORMAL = 1, ENG_TOK_UNKNOWN = 2, ENG_TOK_CONTROL = 3,
	ENG_TOK_USER_DEFINED = 4, ENG_TOK_UNUSED = 5, ENG_TOK_BYTE = 6
};

struct eng_tok;

/* Loads tokenizer.json (a BPE model: byte_fallback/Metaspace/Prepend
 * normalizer = SentencePiece style, ByteLevel = byte-level). config_path
 * (tokenizer_config.json) may be NULL; it supplies bos/eos tokens and
 * add_bos_token. On success *out is the caller's (eng_tok_free); on error
 * *out is untouched. */
enum hm_err eng_tok_open_json(struct hm_ctx *ctx, const char *json_path, const char *config_path,
			      struct eng_tok **out) HM_MUST_CHECK;
/* The same from tokenizer.json text in memory (len bytes; need not be
 * NUL-terminated); config may be NULL. */
enum hm_err eng_tok_open_json_mem(struct hm_ctx *ctx, const char *json, size_t len, const char *config,
				  size_t config_len, struct eng_tok **out) HM_MUST_CHECK;
/* Loads tokenizer.ggml.* from an open GGUF (models "llama" and "gpt2").
 * Everything is copied: g may be closed afterwards. */
enum hm_err eng_tok_open_gguf(struct hm_ctx *ctx, const struct fmt_gguf *g, struct eng_tok **out) HM_MUST_CHECK;
/* Accepts NULL. */
void eng_tok_free(struct eng_tok *t);

/* Encodes len bytes of text (any bytes; at most ENG_TOK_MAX_TEXT). add_bos:
 * 1 prepends BOS, 0 does not, -1 follows the tokenizer's own setting
 * (eng_tok_add_bos). *ids (malloc'd, the caller frees) receives *n ids; on
 * error *ids is NULL and *n 0. Errors: HM_ERR_USAGE (text too long),
 * HM_ERR_NOMEM, HM_ERR_BAD_INPUT (a character with neither a token, a byte
 * token nor an unknown token). */
enum hm_err eng_tok_encode(const struct eng_tok *t, const char *text, size_t len, int add_bos, int32_t **ids,
			   size_t *n) HM_MUST_CHECK;

/* The bytes token id stands for, as streamed after prev_id (-1 at the
 * start): U+2581 and the byte alphabet become spaces and raw bytes, <0xHH>
 * one byte (a multi-byte character spans several calls), and after BOS or
 * at the start the SentencePiece leading space is dropped. Special tokens
 * give their text. Returns the piece's length; it is written to buf (and
 * NUL-terminated) only when it fits in cap, so a return >= cap means retry
 * with a larger buffer. -1 for an id out of range. */
int eng_tok_decode(const struct eng_tok *t, int32_t id, int32_t prev_id, char *buf, size_t cap);
/* Decodes n ids into one malloc'd NUL-terminated string (*out, caller
 * frees; *len bytes, which may include NULs). skip_special leaves out
 * control tokens (BOS, EOS, <|eot_id|> ...). */
enum hm_err eng_tok_decode_all(const struct eng_tok *t, const int32_t *ids, size_t n, int skip_special, char **out,
			       size_t *len) HM_MUST_CHECK;

enum eng_tok_kind eng_tok_kind(const struct eng_tok *t);
uint32_t eng_tok_vocab_size(const struct eng_tok *t);
/* Special ids; -1 when the tokenizer has none. */
int32_t eng_tok_bos(const struct eng_tok *t);
int32_t eng_tok_eos(const struct eng_tok *t);
int32_t eng_tok_unk(const struct eng_tok *t);
/* Whether encode adds BOS by default. */
int eng_tok_add_bos(const struct eng_tok *t);
/* A token's text as the vocabulary spells it ("▁the", "Ġthe", "<0x0A>");
 * NULL out of range. *len gets its length when len is not NULL. */
const char *eng_tok_text(const struct eng_tok *t, int32_t id, size_t *len);
/* Its type (enum eng_tok_type); 0 out of range. */
int eng_tok_type(const struct eng_tok *t, int32_t id);
/* An id by its exact vocabulary text; -1 if absent. */
int32_t eng_tok_find(const struct eng_tok *t, const char *text, size_t len);
/* The pre-tokenizer in use ("llama-bpe", "gpt-2", "qwen2", "smollm",
 * "custom" for a tokenizer.json regex; "spm" for SentencePiece style). */
const char *eng_tok_pre(const struct eng_tok *t);

#endif
