/* chat.c - the Jinja subset of chat templates (see chat.h): a lexer, a
 * recursive-descent parser to a tree, and a tree walker over values kept in
 * one arena per render. Every limit (template size, nesting, steps, output,
 * arena) turns hostile input into an error, never a crash. */
#include "chat.h"
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "../util/util.h"
#include "tokenizer.h"
#include "../formats/formats.h"

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

static void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (!a->head || a->head->cap - a->head->used < n) {
		size_t cap = n > 65536 ? n : 65536;
		if (a->total + cap > MAX_ARENA) {
			a->full = 1;
			return NULL;
		}
		struct chunk *c = malloc(sizeof(*c) + cap);
		if (!c) {
			a->full = 1;
			return NULL;
		}
		c->next = a->head;
		c->used = 0;
		c->cap = cap;
		a->head = c;
		a->total += cap;
	}
	void *p = (char *)a->head->data + a->head->used;
	a->head->used += n;
	return p;
}

static void arena_free(struct arena *a)
{
	while (a->head) {
		struct chunk *c = a->head;
		a->head = c->next;
		free(c);
	}
	a->total = 0;
}

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

/* ---- errors ---- */

struct rnd {
	struct hm_ctx *ctx;
	struct arena *ar;
	enum hm_err err;
	unsigned long long steps;
	struct util_buf out;
	int line;
	time_t now;
};

static enum hm_err failf(struct hm_ctx *ctx, int line, const char *fmt, ...) HM_PRINTF(3, 4);
static enum hm_err failf(struct hm_ctx *ctx, int line, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "chat template line %d: %s", line, msg);
	return hm_fail(ctx, HM_ERR_BAD_INPUT, "chat template: %s", msg);
}

/* ---- lexer ---- */

/* transformers' settings, as @huggingface/jinja applies them: the final
 * newline dropped, lstrip_blocks (spaces and tabs before {% and {# at the
 * start of a line), trim_blocks (a newline right after %} or #}), and
 * {% generation %} / {% endgeneration %} markers removed. */
static char *preprocess(const char *tpl, size_t len)
{
	struct util_buf b = UTIL_BUF_INIT;
	if (len && tpl[len - 1] == '\n')
		len--;
	size_t i = 0;
	while (i < len) {
		/* lstrip_blocks: at a line start, blanks followed by {% {# {- */
		if (i == 0 || tpl[i - 1] == '\n') {
			size_t j = i;
			while (j < len && (tpl[j] == ' ' || tpl[j] == '\t'))
				j++;
			if (j > i && j + 1 < len && tpl[j] == '{' &&
			    (tpl[j + 1] == '%' || tpl[j + 1] == '#' || tpl[j + 1] == '-'))
				i = j;
		}
		if (i + 2 < len && (tpl[i] == '%' || tpl[i] == '#' || tpl[i] == '-') && tpl[i + 1] == '}' &&
		    tpl[i + 2] == '\n') {
			if (util_buf_add(&b, tpl + i, 2))
				goto nomem;
			i += 3;
			continue;
		}
		if (util_buf_add(&b, tpl + i, 1))
			goto nomem;
		i++;
	}
	if (util_buf_add(&b, "", 1))
		goto nomem;
	/* {%- generation -%} markers */
	for (;;) {
		char *p = b.buf, *hit = NULL, *end = NULL;
		while ((p = strstr(p, "{%"))) {
			char *q = p + 2;
			int ls = 0, rs = 0;
			if (*q == '-')
				ls = 1, q++;
			while (isspace((unsigned char)*q))
				q++;
			if (!strncmp(q, "end", 3))
				q += 3;
			if (strncmp(q, "generation", 10)) {
				p += 2;
				continue;
			}
			q += 10;
			while (isspace((unsigned char)*q))
				q++;
			if (*q == '-')
				rs = 1, q++;
			if (strncmp(q, "%}", 2)) {
				p += 2;
				continue;
			}
			q += 2;
			hit = p;
			end = q;
			if (ls)
				while (hit > b.buf && isspace((unsigned char)hit[-1]))
					hit--;
			if (rs)
				while (isspace((unsigned char)*end))
					end++;
			break;
		}
		if (!hit)
			break;
		memmove(hit, end, strlen(end) + 1);
		b.len = strlen(b.buf) + 1;
	}
	return b.buf;
nomem:
	util_buf_release(&b);
	return NULL;
}

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static enum hm_err add_tok(struct hm_ctx *ctx, struct eng_chat *c, size_t *cap, struct tok t)
{
	if (c->ntok == *cap) {
		if (*cap >= MAX_TOKENS)
			return failf(ctx, t.line, "too many tokens");
		size_t nc = *cap ? *cap * 2 : 256;
		struct tok *n = realloc(c->toks, nc * sizeof(*n));
		if (!n)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		c->toks = n;
		*cap = nc;
	}
	c->toks[c->ntok++] = t;
	return HM_OK;
}

static const char *const OPS[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "|", ".",
				  ",", ":", "(", ")", "[", "]", "{", "}", "=", "<", ">", NULL};

