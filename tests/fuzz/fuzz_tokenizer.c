/* fuzz_tokenizer.c - libFuzzer target: a tokenizer.json (the bytes before
 * the first NUL) and a text to encode (the bytes after it). What the loader
 * accepts must encode any text to ids inside the vocabulary and decode them
 * without going out of bounds; what it refuses carries a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../../engine/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char fallback[] = " Hello  world\n\t12345 caf\xc3\xa9 \xf0\x9f\x98\x80 <s></s><|eot_id|> \xff";
	struct hm_ctx ctx = {0};
	struct eng_tok *t = NULL;
	const uint8_t *nul = memchr(data, 0, size);
	size_t jl = nul ? (size_t)(nul - data) : size;
	const char *text = nul ? (const char *)nul + 1 : fallback;
	size_t tl = nul ? size - jl - 1 : sizeof(fallback) - 1;
	int32_t *ids = NULL;
	size_t n = 0;
	if (eng_tok_open_json_mem(&ctx, (const char *)data, jl, NULL, 0, &t) != HM_OK) {
		if (!ctx.errmsg[0])
			abort();
		return 0;
	}
	for (int bos = -1; bos <= 1; bos++) {
		char *dec = NULL, buf[64];
		size_t dl;
		enum hm_err err = eng_tok_encode(t, text, tl, bos, &ids, &n);
		if (err) {
			if (ids || n)
				abort();
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			if (ids[i] < 0 || (uint32_t)ids[i] >= eng_tok_vocab_size(t))
				abort();
			if (eng_tok_decode(t, ids[i], i ? ids[i - 1] : -1, buf, sizeof(buf)) < 0)
				abort();
		}
		if (eng_tok_decode_all(t, ids, n, bos == 0, &dec, &dl) == HM_OK && (!dec || dec[dl] != 0))
			abort();
		free(dec);
		free(ids);
		ids = NULL;
	}
	eng_tok_free(t);
	return 0;
}
