"""test_serve.py - `hubmirror serve` over a store filled by `pull`: the Hub's
API as the official clients use it (repo info, revisions by branch, commit,
HEAD and refs%2Fpr%2F1, tree with and without recursion, Link pagination,
paths-info with form and JSON bodies, refs), files (HEAD/GET headers and
bytes, Range), datasets, Hub-style errors, and mirror chaining (a pull from
the server into a second store)."""

import os
import signal
import socket
from urllib.parse import quote

import lib
from lib import check
import serve_lib as sl
from serve_lib import MODEL, REVS, DATASET, Server, serving


def pointer_size(sha, size):
    return len("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (sha, size))


def commits(repo=REVS):
    return [lib.commit_id(repo, i) for i in range(3)]


def check_siblings(j, expect, what):
    sib = j.get("siblings")
    check(isinstance(sib, list), "%s: siblings %r" % (what, sib))
    names = [s.get("rfilename") for s in sib]
    check(sorted(names) == sorted(expect), "%s: siblings %s, expected %s"
          % (what, sorted(names), sorted(expect)))


def check_file_entry(e, f, what):
    """A tree / paths-info entry against the emulator's description f."""
    check(e.get("type") == "file", "%s: type %r" % (what, e.get("type")))
    check(e.get("size") == f["size"], "%s: size %r, expected %d" % (what, e.get("size"), f["size"]))
    check(e.get("oid") == f["oid"], "%s: oid %r, expected the git blob id %s"
          % (what, e.get("oid"), f["oid"]))
    if f["lfs"]:
        want = {"oid": f["sha256"], "size": f["size"],
                "pointerSize": pointer_size(f["sha256"], f["size"])}
        got = e.get("lfs") or {}
        check({k: got.get(k) for k in want} == want, "%s: lfs %r, expected %r" % (what, got, want))
    else:
        check(not e.get("lfs"), "%s: a regular file with lfs %r" % (what, e.get("lfs")))


def dirs_of(paths):
    out = set()
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            out.add("/".join(parts[:i]))
    return out


@serving()
def test_listen_line_and_signals(t):
    sl.prefill(t)
    srv = Server(t)
    srv.check_works()
    srv.stop(signal.SIGINT)
    try:
        socket.create_connection((srv.host, srv.port), timeout=2).close()
        refused = False
    except OSError:
        refused = True
    check(refused, "port %d still accepts connections after the server exited" % srv.port)
    # a second server on the same store; the decorator stops it with SIGTERM
    srv2 = Server(t)
    srv2.check_works()


def test_cli(t):
    r = t.ok("serve", "--help", store=False)
    for opt in ("--listen", "--upstream", "--offline", "--token-file", "--allow",
                "--forward-token", "--access-log", "--max-connections", "--page-size"):
        check(opt in r.out, "serve --help does not mention %s: %r" % (opt, r))
    for bad in (["--listen", "nonsense"], ["--listen", "127.0.0.1:99999"], ["--page-size", "0"],
                ["--max-connections", "-1"], ["--no-such-option"], ["extra-argument"]):
        t.fails("serve", *bad, rc=2, timeout=10)
    # a port that is taken: a clean error, not a crash or a silent exit 0
    t.ok("rebuild-index")  # an empty store (serve refuses a directory that is not one)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        t.fails("serve", "--listen", "127.0.0.1:%d" % s.getsockname()[1], timeout=10,
                words=["listen", "address", "bind", "in use"])
    finally:
        s.close()


