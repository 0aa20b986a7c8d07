/* test_sync.c - the manifest parser. */
#include <string.h>
#include "unit.h"
#include "../../mirror/sync.h"

static int parse(const char *text, struct sync_manifest *m, struct hm_ctx *ctx)
{
	return sync_manifest_parse(ctx, "M", text, strlen(text), m);
}

UNIT_TEST(sync_manifest_ok)
{
	struct hm_ctx ctx = {0};
	struct sync_manifest m;
	const char *text = "# lab models\n"
			   "meta-llama/Llama-3.2-1B@v1.0 include=*.json,*.safetensors exclude=original/*\n"
			   "\n"
			   "  gpt2   # a comment\n"
			   "datasets/org/data\n"
			   "org/x type=dataset convert=q8_0 smoke=yes\r\n";
	CHECK(parse(text, &m, &ctx) == HM_OK);
	CHECK(m.n == 4);
	CHECK_STR(m.v[0].repo, "meta-llama/Llama-3.2-1B");
	CHECK_STR(m.v[0].rev, "v1.0");
	CHECK(m.v[0].ninclude == 2 && !strcmp(m.v[0].include[1], "*.safetensors"));
	CHECK(m.v[0].nexclude == 1 && !strcmp(m.v[0].exclude[0], "original/*"));
	CHECK(m.v[0].line == 2);
	CHECK_STR(m.v[1].repo, "gpt2");
	CHECK(m.v[1].rev == NULL && !strcmp(m.v[1].type, "model") && m.v[1].line == 4);
	CHECK(!strcmp(m.v[2].type, "dataset") && !strcmp(m.v[2].repo, "org/data"));
	CHECK(!strcmp(m.v[3].type, "dataset") && !strcmp(m.v[3].convert, "q8_0") && m.v[3].smoke);
	sync_manifest_free(&m);
	CHECK(parse("", &m, &ctx) == HM_OK && m.n == 0);
	sync_manifest_free(&m);
}

UNIT_TEST(sync_manifest_bad)
{
	static const char *const bad[] = {
		"../x\n", "org/x@\n", "org/x junk\n", "org/x type=space\n", "org/x smoke=1\n", "org/x\norg/x\n",
		"org/x what=1\n", "a/b/c\n", "/abs\n", "org/x@a b=\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct hm_ctx ctx = {0};
		struct sync_manifest m;
		CHECK(parse(bad[i], &m, &ctx) == HM_ERR_BAD_INPUT);
		CHECK(!strncmp(ctx.errmsg, "M:", 2));
	}
	struct hm_ctx ctx = {0};
	struct sync_manifest m;
	CHECK(sync_manifest_parse(&ctx, "M", "org/x\0evil\n", 11, &m) == HM_ERR_BAD_INPUT);
}
