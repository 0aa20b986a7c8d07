/* import.c - reads a bundle into the store, treating it as hostile: names,
 * entry types and sizes are checked against the manifest, every blob is
 * hashed while it streams into tmp/, and revisions are recorded only once
 * every blob is in the store. */
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
#include "../verify/verify.h"
#include "../store/index.h"
#include "../store/stats.h"

#define BLOCK ((size_t)1 << 20)
#define BLOB_PREFIX "blobs/sha256/"
/* Blobs at least this big are fsynced one by one; smaller ones are synced
 * together by store_flush (syncfs) before any row points at them. */
#define DURABLE_MIN ((uint64_t)4 << 20)

struct imp {
	struct hm_ctx *ctx;
	struct store *st;
	struct archive *a;
	const char *label;
	const struct bundle_tree_hook *hook; /* may be NULL */
	struct bundle_manifest *m;
	unsigned char *seen;       /* per manifest blob */
	double *secs;              /* seconds spent reading each blob */
	unsigned char *added;      /* blob added by this import */
	uint64_t done;
	double t0, last;
	char tmp[PATH_MAX];        /* temp file being written ("" when none) */
	char lastname[128];        /* the last entry read whole, for messages */
	unsigned seq;              /* temp files made so far */
};

static enum hm_err arch_err(struct imp *im, const char *entry)
{
	const char *s = archive_error_string(im->a);
	return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "truncated or corrupt bundle at '%s': %s", entry,
		       s ? s : "read error");
}

static void progress(struct imp *im)
{
	uint64_t total = im->m ? im->m->blob_bytes : 0;
	double now = util_now();
	if (im->done < total && now - im->last < 0.1)
		return;
	im->last = now;
	struct hm_event ev = {.kind = HM_EV_PROGRESS, .done = im->done, .total = total,
			      .rate = now > im->t0 ? (double)im->done / (now - im->t0) : 0};
	hm_emit(im->ctx, &ev);
}

/* Refuses unsafe names and anything but regular files (and the two
 * directories a tar tool may add). *is_dir is set for those. */
static enum hm_err check_entry(struct imp *im, struct archive_entry *e, const char *name, int *is_dir)
{
	mode_t type = archive_entry_filetype(e);
	*is_dir = 0;
	if (!name || !*name)
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "bundle entry with an empty name refused");
	{
		/* directories may end with '/' */
		char tmpname[PATH_MAX];
		size_t n = strlen(name);
		if (n >= sizeof(tmpname))
			return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "bundle entry name too long refused");
		memcpy(tmpname, name, n + 1);
		if (n > 1 && tmpname[n - 1] == '/')
			tmpname[n - 1] = 0;
		if (name[0] == '/' || !util_path_is_safe(tmpname))
			return hm_fail(im->ctx, HM_ERR_BAD_INPUT,
				       "unsafe entry name '%.200s' in the bundle refused (absolute, '..' or malformed)",
				       name);
		if (archive_entry_symlink(e) || type == AE_IFLNK)
			return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "symlink entry '%.200s' in the bundle refused", name);
		if (archive_entry_hardlink(e))
			return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "hardlink entry '%.200s' in the bundle refused", name);
		if (type == AE_IFDIR) {
			if (strcmp(tmpname, "blobs") && strcmp(tmpname, "blobs/sha256"))
				return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "unexpected directory '%.200s' in the bundle refused",
					       name);
			*is_dir = 1;
			return HM_OK;
		}
	}
	if (type != AE_IFREG)
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT,
			       "entry '%.200s' in the bundle is a %s, not a regular file: refused", name,
			       type == AE_IFCHR || type == AE_IFBLK ? "device"
			       : type == AE_IFIFO		   ? "fifo"
			       : type == AE_IFSOCK		   ? "socket"
								   : "special file");
	if (archive_entry_sparse_count(e) > 0)
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "sparse entry '%.200s' in the bundle refused", name);
	if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0)
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "entry '%.200s' in the bundle has no size", name);
	return HM_OK;
}

/* Reads the first entry, the manifest, into memory (capped). */
static enum hm_err read_manifest(struct imp *im)
{
	struct archive_entry *e;
	const char *name;
	char *buf = NULL;
	size_t len = 0;
	int is_dir, r;
	enum hm_err err;

