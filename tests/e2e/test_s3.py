"""test_s3.py - a store on a real Ceph RGW through the S3 API (`--store
s3://BUCKET/PREFIX`). One Ceph (mon, memstore OSD, radosgw on 127.0.0.1,
started by ceph_lib and stopped by PID) serves every case, run in sequence
in one test so the ~15-30 s start is paid once:

- pull into the bucket: the objects are byte-exact, read back with s3cmd;
- wrong credentials: a clear one-line error and nothing written;
- a second node (another cache) lists and checks out the repos without a pull;
- two serve nodes: LFS GETs answered with 302 to a presigned URL carrying the
  Hub's headers, HEAD answered by the node, small files streamed; the same
  answers from both; Range 0-0 and a bytes=N- resume through the redirect;
  one node killed mid-download and the client completes on the other; an
  expired presigned URL refused and a re-resolve completes; a tampered one
  refused; `hubmirror pull` and the official JS client through serve;
- kill -9 during a multipart upload: nothing visible, the next pull completes
  reusing the finished parts;
- an object overwritten behind our back: verify names it, --repair fixes it;
- export from the S3 store, import into a local one: byte-identical;
- rm and gc: unreferenced objects and stale multipart uploads go;
- sync from a manifest, import of a bundle and convert into the bucket, each
  read back byte-exact by s3cmd or from a fresh node; du counts the bucket;
- `hubmirror pull` through serve whose presigned URL expires mid-download
  (the connection cut, the retry refused with 403): it resolves again;
- failure twins of the reads from the bucket: 503 SlowDown, a dropped
  connection and a truncated body are retried (checkout completes), wrong
  credentials and a missing bucket on read paths give one clear line.
Each case prints its time, so a slow one shows in the log."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import lib
from lib import check
import ceph_lib
import serve_lib as sl
from serve_lib import Server

BUCKET = "hubmirror"
STORE = "s3://%s/mirror" % BUCKET
BIG = "demo-org/big"
BIG_SIZE = 12 * 1024 * 1024 + 12345     # multipart with 5 MiB parts: 3 parts
PART = 5 * 1024 * 1024


def big_repo():
    return {"type": "model", "id": BIG, "commits": [
        {"files": {"big.bin": {"random": BIG_SIZE, "seed": 7}, "small.txt": "small\n"}}]}


def http(method, url, headers=None, timeout=30):
    req = urllib.request.Request(url, method=method, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def node_env(t, name):
    """A serve/pull node: its own index cache."""
    return {"XDG_CACHE_HOME": os.path.join(t.tmp, "cache-" + name), "HUBMIRROR_S3_CACHE": None}


def s3_objects(ceph, conf, prefix):
    p = ceph.s3cmd(conf, "ls", "-r", "s3://%s/%s" % (BUCKET, prefix))
    out = {}
    for line in p.stdout.decode().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[-1].startswith("s3://"):
            out[parts[-1][len("s3://%s/" % BUCKET):]] = int(parts[2])
    return out


def s3_get(ceph, conf, key, dest):
    if os.path.exists(dest):
        os.unlink(dest)
    ceph.s3cmd(conf, "get", "s3://%s/%s" % (BUCKET, key), dest)
    return lib.read(dest)


def s3curl(ceph, path_query, method="GET"):
    """A request signed by curl's --aws-sigv4 (quicker than starting s3cmd)."""
    r = subprocess.run(["curl", "-s", "-X", method, "--user", "%s:%s" % (ceph.access_key, ceph.secret_key),
                        "--aws-sigv4", "aws:amz:us-east-1:s3", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                        ceph.url + path_query], capture_output=True, text=True, timeout=30)
    return r.stdout


def uploads(ceph, conf):
    p = ceph.s3cmd(conf, "multipart", "s3://%s" % BUCKET, check=False)
    # "Initiated<TAB>Path<TAB>Id" lines after a header
    return [l for l in p.stdout.decode().splitlines()
            if len(l.split("\t")) >= 3 and l.split("\t")[1].startswith("s3://")]


