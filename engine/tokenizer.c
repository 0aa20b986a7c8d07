/* tokenizer.c - BPE encoding and decoding for both families: special-token
 * split, SentencePiece normalization or byte-level pre-tokenization, and
 * the merge loop (a heap of candidate pairs, best first, leftmost on ties,
 * as huggingface/tokenizers and llama.cpp both do it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tokenizer-int.h"
#include "../util/util.h"

#define SP_UTF8 "\xe2\x96\x81" /* U+2581, the SentencePiece word marker */

/* ---- maps ---- */

static uint32_t hash_bytes(const char *s, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

static uint32_t table_size(size_t n)
{
	uint32_t sz = 16;
	while (sz < 2 * n + 2)
		sz <<= 1;
	return sz;
}

int tok_build_vocab_map(struct eng_tok *t)
{
	uint32_t sz = table_size(t->n);
	free(t->vslot);
	if (!(t->vslot = calloc(sz, sizeof(*t->vslot))))
		return -1;
	t->vmask = sz - 1;
	/* the lowest id wins for duplicate texts (inserted first) */
	for (uint32_t id = 0; id < t->n; id++) {
		uint32_t h;
		if (!t->len[id] && t->type[id] == ENG_TOK_UNUSED)
			continue;
		h = hash_bytes(t->text[id], t->len[id]) & t->vmask;
		for (;; h = (h + 1) & t->vmask) {
			uint32_t s = t->vslot[h];
			if (!s) {
				t->vslot[h] = id + 1;
				break;
			}
			if (t->len[s - 1] == t->len[id] && !memcmp(t->text[s - 1], t->text[id], t->len[id]))
				break;
		}
	}
	return 0;
}

int32_t eng_tok_find(const struct eng_tok *t, const char *text, size_t len)
{
	uint32_t h;
	if (!t || !t->vslot)
		return -1;
	h = hash_bytes(text, len) & t->vmask;
	for (;; h = (h + 1) & t->vmask) {
		uint32_t s = t->vslot[h];
		if (!s)
			return -1;
		if (t->len[s - 1] == len && !memcmp(t->text[s - 1], text, len))
			return (int32_t)(s - 1);
	}
}

static uint32_t hash_pair(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	return (uint32_t)k;
}

int tok_merges_init(struct eng_tok *t, size_t count)
{
	uint32_t sz = table_size(count);
	t->mkey = calloc(sz, sizeof(*t->mkey));
	t->mrank = calloc(sz, sizeof(*t->mrank));
	t->mres = calloc(sz, sizeof(*t->mres));
	if (!t->mkey || !t->mrank || !t->mres)
		return -1;
	t->mmask = sz - 1;
	return 0;
}

int tok_merge_add(struct eng_tok *t, int32_t a, int32_t b, uint32_t rank, int32_t res)
{
	uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
	uint32_t h = hash_pair(k) & t->mmask;
	for (uint32_t probes = 0; probes <= t->mmask; probes++, h = (h + 1) & t->mmask) {
		if (t->mkey[h] == k)
			return 0;
		if (!t->mkey[h]) {
			t->mkey[h] = k;
			t->mrank[h] = rank;
			t->mres[h] = res;
			return 0;
		}
	}
	return -1;
}

static int merge_find(const struct eng_tok *t, int32_t a, int32_t b, uint32_t *rank, int32_t *res)
{
	uint64_t k;
	uint32_t h;
	if (!t->mkey || a < 0 || b < 0)
		return 0;
	k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
	h = hash_pair(k) & t->mmask;
	for (;; h = (h + 1) & t->mmask) {
		if (!t->mkey[h])
			return 0;
		if (t->mkey[h] == k) {
			*rank = t->mrank[h];
			*res = t->mres[h];
			return 1;
		}
	}
}

static int cmp_special(const void *a, const void *b, void *ud)
{
	const struct eng_tok *t = ud;
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	unsigned char fx = (unsigned char)t->text[x][0], fy = (unsigned char)t->text[y][0];
	if (fx != fy)
		return fx < fy ? -1 : 1;
	if (t->len[x] != t->len[y])
		return t->len[x] > t->len[y] ? -1 : 1;
	return x < y ? -1 : x > y;
}

int tok_build_specials(struct eng_tok *t, const uint8_t *mark)
{
	uint32_t ns = 0;
	for (uint32_t i = 0; i < t->n; i++)
		ns += mark[i] && t->len[i] > 0;
	free(t->special);
	if (!(t->special = malloc((ns ? ns : 1) * sizeof(*t->special))))
		return -1;
	ns = 0;
	for (uint32_t i = 0; i < t->n; i++)
		if (mark[i] && t->len[i] > 0)
			t->special[ns++] = (int32_t)i;
	qsort_r(t->special, ns, sizeof(*t->special), cmp_special, t);
	memset(t->sbucket, 0, sizeof(t->sbucket));
	for (uint32_t i = 0; i < ns; i++)
		t->sbucket[(unsigned char)t->text[t->special[i]][0] + 1]++;
	for (int b = 0; b < 256; b++)
		t->sbucket[b + 1] += t->sbucket[b];
	return 0;
}

void tok_find_byte_tokens(struct eng_tok *t)
{
	for (int b = 0; b < 256; b++) {
		char name[8];
		snprintf(name, sizeof(name), "<0x%02X>", b);
		t->byte_tok[b] = eng_tok_find(t, name, 6);
	}
}

enum hm_err tok_add_stage(struct hm_ctx *ctx, struct eng_tok *t, const char *pattern, size_t len)
{
	int errcode;
	PCRE2_SIZE erroff;
	pcre2_code *re;
	if (t->nre >= TOK_MAX_STAGES)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer: more than %d pre-tokenizer splits", TOK_MAX_STAGES);
	re = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &errcode,
			   &erroff, NULL);
	if (!re) {
		PCRE2_UCHAR msg[128];
		pcre2_get_error_message(errcode, msg, sizeof(msg));
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer: pre-tokenizer regex does not compile at %zu: %s",
			       (size_t)erroff, (const char *)msg);
	}
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter works where JIT does not */
	t->re[t->nre++] = re;
	return HM_OK;
}

