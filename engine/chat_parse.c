/* chat_parse.c - a chat template's source to a syntax tree: the
 * transformers whitespace settings, a lexer and a recursive-descent parser
 * (see chat-int.h), nesting and size bounded. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chat-int.h"

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


/* the lexer's position in c->src */
struct lexer {
	struct hm_ctx *ctx;
	struct eng_chat *c;
	size_t cap; /* of c->toks */
	const char *s;
	size_t n, i;
	int line;
};

static enum hm_err add_tok(struct lexer *lx, struct tok t)
{
	struct eng_chat *c = lx->c;
	if (c->ntok == lx->cap) {
		if (lx->cap >= MAX_TOKENS)
			return eng_chat_failf(lx->ctx, t.line, "too many tokens");
		size_t nc = lx->cap ? lx->cap * 2 : 256;
		struct tok *n = realloc(c->toks, nc * sizeof(*n));
		if (!n)
			return hm_fail(lx->ctx, HM_ERR_NOMEM, "out of memory");
		c->toks = n;
		lx->cap = nc;
	}
	c->toks[c->ntok++] = t;
	return HM_OK;
}

static const char *const OPS[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "|", ".",
				  ",", ":", "(", ")", "[", "]", "{", "}", "=", "<", ">", NULL};

/* a number at lx->i: digits (with '_'), and a fraction for a float */
static enum hm_err lex_number(struct lexer *lx)
{
	const char *s = lx->s;
	size_t i = lx->i, k = i, n = lx->n, m = 0;
	int flt = 0;
	char num[64];
	while (k < n && (isdigit((unsigned char)s[k]) || s[k] == '_'))
		k++;
	if (k + 1 < n && s[k] == '.' && isdigit((unsigned char)s[k + 1])) {
		flt = 1;
		k++;
		while (k < n && isdigit((unsigned char)s[k]))
			k++;
	}
	for (size_t q = i; q < k && m < sizeof(num) - 1; q++)
		if (s[q] != '_')
			num[m++] = s[q];
	num[m] = 0;
	struct tok t = {flt ? T_FLOAT : T_INT, lx->line, s + i, k - i, 0, 0};
	errno = 0;
	if (flt)
		t.f = strtod(num, NULL);
	else
		t.i = strtoll(num, NULL, 10);
	if (errno)
		return eng_chat_failf(lx->ctx, lx->line, "number out of range");
	lx->i = k;
	return add_tok(lx, t);
}

/* a quoted string at lx->i, its escapes decoded into the parse arena */
static enum hm_err lex_string(struct lexer *lx)
{
	const char *s = lx->s;
	char ch = s[lx->i];
	struct util_buf b = UTIL_BUF_INIT;
	size_t k = lx->i + 1, n = lx->n;
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
		lx->line += o == '\n' && s[k] == '\n';
		bad |= util_buf_add(&b, &o, 1);
		k++;
	}
	if (bad) {
		util_buf_release(&b);
		return hm_fail(lx->ctx, HM_ERR_NOMEM, "out of memory");
	}
	if (k >= n) {
		util_buf_release(&b);
		return eng_chat_failf(lx->ctx, lx->line, "unterminated string");
	}
	struct jstr *js = eng_chat_arena_alloc(&lx->c->parse, sizeof(*js) + b.len + 1);
	if (!js) {
		util_buf_release(&b);
		return eng_chat_failf(lx->ctx, lx->line, "template too large");
	}
	js->n = b.len;
	if (b.len)
		memcpy(js->p, b.buf, b.len);
	js->p[b.len] = 0;
	util_buf_release(&b);
	lx->i = k + 1;
	return add_tok(lx, (struct tok){T_STR, lx->line, (const char *)js, 0, 0, 0});
}

/* an operator at lx->i, the longest first */
static enum hm_err lex_op(struct lexer *lx)
{
	const char *s = lx->s;
	size_t i = lx->i;
	for (int o = 0; OPS[o]; o++) {
		size_t ol = strlen(OPS[o]);
		if (!strncmp(s + i, OPS[o], ol)) {
			lx->i += ol;
			return add_tok(lx, (struct tok){T_OP, lx->line, s + i, ol, 0, 0});
		}
	}
	return eng_chat_failf(lx->ctx, lx->line, "unexpected character '%c'", isprint((unsigned char)s[i]) ? s[i] : '?');
}

