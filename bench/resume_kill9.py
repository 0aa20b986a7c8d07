#!/usr/bin/python3
"""resume_kill9.py - what a kill -9 costs a resumed pull: the hub emulator
sends a 16 MiB file at 4 MB/s over one connection, the pull is killed with
SIGKILL after about a third, and the next pull is measured: bytes re-fetched
= bytes the killed run had written to its part file - bytes resumed.

Usage: bench/resume_kill9.py [HUBMIRROR_BINARY...] [--runs N]
(default: ./hubmirror, 5 runs each). Not part of `make check`;
tests/e2e/test_resume.py asserts the bound (at most 0.5 s of transfer)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))


def main():
    args = sys.argv[1:]
    runs = 5
    if "--runs" in args:
        i = args.index("--runs")
        runs = int(args[i + 1])
        del args[i:i + 2]
    bins = [os.path.abspath(b) for b in args] or [os.path.join(ROOT, "hubmirror")]
    import lib
    import test_resume as tr
    for b in bins:
        lib.BIN = b
        for _ in range(runs):
            t = lib.T("kill9")
            try:
                emu = tr.kill_midway(t)
                part, _ = tr.part_and_state(t.store)
                written = os.path.getsize(part)
                t.ok("pull", tr.REPO, "--json", "--connections", "1")
                resumed = tr.SMALL - emu.bytes_served("big.bin")
                lost = written - resumed
                print("%s\twritten %d\tre-fetched %d\t%.2f s at %d B/s"
                      % (b, written, lost, lost / tr.RATE, tr.RATE), flush=True)
            finally:
                t.close()


if __name__ == "__main__":
    main()
