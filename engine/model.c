/* model.c - opens a model of the families of ENG_GGUF_ARCHS / ENG_HF_ARCHS
 * from GGUF, or safetensors or PyTorch .bin (+ config.json), checks every tensor the forward pass will touch against the configuration,
 * and binds the matrices in place in the readers' mappings. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "engine-int.h"
#include "../formats/hfdir.h"
#include "../formats/torch.h"
#include "../util/util.h"

#define U(x) ((unsigned long long)(x))

struct loader {
	struct hm_ctx *ctx;
	struct eng_model *m;
	const char *path; /* for messages */
};

/* ---- tensors ---- */

static enum hm_err bad(struct loader *L, const char *fmt, ...) HM_PRINTF(2, 3);
static enum hm_err bad(struct loader *L, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': %s", L->path, msg);
}

/* Finds name and reports its type, dims as [rows, cols] (a vector: rows = 1),
 * data and size; 0 when absent; -1 (message set) when it is not 1-D/2-D. */
static int find(struct loader *L, const char *name, uint32_t *type, uint64_t *rows, uint64_t *cols,
		const unsigned char **data, uint64_t *nbytes, int *ndim)
{
	if (L->m->gguf) {
		const struct fmt_gguf_tensor *t = fmt_gguf_find_tensor(L->m->gguf, name);
		if (!t)
			return 0;
		if (t->ne[2] != 1 || t->ne[3] != 1) {
			bad(L, "tensor '%s' has more than 2 dimensions {%llu, %llu, %llu, %llu}", name, U(t->ne[0]), U(t->ne[1]),
			    U(t->ne[2]), U(t->ne[3]));
			return -1;
		}
		*type = t->type;
		*cols = t->ne[0];
		*rows = t->ne[1];
		*ndim = t->ndim > 2 ? 2 : t->ndim;
		*data = t->data;
		*nbytes = t->nbytes;
		return 1;
	}
	const struct fmt_st_tensor *t = fmt_st_set_find(L->m->st, name);
	if (!t)
		return 0;
	switch (t->dtype) {
	case FMT_F32: *type = FMT_GGML_F32; break;
	case FMT_F16: *type = FMT_GGML_F16; break;
	case FMT_BF16: *type = FMT_GGML_BF16; break;
	default:
		bad(L, "tensor '%s' has dtype %s (F32, F16 or BF16 expected)", name, fmt_dtype_name(t->dtype));
		return -1;
	}
	if (t->ndim < 1 || t->ndim > 2) {
		bad(L, "tensor '%s' has %llu dimensions (1 or 2 expected)", name,
		    (unsigned long long)t->ndim);
		return -1;
	}
	*ndim = t->ndim;
	*rows = t->ndim == 2 ? t->shape[0] : 1;
	*cols = t->shape[t->ndim - 1];
	*data = t->data;
	*nbytes = t->nbytes;
	return 1;
}

/* Binds matrix name of rows x cols (PyTorch [out, in]; GGUF {in, out}).
 * *present = 0 (and HM_OK) for an absent optional tensor. */
static enum hm_err bind_mat(struct loader *L, const char *name, uint64_t rows, uint64_t cols, int optional,
			    struct eng_weight *w, int *present)
{
	uint64_t r, c, nbytes;
	uint32_t type;
	const unsigned char *data;
	int ndim, f = find(L, name, &type, &r, &c, &data, &nbytes, &ndim);
	if (present)
		*present = f > 0;
	if (f < 0)
		return HM_ERR_BAD_INPUT;
	if (!f)
		return optional ? HM_OK : bad(L, "missing tensor '%s'", name);
	if (ndim != 2 || r != rows || c != cols)
		return L->m->gguf
			       ? bad(L, "tensor '%s' has dims {%llu, %llu}, expected {%llu, %llu}", name, U(c), U(r), U(cols), U(rows))
			       : bad(L, "tensor '%s' has shape [%llu, %llu], expected [%llu, %llu]", name, U(r), U(c), U(rows), U(cols));
	if (!eng_type_supported(type))
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' has type %s, which the engine does not compute with (F32, F16, BF16, Q8_0, Q4_0)",
			       L->path, name, fmt_ggml_type_name(type) ? fmt_ggml_type_name(type) : "unknown");
	uint32_t bs = fmt_ggml_block_size(type), ts = fmt_ggml_type_size(type);
	if (!bs || cols % bs || (cols / bs) * ts * rows != nbytes)
		return bad(L, "tensor '%s' has %llu bytes, not %llu x %llu elements", name, U(nbytes), U(rows), U(cols));
	w->type = type;
	w->rows = rows;
	w->cols = cols;
	w->row_bytes = (size_t)(cols / bs * ts);
	w->data = data;
	L->m->cfg.weight_bytes += nbytes;
	return HM_OK;
}

/* Decodes vector name of n elements (F32/F16/BF16) into *out (owned by the
 * model); an absent optional one leaves *out NULL. */
static enum hm_err bind_vec_opt(struct loader *L, const char *name, uint64_t n, int optional, float **out)
{
	uint64_t r, c, nbytes;
	uint32_t type;
	const unsigned char *data;
	int ndim, f = find(L, name, &type, &r, &c, &data, &nbytes, &ndim);
	if (f < 0)
		return HM_ERR_BAD_INPUT;
	if (!f)
		return optional ? HM_OK : bad(L, "missing tensor '%s'", name);
	if (r != 1 || c != n)
		return bad(L, "tensor '%s' has %llu x %llu elements, expected a vector of %llu", name, U(r), U(c), U(n));
	if (type != FMT_GGML_F32 && type != FMT_GGML_F16 && type != FMT_GGML_BF16)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' has type %s (F32, F16 or BF16 expected)",
			       L->path, name, fmt_ggml_type_name(type) ? fmt_ggml_type_name(type) : "unknown");
	if (nbytes != n * (type == FMT_GGML_F32 ? 4 : 2))
		return bad(L, "tensor '%s' has %llu bytes for %llu elements", name, U(nbytes), U(n));
	if (!(*out = malloc(n * sizeof(float))))
		return hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
	if (eng_dequantize(type, data, *out, n))
		return bad(L, "tensor '%s' cannot be decoded", name);
	for (uint64_t i = 0; i < n; i++)
		if (!isfinite((*out)[i]))
			return bad(L, "tensor '%s' holds a non-finite value at %llu", name, U(i));
	L->m->cfg.weight_bytes += nbytes;
	return HM_OK;
}

