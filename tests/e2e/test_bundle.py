"""test_bundle.py - hubmirror export / import: offline bundles, round trips in
every format, and a failing twin for each way a bundle can be hostile or
broken (each must leave the destination store without the revision)."""

import io
import json
import os
import subprocess
import tarfile

import lib
from lib import check, SAMPLE_REPO

MANIFEST = "hubmirror-bundle.json"


def pulled(t, repos=None):
    emu = t.emu(repos)
    t.ok("pull", SAMPLE_REPO if repos is None else repos[0]["id"])
    return emu


def exported(t, name="a.tar", *repos):
    pulled(t)
    out = os.path.join(t.tmp, name)
    t.ok("export", *(repos or (SAMPLE_REPO,)), "-o", out)
    return out


def dest(t, name="dest"):
    return os.path.join(t.tmp, name)


def revision_view(store, repo=SAMPLE_REPO):
    """What a store says about a repo: {commit: (refs, files)}."""
    out = {}
    for r in lib.db_query(store, "SELECT v.id, v.commit_sha FROM revisions v JOIN repos p ON p.id = v.repo_id"
                          " WHERE p.name = ?", (repo,)):
        files = sorted((f["path"], f["size"], f["sha256"], f["git_oid"], f["lfs"]) for f in lib.db_query(
            store, "SELECT path, size, sha256, git_oid, lfs FROM files WHERE revision_id = ?", (r["id"],)))
        refs = sorted(x["name"] for x in lib.db_query(
            store, "SELECT name FROM refs WHERE commit_sha = ?", (r["commit_sha"],)))
        out[r["commit_sha"]] = (refs, files)
    return out


def check_same(t, store, repo=SAMPLE_REPO):
    want, got = revision_view(t.store, repo), revision_view(store, repo)
    check(want and got == want, "imported revisions differ:\n  source %s\n  import %s" % (want, got))
    for _, files in want.values():
        for f in files:
            a, b = lib.blob_path(t.store, f[2]), lib.blob_path(store, f[2])
            check(os.path.exists(b) and lib.read(a) == lib.read(b), "blob of %s differs after import" % f[0])
    lib.check_store_consistent(store)
    r = t.ok("verify", store=store)
    r = t.ok("ls", repo, "--json", store=store)
    check(r.json()["revision"] == t.ok("ls", repo, "--json").json()["revision"], "ls shows another revision")


def nothing_recorded(t, store, r):
    check("nothing was imported" in r.err or "no revision" in r.err, "no 'nothing imported' line: %r" % r)
    if os.path.exists(os.path.join(store, "index.db")):
        revs = lib.db_query(store, "SELECT commit_sha FROM revisions")
        check(not revs, "a failed import recorded revisions %s" % revs)
        refs = lib.db_query(store, "SELECT name FROM refs")
        check(not refs, "a failed import recorded refs %s" % refs)
        lib.check_store_consistent(store)
    tmp = os.path.join(store, "tmp")
    left = [n for n in os.listdir(tmp) if n.endswith(".part")] if os.path.isdir(tmp) else []
    check(not left, "a failed import left temp files %s" % left)


def fails_import(t, path, words, store=None):
    store = store or dest(t)
    r = t.fails("import", path, store=store, words=words)
    nothing_recorded(t, store, r)
    return r


# ---- round trips -----------------------------------------------------------

def roundtrip(t, name):
    out = exported(t, name)
    check(os.path.getsize(out) > 0, "empty archive")
    r = t.ok("import", out, "--json", store=dest(t))
    j = r.json()
    check(j["blobs_added"] == len(set(lib.sample_files().values())) and j["blobs_present"] == 0,
          "import --json: %s" % j)
    check(j["repos"] == 1 and j["revisions"][0]["recorded"], "import --json: %s" % j)
    check(j["bytes"] == sum(len(d) for d in set(lib.sample_files().values())), "bytes %s" % j)
    check_same(t, dest(t))
    return out


