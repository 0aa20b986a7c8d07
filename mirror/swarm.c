/* swarm.c - blobs over BitTorrent v2 (p2p/): the torrent of a stored blob
 * (made once, kept in the index), seeding stored blobs in place, and
 * fetching blobs from the swarm into the store for pull --p2p. Torrents come
 * only from the mirror (a lab joins only swarms its mirror lists); bytes
 * from peers are checked by v2's block hashes and then, whole, by SHA-256
 * before the blob enters the store. What stalls is left to HTTP. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "mirror.h"
#include "../p2p/p2p.h"
#include "../util/util.h"
#include "../verify/verify.h"
#include "../store/torrents.h"

#define POLL_S 0.2
#define REANNOUNCE_S 3.0

struct mirror_swarm {
	struct p2p *p;
	struct mirror_swarm_opts o;
};

enum hm_err mirror_swarm_new(struct hm_ctx *ctx, const struct mirror_swarm_opts *o, struct mirror_swarm **out)
{
	char err[512] = "";
	struct p2p_opts po = {o->listen, o->upload_rate, o->origin, o->super_seed};
	struct mirror_swarm *sw = calloc(1, sizeof(*sw));
	*out = NULL;
	if (!sw)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	sw->o = *o;
	if (sw->o.stall <= 0)
		sw->o.stall = MIRROR_SWARM_STALL_S;
	sw->p = p2p_new(&po, err, sizeof(err));
	if (!sw->p) {
		free(sw);
		return hm_fail(ctx, HM_ERR_IO, "%s", err);
	}
	*out = sw;
	return HM_OK;
}

void mirror_swarm_free(struct mirror_swarm *sw)
{
	if (!sw)
		return;
	p2p_free(sw->p);
	free(sw);
}

int mirror_swarm_port(struct mirror_swarm *sw)
{
	return p2p_listen_port(sw->p);
}

void mirror_swarm_totals(struct mirror_swarm *sw, uint64_t *uploaded, uint64_t *downloaded, int *peers,
			 size_t *torrents)
{
	struct p2p_totals t;
	p2p_totals(sw->p, &t);
	*uploaded = t.uploaded;
	*downloaded = t.downloaded;
	*peers = t.peers;
	*torrents = t.torrents;
}

int mirror_torrent_piece_size(uint64_t size)
{
	return p2p_piece_size(size);
}

enum hm_err mirror_torrent_from_tree(struct hm_ctx *ctx, struct store *st, const char *sha256, uint64_t size,
				     const unsigned char root[32], const unsigned char *layer, size_t layer_len)
{
	unsigned char *t = NULL;
	size_t tl = 0;
	char ih[65], perr[512] = "";
	enum hm_err err;
	if (p2p_torrent_from_tree(sha256, size, root, layer, layer_len, &t, &tl, ih, perr, sizeof(perr)))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "%s", perr);
	err = store_torrent_put(ctx, st, sha256, p2p_piece_size(size), t, tl, ih);
	free(t);
	return err;
}

enum hm_err mirror_blob_torrent(struct hm_ctx *ctx, struct store *st, const char *sha256, unsigned char **buf,
				size_t *len, char ihash[65])
{
	enum hm_err err;
	char path[4096], perr[512] = "";
	int found = 0;

	struct stat sb;
	store_blob_path(st, sha256, path, sizeof(path));
	if (stat(path, &sb))
		return hm_fail(ctx, HM_ERR_NOT_FOUND, "blob %.12s is not in the store", sha256);
	err = store_torrent_get(ctx, st, sha256, p2p_piece_size((uint64_t)sb.st_size), buf, len, ihash, &found);
	if (err || found)
		return err;
	if (p2p_make_torrent(path, buf, len, ihash, perr, sizeof(perr)))
		return hm_fail(ctx, HM_ERR_IO, "%s", perr);
	err = store_torrent_put(ctx, st, sha256, p2p_piece_size((uint64_t)sb.st_size), *buf, *len, ihash);
	if (err) {
		free(*buf);
		*buf = NULL;
	}
	return err;
}

enum hm_err mirror_swarm_seed(struct hm_ctx *ctx, struct mirror_swarm *sw, struct store *st, const char *sha256,
			      const unsigned char *buf, size_t len, const char *tracker)
{
	char path[4096], perr[512] = "";
	store_blob_path(st, sha256, path, sizeof(path));
	char *slash = strrchr(path, '/');
	if (slash)
		*slash = 0;
	if (p2p_add(sw->p, buf, len, path, tracker, 1, perr, sizeof(perr)) < 0)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "%s", perr);
	return HM_OK;
}

enum hm_err mirror_swarm_seed_stored(struct hm_ctx *ctx, struct mirror_swarm *sw, struct store *st,
				     const char *sha256)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	char ih[65];
	int found = 0;
	enum hm_err err = store_torrent_get(ctx, st, sha256, 0, &buf, &len, ih, &found);
	if (!err && found)
		err = mirror_swarm_seed(ctx, sw, st, sha256, buf, len, NULL);
	free(buf);
	return err;
}

void mirror_swarm_linger(struct hm_ctx *ctx, struct mirror_swarm *sw, double seconds)
{
	double t0 = util_now();
	(void)sw;
	while (util_now() - t0 < seconds && !hm_cancelled(ctx)) {
		struct timespec ts = {0, 200 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

struct active {
	struct mirror_swarm_item *it;
	char ihash[65];
	char part[4200];
	unsigned char *torrent;
	size_t tlen;
	int lockfd;
	double t0;
	uint64_t last_done;
	double last_change;
	double last_announce;
	int running;
};

/* it->errmsg = prefix + detail, cut to fit. */
static void set_msg(struct mirror_swarm_item *it, const char *prefix, const char *detail)
{
	size_t pl = strlen(prefix), cap = sizeof(it->errmsg) - 1;
	if (pl > cap)
		pl = cap;
	memcpy(it->errmsg, prefix, pl);
	size_t dl = strnlen(detail, cap - pl);
	memcpy(it->errmsg + pl, detail, dl);
	it->errmsg[pl + dl] = 0;
}