/* the inside of a {{ }} or {% %} tag (kind '{' or '%') up to its close */
static enum hm_err lex_tag(struct lexer *lx, char kind)
{
	const char *s = lx->s;
	size_t n = lx->n;
	char close = kind == '{' ? '}' : '%';
	enum hm_err err;
	for (;;) {
		while (lx->i < n && is_ws(s[lx->i]))
			lx->line += s[lx->i++] == '\n';
		size_t i = lx->i;
		if (i >= n)
			return eng_chat_failf(lx->ctx, lx->line, "unterminated %s", kind == '{' ? "'{{'" : "'{%'");
		/* the closing tag, with optional '-' */
		if ((s[i] == '-' && i + 2 < n + 1 && s[i + 1] == close && s[i + 2] == '}') ||
		    (s[i] == close && i + 1 < n && s[i + 1] == '}')) {
			int trim = s[i] == '-';
			lx->i += trim ? 3 : 2;
			if ((err = add_tok(lx, (struct tok){kind == '{' ? T_CEXPR : T_CSTMT, lx->line, s + lx->i - 2, 2, 0, 0})))
				return err;
			if (trim)
				while (lx->i < n && is_ws(s[lx->i]))
					lx->line += s[lx->i++] == '\n';
			return HM_OK;
		}
		char ch = s[i];
		if (isalpha((unsigned char)ch) || ch == '_') {
			size_t k = i;
			while (k < n && (isalnum((unsigned char)s[k]) || s[k] == '_'))
				k++;
			lx->i = k;
			err = add_tok(lx, (struct tok){T_NAME, lx->line, s + i, k - i, 0, 0});
		} else if (isdigit((unsigned char)ch)) {
			err = lex_number(lx);
		} else if (ch == '\'' || ch == '"') {
			err = lex_string(lx);
		} else {
			err = lex_op(lx);
		}
		if (err)
			return err;
	}
}

