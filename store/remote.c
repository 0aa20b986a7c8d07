/* remote.c - the S3 blob backend: a store whose blobs and revision metadata
 * live in a bucket, with the SQLite index as a cache each node rebuilds.
 *
 * Layout under s3://BUCKET/PREFIX/:
 *   blobs/sha256/<2 hex>/<64 hex>              the blobs, as in a local store
 *   revisions/<type>/<repo>/<commit>.json      a revision's file list, written
 *                                              after every blob it names
 *   refs/<type>/<repo>/<hex of the ref name>   {"ref", "commit", "updated_at"}
 *   artifacts/<type>/<repo>/<commit>/<sha256>  a conversion's blob (kept by gc
 *                                              while its revision exists)
 * The local directory holds index.db (the cache plus this node's statistics)
 * and copies of the blobs this node pulled or read. Opening the store lists
 * revisions/ and refs/ and brings the cache up to date, so a node started on
 * an existing bucket serves its repos without a pull. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "store-int.h"
#include "../s3/s3.h"
#include "../util/util.h"

#define META_MAX (64u << 20)      /* largest revision object read */
#define GC_GRACE_S 3600           /* younger unreferenced objects/uploads are left to running pulls */

/* An upload that runs while its blob downloads (store_blob_streaming). */
struct stream {
	char sha256[65];
	char path[PATH_MAX];
	uint64_t size, written;
	struct s3_mpu *mpu;
};

struct store_remote {
	struct s3_client *s3;
	struct stream *streams;   /* a few at a time: one per large file downloading */
	size_t nstreams;
	char *uri;
	double synced_at;         /* util_now() of the last refresh, 0 = never */
	int syncing;
	char (*discarded)[65];    /* blobs thrown away by a repair: not present any more */
	size_t ndiscarded;
};

void store_remote_free(struct store_remote *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nstreams; i++)
		s3_mpu_free(r->streams[i].mpu);
	free(r->streams);
	s3_client_free(r->s3);
	free(r->uri);
	free(r->discarded);
	free(r);
}

int store_is_remote(const struct store *st)
{
	return st && st->remote != NULL;
}

const char *store_name(const struct store *st)
{
	return st->remote ? st->remote->uri : st->dir;
}

int store_remote_syncing(const struct store *st)
{
	return st->remote && st->remote->syncing;
}

static void blob_key(const struct store *st, const char *sha256, char *buf, size_t len)
{
	char rest[128];
	snprintf(rest, sizeof(rest), "blobs/sha256/%.2s/%s", sha256, sha256);
	s3_key(st->remote->s3, rest, buf, len);
}

/* A directory name from free text: [A-Za-z0-9._-] kept, the rest '_'. */
static void safe_name(const char *s, char *out, size_t len)
{
	size_t j = 0;
	for (; *s && j + 1 < len; s++) {
		char c = *s;
		out[j++] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
			    c == '-') ? c : '_';
	}
	out[j] = 0;
	if (!j || !strcmp(out, ".") || !strcmp(out, ".."))
		snprintf(out, len, "_");
}

static enum hm_err cache_dir(struct hm_ctx *ctx, const struct s3_config *cfg, char *buf, size_t len)
{
	const char *env = getenv("HUBMIRROR_S3_CACHE"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	const char *host = strstr(cfg->endpoint, "://");
	char h[256], b[128], p[600];
	int n;
	if (env && *env) {
		n = snprintf(buf, len, "%s", env);
	} else {
		safe_name(host ? host + 3 : cfg->endpoint, h, sizeof(h));
		safe_name(cfg->bucket, b, sizeof(b));
		safe_name(*cfg->prefix ? cfg->prefix : "_", p, sizeof(p));
		if (xdg && *xdg == '/')
			n = snprintf(buf, len, "%s/hubmirror/s3/%s/%s/%s", xdg, h, b, p);
		else if (home && *home)
			n = snprintf(buf, len, "%s/.cache/hubmirror/s3/%s/%s/%s", home, h, b, p);
		else
			return hm_fail(ctx, HM_ERR_USAGE, "no cache directory for the S3 store: set HUBMIRROR_S3_CACHE");
	}
	if (n < 0 || (size_t)n >= len)
		return hm_fail(ctx, HM_ERR_USAGE, "the S3 store's cache path is too long");
	return HM_OK;
}

/* What store.c and index.c call through st->backend: they sit below this
 * file (which opens a local store as the bucket's cache), so they reach it
 * only through the table, as SQLite's pager reaches a VFS. */
static enum hm_err remote_blob_local(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size);
static const struct store_backend s3_backend = {
	.free = store_remote_free,
	.blob_has = store_remote_blob_has,
	.upload = store_remote_upload,
	.put_revision = store_remote_put_revision,
	.rm = store_remote_rm,
	.put_artifact = store_remote_put_artifact,
	.blob_local = remote_blob_local,
	.gc = store_remote_gc,
	.syncing = store_remote_syncing,
};

enum hm_err store_remote_open(struct hm_ctx *ctx, const char *uri, struct store **out)
{
	enum hm_err err;
	struct s3_config cfg;
	struct store_remote *r = NULL;
	struct store *st = NULL;
	char dir[PATH_MAX];

