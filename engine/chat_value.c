/* chat_value.c - the values of a chat template render (see chat-int.h):
 * one arena per render, strings, lists and dicts, Python's str() and
 * tojson, equality and order, attribute, item and slice access. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chat-int.h"

void *eng_chat_arena_alloc(struct arena *a, size_t n)
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

void eng_chat_arena_free(struct arena *a)
{
	while (a->head) {
		struct chunk *c = a->head;
		a->head = c->next;
		free(c);
	}
	a->total = 0;
}

enum hm_err eng_chat_failf(struct hm_ctx *ctx, int line, const char *fmt, ...)
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

enum hm_err eng_chat_rfail(struct rnd *r, const char *fmt, ...)
{
	if (!r->err) {
		char msg[400];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		r->err = eng_chat_failf(r->ctx, r->line, "%s", msg);
	}
	return r->err;
}

void *eng_chat_ralloc(struct rnd *r, size_t n)
{
	void *p = eng_chat_arena_alloc(r->ar, n);
	if (!p)
		eng_chat_rfail(r, "rendering needs more than %u MiB", MAX_ARENA >> 20);
	return p;
}

struct jv eng_chat_vstr(struct rnd *r, const char *s, size_t n)
{
	struct jstr *js = eng_chat_ralloc(r, sizeof(*js) + n + 1);
	if (!js)
		return undef();
	js->n = n;
	if (n)
		memcpy(js->p, s, n);
	js->p[n] = 0;
	return (struct jv){.t = V_STR, .s = js};
}

struct jv eng_chat_vstr0(struct rnd *r, const char *s)
{
	return eng_chat_vstr(r, s, strlen(s));
}

struct jlist *eng_chat_newlist(struct rnd *r, size_t cap)
{
	struct jlist *l = eng_chat_ralloc(r, sizeof(*l));
	if (!l)
		return NULL;
	l->n = 0;
	l->cap = cap;
	l->v = cap ? eng_chat_ralloc(r, cap * sizeof(*l->v)) : NULL;
	if (cap && !l->v)
		return NULL;
	return l;
}

int eng_chat_list_push(struct rnd *r, struct jlist *l, struct jv v)
{
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 8;
		struct jv *nv = eng_chat_ralloc(r, nc * sizeof(*nv));
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

struct jdict *eng_chat_newdict(struct rnd *r)
{
	struct jdict *d = eng_chat_ralloc(r, sizeof(*d));
	if (d)
		memset(d, 0, sizeof(*d));
	return d;
}

struct jv *eng_chat_dict_get(const struct jdict *d, const char *k, size_t kn)
{
	for (size_t i = d->n; i-- > 0;)
		if (d->k[i]->n == kn && !memcmp(d->k[i]->p, k, kn))
			return &d->v[i];
	return NULL;
}

int eng_chat_dict_set(struct rnd *r, struct jdict *d, const char *k, size_t kn, struct jv v)
{
	struct jv *e = eng_chat_dict_get(d, k, kn);
	if (e) {
		*e = v;
		return 0;
	}
	if (d->n == d->cap) {
		size_t nc = d->cap ? d->cap * 2 : 8;
		struct jstr **nk = eng_chat_ralloc(r, nc * sizeof(*nk));
		struct jv *nv = eng_chat_ralloc(r, nc * sizeof(*nv));
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
	struct jv ks = eng_chat_vstr(r, k, kn);
	if (ks.t != V_STR)
		return -1;
	d->k[d->n] = ks.s;
	d->v[d->n++] = v;
	return 0;
}

struct jv eng_chat_from_json(struct rnd *r, json_t *j, int depth)
{
	if (depth > 200) {
		eng_chat_rfail(r, "variables nested too deeply");
		return undef();
	}
	switch (json_typeof(j)) {
	case JSON_NULL: return (struct jv){.t = V_NONE};
	case JSON_TRUE: return vbool(1);
	case JSON_FALSE: return vbool(0);
	case JSON_INTEGER: return vint(json_integer_value(j));
	case JSON_REAL: return (struct jv){.t = V_FLOAT, .f = json_real_value(j)};
	case JSON_STRING: return eng_chat_vstr(r, json_string_value(j), json_string_length(j));
	case JSON_ARRAY: {
		struct jlist *l = eng_chat_newlist(r, json_array_size(j));
		size_t i;
		json_t *e;
		if (!l)
			return undef();
		json_array_foreach (j, i, e)
			if (eng_chat_list_push(r, l, eng_chat_from_json(r, e, depth + 1)))
				return undef();
		return (struct jv){.t = V_LIST, .l = l};
	}
	case JSON_OBJECT: {
		struct jdict *d = eng_chat_newdict(r);
		const char *k;
		json_t *e;
		if (!d)
			return undef();
		json_object_foreach (j, k, e)
			if (eng_chat_dict_set(r, d, k, strlen(k), eng_chat_from_json(r, e, depth + 1)))
				return undef();
		return (struct jv){.t = V_DICT, .d = d};
	}
	}
	return undef();
}

int eng_chat_truthy(struct jv v)
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

size_t eng_chat_utf8_len(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += ((unsigned char)s[i] & 0xC0) != 0x80;
	return c;
}

/* Python-style str() into b: 1 on out of memory */
int eng_chat_to_json(struct rnd *r, struct util_buf *b, struct jv v, int indent, int level);

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

