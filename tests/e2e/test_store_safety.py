"""test_store_safety.py - a lost index never costs blobs (rebuild-index), a
typo in --store creates nothing, and every listing names its store."""

import json
import os
import sqlite3

import lib
from lib import check, SAMPLE_REPO


def pulled(t):
    emu = t.emu()
    r = t.ok("pull", SAMPLE_REPO, "--json")
    return emu, r.json()


def blob_files(store):
    blobs, _ = lib.store_blobs(store)
    return blobs


def drop_index(store, truncate=False):
    for suffix in ("-wal", "-shm"):
        if os.path.exists(os.path.join(store, "index.db" + suffix)):
            os.unlink(os.path.join(store, "index.db" + suffix))
    path = os.path.join(store, "index.db")
    if truncate:
        open(path, "w").close()
    else:
        os.unlink(path)


def check_lost_index(t, truncate):
    emu, _ = pulled(t)
    before = blob_files(t.store)
    check(before, "the pull stored no blobs")
    drop_index(t.store, truncate)
    # every command refuses, naming the way back; nothing is deleted
    for args in (["ls"], ["verify"], ["gc"], ["stats"], ["du"], ["pull", SAMPLE_REPO]):
        r = t.fails(*args, words=["rebuild-index"])
        check("missing or empty" in r.err, "the refusal should say what is wrong: %r" % r)
    check(blob_files(t.store) == before, "blobs went while the index was lost")
    check(not os.path.exists(os.path.join(t.store, "index.db")) or
          os.path.getsize(os.path.join(t.store, "index.db")) == 0, "a command made a new index")

    r = t.ok("rebuild-index", "--json")
    j = r.json()
    check(j["blobs_added"] == len(before) and j["blobs_corrupt"] == 0, "rebuild-index: %r" % r)
    check(j["store"] == t.store, "rebuild-index names its store: %r" % r)
    # the index knows the blobs, but no revision: gc refuses to delete them
    r = t.fails("gc", words=["--force"])
    check("no revision" in r.err, "gc refusal: %r" % r)
    check(blob_files(t.store) == before, "gc removed blobs of a rebuilt index")
    # pulling again records the revision and downloads nothing
    emu.reset_log()
    t.ok("pull", SAMPLE_REPO)
    check(emu.bytes_served() == 0, "the pull after rebuild-index downloaded %d bytes" % emu.bytes_served())
    t.ok("verify")
    t.ok("gc")
    check(blob_files(t.store) == before, "gc after the pull removed blobs")
    lib.check_store_consistent(t.store)


def test_missing_index_refuses_and_rebuilds(t):
    check_lost_index(t, truncate=False)


def test_empty_index_refuses_and_rebuilds(t):
    check_lost_index(t, truncate=True)


def test_gc_force_without_revisions(t):
    """The twin of gc's refusal: --force deletes what no revision uses; and
    after 'rm' of everything pulled (the index remembers the pulls) gc needs
    no --force."""
    pulled(t)
    drop_index(t.store)
    t.ok("rebuild-index")
    t.fails("gc", words=["--force"])
    check(blob_files(t.store), "refused gc removed blobs")
    r = t.ok("gc", "--dry-run", "--force")
    check("would remove blob" in r.out and blob_files(t.store), "gc --dry-run --force: %r" % r)
    t.ok("gc", "--force")
    check(not blob_files(t.store), "gc --force left blobs")
    t.ok("pull", SAMPLE_REPO)
    t.ok("rm", SAMPLE_REPO)
    t.ok("gc")
    check(not blob_files(t.store), "gc after rm left blobs")


def test_rebuild_index_reports_corrupt_blob(t):
    pulled(t)
    blobs = blob_files(t.store)
    sha, path = sorted(blobs.items())[0]
    drop_index(t.store)
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        b = fh.read(1)
        fh.seek(0)
        fh.write(bytes([b[0] ^ 0xFF]))
    r = t.hm("rebuild-index", "--json")
    check(r.rc == 1, "rebuild-index with a corrupt blob should exit 1: %r" % r)
    j = r.json()
    check(j["blobs_corrupt"] == 1 and j["blobs_added"] == len(blobs) - 1, "rebuild-index: %r" % r)
    rows = {x["sha256"] for x in t.db("SELECT sha256 FROM blobs")}
    check(sha not in rows and len(rows) == len(blobs) - 1, "corrupt blob indexed: %s" % rows)