static enum hm_err bind_vec(struct loader *L, const char *name, uint64_t n, float **out)
{
	return bind_vec_opt(L, name, n, 0, out);
}

/* Checks the configuration against the engine's bounds. */
static enum hm_err check_config(struct loader *L)
{
	const struct eng_config *c = &L->m->cfg;
	struct {
		const char *what;
		uint64_t v, lo, hi;
	} lim[] = {
		{"block count", c->n_layer, 1, ENG_MAX_LAYERS},
		{"embedding length", c->dim, 1, ENG_MAX_DIM},
		{"head count", c->n_head, 1, ENG_MAX_HEADS},
		{"kv head count", c->n_kv_head, 1, c->n_head},
		{"head dim", c->head_dim, 2, ENG_MAX_HEAD_DIM},
		{"feed-forward length", c->ffn_dim, 1, ENG_MAX_FFN},
		{"vocabulary size", c->vocab, 1, ENG_MAX_VOCAB},
		{"context length", c->ctx_len, 1, ENG_MAX_CTX},
	};
	for (size_t i = 0; i < sizeof(lim) / sizeof(*lim); i++)
		if (lim[i].v < lim[i].lo || lim[i].v > lim[i].hi)
			return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': %s %llu is out of range (%llu..%llu)", L->path,
				       lim[i].what, (unsigned long long)lim[i].v, (unsigned long long)lim[i].lo,
				       (unsigned long long)lim[i].hi);
	if (c->n_head % c->n_kv_head)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': %u heads do not divide into %u kv heads", L->path,
			       c->n_head, c->n_kv_head);
	if (c->head_dim % 2)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': head dim %u is odd", L->path, c->head_dim);
	if ((uint64_t)c->n_head * c->head_dim > ENG_MAX_DIM)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': %u heads of %u are too wide", L->path, c->n_head,
			       c->head_dim);
	if (!(c->norm_eps > 0 && c->norm_eps < 1))
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': rms norm epsilon %g is out of range", L->path,
			       (double)c->norm_eps);
	if (!(c->rope_theta > 0 && c->rope_theta < 1e12f))
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': rope theta %g is out of range", L->path,
			       (double)c->rope_theta);
	if (!(c->rope_scale > 0 && c->rope_scale < 1e6f))
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': rope scaling factor %g is out of range", L->path,
			       (double)c->rope_scale);
	return HM_OK;
}

/* The router and the experts of layer l: GGUF ffn_gate_inp and the stacked
 * ffn_{gate,up,down}_exps (one slab per expert, used in place); HF
 * <moe>.gate and <moe>.experts.E.<gate|up|down> (Qwen3-MoE: mlp, gate_proj,
 * up_proj, down_proj; Mixtral: block_sparse_moe, w1, w3, w2). */
static enum hm_err bind_experts(struct loader *L, uint32_t l, struct eng_layer *y)
{
	struct eng_model *m = L->m;
	const struct eng_config *c = &m->cfg;
	const int g = m->gguf != NULL, mix = !strcmp(c->arch, "llama");
	const char *moe = mix ? "block_sparse_moe" : "mlp";
	char name[160];
	enum hm_err err;
	snprintf(name, sizeof(name), g ? "blk.%u.ffn_gate_inp.weight" : "model.layers.%u.%s.gate.weight", l, moe);
	if ((err = bind_mat(L, name, c->n_expert, c->dim, 0, &y->router, NULL)))
		return err;
	if (!(y->e_gate = calloc(c->n_expert, sizeof(*y->e_gate))) || !(y->e_up = calloc(c->n_expert, sizeof(*y->e_up))) ||
	    !(y->e_down = calloc(c->n_expert, sizeof(*y->e_down))))
		return hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
	struct {
		const char *gn, *hn, *hm;
		uint64_t rows, cols;
		struct eng_weight *w;
	} k[] = {{"ffn_gate_exps", "gate_proj", "w1", c->expert_ffn, c->dim, y->e_gate},
		 {"ffn_up_exps", "up_proj", "w3", c->expert_ffn, c->dim, y->e_up},
		 {"ffn_down_exps", "down_proj", "w2", c->dim, c->expert_ffn, y->e_down}};
	for (size_t i = 0; i < 3; i++) {
		if (!g) {
			for (uint32_t e = 0; e < c->n_expert; e++) {
				snprintf(name, sizeof(name), "model.layers.%u.%s.experts.%u.%s.weight", l, moe, e, mix ? k[i].hm : k[i].hn);
				if ((err = bind_mat(L, name, k[i].rows, k[i].cols, 0, &k[i].w[e], NULL)))
					return err;
			}
			continue;
		}
		snprintf(name, sizeof(name), "blk.%u.%s.weight", l, k[i].gn);
		const struct fmt_gguf_tensor *t = fmt_gguf_find_tensor(m->gguf, name);
		if (!t)
			return bad(L, "missing tensor '%s'", name);
		if (t->ne[0] != k[i].cols || t->ne[1] != k[i].rows || t->ne[2] != c->n_expert || t->ne[3] != 1)
			return bad(L, "tensor '%s' has dims {%llu, %llu, %llu, %llu}, expected {%llu, %llu, %u}", name,
				   U(t->ne[0]), U(t->ne[1]), U(t->ne[2]), U(t->ne[3]), U(k[i].cols), U(k[i].rows), c->n_expert);
		if (!eng_type_supported(t->type))
			return bad(L, "tensor '%s' has type %s, which the engine does not compute with", name,
				   fmt_ggml_type_name(t->type) ? fmt_ggml_type_name(t->type) : "unknown");
		uint32_t bs = fmt_ggml_block_size(t->type), ts = fmt_ggml_type_size(t->type);
		size_t rb = (size_t)(k[i].cols / bs * ts);
		if (!bs || k[i].cols % bs || rb * k[i].rows * c->n_expert != t->nbytes)
			return bad(L, "tensor '%s' has %llu bytes, not %u experts of %llu x %llu", name, U(t->nbytes),
				   c->n_expert, U(k[i].rows), U(k[i].cols));
		for (uint32_t e = 0; e < c->n_expert; e++)
			k[i].w[e] = (struct eng_weight){t->type, k[i].rows, k[i].cols, rb, t->data + (size_t)e * k[i].rows * rb};
		m->cfg.weight_bytes += t->nbytes;
	}
	return HM_OK;
}

static void plus_one(float *v, uint32_t n)
{
	for (uint32_t i = 0; v && i < n; i++)
		v[i] += 1.0f;
}

