/* formats.h - readers and writers of model checkpoint formats: safetensors
 * (single files and sharded sets) and GGUF v2/v3.
 *
 * Readers memory-map the file and validate every header byte before handing
 * anything out (the files are untrusted): a successful open means every
 * tensor's bytes lie inside the mapping. Tensor data is never copied.
 * The GGUF writer streams: declare everything first, then write tensor bytes
 * in order, in chunks of any size; it writes a temp file next to the target
 * and renames it into place on _finish (a crash leaves no half file).
 * What only formats/ (and its tests) use is in formats-int.h.
 * Every validation failure is HM_ERR_BAD_INPUT with ctx->errmsg naming the
 * file and the problem. Nothing here prints or exits. */
#ifndef FORMATS_H
#define FORMATS_H

#include <stddef.h>
#include <stdint.h>
#include "../util/hm.h"

#define FMT_MAX_DIMS 8              /* safetensors shapes; GGUF has at most 4 */
#define FMT_ST_MAX_HEADER 100000000 /* the reference reader's cap */
#define FMT_GGUF_MAX_DIMS 4
#define FMT_GGUF_MAX_NAME 64        /* tensor names are < 64 bytes */
#define FMT_GGUF_DEFAULT_ALIGNMENT 32

/* ---- safetensors dtypes ---- */

enum fmt_dtype {
	FMT_BOOL, FMT_F4, FMT_F6_E2M3, FMT_F6_E3M2, FMT_U8, FMT_I8, FMT_F8_E5M2, FMT_F8_E4M3,
	FMT_F8_E8M0, FMT_F8_E4M3FNUZ, FMT_F8_E5M2FNUZ, FMT_I16, FMT_U16, FMT_F16, FMT_BF16,
	FMT_I32, FMT_U32, FMT_F32, FMT_C64, FMT_F64, FMT_I64, FMT_U64,
	FMT_DTYPE__COUNT
};

/* "F32" ...; NULL for a value out of range. */
const char *fmt_dtype_name(enum fmt_dtype d);

/* ---- safetensors reader ---- */

/* One tensor. Strings and data point into the open file, valid until close. */
struct fmt_st_tensor {
	const char *name;
	enum fmt_dtype dtype;
	int ndim;                       /* 0 for a scalar */
	uint64_t shape[FMT_MAX_DIMS];   /* PyTorch order, slowest first */
	uint64_t nelem;                 /* product of shape (1 for a scalar) */
	const unsigned char *data;      /* into the mapping */
	uint64_t nbytes;
	uint64_t file_offset;           /* where data starts in its file */
	size_t shard;                   /* index of its file in a set (0 for one file) */
};

struct fmt_st;

/* Tensors in data order (ascending offsets). i < fmt_st_count. */
size_t fmt_st_count(const struct fmt_st *st);
const struct fmt_st_tensor *fmt_st_tensor(const struct fmt_st *st, size_t i);
/* __metadata__ entries (string -> string), in header order. */
size_t fmt_st_meta_count(const struct fmt_st *st);
void fmt_st_meta(const struct fmt_st *st, size_t i, const char **key, const char **value);
/* Size of the whole file. */
uint64_t fmt_st_file_size(const struct fmt_st *st);

/* ---- sharded safetensors ---- */

/* Maps a shard file name from the index (already checked: a safe single
 * path component) to the path to open; writes it into buf (len bytes).
 * Returns HM_OK or an error with the message set on ctx. */
typedef enum hm_err (*fmt_st_resolve_fn)(struct hm_ctx *ctx, void *ud, const char *shard, char *buf, size_t len);

struct fmt_st_set;

/* dir_or_index: a model.safetensors.index.json (any *.index.json), or a
 * directory holding model.safetensors.index.json or else model.safetensors.
 * Opens every shard and joins them into one tensor namespace, validating the
 * weight_map: shard names are plain file names in the index's directory,
 * every listed tensor is in its shard, no tensor is in two shards, and every
 * tensor of a shard is listed. *out is the caller's (fmt_st_set_close). */
