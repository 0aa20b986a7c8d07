/* sign.c - SigV4 query presigning (curl has none) on OpenSSL's HMAC-SHA256,
 * the AWS configuration from the environment, and the small XML reader the
 * S3 answers need. */
#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "s3-int.h"

static void hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
	unsigned int olen = 32;
	HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &olen);
}

void s3_sigv4_signature(const char *secret, const char *date8, const char *region, const char *service,
			const char *string_to_sign, char out[65])
{
	unsigned char k[32], k2[32];
	char *ks = util_asprintf("AWS4%s", secret);
	if (!ks) {
		out[0] = 0;
		return;
	}
	hmac(ks, strlen(ks), date8, k);
	OPENSSL_cleanse(ks, strlen(ks));
	free(ks);
	hmac(k, 32, region, k2);
	hmac(k2, 32, service, k);
	hmac(k, 32, "aws4_request", k2);
	hmac(k2, 32, string_to_sign, k);
	util_hex(k, 32, out);
	OPENSSL_cleanse(k2, sizeof(k2));
}

void s3_sha256_hex(const void *data, size_t n, char out[65])
{
	unsigned char d[32];
	SHA256(data, n, d);
	util_hex(d, 32, out);
}

static int unreserved(unsigned char ch)
{
	return isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

int s3_uri_encode(struct util_buf *b, const char *s, int keep_slash)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (unreserved(ch) || (keep_slash && ch == '/')) {
			if (util_buf_add(b, s, 1))
				return -1;
		} else if (util_buf_printf(b, "%%%02X", ch)) {
			return -1;
		}
	}
	return 0;
}

int s3_key_ok(const char *key)
{
	size_t n = key ? strlen(key) : 0;
	if (!n || n > 1024 || key[0] == '/')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!unreserved((unsigned char)key[i]) && key[i] != '/')
			return 0;
	return 1;
}

int s3_is_uri(const char *s)
{
	return s && !strncmp(s, "s3://", 5);
}

/* host[:port] of the endpoint (after the scheme). */
static const char *endpoint_host(const char *endpoint)
{
	const char *p = strstr(endpoint, "://");
	return p ? p + 3 : endpoint;
}

char *s3_object_url(const struct s3_config *cfg, const char *key, char **host_out)
{
	const char *host = endpoint_host(cfg->endpoint);
	size_t scheme_len = (size_t)(host - cfg->endpoint);
	char *url, *host_copy;
	if (cfg->path_style) {
		url = util_asprintf("%s/%s/%s", cfg->endpoint, cfg->bucket, key ? key : "");
		host_copy = util_strdup(host);
	} else {
		url = util_asprintf("%.*s%s.%s/%s", (int)scheme_len, cfg->endpoint, cfg->bucket, host, key ? key : "");
		host_copy = util_asprintf("%s.%s", cfg->bucket, host);
	}
	if (!url || !host_copy) {
		free(url);
		free(host_copy);
		return NULL;
	}
	if (host_out)
		*host_out = host_copy;
	else
		free(host_copy);
	return url;
}

