/* source.c - reading the JSON files of a conversion's source (config.json,
 * tokenizer.json, ...): below llama.c and vocab.c, which both read them. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "convert-int.h"
#include "../util/util.h"

#define MAX_JSON (64u << 20) /* config/tokenizer JSON files */

enum hm_err conv_read_json(struct hm_ctx *ctx, const struct conv_source *src, const char *name, int optional,
			   json_t **out)
{
	char path[PATH_MAX];
	char *data = NULL;
	size_t len = 0;
	json_error_t je;
	enum hm_err err;

	*out = NULL;
	ctx->errmsg[0] = '\0';
	err = src->resolve(ctx, src->ud, name, path, sizeof(path));
	if (err == HM_ERR_NOT_FOUND && optional) {
		ctx->errmsg[0] = '\0';
		return HM_OK;
	}
	if (err == HM_ERR_NOT_FOUND)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s' has no %s", src->label, name);
	if (err)
		return err;
	if (util_read_file(path, MAX_JSON, &data, &len) < 0)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "cannot read %s of '%s' (missing, unreadable or over 64 MiB)",
			       name, src->label);
	*out = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	free(data);
	if (!*out || !json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "%s of '%s' is not a JSON object (line %d: %s)", name, src->label,
			       je.line, je.text);
	}
	return HM_OK;
}

/* Resolves name; *found 0 (and HM_OK) when the source has no such file. */
static enum hm_err resolve_file(struct hm_ctx *ctx, const struct conv_source *src, const char *name, char *path,
				size_t len, int *found)
{
	enum hm_err err;
	*found = 0;
	ctx->errmsg[0] = '\0';
	err = src->resolve(ctx, src->ud, name, path, len);
	if (err == HM_ERR_NOT_FOUND) {
		ctx->errmsg[0] = '\0';
		return HM_OK;
	}
	*found = !err;
	return err;
}

enum hm_err conv_read_config(struct hm_ctx *ctx, const struct conv_source *src, struct fmt_hf_config *out)
{
	char path[PATH_MAX], *where;
	int found;
	enum hm_err err;
	memset(out, 0, sizeof(*out));
	if ((err = resolve_file(ctx, src, "config.json", path, sizeof(path), &found)))
		return err;
	if (!found)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s' has no config.json", src->label);
	if (!(where = util_asprintf("%s/config.json", src->label)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	err = fmt_hf_config_load(ctx, path, where, out);
	free(where);
	return err == HM_ERR_NOT_FOUND ? HM_ERR_BAD_INPUT : err;
}

enum hm_err conv_read_tokcfg(struct hm_ctx *ctx, const struct conv_source *src, struct fmt_hf_tokcfg *out)
{
	char path[PATH_MAX], *where;
	int found;
	enum hm_err err;
	memset(out, 0, sizeof(*out));
	out->add_bos = out->add_eos = -1;
	if ((err = resolve_file(ctx, src, "tokenizer_config.json", path, sizeof(path), &found)) || !found)
		return err;
	if (!(where = util_asprintf("%s/tokenizer_config.json", src->label)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	err = fmt_hf_tokcfg_load(ctx, path, where, out);
	free(where);
	return err == HM_ERR_NOT_FOUND ? HM_ERR_BAD_INPUT : err;
}
