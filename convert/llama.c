/* llama.c - LlamaForCausalLM / MistralForCausalLM checkpoints to GGUF
 * "llama", Qwen2ForCausalLM to "qwen2", Qwen3ForCausalLM to "qwen3": the tensor plan (names, shapes,
 * types, Q/K permutation for llama), the model metadata, the streaming
 * conversion and the check of the output. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "convert-int.h"
#include "../formats/torch.h"
#include "../util/util.h"
#include "../verify/verify.h"

#define CHUNK_ELEMS (1u << 21)    /* elements per pipeline step (8 MiB of F32 at most) */
#define PIECE_ELEMS (1u << 14)    /* elements per task: a multiple of 32 */

/* One output tensor. */
struct plan {
	char name[FMT_GGUF_MAX_NAME];
	int ndim;
	uint64_t ne[FMT_GGUF_MAX_DIMS];
	enum conv_out_type type;
	const unsigned char *data;  /* source elements (mapping or synth) */
	enum fmt_dtype dtype;       /* F32, F16 or BF16 */
	uint64_t nelem, rowlen, nrows;
	uint64_t perm_heads;        /* 0: rows as they are; else heads of the Q/K permutation */
	int add_one;                /* Gemma norms: 1 + w (rounded to the source's precision, as torch adds) */
	const unsigned char **parts; /* stacked experts: part_rows rows from each (owned), else NULL */
	uint64_t part_rows;
	uint64_t out_bytes;
	const unsigned char *map_base; /* the source's mapping (to drop pages), NULL for synth */
};

struct model {
	struct fmt_hf_config cfg;  /* config.json */
	struct fmt_st_set *set;
	struct plan *t;
	size_t n, cap;
	float *rope_freqs;
	float *rope_long_short;     /* phi3 LongRoPE: long factors, then short (rot/2 each) */
	uint64_t dim, n_layer, n_head, n_kv, n_ff, n_vocab, head_dim, ctx_len;
	int tied;
	const char *arch;           /* GGUF general.architecture: "llama", "qwen2" or "qwen3" */
	int neox;                   /* qwen2, qwen3: no Q/K permutation (NEOX rope), TextModel metadata */
	int qwen2;                  /* q/k/v biases, always */
	int qk_norm;                /* qwen3: per-head RMSNorm of q and k (attn_q_norm, attn_k_norm) */
	int smollm3;                /* llama layout; every 4th layer without rope (llama.cpp's fixed step) */
	int gemma;                  /* 2 or 3: sandwich norms stored as 1 + w, tied embeddings, NEOX rope */
	int phi3;                   /* fused qkv and gate_up kept fused (attn_qkv, ffn_up), NEOX rope, LongRoPE */
	/* mixtures of experts (Qwen3-MoE, Mixtral): router and experts per layer */
	uint64_t n_expert, n_used, n_ff_exp;
	const char *moe, *e_gate, *e_up, *e_down; /* HF names: "mlp", "gate_proj"... or "block_sparse_moe", "w1"... */
};

const char *conv_type_name(enum conv_type t)
{
	static const char *const names[] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
	return (unsigned)t < CONV_TYPE__COUNT ? names[t] : NULL;
}

int conv_type_parse(const char *s, enum conv_type *out)
{
	for (int i = 0; i < CONV_TYPE__COUNT; i++)
		if (s && !strcasecmp(s, conv_type_name((enum conv_type)i))) {
			*out = (enum conv_type)i;
			return 0;
		}
	return -1;
}

/* ---- config ---- */

/* SmolLM3's no_rope_layers (1: rope, 0: none) must be what llama.cpp
 * computes from the layer number alone (no rope when (layer + 1) % 4 == 0):
 * GGUF has no key for another pattern. */
static enum hm_err check_nope(struct hm_ctx *ctx, const struct model *m)
{
	const unsigned char *a = m->cfg.no_rope_layers;
	for (size_t i = 0; a && i < m->n_layer; i++) {
		int want = (i + 1) % 4 != 0;
		if (a[i] != want)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json: no_rope_layers[%zu] is not %d: llama.cpp's smollm3"
				       " skips rope on every 4th layer and GGUF cannot say otherwise", i, want);
	}
	return HM_OK;
}

/* The experts of Qwen3-MoE and Mixtral, as llama.cpp's loaders take them. */
static enum hm_err read_experts(struct hm_ctx *ctx, struct model *m, int qwen3moe)
{
	const struct fmt_hf_config *c = &m->cfg;
	m->moe = qwen3moe ? "mlp" : "block_sparse_moe";
	m->e_gate = qwen3moe ? "gate_proj" : "w1";
	m->e_up = qwen3moe ? "up_proj" : "w3";
	m->e_down = qwen3moe ? "down_proj" : "w2";
	if (!c->n_expert.has || !c->n_expert_used.has || (qwen3moe && !c->moe_intermediate_size.has))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json has no '%s'", !c->n_expert.has
			       ? (qwen3moe ? "num_experts" : "num_local_experts") : !c->n_expert_used.has
			       ? "num_experts_per_tok" : "moe_intermediate_size");
	m->n_expert = c->n_expert.v;
	m->n_used = c->n_expert_used.v;
	m->n_ff_exp = qwen3moe ? c->moe_intermediate_size.v : c->intermediate_size;
	if (m->n_expert < 1 || m->n_expert > 1024 || m->n_used < 1 || m->n_used > m->n_expert)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json: %llu experts, %llu used per token is unusable",
			       (unsigned long long)m->n_expert, (unsigned long long)m->n_used);
	if (c->decoder_sparse_step != 1 || c->n_mlp_only_layers > 0)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json: dense layers among the expert layers"
			       " (decoder_sparse_step, mlp_only_layers) are not supported");
	return HM_OK;
}

static enum hm_err read_config(struct hm_ctx *ctx, struct model *m, struct conv_result *res)
{
	const struct fmt_hf_config *c = &m->cfg;
	enum fmt_hf_family f = c->family;
	enum hm_err err;

	snprintf(res->arch, sizeof(res->arch), "%s", c->arch[0] ? c->arch : c->model_type);
	if (f == FMT_HF_UNKNOWN)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "unsupported architecture %.64s (supported: " FMT_HF_ARCHS ")",
			       c->arch[0] ? c->arch : c->model_type[0] ? c->model_type : "none");
	m->qwen2 = f == FMT_HF_QWEN2;
	m->smollm3 = f == FMT_HF_SMOLLM3;
	m->gemma = f == FMT_HF_GEMMA2 ? 2 : f == FMT_HF_GEMMA3 ? 3 : 0;
	m->phi3 = f == FMT_HF_PHI3;
	m->qk_norm = f == FMT_HF_QWEN3 || m->gemma == 3 || f == FMT_HF_QWEN3MOE;
	m->neox = m->qwen2 || f == FMT_HF_QWEN3 || f == FMT_HF_QWEN3MOE;
	m->arch = m->qwen2 ? "qwen2" : m->gemma == 2 ? "gemma2" : m->gemma == 3 ? "gemma3" : f == FMT_HF_QWEN3MOE
		  ? "qwen3moe" : m->qk_norm ? "qwen3" : m->smollm3 ? "smollm3" : m->phi3 ? "phi3" : "llama";
	m->dim = c->hidden_size;
	m->n_layer = c->n_layer;
	m->n_head = c->n_head;
	m->n_kv = c->n_kv_head.has ? c->n_kv_head.v : m->n_head;
	m->n_ff = c->intermediate_size;
	if (!c->max_position_embeddings.has && m->gemma != 3)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json has no 'max_position_embeddings'");
	m->ctx_len = c->max_position_embeddings.has ? c->max_position_embeddings.v : 131072;
	m->head_dim = c->head_dim.has ? c->head_dim.v : m->dim / m->n_head;
	if (m->n_layer > 4096 || m->n_kv > m->n_head || m->n_head % m->n_kv || m->head_dim % 2 || !m->head_dim)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json: unusable heads/layers (%llu layers, %llu heads,"
			       " %llu kv heads, head_dim %llu)", (unsigned long long)m->n_layer,
			       (unsigned long long)m->n_head, (unsigned long long)m->n_kv,
			       (unsigned long long)m->head_dim);
	if (m->smollm3 && (err = check_nope(ctx, m)))
		return err;
	if ((f == FMT_HF_QWEN3MOE || f == FMT_HF_MIXTRAL) && (err = read_experts(ctx, m, f == FMT_HF_QWEN3MOE)))
		return err;
	/* Gemma ties its classifier (llama.cpp reuses token_embd; an lm_head is dropped) */
	m->tied = c->tie_word_embeddings == 1 || m->gemma;
	return HM_OK;
}