char *s3_presign(const struct s3_config *cfg, const char *method, const char *key, int64_t now, int expires)
{
	struct util_buf q = UTIL_BUF_INIT, creq = UTIL_BUF_INIT, sts = UTIL_BUF_INIT, path = UTIL_BUF_INIT;
	char date8[9], stamp[17], cred[256], hash[65], sig[65];
	char *url = NULL, *host = NULL, *base = NULL, *out = NULL;
	time_t t = (time_t)now;
	struct tm tm;

	if (!s3_key_ok(key) || expires < 1 || expires > 604800)
		return NULL;
	gmtime_r(&t, &tm);
	strftime(date8, sizeof(date8), "%Y%m%d", &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(cred, sizeof(cred), "%s/%s/%s/s3/aws4_request", cfg->access_key, date8, cfg->region);
	base = s3_object_url(cfg, key, &host);
	if (!base)
		goto out;
	/* the canonical URI is the path as sent: path-style has the bucket in it */
	if (cfg->path_style ? util_buf_printf(&path, "/%s/%s", cfg->bucket, key)
			    : util_buf_printf(&path, "/%s", key))
		goto out;
	/* canonical query: names sorted, values URI-encoded ('/' too) */
	if (util_buf_adds(&q, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=") ||
	    s3_uri_encode(&q, cred, 0) ||
	    util_buf_printf(&q, "&X-Amz-Date=%s&X-Amz-Expires=%d", stamp, expires))
		goto out;
	if (cfg->session_token && *cfg->session_token &&
	    (util_buf_adds(&q, "&X-Amz-Security-Token=") || s3_uri_encode(&q, cfg->session_token, 0)))
		goto out;
	if (util_buf_adds(&q, "&X-Amz-SignedHeaders=host"))
		goto out;
	if (util_buf_printf(&creq, "%s\n%s\n%s\nhost:%s\n\nhost\nUNSIGNED-PAYLOAD", method, path.buf, q.buf,
			    host))
		goto out;
	s3_sha256_hex(creq.buf, creq.len, hash);
	if (util_buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/s3/aws4_request\n%s", stamp, date8, cfg->region,
			    hash))
		goto out;
	s3_sigv4_signature(cfg->secret_key, date8, cfg->region, "s3", sts.buf, sig);
	if (!sig[0])
		goto out;
	url = util_asprintf("%s?%s&X-Amz-Signature=%s", base, q.buf, sig);
	out = url;
out:
	free(base);
	free(host);
	util_buf_release(&q);
	util_buf_release(&creq);
	util_buf_release(&sts);
	util_buf_release(&path);
	return out;
}

/* ---- configuration ---- */

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

static enum hm_err env_size(struct hm_ctx *ctx, const char *name, uint64_t *out)
{
	const char *v = env_nonempty(name);
	char *end;
	unsigned long long n;
	if (!v)
		return HM_OK;
	n = strtoull(v, &end, 10);
	if (end == v)
		return hm_fail(ctx, HM_ERR_USAGE, "%s='%s' is not a number of bytes", name, v);
	if (*end == 'k' || *end == 'K')
		n <<= 10, end++;
	else if (*end == 'm' || *end == 'M')
		n <<= 20, end++;
	else if (*end == 'g' || *end == 'G')
		n <<= 30, end++;
	if (*end)
		return hm_fail(ctx, HM_ERR_USAGE, "%s='%s' is not a number of bytes", name, v);
	*out = n;
	return HM_OK;
}

void s3_config_release(struct s3_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->endpoint);
	free(cfg->region);
	free(cfg->access_key);
	if (cfg->secret_key) {
		OPENSSL_cleanse(cfg->secret_key, strlen(cfg->secret_key));
		free(cfg->secret_key);
	}
	if (cfg->session_token) {
		OPENSSL_cleanse(cfg->session_token, strlen(cfg->session_token));
		free(cfg->session_token);
	}
	free(cfg->bucket);
	free(cfg->prefix);
	memset(cfg, 0, sizeof(*cfg));
}

static int bucket_ok(const char *b, size_t n)
{
	if (n < 3 || n > 63)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)b[i]) || isdigit((unsigned char)b[i]) || b[i] == '-' || b[i] == '.'))
			return 0;
	return b[0] != '-' && b[0] != '.' && b[n - 1] != '-' && b[n - 1] != '.';
}

enum hm_err s3_config_from_env(struct hm_ctx *ctx, const char *uri, struct s3_config *cfg)
{
	enum hm_err err = HM_OK;
	const char *b, *slash, *v, *ep;
	size_t blen, plen;

