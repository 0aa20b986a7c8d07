"""test_convert.py - `hubmirror convert` against independent implementations:
a GGUF parser and a numpy converter of the same mapping written here (from
llama.cpp's convert_hf_to_gguf.py and ggml's reference quantizers), a
Python BPE tokenizer and a numpy forward pass of the sample model, and a
real llama.cpp (node-llama-cpp, tests/js-gguf) loading the output.

Needs python3-numpy (mk/deps.sh test installs it); the llama.cpp test needs
Node.js and, once, the npm registry (npm ci in tests/js-gguf)."""

import fcntl
import json
import os
import shutil
import struct
import subprocess

import numpy as np

import lib
from lib import check, Fail, SAMPLE_REPO

JS = os.path.join(lib.ROOT, "tests", "js-gguf")
SP = "\u2581"
TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "bf16": 30}
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32}
BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 8: (32, 34), 30: (1, 2)}
LLAMA3_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
             "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


# ---- an independent GGUF reader --------------------------------------------

def gguf_read(path):
    """{key: value}, {name: (ne, type, bytes)}, alignment, data offset."""
    data = lib.read(path)
    off = [0]

    def take(fmt):
        v = struct.unpack_from("<" + fmt, data, off[0])
        off[0] += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        n = take("Q")
        s = data[off[0]:off[0] + n].decode("utf-8")
        off[0] += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(scalar[t])

    check(data[:4] == b"GGUF", "not GGUF")
    off[0] = 4
    check(take("I") == 3, "GGUF version")
    nt, nkv = take("Q"), take("Q")
    kv, types = {}, {}
    for _ in range(nkv):
        k = string()
        t = take("I")
        kv[k] = value(t)
        types[k] = t
    infos = []
    for _ in range(nt):
        name = string()
        nd = take("I")
        ne = [take("Q") for _ in range(nd)]
        infos.append((name, ne, take("I"), take("Q")))
    align = kv.get("general.alignment", 32)
    base = (off[0] + align - 1) // align * align
    tensors = {}
    expect = 0
    for name, ne, t, o in infos:
        bs, ts = BLOCK[t]
        n = int(np.prod(ne))
        size = n // bs * ts
        check(o == expect, "%s: offset %d, expected %d" % (name, o, expect))
        tensors[name] = (ne, t, data[base + o:base + o + size])
        expect = (o + size + align - 1) // align * align
    check(len(data) >= base + expect - (expect - (infos[-1][3] + len(tensors[infos[-1][0]][2]))), "file too short")
    return kv, types, tensors, [i[0] for i in infos]


# ---- an independent safetensors reader and converter ------------------------

