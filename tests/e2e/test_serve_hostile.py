"""test_serve_hostile.py - `hubmirror serve` under hostile requests: path
traversal in every encoding, absurd ranges, huge headers, URLs and bodies,
odd methods and malformed requests. Each must get a clean 4xx (never a 5xx,
a crash or a file from outside the store) and the server must keep working."""

import os
import re

import lib
from lib import check
import serve_lib as sl
from serve_lib import MODEL, Server, serving

MARKER = b"TOPSECRET-serve-test-7f3a"
LEAKS = (MARKER, b"root:x:0:0", b"SQLite format 3")


def plant_secrets(t):
    """A secret file next to the store and inside its directory tree."""
    for d in (t.tmp, t.store):
        with open(os.path.join(d, "secret.txt"), "wb") as fh:
            fh.write(MARKER + b"\n")


def traversal_paths():
    m = MODEL
    out = ["/..%2f..%2fetc/passwd", "/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
           "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/../../../../etc/passwd",
           "/api/models/../../x", "/api/models/..%2f..%2fx", "/api/models/%2e%2e/%2e%2e/x",
           "/api/models/%2e%2e%2f%2e%2e%2fsecret.txt", "/api/models/demo-org/..%2f..%2fsecret.txt",
           "/api/models/%s/tree/main/..%%2f..%%2f.." % m, "/api/models/%s/tree/main/../../.." % m,
           "/api/models/%s/tree/..%%2f..%%2f..%%2f" % m, "/api/models/%s/tree/main/%%2e%%2e" % m,
           "/api/models/%s/revision/..%%2f..%%2f..%%2fsecret.txt" % m,
           "/api/models/%s/refs/../../../secret.txt" % m,
           "/%s/resolve/main//etc/passwd" % m, "/%s/resolve/main/%%2fetc%%2fpasswd" % m,
           "/%s/resolve/main/%%2Fetc/passwd" % m,
           "/%s/resolve/main/config.json%%00" % m, "/%s/resolve/main/%%00" % m,
           "/%s/resolve/main/config.json%%00.txt" % m, "/%s/resolve/main/%%5c..%%5c..%%5csecret.txt" % m,
           "/%s/resolve/main/..%%5c..%%5csecret.txt" % m,
           "/%s/resolve/..%%2f..%%2f/config.json" % m, "/%s/resolve/%%2e%%2e/config.json" % m,
           "/%s/resolve/..%%2f..%%2f..%%2fsecret.txt/x" % m,
           "/..%2f..%2f/resolve/main/config.json", "/demo-org/..%2f..%2f/resolve/main/secret.txt",
           "/%2e%2e/%2e%2e/resolve/main/secret.txt", "/datasets/../../secret.txt",
           "/datasets/%2e%2e/%2e%2e/resolve/main/secret.txt",
           "/index.db", "/store/index.db", "/blobs/sha256", "/secret.txt",
           "/%s/resolve/main/.git/config" % m, "/%s/resolve/main/%%2e%%2egit/config" % m,
           "/%s/resolve/main/%%252e%%252e/%%252e%%252e/secret.txt" % m]
    for depth in range(1, 9):
        for up in ("../", "%2e%2e/", "..%2f", "%2e%2e%2f", "%2E%2E%2F", ".%2e/", "..%252f"):
            out.append("/%s/resolve/main/%ssecret.txt" % (m, up * depth))
            out.append("/%s/resolve/main/%sindex.db" % (m, up * depth))
        out.append("/%s/resolve/main/%setc/passwd" % (m, "../" * depth))
    return out


@serving(timeout=60)
def test_traversal_is_refused(t):
    sl.prefill(t)
    plant_secrets(t)
    srv = Server(t)
    bad = []
    for path in traversal_paths():
        for method in ("GET", "HEAD"):
            r = srv.req(method, path)
            if not 400 <= r.status < 500:
                bad.append("%s %s -> %r" % (method, path, r))
            for leak in LEAKS:
                check(leak not in r.body, "%s %s leaked %r: %r" % (method, path, leak, r))
            srv.check_alive("%s %s" % (method, path))
    check(not bad, "%d traversal requests not answered 4xx:\n  %s" % (len(bad), "\n  ".join(bad[:15])))
    # the same through the API bodies: paths-info names outside the repo
    for body in ({"paths": ["../secret.txt", "../../index.db", "/etc/passwd", "..", "."], "expand": True},):
        r = srv.post_json("/api/models/%s/paths-info/main" % MODEL, body)
        check(r.status == 200 and r.json() == [] or 400 <= r.status < 500,
              "paths-info of names outside the repo: %r" % r)
        for leak in LEAKS:
            check(leak not in r.body, "paths-info leaked %r" % leak)
    srv.check_works("traversal attempts")


