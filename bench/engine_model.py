#!/usr/bin/env python3
"""engine_model.py [--weights-only] CACHE - makes CACHE/tinyllama-shape-engine: a TinyLlama-1.1B
shaped Llama checkpoint (dim 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632,
vocab 32000, BF16 random weights) with a synthetic 32000-token tokenizer, for
bench/engine.sh.

The weights are CACHE/tinyllama-shape-bf16, made once (this script is their
only generator; bench/convert.sh runs it with --weights-only, which makes
just them and prints their directory): the engine directory links to its
model.safetensors and config.json.

The tokenizer is SentencePiece-style BPE in HF tokenizers format, laid out as
Llama 2's (and tests/sample/make_sample.py's): <unk> <s> </s>, 256 byte
fallback tokens <0x00>..<0xFF>, the printable ASCII characters and U+2581,
then 31,644 merges picked at random (seeded) from pairs of existing tokens,
each merge adding one token, to 32,000 in all. Prints the directory.
"""
import json
import os
import random
import struct
import sys

# the sample model's tokenizer.json writer (same layout, Llama 2's)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "sample"))
from make_sample import tokenizer_json  # noqa: E402

D, L, H, KV, FF, V = 2048, 22, 32, 4, 5632, 32000
SP = "\u2581"


def make_weights(out):
    """The BF16 checkpoint: little-endian BF16 whose high byte is sign +
    exponent 0x78..0x7B, so +-[2^-7, 2^-3): finite and F16-representable;
    norms 1.0; seeded, so every machine makes the same bytes."""
    hd = D // H
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D,
           "intermediate_size": FF, "num_hidden_layers": L, "num_attention_heads": H,
           "num_key_value_heads": KV, "vocab_size": V, "max_position_embeddings": 2048,
           "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": False,
           "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    shapes = {"model.embed_tokens.weight": [V, D], "model.norm.weight": [D], "lm_head.weight": [V, D]}
    for i in range(L):
        p = "model.layers.%d." % i
        shapes[p + "input_layernorm.weight"] = [D]
        shapes[p + "post_attention_layernorm.weight"] = [D]
        shapes[p + "self_attn.q_proj.weight"] = [D, D]
        shapes[p + "self_attn.k_proj.weight"] = [KV * hd, D]
        shapes[p + "self_attn.v_proj.weight"] = [KV * hd, D]
        shapes[p + "self_attn.o_proj.weight"] = [D, D]
        shapes[p + "mlp.gate_proj.weight"] = [FF, D]
        shapes[p + "mlp.up_proj.weight"] = [FF, D]
        shapes[p + "mlp.down_proj.weight"] = [D, FF]
    header, off = {"__metadata__": {"format": "pt"}}, 0
    names = sorted(shapes)
    count = {n: 1 for n in names}
    for n in names:
        for d in shapes[n]:
            count[n] *= d
        header[n] = {"dtype": "BF16", "shape": shapes[n], "data_offsets": [off, off + 2 * count[n]]}
        off += 2 * count[n]
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    high = bytes((b & 0x81) | 0x3C for b in range(256))
    rng = random.Random(7)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for n in names:
            left = count[n]
            while left:
                k = min(left, 1 << 24)
                if n.endswith("norm.weight"):
                    f.write(b"\x80\x3f" * k)  # 1.0
                else:
                    buf = bytearray(rng.randbytes(2 * k))
                    buf[1::2] = buf[1::2].translate(high)
                    f.write(buf)
                left -= k
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def make_vocab():
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = ["<0x%02X>" % b for b in range(256)]
    chars = [SP] + [chr(c) for c in range(33, 127)]
    vocab = specials + byte_tokens + chars
    seen = set(vocab)
    pieces = list(chars)  # tokens that merges may combine
    short = list(chars)   # tokens of at most 3 characters, the usual right side
    rng = random.Random(11)
    lower = [c for c in chars if c.islower()]
    merges = []
    while len(vocab) < V:
        # mostly lower-case letters and words that start with U+2581, as in
        # natural text; the left side is any piece made so far
        a = rng.choice(pieces) if rng.random() < 0.7 else rng.choice(lower + [SP])
        b = rng.choice(lower) if rng.random() < 0.8 else rng.choice(short)
        if b.startswith(SP) or len(a) + len(b) > 12:
            continue
        m = a + b
        if m in seen:
            continue
        seen.add(m)
        vocab.append(m)
        pieces.append(m)
        if len(m) <= 3:
            short.append(m)
        merges.append("%s %s" % (a, b))
    return vocab, merges


def main():
    weights_only = sys.argv[1:2] == ["--weights-only"]
    cache = sys.argv[2 if weights_only else 1]
    wdir = os.path.join(cache, "tinyllama-shape-bf16")
    if not os.path.exists(os.path.join(wdir, ".done")):
        print("bench: generating %s (about 2.2 GB, once)" % wdir, file=sys.stderr)
        os.makedirs(wdir, exist_ok=True)
        make_weights(wdir)
        open(os.path.join(wdir, ".done"), "w").close()
    if weights_only:
        print(wdir)
        return
    out = os.path.join(cache, "tinyllama-shape-engine")
    if os.path.exists(os.path.join(out, ".done")):
        print(out)
        return
    os.makedirs(out, exist_ok=True)
    for f in ("model.safetensors", "config.json"):
        dst = os.path.join(out, f)
        if os.path.lexists(dst):
            os.unlink(dst)
        os.symlink(os.path.join("..", "tinyllama-shape-bf16", f), dst)
    vocab, merges = make_vocab()
    assert len(vocab) == V
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(vocab, merges), f, ensure_ascii=False)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False,
                   "legacy": False, "model_max_length": 2048, "tokenizer_class": "LlamaTokenizerFast"}, f, indent=2)
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, f, indent=2)
    open(os.path.join(out, ".done"), "w").close()
    print(out)


if __name__ == "__main__":
    main()