static enum hm_err lex(struct hm_ctx *ctx, struct eng_chat *c)
{
	const char *s = c->src;
	size_t cap = 0, i = 0, n = strlen(s);
	int line = 1;
	enum hm_err err;
	while (i < n) {
		/* text up to the next tag */
		size_t j = i;
		while (j < n && !(s[j] == '{' && j + 1 < n && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#')))
			j++;
		size_t tend = j;
		if (j < n && s[j + 2] == '-') /* {{- {%- {#-: strip the text's trailing whitespace */
			while (tend > i && is_ws(s[tend - 1]))
				tend--;
		if (tend > i && (err = add_tok(ctx, c, &cap, (struct tok){T_TEXT, line, s + i, tend - i, 0, 0})))
			return err;
		for (size_t k = i; k < j; k++)
			line += s[k] == '\n';
		if (j >= n)
			break;
		i = j + 2;
		char kind = s[j + 1];
		if (i < n && s[i] == '-')
			i++;
		if (kind == '#') {
			const char *e = strstr(s + i, "#}");
			if (!e)
				return failf(ctx, line, "unterminated comment");
			for (const char *k = s + i; k < e; k++)
				line += *k == '\n';
			int trim = e > s + i && e[-1] == '-';
			i = (size_t)(e - s) + 2;
			if (trim)
				while (i < n && is_ws(s[i]))
					i++;
			continue;
		}
		if ((err = add_tok(ctx, c, &cap, (struct tok){kind == '{' ? T_OEXPR : T_OSTMT, line, s + j, 2, 0, 0})))
			return err;
		char close = kind == '{' ? '}' : '%';
		for (;;) {
			while (i < n && is_ws(s[i]))
				line += s[i++] == '\n';
			if (i >= n)
				return failf(ctx, line, "unterminated %s", kind == '{' ? "'{{'" : "'{%'");
			/* the closing tag, with optional '-' */
			if ((s[i] == '-' && i + 2 < n + 1 && s[i + 1] == close && s[i + 2] == '}') ||
			    (s[i] == close && i + 1 < n && s[i + 1] == '}')) {
				int trim = s[i] == '-';
				i += trim ? 3 : 2;
				if ((err = add_tok(ctx, c, &cap,
						   (struct tok){kind == '{' ? T_CEXPR : T_CSTMT, line, s + i - 2, 2, 0, 0})))
					return err;
				if (trim)
					while (i < n && is_ws(s[i]))
						line += s[i++] == '\n';
				break;
			}
			char ch = s[i];
			if (isalpha((unsigned char)ch) || ch == '_') {
				size_t k = i;
				while (k < n && (isalnum((unsigned char)s[k]) || s[k] == '_'))
					k++;
				if ((err = add_tok(ctx, c, &cap, (struct tok){T_NAME, line, s + i, k - i, 0, 0})))
					return err;
				i = k;
			} else if (isdigit((unsigned char)ch)) {
				size_t k = i;
				int flt = 0;
				while (k < n && (isdigit((unsigned char)s[k]) || s[k] == '_'))
					k++;
				if (k + 1 < n && s[k] == '.' && isdigit((unsigned char)s[k + 1])) {
					flt = 1;
					k++;
					while (k < n && isdigit((unsigned char)s[k]))
						k++;
				}
				char num[64];
				size_t m = 0;
				for (size_t q = i; q < k && m < sizeof(num) - 1; q++)
					if (s[q] != '_')
						num[m++] = s[q];
				num[m] = 0;
				struct tok t = {flt ? T_FLOAT : T_INT, line, s + i, k - i, 0, 0};
				errno = 0;
				if (flt)
					t.f = strtod(num, NULL);
				else
					t.i = strtoll(num, NULL, 10);
				if (errno)
					return failf(ctx, line, "number out of range");
				if ((err = add_tok(ctx, c, &cap, t)))
					return err;
				i = k;
			} else if (ch == '\'' || ch == '"') {
				struct util_buf b = UTIL_BUF_INIT;
				size_t k = i + 1;
				int bad = 0;
				while (k < n && s[k] != ch && !bad) {
					char o = s[k];
					if (o == '\\' && k + 1 < n) {
						char e = s[++k];
						switch (e) {
						case 'n': o = '\n'; break;
						case 't': o = '\t'; break;
						case 'r': o = '\r'; break;
						case '\\': o = '\\'; break;
						case '\'': o = '\''; break;
						case '"': o = '"'; break;
						case 'b': o = '\b'; break;
						case 'f': o = '\f'; break;
						default:
							bad |= util_buf_add(&b, "\\", 1);
							o = e;
						}
					}
					line += o == '\n' && s[k] == '\n';
					bad |= util_buf_add(&b, &o, 1);
					k++;
				}
				if (bad) {
					util_buf_release(&b);
					return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				}
				if (k >= n) {
					util_buf_release(&b);
					return failf(ctx, line, "unterminated string");
				}
				struct jstr *js = arena_alloc(&c->parse, sizeof(*js) + b.len + 1);
				if (!js) {
					util_buf_release(&b);
					return failf(ctx, line, "template too large");
				}
				js->n = b.len;
				if (b.len)
					memcpy(js->p, b.buf, b.len);
				js->p[b.len] = 0;
				util_buf_release(&b);
				if ((err = add_tok(ctx, c, &cap, (struct tok){T_STR, line, (const char *)js, 0, 0, 0})))
					return err;
				i = k + 1;
			} else {
				int found = 0;
				for (int o = 0; OPS[o]; o++) {
					size_t ol = strlen(OPS[o]);
					if (!strncmp(s + i, OPS[o], ol)) {
						if ((err = add_tok(ctx, c, &cap, (struct tok){T_OP, line, s + i, ol, 0, 0})))
							return err;
						i += ol;
						found = 1;
						break;
					}
				}
				if (!found)
					return failf(ctx, line, "unexpected character '%c'", isprint((unsigned char)ch) ? ch : '?');
			}
		}
	}
	return add_tok(ctx, c, &cap, (struct tok){T_EOF, line, s + n, 0, 0, 0});
}

/* ---- parser ---- */

struct parser {
	struct hm_ctx *ctx;
	struct eng_chat *c;
	size_t pos;
	int depth;
	enum hm_err err;
};

static struct tok *peek(struct parser *p)
{
	return &p->c->toks[p->pos];
}

static int is_op(struct tok *t, const char *op)
{
	return t->t == T_OP && t->n == strlen(op) && !memcmp(t->p, op, t->n);
}

static int is_name(struct tok *t, const char *nm)
{
	return t->t == T_NAME && t->n == strlen(nm) && !memcmp(t->p, nm, t->n);
}

static struct node *perr(struct parser *p, const char *fmt, ...) HM_PRINTF(2, 3);
static struct node *perr(struct parser *p, const char *fmt, ...)
{
	if (!p->err) {
		char msg[300];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		p->err = failf(p->ctx, peek(p)->line, "%s", msg);
	}
	return NULL;
}

static struct node *mk(struct parser *p, int k)
{
	struct node *n = arena_alloc(&p->c->parse, sizeof(*n));
	if (!n)
		return perr(p, "template too large");
	memset(n, 0, sizeof(*n));
	n->k = k;
	n->line = peek(p)->line;
	return n;
}

static int push_kid(struct parser *p, struct node *n, struct node *kid, size_t *cap)
{
	if (n->nk == *cap) {
		size_t nc = *cap ? *cap * 2 : 4;
		struct node **k = arena_alloc(&p->c->parse, nc * sizeof(*k));
		if (!k) {
			perr(p, "template too large");
			return -1;
		}
		if (n->nk)
			memcpy(k, n->kids, n->nk * sizeof(*k));
		n->kids = k;
		*cap = nc;
	}
	n->kids[n->nk++] = kid;
	return 0;
}

static int expect_op(struct parser *p, const char *op)
{
	if (!is_op(peek(p), op)) {
		perr(p, "expected '%s'", op);
		return -1;
	}
	p->pos++;
	return 0;
}

static struct node *expr(struct parser *p);
static struct node *primary_postfix(struct parser *p);

/* call arguments after '(' up to ')': positional, then name=value (N_KW) */
static struct node *call_args(struct parser *p, struct node *callee)
{
	struct node *n = mk(p, N_CALL);
	size_t cap = 0;
	if (!n)
		return NULL;
	n->a = callee;
	while (!is_op(peek(p), ")")) {
		struct node *arg;
		if (peek(p)->t == T_NAME && is_op(&p->c->toks[p->pos + 1], "=")) {
			arg = mk(p, N_KW);
			if (!arg)
				return NULL;
			arg->s = peek(p)->p;
			arg->sn = peek(p)->n;
			p->pos += 2;
			if (!(arg->a = expr(p)))
				return NULL;
		} else if (!(arg = expr(p)))
			return NULL;
		if (push_kid(p, n, arg, &cap))
			return NULL;
		if (is_op(peek(p), ","))
			p->pos++;
		else if (!is_op(peek(p), ")"))
			return perr(p, "expected ',' or ')' in a call");
	}
	p->pos++;
	return n;
}

static struct node *primary(struct parser *p)
{
	struct tok *t = peek(p);
	struct node *n;
	if (t->t == T_STR) {
		/* adjacent literals concatenate */
		if (!(n = mk(p, N_LIT)))
			return NULL;
		struct jstr *s = (struct jstr *)t->p;
		p->pos++;
		while (peek(p)->t == T_STR) {
			struct jstr *s2 = (struct jstr *)peek(p)->p;
			struct jstr *m = arena_alloc(&p->c->parse, sizeof(*m) + s->n + s2->n + 1);
			if (!m)
				return perr(p, "template too large");
			m->n = s->n + s2->n;
			memcpy(m->p, s->p, s->n);
			memcpy(m->p + s->n, s2->p, s2->n + 1);
			s = m;
			p->pos++;
		}
		n->lit.t = V_STR;
		n->lit.s = s;
		return n;
	}
	if (t->t == T_INT || t->t == T_FLOAT) {
		if (!(n = mk(p, N_LIT)))
			return NULL;
		if (t->t == T_INT) {
			n->lit.t = V_INT;
			n->lit.i = t->i;
		} else {
			n->lit.t = V_FLOAT;
			n->lit.f = t->f;
		}
		p->pos++;
		return n;
	}
	if (t->t == T_NAME) {
		if (!(n = mk(p, N_LIT)))
			return NULL;
		p->pos++;
		if (is_name(t, "true") || is_name(t, "True"))
			n->lit = (struct jv){.t = V_BOOL, .i = 1};
		else if (is_name(t, "false") || is_name(t, "False"))
			n->lit = (struct jv){.t = V_BOOL, .i = 0};
		else if (is_name(t, "none") || is_name(t, "None"))
			n->lit.t = V_NONE;
		else {
			n->k = N_NAME;
			n->s = t->p;
			n->sn = t->n;
		}
		return n;
	}
	if (is_op(t, "(")) {
		p->pos++;
		if (is_op(peek(p), ")")) {
			p->pos++;
			return mk(p, N_TUPLE);
		}
		struct node *e = expr(p);
		if (!e)
			return NULL;
		if (is_op(peek(p), ",")) {
			struct node *tu = mk(p, N_TUPLE);
			size_t cap = 0;
			if (!tu || push_kid(p, tu, e, &cap))
				return NULL;
			while (is_op(peek(p), ",")) {
				p->pos++;
				if (is_op(peek(p), ")"))
					break;
				if (!(e = expr(p)) || push_kid(p, tu, e, &cap))
					return NULL;
			}
			e = tu;
		}
		if (expect_op(p, ")"))
			return NULL;
		return e;
	}
	if (is_op(t, "[")) {
		size_t cap = 0;
		p->pos++;
		if (!(n = mk(p, N_LISTLIT)))
			return NULL;
		while (!is_op(peek(p), "]")) {
			struct node *e = expr(p);
			if (!e || push_kid(p, n, e, &cap))
				return NULL;
			if (is_op(peek(p), ","))
				p->pos++;
			else if (!is_op(peek(p), "]"))
				return perr(p, "expected ',' or ']'");
		}
		p->pos++;
		return n;
	}
	if (is_op(t, "{")) {
		size_t cap = 0;
		p->pos++;
		if (!(n = mk(p, N_DICTLIT)))
			return NULL;
		while (!is_op(peek(p), "}")) {
			struct node *k = expr(p), *v;
			if (!k || expect_op(p, ":") || !(v = expr(p)) || push_kid(p, n, k, &cap) || push_kid(p, n, v, &cap))
				return NULL;
			if (is_op(peek(p), ","))
				p->pos++;
			else if (!is_op(peek(p), "}"))
				return perr(p, "expected ',' or '}'");
		}
		p->pos++;
		return n;
	}
	if (t->t == T_EOF || t->t == T_CEXPR || t->t == T_CSTMT)
		return perr(p, "expected an expression");
	return perr(p, "unexpected '%.*s'", (int)(t->n > 20 ? 20 : t->n), t->t == T_STR ? "string" : t->p);
}

static struct node *postfix(struct parser *p, struct node *n)
{
	for (;;) {
		struct tok *t = peek(p);
		if (is_op(t, ".")) {
			p->pos++;
			if (peek(p)->t != T_NAME && peek(p)->t != T_INT)
				return perr(p, "expected a name after '.'");
			struct node *a = mk(p, N_ATTR);
			if (!a)
				return NULL;
			a->a = n;
			a->s = peek(p)->p;
			a->sn = peek(p)->n;
			p->pos++;
			n = a;
		} else if (is_op(t, "[")) {
			p->pos++;
			struct node *idx[3] = {NULL, NULL, NULL};
			int slice = 0;
			for (int part = 0; part < 3; part++) {
				if (!is_op(peek(p), ":") && !is_op(peek(p), "]"))
					if (!(idx[part] = expr(p)))
						return NULL;
				if (is_op(peek(p), ":") && part < 2) {
					slice = 1;
					p->pos++;
					continue;
				}
				break;
			}
			if (expect_op(p, "]"))
				return NULL;
			struct node *a = mk(p, slice ? N_SLICE : N_INDEX);
			if (!a)
				return NULL;
			if (!slice && !idx[0])
				return perr(p, "empty subscript");
			a->a = n;
			a->b = idx[0];
			a->c = idx[1];
			a->d = idx[2];
			n = a;
		} else if (is_op(t, "(")) {
			p->pos++;
			if (!(n = call_args(p, n)))
				return NULL;
		} else
			return n;
	}
}

/* filters (|name(args)) and tests (is [not] name [arg]) after a unary */
static struct node *filters(struct parser *p, struct node *n)
{
	for (;;) {
		if (is_op(peek(p), "|")) {
			p->pos++;
			if (peek(p)->t != T_NAME)
				return perr(p, "expected a filter name");
			struct node *f = mk(p, N_FILTER);
			if (!f)
				return NULL;
			f->s = peek(p)->p;
			f->sn = peek(p)->n;
			p->pos++;
			f->a = n;
			if (is_op(peek(p), "(")) {
				p->pos++;
				if (!(f->b = call_args(p, NULL)))
					return NULL;
			}
			n = f;
		} else if (is_name(peek(p), "is")) {
			p->pos++;
			struct node *f = mk(p, N_TEST);
			if (!f)
				return NULL;
			if (is_name(peek(p), "not")) {
				f->neg = 1;
				p->pos++;
			}
			if (peek(p)->t != T_NAME)
				return perr(p, "expected a test name after 'is'");
			f->s = peek(p)->p;
			f->sn = peek(p)->n;
			p->pos++;
			f->a = n;
			if (is_op(peek(p), "(")) {
				p->pos++;
				if (!(f->b = call_args(p, NULL)))
					return NULL;
			} else {
				struct tok *t = peek(p);
				/* one bare argument: is divisibleby 3, is equalto x, is sameas none */
				if (t->t == T_STR || t->t == T_INT || t->t == T_FLOAT ||
				    (t->t == T_NAME && !is_name(t, "and") && !is_name(t, "or") && !is_name(t, "else") &&
				     !is_name(t, "if") && !is_name(t, "in") && !is_name(t, "is") && !is_name(t, "not"))) {
					struct node *arg = primary_postfix(p);
					size_t cap = 0;
					if (!arg || !(f->b = mk(p, N_CALL)) || push_kid(p, f->b, arg, &cap))
						return NULL;
				}
			}
			n = f;
		} else
			return n;
	}
}

static struct node *primary_postfix(struct parser *p)
{
	struct node *n = primary(p);
	return n ? postfix(p, n) : NULL;
}

static struct node *unary(struct parser *p)
{
	if (is_op(peek(p), "-") || is_op(peek(p), "+")) {
		struct node *n = mk(p, N_UNARY);
		if (!n)
			return NULL;
		n->neg = *peek(p)->p;
		p->pos++;
		if (++p->depth > MAX_DEPTH)
			return perr(p, "expressions nested too deeply");
		n->a = unary(p);
		p->depth--;
		return n->a ? n : NULL;
	}
	struct node *n = primary_postfix(p);
	return n ? filters(p, n) : NULL;
}

enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_CAT, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE,
       OP_IN, OP_NOTIN };

static struct node *bin(struct parser *p, int op, struct node *l, struct node *r)
{
	struct node *n = mk(p, N_BIN);
	if (!n || !l || !r)
		return NULL;
	n->neg = op;
	n->a = l;
	n->b = r;
	return n;
}

static struct node *power(struct parser *p)
{
	struct node *l = unary(p);
	while (l && is_op(peek(p), "**")) {
		p->pos++;
		l = bin(p, OP_POW, l, unary(p));
	}
	return l;
}

static struct node *term(struct parser *p)
{
	struct node *l = power(p);
	for (;;) {
		int op = is_op(peek(p), "*") ? OP_MUL : is_op(peek(p), "/") ? OP_DIV : is_op(peek(p), "//") ? OP_FDIV
		       : is_op(peek(p), "%") ? OP_MOD : 0;
		if (!l || !op)
			return l;
		p->pos++;
		l = bin(p, op, l, power(p));
	}
}

static struct node *arith(struct parser *p)
{
	struct node *l = term(p);
	for (;;) {
		int op = is_op(peek(p), "+") ? OP_ADD : is_op(peek(p), "-") ? OP_SUB : 0;
		if (!l || !op)
			return l;
		p->pos++;
		l = bin(p, op, l, term(p));
	}
}

static struct node *concat(struct parser *p)
{
	struct node *l = arith(p);
	while (l && is_op(peek(p), "~")) {
		p->pos++;
		l = bin(p, OP_CAT, l, arith(p));
	}
	return l;
}

static struct node *compare(struct parser *p)
{
	struct node *l = concat(p);
	for (;;) {
		struct tok *t = peek(p);
		int op = is_op(t, "==") ? OP_EQ : is_op(t, "!=") ? OP_NE : is_op(t, "<") ? OP_LT : is_op(t, "<=") ? OP_LE
		       : is_op(t, ">") ? OP_GT : is_op(t, ">=") ? OP_GE : is_name(t, "in") ? OP_IN : 0;
		if (!op && is_name(t, "not") && is_name(&p->c->toks[p->pos + 1], "in")) {
			op = OP_NOTIN;
			p->pos++;
		}
		if (!l || !op)
			return l;
		p->pos++;
		l = bin(p, op, l, concat(p));
	}
}

static struct node *not_expr(struct parser *p)
{
	if (is_name(peek(p), "not")) {
		struct node *n = mk(p, N_NOT);
		if (!n)
			return NULL;
		p->pos++;
		if (++p->depth > MAX_DEPTH)
			return perr(p, "expressions nested too deeply");
		n->a = not_expr(p);
		p->depth--;
		return n->a ? n : NULL;
	}
	return compare(p);
}

static struct node *and_expr(struct parser *p)
{
	struct node *l = not_expr(p);
	while (l && is_name(peek(p), "and")) {
		struct node *n = mk(p, N_AND);
		p->pos++;
		if (!n)
			return NULL;
		n->a = l;
		if (!(n->b = not_expr(p)))
			return NULL;
		l = n;
	}
	return l;
}

static struct node *or_expr(struct parser *p)
{
	struct node *l = and_expr(p);
	while (l && is_name(peek(p), "or")) {
		struct node *n = mk(p, N_OR);
		p->pos++;
		if (!n)
			return NULL;
		n->a = l;
		if (!(n->b = and_expr(p)))
			return NULL;
		l = n;
	}
	return l;
}

static struct node *expr(struct parser *p)
{
	if (++p->depth > MAX_DEPTH)
		return perr(p, "expressions nested too deeply");
	struct node *l = or_expr(p);
	if (l && is_name(peek(p), "if")) {
		struct node *n = mk(p, N_COND);
		p->pos++;
		if (!n || !(n->b = or_expr(p)))
			return NULL;
		n->a = l;
		if (is_name(peek(p), "else")) {
			p->pos++;
			if (!(n->c = expr(p)))
				return NULL;
		}
		l = n;
	}
	p->depth--;
	return l;
}

static int end_stmt(struct parser *p)
{
	if (peek(p)->t != T_CSTMT) {
		perr(p, "expected '%%}'");
		return -1;
	}
	p->pos++;
	return 0;
}

/* statements until one of the names in stop (a {% name %} left unconsumed) or EOF */
static struct node *body(struct parser *p, const char *const *stop);

static struct node *stmt_if(struct parser *p)
{
	static const char *const stop[] = {"elif", "else", "endif", NULL};
	struct node *n = mk(p, N_IF);
	if (!n || !(n->a = expr(p)) || end_stmt(p) || !(n->b = body(p, stop)))
		return NULL;
	if (peek(p)->t == T_EOF)
		return perr(p, "unterminated 'if' (no endif)");
	struct tok *t = &p->c->toks[p->pos + 1];
	p->pos += 2;
	if (is_name(t, "elif")) {
		if (!(n->c = stmt_if(p)))
			return NULL;
		return n;
	}
	if (is_name(t, "else")) {
		static const char *const stop2[] = {"endif", NULL};
		if (end_stmt(p) || !(n->c = body(p, stop2)))
			return NULL;
		if (peek(p)->t == T_EOF)
			return perr(p, "unterminated 'if' (no endif)");
		p->pos += 2;
	}
	if (end_stmt(p))
		return NULL;
	return n;
}

static struct node *target(struct parser *p)
{
	struct node *n = mk(p, N_TUPLE);
	size_t cap = 0;
	if (!n)
		return NULL;
	do {
		if (peek(p)->t != T_NAME)
			return perr(p, "expected a loop variable name");
		struct node *v = mk(p, N_NAME);
		if (!v)
			return NULL;
		v->s = peek(p)->p;
		v->sn = peek(p)->n;
		p->pos++;
		if (push_kid(p, n, v, &cap))
			return NULL;
	} while (is_op(peek(p), ",") && ++p->pos);
	return n;
}

static struct node *stmt_for(struct parser *p)
{
	static const char *const stop[] = {"else", "endfor", NULL};
	struct node *n = mk(p, N_FOR);
	if (!n || !(n->a = target(p)))
		return NULL;
	if (!is_name(peek(p), "in"))
		return perr(p, "expected 'in' in a for");
	p->pos++;
	/* the iterable, without a conditional expression: "if" starts the filter */
	if (++p->depth > MAX_DEPTH)
		return perr(p, "expressions nested too deeply");
	if (!(n->b = or_expr(p)))
		return NULL;
	p->depth--;
	if (is_name(peek(p), "if")) {
		p->pos++;
		if (!(n->kids = arena_alloc(&p->c->parse, sizeof(*n->kids))) || !(n->kids[0] = expr(p)))
			return n->kids ? NULL : perr(p, "template too large");
		n->nk = 1;
	}
	if (is_name(peek(p), "recursive"))
		return perr(p, "recursive loops are not supported");
	if (end_stmt(p) || !(n->c = body(p, stop)))
		return NULL;
	if (peek(p)->t == T_EOF)
		return perr(p, "unterminated 'for' (no endfor)");
	struct tok *t = &p->c->toks[p->pos + 1];
	p->pos += 2;
	if (is_name(t, "else")) {
		static const char *const stop2[] = {"endfor", NULL};
		if (end_stmt(p) || !(n->d = body(p, stop2)))
			return NULL;
		if (peek(p)->t == T_EOF)
			return perr(p, "unterminated 'for' (no endfor)");
		p->pos += 2;
	}
	return end_stmt(p) ? NULL : n;
}

static struct node *stmt_set(struct parser *p)
{
	struct node *n = mk(p, N_SET), *t;
	if (!n)
		return NULL;
	if (peek(p)->t != T_NAME)
		return perr(p, "expected a name after 'set'");
	if (is_op(&p->c->toks[p->pos + 1], ".")) { /* ns.attr */
		if (!(t = mk(p, N_ATTR)) || !(t->a = mk(p, N_NAME)))
			return NULL;
		t->a->s = peek(p)->p;
		t->a->sn = peek(p)->n;
		p->pos += 2;
		if (peek(p)->t != T_NAME)
			return perr(p, "expected a name after '.'");
		t->s = peek(p)->p;
		t->sn = peek(p)->n;
		p->pos++;
	} else if (!(t = target(p)))
		return NULL;
	n->a = t;
	if (peek(p)->t == T_CSTMT) { /* {% set x %}...{% endset %} */
		static const char *const stop[] = {"endset", NULL};
		if (t->k != N_TUPLE || t->nk != 1)
			return perr(p, "a block set takes one name");
		n->k = N_SETBLOCK;
		p->pos++;
		if (!(n->b = body(p, stop)))
			return NULL;
		if (peek(p)->t == T_EOF)
			return perr(p, "unterminated 'set' (no endset)");
		p->pos += 2;
		return end_stmt(p) ? NULL : n;
	}
	if (expect_op(p, "="))
		return NULL;
	if (!(n->b = expr(p)))
		return NULL;
	if (is_op(peek(p), ",")) { /* set a, b = 1, 2 */
		struct node *tu = mk(p, N_TUPLE);
		size_t cap = 0;
		if (!tu || push_kid(p, tu, n->b, &cap))
			return NULL;
		while (is_op(peek(p), ",")) {
			p->pos++;
			struct node *e = expr(p);
			if (!e || push_kid(p, tu, e, &cap))
				return NULL;
		}
		n->b = tu;
	}
	return end_stmt(p) ? NULL : n;
}

static struct node *body(struct parser *p, const char *const *stop)
{
	struct node *b = mk(p, N_BODY);
	size_t cap = 0;
	if (!b)
		return NULL;
	if (++p->depth > MAX_DEPTH)
		return perr(p, "statements nested too deeply");
	for (;;) {
		struct tok *t = peek(p);
		struct node *s = NULL;
		if (t->t == T_EOF)
			break;
		if (t->t == T_TEXT) {
			if (!(s = mk(p, N_TEXT)))
				return NULL;
			s->s = t->p;
			s->sn = t->n;
			p->pos++;
		} else if (t->t == T_OEXPR) {
			p->pos++;
			if (!(s = mk(p, N_OUT)) || !(s->a = expr(p)))
				return NULL;
			if (peek(p)->t != T_CEXPR)
				return perr(p, "expected '}}'");
			p->pos++;
		} else if (t->t == T_OSTMT) {
			struct tok *kw = &p->c->toks[p->pos + 1];
			if (kw->t != T_NAME)
				return perr(p, "expected a statement name after '{%%'");
			for (int i = 0; stop && stop[i]; i++)
				if (is_name(kw, stop[i])) {
					p->depth--;
					return b;
				}
			p->pos += 2;
			if (is_name(kw, "if"))
				s = stmt_if(p);
			else if (is_name(kw, "for"))
				s = stmt_for(p);
			else if (is_name(kw, "set"))
				s = stmt_set(p);
			else if (is_name(kw, "break") || is_name(kw, "continue")) {
				if ((s = mk(p, is_name(kw, "break") ? N_BREAK : N_CONTINUE)) && end_stmt(p))
					return NULL;
			} else
				return perr(p, "unsupported or unexpected statement '%.*s'", (int)(kw->n > 30 ? 30 : kw->n),
					    kw->p);
			if (!s)
				return NULL;
		} else
			return perr(p, "unexpected token");
		if (push_kid(p, b, s, &cap))
			return NULL;
	}
	if (stop)
		return b; /* the caller reports the missing end tag */
	p->depth--;
	return b;
}

/* ---- evaluation ---- */

static struct jv undef(void)
{
	return (struct jv){.t = V_UNDEF};
}

static struct jv vbool(int b)
{
	return (struct jv){.t = V_BOOL, .i = !!b};
}

static struct jv vint(int64_t i)
{
	return (struct jv){.t = V_INT, .i = i};
}

static enum hm_err rfail(struct rnd *r, const char *fmt, ...) HM_PRINTF(2, 3);
static enum hm_err rfail(struct rnd *r, const char *fmt, ...)
{
	if (!r->err) {
		char msg[400];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		r->err = failf(r->ctx, r->line, "%s", msg);
	}
	return r->err;
}

static void *ralloc(struct rnd *r, size_t n)
{
	void *p = arena_alloc(r->ar, n);
	if (!p)
		rfail(r, "rendering needs more than %u MiB", MAX_ARENA >> 20);
	return p;
}

static struct jv vstr(struct rnd *r, const char *s, size_t n)
{
	struct jstr *js = ralloc(r, sizeof(*js) + n + 1);
	if (!js)
		return undef();
	js->n = n;
	if (n)
		memcpy(js->p, s, n);
	js->p[n] = 0;
	return (struct jv){.t = V_STR, .s = js};
}

static struct jv vstr0(struct rnd *r, const char *s)
{
	return vstr(r, s, strlen(s));
}

static struct jlist *newlist(struct rnd *r, size_t cap)
{
	struct jlist *l = ralloc(r, sizeof(*l));
	if (!l)
		return NULL;
	l->n = 0;
	l->cap = cap;
	l->v = cap ? ralloc(r, cap * sizeof(*l->v)) : NULL;
	if (cap && !l->v)
		return NULL;
	return l;
}

static int list_push(struct rnd *r, struct jlist *l, struct jv v)
{
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 8;
		struct jv *nv = ralloc(r, nc * sizeof(*nv));
		if (!nv)
			return -1;
		if (l->n)
			memcpy(nv, l->v, l->n * sizeof(*nv));
		l->v = nv;
		l->cap = nc;
	}
	l->v[l->n++] = v;
	return 0;
}