	r = archive_read_next_header(im->a, &e);
	if (r == ARCHIVE_EOF)
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "not a bundle: the archive is empty");
	if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
		const char *s = archive_error_string(im->a);
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "not a bundle (not a tar archive?): %s", s ? s : "read error");
	}
	name = archive_entry_pathname(e);
	if ((err = check_entry(im, e, name, &is_dir)))
		return err;
	if (is_dir || strcmp(name, BUNDLE_MANIFEST_NAME))
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "not a bundle: the first entry is '%.200s', not %s", name,
			       BUNDLE_MANIFEST_NAME);
	if ((uint64_t)archive_entry_size(e) > BUNDLE_MANIFEST_MAX)
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "bundle manifest is %lld bytes: more than the %zu MiB allowed",
			       (long long)archive_entry_size(e), BUNDLE_MANIFEST_MAX >> 20);
	size_t want = (size_t)archive_entry_size(e);
	if (!(buf = malloc(want + 1)))
		return hm_fail(im->ctx, HM_ERR_NOMEM, "out of memory reading the manifest");
	while (len < want) {
		la_ssize_t got = archive_read_data(im->a, buf + len, want - len);
		if (got < 0) {
			err = arch_err(im, BUNDLE_MANIFEST_NAME);
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	if (len != want) {
		err = hm_fail(im->ctx, HM_ERR_BAD_INPUT, "truncated bundle: manifest has %zu of %zu bytes", len, want);
		goto out;
	}
	err = bundle_manifest_parse(im->ctx, buf, len, &im->m);
out:
	free(buf);
	return err;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The name of the first file (repo/path) that uses blob b, for messages. */
static void blob_user(const struct bundle_manifest *m, const char *sha256, char *buf, size_t len)
{
	for (size_t i = 0; i < m->nrevs; i++)
		for (size_t k = 0; k < m->revs[i].nfiles; k++)
			if (!strcmp(m->revs[i].files[k].sha256, sha256)) {
				snprintf(buf, len, "%s/%s", m->revs[i].repo, m->revs[i].files[k].path);
				return;
			}
	snprintf(buf, len, "?");
}

/* Streams the current entry (blob idx) into a temp file while hashing it,
 * compares, and adopts it into the store. */
static enum hm_err take_blob(struct imp *im, const char *name, size_t idx)
{
	const struct bundle_blob *b = &im->m->blobs[idx];
	struct verify_hasher *h = NULL;
	enum hm_err err = HM_OK;
	uint64_t written = 0;
	char sha[65], oid[41], who[512];
	double t0 = util_now();
	int fd = -1, r;
	/* the swarm trades LFS blobs (a pull makes their trees too) */
	int want_tree = im->hook && !b->git_oid[0];

	snprintf(im->tmp, sizeof(im->tmp), "%s/tmp/bundle-%ld-%lx-%u.part", store_dir(im->st), (long)getpid(),
		 (unsigned long)(uintptr_t)im, im->seq++);
	fd = open(im->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = hm_fail(im->ctx, errno == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO, "cannot create '%s': %s", im->tmp,
			      strerror(errno));
		im->tmp[0] = 0;
		goto out;
	}
	if (!(h = verify_hasher_new(b->git_oid[0] ? (int64_t)b->size : -1)) ||
	    (want_tree && verify_hasher_want_merkle(h, im->hook->piece_size(b->size)))) {
		err = hm_fail(im->ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		const void *p;
		size_t n;
		la_int64_t off;
		r = archive_read_data_block(im->a, &p, &n, &off);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK) {
			err = arch_err(im, name);
			goto out;
		}
		if ((uint64_t)off != written) {
			err = hm_fail(im->ctx, HM_ERR_BAD_INPUT, "entry '%s' in the bundle has holes: refused", name);
			goto out;
		}
		if (n > b->size - written) {
			err = hm_fail(im->ctx, HM_ERR_BAD_INPUT, "entry '%s' in the bundle is larger than declared (%llu bytes)",
				      name, (unsigned long long)b->size);
			goto out;
		}
		if (n && write_all(fd, p, n) < 0) {
			err = hm_fail(im->ctx, errno == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO, "cannot write '%s': %s",
				      im->tmp, strerror(errno));
			goto out;
		}
		verify_hasher_update(h, p, n);
		written += n;
		im->done += n;
		progress(im);
		if (hm_cancelled(im->ctx)) {
			err = hm_fail(im->ctx, HM_ERR_CANCELLED, "interrupted");
			goto out;
		}
	}
	if (written != b->size) {
		err = hm_fail(im->ctx, HM_ERR_BAD_INPUT, "truncated bundle: entry '%s' has %llu of %llu bytes", name,
			      (unsigned long long)written, (unsigned long long)b->size);
		goto out;
	}
	verify_hasher_final(h, sha, oid);
	blob_user(im->m, b->sha256, who, sizeof(who));
	if (strcmp(sha, b->sha256)) {
		err = hm_fail(im->ctx, HM_ERR_CORRUPT, "corrupt bundle: entry '%s' (%s) has sha256 %s", name, who, sha);
		goto out;
	}
	if (b->git_oid[0] && strcmp(oid, b->git_oid)) {
		err = hm_fail(im->ctx, HM_ERR_CORRUPT, "corrupt bundle: entry '%s' (%s) has git oid %s, the manifest says %s",
			      name, who, oid, b->git_oid);
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		err = hm_fail(im->ctx, HM_ERR_IO, "cannot write '%s': %s", im->tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if ((err = store_blob_adopt(im->ctx, im->st, im->tmp, b->sha256, b->size, b->git_oid[0] ? b->git_oid : NULL,
				    b->size >= DURABLE_MIN)))
		goto out;
	im->tmp[0] = 0;
	im->added[idx] = 1;
	if (want_tree) {
		unsigned char root[32];
		const unsigned char *layer = NULL;
		size_t ll = 0;
		if (!verify_merkle_final(verify_hasher_merkle(h), root, &layer, &ll))
			im->hook->tree(im->hook->arg, im->st, b->sha256, b->size, root, layer, ll);
	}
	im->secs[idx] = util_now() - t0;
out:
	if (fd >= 0)
		close(fd);
	verify_hasher_free(h);
	if (err && im->tmp[0]) {
		unlink(im->tmp);
		im->tmp[0] = 0;
	}
	return err;
}

/* One entry after the manifest. */
static enum hm_err take_entry(struct imp *im, struct archive_entry *e, struct bundle_import_result *res)
{
	const char *name = archive_entry_pathname(e);
	int is_dir, present = 0;
	long idx;
	enum hm_err err;

	if ((err = check_entry(im, e, name, &is_dir)))
		return err;
	if (is_dir)
		return HM_OK;
	if (!strcmp(name, BUNDLE_MANIFEST_NAME))
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "duplicate entry '%s' in the bundle refused", name);
	if (strncmp(name, BLOB_PREFIX, strlen(BLOB_PREFIX)) || !util_is_hex(name + strlen(BLOB_PREFIX), 64))
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "unexpected entry '%.200s' in the bundle refused", name);
	idx = bundle_manifest_find_blob(im->m, name + strlen(BLOB_PREFIX));
	if (idx < 0)
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "entry '%s' in the bundle is not in its manifest: refused", name);
	if (im->seen[idx])
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "duplicate entry '%s' in the bundle refused", name);
	im->seen[idx] = 1;
	const struct bundle_blob *b = &im->m->blobs[idx];
	if ((uint64_t)archive_entry_size(e) != b->size)
		return hm_fail(im->ctx, HM_ERR_BAD_INPUT,
			       "entry '%s' in the bundle is %lld bytes, the manifest declares %llu: refused", name,
			       (long long)archive_entry_size(e), (unsigned long long)b->size);
	if ((err = store_blob_has(im->ctx, im->st, b->sha256, b->size, &present)))
		return err;
	if (present) {
		/* still read past it: a truncated archive must not pass */
		if (archive_read_data_skip(im->a) != ARCHIVE_OK)
			return arch_err(im, name);
		res->blobs_present++;
		im->done += b->size;
		progress(im);
		return HM_OK;
	}
	if ((err = take_blob(im, name, (size_t)idx)))
		return err;
	res->blobs_added++;
	res->bytes += b->size;
	return HM_OK;
}

