"""test_engine.py - the bundled inference engine (engine/) against a numpy
forward pass written here, on small random Llama models generated here in
both layouts: Hugging Face safetensors + config.json (HF row order, half-split
rope) and GGUF written byte by byte with struct (Q/K rows permuted for the
interleaved rope, tensors F32/F16/BF16/Q8_0/Q4_0 quantized by the ggml
reference rules). A small driver compiled against libhubmirror.a prints the
engine's logits and generated tokens.

Bounds: the engine computes in F32 over the stored (dequantized) weights, so
against a float64 reference over the same dequantized weights every format
must agree to 1e-4. Against the original F32 weights the format's own
rounding shows; FORMAT_BOUND caps max|engine - F32 original| / max|logit|
for these random Gaussian models (measured: F16 0.002, BF16 0.021, Q8_0
0.038, Q4_0 0.39 - random weights have no outliers to spare Q4_0).
Hostile models must fail with exit 1 and a message naming the problem.

Needs python3-numpy (mk/deps.sh test installs it)."""

import json
import os
import struct
import subprocess

import numpy as np

import lib
from lib import check

ROOT = lib.ROOT

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/engine.h"
/* driver info|logits|gen MODEL SIMD THREADS [N TEMP TOPP SEED] TOKENS... */
static enum eng_simd parse_simd(const char *s)
{
	return !strcmp(s, "scalar") ? ENG_SIMD_SCALAR : !strcmp(s, "avx2") ? ENG_SIMD_AVX2
		: !strcmp(s, "avx512") ? ENG_SIMD_AVX512 : !strcmp(s, "avx512vnni") ? ENG_SIMD_AVX512VNNI
		: !strcmp(s, "amx") ? ENG_SIMD_AMX : ENG_SIMD_AUTO;
}
int main(int argc, char **argv)
{
	struct hm_ctx ctx = {0};
	struct eng_model *m = NULL;
	struct eng_state *s = NULL;
	struct eng_sampler *smp = NULL;
	if (argc < 3)
		return 2;
	if (eng_model_open(&ctx, argv[2], &m)) {
		fprintf(stderr, "error: %s\n", ctx.errmsg);
		return 1;
	}
	const struct eng_config *c = eng_model_config(m);
	if (!strcmp(argv[1], "info")) {
		printf("{\"dim\": %u, \"n_layer\": %u, \"n_head\": %u, \"n_kv_head\": %u, \"head_dim\": %u, \"ffn\": %u, "
		       "\"vocab\": %u, \"ctx_len\": %u, \"theta\": %g, \"eps\": %g, \"tied\": %d, \"interleaved\": %d, "
		       "\"llama3\": %d, \"weight_type\": %u, \"weight_bytes\": %llu, \"format\": \"%s\", \"best\": \"%s\"}\n",
		       c->dim, c->n_layer, c->n_head, c->n_kv_head, c->head_dim, c->ffn_dim, c->vocab, c->ctx_len,
		       (double)c->rope_theta, (double)c->norm_eps, c->tied, c->interleaved_rope, c->rope_llama3,
		       c->weight_type, (unsigned long long)c->weight_bytes, c->format, eng_simd_name(eng_simd_best()));
		eng_model_close(m);
		return 0;
	}
	if (argc < 5 || eng_state_new(&ctx, m, 0, atoi(argv[4]), parse_simd(argv[3]), &s)) {
		fprintf(stderr, "error: %s\n", ctx.errmsg);
		return 1;
	}
	int rc = 0;
	if (!strcmp(argv[1], "logits")) {
		float *lg = malloc(c->vocab * sizeof(float));
		for (int i = 5; i < argc; i++) {
			if (eng_forward(&ctx, s, (uint32_t)atoi(argv[i]), (uint32_t)(i - 5), lg)) {
				fprintf(stderr, "error: %s\n", ctx.errmsg);
				rc = 1;
				break;
			}
			for (uint32_t v = 0; v < c->vocab; v++)
				printf("%.9g%c", (double)lg[v], v + 1 == c->vocab ? '\n' : ' ');
		}
		free(lg);
	} else if (!strcmp(argv[1], "gen") && argc > 9) {
		size_t n = (size_t)atoi(argv[5]), nout = 0, np = (size_t)(argc - 9);
		uint32_t *prompt = malloc(np * sizeof(uint32_t)), *out = malloc((n + 1) * sizeof(uint32_t));
		for (size_t i = 0; i < np; i++)
			prompt[i] = (uint32_t)atoi(argv[9 + i]);
		struct eng_gen_opts o = {n, -1, NULL, NULL};
		if (eng_sampler_new(&ctx, c->vocab, (float)atof(argv[6]), (float)atof(argv[7]), strtoull(argv[8], NULL, 10), &smp) ||
		    eng_generate(&ctx, s, smp, prompt, np, &o, out, &nout)) {
			fprintf(stderr, "error: %s\n", ctx.errmsg);
			rc = 1;
		}
		for (size_t i = 0; i < nout; i++)
			printf("%u%c", out[i], i + 1 == nout ? '\n' : ' ');
		free(prompt);
		free(out);
	} else {
		rc = 2;
	}
	eng_sampler_free(smp);
	eng_state_free(s);
	eng_model_close(m);
	return rc;
}

