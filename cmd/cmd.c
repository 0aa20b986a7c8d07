/* cmd.c - helpers every command shares: options, errors, the store and
 * client from the environment, JSON output, the progress bar. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "cmd.h"
#include "../store/checkout.h"
#include "../store/index.h"

int cmd_usage_error(const struct cmd *c, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "hubmirror: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (c)
		fprintf(stderr, "\nusage: hubmirror %s %s\n(see 'hubmirror %s --help')\n", c->name, c->usage, c->name);
	else
		fprintf(stderr, "\n(see 'hubmirror --help')\n");
	return 2;
}

const char *cmd_opt_name(const struct cmd_args *a, const void *field)
{
	for (int i = 0; a->opts && a->opts[i].name; i++)
		if ((const char *)a->o + a->opts[i].off == (const char *)field)
			return a->opts[i].name;
	return "?"; /* a field no option is bound to: a bug, but not a crash */
}

int cmd_int_opt(const struct cmd_args *a, const char *const *v, int def, int min, int max, int *out)
{
	char *end;
	long n;
	*out = def;
	if (!*v)
		return 0;
	errno = 0;
	n = strtol(*v, &end, 10);
	if (errno || end == *v || *end || n < min || n > max) {
		fprintf(stderr, "hubmirror: --%s must be a number from %d to %d, not '%s'\n", cmd_opt_name(a, v), min,
			max, *v);
		return -1;
	}
	*out = (int)n;
	return 0;
}

/* Stable machine names of the errors, for {"error": {"code": ...}}. */
const char *cmd_err_code(enum hm_err err)
{
	static const char *const codes[HM_ERR__COUNT] = {
		[HM_OK] = "ok", [HM_ERR_NOMEM] = "out_of_memory", [HM_ERR_IO] = "io", [HM_ERR_NOSPC] = "no_space",
		[HM_ERR_USAGE] = "usage", [HM_ERR_BAD_INPUT] = "bad_input", [HM_ERR_NET] = "network",
		[HM_ERR_UNREACHABLE] = "unreachable", [HM_ERR_HTTP] = "http", [HM_ERR_REPO_NOT_FOUND] = "repo_not_found",
		[HM_ERR_REV_NOT_FOUND] = "revision_not_found", [HM_ERR_ENTRY_NOT_FOUND] = "file_not_found",
		[HM_ERR_GATED] = "gated", [HM_ERR_AUTH] = "auth", [HM_ERR_RATE_LIMITED] = "rate_limited",
		[HM_ERR_CORRUPT] = "corrupt", [HM_ERR_DB] = "index", [HM_ERR_NOT_FOUND] = "not_found",
		[HM_ERR_CANCELLED] = "interrupted", [HM_ERR_LOCKED] = "locked",
	};
	return (unsigned)err < HM_ERR__COUNT && codes[err] ? codes[err] : "error";
}

void cmd_json_error(const char *code, const char *message)
{
	cmd_print_json(json_pack("{s:i, s:{s:s, s:o}}", "schema", CMD_JSON_SCHEMA, "error", "code", code, "message",
				 cmd_json_text(message, strlen(message))));
}

int cmd_error(struct cmd_env *env, enum hm_err err)
{
	const char *msg = env->ctx.errmsg[0] ? env->ctx.errmsg : hm_strerror(err);
	cmd_progress_end(env);
	if (!env->error_printed)
		fprintf(stderr, "hubmirror: error: %s\n", msg);
	/* --json: a command that fails as a whole still answers in JSON */
	if (env->json && !env->json_done)
		cmd_json_error(cmd_err_code(err), msg);
	env->json_done = 1;
	if (err == HM_ERR_USAGE)
		return 2;
	if (err == HM_ERR_CANCELLED)
		return 130;
	return 1;
}

void cmd_hint_type(struct cmd_env *env, struct store *st, const char *type, const char *repo)
{
	struct hm_ctx q = {0};
	char commit[41];
	const char *other = strcmp(type, "dataset") ? "dataset" : "model";
	size_t n = strlen(env->ctx.errmsg);
	if (!st || store_resolve(&q, st, other, repo, NULL, commit))
		return;
	snprintf(env->ctx.errmsg + n, sizeof(env->ctx.errmsg) - n, "; a %s of that name is stored: %s%s", other,
		 strcmp(other, "dataset") ? "" : "datasets/", repo);
}

