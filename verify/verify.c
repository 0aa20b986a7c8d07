/* verify.c - streaming SHA-256 and git blob SHA-1 through OpenSSL EVP. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/evp.h>
#include "verify.h"
#include "../util/util.h"

/* Big enough to amortize syscalls, small enough to stay constant-memory. */
#define VERIFY_CHUNK (1u << 20)

struct verify_hasher {
	EVP_MD_CTX *sha256;
	EVP_MD_CTX *sha1; /* NULL when the git digest is off */
	struct verify_merkle *merkle; /* NULL unless asked for */
};

struct verify_hasher *verify_hasher_new(int64_t git_size)
{
	struct verify_hasher *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->sha256 = EVP_MD_CTX_new();
	if (!h->sha256 || !EVP_DigestInit_ex(h->sha256, EVP_sha256(), NULL))
		goto fail;
	if (git_size >= 0) {
		char hdr[32];
		int n = snprintf(hdr, sizeof(hdr), "blob %" PRId64, git_size);
		h->sha1 = EVP_MD_CTX_new();
		/* the header's NUL terminator is part of what git hashes */
		if (!h->sha1 || !EVP_DigestInit_ex(h->sha1, EVP_sha1(), NULL) ||
		    !EVP_DigestUpdate(h->sha1, hdr, (size_t)n + 1))
			goto fail;
	}
	return h;
fail:
	verify_hasher_free(h);
	return NULL;
}

void verify_hasher_update(struct verify_hasher *h, const void *data, size_t n)
{
	/* EVP_DigestUpdate of software digests cannot fail on a valid context */
	EVP_DigestUpdate(h->sha256, data, n);
	if (h->sha1)
		EVP_DigestUpdate(h->sha1, data, n);
	if (h->merkle)
		verify_merkle_update(h->merkle, data, n);
}

int verify_hasher_want_merkle(struct verify_hasher *h, int piece_size)
{
	verify_merkle_free(h->merkle);
	h->merkle = verify_merkle_new(piece_size);
	return h->merkle ? 0 : -1;
}

struct verify_merkle *verify_hasher_merkle(struct verify_hasher *h)
{
	return h->merkle;
}

void verify_hasher_final(struct verify_hasher *h, char sha256[65], char git_oid[41])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	EVP_DigestFinal_ex(h->sha256, md, &len);
	util_hex(md, 32, sha256);
	if (git_oid) {
		git_oid[0] = '\0';
		if (h->sha1) {
			EVP_DigestFinal_ex(h->sha1, md, &len);
			util_hex(md, 20, git_oid);
		}
	}
}

void verify_hasher_free(struct verify_hasher *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->sha256);
	EVP_MD_CTX_free(h->sha1);
	verify_merkle_free(h->merkle);
	free(h);
}

static enum hm_err errno_err(int e)
{
	return e == ENOSPC || e == EDQUOT ? HM_ERR_NOSPC : e == ENOMEM ? HM_ERR_NOMEM : HM_ERR_IO;
}

enum hm_err verify_file(struct hm_ctx *ctx, const char *path, int want_git,
			char sha256[65], char git_oid[41], uint64_t *size)
{
	enum hm_err err = HM_OK;
	struct verify_hasher *h = NULL;
	unsigned char *buf = NULL;
	uint64_t total = 0;
	struct stat sb;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hm_fail(ctx, errno_err(errno), "cannot open '%s': %s", path, strerror(errno));
	if (fstat(fd, &sb) < 0) {
		err = hm_fail(ctx, HM_ERR_IO, "cannot stat '%s': %s", path, strerror(errno));
		goto out;
	}
	buf = malloc(VERIFY_CHUNK);
	h = verify_hasher_new(want_git ? (int64_t)sb.st_size : -1);
	if (!buf || !h) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory hashing '%s'", path);
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf, VERIFY_CHUNK);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			err = hm_fail(ctx, HM_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		verify_hasher_update(h, buf, (size_t)r);
		total += (uint64_t)r;
		if (hm_cancelled(ctx)) {
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted while hashing '%s'", path);
			goto out;
		}
	}
	/* the git header promised st_size bytes; a file that changed under us
	 * would give a digest of nothing that exists */
	if (want_git && total != (uint64_t)sb.st_size) {
		err = hm_fail(ctx, HM_ERR_CORRUPT, "'%s' changed size while being hashed", path);
		goto out;
	}
	verify_hasher_final(h, sha256, git_oid);
	if (size)
		*size = total;
out:
	verify_hasher_free(h);
	free(buf);
	close(fd);
	return err;
}

enum hm_err verify_hash_range(struct hm_ctx *ctx, int fd, struct verify_hasher *h,
			      uint64_t off, uint64_t n)
{
	enum hm_err err = HM_OK;
	size_t cap = n < VERIFY_CHUNK ? (size_t)n : VERIFY_CHUNK;
	unsigned char *buf;

	if (n == 0)
		return HM_OK;
	buf = malloc(cap);
	if (!buf)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory hashing a range");
	while (n) {
		size_t want = n < cap ? (size_t)n : cap;
		ssize_t r = pread(fd, buf, want, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			err = hm_fail(ctx, HM_ERR_IO, "cannot read at offset %" PRIu64 ": %s", off,
				      strerror(errno));
			goto out;
		}
		if (r == 0) {
			err = hm_fail(ctx, HM_ERR_CORRUPT, "file ends at offset %" PRIu64
				      " before the range does", off);
			goto out;
		}
		verify_hasher_update(h, buf, (size_t)r);
		off += (uint64_t)r;
		n -= (uint64_t)r;
		if (hm_cancelled(ctx)) {
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted while hashing");
			goto out;
		}
	}
out:
	free(buf);
	return err;
}
