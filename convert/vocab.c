/* vocab.c - tokenizer.ggml.* metadata from tokenizer.json and
 * tokenizer_config.json, for the two BPE families llama.cpp knows:
 *
 * SentencePiece-style BPE (byte_fallback, U+2581 word marker; Llama 2,
 * TinyLlama): model "llama". llama.cpp merges the adjacent pair whose
 * concatenation has the highest score, so scores stand in for merge ranks:
 * a token made by merge rank r (its first merge) scores -r; control,
 * unknown and byte tokens score 0 (never merge results); any other token
 * (single characters, vocabulary entries no merge makes) scores
 * -(n_merges + id), below every merge. llama.cpp's own converter writes
 * -1000 for all of them when it only has tokenizer.json, which loses the
 * merge order.
 *
 * Byte-level BPE (Llama 3, SmolLM, Qwen2, GPT-2): model "gpt2", tokens and
 * merges verbatim, tokenizer.ggml.pre from the pre-tokenizer's regex. */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "convert-int.h"
#include "../util/util.h"

#define MAX_VOCAB (1u << 22)

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

struct vocab {
	char **tok;         /* n entries, owned */
	float *score;
	int32_t *type;
	unsigned char *added, *special;
	size_t n;
};

static void vocab_release(struct vocab *v)
{
	for (size_t i = 0; v->tok && i < v->n; i++)
		free(v->tok[i]);
	free(v->tok);
	free(v->score);
	free(v->type);
	free(v->added);
	free(v->special);
}

/* 1 when a normalizer (or one of a Sequence) prepends U+2581 (the legacy
 * SentencePiece dummy prefix). */
static int normalizer_prepends(json_t *n, int depth)
{
	const char *t = json_string_value(json_object_get(n, "type"));
	json_t *e;
	size_t i;
	if (!t || depth > 8)
		return 0;
	if (!strcmp(t, "Prepend"))
		return 1;
	json_array_foreach(json_object_get(n, "normalizers"), i, e)
		if (normalizer_prepends(e, depth + 1))
			return 1;
	return 0;
}

/* 1 when a Metaspace pre-tokenizer adds a prefix space. */
static void scan_prefix(json_t *pt, void *ud)
{
	const char *type = json_string_value(json_object_get(pt, "type"));
	const char *scheme = json_string_value(json_object_get(pt, "prepend_scheme"));
	json_t *aps = json_object_get(pt, "add_prefix_space");
	if (!strcmp(type, "Metaspace") && (scheme ? strcmp(scheme, "never") != 0 : !aps || json_is_true(aps)))
		*(int *)ud = 1;
}

/* 1 when a decoder (or one of a Sequence) has this type. */
static int has_decoder(json_t *d, const char *type)
{
	const char *t = json_string_value(json_object_get(d, "type"));
	json_t *e;
	size_t i;
	if (!t)
		return 0;
	if (!strcmp(t, type))
		return 1;
	json_array_foreach(json_object_get(d, "decoders"), i, e)
		if (has_decoder(e, type))
			return 1;
	return 0;
}

static int is_byte_token(const char *s)
{
	return strlen(s) == 6 && !strncmp(s, "<0x", 3) && isxdigit((unsigned char)s[3]) &&
	       isxdigit((unsigned char)s[4]) && s[5] == '>';
}

static long find_token(const struct vocab *v, json_t *vocab_obj, const char *s)
{
	json_t *id;
	if (!s)
		return -1;
	/* added tokens first: they win over a vocabulary entry of the same text */
	for (size_t i = 0; i < v->n; i++)
		if (v->added[i] && !strcmp(v->tok[i], s))
			return (long)i;
	id = json_object_get(vocab_obj, s);
	if (json_is_integer(id) && json_integer_value(id) >= 0 && (uint64_t)json_integer_value(id) < v->n)
		return (long)json_integer_value(id);
	return -1;
}

/* The merge at index i as two strings (split at the first space for the
 * "a b" form). 0 when malformed. */
static int merge_pair(json_t *m, const char **a, size_t *alen, const char **b, size_t *blen)
{
	if (json_is_string(m)) {
		const char *s = json_string_value(m), *sp = strchr(s, ' ');
		if (!sp)
			return 0;
		*a = s;
		*alen = (size_t)(sp - s);
		*b = sp + 1;
		*blen = strlen(sp + 1);
		return 1;
	}
	if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
	    json_is_string(json_array_get(m, 1))) {
		*a = json_string_value(json_array_get(m, 0));
		*alen = json_string_length(json_array_get(m, 0));
		*b = json_string_value(json_array_get(m, 1));
		*blen = json_string_length(json_array_get(m, 1));
		return 1;
	}
	return 0;
}

