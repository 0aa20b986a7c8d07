/* tokenizer-load.c - builds a tokenizer from tokenizer.json (+ tokenizer_config.json)
 * or from GGUF tokenizer.ggml.* metadata. Both are untrusted: every id is
 * range-checked and every size capped before anything is allocated. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "tokenizer-int.h"
#include "../formats/formats.h"
#include "../formats/hfdir.h"
#include "../util/util.h"

#define SP_UTF8 "\xe2\x96\x81"

static struct eng_tok *tok_new(void)
{
	struct eng_tok *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->bos = t->eos = t->unk = -1;
	for (int b = 0; b < 256; b++)
		t->byte_tok[b] = -1;
	return t;
}

static char *dup_bytes(const char *s, size_t n)
{
	char *p = malloc(n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = 0;
	}
	return p;
}

/* Sets token id's text (replacing an earlier one). */
static int set_text(struct eng_tok *t, uint32_t id, const char *s, size_t n)
{
	char *p = dup_bytes(s, n);
	if (!p || n > UINT32_MAX)
		return free(p), -1;
	free(t->text[id]);
	t->text[id] = p;
	t->len[id] = (uint32_t)n;
	return 0;
}

/* Fills holes (ids with no token) with "" so every id has a text. */
static int fill_holes(struct eng_tok *t)
{
	for (uint32_t i = 0; i < t->n; i++) {
		if (t->text[i])
			continue;
		if (!(t->text[i] = calloc(1, 1)))
			return -1;
		t->type[i] = ENG_TOK_UNUSED;
	}
	return 0;
}

/* ---- tokenizer.json ---- */

static const char *jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* A special token of tokenizer_config.json by its text; -1 when absent or unknown. */
static int32_t token_ref(const struct eng_tok *t, const char *s)
{
	return s ? eng_tok_find(t, s, strlen(s)) : -1;
}

/* Reads the pre-tokenizer into split stages; unsupported parts are errors
 * (a silent mismatch would be worse). */
static enum hm_err json_pre(struct hm_ctx *ctx, struct eng_tok *t, json_t *pt, int depth)
{
	const char *type;
	enum hm_err err;
	if (!pt || json_is_null(pt))
		return HM_OK;
	if (depth > 8 || !(type = jstr(pt, "type")))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: malformed pre_tokenizer");
	if (!strcmp(type, "Sequence")) {
		size_t i;
		json_t *e;
		json_array_foreach(json_object_get(pt, "pretokenizers"), i, e)
			if ((err = json_pre(ctx, t, e, depth + 1)))
				return err;
		return HM_OK;
	}
	if (!strcmp(type, "ByteLevel")) {
		json_t *ur = json_object_get(pt, "use_regex");
		t->kind = ENG_TOK_BPE;
		t->add_prefix_space = json_is_true(json_object_get(pt, "add_prefix_space"));
		if (!ur || json_is_true(ur))
			return tok_add_stage(ctx, t, TOK_RE_GPT2, strlen(TOK_RE_GPT2));
		return HM_OK;
	}
	if (!strcmp(type, "Split")) {
		json_t *pat = json_object_get(pt, "pattern");
		const char *behavior = jstr(pt, "behavior");
		const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
		if ((behavior && strcmp(behavior, "Isolated")) || json_is_true(json_object_get(pt, "invert")))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: Split behavior '%s' is not supported",
				       behavior ? behavior : "?");
		if (re)
			return tok_add_stage(ctx, t, re, json_string_length(json_object_get(pat, "Regex")));
		if (lit) {
			char *q = util_asprintf("\\Q%s\\E", lit);
			if (!q)
				return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory");
			err = strstr(lit, "\\E") ? hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: Split string with \\E")
						 : tok_add_stage(ctx, t, q, strlen(q));
			free(q);
			return err;
		}
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: Split without a pattern");
	}
	if (!strcmp(type, "Digits")) {
		const char *re = json_is_true(json_object_get(pt, "individual_digits")) ? "\\p{N}" : "\\p{N}+";
		return tok_add_stage(ctx, t, re, strlen(re));
	}
	if (!strcmp(type, "Metaspace")) {
		const char *scheme = jstr(pt, "prepend_scheme");
		json_t *aps = json_object_get(pt, "add_prefix_space"), *split = json_object_get(pt, "split");
		t->kind = ENG_TOK_SPM;
		if (scheme)
			t->prepend = !strcmp(scheme, "first") ? TOK_PREPEND_FIRST
				     : !strcmp(scheme, "never") ? TOK_PREPEND_NEVER
								: TOK_PREPEND_ALWAYS;
		else
			t->prepend = !aps || json_is_true(aps) ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
		t->meta_split = !split || json_is_true(split);
		return HM_OK;
	}
	return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: pre-tokenizer '%s' is not supported", type);
}