enum hm_err fmt_st_open_dir(struct hm_ctx *ctx, const char *dir_or_index, struct fmt_st_set **out) HM_MUST_CHECK;
/* The same from an index file whose shards are found by resolve (for
 * example blobs of a store). resolve NULL = the index's directory. */
enum hm_err fmt_st_open_index(struct hm_ctx *ctx, const char *index_path, fmt_st_resolve_fn resolve, void *ud,
			      struct fmt_st_set **out) HM_MUST_CHECK;
/* A set of one file (what fmt_st_open_dir gives for model.safetensors). */
enum hm_err fmt_st_open_single(struct hm_ctx *ctx, const char *path, struct fmt_st_set **out) HM_MUST_CHECK;
void fmt_st_set_close(struct fmt_st_set *set);
/* Tensors of every shard, shard by shard in index order, each in data order. */
size_t fmt_st_set_count(const struct fmt_st_set *set);
const struct fmt_st_tensor *fmt_st_set_tensor(const struct fmt_st_set *set, size_t i);
const struct fmt_st_tensor *fmt_st_set_find(const struct fmt_st_set *set, const char *name);
size_t fmt_st_set_nshards(const struct fmt_st_set *set);
/* Shard i (owned by the set); its name as the index gives it. */
const struct fmt_st *fmt_st_set_shard(const struct fmt_st_set *set, size_t i);
const char *fmt_st_set_shard_name(const struct fmt_st_set *set, size_t i);

/* ---- GGUF ---- */

/* ggml tensor types (ids as in the file). */
enum fmt_ggml_type {
	FMT_GGML_F32 = 0, FMT_GGML_F16 = 1, FMT_GGML_Q4_0 = 2, FMT_GGML_Q4_1 = 3,
	FMT_GGML_Q5_0 = 6, FMT_GGML_Q5_1 = 7, FMT_GGML_Q8_0 = 8, FMT_GGML_Q8_1 = 9,
	FMT_GGML_Q2_K = 10, FMT_GGML_Q3_K = 11, FMT_GGML_Q4_K = 12, FMT_GGML_Q5_K = 13,
	FMT_GGML_Q6_K = 14, FMT_GGML_Q8_K = 15,
	FMT_GGML_IQ2_XXS = 16, FMT_GGML_IQ2_XS = 17, FMT_GGML_IQ3_XXS = 18, FMT_GGML_IQ1_S = 19,
	FMT_GGML_IQ4_NL = 20, FMT_GGML_IQ3_S = 21, FMT_GGML_IQ2_S = 22, FMT_GGML_IQ4_XS = 23,
	FMT_GGML_I8 = 24, FMT_GGML_I16 = 25, FMT_GGML_I32 = 26, FMT_GGML_I64 = 27, FMT_GGML_F64 = 28,
	FMT_GGML_IQ1_M = 29, FMT_GGML_BF16 = 30, FMT_GGML_TQ1_0 = 34, FMT_GGML_TQ2_0 = 35,
	FMT_GGML_MXFP4 = 39,
	FMT_GGML_TYPE__COUNT = 40
};

/* "F32", "Q8_0" ...; NULL for an unknown or removed id. */
const char *fmt_ggml_type_name(uint32_t type);
/* Elements per block and bytes per block; 0 for an unknown id. */
uint32_t fmt_ggml_block_size(uint32_t type);
uint32_t fmt_ggml_type_size(uint32_t type);
/* Bytes of a tensor of type with dims ne[0..ndim) (ne[0] fastest). Returns
 * -1 when ne[0] is not a whole number of blocks, the type is unknown, or it
 * overflows 2^63. */
int fmt_ggml_nbytes(uint32_t type, int ndim, const uint64_t *ne, uint64_t *out);

