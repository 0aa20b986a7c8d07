"""test_faults.py - every fetch has a twin that breaks something: dropped
connections, 5xx, 429, stalls, corrupt bytes, servers that ignore Range, and
broken API answers."""

import os

import lib
from lib import check, SAMPLE_REPO

BIG = "model.safetensors"   # LFS, served by the CDN
SMALL = "config.json"       # regular, served by resolve-cache


def pull_with(t, faults, *extra):
    emu = t.emu()
    emu.faults(faults)
    r = t.hm("pull", SAMPLE_REPO, "--json", *extra)
    return emu, r


def expect_ok(t, emu, r, path=None, min_gets=2):
    check(r.rc == 0, "pull should survive the fault: %r" % r)
    lib.check_pulled(t, emu, SAMPLE_REPO, r.json(), lib.sample_files())
    lib.check_store_consistent(t.store)
    if path:
        n = len(emu.file_gets(path=path))
        check(n >= min_gets, "%s fetched %d time(s): the fault did not bite" % (path, n))
    hits = [f for f in emu.faults() if f.get("hits", 0) == 0]
    check(not hits, "faults never applied: %s" % hits)


def expect_clean_failure(t, r, words=()):
    check(r.rc == 1, "expected exit 1: %r" % r)
    lib.clean_error(r, words)
    nothing_committed(t)


def nothing_committed(t):
    if os.path.exists(os.path.join(t.store, "index.db")):
        revs = t.db("SELECT commit_sha FROM revisions")
        check(not revs, "a failed pull recorded revisions: %s" % revs)
        files = t.db("SELECT path FROM files")
        check(not files, "a failed pull recorded files: %s" % files)
    lib.check_store_consistent(t.store)
    blobs, bad = lib.store_blobs(t.store)
    check(not bad, "misnamed files under blobs/: %s" % bad)
    for sha, p in blobs.items():
        check(lib.sha256_file(p) == sha, "blob %s has wrong content" % p)


def test_drop_lfs(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "drop"}])
    expect_ok(t, emu, r, BIG)


def test_drop_lfs_rst(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "drop", "rst": True, "times": 2}])
    expect_ok(t, emu, r, BIG, 3)


def test_drop_regular(t):
    emu, r = pull_with(t, [{"match": SMALL, "kind": "drop"}])
    expect_ok(t, emu, r, SMALL)


def test_drop_resume_not_restart(t):
    """After a drop at 3/4 of the file the client asks for the rest only."""
    size = len(lib.sample_files()[BIG])
    emu, r = pull_with(t, [{"match": BIG, "kind": "drop", "after": size * 3 // 4}],
                       "--connections", "1")
    expect_ok(t, emu, r, BIG)
    served = emu.bytes_served(BIG)
    check(served < size * 1.5, "%d bytes served for a %d-byte file after one drop at 3/4: "
          "the download restarted instead of resuming" % (served, size))


def test_status_503_transient(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "status", "status": 503, "times": 2}])
    expect_ok(t, emu, r, BIG, 3)


def test_status_500_regular_transient(t):
    emu, r = pull_with(t, [{"match": SMALL, "kind": "status", "status": 500}])
    expect_ok(t, emu, r, SMALL)


def test_status_503_persistent(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "status", "status": 503, "times": -1}])
    expect_clean_failure(t, r, ["503", "unavailable"])
    n = len(emu.file_gets(path=BIG))
    check(2 <= n <= 20, "%d attempts on a persistent 503 (want a bounded retry)" % n)


test_status_503_persistent.timeout = 180


def test_ratelimit_retry_after(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "ratelimit", "retry_after": 2}])
    expect_ok(t, emu, r, BIG)
    gets = emu.file_gets(path=BIG)
    first = next(e for e in gets if e["status"] == 429)
    later = [e for e in gets if e["seq"] > first["seq"]]
    check(later, "no retry after the 429")
    wait = later[0]["time"] - first["time"]
    check(wait >= 1.8, "retried %.2fs after a 429 with Retry-After: 2" % wait)


def test_ratelimit_persistent(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "ratelimit", "retry_after": 1, "times": -1}])
    expect_clean_failure(t, r, ["rate limit"])


test_ratelimit_persistent.timeout = 180


def test_stall_short(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "stall", "seconds": 2}])
    expect_ok(t, emu, r, BIG, 1)


def test_corrupt_once_lfs(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "corrupt", "offset": 123457}],
                       "--connections", "1")
    expect_ok(t, emu, r, BIG)


def test_corrupt_once_regular(t):
    emu, r = pull_with(t, [{"match": SMALL, "kind": "corrupt", "offset": 10}])
    expect_ok(t, emu, r, SMALL)


def test_corrupt_always_fails(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "corrupt", "offset": 123457, "times": -1}])
    expect_clean_failure(t, r)
    check(BIG in r.err, "the error should name %s: %r" % (BIG, r))
    n = len(emu.file_gets(path=BIG))
    check(n <= 20, "%d attempts on a persistently corrupt file" % n)


test_corrupt_always_fails.timeout = 180


