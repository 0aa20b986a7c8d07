/* tokenizer-int.h - the tokenizer's internals, shared by the encoder
 * (tokenizer.c) and the loaders (tokenizer-load.c). */
#ifndef ENG_TOKENIZER_INT_H
#define ENG_TOKENIZER_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include "tokenizer.h"

#define TOK_MAX_STAGES 4  /* pre-tokenizer split stages */

/* Where SentencePiece style puts its U+2581: before every text segment
 * (legacy Prepend normalizer, llama.cpp), only at the start of the text
 * (Metaspace prepend_scheme "first"), or never. */
enum tok_prepend { TOK_PREPEND_NEVER, TOK_PREPEND_FIRST, TOK_PREPEND_ALWAYS };

struct eng_tok {
	enum eng_tok_kind kind;
	uint32_t n;               /* vocabulary size (ids 0..n-1) */
	char **text;              /* token texts (NUL-terminated copies; "" for holes) */
	uint32_t *len;
	uint8_t *type;            /* enum eng_tok_type */
	float *score;             /* GGUF "llama": merge by score instead of rank; else NULL */

	/* text -> id (open addressing; slots hold id + 1, 0 = empty) */
	uint32_t *vslot;
	uint32_t vmask;

	/* (left id, right id) -> rank and merged id */
	uint64_t *mkey;           /* (left << 32 | right) + 1; 0 = empty */
	uint32_t *mrank;
	int32_t *mres;
	uint32_t mmask;

	int32_t bos, eos, unk;
	int add_bos;
	int byte_fallback, fuse_unk, ignore_merges;
	enum tok_prepend prepend; /* SPM */
	int meta_split;           /* SPM: Metaspace split=true: one word per U+2581 */
	int add_prefix_space;     /* byte-level: ByteLevel add_prefix_space */
	int32_t byte_tok[256];    /* SPM <0xHH> ids, -1 when absent */

	pcre2_code *re[TOK_MAX_STAGES];
	int nre;
	char pre[16];

	/* added/special tokens split out before anything else: ids bucketed
	 * by first byte (sbucket[b]..sbucket[b+1]), longest first */
	int32_t *special;
	uint32_t sbucket[257];
};

/* The vocabulary text -> id map and the merge map, built by the loaders
 * once text/len/n are set. Return 0, or -1 out of memory. */
int tok_build_vocab_map(struct eng_tok *t);
int tok_merges_init(struct eng_tok *t, size_t count);
/* Adds a merge (the first of duplicates keeps its rank); 0 or -1 when the
 * map is full. */
int tok_merge_add(struct eng_tok *t, int32_t a, int32_t b, uint32_t rank, int32_t res);
/* Buckets the tokens for which is_special(type) holds; 0 or -1 out of memory. */
int tok_build_specials(struct eng_tok *t, const uint8_t *mark);
/* Finds <0xHH> tokens for SPM. */
void tok_find_byte_tokens(struct eng_tok *t);
/* Compiles a pre-tokenizer stage; 0, or -1 with a message on ctx. */
enum hm_err tok_add_stage(struct hm_ctx *ctx, struct eng_tok *t, const char *pattern, size_t len);
/* Allocates the per-token arrays for n tokens (zeroed). */
enum hm_err tok_alloc(struct hm_ctx *ctx, struct eng_tok *t, uint32_t n);

/* The GPT-2 regexes, as tokenizer.json spells them. */
#define TOK_RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define TOK_RE_LLAMA3 \
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define TOK_RE_QWEN2 \
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

#endif
