/* hfdir.c - config.json and tokenizer_config.json of a Hugging Face model
 * directory into checked structs (see hfdir.h): one reader for convert/ and
 * engine/. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hfdir.h"
#include "../util/util.h"

/* What a field's reader needs: the context, the file's name, the object. */
struct rd {
	struct hm_ctx *ctx;
	const char *where;
	json_t *obj;
	const char *prefix; /* "" or "rope_scaling." */
};

static json_t *field(const struct rd *r, const char *key)
{
	json_t *j = json_object_get(r->obj, key);
	return json_is_null(j) ? NULL : j;
}

static enum hm_err bad(const struct rd *r, const char *key, const char *what)
{
	return hm_fail(r->ctx, HM_ERR_BAD_INPUT, "'%s': '%s%s' %s", r->where, r->prefix, key, what);
}

/* An integer lo..hi (an integral real such as 4096.0 counts). */
static enum hm_err get_u32(const struct rd *r, const char *key, uint32_t lo, uint32_t hi, struct fmt_hf_u32 *out)
{
	json_t *j = field(r, key);
	double v;
	out->has = 0;
	out->v = 0;
	if (!j)
		return HM_OK;
	if (!json_is_number(j))
		return bad(r, key, "is not an integer");
	v = json_number_value(j);
	if (v != floor(v))
		return bad(r, key, "is not an integer");
	if (v < lo || v > hi)
		return hm_fail(r->ctx, HM_ERR_BAD_INPUT, "'%s': '%s%s' = %.15g is out of range (%u..%u)", r->where,
			       r->prefix, key, v, lo, hi);
	out->has = 1;
	out->v = (uint32_t)v;
	return HM_OK;
}

static enum hm_err need_u32(const struct rd *r, const char *key, uint32_t *out)
{
	struct fmt_hf_u32 u;
	enum hm_err err = get_u32(r, key, 1, FMT_HF_MAX_SIZE, &u);
	if (err)
		return err;
	if (!u.has)
		return hm_fail(r->ctx, HM_ERR_BAD_INPUT, "'%s': config.json has no '%s'", r->where, key);
	*out = u.v;
	return HM_OK;
}

/* A finite number; lo_open: v > lo, else v >= lo; hi_open: v < hi, else v <= hi. */
static enum hm_err get_num(const struct rd *r, const char *key, double lo, int lo_open, double hi, int hi_open,
			   struct fmt_hf_num *out)
{
	json_t *j = field(r, key);
	double v;
	char what[96];
	out->has = 0;
	out->v = 0;
	if (!j)
		return HM_OK;
	if (!json_is_number(j))
		return bad(r, key, "is not a number");
	v = json_number_value(j);
	if (!(lo_open ? v > lo : v >= lo) || !(hi_open ? v < hi : v <= hi)) {
		snprintf(what, sizeof(what), "= %g is out of range (%s %g, %s %g)", v, lo_open ? "above" : "from", lo,
			 hi_open ? "below" : "up to", hi);
		return bad(r, key, what);
	}
	out->has = 1;
	out->v = v;
	return HM_OK;
}

/* -1 absent, else 0/1. */
static enum hm_err get_bool(const struct rd *r, const char *key, int *out)
{
	json_t *j = field(r, key);
	*out = -1;
	if (!j)
		return HM_OK;
	if (!json_is_boolean(j))
		return bad(r, key, "is not true or false");
	*out = json_is_true(j);
	return HM_OK;
}

/* A short string into buf; "" when absent. */
static enum hm_err get_name(const struct rd *r, const char *key, char *buf, size_t cap)
{
	json_t *j = field(r, key);
	buf[0] = 0;
	if (!j)
		return HM_OK;
	if (!json_is_string(j))
		return bad(r, key, "is not a string");
	snprintf(buf, cap, "%s", json_string_value(j));
	return HM_OK;
}

/* An id, or the first of a list of ids: -1 when absent. */
static enum hm_err get_id(const struct rd *r, const char *key, int64_t *out)
{
	json_t *j = field(r, key);
	*out = -1;
	if (json_is_array(j))
		j = json_array_size(j) ? json_array_get(j, 0) : NULL;
	if (!j || json_is_null(j))
		return HM_OK;
	if (!json_is_integer(j))
		return bad(r, key, "is not a token id");
	/* -1 stands for none in some configs */
	if (json_integer_value(j) >= 0 && json_integer_value(j) <= (json_int_t)FMT_HF_MAX_SIZE)
		*out = (int64_t)json_integer_value(j);
	return HM_OK;
}

