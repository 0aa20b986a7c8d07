#!/usr/bin/python3
"""check.py - structural checks of the built tree, read from the objects and
the sources (no compiler plugin): no file-level cycles (an object that needs a
symbol of another which, through any chain, needs one of its own), no mutable
process-wide state (objects with writable .data/.bss/common symbols), no
function longer than a limit, and no file that reaches into another folder's
internal header (a folder's *-int.h is for that folder's files; unit and fuzz
tests, which test internals, may include them).

Usage: tests/structure/check.py [--root DIR] [--max-lines N] cycles|globals|length|includes ...
Prints one line per finding and exits 1 when there is any; run from `make
check` through tests/e2e/test_structure.py.
"""

import argparse
import os
import re
import subprocess
import sys

# Folders whose objects make up hubmirror (the library and cmd/).
DIRS = ["util", "verify", "store", "fetch", "s3", "mirror", "serve", "bundle", "formats",
        "convert", "engine", "p2p", "cmd"]

# Writable state that is process-wide on purpose, with the reason:
ALLOWED_STATE = {
    # a signal handler can only reach a static: volatile sig_atomic_t, set once, read by the loops
    ("cmd/main.o", "cancel_flag"),
    # the CPU's features, written once under pthread_once (cpu_once) before any read
    ("convert/numeric.o", "cpu"),
    # AMX granted by the kernel (arch_prctl, once per process), written once under pthread_once (amx_once)
    ("engine/matmul.o", "amx"),
}
# Objects whose state is process-wide by what they are: the fault-injection
# hook wraps write/fsync/rename/malloc for the whole process (--wrap), and is
# set once from HUBMIRROR_FAULT; nothing can hand it a context.
ALLOWED_OBJECTS = {"util/fault.o"}
# pthread_once_t controls are the sanctioned one-time initialisation.
ALLOWED_STATE_RE = re.compile(r"_once(\.\d+)?$")
# What sanitizers and the compiler add to instrumented objects is theirs, not ours.
TOOL_STATE_RE = re.compile(r"^(\.L|_+(asan|ubsan|tsan|lsan|msan|sancov|gcov|odr_asan)|__llvm)")


def objects(root, dirs=DIRS):
    out = []
    for d in dirs:
        p = os.path.join(root, d)
        if not os.path.isdir(p):
            continue
        for fn in sorted(os.listdir(p)):
            if fn.endswith(".o"):
                out.append(os.path.join(d, fn))
    return out


def nm(root, obj):
    """(defined global symbols, undefined symbols) of one object."""
    r = subprocess.run(["nm", "-P", os.path.join(root, obj)], capture_output=True, text=True, check=True)
    defs, undef = set(), set()
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) < 2:
            continue
        name, kind = f[0], f[1]
        if kind == "U":
            undef.add(name)
        elif kind.isupper() and kind not in "VW":  # weak: C++ inline functions, defined everywhere
            defs.add(name)
    return defs, undef


