/* post_pull.c - what pull and sync do after a revision is in the store:
 * --convert (through mirror_convert, which returns the artifact it made or
 * found) and --smoke (of exactly that artifact); and the smoke test with
 * its record, which the smoke command shares. */
#include <stdio.h>
#include "cmd.h"
#include "../engine/smoke.h"
#include "../mirror/mirror.h"
#include "../convert/convert.h"
#include "../store/smoke.h"

enum hm_err cmd_smoke_model(struct cmd_env *env, const char *path, const struct eng_smoke_opts *o,
			    struct eng_smoke_result *res)
{
	enum hm_err err = eng_smoke(&env->ctx, path, o, res);
	if (err && err != HM_ERR_NOMEM && err != HM_ERR_CANCELLED) {
		/* a model that cannot even load fails the smoke test */
		res->pass = 0;
		snprintf(res->reason, sizeof(res->reason), "%s", env->ctx.errmsg);
		err = HM_OK;
	}
	return err;
}

enum hm_err cmd_smoke_record(struct cmd_env *env, struct store *st, const char *type, const char *repo,
			     const char *commit, const char *artifact_sha256, const char *label,
			     const struct eng_smoke_result *res)
{
	struct store_smoke rec = {type, repo, commit, artifact_sha256, label, res->pass, res->reason, res->load_s,
				  res->prompt_tps, res->gen_tps, res->peak_rss, 0, res->arch[0] ? res->arch : NULL,
				  ENG_VERSION};
	return store_record_smoke(&env->ctx, st, &rec);
}

/* --convert and --smoke: the whole path, pull to tested model, in one command. */
int cmd_post_pull(struct cmd_env *env, struct store *st, const char *type, const char *repo, const char *commit,
		  const char *conv, int smoke, char *verdict, size_t vlen)
{
	char target[4096], label[512];
	struct mirror_artifact art = {0};
	int rc = 0, json = env->json, quiet = env->quiet;

	env->json = 0; /* pull's --json stays one object: the steps below speak on stderr */
	env->quiet = quiet || json;
	if (conv) {
		struct conv_options co = {0};
		if (conv_type_parse(conv, &co.type) < 0) {
			if (verdict)
				snprintf(verdict, vlen, "unknown conversion type '%s' (f32, f16, bf16, q8_0, q4_0)", conv);
			rc = cmd_error(env, hm_fail(&env->ctx, HM_ERR_USAGE,
						    "unknown conversion type '%s': expected f32, f16, bf16, q8_0 or q4_0", conv));
			goto out;
		}
		enum hm_err err = mirror_convert(&env->ctx, st, type, repo, commit, &co, 0, &art);
		cmd_progress_end(env);
		if (err) {
			if (verdict)
				snprintf(verdict, vlen, "conversion to %s failed: %s", conv, env->ctx.errmsg);
			rc = cmd_error(env, err);
			goto out;
		}
		cmd_report_artifact(env, type, repo, commit, &art, NULL);
	}
	if (verdict && conv)
		snprintf(verdict, vlen, "converted to %s", conv);
	if (!smoke)
		goto out;
	if (conv) {
		/* exactly the conversion made (or found) above */
		snprintf(target, sizeof(target), "%s", art.path);
		snprintf(label, sizeof(label), "%s@%s (gguf %s)", repo, commit, art.type);
	} else {
		snprintf(label, sizeof(label), "%s@%s", repo, commit);
		enum hm_err err = cmd_model_dir(env, st, type, repo, commit, target, sizeof(target));
		if (err) {
			rc = cmd_error(env, err);
			goto out;
		}
	}
	struct eng_smoke_opts so = {0};
	struct eng_smoke_result res = {0};
	enum hm_err err = cmd_smoke_model(env, target, &so, &res);
	if (err) {
		eng_smoke_release(&res);
		rc = cmd_error(env, err);
		goto out;
	}
	if ((err = cmd_smoke_record(env, st, type, repo, commit, conv ? art.sha256 : NULL, label, &res)))
		rc = cmd_error(env, err);
	if (!quiet)
		fprintf(stderr, "hubmirror: smoke %s: %s%s%s (load %.2fs, %.1f tok/s)\n", res.pass ? "PASS" : "FAIL", label,
			res.pass ? "" : ": ", res.pass ? "" : res.reason, res.load_s, res.gen_tps);
	if (verdict)
		snprintf(verdict, vlen, "%s%s%s", res.pass ? "smoke passed" : "smoke failed: ", res.pass ? "" : res.reason,
			 conv && res.pass ? " (converted)" : "");
	if (!res.pass) {
		if (quiet)
			fprintf(stderr, "hubmirror: error: smoke test of %s failed: %s\n", label, res.reason);
		rc = 1;
	}
	eng_smoke_release(&res);
out:
	env->json = json;
	env->quiet = quiet;
	return rc;
}
