/* test_torch.c - the restricted unpickler on hand-assembled pickles (what
 * torch.save emits, and what it must refuse), torch zips written here with
 * libarchive, and their conversion to safetensors read back. */
#include <archive.h>
#include <archive_entry.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "unit.h"
#include "../../util/util.h"
#include "../../formats/formats-int.h" /* the single-file reader and the safetensors writer */
#include "../../formats/torch-int.h" /* the reader itself */

/* ---- a pickle assembler ---- */

struct pb {
	unsigned char b[65536];
	size_t n;
};

static void op(struct pb *p, int c)
{
	p->b[p->n++] = (unsigned char)c;
}

static void raw(struct pb *p, const void *d, size_t n)
{
	memcpy(p->b + p->n, d, n);
	p->n += n;
}

static void u32(struct pb *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		op(p, (int)(v >> (8 * i)) & 0xff);
}

static void str(struct pb *p, const char *s)
{
	op(p, 'X');
	u32(p, (uint32_t)strlen(s));
	raw(p, s, strlen(s));
}

static void num(struct pb *p, long v)
{
	if (v >= 0 && v < 256) {
		op(p, 'K');
		op(p, (int)v);
	} else {
		op(p, 'J');
		u32(p, (uint32_t)v);
	}
}

static void global(struct pb *p, const char *mod, const char *name)
{
	op(p, 'c');
	raw(p, mod, strlen(mod));
	op(p, '\n');
	raw(p, name, strlen(name));
	op(p, '\n');
}

static void begin(struct pb *p)
{
	p->n = 0;
	op(p, 0x80);
	op(p, 2);
	global(p, "collections", "OrderedDict");
	op(p, ')');
	op(p, 'R');
	op(p, '(');
}

static void end(struct pb *p)
{
	op(p, 'u');
	op(p, '.');
}

/* name -> _rebuild_tensor_v2(('storage', torch.<st>, key, 'cpu', numel), off, size, stride, False, OrderedDict()) */
static void tensor(struct pb *p, const char *name, const char *st, const char *key, long numel, long off, int ndim,
		   const long *size, const long *stride)
{
	str(p, name);
	global(p, "torch._utils", "_rebuild_tensor_v2");
	op(p, '(');
	op(p, '(');
	str(p, "storage");
	global(p, "torch", st);
	str(p, key);
	str(p, "cpu");
	num(p, numel);
	op(p, 't');
	op(p, 'Q');
	num(p, off);
	op(p, '(');
	for (int i = 0; i < ndim; i++)
		num(p, size[i]);
	op(p, 't');
	op(p, '(');
	for (int i = 0; i < ndim; i++)
		num(p, stride[i]);
	op(p, 't');
	op(p, 0x89);
	global(p, "collections", "OrderedDict");
	op(p, ')');
	op(p, 'R');
	op(p, 't');
	op(p, 'R');
}

static const long S23[] = {2, 3}, R23[] = {3, 1}, S4[] = {4}, R4[] = {1};

/* Parses p and expects a refusal whose message holds needle. */
static int refuses(const struct pb *p, const char *needle)
{
	struct hm_ctx ctx = {0};
	struct fmt_pt_pickle *pk = NULL;
	enum hm_err err = fmt_pt_pickle_parse(&ctx, "pytorch_model.bin", p->b, p->n, &pk);
	fmt_pt_pickle_free(pk);
	if (err != HM_ERR_BAD_INPUT || !strstr(ctx.errmsg, needle) || !strstr(ctx.errmsg, "'pytorch_model.bin'")) {
		printf("  got %d '%s', wanted '%s'\n", err, ctx.errmsg, needle);
		return 0;
	}
	return 1;
}