static struct jdict *newdict(struct rnd *r)
{
	struct jdict *d = ralloc(r, sizeof(*d));
	if (d)
		memset(d, 0, sizeof(*d));
	return d;
}

static struct jv *dict_get(const struct jdict *d, const char *k, size_t kn)
{
	for (size_t i = d->n; i-- > 0;)
		if (d->k[i]->n == kn && !memcmp(d->k[i]->p, k, kn))
			return &d->v[i];
	return NULL;
}

static int dict_set(struct rnd *r, struct jdict *d, const char *k, size_t kn, struct jv v)
{
	struct jv *e = dict_get(d, k, kn);
	if (e) {
		*e = v;
		return 0;
	}
	if (d->n == d->cap) {
		size_t nc = d->cap ? d->cap * 2 : 8;
		struct jstr **nk = ralloc(r, nc * sizeof(*nk));
		struct jv *nv = ralloc(r, nc * sizeof(*nv));
		if (!nk || !nv)
			return -1;
		if (d->n) {
			memcpy(nk, d->k, d->n * sizeof(*nk));
			memcpy(nv, d->v, d->n * sizeof(*nv));
		}
		d->k = nk;
		d->v = nv;
		d->cap = nc;
	}
	struct jv ks = vstr(r, k, kn);
	if (ks.t != V_STR)
		return -1;
	d->k[d->n] = ks.s;
	d->v[d->n++] = v;
	return 0;
}

static struct jv from_json(struct rnd *r, json_t *j, int depth)
{
	if (depth > 200) {
		rfail(r, "variables nested too deeply");
		return undef();
	}
	switch (json_typeof(j)) {
	case JSON_NULL: return (struct jv){.t = V_NONE};
	case JSON_TRUE: return vbool(1);
	case JSON_FALSE: return vbool(0);
	case JSON_INTEGER: return vint(json_integer_value(j));
	case JSON_REAL: return (struct jv){.t = V_FLOAT, .f = json_real_value(j)};
	case JSON_STRING: return vstr(r, json_string_value(j), json_string_length(j));
	case JSON_ARRAY: {
		struct jlist *l = newlist(r, json_array_size(j));
		size_t i;
		json_t *e;
		if (!l)
			return undef();
		json_array_foreach (j, i, e)
			if (list_push(r, l, from_json(r, e, depth + 1)))
				return undef();
		return (struct jv){.t = V_LIST, .l = l};
	}
	case JSON_OBJECT: {
		struct jdict *d = newdict(r);
		const char *k;
		json_t *e;
		if (!d)
			return undef();
		json_object_foreach (j, k, e)
			if (dict_set(r, d, k, strlen(k), from_json(r, e, depth + 1)))
				return undef();
		return (struct jv){.t = V_DICT, .d = d};
	}
	}
	return undef();
}

static int truthy(struct jv v)
{
	switch (v.t) {
	case V_BOOL:
	case V_INT: return v.i != 0;
	case V_FLOAT: return v.f != 0;
	case V_STR: return v.s->n != 0;
	case V_LIST: return v.l->n != 0;
	case V_DICT: return v.d->n != 0;
	case V_NS:
	case V_FUNC: return 1;
	default: return 0;
	}
}

static size_t utf8_len(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += ((unsigned char)s[i] & 0xC0) != 0x80;
	return c;
}

/* Python-style str() into b: 1 on out of memory */
static int to_json(struct rnd *r, struct util_buf *b, struct jv v, int indent, int level);

static int fmt_float(struct util_buf *b, double f)
{
	char t[64];
	if (isnan(f))
		return util_buf_adds(b, "NaN");
	if (isinf(f))
		return util_buf_adds(b, f < 0 ? "-Infinity" : "Infinity");
	if (f == floor(f) && fabs(f) < 1e16) {
		snprintf(t, sizeof(t), "%.1f", f);
		return util_buf_adds(b, t);
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(t, sizeof(t), "%.*g", prec, f);
		if (strtod(t, NULL) == f)
			break;
	}
	return util_buf_adds(b, t);
}