@serving()
def test_api_repo_info(t):
    emu = sl.prefill(t)
    srv = Server(t)
    src = emu.files(MODEL)
    main = sl.main_commit(MODEL)
    j = srv.json("/api/models/" + MODEL)
    check(j.get("id") == MODEL, "id %r" % j.get("id"))
    check(j.get("sha") == main, "sha %r, expected %s" % (j.get("sha"), main))
    check_siblings(j, src, "repo info")

    j = srv.json("/api/models/%s?blobs=true" % MODEL)
    check_siblings(j, src, "repo info with blobs")
    for s in j["siblings"]:
        f = src[s["rfilename"]]
        what = "blobs=true sibling %s" % f["path"]
        check(s.get("size") == f["size"], "%s: size %r" % (what, s.get("size")))
        check(s.get("blobId") == f["oid"], "%s: blobId %r, expected %s" % (what, s.get("blobId"), f["oid"]))
        if f["lfs"]:
            want = {"size": f["size"], "sha256": f["sha256"],
                    "pointerSize": pointer_size(f["sha256"], f["size"])}
            got = s.get("lfs") or {}
            check({k: got.get(k) for k in want} == want, "%s: lfs %r, expected %r" % (what, got, want))
        else:
            check(not s.get("lfs"), "%s: lfs %r on a regular file" % (what, s.get("lfs")))

    j = srv.json("/api/datasets/" + DATASET)
    check(j.get("id") == DATASET and j.get("sha") == lib.commit_id(DATASET, 0),
          "dataset info id/sha: %r %r" % (j.get("id"), j.get("sha")))
    check_siblings(j, sl.dataset_files(), "dataset info")
    # models and datasets are separate namespaces
    sl.check_hub_error(srv.get("/api/models/" + DATASET), 404, "RepoNotFound", "model named like the dataset")
    sl.check_hub_error(srv.get("/api/datasets/" + MODEL), 404, "RepoNotFound", "dataset named like the model")


@serving()
def test_api_revisions(t):
    sl.prefill(t)
    srv = Server(t)
    c = commits()
    cases = [("main", 2), ("HEAD", 2), (c[2], 2), (c[1], 1), ("refs%2Fpr%2F1", 1),
             ("v1.0", 0), (c[0], 0)]
    for rev, i in cases:
        j = srv.json("/api/models/%s/revision/%s" % (REVS, rev))
        check(j.get("id") == REVS, "revision %s: id %r" % (rev, j.get("id")))
        check(j.get("sha") == c[i], "revision %s: sha %r, expected %s" % (rev, j.get("sha"), c[i]))
        check_siblings(j, sl.revs_files(i), "revision %s" % rev)
    # what the JS client sends (it reads sha)
    js = ("expand=pipeline_tag&expand=private&expand=gated&expand=downloads&expand=likes"
          "&expand=lastModified&expand=sha")
    j = srv.json("/api/models/%s/revision/main?%s" % (MODEL, js))
    check(j.get("sha") == sl.main_commit(MODEL), "JS-style revision info: sha %r" % j.get("sha"))
    j = srv.json("/api/datasets/%s/revision/main" % DATASET)
    check(j.get("sha") == lib.commit_id(DATASET, 0), "dataset revision main: %r" % j.get("sha"))
    # not in the store (dev exists upstream but was never pulled; no upstream here)
    for rev in ("nope", "0" * 40, "dev", "refs%2Fpr%2F2"):
        sl.check_hub_error(srv.get("/api/models/%s/revision/%s" % (REVS, rev)), 404,
                           "RevisionNotFound", "revision %s" % rev)


@serving()
def test_api_tree(t):
    emu = sl.prefill(t)
    srv = Server(t)
    c = commits()
    base = "/api/models/%s/tree" % REVS
    files2 = emu.files(REVS, 2)

    def listing(url, expect_files, expect_dirs, files_desc=files2):
        j = srv.json(url)
        check(isinstance(j, list), "%s: not a list: %r" % (url, j))
        paths = [e.get("path") for e in j]
        check(len(paths) == len(set(paths)), "%s: duplicate entries %s" % (url, paths))
        by = {e.get("path"): e for e in j}
        check(set(by) == set(expect_files) | set(expect_dirs),
              "%s: entries %s, expected files %s and directories %s"
              % (url, sorted(by), sorted(expect_files), sorted(expect_dirs)))
        for p in expect_files:
            check_file_entry(by[p], files_desc[p], "%s: %s" % (url, p))
        for d in expect_dirs:
            check(by[d].get("type") == "directory", "%s: %s has type %r" % (url, d, by[d].get("type")))
        return j

    top = ["common.txt", "version.txt", "w.bin"]
    listing(base + "/main", top, ["nested"])
    listing(base + "/main?recursive=false", top, ["nested"])
    listing(base + "/main?recursive=true", list(files2), ["nested", "nested/a"])
    listing(base + "/main?recursive=true&expand=false", list(files2), ["nested", "nested/a"])
    listing(base + "/main/nested", ["nested/c.txt"], ["nested/a"])
    listing(base + "/main/nested?recursive=true", ["nested/c.txt", "nested/a/b.txt"], ["nested/a"])
    listing(base + "/main/nested/a", ["nested/a/b.txt"], [])
    listing(base + "/HEAD", top, ["nested"])
    files1 = emu.files(REVS, 1)
    listing(base + "/refs%2Fpr%2F1?recursive=true", list(files1), ["nested", "nested/a"], files1)
    files0 = emu.files(REVS, 0)
    listing(base + "/%s/nested/a" % c[0], ["nested/a/b.txt"], [], files0)

    src = emu.files(MODEL)
    listing("/api/models/%s/tree/main?recursive=true" % MODEL, list(src), sorted(dirs_of(src)), src)
    listing("/api/models/%s/tree/%s/original" % (MODEL, sl.main_commit(MODEL)),
            ["original/params.json"], [], src)
    ds = emu.files(DATASET, type="dataset")
    listing("/api/datasets/%s/tree/main?recursive=true" % DATASET, list(ds), ["data"], ds)
    listing("/api/datasets/%s/tree/main/data" % DATASET,
            [p for p in ds if p.startswith("data/")], [], ds)

    sl.check_hub_error(srv.get(base + "/main/no-such-dir"), 404, "EntryNotFound", "tree of a missing dir")
    sl.check_hub_error(srv.get(base + "/no-such-rev"), 404, "RevisionNotFound", "tree of a missing rev")
    sl.check_hub_error(srv.get("/api/models/no-org/no-repo/tree/main"), 404, "RepoNotFound",
                       "tree of a missing repo")


