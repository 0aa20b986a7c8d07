"""test_inject.py - fault injection (util/fault.c, HUBMIRROR_FAULT): pull,
import, convert, sync and gc, each with its Nth write, fsync, rename or malloc
failing, for N over the calls a clean run makes. After each failure: exit 0
or a clean 'hubmirror: ' error (never a crash or a sanitizer report), an index
that passes PRAGMA integrity_check and `hubmirror verify`, no half-written
file under blobs/ or in a checkout, and the same command without the fault
completes.

`make check` takes a sparse, fixed set of N per kind (the first calls, the
last, and evenly spaced ones between: HM_FAULT_POINTS, default 6); set
HM_FAULT_FULL=1 to try every N (minutes per command):
    HM_FAULT_FULL=1 tests/run.py -j1 test_inject
"""

import json
import os
import shutil
import sqlite3

import lib
from lib import SAMPLE_REPO, check

KINDS = ("write", "fsync", "rename", "malloc")
# the full sweep is hundreds of rounds a command
TIMEOUT = 7200 if os.environ.get("HM_FAULT_FULL") else 600
SANITIZER = ("Sanitizer", "runtime error:", "Segmentation fault", "core dumped", "Aborted")


def points(count):
    """The N to try for a kind a clean run calls count times."""
    if count <= 0:
        return []
    if os.environ.get("HM_FAULT_FULL"):
        return list(range(1, count + 1))
    k = int(os.environ.get("HM_FAULT_POINTS", "6"))
    ns = {1, 2, count}
    for i in range(1, k + 1):
        ns.add(max(1, count * i // (k + 1)))
    return sorted(n for n in ns if 1 <= n <= count)


def fault_env(t, spec):
    log = os.path.join(t.tmp, "fault.log")
    if os.path.exists(log):
        os.unlink(log)
    return log, {"HUBMIRROR_FAULT": spec, "HUBMIRROR_FAULT_LOG": log}


def read_log(log):
    try:
        with open(log) as fh:
            lines = fh.read().split("\n")
    except OSError:
        return {}
    # one line per process that exited normally; the last is hubmirror's
    lines = [l for l in lines if l]
    if not lines:
        return {}
    return dict(kv.split("=") for kv in lines[-1].split())


def no_crash(r, what):
    check(r.rc is not None and 0 <= r.rc < 128, "%s crashed (signal): %r" % (what, r))
    for w in SANITIZER:
        check(w not in r.err, "%s: %r on stderr: %r" % (what, w, r))


def store_sound(t, store, what):
    """The index is intact and points at whole, verified blobs; nothing
    half-written sits under blobs/."""
    db = os.path.join(store, "index.db")
    blobs, bad = lib.store_blobs(store)
    check(not bad, "%s: files under blobs/ not named by their sha256: %s" % (what, bad[:5]))
    for sha, p in blobs.items():
        check(lib.sha256_file(p) == sha, "%s: blob %s is half-written or wrong" % (what, p))
    if not os.path.exists(db):
        return
    con = sqlite3.connect(db, timeout=30)
    try:
        ic = con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()
    check(ic == [("ok",)], "%s: integrity_check says %s" % (what, ic))
    lib.check_store_consistent(store)
    r = t.hm("verify", store=store)
    no_crash(r, what + ", then verify")
    check(r.rc == 0, "%s: verify is not clean: %r" % (what, r))


def loop(t, name, setup, run, after=None, partial=None):
    """setup(n) -> (store, extra) makes a fresh world for run number n;
    run(store, extra, env) runs the command; after(store, extra, what) checks
    what the finished command made, partial(store, extra, what) what a
    failed one may have left."""
    store, extra = setup(0)
    log, env = fault_env(t, "count")
    r = run(store, extra, env)
    check(r.rc == 0, "%s: the clean run failed: %r" % (name, r))
    counts = read_log(log)
    check(counts, "%s: no fault log (is the binary linked with util/fault.c?)" % name)
    if after:
        after(store, extra, name + " clean")
    tried = fired = 0
    failures = []
    n_run = 1
    for kind in KINDS:
        for n in points(int(counts.get(kind, 0))):
            what = "%s with %s:%d failing" % (name, kind, n)
            store, extra = setup(n_run)
            n_run += 1
            try:
                fired += one_round(t, what, kind, n, store, extra, run, after, partial)
            except lib.Fail as e:
                failures.append(str(e))
                print("FAIL %s" % e, flush=True)
            tried += 1
            t_clean(store)
    check(not failures, "%d of %d rounds failed:\n  %s" % (len(failures), tried, "\n  ".join(failures)))
    check(tried and fired * 2 >= tried, "%s: only %d of %d injected faults fired" % (name, fired, tried))


def one_round(t, what, kind, n, store, extra, run, after, partial):
    """One command with the nth call of kind failing, then without; returns
    1 if the fault fired."""
    log, env = fault_env(t, "%s:%d" % (kind, n))
    r = run(store, extra, env)
    no_crash(r, what)
    got = read_log(log)
    if r.rc != 0:
        errs = [l for l in r.err.splitlines() if l.startswith("hubmirror: ")]
        check(errs, "%s: no 'hubmirror: ' error line: %r" % (what, r))
    store_sound(t, store, what)
    if partial:
        partial(store, extra, what)
    r2 = run(store, extra, {})
    no_crash(r2, what + ", then again")
    check(r2.rc == 0, "%s: the run after it failed: %r" % (what, r2))
    store_sound(t, store, what + ", then again")
    if after:
        after(store, extra, what + ", then again")
    return 1 if got.get("fired") == "1" else 0


def t_clean(path):
    """Frees the disk of a finished round (blobs are read-only)."""
    for d, dirs, _ in os.walk(path):
        for x in dirs:
            os.chmod(os.path.join(d, x), 0o755)
    shutil.rmtree(path, ignore_errors=True)


def pulled_base(t):
    t.emu()
    base = os.path.join(t.tmp, "base")
    t.ok("pull", SAMPLE_REPO, store=base)
    return base


def copy_store(t, base, n):
    dst = os.path.join(t.tmp, "s%d" % n)
    shutil.copytree(base, dst, symlinks=True)
    return dst


def fresh_stores(t):
    """setup() for loop: an empty store a round."""
    return lambda n: (os.path.join(t.tmp, "s%d" % n), None)


def copied_stores(t, base):
    """setup() for loop: a copy of base a round."""
    return lambda n: (copy_store(t, base, n), None)


def check_blobs(store, files, what):
    """Every file's content is a whole blob of the store."""
    for p, data in files.items():
        check(lib.read(lib.blob_path(store, lib.sha256_bytes(data))) == data, "%s: %s not stored" % (what, p))


def test_inject_pull(t):
    t.emu()
    files = lib.sample_files()

    def run(store, _, env):
        return t.hm("pull", SAMPLE_REPO, "--json", store=store, env=env)

    def after(store, _, what):
        r = t.ok("ls", SAMPLE_REPO, "--json", store=store)
        got = {f["path"] for f in r.json().get("files", [])}
        check(got == set(files), "%s: ls shows %s" % (what, sorted(got)))
        check_blobs(store, files, what)

    loop(t, "pull", fresh_stores(t), run, after)


test_inject_pull.timeout = TIMEOUT


def test_inject_import(t):
    base = pulled_base(t)
    bundle = os.path.join(t.tmp, "a.tar")
    t.ok("export", SAMPLE_REPO, "-o", bundle, store=base)
    files = lib.sample_files()

    def run(store, _, env):
        return t.hm("import", bundle, store=store, env=env)

    loop(t, "import", fresh_stores(t), run, lambda store, _, what: check_blobs(store, files, what))


test_inject_import.timeout = TIMEOUT


def test_inject_convert(t):
    base = pulled_base(t)

    def run(store, _, env):
        return t.hm("convert", SAMPLE_REPO, "--type", "q8_0", "--json", store=store, env=env)

    def after(store, _, what):
        rows = lib.db_query(store, "SELECT sha256, size FROM artifacts")
        check(len(rows) == 1, "%s: artifacts %s" % (what, rows))
        p = lib.blob_path(store, rows[0]["sha256"])
        check(os.path.exists(p) and os.path.getsize(p) == rows[0]["size"],
              "%s: artifact blob missing" % what)

    loop(t, "convert", copied_stores(t, base), run, after)


test_inject_convert.timeout = TIMEOUT


def test_inject_sync(t):
    t.emu()
    m = os.path.join(t.tmp, "models.txt")
    with open(m, "w") as fh:
        fh.write("%s\n" % SAMPLE_REPO)
    files = lib.sample_files()

    def setup(n):
        return os.path.join(t.tmp, "s%d" % n), os.path.join(t.tmp, "to%d" % n)

    def run(store, dest, env):
        return t.hm("sync", m, "--to", dest, store=store, endpoint=t.endpoint, env=env)

    def checkout(dest):
        seen = {}
        for d, _, names in os.walk(dest):
            for x in names:
                p = os.path.join(d, x)
                seen[os.path.relpath(p, os.path.join(dest, SAMPLE_REPO))] = p
        return seen

    def partial(store, dest, what):
        # what a failed sync checked out is whole, under its own name
        for rel, p in checkout(dest).items():
            check(rel in files and lib.read(p) == files[rel], "%s: %s half-written" % (what, rel))

    def after(store, dest, what):
        seen = checkout(dest)
        check(set(seen) == set(files), "%s: checkout holds %s" % (what, sorted(seen)))
        for rel, p in seen.items():
            check(lib.read(p) == files[rel], "%s: %s half-written" % (what, rel))
        t_clean(dest)

    loop(t, "sync", setup, run, after, partial)


test_inject_sync.timeout = TIMEOUT


def test_inject_gc(t):
    base = pulled_base(t)
    t.ok("rm", SAMPLE_REPO, store=base)

    def run(store, _, env):
        return t.hm("gc", store=store, env=env)

    def after(store, _, what):
        blobs, _ = lib.store_blobs(store)
        check(not blobs, "%s: gc left %d blobs" % (what, len(blobs)))

    loop(t, "gc", copied_stores(t, base), run, after)


test_inject_gc.timeout = TIMEOUT
