"""test_store.py - verify (and --repair), checkout in both layouts, ls, rm + gc,
stats, and usage errors."""

import json
import os
import stat

import lib
from lib import check, SAMPLE_REPO


def pulled(t, repos=None):
    emu = t.emu(repos)
    r = t.ok("pull", SAMPLE_REPO, "--json")
    return emu, r.json()


def make_writable_and_flip(path, offset):
    os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_verify_clean(t):
    pulled(t)
    t.ok("verify")
    t.ok("verify", SAMPLE_REPO)


def test_verify_detects_corrupt_blob(t):
    emu, j = pulled(t)
    sha = lib.files_by_path(j)["model.safetensors"]["sha256"]
    make_writable_and_flip(t.blob(sha), 1000)
    r = t.hm("verify")
    check(r.rc == 1, "verify of a corrupt blob should exit 1: %r" % r)
    check("model.safetensors" in r.text, "verify should name model.safetensors: %r" % r)
    check("README.md" not in r.text, "verify names an intact file: %r" % r)
    r = t.hm("verify", SAMPLE_REPO)
    check(r.rc == 1 and "model.safetensors" in r.text, "verify REPO: %r" % r)


def test_verify_detects_missing_blob(t):
    emu, j = pulled(t)
    sha = lib.files_by_path(j)["README.md"]["sha256"]
    os.unlink(t.blob(sha))
    r = t.hm("verify")
    check(r.rc == 1, "verify of a missing blob should exit 1: %r" % r)
    check("README.md" in r.text, "verify should name README.md: %r" % r)


def test_verify_detects_truncated_blob(t):
    emu, j = pulled(t)
    sha = lib.files_by_path(j)["tokenizer.json"]["sha256"]
    p = t.blob(sha)
    os.chmod(p, 0o644)
    os.truncate(p, 100)
    r = t.hm("verify")
    check(r.rc == 1 and "tokenizer.json" in r.text, "truncated blob: %r" % r)


def test_verify_json(t):
    emu, j = pulled(t)
    sha = lib.files_by_path(j)["config.json"]["sha256"]
    make_writable_and_flip(t.blob(sha), 3)
    r = t.hm("verify", "--json")
    check(r.rc == 1, "verify --json of a corrupt blob: %r" % r)
    r.json()
    check("config.json" in r.out, "verify --json should name config.json: %r" % r)


def test_verify_repair(t):
    emu, j = pulled(t)
    src = lib.sample_files()
    files = lib.files_by_path(j)
    make_writable_and_flip(t.blob(files["model.safetensors"]["sha256"]), 5000)
    os.unlink(t.blob(files["README.md"]["sha256"]))
    r = t.hm("verify", "--repair", endpoint=emu.url)
    if r.rc != 0:  # --endpoint may only be known to pull; the store may remember it
        r = t.hm("verify", "--repair", endpoint=False, env={"HF_ENDPOINT": emu.url})
    check(r.rc == 0, "verify --repair should fix and exit 0: %r" % r)
    for p in ("model.safetensors", "README.md"):
        b = t.blob(files[p]["sha256"])
        check(os.path.exists(b) and lib.read(b) == src[p], "%s not repaired" % p)
        check(os.stat(b).st_mode & 0o222 == 0, "repaired blob %s is writable" % p)
    t.ok("verify")
    lib.check_store_consistent(t.store)


def test_checkout_files(t):
    emu, j = pulled(t)
    dest = os.path.join(t.tmp, "out")
    t.ok("checkout", SAMPLE_REPO, "--to", dest)
    src = lib.sample_files()
    got = {}
    for d, _, names in os.walk(dest):
        for n in names:
            p = os.path.join(d, n)
            got[os.path.relpath(p, dest)] = lib.read(p)
    check(set(got) == set(src), "checkout files: missing %s, extra %s"
          % (sorted(set(src) - set(got)), sorted(set(got) - set(src))))
    for p in src:
        check(got[p] == src[p], "%s differs after checkout" % p)
    # a checkout must not be a door into the store: writing it must not change blobs
    t.ok("verify")


def test_checkout_files_layout_explicit(t):
    pulled(t)
    dest = os.path.join(t.tmp, "out")
    t.ok("checkout", SAMPLE_REPO, "--to", dest, "--layout", "files")
    check(lib.read(os.path.join(dest, "original", "params.json"))
          == lib.sample_files()["original/params.json"], "original/params.json")


