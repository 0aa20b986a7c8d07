/* checkout.c - materialize a stored revision (a new tree all or nothing),
 * record it, and keep recorded hard-linked checkouts in step with the
 * store: verify finds those holding other bytes, repair re-links them. */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "mirror.h"
#include "../util/util.h"
#include "../verify/verify.h"
#include "../store/checkout.h"
#include "../store/index.h"

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (flag == FTW_DP)
		return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
	return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* Removes a tree of ours (a temp dir we made); no error when it is not there. */
static void rm_tree(const char *dir)
{
	struct stat sb;
	if (lstat(dir, &sb) == 0)
		(void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Every blob of the revision there with its size (fetched into the cache
 * first for an S3 store): else nothing is written. */
static enum hm_err blobs_present(struct hm_ctx *ctx, struct store *st, const struct store_file *f, size_t n)
{
	char path[PATH_MAX];
	struct stat sb;
	enum hm_err err;
	for (size_t i = 0; i < n; i++) {
		if (i % 1024 == 0 && hm_cancelled(ctx))
			return hm_fail(ctx, HM_ERR_CANCELLED, "checkout interrupted");
		err = store_blob_local(ctx, st, f[i].sha256, f[i].size);
		if (err && err != HM_ERR_NOT_FOUND && err != HM_ERR_CORRUPT)
			return err;
		store_blob_path(st, f[i].sha256, path, sizeof(path));
		if (err || stat(path, &sb) != 0 || (uint64_t)sb.st_size != f[i].size)
			return hm_fail(ctx, HM_ERR_NOT_FOUND,
				       "the blob of '%s' (sha256 %.16s...) is missing from the store: run 'hubmirror"
				       " verify --repair', then check out again (nothing was written)",
				       f[i].path, f[i].sha256);
	}
	return HM_OK;
}

/* Is dir absent, or an empty directory (removed then)? */
static int fresh_dir(const char *dir)
{
	struct stat sb;
	if (lstat(dir, &sb) != 0)
		return errno == ENOENT;
	return S_ISDIR(sb.st_mode) && rmdir(dir) == 0;
}

enum hm_err mirror_checkout(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			    const char *commit, const char *ref, const char *dir, enum store_layout layout, int copy)
{
	struct store_file *files = NULL;
	size_t n = 0;
	char tmp[PATH_MAX], abs[PATH_MAX];
	enum hm_err err;

	if ((err = store_list_files(ctx, st, type, repo, commit, &files, &n)) ||
	    (err = blobs_present(ctx, st, files, n)))
		goto out;
	if (layout == STORE_LAYOUT_FILES && fresh_dir(dir)) {
		/* a new tree is built beside and renamed into place: never half a model */
		if (snprintf(tmp, sizeof(tmp), "%s.hm-tmp-%ld", dir, (long)getpid()) >= (int)sizeof(tmp)) {
			err = hm_fail(ctx, HM_ERR_USAGE, "path '%s' is too long", dir);
			goto out;
		}
		rm_tree(tmp);
		if (util_mkdir_parents(dir, 0755) < 0) {
			err = hm_fail(ctx, HM_ERR_IO, "cannot create the directory of '%s': %s", dir, strerror(errno));
			goto out;
		}
		err = store_checkout(ctx, st, type, repo, commit, ref, tmp, layout, copy);
		if (!err && rename(tmp, dir) < 0)
			err = hm_fail(ctx, errno == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO, "cannot rename '%s' to '%s': %s",
				      tmp, dir, strerror(errno));
		if (err)
			rm_tree(tmp);
	} else {
		/* an existing tree (or a shared HF cache) is updated file by file */
		err = store_checkout(ctx, st, type, repo, commit, ref, dir, layout, copy);
	}
	if (err)
		goto out;
	if (!realpath(dir, abs)) {
		err = hm_fail(ctx, HM_ERR_IO, "cannot resolve '%s': %s", dir, strerror(errno));
		goto out;
	}
	/* copies need no keeping in step; hard links are what verify checks */
	if (!copy)
		err = store_record_checkout(ctx, st, type, repo, commit, abs, layout, copy);
out:
	store_files_free(files, n);
	return err;
}

/* Where file f of a checkout holds the blob's bytes: the file itself
 * (files), or the cache's blobs/<etag> (hf-cache; the snapshot is a symlink). */
static int checkout_path(const struct store_checkout_info *c, const struct store_file *f, char *buf, size_t len)
{
	if (c->layout == STORE_LAYOUT_FILES)
		return snprintf(buf, len, "%s/%s", c->dir, f->path) >= (int)len ? -1 : 0;
	size_t off = (size_t)snprintf(buf, len, "%s/%ss--", c->dir, c->type);
	for (const char *p = c->repo; *p && off + 3 < len; p++) {
		if (*p == '/') {
			buf[off++] = '-';
			buf[off++] = '-';
		} else {
			buf[off++] = *p;
		}
	}
	if (off + 3 >= len)
		return -1;
	const char *etag = f->lfs || !f->git_oid[0] ? f->sha256 : f->git_oid;
	return snprintf(buf + off, len - off, "/blobs/%s", etag) >= (int)(len - off) ? -1 : 0;
}

/* Does path hold blob f's bytes: the same inode, or the same content? */
static int in_step(struct store *st, const struct store_file *f, const char *path)
{
	char blob[PATH_MAX], sha[65], oid[41];
	struct stat a, b;
	uint64_t size = 0;
	struct hm_ctx quiet = {0};
	store_blob_path(st, f->sha256, blob, sizeof(blob));
	if (stat(path, &b) != 0)
		return 0;
	if (stat(blob, &a) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		return 1;
	if (!S_ISREG(b.st_mode) || (uint64_t)b.st_size != f->size)
		return 0;
	return verify_file(&quiet, path, 0, sha, oid, &size) == HM_OK && !strcmp(sha, f->sha256);
}

enum hm_err mirror_verify_checkouts(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				    void (*on_problem)(void *ud, const struct mirror_problem *p), void *ud,
				    size_t *checked, size_t *nbad)
{
	struct store_checkout_info *c = NULL;
	size_t nc = 0;
	enum hm_err err = store_list_checkouts(ctx, st, type, repo, &c, &nc);
	for (size_t i = 0; i < nc && !err; i++) {
		struct store_file *f = NULL;
		size_t nf = 0;
		struct stat sb;
		char path[PATH_MAX];
		/* a tree the user removed is no problem of the store's */
		if (c[i].copy || stat(c[i].dir, &sb) != 0)
			continue;
		if ((err = store_list_files(ctx, st, c[i].type, c[i].repo, c[i].commit, &f, &nf)))
			break;
		for (size_t k = 0; k < nf && !err; k++) {
			if (k % 1024 == 0 && hm_cancelled(ctx))
				err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
			if (err || checkout_path(&c[i], &f[k], path, sizeof(path)) < 0 || lstat(path, &sb) != 0)
				continue;
			(*checked)++;
			if (in_step(st, &f[k], path))
				continue;
			(*nbad)++;
			struct mirror_problem pr = {c[i].type, c[i].repo, c[i].commit, f[k].path, f[k].sha256,
						    "stale", NULL, c[i].dir};
			if (on_problem)
				on_problem(ud, &pr);
		}
		store_files_free(f, nf);
	}
	store_checkouts_free(c, nc);
	return err;
}

enum hm_err mirror_relink_checkouts(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				    const char *commit, size_t *nrelinked)
{
	struct store_checkout_info *c = NULL;
	size_t nc = 0;
	enum hm_err err = store_list_checkouts(ctx, st, type, repo, &c, &nc);
	*nrelinked = 0;
	for (size_t i = 0; i < nc && !err; i++) {
		struct stat sb;
		if (c[i].copy || strcmp(c[i].commit, commit) || stat(c[i].dir, &sb) != 0)
			continue;
		/* files already sharing the blob's inode are left alone */
		if (!(err = store_checkout(ctx, st, c[i].type, c[i].repo, c[i].commit, NULL, c[i].dir, c[i].layout, 0)))
			(*nrelinked)++;
	}
	store_checkouts_free(c, nc);
	return err;
}
