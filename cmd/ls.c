/* ls.c - `hubmirror ls`: what is mirrored. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "cmd.h"
#include "../mirror/mirror.h"
#include "../store/artifacts.h"
#include "../store/index.h"
#include "../store/smoke.h"

/* What the options of opts[] below set (a->o). */
struct ls_vals {
	const char *repo_type, *revision;
};

static const struct cmd_opt opts[] = {
	CMD_OPT_STR(struct ls_vals, repo_type, "repo-type", 't', "TYPE", "model (default) or dataset"),
	CMD_OPT_STR(struct ls_vals, revision, "revision", 'r', "REV", "which revision's files to list (default main, else the latest)"),
	CMD_OPT_END,
};

static const char *when(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

static json_t *refs_json(const char *refs)
{
	json_t *a = json_array();
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", refs ? refs : "");
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
		json_array_append_new(a, json_string(t));
	return a;
}

static json_t *revs_json(struct store_rev_info *rv, size_t n)
{
	json_t *a = json_array();
	char w[64];
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:s, s:o, s:s, s:I, s:I}", "commit", rv[i].commit, "refs",
						   refs_json(rv[i].refs), "pulled_at", when(rv[i].pulled_at, w, sizeof(w)),
						   "files", (json_int_t)rv[i].nfiles, "bytes", (json_int_t)rv[i].bytes));
	return a;
}

static int list_all(struct cmd_env *env, struct store *st)
{
	struct store_repo_info *ri = NULL;
	size_t n = 0;
	enum hm_err err = store_list_repos(&env->ctx, st, &ri, &n);
	json_t *out = env->json ? json_array() : NULL;
	struct cmd_table tab;
	static const char *const heads[] = {"REPO", "TYPE", "REVISIONS", "SIZE", "REFS"};
	if (err)
		return cmd_error(env, err);
	cmd_print_store(env, st);
	if (!env->json && !n)
		printf("the store is empty: 'hubmirror pull ORG/NAME' mirrors a repository\n");
	cmd_table_init(&tab, 5, heads, "llrrl", "yny.y");
	for (size_t i = 0; i < n; i++) {
		struct store_rev_info *rv = NULL;
		size_t nrv = 0;
		char h[32];
		err = store_list_revisions(&env->ctx, st, ri[i].type, ri[i].name, &rv, &nrv);
		if (err)
			break;
		if (env->json) {
			json_array_append_new(out, json_pack("{s:s, s:s, s:I, s:o}", "repo", ri[i].name, "repo_type", ri[i].type,
							     "bytes", (json_int_t)ri[i].bytes, "revisions", revs_json(rv, nrv)));
		} else {
			char refs[512] = "", nrev[32], name[300];
			for (size_t k = 0; k < nrv; k++)
				if (rv[k].refs && *rv[k].refs) {
					size_t l = strlen(refs);
					snprintf(refs + l, sizeof(refs) - l, "%s%s->%.7s", l ? " " : "", rv[k].refs, rv[k].commit);
				}
			snprintf(nrev, sizeof(nrev), "%zu", nrv);
			snprintf(name, sizeof(name), "%s%s", strcmp(ri[i].type, "dataset") ? "" : "datasets/", ri[i].name);
			const char *row[] = {name, ri[i].type, nrev, util_human_size(ri[i].bytes, h, sizeof(h)), refs};
			cmd_table_row(&tab, row);
		}
		store_rev_info_free(rv, nrv);
	}
	store_repo_info_free(ri, n);
	if (!err && !env->json && n)
		cmd_table_print(env, &tab, stdout);
	cmd_table_release(&tab);
	if (err) {
		json_decref(out);
		return cmd_error(env, err);
	}
	if (env->json)
		cmd_print_json(json_pack("{s:s, s:o}", "store", store_name(st), "repos", out));
	return 0;
}

/* The newest smoke result of a stored conversion (rows are newest first), or NULL. */
static const struct store_smoke_row *artifact_smoke(const struct store_smoke_row *sm, size_t n, const char *sha)
{
	for (size_t i = 0; i < n; i++)
		if (sm[i].artifact_sha256 && !strcmp(sm[i].artifact_sha256, sha))
			return &sm[i];
	return NULL;
}