def test_roundtrip_tar(t):
    out = roundtrip(t, "a.tar")
    with tarfile.open(out) as tf:
        names = tf.getnames()
    check(names[0] == MANIFEST, "manifest is not first: %s" % names[:3])
    blobs = [n for n in names[1:]]
    check(len(blobs) == len(set(blobs)) == len(set(lib.sample_files().values())),
          "each blob once: %s" % names)
    check(all(n.startswith("blobs/sha256/") and len(n) == 13 + 64 for n in blobs), "names: %s" % names)


def test_roundtrip_tar_gz(t):
    out = roundtrip(t, "a.tar.gz")
    check(lib.read(out)[:2] == b"\x1f\x8b", "not gzip")
    with tarfile.open(out, "r:gz") as tf:
        check(tf.getnames()[0] == MANIFEST, "gz: manifest not first")


def test_roundtrip_tgz(t):
    out = roundtrip(t, "a.tgz")
    check(lib.read(out)[:2] == b"\x1f\x8b", "not gzip")


def test_roundtrip_tar_zst(t):
    out = roundtrip(t, "a.tar.zst")
    check(lib.read(out)[:4] == b"\x28\xb5\x2f\xfd", "not zstd: %r" % lib.read(out)[:4])


def test_stdout_and_stdin(t):
    pulled(t)
    out = os.path.join(t.tmp, "stream.tar")
    with open(out, "wb") as fh:
        p = subprocess.run([lib.BIN] + t.argv(["export", SAMPLE_REPO, "-o", "-"]), stdout=fh,
                           stderr=subprocess.PIPE, env=t.environ(), timeout=60)
    check(p.returncode == 0, "export -o -: rc %d %s" % (p.returncode, p.stderr))
    with tarfile.open(out) as tf:
        check(tf.getnames()[0] == MANIFEST, "stdout archive: %s" % tf.getnames()[:2])
    with open(out, "rb") as fh:
        p = subprocess.run([lib.BIN] + t.argv(["import", "-"], store=dest(t)), stdin=fh,
                           capture_output=True, env=t.environ(), timeout=60)
    check(p.returncode == 0, "import -: rc %d %s" % (p.returncode, p.stderr))
    check_same(t, dest(t))
    ends = {r["endpoint"] for r in lib.db_query(dest(t), "SELECT endpoint FROM downloads")}
    check(ends == {"bundle:stdin"}, "downloads endpoint: %s" % ends)


def test_pipe(t):
    """export -o - | import -, as over ssh."""
    pulled(t)
    e = subprocess.Popen([lib.BIN] + t.argv(["export", SAMPLE_REPO, "-o", "-", "--format", "tar.zst"]),
                         stdout=subprocess.PIPE, env=t.environ())
    p = subprocess.run([lib.BIN] + t.argv(["import", "-"], store=dest(t)), stdin=e.stdout,
                       capture_output=True, env=t.environ(), timeout=60)
    e.stdout.close()
    check(e.wait(30) == 0 and p.returncode == 0, "pipe: %s" % p.stderr)
    check_same(t, dest(t))


def test_import_twice_is_noop(t):
    out = exported(t)
    t.ok("import", out, store=dest(t))
    before = (lib.db_query(dest(t), "SELECT * FROM revisions"), lib.db_query(dest(t), "SELECT * FROM refs"),
              lib.db_query(dest(t), "SELECT count(*) AS n FROM downloads"),
              lib.db_query(dest(t), "SELECT * FROM ref_history"))
    j = t.ok("import", out, "--json", store=dest(t)).json()
    check(j["blobs_added"] == 0 and j["blobs_present"] > 0 and j["revisions_recorded"] == 0,
          "second import: %s" % j)
    after = (lib.db_query(dest(t), "SELECT * FROM revisions"), lib.db_query(dest(t), "SELECT * FROM refs"),
             lib.db_query(dest(t), "SELECT count(*) AS n FROM downloads"),
             lib.db_query(dest(t), "SELECT * FROM ref_history"))
    check(before == after, "second import changed the index:\n%s\n%s" % (before, after))
    # into the source store itself: nothing to do either
    j = t.ok("import", out, "--json").json()
    check(j["blobs_added"] == 0 and j["revisions_recorded"] == 0, "import into the source: %s" % j)


