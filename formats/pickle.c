/* pickle.c - a restricted unpickler for PyTorch state dicts: it builds
 * plain values (ints, strings, tuples, lists, dicts) and knows a short
 * allow-list of globals (OrderedDict, the tensor rebuild functions, storage
 * types and dtypes) as inert tags. Nothing named in the file is ever
 * imported or called; every other global or opcode is refused. All memory
 * it takes is bounded by caps on objects, items, stack, marks and memo. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../util/util.h"
#include "formats-int.h"
#include "torch-int.h"

#define PK_MAX_VALUES (1u << 23)  /* objects built */
#define PK_MAX_ITEMS (1u << 24)   /* slots in containers, all together */
#define PK_MAX_STACK (1u << 20)
#define PK_MAX_MARKS 4096
#define PK_MAX_MEMO (1u << 23)
#define PK_MAX_GLOBAL 256         /* bytes of a module or name */
#define PK_MAX_KEY 64             /* bytes of a storage key */
#define PK_BLOCK 4096             /* values per allocation block */

enum pk_kind {
	PK_NONE, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_BYTES,
	PK_TUPLE, PK_LIST, PK_DICT, PK_GLOBAL, PK_STORAGE, PK_TENSOR
};

static const char *const kind_names[] = {
	"None", "bool", "int", "float", "str", "bytes",
	"tuple", "list", "dict", "global", "storage", "tensor"
};

/* The globals a state dict may name. Storage types and dtypes carry their dtype. */
enum pk_global { G_ODICT, G_REBUILD_V2, G_REBUILD_PARAM, G_REBUILD_PARAM_STATE, G_SIZE, G_STORAGE, G_DTYPE };

struct pk_tensor {
	int ndim, nstride;
	int64_t size[FMT_MAX_DIMS], stride[FMT_MAX_DIMS];
	int64_t offset;
	const struct pk_val *storage;
};

struct pk_val {
	uint8_t kind;
	uint8_t gid;        /* PK_GLOBAL: enum pk_global */
	uint8_t dtype;      /* PK_GLOBAL storage/dtype, PK_STORAGE */
	uint32_t n, cap;    /* containers: item slots used/allocated (a dict uses 2 per pair) */
	union {
		int64_t i;      /* INT, BOOL; STORAGE: numel */
		double f;
		uint64_t len;   /* STR, BYTES */
	} u;
	union {
		char *s;        /* STR, BYTES (NUL-terminated copy), STORAGE key */
		struct pk_val **items;
		struct pk_tensor *t;
		const char *name; /* GLOBAL: its dotted name (static) */
	} p;
};

struct pk_block {
	struct pk_block *next;
	size_t used;
	struct pk_val v[PK_BLOCK];
};

struct pk {
	struct hm_ctx *ctx;
	const char *file;
	const unsigned char *in;
	size_t len, pos, op_pos;
	struct pk_block *blocks;
	size_t nvalues, nitems;
	struct pk_val none, yes, no;
	struct pk_val **stack;
	size_t sp, stack_cap;
	size_t marks[PK_MAX_MARKS];
	size_t nmarks;
	struct pk_val **memo;
	size_t nmemo, memo_cap;
};

struct fmt_pt_pickle {
	struct fmt_pt_tensor *t;
	size_t n;
};

static enum hm_err HM_PRINTF(2, 3) bad(struct pk *P, const char *fmt, ...)
{
	char msg[700];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': data.pkl: %s (at byte %zu)", P->file, msg, P->op_pos);
}

static enum hm_err nomem(struct pk *P)
{
	return hm_fail(P->ctx, HM_ERR_NOMEM, "'%s': out of memory reading the pickle", P->file);
}

static enum hm_err new_val(struct pk *P, enum pk_kind kind, struct pk_val **out)
{
	struct pk_block *b = P->blocks;
	if (P->nvalues >= PK_MAX_VALUES)
		return bad(P, "more than %u objects", PK_MAX_VALUES);
	if (!b || b->used == PK_BLOCK) {
		if (!(b = calloc(1, sizeof(*b))))
			return nomem(P);
		b->next = P->blocks;
		P->blocks = b;
	}
	*out = &b->v[b->used++];
	memset(*out, 0, sizeof(**out));
	(*out)->kind = (uint8_t)kind;
	P->nvalues++;
	return HM_OK;
}

static void pk_release(struct pk *P)
{
	struct pk_block *b = P->blocks, *next;
	for (; b; b = next) {
		next = b->next;
		for (size_t i = 0; i < b->used; i++) {
			struct pk_val *v = &b->v[i];
			if (v->kind == PK_STR || v->kind == PK_BYTES || v->kind == PK_STORAGE)
				free(v->p.s);
			else if (v->kind == PK_TUPLE || v->kind == PK_LIST || v->kind == PK_DICT)
				free(v->p.items);
			else if (v->kind == PK_TENSOR)
				free(v->p.t);
		}
		free(b);
	}
	free(P->stack);
	free(P->memo);
}

