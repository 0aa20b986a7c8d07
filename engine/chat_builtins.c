/* chat_builtins.c - the filters, tests, methods and global functions chat
 * templates call, on evaluated values (see chat-int.h). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chat-int.h"

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
	return eng_chat_vstr(r, s.s->p + a, b - a);
}

static struct jv replace(struct rnd *r, struct jv s, struct jv from, struct jv to, int64_t count)
{
	if (s.t != V_STR || from.t != V_STR || to.t != V_STR) {
		eng_chat_rfail(r, "replace takes strings");
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
	return eng_chat_vbuf(r, &b, bad, "replace result too large");
}

static struct jv split(struct rnd *r, struct jv s, struct jv sep, int64_t maxsplit)
{
	struct jlist *l = eng_chat_newlist(r, 0);
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
			if (eng_chat_list_push(r, l, eng_chat_vstr(r, p, (size_t)(q - p))))
				return undef();
			p = q;
		}
		return (struct jv){.t = V_LIST, .l = l};
	}
	if (!sep.s->n) {
		eng_chat_rfail(r, "empty separator");
		return undef();
	}
	for (;;) {
		const char *hit = (maxsplit < 0 || (int64_t)l->n < maxsplit)
					  ? memmem(p, (size_t)(e - p), sep.s->p, sep.s->n) : NULL;
		if (!hit) {
			if (eng_chat_list_push(r, l, eng_chat_vstr(r, p, (size_t)(e - p))))
				return undef();
			break;
		}
		if (eng_chat_list_push(r, l, eng_chat_vstr(r, p, (size_t)(hit - p))))
			return undef();
		p = hit + sep.s->n;
		r->steps++;
	}
	return (struct jv){.t = V_LIST, .l = l};
}

static struct jv case_map(struct rnd *r, struct jv s, int mode) /* 0 lower 1 upper 2 title 3 capitalize */
{
	struct jv o = eng_chat_vstr(r, s.s->p, s.s->n);
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
	struct jlist *l = eng_chat_newlist(r, d.d->n);
	if (!l)
		return undef();
	for (size_t i = 0; i < d.d->n; i++) {
		struct jlist *pair = eng_chat_newlist(r, 2);
		if (!pair)
			return undef();
		pair->v[0] = (struct jv){.t = V_STR, .s = d.d->k[i]};
		pair->v[1] = d.d->v[i];
		pair->n = 2;
		l->v[l->n++] = (struct jv){.t = V_LIST, .l = pair};
	}
	return (struct jv){.t = V_LIST, .l = l};
}

/* The methods of a string s; *done = 0 when m is none of them. */
static struct jv str_method(struct rnd *r, struct jv s, const char *m, struct args *a, int *done)
{
	*done = 1;
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
				eng_chat_rfail(r, "%s takes a string", m);
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
		return split(r, s, eng_chat_vstr0(r, "\n"), -1);
	if (!strcmp(m, "upper") || !strcmp(m, "lower") || !strcmp(m, "title") || !strcmp(m, "capitalize"))
		return case_map(r, s, m[0] == 'l' ? 0 : m[0] == 'u' ? 1 : m[0] == 't' ? 2 : 3);
	if (!strcmp(m, "replace")) {
		struct jv c = kwarg(a, "count", 2);
		return replace(r, s, kwarg(a, "old", 0), kwarg(a, "new", 1), c.t == V_INT ? c.i : -1);
	}
	if (!strcmp(m, "find") || !strcmp(m, "count")) {
		struct jv sub = kwarg(a, "sub", 0);
		if (sub.t != V_STR) {
			eng_chat_rfail(r, "%s takes a string", m);
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
			eng_chat_rfail(r, "join takes a list");
			return undef();
		}
		struct util_buf b = UTIL_BUF_INIT;
		int bad = 0;
		for (size_t i = 0; i < l.l->n; i++) {
			if (i)
				bad |= util_buf_add(&b, s.s->p, s.s->n);
			bad |= eng_chat_to_str(r, &b, l.l->v[i]);
		}
		return eng_chat_vbuf(r, &b, bad, "out of memory");
	}
	*done = 0;
	return undef();
}

