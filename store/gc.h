/* gc.h - garbage collection of a store (gc.c; `hubmirror gc`). */
#ifndef STORE_GC_H
#define STORE_GC_H

#include "store.h"

/* One thing gc removed (or with dry_run would remove), or kept and why. */
struct store_gc_item {
	const char *kind;       /* "blob" (unreferenced), "orphan" (blob file without a row),
				   "partial" (a download's .part/.state), "scratch" (tmp/convert-*, tmp/run),
				   "lock" (a lock file left alone) */
	const char *name;       /* path relative to the store */
	uint64_t bytes;
	int removed;            /* 1: removed (or would be); 0: kept */
	const char *why;        /* why it goes or stays, in words */
};
struct store_gc_opts {
	int dry_run;            /* remove nothing; report what would go */
	int force;              /* collect even when the index knows no revision */
	int64_t keep_partials_s; /* keep partial downloads written to within this many seconds
				   (a later pull resumes them); 0 removes every unused one */
	void (*on_item)(void *ud, const struct store_gc_item *it); /* may be NULL */
	void *ud;
};
struct store_gc_result {
	uint64_t blobs_removed, bytes_removed;      /* blob files, orphans included */
	uint64_t partials_removed, partial_bytes_removed; /* one per download (.part + .state) */
	uint64_t scratch_removed, scratch_bytes_removed;  /* interrupted conversions, engine checkouts */
	uint64_t blobs_kept, bytes_kept;            /* unreferenced, kept: another process has the store open */
	uint64_t orphans_kept;                      /* files without rows, not touched for the same reason */
	uint64_t partials_young, partial_bytes_young; /* kept: younger than keep_partials_s */
	uint64_t partials_busy;                     /* kept: a running download holds them */
	char holders[160];                          /* who else had the store open (store_holders) */
};
/* Removes blob files and rows no file or artifact references, partial
 * downloads (tmp/<key>.part, tmp/<key>.state) whose lock is free and that
 * are older than o->keep_partials_s, the debris of interrupted conversions
 * and stale lock files; r counts what went and what stayed, and o->on_item
 * hears each item. While another process has the store open, unreferenced
 * blobs younger than an hour and files without rows stay (a pull may be
 * about to record them). Refuses (HM_ERR_DB, nothing removed) when the
 * index knows no revision and recorded no transfer (pull, import) but blobs
 * exist, unless o->force: that is what a lost, rebuilt or replaced index
 * looks like (after 'rm' of all that was pulled, the transfers stay), and
 * gc would delete everything
 * (while another process has the store open - a first pull - blobs are
 * left alone instead, and the rest collected). */
enum hm_err store_gc(struct hm_ctx *ctx, struct store *st, const struct store_gc_opts *o,
		     struct store_gc_result *r) HM_MUST_CHECK;

#endif