static enum hm_err lex(struct hm_ctx *ctx, struct eng_chat *c)
{
	struct lexer lx = {ctx, c, 0, c->src, strlen(c->src), 0, 1};
	const char *s = lx.s;
	size_t n = lx.n;
	enum hm_err err;
	while (lx.i < n) {
		/* text up to the next tag */
		size_t i = lx.i, j = i;
		while (j < n && !(s[j] == '{' && j + 1 < n && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#')))
			j++;
		size_t tend = j;
		if (j < n && s[j + 2] == '-') /* {{- {%- {#-: strip the text's trailing whitespace */
			while (tend > i && is_ws(s[tend - 1]))
				tend--;
		if (tend > i && (err = add_tok(&lx, (struct tok){T_TEXT, lx.line, s + i, tend - i, 0, 0})))
			return err;
		for (size_t k = i; k < j; k++)
			lx.line += s[k] == '\n';
		if (j >= n)
			break;
		lx.i = j + 2;
		char kind = s[j + 1];
		if (lx.i < n && s[lx.i] == '-')
			lx.i++;
		if (kind == '#') {
			const char *e = strstr(s + lx.i, "#}");
			if (!e)
				return eng_chat_failf(ctx, lx.line, "unterminated comment");
			for (const char *k = s + lx.i; k < e; k++)
				lx.line += *k == '\n';
			int trim = e > s + lx.i && e[-1] == '-';
			lx.i = (size_t)(e - s) + 2;
			if (trim)
				while (lx.i < n && is_ws(s[lx.i]))
					lx.i++;
			continue;
		}
		if ((err = add_tok(&lx, (struct tok){kind == '{' ? T_OEXPR : T_OSTMT, lx.line, s + j, 2, 0, 0})) ||
		    (err = lex_tag(&lx, kind)))
			return err;
	}
	return add_tok(&lx, (struct tok){T_EOF, lx.line, s + n, 0, 0, 0});
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
		p->err = eng_chat_failf(p->ctx, peek(p)->line, "%s", msg);
	}
	return NULL;
}

static struct node *mk(struct parser *p, int k)
{
	struct node *n = eng_chat_arena_alloc(&p->c->parse, sizeof(*n));
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
		struct node **k = eng_chat_arena_alloc(&p->c->parse, nc * sizeof(*k));
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
/* The items of a bracketed list up to close (the opening one consumed),
 * each parsed by one into n's kids; n, or NULL on an error. */
static struct node *items(struct parser *p, struct node *n, const char *close,
			  int (*one)(struct parser *p, struct node *n, size_t *cap))
{
	size_t cap = 0;
	if (!n)
		return NULL;
	while (!is_op(peek(p), close)) {
		if (one(p, n, &cap))
			return NULL;
		if (is_op(peek(p), ","))
			p->pos++;
		else if (!is_op(peek(p), close))
			return perr(p, "expected ',' or '%s'", close);
	}
	p->pos++;
	return n;
}

/* a call argument: expr or name=expr */
static int call_arg(struct parser *p, struct node *n, size_t *cap)
{
	struct node *arg;
	if (peek(p)->t == T_NAME && is_op(&p->c->toks[p->pos + 1], "=")) {
		if (!(arg = mk(p, N_KW)))
			return -1;
		arg->s = peek(p)->p;
		arg->sn = peek(p)->n;
		p->pos += 2;
		if (!(arg->a = expr(p)))
			return -1;
	} else if (!(arg = expr(p)))
		return -1;
	return push_kid(p, n, arg, cap);
}

static int list_item(struct parser *p, struct node *n, size_t *cap)
{
	struct node *e = expr(p);
	return !e || push_kid(p, n, e, cap) ? -1 : 0;
}

/* key: value */
static int dict_item(struct parser *p, struct node *n, size_t *cap)
{
	struct node *k = expr(p), *v;
	return !k || expect_op(p, ":") || !(v = expr(p)) || push_kid(p, n, k, cap) || push_kid(p, n, v, cap) ? -1 : 0;
}

static struct node *call_args(struct parser *p, struct node *callee)
{
	struct node *n = mk(p, N_CALL);
	if (n)
		n->a = callee;
	return items(p, n, ")", call_arg);
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
			struct jstr *m = eng_chat_arena_alloc(&p->c->parse, sizeof(*m) + s->n + s2->n + 1);
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
	if (is_op(t, "[") || is_op(t, "{")) {
		int list = is_op(t, "[");
		p->pos++;
		return items(p, mk(p, list ? N_LISTLIT : N_DICTLIT), list ? "]" : "}", list ? list_item : dict_item);
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


/* Binary operators by precedence level, loosest first, as Jinja has them;
 * "not" (a prefix) has its own level, and "not in" is matched by hand. */
struct binop {
	const char *text; /* an operator token, or a name (a word) */
	int kind, op;     /* node kind; N_BIN's op code */
};
enum { LV_NOT = 2, LV_CMP = 3, LV_COUNT = 8 };
static const struct binop LEVELS[LV_COUNT][8] = {
	{{"or", N_OR, 0}},
	{{"and", N_AND, 0}},
	{{NULL, 0, 0}},
	{{"==", N_BIN, OP_EQ}, {"!=", N_BIN, OP_NE}, {"<", N_BIN, OP_LT}, {"<=", N_BIN, OP_LE}, {">", N_BIN, OP_GT},
	 {">=", N_BIN, OP_GE}, {"in", N_BIN, OP_IN}},
	{{"~", N_BIN, OP_CAT}},
	{{"+", N_BIN, OP_ADD}, {"-", N_BIN, OP_SUB}},
	{{"*", N_BIN, OP_MUL}, {"/", N_BIN, OP_DIV}, {"//", N_BIN, OP_FDIV}, {"%", N_BIN, OP_MOD}},
	{{"**", N_BIN, OP_POW}},
};
static const struct binop NOT_IN = {"not in", N_BIN, OP_NOTIN};

/* The operator of level lv at the parser's position (*ntok tokens), or NULL. */
static const struct binop *binop_at(struct parser *p, int lv, int *ntok)
{
	struct tok *t = peek(p);
	*ntok = 1;
	for (const struct binop *b = LEVELS[lv]; b->text; b++)
		if (isalpha((unsigned char)b->text[0]) ? is_name(t, b->text) : is_op(t, b->text))
			return b;
	if (lv == LV_CMP && is_name(t, "not") && is_name(&p->c->toks[p->pos + 1], "in")) {
		*ntok = 2;
		return &NOT_IN;
	}
	return NULL;
}

/* An expression of operators of level lv and tighter (left-associative). */
static struct node *binary(struct parser *p, int lv)
{
	if (lv == LV_COUNT)
		return unary(p);
	if (lv == LV_NOT) {
		if (!is_name(peek(p), "not"))
			return binary(p, lv + 1);
		struct node *n = mk(p, N_NOT);
		if (!n)
			return NULL;
		p->pos++;
		if (++p->depth > MAX_DEPTH)
			return perr(p, "expressions nested too deeply");
		n->a = binary(p, LV_NOT);
		p->depth--;
		return n->a ? n : NULL;
	}
	struct node *l = binary(p, lv + 1);
	const struct binop *o;
	int ntok;
	while (l && (o = binop_at(p, lv, &ntok))) {
		struct node *n = mk(p, o->kind);
		p->pos += (size_t)ntok;
		if (!n)
			return NULL;
		n->neg = o->op;
		n->a = l;
		if (!(n->b = binary(p, lv + 1)))
			return NULL;
		l = n;
	}
	return l;
}

static struct node *expr(struct parser *p)
{
	if (++p->depth > MAX_DEPTH)
		return perr(p, "expressions nested too deeply");
	struct node *l = binary(p, 0);
	if (l && is_name(peek(p), "if")) {
		struct node *n = mk(p, N_COND);
		p->pos++;
		if (!n || !(n->b = binary(p, 0)))
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
	if (!(n->b = binary(p, 0)))
		return NULL;
	p->depth--;
	if (is_name(peek(p), "if")) {
		p->pos++;
		if (!(n->kids = eng_chat_arena_alloc(&p->c->parse, sizeof(*n->kids))) || !(n->kids[0] = expr(p)))
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

enum hm_err eng_chat_compile(struct hm_ctx *ctx, struct eng_chat *c, const char *tpl, size_t len)
{
	enum hm_err err;
	if (!(c->src = preprocess(tpl, len)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	if ((err = lex(ctx, c)))
		return err;
	struct parser p = {ctx, c, 0, 0, HM_OK};
	c->root = body(&p, NULL);
	if (!c->root)
		return p.err ? p.err : eng_chat_failf(ctx, 0, "cannot parse the template");
	/* a stray {% endif %} at the top level stops body() early */
	if (peek(&p)->t != T_EOF)
		return eng_chat_failf(ctx, peek(&p)->line, "unexpected end tag");
	return HM_OK;
}
