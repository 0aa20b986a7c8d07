/* bundle.c - `hubmirror export` and `hubmirror import`: offline bundles. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cmd.h"
#include "../bundle/bundle.h"
#include "../mirror/mirror.h"
#include "../store/index.h"

/* ---- export ---- */

/* What the options of export_opts[] below set (a->o). */
struct export_vals {
	const char *output, *format, *repo_type;
	int all;
};

static const struct cmd_opt export_opts[] = {
	CMD_OPT_STR(struct export_vals, output, "output", 'o', "FILE", "archive to write: .tar, .tar.gz/.tgz or .tar.zst; '-' for stdout (required)"),
	CMD_OPT_FLAG(struct export_vals, all, "all", 0, "every stored revision (of the REPOs given, else of every repo)"),
	CMD_OPT_STR(struct export_vals, format, "format", 0, "FMT", "tar, tar.gz or tar.zst (default: by the name; tar for '-')"),
	CMD_OPT_STR(struct export_vals, repo_type, "repo-type", 't', "TYPE", "model (default) or dataset"),
	CMD_OPT_END,
};

static int export_run(struct cmd_env *env, struct cmd_args *a)
{
	const struct export_vals *opt = a->o;
	const char *out = opt->output, *fmt = opt->format;
	struct bundle_spec specs[CMD_MAX_VALUES];
	char bufs[CMD_MAX_VALUES][256];
	struct store_repo_info *repos = NULL;
	size_t nrepos = 0, n = 0;
	struct bundle_export_result r;
	struct store *st = NULL;
	enum hm_err err;
	int all = opt->all, comp, rc = 0;

	if (!out)
		return cmd_usage_error(&cmd_export, "missing -o FILE ('-' for stdout)");
	if (!a->npos && !all)
		return cmd_usage_error(&cmd_export, "name at least one REPO[@REV], or --all for the whole store");
	if (fmt)
		comp = !strcmp(fmt, "tar") ? BUNDLE_TAR : !strcmp(fmt, "tar.gz") ? BUNDLE_GZIP
						 : !strcmp(fmt, "tar.zst")	    ? BUNDLE_ZSTD
										    : -1;
	else
		comp = strcmp(out, "-") ? bundle_compress_by_name(out) : BUNDLE_TAR;
	if (comp < 0)
		return fmt ? cmd_usage_error(&cmd_export, "unknown format '%s': expected tar, tar.gz or tar.zst", fmt)
			   : cmd_usage_error(&cmd_export, "cannot tell the format of '%s': name it .tar, .tar.gz or .tar.zst (or give --format)", out);
	if (!strcmp(out, "-") && isatty(1))
		return cmd_usage_error(&cmd_export, "refusing to write an archive to a terminal; redirect stdout or use -o FILE");
	for (int i = 0; i < a->npos; i++) {
		char arg[256];
		const char *at = strchr(a->pos[i], '@');
		snprintf(arg, sizeof(arg), "%.*s", at ? (int)(at - a->pos[i]) : (int)strlen(a->pos[i]), a->pos[i]);
		if (at && !at[1])
			return cmd_usage_error(&cmd_export, "empty revision in '%s'", a->pos[i]);
		if (at && all)
			return cmd_usage_error(&cmd_export, "--all exports every revision: drop '@%s'", at + 1);
		if ((err = mirror_parse_repo(&env->ctx, arg, opt->repo_type, bufs[n], sizeof(bufs[n]),
					     &specs[n].type, &specs[n].repo)))
			return cmd_error(env, err);
		specs[n].rev = at ? at + 1 : NULL;
		specs[n].all = all;
		n++;
	}
	if ((err = cmd_open_store_mode(env, STORE_READ, &st)))
		goto fail;
	if (!n) {
		if ((err = store_list_repos(&env->ctx, st, &repos, &nrepos)))
			goto fail;
		for (size_t i = 0; i < nrepos && n < CMD_MAX_VALUES; i++, n++)
			specs[n] = (struct bundle_spec){repos[i].type, repos[i].name, NULL, 1};
		if (nrepos > CMD_MAX_VALUES) {
			err = hm_fail(&env->ctx, HM_ERR_USAGE, "the store holds %zu repos: export at most %d at a time",
				      nrepos, CMD_MAX_VALUES);
			goto fail;
		}
	}
	if ((err = bundle_export(&env->ctx, st, specs, n, out, (enum bundle_compress)comp, &r)))
		goto fail;
	cmd_progress_end(env);
	{
		/* with -o -, stdout is the archive: the summary goes to stderr */
		FILE *f = strcmp(out, "-") ? stdout : stderr;
		char h[32];
		if (env->json) {
			json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "output", out, "repos", (json_int_t)r.nrepos,
					      "revisions", (json_int_t)r.nrevisions, "files", (json_int_t)r.nfiles,
					      "blobs", (json_int_t)r.nblobs, "bytes", (json_int_t)r.bytes);
			json_t *o = json_pack("{s:i}", "schema", CMD_JSON_SCHEMA);
			json_object_update(o, j);
			json_decref(j);
			j = o;
			char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
			if (s)
				fprintf(f, "%s\n", s);
			free(s);
			json_decref(j);
		} else if (!env->quiet) {
			fprintf(f, "exported %zu revision(s) of %zu repo(s): %zu file(s), %zu blob(s), %s into %s\n",
				r.nrevisions, r.nrepos, r.nfiles, r.nblobs, util_human_size(r.bytes, h, sizeof(h)),
				strcmp(out, "-") ? out : "<stdout>");
		}
	}
	store_repo_info_free(repos, nrepos);
	store_close(st);
	return 0;
