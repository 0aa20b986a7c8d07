"""test_serve_ops.py - running `hubmirror serve`: the served table in
index.db and `stats --json`, /metrics, the access log, --token-file, a
graceful SIGTERM while a download is in flight, and 1000 idle connections."""

import json
import math
import os
import re
import resource
import signal
import socket
import threading
import time

import lib
from lib import check
import serve_lib as sl
from serve_lib import MODEL, REVS, DATASET, Server, serving

CONFIG = "config.json"


def config_bytes():
    return lib.sample_files()[CONFIG]


@serving()
def test_served_rows_and_stats(t):
    sl.prefill(t)
    srv = Server(t)
    t0 = int(time.time())
    src = lib.sample_files()
    cfg = src[CONFIG]
    url_cfg = sl.resolve_url(MODEL, "main", CONFIG)
    url_st = sl.resolve_url(MODEL, "main", "model.safetensors")
    r1 = srv.get(url_cfg)
    r2 = srv.head(url_st)
    r3 = srv.get(url_st, headers={"Range": "bytes=0-99"})
    r4 = srv.get("/api/models/" + MODEL)
    r5 = srv.get(sl.resolve_url(MODEL, "main", "nope.txt"))
    r6 = srv.get(sl.resolve_url(DATASET, "main", "data/train.csv", dataset=True))
    check([r.status for r in (r1, r2, r3, r4, r5, r6)] == [200, 200, 206, 200, 404, 200],
          "statuses: %s" % [r.status for r in (r1, r2, r3, r4, r5, r6)])
    rows = sl.wait_for(lambda: len(sl.served_rows(t)) >= 6 and sl.served_rows(t), timeout=8)
    check(rows, "served rows after 8 s: %s" % sl.served_rows(t))
    check(len(rows) == 6, "6 requests made, %d served rows: %s" % (len(rows), rows))

    def row(method, path, status):
        m = [x for x in rows if x["method"] == method and x["path"] == path and x["status"] == status]
        check(len(m) == 1, "no single served row for %s %s %d: %s" % (method, path, status, rows))
        return m[0]

    now = time.time()
    for x in rows:
        check(x["client"] and "127.0.0.1" in x["client"], "served.client %r" % x["client"])
        check(t0 - 2 <= x["started_at"] <= now + 2, "served.started_at %r" % x["started_at"])
        check(x["seconds"] is not None and 0 <= x["seconds"] < 30, "served.seconds %r" % x["seconds"])
    a = row("GET", CONFIG, 200)
    check(a["kind"] == "file" and a["repo_type"] == "model" and a["repo"] == MODEL
          and a["revision"] == "main" and a["bytes"] == len(cfg) and a["cache"] == "hit",
          "row of GET config.json: %s" % a)
    b = row("HEAD", "model.safetensors", 200)
    check(b["kind"] == "file" and b["bytes"] == 0, "row of HEAD model.safetensors: %s" % b)
    c = row("GET", "model.safetensors", 206)
    check(c["kind"] == "file" and c["bytes"] == 100, "row of a 100-byte range: %s" % c)
    api = [x for x in rows if x["kind"] == "api"]
    check(len(api) == 1 and api[0]["repo"] == MODEL and api[0]["status"] == 200
          and api[0]["cache"] is None and api[0]["bytes"] == len(r4.body),
          "row of the repo info request: %s" % api)
    e = row("GET", "nope.txt", 404)
    check(e["kind"] == "file" and e["repo"] == MODEL, "row of the 404: %s" % e)
    d = row("GET", "data/train.csv", 200)
    check(d["repo_type"] == "dataset" and d["repo"] == DATASET
          and d["bytes"] == len(sl.DATASET_FILES["data/train.csv"]), "row of the dataset file: %s" % d)

    # stats while the server runs (the index is shared)
    j = t.ok("stats", "--json").json()
    s = j.get("served")
    check(isinstance(s, dict), "stats --json has no 'served' object: %s" % j)
    tot = s.get("total") or {}
    check(tot.get("requests") == 6, "served total requests %r, expected 6: %s" % (tot.get("requests"), s))
    check(tot.get("errors") == 1, "served total errors %r, expected 1: %s" % (tot.get("errors"), s))
    check(tot.get("bytes") == sum(x["bytes"] for x in rows),
          "served total bytes %r, the rows sum to %d" % (tot.get("bytes"), sum(x["bytes"] for x in rows)))
    check(tot.get("hits") == sum(1 for x in rows if x["cache"] == "hit") and tot.get("misses") == 0,
          "served hits/misses %r/%r: %s" % (tot.get("hits"), tot.get("misses"), rows))
    nfile = sum(1 for x in rows if x["kind"] == "file")
    nok = sum(1 for x in rows if x["kind"] == "file" and x["status"] < 400)
    check(tot.get("files") in (nfile, nok), "served total files %r (file requests %d, answered %d)"
          % (tot.get("files"), nfile, nok))
    repos = {(x.get("repo_type"), x.get("repo")): x for x in s.get("repos") or []}
    check(repos.get(("model", MODEL), {}).get("requests") == 5
          and repos.get(("dataset", DATASET), {}).get("requests") == 1,
          "served per repo: %s" % s.get("repos"))
    r = t.ok("stats")
    check("serve" in r.out.lower(), "`hubmirror stats` does not show served requests: %r" % r)

    # a request right before SIGTERM is in the table once the server has exited
    check(srv.get(url_cfg).status == 200, "last GET failed")
    srv.stop()
    rows = sl.served_rows(t)
    check(len(rows) == 7, "after SIGTERM: %d served rows, expected 7 (the last was not flushed?)" % len(rows))


