// p2p.cpp - the one C++ file: libtorrent-rasterbar 2.0 behind the C
// interface of p2p.h. A thread drains libtorrent's alerts (torrent removals,
// session counters); everything else is a call on the session handle, which
// libtorrent makes thread-safe.
#include <libtorrent/add_torrent_params.hpp>
#include <libtorrent/alert_types.hpp>
#include <libtorrent/bencode.hpp>
#include <libtorrent/create_torrent.hpp>
#include <libtorrent/ip_filter.hpp>
#include <libtorrent/session.hpp>
#include <libtorrent/session_stats.hpp>
#include <libtorrent/settings_pack.hpp>
#include <libtorrent/torrent_info.hpp>
#include <libtorrent/torrent_status.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <vector>
#include <string>
#include <thread>

#include "p2p.h"

namespace {

// the mirror's upload slots per blob torrent (p2p_add)
constexpr int ORIGIN_SLOTS = 2;

void set_err(char *err, size_t errlen, const std::string &msg)
{
	if (err && errlen)
		std::snprintf(err, errlen, "%s", msg.c_str());
}

std::string hex(const char *d, size_t n)
{
	static const char x[] = "0123456789abcdef";
	std::string s;
	for (size_t i = 0; i < n; i++) {
		s += x[(unsigned char)d[i] >> 4];
		s += x[(unsigned char)d[i] & 15];
	}
	return s;
}

// a piece size libtorrent can use: a power of two, 16 KiB or more
bool piece_size_ok(int piece, char *err, size_t errlen)
{
	if (piece >= 16384 && !(piece & (piece - 1)))
		return true;
	set_err(err, errlen, "the piece size is not a power of two of 16 KiB or more");
	return false;
}

bool is_hex64(const std::string &s)
{
	if (s.size() != 64)
		return false;
	for (char c : s)
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	return true;
}

} // namespace

struct p2p {
	lt::session ses;
	std::mutex mu;
	std::condition_variable cv;
	std::map<std::string, lt::torrent_handle> torrents; // v2 info-hash hex -> handle
	std::set<std::string> removing;
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> up{0}, down{0};
	std::atomic<int> peers{0};
	int idx_up = -1, idx_down = -1, idx_peers = -1;
	std::thread th;
	bool origin = false;
	FILE *debug = nullptr; // HUBMIRROR_P2P_DEBUG=FILE: every alert, one line each

	explicit p2p(lt::session_params &&sp) : ses(std::move(sp)) {}

	// The mirror's super-seeding, per torrent: off when its uploads stopped
	// for 3 s after they had begun while a peer still lacks pieces
	// (libtorrent 2.0.8 leaves a lone peer without its last pieces: its
	// get_piece_to_super_seed offers none), so the peers then get them as
	// from any seed; on again when every peer has gone (the next lab).
	struct ss_state {
		std::int64_t up = 0;
		std::chrono::steady_clock::time_point changed;
		std::optional<std::chrono::steady_clock::time_point> alone; // since when no peer is connected
	};
	std::map<std::string, ss_state> ss;
	std::chrono::steady_clock::time_point last_policy{};
	bool super_seed = false;

