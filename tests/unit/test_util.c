/* test_util.c - buffers, hex, path and repo-id validation, glob, files. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "unit.h"
#include "../../util/util.h"

UNIT_TEST(util_buf_grows)
{
	struct util_buf b = UTIL_BUF_INIT;
	char *s;
	for (int i = 0; i < 1000; i++)
		CHECK(util_buf_add(&b, "ab", 2) == 0);
	CHECK(b.len == 2000);
	CHECK(b.buf[2000] == '\0');
	CHECK(util_buf_adds(&b, "!") == 0);
	CHECK(util_buf_printf(&b, "%d-%s", 42, "x") == 0);
	CHECK(b.len == 2005);
	CHECK_STR(b.buf + 2000, "!42-x");
	s = util_buf_detach(&b);
	CHECK(b.buf == NULL && b.len == 0);
	CHECK(strlen(s) == 2005);
	free(s);
	s = util_buf_detach(&b);
	CHECK(s && *s == '\0');
	free(s);
	util_buf_release(&b);
}

UNIT_TEST(util_strings)
{
	char *s = util_asprintf("%s/%d", "a", 7);
	CHECK(s);
	CHECK_STR(s, "a/7");
	free(s);
	s = util_strndup("abcdef", 3);
	CHECK_STR(s, "abc");
	free(s);
	CHECK(util_strdup(NULL) == NULL);
}

UNIT_TEST(util_hex_roundtrip)
{
	unsigned char in[] = {0x00, 0x01, 0xab, 0xff};
	char out[9];
	util_hex(in, 4, out);
	CHECK_STR(out, "0001abff");
	CHECK(util_is_hex("0001abff", 8));
	CHECK(!util_is_hex("0001ABFF", 8));
	CHECK(!util_is_hex("0001abf", 8));
	CHECK(!util_is_hex("0001abff0", 8));
	CHECK(!util_is_hex("0001abfg", 8));
	CHECK(!util_is_hex(NULL, 8));
}

UNIT_TEST(util_path_safety)
{
	static const char *const good[] = {
		"a", "config.json", "a/b/c.txt", ".gitattributes", "dir/.hidden", "a..b", "...",
		"..a", "a.", "unicode/caf\xc3\xa9.txt", "emoji/\xf0\x9f\x98\x80", "a b/c d",
		"\xe2\x82\xac", "\xef\xbf\xbd", ".github/x.yml", "a/.gitx",
	};
	static const char *const bad[] = {
		"", "/", "/etc/passwd", "..", ".", "../x", "a/../b", "a/..", "./a", "a/./b", "a/.",
		"a//b", "a/", "//a", "a\\b", "..\\x", "a\nb", "a\tb", "a\x01", "a\x1f", "a\x7f",
		"\xc0\xaf", "\xc0\x80", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xed\xa0\x80",
		"\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\xff", "\x80", "a\xc3",
		"\xe2\x82", "\xc3\x28", ".git/config", "a/.GIT/hooks/pre-commit", ".git",
	};
	char *longp;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK(util_path_is_safe(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(!util_path_is_safe(bad[i]));
	CHECK(!util_path_is_safe(NULL));
	longp = malloc(4098);
	CHECK(longp);
	memset(longp, 'a', 4096);
	longp[4096] = '\0';
	CHECK(util_path_is_safe(longp));
	longp[4096] = 'a';
	longp[4097] = '\0';
	CHECK(!util_path_is_safe(longp));
	free(longp);
}

UNIT_TEST(util_repo_ids)
{
	static const char *const good[] = {
		"gpt2", "openai-community/gpt2", "a/b", "Qwen/Qwen2.5-0.5B-Instruct", "a_b/c.d-e",
		"x1/y_", "_a/_b",
	};
	static const char *const bad[] = {
		"", "/", "a/", "/a", "a/b/c", "a//b", "-a", "a-", ".a", "a.", "a--b", "a..b",
		"org/-x", "org/x.", "a b", "a\\b", "caf\xc3\xa9", "../x", "a/..", "org/na:me",
		"a/b?", "a%2fb",
	};
	char id[200];
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK(util_repo_id_is_valid(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(!util_repo_id_is_valid(bad[i]));
	CHECK(!util_repo_id_is_valid(NULL));
	memset(id, 'a', 96);
	id[96] = '\0';
	CHECK(util_repo_id_is_valid(id));
	id[96] = 'a';
	id[97] = '\0';
	CHECK(!util_repo_id_is_valid(id));
	memset(id, 'a', 96);
	id[96] = '/';
	memset(id + 97, 'b', 96);
	id[193] = '\0';
	CHECK(util_repo_id_is_valid(id));
}

UNIT_TEST(util_glob)
{
	CHECK(util_glob_match("*.json", "config.json"));
	CHECK(util_glob_match("*.json", "a/b.json"));    /* '*' crosses '/' */
	CHECK(util_glob_match("*", ".gitattributes"));   /* leading dots too */
	CHECK(util_glob_match("a/*", "a/b/c"));
	CHECK(!util_glob_match("*.json", "config.json5"));
	CHECK(util_glob_match("model-?????" "-of-*.safetensors" /* no trigraph */, "model-00001-of-00002.safetensors"));
	CHECK(!util_glob_match("?", "ab"));
	CHECK(util_glob_match("[ab]*", "b.txt"));
	CHECK(!util_glob_match("[ab]*", "c.txt"));
	CHECK(util_glob_match("[!ab]*", "c.txt"));
	CHECK(util_glob_match("*.[Tt][Xx][Tt]", "x/y.TXT"));
	CHECK(util_glob_match("onnx/", "onnx/model.onnx")); /* hf: a trailing slash means everything under it */
	CHECK(!util_glob_match("onnx/", "onnxx/model.onnx"));
	CHECK(util_glob_match("a\\b", "a\\b")); /* backslash is literal, as in Python */
	CHECK(util_glob_match("[", "["));
	CHECK(!util_glob_match(NULL, "x"));
}

