/* export.c - writes stored revisions as a bundle: the manifest first, then
 * each distinct blob once, streamed in 1 MiB blocks. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "bundle.h"
#include "bundle-int.h"
#include "../util/util.h"
#include "../store/index.h"

#define BLOCK ((size_t)1 << 20)

int bundle_compress_by_name(const char *name)
{
	size_t n = strlen(name);
#define ENDS(s) (n >= sizeof(s) - 1 && !strcmp(name + n - (sizeof(s) - 1), s))
	if (ENDS(".tar"))
		return BUNDLE_TAR;
	if (ENDS(".tar.gz") || ENDS(".tgz"))
		return BUNDLE_GZIP;
	if (ENDS(".tar.zst") || ENDS(".tzst"))
		return BUNDLE_ZSTD;
#undef ENDS
	return -1;
}

/* Appends a revision to m (a draft: blobs are filled in by re-parsing). */
static enum hm_err add_rev(struct hm_ctx *ctx, struct store *st, struct bundle_manifest *m, const char *type,
			   const char *repo, const char *commit, const char *refs_csv)
{
	struct bundle_rev *r;
	enum hm_err err;

	for (size_t i = 0; i < m->nrevs; i++)
		if (!strcmp(m->revs[i].type, type) && !strcmp(m->revs[i].repo, repo) &&
		    !strcmp(m->revs[i].commit, commit))
			return HM_OK; /* named twice */
	r = realloc(m->revs, (m->nrevs + 1) * sizeof(*r));
	if (!r)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	m->revs = r;
	r = &m->revs[m->nrevs++];
	memset(r, 0, sizeof(*r));
	snprintf(r->type, sizeof(r->type), "%s", type);
	memcpy(r->commit, commit, 41);
	if (!(r->repo = util_strdup(repo)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if ((err = store_list_files(ctx, st, type, repo, commit, &r->files, &r->nfiles)))
		return err;
	for (const char *p = refs_csv; p && *p;) {
		size_t len = strcspn(p, ",");
		char **v = realloc(r->refs, (r->nrefs + 1) * sizeof(*v));
		if (!v)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		r->refs = v;
		if (!(r->refs[r->nrefs] = util_strndup(p, len)))
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		r->nrefs++;
		p += len;
		if (*p == ',')
			p++;
	}
	return HM_OK;
}

/* Adds the revisions one spec names. */
static enum hm_err add_spec(struct hm_ctx *ctx, struct store *st, struct bundle_manifest *m,
			    const struct bundle_spec *s)
{
	struct store_rev_info *revs = NULL;
	size_t nrevs = 0;
	char commit[41];
	enum hm_err err;

	if (!s->all) {
		ctx->errmsg[0] = 0;
		if ((err = store_resolve(ctx, st, s->type, s->repo, s->rev, commit))) {
			if (err == HM_ERR_NOT_FOUND && !ctx->errmsg[0])
				hm_fail(ctx, err, s->rev ? "revision '%s' of '%s' not found in the store"
							 : "%s'%s' not found in the store",
					s->rev ? s->rev : "", s->repo);
			return err;
		}
	}
	if ((err = store_list_revisions(ctx, st, s->type, s->repo, &revs, &nrevs)))
		return err;
	for (size_t i = 0; i < nrevs && !err; i++)
		if (s->all || !strcmp(revs[i].commit, commit))
			err = add_rev(ctx, st, m, s->type, s->repo, revs[i].commit, revs[i].refs);
	store_rev_info_free(revs, nrevs);
	return err;
}

/* The manifest for the specs, validated as an importer would. */
static enum hm_err build_manifest(struct hm_ctx *ctx, struct store *st, const struct bundle_spec *specs, size_t n,
				  struct bundle_manifest **out, char **json)
{
	struct bundle_manifest *draft = calloc(1, sizeof(*draft));
	enum hm_err err = HM_OK;

	*out = NULL;
	*json = NULL;
	if (!draft)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	draft->version = BUNDLE_FORMAT_VERSION;
	draft->created_at = util_unix_time();
	for (size_t i = 0; i < n && !err; i++)
		err = add_spec(ctx, st, draft, &specs[i]);
	if (!err && !draft->nrevs)
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "nothing to export: the store holds no revisions");
	if (!err && !(*json = bundle_manifest_dump(draft)))
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if (!err && (err = bundle_manifest_parse(ctx, *json, strlen(*json), out))) {
		free(*json);
		*json = NULL;
	}
	bundle_manifest_free(draft);
	return err;
}

static enum hm_err arch_fail(struct hm_ctx *ctx, struct archive *a, const char *what, const char *path)
{
	int e = archive_errno(a);
	const char *s = archive_error_string(a);
	return hm_fail(ctx, e == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO, "cannot %s '%s': %s", what, path,
		       s ? s : "libarchive error");
}

static void emit_progress(struct hm_ctx *ctx, uint64_t done, uint64_t total, double t0, double *last)
{
	double now = util_now();
	if (done < total && now - *last < 0.1)
		return;
	*last = now;
	struct hm_event ev = {.kind = HM_EV_PROGRESS, .done = done, .total = total,
			      .rate = now > t0 ? (double)done / (now - t0) : 0};
	hm_emit(ctx, &ev);
}

static struct archive_entry *new_entry(const char *name, uint64_t size, int64_t mtime)
{
	struct archive_entry *e = archive_entry_new();
	if (!e)
		return NULL;
	archive_entry_set_pathname(e, name);
	archive_entry_set_size(e, (la_int64_t)size);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0444);
	archive_entry_set_mtime(e, (time_t)mtime, 0);
	return e;
}

