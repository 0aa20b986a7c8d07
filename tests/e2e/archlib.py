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
        if fam.get("moe"):  # router and experts (Qwen3-MoE: mlp.*_proj; Mixtral: block_sparse_moe.w1/w3/w2)
            E, Fe = moe_shape(fam, cfg)
            mp = p + fam["moe"] + "."
            w[mp + "gate.weight"] = mat(E, D, 3.0)
            for e in range(E):
                for nm, shape in zip(fam["names"], ((Fe, D), (Fe, D), (D, Fe))):
                    w[mp + "experts.%d.%s.weight" % (e, nm)] = mat(*shape)
        else:
            w[p + "mlp.gate_proj.weight"] = mat(F, D)
            w[p + "mlp.up_proj.weight"] = mat(F, D)
            w[p + "mlp.down_proj.weight"] = mat(D, F)
    if fam.get("fused"):  # Phi-3: q/k/v and gate/up as single matrices
        for l in range(L):
            p = "model.layers.%d." % l
            w[p + "self_attn.qkv_proj.weight"] = np.concatenate([w.pop(p + "self_attn.%s_proj.weight" % x)
                                                                 for x in "qkv"])
            w[p + "mlp.gate_up_proj.weight"] = np.concatenate([w.pop(p + "mlp.gate_proj.weight"),
                                                               w.pop(p + "mlp.up_proj.weight")])
    w["model.norm.weight"] = norm(D)
    if not cfg.get("tie_word_embeddings") and not fam.get("gemma"):
        w["lm_head.weight"] = mat(V, D, 2.0)
    return w


def moe_shape(fam, cfg):
    if fam["moe"] == "mlp":
        return cfg["num_experts"], cfg["moe_intermediate_size"]
    return cfg["num_local_experts"], cfg["intermediate_size"]


def moe(fam, f, cfg, p, xb):
    """transformers' Qwen3MoeSparseMoeBlock / MixtralSparseMoeBlock: softmax
    over the router logits, the top num_experts_per_tok, renormalized."""
    E, _ = moe_shape(fam, cfg)
    mp = p + fam["moe"] + "."
    lg = f[mp + "gate.weight"] @ xb
    pr = np.exp(lg - lg.max())
    pr /= pr.sum()
    top = np.argsort(-pr, kind="stable")[:cfg["num_experts_per_tok"]]
    wts = pr[top] / pr[top].sum()
    out = np.zeros_like(xb)
    g, u, dn = fam["names"]
    for e, wt in zip(top, wts):
        gt = f[mp + "experts.%d.%s.weight" % (e, g)] @ xb
        up = f[mp + "experts.%d.%s.weight" % (e, u)] @ xb
        out += wt * (f[mp + "experts.%d.%s.weight" % (e, dn)] @ (gt / (1 + np.exp(-gt)) * up))
    return out


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

def swa_layers(fam, cfg):
    """Which layers use sliding-window attention (transformers' layer_types)."""
    L = cfg["num_hidden_layers"]
    if not fam.get("gemma") or not cfg.get("sliding_window"):
        return [False] * L
    if cfg.get("layer_types"):
        return [t == "sliding_attention" for t in cfg["layer_types"]]
    n = cfg.get("sliding_window_pattern", 2 if fam["gemma"] == 2 else 6)
    return [(i + 1) % n != 0 for i in range(L)]


