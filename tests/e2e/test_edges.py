"""test_edges.py - edge cases: empty files, names that need URL quoting,
branch names with '/', quiet mode, SIGINT, credentials in the endpoint URL,
gc racing a pull, several repos at once, checkouts that must not alias blobs."""

import os
import signal
import stat
import time

import lib
from lib import check, SAMPLE_REPO


def test_empty_files(t):
    repo = {"type": "model", "id": "org/empty", "commits": [{"files": {
        "empty.txt": "", "empty.bin": "", "sub/also-empty.safetensors": "", "x.txt": "x\n"}}]}
    emu = t.emu([repo])
    r = t.ok("pull", "org/empty", "--json")
    lib.check_pulled(t, emu, "org/empty", r.json(), {
        "empty.txt": b"", "empty.bin": b"", "sub/also-empty.safetensors": b"", "x.txt": b"x\n"})
    dest = os.path.join(t.tmp, "out")
    t.ok("checkout", "org/empty", "--to", dest)
    check(os.path.getsize(os.path.join(dest, "empty.bin")) == 0, "empty.bin checkout")


def test_names_needing_quotes(t):
    files = {"dir with space/file name.txt": "space\n", "ünïcödé/данные.json": '{"u": 1}\n',
             "hash#1.txt": "hash\n", "q?mark.txt": "q\n", "pct%20.txt": "pct\n",
             "plus+and&amp.txt": "amp\n", "weights/big model.safetensors": {"random": 30000, "seed": 5}}
    emu = t.emu([{"type": "model", "id": "org/odd-names", "commits": [{"files": files}]}])
    r = t.ok("pull", "org/odd-names", "--json")
    want = {p: (v.encode() if isinstance(v, str) else lib.random_bytes(30000, 5))
            for p, v in files.items()}
    lib.check_pulled(t, emu, "org/odd-names", r.json(), want)
    bad = [(e["path"], e["status"]) for e in emu.log() if e["status"] >= 400]
    check(not bad, "failed requests: %s" % bad)
    dest = os.path.join(t.tmp, "out")
    t.ok("checkout", "org/odd-names", "--to", dest)
    for p, data in want.items():
        check(lib.read(os.path.join(dest, p)) == data, "checkout of %r" % p)


def test_branch_with_slash(t):
    repo = {"type": "model", "id": "org/branches", "commits": [
        {"files": {"v.txt": "feature\n"}, "refs": ["feature/x"]},
        {"files": {"v.txt": "main\n"}, "refs": ["main"]}]}
    emu = t.emu([repo])
    r = t.ok("pull", "org/branches", "--revision", "feature/x", "--json")
    lib.check_pulled(t, emu, "org/branches", r.json(), {"v.txt": b"feature\n"},
                     commit=lib.commit_id("org/branches", 0))
    dest = os.path.join(t.tmp, "out")
    t.ok("checkout", "org/branches", "--revision", "feature/x", "--to", dest)
    check(lib.read(os.path.join(dest, "v.txt")) == b"feature\n", "checkout feature/x")


def test_include_directory_glob(t):
    t.emu()
    r = t.ok("pull", SAMPLE_REPO, "--include", "original/*", "--json")
    got = sorted(lib.files_by_path(r.json()))
    check(got == ["original/params.json"], "--include original/* gave %s" % got)


def test_quiet(t):
    t.emu()
    r = t.ok("pull", SAMPLE_REPO, "-q")
    check(r.out.strip() == "", "pull -q printed: %r" % r)


def test_json_stdout_only_json(t):
    t.emu()
    r = t.ok("pull", SAMPLE_REPO, "--json")
    r.json()  # stdout must be exactly one JSON document, progress goes elsewhere


def test_sigint_then_resume(t):
    size = 24 * 1024 * 1024
    repo = {"type": "model", "id": "org/int", "commits": [{"files": {
        "big.bin": {"random": size, "seed": 9}}}]}
    emu = t.emu([repo])
    emu.faults([{"match": "big.bin", "kind": "slow", "rate": 1000000, "times": -1}])
    p = t.spawn("pull", "org/int")
    t0 = time.time()
    while emu.bytes_in_flight("big.bin") < size // 3 and time.time() - t0 < 30:
        check(p.poll() is None, "pull ended early")
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=20)
    except Exception:
        raise lib.Fail("pull did not stop within 20 s of SIGINT")
    check(p.returncode == 130, "exit status after SIGINT is %s (want 130); stderr %s"
          % (p.returncode, err[-500:]))
    lib.check_store_consistent(t.store)
    emu.faults([])
    emu.wait_idle()
    emu.reset_log()
    r = t.ok("pull", "org/int", "--json")
    lib.check_pulled(t, emu, "org/int", r.json(), {"big.bin": lib.random_bytes(size, 9)})
    check(emu.bytes_served("big.bin") < size * 0.9, "nothing resumed after SIGINT")


test_sigint_then_resume.timeout = 120


def test_endpoint_credentials_not_stored(t):
    emu = t.emu()
    ep = emu.url.replace("http://", "http://user:Sup3rSecretPw@")
    r = t.hm("pull", SAMPLE_REPO, endpoint=ep)
    check("Sup3rSecretPw" not in r.out + r.err, "endpoint password printed: %r" % r)
    for d, _, names in os.walk(t.store):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                check(b"Sup3rSecretPw" not in lib.read(p), "endpoint password stored in %s" % p)