	*out = NULL;
	if ((err = s3_config_from_env(ctx, uri, &cfg)))
		return err;
	r = calloc(1, sizeof(*r));
	if (!r) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	r->uri = util_strdup(uri);
	if (!r->uri) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((err = s3_client_new(ctx, &cfg, &r->s3)) || (err = s3_check_bucket(ctx, r->s3)) ||
	    (err = cache_dir(ctx, &cfg, dir, sizeof(dir))))
		goto out;
	/* the local index is a cache the bucket refills: a lost one is no loss */
	if ((err = store_open_local(ctx, dir, STORE_REBUILD, &st)))
		goto out;
	st->remote = r;
	st->backend = &s3_backend;
	r = NULL;
	if ((err = store_remote_sync(ctx, st, 0)))
		goto out;
	*out = st;
	st = NULL;
out:
	s3_config_release(&cfg);
	store_remote_free(r);
	store_close(st);
	return err;
}

/* ---- blobs ---- */

static int discarded(const struct store_remote *r, const char *sha256)
{
	for (size_t i = 0; i < r->ndiscarded; i++)
		if (!strcmp(r->discarded[i], sha256))
			return 1;
	return 0;
}

enum hm_err store_remote_blob_has(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size,
				  int *present)
{
	enum hm_err err;
	char key[1200];
	int yes = 0, exists = 0;
	uint64_t osize = 0;

	*present = 0;
	if (discarded(st->remote, sha256))
		return HM_OK;
	if ((err = store_blob_indexed(ctx, st, sha256, size, &yes)))
		return err;
	if (yes) {
		*present = 1;
		return HM_OK;
	}
	/* another node may have uploaded it: reuse the object */
	blob_key(st, sha256, key, sizeof(key));
	if ((err = s3_head(ctx, st->remote->s3, key, &exists, &osize)))
		return err;
	if (exists && osize == size) {
		if ((err = store_queue_blob(ctx, st, sha256, size, NULL)))
			return err;
		*present = 1;
	}
	return HM_OK;
}

static struct stream *find_stream(struct store_remote *r, const char *sha256)
{
	for (size_t i = 0; i < r->nstreams; i++)
		if (!strcmp(r->streams[i].sha256, sha256))
			return &r->streams[i];
	return NULL;
}

/* Takes s out of the list; returns its upload (the caller's now). */
static struct s3_mpu *stream_take(struct store_remote *r, struct stream *s)
{
	struct s3_mpu *m = s->mpu;
	size_t i = (size_t)(s - r->streams);
	memmove(&r->streams[i], &r->streams[i + 1], (r->nstreams - i - 1) * sizeof(*s));
	r->nstreams--;
	return m;
}

void store_blob_streaming(struct store *st, const char *sha256, uint64_t size, const char *part_path,
			  uint64_t written)
{
	struct store_remote *r = st ? st->remote : NULL;
	struct stream *s;
	struct hm_ctx quiet = {0};
	int fd;

	if (!r || !sha256 || !util_is_hex(sha256, 64) || !part_path || !written ||
	    size <= s3_client_config(r->s3)->single_max || strlen(part_path) >= sizeof(s->path))
		return;
	s = find_stream(r, sha256);
	if (s && (strcmp(s->path, part_path) || written < s->written)) {
		/* the file started over: so does the upload */
		s3_mpu_free(stream_take(r, s));
		s = NULL;
	}
	if (!s) {
		char key[1200];
		struct s3_mpu *m = NULL;
		void *p = realloc(r->streams, (r->nstreams + 1) * sizeof(*r->streams));
		if (!p)
			return;
		r->streams = p;
		fd = open(part_path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return;
		blob_key(st, sha256, key, sizeof(key));
		if (s3_mpu_start(&quiet, r->s3, key, fd, size, &m))
			m = NULL;
		close(fd);
		if (!m)
			return;
		s = &r->streams[r->nstreams++];
		memset(s, 0, sizeof(*s));
		memcpy(s->sha256, sha256, 65);
		snprintf(s->path, sizeof(s->path), "%s", part_path);
		s->size = size;
		s->mpu = m;
	}
	s->written = written;
	s3_mpu_avail(s->mpu, written);
}

void store_blob_streaming_stop(struct store *st, const char *sha256)
{
	struct stream *s;
	if (!st || !st->remote || !sha256 || !(s = find_stream(st->remote, sha256)))
		return;
	s3_mpu_free(stream_take(st->remote, s));
}

enum hm_err store_remote_upload(struct hm_ctx *ctx, struct store *st, const char *tmp_path, const char *sha256,
				uint64_t size)
{
	enum hm_err err;
	char key[1200];
	int fd;
	struct stat sb;
	struct store_remote *r = st->remote;
	struct stream *s = find_stream(r, sha256);

	if (s) {
		/* the upload ran while the file downloaded: wait for its last parts */
		int same = !strcmp(s->path, tmp_path) && s->size == size;
		struct s3_mpu *m = stream_take(r, s);
		if (same) {
			err = s3_mpu_finish(ctx, m, sha256, NULL);
			goto done;
		}
		s3_mpu_free(m);
	}
	fd = open(tmp_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hm_fail(ctx, store_errno_err(errno), "cannot open '%s': %s", tmp_path, strerror(errno));
	if (fstat(fd, &sb) < 0 || (uint64_t)sb.st_size != size) {
		close(fd);
		return hm_fail(ctx, HM_ERR_CORRUPT, "'%s' does not have the expected %llu bytes", tmp_path,
			       (unsigned long long)size);
	}
	blob_key(st, sha256, key, sizeof(key));
	err = s3_put_file(ctx, r->s3, key, fd, size, sha256, NULL);
	close(fd);
done:
	if (!err) {
		for (size_t i = 0; i < r->ndiscarded; i++)
			if (!strcmp(r->discarded[i], sha256)) {
				memmove(&r->discarded[i], &r->discarded[i + 1],
					(r->ndiscarded - i - 1) * sizeof(r->discarded[0]));
				r->ndiscarded--;
				break;
			}
	}
	return err;
}

char *store_blob_url(struct store *st, const char *sha256, int expires)
{
	char key[1200];
	if (!st->remote || !util_is_hex(sha256, 64))
		return NULL;
	blob_key(st, sha256, key, sizeof(key));
	return s3_presign(s3_client_config(st->remote->s3), "GET", key, util_unix_time(), expires);
}

struct hash_sink {
	EVP_MD_CTX *sha;
	int fd;               /* -1: hash only */
	uint64_t n, max;
	int err;
};

static int hash_sink_cb(void *ud, const void *data, size_t n)
{
	struct hash_sink *h = ud;
	const char *p = data;
	if (h->n + n > h->max)
		return 1;
	EVP_DigestUpdate(h->sha, data, n);
	h->n += n;
	while (h->fd >= 0 && n) {
		ssize_t w = write(h->fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			h->err = errno ? errno : EIO;
			return 1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Streams the blob's object through SHA-256 (into fd when >= 0). *problem:
 * NULL, "missing" or "corrupt". */
static enum hm_err hash_object(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size, int fd,
			       const char **problem)
{
	struct hash_sink h = {EVP_MD_CTX_new(), fd, 0, size, 0};
	char key[1200], got[65];
	unsigned char d[32];
	enum hm_err err;
	uint64_t n = 0;

	*problem = NULL;
	if (!h.sha)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	EVP_DigestInit_ex(h.sha, EVP_sha256(), NULL);
	blob_key(st, sha256, key, sizeof(key));
	err = s3_get(ctx, st->remote->s3, key, hash_sink_cb, &h, &n);
	if (err == HM_ERR_NOT_FOUND) {
		ctx->errmsg[0] = 0;
		err = HM_OK;
		*problem = "missing";
	} else if (err == HM_ERR_CANCELLED && h.err) {
		err = hm_fail(ctx, store_errno_err(h.err), "cannot write a copy of blob %.16s...: %s", sha256,
			      strerror(h.err));
	} else if (err == HM_ERR_CANCELLED && !hm_cancelled(ctx)) {
		ctx->errmsg[0] = 0;
		err = HM_OK;
		*problem = "corrupt"; /* longer than it should be */
	} else if (!err) {
		EVP_DigestFinal_ex(h.sha, d, NULL);
		util_hex(d, 32, got);
		if (h.n != size || strcmp(got, sha256))
			*problem = "corrupt";
	}
	EVP_MD_CTX_free(h.sha);
	return err;
}

enum hm_err store_blob_check(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size,
			     const char **problem)
{
	if (!st->remote)
		return hm_fail(ctx, HM_ERR_USAGE, "store_blob_check is for S3 stores");
	return hash_object(ctx, st, sha256, size, -1, problem);
}

static enum hm_err remote_blob_local(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size)
{
	enum hm_err err = HM_OK;
	char path[PATH_MAX], tmp[PATH_MAX], dir[PATH_MAX];
	const char *problem = NULL;
	struct stat sb;
	int fd;

	if (!st->remote)
		return HM_OK;
	if (!util_is_hex(sha256, 64))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid sha256 '%s'", sha256);
	store_blob_path(st, sha256, path, sizeof(path));
	if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == size)
		return HM_OK;
	snprintf(tmp, sizeof(tmp), "%s/tmp/s3-%s-%ld.part", st->dir, sha256, (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return hm_fail(ctx, store_errno_err(errno), "cannot create '%s': %s", tmp, strerror(errno));
	err = hash_object(ctx, st, sha256, size, fd, &problem);
	if (!err && problem)
		err = hm_fail(ctx, problem[0] == 'm' ? HM_ERR_NOT_FOUND : HM_ERR_CORRUPT,
			      "blob %s is %s in %s: run 'hubmirror verify --repair'", sha256, problem,
			      st->remote->uri);
	if (!err && (fchmod(fd, 0444) < 0 || fsync(fd) < 0))
		err = hm_fail(ctx, store_errno_err(errno), "cannot write '%s': %s", tmp, strerror(errno));
	close(fd);
	if (!err) {
		snprintf(dir, sizeof(dir), "%s/blobs/sha256/%.2s", st->dir, sha256);
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			err = hm_fail(ctx, store_errno_err(errno), "cannot create '%s': %s", dir, strerror(errno));
		else if (rename(tmp, path) < 0)
			err = hm_fail(ctx, store_errno_err(errno), "cannot rename '%s': %s", tmp, strerror(errno));
	}
	if (err)
		unlink(tmp);
	return err;
}

enum hm_err store_blob_discard(struct hm_ctx *ctx, struct store *st, const char *sha256)
{
	enum hm_err err;
	char path[PATH_MAX], key[1200];
	if (!util_is_hex(sha256, 64))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "invalid sha256 '%s'", sha256);
	store_blob_path(st, sha256, path, sizeof(path));
	chmod(path, 0644);
	if (unlink(path) < 0 && errno != ENOENT)
		return hm_fail(ctx, HM_ERR_IO, "cannot remove '%s': %s", path, strerror(errno));
	if (!st->remote)
		return HM_OK;
	blob_key(st, sha256, key, sizeof(key));
	if ((err = s3_delete(ctx, st->remote->s3, key)))
		return err;
	if (!discarded(st->remote, sha256)) {
		void *p = realloc(st->remote->discarded, (st->remote->ndiscarded + 1) * sizeof(st->remote->discarded[0]));
		if (!p)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		st->remote->discarded = p;
		memcpy(st->remote->discarded[st->remote->ndiscarded++], sha256, 65);
	}
	return HM_OK;
}

/* ---- revision metadata ---- */

static void rev_key(const struct store *st, const char *type, const char *repo, const char *commit, char *buf,
		    size_t len)
{
	char rest[512];
	snprintf(rest, sizeof(rest), "revisions/%s/%s/%s.json", type, repo, commit);
	s3_key(st->remote->s3, rest, buf, len);
}

static void ref_key(const struct store *st, const char *type, const char *repo, const char *ref, char *buf,
		    size_t len)
{
	char rest[1024], hex[513];
	size_t n = strlen(ref);
	if (n > 256)
		n = 256;
	util_hex((const unsigned char *)ref, n, hex);
	snprintf(rest, sizeof(rest), "refs/%s/%s/%s", type, repo, hex);
	s3_key(st->remote->s3, rest, buf, len);
}

enum hm_err store_remote_put_revision(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				      const char *commit, const char *ref)
{
	enum hm_err err;
	struct store_file *f = NULL;
	size_t n = 0;
	int64_t pulled_at = util_unix_time();
	json_t *files = json_array(), *doc = NULL;
	char *text = NULL, key[1200];

	if (!files)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if ((err = store_list_files(ctx, st, type, repo, commit, &f, &n)))
		goto out;
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(files, json_pack("{s:s, s:I, s:s, s:s, s:b}", "path", f[i].path, "size",
							   (json_int_t)f[i].size, "sha256", f[i].sha256, "git_oid",
							   f[i].git_oid, "lfs", f[i].lfs))) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
	doc = json_pack("{s:s, s:i, s:s, s:s, s:s, s:I, s:O}", "format", "hubmirror-revision", "version", 1, "type",
			type, "repo", repo, "commit", commit, "pulled_at", (json_int_t)pulled_at, "files", files);
	text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	if (!text) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	rev_key(st, type, repo, commit, key, sizeof(key));
	if ((err = s3_put_buf(ctx, st->remote->s3, key, text, strlen(text))))
		goto out;
	if (ref) {
		free(text);
		json_decref(doc);
		doc = json_pack("{s:s, s:s, s:I}", "ref", ref, "commit", commit, "updated_at", (json_int_t)pulled_at);
		text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
		if (!text) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		ref_key(st, type, repo, ref, key, sizeof(key));
		err = s3_put_buf(ctx, st->remote->s3, key, text, strlen(text));
	}
out:
	free(text);
	json_decref(doc);
	json_decref(files);
	store_files_free(f, n);
	return err;
}

enum hm_err store_remote_put_artifact(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				      const char *commit, const char *format, const char *options,
				      const char *sha256, uint64_t size)
{
	char rest[600], key[1200], *text;
	json_t *doc = json_pack("{s:s, s:s, s:I}", "format", format, "options", options, "size", (json_int_t)size);
	enum hm_err err;
	text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (!text)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	snprintf(rest, sizeof(rest), "artifacts/%s/%s/%s/%s", type, repo, commit, sha256);
	s3_key(st->remote->s3, rest, key, sizeof(key));
	err = s3_put_buf(ctx, st->remote->s3, key, text, strlen(text));
	free(text);
	return err;
}

/* Keys under a prefix, collected. */
struct keys {
	char **v;
	size_t n, cap;
	int64_t *mtime;
	uint64_t *size;
};

static int keys_cb(void *ud, const struct s3_object *o)
{
	struct keys *k = ud;
	if (k->n == k->cap) {
		size_t nc = k->cap ? k->cap * 2 : 64;
		char **nv = realloc(k->v, nc * sizeof(*nv));
		int64_t *nm = nv ? realloc(k->mtime, nc * sizeof(*nm)) : NULL;
		uint64_t *ns = nm ? realloc(k->size, nc * sizeof(*ns)) : NULL;
		if (nv)
			k->v = nv;
		if (nm)
			k->mtime = nm;
		if (!ns)
			return 1;
		k->size = ns;
		k->cap = nc;
	}
	k->v[k->n] = util_strdup(o->key);
	if (!k->v[k->n])
		return 1;
	k->mtime[k->n] = o->mtime;
	k->size[k->n] = o->size;
	k->n++;
	return 0;
}

static void keys_release(struct keys *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->v[i]);
	free(k->v);
	free(k->mtime);
	free(k->size);
	memset(k, 0, sizeof(*k));
}

static enum hm_err list_keys(struct hm_ctx *ctx, struct store *st, const char *rest, struct keys *k)
{
	char prefix[1200];
	size_t before;
	enum hm_err err;
	s3_key(st->remote->s3, rest, prefix, sizeof(prefix));
	before = k->n;
	err = s3_list(ctx, st->remote->s3, prefix, keys_cb, k);
	if (!err && k->n < before)
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	return err;
}

enum hm_err store_remote_rm(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			    const char *commit)
{
	enum hm_err err = HM_OK;
	struct keys k = {0};
	char key[1200];

	if (!commit) {
		char rest[512];
		snprintf(rest, sizeof(rest), "refs/%s/%s/", type, repo);
		if ((err = list_keys(ctx, st, rest, &k)))
			goto out;
		snprintf(rest, sizeof(rest), "revisions/%s/%s/", type, repo);
		if ((err = list_keys(ctx, st, rest, &k)))
			goto out;
		snprintf(rest, sizeof(rest), "artifacts/%s/%s/", type, repo);
		if ((err = list_keys(ctx, st, rest, &k)))
			goto out;
		/* refs first: a ref never names a revision that is gone */
		for (size_t i = 0; i < k.n && !err; i++)
			err = s3_delete(ctx, st->remote->s3, k.v[i]);
		goto out;
	}
	{
		struct store_rev_info *rv = NULL;
		size_t nrv = 0;
		if ((err = store_list_revisions(ctx, st, type, repo, &rv, &nrv)))
			goto out;
		for (size_t i = 0; i < nrv && !err; i++) {
			char *refs, *save = NULL, *r;
			if (strcmp(rv[i].commit, commit) || !rv[i].refs || !*rv[i].refs)
				continue;
			refs = util_strdup(rv[i].refs);
			if (!refs) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				break;
			}
			for (r = strtok_r(refs, ",", &save); r && !err; r = strtok_r(NULL, ",", &save)) {
				ref_key(st, type, repo, r, key, sizeof(key));
				err = s3_delete(ctx, st->remote->s3, key);
			}
			free(refs);
		}
		store_rev_info_free(rv, nrv);
		if (err)
			goto out;
	}
	rev_key(st, type, repo, commit, key, sizeof(key));
	if ((err = s3_delete(ctx, st->remote->s3, key)))
		goto out;
	{
		char rest[600];
		snprintf(rest, sizeof(rest), "artifacts/%s/%s/%s/", type, repo, commit);
		if ((err = list_keys(ctx, st, rest, &k)))
			goto out;
		for (size_t i = 0; i < k.n && !err; i++)
			err = s3_delete(ctx, st->remote->s3, k.v[i]);
	}
out:
	keys_release(&k);
	return err;
}

/* Splits "<type>/<repo>/<last>" (repo is "name" or "org/name"). */
static int split_meta_key(const char *rest, char type[16], char repo[256], char last[600])
{
	const char *a = strchr(rest, '/'), *z = strrchr(rest, '/');
	if (!a || a == z || (size_t)(a - rest) >= 16 || (size_t)(z - a - 1) >= 256 || strlen(z + 1) >= 600)
		return 0;
	memcpy(type, rest, (size_t)(a - rest));
	type[a - rest] = 0;
	memcpy(repo, a + 1, (size_t)(z - a - 1));
	repo[z - a - 1] = 0;
	strcpy(last, z + 1);
	return store_type_ok(type) && util_repo_id_is_valid(repo);
}

/* Splits an artifact key's rest "<type>/<repo>/<commit>/<sha256>". */
static int split_artifact_key(const char *rest, char type[16], char repo[256], char commit[41], char sha256[65])
{
	const char *slash = strrchr(rest, '/');
	char last[600], c2[600];
	if (!slash || strlen(slash + 1) != 64 || !util_is_hex(slash + 1, 64) || (size_t)(slash - rest) >= sizeof(last))
		return 0;
	memcpy(last, rest, (size_t)(slash - rest));
	last[slash - rest] = 0;
	if (!split_meta_key(last, type, repo, c2) || strlen(c2) != 40 || !util_is_hex(c2, 40))
		return 0;
	memcpy(commit, c2, 41);
	memcpy(sha256, slash + 1, 65);
	return 1;
}

/* Reads a revision object into a recorded revision (without writing back). */
static enum hm_err import_revision(struct hm_ctx *ctx, struct store *st, const char *key, const char *type,
				   const char *repo, const char *commit)
{
	enum hm_err err = HM_OK;
	char *text = NULL;
	size_t len = 0, n = 0;
	json_t *doc = NULL, *files;
	json_error_t je;
	struct store_file *f = NULL;
	json_int_t pulled_at = 0;
	sqlite3_stmt *q = NULL;

	if ((err = s3_get_buf(ctx, st->remote->s3, key, META_MAX, &text, &len))) {
		if (err == HM_ERR_NOT_FOUND) { /* removed since the listing */
			ctx->errmsg[0] = 0;
			err = HM_OK;
		}
		goto out;
	}
	doc = json_loadb(text, len, 0, &je);
	files = doc ? json_object_get(doc, "files") : NULL;
	if (!doc || !json_is_array(files) || !json_is_string(json_object_get(doc, "commit")) ||
	    strcmp(json_string_value(json_object_get(doc, "commit")), commit)) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "malformed revision object '%s' in %s", key, st->remote->uri);
		goto out;
	}
	pulled_at = json_integer_value(json_object_get(doc, "pulled_at"));
	n = json_array_size(files);
	f = calloc(n ? n : 1, sizeof(*f));
	if (!f) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(files, i);
		const char *path = json_string_value(json_object_get(e, "path"));
		const char *sha = json_string_value(json_object_get(e, "sha256"));
		const char *oid = json_string_value(json_object_get(e, "git_oid"));
		json_t *size = json_object_get(e, "size");
		if (!path || !util_path_is_safe(path) || !sha || !util_is_hex(sha, 64) || !json_is_integer(size) ||
		    json_integer_value(size) < 0 || (oid && *oid && !util_is_hex(oid, 40))) {
			n = i;
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "malformed file entry in '%s' of %s", key,
				      st->remote->uri);
			goto out;
		}
		f[i].path = util_strdup(path);
		if (!f[i].path) {
			n = i;
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		f[i].size = (uint64_t)json_integer_value(size);
		memcpy(f[i].sha256, sha, 65);
		snprintf(f[i].git_oid, sizeof(f[i].git_oid), "%s", oid ? oid : "");
		f[i].lfs = json_is_true(json_object_get(e, "lfs"));
		/* the revision was written after its blobs: they are in the bucket */
		if ((err = store_queue_blob(ctx, st, f[i].sha256, f[i].size,
					    !f[i].lfs && f[i].git_oid[0] ? f[i].git_oid : NULL))) {
			free(f[i].path);
			n = i;
			goto out;
		}
	}
	if ((err = store_record_revision(ctx, st, type, repo, commit, NULL, f, n)))
		goto out;
	if (pulled_at > 0) {
		if ((err = store_prepare(ctx, st, "UPDATE revisions SET pulled_at = ?1 WHERE commit_sha = ?2 AND"
					 " repo_id = (SELECT id FROM repos WHERE type = ?3 AND name = ?4)", &q)))
			goto out;
		sqlite3_bind_int64(q, 1, pulled_at);
		sqlite3_bind_text(q, 2, commit, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, type, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 4, repo, -1, SQLITE_STATIC);
		if (sqlite3_step(q) != SQLITE_DONE)
			err = store_db_fail(ctx, st, "set a revision's time");
	}
out:
	sqlite3_finalize(q);
	store_files_free(f, n);
	json_decref(doc);
	free(text);
	return err;
}

