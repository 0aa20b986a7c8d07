/* filter.c - compression filters for bundles, by name. */
#include <archive.h>
#include "bundle-int.h"

enum hm_err bundle_add_write_filter(struct hm_ctx *ctx, struct archive *a, enum bundle_compress comp)
{
	int r;
	const char *what;
	switch (comp) {
	case BUNDLE_GZIP:
		what = "gzip";
		r = archive_write_add_filter_gzip(a);
		break;
	case BUNDLE_ZSTD:
		what = "zstd";
		r = archive_write_add_filter_zstd(a);
		break;
	default:
		return HM_OK;
	}
	/* ARCHIVE_WARN means an external program would do it: not for us */
	if (r != ARCHIVE_OK)
		return hm_fail(ctx, HM_ERR_USAGE, "this hubmirror's libarchive (%s) cannot write %s: %s",
			       archive_version_details(), what,
			       archive_error_string(a) ? archive_error_string(a) : "not built in");
	return HM_OK;
}
