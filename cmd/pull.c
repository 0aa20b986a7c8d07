/* pull.c - `hubmirror pull`: mirror one revision of a repo into the store. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cmd.h"
#include "../mirror/mirror.h"
#include "../store/checkout.h"

/* What the options of opts[] below set (a->o). */
struct pull_vals {
	const char *revision, *repo_type, *convert, *to, *layout, *local_dir;
	struct cmd_list include, exclude;
	int smoke, force, copy, dry_run, offline;
	struct cmd_net_vals net;
	struct cmd_p2p_vals p2p;
};

static const struct cmd_opt opts[] = {
	CMD_OPT_STR(struct pull_vals, revision, "revision", 'r', "REV", "branch, tag, commit or refs/pr/N (default main)"),
	CMD_OPT_STR(struct pull_vals, repo_type, "repo-type", 't', "TYPE", "model (default) or dataset"),
	CMD_OPT_LIST(struct pull_vals, include, "include", 'i', "GLOB", "only files matching GLOB ('*' crosses '/')"),
	CMD_OPT_LIST(struct pull_vals, exclude, "exclude", 'x', "GLOB", "skip files matching GLOB"),
	CMD_OPT_STR(struct pull_vals, convert, "convert", 0, "TYPE", "then convert to GGUF of TYPE (f32|f16|bf16|q8_0|q4_0), stored"),
	CMD_OPT_FLAG(struct pull_vals, smoke, "smoke", 0, "then smoke-test the model (the conversion, with --convert)"),
	CMD_OPT_FLAG(struct pull_vals, force, "force", 0, "pull even when the store's disk looks too small for it"),
	CMD_OPT_STR(struct pull_vals, to, "to", 'o', "DIR", "also check the revision out under DIR (hard links) and print its path"),
	CMD_OPT_STR(struct pull_vals, layout, "layout", 0, "LAYOUT", "with --to: files (default) or hf-cache (DIR is a HF_HUB_CACHE)"),
	CMD_OPT_STR(struct pull_vals, local_dir, "local-dir", 0, "DIR", "the same as --to DIR --layout files (hf download's name)"),
	CMD_OPT_FLAG(struct pull_vals, copy, "copy", 0, "with --to: independent copies instead of hard links"),
	CMD_OPT_FLAG(struct pull_vals, dry_run, "dry-run", 'n', "list what would be downloaded and its size; download nothing"),
	CMD_OPT_FLAG(struct pull_vals, offline, "offline", 0, "use only the store, no network (also HF_HUB_OFFLINE=1); what is not stored is an error"),
	CMD_NET_OPTS(struct pull_vals),
	CMD_P2P_OPTS(struct pull_vals),
	CMD_OPT_END,
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

/* Errors after which pulling again can help. */
static int resumable(enum hm_err e)
{
	return e == HM_ERR_NET || e == HM_ERR_UNREACHABLE || e == HM_ERR_HTTP || e == HM_ERR_RATE_LIMITED ||
	       e == HM_ERR_CANCELLED || e == HM_ERR_CORRUPT || e == HM_ERR_NOSPC || e == HM_ERR_LOCKED;
}

/* The failed files, a few by name, then one summary line. */
static void report_failures(struct cmd_env *env, enum hm_err err, const char *label, const struct mirror_pull_result *r)
{
	size_t shown = 0, max = 5;
	if (err == HM_ERR_GATED || err == HM_ERR_AUTH || err == HM_ERR_NOSPC || err == HM_ERR_CANCELLED || !r->nfailed)
		return; /* one cause for every file: the error says it all, once */
	for (size_t i = 0; i < r->nfiles; i++) {
		const struct mirror_file *f = &r->files[i];
		if (!f->errmsg || f->err == HM_ERR_CANCELLED || !strcmp(f->errmsg, "not started"))
			continue;
		if (shown++ < max)
			fprintf(stderr, "hubmirror: failed: %s: %s\n", f->path, f->errmsg);
	}
	if (shown > max)
		fprintf(stderr, "hubmirror: ... and %zu more failed files\n", shown - max);
	snprintf(env->ctx.errmsg, sizeof(env->ctx.errmsg), "%zu of %zu files of '%s' failed%s", r->nfailed, r->nfiles,
		 label, resumable(err) ? "; run the same pull again to resume" : "");
}

/* Checks the revision out under --to / --local-dir; path receives where the
 * snapshot is (for an hf-cache, its snapshots/<commit> directory). */
static enum hm_err checkout_to(struct cmd_env *env, struct store *st, const struct mirror_pull_opts *o,
			       const char *commit, const char *to, enum store_layout l, int copy, char *path, size_t plen)
{
	const char *ref = o->revision && !util_is_hex(o->revision, strlen(o->revision)) ? o->revision
			  : (o->revision ? NULL : "main");
	char abs[4096];
	enum hm_err err = mirror_checkout(&env->ctx, st, o->type, o->repo, commit, ref, to, l, copy);
	if (err)
		return err;
	if (!realpath(to, abs))
		snprintf(abs, sizeof(abs), "%s", to);
	if (l == STORE_LAYOUT_FILES) {
		snprintf(path, plen, "%s", abs);
	} else {
		char flat[300];
		size_t n = 0;
		for (const char *p = o->repo; *p && n + 3 < sizeof(flat); p++) {
			if (*p == '/') {
				flat[n++] = '-';
				flat[n++] = '-';
			} else {
				flat[n++] = *p;
			}
		}
		flat[n] = 0;
		int n0 = snprintf(path, plen, "%s", abs);
		if (n0 > 0 && (size_t)n0 < plen)
			snprintf(path + n0, plen - (size_t)n0, "/%ss--%s/snapshots/%s", o->type, flat, commit);
	}
	return HM_OK;
}

static int dry_run_report(struct cmd_env *env, const struct mirror_pull_opts *o, const char *label,
			  const struct mirror_pull_result *r)
{
	uint64_t bytes = 0;
	size_t n = 0;
	char h[32], h2[32];
	for (size_t i = 0; i < r->nfiles; i++)
		if (!r->files[i].present) {
			bytes += r->files[i].size;
			n++;
		}
	if (env->json) {
		json_t *files = json_array();
		for (size_t i = 0; i < r->nfiles; i++)
			json_array_append_new(files, json_pack("{s:s, s:I, s:b, s:b}", "path", r->files[i].path, "size",
							       (json_int_t)r->files[i].size, "lfs", r->files[i].lfs,
							       "present", r->files[i].present));
		cmd_print_json(json_pack("{s:s, s:s, s:s, s:b, s:o, s:I, s:I}", "repo", o->repo, "repo_type", o->type,
					 "revision", r->commit, "dry_run", 1, "files", files, "files_to_download",
					 (json_int_t)n, "bytes_to_download", (json_int_t)bytes));
		return 0;
	}
	if (!env->quiet)
		for (size_t i = 0; i < r->nfiles; i++)
			printf("%s %10s  %s\n", r->files[i].present ? "have" : "get ",
			       util_human_size(r->files[i].size, h, sizeof(h)), r->files[i].path);
	printf("would download %zu of %zu files of %s@%.12s (%s of %s); nothing was downloaded\n", n, r->nfiles, label,
	       r->commit, util_human_size(bytes, h, sizeof(h)), util_human_size(r->bytes_total, h2, sizeof(h2)));
	return 0;
}

/* The summary of a pull that succeeded (and where it was checked out, to). */
static void print_result(struct cmd_env *env, const struct mirror_pull_opts *o, const char *label,
			 const struct mirror_pull_result *res, const char *to)
{
	if (env->json) {
		json_t *j = result_json(o->type, o->repo, res);
		if (to)
			json_object_set_new(j, "path", json_string(to));
		cmd_print_json(j);
	} else if (!env->quiet) {
		char h1[32], h2[32], r[32];
		printf("%s %s@%.12s: %zu files (%s), %zu downloaded (%s in %.1fs, %s)\n",
		       res->ndownloaded ? "pulled" : "up to date", label, res->commit, res->nfiles,
		       util_human_size(res->bytes_total, h1, sizeof(h1)), res->ndownloaded,
		       util_human_size(res->bytes_downloaded, h2, sizeof(h2)), res->seconds,
		       cmd_rate(res->seconds > 0 ? (double)res->bytes_downloaded / res->seconds : 0, r, sizeof(r)));
		if (to)
			printf("%s\n", to);
	} else if (to) {
		printf("%s\n", to); /* -q: only the path, for scripts */
	}
}

static int run(struct cmd_env *env, struct cmd_args *a)
{
	const struct pull_vals *opt = a->o;
	struct store *st = NULL;
	struct fetch_client *fc = NULL;
	struct mirror_pull_result res = {0};
	struct mirror_pull_opts o = {0};
	struct mirror_swarm *sw = NULL;
	char buf[256], label[300], path[4096] = "";
	const char *incs[CMD_MAX_VALUES * 2];
	const char *to = opt->to, *layout = opt->layout, *local = opt->local_dir;
	enum store_layout l = STORE_LAYOUT_FILES;
	enum hm_err err;
	int rc;
	size_t ninc;

	if (a->npos < 1)
		return cmd_usage_error(&cmd_pull, "missing repository");
	if (local && to)
		return cmd_usage_error(&cmd_pull, "--local-dir DIR is --to DIR --layout files: give one of them");
	if (local) {
		if (layout && strcmp(layout, "files"))
			return cmd_usage_error(&cmd_pull, "--local-dir writes plain files; for a cache use --to DIR --layout hf-cache");
		to = local;
	}
	if (layout && !strcmp(layout, "hf-cache"))
		l = STORE_LAYOUT_HF_CACHE;
	else if (layout && strcmp(layout, "files"))
		return cmd_usage_error(&cmd_pull, "unknown layout '%s': expected files or hf-cache", layout);
	char cachedir[4096];
	if (!to && l == STORE_LAYOUT_HF_CACHE)
		to = cmd_hf_cache_dir(cachedir, sizeof(cachedir)); /* the cache your tools read */
	if (layout && !to)
		return cmd_usage_error(&cmd_pull, "--layout needs --to DIR");
	err = mirror_parse_repo(&env->ctx, a->pos[0], opt->repo_type, buf, sizeof(buf), &o.type, &o.repo);
	if (err)
		return cmd_error(env, err);
	snprintf(label, sizeof(label), "%s%s", strcmp(o.type, "dataset") ? "" : "datasets/", o.repo);
	o.revision = opt->revision;
	/* FILE... after the repo, as `hf download REPO FILE...`: each one is an include */
	ninc = (size_t)opt->include.n;
	for (size_t i = 0; i < ninc; i++)
		incs[i] = opt->include.v[i];
	for (int i = 1; i < a->npos; i++)
		incs[ninc++] = a->pos[i];
	o.ninclude = ninc;
	o.include = ninc ? incs : NULL;
	o.nexclude = (size_t)opt->exclude.n;
	o.exclude = opt->exclude.v;
	o.dry_run = opt->dry_run;
	o.force = opt->force;
	o.offline = cmd_offline(opt->offline);
	/* a pull makes the store */
	if ((err = cmd_client(env, a, &opt->net, &fc)) || (err = cmd_open_store_mode(env, STORE_CREATE, &st))) {
		rc = cmd_error(env, err);
		goto out;
	}
	cmd_progress_label(env, o.type, o.repo);
	if ((rc = cmd_swarm_open(env, a, &opt->p2p, &sw)))
		goto out;
	o.swarm = sw;
	err = mirror_pull(&env->ctx, st, fc, &o, &res);
	cmd_progress_end(env);
	if (res.stale[0] && !env->quiet)
		fprintf(stderr, "hubmirror: warning: %s; using the stored revision %.12s of '%s'\n", res.stale, res.commit,
			label);
	if (!err && o.dry_run) {
		rc = dry_run_report(env, &o, label, &res);
		goto out;
	}
	/* a FILE named on the command line must exist */
	for (int i = 1; !err && i < a->npos; i++) {
		int found = strpbrk(a->pos[i], "*?[") != NULL;
		for (size_t k = 0; k < res.nfiles && !found; k++)
			found = !strcmp(res.files[k].path, a->pos[i]);
		if (!found)
			err = hm_fail(&env->ctx, HM_ERR_ENTRY_NOT_FOUND, "'%s' has no file '%s' at %.12s", label, a->pos[i],
				      res.commit);
	}
	if (err) {
		report_failures(env, err, label, &res);
		if (env->json && res.commit[0]) {
			json_t *j = result_json(o.type, o.repo, &res);
			json_object_set_new(j, "error", json_pack("{s:s, s:o}", "code", cmd_err_code(err), "message",
								  cmd_json_text(env->ctx.errmsg, strlen(env->ctx.errmsg))));
			cmd_print_json(j);
			env->json_done = 1;
		}
		rc = cmd_error(env, err);
		goto out;
	}
	if (to && (err = checkout_to(env, st, &o, res.commit, to, l, opt->copy, path, sizeof(path)))) {
		rc = cmd_error(env, err);
		goto out;
	}
	print_result(env, &o, label, &res, to ? path : NULL);
	rc = 0;
	if (opt->convert || opt->smoke)
		rc = cmd_post_pull(env, st, o.type, o.repo, res.commit, opt->convert, opt->smoke, NULL, 0);
out:
	cmd_swarm_close(env, &opt->p2p, rc ? NULL : sw);
	if (rc)
		mirror_swarm_free(sw);
	mirror_pull_result_release(&res);
	store_close(st);
	fetch_client_free(fc);
	return rc;
}

const struct cmd cmd_pull = {
	"pull", "REPO[@REV] [FILE]... [--include GLOB]... [--exclude GLOB]... [--to DIR [--layout files|hf-cache]]",
	"Download a repository revision into the store, verified and resumable.",
	"REPO is 'org/name', 'datasets/org/name' or 'hf://[datasets/]org/name', with an\n"
	"optional '@REV' (branch, tag, commit). FILE... pulls only those files, as\n"
	"'hf download REPO FILE...'. Large files are split over several connections; an\n"
	"interrupted pull resumes where it stopped. Every file is checked (SHA-256 for\n"
	"LFS files, git blob SHA-1 otherwise) before it enters the store. A second pull\n"
	"of the same revision downloads nothing. --to DIR also checks the revision out\n"
	"(hard links) and prints the path at the end (with -q, only the path).\n"
	"--dry-run lists what would be downloaded, and its size.\n"
	"Before the first byte, pull checks that the store's filesystem has room for\n"
	"what it will download and refuses with the numbers otherwise (--force tries\n"
	"anyway). A disk that fills up mid-pull stops it with one line naming the\n"
	"store; what is stored stays intact and the same pull resumes later.\n"
	"--json: see docs/json.md.\n"
	"With --p2p (a lab machine whose endpoint is a 'hubmirror serve --p2p'), LFS blobs\n"
	"come from the lab's BitTorrent v2 swarm: torrents only from the endpoint, every\n"
	"blob SHA-256-checked before it enters the store. When the whole swarm makes no\n"
	"progress for --p2p-stall seconds (tracker down, no peers), or one blob for four\n"
	"times that, HTTP takes over, keeping the pieces already verified (ranged).\n"
	"The machine seeds while pulling and for --seed-time seconds after.",
	opts, sizeof(struct pull_vals), run,
};