static const struct {
	const char *arch, *model_type;
	enum fmt_hf_family family;
} families[] = {
	{"LlamaForCausalLM", "llama", FMT_HF_LLAMA},
	{"LLaMAForCausalLM", NULL, FMT_HF_LLAMA},
	{"MistralForCausalLM", "mistral", FMT_HF_LLAMA},
	{"Qwen2ForCausalLM", "qwen2", FMT_HF_QWEN2},
	{"Qwen3ForCausalLM", "qwen3", FMT_HF_QWEN3},
	{"Qwen3MoeForCausalLM", "qwen3_moe", FMT_HF_QWEN3MOE},
	{"MixtralForCausalLM", "mixtral", FMT_HF_MIXTRAL},
	{"SmolLM3ForCausalLM", "smollm3", FMT_HF_SMOLLM3},
	{"Phi3ForCausalLM", "phi3", FMT_HF_PHI3},
	{"Gemma2ForCausalLM", "gemma2", FMT_HF_GEMMA2},
	{"Gemma3ForCausalLM", "gemma3_text", FMT_HF_GEMMA3},
};

/* The family from architectures[0], else from model_type. */
static enum hm_err read_family(const struct rd *r, struct fmt_hf_config *c)
{
	json_t *a = field(r, "architectures");
	enum hm_err err;
	if (a && (!json_is_array(a) || (json_array_size(a) && !json_is_string(json_array_get(a, 0)))))
		return bad(r, "architectures", "is not a list of names");
	snprintf(c->arch, sizeof(c->arch), "%s", a ? json_string_value(json_array_get(a, 0)) ? json_string_value(json_array_get(a, 0)) : "" : "");
	if ((err = get_name(r, "model_type", c->model_type, sizeof(c->model_type))))
		return err;
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		if (c->arch[0] ? !strcmp(c->arch, families[i].arch)
			       : families[i].model_type && !strcmp(c->model_type, families[i].model_type))
			c->family = families[i].family;
	return HM_OK;
}

/* A list of n_layer flags: map turns each entry into 0/1, or -1 for a bad one. */
static enum hm_err get_layers(const struct rd *r, const char *key, uint32_t n_layer, int (*map)(json_t *),
			      const char *want, unsigned char **out)
{
	json_t *a = field(r, key);
	char what[96];
	*out = NULL;
	if (!a)
		return HM_OK;
	if (!json_is_array(a) || json_array_size(a) != n_layer || n_layer > FMT_HF_MAX_LAYERS) {
		snprintf(what, sizeof(what), "is not a list of %u layers", n_layer);
		return bad(r, key, what);
	}
	if (!(*out = malloc(n_layer ? n_layer : 1)))
		return hm_fail(r->ctx, HM_ERR_NOMEM, "out of memory");
	for (uint32_t l = 0; l < n_layer; l++) {
		int v = map(json_array_get(a, l));
		if (v < 0) {
			free(*out);
			*out = NULL;
			return hm_fail(r->ctx, HM_ERR_BAD_INPUT, "'%s': '%s[%u]' is not %s", r->where, key, l, want);
		}
		(*out)[l] = (unsigned char)v;
	}
	return HM_OK;
}

static int map_layer_type(json_t *v)
{
	const char *s = json_string_value(v);
	return !s ? -1 : !strcmp(s, "sliding_attention") ? 1 : !strcmp(s, "full_attention") ? 0 : -1;
}

static int map_zero_one(json_t *v)
{
	return json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1)
		       ? (int)json_integer_value(v) : -1;
}

/* long_factor / short_factor: positive numbers. */
static enum hm_err get_factors(const struct rd *r, const char *key, float **out, size_t *n)
{
	json_t *a = field(r, key);
	*out = NULL;
	*n = 0;
	if (!a)
		return HM_OK;
	if (!json_is_array(a) || json_array_size(a) > FMT_HF_MAX_FACTORS)
		return bad(r, key, "is not a list of factors");
	if (!(*out = malloc((json_array_size(a) + 1) * sizeof(float))))
		return hm_fail(r->ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < json_array_size(a); i++) {
		json_t *v = json_array_get(a, i);
		if (!json_is_number(v) || !(json_number_value(v) > 0 && json_number_value(v) < 1e6))
			return hm_fail(r->ctx, HM_ERR_BAD_INPUT, "'%s': 'rope_scaling.%s[%zu]' is not a positive number",
				       r->where, key, i);
		(*out)[i] = (float)json_number_value(v);
	}
	*n = json_array_size(a);
	return HM_OK;
}

