"""test_cli.py - what a person sees on the command line: the progress bar in
a real terminal (tmux) at 60, 80 and 120 columns, plain progress lines and
retries in a log, quiet modes, messages, help."""

import json
import os
import re
import time

import lib
import term
from lib import check

REPO = "lab/progress-model"
SIZE = lib.random_bytes  # noqa: just to show where the bytes come from

SIZE_RE = r"\d+(\.\d)? (B|KiB|MiB|GiB)"
PIECE_RES = [r"\s*\d+%", SIZE_RE + "/" + SIZE_RE, SIZE_RE + "/s", r"eta \d+:\d\d(:\d\d)?",
             r"\d+/\d+ files", r"\d+ conns?", r"resumed from " + SIZE_RE]


def progress_emu(t, big=3_000_000, rate=700_000):
    files = {"big.bin": {"random": big, "seed": 7}}
    for i in range(8):
        files["small-%d.txt" % i] = "small file %d\n" % i
    emu = t.emu([{"type": "model", "id": REPO, "commits": [{"files": files, "refs": ["main"]}]}])
    emu.faults([{"match": "big.bin", "kind": "slow", "rate": rate, "times": -1}])
    return emu


def bar_lines(screen):
    return [l for l in screen.splitlines() if re.search(r"\d+%", l)]


def check_bar_line(line, width):
    """A bar line is the repo (maybe cut), a bar, then known pieces, two
    spaces apart, and nothing after them (no stale characters)."""
    check(len(line) <= width - 1, "bar line wider than %d-1 columns: %r" % (width, line))
    rest = re.sub(r"^.*?\] ", "", line) if "]" in line else line
    rest = re.sub(r"^\S*progress-model ", "", rest)
    for piece in rest.split("  "):
        if not piece.strip():
            continue
        check(any(re.fullmatch(p, piece) for p in PIECE_RES),
              "unexpected text %r in the progress line %r" % (piece, line))


def run_bar(t, width):
    progress_emu(t)
    tm = term.Tmux(t, width)
    tm.run("pull", REPO, "-c", "2")
    seen = []
    t0 = time.time()
    while not tm.done() and time.time() - t0 < 90:
        seen += bar_lines(tm.screen())
        time.sleep(0.15)
    rc = tm.wait_done()
    final = tm.everything()
    check(rc == 0, "pull failed in tmux:\n%s" % final)
    check(seen, "no progress line was ever on screen at %d columns" % width)
    for l in seen:
        check_bar_line(l.rstrip(), width)
    full = [l for l in seen if "files" in l and "/s" in l]
    if width >= 80:
        check(full, "at %d columns no line showed the file count and the rate: %r" % (width, seen[-3:]))
    if width >= 120:
        check(any(REPO in l and "conn" in l for l in seen),
              "at 120 columns the repo and the connections are missing: %r" % seen[-3:])
    # the bar redraws in place: it leaves nothing behind, and no wrapped lines
    lines = [l for l in final.splitlines() if l.strip()]
    check(not bar_lines("\n".join(lines)), "the progress bar was left on screen:\n%s" % final)
    if width == 120:
        print("\n".join(seen[-2:]))
    check(len(lines) <= 3, "the pull left %d lines (wrapped redraws?):\n%s" % (len(lines), final))
    check(any("pulled" in l for l in lines), "no summary line:\n%s" % final)


def test_cli_bar_60(t):
    run_bar(t, 60)


def test_cli_bar_80(t):
    run_bar(t, 80)


def test_cli_bar_120(t):
    run_bar(t, 120)


