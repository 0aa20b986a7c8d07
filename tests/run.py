#!/usr/bin/python3
"""run.py - runs hubmirror's tests: the unit binary, then every test_* function
of tests/e2e/test_*.py, each in its own process with a fresh temp dir, store
and emulator, and a timeout.

Usage: tests/run.py [-j N] [--keep] [--no-unit] [--unit] [NAME_SUBSTRING...]
(--unit: the unit tests too, when names select e2e tests.)
Under sanitizers (make SANITIZE=...) the *SAN_OPTIONS below are the defaults;
a hubmirror run that prints a sanitizer report fails its test (lib.py).
Prints "ok NAME" / "FAIL NAME" (with the detail) per test and ends with one
line "N passed, M failed"; exits 1 if anything failed.
"""

import argparse
import concurrent.futures
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(HERE, "e2e")
UNIT = os.path.join(HERE, "unit", "unit-tests")
PY = "/usr/bin/python3"
DEFAULT_TIMEOUT = 90


def load(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, E2E)
    spec.loader.exec_module(mod)
    return mod


def discover():
    tests = []
    for fn in sorted(os.listdir(E2E)):
        if fn.startswith("test_") and fn.endswith(".py"):
            path = os.path.join(E2E, fn)
            try:
                mod = load(path)
            except Exception:
                # a broken test file is a failure, not a crash of the runner
                tests.append((path, "__import__", DEFAULT_TIMEOUT))
                continue
            for name, obj in vars(mod).items():
                if name.startswith("test_") and callable(obj):
                    tests.append((path, name, getattr(obj, "timeout", DEFAULT_TIMEOUT)))
    return tests


def run_one(spec):
    """Child side: runs one test function; exit 0 on success."""
    path, name = spec.split("::")
    sys.path.insert(0, E2E)
    import lib
    mod = load(path)
    if name == "__import__":
        load(path)  # raises: the traceback is the failure detail
        return 1
    t = lib.T(name)
    ok = False
    try:
        getattr(mod, name)(t)
        ok = True
    except lib.Fail as e:
        sys.stderr.write("%s\n" % e)
        tb = traceback.extract_tb(e.__traceback__)
        where = [f for f in tb if os.path.basename(f.filename) == os.path.basename(path)]
        if where:
            sys.stderr.write("  at %s:%d\n" % (os.path.basename(path), where[-1].lineno))
    except AssertionError as e:
        tb = traceback.extract_tb(e.__traceback__)
        f = tb[-1]
        sys.stderr.write("assertion failed at %s:%d: %s %s\n"
                         % (os.path.basename(f.filename), f.lineno, f.line, e))
    except BaseException:
        traceback.print_exc()
    finally:
        keep = (not ok) and os.environ.get("HM_KEEP")
        t.close(keep=bool(keep))
        if keep:
            sys.stderr.write("  kept %s\n" % t.tmp)
    return 0 if ok else 1