def case_pull(t, ceph, conf, emu):
    src = lib.sample_files()
    r = t.hm("pull", lib.SAMPLE_REPO, "--json", store=STORE, env=node_env(t, "a"), timeout=120)
    check(r.rc == 0, "pull into the bucket failed: %r" % r)
    r = t.hm("pull", BIG, "--json", store=STORE, env=node_env(t, "a"), timeout=120)
    check(r.rc == 0, "pull of the multipart file failed: %r" % r)
    objs = s3_objects(ceph, conf, "mirror/")
    want = dict(src)
    want["big.bin"] = lib.random_bytes(BIG_SIZE, 7)
    for path, data in want.items():
        sha = lib.sha256_bytes(data)
        key = "mirror/blobs/sha256/%s/%s" % (sha[:2], sha)
        check(objs.get(key) == len(data), "%s: object %s missing or wrong size (%r)" % (path, key, objs.get(key)))
    # byte-exact, read back by another S3 client
    sha = lib.sha256_bytes(want["big.bin"])
    got = s3_get(ceph, conf, "mirror/blobs/sha256/%s/%s" % (sha[:2], sha), os.path.join(t.tmp, "big.get"))
    check(got == want["big.bin"], "the multipart object is not byte-exact")
    for path, data in src.items():
        sha = lib.sha256_bytes(data)
        got = s3_get(ceph, conf, "mirror/blobs/sha256/%s/%s" % (sha[:2], sha), os.path.join(t.tmp, "x.get"))
        check(got == data, "%s: object not byte-exact" % path)
    revs = [k for k in objs if k.startswith("mirror/revisions/model/")]
    check(len(revs) == 2 and all(k.endswith(".json") for k in revs), "revision objects: %s" % revs)
    check(any(k.startswith("mirror/refs/model/%s/" % BIG) for k in objs), "no ref object for %s" % BIG)
    check(not uploads(ceph, conf), "unfinished multipart uploads left: %s" % uploads(ceph, conf))
    return want


def case_wrong_credentials(t, ceph, conf):
    env = dict(node_env(t, "bad"), AWS_SECRET_ACCESS_KEY="not-the-secret-key-0000")
    r = t.hm("pull", lib.SAMPLE_REPO, store="s3://%s/bad" % BUCKET, env=env)
    check(r.rc == 1, "pull with a wrong secret: %r" % r)
    lib.clean_error(r, ("denied", "AWS_SECRET_ACCESS_KEY"))
    check(ceph.secret_key not in r.out + r.err and "not-the-secret-key" not in r.out + r.err,
          "a secret was printed: %r" % r)
    check(not s3_objects(ceph, conf, "bad/"), "objects written with wrong credentials")
    r = t.hm("ls", store="s3://no-such-bucket-x", env=node_env(t, "bad"))
    check(r.rc == 1, "missing bucket: %r" % r)
    lib.clean_error(r, ("does not exist",))
    env = dict(node_env(t, "bad"), AWS_ACCESS_KEY_ID=None)
    r = t.hm("ls", store=STORE, env=env)
    check(r.rc == 2, "missing credentials: %r" % r)
    lib.clean_error(r, ("AWS_ACCESS_KEY_ID",))


def case_second_node(t, want):
    env = node_env(t, "b")
    r = t.hm("ls", "--json", store=STORE, env=env)
    check(r.rc == 0, "ls on a fresh node: %r" % r)
    names = {x.get("repo") or x.get("name") or x.get("id") for x in r.json()} if isinstance(r.json(), list) \
        else set(str(r.json()))
    check(lib.SAMPLE_REPO in str(r.json()) and BIG in str(r.json()), "a fresh node lists %s" % r.out[:500])
    out = os.path.join(t.tmp, "co")
    r = t.hm("checkout", BIG, "--to", out, "--copy", store=STORE, env=env)
    check(r.rc == 0, "checkout from the bucket: %r" % r)
    check(lib.read(os.path.join(out, "big.bin")) == want["big.bin"], "checkout is not byte-exact")
    # HUBMIRROR_HOME takes the same form
    r = t.hm("ls", store=False, env=dict(env, HUBMIRROR_HOME=STORE))
    check(r.rc == 0 and BIG in r.out, "HUBMIRROR_HOME=s3://...: %r" % r)
    del names


