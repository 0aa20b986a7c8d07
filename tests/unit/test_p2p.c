/* test_p2p.c - the v2 torrent made from the merkle tree computed while a
 * blob is written (verify_merkle + p2p_torrent_from_tree) is byte for byte
 * the one libtorrent makes by reading the file (p2p_make_torrent), at the
 * sizes where the tree's shape changes; and its failure twins. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "../../p2p/p2p.h"
#include "../../util/util.h"
#include "../../verify/verify.h"

#define NAME "aa00000000000000000000000000000000000000000000000000000000000001"

static unsigned char *pattern(size_t n, unsigned seed)
{
	unsigned char *b = malloc(n ? n : 1);
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; b && i < n; i++) {
		x = x * 1103515245u + 12345u;
		b[i] = (unsigned char)(x >> 16);
	}
	return b;
}

/* The torrent of n bytes both ways, pieces of piece bytes (0: p2p_piece_size);
 * 1 when they are equal. */
static int same_torrent(size_t n, size_t step, int piece)
{
	char dir[512], path[600], err[256] = "", ih1[65] = "", ih2[65] = "";
	unsigned char *data = pattern(n, (unsigned)n), *t1 = NULL, *t2 = NULL, root[32];
	size_t l1 = 0, l2 = 0, llen = 0;
	const unsigned char *layer = NULL;
	struct verify_merkle *m = verify_merkle_new(piece ? piece : p2p_piece_size(n));
	FILE *f;
	int ok = 0;

	snprintf(dir, sizeof(dir), "%s/p2p-%zu", unit_tmpdir(), n);
	snprintf(path, sizeof(path), "%s/" NAME, dir);
	if (!data || !m || util_mkdir_p(dir, 0755) || !(f = fopen(path, "wb")))
		goto out;
	fwrite(data, 1, n, f);
	fclose(f);
	for (size_t at = 0; at < n; at += step)
		verify_merkle_update(m, data + at, n - at < step ? n - at : step);
	if (verify_merkle_final(m, root, &layer, &llen) ||
	    (piece ? p2p_torrent_from_tree_pieces(NAME, n, piece, root, layer, llen, &t2, &l2, ih2, err, sizeof(err))
		   : p2p_torrent_from_tree(NAME, n, root, layer, llen, &t2, &l2, ih2, err, sizeof(err))) ||
	    p2p_make_torrent_pieces(path, piece, &t1, &l1, ih1, err, sizeof(err))) {
		fprintf(stderr, "  size %zu: %s\n", n, err);
		goto out;
	}
	ok = l1 == l2 && !memcmp(t1, t2, l1) && !strcmp(ih1, ih2);
	if (!ok)
		fprintf(stderr, "  size %zu: torrents differ (%zu vs %zu bytes, %s vs %s)\n", n, l1, l2, ih1, ih2);
out:
	verify_merkle_free(m);
	free(data);
	free(t1);
	free(t2);
	return ok;
}

UNIT_TEST(p2p_torrent_from_tree_matches_libtorrent)
{
	/* one block, short blocks, one piece (256 KiB) short and exact, pieces
	 * + a short one, a piece count that is not a power of two; the same
	 * sizes at 1 MiB and 4 MiB pieces (p2p_piece_size gives those only to
	 * blobs of 512 MiB and 2 GiB and more) */
	static const size_t sizes[] = {1, 16383, 16384, 16385, 100000, 262144, 262145, (5u << 20) + 777,
				       (12u << 20) + 12345, 16u << 20, (17u << 20) + 1};
	static const int pieces[] = {0, 1 << 20, 4 << 20};
	for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++)
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			CHECK(same_torrent(sizes[i], 65536, pieces[p]));
			CHECK(same_torrent(sizes[i], 1000, pieces[p])); /* writes that do not line up with blocks */
		}
}

UNIT_TEST(p2p_piece_size_keeps_512_pieces)
{
	/* at least 512 pieces, between 256 KiB and 4 MiB, powers of two */
	CHECK(p2p_piece_size(1) == 256 << 10);
	CHECK(p2p_piece_size(128u << 20) == 256 << 10);
	CHECK(p2p_piece_size((128u << 20) + 1) == 256 << 10);
	CHECK(p2p_piece_size(256u << 20) == 512 << 10);
	CHECK(p2p_piece_size(1ull << 30) == 2 << 20);
	CHECK(p2p_piece_size((2ull << 30) - 1) == 2 << 20);
	CHECK(p2p_piece_size(2ull << 30) == 4 << 20);
	CHECK(p2p_piece_size(1ull << 40) == 4 << 20);
}

UNIT_TEST(p2p_torrent_from_tree_refusals)
{
	unsigned char root[32] = {1}, layer[64] = {2}, *t = NULL;
	size_t tl = 0;
	char ih[65], err[256];
	const unsigned char *lp;
	size_t ll;
	/* a layer that does not fit the size, an empty file, a path for a name */
	CHECK(p2p_torrent_from_tree(NAME, 17u << 20, root, layer, 64, &t, &tl, ih, err, sizeof(err)) == -1);
	CHECK(p2p_torrent_from_tree(NAME, 1000, root, layer, 32, &t, &tl, ih, err, sizeof(err)) == -1);
	CHECK(p2p_torrent_from_tree(NAME, 0, root, NULL, 0, &t, &tl, ih, err, sizeof(err)) == -1);
	CHECK(p2p_torrent_from_tree("../x", 1000, root, NULL, 0, &t, &tl, ih, err, sizeof(err)) == -1);
	/* piece sizes libtorrent cannot use */
	CHECK(p2p_torrent_from_tree_pieces(NAME, 1000, 3 << 14, root, NULL, 0, &t, &tl, ih, err, sizeof(err)) == -1);
	CHECK(p2p_torrent_from_tree_pieces(NAME, 1000, 8192, root, NULL, 0, &t, &tl, ih, err, sizeof(err)) == -1);
	CHECK(t == NULL);
	/* no tree of nothing; no piece size that is not a power of two */
	struct verify_merkle *m = verify_merkle_new(1 << 20);
	CHECK(m && verify_merkle_final(m, root, &lp, &ll) == -1);
	verify_merkle_free(m);
	CHECK(verify_merkle_new(3 << 14) == NULL);
	CHECK(verify_merkle_new(8192) == NULL);
}
