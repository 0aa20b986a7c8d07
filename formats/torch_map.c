/* torch_map.c - PyTorch checkpoints seen as memory-mapped tensors (what the
 * GGUF converter reads): the zip's central directory and local headers
 * read and cross-checked here, storages mapped in place, CRC-32 checked. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>
#include "../util/util.h"
#include "formats-int.h"
#include "torch-int.h"

#define ZIP_EOCD 0x06054b50u
#define ZIP_EOCD64 0x06064b50u
#define ZIP_LOC64 0x07064b50u
#define ZIP_CEN 0x02014b50u
#define ZIP_LOC 0x04034b50u
#define ZIP_MAX_ENTRIES (FMT_PT_MAX_TENSORS + 64u)
#define CRC_STEP (8u << 20)  /* bytes checksummed between page drops */

/* One entry, as the central directory and its local header say. */
struct zent {
	const char *name;  /* into the mapping, not NUL-terminated */
	size_t nlen;
	uint64_t hdr;      /* local header offset */
	uint64_t data;     /* first data byte */
	uint64_t size;     /* stored bytes (compressed size) */
	uint64_t usize;
	uint32_t crc;
	unsigned method;
};

struct zdir {
	struct zent *e;
	size_t n;
};

static uint16_t le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static enum hm_err zbad(struct hm_ctx *ctx, const char *path, const char *what)
{
	return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': %s (a damaged or hand-made zip, not torch.save's)", path, what);
}

static int cmp_hdr(const void *a, const void *b)
{
	const struct zent *x = a, *y = b;
	return x->hdr < y->hdr ? -1 : x->hdr > y->hdr;
}

/* The end of central directory record (and the zip64 one when a field
 * overflows): where the central directory is and how many entries. */
static enum hm_err find_dir(struct hm_ctx *ctx, const char *path, const unsigned char *p, uint64_t size,
			    uint64_t *cd_off, uint64_t *cd_size, uint64_t *count, uint64_t *cd_limit)
{
	uint64_t pos, lim;
	int found = 0;
	if (size < 22)
		return zbad(ctx, path, "too short for a zip archive");
	/* the record is followed only by its comment (at most 64 KiB) */
	lim = size - 22 > 0xffff ? size - 22 - 0xffff : 0;
	for (pos = size - 22;; pos--) {
		if (fmt_le32(p + pos) == ZIP_EOCD && pos + 22 + le16(p + pos + 20) == size) {
			found = 1;
			break;
		}
		if (pos == lim)
			break;
	}
	if (!found)
		return zbad(ctx, path, "no end of central directory record");
	if (le16(p + pos + 4) || le16(p + pos + 6) || le16(p + pos + 8) != le16(p + pos + 10))
		return zbad(ctx, path, "a multi-disk zip archive");
	*count = le16(p + pos + 10);
	*cd_size = fmt_le32(p + pos + 12);
	*cd_off = fmt_le32(p + pos + 16);
	*cd_limit = pos;
	if (pos >= 20 && fmt_le32(p + pos - 20) == ZIP_LOC64) {
		uint64_t at = fmt_le64(p + pos - 20 + 8);
		if (fmt_le32(p + pos - 20 + 4) || fmt_le32(p + pos - 20 + 16) > 1)
			return zbad(ctx, path, "a multi-disk zip64 archive");
		if (at > pos - 20 || pos - 20 - at < 56 || fmt_le32(p + at) != ZIP_EOCD64)
			return zbad(ctx, path, "the zip64 end of central directory record is not where its locator says");
		if (fmt_le32(p + at + 16) || fmt_le32(p + at + 20) || fmt_le64(p + at + 24) != fmt_le64(p + at + 32))
			return zbad(ctx, path, "a multi-disk zip64 archive");
		if (*count == 0xffff)
			*count = fmt_le64(p + at + 32);
		if (*cd_size == 0xffffffffu)
			*cd_size = fmt_le64(p + at + 40);
		if (*cd_off == 0xffffffffu)
			*cd_off = fmt_le64(p + at + 48);
		*cd_limit = at;
	}
	if (*cd_off > *cd_limit || *cd_size > *cd_limit - *cd_off)
		return zbad(ctx, path, "the central directory lies outside the file");
	if (*count > ZIP_MAX_ENTRIES || *count > *cd_size / 46)
		return zbad(ctx, path, "the central directory's entry count does not fit it");
	return HM_OK;
}

