"""test_tokenizer.py - the engine's tokenizer (engine/tokenizer.h) against
independent reference tokenizers from the npm registry (tests/js-tok):
llama-tokenizer-js (Llama 2's SentencePiece BPE, its vocabulary embedded),
llama3-tokenizer-js (Llama 3's byte-level BPE) and @huggingface/tokenizers
(any tokenizer.json). The embedded vocabularies are exported to
tokenizer.json files (and from those to GGUF tokenizer metadata, written
here) which the library loads through a small driver compiled against
libhubmirror.a; token ids must match the references exactly, and decoding
must give the text back. tests/js-tok/node_modules is installed with
`npm ci` when missing: no Node or no registry is a failure, never a skip."""

import fcntl
import json
import os
import shutil
import struct
import subprocess

import lib
from lib import Fail, check

ROOT = lib.ROOT
JS = os.path.join(ROOT, "tests", "js-tok")
NPM_TIMEOUT = 120

STRINGS = [
    "Hello world",
    "hello",
    " Hello",
    "  leading spaces",
    "trailing spaces   ",
    "a  b   c    d     e",
    "tabs\tand\t\ttabs",
    "line one\nline two\n\nline four",
    "\n\n\n",
    "   \n  \n",
    "Windows\r\nnewlines\r\n",
    "1234567890",
    "3.14159265358979",
    "The year 2024 has 366 days; 1,000,000 people.",
    "phone: +1 (555) 123-4567",
    "I'm sure you're right, they've said we'll go; it's John's and I'd say DON'T.",
    "UPPER lower MiXeD",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c",
    "\uc548\ub155\ud558\uc138\uc694",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "emoji \U0001f600\U0001f680 and \U0001f468\u200d\U0001f469\u200d\U0001f467 family",
    "\U0001f44d\U0001f3fd",
    "math: \u2200x \u2208 \u211d, x\u00b2 \u2265 0 \u221a\u03c0",
    "\u00a9 \u00ae \u2122 \u20ac \u00a3 \u00a5",
    "def f(x):\n    return x * 2  # double\n",
    "for (int i = 0; i < 10; i++) { printf(\"%d\\n\", i); }",
    "<html><body class=\"x\">Hi</body></html>",
    "https://huggingface.co/meta-llama/Llama-2-7b?x=1&y=2",
    "user@example.com",
    "!!!???...,,,;;;",
    "a-b_c.d/e\\f|g",
    "'quoted' \"double\" `back`",
    "zero\u200bwidth",
    "non\u00a0breaking space",
    "\u3000ideographic space",
    "combining e\u0301 and a\u0308",
    "\ufb01 ligature and \u2460 circled",
    "ALLCAPSWORDSWITHOUTSPACES",
    "supercalifragilisticexpialidocious",
    "the the the the the the",
    "x" * 200,
    " " * 17,
    "0" * 25,
    "12 345 6789 0.5 -7 1e10",
    "Mixed\u4e2d\u6587English\u6df7\u5408",
    "tab\t \tspace\t",
    "end with newline\n",
    "\u2581already has a marker",
    "ends with Z",
]

# Special tokens in the text (Llama 3 and tokenizer.json only: llama-tokenizer-js does not split them).
SPECIAL_STRINGS = [
    "<|begin_of_text|>Hello<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>",
    "text <|eot_id|> more text",
    "<|reserved_special_token_5|><|reserved_special_token_5|>",
    "almost <|eot_id| special",
]