/* Streams one blob file into the archive as entry name. */
static enum hm_err write_blob(struct hm_ctx *ctx, struct archive *a, const char *src, const char *name,
			      uint64_t size, int64_t mtime, char *buf, uint64_t *done, uint64_t total, double t0,
			      double *last, const char *out)
{
	struct archive_entry *e = NULL;
	enum hm_err err = HM_OK;
	uint64_t left = size;
	int fd = open(src, O_RDONLY | O_CLOEXEC);
	struct stat sb;

	if (fd < 0)
		return hm_fail(ctx, HM_ERR_CORRUPT, "blob %s is missing from the store (%s); run 'hubmirror verify --repair'",
			       name + 13, strerror(errno));
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != size) {
		err = hm_fail(ctx, HM_ERR_CORRUPT, "blob %s in the store has the wrong size; run 'hubmirror verify --repair'",
			      name + 13);
		goto out;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	if (!(e = new_entry(name, size, mtime))) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (archive_write_header(a, e) != ARCHIVE_OK) {
		err = arch_fail(ctx, a, "write", out);
		goto out;
	}
	while (left) {
		size_t want = left < BLOCK ? (size_t)left : BLOCK;
		ssize_t got = read(fd, buf, want);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			err = hm_fail(ctx, HM_ERR_IO, "cannot read blob %s: %s", name + 13,
				      got < 0 ? strerror(errno) : "shorter than recorded");
			goto out;
		}
		if (archive_write_data(a, buf, (size_t)got) != got) {
			err = arch_fail(ctx, a, "write", out);
			goto out;
		}
		left -= (uint64_t)got;
		*done += (uint64_t)got;
		emit_progress(ctx, *done, total, t0, last);
		if (hm_cancelled(ctx)) {
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
			goto out;
		}
	}
	if (archive_write_finish_entry(a) != ARCHIVE_OK)
		err = arch_fail(ctx, a, "write", out);
out:
	archive_entry_free(e);
	close(fd);
	return err;
}

