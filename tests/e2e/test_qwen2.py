"""test_qwen2.py - Qwen2ForCausalLM end to end: `hubmirror convert` to GGUF
"qwen2" the way llama.cpp's convert_hf_to_gguf.py (Qwen2Model) does, the
bundled engine running it (safetensors and GGUF) against a numpy forward
pass written here, llama.cpp (node-llama-cpp, tests/js-gguf) loading the
GGUF, and the byte-level BPE tokenizer with Qwen2's pre-tokenizer against
@huggingface/tokenizers (tests/js-tok).

The models are small random Qwen2-shaped checkpoints made here with numpy:
q/k/v projections with biases (large, so that dropping or misplacing them
shows), HF row order with half-split (NEOX) rope, grouped-query attention,
tied embeddings (as Qwen2-0.5B) or not, a vocabulary padded past the
tokenizer's (as Qwen2's 151936 rows for 151646 tokens). The tokenizer is a
byte-level BPE trained here on a small corpus, laid out as Qwen2's
tokenizer.json is (NFC, Split with Qwen2's regex, ByteLevel, <|endoftext|>,
<|im_start|>, <|im_end|>); the larger reference comparison uses Llama 3's
vocabulary and merges (exported from llama3-tokenizer-js) under Qwen2's
pre-tokenizer and layout."""

import collections
import json
import os
import re
import shutil
import subprocess
import unicodedata

import numpy as np

import lib
from lib import check, Fail
import test_convert as tc
import test_engine as te
import test_tokenizer as ttok
import test_torch_gguf as tg

QWEN2_RE = tc.LLAMA3_RE.replace("\\p{N}{1,3}", "\\p{N}")
ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = ("Once upon a time there was a little llama who lived on a hill. Every day the llama walked to the "
          "river and drank the cold water. The year 2024 had 366 days, and 1,000 people came to see it. "
          "Hello world! Hello there, how are you doing today? I'm fine, they're here, we'll go. "
          "def main():\n    return 42\n\nprint(main())\n" * 3)


# ---- the tokenizer -------------------------------------------------------------

