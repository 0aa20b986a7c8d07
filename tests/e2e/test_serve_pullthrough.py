"""test_serve_pullthrough.py - `hubmirror serve --upstream URL` over an empty
store: clients pull through the server, each file is fetched upstream once
even when many clients want it at the same time, the first client gets bytes
as they arrive, upstream faults never reach clients as wrong bytes,
--offline never contacts upstream, --allow limits what is served and pulled,
and whose token goes upstream."""

import os
import signal
import threading
import time

import lib
from lib import check
import serve_lib as sl
from serve_lib import MODEL, REVS, DATASET, OTHER, Server, serving

BIG = "demo-org/big"


def big_repo(**files):
    """A repo of random files: name=(size, seed)."""
    return {"type": "model", "id": BIG, "commits": [
        {"files": dict({n: {"random": s, "seed": seed} for n, (s, seed) in files.items()},
                       **{"small.txt": "small\n"})}]}


def upstream_server(t, emu, *args, **kw):
    return Server(t, "--upstream", emu.url, *args, **kw)


def check_fetched_once(emu, files, log=None):
    """Each of files ({path: bytes}) came from the emulator at most once."""
    log = emu.log() if log is None else log
    for p, data in files.items():
        served = emu.bytes_served(p, log)
        check(len(data) <= served <= len(data) + 4096,
              "%s: the emulator served %d bytes of a %d-byte file (fetched more than once?)"
              % (p, served, len(data)))


@serving(timeout=60)
def test_client_pull_through(t):
    emu = t.emu(sl.fixture_repos())
    srv = upstream_server(t, emu)
    src = lib.sample_files()
    b = os.path.join(t.tmp, "store-b")
    r = t.hm("pull", MODEL, "--json", store=b, endpoint=srv.url, timeout=60)
    check(r.rc == 0, "pull through the server failed: %r\n  server stderr: %s" % (r, srv.stderr()[-1500:]))
    got = lib.files_by_path(r.json())
    check(set(got) == set(src), "files %s" % sorted(got))
    for p, data in src.items():
        sha = lib.sha256_bytes(data)
        check(got[p].get("sha256") == sha and lib.read(lib.blob_path(b, sha)) == data,
              "%s: wrong bytes through the server" % p)
    check(r.json().get("revision") == sl.main_commit(MODEL), "revision %r" % r.json().get("revision"))
    # the server's store now holds the revision, verified
    rows = t.db("SELECT f.path, f.sha256 FROM files f JOIN revisions v ON v.id = f.revision_id "
                "WHERE v.commit_sha = ?", (sl.main_commit(MODEL),))
    check({x["path"]: x["sha256"] for x in rows} == {p: lib.sha256_bytes(d) for p, d in src.items()},
          "the server's store after pull-through: %s" % rows)
    t.ok("verify")
    check_fetched_once(emu, src)
    # other repo types and revisions
    for args, expect in (((DATASET, "--repo-type", "dataset"), sl.dataset_files()),
                         ((REVS, "--revision", "refs/pr/1"), sl.revs_files(1))):
        r = t.hm("pull", *args, "--json", store=b, endpoint=srv.url, timeout=60)
        check(r.rc == 0, "pull %s through the server: %r" % (args, r))
        got = {p: f.get("sha256") for p, f in lib.files_by_path(r.json()).items()}
        check(got == {p: lib.sha256_bytes(d) for p, d in expect.items()}, "%s through the server: %s" % (args, got))
    # a second client: everything comes from the server's store
    before = emu.file_gets()
    c = os.path.join(t.tmp, "store-c")
    r = t.hm("pull", MODEL, "--json", store=c, endpoint=srv.url, timeout=60)
    check(r.rc == 0, "second client: %r" % r)
    check(len(emu.file_gets()) == len(before), "the second client's pull fetched files upstream again: %s"
          % [(e["path"], e["bytes"]) for e in emu.file_gets()[len(before):]])
    rows = sl.wait_for(lambda: [x for x in sl.served_rows(t) if x["cache"] == "hit"], timeout=8)
    check(rows, "no served row with cache 'hit' after the second client")
    miss = {x["path"] for x in sl.served_rows(t) if x["cache"] == "miss" and x["repo"] == MODEL}
    check(miss >= set(src), "served rows with cache 'miss' for %s: %s"
          % (MODEL, sorted(miss)))


