/* sync.c - `hubmirror sync`: provision a machine from the lab's manifest. */
#include <stdio.h>
#include <string.h>
#include "cmd.h"
#include "../mirror/sync.h"
#include "../store/checkout.h"

/* What the options of opts[] below set (a->o). */
struct sync_vals {
	const char *to, *layout, *lock;
	int locked, offline;
	struct cmd_net_vals net;
	struct cmd_p2p_vals p2p;
};

static const struct cmd_opt opts[] = {
	CMD_OPT_STR(struct sync_vals, to, "to", 'o', "DIR", "also check every model out under DIR"),
	CMD_OPT_STR(struct sync_vals, layout, "layout", 0, "LAYOUT", "files (DIR/org/name, default) or hf-cache (DIR is a HF_HUB_CACHE)"),
	CMD_OPT_FLAG(struct sync_vals, locked, "locked", 0, "install exactly MANIFEST.lock; fail if the hub no longer has it"),
	CMD_OPT_STR(struct sync_vals, lock, "lock", 0, "FILE", "the lockfile (default MANIFEST.lock)"),
	CMD_OPT_FLAG(struct sync_vals, offline, "offline", 0, "use only the store, no network (also HF_HUB_OFFLINE=1)"),
	CMD_NET_OPTS(struct sync_vals),
	CMD_P2P_OPTS(struct sync_vals),
	CMD_OPT_END,
};

struct post_ctx {
	struct cmd_env *env;
	struct store *st;
};

static int post(void *ud, const struct sync_entry *e, const char *commit, char *verdict, size_t vlen)
{
	struct post_ctx *p = ud;
	int quiet = p->env->quiet, json = p->env->json, rc;
	/* the status table reports it: the steps themselves stay quiet */
	p->env->quiet = 1;
	p->env->json = 0;
	p->env->ctx.errmsg[0] = 0;
	rc = cmd_post_pull(p->env, p->st, e->type, e->repo, commit, e->convert, e->smoke, verdict, vlen);
	if (rc && !verdict[0])
		snprintf(verdict, vlen, "%s", p->env->ctx.errmsg[0] ? p->env->ctx.errmsg : "failed");
	p->env->quiet = quiet;
	p->env->json = json;
	return rc;
}

