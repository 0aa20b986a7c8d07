/* hub.c - the Hub's JSON API: resolve a revision, list a commit's files. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "fetch-int.h"

/* Hub JSON answers are small; a tree page of 1000 entries is ~300 KiB. */
#define API_MAX_BODY (32u << 20)
#define API_MAX_REDIRECTS 10
#define TREE_MAX_ENTRIES 5000000
#define TREE_MAX_PAGES 100000

struct body {
	struct util_buf b;
	int too_big;
};

static size_t body_cb(char *data, size_t size, size_t n, void *ud)
{
	struct body *bd = ud;
	size_t len = size * n;
	if (bd->b.len + len > API_MAX_BODY) {
		bd->too_big = 1;
		return 0; /* abort the transfer */
	}
	if (util_buf_add(&bd->b, data, len))
		return 0;
	return len;
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

/* A retry of an API call, for the command to print ("retrying X in 4 s (2/5): why"). */
static void retry_line(struct hm_ctx *ctx, const char *what, const char *why, double wait, int n, int max, long status)
{
	struct hm_event ev = {.kind = HM_EV_RETRY, .name = what, .msg = why, .attempt = n, .attempts = max,
			      .backoff = wait, .status = status};
	hm_emit(ctx, &ev);
}

/* GETs url (following redirects under the token rule, retrying transient
 * failures) and parses the JSON body. what names the subject in errors. */
static enum hm_err api_get_json(struct hm_ctx *ctx, struct fetch_client *c, const char *url_in,
				const char *what, json_t **out, char *next, size_t nextcap)
{
	enum hm_err err = HM_OK;
	char *url = util_strdup(url_in);
	CURL *h = curl_easy_init();
	struct body bd = {UTIL_BUF_INIT, 0};
	struct fetch_resp r;
	struct fetch_guard guard;
	char errbuf[CURL_ERROR_SIZE];
	int failures = 0, redirects = 0;

	*out = NULL;
	if (next)
		next[0] = 0;
	if (!url || !h) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		struct curl_slist *hdrs = NULL;
		CURLcode rc;
		if (hm_cancelled(ctx)) {
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
			goto out;
		}
		curl_easy_reset(h);
		util_buf_release(&bd.b);
		bd.too_big = 0;
		fetch_resp_reset(&r);
		errbuf[0] = 0;
		err = fetch_easy_setup(ctx, c, h, url, &hdrs, &guard);
		if (err)
			goto out;
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, &bd);
		curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, fetch_header_cb);
		curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
		curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
		/* metadata: a short limit to connect and to wait for data (HF_HUB_ETAG_TIMEOUT) */
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->meta_timeout * 1000));
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)(c->meta_timeout < 1 ? 1 : c->meta_timeout));
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)((c->timeout + c->connect_timeout + c->meta_timeout) * 1000 * 4));
		double t_req = util_now();
		rc = curl_easy_perform(h);
		curl_slist_free_all(hdrs);
		fetch_log_http(ctx, "GET", url, rc == CURLE_OK ? r.status : 0, util_now() - t_req);
		if (bd.too_big) {
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub's answer for %s is larger than %u MiB: refusing it", what, API_MAX_BODY >> 20);
			goto out;
		}
		if (rc != CURLE_OK && guard.refused) {
			err = fetch_guard_err(ctx, &guard, what);
			goto out;
		}
		if (rc != CURLE_OK) {
			long os_errno = 0;
			struct hm_ctx why = {0};
			curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
			err = fetch_curl_err(&why, c, rc, os_errno, url, 1);
			if (rc != CURLE_COULDNT_RESOLVE_HOST && ++failures <= c->retries) {
				double wait = fetch_backoff(failures, NULL);
				retry_line(ctx, what, why.errmsg, wait, failures, c->retries, 0);
				sleep_s(wait);
				err = HM_OK;
				continue;
			}
			err = hm_fail(ctx, err, "%s", why.errmsg);
			goto out;
		}
		if (r.status >= 300 && r.status < 400 && r.location[0]) {
			char *nu;
			if ((err = fetch_follow(ctx, url, r.location, &redirects, API_MAX_REDIRECTS, what, &nu)))
				goto out;
			free(url);
			url = nu;
			continue;
		}
		if (fetch_status_retryable(r.status) && ++failures <= c->retries) {
			double wait = fetch_backoff(failures, &r);
			char m[64];
			snprintf(m, sizeof(m), "the hub answered HTTP %ld", r.status);
			retry_line(ctx, what, m, wait, failures, c->retries, r.status);
			sleep_s(wait);
			continue;
		}
		if (r.status != 200) {
			err = fetch_status_err(ctx, &r, what, c->token != NULL);
			goto out;
		}
		break;
	}
	{
		json_error_t jerr;
		json_t *j = json_loadb(bd.b.buf ? bd.b.buf : "", bd.b.len, JSON_REJECT_DUPLICATES, &jerr);
		if (!j) {
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub sent malformed JSON for %s: %s (line %d)", what, jerr.text, jerr.line);
			goto out;
		}
		*out = j;
	}
	if (next && r.link_next[0]) {
		char *nu = fetch_url_join(url, r.link_next);
		if (!nu || strlen(nu) >= nextcap) {
			free(nu);
			json_decref(*out);
			*out = NULL;
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub sent a bad pagination link for %s", what);
			goto out;
		}
		strcpy(next, nu);
		free(nu);
	}