struct bucket_ref {
	char type[16], repo[256], ref[300], commit[41];
	int64_t updated_at;
};

static enum hm_err sync_refs(struct hm_ctx *ctx, struct store *st)
{
	enum hm_err err;
	struct keys k = {0};
	struct bucket_ref *refs = NULL;
	size_t nrefs = 0;
	sqlite3_stmt *ins = NULL;
	char prefix[1200];
	size_t plen;

	if ((err = list_keys(ctx, st, "refs/", &k)))
		goto out;
	s3_key(st->remote->s3, "refs/", prefix, sizeof(prefix));
	plen = strlen(prefix);
	refs = calloc(k.n ? k.n : 1, sizeof(*refs));
	if (!refs) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < k.n; i++) {
		struct bucket_ref *r = &refs[nrefs];
		char last[600], *text = NULL;
		size_t len;
		json_t *doc;
		const char *name, *commit;
		if (strncmp(k.v[i], prefix, plen) || !split_meta_key(k.v[i] + plen, r->type, r->repo, last))
			continue;
		if ((err = s3_get_buf(ctx, st->remote->s3, k.v[i], 64 * 1024, &text, &len))) {
			if (err != HM_ERR_NOT_FOUND)
				goto out;
			ctx->errmsg[0] = 0;
			err = HM_OK;
			continue;
		}
		doc = json_loadb(text, len, 0, NULL);
		free(text);
		name = json_string_value(json_object_get(doc, "ref"));
		commit = json_string_value(json_object_get(doc, "commit"));
		if (name && commit && util_is_hex(commit, 40) && util_path_is_safe(name) && strlen(name) < sizeof(r->ref)) {
			strcpy(r->ref, name);
			strcpy(r->commit, commit);
			r->updated_at = json_integer_value(json_object_get(doc, "updated_at"));
			nrefs++;
		}
		json_decref(doc);
	}
	/* the bucket's refs replace the cached ones */
	if ((err = store_exec(ctx, st, "BEGIN IMMEDIATE")))
		goto out;
	if ((err = store_exec(ctx, st, "DELETE FROM refs")) ||
	    (err = store_prepare(ctx, st, "INSERT OR REPLACE INTO refs(repo_id, name, commit_sha, updated_at)"
				 " SELECT p.id, ?3, ?4, ?5 FROM repos p JOIN revisions v ON v.repo_id = p.id"
				 " WHERE p.type = ?1 AND p.name = ?2 AND v.commit_sha = ?4", &ins))) {
		store_rollback(st);
		goto out;
	}
	for (size_t i = 0; i < nrefs; i++) {
		sqlite3_reset(ins);
		sqlite3_bind_text(ins, 1, refs[i].type, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 2, refs[i].repo, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 3, refs[i].ref, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 4, refs[i].commit, -1, SQLITE_STATIC);
		sqlite3_bind_int64(ins, 5, refs[i].updated_at);
		if (sqlite3_step(ins) != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "update a ref");
			store_rollback(st);
			goto out;
		}
	}
	err = store_exec(ctx, st, "COMMIT");
	if (err)
		store_rollback(st);
