/* artifacts.h - conversions of stored revisions (artifacts.c; `hubmirror convert`). */
#ifndef STORE_ARTIFACTS_H
#define STORE_ARTIFACTS_H

#include "store.h"

/* One conversion, as recorded. Strings are owned (store_artifact_release). */
struct store_artifact {
	int64_t id;             /* the row */
	char *repo_type, *repo;
	char commit[41];        /* the source revision */
	char *format;           /* "gguf" */
	char *options;          /* canonical options, e.g. "type=q8_0 conv=1" */
	char sha256[65];        /* the output's blob */
	uint64_t size;
	int64_t created_at;     /* unix seconds */
};
/* The artifact of (revision, format, options) when recorded and its blob is
 * present (*found = 1; out is the caller's to release). HM_ERR_NOT_FOUND
 * when the revision is not stored. */
enum hm_err store_find_artifact(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				const char *commit, const char *format, const char *options,
				struct store_artifact *out, int *found) HM_MUST_CHECK;
/* Records (or replaces) the artifact of (revision, format, options); the
 * blob must have been adopted (this flushes queued rows first). Removing
 * the revision (rm) removes its artifacts; gc keeps blobs artifacts use. */
enum hm_err store_record_artifact(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				  const char *commit, const char *format, const char *options, const char *sha256,
				  uint64_t size) HM_MUST_CHECK;
/* A repo's artifacts over all its revisions, newest first (*out freed with store_artifacts_free). */
enum hm_err store_list_artifacts(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				 struct store_artifact **out, size_t *n) HM_MUST_CHECK;
void store_artifact_release(struct store_artifact *a);
void store_artifacts_free(struct store_artifact *v, size_t n);
/* A fresh path under the store's tmp/ to build an artifact in (then
 * store_blob_adopt it): tmp/convert-<pid>-<random><suffix>. */
enum hm_err store_artifact_tmp(struct hm_ctx *ctx, struct store *st, const char *suffix, char *buf,
			       size_t len) HM_MUST_CHECK;
/* Copies blob sha256 to dst (a writable file of the user's; reflinked where
 * the filesystem can), atomically: temp beside dst, fsync, rename. */
enum hm_err store_artifact_export(struct hm_ctx *ctx, struct store *st, const char *sha256,
				  const char *dst) HM_MUST_CHECK;

#endif