	void super_seed_policy(std::chrono::steady_clock::time_point now)
	{
		std::vector<std::pair<std::string, lt::torrent_handle>> v;
		{
			std::lock_guard<std::mutex> g(mu);
			for (auto &kv : torrents)
				v.push_back(kv);
		}
		for (auto &kv : v) {
			lt::torrent_handle &th = kv.second;
			lt::torrent_status s = th.status();
			bool on = bool(th.flags() & lt::torrent_flags::super_seeding);
			ss_state &st = ss[kv.first];
			if (s.total_payload_upload != st.up) {
				st.up = s.total_payload_upload;
				st.changed = now;
			}
			if (!s.is_seeding)
				continue;
			std::vector<lt::peer_info> peers;
			th.get_peer_info(peers);
			if (peers.empty()) {
				// on again once no peer came back for 30 s: lab
				// machines drop and redial their connections
				// mid-swarm, and super-seeding them again then
				// would hold back what they still lack
				if (!st.alone)
					st.alone = now;
				if (!on && now - *st.alone >= std::chrono::seconds(30))
					th.set_flags(lt::torrent_flags::super_seeding);
				st.changed = now;
				continue;
			}
			st.alone.reset();
			if (!on)
				continue;
			bool lacking = false;
			for (auto &pi : peers)
				lacking = lacking || !(pi.flags & lt::peer_info::seed);
			if (debug) {
				std::fprintf(debug, "super-seed policy %.12s: on %d up %lld lacking %d idle %lld ms\n",
					     kv.first.c_str(), (int)on, (long long)st.up, (int)lacking,
					     (long long)std::chrono::duration_cast<std::chrono::milliseconds>(now - st.changed).count());
				std::fflush(debug);
			}
			if (lacking && st.up > 0 && now - st.changed >= std::chrono::seconds(3)) {
				// a peer with no piece on offer is not told of the
				// others when super-seeding ends (superseed_piece(-1)
				// returns early): reconnect, and it gets the bitfield
				th.unset_flags(lt::torrent_flags::super_seeding);
				th.pause();
				th.resume();
				th.force_reannounce(0, -1, lt::torrent_handle::ignore_min_interval);
				st.changed = now;
			}
		}
	}

	void alerts()
	{
		auto last_stats = std::chrono::steady_clock::now() - std::chrono::seconds(2);
		while (!stop) {
			ses.wait_for_alert(std::chrono::milliseconds(200));
			std::vector<lt::alert *> v;
			ses.pop_alerts(&v);
			for (lt::alert *a : v) {
				if (debug) {
					std::fprintf(debug, "%s: %s\n", a->what(), a->message().c_str());
					std::fflush(debug);
				}
				if (auto *te = lt::alert_cast<lt::tracker_error_alert>(a)) {
					// a whitelist not reloaded yet, a tracker restarting:
					// ask again in 2 s, not after libtorrent's backoff (minutes).
					// Not for a listen socket that cannot reach the tracker
					// (0.0.0.0 includes loopback: "announce skipped", every
					// time): asking again for it made every torrent announce
					// every 2 s on every socket, 64 announces a second in a
					// lab of 16 machines pulling 8 blobs.
					// The torrent may be removed by now: its handle then throws,
					// and an exception out of this thread would abort the process.
					if (te->error == lt::errors::announce_skipped)
						continue;
					try {
						te->handle.force_reannounce(2, -1, lt::torrent_handle::ignore_min_interval);
					} catch (std::exception const &) {
					}
				} else if (auto *r = lt::alert_cast<lt::torrent_removed_alert>(a)) {
					std::string h = hex(r->info_hashes.v2.data(), 32);
					std::lock_guard<std::mutex> g(mu);
					removing.erase(h);
					cv.notify_all();
				} else if (auto *s = lt::alert_cast<lt::session_stats_alert>(a)) {
					auto c = s->counters();
					if (idx_up >= 0)
						up = (uint64_t)c[idx_up];
					if (idx_down >= 0)
						down = (uint64_t)c[idx_down];
					if (idx_peers >= 0)
						peers = (int)c[idx_peers];
				}
			}
			auto now = std::chrono::steady_clock::now();
			if (now - last_stats >= std::chrono::milliseconds(500)) {
				ses.post_session_stats();
				last_stats = now;
			}
			if (super_seed && now - last_policy >= std::chrono::seconds(1)) {
				super_seed_policy(now);
				last_policy = now;
			}
		}
	}
};

// The bytes of torrent e into *out (malloc'd, the caller's) and its v2
// info hash, after libtorrent has read them back. 0, or -1 with err set;
// may throw (the callers catch).
static int encode(const lt::entry &e, unsigned char **out, size_t *outlen, char ihash[65], char *err, size_t errlen)
{
	std::vector<char> buf;
	lt::bencode(std::back_inserter(buf), e);
	lt::error_code ec;
	lt::torrent_info ti(lt::span<char const>(buf.data(), (std::ptrdiff_t)buf.size()), ec, lt::from_span);
	if (ec) {
		set_err(err, errlen, "made a torrent libtorrent does not read back: " + ec.message());
		return -1;
	}
	*out = (unsigned char *)std::malloc(buf.size());
	if (!*out) {
		set_err(err, errlen, "out of memory");
		return -1;
	}
	std::memcpy(*out, buf.data(), buf.size());
	*outlen = buf.size();
	std::snprintf(ihash, 65, "%s", hex(ti.info_hashes().v2.data(), 32).c_str());
	return 0;
}

