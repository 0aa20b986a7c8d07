"""test_serve_cache.py - HTTP caches in front of serve: commit-pinned answers
are immutable, branch answers short-lived and revalidated by ETag (304),
token-protected answers private; and a real nginx proxy_cache in front of
serve (the README's configuration) answers the second client itself."""

import http.client
import os
import re
import signal
import subprocess
import time

import lib
from lib import check
import serve_lib as sl
from serve_lib import MODEL, Server, serving

BIG = "model.safetensors"


@serving()
def test_cache_headers_and_revalidation(t):
    sl.prefill(t)
    srv = Server(t)
    commit = sl.main_commit(MODEL)
    data = lib.sample_files()[BIG]
    r = srv.get(sl.resolve_url(MODEL, commit, BIG))
    check(r.status == 200 and r.body == data, "commit-pinned GET: %r" % r)
    check(r.h("Cache-Control") == "public, max-age=31536000, immutable", "commit Cache-Control: %r" % r)
    etag = r.h("ETag")
    check(etag == '"%s"' % lib.sha256_bytes(data), "strong ETag: %r" % etag)
    check(r.h("Content-Length") == str(len(data)), "exact length: %r" % r)
    r = srv.get(sl.resolve_url(MODEL, "main", BIG))
    cc = r.h("Cache-Control") or ""
    check(r.status == 200 and cc.startswith("public") and "max-age=30" in cc and "immutable" not in cc,
          "branch Cache-Control: %r" % r)
    # revalidation by ETag
    r = srv.get(sl.resolve_url(MODEL, "main", BIG), headers={"If-None-Match": etag})
    check(r.status == 304 and r.body == b"" and r.h("ETag") == etag, "If-None-Match with the ETag: %r" % r)
    r = srv.get(sl.resolve_url(MODEL, "main", BIG), headers={"If-None-Match": '"0000"'})
    check(r.status == 200 and r.body == data, "If-None-Match with another ETag: %r" % r)
    srv.stop()
    # a server that needs tokens: private
    tok = os.path.join(t.tmp, "tokens")
    with open(tok, "w") as fh:
        fh.write("secret-token\n")
    srv = Server(t, "--token-file", tok)
    r = srv.get(sl.resolve_url(MODEL, commit, BIG), token="secret-token")
    check(r.status == 200 and r.h("Cache-Control") == "private", "token-protected Cache-Control: %r" % r)



@serving()
def test_token_pulled_repo_is_private_without_token_file(t):
    """A private repo pulled with a token, served by a mirror that asks no
    token: its answers are Cache-Control private (a shared cache must not
    hand them to everyone), also 304s and HEADs; a public repo pulled with
    the same token stays public and immutable."""
    priv_id = "lab-org/private-model"
    t.emu([lib.sample_repo(), lib.sample_repo(priv_id, private=True, tokens=["good-token"])],
          tokens=["good-token"])
    t.ok("pull", MODEL, "-q", "--token", "good-token")
    t.ok("pull", priv_id, "-q", "--token", "good-token")
    srv = Server(t)
    data = lib.sample_files()[BIG]
    pub = srv.get(sl.resolve_url(MODEL, sl.main_commit(MODEL), BIG))
    check(pub.status == 200 and pub.h("Cache-Control") == "public, max-age=31536000, immutable",
          "a public repo pulled with a token: %r" % pub)
    url = sl.resolve_url(priv_id, lib.commit_id(priv_id, 0), BIG)
    r = srv.get(url)
    check(r.status == 200 and r.body == data and r.h("Cache-Control") == "private",
          "a token-pulled repo served without a token file: %r" % r)
    r = srv.head(url)
    check(r.status == 200 and r.h("Cache-Control") == "private", "HEAD of it: %r" % r)
    r = srv.get(url, headers={"If-None-Match": r.h("ETag")})
    check(r.status == 304 and r.h("Cache-Control") == "private", "its 304: %r" % r)
    r = srv.get(sl.resolve_url(priv_id, "main", BIG))
    check(r.status == 200 and r.h("Cache-Control") == "private", "its branch answer: %r" % r)

NGINX_CONF = """
daemon off;
master_process off;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log info;
events { worker_connections 256; }
http {
    access_log %(dir)s/access.log;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    proxy_cache_path %(dir)s/cache levels=1:2 keys_zone=hub:10m max_size=10g inactive=30d use_temp_path=off;
    server {
        listen 127.0.0.1:%(port)d;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        location ~ /resolve/ {
            proxy_pass http://127.0.0.1:%(upstream)d;
            proxy_cache hub;
            slice 1m;
            proxy_cache_key $scheme$proxy_host$uri$slice_range;
            proxy_set_header Range $slice_range;
            proxy_cache_valid 200 206 1h;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10m;
            proxy_cache_lock_age 10m;
            proxy_cache_revalidate on;
            proxy_cache_bypass $http_authorization;
            proxy_no_cache $http_authorization;
            add_header X-Cache-Status $upstream_cache_status always;
        }
        location / {
            proxy_pass http://127.0.0.1:%(upstream)d;
        }
    }
}
"""


def served_file_requests(srv):
    """File answers in serve's access log (either log format)."""
    return len(re.findall(r'"GET /[^" ]*/resolve/[^" ]*[^"]*" 20[06] | GET "/[^"]*/resolve/[^"]*" 20[06] ',
                          srv.stderr()))


@serving(timeout=90)
def test_nginx_proxy_cache_answers_the_second_client(t):
    sl.prefill(t)
    srv = Server(t)
    d = os.path.join(t.tmp, "nginx")
    os.makedirs(d)
    port = lib.free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as fh:
        fh.write(NGINX_CONF % {"dir": d, "port": port, "upstream": srv.port})
    log = open(os.path.join(d, "stderr"), "wb")
    p = subprocess.Popen(["nginx", "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")],
                         stdout=log, stderr=log)
    log.close()
    t.procs.append(p)  # killed by PID whatever happens
    try:
        deadline = time.time() + 20
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/api/models/" + MODEL)
                ok = c.getresponse().status == 200
                c.close()
                if ok:
                    break
            except OSError:
                pass
            check(p.poll() is None, "nginx exited: %s" % lib.read(os.path.join(d, "stderr"))[-1500:])
            check(time.time() < deadline, "nginx did not come up")
            time.sleep(0.1)
        data = lib.sample_files()[BIG]
        path = sl.resolve_url(MODEL, sl.main_commit(MODEL), BIG)

        def client(headers=None):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            body = r.read()
            st = r.getheader("X-Cache-Status")
            c.close()
            return r.status, body, st

        st, body, cache = client()
        check(st == 200 and body == data, "first client through nginx: %s %s" % (st, cache))
        time.sleep(0.5)  # the access log is written when the answer ends
        first = served_file_requests(srv)
        check(first >= 1, "serve saw no request for the first client")
        st, body, cache = client()
        check(st == 200 and body == data, "second client through nginx: %s" % st)
        check(cache == "HIT", "the second client was not answered by the cache: X-Cache-Status %r" % cache)
        time.sleep(0.5)
        check(served_file_requests(srv) == first,
              "serve answered %d file requests after the second client, %d after the first"
              % (served_file_requests(srv), first))
        # twin: a request with a token is neither answered from nor stored in the cache
        st, body, cache = client({"Authorization": "Bearer someone"})
        check(st == 200 and body == data and cache == "BYPASS", "a request with a token: %s %r" % (st, cache))
        time.sleep(0.5)
        check(served_file_requests(srv) > first, "the request with a token did not reach serve")
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGQUIT)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