def test_checkout_revision(t):
    repo = {"type": "model", "id": "org/two", "commits": [
        {"files": {"v.txt": "old\n"}, "tags": ["v1.0"]},
        {"files": {"v.txt": "new\n"}, "refs": ["main"]}]}
    t.emu([repo])
    t.ok("pull", "org/two", "--revision", "v1.0")
    t.ok("pull", "org/two")
    for rev, want in (("v1.0", b"old\n"), (lib.commit_id("org/two", 0), b"old\n"),
                      ("main", b"new\n")):
        dest = os.path.join(t.tmp, "out-" + rev[:8])
        t.ok("checkout", "org/two", "--revision", rev, "--to", dest)
        check(lib.read(os.path.join(dest, "v.txt")) == want, "checkout --revision %s" % rev)
    t.fails("checkout", "org/two", "--revision", "nope", "--to", os.path.join(t.tmp, "x"),
            words=["revision", "not found"])


def test_checkout_hf_cache(t):
    emu, j = pulled(t)
    dest = os.path.join(t.tmp, "hub")
    t.ok("checkout", SAMPLE_REPO, "--to", dest, "--layout", "hf-cache")
    root = os.path.join(dest, "models--demo-org--tiny-llama")
    check(os.path.isdir(root), "no %s (have %s)" % (root, os.listdir(dest) if os.path.isdir(dest) else None))
    commit = emu.repo(SAMPLE_REPO)["branches"]["main"]
    ref = os.path.join(root, "refs", "main")
    check(os.path.isfile(ref), "no refs/main")
    check(lib.read(ref).decode().strip() == commit, "refs/main holds %r" % lib.read(ref))
    served = emu.files(SAMPLE_REPO)
    src = lib.sample_files()
    snap = os.path.join(root, "snapshots", commit)
    for p, data in src.items():
        link = os.path.join(snap, p)
        check(os.path.islink(link), "snapshots/%s/%s is not a symlink" % (commit[:8], p))
        target = os.readlink(link)
        check(not os.path.isabs(target), "%s links to an absolute path %s" % (p, target))
        check(lib.read(link) == data, "%s: symlink content differs" % p)
        real = os.path.realpath(link)
        check(os.path.dirname(real) == os.path.realpath(os.path.join(root, "blobs")),
              "%s resolves to %s, not into blobs/" % (p, real))
        want = served[p]["sha256"] if served[p]["lfs"] else served[p]["git_oid"]
        check(os.path.basename(real) == want,
              "%s: blob named %s, expected %s (%s)" % (p, os.path.basename(real), want,
                                                       "sha256" if served[p]["lfs"] else "git oid"))


def test_checkout_hf_cache_readable_by_layout_rules(t):
    """What huggingface_hub's offline mode does: refs/main -> snapshots/<commit>/<path>."""
    pulled(t)
    dest = os.path.join(t.tmp, "hub")
    t.ok("checkout", SAMPLE_REPO, "--to", dest, "--layout", "hf-cache")
    root = os.path.join(dest, "models--demo-org--tiny-llama")
    commit = lib.read(os.path.join(root, "refs", "main")).decode()
    check(len(commit) == 40 and "\n" not in commit, "refs/main must be exactly the commit: %r" % commit)
    cfg = json.loads(lib.read(os.path.join(root, "snapshots", commit, "config.json")))
    check(cfg["architectures"] == ["LlamaForCausalLM"], "config.json via the cache")


def test_ls(t):
    emu, j = pulled(t)
    r = t.ok("ls")
    check(SAMPLE_REPO in r.out, "ls does not list the repo: %r" % r)
    r = t.ok("ls", SAMPLE_REPO)
    check(j["revision"][:7] in r.out, "ls REPO does not show the commit: %r" % r)
    r = t.ok("ls", "--json")
    check(SAMPLE_REPO in json.dumps(r.json()), "ls --json: %r" % r)
    r = t.ok("ls", SAMPLE_REPO, "--json")
    check(j["revision"][:7] in json.dumps(r.json()), "ls REPO --json: %r" % r)


def test_ls_unknown_repo(t):
    pulled(t)
    t.fails("ls", "org/never-pulled", words=["not found"])


