/* convert.c - convert a stored revision into a stored artifact (a GGUF blob
 * recorded with its revision and options), or into a file of the caller's;
 * the conversion itself is convert/'s. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mirror.h"
#include "../util/util.h"
#include "../store/artifacts.h"
#include "../store/index.h"

struct repo_src {
	struct store *st;
	struct store_file *f;
	size_t n;
};

static enum hm_err resolve_repo(struct hm_ctx *ctx, void *ud, const char *name, char *buf, size_t len)
{
	struct repo_src *r = ud;
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->f[i].path, name)) {
			/* an S3 store: read through the local cache */
			enum hm_err err = store_blob_local(ctx, r->st, r->f[i].sha256, r->f[i].size);
			if (err)
				return err;
			store_blob_path(r->st, r->f[i].sha256, buf, len);
			return HM_OK;
		}
	return HM_ERR_NOT_FOUND;
}

void mirror_convert_options(const struct conv_options *o, char *buf, size_t len)
{
	/* the cache key: what decides the bytes of the output */
	snprintf(buf, len, "type=%s conv=%d%s", conv_type_name(o->type), CONV_VERSION, o->name ? " name=custom" : "");
}

enum hm_err mirror_convert_file(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				const char *commit, const struct conv_options *o, const char *out_path,
				struct conv_result *res)
{
	struct repo_src rs = {st, NULL, 0};
	struct conv_source src = {resolve_repo, &rs, repo};
	enum hm_err err = store_list_files(ctx, st, type, repo, commit, &rs.f, &rs.n);
	if (!err)
		err = conv_to_gguf(ctx, &src, o, out_path, res);
	store_files_free(rs.f, rs.n);
	return err;
}

static void fill(struct store *st, const struct store_artifact *a, struct mirror_artifact *out)
{
	out->id = a->id;
	memcpy(out->sha256, a->sha256, sizeof(out->sha256));
	out->size = a->size;
	store_blob_path(st, a->sha256, out->path, sizeof(out->path));
}

enum hm_err mirror_convert(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			   const char *commit, const struct conv_options *o, int force, struct mirror_artifact *out)
{
	struct store_artifact art = {0};
	struct conv_options so = *o;
	char tmp[PATH_MAX] = "";
	enum hm_err err;
	int found = 0;

	memset(out, 0, sizeof(*out));
	if (o->name)
		return hm_fail(ctx, HM_ERR_USAGE, "a conversion with a custom name is not stored: convert it to a file");
	out->type = conv_type_name(o->type);
	mirror_convert_options(o, out->options, sizeof(out->options));
	/* a hit is a recorded artifact whose blob is there with its size */
	if (!force && (err = store_find_artifact(ctx, st, type, repo, commit, "gguf", out->options, &art, &found)))
		goto out;
	if (found) {
		fill(st, &art, out);
		out->cached = 1;
		/* an S3 store: the path must hold the bytes (smoke, run) */
		err = store_blob_local(ctx, st, out->sha256, out->size);
		goto out;
	}
	so.no_sha256 = 0; /* stored conversions are content-addressed */
	if ((err = store_artifact_tmp(ctx, st, ".gguf", tmp, sizeof(tmp))) ||
	    (err = mirror_convert_file(ctx, st, type, repo, commit, &so, tmp, &out->res)) ||
	    (err = store_blob_adopt(ctx, st, tmp, out->res.sha256, out->res.size, NULL, 1)))
		goto out;
	tmp[0] = '\0';
	if ((err = store_record_artifact(ctx, st, type, repo, commit, "gguf", out->options, out->res.sha256,
					 out->res.size)) ||
	    (err = store_find_artifact(ctx, st, type, repo, commit, "gguf", out->options, &art, &found)))
		goto out;
	if (!found || strcmp(art.sha256, out->res.sha256)) {
		err = hm_fail(ctx, HM_ERR_DB, "the conversion of '%s' at %.12s was recorded but cannot be found", repo,
			      commit);
		goto out;
	}
	fill(st, &art, out);
out:
	if (tmp[0])
		unlink(tmp);
	store_artifact_release(&art);
	return err;
}

enum hm_err mirror_convert_repair(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				  const char *commit, const char *options, struct mirror_artifact *out)
{
	struct conv_options o = {0};
	struct store_artifact *arts = NULL;
	size_t n = 0;
	char tname[16], want[64];
	int conv = -1;
	enum hm_err err;

	memset(out, 0, sizeof(*out));
	if (sscanf(options, "type=%15s conv=%d", tname, &conv) != 2 || conv_type_parse(tname, &o.type) < 0)
		return hm_fail(ctx, HM_ERR_USAGE, "cannot read the options '%s' of a conversion of '%s'", options, repo);
	mirror_convert_options(&o, want, sizeof(want));
	if (strcmp(want, options))
		return hm_fail(ctx, HM_ERR_USAGE, "the conversion '%s' of '%s' was made by another version (this one"
			       " makes '%s'): convert it again", options, repo, want);
	/* the bad blob goes first: adopting the new output keeps an existing blob */
	if ((err = store_list_artifacts(ctx, st, type, repo, &arts, &n)))
		return err;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(arts[i].commit, commit) && !strcmp(arts[i].format, "gguf") &&
		    !strcmp(arts[i].options, options)) {
			if (!err)
				err = store_blob_discard(ctx, st, arts[i].sha256);
		}
	store_artifacts_free(arts, n);
	if (err)
		return err;
	return mirror_convert(ctx, st, type, repo, commit, &o, 1, out);
}