static enum hm_err check_experts(struct loader *L)
{
	const struct eng_config *c = &L->m->cfg;
	if (!strcmp(c->arch, "qwen3moe") && !c->n_expert)
		return bad(L, "a qwen3moe model without experts");
	if (c->n_expert && (c->n_expert > ENG_MAX_EXPERTS || c->n_expert_used < 1 || c->n_expert_used > c->n_expert ||
			    c->expert_ffn < 1 || c->expert_ffn > ENG_MAX_FFN))
		return bad(L, "%u experts, %u used, of width %u: out of range", c->n_expert, c->n_expert_used, c->expert_ffn);
	return HM_OK;
}

/* Binds layer l's tensors (GGUF or HF names). */
static enum hm_err bind_layer(struct loader *L, uint32_t l)
{
	struct eng_model *m = L->m;
	struct eng_config *c = &m->cfg;
	const int g = m->gguf != NULL;
	uint64_t qd = (uint64_t)c->n_head * c->head_dim, kvd = (uint64_t)c->n_kv_head * c->head_dim;
	struct eng_layer *y = &m->layers[l];
	char name[128];
	enum hm_err err;

	struct {
		const char *gn, *hn;
		uint64_t rows, cols;
		struct eng_weight *w;
	} mats[] = {
		{"attn_q", "self_attn.q_proj", qd, c->dim, &y->wq},
		{"attn_k", "self_attn.k_proj", kvd, c->dim, &y->wk},
		{"attn_v", "self_attn.v_proj", kvd, c->dim, &y->wv},
		{"attn_output", "self_attn.o_proj", c->dim, qd, &y->wo},
		{"ffn_gate", "mlp.gate_proj", c->ffn_dim, c->dim, &y->w_gate},
		{"ffn_up", "mlp.up_proj", c->ffn_dim, c->dim, &y->w_up},
		{"ffn_down", "mlp.down_proj", c->dim, c->ffn_dim, &y->w_down},
	};
	for (size_t i = 0; i < sizeof(mats) / sizeof(*mats); i++) {
		if ((c->fused && i != 3 && i != 6) || (c->n_expert && i >= 4))
			continue; /* Phi-3, experts: below */
		if (g)
			snprintf(name, sizeof(name), "blk.%u.%s.weight", l, mats[i].gn);
		else
			snprintf(name, sizeof(name), "model.layers.%u.%s.weight", l, mats[i].hn);
		if ((err = bind_mat(L, name, mats[i].rows, mats[i].cols, 0, mats[i].w, NULL)))
			return err;
	}
	if (c->n_expert && (err = bind_experts(L, l, y)))
		return err;
	if (c->fused) { /* Phi-3: rows q, k, v of one matrix; gate, then up, of another */
		struct eng_weight qkv, gu;
		snprintf(name, sizeof(name), g ? "blk.%u.attn_qkv.weight" : "model.layers.%u.self_attn.qkv_proj.weight", l);
		if ((err = bind_mat(L, name, qd + 2 * kvd, c->dim, 0, &qkv, NULL)))
			return err;
		snprintf(name, sizeof(name), g ? "blk.%u.ffn_up.weight" : "model.layers.%u.mlp.gate_up_proj.weight", l);
		if ((err = bind_mat(L, name, 2 * (uint64_t)c->ffn_dim, c->dim, 0, &gu, NULL)))
			return err;
		y->wq = y->wk = y->wv = qkv;
		y->wq.rows = qd;
		y->wk.rows = y->wv.rows = kvd;
		y->wk.data += qd * qkv.row_bytes;
		y->wv.data += (qd + kvd) * qkv.row_bytes;
		y->w_gate = y->w_up = gu;
		y->w_gate.rows = y->w_up.rows = c->ffn_dim;
		y->w_up.data += (size_t)c->ffn_dim * gu.row_bytes;
	}
	/* projection biases: Qwen2's q/k/v always, Llama's with attention_bias */
	struct {
		const char *gn, *hn;
		uint64_t n;
		float **b;
	} biases[] = {
		{"attn_q", "self_attn.q_proj", qd, &y->bq},
		{"attn_k", "self_attn.k_proj", kvd, &y->bk},
		{"attn_v", "self_attn.v_proj", kvd, &y->bv},
		{"attn_output", "self_attn.o_proj", c->dim, &y->bo},
	};
	for (size_t i = 0; i < sizeof(biases) / sizeof(*biases); i++) {
		if (g)
			snprintf(name, sizeof(name), "blk.%u.%s.bias", l, biases[i].gn);
		else
			snprintf(name, sizeof(name), "model.layers.%u.%s.bias", l, biases[i].hn);
		if ((err = bind_vec_opt(L, name, biases[i].n, !c->qkv_bias || i == 3, biases[i].b)))
			return err;
	}
	if (c->qk_norm) {
		snprintf(name, sizeof(name), g ? "blk.%u.attn_q_norm.weight" : "model.layers.%u.self_attn.q_norm.weight", l);
		if ((err = bind_vec(L, name, c->head_dim, &y->q_norm)))
			return err;
		snprintf(name, sizeof(name), g ? "blk.%u.attn_k_norm.weight" : "model.layers.%u.self_attn.k_norm.weight", l);
		if ((err = bind_vec(L, name, c->head_dim, &y->k_norm)))
			return err;
	}
	snprintf(name, sizeof(name), g ? "blk.%u.attn_norm.weight" : "model.layers.%u.input_layernorm.weight", l);
	if ((err = bind_vec(L, name, c->dim, &y->attn_norm)))
		return err;
	if (c->sandwich) { /* Gemma: the HF post_attention_layernorm is the post-attention norm */
		snprintf(name, sizeof(name), g ? "blk.%u.ffn_norm.weight" : "model.layers.%u.pre_feedforward_layernorm.weight", l);
		if ((err = bind_vec(L, name, c->dim, &y->ffn_norm)))
			return err;
		snprintf(name, sizeof(name), g ? "blk.%u.post_attention_norm.weight" : "model.layers.%u.post_attention_layernorm.weight", l);
		if ((err = bind_vec(L, name, c->dim, &y->post_attn_norm)))
			return err;
		snprintf(name, sizeof(name), g ? "blk.%u.post_ffw_norm.weight" : "model.layers.%u.post_feedforward_layernorm.weight", l);
		if ((err = bind_vec(L, name, c->dim, &y->post_ffn_norm)))
			return err;
	} else {
		snprintf(name, sizeof(name), g ? "blk.%u.ffn_norm.weight" : "model.layers.%u.post_attention_layernorm.weight",
			 l);
		if ((err = bind_vec(L, name, c->dim, &y->ffn_norm)))
			return err;
	}
	if (c->swa_period)
		y->swa = l % c->swa_period < c->swa_period - 1;
	if (c->gemma && !g) { /* Hugging Face's Gemma norms hold w and compute with 1 + w; the GGUF holds 1 + w */
		plus_one(y->attn_norm, c->dim);
		plus_one(y->ffn_norm, c->dim);
		plus_one(y->post_attn_norm, c->dim);
		plus_one(y->post_ffn_norm, c->dim);
		plus_one(y->q_norm, c->head_dim);
		plus_one(y->k_norm, c->head_dim);
	}
	return HM_OK;
}