UNIT_TEST(torch_pickle_state_dict)
{
	struct pb p;
	struct hm_ctx ctx = {0};
	struct fmt_pt_pickle *pk = NULL;
	const struct fmt_pt_tensor *t;
	begin(&p);
	tensor(&p, "w", "FloatStorage", "0", 6, 0, 2, S23, R23);
	tensor(&p, "b", "HalfStorage", "1", 8, 4, 1, S4, R4);
	tensor(&p, "typed", "bfloat16", "2", 4, 0, 1, S4, R4); /* newer typed-storage form */
	end(&p);
	CHECK(fmt_pt_pickle_parse(&ctx, "x.bin", p.b, p.n, &pk) == HM_OK);
	CHECK(fmt_pt_pickle_count(pk) == 3);
	CHECK(fmt_pt_pickle_tensor(pk, 2)->dtype == FMT_BF16);
	t = fmt_pt_pickle_tensor(pk, 0);
	CHECK_STR(t->name, "w");
	CHECK(t->dtype == FMT_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
	CHECK(t->nelem == 6 && t->nbytes == 24 && t->offset == 0 && t->storage_numel == 6);
	CHECK_STR(t->storage, "0");
	t = fmt_pt_pickle_tensor(pk, 1);
	CHECK_STR(t->name, "b");
	CHECK(t->dtype == FMT_F16 && t->nbytes == 8 && t->offset == 4);
	fmt_pt_pickle_free(pk);
}

UNIT_TEST(torch_pickle_refuses_code)
{
	struct pb p;
	/* os.system('touch x') as a state dict value */
	begin(&p);
	str(&p, "w");
	global(&p, "os", "system");
	str(&p, "touch x");
	op(&p, 0x85);
	op(&p, 'R');
	end(&p);
	CHECK(refuses(&p, "refusing to load global 'os.system' (only tensors and dicts are allowed)"));
	/* builtins.eval through STACK_GLOBAL (protocol 4) */
	p.n = 0;
	op(&p, 0x80);
	op(&p, 4);
	op(&p, 0x8c);
	op(&p, 8);
	raw(&p, "builtins", 8);
	op(&p, 0x8c);
	op(&p, 4);
	raw(&p, "eval", 4);
	op(&p, 0x93);
	CHECK(refuses(&p, "refusing to load global 'builtins.eval'"));
	/* a module that merely starts like an allowed one */
	p.n = 0;
	global(&p, "torch._utils_evil", "_rebuild_tensor_v2");
	CHECK(refuses(&p, "refusing to load global 'torch._utils_evil._rebuild_tensor_v2'"));
	/* an allowed name, called when it must not be */
	p.n = 0;
	global(&p, "torch", "FloatStorage");
	op(&p, ')');
	op(&p, 'R');
	CHECK(refuses(&p, "cannot be called"));
	/* INST, OBJ, NEWOBJ: never */
	p.n = 0;
	op(&p, 'i');
	CHECK(refuses(&p, "unsupported pickle opcode 0x69"));
	p.n = 0;
	op(&p, 0x81);
	CHECK(refuses(&p, "unsupported pickle opcode 0x81"));
}

UNIT_TEST(torch_pickle_refuses_malformed)
{
	struct pb p;
	long bad_stride[] = {1, 2};
	/* truncated in the middle */
	begin(&p);
	str(&p, "weight");
	p.n -= 2;
	CHECK(refuses(&p, "string of 6 bytes, only 4 left"));
	begin(&p);
	op(&p, 'J');
	op(&p, 1);
	CHECK(refuses(&p, "truncated"));
	/* no STOP */
	begin(&p);
	CHECK(refuses(&p, "no STOP"));
	/* memo index out of range */
	p.n = 0;
	op(&p, 'h');
	op(&p, 7);
	CHECK(refuses(&p, "memo index 7 out of range"));
	p.n = 0;
	op(&p, 'N');
	op(&p, 'r');
	u32(&p, 0xfffffff0u);
	CHECK(refuses(&p, "out of order"));
	/* a string longer than the input */
	p.n = 0;
	op(&p, 'X');
	u32(&p, 0xffffffffu);
	CHECK(refuses(&p, "string of 4294967295 bytes"));
	p.n = 0;
	op(&p, 0x8d);
	for (int i = 0; i < 8; i++)
		op(&p, 0xff);
	CHECK(refuses(&p, "only 0 left"));
	/* non-contiguous stride */
	begin(&p);
	tensor(&p, "w", "FloatStorage", "0", 6, 0, 2, S23, bad_stride);
	end(&p);
	CHECK(refuses(&p, "tensor 'w' is not contiguous"));
	/* storage offset past the data */
	begin(&p);
	tensor(&p, "w", "FloatStorage", "0", 6, 3, 2, S23, R23);
	end(&p);
	CHECK(refuses(&p, "runs past its storage"));
	/* a storage key that would escape data/ */
	begin(&p);
	tensor(&p, "w", "FloatStorage", "../0", 6, 0, 2, S23, R23);
	end(&p);
	CHECK(refuses(&p, "storage key"));
	/* stack underflow, marks, odd SETITEMS */
	p.n = 0;
	op(&p, 'R');
	CHECK(refuses(&p, "stack underflow"));
	p.n = 0;
	op(&p, 'u');
	CHECK(refuses(&p, "no MARK"));
	begin(&p);
	str(&p, "k");
	end(&p);
	CHECK(refuses(&p, "odd number"));
	/* not a dict of tensors */
	p.n = 0;
	op(&p, ']');
	op(&p, '.');
	CHECK(refuses(&p, "holds a list, not a dict of tensors"));
	begin(&p);
	str(&p, "w");
	num(&p, 3);
	end(&p);
	CHECK(refuses(&p, "entry 'w' is a int, not a tensor"));
	/* a name twice */
	begin(&p);
	tensor(&p, "w", "FloatStorage", "0", 6, 0, 2, S23, R23);
	tensor(&p, "w", "FloatStorage", "0", 6, 0, 2, S23, R23);
	end(&p);
	CHECK(refuses(&p, "appears twice"));
	/* an integer too wide */
	p.n = 0;
	op(&p, 0x8a);
	op(&p, 9);
	CHECK(refuses(&p, "integer of 9 bytes"));
	/* BUILD on something other than a dict */
	p.n = 0;
	op(&p, ']');
	op(&p, '}');
	op(&p, 'b');
	CHECK(refuses(&p, "BUILD on a list"));
	/* deep MARK nesting stops at the cap */
	p.n = 0;
	for (int i = 0; i < 5000; i++)
		op(&p, '(');
	CHECK(refuses(&p, "nested deeper"));
}

/* ---- torch zips written with libarchive ---- */

struct zent {
	const char *name;
	const void *data;
	size_t n;
};

static int write_zip(const char *path, const struct zent *e, size_t n)
{
	struct archive *a = archive_write_new();
	int r = 0;
	archive_write_set_format_zip(a);
	archive_write_set_options(a, "zip:compression=store");
	if (archive_write_open_filename(a, path) != ARCHIVE_OK)
		r = -1;
	for (size_t i = 0; !r && i < n; i++) {
		struct archive_entry *ae = archive_entry_new();
		archive_entry_set_pathname(ae, e[i].name);
		archive_entry_set_filetype(ae, AE_IFREG);
		archive_entry_set_perm(ae, 0644);
		archive_entry_set_size(ae, (la_int64_t)e[i].n);
		if (archive_write_header(a, ae) != ARCHIVE_OK ||
		    (e[i].n && archive_write_data(a, e[i].data, e[i].n) != (la_ssize_t)e[i].n))
			r = -1;
		archive_entry_free(ae);
	}
	if (archive_write_close(a) != ARCHIVE_OK)
		r = -1;
	archive_write_free(a);
	return r;
}

static char pathbuf[4][512];

static const char *tpath(int slot, const char *name)
{
	snprintf(pathbuf[slot], sizeof(pathbuf[slot]), "%s/%s", unit_tmpdir(), name);
	return pathbuf[slot];
}

/* w: F32 [2,3] at storage 0; tied: the same view; tail: F32 [4] at offset 2 of
 * storage 0 (overlapping w); i: I64 [4] in storage 1. */
static int sample_zip(const char *path, float *f, int64_t *q)
{
	static struct pb p;
	long s4[] = {4}, r4[] = {1};
	for (int i = 0; i < 6; i++)
		f[i] = (float)i * 1.5f;
	for (int i = 0; i < 4; i++)
		q[i] = (int64_t)i * -1000000007LL;
	begin(&p);
	tensor(&p, "w", "FloatStorage", "0", 6, 0, 2, S23, R23);
	tensor(&p, "tied", "FloatStorage", "0", 6, 0, 2, S23, R23);
	tensor(&p, "tail", "FloatStorage", "0", 6, 2, 1, s4, r4);
	tensor(&p, "i", "LongStorage", "1", 4, 0, 1, s4, r4);
	end(&p);
	struct zent e[] = {
		{"archive/data.pkl", p.b, p.n},
		{"archive/byteorder", "little", 6},
		{"archive/data/0", f, 24},
		{"archive/data/1", q, 32},
		{"archive/version", "3\n", 2},
	};
	return write_zip(path, e, 5);
}

UNIT_TEST(torch_open_and_read)
{
	struct hm_ctx ctx = {0};
	struct fmt_pt *pt = NULL;
	float f[6], got[6];
	int64_t q[4], gq[4];
	const struct fmt_pt_tensor *t;
	CHECK(sample_zip(tpath(0, "pytorch_model.bin"), f, q) == 0);
	CHECK(fmt_pt_open(&ctx, tpath(0, "pytorch_model.bin"), &pt) == HM_OK);
	CHECK(fmt_pt_count(pt) == 4);
	CHECK((t = fmt_pt_find(pt, "tail")) && t->byte_offset == 8 && t->nbytes == 16 && t->storage_bytes == 24);
	CHECK(fmt_pt_read(pt, 0, got, 24) == HM_OK && !memcmp(got, f, 24));
	CHECK(fmt_pt_read(pt, 2, got, 16) == HM_OK && !memcmp(got, f + 2, 16));
	CHECK(fmt_pt_read(pt, 3, gq, 32) == HM_OK && !memcmp(gq, q, 32));
	CHECK(fmt_pt_read(pt, 3, gq, 8) == HM_ERR_USAGE);
	fmt_pt_close(pt);
}

UNIT_TEST(torch_convert_single_and_sharded)
{
	struct hm_ctx ctx = {0};
	struct fmt_pt_convert_result res;
	struct fmt_pt_convert_opts opts = {0};
	struct fmt_st *st = NULL;
	struct fmt_st_set *set = NULL;
	const struct fmt_st_tensor *t;
	float f[6];
	int64_t q[4];
	CHECK(sample_zip(tpath(0, "pytorch_model.bin"), f, q) == 0);
	CHECK(fmt_pt_to_safetensors(&ctx, unit_tmpdir(), tpath(1, "out"), NULL, &res) == HM_OK);
	CHECK(res.tensors == 4 && res.shards == 1 && res.bytes == 24 + 24 + 16 + 32);
	CHECK(fmt_st_open(&ctx, tpath(2, "out/model.safetensors"), &st) == HM_OK);
	CHECK_STR(fmt_st_meta_get(st, "format"), "pt");
	CHECK((t = fmt_st_find(st, "w")) && t->dtype == FMT_F32 && t->ndim == 2 && !memcmp(t->data, f, 24));
	CHECK((t = fmt_st_find(st, "tied")) && !memcmp(t->data, f, 24));
	CHECK((t = fmt_st_find(st, "tail")) && t->shape[0] == 4 && !memcmp(t->data, f + 2, 16));
	CHECK((t = fmt_st_find(st, "i")) && t->dtype == FMT_I64 && !memcmp(t->data, q, 32));
	fmt_st_close(st);
	/* 40 bytes per file at most, in archive order: tied | w + tail | i */
	opts.max_shard_size = 40;
	CHECK(fmt_pt_to_safetensors(&ctx, tpath(0, "pytorch_model.bin"), tpath(1, "sh"), &opts, &res) == HM_OK);
	CHECK(res.shards == 3);
	CHECK(fmt_st_open_dir(&ctx, tpath(1, "sh"), &set) == HM_OK);
	CHECK(fmt_st_set_nshards(set) == 3 && fmt_st_set_count(set) == 4);
	CHECK(fmt_st_set_total_size(set) == 96);
	CHECK((t = fmt_st_set_find(set, "i")) && !memcmp(t->data, q, 32));
	CHECK((t = fmt_st_set_find(set, "tail")) && !memcmp(t->data, f + 2, 16));
	fmt_st_set_close(set);
}

UNIT_TEST(torch_open_refuses)
{
	struct hm_ctx ctx = {0};
	struct fmt_pt *pt = NULL;
	static struct pb p;
	float f[6] = {0};
	const char *path = tpath(0, "m.bin");
	begin(&p);
	tensor(&p, "w", "FloatStorage", "0", 6, 0, 2, S23, R23);
	end(&p);
	/* data/0 missing */
	struct zent miss[] = {{"archive/data.pkl", p.b, p.n}};
	CHECK(write_zip(path, miss, 1) == 0);
	CHECK(fmt_pt_open(&ctx, path, &pt) == HM_ERR_BAD_INPUT && strstr(ctx.errmsg, "'data/0', which is missing"));
	/* data/0 shorter than the pickle says */
	struct zent shrt[] = {{"archive/data.pkl", p.b, p.n}, {"archive/data/0", f, 20}};
	CHECK(write_zip(path, shrt, 2) == 0);
	CHECK(fmt_pt_open(&ctx, path, &pt) == HM_ERR_BAD_INPUT && strstr(ctx.errmsg, "holds 20 bytes"));
	/* path traversal, mixed prefixes */
	struct zent trav[] = {{"archive/data.pkl", p.b, p.n}, {"archive/../../etc/x", f, 24}};
	CHECK(write_zip(path, trav, 2) == 0);
	CHECK(fmt_pt_open(&ctx, path, &pt) == HM_ERR_BAD_INPUT && strstr(ctx.errmsg, "unsafe"));
	struct zent two[] = {{"archive/data.pkl", p.b, p.n}, {"other/data/0", f, 24}};
	CHECK(write_zip(path, two, 2) == 0);
	CHECK(fmt_pt_open(&ctx, path, &pt) == HM_ERR_BAD_INPUT && strstr(ctx.errmsg, "outside 'archive/'"));
	/* big-endian */
	struct zent be[] = {{"archive/data.pkl", p.b, p.n}, {"archive/byteorder", "big", 3}, {"archive/data/0", f, 24}};
	CHECK(write_zip(path, be, 3) == 0);
	CHECK(fmt_pt_open(&ctx, path, &pt) == HM_ERR_BAD_INPUT && strstr(ctx.errmsg, "byte order 'big'"));
	/* legacy format and garbage */
	CHECK(util_write_file_atomic(path, "\x80\x02\x8a\x0a", 4) == 0);
	CHECK(fmt_pt_open(&ctx, path, &pt) == HM_ERR_BAD_INPUT && strstr(ctx.errmsg, "legacy"));
	CHECK(util_write_file_atomic(path, "PK\3\4garbage", 11) == 0);
	CHECK(fmt_pt_open(&ctx, path, &pt) == HM_ERR_BAD_INPUT && strstr(ctx.errmsg, path));
	CHECK(pt == NULL);
}
