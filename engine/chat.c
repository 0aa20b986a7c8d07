/* chat.c - the Jinja subset of chat templates (see chat.h): the public
 * functions and a model's template; the renderer is in chat_*.c (chat-int.h). Every limit (template size, nesting, steps, output,
 * arena) turns hostile input into an error, never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "chat-int.h"
#include "smoke.h"
#include "tokenizer.h"
#include "../formats/formats.h"
#include "../formats/hfdir.h"

/* ---- public ---- */

enum hm_err eng_chat_new(struct hm_ctx *ctx, const char *tpl, size_t len, const char *bos, const char *eos,
			 struct eng_chat **out)
{
	enum hm_err err = HM_OK;
	struct eng_chat *c;
	*out = NULL;
	if (len > ENG_CHAT_MAX_TEMPLATE)
		return eng_chat_failf(ctx, 0, "the template is over %u KiB", ENG_CHAT_MAX_TEMPLATE >> 10);
	if (memchr(tpl, 0, len))
		return eng_chat_failf(ctx, 0, "the template holds a NUL byte");
	if (!(c = calloc(1, sizeof(*c))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	c->bos = strdup(bos ? bos : "");
	c->eos = strdup(eos ? eos : "");
	if (!c->bos || !c->eos) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	err = eng_chat_compile(ctx, c, tpl, len);
out:
	if (err)
		eng_chat_free(c);
	else
		*out = c;
	return err;
}

void eng_chat_free(struct eng_chat *c)
{
	if (!c)
		return;
	free(c->src);
	free(c->bos);
	free(c->eos);
	free(c->toks);
	eng_chat_arena_free(&c->parse);
	free(c);
}

enum hm_err eng_chat_render_json(struct hm_ctx *ctx, const struct eng_chat *c, const char *vars, time_t now,
				 char **out, size_t *len)
{
	json_error_t je;
	json_t *j = json_loads(vars, JSON_DISABLE_EOF_CHECK * 0, &je);
	*out = NULL;
	*len = 0;
	if (!j || !json_is_object(j)) {
		json_decref(j);
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "chat template variables: not a JSON object (%s)", j ? "" : je.text);
	}
	enum hm_err err = eng_chat_render_vars(ctx, c, j, now, out, len);
	json_decref(j);
	return err;
}

enum hm_err eng_chat_render(struct hm_ctx *ctx, const struct eng_chat *c, const struct eng_chat_msg *msgs, size_t n,
			    int add_generation_prompt, char **out, size_t *len)
{
	json_t *vars = json_object(), *arr = json_array();
	enum hm_err err;
	*out = NULL;
	*len = 0;
	if (!vars || !arr || json_object_set_new(vars, "messages", arr)) {
		json_decref(vars);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		json_t *m = json_pack("{s:s,s:s}", "role", msgs[i].role ? msgs[i].role : "user", "content",
				      msgs[i].content ? msgs[i].content : "");
		if (!m || json_array_append_new(arr, m)) {
			json_decref(vars);
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "chat message %zu is not valid UTF-8", i + 1);
		}
	}
	if (json_object_set_new(vars, "add_generation_prompt", json_boolean(add_generation_prompt))) {
		json_decref(vars);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	err = eng_chat_render_vars(ctx, c, vars, 0, out, len);
	json_decref(vars);
	return err;
}

/* ---- loading a model's template ---- */

static char *read_small(const char *path, size_t cap, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct util_buf b = UTIL_BUF_INIT;
	char chunk[65536];
	size_t n;
	if (!f)
		return NULL;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (b.len + n > cap || util_buf_add(&b, chunk, n)) {
			fclose(f);
			util_buf_release(&b);
			return NULL;
		}
	fclose(f);
	if (util_buf_add(&b, "", 1)) {
		util_buf_release(&b);
		return NULL;
	}
	*len = b.len - 1;
	return b.buf;
}

/* The template of a model directory: tokenizer_config.json's chat_template
 * (formats/hfdir.h reads the file, with its bos/eos tokens into *tc), else
 * chat_template.jinja beside it; *tpl NULL when neither has one. */
static enum hm_err dir_template(struct hm_ctx *ctx, const char *dir, struct fmt_hf_tokcfg *tc, char **tpl,
				size_t *tl)
{
	char p[4200];
	enum hm_err err;
	snprintf(p, sizeof(p), "%s/tokenizer_config.json", dir);
	err = fmt_hf_tokcfg_load(ctx, p, p, tc);
	if (err == HM_ERR_NOT_FOUND) {
		ctx->errmsg[0] = 0;
		err = HM_OK;
	}
	if (err)
		return err;
	if (tc->chat_template) {
		*tpl = tc->chat_template;
		*tl = tc->chat_template_len;
		tc->chat_template = NULL;
		return HM_OK;
	}
	snprintf(p, sizeof(p), "%s/chat_template.jinja", dir);
	*tpl = read_small(p, ENG_CHAT_MAX_TEMPLATE, tl);
	return HM_OK;
}

static const char *tok_text(const struct eng_tok *t, int32_t id, char *buf, size_t cap)
{
	size_t n;
	const char *s = id >= 0 ? eng_tok_text(t, id, &n) : NULL;
	if (!s || n >= cap)
		return NULL;
	memcpy(buf, s, n);
	buf[n] = 0;
	return buf;
}



enum hm_err eng_chat_open(struct hm_ctx *ctx, const char *path, const struct eng_tok *t, struct eng_chat **out)
{
	struct stat sb;
	char dir[4096], bb[512], eb[512];
	char *tpl = NULL;
	size_t tl = 0;
	struct fmt_hf_tokcfg tc = {0};
	const char *bos = NULL, *eos = NULL;
	enum hm_err err = HM_OK;
	*out = NULL;
	if (stat(path, &sb) != 0)
		return hm_fail(ctx, HM_ERR_NOT_FOUND, "cannot open '%s': no such file or directory", path);
	if (S_ISREG(sb.st_mode) && eng_is_gguf(path)) {
		struct fmt_gguf *g = NULL;
		if ((err = fmt_gguf_open(ctx, path, &g)))
			return err;
		const struct fmt_gguf_kv *kv = fmt_gguf_find_kv(g, "tokenizer.chat_template");
		if (kv && kv->v.type == FMT_GGUF_STRING && kv->v.len <= ENG_CHAT_MAX_TEMPLATE &&
		    !(tpl = strndup(kv->v.str, tl = (size_t)kv->v.len)))
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		fmt_gguf_close(g);
		if (err)
			return err;
	} else {
		eng_model_dir(path, !S_ISREG(sb.st_mode), dir, sizeof(dir));
		if ((err = dir_template(ctx, dir, &tc, &tpl, &tl)))
			goto out;
		bos = tc.bos;
		eos = tc.eos;
	}
	if (!tpl) {
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "'%s' has no chat template", path);
		goto out;
	}
	if (t) {
		bos = tok_text(t, eng_tok_bos(t), bb, sizeof(bb)) ? bb : bos;
		eos = tok_text(t, eng_tok_eos(t), eb, sizeof(eb)) ? eb : eos;
	}
	err = eng_chat_new(ctx, tpl, tl, bos, eos, out);
out:
	fmt_hf_tokcfg_release(&tc);
	free(tpl);
	return err;
}
