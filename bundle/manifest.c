/* manifest.c - the bundle manifest (hubmirror-bundle.json): strict parsing of
 * an untrusted one, and writing. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bundle.h"
#include "../util/util.h"
#include "../store/index.h"

#define FORMAT_NAME "hubmirror-bundle"
#define REF_MAX 255

void bundle_manifest_free(struct bundle_manifest *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nrevs; i++) {
		struct bundle_rev *r = &m->revs[i];
		free(r->repo);
		for (size_t k = 0; k < r->nrefs; k++)
			free(r->refs[k]);
		free(r->refs);
		store_files_free(r->files, r->nfiles);
	}
	free(m->revs);
	free(m->blobs);
	free(m);
}

static int cmp_blob(const void *a, const void *b)
{
	return strcmp(((const struct bundle_blob *)a)->sha256, ((const struct bundle_blob *)b)->sha256);
}

long bundle_manifest_find_blob(const struct bundle_manifest *m, const char *sha256)
{
	struct bundle_blob key;
	const struct bundle_blob *b;
	if (!m->nblobs || strlen(sha256) != 64)
		return -1;
	memcpy(key.sha256, sha256, 65);
	b = bsearch(&key, m->blobs, m->nblobs, sizeof(*m->blobs), cmp_blob);
	return b ? (long)(b - m->blobs) : -1;
}

static int cmp_str_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A string member of o, or NULL when absent or not a string. */
static const char *str_member(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static enum hm_err parse_file(struct hm_ctx *ctx, json_t *jf, const char *where, struct store_file *f)
{
	const char *path = str_member(jf, "path"), *sha = str_member(jf, "sha256");
	json_t *size = json_object_get(jf, "size"), *oid = json_object_get(jf, "git_oid"),
	       *lfs = json_object_get(jf, "lfs");

	if (!json_is_object(jf))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: a file is not an object", where);
	if (!path || strlen(path) != json_string_length(json_object_get(jf, "path")) || !util_path_is_safe(path))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: missing or unsafe file path '%s'", where,
			       path ? path : "");
	if (!json_is_integer(size) || json_integer_value(size) < 0 ||
	    json_integer_value(size) > ((json_int_t)1 << 60))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: '%s' has no valid size", where, path);
	if (!sha || !util_is_hex(sha, 64))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: '%s' has no valid sha256", where, path);
	if (oid && !json_is_null(oid) &&
	    (!json_is_string(oid) || (json_string_length(oid) && !util_is_hex(json_string_value(oid), 40))))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: '%s' has an invalid git_oid", where, path);
	if (lfs && !json_is_boolean(lfs))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: '%s' has a non-boolean lfs", where, path);
	if (!(f->path = util_strdup(path)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	f->size = (uint64_t)json_integer_value(size);
	memcpy(f->sha256, sha, 65);
	snprintf(f->git_oid, sizeof(f->git_oid), "%s", json_is_string(oid) ? json_string_value(oid) : "");
	f->lfs = json_is_true(lfs);
	return HM_OK;
}

static enum hm_err parse_rev(struct hm_ctx *ctx, json_t *jr, size_t idx, struct bundle_rev *r)
{
	const char *type = str_member(jr, "type"), *id = str_member(jr, "id"), *commit = str_member(jr, "revision");
	json_t *refs = json_object_get(jr, "refs"), *files = json_object_get(jr, "files");
	char where[160];
	enum hm_err err;

	if (!json_is_object(jr))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: repos[%zu] is not an object", idx);
	if (!type || (strcmp(type, "model") && strcmp(type, "dataset")))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: repos[%zu]: type must be model or dataset", idx);
	if (!id || strlen(id) != json_string_length(json_object_get(jr, "id")) || !util_repo_id_is_valid(id))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: repos[%zu]: invalid repo id '%.200s'", idx,
			       id ? id : "");
	if (!commit || !util_is_hex(commit, 40))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: invalid revision (a 40-hex commit)", id);
	if (refs && !json_is_array(refs))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: refs is not an array", id);
	if (!json_is_array(files))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: files is not an array", id);
	snprintf(r->type, sizeof(r->type), "%s", type);
	memcpy(r->commit, commit, 41);
	if (!(r->repo = util_strdup(id)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	snprintf(where, sizeof(where), "%s@%.12s", id, commit);

	size_t nrefs = json_array_size(refs);
	if (nrefs && !(r->refs = calloc(nrefs, sizeof(*r->refs))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < nrefs; i++) {
		json_t *v = json_array_get(refs, i);
		const char *s = json_is_string(v) ? json_string_value(v) : NULL;
		if (!s || strlen(s) != json_string_length(v) || strlen(s) > REF_MAX || !util_path_is_safe(s))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: invalid ref '%.200s'", where,
				       s ? s : "");
		for (size_t k = 0; k < r->nrefs; k++)
			if (!strcmp(r->refs[k], s))
				return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: ref '%s' listed twice", where, s);
		if (!(r->refs[r->nrefs] = util_strdup(s)))
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		r->nrefs++;
	}

	size_t nfiles = json_array_size(files);
	if (nfiles && !(r->files = calloc(nfiles, sizeof(*r->files))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < nfiles; i++) {
		if ((err = parse_file(ctx, json_array_get(files, i), where, &r->files[i])))
			return err;
		r->nfiles++;
	}
	/* a path twice would make the revision ambiguous */
	if (nfiles > 1) {
		const char **paths = malloc(nfiles * sizeof(*paths));
		if (!paths)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		for (size_t i = 0; i < nfiles; i++)
			paths[i] = r->files[i].path;
		qsort(paths, nfiles, sizeof(*paths), cmp_str_ptr);
		for (size_t i = 1; i < nfiles; i++)
			if (!strcmp(paths[i - 1], paths[i])) {
				err = hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s: path '%s' listed twice", where,
					      paths[i]);
				free(paths);
				return err;
			}
		free(paths);
	}
	return HM_OK;
}

/* Builds m->blobs from the files: one entry per sha256, sizes and git oids
 * consistent. */
static enum hm_err collect_blobs(struct hm_ctx *ctx, struct bundle_manifest *m)
{
	size_t total = 0, n = 0;
	for (size_t i = 0; i < m->nrevs; i++)
		total += m->revs[i].nfiles;
	if (!total)
		return HM_OK;
	struct bundle_blob *v = calloc(total, sizeof(*v));
	if (!v)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < m->nrevs; i++)
		for (size_t k = 0; k < m->revs[i].nfiles; k++) {
			const struct store_file *f = &m->revs[i].files[k];
			memcpy(v[n].sha256, f->sha256, 65);
			v[n].size = f->size;
			/* a regular file's git oid is the content's; an LFS file's is its pointer's */
			snprintf(v[n].git_oid, sizeof(v[n].git_oid), "%s", f->lfs ? "" : f->git_oid);
			n++;
		}
	qsort(v, n, sizeof(*v), cmp_blob);
	size_t out = 0;
	for (size_t i = 0; i < n; i++) {
		if (out && !strcmp(v[out - 1].sha256, v[i].sha256)) {
			struct bundle_blob *p = &v[out - 1];
			if (p->size != v[i].size) {
				enum hm_err err = hm_fail(ctx, HM_ERR_BAD_INPUT,
							  "bad manifest: blob %s is listed with sizes %llu and %llu",
							  v[i].sha256, (unsigned long long)p->size,
							  (unsigned long long)v[i].size);
				free(v);
				return err;
			}
			if (v[i].git_oid[0] && p->git_oid[0] && strcmp(p->git_oid, v[i].git_oid)) {
				enum hm_err err = hm_fail(ctx, HM_ERR_BAD_INPUT,
							  "bad manifest: blob %s is listed with two git oids", v[i].sha256);
				free(v);
				return err;
			}
			if (!p->git_oid[0])
				memcpy(p->git_oid, v[i].git_oid, 41);
			continue;
		}
		v[out++] = v[i];
	}
	m->blobs = v;
	m->nblobs = out;
	for (size_t i = 0; i < out; i++)
		m->blob_bytes += v[i].size;
	return HM_OK;
}

enum hm_err bundle_manifest_parse(struct hm_ctx *ctx, const char *data, size_t len, struct bundle_manifest **out)
{
	json_error_t jerr;
	json_t *root = NULL, *repos, *ver, *created;
	struct bundle_manifest *m = NULL;
	const char *format;
	enum hm_err err = HM_OK;

	*out = NULL;
	if (len > BUNDLE_MANIFEST_MAX)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %zu bytes (at most %zu)", len, BUNDLE_MANIFEST_MAX);
	root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: not JSON (%s at line %d)", jerr.text, jerr.line);
	format = str_member(root, "format");
	ver = json_object_get(root, "version");
	created = json_object_get(root, "created_at");
	repos = json_object_get(root, "repos");
	if (!json_is_object(root) || !format || strcmp(format, FORMAT_NAME)) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: not a hubmirror bundle manifest");
		goto out;
	}
	if (!json_is_integer(ver) || json_integer_value(ver) < 1) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: no valid version");
		goto out;
	}
	if (json_integer_value(ver) > BUNDLE_FORMAT_VERSION) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "bundle format version %lld is newer than this hubmirror reads (%d)",
			      (long long)json_integer_value(ver), BUNDLE_FORMAT_VERSION);
		goto out;
	}
	if (created && !json_is_integer(created)) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: created_at is not a number");
		goto out;
	}
	if (!json_is_array(repos) || !json_array_size(repos)) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: no repos");
		goto out;
	}
	if (!(m = calloc(1, sizeof(*m))) || !(m->revs = calloc(json_array_size(repos), sizeof(*m->revs)))) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	m->version = (int)json_integer_value(ver);
	m->created_at = created ? (int64_t)json_integer_value(created) : 0;
	for (size_t i = 0; i < json_array_size(repos); i++) {
		struct bundle_rev *r = &m->revs[i];
		m->nrevs++;
		if ((err = parse_rev(ctx, json_array_get(repos, i), i, r)))
			goto out;
		for (size_t k = 0; k < i; k++)
			if (!strcmp(m->revs[k].type, r->type) && !strcmp(m->revs[k].repo, r->repo) &&
			    !strcmp(m->revs[k].commit, r->commit)) {
				err = hm_fail(ctx, HM_ERR_BAD_INPUT, "bad manifest: %s@%.12s listed twice", r->repo,
					      r->commit);
				goto out;
			}
	}
	err = collect_blobs(ctx, m);
