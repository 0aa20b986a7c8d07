"""test_arch_moe.py - mixtures of experts end to end (archlib's checks):
Qwen3MoeForCausalLM (GGUF "qwen3moe": Qwen3's attention, experts under
mlp.experts.E.{gate,up,down}_proj) and MixtralForCausalLM (GGUF "llama"
with experts: block_sparse_moe.experts.E.w1/w3/w2): router softmax, top-k,
weights renormalized over the k, expert matrices stacked as llama.cpp
stacks them (ffn_gate_exps, ffn_up_exps, ffn_down_exps {.., .., n_expert}).
An expert no token is routed to is never read: one filled with NaN, behind
a router row that never wins, leaves the logits finite and unchanged."""

import json
import os

import numpy as np

import archlib
from lib import check
import test_convert as tc
import test_qwen2 as q2

QWEN3MOE = {"gguf": "qwen3moe", "qk_norm": True, "moe": "mlp", "names": ("gate_proj", "up_proj", "down_proj")}
MIXTRAL = {"gguf": "llama", "moe": "block_sparse_moe", "names": ("w1", "w3", "w2")}
PROMPT = [5, 17, 33, 2, 64, 7, 90, 11, 42, 3]


def qwen3moe_config(V, **kw):
    """The fields of Qwen3-30B-A3B's config.json, shrunk."""
    c = {"architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
         "bos_token_id": V - 3, "decoder_sparse_step": 1, "eos_token_id": V - 1, "head_dim": 16,
         "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 96,
         "max_position_embeddings": 40960, "max_window_layers": 2, "mlp_only_layers": [],
         "model_type": "qwen3_moe", "moe_intermediate_size": 32, "norm_topk_prob": True,
         "num_attention_heads": 4, "num_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 2,
         "num_key_value_heads": 2, "output_router_logits": False, "rms_norm_eps": 1e-06, "rope_scaling": None,
         "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "sliding_window": None,
         "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": "4.51.0",
         "use_cache": True, "use_sliding_window": False, "vocab_size": V}
    c.update(kw)
    return c


def mixtral_config(V, **kw):
    """The fields of Mixtral-8x7B's config.json, shrunk."""
    c = {"architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": V - 3,
         "eos_token_id": V - 2, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
         "intermediate_size": 32, "max_position_embeddings": 32768, "model_type": "mixtral",
         "num_attention_heads": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_key_value_heads": 2,
         "num_local_experts": 8, "output_router_logits": False, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
         "router_aux_loss_coef": 0.02, "sliding_window": None, "tie_word_embeddings": False,
         "torch_dtype": "float32", "transformers_version": "4.36.0", "use_cache": True, "vocab_size": V}
    c.update(kw)
    return c


def make(t, fam, name, seed=31, **kw):
    if fam is QWEN3MOE:
        vocab, merges = q2.train_bpe(q2.CORPUS, 120)
        tok, tcfg = q2.qwen2_tokenizer(vocab, merges)
        cfg = qwen3moe_config(len(vocab) + len(q2.ADDED), **kw)
    else:
        tok, tcfg = tc.bytelevel_tokenizer()
        cfg = mixtral_config(len(tok["model"]["vocab"]) + len(tok["added_tokens"]), **kw)
    w = archlib.make_weights(fam, cfg, seed)
    d = os.path.join(t.tmp, name)
    archlib.write_model(d, w, cfg, tok, tcfg)
    return d, w, cfg