def parse_metrics(text):
    """{(name, frozenset(labels)): value} and {name: type}; fails on a line
    that is not Prometheus text format."""
    samples, types, helps = {}, {}, set()
    name_re = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
    label_re = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"'
    for ln in text.split("\n"):
        if not ln.strip():
            continue
        if ln.startswith("#"):
            m = re.match(r"# (HELP|TYPE) (%s) ?(.*)$" % name_re, ln)
            if not m:
                check(not ln.startswith("# HELP") and not ln.startswith("# TYPE"), "bad comment %r" % ln)
                continue
            if m.group(1) == "TYPE":
                check(m.group(3) in ("counter", "gauge", "histogram", "summary", "untyped"),
                      "bad TYPE line %r" % ln)
                check(m.group(2) not in types, "TYPE of %s given twice" % m.group(2))
                types[m.group(2)] = m.group(3)
            else:
                helps.add(m.group(2))
            continue
        m = re.match(r"(%s)(\{(.*)\})? ([^ ]+)( -?\d+)?$" % name_re, ln)
        check(m, "not a Prometheus sample line: %r" % ln)
        labels = []
        if m.group(3):
            rest = m.group(3)
            pos = 0
            while pos < len(rest):
                lm = re.compile(label_re).match(rest, pos)
                check(lm, "bad labels in %r" % ln)
                labels.append((lm.group(1), lm.group(2)))
                pos = lm.end()
                if pos < len(rest):
                    check(rest[pos] == ",", "bad labels in %r" % ln)
                    pos += 1
        v = m.group(4)
        try:
            val = float(v.replace("+Inf", "inf").replace("-Inf", "-inf"))
        except ValueError:
            raise lib.Fail("bad value in %r" % ln)
        key = (m.group(1), frozenset(labels))
        check(key not in samples, "sample given twice: %r" % ln)
        samples[key] = val
    return samples, types


def total(samples, name):
    return sum(v for (n, _), v in samples.items() if n == name)


def family(types, name):
    """The TYPE name of a metric (counters may be declared with or without _total)."""
    for n in (name, name[:-len("_total")] if name.endswith("_total") else name):
        if n in types:
            return types[n]
    return None


