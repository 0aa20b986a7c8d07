/* run.c - `hubmirror run` and `hubmirror smoke`: the bundled engine on a
 * model file, a directory, or a repo in the store. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cmd.h"
#include "../engine/smoke.h"
#include "../mirror/mirror.h"
#include "../convert/convert.h"
#include "../store/index.h"

/* MODEL as a path, or a stored repo checked out (hard links) under the
 * store's tmp/run/ so the engine can mmap it. *label names it for records. */
/* What a stored MODEL resolved to (empty when MODEL is a path). */
struct stored {
	char type[16], repo[256], commit[41];
};

static enum hm_err model_path(struct cmd_env *env, const char *model, const char *rev, const char *rtype,
			      char *out, size_t len, char *label, size_t llen, struct store **stp, struct stored *sd)
{
	struct stat sb;
	char buf[256], commit[41];
	const char *type, *repo;
	enum hm_err err;

	*stp = NULL;
	memset(sd, 0, sizeof(*sd));
	if (stat(model, &sb) == 0) {
		snprintf(out, len, "%s", model);
		snprintf(label, llen, "%s", model);
		return HM_OK;
	}
	if ((err = mirror_parse_repo(&env->ctx, model, rtype, buf, sizeof(buf), &type, &repo))) {
		return hm_fail(&env->ctx, HM_ERR_NOT_FOUND, "'%s' is neither a file nor a repository id", model);
	}
	if ((err = cmd_open_store(env, stp)))
		return err;
	env->ctx.errmsg[0] = 0;
	err = store_resolve(&env->ctx, *stp, type, repo, rev, commit);
	if (err) {
		if (err == HM_ERR_NOT_FOUND) {
			hm_fail(&env->ctx, err, "'%s' is not a file, and not found in the store (pull it first)", model);
			cmd_hint_type(env, *stp, type, repo);
		}
		return err;
	}
	snprintf(label, llen, "%s@%s", repo, commit);
	snprintf(sd->type, sizeof(sd->type), "%s", type);
	snprintf(sd->repo, sizeof(sd->repo), "%s", repo);
	memcpy(sd->commit, commit, sizeof(sd->commit));
	return cmd_model_dir(env, *stp, type, repo, commit, out, len);
}

/* A key of a stored MODEL for JSON: null when MODEL is a path. */
static json_t *stored_json(const struct stored *sd, const char *s)
{
	return sd->repo[0] ? json_string(s) : json_null();
}

/* ---- run ---- */

/* What the options of run_opts[] below set (a->o). */
struct run_vals {
	const char *prompt, *tokens, *temp, *top_p, *seed, *threads, *revision, *repo_type, *system;
	int raw, chat;
};

static const struct cmd_opt run_opts[] = {
	CMD_OPT_STR(struct run_vals, prompt, "prompt", 'p', "TEXT", "the prompt (or words after MODEL, or stdin)"),
	CMD_OPT_STR(struct run_vals, tokens, "tokens", 'n', "N", "tokens to generate at most (default 64)"),
	CMD_OPT_STR(struct run_vals, temp, "temp", 0, "T", "temperature (default 0: greedy)"),
	CMD_OPT_STR(struct run_vals, top_p, "top-p", 0, "P", "nucleus sampling mass (default 1: off)"),
	CMD_OPT_STR(struct run_vals, seed, "seed", 0, "S", "random seed for sampling (default 1)"),
	CMD_OPT_STR(struct run_vals, threads, "threads", 0, "N", "threads (default: all CPUs)"),
	CMD_OPT_STR(struct run_vals, revision, "revision", 'r', "REV", "revision of a stored repo"),
	CMD_OPT_STR(struct run_vals, repo_type, "repo-type", 't', "TYPE", "model (default) or dataset"),
	CMD_OPT_FLAG(struct run_vals, raw, "raw", 0, "interactive: send each line as it is, without the model's chat template"),
	CMD_OPT_FLAG(struct run_vals, chat, "chat", 0, "the prompt is a user turn, rendered with the model's chat template"),
	CMD_OPT_STR(struct run_vals, system, "system", 0, "TEXT", "with --chat: a system turn before it (implies --chat)"),
	CMD_OPT_END,
};

struct stream {
	const struct eng_tok *t;
	int32_t prev;
	int quiet;
};

static int on_token(void *ud, uint32_t tok)
{
	struct stream *st = ud;
	char piece[512];
	int n = eng_tok_decode(st->t, (int32_t)tok, st->prev, piece, sizeof(piece));
	st->prev = (int32_t)tok;
	if (!st->quiet && n > 0) {
		fwrite(piece, 1, (size_t)n < sizeof(piece) ? (size_t)n : sizeof(piece) - 1, stdout);
		fflush(stdout);
	}
	return 0;
}