DRIVER = r"""
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/tokenizer.h"
#include "formats/formats.h"
/* tok-driver TOKENIZER(.json|.gguf) STRINGS.json ADD_BOS -> one JSON object */
int main(int argc, char **argv)
{
	struct hm_ctx ctx = {0};
	struct eng_tok *t = NULL;
	struct fmt_gguf *g = NULL;
	json_error_t je;
	json_t *strs, *res, *arr;
	size_t i, n = strlen(argv[1]);
	if (argc < 4)
		return 2;
	if (n > 5 && !strcmp(argv[1] + n - 5, ".gguf")) {
		if (fmt_gguf_open(&ctx, argv[1], &g) || eng_tok_open_gguf(&ctx, g, &t)) {
			fprintf(stderr, "error: %s\n", ctx.errmsg);
			fmt_gguf_close(g); /* LeakSanitizer checks the driver too */
			return 1;
		}
		fmt_gguf_close(g);
	} else {
		char cfg[4096];
		FILE *f;
		snprintf(cfg, sizeof(cfg), "%.*stokenizer_config.json", (int)(n - 14), argv[1]);
		f = n > 14 && !strcmp(argv[1] + n - 14, "tokenizer.json") ? fopen(cfg, "r") : NULL;
		if (f)
			fclose(f);
		if (eng_tok_open_json(&ctx, argv[1], f ? cfg : NULL, &t)) {
			fprintf(stderr, "error: %s\n", ctx.errmsg);
			return 1;
		}
	}
	if (!(strs = json_load_file(argv[2], 0, &je)))
		return 3;
	arr = json_array();
	for (i = 0; i < json_array_size(strs); i++) {
		json_t *s = json_array_get(strs, i), *ids = json_array(), *o = json_object();
		int32_t *v;
		size_t m, dl;
		char *dec, *hex;
		if (eng_tok_encode(t, json_string_value(s), json_string_length(s), atoi(argv[3]), &v, &m)) {
			fprintf(stderr, "encode failed on string %zu\n", i);
			return 1;
		}
		for (size_t k = 0; k < m; k++)
			json_array_append_new(ids, json_integer(v[k]));
		if (eng_tok_decode_all(t, v, m, 1, &dec, &dl))
			return 1;
		hex = malloc(2 * dl + 1);
		for (size_t k = 0; k < dl; k++)
			sprintf(hex + 2 * k, "%02x", (unsigned char)dec[k]);
		hex[2 * dl] = 0;
		/* the streaming decoder must give the same bytes */
		{
			char buf[256], *cat = malloc(dl + 1);
			size_t cl = 0;
			int32_t prev = -1;
			for (size_t k = 0; k < m; k++) {
				int r;
				if (eng_tok_type(t, v[k]) == 3) {
					if (v[k] == eng_tok_bos(t))
						prev = v[k];
					continue;
				}
				r = eng_tok_decode(t, v[k], prev, buf, sizeof(buf));
				if (r < 0 || r >= (int)sizeof(buf) || cl + (size_t)r > dl || memcmp(dec + cl, buf, (size_t)r)) {
					fprintf(stderr, "streamed decode differs at string %zu token %zu\n", i, k);
					return 1;
				}
				cl += (size_t)r;
				prev = v[k];
			}
			if (cl != dl) {
				fprintf(stderr, "streamed decode short at string %zu\n", i);
				return 1;
			}
			free(cat);
		}
		json_object_set_new(o, "ids", ids);
		json_object_set_new(o, "decoded_hex", json_string(hex));
		json_array_append_new(arr, o);
		free(hex);
		free(dec);
		free(v);
	}
	res = json_object();
	json_object_set_new(res, "vocab", json_integer(eng_tok_vocab_size(t)));
	json_object_set_new(res, "bos", json_integer(eng_tok_bos(t)));
	json_object_set_new(res, "eos", json_integer(eng_tok_eos(t)));
	json_object_set_new(res, "kind", json_integer(eng_tok_kind(t)));
	json_object_set_new(res, "pre", json_string(eng_tok_pre(t)));
	json_object_set_new(res, "results", arr);
	json_dumpf(res, stdout, JSON_COMPACT);
	json_decref(res);
	json_decref(strs);
	eng_tok_free(t);
	return 0;
}
"""


def driver(t):
    """The C driver, built once per test against libhubmirror.a."""
    return lib.build_driver(t, "tok-driver", DRIVER)