def test_verify_reports_unindexed_blobs(t):
    pulled(t)
    t.ok("verify")
    data = b"a blob nobody indexed\n"
    sha = lib.sha256_bytes(data)
    os.makedirs(os.path.dirname(t.blob(sha)), exist_ok=True)
    with open(t.blob(sha), "wb") as fh:
        fh.write(data)
    # reported (a killed pull leaves such blobs too: they cost nothing, so
    # the exit status stays 0)
    r = t.ok("verify")
    check(sha in r.out and "rebuild-index" in r.err and "not in the index" in r.err,
          "verify with an unindexed blob: %r" % r)
    j = t.ok("verify", "--json").json()
    check([u["path"] for u in j["unindexed"]] == [t.blob(sha)], "verify --json: %s" % j)
    t.ok("rebuild-index")
    r = t.ok("verify")
    check("not in the index" not in r.text, "verify after rebuild-index: %r" % r)
    check(t.db("SELECT size FROM blobs WHERE sha256 = ?", (sha,)) == [{"size": len(data)}],
          "rebuild-index did not index the blob")


def test_verify_runs_quick_check(t):
    pulled(t)
    con = sqlite3.connect(os.path.join(t.store, "index.db"))
    page = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'smoke_results'").fetchone()[0]
    con.close()
    check(not os.path.exists(os.path.join(t.store, "index.db-wal")), "a WAL was left behind")
    with open(os.path.join(t.store, "index.db"), "r+b") as fh:
        fh.seek((root - 1) * page)
        fh.write(b"\xff" * 8)
    r = t.hm("verify")
    check(r.rc == 1 and "quick_check" in r.err, "verify of a damaged index.db: %r" % r)
    j = t.hm("verify", "--json").json()
    check(j["index_ok"] is False and j["index_problems"], "verify --json: %s" % j)


def test_store_typo_creates_nothing(t):
    pulled(t)
    typo = t.store + "-typo"
    for args in (["ls"], ["ls", SAMPLE_REPO], ["stats"], ["du"], ["verify"],
                 ["checkout", SAMPLE_REPO, "--to", os.path.join(t.tmp, "co")],
                 ["export", SAMPLE_REPO, "-o", os.path.join(t.tmp, "b.tar")],
                 ["gc"], ["rm", SAMPLE_REPO]):
        t.fails(*args, store=typo, words=["not a hubmirror store"])
        check(not os.path.exists(typo), "%s created %s" % (args, typo))
    # an existing directory that is not a store is refused too, and left alone
    os.makedirs(typo)
    t.fails("ls", store=typo, words=["not a hubmirror store"])
    check(os.listdir(typo) == [], "ls wrote into a directory that is not a store: %s" % os.listdir(typo))
    # writing commands create one
    r = t.ok("pull", SAMPLE_REPO, store=typo)
    check(os.path.exists(os.path.join(typo, "index.db")), "pull did not create the store")
    t.ok("ls", store=typo)


def test_listings_name_their_store(t):
    pulled(t)
    for args in (["ls"], ["ls", SAMPLE_REPO], ["stats"], ["du"]):
        r = t.ok(*args)
        check(r.out.splitlines()[0] == "store: %s" % t.store, "%s does not start with its store: %r" % (args, r))
        j = t.ok(*(args + ["--json"])).json()
        check(j.get("store") == t.store, "%s --json has no store key: %s" % (args, json.dumps(j)[:300]))
    j = t.ok("verify", "--json").json()
    check(j.get("store") == t.store, "verify --json: %s" % j)