/* A download given up: its verified pieces become the HTTP download's
 * partial file (fetch_resume_adopt), unless that one has bytes already. */
static void hand_over(struct mirror_swarm *sw, struct active *a)
{
	struct mirror_swarm_item *it = a->it;
	uint64_t *r = NULL;
	size_t n = 0;
	struct stat sb;
	const char *why = "no verified piece";
	int ok = it->part_path && it->state_path && !p2p_verified_ranges(sw->p, a->ihash, &r, &n) && n;
	size_t l;

	p2p_remove(sw->p, a->ihash);
	a->running = 0;
	if (!ok)
		;
	else if (stat(it->part_path, &sb) == 0 && sb.st_size > 0)
		why = "HTTP has a partial file of its own";
	else if (fetch_resume_adopt(it->state_path, it->size, r, n))
		why = "cannot write the resume state";
	else if (rename(a->part, it->part_path)) {
		why = "cannot move the partial file";
		unlink(it->state_path);
	} else {
		why = NULL;
		for (size_t i = 0; i < n; i++)
			it->bytes_handed += r[2 * i + 1] - r[2 * i];
	}
	l = strlen(it->errmsg);
	if (why)
		snprintf(it->errmsg + l, sizeof(it->errmsg) - l, "; HTTP fetches it all (%s)", why);
	else
		snprintf(it->errmsg + l, sizeof(it->errmsg) - l, "; HTTP fetches the rest (%llu bytes verified kept)",
			 (unsigned long long)it->bytes_handed);
	unlink(a->part);
	free(r);
}

/* A finished download: check the SHA-256, move it into the store, seed it from there. */
static void finish(struct hm_ctx *ctx, struct mirror_swarm *sw, struct store *st, struct active *a)
{
	struct mirror_swarm_item *it = a->it;
	struct hm_ctx vctx = {0};
	char sha[65] = "";
	uint64_t size = 0;
	struct p2p_status s;

	if (p2p_status(sw->p, a->ihash, &s) == 0)
		it->bytes_peers = s.down_payload;
	p2p_remove(sw->p, a->ihash);
	a->running = 0;
	if (verify_file(&vctx, a->part, 0, sha, NULL, &size) || size != it->size || strcmp(sha, it->sha256)) {
		/* only a broken libtorrent could get here: v2 checks every block */
		unlink(a->part);
		it->err = HM_ERR_CORRUPT;
		set_msg(it, "the swarm's copy failed the SHA-256 check", "");
		return;
	}
	if (store_blob_adopt(ctx, st, a->part, it->sha256, it->size, NULL, 1)) {
		it->err = HM_ERR_IO;
		set_msg(it, "", ctx->errmsg);
		return;
	}
	it->done = 1;
	if (store_torrent_put(ctx, st, it->sha256, p2p_piece_size(it->size), a->torrent, a->tlen, a->ihash) ||
	    mirror_swarm_seed(ctx, sw, st, it->sha256, a->torrent, a->tlen, NULL))
		ctx->errmsg[0] = 0; /* stored; seeding it is a bonus */
}

/* Starts one blob's swarm download (1), or says why not in it->errmsg (0). */
static int start_one(struct mirror_swarm *sw, struct store *st, struct fetch_client *fc, const char *dir,
		     struct mirror_swarm_item *it, struct active *a)
{
	struct hm_ctx q = {0};
	char name[65], perr[512] = "";
	uint64_t size = 0;
	int yes = 0;