/* ---- tensor plan ---- */

struct map_rule {
	const char *hf, *gguf;
	int perm;           /* 1: q (n_head), 2: k (n_kv) */
	int rows;           /* expected PyTorch shape: 'q','k','o','f','d','n', 'h' (head_dim) */
};

static const struct map_rule layer_rules[] = {
	{"input_layernorm.weight", "attn_norm.weight", 0, 'n'},
	{"self_attn.q_proj.weight", "attn_q.weight", 1, 'q'},
	{"self_attn.k_proj.weight", "attn_k.weight", 2, 'k'},
	{"self_attn.v_proj.weight", "attn_v.weight", 0, 'k'},
	{"self_attn.o_proj.weight", "attn_output.weight", 0, 'o'},
	{"post_attention_layernorm.weight", "ffn_norm.weight", 0, 'n'},
	{"mlp.gate_proj.weight", "ffn_gate.weight", 0, 'f'},
	{"mlp.up_proj.weight", "ffn_up.weight", 0, 'f'},
	{"mlp.down_proj.weight", "ffn_down.weight", 0, 'd'},
	{"self_attn.q_norm.weight", "attn_q_norm.weight", 0, 'h'},
	{"self_attn.k_norm.weight", "attn_k_norm.weight", 0, 'h'},
	/* biases (attention_bias / mlp_bias configs) */
	{"self_attn.q_proj.bias", "attn_q.bias", 1, 'Q'},
	{"self_attn.k_proj.bias", "attn_k.bias", 2, 'K'},
	{"self_attn.v_proj.bias", "attn_v.bias", 0, 'K'},
	{"self_attn.o_proj.bias", "attn_output.bias", 0, 'N'},
	{"mlp.gate_proj.bias", "ffn_gate.bias", 0, 'F'},
	{"mlp.up_proj.bias", "ffn_up.bias", 0, 'F'},
	{"mlp.down_proj.bias", "ffn_down.bias", 0, 'N'},
};
#define NRULES (sizeof(layer_rules) / sizeof(layer_rules[0]))

/* Gemma 2/3 (convert_hf_to_gguf's tensor map): norms around attention and FFN. */
static const struct map_rule gemma_rules[] = {
	{"input_layernorm.weight", "attn_norm.weight", 0, 'n'},
	{"self_attn.q_proj.weight", "attn_q.weight", 0, 'q'},
	{"self_attn.k_proj.weight", "attn_k.weight", 0, 'k'},
	{"self_attn.v_proj.weight", "attn_v.weight", 0, 'k'},
	{"self_attn.o_proj.weight", "attn_output.weight", 0, 'o'},
	{"self_attn.q_norm.weight", "attn_q_norm.weight", 0, 'h'},
	{"self_attn.k_norm.weight", "attn_k_norm.weight", 0, 'h'},
	{"post_attention_layernorm.weight", "post_attention_norm.weight", 0, 'n'},
	{"pre_feedforward_layernorm.weight", "ffn_norm.weight", 0, 'n'},
	{"post_feedforward_layernorm.weight", "post_ffw_norm.weight", 0, 'n'},
	{"mlp.gate_proj.weight", "ffn_gate.weight", 0, 'f'},
	{"mlp.up_proj.weight", "ffn_up.weight", 0, 'f'},
	{"mlp.down_proj.weight", "ffn_down.weight", 0, 'd'},
};

/* Phi-3/Phi-4: q/k/v and gate/up stay fused, as llama.cpp's phi3 reads them
 * (attn_qkv rows: q, k, v; ffn_up rows: gate, then up). */
static const struct map_rule phi3_rules[] = {
	{"input_layernorm.weight", "attn_norm.weight", 0, 'n'},
	{"self_attn.qkv_proj.weight", "attn_qkv.weight", 0, 'Y'},
	{"self_attn.o_proj.weight", "attn_output.weight", 0, 'o'},
	{"post_attention_layernorm.weight", "ffn_norm.weight", 0, 'n'},
	{"mlp.gate_up_proj.weight", "ffn_up.weight", 0, 'U'},
	{"mlp.down_proj.weight", "ffn_down.weight", 0, 'd'},
};

static const struct map_rule *rules_of(const struct model *m, size_t *n)
{
	if (m->phi3) {
		*n = sizeof(phi3_rules) / sizeof(phi3_rules[0]);
		return phi3_rules;
	}
	*n = m->gemma ? sizeof(gemma_rules) / sizeof(gemma_rules[0]) : NRULES;
	return m->gemma ? gemma_rules : layer_rules;
}

static int ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && !strcmp(s + a - b, suf);
}

/* qwen2 has q/k/v biases (always) and no other; qwen3 none; llama may have
 * any. Only qwen3 has q/k norms. */
static int rule_applies(const struct model *m, const struct map_rule *r)
{
	if (m->n_expert && !strncmp(r->hf, "mlp.", 4))
		return 0; /* experts instead of the dense FFN */
	if (r->rows == 'h')
		return m->qk_norm;
	if (!ends_with(r->hf, ".bias"))
		return 1;
	return m->qwen2 ? r->rows == 'Q' || r->rows == 'K' : !m->qk_norm;
}

/* The output type of a tensor (convert_hf_to_gguf's rules). */
static enum conv_out_type pick_type(const struct plan *p, enum conv_type want, size_t *fallback)
{
	if (p->ndim <= 1 || ends_with(p->name, "_norm.weight") || !ends_with(p->name, ".weight") ||
	    ends_with(p->name, ".ffn_gate_inp.weight")) /* the router stays F32, as llama.cpp keeps it */
		return CONV_OUT_F32;
	switch (want) {
	case CONV_F32: return CONV_OUT_F32;
	case CONV_F16: return CONV_OUT_F16;
	case CONV_BF16: return CONV_OUT_BF16;
	case CONV_Q8_0:
	case CONV_Q4_0:
		if (p->ne[0] % CONV_QK) {
			(*fallback)++;
			return CONV_OUT_F16;
		}
		return want == CONV_Q8_0 ? CONV_OUT_Q8_0 : CONV_OUT_Q4_0;
	default: return CONV_OUT_F32;
	}
}

static enum hm_err add_plan(struct hm_ctx *ctx, struct model *m, const char *name, const struct fmt_st_tensor *t,
			    const uint64_t *want, int wdims, int perm)
{
	struct plan *p;
	if (t->ndim != wdims)
		goto shape;
	for (int i = 0; i < wdims; i++)
		if (t->shape[i] != want[i])
			goto shape;
	if (t->dtype != FMT_F32 && t->dtype != FMT_F16 && t->dtype != FMT_BF16)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tensor '%s' has dtype %s (F32, F16 and BF16 convert)", t->name,
			       fmt_dtype_name(t->dtype));
	if (m->n == m->cap) {
		size_t nc = m->cap ? 2 * m->cap : 64;
		void *np = realloc(m->t, nc * sizeof(*m->t));
		if (!np)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		m->t = np;
		m->cap = nc;
	}
	p = &m->t[m->n++];
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->ndim = t->ndim;
	for (int i = 0; i < FMT_GGUF_MAX_DIMS; i++)
		p->ne[i] = i < t->ndim ? t->shape[t->ndim - 1 - i] : 1;
	p->data = t->data;
	p->dtype = t->dtype;
	p->nelem = t->nelem;
	p->rowlen = t->ndim ? p->ne[0] : 1;
	p->nrows = p->nelem / p->rowlen;
	p->map_base = t->data - t->file_offset;
	if (perm) {
		p->perm_heads = perm == 1 ? m->n_head : m->n_kv;
		if (t->ndim == 1) { /* a bias: every element is a row */
			p->rowlen = 1;
			p->nrows = p->nelem;
		}
	}
	return HM_OK;