static enum hm_err spm_scores(struct hm_ctx *ctx, struct vocab *v, json_t *vocab_obj, json_t *merges)
{
	size_t nm = json_array_size(merges);
	char *buf = NULL;
	size_t cap = 0;
	unsigned char *made = calloc(v->n ? v->n : 1, 1);
	if (!made)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t r = 0; r < nm; r++) {
		const char *a, *b;
		size_t al, bl;
		json_t *id;
		if (!merge_pair(json_array_get(merges, r), &a, &al, &b, &bl)) {
			free(made);
			free(buf);
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: merge %zu is malformed", r);
		}
		if (al + bl + 1 > cap) {
			cap = 2 * (al + bl + 1);
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(made);
				free(buf);
				return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			}
			buf = nb;
		}
		memcpy(buf, a, al);
		memcpy(buf + al, b, bl);
		id = json_object_getn(vocab_obj, buf, al + bl);
		if (json_is_integer(id) && json_integer_value(id) >= 0 && (uint64_t)json_integer_value(id) < v->n &&
		    !made[json_integer_value(id)]) {
			made[json_integer_value(id)] = 1;
			v->score[json_integer_value(id)] = -(float)r;
		}
	}
	for (size_t i = 0; i < v->n; i++)
		if (!made[i] && (v->type[i] == TT_NORMAL || v->type[i] == TT_USER || v->type[i] == TT_UNUSED))
			v->score[i] = -(float)(nm + i);
	free(made);
	free(buf);
	return HM_OK;
}

/* add_bos/add_eos from a TemplateProcessing post-processor (or one inside
 * a Sequence): -1 when there is none. */
static void template_adds(json_t *pp, const char *bos, const char *eos, int *add_bos, int *add_eos)
{
	const char *t = json_string_value(json_object_get(pp, "type"));
	json_t *single, *first, *last, *e;
	size_t i;
	if (!t)
		return;
	if (!strcmp(t, "Sequence")) {
		json_array_foreach(json_object_get(pp, "processors"), i, e)
			template_adds(e, bos, eos, add_bos, add_eos);
		return;
	}
	if (strcmp(t, "TemplateProcessing"))
		return;
	single = json_object_get(pp, "single");
	first = json_object_get(json_object_get(json_array_get(single, 0), "SpecialToken"), "id");
	last = json_object_get(json_object_get(json_array_get(single, json_array_size(single) - 1), "SpecialToken"), "id");
	*add_bos = bos && json_is_string(first) && !strcmp(json_string_value(first), bos);
	*add_eos = eos && json_is_string(last) && !strcmp(json_string_value(last), eos) && json_array_size(single) > 1;
}

static enum hm_err write_ids(const struct vocab *v, json_t *vocab_obj, const struct fmt_hf_tokcfg *tcfg,
			     const struct fmt_hf_config *config, const char *unk_model, struct fmt_gguf_writer *w,
			     json_t *tok)
{
	const struct {
		const char *text;
		int64_t cfg_id;
		const char *key;
	} ids[] = {
		{tcfg->bos, config->bos_token_id, "tokenizer.ggml.bos_token_id"},
		{tcfg->eos, config->eos_token_id, "tokenizer.ggml.eos_token_id"},
		{tcfg->unk, -1, "tokenizer.ggml.unknown_token_id"},
		{tcfg->sep, -1, "tokenizer.ggml.seperator_token_id"},
		{tcfg->pad, config->pad_token_id, "tokenizer.ggml.padding_token_id"},
	};
	enum hm_err err;
	int add_bos = -1, add_eos = -1;

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		long id = find_token(v, vocab_obj, ids[i].text);
		if (id < 0 && i == 2)
			id = find_token(v, vocab_obj, unk_model);
		if (id < 0 && ids[i].cfg_id >= 0 && (uint64_t)ids[i].cfg_id < v->n)
			id = (long)ids[i].cfg_id;
		if (id >= 0 && (err = fmt_gguf_writer_u32(w, ids[i].key, (uint32_t)id)))
			return err;
	}
	template_adds(json_object_get(tok, "post_processor"), tcfg->bos, tcfg->eos, &add_bos, &add_eos);
	if (tcfg->add_bos >= 0)
		add_bos = tcfg->add_bos;
	if (tcfg->add_eos >= 0)
		add_eos = tcfg->add_eos;
	if (add_bos >= 0 && (err = fmt_gguf_writer_bool(w, "tokenizer.ggml.add_bos_token", add_bos)))
		return err;
	if (add_eos >= 0 && (err = fmt_gguf_writer_bool(w, "tokenizer.ggml.add_eos_token", add_eos)))
		return err;
	return HM_OK;
}