"""

F32, F16, Q4_0, Q8_0, BF16 = 0, 1, 2, 8, 30
TYPE_NAMES = {F32: "F32", F16: "F16", BF16: "BF16", Q8_0: "Q8_0", Q4_0: "Q4_0"}
# max |engine - F32 original| / max |logit| allowed per storage type
FORMAT_BOUND = {F32: 1e-5, F16: 5e-3, BF16: 5e-2, Q8_0: 8e-2, Q4_0: 0.6}
TOL = 1e-4  # engine vs reference over the same stored weights
# the same for Q8_0/Q4_0 against a reference quantizing the activations as
# the engine does, relative to max |logit|: the reference runs in float64,
# the engine in F32, so a value at a rounding boundary can land on the other
# 8-bit step
TOL_ACTQ = 2e-3
PROMPT = [1, 5, 9, 17, 33, 2, 64, 7, 3, 90, 11, 42]


def driver(t):
    """The C driver, built once per test against libhubmirror.a."""
    return lib.build_driver(t, "eng-driver", DRIVER, opt="-O2")


def run(t, *args):
    return subprocess.run([driver(t)] + [str(a) for a in args], capture_output=True, text=True, timeout=60)


def info(t, path):
    p = run(t, "info", path)
    check(p.returncode == 0, "info %s failed: %s" % (path, p.stderr))
    return json.loads(p.stdout)


def logits(t, path, tokens, simd="auto", threads=4):
    p = run(t, "logits", path, simd, threads, *tokens)
    check(p.returncode == 0, "engine failed on %s (%s): %s" % (path, simd, p.stderr))
    rows = [np.array([float(v) for v in line.split()]) for line in p.stdout.splitlines()]
    check(len(rows) == len(tokens), "expected %d rows of logits, got %d" % (len(tokens), len(rows)))
    return np.stack(rows)


def generate(t, path, n, temp, top_p, seed, prompt, simd="auto", threads=4):
    p = run(t, "gen", path, simd, threads, n, temp, top_p, seed, *prompt)
    check(p.returncode == 0, "generation failed on %s: %s" % (path, p.stderr))
    return [int(v) for v in p.stdout.split()]


# ---- models -----------------------------------------------------------------

def make_config(**kw):
    cfg = dict(dim=64, n_layer=2, n_head=4, n_kv=2, hd=16, ffn=96, vocab=100, theta=10000.0, eps=1e-5,
               tied=False, llama3=None, ctx=128)
    cfg.update(kw)
    return cfg


def make_weights(cfg, seed=7):
    """HF-order float32 weights of a random model."""
    r = np.random.default_rng(seed)
    D, F, V, hd = cfg["dim"], cfg["ffn"], cfg["vocab"], cfg["hd"]
    q, kv = cfg["n_head"] * hd, cfg["n_kv"] * hd

    def mat(rows, cols, scale=1.0):
        return (r.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def norm():
        return (1 + 0.1 * r.standard_normal(D)).astype(np.float32)

    w = {"embed": (r.standard_normal((V, D)) * 0.5).astype(np.float32), "norm": norm(), "layers": []}
    if not cfg["tied"]:
        w["lm_head"] = mat(V, D, 2.0)
    for _ in range(cfg["n_layer"]):
        w["layers"].append({"attn_norm": norm(), "ffn_norm": norm(), "q": mat(q, D, 2.0), "k": mat(kv, D, 2.0),
                            "v": mat(kv, D), "o": mat(D, q), "gate": mat(F, D), "up": mat(F, D),
                            "down": mat(D, F)})
    return w


def llama3_factors(cfg):
    s = cfg["llama3"]
    hd, base = cfg["hd"], cfg["theta"]
    out = []
    for i in range(hd // 2):
        freq = np.float32(1.0) / np.power(np.float32(base), np.float32(2 * i) / np.float32(hd), dtype=np.float32)
        wavelen = 2 * np.pi / float(freq)
        lw, hw = s["original_max_position_embeddings"] / s["low_freq_factor"], \
            s["original_max_position_embeddings"] / s["high_freq_factor"]
        if wavelen < hw:
            f = 1.0
        elif wavelen > lw:
            f = s["factor"]
        else:
            smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / \
                (s["high_freq_factor"] - s["low_freq_factor"])
            f = 1 / ((1 - smooth) / s["factor"] + smooth)
        out.append(f)
    return np.array(out, dtype=np.float32)


def act_q8(x):
    """The engine's 8-bit activations for Q8_0/Q4_0 matrices (llama.cpp's
    quantize_row_q8_0): F32 blocks of 32, d = max|x|/127, q = round half to
    even (x * (1/d)); returns q * d."""
    b = np.asarray(x, dtype=np.float32).reshape(-1, 32)
    d = (np.abs(b).max(axis=1) / np.float32(127)).astype(np.float32)
    idd = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.rint(b * idd[:, None])
    return (q.astype(np.float64) * d.astype(np.float64)[:, None]).reshape(np.shape(x))


def reference(w, cfg, tokens, actq=False):
    """float64 forward pass (HF order, rotate_half rope); logits per position.
    actq: the matrices multiply 8-bit activations (act_q8), as the engine's
    Q8_0/Q4_0 products do."""
    aq = act_q8 if actq else (lambda v: v)
    D, hd, H, KV = cfg["dim"], cfg["hd"], cfg["n_head"], cfg["n_kv"]
    half = hd // 2
    inv = cfg["theta"] ** (-2.0 * np.arange(half) / hd)
    if cfg["llama3"]:
        inv = inv / llama3_factors(cfg).astype(np.float64)
    f64 = lambda a: np.asarray(a, dtype=np.float64)

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x) + cfg["eps"]) * f64(g)

    def rope(v, pos):
        c, s = np.cos(pos * inv), np.sin(pos * inv)
        a, b = v[..., :half], v[..., half:]
        return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)

    kc = [[] for _ in w["layers"]]
    vc = [[] for _ in w["layers"]]
    out = []
    for pos, tok in enumerate(tokens):
        x = f64(w["embed"][tok])
        for l, L in enumerate(w["layers"]):
            xb = aq(rms(x, L["attn_norm"]))
            q = rope((f64(L["q"]) @ xb).reshape(H, hd), pos)
            k = rope((f64(L["k"]) @ xb).reshape(KV, hd), pos)
            v = (f64(L["v"]) @ xb).reshape(KV, hd)
            kc[l].append(k)
            vc[l].append(v)
            K, Vv = np.stack(kc[l]), np.stack(vc[l])  # [T, KV, hd]
            att = np.empty((H, hd))
            for h in range(H):
                g = h // (H // KV)
                sc = K[:, g, :] @ q[h] / np.sqrt(hd)
                p = np.exp(sc - sc.max())
                p /= p.sum()
                att[h] = p @ Vv[:, g, :]
            x = x + f64(L["o"]) @ aq(att.reshape(-1))
            xb = aq(rms(x, L["ffn_norm"]))
            gt, up = f64(L["gate"]) @ xb, f64(L["up"]) @ xb
            x = x + f64(L["down"]) @ aq(gt / (1 + np.exp(-gt)) * up)
        head = w["embed"] if cfg["tied"] else w["lm_head"]
        out.append(f64(head) @ aq(rms(x, w["norm"])))
    return np.stack(out)


def greedy_reference(w, cfg, prompt, n):
    seq, out = list(prompt), []
    for _ in range(n):
        tok = int(np.argmax(reference(w, cfg, seq)[-1]))
        out.append(tok)
        seq.append(tok)
    return out


# ---- encodings (ggml reference rules) -----------------------------------------

def to_bf16(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return b, (b.astype(np.uint32) << 16).view(np.float32)


def roundf(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def q8_0(a):
    b = a.reshape(-1, 32).astype(np.float32)
    d = np.abs(b).max(axis=1) / np.float32(127)
    idd = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = roundf(b * idd[:, None]).astype(np.int8)
    d16 = d.astype(np.float16)
    raw = np.concatenate([d16.view(np.uint8).reshape(-1, 2), q.view(np.uint8)], axis=1)
    deq = q.astype(np.float32) * d16.astype(np.float32)[:, None]
    return raw.tobytes(), deq.reshape(a.shape)


def q4_0(a):
    b = a.reshape(-1, 32).astype(np.float32)
    idx = np.abs(b).argmax(axis=1)
    mx = b[np.arange(len(b)), idx]
    d = (mx / np.float32(-8)).astype(np.float32)
    idd = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.minimum(15, np.trunc(b * idd[:, None] + np.float32(8.5))).astype(np.uint8)
    d16 = d.astype(np.float16)
    packed = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)
    raw = np.concatenate([d16.view(np.uint8).reshape(-1, 2), packed], axis=1)
    deq = (q.astype(np.float32) - 8) * d16.astype(np.float32)[:, None]
    return raw.tobytes(), deq.reshape(a.shape)


def encode(a, typ):
    """(bytes, the values the bytes hold)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if typ == F32:
        return a.tobytes(), a
    if typ == F16:
        h = a.astype(np.float16)
        return h.tobytes(), h.astype(np.float32)
    if typ == BF16:
        b, back = to_bf16(a)
        return b.tobytes(), back.reshape(a.shape)
    if typ == Q8_0:
        return q8_0(a)
    if typ == Q4_0:
        return q4_0(a)
    raise ValueError(typ)


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


