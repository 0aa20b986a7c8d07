#!/usr/bin/python3
"""hubemu.py - a Hugging Face Hub emulator on loopback for hubmirror's tests.

Standard library only, and independent of the code under test. It serves:
  * an API host (127.0.0.1:PORT): /api/..., /{repo}/resolve/..., resolve-cache,
    and the control endpoints /_emu/...;
  * a "CDN" host (127.0.0.2:CDNPORT) that serves LFS blobs by sha256 from
    signed URLs, with Range support.

Usage: hubemu.py --config CONFIG.json [--port 0] [--cdn-port 0]
                 [--ready-file F] [--page-size N] [--verbose]

CONFIG.json:
{
  "tokens": ["hf_user"],            # valid user tokens (not granted anything)
  "page_size": 1000,
  "cdn_reject_auth": false,         # CDN answers 400 to an Authorization header
  "repos": [{
    "type": "model" | "dataset", "id": "org/name",
    "gated": false | "manual" | "auto", "private": false,
    "tokens": ["hf_abc"],           # tokens granted access (gated/private)
    "commits": [{
      "dir": "/path/to/files",      # and/or
      "files": {"a.txt": "text", "b.bin": {"b64": "..."},
                "big.bin": {"random": 30000000, "seed": 1}, "c": {"text": "x"}},
      "refs": ["main", "refs/pr/1"],   # branches (refs/pr/N become PRs)
      "tags": ["v1.0"],
      "bogus": [{"path": "../evil", "content": "pwned"}, "/abs/x"]
    }]
  }]
}
Commit ids are sha1("<repo id>:<commit index>"). Paths of "dir" are relative
to the config file's directory when not absolute.

Control endpoints (API host): GET /_emu/log, POST /_emu/reset-log,
GET|POST /_emu/faults, POST /_emu/settings {"page_size": N, ...},
(settings: "require_token": true answers 401 with WWW-Authenticate to any
API-host request without a valid token),
POST /_emu/set-ref {"type", "repo", "ref", "commit": index|hex},
GET /_emu/repos (what the emulator serves, with digests),
GET /_emu/inflight (requests being served now, with bytes sent so far).

Faults: [{"match": GLOB, "kind": K, "times": N (default 1, -1 forever), ...}]
  File faults (GET of file bytes: CDN for LFS, resolve-cache otherwise); GLOB
  is matched against the repo path of the file:
    drop     headers + half the body (or "after" bytes), then close ("rst": true
             resets the connection instead)
    status   answer "status" (default 503), with X-Error-Code "code" if given
    ratelimit 429 with Retry-After: "retry_after" (default 1)
    stall    send "after" bytes (default half), sleep "seconds" (default 3), then
             the rest (or close when "close": true)
    corrupt  flip a byte at file offset "offset" (default size/2; only consumed
             when the served range contains it)
    norange  ignore Range: 200 with the full body
    slow     throttle to "rate" bytes/s (default 1000000)
  API faults: match "api" (every /api/ JSON call) or "api:GLOB" (GLOB on the
  URL path); "resolve" or "resolve:GLOB" for the /resolve/ endpoint:
    status, ratelimit, drop, badjson (truncated JSON), hugejson ("size" bytes,
    default 200 MB, streamed; "lie": true announces a huge Content-Length and
    closes early), redirect ("status" 302 with Location: "location").
"""

import argparse
import base64
import fnmatch
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

LFS_EXT = (".safetensors", ".bin", ".gguf", ".pt")
LFS_THRESHOLD = 10 * 1024
LAST_MODIFIED = "2024-05-01T12:00:00.000Z"
HEX = set("0123456789abcdef")


def git_blob_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256, size):
    return ("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n"
            % (sha256, size)).encode()


def is_lfs(path, size):
    return size > LFS_THRESHOLD or path.endswith(LFS_EXT)