/* The zip64 extended information of a central directory entry: the
 * fields that overflowed 32 bits follow, in this order. */
static int zip64_extra(const unsigned char *x, size_t xlen, uint64_t *usize, uint64_t *csize, uint64_t *hdr)
{
	while (xlen >= 4) {
		size_t id = le16(x), len = le16(x + 2);
		if (len > xlen - 4)
			return -1;
		if (id == 1) {
			const unsigned char *q = x + 4;
			size_t left = len;
			uint64_t *f[3] = {usize, csize, hdr};
			for (int i = 0; i < 3; i++) {
				if (*f[i] != 0xffffffffu)
					continue;
				if (left < 8)
					return -1;
				*f[i] = fmt_le64(q);
				q += 8;
				left -= 8;
			}
			return 0;
		}
		x += 4 + len;
		xlen -= 4 + len;
	}
	return 0;
}

/* Reading a local header faulted in the whole large folio around it (ext4
 * and xfs page caches): gives back FOLIO_REACH bytes either side, or every
 * header touched would count in this process's memory. */
#define FOLIO_REACH (2u << 20)
static void unmap_near(const unsigned char *p, uint64_t size, uint64_t at)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint64_t a = at > FOLIO_REACH ? at - FOLIO_REACH : 0, b = size - at > FOLIO_REACH ? at + FOLIO_REACH : size;
	uintptr_t x = (uintptr_t)(p + a) & ~(uintptr_t)(pg - 1);
	madvise((void *)x, (size_t)((uintptr_t)(p + b) - x), MADV_DONTNEED);
}

/* Reads the central directory, checking each entry against its local
 * header: same name, inside the file, before the directory, no overlap. */
