"""test_run.py - `hubmirror run` and `hubmirror smoke` on the sample model:
from the store, from a directory; JSON fields; determinism; failures."""

import json
import os
import shutil

import lib
from lib import SAMPLE_REPO, check


def pulled(t):
    t.emu()
    t.ok("pull", SAMPLE_REPO, "-q")


def test_smoke_stored_model_passes(t):
    pulled(t)
    r = t.ok("smoke", SAMPLE_REPO)
    check(r.out.startswith("PASS"), "smoke output: %r" % r.out)
    j = t.ok("smoke", SAMPLE_REPO, "--json", "--tokens", "8").json()
    check(j["pass"] is True and j["reason"] == "", "json: %r" % j)
    check(j["gen_tokens"] >= 1 and j["prompt_tokens"] >= 1, "token counts: %r" % j)
    check(j["load_s"] >= 0 and j["gen_tps"] > 0 and j["peak_rss"] > 0, "figures: %r" % j)
    check(j["format"] == "safetensors", "format %r" % j["format"])


def test_smoke_expect_fails_with_reason(t):
    pulled(t)
    r = t.fails("smoke", SAMPLE_REPO, "--expect", "this will never be generated")
    check("does not contain" in r.err and r.out.startswith("FAIL"), "unclear failure: %r" % r)


def test_run_json_and_determinism(t):
    pulled(t)
    a = t.ok("run", SAMPLE_REPO, "-p", "Hello world", "-n", "10", "--json").json()
    b = t.ok("run", SAMPLE_REPO, "-p", "Hello world", "-n", "10", "--json").json()
    for k in ("tokens", "text", "prompt_tokens", "timings"):
        check(k in a, "run --json lacks %r: %r" % (k, a))
    check(len(a["tokens"]) >= 1 and a["prompt_tokens"] >= 2, "counts %r" % a)
    check(a["tokens"] == b["tokens"], "greedy runs differ: %s vs %s" % (a["tokens"], b["tokens"]))
    s1 = t.ok("run", SAMPLE_REPO, "-p", "Hello", "-n", "10", "--temp", "1.5", "--seed", "7", "--json").json()
    s2 = t.ok("run", SAMPLE_REPO, "-p", "Hello", "-n", "10", "--temp", "1.5", "--seed", "7", "--json").json()
    check(s1["tokens"] == s2["tokens"], "same seed, different tokens")
    # the plain form streams text to stdout and reports speeds on stderr
    r = t.ok("run", SAMPLE_REPO, "-p", "Hello world", "-n", "10")
    check(len(r.out.strip("\n")) > 0, "nothing streamed: %r" % r)
    check("prompt tokens" in r.err and "tok/s" in r.err, "no timings on stderr: %r" % r.err)


def test_run_from_directory_matches_store(t):
    pulled(t)
    dest = os.path.join(t.tmp, "model")
    t.ok("checkout", SAMPLE_REPO, "--to", dest)
    a = t.ok("run", dest, "-p", "abc", "-n", "6", "--json").json()
    b = t.ok("run", SAMPLE_REPO, "-p", "abc", "-n", "6", "--json").json()
    check(a["tokens"] == b["tokens"], "directory and store runs differ")


