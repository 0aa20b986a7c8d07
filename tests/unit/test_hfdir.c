/* test_hfdir.c - unit tests of formats/hfdir.c, the one reader of config.json
 * and tokenizer_config.json: what a good file gives, and a one-line error
 * naming the file and the field for bad types, out-of-range values, missing
 * fields, and files too large to be honest. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "../../formats/hfdir.h"

#define BASE "\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 2," \
	" \"num_attention_heads\": 4, \"intermediate_size\": 96"

/* Parses {BASE, extra}; returns the error and leaves the message in ctx. */
static enum hm_err parse(struct hm_ctx *ctx, const char *extra, struct fmt_hf_config *c)
{
	char buf[8192];
	snprintf(buf, sizeof(buf), "{" BASE "%s%s}", extra[0] ? ", " : "", extra);
	ctx->errmsg[0] = 0;
	return fmt_hf_config_parse(ctx, buf, strlen(buf), "d/config.json", c);
}

/* The extra fields are refused with a message that names the file and needle. */
static int refused(const char *extra, const char *needle)
{
	struct hm_ctx ctx = {0};
	struct fmt_hf_config c;
	enum hm_err err = parse(&ctx, extra, &c);
	int ok = err == HM_ERR_BAD_INPUT && strstr(ctx.errmsg, "'d/config.json': ") == ctx.errmsg &&
		 strstr(ctx.errmsg, needle) && !strchr(ctx.errmsg, '\n');
	if (!ok)
		fprintf(stderr, "  %s -> %d '%s' (wanted '%s')\n", extra, err, ctx.errmsg, needle);
	if (!err)
		fmt_hf_config_release(&c);
	return ok;
}

UNIT_TEST(hfdir_config_good)
{
	struct hm_ctx ctx = {0};
	struct fmt_hf_config c;
	CHECK(parse(&ctx, "\"num_key_value_heads\": 2, \"rope_theta\": 500000.0, \"max_position_embeddings\": 4096.0,"
		    " \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32.0, \"low_freq_factor\": 1.0,"
		    " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192},"
		    " \"tie_word_embeddings\": false, \"head_dim\": null, \"eos_token_id\": [128001, 128009]",
		    &c) == HM_OK);
	CHECK(c.family == FMT_HF_LLAMA);
	CHECK_STR(c.arch, "LlamaForCausalLM");
	CHECK(c.hidden_size == 64 && c.n_layer == 2 && c.n_head == 4 && c.intermediate_size == 96);
	CHECK(c.n_kv_head.has && c.n_kv_head.v == 2);
	CHECK(c.max_position_embeddings.has && c.max_position_embeddings.v == 4096);
	CHECK(!c.head_dim.has && !c.vocab_size.has);
	CHECK(c.rope == FMT_HF_ROPE_LLAMA3 && c.rope_factor.v == 32 && c.rope_original_max.v == 8192);
	CHECK(fmt_hf_num_or(c.rope_theta, 1) == 500000 && fmt_hf_num_or(c.rms_norm_eps, 0.5) == 0.5);
	CHECK(c.tie_word_embeddings == 0 && c.eos_token_id == 128001 && c.bos_token_id == -1);
	fmt_hf_config_release(&c);
	fmt_hf_config_release(&c); /* twice is fine */
}

