"""test_p2p.py - lab fan-out over BitTorrent v2: a mirror (`serve --p2p`,
which runs Debian's opentracker as an unprivileged user and super-seeds
from its store) and lab machines (`pull --p2p`, `serve --upstream --p2p`)
on loopback. Bytes are checked against the emulator's, the mirror's share
is read from its /metrics and served rows, and every failure path has its
test: kill -9 of a lab pull, a lab peer with a corrupted blob, the tracker
down, the mirror restarted mid-swarm, the refusals."""

import glob
import os
import re
import sqlite3
import signal
import subprocess
import time
import urllib.request

import lib
from lib import check, Fail
import serve_lib as sl
from serve_lib import Server, serving

REPO = "lab-org/fanout"
# two LFS blobs of a few pieces (4 MiB) each and a small regular file
FILES = {"model-00001.safetensors": (8 << 20) + 12345, "model-00002.safetensors": (4 << 20) + 777}


def lab_repo(repo=REPO, seed=1):
    files = {p: {"random": n, "seed": seed + i} for i, (p, n) in enumerate(sorted(FILES.items()))}
    files["config.json"] = '{"model_type": "llama"}\n'
    return {"type": "model", "id": repo, "commits": [{"files": files, "refs": ["main"]}]}


def lab_bytes(seed=1):
    out = {p: lib.random_bytes(n, seed + i) for i, (p, n) in enumerate(sorted(FILES.items()))}
    out["config.json"] = b'{"model_type": "llama"}\n'
    return out


REPO_SIZE = sum(len(v) for v in lab_bytes().values())
# The mirror's share for 8 lab machines on loopback, in bytes (load slows a
# swarm but a super-seeding mirror still sends each piece about once).
# Measured here: 1.21x and 1.24x with --p2p-super-seed, so the 2x
# holds; 2.5x and 3.0x with the default anti-leech choking, whose bound only
# tells a trading swarm from none (8x).
LIMIT_SUPER_SEED = 2.0
LIMIT = 3.5


class Ports:
    """Distinct free TCP ports (peers, trackers) for one test."""

    def __init__(self):
        self.used = set()

    def get(self):
        while True:
            p = lib.free_port()
            if p not in self.used:
                self.used.add(p)
                return p


def mirror(t, ports, *extra, tracker=True, emu=None, env=None):
    """Fills t.store from the emulator and starts `serve --p2p` on it."""
    if emu is None:
        emu = t.emu([lab_repo()])
    t.ok("pull", REPO, "-q")
    tport = ports.get()
    args = ["--p2p", "--p2p-port", ports.get()]
    if tracker:
        args += ["--tracker-listen", "127.0.0.1:%d" % tport]
    srv = Server(t, *(args + list(extra)), env=env)
    srv.tport = tport
    return emu, srv


def lab_store(t, i):
    return os.path.join(t.tmp, "lab%d" % i)


def lab_pull(t, srv, i, ports, *extra, seed_time=3):
    """Starts `pull --p2p` of REPO from the mirror into lab store i."""
    return t.spawn("pull", REPO, "--p2p", "--p2p-port", ports.get(), "--seed-time", seed_time,
                   *[str(a) for a in extra], store=lab_store(t, i), endpoint=srv.url)


def finish(p, timeout=120, what="lab pull"):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise Fail("%s did not finish in %d s: %s" % (what, timeout, err.decode()[-2000:]))
    check(p.returncode == 0, "%s failed (rc %s):\n%s" % (what, p.returncode, err.decode()[-2000:]))
    return out.decode(), err.decode()


def check_store(t, store, what):
    """Every file of REPO is in store, byte-identical, and the store verifies."""
    want = lab_bytes()
    for p, data in want.items():
        sha = lib.sha256_bytes(data)
        path = lib.blob_path(store, sha)
        check(os.path.exists(path), "%s: blob of %s missing" % (what, p))
        check(lib.sha256_file(path) == sha, "%s: blob of %s is corrupt" % (what, p))
    r = t.hm("verify", store=store)
    check(r.rc == 0, "%s: verify failed: %r" % (what, r))