out:
	sqlite3_finalize(ins);
	free(refs);
	keys_release(&k);
	return err;
}

/* Records the conversions other nodes stored (artifacts/ objects) whose
 * revision this node's index has and whose row it lacks. */
static enum hm_err sync_artifacts(struct hm_ctx *ctx, struct store *st)
{
	enum hm_err err;
	struct keys k = {0};
	char ap[1200];
	size_t al;

	if ((err = list_keys(ctx, st, "artifacts/", &k)))
		return err;
	s3_key(st->remote->s3, "artifacts/", ap, sizeof(ap));
	al = strlen(ap);
	for (size_t i = 0; i < k.n && !err; i++) {
		char type[16], repo[256], commit[41], sha[65], *text = NULL;
		struct store_artifact *v = NULL;
		size_t nv = 0, len = 0;
		int have = 0;
		json_t *doc;
		const char *format, *options;
		json_int_t size;

		if (strncmp(k.v[i], ap, al) || !split_artifact_key(k.v[i] + al, type, repo, commit, sha))
			continue;
		if (store_list_artifacts(ctx, st, type, repo, &v, &nv)) {
			ctx->errmsg[0] = 0; /* the repo is not in this index */
			continue;
		}
		for (size_t j = 0; j < nv; j++)
			have |= !strcmp(v[j].sha256, sha) && !strcmp(v[j].commit, commit);
		store_artifacts_free(v, nv);
		if (have)
			continue;
		if ((err = s3_get_buf(ctx, st->remote->s3, k.v[i], 64 * 1024, &text, &len))) {
			if (err != HM_ERR_NOT_FOUND)
				break;
			ctx->errmsg[0] = 0; /* removed meanwhile */
			err = HM_OK;
			continue;
		}
		/* untrusted: a malformed record is skipped, not fatal */
		doc = json_loadb(text, len, 0, NULL);
		free(text);
		if (doc && !json_unpack(doc, "{s:s, s:s, s:I}", "format", &format, "options", &options, "size", &size) &&
		    size >= 0 && strlen(format) < 32 && strlen(options) < 512) {
			int present = 0;
			/* the blob's row first (its object is written before the record) */
			err = store_remote_blob_has(ctx, st, sha, (uint64_t)size, &present);
			if (!err && present)
				err = store_record_artifact(ctx, st, type, repo, commit, format, options, sha,
							    (uint64_t)size);
			if (err == HM_ERR_NOT_FOUND || err == HM_ERR_REV_NOT_FOUND) { /* not in this index */
				ctx->errmsg[0] = 0;
				err = HM_OK;
			}
		}
		json_decref(doc);
	}
	keys_release(&k);
	return err;
}