# ---- safetensors + config.json ------------------------------------------------

def write_safetensors(path, tensors):
    """tensors: [(name, dtype, shape, bytes)]."""
    header, off = {}, 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hb)) + hb)
        for _, _, _, data in tensors:
            fh.write(data)


def hf_config(cfg):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg["dim"],
         "intermediate_size": cfg["ffn"], "num_hidden_layers": cfg["n_layer"],
         "num_attention_heads": cfg["n_head"], "num_key_value_heads": cfg["n_kv"], "vocab_size": cfg["vocab"],
         "max_position_embeddings": cfg["ctx"], "rms_norm_eps": cfg["eps"], "rope_theta": cfg["theta"],
         "tie_word_embeddings": cfg["tied"], "torch_dtype": "float32"}
    if cfg["hd"] != cfg["dim"] // cfg["n_head"]:
        c["head_dim"] = cfg["hd"]
    if cfg["llama3"]:
        c["rope_scaling"] = dict(cfg["llama3"], rope_type="llama3")
    return c


def hf_tensors(w, cfg):
    """[(HF name, float32 array)]."""
    out = [("model.embed_tokens.weight", w["embed"]), ("model.norm.weight", w["norm"])]
    if not cfg["tied"]:
        out.append(("lm_head.weight", w["lm_head"]))
    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "q": "self_attn.q_proj",
             "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj", "gate": "mlp.gate_proj",
             "up": "mlp.up_proj", "down": "mlp.down_proj"}
    for i, L in enumerate(w["layers"]):
        for k, v in L.items():
            out.append(("model.layers.%d.%s.weight" % (i, names[k]), v))
    return out