def ensure_js():
    """node and tests/js-tok/node_modules (npm ci when missing); returns node."""
    node = shutil.which("node")
    if not node:
        raise Fail("node is not installed: the tokenizer reference tests need Node.js >= 18 and npm")
    pins = json.load(open(os.path.join(JS, "package.json")))["dependencies"]

    def installed():
        if not os.path.exists(os.path.join(JS, "node_modules", ".package-lock.json")):
            return False
        for name, ver in pins.items():
            pkg = os.path.join(JS, "node_modules", *name.split("/"), "package.json")
            if not os.path.exists(pkg) or json.load(open(pkg)).get("version") != ver:
                return False
        return True

    with open(os.path.join(JS, "package.json")) as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)  # one npm ci at a time
        if not installed():
            npm = shutil.which("npm")
            if not npm:
                raise Fail("npm is not installed: cannot install tests/js-tok (npm ci)")
            try:
                p = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--fetch-retries=2",
                                    "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=10000",
                                    "--fetch-timeout=30000"], cwd=JS, capture_output=True, text=True,
                                   timeout=NPM_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise Fail("`npm ci` in tests/js-tok did not finish in %d s (is the npm registry reachable?)"
                           % NPM_TIMEOUT)
            if p.returncode != 0:
                raise Fail("`npm ci --no-audit --no-fund` in tests/js-tok failed (exit %d); the tokenizer tests "
                           "need the npm registry once to install %s:\n%s"
                           % (p.returncode, pins, (p.stdout + p.stderr)[-2000:]))
            check(installed(), "npm ci did not install the pinned versions %s" % pins)
    return node


def node_run(t, args, timeout=120):
    node = ensure_js()
    env = t.environ({"NODE_PATH": None}) if hasattr(t, "environ") else None
    p = subprocess.run([node, os.path.join(JS, "reference.mjs")] + args, cwd=JS, capture_output=True,
                       text=True, timeout=timeout, env=env)
    check(p.returncode == 0, "reference.mjs %s failed (exit %d): %s" % (args[:2], p.returncode, p.stderr[-2000:]))
    return p.stdout


def export(t, which):
    out = os.path.join(t.tmp, which, "tokenizer.json")
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        info = json.loads(node_run(t, ["export", which, out]))
        check(info["vocab"] > 30000 and info["merges"] > 30000, "export of %s looks wrong: %s" % (which, info))
    return out


def references(t, strings, json_paths=()):
    spec = os.path.join(t.tmp, "spec-%d.json" % len(os.listdir(t.tmp)))
    with open(spec, "w") as fh:
        json.dump({"strings": strings, "json": list(json_paths)}, fh)
    return json.loads(node_run(t, ["encode", spec]))


def ours(t, path, strings, add_bos=1):
    spec = os.path.join(t.tmp, "strings-%d.json" % len(os.listdir(t.tmp)))
    with open(spec, "w") as fh:
        json.dump(strings, fh)
    p = subprocess.run([driver(t), path, spec, str(add_bos)], capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, "tok-driver %s failed (exit %d): %s" % (path, p.returncode, p.stderr[-2000:]))
    return json.loads(p.stdout)


def compare(name, strings, got, want):
    bad = []
    for s, g, w in zip(strings, got, want):
        if g != w:
            bad.append("%r:\n      ours %s\n      want %s" % (s, g[:40], w[:40]))
    check(not bad, "%s: %d of %d strings differ:\n    %s" % (name, len(bad), len(strings), "\n    ".join(bad[:8])))
    return sum(len(w) for w in want)


def check_round_trip(name, strings, res):
    for s, r in zip(strings, res["results"]):
        if "\u2581" in s:
            continue  # SentencePiece style: a literal U+2581 decodes as a space (as it does everywhere)
        got = bytes.fromhex(r["decoded_hex"])
        check(got == s.encode("utf-8"), "%s: decode(encode(%r)) = %r" % (name, s, got))


# ---- GGUF tokenizer metadata, written the way convert/vocab.c does ----

def gguf_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, vtype, payload):
    return gguf_str(key) + struct.pack("<I", vtype) + payload


def gguf_arr(key, elem, items):
    if elem == 8:
        body = b"".join(gguf_str(x) for x in items)
    else:
        fmt = {6: "<f", 5: "<i"}[elem]
        body = b"".join(struct.pack(fmt, x) for x in items)
    return gguf_kv(key, 9, struct.pack("<IQ", elem, len(items)) + body)