/* Binds every tensor by the naming scheme (GGUF or HF). */
static enum hm_err bind_all(struct loader *L)
{
	struct eng_model *m = L->m;
	struct eng_config *c = &m->cfg;
	const int g = m->gguf != NULL;
	enum hm_err err;
	int present;

	if ((err = bind_mat(L, g ? "token_embd.weight" : "model.embed_tokens.weight", c->vocab, c->dim, 0, &m->tok_embd,
			    NULL)) ||
	    (err = bind_vec(L, g ? "output_norm.weight" : "model.norm.weight", c->dim, &m->out_norm)))
		return err;
	if (!c->tied) {
		if ((err = bind_mat(L, g ? "output.weight" : "lm_head.weight", c->vocab, c->dim, g, &m->output, &present)))
			return err;
		if (!present)
			c->tied = 1;
	}
	if (c->tied)
		m->output = m->tok_embd;
	if (!(m->layers = calloc(c->n_layer, sizeof(*m->layers))))
		return hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
	for (uint32_t l = 0; l < c->n_layer; l++)
		if ((err = bind_layer(L, l)))
			return err;
	if (c->gemma && !g)
		plus_one(m->out_norm, c->dim);
	c->weight_type = m->layers[0].wq.type;
	return HM_OK;
}

/* Rope frequencies: theta^(-2i/hd), divided by the Llama 3 factors (when
 * given) and the linear scaling factor. */
static enum hm_err set_rope(struct loader *L, const float *factors)
{
	struct eng_config *c = &L->m->cfg;
	uint32_t half = c->n_rot / 2;
	if (!(L->m->inv_freq = malloc(half * sizeof(double))))
		return hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
	for (uint32_t i = 0; i < half; i++) {
		double f = pow((double)c->rope_theta, -2.0 * i / c->n_rot);
		if (factors) {
			if (!(factors[i] > 0) || !isfinite(factors[i]))
				return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': rope frequency factor %u is %g", L->path, i,
					       (double)factors[i]);
			f /= factors[i];
		}
		L->m->inv_freq[i] = f / c->rope_scale;
	}
	if (c->rope_theta_swa > 0) {
		if (!(c->rope_theta_swa < 1e12f))
			return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': sliding-window rope theta %g is out of range", L->path,
				       (double)c->rope_theta_swa);
		if (!(L->m->inv_freq_swa = malloc(half * sizeof(double))))
			return hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
		for (uint32_t i = 0; i < half; i++)
			L->m->inv_freq_swa[i] = pow((double)c->rope_theta_swa, -2.0 * i / c->n_rot);
	}
	c->rope_llama3 = factors != NULL && !c->rope_longrope;
	if (c->rope_mscale == 0)
		c->rope_mscale = 1;
	return HM_OK;
}

/* ---- GGUF ---- */

static const struct fmt_gguf_kv *kv(struct loader *L, const char *key)
{
	return fmt_gguf_find_kv(L->m->gguf, key);
}

/* An unsigned integer key; def when absent and not required. */
static enum hm_err kv_u32(struct loader *L, const char *key, int required, uint32_t def, uint32_t *out)
{
	const struct fmt_gguf_kv *k = kv(L, key);
	if (!k) {
		if (required)
			return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': missing metadata key '%s'", L->path, key);
		*out = def;
		return HM_OK;
	}
	uint64_t v;
	switch (k->v.type) {
	case FMT_GGUF_U8: case FMT_GGUF_U16: case FMT_GGUF_U32: case FMT_GGUF_U64:
		v = k->v.u;
		break;
	case FMT_GGUF_I8: case FMT_GGUF_I16: case FMT_GGUF_I32: case FMT_GGUF_I64:
		if (k->v.i < 0)
			return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': metadata key '%s' is negative", L->path, key);
		v = (uint64_t)k->v.i;
		break;
	default:
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': metadata key '%s' is a %s, not an integer", L->path, key,
			       fmt_gguf_vtype_name(k->v.type));
	}
	*out = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; /* out of range anyway; check_config says so */
	return HM_OK;
}

static enum hm_err kv_f32(struct loader *L, const char *key, int required, float def, float *out)
{
	const struct fmt_gguf_kv *k = kv(L, key);
	if (!k) {
		if (required)
			return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': missing metadata key '%s'", L->path, key);
		*out = def;
		return HM_OK;
	}
	if (k->v.type != FMT_GGUF_F32 && k->v.type != FMT_GGUF_F64)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': metadata key '%s' is a %s, not a float", L->path, key,
			       fmt_gguf_vtype_name(k->v.type));
	*out = (float)k->v.f;
	return HM_OK;
}

static int kv_str_is(const struct fmt_gguf_kv *k, const char *s)
{
	return k && k->v.type == FMT_GGUF_STRING && k->v.len == strlen(s) && !memcmp(k->v.str, s, k->v.len);
}

/* "<arch>.<what>": the GGUF key of the model's architecture. */
static const char *akey(char *buf, size_t len, const char *arch, const char *what)
{
	snprintf(buf, len, "%s.%s", arch, what);
	return buf;
}
#define AK(what) akey(key, sizeof(key), c->arch, what)

/* Gemma 2/3 keys, with llama.cpp's defaults and query scaling (1/sqrt(head
 * dim), or 1/sqrt(dim / heads) for the 27B shapes: 46 layers for Gemma 2, 62
 * for Gemma 3). */
