/* sync.h - provisioning lab machines from a manifest and its lockfile. */
#ifndef MIRROR_SYNC_H
#define MIRROR_SYNC_H

#include "mirror.h"
#include "../store/checkout.h"

/* One line of a manifest: REPO[@REV] [type=..] [include=G,..] [exclude=G,..] [convert=T] [smoke=yes]. */
struct sync_entry {
	int line;
	const char *type;        /* "model" | "dataset" (static) */
	char *repo, *rev;        /* rev NULL = main */
	char **include, **exclude;
	size_t ninclude, nexclude;
	char *convert;           /* NULL if none */
	int smoke;
};

struct sync_manifest {
	struct sync_entry *v;
	size_t n, cap;
};

/* Parses a manifest (name is used in messages: "NAME:LINE: ..."). Every
 * problem is HM_ERR_BAD_INPUT naming the line. */
enum hm_err sync_manifest_parse(struct hm_ctx *ctx, const char *name, const char *text, size_t len,
				struct sync_manifest *m) HM_MUST_CHECK;
enum hm_err sync_manifest_load(struct hm_ctx *ctx, const char *path, struct sync_manifest *m) HM_MUST_CHECK;
void sync_manifest_free(struct sync_manifest *m);

struct sync_locked_file {
	char *path;
	uint64_t size;
	char sha256[65];
};

struct sync_locked {
	char *repo;
	const char *type;
	char commit[41];
	struct sync_locked_file *files;
	size_t nfiles;
};

struct sync_lock {
	struct sync_locked *v;
	size_t n;
};

enum hm_err sync_lock_load(struct hm_ctx *ctx, const char *path, struct sync_lock *l) HM_MUST_CHECK;
void sync_lock_free(struct sync_lock *l);

struct sync_opts {
	const char *to;          /* NULL: no checkout */
	enum store_layout layout;
	/* convert= / smoke= of an entry, run after its pull by the caller (the
	 * command layer owns conversion and the engine's smoke test): returns 0
	 * when all passed, and a short status in verdict. NULL: such entries fail
	 * as unsupported. */
	int (*post)(void *ud, const struct sync_entry *e, const char *commit, char *verdict, size_t vlen);
	void *post_ud;
	struct mirror_swarm *swarm; /* sync --p2p: blobs from the lab's swarm (NULL: HTTP only) */
	int offline;             /* only the store (HF_HUB_OFFLINE=1, --offline) */
};

struct sync_result_model {
	char status[32];         /* "up to date" | "pulled" | "failed" */
	char detail[512];
	char commit[41];
	struct sync_locked_file *files;
	size_t nfiles;
	uint64_t bytes, bytes_downloaded;
	size_t files_downloaded;
	int checked_out;
};

struct sync_result {
	struct sync_result_model *v; /* one per manifest entry, same order */
	size_t n, nfailed;
};

/* Syncs every entry (a failed one does not stop the others); with lock,
 * installs exactly what it pins. Returns an error only for what stops the
 * whole run (interrupt); per-model failures are in r. */
enum hm_err sync_run(struct hm_ctx *ctx, struct store *st, struct fetch_client *fc, const struct sync_manifest *m,
		     const struct sync_lock *lock, const struct sync_opts *so, struct sync_result *r) HM_MUST_CHECK;
void sync_result_release(struct sync_result *r);
/* Writes the lockfile atomically: each model's commit and every file's path, size, SHA-256. */
enum hm_err sync_lock_write(struct hm_ctx *ctx, const char *path, const struct sync_manifest *m,
			    const struct sync_result *r) HM_MUST_CHECK;

#endif