/* The legacy SentencePiece normalizer: Prepend("▁") + Replace(" ", "▁"). */
static void json_normalizer(struct eng_tok *t, json_t *nm, int depth)
{
	const char *type = jstr(nm, "type");
	if (!type || depth > 8)
		return;
	if (!strcmp(type, "Sequence")) {
		size_t i;
		json_t *e;
		json_array_foreach(json_object_get(nm, "normalizers"), i, e)
			json_normalizer(t, e, depth + 1);
	} else if (!strcmp(type, "Prepend")) {
		const char *p = jstr(nm, "prepend");
		if (p && !strcmp(p, SP_UTF8)) {
			t->kind = ENG_TOK_SPM;
			t->prepend = TOK_PREPEND_ALWAYS;
		}
	} else if (!strcmp(type, "Replace")) {
		const char *c = jstr(nm, "content");
		if (c && !strcmp(c, SP_UTF8))
			t->kind = ENG_TOK_SPM;
	}
}

/* The BOS token of a TemplateProcessing post-processor ("single" starts
 * with a SpecialToken), or -1. */
static int32_t template_bos(const struct eng_tok *t, json_t *pp, int depth)
{
	const char *type = jstr(pp, "type");
	if (!type || depth > 8)
		return -1;
	if (!strcmp(type, "Sequence")) {
		size_t i;
		json_t *e;
		json_array_foreach(json_object_get(pp, "processors"), i, e) {
			int32_t id = template_bos(t, e, depth + 1);
			if (id >= 0)
				return id;
		}
		return -1;
	}
	if (!strcmp(type, "TemplateProcessing")) {
		json_t *first = json_array_get(json_object_get(pp, "single"), 0);
		const char *s = jstr(json_object_get(first, "SpecialToken"), "id");
		return s ? eng_tok_find(t, s, strlen(s)) : -1;
	}
	return -1;
}

static int json_id(json_t *v, uint32_t *out)
{
	json_int_t i;
	if (!json_is_integer(v))
		return -1;
	i = json_integer_value(v);
	if (i < 0 || i >= (json_int_t)ENG_TOK_MAX_VOCAB)
		return -1;
	*out = (uint32_t)i;
	return 0;
}

static enum hm_err json_merges(struct hm_ctx *ctx, struct eng_tok *t, json_t *merges)
{
	size_t i;
	json_t *e;
	struct util_buf cat = UTIL_BUF_INIT;
	if (!json_is_array(merges))
		return HM_OK;
	if (tok_merges_init(t, json_array_size(merges)))
		return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory for merges");
	json_array_foreach(merges, i, e) {
		const char *a, *b;
		size_t al, bl;
		int32_t ia, ib, ir;
		if (json_is_string(e)) {
			const char *s = json_string_value(e), *sp;
			size_t sl = json_string_length(e);
			if (!(sp = memchr(s, ' ', sl)))
				goto bad;
			a = s;
			al = (size_t)(sp - s);
			b = sp + 1;
			bl = sl - al - 1;
		} else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
			   json_is_string(json_array_get(e, 1))) {
			a = json_string_value(json_array_get(e, 0));
			al = json_string_length(json_array_get(e, 0));
			b = json_string_value(json_array_get(e, 1));
			bl = json_string_length(json_array_get(e, 1));
		} else {
			goto bad;
		}
		ia = eng_tok_find(t, a, al);
		ib = eng_tok_find(t, b, bl);
		cat.len = 0;
		if (util_buf_add(&cat, a, al) || util_buf_add(&cat, b, bl)) {
			util_buf_release(&cat);
			return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory");
		}
		ir = eng_tok_find(t, cat.buf, cat.len);
		if (ia < 0 || ib < 0 || ir < 0) /* refers to tokens the vocabulary lacks: never applies */
			continue;
		if (tok_merge_add(t, ia, ib, (uint32_t)i, ir)) {
			util_buf_release(&cat);
			return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: merge table full");
		}
	}
	util_buf_release(&cat);
	return HM_OK;