static enum hm_err read_rope_scaling(const struct rd *top, struct fmt_hf_config *c)
{
	json_t *rs = field(top, "rope_scaling");
	struct rd r = {top->ctx, top->where, rs, "rope_scaling."};
	enum hm_err err;
	c->rope = FMT_HF_ROPE_NONE;
	if (!rs)
		return HM_OK;
	if (!json_is_object(rs))
		return bad(top, "rope_scaling", "is not an object");
	json_t *t = field(&r, "rope_type");
	if (!t)
		t = field(&r, "type");
	if (t && !json_is_string(t))
		return bad(&r, "rope_type", "is not a string");
	snprintf(c->rope_type_name, sizeof(c->rope_type_name), "%s", t ? json_string_value(t) : "");
	if (!t || !strcmp(c->rope_type_name, "default"))
		c->rope = FMT_HF_ROPE_NONE;
	else if (!strcmp(c->rope_type_name, "linear"))
		c->rope = FMT_HF_ROPE_LINEAR;
	else if (!strcmp(c->rope_type_name, "llama3"))
		c->rope = FMT_HF_ROPE_LLAMA3;
	else if (!strcmp(c->rope_type_name, "longrope") || !strcmp(c->rope_type_name, "su"))
		c->rope = FMT_HF_ROPE_LONGROPE;
	else if (!strcmp(c->rope_type_name, "yarn"))
		c->rope = FMT_HF_ROPE_YARN;
	else
		c->rope = FMT_HF_ROPE_OTHER;
	if ((err = get_num(&r, "factor", 0, 1, 1e6, 0, &c->rope_factor)) ||
	    (err = get_num(&r, "low_freq_factor", 0, 1, 1e6, 0, &c->low_freq_factor)) ||
	    (err = get_num(&r, "high_freq_factor", 0, 1, 1e6, 0, &c->high_freq_factor)) ||
	    (err = get_u32(&r, "original_max_position_embeddings", 1, FMT_HF_MAX_SIZE, &c->rope_original_max)) ||
	    (err = get_num(&r, "attention_factor", 0, 1, 100, 1, &c->attention_factor)) ||
	    (err = get_factors(&r, "long_factor", &c->long_factor, &c->n_long)) ||
	    (err = get_factors(&r, "short_factor", &c->short_factor, &c->n_short)))
		return err;
	/* transformers' defaults: low 1, high 4 */
	if (c->rope == FMT_HF_ROPE_LLAMA3 &&
	    !(fmt_hf_num_or(c->high_freq_factor, 4) > fmt_hf_num_or(c->low_freq_factor, 1)))
		return bad(&r, "high_freq_factor", "is not above low_freq_factor");
	return HM_OK;
}

/* Gemma's and SmolLM3's attention fields: soft-capping, sliding window, per-layer kinds. */
static enum hm_err read_attention(const struct rd *r, struct fmt_hf_config *c)
{
	enum hm_err err;
	if ((err = get_name(r, "hidden_activation", c->hidden_activation, sizeof(c->hidden_activation))))
		return err;
	if (!c->hidden_activation[0] &&
	    (err = get_name(r, "hidden_act", c->hidden_activation, sizeof(c->hidden_activation))))
		return err;
	if ((err = get_num(r, "query_pre_attn_scalar", 0, 1, 1e9, 1, &c->query_pre_attn_scalar)) ||
	    (err = get_num(r, "attn_logit_softcapping", 0, 0, 1e6, 1, &c->attn_logit_softcapping)) ||
	    (err = get_num(r, "final_logit_softcapping", 0, 0, 1e6, 1, &c->final_logit_softcapping)) ||
	    (err = get_num(r, "rope_local_base_freq", 0, 1, 1e12, 0, &c->rope_local_base_freq)) ||
	    (err = get_u32(r, "sliding_window", 0, FMT_HF_MAX_SIZE, &c->sliding_window)) ||
	    (err = get_u32(r, "sliding_window_pattern", 1, FMT_HF_MAX_SIZE, &c->sliding_window_pattern)) ||
	    (err = get_layers(r, "layer_types", c->n_layer, map_layer_type, "sliding_attention or full_attention",
			      &c->layer_sliding)) ||
	    (err = get_layers(r, "no_rope_layers", c->n_layer, map_zero_one, "0 or 1", &c->no_rope_layers)))
		return err;
	return HM_OK;
}