def forward(fam, w, cfg, tokens):
    """Logits at every position, float64, from the HF modeling code of the
    family: LlamaForCausalLM plus the family's features (Qwen3 q/k norms,
    SmolLM3 NoPE layers; Gemma 2/3: (1 + w) norms, sqrt(dim) embedding
    scale, norms after attention and around the FFN, GeGLU with tanh GELU,
    query_pre_attn_scalar, attention and final soft-capping, sliding-window
    layers, Gemma 3's local rope base and global linear rope scaling)."""
    D, L, H, KV = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // H
    eps = cfg["rms_norm_eps"]
    rot = int(hd * cfg.get("partial_rotary_factor", 1.0))  # Phi-4-mini rotates the leading rot dims
    half = rot // 2
    f = {k: v.astype(np.float64) for k, v in w.items()}
    plus1 = 1.0 if fam.get("norm_plus_one") else 0.0
    theta = cfg.get("rope_theta", 10000.0)
    inv = theta ** (-2.0 * np.arange(half) / rot)
    rope_layers = cfg.get("no_rope_layers") or [1] * L
    gemma = fam.get("gemma")
    swa = swa_layers(fam, cfg)
    inv_local = inv
    if gemma == 3:
        inv_local = cfg.get("rope_local_base_freq", 10000.0) ** (-2.0 * np.arange(half) / rot)
        rs = cfg.get("rope_scaling") or {}
        if rs.get("rope_type", rs.get("type")) == "linear":
            inv = inv / rs["factor"]
    mscale = 1.0
    rs = cfg.get("rope_scaling") or {}
    if fam.get("fused") and rs.get("type", rs.get("rope_type")) in ("longrope", "su"):
        # transformers' longrope: short factors up to original_max_position_embeddings
        orig = cfg["original_max_position_embeddings"]
        inv = inv / np.array(rs["short_factor"], dtype=np.float64)
        ratio = cfg["max_position_embeddings"] / orig
        mscale = np.sqrt(1 + np.log(ratio) / np.log(orig)) if ratio > 1 else 1.0
    scale = cfg.get("query_pre_attn_scalar", hd) ** -0.5 if gemma else 1 / np.sqrt(hd)
    acap = cfg.get("attn_logit_softcapping") if gemma else None
    fcap = cfg.get("final_logit_softcapping") if gemma else None

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (plus1 + g)

    def rope(v, pos, inv):
        c, s = np.cos(pos * inv) * mscale, np.sin(pos * inv) * mscale
        a, b = v[..., :half], v[..., half:rot]
        return np.concatenate([a * c - b * s, a * s + b * c, v[..., rot:]], axis=-1)

    kc = [[] for _ in range(L)]
    vc = [[] for _ in range(L)]
    out = []
    for pos, tok in enumerate(tokens):
        x = f["model.embed_tokens.weight"][tok]
        if gemma:
            x = x * np.float32(np.sqrt(D))
        for l in range(L):
            p = "model.layers.%d." % l
            xb = rms(x, f[p + "input_layernorm.weight"])
            if fam.get("fused"):
                qkv = f[p + "self_attn.qkv_proj.weight"] @ xb
                q, k, v = (qkv[:H * hd].reshape(H, hd), qkv[H * hd:(H + KV) * hd].reshape(KV, hd),
                           qkv[(H + KV) * hd:].reshape(KV, hd))
            else:
                q = (f[p + "self_attn.q_proj.weight"] @ xb).reshape(H, hd)
                k = (f[p + "self_attn.k_proj.weight"] @ xb).reshape(KV, hd)
                v = (f[p + "self_attn.v_proj.weight"] @ xb).reshape(KV, hd)
            if fam.get("qk_norm"):
                q = rms(q, f[p + "self_attn.q_norm.weight"])
                k = rms(k, f[p + "self_attn.k_norm.weight"])
            if rope_layers[l]:
                q, k = rope(q, pos, inv_local if swa[l] else inv), rope(k, pos, inv_local if swa[l] else inv)
            kc[l].append(k)
            vc[l].append(v)
            K, Vv = np.stack(kc[l]), np.stack(vc[l])
            att = np.empty((H, hd))
            t0 = max(0, pos - cfg["sliding_window"] + 1) if swa[l] else 0
            for h in range(H):
                g = h // (H // KV)
                sc = K[t0:, g, :] @ q[h] * scale
                if acap:
                    sc = np.tanh(sc / acap) * acap
                pr = np.exp(sc - sc.max())
                pr /= pr.sum()
                att[h] = pr @ Vv[t0:, g, :]
            o = f[p + "self_attn.o_proj.weight"] @ att.reshape(-1)
            if gemma:
                x = x + rms(o, f[p + "post_attention_layernorm.weight"])
                xb = rms(x, f[p + "pre_feedforward_layernorm.weight"])
            else:
                x = x + o
                xb = rms(x, f[p + "post_attention_layernorm.weight"])
            if fam.get("moe"):
                x = x + moe(fam, f, cfg, p, xb)
                continue
            if fam.get("fused"):
                gu = f[p + "mlp.gate_up_proj.weight"] @ xb
                gt, up = gu[:len(gu) // 2], gu[len(gu) // 2:]
            else:
                gt, up = f[p + "mlp.gate_proj.weight"] @ xb, f[p + "mlp.up_proj.weight"] @ xb
            if gemma:
                act = 0.5 * gt * (1 + np.tanh(np.sqrt(2 / np.pi) * (gt + 0.044715 * gt ** 3)))
                x = x + rms(f[p + "mlp.down_proj.weight"] @ (act * up), f[p + "post_feedforward_layernorm.weight"])
            else:
                x = x + f[p + "mlp.down_proj.weight"] @ (gt / (1 + np.exp(-gt)) * up)
        head = f.get("lm_head.weight", f["model.embed_tokens.weight"]) if not gemma else f["model.embed_tokens.weight"]
        lg = head @ rms(x, f["model.norm.weight"])
        if fcap:
            lg = np.tanh(lg / fcap) * fcap
        out.append(lg)
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
