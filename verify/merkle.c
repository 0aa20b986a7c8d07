/* merkle.c - the BitTorrent v2 (BEP 52) merkle tree of a file, computed
 * from its bytes in order while they are written and hashed anyway (pull,
 * import), so a blob's torrent needs no second read: SHA-256 of each 16 KiB
 * block, the piece layer (the subtree root of each piece, zero leaves past
 * the end) and the "pieces root". Constant memory besides the piece layer
 * (32 bytes a piece). */
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include "verify.h"

#define BLOCK 16384u

struct verify_merkle {
	EVP_MD_CTX *md;
	uint64_t size;          /* bytes seen */
	unsigned blocks_per_piece;
	unsigned char *block;   /* the block being filled */
	size_t fill;
	unsigned char *leaves;  /* block hashes of the piece being filled */
	unsigned nleaves;
	unsigned char *layer;   /* piece hashes so far */
	size_t npieces, cap;
	int oom;
	int done;
	unsigned char root[32];
};

static void sha(EVP_MD_CTX *md, const void *a, size_t na, const void *b, size_t nb, unsigned char out[32])
{
	unsigned int len = 0;
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	EVP_DigestUpdate(md, a, na);
	if (nb)
		EVP_DigestUpdate(md, b, nb);
	EVP_DigestFinal_ex(md, out, &len);
}

/* The root of a tree over n hashes (in place in v, which is destroyed),
 * padded to width leaves (a power of two >= n) with pad at the leaf level. */
static void tree_root(EVP_MD_CTX *md, unsigned char *v, size_t n, size_t width, const unsigned char pad_in[32],
		      unsigned char out[32])
{
	unsigned char pad[32], two[64];
	memcpy(pad, pad_in, 32);
	if (!n) {
		/* only padding: the pad hash at the top level */
		for (; width > 1; width /= 2) {
			memcpy(two, pad, 32);
			memcpy(two + 32, pad, 32);
			sha(md, two, 64, NULL, 0, pad);
		}
		memcpy(out, pad, 32);
		return;
	}
	while (width > 1) {
		size_t m = (n + 1) / 2;
		for (size_t i = 0; i < m; i++) {
			const unsigned char *l = v + 64 * i;
			const unsigned char *r = 2 * i + 1 < n ? v + 64 * i + 32 : pad;
			unsigned char h[32];
			sha(md, l, 32, r, 32, h);
			memcpy(v + 32 * i, h, 32);
		}
		memcpy(two, pad, 32);
		memcpy(two + 32, pad, 32);
		sha(md, two, 64, NULL, 0, pad);
		n = m;
		width /= 2;
	}
	memcpy(out, v, 32);
}

static size_t pow2_at_least(size_t n)
{
	size_t w = 1;
	while (w < n)
		w *= 2;
	return w;
}

struct verify_merkle *verify_merkle_new(int piece_size)
{
	struct verify_merkle *m;
	if (piece_size < (int)BLOCK || (piece_size & (piece_size - 1)))
		return NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->blocks_per_piece = (unsigned)piece_size / BLOCK;
	m->md = EVP_MD_CTX_new();
	m->block = malloc(BLOCK);
	m->leaves = malloc((size_t)m->blocks_per_piece * 32);
	if (!m->md || !m->block || !m->leaves) {
		verify_merkle_free(m);
		return NULL;
	}
	return m;
}

/* Closes the piece being filled: its subtree root, zero leaves past the end. */
static void close_piece(struct verify_merkle *m)
{
	static const unsigned char zero[32];
	if (m->npieces == m->cap) {
		size_t nc = m->cap ? m->cap * 2 : 64;
		unsigned char *nl = realloc(m->layer, nc * 32);
		if (!nl) {
			m->oom = 1;
			m->nleaves = 0;
			return;
		}
		m->layer = nl;
		m->cap = nc;
	}
	tree_root(m->md, m->leaves, m->nleaves, m->blocks_per_piece, zero, m->layer + 32 * m->npieces);
	m->npieces++;
	m->nleaves = 0;
}

static void add_leaf(struct verify_merkle *m, const unsigned char *data, size_t n)
{
	sha(m->md, data, n, NULL, 0, m->leaves + 32 * (size_t)m->nleaves);
	if (++m->nleaves == m->blocks_per_piece)
		close_piece(m);
}

void verify_merkle_update(struct verify_merkle *m, const void *data, size_t n)
{
	const unsigned char *p = data;
	if (m->done)
		return;
	m->size += n;
	while (n) {
		if (!m->fill && n >= BLOCK) {
			add_leaf(m, p, BLOCK);
			p += BLOCK;
			n -= BLOCK;
			continue;
		}
		size_t k = BLOCK - m->fill < n ? BLOCK - m->fill : n;
		memcpy(m->block + m->fill, p, k);
		m->fill += k;
		p += k;
		n -= k;
		if (m->fill == BLOCK) {
			add_leaf(m, m->block, BLOCK);
			m->fill = 0;
		}
	}
}

int verify_merkle_final(struct verify_merkle *m, unsigned char root[32], const unsigned char **layer, size_t *len)
{
	static const unsigned char zero[32];
	if (!m->done) {
		m->done = 1;
		if (m->fill) {
			/* the last block is hashed as it is, shorter */
			sha(m->md, m->block, m->fill, NULL, 0, m->leaves + 32 * (size_t)m->nleaves);
			m->nleaves++;
			m->fill = 0;
		}
		if (!m->size) {
			m->oom = 1; /* an empty file has no tree */
		} else if (!m->npieces) {
			/* one piece, maybe short: the tree spans only the file's blocks */
			tree_root(m->md, m->leaves, m->nleaves, pow2_at_least(m->nleaves), zero, m->root);
		} else {
			unsigned char pad[32], *tmp;
			if (m->nleaves)
				close_piece(m);
			/* past the last piece: pieces of zero leaves */
			tree_root(m->md, NULL, 0, m->blocks_per_piece, zero, pad);
			if (!m->oom && (tmp = malloc(m->npieces * 32))) {
				memcpy(tmp, m->layer, m->npieces * 32);
				tree_root(m->md, tmp, m->npieces, pow2_at_least(m->npieces), pad, m->root);
				free(tmp);
			} else {
				m->oom = 1;
			}
		}
	}
	if (m->oom)
		return -1;
	memcpy(root, m->root, 32);
	/* a file of one piece or less has no piece layer */
	*layer = m->npieces > 1 ? m->layer : NULL;
	*len = m->npieces > 1 ? m->npieces * 32 : 0;
	return 0;
}

void verify_merkle_free(struct verify_merkle *m)
{
	if (!m)
		return;
	EVP_MD_CTX_free(m->md);
	free(m->block);
	free(m->leaves);
	free(m->layer);
	free(m);
}