bad:
	util_buf_release(&cat);
	return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: merge %zu is malformed", i);
}

static enum hm_err json_build(struct hm_ctx *ctx, json_t *root, const struct fmt_hf_tokcfg *cfg, struct eng_tok *t)
{
	json_t *model = json_object_get(root, "model"), *vocab, *added, *v, *e;
	const char *key, *type;
	uint8_t *mark = NULL;
	uint32_t n = 0, id = 0;
	size_t i;
	enum hm_err err;
	if (!json_is_object(root) || !json_is_object(model))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: no model object");
	type = jstr(model, "type");
	if (type && strcmp(type, "BPE"))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: model type '%s' is not supported (BPE only)",
			       type);
	vocab = json_object_get(model, "vocab");
	added = json_object_get(root, "added_tokens");
	if (!json_is_object(vocab))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: model.vocab is not an object");
	json_object_foreach(vocab, key, v) {
		if (json_id(v, &id))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: bad id for token '%.40s'", key);
		n = id + 1 > n ? id + 1 : n;
	}
	json_array_foreach(added, i, e) {
		if (json_id(json_object_get(e, "id"), &id) || !json_is_string(json_object_get(e, "content")))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: added token %zu is malformed", i);
		n = id + 1 > n ? id + 1 : n;
	}
	if ((err = tok_alloc(ctx, t, n)))
		return err;
	if (!(mark = calloc(n, 1)))
		return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory");
	json_object_foreach(vocab, key, v) {
		(void)json_id(v, &id);
		if (!t->text[id]) {
			if (set_text(t, id, key, strlen(key)))
				goto nomem;
			t->type[id] = ENG_TOK_NORMAL;
		}
	}
	json_array_foreach(added, i, e) {
		json_t *c = json_object_get(e, "content");
		(void)json_id(json_object_get(e, "id"), &id);
		if (set_text(t, id, json_string_value(c), json_string_length(c)))
			goto nomem;
		t->type[id] = json_is_true(json_object_get(e, "special")) ? ENG_TOK_CONTROL : ENG_TOK_USER_DEFINED;
		mark[id] = 1;
	}
	if (fill_holes(t) || tok_build_vocab_map(t) || tok_build_specials(t, mark))
		goto nomem;
	free(mark);
	mark = NULL;

	json_normalizer(t, json_object_get(root, "normalizer"), 0);
	if ((err = json_pre(ctx, t, json_object_get(root, "pre_tokenizer"), 0)))
		return err;
	t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
	t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
	t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
	if (!t->kind && t->byte_fallback)
		t->kind = ENG_TOK_SPM;
	if (!t->kind)
		return hm_fail(ctx, HM_ERR_BAD_INPUT,
			       "tokenizer.json: neither SentencePiece-style (byte_fallback, Metaspace) nor byte-level BPE");
	if (t->kind == ENG_TOK_BPE && !t->nre)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: byte-level BPE without a pre-tokenizer split");
	if (t->kind == ENG_TOK_SPM && t->nre)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: regex splits with SentencePiece style");
	if ((key = jstr(model, "unk_token")))
		t->unk = eng_tok_find(t, key, strlen(key));
	if (t->kind == ENG_TOK_SPM) {
		tok_find_byte_tokens(t);
		for (int b = 0; b < 256; b++)
			if (t->byte_tok[b] >= 0 && t->type[t->byte_tok[b]] == ENG_TOK_NORMAL)
				t->type[t->byte_tok[b]] = ENG_TOK_BYTE;
		snprintf(t->pre, sizeof(t->pre), "spm");
	} else {
		snprintf(t->pre, sizeof(t->pre), "custom");
	}
	if (t->unk >= 0 && t->type[t->unk] == ENG_TOK_NORMAL)
		t->type[t->unk] = ENG_TOK_UNKNOWN;
	if ((err = json_merges(ctx, t, json_object_get(model, "merges"))))
		return err;

	t->bos = template_bos(t, json_object_get(root, "post_processor"), 0);
	t->add_bos = t->bos >= 0;
	if (cfg) {
		int32_t b = token_ref(t, cfg->bos);
		t->eos = token_ref(t, cfg->eos);
		if (b >= 0)
			t->bos = b;
		if (cfg->add_bos >= 0)
			t->add_bos = cfg->add_bos && t->bos >= 0;
	}
	if (t->bos < 0) {
		static const char *const names[] = {"<s>", "<|begin_of_text|>"};
		for (i = 0; i < 2 && t->bos < 0; i++)
			t->bos = eng_tok_find(t, names[i], strlen(names[i]));
	}
	if (t->eos < 0) {
		static const char *const names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>"};
		for (i = 0; i < 3 && t->eos < 0; i++)
			t->eos = eng_tok_find(t, names[i], strlen(names[i]));
	}
	return HM_OK;