def case_serve(t, ceph, want):
    a = Server(t, "--presign-expiry", "60", store=STORE, env=node_env(t, "sa"))
    b = Server(t, "--presign-expiry", "60", store=STORE, env=node_env(t, "sb"))
    commit = lib.commit_id(BIG, 0)
    data = want["big.bin"]
    path = "/%s/resolve/main/big.bin" % BIG
    # the web page names the bucket as the object storage, and lists the repos
    st, h, body = http("GET", a.url + "/")
    check(st == 200 and b'<span id="objstore">object storage: <code>' + STORE.encode() in body and
          BIG.encode() in body, "home page of an S3 node: %s %r" % (st, body[-2000:]))
    answers = []
    for srv in (a, b):
        st, h, body = http("GET", srv.url + path)
        check(st == 302, "LFS GET through %s: %s %s" % (srv.url, st, body[:200]))
        loc = h.get("Location", "")
        check(loc.startswith(ceph.url + "/") and "X-Amz-Signature=" in loc, "Location %r" % loc)
        check(ceph.secret_key not in loc, "the secret is in the URL")
        sha = lib.sha256_bytes(data)
        check(h.get("X-Repo-Commit") == commit and h.get("X-Linked-Etag") == '"%s"' % sha and
              h.get("X-Linked-Size") == str(len(data)) and h.get("ETag") == '"%s"' % sha,
              "302 headers: %r" % h)
        answers.append((h.get("X-Repo-Commit"), h.get("X-Linked-Etag"), h.get("X-Linked-Size"), h.get("ETag")))
        st, h2, got = http("GET", loc)
        check(st == 200 and got == data, "following the 302: %s, %d bytes" % (st, len(got)))
        st, h2, got = http("GET", loc, {"Range": "bytes=0-0"})
        check(st == 206 and got == data[:1], "Range 0-0 through the 302: %s %r" % (st, got))
        # HEAD is answered by the node (a GET-presigned URL answers HEAD with 403)
        st, h3, got = http("HEAD", srv.url + path)
        check(st == 200 and not h3.get("Location") and h3.get("X-Linked-Size") == str(len(data)) and
              h3.get("Content-Length") == str(len(data)), "HEAD: %s %r" % (st, h3))
        st, _, _ = http("HEAD", loc)
        check(st == 403, "HEAD on a GET-presigned URL answered %s" % st)
        st, _, _ = http("GET", srv.url + path, {"If-None-Match": '"%s"' % sha})
        check(st == 304, "If-None-Match with the file's ETag: %s" % st)
        # small non-LFS files are streamed through
        st, h4, got = http("GET", srv.url + "/%s/resolve/main/small.txt" % BIG)
        check(st == 200 and got == b"small\n" and h4.get("X-Repo-Commit") == commit, "small file: %s %r" % (st, got))
    check(answers[0] == answers[1], "the two nodes answer differently: %s" % answers)

    # a tampered URL is refused
    st, h, _ = http("GET", a.url + path)
    loc = h["Location"]
    sig = loc.rsplit("X-Amz-Signature=", 1)[1]
    bad = loc[:-len(sig)] + ("0" if sig[0] != "0" else "1") + sig[1:]
    st, _, _ = http("GET", bad)
    check(st == 403, "a tampered presigned URL answered %s" % st)

    # node a dies mid-download: the client resumes (bytes=N-) through node b
    n = 3 * 1024 * 1024 + 17
    st, h, _ = http("GET", a.url + path)
    st, _, first = http("GET", h["Location"], {"Range": "bytes=0-%d" % (n - 1)})
    check(st == 206 and first == data[:n], "first part: %s" % st)
    a.proc.kill()
    a.proc.wait()
    st, h, _ = http("GET", b.url + path, {"Range": "bytes=%d-" % n})
    check(st == 302, "re-resolve on node b: %s" % st)
    st, _, rest = http("GET", h["Location"], {"Range": "bytes=%d-" % n})
    check(st == 206 and first + rest == data, "resumed download through node b is not byte-exact")

    # an expired URL is refused; resolving again gives one that works (5 s,
    # not 1: a loaded machine may take a second between the 302 and the GET)
    c = Server(t, "--presign-expiry", "5", store=STORE, env=node_env(t, "sc"))
    st, h, _ = http("GET", c.url + path)
    loc = h["Location"]
    time.sleep(6.5)
    st, _, _ = http("GET", loc)
    check(st == 403, "an expired presigned URL answered %s" % st)
    st, h, _ = http("GET", c.url + path)
    st, _, got = http("GET", h["Location"])
    check(st == 200 and got == data, "after re-resolving: %s" % st)

    # hubmirror pull from a second (local) store, through serve's 302s
    other = os.path.join(t.tmp, "store-2")
    r = t.hm("pull", BIG, "--json", store=other, endpoint=b.url, env={"AWS_ACCESS_KEY_ID": None,
                                                                      "AWS_SECRET_ACCESS_KEY": None})
    check(r.rc == 0, "hubmirror pull through serve: %r" % r)
    sha = lib.sha256_bytes(data)
    check(lib.read(lib.blob_path(other, sha)) == data, "pull through serve: not byte-exact")
    return b


def case_js(t, srv, want):
    try:
        import test_serve_interop as ti
        ti.ensure_js()
    except lib.Fail as e:
        # the JS interop tests themselves report a missing node/npm
        print("skipping the JS client: %s" % e)
        return
    res = ti.run_js(t, [ti.job(srv, BIG, files=["big.bin", "small.txt"])])
    ti.check_downloads(res[0], {"big.bin": want["big.bin"], "small.txt": b"small\n"}, "JS client via 302")