def test_cli_plain_progress_and_resume(t):
    """stderr not a tty: plain lines; after an interrupted pull the rate counts
    only this run's bytes and the line says what was resumed."""
    emu = progress_emu(t, big=5_000_000, rate=500_000)
    env = {"HUBMIRROR_PROGRESS_INTERVAL": "0.5"}
    p = t.spawn("pull", REPO, "-c", "2", env=env)
    t0 = time.time()
    while (emu.bytes_served("big.bin") + emu.bytes_in_flight("big.bin") < 2_000_000
           and time.time() - t0 < 60):
        time.sleep(0.1)
    p.send_signal(2)
    p.wait(30)
    check(p.returncode == 130, "interrupted pull: rc %r" % p.returncode)
    emu.wait_idle()
    r = t.ok("pull", REPO, "-c", "2", env=env)
    lines = [l for l in r.err.splitlines() if REPO in l and "%" in l]
    check(lines, "no plain progress lines on a non-tty stderr: %r" % r)
    check(all("\r" not in l and "\x1b" not in l for l in r.err.splitlines()),
          "terminal control characters in a log: %r" % r.err[:300])
    check(any("resumed from" in l for l in lines), "no 'resumed from' in %r" % lines)
    check(any(re.search(r"\d+/9 files", l) for l in lines), "no file count in %r" % lines)
    for l in lines:
        m = re.search(r"([\d.]+) (KiB|MiB|GiB)/s", l)
        if m:
            mib = float(m.group(1)) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[m.group(2)]
            # the server sends at most 2 x 0.5 MB/s; bytes already on disk are no speed
            check(mib < 20, "the rate counts resumed bytes: %r" % l)
    check("pulled" in r.out, "no summary: %r" % r)


def test_cli_retry_lines(t):
    emu = progress_emu(t, big=100_000, rate=10_000_000)
    emu.faults([{"match": "small-3.txt", "kind": "status", "status": 503, "times": 2}])
    r = t.ok("pull", REPO)
    lines = [l for l in r.err.splitlines() if "retrying" in l]
    check(len(lines) == 2, "expected 2 retry lines: %r" % r)
    check(re.fullmatch(r"hubmirror: retrying small-3\.txt in [\d.]+ s \(1/5\): HTTP 503", lines[0]),
          "retry line: %r" % lines[0])
    check("(2/5)" in lines[1], "second retry line: %r" % lines[1])