nomem:
	free(mark);
	return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory");
}

/* Names the byte-level pre-tokenizer as llama.cpp does (formats/hfdir, which
 * convert/ names it by too); one no name fits stays "custom". */
static void name_pre(struct eng_tok *t, json_t *root)
{
	struct fmt_hf_pre ps;
	fmt_hf_pre_scan(json_object_get(root, "pre_tokenizer"), &ps);
	if (strcmp(ps.name, "default"))
		snprintf(t->pre, sizeof(t->pre), "%s", ps.name);
}

/* tokenizer.json text with the checked tokenizer_config.json (NULL: none). */
static enum hm_err open_json(struct hm_ctx *ctx, const char *json, size_t len, const struct fmt_hf_tokcfg *cfg,
			     struct eng_tok **out)
{
	json_error_t je;
	json_t *root = NULL;
	struct eng_tok *t = NULL;
	enum hm_err err;
	if (len > ENG_TOK_MAX_FILE)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer: file larger than %u bytes", ENG_TOK_MAX_FILE);
	if (!(root = json_loadb(json, len, JSON_ALLOW_NUL, &je))) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: invalid JSON at line %d: %s", je.line, je.text);
		goto out;
	}
	if (!(t = tok_new())) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory");
		goto out;
	}
	if ((err = json_build(ctx, root, cfg, t)))
		goto out;
	if (t->kind == ENG_TOK_BPE)
		name_pre(t, root);
	*out = t;
	t = NULL;
out:
	eng_tok_free(t);
	json_decref(root);
	return err;
}

enum hm_err eng_tok_open_json_mem(struct hm_ctx *ctx, const char *json, size_t len, const char *config,
				  size_t config_len, struct eng_tok **out)
{
	struct fmt_hf_tokcfg cfg;
	enum hm_err err;
	if (!config)
		return open_json(ctx, json, len, NULL, out);
	if ((err = fmt_hf_tokcfg_parse(ctx, config, config_len, "tokenizer_config.json", &cfg)))
		return err;
	err = open_json(ctx, json, len, &cfg, out);
	fmt_hf_tokcfg_release(&cfg);
	return err;
}

