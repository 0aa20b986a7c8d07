"""test_arch_gemma.py - Gemma2ForCausalLM and Gemma3ForCausalLM (text) end to
end (archlib's checks): RMSNorm with (1 + w) (stored as 1 + w in the GGUF,
as llama.cpp's converter does), embeddings scaled by sqrt(hidden_size),
norms after attention and around the FFN, GeGLU with tanh GELU,
query_pre_attn_scalar; Gemma 2: attention and final logit soft-capping,
every other layer a sliding-window one; Gemma 3: q/k norms, five sliding
layers to one global, the local rope base (rope_local_base_freq) and linear
rope scaling on the global layers only. The tokenizer: SentencePiece-style
BPE with byte fallback and no dummy prefix, Gemma's special tokens, against
@huggingface/tokenizers."""

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

SP = "\u2581"
GEMMA2 = {"gguf": "gemma2", "gemma": 2, "norm_plus_one": True, "sandwich": True}
GEMMA3 = {"gguf": "gemma3", "gemma": 3, "norm_plus_one": True, "sandwich": True, "qk_norm": True}
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def gemma_tokenizer(vocab, merges):
    """tokenizer.json / tokenizer_config.json laid out as Gemma's: <pad> <eos>
    <bos> <unk> first, chat turn markers, byte tokens, no dummy prefix."""
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, t in enumerate(SPECIALS)]
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
           "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": SP},
           "pre_tokenizer": None,
           "post_processor": {"type": "TemplateProcessing",
                              "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                                         {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                                       {"Sequence": {"id": "A", "type_id": 0}},
                                       {"SpecialToken": {"id": "<bos>", "type_id": 1}},
                                       {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}},
           "decoder": {"type": "Sequence", "decoders": [
               {"type": "Replace", "pattern": {"String": SP}, "content": " "},
               {"type": "ByteFallback"}, {"type": "Fuse"}]},
           "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                     "vocab": {t: i for i, t in enumerate(vocab)}, "merges": merges}}
    tcfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>", "eos_token": "<eos>",
            "pad_token": "<pad>", "unk_token": "<unk>", "tokenizer_class": "GemmaTokenizer",
            "chat_template": "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
                             "{{ m['content'] }}<end_of_turn>\n{% endfor %}"}
    return tok, tcfg


def small_vocab():
    vocab, merges = make_sample.train_bpe(make_sample.CORPUS, 400)
    return SPECIALS + vocab[3:], merges


def config2(V, **kw):
    """The fields of gemma-2-2b's config.json, shrunk."""
    c = {"architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
         "attn_logit_softcapping": 5.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
         "final_logit_softcapping": 8.0, "head_dim": 32, "hidden_act": "gelu_pytorch_tanh",
         "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 64, "initializer_range": 0.02,
         "intermediate_size": 128, "max_position_embeddings": 8192, "model_type": "gemma2",
         "num_attention_heads": 4, "num_hidden_layers": 4, "num_key_value_heads": 2, "pad_token_id": 0,
         "query_pre_attn_scalar": 32, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4,
         "torch_dtype": "float32", "transformers_version": "4.42.4", "use_cache": True, "vocab_size": V}
    c.update(kw)
    return c


def config3(V, **kw):
    """The fields of gemma-3-4b's text config, shrunk (linear rope scaling on global layers)."""
    c = {"architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
         "attn_logit_softcapping": None, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
         "final_logit_softcapping": None, "head_dim": 32, "hidden_activation": "gelu_pytorch_tanh",
         "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128, "max_position_embeddings": 32768,
         "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 6, "num_key_value_heads": 2,
         "pad_token_id": 0, "query_pre_attn_scalar": 32, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0,
         "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "rope_theta": 1000000.0, "sliding_window": 4,
         "sliding_window_pattern": 6, "torch_dtype": "float32", "transformers_version": "4.50.0",
         "use_cache": True, "vocab_size": V}
    c.update(kw)
    return c


def make(t, fam, name, seed=13, **kw):
    vocab, merges = small_vocab()
    tok, tcfg = gemma_tokenizer(vocab, merges)
    cfg = (config2 if fam["gemma"] == 2 else config3)(len(vocab), **kw)
    w = archlib.make_weights(fam, cfg, seed)
    d = os.path.join(t.tmp, name)
    archlib.write_model(d, w, cfg, tok, tcfg)
    return d, w, cfg


PROMPT = [2, 40, 77, 123, 9, 300, 51, 260, 18, 99, 7, 140]