def test_stats_show_bundle(t):
    out = exported(t, "model.tar")
    t.ok("import", out, store=dest(t))
    rows = lib.db_query(dest(t), "SELECT path, endpoint, result, bytes FROM downloads")
    check(len(rows) == len(lib.sample_files()), "downloads rows: %s" % rows)
    check({r["endpoint"] for r in rows} == {"bundle:model.tar"} and {r["result"] for r in rows} == {"ok"},
          "downloads rows: %s" % rows)
    s = t.ok("stats", "--json", store=dest(t)).json()
    check(s["overall"]["count"] == len(lib.sample_files()), "stats: %s" % s["overall"])


def test_export_json_and_revisions(t):
    repo = {"type": "model", "id": "org/two", "commits": [
        {"files": {"v.txt": "old\n", "same.txt": "same\n"}, "tags": ["v1.0"]},
        {"files": {"v.txt": "new\n", "same.txt": "same\n"}, "refs": ["main"]}]}
    t.emu([repo])
    t.ok("pull", "org/two", "--revision", "v1.0")
    t.ok("pull", "org/two")
    out = os.path.join(t.tmp, "old.tar")
    j = t.ok("export", "org/two@v1.0", "-o", out, "--json").json()
    check(j["files"] == 2 and j["bytes"] == 9 and j["repos"] == 1, "export --json: %s" % j)
    t.ok("import", out, store=dest(t))
    got = revision_view(dest(t), "org/two")
    check(list(got) == [lib.commit_id("org/two", 0)], "imported %s" % got)
    # a commit prefix and the default (main)
    t.ok("export", "org/two@" + lib.commit_id("org/two", 1)[:10], "-o", os.path.join(t.tmp, "new.tar"))
    t.ok("export", "org/two", "-o", os.path.join(t.tmp, "main.tar"))
    with tarfile.open(os.path.join(t.tmp, "main.tar")) as tf:
        m = json.load(tf.extractfile(MANIFEST))
    check(m["repos"][0]["revision"] == lib.commit_id("org/two", 1) and m["repos"][0]["refs"] == ["main"],
          "default revision: %s" % m["repos"])
    # --all: both revisions, the shared blob once
    allp = os.path.join(t.tmp, "all.tar")
    j = t.ok("export", "--all", "-o", allp, "--json").json()
    check(j["revisions"] == 2 and j["files"] == 4 and j["blobs"] == 3, "export --all: %s" % j)
    t.ok("import", allp, store=dest(t, "d2"))
    check(revision_view(dest(t, "d2"), "org/two") == revision_view(t.store, "org/two"), "--all round trip")
    t.fails("export", "org/two@nope", "-o", os.path.join(t.tmp, "x.tar"), words=["not found"])
    check(not os.path.exists(os.path.join(t.tmp, "x.tar")), "failed export left a file")
    t.fails("export", "org/never", "-o", os.path.join(t.tmp, "x.tar"), words=["not found"])


def test_dataset(t):
    repo = {"type": "dataset", "id": "org/data", "commits": [{"files": {"d.csv": "a,b\n1,2\n"}}]}
    t.emu([repo])
    t.ok("pull", "datasets/org/data")
    out = os.path.join(t.tmp, "d.tar")
    t.ok("export", "datasets/org/data", "-o", out)
    t.ok("import", out, store=dest(t))
    r = t.ok("ls", "datasets/org/data", "--json", store=dest(t)).json()
    check(r["repo_type"] == "dataset", "ls: %s" % r)


def test_usage(t):
    for args in (["export", "-o", "x.tar"], ["export", SAMPLE_REPO], ["export", SAMPLE_REPO, "-o", "x.zip"],
                 ["export", SAMPLE_REPO, "-o", "x.tar", "--format", "rar"], ["import"],
                 ["import", "a.tar", "b.tar"]):
        r = t.hm(*args)
        check(r.rc == 2 and r.err.strip(), "expected usage error for %s: %r" % (args, r))
    r = t.hm("export", "--help", store=False)
    check(r.rc == 0 and "--output" in r.out, "export --help: %r" % r)
    r = t.hm("import", "--help", store=False)
    check(r.rc == 0 and "gc" in r.out, "import --help: %r" % r)
    fails_import(t, os.path.join(t.tmp, "missing.tar"), ["cannot open", "no such"])


