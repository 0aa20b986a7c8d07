#!/usr/bin/python3
"""make_sample.py OUTDIR - writes a small, valid, deterministic Llama checkpoint repo.

Files: config.json, generation_config.json, tokenizer.json (a real byte-fallback
BPE tokenizer in HF tokenizers format, sentencepiece style as in Llama 2),
tokenizer_config.json, special_tokens_map.json, model.safetensors (F32, ~4 MB,
llama tensor names), README.md, .gitattributes and original/params.json.
Standard library only; the same bytes on every run.
"""

import array
import json
import os
import random
import sys

HIDDEN = 192
INTERMEDIATE = 512
LAYERS = 2
HEADS = 4
KV_HEADS = 2
VOCAB_TARGET = 420
SEED = 1234
SP = "\u2581"  # sentencepiece's word-boundary marker

CORPUS = """
The quick brown fox jumps over the lazy dog. A mirror keeps a copy of the hub
close to the machines that need it, so that a model can be loaded again and
again without asking the network. The store names every file by the hash of
its content, and the index remembers which revision of which repository holds
which file. When a download is cut short, the mirror picks it up where it
stopped; when a byte is wrong, the hash tells, and the file is fetched again.
Tokens are small pieces of text: the model reads them one at a time and guesses
the next one. This tiny model knows nothing at all, but its shapes are right,
its tensors are named the way the loaders expect, and its tokenizer can turn
any string into ids and back. Hello world! Once upon a time there was a little
llama that lived in a house on a hill, and every morning it went down to the
river to drink the cold clear water and to look at the clouds.
"""


def train_bpe(text, target):
    """Learns merges on text split into sentencepiece words; returns
    (vocab list in id order, merges)."""
    norm = SP + text.replace("\n", " ").replace(" ", SP)
    words = {}
    for w in norm.split(SP):
        if w:
            key = tuple(SP + w)
            words[key] = words.get(key, 0) + 1
    chars = sorted({ch for w in words for ch in w})
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = ["<0x%02X>" % b for b in range(256)]
    vocab = specials + byte_tokens + chars
    seen = set(vocab)
    merges = []
    words = {k: v for k, v in words.items()}
    while len(vocab) < target:
        pairs = {}
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + n
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        if pairs[best] < 2 and len(vocab) >= 300:
            break
        merged = best[0] + best[1]
        merges.append("%s %s" % best)
        if merged not in seen:
            vocab.append(merged)
            seen.add(merged)
        nw = {}
        for w, n in words.items():
            out = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            nw[tuple(out)] = nw.get(tuple(out), 0) + n
        words = nw
    return vocab, merges


def tokenizer_json(vocab, merges):
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i, t in enumerate(vocab[:3])]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SP},
            {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SP}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": "<unk>",
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(vocab)},
            "merges": merges},
    }


def tensor_shapes(vocab_size):
    head_dim = HIDDEN // HEADS
    kv = KV_HEADS * head_dim
    shapes = {"model.embed_tokens.weight": [vocab_size, HIDDEN],
              "model.norm.weight": [HIDDEN],
              "lm_head.weight": [vocab_size, HIDDEN]}
    for i in range(LAYERS):
        p = "model.layers.%d." % i
        shapes[p + "input_layernorm.weight"] = [HIDDEN]
        shapes[p + "post_attention_layernorm.weight"] = [HIDDEN]
        shapes[p + "self_attn.q_proj.weight"] = [HIDDEN, HIDDEN]
        shapes[p + "self_attn.k_proj.weight"] = [kv, HIDDEN]
        shapes[p + "self_attn.v_proj.weight"] = [kv, HIDDEN]
        shapes[p + "self_attn.o_proj.weight"] = [HIDDEN, HIDDEN]
        shapes[p + "mlp.gate_proj.weight"] = [INTERMEDIATE, HIDDEN]
        shapes[p + "mlp.up_proj.weight"] = [INTERMEDIATE, HIDDEN]
        shapes[p + "mlp.down_proj.weight"] = [HIDDEN, INTERMEDIATE]
    return shapes


def safetensors_bytes(shapes, seed):
    rng = random.Random(seed)
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for name in sorted(shapes):
        shape = shapes[name]
        n = 1
        for d in shape:
            n *= d
        if name.endswith("norm.weight"):
            vals = array.array("f", [1.0]) * n
        else:
            scale = 0.02
            vals = array.array("f", [(rng.random() * 2 - 1) * scale for _ in range(n)])
        if sys.byteorder != "little":
            vals.byteswap()
        data = vals.tobytes()
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return len(h).to_bytes(8, "little") + h + b"".join(blobs)


def write(out, rel, data):
    path = os.path.join(out, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(path, "wb") as fh:
        fh.write(data)


def dump(obj):
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def make(out):
    vocab, merges = train_bpe(CORPUS, VOCAB_TARGET)
    V = len(vocab)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HIDDEN // HEADS,
        "vocab_size": V, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": None,
        "hidden_act": "silu", "initializer_range": 0.02,
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
        "tie_word_embeddings": False, "torch_dtype": "float32",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None,
        "use_cache": True, "pretraining_tp": 1, "transformers_version": "4.44.0",
    }
    write(out, "config.json", dump(config))
    write(out, "generation_config.json", dump({
        "_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2,
        "transformers_version": "4.44.0"}))
    write(out, "tokenizer.json", dump(tokenizer_json(vocab, merges)))
    write(out, "tokenizer_config.json", dump({
        "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "clean_up_tokenization_spaces": False, "legacy": False,
        "model_max_length": 256, "tokenizer_class": "LlamaTokenizerFast",
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
                                 for i, t in enumerate(vocab[:3])}}))
    write(out, "special_tokens_map.json", dump({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    write(out, "model.safetensors", safetensors_bytes(tensor_shapes(V), SEED))
    write(out, "original/params.json", dump({
        "dim": HIDDEN, "n_layers": LAYERS, "n_heads": HEADS, "n_kv_heads": KV_HEADS,
        "vocab_size": V, "norm_eps": 1e-05, "rope_theta": 10000.0}))
    write(out, "README.md", "---\nlicense: mit\nlibrary_name: transformers\n---\n\n"
          "# tiny-llama\n\nA %d-layer Llama with hidden size %d and a %d-token BPE "
          "tokenizer, generated for hubmirror's tests. Random weights.\n" % (LAYERS, HIDDEN, V))
    write(out, ".gitattributes", "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
          "*.bin filter=lfs diff=lfs merge=lfs -text\n"
          "tokenizer.json filter=lfs diff=lfs merge=lfs -text\n")


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: make_sample.py OUTDIR\n")
        return 2
    make(sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
