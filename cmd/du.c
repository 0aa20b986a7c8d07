/* du.c - `hubmirror du`: store size, what deduplication saves, largest repos. */
#include <stdio.h>
#include <string.h>
#include "cmd.h"
#include "../store/stats.h"

/* What the options of du_opts[] below set (a->o). */
struct du_vals {
	const char *top;
};

static const struct cmd_opt du_opts[] = {
	CMD_OPT_STR(struct du_vals, top, "top", 'n', "N", "repos in each list (default 10; 0 = all)"),
	CMD_OPT_END,
};

static json_t *du_repos_json(const struct store_du_repo *v, size_t n)
{
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++) {
		const char *colon = strchr(v[i].key, ':');
		json_array_append_new(list, json_pack("{s:s, s:s%, s:I, s:I, s:I}", "repo", colon ? colon + 1 : v[i].key,
						      "repo_type", v[i].key, colon ? (size_t)(colon - v[i].key) : 0,
						      "logical", (json_int_t)v[i].logical, "unique",
						      (json_int_t)v[i].unique, "revisions", (json_int_t)v[i].nrevisions));
	}
	return list;
}

static void du_repos_print(const struct cmd_env *env, const char *title, const struct store_du_repo *v, size_t n)
{
	static const char *const heads[] = {"REPO", "UNIQUE", "LOGICAL", "REVISIONS"};
	struct cmd_table tab;
	if (!n)
		return;
	cmd_table_init(&tab, 4, heads, "lrrr", "y...");
	for (size_t i = 0; i < n; i++) {
		char u[32], l[32], r[32];
		const char *row[4] = {v[i].key, util_human_size(v[i].unique, u, sizeof(u)),
				      util_human_size(v[i].logical, l, sizeof(l)), r};
		snprintf(r, sizeof(r), "%zu", v[i].nrevisions);
		cmd_table_row(&tab, row);
	}
	printf("\n%s\n", title);
	cmd_table_print(env, &tab, stdout);
	cmd_table_release(&tab);
}

static int du_run(struct cmd_env *env, struct cmd_args *a)
{
	const struct du_vals *opt = a->o;
	struct store *st = NULL;
	struct store_du d;
	enum hm_err err;
	int top, rc = 0;

	memset(&d, 0, sizeof(d));
	if (a->npos)
		return cmd_usage_error(&cmd_du, "du takes no arguments");
	if (cmd_int_opt(a, &opt->top, 10, 0, 1000000000, &top))
		return 2;
	if ((err = cmd_open_store_mode(env, STORE_READ, &st)) || (err = store_du(&env->ctx, st, (size_t)top, &d)) ||
	    (err = store_du_bucket(&env->ctx, st, &d))) {
		rc = cmd_error(env, err);
		goto out;
	}
	if (env->json) {
		json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "store", store_name(st),
					 "disk", (json_int_t)d.disk,
					 "blobs", (json_int_t)d.nblobs, "logical", (json_int_t)d.logical, "unique",
					 (json_int_t)d.unique, "saved", (json_int_t)d.saved, "partial",
					 (json_int_t)d.partial, "partials", (json_int_t)d.npartial, "repos",
					 (json_int_t)d.nrepos, "by_unique", du_repos_json(d.by_unique, d.nby_unique),
					 "by_logical", du_repos_json(d.by_logical, d.nby_logical));
		if (j && d.remote)
			json_object_set_new(j, "bucket", json_pack("{s:I, s:I, s:I}", "bytes", (json_int_t)d.bucket_bytes,
								  "blobs", (json_int_t)d.bucket_blobs, "uploads",
								  (json_int_t)d.bucket_uploads));
		cmd_print_json(j);
	} else {
		char h[5][32];
		printf("store: %s%s\n"
		       "on disk        %10s in %llu blob(s)\n"
		       "logical        %10s (every file of every revision)\n"
		       "unique         %10s (distinct contents in use)\n"
		       "dedup saves    %10s\n"
		       "partial        %10s in %llu download(s) in tmp/ ('gc' removes unused ones older than a week)\n",
		       store_name(st), store_readonly(st) ? " (read-only)" : "", util_human_size(d.disk, h[0], sizeof(h[0])), (unsigned long long)d.nblobs,
		       util_human_size(d.logical, h[1], sizeof(h[1])), util_human_size(d.unique, h[2], sizeof(h[2])),
		       util_human_size(d.saved, h[3], sizeof(h[3])), util_human_size(d.partial, h[4], sizeof(h[4])),
		       (unsigned long long)d.npartial);
		if (d.remote) {
			char b[32];
			printf("in the bucket  %10s in %llu blob object(s), %llu unfinished upload(s) ('gc' aborts stale ones)\n"
			       "(on disk and partial: this node's local cache)\n",
			       util_human_size(d.bucket_bytes, b, sizeof(b)), (unsigned long long)d.bucket_blobs,
			       (unsigned long long)d.bucket_uploads);
		}
		du_repos_print(env, "LARGEST REPOS BY UNIQUE BYTES", d.by_unique, d.nby_unique);
		du_repos_print(env, "LARGEST REPOS BY LOGICAL BYTES", d.by_logical, d.nby_logical);
		if (d.nrepos > d.nby_unique)
			printf("(%zu more repos; --top N shows more, --top 0 all)\n", d.nrepos - d.nby_unique);
	}
out:
	store_du_release(&d);
	store_close(st);
	return rc;
}

const struct cmd cmd_du = {
	"du", "[--top N]",
	"Store usage: size on disk, what deduplication saves, largest repos.",
	"On disk: the blob files. Logical: the sizes of every file of every stored\n"
	"revision added up, as separate copies would take. Unique: the distinct\n"
	"contents revisions use (on disk minus blobs nothing uses until 'gc').\n"
	"A repo's unique bytes count contents it shares with other repos too.\n"
	"Partial: downloads in progress or abandoned under tmp/.\n"
	"On an S3 store (--store s3://...), on disk and partial are this node's\n"
	"local cache, and 'in the bucket' lists the blob objects and unfinished\n"
	"multipart uploads in the bucket; logical and unique come from the\n"
	"revisions in the bucket, so every node shows the same figures.",
	du_opts, sizeof(struct du_vals), du_run,
};