static enum hm_err push(struct pk *P, struct pk_val *v)
{
	if (P->sp == P->stack_cap) {
		size_t cap = P->stack_cap ? 2 * P->stack_cap : 256;
		struct pk_val **s;
		if (P->sp >= PK_MAX_STACK)
			return bad(P, "stack deeper than %u", PK_MAX_STACK);
		if (cap > PK_MAX_STACK)
			cap = PK_MAX_STACK;
		if (!(s = realloc(P->stack, cap * sizeof(*s))))
			return nomem(P);
		P->stack = s;
		P->stack_cap = cap;
	}
	P->stack[P->sp++] = v;
	return HM_OK;
}

/* The first stack slot above the innermost mark (or 0). */
static size_t floor_of(const struct pk *P)
{
	return P->nmarks ? P->marks[P->nmarks - 1] : 0;
}

static enum hm_err pop(struct pk *P, struct pk_val **out)
{
	if (P->sp <= floor_of(P))
		return bad(P, "stack underflow");
	*out = P->stack[--P->sp];
	return HM_OK;
}

static enum hm_err top(struct pk *P, struct pk_val **out)
{
	if (P->sp <= floor_of(P))
		return bad(P, "stack underflow");
	*out = P->stack[P->sp - 1];
	return HM_OK;
}

/* Pops the innermost mark: the items above it are stack[*from .. sp). */
static enum hm_err pop_mark(struct pk *P, size_t *from)
{
	if (!P->nmarks)
		return bad(P, "no MARK to pop");
	*from = P->marks[--P->nmarks];
	return HM_OK;
}

static enum hm_err add_item(struct pk *P, struct pk_val *c, struct pk_val *item)
{
	if (c->n == c->cap) {
		uint32_t cap = c->cap ? 2 * c->cap : 4;
		struct pk_val **it;
		if (P->nitems + (cap - c->cap) > PK_MAX_ITEMS)
			return bad(P, "more than %u container slots", PK_MAX_ITEMS);
		if (!(it = realloc(c->p.items, (size_t)cap * sizeof(*it))))
			return nomem(P);
		P->nitems += cap - c->cap;
		c->p.items = it;
		c->cap = cap;
	}
	c->p.items[c->n++] = item;
	return HM_OK;
}

static enum hm_err need(struct pk *P, size_t n)
{
	if (n > P->len - P->pos)
		return bad(P, "truncated: %zu more bytes needed, %zu left", n, P->len - P->pos);
	return HM_OK;
}