def run_child(test, env):
    path, name, timeout = test
    t0 = time.time()
    p = subprocess.Popen([PY, os.path.abspath(__file__), "--one", "%s::%s" % (path, name)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = p.communicate()
        rc = "timeout"
        out += b"\ntimed out after %ds" % timeout
    # Whatever the test left running in its session (hubmirror, emulator) goes too.
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return rc, out.decode("utf-8", "replace"), time.time() - t0


def run_unit():
    if not os.access(UNIT, os.X_OK):
        return 0, 0
    print("# unit tests (%s)" % os.path.relpath(UNIT), flush=True)
    try:
        # generous: a guard against a hang, not a time limit (ThreadSanitizer
        # runs the threaded unit tests many times slower)
        p = subprocess.run([UNIT], capture_output=True, timeout=1800, cwd=os.path.dirname(HERE))
        out = p.stdout.decode("utf-8", "replace")
        err = p.stderr.decode("utf-8", "replace")
        rc = p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace")
        err = "unit-tests timed out"
        rc = "timeout"
    lines = out.splitlines()
    for line in lines[:-1] if lines else []:
        print(line)
    m = re.match(r"unit: (\d+) passed, (\d+) failed", lines[-1]) if lines else None
    if m:
        print(lines[-1])
        passed, failed = int(m.group(1)), int(m.group(2))
        if rc != 0 and failed == 0:
            print("FAIL unit-tests exited %s" % rc)
            failed = 1
        return passed, failed
    if lines:
        print(lines[-1])
    print("FAIL unit-tests exited %s without a summary line\n%s" % (rc, err[-2000:]))
    passed = sum(1 for l in lines if l.startswith("ok "))
    return passed, 1


def run_fuzz_replays():
    """Replays each fuzz target's seed corpus (tests/fuzz/corpus/NAME) through
    tests/fuzz/replay-NAME: one test each; a crash or sanitizer report fails it."""
    passed = failed = 0
    fuzz = os.path.join(HERE, "fuzz")
    corpora = os.path.join(fuzz, "corpus")
    if not os.path.isdir(corpora):
        return 0, 0
    print("# fuzz corpus replays", flush=True)
    for name in sorted(os.listdir(corpora)):
        exe = os.path.join(fuzz, "replay-" + name)
        if not os.access(exe, os.X_OK):
            print("FAIL fuzz:%s (%s not built)" % (name, os.path.relpath(exe)))
            failed += 1
            continue
        try:
            p = subprocess.run([exe, os.path.join(corpora, name)], capture_output=True, timeout=120)
            ok = p.returncode == 0
            detail = p.stderr.decode("utf-8", "replace")[-2000:]
        except subprocess.TimeoutExpired:
            ok, detail = False, "timed out"
        if ok:
            print("ok fuzz:%s" % name)
            passed += 1
        else:
            print("FAIL fuzz:%s\n%s" % (name, detail))
            failed += 1
    return passed, failed


def sanitizer_defaults():
    """Options for binaries built with SANITIZE=: stop at the first report,
    with a stack, and an exit code no command uses (1 and 2 are ours)."""
    root = os.path.dirname(HERE)
    defaults = {
        "ASAN_OPTIONS": "exitcode=86:detect_leaks=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "TSAN_OPTIONS": "exitcode=66:halt_on_error=1:second_deadlock_stack=1:suppressions="
                        + os.path.join(root, "tests", "tsan.supp"),
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one")
    ap.add_argument("-j", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep temp dirs of failed tests")
    ap.add_argument("--no-unit", action="store_true")
    ap.add_argument("--unit", action="store_true", help="the unit tests even with names")
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    if a.one:
        return run_one(a.one)

    t_start = time.time()
    passed = failed = 0
    sanitizer_defaults()
    if not a.no_unit and (a.unit or not a.names):
        passed, failed = run_unit()
    if not a.no_unit and not a.names:
        fp, ff = run_fuzz_replays()
        passed += fp
        failed += ff

    tests = discover()
    if a.names:
        tests = [t for t in tests if any(n in t[1] or n in os.path.basename(t[0]) for n in a.names)]
    # Longest first keeps the two workers busy until the end.
    tests.sort(key=lambda t: -t[2])
    tmp = tempfile.mkdtemp(prefix="hm-e2e-")
    env = dict(os.environ)
    env["HM_TEST_TMP"] = tmp
    binary = os.path.join(os.path.dirname(HERE), "hubmirror")
    if os.path.exists(binary) and "HM_BIN" not in env:
        os.makedirs(os.path.join(tmp, "bin"))
        env["HM_BIN"] = os.path.join(tmp, "bin", "hubmirror")
        for _ in range(50):  # a concurrent `make` may be relinking it right now
            try:
                shutil.copy2(binary, env["HM_BIN"])
                break
            except OSError:
                time.sleep(0.2)
    if a.keep:
        env["HM_KEEP"] = "1"
    # Generate the sample once, before the workers race for it.
    sys.path.insert(0, E2E)
    os.environ["HM_TEST_TMP"] = tmp
    import lib
    lib.sample_dir()
    print("# e2e tests: %d, %d at a time" % (len(tests), a.j), flush=True)
    lock = threading.Lock()
    failures = []

    def one(test):
        rc, out, secs = run_child(test, env)
        name = "%s:%s" % (os.path.basename(test[0])[:-3], test[1])
        with lock:
            if rc == 0:
                print("ok %s (%.1fs)" % (name, secs), flush=True)
            else:
                detail = out.strip()
                if len(detail) > 4000:
                    detail = "..." + detail[-4000:]
                print("FAIL %s (%.1fs)\n%s" % (name, secs,
                                               "\n".join("    " + l for l in detail.splitlines())),
                      flush=True)
                failures.append(name)
        return rc == 0

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.j)) as ex:
        results = list(ex.map(one, tests))
    passed += sum(1 for r in results if r)
    failed += sum(1 for r in results if not r)
    if not a.keep:
        subprocess.run(["chmod", "-R", "u+w", tmp], stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("# failed: %s" % " ".join(failures))
    print("# %.0fs" % (time.time() - t_start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