shape:
	{
		char got[128] = "", exp[128] = "";
		for (int i = 0; i < t->ndim && i < 4; i++)
			snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%llu", i ? ", " : "",
				 (unsigned long long)t->shape[i]);
		for (int i = 0; i < wdims; i++)
			snprintf(exp + strlen(exp), sizeof(exp) - strlen(exp), "%s%llu", i ? ", " : "",
				 (unsigned long long)want[i]);
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tensor '%s' has shape [%s], config.json implies [%s]", t->name,
			       got, exp);
	}
}

static enum hm_err need(struct hm_ctx *ctx, const struct model *m, const char *name, const struct fmt_st_tensor **t)
{
	*t = fmt_st_set_find(m->set, name);
	return *t ? HM_OK : hm_fail(ctx, HM_ERR_BAD_INPUT, "the checkpoint has no tensor '%s'", name);
}

/* The experts' matrices of one kind in layer l stacked into one 3-D tensor
 * {cols, rows, n_expert}, as llama.cpp stacks them (ffn_*_exps). */
static enum hm_err add_experts(struct hm_ctx *ctx, struct model *m, uint64_t l, const char *hfname, const char *gguf,
			       uint64_t rows, uint64_t cols)
{
	const struct fmt_st_tensor *t = NULL, *first = NULL;
	char name[256], gg[FMT_GGUF_MAX_NAME];
	enum hm_err err;
	const unsigned char **parts = calloc(m->n_expert, sizeof(*parts));
	if (!parts)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (uint64_t e = 0; e < m->n_expert; e++) {
		snprintf(name, sizeof(name), "model.layers.%llu.%s.experts.%llu.%s.weight", (unsigned long long)l, m->moe,
			 (unsigned long long)e, hfname);
		if ((err = need(ctx, m, name, &t)))
			goto fail;
		if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols || (first && t->dtype != first->dtype)) {
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "tensor '%s' is not [%llu, %llu] %s like the other experts", name,
				      (unsigned long long)rows, (unsigned long long)cols,
				      fmt_dtype_name(first ? first->dtype : t->dtype));
			goto fail;
		}
		parts[e] = t->data;
		if (!first)
			first = t;
	}
	snprintf(gg, sizeof(gg), "blk.%llu.%s", (unsigned long long)l, gguf);
	if ((err = add_plan(ctx, m, gg, first, (uint64_t[]){rows, cols}, 2, 0)))
		goto fail;
	struct plan *p = &m->t[m->n - 1];
	p->ndim = 3;
	p->ne[2] = m->n_expert;
	p->nelem = rows * cols * m->n_expert;
	p->nrows = rows * m->n_expert;
	p->parts = parts;
	p->part_rows = rows;
	p->data = NULL;
	p->map_base = NULL; /* pages of many tensors: left to the kernel */
	return HM_OK;
fail:
	free(parts);
	return err;
}

/* "<moe>.gate.weight" or "<moe>.experts.E.<gate|up|down>.weight" with E < n_expert. */
static int is_expert_tensor(const struct model *m, const char *n)
{
	size_t ml = strlen(m->moe);
	unsigned long e;
	int pos = 0;
	if (strncmp(n, m->moe, ml) || n[ml] != '.')
		return 0;
	n += ml + 1;
	if (!strcmp(n, "gate.weight"))
		return 1;
	if (sscanf(n, "experts.%lu.%n", &e, &pos) != 1 || pos == 0 || e >= m->n_expert)
		return 0;
	n += pos;
	for (const char *const *x = (const char *const[]){m->e_gate, m->e_up, m->e_down, NULL}; *x; x++) {
		size_t xl = strlen(*x);
		if (!strncmp(n, *x, xl) && !strcmp(n + xl, ".weight"))
			return 1;
	}
	return 0;
}

/* Every source tensor must be used or known to be droppable. */
static enum hm_err check_all_mapped(struct hm_ctx *ctx, const struct model *m)
{
	for (size_t i = 0; i < fmt_st_set_count(m->set); i++) {
		const char *n = fmt_st_set_tensor(m->set, i)->name;
		unsigned long layer;
		int pos = 0, ok = 0;
		if (!strcmp(n, "model.embed_tokens.weight") || !strcmp(n, "model.norm.weight") ||
		    !strcmp(n, "lm_head.weight") || ends_with(n, ".rotary_emb.inv_freq") ||
		    ends_with(n, ".attention.masked_bias") || ends_with(n, ".attention.bias"))
			continue;
		size_t nr;
		const struct map_rule *rules = rules_of(m, &nr);
		if (sscanf(n, "model.layers.%lu.%n", &layer, &pos) == 1 && pos > 0 && layer < m->n_layer) {
			for (size_t r = 0; r < nr; r++)
				ok |= !strcmp(n + pos, rules[r].hf) && rule_applies(m, &rules[r]);
			if (m->n_expert)
				ok |= is_expert_tensor(m, n + pos);
		}
		if (!ok)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "cannot map tensor '%.200s' to GGUF", n);
	}
	return HM_OK;
}

/* An F32 vector tensor whose values the converter computed (owned by m). */
static enum hm_err add_synth(struct hm_ctx *ctx, struct model *m, const char *name, const float *v, uint64_t n)
{
	if (m->n == m->cap) {
		void *np = realloc(m->t, (m->cap + 1) * sizeof(*m->t));
		if (!np)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		m->t = np;
		m->cap++;
	}
	struct plan *p = &m->t[m->n++];
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->ndim = 1;
	p->ne[0] = n;
	p->ne[1] = p->ne[2] = p->ne[3] = 1;
	p->data = (const unsigned char *)v;
	p->dtype = FMT_F32;
	p->nelem = p->rowlen = n;
	p->nrows = 1;
	return HM_OK;
}

/* Phi-3/4 rotary dims: int(partial_rotary_factor * n_embd) // n_head, as
 * llama.cpp's Phi3MiniModel writes rope.dimension_count (Phi-4-mini: 0.75);
 * 0 when the factor gives no even count from 2 to head_dim. */
static uint64_t phi3_rope_dims(const struct model *m)
{
	double rot = fmt_hf_num_or(m->cfg.partial_rotary_factor, 1);
	if (!(rot > 0 && rot <= 1))
		return 0;
	uint64_t n = (uint64_t)(rot * (double)m->dim) / m->n_head;
	return n >= 2 && n % 2 == 0 && n <= m->head_dim ? n : 0;
}

/* Phi-3 LongRoPE (Phi3MiniModel.generate_extra_tensors): rope_factors_long
 * and rope_factors_short, rope dims / 2 each, from rope_scaling. */