out:
	util_buf_release(&bd.b);
	if (h)
		curl_easy_cleanup(h);
	free(url);
	return err;
}

/* Percent-encodes s; keep_slash leaves '/' as is. Caller frees. */
static char *url_escape(const char *s, int keep_slash)
{
	struct util_buf b = UTIL_BUF_INIT;
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
			    *p == '-' || *p == '_' || *p == '.' || *p == '~' || (keep_slash && *p == '/');
		char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
		if (plain ? util_buf_add(&b, p, 1) : util_buf_add(&b, e, 3)) {
			util_buf_release(&b);
			return NULL;
		}
	}
	if (!b.buf && util_buf_add(&b, "", 0))
		return NULL;
	return util_buf_detach(&b);
}

static const char *api_kind(const char *type)
{
	return !strcmp(type, "dataset") ? "datasets" : "models";
}

char *fetch_resolve_url(const struct fetch_client *c, const char *type, const char *repo,
			const char *rev, const char *path)
{
	char *erev = url_escape(rev, 0), *epath = url_escape(path, 1), *u = NULL;
	if (erev && epath)
		u = util_asprintf("%s/%s%s/resolve/%s/%s", c->endpoint,
				  !strcmp(type, "dataset") ? "datasets/" : "", repo, erev, epath);
	free(erev);
	free(epath);
	return u;
}

enum hm_err fetch_hub_revision(struct hm_ctx *ctx, struct fetch_client *c, const char *type,
			       const char *repo, const char *rev, char commit[41])
{
	return fetch_hub_revision_info(ctx, c, type, repo, rev, commit, NULL, NULL);
}

enum hm_err fetch_hub_revision_info(struct hm_ctx *ctx, struct fetch_client *c, const char *type,
				    const char *repo, const char *rev, char commit[41], int *gated, int *restricted)
{
	char *erev, *url, what[256];
	json_t *j = NULL;
	enum hm_err err;
	const char *sha;

	if (!util_repo_id_is_valid(repo))
		return hm_fail(ctx, HM_ERR_USAGE, "invalid repository id '%s': expected 'name' or 'org/name'", repo);
	if (!rev)
		rev = "main";
	if (!*rev || strlen(rev) > 256)
		return hm_fail(ctx, HM_ERR_USAGE, "invalid revision");
	erev = url_escape(rev, 0);
	url = erev ? util_asprintf("%s/api/%s/%s/revision/%s", c->endpoint, api_kind(type), repo, erev) : NULL;
	free(erev);
	if (!url)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	snprintf(what, sizeof(what), "%s '%s'", !strcmp(type, "dataset") ? "dataset" : "repository", repo);
	err = api_get_json(ctx, c, url, what, &j, NULL, 0);
	free(url);
	if (err) {
		if (err == HM_ERR_REV_NOT_FOUND)
			err = hm_fail(ctx, err, "revision '%s' not found in %s", rev, what);
		return err;
	}
	sha = json_string_value(json_object_get(j, "sha"));
	if (!json_is_object(j) || !sha || !util_is_hex(sha, 40)) {
		json_decref(j);
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub's answer for %s has no valid commit 'sha'", what);
	}
	memcpy(commit, sha, 41);
	if (gated) {
		json_t *g = json_object_get(j, "gated");
		*gated = json_is_string(g) || json_is_true(g);
	}
	if (restricted)
		*restricted = !json_is_false(json_object_get(j, "private")) || !json_is_false(json_object_get(j, "gated"));
	json_decref(j);
	return HM_OK;
}

