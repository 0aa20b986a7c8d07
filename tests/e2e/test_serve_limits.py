"""test_serve_limits.py - serve against abuse: a client trickling its request
headers is cut at the header deadline (slowloris), one client address may
hold only so many connections, and connections over a limit are answered
503 with Retry-After instead of being closed without a word."""

import http.client
import select
import socket
import time

import lib
from lib import check
import serve_lib as sl
from serve_lib import MODEL, Server, serving


def closed_by_peer(s, wait):
    r, _, _ = select.select([s], [], [], wait)
    if not r:
        return False
    try:
        return s.recv(4096) == b""
    except OSError:
        return True


def get_from(srv, source, path):
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=10, source_address=(source, 0))
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


@serving(timeout=90)
def test_slowloris_cut_at_header_deadline(t):
    sl.prefill(t)
    srv = Server(t, "--header-timeout", "2")
    s = socket.create_connection((srv.host, srv.port), timeout=5)
    cut = False
    try:
        s.sendall(b"GET /api/models/%s HTTP/1.1\r\nHost: x\r\n" % MODEL.encode())
        # one header byte every 0.25 s: never idle, never done; before the
        # deadline existed this went on for as long as the client liked
        t0 = time.time()
        while time.time() - t0 < 30:
            try:
                s.sendall(b"X")
            except OSError:
                cut = True
                break
            if closed_by_peer(s, 0.25):
                cut = True
                break
        check(cut, "a client trickling its headers for 30 s was never cut (--header-timeout 2)")
    finally:
        s.close()
    srv.check_alive("a slowloris client")
    # twin: headers that arrive slowly but within the deadline are answered
    s = socket.create_connection((srv.host, srv.port), timeout=10)
    try:
        req = b"GET /api/models/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % MODEL.encode()
        for i in range(0, len(req), 16):
            s.sendall(req[i:i + 16])
            time.sleep(0.02)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        check(data.startswith(b"HTTP/1.1 200"), "a slow but timely request: %r" % data[:200])
    finally:
        s.close()
    srv.stop()


@serving(timeout=60)
def test_per_client_cap_answers_503(t):
    sl.prefill(t)
    srv = Server(t, "--max-connections-per-client", "3")
    path = "/api/models/" + MODEL
    idle = [socket.create_connection((srv.host, srv.port), timeout=5) for _ in range(3)]
    try:
        st, hs, body = get_from(srv, "127.0.0.1", path)
        check(st == 503, "the 4th connection of one address: expected 503, got %d %r" % (st, body[:200]))
        check(hs.get("Retry-After"), "503 without Retry-After: %r" % hs)
        check("127.0.0.1" in (hs.get("X-Error-Message") or ""), "the 503 should name the client: %r" % hs)
        # twin: another address is not affected
        st, _, body = get_from(srv, "127.0.0.2", path)
        check(st == 200, "another client address: %d %r" % (st, body[:200]))
        idle.pop().close()
        deadline = time.time() + 10
        while True:
            st, _, _ = get_from(srv, "127.0.0.1", path)
            if st == 200 or time.time() > deadline:
                break
            time.sleep(0.1)
        check(st == 200, "after one connection closed, the client is served again: %d" % st)
    finally:
        for s in idle:
            s.close()
    srv.stop()


@serving(timeout=60)
def test_over_max_connections_answers_503(t):
    sl.prefill(t)
    srv = Server(t, "--max-connections", "4", "--max-connections-per-client", "0")
    idle = [socket.create_connection((srv.host, srv.port), timeout=5) for _ in range(4)]
    try:
        st, hs, body = get_from(srv, "127.0.0.1", "/api/models/" + MODEL)
        check(st == 503, "over --max-connections: expected 503, got %d %r" % (st, body[:200]))
        check(hs.get("Retry-After"), "503 without Retry-After: %r" % hs)
        check("too many connections" in (hs.get("X-Error-Message") or ""), "503 message: %r" % hs)
    finally:
        for s in idle:
            s.close()
    deadline = time.time() + 10
    while get_from(srv, "127.0.0.1", "/api/models/" + MODEL)[0] != 200 and time.time() < deadline:
        time.sleep(0.1)
    srv.check_works("idle connections closed")
    srv.stop()


@serving(timeout=90)
def test_out_of_file_descriptors(t):
    """At a low file limit serve lowers --max-connections (with a warning),
    bounds its SQLite handles, and a burst gets 200 or 503 + Retry-After,
    never 500 "the stored blob is missing"."""
    import os
    import resource
    import threading
    sl.prefill(t)
    srv = Server(t, preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
    check("--max-connections lowered" in srv.stderr(), "no warning about the file limit: %r" % srv.stderr()[-500:])
    path = sl.resolve_url(MODEL, "main", "model.safetensors")
    results, lock = [], threading.Lock()

    def client(i):
        try:
            st, hs, body = get_from(srv, "127.0.0.%d" % (1 + i % 4), path)
            out = (st, hs.get("Retry-After"), hs.get("X-Error-Message"))
        except OSError as e:
            out = ("error", str(e), None)
        with lock:
            results.append(out)
    ths = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
    bad = [r for r in results if r[0] != 200 and not (r[0] == 503 and r[1])]
    check(not bad, "a burst at a low file limit: answers other than 200 or 503 + Retry-After: %s" % bad[:5])
    check(any(r[0] == 200 for r in results), "no request of the burst was served")
    db = os.path.realpath(os.path.join(t.store, "index.db"))
    fds = []
    for fd in os.listdir("/proc/%d/fd" % srv.proc.pid):
        try:
            fds.append(os.readlink("/proc/%d/fd/%s" % (srv.proc.pid, fd)))
        except OSError:
            pass
    on_db = [f for f in fds if f.startswith(db)]
    check(len(on_db) <= 16 * 3, "%d descriptors open on index.db after a burst" % len(on_db))
    srv.check_works("a burst at a low file limit")
