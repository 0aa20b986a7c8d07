/* checkout.h - materializing stored revisions as plain trees or an HF cache, and
 * the record of those checkouts (checkout.c, checkouts.c). */
#ifndef STORE_CHECKOUT_H
#define STORE_CHECKOUT_H

#include "store.h"

enum store_layout { STORE_LAYOUT_FILES, STORE_LAYOUT_HF_CACHE };
/* Materializes a revision under dir. FILES: dir/<path> (hard links, copies
 * across filesystems; existing files with other content are replaced).
 * HF_CACHE: dir/{models|datasets}--org--name/{blobs/<etag>, snapshots/<commit>/<path>
 * as relative symlinks ../../blobs/<etag>, refs/<ref>} where etag is the
 * sha256 for LFS files and the git oid otherwise; ref may be NULL.
 * Hard-linked files share the blob's inode: editing one in place (after a
 * chmod) would change the store, which verify reports. With copy set, every
 * file is an independent writable copy (a reflink where the filesystem can). */
enum hm_err store_checkout(struct hm_ctx *ctx, struct store *st, const char *type,
			   const char *repo, const char *commit, const char *ref,
			   const char *dir, enum store_layout layout, int copy) HM_MUST_CHECK;

/* A checkout of a stored revision, as recorded (mirror_checkout). */
struct store_checkout_info {
	char type[16];
	char *repo;
	char commit[41];
	char *dir;              /* absolute: the tree (files) or the HF_HUB_CACHE (hf-cache) */
	enum store_layout layout;
	int copy;               /* independent copies: nothing to keep in step */
};
/* Records a checkout of a stored revision into dir (absolute); a files
 * checkout replaces the record of an earlier one into the same dir.
 * HM_ERR_NOT_FOUND when the revision is not stored. */
enum hm_err store_record_checkout(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				  const char *commit, const char *dir, enum store_layout layout, int copy) HM_MUST_CHECK;
/* The recorded checkouts of a repo (type and repo NULL: of all), oldest
 * first; *out freed with store_checkouts_free. Removing a revision (rm)
 * forgets its checkouts. */
enum hm_err store_list_checkouts(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				 struct store_checkout_info **out, size_t *n) HM_MUST_CHECK;
void store_checkouts_free(struct store_checkout_info *v, size_t n);

#endif