def st_read(path):
    data = lib.read(path)
    n = struct.unpack_from("<Q", data)[0]
    h = json.loads(data[8:8 + n])
    h.pop("__metadata__", None)
    out = {}
    for name, e in h.items():
        b0, b1 = e["data_offsets"]
        raw = data[8 + n + b0:8 + n + b1]
        if e["dtype"] == "F32":
            a = np.frombuffer(raw, "<f4")
        elif e["dtype"] == "F16":
            a = np.frombuffer(raw, "<f2").astype(np.float32)
        elif e["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise Fail("dtype %s" % e["dtype"])
        out[name] = a.reshape(e["shape"]).astype(np.float32)
    return out


def roundf(x):
    """C roundf (half away from zero), exactly, in float32."""
    t = np.trunc(x)
    return t + np.where(np.abs(x - t) >= np.float32(0.5), np.sign(x), np.float32(0)).astype(np.float32)


def q8_0(a):
    b = a.reshape(-1, 32).astype(np.float32)
    d = (np.abs(b).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = roundf((b * inv).astype(np.float32)).astype(np.int8)
    return np.concatenate([d.astype("<f2").view(np.uint8), q.view(np.uint8)], axis=1).tobytes()


def q4_0(a):
    b = a.reshape(-1, 32).astype(np.float32)
    idx = np.abs(b).argmax(axis=1)  # the first of equal magnitudes, as ggml's strict <
    mx = b[np.arange(len(b)), idx][:, None]
    d = (mx / np.float32(-8)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = np.minimum(15, np.trunc((b * inv).astype(np.float32) + np.float32(8.5)).astype(np.int8)).astype(np.uint8)
    qs = q[:, :16] | (q[:, 16:] << 4)
    return np.concatenate([d.astype("<f2").view(np.uint8), qs], axis=1).tobytes()


def bf16(a):
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    r[nan] = ((u[nan] >> 16) | 64).astype(np.uint16)
    return r.astype("<u2").tobytes()


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def reference(weights, cfg, qtype):
    """{gguf name: (ne, type, bytes)} as convert_hf_to_gguf.py would write them."""
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    out = {}
    for name, w in weights.items():
        if name.startswith("model.layers."):
            parts = name.split(".")
            base = ".".join(parts[3:-1])
            new = "blk.%s.%s.%s" % (parts[2], layer[base], parts[-1])
            if base == "self_attn.q_proj":
                w = permute(w, nh)
            elif base == "self_attn.k_proj":
                w = permute(w, nkv)
        else:
            new = names[name]
            if new == "output.weight" and cfg.get("tie_word_embeddings"):
                continue
        ne = list(reversed(w.shape))
        if w.ndim <= 1 or new.endswith("_norm.weight") or qtype == "f32":
            t, b = 0, w.astype("<f4").tobytes()
        elif qtype == "f16":
            t, b = 1, w.astype("<f2").tobytes()
        elif qtype == "bf16":
            t, b = 30, bf16(w)
        elif ne[0] % 32:
            t, b = 1, w.astype("<f2").tobytes()
        elif qtype == "q8_0":
            t, b = 8, q8_0(w)
        else:
            t, b = 2, q4_0(w)
        out[new] = (ne, t, b)
    return out


# ---- the tokenizer, independently ------------------------------------------

def spm_reference(tok):
    """tokens, scores, types as documented in convert/vocab.c."""
    vocab = tok["model"]["vocab"]
    merges = tok["model"]["merges"]
    n = len(vocab)
    tokens = [None] * n
    for t, i in vocab.items():
        tokens[i] = t
    special = {a["id"] for a in tok["added_tokens"] if a["special"]}
    unk = tok["model"]["unk_token"]
    types, scores = [], [0.0] * n
    for i, t in enumerate(tokens):
        if t == unk:
            types.append(2)
        elif i in special:
            types.append(3)
        elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            types.append(6)
        else:
            types.append(1)
    made = set()
    for r, m in enumerate(merges):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        i = vocab.get(a + b)
        if i is not None and i not in made:
            made.add(i)
            scores[i] = -float(r)
    for i in range(n):
        if i not in made and types[i] == 1:
            scores[i] = -float(len(merges) + i)
    return tokens, scores, types


def spm_encode(tok, text):
    """HF tokenizers' BPE with byte fallback after the Llama-2 normalizer."""
    vocab = tok["model"]["vocab"]
    ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(tok["model"]["merges"])}
    syms = list(SP + text.replace(" ", SP))
    while True:
        best = None
        for i in range(len(syms) - 1):
            r = ranks.get((syms[i], syms[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        syms[i:i + 2] = [syms[i] + syms[i + 1]]
    ids = []
    for s in syms:
        if s in vocab:
            ids.append(vocab[s])
        else:
            ids.extend(vocab["<0x%02X>" % b] for b in s.encode())
    return ids


def bytelevel_tokenizer():
    """A tiny byte-level BPE tokenizer.json (Llama 3 layout) and its config."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {c: i for i, c in enumerate(chars)}
    merges = [["\u0120", "t"], ["h", "e"], ["\u0120t", "he"], ["i", "n"], ["\u0120", "a"], ["o", "n"]]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    added = [{"id": len(vocab) + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": s}
             for i, (c, s) in enumerate([("<|begin_of_text|>", True), ("<|end_of_text|>", True),
                                         ("<|user_tag|>", False)])]
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
           "normalizer": None,
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
           "post_processor": {"type": "Sequence", "processors": [
               {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
               {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [], "special_tokens": {}}]},
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                     "ignore_merges": True, "vocab": vocab, "merges": merges}}
    cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
           "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
           "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, cfg


# ---- helpers ---------------------------------------------------------------

def sample_copy(t, name="model", **config):
    """A copy of the sample checkpoint directory with config.json changes."""
    d = os.path.join(t.tmp, name)
    shutil.copytree(lib.sample_dir(), d)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg.update(config)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    return d


def write_st(path, tensors):
    """tensors: {name: (dtype, shape, bytes)}."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for k, (dt, shape, b) in tensors.items():
        header[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(b)]}
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + b"".join(v[2] for v in tensors.values()))


def check_against_reference(path, model_dir, qtype, cfg=None):
    kv, types, tensors, order = gguf_read(path)
    cfg = cfg or json.load(open(os.path.join(model_dir, "config.json")))
    weights = {}
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        for shard in sorted(set(json.load(open(index))["weight_map"].values())):
            weights.update(st_read(os.path.join(model_dir, shard)))
    else:
        weights = st_read(os.path.join(model_dir, "model.safetensors"))
    ref = reference(weights, cfg, qtype)
    check(set(ref) == set(tensors), "%s: tensor names differ: %r" % (qtype, set(ref) ^ set(tensors)))
    for name, (ne, t, b) in ref.items():
        gne, gt, gb = tensors[name]
        check(gne == ne, "%s %s: ne %r, reference %r" % (qtype, name, gne, ne))
        check(gt == t, "%s %s: type %d, reference %d" % (qtype, name, gt, t))
        if gb != b:
            diff = next(i for i in range(len(b)) if gb[i] != b[i])
            raise Fail("%s %s: bytes differ from the reference at %d of %d" % (qtype, name, diff, len(b)))
    hd = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    expect = {"general.architecture": "llama", "general.type": "model",
              "llama.block_count": cfg["num_hidden_layers"],
              "llama.context_length": cfg["max_position_embeddings"],
              "llama.embedding_length": cfg["hidden_size"],
              "llama.feed_forward_length": cfg["intermediate_size"],
              "llama.attention.head_count": cfg["num_attention_heads"],
              "llama.attention.head_count_kv": cfg["num_key_value_heads"],
              "llama.rope.dimension_count": hd, "llama.vocab_size": weights["model.embed_tokens.weight"].shape[0],
              "general.file_type": FILE_TYPE[qtype], "general.quantization_version": 2}
    for k, v in expect.items():
        check(kv.get(k) == v, "%s: %s = %r, expected %r" % (qtype, k, kv.get(k), v))
        check(isinstance(v, str) or types[k] == 4, "%s: %s is not u32 (type %d)" % (qtype, k, types[k]))
    check(np.float32(kv["llama.rope.freq_base"]) == np.float32(cfg["rope_theta"]), "freq_base")
    check(np.float32(kv["llama.attention.layer_norm_rms_epsilon"]) == np.float32(cfg["rms_norm_eps"]), "eps")
    check(types["llama.rope.freq_base"] == 6 and types["llama.attention.layer_norm_rms_epsilon"] == 6, "f32 keys")
    return kv, tensors


# ---- tests -----------------------------------------------------------------

def test_convert_dir_matches_reference(t):
    d = lib.sample_dir()
    tok = json.load(open(os.path.join(d, "tokenizer.json")))
    tokens, scores, ttypes = spm_reference(tok)
    for qtype in ("f32", "f16", "bf16", "q8_0", "q4_0"):
        out = os.path.join(t.tmp, "out-%s.gguf" % qtype)
        # a directory's conversion is hashed only on request (--sha256)
        hashed = qtype in ("f16", "q4_0")
        j = t.ok("convert", d, "--type", qtype, "-o", out, "--json", *(["--sha256"] if hashed else [])).json()
        check(j["size"] == os.path.getsize(out), "size: %r" % j)
        check(j["sha256"] == (lib.sha256_file(out) if hashed else None), "sha256: %r" % j)
        check(j["cached"] is False and j["stored"] is False, "a directory's conversion is not stored: %r" % j)
        kv, tensors = check_against_reference(out, d, qtype)
        check(len(tensors) == 21 and j["tensors"] == 21, "21 tensors (lm_head kept, untied): %d" % len(tensors))
        check(kv["tokenizer.ggml.model"] == "llama" and kv["tokenizer.ggml.pre"] == "default", "spm model/pre")
        check(kv["tokenizer.ggml.tokens"] == tokens, "tokens differ")
        check(kv["tokenizer.ggml.token_type"] == ttypes, "token types differ")
        check([np.float32(s) for s in kv["tokenizer.ggml.scores"]] == [np.float32(s) for s in scores],
              "scores differ")
        check(kv["tokenizer.ggml.bos_token_id"] == 1 and kv["tokenizer.ggml.eos_token_id"] == 2 and
              kv["tokenizer.ggml.unknown_token_id"] == 0, "special ids")
        check(kv["tokenizer.ggml.add_bos_token"] is True and kv["tokenizer.ggml.add_eos_token"] is False, "adds")
        check("tokenizer.ggml.merges" not in kv and "output.weight" in tensors, "spm: no merges")
        check(kv["general.name"] == "sample", "general.name %r" % kv["general.name"])
        check(j["tokenizer"] == "llama" and j["vocab"] == len(tokens), "json tokenizer: %r" % j)
        check(not [f for f in os.listdir(t.tmp) if "unverified" in f or ".tmp-" in f], "temp files left")
    # default output name in the current directory
    r = t.ok("convert", d, "--type", "q8_0")
    check(os.path.exists(os.path.join(t.cwd, "sample-q8_0.gguf")), "default -o: %r" % r)
    check("checked:" in r.out and "sha256" not in r.out, "text report: %r" % r)
    r = t.ok("convert", d, "--type", "q8_0", "--sha256", "-o", "hashed.gguf")
    check("sha256 " + lib.sha256_file(os.path.join(t.cwd, "hashed.gguf")) in r.out, "--sha256 text: %r" % r)


def test_convert_store_cache_ls_gc_rm(t):
    t.emu()
    t.ok("pull", SAMPLE_REPO)
    j = t.ok("convert", SAMPLE_REPO, "--type", "q8_0", "--json").json()
    check(j["cached"] is False and j["stored"] is True and len(j["revision"]) == 40, "first: %r" % j)
    blob = t.blob(j["sha256"])
    check(os.path.exists(blob) and lib.sha256_file(blob) == j["sha256"], "blob stored under its sha256")
    check(not os.access(blob, os.W_OK) or os.geteuid() == 0, "blob read-only")
    check_against_reference(blob, lib.sample_dir(), "q8_0")
    rows = t.db("SELECT * FROM artifacts")
    check(len(rows) == 1 and rows[0]["sha256"] == j["sha256"] and rows[0]["commit_sha"] == j["revision"] and
          rows[0]["options"].startswith("type=q8_0") and rows[0]["size"] == j["size"] and
          rows[0]["repo"] == SAMPLE_REPO and rows[0]["format"] == "gguf", "row: %r" % rows)
    out = os.path.join(t.tmp, "again.gguf")
    j2 = t.ok("convert", SAMPLE_REPO, "--type", "q8_0", "-o", out, "--json").json()
    check(j2["cached"] is True and j2["sha256"] == j["sha256"], "second is a cache hit: %r" % j2)
    check(lib.sha256_file(out) == j["sha256"] and os.access(out, os.W_OK), "-o on a hit writes the same bytes")
    r = t.ok("convert", SAMPLE_REPO, "--type", "q8_0")
    check("cache hit" in r.out, "text says cache hit: %r" % r)
    j3 = t.ok("convert", SAMPLE_REPO, "--type", "f16", "--json").json()
    check(j3["cached"] is False and j3["sha256"] != j["sha256"], "another type converts")
    j4 = t.ok("convert", SAMPLE_REPO, "--type", "q8_0", "--force", "--json").json()
    check(j4["cached"] is False and j4["sha256"] == j["sha256"], "--force converts again, same bytes: %r" % j4)
    check(len(t.db("SELECT * FROM artifacts")) == 2, "one row per (revision, options)")
    ls = t.ok("ls", SAMPLE_REPO)
    check("conversions" in ls.out and j["sha256"] in ls.out and "type=q8_0" in ls.out, "ls text: %r" % ls)
    lj = t.ok("ls", SAMPLE_REPO, "--json").json()
    check({a["sha256"] for a in lj["artifacts"]} == {j["sha256"], j3["sha256"]}, "ls json: %r" % lj["artifacts"])
    t.ok("gc")
    check(os.path.exists(blob), "gc keeps an artifact's blob")
    t.ok("rm", SAMPLE_REPO)
    check(t.db("SELECT * FROM artifacts") == [], "rm drops the repo's artifacts")
    t.ok("gc")
    check(not os.path.exists(blob), "gc then removes the blob")
    lib.check_store_consistent(t.store)
    t.fails("convert", SAMPLE_REPO, words=("not found", "neither"))


def test_convert_bytelevel_bpe(t):
    d = sample_copy(t, "bpe-model")
    tok, tcfg = bytelevel_tokenizer()
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        os.remove(os.path.join(d, f))
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"))
    json.dump(tcfg, open(os.path.join(d, "tokenizer_config.json"), "w"))
    out = os.path.join(t.tmp, "bpe.gguf")
    j = t.ok("convert", d, "--type", "f16", "-o", out, "--json").json()
    kv, _, _, _ = gguf_read(out)
    check(kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "llama-bpe", "gpt2/llama-bpe")
    n = json.load(open(os.path.join(d, "config.json")))["vocab_size"]
    toks = kv["tokenizer.ggml.tokens"]
    check(len(toks) == n and len(kv["tokenizer.ggml.token_type"]) == n, "padded to the embedding rows")
    vocab = tok["model"]["vocab"]
    for s, i in vocab.items():
        check(toks[i] == s, "token %d: %r vs %r" % (i, toks[i], s))
    nv = len(vocab)
    check(toks[nv:nv + 3] == ["<|begin_of_text|>", "<|end_of_text|>", "<|user_tag|>"], "added tokens")
    check(toks[nv + 3] == "[PAD%d]" % (nv + 3), "padding tokens: %r" % toks[nv + 3])
    tt = kv["tokenizer.ggml.token_type"]
    check(tt[:nv] == [1] * nv and tt[nv:nv + 3] == [3, 3, 4] and tt[nv + 3] == 4, "token types: %r" % tt[nv - 1:nv + 4])
    check(kv["tokenizer.ggml.merges"] == ["%s %s" % (a, b) for a, b in tok["model"]["merges"]], "merges")
    check("tokenizer.ggml.scores" not in kv, "no scores for gpt2")
    check(kv["tokenizer.ggml.bos_token_id"] == nv and kv["tokenizer.ggml.eos_token_id"] == nv + 1, "bos/eos")
    check(kv["tokenizer.ggml.add_bos_token"] is True and kv["tokenizer.ggml.add_eos_token"] is False,
          "add_bos/add_eos from the template processor")
    check(kv["tokenizer.chat_template"] == tcfg["chat_template"], "chat template")
    check(j["tokenizer"] == "gpt2" and j["pre"] == "llama-bpe", "json: %r" % j)
    # other pre-tokenizers
    for pre, expect in (({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "gpt-2"),
                        ({"type": "Sequence", "pretokenizers": [
                            {"type": "Digits", "individual_digits": True},
                            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}]}, "smollm"),
                        ({"type": "Split", "pattern": {"Regex": LLAMA3_RE.replace("\\p{N}{1,3}", "\\p{N}")},
                          "behavior": "Isolated"}, "qwen2"),
                        ({"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated"}, "default")):
        tok["pre_tokenizer"] = pre
        json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"))
        j = t.ok("convert", d, "--type", "f32", "-o", out, "--json").json()
        check(j["pre"] == expect and gguf_read(out)[0]["tokenizer.ggml.pre"] == expect,
              "pre for %r: %r" % (pre, j["pre"]))
        check(j["pre_recognized"] is (expect != "default"), "pre_recognized: %r" % j)
    # the unknown one is said aloud (llama.cpp's converter refuses it)
    r = t.ok("convert", d, "--type", "f32", "-o", out)
    check("warning" in r.err and "pre-tokenizer" in r.err and "default" in r.err, "warning: %r" % r.err)
    tok["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"))
    r = t.ok("convert", d, "--type", "f32", "-o", out)
    check("warning" not in r.err, "no warning for a known one: %r" % r.err)


def test_convert_variants(t):
    """Tied embeddings, Mistral, a sharded BF16 checkpoint, llama3 rope."""
    src = st_read(os.path.join(lib.sample_dir(), "model.safetensors"))
    d = sample_copy(t, "tied", tie_word_embeddings=True, architectures=["MistralForCausalLM"])
    os.remove(os.path.join(d, "model.safetensors"))
    bf = {}
    for k, v in src.items():
        if k == "lm_head.weight":
            continue
        u = v.view(np.uint32) >> 16
        bf[k] = ("BF16", list(v.shape), u.astype("<u2").tobytes())
    keys = sorted(bf)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    wm = {}
    for shard, ks in shards.items():
        write_st(os.path.join(d, shard), {k: bf[k] for k in ks})
        wm.update({k: shard for k in ks})
    json.dump({"metadata": {"total_size": 0}, "weight_map": wm},
              open(os.path.join(d, "model.safetensors.index.json"), "w"))
    cfg = json.load(open(os.path.join(d, "config.json")))
    for qtype in ("f16", "q8_0", "bf16"):
        out = os.path.join(t.tmp, "tied-%s.gguf" % qtype)
        j = t.ok("convert", d, "--type", qtype, "-o", out, "--json").json()
        kv, tensors = check_against_reference(out, d, qtype, cfg)
        check("output.weight" not in tensors and len(tensors) == 20, "tied: no output.weight")
        check(j["architecture"] == "MistralForCausalLM", "arch: %r" % j)
        if qtype == "bf16":
            # BF16 in, BF16 out: the very same bytes
            check(tensors["blk.0.ffn_up.weight"][2] == bf["model.layers.0.mlp.up_proj.weight"][2], "bf16 copy")
    # llama3 rope scaling adds rope_freqs.weight
    d3 = sample_copy(t, "rope3", rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192})
    out = os.path.join(t.tmp, "rope3.gguf")
    t.ok("convert", d3, "--type", "f32", "-o", out)
    kv, _, tensors, _ = gguf_read(out)
    hd = 48
    freqs = 1.0 / (np.float32(500000.0) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))
    want = []
    for f in freqs:
        wl = 2 * np.pi / f
        if wl < 8192 / 4.0:
            want.append(1.0)
        elif wl > 8192 / 1.0:
            want.append(32.0)
        else:
            s = (8192 / wl - 1.0) / (4.0 - 1.0)
            want.append(1 / ((1 - s) / 32.0 + s))
    got = np.frombuffer(tensors["rope_freqs.weight"][2], "<f4")
    check(np.allclose(got, np.array(want, np.float32), rtol=1e-5), "rope_freqs %r vs %r" % (got[:4], want[:4]))