static int parse_float(const char *v, const char *name, float lo, float hi, float *out)
{
	char *end;
	errno = 0;
	double d = strtod(v, &end);
	if (errno || end == v || *end || d < lo || d > hi) {
		fprintf(stderr, "hubmirror: --%s must be a number from %g to %g, not '%s'\n", name, lo, hi, v);
		return -1;
	}
	*out = (float)d;
	return 0;
}

/* The prompt: -p TEXT, the words after MODEL (as `ollama run MODEL PROMPT`),
 * or stdin when it is not a terminal (or PROMPT is "-"). *owned is freed by
 * the caller. NULL with *owned NULL: no prompt given (interactive). */
static const char *run_prompt(const struct cmd_args *a, char **owned, int *bad)
{
	const struct run_vals *opt = a->o;
	const char *p = opt->prompt;
	struct util_buf b = UTIL_BUF_INIT;
	*owned = NULL;
	*bad = 0;
	if (p && a->npos > 1) {
		*bad = 1;
		return NULL;
	}
	if (p)
		return p;
	if (a->npos > 2 || (a->npos == 2 && strcmp(a->pos[1], "-"))) {
		for (int i = 1; i < a->npos; i++)
			if ((i > 1 && util_buf_add(&b, " ", 1)) || util_buf_add(&b, a->pos[i], strlen(a->pos[i])))
				goto nomem;
	} else if ((a->npos == 2 && !strcmp(a->pos[1], "-")) || !isatty(0)) {
		char chunk[4096];
		size_t n;
		while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
			if (b.len + n > (16u << 20) || util_buf_add(&b, chunk, n))
				goto nomem;
		while (b.len && (b.buf[b.len - 1] == '\n' || b.buf[b.len - 1] == '\r'))
			b.len--;
		if (!b.len) {
			util_buf_release(&b);
			*bad = 3; /* stdin was empty */
			return NULL;
		}
	} else {
		return NULL; /* interactive */
	}
	if (util_buf_add(&b, "", 1))
		goto nomem;
	*owned = b.buf;
	return b.buf;
nomem:
	util_buf_release(&b);
	*bad = 2;
	return NULL;
}

static int run_run(struct cmd_env *env, struct cmd_args *a)
{
	const struct run_vals *opt = a->o;
	char *owned = NULL;
	int bad;
	const char *prompt = run_prompt(a, &owned, &bad);
	char path[4096], label[512];
	struct store *st = NULL;
	struct eng_model *m = NULL;
	struct eng_tok *t = NULL;
	struct eng_state *s = NULL;
	struct eng_run r = {0};
	struct stored sd;
	float temp = 0, top_p = 1;
	int n, threads, seed, rc = 0;
	enum hm_err err;
	double t0;

	if (!a->npos)
		return cmd_usage_error(&cmd_run, "missing MODEL");
	if (bad == 1)
		return cmd_usage_error(&cmd_run, "give the prompt once: -p TEXT or words after MODEL");
	if (bad == 2)
		return cmd_error(env, hm_fail(&env->ctx, HM_ERR_NOMEM, "the prompt is over 16 MiB"));
	if (bad == 3)
		return cmd_usage_error(&cmd_run, "missing prompt: -p TEXT, words after MODEL, or text on stdin");
	if (!prompt && env->json) {
		free(owned);
		return cmd_usage_error(&cmd_run, "--json needs a prompt (-p TEXT, words after MODEL, or stdin)");
	}
	if (cmd_int_opt(a, &opt->tokens, 64, 0, 1 << 20, &n) || cmd_int_opt(a, &opt->threads, 0, 0, 64, &threads) ||
	    cmd_int_opt(a, &opt->seed, 1, 0, 0x7fffffff, &seed) ||
	    (opt->temp && parse_float(opt->temp, "temp", 0, 100, &temp)) ||
	    (opt->top_p && parse_float(opt->top_p, "top-p", 0, 1, &top_p)))
		return 2;
	t0 = util_now();
	if ((err = model_path(env, a->pos[0], opt->revision, opt->repo_type, path, sizeof(path),
			      label, sizeof(label), &st, &sd)) ||
	    (err = eng_open_any(&env->ctx, path, &m, &t)) ||
	    (err = eng_state_new(&env->ctx, m, 0, threads, ENG_SIMD_AUTO, &s))) {
		rc = cmd_error(env, err);
		goto out;
	}
	double load_s = util_now() - t0;
	struct stream sm = {t, -1, env->json};
	if (!prompt) {
		struct cmd_gen g = {(size_t)n, temp, top_p, (uint64_t)seed, opt->raw};
		rc = cmd_interactive(env, path, s, t, &g);
		goto out;
	}
	if (opt->chat || opt->system) {
		struct cmd_gen g = {(size_t)n, temp, top_p, (uint64_t)seed, 0};
		err = cmd_chat_once(env, path, s, t, &g, opt->system, prompt, env->json, &r);
	} else {
		err = eng_run_prompt(&env->ctx, s, t, prompt, -1, (size_t)n, temp, top_p, (uint64_t)seed, on_token, &sm,
				     &r);
	}
	if (err) {
		rc = cmd_error(env, err);
		goto out;
	}
	if (env->json) {
		char *text = NULL;
		size_t tl = 0;
		int32_t *ids = malloc((r.nout ? r.nout : 1) * sizeof(*ids));
		json_t *toks = json_array(), *pids = json_array();
		for (size_t i = 0; i < r.nprompt; i++)
			json_array_append_new(pids, json_integer(r.prompt[i]));
		for (size_t i = 0; ids && i < r.nout; i++) {
			ids[i] = (int32_t)r.out[i];
			json_array_append_new(toks, json_integer(r.out[i]));
		}
		if (!ids || eng_tok_decode_all(t, ids, r.nout, 1, &text, &tl)) {
			free(ids);
			json_decref(toks);
			json_decref(pids);
			rc = cmd_error(env, HM_ERR_NOMEM);
			goto out;
		}
		free(ids);
		cmd_print_json(json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:o, s:{s:f, s:f, s:f, s:f, s:f}, s:s, s:i}",
					 "model", cmd_json_text(label, strlen(label)), "repo", stored_json(&sd, sd.repo),
					 "repo_type", stored_json(&sd, sd.type), "revision", stored_json(&sd, sd.commit), "tokens", toks, "text", cmd_json_text(text, tl),
					 "prompt_tokens", (json_int_t)r.nprompt, "prompt_ids", pids, "timings",
					 "load_s", load_s, "prompt_s", r.prompt_s, "gen_s", r.gen_s, "prompt_tps",
					 r.prompt_s > 0 ? (double)r.nprompt / r.prompt_s : 0.0, "gen_tps",
					 r.gen_s > 0 ? (double)r.nout / r.gen_s : 0.0, "simd",
					 eng_simd_name(eng_state_simd(s)), "threads", eng_state_threads(s)));
		free(text);
	} else {
		printf("\n");
		if (!env->quiet)
			fprintf(stderr, "hubmirror: %zu prompt tokens in %.2fs (%.1f tok/s), %zu generated in %.2fs (%.1f tok/s), load %.2fs, %s x%d\n",
				r.nprompt, r.prompt_s, r.prompt_s > 0 ? (double)r.nprompt / r.prompt_s : 0.0, r.nout, r.gen_s,
				r.gen_s > 0 ? (double)r.nout / r.gen_s : 0.0, load_s, eng_simd_name(eng_state_simd(s)),
				eng_state_threads(s));
	}
