"""test_serve_upstream_faults.py - pull-through that cannot complete tells
the client before the status line: a store that cannot take the file (full
disk) is 507 with X-Error-Message naming the cause, an upstream redirect to
an internal address is 502 naming the refused target; never 200 and then
nothing."""

import os
import subprocess

import lib
from lib import check
import serve_lib as sl
from serve_lib import MODEL, Server, serving

BIG = "model.safetensors"


@serving(timeout=90)
def test_full_disk_pull_through_is_507(t):
    emu = t.emu(sl.fixture_repos())
    mnt = os.path.join(t.tmp, "small-fs")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], capture_output=True, text=True)
    check(r.returncode == 0, "cannot mount a small tmpfs (tests run as root): %s" % r.stderr)
    try:
        store = os.path.join(mnt, "store")
        srv = Server(t, "--upstream", emu.url, store=store)
        url = sl.resolve_url(MODEL, "main", BIG)
        resp = srv.get(url, timeout=60)
        check(resp.status == 507, "a 3.9 MB file into a 2 MiB store: expected 507, got %r" % resp)
        msg = resp.h("X-Error-Message") or ""
        check("space" in msg.lower() and BIG in msg, "X-Error-Message should name the cause and file: %r" % msg)
        check(BIG in srv.stderr() and ("failed" in srv.stderr() or "refused" in srv.stderr()), "the server should log why: %r" % srv.stderr()[-800:])
        # twin: a file that fits is pulled through and served whole
        data = lib.sample_files()["config.json"]
        resp = srv.get(sl.resolve_url(MODEL, "main", "config.json"), timeout=60)
        check(resp.status == 200 and resp.body == data, "a small file on the same store: %r" % resp)
        srv.stop()
    finally:
        for s in getattr(t, "servers", []):
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
        subprocess.run(["umount", "-l", mnt], capture_output=True)


@serving(timeout=60)
def test_pull_through_redirect_to_metadata_is_502(t):
    emu = t.emu(sl.fixture_repos())
    emu.faults([{"match": "resolve:" + BIG, "kind": "redirect", "times": -1,
                 "location": "http://169.254.169.254/latest/meta-data/"}])
    srv = Server(t, "--upstream", emu.url)
    resp = srv.get(sl.resolve_url(MODEL, "main", BIG), timeout=60)
    check(resp.status == 502, "an upstream redirect to the metadata address: expected 502, got %r" % resp)
    msg = resp.h("X-Error-Message") or ""
    check("169.254.169.254" in msg and "link-local" in msg, "X-Error-Message should name the target: %r" % msg)
    # twin: the other files still come through
    resp = srv.get(sl.resolve_url(MODEL, "main", "config.json"), timeout=60)
    check(resp.status == 200 and resp.body == lib.sample_files()["config.json"], "config.json: %r" % resp)
