"""serve_lib.py - helpers for the tests of `hubmirror serve`: fixture repos and
a store pre-filled from the emulator, a Server that starts `hubmirror serve
--listen 127.0.0.1:0`, reads its "listening on" line and is stopped with
SIGTERM (exit 0 checked) when the test ends, and a small raw HTTP client
(http.client, no normalisation of the paths it is given)."""

import functools
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from urllib.parse import quote, urlencode, urljoin, urlsplit

import lib
from lib import check, Fail

MODEL = lib.SAMPLE_REPO             # demo-org/tiny-llama: LFS + regular files, original/ dir
REVS = "demo-org/revs"              # three commits: v1.0 -> 0, dev + refs/pr/1 -> 1, main -> 2
DATASET = "demo-org/tiny-data"      # a dataset (no model of that name is stored)
OTHER = "other-org/other-model"     # outside 'demo-org/*'


def revs_repo():
    def files(i):
        f = {"version.txt": ["zero\n", "one\n", "two\n"][i], "common.txt": "same\n",
             "nested/a/b.txt": "deep %d\n" % i,
             "w.bin": {"random": 20000, "seed": 10 + i}}
        if i == 2:
            f["nested/c.txt"] = "c\n"
        return f
    return {"type": "model", "id": REVS, "commits": [
        {"files": files(0), "tags": ["v1.0"], "refs": []},
        {"files": files(1), "refs": ["dev", "refs/pr/1"]},
        {"files": files(2), "refs": ["main"]},
    ]}


def revs_files(i):
    """{path: bytes} of commit i of REVS."""
    out = {"version.txt": ["zero\n", "one\n", "two\n"][i].encode(), "common.txt": b"same\n",
           "nested/a/b.txt": b"deep %d\n" % i, "w.bin": lib.random_bytes(20000, 10 + i)}
    if i == 2:
        out["nested/c.txt"] = b"c\n"
    return out


DATASET_FILES = {"README.md": b"# tiny data\n", "data/train.csv": b"a,b\n1,2\n3,4\n",
                 "data/test.csv": b"a,b\n5,6\n"}


def dataset_repo():
    files = {k: v.decode() for k, v in DATASET_FILES.items()}
    files["data/train-00000.parquet"] = {"random": 50000, "seed": 7}
    return {"type": "dataset", "id": DATASET, "commits": [{"files": files, "refs": ["main"]}]}


def dataset_files():
    out = dict(DATASET_FILES)
    out["data/train-00000.parquet"] = lib.random_bytes(50000, 7)
    return out


def other_repo():
    return {"type": "model", "id": OTHER,
            "commits": [{"files": {"other.txt": "other\n"}, "refs": ["main"]}]}


def fixture_repos():
    return [lib.sample_repo(), revs_repo(), dataset_repo(), other_repo()]


def prefill(t, repos=None, emu=None):
    """Starts an emulator with the fixture repos (unless given one) and pulls
    into t.store: MODEL main, REVS main + refs/pr/1 + v1.0, DATASET main.
    Returns the emulator."""
    if emu is None:
        emu = t.emu(fixture_repos() if repos is None else repos)
    t.ok("pull", MODEL, "-q")
    t.ok("pull", REVS, "-q")
    t.ok("pull", REVS, "--revision", "refs/pr/1", "-q")
    t.ok("pull", REVS, "--revision", "v1.0", "-q")
    t.ok("pull", DATASET, "--repo-type", "dataset", "-q")
    return emu


def main_commit(repo=MODEL):
    return lib.commit_id(repo, 2 if repo == REVS else 0)


# ---- the server ---------------------------------------------------------------

class NotStarted(Fail):
    """The server exited before printing its 'listening on' line."""

    def __init__(self, msg, rc, stderr):
        super().__init__(msg)
        self.rc, self.stderr = rc, stderr


class Resp:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def h(self, name):
        return self.headers.get(name)

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise Fail("not a JSON body: %r" % self)

    def __repr__(self):
        body = self.body[:300]
        hs = "; ".join("%s: %s" % (k, v) for k, v in self.headers.items())
        return "<%d %s [%s] %r%s>" % (self.status, self.reason, hs[:600], body,
                                       "..." if len(self.body) > 300 else "")


