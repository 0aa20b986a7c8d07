/* test_s3.c - the SigV4 presigner against AWS's documented examples, the
 * s3:// configuration from the environment, and the small XML reader. */
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "../../s3/s3.h"

#define AK "AKIAIOSFODNN7EXAMPLE"
#define SK "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define T20130524 1369353600 /* 2013-05-24T00:00:00Z */

/* "Signature Calculations for the Authorization Header", example GET Object */
UNIT_TEST(s3_sigv4_aws_header_example)
{
	char sig[65];
	s3_sigv4_signature(SK, "20130524", "us-east-1", "s3",
			   "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
			   "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
			   sig);
	CHECK_STR(sig, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

/* "Authenticating Requests: Using Query Parameters", the presigned GET example */
UNIT_TEST(s3_presign_aws_query_example)
{
	struct s3_config cfg = {0};
	cfg.endpoint = "https://s3.amazonaws.com";
	cfg.region = "us-east-1";
	cfg.access_key = AK;
	cfg.secret_key = SK;
	cfg.bucket = "examplebucket";
	cfg.prefix = "";
	char *url = s3_presign(&cfg, "GET", "test.txt", T20130524, 86400);
	CHECK(url != NULL);
	CHECK_STR(url, "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
		       "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
		       "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
		       "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
	free(url);
	/* the method is signed: HEAD gets another signature; bad keys and expiries are refused */
	url = s3_presign(&cfg, "HEAD", "test.txt", T20130524, 86400);
	CHECK(url && !strstr(url, "aeeed9bbccd4d02ee5c0109b86d86835"));
	free(url);
	CHECK(s3_presign(&cfg, "GET", "a b", T20130524, 60) == NULL);
	CHECK(s3_presign(&cfg, "GET", "/abs", T20130524, 60) == NULL);
	CHECK(s3_presign(&cfg, "GET", "ok", T20130524, 0) == NULL);
	CHECK(s3_presign(&cfg, "GET", "ok", T20130524, 604801) == NULL);
	/* path-style: the bucket is in the path and the host keeps its port */
	cfg.endpoint = "http://127.0.0.1:7480";
	cfg.path_style = 1;
	url = s3_presign(&cfg, "GET", "p/blobs/ab", T20130524, 60);
	{
		const char *want = "http://127.0.0.1:7480/examplebucket/p/blobs/ab?X-Amz-Algorithm=";
		CHECK(url && !strncmp(url, want, strlen(want)));
	}
	CHECK(url && !strstr(url, SK));
	free(url);
}

UNIT_TEST(s3_config_env)
{
	struct hm_ctx ctx = {0};
	struct s3_config cfg;
	setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secret/key+x", 1);
	unsetenv("AWS_SESSION_TOKEN");
	setenv("AWS_REGION", "eu-west-1", 1);
	setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/", 1);
	unsetenv("AWS_ENDPOINT_URL_S3");
	CHECK(s3_config_from_env(&ctx, "s3://my-bucket/some/prefix/", &cfg) == HM_OK);
	CHECK_STR(cfg.bucket, "my-bucket");
	CHECK_STR(cfg.prefix, "some/prefix");
	CHECK_STR(cfg.endpoint, "http://127.0.0.1:9000");
	CHECK_STR(cfg.region, "eu-west-1");
	CHECK(cfg.path_style == 1);
	s3_config_release(&cfg);
	CHECK(s3_config_from_env(&ctx, "s3://my-bucket", &cfg) == HM_OK);
	CHECK_STR(cfg.prefix, "");
	s3_config_release(&cfg);
	/* AWS's own endpoint: virtual-hosted */
	unsetenv("AWS_ENDPOINT_URL");
	CHECK(s3_config_from_env(&ctx, "s3://my-bucket", &cfg) == HM_OK);
	CHECK_STR(cfg.endpoint, "https://s3.eu-west-1.amazonaws.com");
	CHECK(cfg.path_style == 0);
	s3_config_release(&cfg);
	/* malformed: a one-line usage error that never shows the secret */
	CHECK(s3_config_from_env(&ctx, "s3://A_B", &cfg) == HM_ERR_USAGE);
	CHECK(s3_config_from_env(&ctx, "s3://bucket/../x y", &cfg) == HM_ERR_USAGE);
	unsetenv("AWS_SECRET_ACCESS_KEY");
	CHECK(s3_config_from_env(&ctx, "s3://bucket", &cfg) == HM_ERR_USAGE);
	CHECK(strstr(ctx.errmsg, "AWS_SECRET_ACCESS_KEY") != NULL);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_REGION");
	CHECK(s3_is_uri("s3://b") && !s3_is_uri("/tmp/s3://b"));
}

UNIT_TEST(s3_xml_reader)
{
	const char *x = "<R><Contents><Key>a&amp;b</Key><ETag>&quot;x&quot;</ETag></Contents>"
			"<Contents><Key>c</Key></Contents><IsTruncated>false</IsTruncated><Key>unclosed";
	char out[32];
	size_t pos = 0, n = strlen(x);
	CHECK(s3_xml_next(x, n, &pos, "Key", out, sizeof(out)) && !strcmp(out, "a&b"));
	CHECK(s3_xml_next(x, n, &pos, "Key", out, sizeof(out)) && !strcmp(out, "c"));
	CHECK(!s3_xml_next(x, n, &pos, "Key", out, sizeof(out)));
	pos = 0;
	CHECK(s3_xml_next(x, n, &pos, "ETag", out, sizeof(out)) && !strcmp(out, "\"x\""));
	pos = 0;
	CHECK(s3_xml_next(x, n, &pos, "Key", out, 2) && !strcmp(out, "a"));
	CHECK(s3_parse_time("2026-12-03T07:54:50.000Z") == 1796284490);
	CHECK(s3_parse_time("garbage") == -1);
	CHECK(s3_key_ok("a/b-c_d.e~f") && !s3_key_ok("a b") && !s3_key_ok("") && !s3_key_ok("x?y"));
}