def write_hf(d, w, cfg, typ=F32, config=None, drop=(), extra=()):
    """Writes d/config.json + d/model.safetensors; returns the weights the file holds."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(config if config is not None else hf_config(cfg), fh)
    held = {}
    tensors = []
    for name, a in hf_tensors(w, cfg):
        if name in drop:
            continue
        raw, back = encode(a, typ)
        held[name] = back
        tensors.append((name, TYPE_NAMES[typ], a.shape, raw))
    tensors.extend(extra)
    write_safetensors(os.path.join(d, "model.safetensors"), sorted(tensors))
    return from_hf_names(held, cfg)


def from_hf_names(held, cfg):
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "q",
             "self_attn.k_proj": "k", "self_attn.v_proj": "v", "self_attn.o_proj": "o", "mlp.gate_proj": "gate",
             "mlp.up_proj": "up", "mlp.down_proj": "down"}
    w = {"embed": held["model.embed_tokens.weight"], "norm": held["model.norm.weight"],
         "layers": [{} for _ in range(cfg["n_layer"])]}
    if "lm_head.weight" in held:
        w["lm_head"] = held["lm_head.weight"]
    for name, a in held.items():
        if name.startswith("model.layers."):
            parts = name.split(".")
            w["layers"][int(parts[2])][names[".".join(parts[3:-1])]] = a
    return w


# ---- GGUF -------------------------------------------------------------------------

VFMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write_gguf(path, kvs, tensors, align=32):
    """kvs: [(key, vtype, value)] (arrays: (elem type, items)); tensors:
    [(name, ne, type, bytes)]."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    for key, vt, val in kvs:
        out += gstr(key) + struct.pack("<I", vt)
        if vt == 8:
            out += gstr(val)
        elif vt == 9:
            elem, items = val
            out += struct.pack("<IQ", elem, len(items))
            for it in items:
                out += gstr(it) if elem == 8 else struct.pack("<" + VFMT[elem], it)
        else:
            out += struct.pack("<" + VFMT[vt], val)
    off = 0
    for name, ne, typ, data in tensors:
        out += gstr(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        out += struct.pack("<IQ", typ, off)
        off += len(data) + (-len(data) % align)
    out += b"\0" * (-len(out) % align)
    for _, _, _, data in tensors:
        out += data + b"\0" * (-len(data) % align)
    with open(path, "wb") as fh:
        fh.write(out)


def gguf_kvs(cfg, **over):
    kv = {"general.architecture": (8, "llama"), "general.name": (8, "tiny"),
          "llama.block_count": (4, cfg["n_layer"]), "llama.context_length": (4, cfg["ctx"]),
          "llama.embedding_length": (4, cfg["dim"]), "llama.feed_forward_length": (4, cfg["ffn"]),
          "llama.attention.head_count": (4, cfg["n_head"]), "llama.attention.head_count_kv": (4, cfg["n_kv"]),
          "llama.rope.freq_base": (6, cfg["theta"]), "llama.attention.layer_norm_rms_epsilon": (6, cfg["eps"]),
          "llama.vocab_size": (4, cfg["vocab"]), "llama.rope.dimension_count": (4, cfg["hd"])}
    if cfg["hd"] != cfg["dim"] // cfg["n_head"]:
        kv["llama.attention.key_length"] = (4, cfg["hd"])
        kv["llama.attention.value_length"] = (4, cfg["hd"])
    for k, v in over.items():
        k = k.replace("__", ".")
        if v is None:
            kv.pop(k, None)
        else:
            kv[k] = v
    return [(k, vt, v) for k, (vt, v) in kv.items()]


def write_llama_gguf(path, w, cfg, typ=F32, drop=(), replace=None, kv=None):
    """GGUF "llama": permuted Q/K, matrices in typ, vectors F32. Returns the
    weights the file holds, in HF order."""
    H, KV = cfg["n_head"], cfg["n_kv"]
    mats = [("token_embd.weight", w["embed"], "embed")]
    if not cfg["tied"]:
        mats.append(("output.weight", w["lm_head"], "lm_head"))
    vecs = [("output_norm.weight", w["norm"], "norm")]
    gnames = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output", "gate": "ffn_gate", "up": "ffn_up",
              "down": "ffn_down", "attn_norm": "attn_norm", "ffn_norm": "ffn_norm"}
    for i, L in enumerate(w["layers"]):
        for k, a in L.items():
            name = "blk.%d.%s.weight" % (i, gnames[k])
            if k == "q":
                a = permute(a, H)
            elif k == "k":
                a = permute(a, KV)
            (vecs if a.ndim == 1 else mats).append((name, a, (i, k)))
    held = {"layers": [{} for _ in w["layers"]]}
    tensors = []

    def keep(tag, back):
        if isinstance(tag, tuple):
            i, k = tag
            held["layers"][i][k] = unpermute(back, H) if k == "q" else unpermute(back, KV) if k == "k" else back
        else:
            held[tag] = back

    for name, a, tag in mats + vecs:
        t = typ if a.ndim == 2 else F32
        raw, back = encode(a, t)
        keep(tag, back)
        if name in drop:
            continue
        ne = list(reversed(a.shape))
        if replace and name in replace:
            ne, t, raw = replace[name]
        tensors.append((name, ne, t, raw))
    if cfg["llama3"]:
        f = llama3_factors(cfg)
        tensors.append(("rope_freqs.weight", [len(f)], F32, f.tobytes()))
    write_gguf(path, kv if kv is not None else gguf_kvs(cfg), tensors)
    return held