def test_convert_refuses(t):
    d = lib.sample_dir()
    out = os.path.join(t.tmp, "x.gguf")
    t.fails("convert", d, "--type", "q3_k", rc=2, words=("unknown --type",))
    t.fails("convert", d, "--to", "onnx", rc=2, words=("unknown --to",))
    t.fails("convert", os.path.join(d, "config.json"), rc=2, words=("not a directory",))
    t.fails("convert", d, "--to", "safetensors", rc=2, words=("-o",))
    t.fails("convert", "nobody/nothing", words=("neither", "not found", "not a hubmirror store"))
    bad = sample_copy(t, "neox", architectures=["GPTNeoXForCausalLM"])
    t.fails("convert", bad, "-o", out, words=("unsupported architecture GPTNeoXForCausalLM (supported: ",))
    # Qwen2 is supported, but a Llama checkpoint has no q/k/v biases
    bad = sample_copy(t, "qwen", architectures=["Qwen2ForCausalLM"])
    t.fails("convert", bad, "-o", out, words=("q_proj.bias",))
    bad = sample_copy(t, "shape", num_key_value_heads=4)
    t.fails("convert", bad, "-o", out, words=("shape",))
    bad = sample_copy(t, "missing")
    src = st_read(os.path.join(bad, "model.safetensors"))
    write_st(os.path.join(bad, "model.safetensors"),
             {k: ("F32", list(v.shape), v.tobytes()) for k, v in src.items() if "layers.1.mlp.up" not in k})
    t.fails("convert", bad, "-o", out, words=("model.layers.1.mlp.up_proj.weight",))
    write_st(os.path.join(bad, "model.safetensors"),
             dict({k: ("F32", list(v.shape), v.tobytes()) for k, v in src.items()},
                  **{"model.layers.0.mystery.weight": ("F32", [2], b"\0" * 8)}))
    t.fails("convert", bad, "-o", out, words=("cannot map",))
    write_st(os.path.join(bad, "model.safetensors"),
             {k: ("I32" if k == "model.norm.weight" else "F32", list(v.shape), v.tobytes()) for k, v in src.items()})
    t.fails("convert", bad, "-o", out, words=("dtype",))
    os.remove(os.path.join(bad, "model.safetensors"))
    t.fails("convert", bad, "-o", out, words=("model.safetensors",))
    check(not os.path.exists(out) and not [f for f in os.listdir(t.tmp) if "unverified" in f],
          "nothing left behind")