enum hm_err store_remote_sync(struct hm_ctx *ctx, struct store *st, double min_age)
{
	enum hm_err err = HM_OK;
	struct store_remote *r = st->remote;
	struct keys k = {0};
	struct store_kmap inbucket = {0};
	struct store_repo_info *ri = NULL;
	size_t nri = 0;
	char prefix[1200];
	size_t plen;

	if (!r || r->syncing)
		return HM_OK;
	if (min_age > 0 && r->synced_at > 0 && util_now() - r->synced_at < min_age)
		return HM_OK;
	r->syncing = 1;
	if ((err = store_flush(ctx, st)) || (err = list_keys(ctx, st, "revisions/", &k)))
		goto out;
	s3_key(r->s3, "revisions/", prefix, sizeof(prefix));
	plen = strlen(prefix);
	for (size_t i = 0; i < k.n; i++) {
		char type[16], repo[256], last[600], commit[41], id[400];
		struct store_file sf;
		size_t ll;
		int added;
		if (strncmp(k.v[i], prefix, plen) || !split_meta_key(k.v[i] + plen, type, repo, last))
			continue;
		ll = strlen(last);
		if (ll != 45 || strcmp(last + 40, ".json"))
			continue;
		memcpy(commit, last, 40);
		commit[40] = 0;
		if (!util_is_hex(commit, 40))
			continue;
		snprintf(id, sizeof(id), "%s:%s@%s", type, repo, commit);
		if (store_kmap_get(&inbucket, id, strlen(id), &added) < 0) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		/* known already? (a revision is immutable: its object never changes) */
		{
			struct store_rev_info *rv = NULL;
			size_t nrv = 0;
			int have = 0;
			enum hm_err e2 = store_list_revisions(ctx, st, type, repo, &rv, &nrv);
			if (e2 == HM_ERR_NOT_FOUND) {
				ctx->errmsg[0] = 0;
			} else if (e2) {
				err = e2;
				goto out;
			}
			for (size_t j = 0; j < nrv; j++)
				have |= !strcmp(rv[j].commit, commit);
			store_rev_info_free(rv, nrv);
			(void)sf;
			if (have)
				continue;
		}
		if ((err = import_revision(ctx, st, k.v[i], type, repo, commit)))
			goto out;
	}
	/* revisions removed from the bucket (rm on another node) */
	if ((err = store_list_repos(ctx, st, &ri, &nri)))
		goto out;
	for (size_t i = 0; i < nri; i++) {
		struct store_rev_info *rv = NULL;
		size_t nrv = 0;
		if ((err = store_list_revisions(ctx, st, ri[i].type, ri[i].name, &rv, &nrv)))
			goto out;
		for (size_t j = 0; j < nrv && !err; j++) {
			char id[400];
			int added = 0;
			snprintf(id, sizeof(id), "%s:%s@%s", ri[i].type, ri[i].name, rv[j].commit);
			if (store_kmap_get(&inbucket, id, strlen(id), &added) < 0)
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			else if (added)
				err = store_rm(ctx, st, ri[i].type, ri[i].name, rv[j].commit);
		}
		store_rev_info_free(rv, nrv);
		if (err)
			goto out;
	}
	if ((err = sync_refs(ctx, st)) || (err = sync_artifacts(ctx, st)))
		goto out;
	r->synced_at = util_now();
out:
	r->syncing = 0;
	store_repo_info_free(ri, nri);
	store_kmap_release(&inbucket);
	keys_release(&k);
	return err;
}

