/* torch-int.h - the PyTorch checkpoint reader, which only formats/ (and its
 * tests) use, and what torch.c (archive reading) shares with torch_convert.c. */
#ifndef FMT_TORCH_INT_H
#define FMT_TORCH_INT_H

#include "torch.h"

/* One tensor of a checkpoint. Strings are owned by the object that gave it. */
struct fmt_pt_tensor {
	const char *name;
	enum fmt_dtype dtype;            /* F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL */
	int ndim;
	uint64_t shape[FMT_MAX_DIMS];    /* PyTorch order, slowest first */
	uint64_t nelem;
	uint64_t nbytes;
	const char *storage;             /* storage key: the entry <archive>/data/<key> */
	uint64_t storage_numel;          /* elements of the storage, from the pickle */
	uint64_t offset;                 /* storage_offset, in elements */
	/* Filled by fmt_pt_open (0 from fmt_pt_pickle_parse): */
	uint64_t byte_offset;            /* where the tensor starts in its storage entry */
	uint64_t storage_bytes;          /* size of the storage entry */
	size_t entry;                    /* position of that entry in the archive */
	size_t shard;                    /* index of its file in a set */
};

/* ---- the pickle alone ---- */

struct fmt_pt_pickle;

/* Interprets a data.pkl (protocols 2-5) into its tensors, in dict order.
 * file names the checkpoint in messages. Does not look at storages beyond
 * their key and size. *out is the caller's (fmt_pt_pickle_free); NULL on
 * error. */
enum hm_err fmt_pt_pickle_parse(struct hm_ctx *ctx, const char *file, const void *data, size_t len,
				struct fmt_pt_pickle **out) HM_MUST_CHECK;
size_t fmt_pt_pickle_count(const struct fmt_pt_pickle *p);
const struct fmt_pt_tensor *fmt_pt_pickle_tensor(const struct fmt_pt_pickle *p, size_t i);
void fmt_pt_pickle_free(struct fmt_pt_pickle *p);

/* ---- one checkpoint file ---- */

struct fmt_pt;

/* Opens a torch.save zip file: lists the archive, reads data.pkl, checks
 * every tensor against its storage entry (present, big enough, one dtype
 * per storage, contiguous). The legacy (pre-1.6) format, big-endian
 * archives and compressed or encrypted entries are refused. *out is the
 * caller's (fmt_pt_close). */
enum hm_err fmt_pt_open(struct hm_ctx *ctx, const char *path, struct fmt_pt **out) HM_MUST_CHECK;
void fmt_pt_close(struct fmt_pt *pt);
const char *fmt_pt_path(const struct fmt_pt *pt);
/* Tensors in pickle (dict) order. */
size_t fmt_pt_count(const struct fmt_pt *pt);
const struct fmt_pt_tensor *fmt_pt_tensor(const struct fmt_pt *pt, size_t i);
const struct fmt_pt_tensor *fmt_pt_find(const struct fmt_pt *pt, const char *name);
/* Reads tensor i's bytes (little-endian, row-major) into buf, which holds
 * exactly its nbytes. Re-reads the archive up to the storage: for tests and
 * small tensors; conversion streams instead. */
enum hm_err fmt_pt_read(struct fmt_pt *pt, size_t i, void *buf, uint64_t len) HM_MUST_CHECK;

/* ---- sets (sharded or single) ---- */

struct fmt_pt_set;

/* path: a pytorch_model.bin.index.json (any *.bin.index.json), a directory
 * holding pytorch_model.bin.index.json or pytorch_model.bin, or a single
 * checkpoint file. Opens every shard and checks the weight_map: shard names
 * are plain file names beside the index, each listed tensor is in its
 * shard, every shard's tensors are listed, no name is in two shards.
 * *out is the caller's (fmt_pt_set_close). */
enum hm_err fmt_pt_open_set(struct hm_ctx *ctx, const char *path, struct fmt_pt_set **out) HM_MUST_CHECK;
/* The same from an index file whose shards are found by resolve (for
 * example blobs of a store); resolve NULL = beside the index. */
enum hm_err fmt_pt_open_index(struct hm_ctx *ctx, const char *index_path, fmt_st_resolve_fn resolve, void *ud,
			      struct fmt_pt_set **out) HM_MUST_CHECK;
void fmt_pt_set_close(struct fmt_pt_set *set);
size_t fmt_pt_set_nshards(const struct fmt_pt_set *set);
struct fmt_pt *fmt_pt_set_shard(const struct fmt_pt_set *set, size_t i);
/* Shard i's name as the index gives it (a single file: its base name). */
const char *fmt_pt_set_shard_name(const struct fmt_pt_set *set, size_t i);
/* Tensors of every shard, shard after shard (tensor->shard says which). */
size_t fmt_pt_set_count(const struct fmt_pt_set *set);
const struct fmt_pt_tensor *fmt_pt_set_tensor(const struct fmt_pt_set *set, size_t i);

/* Receives tensor bytes while an archive streams by: for each job in turn,
 * one call with data NULL, n 0 (the job starts), then its bytes in order. */
typedef enum hm_err (*fmt_pt_sink_fn)(void *ud, size_t job, const void *data, size_t n);

/* Streams the bytes of jobs[0..njobs) (tensors of pt, sorted by entry then
 * byte_offset) in one pass over the archive. Views of one storage that
 * overlap are served from a copy of the entry in an unlinked temp file in
 * spool_dir (NULL: $TMPDIR or /tmp). */
enum hm_err fmt_pt_stream(struct hm_ctx *ctx, struct fmt_pt *pt, const struct fmt_pt_tensor *const *jobs,
			  size_t njobs, const char *spool_dir, fmt_pt_sink_fn sink, void *ud) HM_MUST_CHECK;

/* Orders tensors for fmt_pt_stream: shard, entry, byte_offset, name. */
int fmt_pt_stream_order(const void *a, const void *b);

/* Copies at most 96 bytes of untrusted text for a message, control bytes as '?'. */
const char *fmt_pt_shown(const char *s, char *buf, size_t cap);

#endif