def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def train_bpe(text, n_merges):
    """Byte-level BPE merges over words split roughly as Qwen2 splits them."""
    bc = byte_chars()
    words = collections.Counter(re.findall(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+", text))
    seqs = {w: [bc[b] for b in w.encode()] for w in words}
    vocab = {bc[b]: i for i, b in enumerate(sorted(bc, key=lambda b: ord(bc[b])))}
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append([a, b])
        vocab.setdefault(a + b, len(vocab))
        for w in words:
            s, out, i = seqs[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return vocab, merges


def qwen2_tokenizer(vocab, merges):
    """tokenizer.json and tokenizer_config.json as Qwen2's are laid out."""
    n = len(vocab)
    added = [{"id": n + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, c in enumerate(ADDED)]
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
           "normalizer": {"type": "NFC"},
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Split", "pattern": {"Regex": QWEN2_RE}, "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
           "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                              "use_regex": False},
           "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                     "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                     "vocab": vocab, "merges": merges}}
    cfg = {"add_prefix_space": False, "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
           "unk_token": None, "errors": "replace", "model_max_length": 32768, "split_special_tokens": False,
           "tokenizer_class": "Qwen2Tokenizer",
           "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                            "{% endfor %}",
           "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added}}
    return tok, cfg


# ---- the model ------------------------------------------------------------------

def make_model(d, tied=True, seed=11, dim=64, layers=2, heads=4, kv=2, ffn=128, pad=5):
    """A random Qwen2 checkpoint in d (model.safetensors, config, tokenizer); returns (weights, config)."""
    vocab, merges = train_bpe(CORPUS, 120)
    tok, tcfg = qwen2_tokenizer(vocab, merges)
    V = len(vocab) + len(ADDED) + pad
    hd = dim // heads
    r = np.random.default_rng(seed)

    def mat(rows, cols, scale=1.0):
        return (r.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def vec(n, scale):
        return (r.standard_normal(n) * scale).astype(np.float32)

    w = collections.OrderedDict()
    w["model.embed_tokens.weight"] = (r.standard_normal((V, dim)) * 0.5).astype(np.float32)
    for l in range(layers):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = (1 + vec(dim, 0.1)).astype(np.float32)
        w[p + "self_attn.q_proj.weight"] = mat(heads * hd, dim, 2.0)
        w[p + "self_attn.q_proj.bias"] = vec(heads * hd, 0.5)
        w[p + "self_attn.k_proj.weight"] = mat(kv * hd, dim, 2.0)
        w[p + "self_attn.k_proj.bias"] = vec(kv * hd, 0.5)
        w[p + "self_attn.v_proj.weight"] = mat(kv * hd, dim)
        w[p + "self_attn.v_proj.bias"] = vec(kv * hd, 0.5)
        w[p + "self_attn.o_proj.weight"] = mat(dim, heads * hd)
        w[p + "post_attention_layernorm.weight"] = (1 + vec(dim, 0.1)).astype(np.float32)
        w[p + "mlp.gate_proj.weight"] = mat(ffn, dim)
        w[p + "mlp.up_proj.weight"] = mat(ffn, dim)
        w[p + "mlp.down_proj.weight"] = mat(dim, ffn)
    w["model.norm.weight"] = (1 + vec(dim, 0.1)).astype(np.float32)
    if not tied:
        w["lm_head.weight"] = mat(V, dim, 2.0)
    eot = len(vocab)
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
           "hidden_size": dim, "intermediate_size": ffn, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv, "max_position_embeddings": 512,
           "max_window_layers": layers, "sliding_window": 512, "use_sliding_window": False,
           "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None, "attention_dropout": 0.0,
           "bos_token_id": eot, "eos_token_id": eot, "tie_word_embeddings": tied, "torch_dtype": "float32",
           "use_cache": True, "vocab_size": V, "initializer_range": 0.02, "transformers_version": "4.43.1"}
    os.makedirs(d, exist_ok=True)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    json.dump(tcfg, open(os.path.join(d, "tokenizer_config.json"), "w"), indent=2)
    tc.write_st(os.path.join(d, "model.safetensors"),
                {k: ("F32", list(v.shape), v.tobytes()) for k, v in w.items()})
    return w, cfg


def forward(w, cfg, tokens):
    """Logits at every position: HF Qwen2ForCausalLM in float64 numpy (biased
    q/k/v, half-split rope on HF row order, grouped-query attention, SwiGLU)."""
    D, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps = D // H, cfg["rms_norm_eps"]
    half = hd // 2
    inv = cfg["rope_theta"] ** (-2.0 * np.arange(half) / hd)
    f = {k: v.astype(np.float64) for k, v in w.items()}

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x) + eps) * g

    def rope(v, pos):
        c, s = np.cos(pos * inv), np.sin(pos * inv)
        a, b = v[..., :half], v[..., half:]
        return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)

    kc = [[] for _ in range(cfg["num_hidden_layers"])]
    vc = [[] for _ in range(cfg["num_hidden_layers"])]
    out = []
    for pos, tok in enumerate(tokens):
        x = f["model.embed_tokens.weight"][tok]
        for l in range(cfg["num_hidden_layers"]):
            p = "model.layers.%d." % l
            xb = rms(x, f[p + "input_layernorm.weight"])
            q = rope((f[p + "self_attn.q_proj.weight"] @ xb + f[p + "self_attn.q_proj.bias"]).reshape(H, hd), pos)
            k = rope((f[p + "self_attn.k_proj.weight"] @ xb + f[p + "self_attn.k_proj.bias"]).reshape(KV, hd), pos)
            v = (f[p + "self_attn.v_proj.weight"] @ xb + f[p + "self_attn.v_proj.bias"]).reshape(KV, hd)
            kc[l].append(k)
            vc[l].append(v)
            K, Vv = np.stack(kc[l]), np.stack(vc[l])
            att = np.empty((H, hd))
            for h in range(H):
                g = h // (H // KV)
                sc = K[:, g, :] @ q[h] / np.sqrt(hd)
                pr = np.exp(sc - sc.max())
                pr /= pr.sum()
                att[h] = pr @ Vv[:, g, :]
            x = x + f[p + "self_attn.o_proj.weight"] @ att.reshape(-1)
            xb = rms(x, f[p + "post_attention_layernorm.weight"])
            gt, up = f[p + "mlp.gate_proj.weight"] @ xb, f[p + "mlp.up_proj.weight"] @ xb
            x = x + f[p + "mlp.down_proj.weight"] @ (gt / (1 + np.exp(-gt)) * up)
        head = f.get("lm_head.weight", f["model.embed_tokens.weight"])
        out.append(head @ rms(x, f["model.norm.weight"]))
    return np.stack(out)