extern "C" int p2p_make_torrent_pieces(const char *path, int piece, unsigned char **out, size_t *outlen,
				       char ihash[65], char *err, size_t errlen)
{
	try {
		lt::file_storage fs;
		lt::add_files(fs, path);
		if (fs.num_files() != 1 || fs.total_size() <= 0) {
			set_err(err, errlen, std::string("not one non-empty file: ") + path);
			return -1;
		}
		if (piece <= 0)
			piece = p2p_piece_size((uint64_t)fs.total_size());
		if (!piece_size_ok(piece, err, errlen))
			return -1;
		lt::create_torrent t(fs, piece, lt::create_torrent::v2_only);
		std::string parent(path);
		size_t slash = parent.rfind('/');
		parent = slash == std::string::npos ? "." : parent.substr(0, slash);
		lt::error_code ec;
		lt::set_piece_hashes(t, parent, ec);
		if (ec) {
			set_err(err, errlen, std::string("cannot hash '") + path + "': " + ec.message());
			return -1;
		}
		lt::entry e = t.generate();
		// no creation date or creator: the same content gives the same bytes
		e.dict().erase("creation date");
		e.dict().erase("created by");
		return encode(e, out, outlen, ihash, err, errlen);
	} catch (std::exception const &ex) {
		set_err(err, errlen, std::string("cannot make a torrent of '") + path + "': " + ex.what());
		return -1;
	}
}

extern "C" int p2p_make_torrent(const char *path, unsigned char **out, size_t *outlen, char ihash[65],
				char *err, size_t errlen)
{
	return p2p_make_torrent_pieces(path, 0, out, outlen, ihash, err, errlen);
}

extern "C" int p2p_torrent_from_tree_pieces(const char *name, uint64_t size, int piece_size, const unsigned char root[32],
					    const unsigned char *layer, size_t layer_len, unsigned char **out,
					    size_t *outlen, char ihash[65], char *err, size_t errlen)
{
	try {
		if (!piece_size_ok(piece_size, err, errlen))
			return -1;
		uint64_t piece = (uint64_t)piece_size;
		uint64_t npieces = (size + piece - 1) / piece;
		if (!size || !name || !*name || std::strchr(name, '/')) {
			set_err(err, errlen, "no torrent of an empty or unnamed file");
			return -1;
		}
		if (npieces > 1 ? layer_len != npieces * 32 : layer_len != 0) {
			set_err(err, errlen, "the piece layer does not match the file's size");
			return -1;
		}
		// what create_torrent::generate writes for one file, v2 only
		lt::entry e(lt::entry::dictionary_t);
		lt::entry &info = e["info"];
		lt::entry &leaf = info["file tree"][name][""];
		leaf["length"] = (std::int64_t)size;
		leaf["pieces root"] = std::string((const char *)root, 32);
		info["meta version"] = 2;
		info["name"] = name;
		info["piece length"] = (std::int64_t)piece;
		lt::entry &layers = e["piece layers"]; // there, if empty, as libtorrent writes it
		layers = lt::entry(lt::entry::dictionary_t);
		if (layer_len)
			layers[std::string((const char *)root, 32)] = std::string((const char *)layer, layer_len);
		return encode(e, out, outlen, ihash, err, errlen);
	} catch (std::exception const &ex) {
		set_err(err, errlen, std::string("cannot make a torrent: ") + ex.what());
		return -1;
	}
}

extern "C" int p2p_torrent_from_tree(const char *name, uint64_t size, const unsigned char root[32],
				     const unsigned char *layer, size_t layer_len, unsigned char **out, size_t *outlen,
				     char ihash[65], char *err, size_t errlen)
{
	return p2p_torrent_from_tree_pieces(name, size, p2p_piece_size(size), root, layer, layer_len, out, outlen, ihash,
					    err, errlen);
}