static enum hm_err rope_longrope(struct hm_ctx *ctx, struct model *m)
{
	const struct fmt_hf_config *c = &m->cfg;
	uint64_t n = phi3_rope_dims(m) / 2;
	enum hm_err err;
	if (!n)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json: partial_rotary_factor does not give an even number of"
			       " rotary dims from 2 to head_dim");
	if (!c->long_factor || !c->short_factor || c->n_long != n || c->n_short != n)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json: rope_scaling needs long_factor and short_factor of"
			       " %llu values each", (unsigned long long)n);
	if (!(m->rope_long_short = malloc(2 * n * sizeof(float))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	memcpy(m->rope_long_short, c->long_factor, n * sizeof(float));
	memcpy(m->rope_long_short + n, c->short_factor, n * sizeof(float));
	if ((err = add_synth(ctx, m, "rope_factors_long.weight", m->rope_long_short, n)))
		return err;
	return add_synth(ctx, m, "rope_factors_short.weight", m->rope_long_short + n, n);
}

/* rope_freqs.weight for rope_scaling type "llama3" (LlamaModel.generate_extra_tensors). */
static enum hm_err rope_llama3(struct hm_ctx *ctx, struct model *m)
{
	const struct fmt_hf_config *c = &m->cfg;
	double base = fmt_hf_num_or(c->rope_theta, 10000.0), factor = fmt_hf_num_or(c->rope_factor, 8.0);
	double lo = fmt_hf_num_or(c->low_freq_factor, 1.0), hi = fmt_hf_num_or(c->high_freq_factor, 4.0);
	double old = c->rope_original_max.has ? c->rope_original_max.v : 8192.0;
	uint64_t dim = m->head_dim, n = dim / 2;
	if (!(m->rope_freqs = malloc(n * sizeof(float))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (uint64_t i = 0; i < n; i++) {
		/* torch: 1 / base ** (arange(0, dim, 2, float32) / dim), in float32 */
		float e = (float)(2 * i) / (float)dim;
		float freq = 1.0f / powf((float)base, e);
		double wavelen = 2 * M_PI / freq, lw = old / lo, hw = old / hi, f;
		if (wavelen < hw)
			f = 1;
		else if (wavelen > lw)
			f = factor;
		else {
			double smooth = (old / wavelen - lo) / (hi - lo);
			f = 1 / ((1 - smooth) / factor + smooth);
		}
		m->rope_freqs[i] = (float)f;
	}
	if (m->n == m->cap) {
		void *np = realloc(m->t, (m->cap + 1) * sizeof(*m->t));
		if (!np)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		m->t = np;
		m->cap++;
	}
	struct plan *p = &m->t[m->n++];
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "rope_freqs.weight");
	p->ndim = 1;
	p->ne[0] = n;
	p->ne[1] = p->ne[2] = p->ne[3] = 1;
	p->data = (const unsigned char *)m->rope_freqs;
	p->dtype = FMT_F32;
	p->nelem = p->rowlen = n;
	p->nrows = 1;
	return HM_OK;
}

static enum hm_err build_plan(struct hm_ctx *ctx, struct model *m, const struct conv_options *opt,
			      struct conv_result *res)
{
	const struct fmt_st_tensor *t;
	enum hm_err err;
	uint64_t q = m->n_head * m->head_dim, kv = m->n_kv * m->head_dim;

	if ((err = check_all_mapped(ctx, m)) || (err = need(ctx, m, "model.embed_tokens.weight", &t)))
		return err;
	if (t->ndim != 2 || t->shape[1] != m->dim)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "model.embed_tokens.weight is not [vocab, %llu]",
			       (unsigned long long)m->dim);
	m->n_vocab = t->shape[0];
	if ((err = add_plan(ctx, m, "token_embd.weight", t, (uint64_t[]){m->n_vocab, m->dim}, 2, 0)))
		return err;
	if (m->phi3 && m->cfg.rope == FMT_HF_ROPE_LONGROPE && (err = rope_longrope(ctx, m)))
		return err;
	if (!m->neox && !m->gemma && !m->phi3 && m->cfg.rope == FMT_HF_ROPE_LLAMA3 && (err = rope_llama3(ctx, m)))
		return err;
	size_t nr;
	const struct map_rule *rules = rules_of(m, &nr);
	for (uint64_t l = 0; l < m->n_layer; l++)
		for (size_t r = 0; r < nr; r++) {
			char hf[256], gg[FMT_GGUF_MAX_NAME];
			uint64_t shape[2];
			int nd = 2, bias = rules[r].rows >= 'A' && rules[r].rows <= 'Z';
			if (!rule_applies(m, &rules[r]))
				continue;
			snprintf(hf, sizeof(hf), "model.layers.%llu.%s", (unsigned long long)l, rules[r].hf);
			snprintf(gg, sizeof(gg), "blk.%llu.%s", (unsigned long long)l, rules[r].gguf);
			t = fmt_st_set_find(m->set, hf);
			/* optional for llama; qwen2's q/k/v always have them */
			if (!t && bias && !m->qwen2)
				continue;
			if ((err = need(ctx, m, hf, &t)))
				return err;
			switch (rules[r].rows) {
			case 'n': nd = 1; shape[0] = m->dim; break;
			case 'h': nd = 1; shape[0] = m->head_dim; break;
			case 'Y': shape[0] = q + 2 * kv; shape[1] = m->dim; break;
			case 'U': shape[0] = 2 * m->n_ff; shape[1] = m->dim; break;
			case 'q': shape[0] = q; shape[1] = m->dim; break;
			case 'k': shape[0] = kv; shape[1] = m->dim; break;
			case 'o': shape[0] = m->dim; shape[1] = q; break;
			case 'f': shape[0] = m->n_ff; shape[1] = m->dim; break;
			case 'd': shape[0] = m->dim; shape[1] = m->n_ff; break;
			case 'Q': nd = 1; shape[0] = q; break;
			case 'K': nd = 1; shape[0] = kv; break;
			case 'N': nd = 1; shape[0] = m->dim; break;
			default: nd = 1; shape[0] = m->n_ff; break;
			}
			/* qwen2/3 rope NEOX-style (half-split): HF row order is kept */
			if ((err = add_plan(ctx, m, gg, t, shape, nd, m->neox || m->gemma || m->phi3 ? 0 : rules[r].perm)))
				return err;
			m->t[m->n - 1].add_one = m->gemma && ends_with(gg, "norm.weight");
		}
	for (uint64_t l = 0; m->n_expert && l < m->n_layer; l++) {
		char hf[256], gg[FMT_GGUF_MAX_NAME];
		snprintf(hf, sizeof(hf), "model.layers.%llu.%s.gate.weight", (unsigned long long)l, m->moe);
		snprintf(gg, sizeof(gg), "blk.%llu.ffn_gate_inp.weight", (unsigned long long)l);
		if ((err = need(ctx, m, hf, &t)) ||
		    (err = add_plan(ctx, m, gg, t, (uint64_t[]){m->n_expert, m->dim}, 2, 0)) ||
		    (err = add_experts(ctx, m, l, m->e_gate, "ffn_gate_exps.weight", m->n_ff_exp, m->dim)) ||
		    (err = add_experts(ctx, m, l, m->e_down, "ffn_down_exps.weight", m->dim, m->n_ff_exp)) ||
		    (err = add_experts(ctx, m, l, m->e_up, "ffn_up_exps.weight", m->n_ff_exp, m->dim)))
			return err;
	}
	if ((err = need(ctx, m, "model.norm.weight", &t)) ||
	    (err = add_plan(ctx, m, "output_norm.weight", t, (uint64_t[]){m->dim}, 1, 0)))
		return err;
	m->t[m->n - 1].add_one = m->gemma != 0;
	t = fmt_st_set_find(m->set, "lm_head.weight");
	if (!t && !m->tied && m->cfg.tie_word_embeddings != -1)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "the checkpoint has no lm_head.weight and its embeddings are not tied");
	/* tied: loaders reuse token_embd.weight; an lm_head copy is left out */
	if (t && !m->tied && (err = add_plan(ctx, m, "output.weight", t, (uint64_t[]){m->n_vocab, m->dim}, 2, 0)))
		return err;
	for (size_t i = 0; i < m->n; i++) {
		struct plan *p = &m->t[i];
		p->type = pick_type(p, opt->type, &res->nf16_fallback);
		if (fmt_ggml_nbytes(p->type, p->ndim, p->ne, &p->out_bytes) < 0)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "tensor '%s' cannot be stored as %s", p->name,
				       fmt_ggml_type_name(p->type));
		res->nquant += p->type == CONV_OUT_Q8_0 || p->type == CONV_OUT_Q4_0;
		res->nparams += p->nelem;
	}
	res->ntensors = m->n;
	return HM_OK;
}

/* ---- metadata ---- */

static uint32_t file_type(enum conv_type t)
{
	switch (t) {
	case CONV_F32: return 0;
	case CONV_F16: return 1;
	case CONV_Q4_0: return 2;
	case CONV_Q8_0: return 7;
	case CONV_BF16: return 32;
	default: return 0;
	}
}

/* "<arch>.<what>" into buf. */
static const char *akey(char *buf, size_t len, const struct model *m, const char *what)
{
	snprintf(buf, len, "%s.%s", m->arch, what);
	return buf;
}