/* ---- gc ---- */

struct stale_uploads {
	struct s3_upload *v;
	char (*keys)[1100];
	char (*ids)[512];
	size_t n, cap;
	int64_t cutoff;
};

static int uploads_cb(void *ud, const struct s3_upload *u)
{
	struct stale_uploads *s = ud;
	if (u->initiated > s->cutoff || strlen(u->key) >= 1100 || strlen(u->upload_id) >= 512)
		return 0;
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 16;
		void *a = realloc(s->keys, nc * sizeof(*s->keys));
		void *b = a ? realloc(s->ids, nc * sizeof(*s->ids)) : NULL;
		if (a)
			s->keys = a;
		if (!b)
			return 1;
		s->ids = b;
		s->cap = nc;
	}
	strcpy(s->keys[s->n], u->key);
	strcpy(s->ids[s->n], u->upload_id);
	s->n++;
	return 0;
}

static int64_t gc_grace(void)
{
	const char *g = getenv("HUBMIRROR_S3_GC_GRACE");
	char *end;
	long long v;
	if (!g || !*g)
		return GC_GRACE_S;
	v = strtoll(g, &end, 10);
	return *end || v < 0 ? GC_GRACE_S : v;
}

enum hm_err store_remote_gc(struct hm_ctx *ctx, struct store *st, struct store_gc_result *r)
{
	enum hm_err err;
	struct keys k = {0}, arts = {0};
	struct store_kmap live = {0};
	struct stale_uploads su = {0};
	sqlite3_stmt *q = NULL;
	char prefix[1200];
	int64_t now = util_unix_time(), grace = gc_grace();
	size_t plen;