UNIT_TEST(util_human)
{
	char b[32];
	CHECK_STR(util_human_size(0, b, sizeof(b)), "0 B");
	CHECK_STR(util_human_size(1023, b, sizeof(b)), "1023 B");
	CHECK_STR(util_human_size(1536, b, sizeof(b)), "1.5 KiB");
	CHECK_STR(util_human_size(3ull << 30, b, sizeof(b)), "3.0 GiB");
}

UNIT_TEST(util_files)
{
	char p[512], q[512];
	char *data = NULL;
	size_t len = 0;
	struct stat sb;

	snprintf(p, sizeof(p), "%s/x/y/z", unit_tmpdir());
	CHECK(util_mkdir_p(p, 0755) == 0);
	CHECK(util_mkdir_p(p, 0755) == 0);
	CHECK(stat(p, &sb) == 0 && S_ISDIR(sb.st_mode));
	snprintf(q, sizeof(q), "%s/n/m/file.txt", unit_tmpdir());
	CHECK(util_mkdir_parents(q, 0755) == 0);
	CHECK(util_write_file_atomic(q, "hello", 5) == 0);
	CHECK(util_write_file_atomic(q, "world!", 6) == 0);
	CHECK(util_read_file(q, 100, &data, &len) == 0);
	CHECK(len == 6 && memcmp(data, "world!", 6) == 0 && data[6] == '\0');
	free(data);
	CHECK(util_read_file(q, 3, &data, &len) == -1);
	CHECK(data == NULL);
	CHECK(util_fsync_dir(p) == 0);
	/* a file in the way of mkdir -p */
	snprintf(p, sizeof(p), "%s/n/m/file.txt/sub", unit_tmpdir());
	CHECK(util_mkdir_p(p, 0755) == -1);
	CHECK(util_now() > 0);
	CHECK(util_unix_time() > 1600000000);
}

/* The one UTF-8 reader (util_utf8_next) that formats/, serve/ and cmd/ all use. */
UNIT_TEST(util_utf8_reader)
{
	static const struct {
		const char *s;
		long cp;
		size_t len;
	} cases[] = {
		{"A", 'A', 1},
		{"\xc3\xa9", 0xe9, 2},
		{"\xe2\x82\xac", 0x20ac, 3},
		{"\xf0\x9f\x98\x80", 0x1f600, 4},
		{"\xf4\x8f\xbf\xbf", 0x10ffff, 4},
		{"\xc0\x80", -1, 1},             /* overlong NUL */
		{"\xe0\x80\x80", -1, 1},         /* overlong */
		{"\xed\xa0\x80", -1, 1},         /* surrogate */
		{"\xf4\x90\x80\x80", -1, 1},     /* past U+10FFFF */
		{"\xe2\x82", -1, 1},             /* cut short */
		{"\x80", -1, 1},                 /* a lone continuation byte */
		{"\xc3\x28", -1, 1},             /* not a continuation */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = 99, n = strlen(cases[i].s);
		long cp = util_utf8_next((const unsigned char *)cases[i].s, n, &len);
		CHECK(cp == cases[i].cp && len == cases[i].len);
		CHECK(util_utf8_valid((const unsigned char *)cases[i].s, n) == (cases[i].cp >= 0));
	}
	CHECK(util_utf8_valid((const unsigned char *)"", 0));
	CHECK(util_utf8_valid((const unsigned char *)"caf\xc3\xa9 \xe2\x82\xac", 9));
	CHECK(!util_utf8_valid((const unsigned char *)"caf\xc3\xa9 \xe2\x82", 8));
}

UNIT_TEST(util_json_depth_counts_brackets_outside_strings)
{
	static const char deep[] = "[[[[[[[[[[1]]]]]]]]]]";
	CHECK(util_json_depth("", 0) == 0);
	CHECK(util_json_depth("{\"paths\": [\"a\"]}", 16) == 2);
	CHECK(util_json_depth("{\"p\": \"[[[[\\\"[[\"}", 17) == 1);
	CHECK(util_json_depth(deep, sizeof(deep) - 1) == 10);
	CHECK(util_json_depth("]]]}}[", 6) == 1);
}