enum hm_err eng_tok_open_json(struct hm_ctx *ctx, const char *json_path, const char *config_path,
			      struct eng_tok **out)
{
	struct fmt_hf_tokcfg cfg;
	char *js = NULL;
	size_t jl = 0;
	enum hm_err err;
	if (util_read_file(json_path, ENG_TOK_MAX_FILE, &js, &jl))
		return hm_fail(ctx, HM_ERR_IO, "cannot read '%s'", json_path);
	if (config_path && (err = fmt_hf_tokcfg_load(ctx, config_path, NULL, &cfg))) {
		free(js);
		return err;
	}
	err = open_json(ctx, js, jl, config_path ? &cfg : NULL, out);
	if (err && ctx->errmsg[0] && strncmp(ctx->errmsg, "tokenizer", 9) == 0) {
		char msg[sizeof(ctx->errmsg)];
		snprintf(msg, sizeof(msg), "%s", ctx->errmsg);
		(void)hm_fail(ctx, err, "'%s': %s", json_path, msg);
	}
	free(js);
	if (config_path)
		fmt_hf_tokcfg_release(&cfg);
	return err;
}

/* ---- GGUF ---- */

static const struct fmt_gguf_value *gguf_get(const struct fmt_gguf *g, const char *key, enum fmt_gguf_vtype type)
{
	const struct fmt_gguf_kv *kv = fmt_gguf_find_kv(g, key);
	return kv && kv->v.type == type ? &kv->v : NULL;
}

/* An integer-valued key as an id below n; -1 when absent or out of range. */
static int32_t gguf_id(const struct fmt_gguf *g, const char *key, uint32_t n)
{
	const struct fmt_gguf_kv *kv = fmt_gguf_find_kv(g, key);
	int64_t v;
	if (!kv)
		return -1;
	switch (kv->v.type) {
	case FMT_GGUF_U8: case FMT_GGUF_U16: case FMT_GGUF_U32: case FMT_GGUF_U64:
		v = kv->v.u > (uint64_t)INT32_MAX ? -1 : (int64_t)kv->v.u;
		break;
	case FMT_GGUF_I8: case FMT_GGUF_I16: case FMT_GGUF_I32: case FMT_GGUF_I64:
		v = kv->v.i;
		break;
	default:
		return -1;
	}
	return v >= 0 && v < (int64_t)n ? (int32_t)v : -1;
}

static int gguf_bool(const struct fmt_gguf *g, const char *key, int dflt)
{
	const struct fmt_gguf_value *v = gguf_get(g, key, FMT_GGUF_BOOL);
	return v ? v->u != 0 : dflt;
}