def case_kill_multipart(t, ceph, conf, want):
    store = "s3://%s/crash" % BUCKET
    env = node_env(t, "crash")
    # part 2 never gets an answer (its PUT hangs in a proxy), so the upload
    # cannot complete: the pull is killed once the other parts are finished,
    # whatever the machine's load (parts go up several at once)
    hang = ceph_lib.FaultProxy(ceph.port, [("hang", "PUT", "partNumber=2&", 120)])
    t0 = time.time()
    try:
        p = t.spawn("pull", BIG, store=store, env=dict(env, AWS_ENDPOINT_URL=hang.url))
        deadline = time.time() + 120
        parts = []
        while time.time() < deadline and p.poll() is None and (len(parts) < 2 or hang.faults):
            body = s3curl(ceph, "/%s?prefix=crash%%2F&uploads=" % BUCKET)
            for key, uid in re.findall(r"<Key>([^<]*)</Key>\s*<UploadId>([^<]*)</UploadId>", body):
                lp = s3curl(ceph, "/%s/%s?uploadId=%s" % (BUCKET, key, urllib.parse.quote(uid, safe="")))
                parts = re.findall(r"<PartNumber>(\d+)</PartNumber>", lp)
            time.sleep(0.2)
        if p.poll() is not None or len(parts) < 2 or hang.faults:
            check(False, "the pull ended or stalled before parts 1 and 3 were uploaded (parts %s, hang %s): %s"
                  % (parts, hang.fired, p.stderr.read()[-500:] if p.poll() is not None else "running"))
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        hang.stop()
    parts.append("killed after %.1fs" % (time.time() - t0))
    sha = lib.sha256_bytes(want["big.bin"])
    key = "crash/blobs/sha256/%s/%s" % (sha[:2], sha)
    check(key not in s3_objects(ceph, conf, "crash/"), "a killed multipart upload is visible (parts %s)" % parts)
    check(not [k for k in s3_objects(ceph, conf, "crash/") if "/revisions/" in k], "revision written")
    check(uploads(ceph, conf), "the killed upload should be left for reuse")
    # the next pull completes, reusing the finished parts (ListParts): counted by a proxy
    proxy = ceph_lib.FaultProxy(ceph.port, [])
    try:
        r = t.hm("pull", BIG, "--json", store=store, env=dict(env, AWS_ENDPOINT_URL=proxy.url))
    finally:
        proxy.stop()
    check(r.rc == 0, "pull after kill -9: %r" % r)
    sent = [p for m, p in proxy.log if m == "PUT" and "partNumber=" in p]
    check(sent and all("partNumber=2&" in p for p in sent) and
          any(m == "GET" and "uploadId=" in p for m, p in proxy.log),
          "the finished parts were not reused: parts sent %s" % sent)
    got = s3_get(ceph, conf, key, os.path.join(t.tmp, "crash.get"))
    check(got == want["big.bin"], "the completed object is not byte-exact")
    check(not uploads(ceph, conf), "uploads left after the pull completed: %s" % uploads(ceph, conf))


def case_verify_repair(t, ceph, conf, emu, want):
    env = node_env(t, "a")
    path = "model.safetensors" if "model.safetensors" in want else sorted(p for p in want if p != "big.bin")[0]
    data = want[path]
    sha = lib.sha256_bytes(data)
    bad = os.path.join(t.tmp, "bad.bin")
    with open(bad, "wb") as fh:
        fh.write(bytes(len(data)))
    ceph.s3cmd(conf, "put", bad, "s3://%s/mirror/blobs/sha256/%s/%s" % (BUCKET, sha[:2], sha))
    r = t.hm("verify", lib.SAMPLE_REPO, store=STORE, env=env)
    check(r.rc == 1 and path in r.out + r.err and "corrupt" in r.out + r.err, "verify after overwrite: %r" % r)
    r = t.hm("verify", lib.SAMPLE_REPO, "--repair", "--endpoint", emu.url, store=STORE, env=env)
    check(r.rc == 0, "verify --repair: %r" % r)
    got = s3_get(ceph, conf, "mirror/blobs/sha256/%s/%s" % (sha[:2], sha), os.path.join(t.tmp, "fix.get"))
    check(got == data, "the repaired object is not byte-exact")
    r = t.hm("verify", store=STORE, env=node_env(t, "d"))
    check(r.rc == 0, "verify on a fresh node after repair: %r" % r)


def case_export_import(t, want):
    bundle = os.path.join(t.tmp, "b.tar")
    r = t.hm("export", lib.SAMPLE_REPO, BIG, "-o", bundle, store=STORE, env=node_env(t, "e"))
    check(r.rc == 0, "export from the S3 store: %r" % r)
    local = os.path.join(t.tmp, "store-imp")
    r = t.hm("import", bundle, store=local)
    check(r.rc == 0, "import into a local store: %r" % r)
    for path, data in want.items():
        check(lib.read(lib.blob_path(local, lib.sha256_bytes(data))) == data, "%s: not byte-identical" % path)


