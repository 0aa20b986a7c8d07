/* mirror.h - the jobs that tie fetch, verify and store together: pull a
 * revision into the store, re-verify stored blobs, repair them. (cmd/ parses
 * and prints; these do the work. They live apart from fetch/ and store/
 * because neither of those may know the other.) */
#ifndef MIRROR_H
#define MIRROR_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"
#include "../fetch/fetch.h"
#include "../store/store.h"
#include "../convert/convert.h"
#include "../store/checkout.h"
#include "../store/index.h"

struct mirror_pull_opts {
	const char *type;            /* "model" | "dataset" */
	const char *repo;
	const char *revision;        /* NULL = main */
	const char *const *include;  /* globs; a file must match one (if any given) */
	size_t ninclude;
	const char *const *exclude;  /* globs; a matching file is skipped */
	size_t nexclude;
	const char *const *only;     /* exact paths (repair); NULL = all */
	size_t nonly;
	int force;                   /* skip the free-space check */
	/* Optional, for a server: a listing already fetched for `commit`
	 * (skips resolving and listing again), and byte progress per file. */
	const char *commit;
	const struct fetch_entry *entries;
	size_t nentries;
	void (*on_progress)(void *ud, const char *path, uint64_t contiguous);
	void *progress_ud;
	/* Optional (pull --p2p): LFS blobs come from this BitTorrent swarm
	 * first, torrents from the endpoint (a hubmirror serve --p2p); what
	 * the swarm cannot deliver is downloaded over HTTP as usual. */
	struct mirror_swarm *swarm;
	/* Resolve and list only: the result says which files are present;
	 * nothing is downloaded or recorded. */
	int dry_run;
	/* Offline (HF_HUB_OFFLINE=1, --offline): the revision and its files come
	 * from the store only; what is not there is an error naming it. */
	int offline;
	/* The revision is a pinned commit (a lockfile): when the store lists it
	 * with every selected file, no network is used. */
	int prefer_store;
};

struct mirror_file {
	char *path;
	uint64_t size;
	char sha256[65];     /* "" when the download failed */
	char git_oid[41];
	int lfs;
	int downloaded;      /* transferred in this run */
	int present;         /* in the store before this run */
	uint64_t bytes;      /* bytes over the wire in this run */
	enum hm_err err;
	char *errmsg;        /* NULL when ok */
};

struct mirror_pull_result {
	char commit[41];
	struct mirror_file *files;
	size_t nfiles;
	uint64_t bytes_downloaded, bytes_total;
	size_t nfailed, ndownloaded;
	double seconds;
	/* Set when the hub could not be reached and the stored revision was used
	 * instead (as `hf download` does): why, in one line. */
	char stale[512];
};

/* Pulls a revision: resolves it, lists it, downloads what the store lacks
 * (deduplicated, locked against concurrent pulls, verified), and records the
 * revision once every selected file is in the store. Before the first byte
 * it refuses (HM_ERR_NOSPC, with the numbers) a download the store's
 * filesystem has no room for, unless o->force. A disk that fills up anyway
 * gives HM_ERR_NOSPC with one message naming the store. On error the result
 * still says which files failed, each with its own message. Release the
 * result with mirror_pull_result_release whatever the return. */
enum hm_err mirror_pull(struct hm_ctx *ctx, struct store *st, struct fetch_client *fc,
			const struct mirror_pull_opts *o, struct mirror_pull_result *res) HM_MUST_CHECK;
void mirror_pull_result_release(struct mirror_pull_result *res);
/* Records res's files as revision commit of repo, under ref (a branch or
 * tag; NULL: the bare commit), as a pull does once they are all stored. */
enum hm_err mirror_record_result(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				 const char *commit, const char *ref, const struct mirror_pull_result *res) HM_MUST_CHECK;

struct mirror_problem {
	const char *repo_type, *repo, *commit, *path, *sha256;
	const char *problem;    /* "missing" | "corrupt" */
	const char *conversion; /* a stored conversion's options ("type=q8_0 conv=1"; path is
				   then "gguf <options>"), NULL for a file of the revision */
	const char *checkout;   /* a recorded checkout (its dir) whose copy of path holds
				   other bytes than the blob ("stale"), else NULL */
};
/* Re-hashes the blobs of the given stored repos ("type:name" or "name";
 * all when n == 0) and of their stored conversions, calling on_problem for
 * each bad one (a blob shared by several files is hashed once). *checked
 * counts files and conversions checked; *nbad bad ones. */
