/* chat-int.h - what the files of the chat template renderer share (see
 * chat.h): the values, tokens and syntax tree, and the functions of each
 * layer. The files call downwards only, so no two depend on each other:
 *   chat.c          the public API and a model's template
 *   chat_parse.c    lexer and recursive-descent parser (source -> tree)
 *   chat_eval.c     the tree walker (statements, expressions, calls)
 *   chat_builtins.c filters, tests, methods and global functions on values
 *   chat_value.c    the arena, values, conversions, item access, errors
 * Internal to engine/chat*.c. */
#ifndef ENG_CHAT_INT_H
#define ENG_CHAT_INT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <jansson.h>
#include "chat.h"
#include "../util/util.h"

#define MAX_DEPTH 64           /* nested statements and expressions */
#define MAX_STEPS 20000000ull  /* evaluations in one render */
#define MAX_ARENA (256u << 20) /* bytes of values in one render */
#define MAX_TOKENS (1u << 20)

/* ---- arena ---- */

struct chunk {
	struct chunk *next;
	size_t used, cap;
	max_align_t data[];
};

struct arena {
	struct chunk *head;
	size_t total;
	int full;
};

/* ---- values ---- */

enum vt { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_FUNC };

struct jstr {
	size_t n;
	char p[];
};
struct jv;
struct jlist {
	size_t n, cap;
	struct jv *v;
};
struct jdict {
	size_t n, cap;
	struct jstr **k;
	struct jv *v;
};
struct jv {
	int t;
	union {
		int64_t i;
		double f;
		struct jstr *s;
		struct jlist *l;
		struct jdict *d;
		struct jfunc *fn;
	};
};
struct jfunc {
	const char *name; /* builtin or method name */
	struct jv self;   /* receiver of a method (V_UNDEF for a global) */
};

/* ---- tokens ---- */

enum tk { T_TEXT, T_OEXPR, T_CEXPR, T_OSTMT, T_CSTMT, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };

struct tok {
	int t;
	int line;
	const char *p; /* T_TEXT/T_NAME/T_OP: into the source; T_STR: owned by the chat */
	size_t n;
	int64_t i;
	double f;
};

/* ---- syntax tree ---- */

enum nk {
	/* statements */
	N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_BREAK, N_CONTINUE, N_BODY,
	/* expressions */
	N_LIT, N_NAME, N_ATTR, N_INDEX, N_SLICE, N_CALL, N_FILTER, N_TEST, N_UNARY, N_BIN, N_AND, N_OR, N_NOT,
	N_COND, N_LISTLIT, N_DICTLIT, N_TUPLE, N_KW
};

struct node {
	int k;
	int line;
	int neg;              /* N_TEST: is not; N_BIN: op code */
	const char *s;        /* names, attribute, filter/test names, text */
	size_t sn;
	struct jv lit;
	struct node *a, *b, *c, *d; /* operands; N_IF: cond, then, else; N_FOR: target, iter, body, else */
	struct node **kids;   /* N_BODY statements; call args; list items; N_FOR filter in d */
	size_t nk;
};

struct eng_chat {
	char *src; /* preprocessed template */
	char *bos, *eos;
	struct tok *toks;
	size_t ntok;
	struct node *root;
	struct arena parse; /* nodes and literals */
};

/* ---- a render ---- */

struct rnd {
	struct hm_ctx *ctx;
	struct arena *ar;
	enum hm_err err;
	unsigned long long steps;
	struct util_buf out;
	int line;
	time_t now;
};

/* evaluated call arguments */
struct args {
	size_t n, nkw;
	struct jv v[8];
	const char *kw[8];
	size_t kwn[8];
	struct jv kv[8];
};

enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_CAT, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE,
       OP_IN, OP_NOTIN };

/* ---- small helpers ---- */

static inline int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static inline struct jv undef(void)
{
	return (struct jv){.t = V_UNDEF};
}


static inline struct jv vbool(int b)
{
	return (struct jv){.t = V_BOOL, .i = !!b};
}


static inline struct jv vint(int64_t i)
{
	return (struct jv){.t = V_INT, .i = i};
}

static inline int num(struct jv v)
{
	return v.t == V_INT || v.t == V_FLOAT || v.t == V_BOOL;
}


static inline double fval(struct jv v)
{
	return v.t == V_FLOAT ? v.f : (double)v.i;
}

