/* torch.c - torch.save zip checkpoints through libarchive: the entry list,
 * data.pkl through the restricted unpickler, storages checked against their
 * entries, tensor bytes streamed out of the archive; sharded sets joined by
 * pytorch_model.bin.index.json. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../util/util.h"
#include "formats-int.h"
#include "torch-int.h"

#define PT_CHUNK (1u << 20)
#define PT_MAX_ENTRIES (FMT_PT_MAX_TENSORS + 64)
#define PT_SMALL 64 /* version, byteorder */

struct pt_entry {
	char *name;       /* without the "<archive>/" prefix */
	uint64_t size;
	size_t pos;       /* in archive order */
	int dtype;        /* of the storage, -1 until a tensor uses it */
};

struct fmt_pt {
	struct hm_ctx *ctx;
	char *path;
	struct fmt_pt_pickle *pk;    /* owns the tensors' strings */
	struct fmt_pt_tensor *t;
	size_t n;
	struct pt_entry *e;          /* sorted by name */
	size_t ne;
	const struct fmt_pt_tensor **by_name;
};

const char *fmt_pt_shown(const char *s, char *buf, size_t cap)
{
	return fmt_shown(s, strlen(s), buf, cap);
}

static enum hm_err arc_fail(struct hm_ctx *ctx, const char *path, struct archive *a, const char *what)
{
	const char *s = archive_error_string(a);
	return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': %s: %s", path, what, s ? s : "unreadable zip archive");
}

static enum hm_err arc_open(struct hm_ctx *ctx, const char *path, struct archive **out)
{
	struct archive *a = archive_read_new();
	*out = NULL;
	if (!a)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	archive_read_support_format_zip(a);
	if (archive_read_open_filename(a, path, 64 * 1024) != ARCHIVE_OK) {
		enum hm_err err = arc_fail(ctx, path, a, "cannot open as a zip archive");
		archive_read_free(a);
		return err;
	}
	*out = a;
	return HM_OK;
}

/* Reads exactly n bytes of the current entry. */
static enum hm_err arc_read(struct hm_ctx *ctx, const char *path, struct archive *a, const char *entry, void *buf,
			    size_t n)
{
	size_t got = 0;
	while (got < n) {
		la_ssize_t r = archive_read_data(a, (char *)buf + got, n - got);
		if (r < 0)
			return arc_fail(ctx, path, a, entry);
		if (r == 0)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': entry '%s' ends early (%zu of %zu bytes)", path,
				       entry, got, n);
		got += (size_t)r;
	}
	return HM_OK;
}

/* Reads the rest of the current entry (libarchive checks its CRC at the end). */
static enum hm_err arc_drain(struct hm_ctx *ctx, const char *path, struct archive *a, const char *entry,
			     uint64_t left, void *buf)
{
	char extra;
	while (left) {
		size_t want = left < PT_CHUNK ? (size_t)left : PT_CHUNK;
		enum hm_err err = arc_read(ctx, path, a, entry, buf, want);
		if (err)
			return err;
		left -= want;
	}
	la_ssize_t r = archive_read_data(a, &extra, 1);
	if (r < 0)
		return arc_fail(ctx, path, a, entry);
	if (r > 0)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': entry '%s' is longer than its declared size", path, entry);
	return HM_OK;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct pt_entry *)a)->name, ((const struct pt_entry *)b)->name);
}

static struct pt_entry *find_entry(const struct fmt_pt *pt, const char *name)
{
	struct pt_entry key = {.name = (char *)name};
	return bsearch(&key, pt->e, pt->ne, sizeof(*pt->e), cmp_entry);
}

static int cmp_tensor_name(const void *a, const void *b)
{
	return strcmp((*(const struct fmt_pt_tensor *const *)a)->name, (*(const struct fmt_pt_tensor *const *)b)->name);
}

void fmt_pt_close(struct fmt_pt *pt)
{
	if (!pt)
		return;
	for (size_t i = 0; i < pt->ne; i++)
		free(pt->e[i].name);
	free(pt->e);
	free(pt->t);
	free(pt->by_name);
	fmt_pt_pickle_free(pt->pk);
	free(pt->path);
	free(pt);
}