static enum hm_err gemma_gguf(struct loader *L)
{
	char key[96];
	struct eng_config *c = &L->m->cfg;
	enum hm_err err;
	int g2 = c->gemma == 2;
	c->emb_scale = sqrtf((float)c->dim);
	if ((err = kv_f32(L, AK("final_logit_softcapping"), 0, g2 ? 30.0f : 0.0f, &c->final_softcap)) ||
	    (err = kv_f32(L, AK("attn_logit_softcapping"), 0, g2 ? 50.0f : 0.0f, &c->attn_softcap)) ||
	    (err = kv_u32(L, AK("attention.sliding_window"), 0, g2 ? 4096 : 0, &c->swa_window)) ||
	    (err = kv_u32(L, AK("attention.sliding_window_pattern"), 0, g2 ? 2 : 6, &c->swa_period)) ||
	    (err = kv_f32(L, AK("rope.freq_base_swa"), 0, g2 ? c->rope_theta : 10000.0f, &c->rope_theta_swa)))
		return err;
	if (!c->swa_window)
		c->swa_period = 0;
	if (c->n_layer == (g2 ? 46u : 62u))
		c->attn_scale = 1.0f / sqrtf((float)(c->dim / c->n_head));
	if (!(c->final_softcap >= 0 && c->final_softcap < 1e6f) || !(c->attn_softcap >= 0 && c->attn_softcap < 1e6f))
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': soft-capping value out of range", L->path);
	return HM_OK;
}

/* The context the engine runs a model at by default (eng_state_new with 0). */
static uint32_t default_ctx(const struct eng_config *c)
{
	return c->ctx_len < ENG_DEFAULT_CTX ? c->ctx_len : ENG_DEFAULT_CTX;
}

/* Phi-3 LongRoPE from GGUF: rope_factors_long / _short (llama.cpp takes the
 * long ones when the context is past the original one: here the default
 * context) and the attention factor that scales cos and sin. */
static enum hm_err longrope_gguf(struct loader *L, float **factors)
{
	char key[96];
	struct eng_config *c = &L->m->cfg;
	enum hm_err err;
	uint32_t orig;
	if ((err = kv_u32(L, AK("rope.scaling.original_context_length"), 0, c->ctx_len, &orig)) ||
	    (err = kv_f32(L, AK("rope.scaling.attn_factor"), 0, 1.0f, &c->rope_mscale)))
		return err;
	if (!(c->rope_mscale > 0 && c->rope_mscale < 100))
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': rope attention factor %g is out of range", L->path,
			       (double)c->rope_mscale);
	const char *name = default_ctx(c) > orig ? "rope_factors_long.weight" : "rope_factors_short.weight";
	const struct fmt_gguf_tensor *t = fmt_gguf_find_tensor(L->m->gguf, name);
	if (!t)
		return HM_OK;
	if (t->type != FMT_GGML_F32 || t->nelem != c->n_rot / 2 || t->ne[0] != c->n_rot / 2)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': %s must be F32 {%u}", L->path, name, c->n_rot / 2);
	if (!(*factors = malloc(t->nbytes)))
		return hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
	memcpy(*factors, t->data, t->nbytes);
	c->rope_longrope = 1;
	return HM_OK;
}

/* The architecture's switches from general.architecture (k, a string). */
static enum hm_err gguf_arch(struct loader *L, const struct fmt_gguf_kv *k)
{
	struct eng_config *c = &L->m->cfg;
	if (kv_str_is(k, "llama")) {
		c->arch = "llama";
		c->interleaved_rope = 1; /* the converter permuted Q/K for it */
	} else if (kv_str_is(k, "qwen2")) {
		c->arch = "qwen2";
		c->interleaved_rope = 0; /* NEOX rope on HF row order */
		c->qkv_bias = 1;
	} else if (kv_str_is(k, "qwen3")) {
		c->arch = "qwen3";
		c->interleaved_rope = 0;
		c->qk_norm = 1;
	} else if (kv_str_is(k, "smollm3")) {
		c->arch = "smollm3";
		c->interleaved_rope = 1;
		c->nope_step = 4; /* llama.cpp: no rope when (layer + 1) % 4 == 0 */
	} else if (kv_str_is(k, "qwen3moe")) {
		c->arch = "qwen3moe";
		c->interleaved_rope = 0;
		c->qk_norm = 1;
	} else if (kv_str_is(k, "phi3")) {
		c->arch = "phi3";
		c->interleaved_rope = 0;
		c->fused = 1;
	} else if (kv_str_is(k, "gemma2") || kv_str_is(k, "gemma3")) {
		c->arch = kv_str_is(k, "gemma2") ? "gemma2" : "gemma3";
		c->gemma = c->arch[5] - '0';
		c->interleaved_rope = 0;
		c->gelu = c->sandwich = 1;
		c->qk_norm = c->gemma == 3;
	} else {
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': unsupported architecture %.*s (supported: %s)", L->path,
			       (int)(k->v.len > 64 ? 64 : k->v.len), k->v.str, ENG_GGUF_ARCHS);
	}
	return HM_OK;
}

static enum hm_err open_gguf(struct loader *L)
{
	char key[96];
	struct eng_model *m = L->m;
	struct eng_config *c = &m->cfg;
	enum hm_err err;
	uint32_t kl, vl, rot, nv;
	const struct fmt_gguf_kv *k;
	const struct fmt_gguf_tensor *t;
	float *factors = NULL;