UNIT_TEST(hfdir_config_families_and_lists)
{
	struct hm_ctx ctx = {0};
	struct fmt_hf_config c;
	const char *cfg = "{\"model_type\": \"gemma3_text\", \"hidden_size\": 64, \"num_hidden_layers\": 3,"
			  " \"num_attention_heads\": 4, \"intermediate_size\": 96, \"sliding_window\": 4,"
			  " \"layer_types\": [\"sliding_attention\", \"sliding_attention\", \"full_attention\"],"
			  " \"final_logit_softcapping\": null, \"rope_local_base_freq\": 10000.0}";
	CHECK(fmt_hf_config_parse(&ctx, cfg, strlen(cfg), "g", &c) == HM_OK);
	CHECK(c.family == FMT_HF_GEMMA3 && c.arch[0] == 0);
	CHECK(c.layer_sliding && c.layer_sliding[0] == 1 && c.layer_sliding[2] == 0);
	CHECK(!c.final_logit_softcapping.has && c.sliding_window.v == 4);
	fmt_hf_config_release(&c);
	CHECK(parse(&ctx, "\"architectures\": [\"GPT2LMHeadModel\"]", &c) == HM_ERR_BAD_INPUT); /* duplicate key */
	const char *phi = "{\"architectures\": [\"Phi3ForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 2,"
			  " \"num_attention_heads\": 4, \"intermediate_size\": 96, \"rope_scaling\": {\"type\": \"su\","
			  " \"long_factor\": [1.0, 2.5], \"short_factor\": [1, 1]}}";
	CHECK(fmt_hf_config_parse(&ctx, phi, strlen(phi), "p", &c) == HM_OK);
	CHECK(c.family == FMT_HF_PHI3 && c.rope == FMT_HF_ROPE_LONGROPE && c.n_long == 2 && c.long_factor[1] == 2.5f);
	fmt_hf_config_release(&c);
	const char *odd = "{\"architectures\": [\"NewForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 2,"
			  " \"num_attention_heads\": 4, \"intermediate_size\": 96, \"rope_scaling\": {\"rope_type\": \"dynamic\"}}";
	CHECK(fmt_hf_config_parse(&ctx, odd, strlen(odd), "o", &c) == HM_OK);
	CHECK(c.family == FMT_HF_UNKNOWN && c.rope == FMT_HF_ROPE_OTHER && !strcmp(c.rope_type_name, "dynamic"));
	fmt_hf_config_release(&c);
}

UNIT_TEST(hfdir_config_bad_types)
{
	CHECK(refused("\"num_key_value_heads\": \"2\"", "'num_key_value_heads' is not an integer"));
	CHECK(refused("\"head_dim\": 16.5", "'head_dim' is not an integer"));
	CHECK(refused("\"rope_theta\": \"1e4\"", "'rope_theta' is not a number"));
	CHECK(refused("\"tie_word_embeddings\": 1", "'tie_word_embeddings' is not true or false"));
	CHECK(refused("\"rope_scaling\": [1]", "'rope_scaling' is not an object"));
	CHECK(refused("\"rope_scaling\": {\"rope_type\": 3}", "'rope_scaling.rope_type' is not a string"));
	CHECK(refused("\"rope_scaling\": {\"type\": \"su\", \"long_factor\": [1, \"x\"]}",
		      "'rope_scaling.long_factor[1]' is not a positive number"));
	CHECK(refused("\"layer_types\": [\"full_attention\", \"linear\"]", "'layer_types[1]' is not sliding_attention"));
	CHECK(refused("\"no_rope_layers\": [1, 2]", "'no_rope_layers[1]' is not 0 or 1"));
	CHECK(refused("\"no_rope_layers\": {}", "'no_rope_layers' is not a list of 2 layers"));
	CHECK(refused("\"hidden_act\": 7", "'hidden_act' is not a string"));
	CHECK(refused("\"mlp_only_layers\": 3", "'mlp_only_layers' is not a list"));
	CHECK(refused("\"bos_token_id\": \"<s>\"", "'bos_token_id' is not a token id"));
	struct hm_ctx ctx = {0};
	struct fmt_hf_config c;
	CHECK(fmt_hf_config_parse(&ctx, "[1, 2]", 6, "d/config.json", &c) == HM_ERR_BAD_INPUT);
	CHECK(strstr(ctx.errmsg, "'d/config.json': not a JSON object"));
	CHECK(fmt_hf_config_parse(&ctx, "{\"a\": ", 6, "d/config.json", &c) == HM_ERR_BAD_INPUT);
	CHECK(strstr(ctx.errmsg, "not a JSON object (line 1"));
}

