/* pull.c - `hubmirror pull`: mirror one revision of a repo into the store. */
#include <stdio.h>
#include <string.h>
#include "cmd.h"
#include "../mirror/mirror.h"

static const struct cmd_opt opts[] = {
	{"revision", 'r', "REV", 0, "branch, tag, commit or refs/pr/N (default main)"},
	{"repo-type", 't', "TYPE", 0, "model (default) or dataset"},
	{"include", 'i', "GLOB", 1, "only files matching GLOB ('*' crosses '/')"},
	{"exclude", 'x', "GLOB", 1, "skip files matching GLOB"},
	{"convert", 0, "TYPE", 0, "then convert to GGUF of TYPE (f32|f16|bf16|q8_0|q4_0), stored"},
	{"smoke", 0, NULL, 0, "then smoke-test the model (the conversion, with --convert)"},
	{"force", 0, NULL, 0, "pull even when the store's disk looks too small for it"},
	CMD_NET_OPTS,
	{NULL, 0, NULL, 0, NULL},
};

static json_t *result_json(const char *type, const char *repo, const struct mirror_pull_result *r)
{
	json_t *files = json_array(), *o;
	for (size_t i = 0; i < r->nfiles; i++) {
		const struct mirror_file *f = &r->files[i];
		json_t *jf = json_pack("{s:s, s:I, s:b, s:b, s:s}", "path", f->path, "size", (json_int_t)f->size,
				       "lfs", f->lfs, "downloaded", f->downloaded, "git_oid", f->git_oid);
		json_object_set_new(jf, "sha256", f->sha256[0] ? json_string(f->sha256) : json_null());
		if (f->downloaded)
			json_object_set_new(jf, "bytes", json_integer((json_int_t)f->bytes));
		if (f->errmsg)
			json_object_set_new(jf, "error", json_string(f->errmsg));
		json_array_append_new(files, jf);
	}
	o = json_pack("{s:s, s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:f}", "repo", repo, "repo_type", type,
		      "revision", r->commit, "files", files, "files_downloaded", (json_int_t)r->ndownloaded,
		      "files_failed", (json_int_t)r->nfailed, "bytes_downloaded", (json_int_t)r->bytes_downloaded,
		      "bytes_total", (json_int_t)r->bytes_total, "seconds", r->seconds);
	return o;
}

static int run(struct cmd_env *env, struct cmd_args *a)
{
	struct store *st = NULL;
	struct fetch_client *fc = NULL;
	struct mirror_pull_result res = {0};
	struct mirror_pull_opts o = {0};
	char buf[256];
	const char **inc, **exc;
	enum hm_err err;
	int rc;

	if (a->npos != 1)
		return cmd_usage_error(&cmd_pull, a->npos ? "pull takes one repository" : "missing repository");
	err = mirror_parse_repo(&env->ctx, a->pos[0], cmd_opt(a, "repo-type"), buf, sizeof(buf), &o.type, &o.repo);
	if (err)
		return cmd_error(env, err);
	o.revision = cmd_opt(a, "revision");
	o.ninclude = (size_t)cmd_values(a, "include", &inc);
	o.nexclude = (size_t)cmd_values(a, "exclude", &exc);
	o.include = inc;
	o.exclude = exc;
	o.force = cmd_flag(a, "force");
	if ((err = cmd_client(env, a, &fc)) || (err = cmd_open_store_mode(env, STORE_CREATE, &st))) {
		rc = cmd_error(env, err);
		goto out;
	}
	err = mirror_pull(&env->ctx, st, fc, &o, &res);
	cmd_progress_end();
	if (env->json && res.commit[0])
		cmd_print_json(result_json(o.type, o.repo, &res));
	if (err == HM_ERR_NOSPC) {
		/* one cause for every file: one line, naming the store */
		rc = cmd_error(env, err);
		goto out;
	}
	if (err) {
		for (size_t i = 0; i < res.nfiles; i++)
			if (res.files[i].errmsg)
				fprintf(stderr, "hubmirror: failed: %s: %s\n", res.files[i].path, res.files[i].errmsg);
		if (res.nfailed > 1)
			snprintf(env->ctx.errmsg, sizeof(env->ctx.errmsg),
				 "%zu of %zu files of '%s' failed; run the same pull again to resume", res.nfailed,
				 res.nfiles, o.repo);
		else if (res.nfailed == 1)
			snprintf(env->ctx.errmsg, sizeof(env->ctx.errmsg),
				 "1 file of '%s' failed; run the same pull again to resume", o.repo);
		rc = cmd_error(env, err);
		goto out;
	}
	if (!env->json && !env->quiet) {
		char h1[32], h2[32], r[32];
		printf("%s %s@%.12s: %zu files (%s), %zu downloaded (%s in %.1fs, %s)\n",
		       res.ndownloaded ? "pulled" : "up to date", o.repo, res.commit, res.nfiles,
		       util_human_size(res.bytes_total, h1, sizeof(h1)), res.ndownloaded,
		       util_human_size(res.bytes_downloaded, h2, sizeof(h2)), res.seconds,
		       cmd_rate(res.seconds > 0 ? (double)res.bytes_downloaded / res.seconds : 0, r, sizeof(r)));
	}
	rc = 0;
	if (cmd_opt(a, "convert") || cmd_flag(a, "smoke"))
		rc = cmd_post_pull(env, st, o.type, o.repo, res.commit, cmd_opt(a, "convert"), cmd_flag(a, "smoke"), NULL, 0);
out:
	mirror_pull_result_release(&res);
	store_close(st);
	fetch_client_free(fc);
	return rc;
}

const struct cmd cmd_pull = {
	"pull", "REPO [--revision REV] [--include GLOB]... [--exclude GLOB]... [--connections N]",
	"Download a repository revision into the store, verified and resumable.",
	"REPO is 'org/name' (or 'datasets/org/name', 'dataset:org/name'). Large files are\n"
	"split over several connections; an interrupted pull resumes where it stopped.\n"
	"Every file is checked (SHA-256 for LFS files, git blob SHA-1 otherwise) before it\n"
	"enters the store. A second pull of the same revision downloads nothing.\n"
	"Before the first byte, pull checks that the store's filesystem has room for\n"
	"what it will download and refuses with the numbers otherwise (--force tries\n"
	"anyway). A disk that fills up mid-pull stops it with one line naming the\n"
	"store; what is stored stays intact and the same pull resumes later.\n"
	"With --json: {repo, repo_type, revision, files: [{path, size, sha256, lfs,\n"
	"downloaded}], bytes_downloaded, ...}.",
	opts, run,
};