@serving()
def test_api_tree_pagination(t):
    emu = sl.prefill(t)
    srv = Server(t, "--page-size", "2")
    src = emu.files(MODEL)
    want = set(src) | dirs_of(src)
    for query in ("?recursive=true", "?recursive=true&expand=false"):
        pages, entries = sl.follow_pages(srv, "/api/models/%s/tree/main%s" % (MODEL, query))
        paths = [e.get("path") for e in entries]
        check(len(paths) == len(set(paths)), "paged tree repeats entries: %s" % paths)
        check(set(paths) == want, "paged tree %s: %s, expected %s" % (query, sorted(paths), sorted(want)))
        check(all(len(p) <= 2 for p in pages), "a page is longer than --page-size 2: %s"
              % [len(p) for p in pages])
        check(len(pages) >= (len(want) + 1) // 2,
              "%d entries came in %d pages of at most 2" % (len(want), len(pages)))
        check(all(len(p) == 2 for p in pages[:-1]), "short page before the last: %s"
              % [len(p) for p in pages])
    # non-recursive, and a sub-directory
    pages, entries = sl.follow_pages(srv, "/api/models/%s/tree/main" % REVS)
    check(sorted(e["path"] for e in entries) == ["common.txt", "nested", "version.txt", "w.bin"],
          "paged non-recursive tree: %s" % sorted(e["path"] for e in entries))
    check(len(pages) == 2, "4 entries in %d pages of 2" % len(pages))
    pages, entries = sl.follow_pages(srv, "/api/models/%s/tree/refs%%2Fpr%%2F1?recursive=true" % REVS)
    check(sorted(e["path"] for e in entries)
          == sorted(set(sl.revs_files(1)) | {"nested", "nested/a"}),
          "paged tree of refs/pr/1: %s" % sorted(e["path"] for e in entries))
    # a sub-directory, paged: the same entries as unpaged
    srv2 = Server(t)
    sub = "/api/models/%s/tree/main/nested?recursive=true" % REVS
    pages, entries = sl.follow_pages(srv, sub)
    whole = srv2.get(sub).json()
    check(entries == whole and len(whole) >= 3 and len(pages) == (len(whole) + 1) // 2,
          "paged tree of a sub-directory: %s in %d pages, unpaged %s" % (entries, len(pages), whole))
    # cursors the server did not hand out
    base = "/api/models/%s/tree/main?recursive=true&cursor=" % MODEL
    for bad in ("abc", "-1", "1e3", "99999999999999", "18446744073709551616"):
        r = srv.get(base + bad)
        check(r.status == 400, "cursor %r: %r" % (bad, r))
    # the default page size (1000) puts everything on one page, without a Link
    r = srv2.get("/api/models/%s/tree/main?recursive=true" % MODEL)
    check(r.status == 200 and len(r.json()) == len(want), "unpaged tree: %r" % r)
    check(not r.h("Link"), "Link header on a complete listing: %r" % r.h("Link"))