/* GGUF metadata value types (ids as in the file). */
enum fmt_gguf_vtype {
	FMT_GGUF_U8 = 0, FMT_GGUF_I8 = 1, FMT_GGUF_U16 = 2, FMT_GGUF_I16 = 3, FMT_GGUF_U32 = 4,
	FMT_GGUF_I32 = 5, FMT_GGUF_F32 = 6, FMT_GGUF_BOOL = 7, FMT_GGUF_STRING = 8, FMT_GGUF_ARRAY = 9,
	FMT_GGUF_U64 = 10, FMT_GGUF_I64 = 11, FMT_GGUF_F64 = 12,
	FMT_GGUF_VTYPE__COUNT
};
/* "u8" ... "string", "array"; NULL if out of range. */
const char *fmt_gguf_vtype_name(uint32_t t);

/* A decoded value. Strings and arrays point into the mapping. */
struct fmt_gguf_value {
	enum fmt_gguf_vtype type;
	uint64_t u;                    /* U8, U16, U32, U64, BOOL (0/1) */
	int64_t i;                     /* I8, I16, I32, I64 */
	double f;                      /* F32, F64 */
	const char *str;               /* STRING: bytes, not NUL-terminated, maybe not UTF-8 */
	uint64_t len;                  /* STRING: byte length */
	enum fmt_gguf_vtype elem;      /* ARRAY: element type */
	uint64_t count;                /* ARRAY: elements */
	const unsigned char *raw;      /* ARRAY: the encoded elements (little-endian) */
	uint64_t raw_len;
};

/* Walks an array's elements (validated at open: cannot fail). */
struct fmt_gguf_iter {
	const struct fmt_gguf_value *arr;
	const unsigned char *p;
	uint64_t i;
};
void fmt_gguf_iter_init(struct fmt_gguf_iter *it, const struct fmt_gguf_value *arr);
/* Decodes the next element into *out; 0 when there is none. */
int fmt_gguf_iter_next(struct fmt_gguf_iter *it, struct fmt_gguf_value *out);

struct fmt_gguf_kv {
	const char *key;               /* NUL-terminated copy */
	struct fmt_gguf_value v;
};

struct fmt_gguf_tensor {
	const char *name;              /* NUL-terminated copy, < 64 bytes */
	int ndim;
	uint64_t ne[FMT_GGUF_MAX_DIMS]; /* ggml order: ne[0] fastest; 1 past ndim */
	uint32_t type;                 /* enum fmt_ggml_type */
	uint64_t nelem;
	uint64_t offset;               /* relative to the data section */
	uint64_t nbytes;
	const unsigned char *data;     /* into the mapping */
};

struct fmt_gguf;

/* Maps and validates path. *out is the caller's (fmt_gguf_close). */
enum hm_err fmt_gguf_open(struct hm_ctx *ctx, const char *path, struct fmt_gguf **out) HM_MUST_CHECK;
void fmt_gguf_close(struct fmt_gguf *g);
/* The file's bytes into private huge-page memory at the same addresses
 * (fmt_map_to_memory), copied on pool's threads (NULL: this one); 1 when
 * done, 0 when it stays a file mapping. */
struct util_pool;
int fmt_gguf_to_memory(struct fmt_gguf *g, struct util_pool *pool);
const char *fmt_gguf_path(const struct fmt_gguf *g);
uint32_t fmt_gguf_version(const struct fmt_gguf *g);
uint32_t fmt_gguf_alignment(const struct fmt_gguf *g);
/* Where the data section starts in the file, and the file's size. */
uint64_t fmt_gguf_data_offset(const struct fmt_gguf *g);
uint64_t fmt_gguf_file_size(const struct fmt_gguf *g);
size_t fmt_gguf_kv_count(const struct fmt_gguf *g);
const struct fmt_gguf_kv *fmt_gguf_kv(const struct fmt_gguf *g, size_t i);
/* By key; NULL if absent. */
const struct fmt_gguf_kv *fmt_gguf_find_kv(const struct fmt_gguf *g, const char *key);
size_t fmt_gguf_tensor_count(const struct fmt_gguf *g);
const struct fmt_gguf_tensor *fmt_gguf_tensor(const struct fmt_gguf *g, size_t i);
const struct fmt_gguf_tensor *fmt_gguf_find_tensor(const struct fmt_gguf *g, const char *name);

/* ---- GGUF writer ---- */

struct fmt_gguf_writer;