def many_files_repo(repo_id, n):
    return {"type": "model", "id": repo_id, "commits": [{"files": {
        "f%03d.txt" % i: "file %d of %s\n" % (i, repo_id) for i in range(n)}, "refs": ["main"]}]}


def test_concurrent_pulls_of_one_repo_wait(t):
    """Two pulls of one repo at once: neither fails with 'database is
    locked'; the one that comes second waits and fetches nothing twice."""
    n = 150
    emu = t.emu([many_files_repo("org/many", n)])
    for round_ in range(3):
        if round_:
            t.ok("rm", "org/many")
            t.ok("gc", "--force")
        emu.reset_log()
        procs = [t.spawn("pull", "org/many", "--json") for _ in range(2)]
        for p in procs:
            try:
                out, err = p.communicate(timeout=120)
            except Exception:
                raise lib.Fail("a concurrent pull did not finish in 120 s")
            check(p.returncode == 0 and b"locked" not in err,
                  "round %d: a concurrent pull failed: rc %s\n  stderr: %s" % (round_, p.returncode, err[-1500:]))
        gets = {}
        for g in emu.file_gets():
            gets[g.get("file")] = gets.get(g.get("file"), 0) + 1
        twice = {k: v for k, v in gets.items() if v > 1}
        check(not twice, "round %d: files fetched more than once: %s" % (round_, sorted(twice)[:5]))
        check(len(gets) == n, "round %d: %d of %d files fetched" % (round_, len(gets), n))
        lib.check_store_consistent(t.store)


test_concurrent_pulls_of_one_repo_wait.timeout = 300


def test_first_open_waits_for_a_writer_of_the_new_index(t):
    """Switching a new index.db to WAL needs an exclusive lock; when the
    other process's commit is waiting for our shared lock, SQLite answers
    'database is locked' at once instead of calling the busy handler (two
    first pulls into one new store failed so). The open now lets go and
    tries again."""
    import sqlite3
    import time
    os.makedirs(t.store)
    con = sqlite3.connect(os.path.join(t.store, "index.db"), isolation_level=None, timeout=20)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("CREATE TABLE other_writer(a)")
        p = t.spawn("rebuild-index")
        time.sleep(1.0)
        if p.poll() is not None:
            raise lib.Fail("the open did not wait for the writer: rc %s %s" % (p.returncode, p.communicate()))
        con.execute("COMMIT")  # waits for the open's shared lock
    finally:
        con.close()
    out, err = p.communicate(timeout=60)
    check(p.returncode == 0, "the open failed: rc %s %s" % (p.returncode, err.decode()[-500:]))
    t.ok("ls")


# ---- gc: partial downloads, dry runs, reasons ------------------------------

BIG = 24 * 1024 * 1024


def big_and_small_repos():
    return [{"type": "model", "id": "org/big", "commits": [{"files": {
                "README.md": "# big\n", "big.bin": {"random": BIG, "seed": 7}}, "refs": ["main"]}]},
            {"type": "model", "id": "org/small", "commits": [{"files": {"a.txt": "a\n"}, "refs": ["main"]}]}]


def partials(store):
    d = os.path.join(store, "tmp")
    return sorted(n for n in os.listdir(d) if n.endswith((".part", ".state")))