def write_gguf(path, tokenizer_json):
    """tokenizer.ggml.* from a tokenizer.json: SentencePiece style as model
    "llama" with scores -merge rank (what convert/vocab.c writes), byte-level
    as model "gpt2" with pre "llama-bpe" and the merges."""
    tj = json.load(open(tokenizer_json, encoding="utf-8"))
    vocab = tj["model"]["vocab"]
    n = max(list(vocab.values()) + [a["id"] for a in tj["added_tokens"]]) + 1
    toks = ["[PAD%d]" % i for i in range(n)]
    types = [5] * n
    for s, i in vocab.items():
        toks[i] = s
        types[i] = 1
    for a in tj["added_tokens"]:
        toks[a["id"]] = a["content"]
        types[a["id"]] = 3 if a["special"] else 4
    merges = tj["model"]["merges"]
    kvs = [gguf_kv("general.architecture", 8, gguf_str("llama"))]
    spm = tj["model"].get("byte_fallback")
    if spm:
        nm = len(merges)
        scores = [-(nm + i) for i in range(n)]
        for i, s in enumerate(toks):
            if len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
                types[i] = 6
                scores[i] = 0.0
            if types[i] in (2, 3):
                scores[i] = 0.0
        seen = set()
        for r, m in enumerate(merges):
            a, b = m.split(" ", 1)
            i = vocab.get(a + b)
            if i is not None and i not in seen:
                seen.add(i)
                scores[i] = -float(r)
        types[0] = 2
        kvs += [gguf_kv("tokenizer.ggml.model", 8, gguf_str("llama")),
                gguf_kv("tokenizer.ggml.pre", 8, gguf_str("default")),
                gguf_arr("tokenizer.ggml.tokens", 8, toks),
                gguf_arr("tokenizer.ggml.scores", 6, scores),
                gguf_arr("tokenizer.ggml.token_type", 5, types),
                gguf_kv("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 1)),
                gguf_kv("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 2)),
                gguf_kv("tokenizer.ggml.unknown_token_id", 4, struct.pack("<I", 0)),
                gguf_kv("tokenizer.ggml.add_bos_token", 7, b"\x01")]
    else:
        bos = [a["id"] for a in tj["added_tokens"] if a["content"] == "<|begin_of_text|>"][0]
        kvs += [gguf_kv("tokenizer.ggml.model", 8, gguf_str("gpt2")),
                gguf_kv("tokenizer.ggml.pre", 8, gguf_str("llama-bpe")),
                gguf_arr("tokenizer.ggml.tokens", 8, toks),
                gguf_arr("tokenizer.ggml.token_type", 5, types),
                gguf_arr("tokenizer.ggml.merges", 8, merges),
                gguf_kv("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", bos)),
                gguf_kv("tokenizer.ggml.add_bos_token", 7, b"\x01")]
    with open(path, "wb") as fh:
        fh.write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    return path


# ---- tests ----

def test_llama2_json_matches_llama_tokenizer_js(t):
    tj = export(t, "llama2")
    ref = references(t, STRINGS)
    res = ours(t, tj, STRINGS)
    check(res["vocab"] == 32000 and res["bos"] == 1 and res["eos"] == 2 and res["pre"] == "spm", res["vocab"])
    compare("llama2 tokenizer.json vs llama-tokenizer-js", STRINGS, [r["ids"] for r in res["results"]],
            ref["llama2"])
    check_round_trip("llama2", STRINGS, res)


test_llama2_json_matches_llama_tokenizer_js.timeout = 300


def test_llama2_gguf_matches_llama_tokenizer_js(t):
    gg = write_gguf(os.path.join(t.tmp, "llama2.gguf"), export(t, "llama2"))
    ref = references(t, STRINGS)
    res = ours(t, gg, STRINGS)
    check(res["vocab"] == 32000 and res["bos"] == 1, res["vocab"])
    compare("llama2 GGUF (scores) vs llama-tokenizer-js", STRINGS, [r["ids"] for r in res["results"]],
            ref["llama2"])
    check_round_trip("llama2 gguf", STRINGS, res)


test_llama2_gguf_matches_llama_tokenizer_js.timeout = 300


def test_llama3_json_matches_llama3_tokenizer_js(t):
    tj = export(t, "llama3")
    strings = STRINGS + SPECIAL_STRINGS
    ref = references(t, strings)
    res = ours(t, tj, strings)
    check(res["vocab"] == 128256 and res["bos"] == 128000 and res["pre"] == "llama-bpe", res)
    compare("llama3 tokenizer.json vs llama3-tokenizer-js", strings, [r["ids"] for r in res["results"]],
            ref["llama3"])
    # decode skips control tokens: compare the plain strings only
    check_round_trip("llama3", STRINGS, res)


test_llama3_json_matches_llama3_tokenizer_js.timeout = 300


def test_llama3_gguf_matches_llama3_tokenizer_js(t):
    gg = write_gguf(os.path.join(t.tmp, "llama3.gguf"), export(t, "llama3"))
    strings = STRINGS + SPECIAL_STRINGS
    ref = references(t, strings)
    res = ours(t, gg, strings)
    check(res["vocab"] == 128256 and res["bos"] == 128000 and res["pre"] == "llama-bpe", res)
    compare("llama3 GGUF vs llama3-tokenizer-js", strings, [r["ids"] for r in res["results"]], ref["llama3"])
    check_round_trip("llama3 gguf", STRINGS, res)


test_llama3_gguf_matches_llama3_tokenizer_js.timeout = 300


def test_tokenizer_json_matches_huggingface_tokenizers(t):
    """@huggingface/tokenizers over the repo's sample tokenizer.json and the
    two exported vocabularies: ids (BOS as each tokenizer's post-processor and
    config say) and decoded text."""
    sample = os.path.join(t.tmp, "sample")
    shutil.copytree(lib.sample_dir(), sample)
    paths = [os.path.join(sample, "tokenizer.json"), export(t, "llama2"), export(t, "llama3")]
    strings = STRINGS + SPECIAL_STRINGS[2:]
    ref = references(t, strings, paths)
    total = 0
    for p in paths:
        res = ours(t, p, strings, add_bos=-1)
        want = [r["ids"] for r in ref["json"][p]]
        total += compare("%s vs @huggingface/tokenizers" % os.path.relpath(p, t.tmp), strings,
                         [r["ids"] for r in res["results"]], want)
        for s, r, w in zip(strings, res["results"], ref["json"][p]):
            got = bytes.fromhex(r["decoded_hex"]).decode("utf-8", "replace")
            check(got == w["decoded"], "%s: decode differs for %r: ours %r, reference %r"
                  % (os.path.relpath(p, t.tmp), s, got, w["decoded"]))
    check(total > 1000, "too few ids compared: %d" % total)


test_tokenizer_json_matches_huggingface_tokenizers.timeout = 300


def test_tokenizer_refuses_hostile_files(t):
    """Malformed tokenizer.json / GGUF metadata fail cleanly, naming the problem."""
    cases = {
        "notjson": "{",
        "wordpiece": json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}}}),
        "negative-id": json.dumps({"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}}),
        "huge-id": json.dumps({"model": {"type": "BPE", "vocab": {"a": 1 << 40}, "merges": []}}),
        "bad-regex": json.dumps({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(("},
                                                   "behavior": "Isolated"},
                                 "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}),
        "bad-merge": json.dumps({"pre_tokenizer": {"type": "ByteLevel"},
                                 "model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}}),
        "no-family": json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}),
    }
    for name, text in cases.items():
        d = os.path.join(t.tmp, name)
        os.makedirs(d)
        p = os.path.join(d, "tokenizer.json")
        with open(p, "w") as fh:
            fh.write(text)
        spec = os.path.join(t.tmp, "s.json")
        with open(spec, "w") as fh:
            json.dump(["x"], fh)
        r = subprocess.run([driver(t), p, spec, "1"], capture_output=True, text=True, timeout=30)
        check(r.returncode == 1 and "error: '" in r.stderr and "tokenizer" in r.stderr,
              "%s: expected a clean refusal, got exit %d: %s" % (name, r.returncode, r.stderr))
    g = os.path.join(t.tmp, "bad.gguf")
    with open(g, "wb") as fh:
        kvs = [gguf_kv("tokenizer.ggml.model", 8, gguf_str("gpt2")),
               gguf_kv("tokenizer.ggml.pre", 8, gguf_str("no-such-pre")),
               gguf_arr("tokenizer.ggml.tokens", 8, ["a", "b"]),
               gguf_arr("tokenizer.ggml.merges", 8, ["a b"])]
        fh.write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    r = subprocess.run([driver(t), g, spec, "1"], capture_output=True, text=True, timeout=30)
    check(r.returncode == 1 and "no-such-pre" in r.stderr, "bad pre: %d %s" % (r.returncode, r.stderr))