def metrics(srv):
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(srv.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(hubmirror_[a-z0-9_]+)(\{[^}]*\})? (\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def swarm_rows(store):
    return lib.db_query(store, "SELECT path, bytes, result, endpoint, error FROM downloads")


def peer_bytes(store):
    return sum(r["bytes"] for r in swarm_rows(store) if r["endpoint"] == "swarm" and r["result"] == "ok")


def eight_labs(t, *mirror_args, limit):
    ports = Ports()
    emu, srv = mirror(t, ports, "--p2p-upload-rate", "4M", *mirror_args)
    procs = [lab_pull(t, srv, i, ports) for i in range(8)]
    for i, p in enumerate(procs):
        finish(p, what="lab pull %d" % i)
    for i in range(8):
        check_store(t, lab_store(t, i), "lab %d" % i)
    m = metrics(srv)
    sent = m["hubmirror_p2p_uploaded_bytes_total"] + m["hubmirror_served_bytes_total"]
    total_peers = sum(peer_bytes(lab_store(t, i)) for i in range(8))
    check(total_peers > 0, "no lab machine got bytes from the swarm: %r" % [swarm_rows(lab_store(t, i)) for i in range(8)])
    check(sent <= limit * REPO_SIZE,
          "the mirror sent %.2fx the repo (%d bytes over BitTorrent, %d over HTTP)"
          % (sent / REPO_SIZE, m["hubmirror_p2p_uploaded_bytes_total"], m["hubmirror_served_bytes_total"]))
    print("mirror sent %.2fx the repo size for 8 lab machines" % (sent / REPO_SIZE))


@serving(timeout=240)
def test_p2p_eight_labs_at_once(t):
    eight_labs(t, limit=LIMIT)


@serving(timeout=240)
def test_p2p_eight_labs_super_seed(t):
    """The issue's bound, at most 2x the repo, with the super-seeding mirror."""
    eight_labs(t, "--p2p-super-seed", limit=LIMIT_SUPER_SEED)


def blob_part(store, sha):
    return os.path.join(store, "tmp", "p2p", sha)


@serving(timeout=180)
def test_p2p_kill9_resumes(t):
    ports = Ports()
    emu, srv = mirror(t, ports, "--p2p-upload-rate", "1M")
    big = lib.sha256_bytes(lab_bytes()["model-00001.safetensors"])
    store = lab_store(t, 0)
    p = lab_pull(t, srv, 0, ports)
    deadline = time.time() + 60
    part = blob_part(store, big)
    while time.time() < deadline:
        if os.path.exists(part) and os.path.getsize(part) > 0 and p.poll() is None:
            break
        time.sleep(0.1)
    check(p.poll() is None, "the lab pull ended before it could be killed")
    time.sleep(1.0)
    p.kill()
    p.wait()
    finish(lab_pull(t, srv, 0, ports), what="the pull after kill -9")
    check_store(t, store, "after kill -9")
    check(peer_bytes(store) > 0, "the resumed pull got nothing from the swarm: %r" % swarm_rows(store))


@serving(timeout=180)
def test_p2p_corrupt_peer(t):
    ports = Ports()
    emu, srv = mirror(t, ports, "--p2p-upload-rate", "2M")
    big = lab_bytes()["model-00001.safetensors"]
    sha = lib.sha256_bytes(big)
    store_a = lab_store(t, 0)
    a = lab_pull(t, srv, 0, ports, seed_time=120)
    deadline = time.time() + 90
    while not os.path.exists(lib.blob_path(store_a, sha)):
        check(a.poll() is None and time.time() < deadline, "lab A did not get the blob")
        time.sleep(0.2)
    # lab A seeds on, and its copy goes bad on disk
    path = lib.blob_path(store_a, sha)
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.write(bytes(b ^ 0xFF for b in big[:1 << 20]))
    finish(lab_pull(t, srv, 1, ports), what="lab B")
    check_store(t, lab_store(t, 1), "lab B, next to a peer with a corrupt blob")
    a.kill()
    a.wait()


@serving(timeout=120)
def test_p2p_tracker_down_falls_back(t):
    ports = Ports()
    dead = ports.get()
    emu, srv = mirror(t, ports, "--tracker", "http://lab:pw-s3cret@127.0.0.1:%d/pk-s3cret/announce" % dead,
                      tracker=False)
    # the home page names the external tracker, never its password or passkey
    page = srv.get("/")
    m = re.search(rb'<span id="p2p" data-on="1"[^>]*>(.*?)</span>', page.body, re.S)
    check(page.status == 200 and m, "the P2P state on the home page: %r" % page.body[-2000:])
    check(b"http://127.0.0.1:%d" % dead in m.group(1) and b"s3cret" not in page.body,
          "the external tracker on the home page: %r" % m.group(1))
    store = lab_store(t, 0)
    out, err = finish(lab_pull(t, srv, 0, ports, "--p2p-stall", 3))
    check_store(t, store, "tracker down")
    rows = swarm_rows(store)
    http = [r for r in rows if r["endpoint"] == srv.url and r["result"] == "ok"]
    check(len(http) == 3, "every file should have come over HTTP: %r" % rows)


@serving(timeout=180)
def test_p2p_mirror_restart(t):
    ports = Ports()
    emu, srv = mirror(t, ports, "--p2p-upload-rate", "1M")
    procs = [lab_pull(t, srv, i, ports, "--p2p-stall", 5) for i in range(2)]
    time.sleep(3)
    srv.stop()
    time.sleep(1)
    Server(t, "--p2p", "--p2p-port", ports.get(), "--tracker-listen", "127.0.0.1:%d" % srv.tport,
           listen="127.0.0.1:%d" % srv.port)
    for i, p in enumerate(procs):
        finish(p, what="lab pull %d across the mirror's restart" % i)
        check_store(t, lab_store(t, i), "lab %d" % i)


@serving(timeout=180)
def test_p2p_stall_hands_pieces_to_http(t):
    """A swarm that stalls part-way (the mirror frozen, SIGSTOP) is given up
    after --p2p-stall, and the pieces the lab already verified become the
    HTTP download's partial file: HTTP then fetches only the rest, and the
    blob is whole and verified. Its twin, a swarm that never starts
    (tracker down), is test_p2p_tracker_down_falls_back."""
    ports = Ports()
    emu, srv = mirror(t, ports, "--p2p-upload-rate", "256K")
    big = "model-00001.safetensors"
    sha = lib.sha256_bytes(lab_bytes()[big])
    p = lab_pull(t, srv, 0, ports, "--p2p-stall", 4, seed_time=0)
    part = os.path.join(lab_store(t, 0), "tmp", "p2p", sha)
    deadline = time.time() + 90
    while True:  # 2 MiB of the blob written by the swarm (pieces are 256 KiB)
        if os.path.exists(part) and os.stat(part).st_blocks * 512 >= 2 << 20:
            break
        if p.poll() is not None:
            raise Fail("the lab pull ended before the swarm sent 2 MiB: %r" % (p.communicate(),))
        check(time.time() < deadline, "the swarm did not send 2 MiB in 90 s")
        time.sleep(0.1)
    srv.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(10)  # > --p2p-stall: the lab gives the swarm up and asks HTTP
    finally:
        srv.proc.send_signal(signal.SIGCONT)
    finish(p, what="the lab pull across a stalled swarm")
    check_store(t, lab_store(t, 0), "lab 0")
    rows = [r for r in swarm_rows(lab_store(t, 0)) if r["path"] == big]
    swarm = [r for r in rows if r["endpoint"] == "swarm"]
    http = [r for r in rows if r["endpoint"] != "swarm" and r["result"] == "ok"]
    check(len(swarm) == 1 and swarm[0]["result"] == "failed" and "stalled" in swarm[0]["error"]
          and swarm[0]["bytes"] >= 1 << 20, "the swarm's row: %r" % rows)
    check(len(http) == 1 and http[0]["bytes"] <= FILES[big] - (1 << 20),
          "HTTP fetched %r of %d bytes: the swarm's verified pieces were not kept (%r)"
          % (http and http[0]["bytes"], FILES[big], rows))


@serving(timeout=120)
def test_p2p_refusals(t):
    ports = Ports()
    emu, srv = mirror(t, ports)
    r = srv.get("/api/hubmirror/torrents/" + "ab" * 32)
    check(r.status == 404, "a torrent of a blob the mirror does not list: %r" % r)
    r = srv.get("/api/hubmirror/torrents/nothex")
    check(r.status == 400, "a torrent of a bad name: %r" % r)
    sha = lib.sha256_bytes(lab_bytes()["model-00002.safetensors"])
    r = srv.get("/api/hubmirror/torrents/" + sha)
    check(r.status == 200 and r.body.startswith(b"d8:announce"), "the torrent of a listed blob: %r" % r)
    r = srv.get("/api/models/%s/torrents/main" % REPO)
    check(r.status == 200, "the torrents of a revision: %r" % r)
    listed = {x["path"]: x for x in r.json()["torrents"]}
    check(set(listed) == set(FILES), "the torrents of a revision: %r" % listed)
    check(listed["model-00002.safetensors"]["sha256"] == sha, "the torrents of a revision: %r" % listed)
    # the home page shows the swarm: the blobs seeded and our tracker
    page = srv.get("/")
    m = re.search(rb'<span id="p2p" data-on="1" data-torrents="(\d+)" data-peers="(\d+)"[^>]*>(.*?)</span>',
                  page.body, re.S)
    check(page.status == 200 and m, "the P2P state on the home page: %r" % page.body[-2000:])
    check(int(m.group(1)) == len(FILES) and b"seeding %d blobs" % len(FILES) in m.group(3),
          "the blobs seeded, on the home page: %r" % m.group(0))
    check(b"opentracker on <code>127.0.0.1:%d</code>" % srv.tport in m.group(3),
          "our tracker on the home page: %r" % m.group(0))
    srv.stop()
    # a mirror that needs a token keeps its blobs out of the swarm
    tokfile = os.path.join(t.tmp, "tokens")
    with open(tokfile, "w") as fh:
        fh.write("secret-token\n")
    srv2 = Server(t, "--p2p", "--p2p-port", ports.get(), "--tracker-listen", "127.0.0.1:%d" % ports.get(),
                  "--token-file", tokfile)
    r = srv2.get("/api/hubmirror/torrents/" + sha, token="secret-token")
    check(r.status == 403, "a token-protected mirror handed out a torrent: %r" % r)
    store = lab_store(t, 0)
    finish(t.spawn("pull", REPO, "--p2p", "--p2p-port", ports.get(), "--seed-time", 0, "--token", "secret-token",
                   store=store, endpoint=srv2.url))
    check_store(t, store, "token-protected mirror")
    check(peer_bytes(store) == 0, "bytes came from the swarm of a token-protected mirror: %r" % swarm_rows(store))


@serving(timeout=240)
def test_p2p_edge_js_client(t):
    """A lab machine's edge (`serve --upstream MIRROR --p2p`) answers the
    official JS client; the blobs it pulls through come from the swarm."""
    import test_serve_interop as js
    ports = Ports()
    emu, srv = mirror(t, ports)
    edge_store = os.path.join(t.tmp, "edge")
    edge = Server(t, "--upstream", srv.url, "--p2p", "--p2p-port", ports.get(), "--p2p-stall", 20, store=edge_store)
    want = lab_bytes()
    res = js.run_js(t, [js.job(edge, REPO, files=sorted(want))], timeout=120)[0]
    js.check_downloads(res, want, "JS client through the edge")
    check(peer_bytes(edge_store) > 0, "the edge took nothing from the swarm: %r" % swarm_rows(edge_store))
    check_store(t, edge_store, "the edge's store")
    m = metrics(edge)
    check(m.get("hubmirror_p2p_downloaded_bytes_total", 0) > 0, "the edge's /metrics show no bytes from peers: %r" % m)


PRIV = "lab-org/private-fanout"
GOOD = "hf_lab_good_token"


@serving(timeout=120)
def test_p2p_token_repo_stays_out(t):
    """A private repo pulled with a token, then served with --p2p but no
    --token-file: its blobs stay out of the swarm (the mirror answers
    without a token, a swarm would answer anyone); a public repo pulled
    with the same token does not; --p2p-private opts in."""
    ports = Ports()
    priv = dict(lab_repo(PRIV, seed=50), private=True, tokens=[GOOD])
    t.emu([lab_repo(), priv], tokens=[GOOD])
    t.ok("pull", REPO, "-q", "--token", GOOD)
    t.ok("pull", PRIV, "-q", "--token", GOOD)
    marked = {r["name"]: r["needs_token"] for r in lib.db_query(t.store, "SELECT name, needs_token FROM repos")}
    check(marked == {REPO: 0, PRIV: 1}, "which repos needed a token: %r" % marked)
    pub_sha = lib.sha256_bytes(lab_bytes()["model-00002.safetensors"])
    priv_sha = lib.sha256_bytes(lab_bytes(seed=50)["model-00002.safetensors"])
    tmpd = os.path.join(t.tmp, "tmpdir")
    os.makedirs(tmpd)
    srv = Server(t, "--p2p", "--p2p-port", ports.get(), "--tracker-listen", "127.0.0.1:%d" % ports.get(),
                 env={"TMPDIR": tmpd})
    r = srv.get("/api/hubmirror/torrents/" + priv_sha)
    check(r.status == 403 and b"needed a token" in r.body, "the torrent of a private repo's blob: %r" % r)
    r = srv.get("/api/models/%s/torrents/main" % PRIV)
    check(r.status == 403, "the torrents of a private repo: %r" % r)
    r = srv.get("/api/hubmirror/torrents/" + pub_sha)
    check(r.status == 200, "the torrent of a public repo's blob (pulled with the same token): %r" % r)
    # the tracker was never told the private blob's info-hash
    wl = glob.glob(os.path.join(tmpd, "hubmirror-tracker-*", "whitelist"))
    check(len(wl) == 1, "the tracker's whitelist: %r" % wl)
    ihs = {x["sha256"]: x["info_hash"] for x in srv.json("/api/models/%s/torrents/main" % REPO)["torrents"]}
    check(ihs, "no torrents listed for the public repo")
    priv_ih = lib.db_query(t.store, "SELECT info_hash FROM torrents WHERE sha256 = ?", (priv_sha,))
    for path in wl:
        text = lib.read(path).decode()
        for row in priv_ih:
            check(row["info_hash"][:40] not in text, "the private blob's info-hash is on a tracker whitelist")
    # a lab pull of the private repo through this mirror: all over HTTP
    store = lab_store(t, 0)
    finish(t.spawn("pull", PRIV, "--p2p", "--p2p-port", ports.get(), "--seed-time", 0, store=store,
                   endpoint=srv.url))
    check(peer_bytes(store) == 0, "bytes of a private repo came from the swarm: %r" % swarm_rows(store))
    srv.stop()
    # the opt-in
    srv2 = Server(t, "--p2p", "--p2p-private", "--p2p-port", ports.get(), "--tracker-listen",
                  "127.0.0.1:%d" % ports.get())
    r = srv2.get("/api/hubmirror/torrents/" + priv_sha)
    check(r.status == 200, "--p2p-private: the torrent of a private repo's blob: %r" % r)


@serving(timeout=120)
def test_p2p_stale_tracker_dirs(t):
    """serve --p2p killed with kill -9 leaves its tracker directory behind;
    the next start removes it, and only it: not one whose serve is alive, not
    one with files and no pid, not another program's."""
    ports = Ports()
    tmp = os.path.join(t.tmp, "tmpdir")
    os.makedirs(tmp)
    env = {"TMPDIR": tmp}
    t.emu([lab_repo()])
    t.ok("pull", REPO, "-q")

    def tracker_dirs():
        return sorted(os.path.basename(p) for p in glob.glob(os.path.join(tmp, "hubmirror-tracker-*")))

    srv = Server(t, "--p2p", "--p2p-port", ports.get(), "--tracker-listen", "127.0.0.1:%d" % ports.get(), env=env)
    first = tracker_dirs()
    check(len(first) == 1, "one tracker directory while serving: %r" % first)
    srv.proc.kill()
    srv.proc.wait()
    srv.stopped_rc = -9
    check(tracker_dirs() == first, "kill -9 should have left the directory (this test's premise): %r"
          % tracker_dirs())
    live = os.path.join(tmp, "hubmirror-tracker-live00")
    os.makedirs(live)
    with open(os.path.join(live, "pid"), "w") as fh:
        fh.write("%d\n" % os.getpid())
    keep = os.path.join(tmp, "hubmirror-tracker-keep12")
    os.makedirs(keep)
    with open(os.path.join(keep, "whitelist"), "w") as fh:
        fh.write("x\n")
    empty = os.path.join(tmp, "hubmirror-tracker-empty1")
    os.makedirs(empty)
    other = os.path.join(tmp, "someone-else-XXXX")
    os.makedirs(other)
    srv2 = Server(t, "--p2p", "--p2p-port", ports.get(), "--tracker-listen", "127.0.0.1:%d" % ports.get(), env=env)
    now = tracker_dirs()
    check(first[0] not in now, "the killed serve's tracker directory is still there: %r" % now)
    check("hubmirror-tracker-empty1" not in now, "an empty stale tracker directory is still there: %r" % now)
    check("hubmirror-tracker-live00" in now and "hubmirror-tracker-keep12" in now,
          "a directory that may be in use was removed: %r" % now)
    check(os.path.isdir(other), "another program's directory was removed")
    check(len(now) == 3, "the new serve's own tracker directory: %r" % now)
    srv2.stop()
    check(sorted(tracker_dirs()) == ["hubmirror-tracker-keep12", "hubmirror-tracker-live00"],
          "after a clean stop: %r" % tracker_dirs())


@serving(timeout=120)
def test_p2p_torrent_made_in_pull(t):
    """pull computes each LFS blob's v2 tree while it writes it: the torrent
    is in the index before serve --p2p asks, and serve hands out that one;
    a store from before (no torrent rows) gets the same torrent lazily."""
    ports = Ports()
    t.emu([lab_repo()])
    t.ok("pull", REPO, "-q")
    want = {lib.sha256_bytes(lab_bytes()[p]) for p in FILES}
    rows = {r["sha256"]: r for r in lib.db_query(t.store, "SELECT sha256, info_hash, piece_size FROM torrents")}
    check(set(rows) == want, "the torrents a pull recorded: %r" % sorted(rows))
    srv = Server(t, "--p2p", "--p2p-port", ports.get(), "--tracker-listen", "127.0.0.1:%d" % ports.get())
    listed = {x["sha256"]: x["info_hash"] for x in srv.json("/api/models/%s/torrents/main" % REPO)["torrents"]}
    check(listed == {s: rows[s]["info_hash"] for s in want}, "served %r, recorded %r" % (listed, rows))
    srv.stop()
    # the failure twin: no recorded tree, the same torrent from the file
    con = sqlite3.connect(os.path.join(t.store, "index.db"), timeout=30)
    con.execute("DELETE FROM torrents")
    con.commit()
    con.close()
    srv = Server(t, "--p2p", "--p2p-port", ports.get(), "--tracker-listen", "127.0.0.1:%d" % ports.get())
    again = {x["sha256"]: x["info_hash"] for x in srv.json("/api/models/%s/torrents/main" % REPO)["torrents"]}
    check(again == listed, "made from the file %r, from the pull %r" % (again, listed))


@serving(timeout=120)
def test_p2p_torrent_made_in_import(t):
    """import computes each added blob's v2 tree in the same pass as its
    SHA-256: the importing store has the torrents before serve --p2p asks,
    the same as the pull recorded, and serve hands out those; a blob the
    store already had is not hashed again."""
    ports = Ports()
    t.emu([lab_repo()])
    t.ok("pull", REPO, "-q")
    pulled = {r["sha256"]: r["info_hash"] for r in lib.db_query(t.store, "SELECT sha256, info_hash FROM torrents")}
    check(len(pulled) == len(FILES), "the torrents the pull recorded: %r" % pulled)
    bundle = os.path.join(t.tmp, "lab.tar")
    t.ok("export", REPO, "-o", bundle)
    other = os.path.join(t.tmp, "imported")
    t.ok("import", bundle, store=other)
    got = {r["sha256"]: r["info_hash"] for r in lib.db_query(other, "SELECT sha256, info_hash FROM torrents")}
    check(got == pulled, "the torrents the import recorded %r, the pull's %r" % (got, pulled))
    srv = Server(t, "--p2p", "--p2p-port", ports.get(), "--tracker-listen", "127.0.0.1:%d" % ports.get(), store=other)
    listed = {x["sha256"]: x["info_hash"] for x in srv.json("/api/models/%s/torrents/main" % REPO)["torrents"]}
    check(listed == pulled, "served %r, recorded %r" % (listed, pulled))