static enum hm_err write_chat_template(struct hm_ctx *ctx, const struct conv_source *src,
				       const struct fmt_hf_tokcfg *tcfg, struct fmt_gguf_writer *w)
{
	char path[PATH_MAX], *data = NULL;
	size_t len;
	enum hm_err err;
	if (tcfg->chat_template)
		return fmt_gguf_writer_str(w, "tokenizer.chat_template", tcfg->chat_template);
	ctx->errmsg[0] = '\0';
	if (src->resolve(ctx, src->ud, "chat_template.jinja", path, sizeof(path)) != HM_OK) {
		ctx->errmsg[0] = '\0';
		return HM_OK;
	}
	if (util_read_file(path, 16u << 20, &data, &len) < 0 || memchr(data, 0, len))
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "cannot read chat_template.jinja of '%s'", src->label);
	else
		err = fmt_gguf_writer_str(w, "tokenizer.chat_template", data);
	free(data);
	return err;
}

/* The vocabulary's n_vocab entries from the model's vocab and added_tokens
 * (missing ids padded as [PADn]), with llama.cpp's token types. */
static enum hm_err fill_vocab(struct hm_ctx *ctx, struct vocab *v, uint64_t n_vocab, json_t *vocab_obj, json_t *added,
			      int spm, const char *unk_model)
{
	const char *key;
	json_t *val, *e;
	size_t i;

	v->n = (size_t)n_vocab;
	v->tok = calloc(v->n + 1, sizeof(*v->tok));
	v->score = calloc(v->n + 1, sizeof(*v->score));
	v->type = calloc(v->n + 1, sizeof(*v->type));
	v->added = calloc(v->n + 1, 1);
	v->special = calloc(v->n + 1, 1);
	if (!v->tok || !v->score || !v->type || !v->added || !v->special)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	json_object_foreach(vocab_obj, key, val) {
		json_int_t id = json_integer_value(val);
		if (!json_is_integer(val) || id < 0 || (uint64_t)id >= v->n || v->tok[id])
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: token '%.40s' has a bad or duplicate id", key);
		if (!(v->tok[id] = util_strdup(key)))
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	json_array_foreach(added, i, e) {
		json_t *idj = json_object_get(e, "id");
		const char *content = json_string_value(json_object_get(e, "content"));
		json_int_t id = json_integer_value(idj);
		if (!json_is_integer(idj) || !content || id < 0 || (uint64_t)id >= v->n)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: added token %zu is malformed or out of range",
				       i);
		free(v->tok[id]);
		if (!(v->tok[id] = util_strdup(content)))
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		v->added[id] = 1;
		v->special[id] = json_is_true(json_object_get(e, "special"));
	}
	for (i = 0; i < v->n; i++) {
		if (!v->tok[i]) {
			v->tok[i] = util_asprintf("[PAD%zu]", i);
			v->type[i] = spm ? TT_UNUSED : TT_USER;
			if (!v->tok[i])
				return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		} else if (spm && unk_model && !strcmp(v->tok[i], unk_model)) {
			v->type[i] = TT_UNKNOWN;
		} else if (v->special[i]) {
			v->type[i] = TT_CONTROL;
		} else if (spm && is_byte_token(v->tok[i])) {
			v->type[i] = TT_BYTE;
		} else {
			v->type[i] = v->added[i] ? TT_USER : TT_NORMAL;
		}
	}
	return HM_OK;
}

