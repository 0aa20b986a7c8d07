/* forward.c - the decoding state and one token's forward pass: RMSNorm,
 * projection biases (Qwen2), rope (interleaved for GGUF llama, half-split
 * for HF order and qwen2), grouped-query attention over a KV cache, SwiGLU,
 * tied or untied classifier. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "engine-int.h"

struct eng_state {
	const struct eng_model *m;
	const struct eng_kernels *k;
	struct eng_pool *pool;
	uint32_t ctx_len;
	float *x, *xb, *xb2, *q, *hb, *hb2; /* activations */
	float *att;                          /* ctx_len scores per participant */
	float *kc, *vc;                      /* [layer][pos][n_kv_head * head_dim] */
	float *cs;                           /* cos, sin of the current position (head_dim) */
	uint64_t kv_bytes;
};

enum hm_err eng_state_new(struct hm_ctx *ctx, const struct eng_model *m, uint32_t ctx_len, int threads,
			  enum eng_simd simd, struct eng_state **out)
{
	const struct eng_config *c = &m->cfg;
	struct eng_state *s = NULL;
	size_t qd = (size_t)c->n_head * c->head_dim, kvd = (size_t)c->n_kv_head * c->head_dim;
	size_t wide = qd > c->dim ? qd : c->dim, kv;