def test_corrupt_always_regular_fails(t):
    emu, r = pull_with(t, [{"match": SMALL, "kind": "corrupt", "offset": 5, "times": -1}])
    expect_clean_failure(t, r)
    check(SMALL in r.err, "the error should name %s: %r" % (SMALL, r))


test_corrupt_always_regular_fails.timeout = 180


def test_norange_after_drop(t):
    """The resume request is answered 200 with the whole file."""
    emu, r = pull_with(t, [{"match": BIG, "kind": "drop"},
                           {"match": BIG, "kind": "norange", "times": -1}])
    check(r.rc == 0, "pull should survive a server ignoring Range: %r" % r)
    lib.check_pulled(t, emu, SAMPLE_REPO, r.json(), lib.sample_files())


def test_norange_segmented(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "norange", "times": -1}],
                       "--connections", "4")
    check(r.rc == 0, "pull should survive a server ignoring Range: %r" % r)
    lib.check_pulled(t, emu, SAMPLE_REPO, r.json(), lib.sample_files())


def test_segmented_drop(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "drop", "times": 3}], "--connections", "4")
    expect_ok(t, emu, r, BIG, 4)


def test_api_503_transient(t):
    emu, r = pull_with(t, [{"match": "api", "kind": "status", "status": 503}])
    expect_ok(t, emu, r)


def test_api_429_transient(t):
    emu, r = pull_with(t, [{"match": "api", "kind": "ratelimit", "retry_after": 1}])
    expect_ok(t, emu, r)


def test_resolve_503_transient(t):
    emu, r = pull_with(t, [{"match": "resolve:" + BIG, "kind": "status", "status": 503}])
    expect_ok(t, emu, r)


def test_api_503_persistent(t):
    emu, r = pull_with(t, [{"match": "api", "kind": "status", "status": 503, "times": -1}])
    expect_clean_failure(t, r, ["503", "unavailable"])


test_api_503_persistent.timeout = 180


def test_api_badjson(t):
    emu, r = pull_with(t, [{"match": "api", "kind": "badjson", "times": -1}])
    expect_clean_failure(t, r)


def test_api_badjson_tree(t):
    emu, r = pull_with(t, [{"match": "api:*/tree/*", "kind": "badjson", "times": -1}])
    expect_clean_failure(t, r)


def test_api_hugejson(t):
    emu, r = pull_with(t, [{"match": "api", "kind": "hugejson", "times": -1}])
    expect_clean_failure(t, r)
    check(r.seconds < 60, "took %.0fs to give up on a 200 MB answer" % r.seconds)


test_api_hugejson.timeout = 150


def test_api_hugejson_tree(t):
    emu, r = pull_with(t, [{"match": "api:*/tree/*", "kind": "hugejson", "times": -1}])
    expect_clean_failure(t, r)


test_api_hugejson_tree.timeout = 150


def test_api_huge_content_length(t):
    emu, r = pull_with(t, [{"match": "api", "kind": "hugejson", "lie": True, "times": -1}])
    expect_clean_failure(t, r)


test_api_huge_content_length.timeout = 150


def test_api_drop(t):
    emu, r = pull_with(t, [{"match": "api", "kind": "drop"}])
    expect_ok(t, emu, r)


def test_stall_long_is_detected(t):
    """A connection that goes silent for minutes is abandoned and retried
    (a stall the client waits out would hang the pull)."""
    emu, r = pull_with(t, [{"match": BIG, "kind": "stall", "seconds": 150, "close": True}],
                       "--connections", "1")
    check(r.rc == 0, "pull should survive a stalled connection: %r" % r)
    lib.check_pulled(t, emu, SAMPLE_REPO, r.json(), lib.sample_files())
    check(r.seconds < 100, "took %.0fs: the stall was waited out, not detected" % r.seconds)


test_stall_long_is_detected.timeout = 200


def test_downloads_row_records_retries(t):
    emu, r = pull_with(t, [{"match": BIG, "kind": "drop"}], "--connections", "1")
    check(r.rc == 0, "pull: %r" % r)
    rows = t.db("SELECT * FROM downloads WHERE path = ?", (BIG,))
    ok = [x for x in rows if x["result"] == "ok"]
    check(ok, "no ok downloads row for %s: %s" % (BIG, rows))
    check(sum(x["retries"] for x in rows) >= 1 or any(x["result"] == "failed" for x in rows),
          "a dropped connection left no trace in downloads: %s" % rows)
    for x in rows:
        check(x["endpoint"] and "127.0.0." in x["endpoint"], "downloads.endpoint %r" % x["endpoint"])


def test_file_listed_but_missing(t):
    """The tree lists a file the resolver then answers 404 EntryNotFound for:
    a clear 'file not found' naming it, exit 1, no revision recorded."""
    emu = t.emu()
    emu.faults([{"match": "resolve:*config.json", "kind": "status", "status": 404,
                 "code": "EntryNotFound", "message": "Entry not found", "times": -1}])
    r = t.fails("pull", lib.SAMPLE_REPO, words=["not found", "config.json"])
    lib.clean_error(r)
    check(not t.db("SELECT * FROM revisions"), "a revision was recorded with a file missing")
    lib.check_store_consistent(t.store)