enum hm_err tok_alloc(struct hm_ctx *ctx, struct eng_tok *t, uint32_t n)
{
	if (!n || n > ENG_TOK_MAX_VOCAB)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "tokenizer: vocabulary size %u out of range (1..%u)", n,
			       ENG_TOK_MAX_VOCAB);
	t->n = n;
	t->text = calloc(n, sizeof(*t->text));
	t->len = calloc(n, sizeof(*t->len));
	t->type = calloc(n, sizeof(*t->type));
	if (!t->text || !t->len || !t->type)
		return hm_fail(ctx, HM_ERR_NOMEM, "tokenizer: out of memory for %u tokens", n);
	return HM_OK;
}

void eng_tok_free(struct eng_tok *t)
{
	if (!t)
		return;
	for (uint32_t i = 0; t->text && i < t->n; i++)
		free(t->text[i]);
	free(t->text);
	free(t->len);
	free(t->type);
	free(t->score);
	free(t->vslot);
	free(t->mkey);
	free(t->mrank);
	free(t->mres);
	free(t->special);
	for (int i = 0; i < t->nre; i++)
		pcre2_code_free(t->re[i]);
	free(t);
}

/* ---- the merge loop ---- */

struct ids {
	int32_t *v;
	size_t n, cap;
};

static int push(struct ids *o, int32_t id)
{
	if (o->n == o->cap) {
		size_t nc = o->cap ? 2 * o->cap : 64;
		int32_t *nv = realloc(o->v, nc * sizeof(*nv));
		if (!nv)
			return -1;
		o->v = nv;
		o->cap = nc;
	}
	o->v[o->n++] = id;
	return 0;
}

struct sym {
	uint32_t start, len; /* bytes of the word; len 0 = merged away */
	int32_t id;          /* -1 while unknown (score mode) */
	int32_t prev, next;
};

struct cand {
	double prio; /* lower first */
	uint32_t left, right, size;
	int32_t id;
};

struct heap {
	struct cand *v;
	size_t n, cap;
};

static int cand_less(const struct cand *a, const struct cand *b)
{
	if (a->prio != b->prio)
		return a->prio < b->prio;
	return a->left < b->left;
}

