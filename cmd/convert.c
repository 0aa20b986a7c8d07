/* convert.c - `hubmirror convert`: a stored repo or a local directory to
 * GGUF (stored content-addressed as an artifact of its revision, and/or
 * written where -o says), or PyTorch .bin checkpoints to safetensors. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cmd.h"
#include "../convert/convert.h"
#include "../formats/torch.h"
#include "../mirror/mirror.h"
#include "../store/artifacts.h"
#include "../store/checkout.h"
#include "../store/index.h"

/* What the options of opts[] below set (a->o). */
struct convert_vals {
	const char *to, *type, *output, *revision, *repo_type, *name, *threads;
	int force, sha256;
};

static const struct cmd_opt opts[] = {
	CMD_OPT_STR(struct convert_vals, to, "to", 0, "FORMAT", "gguf (default) or safetensors (from PyTorch .bin checkpoints)"),
	CMD_OPT_STR(struct convert_vals, type, "type", 0, "TYPE", "GGUF tensor type: f32, f16 (default), bf16, q8_0 or q4_0"),
	CMD_OPT_STR(struct convert_vals, output, "output", 'o', "FILE", "also write the result here (a directory for --to safetensors)"),
	CMD_OPT_STR(struct convert_vals, revision, "revision", 'r', "REV", "which revision of REPO (default main, else the latest)"),
	CMD_OPT_STR(struct convert_vals, repo_type, "repo-type", 't', "TYPE", "model (default) or dataset"),
	CMD_OPT_STR(struct convert_vals, name, "name", 0, "NAME", "general.name in the GGUF (default: the repo or directory name)"),
	CMD_OPT_STR(struct convert_vals, threads, "threads", 'j', "N", "worker threads (default: one per CPU)"),
	CMD_OPT_FLAG(struct convert_vals, force, "force", 'f', "convert again even when the store has this conversion"),
	CMD_OPT_FLAG(struct convert_vals, sha256, "sha256", 0, "also print the SHA-256 of an output that is not stored (a directory's, --name)"),
	CMD_OPT_END,
};

/* ---- sources ---- */

struct dir_src {
	const char *dir;
};

static enum hm_err resolve_dir(struct hm_ctx *ctx, void *ud, const char *name, char *buf, size_t len)
{
	struct dir_src *d = ud;
	struct stat st;
	if (snprintf(buf, len, "%s/%s", d->dir, name) >= (int)len)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "path too long");
	if (stat(buf, &st) < 0 || !S_ISREG(st.st_mode))
		return HM_ERR_NOT_FOUND;
	return HM_OK;
}

struct repo_src {
	struct store *st;
	struct store_file *f;
	size_t n;
};

static int has_file(const struct repo_src *r, const char *name)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->f[i].path, name))
			return 1;
	return 0;
}

/* ---- output ---- */

