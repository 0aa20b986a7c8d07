/* verify.h - digests (SHA-256, git blob SHA-1) through OpenSSL EVP. */
#ifndef VERIFY_H
#define VERIFY_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"

/* Streaming digest of a file's content: always SHA-256, and optionally the
 * git blob SHA-1 (sha1("blob <size>\0" + content)), which needs the size up
 * front. */
struct verify_hasher;

/* Returns NULL when out of memory. git_size < 0 disables the git digest. */
struct verify_hasher *verify_hasher_new(int64_t git_size);
void verify_hasher_update(struct verify_hasher *h, const void *data, size_t n);
/* Finishes: writes lowercase hex into sha256 (65) and, if enabled, git_oid (41). */
void verify_hasher_final(struct verify_hasher *h, char sha256[65], char git_oid[41]);
void verify_hasher_free(struct verify_hasher *h);

/* Hashes a whole file (streaming, constant memory). want_git: also the git oid. */
enum hm_err verify_file(struct hm_ctx *ctx, const char *path, int want_git,
			char sha256[65], char git_oid[41], uint64_t *size) HM_MUST_CHECK;
/* Hashes a byte range [off, off+n) of an open file into h (pread, constant memory). */
enum hm_err verify_hash_range(struct hm_ctx *ctx, int fd, struct verify_hasher *h,
			      uint64_t off, uint64_t n) HM_MUST_CHECK;

/* Hashing a file while it is written, on a thread of its own that reads
 * back (pread) what the writer reports as written. */
struct verify_follower;
/* Starts following fd (duplicated: the caller may close its own). NULL when
 * out of memory or threads. */
struct verify_follower *verify_follower_start(int fd);
/* The file now holds at least `written` bytes from offset 0. */
void verify_follower_advance(struct verify_follower *f, uint64_t written);
/* Waits until the first `size` bytes are hashed, writes the SHA-256 and
 * frees f (whatever the result). */
enum hm_err verify_follower_finish(struct hm_ctx *ctx, struct verify_follower *f, uint64_t size,
				   char sha256[65]) HM_MUST_CHECK;
/* Stops and frees without a result; NULL is fine. */
void verify_follower_abort(struct verify_follower *f);

/* The BitTorrent v2 merkle tree of a file (merkle.c), fed its bytes in
 * order: 16 KiB block hashes, the piece layer for piece_size (a power of two,
 * at least 16 KiB) and the pieces root. NULL on a bad piece size or out of
 * memory. */
struct verify_merkle;
struct verify_merkle *verify_merkle_new(int piece_size);
void verify_merkle_update(struct verify_merkle *m, const void *data, size_t n);
/* Finishes (no more updates): root gets the pieces root; *layer the piece
 * layer (npieces x 32 bytes, owned by m, valid until verify_merkle_free),
 * NULL with *len 0 for a file of one piece or less. -1 for an empty file
 * or when out of memory. May be called again. */
int verify_merkle_final(struct verify_merkle *m, unsigned char root[32], const unsigned char **layer, size_t *len);
void verify_merkle_free(struct verify_merkle *m);

/* Also computes the v2 merkle tree (piece_size as verify_merkle_new) in the
 * same pass as the SHA-256; -1 when out of memory or a bad piece size. Call
 * before the first update. */
int verify_hasher_want_merkle(struct verify_hasher *h, int piece_size);
/* The tree of the hashed bytes (after verify_hasher_final), NULL when not
 * asked for; owned by h. */
struct verify_merkle *verify_hasher_merkle(struct verify_hasher *h);

#endif
