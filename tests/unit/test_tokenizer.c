/* test_tokenizer.c - the engine's tokenizer on small hand-made vocabularies
 * of both families: merges, byte fallback, unknown characters, whitespace
 * runs, digits, emoji, special tokens, and decode(encode(x)) == x. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "../../engine/tokenizer.h"
#include "../../formats/formats.h"

#define SP "\xe2\x96\x81"

static int ids_eq(const int32_t *got, size_t n, const int32_t *want, size_t m)
{
	if (n != m) {
		printf("  got %zu ids:", n);
		for (size_t i = 0; i < n; i++)
			printf(" %d", got[i]);
		printf("\n");
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		if (got[i] != want[i]) {
			printf("  id %zu: got %d want %d\n", i, got[i], want[i]);
			return 0;
		}
	return 1;
}

/* Encodes s and compares with want[0..m). */
static int enc_is(const struct eng_tok *t, const char *s, int add_bos, const int32_t *want, size_t m)
{
	int32_t *ids;
	size_t n;
	int ok;
	if (eng_tok_encode(t, s, strlen(s), add_bos, &ids, &n) != HM_OK)
		return 0;
	ok = ids_eq(ids, n, want, m);
	free(ids);
	return ok;
}
#define ENC_IS(t, s, bos, ...)                                                             \
	do {                                                                               \
		static const int32_t want_[] = {__VA_ARGS__};                             \
		CHECK(enc_is((t), (s), (bos), want_, sizeof(want_) / sizeof(want_[0]))); \
	} while (0)

/* decode_all(encode(s)) == s */
static int round_trips(const struct eng_tok *t, const char *s)
{
	size_t len = strlen(s);
	int32_t *ids;
	size_t n, dl;
	char *d;
	int ok;
	if (eng_tok_encode(t, s, len, 1, &ids, &n) != HM_OK)
		return 0;
	if (eng_tok_decode_all(t, ids, n, 1, &d, &dl) != HM_OK) {
		free(ids);
		return 0;
	}
	ok = dl == len && !memcmp(d, s, len);
	if (!ok)
		printf("  round trip of '%s' gave '%s'\n", s, d);
	free(ids);
	free(d);
	return ok;
}

static struct eng_tok *open_json(json_t *root)
{
	struct hm_ctx ctx = {0};
	struct eng_tok *t = NULL;
	char *s = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (!s)
		return NULL;
	if (eng_tok_open_json_mem(&ctx, s, strlen(s), NULL, 0, &t) != HM_OK)
		printf("  open: %s\n", ctx.errmsg);
	free(s);
	return t;
}

/* SentencePiece style: <unk> <s> </s>, 256 byte tokens (3..258), then words. */
static const char *const spm_words[] = {SP, "h", "e", "l", "o", SP "h", "ll", SP "he", "llo", SP "hello",
					"1", "2", SP SP, "x"};
static const char *const spm_merges[] = {SP " h", "l l", SP "h e", "ll o", SP "he llo", SP " " SP};

static json_t *spm_json(int byte_fallback)
{
	json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
	static const char *const sp[] = {"<unk>", "<s>", "</s>"};
	char name[8];
	for (int i = 0; i < 3; i++) {
		json_object_set_new(vocab, sp[i], json_integer(i));
		json_array_append_new(added, json_pack("{s:i,s:s,s:b}", "id", i, "content", sp[i], "special", 1));
	}
	for (int b = 0; b < 256; b++) {
		snprintf(name, sizeof(name), "<0x%02X>", b);
		json_object_set_new(vocab, name, json_integer(3 + b));
	}
	for (size_t i = 0; i < sizeof(spm_words) / sizeof(spm_words[0]); i++)
		json_object_set_new(vocab, spm_words[i], json_integer(259 + (json_int_t)i));
	for (size_t i = 0; i < sizeof(spm_merges) / sizeof(spm_merges[0]); i++)
		json_array_append_new(merges, json_string(spm_merges[i]));
	return json_pack(
		"{s:o,s:{s:s,s:[{s:s,s:s},{s:s,s:{s:s},s:s}]},s:n,s:{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}]},"
		"s:{s:s,s:s,s:b,s:b,s:o,s:o}}",
		"added_tokens", added, "normalizer", "type", "Sequence", "normalizers", "type", "Prepend", "prepend", SP,
		"type", "Replace", "pattern", "String", " ", "content", SP, "pre_tokenizer", "post_processor", "type",
		"TemplateProcessing", "single", "SpecialToken", "id", "<s>", "type_id", 0, "Sequence", "id", "A",
		"type_id", 0, "model", "type", "BPE", "unk_token", "<unk>", "byte_fallback", byte_fallback, "fuse_unk", 1,
		"vocab", vocab, "merges", merges);
}

