/* sample.c - picking the next token (greedy, temperature, top-p with a seeded
 * xorshift64* generator) and the generation loop. */
#include <math.h>
#include <stdlib.h>
#include "engine-int.h"

struct cand {
	float p;
	uint32_t i;
};

struct eng_sampler {
	uint32_t vocab;
	float temperature, top_p;
	uint64_t rng;
	struct cand *cand;
};

enum hm_err eng_sampler_new(struct hm_ctx *ctx, uint32_t vocab, float temperature, float top_p, uint64_t seed,
			    struct eng_sampler **out)
{
	struct eng_sampler *s;
	*out = NULL;
	if (vocab == 0 || !isfinite(temperature) || !(top_p >= 0 && top_p <= 1) || isnan(top_p))
		return hm_fail(ctx, HM_ERR_USAGE, "bad sampler settings (vocabulary %u, temperature %g, top-p %g)", vocab,
			       (double)temperature, (double)top_p);
	if (!(s = calloc(1, sizeof(*s))) || !(s->cand = malloc((size_t)vocab * sizeof(*s->cand)))) {
		free(s);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	s->vocab = vocab;
	s->temperature = temperature;
	s->top_p = top_p;
	s->rng = seed ^ 0x9E3779B97F4A7C15ull;
	if (!s->rng)
		s->rng = 0x2545F4914F6CDD1Dull;
	*out = s;
	return HM_OK;
}

void eng_sampler_free(struct eng_sampler *s)
{
	if (!s)
		return;
	free(s->cand);
	free(s);
}

/* xorshift64*: a uniform float in [0, 1). */
static float next_uniform(struct eng_sampler *s)
{
	uint64_t x = s->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rng = x;
	return (float)((x * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static int cand_desc(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	return x->p < y->p ? 1 : x->p > y->p ? -1 : (x->i > y->i) - (x->i < y->i);
}

uint32_t eng_sample(struct eng_sampler *s, float *logits)
{
	const uint32_t n = s->vocab;
	uint32_t best = 0;
	for (uint32_t i = 1; i < n; i++)
		if (logits[i] > logits[best])
			best = i;
	if (s->temperature <= 0)
		return best;
	const float max = logits[best];
	double sum = 0;
	for (uint32_t i = 0; i < n; i++)
		sum += logits[i] = expf((logits[i] - max) / s->temperature);
	for (uint32_t i = 0; i < n; i++)
		logits[i] = (float)(logits[i] / sum);
	float r = next_uniform(s);
	if (s->top_p <= 0 || s->top_p >= 1) {
		float cdf = 0;
		for (uint32_t i = 0; i < n; i++) {
			cdf += logits[i];
			if (r < cdf)
				return i;
		}
		return best; /* rounding left r past the total */
	}
	/* tokens below (1-p)/(n-1) can never be in the nucleus (llama2.c) */
	const float cutoff = n > 1 ? (1.0f - s->top_p) / (float)(n - 1) : 0;
	uint32_t nc = 0;
	for (uint32_t i = 0; i < n; i++)
		if (logits[i] >= cutoff)
			s->cand[nc++] = (struct cand){logits[i], i};
	qsort(s->cand, nc, sizeof(*s->cand), cand_desc);
	float cum = 0;
	uint32_t last = nc - 1;
	for (uint32_t i = 0; i < nc; i++) {
		cum += s->cand[i].p;
		if (cum > s->top_p) {
			last = i;
			break;
		}
	}
	float target = r * cum, cdf = 0;
	for (uint32_t i = 0; i <= last; i++) {
		cdf += s->cand[i].p;
		if (target < cdf)
			return s->cand[i].i;
	}
	return s->cand[last].i;
}

enum hm_err eng_generate(struct hm_ctx *ctx, struct eng_state *s, struct eng_sampler *smp, const uint32_t *prompt,
			 size_t n_prompt, const struct eng_gen_opts *opts, uint32_t *out, size_t *n_out)
{
	const struct eng_config *c = eng_model_config(eng_state_model(s));
	const uint32_t ctx_len = eng_state_ctx_len(s);
	float *logits = NULL;
	enum hm_err err = HM_OK;
	uint32_t pos = 0;

	*n_out = 0;
	if (n_prompt == 0 || n_prompt > ctx_len)
		return hm_fail(ctx, HM_ERR_USAGE, "a prompt of %zu tokens does not fit a context of %u", n_prompt, ctx_len);
	if (smp->vocab != c->vocab)
		return hm_fail(ctx, HM_ERR_USAGE, "the sampler is for %u tokens, the model has %u", smp->vocab, c->vocab);
	if (!(logits = malloc((size_t)c->vocab * sizeof(float))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if ((err = eng_forward_batch(ctx, s, prompt, n_prompt, 0, logits)))
		goto out;
	pos = (uint32_t)n_prompt;
	while (*n_out < opts->max_new) {
		uint32_t tok = eng_sample(smp, logits);
		out[(*n_out)++] = tok;
		if ((opts->on_token && opts->on_token(opts->ud, tok)) || (opts->eos >= 0 && tok == (uint64_t)opts->eos) ||
		    *n_out == opts->max_new || pos >= ctx_len)
			break;
		if (hm_cancelled(ctx)) {
			err = hm_fail(ctx, HM_ERR_CANCELLED, "cancelled");
			goto out;
		}
		if ((err = eng_forward(ctx, s, tok, pos++, logits)))
			goto out;
	}
out:
	free(logits);
	return err;
}