/* rtype: the repo type of a stored source (NULL for a directory). */
static void report(struct cmd_env *env, const char *rtype, const char *source, const char *commit, const char *type,
		   const struct conv_result *res, const char *output, const char *blob, int cached)
{
	char h[32];
	if (env->json) {
		json_t *j = json_pack("{s:s, s:s, s:s, s:o, s:I, s:b, s:b}", "source", source, "to", "gguf", "type", type,
				      "sha256", res->sha256[0] ? json_string(res->sha256) : json_null(), "size",
				      (json_int_t)res->size, "cached", cached, "stored", blob != NULL);
		json_object_set_new(j, "tensor_type", json_string(type));
		json_object_set_new(j, "repo", rtype ? json_string(source) : json_null());
		json_object_set_new(j, "repo_type", rtype ? json_string(rtype) : json_null());
		json_object_set_new(j, "revision", commit ? json_string(commit) : json_null());
		json_object_set_new(j, "output", output ? json_string(output) : json_null());
		json_object_set_new(j, "blob", blob ? json_string(blob) : json_null());
		if (!cached) {
			json_object_set_new(j, "architecture", json_string(res->arch));
			json_object_set_new(j, "tensors", json_integer((json_int_t)res->ntensors));
			json_object_set_new(j, "parameters", json_integer((json_int_t)res->nparams));
			json_object_set_new(j, "quantized", json_integer((json_int_t)res->nquant));
			json_object_set_new(j, "f16_fallback", json_integer((json_int_t)res->nf16_fallback));
			json_object_set_new(j, "tokenizer", json_string(res->tokenizer));
			json_object_set_new(j, "pre", json_string(res->pre));
			json_object_set_new(j, "pre_recognized", json_boolean(!res->pre_unrecognized));
			json_object_set_new(j, "vocab", json_integer((json_int_t)res->nvocab));
			json_object_set_new(j, "max_abs_error", json_real(res->max_abs_err));
			json_object_set_new(j, "seconds", json_real(res->seconds_convert));
			json_object_set_new(j, "check_seconds", json_real(res->seconds_check));
		}
		cmd_print_json(j);
		return;
	}
	if (!cached && res->pre_unrecognized)
		fprintf(stderr, "hubmirror: warning: the tokenizer's pre-tokenizer matches none llama.cpp knows;"
			" wrote tokenizer.ggml.pre = \"default\" (llama.cpp's own converter refuses such a model,"
			" and text may tokenize differently from the original)\n");
	if (env->quiet)
		return;
	if (cached) {
		printf("cache hit: %s%s%.12s as GGUF %s is stored (%s, sha256 %s)\n", source, commit ? "@" : "",
		       commit ? commit : "", type, util_human_size(res->size, h, sizeof(h)), res->sha256);
	} else {
		printf("converted %s%s%.12s (%s) to GGUF %s: %zu tensors (%zu quantized%s), %" PRIu64 " parameters,"
		       " %s\n", source, commit ? "@" : "", commit ? commit : "", res->arch, type, res->ntensors,
		       res->nquant, res->nf16_fallback ? ", some rows not a multiple of 32 kept F16" : "",
		       res->nparams, util_human_size(res->size, h, sizeof(h)));
		if (res->tokenizer[0])
			printf("tokenizer: %s (pre %s), %zu tokens\n", res->tokenizer, res->pre, res->nvocab);
		else
			printf("tokenizer: none (no tokenizer.json)\n");
		printf("checked: every value compared with the source as converted (max |error| %.3g), the written"
		       " header read back and compared with the plan; %.2fs\n", res->max_abs_err, res->seconds_convert);
		if (res->sha256[0])
			printf("sha256 %s\n", res->sha256);
	}
	if (blob)
		printf("stored: %s\n", blob);
	if (output)
		printf("wrote %s\n", output);
}

void cmd_report_artifact(struct cmd_env *env, const char *rtype, const char *repo, const char *commit,
			 const struct mirror_artifact *a, const char *output)
{
	struct conv_result res = a->res;
	memcpy(res.sha256, a->sha256, sizeof(res.sha256));
	res.size = a->size;
	report(env, rtype, repo, commit, a->type, &res, output, a->path, a->cached);
}

/* The default -o for a local directory: NAME-TYPE.gguf in the current directory. */
static char *default_output(const char *dir, const char *type)
{
	char buf[PATH_MAX];
	const char *base;
	size_t l;
	snprintf(buf, sizeof(buf), "%s", dir);
	l = strlen(buf);
	while (l > 1 && buf[l - 1] == '/')
		buf[--l] = '\0';
	base = strrchr(buf, '/');
	base = base ? base + 1 : buf;
	if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
		base = "model";
	return util_asprintf("%s-%s.gguf", base, type);
}

static int to_safetensors(struct cmd_env *env, struct cmd_args *a, const char *srcpath, struct store *st,
			  struct repo_src *rs, const char *type, const char *repo, const char *commit)
{
	const struct convert_vals *opt = a->o;
	struct fmt_pt_convert_result res = {0};
	const char *out = opt->output;
	char tmpdir[PATH_MAX] = "";
	enum hm_err err;
	int rc = 1;