int eng_chat_to_str(struct rnd *r, struct util_buf *b, struct jv v)
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
			} else if (eng_chat_to_str(r, b, v.l->v[i]))
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
			} else if (eng_chat_to_str(r, b, v.d->v[i]))
				return -1;
		}
		return util_buf_adds(b, "}");
	}
	case V_FUNC: return util_buf_adds(b, "<function>");
	}
	return 0;
}

struct jv eng_chat_stringify(struct rnd *r, struct jv v)
{
	if (v.t == V_STR)
		return v;
	struct util_buf b = UTIL_BUF_INIT;
	int bad = eng_chat_to_str(r, &b, v);
	return eng_chat_vbuf(r, &b, bad, "out of memory");
}

struct jv eng_chat_vbuf(struct rnd *r, struct util_buf *b, int bad, const char *why)
{
	struct jv o = bad ? undef() : eng_chat_vstr(r, b->buf ? b->buf : "", b->len);
	util_buf_release(b);
	if (bad)
		eng_chat_rfail(r, "%s", why);
	return o;
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
int eng_chat_to_json(struct rnd *r, struct util_buf *b, struct jv v, int indent, int level)
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
			if ((indent && newline_indent(b, indent, level + 1)) || eng_chat_to_json(r, b, v.l->v[i], indent, level + 1))
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
			    util_buf_adds(b, ": ") || eng_chat_to_json(r, b, v.d->v[i], indent, level + 1))
				return -1;
		}
		return (indent && newline_indent(b, indent, level)) || util_buf_adds(b, "}");
	default: return eng_chat_to_str(r, b, v);
	}
}

int eng_chat_equal(struct jv a, struct jv b)
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
			if (!eng_chat_equal(a.l->v[i], b.l->v[i]))
				return 0;
		return 1;
	case V_DICT:
		if (a.d->n != b.d->n)
			return 0;
		for (size_t i = 0; i < a.d->n; i++) {
			struct jv *o = eng_chat_dict_get(b.d, a.d->k[i]->p, a.d->k[i]->n);
			if (!o || !eng_chat_equal(a.d->v[i], *o))
				return 0;
		}
		return 1;
	case V_NS:
	case V_FUNC: return a.d == b.d;
	default: return 1;
	}
}

const char *eng_chat_tname(struct jv v)
{
	static const char *const n[] = {"undefined", "none", "boolean", "integer", "float",
					"string", "list", "dict", "namespace", "function"};
	return n[v.t];
}

struct jv eng_chat_vfunc(struct rnd *r, const char *name, struct jv self)
{
	struct jfunc *f = eng_chat_ralloc(r, sizeof(*f));
	if (!f)
		return undef();
	f->name = name;
	f->self = self;
	return (struct jv){.t = V_FUNC, .fn = f};
}

