/* store_cmds.c - the small store commands: checkout, rm, gc. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cmd.h"
#include "../mirror/mirror.h"
#include "../store/checkout.h"
#include "../store/gc.h"
#include "../store/index.h"

/* The one REPO of checkout and rm, of --repo-type rtype (may be NULL). */
static int parse_one_repo(struct cmd_env *env, const struct cmd *c, const struct cmd_args *a, const char *rtype,
			  char *buf, size_t len, const char **type, const char **repo, int *rc)
{
	enum hm_err err;
	if (a->npos != 1) {
		*rc = cmd_usage_error(c, a->npos ? "%s takes one repository" : "missing repository", c->name);
		return -1;
	}
	err = mirror_parse_repo(&env->ctx, a->pos[0], rtype, buf, len, type, repo);
	if (err) {
		*rc = cmd_error(env, err);
		return -1;
	}
	return 0;
}

static enum hm_err resolve(struct cmd_env *env, struct store *st, const char *type, const char *repo,
			   const char *rev, char commit[41])
{
	env->ctx.errmsg[0] = 0;
	enum hm_err err = store_resolve(&env->ctx, st, type, repo, rev, commit);
	if (err == HM_ERR_NOT_FOUND) {
		if (!env->ctx.errmsg[0])
			hm_fail(&env->ctx, err, rev ? "revision '%s' of '%s' not found in the store" : "%s'%s' not found in the store",
				rev ? rev : "", repo);
		cmd_hint_type(env, st, type, repo);
	}
	return err;
}

/* ---- checkout ---- */

/* What the options of checkout_opts[] below set (a->o). */
struct checkout_vals {
	const char *revision, *repo_type, *to, *layout;
	int copy;
};

static const struct cmd_opt checkout_opts[] = {
	CMD_OPT_STR(struct checkout_vals, revision, "revision", 'r', "REV", "ref, commit or commit prefix (default main, else the latest)"),
	CMD_OPT_STR(struct checkout_vals, repo_type, "repo-type", 't', "TYPE", "model (default) or dataset"),
	CMD_OPT_STR(struct checkout_vals, to, "to", 'o', "DIR", "where to write (required, except with --layout hf-cache: default $HF_HUB_CACHE)"),
	CMD_OPT_STR(struct checkout_vals, layout, "layout", 0, "LAYOUT", "files (default: plain tree) or hf-cache (Hugging Face cache layout)"),
	CMD_OPT_FLAG(struct checkout_vals, copy, "copy", 0, "independent writable copies instead of hard links (for files you will edit)"),
	CMD_OPT_END,
};

static int checkout_run(struct cmd_env *env, struct cmd_args *a)
{
	const struct checkout_vals *opt = a->o;
	char buf[256], commit[41];
	const char *type, *repo, *to = opt->to, *layout = opt->layout, *rev = opt->revision;
	struct store *st = NULL;
	enum store_layout l = STORE_LAYOUT_FILES;
	enum hm_err err;
	int rc = 0;

	if (parse_one_repo(env, &cmd_checkout, a, opt->repo_type, buf, sizeof(buf), &type, &repo, &rc))
		return rc;
	char cachedir[4096];
	if (!to && layout && !strcmp(layout, "hf-cache"))
		to = cmd_hf_cache_dir(cachedir, sizeof(cachedir)); /* the cache your tools read */
	if (!to)
		return cmd_usage_error(&cmd_checkout, "missing --to DIR");
	if (layout && !strcmp(layout, "hf-cache"))
		l = STORE_LAYOUT_HF_CACHE;
	else if (layout && strcmp(layout, "files"))
		return cmd_usage_error(&cmd_checkout, "unknown layout '%s': expected files or hf-cache", layout);
	/* reading is enough: a user who cannot write the store checks out --copy */
	if ((err = cmd_open_store_mode(env, STORE_READ, &st)) || (err = resolve(env, st, type, repo, rev, commit))) {
		rc = cmd_error(env, err);
		goto out;
	}
	/* a named ref is written as refs/<ref> in the HF cache; default main */
	const char *ref = rev && !util_is_hex(rev, (size_t)strlen(rev)) ? rev : (rev ? NULL : "main");
	if (ref && !strcmp(ref, "main")) {
		char mc[41];
		struct hm_ctx q = {0};
		if (store_resolve(&q, st, type, repo, "main", mc) || strcmp(mc, commit))
			ref = NULL;
	}
	err = mirror_checkout(&env->ctx, st, type, repo, commit, ref, to, l, opt->copy);
	if (err) {
		rc = cmd_error(env, err);
		goto out;
	}
	if (env->json)
		cmd_print_json(json_pack("{s:s, s:s, s:s, s:s, s:s}", "repo", repo, "repo_type", type, "revision", commit,
					 "to", to, "layout", l == STORE_LAYOUT_FILES ? "files" : "hf-cache"));
	else if (!env->quiet) {
		char abs[4096];
		if (!realpath(to, abs))
			snprintf(abs, sizeof(abs), "%s", to);
		printf("checked out %s@%.12s into %s (%s layout)\n", repo, commit, abs,
		       l == STORE_LAYOUT_FILES ? "files" : "hf-cache");
		if (l == STORE_LAYOUT_HF_CACHE)
			printf("use it with: HF_HUB_CACHE=%s HF_HUB_OFFLINE=1\n", abs);
	}
out:
	store_close(st);
	return rc;
}