static struct jv dict_method(struct rnd *r, struct jv s, const char *m, struct args *a, int *done)
{
	*done = 1;
	if (!strcmp(m, "items"))
		return vlist_items(r, s);
	if (!strcmp(m, "keys") || !strcmp(m, "values")) {
		struct jlist *l = eng_chat_newlist(r, s.d->n);
		if (!l)
			return undef();
		for (size_t i = 0; i < s.d->n; i++)
			l->v[l->n++] = m[0] == 'k' ? (struct jv){.t = V_STR, .s = s.d->k[i]} : s.d->v[i];
		return (struct jv){.t = V_LIST, .l = l};
	}
	if (!strcmp(m, "get")) {
		struct jv k = kwarg(a, "key", 0);
		struct jv v = k.t == V_STR ? eng_chat_getattr(r, s, k.s->p, k.s->n, 0) : undef();
		if (v.t == V_UNDEF) {
			v = kwarg(a, "default", 1);
			if (v.t == V_UNDEF)
				v.t = V_NONE;
		}
		return v;
	}
	*done = 0;
	return undef();
}

static struct jv list_method(struct rnd *r, struct jv s, const char *m, struct args *a, int *done)
{
	*done = 1;
	if (!strcmp(m, "append")) {
		if (eng_chat_list_push(r, s.l, kwarg(a, "x", 0)))
			return undef();
		return (struct jv){.t = V_NONE};
	}
	if (!strcmp(m, "index") || !strcmp(m, "count")) {
		struct jv x = kwarg(a, "x", 0);
		int64_t c = 0;
		for (size_t i = 0; i < s.l->n; i++)
			if (eng_chat_equal(s.l->v[i], x)) {
				if (m[0] == 'i')
					return vint((int64_t)i);
				c++;
			}
		if (m[0] == 'i') {
			eng_chat_rfail(r, "index: value not in list");
			return undef();
		}
		return vint(c);
	}
	*done = 0;
	return undef();
}

struct jv eng_chat_call_method(struct rnd *r, struct jfunc *f, struct args *a)
{
	struct jv s = f->self, v = undef();
	int done = 0;
	if (s.t == V_STR)
		v = str_method(r, s, f->name, a, &done);
	else if (s.t == V_DICT)
		v = dict_method(r, s, f->name, a, &done);
	else if (s.t == V_LIST)
		v = list_method(r, s, f->name, a, &done);
	if (done)
		return v;
	eng_chat_rfail(r, "unsupported method '%s' of a %s", f->name, eng_chat_tname(s));
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

struct jv eng_chat_call_global(struct rnd *r, const char *g, struct args *a)
{
	if (!strcmp(g, "raise_exception")) {
		struct jv m = a->n ? eng_chat_stringify(r, a->v[0]) : eng_chat_vstr0(r, "");
		if (!r->err)
			eng_chat_rfail(r, "raise_exception: %.300s", m.t == V_STR ? m.s->p : "");
		return undef();
	}
	if (!strcmp(g, "namespace") || !strcmp(g, "dict")) {
		struct jdict *d = eng_chat_newdict(r);
		if (!d)
			return undef();
		for (size_t i = 0; i < a->n; i++)
			if (a->v[i].t == V_DICT)
				for (size_t k = 0; k < a->v[i].d->n; k++)
					if (eng_chat_dict_set(r, d, a->v[i].d->k[k]->p, a->v[i].d->k[k]->n, a->v[i].d->v[k]))
						return undef();
		for (size_t i = 0; i < a->nkw; i++)
			if (eng_chat_dict_set(r, d, a->kw[i], a->kwn[i], a->kv[i]))
				return undef();
		return (struct jv){.t = g[0] == 'n' ? V_NS : V_DICT, .d = d};
	}
	if (!strcmp(g, "range")) {
		int64_t lo = 0, hi, st = 1;
		for (size_t i = 0; i < a->n; i++)
			if (a->v[i].t != V_INT) {
				eng_chat_rfail(r, "range takes integers");
				return undef();
			}
		if (a->n == 1)
			hi = a->v[0].i;
		else if (a->n >= 2) {
			lo = a->v[0].i;
			hi = a->v[1].i;
			if (a->n == 3)
				st = a->v[2].i;
		} else {
			eng_chat_rfail(r, "range takes 1 to 3 integers");
			return undef();
		}
		if (st == 0) {
			eng_chat_rfail(r, "range step cannot be zero");
			return undef();
		}
		struct jlist *l = eng_chat_newlist(r, 0);
		if (!l)
			return undef();
		for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
			if (++r->steps > MAX_STEPS) {
				eng_chat_rfail(r, "rendering takes too many steps");
				return undef();
			}
			if (eng_chat_list_push(r, l, vint(i)))
				return undef();
		}
		return (struct jv){.t = V_LIST, .l = l};
	}
	if (!strcmp(g, "strftime_now")) {
		char buf[256];
		if (!a->n || a->v[0].t != V_STR) {
			eng_chat_rfail(r, "strftime_now takes a format string");
			return undef();
		}
		fmt_time(r, a->v[0].s->p, buf, sizeof(buf));
		return eng_chat_vstr0(r, buf);
	}
	eng_chat_rfail(r, "unsupported function '%s'", g);
	return undef();
}