def test_cli_quiet_and_disabled_bars(t):
    emu = progress_emu(t, big=3_000_000, rate=1_000_000)
    emu.faults([{"match": "small-3.txt", "kind": "status", "status": 503, "times": 1}])
    env = {"HUBMIRROR_PROGRESS_INTERVAL": "0.2"}
    r = t.ok("pull", REPO, "-q", env=env)
    check(r.err == "", "pull -q wrote on stderr: %r" % r)
    t.ok("rm", REPO)
    t.ok("gc")
    emu.faults([{"match": "big.bin", "kind": "slow", "rate": 1_000_000, "times": -1}])
    r = t.ok("pull", REPO, env=dict(env, HF_HUB_DISABLE_PROGRESS_BARS="1"))
    check("%" not in r.err, "HF_HUB_DISABLE_PROGRESS_BARS=1 still shows progress: %r" % r)
    tm = term.Tmux(t, 80)
    t.ok("rm", REPO)
    t.ok("gc")
    tm.run("pull", REPO, env={"HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    seen = []
    while not tm.done():
        seen += bar_lines(tm.screen())
        time.sleep(0.1)
    check(tm.wait_done() == 0, "pull failed: %s" % tm.everything())
    check(not seen, "a bar with HF_HUB_DISABLE_PROGRESS_BARS=1: %r" % seen)


def test_cli_verbose_logs_requests(t):
    emu = progress_emu(t, big=50_000, rate=10_000_000)
    secret = "hf_SecretForTheLog0123456789"
    r = t.ok("pull", REPO, "--verbose", "--token", secret)
    reqs = [l for l in r.err.splitlines() if l.startswith("hubmirror: http: ")]
    check(any(re.search(r"GET http://127\.0\.0\.1:\d+/api/models/lab/progress-model/revision/main -> 200 \([\d.]+ s\)", l)
              for l in reqs), "no API request in the log: %r" % reqs[:5])
    check(sum("big.bin" in l for l in reqs) >= 1, "no file request in the log: %r" % reqs)
    check(all("?" not in l for l in reqs), "a query string (signed URL) was logged: %r" % reqs)
    check(secret not in r.err + r.out, "the token was logged")
    r2 = t.ok("pull", REPO, env={"HF_DEBUG": "1"})
    check("hubmirror: http: GET" in r2.err, "HF_DEBUG=1 logs no request: %r" % r2)
    r3 = t.ok("pull", REPO)
    check("http:" not in r3.err, "requests logged without --verbose: %r" % r3)


def test_cli_quiet_sync_and_repair(t):
    emu = progress_emu(t, big=200_000, rate=10_000_000)
    man = os.path.join(t.tmp, "models.txt")
    with open(man, "w") as fh:
        fh.write("%s\n" % REPO)
    r = t.ok("sync", man, "-q", "--endpoint", t.endpoint)
    check(r.out == "" and r.err == "", "sync -q printed: %r" % r)
    with open(man, "w") as fh:
        fh.write("%s\nlab/no-such-model\n" % REPO)
    r = t.hm("sync", man, "-q", "--endpoint", t.endpoint)
    check(r.rc == 1 and r.out == "", "sync -q with a failure: %r" % r)
    check("no-such-model" in r.err and REPO not in r.err, "sync -q names only the failure: %r" % r)
    # corrupt one stored blob; verify --repair -q fixes it silently
    row = t.db("SELECT sha256 FROM files WHERE path = 'big.bin'")[0]
    path = t.blob(row["sha256"])
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"X")
    r = t.hm("verify", "--repair", "-q", "--endpoint", t.endpoint)
    check(r.rc == 0 and r.out == "" and r.err == "", "verify --repair -q printed: %r" % r)
    r = t.ok("verify")
    check("ok" in r.out, "not repaired: %r" % r)


# ---- messages -------------------------------------------------------------------

GATED = "org/gated-many"
GOOD = "hf_GoodSecretToken0123456789abcdef"
OTHER = "hf_OtherUserToken9876543210fedcba"


def many_files_repo(repo, n=40, **kw):
    files = {"f%03d.txt" % i: "file %d\n" % i for i in range(n)}
    spec = {"type": "model", "id": repo, "commits": [{"files": files, "refs": ["main"]}]}
    spec.update(kw)
    return spec


def hm_lines(r):
    return [l for l in r.err.splitlines() if l.startswith("hubmirror")]


def test_cli_gated_one_line(t):
    emu = t.emu([many_files_repo(GATED, gated="manual", tokens=[GOOD])], tokens=[OTHER])
    r = t.fails("pull", GATED, words=["gated"])
    lines = hm_lines(r)
    check(len(lines) == 1, "a gated repo of 40 files should give one line: %r" % r)
    check("request access at http" in lines[0] and "then set HF_TOKEN" in lines[0],
          "no access URL / HF_TOKEN advice: %r" % lines[0])
    check("resume" not in r.err, "a resume hint cannot help here: %r" % r)
    check(len(emu.file_gets()) <= 8, "asked for %d files after the first refusal" % len(emu.file_gets()))
    r = t.fails("pull", GATED, "--token", OTHER, words=["no access"])
    lines = hm_lines(r)
    check(len(lines) == 1 and "the token has no access to gated 'org/gated-many'" in lines[0]
          and "https://huggingface.co/org/gated-many" in lines[0], "with a token: %r" % r)
    check(OTHER not in r.err, "the token was printed")
    r = t.hm("pull", GATED, "--json", "--token", OTHER)
    check(r.rc == 1 and r.json()["error"]["code"] == "gated", "--json error object: %r" % r)


def test_cli_token_required(t):
    emu = t.emu([many_files_repo("org/open", n=2)], tokens=[GOOD], extra={"require_token": True})
    r = t.fails("pull", "org/open", words=["requires a token"])
    check("this endpoint requires a token" in r.err and "not found" not in r.err,
          "the server's own message should show: %r" % r)
    t.ok("pull", "org/open", env={"HF_TOKEN": GOOD})


def test_cli_usage_messages(t):
    r = t.hm("pull", "org/x", "-c", "many", store=True, endpoint=False)
    check(r.rc == 2 and len(r.err.strip().splitlines()) == 1 and "--connections" in r.err,
          "one line for a bad option value: %r" % r)
    r = t.hm("help", "nosuch", store=False, endpoint=False)
    check(r.rc == 2 and "unknown command 'nosuch'" in r.err, "help nosuch: %r" % r)
    r = t.hm("pul", "org/x", store=False, endpoint=False)
    check(r.rc == 2 and "did you mean pull?" in r.err, "no suggestion: %r" % r)
    r = t.hm("download", "org/x", store=False, endpoint=False)
    check(r.rc == 2 and "did you mean pull?" in r.err, "no suggestion for download: %r" % r)
    for opt, word in (("--max-workers", "--connections"), ("--cache-dir", "--store"),
                      ("--force-download", "verify --repair")):
        args = ["pull", "org/x", opt] + (["4"] if opt != "--force-download" else [])
        r = t.hm(*args, endpoint=False)
        check(r.rc == 2 and word in r.err, "%s should point to %s: %r" % (opt, word, r))
    r = t.hm("pull", "spaces/org/app", endpoint=False)
    check(r.rc == 2 and "Spaces are not supported" in r.err, "spaces: %r" % r)
    with open(os.path.join(t.tmp, "notes.txt"), "w") as fh:
        fh.write("plain text, long enough to have eight bytes of header\n")
    r = t.fails("inspect", os.path.join(t.tmp, "notes.txt"), words=["neither a safetensors nor a GGUF"])
    check("header length" not in r.err, "inspect: %r" % r)
    r = t.hm("pull", "org/x", "--json", "-c", "0", endpoint=False)
    check(r.rc == 2, "usage error rc: %r" % r)
    j = r.json()
    check(j["error"]["code"] == "usage" and "schema" in j, "usage error JSON: %r" % r)


# ---- Hugging Face habits ------------------------------------------------------------

def test_cli_repo_at_rev_everywhere(t):
    emu = t.emu([lib.sample_repo()])
    commit = lib.commit_id(lib.SAMPLE_REPO, 0)
    r = t.ok("pull", "hf://%s@main" % lib.SAMPLE_REPO, "--json")
    check(r.json()["revision"] == commit and r.json()["schema"] >= 1, "pull hf://...@main: %r" % r)
    t.ok("pull", "%s@%s" % (lib.SAMPLE_REPO, commit[:12]) if False else "%s@%s" % (lib.SAMPLE_REPO, commit))
    r = t.ok("ls", "%s@%s" % (lib.SAMPLE_REPO, commit[:10]), "--json")
    check(r.json()["revision"] == commit and r.json()["repo"] == lib.SAMPLE_REPO
          and r.json()["repo_type"] == "model", "ls REPO@REV: %r" % r)
    out = os.path.join(t.tmp, "co")
    r = t.ok("checkout", "hf://%s@main" % lib.SAMPLE_REPO, "--to", out, "--layout", "hf-cache")
    check("HF_HUB_CACHE=%s " % os.path.realpath(out) in r.out, "checkout hint: %r" % r)
    r = t.ok("inspect", "%s@main" % lib.SAMPLE_REPO, "--json")
    r = t.hm("ls", "%s@main" % lib.SAMPLE_REPO, "--revision", "other")
    check(r.rc == 2 and "two revisions" in r.err, "conflicting revisions: %r" % r)
    r = t.ok("rm", "%s@main" % lib.SAMPLE_REPO, "--json")
    check(r.json()["revision"] == commit, "rm REPO@REV: %r" % r)


def test_cli_dataset_hint(t):
    emu = t.emu([dict(lib.sample_repo("lab/tiny-data"), type="dataset")])
    t.ok("pull", "datasets/lab/tiny-data")
    r = t.fails("ls", "lab/tiny-data", words=["datasets/lab/tiny-data"])
    check("a dataset of that name is stored" in r.err, "dataset hint: %r" % r)
    r = t.fails("checkout", "lab/tiny-data", "--to", os.path.join(t.tmp, "x"), words=["dataset"])


def test_cli_pull_files_to_and_dry_run(t):
    emu = t.emu([lib.sample_repo()])
    r = t.ok("pull", lib.SAMPLE_REPO, "--dry-run")
    check("would download" in r.out and "model.safetensors" in r.out, "dry run: %r" % r)
    check(not emu.file_gets(), "--dry-run downloaded bytes")
    r = t.ok("pull", lib.SAMPLE_REPO, "--dry-run", "--json")
    j = r.json()
    check(j["dry_run"] and j["files_to_download"] == len(j["files"]) and j["bytes_to_download"] > 0,
          "dry-run JSON: %r" % j)
    out = os.path.join(t.tmp, "local")
    r = t.ok("pull", lib.SAMPLE_REPO, "config.json", "--local-dir", out, "-q")
    check(r.out.strip() == os.path.realpath(out), "-q prints only the path: %r" % r)
    check(os.listdir(out) == ["config.json"], "only the named file: %r" % os.listdir(out))
    cache = os.path.join(t.tmp, "cache")
    r = t.ok("pull", lib.SAMPLE_REPO, "--to", cache, "--layout", "hf-cache")
    snap = r.out.strip().splitlines()[-1]
    check(os.path.isfile(os.path.join(snap, "config.json")) and "/snapshots/" in snap,
          "the snapshot path at the end: %r" % r)
    r = t.fails("pull", lib.SAMPLE_REPO, "no-such-file.bin", rc=2, words=["no file"])


# ---- set-up -------------------------------------------------------------------------

def fake_apt(t):
    """A PATH where dpkg-query and apt-get only write down that they ran."""
    bindir = os.path.join(t.tmp, "fakebin")
    log = os.path.join(t.tmp, "apt.log")
    os.makedirs(bindir)
    for name in ("dpkg-query", "apt-get", "sudo"):
        p = os.path.join(bindir, name)
        with open(p, "w") as fh:
            fh.write("#!/bin/sh\necho %s \"$@\" >> %s\nexit 1\n" % (name, log))
        os.chmod(p, 0o755)
    return bindir, log


def test_cli_make_clean_and_dry_run_install_nothing(t):
    import shutil
    import subprocess
    bindir, log = fake_apt(t)
    tree = os.path.join(t.tmp, "tree")
    os.makedirs(tree)
    shutil.copy(os.path.join(lib.ROOT, "Makefile"), tree)
    shutil.copytree(os.path.join(lib.ROOT, "mk"), os.path.join(tree, "mk"))
    env = dict(os.environ, PATH=bindir + ":" + os.environ["PATH"])
    for args in (["clean"], ["-n"], ["-n", "all"], ["-n", "clean"]):
        p = subprocess.run(["make", "-C", tree] + args, env=env, capture_output=True, text=True, timeout=60)
        check(not os.path.exists(log), "make %s ran %s" % (" ".join(args), open(log).read() if os.path.exists(log) else ""))
    # the demo asks for python3 only
    p = subprocess.run(["sh", os.path.join(tree, "mk", "deps.sh"), "demo"], env=env, capture_output=True,
                       text=True, timeout=60)
    asked = open(log).read() if os.path.exists(log) else ""
    check("chromium" not in asked and "numpy" not in asked and "python3" in asked,
          "make demo's packages: %r" % asked)


def test_cli_make_install(t):
    import subprocess
    prefix = os.path.join(t.tmp, "prefix")
    p = subprocess.run(["make", "-s", "-C", lib.ROOT, "-o", "hubmirror", "install", "PREFIX=" + prefix],
                       capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, "make install: %s %s" % (p.stdout, p.stderr))
    for rel in ("bin/hubmirror", "share/man/man1/hubmirror.1",
                "share/bash-completion/completions/hubmirror", "share/zsh/site-functions/_hubmirror"):
        check(os.path.isfile(os.path.join(prefix, rel)), "make install did not write %s" % rel)
    man = open(os.path.join(prefix, "share/man/man1/hubmirror.1")).read()
    bash = open(os.path.join(prefix, "share/bash-completion/completions/hubmirror")).read()
    help_ = t.ok("pull", "--help", store=False, endpoint=False).out
    # one command table: every option --help shows is in the man page and the completion
    for opt in re.findall(r"--([a-z][a-z-]+)", help_):
        check(opt.replace("-", "\\-") in man, "--%s missing from the man page" % opt)
        check("--" + opt in bash, "--%s missing from the bash completion" % opt)
    p = subprocess.run(["bash", "-c", "source %s; COMP_WORDS=(hubmirror pu); COMP_CWORD=1; _hubmirror; "
                        "echo ${COMPREPLY[@]}" % os.path.join(prefix, "share/bash-completion/completions/hubmirror")],
                       capture_output=True, text=True, timeout=30)
    check(p.stdout.strip() == "pull", "bash completes 'pu' to %r" % p.stdout)


def test_cli_tables_fit_the_terminal(t):
    long_repo = "a-rather-long-organisation-name/an-even-longer-model-name-for-tables-v2"
    t.emu([many_files_repo(long_repo, n=2)])
    t.ok("pull", long_repo)
    for width in (60, 80):
        tm = term.Tmux(t, width)
        tm.run("ls")
        check(tm.wait_done() == 0, "ls failed: %s" % tm.everything())
        lines = [l.rstrip() for l in tm.everything().splitlines() if l.strip()]
        # the first line names the store; a long path may wrap
        head = "store: %s" % t.store
        check("".join(lines).startswith(head), "ls does not name its store first: %r" % lines)
        lines = lines[(len(head) + width - 1) // width:]
        check(len(lines) == 2, "ls at %d columns wrapped or lost a row: %r" % (width, lines))
        check(all(len(l) < width for l in lines), "a line as wide as the terminal: %r" % lines)
        check("..." in lines[1] and "main->" in lines[1], "the name should be cut, not the refs: %r" % lines)
        tm.kill()
    tm = term.Tmux(t, 60)
    tm.run("ls", "--no-truncate")
    check(tm.wait_done() == 0, "ls failed")
    check(long_repo in tm.tmux("capture-pane", "-p", "-J", "-S", "-", "-E", "-"),
          "--no-truncate cut the name: %s" % tm.everything())
    r = t.ok("ls", env={"COLUMNS": "40"})
    check(long_repo in r.out, "piped output must not be cut: %r" % r)
    # du's repo lists too
    tm = term.Tmux(t, 60)
    tm.run("du")
    check(tm.wait_done() == 0, "du failed: %s" % tm.everything())
    rows = [l.rstrip() for l in tm.everything().splitlines() if "..." in l]
    check(len(rows) == 2 and all(len(l) < 60 for l in rows),
          "du's two repo rows should be cut to 60 columns: %r" % tm.everything())
    tm.kill()
    tm = term.Tmux(t, 60)
    tm.run("du", "--no-truncate")
    check(tm.wait_done() == 0, "du failed")
    check(tm.tmux("capture-pane", "-p", "-J", "-S", "-", "-E", "-").count(long_repo) == 2,
          "du --no-truncate cut the name: %s" % tm.everything())
    tm.kill()


def test_cli_json_schema_everywhere(t):
    emu = t.emu([lib.sample_repo()])
    repo = lib.SAMPLE_REPO
    out = os.path.join(t.tmp, "co")
    bundle = os.path.join(t.tmp, "b.tar")
    runs = [("pull", repo), ("ls",), ("ls", repo), ("verify",), ("checkout", repo, "--to", out), ("du",),
            ("stats",), ("inspect", repo), ("export", repo, "-o", bundle), ("import", bundle), ("gc",),
            ("convert", repo), ("run", repo, "-p", "Hello", "-n", "2"), ("smoke", repo), ("rm", repo)]
    for args in runs:
        j = t.ok(*(list(args) + ["--json"])).json()
        check(j.get("schema") == 2, "%s --json has no schema 2: %s" % (args[0], list(j)))
        # convert's "type" is the GGUF tensor type (also "tensor_type"), kept while the schema is 2
        check("id" not in j and ("type" not in j or j.get("tensor_type") == j["type"]),
              "%s --json uses id/type: %s" % (args[0], list(j)))
        if args[0] in ("pull", "checkout", "rm", "convert", "run", "smoke") or args == ("ls", repo):
            check(j["repo"] == repo and j["repo_type"] == "model", "%s --json repo keys: %s" % (args[0], j))
        if args[0] in ("convert", "run", "smoke"):
            check(re.fullmatch(r"[0-9a-f]{40}", j["revision"] or ""), "%s --json revision: %s" % (args[0], j))
    # a command that fails as a whole still answers in JSON
    for args, code, rc in ((("ls", "org/never-pulled"), "not_found", 1),
                           (("pull", "org/no-such-repo"), "repo_not_found", 1),
                           (("frobnicate",), "usage", 2), (("pull",), "usage", 2)):
        r = t.hm(*(list(args) + ["--json"]))
        check(r.rc == rc, "rc of %s: %r" % (args, r))
        j = r.json()
        check(j["schema"] == 2 and j["error"]["code"] == code and j["error"]["message"],
              "%s --json error object: %s" % (args, j))


def test_cli_hf_environment(t):
    emu = t.emu([lib.sample_repo()])
    repo = lib.SAMPLE_REPO
    r = t.hm("pull", repo, env={"HF_HUB_OFFLINE": "1"})
    check(r.rc == 1 and "HF_HUB_OFFLINE" in r.err, "offline pull of a missing repo: %r" % r)
    check(not [e for e in emu.log() if e["host"] == "api" and e["path"].startswith("/api/")],
          "HF_HUB_OFFLINE=1 used the network")
    t.ok("pull", repo)
    emu.reset_log()
    cache = os.path.join(t.tmp, "hf-cache")
    r = t.ok("pull", repo, "--layout", "hf-cache", env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": cache})
    check(not [e for e in emu.log() if e["path"].startswith("/api/")],
          "offline pull of a stored repo: %r" % r)
    snap = r.out.strip().splitlines()[-1]
    check(snap.startswith(os.path.realpath(cache) + "/models--demo-org--tiny-llama/snapshots/"),
          "--layout hf-cache writes into $HF_HUB_CACHE: %r" % r)
    r = t.ok("checkout", repo, "--layout", "hf-cache", env={"HF_HOME": os.path.join(t.tmp, "hfh")})
    check(os.path.isdir(os.path.join(t.tmp, "hfh", "hub", "models--demo-org--tiny-llama")),
          "checkout --layout hf-cache without --to uses $HF_HOME/hub: %r" % r)


def test_cli_run_prompt_forms(t):
    import subprocess
    t.emu([lib.sample_repo()])
    repo = lib.SAMPLE_REPO
    t.ok("pull", repo, "-q")
    want = t.ok("run", repo, "-p", "Hello world", "-n", "6", "--json").json()["tokens"]
    got = t.ok("run", repo, "Hello", "world", "-n", "6", "--json").json()["tokens"]
    check(got == want, "positional prompt: %r vs %r" % (got, want))
    argv = [lib.BIN] + t.argv(["run", repo, "-n", "6", "--json"])
    p = subprocess.run(argv, input=b"Hello world\n", capture_output=True, env=t.environ(), timeout=120)
    check(p.returncode == 0 and json.loads(p.stdout)["tokens"] == want, "prompt from stdin: %r" % (p,))
    r = t.hm("run", repo, "Hello", "-p", "world")
    check(r.rc == 2 and "once" in r.err, "two prompts: %r" % r)
    # interactive, in a terminal: a line in, a generation out, /bye ends
    tm = term.Tmux(t, 80)
    tm.run("run", repo, "-n", "2")
    t0 = time.time()
    while ">>>" not in tm.screen() and time.time() - t0 < 120:
        time.sleep(0.1)
    tm.tmux("send-keys", "Hello world", "Enter")
    while tm.screen().count(">>>") < 2 and time.time() - t0 < 120:
        time.sleep(0.1)
    tm.tmux("send-keys", "/bye", "Enter")
    check(tm.wait_done(120) == 0, "interactive run: %s" % tm.everything())
    check(tm.everything().count(">>>") >= 2, "no second prompt after a generation: %s" % tm.everything())


def interact(t, args, lines, width, limit=120):
    """Runs hubmirror ARGS in tmux (a server of its own per width), types each
    line when the prompt is back; returns (exit status, everything on the terminal)."""
    tm = term.Tmux(t, width)
    tm.run(*args)
    t0 = time.time()
    for i, line in enumerate(lines):
        while tm.screen().count(">>>") < i + 1 and not tm.done() and time.time() - t0 < limit:
            time.sleep(0.1)
        if tm.done():
            break
        tm.tmux("send-keys", line, "Enter")
    rc = tm.wait_done(limit)
    out = tm.everything()
    tm.kill()
    return rc, out


def test_cli_run_chat_template(t):
    """Interactive run applies the model's chat template to the conversation so
    far (a template that raises on the second turn names both user turns);
    --raw and /clear do without it."""
    t.emu([lib.sample_repo()])
    repo = lib.SAMPLE_REPO
    t.ok("pull", repo, "-q")
    model = os.path.join(t.tmp, "model")
    t.ok("checkout", repo, "--to", model, "--copy")
    with open(os.path.join(model, "chat_template.jinja"), "w") as fh:
        fh.write("{% if messages|length > 2 %}{{ raise_exception('turns ' ~ (messages|length) ~ ': '"
                 " ~ messages[0].content ~ ' | ' ~ messages[2].content) }}{% endif %}"
                 "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
    rc, out = interact(t, ["run", model, "-n", "3"], ["Hello there", "and again", "/bye"], 100)
    check("interactive chat" in out, "no chat banner: %s" % out)
    check(rc == 1 and "turns 3: Hello there | and again" in out,
          "the second turn should render both user turns and the reply: rc %d %s" % (rc, out))
    # /clear forgets the conversation: the next turn is a first one again
    rc, out = interact(t, ["run", model, "-n", "3"], ["Hello there", "/clear", "and again", "/bye"], 101)
    check(rc == 0 and "turns" not in out and out.count(">>>") >= 4, "/clear: rc %d %s" % (rc, out))
    # --raw: each line a prompt of its own
    rc, out = interact(t, ["run", model, "-n", "3", "--raw"], ["Hello there", "and again", "/bye"], 102)
    check(rc == 0 and "interactive chat" not in out and out.count(">>>") >= 3, "--raw: rc %d %s" % (rc, out))
    # a template that is not valid: one warning, then lines as they are
    with open(os.path.join(model, "chat_template.jinja"), "w") as fh:
        fh.write("{% for m in messages %}{{ m.content ")
    rc, out = interact(t, ["run", model, "-n", "3"], ["Hello there", "/bye"], 103)
    check(rc == 0 and "warning" in out and "interactive chat" not in out, "bad template: rc %d %s" % (rc, out))


def test_cli_bar_follows_a_resize(t):
    progress_emu(t, big=4_000_000, rate=500_000)
    tm = term.Tmux(t, 120)
    tm.run("pull", REPO, "-c", "2")
    t0 = time.time()
    while not bar_lines(tm.screen()) and time.time() - t0 < 60:
        time.sleep(0.1)
    check(bar_lines(tm.screen()), "no bar at 120 columns")
    tm.tmux("resize-window", "-x", "60", "-y", "30")
    time.sleep(1.0)  # a few redraws
    tm.tmux("clear-history")
    seen = []
    while not tm.done() and time.time() - t0 < 90:
        seen += [l.rstrip() for l in bar_lines(tm.screen())]
        time.sleep(0.15)
    check(tm.wait_done() == 0, "pull failed: %s" % tm.everything())
    check(seen, "no bar after the resize")
    for l in seen:
        check(len(l) < 60, "after a resize to 60 columns the bar is %d wide: %r" % (len(l), l))

