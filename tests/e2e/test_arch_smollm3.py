"""test_arch_smollm3.py - SmolLM3ForCausalLM end to end (archlib's checks):
the Llama layout (Q/K permuted for llama.cpp's rope in the GGUF) with NoPE
layers: no_rope_layers marks every 4th layer as having no rotary embedding,
which llama.cpp's smollm3 computes from the layer number; Llama 3's
byte-level BPE tokenizer layout against @huggingface/tokenizers."""

import json
import os

import numpy as np

import archlib
from lib import check
import test_convert as tc
import test_tokenizer as ttok

FAM = {"gguf": "smollm3"}


def config(V, L=4, **kw):
    """The fields of SmolLM3-3B's config.json, shrunk."""
    c = {"architectures": ["SmolLM3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
         "bos_token_id": None, "eos_token_id": V - 2, "hidden_act": "silu", "hidden_size": 64,
         "initializer_range": 0.02, "intermediate_size": 128, "max_position_embeddings": 65536,
         "max_window_layers": L, "mlp_bias": False, "model_type": "smollm3", "no_rope_layer_interval": 4,
         "no_rope_layers": [int((i + 1) % 4 != 0) for i in range(L)], "num_attention_heads": 4,
         "num_hidden_layers": L, "num_key_value_heads": 2, "pad_token_id": None, "pretraining_tp": 2,
         "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 5000000.0, "sliding_window": None,
         "torch_dtype": "float32", "transformers_version": "4.53.0", "use_cache": False,
         "use_sliding_window": False, "vocab_size": V, "tie_word_embeddings": False}
    c.update(kw)
    return c


def make(t, name="smollm3", seed=9, **kw):
    tok, tcfg = tc.bytelevel_tokenizer()
    V = len(tok["model"]["vocab"]) + len(tok["added_tokens"])
    cfg = config(V, **kw)
    w = archlib.make_weights(FAM, cfg, seed)
    d = os.path.join(t.tmp, name)
    archlib.write_model(d, w, cfg, tok, tcfg)
    return d, w, cfg


def test_smollm3_end_to_end(t):
    d, w, cfg = make(t)
    keys = {"smollm3.block_count": 4, "smollm3.embedding_length": 64, "smollm3.attention.head_count": 4,
            "smollm3.attention.head_count_kv": 2, "smollm3.rope.freq_base": 5e6, "smollm3.vocab_size": cfg["vocab_size"],
            "smollm3.rope.dimension_count": 16, "tokenizer.ggml.model": "gpt2"}
    archlib.check_family(t, FAM, d, w, cfg, [5, 17, 33, 2, 64, 7, 90, 11, 200, 150], n_gen=6, keys=keys,
                         tensors=["blk.3.attn_q.weight", "output.weight"])
    # the NoPE layer matters: roping it moves the logits
    a = archlib.forward(FAM, w, cfg, [5, 17, 33, 2])
    b = archlib.forward(FAM, w, dict(cfg, no_rope_layers=[1] * 4), [5, 17, 33, 2])
    check(np.max(np.abs(a - b)) > 100 * archlib.TOL * np.max(np.abs(a)), "the NoPE layer has no effect")


def test_smollm3_refuses(t):
    d, w, cfg = make(t)
    bad = dict(cfg, no_rope_layers=[1, 0, 1, 1])
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(bad, fh)
    t.fails("convert", d, "-o", os.path.join(t.tmp, "x.gguf"), words=("no_rope_layers[1]",))
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(dict(cfg, no_rope_layers=[1, 1]), fh)
    t.fails("smoke", d, words=("no_rope_layers",))


def test_smollm3_tokenizer_matches_huggingface(t):
    """Llama 3's vocabulary and layout (SmolLM3 uses it, without a BOS):
    the engine on tokenizer.json against @huggingface/tokenizers."""
    tj = ttok.export(t, "llama3")
    tok = json.load(open(tj, encoding="utf-8"))
    tok["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                             "use_regex": True}
    d = os.path.join(t.tmp, "stok")
    os.makedirs(d)
    path = os.path.join(d, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(tok, fh, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as fh:
        json.dump({"bos_token": None, "eos_token": "<|end_of_text|>", "tokenizer_class": "PreTrainedTokenizerFast"},
                  fh)
    strings = ttok.STRINGS + ["<|im_start|>user\nHi<|im_end|>", "x = [1, 22, 333, 4444]"]
    check(len(strings) >= 50, "too few strings")
    want = [x["ids"] for x in ttok.references(t, strings, [path])["json"][path]]
    got = [x["ids"] for x in ttok.ours(t, path, strings, add_bos=-1)["results"]]
    ttok.compare("SmolLM3 layout vs @huggingface/tokenizers", strings, got, want)


test_smollm3_end_to_end.timeout = 400
test_smollm3_tokenizer_matches_huggingface.timeout = 300