def test_convert_to_safetensors_reports(t):
    """--to safetensors goes through the PyTorch reader; a directory without .bin says so."""
    out = os.path.join(t.tmp, "st")
    r = t.hm("convert", lib.sample_dir(), "--to", "safetensors", "-o", out)
    check(r.rc == 1, "no .bin to convert: %r" % r)
    lib.clean_error(r)


# ---- llama.cpp and a numpy forward pass --------------------------------------

NPM_TIMEOUT = 240


def ensure_node():
    node = shutil.which("node")
    if not node:
        raise Fail("node is not installed: the llama.cpp test needs Node.js >= 18 and npm")
    # the last dependency added: an older node_modules without it is reinstalled
    pkg = os.path.join(JS, "node_modules", "@huggingface", "gguf", "package.json")
    with open(os.path.join(JS, "package.json")) as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        done = os.path.exists(os.path.join(JS, "node_modules", ".package-lock.json")) and os.path.exists(pkg)
        if not done:
            npm = shutil.which("npm")
            if not npm:
                raise Fail("npm is not installed: cannot install tests/js-gguf (npm ci)")
            try:
                p = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--fetch-retries=2",
                                    "--fetch-timeout=60000"], cwd=JS, capture_output=True, text=True,
                                   timeout=NPM_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise Fail("`npm ci` in tests/js-gguf did not finish in %d s (is the npm registry reachable?)"
                           % NPM_TIMEOUT)
            if p.returncode != 0:
                raise Fail("`npm ci` in tests/js-gguf failed (exit %d): node-llama-cpp@3.21.1 needs the npm "
                           "registry once:\n%s" % (p.returncode, (p.stdout + p.stderr)[-2000:]))
    return node