int eng_chat_run_test(struct rnd *r, const char *t, size_t tn, struct jv v, struct args *a)
{
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
			eng_chat_rfail(r, "'%.*s' needs an integer", (int)tn, t);
			return 0;
		}
		return (v.i % 2 == 0) == T("even");
	}
	if (T("divisibleby")) {
		if (v.t != V_INT || !a->n || a->v[0].t != V_INT || a->v[0].i == 0) {
			eng_chat_rfail(r, "divisibleby needs integers");
			return 0;
		}
		return v.i % a->v[0].i == 0;
	}
	if (T("eq") || T("equalto") || T("==") || T("sameas"))
		return a->n && eng_chat_equal(v, a->v[0]);
	if (T("ne"))
		return !(a->n && eng_chat_equal(v, a->v[0]));
	if (T("lower") || T("upper")) {
		if (v.t != V_STR)
			return 0;
		for (size_t i = 0; i < v.s->n; i++)
			if (T("lower") ? isupper((unsigned char)v.s->p[i]) : islower((unsigned char)v.s->p[i]))
				return 0;
		return 1;
	}
#undef T
	eng_chat_rfail(r, "unsupported test '%.*s'", (int)(tn > 30 ? 30 : tn), t);
	return 0;
}

#define F(name) nameq(f, fn, name)
/* Filters on text: escaping, trimming, case, replace, indent. */
static struct jv filter_text(struct rnd *r, const char *f, size_t fn, struct jv v, struct args *a, int *done)
{
	*done = 1;
	if (F("safe") || F("e") || F("escape") || F("forceescape")) {
		if (F("safe"))
			return v;
		/* HTML escaping (autoescape is off in chat templates; explicit escape is rare) */
		struct jv s = eng_chat_stringify(r, v);
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
		return eng_chat_vbuf(r, &b, bad, "out of memory");
	}
	if (F("trim")) {
		struct jv s = eng_chat_stringify(r, v);
		return s.t == V_STR ? strip(r, s, kwarg(a, "chars", 0), 1, 1) : s;
	}
	if (F("upper") || F("lower") || F("title") || F("capitalize")) {
		struct jv s = eng_chat_stringify(r, v);
		return s.t == V_STR ? case_map(r, s, f[0] == 'l' ? 0 : f[0] == 'u' ? 1 : f[0] == 't' ? 2 : 3) : s;
	}
	if (F("string"))
		return eng_chat_stringify(r, v);
	if (F("replace")) {
		struct jv c = kwarg(a, "count", 2);
		struct jv s = eng_chat_stringify(r, v);
		return s.t == V_STR ? replace(r, s, kwarg(a, "old", 0), kwarg(a, "new", 1), c.t == V_INT ? c.i : -1) : s;
	}
	if (F("indent")) {
		struct jv w = kwarg(a, "width", 0), first = kwarg(a, "first", 1), blank = kwarg(a, "blank", 2);
		struct jv s = eng_chat_stringify(r, v);
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
			if ((ln > 0 || eng_chat_truthy(first)) && (e > i || eng_chat_truthy(blank)))
				for (int64_t k = 0; k < width; k++)
					bad |= util_buf_add(&b, " ", 1);
			bad |= util_buf_add(&b, s.s->p + i, e - i);
			if (!nl)
				break;
			bad |= util_buf_add(&b, "\n", 1);
			i = e + 1;
		}
		return eng_chat_vbuf(r, &b, bad, "out of memory");
	}
	if (F("wordcount")) {
		struct jv s = eng_chat_stringify(r, v);
		return s.t == V_STR ? vint((int64_t)split(r, s, undef(), -1).l->n) : undef();
	}
	*done = 0;
	return undef();
}