@serving()
def test_metrics(t):
    sl.prefill(t)
    srv = Server(t)
    r = srv.get("/metrics")
    check(r.status == 200, "GET /metrics: %r" % r)
    check((r.h("Content-Type") or "").startswith("text/plain"), "/metrics Content-Type %r" % r.h("Content-Type"))
    s0, types = parse_metrics(r.body.decode())
    cfg = config_bytes()
    for _ in range(2):
        check(srv.get(sl.resolve_url(MODEL, "main", CONFIG)).body == cfg, "GET config.json")
    check(srv.get(sl.resolve_url(MODEL, "main", "nope")).status == 404, "404 expected")
    r = srv.get("/metrics")
    s1, types = parse_metrics(r.body.decode())
    for name, kind in (("hubmirror_requests_total", "counter"), ("hubmirror_served_bytes_total", "counter"),
                       ("hubmirror_request_duration_seconds", "histogram")):
        check(family(types, name) == kind, "%s: TYPE %r, expected %s (types: %s)"
              % (name, family(types, name), kind, types))
    d = total(s1, "hubmirror_requests_total") - total(s0, "hubmirror_requests_total")
    check(3 <= d <= 4, "hubmirror_requests_total grew by %r over 3 requests (+1 /metrics)" % d)
    d = total(s1, "hubmirror_served_bytes_total") - total(s0, "hubmirror_served_bytes_total")
    check(d >= 2 * len(cfg), "hubmirror_served_bytes_total grew by %r, 2 x %d bytes were served" % (d, len(cfg)))
    # the histogram: cumulative buckets ending in +Inf == _count, a _sum, per label set
    h = "hubmirror_request_duration_seconds"
    groups = {}
    for (n, labels), v in s1.items():
        if n == h + "_bucket":
            le = dict(labels).get("le")
            check(le is not None, "bucket without le: %s" % sorted(labels))
            rest = frozenset(x for x in labels if x[0] != "le")
            groups.setdefault(rest, []).append((float(le.replace("+Inf", "inf")), v))
    check(groups, "no %s_bucket samples" % h)
    counted = 0
    for rest, buckets in groups.items():
        buckets.sort()
        check(buckets[-1][0] == math.inf, "%s%s: no le=\"+Inf\" bucket" % (h, sorted(rest)))
        vals = [v for _, v in buckets]
        check(vals == sorted(vals), "%s%s: buckets not cumulative: %s" % (h, sorted(rest), buckets))
        cnt = s1.get((h + "_count", rest))
        check(cnt == vals[-1], "%s%s: _count %r != +Inf bucket %r" % (h, sorted(rest), cnt, vals[-1]))
        check(s1.get((h + "_sum", rest)) is not None and s1[(h + "_sum", rest)] >= 0,
              "%s%s: no _sum" % (h, sorted(rest)))
        counted += cnt
    check(counted >= 3, "the duration histogram counts %r requests" % counted)
    for (n, _), v in s1.items():
        if n.endswith("_total") or n.endswith("_count") or n.endswith("_bucket"):
            check(v >= 0 and v == int(v), "%s = %r" % (n, v))


@serving()
def test_access_log(t):
    sl.prefill(t)
    log = os.path.join(t.tmp, "access.log")
    srv = Server(t, "--access-log", log)
    cfg = config_bytes()
    u1 = sl.resolve_url(MODEL, "main", CONFIG)
    check(srv.get(u1, headers={"User-Agent": "huggingface_hub/0.30 \"quoted\""}).status == 200, "GET config.json")
    # the line is written promptly (tail -f), not at exit
    got = sl.wait_for(lambda: os.path.exists(log) and lib.read(log).count(b"\n") >= 1, timeout=4)
    check(got, "nothing in the access log 4 s after a request")
    u2 = sl.resolve_url(MODEL, "main", "model.safetensors")
    u3 = "/no-org/no-repo/resolve/main/x.bin"
    u4 = "/api/models/%s/tree/main?recursive=true" % MODEL
    check(srv.head(u2).status == 200, "HEAD")
    check(srv.get(u3).status == 404, "404")
    check(srv.get(u4).status == 200, "tree")
    srv.stop()
    lines = lib.read(log).decode("utf-8", "replace").splitlines()
    check(len(lines) == 4, "4 requests, %d access-log lines: %s" % (len(lines), lines))
    # a line is written when the server has finished a request, which may be
    # after the client read its answer: the last ones can come in any order
    for method, url, status in (("GET", u1, 200), ("HEAD", u2, 200), ("GET", u3, 404),
                                ("GET", u4.split("?")[0], 200)):
        check([ln for ln in lines if '"%s %s' % (method, url) in ln and " %d " % status in ln
               and ln.startswith("127.0.0.1 ")],
              "no access-log line names the client, %s, %s and %d: %s" % (method, url, status, lines))
    check(str(len(cfg)) in lines[0], "access-log line %r lacks the %d bytes sent" % (lines[0], len(cfg)))
    # the Combined Log Format, the time to the millisecond, then seconds taken and cache result
    clf = re.compile(r'^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3} \+0000\] '
                     r'"(GET|HEAD) \S+ HTTP/1\.[01]" \d{3} \d+ "[^"]*" "[^"]*" \d+\.\d{3} (hit|miss|-)( aborted)?$')
    for ln in lines:
        check(clf.match(ln), "not the Combined Log Format: %r" % ln)
    check('"huggingface_hub/0.30 \\x22quoted\\x22"' in lines[0], "the user agent, escaped, in %r" % lines[0])