# ---- hostile and broken bundles ---------------------------------------------

class Parts:
    """A good bundle taken apart: the manifest and the blob entries."""

    def __init__(self, path):
        with tarfile.open(path) as tf:
            members = tf.getmembers()
            self.manifest = json.loads(tf.extractfile(members[0]).read())
            self.blobs = [(m.name, tf.extractfile(m).read()) for m in members[1:]]

    def big(self):
        """The largest blob (model.safetensors)."""
        return max(self.blobs, key=lambda b: len(b[1]))


def reg(name, data, size=None):
    ti = tarfile.TarInfo(name)
    ti.size = len(data) if size is None else size
    ti.mode = 0o444
    return ti, io.BytesIO(data)


def write_tar(path, entries, fmt=tarfile.PAX_FORMAT):
    with tarfile.open(path, "w", format=fmt) as tf:
        for ti, fh in entries:
            tf.addfile(ti, fh)
    return path


def manifest_entry(m):
    return reg(MANIFEST, json.dumps(m).encode())


def hostile(t, parts, name, extra=(), drop=None, blobs=None, manifest=None):
    entries = [manifest_entry(manifest if manifest is not None else parts.manifest)]
    for n, d in (blobs if blobs is not None else parts.blobs):
        if n != drop:
            entries.append(reg(n, d))
    entries += list(extra)
    return write_tar(os.path.join(t.tmp, name), entries)


def test_hostile_twin_is_valid(t):
    """The rebuilt archive the hostile twins start from imports fine."""
    parts = Parts(exported(t))
    t.ok("import", hostile(t, parts, "rebuilt.tar"), store=dest(t))
    check_same(t, dest(t))