static enum hm_err read_experts(const struct rd *r, struct fmt_hf_config *c)
{
	struct fmt_hf_u32 step;
	json_t *dense = field(r, "mlp_only_layers");
	enum hm_err err;
	if ((err = get_u32(r, c->family == FMT_HF_MIXTRAL ? "num_local_experts" : "num_experts", 1, FMT_HF_MAX_SIZE,
			   &c->n_expert)) ||
	    (err = get_u32(r, "num_experts_per_tok", 1, FMT_HF_MAX_SIZE, &c->n_expert_used)) ||
	    (err = get_u32(r, "moe_intermediate_size", 1, FMT_HF_MAX_SIZE, &c->moe_intermediate_size)) ||
	    (err = get_u32(r, "decoder_sparse_step", 1, FMT_HF_MAX_SIZE, &step)) ||
	    (err = get_bool(r, "norm_topk_prob", &c->norm_topk_prob)))
		return err;
	c->decoder_sparse_step = step.has ? step.v : 1;
	if (dense && (!json_is_array(dense) || json_array_size(dense) > FMT_HF_MAX_LAYERS))
		return bad(r, "mlp_only_layers", "is not a list of layers");
	c->n_mlp_only_layers = json_array_size(dense);
	return HM_OK;
}

static enum hm_err read_config(const struct rd *r, struct fmt_hf_config *c)
{
	enum hm_err err;
	if ((err = read_family(r, c)) ||
	    (err = need_u32(r, "hidden_size", &c->hidden_size)) ||
	    (err = need_u32(r, "num_hidden_layers", &c->n_layer)) ||
	    (err = need_u32(r, "num_attention_heads", &c->n_head)) ||
	    (err = get_u32(r, "num_key_value_heads", 1, FMT_HF_MAX_SIZE, &c->n_kv_head)) ||
	    (err = need_u32(r, "intermediate_size", &c->intermediate_size)) ||
	    (err = get_u32(r, "vocab_size", 1, FMT_HF_MAX_SIZE, &c->vocab_size)) ||
	    (err = get_u32(r, "max_position_embeddings", 1, FMT_HF_MAX_SIZE, &c->max_position_embeddings)) ||
	    (err = get_u32(r, "head_dim", 1, FMT_HF_MAX_SIZE, &c->head_dim)) ||
	    (err = get_u32(r, "original_max_position_embeddings", 1, FMT_HF_MAX_SIZE,
			   &c->original_max_position_embeddings)) ||
	    (err = get_num(r, "rms_norm_eps", 0, 1, 1, 1, &c->rms_norm_eps)) ||
	    (err = get_num(r, "rope_theta", 0, 1, 1e12, 0, &c->rope_theta)) ||
	    (err = get_num(r, "partial_rotary_factor", 0, 1, 1, 0, &c->partial_rotary_factor)) ||
	    (err = get_bool(r, "tie_word_embeddings", &c->tie_word_embeddings)) ||
	    (err = get_bool(r, "mlp_bias", &c->mlp_bias)) ||
	    (err = get_id(r, "bos_token_id", &c->bos_token_id)) ||
	    (err = get_id(r, "eos_token_id", &c->eos_token_id)) ||
	    (err = get_id(r, "pad_token_id", &c->pad_token_id)) ||
	    (err = read_rope_scaling(r, c)) || (err = read_attention(r, c)) || (err = read_experts(r, c)))
		return err;
	c->mlp_bias = c->mlp_bias == 1;
	return HM_OK;
}

/* Parses text into a JSON object; where names it in the message. */
static enum hm_err load_object(struct hm_ctx *ctx, const char *text, size_t len, const char *where, json_t **out)
{
	json_error_t je;
	*out = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (!*out || !json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': not a JSON object (line %d: %s)", where, je.line,
			       *je.text ? je.text : "not an object");
	}
	return HM_OK;
}

enum hm_err fmt_hf_config_parse(struct hm_ctx *ctx, const char *text, size_t len, const char *where,
				struct fmt_hf_config *out)
{
	json_t *root = NULL;
	enum hm_err err;
	memset(out, 0, sizeof(*out));
	if (len > FMT_HF_CONFIG_MAX)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': larger than %u bytes", where, FMT_HF_CONFIG_MAX);
	if ((err = load_object(ctx, text, len, where, &root)))
		return err;
	struct rd r = {ctx, where, root, ""};
	err = read_config(&r, out);
	json_decref(root);
	if (err)
		fmt_hf_config_release(out);
	return err;
}

