"""test_sync.py - provisioning from a manifest: pull, check out, lock; a second
run transfers nothing; --locked replays the lock exactly and fails clearly when
the hub no longer has it; a failing model does not stop the others."""

import json
import os

import lib
from lib import SAMPLE_REPO, check

TWO = {"type": "model", "id": "org/two", "commits": [
    {"files": {"v.txt": "old\n", "w.json": "{}\n"}, "refs": ["main"]},
    {"files": {"v.txt": "new\n", "w.json": "{}\n"}}]}
DATA = {"type": "dataset", "id": "org/data", "commits": [
    {"files": {"train.csv": "a,b\n1,2\n", "README.md": "# data\n"}, "refs": ["main"]}]}


def manifest(t, text):
    p = os.path.join(t.tmp, "models.txt")
    with open(p, "w") as fh:
        fh.write(text)
    return p


def sync(t, *args, ok=True, rc=0):
    r = t.hm("sync", *args, endpoint=t.endpoint)
    if ok:
        check(r.rc == 0, "sync failed: %r" % r)
    else:
        check(r.rc == rc, "sync: expected exit %d: %r" % (rc, r))
    return r


def test_sync_pulls_checks_out_and_locks(t):
    emu = t.emu([lib.sample_repo(), TWO, DATA])
    m = manifest(t, "# the lab's models\n%s\norg/two include=*.txt   # only text\n"
                    "datasets/org/data\n\n" % SAMPLE_REPO)
    dest = os.path.join(t.tmp, "lab")
    r = sync(t, m, "--to", dest)
    check("pulled" in r.out, "status table: %r" % r.out)
    src = lib.sample_files()
    for p, data in src.items():
        check(lib.read(os.path.join(dest, SAMPLE_REPO, p)) == data, "%s not checked out" % p)
    check(lib.read(os.path.join(dest, "org/two/v.txt")) == b"old\n", "org/two not checked out")
    check(not os.path.exists(os.path.join(dest, "org/two/w.json")), "include= ignored")
    check(lib.read(os.path.join(dest, "datasets/org/data/train.csv")) == b"a,b\n1,2\n", "dataset not checked out")
    lock = json.load(open(m + ".lock"))
    check(lock["version"] == 1, "lock version")
    by = {x["repo"]: x for x in lock["models"]}
    check(set(by) == {SAMPLE_REPO, "org/two", "org/data"}, "lock models %s" % sorted(by))
    check(by["org/two"]["commit"] == lib.commit_id("org/two", 0), "org/two commit in lock")
    files = {f["path"]: f for f in by[SAMPLE_REPO]["files"]}
    check(set(files) == set(src), "lock files %s" % sorted(files))
    for p, data in src.items():
        check(files[p]["sha256"] == lib.sha256_bytes(data) and files[p]["size"] == len(data), "lock entry %s" % p)
    check([f["path"] for f in by["org/two"]["files"]] == ["v.txt"], "lock honours include=")
    lib.check_store_consistent(t.store)


def test_second_sync_transfers_nothing(t):
    emu = t.emu([lib.sample_repo(), TWO])
    m = manifest(t, "%s\norg/two\n" % SAMPLE_REPO)
    sync(t, m, "--to", os.path.join(t.tmp, "lab"))
    emu.reset_log()
    r = sync(t, m, "--to", os.path.join(t.tmp, "lab"), "--json")
    j = r.json()
    check(j["files_downloaded"] == 0 and j["bytes_downloaded"] == 0, "second sync downloaded: %r" % j)
    check(all(x["status"] == "up to date" for x in j["models"]), "statuses %r" % j["models"])
    check(not emu.file_gets(), "second sync fetched files: %s" % emu.file_gets()[:3])
    r = sync(t, m)
    check("nothing was downloaded" in r.out, "second sync should say so: %r" % r.out)


def test_sync_hf_cache_layout(t):
    t.emu([lib.sample_repo()])
    m = manifest(t, SAMPLE_REPO + "\n")
    cache = os.path.join(t.tmp, "hub")
    sync(t, m, "--to", cache, "--layout", "hf-cache")
    top = os.path.join(cache, "models--" + SAMPLE_REPO.replace("/", "--"))
    commit = open(os.path.join(top, "refs", "main")).read().strip()
    for p, data in lib.sample_files().items():
        f = os.path.join(top, "snapshots", commit, p)
        check(os.path.islink(f) and lib.read(f) == data, "%s in the HF cache" % p)


