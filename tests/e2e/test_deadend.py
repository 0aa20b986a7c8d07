"""test_deadend.py - dead or silent endpoints: a socket that accepts and never
answers, and a refused port, end soon with status lines while retrying and a
message in plain words naming the endpoint and the setting that chose the
limit (not libcurl's text); a stalled download is replaced after the
HF_HUB_DOWNLOAD_TIMEOUT."""

import socket

import re

import lib
from lib import check, SAMPLE_REPO

CURL_WORDS = ("Operation timed out", "Couldn't connect", "Failed to connect", "Connection timed out after")


def no_curl_text(r):
    for w in CURL_WORDS:
        check(w not in r.err, "libcurl's words %r reached the user: %r" % (w, r))


def test_silent_endpoint(t):
    # accepts (the kernel completes the handshake into the backlog), never answers
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    url = "http://127.0.0.1:%d" % s.getsockname()[1]
    try:
        r = t.hm("pull", SAMPLE_REPO, "--retries", "2", endpoint=url,
                 env={"HF_HUB_ETAG_TIMEOUT": "1"}, timeout=60)
    finally:
        s.close()
    check(r.rc == 1, "a silent endpoint must fail: %r" % r)
    lib.clean_error(r, [url])
    last = [l for l in r.err.splitlines() if l.startswith("hubmirror: error")]
    check(last and "HF_HUB_ETAG_TIMEOUT" in last[-1] and "1 s" in last[-1],
          "the error should name the variable that set the limit: %r" % r)
    check(re.search(r"retrying .* in [\d.]+ s \(1/2\)", r.err) and "(2/2)" in r.err,
          "no status lines while retrying: %r" % r)
    no_curl_text(r)


def test_refused_port(t):
    url = "http://127.0.0.1:%d" % lib.free_port()
    r = t.hm("pull", SAMPLE_REPO, "--retries", "2", endpoint=url, timeout=60)
    check(r.rc == 1, "a refused port must fail: %r" % r)
    lib.clean_error(r, ["connection refused"])
    last = [l for l in r.err.splitlines() if l.startswith("hubmirror: error")]
    check(last and url in last[-1] and "--endpoint" in last[-1],
          "the error should name the endpoint and where it came from: %r" % r)
    check(re.search(r"retrying .* in [\d.]+ s \(1/2\)", r.err), "no status line while retrying: %r" % r)
    no_curl_text(r)
    # the same through HF_ENDPOINT names that variable
    r = t.hm("pull", SAMPLE_REPO, "--retries", "0", endpoint=False, env={"HF_ENDPOINT": url}, timeout=60)
    check(r.rc == 1 and "HF_ENDPOINT" in r.err, "HF_ENDPOINT should be named: %r" % r)


def test_stalled_download_replaced_after_download_timeout(t):
    emu = t.emu()
    # the CDN stops after half the file for 60 s: the stall timeout replaces it
    emu.faults([{"match": "model.safetensors", "kind": "stall", "seconds": 60}])
    r = t.hm("pull", SAMPLE_REPO, "--json", env={"HF_HUB_DOWNLOAD_TIMEOUT": "1"}, timeout=40)
    check(r.rc == 0, "a stalled download should be replaced and finish: %r" % r)
    check("HF_HUB_DOWNLOAD_TIMEOUT" in r.err, "the retry line should name HF_HUB_DOWNLOAD_TIMEOUT: %r" % r)
    lib.check_pulled(t, emu, SAMPLE_REPO, r.json(), lib.sample_files())