UNIT_TEST(tok_spm_merges_bytes_specials)
{
	struct eng_tok *t = open_json(spm_json(1));
	char buf[16];
	CHECK(t);
	CHECK(eng_tok_kind(t) == ENG_TOK_SPM && eng_tok_vocab_size(t) == 273);
	CHECK(eng_tok_bos(t) == 1 && eng_tok_eos(t) == 2 && eng_tok_unk(t) == 0 && eng_tok_add_bos(t));
	ENC_IS(t, "hello", -1, 1, 268);
	ENC_IS(t, "hello", 0, 268);
	/* unknown characters fall back to their bytes */
	ENC_IS(t, "hello!", 1, 1, 268, 3 + '!');
	ENC_IS(t, "\xf0\x9f\x98\x80", 1, 1, 259, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80); /* emoji */
	/* whitespace run: "▁▁▁h": "▁ h" (rank 0) first, then "▁ ▁" */
	ENC_IS(t, "  h", 1, 1, 271, 264);
	ENC_IS(t, "12", 1, 1, 259, 269, 270);
	/* special tokens split out; the text after them gets its own U+2581 */
	ENC_IS(t, "hello</s>hello", 1, 1, 268, 2, 268);
	ENC_IS(t, "</s>", 0, 2);
	/* decode: the leading space goes after BOS, bytes pass through */
	CHECK(eng_tok_decode(t, 268, 1, buf, sizeof(buf)) == 5 && !strcmp(buf, "hello"));
	CHECK(eng_tok_decode(t, 268, 268, buf, sizeof(buf)) == 6 && !strcmp(buf, " hello"));
	CHECK(eng_tok_decode(t, 3 + 0x41, 268, buf, sizeof(buf)) == 1 && !strcmp(buf, "A"));
	CHECK(eng_tok_decode(t, 268, 1, buf, 3) == 5); /* too small: length only */
	CHECK(eng_tok_decode(t, 273, 1, buf, sizeof(buf)) == -1);
	CHECK(round_trips(t, "hello"));
	CHECK(round_trips(t, "  hello  world \xf0\x9f\x98\x80 12\n\t"));
	CHECK(round_trips(t, " leading"));
	CHECK(round_trips(t, "bad \xff\xfe bytes"));
	CHECK(round_trips(t, ""));
	eng_tok_free(t);
}

UNIT_TEST(tok_spm_unknown_without_byte_fallback)
{
	struct eng_tok *t = open_json(spm_json(0));
	CHECK(t);
	/* unknown characters become <unk>, consecutive ones fused */
	ENC_IS(t, "h!?e", 0, 264, 0, 261);
	ENC_IS(t, "x", 0, 259, 272);
	eng_tok_free(t);
}