@serving()
def test_token_file(t):
    sl.prefill(t)
    secret = "hf_ServeSecret0123456789abcdef"
    tf = os.path.join(t.tmp, "tokens")
    with open(tf, "w") as fh:
        fh.write(secret + "\n")
    log = os.path.join(t.tmp, "access.log")
    srv = Server(t, "--token-file", tf, "--access-log", log)
    cfg = config_bytes()
    urls = ["/api/models/" + MODEL, sl.resolve_url(MODEL, "main", CONFIG),
            "/api/models/%s/tree/main" % MODEL, sl.resolve_url(DATASET, "main", "README.md", dataset=True)]
    for url in urls:
        for hs in ({}, {"Authorization": "Bearer hf_wrong"}, {"Authorization": "Bearer " + secret + "x"},
                   {"Authorization": "Bearer " + secret[:-1]}, {"Authorization": "Basic " + secret},
                   {"Authorization": "Bearer"}, {"Authorization": "bearer"}):
            for method in ("GET", "HEAD"):
                r = srv.req(method, url, headers=hs)
                check(r.status == 401, "%s %s with %s: expected 401: %r" % (method, url, hs, r))
                check(cfg not in r.body, "%s %s: file bytes in a 401 answer" % (method, url))
        r = srv.get(url, token=secret)
        check(r.status == 200, "GET %s with the right token: %r" % (url, r))
    r = srv.post_json("/api/models/%s/paths-info/main" % MODEL, {"paths": [CONFIG]})
    check(r.status == 401, "paths-info without a token: %r" % r)
    # a client pull through the server needs the token
    b = os.path.join(t.tmp, "store-b")
    r = t.hm("pull", MODEL, store=b, endpoint=srv.url)
    check(r.rc != 0, "pull without a token succeeded against --token-file: %r" % r)
    t.ok("pull", MODEL, "--token", secret, store=b, endpoint=srv.url)
    t.ok("verify", store=b)
    srv.stop()
    # the token is never written to the log, the index or stderr
    for what, data in (("access log", lib.read(log)), ("stderr", srv.stderr().encode()),
                       ("served rows", json.dumps(sl.served_rows(t)).encode())):
        check(secret.encode() not in data, "the token appears in the %s" % what)
    # a missing token file is a startup error
    r = t.hm("serve", "--listen", "127.0.0.1:0", "--token-file", os.path.join(t.tmp, "missing"), timeout=10)
    check(r.rc not in (0, None) and "hubmirror: " in r.err, "serve with a missing token file: %r" % r)


