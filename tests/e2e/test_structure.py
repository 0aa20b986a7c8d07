"""test_structure.py - the shape of the tree, read from the built objects by
tests/structure/check.py: no two files that need each other (directly or in
a circle), no process-wide mutable state, and no function past the length
limit, no reach into another folder's internal header; and twins that show the checker does find each of them."""

import os
import subprocess

import lib
from lib import check

CHECK = os.path.join(lib.ROOT, "tests", "structure", "check.py")


def run_check(*args):
    return subprocess.run([lib.PY, CHECK] + list(args), capture_output=True, text=True, timeout=120)


def test_structure_no_file_cycles(t):
    r = run_check("--root", lib.ROOT, "cycles")
    check(r.returncode == 0, "file-level cycles in the tree (move the helpers both sides use into a file"
          " below them):\n%s%s" % (r.stdout, r.stderr))


def test_structure_no_mutable_globals(t):
    r = run_check("--root", lib.ROOT, "globals")
    check(r.returncode == 0, "process-wide mutable state (put it in a context struct):\n%s%s" % (r.stdout, r.stderr))


def test_structure_internal_headers_stay_in_their_folder(t):
    r = run_check("--root", lib.ROOT, "includes")
    check(r.returncode == 0, "a folder includes another folder's -int.h (move what it needs into that"
          " folder's public header, or the code into that folder):\n%s%s" % (r.stdout, r.stderr))


def test_structure_no_long_functions(t):
    r = run_check("--root", lib.ROOT, "length")
    check(r.returncode == 0, "functions over 120 lines (split them into named steps):\n%s%s" % (r.stdout, r.stderr))


def test_structure_checker_finds_long_functions(t):
    """The twin: a function of 121 lines is named with its file, line and
    length; one of 120 lines is not."""
    d = os.path.join(t.tmp, "tree", "util")
    os.makedirs(d)

    def fn(name, n):  # n lines from the signature to the closing brace
        return "int %s(int x)\n{\n" % name + "\tx++;\n" * (n - 4) + "\treturn x;\n}\n"
    with open(os.path.join(d, "long.c"), "w") as fh:
        fh.write(fn("fits", 120) + "\n" + fn("too_long", 121))
    r = run_check("--root", os.path.join(t.tmp, "tree"), "length")
    check(r.returncode == 1, "the checker missed a 121-line function: %r" % r.stdout)
    check("util/long.c:122 too_long() has 121 lines" in r.stdout, "the finding does not name the function: %r"
          % r.stdout)
    check("fits" not in r.stdout, "a 120-line function was reported: %r" % r.stdout)


def test_structure_checker_finds_internal_includes(t):
    """The twin: a file that includes another folder's -int.h is named; one
    that includes its own folder's, or another folder's public header, is not."""
    root = os.path.join(t.tmp, "tree")
    for d in ("store", "serve"):
        os.makedirs(os.path.join(root, d))
    files = {"store/store-int.h": "#include \"store.h\"\n", "store/store.h": "",
             "store/gc.c": "#include \"store-int.h\"\n",
             "serve/api.c": "#include <stdio.h>\n#include \"../store/store.h\"\n",
             "serve/bad.c": "#include \"../store/store.h\"\n  #  include \"../store/store-int.h\"\n"}
    for name, text in files.items():
        with open(os.path.join(root, name), "w") as fh:
            fh.write(text)
    r = run_check("--root", root, "includes")
    check(r.returncode == 1, "the checker missed a reach into store-int.h: %r" % r.stdout)
    check("serve/bad.c:2 includes store/store-int.h" in r.stdout, "the finding does not name file, line and"
          " header: %r" % r.stdout)
    check(r.stdout.count("\n") == 1, "a legitimate include was reported: %r" % r.stdout)


def test_structure_checker_finds_cycles_and_globals(t):
    """The twin: two files that call each other and a writable static are
    found, with the symbols that tie them."""
    d = os.path.join(t.tmp, "tree", "util")
    os.makedirs(d)
    src = {"a.c": "int b_fn(void);\nint a_fn(void) { return b_fn(); }\n",
           "b.c": "int a_fn(void);\nstatic int calls;\nint b_fn(void) { return calls++ ? 0 : a_fn(); }\n",
           "c.c": "int a_fn(void);\nstatic const int table[2] = {1, 2};\n"
                  "int c_fn(int i) { return table[i & 1] + a_fn(); }\n"}
    for name, text in src.items():
        with open(os.path.join(d, name), "w") as fh:
            fh.write(text)
        p = subprocess.run(["cc", "-O2", "-c", "-o", os.path.join(d, name[:-2] + ".o"), os.path.join(d, name)],
                           capture_output=True, text=True)
        check(p.returncode == 0, "cc failed: %s" % p.stderr)
    root = os.path.join(t.tmp, "tree")
    r = run_check("--root", root, "cycles")
    check(r.returncode == 1, "the checker missed a cycle: %r" % r.stdout)
    check("util/a.o, util/b.o" in r.stdout and "(b_fn)" in r.stdout and "(a_fn)" in r.stdout,
          "the cycle is not named with its symbols: %r" % r.stdout)
    check("c.o" not in r.stdout, "a file that only calls into the cycle was counted in it: %r" % r.stdout)
    r = run_check("--root", root, "globals")
    check(r.returncode == 1 and "util/b.o: calls" in r.stdout, "the checker missed a static: %r" % r.stdout)
    check("table (" not in r.stdout, "a const table was taken for mutable state: %r" % r.stdout)
    # a tree with no objects is an error, not a pass
    r = run_check("--root", os.path.join(t.tmp, "empty"), "cycles")
    check(r.returncode == 1 and "build first" in r.stdout, "an empty tree passed: %r" % r.stdout)