	/* the bucket decides what is referenced: refresh first */
	if ((err = store_remote_sync(ctx, st, 0)))
		return err;
	/* artifacts of revisions that exist keep their blobs, whichever node converted */
	if ((err = list_keys(ctx, st, "artifacts/", &arts)))
		goto out;
	{
		char ap[1200];
		size_t al;
		s3_key(st->remote->s3, "artifacts/", ap, sizeof(ap));
		al = strlen(ap);
		for (size_t i = 0; i < arts.n; i++) {
			char type[16], repo[256], commit[41], sha[65];
			int have = 0, added;
			if (strncmp(arts.v[i], ap, al) || !split_artifact_key(arts.v[i] + al, type, repo, commit, sha))
				continue;
			{
				struct store_rev_info *rv = NULL;
				size_t nrv = 0;
				if (!store_list_revisions(ctx, st, type, repo, &rv, &nrv))
					for (size_t j = 0; j < nrv; j++)
						have |= !strcmp(rv[j].commit, commit);
				else
					ctx->errmsg[0] = 0;
				store_rev_info_free(rv, nrv);
			}
			if (have && store_kmap_get(&live, sha, 64, &added) < 0) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				goto out;
			}
		}
	}
	if ((err = list_keys(ctx, st, "blobs/sha256/", &k)))
		goto out;
	s3_key(st->remote->s3, "blobs/sha256/", prefix, sizeof(prefix));
	plen = strlen(prefix);
	if ((err = store_prepare(ctx, st, "SELECT 1 WHERE EXISTS (SELECT 1 FROM files WHERE sha256 = ?1)"
				 " OR EXISTS (SELECT 1 FROM artifacts WHERE sha256 = ?1)", &q)))
		goto out;
	for (size_t i = 0; i < k.n; i++) {
		const char *rest = k.v[i] + plen;
		const char *sha;
		int rc;
		/* young objects may belong to a pull that has not written its revision yet */
		if (strncmp(k.v[i], prefix, plen) || strlen(rest) != 67 || rest[2] != '/' ||
		    k.mtime[i] > now - grace)
			continue;
		sha = rest + 3;
		if (!util_is_hex(sha, 64))
			continue;
		{
			int added = 0;
			size_t before = live.n;
			if (store_kmap_get(&live, sha, 64, &added) < 0) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				goto out;
			}
			if (!added)
				continue;
			(void)before;
		}
		sqlite3_reset(q);
		sqlite3_bind_text(q, 1, sha, -1, SQLITE_TRANSIENT);
		rc = sqlite3_step(q);
		if (rc == SQLITE_ROW)
			continue;
		if (rc != SQLITE_DONE) {
			err = store_db_fail(ctx, st, "look up a blob");
			goto out;
		}
		if ((err = s3_delete(ctx, st->remote->s3, k.v[i])))
			goto out;
		r->blobs_removed++;
		r->bytes_removed += k.size[i];
	}
	/* multipart uploads nobody completed (a pull killed mid-upload) */
	su.cutoff = now - grace;
	{
		char bp[1200];
		s3_key(st->remote->s3, "", bp, sizeof(bp));
		if ((err = s3_list_uploads(ctx, st->remote->s3, bp, uploads_cb, &su)))
			goto out;
	}
	for (size_t i = 0; i < su.n; i++) {
		if ((err = s3_abort_upload(ctx, st->remote->s3, su.keys[i], su.ids[i])))
			goto out;
		r->partials_removed++;
	}
