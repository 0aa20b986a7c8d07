/* test_ui.c - the web pages' escapers: every untrusted string is safe in
 * HTML text, attributes and URLs, and invisible characters are shown. */
#include <stdlib.h>
#include "unit.h"
#include "../../serve/ui-int.h"

/* What ui_text writes for s (caller frees). */
static char *esc(const char *s, size_t n)
{
	struct ui_page p;
	memset(&p, 0, sizeof(p));
	ui_textn(&p, s, n);
	if (p.err)
		return NULL;
	return p.b.buf ? util_buf_detach(&p.b) : util_strdup("");
}

static char *url(const char *s, int keep_slash)
{
	struct ui_page p;
	memset(&p, 0, sizeof(p));
	ui_url(&p, s, keep_slash);
	return p.b.buf ? util_buf_detach(&p.b) : util_strdup("");
}

#define CHECK_ESC(in, want)                              \
	do {                                             \
		char *got_ = esc(in, sizeof(in) - 1);    \
		int ok_ = got_ && !strcmp(got_, want);   \
		if (!ok_)                                \
			printf("  got %s\n", got_ ? got_ : "(null)"); \
		free(got_);                              \
		CHECK(ok_);                              \
	} while (0)

UNIT_TEST(ui_text_escapes_markup_and_quotes)
{
	CHECK_ESC("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;");
	CHECK_ESC("\"><img src=x onerror='a'>", "&quot;&gt;&lt;img src=x onerror=&#39;a&#39;&gt;");
	CHECK_ESC("a & b", "a &amp; b");
	CHECK_ESC("plain/name-1.0_x", "plain/name-1.0_x");
	CHECK_ESC("", "");
}

UNIT_TEST(ui_text_shows_invisible_characters)
{
	CHECK_ESC("\xe2\x80\xae" "gnp.exe", "[U+202E]gnp.exe");       /* RTL override */
	CHECK_ESC("a\xe2\x81\xa6" "b", "a[U+2066]b");                  /* LRI */
	CHECK_ESC("zw\xe2\x80\x8bj", "zw[U+200B]j");                   /* zero-width space */
	CHECK_ESC("tab\tnl\nesc\x1b", "tab[U+0009]nl[U+000A]esc[U+001B]");
	CHECK_ESC("\xef\xbb\xbf" "bom", "[U+FEFF]bom");
	CHECK_ESC("caf\xc3\xa9 \xe6\x97\xa5\xf0\x9f\x98\x80", "caf\xc3\xa9 \xe6\x97\xa5\xf0\x9f\x98\x80"); /* kept */
}

UNIT_TEST(ui_text_replaces_invalid_utf8)
{
	CHECK_ESC("a\xff" "b", "a\xef\xbf\xbd" "b");
	CHECK_ESC("\xc0\xbc" "x", "\xef\xbf\xbd\xef\xbf\xbd" "x");     /* overlong '<' */
	CHECK_ESC("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* a surrogate */
	CHECK_ESC("cut\xe2\x80", "cut\xef\xbf\xbd\xef\xbf\xbd");
	CHECK_ESC("a\0b", "a[U+0000]b");
}

UNIT_TEST(ui_url_encodes_all_but_unreserved)
{
	char *a = url("javascript:alert(1)", 1), *b = url("org/na me?#&\"'<>", 1), *c = url("a/b", 0),
	     *d = url("\xe2\x80\xae", 1);
	CHECK(a && b && c && d);
	int ok = !strcmp(a, "javascript%3Aalert%281%29") && !strcmp(b, "org/na%20me%3F%23%26%22%27%3C%3E") &&
		 !strcmp(c, "a%2Fb") && !strcmp(d, "%E2%80%AE");
	if (!ok)
		printf("  got %s | %s | %s | %s\n", a, b, c, d);
	free(a);
	free(b);
	free(c);
	free(d);
	CHECK(ok);
}
