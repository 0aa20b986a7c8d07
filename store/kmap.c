/* kmap.c - a set of byte strings, each with a dense index in insertion
 * order: the groups of a statistics report and the dictionaries of the
 * statistics cache. */
#include <stdlib.h>
#include <string.h>
#include "store-int.h"

static uint64_t hash_bytes(const char *k, size_t n)
{
	/* eight bytes a step: keys are repo names and paths, tens of bytes */
	const uint64_t mul = 0x9E3779B97F4A7C15ULL;
	uint64_t h = n * mul, w;
	for (; n >= 8; n -= 8, k += 8) {
		memcpy(&w, k, 8);
		h = (h ^ w) * mul;
		h ^= h >> 29;
	}
	w = 0;
	memcpy(&w, k, n);
	h ^= w;
	/* murmur3's finalizer: every input bit moves the low bits the table uses */
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	return h ^ (h >> 33);
}

static int grow_table(struct store_kmap *m)
{
	size_t nt = m->tcap ? m->tcap * 2 : 256;
	uint64_t *t = calloc(nt, sizeof(*t));
	if (!t)
		return -1;
	for (size_t j = 0; j < m->tcap; j++) {
		const struct store_key *e;
		size_t p;
		if (!m->tab[j])
			continue;
		/* the low bits the table used are gone; hash the key again */
		e = &m->keys[(uint32_t)m->tab[j] - 1];
		p = hash_bytes(e->k, e->len) & (nt - 1);
		while (t[p])
			p = (p + 1) & (nt - 1);
		t[p] = m->tab[j];
	}
	free(m->tab);
	m->tab = t;
	m->tcap = nt;
	return 0;
}

int64_t store_kmap_get(struct store_kmap *m, const char *k, size_t n, int *added)
{
	uint64_t h, tag;
	size_t i;
	struct store_key *e;

	*added = 0;
	/* rows come in runs (one pull: one repo, endpoint and day) */
	if (m->last && m->keys[m->last - 1].len == n && !memcmp(m->keys[m->last - 1].k, k, n))
		return (int64_t)m->last - 1;
	if (m->n >= UINT32_MAX - 1)
		return -1;
	h = hash_bytes(k, n);
	tag = h & 0xffffffff00000000ULL;
	if ((m->n + 1) * 2 > m->tcap && grow_table(m))
		return -1;
	for (i = h & (m->tcap - 1); m->tab[i]; i = (i + 1) & (m->tcap - 1)) {
		if ((m->tab[i] & 0xffffffff00000000ULL) != tag)
			continue;
		e = &m->keys[(uint32_t)m->tab[i] - 1];
		if (e->len == n && !memcmp(e->k, k, n)) {
			m->last = (uint32_t)m->tab[i];
			return (int64_t)m->last - 1;
		}
	}
	if (m->n == m->cap) {
		size_t nc = m->cap ? m->cap * 2 : 64;
		void *p = realloc(m->keys, nc * sizeof(*m->keys));
		if (!p)
			return -1;
		m->keys = p;
		m->cap = nc;
	}
	e = &m->keys[m->n];
	/* one byte more, so that a key that is text is also a C string */
	if (!(e->k = malloc(n + 1)))
		return -1;
	memcpy(e->k, k, n);
	e->k[n] = '\0';
	e->len = n;
	m->tab[i] = tag | ((uint64_t)m->n + 1);
	m->last = m->n + 1;
	*added = 1;
	return (int64_t)m->n++;
}

void store_kmap_release(struct store_kmap *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->keys[i].k);
	free(m->keys);
	free(m->tab);
	memset(m, 0, sizeof(*m));
}