static inline int nameq(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && !memcmp(s, lit, n);
}


/* ---- chat_value.c ---- */

/* n bytes from the arena; NULL (and a->full) past MAX_ARENA */
void *eng_chat_arena_alloc(struct arena *a, size_t n);
void eng_chat_arena_free(struct arena *a);
/* HM_ERR_BAD_INPUT: "chat template line N: ..." */
enum hm_err eng_chat_failf(struct hm_ctx *ctx, int line, const char *fmt, ...) HM_PRINTF(3, 4);
/* Sets r->err (the first error wins) with the render's line; returns it. */
enum hm_err eng_chat_rfail(struct rnd *r, const char *fmt, ...) HM_PRINTF(2, 3);
void *eng_chat_ralloc(struct rnd *r, size_t n);
struct jv eng_chat_vstr(struct rnd *r, const char *s, size_t n);
struct jv eng_chat_vstr0(struct rnd *r, const char *s);
/* b's bytes as a string (b released); bad: building b failed, an error why. */
struct jv eng_chat_vbuf(struct rnd *r, struct util_buf *b, int bad, const char *why);
struct jlist *eng_chat_newlist(struct rnd *r, size_t cap);
int eng_chat_list_push(struct rnd *r, struct jlist *l, struct jv v);
struct jdict *eng_chat_newdict(struct rnd *r);
struct jv *eng_chat_dict_get(const struct jdict *d, const char *k, size_t kn);
int eng_chat_dict_set(struct rnd *r, struct jdict *d, const char *k, size_t kn, struct jv v);
struct jv eng_chat_from_json(struct rnd *r, json_t *j, int depth);
int eng_chat_truthy(struct jv v);
size_t eng_chat_utf8_len(const char *s, size_t n);
/* Python's str() of v appended to b; nonzero on error */
int eng_chat_to_str(struct rnd *r, struct util_buf *b, struct jv v);
struct jv eng_chat_stringify(struct rnd *r, struct jv v);
int eng_chat_to_json(struct rnd *r, struct util_buf *b, struct jv v, int indent, int level);
int eng_chat_equal(struct jv a, struct jv b);
const char *eng_chat_tname(struct jv v);
struct jv eng_chat_vfunc(struct rnd *r, const char *name, struct jv self);
struct jv eng_chat_getattr(struct rnd *r, struct jv o, const char *k, size_t kn, int method_ok);
struct jv eng_chat_getitem(struct rnd *r, struct jv o, struct jv k);
struct jv eng_chat_slice(struct rnd *r, struct jv o, struct jv a, struct jv b, struct jv c);
int eng_chat_cmp_vals(struct rnd *r, struct jv a, struct jv b);
/* v as a list: a list itself, a dict's keys, a string's characters */
struct jv eng_chat_list_of(struct rnd *r, struct jv v);
/* v's attribute attr, "a.b" walking down */
struct jv eng_chat_attr_path(struct rnd *r, struct jv v, struct jv attr);

/* ---- chat_builtins.c ---- */

/* A method of a string, dict or list (f->self) with evaluated arguments. */
struct jv eng_chat_call_method(struct rnd *r, struct jfunc *f, struct args *a);
/* A global function (raise_exception, namespace, dict, range, strftime_now). */
struct jv eng_chat_call_global(struct rnd *r, const char *name, struct args *a);
/* The test name (is name) of v: 1 or 0 (r->err on an unknown test). */
int eng_chat_run_test(struct rnd *r, const char *name, size_t nlen, struct jv v, struct args *a);
/* The filter name (v | name(a)). */
struct jv eng_chat_apply_filter(struct rnd *r, const char *name, size_t nlen, struct jv v, struct args *a);

/* ---- chat_eval.c ---- */

/* Renders c with the template variables vars into *out (malloc'd, *len). */
enum hm_err eng_chat_render_vars(struct hm_ctx *ctx, const struct eng_chat *c, json_t *vars, time_t now, char **out,
			size_t *len);

/* ---- chat_parse.c ---- */

/* Preprocesses, lexes and parses tpl (len bytes) into c->src, c->toks and c->root. */
enum hm_err eng_chat_compile(struct hm_ctx *ctx, struct eng_chat *c, const char *tpl, size_t len);

#endif