@serving(timeout=60)
def test_one_upstream_download_for_many_clients(t):
    size = 6 * 1000 * 1000
    emu = t.emu([big_repo(**{"big.bin": (size, 3)})])
    data = lib.random_bytes(size, 3)
    # about 2 s upstream, so that the 8 clients overlap with the one download
    emu.faults([{"match": "big.bin", "kind": "slow", "rate": 3000000, "times": -1}])
    srv = upstream_server(t, emu)
    go = threading.Event()
    # six whole-file clients and two that ask ranges (one far ahead of the download)
    ranges = [None] * 6 + [(4500000, size - 1), (1000, 999999)]
    readers = [sl.Reader(srv, sl.resolve_url(BIG, "main", "big.bin"), start_evt=go, timeout=30,
                         headers={"Range": "bytes=%d-%d" % rg} if rg else None)
               for rg in ranges]
    for r in readers:
        r.start()
    time.sleep(0.1)
    go.set()
    for r in readers:
        r.join(40)
    for i, (r, rg) in enumerate(zip(readers, ranges)):
        check(not r.is_alive(), "client %d still reading after 40 s" % i)
        want, status = (data, 200) if rg is None else (data[rg[0]:rg[1] + 1], 206)
        check(r.error is None and r.status == status, "client %d (range %s): status %r error %r"
              % (i, rg, r.status, r.error))
        check(r.data == want, "client %d (range %s) got %d wrong bytes" % (i, rg, len(r.data)))
        if rg:
            cr = r.headers_in.get("Content-Range")
            check(cr == "bytes %d-%d/%d" % (rg[0], rg[1], size), "client %d: Content-Range %r" % (i, cr))
    log = emu.log()
    gets = emu.file_gets(log, "big.bin")
    check(gets, "no upstream GET of big.bin")
    served = emu.bytes_served("big.bin", log)
    check(served <= size + 4096, "8 clients made the server fetch %d bytes of a %d-byte file upstream (%d GETs)"
          % (served, size, len(gets)))
    # the clients really overlapped with the upstream transfer
    up_end = max(e["time"] + e["duration"] for e in gets)
    late = [i for i, r in enumerate(readers) if r.t0 > up_end]
    check(not late, "clients %s started after the upstream download ended" % late)
    t.ok("verify")


def stream_while_stalled(t, after, seconds=4):
    """A 2 MB file whose every upstream connection sends `after` bytes, then
    stalls `seconds`: the first client must get the bytes that arrived
    before the stall ends, and the whole file after."""
    size = 2 * 1000 * 1000
    emu = t.emu([big_repo(**{"slow.bin": (size, 4)})])
    data = lib.random_bytes(size, 4)
    emu.faults([{"match": "slow.bin", "kind": "stall", "after": after, "seconds": seconds, "times": -1}])
    srv = upstream_server(t, emu)
    t0 = time.time()
    c = srv.conn(30)
    c.request("GET", sl.resolve_url(BIG, "main", "slow.bin"))
    r = c.getresponse()
    check(r.status == 200, "status %d" % r.status)
    check(r.getheader("Content-Length") in (None, str(size)), "Content-Length %r" % r.getheader("Content-Length"))
    first = r.read1(65536)
    t_first = time.time() - t0
    check(first and first == data[:len(first)], "first chunk: %d wrong bytes" % len(first))
    up = [e for e in emu.inflight() if e.get("file") == "slow.bin" and e["method"] == "GET"]
    check(t_first < seconds - 0.5 and up,
          "the upstream sent %d bytes at once, then stalled %ds: the client's first bytes came after "
          "%.1fs, upstream transfers in flight then: %s (bytes must be streamed as they arrive)"
          % (after, seconds, t_first, up))
    rest = r.read()
    c.close()
    check(first + rest == data, "streamed file: %d bytes, differ from the source" % len(first + rest))
    check_fetched_once(emu, {"slow.bin": data})
    # a second client gets it from the store, at once
    t1 = time.time()
    check(srv.get(sl.resolve_url(BIG, "main", "slow.bin")).body == data, "second GET")
    check(time.time() - t1 < 2, "second GET took %.1fs" % (time.time() - t1))


@serving(timeout=60)
def test_first_client_streams(t):
    stream_while_stalled(t, 1024 * 1024)


@serving(timeout=60)
def test_first_bytes_not_held_back(t):
    # less than any write buffer: what arrived must not wait for more to come
    stream_while_stalled(t, 128 * 1024)