/* Tells a torch zip from the legacy pickle format and from anything else. */
static enum hm_err sniff(struct hm_ctx *ctx, const char *path, uint64_t *size)
{
	unsigned char m[4] = {0};
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hm_fail(ctx, errno == ENOENT ? HM_ERR_NOT_FOUND : HM_ERR_IO, "cannot open '%s': %s", path,
			       strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return hm_fail(ctx, HM_ERR_IO, "'%s' is not a regular file", path);
	}
	n = read(fd, m, sizeof(m));
	close(fd);
	*size = (uint64_t)st.st_size;
	if (n == 4 && !memcmp(m, "PK\3\4", 4))
		return HM_OK;
	if (n >= 2 && m[0] == 0x80 && m[1] <= 5)
		return hm_fail(ctx, HM_ERR_BAD_INPUT,
			       "'%s': legacy (pre-1.6) torch.save format; only the zip format is supported", path);
	return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': not a torch.save zip file", path);
}

/* Checks one archive entry: a safe name under the one top folder every
 * entry shares (*prefix, set from the first; plen its length), a regular,
 * unencrypted file no larger than the whole file. *rest gets the name
 * below the folder, *size the entry's size. */
static enum hm_err check_entry(struct fmt_pt *pt, struct archive_entry *ae, uint64_t fsize,
			       char **prefix, size_t *plen, const char **rest, uint64_t *size)
{
	struct hm_ctx *ctx = pt->ctx;
	const char *name = archive_entry_pathname(ae);
	char nb[128];

	if (!name)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': an archive entry has an unreadable name", pt->path);
	if (!util_path_is_safe(name) || !strchr(name, '/'))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': archive entry '%s' has an unsafe or unexpected name",
			       pt->path, fmt_pt_shown(name, nb, sizeof(nb)));
	if (!*prefix) {
		*plen = (size_t)(strchr(name, '/') - name);
		if (!(*prefix = util_strndup(name, *plen)))
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	} else if (strncmp(name, *prefix, *plen) || name[*plen] != '/') {
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': archive entry '%s' is outside '%s/'", pt->path,
			       fmt_pt_shown(name, nb, sizeof(nb)), *prefix);
	}
	*rest = name + *plen + 1;
	if (archive_entry_filetype(ae) != AE_IFREG)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': archive entry '%s' is not a regular file", pt->path,
			       fmt_pt_shown(name, nb, sizeof(nb)));
	if (archive_entry_is_encrypted(ae))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': archive entry '%s' is encrypted", pt->path,
			       fmt_pt_shown(name, nb, sizeof(nb)));
	/* torch writes entries stored: none can hold more than the file. */
	if (!archive_entry_size_is_set(ae) || archive_entry_size(ae) < 0 ||
	    (uint64_t)archive_entry_size(ae) > fsize)
		return hm_fail(ctx, HM_ERR_BAD_INPUT,
			       "'%s': archive entry '%s' declares %lld bytes in a file of %" PRIu64
			       " (compressed checkpoints are not supported)", pt->path,
			       fmt_pt_shown(name, nb, sizeof(nb)), (long long)archive_entry_size(ae), fsize);
	*size = (uint64_t)archive_entry_size(ae);
	return HM_OK;
}

/* Reads the entries the first pass needs the bytes of: data.pkl into *pkl
 * (malloc'd, the caller's) and byteorder, which must say little. Others
 * are left for later. */
static enum hm_err read_special(struct fmt_pt *pt, struct archive *a, const char *rest, uint64_t size, char **pkl,
				size_t *pkl_len)
{
	struct hm_ctx *ctx = pt->ctx;
	enum hm_err err;
	char nb[128];

	if (!strcmp(rest, "data.pkl")) {
		if (*pkl)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': two data.pkl entries", pt->path);
		if (size > FMT_PT_MAX_PICKLE)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': data.pkl is %" PRIu64 " bytes (at most %u MiB)",
				       pt->path, size, FMT_PT_MAX_PICKLE >> 20);
		if (!(*pkl = malloc(size ? (size_t)size : 1)))
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		*pkl_len = (size_t)size;
		return arc_read(ctx, pt->path, a, "data.pkl", *pkl, (size_t)size);
	}
	if (!strcmp(rest, "byteorder")) {
		char bo[PT_SMALL];
		if (size > sizeof(bo) - 1)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': byteorder entry of %" PRIu64 " bytes", pt->path, size);
		if ((err = arc_read(ctx, pt->path, a, "byteorder", bo, (size_t)size)))
			return err;
		bo[size] = 0;
		if (strcmp(bo, "little") != 0)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': byte order '%s' is not supported (only little)",
				       pt->path, fmt_pt_shown(bo, nb, sizeof(nb)));
	}
	return HM_OK;
}