static int cmp_file_path(const void *a, const void *b)
{
	return strcmp(((const struct store_file *)a)->path, ((const struct store_file *)b)->path);
}

/* 1 when the store already holds this revision with the same files, and its
 * refs point at it. */
static int already_stored(struct imp *im, struct bundle_rev *r)
{
	struct hm_ctx q = {0};
	struct store_file *have = NULL;
	size_t nhave = 0;
	char commit[41];
	int same = 0;

	if (store_resolve(&q, im->st, r->type, r->repo, r->commit, commit) || strcmp(commit, r->commit))
		return 0;
	for (size_t i = 0; i < r->nrefs; i++)
		if (store_resolve(&q, im->st, r->type, r->repo, r->refs[i], commit) || strcmp(commit, r->commit))
			return 0;
	if (store_list_files(&q, im->st, r->type, r->repo, r->commit, &have, &nhave) || nhave != r->nfiles)
		goto out;
	qsort(have, nhave, sizeof(*have), cmp_file_path);
	qsort(r->files, r->nfiles, sizeof(*r->files), cmp_file_path);
	same = 1;
	for (size_t i = 0; i < nhave && same; i++)
		same = !strcmp(have[i].path, r->files[i].path) && !strcmp(have[i].sha256, r->files[i].sha256) &&
		       have[i].size == r->files[i].size && have[i].lfs == r->files[i].lfs;
out:
	store_files_free(have, nhave);
	return same;
}