UNIT_TEST(tok_spm_gguf_scores)
{
	/* the same vocabulary as GGUF "llama": scores instead of merge ranks */
	struct hm_ctx ctx = {0};
	struct fmt_gguf_writer *w = NULL;
	struct fmt_gguf *g = NULL;
	struct eng_tok *t = NULL;
	char path[512], names[256][8];
	const char *toks[273];
	float scores[273];
	int32_t types[273];
	snprintf(path, sizeof(path), "%s/tok.gguf", unit_tmpdir());
	toks[0] = "<unk>";
	toks[1] = "<s>";
	toks[2] = "</s>";
	for (int b = 0; b < 256; b++) {
		snprintf(names[b], sizeof(names[b]), "<0x%02X>", b);
		toks[3 + b] = names[b];
	}
	for (int i = 0; i < 14; i++)
		toks[259 + i] = spm_words[i];
	for (int i = 0; i < 273; i++) {
		scores[i] = i < 259 ? 0.0f : -1000.0f - (float)i;
		types[i] = i == 0 ? ENG_TOK_UNKNOWN : i < 3 ? ENG_TOK_CONTROL : i < 259 ? ENG_TOK_BYTE : ENG_TOK_NORMAL;
	}
	/* merge results score by rank: ▁h 0, ll -1, ▁he -2, llo -3, ▁hello -4, ▁▁ -5 */
	scores[264] = 0;
	scores[265] = -1;
	scores[266] = -2;
	scores[267] = -3;
	scores[268] = -4;
	scores[271] = -5;
	CHECK(fmt_gguf_writer_new(&ctx, path, &w) == HM_OK);
	CHECK(fmt_gguf_writer_str(w, "tokenizer.ggml.model", "llama") == HM_OK);
	CHECK(fmt_gguf_writer_str_arr(w, "tokenizer.ggml.tokens", toks, 273) == HM_OK);
	CHECK(fmt_gguf_writer_arr(w, "tokenizer.ggml.scores", FMT_GGUF_F32, scores, 273) == HM_OK);
	CHECK(fmt_gguf_writer_arr(w, "tokenizer.ggml.token_type", FMT_GGUF_I32, types, 273) == HM_OK);
	CHECK(fmt_gguf_writer_finish(w) == HM_OK);
	fmt_gguf_writer_free(w);
	CHECK(fmt_gguf_open(&ctx, path, &g) == HM_OK);
	CHECK(eng_tok_open_gguf(&ctx, g, &t) == HM_OK);
	fmt_gguf_close(g);
	CHECK(eng_tok_bos(t) == 1 && eng_tok_eos(t) == 2 && eng_tok_add_bos(t));
	ENC_IS(t, "hello", -1, 1, 268);
	ENC_IS(t, "hello!", 1, 1, 268, 3 + '!');
	ENC_IS(t, "  h", 1, 1, 271, 264);
	ENC_IS(t, "hello</s>hello", 1, 1, 268, 2, 268);
	CHECK(round_trips(t, "  hello  world \xf0\x9f\x98\x80 12\n\t"));
	eng_tok_free(t);
}

/* Byte level: ids 0..255 are the byte alphabet in byte order, then merges. */
static void byte_char(unsigned b, char *out)
{
	unsigned cp = b, k = 0;
	if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
		for (unsigned x = 0; x < b; x++)
			k += !((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE);
		cp = 0x100 + k;
	}
	if (cp < 0x80) {
		out[0] = (char)cp;
		out[1] = 0;
	} else {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		out[2] = 0;
	}
}

static json_t *bl_json(int ignore_merges, const char *regex)
{
	static const char *const words[] = {"\xc4\xa0h", "ll", "ell", "\xc4\xa0hell", "\xc4\xa0hello", "12", "hello"};
	static const char *const merges[] = {"\xc4\xa0 h", "l l", "e ll", "\xc4\xa0h ell", "\xc4\xa0hell o", "1 2"};
	json_t *vocab = json_object(), *m = json_array(), *pre;
	char c[4];
	for (unsigned b = 0; b < 256; b++) {
		byte_char(b, c);
		json_object_set_new(vocab, c, json_integer(b));
	}
	for (int i = 0; i < 7; i++)
		json_object_set_new(vocab, words[i], json_integer(256 + i));
	for (int i = 0; i < 6; i++)
		json_array_append_new(m, json_string(merges[i]));
	if (regex)
		pre = json_pack("{s:s,s:[{s:s,s:{s:s},s:s},{s:s,s:b,s:b}]}", "type", "Sequence", "pretokenizers", "type",
				"Split", "pattern", "Regex", regex, "behavior", "Isolated", "type", "ByteLevel",
				"add_prefix_space", 0, "use_regex", 0);
	else
		pre = json_pack("{s:s,s:b}", "type", "ByteLevel", "add_prefix_space", 0);
	return json_pack("{s:[{s:i,s:s,s:b},{s:i,s:s,s:b}],s:o,s:{s:s},s:{s:s,s:b,s:o,s:o}}", "added_tokens", "id", 263,
			 "content", "<|end|>", "special", 1, "id", 264, "content", "<|begin|>", "special", 1,
			 "pre_tokenizer", pre, "decoder", "type", "ByteLevel", "model", "type", "BPE", "ignore_merges",
			 ignore_merges, "vocab", vocab, "merges", m);
}