/* attribute / item access */
struct jv eng_chat_getattr(struct rnd *r, struct jv o, const char *k, size_t kn, int method_ok)
{
	if (o.t == V_DICT || o.t == V_NS) {
		struct jv *v = eng_chat_dict_get(o.d, k, kn);
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
			return eng_chat_vfunc(r, m[i], o);
	return undef();
}

static int64_t norm_index(int64_t i, size_t n)
{
	return i < 0 ? i + (int64_t)n : i;
}

struct jv eng_chat_getitem(struct rnd *r, struct jv o, struct jv k)
{
	if (o.t == V_LIST && (k.t == V_INT || k.t == V_BOOL)) {
		int64_t i = norm_index(k.i, o.l->n);
		return i >= 0 && (size_t)i < o.l->n ? o.l->v[i] : undef();
	}
	if (o.t == V_STR && (k.t == V_INT || k.t == V_BOOL)) {
		int64_t i = norm_index(k.i, o.s->n);
		return i >= 0 && (size_t)i < o.s->n ? eng_chat_vstr(r, o.s->p + i, 1) : undef();
	}
	if ((o.t == V_DICT || o.t == V_NS) && k.t == V_STR)
		return eng_chat_getattr(r, o, k.s->p, k.s->n, 0);
	if (o.t == V_DICT && k.t != V_STR) {
		struct jv ks = eng_chat_stringify(r, k);
		return ks.t == V_STR ? eng_chat_getattr(r, o, ks.s->p, ks.s->n, 0) : undef();
	}
	return undef();
}

struct jv eng_chat_slice(struct rnd *r, struct jv o, struct jv a, struct jv b, struct jv c)
{
	int64_t n, step = c.t == V_INT ? c.i : 1, lo, hi;
	if (o.t == V_LIST)
		n = (int64_t)o.l->n;
	else if (o.t == V_STR)
		n = (int64_t)o.s->n;
	else
		return undef();
	if (step == 0) {
		eng_chat_rfail(r, "slice step cannot be zero");
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
		struct jlist *l = eng_chat_newlist(r, 0);
		if (!l)
			return undef();
		for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step)
			if (eng_chat_list_push(r, l, o.l->v[i]))
				return undef();
		return (struct jv){.t = V_LIST, .l = l};
	}
	struct util_buf bb = UTIL_BUF_INIT;
	for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step)
		if (util_buf_add(&bb, o.s->p + i, 1)) {
			util_buf_release(&bb);
			eng_chat_rfail(r, "out of memory");
			return undef();
		}
	struct jv s = eng_chat_vstr(r, bb.buf ? bb.buf : "", bb.len);
	util_buf_release(&bb);
	return s;
}

int eng_chat_cmp_vals(struct rnd *r, struct jv a, struct jv b)
{
	if (num(a) && num(b))
		return fval(a) < fval(b) ? -1 : fval(a) > fval(b);
	if (a.t == V_STR && b.t == V_STR) {
		size_t m = a.s->n < b.s->n ? a.s->n : b.s->n;
		int c = memcmp(a.s->p, b.s->p, m);
		return c ? (c < 0 ? -1 : 1) : a.s->n < b.s->n ? -1 : a.s->n > b.s->n;
	}
	eng_chat_rfail(r, "cannot compare a %s with a %s", eng_chat_tname(a), eng_chat_tname(b));
	return 0;
}

struct jv eng_chat_list_of(struct rnd *r, struct jv v)
{
	if (v.t == V_LIST)
		return v;
	if (v.t == V_DICT) {
		struct jlist *l = eng_chat_newlist(r, v.d->n);
		if (!l)
			return undef();
		for (size_t i = 0; i < v.d->n; i++)
			l->v[l->n++] = (struct jv){.t = V_STR, .s = v.d->k[i]};
		return (struct jv){.t = V_LIST, .l = l};
	}
	if (v.t == V_STR) {
		struct jlist *l = eng_chat_newlist(r, 0);
		if (!l)
			return undef();
		for (size_t i = 0; i < v.s->n;) {
			size_t k = i + 1;
			while (k < v.s->n && ((unsigned char)v.s->p[k] & 0xC0) == 0x80)
				k++;
			if (eng_chat_list_push(r, l, eng_chat_vstr(r, v.s->p + i, k - i)))
				return undef();
			i = k;
		}
		return (struct jv){.t = V_LIST, .l = l};
	}
	eng_chat_rfail(r, "a %s is not iterable", eng_chat_tname(v));
	return undef();
}

struct jv eng_chat_attr_path(struct rnd *r, struct jv v, struct jv attr)
{
	if (attr.t != V_STR)
		return undef();
	/* "a.b" walks down */
	const char *p = attr.s->p, *e = p + attr.s->n;
	while (p <= e) {
		const char *dot = memchr(p, '.', (size_t)(e - p));
		if (!dot)
			dot = e;
		v = eng_chat_getattr(r, v, p, (size_t)(dot - p), 0);
		p = dot + 1;
	}
	return v;
}