# ---- checks ---------------------------------------------------------------------

def compare(t, path, held, cfg, original=None, typ=F32, simds=("scalar", "auto"), label=""):
    """Engine vs the reference over the stored weights (TOL; for Q8_0/Q4_0
    the reference quantizes activations as the engine does: TOL_ACTQ) and vs
    the F32 original (FORMAT_BOUND); returns the two max errors. For
    Q8_0/Q4_0 also prints the effect of the 8-bit activations alone (engine
    vs the F32-activation reference over the same weights)."""
    actq = typ in (Q8_0, Q4_0)
    ref = reference(held, cfg, PROMPT, actq)
    tol = TOL_ACTQ * float(np.max(np.abs(ref))) if actq else TOL
    errs = []
    for simd in simds:
        for threads in ((1, 3) if simd == "scalar" else (4,)):
            got = logits(t, path, PROMPT, simd, threads)
            err = float(np.max(np.abs(got - ref)))
            check(err <= tol, "%s %s/%s threads %d: max |engine - reference| = %g > %g"
                  % (label, TYPE_NAMES[typ], simd, threads, err, tol))
            errs.append(err)
    if actq:
        f32 = reference(held, cfg, PROMPT)
        print("%s %s: 8-bit activations move the logits by max %.3g relative to F32 activations"
              % (label, TYPE_NAMES[typ], float(np.max(np.abs(got - f32)) / np.max(np.abs(f32)))))
    orig = 0.0
    if original is not None:
        got, want = logits(t, path, PROMPT), reference(original, cfg, PROMPT)
        orig = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        check(orig <= FORMAT_BOUND[typ], "%s %s: max |engine - F32 original| / max |logit| = %g > %g"
              % (label, TYPE_NAMES[typ], orig, FORMAT_BOUND[typ]))
    print("%s %s: engine vs reference %.3g, vs F32 original %.3g (relative)" % (label, TYPE_NAMES[typ], max(errs), orig))
    return max(errs), orig