def forward(w, cfg, ids):
    """Logits of the last position: HF LlamaForCausalLM in numpy (HF row order, half-split rope)."""
    D, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, theta = D // H, cfg["rms_norm_eps"], cfg["rope_theta"]
    x = w["model.embed_tokens.weight"][ids].astype(np.float64)
    T = len(ids)
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.outer(np.arange(T), inv)
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))

    def rms(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * g

    def rope(v):
        half = np.concatenate([-v[..., hd // 2:], v[..., :hd // 2]], -1)
        return v * cos[:, None, :] + half * sin[:, None, :]

    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, H, hd))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, KV, hd))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, KV, hd)
        out = np.zeros((T, H, hd))
        for hh in range(H):
            kh = hh // (H // KV)
            s = q[:, hh, :] @ k[:, kh, :].T / np.sqrt(hd)
            s = s + np.triu(np.full((T, T), -np.inf), 1)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            out[:, hh, :] = s @ v[:, kh, :]
        x = x + out.reshape(T, D) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    return x[-1] @ w["lm_head.weight"].T


def test_convert_loads_in_llama_cpp(t):
    node = ensure_node()
    d = lib.sample_dir()
    paths = {}
    for qtype in ("f32", "f16", "q8_0"):
        paths[qtype] = os.path.join(t.tmp, "m-%s.gguf" % qtype)
        t.ok("convert", d, "--type", qtype, "-o", paths[qtype])
    prompt = "Hello world! Once upon a time there was a little llama"
    p = subprocess.run([node, os.path.join(JS, "generate.mjs"), prompt, "4"] + list(paths.values()),
                       cwd=JS, capture_output=True, text=True, timeout=240)
    if p.returncode != 0:
        raise Fail("node-llama-cpp could not load or run the converted models (exit %d):\n%s"
                   % (p.returncode, (p.stdout + p.stderr)[-3000:]))
    res = json.loads(p.stdout.strip().splitlines()[-1])
    tok = json.load(open(os.path.join(d, "tokenizer.json")))
    want = spm_encode(tok, prompt)
    cfg = json.load(open(os.path.join(d, "config.json")))
    w = {k: v.astype(np.float64) for k, v in st_read(os.path.join(d, "model.safetensors")).items()}
    logits = forward(w, cfg, [1] + want)
    order = np.argsort(logits)[::-1]
    margin = logits[order[0]] - logits[order[1]]
    for qtype, path in paths.items():
        r = res[path]
        check(r["ids"] == want, "%s: llama.cpp tokenizes to %r, the HF BPE to %r" % (qtype, r["ids"], want))
        check(r["bos"] == 1 and r["eos"] == 2, "%s: bos/eos %r" % (qtype, r))
        check(r["text"] == prompt, "%s: detokenized %r" % (qtype, r["text"]))
        check(len(r["gen"]) == 4 and all(0 <= g < cfg["vocab_size"] for g in r["gen"]), "%s: gen %r" % (qtype, r))
        if qtype == "f32" or margin > 0.05:
            check(r["gen"][0] == int(order[0]), "%s: llama.cpp's first token %d, numpy's argmax %d (margin %.4f)"
                  % (qtype, r["gen"][0], order[0], margin))


