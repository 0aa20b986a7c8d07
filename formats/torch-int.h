/* torch-int.h - what torch.c (archive reading) shares with torch_convert.c. */
#ifndef FMT_TORCH_INT_H
#define FMT_TORCH_INT_H

#include "torch.h"

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