/* Starts writing a GGUF v3 file at path (a temp file until _finish). */
enum hm_err fmt_gguf_writer_new(struct hm_ctx *ctx, const char *path, struct fmt_gguf_writer **out) HM_MUST_CHECK;
/* Metadata, in the order added; keys unique. All before the first _write.
 * A u32 "general.alignment" (power of two) sets the alignment. */
enum hm_err fmt_gguf_writer_u8(struct fmt_gguf_writer *w, const char *key, uint8_t v) HM_MUST_CHECK;
enum hm_err fmt_gguf_writer_i8(struct fmt_gguf_writer *w, const char *key, int8_t v) HM_MUST_CHECK;
enum hm_err fmt_gguf_writer_u16(struct fmt_gguf_writer *w, const char *key, uint16_t v) HM_MUST_CHECK;
enum hm_err fmt_gguf_writer_i16(struct fmt_gguf_writer *w, const char *key, int16_t v) HM_MUST_CHECK;
enum hm_err fmt_gguf_writer_u32(struct fmt_gguf_writer *w, const char *key, uint32_t v) HM_MUST_CHECK;
enum hm_err fmt_gguf_writer_i32(struct fmt_gguf_writer *w, const char *key, int32_t v) HM_MUST_CHECK;
enum hm_err fmt_gguf_writer_u64(struct fmt_gguf_writer *w, const char *key, uint64_t v) HM_MUST_CHECK;
enum hm_err fmt_gguf_writer_i64(struct fmt_gguf_writer *w, const char *key, int64_t v) HM_MUST_CHECK;
enum hm_err fmt_gguf_writer_f32(struct fmt_gguf_writer *w, const char *key, float v) HM_MUST_CHECK;
enum hm_err fmt_gguf_writer_f64(struct fmt_gguf_writer *w, const char *key, double v) HM_MUST_CHECK;
enum hm_err fmt_gguf_writer_bool(struct fmt_gguf_writer *w, const char *key, int v) HM_MUST_CHECK;
enum hm_err fmt_gguf_writer_str(struct fmt_gguf_writer *w, const char *key, const char *v) HM_MUST_CHECK;
/* An array of a fixed-size type (not STRING/ARRAY): count elements at
 * data, in host order (converted to little-endian). */
enum hm_err fmt_gguf_writer_arr(struct fmt_gguf_writer *w, const char *key, enum fmt_gguf_vtype elem,
				const void *data, uint64_t count) HM_MUST_CHECK;
/* An array of strings. */
enum hm_err fmt_gguf_writer_str_arr(struct fmt_gguf_writer *w, const char *key, const char *const *v,
				    uint64_t count) HM_MUST_CHECK;
/* Declares the next tensor: name (< 64 bytes, unique), ne[0..ndim) in ggml
 * order (ndim 1..4), type. Data follows in declaration order. */
enum hm_err fmt_gguf_writer_add_tensor(struct fmt_gguf_writer *w, const char *name, int ndim, const uint64_t *ne,
				       uint32_t type) HM_MUST_CHECK;
/* Appends n bytes of tensor data (any chunking; the writer inserts the
 * alignment padding between tensors). The first call writes the header. */
enum hm_err fmt_gguf_writer_write(struct fmt_gguf_writer *w, const void *data, size_t n) HM_MUST_CHECK;
/* Hands what is buffered to the file and starts its disk writes (so the
 * fsync of finish has little left to do); *fd gets the file's descriptor
 * (open for reading too; the file is at its temporary name) and *flushed
 * the number of bytes in it so far. Either may be NULL. */
enum hm_err fmt_gguf_writer_flush(struct fmt_gguf_writer *w, int *fd, uint64_t *flushed) HM_MUST_CHECK;
/* Checks every byte was written, pads, fsyncs and renames into place. */
enum hm_err fmt_gguf_writer_finish(struct fmt_gguf_writer *w) HM_MUST_CHECK;
/* Frees; an unfinished file is removed. Accepts NULL. */
void fmt_gguf_writer_free(struct fmt_gguf_writer *w);

#endif