@serving(timeout=60)
def test_upstream_faults_never_reach_clients(t):
    n = 3 * 1000 * 1000
    emu = t.emu([big_repo(**{"drop.bin": (n, 5), "bad.bin": (n, 6), "busy.bin": (n, 8)})])
    emu.faults([{"match": "drop.bin", "kind": "drop", "after": 1000000, "times": 1},
                {"match": "bad.bin", "kind": "corrupt", "offset": 2000000, "times": 1},
                {"match": "busy.bin", "kind": "status", "status": 503, "times": 1}])
    srv = upstream_server(t, emu)
    # a dropped or refused upstream connection is retried: the client sees nothing
    for name, seed in (("drop.bin", 5), ("busy.bin", 8)):
        r = sl.Reader(srv, sl.resolve_url(BIG, "main", name), timeout=30)
        r.run()
        data = lib.random_bytes(n, seed)
        check(r.status == 200 and r.error is None and r.data == data,
              "%s with an upstream fault: status %r, error %r, %d bytes, correct %s (server alive: %s)\n"
              "  server stderr: %s" % (name, r.status, r.error, len(r.data), r.data == data, srv.alive(),
                                       srv.stderr()[-1500:]))
    # a corrupt upstream byte: the client gets the right file, or a cut
    # connection (bytes were already streamed) - never a complete wrong file
    good = lib.random_bytes(n, 6)
    r = sl.Reader(srv, sl.resolve_url(BIG, "main", "bad.bin"), timeout=30)
    r.run()
    check(r.status in (200, None) or r.status >= 500, "bad.bin: status %r" % r.status)
    if r.status == 200 and r.error is None:
        got = r.data
        diff = [i for i in range(min(len(got), n)) if got[i] != good[i]][:3]
        check(got == good, "a corrupt upstream byte reached the client in a complete 200 response "
              "(%d bytes, differing at %s): the end of a pulled-through file must be held back until "
              "its digest is verified" % (len(got), diff))
    else:
        check(len(r.data) < n, "bad.bin: error %r after all %d bytes" % (r.error, len(r.data)))
    # no corrupt blob stays in the store, and the next client gets the right bytes
    t.ok("verify")
    r2 = srv.get(sl.resolve_url(BIG, "main", "bad.bin"), timeout=30)
    check(r2.status == 200 and r2.body == good, "bad.bin on the second try: %r" % r2)
    t.ok("verify")
    # an upstream 404 is the Hub's 404
    sl.check_hub_error(srv.get(sl.resolve_url(BIG, "main", "nope.bin")), 404, "EntryNotFound", "missing upstream file")
    sl.check_hub_error(srv.get(sl.resolve_url(BIG, "nope", "small.txt")), 404, "RevisionNotFound", "missing upstream rev")
    sl.check_hub_error(srv.get("/api/models/no-org/no-repo"), 404, "RepoNotFound", "missing upstream repo")
    sl.check_hub_error(srv.get(sl.resolve_url("no-org/no-repo", "main", "x")), 404, "RepoNotFound",
                       "missing upstream repo (resolve)")


