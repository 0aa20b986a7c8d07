"""test_pull_jobs.py - pulls as jobs: concurrent pulls and syncs of repos that
share contents all finish and fetch each blob once; per-file errors name
their own file; disk space is checked before the first byte and a full disk
mid-pull gives one line and a consistent store."""

import os
import subprocess
import time

import lib
from lib import check

NSHARED = 60


def shared_repos(n):
    """n repos holding the same NSHARED small files under different names and
    in different orders (so concurrent pulls meet each other's locks), and a
    large LFS file each pair shares."""
    repos = []
    for k in range(n):
        files = {}
        for i in range(NSHARED):
            # repo k lists content i at position (i * step + k * 17) % NSHARED
            step = 1 if k % 2 == 0 else NSHARED - 1
            pos = (i * step + k * 17) % NSHARED
            files["d/f%03d-%d.txt" % (pos, k)] = "shared content %d\n" % i
        files["w.bin"] = {"random": 400000, "seed": 100 + k // 2}
        repos.append({"type": "model", "id": "org/r%d" % k, "commits": [{"files": files}]})
    return repos


def content_of(emu, repo, path):
    for f in emu.files(repo).values():
        if f["path"] == path:
            return f["sha256"]
    raise lib.Fail("no %s in %s" % (path, repo))


def gets_per_content(emu, nrepos):
    """{sha256: successful file GETs} over the emulator's log."""
    by_path = {}
    for k in range(nrepos):
        for f in emu.files("org/r%d" % k).values():
            by_path[("org/r%d" % k, f["path"])] = f["sha256"]
    out = {}
    for e in emu.file_gets():
        if e.get("status") not in (200, 206):
            continue
        sha = e.get("sha256") if e["host"] == "cdn" else by_path.get((e.get("repo"), e.get("file")))
        check(sha, "log entry of an unknown file: %s" % e)
        out[sha] = out.get(sha, 0) + 1
    return out


def run_concurrent(t, n, use_sync):
    seed = {"type": "model", "id": "org/seed", "commits": [{"files": {"s.txt": "seed\n"}}]}
    emu = t.emu(shared_repos(n) + [seed])
    # the store exists before the race (creating one concurrently is another matter)
    t.ok("pull", "org/seed")
    emu.reset_log()
    procs = []
    for k in range(n):
        if use_sync and k % 2 == 1:
            m = os.path.join(t.tmp, "m%d.txt" % k)
            with open(m, "w") as fh:
                fh.write("org/r%d\norg/r%d\n" % (k, (k + 1) % n))
            procs.append(t.spawn("sync", m, "--endpoint", emu.url))
        else:
            procs.append(t.spawn("pull", "org/r%d" % k))
    deadline = time.time() + 120
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            raise lib.Fail("%d concurrent %s still running after 120 s (deadlock?): %s"
                           % (n, "pulls/syncs" if use_sync else "pulls", p.argv))
        check(p.returncode == 0, "%s failed: %s" % (p.argv, err.decode()[-800:]))
    lib.check_store_consistent(t.store)
    gets = gets_per_content(emu, n)
    want = {f["sha256"] for k in range(n) for f in emu.files("org/r%d" % k).values()}
    check(set(gets) == want, "contents never fetched: %d" % len(want - set(gets)))
    twice = {s: c for s, c in gets.items() if c != 1}
    check(not twice, "%d contents fetched more than once: %s" % (len(twice), list(twice.values())[:10]))
    revs = t.db("SELECT count(*) AS n FROM revisions")[0]["n"]
    check(revs == n + 1, "%d revisions recorded, want %d" % (revs, n + 1))


def test_two_concurrent_pulls_sharing_blobs(t):
    run_concurrent(t, 2, False)


def test_four_concurrent_pulls_sharing_blobs(t):
    run_concurrent(t, 4, False)


def test_eight_concurrent_pulls_and_syncs_sharing_blobs(t):
    run_concurrent(t, 8, True)


for _f in (test_two_concurrent_pulls_sharing_blobs, test_four_concurrent_pulls_sharing_blobs,
           test_eight_concurrent_pulls_and_syncs_sharing_blobs):
    _f.timeout = 180


def test_concurrent_pulls_survive_a_killed_peer_and_drops(t):
    """The failure twin: with dropped connections on shared files and one of
    the pulls killed (-9) while it holds locks, the others still finish and
    the store stays consistent."""
    n = 4
    seed = {"type": "model", "id": "org/seed", "commits": [{"files": {"s.txt": "seed\n"}}]}
    emu = t.emu(shared_repos(n) + [seed])
    t.ok("pull", "org/seed")
    emu.faults([{"match": "d/f00*", "kind": "drop", "times": 6},
                {"match": "w.bin", "kind": "slow", "rate": 400000, "times": 2}])
    procs = [t.spawn("pull", "org/r%d" % k) for k in range(n)]
    t0 = time.time()
    while not emu.inflight() and time.time() - t0 < 10:
        time.sleep(0.02)
    time.sleep(0.3)
    procs[0].kill()
    procs[0].wait()
    for p in procs[1:]:
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            raise lib.Fail("a pull still running 120 s after its peer was killed: %s" % p.argv)
        check(p.returncode == 0, "%s failed: %s" % (p.argv, err.decode()[-800:]))
    lib.check_store_consistent(t.store)
    r = t.ok("pull", "org/r0", "--json")
    check(r.json()["files_failed"] == 0, "the killed pull does not complete: %r" % r)
    t.ok("verify")


test_concurrent_pulls_survive_a_killed_peer_and_drops.timeout = 180


# ---- disk space ---------------------------------------------------------------

class Tmpfs:
    """A small tmpfs for the store (tests run as root), unmounted at the end."""

    def __init__(self, t, size):
        self.dir = os.path.join(t.tmp, "small")
        os.makedirs(self.dir)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", self.dir],
                           capture_output=True, text=True)
        check(p.returncode == 0, "cannot mount a tmpfs (the tests run as root): %s" % p.stderr)

    def resize(self, size):
        p = subprocess.run(["mount", "-o", "remount,size=%s" % size, self.dir],
                           capture_output=True, text=True)
        check(p.returncode == 0, "cannot resize the tmpfs: %s" % p.stderr)

    def close(self):
        subprocess.run(["umount", "-l", self.dir], capture_output=True)