static int to_str(struct rnd *r, struct util_buf *b, struct jv v)
{
	switch (v.t) {
	case V_UNDEF: return 0;
	case V_NONE: return util_buf_adds(b, "None");
	case V_BOOL: return util_buf_adds(b, v.i ? "True" : "False");
	case V_INT: return util_buf_printf(b, "%lld", (long long)v.i);
	case V_FLOAT: return fmt_float(b, v.f);
	case V_STR: return util_buf_add(b, v.s->p, v.s->n);
	case V_LIST: {
		if (util_buf_adds(b, "["))
			return -1;
		for (size_t i = 0; i < v.l->n; i++) {
			if (i && util_buf_adds(b, ", "))
				return -1;
			if (v.l->v[i].t == V_STR) {
				if (util_buf_adds(b, "'") || util_buf_add(b, v.l->v[i].s->p, v.l->v[i].s->n) ||
				    util_buf_adds(b, "'"))
					return -1;
			} else if (to_str(r, b, v.l->v[i]))
				return -1;
		}
		return util_buf_adds(b, "]");
	}
	case V_DICT:
	case V_NS: {
		if (util_buf_adds(b, "{"))
			return -1;
		for (size_t i = 0; i < v.d->n; i++) {
			if ((i && util_buf_adds(b, ", ")) || util_buf_adds(b, "'") ||
			    util_buf_add(b, v.d->k[i]->p, v.d->k[i]->n) || util_buf_adds(b, "': "))
				return -1;
			if (v.d->v[i].t == V_STR) {
				if (util_buf_adds(b, "'") || util_buf_add(b, v.d->v[i].s->p, v.d->v[i].s->n) ||
				    util_buf_adds(b, "'"))
					return -1;
			} else if (to_str(r, b, v.d->v[i]))
				return -1;
		}
		return util_buf_adds(b, "}");
	}
	case V_FUNC: return util_buf_adds(b, "<function>");
	}
	return 0;
}

static struct jv stringify(struct rnd *r, struct jv v)
{
	if (v.t == V_STR)
		return v;
	struct util_buf b = UTIL_BUF_INIT;
	if (to_str(r, &b, v)) {
		util_buf_release(&b);
		rfail(r, "out of memory");
		return undef();
	}
	struct jv s = vstr(r, b.buf ? b.buf : "", b.len);
	util_buf_release(&b);
	return s;
}

static int json_str(struct util_buf *b, const char *s, size_t n)
{
	if (util_buf_adds(b, "\""))
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char e[8];
		const char *o = NULL;
		switch (c) {
		case '"': o = "\\\""; break;
		case '\\': o = "\\\\"; break;
		case '\n': o = "\\n"; break;
		case '\r': o = "\\r"; break;
		case '\t': o = "\\t"; break;
		case '\b': o = "\\b"; break;
		case '\f': o = "\\f"; break;
		default:
			if (c < 0x20) {
				snprintf(e, sizeof(e), "\\u%04x", c);
				o = e;
			}
		}
		if (o ? util_buf_adds(b, o) : util_buf_add(b, s + i, 1))
			return -1;
	}
	return util_buf_adds(b, "\"");
}

static int newline_indent(struct util_buf *b, int indent, int level)
{
	if (util_buf_adds(b, "\n"))
		return -1;
	for (int i = 0; i < indent * level; i++)
		if (util_buf_adds(b, " "))
			return -1;
	return 0;
}

/* json.dumps(v, indent=indent or None), as transformers' tojson */
static int to_json(struct rnd *r, struct util_buf *b, struct jv v, int indent, int level)
{
	if (level > 200)
		return -1;
	switch (v.t) {
	case V_UNDEF:
	case V_NONE: return util_buf_adds(b, "null");
	case V_BOOL: return util_buf_adds(b, v.i ? "true" : "false");
	case V_STR: return json_str(b, v.s->p, v.s->n);
	case V_LIST:
		if (!v.l->n)
			return util_buf_adds(b, "[]");
		if (util_buf_adds(b, "["))
			return -1;
		for (size_t i = 0; i < v.l->n; i++) {
			if (i && util_buf_adds(b, indent ? "," : ", "))
				return -1;
			if ((indent && newline_indent(b, indent, level + 1)) || to_json(r, b, v.l->v[i], indent, level + 1))
				return -1;
		}
		return (indent && newline_indent(b, indent, level)) || util_buf_adds(b, "]");
	case V_DICT:
	case V_NS:
		if (!v.d->n)
			return util_buf_adds(b, "{}");
		if (util_buf_adds(b, "{"))
			return -1;
		for (size_t i = 0; i < v.d->n; i++) {
			if (i && util_buf_adds(b, indent ? "," : ", "))
				return -1;
			if ((indent && newline_indent(b, indent, level + 1)) || json_str(b, v.d->k[i]->p, v.d->k[i]->n) ||
			    util_buf_adds(b, ": ") || to_json(r, b, v.d->v[i], indent, level + 1))
				return -1;
		}
		return (indent && newline_indent(b, indent, level)) || util_buf_adds(b, "}");
	default: return to_str(r, b, v);
	}
}

static int num(struct jv v)
{
	return v.t == V_INT || v.t == V_FLOAT || v.t == V_BOOL;
}

static double fval(struct jv v)
{
	return v.t == V_FLOAT ? v.f : (double)v.i;
}

static int equal(struct jv a, struct jv b)
{
	if (num(a) && num(b))
		return fval(a) == fval(b);
	if (a.t != b.t)
		return (a.t == V_NONE || a.t == V_UNDEF) && (b.t == V_NONE || b.t == V_UNDEF) && a.t == b.t;
	switch (a.t) {
	case V_STR: return a.s->n == b.s->n && !memcmp(a.s->p, b.s->p, a.s->n);
	case V_LIST:
		if (a.l->n != b.l->n)
			return 0;
		for (size_t i = 0; i < a.l->n; i++)
			if (!equal(a.l->v[i], b.l->v[i]))
				return 0;
		return 1;
	case V_DICT:
		if (a.d->n != b.d->n)
			return 0;
		for (size_t i = 0; i < a.d->n; i++) {
			struct jv *o = dict_get(b.d, a.d->k[i]->p, a.d->k[i]->n);
			if (!o || !equal(a.d->v[i], *o))
				return 0;
		}
		return 1;
	case V_NS:
	case V_FUNC: return a.d == b.d;
	default: return 1;
	}
}

static const char *tname(struct jv v)
{
	static const char *const n[] = {"undefined", "none", "boolean", "integer", "float",
					"string", "list", "dict", "namespace", "function"};
	return n[v.t];
}

struct scope {
	struct scope *up;
	struct jdict *vars;
};

static struct jv lookup(struct scope *s, const char *k, size_t n)
{
	for (; s; s = s->up) {
		struct jv *v = dict_get(s->vars, k, n);
		if (v)
			return *v;
	}
	return undef();
}

static const char *const GLOBALS[] = {"raise_exception", "namespace", "range", "strftime_now", "dict", NULL};

static struct jv eval(struct rnd *r, struct scope *sc, struct node *n);

static struct jv vfunc(struct rnd *r, const char *name, struct jv self)
{
	struct jfunc *f = ralloc(r, sizeof(*f));
	if (!f)
		return undef();
	f->name = name;
	f->self = self;
	return (struct jv){.t = V_FUNC, .fn = f};
}

static int nameq(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && !memcmp(s, lit, n);
}

/* attribute / item access */
static struct jv getattr(struct rnd *r, struct jv o, const char *k, size_t kn, int method_ok)
{
	if (o.t == V_DICT || o.t == V_NS) {
		struct jv *v = dict_get(o.d, k, kn);
		if (v)
			return *v;
	}
	if (!method_ok)
		return undef();
	static const char *const STR_M[] = {"strip", "lstrip", "rstrip", "split", "startswith", "endswith", "upper",
					    "lower", "replace", "title", "capitalize", "find", "count", "format",
					    "join", "splitlines", "rsplit", NULL};
	static const char *const DICT_M[] = {"items", "keys", "values", "get", NULL};
	static const char *const LIST_M[] = {"append", "index", "count", NULL};
	const char *const *m = o.t == V_STR ? STR_M : o.t == V_DICT ? DICT_M : o.t == V_LIST ? LIST_M : NULL;
	for (int i = 0; m && m[i]; i++)
		if (nameq(k, kn, m[i]))
			return vfunc(r, m[i], o);
	return undef();
}

static int64_t norm_index(int64_t i, size_t n)
{
	return i < 0 ? i + (int64_t)n : i;
}

static struct jv getitem(struct rnd *r, struct jv o, struct jv k)
{
	if (o.t == V_LIST && (k.t == V_INT || k.t == V_BOOL)) {
		int64_t i = norm_index(k.i, o.l->n);
		return i >= 0 && (size_t)i < o.l->n ? o.l->v[i] : undef();
	}
	if (o.t == V_STR && (k.t == V_INT || k.t == V_BOOL)) {
		int64_t i = norm_index(k.i, o.s->n);
		return i >= 0 && (size_t)i < o.s->n ? vstr(r, o.s->p + i, 1) : undef();
	}
	if ((o.t == V_DICT || o.t == V_NS) && k.t == V_STR)
		return getattr(r, o, k.s->p, k.s->n, 0);
	if (o.t == V_DICT && k.t != V_STR) {
		struct jv ks = stringify(r, k);
		return ks.t == V_STR ? getattr(r, o, ks.s->p, ks.s->n, 0) : undef();
	}
	return undef();
}

static struct jv slice(struct rnd *r, struct jv o, struct jv a, struct jv b, struct jv c)
{
	int64_t n, step = c.t == V_INT ? c.i : 1, lo, hi;
	if (o.t == V_LIST)
		n = (int64_t)o.l->n;
	else if (o.t == V_STR)
		n = (int64_t)o.s->n;
	else
		return undef();
	if (step == 0) {
		rfail(r, "slice step cannot be zero");
		return undef();
	}
	/* Python's slice.indices */
	if (step > 0) {
		lo = a.t == V_INT ? norm_index(a.i, n) : 0;
		hi = b.t == V_INT ? norm_index(b.i, n) : n;
		lo = lo < 0 ? 0 : lo > n ? n : lo;
		hi = hi < 0 ? 0 : hi > n ? n : hi;
	} else {
		lo = a.t == V_INT ? norm_index(a.i, n) : n - 1;
		hi = b.t == V_INT ? norm_index(b.i, n) : -1;
		lo = lo < -1 ? -1 : lo > n - 1 ? n - 1 : lo;
		hi = hi < -1 ? -1 : hi > n - 1 ? n - 1 : hi;
	}
	if (o.t == V_LIST) {
		struct jlist *l = newlist(r, 0);
		if (!l)
			return undef();
		for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step)
			if (list_push(r, l, o.l->v[i]))
				return undef();
		return (struct jv){.t = V_LIST, .l = l};
	}
	struct util_buf bb = UTIL_BUF_INIT;
	for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step)
		if (util_buf_add(&bb, o.s->p + i, 1)) {
			util_buf_release(&bb);
			rfail(r, "out of memory");
			return undef();
		}
	struct jv s = vstr(r, bb.buf ? bb.buf : "", bb.len);
	util_buf_release(&bb);
	return s;
}

/* evaluated call arguments */
struct args {
	size_t n, nkw;
	struct jv v[8];
	const char *kw[8];
	size_t kwn[8];
	struct jv kv[8];
};

static int eval_args(struct rnd *r, struct scope *sc, struct node *call, struct args *a)
{
	memset(a, 0, sizeof(*a));
	if (!call)
		return 0;
	for (size_t i = 0; i < call->nk; i++) {
		struct node *k = call->kids[i];
		if (k->k == N_KW) {
			if (a->nkw == 8)
				return rfail(r, "too many arguments"), -1;
			a->kw[a->nkw] = k->s;
			a->kwn[a->nkw] = k->sn;
			a->kv[a->nkw++] = eval(r, sc, k->a);
		} else {
			if (a->n == 8)
				return rfail(r, "too many arguments"), -1;
			a->v[a->n++] = eval(r, sc, k);
		}
		if (r->err)
			return -1;
	}
	return 0;
}

static struct jv kwarg(struct args *a, const char *name, size_t pos)
{
	for (size_t i = 0; i < a->nkw; i++)
		if (nameq(a->kw[i], a->kwn[i], name))
			return a->kv[i];
	return pos < a->n ? a->v[pos] : undef();
}

static int is_space_in(char c, struct jv chars)
{
	if (chars.t == V_STR)
		return memchr(chars.s->p, c, chars.s->n) != NULL;
	return is_ws(c);
}

static struct jv strip(struct rnd *r, struct jv s, struct jv chars, int left, int right)
{
	size_t a = 0, b = s.s->n;
	while (left && a < b && is_space_in(s.s->p[a], chars))
		a++;
	while (right && b > a && is_space_in(s.s->p[b - 1], chars))
		b--;
	return vstr(r, s.s->p + a, b - a);
}

