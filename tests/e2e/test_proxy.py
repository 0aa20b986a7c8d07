"""test_proxy.py - the standard proxy variables: requests for the hub and for
the CDN go through http_proxy; NO_PROXY bypasses it; a dead proxy is a clean
error. The proxy here is a minimal forwarding HTTP proxy written for the test."""

import http.client
import http.server
import threading
import urllib.parse

import lib
from lib import SAMPLE_REPO, check


class Proxy:
    def __init__(self):
        self.seen = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def forward(self):
                u = urllib.parse.urlsplit(self.path)
                outer.seen.append((self.command, u.hostname, self.headers.get("Authorization")))
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                hdrs = {k: v for k, v in self.headers.items()
                        if k.lower() not in ("proxy-connection", "connection")}
                path = u.path + ("?" + u.query if u.query else "")
                conn.request(self.command, path, headers=hdrs)
                r = conn.getresponse()
                body = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                conn.close()

            do_GET = forward
            do_HEAD = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_http_proxy_used_for_hub_and_cdn(t):
    emu = t.emu()
    px = Proxy()
    try:
        r = t.ok("pull", SAMPLE_REPO, "--json", "--token", "hf_secret_proxy",
                 env={"http_proxy": "http://127.0.0.1:%d" % px.port})
        lib.check_pulled(t, emu, SAMPLE_REPO, r.json(), lib.sample_files())
        hosts = {h for _, h, _ in px.seen}
        check("127.0.0.1" in hosts and "127.0.0.2" in hosts,
              "the proxy saw hosts %s, not both the hub and the CDN" % hosts)
        for _, h, auth in px.seen:
            check(h == "127.0.0.1" or not auth, "the token went to %s through the proxy" % h)
    finally:
        px.close()


def test_no_proxy_bypasses(t):
    emu = t.emu()
    px = Proxy()
    try:
        r = t.ok("pull", SAMPLE_REPO, "--json",
                 env={"http_proxy": "http://127.0.0.1:%d" % px.port,
                      "NO_PROXY": "127.0.0.1,127.0.0.2"})
        lib.check_pulled(t, emu, SAMPLE_REPO, r.json(), lib.sample_files())
        check(not px.seen, "NO_PROXY hosts went through the proxy: %s" % px.seen[:3])
    finally:
        px.close()


def test_dead_proxy_is_a_clean_error(t):
    t.emu()
    r = t.fails("pull", SAMPLE_REPO, "--retries", "1",
                env={"http_proxy": "http://127.0.0.1:%d" % lib.free_port()})
    lib.clean_error(r)