static int heap_push(struct heap *h, struct cand c)
{
	size_t i;
	if (h->n == h->cap) {
		size_t nc = h->cap ? 2 * h->cap : 64;
		struct cand *nv = realloc(h->v, nc * sizeof(*nv));
		if (!nv)
			return -1;
		h->v = nv;
		h->cap = nc;
	}
	i = h->n++;
	while (i && cand_less(&c, &h->v[(i - 1) / 2])) {
		h->v[i] = h->v[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h->v[i] = c;
	return 0;
}

static struct cand heap_pop(struct heap *h)
{
	struct cand top = h->v[0], last = h->v[--h->n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && cand_less(&h->v[c + 1], &h->v[c]))
			c++;
		if (!cand_less(&h->v[c], &last))
			break;
		h->v[i] = h->v[c];
		i = c;
	}
	if (h->n)
		h->v[i] = last;
	return top;
}

static size_t utf8_char_len(const unsigned char *s, size_t n)
{
	size_t l = 1;
	if (s[0] >= 0xF0 && s[0] < 0xF8)
		l = 4;
	else if (s[0] >= 0xE0)
		l = s[0] < 0xF0 ? 3 : 1;
	else if (s[0] >= 0xC2)
		l = 2;
	if (l > n)
		return 1;
	for (size_t i = 1; i < l; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 1;
	return l;
}

/* Adds the candidate merge of symbols a and b (adjacent) if there is one. */
static int try_pair(const struct eng_tok *t, const char *w, const struct sym *sy, int32_t a, int32_t b,
		    struct heap *h)
{
	struct cand c;
	if (a < 0 || b < 0)
		return 0;
	c.left = (uint32_t)a;
	c.right = (uint32_t)b;
	c.size = sy[a].len + sy[b].len;
	if (t->score) {
		c.id = eng_tok_find(t, w + sy[a].start, c.size);
		if (c.id < 0)
			return 0;
		c.prio = -(double)t->score[c.id];
	} else {
		uint32_t rank;
		if (!merge_find(t, sy[a].id, sy[b].id, &rank, &c.id))
			return 0;
		c.prio = rank;
	}
	return heap_push(h, c);
}

static int push_bytes(const struct eng_tok *t, const unsigned char *s, size_t n, struct ids *o)
{
	for (size_t i = 0; i < n; i++) {
		int32_t id = t->byte_tok[s[i]] >= 0 ? t->byte_tok[s[i]] : t->unk;
		if (id >= 0 && push(o, id))
			return -1;
	}
	return 0;
}

/* BPE over one word (n bytes). In rank mode a character with no token
 * becomes byte tokens (byte_fallback) or unk (fused when fuse_unk) or is
 * dropped, as huggingface/tokenizers does; in score mode (llama.cpp's SPM)
 * merges work on text and what is left unknown becomes byte tokens. */
static int bpe_word(const struct eng_tok *t, const char *w, size_t n, struct ids *o)
{
	struct sym *sy;
	struct heap h = {0};
	int32_t ns = 0, last = -1;
	int rc = -1;
	if (!n)
		return 0;
	if (!(sy = malloc(n * sizeof(*sy))))
		return -1;
	for (size_t i = 0; i < n;) {
		size_t cl = utf8_char_len((const unsigned char *)w + i, n - i);
		int32_t id = eng_tok_find(t, w + i, cl);
		if (id < 0 && !t->score) {
			int all = t->byte_fallback;
			for (size_t k = 0; all && k < cl; k++)
				all = t->byte_tok[(unsigned char)w[i + k]] >= 0;
			if (all) {
				for (size_t k = 0; k < cl; k++) {
					sy[ns] = (struct sym){(uint32_t)(i + k), 1, t->byte_tok[(unsigned char)w[i + k]],
							      last, -1};
					if (last >= 0)
						sy[last].next = ns;
					last = ns++;
				}
				i += cl;
				continue;
			}
			if (t->unk < 0) { /* dropped */
				i += cl;
				continue;
			}
			if (t->fuse_unk && last >= 0 && sy[last].id == t->unk &&
			    sy[last].start + sy[last].len == i) {
				sy[last].len += (uint32_t)cl;
				i += cl;
				continue;
			}
			id = t->unk;
		}
		sy[ns] = (struct sym){(uint32_t)i, (uint32_t)cl, id, last, -1};
		if (last >= 0)
			sy[last].next = ns;
		last = ns++;
		i += cl;
	}
	for (int32_t i = 0; i + 1 < ns; i++)
		if (sy[i].next == i + 1 && try_pair(t, w, sy, i, i + 1, &h))
			goto out;
	while (h.n) {
		struct cand c = heap_pop(&h);
		struct sym *l = &sy[c.left], *r = &sy[c.right];
		if (!l->len || !r->len || l->next != (int32_t)c.right || l->len + r->len != c.size)
			continue;
		l->len += r->len;
		l->id = c.id;
		r->len = 0;
		l->next = r->next;
		if (r->next >= 0)
			sy[r->next].prev = (int32_t)c.left;
		if (try_pair(t, w, sy, l->prev, (int32_t)c.left, &h) || try_pair(t, w, sy, (int32_t)c.left, l->next, &h))
			goto out;
	}
	for (int32_t i = ns ? 0 : -1; i >= 0; i = sy[i].next) {
		int32_t id = sy[i].id;
		if (t->score && id < 0) {
			if (push_bytes(t, (const unsigned char *)w + sy[i].start, sy[i].len, o))
				goto out;
			continue;
		}
		if (id >= 0 && push(o, id))
			goto out;
	}
	rc = 0;
out:
	free(sy);
	free(h.v);
	return rc;
}

/* ---- SentencePiece style ---- */

static int spm_segment(const struct eng_tok *t, const char *s, size_t n, int first, struct util_buf *tmp,
		       struct ids *o)
{
	int pre = t->prepend == TOK_PREPEND_ALWAYS || (t->prepend == TOK_PREPEND_FIRST && first);
	if (!n)
		return 0;
	tmp->len = 0;
	if (pre && util_buf_add(tmp, SP_UTF8, 3))
		return -1;
	for (size_t i = 0; i < n; i++)
		if (s[i] == ' ' ? util_buf_add(tmp, SP_UTF8, 3) : util_buf_add(tmp, s + i, 1))
			return -1;
	if (!t->meta_split)
		return bpe_word(t, tmp->buf, tmp->len, o);
	/* Metaspace split: each word starts at a U+2581 */
	for (size_t a = 0; a < tmp->len;) {
		size_t b = a + 1;
		while (b < tmp->len && !(b + 3 <= tmp->len && !memcmp(tmp->buf + b, SP_UTF8, 3)))
			b++;
		if (bpe_word(t, tmp->buf + a, b - a, o))
			return -1;
		a = b;
	}
	return 0;
}

/* ---- byte level ---- */

/* The GPT-2 byte alphabet: printable Latin-1 bytes stand for themselves,
 * the other 68 map in order to U+0100.. */
static unsigned byte_cp(unsigned b)
{
	unsigned k = 0;
	if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
		return b;
	for (unsigned x = 0; x < b; x++)
		k += !((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE);
	return 0x100 + k;
}

static int cp_byte(unsigned cp)
{
	if (cp < 0x100)
		return ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || cp >= 0xAE) ? (int)cp : -1;
	if (cp >= 0x100 + 68)
		return -1;
	for (unsigned b = 0, k = 0; b < 256; b++) {
		if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
			continue;
		if (0x100 + k == cp)
			return (int)b;
		k++;
	}
	return -1;
}

struct bytemap {
	char enc[256][2];
	unsigned char enc_len[256];
};

static void bytemap_init(struct bytemap *m)
{
	for (unsigned b = 0; b < 256; b++) {
		unsigned cp = byte_cp(b);
		if (cp < 0x80) {
			m->enc[b][0] = (char)cp;
			m->enc_len[b] = 1;
		} else {
			m->enc[b][0] = (char)(0xC0 | (cp >> 6));
			m->enc[b][1] = (char)(0x80 | (cp & 0x3F));
			m->enc_len[b] = 2;
		}
	}
}

static int bl_piece(const struct eng_tok *t, const struct bytemap *m, const char *s, size_t n, struct util_buf *tmp,
		    struct ids *o)
{
	int32_t id;
	if (!n)
		return 0;
	tmp->len = 0;
	for (size_t i = 0; i < n; i++)
		if (util_buf_add(tmp, m->enc[(unsigned char)s[i]], m->enc_len[(unsigned char)s[i]]))
			return -1;
	if (t->ignore_merges && (id = eng_tok_find(t, tmp->buf, tmp->len)) >= 0)
		return push(o, id);
	return bpe_word(t, tmp->buf, tmp->len, o);
}

struct split_ctx {
	const struct eng_tok *t;
	const struct bytemap *m;
	pcre2_match_data *md[TOK_MAX_STAGES];
	pcre2_match_context *mc;
	struct util_buf tmp;
	struct ids *o;
	int err; /* HM error of a failed match */
};

/* Splits s by stage k (matches and the text between them are pieces, the
 * "Isolated" behavior) and hands each piece to stage k+1. */
static int bl_split(struct split_ctx *c, int k, const char *s, size_t n)
{
	size_t off = 0, gap = 0;
	if (k == c->t->nre)
		return bl_piece(c->t, c->m, s, n, &c->tmp, c->o);
	while (off < n) {
		PCRE2_SIZE *ov;
		int rc = pcre2_match(c->t->re[k], (PCRE2_SPTR)s, n, off, 0, c->md[k], c->mc);
		if (rc == PCRE2_ERROR_NOMATCH)
			break;
		if (rc < 0) {
			c->err = HM_ERR_BAD_INPUT;
			return -1;
		}
		ov = pcre2_get_ovector_pointer(c->md[k]);
		if (ov[1] <= ov[0]) { /* an empty match: move one character on */
			off = ov[0] + utf8_char_len((const unsigned char *)s + ov[0], n - ov[0]);
			continue;
		}
		if (ov[0] > gap && bl_split(c, k + 1, s + gap, ov[0] - gap))
			return -1;
		if (bl_split(c, k + 1, s + ov[0], ov[1] - ov[0]))
			return -1;
		gap = off = ov[1];
	}
	if (gap < n && bl_split(c, k + 1, s + gap, n - gap))
		return -1;
	return 0;
}

/* ---- encode ---- */

static const int32_t *special_at(const struct eng_tok *t, const char *s, size_t n)
{
	unsigned char b = (unsigned char)s[0];
	for (uint32_t i = t->sbucket[b]; i < t->sbucket[b + 1]; i++) {
		int32_t id = t->special[i];
		if (t->len[id] <= n && !memcmp(t->text[id], s, t->len[id]))
			return &t->special[i];
	}
	return NULL;
}

enum hm_err eng_tok_encode(const struct eng_tok *t, const char *text, size_t len, int add_bos, int32_t **ids,
			   size_t *n)
{
	struct ids o = {0};
	struct bytemap m;
	struct split_ctx sc = {0};
	struct util_buf tmp = UTIL_BUF_INIT;
	enum hm_err err = HM_ERR_NOMEM;
	size_t seg = 0;
	*ids = NULL;
	*n = 0;
	if (len > ENG_TOK_MAX_TEXT)
		return HM_ERR_USAGE;
	if (add_bos < 0)
		add_bos = t->add_bos;
	if (t->kind == ENG_TOK_BPE) {
		bytemap_init(&m);
		sc.t = t;
		sc.m = &m;
		sc.o = &o;
		if (!(sc.mc = pcre2_match_context_create(NULL)))
			goto out;
		pcre2_set_match_limit(sc.mc, 10000000);
		for (int k = 0; k < t->nre; k++)
			if (!(sc.md[k] = pcre2_match_data_create_from_pattern(t->re[k], NULL)))
				goto out;
	}
	if (add_bos && t->bos >= 0 && push(&o, t->bos))
		goto out;
	for (size_t i = 0; i <= len;) {
		const int32_t *sp = i < len ? special_at(t, text + i, len - i) : NULL;
		int r;
		if (i < len && !sp) {
			i++;
			continue;
		}
		/* text[seg..i) is plain text */
		if (t->kind == ENG_TOK_SPM) {
			r = spm_segment(t, text + seg, i - seg, seg == 0, &tmp, &o);
		} else if (i > seg) {
			const char *s = text + seg;
			size_t sn = i - seg;
			if (t->add_prefix_space && s[0] != ' ') {
				/* ByteLevel add_prefix_space: the segment as if it began with a space */
				struct util_buf pb = UTIL_BUF_INIT;
				r = util_buf_add(&pb, " ", 1) || util_buf_add(&pb, s, sn) ? -1
											: bl_split(&sc, 0, pb.buf, pb.len);
				util_buf_release(&pb);
			} else {
				r = bl_split(&sc, 0, s, sn);
			}
		} else {
			r = 0;
		}
		if (r) {
			if (sc.err)
				err = sc.err;
			goto out;
		}
		if (i == len)
			break;
		if (push(&o, *sp))
			goto out;
		i += t->len[*sp];
		seg = i;
		if (i == len)
			break;
	}
	*ids = o.v;
	*n = o.n;
	o.v = NULL;
	err = HM_OK;
out:
	free(o.v);
	util_buf_release(&tmp);
	util_buf_release(&sc.tmp);
	for (int k = 0; k < TOK_MAX_STAGES; k++)
		pcre2_match_data_free(sc.md[k]);
	pcre2_match_context_free(sc.mc);
	return err;
}

/* ---- decode ---- */

static size_t piece(const struct eng_tok *t, int32_t id, int32_t prev_id, char *out)
{
	const char *s = t->text[id];
	size_t n = t->len[id], k = 0;
	int strip;
	if (t->type[id] == ENG_TOK_CONTROL || t->type[id] == ENG_TOK_USER_DEFINED || t->type[id] == ENG_TOK_UNKNOWN) {
		memcpy(out, s, n);
		return n;
	}
	if (t->kind == ENG_TOK_SPM) {
		if (n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && t->type[id] == ENG_TOK_BYTE) {
			out[0] = (char)strtoul(s + 3, NULL, 16);
			return 1;
		}
		strip = t->prepend != TOK_PREPEND_NEVER && (prev_id < 0 || prev_id == t->bos);
		for (size_t i = 0; i < n;) {
			if (i + 3 <= n && !memcmp(s + i, SP_UTF8, 3)) {
				if (!(strip && k == 0 && i == 0))
					out[k++] = ' ';
				i += 3;
			} else {
				out[k++] = s[i++];
			}
		}
		return k;
	}
	for (size_t i = 0; i < n;) {
		const unsigned char *u = (const unsigned char *)s + i;
		size_t cl = utf8_char_len(u, n - i);
		unsigned cp = cl == 1 ? u[0] : cl == 2 ? ((u[0] & 0x1Fu) << 6) | (u[1] & 0x3Fu) : 0xFFFFFFFFu;
		int b = cp_byte(cp);
		if (b >= 0 && (cl == 2 || cp < 0x80)) {
			out[k++] = (char)b;
		} else {
			memcpy(out + k, u, cl);
			k += cl;
		}
		i += cl;
	}
	return k;
}

int eng_tok_decode(const struct eng_tok *t, int32_t id, int32_t prev_id, char *buf, size_t cap)
{
	char *tmp;
	size_t k;
	if (!t || id < 0 || (uint32_t)id >= t->n)
		return -1;
	if (t->len[id] > (uint32_t)(1u << 30) || !(tmp = malloc(t->len[id] + 1)))
		return -1;
	k = piece(t, id, prev_id, tmp);
	if (k < cap) {
		memcpy(buf, tmp, k);
		buf[k] = 0;
	}
	free(tmp);
	return (int)k;
}

enum hm_err eng_tok_decode_all(const struct eng_tok *t, const int32_t *ids, size_t n, int skip_special, char **out,
			       size_t *len)
{
	struct util_buf b = UTIL_BUF_INIT;
	char *tmp = NULL;
	size_t tcap = 0;
	int32_t prev = -1;
	*out = NULL;
	*len = 0;
	for (size_t i = 0; i < n; i++) {
		int32_t id = ids[i];
		size_t k;
		if (id < 0 || (uint32_t)id >= t->n)
			goto bad;
		if (skip_special && t->type[id] == ENG_TOK_CONTROL) {
			if (id == t->bos)
				prev = id;
			continue;
		}
		if (t->len[id] + 1 > tcap) {
			char *nt = realloc(tmp, t->len[id] + 1);
			if (!nt)
				goto nomem;
			tmp = nt;
			tcap = t->len[id] + 1;
		}
		k = piece(t, id, prev, tmp);
		if (util_buf_add(&b, tmp, k))
			goto nomem;
		prev = id;
	}
	if (util_buf_add(&b, "", 0))
		goto nomem;
	free(tmp);
	*len = b.len;
	*out = util_buf_detach(&b);
	return HM_OK;
bad:
	free(tmp);
	util_buf_release(&b);
	return HM_ERR_USAGE;
nomem:
	free(tmp);
	util_buf_release(&b);
	return HM_ERR_NOMEM;
}

/* ---- accessors ---- */

enum eng_tok_kind eng_tok_kind(const struct eng_tok *t)
{
	return t->kind;
}

uint32_t eng_tok_vocab_size(const struct eng_tok *t)
{
	return t->n;
}

int32_t eng_tok_bos(const struct eng_tok *t)
{
	return t->bos;
}

int32_t eng_tok_eos(const struct eng_tok *t)
{
	return t->eos;
}

int32_t eng_tok_unk(const struct eng_tok *t)
{
	return t->unk;
}

int eng_tok_add_bos(const struct eng_tok *t)
{
	return t->add_bos;
}

const char *eng_tok_text(const struct eng_tok *t, int32_t id, size_t *len)
{
	if (id < 0 || (uint32_t)id >= t->n)
		return NULL;
	if (len)
		*len = t->len[id];
	return t->text[id];
}

int eng_tok_type(const struct eng_tok *t, int32_t id)
{
	if (id < 0 || (uint32_t)id >= t->n)
		return 0;
	return t->type[id];
}

const char *eng_tok_pre(const struct eng_tok *t)
{
	return t->pre;
}