@serving()
def test_api_paths_info(t):
    emu = sl.prefill(t)
    srv = Server(t)
    src = emu.files(MODEL)
    main = sl.main_commit(MODEL)
    asked = ["config.json", "model.safetensors", "original", "original/params.json", "no-such-file"]
    want = {"config.json", "model.safetensors", "original", "original/params.json"}

    def check_answer(r, what, expand=True, commit=main, files=src):
        check(r.status == 200, "%s: %r" % (what, r))
        j = r.json()
        check(isinstance(j, list), "%s: not a list: %r" % (what, r))
        by = {e.get("path"): e for e in j}
        check(set(by) == want, "%s: paths %s, expected %s" % (what, sorted(by), sorted(want)))
        for p in want - {"original"}:
            check_file_entry(by[p], files[p], "%s: %s" % (what, p))
            if expand:
                lc = by[p].get("lastCommit") or {}
                check(lc.get("id") == commit, "%s: %s lastCommit %r, expected id %s"
                      % (what, p, lc, commit))
        check(by["original"].get("type") == "directory", "%s: original is %r" % (what, by["original"]))

    for rev in ("main", main, "HEAD"):
        url = "/api/models/%s/paths-info/%s" % (MODEL, rev)
        # the Python client form-encodes expand=True, the JS client sends JSON
        form = [("paths", p) for p in asked] + [("expand", "True")]
        check_answer(srv.post_form(url, form), "form paths-info at %s" % rev)
        check_answer(srv.post_json(url, {"paths": asked, "expand": True}), "JSON paths-info at %s" % rev)
    url = "/api/models/%s/paths-info/main" % MODEL
    check_answer(srv.post_form(url, [("paths", p) for p in asked]), "form without expand", expand=False)
    check_answer(srv.post_json(url, {"paths": asked}), "JSON without expand", expand=False)
    r = srv.post_json(url, {"paths": []})
    check(r.status == 200 and r.json() == [], "paths-info of no paths: %r" % r)

    # refs%2Fpr%2F1 and a dataset
    files1 = emu.files(REVS, 1)
    r = srv.post_json("/api/models/%s/paths-info/refs%%2Fpr%%2F1" % REVS,
                      {"paths": ["version.txt", "w.bin", "nested/a/b.txt"], "expand": True})
    check(r.status == 200, "paths-info at refs%%2Fpr%%2F1: %r" % r)
    by = {e.get("path"): e for e in r.json()}
    check(set(by) == {"version.txt", "w.bin", "nested/a/b.txt"}, "refs/pr/1 paths-info: %r" % r)
    for p, e in by.items():
        check_file_entry(e, files1[p], "refs/pr/1 paths-info %s" % p)
        lc = (e.get("lastCommit") or {}).get("id") or ""
        check(len(lc) == 40 and all(ch in "0123456789abcdef" for ch in lc),
              "refs/pr/1 paths-info %s: lastCommit %r" % (p, e.get("lastCommit")))
    ds = emu.files(DATASET, type="dataset")
    r = srv.post_form("/api/datasets/%s/paths-info/main" % DATASET,
                      [("paths", "data/train-00000.parquet"), ("expand", "true")])
    check(r.status == 200 and len(r.json()) == 1, "dataset paths-info: %r" % r)
    check_file_entry(r.json()[0], ds["data/train-00000.parquet"], "dataset paths-info")

    sl.check_hub_error(srv.post_json("/api/models/%s/paths-info/nope" % MODEL, {"paths": ["config.json"]}),
                       404, "RevisionNotFound", "paths-info at a missing revision")
    sl.check_hub_error(srv.post_json("/api/models/no-org/no-repo/paths-info/main", {"paths": ["a"]}),
                       404, "RepoNotFound", "paths-info of a missing repo")


