/* smoke.c - a model and its tokenizer from one path; prompt + generation
 * with timings; the smoke check that says a mirrored model really works. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include "smoke.h"
#include "../formats/formats.h"
#include "../util/util.h"

int eng_is_gguf(const char *path)
{
	char magic[4];
	FILE *f = fopen(path, "rb");
	int yes = f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
	if (f)
		fclose(f);
	return yes;
}

void eng_model_dir(const char *path, int is_dir, char *dir, size_t cap)
{
	snprintf(dir, cap, "%s", path);
	if (!is_dir) {
		char *slash = strrchr(dir, '/');
		if (slash)
			*slash = 0;
		else
			snprintf(dir, cap, ".");
	}
}

enum hm_err eng_open_any(struct hm_ctx *ctx, const char *path, struct eng_model **m, struct eng_tok **t)
{
	enum hm_err err;
	struct stat sb;
	*m = NULL;
	*t = NULL;
	if (stat(path, &sb) != 0)
		return hm_fail(ctx, HM_ERR_NOT_FOUND, "cannot open '%s': no such file or directory", path);
	err = eng_model_open(ctx, path, m);
	if (err)
		return err;
	if (S_ISREG(sb.st_mode) && eng_is_gguf(path)) {
		struct fmt_gguf *g = NULL;
		err = fmt_gguf_open(ctx, path, &g);
		if (!err)
			err = eng_tok_open_gguf(ctx, g, t);
		fmt_gguf_close(g);
	} else {
		char dir[4096], tj[4200], tc[4200];
		eng_model_dir(path, !S_ISREG(sb.st_mode), dir, sizeof(dir));
		snprintf(tj, sizeof(tj), "%s/tokenizer.json", dir);
		snprintf(tc, sizeof(tc), "%s/tokenizer_config.json", dir);
		if (stat(tj, &sb) != 0)
			err = hm_fail(ctx, HM_ERR_NOT_FOUND, "no tokenizer.json beside the model in '%s'", dir);
		else
			err = eng_tok_open_json(ctx, tj, stat(tc, &sb) == 0 ? tc : NULL, t);
	}
	if (!err && (uint32_t)eng_tok_vocab_size(*t) > eng_model_config(*m)->vocab)
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': the tokenizer has %zu tokens but the model only %u embeddings",
			      path, (size_t)eng_tok_vocab_size(*t), eng_model_config(*m)->vocab);
	if (err) {
		eng_tok_free(*t);
		eng_model_close(*m);
		*t = NULL;
		*m = NULL;
	}
	return err;
}

void eng_run_release(struct eng_run *r)
{
	free(r->prompt);
	free(r->out);
	memset(r, 0, sizeof(*r));
}

enum hm_err eng_run_prompt(struct hm_ctx *ctx, struct eng_state *s, const struct eng_tok *t, const char *prompt,
			   int add_bos, size_t max_new, float temperature, float top_p, uint64_t seed,
			   int (*on_token)(void *ud, uint32_t token), void *ud, struct eng_run *r)
{
	const struct eng_config *c = eng_model_config(eng_state_model(s));
	struct eng_sampler *smp = NULL;
	float *logits = NULL;
	enum hm_err err;
	uint32_t pos = 0, ctxlen = eng_state_ctx_len(s);
	double t0;

	memset(r, 0, sizeof(*r));
	r->finite = 1;
	err = eng_tok_encode(t, prompt, strlen(prompt), add_bos, &r->prompt, &r->nprompt);
	if (err)
		return err;
	if (!r->nprompt)
		return hm_fail(ctx, HM_ERR_USAGE, "the prompt encodes to no tokens");
	if (r->nprompt + max_new > ctxlen)
		return hm_fail(ctx, HM_ERR_USAGE, "prompt (%zu tokens) + %zu new tokens exceed the context (%u)",
			       r->nprompt, max_new, ctxlen);
	logits = malloc((size_t)c->vocab * sizeof(*logits));
	r->out = calloc(max_new ? max_new : 1, sizeof(*r->out));
	if (!logits || !r->out) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((err = eng_sampler_new(ctx, c->vocab, temperature, top_p, seed, &smp)))
		goto out;
	t0 = util_now();
	for (size_t i = 0; i < r->nprompt; i++)
		if (r->prompt[i] < 0 || (uint32_t)r->prompt[i] >= c->vocab) {
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "token id %d is outside the model's vocabulary (%u)", r->prompt[i],
				      c->vocab);
			goto out;
		}
	/* int32 ids checked non-negative: the same bits as uint32 */
	if ((err = eng_forward_batch(ctx, s, (const uint32_t *)(const void *)r->prompt, r->nprompt, 0, logits)))
		goto out;
	pos = (uint32_t)r->nprompt;
	r->prompt_s = util_now() - t0;
	t0 = util_now();
	for (size_t k = 0; k < max_new; k++) {
		for (uint32_t v = 0; v < c->vocab; v++)
			if (!isfinite(logits[v]))
				r->finite = 0;
		uint32_t tok = eng_sample(smp, logits);
		r->out[r->nout++] = tok;
		if (on_token && on_token(ud, tok))
			break;
		if ((int64_t)tok == eng_tok_eos(t) || k + 1 == max_new)
			break;
		if (hm_cancelled(ctx)) {
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
			goto out;
		}
		if ((err = eng_forward(ctx, s, tok, pos++, logits)))
			goto out;
	}
	r->gen_s = util_now() - t0;
