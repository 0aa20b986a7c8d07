/* verify.c - `hubmirror verify`: re-hash the store; --repair refetches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cmd.h"
#include "../mirror/mirror.h"
#include "../store/index.h"

/* What the options of opts[] below set (a->o). */
struct verify_vals {
	int repair;
	struct cmd_net_vals net;
};

static const struct cmd_opt opts[] = {
	CMD_OPT_FLAG(struct verify_vals, repair, "repair", 0, "download corrupt or missing files again"),
	CMD_NET_OPTS(struct verify_vals),
	CMD_OPT_END,
};

struct bad {
	char type[16];
	char *repo, *path;
	char *conversion; /* options of a stored conversion, NULL for a file */
	char *checkout;   /* a recorded checkout holding other bytes than the blob */
	char commit[41], sha256[65];
	const char *problem;
	int repaired;
};

struct bads {
	struct bad *v;
	size_t n, cap;
	struct cmd_env *env;
};

static void on_problem(void *ud, const struct mirror_problem *p)
{
	struct bads *b = ud;
	if (b->n == b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 16;
		struct bad *nv = realloc(b->v, nc * sizeof(*nv));
		if (!nv)
			return;
		b->v = nv;
		b->cap = nc;
	}
	struct bad *x = &b->v[b->n++];
	memset(x, 0, sizeof(*x));
	snprintf(x->type, sizeof(x->type), "%s", p->repo_type);
	x->repo = strdup(p->repo);
	x->path = strdup(p->path);
	x->conversion = p->conversion ? strdup(p->conversion) : NULL;
	x->checkout = p->checkout ? strdup(p->checkout) : NULL;
	memcpy(x->commit, p->commit, 41);
	memcpy(x->sha256, p->sha256, 65);
	x->problem = p->problem;
	if (!b->env->json && !b->env->quiet) {
		cmd_progress_end(b->env);
		if (p->checkout)
			printf("%s: checkout %s: %s holds other bytes than the store (revision %.12s)\n", p->problem,
			       p->checkout, p->path, p->commit);
		else if (p->conversion)
			printf("%s: %s conversion %s (revision %.12s, blob %.16s...)\n", p->problem, p->repo, p->path,
			       p->commit, p->sha256);
		else
			printf("%s: %s/%s (revision %.12s, blob %.16s...)\n", p->problem, p->repo, p->path, p->commit,
			       p->sha256);
	}
}