def test_smoke_broken_models_fail_clearly(t):
    pulled(t)
    base = os.path.join(t.tmp, "model")
    t.ok("checkout", SAMPLE_REPO, "--to", base, "--copy")
    cases = {}
    # truncated weights
    d = os.path.join(t.tmp, "trunc")
    shutil.copytree(base, d)
    p = os.path.join(d, "model.safetensors")
    os.truncate(p, os.path.getsize(p) // 2)
    cases["trunc"] = d
    # a config whose shapes disagree with the tensors
    d = os.path.join(t.tmp, "shape")
    shutil.copytree(base, d)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["hidden_size"] = cfg["hidden_size"] * 2
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    cases["shape"] = d
    # absurd sizes
    d = os.path.join(t.tmp, "absurd")
    shutil.copytree(base, d)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["num_hidden_layers"] = 10 ** 9
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    cases["absurd"] = d
    # no tokenizer
    d = os.path.join(t.tmp, "notok")
    shutil.copytree(base, d)
    os.unlink(os.path.join(d, "tokenizer.json"))
    cases["notok"] = d
    for name, d in cases.items():
        r = t.hm("smoke", d)
        check(r.rc == 1, "%s: expected exit 1: %r" % (name, r))
        check("FAIL" in r.out and "smoke test failed" in r.err, "%s: unclear: %r" % (name, r))
    r = t.hm("run", os.path.join(t.tmp, "nope"), "-p", "x")
    check(r.rc == 1 and "hubmirror: " in r.err, "missing model: %r" % r)
    r = t.hm("run", SAMPLE_REPO)
    check(r.rc == 2, "run without --prompt: %r" % r)


def test_smoke_results_recorded_and_listed(t):
    pulled(t)
    t.ok("smoke", SAMPLE_REPO, "-q")
    t.fails("smoke", SAMPLE_REPO, "--expect", "never ever")
    rows = t.db("SELECT pass, reason, model, commit_sha, architecture, engine_version FROM smoke_results ORDER BY id")
    check(len(rows) == 2 and rows[0]["pass"] == 1 and rows[1]["pass"] == 0, "smoke rows: %r" % rows)
    # what ran: the architecture and the engine's version, for a later engine to re-check
    check(all(r["architecture"] == "llama" and r["engine_version"] for r in rows), "smoke rows: %r" % rows)
    check("never ever" in rows[1]["reason"], "reason not recorded: %r" % rows[1])
    j = t.ok("ls", SAMPLE_REPO, "--json").json()
    check([s["pass"] for s in j["smoke"]] == [False, True], "ls --json smoke: %r" % j["smoke"])
    check(j["smoke"][0]["commit"] == j["revision"], "smoke commit: %r" % j["smoke"][0])
    check(j["smoke"][0]["architecture"] == "llama" and j["smoke"][0]["engine_version"] == rows[0]["engine_version"],
          "ls --json smoke: %r" % j["smoke"][0])
    r = t.ok("ls", SAMPLE_REPO)
    check("smoke tests" in r.out and "PASS" in r.out and "FAIL" in r.out, "ls text: %r" % r.out)
    check("llama, engine %s" % rows[0]["engine_version"] in r.out, "ls text: %r" % r.out)
    # a model given as a path is tested but not recorded (it is not in the store)
    dest = os.path.join(t.tmp, "m")
    t.ok("checkout", SAMPLE_REPO, "--to", dest)
    t.ok("smoke", dest, "-q")
    check(len(t.db("SELECT * FROM smoke_results")) == 2, "a path's smoke test was recorded")


def test_pull_convert_smoke_in_one_command(t):
    t.emu()
    r = t.ok("pull", SAMPLE_REPO, "--convert", "q8_0", "--smoke", "--json")
    j = r.json()  # still exactly one JSON object on stdout
    check(j["repo"] == SAMPLE_REPO, "pull json: %r" % j)
    check("smoke PASS" in r.err, "no smoke verdict on stderr: %r" % r.err)
    arts = t.db("SELECT format, options, sha256 FROM artifacts")
    check(len(arts) == 1 and arts[0]["format"] == "gguf" and "q8_0" in arts[0]["options"], "artifacts %r" % arts)
    rows = t.db("SELECT pass, artifact_sha256 FROM smoke_results")
    check(len(rows) == 1 and rows[0]["pass"] == 1 and rows[0]["artifact_sha256"] == arts[0]["sha256"],
          "smoke of the conversion not recorded: %r" % rows)
    # ls shows which stored conversions passed
    j = t.ok("ls", SAMPLE_REPO, "--json").json()
    check([a["smoke"] for a in j["artifacts"]] == ["pass"], "ls --json artifacts: %r" % j["artifacts"])
    check("smoke: PASS (engine " in t.ok("ls", SAMPLE_REPO).out, "ls text shows no verdict of the conversion")
    t.ok("convert", SAMPLE_REPO, "--type", "f16", "-q")
    j = t.ok("ls", SAMPLE_REPO, "--json").json()
    check(sorted(a["smoke"] for a in j["artifacts"]) == ["pass", "untested"], "ls --json: %r" % j["artifacts"])
    # the plain form smokes the pulled checkpoint itself
    t.ok("pull", SAMPLE_REPO, "--smoke", "-q")
    rows = t.db("SELECT pass, artifact_sha256 FROM smoke_results ORDER BY id")
    check(len(rows) == 2 and rows[1]["artifact_sha256"] is None and rows[1]["pass"] == 1, "rows %r" % rows)
    # a bad type fails clearly (after the pull, which stands)
    r = t.hm("pull", SAMPLE_REPO, "--convert", "q3_weird")
    check(r.rc != 0 and "hubmirror: " in r.err, "bad --convert type: %r" % r)


def test_gc_clears_engine_scratch_but_not_blobs(t):
    pulled(t)
    t.ok("smoke", SAMPLE_REPO, "-q")
    run_dir = os.path.join(t.store, "tmp", "run")
    check(os.path.isdir(run_dir), "no engine checkout under tmp/run")
    os.makedirs(os.path.join(t.store, "tmp", "convert-123-abc.d"))
    t.ok("gc")
    check(not os.path.exists(run_dir), "gc left tmp/run")
    check(not os.path.exists(os.path.join(t.store, "tmp", "convert-123-abc.d")), "gc left convert debris")
    for sha, p in lib.store_blobs(t.store)[0].items():
        check(os.stat(p).st_mode & 0o222 == 0, "a blob became writable: %s" % p)
    t.ok("verify")
    t.ok("smoke", SAMPLE_REPO, "-q")  # recreated on demand