/* Reads path (at most max bytes) into *text. */
static enum hm_err read_text(struct hm_ctx *ctx, const char *path, const char *where, size_t max, char **text,
			     size_t *len)
{
	errno = 0;
	if (util_read_file(path, max, text, len) == 0)
		return HM_OK;
	if (errno == ENOENT)
		return hm_fail(ctx, HM_ERR_NOT_FOUND, "'%s': no such file", where);
	return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': cannot read: %s", where,
		       errno ? strerror(errno) : "larger than the limit");
}

typedef enum hm_err (*parse_fn)(struct hm_ctx *ctx, const char *text, size_t len, const char *where, void *out);

/* Reads path (where: its name in messages, NULL for the path) and parses it. */
static enum hm_err load(struct hm_ctx *ctx, const char *path, const char *where, size_t max, parse_fn parse, void *out)
{
	char *text = NULL;
	size_t len = 0;
	enum hm_err err;
	if (!where)
		where = path;
	if ((err = read_text(ctx, path, where, max, &text, &len)))
		return err;
	err = parse(ctx, text, len, where, out);
	free(text);
	return err;
}

static enum hm_err parse_config(struct hm_ctx *ctx, const char *text, size_t len, const char *where, void *out)
{
	return fmt_hf_config_parse(ctx, text, len, where, out);
}

enum hm_err fmt_hf_config_load(struct hm_ctx *ctx, const char *path, const char *where, struct fmt_hf_config *out)
{
	memset(out, 0, sizeof(*out));
	return load(ctx, path, where, FMT_HF_CONFIG_MAX, parse_config, out);
}

void fmt_hf_config_release(struct fmt_hf_config *c)
{
	if (!c)
		return;
	free(c->long_factor);
	free(c->short_factor);
	free(c->layer_sliding);
	free(c->no_rope_layers);
	c->long_factor = c->short_factor = NULL;
	c->layer_sliding = c->no_rope_layers = NULL;
}

/* ---- tokenizer_config.json ---- */

/* A string of at most max bytes (NULs allowed inside when len_out is set), copied. */
static enum hm_err dup_string(const struct rd *r, const char *key, json_t *j, size_t max, char **out, size_t *len_out)
{
	size_t n = json_string_length(j);
	if (n > max)
		return bad(r, key, "is too long");
	if (!len_out && memchr(json_string_value(j), 0, n))
		return bad(r, key, "holds a NUL byte");
	if (!(*out = malloc(n + 1)))
		return hm_fail(r->ctx, HM_ERR_NOMEM, "out of memory");
	memcpy(*out, json_string_value(j), n);
	(*out)[n] = 0;
	if (len_out)
		*len_out = n;
	return HM_OK;
}

/* A special token: "text" or {"content": "text", ...}. */
static enum hm_err get_token(const struct rd *r, const char *key, char **out)
{
	json_t *j = field(r, key);
	*out = NULL;
	if (json_is_object(j))
		j = json_object_get(j, "content");
	if (!j || json_is_null(j))
		return HM_OK;
	if (!json_is_string(j))
		return bad(r, key, "is not a string or {\"content\": string}");
	return dup_string(r, key, j, FMT_HF_MAX_TOKEN, out, NULL);
}

static enum hm_err get_template(const struct rd *r, struct fmt_hf_tokcfg *t)
{
	json_t *ct = field(r, "chat_template"), *e;
	size_t i;
	if (!ct)
		return HM_OK;
	if (json_is_string(ct))
		return dup_string(r, "chat_template", ct, FMT_HF_TOKCFG_MAX, &t->chat_template, &t->chat_template_len);
	if (!json_is_array(ct))
		return bad(r, "chat_template", "is not a string or a list of {name, template}");
	json_array_foreach (ct, i, e) {
		const char *name = json_string_value(json_object_get(e, "name"));
		json_t *tpl = json_object_get(e, "template");
		if (!name || !json_is_string(tpl))
			return hm_fail(r->ctx, HM_ERR_BAD_INPUT, "'%s': 'chat_template[%zu]' is not {name, template}",
				       r->where, i);
		if (!strcmp(name, "default") && !t->chat_template)
			return dup_string(r, "chat_template", tpl, FMT_HF_TOKCFG_MAX, &t->chat_template,
					  &t->chat_template_len);
	}
	return HM_OK;
}