static enum hm_err read_dir(struct hm_ctx *ctx, const char *path, const unsigned char *p, uint64_t size,
			    struct zdir *d)
{
	uint64_t cd_off = 0, cd_size = 0, count = 0, limit = 0, q;
	enum hm_err err;
	char nb[128], msg[256];
	if ((err = find_dir(ctx, path, p, size, &cd_off, &cd_size, &count, &limit)))
		return err;
	if (!(d->e = calloc((size_t)count + 1, sizeof(*d->e))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	q = cd_off;
	for (uint64_t i = 0; i < count; i++) {
		struct zent *e = &d->e[i];
		const unsigned char *c = p + q;
		uint64_t end = cd_off + cd_size;
		size_t nlen, xlen, clen;
		unsigned flags;
		if (end - q < 46 || fmt_le32(c) != ZIP_CEN)
			return zbad(ctx, path, "a central directory entry is cut short or misplaced");
		flags = le16(c + 8);
		e->method = le16(c + 10);
		e->crc = fmt_le32(c + 16);
		e->size = fmt_le32(c + 20);
		e->usize = fmt_le32(c + 24);
		nlen = le16(c + 28);
		xlen = le16(c + 30);
		clen = le16(c + 32);
		e->hdr = fmt_le32(c + 42);
		if (end - q - 46 < (uint64_t)nlen + xlen + clen)
			return zbad(ctx, path, "a central directory entry runs past the directory");
		e->name = (const char *)c + 46;
		e->nlen = nlen;
		if (zip64_extra(c + 46 + nlen, xlen, &e->usize, &e->size, &e->hdr) < 0)
			return zbad(ctx, path, "a central directory entry has a malformed zip64 field");
		snprintf(msg, sizeof(msg), "%.*s", (int)(nlen < 96 ? nlen : 96), e->name);
		fmt_pt_shown(msg, nb, sizeof(nb));
		if (le16(c + 34) && le16(c + 34) != 0xffff)
			return zbad(ctx, path, "a multi-disk zip archive");
		if (flags & 0x41) {
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': archive entry '%s' is encrypted", path, nb);
		}
		/* the local header: same name, data inside the file, before the directory */
		if (e->hdr > cd_off || cd_off - e->hdr < 30 || fmt_le32(p + e->hdr) != ZIP_LOC) {
			snprintf(msg, sizeof(msg), "archive entry '%s' has no local header where the directory says", nb);
			return zbad(ctx, path, msg);
		}
		{
			const unsigned char *l = p + e->hdr;
			size_t lnlen = le16(l + 26), lxlen = le16(l + 28);
			if (cd_off - e->hdr - 30 < (uint64_t)lnlen + lxlen || lnlen != nlen ||
			    memcmp(l + 30, e->name, nlen) || le16(l + 8) != e->method) {
				snprintf(msg, sizeof(msg), "archive entry '%s': the local header disagrees with the directory",
					 nb);
				return zbad(ctx, path, msg);
			}
			e->data = e->hdr + 30 + lnlen + lxlen;
		}
		unmap_near(p, size, e->hdr);
		if (e->size > cd_off - e->data) {
			snprintf(msg, sizeof(msg), "archive entry '%s' declares %" PRIu64 " bytes, past the end of the data"
				 " (truncated?)", nb, e->size);
			return zbad(ctx, path, msg);
		}
		q += 46 + nlen + xlen + clen;
	}
	d->n = (size_t)count;
	/* no two entries share bytes */
	qsort(d->e, d->n, sizeof(*d->e), cmp_hdr);
	for (size_t i = 1; i < d->n; i++)
		if (d->e[i].hdr < d->e[i - 1].data + d->e[i - 1].size) {
			snprintf(msg, sizeof(msg), "%.*s", (int)(d->e[i].nlen < 96 ? d->e[i].nlen : 96), d->e[i].name);
			fmt_pt_shown(msg, nb, sizeof(nb));
			snprintf(msg, sizeof(msg), "archive entry '%s' overlaps the one before it", nb);
			return zbad(ctx, path, msg);
		}
	return HM_OK;
}

/* An entry's name past its first '/' (torch.save's "<archive>/" prefix). */
static const char *rest_of(const struct zent *e, size_t *len)
{
	const char *slash = memchr(e->name, '/', e->nlen);
	const char *r = slash ? slash + 1 : e->name;
	*len = e->nlen - (size_t)(r - e->name);
	return r;
}

static int cmp_rest(const void *a, const void *b)
{
	const struct zent *x = *(const struct zent *const *)a, *y = *(const struct zent *const *)b;
	size_t xl, yl;
	const char *xr = rest_of(x, &xl), *yr = rest_of(y, &yl);
	int c = memcmp(xr, yr, xl < yl ? xl : yl);
	return c ? c : xl < yl ? -1 : xl > yl;
}

/* Entries sorted by name past the prefix; two with one name are refused. */
static enum hm_err sort_names(struct hm_ctx *ctx, const char *path, const struct zdir *d, const struct zent ***out)
{
	const struct zent **s = calloc(d->n + 1, sizeof(*s));
	char msg[192], nb[128];
	*out = NULL;
	if (!s)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < d->n; i++)
		s[i] = &d->e[i];
	qsort(s, d->n, sizeof(*s), cmp_rest);
	for (size_t i = 1; i < d->n; i++)
		if (!cmp_rest(&s[i - 1], &s[i])) {
			snprintf(msg, sizeof(msg), "%.*s", (int)(s[i]->nlen < 96 ? s[i]->nlen : 96), s[i]->name);
			fmt_pt_shown(msg, nb, sizeof(nb));
			snprintf(msg, sizeof(msg), "the central directory lists '%s' twice", nb);
			free(s);
			return zbad(ctx, path, msg);
		}
	*out = s;
	return HM_OK;
}

/* The entry "<prefix>/data/<key>", or NULL. */
static const struct zent *find_storage(const struct zent *const *sorted, size_t n, const char *key)
{
	char name[160];
	struct zent k = {0};
	const struct zent *kp = &k, *const *hit;
	if ((size_t)snprintf(name, sizeof(name), "x/data/%s", key) >= sizeof(name))
		return NULL;
	k.name = name;
	k.nlen = strlen(name);
	hit = bsearch(&kp, sorted, n, sizeof(*sorted), cmp_rest);
	return hit ? *hit : NULL;
}

/* Checks the CRC-32 of the entries in file order, dropping pages behind. */
static enum hm_err check_crcs(struct hm_ctx *ctx, const char *path, const struct fmt_map *m, const struct zdir *d,
			      const unsigned char *used)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint64_t total = 0, done = 0;
	double t0 = util_now();
	char nb[128], msg[128];
	for (size_t i = 0; i < d->n; i++)
		total += used[i] ? d->e[i].size : 0;
	for (size_t i = 0; i < d->n; i++) {
		const struct zent *e = &d->e[i];
		uLong crc = crc32_z(0, NULL, 0);
		if (!used[i])
			continue;
		for (uint64_t off = 0; off < e->size;) {
			uint64_t n = e->size - off < CRC_STEP ? e->size - off : CRC_STEP;
			const unsigned char *at = m->p + e->data + off;
			uintptr_t a, b;
			crc = crc32_z(crc, at, (z_size_t)n);
			/* faults map whole large folios, reaching back over pages
			 * dropped before: drop from a step further back */
			a = (uintptr_t)(off >= CRC_STEP ? at - CRC_STEP : at - off) & ~(uintptr_t)(pg - 1);
			b = ((uintptr_t)at + n) & ~(uintptr_t)(pg - 1);
			if (b > a)
				madvise((void *)a, b - a, MADV_DONTNEED);
			off += n;
			done += n;
			if (hm_cancelled(ctx))
				return hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
			if (total > CRC_STEP) {
				struct hm_event ev = {0};
				double dt = util_now() - t0;
				ev.kind = HM_EV_PROGRESS;
				ev.name = "crc";
				ev.done = done;
				ev.total = total;
				ev.rate = dt > 0 ? (double)done / dt : 0;
				hm_emit(ctx, &ev);
			}
		}
		if ((uint32_t)crc != e->crc) {
			snprintf(msg, sizeof(msg), "%.*s", (int)(e->nlen < 96 ? e->nlen : 96), e->name);
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': archive entry '%s' fails its CRC-32 check (damaged file)",
				       path, fmt_pt_shown(msg, nb, sizeof(nb)));
		}
	}
	return HM_OK;
}