	if (!out)
		return cmd_usage_error(&cmd_convert, "--to safetensors needs -o DIR");
	if (opt->type)
		return cmd_usage_error(&cmd_convert, "--type applies to --to gguf");
	if (st) {
		/* the .bin files need names beside their index: a checkout of hard links */
		if (!has_file(rs, "pytorch_model.bin") && !has_file(rs, "pytorch_model.bin.index.json")) {
			err = hm_fail(&env->ctx, HM_ERR_BAD_INPUT, "'%s' at %.12s has no pytorch_model.bin or"
				      " pytorch_model.bin.index.json", repo, commit);
			goto out;
		}
		if ((err = store_artifact_tmp(&env->ctx, st, ".d", tmpdir, sizeof(tmpdir))) ||
		    (err = store_checkout(&env->ctx, st, type, repo, commit, NULL, tmpdir, STORE_LAYOUT_FILES, 0)))
			goto out;
		srcpath = tmpdir;
	}
	if ((err = fmt_pt_to_safetensors(&env->ctx, srcpath, out, NULL, &res)))
		goto out;
	if (env->json)
		cmd_print_json(json_pack("{s:s, s:o, s:o, s:o, s:s, s:s, s:I, s:I, s:I}", "source", st ? repo : srcpath,
					 "repo", st ? json_string(repo) : json_null(), "repo_type",
					 st ? json_string(type) : json_null(), "revision", st ? json_string(commit) : json_null(),
					 "to", "safetensors", "output", out, "tensors", (json_int_t)res.tensors, "shards",
					 (json_int_t)res.shards, "bytes", (json_int_t)res.bytes));
	else if (!env->quiet)
		printf("converted %s to safetensors: %zu tensors in %zu file%s under %s\n", st ? repo : srcpath,
		       res.tensors, res.shards, res.shards == 1 ? "" : "s", out);
	rc = 0;
out:
	if (tmpdir[0]) {
		char *cmdline = util_asprintf("rm -rf '%s'", tmpdir);
		/* our own random name under the store's tmp/: no quoting surprises */
		if (cmdline && system(cmdline) != 0)
			fprintf(stderr, "hubmirror: warning: cannot remove '%s'\n", tmpdir);
		free(cmdline);
	}
	if (rc && err)
		rc = cmd_error(env, err);
	return rc;
}

static int convert_dir(struct cmd_env *env, struct cmd_args *a, const char *dir, const struct conv_options *o)
{
	const struct convert_vals *opt = a->o;
	struct dir_src d = {dir};
	struct conv_source src = {resolve_dir, &d, dir};
	struct conv_result res;
	char *out = opt->output ? util_strdup(opt->output) : default_output(dir, conv_type_name(o->type));
	enum hm_err err;
	if (!out)
		return cmd_error(env, hm_fail(&env->ctx, HM_ERR_NOMEM, "out of memory"));
	err = conv_to_gguf(&env->ctx, &src, o, out, &res);
	cmd_progress_end(env);
	if (!err)
		report(env, NULL, dir, NULL, conv_type_name(o->type), &res, out, NULL, 0);
	free(out);
	return err ? cmd_error(env, err) : 0;
}

static int run(struct cmd_env *env, struct cmd_args *a)
{
	const struct convert_vals *opt = a->o;
	const char *to = opt->to, *tname = opt->type, *src_arg;
	struct conv_options o = {.type = CONV_F16};
	struct repo_src rs = {0};
	struct mirror_artifact ma;
	struct conv_result res = {0};
	struct stat sb;
	char buf[256], commit[41];
	const char *type, *repo;
	enum hm_err err;
	int rc = 1, threads;

	if (a->npos != 1)
		return cmd_usage_error(&cmd_convert, "convert takes one SOURCE (a stored REPO or a directory)");
	src_arg = a->pos[0];
	if (to && strcmp(to, "gguf") && strcmp(to, "safetensors"))
		return cmd_usage_error(&cmd_convert, "unknown --to '%s' (gguf or safetensors)", to);
	if (tname && conv_type_parse(tname, &o.type) < 0)
		return cmd_usage_error(&cmd_convert, "unknown --type '%s' (f32, f16, bf16, q8_0 or q4_0)", tname);
	if (cmd_int_opt(a, &opt->threads, 0, 1, 256, &threads) < 0)
		return 2;
	o.threads = threads;
	o.name = opt->name;
	/* stored conversions are content-addressed, so always hashed; others on request */
	o.no_sha256 = !opt->sha256;

	if (stat(src_arg, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode))
			return cmd_usage_error(&cmd_convert, "'%s' is not a directory (SOURCE is a model directory or a"
					       " stored REPO)", src_arg);
		if (opt->revision)
			return cmd_usage_error(&cmd_convert, "--revision applies to a stored REPO, not a directory");
		if (to && !strcmp(to, "safetensors"))
			return to_safetensors(env, a, src_arg, NULL, NULL, NULL, NULL, NULL);
		return convert_dir(env, a, src_arg, &o);
	}

	if ((err = mirror_parse_repo(&env->ctx, src_arg, opt->repo_type, buf, sizeof(buf), &type, &repo)))
		goto out;
	if ((err = cmd_open_store(env, &rs.st)))
		goto out;
	err = store_resolve(&env->ctx, rs.st, type, repo, opt->revision, commit);
	if (err == HM_ERR_NOT_FOUND && !env->ctx.errmsg[0])
		hm_fail(&env->ctx, err, "'%s' is neither a directory nor a repository in the store", src_arg);
	if (err || (err = store_list_files(&env->ctx, rs.st, type, repo, commit, &rs.f, &rs.n)))
		goto out;
	if (to && !strcmp(to, "safetensors")) {
		rc = to_safetensors(env, a, NULL, rs.st, &rs, type, repo, commit);
		goto out;
	}
	if (o.name) {
		/* a custom name is not cached: the conversion goes to -o only */
		if (!opt->output) {
			err = hm_fail(&env->ctx, HM_ERR_USAGE, "--name makes a conversion that is not cached: give -o FILE");
			goto out;
		}
		err = mirror_convert_file(&env->ctx, rs.st, type, repo, commit, &o, opt->output, &res);
		cmd_progress_end(env);
		if (err)
			goto out;
		report(env, type, repo, commit, conv_type_name(o.type), &res, opt->output, NULL, 0);
		rc = 0;
		goto out;
	}
	err = mirror_convert(&env->ctx, rs.st, type, repo, commit, &o, opt->force, &ma);
	cmd_progress_end(env);
	if (err)
		goto out;
	if (opt->output && (err = store_artifact_export(&env->ctx, rs.st, ma.sha256, opt->output)))
		goto out;
	cmd_report_artifact(env, type, repo, commit, &ma, opt->output);
	rc = 0;