enum hm_err fmt_hf_tokcfg_parse(struct hm_ctx *ctx, const char *text, size_t len, const char *where,
				struct fmt_hf_tokcfg *out)
{
	json_t *root = NULL;
	enum hm_err err;
	memset(out, 0, sizeof(*out));
	out->add_bos = out->add_eos = -1;
	if (len > FMT_HF_TOKCFG_MAX)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': larger than %u bytes", where, FMT_HF_TOKCFG_MAX);
	if ((err = load_object(ctx, text, len, where, &root)))
		return err;
	struct rd r = {ctx, where, root, ""};
	if (!(err = get_token(&r, "bos_token", &out->bos)) && !(err = get_token(&r, "eos_token", &out->eos)) &&
	    !(err = get_token(&r, "unk_token", &out->unk)) && !(err = get_token(&r, "sep_token", &out->sep)) &&
	    !(err = get_token(&r, "pad_token", &out->pad)) && !(err = get_bool(&r, "add_bos_token", &out->add_bos)))
		if (!(err = get_bool(&r, "add_eos_token", &out->add_eos)))
			err = get_template(&r, out);
	json_decref(root);
	if (err)
		fmt_hf_tokcfg_release(out);
	return err;
}

static enum hm_err parse_tokcfg(struct hm_ctx *ctx, const char *text, size_t len, const char *where, void *out)
{
	return fmt_hf_tokcfg_parse(ctx, text, len, where, out);
}

enum hm_err fmt_hf_tokcfg_load(struct hm_ctx *ctx, const char *path, const char *where, struct fmt_hf_tokcfg *out)
{
	memset(out, 0, sizeof(*out));
	out->add_bos = out->add_eos = -1;
	return load(ctx, path, where, FMT_HF_TOKCFG_MAX, parse_tokcfg, out);
}

void fmt_hf_tokcfg_release(struct fmt_hf_tokcfg *t)
{
	if (!t)
		return;
	free(t->bos);
	free(t->eos);
	free(t->unk);
	free(t->sep);
	free(t->pad);
	free(t->chat_template);
	memset(t, 0, sizeof(*t));
	t->add_bos = t->add_eos = -1;
}

/* ---- tokenizer.json's pre-tokenizer ---- */

/* The regexes of the pre-tokenizers llama.cpp names, as tokenizer.json spells them. */
#define RE_LLAMA3 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

void fmt_hf_pre_walk(json_t *pt, void (*fn)(json_t *, void *), void *ud)
{
	const char *type = json_string_value(json_object_get(pt, "type"));
	if (!type)
		return;
	if (!strcmp(type, "Sequence")) {
		json_t *e;
		size_t i;
		json_array_foreach(json_object_get(pt, "pretokenizers"), i, e)
			fmt_hf_pre_walk(e, fn, ud);
		return;
	}
	fn(pt, ud);
}

static void scan_step(json_t *pt, void *ud)
{
	struct fmt_hf_pre *s = ud;
	const char *type = json_string_value(json_object_get(pt, "type"));
	if (!strcmp(type, "ByteLevel")) {
		json_t *ur = json_object_get(pt, "use_regex");
		s->bytelevel = 1;
		s->bytelevel_regex = !ur || json_is_true(ur);
	} else if (!strcmp(type, "Digits")) {
		s->digits = json_is_true(json_object_get(pt, "individual_digits")) ? 1 : 2;
	} else if (!strcmp(type, "Metaspace")) {
		s->metaspace = 1;
	} else if (!strcmp(type, "Split")) {
		s->nsplit++;
		s->regex = json_string_value(json_object_get(json_object_get(pt, "pattern"), "Regex"));
	}
}

void fmt_hf_pre_scan(json_t *pre_tokenizer, struct fmt_hf_pre *out)
{
	memset(out, 0, sizeof(*out));
	fmt_hf_pre_walk(pre_tokenizer, scan_step, out);
	if (out->nsplit == 1 && out->regex && !strcmp(out->regex, RE_LLAMA3))
		out->name = "llama-bpe";
	else if (out->nsplit == 1 && out->regex && !strcmp(out->regex, RE_QWEN2))
		out->name = "qwen2";
	else if (!out->nsplit && out->digits == 1 && out->bytelevel_regex)
		out->name = "smollm";
	else if (!out->nsplit && !out->digits && out->bytelevel_regex)
		out->name = "gpt-2";
	else
		out->name = "default";
}
