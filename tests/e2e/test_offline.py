"""test_offline.py - offline use of what is stored: HF_HUB_OFFLINE=1 or
--offline makes pull and sync use only the store (a dead endpoint proves no
network) with a clear error for what is not there; an unreachable hub falls
back to the stored revision with one warning line; sync --locked needs no
network when the store holds what the lock pins."""

import os

import lib
from lib import check, SAMPLE_REPO


def dead():
    return "http://127.0.0.1:%d" % lib.free_port()


def test_offline_pull_uses_the_store(t):
    emu = t.emu()
    t.ok("pull", SAMPLE_REPO, "-q")
    commit = lib.commit_id(SAMPLE_REPO, 0)
    for how in ({"env": {"HF_HUB_OFFLINE": "1"}, "args": ()}, {"env": None, "args": ("--offline",)}):
        r = t.hm("pull", SAMPLE_REPO, "--json", *how["args"], endpoint=dead(), env=how["env"])
        check(r.rc == 0, "offline pull of a stored revision: %r" % r)
        j = r.json()
        check(j.get("revision") == commit and j.get("files_downloaded") == 0, "offline pull json: %r" % j)
        check("warning" not in r.err and "retrying" not in r.err, "offline pull touched the network: %r" % r)
    # not stored: a clear error, no network
    r = t.hm("pull", "demo-org/other", endpoint=dead(), env={"HF_HUB_OFFLINE": "1"})
    check(r.rc == 1, "offline pull of an unstored repo must fail: %r" % r)
    lib.clean_error(r, ["offline"])
    check("not in the store" in r.err and "connect" not in r.err, "unclear offline error: %r" % r)
    # checkout is the store's alone: offline, a stored revision checks out, an unstored one is named
    r = t.hm("checkout", SAMPLE_REPO, "--to", os.path.join(t.tmp, "co"), env={"HF_HUB_OFFLINE": "1"})
    check(r.rc == 0, "offline checkout of a stored revision: %r" % r)
    r = t.hm("checkout", "demo-org/other", "--to", os.path.join(t.tmp, "co2"), env={"HF_HUB_OFFLINE": "1"})
    check(r.rc == 1 and "demo-org/other" in r.err, "offline checkout of an unstored repo: %r" % r)
    # a stored revision whose blob went missing: named
    sha = lib.sha256_bytes(lib.sample_files()["model.safetensors"])
    os.chmod(os.path.dirname(t.blob(sha)), 0o755)
    os.unlink(t.blob(sha))
    r = t.hm("pull", SAMPLE_REPO, endpoint=dead(), env={"HF_HUB_OFFLINE": "1"})
    check(r.rc == 1 and "model.safetensors" in r.err and "not in the store" in r.err,
          "offline pull with a missing blob should name it: %r" % r)
    # twin: online, the same pull repairs it
    t.ok("pull", SAMPLE_REPO, "-q")
    check(os.path.exists(t.blob(sha)), "the online pull did not fetch the missing blob")


def test_unreachable_hub_falls_back_to_stored_revision(t):
    emu = t.emu()
    t.ok("pull", SAMPLE_REPO, "-q")
    r = t.hm("pull", SAMPLE_REPO, "--json", "--retries", "0", endpoint=dead())
    check(r.rc == 0, "pull with the hub out of reach and main stored: %r" % r)
    warn = [l for l in r.err.splitlines() if l.startswith("hubmirror: warning")]
    check(len(warn) == 1 and "stored revision" in warn[0] and "connect" in warn[0],
          "expected one warning line naming the cause: %r" % r)
    check(r.json().get("revision") == lib.commit_id(SAMPLE_REPO, 0), "fallback revision: %r" % r.out)
    # twin: a revision that is not stored still fails
    r = t.hm("pull", SAMPLE_REPO, "--revision", "v9", "--retries", "0", endpoint=dead())
    check(r.rc == 1, "an unstored revision with the hub out of reach must fail: %r" % r)
    lib.clean_error(r, ["connect"])


def test_sync_locked_needs_no_network(t):
    emu = t.emu()
    m = os.path.join(t.tmp, "models.txt")
    with open(m, "w") as fh:
        fh.write(SAMPLE_REPO + "\n")
    t.ok("sync", m, endpoint=t.endpoint)
    dest = os.path.join(t.tmp, "lab")
    r = t.hm("sync", m, "--locked", "--to", dest, "--retries", "0", endpoint=dead())
    check(r.rc == 0, "sync --locked with everything stored needs no network: %r" % r)
    for p, data in lib.sample_files().items():
        check(lib.read(os.path.join(dest, SAMPLE_REPO, p)) == data, "%s not checked out" % p)
    r = t.hm("sync", m, "--locked", endpoint=dead(), env={"HF_HUB_OFFLINE": "1"})
    check(r.rc == 0, "offline sync --locked: %r" % r)
    # twin: an empty store cannot
    t.store = os.path.join(t.tmp, "store2")
    r = t.hm("sync", m, "--locked", "--retries", "0", endpoint=dead())
    check(r.rc == 1, "sync --locked into an empty store without network must fail: %r" % r)
    r = t.hm("sync", m, "--locked", endpoint=dead(), env={"HF_HUB_OFFLINE": "1"})
    check(r.rc == 1 and "offline" in (r.out + r.err), "offline sync of an unstored model: %r" % r)
