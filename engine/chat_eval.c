/* chat_eval.c - the tree walker of a chat template render: scopes,
 * expressions, calls, statements and loops, every step counted (see
 * chat-int.h). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chat-int.h"

struct scope {
	struct scope *up;
	struct jdict *vars;
};

static struct jv lookup(struct scope *s, const char *k, size_t n)
{
	for (; s; s = s->up) {
		struct jv *v = eng_chat_dict_get(s->vars, k, n);
		if (v)
			return *v;
	}
	return undef();
}

static const char *const GLOBALS[] = {"raise_exception", "namespace", "range", "strftime_now", "dict", NULL};

static struct jv eval(struct rnd *r, struct scope *sc, struct node *n);


static int eval_args(struct rnd *r, struct scope *sc, struct node *call, struct args *a)
{
	memset(a, 0, sizeof(*a));
	if (!call)
		return 0;
	for (size_t i = 0; i < call->nk; i++) {
		struct node *k = call->kids[i];
		if (k->k == N_KW) {
			if (a->nkw == 8)
				return eng_chat_rfail(r, "too many arguments"), -1;
			a->kw[a->nkw] = k->s;
			a->kwn[a->nkw] = k->sn;
			a->kv[a->nkw++] = eval(r, sc, k->a);
		} else {
			if (a->n == 8)
				return eng_chat_rfail(r, "too many arguments"), -1;
			a->v[a->n++] = eval(r, sc, k);
		}
		if (r->err)
			return -1;
	}
	return 0;
}

static struct jv call(struct rnd *r, struct scope *sc, struct node *n)
{
	struct jv f = eval(r, sc, n->a);
	struct args a;
	if (r->err || eval_args(r, sc, n, &a))
		return undef();
	if (f.t != V_FUNC) {
		eng_chat_rfail(r, "'%.*s' is not callable", n->a->k == N_NAME || n->a->k == N_ATTR ? (int)n->a->sn : 9,
		      n->a->k == N_NAME || n->a->k == N_ATTR ? n->a->s : "the value");
		return undef();
	}
	if (f.fn->self.t != V_UNDEF)
		return eng_chat_call_method(r, f.fn, &a);
	return eng_chat_call_global(r, f.fn->name, &a);
}

static struct jv arith_op(struct rnd *r, int op, struct jv a, struct jv b)
{
	if (op == OP_CAT) {
		struct jv sa = eng_chat_stringify(r, a), sb = eng_chat_stringify(r, b);
		if (r->err)
			return undef();
		struct jstr *s = eng_chat_ralloc(r, sizeof(*s) + sa.s->n + sb.s->n + 1);
		if (!s)
			return undef();
		if (sa.s->n + sb.s->n > ENG_CHAT_MAX_OUTPUT) {
			eng_chat_rfail(r, "string too large");
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
		struct jlist *l = eng_chat_newlist(r, a.l->n + b.l->n);
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
			eng_chat_rfail(r, "string too large");
			return undef();
		}
		struct jstr *o = eng_chat_ralloc(r, sizeof(*o) + s.s->n * (size_t)k + 1);
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
		eng_chat_rfail(r, "unsupported operand types for %s: %s and %s", names[op], eng_chat_tname(a), eng_chat_tname(b));
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
	eng_chat_rfail(r, "division by zero");
	return undef();
}

static int contains(struct rnd *r, struct jv hay, struct jv needle)
{
	switch (hay.t) {
	case V_STR:
		if (needle.t != V_STR) {
			eng_chat_rfail(r, "'in <string>' needs a string");
			return 0;
		}
		return memmem(hay.s->p, hay.s->n, needle.s->p, needle.s->n) != NULL;
	case V_LIST:
		for (size_t i = 0; i < hay.l->n; i++)
			if (eng_chat_equal(hay.l->v[i], needle))
				return 1;
		return 0;
	case V_DICT:
	case V_NS: return needle.t == V_STR && eng_chat_dict_get(hay.d, needle.s->p, needle.s->n) != NULL;
	case V_UNDEF: return 0;
	default: eng_chat_rfail(r, "'in' a %s", eng_chat_tname(hay)); return 0;
	}
}

static struct jv eval(struct rnd *r, struct scope *sc, struct node *n)
{
	if (r->err)
		return undef();
	if (++r->steps > MAX_STEPS) {
		eng_chat_rfail(r, "rendering takes too many steps");
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
					return eng_chat_vfunc(r, GLOBALS[i], undef());
		return v;
	}
	case N_ATTR: {
		struct jv o = eval(r, sc, n->a);
		return eng_chat_getattr(r, o, n->s, n->sn, 1);
	}
	case N_INDEX: {
		struct jv o = eval(r, sc, n->a), k = eval(r, sc, n->b);
		if (k.t == V_STR && o.t != V_DICT && o.t != V_NS)
			return eng_chat_getattr(r, o, k.s->p, k.s->n, 1);
		return eng_chat_getitem(r, o, k);
	}
	case N_SLICE: {
		struct jv o = eval(r, sc, n->a);
		struct jv a = n->b ? eval(r, sc, n->b) : undef(), b = n->c ? eval(r, sc, n->c) : undef(),
			  c = n->d ? eval(r, sc, n->d) : undef();
		return r->err ? undef() : eng_chat_slice(r, o, a, b, c);
	}
	case N_CALL: return call(r, sc, n);
	case N_FILTER:
	case N_TEST: {
		struct jv v = eval(r, sc, n->a);
		struct args a;
		if (r->err || eval_args(r, sc, n->b, &a))
			return undef();
		if (n->k == N_FILTER)
			return eng_chat_apply_filter(r, n->s, n->sn, v, &a);
		int t = eng_chat_run_test(r, n->s, n->sn, v, &a);
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
		eng_chat_rfail(r, "bad operand for unary -: %s", eng_chat_tname(v));
		return undef();
	}
	case N_NOT: return vbool(!eng_chat_truthy(eval(r, sc, n->a)));
	case N_AND: {
		struct jv a = eval(r, sc, n->a);
		return eng_chat_truthy(a) ? eval(r, sc, n->b) : a;
	}
	case N_OR: {
		struct jv a = eval(r, sc, n->a);
		return eng_chat_truthy(a) ? a : eval(r, sc, n->b);
	}
	case N_COND: return eng_chat_truthy(eval(r, sc, n->b)) ? eval(r, sc, n->a) : n->c ? eval(r, sc, n->c) : undef();
	case N_BIN: {
		struct jv a = eval(r, sc, n->a), b = eval(r, sc, n->b);
		if (r->err)
			return undef();
		switch (n->neg) {
		case OP_EQ: return vbool(eng_chat_equal(a, b));
		case OP_NE: return vbool(!eng_chat_equal(a, b));
		case OP_LT: return vbool(eng_chat_cmp_vals(r, a, b) < 0);
		case OP_LE: return vbool(eng_chat_cmp_vals(r, a, b) <= 0);
		case OP_GT: return vbool(eng_chat_cmp_vals(r, a, b) > 0);
		case OP_GE: return vbool(eng_chat_cmp_vals(r, a, b) >= 0);
		case OP_IN: return vbool(contains(r, b, a));
		case OP_NOTIN: return vbool(!contains(r, b, a));
		default: return arith_op(r, n->neg, a, b);
		}
	}
	case N_LISTLIT:
	case N_TUPLE: {
		struct jlist *l = eng_chat_newlist(r, n->nk);
		if (!l)
			return undef();
		for (size_t i = 0; i < n->nk; i++)
			l->v[l->n++] = eval(r, sc, n->kids[i]);
		return (struct jv){.t = V_LIST, .l = l};
	}
	case N_DICTLIT: {
		struct jdict *d = eng_chat_newdict(r);
		if (!d)
			return undef();
		for (size_t i = 0; i + 1 < n->nk; i += 2) {
			struct jv k = eng_chat_stringify(r, eval(r, sc, n->kids[i])), v = eval(r, sc, n->kids[i + 1]);
			if (r->err || eng_chat_dict_set(r, d, k.s->p, k.s->n, v))
				return undef();
		}
		return (struct jv){.t = V_DICT, .d = d};
	}
	}
	eng_chat_rfail(r, "unexpected expression");
	return undef();
}

enum { FLOW_NONE, FLOW_BREAK, FLOW_CONTINUE };

static int exec(struct rnd *r, struct scope *sc, struct node *b, struct util_buf *out);

static int assign(struct rnd *r, struct scope *sc, struct node *t, struct jv v)
{
	if (t->k == N_ATTR) {
		struct jv ns = lookup(sc, t->a->s, t->a->sn);
		if (ns.t != V_NS)
			return eng_chat_rfail(r, "cannot set an attribute of a %s (only of a namespace)", eng_chat_tname(ns)), -1;
		return eng_chat_dict_set(r, ns.d, t->s, t->sn, v);
	}
	if (t->nk == 1)
		return eng_chat_dict_set(r, sc->vars, t->kids[0]->s, t->kids[0]->sn, v);
	struct jv l = eng_chat_list_of(r, v);
	if (r->err)
		return -1;
	if (l.l->n != t->nk)
		return eng_chat_rfail(r, "cannot unpack %zu values into %zu names", l.l->n, t->nk), -1;
	for (size_t i = 0; i < t->nk; i++)
		if (eng_chat_dict_set(r, sc->vars, t->kids[i]->s, t->kids[i]->sn, l.l->v[i]))
			return -1;
	return 0;
}

static int run_for(struct rnd *r, struct scope *sc, struct node *n, struct util_buf *out)
{
	struct jv it = eval(r, sc, n->b);
	if (r->err)
		return -1;
	if (it.t == V_UNDEF || it.t == V_NONE)
		it = (struct jv){.t = V_LIST, .l = eng_chat_newlist(r, 0)};
	else if (it.t == V_DICT)
		it = eng_chat_list_of(r, it);
	else if (it.t != V_LIST && it.t != V_STR)
		return eng_chat_rfail(r, "cannot loop over a %s", eng_chat_tname(it)), -1;
	else if (it.t == V_STR)
		it = eng_chat_list_of(r, it);
	if (r->err || !it.l)
		return -1;
	struct jlist *items = it.l;
	struct scope inner = {sc, NULL};
	/* the if filter applies before loop.* are counted */
	if (n->nk) {
		struct jlist *f = eng_chat_newlist(r, 0);
		if (!f)
			return -1;
		for (size_t i = 0; i < items->n; i++) {
			struct jdict *d = eng_chat_newdict(r);
			if (!d)
				return -1;
			inner.vars = d;
			if (assign(r, &inner, n->a, items->v[i]))
				return -1;
			int keep = eng_chat_truthy(eval(r, &inner, n->kids[0]));
			if (r->err || (keep && eng_chat_list_push(r, f, items->v[i])))
				return -1;
		}
		items = f;
	}
	if (!items->n)
		return n->d ? exec(r, sc, n->d, out) : 0;
	for (size_t i = 0; i < items->n; i++) {
		struct jdict *d = eng_chat_newdict(r), *loop = eng_chat_newdict(r);
		if (!d || !loop)
			return -1;
		inner.vars = d;
		size_t len = items->n;
		if (eng_chat_dict_set(r, loop, "index", 5, vint((int64_t)i + 1)) || eng_chat_dict_set(r, loop, "index0", 6, vint((int64_t)i)) ||
		    eng_chat_dict_set(r, loop, "revindex", 8, vint((int64_t)(len - i))) ||
		    eng_chat_dict_set(r, loop, "revindex0", 9, vint((int64_t)(len - i - 1))) ||
		    eng_chat_dict_set(r, loop, "first", 5, vbool(i == 0)) || eng_chat_dict_set(r, loop, "last", 4, vbool(i + 1 == len)) ||
		    eng_chat_dict_set(r, loop, "length", 6, vint((int64_t)len)) ||
		    eng_chat_dict_set(r, loop, "previtem", 8, i ? items->v[i - 1] : undef()) ||
		    eng_chat_dict_set(r, loop, "nextitem", 8, i + 1 < len ? items->v[i + 1] : undef()) ||
		    eng_chat_dict_set(r, d, "loop", 4, (struct jv){.t = V_DICT, .d = loop}) || assign(r, &inner, n->a, items->v[i]))
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
		return eng_chat_rfail(r, "the rendered text is over %u MiB", ENG_CHAT_MAX_OUTPUT >> 20), -1;
	if (util_buf_add(out, s, n))
		return eng_chat_rfail(r, "out of memory"), -1;
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
			return eng_chat_rfail(r, "rendering takes too many steps"), -1;
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
				struct jv s = eng_chat_stringify(r, v);
				if (r->err || emit(r, out, s.s->p, s.s->n))
					return -1;
			}
			break;
		}
		case N_IF: {
			struct jv c = eval(r, sc, n->a);
			if (r->err)
				return -1;
			struct node *br = eng_chat_truthy(c) ? n->b : n->c;
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
			struct jv v = eng_chat_vbuf(r, &sub, fl < 0 && !r->err, "out of memory");
			if (fl < 0 || r->err || assign(r, sc, n->a, v))
				return -1;
			break;
		}
		case N_BREAK: return FLOW_BREAK;
		case N_CONTINUE: return FLOW_CONTINUE;
		default: return eng_chat_rfail(r, "unexpected statement"), -1;
		}
	}
	return FLOW_NONE;
}

enum hm_err eng_chat_render_vars(struct hm_ctx *ctx, const struct eng_chat *c, json_t *vars, time_t now, char **out,
			       size_t *len)
{
	struct arena ar = {0};
	struct rnd r = {ctx, &ar, HM_OK, 0, UTIL_BUF_INIT, 0, now};
	struct jdict *top;
	*out = NULL;
	*len = 0;
	top = eng_chat_newdict(&r);
	if (top) {
		const char *k;
		json_t *v;
		json_object_foreach (vars, k, v)
			if (eng_chat_dict_set(&r, top, k, strlen(k), eng_chat_from_json(&r, v, 0)))
				break;
		if (!eng_chat_dict_get(top, "bos_token", 9))
			(void)eng_chat_dict_set(&r, top, "bos_token", 9, eng_chat_vstr0(&r, c->bos));
		if (!eng_chat_dict_get(top, "eos_token", 9))
			(void)eng_chat_dict_set(&r, top, "eos_token", 9, eng_chat_vstr0(&r, c->eos));
		if (!eng_chat_dict_get(top, "add_generation_prompt", 21))
			(void)eng_chat_dict_set(&r, top, "add_generation_prompt", 21, vbool(0));
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
	eng_chat_arena_free(&ar);
	return err;
}
