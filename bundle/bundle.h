/* bundle.h - offline bundles: a tar archive (libarchive; plain, gzip or
 * zstd) holding a manifest and the blobs of stored revisions, each blob once.
 *
 * Layout, in this order:
 *   hubmirror-bundle.json        the manifest (first entry)
 *   blobs/sha256/<64 hex>        one regular file per distinct blob
 * Import treats the archive as hostile: every name, type, size and digest is
 * checked before anything is recorded. Nothing in here touches the network. */
#ifndef BUNDLE_H
#define BUNDLE_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"
#include "../store/store.h"
#include "../store/index.h"

#define BUNDLE_MANIFEST_NAME "hubmirror-bundle.json"
#define BUNDLE_FORMAT_VERSION 1
/* The manifest is read into memory: it may not be larger than this. */
#define BUNDLE_MANIFEST_MAX ((size_t)64 << 20)

/* One revision of one repo in a bundle. */
struct bundle_rev {
	char type[16];            /* "model" | "dataset" */
	char *repo;               /* "org/name", validated */
	char commit[41];
	char **refs;              /* ref names pointing at commit (validated); may be empty */
	size_t nrefs;
	struct store_file *files; /* validated paths, digests */
	size_t nfiles;
};

/* One distinct blob of a bundle (derived from the files). */
struct bundle_blob {
	char sha256[65];
	uint64_t size;
	char git_oid[41];         /* content git oid when a non-LFS file names one, else "" */
};

struct bundle_manifest {
	int version;
	int64_t created_at;
	struct bundle_rev *revs;
	size_t nrevs;
	struct bundle_blob *blobs; /* sorted by sha256, each once */
	size_t nblobs;
	uint64_t blob_bytes;       /* sum of the distinct blobs' sizes */
};

/* Parses and validates a manifest (untrusted; len is capped by the caller at
 * BUNDLE_MANIFEST_MAX): version, repo ids, commits, refs, safe paths, hex
 * digests, one size per blob, no path twice in a revision, no revision twice.
 * On success *out is owned by the caller (bundle_manifest_free). */
enum hm_err bundle_manifest_parse(struct hm_ctx *ctx, const char *data, size_t len,
				  struct bundle_manifest **out) HM_MUST_CHECK;
/* Serializes m as JSON (caller frees); NULL when out of memory. */
char *bundle_manifest_dump(const struct bundle_manifest *m);
/* Index of blob sha256 in m->blobs, or -1. */
long bundle_manifest_find_blob(const struct bundle_manifest *m, const char *sha256);
/* Accepts NULL. */
void bundle_manifest_free(struct bundle_manifest *m);

/* ---- export ---- */

/* What to export: a repo and a revision (ref, commit or prefix; NULL = the
 * ref main, else the latest stored), or every stored revision when all. */
struct bundle_spec {
	const char *type;
	const char *repo;
	const char *rev;
	int all;                   /* every stored revision of repo */
};

enum bundle_compress { BUNDLE_TAR, BUNDLE_GZIP, BUNDLE_ZSTD };

/* The compression an output name asks for (.tar, .tar.gz/.tgz,
 * .tar.zst/.tzst); -1 for any other name. */
int bundle_compress_by_name(const char *name);

struct bundle_export_result {
	size_t nrepos, nrevisions, nfiles, nblobs;
	uint64_t bytes;            /* blob bytes written */
};

/* Writes a bundle of the given revisions to path ("-" = stdout, fd 1).
 * A named file is written as path.tmp-PID and renamed into place at the end,
 * so a failed export leaves no partial archive. */
enum hm_err bundle_export(struct hm_ctx *ctx, struct store *st, const struct bundle_spec *specs, size_t n,
			  const char *path, enum bundle_compress comp,
			  struct bundle_export_result *res) HM_MUST_CHECK;

/* ---- import ---- */

struct bundle_import_rev {
	char type[16];
	char *repo;
	char commit[41];
	int recorded;              /* 0: already stored exactly so (nothing done) */
};

struct bundle_import_result {
	struct bundle_import_rev *revs;
	size_t nrevs;
	size_t nrepos, nrecorded;
	size_t blobs_added, blobs_present;
	uint64_t bytes;            /* blob bytes read from the archive */
};

/* Told of each blob an import adds, with the BitTorrent v2 merkle tree
 * computed in the same pass as its SHA-256 (piece layer of piece_size(size)
 * pieces; NULL/0 for a blob of one piece), so that serve --p2p need not read
 * it again to make its torrent. tree's failure is the hook's own business:
 * the torrent is then made lazily. */
struct bundle_tree_hook {
	int (*piece_size)(uint64_t size);
	void (*tree)(void *arg, struct store *st, const char *sha256, uint64_t size, const unsigned char root[32],
		     const unsigned char *layer, size_t layer_len);
	void *arg;
};

/* Imports a bundle from path ("-" = stdin, fd 0); label names the source in
 * the downloads rows ("bundle:<label>"). Every blob is hashed while it is
 * streamed into the store's tmp/ and adopted only when its SHA-256 (and git
 * oid, for regular files) match the manifest; revisions are recorded only
 * after every blob of the bundle is in the store. On error no revision is
 * recorded (blobs adopted before the failure stay unreferenced until gc) and
 * ctx->errmsg names the entry and the problem. hook may be NULL. Release
 * res with bundle_import_result_release whatever the return. */
enum hm_err bundle_import(struct hm_ctx *ctx, struct store *st, const char *path, const char *label,
			  const struct bundle_tree_hook *hook, struct bundle_import_result *res) HM_MUST_CHECK;
/* The same from memory (tests, fuzzing). */
enum hm_err bundle_import_memory(struct hm_ctx *ctx, struct store *st, const void *data, size_t len,
				 const char *label, const struct bundle_tree_hook *hook,
				 struct bundle_import_result *res) HM_MUST_CHECK;
void bundle_import_result_release(struct bundle_import_result *res);

#endif