	if ((err = fmt_gguf_open(L->ctx, L->path, &m->gguf)))
		return err;
	c->format = "gguf";
	k = kv(L, "general.architecture");
	if (!k || k->v.type != FMT_GGUF_STRING)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': no general.architecture", L->path);
	if ((err = gguf_arch(L, k)))
		return err;
	if ((err = kv_u32(L, AK("block_count"), 1, 0, &c->n_layer)) ||
	    (err = kv_u32(L, AK("context_length"), 1, 0, &c->ctx_len)) ||
	    (err = kv_u32(L, AK("embedding_length"), 1, 0, &c->dim)) ||
	    (err = kv_u32(L, AK("feed_forward_length"), 1, 0, &c->ffn_dim)) ||
	    (err = kv_u32(L, AK("attention.head_count"), 1, 0, &c->n_head)) ||
	    (err = kv_u32(L, AK("attention.head_count_kv"), 0, c->n_head, &c->n_kv_head)) ||
	    (err = kv_f32(L, AK("attention.layer_norm_rms_epsilon"), 1, 0, &c->norm_eps)) ||
	    (err = kv_f32(L, AK("rope.freq_base"), 0, 10000.0f, &c->rope_theta)))
		return err;
	if (c->n_head == 0 || c->n_head > ENG_MAX_HEADS)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': head count %u is out of range", L->path, c->n_head);
	if (!kv(L, AK("attention.key_length")) && c->dim % c->n_head)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': embedding length %u is not a multiple of %u heads", L->path,
			       c->dim, c->n_head);
	if ((err = kv_u32(L, AK("attention.key_length"), 0, c->dim / c->n_head, &kl)) ||
	    (err = kv_u32(L, AK("attention.value_length"), 0, kl, &vl)) ||
	    (err = kv_u32(L, AK("rope.dimension_count"), 0, kl, &rot)))
		return err;
	c->head_dim = kl;
	c->rope_scale = 1;
	k = kv(L, AK("rope.scaling.type"));
	if (k && !kv_str_is(k, "none")) {
		if (!kv_str_is(k, "linear"))
			return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': rope scaling '%.*s' is not supported", L->path,
				       k->v.type == FMT_GGUF_STRING ? (int)(k->v.len > 32 ? 32 : k->v.len) : 1,
				       k->v.type == FMT_GGUF_STRING ? k->v.str : "?");
		if ((err = kv_f32(L, AK("rope.scaling.factor"), 1, 1, &c->rope_scale)))
			return err;
	}
	t = fmt_gguf_find_tensor(m->gguf, "token_embd.weight");
	if (!t)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': missing tensor 'token_embd.weight'", L->path);
	c->vocab = t->ne[1] > UINT32_MAX ? UINT32_MAX : (uint32_t)t->ne[1];
	if ((err = kv_u32(L, AK("vocab_size"), 0, c->vocab, &nv)))
		return err;
	if ((err = check_config(L)))
		return err;
	if (nv != t->ne[1] || t->ne[0] != c->dim)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT,
			       "'%s': vocab/embedding mismatch: vocabulary of %u, token_embd.weight is {%llu, %llu} (expected {%u, %u})",
			       L->path, nv, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], c->dim, nv);
	k = kv(L, "tokenizer.ggml.tokens");
	if (k && (k->v.type != FMT_GGUF_ARRAY || k->v.count != c->vocab))
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT,
			       "'%s': vocab/embedding mismatch: %llu tokens, token_embd.weight has %u rows", L->path,
			       (unsigned long long)(k->v.type == FMT_GGUF_ARRAY ? k->v.count : 0), c->vocab);
	if (vl != kl)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': key length %u differs from value length %u", L->path, kl, vl);
	if (c->gemma && (err = gemma_gguf(L)))
		return err;
	if ((err = kv_u32(L, AK("expert_count"), 0, 0, &c->n_expert)) ||
	    (err = kv_u32(L, AK("expert_used_count"), !!c->n_expert, 0, &c->n_expert_used)) ||
	    (err = kv_u32(L, AK("expert_feed_forward_length"), 0, c->ffn_dim, &c->expert_ffn)) ||
	    (err = check_experts(L)))
		return err;
	if (rot > kl || rot < 2 || rot % 2)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': rope dimension count %u is not an even number from 2 to "
			       "the key length %u", L->path, rot, kl);
	c->n_rot = rot;
	if ((err = bind_all(L)))
		return err;
	for (uint32_t l = 0; c->nope_step && l < c->n_layer; l++)
		m->layers[l].nope = (l + 1) % c->nope_step == 0;
	if (c->fused && (err = longrope_gguf(L, &factors)))
		return err;
	t = factors ? NULL : fmt_gguf_find_tensor(m->gguf, "rope_freqs.weight");
	if (t) {
		if (t->type != FMT_GGML_F32 || t->nelem != c->n_rot / 2 || t->ne[0] != c->n_rot / 2)
			return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': rope_freqs.weight must be F32 {%u}", L->path,
				       c->n_rot / 2);
		if (!(factors = malloc(t->nbytes)))
			return hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
		memcpy(factors, t->data, t->nbytes);
	}
	err = set_rope(L, factors);
	free(factors);
	return err;
}

/* ---- safetensors + config.json ---- */

/* Llama 3 per-frequency factors (transformers' _compute_llama3_parameters). */
static void llama3_factors(const struct eng_config *c, const struct fmt_hf_config *h, float *f)
{
	double factor = fmt_hf_num_or(h->rope_factor, 8), lo = fmt_hf_num_or(h->low_freq_factor, 1);
	double hi = fmt_hf_num_or(h->high_freq_factor, 4);
	double old = h->rope_original_max.has ? h->rope_original_max.v : 8192;
	for (uint32_t i = 0; i < c->n_rot / 2; i++) {
		float freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->n_rot);
		double wavelen = 2 * M_PI / freq, lw = old / lo, hw = old / hi;
		if (wavelen < hw)
			f[i] = 1;
		else if (wavelen > lw)
			f[i] = (float)factor;
		else {
			double smooth = (old / wavelen - lo) / (hi - lo);
			f[i] = (float)(1 / ((1 - smooth) / factor + smooth));
		}
	}
}

/* Phi-3 LongRoPE from config.json (transformers' longrope parameters): the
 * long factors past original_max_position_embeddings (here: when the default
 * context is), else the short ones; attention factor sqrt(1 + ln(s) / ln(orig))
 * for s = max_position_embeddings / orig > 1, unless given. */
static enum hm_err longrope_hf(struct loader *L, const struct fmt_hf_config *h, const char *cfgpath, float **factors)
{
	struct eng_config *c = &L->m->cfg;
	uint32_t n = c->n_rot / 2;
	double orig = h->original_max_position_embeddings.has ? h->original_max_position_embeddings.v
		      : h->rope_original_max.v;
	if (!h->original_max_position_embeddings.has && !h->rope_original_max.has)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': longrope needs original_max_position_embeddings", cfgpath);
	double scale = (double)c->ctx_len / orig;
	double af = fmt_hf_num_or(h->attention_factor, scale > 1 ? sqrt(1 + log(scale) / log(orig)) : 1.0);
	int lng = default_ctx(c) > orig;
	const float *fa = lng ? h->long_factor : h->short_factor;
	if (!fa || (lng ? h->n_long : h->n_short) != n)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': rope_scaling long_factor/short_factor must hold %u values",
			       cfgpath, n);
	if (!(af > 0 && af < 100))
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': rope attention factor %g is out of range", cfgpath, af);
	if (!(*factors = malloc(n * sizeof(float))))
		return hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
	memcpy(*factors, fa, n * sizeof(float));
	c->rope_mscale = (float)af;
	c->rope_longrope = 1;
	return HM_OK;
}