class Server:
    """A running `hubmirror serve`; its stdout and stderr go to files."""

    def __init__(self, t, *args, store=True, env=None, wait=20, preexec=None):
        self.t = t
        self.dir = tempfile.mkdtemp(prefix="serve-", dir=t.tmp)
        self.out_path = os.path.join(self.dir, "stdout")
        self.err_path = os.path.join(self.dir, "stderr")
        self.argv = t.argv(["serve", "--listen", "127.0.0.1:0"] + [str(a) for a in args],
                           store, False)
        if not os.path.exists(lib.BIN):
            raise Fail("%s does not exist (run make)" % lib.BIN)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([lib.BIN] + self.argv, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=t.environ(env), cwd=t.cwd,
                                         preexec_fn=preexec)
        t.procs.append(self.proc)
        self.stopped_rc = None
        deadline = time.time() + wait
        line = None
        while True:
            data = lib.read(self.out_path)
            if b"\n" in data:
                line = data.split(b"\n")[0].decode("utf-8", "replace")
                break
            if self.proc.poll() is not None:
                raise NotStarted("`hubmirror %s` exited %s before listening\n  stdout: %s\n  stderr: %s"
                                 % (" ".join(self.argv), self.proc.returncode, data[-1000:],
                                    self.stderr()[-2000:]), self.proc.returncode, self.stderr())
            if time.time() > deadline:
                raise Fail("`hubmirror %s` printed no 'listening on' line in %ds\n  stderr: %s"
                           % (" ".join(self.argv), wait, self.stderr()[-2000:]))
            time.sleep(0.02)
        m = re.fullmatch(r"listening on http://(127\.0\.0\.1):(\d+)", line)
        check(m, "first stdout line %r is not 'listening on http://127.0.0.1:PORT'" % line)
        self.host = m.group(1)
        self.port = int(m.group(2))
        check(self.port != 0, "listening on port 0")
        self.url = "http://%s:%d" % (self.host, self.port)
        if not hasattr(t, "servers"):
            t.servers = []
        t.servers.append(self)

    def stderr(self):
        return lib.read(self.err_path).decode("utf-8", "replace")

    def stdout(self):
        return lib.read(self.out_path).decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def check_alive(self, what=""):
        check(self.alive(), "the server died%s: rc=%s\n  stderr: %s"
              % (" after " + what if what else "", self.proc.returncode, self.stderr()[-2000:]))

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Signals the server and checks it exits 0 within timeout seconds,
        having printed exactly the one 'listening on' line."""
        if self.stopped_rc is not None:
            return self.stopped_rc
        check(self.alive(), "the server was already gone before the %s: rc=%s\n  stderr: %s"
              % (signal.Signals(sig).name, self.proc.returncode, self.stderr()[-2000:]))
        t0 = time.time()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Fail("the server did not exit within %ds of %s\n  stderr: %s"
                       % (timeout, signal.Signals(sig).name, self.stderr()[-2000:]))
        self.stop_seconds = time.time() - t0
        self.stopped_rc = rc
        check(rc == 0, "the server exited %s after %s (expected 0)\n  stderr: %s"
              % (rc, signal.Signals(sig).name, self.stderr()[-2000:]))
        lines = self.stdout().splitlines()
        check(len(lines) == 1, "stdout should be exactly the 'listening on' line, was %r"
              % lines[:10])
        return rc

    # ---- HTTP ----
    def conn(self, timeout=10):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def req(self, method, path, headers=None, body=None, timeout=10, token=None):
        """One request on a fresh connection; returns a Resp (the body is
        read fully; empty for HEAD)."""
        hs = dict(headers or {})
        if token:
            hs["Authorization"] = "Bearer " + token
        c = self.conn(timeout)
        try:
            c.putrequest(method, path, skip_accept_encoding=True)
            for k, v in hs.items():
                c.putheader(k, v)
            if body is not None:
                if "Content-Length" not in hs:
                    c.putheader("Content-Length", str(len(body)))
            c.endheaders(body)
            r = c.getresponse()
            data = r.read()
            return Resp(r.status, r.reason, r.headers, data)
        except (OSError, http.client.HTTPException) as e:
            raise Fail("%s %s: %s: %s (server alive: %s)" % (method, path[:200], type(e).__name__,
                                                            e, self.alive()))
        finally:
            c.close()

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def head(self, path, **kw):
        return self.req("HEAD", path, **kw)

    def json(self, path, **kw):
        r = self.get(path, **kw)
        check(r.status == 200, "GET %s: expected 200: %r" % (path, r))
        ct = r.h("Content-Type") or ""
        check("json" in ct, "GET %s: Content-Type %r" % (path, ct))
        return r.json()

    def post_json(self, path, obj, **kw):
        return self.req("POST", path, headers={"Content-Type": "application/json"},
                        body=json.dumps(obj).encode(), **kw)

    def post_form(self, path, pairs, **kw):
        return self.req("POST", path, headers={"Content-Type": "application/x-www-form-urlencoded"},
                        body=urlencode(pairs).encode(), **kw)

    def raw(self, data, timeout=10, read_limit=1 << 20):
        """Sends raw bytes on a fresh connection and returns what came back
        until the server closed it, read_limit bytes, or timeout. Sending
        errors (the server closing early) are tolerated."""
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        out = b""
        try:
            try:
                s.sendall(data)
            except OSError:
                pass
            deadline = time.time() + timeout
            while len(out) < read_limit and time.time() < deadline:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
                if response_complete(out):
                    break
        finally:
            s.close()
        return out

    def fetch(self, method, path, headers=None, **kw):
        """Like req, but follows relative redirects (as the Hub's clients do)
        and fails on an absolute one: a mirror must not send clients away."""
        for _ in range(6):
            r = self.req(method, path, headers=headers, **kw)
            if r.status not in (301, 302, 303, 307, 308):
                return r
            loc = r.h("Location") or ""
            check(loc.startswith("/") and not loc.startswith("//"),
                  "%s %s: redirect to %r (only relative redirects are allowed)"
                  % (method, path, loc))
            path = loc
        raise Fail("%s %s: too many redirects" % (method, path))

    def check_works(self, what=""):
        """The server is alive and answers a normal request correctly."""
        self.check_alive(what)
        r = self.get("/api/models/%s" % MODEL)
        check(r.status == 200 and r.json().get("id") == MODEL,
              "a normal request failed%s: %r" % (" after " + what if what else "", r))


def response_complete(data):
    """True once data holds a whole HTTP response with a Content-Length."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return bool(m) and len(body) >= int(m.group(1))


def raw_status(data):
    """The status code of a raw response, or None when nothing came back."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else None


def serving(timeout=None):
    """Decorator for a test that starts servers: when the test body returns,
    every server it started and did not stop is stopped with SIGTERM and
    must exit 0. (A failing test's servers are killed by T.close.)"""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(t):
            fn(t)
            for s in list(getattr(t, "servers", [])):
                if s.stopped_rc is None:
                    s.stop()
        if timeout:
            wrapper.timeout = timeout
        return wrapper
    return deco


# ---- checks -----------------------------------------------------------------------

def check_hub_error(r, status, code, what=""):
    check(r.status == status, "%s: expected %d %s: %r" % (what, status, code or "", r))
    if code:
        check(r.h("X-Error-Code") == code, "%s: X-Error-Code %r, expected %s: %r"
              % (what, r.h("X-Error-Code"), code, r))
    if r.body:
        try:
            j = json.loads(r.body)
        except ValueError:
            raise Fail("%s: error body is not JSON: %r" % (what, r))
        check(isinstance(j, dict) and isinstance(j.get("error"), str) and j["error"],
              "%s: error body should be {\"error\": \"...\"}: %r" % (what, r))
    else:
        check(False, "%s: error response without a body: %r" % (what, r))


def etag_of(data, lfs):
    """The ETag the Hub gives a file: quoted sha256 for LFS, quoted git blob id otherwise."""
    return '"%s"' % (lib.sha256_bytes(data) if lfs else lib.git_oid(data))


def resolve_url(repo, rev, path, dataset=False):
    return "%s/%s/resolve/%s/%s" % ("/datasets" if dataset else "", repo,
                                    quote(rev, safe=""), quote(path))


def wait_for(fn, timeout=6, step=0.1):
    """Polls fn until it returns something truthy; returns its last value."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


def served_rows(t, store=None):
    path = os.path.join(store or t.store, "index.db")
    if not os.path.exists(path):
        return []
    try:
        return lib.db_query(store or t.store, "SELECT * FROM served ORDER BY id")
    except Exception as e:  # sqlite3.OperationalError: no such table (yet)
        if "no such table" in str(e):
            return []
        raise


def follow_pages(srv, path, limit=200):
    """GETs path and its Link rel="next" pages; returns (pages, entries)."""
    pages, entries = [], []
    url = path
    seen = set()
    while url:
        check(url not in seen, "Link rel=next loops back to %s" % url)
        seen.add(url)
        check(len(pages) < limit, "more than %d pages" % limit)
        r = srv.get(url)
        check(r.status == 200, "GET %s: %r" % (url, r))
        page = r.json()
        check(isinstance(page, list), "tree page is not a list: %r" % r)
        pages.append(page)
        entries += page
        url = None
        link = r.h("Link")
        if link:
            m = re.search(r'<([^>]*)>\s*;\s*rel="?next"?', link)
            if m:
                nxt = urljoin(srv.url + "/", m.group(1))
                u = urlsplit(nxt)
                check(u.netloc == "%s:%d" % (srv.host, srv.port),
                      "Link rel=next points away from the server: %s" % link)
                url = u.path + ("?" + u.query if u.query else "")
    return pages, entries


class Reader(threading.Thread):
    """GETs a URL in the background and keeps what it read (for concurrency
    tests); .first is set with the time the first body byte arrived."""

    def __init__(self, srv, path, headers=None, chunk=65536, timeout=30, start_evt=None):
        super().__init__(daemon=True)
        self.srv, self.path, self.headers, self.chunk = srv, path, headers or {}, chunk
        self.timeout, self.start_evt = timeout, start_evt
        self.status = None
        self.buf = bytearray()
        self.error = None
        self.first = None
        self.t0 = None
        self.done = None

    def run(self):
        try:
            if self.start_evt:
                self.start_evt.wait(10)
            self.t0 = time.time()
            c = self.srv.conn(self.timeout)
            c.request("GET", self.path, headers=self.headers)
            r = c.getresponse()
            self.status = r.status
            self.headers_in = r.headers
            while True:
                b = r.read1(self.chunk)
                if not b:
                    break
                if self.first is None:
                    self.first = time.time()
                self.buf += b
            c.close()
            cl = r.getheader("Content-Length")
            if cl is not None and cl.isdigit() and int(cl) != len(self.buf):
                self.error = "IncompleteRead: %d of %s bytes" % (len(self.buf), cl)
        except Exception as e:  # kept for the test to report
            self.error = "%s: %s" % (type(e).__name__, e)
        finally:
            self.done = time.time()

    @property
    def data(self):
        return bytes(self.buf)
