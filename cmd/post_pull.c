/* post_pull.c - what pull and sync do after a revision is in the store:
 * --convert (through mirror_convert, which returns the artifact it made or
 * found) and --smoke (of exactly that artifact). */
#include <stdio.h>
#include "cmd.h"
#include "../engine/smoke.h"
#include "../mirror/mirror.h"
#include "../convert/convert.h"
#include "../store/smoke.h"

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
	enum hm_err err = eng_smoke(&env->ctx, target, &so, &res);
	if (err && err != HM_ERR_NOMEM && err != HM_ERR_CANCELLED) {
		res.pass = 0;
		snprintf(res.reason, sizeof(res.reason), "%s", env->ctx.errmsg);
	} else if (err) {
		rc = cmd_error(env, err);
		goto out;
	}
	struct store_smoke rec = {type, repo, commit, conv ? art.sha256 : NULL, label, res.pass, res.reason, res.load_s,
				  res.prompt_tps, res.gen_tps, res.peak_rss, 0, res.arch[0] ? res.arch : NULL, ENG_VERSION};
	if ((err = store_record_smoke(&env->ctx, st, &rec)))
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
