/* store_cmds.c - the small store commands: checkout, rm, gc, stats. */
#include <stdio.h>
#include <string.h>
#include "cmd.h"
#include "../mirror/mirror.h"

static int parse_one_repo(struct cmd_env *env, const struct cmd *c, const struct cmd_args *a, char *buf,
			  size_t len, const char **type, const char **repo, int *rc)
{
	enum hm_err err;
	if (a->npos != 1) {
		*rc = cmd_usage_error(c, a->npos ? "%s takes one repository" : "missing repository", c->name);
		return -1;
	}
	err = mirror_parse_repo(&env->ctx, a->pos[0], cmd_opt(a, "repo-type"), buf, len, type, repo);
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
	if (err == HM_ERR_NOT_FOUND && !env->ctx.errmsg[0])
		hm_fail(&env->ctx, err, rev ? "revision '%s' of '%s' not found in the store" : "%s'%s' not found in the store",
			rev ? rev : "", repo);
	return err;
}

/* ---- checkout ---- */

static const struct cmd_opt checkout_opts[] = {
	{"revision", 'r', "REV", 0, "ref, commit or commit prefix (default main, else the latest)"},
	{"repo-type", 't', "TYPE", 0, "model (default) or dataset"},
	{"to", 'o', "DIR", 0, "where to write (required)"},
	{"layout", 0, "LAYOUT", 0, "files (default: plain tree) or hf-cache (Hugging Face cache layout)"},
	{"copy", 0, NULL, 0, "independent writable copies instead of hard links (for files you will edit)"},
	{NULL, 0, NULL, 0, NULL},
};