/* First pass: names and sizes of every entry; data.pkl read, byteorder checked. */
static enum hm_err list_entries(struct fmt_pt *pt, uint64_t fsize, char **pkl, size_t *pkl_len)
{
	struct hm_ctx *ctx = pt->ctx;
	struct archive *a = NULL;
	struct archive_entry *ae;
	enum hm_err err;
	char *prefix = NULL, nb[128];
	size_t cap = 0, plen = 0;
	int r;
	if ((err = arc_open(ctx, pt->path, &a)))
		return err;
	while ((r = archive_read_next_header(a, &ae)) != ARCHIVE_EOF) {
		const char *rest = NULL;
		uint64_t size = 0;
		struct pt_entry *e;
		if (r < ARCHIVE_WARN) {
			err = arc_fail(ctx, pt->path, a, "reading the archive");
			goto out;
		}
		if ((err = check_entry(pt, ae, fsize, &prefix, &plen, &rest, &size)))
			goto out;
		if (pt->ne == PT_MAX_ENTRIES) {
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': more than %u archive entries", pt->path, PT_MAX_ENTRIES);
			goto out;
		}
		if (pt->ne == cap) {
			size_t nc = cap ? 2 * cap : 64;
			struct pt_entry *ne = realloc(pt->e, nc * sizeof(*ne));
			if (!ne) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				goto out;
			}
			pt->e = ne;
			cap = nc;
		}
		e = &pt->e[pt->ne];
		if (!(e->name = util_strdup(rest))) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		e->size = size;
		e->pos = pt->ne++;
		e->dtype = -1;
		if ((err = read_special(pt, a, rest, size, pkl, pkl_len)))
			goto out;
	}
	if (!*pkl) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': no data.pkl entry (not a torch.save zip file)", pt->path);
		goto out;
	}
	qsort(pt->e, pt->ne, sizeof(*pt->e), cmp_entry);
	for (size_t i = 1; i < pt->ne; i++)
		if (!strcmp(pt->e[i].name, pt->e[i - 1].name)) {
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': archive entry '%s/%s' appears twice", pt->path, prefix,
				      fmt_pt_shown(pt->e[i].name, nb, sizeof(nb)));
			goto out;
		}
out:
	free(prefix);
	archive_read_free(a);
	return err;
}

/* Ties every tensor to its storage entry and checks the bytes are there. */
static enum hm_err bind_storages(struct fmt_pt *pt)
{
	char key[96], nb[128];
	for (size_t i = 0; i < pt->n; i++) {
		struct fmt_pt_tensor *t = &pt->t[i];
		uint64_t esize = fmt_dtype_bits(t->dtype) / 8;
		struct pt_entry *e;
		snprintf(key, sizeof(key), "data/%s", t->storage);
		if (!(e = find_entry(pt, key)))
			return hm_fail(pt->ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' needs storage '%s', which is missing",
				       pt->path, fmt_pt_shown(t->name, nb, sizeof(nb)), key);
		if (t->storage_numel > UINT64_MAX / esize || t->storage_numel * esize != e->size)
			return hm_fail(pt->ctx, HM_ERR_BAD_INPUT,
				       "'%s': storage '%s' holds %" PRIu64 " bytes, but the pickle says %" PRIu64
				       " elements of %s", pt->path, key, e->size, t->storage_numel, fmt_dtype_name(t->dtype));
		if (e->dtype >= 0 && e->dtype != (int)t->dtype)
			return hm_fail(pt->ctx, HM_ERR_BAD_INPUT, "'%s': storage '%s' is used as %s and as %s", pt->path,
				       key, fmt_dtype_name((enum fmt_dtype)e->dtype), fmt_dtype_name(t->dtype));
		e->dtype = (int)t->dtype;
		t->byte_offset = t->offset * esize;
		if (t->byte_offset > e->size || t->nbytes > e->size - t->byte_offset)
			return hm_fail(pt->ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' runs past the end of storage '%s'",
				       pt->path, fmt_pt_shown(t->name, nb, sizeof(nb)), key);
		t->storage_bytes = e->size;
		t->entry = e->pos;
	}
	return HM_OK;
}