	*out = NULL;
	if (ctx_len == 0)
		ctx_len = c->ctx_len < ENG_DEFAULT_CTX ? c->ctx_len : ENG_DEFAULT_CTX;
	if (ctx_len > ENG_MAX_CTX)
		return hm_fail(ctx, HM_ERR_USAGE, "context length %u is over the limit of %u", ctx_len, ENG_MAX_CTX);
	if (threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		threads = n < 1 ? 1 : (int)(n > 64 ? 64 : n);
	}
	if (threads > 64)
		threads = 64;
	if (!(s = calloc(1, sizeof(*s))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	s->m = m;
	s->ctx_len = ctx_len;
	if (!(s->k = eng_kernels_get(simd))) {
		eng_state_free(s);
		return hm_fail(ctx, HM_ERR_USAGE, "this CPU cannot run the %s kernels", eng_simd_name(simd) ? eng_simd_name(simd) : "?");
	}
	kv = (size_t)c->n_layer * ctx_len * kvd;
	s->kv_bytes = 2 * (uint64_t)kv * sizeof(float);
	/* big buffers are mmapped by malloc: untouched cache pages cost no memory */
	if (!(s->x = malloc(c->dim * sizeof(float))) || !(s->xb = malloc(wide * sizeof(float))) ||
	    !(s->xb2 = malloc(c->dim * sizeof(float))) || !(s->q = malloc(qd * sizeof(float))) ||
	    !(s->hb = malloc((size_t)c->ffn_dim * sizeof(float))) || !(s->hb2 = malloc((size_t)c->ffn_dim * sizeof(float))) ||
	    !(s->cs = malloc((size_t)c->head_dim * sizeof(float))) ||
	    !(s->att = malloc((size_t)threads * ctx_len * sizeof(float))) || !(s->kc = malloc(kv * sizeof(float))) ||
	    !(s->vc = malloc(kv * sizeof(float)))) {
		eng_state_free(s);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory for a context of %u (KV cache of %llu bytes)", ctx_len,
			       (unsigned long long)s->kv_bytes);
	}
	if (!(s->pool = eng_pool_new(threads))) {
		eng_state_free(s);
		return hm_fail(ctx, HM_ERR_NOMEM, "cannot start %d threads", threads);
	}
	*out = s;
	return HM_OK;
}

void eng_state_free(struct eng_state *s)
{
	if (!s)
		return;
	eng_pool_free(s->pool);
	free(s->x);
	free(s->xb);
	free(s->xb2);
	free(s->q);
	free(s->hb);
	free(s->hb2);
	free(s->cs);
	free(s->att);
	free(s->kc);
	free(s->vc);
	free(s);
}

const struct eng_model *eng_state_model(const struct eng_state *s)
{
	return s->m;
}

uint32_t eng_state_ctx_len(const struct eng_state *s)
{
	return s->ctx_len;
}

int eng_state_threads(const struct eng_state *s)
{
	return eng_pool_size(s->pool);
}

enum eng_simd eng_state_simd(const struct eng_state *s)
{
	return s->k->level;
}

uint64_t eng_state_kv_bytes(const struct eng_state *s)
{
	return s->kv_bytes;
}

static void rmsnorm(float *o, const float *x, const float *w, size_t n, float eps)
{
	double ss = 0;
	for (size_t i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	float scale = (float)(1.0 / sqrt(ss / (double)n + eps));
	for (size_t i = 0; i < n; i++)
		o[i] = x[i] * scale * w[i];
}

static void add_bias(float *v, const float *b, size_t n)
{
	if (b)
		for (size_t i = 0; i < n; i++)
			v[i] += b[i];
}

/* Rotates each head of v (nh heads) by the angles in s->cs. */
static void rope(const struct eng_state *s, float *v, uint32_t nh)
{
	const uint32_t hd = s->m->cfg.head_dim, half = hd / 2;
	const int inter = s->m->cfg.interleaved_rope;
	for (uint32_t h = 0; h < nh; h++, v += hd)
		for (uint32_t i = 0; i < half; i++) {
			uint32_t a = inter ? 2 * i : i, b = inter ? 2 * i + 1 : i + half;
			float c = s->cs[i], sn = s->cs[half + i], x0 = v[a], x1 = v[b];
			v[a] = x0 * c - x1 * sn;
			v[b] = x0 * sn + x1 * c;
		}
}

struct attn_job {
	struct eng_state *s;
	uint32_t layer, pos;
};

/* One query head: scores against cached keys 0..pos, softmax, mix of values. */
static void attn_task(void *arg, size_t h, int worker)
{
	const struct attn_job *j = arg;
	struct eng_state *s = j->s;
	const struct eng_config *c = &s->m->cfg;
	const uint32_t hd = c->head_dim, kvd = c->n_kv_head * hd, kvh = (uint32_t)h / (c->n_head / c->n_kv_head);
	const size_t base = (size_t)j->layer * s->ctx_len * kvd + (size_t)kvh * hd;
	const float *q = s->q + h * hd;
	float *att = s->att + (size_t)worker * s->ctx_len, *o = s->xb + h * hd, max = -INFINITY, sum = 0;
	const float scale = 1.0f / sqrtf((float)hd);
	eng_dot_fn dot = s->k->dot[0];

	for (uint32_t t = 0; t <= j->pos; t++) {
		att[t] = dot((const unsigned char *)(s->kc + base + (size_t)t * kvd), q, hd) * scale;
		if (att[t] > max)
			max = att[t];
	}
	for (uint32_t t = 0; t <= j->pos; t++)
		sum += att[t] = expf(att[t] - max);
	memset(o, 0, hd * sizeof(float));
	for (uint32_t t = 0; t <= j->pos; t++) {
		const float *v = s->vc + base + (size_t)t * kvd, a = att[t] / sum;
		for (uint32_t i = 0; i < hd; i++)
			o[i] += a * v[i];
	}
}

enum hm_err eng_forward(struct hm_ctx *ctx, struct eng_state *s, uint32_t token, uint32_t pos, float *logits)
{
	const struct eng_model *m = s->m;
	const struct eng_config *c = &m->cfg;
	const uint32_t dim = c->dim, hd = c->head_dim, half = hd / 2;
	const size_t kvd = (size_t)c->n_kv_head * hd;

	if (token >= c->vocab)
		return hm_fail(ctx, HM_ERR_USAGE, "token %u is out of the vocabulary (%u)", token, c->vocab);
	if (pos >= s->ctx_len)
		return hm_fail(ctx, HM_ERR_USAGE, "position %u is past the context length %u", pos, s->ctx_len);
	if (eng_dequantize(m->tok_embd.type, m->tok_embd.data + (size_t)token * m->tok_embd.row_bytes, s->x, dim))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "token embedding type %u cannot be decoded", m->tok_embd.type);
	for (uint32_t i = 0; i < half; i++) {
		double a = (double)pos * m->inv_freq[i];
		s->cs[i] = (float)cos(a);
		s->cs[half + i] = (float)sin(a);
	}
	for (uint32_t l = 0; l < c->n_layer; l++) {
		const struct eng_layer *y = &m->layers[l];
		float *kc = s->kc + ((size_t)l * s->ctx_len + pos) * kvd, *vc = s->vc + ((size_t)l * s->ctx_len + pos) * kvd;

		rmsnorm(s->xb, s->x, y->attn_norm, dim, c->norm_eps);
		struct eng_matvec qkv[3] = {{&y->wq, s->xb, s->q}, {&y->wk, s->xb, kc}, {&y->wv, s->xb, vc}};
		eng_matvec_run(s->pool, s->k, qkv, 3);
		add_bias(s->q, y->bq, (size_t)c->n_head * hd);
		add_bias(kc, y->bk, kvd);
		add_bias(vc, y->bv, kvd);
		rope(s, s->q, c->n_head);
		rope(s, kc, c->n_kv_head);
		struct attn_job aj = {s, l, pos};
		eng_pool_run(s->pool, attn_task, &aj, c->n_head);
		struct eng_matvec o = {&y->wo, s->xb, s->xb2};
		eng_matvec_run(s->pool, s->k, &o, 1);
		add_bias(s->xb2, y->bo, dim);
		for (uint32_t i = 0; i < dim; i++)
			s->x[i] += s->xb2[i];

		rmsnorm(s->xb, s->x, y->ffn_norm, dim, c->norm_eps);
		struct eng_matvec gu[2] = {{&y->w_gate, s->xb, s->hb}, {&y->w_up, s->xb, s->hb2}};
		eng_matvec_run(s->pool, s->k, gu, 2);
		for (uint32_t i = 0; i < c->ffn_dim; i++) {
			float g = s->hb[i];
			s->hb[i] = g / (1.0f + expf(-g)) * s->hb2[i];
		}
		struct eng_matvec d = {&y->w_down, s->hb, s->xb2};
		eng_matvec_run(s->pool, s->k, &d, 1);
		for (uint32_t i = 0; i < dim; i++)
			s->x[i] += s->xb2[i];
	}
	if (!logits)
		return HM_OK;
	rmsnorm(s->x, s->x, m->out_norm, dim, c->norm_eps);
	struct eng_matvec cls = {&m->output, s->x, logits};
	eng_matvec_run(s->pool, s->k, &cls, 1);
	return hm_cancelled(ctx) ? hm_fail(ctx, HM_ERR_CANCELLED, "cancelled") : HM_OK;
}
