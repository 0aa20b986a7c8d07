"""test_hfdir.py - convert/ and engine/ read a model directory's config.json
and tokenizer_config.json through one reader (formats/hfdir.c): the same bad
file gets the same one-line error, naming the file and the field, from
`convert` and from `smoke`; the good sample still converts and runs."""

import json
import os
import shutil

import lib
from lib import check


def copy_with(t, name, fname="config.json", **changes):
    """The sample directory with changes to one JSON file (None: the key removed)."""
    d = os.path.join(t.tmp, name)
    shutil.copytree(lib.sample_dir(), d)
    p = os.path.join(d, fname)
    doc = json.load(open(p)) if os.path.exists(p) else {}
    for k, v in changes.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    json.dump(doc, open(p, "w"))
    return d


def error_line(r):
    """The error's message from the file's name on (what the command puts
    before it, "error: " or "smoke test failed: ", is the command's own)."""
    lines = [l for l in r.err.splitlines() if l.startswith("hubmirror: ")]
    check(len(lines) == 1, "not one error line: %r" % r)
    check("'" in lines[0], "the error names no file: %r" % lines[0])
    return lines[0][lines[0].index("'"):]


def test_hfdir_convert_and_engine_give_the_same_error(t):
    """The twin: each bad config.json is refused by both with the same line."""
    cases = [
        ("theta", {"rope_theta": -1}, "'rope_theta' = -1 is out of range"),
        ("kvtype", {"num_key_value_heads": "4"}, "'num_key_value_heads' is not an integer"),
        ("kvzero", {"num_key_value_heads": 0}, "'num_key_value_heads' = 0 is out of range"),
        ("eps", {"rms_norm_eps": 5}, "'rms_norm_eps' = 5 is out of range"),
        ("noff", {"intermediate_size": None}, "config.json has no 'intermediate_size'"),
        ("rope", {"rope_scaling": {"rope_type": "linear", "factor": "2"}}, "'rope_scaling.factor' is not a number"),
        ("tie", {"tie_word_embeddings": "yes"}, "'tie_word_embeddings' is not true or false"),
    ]
    out = os.path.join(t.tmp, "x.gguf")
    for name, changes, words in cases:
        d = copy_with(t, name, **changes)
        where = "'%s': " % os.path.join(d, "config.json")
        a = error_line(t.fails("convert", d, "-o", out, words=(words,)))
        b = error_line(t.fails("smoke", d, words=(words,)))
        check(a == b, "%s: convert and smoke disagree:\n  %s\n  %s" % (name, a, b))
        check(a.startswith(where), "%s: the file is not named first: %r" % (name, a))
    check(not os.path.exists(out), "a bad config.json left an output")


def test_hfdir_tokenizer_config_same_error(t):
    """tokenizer_config.json is read by the same reader on both sides."""
    d = copy_with(t, "tokcfg", "tokenizer_config.json", bos_token=7)
    words = "'bos_token' is not a string or {\"content\": string}"
    a = error_line(t.fails("convert", d, "-o", os.path.join(t.tmp, "y.gguf"), words=(words,)))
    b = error_line(t.fails("smoke", d, words=(words,)))
    check(a == b, "convert and smoke disagree:\n  %s\n  %s" % (a, b))
    check(a.startswith("'%s': " % os.path.join(d, "tokenizer_config.json")), "the file is not named first: %r" % a)


def test_hfdir_good_sample_still_runs(t):
    """The happy path the twins break: the sample converts and smoke-tests."""
    d = copy_with(t, "good")
    t.ok("convert", d, "--type", "f32", "-o", os.path.join(t.tmp, "g.gguf"))
    r = t.hm("smoke", d)
    check(r.rc == 0, "smoke of the sample: %r" % r)