def sccs(graph):
    """Tarjan's strongly connected components, iteratively."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            pushed = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    pushed = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if pushed:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def check_cycles(root, objs):
    owner, needs = {}, {}
    for o in objs:
        defs, undef = nm(root, o)
        needs[o] = undef
        for s in defs:
            owner.setdefault(s, o)
    graph = {o: set() for o in objs}
    why = {}
    for o in objs:
        for s in needs[o]:
            d = owner.get(s)
            if d and d != o:
                graph[o].add(d)
                why.setdefault((o, d), s)
    found = []
    for comp in sccs(graph):
        if len(comp) < 2:
            continue
        inside = set(comp)
        edges = ["%s -> %s (%s)" % (a, b, why[(a, b)]) for a in comp for b in sorted(graph[a]) if b in inside]
        found.append("cycle between %s: %s" % (", ".join(comp), "; ".join(edges)))
    return found


def check_globals(root, objs):
    found = []
    for o in objs:
        r = subprocess.run(["objdump", "-t", os.path.join(root, o)], capture_output=True, text=True, check=True)
        for line in r.stdout.splitlines():
            m = re.match(r"^[0-9a-f]+ (.{7}) (\S+)\s+[0-9a-f]+\s+(?:\.hidden\s+)?(\S+)$", line)
            if not m or "O" not in m.group(1):
                continue
            sec, name = m.group(2), m.group(3)
            # .data.rel.ro is const once relocated; a section named after a
            # mangled symbol is a C++ header's inline static (libtorrent, boost)
            if "rel.ro" in sec or "DW.ref." in sec or re.match(r"^\.(bss|data|tbss|tdata)\._Z", sec):
                continue
            if not (re.match(r"^\.(data|bss|tbss|tdata)(\.|$)", sec) or sec == "*COM*"):
                continue
            if o in ALLOWED_OBJECTS or (o, name) in ALLOWED_STATE or ALLOWED_STATE_RE.search(name) or TOOL_STATE_RE.match(name):
                continue
            found.append("mutable process-wide state: %s: %s (%s)" % (o, name, sec))
    return found


FUNC_START = re.compile(r"^[A-Za-z_][^;=]*\)\s*$")


def functions(path):
    """(name, first line, number of lines) of each function defined in a C
    file written in the tree's style: the signature starts at column 0 and
    the body's braces stand alone at column 0."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    out = []
    i = 0
    while i < len(lines):
        if lines[i] == "{":
            j = i - 1
            while j > 0 and lines[j] and not FUNC_START.match(lines[j]) and (lines[j][0] in " \t"):
                j -= 1
            sig = lines[j]
            m = re.search(r"([A-Za-z_]\w*)\s*\(", sig)
            k = i + 1
            while k < len(lines) and lines[k] != "}":
                k += 1
            if m and "=" not in sig.split("(")[0]:
                out.append((m.group(1), j + 1, k - j + 1))
            i = k
        i += 1
    return out


def check_length(root, limit):
    found = []
    for d in DIRS:
        p = os.path.join(root, d)
        if not os.path.isdir(p):
            continue
        for fn in sorted(os.listdir(p)):
            if not fn.endswith(".c"):
                continue
            for name, line, n in functions(os.path.join(p, fn)):
                if n > limit:
                    found.append("function too long: %s/%s:%d %s() has %d lines (limit %d)"
                                 % (d, fn, line, name, n, limit))
    return found


INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def check_includes(root, dirs):
    """A file of one folder that includes another folder's -int.h."""
    found = []
    for d in dirs:
        p = os.path.join(root, d)
        if not os.path.isdir(p):
            continue
        for fn in sorted(os.listdir(p)):
            if not fn.endswith((".c", ".h", ".cpp")):
                continue
            with open(os.path.join(p, fn), encoding="utf-8", errors="replace") as f:
                for no, line in enumerate(f, 1):
                    m = INCLUDE_RE.match(line)
                    if not m or not m.group(1).endswith("-int.h"):
                        continue
                    target = os.path.normpath(os.path.join(d, m.group(1)))
                    if os.path.dirname(target) != os.path.normpath(d):
                        found.append("internal header of another folder: %s/%s:%d includes %s"
                                     % (d, fn, no, target))
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    ap.add_argument("--max-lines", type=int, default=120)
    ap.add_argument("--dirs", help="comma-separated folders (default: the tree's)")
    ap.add_argument("checks", nargs="+", choices=["cycles", "globals", "length", "includes"])
    a = ap.parse_args()
    dirs = a.dirs.split(",") if a.dirs else DIRS
    objs = objects(a.root, dirs)
    found = []
    for c in a.checks:
        if c in ("cycles", "globals") and not objs:
            found.append("no objects under %s: build first" % a.root)
            break
        if c == "cycles":
            found += check_cycles(a.root, objs)
        elif c == "globals":
            found += check_globals(a.root, objs)
        elif c == "includes":
            found += check_includes(a.root, dirs)
        else:
            found += check_length(a.root, a.max_lines)
    for f in found:
        print(f)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
