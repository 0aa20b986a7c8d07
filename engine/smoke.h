/* smoke.h - opening a model with its tokenizer, and the end-to-end smoke
 * check (`hubmirror smoke`). */
#ifndef ENGINE_SMOKE_H
#define ENGINE_SMOKE_H

#include "engine.h"
#include "tokenizer.h"

/* Whether path is a GGUF file, by its magic (stored blobs have no extension). */
int eng_is_gguf(const char *path);
/* The folder of a model path into dir (cap bytes): path itself when it is a
 * directory (is_dir), else the folder holding the file ("." for a bare name). */
void eng_model_dir(const char *path, int is_dir, char *dir, size_t cap);

/* Opens a model and its tokenizer: a .gguf (tokenizer from its metadata) or
 * safetensors with config.json and tokenizer.json (+ tokenizer_config.json)
 * beside it. Both are the caller's. */
enum hm_err eng_open_any(struct hm_ctx *ctx, const char *path, struct eng_model **m, struct eng_tok **t) HM_MUST_CHECK;

/* Encodes the prompt (add_bos as eng_tok_encode takes it: 1 prepends BOS,
 * 0 does not, -1 follows the tokenizer; a rendered chat template writes BOS
 * itself, so it is encoded with 0, as transformers' apply_chat_template
 * does), feeds it, then generates up to max_new tokens (stopping at EOS, or
 * when on_token returns nonzero) with the sampler, calling on_token for
 * each. Times both phases. r->prompt holds the ids fed. */
struct eng_run {
	int32_t *prompt;         /* prompt ids */
	size_t nprompt;
	uint32_t *out;           /* generated ids */
	size_t nout;
	double prompt_s, gen_s;
	int finite;              /* every logit of the run was finite */
};
enum hm_err eng_run_prompt(struct hm_ctx *ctx, struct eng_state *s, const struct eng_tok *t, const char *prompt,
			   int add_bos, size_t max_new, float temperature, float top_p, uint64_t seed,
			   int (*on_token)(void *ud, uint32_t token), void *ud, struct eng_run *r) HM_MUST_CHECK;
void eng_run_release(struct eng_run *r);

struct eng_smoke_opts {
	const char *prompt;      /* default "The capital of France is" */
	size_t tokens;           /* default 16 */
	const char *expect;      /* substring the greedy output must contain; NULL = none */
	int threads;             /* 0 = all CPUs */
};

struct eng_smoke_result {
	int pass;
	char reason[512];        /* why it failed ("" when it passed) */
	double load_s, prompt_tps, gen_tps;
	uint64_t peak_rss;       /* bytes */
	size_t prompt_tokens, gen_tokens;
	char *text;              /* greedy output (caller frees via release) */
	char model_format[16];
	char arch[16];           /* eng_config.arch of the model, "" when it did not load */
	uint32_t weight_type;
};

/* Loads the model and checks it end to end: metadata consistent with the
 * tensors (the loader's checks), the tokenizer round-trips the prompt,
 * logits are finite, greedy output is identical on two runs, expect is
 * found. A failed check is res->pass = 0 with a reason (HM_OK returned);
 * an error is a model that cannot be loaded at all. */
enum hm_err eng_smoke(struct hm_ctx *ctx, const char *path, const struct eng_smoke_opts *o,
		      struct eng_smoke_result *res) HM_MUST_CHECK;
void eng_smoke_release(struct eng_smoke_result *res);

#endif