/* Maps one opened checkpoint: its tensors pointing into the file. */
static enum hm_err map_one(struct hm_ctx *ctx, struct fmt_pt *pt, struct fmt_st **out)
{
	const char *path = fmt_pt_path(pt);
	struct fmt_map m = {0};
	struct zdir d = {0};
	const struct zent **sorted = NULL;
	struct fmt_st_tensor *t = NULL;
	unsigned char *used = NULL;
	size_t n = fmt_pt_count(pt), k = 0;
	enum hm_err err;
	char nb[128];

	*out = NULL;
	if ((err = fmt_map_open(ctx, path, &m)) || (err = read_dir(ctx, path, m.p, m.size, &d)) ||
	    (err = sort_names(ctx, path, &d, &sorted)))
		goto out;
	if (!(t = calloc(n + 1, sizeof(*t))) || !(used = calloc(d.n + 1, 1))) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (; k < n; k++) {
		const struct fmt_pt_tensor *s = fmt_pt_tensor(pt, k);
		const struct zent *e;
		if (s->ndim > FMT_MAX_DIMS) {
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' has too many dimensions", path,
				      fmt_pt_shown(s->name, nb, sizeof(nb)));
			goto out;
		}
		if (!(e = find_storage(sorted, d.n, s->storage))) {
			err = zbad(ctx, path, "a storage the entry list has is not in the central directory");
			goto out;
		}
		if (e->size != s->storage_bytes || e->usize != e->size) {
			err = e->method ? hm_fail(ctx, HM_ERR_BAD_INPUT,
						  "'%s': storage 'data/%s' is compressed (zip method %u); torch.save stores"
						  " them uncompressed: convert with --to safetensors first", path,
						  fmt_pt_shown(s->storage, nb, sizeof(nb)), e->method)
					: zbad(ctx, path, "a storage's size differs between the directory and the entry list");
			goto out;
		}
		if (e->method) {
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': storage 'data/%s' is compressed (zip method %u);"
				      " torch.save stores them uncompressed: convert with --to safetensors first", path,
				      fmt_pt_shown(s->storage, nb, sizeof(nb)), e->method);
			goto out;
		}
		/* fmt_pt_open checked the view lies inside its storage */
		used[e - d.e] = 1;
		if (!(t[k].name = util_strdup(s->name))) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		t[k].dtype = s->dtype;
		t[k].ndim = s->ndim;
		memcpy(t[k].shape, s->shape, sizeof(t[k].shape));
		t[k].nelem = s->nelem;
		t[k].nbytes = s->nbytes;
		t[k].file_offset = e->data + s->byte_offset;
		t[k].data = m.p + t[k].file_offset;
	}
	if ((err = check_crcs(ctx, path, &m, &d, used)))
		goto out;
	err = fmt_st_adopt(ctx, path, &m, t, n, out);
	t = NULL;
	k = 0;