enum hm_err bundle_export(struct hm_ctx *ctx, struct store *st, const struct bundle_spec *specs, size_t n,
			  const char *path, enum bundle_compress comp, struct bundle_export_result *res)
{
	struct bundle_manifest *m = NULL;
	struct archive *a = NULL;
	struct archive_entry *e = NULL;
	char *json = NULL, *buf = NULL, tmp[PATH_MAX] = "", src[PATH_MAX], name[96];
	const char *out = strcmp(path, "-") ? path : "<stdout>";
	enum hm_err err;
	uint64_t done = 0;
	double t0 = util_now(), last = 0;
	int opened = 0;

	memset(res, 0, sizeof(*res));
	if ((err = build_manifest(ctx, st, specs, n, &m, &json)))
		goto out;
	if (!(a = archive_write_new()) || !(buf = malloc(BLOCK))) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK) {
		err = arch_fail(ctx, a, "set up the archive", out);
		goto out;
	}
	if ((err = bundle_add_write_filter(ctx, a, comp)))
		goto out;
	/* big blocks: fewer writes (tar readers accept any multiple of 512) */
	archive_write_set_bytes_per_block(a, (int)BLOCK);
	archive_write_set_bytes_in_last_block(a, 1);
	if (strcmp(path, "-")) {
		snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", path, (long)getpid());
		if (archive_write_open_filename(a, tmp) != ARCHIVE_OK) {
			err = arch_fail(ctx, a, "create", tmp);
			goto out;
		}
	} else if (archive_write_open_fd(a, 1) != ARCHIVE_OK) {
		err = arch_fail(ctx, a, "write", out);
		goto out;
	}
	opened = 1;

	if (!(e = new_entry(BUNDLE_MANIFEST_NAME, strlen(json), m->created_at))) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (archive_write_header(a, e) != ARCHIVE_OK ||
	    archive_write_data(a, json, strlen(json)) != (la_ssize_t)strlen(json) ||
	    archive_write_finish_entry(a) != ARCHIVE_OK) {
		err = arch_fail(ctx, a, "write", out);
		goto out;
	}
	for (size_t i = 0; i < m->nblobs; i++) {
		/* an S3 store: from the bucket through the local cache */
		if ((err = store_blob_local(ctx, st, m->blobs[i].sha256, m->blobs[i].size)))
			goto out;
		store_blob_path(st, m->blobs[i].sha256, src, sizeof(src));
		snprintf(name, sizeof(name), "blobs/sha256/%s", m->blobs[i].sha256);
		if ((err = write_blob(ctx, a, src, name, m->blobs[i].size, m->created_at, buf, &done, m->blob_bytes, t0,
				      &last, out)))
			goto out;
	}
	if (archive_write_close(a) != ARCHIVE_OK) {
		err = arch_fail(ctx, a, "write", out);
		goto out;
	}
	opened = 0;
	if (tmp[0]) {
		int fd = open(tmp, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fsync(fd) < 0) {
			err = hm_fail(ctx, HM_ERR_IO, "cannot sync '%s': %s", tmp, strerror(errno));
			if (fd >= 0)
				close(fd);
			goto out;
		}
		close(fd);
		if (rename(tmp, path) < 0) {
			err = hm_fail(ctx, HM_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
			goto out;
		}
		tmp[0] = 0;
	}
	for (size_t i = 0; i < m->nrevs; i++) {
		int first = 1;
		for (size_t k = 0; k < i; k++)
			first &= strcmp(m->revs[k].type, m->revs[i].type) || strcmp(m->revs[k].repo, m->revs[i].repo);
		res->nrepos += (size_t)first;
		res->nfiles += m->revs[i].nfiles;
	}
	res->nrevisions = m->nrevs;
	res->nblobs = m->nblobs;
	res->bytes = m->blob_bytes;
out:
	if (a) {
		if (opened)
			archive_write_fail(a);
		archive_write_free(a);
	}
	if (tmp[0])
		unlink(tmp);
	archive_entry_free(e);
	bundle_manifest_free(m);
	free(json);
	free(buf);
	return err;
}