/* tokenizer.ggml.merges as "a b" strings. */
static enum hm_err write_merges(struct hm_ctx *ctx, json_t *merges, struct fmt_gguf_writer *w)
{
	enum hm_err err = HM_OK;
	size_t nm = json_array_size(merges), i;
	char **ms = calloc(nm + 1, sizeof(*ms));
	if (!ms)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (i = 0; i < nm && !err; i++) {
		const char *a, *b;
		size_t al, bl;
		if (!merge_pair(json_array_get(merges, i), &a, &al, &b, &bl))
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: merge %zu is malformed", i);
		else if (!(ms[i] = util_asprintf("%.*s %.*s", (int)al, a, (int)bl, b)))
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	if (!err)
		err = fmt_gguf_writer_str_arr(w, "tokenizer.ggml.merges", (const char *const *)ms, nm);
	for (i = 0; i < nm; i++)
		free(ms[i]);
	free(ms);
	return err;
}


enum hm_err conv_write_vocab(struct hm_ctx *ctx, const struct conv_source *src, const struct fmt_hf_config *config,
			     uint64_t n_vocab, struct fmt_gguf_writer *w, struct conv_result *res)
{
	struct fmt_hf_tokcfg tcfg = {0};
	json_t *tok = NULL, *model, *vocab_obj, *merges, *added;
	struct vocab v = {0};
	struct fmt_hf_pre ps;
	enum hm_err err;
	const char *mtype, *unk_model;
	int spm;

	if ((err = conv_read_json(ctx, src, "tokenizer.json", 1, &tok)))
		return err;
	if (!tok) {
		char path[PATH_MAX];
		if (src->resolve(ctx, src->ud, "tokenizer.model", path, sizeof(path)) == HM_OK)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s' has a SentencePiece tokenizer.model but no"
				       " tokenizer.json: only tokenizer.json is supported", src->label);
		ctx->errmsg[0] = '\0';
		return HM_OK;
	}
	if ((err = conv_read_tokcfg(ctx, src, &tcfg)))
		goto out;
	model = json_object_get(tok, "model");
	mtype = json_string_value(json_object_get(model, "type"));
	vocab_obj = json_object_get(model, "vocab");
	merges = json_object_get(model, "merges");
	added = json_object_get(tok, "added_tokens");
	unk_model = json_string_value(json_object_get(model, "unk_token"));
	if (!mtype || strcmp(mtype, "BPE") || !json_is_object(vocab_obj) || !json_is_array(merges)) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: model type '%.32s' is not supported (BPE is)",
			      mtype ? mtype : "?");
		goto out;
	}
	fmt_hf_pre_scan(json_object_get(tok, "pre_tokenizer"), &ps);
	if (ps.bytelevel || has_decoder(json_object_get(tok, "decoder"), "ByteLevel"))
		spm = 0;
	else if (json_is_true(json_object_get(model, "byte_fallback")) || ps.metaspace ||
		 has_decoder(json_object_get(tok, "decoder"), "ByteFallback") ||
		 has_decoder(json_object_get(tok, "decoder"), "Metaspace"))
		spm = 1;
	else {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json: neither byte-level nor SentencePiece-style BPE");
		goto out;
	}
	if (n_vocab > MAX_VOCAB || json_object_size(vocab_obj) > n_vocab) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer.json has %zu tokens, the embeddings %llu rows",
			      json_object_size(vocab_obj), (unsigned long long)n_vocab);
		goto out;
	}
	if ((err = fill_vocab(ctx, &v, n_vocab, vocab_obj, added, spm, unk_model)))
		goto out;
	snprintf(res->tokenizer, sizeof(res->tokenizer), "%s", spm ? "llama" : "gpt2");
	snprintf(res->pre, sizeof(res->pre), "%s", spm ? "default" : ps.name);
	/* llama.cpp's converter refuses a byte-level BPE pre-tokenizer it does
	 * not know; this one writes "default" and says so */
	res->pre_unrecognized = !spm && !strcmp(res->pre, "default");
	res->nvocab = v.n;
	if ((err = fmt_gguf_writer_str(w, "tokenizer.ggml.model", res->tokenizer)) ||
	    (err = fmt_gguf_writer_str(w, "tokenizer.ggml.pre", res->pre)) ||
	    (err = fmt_gguf_writer_str_arr(w, "tokenizer.ggml.tokens", (const char *const *)v.tok, v.n)))
		goto out;
	if (spm) {
		int prefix = normalizer_prepends(json_object_get(tok, "normalizer"), 0);
		fmt_hf_pre_walk(json_object_get(tok, "pre_tokenizer"), scan_prefix, &prefix);
		if ((err = spm_scores(ctx, &v, vocab_obj, merges)) ||
		    (err = fmt_gguf_writer_arr(w, "tokenizer.ggml.scores", FMT_GGUF_F32, v.score, v.n)))
			goto out;
		/* no dummy prefix (Gemma): llama.cpp's loader assumes one unless told */
		if (!prefix && (err = fmt_gguf_writer_bool(w, "tokenizer.ggml.add_space_prefix", 0)))
			goto out;
	}
	if ((err = fmt_gguf_writer_arr(w, "tokenizer.ggml.token_type", FMT_GGUF_I32, v.type, v.n)))
		goto out;
	if (!spm && (err = write_merges(ctx, merges, w)))
		goto out;
	if ((err = write_ids(&v, vocab_obj, &tcfg, config, spm ? unk_model : NULL, w, tok)) ||
	    (err = write_chat_template(ctx, src, &tcfg, w)))
		goto out;
out:
	vocab_release(&v);
	json_decref(tok);
	fmt_hf_tokcfg_release(&tcfg);
	return err;
}