def test_gc_during_pull(t):
    """gc running while a pull is in flight must not remove blobs the pull
    is about to record, nor its partial download."""
    size = 16 * 1024 * 1024
    files = {"big.bin": {"random": size, "seed": 3}}
    files.update({"small/%02d.txt" % i: "small %d\n" % i for i in range(30)})
    emu = t.emu([{"type": "model", "id": "org/racing", "commits": [{"files": files}]}])
    emu.faults([{"match": "big.bin", "kind": "slow", "rate": 1500000, "times": -1}])
    p = t.spawn("pull", "org/racing", "--json")
    # gc refuses a directory that is not a store yet: wait for the pull to make it
    for _ in range(1000):
        if os.path.exists(os.path.join(t.store, "index.db")) or p.poll() is not None:
            break
        time.sleep(0.01)
    gcs = 0
    while p.poll() is None and gcs < 200:
        r = t.hm("gc")
        check(r.rc == 0, "gc during a pull: %r" % r)
        gcs += 1
        time.sleep(0.1)
    out, err = p.communicate(timeout=120)
    check(p.returncode == 0, "pull racing gc failed: rc %s %s" % (p.returncode, err[-800:]))
    lib.check_store_consistent(t.store)
    t.ok("verify")
    want = {k: (v.encode() if isinstance(v, str) else lib.random_bytes(size, 3))
            for k, v in files.items()}
    import json
    lib.check_pulled(t, emu, "org/racing", json.loads(out), want)


test_gc_during_pull.timeout = 150


def test_concurrent_different_repos(t):
    a = {"type": "model", "id": "org/a", "commits": [{"files": {
        "w.bin": {"random": 3000000, "seed": 1}, "c.json": "{}\n"}}]}
    b = {"type": "model", "id": "org/b", "commits": [{"files": {
        "w.bin": {"random": 3000000, "seed": 2}, "c.json": "{}\n"}}]}
    emu = t.emu([a, b, lib.sample_repo()])
    procs = [t.spawn("pull", r) for r in ("org/a", "org/b", SAMPLE_REPO)]
    for p in procs:
        out, err = p.communicate(timeout=100)
        check(p.returncode == 0, "%s failed: %s" % (p.argv, err[-800:]))
    lib.check_store_consistent(t.store)
    names = sorted(r["name"] for r in t.db("SELECT name FROM repos"))
    check(names == sorted(["org/a", "org/b", SAMPLE_REPO]), "repos %s" % names)
    t.ok("verify")


def test_checkout_copy_does_not_alias_blobs(t):
    """checkout --copy gives files one may edit without touching the store.
    (The default checkout hard-links the read-only blobs, by design: editing
    those after a chmod corrupts the blob, which verify reports.)"""
    t.emu()
    t.ok("pull", SAMPLE_REPO)
    dest = os.path.join(t.tmp, "out")
    t.ok("checkout", SAMPLE_REPO, "--to", dest, "--copy")
    p = os.path.join(dest, "config.json")
    os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)
    with open(p, "r+b") as fh:
        fh.write(b"XX")
    r = t.hm("verify")
    check(r.rc == 0, "editing a --copy checkout corrupted the store: %r" % r)


def test_checkout_default_edit_is_detected(t):
    """The documented hazard of the default (hard-linked) checkout: an
    in-place edit is caught by verify, and verify --repair restores the blob."""
    emu = t.emu()
    t.ok("pull", SAMPLE_REPO)
    dest = os.path.join(t.tmp, "out")
    t.ok("checkout", SAMPLE_REPO, "--to", dest)
    p = os.path.join(dest, "config.json")
    check(os.stat(p).st_mode & 0o222 == 0, "checked-out file is writable")
    os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)
    with open(p, "r+b") as fh:
        fh.write(b"XX")
    r = t.hm("verify")
    if r.rc == 0:
        return  # not aliased after all (a copy): nothing to detect
    check(r.rc == 1 and "config.json" in r.text, "verify: %r" % r)
    t.ok("verify", "--repair", endpoint=emu.url)
    t.ok("verify")
    src = lib.sample_files()["config.json"]
    check(lib.read(t.blob(lib.sha256_bytes(src))) == src, "blob not restored")


def test_checkout_twice(t):
    t.emu()
    t.ok("pull", SAMPLE_REPO)
    for layout in ("files", "hf-cache"):
        dest = os.path.join(t.tmp, "out-" + layout)
        t.ok("checkout", SAMPLE_REPO, "--to", dest, "--layout", layout)
        t.ok("checkout", SAMPLE_REPO, "--to", dest, "--layout", layout)


def test_checkout_hf_cache_dataset(t):
    ds = {"type": "dataset", "id": "org/ds", "commits": [{"files": {
        "data/a.csv": "a\n1\n", "data/b.parquet": {"random": 20000, "seed": 4}}}]}
    t.emu([ds])
    t.ok("pull", "org/ds", "--repo-type", "dataset")
    dest = os.path.join(t.tmp, "hub")
    r = t.hm("checkout", "org/ds", "--repo-type", "dataset", "--to", dest, "--layout", "hf-cache")
    check(r.rc == 0, "checkout of a dataset: %r" % r)
    root = os.path.join(dest, "datasets--org--ds")
    commit = lib.commit_id("org/ds", 0)
    check(lib.read(os.path.join(root, "snapshots", commit, "data", "a.csv")) == b"a\n1\n",
          "datasets--org--ds/snapshots/<commit>/data/a.csv")
    check(lib.read(os.path.join(root, "refs", "main")).decode().strip() == commit, "refs/main")


def test_repair_unreachable_fails_cleanly(t):
    emu = t.emu()
    r = t.ok("pull", SAMPLE_REPO, "--json")
    sha = lib.files_by_path(r.json())["README.md"]["sha256"]
    os.unlink(t.blob(sha))
    port = lib.free_port()
    r = t.hm("verify", "--repair", endpoint="http://127.0.0.1:%d" % port)
    check(r.rc == 1, "verify --repair with a dead endpoint should exit 1: %r" % r)
    lib.clean_error(r)
    check("README.md" in r.text, "should name README.md: %r" % r)
