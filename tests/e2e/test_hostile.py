"""test_hostile.py - a hub that lists hostile file names: the pull fails with
a clear error, records nothing, and writes nothing outside the store."""

import os

import lib
from lib import check

HOSTILE = {
    "dotdot": "../evil",
    "absolute": "/abs/x",
    "backslash": "a\\b",
    "double_slash": "a//b",
    "dotdot_inside": "ok/../../x",
    "nul": "a\x00b",
    "dot_segment": "x/./y",
    "only_dotdot": "..",
    "empty": "",
    "git_dir": ".git/config",
}


def snapshot(root, skip):
    out = set()
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if os.path.join(d, x) not in skip]
        for n in names + dirs:
            out.add(os.path.join(d, n))
    return out


def make_test(name, bogus):
    def test(t):
        repo = {"type": "model", "id": "org/hostile", "commits": [{
            "files": {"README.md": "# fine\n", "w.bin": {"random": 5000, "seed": 1}},
            "bogus": [{"path": bogus, "content": "pwned\n"}]}]}
        emu = t.emu([repo])
        before = snapshot(t.tmp, {t.store} | {e.dir for e in t.emus})
        r = t.fails("pull", "org/hostile")
        lib.clean_error(r)
        after = snapshot(t.tmp, {t.store} | {e.dir for e in t.emus})
        check(after == before, "files written outside the store: %s" % sorted(after - before))
        for p in ("/abs/x", "/evil"):
            check(not os.path.exists(p), "%s exists" % p)
        check(not os.path.exists(os.path.join(os.path.dirname(t.tmp), "evil")), "../evil written")
        check(not os.path.exists(os.path.join(t.tmp, "evil")), "../evil written")
        check(not os.path.exists(os.path.join(t.tmp, "x")), "ok/../../x written")
        if os.path.exists(os.path.join(t.store, "index.db")):
            rows = t.db("SELECT path FROM files")
            check(not rows, "files recorded for a hostile tree: %s" % rows)
        # no pwned bytes anywhere in the store outside tmp/ staging
        pwned = lib.sha256_bytes(b"pwned\n")
        check(not os.path.exists(t.blob(pwned)), "the hostile file was stored as a blob")
        msg = r.err.lower()
        check(any(w in msg for w in ("path", "name", "invalid", "unsafe", "hostile", "bad")),
              "the error should say the file name is bad: %r" % r)
    test.__name__ = "test_hostile_" + name
    return test


for _n, _b in HOSTILE.items():
    globals()["test_hostile_" + _n] = make_test(_n, _b)


def test_hostile_repo_id(t):
    t.emu()
    for bad in ("../etc", "org/../x", "org/name/extra", "/abs", "org//name", "a b/c"):
        r = t.hm("pull", bad)
        check(r.rc in (1, 2), "repo id %r: expected exit 1 or 2: %r" % (bad, r))
        lib.clean_error(r)