def test_truncated(t):
    out = exported(t)
    data = lib.read(out)
    for cut in (len(data) // 2, 700, len(data) - 2048 - 600):
        p = os.path.join(t.tmp, "cut-%d.tar" % cut)
        with open(p, "wb") as fh:
            fh.write(data[:cut])
        fails_import(t, p, ["truncated", "incomplete", "not a bundle"])


def test_truncated_gz(t):
    out = exported(t, "a.tar.gz")
    data = lib.read(out)
    p = os.path.join(t.tmp, "cut.tar.gz")
    with open(p, "wb") as fh:
        fh.write(data[:len(data) * 2 // 3])
    fails_import(t, p, ["truncated", "incomplete"])


def test_corrupt_blob_byte(t):
    out = exported(t)
    parts = Parts(out)
    name, data = parts.big()
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 1
    blobs = [(n, bytes(bad) if n == name else d) for n, d in parts.blobs]
    r = fails_import(t, hostile(t, parts, "corrupt.tar", blobs=blobs), ["corrupt"])
    check(name in r.err, "error does not name the entry: %r" % r)
    # and a byte flipped in place in the exported file itself
    raw = bytearray(lib.read(out))
    i = raw.find(data[1000:1100])
    check(i > 0, "blob bytes not found in the archive")
    raw[i + 10] ^= 0x40
    p = os.path.join(t.tmp, "flipped.tar")
    with open(p, "wb") as fh:
        fh.write(raw)
    fails_import(t, p, ["corrupt"], store=dest(t, "d2"))


def test_corrupt_small_file_git_oid(t):
    """A regular (non-LFS) file's git oid is checked too: a manifest whose
    sha256 matches but whose git_oid lies is refused."""
    parts = Parts(exported(t))
    m = parts.manifest
    f = [f for f in m["repos"][0]["files"] if f["path"] == "config.json"][0]
    f["git_oid"] = "0" * 40
    fails_import(t, hostile(t, parts, "oid.tar", manifest=m), ["git oid"])


def test_manifest_names_missing_blob(t):
    parts = Parts(exported(t))
    name, _ = parts.big()
    r = fails_import(t, hostile(t, parts, "missing.tar", drop=name), ["does not hold", "incomplete"])
    check("model.safetensors" in r.err, "error should name the file: %r" % r)


def test_blob_not_in_manifest(t):
    parts = Parts(exported(t))
    data = b"stowaway\n"
    fails_import(t, hostile(t, parts, "extra.tar", extra=[reg("blobs/sha256/" + lib.sha256_bytes(data), data)]),
                 ["not in its manifest"])


def test_unexpected_entry(t):
    parts = Parts(exported(t))
    fails_import(t, hostile(t, parts, "readme.tar", extra=[reg("README.txt", b"hi\n")]), ["unexpected entry"])


def test_duplicate_entry(t):
    parts = Parts(exported(t))
    n, d = parts.blobs[0]
    fails_import(t, hostile(t, parts, "dup.tar", extra=[reg(n, d)]), ["duplicate"])
    fails_import(t, hostile(t, parts, "dupm.tar", extra=[manifest_entry(parts.manifest)]), ["duplicate"],
                 store=dest(t, "d2"))


def test_dotdot_and_absolute_names(t):
    parts = Parts(exported(t))
    for i, name in enumerate(("../x", "blobs/../../x", "/abs", "/etc/hubmirror-x")):
        fails_import(t, hostile(t, parts, "name%d.tar" % i, extra=[reg(name, b"pwned\n")]), ["unsafe"],
                     store=dest(t, "d%d" % i))
        check(not os.path.exists(os.path.join(t.tmp, "x")) and not os.path.exists("/etc/hubmirror-x"),
              "an entry was written outside the store")
    # as the very first entry too
    p = write_tar(os.path.join(t.tmp, "first.tar"), [reg("../" + MANIFEST, json.dumps(parts.manifest).encode())])
    fails_import(t, p, ["unsafe"], store=dest(t, "dfirst"))


def special(name, kind, link=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = link
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor, ti.devminor = 1, 3
    return ti, None


def test_symlink_entry(t):
    parts = Parts(exported(t))
    n, _ = parts.blobs[0]
    # the link takes the place of a real blob
    fails_import(t, hostile(t, parts, "sym.tar", drop=n, extra=[special(n, tarfile.SYMTYPE, "/etc/passwd")]),
                 ["symlink"])
    fails_import(t, hostile(t, parts, "sym2.tar", extra=[special("blobs/x", tarfile.SYMTYPE, "../..")]),
                 ["symlink"], store=dest(t, "d2"))


def test_hardlink_entry(t):
    parts = Parts(exported(t))
    n, _ = parts.blobs[0]
    fails_import(t, hostile(t, parts, "hard.tar", drop=n, extra=[special(n, tarfile.LNKTYPE, MANIFEST)]),
                 ["hardlink"])


def test_device_and_fifo_entries(t):
    parts = Parts(exported(t))
    n, _ = parts.blobs[0]
    for i, (kind, word) in enumerate(((tarfile.CHRTYPE, "device"), (tarfile.BLKTYPE, "device"),
                                      (tarfile.FIFOTYPE, "fifo"))):
        fails_import(t, hostile(t, parts, "special%d.tar" % i, drop=n, extra=[special(n, kind)]), [word],
                     store=dest(t, "d%d" % i))


def test_unexpected_directory(t):
    parts = Parts(exported(t))
    ti = tarfile.TarInfo("blobs/evil")
    ti.type = tarfile.DIRTYPE
    fails_import(t, hostile(t, parts, "dir.tar", extra=[(ti, None)]), ["directory"])


def test_entry_larger_than_declared(t):
    parts = Parts(exported(t))
    name, data = parts.big()
    blobs = [(n, d + b"EXTRA" if n == name else d) for n, d in parts.blobs]
    r = fails_import(t, hostile(t, parts, "large.tar", blobs=blobs), ["declares", "larger"])
    check(name in r.err, "error does not name the entry: %r" % r)
    # a manifest that understates the size is the same thing seen from the other side
    m = parts.manifest
    for f in m["repos"][0]["files"]:
        if "blobs/sha256/" + f["sha256"] == name:
            f["size"] -= 1
    fails_import(t, hostile(t, parts, "small.tar", manifest=m), ["declares", "larger"], store=dest(t, "d2"))


def test_garbage(t):
    p = os.path.join(t.tmp, "garbage.tar")
    with open(p, "wb") as fh:
        fh.write(lib.random_bytes(100000, 7))
    fails_import(t, p, ["not a bundle"])
    empty = os.path.join(t.tmp, "empty.tar")
    open(empty, "wb").close()
    fails_import(t, empty, ["not a bundle", "empty"], store=dest(t, "d2"))
    # a tar, but not a bundle
    p = write_tar(os.path.join(t.tmp, "other.tar"), [reg("hello.txt", b"hello\n")])
    fails_import(t, p, ["not a bundle"], store=dest(t, "d3"))


def test_bad_manifests(t):
    parts = Parts(exported(t))
    cases = []
    m = json.loads(json.dumps(parts.manifest))
    m["repos"][0]["files"][0]["path"] = "../../etc/passwd"
    cases.append((m, ["unsafe"]))
    m = json.loads(json.dumps(parts.manifest))
    m["repos"][0]["id"] = "../evil"
    cases.append((m, ["invalid repo id"]))
    m = json.loads(json.dumps(parts.manifest))
    m["repos"][0]["files"][0]["sha256"] = "XYZ"
    cases.append((m, ["sha256"]))
    m = json.loads(json.dumps(parts.manifest))
    m["repos"][0]["files"][0]["size"] = -5
    cases.append((m, ["size"]))
    m = json.loads(json.dumps(parts.manifest))
    m["repos"][0]["refs"] = ["../../x"]
    cases.append((m, ["invalid ref"]))
    m = json.loads(json.dumps(parts.manifest))
    m["version"] = 99
    cases.append((m, ["newer"]))
    m = json.loads(json.dumps(parts.manifest))
    m["repos"][0]["files"].append(dict(m["repos"][0]["files"][0]))
    cases.append((m, ["twice"]))
    for i, (m, words) in enumerate(cases):
        fails_import(t, hostile(t, parts, "m%d.tar" % i, manifest=m), words, store=dest(t, "d%d" % i))
    p = write_tar(os.path.join(t.tmp, "notjson.tar"), [reg(MANIFEST, b"{not json")] + [reg(n, d) for n, d in parts.blobs])
    fails_import(t, p, ["not json"], store=dest(t, "dj"))
    # the manifest must come first
    p = write_tar(os.path.join(t.tmp, "late.tar"), [reg(n, d) for n, d in parts.blobs] + [manifest_entry(parts.manifest)])
    fails_import(t, p, ["first entry"], store=dest(t, "dl"))


def test_oversized_manifest(t):
    # only a header that announces 65 MiB: refused before anything is read
    ti = tarfile.TarInfo(MANIFEST)
    ti.size = 65 << 20
    p = os.path.join(t.tmp, "huge.tar")
    with open(p, "wb") as fh:
        fh.write(ti.tobuf(tarfile.PAX_FORMAT))
        fh.write(b" " * 65536)
    fails_import(t, p, ["manifest", "MiB"])


def test_failed_import_keeps_existing_revision(t):
    """A corrupt bundle for a revision the destination lacks changes nothing
    the destination already had."""
    out = exported(t)
    t.ok("import", out, store=dest(t))
    before = revision_view(dest(t))
    parts = Parts(out)
    m = parts.manifest
    m["repos"][0]["revision"] = "f" * 40
    m["repos"][0]["refs"] = ["main"]
    extra = b"new file\n"
    m["repos"][0]["files"].append({"path": "new.txt", "size": len(extra), "sha256": lib.sha256_bytes(extra),
                                   "git_oid": lib.git_oid(extra), "lfs": False})
    # the new blob arrives corrupt
    blobs = parts.blobs + [("blobs/sha256/" + lib.sha256_bytes(extra), b"new fil!\n")]
    r = t.fails("import", hostile(t, parts, "upd.tar", manifest=m, blobs=blobs), store=dest(t), words=["corrupt"])
    check(revision_view(dest(t)) == before, "a failed import changed the store's revisions or refs")
    lib.check_store_consistent(dest(t))
    t.ok("verify", store=dest(t))
    del r