out:
	eng_sampler_free(smp);
	free(logits);
	return err;
}

void eng_smoke_release(struct eng_smoke_result *res)
{
	free(res->text);
	memset(res, 0, sizeof(*res));
}

enum hm_err eng_smoke(struct hm_ctx *ctx, const char *path, const struct eng_smoke_opts *o,
		      struct eng_smoke_result *res)
{
	struct eng_model *m = NULL;
	struct eng_tok *t = NULL;
	struct eng_state *s = NULL;
	struct eng_run r1 = {0}, r2 = {0};
	const char *prompt = o->prompt ? o->prompt : "The capital of France is";
	size_t n = o->tokens ? o->tokens : 16;
	char *round = NULL;
	size_t rlen = 0;
	enum hm_err err;
	double t0 = util_now();
	struct rusage ru;

	memset(res, 0, sizeof(*res));
	err = eng_open_any(ctx, path, &m, &t);
	if (err)
		return err;
	const struct eng_config *c = eng_model_config(m);
	snprintf(res->model_format, sizeof(res->model_format), "%s", c->format ? c->format : "");
	snprintf(res->arch, sizeof(res->arch), "%s", c->arch ? c->arch : "");
	res->weight_type = c->weight_type;
	if ((err = eng_state_new(ctx, m, 0, o->threads, ENG_SIMD_AUTO, &s)))
		goto out;
	res->load_s = util_now() - t0;
	/* 1. the tokenizer gives the prompt back */
	if ((err = eng_tok_encode(t, prompt, strlen(prompt), 0, &r1.prompt, &r1.nprompt)) ||
	    (err = eng_tok_decode_all(t, r1.prompt, r1.nprompt, 1, &round, &rlen)))
		goto out;
	eng_run_release(&r1);
	if (rlen != strlen(prompt) || memcmp(round, prompt, rlen)) {
		snprintf(res->reason, sizeof(res->reason), "the tokenizer does not round-trip the prompt: got '%.200s'", round);
		goto out;
	}
	/* 2. greedy twice: finite and identical */
	if ((err = eng_run_prompt(ctx, s, t, prompt, -1, n, 0, 1, 0, NULL, NULL, &r1)) ||
	    (err = eng_run_prompt(ctx, s, t, prompt, -1, n, 0, 1, 0, NULL, NULL, &r2)))
		goto out;
	res->prompt_tokens = r1.nprompt;
	res->gen_tokens = r1.nout;
	res->prompt_tps = r1.prompt_s > 0 ? (double)r1.nprompt / r1.prompt_s : 0;
	res->gen_tps = r1.gen_s > 0 ? (double)r1.nout / r1.gen_s : 0;
	{
		int32_t *ids = malloc((r1.nout ? r1.nout : 1) * sizeof(*ids));
		if (!ids) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < r1.nout; i++)
			ids[i] = (int32_t)r1.out[i];
		err = eng_tok_decode_all(t, ids, r1.nout, 1, &res->text, &rlen);
		free(ids);
		if (err)
			goto out;
	}
	if (!r1.finite || !r2.finite)
		snprintf(res->reason, sizeof(res->reason), "the model produced non-finite logits (NaN or infinity)");
	else if (r1.nout != r2.nout || memcmp(r1.out, r2.out, r1.nout * sizeof(*r1.out)))
		snprintf(res->reason, sizeof(res->reason), "greedy output differs between two runs");
	else if (o->expect && !strstr(res->text, o->expect))
		snprintf(res->reason, sizeof(res->reason), "the output does not contain '%.200s'", o->expect);
	else
		res->pass = 1;
out:
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		res->peak_rss = (uint64_t)ru.ru_maxrss * 1024;
	free(round);
	eng_run_release(&r1);
	eng_run_release(&r2);
	eng_state_free(s);
	eng_tok_free(t);
	eng_model_close(m);
	return err;
}
