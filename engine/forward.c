/* forward.c - the decoding state and the forward pass over a batch of
 * tokens (a prompt, or one generated token): RMSNorm, projection biases
 * (Qwen2), per-head q/k RMSNorm (Qwen3, Gemma 3), rope (interleaved for GGUF
 * llama, half-split for HF order and the NEOX families; skipped on SmolLM3's
 * NoPE layers; per-layer bases and LongRoPE factors), grouped-query attention
 * over a KV cache (sliding windows, soft-capping), SwiGLU or GeGLU, Gemma's
 * extra norms, mixtures of experts, tied or untied classifier. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "engine-int.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

/* Prompt tokens run through each layer together, ENG_BATCH at a time. */
#define ENG_BATCH 256

struct eng_state {
	const struct eng_model *m;
	const struct eng_kernels *k;
	struct util_pool *pool;
	uint32_t ctx_len;
	/* activations, ENG_BATCH rows each */
	float *x, *xb, *xb2, *q, *hb, *hb2;
	int8_t *aq;                          /* 8-bit activations (widest row) */
	float *ad;                           /* their block scales */
	float *wscr;                         /* per participant: ENG_MM_TR widest rows */
	unsigned char *xt;                   /* ENG_XT_BYTES(widest) per row: the kernels' prep */
	unsigned char *xa;                   /* ENG_XA_BYTES(ENG_BATCH, widest): the kernels' pack */
	/* experts: router probabilities, the picks and weights of each row, the
	 * rows routed to one expert gathered, their outputs */
	float *probs, *pickw, *mx, *my;
	uint32_t *pick, *rows;
	size_t wscr_len;
	float *att;                          /* ctx_len scores per participant */
	float *kc;                           /* keys [layer][kv head][head_dim][pos] (transposed: attn.c) */
	float *vc;                           /* values [layer][pos][n_kv_head * head_dim] */
	float *kb;                           /* the batch's keys, ENG_BATCH rows of n_kv_head * head_dim */
	float *cs, *cs_swa;                  /* cos, sin per row (head_dim each); of sliding layers (Gemma 3) */
	uint64_t kv_bytes;
};

/* Maps a weight's pages of the read-only mapping now (the page cache's
 * pages, no copy; when they stay mapped), as llama.cpp's loader does with MAP_POPULATE: otherwise
 * the first forward pass takes a page fault every few pages of the model.
 * Best effort (an older kernel refuses the advice). Not for mixtures of
 * experts, whose unused experts must stay untouched. */
static void populate_weight(const struct eng_weight *w)
{
	long pg = sysconf(_SC_PAGESIZE);
	if (!w->data || pg <= 0 || w->rows == 0)
		return;
	uintptr_t a = (uintptr_t)w->data & ~(uintptr_t)(pg - 1), e = (uintptr_t)w->data + w->rows * w->row_bytes;
	(void)madvise((void *)a, e - a, MADV_POPULATE_READ);
}