UNIT_TEST(hfdir_config_out_of_range)
{
	CHECK(refused("\"num_key_value_heads\": 0", "'num_key_value_heads' = 0 is out of range (1..1073741824)"));
	CHECK(refused("\"vocab_size\": -5", "'vocab_size' = -5 is out of range"));
	CHECK(refused("\"max_position_embeddings\": 1e300", "'max_position_embeddings'"));
	CHECK(refused("\"rope_theta\": -1", "'rope_theta' = -1 is out of range"));
	CHECK(refused("\"rope_theta\": 0", "'rope_theta' = 0 is out of range"));
	CHECK(refused("\"rms_norm_eps\": 2", "'rms_norm_eps' = 2 is out of range"));
	CHECK(refused("\"partial_rotary_factor\": 1.5", "'partial_rotary_factor' = 1.5 is out of range"));
	CHECK(refused("\"attn_logit_softcapping\": -3", "'attn_logit_softcapping' = -3 is out of range"));
	CHECK(refused("\"sliding_window_pattern\": 0", "'sliding_window_pattern' = 0 is out of range"));
	CHECK(refused("\"query_pre_attn_scalar\": 0", "'query_pre_attn_scalar'"));
	CHECK(refused("\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 0}", "'rope_scaling.factor' = 0"));
	CHECK(refused("\"rope_scaling\": {\"rope_type\": \"llama3\", \"low_freq_factor\": 4, \"high_freq_factor\": 2}",
		      "'rope_scaling.high_freq_factor' is not above low_freq_factor"));
	CHECK(refused("\"rope_scaling\": {\"rope_type\": \"longrope\", \"attention_factor\": 1000}",
		      "'rope_scaling.attention_factor'"));
	CHECK(refused("\"rope_scaling\": {\"type\": \"su\", \"short_factor\": [1, -1]}",
		      "'rope_scaling.short_factor[1]' is not a positive number"));
	CHECK(refused("\"num_experts_per_tok\": 0", "'num_experts_per_tok' = 0 is out of range"));
	CHECK(refused("\"decoder_sparse_step\": 0", "'decoder_sparse_step' = 0 is out of range"));
}

UNIT_TEST(hfdir_config_missing_fields)
{
	const char *need[] = {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"};
	for (size_t i = 0; i < 4; i++) {
		char buf[512], want[96];
		struct hm_ctx ctx = {0};
		struct fmt_hf_config c;
		size_t n = 0;
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "{\"vocab_size\": 10");
		for (size_t j = 0; j < 4; j++) /* each required field but one; that one null */
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, ", \"%s\": %s", need[j], i == j ? "null" : "64");
		snprintf(buf + n, sizeof(buf) - n, "}");
		snprintf(want, sizeof(want), "'x/config.json': config.json has no '%s'", need[i]);
		CHECK(fmt_hf_config_parse(&ctx, buf, strlen(buf), "x/config.json", &c) == HM_ERR_BAD_INPUT);
		CHECK_STR(ctx.errmsg, want);
	}
	struct hm_ctx ctx = {0};
	struct fmt_hf_config c;
	CHECK(fmt_hf_config_load(&ctx, "/nonexistent/config.json", NULL, &c) == HM_ERR_NOT_FOUND);
	CHECK(strstr(ctx.errmsg, "'/nonexistent/config.json'"));
}

UNIT_TEST(hfdir_hostile_huge_files)
{
	struct hm_ctx ctx = {0};
	struct fmt_hf_config c;
	struct fmt_hf_tokcfg t;
	char path[4096];
	/* a config.json past the cap: refused before it is parsed */
	snprintf(path, sizeof(path), "%s/config.json", unit_tmpdir());
	FILE *f = fopen(path, "w");
	CHECK(f);
	fputs("{\"pad\": \"", f);
	for (unsigned i = 0; i < FMT_HF_CONFIG_MAX / 64 + 1; i++)
		fputs("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", f);
	fputs("\"}", f);
	fclose(f);
	CHECK(fmt_hf_config_load(&ctx, path, "big/config.json", &c) == HM_ERR_BAD_INPUT);
	CHECK(strstr(ctx.errmsg, "'big/config.json': cannot read"));
	/* a list as long as a hostile layer count claims is not allocated */
	char buf[256];
	snprintf(buf, sizeof(buf), "{\"hidden_size\": 64, \"num_hidden_layers\": 1073741824, \"num_attention_heads\": 4,"
		 " \"intermediate_size\": 96, \"layer_types\": []}");
	CHECK(fmt_hf_config_parse(&ctx, buf, strlen(buf), "h", &c) == HM_ERR_BAD_INPUT);
	CHECK(strstr(ctx.errmsg, "'layer_types' is not a list of 1073741824 layers"));
	/* a special token longer than any real one */
	size_t n = FMT_HF_MAX_TOKEN + 64;
	char *big = malloc(n + 64);
	CHECK(big);
	int k = snprintf(big, n + 64, "{\"bos_token\": \"");
	memset(big + k, 'x', FMT_HF_MAX_TOKEN + 1);
	strcpy(big + k + FMT_HF_MAX_TOKEN + 1, "\"}");
	enum hm_err err = fmt_hf_tokcfg_parse(&ctx, big, strlen(big), "t/tokenizer_config.json", &t);
	free(big);
	CHECK(err == HM_ERR_BAD_INPUT && strstr(ctx.errmsg, "'bos_token' is too long"));
}