def test_gc_keeps_a_fresh_partial_that_pull_resumes(t):
    import signal
    import time
    emu = t.emu(big_and_small_repos())
    t.ok("pull", "org/small")
    emu.faults([{"match": "big.bin", "kind": "slow", "rate": 2000000, "times": -1}])
    p = t.spawn("pull", "org/big")
    t0 = time.time()
    # killed once a third is in and its resume state saved
    while (emu.bytes_in_flight("big.bin") + emu.bytes_served("big.bin") < BIG // 3 or
           not any(n.endswith(".state") for n in partials(t.store))):
        check(p.poll() is None and time.time() - t0 < 60, "the pull ended or stalled before the kill")
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = partials(t.store)
    check(len(before) == 2, "no partial after the kill: %s" % before)
    size = sum(os.path.getsize(os.path.join(t.store, "tmp", n)) for n in before)
    # gc keeps it and says why; a dry run with age 0 lists it with its size
    r = t.ok("gc")
    check("kept 1 partial download(s)" in r.out and "resumes" in r.out, "gc does not say it kept the partial: %r" % r)
    check(partials(t.store) == before, "gc removed a fresh partial: %s -> %s" % (before, partials(t.store)))
    j = t.ok("gc", "--dry-run", "--keep-partials-days", "0", "--json").json()
    check(j["dry_run"] and j["partials_removed"] == 1 and j["partial_bytes_removed"] == size,
          "dry run counts: %s (on disk %d)" % (j, size))
    items = [i for i in j["items"] if i["kind"] == "partial"]
    check(len(items) == 1 and items[0]["action"] == "would remove" and items[0]["bytes"] == size,
          "dry run items: %s" % items)
    check(partials(t.store) == before, "a dry run removed the partial")
    # the same pull resumes it
    emu.faults([])
    emu.wait_idle()
    emu.reset_log()
    t.ok("pull", "org/big")
    again = emu.bytes_served("big.bin")
    check(again < BIG * 0.8, "the pull after gc fetched %d of %d bytes: not resumed" % (again, BIG))
    lib.check_store_consistent(t.store)


test_gc_keeps_a_fresh_partial_that_pull_resumes.timeout = 150


def test_gc_counts_old_partials_and_lock_debris(t):
    """The twin: old unused partials go, each counted once with its bytes
    (.part and .state), whatever order the directory lists them in."""
    import time
    emu = t.emu(big_and_small_repos())
    t.ok("pull", "org/small")
    tmp = os.path.join(t.store, "tmp")
    old = time.time() - 10 * 86400
    want = 0
    for key, n in (("a" * 64, 1000), ("git-" + "b" * 40, 5000)):
        for ext, k in ((".part", n), (".state", 100)):
            path = os.path.join(tmp, key + ext)
            with open(path, "wb") as fh:
                fh.write(b"x" * k)
            os.utime(path, (old, old))
            want += k
        open(os.path.join(tmp, key + ".lock"), "w").close()
    open(os.path.join(tmp, "c" * 64 + ".lock"), "w").close()  # a lock alone
    fresh = os.path.join(tmp, "d" * 64 + ".part")
    with open(fresh, "wb") as fh:
        fh.write(b"y" * 300)
    r = t.ok("gc", "--json")
    j = r.json()
    check(j["partials_removed"] == 2 and j["partial_bytes_removed"] == want, "gc counts: %s (want 2, %d)" % (j, want))
    check(j["kept"]["partials_young"] == 1 and j["kept"]["partial_bytes_young"] == 300, "kept: %s" % j["kept"])
    # (gc.lock and .keys.lock, the per-key locks, belong to the store)
    left = sorted(n for n in os.listdir(tmp) if n not in ("gc.lock", ".keys.lock"))
    check(left == ["d" * 64 + ".part"], "tmp/ after gc: %s" % left)


def test_gc_says_why_it_kept_blobs_of_a_shared_store(t):
    """While another process has the store open, gc keeps unreferenced blobs
    added in the last hour and names who has it open."""
    import fcntl
    emu = t.emu(big_and_small_repos())
    emu.faults([])
    t.ok("pull", "org/small")
    t.ok("pull", "org/big")
    t.ok("rm", "org/big")
    with open(os.path.join(t.store, "tmp", "gc.lock")) as lk:
        fcntl.flock(lk, fcntl.LOCK_SH)  # as an open store does
        r = t.ok("gc")
        check("kept 2 unreferenced blob(s)" in r.out and "another process has the store open" in r.out
              and "pid %d" % os.getpid() in r.out, "gc does not say why it kept blobs: %r" % r)
        check(os.path.exists(t.blob(lib.sha256_bytes(b"# big\n"))), "gc removed a blob of a shared store")
        j = t.ok("gc", "--json").json()
        check(j["kept"]["blobs_in_use_elsewhere"] == 2 and j["blobs_removed"] == 0, "gc --json: %s" % j)
    r = t.ok("gc")
    check("removed 2 unreferenced blob(s)" in r.out and "kept" not in r.out, "gc alone: %r" % r)
    check(not os.path.exists(t.blob(lib.sha256_bytes(b"# big\n"))), "gc alone left the blob")


