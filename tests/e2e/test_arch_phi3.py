"""test_arch_phi3.py - Phi3ForCausalLM end to end (archlib's checks): the
fused qkv_proj (rows q, k, v) and gate_up_proj (gate, then up), which
llama.cpp keeps fused (attn_qkv, ffn_up) and the engine splits; LongRoPE
(rope_scaling type "longrope" with long and short factors, the attention
factor on cos and sin). The tokenizer: Llama 2's SentencePiece vocabulary
with Phi-3's added chat tokens, against @huggingface/tokenizers."""

import json
import os
import sys

import numpy as np

import archlib
import lib
from lib import check
import test_tokenizer as ttok

sys.path.insert(0, os.path.dirname(lib.MAKE_SAMPLE))
import make_sample  # noqa: E402

FAM = {"gguf": "phi3", "fused": True}
ADDED = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]


def config(V, hd=16, rot=None, **kw):
    """The fields of Phi-3-mini-128k-instruct's config.json, shrunk (rot:
    the rotary dims of a partial_rotary_factor config, for the factors)."""
    r = np.random.default_rng(4)
    rot = rot or hd
    c = {"architectures": ["Phi3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
         "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000 if V > 32000 else V - 5,
         "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
         "max_position_embeddings": 131072, "model_type": "phi3", "num_attention_heads": 4,
         "num_hidden_layers": 2, "num_key_value_heads": 4, "original_max_position_embeddings": 4096,
         "pad_token_id": V - 5, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
         "rope_scaling": {"long_factor": [float(x) for x in 1 + r.random(rot // 2) * 20],
                          "short_factor": [float(x) for x in 1 + r.random(rot // 2) * 2], "type": "longrope"},
         "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": False,
         "torch_dtype": "float32", "transformers_version": "4.40.2", "use_cache": True, "vocab_size": V}
    c.update(kw)
    return c


def spm_tokenizer(vocab, merges):
    tok = make_sample.tokenizer_json(vocab, merges)
    n = len(vocab)
    tok["added_tokens"] += [{"id": n + i, "content": a, "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": True}
                            for i, a in enumerate(ADDED)]
    tcfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "unk_token": "<unk>", "legacy": False, "tokenizer_class": "LlamaTokenizer",
            "chat_template": "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}"
                             "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"}
    return tok, tcfg


def make(t, name="phi3", seed=21, **kw):
    vocab, merges = make_sample.train_bpe(make_sample.CORPUS, 400)
    tok, tcfg = spm_tokenizer(vocab, merges)
    cfg = config(len(vocab) + len(ADDED), **kw)
    w = archlib.make_weights(FAM, cfg, seed)
    d = os.path.join(t.tmp, name)
    archlib.write_model(d, w, cfg, tok, tcfg)
    return d, w, cfg


def test_phi3_end_to_end(t):
    d, w, cfg = make(t)
    keys = {"phi3.block_count": 2, "phi3.rope.dimension_count": 16, "phi3.context_length": 131072,
            "phi3.rope.scaling.original_context_length": 4096,
            "phi3.rope.scaling.attn_factor": float(np.sqrt(1 + np.log(32) / np.log(4096))),
            "tokenizer.ggml.model": "llama"}
    tensors = ["blk.0.attn_qkv.weight", "blk.1.ffn_up.weight", "rope_factors_long.weight",
               "rope_factors_short.weight", "output.weight"]
    js = archlib.check_family(t, FAM, d, w, cfg, [1, 40, 77, 123, 9, 300, 51, 260, 18, 99], n_gen=6, keys=keys,
                              tensors=tensors)
    g = os.path.join(t.tmp, "phi3-f16.gguf")
    shapes = {x["name"]: x["shape"] for x in js["parse"][g]["tensors"]}
    check(shapes["blk.0.attn_qkv.weight"] == [64, 64 * 3] and shapes["blk.0.ffn_up.weight"] == [64, 256],
          "fused shapes %r" % shapes)
    # LongRoPE matters
    a = archlib.forward(FAM, w, cfg, [1, 40, 77, 123])
    b = archlib.forward(FAM, w, dict(cfg, rope_scaling=None), [1, 40, 77, 123])
    check(np.max(np.abs(a - b)) > 100 * archlib.TOL * np.max(np.abs(a)), "LongRoPE has no effect")


def test_phi4_mini_partial_rotary_end_to_end(t):
    """Phi-4-mini's shape, shrunk: partial_rotary_factor 0.75 (rope turns the
    leading 12 of 16 dims of each head, its LongRoPE factors hold 6 values),
    grouped KV heads and tied embeddings; llama.cpp reads rope.dimension_count
    12 from our GGUF and agrees with the engine, and numpy with both."""
    d, w, cfg = make(t, "phi4mini", seed=23, rot=12, partial_rotary_factor=0.75, num_key_value_heads=2,
                     tie_word_embeddings=True, original_max_position_embeddings=4096)
    check("lm_head.weight" not in w, "tied checkpoint has lm_head")
    keys = {"phi3.rope.dimension_count": 12, "phi3.attention.head_count_kv": 2}
    archlib.check_family(t, FAM, d, w, cfg, [1, 40, 77, 123, 9, 300, 51, 260, 18, 99], n_gen=6, keys=keys,
                         tensors=["rope_factors_long.weight", "rope_factors_short.weight"])
    # the partial rotary matters: the same weights with full rotary differ
    full = dict(cfg, partial_rotary_factor=1.0,
                rope_scaling=dict(cfg["rope_scaling"], short_factor=cfg["rope_scaling"]["short_factor"] + [1.0, 1.0]))
    a = archlib.forward(FAM, w, cfg, [1, 40, 77, 123])
    b = archlib.forward(FAM, w, full, [1, 40, 77, 123])
    check(np.max(np.abs(a - b)) > 100 * archlib.TOL * np.max(np.abs(a)), "partial rotary has no effect")
    # factors of the wrong length are refused
    bad = dict(cfg, rope_scaling=dict(cfg["rope_scaling"], short_factor=cfg["rope_scaling"]["short_factor"] + [1.0]))
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(bad, fh)
    t.fails("convert", d, "-o", os.path.join(t.tmp, "x.gguf"), words=("factor",))
    t.fails("smoke", d, words=("factor",))
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(dict(cfg, partial_rotary_factor=0.7), fh)  # 16 * 0.7 = 11 dims: odd
    t.fails("smoke", d, words=("partial_rotary_factor",))


def test_phi3_refuses(t):
    d, w, cfg = make(t)
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(dict(cfg, rope_scaling=dict(cfg["rope_scaling"], short_factor=[1.0] * 3)), fh)
    t.fails("convert", d, "-o", os.path.join(t.tmp, "x.gguf"), words=("short_factor",))
    t.fails("smoke", d, words=("short_factor",))
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(dict(cfg, intermediate_size=96), fh)
    t.fails("smoke", d, words=("has shape",))


def test_phi3_tokenizer_matches_huggingface(t):
    """Llama 2's vocabulary and merges with Phi-3's added tokens (without the
    rstrip flag Phi-3's chat markers carry: the engine does not strip around
    added tokens), BOS added: the engine on tokenizer.json and on the
    GGUF against @huggingface/tokenizers."""
    src = json.load(open(ttok.export(t, "llama2"), encoding="utf-8"))
    vocab = sorted(src["model"]["vocab"], key=lambda s: src["model"]["vocab"][s])
    tok, tcfg = spm_tokenizer(vocab, src["model"]["merges"])
    cfg = config(len(vocab) + len(ADDED), hidden_size=32, intermediate_size=32, num_attention_heads=2,
                 num_key_value_heads=2, hd=16)
    w = archlib.make_weights(FAM, cfg, 3)
    d = os.path.join(t.tmp, "ptok")
    archlib.write_model(d, w, cfg, tok, tcfg)
    g = os.path.join(t.tmp, "ptok.gguf")
    t.ok("convert", d, "--type", "f16", "-o", g)
    strings = ttok.STRINGS + ["<|user|>\nWhat is 2 + 2?<|end|>\n<|assistant|>\n", "text<|endoftext|>more"]
    check(len(strings) >= 50, "too few strings")
    tj = os.path.join(d, "tokenizer.json")
    want = [x["ids"] for x in ttok.references(t, strings, [tj])["json"][tj]]
    for path in (tj, g):
        got = [x["ids"] for x in ttok.ours(t, path, strings, add_bos=-1)["results"]]
        ttok.compare("%s vs @huggingface/tokenizers" % os.path.basename(path), strings, got, want)


test_phi3_end_to_end.timeout = 400
test_phi4_mini_partial_rotary_end_to_end.timeout = 400
test_phi3_tokenizer_matches_huggingface.timeout = 300