/* A byte-level BPE vocabulary's pre-tokenizer (by its llama.cpp name) and merges. */
static enum hm_err gguf_bpe(struct hm_ctx *ctx, const struct fmt_gguf_value *pre, const struct fmt_gguf_value *merges,
			    struct eng_tok *t)
{
	struct fmt_gguf_iter it;
	struct fmt_gguf_value e;
	uint32_t i;
	enum hm_err err;
	static const struct {
		const char *name, *re1, *re2;
		int ignore_merges;
	} pres[] = {
		{"default", TOK_RE_GPT2, NULL, 0},   {"gpt-2", TOK_RE_GPT2, NULL, 0},
		{"gpt2", TOK_RE_GPT2, NULL, 0},      {"llama-bpe", TOK_RE_LLAMA3, NULL, 1},
		{"llama3", TOK_RE_LLAMA3, NULL, 1},  {"llama-v3", TOK_RE_LLAMA3, NULL, 1},
		{"qwen2", TOK_RE_QWEN2, NULL, 0},    {"smollm", "\\p{N}", TOK_RE_GPT2, 0},
	};
	size_t k, np = sizeof(pres) / sizeof(pres[0]);
	size_t plen = pre ? pre->len : 7;
	const char *pname = pre ? pre->str : "default";
	for (k = 0; k < np; k++)
		if (strlen(pres[k].name) == plen && !memcmp(pres[k].name, pname, plen))
			break;
	if (k == np)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "gguf: pre-tokenizer '%.*s' is not supported",
			       (int)(plen < 32 ? plen : 32), pname);
	if ((err = tok_add_stage(ctx, t, pres[k].re1, strlen(pres[k].re1))) ||
	    (pres[k].re2 && (err = tok_add_stage(ctx, t, pres[k].re2, strlen(pres[k].re2)))))
		return err;
	t->ignore_merges = pres[k].ignore_merges;
	snprintf(t->pre, sizeof(t->pre), "%s", !strcmp(pres[k].name, "default") ? "gpt-2" : pres[k].name);
	if (!merges || merges->elem != FMT_GGUF_STRING)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "gguf: byte-level tokenizer without tokenizer.ggml.merges");
	if (merges->count > 4 * (uint64_t)ENG_TOK_MAX_VOCAB || tok_merges_init(t, (size_t)merges->count))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "gguf: %llu merges", (unsigned long long)merges->count);
	{
		struct util_buf cat = UTIL_BUF_INIT;
		fmt_gguf_iter_init(&it, merges);
		for (i = 0; fmt_gguf_iter_next(&it, &e); i++) {
			const char *sp = e.len > 1 ? memchr(e.str + 1, ' ', e.len - 1) : NULL;
			int32_t a, b, r;
			if (!sp)
				continue;
			a = eng_tok_find(t, e.str, (size_t)(sp - e.str));
			b = eng_tok_find(t, sp + 1, e.len - (size_t)(sp - e.str) - 1);
			cat.len = 0;
			if (util_buf_add(&cat, e.str, (size_t)(sp - e.str)) ||
			    util_buf_add(&cat, sp + 1, e.len - (size_t)(sp - e.str) - 1)) {
				util_buf_release(&cat);
				return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory");
			}
			r = eng_tok_find(t, cat.buf, cat.len);
			if (a >= 0 && b >= 0 && r >= 0 && tok_merge_add(t, a, b, i, r)) {
				util_buf_release(&cat);
				return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: merge table full");
			}
		}
		util_buf_release(&cat);
	}
	return HM_OK;
}