	a->it = it;
	a->lockfd = -1;
	it->started_at = util_unix_time();
	a->t0 = util_now();
	if (store_lock_try(&q, st, it->sha256, &a->lockfd)) {
		a->lockfd = -1;
		set_msg(it, "another process is fetching it", "");
		return 0;
	}
	if (!store_blob_has(&q, st, it->sha256, it->size, &yes) && yes) {
		it->done = 1;
		it->present = 1;
		return 0;
	}
	if (fetch_blob_torrent(&q, fc, it->sha256, P2P_TORRENT_MAX, &a->torrent, &a->tlen)) {
		set_msg(it, "no torrent from the mirror: ", q.errmsg);
		return 0;
	}
	if (p2p_torrent_check(a->torrent, a->tlen, name, &size, a->ihash, perr, sizeof(perr))) {
		set_msg(it, "the mirror's torrent is unusable: ", perr);
		return 0;
	}
	if (strcmp(name, it->sha256) || size != it->size) {
		set_msg(it, "the mirror's torrent is for another blob", "");
		return 0;
	}
	snprintf(a->part, sizeof(a->part), "%s/%s", dir, it->sha256);
	if (p2p_add(sw->p, a->torrent, a->tlen, dir, NULL, 0, perr, sizeof(perr)) < 0) {
		set_msg(it, "", perr);
		return 0;
	}
	a->running = 1;
	a->last_change = a->last_announce = util_now();
	return 1;
}

enum hm_err mirror_swarm_fetch(struct hm_ctx *ctx, struct mirror_swarm *sw, struct store *st,
			       struct fetch_client *fc, struct mirror_swarm_item *items, size_t n)
{
	struct active *act = calloc(n ? n : 1, sizeof(*act));
	char dir[4096];
	enum hm_err err = HM_OK;
	size_t running = 0;

	if (!act)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	snprintf(dir, sizeof(dir), "%s/tmp/p2p", store_dir(st));
	if (util_mkdir_p(dir, 0755)) {
		free(act);
		return hm_fail(ctx, HM_ERR_IO, "cannot create '%s': %s", dir, strerror(errno));
	}
	for (size_t i = 0; i < n; i++)
		running += (size_t)start_one(sw, st, fc, dir, &items[i], &act[i]);
	double last_any = util_now(); /* when any blob last made progress */
	while (running) {
		struct timespec ts = {0, (long)(POLL_S * 1e9)};
		double now;
		if (hm_cancelled(ctx)) {
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
			break;
		}
		nanosleep(&ts, NULL);
		now = util_now();
		for (size_t i = 0; i < n; i++)
			if (act[i].running && act[i].last_change > last_any)
				last_any = act[i].last_change;
		for (size_t i = 0; i < n; i++) {
			struct active *a = &act[i];
			struct p2p_status s;
			if (!a->running)
				continue;
			memset(&s, 0, sizeof(s));
			if (p2p_status(sw->p, a->ihash, &s) < 0 || s.error) {
				set_msg(a->it, "swarm: ", s.errmsg[0] ? s.errmsg : "torrent gone");
				p2p_remove(sw->p, a->ihash);
				a->running = 0;
			} else if (s.finished) {
				finish(ctx, sw, st, a);
				a->it->seconds = util_now() - a->t0;
				if (!a->it->done)
					unlink(a->part);
			} else if (s.done + s.down_payload != a->last_done) {
				/* progress: verified pieces or any payload from a peer */
				a->last_done = s.done + s.down_payload;
				a->last_change = util_now();
				a->it->bytes_peers = s.down_payload;
			} else if ((now - a->last_change >= sw->o.stall && now - last_any >= sw->o.stall) ||
				   now - a->last_change >= 4 * sw->o.stall) {
				a->it->bytes_peers = s.down_payload;
				snprintf(a->it->errmsg, sizeof(a->it->errmsg), "the swarm stalled for %.0f s",
					 now - a->last_change);
				hand_over(sw, a);
			} else if (s.peers == 0 && util_now() - a->last_announce >= REANNOUNCE_S) {
				/* no peers (tracker down or not ready yet): ask again soon */
				a->last_announce = util_now();
				p2p_reannounce(sw->p, a->ihash);
			}
			if (!a->running)
				running--;
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct active *a = &act[i];
		if (a->running)
			p2p_remove(sw->p, a->ihash);
		a->it->seconds = util_now() - a->t0;
	}
	{
		struct hm_ctx q = {0};
		enum hm_err ferr = store_flush(err ? &q : ctx, st);
		if (!err)
			err = ferr;
	}
	for (size_t i = 0; i < n; i++) {
		if (act[i].lockfd >= 0)
			store_unlock(st, act[i].it->sha256, act[i].lockfd);
		free(act[i].torrent);
	}
	free(act);
	return err;
}