static struct jv replace(struct rnd *r, struct jv s, struct jv from, struct jv to, int64_t count)
{
	if (s.t != V_STR || from.t != V_STR || to.t != V_STR) {
		rfail(r, "replace takes strings");
		return undef();
	}
	struct util_buf b = UTIL_BUF_INIT;
	size_t i = 0;
	int bad = 0;
	int64_t done = 0;
	while (i <= s.s->n) {
		const char *hit = NULL;
		if (count < 0 || done < count) {
			if (!from.s->n)
				hit = s.s->p + i;
			else
				hit = memmem(s.s->p + i, s.s->n - i, from.s->p, from.s->n);
		}
		if (!hit) {
			bad |= util_buf_add(&b, s.s->p + i, s.s->n - i);
			break;
		}
		bad |= util_buf_add(&b, s.s->p + i, (size_t)(hit - (s.s->p + i)));
		bad |= util_buf_add(&b, to.s->p, to.s->n);
		done++;
		if (!from.s->n) {
			if (i < s.s->n)
				bad |= util_buf_add(&b, s.s->p + i, 1);
			i++;
		} else
			i = (size_t)(hit - s.s->p) + from.s->n;
		if (b.len > ENG_CHAT_MAX_OUTPUT) {
			bad = 1;
			break;
		}
	}
	struct jv o = bad ? undef() : vstr(r, b.buf ? b.buf : "", b.len);
	if (bad)
		rfail(r, "replace result too large");
	util_buf_release(&b);
	return o;
}

static struct jv split(struct rnd *r, struct jv s, struct jv sep, int64_t maxsplit)
{
	struct jlist *l = newlist(r, 0);
	if (!l)
		return undef();
	const char *p = s.s->p, *e = s.s->p + s.s->n;
	if (sep.t != V_STR) { /* whitespace runs */
		while (p < e) {
			while (p < e && is_ws(*p))
				p++;
			if (p >= e)
				break;
			const char *q = p;
			if (maxsplit >= 0 && (int64_t)l->n >= maxsplit)
				q = e;
			else
				while (q < e && !is_ws(*q))
					q++;
			if (list_push(r, l, vstr(r, p, (size_t)(q - p))))
				return undef();
			p = q;
		}
		return (struct jv){.t = V_LIST, .l = l};
	}
	if (!sep.s->n) {
		rfail(r, "empty separator");
		return undef();
	}
	for (;;) {
		const char *hit = (maxsplit < 0 || (int64_t)l->n < maxsplit)
					  ? memmem(p, (size_t)(e - p), sep.s->p, sep.s->n) : NULL;
		if (!hit) {
			if (list_push(r, l, vstr(r, p, (size_t)(e - p))))
				return undef();
			break;
		}
		if (list_push(r, l, vstr(r, p, (size_t)(hit - p))))
			return undef();
		p = hit + sep.s->n;
		r->steps++;
	}
	return (struct jv){.t = V_LIST, .l = l};
}

static struct jv case_map(struct rnd *r, struct jv s, int mode) /* 0 lower 1 upper 2 title 3 capitalize */
{
	struct jv o = vstr(r, s.s->p, s.s->n);
	if (o.t != V_STR)
		return o;
	int start = 1;
	for (size_t i = 0; i < o.s->n; i++) {
		unsigned char c = (unsigned char)o.s->p[i];
		if (mode == 0)
			o.s->p[i] = (char)tolower(c);
		else if (mode == 1)
			o.s->p[i] = (char)toupper(c);
		else if (mode == 2) {
			o.s->p[i] = (char)(start ? toupper(c) : tolower(c));
			start = !isalpha(c);
		} else
			o.s->p[i] = (char)(i == 0 ? toupper(c) : tolower(c));
	}
	return o;
}

static struct jv vlist_items(struct rnd *r, struct jv d)
{
	struct jlist *l = newlist(r, d.d->n);
	if (!l)
		return undef();
	for (size_t i = 0; i < d.d->n; i++) {
		struct jlist *pair = newlist(r, 2);
		if (!pair)
			return undef();
		pair->v[0] = (struct jv){.t = V_STR, .s = d.d->k[i]};
		pair->v[1] = d.d->v[i];
		pair->n = 2;
		l->v[l->n++] = (struct jv){.t = V_LIST, .l = pair};
	}
	return (struct jv){.t = V_LIST, .l = l};
}

static struct jv call_method(struct rnd *r, struct jfunc *f, struct args *a)
{
	struct jv s = f->self;
	const char *m = f->name;
	if (s.t == V_STR) {
		if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip"))
			return strip(r, s, kwarg(a, "chars", 0), m[0] != 'r', m[0] != 'l');
		if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
			struct jv p = kwarg(a, "prefix", 0);
			int end = m[0] == 'e';
			struct jv one;
			size_t np = 1;
			struct jv *ps = &one;
			if (p.t == V_LIST) {
				ps = p.l->v;
				np = p.l->n;
			} else
				one = p;
			for (size_t i = 0; i < np; i++) {
				if (ps[i].t != V_STR) {
					rfail(r, "%s takes a string", m);
					return undef();
				}
				size_t k = ps[i].s->n;
				if (k <= s.s->n && !memcmp(end ? s.s->p + s.s->n - k : s.s->p, ps[i].s->p, k))
					return vbool(1);
			}
			return vbool(0);
		}
		if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
			struct jv ms = kwarg(a, "maxsplit", 1);
			return split(r, s, kwarg(a, "sep", 0), ms.t == V_INT ? ms.i : -1);
		}
		if (!strcmp(m, "splitlines"))
			return split(r, s, vstr0(r, "\n"), -1);
		if (!strcmp(m, "upper") || !strcmp(m, "lower") || !strcmp(m, "title") || !strcmp(m, "capitalize"))
			return case_map(r, s, m[0] == 'l' ? 0 : m[0] == 'u' ? 1 : m[0] == 't' ? 2 : 3);
		if (!strcmp(m, "replace")) {
			struct jv c = kwarg(a, "count", 2);
			return replace(r, s, kwarg(a, "old", 0), kwarg(a, "new", 1), c.t == V_INT ? c.i : -1);
		}
		if (!strcmp(m, "find") || !strcmp(m, "count")) {
			struct jv sub = kwarg(a, "sub", 0);
			if (sub.t != V_STR) {
				rfail(r, "%s takes a string", m);
				return undef();
			}
			if (m[0] == 'f') {
				const char *h = memmem(s.s->p, s.s->n, sub.s->p, sub.s->n);
				return vint(h ? (int64_t)(h - s.s->p) : -1);
			}
			int64_t c = 0;
			for (const char *p = s.s->p, *e = p + s.s->n;
			     sub.s->n && (p = memmem(p, (size_t)(e - p), sub.s->p, sub.s->n)); p += sub.s->n)
				c++;
			return vint(c);
		}
		if (!strcmp(m, "join")) {
			struct jv l = kwarg(a, "iterable", 0);
			if (l.t != V_LIST) {
				rfail(r, "join takes a list");
				return undef();
			}
			struct util_buf b = UTIL_BUF_INIT;
			int bad = 0;
			for (size_t i = 0; i < l.l->n; i++) {
				if (i)
					bad |= util_buf_add(&b, s.s->p, s.s->n);
				bad |= to_str(r, &b, l.l->v[i]);
			}
			struct jv o = bad ? undef() : vstr(r, b.buf ? b.buf : "", b.len);
			util_buf_release(&b);
			if (bad)
				rfail(r, "out of memory");
			return o;
		}
	}
	if (s.t == V_DICT) {
		if (!strcmp(m, "items"))
			return vlist_items(r, s);
		if (!strcmp(m, "keys") || !strcmp(m, "values")) {
			struct jlist *l = newlist(r, s.d->n);
			if (!l)
				return undef();
			for (size_t i = 0; i < s.d->n; i++)
				l->v[l->n++] = m[0] == 'k' ? (struct jv){.t = V_STR, .s = s.d->k[i]} : s.d->v[i];
			return (struct jv){.t = V_LIST, .l = l};
		}
		if (!strcmp(m, "get")) {
			struct jv k = kwarg(a, "key", 0);
			struct jv v = k.t == V_STR ? getattr(r, s, k.s->p, k.s->n, 0) : undef();
			if (v.t == V_UNDEF) {
				v = kwarg(a, "default", 1);
				if (v.t == V_UNDEF)
					v.t = V_NONE;
			}
			return v;
		}
	}
	if (s.t == V_LIST) {
		if (!strcmp(m, "append")) {
			if (list_push(r, s.l, kwarg(a, "x", 0)))
				return undef();
			return (struct jv){.t = V_NONE};
		}
		if (!strcmp(m, "index") || !strcmp(m, "count")) {
			struct jv x = kwarg(a, "x", 0);
			int64_t c = 0;
			for (size_t i = 0; i < s.l->n; i++)
				if (equal(s.l->v[i], x)) {
					if (m[0] == 'i')
						return vint((int64_t)i);
					c++;
				}
			if (m[0] == 'i') {
				rfail(r, "index: value not in list");
				return undef();
			}
			return vint(c);
		}
	}
	rfail(r, "unsupported method '%s' of a %s", m, tname(s));
	return undef();
}

static void fmt_time(struct rnd *r, const char *fmt, char *out, size_t cap)
{
	time_t now = r->now ? r->now : time(NULL);
	struct tm tm;
	localtime_r(&now, &tm); /* as transformers' datetime.now() */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	/* the template's format: strftime only reads it */
	if (!strftime(out, cap, fmt, &tm))
		out[0] = 0;
#pragma GCC diagnostic pop
}

static struct jv call(struct rnd *r, struct scope *sc, struct node *n)
{
	struct jv f = eval(r, sc, n->a);
	struct args a;
	if (r->err || eval_args(r, sc, n, &a))
		return undef();
	if (f.t != V_FUNC) {
		rfail(r, "'%.*s' is not callable", n->a->k == N_NAME || n->a->k == N_ATTR ? (int)n->a->sn : 9,
		      n->a->k == N_NAME || n->a->k == N_ATTR ? n->a->s : "the value");
		return undef();
	}
	if (f.fn->self.t != V_UNDEF)
		return call_method(r, f.fn, &a);
	const char *g = f.fn->name;
	if (!strcmp(g, "raise_exception")) {
		struct jv m = a.n ? stringify(r, a.v[0]) : vstr0(r, "");
		if (!r->err)
			rfail(r, "raise_exception: %.300s", m.t == V_STR ? m.s->p : "");
		return undef();
	}
	if (!strcmp(g, "namespace") || !strcmp(g, "dict")) {
		struct jdict *d = newdict(r);
		if (!d)
			return undef();
		for (size_t i = 0; i < a.n; i++)
			if (a.v[i].t == V_DICT)
				for (size_t k = 0; k < a.v[i].d->n; k++)
					if (dict_set(r, d, a.v[i].d->k[k]->p, a.v[i].d->k[k]->n, a.v[i].d->v[k]))
						return undef();
		for (size_t i = 0; i < a.nkw; i++)
			if (dict_set(r, d, a.kw[i], a.kwn[i], a.kv[i]))
				return undef();
		return (struct jv){.t = g[0] == 'n' ? V_NS : V_DICT, .d = d};
	}
	if (!strcmp(g, "range")) {
		int64_t lo = 0, hi, st = 1;
		for (size_t i = 0; i < a.n; i++)
			if (a.v[i].t != V_INT) {
				rfail(r, "range takes integers");
				return undef();
			}
		if (a.n == 1)
			hi = a.v[0].i;
		else if (a.n >= 2) {
			lo = a.v[0].i;
			hi = a.v[1].i;
			if (a.n == 3)
				st = a.v[2].i;
		} else {
			rfail(r, "range takes 1 to 3 integers");
			return undef();
		}
		if (st == 0) {
			rfail(r, "range step cannot be zero");
			return undef();
		}
		struct jlist *l = newlist(r, 0);
		if (!l)
			return undef();
		for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
			if (++r->steps > MAX_STEPS) {
				rfail(r, "rendering takes too many steps");
				return undef();
			}
			if (list_push(r, l, vint(i)))
				return undef();
		}
		return (struct jv){.t = V_LIST, .l = l};
	}
	if (!strcmp(g, "strftime_now")) {
		char buf[256];
		if (!a.n || a.v[0].t != V_STR) {
			rfail(r, "strftime_now takes a format string");
			return undef();
		}
		fmt_time(r, a.v[0].s->p, buf, sizeof(buf));
		return vstr0(r, buf);
	}
	rfail(r, "unsupported function '%s'", g);
	return undef();
}

