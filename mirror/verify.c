/* verify.c - re-hash stored blobs against their names; parse repo arguments. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "mirror.h"
#include "../util/util.h"
#include "../verify/verify.h"
#include "../store/artifacts.h"
#include "../store/index.h"

enum hm_err mirror_parse_repo(struct hm_ctx *ctx, const char *arg, const char *default_type,
			      char *buf, size_t len, const char **type, const char **repo)
{
	const char *t = default_type ? default_type : "model", *r = arg;
	if (!strncmp(arg, "model:", 6)) {
		t = "model";
		r = arg + 6;
	} else if (!strncmp(arg, "dataset:", 8)) {
		t = "dataset";
		r = arg + 8;
	} else if (!strncmp(arg, "datasets/", 9)) {
		t = "dataset";
		r = arg + 9;
	}
	if (strcmp(t, "model") && strcmp(t, "dataset"))
		return hm_fail(ctx, HM_ERR_USAGE, "unknown repo type '%s': expected model or dataset", t);
	if (!util_repo_id_is_valid(r) || strlen(r) >= len)
		return hm_fail(ctx, HM_ERR_USAGE, "invalid repository id '%s': expected 'name' or 'org/name'", r);
	strcpy(buf, r);
	*type = t;
	*repo = buf;
	return HM_OK;
}

struct vitem {
	const char *type, *repo; /* the repo list's */
	char commit[41];
	char *path;
	char sha256[65];
	uint64_t size;
};

/* *problem: NULL when blob sha256 is there with this size and content, else
 * what is wrong ("missing" | "corrupt"). */
static enum hm_err check_blob(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t want,
			      const char **problem)
{
	char path[4096], sha[65], oid[41];
	uint64_t size = 0;
	struct stat sb;
	struct hm_ctx quiet = {0};
	*problem = NULL;
	if (store_is_remote(st)) /* an S3 store: the object in the bucket is what counts */
		return store_blob_check(ctx, st, sha256, want, problem);
	store_blob_path(st, sha256, path, sizeof(path));
	if (stat(path, &sb) != 0) {
		*problem = "missing";
		return HM_OK;
	}
	enum hm_err e2 = verify_file(&quiet, path, 0, sha, oid, &size);
	if (e2 == HM_ERR_IO && errno == ENOENT)
		*problem = "missing";
	else if (e2 || strcmp(sha, sha256) || size != want)
		*problem = "corrupt";
	return HM_OK;
}

/* The stored conversions of the repos verified: their blobs re-hashed. */
static enum hm_err verify_artifacts(struct hm_ctx *ctx, struct store *st, const struct store_repo_info *ri, size_t nri,
				    const int *want, size_t n,
				    void (*on_problem)(void *ud, const struct mirror_problem *p), void *ud,
				    size_t *checked, size_t *nbad)
{
	enum hm_err err = HM_OK;
	for (size_t i = 0; i < nri && !err; i++) {
		struct store_artifact *a = NULL;
		size_t na = 0;
		if (n && !want[i])
			continue;
		if ((err = store_list_artifacts(ctx, st, ri[i].type, ri[i].name, &a, &na)))
			break;
		for (size_t k = 0; k < na; k++) {
			char label[128];
			const char *problem;
			if (hm_cancelled(ctx)) {
				err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
				break;
			}
			(*checked)++;
			if ((err = check_blob(ctx, st, a[k].sha256, a[k].size, &problem)))
				break;
			if (!problem)
				continue;
			(*nbad)++;
			snprintf(label, sizeof(label), "%s %s", a[k].format, a[k].options);
			struct mirror_problem pr = {ri[i].type, ri[i].name, a[k].commit, label, a[k].sha256, problem,
						    a[k].options, NULL};
			if (on_problem)
				on_problem(ud, &pr);
		}
		store_artifacts_free(a, na);
	}
	return err;
}