# ---- a store this user can read but not write ------------------------------

NOBODY = 65534


def as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def open_to_others(t):
    """Lets another user reach the store: the test's temp dirs are 0700."""
    d = t.store
    while True:
        d = os.path.dirname(d)
        if d in ("/", "/tmp", ""):
            break
        os.chmod(d, os.stat(d).st_mode | 0o005)


def nobody(t, *args, store=True):
    import subprocess
    import time
    argv = t.argv([str(a) for a in args], store, False)
    t0 = time.time()
    p = subprocess.run([lib.BIN] + argv, capture_output=True, env=t.environ(), cwd=t.tmp,
                       preexec_fn=as_nobody, timeout=60)
    return lib.Result(argv, p.returncode, p.stdout.decode("utf-8", "replace"),
                      p.stderr.decode("utf-8", "replace"), time.time() - t0)


def files_of(store, uid):
    return [os.path.join(d, n) for d, _, ns in os.walk(store) for n in ns
            if os.lstat(os.path.join(d, n)).st_uid == uid]


def test_read_only_user_reads_a_shared_store(t):
    import serve_lib as sl
    emu, j = pulled(t)
    src = lib.sample_files()
    open_to_others(t)
    for args in (["ls"], ["ls", SAMPLE_REPO], ["stats"], ["du"], ["verify"], ["ls", "--json"]):
        r = nobody(t, *args)
        check(r.rc == 0, "as another user: %r" % r)
        if "--json" not in args and args != ["verify"]:
            check(r.out.startswith("store: %s (read-only)" % t.store), "%s does not say read-only: %r" % (args, r))
    check("ok: %d files verified" % len(src) in nobody(t, "verify").out, "verify as another user")
    # a writing command says why it cannot, in one line
    for args in (["verify", "--repair"], ["gc"], ["rm", SAMPLE_REPO]):
        r = nobody(t, *args)
        check(r.rc == 1, "%s as another user: %r" % (args, r))
        lib.clean_error(r, ["cannot write the store"])
    # checkout --copy into the user's own directory
    out = os.path.join(t.tmp, "co")
    os.makedirs(out)
    os.chown(out, NOBODY, NOBODY)
    r = nobody(t, "checkout", SAMPLE_REPO, "--copy", "--to", out)
    check(r.rc == 0, "checkout --copy as another user: %r" % r)
    for path, data in src.items():
        check(lib.read(os.path.join(out, path)) == data, "checked out %s differs" % path)
    # serve: files answered, statistics off with a note
    before = len(t.db("SELECT * FROM served"))
    srv = sl.Server(t, preexec=as_nobody)
    r = srv.get(sl.resolve_url(SAMPLE_REPO, "main", "config.json"))
    check(r.status == 200 and r.body == src["config.json"], "serve as another user: %r" % r)
    srv.stop()
    check("read-only" in srv.stderr() and "statistics" in srv.stderr(), "serve gives no note: %s" % srv.stderr())
    check(len(t.db("SELECT * FROM served")) == before, "a read-only serve recorded requests")
    # and nothing in the store belongs to the reader
    check(not files_of(t.store, NOBODY), "the reader wrote into the store: %s" % files_of(t.store, NOBODY))