static enum hm_err record(struct imp *im, struct bundle_import_result *res)
{
	enum hm_err err;
	int64_t now = util_unix_time();
	char endpoint[300];

	snprintf(endpoint, sizeof(endpoint), "bundle:%s", im->label ? im->label : "-");
	if (!(res->revs = calloc(im->m->nrevs, sizeof(*res->revs))))
		return hm_fail(im->ctx, HM_ERR_NOMEM, "out of memory");
	/* decide first, record after: a revision listed with its own blobs is
	 * either wholly there or wholly recorded */
	for (size_t i = 0; i < im->m->nrevs; i++) {
		struct bundle_rev *r = &im->m->revs[i];
		struct bundle_import_rev *o = &res->revs[res->nrevs++];
		snprintf(o->type, sizeof(o->type), "%s", r->type);
		memcpy(o->commit, r->commit, 41);
		if (!(o->repo = util_strdup(r->repo)))
			return hm_fail(im->ctx, HM_ERR_NOMEM, "out of memory");
		o->recorded = !already_stored(im, r);
		int first = 1;
		for (size_t k = 0; k < i; k++)
			first &= strcmp(im->m->revs[k].type, r->type) || strcmp(im->m->revs[k].repo, r->repo);
		res->nrepos += (size_t)first;
	}
	for (size_t i = 0; i < im->m->nrevs; i++) {
		struct bundle_rev *r = &im->m->revs[i];
		if (!res->revs[i].recorded)
			continue;
		/* the first call records files and the first ref; the others move refs */
		size_t nref = r->nrefs ? r->nrefs : 1;
		for (size_t k = 0; k < nref; k++)
			if ((err = store_record_revision(im->ctx, im->st, r->type, r->repo, r->commit,
							 r->nrefs ? r->refs[k] : NULL, r->files, r->nfiles)))
				return err;
		for (size_t k = 0; k < r->nfiles; k++) {
			const struct store_file *f = &r->files[k];
			long idx = bundle_manifest_find_blob(im->m, f->sha256);
			int mine = idx >= 0 && im->added[idx] == 1;
			struct store_download d = {
				.repo_type = r->type, .repo = r->repo, .revision = r->commit, .path = f->path,
				.sha256 = f->sha256, .size = f->size, .bytes = mine ? f->size : 0,
				.seconds = mine ? im->secs[idx] : 0, .connections = 0, .retries = 0, .result = "ok",
				.error = NULL, .endpoint = endpoint, .started_at = now};
			if (mine)
				im->added[idx] = 2; /* bytes counted once */
			if ((err = store_record_download(im->ctx, im->st, &d)))
				return err;
		}
		res->nrecorded++;
	}
	return store_flush(im->ctx, im->st);
}

static enum hm_err run(struct imp *im, struct bundle_import_result *res)
{
	struct archive_entry *e;
	enum hm_err err;
	int r;