static int checkout_run(struct cmd_env *env, struct cmd_args *a)
{
	char buf[256], commit[41];
	const char *type, *repo, *to = cmd_opt(a, "to"), *layout = cmd_opt(a, "layout"), *rev = cmd_opt(a, "revision");
	struct store *st = NULL;
	enum store_layout l = STORE_LAYOUT_FILES;
	enum hm_err err;
	int rc = 0;

	if (parse_one_repo(env, &cmd_checkout, a, buf, sizeof(buf), &type, &repo, &rc))
		return rc;
	if (!to)
		return cmd_usage_error(&cmd_checkout, "missing --to DIR");
	if (layout && !strcmp(layout, "hf-cache"))
		l = STORE_LAYOUT_HF_CACHE;
	else if (layout && strcmp(layout, "files"))
		return cmd_usage_error(&cmd_checkout, "unknown layout '%s': expected files or hf-cache", layout);
	if ((err = cmd_open_store(env, &st)) || (err = resolve(env, st, type, repo, rev, commit))) {
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
	err = store_checkout(&env->ctx, st, type, repo, commit, ref, to, l, cmd_flag(a, "copy"));
	if (err) {
		rc = cmd_error(env, err);
		goto out;
	}
	if (env->json)
		cmd_print_json(json_pack("{s:s, s:s, s:s, s:s, s:s}", "repo", repo, "repo_type", type, "revision", commit,
					 "to", to, "layout", l == STORE_LAYOUT_FILES ? "files" : "hf-cache"));
	else if (!env->quiet)
		printf("checked out %s@%.12s into %s (%s layout)%s\n", repo, commit, to,
		       l == STORE_LAYOUT_FILES ? "files" : "hf-cache",
		       l == STORE_LAYOUT_HF_CACHE ? "\nuse it with: HF_HUB_CACHE=<dir> HF_HUB_OFFLINE=1" : "");
out:
	store_close(st);
	return rc;
}

const struct cmd cmd_checkout = {
	"checkout", "REPO [--revision REV] --to DIR [--layout files|hf-cache]",
	"Materialize a stored revision as plain files or as a Hugging Face cache.",
	"Files are hard links to the store's read-only blobs (copies across filesystems):\n"
	"do not make them writable and edit them in place ('verify' would report the\n"
	"blob corrupt); use --copy for a tree you will edit.\n"
	"With --layout hf-cache, DIR is a HF_HUB_CACHE: set HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1\n"
	"and transformers / huggingface_hub load the model without a network.",
	checkout_opts, checkout_run,
};

/* ---- rm ---- */

static const struct cmd_opt rm_opts[] = {
	{"revision", 'r', "REV", 0, "remove only this revision (default: the whole repo)"},
	{"repo-type", 't', "TYPE", 0, "model (default) or dataset"},
	{NULL, 0, NULL, 0, NULL},
};

static int rm_run(struct cmd_env *env, struct cmd_args *a)
{
	char buf[256], commit[41];
	const char *type, *repo, *rev = cmd_opt(a, "revision");
	struct store *st = NULL;
	enum hm_err err;
	int rc = 0;

	if (parse_one_repo(env, &cmd_rm, a, buf, sizeof(buf), &type, &repo, &rc))
		return rc;
	if ((err = cmd_open_store(env, &st)) || (rev && (err = resolve(env, st, type, repo, rev, commit))) ||
	    (err = store_rm(&env->ctx, st, type, repo, rev ? commit : NULL))) {
		if (err == HM_ERR_NOT_FOUND && !rev)
			hm_fail(&env->ctx, err, "'%s' not found in the store", repo);
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
	NULL, rm_opts, rm_run,
};

/* ---- gc ---- */

static const struct cmd_opt no_opts[] = {{NULL, 0, NULL, 0, NULL}};

static int gc_run(struct cmd_env *env, struct cmd_args *a)
{
	struct store *st = NULL;
	struct store_gc_result r = {0};
	enum hm_err err;
	char h[32];
	if (a->npos)
		return cmd_usage_error(&cmd_gc, "gc takes no arguments");
	if ((err = cmd_open_store(env, &st)) || (err = store_gc(&env->ctx, st, &r))) {
		store_close(st);
		return cmd_error(env, err);
	}
	if (env->json)
		cmd_print_json(json_pack("{s:I, s:I, s:I}", "blobs_removed", (json_int_t)r.blobs_removed,
					 "bytes_removed", (json_int_t)r.bytes_removed, "partials_removed",
					 (json_int_t)r.partials_removed));
	else if (!env->quiet)
		printf("removed %llu unreferenced blob(s) (%s) and %llu stale partial download(s)\n",
		       (unsigned long long)r.blobs_removed, util_human_size(r.bytes_removed, h, sizeof(h)),
		       (unsigned long long)r.partials_removed);
	store_close(st);
	return 0;
}

const struct cmd cmd_gc = {
	"gc", "",
	"Remove blobs no revision references, and abandoned partial downloads.",
	NULL, no_opts, gc_run,
};

/* ---- stats ---- */

static const struct cmd_opt stats_opts[] = {
	{"repo", 0, "REPO", 0, "only this repository"},
	{NULL, 0, NULL, 0, NULL},
};

/* Sets "repo" and "repo_type" on o from a "type:name" key. */
static void stats_set_repo(json_t *o, const char *key)
{
	const char *colon = strchr(key, ':');
	json_object_set_new(o, "repo", json_string(colon ? colon + 1 : key));
	json_object_set_new(o, "repo_type", json_stringn(key, colon ? (size_t)(colon - key) : 0));
}

static json_t *served_json(const struct store_served_row *v, size_t n)
{
	json_t *repos = json_array(), *total = NULL;
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "requests", (json_int_t)v[i].requests,
				      "files", (json_int_t)v[i].files, "bytes", (json_int_t)v[i].bytes, "hits",
				      (json_int_t)v[i].hits, "misses", (json_int_t)v[i].misses, "errors",
				      (json_int_t)v[i].errors, "seconds", v[i].seconds);
		if (v[i].key) {
			stats_set_repo(o, v[i].key);
			json_array_append_new(repos, o);
		} else {
			total = o;
		}
	}
	return json_pack("{s:o, s:o}", "total", total ? total : json_object(), "repos", repos);
}