def test_read_only_filesystem_store(t):
    """A store on a read-only mount (bind-mounted read-only in a private
    mount namespace) is read without its lock file."""
    import subprocess
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        print("skipped: no mount namespaces here")
        return
    pulled(t)
    script = ('mount --bind -o ro "$1" "$1" || exit 99; shift; for c in ls stats du verify; do '
              '"$0" --store "$STORE" $c || exit $?; done; "$0" --store "$STORE" gc; echo "gc rc=$?"')
    p = subprocess.run(["unshare", "-m", "sh", "-c", script, lib.BIN, t.store], capture_output=True,
                       env=dict(t.environ(), STORE=t.store), timeout=120)
    out, err = p.stdout.decode(), p.stderr.decode()
    check(p.returncode != 99, "cannot bind-mount read-only: %s" % err)
    check(p.returncode == 0, "reading a read-only filesystem store failed: rc %d\n%s\n%s" % (p.returncode, out, err))
    check("store: %s (read-only)" % t.store in out and "gc rc=1" in out and "Read-only file system" in err,
          "output: %s %s" % (out, err))


def test_serve_refuses_a_directory_that_is_not_a_store(t):
    import serve_lib as sl
    try:
        sl.Server(t, store=t.store + "-typo")
    except sl.NotStarted as e:
        check(e.rc == 1 and "not a hubmirror store" in e.stderr, "serve on a typo: %s" % e)
    else:
        raise lib.Fail("serve started on a directory that is not a store")
    check(not os.path.exists(t.store + "-typo"), "serve created the typo directory")


# ---- debris: lock files, temps of killed conversions -----------------------

def tmp_entries(t):
    return sorted(os.listdir(os.path.join(t.store, "tmp")))


def test_pull_leaves_no_lock_files(t):
    pulled(t)
    # one file holds every key's lock (a byte each): nothing per blob
    locks = [n for n in tmp_entries(t) if n.endswith(".lock") and n not in ("gc.lock", ".keys.lock")]
    check(not locks, "a pull left %d lock file(s) in tmp/: %s" % (len(locks), locks[:3]))
    # a second pull of the same files (all present) neither
    t.ok("pull", SAMPLE_REPO)
    check(not [n for n in tmp_entries(t) if n not in ("gc.lock", ".keys.lock")],
          "tmp/ after two pulls: %s" % tmp_entries(t))


def test_convert_sweeps_temps_of_dead_conversions(t):
    import fcntl
    import subprocess
    pulled(t)
    tmp = os.path.join(t.store, "tmp")
    dead = subprocess.Popen(["true"])
    dead.wait()
    tag = "0123456789abcdef"
    # a killed conversion: its temp and its lock, nobody holding it
    killed = "convert-%d-%s" % (dead.pid, tag)
    with open(os.path.join(tmp, killed + ".gguf"), "wb") as fh:
        fh.write(b"g" * 100000)
    open(os.path.join(tmp, killed + ".lock"), "w").close()
    # an older one without a lock whose process is gone, as a directory
    old = "convert-%d-%s.d" % (dead.pid, "fedcba9876543210")
    os.makedirs(os.path.join(tmp, old, "sub"))
    open(os.path.join(tmp, old, "sub", "x"), "w").close()
    # a live conversion (this process) holding its lock
    live = "convert-%d-%s" % (os.getpid(), "aaaaaaaaaaaaaaaa")
    with open(os.path.join(tmp, live + ".gguf"), "wb") as fh:
        fh.write(b"l" * 10)
    lk = open(os.path.join(tmp, live + ".lock"), "w")
    fcntl.flock(lk, fcntl.LOCK_EX)
    try:
        t.ok("convert", SAMPLE_REPO, "--type", "f16")
        left = [n for n in tmp_entries(t) if n.startswith("convert-")]
        check(sorted(left) == sorted([live + ".gguf", live + ".lock"]),
              "convert-* in tmp/ after the next convert: %s" % left)
        # gc alone would take everything; held open elsewhere it keeps the live one
        r = t.ok("gc", "--dry-run")
        check(live not in r.out, "gc --dry-run would remove a live conversion's temp: %r" % r)
    finally:
        lk.close()
    r = t.ok("gc")
    check("1 interrupted conversion(s)" in r.out, "gc after the conversion died: %r" % r)
    check(not [n for n in tmp_entries(t) if n.startswith("convert-")], "tmp/ after gc: %s" % tmp_entries(t))