fail:
	rc = cmd_error(env, err);
	store_repo_info_free(repos, nrepos);
	store_close(st);
	return rc;
}

const struct cmd cmd_export = {
	"export", "REPO[@REV]... -o FILE | --all -o FILE",
	"Write stored revisions into an offline bundle (a tar archive).",
	"REV is a ref or a commit (default: the ref main, else the latest stored\n"
	"revision); datasets are datasets/org/name. The archive holds\n"
	"hubmirror-bundle.json (repos, revisions, refs, files with sizes and digests)\n"
	"and each blob once as blobs/sha256/<sha256>. The compression follows the\n"
	"name (.tar, .tar.gz, .tar.zst); '-o -' streams to stdout (the summary, and\n"
	"--json, then go to stderr), e.g.\n"
	"  hubmirror export org/name -o - | ssh host hubmirror import -\n"
	"A failed export leaves no partial FILE behind.",
	export_opts, sizeof(struct export_vals), export_run,
};

/* ---- import ---- */

static const struct cmd_opt import_opts[] = {CMD_OPT_END};

/* Each added blob's torrent, from the tree the import computed while it
 * hashed the blob (serve --p2p otherwise reads the blob once to make it). */
static void import_tree(void *arg, struct store *st, const char *sha256, uint64_t size, const unsigned char root[32],
			const unsigned char *layer, size_t layer_len)
{
	struct hm_ctx tc = {0};
	(void)arg;
	if (mirror_torrent_from_tree(&tc, st, sha256, size, root, layer, layer_len)) {
		/* made lazily from the blob then */
	}
}

static int import_run(struct cmd_env *env, struct cmd_args *a)
{
	struct bundle_import_result r;
	struct store *st = NULL;
	enum hm_err err;
	const char *path, *label;
	char h[32];

	if (a->npos != 1)
		return cmd_usage_error(&cmd_import, a->npos ? "import takes one bundle" : "missing bundle FILE (or '-' for stdin)");
	path = a->pos[0];
	if (!strcmp(path, "-") && isatty(0))
		return cmd_usage_error(&cmd_import, "stdin is a terminal: pipe a bundle in, or name the FILE");
	label = strcmp(path, "-") ? (strrchr(path, '/') ? strrchr(path, '/') + 1 : path) : "stdin";
	if ((err = cmd_open_store_mode(env, STORE_CREATE, &st))) {
		store_close(st);
		return cmd_error(env, err);
	}
	struct bundle_tree_hook hook = {mirror_torrent_piece_size, import_tree, NULL};
	err = bundle_import(&env->ctx, st, path, label, &hook, &r);
	if (err) {
		int rc = cmd_error(env, err);
		fprintf(stderr, "hubmirror: nothing was imported: no revision recorded%s\n",
			r.blobs_added ? " (blobs already copied are unreferenced; 'hubmirror gc' removes them)" : "");
		bundle_import_result_release(&r);
		store_close(st);
		return rc;
	}
	cmd_progress_end(env);
	if (env->json) {
		json_t *revs = json_array();
		for (size_t i = 0; i < r.nrevs; i++)
			json_array_append_new(revs, json_pack("{s:s, s:s, s:s, s:b}", "repo", r.revs[i].repo, "repo_type",
							      r.revs[i].type, "revision", r.revs[i].commit, "recorded",
							      r.revs[i].recorded));
		cmd_print_json(json_pack("{s:s, s:I, s:o, s:I, s:I, s:I, s:I}", "bundle", path, "repos",
					 (json_int_t)r.nrepos, "revisions", revs, "revisions_recorded",
					 (json_int_t)r.nrecorded, "blobs_added", (json_int_t)r.blobs_added,
					 "blobs_present", (json_int_t)r.blobs_present, "bytes", (json_int_t)r.bytes));
	} else if (!env->quiet) {
		for (size_t i = 0; i < r.nrevs; i++)
			printf("%s %s%s@%.12s\n", r.revs[i].recorded ? "imported" : "already stored",
			       strcmp(r.revs[i].type, "model") ? "datasets/" : "", r.revs[i].repo, r.revs[i].commit);
		printf("%zu blob(s) added (%s), %zu already in the store\n", r.blobs_added,
		       util_human_size(r.bytes, h, sizeof(h)), r.blobs_present);
	}
	bundle_import_result_release(&r);
	store_close(st);
	return 0;
}

const struct cmd cmd_import = {
	"import", "FILE|-",
	"Add the revisions of an offline bundle to the store, verifying every blob.",
	"Reads a bundle written by 'hubmirror export' (.tar, .tar.gz, .tar.zst; '-' is\n"
	"stdin). Every blob is hashed (SHA-256, and the git oid of regular files)\n"
	"before it enters the store; revisions and their refs are recorded as if pulled\n"
	"('stats' shows them from bundle:FILE) only once all blobs are in. Hostile\n"
	"archives are refused: names with '..' or absolute paths, links, devices,\n"
	"sizes other than the manifest's, blobs missing from or not named in the\n"
	"manifest, duplicate entries.\n"
	"A truncated or corrupt bundle fails naming the entry and the problem, and\n"
	"records no revision: the store is as it was, except that blobs copied before\n"
	"the failure stay unreferenced until 'hubmirror gc' removes them.\n"
	"Importing a bundle again changes nothing.",
	import_opts, 0, import_run,
};