@serving()
def test_api_refs(t):
    sl.prefill(t)
    srv = Server(t)
    c = commits()
    for q in ("", "?include_prs=1"):
        j = srv.json("/api/models/%s/refs%s" % (REVS, q))
        branches = {b.get("name"): b for b in j.get("branches") or []}
        check("main" in branches, "refs%s: no main branch: %r" % (q, j))
        check(branches["main"].get("ref") == "refs/heads/main"
              and branches["main"].get("targetCommit") == c[2],
              "refs%s: main is %r, expected ref refs/heads/main at %s" % (q, branches["main"], c[2]))
        tagged = {x.get("name"): x for x in (j.get("tags") or []) + (j.get("branches") or [])}
        check((tagged.get("v1.0") or {}).get("targetCommit") == c[0],
              "refs%s: v1.0 should point at %s: %r" % (q, c[0], j))
        check(not any((b.get("ref") or "").startswith("refs/pr/") or (b.get("name") or "").startswith("refs/")
                      for b in j.get("branches") or []),
              "refs%s: a pull request listed as a branch: %r" % (q, j))
    j = srv.json("/api/models/%s/refs?include_prs=1" % REVS)
    prs = {p.get("ref"): p for p in j.get("pullRequests") or []}
    check((prs.get("refs/pr/1") or {}).get("targetCommit") == c[1],
          "include_prs=1: pullRequests should hold refs/pr/1 at %s: %r" % (c[1], j))
    j = srv.json("/api/datasets/%s/refs" % DATASET)
    check([b.get("name") for b in j.get("branches") or []] == ["main"], "dataset refs: %r" % j)
    sl.check_hub_error(srv.get("/api/models/no-org/no-repo/refs"), 404, "RepoNotFound", "refs of a missing repo")


def check_file_response(r, method, data, lfs, commit, what):
    check(r.status == 200, "%s: expected 200: %r" % (what, r))
    check(r.h("X-Repo-Commit") == commit, "%s: X-Repo-Commit %r, expected %s" % (what, r.h("X-Repo-Commit"), commit))
    want = sl.etag_of(data, lfs)
    check(r.h("ETag") == want, "%s: ETag %r, expected %s" % (what, r.h("ETag"), want))
    if lfs:
        check(r.h("X-Linked-Etag") == want, "%s: X-Linked-Etag %r, expected %s" % (what, r.h("X-Linked-Etag"), want))
        check(r.h("X-Linked-Size") == str(len(data)), "%s: X-Linked-Size %r, expected %d"
              % (what, r.h("X-Linked-Size"), len(data)))
    check(r.h("Content-Length") == str(len(data)), "%s: Content-Length %r, expected %d"
          % (what, r.h("Content-Length"), len(data)))
    check((r.h("Accept-Ranges") or "").lower() == "bytes", "%s: Accept-Ranges %r" % (what, r.h("Accept-Ranges")))
    check(not r.h("X-Xet-Hash"), "%s: X-Xet-Hash %r from a mirror without Xet" % (what, r.h("X-Xet-Hash")))
    check("xet" not in (r.h("Content-Type") or ""), "%s: Content-Type %r" % (what, r.h("Content-Type")))
    if method == "GET":
        check(r.body == data, "%s: %d bytes differ from the source (%d bytes)" % (what, len(r.body), len(data)))
    else:
        check(r.body == b"", "%s: HEAD with a body" % what)


@serving()
def test_resolve_headers_and_bytes(t):
    sl.prefill(t)
    srv = Server(t)
    main = sl.main_commit(MODEL)
    for path, data in sorted(lib.sample_files().items()):
        lfs = path in lib.SAMPLE_LFS
        url = sl.resolve_url(MODEL, "main", path)
        for method in ("HEAD", "GET"):
            # the Python client's HEAD sends Accept-Encoding: identity
            r = srv.fetch(method, url, headers={"Accept-Encoding": "identity"})
            check_file_response(r, method, data, lfs, main, "%s %s" % (method, url))
    for path, data in sorted(sl.dataset_files().items()):
        url = sl.resolve_url(DATASET, "main", path, dataset=True)
        for method in ("HEAD", "GET"):
            r = srv.fetch(method, url)
            check_file_response(r, method, data, path.endswith(".parquet"),
                                lib.commit_id(DATASET, 0), "%s %s" % (method, url))


@serving()
def test_resolve_revisions(t):
    sl.prefill(t)
    srv = Server(t)
    c = commits()
    for rev, i in (("main", 2), ("HEAD", 2), (c[2], 2), (c[1], 1), ("refs/pr/1", 1),
                   ("v1.0", 0), (c[0], 0)):
        for path, data in sorted(sl.revs_files(i).items()):
            url = sl.resolve_url(REVS, rev, path)  # refs/pr/1 -> refs%2Fpr%2F1
            r = srv.fetch("GET", url)
            check_file_response(r, "GET", data, path == "w.bin", c[i], "GET %s" % url)
    for rev in ("dev", "nope", "0" * 40):
        sl.check_hub_error(srv.get(sl.resolve_url(REVS, rev, "version.txt")), 404, "RevisionNotFound",
                           "resolve at revision %s" % rev)


