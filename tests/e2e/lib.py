"""lib.py - helpers for hubmirror's end-to-end tests.

Each test function takes one argument, a T (made by tests/run.py, one per
test, in its own process): a fresh temp dir, a store, emulators that are
stopped when the test ends, and t.hm(...) to run ./hubmirror with a clean
environment (no HF_TOKEN, HF_HOME in the temp dir, no proxies).
"""

import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# run.py copies ./hubmirror once per run (HM_BIN) so a rebuild mid-run is harmless.
BIN = os.environ.get("HM_BIN") or os.path.join(ROOT, "hubmirror")
PY = "/usr/bin/python3"
EMU = os.path.join(ROOT, "tests", "hubemu", "hubemu.py")
MAKE_SAMPLE = os.path.join(ROOT, "tests", "sample", "make_sample.py")

SAMPLE_REPO = "demo-org/tiny-llama"
# Files the sample generator writes, and which of them the Hub stores in LFS.
SAMPLE_LFS = {"model.safetensors", "tokenizer.json"}

ENV_DROP = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT",
            "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME",
            "HF_HUB_DISABLE_IMPLICIT_TOKEN", "http_proxy", "https_proxy", "HTTP_PROXY",
            "HTTPS_PROXY", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy",
            "CURL_CA_BUNDLE", "HUBMIRROR_STORE", "HUBMIRROR_HOME", "XDG_DATA_HOME")