@serving()
def test_hostile_ranges(t):
    sl.prefill(t)
    srv = Server(t)
    data = lib.sample_files()["config.json"]
    n = len(data)
    url = sl.resolve_url(MODEL, "main", "config.json")
    must_416 = ["bytes=99999999999-", "bytes=%d-" % n, "bytes=18446744073709551615-",
                "bytes=99999999999-99999999999"]
    for spec in must_416:
        r = srv.get(url, headers={"Range": spec})
        check(r.status == 416, "Range: %s on a %d-byte file: expected 416: %r" % (spec, n, r))
        check(r.h("Content-Range") == "bytes */%d" % n, "Range: %s: Content-Range %r" % (spec, r.h("Content-Range")))
    # Invalid or unsupported Range values: RFC 9110 (14.2) lets a server ignore
    # them (200 with the whole file) or answer 416; anything else is a bug.
    odd = ["bytes=5-2", "bytes=-0", "bytes=abc", "bytes=", "bytes=-", "bytes=--1", "bytes=1-2-3",
           "bytes= 0-0x10", "bytes=0-0,5-6", "bytes=0-1,-1", "items=0-5", "bytes=-99999999999999999999999",
           "bytes=99999999999999999999999-", "bytes=0-99999999999999999999999", "bytes=-18446744073709551616",
           "bytes=+1-2", "bytes=1 -2", "bytes=%s" % ("0-0," * 5000), "bytes=\xff-1"]
    for spec in odd:
        r = srv.get(url, headers={"Range": spec})
        what = "Range: %r" % spec[:60]
        check(r.status in (200, 206) or 400 <= r.status < 500, "%s: %r" % (what, r))
        if r.status == 200:
            check(r.body == data, "%s: 200 with wrong bytes" % what)
        elif r.status == 206:
            cr = r.h("Content-Range") or ""
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", cr)
            check(m and int(m.group(3)) == n, "%s: 206 with Content-Range %r" % (what, cr))
            lo, hi = int(m.group(1)), int(m.group(2))
            check(r.body == data[lo:hi + 1], "%s: 206 with wrong bytes" % what)
        srv.check_alive(what)
    srv.check_works("odd ranges")


