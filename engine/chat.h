/* chat.h - chat templates: the Jinja subset that the chat_template of
 * tokenizer_config.json (or chat_template.jinja, or GGUF
 * tokenizer.chat_template) of the supported families uses, rendered the way
 * transformers' apply_chat_template does (trim_blocks and lstrip_blocks on,
 * the template's final newline dropped, loop controls on).
 *
 * Supported: text, {{ }}, {# #}, whitespace control (-), if/elif/else,
 * for (with an if filter, else, tuple targets, loop.index/index0/revindex/
 * revindex0/first/last/length/previtem/nextitem, break/continue), set
 * (names, namespace attributes, block set), literals (strings, numbers,
 * lists, dicts, tuples), arithmetic, comparisons, in/not in, and/or/not,
 * ~, conditional expressions, attribute/subscript/slice access, the tests
 * defined/undefined/none/string/number/integer/float/boolean/mapping/
 * iterable/sequence/true/false/even/odd/divisibleby/eq/equalto, the usual
 * filters (trim, length, count, tojson, upper, lower, title, capitalize,
 * first, last, join, default, string, int, float, list, items, replace,
 * reverse, safe, abs, round, map, select/rejectattr, indent, unique, sort,
 * dictsort), string and dict methods (strip, lstrip, rstrip, split,
 * startswith, endswith, upper, lower, replace, title, find, items, keys,
 * values, get), and the globals raise_exception, namespace, range and
 * strftime_now. Macros, includes and other statements are an error.
 *
 * Templates are untrusted: size, nesting, loop steps, output and memory are
 * bounded, and anything outside the subset, a syntax error, an unterminated
 * tag or a raise_exception is HM_ERR_BAD_INPUT with ctx->errmsg saying what
 * and where (never a crash, never unbounded time or memory). Nothing here
 * prints or exits. */
#ifndef ENG_CHAT_H
#define ENG_CHAT_H

#include <stddef.h>
#include <time.h>
#include "../util/hm.h"

#define ENG_CHAT_MAX_TEMPLATE (1u << 20) /* template bytes */
#define ENG_CHAT_MAX_OUTPUT (16u << 20)  /* rendered bytes */

struct eng_tok;

/* One message: role "system", "user", "assistant" or "tool"; content text. */
struct eng_chat_msg {
	const char *role;
	const char *content;
};

/* A parsed template with its special token texts. */
struct eng_chat;

/* Parses template text (len bytes, at most ENG_CHAT_MAX_TEMPLATE). bos/eos:
 * the bos_token/eos_token texts the template may print (NULL = ""); copied.
 * A syntax error is HM_ERR_BAD_INPUT. *out is the caller's (eng_chat_free). */
enum hm_err eng_chat_new(struct hm_ctx *ctx, const char *tpl, size_t len, const char *bos, const char *eos,
			 struct eng_chat **out) HM_MUST_CHECK;

/* The template of a model: path as given to eng_open_any (a .gguf file:
 * tokenizer.chat_template; a safetensors file or directory: chat_template of
 * tokenizer_config.json (a string, or the entry named "default" of a list),
 * else chat_template.jinja beside it). bos/eos texts come from t (may be
 * NULL: then from tokenizer_config.json's bos_token/eos_token, or ""). A
 * model without a template is HM_ERR_NOT_FOUND ("'X' has no chat
 * template"). *out is the caller's. */
enum hm_err eng_chat_open(struct hm_ctx *ctx, const char *path, const struct eng_tok *t,
			  struct eng_chat **out) HM_MUST_CHECK;

/* Accepts NULL. */
void eng_chat_free(struct eng_chat *c);

/* Renders messages msgs[0..n-1] with add_generation_prompt (1: the template
 * appends the assistant turn's opening). *out (malloc'd, NUL-terminated,
 * *len bytes; the caller frees) is the prompt text, to be encoded with
 * eng_tok_encode(..., add_bos = 0): the template writes BOS itself. */
enum hm_err eng_chat_render(struct hm_ctx *ctx, const struct eng_chat *c, const struct eng_chat_msg *msgs, size_t n,
			    int add_generation_prompt, char **out, size_t *len) HM_MUST_CHECK;

/* The same with every template variable from a JSON object (vars: text,
 * e.g. {"messages": [...], "tools": [...], "add_generation_prompt": true,
 * "enable_thinking": false}); bos_token/eos_token are added unless given.
 * now: the time strftime_now formats (0 = the current time). */
enum hm_err eng_chat_render_json(struct hm_ctx *ctx, const struct eng_chat *c, const char *vars, time_t now,
				 char **out, size_t *len) HM_MUST_CHECK;

#endif