LEVELS = ("scalar", "avx2", "avx512", "avx512vnni", "amx")


def simd_levels(t, path):
    best = info(t, path)["best"]
    return LEVELS[:LEVELS.index(best) + 1]


def fails(t, path, *needles):
    p = run(t, "logits", path, "auto", 2, 1, 2)
    check(p.returncode == 1, "%s: expected exit 1, got %d (%s)" % (path, p.returncode, p.stderr))
    for n in needles:
        check(n in p.stderr, "%s: expected %r in the error, got %r" % (path, n, p.stderr))


# ---- tests -------------------------------------------------------------------------

def test_engine_safetensors_f32_matches_numpy(t):
    cfg = make_config()
    w = make_weights(cfg)
    d = os.path.join(t.tmp, "hf")
    held = write_hf(d, w, cfg)
    c = info(t, d)
    check(c["format"] == "safetensors" and c["interleaved"] == 0 and c["tied"] == 0, "info: %r" % c)
    check(c["dim"] == 64 and c["n_kv_head"] == 2 and c["head_dim"] == 16 and c["vocab"] == 100, "info: %r" % c)
    compare(t, d, held, cfg, w, F32, simd_levels(t, d), "safetensors")
    # the .safetensors file itself, config.json beside it
    compare(t, os.path.join(d, "model.safetensors"), held, cfg, None, F32, ("auto",), "safetensors file")
    got = generate(t, d, 8, 0, 0, 0, PROMPT[:4])
    want = greedy_reference(held, cfg, PROMPT[:4], 8)
    check(got == want, "greedy: engine %r, numpy %r" % (got, want))


def test_engine_gguf_f32_matches_numpy(t):
    cfg = make_config()
    w = make_weights(cfg)
    path = os.path.join(t.tmp, "m.gguf")
    held = write_llama_gguf(path, w, cfg, F32)
    c = info(t, path)
    check(c["format"] == "gguf" and c["interleaved"] == 1 and c["weight_type"] == F32, "info: %r" % c)
    compare(t, path, held, cfg, w, F32, simd_levels(t, path), "gguf")
    got = generate(t, path, 8, 0, 0, 0, PROMPT[:4])
    want = greedy_reference(held, cfg, PROMPT[:4], 8)
    check(got == want, "greedy: engine %r, numpy %r" % (got, want))


def test_engine_gguf_types(t):
    cfg = make_config()
    w = make_weights(cfg)
    simds = None
    for typ in (F16, BF16, Q8_0, Q4_0):
        path = os.path.join(t.tmp, "m-%s.gguf" % TYPE_NAMES[typ])
        held = write_llama_gguf(path, w, cfg, typ)
        simds = simds or simd_levels(t, path)
        check(info(t, path)["weight_type"] == typ, "weight type of %s" % path)
        compare(t, path, held, cfg, w, typ, simds, "gguf")


def test_engine_safetensors_half_types(t):
    cfg = make_config()
    w = make_weights(cfg)
    for typ in (F16, BF16):
        d = os.path.join(t.tmp, "hf-%s" % TYPE_NAMES[typ])
        held = write_hf(d, w, cfg, typ)
        compare(t, d, held, cfg, w, typ, simd_levels(t, d), "safetensors")


