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
 * in bounded memory, never loaded whole. Nothing here prints or exits.
 * The reader itself (the pickle, one file, sets) is for formats/ and its
 * tests: torch-int.h. */
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

/* Converts src (a pytorch_model.bin.index.json, a directory holding it or
 * pytorch_model.bin, or a single checkpoint file) into out_dir (created):
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
