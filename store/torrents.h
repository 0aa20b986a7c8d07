/* torrents.h - BitTorrent v2 torrents of blobs, and which repos list a blob
 * (torrents.c; serve --p2p, pull --p2p). */
#ifndef STORE_TORRENTS_H
#define STORE_TORRENTS_H

#include "store.h"

/* The stored torrent of a blob for a piece size (0: any; *buf malloc'd,
 * the caller's); *found = 0 when none was made yet. */
enum hm_err store_torrent_get(struct hm_ctx *ctx, struct store *st, const char *sha256, int piece_size,
			      unsigned char **buf, size_t *len, char info_hash[65], int *found) HM_MUST_CHECK;
/* Records (or replaces) the torrent of a blob; written at once. */
enum hm_err store_torrent_put(struct hm_ctx *ctx, struct store *st, const char *sha256, int piece_size,
			      const unsigned char *buf, size_t len, const char *info_hash) HM_MUST_CHECK;
/* The repos ("type:name") whose stored revisions list blob sha256, sorted;
 * none when no revision lists it. Free with store_strings_free. With
 * needs_token non-NULL, *needs_token gets a malloc'd array (the caller's,
 * NULL when n is 0) saying which of them were pulled with a token from a
 * gated or private upstream (store_repo_set_needs_token). */
enum hm_err store_blob_repos(struct hm_ctx *ctx, struct store *st, const char *sha256, char ***repos,
			     size_t *n, unsigned char **needs_token) HM_MUST_CHECK;
/* Records whether the repo's last pull needed a token (its hub said gated
 * or private, or did not say public, and a token was sent). A repo not in
 * the index is left alone. */
enum hm_err store_repo_set_needs_token(struct hm_ctx *ctx, struct store *st, const char *type, const char *name,
				       int needs) HM_MUST_CHECK;
/* *needs gets 1 when the repo's last pull needed a token (see above), 0
 * when it did not or the repo is not in the index. */
enum hm_err store_repo_needs_token(struct hm_ctx *ctx, struct store *st, const char *type, const char *name,
				   int *needs) HM_MUST_CHECK;
void store_strings_free(char **v, size_t n);
/* The blobs with a stored torrent of this piece size (0: any) that a stored
 * revision lists (*sha malloc'd, the caller's). */
enum hm_err store_torrents_listed(struct hm_ctx *ctx, struct store *st, int piece_size, char (**sha)[65],
				  size_t *n) HM_MUST_CHECK;

#endif