static int test(struct rnd *r, struct node *n, struct jv v, struct args *a)
{
	const char *t = n->s;
	size_t tn = n->sn;
#define T(name) nameq(t, tn, name)
	if (T("defined"))
		return v.t != V_UNDEF;
	if (T("undefined"))
		return v.t == V_UNDEF;
	if (T("none"))
		return v.t == V_NONE;
	if (T("string"))
		return v.t == V_STR;
	if (T("number"))
		return v.t == V_INT || v.t == V_FLOAT;
	if (T("integer"))
		return v.t == V_INT;
	if (T("float"))
		return v.t == V_FLOAT;
	if (T("boolean"))
		return v.t == V_BOOL;
	if (T("true"))
		return v.t == V_BOOL && v.i;
	if (T("false"))
		return v.t == V_BOOL && !v.i;
	if (T("mapping"))
		return v.t == V_DICT || v.t == V_NS;
	if (T("iterable") || T("sequence"))
		return v.t == V_LIST || v.t == V_STR || v.t == V_DICT;
	if (T("callable"))
		return v.t == V_FUNC;
	if (T("even") || T("odd")) {
		if (v.t != V_INT) {
			rfail(r, "'%.*s' needs an integer", (int)tn, t);
			return 0;
		}
		return (v.i % 2 == 0) == T("even");
	}
	if (T("divisibleby")) {
		if (v.t != V_INT || !a->n || a->v[0].t != V_INT || a->v[0].i == 0) {
			rfail(r, "divisibleby needs integers");
			return 0;
		}
		return v.i % a->v[0].i == 0;
	}
	if (T("eq") || T("equalto") || T("==") || T("sameas"))
		return a->n && equal(v, a->v[0]);
	if (T("ne"))
		return !(a->n && equal(v, a->v[0]));
	if (T("lower") || T("upper")) {
		if (v.t != V_STR)
			return 0;
		for (size_t i = 0; i < v.s->n; i++)
			if (T("lower") ? isupper((unsigned char)v.s->p[i]) : islower((unsigned char)v.s->p[i]))
				return 0;
		return 1;
	}
#undef T
	rfail(r, "unsupported test '%.*s'", (int)(tn > 30 ? 30 : tn), t);
	return 0;
}

static int cmp_vals(struct rnd *r, struct jv a, struct jv b)
{
	if (num(a) && num(b))
		return fval(a) < fval(b) ? -1 : fval(a) > fval(b);
	if (a.t == V_STR && b.t == V_STR) {
		size_t m = a.s->n < b.s->n ? a.s->n : b.s->n;
		int c = memcmp(a.s->p, b.s->p, m);
		return c ? (c < 0 ? -1 : 1) : a.s->n < b.s->n ? -1 : a.s->n > b.s->n;
	}
	rfail(r, "cannot compare a %s with a %s", tname(a), tname(b));
	return 0;
}

static struct jv list_of(struct rnd *r, struct jv v)
{
	if (v.t == V_LIST)
		return v;
	if (v.t == V_DICT) {
		struct jlist *l = newlist(r, v.d->n);
		if (!l)
			return undef();
		for (size_t i = 0; i < v.d->n; i++)
			l->v[l->n++] = (struct jv){.t = V_STR, .s = v.d->k[i]};
		return (struct jv){.t = V_LIST, .l = l};
	}
	if (v.t == V_STR) {
		struct jlist *l = newlist(r, 0);
		if (!l)
			return undef();
		for (size_t i = 0; i < v.s->n;) {
			size_t k = i + 1;
			while (k < v.s->n && ((unsigned char)v.s->p[k] & 0xC0) == 0x80)
				k++;
			if (list_push(r, l, vstr(r, v.s->p + i, k - i)))
				return undef();
			i = k;
		}
		return (struct jv){.t = V_LIST, .l = l};
	}
	rfail(r, "a %s is not iterable", tname(v));
	return undef();
}

static struct jv attr_path(struct rnd *r, struct jv v, struct jv attr)
{
	if (attr.t != V_STR)
		return undef();
	/* "a.b" walks down */
	const char *p = attr.s->p, *e = p + attr.s->n;
	while (p <= e) {
		const char *dot = memchr(p, '.', (size_t)(e - p));
		if (!dot)
			dot = e;
		v = getattr(r, v, p, (size_t)(dot - p), 0);
		p = dot + 1;
	}
	return v;
}

static struct jv filter(struct rnd *r, struct scope *sc, struct node *n)
{
	struct jv v = eval(r, sc, n->a);
	struct args a;
	if (r->err || eval_args(r, sc, n->b, &a))
		return undef();
	const char *f = n->s;
	size_t fn = n->sn;
#define F(name) nameq(f, fn, name)
	if (F("safe") || F("e") || F("escape") || F("forceescape")) {
		if (F("safe"))
			return v;
		/* HTML escaping (autoescape is off in chat templates; explicit escape is rare) */
		struct jv s = stringify(r, v);
		struct util_buf b = UTIL_BUF_INIT;
		int bad = 0;
		if (s.t != V_STR)
			return undef();
		for (size_t i = 0; i < s.s->n; i++) {
			char c = s.s->p[i];
			const char *o = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '"' ? "&#34;"
				      : c == '\'' ? "&#39;" : NULL;
			bad |= o ? util_buf_adds(&b, o) : util_buf_add(&b, &c, 1);
		}
		struct jv o = bad ? undef() : vstr(r, b.buf ? b.buf : "", b.len);
		util_buf_release(&b);
		return o;
	}
	if (F("trim")) {
		struct jv s = stringify(r, v);
		return s.t == V_STR ? strip(r, s, kwarg(&a, "chars", 0), 1, 1) : s;
	}
	if (F("length") || F("count")) {
		switch (v.t) {
		case V_STR: return vint((int64_t)utf8_len(v.s->p, v.s->n));
		case V_LIST: return vint((int64_t)v.l->n);
		case V_DICT:
		case V_NS: return vint((int64_t)v.d->n);
		default: rfail(r, "length of a %s", tname(v)); return undef();
		}
	}
	if (F("tojson")) {
		struct jv ind = kwarg(&a, "indent", 0);
		struct util_buf b = UTIL_BUF_INIT;
		if (to_json(r, &b, v, ind.t == V_INT && ind.i > 0 && ind.i < 64 ? (int)ind.i : 0, 0)) {
			util_buf_release(&b);
			rfail(r, "tojson: out of memory or nested too deeply");
			return undef();
		}
		struct jv o = vstr(r, b.buf ? b.buf : "", b.len);
		util_buf_release(&b);
		return o;
	}
	if (F("upper") || F("lower") || F("title") || F("capitalize")) {
		struct jv s = stringify(r, v);
		return s.t == V_STR ? case_map(r, s, f[0] == 'l' ? 0 : f[0] == 'u' ? 1 : f[0] == 't' ? 2 : 3) : s;
	}
	if (F("string"))
		return stringify(r, v);
	if (F("first") || F("last")) {
		struct jv l = list_of(r, v);
		if (l.t != V_LIST)
			return undef();
		return l.l->n ? l.l->v[F("first") ? 0 : l.l->n - 1] : undef();
	}
	if (F("join")) {
		struct jv l = list_of(r, v), sep = kwarg(&a, "d", 0), attr = kwarg(&a, "attribute", 1);
		struct util_buf b = UTIL_BUF_INIT;
		int bad = 0;
		if (l.t != V_LIST)
			return undef();
		for (size_t i = 0; i < l.l->n; i++) {
			if (i && sep.t == V_STR)
				bad |= util_buf_add(&b, sep.s->p, sep.s->n);
			bad |= to_str(r, &b, attr.t == V_STR ? attr_path(r, l.l->v[i], attr) : l.l->v[i]);
		}
		struct jv o = bad ? undef() : vstr(r, b.buf ? b.buf : "", b.len);
		util_buf_release(&b);
		if (bad)
			rfail(r, "out of memory");
		return o;
	}
	if (F("default") || F("d")) {
		struct jv def = kwarg(&a, "default_value", 0), boolean = kwarg(&a, "boolean", 1);
		if (v.t == V_UNDEF || (truthy(boolean) && !truthy(v)))
			return def.t == V_UNDEF ? vstr0(r, "") : def;
		return v;
	}
	if (F("int")) {
		if (v.t == V_INT || v.t == V_BOOL)
			return vint(v.i);
		if (v.t == V_FLOAT)
			return vint((int64_t)v.f);
		if (v.t == V_STR)
			return vint(strtoll(v.s->p, NULL, 10));
		return vint(0);
	}
	if (F("float")) {
		if (num(v))
			return (struct jv){.t = V_FLOAT, .f = fval(v)};
		if (v.t == V_STR)
			return (struct jv){.t = V_FLOAT, .f = strtod(v.s->p, NULL)};
		return (struct jv){.t = V_FLOAT, .f = 0};
	}
	if (F("abs")) {
		if (v.t == V_INT)
			return vint(v.i < 0 ? -v.i : v.i);
		if (v.t == V_FLOAT)
			return (struct jv){.t = V_FLOAT, .f = fabs(v.f)};
		rfail(r, "abs of a %s", tname(v));
		return undef();
	}
	if (F("round")) {
		struct jv pr = kwarg(&a, "precision", 0);
		double m = pow(10, pr.t == V_INT ? (double)pr.i : 0);
		return (struct jv){.t = V_FLOAT, .f = round(fval(v) * m) / m};
	}
	if (F("list"))
		return list_of(r, v);
	if (F("items")) {
		if (v.t != V_DICT) {
			rfail(r, "items of a %s", tname(v));
			return undef();
		}
		return vlist_items(r, v);
	}
	if (F("replace")) {
		struct jv c = kwarg(&a, "count", 2);
		struct jv s = stringify(r, v);
		return s.t == V_STR ? replace(r, s, kwarg(&a, "old", 0), kwarg(&a, "new", 1), c.t == V_INT ? c.i : -1) : s;
	}
	if (F("reverse")) {
		if (v.t == V_STR)
			return slice(r, v, undef(), undef(), vint(-1));
		struct jv l = list_of(r, v);
		return l.t == V_LIST ? slice(r, l, undef(), undef(), vint(-1)) : l;
	}
	if (F("indent")) {
		struct jv w = kwarg(&a, "width", 0), first = kwarg(&a, "first", 1), blank = kwarg(&a, "blank", 2);
		struct jv s = stringify(r, v);
		struct util_buf b = UTIL_BUF_INIT;
		int bad = 0;
		int64_t width = w.t == V_INT ? w.i : 4;
		if (s.t != V_STR)
			return s;
		if (width < 0 || width > 256)
			width = 4;
		for (size_t i = 0, ln = 0; i <= s.s->n; ln++) {
			const char *nl = memchr(s.s->p + i, '\n', s.s->n - i);
			size_t e = nl ? (size_t)(nl - s.s->p) : s.s->n;
			if ((ln > 0 || truthy(first)) && (e > i || truthy(blank)))
				for (int64_t k = 0; k < width; k++)
					bad |= util_buf_add(&b, " ", 1);
			bad |= util_buf_add(&b, s.s->p + i, e - i);
			if (!nl)
				break;
			bad |= util_buf_add(&b, "\n", 1);
			i = e + 1;
		}
		struct jv o = bad ? undef() : vstr(r, b.buf ? b.buf : "", b.len);
		util_buf_release(&b);
		if (bad)
			rfail(r, "out of memory");
		return o;
	}
	if (F("map") || F("selectattr") || F("rejectattr") || F("select") || F("reject") || F("unique")) {
		struct jv l = list_of(r, v);
		struct jlist *o;
		if (l.t != V_LIST || !(o = newlist(r, 0)))
			return undef();
		for (size_t i = 0; i < l.l->n; i++) {
			struct jv e = l.l->v[i], x;
			if (++r->steps > MAX_STEPS) {
				rfail(r, "rendering takes too many steps");
				return undef();
			}
			if (F("unique")) {
				int seen = 0;
				for (size_t k = 0; k < o->n && !seen; k++)
					seen = equal(o->v[k], e);
				if (!seen && list_push(r, o, e))
					return undef();
				continue;
			}
			if (F("map")) {
				struct jv at = kwarg(&a, "attribute", 99);
				if (at.t == V_STR)
					x = attr_path(r, e, at);
				else if (a.n && a.v[0].t == V_STR) {
					struct node fake = *n;
					(void)fake;
					if (!strcmp(a.v[0].s->p, "string"))
						x = stringify(r, e);
					else if (!strcmp(a.v[0].s->p, "lower") || !strcmp(a.v[0].s->p, "upper"))
						x = e.t == V_STR ? case_map(r, e, a.v[0].s->p[0] == 'u') : e;
					else if (!strcmp(a.v[0].s->p, "trim"))
						x = e.t == V_STR ? strip(r, e, undef(), 1, 1) : e;
					else if (!strcmp(a.v[0].s->p, "tojson")) {
						struct util_buf b = UTIL_BUF_INIT;
						if (to_json(r, &b, e, 0, 0)) {
							util_buf_release(&b);
							rfail(r, "out of memory");
							return undef();
						}
						x = vstr(r, b.buf ? b.buf : "", b.len);
						util_buf_release(&b);
					} else {
						rfail(r, "unsupported filter for map: '%.30s'", a.v[0].s->p);
						return undef();
					}
				} else {
					rfail(r, "map needs attribute= or a filter name");
					return undef();
				}
				if (list_push(r, o, x))
					return undef();
				continue;
			}
			int attr = F("selectattr") || F("rejectattr");
			struct jv subj = attr ? attr_path(r, e, a.n ? a.v[0] : undef()) : e;
			int keep;
			size_t ti = attr ? 1 : 0;
			if (a.n > ti && a.v[ti].t == V_STR) {
				struct node tn = {0};
				struct args ta = {0};
				tn.s = a.v[ti].s->p;
				tn.sn = a.v[ti].s->n;
				for (size_t k = ti + 1; k < a.n; k++)
					ta.v[ta.n++] = a.v[k];
				keep = test(r, &tn, subj, &ta);
				if (r->err)
					return undef();
			} else
				keep = truthy(subj);
			if (F("rejectattr") || F("reject"))
				keep = !keep;
			if (keep && list_push(r, o, e))
				return undef();
		}
		return (struct jv){.t = V_LIST, .l = o};
	}
	if (F("sort") || F("dictsort")) {
		struct jv l = F("dictsort") ? (v.t == V_DICT ? vlist_items(r, v) : undef()) : list_of(r, v);
		struct jv rev = kwarg(&a, "reverse", 0), at = kwarg(&a, "attribute", 2);
		if (l.t != V_LIST)
			return undef();
		struct jlist *o = newlist(r, l.l->n);
		if (!o)
			return undef();
		/* insertion sort: stable, and lists in templates are short (steps bound it) */
		for (size_t i = 0; i < l.l->n; i++) {
			struct jv e = l.l->v[i], ke = at.t == V_STR ? attr_path(r, e, at) : F("dictsort") ? e.l->v[0] : e;
			size_t k = o->n;
			while (k > 0) {
				struct jv p = o->v[k - 1], kp = at.t == V_STR ? attr_path(r, p, at)
								    : F("dictsort") ? p.l->v[0] : p;
				int c = cmp_vals(r, kp, ke);
				if (r->err || ++r->steps > MAX_STEPS) {
					rfail(r, "sort: rendering takes too many steps");
					return undef();
				}
				if (truthy(rev) ? c >= 0 : c <= 0)
					break;
				o->v[k] = p;
				k--;
			}
			o->v[k] = e;
			o->n++;
		}
		return (struct jv){.t = V_LIST, .l = o};
	}
	if (F("wordcount")) {
		struct jv s = stringify(r, v);
		return s.t == V_STR ? vint((int64_t)split(r, s, undef(), -1).l->n) : undef();
	}
#undef F
	rfail(r, "unsupported filter '%.*s'", (int)(fn > 30 ? 30 : fn), f);
	return undef();
}

