/* hm.c - the error table and context helpers. */
#include <stdarg.h>
#include <stdio.h>
#include "hm.h"

static const char *const err_names[HM_ERR__COUNT] = {
	[HM_OK] = "ok",
	[HM_ERR_NOMEM] = "out of memory",
	[HM_ERR_IO] = "i/o error",
	[HM_ERR_NOSPC] = "no space left on device",
	[HM_ERR_USAGE] = "usage error",
	[HM_ERR_BAD_INPUT] = "malformed input",
	[HM_ERR_NET] = "network error",
	[HM_ERR_UNREACHABLE] = "server unreachable",
	[HM_ERR_HTTP] = "http error",
	[HM_ERR_REPO_NOT_FOUND] = "repository not found",
	[HM_ERR_REV_NOT_FOUND] = "revision not found",
	[HM_ERR_ENTRY_NOT_FOUND] = "file not found",
	[HM_ERR_GATED] = "gated repository",
	[HM_ERR_AUTH] = "authentication required",
	[HM_ERR_RATE_LIMITED] = "rate limited",
	[HM_ERR_CORRUPT] = "corrupt data",
	[HM_ERR_DB] = "index error",
	[HM_ERR_NOT_FOUND] = "not found",
	[HM_ERR_CANCELLED] = "interrupted",
	[HM_ERR_LOCKED] = "locked",
};

const char *hm_strerror(enum hm_err err)
{
	if ((unsigned)err >= HM_ERR__COUNT || !err_names[err])
		return "unknown error";
	return err_names[err];
}

enum hm_err hm_fail(struct hm_ctx *ctx, enum hm_err err, const char *fmt, ...)
{
	va_list ap;
	if (!ctx)
		return err;
	va_start(ap, fmt);
	vsnprintf(ctx->errmsg, sizeof(ctx->errmsg), fmt, ap);
	va_end(ap);
	return err;
}

void hm_emit(struct hm_ctx *ctx, const struct hm_event *ev)
{
	if (ctx && ctx->on_event)
		ctx->on_event(ctx->event_ud, ev);
}

int hm_cancelled(const struct hm_ctx *ctx)
{
	return ctx && ctx->cancel && *ctx->cancel;
}