static int run(struct cmd_env *env, struct cmd_args *a)
{
	const struct sync_vals *opt = a->o;
	struct sync_manifest m = {0};
	struct sync_lock lock = {0};
	struct sync_result r = {0};
	struct sync_opts so = {0};
	struct store *st = NULL;
	struct fetch_client *fc = NULL;
	struct mirror_swarm *sw = NULL;
	const char *layout = opt->layout;
	char lockpath[4096];
	enum hm_err err;
	int rc = 0, locked = opt->locked;

	if (a->npos != 1)
		return cmd_usage_error(&cmd_sync, a->npos ? "sync takes one manifest" : "missing MANIFEST");
	so.to = opt->to;
	so.offline = cmd_offline(opt->offline);
	so.layout = STORE_LAYOUT_FILES;
	if (layout && !strcmp(layout, "hf-cache"))
		so.layout = STORE_LAYOUT_HF_CACHE;
	else if (layout && strcmp(layout, "files"))
		return cmd_usage_error(&cmd_sync, "unknown layout '%s': expected files or hf-cache", layout);
	if (layout && !so.to)
		return cmd_usage_error(&cmd_sync, "--layout needs --to DIR");
	snprintf(lockpath, sizeof(lockpath), "%s", opt->lock ? opt->lock : "");
	if (!lockpath[0])
		snprintf(lockpath, sizeof(lockpath), "%s.lock", a->pos[0]);
	if ((err = sync_manifest_load(&env->ctx, a->pos[0], &m)) ||
	    (locked && (err = sync_lock_load(&env->ctx, lockpath, &lock))) || (err = cmd_client(env, a, &opt->net, &fc)) ||
	    (err = cmd_open_store_mode(env, STORE_CREATE, &st))) {
		rc = cmd_error(env, err);
		goto out;
	}
	if ((rc = cmd_swarm_open(env, a, &opt->p2p, &sw)))
		goto out;
	so.swarm = sw;
	struct post_ctx pc = {env, st};
	so.post = post;
	so.post_ud = &pc;
	err = sync_run(&env->ctx, st, fc, &m, locked ? &lock : NULL, &so, &r);
	cmd_progress_end(env);
	/* a lock describes what a full, successful run installed */
	if (!locked && !r.nfailed && !err) {
		enum hm_err e2 = sync_lock_write(&env->ctx, lockpath, &m, &r);
		if (e2) {
			rc = cmd_error(env, e2);
			goto out;
		}
	}
	size_t downloaded = 0;
	uint64_t bytes = 0;
	for (size_t i = 0; i < r.n; i++) {
		downloaded += r.v[i].files_downloaded;
		bytes += r.v[i].bytes_downloaded;
	}
	if (env->json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < r.n; i++)
			json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:b}", "repo", m.v[i].repo,
							     "repo_type", m.v[i].type, "revision", r.v[i].commit, "status",
							     r.v[i].status, "detail", r.v[i].detail, "files",
							     (json_int_t)r.v[i].nfiles, "files_downloaded",
							     (json_int_t)r.v[i].files_downloaded, "bytes_downloaded",
							     (json_int_t)r.v[i].bytes_downloaded, "checked_out",
							     r.v[i].checked_out));
		cmd_print_json(json_pack("{s:o, s:I, s:I, s:I, s:s, s:b}", "models", arr, "failed", (json_int_t)r.nfailed,
					 "files_downloaded", (json_int_t)downloaded, "bytes_downloaded", (json_int_t)bytes,
					 "lockfile", lockpath, "locked", locked));
	} else if (env->quiet) {
		/* errors only: the models that failed */
		for (size_t i = 0; i < r.n; i++)
			if (!strcmp(r.v[i].status, "failed"))
				fprintf(stderr, "hubmirror: %s: %s: %s\n", m.v[i].repo, r.v[i].status, r.v[i].detail);
	} else {
		char h[32];
		struct cmd_table tab;
		static const char *const heads[] = {"MODEL", "REVISION", "STATUS", "FILES", "DOWNLOADED", "DETAIL"};
		cmd_table_init(&tab, 6, heads, "lllrrl", "y....y");
		for (size_t i = 0; i < r.n; i++) {
			char rev[16], nf[32];
			snprintf(rev, sizeof(rev), "%.12s", r.v[i].commit[0] ? r.v[i].commit : "-");
			snprintf(nf, sizeof(nf), "%zu", r.v[i].nfiles);
			const char *row[] = {m.v[i].repo, rev, r.v[i].status, nf,
					     util_human_size(r.v[i].bytes_downloaded, h, sizeof(h)), r.v[i].detail};
			cmd_table_row(&tab, row);
		}
		cmd_table_print(env, &tab, stdout);
		cmd_table_release(&tab);
		if (!r.nfailed && !downloaded)
			printf("everything is up to date: nothing was downloaded\n");
		else
			printf("%zu model(s), %zu failed; %zu file(s) downloaded (%s)%s%s\n", r.n, r.nfailed, downloaded,
			       util_human_size(bytes, h, sizeof(h)), !locked && !r.nfailed ? "; wrote " : "",
			       !locked && !r.nfailed ? lockpath : "");
	}
	if (err)
		rc = cmd_error(env, err);
	else if (r.nfailed) {
		fprintf(stderr, "hubmirror: error: %zu of %zu model(s) failed%s\n", r.nfailed, r.n,
			locked ? "" : " (the lockfile was not updated)");
		rc = 1;
	}
out:
	cmd_swarm_close(env, &opt->p2p, rc ? NULL : sw);
	if (rc)
		mirror_swarm_free(sw);
	sync_result_release(&r);
	sync_lock_free(&lock);
	sync_manifest_free(&m);
	store_close(st);
	fetch_client_free(fc);
	return rc;
}

const struct cmd cmd_sync = {
	"sync", "MANIFEST [--to DIR] [--layout files|hf-cache] [--locked]",
	"Provision this machine from the lab's manifest, pinned by MANIFEST.lock.",
	"MANIFEST lists one model a line: REPO[@REV] [type=model|dataset] [include=GLOB,...]\n"
	"[exclude=GLOB,...] [convert=TYPE] [smoke=yes]; '#' starts a comment. sync pulls\n"
	"what is missing (typically from the lab's 'hubmirror serve' via --endpoint),\n"
	"verifies it, checks every model out under --to (hard links; the hf-cache layout\n"
	"lets the lab's tools run with HF_HUB_OFFLINE=1), then writes MANIFEST.lock: each\n"
	"repo's commit and every file's path, size and SHA-256. --locked installs exactly\n"
	"the lock. A model that fails does not stop the others; the exit status is 1 if\n"
	"any failed. convert=TYPE stores a GGUF conversion; smoke=yes smoke-tests the\n"
	"model (the conversion when there is one) and records the result.\n"
	"--p2p takes LFS blobs from the lab's BitTorrent swarm, as 'pull --p2p' does.",
	opts, sizeof(struct sync_vals), run,
};
