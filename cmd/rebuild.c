/* rebuild.c - `hubmirror rebuild-index`: index the store's blobs again after index.db was lost. */
#include <stdio.h>
#include "cmd.h"
#include "../mirror/mirror.h"
#include "../store/index.h"

static const struct cmd_opt opts[] = {CMD_OPT_END};

static void on_bad(void *ud, const char *path)
{
	struct cmd_env *env = ud;
	cmd_progress_end(env);
	if (!env->json)
		printf("corrupt: %s (its content does not match its name; not indexed)\n", path);
}

static int run(struct cmd_env *env, struct cmd_args *a)
{
	struct store *st = NULL;
	struct store_rebuild_result r = {0};
	enum hm_err err;
	char h[32];
	int rc = 0;

	if (a->npos)
		return cmd_usage_error(&cmd_rebuild_index, "rebuild-index takes no arguments");
	if ((err = cmd_open_store_mode(env, STORE_REBUILD, &st)) ||
	    (err = mirror_rebuild_index(&env->ctx, st, on_bad, env, &r))) {
		rc = cmd_error(env, err);
		goto out;
	}
	if (env->json)
		cmd_print_json(json_pack("{s:s, s:I, s:I, s:I, s:I}", "store", store_name(st), "blobs_added",
					 (json_int_t)r.blobs_added, "bytes_added", (json_int_t)r.bytes_added, "blobs_known",
					 (json_int_t)r.blobs_known, "blobs_corrupt", (json_int_t)r.blobs_bad));
	else if (!env->quiet)
		printf("indexed %llu blob(s) (%s); %llu were indexed already, %llu corrupt\n"
		       "pull the repositories again to record their revisions: nothing is downloaded\n",
		       (unsigned long long)r.blobs_added, util_human_size(r.bytes_added, h, sizeof(h)),
		       (unsigned long long)r.blobs_known, (unsigned long long)r.blobs_bad);
	rc = r.blobs_bad ? 1 : 0;
out:
	store_close(st);
	return rc;
}

const struct cmd cmd_rebuild_index = {
	"rebuild-index", "",
	"Index the store's blobs again (after index.db was lost or replaced).",
	"Hashes every blob file the index does not know and records those whose\n"
	"content matches their name, so they are known again; a store whose index.db\n"
	"is missing or empty while blobs exist refuses to open until this ran.\n"
	"Revisions are not recreated: pull the repositories again (nothing is\n"
	"downloaded). Blobs whose content does not match their name are listed and\n"
	"left out (exit 1); 'gc' then removes them.",
	opts, 0, run,
};