out:
	for (size_t i = 0; i < k; i++)
		free((char *)t[i].name);
	free(t);
	free(used);
	free(sorted);
	free(d.e);
	fmt_map_close(&m);
	return err;
}

/* Takes ps (closed here); the set of its shards mapped. */
static enum hm_err map_set(struct hm_ctx *ctx, struct fmt_pt_set *ps, struct fmt_st_set **out)
{
	size_t n = fmt_pt_set_nshards(ps), k = 0;
	struct fmt_st **shards = calloc(n + 1, sizeof(*shards));
	char **names = calloc(n + 1, sizeof(*names));
	enum hm_err err = HM_OK;
	if (!shards || !names) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto fail;
	}
	for (; k < n; k++) {
		if (!(names[k] = util_strdup(fmt_pt_set_shard_name(ps, k)))) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto fail;
		}
		if ((err = map_one(ctx, fmt_pt_set_shard(ps, k), &shards[k]))) {
			free(names[k]);
			goto fail;
		}
	}
	fmt_pt_set_close(ps);
	return fmt_st_set_adopt(ctx, shards, names, n, out);
fail:
	for (size_t i = 0; i < k; i++) {
		fmt_st_close(shards[i]);
		free(names[i]);
	}
	free(shards);
	free(names);
	fmt_pt_set_close(ps);
	return err;
}

enum hm_err fmt_pt_map_single(struct hm_ctx *ctx, const char *path, struct fmt_st_set **out)
{
	struct fmt_pt *pt = NULL;
	struct fmt_st **shards = NULL;
	char **names = NULL;
	const char *slash = strrchr(path, '/');
	enum hm_err err;
	*out = NULL;
	if ((err = fmt_pt_open(ctx, path, &pt)))
		return err;
	if (!(shards = calloc(1, sizeof(*shards))) || !(names = calloc(1, sizeof(*names))) ||
	    !(names[0] = util_strdup(slash ? slash + 1 : path))) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	} else if (!(err = map_one(ctx, pt, &shards[0]))) {
		fmt_pt_close(pt);
		return fmt_st_set_adopt(ctx, shards, names, 1, out);
	}
	if (names)
		free(names[0]);
	free(names);
	free(shards);
	fmt_pt_close(pt);
	return err;
}

enum hm_err fmt_pt_map_index(struct hm_ctx *ctx, const char *index_path, fmt_st_resolve_fn resolve, void *ud,
			     struct fmt_st_set **out)
{
	struct fmt_pt_set *ps;
	enum hm_err err;
	*out = NULL;
	if ((err = fmt_pt_open_index(ctx, index_path, resolve, ud, &ps)))
		return err;
	return map_set(ctx, ps, out);
}