const struct cmd cmd_checkout = {
	"checkout", "REPO [--revision REV] --to DIR [--layout files|hf-cache]",
	"Materialize a stored revision as plain files or as a Hugging Face cache.",
	"Every blob must be in the store first (else: run 'verify --repair'); a new\n"
	"tree is built beside DIR and renamed into place, so nothing is half-written.\n"
	"Hard-linked checkouts are recorded: 'verify' checks they still hold the\n"
	"stored bytes and 'verify --repair' links them again after a repair.\n"
	"Files are hard links to the store's read-only blobs (copies across filesystems):\n"
	"do not make them writable and edit them in place ('verify' would report the\n"
	"blob corrupt); use --copy for a tree you will edit.\n"
	"With --layout hf-cache, DIR is a HF_HUB_CACHE: set HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1\n"
	"and transformers / huggingface_hub load the model without a network.",
	checkout_opts, sizeof(struct checkout_vals), checkout_run,
};

/* ---- rm ---- */

/* What the options of rm_opts[] below set (a->o). */
struct rm_vals {
	const char *revision, *repo_type;
};

static const struct cmd_opt rm_opts[] = {
	CMD_OPT_STR(struct rm_vals, revision, "revision", 'r', "REV", "remove only this revision (default: the whole repo)"),
	CMD_OPT_STR(struct rm_vals, repo_type, "repo-type", 't', "TYPE", "model (default) or dataset"),
	CMD_OPT_END,
};

static int rm_run(struct cmd_env *env, struct cmd_args *a)
{
	const struct rm_vals *opt = a->o;
	char buf[256], commit[41];
	const char *type, *repo, *rev = opt->revision;
	struct store *st = NULL;
	enum hm_err err;
	int rc = 0;

	if (parse_one_repo(env, &cmd_rm, a, opt->repo_type, buf, sizeof(buf), &type, &repo, &rc))
		return rc;
	if ((err = cmd_open_store(env, &st))) {
		rc = cmd_error(env, err);
		goto out;
	}
	if ((rev && (err = resolve(env, st, type, repo, rev, commit))) ||
	    (err = store_rm(&env->ctx, st, type, repo, rev ? commit : NULL))) {
		if (err == HM_ERR_NOT_FOUND && !rev) {
			hm_fail(&env->ctx, err, "'%s' not found in the store", repo);
			cmd_hint_type(env, st, type, repo);
		}
		rc = cmd_error(env, err);
		goto out;
	}
	if (!env->quiet && !env->json)
		printf("removed %s%s%.12s from the index; 'hubmirror gc' frees the space\n", repo, rev ? "@" : "",
		       rev ? commit : "");
	if (env->json)
		cmd_print_json(json_pack("{s:s, s:s, s:o}", "repo", repo, "repo_type", type, "revision",
					 rev ? json_string(commit) : json_null()));
out:
	store_close(st);
	return rc;
}

const struct cmd cmd_rm = {
	"rm", "REPO [--revision REV]",
	"Forget a repository (or one revision); 'gc' then frees unshared blobs.",
	NULL, rm_opts, sizeof(struct rm_vals), rm_run,
};

/* ---- gc ---- */

/* What the options of gc_opts[] below set (a->o). */
struct gc_vals {
	const char *keep_partials_days;
	int dry_run, force;
};

static const struct cmd_opt gc_opts[] = {
	CMD_OPT_FLAG(struct gc_vals, dry_run, "dry-run", 'n', "remove nothing: list what would go and what stays, and why"),
	CMD_OPT_STR(struct gc_vals, keep_partials_days, "keep-partials-days", 0, "DAYS", "keep partial downloads written to in the last DAYS days (default 7; 0 removes every unused one)"),
	CMD_OPT_FLAG(struct gc_vals, force, "force", 0, "collect even when the index knows no revision and no pull (a lost index.db looks like that)"),
	CMD_OPT_END,
};

struct gc_print {
	struct cmd_env *env;
	json_t *items;
	int dry;
};

static void gc_item(void *ud, const struct store_gc_item *it)
{
	struct gc_print *g = ud;
	char h[32];
	if (g->items) {
		json_array_append_new(g->items, json_pack("{s:s, s:s, s:I, s:s, s:s}", "kind", it->kind, "path", it->name,
							  "bytes", (json_int_t)it->bytes, "action",
							  it->removed ? (g->dry ? "would remove" : "removed") : "kept",
							  "why", it->why));
		return;
	}
	/* a real run lists nothing per item: the summary says what and why */
	if (!g->dry || g->env->quiet)
		return;
	printf("%s %s %s (%s): %s\n", it->removed ? "would remove" : "keep", it->kind, it->name,
	       util_human_size(it->bytes, h, sizeof(h)), it->why);
}