enum hm_err cmd_open_store(struct cmd_env *env, struct store **st)
{
	return store_open_mode(&env->ctx, env->store_dir, STORE_WRITE, st);
}

enum hm_err cmd_open_store_mode(struct cmd_env *env, enum store_mode mode, struct store **st)
{
	return store_open_mode(&env->ctx, env->store_dir, mode, st);
}

void cmd_print_store(const struct cmd_env *env, const struct store *st)
{
	if (!env->json && !env->quiet)
		printf("store: %s%s\n", store_name(st), store_readonly(st) ? " (read-only)" : "");
}

/* Reads a token file: first line, trimmed. */
static char *read_token_file(const char *path)
{
	char *data = NULL;
	size_t len;
	if (util_read_file(path, 64 << 10, &data, &len))
		return NULL;
	char *p = data;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	size_t n = strcspn(p, "\r\n");
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	char *t = n ? util_strndup(p, n) : NULL;
	memset(data, 0, len);
	free(data);
	return t;
}

const char *cmd_hf_cache_dir(char *buf, size_t len)
{
	const char *c = getenv("HF_HUB_CACHE"), *old = getenv("HUGGINGFACE_HUB_CACHE"), *hf = getenv("HF_HOME");
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	if (c && *c)
		snprintf(buf, len, "%s", c);
	else if (old && *old)
		snprintf(buf, len, "%s", old);
	else if (hf && *hf)
		snprintf(buf, len, "%s/hub", hf);
	else if (xdg && *xdg)
		snprintf(buf, len, "%s/huggingface/hub", xdg);
	else
		snprintf(buf, len, "%s/.cache/huggingface/hub", home && *home ? home : ".");
	return buf;
}