static uint64_t rd_le(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static enum hm_err push_int(struct pk *P, int64_t i)
{
	struct pk_val *v = NULL;
	enum hm_err err = new_val(P, PK_INT, &v);
	if (err)
		return err;
	v->u.i = i;
	return push(P, v);
}

/* A string or bytes value of n bytes at the read position. */
static enum hm_err push_bytes(struct pk *P, enum pk_kind kind, uint64_t n)
{
	struct pk_val *v = NULL;
	enum hm_err err;
	if (n > P->len - P->pos)
		return bad(P, "string of %" PRIu64 " bytes, only %zu left", n, P->len - P->pos);
	if ((err = new_val(P, kind, &v)))
		return err;
	if (!(v->p.s = malloc((size_t)n + 1)))
		return nomem(P);
	memcpy(v->p.s, P->in + P->pos, (size_t)n);
	v->p.s[n] = 0;
	v->u.len = n;
	P->pos += (size_t)n;
	return push(P, v);
}

/* Builds a tuple of stack[from .. sp) and leaves it in their place. */
static enum hm_err make_tuple(struct pk *P, size_t from)
{
	struct pk_val *t = NULL;
	enum hm_err err = new_val(P, PK_TUPLE, &t);
	for (size_t i = from; !err && i < P->sp; i++)
		err = add_item(P, t, P->stack[i]);
	if (err)
		return err;
	P->sp = from;
	return push(P, t);
}

static const struct {
	const char *name;
	enum fmt_dtype dtype;
} storages[] = {
	{"FloatStorage", FMT_F32}, {"HalfStorage", FMT_F16}, {"BFloat16Storage", FMT_BF16},
	{"DoubleStorage", FMT_F64}, {"LongStorage", FMT_I64}, {"IntStorage", FMT_I32},
	{"ShortStorage", FMT_I16}, {"CharStorage", FMT_I8}, {"ByteStorage", FMT_U8},
	{"BoolStorage", FMT_BOOL},
}, dtypes[] = {
	{"float32", FMT_F32}, {"float", FMT_F32}, {"float16", FMT_F16}, {"half", FMT_F16},
	{"bfloat16", FMT_BF16}, {"float64", FMT_F64}, {"double", FMT_F64}, {"int64", FMT_I64},
	{"long", FMT_I64}, {"int32", FMT_I32}, {"int", FMT_I32}, {"int16", FMT_I16},
	{"short", FMT_I16}, {"int8", FMT_I8}, {"uint8", FMT_U8}, {"bool", FMT_BOOL},
};

/* Resolves module.name against the allow-list into an inert tag. */
static enum hm_err push_global(struct pk *P, const char *mod, size_t modlen, const char *name, size_t namelen)
{
	static const struct {
		const char *mod, *name;
		enum pk_global gid;
	} funcs[] = {
		{"collections", "OrderedDict", G_ODICT},
		{"torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2},
		{"torch._utils", "_rebuild_parameter", G_REBUILD_PARAM},
		{"torch._utils", "_rebuild_parameter_with_state", G_REBUILD_PARAM_STATE},
		{"torch", "Size", G_SIZE},
	};
	struct pk_val *v = NULL;
	enum hm_err err;
	char a[128], b[128];
	int gid = -1, dtype = 0;
	const char *dotted = NULL;
	/* Lengths are compared first: names may hold NUL bytes. */
#define IS(s, n, lit) ((n) == strlen(lit) && memcmp((s), (lit), (n)) == 0)
	for (size_t i = 0; gid < 0 && i < sizeof(funcs) / sizeof(funcs[0]); i++)
		if (IS(mod, modlen, funcs[i].mod) && IS(name, namelen, funcs[i].name)) {
			gid = (int)funcs[i].gid;
			dotted = funcs[i].name;
		}
	if (gid < 0 && IS(mod, modlen, "torch")) {
		for (size_t i = 0; gid < 0 && i < sizeof(storages) / sizeof(storages[0]); i++)
			if (IS(name, namelen, storages[i].name)) {
				gid = G_STORAGE;
				dtype = (int)storages[i].dtype;
				dotted = storages[i].name;
			}
		for (size_t i = 0; gid < 0 && i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
			if (IS(name, namelen, dtypes[i].name)) {
				gid = G_DTYPE;
				dtype = (int)dtypes[i].dtype;
				dotted = dtypes[i].name;
			}
	}
#undef IS
	if (gid < 0)
		return bad(P, "refusing to load global '%s.%s' (only tensors and dicts are allowed)",
			   fmt_shown(mod, modlen, a, sizeof(a)), fmt_shown(name, namelen, b, sizeof(b)));
	if ((err = new_val(P, PK_GLOBAL, &v)))
		return err;
	v->gid = (uint8_t)gid;
	v->dtype = (uint8_t)dtype;
	v->p.name = dotted;
	return push(P, v);
}

/* GLOBAL: "module\nname\n" in the opcode stream. */
static enum hm_err op_global(struct pk *P)
{
	const char *line[2];
	size_t n[2];
	for (int k = 0; k < 2; k++) {
		const unsigned char *nl;
		size_t left = P->len - P->pos, max = left < PK_MAX_GLOBAL + 1 ? left : PK_MAX_GLOBAL + 1;
		if (!(nl = memchr(P->in + P->pos, '\n', max)))
			return bad(P, "GLOBAL without a newline within %d bytes", PK_MAX_GLOBAL);
		line[k] = (const char *)P->in + P->pos;
		n[k] = (size_t)(nl - (P->in + P->pos));
		P->pos += n[k] + 1;
	}
	return push_global(P, line[0], n[0], line[1], n[1]);
}

static enum hm_err op_stack_global(struct pk *P)
{
	struct pk_val *mod = NULL, *name = NULL;
	enum hm_err err;
	if ((err = pop(P, &name)) || (err = pop(P, &mod)))
		return err;
	if (mod->kind != PK_STR || name->kind != PK_STR)
		return bad(P, "STACK_GLOBAL of a %s and a %s", kind_names[mod->kind], kind_names[name->kind]);
	return push_global(P, mod->p.s, (size_t)mod->u.len, name->p.s, (size_t)name->u.len);
}

static int is_str(const struct pk_val *v, const char *s)
{
	return v->kind == PK_STR && v->u.len == strlen(s) && memcmp(v->p.s, s, (size_t)v->u.len) == 0;
}

/* BINPERSID: ('storage', <storage type or dtype>, key, location, numel) -> a storage. */
static enum hm_err op_persid(struct pk *P)
{
	struct pk_val *pid = NULL, *v = NULL, **it;
	enum hm_err err;
	if ((err = pop(P, &pid)))
		return err;
	if (pid->kind != PK_TUPLE || pid->n != 5 || !is_str(pid->p.items[0], "storage"))
		return bad(P, "persistent id is not a ('storage', type, key, location, numel) tuple");
	it = pid->p.items;
	if (it[1]->kind != PK_GLOBAL || (it[1]->gid != G_STORAGE && it[1]->gid != G_DTYPE))
		return bad(P, "persistent id: storage type is a %s, not a torch storage type or dtype",
			   kind_names[it[1]->kind]);
	if (it[2]->kind != PK_STR || it[2]->u.len == 0 || it[2]->u.len > PK_MAX_KEY)
		return bad(P, "persistent id: storage key is not a short string");
	for (size_t i = 0; i < it[2]->u.len; i++) {
		char c = it[2]->p.s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'))
			return bad(P, "persistent id: storage key has a byte other than [A-Za-z0-9_]");
	}
	if (it[3]->kind != PK_STR)
		return bad(P, "persistent id: location is not a string");
	if (it[4]->kind != PK_INT || it[4]->u.i < 0)
		return bad(P, "persistent id: storage size is not a non-negative int");
	if ((err = new_val(P, PK_STORAGE, &v)))
		return err;
	if (!(v->p.s = util_strdup(it[2]->p.s)))
		return nomem(P);
	v->u.i = it[4]->u.i;
	v->dtype = it[1]->dtype;
	return push(P, v);
}

/* A tuple of ints (a size or a stride) into out[]. */
static enum hm_err int_tuple(struct pk *P, const struct pk_val *v, const char *what, int64_t *out, int *n)
{
	if (v->kind != PK_TUPLE)
		return bad(P, "tensor %s is a %s, not a tuple", what, kind_names[v->kind]);
	if (v->n > FMT_MAX_DIMS)
		return bad(P, "tensor %s has %u dimensions (at most %d)", what, v->n, FMT_MAX_DIMS);
	for (uint32_t i = 0; i < v->n; i++) {
		if (v->p.items[i]->kind != PK_INT)
			return bad(P, "tensor %s holds a %s", what, kind_names[v->p.items[i]->kind]);
		out[i] = v->p.items[i]->u.i;
	}
	*n = (int)v->n;
	return HM_OK;
}

static int empty_or_none(const struct pk_val *v)
{
	return v->kind == PK_NONE || (v->kind == PK_DICT && v->n == 0);
}

/* REDUCE: calls nothing; maps the few allowed callables onto values. */
static enum hm_err op_reduce(struct pk *P)
{
	struct pk_val *args = NULL, *fn = NULL, *v = NULL;
	struct pk_tensor *t;
	enum hm_err err;
	if ((err = pop(P, &args)) || (err = pop(P, &fn)))
		return err;
	if (fn->kind != PK_GLOBAL)
		return bad(P, "REDUCE on a %s", kind_names[fn->kind]);
	if (args->kind != PK_TUPLE)
		return bad(P, "REDUCE arguments are a %s, not a tuple", kind_names[args->kind]);
	switch (fn->gid) {
	case G_ODICT:
		if (args->n != 0)
			return bad(P, "OrderedDict called with arguments");
		if ((err = new_val(P, PK_DICT, &v)))
			return err;
		return push(P, v);
	case G_SIZE:
		if (args->n != 1 || args->p.items[0]->kind != PK_TUPLE)
			return bad(P, "torch.Size called with something other than one tuple");
		return push(P, args->p.items[0]);
	case G_REBUILD_PARAM:
	case G_REBUILD_PARAM_STATE:
		if (args->n != (fn->gid == G_REBUILD_PARAM ? 3u : 4u) || args->p.items[0]->kind != PK_TENSOR)
			return bad(P, "%s called with unexpected arguments", fn->p.name);
		if (!empty_or_none(args->p.items[2]))
			return bad(P, "%s with backward hooks", fn->p.name);
		return push(P, args->p.items[0]);
	case G_REBUILD_V2:
		/* (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) */
		if (args->n != 6 && args->n != 7)
			return bad(P, "_rebuild_tensor_v2 called with %u arguments", args->n);
		if (args->p.items[0]->kind != PK_STORAGE)
			return bad(P, "_rebuild_tensor_v2 of a %s, not a storage", kind_names[args->p.items[0]->kind]);
		if (args->p.items[1]->kind != PK_INT)
			return bad(P, "tensor storage offset is a %s", kind_names[args->p.items[1]->kind]);
		if (args->p.items[4]->kind != PK_BOOL)
			return bad(P, "tensor requires_grad is a %s", kind_names[args->p.items[4]->kind]);
		if (!empty_or_none(args->p.items[5]))
			return bad(P, "tensor with backward hooks");
		if (args->n == 7 && args->p.items[6]->kind != PK_NONE && args->p.items[6]->kind != PK_DICT)
			return bad(P, "tensor metadata is a %s", kind_names[args->p.items[6]->kind]);
		if ((err = new_val(P, PK_TENSOR, &v)))
			return err;
		if (!(t = v->p.t = calloc(1, sizeof(*t))))
			return nomem(P);
		t->storage = args->p.items[0];
		t->offset = args->p.items[1]->u.i;
		if ((err = int_tuple(P, args->p.items[2], "size", t->size, &t->ndim)) ||
		    (err = int_tuple(P, args->p.items[3], "stride", t->stride, &t->nstride)))
			return err;
		return push(P, v);
	default:
		return bad(P, "global 'torch.%s' cannot be called", fn->p.name);
	}
}

static enum hm_err op_build(struct pk *P)
{
	struct pk_val *state = NULL, *obj = NULL;
	enum hm_err err;
	if ((err = pop(P, &state)) || (err = top(P, &obj)))
		return err;
	/* An OrderedDict's __dict__ (state_dict()'s _metadata): kept out of the result. */
	if (obj->kind == PK_DICT && (state->kind == PK_NONE || state->kind == PK_DICT))
		return HM_OK;
	return bad(P, "BUILD on a %s with a %s state (only a dict's attributes are allowed)",
		   kind_names[obj->kind], kind_names[state->kind]);
}

static enum hm_err memo_put(struct pk *P, uint64_t idx)
{
	struct pk_val *v = NULL;
	enum hm_err err;
	if ((err = top(P, &v)))
		return err;
	/* Picklers number memo entries 0, 1, 2 ...: allow only existing or next. */
	if (idx > P->nmemo)
		return bad(P, "memo index %" PRIu64 " out of order (next is %zu)", idx, P->nmemo);
	if (idx == P->nmemo) {
		if (P->nmemo >= PK_MAX_MEMO)
			return bad(P, "more than %u memo entries", PK_MAX_MEMO);
		if (P->nmemo == P->memo_cap) {
			size_t cap = P->memo_cap ? 2 * P->memo_cap : 256;
			struct pk_val **m = realloc(P->memo, cap * sizeof(*m));
			if (!m)
				return nomem(P);
			P->memo = m;
			P->memo_cap = cap;
		}
		P->nmemo++;
	}
	P->memo[idx] = v;
	return HM_OK;
}

static enum hm_err memo_get(struct pk *P, uint64_t idx)
{
	if (idx >= P->nmemo)
		return bad(P, "memo index %" PRIu64 " out of range (%zu entries)", idx, P->nmemo);
	return push(P, P->memo[idx]);
}

/* The container an item-adding opcode works on: stack[from - 1]. */
static enum hm_err target(struct pk *P, size_t from, enum pk_kind kind, const char *op, struct pk_val **out)
{
	if (from == 0 || from - 1 < floor_of(P))
		return bad(P, "stack underflow");
	*out = P->stack[from - 1];
	if ((*out)->kind != kind)
		return bad(P, "%s on a %s", op, kind_names[(*out)->kind]);
	return HM_OK;
}

static enum hm_err set_items(struct pk *P, size_t from)
{
	struct pk_val *d = NULL;
	enum hm_err err;
	if ((P->sp - from) % 2)
		return bad(P, "SETITEMS with an odd number of items");
	if ((err = target(P, from, PK_DICT, "SETITEM", &d)))
		return err;
	for (size_t i = from; i < P->sp; i++)
		if ((err = add_item(P, d, P->stack[i])))
			return err;
	P->sp = from;
	return HM_OK;
}

static enum hm_err append_items(struct pk *P, size_t from)
{
	struct pk_val *l = NULL;
	enum hm_err err;
	if ((err = target(P, from, PK_LIST, "APPEND", &l)))
		return err;
	for (size_t i = from; i < P->sp; i++)
		if ((err = add_item(P, l, P->stack[i])))
			return err;
	P->sp = from;
	return HM_OK;
}

/* Opcodes that push a number, a constant or a string (*mine = 0 for others). */
static enum hm_err op_scalar(struct pk *P, unsigned char op, int *mine)
{
	enum hm_err err;
	struct pk_val *v = NULL;
	*mine = 1;
	switch (op) {
	case 'J': /* BININT */
		if ((err = need(P, 4)))
			return err;
		P->pos += 4;
		return push_int(P, (int32_t)(uint32_t)rd_le(P->in + P->pos - 4, 4));
	case 'K': /* BININT1 */
		if ((err = need(P, 1)))
			return err;
		return push_int(P, P->in[P->pos++]);
	case 'M': /* BININT2 */
		if ((err = need(P, 2)))
			return err;
		P->pos += 2;
		return push_int(P, (int64_t)rd_le(P->in + P->pos - 2, 2));
	case 0x8a: { /* LONG1: little-endian two's complement */
		unsigned n;
		uint64_t u;
		if ((err = need(P, 1)))
			return err;
		n = P->in[P->pos++];
		if (n > 8)
			return bad(P, "integer of %u bytes (at most 8)", n);
		if ((err = need(P, n)))
			return err;
		u = rd_le(P->in + P->pos, (int)n);
		if (n && n < 8 && (P->in[P->pos + n - 1] & 0x80))
			u |= ~(uint64_t)0 << (8 * n);
		P->pos += n;
		return push_int(P, (int64_t)u);
	}
	case 'G': { /* BINFLOAT: big-endian double */
		uint64_t u = 0;
		if ((err = need(P, 8)) || (err = new_val(P, PK_FLOAT, &v)))
			return err;
		for (int i = 0; i < 8; i++)
			u = (u << 8) | P->in[P->pos++];
		memcpy(&v->u.f, &u, sizeof(u));
		return push(P, v);
	}
	case 0x88: /* NEWTRUE */
		return push(P, &P->yes);
	case 0x89: /* NEWFALSE */
		return push(P, &P->no);
	case 'N':
		return push(P, &P->none);
	case 0x8c: /* SHORT_BINUNICODE */
	case 'U':  /* SHORT_BINSTRING */
	case 'C':  /* SHORT_BINBYTES */
		if ((err = need(P, 1)))
			return err;
		P->pos++;
		return push_bytes(P, op == 'C' ? PK_BYTES : PK_STR, P->in[P->pos - 1]);
	case 'X':  /* BINUNICODE */
	case 'T':  /* BINSTRING (a signed length) */
	case 'B':  /* BINBYTES */
		if ((err = need(P, 4)))
			return err;
		P->pos += 4;
		if (op == 'T' && (P->in[P->pos - 1] & 0x80))
			return bad(P, "negative string length");
		return push_bytes(P, op == 'B' ? PK_BYTES : PK_STR, rd_le(P->in + P->pos - 4, 4));
	case 0x8d: /* BINUNICODE8 */
	case 0x8e: /* BINBYTES8 */
		if ((err = need(P, 8)))
			return err;
		P->pos += 8;
		return push_bytes(P, op == 0x8e ? PK_BYTES : PK_STR, rd_le(P->in + P->pos - 8, 8));
	default:
		*mine = 0;
		return HM_OK;
	}
}

/* Opcodes that build dicts, lists and tuples (*mine = 0 for others). */
static enum hm_err op_container(struct pk *P, unsigned char op, int *mine)
{
	enum hm_err err;
	struct pk_val *v = NULL;
	size_t from = 0;
	*mine = 1;
	switch (op) {
	case '}': /* EMPTY_DICT */
	case ']': /* EMPTY_LIST */
	case ')': /* EMPTY_TUPLE */
		if ((err = new_val(P, op == '}' ? PK_DICT : op == ']' ? PK_LIST : PK_TUPLE, &v)))
			return err;
		return push(P, v);
	case 'd': /* DICT */
	case 'l': /* LIST */
		if ((err = pop_mark(P, &from)) || (err = new_val(P, op == 'd' ? PK_DICT : PK_LIST, &v)))
			return err;
		if (op == 'd' && (P->sp - from) % 2)
			return bad(P, "DICT with an odd number of items");
		for (size_t i = from; i < P->sp; i++)
			if ((err = add_item(P, v, P->stack[i])))
				return err;
		P->sp = from;
		return push(P, v);
	case 't': /* TUPLE */
		if ((err = pop_mark(P, &from)))
			return err;
		return make_tuple(P, from);
	case 0x85: /* TUPLE1..3 */
	case 0x86:
	case 0x87:
		if (P->sp - floor_of(P) < (size_t)(op - 0x84))
			return bad(P, "stack underflow");
		return make_tuple(P, P->sp - (size_t)(op - 0x84));
	case 's': /* SETITEM */
		if (P->sp - floor_of(P) < 3)
			return bad(P, "stack underflow");
		return set_items(P, P->sp - 2);
	case 'u': /* SETITEMS */
		if ((err = pop_mark(P, &from)))
			return err;
		return set_items(P, from);
	case 'a': /* APPEND */
		if (P->sp - floor_of(P) < 2)
			return bad(P, "stack underflow");
		return append_items(P, P->sp - 1);
	case 'e': /* APPENDS */
		if ((err = pop_mark(P, &from)))
			return err;
		return append_items(P, from);
	default:
		*mine = 0;
		return HM_OK;
	}
}

/* One opcode; *done at STOP with the result on the stack. */
static enum hm_err step(struct pk *P, int *done)
{
	unsigned char op;
	enum hm_err err;
	struct pk_val *v = NULL;
	size_t from = 0;
	int mine = 0;
	P->op_pos = P->pos;
	if (P->pos >= P->len)
		return bad(P, "truncated: no STOP opcode");
	op = P->in[P->pos++];
	switch (op) {
	case 0x80: /* PROTO */
		if ((err = need(P, 1)))
			return err;
		if (P->in[P->pos] > 5)
			return bad(P, "pickle protocol %u", P->in[P->pos]);
		P->pos++;
		return HM_OK;
	case 0x95: /* FRAME: a length hint only */
		if ((err = need(P, 8)))
			return err;
		if (rd_le(P->in + P->pos, 8) > P->len - P->pos - 8)
			return bad(P, "FRAME longer than the rest of the pickle");
		P->pos += 8;
		return HM_OK;
	case '.': /* STOP */
		if ((err = top(P, &v)))
			return err;
		*done = 1;
		return HM_OK;
	case '(': /* MARK */
		if (P->nmarks == PK_MAX_MARKS)
			return bad(P, "MARKs nested deeper than %d", PK_MAX_MARKS);
		P->marks[P->nmarks++] = P->sp;
		return HM_OK;
	case '0': /* POP */
		if (P->nmarks && P->marks[P->nmarks - 1] == P->sp) { /* pops a mark */
			P->nmarks--;
			return HM_OK;
		}
		return pop(P, &v);
	case '1': /* POP_MARK */
		if ((err = pop_mark(P, &from)))
			return err;
		P->sp = from;
		return HM_OK;
	case 'c':
		return op_global(P);
	case 0x93:
		return op_stack_global(P);
	case 'q': /* BINPUT */
		if ((err = need(P, 1)))
			return err;
		return memo_put(P, P->in[P->pos++]);
	case 'r': /* LONG_BINPUT */
		if ((err = need(P, 4)))
			return err;
		P->pos += 4;
		return memo_put(P, rd_le(P->in + P->pos - 4, 4));
	case 0x94: /* MEMOIZE */
		return memo_put(P, P->nmemo);
	case 'h': /* BINGET */
		if ((err = need(P, 1)))
			return err;
		return memo_get(P, P->in[P->pos++]);
	case 'j': /* LONG_BINGET */
		if ((err = need(P, 4)))
			return err;
		P->pos += 4;
		return memo_get(P, rd_le(P->in + P->pos - 4, 4));
	case 'R':
		return op_reduce(P);
	case 'b':
		return op_build(P);
	case 'Q':
		return op_persid(P);
	default:
		err = op_scalar(P, op, &mine);
		if (mine)
			return err;
		err = op_container(P, op, &mine);
		if (mine)
			return err;
		return bad(P, "unsupported pickle opcode 0x%02x%s%c%s", op, op >= 0x20 && op < 0x7f ? " ('" : "",
			   op >= 0x20 && op < 0x7f ? op : ' ', op >= 0x20 && op < 0x7f ? "')" : "");
	}
}

/* Checks one state-dict entry and fills out (strings not yet copied). */
static enum hm_err check_tensor(struct pk *P, const struct pk_val *key, const struct pk_val *val, struct fmt_pt_tensor *out)
{
	char nb[128];
	const char *name;
	const struct pk_tensor *t;
	uint64_t nelem = 1, expect = 1, esize, end;
	if (key->kind != PK_STR)
		return hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': the state dict has a %s key, not a string", P->file,
			       kind_names[key->kind]);
	name = fmt_shown(key->p.s, (size_t)key->u.len, nb, sizeof(nb));
	if (!key->u.len || memchr(key->p.s, 0, (size_t)key->u.len) ||
	    !util_utf8_valid((const unsigned char *)key->p.s, (size_t)key->u.len))
		return hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': tensor name '%s' is empty, holds a NUL or is not UTF-8",
			       P->file, name);
	if (val->kind != PK_TENSOR)
		return hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': state dict entry '%s' is a %s, not a tensor", P->file,
			       name, kind_names[val->kind]);
	t = val->p.t;
	if (t->nstride != t->ndim)
		return hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' has %d sizes but %d strides", P->file,
			       name, t->ndim, t->nstride);
	for (int d = 0; d < t->ndim; d++) {
		if (t->size[d] < 0)
			return hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' has a negative size", P->file, name);
		if (t->size[d] && nelem > (UINT64_C(1) << 62) / (uint64_t)t->size[d])
			return hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' is too large", P->file, name);
		nelem *= (uint64_t)t->size[d];
	}
	if (nelem > (UINT64_C(1) << 59)) /* so that nbytes cannot wrap */
		return hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' is too large", P->file, name);
	/* Row-major: each dimension's stride is the product of the faster sizes
	 * (a dimension of size 1 may carry any stride, as torch allows). */
	for (int d = t->ndim - 1; d >= 0 && nelem; d--) {
		if (t->size[d] != 1 && (t->stride[d] < 0 || (uint64_t)t->stride[d] != expect))
			return hm_fail(P->ctx, HM_ERR_BAD_INPUT,
				       "'%s': tensor '%s' is not contiguous (dimension %d has stride %" PRId64
				       ", row-major needs %" PRIu64 ")", P->file, name, d, t->stride[d], expect);
		expect *= (uint64_t)t->size[d];
	}
	if (t->offset < 0)
		return hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' has a negative storage offset", P->file, name);
	end = (uint64_t)t->offset + nelem;
	if (end < nelem || end > (uint64_t)t->storage->u.i)
		return hm_fail(P->ctx, HM_ERR_BAD_INPUT,
			       "'%s': tensor '%s' (offset %" PRId64 ", %" PRIu64 " elements) runs past its storage of %"
			       PRId64 " elements", P->file, name, t->offset, nelem, t->storage->u.i);
	memset(out, 0, sizeof(*out));
	out->dtype = (enum fmt_dtype)t->storage->dtype;
	esize = fmt_dtype_bits(out->dtype) / 8;
	out->ndim = t->ndim;
	for (int d = 0; d < t->ndim; d++)
		out->shape[d] = (uint64_t)t->size[d];
	out->nelem = nelem;
	out->nbytes = nelem * esize;
	out->storage_numel = (uint64_t)t->storage->u.i;
	out->offset = (uint64_t)t->offset;
	return HM_OK;
}