static struct jv arith_op(struct rnd *r, int op, struct jv a, struct jv b)
{
	if (op == OP_CAT) {
		struct jv sa = stringify(r, a), sb = stringify(r, b);
		if (r->err)
			return undef();
		struct jstr *s = ralloc(r, sizeof(*s) + sa.s->n + sb.s->n + 1);
		if (!s)
			return undef();
		if (sa.s->n + sb.s->n > ENG_CHAT_MAX_OUTPUT) {
			rfail(r, "string too large");
			return undef();
		}
		s->n = sa.s->n + sb.s->n;
		memcpy(s->p, sa.s->p, sa.s->n);
		memcpy(s->p + sa.s->n, sb.s->p, sb.s->n);
		s->p[s->n] = 0;
		return (struct jv){.t = V_STR, .s = s};
	}
	if (op == OP_ADD && a.t == V_STR && b.t == V_STR)
		return arith_op(r, OP_CAT, a, b);
	if (op == OP_ADD && a.t == V_LIST && b.t == V_LIST) {
		struct jlist *l = newlist(r, a.l->n + b.l->n);
		if (!l)
			return undef();
		memcpy(l->v, a.l->v, a.l->n * sizeof(*l->v));
		memcpy(l->v + a.l->n, b.l->v, b.l->n * sizeof(*l->v));
		l->n = a.l->n + b.l->n;
		return (struct jv){.t = V_LIST, .l = l};
	}
	if (op == OP_MUL && ((a.t == V_STR && b.t == V_INT) || (a.t == V_INT && b.t == V_STR))) {
		struct jv s = a.t == V_STR ? a : b;
		int64_t k = a.t == V_INT ? a.i : b.i;
		if (k < 0)
			k = 0;
		if (s.s->n && (uint64_t)k > ENG_CHAT_MAX_OUTPUT / s.s->n) {
			rfail(r, "string too large");
			return undef();
		}
		struct jstr *o = ralloc(r, sizeof(*o) + s.s->n * (size_t)k + 1);
		if (!o)
			return undef();
		o->n = s.s->n * (size_t)k;
		for (int64_t i = 0; i < k; i++)
			memcpy(o->p + (size_t)i * s.s->n, s.s->p, s.s->n);
		o->p[o->n] = 0;
		return (struct jv){.t = V_STR, .s = o};
	}
	if (!num(a) || !num(b)) {
		static const char *const names[] = {"", "+", "-", "*", "/", "//", "%", "**"};
		rfail(r, "unsupported operand types for %s: %s and %s", names[op], tname(a), tname(b));
		return undef();
	}
	int ints = a.t != V_FLOAT && b.t != V_FLOAT;
	double x = fval(a), y = fval(b);
	switch (op) {
	case OP_ADD: return ints ? vint(a.i + b.i) : (struct jv){.t = V_FLOAT, .f = x + y};
	case OP_SUB: return ints ? vint(a.i - b.i) : (struct jv){.t = V_FLOAT, .f = x - y};
	case OP_MUL: return ints ? vint(a.i * b.i) : (struct jv){.t = V_FLOAT, .f = x * y};
	case OP_DIV:
		if (y == 0)
			break;
		return (struct jv){.t = V_FLOAT, .f = x / y};
	case OP_FDIV:
	case OP_MOD:
		if (y == 0)
			break;
		if (ints) {
			int64_t q = a.i / b.i, m = a.i % b.i;
			if (m && ((m < 0) != (b.i < 0))) {
				q--;
				m += b.i;
			}
			return vint(op == OP_FDIV ? q : m);
		}
		return op == OP_FDIV ? (struct jv){.t = V_FLOAT, .f = floor(x / y)}
				     : (struct jv){.t = V_FLOAT, .f = x - floor(x / y) * y};
	case OP_POW: return ints && y >= 0 ? vint((int64_t)pow(x, y)) : (struct jv){.t = V_FLOAT, .f = pow(x, y)};
	}
	rfail(r, "division by zero");
	return undef();
}

static int contains(struct rnd *r, struct jv hay, struct jv needle)
{
	switch (hay.t) {
	case V_STR:
		if (needle.t != V_STR) {
			rfail(r, "'in <string>' needs a string");
			return 0;
		}
		return memmem(hay.s->p, hay.s->n, needle.s->p, needle.s->n) != NULL;
	case V_LIST:
		for (size_t i = 0; i < hay.l->n; i++)
			if (equal(hay.l->v[i], needle))
				return 1;
		return 0;
	case V_DICT:
	case V_NS: return needle.t == V_STR && dict_get(hay.d, needle.s->p, needle.s->n) != NULL;
	case V_UNDEF: return 0;
	default: rfail(r, "'in' a %s", tname(hay)); return 0;
	}
}

static struct jv eval(struct rnd *r, struct scope *sc, struct node *n)
{
	if (r->err)
		return undef();
	if (++r->steps > MAX_STEPS) {
		rfail(r, "rendering takes too many steps");
		return undef();
	}
	r->line = n->line;
	switch (n->k) {
	case N_LIT: return n->lit;
	case N_NAME: {
		struct jv v = lookup(sc, n->s, n->sn);
		if (v.t == V_UNDEF)
			for (int i = 0; GLOBALS[i]; i++)
				if (nameq(n->s, n->sn, GLOBALS[i]))
					return vfunc(r, GLOBALS[i], undef());
		return v;
	}
	case N_ATTR: {
		struct jv o = eval(r, sc, n->a);
		return getattr(r, o, n->s, n->sn, 1);
	}
	case N_INDEX: {
		struct jv o = eval(r, sc, n->a), k = eval(r, sc, n->b);
		if (k.t == V_STR && o.t != V_DICT && o.t != V_NS)
			return getattr(r, o, k.s->p, k.s->n, 1);
		return getitem(r, o, k);
	}
	case N_SLICE: {
		struct jv o = eval(r, sc, n->a);
		struct jv a = n->b ? eval(r, sc, n->b) : undef(), b = n->c ? eval(r, sc, n->c) : undef(),
			  c = n->d ? eval(r, sc, n->d) : undef();
		return r->err ? undef() : slice(r, o, a, b, c);
	}
	case N_CALL: return call(r, sc, n);
	case N_FILTER: return filter(r, sc, n);
	case N_TEST: {
		struct jv v = eval(r, sc, n->a);
		struct args a;
		if (r->err || eval_args(r, sc, n->b, &a))
			return undef();
		int t = test(r, n, v, &a);
		return vbool(n->neg ? !t : t);
	}
	case N_UNARY: {
		struct jv v = eval(r, sc, n->a);
		if (n->neg == '+' || r->err)
			return v;
		if (v.t == V_INT || v.t == V_BOOL)
			return vint(-v.i);
		if (v.t == V_FLOAT)
			return (struct jv){.t = V_FLOAT, .f = -v.f};
		rfail(r, "bad operand for unary -: %s", tname(v));
		return undef();
	}
	case N_NOT: return vbool(!truthy(eval(r, sc, n->a)));
	case N_AND: {
		struct jv a = eval(r, sc, n->a);
		return truthy(a) ? eval(r, sc, n->b) : a;
	}
	case N_OR: {
		struct jv a = eval(r, sc, n->a);
		return truthy(a) ? a : eval(r, sc, n->b);
	}
	case N_COND: return truthy(eval(r, sc, n->b)) ? eval(r, sc, n->a) : n->c ? eval(r, sc, n->c) : undef();
	case N_BIN: {
		struct jv a = eval(r, sc, n->a), b = eval(r, sc, n->b);
		if (r->err)
			return undef();
		switch (n->neg) {
		case OP_EQ: return vbool(equal(a, b));
		case OP_NE: return vbool(!equal(a, b));
		case OP_LT: return vbool(cmp_vals(r, a, b) < 0);
		case OP_LE: return vbool(cmp_vals(r, a, b) <= 0);
		case OP_GT: return vbool(cmp_vals(r, a, b) > 0);
		case OP_GE: return vbool(cmp_vals(r, a, b) >= 0);
		case OP_IN: return vbool(contains(r, b, a));
		case OP_NOTIN: return vbool(!contains(r, b, a));
		default: return arith_op(r, n->neg, a, b);
		}
	}
	case N_LISTLIT:
	case N_TUPLE: {
		struct jlist *l = newlist(r, n->nk);
		if (!l)
			return undef();
		for (size_t i = 0; i < n->nk; i++)
			l->v[l->n++] = eval(r, sc, n->kids[i]);
		return (struct jv){.t = V_LIST, .l = l};
	}
	case N_DICTLIT: {
		struct jdict *d = newdict(r);
		if (!d)
			return undef();
		for (size_t i = 0; i + 1 < n->nk; i += 2) {
			struct jv k = stringify(r, eval(r, sc, n->kids[i])), v = eval(r, sc, n->kids[i + 1]);
			if (r->err || dict_set(r, d, k.s->p, k.s->n, v))
				return undef();
		}
		return (struct jv){.t = V_DICT, .d = d};
	}
	}
	rfail(r, "unexpected expression");
	return undef();
}

enum { FLOW_NONE, FLOW_BREAK, FLOW_CONTINUE };

static int exec(struct rnd *r, struct scope *sc, struct node *b, struct util_buf *out);

static int assign(struct rnd *r, struct scope *sc, struct node *t, struct jv v)
{
	if (t->k == N_ATTR) {
		struct jv ns = lookup(sc, t->a->s, t->a->sn);
		if (ns.t != V_NS)
			return rfail(r, "cannot set an attribute of a %s (only of a namespace)", tname(ns)), -1;
		return dict_set(r, ns.d, t->s, t->sn, v);
	}
	if (t->nk == 1)
		return dict_set(r, sc->vars, t->kids[0]->s, t->kids[0]->sn, v);
	struct jv l = list_of(r, v);
	if (r->err)
		return -1;
	if (l.l->n != t->nk)
		return rfail(r, "cannot unpack %zu values into %zu names", l.l->n, t->nk), -1;
	for (size_t i = 0; i < t->nk; i++)
		if (dict_set(r, sc->vars, t->kids[i]->s, t->kids[i]->sn, l.l->v[i]))
			return -1;
	return 0;
}

static int run_for(struct rnd *r, struct scope *sc, struct node *n, struct util_buf *out)
{
	struct jv it = eval(r, sc, n->b);
	if (r->err)
		return -1;
	if (it.t == V_UNDEF || it.t == V_NONE)
		it = (struct jv){.t = V_LIST, .l = newlist(r, 0)};
	else if (it.t == V_DICT)
		it = list_of(r, it);
	else if (it.t != V_LIST && it.t != V_STR)
		return rfail(r, "cannot loop over a %s", tname(it)), -1;
	else if (it.t == V_STR)
		it = list_of(r, it);
	if (r->err || !it.l)
		return -1;
	struct jlist *items = it.l;
	struct scope inner = {sc, NULL};
	/* the if filter applies before loop.* are counted */
	if (n->nk) {
		struct jlist *f = newlist(r, 0);
		if (!f)
			return -1;
		for (size_t i = 0; i < items->n; i++) {
			struct jdict *d = newdict(r);
			if (!d)
				return -1;
			inner.vars = d;
			if (assign(r, &inner, n->a, items->v[i]))
				return -1;
			int keep = truthy(eval(r, &inner, n->kids[0]));
			if (r->err || (keep && list_push(r, f, items->v[i])))
				return -1;
		}
		items = f;
	}
	if (!items->n)
		return n->d ? exec(r, sc, n->d, out) : 0;
	for (size_t i = 0; i < items->n; i++) {
		struct jdict *d = newdict(r), *loop = newdict(r);
		if (!d || !loop)
			return -1;
		inner.vars = d;
		size_t len = items->n;
		if (dict_set(r, loop, "index", 5, vint((int64_t)i + 1)) || dict_set(r, loop, "index0", 6, vint((int64_t)i)) ||
		    dict_set(r, loop, "revindex", 8, vint((int64_t)(len - i))) ||
		    dict_set(r, loop, "revindex0", 9, vint((int64_t)(len - i - 1))) ||
		    dict_set(r, loop, "first", 5, vbool(i == 0)) || dict_set(r, loop, "last", 4, vbool(i + 1 == len)) ||
		    dict_set(r, loop, "length", 6, vint((int64_t)len)) ||
		    dict_set(r, loop, "previtem", 8, i ? items->v[i - 1] : undef()) ||
		    dict_set(r, loop, "nextitem", 8, i + 1 < len ? items->v[i + 1] : undef()) ||
		    dict_set(r, d, "loop", 4, (struct jv){.t = V_DICT, .d = loop}) || assign(r, &inner, n->a, items->v[i]))
			return -1;
		int fl = exec(r, &inner, n->c, out);
		if (fl < 0)
			return -1;
		if (fl == FLOW_BREAK)
			break;
	}
	return 0;
}

