/* p2p.h - the BitTorrent v2 swarm through libtorrent-rasterbar, behind a
 * small C interface (the one C++ file, p2p.cpp, implements it).
 *
 * One single-file v2-only torrent per stored blob, named by the blob's
 * SHA-256, with a fixed piece size: its info-hash is the same wherever the
 * blob is. These functions never print, never touch SQLite and never speak
 * HTTP; errors come back as text in err (errlen bytes, NUL-terminated). */
#ifndef P2P_H
#define P2P_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The piece size of a blob's torrent, a function of its size only (so the
 * info-hash stays deterministic): at least 512 pieces, from 4 MiB (blobs of
 * 2 GiB and more) down to 256 KiB. A lab trades only pieces some machine has
 * completed, and the mirror's unchoked peers each fetch a different piece:
 * with few large pieces (64 of 2 MiB for a 128 MiB file) 16 lab machines
 * started together wait on the mirror for their first pieces and it sends
 * the same piece to several of them (bench/fanout.sh, 1 GiB in 8 files:
 * mirror 1.96x the model with 64 pieces a file, 1.24-1.28x with 512, together
 * with the origin's per-blob upload slots of p2p_add). Large blobs keep
 * 4 MiB, the size measured best for the origin's share in scale-out.md
 * (1.45-1.56x for 8 leechers of a 96 MiB blob, 2.0-2.5x at 16 MiB). */
#define P2P_PIECE_MAX (4u << 20)
#define P2P_PIECE_MIN (256u << 10)
static inline int p2p_piece_size(uint64_t size)
{
	uint64_t p = P2P_PIECE_MAX;
	while (p > P2P_PIECE_MIN && size / p < 512)
		p /= 2;
	return (int)p;
}
/* A torrent file we accept from a mirror: the piece layer of a 1 TiB blob
 * at 4 MiB pieces is 8 MiB. */
#define P2P_TORRENT_MAX (16u << 20)

struct p2p;

struct p2p_opts {
	const char *listen;      /* libtorrent listen_interfaces, e.g. "0.0.0.0:6881" */
	int64_t upload_rate;     /* bytes/s for all peers (loopback and LAN too); 0 = none */
	int origin;              /* the mirror: anti-leech choking of its seeds */
	int super_seed;          /* with origin: super-seed its seeds. Each piece
				  * leaves the mirror about once (8 loopback labs:
				  * 1.2x the repo, against 2.5-3x with anti-leech
				  * alone), but libtorrent 2.0.8 offers a new peer
				  * its first piece only ~10 s after it connects,
				  * and a lone leecher (an edge) stalls before its
				  * last pieces: opt-in (serve --p2p-super-seed). */
};

/* Hashes the file at path and returns a v2-only single-file torrent of it
 * (name = the file's base name, p2p_piece_size() pieces, no announce URL, no
 * creation date: the same bytes for the same content). *out is malloc'd
 * (caller frees); ihash gets the 64-hex v2 info-hash. Returns 0 or -1. */
int p2p_make_torrent(const char *path, unsigned char **out, size_t *outlen, char ihash[65],
		     char *err, size_t errlen);
/* The same with pieces of piece bytes (a power of two, 16 KiB or more). */
int p2p_make_torrent_pieces(const char *path, int piece, unsigned char **out, size_t *outlen, char ihash[65],
			    char *err, size_t errlen);

/* The same torrent as p2p_make_torrent, from the file's v2 merkle tree
 * computed while it was written (verify_merkle: root, and the piece layer of
 * p2p_piece_size(size) pieces, NULL/0 for a file of one piece or less): no
 * read of the file. name is the file's base name (the blob's SHA-256). */
int p2p_torrent_from_tree(const char *name, uint64_t size, const unsigned char root[32], const unsigned char *layer,
			  size_t layer_len, unsigned char **out, size_t *outlen, char ihash[65], char *err,
			  size_t errlen);
/* The same with a piece layer of piece-byte pieces. */
int p2p_torrent_from_tree_pieces(const char *name, uint64_t size, int piece, const unsigned char root[32],
				 const unsigned char *layer, size_t layer_len, unsigned char **out, size_t *outlen,
				 char ihash[65], char *err, size_t errlen);

/* Checks a torrent from a peer or a mirror: single file, v2 only, its name
 * 64 lowercase hex. Fills name, the file's size and the v2 info-hash.
 * Returns 0 or -1. */
int p2p_torrent_check(const unsigned char *buf, size_t len, char name[65], uint64_t *size,
		      char ihash[65], char *err, size_t errlen);

/* Starts a session: DHT, local peer discovery, UPnP and NAT-PMP off (a closed
 * swarm, peers only from the tracker); the rate cap applied to every peer,
 * local ones included; several peers per IP allowed (loopback labs). NULL
 * on failure. */
struct p2p *p2p_new(const struct p2p_opts *o, char *err, size_t errlen);
/* Stops the session (no waiting for tracker goodbyes beyond a moment). Accepts NULL. */
void p2p_free(struct p2p *p);
/* The TCP port peers connect to (0 when not listening). */
int p2p_listen_port(struct p2p *p);

/* Adds a torrent. seed: the file is complete at dir/<name> and is read in
 * place (seed_mode: pieces are checked when first sent); else it is
 * downloaded into dir/<name> (a partial file there is checked and resumed).
 * tracker: announce URL added to the torrent's own (may be NULL).
 * Returns 0, 1 when the torrent was already in the session, -1 on error. */
int p2p_add(struct p2p *p, const unsigned char *buf, size_t len, const char *dir, const char *tracker,
	    int seed, char *err, size_t errlen);
/* Removes a torrent (files stay) and waits until libtorrent let go of it. */
void p2p_remove(struct p2p *p, const char ihash[65]);
/* Announces a torrent to its trackers now (after a tracker error or with no
 * peers: libtorrent's own retry backs off to minutes). */
void p2p_reannounce(struct p2p *p, const char ihash[65]);
/* Number of torrents in the session. */
size_t p2p_count(struct p2p *p);

struct p2p_status {
	uint64_t done, wanted;         /* verified bytes / size */
	uint64_t down_payload;         /* bytes from peers, this session */
	uint64_t up_payload;           /* bytes to peers, this session */
	int finished;                  /* every piece verified */
	int peers;                     /* connected peers */
	int error;                     /* the torrent stopped on an error (errmsg) */
	char errmsg[256];
};
/* Status of one torrent; -1 when it is not in the session. */
int p2p_status(struct p2p *p, const char ihash[65], struct p2p_status *st);

/* The byte ranges of a torrent's file whose pieces are verified (v2 block
 * hashes), merged and in order, as [start, end) pairs: *ranges gets 2 * *n
 * numbers (malloc'd, the caller's; NULL when n is 0). Ask before
 * p2p_remove. -1 when the torrent is not in the session or out of memory. */
int p2p_verified_ranges(struct p2p *p, const char ihash[65], uint64_t **ranges, size_t *n);

struct p2p_totals {
	uint64_t uploaded, downloaded; /* payload bytes to / from peers since start */
	int peers;                     /* connected now */
	size_t torrents;
};
void p2p_totals(struct p2p *p, struct p2p_totals *t);

#ifdef __cplusplus
}
#endif
#endif