	im->t0 = util_now();
	if ((err = read_manifest(im)))
		return err;
	snprintf(im->lastname, sizeof(im->lastname), "%s", BUNDLE_MANIFEST_NAME);
	size_t nb = im->m->nblobs ? im->m->nblobs : 1;
	if (!(im->seen = calloc(nb, 1)) || !(im->added = calloc(nb, 1)) || !(im->secs = calloc(nb, sizeof(double))))
		return hm_fail(im->ctx, HM_ERR_NOMEM, "out of memory");
	while ((r = archive_read_next_header(im->a, &e)) != ARCHIVE_EOF) {
		if (r != ARCHIVE_OK) {
			const char *s = archive_error_string(im->a);
			return hm_fail(im->ctx, HM_ERR_BAD_INPUT, "truncated or corrupt bundle after entry '%s': %s",
				       im->lastname, s ? s : "read error");
		}
		if ((err = take_entry(im, e, res)))
			return err;
		snprintf(im->lastname, sizeof(im->lastname), "%s", archive_entry_pathname(e));
	}
	for (size_t i = 0; i < im->m->nblobs; i++)
		if (!im->seen[i]) {
			char who[512];
			blob_user(im->m, im->m->blobs[i].sha256, who, sizeof(who));
			return hm_fail(im->ctx, HM_ERR_BAD_INPUT,
				       "incomplete bundle: the manifest names blob %s (%s) but the archive does not hold it",
				       im->m->blobs[i].sha256, who);
		}
	/* the blobs must be durable before any row points at them */
	if ((err = store_flush(im->ctx, im->st)))
		return err;
	return record(im, res);
}

static enum hm_err import_archive(struct hm_ctx *ctx, struct store *st, struct archive *a, const char *label,
				  const struct bundle_tree_hook *hook, struct bundle_import_result *res)
{
	struct imp im = {.ctx = ctx, .st = st, .a = a, .label = label, .hook = hook};
	enum hm_err err = run(&im, res);
	if (im.tmp[0])
		unlink(im.tmp);
	bundle_manifest_free(im.m);
	free(im.seen);
	free(im.added);
	free(im.secs);
	return err;
}

static struct archive *new_reader(void)
{
	struct archive *a = archive_read_new();
	if (!a)
		return NULL;
	archive_read_support_format_tar(a);
	/* warnings only say some filters would use an external program */
	(void)archive_read_support_filter_all(a);
	return a;
}

enum hm_err bundle_import(struct hm_ctx *ctx, struct store *st, const char *path, const char *label,
			  const struct bundle_tree_hook *hook, struct bundle_import_result *res)
{
	struct archive *a;
	enum hm_err err;
	int r;

	memset(res, 0, sizeof(*res));
	if (!(a = new_reader()))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if (!strcmp(path, "-"))
		r = archive_read_open_fd(a, 0, BLOCK);
	else
		r = archive_read_open_filename(a, path, BLOCK);
	if (r != ARCHIVE_OK) {
		const char *s = archive_error_string(a);
		int e = archive_errno(a);
		const char *shown = strcmp(path, "-") ? path : "<stdin>";
		if (e == ENOENT || e == EACCES || e == EISDIR || e == ENOTDIR)
			err = hm_fail(ctx, HM_ERR_IO, "cannot open '%s': %s", shown, strerror(e));
		else
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s' is not a bundle (not a tar archive): %s", shown,
				      s ? s : "read error");
		archive_read_free(a);
		return err;
	}
	err = import_archive(ctx, st, a, label, hook, res);
	archive_read_free(a);
	return err;
}

enum hm_err bundle_import_memory(struct hm_ctx *ctx, struct store *st, const void *data, size_t len,
				 const char *label, const struct bundle_tree_hook *hook,
				 struct bundle_import_result *res)
{
	struct archive *a;
	enum hm_err err;

	memset(res, 0, sizeof(*res));
	if (!(a = new_reader()))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if (archive_read_open_memory(a, data, len) != ARCHIVE_OK) {
		const char *s = archive_error_string(a);
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "not a bundle (not a tar archive?): %s", s ? s : "read error");
		archive_read_free(a);
		return err;
	}
	err = import_archive(ctx, st, a, label, hook, res);
	archive_read_free(a);
	return err;
}

void bundle_import_result_release(struct bundle_import_result *res)
{
	if (!res)
		return;
	for (size_t i = 0; i < res->nrevs; i++)
		free(res->revs[i].repo);
	free(res->revs);
	memset(res, 0, sizeof(*res));
}