/* Filters on sequences: length, first/last, join, list, items, reverse, sort. */
static struct jv filter_seq(struct rnd *r, const char *f, size_t fn, struct jv v, struct args *a, int *done)
{
	*done = 1;
	if (F("length") || F("count")) {
		switch (v.t) {
		case V_STR: return vint((int64_t)eng_chat_utf8_len(v.s->p, v.s->n));
		case V_LIST: return vint((int64_t)v.l->n);
		case V_DICT:
		case V_NS: return vint((int64_t)v.d->n);
		default: eng_chat_rfail(r, "length of a %s", eng_chat_tname(v)); return undef();
		}
	}
	if (F("first") || F("last")) {
		struct jv l = eng_chat_list_of(r, v);
		if (l.t != V_LIST)
			return undef();
		return l.l->n ? l.l->v[F("first") ? 0 : l.l->n - 1] : undef();
	}
	if (F("join")) {
		struct jv l = eng_chat_list_of(r, v), sep = kwarg(a, "d", 0), attr = kwarg(a, "attribute", 1);
		struct util_buf b = UTIL_BUF_INIT;
		int bad = 0;
		if (l.t != V_LIST)
			return undef();
		for (size_t i = 0; i < l.l->n; i++) {
			if (i && sep.t == V_STR)
				bad |= util_buf_add(&b, sep.s->p, sep.s->n);
			bad |= eng_chat_to_str(r, &b, attr.t == V_STR ? eng_chat_attr_path(r, l.l->v[i], attr) : l.l->v[i]);
		}
		return eng_chat_vbuf(r, &b, bad, "out of memory");
	}
	if (F("list"))
		return eng_chat_list_of(r, v);
	if (F("items")) {
		if (v.t != V_DICT) {
			eng_chat_rfail(r, "items of a %s", eng_chat_tname(v));
			return undef();
		}
		return vlist_items(r, v);
	}
	if (F("reverse")) {
		if (v.t == V_STR)
			return eng_chat_slice(r, v, undef(), undef(), vint(-1));
		struct jv l = eng_chat_list_of(r, v);
		return l.t == V_LIST ? eng_chat_slice(r, l, undef(), undef(), vint(-1)) : l;
	}
	if (F("sort") || F("dictsort")) {
		struct jv l = F("dictsort") ? (v.t == V_DICT ? vlist_items(r, v) : undef()) : eng_chat_list_of(r, v);
		struct jv rev = kwarg(a, "reverse", 0), at = kwarg(a, "attribute", 2);
		if (l.t != V_LIST)
			return undef();
		struct jlist *o = eng_chat_newlist(r, l.l->n);
		if (!o)
			return undef();
		/* insertion sort: stable, and lists in templates are short (steps bound it) */
		for (size_t i = 0; i < l.l->n; i++) {
			struct jv e = l.l->v[i], ke = at.t == V_STR ? eng_chat_attr_path(r, e, at) : F("dictsort") ? e.l->v[0] : e;
			size_t k = o->n;
			while (k > 0) {
				struct jv p = o->v[k - 1], kp = at.t == V_STR ? eng_chat_attr_path(r, p, at)
								    : F("dictsort") ? p.l->v[0] : p;
				int c = eng_chat_cmp_vals(r, kp, ke);
				if (r->err || ++r->steps > MAX_STEPS) {
					eng_chat_rfail(r, "sort: rendering takes too many steps");
					return undef();
				}
				if (eng_chat_truthy(rev) ? c >= 0 : c <= 0)
					break;
				o->v[k] = p;
				k--;
			}
			o->v[k] = e;
			o->n++;
		}
		return (struct jv){.t = V_LIST, .l = o};
	}
	*done = 0;
	return undef();
}