static enum hm_err gguf_build(struct hm_ctx *ctx, const struct fmt_gguf *g, struct eng_tok *t)
{
	const struct fmt_gguf_value *model = gguf_get(g, "tokenizer.ggml.model", FMT_GGUF_STRING);
	const struct fmt_gguf_value *toks = gguf_get(g, "tokenizer.ggml.tokens", FMT_GGUF_ARRAY);
	const struct fmt_gguf_value *scores = gguf_get(g, "tokenizer.ggml.scores", FMT_GGUF_ARRAY);
	const struct fmt_gguf_value *types = gguf_get(g, "tokenizer.ggml.token_type", FMT_GGUF_ARRAY);
	const struct fmt_gguf_value *merges = gguf_get(g, "tokenizer.ggml.merges", FMT_GGUF_ARRAY);
	const struct fmt_gguf_value *pre = gguf_get(g, "tokenizer.ggml.pre", FMT_GGUF_STRING);
	struct fmt_gguf_iter it;
	struct fmt_gguf_value e;
	uint8_t *mark;
	uint32_t i;
	enum hm_err err;
	if (!model)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "gguf: no tokenizer.ggml.model");
	if (model->len == 5 && !memcmp(model->str, "llama", 5))
		t->kind = ENG_TOK_SPM;
	else if (model->len == 4 && !memcmp(model->str, "gpt2", 4))
		t->kind = ENG_TOK_BPE;
	else
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "gguf: tokenizer model '%.*s' is not supported",
			       (int)(model->len < 32 ? model->len : 32), model->str);
	if (!toks || toks->elem != FMT_GGUF_STRING)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "gguf: tokenizer.ggml.tokens is not a string array");
	if (toks->count > ENG_TOK_MAX_VOCAB)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "gguf: %llu tokens (at most %u)", (unsigned long long)toks->count,
			       ENG_TOK_MAX_VOCAB);
	if ((err = tok_alloc(ctx, t, (uint32_t)toks->count)))
		return err;
	if ((scores && (scores->elem != FMT_GGUF_F32 || scores->count != t->n)) ||
	    (types && ((types->elem != FMT_GGUF_I32 && types->elem != FMT_GGUF_U32) || types->count != t->n)))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "gguf: tokenizer scores or token types do not match the %u tokens",
			       t->n);
	fmt_gguf_iter_init(&it, toks);
	for (i = 0; fmt_gguf_iter_next(&it, &e); i++)
		if (set_text(t, i, e.str, e.len))
			return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory");
	for (i = 0; i < t->n; i++)
		t->type[i] = ENG_TOK_NORMAL;
	if (types) {
		fmt_gguf_iter_init(&it, types);
		for (i = 0; fmt_gguf_iter_next(&it, &e); i++) {
			int64_t v = types->elem == FMT_GGUF_I32 ? e.i : (int64_t)e.u;
			t->type[i] = v >= ENG_TOK_NORMAL && v <= ENG_TOK_BYTE ? (uint8_t)v : ENG_TOK_NORMAL;
		}
	}
	if (t->kind == ENG_TOK_SPM) {
		if (!(t->score = calloc(t->n, sizeof(*t->score))))
			return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory");
		if (scores) {
			fmt_gguf_iter_init(&it, scores);
			for (i = 0; fmt_gguf_iter_next(&it, &e); i++)
				t->score[i] = (float)e.f;
		}
	}
	if (!(mark = calloc(t->n, 1)))
		return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory");
	for (i = 0; i < t->n; i++)
		mark[i] = t->type[i] == ENG_TOK_CONTROL || t->type[i] == ENG_TOK_USER_DEFINED;
	if (tok_build_vocab_map(t) || tok_build_specials(t, mark)) {
		free(mark);
		return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory");
	}
	free(mark);
	t->unk = gguf_id(g, "tokenizer.ggml.unknown_token_id", t->n);
	t->bos = gguf_id(g, "tokenizer.ggml.bos_token_id", t->n);
	t->eos = gguf_id(g, "tokenizer.ggml.eos_token_id", t->n);
	if (t->kind == ENG_TOK_SPM) {
		/* llama.cpp's defaults for SentencePiece vocabularies */
		if (t->unk < 0 && !fmt_gguf_find_kv(g, "tokenizer.ggml.unknown_token_id") && t->n > 0)
			t->unk = 0;
		if (t->bos < 0 && !fmt_gguf_find_kv(g, "tokenizer.ggml.bos_token_id") && t->n > 1)
			t->bos = 1;
		if (t->eos < 0 && !fmt_gguf_find_kv(g, "tokenizer.ggml.eos_token_id") && t->n > 2)
			t->eos = 2;
		t->prepend = gguf_bool(g, "tokenizer.ggml.add_space_prefix", 1) ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
		t->byte_fallback = 1;
		tok_find_byte_tokens(t);
		snprintf(t->pre, sizeof(t->pre), "spm");
	} else if ((err = gguf_bpe(ctx, pre, merges, t))) {
		return err;
	}
	t->add_bos = gguf_bool(g, "tokenizer.ggml.add_bos_token", t->kind == ENG_TOK_SPM) && t->bos >= 0;
	return HM_OK;
}

enum hm_err eng_tok_open_gguf(struct hm_ctx *ctx, const struct fmt_gguf *g, struct eng_tok **out)
{
	struct eng_tok *t = tok_new();
	enum hm_err err;
	if (!t)
		return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory");
	if ((err = gguf_build(ctx, g, t))) {
		char msg[sizeof(ctx->errmsg)];
		snprintf(msg, sizeof(msg), "%s", ctx->errmsg);
		(void)hm_fail(ctx, err, "'%s': %s", fmt_gguf_path(g), msg);
		eng_tok_free(t);
		return err;
	}
	*out = t;
	return HM_OK;
}