BIG = 3 * 1024 * 1024


def disk_repo():
    files = {"big.bin": {"random": BIG, "seed": 77}}
    files.update({"f%03d.txt" % i: "small file %d\n" % i * 200 for i in range(30)})
    return {"type": "model", "id": "org/disk", "commits": [{"files": files}]}


def seed_store(t, emu, store):
    """A store with an index (so the index is not what fills the disk)."""
    t.ok("pull", "org/seed", store=store)
    emu.reset_log()


def test_pull_refuses_when_the_disk_is_too_small(t):
    fs = Tmpfs(t, "2m")
    try:
        seed = {"type": "model", "id": "org/seed", "commits": [{"files": {"s.txt": "seed\n"}}]}
        emu = t.emu([disk_repo(), seed])
        store = os.path.join(fs.dir, "store")
        seed_store(t, emu, store)
        r = t.fails("pull", "org/disk", store=store, words=["not enough space"])
        check(store in r.err and "free" in r.err and "MiB" in r.err,
              "the refusal should give the numbers and the store: %r" % r)
        check(not emu.file_gets(), "bytes were fetched before refusing: %s" % emu.file_gets()[:3])
        # with room it completes
        fs.resize("16m")
        r = t.ok("pull", "org/disk", "--json", store=store)
        check(r.json()["files_failed"] == 0, "pull after resizing: %r" % r)
        lib.check_store_consistent(store)
    finally:
        fs.close()


def test_disk_full_mid_pull_one_line_then_resume(t):
    """The twin: --force goes ahead, the disk fills: one line naming the
    cause and the store; no file's error names another file's partial; the
    store stays consistent; with room the same pull completes."""
    fs = Tmpfs(t, "2m")
    try:
        seed = {"type": "model", "id": "org/seed", "commits": [{"files": {"s.txt": "seed\n"}}]}
        emu = t.emu([disk_repo(), seed])
        store = os.path.join(fs.dir, "store")
        seed_store(t, emu, store)
        r = t.hm("pull", "org/disk", "--force", store=store)
        check(r.rc == 1, "expected exit 1 on a full disk: %r" % r)
        lines = [l for l in r.err.splitlines() if l.startswith("hubmirror:")]
        check(len(lines) == 1, "want one error line, got %d: %r" % (len(lines), r))
        check("no space left" in lines[0] and store in lines[0],
              "the line should name the cause and the store: %r" % lines[0])
        check(".part" not in lines[0], "the line names a partial download: %r" % lines[0])
        r = t.hm("pull", "org/disk", "--force", "--json", store=store)
        check(r.rc == 1, "expected exit 1 on a full disk: %r" % r)
        parts = {f["path"]: f for f in r.json()["files"]}
        big_key = emu.files("org/disk")["big.bin"]["sha256"]
        for path, f in parts.items():
            if path != "big.bin" and f.get("error"):
                check(big_key not in f["error"], "%s's error names big.bin's partial: %s" % (path, f["error"]))
        lib.check_store_consistent(store)
        fs.resize("16m")
        r = t.ok("pull", "org/disk", "--json", store=store)
        j = r.json()
        check(j["files_failed"] == 0, "pull with room: %r" % r)
        lib.check_store_consistent(store)
        t.ok("verify", store=store)
    finally:
        fs.close()


# ---- many files -------------------------------------------------------------------