/* qwen2, qwen3: what convert_hf_to_gguf.py's Qwen2Model / Qwen3Model write (TextModel's
 * parameters, YaRN rope scaling; no vocab_size or rope.dimension_count,
 * which llama.cpp derives). */
static enum hm_err write_meta_qwen2(struct hm_ctx *ctx, struct model *m, struct fmt_gguf_writer *w)
{
	const struct fmt_hf_config *c = &m->cfg;
	enum hm_err err;
	char k[96];
	double eps = fmt_hf_num_or(c->rms_norm_eps, 1e-6);
	if ((err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "block_count"), (uint32_t)m->n_layer)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "context_length"), (uint32_t)m->ctx_len)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "embedding_length"), (uint32_t)m->dim)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "feed_forward_length"), (uint32_t)m->n_ff)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.head_count"), (uint32_t)m->n_head)))
		return err;
	if (c->n_kv_head.has &&
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.head_count_kv"), (uint32_t)m->n_kv)))
		return err;
	if (c->rope_theta.has &&
	    (err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "rope.freq_base"), (float)c->rope_theta.v)))
		return err;
	if ((err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "attention.layer_norm_rms_epsilon"), (float)eps)))
		return err;
	if (c->head_dim.has &&
	    ((err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.key_length"), (uint32_t)m->head_dim)) ||
	     (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.value_length"), (uint32_t)m->head_dim))))
		return err;
	if (m->n_expert &&
	    ((err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "expert_count"), (uint32_t)m->n_expert)) ||
	     (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "expert_used_count"), (uint32_t)m->n_used)) ||
	     (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "expert_feed_forward_length"), (uint32_t)m->n_ff_exp))))
		return err;
	if (c->rope == FMT_HF_ROPE_YARN && c->rope_factor.has) {
		double f = c->rope_factor.v, orig = c->rope_original_max.v;
		if (!c->rope_original_max.has)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json: yarn rope_scaling needs"
				       " original_max_position_embeddings");
		if ((err = fmt_gguf_writer_str(w, akey(k, sizeof(k), m, "rope.scaling.type"), "yarn")) ||
		    (err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "rope.scaling.factor"), (float)f)) ||
		    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "rope.scaling.original_context_length"),
					       (uint32_t)orig)))
			return err;
	}
	return HM_OK;
}

/* gemma2 / gemma3: what convert_hf_to_gguf.py's Gemma2Model / Gemma3Model
 * write. Gemma 2 needs head_dim, the soft-capping values and sliding_window
 * in config.json; Gemma 3 has defaults for most. */
static enum hm_err write_meta_gemma(struct hm_ctx *ctx, struct model *m, struct fmt_gguf_writer *w)
{
	const struct fmt_hf_config *c = &m->cfg;
	enum hm_err err;
	char k[96];
	double eps = fmt_hf_num_or(c->rms_norm_eps, 1e-6), theta = fmt_hf_num_or(c->rope_theta, 1e6);
	double acap = fmt_hf_num_or(c->attn_logit_softcapping, 0), fcap = fmt_hf_num_or(c->final_logit_softcapping, 0);
	uint32_t win = c->sliding_window.v, pattern = c->sliding_window_pattern.has ? c->sliding_window_pattern.v : 6;
	int g2 = m->gemma == 2;
	if (g2 && (!c->head_dim.has || !c->attn_logit_softcapping.has || !c->final_logit_softcapping.has ||
		   !c->sliding_window.has))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json: Gemma 2 needs head_dim, attn_logit_softcapping,"
			       " final_logit_softcapping and sliding_window");
	if ((err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "context_length"), (uint32_t)m->ctx_len)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "embedding_length"), (uint32_t)m->dim)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "block_count"), (uint32_t)m->n_layer)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "feed_forward_length"), (uint32_t)m->n_ff)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.head_count"), (uint32_t)m->n_head)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.head_count_kv"), (uint32_t)m->n_kv)) ||
	    (err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "attention.layer_norm_rms_epsilon"), (float)eps)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.key_length"), (uint32_t)m->head_dim)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.value_length"), (uint32_t)m->head_dim)))
		return err;
	if (g2) {
		if ((err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "attn_logit_softcapping"), (float)acap)) ||
		    (err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "final_logit_softcapping"), (float)fcap)) ||
		    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.sliding_window"), (uint32_t)win)))
			return err;
		return HM_OK;
	}
	if ((err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "rope.freq_base"), (float)theta)))
		return err;
	if (c->rope_local_base_freq.has &&
	    (err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "rope.freq_base_swa"), (float)c->rope_local_base_freq.v)))
		return err;
	if (fcap != 0 &&
	    (err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "final_logit_softcapping"), (float)fcap)))
		return err;
	if (pattern != 1 && c->sliding_window.has &&
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.sliding_window"), (uint32_t)win)))
		return err;
	if (c->rope == FMT_HF_ROPE_LINEAR && c->rope_factor.has &&
	    ((err = fmt_gguf_writer_str(w, akey(k, sizeof(k), m, "rope.scaling.type"), "linear")) ||
	     (err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "rope.scaling.factor"), (float)c->rope_factor.v))))
		return err;
	return HM_OK;
}

/* phi3: what convert_hf_to_gguf.py's Phi3MiniModel writes. */
static enum hm_err write_meta_phi3(struct hm_ctx *ctx, struct model *m, struct fmt_gguf_writer *w)
{
	const struct fmt_hf_config *c = &m->cfg;
	enum hm_err err;
	char k[96];
	double eps = fmt_hf_num_or(c->rms_norm_eps, 1e-5), theta = fmt_hf_num_or(c->rope_theta, 10000), rot;
	double orig = c->original_max_position_embeddings.has ? c->original_max_position_embeddings.v
		      : c->rope_original_max.v;
	uint32_t win = c->sliding_window.v;
	if (!c->original_max_position_embeddings.has && !c->rope_original_max.has)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json: Phi-3 needs original_max_position_embeddings");
	if (!(rot = (double)phi3_rope_dims(m)))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "config.json: partial_rotary_factor does not give an even number of"
			       " rotary dims from 2 to head_dim");
	if ((err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "context_length"), (uint32_t)m->ctx_len)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "rope.scaling.original_context_length"), (uint32_t)orig)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "embedding_length"), (uint32_t)m->dim)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "feed_forward_length"), (uint32_t)m->n_ff)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "block_count"), (uint32_t)m->n_layer)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.head_count"), (uint32_t)m->n_head)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.head_count_kv"), (uint32_t)m->n_kv)) ||
	    (err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "attention.layer_norm_rms_epsilon"), (float)eps)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "rope.dimension_count"), (uint32_t)rot)) ||
	    (err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "rope.freq_base"), (float)theta)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.sliding_window"), (uint32_t)win)))
		return err;
	if (m->rope_long_short) {
		double scale = (double)m->ctx_len / orig, af = scale > 1 ? sqrt(1 + log(scale) / log(orig)) : 1.0;
		if ((err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "rope.scaling.attn_factor"), (float)af)))
			return err;
	}
	return HM_OK;
}