def case_faults(t, ceph, conf, want):
    """Retries: 503 SlowDown on an upload and a dropped connection are retried."""
    proxy = ceph_lib.FaultProxy(ceph.port, [("503", "PUT"), ("drop", "PUT"), ("503", "POST"), ("drop", "GET")])
    try:
        env = dict(node_env(t, "faults"), AWS_ENDPOINT_URL=proxy.url)
        r = t.hm("pull", BIG, store="s3://%s/faults" % BUCKET, env=env, timeout=120)
        check(r.rc == 0, "pull through 503s and dropped connections: %r" % r)
        check(not proxy.faults, "faults that never fired: %s (fired %s)" % (proxy.faults, proxy.fired))
    finally:
        proxy.stop()
    sha = lib.sha256_bytes(want["big.bin"])
    got = s3_get(ceph, conf, "faults/blobs/sha256/%s/%s" % (sha[:2], sha), os.path.join(t.tmp, "faults.get"))
    check(got == want["big.bin"], "the object written through faults is not byte-exact")
    # the object store down: a clear one-line error
    env = dict(node_env(t, "down"), AWS_ENDPOINT_URL="http://127.0.0.1:%d" % lib.free_port())
    r = t.hm("ls", store="s3://%s/faults" % BUCKET, env=env, timeout=120)
    check(r.rc == 1, "object store down: %r" % r)
    lib.clean_error(r, ("object store", "connect"))


def case_pull_through(t, ceph, emu, want):
    """serve --upstream on an S3 store writes into the bucket; another node then redirects."""
    store = "s3://%s/pt" % BUCKET
    a = Server(t, "--upstream", emu.url, store=store, env=node_env(t, "pta"))
    st, h, body = http("GET", a.url + "/%s/resolve/main/big.bin" % BIG)
    check(st == 200 and body == want["big.bin"], "pull-through on an S3 store: %s, %d bytes" % (st, len(body)))
    # the revision is recorded (and its object written) once all of its files are stored
    st, h, body = http("GET", a.url + "/%s/resolve/main/small.txt" % BIG)
    check(st == 200 and body == b"small\n", "pull-through of the small file: %s" % st)
    b = Server(t, store=store, env=node_env(t, "ptb"))
    deadline = time.time() + 30
    while True:
        st, h, _ = http("GET", b.url + "/%s/resolve/main/big.bin" % BIG)
        if st == 302 or time.time() > deadline:
            break
        time.sleep(0.3)   # the revision object is written once the pull-through is recorded
    check(st == 302, "the second node after a pull-through on the first: %s" % st)
    st, _, got = http("GET", h["Location"])
    check(st == 200 and got == want["big.bin"], "the pulled-through object: %s" % st)
    for s in (a, b):
        s.proc.kill()
        s.proc.wait()


def case_rm_gc(t, ceph, conf, want):
    env = dict(node_env(t, "a"), HUBMIRROR_S3_GC_GRACE="0")
    # an unreferenced object and a stale multipart upload
    junk = os.path.join(t.tmp, "junk")
    with open(junk, "wb") as fh:
        fh.write(b"junk\n")
    jkey = "mirror/blobs/sha256/ab/" + "ab" * 32
    ceph.s3cmd(conf, "put", junk, "s3://%s/%s" % (BUCKET, jkey))
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                        "--user", "%s:%s" % (ceph.access_key, ceph.secret_key),
                        "--aws-sigv4", "aws:amz:us-east-1:s3", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                        "%s/%s/mirror/blobs/sha256/cd/%s?uploads=" % (ceph.url, BUCKET, "cd" * 32)],
                       capture_output=True, text=True)
    check(r.stdout == "200", "cannot start a multipart upload with curl: %s" % r.stdout)
    check(uploads(ceph, conf), "no stale upload to collect")
    r = t.hm("rm", BIG, store=STORE, env=env)
    check(r.rc == 0, "rm on the S3 store: %r" % r)
    check(not [k for k in s3_objects(ceph, conf, "mirror/") if BIG in k], "rm left revision objects")
    r = t.hm("gc", store=STORE, env=env)
    check(r.rc == 0, "gc on the S3 store: %r" % r)
    objs = s3_objects(ceph, conf, "mirror/")
    sha_big = lib.sha256_bytes(want["big.bin"])
    check(jkey not in objs, "gc kept an unreferenced object")
    check("mirror/blobs/sha256/%s/%s" % (sha_big[:2], sha_big) not in objs, "gc kept the removed repo's blob")
    check(not uploads(ceph, conf), "gc left a stale upload: %s" % uploads(ceph, conf))
    for path, data in want.items():
        if path in ("big.bin",):
            continue
        sha = lib.sha256_bytes(data)
        check("mirror/blobs/sha256/%s/%s" % (sha[:2], sha) in objs, "gc removed a referenced blob (%s)" % path)
    # a node that still had BIG cached forgets it
    r = t.hm("ls", store=STORE, env=node_env(t, "b"))
    check(r.rc == 0 and BIG not in r.out, "a second node still lists the removed repo: %r" % r)