static std::shared_ptr<lt::torrent_info> load(const unsigned char *buf, size_t len, char *err, size_t errlen)
{
	if (len > P2P_TORRENT_MAX) {
		set_err(err, errlen, "torrent larger than the limit");
		return nullptr;
	}
	lt::error_code ec;
	auto ti = std::make_shared<lt::torrent_info>(lt::span<char const>((const char *)buf, (std::ptrdiff_t)len), ec,
						     lt::from_span);
	if (ec) {
		set_err(err, errlen, "malformed torrent: " + ec.message());
		return nullptr;
	}
	if (!ti->info_hashes().has_v2() || ti->info_hashes().has_v1()) {
		set_err(err, errlen, "not a v2-only torrent");
		return nullptr;
	}
	// one file, named like the torrent (libtorrent may add a pad file after it)
	int real = 0;
	for (lt::file_index_t i(0); i < lt::file_index_t(ti->num_files()); ++i)
		real += !ti->files().pad_file_at(i);
	if (real != 1 || ti->files().pad_file_at(lt::file_index_t(0)) ||
	    ti->files().file_path(lt::file_index_t(0)) != ti->name() || !is_hex64(ti->name())) {
		set_err(err, errlen, "not a single-file torrent named by a SHA-256");
		return nullptr;
	}
	return ti;
}

extern "C" int p2p_torrent_check(const unsigned char *buf, size_t len, char name[65], uint64_t *size,
				 char ihash[65], char *err, size_t errlen)
{
	try {
		auto ti = load(buf, len, err, errlen);
		if (!ti)
			return -1;
		std::snprintf(name, 65, "%s", ti->name().c_str());
		*size = (uint64_t)ti->files().file_size(lt::file_index_t(0));
		std::snprintf(ihash, 65, "%s", hex(ti->info_hashes().v2.data(), 32).c_str());
		return 0;
	} catch (std::exception const &ex) {
		set_err(err, errlen, std::string("malformed torrent: ") + ex.what());
		return -1;
	}
}

extern "C" struct p2p *p2p_new(const struct p2p_opts *o, char *err, size_t errlen)
{
	try {
		lt::settings_pack sp;
		sp.set_str(lt::settings_pack::listen_interfaces, o->listen ? o->listen : "0.0.0.0:6881");
		sp.set_str(lt::settings_pack::user_agent, "hubmirror");
		sp.set_bool(lt::settings_pack::enable_dht, false);
		sp.set_bool(lt::settings_pack::enable_lsd, false);
		sp.set_bool(lt::settings_pack::enable_upnp, false);
		sp.set_bool(lt::settings_pack::enable_natpmp, false);
		sp.set_bool(lt::settings_pack::allow_multiple_connections_per_ip, true);
		// TCP only: a lab is a LAN; uTP's delay-based backoff starves it there
		sp.set_bool(lt::settings_pack::enable_outgoing_utp, false);
		sp.set_bool(lt::settings_pack::enable_incoming_utp, false);
		sp.set_int(lt::settings_pack::upload_rate_limit, o->upload_rate > 0 && o->upload_rate < INT32_MAX
									 ? (int)o->upload_rate : 0);
		// every blob torrent active at once (no queueing of seeds)
		sp.set_int(lt::settings_pack::active_limit, -1);
		sp.set_int(lt::settings_pack::active_seeds, -1);
		sp.set_int(lt::settings_pack::active_downloads, -1);
		sp.set_int(lt::settings_pack::active_checking, 4);
		// no "allowed fast" pieces (BEP 6): a choked peer may fetch those
		// anyway, so the mirror sent the same few pieces of each blob to
		// every lab machine while they waited to be unchoked
		sp.set_int(lt::settings_pack::allowed_fast_set_size, 0);
		// no session-wide cap on unchoked peers: a lab machine serves
		// every peer (a closed swarm needs no tit-for-tat), and the mirror
		// has its upload slots per blob (p2p_add), not 8 for the session
		sp.set_int(lt::settings_pack::unchoke_slots_limit, -1);
		if (o->origin) {
			// the mirror: prefer peers with few or almost all pieces, so
			// what it sends spreads and lab machines trade the rest
			sp.set_int(lt::settings_pack::seed_choking_algorithm, lt::settings_pack::anti_leech);
		}
		const char *dbg = std::getenv("HUBMIRROR_P2P_DEBUG");
		sp.set_int(lt::settings_pack::alert_mask, dbg && *dbg ? lt::alert_category::all
							: lt::alert_category::error | lt::alert_category::status |
								  lt::alert_category::storage | lt::alert_category::tracker);
		lt::session_params params(std::move(sp));
		auto *p = new struct p2p(std::move(params));
		p->origin = o->origin != 0;
		p->super_seed = p->origin && o->super_seed;
		if (dbg && *dbg)
			p->debug = std::fopen(dbg, "a");
		// LAN and loopback peers are in the "local" class, which rate limits
		// skip: map every address to the global class so the cap holds
		lt::ip_filter f;
		std::uint32_t global = 1u << static_cast<std::uint32_t>(lt::session::global_peer_class_id);
		f.add_rule(lt::make_address("0.0.0.0"), lt::make_address("255.255.255.255"), global);
		f.add_rule(lt::make_address("::"), lt::make_address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), global);
		p->ses.set_peer_class_filter(f);
		p->idx_up = lt::find_metric_idx("net.sent_payload_bytes");
		p->idx_down = lt::find_metric_idx("net.recv_payload_bytes");
		p->idx_peers = lt::find_metric_idx("peer.num_peers_connected");
		p->th = std::thread([p] { p->alerts(); });
		return p;
	} catch (std::exception const &ex) {
		set_err(err, errlen, std::string("cannot start the BitTorrent session: ") + ex.what());
		return nullptr;
	}
}