enum hm_err mirror_verify(struct hm_ctx *ctx, struct store *st, const char *const *repos, size_t n,
			  void (*on_problem)(void *ud, const struct mirror_problem *p), void *ud,
			  size_t *checked, size_t *nbad) HM_MUST_CHECK;

/* Hashes every blob file the index does not know and indexes those whose
 * content matches their name (store_rebuild_index); on_bad (may be NULL)
 * hears of each that does not. Open the store with STORE_REBUILD. */
enum hm_err mirror_rebuild_index(struct hm_ctx *ctx, struct store *st, void (*on_bad)(void *ud, const char *path),
				 void *ud, struct store_rebuild_result *res) HM_MUST_CHECK;

/* A stored revision's conversion, as stored. */
struct mirror_artifact {
	int64_t id;             /* its artifacts row */
	char sha256[65];        /* its blob */
	char path[4096];        /* the blob's path (in the local cache for an S3 store) */
	const char *type;       /* the tensor type ("f16", "q8_0" ...; static) */
	char options[64];       /* the cache key it is recorded under */
	uint64_t size;
	int cached;             /* found stored (res is then empty) */
	struct conv_result res; /* the conversion's details when made now */
};

/* Converts stored revision (type, repo, commit) to GGUF as o says, stores
 * the output as a blob and records it as the revision's artifact for these
 * options; *out is exactly that artifact. A recorded artifact whose blob is
 * present with its size is returned as is (out->cached) unless force. No
 * custom name (o->name): those are not stored (mirror_convert_file). */
enum hm_err mirror_convert(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			   const char *commit, const struct conv_options *o, int force,
			   struct mirror_artifact *out) HM_MUST_CHECK;
/* Converts stored revision (type, repo, commit) to a GGUF file at out_path
 * (not stored). */
enum hm_err mirror_convert_file(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				const char *commit, const struct conv_options *o, const char *out_path,
				struct conv_result *res) HM_MUST_CHECK;
/* The options string a conversion is recorded under (its cache key). */
void mirror_convert_options(const struct conv_options *o, char *buf, size_t len);

/* Checks out a stored revision into dir (store_checkout's layouts) after
 * making sure every blob is there (else HM_ERR_NOT_FOUND naming `verify
 * --repair`, nothing written). A new files tree is built in a temp dir
 * beside dir and renamed into place; an existing one (or an HF cache) is
 * updated file by file. A hard-linked checkout is recorded in the index. */
enum hm_err mirror_checkout(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			    const char *commit, const char *ref, const char *dir, enum store_layout layout,
			    int copy) HM_MUST_CHECK;
/* Reports ("stale", with p->checkout) every file of a recorded hard-linked
 * checkout (of repo; all when type and repo are NULL) that shares neither
 * the blob's inode nor its content. Trees removed since are skipped. */
enum hm_err mirror_verify_checkouts(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				    void (*on_problem)(void *ud, const struct mirror_problem *p), void *ud,
				    size_t *checked, size_t *nbad) HM_MUST_CHECK;
/* Links the recorded hard-linked checkouts of a revision to its blobs again
 * (after a repair replaced a blob); *nrelinked counts the trees. */
enum hm_err mirror_relink_checkouts(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				    const char *commit, size_t *nrelinked) HM_MUST_CHECK;

/* Makes a stored conversion again from its source revision (after verify
 * found its blob corrupt or missing: the bad blob is removed first), under
 * the same options. HM_ERR_USAGE for options it cannot read. */
enum hm_err mirror_convert_repair(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				  const char *commit, const char *options, struct mirror_artifact *out) HM_MUST_CHECK;

/* Parses "name", "org/name", "model:org/name", "dataset:org/name" or
 * "datasets/org/name" into type and repo (pointing into buf). */
enum hm_err mirror_parse_repo(struct hm_ctx *ctx, const char *arg, const char *default_type,
			      char *buf, size_t len, const char **type, const char **repo) HM_MUST_CHECK;

/* ---- the BitTorrent v2 swarm (swarm.c, over p2p/) ---- */

struct mirror_swarm;

#define MIRROR_SWARM_STALL_S 30.0

