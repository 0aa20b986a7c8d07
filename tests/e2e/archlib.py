"""archlib.py - the end-to-end checks every architecture family goes through
(tests/e2e/test_arch_*.py), on small random checkpoints made here with numpy
that carry the family's real config.json fields and tensor names:

  - `hubmirror convert --type f16` and `--type q8_0`;
  - @huggingface/gguf parses both files (tests/js-gguf/check.mjs) and finds
    the family's architecture, keys and tensors;
  - llama.cpp (node-llama-cpp 3.21.1, same node process) loads each file and
    its greedy tokens equal the bundled engine's on the same file;
  - the engine on the safetensors directory against `forward` below, an
    independent float64 numpy forward pass written from the Hugging Face
    modeling code: logits within TOL of max |logit|, and the same greedy
    tokens;
  - `hubmirror smoke` passes on the directory and on the q8_0 GGUF.

A family is a dict (see FAMILIES in the test files): its HF architecture and
model_type, the GGUF architecture, and the features `forward` computes."""

import collections
import json
import os
import subprocess

import numpy as np

import lib
from lib import check, Fail
import test_convert as tc
import test_engine as te

TOL = 1e-4            # engine (F32) vs float64 numpy, relative to max |logit|
JS = tc.JS
CHECK_MJS = os.path.join(JS, "check.mjs")