void fetch_entries_free(struct fetch_entry *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i].path);
	free(v);
}

/* Quotes an untrusted name for an error message: printable ASCII only. */
static void quote_name(char *dst, size_t cap, const char *s)
{
	size_t j = 0;
	for (; *s && j + 5 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch >= 0x20 && ch < 0x7f && ch != '\\')
			dst[j++] = (char)ch;
		else
			j += (size_t)snprintf(dst + j, cap - j, "\\x%02x", ch);
	}
	dst[j] = 0;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct fetch_entry *)a)->path, ((const struct fetch_entry *)b)->path);
}

/* Parses one tree entry. Returns 1 for a file, 0 for a directory. */
static enum hm_err parse_entry(struct hm_ctx *ctx, json_t *e, struct fetch_entry *out, int *is_file)
{
	const char *type = json_string_value(json_object_get(e, "type"));
	json_t *jpath = json_object_get(e, "path"), *jsize = json_object_get(e, "size");
	const char *oid = json_string_value(json_object_get(e, "oid"));
	json_t *lfs = json_object_get(e, "lfs");
	char q[200];

	*is_file = 0;
	if (!json_is_object(e) || !type || !json_is_string(jpath))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub sent a malformed tree entry");
	/* json_string_value stops at an embedded NUL: compare lengths */
	const char *path = json_string_value(jpath);
	quote_name(q, sizeof(q), path);
	if (strlen(path) != json_string_length(jpath) || !util_path_is_safe(path))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub sent an unsafe file name '%s': refusing to write it", q);
	if (!strcmp(type, "directory"))
		return HM_OK;
	if (strcmp(type, "file"))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub sent an entry of unknown type for '%s'", q);
	if (!json_is_integer(jsize) || json_integer_value(jsize) < 0 || !oid || !util_is_hex(oid, 40))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub sent a bad size or oid for '%s'", q);
	memset(out, 0, sizeof(*out));
	out->size = (uint64_t)json_integer_value(jsize);
	memcpy(out->oid, oid, 41);
	if (lfs && !json_is_null(lfs)) {
		const char *sha = json_string_value(json_object_get(lfs, "oid"));
		json_t *ls = json_object_get(lfs, "size");
		if (!sha || !util_is_hex(sha, 64) || !json_is_integer(ls) ||
		    (uint64_t)json_integer_value(ls) != out->size)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub sent bad LFS details for '%s'", q);
		out->lfs = 1;
		memcpy(out->sha256, sha, 65);
	}
	out->path = util_strdup(path);
	if (!out->path)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	*is_file = 1;
	return HM_OK;
}

/* Appends the file entries of one parsed tree page to *v. */
static enum hm_err add_page(struct hm_ctx *ctx, json_t *j, const char *what, struct fetch_entry **v,
			    size_t *len, size_t *cap)
{
	size_t i;
	json_t *e;
	if (!json_is_array(j))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub's answer for %s is not a list", what);
	json_array_foreach(j, i, e) {
		int is_file;
		enum hm_err err;
		if (*len == *cap) {
			size_t nc = *cap ? *cap * 2 : 64;
			struct fetch_entry *nv = realloc(*v, nc * sizeof(**v));
			if (!nv)
				return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			*v = nv;
			*cap = nc;
		}
		err = parse_entry(ctx, e, &(*v)[*len], &is_file);
		if (err)
			return err;
		*len += (size_t)is_file;
	}
	if (*len > TREE_MAX_ENTRIES)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "%s is absurdly long: refusing it", what);
	return HM_OK;
}