def case_sync(t, ceph, conf, want):
    """sync into an S3 store: pulled into the bucket, checked out, locked; --locked on a fresh node."""
    store = "s3://%s/sync" % BUCKET
    m = os.path.join(t.tmp, "models.txt")
    with open(m, "w") as fh:
        fh.write("# the lab\n%s\n%s\n" % (lib.SAMPLE_REPO, BIG))
    dest = os.path.join(t.tmp, "lab")
    r = t.hm("sync", m, "--to", dest, store=store, endpoint=t.endpoint, env=node_env(t, "sy"), timeout=240)
    check(r.rc == 0, "sync into the S3 store: %r" % r)
    for path, data in want.items():
        repo = BIG if path == "big.bin" else lib.SAMPLE_REPO
        check(lib.read(os.path.join(dest, repo, path)) == data, "sync checkout of %s is not byte-exact" % path)
    lock = json.load(open(m + ".lock"))
    check({x["repo"] for x in lock["models"]} == {lib.SAMPLE_REPO, BIG}, "lock: %r" % lock)
    objs = s3_objects(ceph, conf, "sync/")
    for path, data in want.items():
        sha = lib.sha256_bytes(data)
        check(objs.get("sync/blobs/sha256/%s/%s" % (sha[:2], sha)) == len(data), "sync: %s not in the bucket" % path)
    check(len([k for k in objs if k.startswith("sync/revisions/")]) == 2, "sync: revision objects %s" % sorted(objs))
    sha = lib.sha256_bytes(want["big.bin"])
    got = s3_get(ceph, conf, "sync/blobs/sha256/%s/%s" % (sha[:2], sha), os.path.join(t.tmp, "sync.get"))
    check(got == want["big.bin"], "sync: the multipart object is not byte-exact")
    # the lock replayed on a fresh node: everything comes from the bucket
    dest2 = os.path.join(t.tmp, "lab2")
    r = t.hm("sync", m, "--locked", "--to", dest2, store=store, endpoint=t.endpoint, env=node_env(t, "sy2"),
             timeout=240)
    check(r.rc == 0, "sync --locked on a fresh node: %r" % r)
    check(lib.read(os.path.join(dest2, BIG, "big.bin")) == want["big.bin"], "sync --locked: not byte-exact")


def case_import_s3(t, ceph, conf, want):
    """A bundle made from a local store, imported into an S3 store, is read back by s3cmd and a fresh node."""
    local = os.path.join(t.tmp, "store-src")
    for repo in (lib.SAMPLE_REPO, BIG):
        r = t.hm("pull", repo, store=local, env={"AWS_ACCESS_KEY_ID": None})
        check(r.rc == 0, "local pull for the bundle: %r" % r)
    bundle = os.path.join(t.tmp, "to-s3.tar")
    r = t.hm("export", lib.SAMPLE_REPO, BIG, "-o", bundle, store=local)
    check(r.rc == 0, "export from a local store: %r" % r)
    store = "s3://%s/imp" % BUCKET
    r = t.hm("import", bundle, store=store, env=node_env(t, "im"), timeout=180)
    check(r.rc == 0, "import into the S3 store: %r" % r)
    objs = s3_objects(ceph, conf, "imp/")
    for path, data in want.items():
        sha = lib.sha256_bytes(data)
        check(objs.get("imp/blobs/sha256/%s/%s" % (sha[:2], sha)) == len(data), "import: %s not in the bucket" % path)
    sha = lib.sha256_bytes(want["big.bin"])
    check(s3_get(ceph, conf, "imp/blobs/sha256/%s/%s" % (sha[:2], sha), os.path.join(t.tmp, "imp.get")) ==
          want["big.bin"], "import: the object is not byte-exact")
    check(len([k for k in objs if k.startswith("imp/revisions/")]) == 2, "import: revision objects %s" % sorted(objs))
    check(not uploads(ceph, conf), "import left unfinished uploads")
    out = os.path.join(t.tmp, "co-imp")
    r = t.hm("checkout", BIG, "--to", out, "--copy", store=store, env=node_env(t, "im2"))
    check(r.rc == 0 and lib.read(os.path.join(out, "big.bin")) == want["big.bin"],
          "checkout of the imported repo on a fresh node: %r" % r)