/* Removes bad blobs and pulls the affected files again, per revision. */
static enum hm_err repair(struct cmd_env *env, const struct cmd_args *a, struct store *st, struct bads *b)
{
	const struct verify_vals *opt = a->o;
	struct fetch_client *fc = NULL;
	enum hm_err err = cmd_client(env, a, &opt->net, &fc), first = HM_OK;
	if (err)
		return err;
	for (size_t i = 0; i < b->n; i++)
		if (!b->v[i].checkout && (err = store_blob_discard(&env->ctx, st, b->v[i].sha256))) {
			fetch_client_free(fc);
			return err;
		}
	for (size_t i = 0; i < b->n; i++) {
		if (b->v[i].repaired || b->v[i].conversion || b->v[i].checkout)
			continue;
		const char **only = calloc(b->n, sizeof(*only));
		size_t nonly = 0;
		if (!only)
			return hm_fail(&env->ctx, HM_ERR_NOMEM, "out of memory");
		for (size_t k = i; k < b->n; k++)
			if (!b->v[k].conversion && !b->v[k].checkout && !strcmp(b->v[k].repo, b->v[i].repo) && !strcmp(b->v[k].type, b->v[i].type) &&
			    !strcmp(b->v[k].commit, b->v[i].commit)) {
				int dup = 0;
				for (size_t q = 0; q < nonly; q++)
					dup |= !strcmp(only[q], b->v[k].path);
				if (!dup)
					only[nonly++] = b->v[k].path;
				b->v[k].repaired = -1; /* in this batch */
			}
		struct mirror_pull_opts o = {.type = b->v[i].type, .repo = b->v[i].repo, .revision = b->v[i].commit,
					     .only = only, .nonly = nonly};
		struct mirror_pull_result res;
		cmd_progress_label(env, o.type, o.repo);
		err = mirror_pull(&env->ctx, st, fc, &o, &res);
		for (size_t k = i; k < b->n; k++)
			if (b->v[k].repaired == -1)
				b->v[k].repaired = err ? 0 : 1;
		if (err) {
			cmd_progress_end(b->env);
			fprintf(stderr, "hubmirror: cannot repair %s at %.12s: %s\n", b->v[i].repo, b->v[i].commit,
				env->ctx.errmsg);
			if (!first)
				first = err;
		} else if (!env->json && !env->quiet) {
			printf("repaired: %zu file(s) of %s at %.12s\n", nonly, b->v[i].repo, b->v[i].commit);
		}
		mirror_pull_result_release(&res);
		free(only);
		if (err == HM_ERR_CANCELLED)
			break;
	}
	/* hard-linked checkouts of repaired revisions, and stale ones, linked again */
	for (size_t i = 0; i < b->n && first != HM_ERR_CANCELLED; i++) {
		size_t nre = 0;
		int done = 0;
		if (b->v[i].conversion || (!b->v[i].checkout && b->v[i].repaired != 1))
			continue;
		for (size_t k = 0; k < i && !done; k++)
			done = !strcmp(b->v[k].repo, b->v[i].repo) && !strcmp(b->v[k].type, b->v[i].type) &&
			       !strcmp(b->v[k].commit, b->v[i].commit) && !b->v[k].conversion &&
			       (b->v[k].checkout || b->v[k].repaired == 1);
		if (!done) {
			err = mirror_relink_checkouts(&env->ctx, st, b->v[i].type, b->v[i].repo, b->v[i].commit, &nre);
			if (err) {
				fprintf(stderr, "hubmirror: cannot link the checkouts of %s at %.12s again: %s\n", b->v[i].repo,
					b->v[i].commit, env->ctx.errmsg);
				if (!first)
					first = err;
			} else if (nre && !env->json && !env->quiet) {
				printf("re-linked: %zu checkout(s) of %s at %.12s\n", nre, b->v[i].repo, b->v[i].commit);
			}
		}
		if (b->v[i].checkout)
			b->v[i].repaired = !err;
	}
	/* conversions last: made again from their (repaired) source revision */
	for (size_t i = 0; i < b->n && first != HM_ERR_CANCELLED; i++) {
		struct mirror_artifact art;
		if (!b->v[i].conversion)
			continue;
		err = mirror_convert_repair(&env->ctx, st, b->v[i].type, b->v[i].repo, b->v[i].commit,
					    b->v[i].conversion, &art);
		cmd_progress_end(b->env);
		b->v[i].repaired = !err;
		if (err) {
			fprintf(stderr, "hubmirror: cannot convert %s at %.12s again: %s\n", b->v[i].repo, b->v[i].commit,
				env->ctx.errmsg);
			if (!first)
				first = err;
		} else if (!env->json) {
			printf("repaired: conversion %s of %s at %.12s, converted again\n", b->v[i].conversion, b->v[i].repo,
			       b->v[i].commit);
		}
	}
	fetch_client_free(fc);
	return first;
}

/* What the index itself looks like: blob files it does not know, and SQLite's quick_check. */
struct index_report {
	struct cmd_env *env;
	json_t *unknown, *db;
};

static void on_unknown(void *ud, const char *path, uint64_t size)
{
	struct index_report *x = ud;
	char h[32];
	if (x->unknown)
		json_array_append_new(x->unknown, json_pack("{s:s, s:I}", "path", path, "bytes", (json_int_t)size));
	else if (!x->env->quiet)
		printf("unindexed: %s (%s): a blob the index does not know\n",
		       path, util_human_size(size, h, sizeof(h)));
}

static void on_db(void *ud, const char *line)
{
	struct index_report *x = ud;
	if (x->db)
		json_array_append_new(x->db, json_string(line));
	else
		printf("index.db: %s\n", line);
}

