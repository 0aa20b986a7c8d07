"""test_pull.py - pulling the tiny-llama sample: store layout, index, redirects,
no-op second pull, include/exclude, endpoint from the environment."""

import lib
from lib import check, SAMPLE_REPO


def pull_json(t, *extra, repo=SAMPLE_REPO):
    return t.ok("pull", repo, "--json", *extra).json()


def test_pull_sample(t):
    emu = t.emu()
    j = pull_json(t)
    src = lib.sample_files()
    main = emu.repo(SAMPLE_REPO)["branches"]["main"]
    lib.check_pulled(t, emu, SAMPLE_REPO, j, src, commit=main)
    check(j.get("repo_type") == "model", "repo_type %r" % j.get("repo_type"))
    files = lib.files_by_path(j)
    for p, f in files.items():
        check(f.get("lfs") is (p in lib.SAMPLE_LFS), "%s: lfs %r" % (p, f.get("lfs")))
        check(f.get("downloaded") is True, "%s: downloaded %r on a first pull" % (p, f.get("downloaded")))
    total = sum(len(d) for d in src.values())
    check(isinstance(j.get("bytes_downloaded"), int) and j["bytes_downloaded"] >= total,
          "bytes_downloaded %r < %d" % (j.get("bytes_downloaded"), total))

    log = emu.log()
    for p, data in src.items():
        gets = emu.file_gets(log, p)
        check(gets, "no file GET for %s" % p)
        want_host = "cdn" if p in lib.SAMPLE_LFS else "api"
        for e in gets:
            check(e["host"] == want_host, "%s fetched from %s (%s)" % (p, e["host"], e["path"]))
        served = emu.bytes_served(p, log)
        check(len(data) <= served <= len(data) + 4096,
              "%s: %d bytes served for a %d-byte file" % (p, served, len(data)))
    # the non-LFS files came through the relative redirect, the LFS ones through the absolute one
    resolve = [e for e in log if "/resolve/" in e["path"] and e["method"] == "GET"]
    check(any(e["status"] == 307 for e in resolve), "no relative 307 redirect was followed")
    check(any(e["status"] == 302 for e in resolve), "no 302 to the CDN was followed")
    check(all(e["status"] < 400 for e in log), "error responses: %s"
          % [(e["path"], e["status"]) for e in log if e["status"] >= 400])


def test_index_rows(t):
    emu = t.emu()
    pull_json(t)
    src = lib.sample_files()
    served = emu.files(SAMPLE_REPO)
    main = emu.repo(SAMPLE_REPO)["branches"]["main"]
    repos = t.db("SELECT type, name FROM repos")
    check(repos == [{"type": "model", "name": SAMPLE_REPO}], "repos rows: %s" % repos)
    revs = t.db("SELECT id, commit_sha FROM revisions")
    check([r["commit_sha"] for r in revs] == [main], "revisions rows: %s" % revs)
    rows = t.db("SELECT path, size, sha256, git_oid, lfs FROM files WHERE revision_id = ?",
                (revs[0]["id"],))
    by = {r["path"]: r for r in rows}
    check(set(by) == set(src), "files rows: %s" % sorted(by))
    for p, data in src.items():
        r = by[p]
        check(r["size"] == len(data) and r["sha256"] == lib.sha256_bytes(data),
              "%s: row %s" % (p, r))
        check(bool(r["lfs"]) == (p in lib.SAMPLE_LFS), "%s: lfs column %r" % (p, r["lfs"]))
        check(r["git_oid"] == served[p]["oid"],
              "%s: git_oid %r, the hub's tree oid is %s" % (p, r["git_oid"], served[p]["oid"]))
    blobs = {r["sha256"]: r["size"] for r in t.db("SELECT sha256, size FROM blobs")}
    for data in src.values():
        check(blobs.get(lib.sha256_bytes(data)) == len(data), "blobs row missing/wrong")
    lib.check_store_consistent(t.store)
    dl = t.db("SELECT * FROM downloads")
    check({r["path"] for r in dl if r["result"] == "ok"} == set(src),
          "downloads rows with result ok: %s" % sorted({r["path"] for r in dl}))
    for r in dl:
        check(r["repo"] == SAMPLE_REPO, "downloads.repo %r" % r["repo"])
        if r["result"] == "ok":
            check(r["bytes"] >= r["size"] == len(src[r["path"]]), "downloads row %s" % r)
            check(r["connections"] >= 1 and r["seconds"] >= 0, "downloads row %s" % r)