char *cmd_token(const struct cmd_env *env)
{
	char *token = NULL, path[4096];
	const char *t;
	if ((t = env->token_arg) || ((t = getenv("HF_TOKEN")) && *t) ||
	    ((t = getenv("HUGGING_FACE_HUB_TOKEN")) && *t)) {
		token = util_strdup(t);
	} else {
		const char *tp = getenv("HF_TOKEN_PATH");
		if (tp && *tp) {
			token = read_token_file(tp);
		} else {
			const char *hf = getenv("HF_HOME"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
			if (hf && *hf)
				snprintf(path, sizeof(path), "%s/token", hf);
			else if (xdg && *xdg)
				snprintf(path, sizeof(path), "%s/huggingface/token", xdg);
			else
				snprintf(path, sizeof(path), "%s/.cache/huggingface/token", home ? home : ".");
			token = read_token_file(path);
		}
	}
	return token;
}

/* A number of seconds from the environment (HF_HUB_*_TIMEOUT): 0 if unset. */
static int env_seconds(const char *name, double *out)
{
	const char *v = getenv(name);
	char *end;
	double d;
	*out = 0;
	if (!v || !*v)
		return 0;
	d = strtod(v, &end);
	if (end == v || *end || !(d > 0) || d > 86400) {
		fprintf(stderr, "hubmirror: %s must be a number of seconds, not '%s'\n", name, v);
		return -1;
	}
	*out = d;
	return 0;
}

int cmd_net_opts(const struct cmd_args *a, const struct cmd_net_vals *n, struct fetch_client_opts *o)
{
	int conns, retries, timeout, meta;
	double env_dl, env_meta;
	if (cmd_int_opt(a, &n->connections, 8, 1, 64, &conns) || cmd_int_opt(a, &n->retries, 5, 0, 100, &retries) ||
	    cmd_int_opt(a, &n->timeout, 30, 1, 3600, &timeout) || cmd_int_opt(a, &n->metadata_timeout, 10, 1, 3600, &meta) ||
	    env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", &env_dl) || env_seconds("HF_HUB_ETAG_TIMEOUT", &env_meta))
		return -1;
	o->connections = conns;
	o->retries = retries;
	o->timeout = timeout;
	o->timeout_from = "--timeout, default 30 s";
	if (n->timeout)
		o->timeout_from = "--timeout";
	else if (env_dl > 0) {
		o->timeout = env_dl;
		o->timeout_from = "HF_HUB_DOWNLOAD_TIMEOUT";
	}
	o->meta_timeout = meta;
	o->meta_timeout_from = "HF_HUB_ETAG_TIMEOUT or --metadata-timeout, default 10 s";
	if (n->metadata_timeout)
		o->meta_timeout_from = "--metadata-timeout";
	else if (env_meta > 0) {
		o->meta_timeout = env_meta;
		o->meta_timeout_from = "HF_HUB_ETAG_TIMEOUT";
	}
	o->allow_private_redirects = n->allow_private_redirects;
	return 0;
}

int cmd_offline(int flag)
{
	const char *v = getenv("HF_HUB_OFFLINE");
	if (flag)
		return 1;
	return v && (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"));
}

enum hm_err cmd_client(struct cmd_env *env, const struct cmd_args *a, const struct cmd_net_vals *n,
		       struct fetch_client **fc)
{
	struct fetch_client_opts o = {0};
	char *token;
	enum hm_err err;

	if (cmd_net_opts(a, n, &o)) {
		/* cmd_net_opts said what is wrong, in one line */
		env->error_printed = 1;
		return hm_fail(&env->ctx, HM_ERR_USAGE, "invalid option value");
	}
	o.endpoint = env->endpoint ? env->endpoint : getenv("HF_ENDPOINT");
	o.endpoint_from = env->endpoint ? "--endpoint" : getenv("HF_ENDPOINT") ? "HF_ENDPOINT" : "the default";
	token = cmd_token(env);
	o.token = token;
	err = fetch_client_new(&env->ctx, &o, fc);
	if (token) {
		memset(token, 0, strlen(token));
		free(token);
	}
	return err;
}

/* s[0..n) with each invalid UTF-8 byte as U+FFFD into b. */
static int valid_text(struct util_buf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t k;
		if (util_utf8_next((const unsigned char *)s + i, n - i, &k) < 0)
			k = 0;
		if (k ? util_buf_add(b, s + i, k) : util_buf_add(b, "\xef\xbf\xbd", 3))
			return -1;
		i += k ? k : 1;
	}
	return 0;
}

char *cmd_valid_text(const char *s, size_t n)
{
	struct util_buf b = UTIL_BUF_INIT;
	char *out;
	if (valid_text(&b, s, n) || !(out = malloc(b.len + 1))) {
		util_buf_release(&b);
		return NULL;
	}
	if (b.len)
		memcpy(out, b.buf, b.len);
	out[b.len] = 0;
	util_buf_release(&b);
	return out;
}

json_t *cmd_json_text(const char *s, size_t n)
{
	struct util_buf b = UTIL_BUF_INIT;
	json_t *j = NULL;
	if (!valid_text(&b, s, n))
		j = json_stringn(b.buf ? b.buf : "", b.len);
	util_buf_release(&b);
	return j;
}

enum hm_err cmd_model_dir(struct cmd_env *env, struct store *st, const char *type, const char *repo,
			  const char *commit, char *out, size_t len)
{
	char flat[256];
	snprintf(flat, sizeof(flat), "%s", repo);
	for (char *p = flat; *p; p++)
		if (*p == '/')
			*p = '-'; /* ids never hold "--" (util_repo_id_is_valid), so this stays unique */
	snprintf(out, len, "%s/tmp/run/%s--%s/%s", store_dir(st), type, flat, commit);
	return store_checkout(&env->ctx, st, type, repo, commit, NULL, out, STORE_LAYOUT_FILES, 0);
}

void cmd_print_json(json_t *j)
{
	/* every object a command prints carries the schema version first */
	if (json_is_object(j) && !json_object_get(j, "schema")) {
		json_t *o = json_pack("{s:i}", "schema", CMD_JSON_SCHEMA);
		json_object_update(o, j);
		json_decref(j);
		j = o;
	}
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
		free(s);
	}
	json_decref(j);
}