static int run(struct cmd_env *env, struct cmd_args *a)
{
	const struct verify_vals *opt = a->o;
	struct store *st = NULL;
	struct bads b = {NULL, 0, 0, env};
	struct index_report x = {env, NULL, NULL};
	size_t checked = 0, nbad = 0;
	uint64_t nunknown = 0;
	enum hm_err err;
	int rc = 1, unrepaired = 0, db_ok = 1;

	/* only --repair writes: anyone who can read the store can verify it */
	if ((err = cmd_open_store_mode(env, opt->repair ? STORE_WRITE : STORE_READ, &st)))
		return cmd_error(env, err);
	err = mirror_verify(&env->ctx, st, a->pos, (size_t)a->npos, on_problem, &b, &checked, &nbad);
	cmd_progress_end(env);
	if (err) {
		rc = cmd_error(env, err);
		goto out;
	}
	if (env->json) {
		x.unknown = json_array();
		x.db = json_array();
	}
	if (!a->npos && (err = store_check_index(&env->ctx, st, on_unknown, on_db, &x, &nunknown, &db_ok))) {
		rc = cmd_error(env, err);
		goto out;
	}
	if (nbad && opt->repair) {
		err = repair(env, a, st, &b);
		if (err == HM_ERR_USAGE) {
			rc = cmd_error(env, err);
			goto out;
		}
	}
	for (size_t i = 0; i < b.n; i++)
		unrepaired += b.v[i].repaired != 1;
	if (env->json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < b.n; i++) {
			json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "repo_type", b.v[i].type, "repo",
					      b.v[i].repo, "revision", b.v[i].commit, "path", b.v[i].path, "sha256",
					      b.v[i].sha256, "problem", b.v[i].problem, "repaired", b.v[i].repaired == 1);
			/* what holds the bad bytes, when it is not the file's blob */
			if (b.v[i].conversion)
				json_object_set_new(p, "conversion", json_string(b.v[i].conversion));
			if (b.v[i].checkout)
				json_object_set_new(p, "checkout", json_string(b.v[i].checkout));
			json_array_append_new(arr, p);
		}
		cmd_print_json(json_pack("{s:s, s:I, s:I, s:o, s:O, s:b, s:O, s:b}", "store", store_name(st), "checked",
					 (json_int_t)checked, "bad", (json_int_t)nbad, "problems", arr, "unindexed",
					 x.unknown, "index_ok", db_ok, "index_problems", x.db,
					 "ok", !unrepaired && db_ok));
	} else {
		if (!nbad && !env->quiet) {
			printf("ok: %zu files verified\n", checked);
		} else if (nbad) {
			/* -q: errors only, so the files still bad, on stderr */
			for (size_t i = 0; env->quiet && i < b.n; i++)
				if (b.v[i].repaired != 1)
					fprintf(stderr, "hubmirror: %s: %s/%s (revision %.12s)\n", b.v[i].problem,
						b.v[i].repo, b.v[i].path, b.v[i].commit);
			if (unrepaired || !env->quiet)
				fprintf(stderr, "hubmirror: %zu of %zu files %s\n", nbad, checked,
					unrepaired ? "are corrupt or missing" : "were corrupt or missing and are repaired");
		}
		if (nunknown)
			fprintf(stderr, "hubmirror: note: %llu blob(s) in '%s' are not in the index (left by an"
				" interrupted pull, or the index was replaced by an older one): 'hubmirror gc' removes"
				" them, 'hubmirror rebuild-index' keeps them\n", (unsigned long long)nunknown,
				store_name(st));
		if (!db_ok)
			fprintf(stderr, "hubmirror: '%s/index.db' fails SQLite's quick_check: restore it from a backup,"
				" or move it away and run 'hubmirror rebuild-index'\n", store_dir(st));
	}
	/* blobs without rows lose nothing (a killed pull leaves them): reported, not failed */
	rc = unrepaired || !db_ok ? 1 : 0;
out:
	json_decref(x.unknown);
	json_decref(x.db);
	for (size_t i = 0; i < b.n; i++) {
		free(b.v[i].repo);
		free(b.v[i].path);
		free(b.v[i].conversion);
		free(b.v[i].checkout);
	}
	free(b.v);
	store_close(st);
	return rc;
}

const struct cmd cmd_verify = {
	"verify", "[REPO]... [--repair]",
	"Re-hash stored files; exit 1 naming each corrupt or missing one.",
	"Every blob is hashed again and compared with its SHA-256 name, the blobs of\n"
	"stored conversions (GGUF artifacts) too. With --repair, bad files are\n"
	"downloaded again from the endpoint (their revision's commit) and bad\n"
	"conversions are made again from their source revision.\n"
	"Without REPO arguments it also runs SQLite's quick_check on index.db and lists\n"
	"blob files the index does not know ('rebuild-index' indexes them). Without\n"
	"--repair it only reads: a user who cannot write the store can run it.",
	opts, sizeof(struct verify_vals), run,
};