static void populate(const struct eng_model *m, struct util_pool *pool)
{
	if (m->cfg.n_expert)
		return;
	/* A dense GGUF's weights move into huge-page memory (fmt_map_to_memory:
	 * a generation step streams every weight, and 4 KiB pages cost it 15%
	 * on a Xeon, 19.2 against 22.0 tok/s for TinyLlama Q8_0); HUBMIRROR_MMAP=1
	 * keeps them in the file mapping, shared with other processes. */
	const char *keep = getenv("HUBMIRROR_MMAP");
	if (m->gguf && !(keep && *keep && strcmp(keep, "0")) && fmt_gguf_to_memory(m->gguf, pool))
		return;
	populate_weight(&m->tok_embd);
	if (m->output.data != m->tok_embd.data)
		populate_weight(&m->output);
	for (uint32_t l = 0; l < m->cfg.n_layer; l++) {
		const struct eng_layer *y = &m->layers[l];
		const struct eng_weight *ws[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
		for (size_t i = 0; i < sizeof(ws) / sizeof(*ws); i++)
			populate_weight(ws[i]);
	}
}

enum hm_err eng_state_new(struct hm_ctx *ctx, const struct eng_model *m, uint32_t ctx_len, int threads,
			  enum eng_simd simd, struct eng_state **out)
{
	const struct eng_config *c = &m->cfg;
	struct eng_state *s = NULL;
	size_t qd = (size_t)c->n_head * c->head_dim, kvd = (size_t)c->n_kv_head * c->head_dim;
	size_t wide = qd > c->dim ? qd : c->dim, kv, B = ENG_BATCH;
	size_t ffn = c->ffn_dim > c->expert_ffn ? c->ffn_dim : c->expert_ffn;
	size_t widest = wide > ffn ? wide : ffn;

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
	s->wscr_len = ENG_MM_TR * widest;
	if (!(s->k = eng_kernels_get(simd))) {
		eng_state_free(s);
		return hm_fail(ctx, HM_ERR_USAGE, "this CPU cannot run the %s kernels", eng_simd_name(simd) ? eng_simd_name(simd) : "?");
	}
	kv = (size_t)c->n_layer * ctx_len * kvd;
	s->kv_bytes = 2 * (uint64_t)kv * sizeof(float);
	/* big buffers are mmapped by malloc: untouched pages (cache positions
	 * not reached, batch rows a generation step does not use) cost no memory */
	if (!(s->x = malloc(B * c->dim * sizeof(float))) || !(s->xb = malloc(B * wide * sizeof(float))) ||
	    !(s->xb2 = malloc(B * c->dim * sizeof(float))) || !(s->q = malloc(B * qd * sizeof(float))) ||
	    !(s->hb = malloc(B * ffn * sizeof(float))) || !(s->hb2 = malloc(B * ffn * sizeof(float))) ||
	    !(s->aq = malloc(B * widest)) || !(s->ad = malloc(B * (widest / ENG_QK + 1) * sizeof(float))) ||
	    !(s->cs = malloc(B * c->head_dim * sizeof(float))) ||
	    !(s->cs_swa = malloc(B * c->head_dim * sizeof(float))) ||
	    !(s->wscr = malloc((size_t)threads * ENG_MM_TR * widest * sizeof(float))) ||
	    !(s->xt = malloc(B * ENG_XT_BYTES(widest))) || !(s->xa = malloc(ENG_XA_BYTES(B, widest))) || !(s->kb = malloc(B * kvd * sizeof(float))) ||
	    !(s->att = malloc((size_t)threads * ENG_ATTN_GROUP * ctx_len * sizeof(float))) || !(s->kc = malloc(kv * sizeof(float))) ||
	    !(s->vc = malloc(kv * sizeof(float)))) {
		eng_state_free(s);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory for a context of %u (KV cache of %llu bytes)", ctx_len,
			       (unsigned long long)s->kv_bytes);
	}
	if (c->n_expert &&
	    (!(s->probs = malloc(B * c->n_expert * sizeof(float))) || !(s->pickw = malloc(B * c->n_expert_used * sizeof(float))) ||
	     !(s->pick = malloc(B * c->n_expert_used * sizeof(uint32_t))) || !(s->rows = malloc(B * sizeof(uint32_t))) ||
	     !(s->mx = malloc(B * c->dim * sizeof(float))) || !(s->my = malloc(B * c->dim * sizeof(float))))) {
		eng_state_free(s);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	if (!(s->pool = util_pool_new(threads))) {
		eng_state_free(s);
		return hm_fail(ctx, HM_ERR_NOMEM, "cannot start %d threads", threads);
	}
	populate(m, s->pool);
	*out = s;
	return HM_OK;
}

void eng_state_free(struct eng_state *s)
{
	if (!s)
		return;
	util_pool_free(s->pool);
	free(s->x);
	free(s->xb);
	free(s->xb2);
	free(s->q);
	free(s->hb);
	free(s->hb2);
	free(s->aq);
	free(s->ad);
	free(s->wscr);
	free(s->xt);
	free(s->xa);
	free(s->probs);
	free(s->pickw);
	free(s->pick);
	free(s->rows);
	free(s->mx);
	free(s->my);
	free(s->cs);
	free(s->cs_swa);
	free(s->att);
	free(s->kc);
	free(s->kb);
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
	return util_pool_size(s->pool);
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

/* Rotates the leading n_rot dims of each head of v (nh heads) by the angles
 * in cs (n_rot / 2 cos, then n_rot / 2 sin); the others pass through. */
static void rope(const struct eng_state *s, const float *cs, float *v, uint32_t nh)
{
	const uint32_t hd = s->m->cfg.head_dim, half = s->m->cfg.n_rot / 2;
	const int inter = s->m->cfg.interleaved_rope;
	for (uint32_t h = 0; h < nh; h++, v += hd)
		for (uint32_t i = 0; i < half; i++) {
			uint32_t a = inter ? 2 * i : i, b = inter ? 2 * i + 1 : i + half;
			float c = cs[i], sn = cs[half + i], x0 = v[a], x1 = v[b];
			v[a] = x0 * c - x1 * sn;
			v[b] = x0 * sn + x1 * c;
		}
}

struct attn_job {
	struct eng_state *s;
	uint32_t layer, pos0, n;
};

/* The query heads of one batch row that share a KV head (up to
 * ENG_ATTN_GROUP of them): scores against cached keys 0..pos, softmax, mix
 * of values (the same operations for a row alone or in a batch, for a head
 * alone or in a group). Tasks: row-major, then KV head, then group. */
static uint32_t attn_groups(const struct eng_config *c)
{
	uint32_t per = c->n_head / c->n_kv_head;
	return (per + ENG_ATTN_GROUP - 1) / ENG_ATTN_GROUP;
}

static void attn_task(void *arg, size_t task, int worker)
{
	const struct attn_job *j = arg;
	struct eng_state *s = j->s;
	const struct eng_config *c = &s->m->cfg;
	const uint32_t per = c->n_head / c->n_kv_head, ng = attn_groups(c);
	const uint32_t grp = (uint32_t)(task % ng), kvh = (uint32_t)(task / ng % c->n_kv_head);
	const uint32_t row = (uint32_t)(task / ng / c->n_kv_head), pos = j->pos0 + row;
	const uint32_t h = kvh * per + grp * ENG_ATTN_GROUP, nq = per - grp * ENG_ATTN_GROUP < ENG_ATTN_GROUP
									  ? per - grp * ENG_ATTN_GROUP : ENG_ATTN_GROUP;
	const uint32_t hd = c->head_dim, kvd = c->n_kv_head * hd;
	const size_t qd = (size_t)c->n_head * hd;
	/* a sliding-window layer sees the last swa_window positions, itself included */
	const uint32_t t0 = s->m->layers[j->layer].swa && pos >= c->swa_window ? pos - c->swa_window + 1 : 0;
	struct eng_attn_args a = {
		s->q + row * qd + h * hd,
		s->kc + (((size_t)j->layer * c->n_kv_head + kvh) * hd) * s->ctx_len,
		s->vc + (size_t)j->layer * s->ctx_len * kvd + (size_t)kvh * hd,
		s->ctx_len, kvd, hd, t0, pos + 1,
		c->attn_scale > 0 ? c->attn_scale : 1.0f / sqrtf((float)hd), c->attn_softcap,
		s->att + (size_t)worker * ENG_ATTN_GROUP * s->ctx_len, s->xb + row * qd + h * hd, nq, s->ctx_len};
	s->k->attn(&a);
}

static void swiglu(float *g, const float *u, size_t n)
{
	for (size_t e = 0; e < n; e++)
		g[e] = g[e] / (1.0f + expf(-g[e])) * u[e];
}

/* The experts' FFN of the n rows of s->xb into s->xb2: router softmax, the
 * top n_expert_used (ties to the lower index), their weights renormalized;
 * each expert runs once over the rows routed to it, so an expert no row
 * picked is never read. A row's sum runs in expert order whatever the batch. */
static void moe_ffn(struct eng_state *s, const struct eng_layer *y, uint32_t n)
{
	const struct eng_config *c = &s->m->cfg;
	const uint32_t E = c->n_expert, K = c->n_expert_used, dim = c->dim, ff = c->expert_ffn;
	struct eng_act a = {s->xb, n, dim, dim, s->aq, s->ad, s->wscr, s->wscr_len, s->xt, s->xa};
	struct eng_mm r = {&y->router, s->probs, E};
	eng_matmul_run(s->pool, s->k, &a, &r, 1);
	for (uint32_t t = 0; t < n; t++) {
		float *p = s->probs + (size_t)t * E, max = -INFINITY, sum = 0, wsum = 0;
		uint32_t *pk = s->pick + (size_t)t * K;
		float *pw = s->pickw + (size_t)t * K;
		for (uint32_t e = 0; e < E; e++)
			max = p[e] > max ? p[e] : max;
		for (uint32_t e = 0; e < E; e++)
			sum += p[e] = expf(p[e] - max);
		for (uint32_t k = 0; k < K; k++) { /* selection: K is small */
			uint32_t best = UINT32_MAX;
			for (uint32_t e = 0; e < E; e++) {
				int taken = 0;
				for (uint32_t j = 0; j < k; j++)
					taken |= pk[j] == e;
				if (!taken && (best == UINT32_MAX || p[e] > p[best]))
					best = e;
			}
			pk[k] = best;
			pw[k] = p[best] / sum;
			wsum += pw[k];
		}
		for (uint32_t k = 0; k < K; k++)
			pw[k] /= wsum;
	}
	memset(s->xb2, 0, (size_t)n * dim * sizeof(float));
	for (uint32_t e = 0; e < E; e++) {
		uint32_t m = 0;
		for (uint32_t t = 0; t < n; t++)
			for (uint32_t k = 0; k < K; k++)
				if (s->pick[(size_t)t * K + k] == e) {
					s->rows[m] = t;
					memcpy(s->mx + (size_t)m * dim, s->xb + (size_t)t * dim, dim * sizeof(float));
					m++;
				}
		if (!m)
			continue;
		struct eng_act ax = {s->mx, m, dim, dim, s->aq, s->ad, s->wscr, s->wscr_len, s->xt, s->xa};
		struct eng_mm gu[2] = {{&y->e_gate[e], s->hb, ff}, {&y->e_up[e], s->hb2, ff}};
		eng_matmul_run(s->pool, s->k, &ax, gu, 2);
		swiglu(s->hb, s->hb2, (size_t)m * ff);
		struct eng_act ah = {s->hb, m, ff, ff, s->aq, s->ad, s->wscr, s->wscr_len, s->xt, s->xa};
		struct eng_mm d = {&y->e_down[e], s->my, dim};
		eng_matmul_run(s->pool, s->k, &ah, &d, 1);
		for (uint32_t j = 0; j < m; j++) {
			uint32_t t = s->rows[j];
			float w = 0;
			for (uint32_t k = 0; k < K; k++)
				if (s->pick[(size_t)t * K + k] == e)
					w = s->pickw[(size_t)t * K + k];
			float *o = s->xb2 + (size_t)t * dim;
			const float *v = s->my + (size_t)j * dim;
			for (uint32_t i = 0; i < dim; i++)
				o[i] += w * v[i];
		}
	}
}

/* Runs n <= ENG_BATCH tokens at positions pos0.. through every layer. */
static enum hm_err run_batch(struct hm_ctx *ctx, struct eng_state *s, const uint32_t *tok, uint32_t n, uint32_t pos0)
{
	const struct eng_model *m = s->m;
	const struct eng_config *c = &m->cfg;
	const uint32_t dim = c->dim, hd = c->head_dim, half = c->n_rot / 2, ffn = c->ffn_dim;
	const size_t kvd = (size_t)c->n_kv_head * hd, qd = (size_t)c->n_head * hd;

	for (uint32_t i = 0; i < n; i++) {
		if (eng_dequantize(m->tok_embd.type, m->tok_embd.data + (size_t)tok[i] * m->tok_embd.row_bytes,
				   s->x + (size_t)i * dim, dim))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "token embedding type %u cannot be decoded", m->tok_embd.type);
		if (c->emb_scale > 0)
			for (uint32_t e = 0; e < dim; e++)
				s->x[(size_t)i * dim + e] *= c->emb_scale;
		float *cs = s->cs + (size_t)i * hd, *cw = s->cs_swa + (size_t)i * hd;
		for (uint32_t j = 0; j < half; j++) {
			double a = (double)(pos0 + i) * m->inv_freq[j];
			cs[j] = (float)cos(a) * c->rope_mscale;
			cs[half + j] = (float)sin(a) * c->rope_mscale;
			if (m->inv_freq_swa) {
				a = (double)(pos0 + i) * m->inv_freq_swa[j];
				cw[j] = (float)cos(a);
				cw[half + j] = (float)sin(a);
			}
		}
	}
	for (uint32_t l = 0; l < c->n_layer; l++) {
		const struct eng_layer *y = &m->layers[l];
		float *vc = s->vc + ((size_t)l * s->ctx_len + pos0) * kvd;

		for (uint32_t i = 0; i < n; i++)
			rmsnorm(s->xb + i * (size_t)dim, s->x + i * (size_t)dim, y->attn_norm, dim, c->norm_eps);
		struct eng_act a = {s->xb, n, dim, dim, s->aq, s->ad, s->wscr, s->wscr_len, s->xt, s->xa};
		struct eng_mm qkv[3] = {{&y->wq, s->q, qd}, {&y->wk, s->kb, kvd}, {&y->wv, vc, kvd}};
		eng_matmul_run(s->pool, s->k, &a, qkv, 3);
		for (uint32_t i = 0; i < n; i++) {
			float *qi = s->q + i * qd, *ki = s->kb + i * kvd;
			add_bias(qi, y->bq, qd);
			add_bias(ki, y->bk, kvd);
			add_bias(vc + i * kvd, y->bv, kvd);
			if (y->q_norm) {
				for (uint32_t h = 0; h < c->n_head; h++)
					rmsnorm(qi + (size_t)h * hd, qi + (size_t)h * hd, y->q_norm, hd, c->norm_eps);
				for (uint32_t h = 0; h < c->n_kv_head; h++)
					rmsnorm(ki + (size_t)h * hd, ki + (size_t)h * hd, y->k_norm, hd, c->norm_eps);
			}
			if (!y->nope) {
				const float *cs = (y->swa && m->inv_freq_swa ? s->cs_swa : s->cs) + (size_t)i * hd;
				rope(s, cs, qi, c->n_head);
				rope(s, cs, ki, c->n_kv_head);
			}
		}
		/* the keys into the cache, transposed */
		for (uint32_t e = 0; e < kvd; e++) {
			float *kt = s->kc + ((size_t)l * kvd + e) * s->ctx_len + pos0;
			for (uint32_t i = 0; i < n; i++)
				kt[i] = s->kb[i * kvd + e];
		}
		struct attn_job aj = {s, l, pos0, n};
		util_pool_run(s->pool, attn_task, &aj, (size_t)n * c->n_kv_head * attn_groups(c));
		a = (struct eng_act){s->xb, n, qd, qd, s->aq, s->ad, s->wscr, s->wscr_len, s->xt, s->xa};
		struct eng_mm o = {&y->wo, s->xb2, dim};
		eng_matmul_run(s->pool, s->k, &a, &o, 1);
		for (uint32_t i = 0; i < n; i++) {
			float *xi = s->x + i * (size_t)dim, *oi = s->xb2 + i * (size_t)dim;
			add_bias(oi, y->bo, dim);
			if (y->post_attn_norm)
				rmsnorm(oi, oi, y->post_attn_norm, dim, c->norm_eps);
			for (uint32_t e = 0; e < dim; e++)
				xi[e] += oi[e];
			rmsnorm(s->xb + i * (size_t)dim, xi, y->ffn_norm, dim, c->norm_eps);
		}
		if (y->e_gate) {
			moe_ffn(s, y, n);
			for (size_t e = 0; e < (size_t)n * dim; e++)
				s->x[e] += s->xb2[e];
			if (hm_cancelled(ctx))
				return hm_fail(ctx, HM_ERR_CANCELLED, "cancelled");
			continue;
		}
		a = (struct eng_act){s->xb, n, dim, dim, s->aq, s->ad, s->wscr, s->wscr_len, s->xt, s->xa};
		struct eng_mm gu[2] = {{&y->w_gate, s->hb, ffn}, {&y->w_up, s->hb2, ffn}};
		eng_matmul_run(s->pool, s->k, &a, gu, 2);
		if (c->gelu)
			for (size_t e = 0; e < (size_t)n * ffn; e++) { /* GELU, tanh approximation */
				float g = s->hb[e];
				s->hb[e] = 0.5f * g * (1.0f + tanhf(0.7978845608f * (g + 0.044715f * g * g * g))) * s->hb2[e];
			}
		else
			swiglu(s->hb, s->hb2, (size_t)n * ffn);
		a = (struct eng_act){s->hb, n, ffn, ffn, s->aq, s->ad, s->wscr, s->wscr_len, s->xt, s->xa};
		struct eng_mm d = {&y->w_down, s->xb2, dim};
		eng_matmul_run(s->pool, s->k, &a, &d, 1);
		if (y->post_ffn_norm)
			for (uint32_t i = 0; i < n; i++)
				rmsnorm(s->xb2 + i * (size_t)dim, s->xb2 + i * (size_t)dim, y->post_ffn_norm, dim, c->norm_eps);
		for (size_t e = 0; e < (size_t)n * dim; e++)
			s->x[e] += s->xb2[e];
		if (hm_cancelled(ctx))
			return hm_fail(ctx, HM_ERR_CANCELLED, "cancelled");
	}
	return HM_OK;
}

enum hm_err eng_forward_batch(struct hm_ctx *ctx, struct eng_state *s, const uint32_t *tokens, size_t n,
			      uint32_t pos0, float *logits)
{
	const struct eng_model *m = s->m;
	const struct eng_config *c = &m->cfg;
	enum hm_err err;

	if (n == 0)
		return hm_fail(ctx, HM_ERR_USAGE, "no tokens to run");
	for (size_t i = 0; i < n; i++)
		if (tokens[i] >= c->vocab)
			return hm_fail(ctx, HM_ERR_USAGE, "token %u is out of the vocabulary (%u)", tokens[i], c->vocab);
	if (pos0 >= s->ctx_len || n > s->ctx_len - pos0)
		return hm_fail(ctx, HM_ERR_USAGE, "position %llu is past the context length %u",
			       (unsigned long long)(pos0 + n - 1), s->ctx_len);
	uint32_t nb = 0;
	for (size_t i = 0; i < n; i += nb) {
		nb = n - i < ENG_BATCH ? (uint32_t)(n - i) : ENG_BATCH;
		if ((err = run_batch(ctx, s, tokens + i, nb, pos0 + (uint32_t)i)))
			return err;
	}
	if (!logits)
		return HM_OK;
	float *x = s->x + (size_t)(nb - 1) * c->dim;
	rmsnorm(s->xb, x, m->out_norm, c->dim, c->norm_eps);
	struct eng_act a = {s->xb, 1, c->dim, c->dim, s->aq, s->ad, NULL, 0, s->xt, NULL};
	struct eng_mm cls = {&m->output, logits, 0};
	eng_matmul_run(s->pool, s->k, &a, &cls, 1);
	if (c->final_softcap > 0)
		for (uint32_t v = 0; v < c->vocab; v++)
			logits[v] = c->final_softcap * tanhf(logits[v] / c->final_softcap);
	return hm_cancelled(ctx) ? hm_fail(ctx, HM_ERR_CANCELLED, "cancelled") : HM_OK;
}

enum hm_err eng_forward(struct hm_ctx *ctx, struct eng_state *s, uint32_t token, uint32_t pos, float *logits)
{
	return eng_forward_batch(ctx, s, &token, 1, pos, logits);
}