/* Every file of every revision of the wanted repos (want NULL: all). */
static enum hm_err gather(struct hm_ctx *ctx, struct store *st, const struct store_repo_info *ri, size_t nri,
			  const int *want, struct vitem **out, size_t *nout)
{
	struct vitem *it = NULL;
	size_t ni = 0, cap = 0;
	enum hm_err err = HM_OK;
	for (size_t i = 0; i < nri && !err; i++) {
		struct store_rev_info *rv = NULL;
		size_t nrv = 0;
		if (want && !want[i])
			continue;
		if ((err = store_list_revisions(ctx, st, ri[i].type, ri[i].name, &rv, &nrv)))
			break;
		for (size_t k = 0; k < nrv && !err; k++) {
			struct store_file *f = NULL;
			size_t nf = 0;
			err = store_list_files(ctx, st, ri[i].type, ri[i].name, rv[k].commit, &f, &nf);
			if (!err && ni + nf > cap) {
				size_t nc = cap ? cap : 256;
				while (nc < ni + nf)
					nc *= 2;
				struct vitem *nv = realloc(it, nc * sizeof(*nv));
				if (!nv)
					err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				else
					it = nv, cap = nc;
			}
			for (size_t q = 0; q < nf && !err; q++) {
				struct vitem *v = &it[ni++];
				v->type = ri[i].type;
				v->repo = ri[i].name;
				/* the path is taken from the listing, not copied */
				v->path = f[q].path;
				f[q].path = NULL;
				memcpy(v->commit, rv[k].commit, 41);
				memcpy(v->sha256, f[q].sha256, 65);
				v->size = f[q].size;
			}
			store_files_free(f, nf);
		}
		store_rev_info_free(rv, nrv);
	}
	*out = it;
	*nout = ni;
	return err;
}

static int cmp_sha(const void *a, const void *b)
{
	return strcmp(((const struct vitem *)a)->sha256, ((const struct vitem *)b)->sha256);
}

enum hm_err mirror_verify(struct hm_ctx *ctx, struct store *st, const char *const *repos, size_t n,
			  void (*on_problem)(void *ud, const struct mirror_problem *p), void *ud,
			  size_t *checked, size_t *nbad)
{
	struct store_repo_info *ri = NULL;
	size_t nri = 0, ni = 0;
	struct vitem *it = NULL;
	enum hm_err err;
	uint64_t total = 0, done = 0;
	int *want = NULL;

	*checked = *nbad = 0;
	err = store_list_repos(ctx, st, &ri, &nri);
	if (err)
		return err;
	want = calloc(nri ? nri : 1, sizeof(*want));
	if (!want) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (size_t a = 0; a < n; a++) {
		char buf[256];
		const char *t, *r;
		int found = 0;
		err = mirror_parse_repo(ctx, repos[a], NULL, buf, sizeof(buf), &t, &r);
		if (err)
			goto out;
		int typed = strchr(repos[a], ':') || !strncmp(repos[a], "datasets/", 9);
		for (size_t i = 0; i < nri; i++)
			if (!strcmp(ri[i].name, r) && (!typed || !strcmp(ri[i].type, t)))
				want[i] = found = 1;
		if (!found) {
			err = hm_fail(ctx, HM_ERR_NOT_FOUND, "'%s' not found in the store", repos[a]);
			goto out;
		}
	}
	if ((err = gather(ctx, st, ri, nri, n ? want : NULL, &it, &ni)))
		goto out;
	if (ni)
		qsort(it, ni, sizeof(*it), cmp_sha);
	for (size_t i = 0; i < ni; i++)
		if (!i || strcmp(it[i].sha256, it[i - 1].sha256))
			total += it[i].size;
	for (size_t i = 0; i < ni;) {
		size_t e = i + 1;
		const char *problem;
		while (e < ni && !strcmp(it[e].sha256, it[i].sha256))
			e++;
		if (hm_cancelled(ctx)) {
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
			goto out;
		}
		if ((err = check_blob(ctx, st, it[i].sha256, it[i].size, &problem)))
			goto out;
		done += it[i].size;
		struct hm_event ev = {.kind = HM_EV_PROGRESS, .done = done, .total = total};
		hm_emit(ctx, &ev);
		for (size_t k = i; k < e; k++) {
			(*checked)++;
			if (!problem)
				continue;
			(*nbad)++;
			struct mirror_problem pr = {it[k].type, it[k].repo, it[k].commit, it[k].path,
						    it[k].sha256, problem, NULL, NULL};
			if (on_problem)
				on_problem(ud, &pr);
		}
		i = e;
	}
	err = verify_artifacts(ctx, st, ri, nri, want, n, on_problem, ud, checked, nbad);
	for (size_t i = 0; i < nri && !err; i++)
		if (!n || want[i])
			err = mirror_verify_checkouts(ctx, st, ri[i].type, ri[i].name, on_problem, ud, checked, nbad);
out:
	for (size_t i = 0; i < ni; i++)
		free(it[i].path);
	free(it);
	free(want);
	store_repo_info_free(ri, nri);
	return err;
}