def test_second_pull_downloads_nothing(t):
    emu = t.emu()
    pull_json(t)
    emu.reset_log()
    j = pull_json(t)
    for f in j["files"]:
        check(f.get("downloaded") is False, "%s downloaded again" % f["path"])
    check(j.get("bytes_downloaded") == 0, "bytes_downloaded %r" % j.get("bytes_downloaded"))
    gets = emu.file_gets()
    check(not gets, "second pull fetched files: %s" % [e["path"] for e in gets])
    check(len(j["files"]) == len(lib.sample_files()), "second pull lists %d files" % len(j["files"]))


def test_include_exclude(t):
    emu = t.emu()
    j = pull_json(t, "--include", "*.safetensors", "--include", "config.json")
    got = sorted(lib.files_by_path(j))
    check(got == ["config.json", "model.safetensors"], "--include gave %s" % got)
    fetched = {e.get("file") for e in emu.file_gets()}
    check(fetched == {"config.json", "model.safetensors"}, "fetched %s" % sorted(fetched))

    t.store = t.store + "-2"
    emu.reset_log()
    j = pull_json(t, "--exclude", "*.safetensors", "--exclude", "tokenizer*")
    got = set(lib.files_by_path(j))
    want = {p for p in lib.sample_files()
            if not p.endswith(".safetensors") and not p.startswith("tokenizer")}
    check(got == want, "--exclude gave %s, expected %s" % (sorted(got), sorted(want)))
    fetched = {e.get("file") for e in emu.file_gets()}
    check("model.safetensors" not in fetched and "tokenizer.json" not in fetched,
          "excluded files were fetched: %s" % sorted(fetched))


def test_endpoint_from_env(t):
    emu = t.emu()
    r = t.hm("pull", SAMPLE_REPO, "--json", endpoint=False, env={"HF_ENDPOINT": emu.url})
    check(r.rc == 0, "HF_ENDPOINT not used: %r" % r)
    check(len(r.json()["files"]) == len(lib.sample_files()), "files: %s" % r.out)


def test_endpoint_trailing_slash(t):
    emu = t.emu()
    r = t.hm("pull", SAMPLE_REPO, "--json", endpoint=emu.url + "/")
    check(r.rc == 0, "endpoint with a trailing slash: %r" % r)
    bad = [e["raw_path"] for e in emu.log() if "//" in e["raw_path"]]
    check(not bad, "requests with '//' in the path: %s" % bad)


def test_ref_moves_dedup(t):
    """main moves to a commit where one file changed: the second pull records
    the new revision and fetches only that file."""
    src = lib.sample_files()
    repo = {"type": "model", "id": "org/moving", "commits": [
        {"dir": lib.sample_dir(), "refs": ["main"]},
        {"dir": lib.sample_dir(), "files": {"README.md": "# changed\n"}}]}
    emu = t.emu([repo])
    c0, c1 = lib.commit_id("org/moving", 0), lib.commit_id("org/moving", 1)
    j = pull_json(t, repo="org/moving")
    check(j["revision"] == c0, "first pull revision %s" % j["revision"])
    emu.set_ref("org/moving", "main", 1)
    emu.reset_log()
    j = pull_json(t, repo="org/moving")
    check(j["revision"] == c1, "after the ref moved, revision %s (want %s)" % (j["revision"], c1))
    fetched = sorted(e.get("file") for e in emu.file_gets())
    check(fetched == ["README.md"], "second pull fetched %s, expected only README.md" % fetched)
    f = lib.files_by_path(j)
    check(f["README.md"]["downloaded"] is True and f["model.safetensors"]["downloaded"] is False,
          "downloaded flags: %s" % {p: x["downloaded"] for p, x in f.items()})
    check(lib.read(t.blob(lib.sha256_bytes(b"# changed\n"))) == b"# changed\n", "new README blob")
    check(lib.read(t.blob(lib.sha256_bytes(src["README.md"]))) == src["README.md"], "old README blob")
    revs = sorted(r["commit_sha"] for r in t.db("SELECT commit_sha FROM revisions"))
    check(revs == sorted([c0, c1]), "revisions: %s" % revs)


def test_connections_option(t):
    emu = t.emu()
    j = pull_json(t, "--connections", "4")
    lib.check_pulled(t, emu, SAMPLE_REPO, j, lib.sample_files())