def model_dir(t, name="qwen", **kw):
    d = os.path.join(t.tmp, name)
    w, cfg = make_model(d, **kw)
    return d, w, cfg


# ---- conversion ---------------------------------------------------------------------

def test_qwen2_convert_matches_llama_cpp_layout(t):
    d, w, cfg = model_dir(t)
    tok = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    L, V = cfg["num_hidden_layers"], cfg["vocab_size"]
    out = os.path.join(t.tmp, "q.gguf")
    j = t.ok("convert", d, "--type", "f32", "-o", out, "--json").json()
    check(j["architecture"] == "Qwen2ForCausalLM" and j["tokenizer"] == "gpt2" and j["pre"] == "qwen2", "%r" % j)
    kv, types, tensors, order = tc.gguf_read(out)
    expect = {"general.architecture": "qwen2", "qwen2.block_count": L, "qwen2.context_length": 512,
              "qwen2.embedding_length": cfg["hidden_size"], "qwen2.feed_forward_length": cfg["intermediate_size"],
              "qwen2.attention.head_count": cfg["num_attention_heads"],
              "qwen2.attention.head_count_kv": cfg["num_key_value_heads"], "general.file_type": 0,
              "general.quantization_version": 2, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2"}
    for k, v in expect.items():
        check(kv.get(k) == v, "%s = %r, expected %r" % (k, kv.get(k), v))
    check(np.float32(kv["qwen2.rope.freq_base"]) == np.float32(1e6) and types["qwen2.rope.freq_base"] == 6, "theta")
    check(np.float32(kv["qwen2.attention.layer_norm_rms_epsilon"]) == np.float32(1e-6), "eps")
    check(not [k for k in kv if k.startswith("llama.")], "llama keys in a qwen2 file")
    check("qwen2.vocab_size" not in kv and "qwen2.rope.dimension_count" not in kv, "keys llama.cpp's Qwen2 omits")
    names = {"token_embd.weight", "output_norm.weight"}
    for l in range(L):
        names |= {"blk.%d.%s" % (l, n) for n in (
            "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_q.bias", "attn_k.bias",
            "attn_v.bias", "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight",
            "ffn_down.weight")}
    check(set(tensors) == names, "tensor names: %r" % (set(tensors) ^ names))
    # no Q/K permutation: the HF rows as they are; biases F32
    for hf, gg in (("self_attn.q_proj.weight", "attn_q.weight"), ("self_attn.k_proj.weight", "attn_k.weight"),
                   ("self_attn.q_proj.bias", "attn_q.bias"), ("self_attn.k_proj.bias", "attn_k.bias"),
                   ("self_attn.v_proj.bias", "attn_v.bias")):
        ne, typ, raw = tensors["blk.1." + gg]
        check(typ == 0 and raw == w["model.layers.1." + hf].tobytes(), "%s: not the HF bytes" % gg)
        check(ne == list(reversed(w["model.layers.1." + hf].shape)), "%s dims %r" % (gg, ne))
    # the tokenizer: tokens verbatim, added tokens CONTROL, padding USER_DEFINED, merges
    toks, tt = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    nv = len(tok["model"]["vocab"])
    check(len(toks) == V and len(tt) == V, "padded to the embedding rows")
    for s, i in tok["model"]["vocab"].items():
        check(toks[i] == s and tt[i] == 1, "token %d" % i)
    check(toks[nv:nv + 3] == ADDED and tt[nv:nv + 3] == [3, 3, 3], "added: %r %r" % (toks[nv:nv + 3], tt[nv:nv + 3]))
    check(toks[nv + 3] == "[PAD%d]" % (nv + 3) and tt[nv + 3:] == [4] * (V - nv - 3), "padding tokens")
    check(kv["tokenizer.ggml.merges"] == ["%s %s" % (a, b) for a, b in tok["model"]["merges"]], "merges")
    check(kv["tokenizer.ggml.eos_token_id"] == nv and kv["tokenizer.ggml.bos_token_id"] == nv and
          kv["tokenizer.ggml.padding_token_id"] == nv, "special ids")
    check("tokenizer.ggml.add_bos_token" not in kv and "tokenizer.ggml.scores" not in kv, "no add_bos, no scores")
    check(kv["tokenizer.chat_template"].startswith("{% for m in messages %}<|im_start|>"), "chat template")
    # quantized: matrices Q8_0, biases and norms stay F32; the embedding is not written twice
    j = t.ok("convert", d, "--type", "q8_0", "-o", out, "--json").json()
    kv, _, tensors, _ = tc.gguf_read(out)
    check(tensors["blk.0.attn_q.bias"][1] == 0 and tensors["blk.0.attn_q.weight"][1] == 8 and
          tensors["blk.0.attn_norm.weight"][1] == 0 and "output.weight" not in tensors, "q8_0 types")
    # untied: output.weight
    d2, _, _ = model_dir(t, "untied", tied=False)
    t.ok("convert", d2, "--type", "f16", "-o", out)
    check("output.weight" in tc.gguf_read(out)[2], "untied: output.weight")
    # the same model as pytorch_model.bin: the same bytes
    pt = os.path.join(t.tmp, "pt", "qwen")
    tg.model_files(d, pt)
    tg.write_bin(os.path.join(pt, "pytorch_model.bin"), tg.tt.read_st(os.path.join(d, "model.safetensors"))[0])
    for q in ("f16", "q4_0"):
        a = t.ok("convert", d, "--type", q, "-o", os.path.join(t.tmp, "a.gguf"), "--json", "--sha256").json()
        b = t.ok("convert", pt, "--type", q, "-o", os.path.join(t.tmp, "b.gguf"), "--json", "--sha256").json()
        check(a["sha256"] == b["sha256"], "%s: .bin and safetensors differ" % q)
    # no biases: refused (llama.cpp's qwen2 needs them); an o_proj bias: not qwen2's
    bad = os.path.join(t.tmp, "nobias")
    shutil.copytree(d, bad)
    st = tg.tt.read_st(os.path.join(d, "model.safetensors"))[0]
    tc.write_st(os.path.join(bad, "model.safetensors"), {k: v for k, v in st.items() if "k_proj.bias" not in k})
    t.fails("convert", bad, "-o", out, words=("k_proj.bias",))
    st2 = dict(st, **{"model.layers.0.self_attn.o_proj.bias": ("F32", [64], b"\0" * 256)})
    tc.write_st(os.path.join(bad, "model.safetensors"), st2)
    t.fails("convert", bad, "-o", out, words=("cannot map",))


# ---- the engine -----------------------------------------------------------------------

PROMPT = [5, 17, 33, 2, 64, 7, 90, 11, 42, 3]


def test_qwen2_engine_matches_numpy(t):
    for tied in (True, False):
        d, w, cfg = model_dir(t, "m%d" % tied, tied=tied)
        ref = forward(w, cfg, PROMPT)
        scale = np.abs(ref).max()
        info = te.info(t, d)
        check(info["interleaved"] == 0 and info["tied"] == int(tied) and info["vocab"] == cfg["vocab_size"],
              "info %r" % info)
        got = te.logits(t, d, PROMPT)
        err = np.abs(got - ref).max() / scale
        check(err < te.TOL, "safetensors (tied %s): max rel error %.2e" % (tied, err))
        for q, bound in (("f32", te.TOL), ("f16", 5e-3), ("q8_0", 8e-2)):
            g = os.path.join(t.tmp, "m%d-%s.gguf" % (tied, q))
            t.ok("convert", d, "--type", q, "-o", g)
            got = te.logits(t, g, PROMPT)
            err = np.abs(got - ref).max() / scale
            check(err < bound, "GGUF %s (tied %s): max rel error %.2e (bound %.0e)" % (q, tied, err, bound))
        # greedy generation follows numpy's argmax
        seq = list(PROMPT[:4])
        want = []
        for _ in range(5):
            nxt = int(np.argmax(forward(w, cfg, seq)[-1]))
            want.append(nxt)
            seq.append(nxt)
        gen = te.generate(t, os.path.join(t.tmp, "m%d-f32.gguf" % tied), 5, 0, 1, 1, PROMPT[:4])
        check(gen == want, "greedy: engine %r, numpy %r" % (gen, want))
    # the biases matter: without them the logits are far off (the test can fail)
    w0 = {k: (np.zeros_like(v) if k.endswith(".bias") else v) for k, v in w.items()}
    check(np.abs(forward(w0, cfg, PROMPT) - ref).max() / scale > 100 * te.TOL, "biases too small to test")
    # smoke and run on the GGUF
    g = os.path.join(t.tmp, "m0-q8_0.gguf")
    r = t.ok("smoke", g, "--prompt", "Once upon a time", "--json").json()
    check(r["pass"] and r["format"] == "gguf", "smoke: %r" % r)
    r = t.ok("run", g, "-p", "Hello world", "-n", "8", "--temp", "0")
    check(r.out.strip(), "run printed nothing: %r" % r)


def test_qwen2_engine_refuses(t):
    d, w, cfg = model_dir(t)
    st = tg.tt.read_st(os.path.join(d, "model.safetensors"))[0]
    tc.write_st(os.path.join(d, "model.safetensors"), {k: v for k, v in st.items() if "v_proj.bias" not in k})
    r = t.fails("smoke", d, words=("v_proj.bias",))
    cfg["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}
    d2, _, _ = model_dir(t, "yarn")
    json.dump(cfg, open(os.path.join(d2, "config.json"), "w"))
    g = os.path.join(t.tmp, "yarn.gguf")
    t.ok("convert", d2, "--type", "f32", "-o", g)
    kv = tc.gguf_read(g)[0]
    check(kv["qwen2.rope.scaling.type"] == "yarn" and kv["qwen2.rope.scaling.original_context_length"] == 512 and
          np.float32(kv["qwen2.rope.scaling.factor"]) == 4, "yarn keys %r" % kv.get("qwen2.rope.scaling.type"))
    r = t.hm("smoke", g)
    check(r.rc == 1 and "yarn" in r.text, "yarn is not computed: must say so: %r" % r)


# ---- llama.cpp ------------------------------------------------------------------------

def test_qwen2_loads_in_llama_cpp(t):
    node = tc.ensure_node()
    d, w, cfg = model_dir(t)
    paths = {}
    for q in ("f32", "f16", "q8_0"):
        paths[q] = os.path.join(t.tmp, "q-%s.gguf" % q)
        t.ok("convert", d, "--type", q, "-o", paths[q])
    prompt = "Hello world! Once upon a time there was a little llama 2024"
    p = subprocess.run([node, os.path.join(tc.JS, "generate.mjs"), prompt, "4"] + list(paths.values()),
                       cwd=tc.JS, capture_output=True, text=True, timeout=240)
    if p.returncode != 0:
        raise Fail("node-llama-cpp could not load or run the Qwen2 GGUF (exit %d):\n%s"
                   % (p.returncode, (p.stdout + p.stderr)[-3000:]))
    res = json.loads(p.stdout.strip().splitlines()[-1])
    mine = ttok.ours(t, paths["f32"], [prompt], add_bos=0)["results"][0]["ids"]
    hf = ttok.references(t, [prompt], [os.path.join(d, "tokenizer.json")])["json"][os.path.join(d, "tokenizer.json")]
    check(hf[0]["ids"] == mine, "engine %r vs @huggingface/tokenizers %r" % (mine, hf[0]["ids"]))
    bos = cfg["bos_token_id"]
    seq, greedy, margins = [bos] + mine, [], []
    for _ in range(4):
        logits = forward(w, cfg, seq)[-1]
        order = np.argsort(logits)[::-1]
        margins.append(logits[order[0]] - logits[order[1]])
        greedy.append(int(order[0]))
        seq.append(int(order[0]))
    for q, path in paths.items():
        r = res[path]
        check(r["ids"] == mine, "%s: llama.cpp tokenizes to %r, the engine to %r" % (q, r["ids"], mine))
        check(r["bos"] == bos and r["text"] == prompt, "%s: bos/text %r" % (q, r))
        # every greedy token for f32; the first when numpy's margin leaves room for rounding
        n = 4 if q == "f32" else 1 if margins[0] > 0.05 else 0
        check(r["gen"][:n] == greedy[:n], "%s: llama.cpp generates %r, numpy %r (margins %r)"
              % (q, r["gen"], greedy, margins))


test_qwen2_loads_in_llama_cpp.timeout = tc.NPM_TIMEOUT + 120


# ---- the tokenizer against @huggingface/tokenizers ----------------------------------------

def test_qwen2_tokenizer_matches_huggingface(t):
    """Llama 3's vocabulary and merges under Qwen2's pre-tokenizer (single
    digits), normalizer and added tokens: the engine over tokenizer.json and
    over the converted GGUF against @huggingface/tokenizers."""
    src = json.load(open(ttok.export(t, "llama3"), encoding="utf-8"))
    vocab = src["model"]["vocab"]
    merges = [m.split(" ", 1) if isinstance(m, str) else m for m in src["model"]["merges"]]
    tok, tcfg = qwen2_tokenizer(vocab, merges)
    n = max(vocab.values()) + 1
    for a in tok["added_tokens"]:
        a["id"] = max(vocab.values()) + 1 + ADDED.index(a["content"])
    d = os.path.join(t.tmp, "qtok")
    os.makedirs(d)
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    json.dump(tcfg, open(os.path.join(d, "tokenizer_config.json"), "w"))
    # a tiny model around it, to convert
    V = max(a["id"] for a in tok["added_tokens"]) + 1
    r = np.random.default_rng(3)
    dim = 32
    w = {"model.embed_tokens.weight": ("F32", [V, dim], (r.standard_normal((V, dim)) * 0.1).astype("<f4").tobytes()),
         "model.norm.weight": ("F32", [dim], np.ones(dim, "<f4").tobytes())}
    p = "model.layers.0."
    for name, shape in (("input_layernorm.weight", [dim]), ("post_attention_layernorm.weight", [dim]),
                        ("self_attn.q_proj.weight", [dim, dim]), ("self_attn.k_proj.weight", [dim, dim]),
                        ("self_attn.v_proj.weight", [dim, dim]), ("self_attn.o_proj.weight", [dim, dim]),
                        ("self_attn.q_proj.bias", [dim]), ("self_attn.k_proj.bias", [dim]),
                        ("self_attn.v_proj.bias", [dim]), ("mlp.gate_proj.weight", [dim, dim]),
                        ("mlp.up_proj.weight", [dim, dim]), ("mlp.down_proj.weight", [dim, dim])):
        w[p + name] = ("F32", shape, (r.standard_normal(shape) * 0.1).astype("<f4").tobytes())
    json.dump({"architectures": ["Qwen2ForCausalLM"], "hidden_size": dim, "intermediate_size": dim,
               "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
               "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 1e6, "vocab_size": V,
               "tie_word_embeddings": True, "bos_token_id": n, "eos_token_id": n},
              open(os.path.join(d, "config.json"), "w"))
    tc.write_st(os.path.join(d, "model.safetensors"), w)
    g = os.path.join(t.tmp, "qtok.gguf")
    j = t.ok("convert", d, "--type", "f16", "-o", g, "--json").json()
    check(j["pre"] == "qwen2" and j["vocab"] == V, "%r" % j)
    # Qwen2 normalizes to NFC, llama.cpp and the engine do not: NFC-stable strings only
    strings = [s for s in ttok.STRINGS if unicodedata.normalize("NFC", s) == s]
    strings += ["<|im_start|>user\nWhat is 12345 + 678?<|im_end|>\n<|im_start|>assistant\n",
                "text <|endoftext|> more", "almost <|im_end| special", "digits 0123456789 split one by one"]
    check(len(strings) > 50, "too few strings")
    tj = os.path.join(d, "tokenizer.json")
    ref = ttok.references(t, strings, [tj])["json"][tj]
    want = [x["ids"] for x in ref]
    check(any(len([i for i in ids if i < 128000]) > 3 for ids in want), "reference ids look wrong")
    total = 0
    for path in (tj, g):
        res = ours_all(t, path, strings)
        total += ttok.compare("%s vs @huggingface/tokenizers" % os.path.basename(path), strings,
                              [x["ids"] for x in res["results"]], want)
        for s, x, wnt in zip(strings, res["results"], ref):
            got = bytes.fromhex(x["decoded_hex"]).decode("utf-8", "replace")
            if "<|" not in s:
                check(got == wnt["decoded"], "%s: decode differs for %r: %r vs %r" % (path, s, got, wnt["decoded"]))
    check(total > 1000, "too few ids compared: %d" % total)


def ours_all(t, path, strings):
    return ttok.ours(t, path, strings, add_bos=-1)


test_qwen2_tokenizer_matches_huggingface.timeout = 400