out:
	json_decref(root);
	if (err)
		bundle_manifest_free(m);
	else
		*out = m;
	return err;
}

char *bundle_manifest_dump(const struct bundle_manifest *m)
{
	json_t *root = json_pack("{s:s, s:i, s:I}", "format", FORMAT_NAME, "version", m->version, "created_at",
				 (json_int_t)m->created_at);
	json_t *repos = json_array();
	char *s = NULL;
	if (!root || !repos)
		goto out;
	for (size_t i = 0; i < m->nrevs; i++) {
		const struct bundle_rev *r = &m->revs[i];
		json_t *refs = json_array(), *files = json_array();
		for (size_t k = 0; k < r->nrefs; k++)
			json_array_append_new(refs, json_string(r->refs[k]));
		for (size_t k = 0; k < r->nfiles; k++) {
			const struct store_file *f = &r->files[k];
			json_array_append_new(files, json_pack("{s:s, s:I, s:s, s:s, s:b}", "path", f->path, "size",
							       (json_int_t)f->size, "sha256", f->sha256, "git_oid",
							       f->git_oid, "lfs", f->lfs));
		}
		json_array_append_new(repos, json_pack("{s:s, s:s, s:s, s:o, s:o}", "type", r->type, "id", r->repo,
						       "revision", r->commit, "refs", refs, "files", files));
	}
	json_object_set_new(root, "repos", repos);
	repos = NULL;
	s = json_dumps(root, JSON_INDENT(1) | JSON_ENSURE_ASCII);
out:
	json_decref(repos);
	json_decref(root);
	return s;
}