@serving(timeout=40)
def test_pull_through_api_and_revisions(t):
    emu = t.emu(sl.fixture_repos())
    t.ok("pull", REVS, "-q")  # main is stored; refs/pr/1 and dev are not
    srv = upstream_server(t, emu)
    c = [lib.commit_id(REVS, i) for i in range(3)]
    for rev, i in (("refs%2Fpr%2F1", 1), ("dev", 1), (c[0], 0)):
        j = srv.json("/api/models/%s/revision/%s" % (REVS, rev))
        check(j.get("sha") == c[i], "revision %s through upstream: sha %r" % (rev, j.get("sha")))
        r = srv.get(sl.resolve_url(REVS, rev.replace("%2F", "/"), "version.txt"))
        check(r.status == 200 and r.body == sl.revs_files(i)["version.txt"] and r.h("X-Repo-Commit") == c[i],
              "version.txt at %s through upstream: %r" % (rev, r))
    r = srv.post_json("/api/models/%s/paths-info/dev" % REVS, {"paths": ["w.bin"], "expand": True})
    check(r.status == 200 and len(r.json()) == 1 and r.json()[0]["lfs"]["oid"]
          == lib.sha256_bytes(sl.revs_files(1)["w.bin"]), "paths-info at dev through upstream: %r" % r)
    pages, entries = sl.follow_pages(srv, "/api/models/%s/tree/dev?recursive=true" % REVS)
    check({e["path"] for e in entries if e["type"] == "file"} == set(sl.revs_files(1)),
          "tree at dev through upstream: %s" % entries)
    # HEAD of a file not in the store: the Hub's headers, from the listing, no download
    w = sl.revs_files(1)["w.bin"]
    before = emu.bytes_served("w.bin")
    r = srv.head(sl.resolve_url(REVS, "dev", "w.bin"))
    sha = lib.sha256_bytes(w)
    check(r.status == 200 and r.h("ETag") == '"%s"' % sha and r.h("X-Linked-Etag") == '"%s"' % sha
          and r.h("X-Linked-Size") == str(len(w)) and r.h("Content-Length") == str(len(w))
          and r.h("X-Repo-Commit") == c[1], "HEAD of a file not yet pulled through: %r" % r)
    check(emu.bytes_served("w.bin") == before, "a HEAD made the server download w.bin")
    # a model never stored, asked for its info first (as the clients do)
    j = srv.json("/api/models/%s" % MODEL)
    check(j.get("sha") == sl.main_commit(MODEL), "repo info through upstream: %r" % j)
    t.ok("verify")


@serving()
def test_offline_never_contacts_upstream(t):
    emu = t.emu(sl.fixture_repos())
    t.ok("pull", MODEL, "-q")
    emu.reset_log()
    env = {"HF_ENDPOINT": emu.url}
    srv = Server(t, "--offline", env=env)
    checks = [("/api/models/" + REVS, "RepoNotFound"),
              (sl.resolve_url(REVS, "main", "version.txt"), "RepoNotFound"),
              ("/api/models/%s/revision/dev" % MODEL, "RevisionNotFound"),
              (sl.resolve_url(MODEL, "dev", "config.json"), "RevisionNotFound"),
              (sl.resolve_url(MODEL, "main", "nope.txt"), "EntryNotFound"),
              ("/api/datasets/" + DATASET, "RepoNotFound")]

    def run_checks(s):
        for url, code in checks:
            sl.check_hub_error(s.get(url), 404, code, "offline %s" % url)
        check(s.get(sl.resolve_url(MODEL, "main", "config.json")).body == lib.sample_files()["config.json"],
              "offline: a stored file")
        time.sleep(0.3)
        check(not emu.log(), "--offline contacted the upstream: %s"
              % [(e["method"], e["path"]) for e in emu.log()][:5])

    run_checks(srv)
    srv.stop()
    # --offline wins over --upstream (or the combination is refused up front)
    try:
        srv = Server(t, "--offline", "--upstream", emu.url, env=env)
    except sl.NotStarted as e:
        check(e.rc == 2 and "offline" in e.stderr.lower(),
              "--offline --upstream neither served offline nor was refused as a usage error: %s" % e)
        return
    run_checks(srv)


@serving(timeout=40)
def test_allow_glob(t):
    second = {"type": "model", "id": "other-org/second",
              "commits": [{"files": {"s.txt": "second\n"}, "refs": ["main"]}]}
    emu = t.emu(sl.fixture_repos() + [second])
    t.ok("pull", OTHER, "-q")  # stored, but not allowed
    emu.reset_log()
    srv = upstream_server(t, emu, "--allow", "demo-org/*")
    for url in ("/api/models/" + OTHER, sl.resolve_url(OTHER, "main", "other.txt"),
                "/api/models/%s/tree/main" % OTHER, "/api/models/other-org/second",
                sl.resolve_url("other-org/second", "main", "s.txt"), "/api/models/%s/refs" % OTHER):
        sl.check_hub_error(srv.get(url), 404, "RepoNotFound", "--allow demo-org/*: %s" % url)
        check(srv.head(url).status == 404 if "/resolve/" in url else True, "HEAD %s" % url)
    r = srv.post_json("/api/models/%s/paths-info/main" % OTHER, {"paths": ["other.txt"]})
    sl.check_hub_error(r, 404, "RepoNotFound", "--allow: paths-info of another repo")
    # allowed ones are pulled through
    check(srv.get(sl.resolve_url(MODEL, "main", "config.json")).body == lib.sample_files()["config.json"],
          "an allowed repo through upstream")
    check(srv.json("/api/datasets/" + DATASET).get("id") == DATASET, "an allowed dataset")
    leaked = [e["path"] for e in emu.log() if "other-org" in e["path"] or "other-org" in (e.get("repo") or "")]
    check(not leaked, "repos outside --allow were asked upstream: %s" % leaked)
    srv.stop()
    # several --allow
    srv = upstream_server(t, emu, "--allow", "demo-org/*", "--allow", "other-org/sec*")
    check(srv.get(sl.resolve_url("other-org/second", "main", "s.txt")).body == b"second\n",
          "second --allow glob not honoured")
    sl.check_hub_error(srv.get("/api/models/" + OTHER), 404, "RepoNotFound", "two --allow: %s" % OTHER)


