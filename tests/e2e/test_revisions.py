"""test_revisions.py - --revision with tags, branches, PR refs and commits;
datasets; tree pagination; unknown revisions."""

import lib
from lib import check

REPO = "org/revs"


def revs_repo():
    """Three commits, each with its own version.txt: v1.0 -> 0, dev and
    refs/pr/1 -> 1, main -> 2."""
    return {"type": "model", "id": REPO, "commits": [
        {"files": {"version.txt": "zero\n", "common.txt": "same\n",
                   "w.bin": {"random": 20000, "seed": 10}}, "tags": ["v1.0"], "refs": []},
        {"files": {"version.txt": "one\n", "common.txt": "same\n",
                   "w.bin": {"random": 20000, "seed": 11}}, "refs": ["dev", "refs/pr/1"]},
        {"files": {"version.txt": "two\n", "common.txt": "same\n",
                   "w.bin": {"random": 20000, "seed": 12}}, "refs": ["main"]},
    ]}


def expect(i):
    return {"version.txt": ["zero\n", "one\n", "two\n"][i].encode(), "common.txt": b"same\n",
            "w.bin": lib.random_bytes(20000, 10 + i)}


def pull_rev(t, emu, rev, index):
    args = ["pull", REPO, "--json"] + (["--revision", rev] if rev is not None else [])
    r = t.ok(*args)
    lib.check_pulled(t, emu, REPO, r.json(), expect(index), commit=lib.commit_id(REPO, index))


def test_revision_default_is_main(t):
    emu = t.emu([revs_repo()])
    pull_rev(t, emu, None, 2)


def test_revision_tag(t):
    emu = t.emu([revs_repo()])
    pull_rev(t, emu, "v1.0", 0)


def test_revision_branch(t):
    emu = t.emu([revs_repo()])
    pull_rev(t, emu, "dev", 1)


def test_revision_pr_ref(t):
    emu = t.emu([revs_repo()])
    pull_rev(t, emu, "refs/pr/1", 1)
    api = [e["raw_path"] for e in emu.log() if e["path"].startswith("/api/")]
    check(api, "no API calls logged")


def test_revision_full_commit(t):
    emu = t.emu([revs_repo()])
    pull_rev(t, emu, lib.commit_id(REPO, 0), 0)


def test_revisions_coexist(t):
    emu = t.emu([revs_repo()])
    pull_rev(t, emu, "v1.0", 0)
    pull_rev(t, emu, "main", 2)
    revs = {r["commit_sha"] for r in t.db("SELECT commit_sha FROM revisions")}
    check(revs == {lib.commit_id(REPO, 0), lib.commit_id(REPO, 2)}, "revisions: %s" % revs)
    for i in (0, 2):
        for data in expect(i).values():
            check(lib.read(t.blob(lib.sha256_bytes(data))) == data, "blob of revision %d" % i)
    lib.check_store_consistent(t.store)


def test_unknown_revision(t):
    emu = t.emu([revs_repo()])
    t.fails("pull", REPO, "--revision", "no-such-branch", words=["revision"])
    t.fails("pull", REPO, "--revision", "0" * 40, words=["revision"])
    check(not emu.file_gets(), "files fetched for an unknown revision")


def test_dataset(t):
    ds = {"type": "dataset", "id": "org/data", "commits": [{"files": {
        "README.md": "# data\n", "data/train.csv": "a,b\n1,2\n",
        "data/train-00000.parquet": {"random": 50000, "seed": 7}}, "refs": ["main"]}]}
    # a model with the same name must not be picked up
    model = {"type": "model", "id": "org/data", "commits": [{"files": {"x.txt": "model\n"}}]}
    emu = t.emu([ds, model])
    r = t.ok("pull", "org/data", "--repo-type", "dataset", "--json")
    j = r.json()
    lib.check_pulled(t, emu, "org/data", j, {
        "README.md": b"# data\n", "data/train.csv": b"a,b\n1,2\n",
        "data/train-00000.parquet": lib.random_bytes(50000, 7)},
        commit=lib.commit_id("org/data", 0))
    check(j.get("repo_type") == "dataset", "repo_type %r" % j.get("repo_type"))
    log = emu.log()
    api = [e["path"] for e in log if e["path"].startswith("/api/") and "resolve-cache" not in e["path"]]
    check(api and all(p.startswith("/api/datasets/") for p in api), "API paths: %s" % api)
    res = [e["path"] for e in log if "/resolve/" in e["path"]]
    check(res and all(p.startswith("/datasets/org/data/resolve/") for p in res),
          "resolve paths: %s" % res)
    rows = t.db("SELECT type, name FROM repos")
    check(rows == [{"type": "dataset", "name": "org/data"}], "repos rows %s" % rows)


def test_tree_pagination(t):
    emu = t.emu(page_size=2)
    r = t.ok("pull", lib.SAMPLE_REPO, "--json")
    lib.check_pulled(t, emu, lib.SAMPLE_REPO, r.json(), lib.sample_files())
    trees = [e for e in emu.log() if "/tree/" in e["path"]]
    check(len(trees) >= 5, "only %d tree pages fetched with page size 2" % len(trees))
    check(any("cursor=" in e["query"] for e in trees), "the Link rel=next cursor was not followed")


def test_tree_pagination_many_files(t):
    files = {"f/%03d.txt" % i: "file %d\n" % i for i in range(120)}
    emu = t.emu([{"type": "model", "id": "org/many", "commits": [{"files": files}]}], page_size=7)
    r = t.ok("pull", "org/many", "--json")
    lib.check_pulled(t, emu, "org/many", r.json(), {k: v.encode() for k, v in files.items()})
