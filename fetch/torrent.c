/* torrent.c - GETs the BitTorrent v2 torrent of a blob from a hubmirror
 * endpoint (serve --p2p: /api/hubmirror/torrents/<sha256>). One try, no
 * retries: a lab falls back to HTTP downloads whenever this fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fetch-int.h"

struct tbody {
	struct util_buf b;
	size_t max;
	int too_big;
};

static size_t tbody_cb(char *data, size_t size, size_t n, void *ud)
{
	struct tbody *bd = ud;
	size_t len = size * n;
	if (bd->b.len + len > bd->max) {
		bd->too_big = 1;
		return 0;
	}
	if (util_buf_add(&bd->b, data, len))
		return 0;
	return len;
}

enum hm_err fetch_blob_torrent(struct hm_ctx *ctx, struct fetch_client *c, const char *sha256, size_t max,
			       unsigned char **buf, size_t *len)
{
	enum hm_err err = HM_OK;
	CURL *h = curl_easy_init();
	struct tbody bd = {UTIL_BUF_INIT, max, 0};
	struct fetch_resp r;
	struct curl_slist *hdrs = NULL;
	struct fetch_guard guard;
	char errbuf[CURL_ERROR_SIZE] = "";
	char *url = NULL;
	CURLcode rc;

	*buf = NULL;
	*len = 0;
	if (!util_is_hex(sha256, 64))
		return hm_fail(ctx, HM_ERR_USAGE, "not a SHA-256: '%s'", sha256);
	url = util_asprintf("%s/api/hubmirror/torrents/%s", c->endpoint, sha256);
	if (!url || !h) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	fetch_resp_reset(&r);
	memset(&guard, 0, sizeof(guard));
	if ((err = fetch_easy_setup(ctx, c, h, url, &hdrs, &guard)))
		goto out;
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, tbody_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &bd);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, fetch_header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	/* making a torrent hashes the blob once on the mirror: give it time */
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)((c->timeout + c->connect_timeout) * 1000 * 4));
	rc = curl_easy_perform(h);
	if (bd.too_big) {
		err = hm_fail(ctx, HM_ERR_BAD_INPUT, "the torrent of %.12s is larger than %zu bytes: refusing it", sha256, max);
		goto out;
	}
	if (rc != CURLE_OK && guard.refused) {
		err = fetch_guard_err(ctx, &guard, "a torrent");
		goto out;
	}
	if (rc != CURLE_OK) {
		long os_errno = 0;
		curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
		err = fetch_curl_err(ctx, c, rc, os_errno, url, 1);
		goto out;
	}
	if (r.status != 200) {
		char what[96];
		snprintf(what, sizeof(what), "the torrent of %.12s", sha256);
		err = fetch_status_err(ctx, &r, what, c->token != NULL);
		goto out;
	}
	*buf = (unsigned char *)bd.b.buf;
	*len = bd.b.len;
	bd.b.buf = NULL;
out:
	curl_slist_free_all(hdrs);
	if (h)
		curl_easy_cleanup(h);
	util_buf_release(&bd.b);
	free(url);
	return err;
}