class Fail(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def random_bytes(n, seed):
    """The bytes the emulator serves for {"random": n, "seed": seed}."""
    return random.Random(seed).randbytes(n)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def shared_tmp():
    d = os.environ.get("HM_TEST_TMP")
    if not d:
        d = os.path.join(tempfile.gettempdir(), "hm-e2e-%d" % os.getuid())
    os.makedirs(d, exist_ok=True)
    return d


def sample_dir():
    """The generated tiny-llama sample (made once per test run)."""
    base = shared_tmp()
    out = os.path.join(base, "sample")
    with open(os.path.join(base, "sample.lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        if not os.path.exists(out + ".done"):
            tmp = out + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run([PY, MAKE_SAMPLE, tmp], check=True)
            shutil.rmtree(out, ignore_errors=True)
            os.rename(tmp, out)
            open(out + ".done", "w").close()
    return out


def sample_files():
    """{path: bytes} of the sample repo."""
    d = sample_dir()
    out = {}
    for root, _, names in os.walk(d):
        for n in names:
            full = os.path.join(root, n)
            out[os.path.relpath(full, d)] = read(full)
    return out


def sample_repo(repo_id=SAMPLE_REPO, **kw):
    spec = {"type": "model", "id": repo_id,
            "commits": [{"dir": sample_dir(), "refs": ["main"]}]}
    spec.update(kw)
    return spec


def commit_id(repo_id, index):
    """How the emulator names commit number index of a repo."""
    return hashlib.sha1(("%s:%d" % (repo_id, index)).encode()).hexdigest()


class Result:
    def __init__(self, args, rc, out, err, seconds):
        self.args, self.rc, self.out, self.err, self.seconds = args, rc, out, err, seconds

    def __repr__(self):
        def tail(s):
            s = s.strip()
            return s if len(s) < 1500 else "..." + s[-1500:]
        return ("`hubmirror %s` -> rc=%r after %.1fs\n  stdout: %s\n  stderr: %s"
                % (" ".join(self.args), self.rc, self.seconds, tail(self.out), tail(self.err)))

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError:
            raise Fail("stdout is not JSON: %r" % self)

    @property
    def text(self):
        return self.out + self.err


class Emulator:
    def __init__(self, t, repos, tokens=(), page_size=None, extra=None):
        self.dir = tempfile.mkdtemp(prefix="emu-", dir=t.tmp)
        cfg = {"tokens": list(tokens), "repos": repos}
        if extra:
            cfg.update(extra)
        self.config = os.path.join(self.dir, "config.json")
        with open(self.config, "w") as fh:
            json.dump(cfg, fh)
        ready = os.path.join(self.dir, "ready.json")
        args = [PY, EMU, "--config", self.config, "--port", "0", "--cdn-port", "0",
                "--ready-file", ready]
        if page_size:
            args += ["--page-size", str(page_size)]
        self.errlog = open(os.path.join(self.dir, "stderr.txt"), "w")
        self.proc = subprocess.Popen(args, stdout=self.errlog, stderr=self.errlog)
        deadline = time.time() + 20
        while not os.path.exists(ready):
            if self.proc.poll() is not None:
                raise Fail("emulator exited: %s" % open(self.errlog.name).read())
            if time.time() > deadline:
                raise Fail("emulator not ready after 20 s")
            time.sleep(0.02)
        with open(ready) as fh:
            info = json.load(fh)
        self.port = info["port"]
        self.cdn_port = info["cdn_port"]
        self.url = info["api"]
        self.cdn = info["cdn"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errlog.close()

    def _req(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=30) as r:
            return json.loads(r.read())

    def log(self):
        return self._req("GET", "/_emu/log")

    def inflight(self):
        return self._req("GET", "/_emu/inflight")

    def bytes_in_flight(self, path):
        return sum(e.get("bytes") or 0 for e in self.inflight()
                   if e.get("file") == path and e["method"] == "GET")

    def wait_idle(self, limit=10):
        """Waits until no request is being served (the emulator notices a
        killed client only when its next write fails)."""
        t0 = time.time()
        while self.inflight() and time.time() - t0 < limit:
            time.sleep(0.05)

    def reset_log(self):
        self._req("POST", "/_emu/reset-log", {})

    def faults(self, faults=None):
        if faults is None:
            return self._req("GET", "/_emu/faults")
        return self._req("POST", "/_emu/faults", faults)

    def settings(self, **kw):
        return self._req("POST", "/_emu/settings", kw)

    def set_ref(self, repo, ref, commit, type="model"):
        return self._req("POST", "/_emu/set-ref",
                         {"repo": repo, "ref": ref, "commit": commit, "type": type})

    def repos(self):
        return self._req("GET", "/_emu/repos")

    def repo(self, repo_id, type="model"):
        for r in self.repos():
            if r["id"] == repo_id and r["type"] == type:
                return r
        raise Fail("emulator has no repo %s" % repo_id)

    def files(self, repo_id, commit=-1, type="model"):
        """{path: description} of a commit as the emulator serves it."""
        r = self.repo(repo_id, type)
        return {f["path"]: f for f in r["commits"][commit]["files"] if not f["bogus"]}

    def file_gets(self, log=None, path=None):
        """Log entries of GETs that served file bytes (CDN or resolve-cache)."""
        out = []
        for e in (self.log() if log is None else log):
            if e["method"] != "GET":
                continue
            if e["host"] == "cdn" or e["path"].startswith("/api/resolve-cache/"):
                if path is None or e.get("file") == path:
                    out.append(e)
        return out

    def bytes_served(self, path=None, log=None):
        return sum(e["bytes"] for e in self.file_gets(log, path))


class T:
    """One test's world: temp dir, store, emulators, environment."""

    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="t-%s-" % name, dir=shared_tmp())
        self.store = os.path.join(self.tmp, "store")
        self.home = os.path.join(self.tmp, "home")
        self.hf_home = os.path.join(self.tmp, "hf-home")
        self.cwd = os.path.join(self.tmp, "cwd")
        for d in (self.home, self.hf_home, self.cwd):
            os.makedirs(d)
        self.emus = []
        self.procs = []
        self.endpoint = None
        self.env = {}

    def close(self, keep=False):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for e in self.emus:
            e.stop()
        if not keep:
            subprocess.run(["chmod", "-R", "u+w", self.tmp], stderr=subprocess.DEVNULL)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def emu(self, repos=None, **kw):
        if repos is None:
            repos = [sample_repo()]
        e = Emulator(self, repos, **kw)
        self.emus.append(e)
        self.endpoint = e.url
        return e

    def environ(self, env=None):
        base = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
        base["HOME"] = self.home
        base["HF_HOME"] = self.hf_home
        base["LC_ALL"] = "C"
        base.update(self.env)
        if env:
            for k, v in env.items():
                if v is None:
                    base.pop(k, None)
                else:
                    base[k] = v
        return base

    def argv(self, args, store=True, endpoint=True):
        args = [str(a) for a in args]
        if store is True:
            args += ["--store", self.store]
        elif store:
            args += ["--store", store]
        if endpoint is True and self.endpoint and args and args[0] == "pull":
            args += ["--endpoint", self.endpoint]
        elif isinstance(endpoint, str):
            args += ["--endpoint", endpoint]
        return args

    def hm(self, *args, store=True, endpoint=True, env=None, timeout=120, cwd=None):
        """Runs ./hubmirror; --store and (for pull) --endpoint are added."""
        if not os.path.exists(BIN):
            raise Fail("%s does not exist (run make)" % BIN)
        argv = self.argv(args, store, endpoint)
        t0 = time.time()
        try:
            p = subprocess.run([BIN] + argv, capture_output=True, env=self.environ(env),
                               timeout=timeout, cwd=cwd or self.cwd)
        except subprocess.TimeoutExpired as e:
            raise Fail("`hubmirror %s` still running after %ss\n  stdout: %s\n  stderr: %s"
                       % (" ".join(argv), timeout, (e.stdout or b"")[-1000:],
                          (e.stderr or b"")[-1000:]))
        r = Result(argv, p.returncode, p.stdout.decode("utf-8", "replace"),
                   p.stderr.decode("utf-8", "replace"), time.time() - t0)
        no_sanitizer_report(r)
        return r

    def spawn(self, *args, store=True, endpoint=True, env=None):
        """Starts ./hubmirror in the background; returns the Popen."""
        if not os.path.exists(BIN):
            raise Fail("%s does not exist (run make)" % BIN)
        argv = self.argv(args, store, endpoint)
        p = subprocess.Popen([BIN] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=self.environ(env), cwd=self.cwd)
        p.argv = argv
        self.procs.append(p)
        return p

    def ok(self, *args, **kw):
        r = self.hm(*args, **kw)
        check(r.rc == 0, "expected exit 0: %r" % r)
        return r

    def fails(self, *args, rc=1, words=(), **kw):
        """Runs and expects exit rc with a clean one-line 'hubmirror: ' error
        that contains one of words (case-insensitive)."""
        r = self.hm(*args, **kw)
        check(r.rc == rc, "expected exit %d: %r" % (rc, r))
        clean_error(r, words)
        return r

    # ---- store ----------------------------------------------------------------
    def db(self, sql, args=()):
        return db_query(self.store, sql, args)

    def blob(self, sha):
        return blob_path(self.store, sha)


SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer",
                     "ThreadSanitizer: ", "runtime error: ")


def no_sanitizer_report(r):
    """A run of a sanitized binary that reported anything fails its test,
    whatever its exit code (make SANITIZE=...)."""
    for w in SANITIZER_REPORTS:
        if w in r.err:
            raise Fail("sanitizer report from `hubmirror %s` (rc=%r):\n%s"
                       % (" ".join(r.args), r.rc, r.err[:4000]))


def clean_error(r, words=()):
    check(r.rc is not None and 0 <= r.rc < 128, "crashed (signal): %r" % r)
    lines = [l for l in r.err.splitlines() if l.startswith("hubmirror: ")]
    check(lines, "no 'hubmirror: ' error line on stderr: %r" % r)
    if words:
        low = r.err.lower()
        check(any(w.lower() in low for w in words),
              "stderr should mention %s: %r" % (" or ".join(repr(w) for w in words), r))


def blob_path(store, sha):
    return os.path.join(store, "blobs", "sha256", sha[:2], sha)


def db_query(store, sql, args=()):
    path = os.path.join(store, "index.db")
    check(os.path.exists(path), "no index.db in the store")
    con = sqlite3.connect(path, timeout=30)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def store_blobs(store):
    """{sha256: path} of every file under blobs/ (and a list of misnamed ones)."""
    out, bad = {}, []
    root = os.path.join(store, "blobs")
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root).split(os.sep)
            if len(rel) == 3 and rel[0] == "sha256" and rel[1] == n[:2] and len(n) == 64:
                out[n] = p
            else:
                bad.append(p)
    return out, bad


def check_store_consistent(store):
    """Every files/blobs row points at an existing blob with that sha256 and size."""
    if not os.path.exists(os.path.join(store, "index.db")):
        return
    rows = db_query(store, "SELECT sha256, size FROM blobs")
    rows += db_query(store, "SELECT sha256, size FROM files")
    seen = set()
    for r in rows:
        if r["sha256"] in seen:
            continue
        seen.add(r["sha256"])
        p = blob_path(store, r["sha256"])
        check(os.path.exists(p), "index row points at missing blob %s" % r["sha256"])
        check(os.path.getsize(p) == r["size"],
              "blob %s has size %d, index says %d" % (r["sha256"], os.path.getsize(p), r["size"]))
        check(sha256_file(p) == r["sha256"], "blob %s has wrong content" % r["sha256"])


def files_by_path(pull_json):
    return {f["path"]: f for f in pull_json.get("files", [])}


def check_pulled(t, emu, repo_id, result_json, expect, commit=None, type="model"):
    """Checks a pull --json against the emulator and the store; expect is
    {path: bytes}."""
    j = result_json
    check(j.get("repo") == repo_id, "json repo is %r" % j.get("repo"))
    if commit:
        check(j.get("revision") == commit,
              "json revision %r, expected %s" % (j.get("revision"), commit))
    got = files_by_path(j)
    check(set(got) == set(expect),
          "files differ: missing %s, extra %s" % (sorted(set(expect) - set(got)),
                                                   sorted(set(got) - set(expect))))
    for path, data in expect.items():
        f = got[path]
        sha = sha256_bytes(data)
        check(f.get("sha256") == sha, "%s: json sha256 %r != %s" % (path, f.get("sha256"), sha))
        check(f.get("size") == len(data), "%s: json size %r != %d" % (path, f.get("size"), len(data)))
        p = t.blob(sha)
        check(os.path.exists(p), "%s: blob %s missing" % (path, p))
        check(read(p) == data, "%s: blob content differs from the source" % path)
        check(os.stat(p).st_mode & 0o222 == 0, "%s: blob %s is writable" % (path, p))
    blobs, bad = store_blobs(t.store)
    check(not bad, "files under blobs/ not named blobs/sha256/<2>/<64>: %s" % bad[:5])
    for sha, p in blobs.items():
        check(sha256_file(p) == sha, "blob %s is misnamed" % p)


def build_driver(t, name, source, opt="-O0"):
    """Compiles a small C test driver against libhubmirror.a (with the
    sanitizers the library was built with), once per test; returns its path."""
    exe = os.path.join(t.tmp, name)
    if os.path.exists(exe):
        return exe
    with open(exe + ".c", "w") as fh:
        fh.write(source)
    flags = []
    try:
        with open(os.path.join(ROOT, ".build-flags")) as fh:
            flags = [f for f in fh.read().split() if f.startswith("-fsanitize")]
    except OSError:
        pass
    pkgs = "libcurl libcrypto sqlite3 libarchive jansson libmicrohttpd libpcre2-8 zlib"
    libs = subprocess.run("pkg-config --libs " + pkgs, shell=True, capture_output=True, text=True).stdout.split()
    cmd = (["cc", "-std=c11", "-D_GNU_SOURCE", opt, "-I", ROOT] + flags +
           ["-o", exe, exe + ".c", os.path.join(ROOT, "libhubmirror.a")] + libs + ["-pthread", "-lm"])
    p = subprocess.run(cmd, capture_output=True, text=True)
    check(p.returncode == 0, "driver build failed: %s" % p.stderr)
    return exe