@serving(timeout=60)
def test_huge_requests(t):
    sl.prefill(t)
    srv = Server(t)
    big_header = (b"GET /api/models/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " % MODEL.encode()
                  + b"a" * 100000 + b"\r\n\r\n")
    big_url = b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    many = (b"GET /api/models/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % MODEL.encode()
            + b"".join(b"X-H%d: v\r\n" % i for i in range(20000)) + b"\r\n")
    for what, req in (("a 100 KB header", big_header), ("a 100 KB URL", big_url),
                      ("20000 headers", many)):
        out = srv.raw(req, timeout=10)
        st = sl.raw_status(out)
        check(st is not None and 400 <= st < 500, "%s: expected a 4xx answer, got %r" % (what, out[:200]))
        srv.check_alive(what)
    # paths-info with a 10 MB body (form and JSON): refused, not buffered forever
    for ctype, body in (("application/x-www-form-urlencoded", b"paths=" + b"a" * (10 * 1024 * 1024)),
                        ("application/json", b'{"paths": ["' + b"a" * (10 * 1024 * 1024) + b'"]}'),
                        ("application/x-www-form-urlencoded",
                         b"&".join([b"paths=abcdefgh"] * (10 * 1024 * 1024 // 15)))):
        req = (b"POST /api/models/%s/paths-info/main HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (MODEL.encode(), ctype.encode(), len(body))
               + body)
        out = srv.raw(req, timeout=15)
        st = sl.raw_status(out)
        check(st is None or 400 <= st < 500,
              "paths-info with a 10 MB %s body: expected 4xx (413) or a closed connection, got %r"
              % (ctype, out[:200]))
        srv.check_alive("a 10 MB paths-info body")
    # a body announced but never sent, a lying Content-Length, garbage
    for what, req in (
            ("a missing body", b"POST /api/models/%s/paths-info/main HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pa" % MODEL.encode()),
            ("a negative Content-Length", b"POST /api/models/%s/paths-info/main HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Length: -5\r\n\r\n" % MODEL.encode()),
            ("a Content-Length of 2^64", b"POST /api/models/%s/paths-info/main HTTP/1.1\r\nHost: x\r\n"
                                         b"Content-Length: 18446744073709551616\r\n\r\n" % MODEL.encode()),
            ("binary garbage", bytes(range(256)) * 4 + b"\r\n\r\n"),
            ("a bare LF request", b"GET /api/models/%s HTTP/1.1\nHost: x\n\n" % MODEL.encode()),
            ("HTTP/2.0 text", b"GET /api/models/%s HTTP/2.0\r\nHost: x\r\n\r\n" % MODEL.encode()),
            ("no Host on HTTP/1.1", b"GET /api/models/%s HTTP/1.1\r\n\r\n" % MODEL.encode())):
        out = srv.raw(req, timeout=3)
        st = sl.raw_status(out)
        check(st is None or st < 500 or st == 505, "%s: answered %r" % (what, out[:200]))
        srv.check_alive(what)
    srv.check_works("huge and malformed requests")


@serving()
def test_bad_bodies_and_methods(t):
    sl.prefill(t)
    srv = Server(t)
    url = "/api/models/%s/paths-info/main" % MODEL
    for ctype, body in (("application/json", b"{not json"), ("application/json", b'{"paths": "config.json"}'),
                        ("application/json", b'{"paths": [1, 2, {"a": 3}]}'), ("application/json", b"[]"),
                        ("application/json", b'{"paths": ["config.json"], "expand": "maybe"}'),
                        ("application/json", b'{"paths": ' + b"[" * 100000 + b"]" * 100000 + b"}"),
                        ("application/x-www-form-urlencoded", b"paths=%ZZ%"),
                        ("application/x-www-form-urlencoded", b"paths=config.json%00"),
                        ("text/plain", b"\x00\xff\xfe")):
        r = srv.req("POST", url, headers={"Content-Type": ctype}, body=body)
        check(r.status == 200 or 400 <= r.status < 500, "paths-info body %r: %r" % (body[:40], r))
        srv.check_alive("paths-info body %r" % body[:40])
    for method, path in (("DELETE", "/api/models/" + MODEL), ("PUT", "/api/models/" + MODEL),
                         ("POST", sl.resolve_url(MODEL, "main", "config.json")),
                         ("PATCH", "/api/models/%s/tree/main" % MODEL), ("DELETE", sl.resolve_url(MODEL, "main", "config.json")),
                         ("GET", "/api/models/%s/paths-info/main" % MODEL), ("OPTIONS", "/metrics-nope"),
                         ("PROPFIND", "/")):
        r = srv.req(method, path, body=b"" if method in ("PUT", "POST", "PATCH") else None)
        check(400 <= r.status < 500 or (method == "OPTIONS" and r.status in (200, 204)),
              "%s %s: %r" % (method, path, r))
        srv.check_alive("%s %s" % (method, path))
    # the store is untouched
    t.ok("verify")
    srv.check_works("bad bodies and methods")


@serving()
def test_invalid_ranges_ignored(t):
    """RFC 9110 14.2: a Range that does not parse is ignored (200, whole
    file); bytes=--5 is no suffix range (it once gave 206 of the whole file)."""
    sl.prefill(t)
    srv = Server(t)
    data = lib.sample_files()["config.json"]
    url = sl.resolve_url(MODEL, "main", "config.json")
    for spec in ("bytes=abc", "bytes=--5", "bytes=--1", "bytes=5-2", "bytes=", "bytes=-",
                 "bytes=+1-2", "bytes=1-2-3", "bytes=0-0x10", "bytes=1 -2"):
        r = srv.get(url, headers={"Range": spec})
        check(r.status == 200 and r.body == data and r.h("Content-Range") is None,
              "Range: %s must be ignored (200, whole file): %r" % (spec, r))
    # twins: valid ranges still work, unsatisfiable ones are 416
    r = srv.get(url, headers={"Range": "bytes=-5"})
    check(r.status == 206 and r.body == data[-5:], "bytes=-5: %r" % r)
    r = srv.get(url, headers={"Range": "bytes=-0"})
    check(r.status == 416, "bytes=-0 is unsatisfiable: %r" % r)
    r = srv.get(url, headers={"Range": "bytes=%d-" % len(data)})
    check(r.status == 416, "a range past the end is unsatisfiable: %r" % r)