def test_engine_tied_gqa_llama3(t):
    """Tied classifier, 8 heads over 2 kv heads, head_dim != dim/heads,
    theta 500000 with Llama 3 frequency scaling; both layouts."""
    l3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    cfg = make_config(n_head=8, n_kv=2, hd=32, dim=128, tied=True, theta=500000.0, llama3=l3)
    w = make_weights(cfg, seed=11)
    d = os.path.join(t.tmp, "hf")
    held = write_hf(d, w, cfg)
    c = info(t, d)
    check(c["tied"] == 1 and c["llama3"] == 1 and c["head_dim"] == 32, "info: %r" % c)
    compare(t, d, held, cfg, w, F32, ("scalar", "auto"), "tied/llama3 safetensors")
    path = os.path.join(t.tmp, "m.gguf")
    held = write_llama_gguf(path, w, cfg, Q8_0)
    c = info(t, path)
    check(c["tied"] == 1 and c["llama3"] == 1, "info: %r" % c)
    compare(t, path, held, cfg, w, Q8_0, ("scalar", "auto"), "tied/llama3 gguf")
    # the scaling matters: without it the logits differ
    plain = dict(cfg, llama3=None)
    far = float(np.max(np.abs(logits(t, path, PROMPT) - reference(held, plain, PROMPT))))
    check(far > 1e-3, "llama3 scaling has no effect (%g)" % far)


def test_engine_sampling(t):
    cfg = make_config()
    w = make_weights(cfg)
    d = os.path.join(t.tmp, "hf")
    write_hf(d, w, cfg)
    a = generate(t, d, 16, 1.0, 0.9, 1234, PROMPT[:3])
    b = generate(t, d, 16, 1.0, 0.9, 1234, PROMPT[:3], "scalar", 1)
    c = generate(t, d, 16, 1.0, 0.9, 99, PROMPT[:3])
    check(len(a) == 16 and all(0 <= x < cfg["vocab"] for x in a), "sampled %r" % a)
    check(a == b, "same seed, different tokens: %r vs %r" % (a, b))
    check(a != c, "different seeds, same tokens: %r" % a)
    g = generate(t, d, 8, 0, 0.9, 5, PROMPT[:3])
    check(g == greedy_reference(from_st(d, cfg), cfg, PROMPT[:3], 8), "temperature 0 is not greedy: %r" % g)


def from_st(d, cfg):
    """The weights of an F32 model written by write_hf, read back."""
    with open(os.path.join(d, "model.safetensors"), "rb") as fh:
        data = fh.read()
    n = struct.unpack_from("<Q", data)[0]
    hdr = json.loads(data[8:8 + n])
    held = {}
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        held[name] = np.frombuffer(data[8 + n + b:8 + n + end], dtype=np.float32).reshape(e["shape"])
    return from_hf_names(held, cfg)


def test_engine_sample_repo(t):
    d = os.path.join(t.tmp, "sample")
    p = subprocess.run([lib.PY, lib.MAKE_SAMPLE, d], capture_output=True, text=True)
    check(p.returncode == 0, "make_sample: %s" % p.stderr)
    c = info(t, d)
    check(c["format"] == "safetensors" and c["n_layer"] == 2 and c["dim"] == 192, "info: %r" % c)
    got = logits(t, d, [1, 100, 200, 300])
    check(np.all(np.isfinite(got)), "non-finite logits from the sample model")
    with open(os.path.join(d, "config.json")) as fh:
        hc = json.load(fh)
    cfg = make_config(dim=hc["hidden_size"], n_layer=hc["num_hidden_layers"], n_head=hc["num_attention_heads"],
                      n_kv=hc["num_key_value_heads"], hd=hc["hidden_size"] // hc["num_attention_heads"],
                      ffn=hc["intermediate_size"], vocab=hc["vocab_size"], theta=hc["rope_theta"],
                      eps=hc["rms_norm_eps"], tied=bool(hc.get("tie_word_embeddings")))
    err = float(np.max(np.abs(got - reference(from_st(d, cfg), cfg, [1, 100, 200, 300]))))
    check(err <= TOL, "sample model: max |engine - reference| = %g" % err)