class File:
    def __init__(self, path, data, bogus=False, lfs=None):
        self.path = path
        self.data = data
        self.size = len(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.git_oid = git_blob_oid(data)
        self.lfs = is_lfs(path, self.size) if lfs is None else bool(lfs)
        self.bogus = bogus
        if self.lfs:
            self.pointer = lfs_pointer(self.sha256, self.size)
            self.pointer_oid = git_blob_oid(self.pointer)
        else:
            self.pointer = None
            self.pointer_oid = None

    @property
    def oid(self):
        """The tree oid: the git blob of the pointer for LFS files."""
        return self.pointer_oid if self.lfs else self.git_oid

    def tree_entry(self):
        e = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs:
            e["lfs"] = {"oid": self.sha256, "size": self.size,
                        "pointerSize": len(self.pointer)}
        return e

    def sibling(self, blobs):
        s = {"rfilename": self.path}
        if blobs:
            s["size"] = self.size
            s["blobId"] = self.oid
            if self.lfs:
                s["lfs"] = {"sha256": self.sha256, "size": self.size,
                            "pointerSize": len(self.pointer)}
        return s

    def describe(self):
        return {"path": self.path, "size": self.size, "sha256": self.sha256,
                "git_oid": self.git_oid, "oid": self.oid, "lfs": self.lfs,
                "bogus": self.bogus}


def load_file_spec(path, spec):
    if isinstance(spec, str):
        return spec.encode()
    if "text" in spec:
        return spec["text"].encode()
    if "b64" in spec:
        return base64.b64decode(spec["b64"])
    if "random" in spec:
        return random.Random(spec.get("seed", 0)).randbytes(int(spec["random"]))
    if "repeat" in spec:
        return (spec["repeat"].encode() * int(spec.get("count", 1)))
    raise ValueError("bad file spec for %r" % path)


class Commit:
    def __init__(self, repo_id, index, files, bogus):
        self.index = index
        self.id = hashlib.sha1(("%s:%d" % (repo_id, index)).encode()).hexdigest()
        self.files = dict(sorted(files.items()))  # path -> File (real files)
        self.bogus = bogus  # list of File
        dirs = set()
        for p in self.files:
            parts = p.split("/")
            for i in range(1, len(parts)):
                dirs.add("/".join(parts[:i]))
        self.dirs = dirs
        entries = [f.tree_entry() for f in self.files.values()]
        for d in sorted(dirs):
            entries.append({"type": "directory", "path": d, "size": 0,
                            "oid": hashlib.sha1(("tree:%s:%s" % (self.id, d)).encode()).hexdigest()})
        entries.sort(key=lambda e: e["path"])
        self.entries = entries

    def lookup(self, path):
        f = self.files.get(path)
        if f:
            return f
        for b in self.bogus:
            if b.path == path:
                return b
        return None

    def all_files(self):
        return list(self.files.values()) + list(self.bogus)


class Repo:
    def __init__(self, spec, base_dir):
        self.type = spec.get("type", "model")
        if self.type not in ("model", "dataset"):
            raise ValueError("bad repo type %r" % self.type)
        self.id = spec["id"]
        self.gated = spec.get("gated", False)
        self.private = bool(spec.get("private", False))
        self.tokens = set(spec.get("tokens", []))
        self.commits = []
        self.branches = {}
        self.tags = {}
        self.prs = {}
        for i, c in enumerate(spec.get("commits", [])):
            files = {}
            d = c.get("dir")
            if d:
                if not os.path.isabs(d):
                    d = os.path.join(base_dir, d)
                for root, dnames, fnames in os.walk(d):
                    dnames.sort()
                    for fn in sorted(fnames):
                        full = os.path.join(root, fn)
                        rel = os.path.relpath(full, d).replace(os.sep, "/")
                        with open(full, "rb") as fh:
                            files[rel] = File(rel, fh.read())
            for p, s in (c.get("files") or {}).items():
                lfs = s.get("lfs") if isinstance(s, dict) else None
                files[p] = File(p, load_file_spec(p, s), lfs=lfs)
            bogus = []
            for b in c.get("bogus") or []:
                if isinstance(b, str):
                    b = {"path": b}
                bogus.append(File(b["path"], b.get("content", "bogus\n").encode(),
                                  bogus=True, lfs=b.get("lfs", False)))
            commit = Commit(self.id, i, files, bogus)
            self.commits.append(commit)
            for r in c.get("refs", []):
                if r.startswith("refs/pr/"):
                    self.prs[r] = commit
                else:
                    self.branches[r] = commit
            for t in c.get("tags", []):
                self.tags[t] = commit
        if not self.commits:
            raise ValueError("repo %s has no commits" % self.id)
        if "main" not in self.branches:
            self.branches["main"] = self.commits[-1]

    def resolve(self, rev):
        if rev in (None, "", "HEAD"):
            rev = "main"
        for prefix, table in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if rev.startswith(prefix) and rev[len(prefix):] in table:
                return table[rev[len(prefix):]]
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.tags:
            return self.tags[rev]
        if rev in self.prs:
            return self.prs[rev]
        if len(rev) == 40 and set(rev) <= HEX:
            for c in self.commits:
                if c.id == rev:
                    return c
        return None

    def commit_by(self, ref):
        if isinstance(ref, int):
            return self.commits[ref]
        return self.resolve(ref)


class Emu:
    def __init__(self, config, base_dir, page_size=None):
        self.lock = threading.Lock()
        self.log = []
        self.inflight = {}
        self.faults = []
        self.secret = os.urandom(16)
        self.page_size = int(page_size or config.get("page_size", 1000))
        self.cdn_reject_auth = bool(config.get("cdn_reject_auth", False))
        self.require_token = bool(config.get("require_token", False))
        self.user_tokens = set(config.get("tokens", []))
        self.repos = {}
        self.blobs = {}  # sha256 -> File (LFS)
        self.blob_paths = {}  # sha256 -> [paths]
        for spec in config.get("repos", []):
            r = Repo(spec, base_dir)
            self.repos[(r.type, r.id)] = r
            self.user_tokens |= r.tokens
            for c in r.commits:
                for f in c.all_files():
                    if f.lfs:
                        self.blobs.setdefault(f.sha256, f)
                        paths = self.blob_paths.setdefault(f.sha256, [])
                        if f.path not in paths:
                            paths.append(f.path)
        self.api_base = None
        self.cdn_base = None

    def sign(self, sha, expires):
        return hmac.new(self.secret, ("%s:%d" % (sha, expires)).encode(),
                        hashlib.sha256).hexdigest()

    def take_faults(self, keys, kinds, pred=None):
        """Consumes and returns the faults matching one of keys and kinds."""
        out = []
        with self.lock:
            for f in self.faults:
                if f.get("times", 1) == 0 or f.get("kind") not in kinds:
                    continue
                m = f.get("match", "*")
                if not any(fnmatch.fnmatchcase(k, m) for k in keys):
                    continue
                if pred and not pred(f):
                    continue
                if f.get("times", 1) > 0:
                    f["times"] = f.get("times", 1) - 1
                f["hits"] = f.get("hits", 0) + 1
                out.append(dict(f))
        return out

    def record(self, entry):
        with self.lock:
            entry["seq"] = len(self.log)
            self.log.append(entry)

    def describe(self):
        out = []
        for r in self.repos.values():
            out.append({
                "type": r.type, "id": r.id, "gated": r.gated, "private": r.private,
                "branches": {k: v.id for k, v in r.branches.items()},
                "tags": {k: v.id for k, v in r.tags.items()},
                "prs": {k: v.id for k, v in r.prs.items()},
                "commits": [{"id": c.id, "files": [f.describe() for f in c.all_files()]}
                            for c in r.commits]})
        return out


FILE_FAULTS = ("drop", "status", "ratelimit", "stall", "corrupt", "norange", "slow")
API_FAULTS = ("drop", "status", "ratelimit", "badjson", "hugejson", "stall", "slow", "redirect")


class Closed(Exception):
    """The fault closed the connection on purpose."""


def parse_range(h, size):
    """None: no usable Range (serve 200); 'unsat': 416; else (start, end)."""
    if not h:
        return None
    h = h.strip()
    if not h.lower().startswith("bytes="):
        return None
    spec = h[6:].split(",")[0].strip()
    a, sep, b = spec.partition("-")
    if not sep:
        return None
    try:
        if a.strip() == "":
            n = int(b)
            if n <= 0 or size == 0:
                return "unsat"
            return (max(0, size - n), size - 1)
        start = int(a)
        end = int(b) if b.strip() else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end < start):
        return None
    if start >= size:
        return "unsat"
    if end is None:
        end = size - 1
    return (start, min(end, size - 1))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubemu/1.0"
    timeout = 120
    emu = None  # set on the subclass
    host_kind = "api"
    verbose = False

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("hubemu[%s] %s\n" % (self.host_kind, fmt % args))

    # ---- plumbing -------------------------------------------------------
    def _start(self, method):
        u = urlsplit(self.path)
        self.raw_path = u.path
        self.query_str = u.query
        self.query = parse_qs(u.query, keep_blank_values=True)
        self.method = method
        self.sent = 0
        self.status = None
        auth = self.headers.get("Authorization")
        self.entry = {
            "host": self.host_kind, "method": method, "path": unquote(u.path),
            "raw_path": u.path, "query": u.query,
            "auth": auth is not None, "authorization": auth,
            "range": self.headers.get("Range"),
            "user_agent": self.headers.get("User-Agent"),
            "accept_encoding": self.headers.get("Accept-Encoding"),
            "time": time.time(),
        }
        with self.emu.lock:
            self.emu.inflight[id(self)] = self.entry
        self.req_body = b""
        n = self.headers.get("Content-Length")
        if n:
            try:
                self.req_body = self.rfile.read(int(n))
            except (ValueError, OSError):
                self.req_body = b""

    def _run(self, method):
        self._start(method)
        try:
            self.dispatch()
        except Closed:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, socket.timeout, TimeoutError):
            self.close_connection = True
            self.entry["aborted"] = True
        except Exception as e:  # a bug in the emulator: say so loudly
            import traceback
            traceback.print_exc()
            self.entry["emu_error"] = repr(e)
            try:
                if self.status is None:
                    self.send_plain(500, b"emulator error\n")
            except OSError:
                pass
            self.close_connection = True
        finally:
            self.entry["status"] = self.status
            self.entry["bytes"] = self.sent
            self.entry["duration"] = time.time() - self.entry["time"]
            with self.emu.lock:
                self.emu.inflight.pop(id(self), None)
            if not self.raw_path.startswith("/_emu/"):
                self.emu.record(self.entry)

    def do_GET(self):
        self._run("GET")

    def do_HEAD(self):
        self._run("HEAD")

    def do_POST(self):
        self._run("POST")

    def do_PUT(self):
        self._run("PUT")

    def do_DELETE(self):
        self._run("DELETE")

    def send_head(self, status, headers, length):
        self.status = status
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def write(self, data):
        if self.method == "HEAD" or not data:
            return
        self.wfile.write(data)
        self.sent += len(data)
        self.entry["bytes"] = self.sent

    def send_plain(self, status, body, headers=(), ctype="text/plain; charset=utf-8"):
        hs = [("Content-Type", ctype)] + list(headers)
        self.send_head(status, hs, len(body))
        self.write(body)

    def send_json(self, status, obj, headers=()):
        body = json.dumps(obj).encode()
        fault = getattr(self, "api_fault", None)
        if fault and status == 200:
            self.api_fault = None
            if fault["kind"] == "badjson":
                bad = body[: max(1, len(body) // 2)] + b'\x00{"garbage'
                return self.send_plain(200, bad, headers, "application/json; charset=utf-8")
            if fault["kind"] == "hugejson":
                return self.send_huge(fault)
            if fault["kind"] in ("drop", "stall", "slow"):
                return self.send_body(body, [("Content-Type", "application/json; charset=utf-8")]
                                      + list(headers), 200, [fault])
        self.send_plain(status, body, headers, "application/json; charset=utf-8")

    def send_huge(self, fault):
        size = int(fault.get("size", 200 * 1000 * 1000))
        entry = b'{"type":"file","path":"' + b"a" * 200 + b'","size":1,"oid":"' + b"0" * 40 + b'"},'
        if fault.get("lie"):
            self.send_head(200, [("Content-Type", "application/json")], 10 ** 12)
            self.write(b"[" + entry * 1000)
            self.wfile.flush()
            raise Closed()
        self.send_head(200, [("Content-Type", "application/json")], size)
        self.write(b"[")
        left = size - 2
        chunk = entry * 256
        while left > 0:
            part = chunk[:left]
            self.write(part)
            left -= len(part)
        self.write(b"]")

    def hub_error(self, status, code, msg, headers=()):
        hs = [("X-Error-Message", msg)] + list(headers)
        if code:
            hs.append(("X-Error-Code", code))
        self.send_json(status, {"error": msg}, hs)

    def token(self):
        a = self.headers.get("Authorization")
        if a and a.startswith("Bearer "):
            return a[7:].strip()
        return None

    # ---- bodies with faults ------------------------------------------------
    def send_body(self, data, headers, status=200, faults=(), file_size=None, base=0):
        """Sends data (the bytes of [base, base+len)) as status with faults."""
        kinds = {f["kind"]: f for f in faults}
        body = data
        if "corrupt" in kinds:
            off = int(kinds["corrupt"].get("offset", (file_size or len(data)) // 2)) - base
            if 0 <= off < len(body):
                body = bytearray(body)
                body[off] ^= int(kinds["corrupt"].get("xor", 0x55)) or 0x55
                body = bytes(body)
        self.send_head(status, headers, len(body))
        if self.method == "HEAD":
            return
        limit = len(body)
        after = None
        if "drop" in kinds:
            limit = int(kinds["drop"].get("after", len(body) // 2))
        if "stall" in kinds:
            after = int(kinds["stall"].get("after", len(body) // 2))
        rate = int(kinds["slow"].get("rate", 1000000)) if "slow" in kinds else None
        pos = 0
        t0 = time.time()
        step = 65536 if rate is None else max(1, min(65536, rate // 20))
        while pos < limit:
            end = min(limit, pos + step)
            if after is not None and pos < after:
                end = min(end, after)
            if after is not None and pos == after:
                self.wfile.flush()
                time.sleep(float(kinds["stall"].get("seconds", 3)))
                after = None
                if kinds["stall"].get("close"):
                    raise Closed()
                continue
            self.write(body[pos:end])
            pos = end
            if rate:
                ahead = pos / rate - (time.time() - t0)
                if ahead > 0:
                    self.wfile.flush()
                    time.sleep(ahead)
        if limit < len(body):
            self.wfile.flush()
            if kinds["drop"].get("rst"):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           b"\x01\x00\x00\x00\x00\x00\x00\x00")
            else:
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            raise Closed()

    def serve_file(self, f, headers, keys):
        """Serves a file's bytes (GET/HEAD) with Range and file faults."""
        faults = []
        if self.method == "GET":
            faults = self.emu.take_faults(keys, ("status", "ratelimit"))
            for fl in faults:
                if fl["kind"] == "ratelimit":
                    ra = str(fl.get("retry_after", 1))
                    return self.hub_error(429, "RateLimited", "rate limit exceeded, retry later",
                                          [("Retry-After", ra),
                                           ("RateLimit", '"api";r=0;t=%s' % ra)])
                return self.hub_error(int(fl.get("status", 503)), None,
                                      fl.get("message", "service unavailable"))
        size = f.size
        rng = parse_range(self.headers.get("Range"), size)
        if self.method == "GET":
            if rng is not None and self.emu.take_faults(keys, ("norange",)):
                self.entry["norange"] = True
                rng = None
        hs = list(headers) + [("Accept-Ranges", "bytes"),
                              ("Content-Type", "application/octet-stream")]
        if rng == "unsat":
            self.status = 416
            return self.send_plain(416, b"", hs + [("Content-Range", "bytes */%d" % size)])
        if self.method == "GET":
            lo, hi = (0, size - 1) if rng is None else rng
            faults = self.emu.take_faults(
                keys, ("drop", "stall", "slow", "corrupt"),
                lambda fl: fl["kind"] != "corrupt"
                or lo <= int(fl.get("offset", size // 2)) <= hi)
            self.entry["faults"] = [fl["kind"] for fl in faults]
        if rng is None:
            return self.send_body(f.data, hs, 200, faults, size, 0)
        start, end = rng
        hs.append(("Content-Range", "bytes %d-%d/%d" % (start, end, size)))
        return self.send_body(f.data[start:end + 1], hs, 206, faults, size, start)


class CdnHandler(Handler):
    host_kind = "cdn"

    def dispatch(self):
        parts = self.raw_path.split("/")
        if len(parts) != 3 or parts[1] != "blobs" or self.method not in ("GET", "HEAD"):
            return self.send_plain(404, b"<Error><Code>NoSuchKey</Code></Error>",
                                   ctype="application/xml")
        sha = parts[2]
        self.entry["sha256"] = sha
        f = self.emu.blobs.get(sha)
        if f is None:
            return self.send_plain(404, b"<Error><Code>NoSuchKey</Code></Error>",
                                   ctype="application/xml")
        self.entry["file"] = self.emu.blob_paths[sha][0]
        try:
            exp = int(self.query.get("X-Amz-Expires", ["0"])[0])
            sig = self.query.get("X-Amz-Signature", [""])[0]
        except ValueError:
            exp, sig = 0, ""
        if not hmac.compare_digest(sig, self.emu.sign(sha, exp)) or exp < time.time():
            return self.send_plain(403, b"<Error><Code>AccessDenied</Code>"
                                   b"<Message>bad signature</Message></Error>",
                                   ctype="application/xml")
        if self.emu.cdn_reject_auth and self.headers.get("Authorization"):
            return self.send_plain(400, b"<Error><Code>InvalidArgument</Code><Message>Only one "
                                   b"auth mechanism allowed</Message></Error>",
                                   ctype="application/xml")
        self.serve_file(f, [("ETag", '"%s"' % sha),
                            ("Last-Modified", "Wed, 01 May 2024 12:00:00 GMT")],
                        self.emu.blob_paths[sha])


class ApiHandler(Handler):
    host_kind = "api"

    def dispatch(self):
        p = self.raw_path
        if p.startswith("/_emu/"):
            return self.control(p[len("/_emu/"):])
        if self.emu.require_token and self.token() not in self.emu.user_tokens:
            # a private mirror: no anonymous access (nginx auth_request, hubmirror serve --token)
            return self.hub_error(401, None, "this endpoint requires a token",
                                  [("WWW-Authenticate", 'Bearer realm="hubemu"')])
        segs = p.split("/")[1:]
        if segs[:2] == ["api", "resolve-cache"]:
            return self.resolve_cache(segs[2:])
        if segs and segs[0] == "api":
            self.api_fault = None
            fl = self.emu.take_faults(["api", "api:" + unquote(p)], API_FAULTS)
            if fl:
                self.entry["faults"] = [x["kind"] for x in fl]
                r = self.apply_status_fault(fl)
                if r:
                    return
                self.api_fault = fl[0]
            return self.api(segs[1:])
        rtype = "model"
        if segs and segs[0] == "datasets":
            rtype = "dataset"
            segs = segs[1:]
        if "resolve" in segs:
            i = segs.index("resolve")
            repo_id = "/".join(unquote(s) for s in segs[:i])
            fl = self.emu.take_faults(["resolve", "resolve:" + "/".join(segs[i + 2:])],
                                      ("status", "ratelimit", "redirect"))
            if fl and self.apply_status_fault(fl):
                return
            return self.resolve(rtype, repo_id, segs[i + 1:])
        return self.hub_error(404, None, "Not Found")

    def apply_status_fault(self, fl):
        for x in fl:
            if x["kind"] == "ratelimit":
                ra = str(x.get("retry_after", 1))
                self.hub_error(429, "RateLimited", "rate limit exceeded, retry later",
                               [("Retry-After", ra), ("RateLimit", '"api";r=0;t=%s' % ra)])
                return True
            if x["kind"] == "status":
                self.hub_error(int(x.get("status", 503)), x.get("code"),
                               x.get("message", "service unavailable"))
                return True
            if x["kind"] == "redirect":
                self.send_plain(int(x.get("status", 302)), b"Found",
                                [("Location", x["location"])])
                return True
        return False

    # ---- repo access ----------------------------------------------------------
    def find_repo(self, rtype, repo_id, files):
        """The repo if the caller may see it (and download, if files), else
        sends the Hub's error and returns None."""
        tok = self.token()
        valid = tok is not None and tok in self.emu.user_tokens
        r = self.emu.repos.get((rtype, repo_id))
        if r is None:
            self.hub_error(404, "RepoNotFound", "Repository not found")
            return None
        granted = tok is not None and tok in r.tokens
        if r.private and not granted:
            self.hub_error(401, "RepoNotFound", "Repository not found")
            return None
        if r.gated and files and not granted:
            if not valid:
                self.hub_error(401, "GatedRepo",
                               "Access to model %s is restricted. You must have access to it "
                               "and be authenticated to access it. Please log in." % r.id)
            else:
                self.hub_error(403, "GatedRepo",
                               "Access to model %s is restricted and you are not in the "
                               "authorized list. Visit https://huggingface.co/%s to ask for "
                               "access." % (r.id, r.id))
            return None
        return r

    def find_rev(self, r, rev):
        c = r.resolve(rev)
        if c is None:
            self.hub_error(404, "RevisionNotFound", "Invalid rev id: %s" % rev)
        return c

    # ---- /api ---------------------------------------------------------------------
    KEYWORDS = ("revision", "tree", "refs", "paths-info", "xet-read-token", "commits")

    def api(self, segs):
        if not segs or segs[0] not in ("models", "datasets"):
            return self.hub_error(404, None, "Not Found")
        rtype = segs[0][:-1]
        rest = segs[1:]
        kw = None
        for i, s in enumerate(rest):
            if s in self.KEYWORDS and i >= 1:
                kw = i
                break
        if kw is None:
            repo_id = "/".join(unquote(s) for s in rest)
            args = []
            verb = None
        else:
            repo_id = "/".join(unquote(s) for s in rest[:kw])
            verb = rest[kw]
            args = rest[kw + 1:]
        self.entry["repo"] = repo_id
        r = self.find_repo(rtype, repo_id, files=False)
        if r is None:
            return
        if verb is None:
            if self.method not in ("GET", "HEAD"):
                return self.hub_error(405, None, "Method not allowed")
            return self.repo_info(r, None)
        if verb == "revision":
            return self.repo_info(r, unquote("/".join(args)))
        if verb == "tree":
            if not args:
                return self.hub_error(404, None, "Not Found")
            rev = unquote(args[0])
            args = args[1:]
            if rev == "refs" and len(args) >= 2 and args[0] == "pr":
                rev = "refs/pr/" + args[1]
                args = args[2:]
            return self.tree(r, rev, "/".join(unquote(s) for s in args))
        if verb == "refs":
            return self.refs(r)
        if verb == "paths-info":
            return self.paths_info(r, unquote("/".join(args)))
        return self.hub_error(404, None, "Not Found")

    def repo_info(self, r, rev):
        c = self.find_rev(r, rev)
        if c is None:
            return
        blobs = self.query.get("blobs", ["false"])[0] in ("true", "1")
        info = {
            "_id": hashlib.md5(r.id.encode()).hexdigest()[:24],
            "id": r.id, "author": r.id.split("/")[0] if "/" in r.id else None,
            "sha": c.id, "lastModified": LAST_MODIFIED, "private": r.private,
            "gated": r.gated, "disabled": False, "tags": [], "downloads": 0, "likes": 0,
            "siblings": [f.sibling(blobs) for f in c.all_files()],
            "createdAt": LAST_MODIFIED,
        }
        if r.type == "model":
            info["modelId"] = r.id
            info["library_name"] = "transformers"
        if blobs:
            info["usedStorage"] = sum(f.size for f in c.all_files())
        self.send_json(200, info)

    def tree(self, r, rev, path):
        c = self.find_rev(r, rev)
        if c is None:
            return
        recursive = self.query.get("recursive", ["false"])[0] in ("true", "1")
        path = path.strip("/")
        if path and path not in c.dirs:
            return self.hub_error(404, "EntryNotFound",
                                  "Entry not found: %s is not a directory" % path)
        prefix = path + "/" if path else ""
        out = []
        for e in c.entries:
            rel = e["path"][len(prefix):]
            if path and not e["path"].startswith(prefix):
                continue
            if not recursive and "/" in rel:
                continue
            out.append(e)
        if not path:  # hostile entries appear at the root, as given
            out += [b.tree_entry() for b in c.bogus]
        try:
            off = int(base64.urlsafe_b64decode(self.query.get("cursor", ["MA=="])[0]).decode())
        except Exception:
            return self.hub_error(400, None, "Invalid cursor")
        ps = self.emu.page_size
        page = out[off:off + ps]
        headers = []
        if off + ps < len(out):
            q = {k: v[0] for k, v in self.query.items()}
            q["cursor"] = base64.urlsafe_b64encode(str(off + ps).encode()).decode()
            headers.append(("Link", '<%s%s?%s>; rel="next"'
                            % (self.emu.api_base, self.raw_path, urlencode(q))))
        self.send_json(200, page, headers)

    def refs(self, r):
        def row(name, ref, c):
            return {"name": name, "ref": ref, "targetCommit": c.id}
        out = {"branches": [row(k, "refs/heads/" + k, v) for k, v in sorted(r.branches.items())],
               "tags": [row(k, "refs/tags/" + k, v) for k, v in sorted(r.tags.items())],
               "converts": []}
        if self.query.get("include_prs", ["0"])[0] in ("1", "true"):
            out["pullRequests"] = [row(k[len("refs/"):], k, v) for k, v in sorted(r.prs.items())]
        self.send_json(200, out)

    def paths_info(self, r, rev):
        if self.method != "POST":
            return self.hub_error(405, None, "Method not allowed")
        c = self.find_rev(r, rev)
        if c is None:
            return
        ctype = self.headers.get("Content-Type", "")
        paths = []
        try:
            if "json" in ctype:
                body = json.loads(self.req_body or b"{}")
                paths = body.get("paths", [])
            else:
                paths = parse_qs(self.req_body.decode(), keep_blank_values=True).get("paths", [])
        except (ValueError, UnicodeDecodeError):
            return self.hub_error(400, None, "Bad request body")
        out = []
        for p in paths:
            f = c.lookup(p)
            if f:
                out.append(f.tree_entry())
            elif p in c.dirs:
                out.append({"type": "directory", "path": p, "size": 0,
                            "oid": hashlib.sha1(("tree:%s:%s" % (c.id, p)).encode()).hexdigest()})
        self.send_json(200, out)

    # ---- files ------------------------------------------------------------------
    def resolve(self, rtype, repo_id, segs):
        self.entry["repo"] = repo_id
        if self.method not in ("GET", "HEAD"):
            return self.hub_error(405, None, "Method not allowed")
        if not segs:
            return self.hub_error(404, None, "Not Found")
        rev = unquote(segs[0])
        rest = segs[1:]
        if rev == "refs" and len(rest) >= 3 and rest[0] == "pr":
            rev = "refs/pr/" + rest[1]
            rest = rest[2:]
        path = "/".join(unquote(s) for s in rest)
        self.entry["file"] = path
        r = self.find_repo(rtype, repo_id, files=True)
        if r is None:
            return
        c = self.find_rev(r, rev)
        if c is None:
            return
        f = c.lookup(path)
        if f is None:
            return self.hub_error(404, "EntryNotFound", "Entry not found",
                                  [("X-Repo-Commit", c.id)])
        if f.lfs:
            exp = int(time.time()) + 3600
            loc = "%s/blobs/%s?%s" % (self.emu.cdn_base, f.sha256, urlencode({
                "X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Expires": str(exp),
                "X-Amz-Signature": self.emu.sign(f.sha256, exp),
                "response-content-disposition": "inline; filename*=UTF-8''%s"
                % quote(path.split("/")[-1])}))
            body = ("Found. Redirecting to %s" % loc).encode()
            return self.send_plain(302, body, [
                ("Location", loc), ("X-Repo-Commit", c.id),
                ("ETag", '"%s"' % f.sha256), ("X-Linked-Etag", '"%s"' % f.sha256),
                ("X-Linked-Size", str(f.size))])
        kind = "models" if rtype == "model" else "datasets"
        loc = "/api/resolve-cache/%s/%s/%s/%s?%s" % (
            kind, r.id, c.id, quote(path), urlencode({"etag": '"%s"' % f.git_oid}))
        body = ("Temporary Redirect. Redirecting to %s" % loc).encode()
        self.send_plain(307, body, [("Location", loc), ("X-Repo-Commit", c.id),
                                    ("ETag", '"%s"' % f.git_oid)])

    def resolve_cache(self, segs):
        if self.method not in ("GET", "HEAD") or not segs or segs[0] not in ("models", "datasets"):
            return self.hub_error(404, None, "Not Found")
        rtype = segs[0][:-1]
        segs = segs[1:]
        for n in (2, 1):
            if len(segs) > n and (rtype, "/".join(unquote(s) for s in segs[:n])) in self.emu.repos:
                break
        else:
            return self.hub_error(404, "RepoNotFound", "Repository not found")
        repo_id = "/".join(unquote(s) for s in segs[:n])
        self.entry["repo"] = repo_id
        r = self.find_repo(rtype, repo_id, files=True)
        if r is None:
            return
        commit = segs[n]
        c = next((x for x in r.commits if x.id == commit), None)
        if c is None:
            return self.hub_error(404, "RevisionNotFound", "Invalid rev id: %s" % commit)
        path = "/".join(unquote(s) for s in segs[n + 1:])
        self.entry["file"] = path
        f = c.lookup(path)
        if f is None:
            return self.hub_error(404, "EntryNotFound", "Entry not found")
        self.serve_file(f, [("ETag", '"%s"' % f.git_oid), ("X-Repo-Commit", c.id)], [path])

    # ---- control -------------------------------------------------------------
    def control(self, what):
        emu = self.emu
        body = None
        if self.req_body:
            try:
                body = json.loads(self.req_body)
            except ValueError:
                return self.send_json(400, {"error": "bad json"})
        if what == "log" and self.method == "GET":
            with emu.lock:
                data = list(emu.log)
            return self.send_json(200, data)
        if what == "inflight" and self.method == "GET":
            with emu.lock:
                data = [{k: e.get(k) for k in ("host", "method", "path", "file", "sha256",
                                               "range", "bytes", "time")}
                        for e in emu.inflight.values() if not e["path"].startswith("/_emu/")]
            return self.send_json(200, data)
        if what == "reset-log" and self.method == "POST":
            with emu.lock:
                emu.log.clear()
            return self.send_json(200, {"ok": True})
        if what == "faults":
            if self.method == "POST":
                if not isinstance(body, list):
                    body = [body] if isinstance(body, dict) else []
                with emu.lock:
                    if self.query.get("append"):
                        emu.faults.extend(body)
                    else:
                        emu.faults = body
                return self.send_json(200, {"ok": True})
            with emu.lock:
                data = [dict(f) for f in emu.faults]
            return self.send_json(200, data)
        if what == "settings" and self.method == "POST":
            body = body or {}
            if "page_size" in body:
                emu.page_size = max(1, int(body["page_size"]))
            if "cdn_reject_auth" in body:
                emu.cdn_reject_auth = bool(body["cdn_reject_auth"])
            if "require_token" in body:
                emu.require_token = bool(body["require_token"])
            return self.send_json(200, {"ok": True, "page_size": emu.page_size})
        if what == "set-ref" and self.method == "POST":
            r = emu.repos.get((body.get("type", "model"), body["repo"]))
            if r is None:
                return self.send_json(404, {"error": "no such repo"})
            c = r.commit_by(body["commit"])
            if c is None:
                return self.send_json(404, {"error": "no such commit"})
            ref = body.get("ref", "main")
            if ref.startswith("refs/pr/"):
                r.prs[ref] = c
            elif body.get("tag"):
                r.tags[ref] = c
            else:
                r.branches[ref] = c
            return self.send_json(200, {"ok": True, "commit": c.id})
        if what == "repos":
            return self.send_json(200, emu.describe())
        return self.send_json(404, {"error": "unknown control endpoint"})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cdn-host", default="127.0.0.2")
    ap.add_argument("--cdn-port", type=int, default=0)
    ap.add_argument("--ready-file")
    ap.add_argument("--page-size", type=int)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    with open(a.config) as fh:
        config = json.load(fh)
    emu = Emu(config, os.path.dirname(os.path.abspath(a.config)), a.page_size)

    api_h = type("Api", (ApiHandler,), {"emu": emu, "verbose": a.verbose})
    cdn_h = type("Cdn", (CdnHandler,), {"emu": emu, "verbose": a.verbose})
    api = Server((a.host, a.port), api_h)
    cdn = Server((a.cdn_host, a.cdn_port), cdn_h)
    emu.api_base = "http://%s:%d" % (a.host, api.server_address[1])
    emu.cdn_base = "http://%s:%d" % (a.cdn_host, cdn.server_address[1])
    for s in (api, cdn):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    info = {"port": api.server_address[1], "cdn_port": cdn.server_address[1],
            "api": emu.api_base, "cdn": emu.cdn_base, "pid": os.getpid()}
    if a.ready_file:
        tmp = a.ready_file + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(info, fh)
        os.rename(tmp, a.ready_file)
    else:
        print(json.dumps(info), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        stop.wait(1)
    api.shutdown()
    cdn.shutdown()


if __name__ == "__main__":
    main()