out:
	if (err)
		rc = cmd_error(env, err);
	store_files_free(rs.f, rs.n);
	store_close(rs.st);
	return rc;
}

const struct cmd cmd_convert = {
	"convert", "SOURCE [--to gguf] [--type f32|f16|bf16|q8_0|q4_0] [-o FILE] [--revision REV]",
	"Convert a Llama-family, Qwen, Gemma, Phi-3 or MoE checkpoint (a stored repo or a directory) to GGUF for llama.cpp.",
	"SOURCE is a stored REPO (its --revision) or a directory holding config.json,\n"
	"model.safetensors (or model.safetensors.index.json and shards) or else PyTorch\n"
	"pytorch_model.bin (or pytorch_model.bin.index.json and shards), tokenizer.json\n"
	"and tokenizer_config.json. PyTorch checkpoints are read in place (torch.save\n"
	"stores them uncompressed in a zip), their pickle by a restricted interpreter\n"
	"that never executes anything, every zip entry's CRC-32 checked; safetensors\n"
	"are preferred when a model has both (the output is the same).\n"
	"\n"
	"LlamaForCausalLM, MistralForCausalLM and MixtralForCausalLM (GGUF \"llama\"),\n"
	"Qwen2ForCausalLM (\"qwen2\"), Qwen3ForCausalLM (\"qwen3\"), Qwen3MoeForCausalLM\n"
	"(\"qwen3moe\"), SmolLM3ForCausalLM (\"smollm3\"), Gemma2ForCausalLM (\"gemma2\"),\n"
	"Gemma3ForCausalLM (\"gemma3\") and Phi3ForCausalLM (\"phi3\") with F32, F16 or\n"
	"BF16 weights convert the way llama.cpp's convert_hf_to_gguf.py does: its tensor\n"
	"names and metadata keys, Q/K rows permuted for llama's rope (llama, smollm3;\n"
	"the others keep HF order: NEOX rope), Gemma's norms stored as 1 + w, Phi-3's\n"
	"fused qkv and gate_up kept fused, LongRoPE factors, experts stacked into\n"
	"ffn_*_exps, norms, biases and routers kept F32, tied embeddings left out,\n"
	"tokenizer metadata (SentencePiece-style and byte-level BPE). Q8_0 and Q4_0 use\n"
	"ggml's reference quantizers; rows not a multiple of 32 stay F16.\n"
	"\n"
	"Every conversion is checked before it is kept: every value is compared with\n"
	"the source as it is converted (exact for F32/F16/BF16, within the block's\n"
	"bound for Q8_0/Q4_0), and the written file's header is read back and its\n"
	"tensor count, names, shapes, types and sizes compared with the plan. A failed\n"
	"check is an error and leaves nothing behind. Conversions going into the store\n"
	"are hashed (SHA-256) as they are written; others only with --sha256.\n"
	"\n"
	"A stored REPO's conversion is stored too, as a blob recorded with its revision\n"
	"and options ('ls REPO' lists it; 'rm' forgets it with its revision): converting\n"
	"again is a cache hit. -o FILE also writes it there. A directory's conversion\n"
	"goes to -o FILE (default NAME-TYPE.gguf in the current directory).\n"
	"\n"
	"--to safetensors rewrites PyTorch pytorch_model.bin checkpoints (single or\n"
	"sharded) as safetensors under -o DIR.",
	opts, sizeof(struct convert_vals), run,
};