static int list_repo(struct cmd_env *env, struct store *st, const char *type, const char *repo, const char *rev)
{
	struct store_rev_info *rv = NULL;
	struct store_file *f = NULL;
	struct store_artifact *art = NULL;
	struct store_smoke_row *sm = NULL;
	size_t nrv = 0, nf = 0, nart = 0, nsm = 0;
	char commit[41], h[32], w[64];
	enum hm_err err;
	int rc = 1;

	err = store_resolve(&env->ctx, st, type, repo, rev, commit);
	if (err == HM_ERR_NOT_FOUND) {
		if (!env->ctx.errmsg[0])
			hm_fail(&env->ctx, err, "'%s' not found in the store", repo);
		cmd_hint_type(env, st, type, repo);
	}
	if (err || (err = store_list_revisions(&env->ctx, st, type, repo, &rv, &nrv)) ||
	    (err = store_list_files(&env->ctx, st, type, repo, commit, &f, &nf)) ||
	    (err = store_list_artifacts(&env->ctx, st, type, repo, &art, &nart)) ||
	    (err = store_list_smoke(&env->ctx, st, type, repo, &sm, &nsm))) {
		rc = cmd_error(env, err);
		goto out;
	}
	if (env->json) {
		json_t *smoke = json_array();
		for (size_t i = 0; i < nsm; i++)
			json_array_append_new(smoke, json_pack("{s:s, s:s?, s:s, s:b, s:s?, s:f, s:f, s:f, s:I, s:s, s:s?, s:s?}",
							       "commit", sm[i].commit, "artifact", sm[i].artifact_sha256,
							       "model", sm[i].model, "pass", sm[i].pass, "reason", sm[i].reason,
							       "load_s", sm[i].load_s, "prompt_tps", sm[i].prompt_tps,
							       "gen_tps", sm[i].gen_tps, "peak_rss", (json_int_t)sm[i].peak_rss,
							       "date", when(sm[i].created_at, w, sizeof(w)), "architecture",
							       sm[i].architecture, "engine_version", sm[i].engine_version));
		json_t *files = json_array();
		for (size_t i = 0; i < nf; i++)
			json_array_append_new(files, json_pack("{s:s, s:I, s:s, s:s, s:b}", "path", f[i].path, "size",
							       (json_int_t)f[i].size, "sha256", f[i].sha256, "git_oid",
							       f[i].git_oid, "lfs", f[i].lfs));
		json_t *arts = json_array();
		for (size_t i = 0; i < nart; i++) {
			const struct store_smoke_row *r = artifact_smoke(sm, nsm, art[i].sha256);
			json_array_append_new(arts, json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "revision", art[i].commit,
							      "format", art[i].format, "options", art[i].options, "sha256",
							      art[i].sha256, "size", (json_int_t)art[i].size, "created_at",
							      when(art[i].created_at, w, sizeof(w)), "smoke",
							      !r ? "untested" : r->pass ? "pass" : "fail"));
		}
		cmd_print_json(json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "store", store_name(st), "repo", repo,
					 "repo_type", type, "revision", commit, "revisions", revs_json(rv, nrv), "files", files,
					 "artifacts", arts, "smoke",
					 smoke));
	} else {
		cmd_print_store(env, st);
		printf("%s %s\n", type, repo);
		for (size_t i = 0; i < nrv; i++)
			printf("  %s %s%s%s%s  %zu files, %s, pulled %s\n", !strcmp(rv[i].commit, commit) ? "*" : " ",
			       rv[i].commit, rv[i].refs && *rv[i].refs ? " (" : "", rv[i].refs ? rv[i].refs : "",
			       rv[i].refs && *rv[i].refs ? ")" : "", rv[i].nfiles,
			       util_human_size(rv[i].bytes, h, sizeof(h)), when(rv[i].pulled_at, w, sizeof(w)));
		printf("\nfiles at %.12s:\n", commit);
		for (size_t i = 0; i < nf; i++)
			printf("  %10s  %s  %s%s\n", util_human_size(f[i].size, h, sizeof(h)), f[i].sha256,
			       f[i].path, f[i].lfs ? "  (lfs)" : "");
		if (nart)
			printf("\nconversions (hubmirror convert):\n");
		for (size_t i = 0; i < nart; i++) {
			const struct store_smoke_row *r = artifact_smoke(sm, nsm, art[i].sha256);
			printf("  %10s  %s  %s %s of %.12s, %s  smoke: %s%s%s%s\n", util_human_size(art[i].size, h, sizeof(h)),
			       art[i].sha256, art[i].format, art[i].options, art[i].commit,
			       when(art[i].created_at, w, sizeof(w)), !r ? "untested" : r->pass ? "PASS" : "FAIL",
			       r && r->engine_version ? " (engine " : "", r && r->engine_version ? r->engine_version : "",
			       r && r->engine_version ? ")" : "");
		}
		if (nsm)
			printf("\nsmoke tests (hubmirror smoke):\n");
		for (size_t i = 0; i < nsm; i++)
			printf("  %s  %.12s%s%.12s  %s%s%s%s%sload %.2fs, %.1f tok/s  %s%s%s\n", sm[i].pass ? "PASS" : "FAIL",
			       sm[i].commit, sm[i].artifact_sha256 ? " gguf " : "",
			       sm[i].artifact_sha256 ? sm[i].artifact_sha256 : "", sm[i].architecture ? sm[i].architecture : "",
			       sm[i].architecture ? ", " : "", sm[i].engine_version ? "engine " : "",
			       sm[i].engine_version ? sm[i].engine_version : "", sm[i].engine_version ? ", " : "",
			       sm[i].load_s, sm[i].gen_tps, when(sm[i].created_at, w, sizeof(w)), sm[i].reason ? "  " : "",
			       sm[i].reason ? sm[i].reason : "");
	}
	rc = 0;
out:
	store_rev_info_free(rv, nrv);
	store_files_free(f, nf);
	store_artifacts_free(art, nart);
	store_smoke_rows_free(sm, nsm);
	return rc;
}

static int run(struct cmd_env *env, struct cmd_args *a)
{
	const struct ls_vals *opt = a->o;
	struct store *st = NULL;
	enum hm_err err;
	int rc;
	if (a->npos > 1)
		return cmd_usage_error(&cmd_ls, "ls takes at most one repository");
	if ((err = cmd_open_store_mode(env, STORE_READ, &st)))
		return cmd_error(env, err);
	if (!a->npos) {
		rc = list_all(env, st);
	} else {
		char buf[256];
		const char *type, *repo;
		err = mirror_parse_repo(&env->ctx, a->pos[0], opt->repo_type, buf, sizeof(buf), &type, &repo);
		rc = err ? cmd_error(env, err) : list_repo(env, st, type, repo, opt->revision);
	}
	store_close(st);
	return rc;
}

const struct cmd cmd_ls = {
	"ls", "[REPO] [--revision REV]",
	"List mirrored repositories, or one repository's revisions, refs and files.",
	NULL, opts, sizeof(struct ls_vals), run,
};