out:
	eng_run_release(&r);
	eng_state_free(s);
	eng_tok_free(t);
	eng_model_close(m);
	store_close(st);
	free(owned);
	return rc;
}

const struct cmd cmd_run = {
	"run", "MODEL [PROMPT...|-p PROMPT|-] [--chat [--system TEXT]] [-n N] [--temp T] [--top-p P] [--seed S] [--threads N]",
	"Run a model with the bundled engine and stream the generated text.",
	"MODEL is a .gguf or .safetensors file, a directory (config.json, tokenizer.json,\n"
	"safetensors), or a repo in the store. Greedy by default; --temp and --top-p sample\n"
	"(reproducibly for a given --seed). The prompt is -p TEXT, the words after MODEL,\n"
	"or stdin ('-', or when stdin is not a terminal); without one, on a terminal, run\n"
	"is interactive, as 'ollama run' is: a model with a chat template (its\n"
	"tokenizer_config.json, chat_template.jinja or GGUF tokenizer.chat_template)\n"
	"chats, each line a user turn answered with the conversation so far (/clear\n"
	"forgets it; the oldest turns go when it outgrows the context); without one, or\n"
	"with --raw, each line is a prompt of its own. /bye or Ctrl-D ends. --chat\n"
	"renders the prompt as one user turn (after --system TEXT) with the chat template\n"
	"and stops at the end of the assistant's turn; the rendered text is encoded\n"
	"without another BOS (the template writes it), as transformers does. --json\n"
	"prints {tokens, text, prompt_tokens, prompt_ids, timings}: prompt_ids are the\n"
	"ids fed to the engine.\n"
	"\n"
	"The kernels use what the CPU has (AVX2, AVX-512, VNNI, AMX tiles for prompts\n"
	"through Q8_0 weights; --json's simd names the level). A dense GGUF's weights\n"
	"are read into memory backed by huge pages as the model loads (generation reads\n"
	"every weight each step; 4 KiB pages slow that); HUBMIRROR_MMAP=1 in the\n"
	"environment keeps them in the file's mapping, shared with other processes.",
	run_opts, sizeof(struct run_vals), run_run,
};