def case_convert(t, ceph, conf):
    """convert into the S3 store: the GGUF is an object in the bucket; a fresh node finds it (cache hit)."""
    r = t.hm("convert", lib.SAMPLE_REPO, "--type", "q8_0", "--json", store=STORE, env=node_env(t, "a"), timeout=180)
    check(r.rc == 0, "convert into the S3 store: %r" % r)
    j = r.json()
    check(j["stored"] is True and j["cached"] is False, "convert: %r" % j)
    key = "mirror/blobs/sha256/%s/%s" % (j["sha256"][:2], j["sha256"])
    objs = s3_objects(ceph, conf, "mirror/")
    check(objs.get(key) == j["size"], "the GGUF is not in the bucket (%r)" % objs.get(key))
    check(any(k.startswith("mirror/artifacts/model/%s/" % lib.SAMPLE_REPO) and k.endswith(j["sha256"])
              for k in objs), "no artifact record in the bucket")
    got = s3_get(ceph, conf, key, os.path.join(t.tmp, "gguf.get"))
    check(lib.sha256_bytes(got) == j["sha256"] and got[:4] == b"GGUF", "the GGUF object is not byte-exact")
    r = t.hm("convert", lib.SAMPLE_REPO, "--type", "q8_0", "--json", store=STORE, env=node_env(t, "cv2"))
    check(r.rc == 0 and r.json()["cached"] is True and r.json()["sha256"] == j["sha256"],
          "a fresh node converts again instead of using the bucket's: %r" % r)
    return j


def case_du_stats(t, ceph, conf):
    objs = s3_objects(ceph, conf, "mirror/blobs/")
    r = t.hm("du", "--json", store=STORE, env=node_env(t, "du"))
    check(r.rc == 0, "du on the S3 store: %r" % r)
    b = r.json().get("bucket") or {}
    check(b.get("bytes") == sum(objs.values()) and b.get("blobs") == len(objs),
          "du's bucket figures %r, s3cmd lists %d objects of %d bytes" % (b, len(objs), sum(objs.values())))
    r = t.hm("du", store=STORE, env=node_env(t, "du"))
    check(r.rc == 0 and "in the bucket" in r.out, "du text: %r" % r)
    r = t.hm("stats", store=STORE, env=node_env(t, "a"))
    check(r.rc == 0, "stats on the S3 store: %r" % r)