struct mirror_swarm_opts {
	const char *listen;        /* peer address, libtorrent style "0.0.0.0:6881" */
	int64_t upload_rate;       /* bytes/s to all peers; 0 = no cap */
	int origin;                /* the mirror: choke for spread (anti-leech) */
	int super_seed;            /* the mirror super-seeds (p2p_opts.super_seed) */
	double stall;              /* seconds without progress before HTTP takes over (0: default) */
};
/* Starts a BitTorrent session (closed swarm: peers only from trackers).
 * *out is the caller's (mirror_swarm_free). */
enum hm_err mirror_swarm_new(struct hm_ctx *ctx, const struct mirror_swarm_opts *o,
			     struct mirror_swarm **out) HM_MUST_CHECK;
void mirror_swarm_free(struct mirror_swarm *sw);
int mirror_swarm_port(struct mirror_swarm *sw);
/* Payload bytes to and from peers since start, peers connected, torrents. */
void mirror_swarm_totals(struct mirror_swarm *sw, uint64_t *uploaded, uint64_t *downloaded, int *peers,
			 size_t *torrents);
/* The piece size of a blob's torrent (p2p_piece_size), for the tree a pull
 * computes while it writes the blob (fetch_job.merkle_piece). */
int mirror_torrent_piece_size(uint64_t size);
/* Records the torrent of blob sha256 made from the v2 merkle tree computed
 * while the blob was written and verified (root, piece layer: verify_merkle),
 * so serve --p2p never reads the blob to make it. */
enum hm_err mirror_torrent_from_tree(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size,
				     const unsigned char root[32], const unsigned char *layer,
				     size_t layer_len) HM_MUST_CHECK;
/* The torrent of stored blob sha256: from the index, else made now (reading
 * the blob once: a store from before the tree was kept) and recorded. *buf
 * malloc'd, the caller's. */
enum hm_err mirror_blob_torrent(struct hm_ctx *ctx, struct store *st, const char *sha256, unsigned char **buf,
				size_t *len, char ihash[65]) HM_MUST_CHECK;
/* Seeds a stored blob, read in place; tracker: an announce URL to add (may be NULL). */
enum hm_err mirror_swarm_seed(struct hm_ctx *ctx, struct mirror_swarm *sw, struct store *st, const char *sha256,
			      const unsigned char *buf, size_t len, const char *tracker) HM_MUST_CHECK;
/* Seeds a stored blob whose torrent the index holds (nothing when it does not). */
enum hm_err mirror_swarm_seed_stored(struct hm_ctx *ctx, struct mirror_swarm *sw, struct store *st,
				     const char *sha256) HM_MUST_CHECK;
/* Keeps seeding for seconds (stops early when cancelled). */
void mirror_swarm_linger(struct hm_ctx *ctx, struct mirror_swarm *sw, double seconds);

/* One blob to take from the swarm. */
struct mirror_swarm_item {
	const char *sha256;        /* in */
	uint64_t size;             /* in */
	const char *part_path;     /* in: the HTTP download's part file and resume */
	const char *state_path;    /*   state (fetch_job): a stalled swarm download
				    *   hands its verified pieces over (may be NULL) */
	int done;                  /* out: in the store now (verified) */
	int present;               /* out: it already was */
	uint64_t bytes_peers;      /* out: payload bytes from peers */
	uint64_t bytes_handed;     /* out: verified bytes handed over to HTTP */
	double seconds;
	int64_t started_at;
	enum hm_err err;
	char errmsg[256];          /* why it was left to HTTP ("" when done) */
};
/* Takes blobs from the swarm into the store: each one's torrent from the
 * endpoint of fc (skipped when the endpoint has none), all downloaded at
 * once, SHA-256-checked, adopted, then seeded from the store. A blob is given
 * up (done = 0), for the caller to download over HTTP, when the whole swarm
 * made no progress for the stall time (tracker down, no peers), or the blob
 * alone for four times that (a mirror that is busy with the other blobs is
 * waited for); its verified pieces then go to part_path/state_path, so that
 * HTTP fetches only the rest. Errors only for the store or a cancel. */
enum hm_err mirror_swarm_fetch(struct hm_ctx *ctx, struct mirror_swarm *sw, struct store *st,
			       struct fetch_client *fc, struct mirror_swarm_item *items, size_t n) HM_MUST_CHECK;

#endif