static void served_print(const struct store_served_row *v, size_t n)
{
	/* the total row is last: nothing served, no table */
	if (!n || !v[n - 1].requests)
		return;
	printf("\nSERVED\n%-48s %8s %8s %10s %8s %8s %7s\n", "REPO", "REQUESTS", "FILES", "BYTES", "HITS",
	       "MISSES", "ERRORS");
	for (size_t i = 0; i < n; i++) {
		char h[32];
		printf("%-48s %8llu %8llu %10s %8llu %8llu %7llu\n", v[i].key ? v[i].key : "total",
		       (unsigned long long)v[i].requests, (unsigned long long)v[i].files,
		       util_human_size(v[i].bytes, h, sizeof(h)), (unsigned long long)v[i].hits,
		       (unsigned long long)v[i].misses, (unsigned long long)v[i].errors);
	}
}

static int stats_run(struct cmd_env *env, struct cmd_args *a)
{
	struct store *st = NULL;
	struct store_stats_row *rows = NULL;
	struct store_served_row *served = NULL;
	size_t n = 0, nserved = 0;
	enum hm_err err;
	char key[300], *filter = NULL;
	const char *r = cmd_opt(a, "repo");

	if (a->npos)
		return cmd_usage_error(&cmd_stats, "stats takes no arguments");
	if (r) {
		char buf[256];
		const char *type, *repo;
		if ((err = mirror_parse_repo(&env->ctx, r, NULL, buf, sizeof(buf), &type, &repo)))
			return cmd_error(env, err);
		snprintf(key, sizeof(key), "%s:%s", type, repo);
		filter = key;
	}
	if ((err = cmd_open_store(env, &st)) || (err = store_stats(&env->ctx, st, filter, &rows, &n)) ||
	    (err = store_served_stats(&env->ctx, st, filter, &served, &nserved))) {
		store_stats_free(rows, n);
		store_close(st);
		return cmd_error(env, err);
	}
	if (env->json) {
		json_t *repos = json_array(), *total = NULL;
		for (size_t i = 0; i < n; i++) {
			json_t *o = json_pack("{s:I, s:I, s:f, s:f, s:I, s:I}", "files", (json_int_t)rows[i].files, "bytes",
					      (json_int_t)rows[i].bytes, "seconds", rows[i].seconds, "rate",
					      rows[i].seconds > 0 ? (double)rows[i].bytes / rows[i].seconds : 0.0,
					      "failures", (json_int_t)rows[i].failures, "retries", (json_int_t)rows[i].retries);
			if (rows[i].key) {
				stats_set_repo(o, rows[i].key);
				json_array_append_new(repos, o);
			} else {
				total = o;
			}
		}
		cmd_print_json(json_pack("{s:o, s:o, s:o}", "total", total ? total : json_object(), "repos", repos,
					 "served", served_json(served, nserved)));
	} else {
		printf("%-48s %8s %10s %9s %12s %8s %7s\n", "REPO", "FILES", "BYTES", "SECONDS", "AVG RATE", "RETRIES", "FAILED");
		for (size_t i = 0; i < n; i++) {
			char h[32], rt[32];
			printf("%-48s %8llu %10s %9.1f %12s %8llu %7llu\n", rows[i].key ? rows[i].key : "total",
			       (unsigned long long)rows[i].files, util_human_size(rows[i].bytes, h, sizeof(h)),
			       rows[i].seconds,
			       cmd_rate(rows[i].seconds > 0 ? (double)rows[i].bytes / rows[i].seconds : 0, rt, sizeof(rt)),
			       (unsigned long long)rows[i].retries, (unsigned long long)rows[i].failures);
		}
		served_print(served, nserved);
	}
	store_served_stats_free(served, nserved);
	store_stats_free(rows, n);
	store_close(st);
	return 0;
}

const struct cmd cmd_stats = {
	"stats", "[--repo REPO]",
	"Download and serving statistics per repo.",
	"Downloads: files, bytes, time, average rate, retries, failures.\n"
	"Served (by 'hubmirror serve'): requests, files, bytes, cache hits and misses,\n"
	"errors (status >= 400); requests that named no repository count in the total only.",
	stats_opts, stats_run,
};