extern "C" void p2p_free(struct p2p *p)
{
	if (!p)
		return;
	p->stop = true;
	if (p->th.joinable())
		p->th.join();
	try {
		p->ses.set_alert_notify([] {});
		lt::session_proxy proxy = p->ses.abort();
		if (p->debug)
			std::fclose(p->debug);
		delete p; // the proxy outlives the session object until it goes here
	} catch (...) {
	}
}

extern "C" int p2p_listen_port(struct p2p *p)
{
	try {
		return p->ses.listen_port();
	} catch (...) {
		return 0;
	}
}

extern "C" int p2p_add(struct p2p *p, const unsigned char *buf, size_t len, const char *dir, const char *tracker,
		       int seed, char *err, size_t errlen)
{
	try {
		auto ti = load(buf, len, err, errlen);
		if (!ti)
			return -1;
		std::string h = hex(ti->info_hashes().v2.data(), 32);
		{
			std::unique_lock<std::mutex> g(p->mu);
			// a removal of the same torrent still under way: let it finish
			p->cv.wait_for(g, std::chrono::seconds(10), [&] { return !p->removing.count(h); });
			if (p->torrents.count(h))
				return 1;
		}
		lt::add_torrent_params atp;
		atp.ti = ti;
		atp.save_path = dir;
		atp.flags &= ~(lt::torrent_flags::auto_managed | lt::torrent_flags::paused);
		if (seed) {
			atp.flags |= lt::torrent_flags::seed_mode;
			// --p2p-super-seed: the mirror offers each peer one or two
			// pieces no other peer has yet, the next only when that one
			// came back (p2p_opts.super_seed says what it costs).
			// libtorrent 2.0.8 cannot offer them during the handshake
			// (superseed_piece returns while in_handshake()): a new peer
			// gets its first from second_tick, ~10 s later.
			if (p->super_seed)
				atp.flags |= lt::torrent_flags::super_seeding;
		}
		if (tracker && *tracker)
			atp.trackers.push_back(tracker);
		// the mirror sends each blob to ORIGIN_SLOTS lab machines at a
		// time: each gets pieces no other has at the cap's full rate, and
		// the lab trades them (with libtorrent's 8 slots for the session,
		// 8 blobs got one slot each or one blob all 8; with a slot for
		// every peer each piece went out several times)
		if (p->origin)
			atp.max_uploads = ORIGIN_SLOTS;
		lt::error_code ec;
		lt::torrent_handle th = p->ses.add_torrent(std::move(atp), ec);
		if (ec) {
			set_err(err, errlen, "cannot add the torrent: " + ec.message());
			return -1;
		}
		std::lock_guard<std::mutex> g(p->mu);
		p->torrents[h] = th;
		return 0;
	} catch (std::exception const &ex) {
		set_err(err, errlen, std::string("cannot add the torrent: ") + ex.what());
		return -1;
	}
}