@serving()
def test_resolve_ranges(t):
    sl.prefill(t)
    srv = Server(t)
    main = sl.main_commit(MODEL)
    src = lib.sample_files()

    def one(url, data, lfs, spec, lo=None, hi=None, status=206):
        r = srv.fetch("GET", url, headers={"Range": spec})
        what = "GET %s with Range: %s" % (url, spec)
        check(r.status == status, "%s: expected %d: %r" % (what, status, r))
        if status == 416:
            check(r.h("Content-Range") == "bytes */%d" % len(data),
                  "%s: Content-Range %r, expected bytes */%d" % (what, r.h("Content-Range"), len(data)))
            return
        check(r.h("Content-Range") == "bytes %d-%d/%d" % (lo, hi, len(data)),
              "%s: Content-Range %r, expected bytes %d-%d/%d" % (what, r.h("Content-Range"), lo, hi, len(data)))
        check(r.h("Content-Length") == str(hi - lo + 1), "%s: Content-Length %r" % (what, r.h("Content-Length")))
        check(r.body == data[lo:hi + 1], "%s: wrong bytes (%d)" % (what, len(r.body)))
        # the JS client probes with bytes=0-0 and needs the ETag and commit on that answer
        check(r.h("ETag") == sl.etag_of(data, lfs), "%s: ETag %r" % (what, r.h("ETag")))
        check(r.h("X-Repo-Commit") == main or url.startswith("/datasets/"),
              "%s: X-Repo-Commit %r" % (what, r.h("X-Repo-Commit")))

    for path in ("model.safetensors", "config.json"):
        data = src[path]
        n = len(data)
        lfs = path in lib.SAMPLE_LFS
        url = sl.resolve_url(MODEL, "main", path)
        one(url, data, lfs, "bytes=0-0", 0, 0)
        one(url, data, lfs, "bytes=0-9", 0, 9)
        one(url, data, lfs, "bytes=100-199", 100, 199)
        one(url, data, lfs, "bytes=100-", 100, n - 1)
        one(url, data, lfs, "bytes=-50", n - 50, n - 1)
        one(url, data, lfs, "bytes=-1", n - 1, n - 1)
        one(url, data, lfs, "bytes=%d-" % (n - 1), n - 1, n - 1)
        one(url, data, lfs, "bytes=0-%d" % (n + 1000), 0, n - 1)       # end past the size
        one(url, data, lfs, "bytes=-%d" % (n + 10), 0, n - 1)          # suffix longer than the file
        one(url, data, lfs, "bytes=%d-" % n, status=416)
        one(url, data, lfs, "bytes=%d-%d" % (n, n + 5), status=416)
        one(url, data, lfs, "bytes=99999999999-", status=416)
    # a range that is as big as the file is still a 206
    data = src["config.json"]
    one(sl.resolve_url(MODEL, "main", "config.json"), data, False, "bytes=0-%d" % (len(data) - 1),
        0, len(data) - 1)
    ds = sl.dataset_files()["data/train-00000.parquet"]
    one(sl.resolve_url(DATASET, "main", "data/train-00000.parquet", dataset=True), ds, True,
        "bytes=1000-1999", 1000, 1999)
    # HEAD with a Range: no body either way
    r = srv.fetch("HEAD", sl.resolve_url(MODEL, "main", "config.json"), headers={"Range": "bytes=0-0"})
    check(r.status in (200, 206) and r.body == b"", "HEAD with Range: %r" % r)