/* Gemma 2/3 fields of config.json (transformers' Gemma2Config, Gemma3TextConfig). */
static enum hm_err gemma_hf(struct loader *L, const struct fmt_hf_config *h, const char *cfgpath)
{
	struct eng_config *c = &L->m->cfg;
	const char *act = h->hidden_activation;
	if (act[0] && strcmp(act, "gelu_pytorch_tanh"))
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': hidden activation '%.32s' is not supported"
			       " (gelu_pytorch_tanh is)", cfgpath, act);
	c->gelu = c->sandwich = 1;
	c->emb_scale = sqrtf((float)c->dim);
	c->attn_scale = (float)(1.0 / sqrt(fmt_hf_num_or(h->query_pre_attn_scalar, c->head_dim)));
	c->attn_softcap = (float)fmt_hf_num_or(h->attn_logit_softcapping, 0);
	c->final_softcap = (float)fmt_hf_num_or(h->final_logit_softcapping, 0);
	c->swa_window = h->sliding_window.v;
	c->swa_period = !c->swa_window ? 0 : h->sliding_window_pattern.has ? h->sliding_window_pattern.v
					  : c->gemma == 2 ? 2 : 6;
	c->rope_theta_swa = c->gemma == 2 ? c->rope_theta : (float)fmt_hf_num_or(h->rope_local_base_freq, 10000);
	return HM_OK;
}

/* A directory with PyTorch weights only: pytorch_model.bin(.index.json),
 * mapped in place like safetensors. */
static enum hm_err open_torch_dir(struct loader *L, struct eng_config *c)
{
	char *p = util_asprintf("%s/pytorch_model.bin.index.json", L->path);
	enum hm_err err;
	if (!p)
		return hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
	if (access(p, F_OK) == 0) {
		err = fmt_pt_map_index(L->ctx, p, NULL, NULL, &L->m->st);
	} else {
		free(p);
		if (!(p = util_asprintf("%s/pytorch_model.bin", L->path)))
			return hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
		if (access(p, F_OK) == 0)
			err = fmt_pt_map_single(L->ctx, p, &L->m->st);
		else
			err = hm_fail(L->ctx, HM_ERR_NOT_FOUND, "'%s' has no model.safetensors(.index.json) or"
				      " pytorch_model.bin(.index.json)", L->path);
	}
	free(p);
	if (!err)
		c->format = "pytorch";
	return err;
}

/* The family's switches (what the architecture implies). */
static enum hm_err hf_family(struct loader *L, const struct fmt_hf_config *h, const char *cfgpath)
{
	struct eng_config *c = &L->m->cfg;
	switch (h->family) {
	case FMT_HF_LLAMA: c->arch = "llama"; break;
	case FMT_HF_QWEN2: c->arch = "qwen2"; c->qkv_bias = 1; break;
	case FMT_HF_QWEN3: c->arch = "qwen3"; c->qk_norm = 1; break;
	case FMT_HF_SMOLLM3: c->arch = "smollm3"; break;
	case FMT_HF_QWEN3MOE: c->arch = "qwen3moe"; c->qk_norm = 1; break;
	case FMT_HF_MIXTRAL: c->arch = "llama"; break;
	case FMT_HF_PHI3: c->arch = "phi3"; c->fused = 1; break;
	case FMT_HF_GEMMA2: c->arch = "gemma2"; c->gemma = 2; break;
	case FMT_HF_GEMMA3: c->arch = "gemma3"; c->gemma = 3; c->qk_norm = 1; break;
	default:
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': unsupported architecture %.64s (supported: %s)", cfgpath,
			       h->arch[0] ? h->arch : h->model_type[0] ? h->model_type : "none", ENG_HF_ARCHS);
	}
	if (h->mlp_bias)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': MLP biases are not supported", cfgpath);
	return HM_OK;
}

/* The model's shape, rope and family fields from the checked config. */
static enum hm_err hf_config(struct loader *L, const struct fmt_hf_config *h, const char *cfgpath)
{
	struct eng_config *c = &L->m->cfg;
	enum hm_err err;
	double d;
	if ((err = hf_family(L, h, cfgpath)))
		return err;
	if (!h->vocab_size.has)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': config.json has no 'vocab_size'", cfgpath);
	c->dim = h->hidden_size;
	c->n_layer = h->n_layer;
	c->n_head = h->n_head;
	c->n_kv_head = h->n_kv_head.has ? h->n_kv_head.v : c->n_head;
	c->ffn_dim = h->intermediate_size;
	c->vocab = h->vocab_size.v;
	c->ctx_len = h->max_position_embeddings.has ? h->max_position_embeddings.v : 2048;
	if (c->n_head > ENG_MAX_HEADS)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': head count %u is out of range", cfgpath, c->n_head);
	if (!h->head_dim.has && c->dim % c->n_head)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': hidden_size %u is not a multiple of %u heads", cfgpath,
			       c->dim, c->n_head);
	c->head_dim = h->head_dim.has ? h->head_dim.v : c->dim / c->n_head;
	d = fmt_hf_num_or(h->partial_rotary_factor, 1);
	/* transformers: int(head_dim * partial_rotary_factor) leading dims rotate */
	if ((c->n_rot = (uint32_t)((double)c->head_dim * d)) < 2 || c->n_rot % 2)
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': partial_rotary_factor %g does not give an even number of "
			       "rotary dims from 2 to head_dim %u", cfgpath, d, c->head_dim);
	c->rope_theta = (float)fmt_hf_num_or(h->rope_theta, 10000);
	c->norm_eps = (float)fmt_hf_num_or(h->rms_norm_eps, 1e-6);
	c->rope_scale = h->rope == FMT_HF_ROPE_LINEAR ? (float)fmt_hf_num_or(h->rope_factor, 1) : 1;
	if (h->rope != FMT_HF_ROPE_NONE && h->rope != FMT_HF_ROPE_LINEAR && h->rope != FMT_HF_ROPE_LLAMA3 &&
	    !(h->rope == FMT_HF_ROPE_LONGROPE && c->fused))
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': rope_scaling type '%.32s' is not supported", cfgpath,
			       h->rope_type_name);
	if (c->gemma && (err = gemma_hf(L, h, cfgpath)))
		return err;
	if (h->family == FMT_HF_QWEN3MOE || h->family == FMT_HF_MIXTRAL) {
		int q = h->family == FMT_HF_QWEN3MOE;
		if (!h->n_expert.has || !h->n_expert_used.has || (q && !h->moe_intermediate_size.has))
			return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': config.json has no '%s'", cfgpath,
				       !h->n_expert.has ? (q ? "num_experts" : "num_local_experts")
				       : !h->n_expert_used.has ? "num_experts_per_tok" : "moe_intermediate_size");
		c->n_expert = h->n_expert.v;
		c->n_expert_used = h->n_expert_used.v;
		c->expert_ffn = q ? h->moe_intermediate_size.v : h->intermediate_size;
		if ((err = check_experts(L)))
			return err;
		if (q && (h->decoder_sparse_step > 1 || h->n_mlp_only_layers > 0 || h->norm_topk_prob == 0))
			return hm_fail(L->ctx, HM_ERR_BAD_INPUT, "'%s': dense layers among the experts, or unnormalized"
				       " top-k weights, are not supported", cfgpath);
	}
	c->tied = h->tie_word_embeddings == 1;
	return HM_OK;
}