enum hm_err fmt_pt_open(struct hm_ctx *ctx, const char *path, struct fmt_pt **out)
{
	struct fmt_pt *pt;
	char *pkl = NULL;
	size_t pkl_len = 0;
	uint64_t fsize = 0;
	enum hm_err err;
	*out = NULL;
	if ((err = sniff(ctx, path, &fsize)))
		return err;
	if (!(pt = calloc(1, sizeof(*pt))) || !(pt->path = util_strdup(path))) {
		free(pt);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	pt->ctx = ctx;
	if ((err = list_entries(pt, fsize, &pkl, &pkl_len)) ||
	    (err = fmt_pt_pickle_parse(ctx, path, pkl, pkl_len, &pt->pk)))
		goto out;
	free(pkl);
	pkl = NULL;
	pt->n = fmt_pt_pickle_count(pt->pk);
	if (!(pt->t = calloc(pt->n + 1, sizeof(*pt->t))) || !(pt->by_name = calloc(pt->n + 1, sizeof(*pt->by_name)))) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < pt->n; i++) {
		pt->t[i] = *fmt_pt_pickle_tensor(pt->pk, i);
		pt->by_name[i] = &pt->t[i];
	}
	qsort(pt->by_name, pt->n, sizeof(*pt->by_name), cmp_tensor_name);
	if ((err = bind_storages(pt)))
		goto out;
	*out = pt;
	return HM_OK;
out:
	free(pkl);
	fmt_pt_close(pt);
	return err;
}

const char *fmt_pt_path(const struct fmt_pt *pt)
{
	return pt->path;
}

size_t fmt_pt_count(const struct fmt_pt *pt)
{
	return pt ? pt->n : 0;
}

const struct fmt_pt_tensor *fmt_pt_tensor(const struct fmt_pt *pt, size_t i)
{
	return pt && i < pt->n ? &pt->t[i] : NULL;
}

const struct fmt_pt_tensor *fmt_pt_find(const struct fmt_pt *pt, const char *name)
{
	struct fmt_pt_tensor key = {.name = name};
	const struct fmt_pt_tensor *k = &key, **hit;
	if (!pt || !pt->n)
		return NULL;
	hit = bsearch(&k, pt->by_name, pt->n, sizeof(*pt->by_name), cmp_tensor_name);
	return hit ? *hit : NULL;
}

