/* torch.h - PyTorch checkpoints (torch.save zip files: pytorch_model.bin,
 * sharded sets with pytorch_model.bin.index.json) read without Python, and
 * converted to safetensors.
 *
 * The pickle inside (data.pkl) is read by a restricted interpreter that
 * knows only what a state dict needs: ordered dicts, tensor rebuilds,
 * storages by persistent id, the dtypes in use. It never executes or imports
 * anything the file names; any other global (os.system, builtins.eval ...)
 * is refused with HM_ERR_BAD_INPUT. Every length, index and offset in the
 * file is checked before use; every failure names the file and the problem
 * in ctx->errmsg. Tensor bytes are streamed from the archive (libarchive)
 * in bounded memory, never loaded whole. Nothing here prints or exits. */
#ifndef FMT_TORCH_H
#define FMT_TORCH_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"
#include "formats.h"

#define FMT_PT_MAX_PICKLE (64u << 20)   /* data.pkl cap */
#define FMT_PT_MAX_TENSORS (1u << 20)   /* tensors per file */
#define FMT_PT_MAX_INDEX (64u << 20)    /* pytorch_model.bin.index.json cap */
#define FMT_PT_DEFAULT_SHARD 5000000000ull /* the Hub's "5GB" */

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

/* ---- memory-mapped views (for GGUF conversion) ---- */

/* Opens a checkpoint (fmt_pt_map_single: one .bin file; fmt_pt_map_index: a
 * pytorch_model.bin.index.json, shards found by resolve, NULL = beside it)
 * as a safetensors-style set whose tensors point straight into read-only
 * mappings of the zip files: torch.save stores entries uncompressed, so a
 * storage's bytes lie in the file as they are. On top of fmt_pt_open's
 * checks, the zip's central directory is read here: every entry's local
 * header must agree with it, lie before it and not overlap another; every
 * storage entry must be stored (not compressed) and pass its CRC-32
 * (checked here in one sequential pass, pages dropped behind it, so memory
 * stays bounded). Tensors keep their dtype and shape; views sharing a
 * storage share bytes. *out is the caller's (fmt_st_set_close). */
enum hm_err fmt_pt_map_single(struct hm_ctx *ctx, const char *path, struct fmt_st_set **out) HM_MUST_CHECK;
enum hm_err fmt_pt_map_index(struct hm_ctx *ctx, const char *index_path, fmt_st_resolve_fn resolve, void *ud,
			     struct fmt_st_set **out) HM_MUST_CHECK;

/* ---- conversion ---- */

struct fmt_pt_convert_opts {
	uint64_t max_shard_size;  /* bytes of tensor data per output file; 0 = 5 GB */
};

struct fmt_pt_convert_result {
	size_t tensors;
	size_t shards;            /* 1: model.safetensors, else model-0000N-of-0000M */
	uint64_t bytes;           /* tensor data written */
};

/* Converts src (anything fmt_pt_open_set takes) into out_dir (created):
 * model.safetensors, or when the data exceeds max_shard_size,
 * model-00001-of-0000M.safetensors ... plus model.safetensors.index.json
 * ({"metadata": {"total_size"}, "weight_map"}), as transformers writes
 * them. dtypes and shapes are kept; __metadata__ is {"format": "pt"};
 * tensors sharing a storage each get their own bytes. Memory stays bounded
 * (1 MiB buffers); a storage read by overlapping views is spooled to an
 * unlinked temp file in out_dir. Each file is written atomically; on error
 * the files this call wrote are removed. opts and res may be NULL. Emits
 * HM_EV_FILE_START/PROGRESS/FILE_DONE events; honours ctx->cancel. */
enum hm_err fmt_pt_to_safetensors(struct hm_ctx *ctx, const char *src, const char *out_dir,
				  const struct fmt_pt_convert_opts *opts,
				  struct fmt_pt_convert_result *res) HM_MUST_CHECK;

#endif