def test_rm_and_gc(t):
    src = lib.sample_files()
    # a second repo shares README.md's content with the sample
    other = {"type": "model", "id": "org/other", "commits": [{"files": {
        "README.md": {"b64": __import__("base64").b64encode(src["README.md"]).decode()},
        "only.txt": "only here\n"}}]}
    emu = t.emu([lib.sample_repo(), other])
    t.ok("pull", SAMPLE_REPO)
    t.ok("pull", "org/other")
    t.ok("rm", SAMPLE_REPO)
    r = t.ok("ls")
    check(SAMPLE_REPO not in r.out and "org/other" in r.out, "ls after rm: %r" % r)
    check(os.path.exists(t.blob(lib.sha256_bytes(src["model.safetensors"]))),
          "rm removed a blob before gc (blobs stay until gc)")
    t.ok("gc")
    for p, data in src.items():
        exists = os.path.exists(t.blob(lib.sha256_bytes(data)))
        if p == "README.md":
            check(exists, "gc removed README.md's blob still used by org/other")
        else:
            check(not exists, "gc left %s's blob" % p)
    check(os.path.exists(t.blob(lib.sha256_bytes(b"only here\n"))), "gc removed a live blob")
    shas = {r["sha256"] for r in t.db("SELECT sha256 FROM blobs")}
    check(lib.sha256_bytes(src["model.safetensors"]) not in shas, "gc left the blobs row")
    lib.check_store_consistent(t.store)
    t.ok("verify")
    t.fails("rm", SAMPLE_REPO, words=["not found"])


def test_rm_revision(t):
    repo = {"type": "model", "id": "org/two", "commits": [
        {"files": {"v.txt": "old\n"}, "tags": ["v1.0"]},
        {"files": {"v.txt": "new\n"}, "refs": ["main"]}]}
    t.emu([repo])
    t.ok("pull", "org/two", "--revision", "v1.0")
    t.ok("pull", "org/two")
    t.ok("rm", "org/two", "--revision", lib.commit_id("org/two", 0))
    t.ok("gc")
    check(not os.path.exists(t.blob(lib.sha256_bytes(b"old\n"))), "old revision's blob left")
    check(os.path.exists(t.blob(lib.sha256_bytes(b"new\n"))), "current blob removed")
    revs = [r["commit_sha"] for r in t.db("SELECT commit_sha FROM revisions")]
    check(revs == [lib.commit_id("org/two", 1)], "revisions after rm --revision: %s" % revs)


def test_stats_json(t):
    emu, j = pulled(t)
    src = lib.sample_files()
    r = t.ok("stats", "--json")
    s = r.json()
    total = s.get("overall") or {}
    check(total.get("count") == len(src), "stats overall.count %r, pulled %d" % (total.get("count"), len(src)))
    check(total.get("bytes") == sum(len(d) for d in src.values()),
          "stats overall.bytes %r, pulled %d" % (total.get("bytes"), sum(len(d) for d in src.values())))
    repos = s.get("by_repo") or []
    mine = [x for x in repos if SAMPLE_REPO in str(x.get("repo"))]
    check(len(mine) == 1, "stats repos: %s" % repos)
    check(mine[0].get("bytes") == total["bytes"], "stats repo bytes %r" % mine[0].get("bytes"))
    r = t.ok("stats")
    check(r.out.strip(), "stats prints nothing")


def test_usage_errors(t):
    for args in (["frobnicate"], ["pull"], ["pull", "--no-such-option", SAMPLE_REPO],
                 ["pull", SAMPLE_REPO, "--connections"], ["checkout", SAMPLE_REPO],
                 ["pull", SAMPLE_REPO, "--repo-type", "space-station"], []):
        r = t.hm(*args, store=bool(args), endpoint=False)
        check(r.rc == 2, "expected exit 2 for %s: %r" % (args, r))
        check(r.err.strip(), "no message on stderr for %s" % args)


def test_help(t):
    r = t.hm("--help", store=False, endpoint=False)
    check(r.rc == 0 and "pull" in r.out, "--help: %r" % r)
    r = t.hm("pull", "--help", store=False, endpoint=False)
    check(r.rc == 0 and "--revision" in r.out, "pull --help: %r" % r)