void fmt_pt_pickle_free(struct fmt_pt_pickle *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++) {
		free((char *)p->t[i].name);
		free((char *)p->t[i].storage);
	}
	free(p->t);
	free(p);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Copies the state dict's tensors out of the interpreter's values. */
static enum hm_err collect(struct pk *P, const struct pk_val *d, struct fmt_pt_pickle **out)
{
	struct fmt_pt_pickle *p = NULL;
	enum hm_err err = HM_OK;
	size_t n;
	if (d->kind != PK_DICT)
		return hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': the pickle holds a %s, not a dict of tensors", P->file,
			       kind_names[d->kind]);
	n = d->n / 2;
	if (n > FMT_PT_MAX_TENSORS)
		return hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': more than %u tensors", P->file, FMT_PT_MAX_TENSORS);
	if (!(p = calloc(1, sizeof(*p))) || !(p->t = calloc(n ? n : 1, sizeof(*p->t)))) {
		free(p);
		return nomem(P);
	}
	for (size_t i = 0; i < n; i++) {
		const struct pk_val *k = d->p.items[2 * i];
		struct fmt_pt_tensor *t = &p->t[i];
		if ((err = check_tensor(P, k, d->p.items[2 * i + 1], t)))
			goto out;
		p->n = i + 1; /* owns its strings from here */
		if (!(t->name = util_strdup(k->p.s)) ||
		    !(t->storage = util_strdup(d->p.items[2 * i + 1]->p.t->storage->p.s))) {
			err = nomem(P);
			goto out;
		}
	}
	/* Duplicate names: a dict would keep the last; refuse rather than guess. */
	if (n > 1) {
		const char **names = malloc(n * sizeof(*names));
		if (!names) {
			err = nomem(P);
			goto out;
		}
		for (size_t i = 0; i < n; i++)
			names[i] = p->t[i].name;
		qsort(names, n, sizeof(*names), cmp_names);
		for (size_t i = 1; i < n && !err; i++)
			if (strcmp(names[i - 1], names[i]) == 0) {
				char nb[128];
				err = hm_fail(P->ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' appears twice", P->file,
					      fmt_shown(names[i], strlen(names[i]), nb, sizeof(nb)));
			}
		free(names);
	}
out:
	if (err) {
		fmt_pt_pickle_free(p);
		return err;
	}
	*out = p;
	return HM_OK;
}

enum hm_err fmt_pt_pickle_parse(struct hm_ctx *ctx, const char *file, const void *data, size_t len,
				struct fmt_pt_pickle **out)
{
	struct pk P;
	enum hm_err err;
	int done = 0;
	*out = NULL;
	memset(&P, 0, sizeof(P));
	P.ctx = ctx;
	P.file = file;
	P.in = data;
	P.len = len;
	P.none.kind = PK_NONE;
	P.yes.kind = P.no.kind = PK_BOOL;
	P.yes.u.i = 1;
	while (!done)
		if ((err = step(&P, &done)))
			goto out;
	err = collect(&P, P.stack[P.sp - 1], out);
out:
	pk_release(&P);
	return err;
}

size_t fmt_pt_pickle_count(const struct fmt_pt_pickle *p)
{
	return p ? p->n : 0;
}

const struct fmt_pt_tensor *fmt_pt_pickle_tensor(const struct fmt_pt_pickle *p, size_t i)
{
	return p && i < p->n ? &p->t[i] : NULL;
}