test_convert_loads_in_llama_cpp.timeout = NPM_TIMEOUT + 120


def test_pull_convert_smoke_tests_the_conversion_it_made(t):
    """pull --convert f16 --smoke after an f16 and then a q8_0 conversion of
    the same commit smoke-tests (and records) the f16 artifact, not the
    newest one."""
    t.emu()
    t.ok("pull", SAMPLE_REPO)
    f16 = t.ok("convert", SAMPLE_REPO, "--type", "f16", "--json").json()
    q8 = t.ok("convert", SAMPLE_REPO, "--type", "q8_0", "--json").json()
    check(f16["sha256"] != q8["sha256"], "f16 and q8_0 conversions are the same blob")
    r = t.ok("pull", SAMPLE_REPO, "--convert", "f16", "--smoke")
    check("gguf f16" in r.err, "the smoke line should name the f16 conversion: %r" % r)
    rows = t.db("SELECT artifact_sha256, model, pass FROM smoke_results")
    check(len(rows) == 1, "smoke rows %r" % rows)
    check(rows[0]["artifact_sha256"] == f16["sha256"],
          "smoke tested %s, the f16 conversion is %s (q8_0 %s)" % (rows[0]["artifact_sha256"], f16["sha256"],
                                                                  q8["sha256"]))
    check("f16" in rows[0]["model"], "recorded as %r" % rows[0]["model"])
    # the twin: a conversion type that does not exist fails before smoke, recording nothing
    r = t.hm("pull", SAMPLE_REPO, "--convert", "q5_k", "--smoke")
    check(r.rc != 0, "an unknown conversion type passed: %r" % r)
    check(len(t.db("SELECT * FROM smoke_results")) == 1, "a failed conversion recorded a smoke result")