out:
	sqlite3_finalize(q);
	free(su.keys);
	free(su.ids);
	keys_release(&k);
	keys_release(&arts);
	store_kmap_release(&live);
	return err;
}

/* ---- usage ---- */

struct du_acc {
	uint64_t bytes, n;
};

static int du_obj_cb(void *ud, const struct s3_object *o)
{
	struct du_acc *a = ud;
	a->bytes += o->size;
	a->n++;
	return 0;
}

static int du_upload_cb(void *ud, const struct s3_upload *u)
{
	(void)u;
	(*(uint64_t *)ud)++;
	return 0;
}

enum hm_err store_du_bucket(struct hm_ctx *ctx, struct store *st, struct store_du *d)
{
	struct du_acc a = {0, 0};
	char prefix[1200];
	enum hm_err err;

	if (!st->remote)
		return HM_OK;

	s3_key(st->remote->s3, "blobs/", prefix, sizeof(prefix));
	if ((err = s3_list(ctx, st->remote->s3, prefix, du_obj_cb, &a)))
		return err;
	d->bucket_bytes = a.bytes;
	d->bucket_blobs = a.n;
	s3_key(st->remote->s3, "", prefix, sizeof(prefix));
	return s3_list_uploads(ctx, st->remote->s3, prefix, du_upload_cb, &d->bucket_uploads);
}