def test_sigint_while_planning_a_huge_tree(t):
    """A 200,000-entry tree: once listed, SIGINT stops the pull with exit 130
    within seconds (the plan is linear and looks at the cancel flag)."""
    import signal
    n = 200000
    files = {"d%03d/f%06d.txt" % (i // 1000, i): "%d\n" % i for i in range(n)}
    emu = t.emu([{"type": "model", "id": "org/huge", "commits": [{"files": files}]}], page_size=20000)
    p = t.spawn("pull", "org/huge")
    pages = (n + 200) // 20000 + 1
    t0 = time.time()
    while True:
        if p.poll() is not None:
            raise lib.Fail("the pull ended before it was interrupted: %s" % p.communicate()[1][-500:])
        check(time.time() - t0 < 120, "the tree was not listed within 120 s")
        gets = [e for e in emu.log() if "/tree/" in e["path"] and e.get("status") == 200]
        if len(gets) >= pages:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    t1 = time.time()
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        raise lib.Fail("pull still running 30 s after SIGINT")
    check(p.returncode == 130, "exit status after SIGINT is %s (want 130): %s" % (p.returncode, err[-500:]))
    check(b"interrupted" in err, "no 'interrupted' message: %s" % err[-500:])
    lib.check_store_consistent(t.store)
    print("exit 130 %.1f s after SIGINT" % (time.time() - t1))


test_sigint_while_planning_a_huge_tree.timeout = 240


# ---- checkouts ----------------------------------------------------------------------

def corrupt_in_place(path):
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        b = fh.read(1)
        fh.seek(0)
        fh.write(bytes([b[0] ^ 0x55]))
    os.chmod(path, 0o444)


def test_checkout_with_a_missing_blob_writes_nothing(t):
    import glob
    t.emu()
    t.ok("pull", lib.SAMPLE_REPO)
    src = lib.sample_files()
    gone = lib.sha256_bytes(src["config.json"])
    os.chmod(t.blob(gone), 0o644)
    os.unlink(t.blob(gone))
    dest = os.path.join(t.tmp, "out", "model")
    r = t.fails("checkout", lib.SAMPLE_REPO, "--to", dest, words=["verify --repair"])
    check("config.json" in r.err, "the error should name the file: %r" % r)
    if os.path.exists(dest):
        raise lib.Fail("a half model tree was left at %s: %s" % (dest, os.listdir(dest)))
    check(not glob.glob(dest + ".hm-tmp-*"), "temp trees left: %s" % glob.glob(dest + ".hm-tmp-*"))
    t.ok("verify", "--repair", "--endpoint", t.endpoint)
    t.ok("checkout", lib.SAMPLE_REPO, "--to", dest)
    for p, data in src.items():
        check(lib.read(os.path.join(dest, p)) == data, "%s not checked out" % p)


def test_verify_repair_relinks_hard_linked_checkouts(t):
    """A corrupt blob corrupts its hard-linked checkouts too; --repair replaces
    the blob (a new inode) and links the recorded checkouts to it again."""
    t.emu()
    t.ok("pull", lib.SAMPLE_REPO)
    src = lib.sample_files()
    dest = os.path.join(t.tmp, "co")
    t.ok("checkout", lib.SAMPLE_REPO, "--to", dest)
    rows = t.db("SELECT dir, layout, copy FROM checkouts")
    check(len(rows) == 1 and rows[0]["dir"] == os.path.realpath(dest) and rows[0]["copy"] == 0,
          "checkout not recorded: %r" % rows)
    sha = lib.sha256_bytes(src["config.json"])
    corrupt_in_place(t.blob(sha))
    check(lib.read(os.path.join(dest, "config.json")) != src["config.json"], "the checkout is no hard link")
    t.fails("verify", words=["corrupt"])
    r = t.ok("verify", "--repair", "--endpoint", t.endpoint)
    check("re-linked" in r.out, "repair output: %r" % r)
    got = os.path.join(dest, "config.json")
    check(lib.read(got) == src["config.json"], "the checkout still holds the corrupt bytes after --repair")
    check(os.stat(got).st_ino == os.stat(t.blob(sha)).st_ino, "the checkout is not linked to the new blob")
    t.ok("verify")


def test_verify_reports_a_stale_checkout(t):
    """The twin: a recorded checkout whose file holds other bytes (an old
    inode) is reported, and --repair links it again; a --copy checkout is
    the user's and is not checked."""
    t.emu()
    t.ok("pull", lib.SAMPLE_REPO)
    src = lib.sample_files()
    dest = os.path.join(t.tmp, "co")
    mine = os.path.join(t.tmp, "mine")
    t.ok("checkout", lib.SAMPLE_REPO, "--to", dest)
    t.ok("checkout", lib.SAMPLE_REPO, "--to", mine, "--copy")
    for d in (dest, mine):
        p = os.path.join(d, "config.json")
        os.chmod(p, 0o644)
        os.unlink(p)
        with open(p, "wb") as fh:
            fh.write(b"{}\n")
    r = t.hm("verify")
    check(r.rc == 1 and "stale" in r.out and dest in r.out, "verify of a stale checkout: %r" % r)
    check(mine not in r.out, "a --copy checkout was checked: %r" % r)
    t.ok("verify", "--repair")
    check(lib.read(os.path.join(dest, "config.json")) == src["config.json"], "not re-linked")
    check(lib.read(os.path.join(mine, "config.json")) == b"{}\n", "the user's copy was touched")
    t.ok("verify")