@serving()
def test_errors(t):
    sl.prefill(t)
    srv = Server(t)
    m = MODEL
    cases = [
        ("GET", "/api/models/no-org/no-repo", "RepoNotFound"),
        ("GET", "/api/datasets/no-org/no-repo", "RepoNotFound"),
        ("GET", "/api/models/no-org/no-repo/revision/main", "RepoNotFound"),
        ("GET", "/api/models/%s/revision/nope" % m, "RevisionNotFound"),
        ("GET", "/api/models/%s/tree/nope" % m, "RevisionNotFound"),
        ("GET", "/api/models/%s/tree/main/nope" % m, "EntryNotFound"),
        ("GET", "/%s/resolve/main/nope.txt" % m, "EntryNotFound"),
        ("GET", "/%s/resolve/main/original" % m, "EntryNotFound"),          # a directory
        ("GET", "/%s/resolve/main/original/nope.json" % m, "EntryNotFound"),
        ("GET", "/%s/resolve/nope/config.json" % m, "RevisionNotFound"),
        ("GET", "/%s/resolve/%s/config.json" % (m, "0" * 40), "RevisionNotFound"),
        ("GET", "/no-org/no-repo/resolve/main/config.json", "RepoNotFound"),
        ("GET", "/datasets/%s/resolve/main/config.json" % m, "RepoNotFound"),
        ("GET", "/%s/resolve/main/README.md" % DATASET, "RepoNotFound"),      # a dataset asked as a model
    ]
    for method, url, code in cases:
        sl.check_hub_error(srv.req(method, url), 404, code, "%s %s" % (method, url))
        r = srv.req("HEAD", url) if "/resolve/" in url else None
        if r is not None:
            check(r.status == 404 and r.h("X-Error-Code") == code,
                  "HEAD %s: expected 404 with X-Error-Code %s: %r" % (url, code, r))
    # a missing file of a known revision still says which commit was looked at
    r = srv.get("/%s/resolve/main/nope.txt" % m)
    check(r.h("X-Repo-Commit") in (None, sl.main_commit(MODEL)), "X-Repo-Commit %r on EntryNotFound"
          % r.h("X-Repo-Commit"))
    # bad paths: 400, and never the file the path would reach after normalisation
    config = lib.sample_files()["config.json"]
    for url in ("/%s/resolve/main/../config.json" % m,
                "/%s/resolve/main/%%2e%%2e/config.json" % m,
                "/%s/resolve/main/original/../config.json" % m,
                "/%s/resolve/main/original/%%2e%%2e/config.json" % m,
                "/%s/resolve/main/original/..%%2fconfig.json" % m):
        r = srv.get(url)
        check(r.status == 400, "GET %s: expected 400 for a bad path: %r" % (url, r))
        check(config not in r.body, "GET %s: served config.json" % url)
    srv.check_works()


@serving(timeout=60)
def test_mirror_chaining(t):
    emu = sl.prefill(t)
    srv = Server(t)
    emu.reset_log()
    b = os.path.join(t.tmp, "store-b")
    jobs = [((MODEL,), lib.sample_files(), sl.main_commit(MODEL)),
            ((REVS,), sl.revs_files(2), lib.commit_id(REVS, 2)),
            ((REVS, "--revision", "refs/pr/1"), sl.revs_files(1), lib.commit_id(REVS, 1)),
            ((DATASET, "--repo-type", "dataset"), sl.dataset_files(), lib.commit_id(DATASET, 0))]
    for args, expect, commit in jobs:
        r = t.hm("pull", *args, "--json", store=b, endpoint=srv.url, timeout=60)
        check(r.rc == 0, "pull from the server failed: %r\n  server stderr: %s" % (r, srv.stderr()[-1500:]))
        j = r.json()
        check(j.get("revision") == commit, "%s: revision %r, expected %s" % (args, j.get("revision"), commit))
        got = lib.files_by_path(j)
        check(set(got) == set(expect), "%s: files %s, expected %s" % (args, sorted(got), sorted(expect)))
        for p, data in expect.items():
            sha = lib.sha256_bytes(data)
            check(got[p].get("sha256") == sha, "%s %s: sha256 %r" % (args, p, got[p].get("sha256")))
            bp = lib.blob_path(b, sha)
            check(os.path.exists(bp) and lib.read(bp) == data, "%s %s: blob in the second store differs" % (args, p))
    t.ok("verify", store=b)
    lib.check_store_consistent(b)
    # the second store's index names the same commits and the same blobs
    q = "SELECT r.type, r.name, v.commit_sha FROM revisions v JOIN repos r ON r.id = v.repo_id"
    mine = sorted(tuple(x.values()) for x in lib.db_query(b, q))
    theirs = sorted(tuple(x.values()) for x in lib.db_query(t.store, q))
    check(set(mine) <= set(theirs), "revisions in the chained store %s not in the source %s" % (mine, theirs))
    q = "SELECT f.path, f.sha256, f.git_oid, f.lfs FROM files f JOIN revisions v ON v.id = f.revision_id WHERE v.commit_sha = ?"
    main = sl.main_commit(MODEL)
    check(sorted(map(lambda x: tuple(x.values()), lib.db_query(b, q, (main,))))
          == sorted(map(lambda x: tuple(x.values()), lib.db_query(t.store, q, (main,)))),
          "files rows (path, sha256, git_oid, lfs) of %s differ between the stores" % MODEL)
    check(not emu.log(), "the chained pull reached the origin hub: %s"
          % [(e["method"], e["path"]) for e in emu.log()][:5])
    # a second pull from the server downloads nothing
    r = t.hm("pull", MODEL, "--json", store=b, endpoint=srv.url)
    check(r.rc == 0 and not any(f.get("downloaded") for f in r.json().get("files", [])),
          "second pull from the server downloaded again: %r" % r)


