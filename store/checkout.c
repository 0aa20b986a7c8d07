/* checkout.c - materializes a stored revision as plain files or as a
 * huggingface_hub cache (models--org--name/{blobs,snapshots,refs}). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "store-int.h"
#include "../util/util.h"

enum hm_err store_copy_file(struct hm_ctx *ctx, const char *src, const char *dst, int writable)
{
	enum hm_err err = HM_OK;
	int in = -1, out = -1;
	char *buf = NULL;
	const size_t cap = 1u << 20;

	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return hm_fail(ctx, store_errno_err(errno), "cannot open '%s': %s", src, strerror(errno));
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (out < 0) {
		err = hm_fail(ctx, store_errno_err(errno), "cannot create '%s': %s", dst, strerror(errno));
		goto out;
	}
	/* a reflink (btrfs, xfs) shares extents copy-on-write: instant and independent */
	if (ioctl(out, FICLONE, in) == 0)
		goto done;
	buf = malloc(cap);
	if (!buf) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory copying '%s'", src);
		goto out;
	}
	for (;;) {
		ssize_t r = read(in, buf, cap);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = hm_fail(ctx, HM_ERR_IO, "cannot read '%s': %s", src, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		for (ssize_t off = 0; off < r;) {
			ssize_t w = write(out, buf + off, (size_t)(r - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				err = hm_fail(ctx, store_errno_err(errno), "cannot write '%s': %s", dst,
					      strerror(errno));
				goto out;
			}
			off += w;
		}
	}
done:
	/* a stand-in for a blob is as read-only as the blob; an asked-for copy is the user's */
	if (fchmod(out, writable ? 0644 : 0444) < 0)
		err = hm_fail(ctx, HM_ERR_IO, "cannot chmod '%s': %s", dst, strerror(errno));
out:
	free(buf);
	close(in);
	if (out >= 0 && close(out) < 0 && !err)
		err = hm_fail(ctx, store_errno_err(errno), "cannot write '%s': %s", dst, strerror(errno));
	if (err && out >= 0)
		unlink(dst);
	return err;
}

/* A temp name beside path, so the final rename stays in one directory. */
static int tmp_beside(char *buf, size_t len, const char *path)
{
	return snprintf(buf, len, "%s.hm-tmp-%ld", path, (long)getpid()) >= (int)len ? -1 : 0;
}

/* Makes dst the same content as blob: hard link, or a copy across
 * filesystems (always a writable copy when copy is set); replaces whatever
 * dst was. */
static enum hm_err place_blob(struct hm_ctx *ctx, const char *blob, const char *dst, int copy)
{
	enum hm_err err;
	char tmp[PATH_MAX];
	struct stat a, b;

	if (stat(blob, &a) < 0)
		return hm_fail(ctx, HM_ERR_IO, "cannot stat '%s': %s", blob, strerror(errno));
	if (!copy && lstat(dst, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		return HM_OK;
	if (util_mkdir_parents(dst, 0755) < 0)
		return hm_fail(ctx, store_errno_err(errno), "cannot create the directory of '%s': %s",
			       dst, strerror(errno));
	if (tmp_beside(tmp, sizeof(tmp), dst) < 0)
		return hm_fail(ctx, HM_ERR_USAGE, "path '%s' is too long", dst);
	unlink(tmp); /* debris of an interrupted checkout by a process with our pid */
	if (copy) {
		if ((err = store_copy_file(ctx, blob, tmp, 1)))
			return err;
	} else if (link(blob, tmp) < 0) {
		/* EXDEV: another filesystem; EPERM/EMLINK: no (more) links here */
		if (errno != EXDEV && errno != EPERM && errno != EMLINK && errno != ENOTSUP)
			return hm_fail(ctx, store_errno_err(errno), "cannot link '%s': %s", tmp,
				       strerror(errno));
		if ((err = store_copy_file(ctx, blob, tmp, 0)))
			return err;
	}
	if (rename(tmp, dst) < 0) {
		err = hm_fail(ctx, store_errno_err(errno), "cannot rename '%s' to '%s': %s", tmp, dst,
			      strerror(errno));
		unlink(tmp);
		return err;
	}
	return HM_OK;
}

/* Makes path a symlink to target, replacing what was there. */
static enum hm_err place_symlink(struct hm_ctx *ctx, const char *target, const char *path)
{
	enum hm_err err;
	char tmp[PATH_MAX], cur[PATH_MAX];
	ssize_t n;

	n = readlink(path, cur, sizeof(cur) - 1);
	if (n >= 0) {
		cur[n] = '\0';
		if (!strcmp(cur, target))
			return HM_OK;
	}
	if (util_mkdir_parents(path, 0755) < 0)
		return hm_fail(ctx, store_errno_err(errno), "cannot create the directory of '%s': %s",
			       path, strerror(errno));
	if (tmp_beside(tmp, sizeof(tmp), path) < 0)
		return hm_fail(ctx, HM_ERR_USAGE, "path '%s' is too long", path);
	unlink(tmp);
	if (symlink(target, tmp) < 0)
		return hm_fail(ctx, store_errno_err(errno), "cannot create symlink '%s': %s", tmp,
			       strerror(errno));
	if (rename(tmp, path) < 0) {
		err = hm_fail(ctx, store_errno_err(errno), "cannot rename '%s' to '%s': %s", tmp, path,
			      strerror(errno));
		unlink(tmp);
		return err;
	}
	return HM_OK;
}

static enum hm_err checkout_files(struct hm_ctx *ctx, struct store *st, const char *dir,
				  const struct store_file *files, size_t n, int copy)
{
	enum hm_err err;
	char blob[PATH_MAX], dst[PATH_MAX];

	for (size_t i = 0; i < n; i++) {
		if (hm_cancelled(ctx))
			return hm_fail(ctx, HM_ERR_CANCELLED, "checkout interrupted");
		/* the index is ours, but re-check: a path must never leave dir */
		if (!util_path_is_safe(files[i].path))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "unsafe path '%s'", files[i].path);
		if (snprintf(dst, sizeof(dst), "%s/%s", dir, files[i].path) >= (int)sizeof(dst))
			return hm_fail(ctx, HM_ERR_USAGE, "path '%s/%s' is too long", dir, files[i].path);
		/* an S3 store: the blob is copied into the local cache first */
		if ((err = store_blob_local(ctx, st, files[i].sha256, files[i].size)))
			return err;
		store_blob_path(st, files[i].sha256, blob, sizeof(blob));
		if ((err = place_blob(ctx, blob, dst, copy)))
			return err;
	}
	return HM_OK;
}

static enum hm_err checkout_hf_cache(struct hm_ctx *ctx, struct store *st, const char *type,
				     const char *repo, const char *commit, const char *ref,
				     const char *dir, const struct store_file *files, size_t n, int copy)
{
	enum hm_err err;
	char root[PATH_MAX], blob[PATH_MAX], dst[PATH_MAX], target[PATH_MAX];
	size_t off;

	/* huggingface_hub: "{type}s--" + repo_id with '/' -> "--" */
	off = (size_t)snprintf(root, sizeof(root), "%s/%ss--", dir, type);
	for (const char *p = repo; *p && off + 3 < sizeof(root); p++) {
		if (*p == '/') {
			root[off++] = '-';
			root[off++] = '-';
		} else {
			root[off++] = *p;
		}
	}
	if (off + 3 >= sizeof(root))
		return hm_fail(ctx, HM_ERR_USAGE, "path '%s' is too long", dir);
	root[off] = '\0';

	for (size_t i = 0; i < n; i++) {
		const struct store_file *f = &files[i];
		/* the etag huggingface_hub names blobs by: LFS sha256, else git oid */
		const char *etag = f->lfs || !f->git_oid[0] ? f->sha256 : f->git_oid;
		size_t depth = 0;

		if (hm_cancelled(ctx))
			return hm_fail(ctx, HM_ERR_CANCELLED, "checkout interrupted");
		if (!util_path_is_safe(f->path))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "unsafe path '%s'", f->path);
		if ((err = store_blob_local(ctx, st, f->sha256, f->size)))
			return err;
		store_blob_path(st, f->sha256, blob, sizeof(blob));
		if (snprintf(dst, sizeof(dst), "%s/blobs/%s", root, etag) >= (int)sizeof(dst))
			return hm_fail(ctx, HM_ERR_USAGE, "path '%s' is too long", root);
		if ((err = place_blob(ctx, blob, dst, copy)))
			return err;

		/* snapshots/<commit>/<path> -> ../../blobs/<etag>, one more ../ per directory */
		for (const char *p = f->path; *p; p++)
			depth += *p == '/';
		off = 0;
		for (size_t d = 0; d < depth + 2; d++)
			off += (size_t)snprintf(target + off, sizeof(target) - off, "../");
		if (off + 6 + strlen(etag) >= sizeof(target))
			return hm_fail(ctx, HM_ERR_USAGE, "path '%s' is too deep", f->path);
		snprintf(target + off, sizeof(target) - off, "blobs/%s", etag);
		if (snprintf(dst, sizeof(dst), "%s/snapshots/%s/%s", root, commit, f->path) >= (int)sizeof(dst))
			return hm_fail(ctx, HM_ERR_USAGE, "path '%s' is too long", f->path);
		if ((err = place_symlink(ctx, target, dst)))
			return err;
	}

	/* an empty revision still gets its snapshot directory */
	if (snprintf(dst, sizeof(dst), "%s/snapshots/%s", root, commit) >= (int)sizeof(dst))
		return hm_fail(ctx, HM_ERR_USAGE, "path '%s' is too long", root);
	if (util_mkdir_p(dst, 0755) < 0)
		return hm_fail(ctx, store_errno_err(errno), "cannot create '%s': %s", dst, strerror(errno));
	if (ref) {
		if (!util_path_is_safe(ref))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid ref '%s'", ref);
		if (snprintf(dst, sizeof(dst), "%s/refs/%s", root, ref) >= (int)sizeof(dst))
			return hm_fail(ctx, HM_ERR_USAGE, "ref '%s' is too long", ref);
		if (util_mkdir_parents(dst, 0755) < 0 || util_write_file_atomic(dst, commit, strlen(commit)) < 0)
			return hm_fail(ctx, store_errno_err(errno), "cannot write '%s': %s", dst, strerror(errno));
	}
	return HM_OK;
}

enum hm_err store_checkout(struct hm_ctx *ctx, struct store *st, const char *type,
			   const char *repo, const char *commit, const char *ref,
			   const char *dir, enum store_layout layout, int copy)
{
	enum hm_err err;
	struct store_file *files = NULL;
	size_t n = 0;

	if (!store_type_ok(type))
		return hm_fail(ctx, HM_ERR_USAGE, "unknown repo type '%s'", type ? type : "");
	if (!util_repo_id_is_valid(repo))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid repo id '%s'", repo ? repo : "");
	if (!util_is_hex(commit, 40))
		return hm_fail(ctx, HM_ERR_USAGE, "'%s' is not a full commit", commit ? commit : "");
	if ((err = store_list_files(ctx, st, type, repo, commit, &files, &n)))
		return err;
	if (util_mkdir_p(dir, 0755) < 0) {
		err = hm_fail(ctx, store_errno_err(errno), "cannot create '%s': %s", dir, strerror(errno));
		goto out;
	}
	if (layout == STORE_LAYOUT_HF_CACHE)
		err = checkout_hf_cache(ctx, st, type, repo, commit, ref, dir, files, n, copy);
	else
		err = checkout_files(ctx, st, dir, files, n, copy);
out:
	store_files_free(files, n);
	return err;
}