UNIT_TEST(hfdir_tokenizer_config)
{
	struct hm_ctx ctx = {0};
	struct fmt_hf_tokcfg t;
	const char *ok = "{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}, \"eos_token\": \"</s>\","
			 " \"pad_token\": null, \"add_bos_token\": true, \"chat_template\": [{\"name\": \"tool_use\","
			 " \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"{{ x }}\"}]}";
	CHECK(fmt_hf_tokcfg_parse(&ctx, ok, strlen(ok), "t", &t) == HM_OK);
	CHECK_STR(t.bos, "<s>");
	CHECK_STR(t.eos, "</s>");
	CHECK(!t.pad && !t.unk && t.add_bos == 1 && t.add_eos == -1);
	CHECK(t.chat_template && !strcmp(t.chat_template, "{{ x }}") && t.chat_template_len == 7);
	fmt_hf_tokcfg_release(&t);
	const char *bad[][2] = {
		{"{\"bos_token\": 1}", "'bos_token' is not a string or {\"content\": string}"},
		{"{\"eos_token\": {\"content\": []}}", "'eos_token' is not a string"},
		{"{\"add_bos_token\": \"yes\"}", "'add_bos_token' is not true or false"},
		{"{\"chat_template\": 5}", "'chat_template' is not a string or a list"},
		{"{\"chat_template\": [{\"name\": \"default\"}]}", "'chat_template[0]' is not {name, template}"},
		{"[]", "not a JSON object"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(fmt_hf_tokcfg_parse(&ctx, bad[i][0], strlen(bad[i][0]), "d/tokenizer_config.json", &t) ==
		      HM_ERR_BAD_INPUT);
		CHECK(strstr(ctx.errmsg, "'d/tokenizer_config.json': ") == ctx.errmsg && strstr(ctx.errmsg, bad[i][1]));
	}
	CHECK(fmt_hf_tokcfg_load(&ctx, "/nonexistent/tokenizer_config.json", NULL, &t) == HM_ERR_NOT_FOUND);
	fmt_hf_tokcfg_release(&t);
}

UNIT_TEST(hfdir_pre_tokenizer_names)
{
	const char *cases[][2] = {
		{"{\"type\": \"ByteLevel\", \"add_prefix_space\": false}", "gpt-2"},
		{"{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true},"
		 " {\"type\": \"ByteLevel\"}]}", "smollm"},
		{"{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\":"
		 " \"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}|"
		 " ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}},"
		 " {\"type\": \"ByteLevel\", \"use_regex\": false}]}", "llama-bpe"},
		{"{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"}}", "default"},
		{"{\"type\": \"Metaspace\"}", "default"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_error_t je;
		json_t *j = json_loads(cases[i][0], 0, &je);
		struct fmt_hf_pre ps;
		CHECK(j);
		fmt_hf_pre_scan(j, &ps);
		if (strcmp(ps.name, cases[i][1]))
			fprintf(stderr, "  case %zu: %s\n", i, ps.name);
		CHECK_STR(ps.name, cases[i][1]);
		json_decref(j);
	}
	struct fmt_hf_pre none;
	fmt_hf_pre_scan(NULL, &none);
	CHECK(!none.bytelevel && !none.nsplit && !strcmp(none.name, "default"));
}