/* ---- smoke ---- */

/* What the options of smoke_opts[] below set (a->o). */
struct smoke_vals {
	const char *prompt, *tokens, *expect, *threads, *revision, *repo_type;
};

static const struct cmd_opt smoke_opts[] = {
	CMD_OPT_STR(struct smoke_vals, prompt, "prompt", 'p', "TEXT", "the prompt (default 'The capital of France is')"),
	CMD_OPT_STR(struct smoke_vals, tokens, "tokens", 'n', "N", "tokens to generate (default 16)"),
	CMD_OPT_STR(struct smoke_vals, expect, "expect", 'e', "TEXT", "the greedy output must contain TEXT"),
	CMD_OPT_STR(struct smoke_vals, threads, "threads", 0, "N", "threads (default: all CPUs)"),
	CMD_OPT_STR(struct smoke_vals, revision, "revision", 'r', "REV", "revision of a stored repo"),
	CMD_OPT_STR(struct smoke_vals, repo_type, "repo-type", 't', "TYPE", "model (default) or dataset"),
	CMD_OPT_END,
};

static int run_smoke(struct cmd_env *env, struct cmd_args *a)
{
	const struct smoke_vals *opt = a->o;
	char path[4096], label[512];
	struct store *st = NULL;
	struct eng_smoke_opts o = {0};
	struct eng_smoke_result res = {0};
	struct stored sd;
	enum hm_err err;
	int n, threads, rc;

	if (a->npos != 1)
		return cmd_usage_error(&cmd_smoke, a->npos ? "smoke takes one model" : "missing MODEL");
	if (cmd_int_opt(a, &opt->tokens, 16, 1, 4096, &n) || cmd_int_opt(a, &opt->threads, 0, 0, 64, &threads))
		return 2;
	o.prompt = opt->prompt;
	o.tokens = (size_t)n;
	o.expect = opt->expect;
	o.threads = threads;
	if ((err = model_path(env, a->pos[0], opt->revision, opt->repo_type, path, sizeof(path),
			      label, sizeof(label), &st, &sd))) {
		rc = cmd_error(env, err);
		goto out;
	}
	if ((err = cmd_smoke_model(env, path, &o, &res))) {
		rc = cmd_error(env, err);
		goto out;
	}
	if (env->json) {
		cmd_print_json(json_pack("{s:o, s:o, s:o, s:o, s:b, s:o, s:o, s:f, s:f, s:f, s:I, s:I, s:I, s:s}",
					 "model", cmd_json_text(label, strlen(label)), "repo", stored_json(&sd, sd.repo),
					 "repo_type", stored_json(&sd, sd.type), "revision", stored_json(&sd, sd.commit), "pass", res.pass, "reason",
					 cmd_json_text(res.reason, strlen(res.reason)), "text",
					 cmd_json_text(res.text ? res.text : "", res.text ? strlen(res.text) : 0), "load_s", res.load_s,
					 "prompt_tps", res.prompt_tps, "gen_tps", res.gen_tps, "peak_rss",
					 (json_int_t)res.peak_rss, "prompt_tokens", (json_int_t)res.prompt_tokens, "gen_tokens",
					 (json_int_t)res.gen_tokens, "format", res.model_format));
	} else {
		char h[32];
		printf("%s: %s\n", res.pass ? "PASS" : "FAIL", label);
		if (res.text)
			printf("  output: %.300s\n", res.text);
		printf("  load %.2fs, prompt %.1f tok/s, generation %.1f tok/s, peak memory %s\n", res.load_s,
		       res.prompt_tps, res.gen_tps, util_human_size(res.peak_rss, h, sizeof(h)));
		if (!res.pass)
			fprintf(stderr, "hubmirror: smoke test failed: %s\n", res.reason);
	}
	rc = res.pass ? 0 : 1;
	if (st && sd.repo[0]) {
		/* a stored revision's result goes into the index, for `ls` */
		enum hm_err e2 = cmd_smoke_record(env, st, sd.type, sd.repo, sd.commit, NULL, label, &res);
		if (e2)
			rc = cmd_error(env, e2);
	}
out:
	eng_smoke_release(&res);
	store_close(st);
	return rc;
}

const struct cmd cmd_smoke = {
	"smoke", "MODEL [--prompt TEXT] [--tokens N] [--expect TEXT]",
	"Check a model end to end: loads, tokenizes, runs, deterministic, sane.",
	"Checks that the model loads (metadata consistent with the tensors), the tokenizer\n"
	"round-trips the prompt, logits are finite, greedy output is identical on two runs,\n"
	"and --expect is found. Prints load time, prompt and generation tokens/s, peak\n"
	"memory. Exit 0 pass, 1 fail with the reason.",
	smoke_opts, sizeof(struct smoke_vals), run_smoke,
};