@serving(timeout=40)
def test_tokens_upstream(t):
    client, server_tok = "hf_ClientToken0123456789abcdef", "hf_ServerToken0123456789abcdef"
    private = lib.sample_repo("demo-org/private", private=True, tokens=[server_tok])
    emu = t.emu(sl.fixture_repos() + [private], tokens=[client])

    def used(log):
        return {e.get("authorization") for e in log if e["host"] == "api"}

    # 1. no server token: the client's token is not forwarded
    srv = upstream_server(t, emu, store=os.path.join(t.tmp, "s1"))
    emu.reset_log()
    r = srv.get(sl.resolve_url(MODEL, "main", "config.json"), token=client)
    check(r.status == 200, "public file with a client token: %r" % r)
    check(srv.get("/api/models/" + REVS, token=client).status == 200, "repo info with a client token")
    check(used(emu.log()) == {None}, "upstream requests carried %s (client token forwarded?)" % used(emu.log()))
    r = srv.get(sl.resolve_url("demo-org/private", "main", "config.json"), token=client)
    check(r.status in (401, 403, 404) and lib.sample_files()["config.json"] not in r.body,
          "a private repo without a server token: %r" % r)
    srv.stop()
    # 2. the server's own token (--token, then HF_TOKEN) goes upstream, never the client's
    for args, env, store in ((("--token", server_tok), None, "s2"), ((), {"HF_TOKEN": server_tok}, "s3")):
        srv = upstream_server(t, emu, *args, env=env, store=os.path.join(t.tmp, store))
        emu.reset_log()
        r = srv.get(sl.resolve_url("demo-org/private", "main", "config.json"), token=client)
        check(r.status == 200 and r.body == lib.sample_files()["config.json"],
              "private file with the server's token (%s): %r" % (args or "HF_TOKEN", r))
        u = used(emu.log())
        check("Bearer " + client not in u and "Bearer " + server_tok in u,
              "upstream Authorization values %s, expected the server's token" % u)
        cdn = [e["path"] for e in emu.log() if e["host"] == "cdn" and e["auth"]]
        check(not cdn, "Authorization sent to the CDN: %s" % cdn)
        srv.stop()
    # 3. --forward-token: the client's token goes upstream
    srv = upstream_server(t, emu, "--forward-token", store=os.path.join(t.tmp, "s4"))
    emu.reset_log()
    r = srv.get(sl.resolve_url(REVS, "main", "version.txt"), token=client)
    check(r.status == 200, "--forward-token: %r" % r)
    check(used(emu.log()) == {"Bearer " + client}, "--forward-token: upstream Authorization %s" % used(emu.log()))


@serving(timeout=60)
def test_sigterm_during_pull_through(t):
    size = 3 * 1000 * 1000
    emu = t.emu([big_repo(**{"slow.bin": (size, 9)})])
    data = lib.random_bytes(size, 9)
    emu.faults([{"match": "slow.bin", "kind": "slow", "rate": 1500000, "times": -1}])
    srv = upstream_server(t, emu)
    r = sl.Reader(srv, sl.resolve_url(BIG, "main", "slow.bin"), timeout=30)
    r.start()
    check(sl.wait_for(lambda: len(r.buf) > 0, timeout=10), "no bytes within 10 s")
    srv.proc.send_signal(signal.SIGTERM)
    r.join(30)
    check(not r.is_alive(), "client still reading 30 s after SIGTERM")
    # the answer in progress (a pull-through) is drained, then the server exits 0
    check(r.status == 200 and r.error is None and r.data == data,
          "download in flight at SIGTERM: status %r error %r, %d of %d bytes, correct %s"
          % (r.status, r.error, len(r.data), size, r.data == data))
    try:
        rc = srv.proc.wait(15)
    except Exception:
        raise lib.Fail("the server did not exit within 15 s of SIGTERM after its last answer")
    srv.stopped_rc = rc
    check(rc == 0, "exit %s after SIGTERM\n  stderr: %s" % (rc, srv.stderr()[-1500:]))
    t.ok("verify")
    lib.check_store_consistent(t.store)
    # the next server serves it from the store without going upstream
    emu.faults([])
    emu.reset_log()
    srv2 = upstream_server(t, emu)
    check(srv2.get(sl.resolve_url(BIG, "main", "slow.bin")).body == data, "after restart")
    check(not emu.file_gets(), "the file pulled through before SIGTERM was fetched again")