def case_pull_reresolve(t, ceph, want):
    """`hubmirror pull` through serve: the presigned URL expires while the
    connection hangs and is cut; the retry is refused (403); pull resolves again."""
    # expiry 5 s, the cut after 7 s: margin for a loaded machine between a 302 and its GET
    proxy = ceph_lib.FaultProxy(ceph.port, [("cut", "GET", "X-Amz-Signature=", 7.0)])
    try:
        srv = Server(t, "--presign-expiry", "5", store=STORE, wait=60,
                     env=dict(node_env(t, "rr"), AWS_ENDPOINT_URL=proxy.url))
        other = os.path.join(t.tmp, "store-rr")
        r = t.hm("pull", BIG, "--json", store=other, endpoint=srv.url, timeout=180,
                 env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
        check(r.rc == 0, "pull through serve with an expiring URL: %r" % r)
        check(lib.read(lib.blob_path(other, lib.sha256_bytes(want["big.bin"]))) == want["big.bin"],
              "pull after re-resolving: not byte-exact")
        check(not proxy.faults, "the cut never happened (requests %s)" % proxy.log[-10:])
        refused = [a for a in proxy.answers if a[0] == "GET" and "X-Amz-Signature=" in a[1] and a[2] == 403]
        sigs = {re.search(r"X-Amz-Signature=([0-9a-f]+)", p).group(1) for m, p in proxy.log
                if "X-Amz-Signature=" in p}
        check(refused and len(sigs) >= 2, "no expired URL refused (%d) or no second URL (%d): %s"
              % (len(refused), len(sigs), proxy.answers[-10:]))
        srv.proc.kill()
        srv.proc.wait()
    finally:
        proxy.stop()


def case_read_faults(t, ceph, conf, want):
    """Reads from the bucket: 503 SlowDown, a dropped connection and a truncated
    body are retried (a fresh node's checkout completes byte-exact); wrong
    credentials and a missing bucket are one clear line and write nothing."""
    sha = lib.sha256_bytes(want["big.bin"])
    blob = "blobs/sha256/%s/%s" % (sha[:2], sha)
    proxy = ceph_lib.FaultProxy(ceph.port, [("503", "GET", blob), ("drop", "GET", blob), ("cut", "GET", blob),
                                            ("503", "GET", "list-type=2"), ("503", "GET", "/revisions/"),
                                            ("drop", "GET", "/revisions/")])
    try:
        out = os.path.join(t.tmp, "co-faults")
        r = t.hm("checkout", BIG, "--to", out, "--copy", store=STORE, timeout=180,
                 env=dict(node_env(t, "rf"), AWS_ENDPOINT_URL=proxy.url))
        check(r.rc == 0, "checkout through read faults: %r" % r)
        check(not proxy.faults, "faults that never fired: %s (fired %s)" % (proxy.faults, proxy.fired))
        check(lib.read(os.path.join(out, "big.bin")) == want["big.bin"], "checkout through faults: not byte-exact")
    finally:
        proxy.stop()
    bad = dict(node_env(t, "rbad"), AWS_SECRET_ACCESS_KEY="not-the-secret-key-0000")
    out = os.path.join(t.tmp, "co-bad")
    for argv in (("checkout", BIG, "--to", out, "--copy"), ("verify",), ("du",)):
        r = t.hm(*argv, store=STORE, env=bad)
        check(r.rc == 1, "%s with a wrong secret: %r" % (argv[0], r))
        lib.clean_error(r, ("denied", "AWS_SECRET_ACCESS_KEY"))
        check("not-the-secret-key" not in r.out + r.err and ceph.secret_key not in r.out + r.err,
              "a secret was printed: %r" % r)
    check(not os.path.exists(out) or not os.listdir(out), "a checkout with a wrong secret wrote files")
    r = t.hm("pull", lib.SAMPLE_REPO, store="s3://no-such-bucket-y/p", env=node_env(t, "rbad"))
    check(r.rc == 1, "pull into a missing bucket: %r" % r)
    lib.clean_error(r, ("does not exist",))
    # a malformed revision object (untrusted): one clear line naming it
    junk = os.path.join(t.tmp, "junk.json")
    with open(junk, "wb") as fh:
        fh.write(b"{not json")
    ceph.s3cmd(conf, "put", junk, "s3://%s/junkrev/revisions/model/demo-org/x/%s.json" % (BUCKET, "ab" * 20))
    r = t.hm("ls", store="s3://%s/junkrev" % BUCKET, env=node_env(t, "junk"))
    check(r.rc == 1, "a malformed revision object: %r" % r)
    lib.clean_error(r, ("malformed revision object",))


def timed(name, fn, *args):
    t0 = time.time()
    res = fn(*args)
    print("case %s: %.1fs" % (name, time.time() - t0), flush=True)
    return res


def test_s3_store(t):
    missing = ceph_lib.missing_binaries()
    check(not missing, "Ceph/s3cmd binaries missing (mk/deps.sh test installs them): %s" % missing)
    emu = t.emu([lib.sample_repo(), big_repo()])
    with ceph_lib.Ceph(t.tmp) as ceph:
        conf = ceph.s3cmd_conf(os.path.join(t.tmp, "s3cfg"))
        ceph.s3cmd(conf, "mb", "s3://%s" % BUCKET)
        t.env.update({k: v for k, v in ceph.env().items() if v is not None})
        t.env.update({"HUBMIRROR_S3_SINGLE_MAX": "6M", "HUBMIRROR_S3_PART_SIZE": "5M"})
        want = timed("pull", case_pull, t, ceph, conf, emu)
        timed("wrong_credentials", case_wrong_credentials, t, ceph, conf)
        timed("second_node", case_second_node, t, want)
        srv = timed("serve", case_serve, t, ceph, want)
        timed("js", case_js, t, srv, want)
        timed("pull_reresolve", case_pull_reresolve, t, ceph, want)
        timed("kill_multipart", case_kill_multipart, t, ceph, conf, want)
        timed("faults", case_faults, t, ceph, conf, want)
        timed("read_faults", case_read_faults, t, ceph, conf, want)
        timed("pull_through", case_pull_through, t, ceph, emu, want)
        timed("verify_repair", case_verify_repair, t, ceph, conf, emu, want)
        timed("export_import", case_export_import, t, want)
        timed("import_s3", case_import_s3, t, ceph, conf, want)
        timed("sync", case_sync, t, ceph, conf, want)
        timed("convert", case_convert, t, ceph, conf)
        timed("du_stats", case_du_stats, t, ceph, conf)
        timed("rm_gc", case_rm_gc, t, ceph, conf, want)
        for s in getattr(t, "servers", []):
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()


# one Ceph for every case: its start alone has taken 90 s and more on a loaded machine
test_s3_store.timeout = 900