def js_check(t, spec, timeout=300):
    """Runs tests/js-gguf/check.mjs on spec; returns its JSON."""
    node = tc.ensure_node()
    path = os.path.join(t.tmp, "js-spec-%d.json" % len(os.listdir(t.tmp)))
    with open(path, "w") as fh:
        json.dump(spec, fh)
    p = subprocess.run([node, CHECK_MJS, path], cwd=JS, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise Fail("check.mjs failed (exit %d):\n%s" % (p.returncode, (p.stdout + p.stderr)[-3000:]))
    return json.loads(p.stdout)


# ---- weights -------------------------------------------------------------------------

def make_weights(fam, cfg, seed):
    """HF-named float32 weights for the family and config."""
    r = np.random.default_rng(seed)
    D, L, H, KV, F, V = (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
                         cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"])
    hd = cfg.get("head_dim") or D // H

    def mat(rows, cols, scale=1.0):
        return (r.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        base = 0.0 if fam.get("norm_plus_one") else 1.0
        return (base + r.standard_normal(n) * 0.1).astype(np.float32)

    w = collections.OrderedDict()
    w["model.embed_tokens.weight"] = (r.standard_normal((V, D)) * fam.get("embed_scale", 1.0)).astype(np.float32)
    for l in range(L):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = norm(D)
        w[p + "self_attn.q_proj.weight"] = mat(H * hd, D, 2.0)
        w[p + "self_attn.k_proj.weight"] = mat(KV * hd, D, 2.0)
        w[p + "self_attn.v_proj.weight"] = mat(KV * hd, D)
        w[p + "self_attn.o_proj.weight"] = mat(D, H * hd)
        if fam.get("qk_norm"):
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
        w[p + "post_attention_layernorm.weight"] = norm(D)
        if fam.get("sandwich"):
            w[p + "pre_feedforward_layernorm.weight"] = norm(D)
            w[p + "post_feedforward_layernorm.weight"] = norm(D)
        w[p + "mlp.gate_proj.weight"] = mat(F, D)
        w[p + "mlp.up_proj.weight"] = mat(F, D)
        w[p + "mlp.down_proj.weight"] = mat(D, F)
    w["model.norm.weight"] = norm(D)
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = mat(V, D, 2.0)
    return w


def write_model(d, w, cfg, tok, tcfg):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as fh:
        json.dump(tok, fh, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as fh:
        json.dump(tcfg, fh, indent=2)
    tc.write_st(os.path.join(d, "model.safetensors"), {k: ("F32", list(v.shape), v.tobytes()) for k, v in w.items()})


# ---- the reference forward pass -------------------------------------------------------

def forward(fam, w, cfg, tokens):
    """Logits at every position, float64, from the HF modeling code of the
    family: LlamaForCausalLM plus the family's features."""
    D, L, H, KV = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // H
    eps = cfg["rms_norm_eps"]
    half = hd // 2
    f = {k: v.astype(np.float64) for k, v in w.items()}
    plus1 = 1.0 if fam.get("norm_plus_one") else 0.0
    theta = cfg.get("rope_theta", 10000.0)
    inv = theta ** (-2.0 * np.arange(half) / hd)
    rope_layers = cfg.get("no_rope_layers") or [1] * L

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (plus1 + g)

    def rope(v, pos):
        c, s = np.cos(pos * inv), np.sin(pos * inv)
        a, b = v[..., :half], v[..., half:]
        return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)

    kc = [[] for _ in range(L)]
    vc = [[] for _ in range(L)]
    out = []
    for pos, tok in enumerate(tokens):
        x = f["model.embed_tokens.weight"][tok]
        for l in range(L):
            p = "model.layers.%d." % l
            xb = rms(x, f[p + "input_layernorm.weight"])
            q = (f[p + "self_attn.q_proj.weight"] @ xb).reshape(H, hd)
            k = (f[p + "self_attn.k_proj.weight"] @ xb).reshape(KV, hd)
            v = (f[p + "self_attn.v_proj.weight"] @ xb).reshape(KV, hd)
            if fam.get("qk_norm"):
                q = rms(q, f[p + "self_attn.q_norm.weight"])
                k = rms(k, f[p + "self_attn.k_norm.weight"])
            if rope_layers[l]:
                q, k = rope(q, pos), rope(k, pos)
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


def greedy(fam, w, cfg, prompt, n):
    seq, out, margins = list(prompt), [], []
    for _ in range(n):
        lg = forward(fam, w, cfg, seq)[-1]
        order = np.argsort(lg)[::-1]
        margins.append(float(lg[order[0]] - lg[order[1]]))
        out.append(int(order[0]))
        seq.append(int(order[0]))
    return out, margins


# ---- the checks ------------------------------------------------------------------------

def check_family(t, fam, d, w, cfg, prompt, n_gen=4, keys=(), tensors=()):
    """Every check of the module docstring on the checkpoint in d. keys: GGUF
    metadata {key: value} @huggingface/gguf must read back; tensors: names
    the f16 file must hold. Returns the JSON of check.mjs."""
    arch = fam["gguf"]
    paths = {}
    for q in ("f16", "q8_0"):
        paths[q] = os.path.join(t.tmp, "%s-%s.gguf" % (arch, q))
        j = t.ok("convert", d, "--type", q, "-o", paths[q], "--json").json()
        check(j["architecture"] == cfg["architectures"][0], "convert: %r" % j)
    js = js_check(t, {"parse": list(paths.values()),
                      "generate": {"ids": list(prompt), "n": n_gen, "paths": list(paths.values()), "bos": False}})
    for q, path in paths.items():
        md = js["parse"][path]["metadata"]
        check(md.get("general.architecture") == arch, "%s: @huggingface/gguf reads architecture %r"
              % (q, md.get("general.architecture")))
        for k, v in dict(keys).items():
            got = md.get(k)
            ok = abs(got - v) <= 1e-6 * abs(v) if isinstance(v, float) and isinstance(got, (int, float)) else got == v
            check(ok, "%s: %s = %r, expected %r" % (q, k, got, v))
        names = {x["name"] for x in js["parse"][path]["tensors"]}
        missing = set(tensors) - names
        check(not missing, "%s: tensors missing: %r" % (q, sorted(missing)[:8]))
    # llama.cpp and the engine on the same file
    for q, path in paths.items():
        ours = te.generate(t, path, n_gen, 0, 0, 0, prompt)
        theirs = js["generate"][path]["gen"]
        check(ours == theirs, "%s: engine greedy %r, llama.cpp %r" % (q, ours, theirs))
    # the engine on the safetensors directory against numpy
    ref = forward(fam, w, cfg, prompt)
    got = te.logits(t, d, prompt)
    err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    check(err < TOL, "safetensors: max |engine - numpy| / max |logit| = %.3g (bound %g)" % (err, TOL))
    want, margins = greedy(fam, w, cfg, prompt, n_gen)
    ours = te.generate(t, d, n_gen, 0, 0, 0, prompt)
    check(ours == want, "safetensors: engine greedy %r, numpy %r (margins %r)" % (ours, want, margins))
    print("%s: engine vs numpy %.2e relative; greedy %r (numpy margins %s)"
          % (arch, err, want, ", ".join("%.3f" % m for m in margins)))
    # smoke
    for path in (d, paths["q8_0"]):
        r = t.ok("smoke", path, "--json").json()
        check(r["pass"], "smoke %s: %r" % (path, r))
    return js


def check_unsupported(t, d, cfg, arch_name):
    """A family the engine does not run: convert and smoke say so."""
    c = dict(cfg, architectures=[arch_name])
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(c, fh)
    t.fails("smoke", d, words=("unsupported architecture %s (supported: " % arch_name,))