static enum hm_err write_meta(struct hm_ctx *ctx, const struct conv_source *src, struct model *m,
			      const struct conv_options *opt, struct fmt_gguf_writer *w, struct conv_result *res)
{
	const struct fmt_hf_config *c = &m->cfg;
	enum hm_err err;
	double eps = fmt_hf_num_or(c->rms_norm_eps, 1e-5);
	char name[256], k[96];
	const char *label = src->label ? src->label : "model", *slash = strrchr(label, '/');

	snprintf(name, sizeof(name), "%s", opt->name ? opt->name : slash && slash[1] ? slash + 1 : label);
	if ((err = fmt_gguf_writer_str(w, "general.architecture", m->arch)) ||
	    (err = fmt_gguf_writer_str(w, "general.type", "model")) ||
	    (err = fmt_gguf_writer_str(w, "general.name", name)))
		return err;
	if (m->neox || m->gemma || m->phi3) {
		if ((err = (m->gemma ? write_meta_gemma : m->phi3 ? write_meta_phi3 : write_meta_qwen2)(ctx, m, w)) ||
		    (err = fmt_gguf_writer_u32(w, "general.file_type", file_type(opt->type))) ||
		    (err = fmt_gguf_writer_u32(w, "general.quantization_version", 2)))
			return err;
		return conv_write_vocab(ctx, src, c, m->n_vocab, w, res);
	}
	if ((err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "block_count"), (uint32_t)m->n_layer)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "context_length"), (uint32_t)m->ctx_len)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "embedding_length"), (uint32_t)m->dim)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "feed_forward_length"), (uint32_t)m->n_ff)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.head_count"), (uint32_t)m->n_head)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.head_count_kv"), (uint32_t)m->n_kv)))
		return err;
	if (c->rope_theta.has &&
	    (err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "rope.freq_base"), (float)c->rope_theta.v)))
		return err;
	if ((err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "attention.layer_norm_rms_epsilon"), (float)eps)))
		return err;
	if (c->head_dim.has &&
	    ((err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.key_length"), (uint32_t)m->head_dim)) ||
	     (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "attention.value_length"), (uint32_t)m->head_dim))))
		return err;
	if ((err = fmt_gguf_writer_u32(w, "general.file_type", file_type(opt->type))) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "vocab_size"), (uint32_t)m->n_vocab)) ||
	    (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "rope.dimension_count"), (uint32_t)m->head_dim)))
		return err;
	if (c->rope == FMT_HF_ROPE_LINEAR) {
		double f = fmt_hf_num_or(c->rope_factor, 1);
		if ((err = fmt_gguf_writer_str(w, akey(k, sizeof(k), m, "rope.scaling.type"), "linear")) ||
		    (err = fmt_gguf_writer_f32(w, akey(k, sizeof(k), m, "rope.scaling.factor"), (float)f)))
			return err;
	} else if (c->rope != FMT_HF_ROPE_NONE && c->rope != FMT_HF_ROPE_LLAMA3) {
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "rope_scaling type '%.32s' is not supported", c->rope_type_name);
	}
	if (m->n_expert &&
	    ((err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "expert_count"), (uint32_t)m->n_expert)) ||
	     (err = fmt_gguf_writer_u32(w, akey(k, sizeof(k), m, "expert_used_count"), (uint32_t)m->n_used))))
		return err;
	if ((err = fmt_gguf_writer_u32(w, "general.quantization_version", 2)))
		return err;
	return conv_write_vocab(ctx, src, c, m->n_vocab, w, res);
}

/* ---- the streaming passes ---- */

/* A contiguous run of output elements of one tensor, in file order. */
struct chunk {
	size_t ti;
	uint64_t e0, e1;
};

struct pass {
	struct model *m;
	const struct chunk *c;
	unsigned char *out;          /* the chunk's output bytes */
	float *scratch;              /* 2 * PIECE_ELEMS floats per worker */
	double *max_err;             /* per worker */
	int *bad;                    /* per worker: a mismatch was seen */
	uint64_t *bad_elem;          /* per worker: the first one's element */
	uint64_t flip;               /* tests: byte of the last tensor's output to damage (UINT64_MAX: none) */
};

static inline uint64_t src_row(const struct plan *p, uint64_t r)
{
	if (!p->perm_heads)
		return r;
	/* GGUF row 2j+s of a head is HF row s*hd/2+j of that head */
	uint64_t hd = p->nrows / p->perm_heads, h = r / hd, i = r % hd;
	return h * hd + (i & 1) * (hd / 2) + i / 2;
}

static inline size_t dtype_size(enum fmt_dtype d)
{
	return d == FMT_F32 ? 4 : 2;
}

/* Loads output elements [a, b) of p's source (with the permutation) as floats. */
static void load_src(const struct plan *p, uint64_t a, uint64_t b, float *x)
{
	size_t es = dtype_size(p->dtype);
	while (a < b) {
		uint64_t r = a / p->rowlen, c = a % p->rowlen, n = p->rowlen - c;
		if (n > b - a)
			n = b - a;
		const unsigned char *src = p->parts ? p->parts[r / p->part_rows] + ((r % p->part_rows) * p->rowlen + c) * es
						    : p->data + (src_row(p, r) * p->rowlen + c) * es;
		conv_load_f32(src, p->dtype, (size_t)n, x);
		for (uint64_t i = 0; p->add_one && i < n; i++)
			x[i] = p->dtype == FMT_BF16 ? fmt_bf16_to_f32(fmt_f32_to_bf16(x[i] + 1.0f))
			       : p->dtype == FMT_F16 ? fmt_f16_to_f32(fmt_f32_to_f16(x[i] + 1.0f)) : x[i] + 1.0f;
		x += n;
		a += n;
	}
}

static uint64_t out_offset(enum conv_out_type t, uint64_t elems)
{
	return elems / fmt_ggml_block_size(t) * fmt_ggml_type_size(t);
}

/* Compares the n output elements at `in` (element a onwards) with the
 * source values x. F32: the values themselves. F16/BF16: read back, each
 * is the source value exactly, or else (not representable) the correctly
 * rounded one by the scalar conversion (F16 is written by F16C, so that is
 * an independent check; BF16 is written by that same scalar conversion).
 * Q8_0/Q4_0: conv_check_quant: the reference quantizer's scale and
 * rounding of every value, and within the block's error bound. y is
 * scratch for n floats. */
static void check_piece(struct pass *ps, const struct plan *p, uint64_t a, size_t n, const float *x, float *y,
			const unsigned char *in, int worker)
{
	double maxe = ps->max_err[worker];
	if (p->type == CONV_OUT_F16 || p->type == CONV_OUT_BF16)
		conv_load_out(p->type, in, n, y);
	/* the common case first: every value came back exactly, bit for bit
	 * (memcmp is the vectorized loop) */
	if (p->type == CONV_OUT_F32 && !memcmp(x, in, n * 4))
		return;
	if ((p->type == CONV_OUT_F16 || p->type == CONV_OUT_BF16) && !memcmp(x, y, n * 4))
		return;
	if (p->type == CONV_OUT_Q8_0 || p->type == CONV_OUT_Q4_0) {
		float worst = 0;
		size_t i = 0;
		if (!conv_check_quant(p->type, x, in, n, y, &worst, &i) && !ps->bad[worker]) {
			ps->bad[worker] = 1;
			ps->bad_elem[worker] = a + i;
		}
		if (worst > maxe)
			maxe = worst;
		ps->max_err[worker] = maxe;
		return;
	}
	if (p->type == CONV_OUT_F32)
		memcpy(y, in, n * 4);
	for (size_t i = 0; i < n; i++) {
		int ok;
		if (p->type == CONV_OUT_F32) {
			ok = !memcmp(&x[i], &y[i], 4);
		} else {
			/* exact round trip, or else the correctly rounded value */
			uint16_t got = (uint16_t)(in[2 * i] | in[2 * i + 1] << 8);
			ok = !memcmp(&x[i], &y[i], 4) || (isnan(x[i]) && isnan(y[i])) ||
			     got == (p->type == CONV_OUT_F16 ? fmt_f32_to_f16(x[i]) : fmt_f32_to_bf16(x[i]));
		}
		if (!ok) {
			if (!ps->bad[worker]) {
				ps->bad[worker] = 1;
				ps->bad_elem[worker] = a + i;
			}
			continue;
		}
		if (isfinite(x[i]) && fabs((double)x[i] - (double)y[i]) > maxe)
			maxe = fabs((double)x[i] - (double)y[i]);
	}
	ps->max_err[worker] = maxe;
}

/* Converts one piece of the chunk into the output buffer and checks it
 * there, while the source values are still in the cache: what is written
 * is what was checked. */