def flip_byte(path, offset):
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.chmod(path, 0o444)


def test_verify_checks_and_repairs_stored_conversions(t):
    """A flipped byte in a stored GGUF is reported by verify (naming the
    conversion) and --repair makes it again from the source revision."""
    t.emu()
    t.ok("pull", SAMPLE_REPO)
    j = t.ok("convert", SAMPLE_REPO, "--type", "q8_0", "--json").json()
    blob = t.blob(j["sha256"])
    flip_byte(blob, os.path.getsize(blob) // 2)
    r = t.hm("verify")
    check(r.rc == 1, "verify passed a corrupt conversion: %r" % r)
    check("conversion" in r.out and "q8_0" in r.out and "corrupt" in r.out, "verify output: %r" % r)
    r = t.ok("verify", "--repair")
    check("converted again" in r.out, "repair output: %r" % r)
    check(lib.sha256_file(blob) == j["sha256"], "the repaired conversion differs")
    t.ok("verify")
    j2 = t.ok("convert", SAMPLE_REPO, "--type", "q8_0", "--json").json()
    check(j2["cached"] and j2["sha256"] == j["sha256"], "after repair: %r" % j2)


def test_missing_or_resized_conversion_is_no_cache_hit(t):
    """The twin: a missing conversion blob is reported missing; one whose size
    changed is no cache hit (convert makes it again)."""
    t.emu()
    t.ok("pull", SAMPLE_REPO)
    j = t.ok("convert", SAMPLE_REPO, "--type", "q8_0", "--json").json()
    blob = t.blob(j["sha256"])
    os.chmod(blob, 0o644)
    with open(blob, "ab") as fh:
        fh.write(b"x")
    os.chmod(blob, 0o444)
    r = t.hm("verify")
    check(r.rc == 1 and "conversion" in r.out, "verify passed a resized conversion: %r" % r)
    j2 = t.ok("convert", SAMPLE_REPO, "--type", "q8_0", "--json").json()
    check(not j2["cached"], "a conversion of the wrong size was a cache hit: %r" % j2)
    os.chmod(blob, 0o644)
    os.unlink(blob)
    r = t.hm("verify")
    check(r.rc == 1 and "missing" in r.out and "conversion" in r.out, "verify of a missing conversion: %r" % r)
    t.ok("verify", "--repair")
    check(lib.sha256_file(blob) == j["sha256"], "the repaired conversion differs")