@serving(timeout=60)
def test_sigterm_during_download(t):
    size = 24 * 1000 * 1000
    emu = t.emu([{"type": "model", "id": "demo-org/big", "commits": [
        {"files": {"big.bin": {"random": size, "seed": 21}}}]}])
    t.ok("pull", "demo-org/big", "-q")
    data = lib.random_bytes(size, 21)
    srv = Server(t)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    s.settimeout(20)
    s.connect((srv.host, srv.port))
    s.sendall(b"GET /demo-org/big/resolve/main/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Connection: close\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf or len(buf.split(b"\r\n\r\n", 1)[1]) < 65536:
        chunk = s.recv(65536)
        check(chunk, "connection closed after %d bytes" % len(buf))
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    check(head.startswith(b"HTTP/1.1 200"), "status line %r" % head[:40])
    # the download is in flight: most of the 24 MB are still on the server
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    check(srv.alive() or srv.proc.returncode == 0, "the server died on SIGTERM with rc %s"
          % srv.proc.returncode)
    parts = [body]
    n = len(body)
    while True:
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            break
        if not chunk:
            break
        parts.append(chunk)
        n += len(chunk)
    s.close()
    got = b"".join(parts)
    check(got == data[:len(got)], "bytes received around SIGTERM differ from the file")
    check(len(got) == size, "graceful stop cut the in-flight download at %d of %d bytes" % (len(got), size))
    try:
        rc = srv.proc.wait(15)
    except Exception:
        raise lib.Fail("the server did not exit within 15 s of SIGTERM")
    check(rc == 0, "exit %s after SIGTERM\n  stderr: %s" % (rc, srv.stderr()[-1500:]))
    srv.stopped_rc = rc
    rows = [x for x in sl.served_rows(t) if x["path"] == "big.bin"]
    check(len(rows) == 1 and rows[0]["status"] == 200 and rows[0]["bytes"] == size,
          "served row of the download finished during shutdown: %s" % rows)


@serving(timeout=60)
def test_idle_connections(t):
    sl.prefill(t)
    srv = Server(t)  # started with the environment's file limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2200 and (hard == resource.RLIM_INFINITY or hard >= 2200):
        resource.setrlimit(resource.RLIMIT_NOFILE, (2200, hard))
    check(resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 1100,
          "the test needs 1100 file descriptors, the limit is %s" % (resource.getrlimit(resource.RLIMIT_NOFILE),))
    socks = []
    try:
        for i in range(1000):
            try:
                # from 20 loopback addresses: one address may hold 256 connections (the default cap)
                s = socket.create_connection((srv.host, srv.port), timeout=5,
                                             source_address=("127.0.0.%d" % (10 + i % 20), 0))
            except OSError as e:
                raise lib.Fail("connection %d refused: %s (server alive: %s)" % (i, e, srv.alive()))
            if i % 2:
                # half of them start a request and never finish it (slowloris)
                try:
                    s.sendall(b"GET /api/models/%s HTTP/1.1\r\nHost: x\r\nX-Slow: " % MODEL.encode())
                except OSError:
                    pass
            socks.append(s)
        srv.check_alive("1000 idle connections")
        t0 = time.time()
        r = srv.get("/api/models/" + MODEL, timeout=15)
        check(r.status == 200 and r.json().get("id") == MODEL,
              "a request next to 1000 idle connections: %r" % r)
        r = srv.get(sl.resolve_url(MODEL, "main", CONFIG), timeout=15)
        check(r.status == 200 and r.body == config_bytes(), "a file next to 1000 idle connections: %r" % r)
        check(time.time() - t0 < 10, "requests next to 1000 idle connections took %.1fs" % (time.time() - t0))
    finally:
        for s in socks:
            s.close()
    srv.check_works("1000 idle connections were closed")
    # --max-connections is honoured without harm to a normal request once others leave
    srv2 = Server(t, "--max-connections", "64")
    socks = [socket.create_connection((srv2.host, srv2.port), timeout=5) for _ in range(32)]
    try:
        srv2.check_works("32 idle connections under --max-connections 64")
    finally:
        for s in socks:
            s.close()


@serving(timeout=60)
def test_store_changes_while_serving(t):
    emu = t.emu(sl.fixture_repos())
    t.ok("pull", MODEL, "-q")
    srv = Server(t)
    sl.check_hub_error(srv.get("/api/models/" + REVS), 404, "RepoNotFound", "before the pull")
    stop = threading.Event()
    errors = []

    def load():
        # keeps the server writing served rows while the store changes
        while not stop.is_set():
            try:
                r = srv.get(sl.resolve_url(MODEL, "main", CONFIG))
                if r.status != 200:
                    errors.append(repr(r))
            except lib.Fail as e:
                errors.append(str(e))
    th = threading.Thread(target=load, daemon=True)
    th.start()
    try:
        t.ok("pull", REVS, "-q")
        c = [lib.commit_id(REVS, i) for i in range(3)]
        j = srv.json("/api/models/%s/revision/main" % REVS)
        check(j.get("sha") == c[2], "a repo pulled while serving: sha %r" % j.get("sha"))
        check(srv.get(sl.resolve_url(REVS, "main", "version.txt")).body == b"two\n", "new repo's file")
        # main moves upstream and is pulled again: the server follows
        emu.set_ref(REVS, "main", 0)
        t.ok("pull", REVS, "-q")
        j = srv.json("/api/models/%s/revision/main" % REVS)
        check(j.get("sha") == c[0], "main moved to %s and was pulled again; the server says %r" % (c[0], j.get("sha")))
        check(srv.get(sl.resolve_url(REVS, "main", "version.txt")).body == b"zero\n", "file at the moved main")
        # rm + gc: gone from the server too
        t.ok("rm", REVS)
        t.ok("gc")
        sl.check_hub_error(srv.get("/api/models/" + REVS), 404, "RepoNotFound", "after rm + gc")
        sl.check_hub_error(srv.get(sl.resolve_url(REVS, "main", "version.txt")), 404, "RepoNotFound",
                           "file after rm + gc")
    finally:
        stop.set()
        th.join(10)
    check(not errors, "requests failed while the store changed: %s" % errors[:3])
    t.ok("stats", "--json")
    t.ok("verify")


@serving(timeout=60)
def test_sigterm_with_idle_and_stuck_clients(t):
    sl.prefill(t)
    srv = Server(t, "--client-timeout", "3")
    socks = []
    try:
        for i in range(50):
            s = socket.create_connection((srv.host, srv.port), timeout=5)
            if i % 2:
                s.sendall(b"GET /api/models/x HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(s)
        keep = srv.conn()
        keep.request("GET", "/api/models/" + MODEL)
        check(keep.getresponse().read(), "keep-alive request")
        # idle, half-sent and kept-alive connections do not hold up a stop
        srv.stop(timeout=5)
        check(srv.stop_seconds < 3, "SIGTERM with idle connections took %.1fs" % srv.stop_seconds)
    finally:
        for s in socks:
            s.close()
    # a client that stops reading holds it up at most --client-timeout
    srv = Server(t, "--client-timeout", "3")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect((srv.host, srv.port))
    try:
        s.sendall(b"GET /%s/resolve/main/model.safetensors HTTP/1.1\r\nHost: x\r\n\r\n" % MODEL.encode())
        check(s.recv(100).startswith(b"HTTP/1.1 200"), "stuck client's response")
        srv.stop(timeout=15)
        check(srv.stop_seconds < 3 + 5, "SIGTERM with a client that stopped reading took %.1fs "
              "(--client-timeout 3)" % srv.stop_seconds)
    finally:
        s.close()


def test_port_in_use_by_another_server(t):
    """A second server on the port of a running one fails (no SO_REUSEPORT
    sharing, where identical requests got 200 or 404 at random)."""
    t.ok("rebuild-index")  # an empty store (serve refuses a directory that is not one)
    first = Server(t)
    r = t.hm("serve", "--listen", "127.0.0.1:%d" % first.port, timeout=10)
    check(r.rc == 1, "a second server on a port in use must exit 1: %r" % r)
    lib.clean_error(r, ["address already in use"])
    first.check_alive("a second server tried its port")
    # twin: a listener that allows port sharing does not lure us into it
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        r = t.hm("serve", "--listen", "127.0.0.1:%d" % s.getsockname()[1], timeout=10)
        check(r.rc == 1, "serve on a SO_REUSEPORT listener's port must exit 1: %r" % r)
        lib.clean_error(r, ["address already in use"])
    finally:
        s.close()
    first.stop()