static void task_convert(void *arg, size_t task, int worker)
{
	struct pass *ps = arg;
	const struct plan *p = &ps->m->t[ps->c->ti];
	uint64_t a = ps->c->e0 + (uint64_t)task * PIECE_ELEMS, b = a + PIECE_ELEMS;
	float *x = ps->scratch + (size_t)worker * 2 * PIECE_ELEMS, *y = x + PIECE_ELEMS;
	unsigned char *o;
	if (b > ps->c->e1)
		b = ps->c->e1;
	o = ps->out + out_offset(p->type, a - ps->c->e0);
	load_src(p, a, b, x);
	conv_store(p->type, x, (size_t)(b - a), o);
	if (ps->flip != UINT64_MAX && p == &ps->m->t[ps->m->n - 1]) {
		uint64_t lo = out_offset(p->type, a), hi = out_offset(p->type, b);
		if (ps->flip >= lo && ps->flip < hi)
			o[ps->flip - lo] ^= 1;
	}
	check_piece(ps, p, a, (size_t)(b - a), x, y, o, worker);
}

/* Builds the list of chunks over every tensor in file order. */
static enum hm_err make_chunks(struct hm_ctx *ctx, const struct model *m, struct chunk **out, size_t *n)
{
	size_t cnt = 0, k = 0;
	for (size_t i = 0; i < m->n; i++)
		cnt += (size_t)((m->t[i].nelem + CHUNK_ELEMS - 1) / CHUNK_ELEMS);
	*out = calloc(cnt ? cnt : 1, sizeof(**out));
	if (!*out)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < m->n; i++)
		for (uint64_t e = 0; e < m->t[i].nelem; e += CHUNK_ELEMS) {
			(*out)[k].ti = i;
			(*out)[k].e0 = e;
			(*out)[k].e1 = e + CHUNK_ELEMS < m->t[i].nelem ? e + CHUNK_ELEMS : m->t[i].nelem;
			k++;
		}
	*n = k;
	return HM_OK;
}

static size_t ntasks(const struct chunk *c)
{
	return (size_t)((c->e1 - c->e0 + PIECE_ELEMS - 1) / PIECE_ELEMS);
}

/* Gives back the pages of [p, p+n) in a read-only file mapping (that starts
 * at base): they stay in the page cache but no longer count in this
 * process's memory. Faults map whole large folios (ext4/xfs page cache),
 * which reach back over what was dropped before: DROP_BACK bytes behind p
 * are dropped again. */
#define DROP_BACK (4u << 20)
static void drop_pages(const unsigned char *base, const unsigned char *p, uint64_t n)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint64_t back = (uint64_t)(p - base) < DROP_BACK ? (uint64_t)(p - base) : DROP_BACK;
	p -= back;
	n += back;
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)(pg - 1), b = ((uintptr_t)p + n + (uintptr_t)pg - 1) & ~(uintptr_t)(pg - 1);
	if (n)
		madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Drops the source pages of a finished chunk (the whole tensor for a
 * permuted one, whose rows are read out of order). */
static void drop_src(const struct plan *p, const struct chunk *c)
{
	size_t es = dtype_size(p->dtype);
	if (!p->map_base)
		return;
	if (!p->perm_heads)
		drop_pages(p->map_base, p->data + c->e0 * es, (c->e1 - c->e0) * es);
	else if (c->e1 == p->nelem)
		drop_pages(p->map_base, p->data, p->nelem * es);
}

static void progress(struct hm_ctx *ctx, const char *what, uint64_t done, uint64_t total, double t0)
{
	struct hm_event ev = {0};
	double dt = util_now() - t0;
	ev.kind = HM_EV_PROGRESS;
	ev.name = what;
	ev.done = done;
	ev.total = total;
	ev.rate = dt > 0 ? (double)done / dt : 0;
	hm_emit(ctx, &ev);
}

/* Per-worker results of the in-line check. */
struct check_state {
	int nw;
	double *max_err;
	int *bad;
	uint64_t *bad_elem;
};

static enum hm_err check_failed(struct hm_ctx *ctx, const struct check_state *cs, const struct plan *p)
{
	for (int i = 0; i < cs->nw; i++)
		if (cs->bad[i]) {
			uint64_t e = cs->bad_elem[i];
			return hm_fail(ctx, HM_ERR_CORRUPT, "check failed: '%s' element %llu (row %llu) does not match"
				       " the source", p->name, (unsigned long long)e, (unsigned long long)(e / p->rowlen));
		}
	return HM_OK;
}

/* The pipeline: chunk k converts (and is checked) on the pool while chunk
 * k-1 is written; the file's pages are handed to the disk as they are
 * written (so the fsync at the end waits for little) and to the hashing
 * thread, which reads them back behind the writer. */
static enum hm_err write_tensors(struct hm_ctx *ctx, struct model *m, struct util_pool *pool,
				 const struct chunk *ch, size_t nch, struct fmt_gguf_writer *w, float *scratch,
				 const struct check_state *cs, uint64_t flip, struct verify_follower *fol)
{
	unsigned char *buf[2] = {NULL, NULL};
	struct pass ps[2];
	enum hm_err err = HM_OK;
	uint64_t total = 0, done = 0, flushed = 0;
	double t0 = util_now();

	for (size_t i = 0; i < m->n; i++)
		total += m->t[i].out_bytes;
	for (int i = 0; i < 2; i++) {
		buf[i] = malloc((size_t)CHUNK_ELEMS * 4);
		memset(&ps[i], 0, sizeof(ps[i]));
		ps[i].m = m;
		ps[i].scratch = scratch;
		ps[i].out = buf[i];
		ps[i].max_err = cs->max_err;
		ps[i].bad = cs->bad;
		ps[i].bad_elem = cs->bad_elem;
		ps[i].flip = flip;
	}
	if (!buf[0] || !buf[1]) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (size_t k = 0; k <= nch; k++) {
		struct pass *cur = &ps[k % 2], *prev = &ps[(k + 1) % 2];
		if (k < nch) {
			cur->c = &ch[k];
			util_pool_start(pool, task_convert, cur, ntasks(&ch[k]));
		}
		if (k > 0) {
			const struct plan *p = &m->t[prev->c->ti];
			uint64_t nb = out_offset(p->type, prev->c->e1 - prev->c->e0);
			if (!err)
				err = fmt_gguf_writer_write(w, prev->out, (size_t)nb);
			if (!err)
				err = fmt_gguf_writer_flush(w, NULL, &flushed);
			if (!err && fol)
				verify_follower_advance(fol, flushed);
			done += nb;
			drop_src(p, prev->c);
		}
		if (k < nch) {
			util_pool_wait(pool);
			if (!err)
				err = check_failed(ctx, cs, &m->t[ch[k].ti]);
		}
		if (!err && hm_cancelled(ctx))
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
		if (err)
			break;
		if ((k & 15) == 0 || k == nch)
			progress(ctx, "convert", done, total, t0);
	}
out:
	free(buf[0]);
	free(buf[1]);
	return err;
}

/* Reads the written file's header back and checks it against the plan:
 * tensor count, names, shapes, types, sizes and the file's length. The
 * values were checked as they were written (task_convert). */
static enum hm_err check_output(struct hm_ctx *ctx, const struct model *m, const char *path, uint64_t written)
{
	struct fmt_gguf *g = NULL;
	enum hm_err err = HM_OK;
	const struct fmt_gguf_kv *kv;

	if (fmt_gguf_open(ctx, path, &g))
		return hm_fail(ctx, HM_ERR_CORRUPT, "the converted file does not read back: %s", ctx->errmsg);
	kv = fmt_gguf_find_kv(g, "general.architecture");
	if (fmt_gguf_tensor_count(g) != m->n || !kv || kv->v.type != FMT_GGUF_STRING ||
	    kv->v.len != strlen(m->arch) || memcmp(kv->v.str, m->arch, kv->v.len)) {
		err = hm_fail(ctx, HM_ERR_CORRUPT, "the converted file has %zu tensors (planned %zu) or no architecture",
			      fmt_gguf_tensor_count(g), m->n);
		goto out;
	}
	for (size_t i = 0; i < m->n; i++) {
		const struct fmt_gguf_tensor *t = fmt_gguf_tensor(g, i);
		const struct plan *p = &m->t[i];
		if (strcmp(t->name, p->name) || t->ndim != p->ndim || t->type != (uint32_t)p->type ||
		    memcmp(t->ne, p->ne, sizeof(t->ne)) || t->nbytes != p->out_bytes) {
			err = hm_fail(ctx, HM_ERR_CORRUPT, "converted tensor %zu ('%s') does not match the plan ('%s')",
				      i, t->name, p->name);
			goto out;
		}
	}
	if (fmt_gguf_file_size(g) != written)
		err = hm_fail(ctx, HM_ERR_CORRUPT, "the converted file has %llu bytes, %llu were written",
			      (unsigned long long)fmt_gguf_file_size(g), (unsigned long long)written);
out:
	fmt_gguf_close(g);
	return err;
}