/* Sorts the listing and refuses duplicates and file/folder clashes. */
static enum hm_err check_listing(struct hm_ctx *ctx, struct fetch_entry *v, size_t len)
{
	char q[200];
	if (len)
		qsort(v, len, sizeof(*v), cmp_entry);
	for (size_t i = 1; i < len; i++)
		if (!strcmp(v[i - 1].path, v[i].path)) {
			quote_name(q, sizeof(q), v[i].path);
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub listed '%s' twice", q);
		}
	/* a file and a directory of the same name cannot both be written */
	for (size_t i = 0; i + 1 < len; i++) {
		size_t pl = strlen(v[i].path);
		for (size_t k = i + 1; k < len && !strncmp(v[k].path, v[i].path, pl); k++)
			if (v[k].path[pl] == '/') {
				quote_name(q, sizeof(q), v[i].path);
				return hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub lists '%s' as both a file and a folder", q);
			}
	}
	return HM_OK;
}

enum hm_err fetch_parse_tree(struct hm_ctx *ctx, const char *data, size_t size,
			     struct fetch_entry **out, size_t *n)
{
	struct fetch_entry *v = NULL;
	size_t len = 0, cap = 0;
	json_error_t jerr;
	enum hm_err err;
	json_t *j = json_loadb(data, size, JSON_REJECT_DUPLICATES, &jerr);

	*out = NULL;
	*n = 0;
	if (!j)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "malformed JSON: %s (line %d)", jerr.text, jerr.line);
	err = add_page(ctx, j, "the file list", &v, &len, &cap);
	json_decref(j);
	if (!err)
		err = check_listing(ctx, v, len);
	if (err) {
		fetch_entries_free(v, len);
		return err;
	}
	*out = v;
	*n = len;
	return HM_OK;
}

enum hm_err fetch_hub_tree(struct hm_ctx *ctx, struct fetch_client *c, const char *type,
			   const char *repo, const char *commit,
			   struct fetch_entry **out, size_t *n)
{
	struct fetch_entry *v = NULL;
	size_t len = 0, cap = 0;
	enum hm_err err = HM_OK;
	char *url, next[2048], what[256];
	int pages = 0;

	*out = NULL;
	*n = 0;
	snprintf(what, sizeof(what), "the file list of '%s'", repo);
	url = util_asprintf("%s/api/%s/%s/tree/%s?recursive=true&expand=false", c->endpoint,
			    api_kind(type), repo, commit);
	if (!url)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	while (url) {
		json_t *j = NULL;
		err = api_get_json(ctx, c, url, what, &j, next, sizeof(next));
		free(url);
		url = NULL;
		if (err)
			goto out;
		err = add_page(ctx, j, what, &v, &len, &cap);
		json_decref(j);
		if (err)
			goto out;
		if (++pages > TREE_MAX_PAGES) {
			err = hm_fail(ctx, HM_ERR_BAD_INPUT, "%s has absurdly many pages: refusing it", what);
			goto out;
		}
		if (next[0]) {
			char *o = fetch_origin_of(next);
			int same = o && !strcmp(o, c->origin);
			free(o);
			if (!same) {
				err = hm_fail(ctx, HM_ERR_BAD_INPUT, "the hub's pagination link for %s points to another host", what);
				goto out;
			}
			url = util_strdup(next);
			if (!url) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				goto out;
			}
		}
	}
	err = check_listing(ctx, v, len);
	if (err)
		goto out;
	*out = v;
	*n = len;
	v = NULL;
out:
	free(url);
	if (v)
		fetch_entries_free(v, len);
	return err;
}