def test_engine_hostile_gguf(t):
    cfg = make_config()
    w = make_weights(cfg)
    cases = []

    def case(name, needles, **kw):
        path = os.path.join(t.tmp, name + ".gguf")
        write_llama_gguf(path, w, cfg, kw.pop("typ", F32), **kw)
        cases.append((path, needles))

    case("missing", ["missing tensor 'blk.1.ffn_up.weight'"], drop=("blk.1.ffn_up.weight",))
    case("shape", ["blk.0.attn_k.weight", "expected {64, 32}"],
         replace={"blk.0.attn_k.weight": ([64, 16], F32, np.zeros((16, 64), np.float32).tobytes())})
    case("q4_1", ["Q4_1", "does not compute"],
         replace={"blk.0.attn_v.weight": ([64, 32], 3, b"\0" * (20 * 2 * 32))})
    case("vocab", ["vocab/embedding mismatch"], kv=gguf_kvs(cfg, llama__vocab_size=(4, 99)))
    case("tokens", ["vocab/embedding mismatch"],
         kv=gguf_kvs(cfg, tokenizer__ggml__tokens=(9, (8, ["t%d" % i for i in range(50)]))))
    case("layers", ["block count 5000 is out of range"], kv=gguf_kvs(cfg, llama__block_count=(4, 5000)))
    case("dim", ["embedding length", "out of range"], kv=gguf_kvs(cfg, llama__embedding_length=(4, 1 << 20)))
    case("ctx", ["context length", "out of range"], kv=gguf_kvs(cfg, llama__context_length=(4, 1 << 30)))
    case("kvheads", ["do not divide"], kv=gguf_kvs(cfg, llama__attention__head_count_kv=(4, 3)))
    case("heads", ["not a multiple of 3 heads"], kv=gguf_kvs(cfg, llama__attention__head_count=(4, 3)))
    case("arch", ["unsupported architecture gpt2 (supported: llama (Llama, Mistral, Mixtral), qwen2, qwen3, qwen3moe"], kv=gguf_kvs(cfg, general__architecture=(8, "gpt2")))
    case("noeps", ["layer_norm_rms_epsilon"], kv=gguf_kvs(cfg, llama__attention__layer_norm_rms_epsilon=None))
    case("eps", ["epsilon", "out of range"], kv=gguf_kvs(cfg, llama__attention__layer_norm_rms_epsilon=(6, -1.0)))
    case("rot", ["rope dimension count 7"], kv=gguf_kvs(cfg, llama__rope__dimension_count=(4, 7)))
    case("rotbig", ["rope dimension count 1000"], kv=gguf_kvs(cfg, llama__rope__dimension_count=(4, 1000)))
    case("norm", ["blk.0.ffn_norm.weight", "vector of 64"],
         replace={"blk.0.ffn_norm.weight": ([32], F32, np.ones(32, np.float32).tobytes())})
    case("nan", ["non-finite"],
         replace={"output_norm.weight": ([64], F32, np.full(64, np.nan, np.float32).tobytes())})
    for path, needles in cases:
        fails(t, path, *needles)
    # truncated file: the reader refuses it
    path = os.path.join(t.tmp, "short.gguf")
    with open(cases[0][0], "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(data[:len(data) // 2])
    fails(t, path, path)


def test_engine_hostile_safetensors(t):
    cfg = make_config()
    w = make_weights(cfg)

    def case(name, needles, config=None, **kw):
        d = os.path.join(t.tmp, name)
        write_hf(d, w, cfg, config=config, **kw)
        fails(t, d, *needles)

    base = hf_config(cfg)
    case("vocab", ["vocab/embedding mismatch"], dict(base, vocab_size=101))
    case("divide", ["not a multiple of 5 heads"], dict(base, num_attention_heads=5))
    case("kv", ["do not divide"], dict(base, num_key_value_heads=3))
    case("layers", ["block count 2000 is out of range"], dict(base, num_hidden_layers=2000))
    case("ctx", ["context length", "out of range"], dict(base, max_position_embeddings=1 << 30))
    case("arch", ["unsupported architecture GPT2LMHeadModel (supported: "], dict(base, architectures=["GPT2LMHeadModel"]))
    case("noffn", ["config.json has no 'intermediate_size'"], {k: v for k, v in base.items() if k != "intermediate_size"})
    case("rope", ["rope_scaling type 'yarn'"], dict(base, rope_scaling={"rope_type": "yarn", "factor": 4.0}))
    case("missing", ["missing tensor 'model.layers.1.mlp.down_proj.weight'"], drop=("model.layers.1.mlp.down_proj.weight",))
    case("nohead", ["missing tensor 'lm_head.weight'"], drop=("lm_head.weight",))
    case("dtype", ["model.layers.0.mlp.up_proj.weight", "I32"], drop=("model.layers.0.mlp.up_proj.weight",),
         extra=[("model.layers.0.mlp.up_proj.weight", "I32", (96, 64), b"\0" * (96 * 64 * 4))])
    case("shape", ["model.layers.0.self_attn.o_proj.weight", "expected [64, 64]"],
         drop=("model.layers.0.self_attn.o_proj.weight",),
         extra=[("model.layers.0.self_attn.o_proj.weight", "F32", (64, 32), b"\0" * (64 * 32 * 4))])
    d = os.path.join(t.tmp, "noconfig")
    write_hf(d, w, cfg)
    os.unlink(os.path.join(d, "config.json"))
    fails(t, d, "config.json")
    fails(t, os.path.join(t.tmp, "absent"), "cannot open")
