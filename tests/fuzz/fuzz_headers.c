/* fuzz_headers.c - libFuzzer target: HTTP response header lines from a
 * server (Content-Range, Link, Retry-After, Location ...), one per line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../../fetch/fetch-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fetch_resp r;
	char *buf = malloc(size + 1);
	size_t start = 0;
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = 0;
	fetch_resp_reset(&r);
	for (size_t i = 0; i <= size; i++)
		if (i == size || buf[i] == '\n') {
			/* curl hands the callback one line at a time, CRLF included */
			size_t len = i - start + (i < size);
			char *line = malloc(len ? len : 1);
			if (line) {
				memcpy(line, buf + start, len);
				fetch_header_cb(line, 1, len, &r);
				free(line);
			}
			start = i + 1;
		}
	if (r.has_content_range && (r.cr_start > r.cr_end || r.cr_end >= r.cr_total))
		abort();
	if (strnlen(r.location, sizeof(r.location)) == sizeof(r.location) ||
	    strnlen(r.link_next, sizeof(r.link_next)) == sizeof(r.link_next))
		abort();
	free(buf);
	return 0;
}