static int gc_run(struct cmd_env *env, struct cmd_args *a)
{
	const struct gc_vals *opt = a->o;
	struct store *st = NULL;
	struct store_gc_result r = {0};
	struct store_gc_opts o = {0};
	struct gc_print g = {env, NULL, opt->dry_run};
	enum hm_err err;
	char h[32], h2[32], h3[32];
	int keep_days;
	const char *would = g.dry ? "would remove" : "removed";

	if (a->npos)
		return cmd_usage_error(&cmd_gc, "gc takes no arguments");
	if (cmd_int_opt(a, &opt->keep_partials_days, 7, 0, 36500, &keep_days))
		return 2;
	o.dry_run = g.dry;
	o.force = opt->force;
	o.keep_partials_s = (int64_t)keep_days * 86400;
	o.on_item = gc_item;
	o.ud = &g;
	if (env->json && g.dry)
		g.items = json_array();
	if ((err = cmd_open_store(env, &st)) || (err = store_gc(&env->ctx, st, &o, &r))) {
		json_decref(g.items);
		store_close(st);
		return cmd_error(env, err);
	}
	if (env->json) {
		json_t *j = json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:s?}}",
				      "store", store_name(st), "dry_run", g.dry, "blobs_removed", (json_int_t)r.blobs_removed,
				      "bytes_removed", (json_int_t)r.bytes_removed, "partials_removed",
				      (json_int_t)r.partials_removed, "partial_bytes_removed", (json_int_t)r.partial_bytes_removed,
				      "scratch_removed", (json_int_t)r.scratch_removed, "scratch_bytes_removed",
				      (json_int_t)r.scratch_bytes_removed, "kept", "blobs_in_use_elsewhere",
				      (json_int_t)r.blobs_kept, "blob_bytes_in_use_elsewhere", (json_int_t)r.bytes_kept,
				      "orphans_in_use_elsewhere", (json_int_t)r.orphans_kept, "partials_young",
				      (json_int_t)r.partials_young, "partial_bytes_young", (json_int_t)r.partial_bytes_young,
				      "partials_busy", (json_int_t)r.partials_busy, "holders", r.holders[0] ? r.holders : NULL);
		if (g.items)
			json_object_set_new(j, "items", g.items);
		cmd_print_json(j);
	} else if (!env->quiet) {
		printf("%s %llu unreferenced blob(s) (%s), %llu partial download(s) (%s) and %llu interrupted"
		       " conversion(s) (%s)\n", would, (unsigned long long)r.blobs_removed,
		       util_human_size(r.bytes_removed, h, sizeof(h)), (unsigned long long)r.partials_removed,
		       util_human_size(r.partial_bytes_removed, h2, sizeof(h2)), (unsigned long long)r.scratch_removed,
		       util_human_size(r.scratch_bytes_removed, h3, sizeof(h3)));
		if (r.partials_young)
			printf("kept %llu partial download(s) (%s) younger than %d day(s): the same pull resumes them"
			       " ('gc --keep-partials-days 0' removes them)\n", (unsigned long long)r.partials_young,
			       util_human_size(r.partial_bytes_young, h, sizeof(h)), keep_days);
		if (r.partials_busy)
			printf("kept %llu partial download(s) a running download is using\n",
			       (unsigned long long)r.partials_busy);
		if (r.blobs_kept || r.orphans_kept)
			printf("kept %llu unreferenced blob(s) (%s) added in the last hour and %llu file(s) without"
			       " index rows: another process has the store open%s%s%s, and a pull may be about to record"
			       " them; run gc again when it is done\n", (unsigned long long)r.blobs_kept,
			       util_human_size(r.bytes_kept, h, sizeof(h)), (unsigned long long)r.orphans_kept,
			       r.holders[0] ? " (" : "", r.holders, r.holders[0] ? ")" : "");
	}
	store_close(st);
	return 0;
}

const struct cmd cmd_gc = {
	"gc", "[--dry-run] [--keep-partials-days DAYS] [--force]",
	"Remove blobs no revision references, and abandoned partial downloads.",
	"Unreferenced blobs, partial downloads no running pull uses and that are\n"
	"older than --keep-partials-days (default 7: 'pull' resumes younger ones), and\n"
	"temp files of conversions whose process is gone are removed. While another\n"
	"process has the store open, blobs added in the last hour and files without\n"
	"index rows stay (a pull may be about to record them); gc says so.\n"
	"gc refuses when the index knows no revision and no pull while blobs exist\n"
	"(what a lost or replaced index.db looks like): 'hubmirror rebuild-index'\n"
	"indexes the blobs again; --force deletes them.",
	gc_opts, sizeof(struct gc_vals), gc_run,
};