ODD = "demo-org/odd-names"
ODD_FILES = {"dir with space/file name.txt": "space\n", "ünïcödé/данные.json": '{"u": 1}\n',
             "hash#1.txt": "hash\n", "q?mark.txt": "q\n", "pct%20.txt": "pct\n",
             "plus+and&amp.txt": "amp\n", "semi;colon=eq.txt": "semi\n",
             "weights/big model.safetensors": {"random": 30000, "seed": 5},
             "empty.txt": "", "sub/empty.bin": ""}


def odd_expect():
    return {p: (v.encode() if isinstance(v, str) else lib.random_bytes(30000, 5)) for p, v in ODD_FILES.items()}


@serving()
def test_names_needing_quotes_and_empty_files(t):
    repo = {"type": "model", "id": ODD, "commits": [
        {"files": {"v.txt": "feature\n"}, "refs": ["feature/x"]},
        {"files": ODD_FILES, "refs": ["main"]}]}
    emu = t.emu([repo])
    t.ok("pull", ODD, "-q")
    t.ok("pull", ODD, "--revision", "feature/x", "-q")
    srv = Server(t)
    want = odd_expect()
    main = lib.commit_id(ODD, 1)
    desc = emu.files(ODD)
    for p, data in want.items():
        url = sl.resolve_url(ODD, "main", p)
        r = srv.fetch("GET", url)
        check(r.status == 200 and r.body == data, "GET %s (%r): %r" % (url, p, r))
        check(r.h("ETag") == sl.etag_of(data, desc[p]["lfs"]), "GET %s: ETag %r" % (url, r.h("ETag")))
        r = srv.fetch("HEAD", url)
        check(r.status == 200 and r.h("Content-Length") == str(len(data)), "HEAD %s: %r" % (url, r))
    # an empty file has nothing to range over
    r = srv.get(sl.resolve_url(ODD, "main", "empty.txt"), headers={"Range": "bytes=0-0"})
    check(r.status in (200, 416) and r.body == b"", "Range bytes=0-0 of an empty file: %r" % r)
    # listings name the files exactly
    j = srv.json("/api/models/%s/tree/main?recursive=true" % ODD)
    files = {e["path"]: e for e in j if e.get("type") == "file"}
    check(set(files) == set(want), "tree of odd names: %s" % sorted(files))
    for p in want:
        check_file_entry(files[p], desc[p], "tree entry %r" % p)
    j = srv.json("/api/models/%s/tree/main/%s" % (ODD, quote("dir with space")))
    check([e["path"] for e in j] == ["dir with space/file name.txt"], "tree of 'dir with space': %s" % j)
    r = srv.post_form("/api/models/%s/paths-info/main" % ODD, [("paths", p) for p in want])
    check(r.status == 200 and {e["path"] for e in r.json()} == set(want), "form paths-info of odd names: %r" % r)
    r = srv.post_json("/api/models/%s/paths-info/main" % ODD, {"paths": list(want)})
    check(r.status == 200 and {e["path"] for e in r.json()} == set(want), "JSON paths-info of odd names: %r" % r)
    # a branch with a slash, quoted like refs%2Fpr%2F1
    j = srv.json("/api/models/%s/revision/feature%%2Fx" % ODD)
    check(j.get("sha") == lib.commit_id(ODD, 0), "revision feature%%2Fx: %r" % j.get("sha"))
    r = srv.get(sl.resolve_url(ODD, "feature/x", "v.txt"))
    check(r.status == 200 and r.body == b"feature\n", "resolve at feature%%2Fx: %r" % r)
    # and a pull from the server gets them all back
    b = os.path.join(t.tmp, "store-b")
    r = t.hm("pull", ODD, "--json", store=b, endpoint=srv.url)
    check(r.rc == 0, "pull of odd names from the server: %r" % r)
    got = {p: f.get("sha256") for p, f in lib.files_by_path(r.json()).items()}
    check(got == {p: lib.sha256_bytes(d) for p, d in want.items()}, "odd names via the server: %s" % got)
    check(r.json().get("revision") == main, "revision %r" % r.json().get("revision"))
