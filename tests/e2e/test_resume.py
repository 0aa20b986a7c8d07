"""test_resume.py - kill -9 in the middle of a big download, then pull again;
two pulls of one repo into one store at the same time."""

import os
import signal
import time

import lib
from lib import check

REPO = "org/big"
SIZE = 32 * 1024 * 1024
SEED = 42


def big_repo():
    return {"type": "model", "id": REPO, "commits": [{"files": {
        "README.md": "# big\n", "config.json": '{"a": 1}\n',
        "big.bin": {"random": SIZE, "seed": SEED}}, "refs": ["main"]}]}


def expected():
    return {"README.md": b"# big\n", "config.json": b'{"a": 1}\n',
            "big.bin": lib.random_bytes(SIZE, SEED)}


def wait_for_bytes(emu, p, want, limit):
    t0 = time.time()
    while time.time() - t0 < limit:
        if p.poll() is not None:
            out, err = p.communicate()
            raise lib.Fail("pull ended (rc %s) before the kill: %s %s" % (p.returncode, out, err))
        n = emu.bytes_in_flight("big.bin") + emu.bytes_served("big.bin")
        if n >= want:
            return n
        time.sleep(0.1)
    raise lib.Fail("only %d bytes of big.bin served after %ds" % (n, limit))


def test_kill9_then_resume(t):
    emu = t.emu([big_repo()])
    emu.faults([{"match": "big.bin", "kind": "slow", "rate": 2000000, "times": -1}])
    p = t.spawn("pull", REPO)
    wait_for_bytes(emu, p, SIZE * 3 // 4, 40)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    # the store is consistent right after the kill
    lib.check_store_consistent(t.store)
    emu.faults([])
    emu.wait_idle()  # let the emulator notice the dead connections
    emu.reset_log()
    r = t.ok("pull", REPO, "--json")
    lib.check_pulled(t, emu, REPO, r.json(), expected())
    lib.check_store_consistent(t.store)
    second = emu.bytes_served("big.bin")
    check(second < SIZE * 0.8,
          "the second pull fetched %d of %d bytes of big.bin: the partial download was not "
          "resumed" % (second, SIZE))


test_kill9_then_resume.timeout = 150


def test_kill9_then_verify_and_gc(t):
    """A killed pull leaves debris that gc clears and verify does not trip on."""
    emu = t.emu([big_repo()])
    emu.faults([{"match": "big.bin", "kind": "slow", "rate": 2000000, "times": -1}])
    p = t.spawn("pull", REPO)
    wait_for_bytes(emu, p, SIZE // 4, 40)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    lib.check_store_consistent(t.store)
    t.ok("verify")
    # the killed first pull may have recorded nothing yet, and blobs next to
    # an index without a revision or a pull look like a lost index: gc then
    # wants --force. Its partial is fresh, which gc keeps (a pull resumes
    # it) unless told otherwise.
    r = t.ok("gc", "--keep-partials-days", "0", "--force")
    check("1 partial download(s)" in r.out, "gc does not count the partial: %r" % r)
    parts = [n for d, _, ns in os.walk(os.path.join(t.store, "tmp")) for n in ns
             if n.endswith(".part")]
    check(not parts, "gc left partial downloads: %s" % parts)
    lib.check_store_consistent(t.store)
    emu.faults([])
    r = t.ok("pull", REPO, "--json")
    lib.check_pulled(t, emu, REPO, r.json(), expected())


test_kill9_then_verify_and_gc.timeout = 150


def test_concurrent_pulls_share_work(t):
    emu = t.emu([big_repo()])
    emu.faults([{"match": "big.bin", "kind": "slow", "rate": 2000000, "times": -1}])
    a = t.spawn("pull", REPO, "--json")
    time.sleep(0.2)
    b = t.spawn("pull", REPO, "--json")
    outs = []
    for p in (a, b):
        try:
            out, err = p.communicate(timeout=100)
        except Exception:
            raise lib.Fail("concurrent pull did not finish in 100 s")
        outs.append((p.returncode, out.decode(), err.decode()))
    for rc, out, err in outs:
        check(rc == 0, "a concurrent pull failed: rc %s\n  stdout: %s\n  stderr: %s"
              % (rc, out[-1000:], err[-1000:]))
    lib.check_store_consistent(t.store)
    data = expected()["big.bin"]
    check(lib.read(t.blob(lib.sha256_bytes(data))) == data, "big.bin blob content")
    served = emu.bytes_served("big.bin")
    check(served < SIZE * 1.5, "%d bytes of big.bin served for two concurrent pulls of a "
          "%d-byte file: the work was not shared" % (served, SIZE))
    revs = t.db("SELECT commit_sha FROM revisions")
    check(len(revs) == 1, "revisions after two pulls of one commit: %s" % revs)


test_concurrent_pulls_share_work.timeout = 150


# ---- what a kill -9 costs: the written ranges are recorded with the boot id ----

RATE = 4000000          # bytes/s the emulator sends big.bin at
SMALL = 16 * 1024 * 1024


def small_repo():
    return {"type": "model", "id": REPO, "commits": [{"files": {
        "big.bin": {"random": SMALL, "seed": SEED}}, "refs": ["main"]}]}


def part_and_state(store):
    part = state = None
    for d, _, names in os.walk(os.path.join(store, "tmp")):
        for n in names:
            if n.endswith(".part"):
                part = os.path.join(d, n)
            elif n.endswith(".state"):
                state = os.path.join(d, n)
    check(part and state, "no part file and resume state under tmp/ after the kill")
    return part, state


def kill_midway(t):
    emu = t.emu([small_repo()])
    emu.faults([{"match": "big.bin", "kind": "slow", "rate": RATE, "times": -1}])
    p = t.spawn("pull", REPO, "--connections", "1")
    wait_for_bytes(emu, p, SMALL // 3, 40)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    emu.faults([])
    emu.wait_idle()
    emu.reset_log()
    return emu


def ranges(state, kind):
    out = []
    for line in lib.read(state).decode().splitlines():
        w = line.split()
        if w and w[0] == kind:
            out.append((int(w[1]), int(w[2])))
    return out


def test_kill9_refetches_only_what_was_in_flight(t):
    emu = kill_midway(t)
    part, state = part_and_state(t.store)
    on_disk = os.path.getsize(part)  # one connection: the written prefix
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    check(("boot " + boot) in lib.read(state).decode(), "the state does not carry the boot id")
    r = t.ok("pull", REPO, "--json", "--connections", "1")
    lib.check_pulled(t, emu, REPO, r.json(), {"big.bin": lib.random_bytes(SMALL, SEED)})
    resumed = SMALL - emu.bytes_served("big.bin")
    lost = on_disk - resumed
    print("kill -9 after %d bytes written: %d bytes re-fetched (%.2f s at %d B/s)"
          % (on_disk, lost, lost / RATE, RATE))
    check(lost <= RATE // 2,
          "a kill -9 re-fetched %d of the %d bytes written (more than 0.5 s at %d B/s)" % (lost, on_disk, RATE))


def test_after_reboot_only_synced_ranges_are_trusted(t):
    emu = kill_midway(t)
    part, state = part_and_state(t.store)
    # a reboot: another boot id (the page cache may have lost unsynced bytes)
    text = lib.read(state).decode()
    check("\nboot " in text, "no boot id in the state: %r" % text)
    lines = ["boot 00000000-0000-0000-0000-000000000000" if l.startswith("boot ") else l
             for l in text.splitlines()]
    with open(state, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    done = sum(b - a for a, b in ranges(state, "done"))
    written = sum(b - a for a, b in ranges(state, "written"))
    check(done <= written, "synced %d > written %d" % (done, written))
    r = t.ok("pull", REPO, "--json", "--connections", "1")
    lib.check_pulled(t, emu, REPO, r.json(), {"big.bin": lib.random_bytes(SMALL, SEED)})
    resumed = SMALL - emu.bytes_served("big.bin")
    check(resumed == done, "after a reboot the pull resumed %d bytes; the synced ranges hold %d (written %d)"
          % (resumed, done, written))