UNIT_TEST(tok_bytelevel_gpt2)
{
	struct eng_tok *t = open_json(bl_json(0, NULL));
	char buf[16];
	CHECK(t);
	CHECK(eng_tok_kind(t) == ENG_TOK_BPE && eng_tok_vocab_size(t) == 265 && !strcmp(eng_tok_pre(t), "gpt-2"));
	CHECK(eng_tok_bos(t) == -1 && !eng_tok_add_bos(t));
	ENC_IS(t, " hello", 1, 260);
	ENC_IS(t, "hello", 1, 'h', 258, 'o'); /* no ignore_merges: "hello" is built by merges */
	ENC_IS(t, "123", 1, 261, '3');
	/* whitespace run: "a", "  " (\s+(?!\S)), " b" */
	ENC_IS(t, "a   b", 1, 'a', ' ', ' ', ' ', 'b');
	ENC_IS(t, "\xf0\x9f\x98\x80", 1, 0xF0, 0x9F, 0x98, 0x80);
	ENC_IS(t, "hi<|end|><|begin|>", 1, 'h', 'i', 263, 264);
	ENC_IS(t, "<|end|", 1, '<', '|', 'e', 'n', 'd', '|');
	CHECK(eng_tok_decode(t, 260, -1, buf, sizeof(buf)) == 6 && !strcmp(buf, " hello"));
	CHECK(eng_tok_decode(t, ' ', -1, buf, sizeof(buf)) == 1 && !strcmp(buf, " "));
	CHECK(eng_tok_decode(t, 263, -1, buf, sizeof(buf)) == 7 && !strcmp(buf, "<|end|>"));
	CHECK(eng_tok_find(t, "\xc4\xa0hello", 7) == 260 && eng_tok_find(t, "nope", 4) == -1);
	CHECK(round_trips(t, " hello  world\n\n\t x 12345 \xf0\x9f\x98\x80"));
	CHECK(round_trips(t, "invalid \xff\xfe\xc3 utf8"));
	eng_tok_free(t);
}

UNIT_TEST(tok_bytelevel_llama3_regex_ignore_merges)
{
	static const char re[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
				 "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
	struct eng_tok *t = open_json(bl_json(1, re));
	CHECK(t);
	CHECK(!strcmp(eng_tok_pre(t), "llama-bpe"));
	ENC_IS(t, "hello", 1, 262); /* in the vocabulary: one token, whatever the merges say */
	ENC_IS(t, " hello", 1, 260);
	ENC_IS(t, "12345", 1, 261, '3', '4', '5'); /* \p{N}{1,3}: "123" "45" */
	ENC_IS(t, "I'M", 1, 'I', '\'', 'M');
	CHECK(round_trips(t, "it's 2024\r\n\r\n  ok"));
	eng_tok_free(t);
}

UNIT_TEST(tok_refuses_bad_input)
{
	struct hm_ctx ctx = {0};
	struct eng_tok *t = NULL;
	int32_t *ids = (int32_t *)1;
	size_t n = 7;
	static const char *const bad[] = {
		"", "[]", "{\"model\": 1}", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}",
		"{\"model\": {\"vocab\": {\"a\": 4194304}}}", "{\"model\": {\"vocab\": {\"a\": 0}}}",
		"{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"vocab\": {\"a\": 0}}}",
		"{\"added_tokens\": [{\"id\": -3, \"content\": \"x\"}], \"model\": {\"vocab\": {\"a\": 0}}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ctx.errmsg[0] = 0;
		CHECK(eng_tok_open_json_mem(&ctx, bad[i], strlen(bad[i]), NULL, 0, &t) == HM_ERR_BAD_INPUT);
		CHECK(ctx.errmsg[0] && !t);
	}
	CHECK((t = open_json(bl_json(0, NULL))));
	CHECK(eng_tok_encode(t, "x", ENG_TOK_MAX_TEXT + 1, 0, &ids, &n) == HM_ERR_USAGE && !ids && !n);
	eng_tok_free(t);
	eng_tok_free(NULL);
}
