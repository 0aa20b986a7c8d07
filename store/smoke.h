/* smoke.h - recorded smoke-test results (smoke.c; `hubmirror smoke`, shown by `ls REPO`). */
#ifndef STORE_SMOKE_H
#define STORE_SMOKE_H

#include "store.h"

struct store_smoke {
	const char *repo_type, *repo, *commit;
	const char *artifact_sha256;   /* the GGUF conversion tested, or NULL: the revision itself */
	const char *model;             /* what was tested, in words */
	int pass;
	const char *reason;            /* NULL or "" when it passed */
	double load_s, prompt_tps, gen_tps;
	uint64_t peak_rss;
	int64_t created_at;
	const char *architecture;      /* the engine's name for it ("qwen3", ...), or NULL */
	const char *engine_version;    /* ENG_VERSION of the engine that ran it, or NULL */
};
enum hm_err store_record_smoke(struct hm_ctx *ctx, struct store *st, const struct store_smoke *s) HM_MUST_CHECK;

struct store_smoke_row {
	char commit[41];
	char *artifact_sha256;         /* NULL for the revision itself */
	char *model, *reason;
	char *architecture, *engine_version; /* NULL for results recorded before they were */
	int pass;
	double load_s, prompt_tps, gen_tps;
	uint64_t peak_rss;
	int64_t created_at;
};
/* A repo's smoke results, newest first; freed with store_smoke_rows_free. */
enum hm_err store_list_smoke(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
			     struct store_smoke_row **out, size_t *n) HM_MUST_CHECK;
void store_smoke_rows_free(struct store_smoke_row *v, size_t n);

#endif