def test_gemma2_end_to_end(t):
    d, w, cfg = make(t, GEMMA2, "gemma2")
    keys = {"gemma2.block_count": 4, "gemma2.attention.key_length": 32, "gemma2.attn_logit_softcapping": 5.0,
            "gemma2.final_logit_softcapping": 8.0, "gemma2.attention.sliding_window": 4,
            "tokenizer.ggml.model": "llama", "tokenizer.ggml.add_space_prefix": False}
    tensors = ["blk.0.post_attention_norm.weight", "blk.0.ffn_norm.weight", "blk.3.post_ffw_norm.weight"]
    js = archlib.check_family(t, GEMMA2, d, w, cfg, PROMPT, n_gen=6, keys=keys, tensors=tensors)
    # soft-capping and the window matter
    a = archlib.forward(GEMMA2, w, cfg, PROMPT)
    for over in ({"attn_logit_softcapping": None}, {"final_logit_softcapping": None}, {"sliding_window": None}):
        b = archlib.forward(GEMMA2, w, dict(cfg, **over), PROMPT)
        check(np.max(np.abs(a - b)) > 100 * archlib.TOL * np.max(np.abs(a)), "%r has no effect" % over)
    return js


def test_gemma3_end_to_end(t):
    d, w, cfg = make(t, GEMMA3, "gemma3")
    keys = {"gemma3.block_count": 6, "gemma3.rope.freq_base": 1e6, "gemma3.rope.freq_base_swa": 1e4,
            "gemma3.attention.sliding_window": 4, "gemma3.rope.scaling.type": "linear",
            "gemma3.rope.scaling.factor": 8.0, "tokenizer.ggml.add_space_prefix": False}
    tensors = ["blk.5.attn_q_norm.weight", "blk.5.attn_k_norm.weight", "blk.5.post_ffw_norm.weight"]
    archlib.check_family(t, GEMMA3, d, w, cfg, PROMPT, n_gen=6, keys=keys, tensors=tensors)
    a = archlib.forward(GEMMA3, w, cfg, PROMPT)
    for over in ({"rope_scaling": None}, {"rope_local_base_freq": 1e6}, {"sliding_window": None}):
        b = archlib.forward(GEMMA3, w, dict(cfg, **over), PROMPT)
        check(np.max(np.abs(a - b)) > 100 * archlib.TOL * np.max(np.abs(a)), "%r has no effect" % over)


def test_gemma_refuses(t):
    d, w, cfg = make(t, GEMMA2, "g2")
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump({k: v for k, v in cfg.items() if k != "attn_logit_softcapping"}, fh)
    t.fails("convert", d, "-o", os.path.join(t.tmp, "x.gguf"), words=("attn_logit_softcapping",))
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(dict(cfg, hidden_activation="relu"), fh)
    t.fails("smoke", d, words=("hidden activation 'relu'",))
    archlib.check_unsupported(t, d, cfg, "Gemma3nForCausalLM")


def test_gemma_tokenizer_matches_huggingface(t):
    """Llama 2's 32000-piece SentencePiece vocabulary and merges laid out as
    Gemma's tokenizer.json (no dummy prefix, byte fallback, <start_of_turn>/
    <end_of_turn> added): the engine on tokenizer.json and on the GGUF of a
    Gemma 2 checkpoint against @huggingface/tokenizers."""
    src = json.load(open(ttok.export(t, "llama2"), encoding="utf-8"))
    vocab = sorted(src["model"]["vocab"], key=lambda s: src["model"]["vocab"][s])
    vocab = SPECIALS[:4] + vocab[3:] + SPECIALS[4:]
    tok, tcfg = gemma_tokenizer(vocab, src["model"]["merges"])
    ids = {s: i for i, s in enumerate(vocab)}
    tok["model"]["vocab"] = ids
    for a in tok["added_tokens"]:
        a["id"] = ids[a["content"]]
    tok["post_processor"]["special_tokens"]["<bos>"]["ids"] = [ids["<bos>"]]
    cfg = config2(len(vocab), hidden_size=32, intermediate_size=32, num_hidden_layers=2, head_dim=16,
                  num_attention_heads=2, num_key_value_heads=1, bos_token_id=2, eos_token_id=1)
    w = archlib.make_weights(GEMMA2, cfg, 3)
    d = os.path.join(t.tmp, "gtok")
    archlib.write_model(d, w, cfg, tok, tcfg)
    g = os.path.join(t.tmp, "gtok.gguf")
    t.ok("convert", d, "--type", "f16", "-o", g)
    strings = ttok.STRINGS + ["<start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n",
                              "  leading spaces", "trailing  "]
    check(len(strings) >= 50, "too few strings")
    tj = os.path.join(d, "tokenizer.json")
    want = [x["ids"] for x in ttok.references(t, strings, [tj])["json"][tj]]
    check(all(x[0] == 2 for x in want), "the reference adds no <bos>")
    for path in (tj, g):
        got = [x["ids"] for x in ttok.ours(t, path, strings, add_bos=1)["results"]]
        ttok.compare("%s vs @huggingface/tokenizers" % os.path.basename(path), strings, got, want)


test_gemma2_end_to_end.timeout = 400
test_gemma3_end_to_end.timeout = 400
test_gemma_tokenizer_matches_huggingface.timeout = 300