int fmt_pt_stream_order(const void *a, const void *b)
{
	const struct fmt_pt_tensor *x = *(const struct fmt_pt_tensor *const *)a;
	const struct fmt_pt_tensor *y = *(const struct fmt_pt_tensor *const *)b;
	if (x->shard != y->shard)
		return x->shard < y->shard ? -1 : 1;
	if (x->entry != y->entry)
		return x->entry < y->entry ? -1 : 1;
	if (x->byte_offset != y->byte_offset)
		return x->byte_offset < y->byte_offset ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Copies the current entry (size bytes) into an unlinked temp file. */
static enum hm_err spool(struct hm_ctx *ctx, const char *path, struct archive *a, const char *entry, uint64_t size,
			 const char *dir, void *buf, int *fd_out)
{
	char tmpl[4096];
	enum hm_err err = HM_OK;
	int fd;
	if (!dir)
		dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	if ((size_t)snprintf(tmpl, sizeof(tmpl), "%s/.hm-pt-spool-XXXXXX", dir) >= sizeof(tmpl))
		return hm_fail(ctx, HM_ERR_IO, "temp directory path too long");
	if ((fd = mkstemp(tmpl)) < 0)
		return hm_fail(ctx, HM_ERR_IO, "cannot create a temp file in '%s': %s", dir, strerror(errno));
	unlink(tmpl);
	for (uint64_t left = size; left && !err;) {
		size_t want = left < PT_CHUNK ? (size_t)left : PT_CHUNK;
		if (!(err = arc_read(ctx, path, a, entry, buf, want))) {
			for (size_t off = 0; off < want && !err;) {
				ssize_t w = write(fd, (char *)buf + off, want - off);
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					err = hm_fail(ctx, errno == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO,
						      "cannot write a temp file in '%s': %s", dir, strerror(errno));
				else
					off += (size_t)w;
			}
		}
		left -= want;
	}
	if (!err)
		err = arc_drain(ctx, path, a, entry, 0, buf);
	if (err) {
		close(fd);
		return err;
	}
	*fd_out = fd;
	return HM_OK;
}

/* Serves jobs[j..k) (all of one entry) from a spooled copy. */
static enum hm_err from_spool(struct hm_ctx *ctx, int fd, const struct fmt_pt_tensor *const *jobs, size_t j, size_t k,
			      void *buf, fmt_pt_sink_fn sink, void *ud)
{
	enum hm_err err;
	for (; j < k; j++) {
		uint64_t off = jobs[j]->byte_offset, left = jobs[j]->nbytes;
		if ((err = sink(ud, j, NULL, 0)))
			return err;
		while (left) {
			size_t want = left < PT_CHUNK ? (size_t)left : PT_CHUNK;
			ssize_t r = pread(fd, buf, want, (off_t)off);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return hm_fail(ctx, HM_ERR_IO, "cannot read a temp file: %s", r ? strerror(errno) : "short");
			if ((err = sink(ud, j, buf, (size_t)r)))
				return err;
			off += (uint64_t)r;
			left -= (uint64_t)r;
			if (hm_cancelled(ctx))
				return hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
		}
	}
	return HM_OK;
}

/* Streams jobs[j..k) (all of one entry, by offset, not overlapping). */
static enum hm_err from_archive(struct fmt_pt *pt, struct archive *a, const char *entry, uint64_t size,
				const struct fmt_pt_tensor *const *jobs, size_t j, size_t k, void *buf,
				fmt_pt_sink_fn sink, void *ud)
{
	uint64_t pos = 0;
	enum hm_err err;
	for (; j < k; j++) {
		uint64_t skip = jobs[j]->byte_offset - pos, left = jobs[j]->nbytes;
		while (skip) {
			size_t want = skip < PT_CHUNK ? (size_t)skip : PT_CHUNK;
			if ((err = arc_read(pt->ctx, pt->path, a, entry, buf, want)))
				return err;
			skip -= want;
		}
		if ((err = sink(ud, j, NULL, 0)))
			return err;
		while (left) {
			size_t want = left < PT_CHUNK ? (size_t)left : PT_CHUNK;
			if ((err = arc_read(pt->ctx, pt->path, a, entry, buf, want)) || (err = sink(ud, j, buf, want)))
				return err;
			left -= want;
			if (hm_cancelled(pt->ctx))
				return hm_fail(pt->ctx, HM_ERR_CANCELLED, "interrupted");
		}
		pos = jobs[j]->byte_offset + jobs[j]->nbytes;
	}
	return arc_drain(pt->ctx, pt->path, a, entry, size - pos, buf);
}

enum hm_err fmt_pt_stream(struct hm_ctx *ctx, struct fmt_pt *pt, const struct fmt_pt_tensor *const *jobs,
			  size_t njobs, const char *spool_dir, fmt_pt_sink_fn sink, void *ud)
{
	struct archive *a = NULL;
	struct archive_entry *ae;
	enum hm_err err;
	void *buf = NULL;
	size_t j = 0, pos = 0;
	int r;
	if (!njobs)
		return HM_OK;
	if (!(buf = malloc(PT_CHUNK)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if ((err = arc_open(ctx, pt->path, &a)))
		goto out;
	while (j < njobs && (r = archive_read_next_header(a, &ae)) != ARCHIVE_EOF) {
		const char *name = r < ARCHIVE_WARN ? NULL : archive_entry_pathname(ae);
		const char *slash = name ? strchr(name, '/') : NULL;
		size_t k = j;
		uint64_t size;
		int overlap = 0;
		if (!slash || archive_entry_size(ae) < 0) {
			err = arc_fail(ctx, pt->path, a, "reading the archive");
			goto out;
		}
		/* The same file, listed the same way as at open, or it changed under us. */
		size = (uint64_t)archive_entry_size(ae);
		while (k < njobs && jobs[k]->entry == pos)
			k++;
		if (k > j) {
			char ename[128];
			struct pt_entry *e = find_entry(pt, slash + 1);
			if (!e || e->pos != pos || e->size != size) {
				err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': the archive changed while it was read", pt->path);
				goto out;
			}
			snprintf(ename, sizeof(ename), "%s", name);
			for (size_t i = j + 1; i < k; i++)
				if (jobs[i]->byte_offset < jobs[i - 1]->byte_offset + jobs[i - 1]->nbytes)
					overlap = 1;
			if (overlap) {
				int fd = -1;
				if (!(err = spool(ctx, pt->path, a, ename, size, spool_dir, buf, &fd))) {
					err = from_spool(ctx, fd, jobs, j, k, buf, sink, ud);
					close(fd);
				}
			} else {
				err = from_archive(pt, a, ename, size, jobs, j, k, buf, sink, ud);
			}
			if (err)
				goto out;
			j = k;
		}
		pos++;
	}
	if (j < njobs)
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': the archive changed while it was read", pt->path);
out:
	archive_read_free(a);
	free(buf);
	return err;
}

struct read_into {
	unsigned char *buf;
	uint64_t len, pos;
};

static enum hm_err read_sink(void *ud, size_t job, const void *data, size_t n)
{
	struct read_into *r = ud;
	(void)job;
	if (!n)
		return HM_OK;
	if (n > r->len - r->pos)
		return HM_ERR_BAD_INPUT; /* cannot happen: the job's size is the buffer's */
	memcpy(r->buf + r->pos, data, n);
	r->pos += n;
	return HM_OK;
}

enum hm_err fmt_pt_read(struct fmt_pt *pt, size_t i, void *buf, uint64_t len)
{
	const struct fmt_pt_tensor *job;
	struct read_into r = {buf, len, 0};
	enum hm_err err;
	if (i >= pt->n || len != pt->t[i].nbytes)
		return hm_fail(pt->ctx, HM_ERR_USAGE, "'%s': tensor %zu: wrong index or buffer size", pt->path, i);
	job = &pt->t[i];
	if (!job->nbytes)
		return HM_OK;
	if ((err = fmt_pt_stream(pt->ctx, pt, &job, 1, NULL, read_sink, &r)))
		return err;
	return r.pos == len ? HM_OK : hm_fail(pt->ctx, HM_ERR_BAD_INPUT, "'%s': short tensor data", pt->path);
}

/* ---- sets ---- */

struct fmt_pt_set {
	struct fmt_pt **shards;
	char **names;                /* as the index names them (the file's name for one file) */
	size_t nshards;
	const struct fmt_pt_tensor **t;
	size_t n;
};

void fmt_pt_set_close(struct fmt_pt_set *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->nshards; i++) {
		fmt_pt_close(set->shards[i]);
		free(set->names[i]);
	}
	free(set->shards);
	free(set->names);
	free(set->t);
	free(set);
}

size_t fmt_pt_set_nshards(const struct fmt_pt_set *set)
{
	return set->nshards;
}

struct fmt_pt *fmt_pt_set_shard(const struct fmt_pt_set *set, size_t i)
{
	return i < set->nshards ? set->shards[i] : NULL;
}

const char *fmt_pt_set_shard_name(const struct fmt_pt_set *set, size_t i)
{
	return i < set->nshards ? set->names[i] : NULL;
}

size_t fmt_pt_set_count(const struct fmt_pt_set *set)
{
	return set->n;
}

const struct fmt_pt_tensor *fmt_pt_set_tensor(const struct fmt_pt_set *set, size_t i)
{
	return i < set->n ? set->t[i] : NULL;
}

static enum hm_err add_shard(struct hm_ctx *ctx, struct fmt_pt_set *set, const char *path, const char *name)
{
	struct fmt_pt **s = realloc(set->shards, (set->nshards + 1) * sizeof(*s));
	char **nm;
	const char *slash = strrchr(path, '/');
	enum hm_err err;
	if (!s)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	set->shards = s;
	if (!(nm = realloc(set->names, (set->nshards + 1) * sizeof(*nm))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	set->names = nm;
	if (!(nm[set->nshards] = util_strdup(name ? name : slash ? slash + 1 : path)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if ((err = fmt_pt_open(ctx, path, &set->shards[set->nshards]))) {
		free(nm[set->nshards]);
		return err;
	}
	for (size_t i = 0; i < set->shards[set->nshards]->n; i++)
		set->shards[set->nshards]->t[i].shard = set->nshards;
	set->nshards++;
	return HM_OK;
}

/* Joins the shards' tensors; no name may be in two shards. */
static enum hm_err join(struct hm_ctx *ctx, struct fmt_pt_set *set)
{
	const struct fmt_pt_tensor **sorted = NULL;
	size_t n = 0, k = 0;
	char nb[128];
	for (size_t s = 0; s < set->nshards; s++)
		n += set->shards[s]->n;
	if (!(set->t = calloc(n + 1, sizeof(*set->t))) || !(sorted = calloc(n + 1, sizeof(*sorted)))) {
		free(sorted);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	for (size_t s = 0; s < set->nshards; s++)
		for (size_t i = 0; i < set->shards[s]->n; i++)
			sorted[k] = set->t[k] = &set->shards[s]->t[i], k++;
	set->n = n;
	qsort(sorted, n, sizeof(*sorted), cmp_tensor_name);
	for (size_t i = 1; i < n; i++)
		if (!strcmp(sorted[i]->name, sorted[i - 1]->name)) {
			enum hm_err err = hm_fail(ctx, HM_ERR_BAD_INPUT, "tensor '%s' is in two shards, '%s' and '%s'",
						  fmt_pt_shown(sorted[i]->name, nb, sizeof(nb)),
						  set->shards[sorted[i - 1]->shard]->path, set->shards[sorted[i]->shard]->path);
			free(sorted);
			return err;
		}
	free(sorted);
	return HM_OK;
}

/* Shard names resolved in the index's directory. */
static enum hm_err resolve_beside(struct hm_ctx *ctx, void *ud, const char *name, char *buf, size_t len)
{
	if ((size_t)snprintf(buf, len, "%s/%s", (const char *)ud, name) >= len)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "path of shard '%s' is too long", name);
	return HM_OK;
}

static enum hm_err open_index(struct hm_ctx *ctx, const char *index, fmt_st_resolve_fn resolve, void *ud,
			      struct fmt_pt_set *set)
{
	char *text = NULL, *dir = NULL, nb[128], p[4096];
	size_t len = 0, listed = 0;
	json_t *root = NULL, *wm, *v;
	json_error_t jerr;
	const char *name, *slash;
	char **files = NULL;
	size_t nfiles = 0;
	enum hm_err err = HM_OK;
	if (util_read_file(index, FMT_PT_MAX_INDEX, &text, &len) != 0)
		return hm_fail(ctx, errno == ENOENT ? HM_ERR_NOT_FOUND : HM_ERR_BAD_INPUT,
			       "cannot read '%s' (missing, unreadable or over %u MiB)", index, FMT_PT_MAX_INDEX >> 20);
	if (!(root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr))) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': invalid JSON: %s (line %d)", index, jerr.text, jerr.line);
		goto out;
	}
	if (!json_is_object(root) || !json_is_object(wm = json_object_get(root, "weight_map"))) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': no weight_map object", index);
		goto out;
	}
	if (!resolve) {
		slash = strrchr(index, '/');
		if (!(dir = slash ? util_strndup(index, (size_t)(slash - index)) : util_strdup("."))) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		resolve = resolve_beside;
		ud = dir;
	}
	/* Shards in order of first mention. */
	json_object_foreach(wm, name, v) {
		const char *f = json_string_value(v);
		size_t i;
		if (!f || !util_path_is_safe(f) || strchr(f, '/')) {
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' maps to an unsafe shard name", index,
				      fmt_pt_shown(name, nb, sizeof(nb)));
			goto out;
		}
		for (i = 0; i < nfiles && strcmp(files[i], f); i++)
			;
		if (i == nfiles) {
			char **nf = realloc(files, (nfiles + 1) * sizeof(*nf));
			if (!nf || !(nf[nfiles] = util_strdup(f))) {
				files = nf ? nf : files;
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				goto out;
			}
			files = nf;
			nfiles++;
		}
		listed++;
	}
	for (size_t i = 0; i < nfiles; i++) {
		ctx->errmsg[0] = '\0';
		if ((err = resolve(ctx, ud, files[i], p, sizeof(p))) || (err = add_shard(ctx, set, p, files[i]))) {
			if (err == HM_ERR_NOT_FOUND)
				err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': shard '%s' is missing%s%s", index,
					      fmt_pt_shown(files[i], nb, sizeof(nb)), ctx->errmsg[0] ? ": " : "", ctx->errmsg);
			goto out;
		}
		/* Every tensor of the shard is listed, under this shard. */
		for (size_t t = 0; t < set->shards[i]->n; t++) {
			const char *want = json_string_value(json_object_get(wm, set->shards[i]->t[t].name));
			if (!want || strcmp(want, files[i])) {
				err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' of shard '%s' is %s", index,
					      fmt_pt_shown(set->shards[i]->t[t].name, nb, sizeof(nb)), files[i],
					      want ? "listed under another shard" : "not in the weight_map");
				goto out;
			}
		}
	}
	if ((err = join(ctx, set)))
		goto out;
	if (set->n != listed) {
		json_object_foreach(wm, name, v) {
			size_t i;
			for (i = 0; i < nfiles && strcmp(files[i], json_string_value(v)); i++)
				;
			if (!fmt_pt_find(set->shards[i], name)) {
				err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' is listed in '%s' but not in it",
					      index, fmt_pt_shown(name, nb, sizeof(nb)), files[i]);
				goto out;
			}
		}
	}