static enum hm_err open_weights(struct hm_ctx *ctx, const struct conv_source *src, struct model *m)
{
	char path[PATH_MAX];
	enum hm_err err;
	ctx->errmsg[0] = '\0';
	err = src->resolve(ctx, src->ud, "model.safetensors.index.json", path, sizeof(path));
	if (!err)
		return fmt_st_open_index(ctx, path, src->resolve, src->ud, &m->set);
	if (err != HM_ERR_NOT_FOUND)
		return err;
	err = src->resolve(ctx, src->ud, "model.safetensors", path, sizeof(path));
	if (!err)
		return fmt_st_open_single(ctx, path, &m->set);
	if (err != HM_ERR_NOT_FOUND)
		return err;
	/* PyTorch checkpoints only when there are no safetensors (as llama.cpp) */
	err = src->resolve(ctx, src->ud, "pytorch_model.bin.index.json", path, sizeof(path));
	if (!err)
		return fmt_pt_map_index(ctx, path, src->resolve, src->ud, &m->set);
	if (err != HM_ERR_NOT_FOUND)
		return err;
	err = src->resolve(ctx, src->ud, "pytorch_model.bin", path, sizeof(path));
	if (!err)
		return fmt_pt_map_single(ctx, path, &m->set);
	if (err != HM_ERR_NOT_FOUND)
		return err;
	return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s' has no model.safetensors, model.safetensors.index.json,"
		       " pytorch_model.bin or pytorch_model.bin.index.json", src->label);
}

static void advise_sequential(const struct model *m)
{
	for (size_t s = 0; s < fmt_st_set_nshards(m->set); s++) {
		const struct fmt_st *st = fmt_st_set_shard(m->set, s);
		if (fmt_st_count(st)) {
			const struct fmt_st_tensor *t = fmt_st_tensor(st, 0);
			madvise((void *)(uintptr_t)(t->data - t->file_offset), (size_t)fmt_st_file_size(st),
				MADV_SEQUENTIAL);
		}
	}
}

/* The worker pool, its scratch space and the check's per-worker state. */
static enum hm_err start_pool(struct hm_ctx *ctx, int threads, struct util_pool **pool, float **scratch,
			      struct check_state *cs)
{
	if (threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		threads = n > 0 ? (int)n : 1;
	}
	if (threads > 256)
		threads = 256;
	/* the caller's thread works too: threads - 1 workers, plus one slot */
	if (!(*pool = util_pool_new(threads > 1 ? threads : 2)) ||
	    !(*scratch = malloc((size_t)(util_pool_size(*pool)) * 2 * PIECE_ELEMS * sizeof(float))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	cs->nw = util_pool_size(*pool);
	cs->max_err = calloc((size_t)cs->nw, sizeof(double));
	cs->bad = calloc((size_t)cs->nw, sizeof(int));
	cs->bad_elem = calloc((size_t)cs->nw, sizeof(uint64_t));
	if (!cs->max_err || !cs->bad || !cs->bad_elem)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	return HM_OK;
}

/* Syncs the directory of path (after the rename into it). */
static enum hm_err sync_parent(struct hm_ctx *ctx, const char *path)
{
	char *dir = util_strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	if (dir && util_fsync_dir(slash ? dir : ".") < 0) {
		free(dir);
		return hm_fail(ctx, HM_ERR_IO, "cannot sync the directory of '%s': %s", path, strerror(errno));
	}
	free(dir);
	return HM_OK;
}

enum hm_err conv_to_gguf(struct hm_ctx *ctx, const struct conv_source *src, const struct conv_options *opt,
			 const char *out_path, struct conv_result *res)
{
	struct model m = {0};
	struct fmt_gguf_writer *w = NULL;
	struct util_pool *pool = NULL;
	struct verify_follower *fol = NULL;
	struct chunk *ch = NULL;
	struct check_state cs = {0};
	size_t nch = 0;
	float *scratch = NULL;
	char *tmp = NULL;
	enum hm_err err;
	int fd;
	uint64_t flip = UINT64_MAX, written = 0;
	double t0 = util_now(), t1;

	memset(res, 0, sizeof(*res));
	if ((unsigned)opt->type >= CONV_TYPE__COUNT)
		return hm_fail(ctx, HM_ERR_USAGE, "unknown conversion type");
	if ((err = conv_read_config(ctx, src, &m.cfg)) || (err = read_config(ctx, &m, res)) ||
	    (err = open_weights(ctx, src, &m)) || (err = build_plan(ctx, &m, opt, res)) ||
	    (err = make_chunks(ctx, &m, &ch, &nch)))
		goto out;
	if ((err = start_pool(ctx, opt->threads, &pool, &scratch, &cs)))
		goto out;
	if (!(tmp = util_asprintf("%s.unverified-%ld", out_path, (long)getpid()))) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (opt->fault_flip) {
		if (!m.n || opt->fault_flip > m.t[m.n - 1].out_bytes) {
			err = hm_fail(ctx, HM_ERR_USAGE, "fault_flip %llu is past the last tensor's bytes",
				      (unsigned long long)opt->fault_flip);
			goto out;
		}
		flip = m.t[m.n - 1].out_bytes - opt->fault_flip;
	}
	if ((err = fmt_gguf_writer_new(ctx, tmp, &w)) || (err = write_meta(ctx, src, &m, opt, w, res)))
		goto out;
	for (size_t i = 0; i < m.n; i++)
		if ((err = fmt_gguf_writer_add_tensor(w, m.t[i].name, m.t[i].ndim, m.t[i].ne, m.t[i].type)))
			goto out;
	if (!opt->no_sha256) {
		if ((err = fmt_gguf_writer_flush(w, &fd, NULL)))
			goto out;
		if (!(fol = verify_follower_start(fd))) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "cannot start the hashing thread");
			goto out;
		}
	}
	advise_sequential(&m);
	if ((err = write_tensors(ctx, &m, pool, ch, nch, w, scratch, &cs, flip, fol)))
		goto out;
	if ((err = fmt_gguf_writer_write(w, "", 0)) || (err = fmt_gguf_writer_flush(w, NULL, &written)))
		goto out;
	if (fol)
		verify_follower_advance(fol, written);
	/* the fsync runs while the hashing thread catches up */
	if ((err = fmt_gguf_writer_finish(w)))
		goto out;
	fmt_gguf_writer_free(w);
	w = NULL;
	t1 = util_now();
	res->seconds_convert = t1 - t0;
	err = check_output(ctx, &m, tmp, written);
	if (!err && fol) {
		err = verify_follower_finish(ctx, fol, written, res->sha256);
		fol = NULL;
	}
	res->seconds_check = util_now() - t1;
	if (err)
		goto out;
	res->size = written;
	for (int i = 0; i < cs.nw; i++)
		res->max_abs_err = cs.max_err[i] > res->max_abs_err ? cs.max_err[i] : res->max_abs_err;
	if (rename(tmp, out_path) < 0) {
		err = hm_fail(ctx, errno == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO, "cannot rename to '%s': %s", out_path,
			      strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	err = sync_parent(ctx, out_path);
out:
	verify_follower_abort(fol);
	fmt_gguf_writer_free(w);
	if (tmp)
		unlink(tmp);
	free(tmp);
	util_pool_free(pool);
	free(scratch);
	free(cs.max_err);
	free(cs.bad);
	free(cs.bad_elem);
	free(ch);
	fmt_st_set_close(m.set);
	fmt_hf_config_release(&m.cfg);
	for (size_t i = 0; m.t && i < m.n; i++)
		free(m.t[i].parts);
	free(m.t);
	free(m.rope_freqs);
	free(m.rope_long_short);
	return err;
}