/* map, select/reject(attr) and unique: one pass over a sequence. */
static struct jv filter_each(struct rnd *r, const char *f, size_t fn, struct jv v, struct args *a, int *done)
{
	*done = 1;
	if (F("map") || F("selectattr") || F("rejectattr") || F("select") || F("reject") || F("unique")) {
		struct jv l = eng_chat_list_of(r, v);
		struct jlist *o;
		if (l.t != V_LIST || !(o = eng_chat_newlist(r, 0)))
			return undef();
		for (size_t i = 0; i < l.l->n; i++) {
			struct jv e = l.l->v[i], x;
			if (++r->steps > MAX_STEPS) {
				eng_chat_rfail(r, "rendering takes too many steps");
				return undef();
			}
			if (F("unique")) {
				int seen = 0;
				for (size_t k = 0; k < o->n && !seen; k++)
					seen = eng_chat_equal(o->v[k], e);
				if (!seen && eng_chat_list_push(r, o, e))
					return undef();
				continue;
			}
			if (F("map")) {
				struct jv at = kwarg(a, "attribute", 99);
				if (at.t == V_STR)
					x = eng_chat_attr_path(r, e, at);
				else if (a->n && a->v[0].t == V_STR) {
					/* map('filter', args...): the filter on each item */
					struct args fa = {0};
					for (size_t k = 1; k < a->n; k++)
						fa.v[fa.n++] = a->v[k];
					x = eng_chat_apply_filter(r, a->v[0].s->p, a->v[0].s->n, e, &fa);
					if (r->err)
						return undef();
				} else {
					eng_chat_rfail(r, "map needs attribute= or a filter name");
					return undef();
				}
				if (eng_chat_list_push(r, o, x))
					return undef();
				continue;
			}
			int attr = F("selectattr") || F("rejectattr");
			struct jv subj = attr ? eng_chat_attr_path(r, e, a->n ? a->v[0] : undef()) : e;
			int keep;
			size_t ti = attr ? 1 : 0;
			if (a->n > ti && a->v[ti].t == V_STR) {
				struct args ta = {0};
				for (size_t k = ti + 1; k < a->n; k++)
					ta.v[ta.n++] = a->v[k];
				keep = eng_chat_run_test(r, a->v[ti].s->p, a->v[ti].s->n, subj, &ta);
				if (r->err)
					return undef();
			} else
				keep = eng_chat_truthy(subj);
			if (F("rejectattr") || F("reject"))
				keep = !keep;
			if (keep && eng_chat_list_push(r, o, e))
				return undef();
		}
		return (struct jv){.t = V_LIST, .l = o};
	}
	*done = 0;
	return undef();
}

/* Conversions and numbers: default, int, float, abs, round, tojson. */
static struct jv filter_num(struct rnd *r, const char *f, size_t fn, struct jv v, struct args *a, int *done)
{
	*done = 1;
	if (F("tojson")) {
		struct jv ind = kwarg(a, "indent", 0);
		struct util_buf b = UTIL_BUF_INIT;
		int bad = eng_chat_to_json(r, &b, v, ind.t == V_INT && ind.i > 0 && ind.i < 64 ? (int)ind.i : 0, 0);
		return eng_chat_vbuf(r, &b, bad, "tojson: out of memory or nested too deeply");
	}
	if (F("default") || F("d")) {
		struct jv def = kwarg(a, "default_value", 0), boolean = kwarg(a, "boolean", 1);
		if (v.t == V_UNDEF || (eng_chat_truthy(boolean) && !eng_chat_truthy(v)))
			return def.t == V_UNDEF ? eng_chat_vstr0(r, "") : def;
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
		eng_chat_rfail(r, "abs of a %s", eng_chat_tname(v));
		return undef();
	}
	if (F("round")) {
		struct jv pr = kwarg(a, "precision", 0);
		double m = pow(10, pr.t == V_INT ? (double)pr.i : 0);
		return (struct jv){.t = V_FLOAT, .f = round(fval(v) * m) / m};
	}
	*done = 0;
	return undef();
}

struct jv eng_chat_apply_filter(struct rnd *r, const char *f, size_t fn, struct jv v, struct args *a)
{
	static struct jv (*const groups[])(struct rnd *, const char *, size_t, struct jv, struct args *, int *) = {
		filter_text, filter_seq, filter_each, filter_num};
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
		int done = 0;
		struct jv o = groups[i](r, f, fn, v, a, &done);
		if (done)
			return o;
	}
	eng_chat_rfail(r, "unsupported filter '%.*s'", (int)(fn > 30 ? 30 : fn), f);
	return undef();
}
#undef F