	memset(cfg, 0, sizeof(*cfg));
	if (!s3_is_uri(uri))
		return hm_fail(ctx, HM_ERR_USAGE, "'%s' is not an s3://BUCKET[/PREFIX] store", uri ? uri : "");
	b = uri + 5;
	slash = strchr(b, '/');
	blen = slash ? (size_t)(slash - b) : strlen(b);
	if (!bucket_ok(b, blen))
		return hm_fail(ctx, HM_ERR_USAGE, "invalid bucket name in '%s'", uri);
	cfg->bucket = util_strndup(b, blen);
	v = slash ? slash + 1 : "";
	plen = strlen(v);
	while (plen && v[plen - 1] == '/')
		plen--;
	cfg->prefix = util_strndup(v, plen);
	if (!cfg->bucket || !cfg->prefix) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (*cfg->prefix && (!s3_key_ok(cfg->prefix) || strstr(cfg->prefix, "//") || strlen(cfg->prefix) > 256)) {
		err = hm_fail(ctx, HM_ERR_USAGE, "invalid prefix in '%s' (use A-Z a-z 0-9 - . _ ~ /)", uri);
		goto out;
	}
	v = env_nonempty("AWS_REGION");
	if (!v)
		v = env_nonempty("AWS_DEFAULT_REGION");
	cfg->region = util_strdup(v ? v : "us-east-1");
	ep = env_nonempty("AWS_ENDPOINT_URL_S3");
	if (!ep)
		ep = env_nonempty("AWS_ENDPOINT_URL");
	if (ep) {
		size_t n = strlen(ep);
		while (n && ep[n - 1] == '/')
			n--;
		if ((strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8)) || memchr(ep, '?', n) ||
		    memchr(ep, '@', n)) {
			err = hm_fail(ctx, HM_ERR_USAGE, "AWS_ENDPOINT_URL must be http(s)://HOST[:PORT]");
			goto out;
		}
		cfg->endpoint = util_strndup(ep, n);
		cfg->path_style = 1;
	} else if (cfg->region) {
		cfg->endpoint = util_asprintf("https://s3.%s.amazonaws.com", cfg->region);
		/* dotted bucket names do not match the wildcard certificate */
		cfg->path_style = strchr(cfg->bucket, '.') != NULL;
	}
	v = env_nonempty("AWS_ACCESS_KEY_ID");
	cfg->access_key = util_strdup(v ? v : "");
	v = env_nonempty("AWS_SECRET_ACCESS_KEY");
	cfg->secret_key = util_strdup(v ? v : "");
	v = env_nonempty("AWS_SESSION_TOKEN");
	cfg->session_token = v ? util_strdup(v) : NULL;
	if (!cfg->region || !cfg->endpoint || !cfg->access_key || !cfg->secret_key || (v && !cfg->session_token)) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (const char *p = cfg->region; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-') {
			err = hm_fail(ctx, HM_ERR_USAGE, "invalid AWS_REGION");
			goto out;
		}
	if (!*cfg->access_key || !*cfg->secret_key) {
		err = hm_fail(ctx, HM_ERR_USAGE,
			      "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for '%s'", uri);
		goto out;
	}
	for (const char *p = cfg->access_key; *p; p++)
		if (!isalnum((unsigned char)*p)) {
			err = hm_fail(ctx, HM_ERR_USAGE, "AWS_ACCESS_KEY_ID has unexpected characters");
			goto out;
		}
	for (const char *p = cfg->secret_key; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == ':') {
			err = hm_fail(ctx, HM_ERR_USAGE, "AWS_SECRET_ACCESS_KEY has unexpected characters");
			goto out;
		}
	if ((err = env_size(ctx, "HUBMIRROR_S3_PART_SIZE", &cfg->part_size)) ||
	    (err = env_size(ctx, "HUBMIRROR_S3_SINGLE_MAX", &cfg->single_max)) ||
	    (err = env_size(ctx, "HUBMIRROR_S3_SEND_RATE", &cfg->send_rate)))
		goto out;
	{
		uint64_t par = 0;
		if ((err = env_size(ctx, "HUBMIRROR_S3_PARALLEL", &par)))
			goto out;
		if (par > 64) {
			err = hm_fail(ctx, HM_ERR_USAGE, "HUBMIRROR_S3_PARALLEL must be 1..64");
			goto out;
		}
		cfg->parallel = (int)par;
	}
out:
	if (err)
		s3_config_release(cfg);
	return err;
}

/* ---- XML ---- */

static size_t decode_entities(const char *s, size_t n, char *out, size_t len)
{
	static const struct {
		const char *e;
		char c;
	} ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''},
		    {"&#34;", '"'}, {"&#39;", '\''}};
	size_t j = 0;
	for (size_t i = 0; i < n && j + 1 < len;) {
		int done = 0;
		if (s[i] == '&') {
			for (size_t k = 0; k < sizeof(ents) / sizeof(ents[0]); k++) {
				size_t el = strlen(ents[k].e);
				if (i + el <= n && !memcmp(s + i, ents[k].e, el)) {
					out[j++] = ents[k].c;
					i += el;
					done = 1;
					break;
				}
			}
		}
		if (!done)
			out[j++] = s[i++];
	}
	out[j] = 0;
	return j;
}

int s3_xml_get(const char *xml, size_t n, const char *tag, char *out, size_t len)
{
	size_t pos = 0;
	return s3_xml_next(xml, n, &pos, tag, out, len);
}

int s3_xml_next(const char *xml, size_t n, size_t *pos, const char *tag, char *out, size_t len)
{
	char open[80], close[80];
	size_t ol, cl;
	const char *a, *b;
	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	ol = strlen(open);
	cl = strlen(close);
	if (*pos >= n)
		return 0;
	a = memmem(xml + *pos, n - *pos, open, ol);
	if (!a)
		return 0;
	a += ol;
	b = memmem(a, (size_t)(xml + n - a), close, cl);
	if (!b)
		return 0;
	if (len)
		decode_entities(a, (size_t)(b - a), out, len);
	*pos = (size_t)(b + cl - xml);
	return 1;
}

int64_t s3_parse_time(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
			 &tm.tm_min, &tm.tm_sec) != 6)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm);
}