/* Maps the weights: a directory (safetensors, else PyTorch), an index, or one file. */
static enum hm_err hf_weights(struct loader *L, int is_dir)
{
	struct eng_model *m = L->m;
	struct eng_config *c = &m->cfg;
	const struct fmt_st_tensor *emb;
	size_t len = strlen(L->path);
	enum hm_err err;
	if (is_dir && (err = fmt_st_open_dir(L->ctx, L->path, &m->st)) == HM_ERR_NOT_FOUND)
		err = open_torch_dir(L, c);
	else if (is_dir)
		;
	else if (len > 5 && !strcmp(L->path + len - 5, ".json"))
		err = fmt_st_open_index(L->ctx, L->path, NULL, NULL, &m->st);
	else
		err = fmt_st_open_single(L->ctx, L->path, &m->st);
	if (err)
		return err;
	emb = fmt_st_set_find(m->st, "model.embed_tokens.weight");
	if (emb && emb->ndim == 2 && (emb->shape[0] != c->vocab || emb->shape[1] != c->dim))
		return hm_fail(L->ctx, HM_ERR_BAD_INPUT,
			       "'%s': vocab/embedding mismatch: vocab_size %u, hidden_size %u, model.embed_tokens.weight is"
			       " [%llu, %llu]", L->path, c->vocab, c->dim, (unsigned long long)emb->shape[0],
			       (unsigned long long)emb->shape[1]);
	return HM_OK;
}

/* Per-layer kinds: Gemma's sliding/full attention, SmolLM3's NoPE layers;
 * then the rope factors (LongRoPE, Llama 3) and the frequencies. */
static enum hm_err hf_layers_rope(struct loader *L, const struct fmt_hf_config *h, const char *cfgpath)
{
	struct eng_model *m = L->m;
	struct eng_config *c = &m->cfg;
	float *factors = NULL;
	enum hm_err err;
	for (uint32_t l = 0; c->gemma && h->layer_sliding && l < c->n_layer; l++)
		m->layers[l].swa = c->swa_window && h->layer_sliding[l];
	for (uint32_t l = 0; h->family == FMT_HF_SMOLLM3 && h->no_rope_layers && l < c->n_layer; l++)
		m->layers[l].nope = h->no_rope_layers[l] == 0;
	if (h->rope == FMT_HF_ROPE_LONGROPE && (err = longrope_hf(L, h, cfgpath, &factors)))
		return err;
	if (h->rope == FMT_HF_ROPE_LLAMA3) {
		if (!(factors = malloc(c->n_rot / 2 * sizeof(float))))
			return hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
		llama3_factors(c, h, factors);
	}
	err = set_rope(L, factors);
	free(factors);
	return err;
}

static enum hm_err open_safetensors(struct loader *L, int is_dir)
{
	struct eng_config *c = &L->m->cfg;
	struct fmt_hf_config h = {0};
	enum hm_err err;
	char *cfgpath = NULL, *dir = NULL;
	const char *slash;

	c->format = "safetensors";
	c->interleaved_rope = 0;
	if (is_dir) {
		dir = util_strdup(L->path);
	} else {
		slash = strrchr(L->path, '/');
		dir = slash ? util_strndup(L->path, (size_t)(slash - L->path + (slash == L->path))) : util_strdup(".");
	}
	if (!dir || !(cfgpath = util_asprintf("%s/config.json", dir))) {
		err = hm_fail(L->ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((err = fmt_hf_config_load(L->ctx, cfgpath, NULL, &h)))
		goto out;
	if ((err = hf_config(L, &h, cfgpath)) || (err = hf_weights(L, is_dir)))
		goto out;
	if (!c->tied && !fmt_st_set_find(L->m->st, "lm_head.weight") && h.tie_word_embeddings == -1)
		c->tied = 1; /* no lm_head and no word on tying: a tied checkpoint */
	if ((err = check_config(L)) || (err = bind_all(L)))
		goto out;
	err = hf_layers_rope(L, &h, cfgpath);
out:
	fmt_hf_config_release(&h);
	free(cfgpath);
	free(dir);
	return err;
}

/* ---- public ---- */

enum hm_err eng_model_open(struct hm_ctx *ctx, const char *path, struct eng_model **out)
{
	struct loader L = {ctx, NULL, path};
	struct stat st;
	enum hm_err err;
	char magic[4] = {0};
	*out = NULL;
	if (stat(path, &st))
		return hm_fail(ctx, errno == ENOENT ? HM_ERR_NOT_FOUND : HM_ERR_IO, "cannot open '%s': %s", path,
			       strerror(errno));
	if (!(L.m = calloc(1, sizeof(*L.m))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if (S_ISDIR(st.st_mode)) {
		err = open_safetensors(&L, 1);
	} else {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			err = hm_fail(ctx, HM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
			goto out;
		}
		ssize_t n = read(fd, magic, 4);
		close(fd);
		err = n == 4 && !memcmp(magic, "GGUF", 4) ? open_gguf(&L) : open_safetensors(&L, 0);
	}
out:
	if (err) {
		eng_model_close(L.m);
		return err;
	}
	*out = L.m;
	return HM_OK;
}

void eng_model_close(struct eng_model *m)
{
	if (!m)
		return;
	if (m->layers)
		for (uint32_t l = 0; l < m->cfg.n_layer; l++) {
			free(m->layers[l].attn_norm);
			free(m->layers[l].ffn_norm);
			free(m->layers[l].bq);
			free(m->layers[l].bk);
			free(m->layers[l].bv);
			free(m->layers[l].bo);
			free(m->layers[l].q_norm);
			free(m->layers[l].k_norm);
			free(m->layers[l].post_attn_norm);
			free(m->layers[l].post_ffn_norm);
			free(m->layers[l].e_gate);
			free(m->layers[l].e_up);
			free(m->layers[l].e_down);
		}
	free(m->layers);
	free(m->out_norm);
	free(m->inv_freq);
	free(m->inv_freq_swa);
	fmt_gguf_close(m->gguf);
	fmt_st_set_close(m->st);
	free(m);
}

const struct eng_config *eng_model_config(const struct eng_model *m)
{
	return &m->cfg;
}