@serving(timeout=60)
def test_kill9_during_pull_through(t):
    size = 4 * 1000 * 1000
    emu = t.emu([big_repo(**{"slow.bin": (size, 10)})])
    data = lib.random_bytes(size, 10)
    emu.faults([{"match": "slow.bin", "kind": "slow", "rate": 1000000, "times": 1}])
    srv = upstream_server(t, emu)
    r = sl.Reader(srv, sl.resolve_url(BIG, "main", "slow.bin"), timeout=30)
    r.start()
    check(sl.wait_for(lambda: len(r.buf) > 300000, timeout=10), "no bytes within 10 s")
    srv.proc.kill()
    srv.proc.wait()
    srv.stopped_rc = "killed"
    r.join(10)
    got = r.data
    check(len(got) < size and got == data[:len(got)], "the client got %d bytes before kill -9, correct %s"
          % (len(got), got == data[:len(got)]))
    # the store is consistent, and a new server finishes the job with the right bytes
    t.ok("verify")
    lib.check_store_consistent(t.store)
    srv2 = upstream_server(t, emu)
    r2 = srv2.get(sl.resolve_url(BIG, "main", "slow.bin"), timeout=30)
    check(r2.status == 200 and r2.body == data, "after kill -9 and restart: %r" % r2)
    t.ok("verify")


@serving(timeout=60)
def test_upstream_down(t):
    emu = t.emu(sl.fixture_repos())
    t.ok("pull", MODEL, "-q")
    dead = "http://127.0.0.1:%d" % lib.free_port()
    srv = Server(t, "--upstream", dead, "--retries", "1")
    # what the store has is served, branch names included (the last known commit)
    r = srv.get(sl.resolve_url(MODEL, "main", "config.json"), timeout=30)
    check(r.status == 200 and r.body == lib.sample_files()["config.json"], "a stored file, upstream down: %r" % r)
    j = srv.json("/api/models/%s/revision/main" % MODEL, timeout=30)
    check(j.get("sha") == sl.main_commit(MODEL), "stored revision info, upstream down: %r" % j)
    # what it lacks is a clean gateway error, soon
    for url in ("/api/models/" + REVS, sl.resolve_url(REVS, "main", "version.txt")):
        t0 = time.time()
        r = srv.get(url, timeout=30)
        check(r.status in (502, 503, 504), "%s with the upstream down: expected 502/503/504: %r" % (url, r))
        check(r.json().get("error"), "%s: error body %r" % (url, r))
        check(time.time() - t0 < 20, "%s: the gateway error took %.1fs" % (url, time.time() - t0))
    srv.check_works("upstream errors")


@serving(timeout=60)
def test_chained_pull_through(t):
    emu = sl.prefill(t)
    a = Server(t)                                   # over the filled store
    b_store = os.path.join(t.tmp, "store-b")
    b = Server(t, "--upstream", a.url, store=b_store)  # empty, pulls through a
    emu.reset_log()
    c = os.path.join(t.tmp, "store-c")
    for args, expect in (((MODEL,), lib.sample_files()), ((REVS, "--revision", "refs/pr/1"), sl.revs_files(1)),
                         ((DATASET, "--repo-type", "dataset"), sl.dataset_files())):
        r = t.hm("pull", *args, "--json", store=c, endpoint=b.url, timeout=60)
        check(r.rc == 0, "pull through two servers: %r\n  b stderr: %s" % (r, b.stderr()[-1500:]))
        got = {p: f.get("sha256") for p, f in lib.files_by_path(r.json()).items()}
        check(got == {p: lib.sha256_bytes(d) for p, d in expect.items()}, "%s through two servers: %s" % (args, got))
    for st in (b_store, c):
        t.ok("verify", store=st)
        lib.check_store_consistent(st)
    check(not emu.log(), "the origin hub was asked: %s" % [e["path"] for e in emu.log()][:5])


