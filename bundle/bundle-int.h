/* bundle-int.h - pieces shared by the bundle writer and reader. */
#ifndef BUNDLE_INT_H
#define BUNDLE_INT_H

#include <archive.h>
#include "bundle.h"

/* Adds the compression filter for comp to a writer; a clear error when this
 * libarchive lacks it. */
enum hm_err bundle_add_write_filter(struct hm_ctx *ctx, struct archive *a, enum bundle_compress comp) HM_MUST_CHECK;

#endif
