"""test_serve_interop.py - the official JS client (@huggingface/hub, pinned in
tests/js/package-lock.json) against `hubmirror serve`: downloadFile and
snapshotDownload with hubUrl set to the server, from a filled store and
through pull-through, with and without an access token. node_modules is
installed with `npm ci` when missing; no Node or no npm registry is a
failure with a clear message, not a skip."""

import fcntl
import json
import os
import shutil
import subprocess

import lib
from lib import check, Fail
import serve_lib as sl
from serve_lib import MODEL, REVS, DATASET, Server, serving

JS = os.path.join(lib.ROOT, "tests", "js")
NPM_TIMEOUT = 120
# a test's ceiling: a few seconds normally, plus one `npm ci` when node_modules is missing
CEILING = NPM_TIMEOUT + 60


def ensure_js():
    """node and tests/js/node_modules (npm ci when missing); returns node."""
    node = shutil.which("node")
    if not node:
        raise Fail("node is not installed: the JS interop tests need Node.js >= 18 and npm")
    v = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    check(v.startswith("v") and int(v[1:].split(".")[0]) >= 18, "Node.js %s is too old (>= 18 needed)" % v)
    pinned = json.load(open(os.path.join(JS, "package.json")))["dependencies"]["@huggingface/hub"]
    pkg = os.path.join(JS, "node_modules", "@huggingface", "hub", "package.json")
    with open(os.path.join(JS, "package.json")) as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)  # one npm ci at a time
        # npm writes node_modules/.package-lock.json last: without it the install is partial
        done = os.path.exists(os.path.join(JS, "node_modules", ".package-lock.json"))
        installed = json.load(open(pkg)).get("version") if done and os.path.exists(pkg) else None
        if installed != pinned:
            npm = shutil.which("npm")
            if not npm:
                raise Fail("npm is not installed: cannot install tests/js (npm ci)")
            try:
                # the caller's environment: npm may need its proxy settings
                p = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--fetch-retries=2",
                                    "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=10000",
                                    "--fetch-timeout=30000"], cwd=JS, capture_output=True,
                                   text=True, timeout=NPM_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise Fail("`npm ci` in tests/js did not finish in %d s (is the npm registry reachable?)"
                           % NPM_TIMEOUT)
            if p.returncode != 0:
                raise Fail("`npm ci --no-audit --no-fund` in tests/js failed (exit %d); the JS interop tests "
                           "need the npm registry once to install @huggingface/hub %s:\n%s"
                           % (p.returncode, pinned, (p.stdout + p.stderr)[-2000:]))
            installed = json.load(open(pkg)).get("version") if os.path.exists(pkg) else None
            check(installed == pinned, "npm ci installed @huggingface/hub %r, package.json pins %s"
                  % (installed, pinned))
    return node