@serving(timeout=60)
def test_head_is_not_a_cache_miss(t):
    emu = t.emu(sl.fixture_repos())
    srv = upstream_server(t, emu)

    def misses():
        for ln in srv.get("/metrics").body.decode().splitlines():
            if ln.startswith('hubmirror_cache_total{result="miss"}'):
                return int(float(ln.split()[-1]))
        return 0
    before = misses()
    r = srv.head(sl.resolve_url(MODEL, "main", "model.safetensors"))
    check(r.status == 200, "HEAD through the server: %r" % r)
    check(misses() == before, "a HEAD counted as a cache miss")
    r = srv.get(sl.resolve_url(MODEL, "main", "config.json"))
    check(r.status == 200, "GET through the server: %r" % r)
    # counted when the server has finished the request, which may be a
    # moment after the client read the body: wait for it
    deadline = time.time() + 20
    while misses() != before + 1 and time.time() < deadline:
        time.sleep(0.1)
    check(misses() == before + 1, "a GET pulled through is a miss")


def metric(srv, name):
    """The value of an unlabelled series of /metrics (None when absent)."""
    for ln in srv.get("/metrics").body.decode().splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[-1])
    return None


@serving(timeout=90)
def test_metrics_of_pull_through(t):
    """/metrics: bytes pulled through from the upstream, pull-throughs and
    requests in flight, the store's size; a failed pull-through is counted
    as an upstream error (the twin)."""
    size = 3 * 1000 * 1000
    emu = t.emu([big_repo(**{"slow.bin": (size, 11), "bad.bin": (1000, 12)})])
    emu.faults([{"match": "slow.bin", "kind": "slow", "rate": 1500000, "times": -1},
                {"match": "resolve:bad.bin", "kind": "redirect", "times": -1,
                 "location": "http://169.254.169.254/latest/meta-data/"}])
    srv = upstream_server(t, emu)
    check(metric(srv, "hubmirror_upstream_bytes_total") == 0 and metric(srv, "hubmirror_upstream_errors_total") == 0,
          "a fresh server has pulled nothing through")
    check(metric(srv, "hubmirror_requests_in_flight") >= 1, "the /metrics request itself is in flight")
    store0 = metric(srv, "hubmirror_store_bytes")
    check(store0 is not None, "no hubmirror_store_bytes")
    r = sl.Reader(srv, sl.resolve_url(BIG, "main", "slow.bin"), timeout=60)
    r.start()
    # about 2 s upstream: the download is seen in flight
    seen, t0 = 0, time.time()
    while not seen and r.is_alive() and time.time() - t0 < 30:
        seen = metric(srv, "hubmirror_pull_throughs_in_flight") or 0
        time.sleep(0.05)
    r.join(60)
    check(r.error is None and r.status == 200 and r.data == lib.random_bytes(size, 11), "slow.bin: %r" % r.error)
    check(seen == 1, "hubmirror_pull_throughs_in_flight never showed the download")
    # the download is done when the client has it all; its totals a moment later: wait for all of them
    t0 = time.time()
    while time.time() - t0 < 30:
        up, running, store = (metric(srv, "hubmirror_upstream_bytes_total"),
                              metric(srv, "hubmirror_pull_throughs_in_flight"), metric(srv, "hubmirror_store_bytes"))
        if up >= size and running == 0 and store >= store0 + size:
            break
        time.sleep(0.2)
    check(size <= up <= size + 4096, "hubmirror_upstream_bytes_total %r, %d bytes came from upstream" % (up, size))
    check(running == 0, "a pull-through still in flight after it finished")
    check(store >= store0 + size, "hubmirror_store_bytes %r did not grow by the %d-byte file (from %r)"
          % (store, size, store0))
    check(metric(srv, "hubmirror_upstream_errors_total") == 0, "an error counted for a good pull-through")
    # the twin: a pull-through the server refuses (a redirect to the metadata address) is an upstream error
    resp = srv.get(sl.resolve_url(BIG, "main", "bad.bin"), timeout=60)
    check(resp.status == 502, "bad.bin: expected 502, got %r" % resp)
    check(metric(srv, "hubmirror_upstream_errors_total") == 1, "the failed pull-through is not counted")