def test_locked_installs_the_lock_after_upstream_moved(t):
    emu = t.emu([TWO])
    m = manifest(t, "org/two\n")
    sync(t, m)
    # upstream main moves on; a locked install on another machine keeps the old commit
    emu.set_ref("org/two", "main", lib.commit_id("org/two", 1))
    t.store = os.path.join(t.tmp, "store2")
    dest = os.path.join(t.tmp, "lab2")
    r = sync(t, m, "--locked", "--to", dest)
    check(lib.read(os.path.join(dest, "org/two/v.txt")) == b"old\n", "--locked did not install the locked commit")
    # without --locked it follows main and updates the lock
    sync(t, m, "--to", dest)
    check(lib.read(os.path.join(dest, "org/two/v.txt")) == b"new\n", "unlocked sync did not follow main")
    lock = json.load(open(m + ".lock"))
    check(lock["models"][0]["commit"] == lib.commit_id("org/two", 1), "lock not updated")


def test_locked_fails_when_hub_lost_the_commit(t):
    emu = t.emu([TWO])
    m = manifest(t, "org/two\n")
    sync(t, m)
    lock = json.load(open(m + ".lock"))
    lock["models"][0]["commit"] = "f" * 40  # a commit the hub does not have
    with open(m + ".lock", "w") as fh:
        json.dump(lock, fh)
    t.store = os.path.join(t.tmp, "store2")
    r = sync(t, m, "--locked", ok=False, rc=1)
    check("no longer has" in r.err or "no longer has" in r.out, "unclear error: %r" % r)
    lib.clean_error(r)


def test_locked_lock_differs_from_hub(t):
    emu = t.emu([TWO])
    m = manifest(t, "org/two\n")
    sync(t, m)
    lock = json.load(open(m + ".lock"))
    lock["models"][0]["files"][0]["sha256"] = "0" * 64
    with open(m + ".lock", "w") as fh:
        json.dump(lock, fh)
    t.store = os.path.join(t.tmp, "store2")
    r = sync(t, m, "--locked", ok=False, rc=1)
    check("differs from the lock" in r.out + r.err, "unclear error: %r" % r)


def test_locked_without_lock(t):
    t.emu([TWO])
    m = manifest(t, "org/two\n")
    r = sync(t, m, "--locked", ok=False, rc=1)
    check("lockfile" in r.err, "unclear error: %r" % r)


def test_failing_model_does_not_stop_others(t):
    emu = t.emu([TWO, lib.sample_repo()])
    m = manifest(t, "org/missing\norg/two\n%s convert=q3_weird\n" % SAMPLE_REPO)
    dest = os.path.join(t.tmp, "lab")
    r = sync(t, m, "--to", dest, "--json", ok=False, rc=1)
    j = r.json()
    st = {x["repo"]: x for x in j["models"]}
    check(st["org/missing"]["status"] == "failed" and "not found" in st["org/missing"]["detail"], "%r" % st)
    check(st["org/two"]["status"] == "pulled", "org/two: %r" % st["org/two"])
    check(st[SAMPLE_REPO]["status"] == "failed" and "q3_weird" in st[SAMPLE_REPO]["detail"], "%r" % st)
    check(os.path.exists(os.path.join(dest, "org/two/v.txt")), "org/two not checked out")
    check(not os.path.exists(m + ".lock"), "a lock was written for a failed run")


def test_bad_manifest(t):
    t.emu([TWO])
    for text, words in (("org/two frobnicate=1\n", ["models.txt:1", "unknown key"]),
                        ("# ok\n\n../evil\n", ["models.txt:3", "invalid repository"]),
                        ("org/two\norg/two\n", ["listed twice"]),
                        ("org/two smoke=maybe\n", ["smoke"]),
                        ("org/two type=space\n", ["type"])):
        m = manifest(t, text)
        r = sync(t, m, ok=False, rc=1)
        for w in words:
            check(w in r.err, "%r: stderr lacks %r: %r" % (text, w, r.err))
        lib.clean_error(r)
    r = t.hm("sync", os.path.join(t.tmp, "nope.txt"), endpoint=t.endpoint)
    check(r.rc == 2 and "cannot read the manifest" in r.err, "missing manifest: %r" % r)


def test_sync_convert_and_smoke(t):
    t.emu([lib.sample_repo()])
    m = manifest(t, "%s convert=q8_0 smoke=yes\n" % SAMPLE_REPO)
    r = sync(t, m, "--json")
    j = r.json()
    x = j["models"][0]
    check(x["status"] == "smoke passed" and "converted" in x["detail"], "status %r" % x)
    arts = t.db("SELECT format, options FROM artifacts")
    check(len(arts) == 1 and "q8_0" in arts[0]["options"], "artifact %r" % arts)
    rows = t.db("SELECT pass, artifact_sha256 FROM smoke_results")
    check(len(rows) == 1 and rows[0]["pass"] == 1 and rows[0]["artifact_sha256"], "smoke row %r" % rows)
    # a second sync: nothing downloaded, the conversion is a cache hit, the test runs again
    j = sync(t, m, "--json").json()
    check(j["files_downloaded"] == 0 and j["models"][0]["status"] == "smoke passed", "second sync %r" % j)
    check(len(t.db("SELECT * FROM artifacts")) == 1, "conversion repeated instead of reused")