def run_js(t, jobs, timeout=60):
    node = ensure_js()
    spec = os.path.join(t.tmp, "jobs-%d.json" % len(os.listdir(t.tmp)))
    with open(spec, "w") as fh:
        json.dump(jobs, fh)
    env = t.environ({"NODE_PATH": None})
    try:
        p = subprocess.run([node, os.path.join(JS, "interop.mjs"), spec], cwd=JS, capture_output=True,
                           text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise Fail("the JS client did not finish in %d s: %s" % (timeout, (e.stderr or "")[-1500:]))
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    check(p.returncode == 0 and lines, "the JS client failed (exit %d):\n%s\n%s"
          % (p.returncode, p.stdout[-1500:], p.stderr[-2000:]))
    return json.loads(lines[-1][len("RESULT "):])


def cache_folder(cache, repo, type="model"):
    return os.path.join(cache, "%ss--%s" % (type, repo.replace("/", "--")))


def check_downloads(res, expect, what):
    got = res.get("downloadFile") or {}
    for p, data in expect.items():
        f = got.get(p)
        if data is None:
            check(f is None, "%s: downloadFile(%s) should be null for a missing file: %r" % (what, p, f))
            continue
        check(isinstance(f, dict) and "error" not in f, "%s: downloadFile(%s): %r" % (what, p, f))
        check(f.get("sha256") == lib.sha256_bytes(data) and f.get("size") == len(data),
              "%s: downloadFile(%s) got %r, expected sha256 %s size %d"
              % (what, p, f, lib.sha256_bytes(data), len(data)))


def check_snapshot(res, expect, cache, repo, commit, what, type="model", refs=("main",)):
    snap = res.get("snapshot") or {}
    check("error" not in snap, "%s: snapshotDownload failed: %s" % (what, snap.get("error")))
    folder = cache_folder(cache, repo, type)
    check(snap.get("folder") == os.path.join(folder, "snapshots", commit),
          "%s: snapshot folder %r, expected .../snapshots/%s" % (what, snap.get("folder"), commit))
    files = snap.get("files") or {}
    check(set(files) == set(expect), "%s: snapshot files %s, expected %s" % (what, sorted(files), sorted(expect)))
    for p, data in expect.items():
        check(files[p]["sha256"] == lib.sha256_bytes(data) and files[p]["size"] == len(data),
              "%s: snapshot %s has sha256 %s, expected %s" % (what, p, files[p]["sha256"], lib.sha256_bytes(data)))
    for ref in refs:
        rp = os.path.join(folder, "refs", ref)
        check(os.path.exists(rp) and lib.read(rp).decode().strip() == commit,
              "%s: refs/%s should name %s" % (what, ref, commit))
    blobs = set(os.listdir(os.path.join(folder, "blobs")))
    check(not [b for b in blobs if b.endswith(".incomplete")], "%s: .incomplete blobs left: %s" % (what, blobs))


def job(srv, repo, type="model", revision="main", files=None, snapshot=None, token=None):
    j = {"hubUrl": srv.url, "repo": {"type": type, "name": repo}, "revision": revision}
    if files is not None:
        j["downloadFile"] = list(files)
    if snapshot:
        j["snapshot"] = True
        j["cacheDir"] = snapshot
    if token:
        j["accessToken"] = token
    return j


def no_server_errors(t, allowed_404=()):
    rows = sl.wait_for(lambda: sl.served_rows(t), timeout=5)
    bad = [(x["method"], x["path"], x["status"]) for x in rows
           if x["status"] >= 400 and x["path"] not in allowed_404]
    check(not bad, "the JS client's requests were answered with errors: %s" % bad[:10])


@serving(timeout=CEILING)
def test_js_client_from_store(t):
    sl.prefill(t)
    srv = Server(t)
    src = lib.sample_files()
    cache = os.path.join(t.tmp, "js-cache")
    want = dict(src)
    want["no-such-file.txt"] = None
    res = run_js(t, [
        job(srv, MODEL, files=want, snapshot=cache),
        job(srv, DATASET, type="dataset", files=["data/train.csv"], snapshot=cache),
        job(srv, REVS, revision="refs/pr/1", files=["version.txt", "w.bin"], snapshot=cache),
    ])
    check_downloads(res[0], want, "model")
    check_snapshot(res[0], src, cache, MODEL, sl.main_commit(MODEL), "model")
    ds = sl.dataset_files()
    check_downloads(res[1], {"data/train.csv": ds["data/train.csv"]}, "dataset")
    check_snapshot(res[1], ds, cache, DATASET, lib.commit_id(DATASET, 0), "dataset", type="dataset")
    pr = sl.revs_files(1)
    check_downloads(res[2], {"version.txt": pr["version.txt"], "w.bin": pr["w.bin"]}, "refs/pr/1")
    check_snapshot(res[2], pr, cache, REVS, lib.commit_id(REVS, 1), "refs/pr/1", refs=("refs/pr/1",))
    # blobs are named after the etag the server gave: sha256 for LFS, git oid otherwise
    blobs = set(os.listdir(os.path.join(cache_folder(cache, MODEL), "blobs")))
    want_blobs = {lib.sha256_bytes(d) if p in lib.SAMPLE_LFS else lib.git_oid(d) for p, d in src.items()}
    check(blobs == want_blobs, "JS cache blobs %s, expected %s" % (sorted(blobs), sorted(want_blobs)))
    no_server_errors(t, allowed_404=("no-such-file.txt",))


@serving(timeout=CEILING)
def test_js_client_pull_through(t):
    emu = t.emu(sl.fixture_repos())
    srv = Server(t, "--upstream", emu.url)
    src = lib.sample_files()
    cache = os.path.join(t.tmp, "js-cache")
    res = run_js(t, [job(srv, MODEL, snapshot=cache)])
    check_snapshot(res[0], src, cache, MODEL, sl.main_commit(MODEL), "pull-through")
    log = emu.log()
    for p, data in src.items():
        served = emu.bytes_served(p, log)
        check(len(data) <= served <= len(data) + 4096,
              "%s: the emulator served %d bytes for a %d-byte file" % (p, served, len(data)))
    t.ok("verify")
    no_server_errors(t)


@serving(timeout=CEILING)
def test_js_client_with_token(t):
    sl.prefill(t)
    secret = "hf_JsInteropSecret0123456789ab"
    tf = os.path.join(t.tmp, "tokens")
    with open(tf, "w") as fh:
        fh.write(secret + "\n")
    srv = Server(t, "--token-file", tf)
    cache = os.path.join(t.tmp, "js-cache")
    res = run_js(t, [job(srv, MODEL, files=["config.json"], snapshot=cache, token=secret),
                     job(srv, MODEL, files=["config.json"], snapshot=os.path.join(t.tmp, "c2"),
                         token="hf_wrong")])
    src = lib.sample_files()
    check_downloads(res[0], {"config.json": src["config.json"]}, "with the token")
    check_snapshot(res[0], src, cache, MODEL, sl.main_commit(MODEL), "with the token")
    bad = res[1]
    check("error" in (bad.get("downloadFile") or {}).get("config.json", {}) and "error" in (bad.get("snapshot") or {}),
          "a wrong token should fail in the JS client: %r" % bad)