static int emit(struct rnd *r, struct util_buf *out, const char *s, size_t n)
{
	if (out->len + n > ENG_CHAT_MAX_OUTPUT)
		return rfail(r, "the rendered text is over %u MiB", ENG_CHAT_MAX_OUTPUT >> 20), -1;
	if (util_buf_add(out, s, n))
		return rfail(r, "out of memory"), -1;
	return 0;
}

/* FLOW_* or -1 on error */
static int exec(struct rnd *r, struct scope *sc, struct node *b, struct util_buf *out)
{
	for (size_t i = 0; i < b->nk; i++) {
		struct node *n = b->kids[i];
		if (r->err)
			return -1;
		if (++r->steps > MAX_STEPS)
			return rfail(r, "rendering takes too many steps"), -1;
		r->line = n->line;
		switch (n->k) {
		case N_TEXT:
			if (emit(r, out, n->s, n->sn))
				return -1;
			break;
		case N_OUT: {
			struct jv v = eval(r, sc, n->a);
			if (r->err)
				return -1;
			if (v.t == V_STR ? emit(r, out, v.s->p, v.s->n) : 0)
				return -1;
			if (v.t != V_STR && v.t != V_UNDEF) {
				struct jv s = stringify(r, v);
				if (r->err || emit(r, out, s.s->p, s.s->n))
					return -1;
			}
			break;
		}
		case N_IF: {
			struct jv c = eval(r, sc, n->a);
			if (r->err)
				return -1;
			struct node *br = truthy(c) ? n->b : n->c;
			if (br) {
				int fl = br->k == N_IF ? exec(r, sc, &(struct node){.k = N_BODY, .kids = &br, .nk = 1}, out)
						       : exec(r, sc, br, out);
				if (fl)
					return fl;
			}
			break;
		}
		case N_FOR:
			if (run_for(r, sc, n, out))
				return -1;
			break;
		case N_SET: {
			struct jv v = eval(r, sc, n->b);
			if (r->err || assign(r, sc, n->a, v))
				return -1;
			break;
		}
		case N_SETBLOCK: {
			struct util_buf sub = UTIL_BUF_INIT;
			int fl = exec(r, sc, n->b, &sub);
			struct jv v = fl < 0 ? undef() : vstr(r, sub.buf ? sub.buf : "", sub.len);
			util_buf_release(&sub);
			if (fl < 0 || r->err || assign(r, sc, n->a, v))
				return -1;
			break;
		}
		case N_BREAK: return FLOW_BREAK;
		case N_CONTINUE: return FLOW_CONTINUE;
		default: return rfail(r, "unexpected statement"), -1;
		}
	}
	return FLOW_NONE;
}

/* ---- public ---- */

enum hm_err eng_chat_new(struct hm_ctx *ctx, const char *tpl, size_t len, const char *bos, const char *eos,
			 struct eng_chat **out)
{
	enum hm_err err = HM_OK;
	struct eng_chat *c;
	*out = NULL;
	if (len > ENG_CHAT_MAX_TEMPLATE)
		return failf(ctx, 0, "the template is over %u KiB", ENG_CHAT_MAX_TEMPLATE >> 10);
	if (memchr(tpl, 0, len))
		return failf(ctx, 0, "the template holds a NUL byte");
	if (!(c = calloc(1, sizeof(*c))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	c->bos = strdup(bos ? bos : "");
	c->eos = strdup(eos ? eos : "");
	c->src = preprocess(tpl, len);
	if (!c->bos || !c->eos || !c->src) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((err = lex(ctx, c)))
		goto out;
	struct parser p = {ctx, c, 0, 0, HM_OK};
	c->root = body(&p, NULL);
	if (!c->root) {
		err = p.err ? p.err : failf(ctx, 0, "cannot parse the template");
		goto out;
	}
	if (peek(&p)->t != T_EOF) {
		err = failf(ctx, peek(&p)->line, "unexpected end tag");
		goto out;
	}
out:
	if (err)
		eng_chat_free(c);
	else
		*out = c;
	return err;
}

void eng_chat_free(struct eng_chat *c)
{
	if (!c)
		return;
	free(c->src);
	free(c->bos);
	free(c->eos);
	free(c->toks);
	arena_free(&c->parse);
	free(c);
}

/* A stray {% endif %} at the top level stops the parser early: body() with
 * no stop list consumes everything else, so check it reached EOF. */

static enum hm_err render_vars(struct hm_ctx *ctx, const struct eng_chat *c, json_t *vars, time_t now, char **out,
			       size_t *len)
{
	struct arena ar = {0};
	struct rnd r = {ctx, &ar, HM_OK, 0, UTIL_BUF_INIT, 0, now};
	struct jdict *top;
	*out = NULL;
	*len = 0;
	top = newdict(&r);
	if (top) {
		const char *k;
		json_t *v;
		json_object_foreach (vars, k, v)
			if (dict_set(&r, top, k, strlen(k), from_json(&r, v, 0)))
				break;
		if (!dict_get(top, "bos_token", 9))
			(void)dict_set(&r, top, "bos_token", 9, vstr0(&r, c->bos));
		if (!dict_get(top, "eos_token", 9))
			(void)dict_set(&r, top, "eos_token", 9, vstr0(&r, c->eos));
		if (!dict_get(top, "add_generation_prompt", 21))
			(void)dict_set(&r, top, "add_generation_prompt", 21, vbool(0));
	}
	if (!r.err && top) {
		struct scope sc = {NULL, top};
		(void)exec(&r, &sc, c->root, &r.out);
	}
	enum hm_err err = r.err ? r.err : top ? HM_OK : hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if (!err && util_buf_add(&r.out, "", 1))
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if (!err) {
		*len = r.out.len - 1;
		*out = util_buf_detach(&r.out);
	}
	util_buf_release(&r.out);
	arena_free(&ar);
	return err;
}

enum hm_err eng_chat_render_json(struct hm_ctx *ctx, const struct eng_chat *c, const char *vars, time_t now,
				 char **out, size_t *len)
{
	json_error_t je;
	json_t *j = json_loads(vars, JSON_DISABLE_EOF_CHECK * 0, &je);
	*out = NULL;
	*len = 0;
	if (!j || !json_is_object(j)) {
		json_decref(j);
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "chat template variables: not a JSON object (%s)", j ? "" : je.text);
	}
	enum hm_err err = render_vars(ctx, c, j, now, out, len);
	json_decref(j);
	return err;
}

enum hm_err eng_chat_render(struct hm_ctx *ctx, const struct eng_chat *c, const struct eng_chat_msg *msgs, size_t n,
			    int add_generation_prompt, char **out, size_t *len)
{
	json_t *vars = json_object(), *arr = json_array();
	enum hm_err err;
	*out = NULL;
	*len = 0;
	if (!vars || !arr || json_object_set_new(vars, "messages", arr)) {
		json_decref(vars);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		json_t *m = json_pack("{s:s,s:s}", "role", msgs[i].role ? msgs[i].role : "user", "content",
				      msgs[i].content ? msgs[i].content : "");
		if (!m || json_array_append_new(arr, m)) {
			json_decref(vars);
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "chat message %zu is not valid UTF-8", i + 1);
		}
	}
	if (json_object_set_new(vars, "add_generation_prompt", json_boolean(add_generation_prompt))) {
		json_decref(vars);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	err = render_vars(ctx, c, vars, 0, out, len);
	json_decref(vars);
	return err;
}

/* ---- loading a model's template ---- */

static char *read_small(const char *path, size_t cap, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct util_buf b = UTIL_BUF_INIT;
	char chunk[65536];
	size_t n;
	if (!f)
		return NULL;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (b.len + n > cap || util_buf_add(&b, chunk, n)) {
			fclose(f);
			util_buf_release(&b);
			return NULL;
		}
	fclose(f);
	if (util_buf_add(&b, "", 1)) {
		util_buf_release(&b);
		return NULL;
	}
	*len = b.len - 1;
	return b.buf;
}

/* bos_token/eos_token of tokenizer_config.json: a string or {"content": ...} */
static const char *cfg_token(json_t *cfg, const char *key)
{
	json_t *v = json_object_get(cfg, key);
	if (json_is_object(v))
		v = json_object_get(v, "content");
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static const char *tok_text(const struct eng_tok *t, int32_t id, char *buf, size_t cap)
{
	size_t n;
	const char *s = id >= 0 ? eng_tok_text(t, id, &n) : NULL;
	if (!s || n >= cap)
		return NULL;
	memcpy(buf, s, n);
	buf[n] = 0;
	return buf;
}

static int is_gguf_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char m[4] = {0};
	int ok = f && fread(m, 1, 4, f) == 4 && !memcmp(m, "GGUF", 4);
	if (f)
		fclose(f);
	return ok;
}


enum hm_err eng_chat_open(struct hm_ctx *ctx, const char *path, const struct eng_tok *t, struct eng_chat **out)
{
	struct stat sb;
	char dir[4096], p[4200], bb[512], eb[512];
	char *tpl = NULL, *cfgtext = NULL;
	size_t tl = 0, cl = 0;
	json_t *cfg = NULL;
	const char *bos = NULL, *eos = NULL;
	enum hm_err err = HM_OK;
	*out = NULL;
	if (stat(path, &sb) != 0)
		return hm_fail(ctx, HM_ERR_NOT_FOUND, "cannot open '%s': no such file or directory", path);
	if (S_ISREG(sb.st_mode) && is_gguf_file(path)) {
		struct fmt_gguf *g = NULL;
		if ((err = fmt_gguf_open(ctx, path, &g)))
			return err;
		const struct fmt_gguf_kv *kv = fmt_gguf_find_kv(g, "tokenizer.chat_template");
		if (kv && kv->v.type == FMT_GGUF_STRING && kv->v.len <= ENG_CHAT_MAX_TEMPLATE &&
		    !(tpl = strndup(kv->v.str, tl = (size_t)kv->v.len)))
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		fmt_gguf_close(g);
		if (err)
			return err;
	} else {
		snprintf(dir, sizeof(dir), "%s", path);
		if (S_ISREG(sb.st_mode)) {
			char *slash = strrchr(dir, '/');
			if (slash)
				*slash = 0;
			else
				snprintf(dir, sizeof(dir), ".");
		}
		snprintf(p, sizeof(p), "%s/tokenizer_config.json", dir);
		if ((cfgtext = read_small(p, ENG_TOK_MAX_FILE, &cl))) {
			json_error_t je;
			cfg = json_loadb(cfgtext, cl, 0, &je);
			if (!cfg || !json_is_object(cfg)) {
				err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s' is not a JSON object", p);
				goto out;
			}
			json_t *ct = json_object_get(cfg, "chat_template"), *e;
			size_t i;
			if (json_is_string(ct))
				tpl = strndup(json_string_value(ct), json_string_length(ct));
			else if (json_is_array(ct))
				json_array_foreach (ct, i, e) {
					const char *nm = json_string_value(json_object_get(e, "name"));
					json_t *tv = json_object_get(e, "template");
					if (nm && !strcmp(nm, "default") && json_is_string(tv)) {
						tpl = strndup(json_string_value(tv), json_string_length(tv));
						break;
					}
				}
			bos = cfg_token(cfg, "bos_token");
			eos = cfg_token(cfg, "eos_token");
		}
		if (!tpl) {
			snprintf(p, sizeof(p), "%s/chat_template.jinja", dir);
			tpl = read_small(p, ENG_CHAT_MAX_TEMPLATE, &tl);
		}
		if (tpl)
			tl = strlen(tpl);
	}
	if (!tpl) {
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "'%s' has no chat template", path);
		goto out;
	}
	if (t) {
		bos = tok_text(t, eng_tok_bos(t), bb, sizeof(bb)) ? bb : bos;
		eos = tok_text(t, eng_tok_eos(t), eb, sizeof(eb)) ? eb : eos;
	}
	err = eng_chat_new(ctx, tpl, tl, bos, eos, out);
out:
	json_decref(cfg);
	free(cfgtext);
	free(tpl);
	return err;
}
