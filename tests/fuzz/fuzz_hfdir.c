/* fuzz_hfdir.c - libFuzzer target: the bytes as a config.json and as a
 * tokenizer_config.json (formats/hfdir.c). What the reader accepts must keep
 * every field inside its stated bounds and every list as long as it says;
 * what it refuses carries a one-line message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../../formats/hfdir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_u32(struct fmt_hf_u32 u)
{
	if (u.has && u.v > FMT_HF_MAX_SIZE)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hm_ctx ctx = {0};
	struct fmt_hf_config c;
	struct fmt_hf_tokcfg t;
	if (fmt_hf_config_parse(&ctx, (const char *)data, size, "config.json", &c) == HM_OK) {
		if (!c.hidden_size || c.hidden_size > FMT_HF_MAX_SIZE || !c.n_layer || !c.n_head || !c.intermediate_size)
			abort();
		check_u32(c.n_kv_head);
		check_u32(c.head_dim);
		check_u32(c.sliding_window);
		if ((c.rms_norm_eps.has && !(c.rms_norm_eps.v > 0 && c.rms_norm_eps.v < 1)) ||
		    (c.rope_theta.has && !(c.rope_theta.v > 0)) || (c.n_long && !c.long_factor))
			abort();
		for (size_t i = 0; i < c.n_long; i++)
			if (!(c.long_factor[i] > 0))
				abort();
		for (uint32_t l = 0; c.no_rope_layers && l < c.n_layer; l++)
			if (c.no_rope_layers[l] > 1)
				abort();
		fmt_hf_config_release(&c);
	} else if (!ctx.errmsg[0] || strchr(ctx.errmsg, '\n')) {
		abort();
	}
	ctx.errmsg[0] = 0;
	if (fmt_hf_tokcfg_parse(&ctx, (const char *)data, size, "tokenizer_config.json", &t) == HM_OK) {
		if ((t.bos && strlen(t.bos) > FMT_HF_MAX_TOKEN) || (t.chat_template && !t.chat_template_len && t.chat_template[0]))
			abort();
		fmt_hf_tokcfg_release(&t);
	} else if (!ctx.errmsg[0]) {
		abort();
	}
	return 0;
}
