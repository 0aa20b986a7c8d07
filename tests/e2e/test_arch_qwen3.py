"""test_arch_qwen3.py - Qwen3ForCausalLM end to end (archlib's checks):
per-head RMSNorm of q and k before the (NEOX) rope, head_dim wider than
hidden_size / heads, no projection biases, tied embeddings; Qwen2's
byte-level BPE tokenizer layout against @huggingface/tokenizers."""

import json
import os
import unicodedata

import numpy as np

import archlib
from lib import check
import test_qwen2 as q2
import test_tokenizer as ttok

FAM = {"gguf": "qwen3", "qk_norm": True}


def config(V, **kw):
    """The fields of Qwen3-0.6B's config.json, shrunk."""
    c = {"architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
         "bos_token_id": V - 3, "eos_token_id": V - 1, "head_dim": 32, "hidden_act": "silu", "hidden_size": 64,
         "initializer_range": 0.02, "intermediate_size": 128, "max_position_embeddings": 40960,
         "max_window_layers": 2, "model_type": "qwen3", "num_attention_heads": 4, "num_hidden_layers": 2,
         "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
         "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "float32",
         "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False, "vocab_size": V}
    c.update(kw)
    return c


def make(t, name="qwen3", seed=5, **kw):
    vocab, merges = q2.train_bpe(q2.CORPUS, 120)
    tok, tcfg = q2.qwen2_tokenizer(vocab, merges)
    V = len(vocab) + len(q2.ADDED)
    cfg = config(V, **kw)
    w = archlib.make_weights(FAM, cfg, seed)
    d = os.path.join(t.tmp, name)
    archlib.write_model(d, w, cfg, tok, tcfg)
    return d, w, cfg


def test_qwen3_end_to_end(t):
    # untied (as Qwen3-8B): a tied random model mostly repeats its last token
    d, w, cfg = make(t, tie_word_embeddings=False)
    keys = {"qwen3.block_count": 2, "qwen3.embedding_length": 64, "qwen3.attention.head_count": 4,
            "qwen3.attention.head_count_kv": 2, "qwen3.attention.key_length": 32,
            "qwen3.attention.value_length": 32, "qwen3.rope.freq_base": 1e6, "qwen3.context_length": 40960,
            "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2"}
    tensors = ["blk.1.attn_q_norm.weight", "blk.1.attn_k_norm.weight", "blk.0.attn_q.weight", "token_embd.weight",
               "output.weight"]
    archlib.check_family(t, FAM, d, w, cfg, [5, 17, 33, 2, 64, 7, 90, 11], n_gen=6, keys=keys, tensors=tensors)
    # the q/k norms matter: without them the logits move
    w0 = {k: (np.ones_like(v) if "_norm." in k else v) for k, v in w.items()}
    a, b = archlib.forward(FAM, w, cfg, [5, 17, 33]), archlib.forward({"gguf": "qwen3"}, w0, cfg, [5, 17, 33])
    check(np.max(np.abs(a - b)) > 100 * archlib.TOL * np.max(np.abs(a)), "q/k norms too weak to test")


def test_qwen3_refuses(t):
    d, w, cfg = make(t)
    st = os.path.join(d, "model.safetensors")
    held = {k: ("F32", list(v.shape), v.tobytes()) for k, v in w.items() if "k_norm" not in k}
    archlib.tc.write_st(st, held)
    t.fails("smoke", d, words=("self_attn.k_norm.weight",))
    t.fails("convert", d, "-o", os.path.join(t.tmp, "x.gguf"), words=("k_norm",))
    archlib.check_unsupported(t, d, cfg, "Qwen3NextForCausalLM")
    t.fails("convert", d, "-o", os.path.join(t.tmp, "x.gguf"),
            words=("unsupported architecture Qwen3NextForCausalLM (supported: ",))


def test_qwen3_tokenizer_matches_huggingface(t):
    """Llama 3's vocabulary under Qwen2/Qwen3's tokenizer layout (NFC, the
    single-digit regex, <|endoftext|>, <|im_start|>, <|im_end|>) in a Qwen3
    checkpoint: the engine on tokenizer.json and on the converted GGUF
    against @huggingface/tokenizers."""
    src = json.load(open(ttok.export(t, "llama3"), encoding="utf-8"))
    vocab = src["model"]["vocab"]
    merges = [m.split(" ", 1) if isinstance(m, str) else m for m in src["model"]["merges"]]
    tok, tcfg = q2.qwen2_tokenizer(vocab, merges)
    for a in tok["added_tokens"]:
        a["id"] = max(vocab.values()) + 1 + q2.ADDED.index(a["content"])
    V = max(a["id"] for a in tok["added_tokens"]) + 1
    cfg = config(V, hidden_size=32, intermediate_size=32, num_hidden_layers=1, head_dim=16, num_attention_heads=2,
                 num_key_value_heads=1)
    w = archlib.make_weights(FAM, cfg, 3)
    d = os.path.join(t.tmp, "qtok")
    archlib.write_model(d, w, cfg, tok, tcfg)
    g = os.path.join(t.tmp, "qtok.gguf")
    j = t.ok("convert", d, "--type", "f16", "-o", g, "--json").json()
    check(j["pre"] == "qwen2" and j["vocab"] == V, "%r" % j)
    strings = [s for s in ttok.STRINGS if unicodedata.normalize("NFC", s) == s]
    strings += ["<|im_start|>user\nWhat is 12345 + 678?<|im_end|>\n<|im_start|>assistant\n",
                "text <|endoftext|> more", "digits 0123456789 split one by one"]
    check(len(strings) >= 50, "too few strings")
    tj = os.path.join(d, "tokenizer.json")
    want = [x["ids"] for x in ttok.references(t, strings, [tj])["json"][tj]]
    for path in (tj, g):
        got = [x["ids"] for x in ttok.ours(t, path, strings, add_bos=-1)["results"]]
        ttok.compare("%s vs @huggingface/tokenizers" % os.path.basename(path), strings, got, want)


test_qwen3_end_to_end.timeout = 400
test_qwen3_tokenizer_matches_huggingface.timeout = 400