def check_unused_expert_untouched(t, fam, d, w, cfg):
    """Expert 7 of every layer: never picked, its matrices NaN. Router rows
    1 and 3 are rows 0 and 2 negated, so two logits are always above 0, and
    row 7 is 0: with two experts per token 7 never wins. The engine's
    logits stay finite and equal numpy's."""
    mp = "model.layers.%d." + fam["moe"] + "."
    w2 = dict(w)
    for l in range(cfg["num_hidden_layers"]):
        g = w2[mp % l + "gate.weight"].copy()
        g[1], g[3], g[7] = -g[0], -g[2], 0
        w2[mp % l + "gate.weight"] = g
        for nm in fam["names"]:
            k = mp % l + "experts.7.%s.weight" % nm
            w2[k] = np.full_like(w[k], np.nan)
    d2 = d + "-nan"
    os.makedirs(d2)
    for f in os.listdir(d):
        if f != "model.safetensors":
            with open(os.path.join(d, f), "rb") as a, open(os.path.join(d2, f), "wb") as b:
                b.write(a.read())
    tc.write_st(os.path.join(d2, "model.safetensors"), {k: ("F32", list(v.shape), v.tobytes()) for k, v in w2.items()})
    w_ref = {k: (np.zeros_like(v) if np.isnan(v).any() else v) for k, v in w2.items()}
    ref = archlib.forward(fam, w_ref, cfg, PROMPT)
    got = archlib.te.logits(t, d2, PROMPT)
    check(np.all(np.isfinite(got)), "an unused (NaN) expert was read: non-finite logits")
    err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    check(err < archlib.TOL, "with expert 7 never picked: engine vs numpy %.3g" % err)


def test_qwen3moe_end_to_end(t):
    d, w, cfg = make(t, QWEN3MOE, "q3moe")
    keys = {"qwen3moe.expert_count": 8, "qwen3moe.expert_used_count": 2,
            "qwen3moe.expert_feed_forward_length": 32, "qwen3moe.attention.key_length": 16}
    tensors = ["blk.0.ffn_gate_inp.weight", "blk.0.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight",
               "blk.1.ffn_down_exps.weight", "blk.1.attn_q_norm.weight"]
    js = archlib.check_family(t, QWEN3MOE, d, w, cfg, PROMPT, n_gen=6, keys=keys, tensors=tensors)
    shapes = {x["name"]: x["shape"] for x in js["parse"][os.path.join(t.tmp, "qwen3moe-f16.gguf")]["tensors"]}
    check(shapes["blk.0.ffn_gate_exps.weight"] == [64, 32, 8] and shapes["blk.0.ffn_down_exps.weight"] == [32, 64, 8]
          and shapes["blk.0.ffn_gate_inp.weight"] == [64, 8], "stacked shapes %r" % shapes)
    check_unused_expert_untouched(t, QWEN3MOE, d, w, cfg)


def test_mixtral_end_to_end(t):
    d, w, cfg = make(t, MIXTRAL, "mixtral")
    keys = {"llama.expert_count": 8, "llama.expert_used_count": 2, "llama.feed_forward_length": 32}
    tensors = ["blk.0.ffn_gate_inp.weight", "blk.0.ffn_gate_exps.weight", "blk.1.ffn_down_exps.weight"]
    archlib.check_family(t, MIXTRAL, d, w, cfg, PROMPT, n_gen=6, keys=keys, tensors=tensors)
    check_unused_expert_untouched(t, MIXTRAL, d, w, cfg)


def test_moe_refuses(t):
    d, w, cfg = make(t, QWEN3MOE, "q3moe")
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(dict(cfg, num_experts_per_tok=9), fh)
    t.fails("convert", d, "-o", os.path.join(t.tmp, "x.gguf"), words=("experts",))
    t.fails("smoke", d, words=("experts",))
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(dict(cfg, mlp_only_layers=[1]), fh)
    t.fails("convert", d, "-o", os.path.join(t.tmp, "x.gguf"), words=("mlp_only_layers",))
    st = {k: ("F32", list(v.shape), v.tobytes()) for k, v in w.items() if "experts.3.up_proj" not in k}
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    tc.write_st(os.path.join(d, "model.safetensors"), st)
    t.fails("smoke", d, words=("experts.3.up_proj",))
    t.fails("convert", d, "-o", os.path.join(t.tmp, "x.gguf"), words=("experts.3.up_proj",))


test_qwen3moe_end_to_end.timeout = 400
test_mixtral_end_to_end.timeout = 400