extern "C" void p2p_remove(struct p2p *p, const char ihash[65])
{
	try {
		std::unique_lock<std::mutex> g(p->mu);
		auto it = p->torrents.find(ihash);
		if (it == p->torrents.end())
			return;
		lt::torrent_handle th = it->second;
		p->torrents.erase(it);
		p->removing.insert(ihash);
		p->ses.remove_torrent(th);
		p->cv.wait_for(g, std::chrono::seconds(10), [&] { return !p->removing.count(ihash); });
		p->removing.erase(ihash);
	} catch (...) {
	}
}

// The handle of a torrent in the session (false when it is not).
static bool find_torrent(struct p2p *p, const char *ihash, lt::torrent_handle &th)
{
	std::lock_guard<std::mutex> g(p->mu);
	auto it = p->torrents.find(ihash);
	if (it == p->torrents.end())
		return false;
	th = it->second;
	return true;
}

extern "C" void p2p_reannounce(struct p2p *p, const char ihash[65])
{
	try {
		lt::torrent_handle th;
		if (!find_torrent(p, ihash, th))
			return;
		th.force_reannounce(0, -1, lt::torrent_handle::ignore_min_interval);
	} catch (...) {
	}
}

extern "C" size_t p2p_count(struct p2p *p)
{
	std::lock_guard<std::mutex> g(p->mu);
	return p->torrents.size();
}

extern "C" int p2p_status(struct p2p *p, const char ihash[65], struct p2p_status *st)
{
	try {
		lt::torrent_handle th;
		if (!find_torrent(p, ihash, th))
			return -1;
		lt::torrent_status s = th.status();
		std::memset(st, 0, sizeof(*st));
		st->done = (uint64_t)s.total_wanted_done;
		st->wanted = (uint64_t)s.total_wanted;
		st->down_payload = (uint64_t)s.total_payload_download;
		st->up_payload = (uint64_t)s.total_payload_upload;
		// is_finished: every wanted piece passed its hash check (libtorrent
		// may still be writing the last blocks out; p2p_remove waits for them)
		st->finished = s.is_seeding || s.is_finished;
		st->peers = s.num_peers;
		if (s.errc) {
			st->error = 1;
			std::snprintf(st->errmsg, sizeof(st->errmsg), "%s", s.errc.message().c_str());
		}
		return 0;
	} catch (...) {
		return -1;
	}
}

extern "C" int p2p_verified_ranges(struct p2p *p, const char ihash[65], uint64_t **ranges, size_t *n)
{
	*ranges = nullptr;
	*n = 0;
	try {
		lt::torrent_handle th;
		if (!find_torrent(p, ihash, th))
			return -1;
		auto ti = th.torrent_file();
		if (!ti)
			return -1;
		lt::torrent_status s = th.status(lt::torrent_handle::query_pieces);
		std::vector<uint64_t> v;
		// the file's own size: total_size() of a v2 torrent counts the
		// padding up to the last piece's boundary
		const uint64_t plen = (uint64_t)ti->piece_length(),
			       total = (uint64_t)ti->files().file_size(lt::file_index_t{0});
		for (int i = 0; i < s.pieces.size(); i++) {
			if (!s.pieces.get_bit(lt::piece_index_t(i)))
				continue;
			uint64_t a = (uint64_t)i * plen, b = std::min(total, a + plen);
			if (a >= b)
				break;
			if (!v.empty() && v.back() == a)
				v.back() = b;
			else {
				v.push_back(a);
				v.push_back(b);
			}
		}
		if (v.empty())
			return 0;
		auto *out = static_cast<uint64_t *>(std::malloc(v.size() * sizeof(uint64_t)));
		if (!out)
			return -1;
		std::memcpy(out, v.data(), v.size() * sizeof(uint64_t));
		*ranges = out;
		*n = v.size() / 2;
		return 0;
	} catch (...) {
		return -1;
	}
}

extern "C" void p2p_totals(struct p2p *p, struct p2p_totals *t)
{
	t->uploaded = p->up;
	t->downloaded = p->down;
	t->peers = p->peers;
	t->torrents = p2p_count(p);
}