out:
	for (size_t i = 0; i < nfiles; i++)
		free(files[i]);
	free(files);
	free(dir);
	free(text);
	json_decref(root);
	return err;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && !strcmp(s + n - m, suffix);
}

enum hm_err fmt_pt_open_set(struct hm_ctx *ctx, const char *path, struct fmt_pt_set **out)
{
	struct fmt_pt_set *set = calloc(1, sizeof(*set));
	struct stat st;
	enum hm_err err;
	char *p = NULL;
	*out = NULL;
	if (!set)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if (stat(path, &st) != 0) {
		err = hm_fail(ctx, errno == ENOENT ? HM_ERR_NOT_FOUND : HM_ERR_IO, "cannot open '%s': %s", path,
			      strerror(errno));
	} else if (S_ISDIR(st.st_mode)) {
		if (!(p = util_asprintf("%s/pytorch_model.bin.index.json", path))) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		} else if (access(p, F_OK) == 0) {
			err = open_index(ctx, p, NULL, NULL, set);
		} else {
			free(p);
			if (!(p = util_asprintf("%s/pytorch_model.bin", path)))
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			else if (access(p, F_OK) != 0)
				err = hm_fail(ctx, HM_ERR_NOT_FOUND,
					      "'%s' holds neither pytorch_model.bin nor pytorch_model.bin.index.json", path);
			else if (!(err = add_shard(ctx, set, p, NULL)))
				err = join(ctx, set);
		}
	} else if (ends_with(path, ".index.json")) {
		err = open_index(ctx, path, NULL, NULL, set);
	} else if (!(err = add_shard(ctx, set, path, NULL))) {
		err = join(ctx, set);
	}
	free(p);
	if (err) {
		fmt_pt_set_close(set);
		return err;
	}
	*out = set;
	return HM_OK;
}

enum hm_err fmt_pt_open_index(struct hm_ctx *ctx, const char *index_path, fmt_st_resolve_fn resolve, void *ud,
			      struct fmt_pt_set **out)
{
	struct fmt_pt_set *set = calloc(1, sizeof(*set));
	enum hm_err err;
	*out = NULL;
	if (!set)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if ((err = open_index(ctx, index_path, resolve, ud, set))) {
		fmt_pt_set_close(set);
		return err;
	}
	*out = set;
	return HM_OK;
}
