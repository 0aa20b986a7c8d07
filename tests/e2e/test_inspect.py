"""test_inspect.py - `hubmirror inspect` on the sample checkpoint (pulled, as
a path and as a directory), a sharded repo, a GGUF built here with struct
(independently of the C writer), and hostile files."""

import base64
import json
import os
import struct

import lib
from lib import check, SAMPLE_REPO


def st_header(data):
    """Parses a safetensors header in Python: {name: entry}, metadata."""
    n = struct.unpack("<Q", data[:8])[0]
    h = json.loads(data[8:8 + n])
    meta = h.pop("__metadata__", {})
    return h, meta


def st_bytes(tensors, meta=None, pad=True):
    """tensors: [(name, dtype, shape, bytes)] packed in order."""
    header = {}
    if meta:
        header["__metadata__"] = meta
    off = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def check_against_sample(report, header):
    check(report["format"] == "safetensors", "format: %r" % report["format"])
    check(report["tensor_count"] == len(header), "tensor_count %r vs %d" % (report["tensor_count"], len(header)))
    got = {t["name"]: t for t in report["tensors"]}
    check(set(got) == set(header), "tensor names differ: %r" % (set(got) ^ set(header)))
    params = total = 0
    for name, e in header.items():
        n = 1
        for d in e["shape"]:
            n *= d
        params += n
        total += e["data_offsets"][1] - e["data_offsets"][0]
        check(got[name]["shape"] == e["shape"], "%s shape %r vs %r" % (name, got[name]["shape"], e["shape"]))
        check(got[name]["dtype"] == e["dtype"], "%s dtype %r" % (name, got[name]["dtype"]))
        check(got[name]["bytes"] == e["data_offsets"][1] - e["data_offsets"][0], "%s bytes" % name)
    check(report["parameter_count"] == params, "parameter_count %r vs %d" % (report["parameter_count"], params))
    check(report["total_bytes"] == total, "total_bytes %r vs %d" % (report["total_bytes"], total))
    check(report["metadata"] == {"format": "pt"}, "metadata %r" % report["metadata"])


def test_inspect_sample_repo_and_path(t):
    t.emu()
    t.ok("pull", SAMPLE_REPO)
    sample = os.path.join(lib.sample_dir(), "model.safetensors")
    header, _ = st_header(lib.read(sample))

    j = t.ok("inspect", SAMPLE_REPO, "--json").json()
    check(j["repo"] == SAMPLE_REPO and len(j["revision"]) == 40, "repo json: %r" % {k: j[k] for k in ("repo", "revision")})
    check(len(j["checkpoints"]) == 1, "one checkpoint: %r" % [c["path"] for c in j["checkpoints"]])
    check(j["checkpoints"][0]["path"] == "model.safetensors", "path %r" % j["checkpoints"][0]["path"])
    check_against_sample(j["checkpoints"][0], header)
    check(j["checkpoints"][0]["files"] == ["model.safetensors"], "files: %r" % j["checkpoints"][0]["files"])
    check({x["file"] for x in j["checkpoints"][0]["tensors"]} == {"model.safetensors"}, "tensor files")

    j = t.ok("inspect", sample, "--json").json()
    check_against_sample(j, header)
    j = t.ok("inspect", lib.sample_dir(), "--json").json()
    check_against_sample(j, header)

    r = t.ok("inspect", SAMPLE_REPO)
    check("21 tensors" in r.out and "model.layers.1.mlp.down_proj.weight" in r.out, "text: %r" % r)
    check("[192, 512]" in r.out and "format = pt" in r.out, "text shapes/metadata: %r" % r)
    r = t.ok("inspect", SAMPLE_REPO, "--revision", "main")
    t.fails("inspect", "nobody/nothing", words=("not found",))
    t.fails("inspect", "a", "b", rc=2)


def test_inspect_truncates_text(t):
    tensors = [("t.%03d" % i, "F32", [1], struct.pack("<f", i)) for i in range(60)]
    p = os.path.join(t.tmp, "many.safetensors")
    with open(p, "wb") as fh:
        fh.write(st_bytes(tensors))
    r = t.ok("inspect", p)
    check("t.049" in r.out and "t.050" not in r.out and "10 more tensors" in r.out, "truncated: %r" % r)
    r = t.ok("inspect", p, "--all")
    check("t.059" in r.out and "more tensors" not in r.out, "--all: %r" % r)
    j = t.ok("inspect", p, "--json").json()
    check(len(j["tensors"]) == 60 and j["parameter_count"] == 60, "json: all tensors")


def sharded_files():
    a = [("a.w", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)), ("a.b", "BF16", [2], b"\x80\x3f\x00\x40")]
    b = [("b.w", "I8", [3], b"\x01\x02\x03")]
    index = {"metadata": {"total_size": 23},
             "weight_map": {"a.w": "model-00001-of-00002.safetensors", "a.b": "model-00001-of-00002.safetensors",
                            "b.w": "model-00002-of-00002.safetensors"}}
    return {"model-00001-of-00002.safetensors": st_bytes(a, {"format": "pt"}),
            "model-00002-of-00002.safetensors": st_bytes(b, {"format": "pt"}),
            "model.safetensors.index.json": json.dumps(index).encode(),
            "config.json": b"{}"}


def b64_repo(repo_id, files):
    return {"type": "model", "id": repo_id,
            "commits": [{"files": {p: {"b64": base64.b64encode(d).decode()} for p, d in files.items()},
                         "refs": ["main"]}]}


def test_inspect_sharded(t):
    files = sharded_files()
    t.emu([b64_repo("org/sharded", files)])
    t.ok("pull", "org/sharded")
    j = t.ok("inspect", "org/sharded", "--json").json()
    check(len(j["checkpoints"]) == 1, "shards are one checkpoint: %r" % [c["path"] for c in j["checkpoints"]])
    c = j["checkpoints"][0]
    check(c["path"] == "model.safetensors.index.json" and c["tensor_count"] == 3, "sharded: %r" % c)
    check(c["files"] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], "files %r" % c["files"])
    shard_of = {x["name"]: x["file"] for x in c["tensors"]}
    check(shard_of["b.w"] == "model-00002-of-00002.safetensors", "b.w shard: %r" % shard_of)
    check(c["parameter_count"] == 9 and c["total_bytes"] == 23, "counts: %r" % c)
    # the same as a directory and as an index path
    d = os.path.join(t.tmp, "sharded")
    os.makedirs(d)
    for p, data in files.items():
        with open(os.path.join(d, p), "wb") as fh:
            fh.write(data)
    for arg in (d, os.path.join(d, "model.safetensors.index.json")):
        c2 = t.ok("inspect", arg, "--json").json()
        check(c2["tensor_count"] == 3 and c2["files"] == c["files"], "path form: %r" % c2)
    # a weight_map that lies
    bad = dict(files)
    bad["model.safetensors.index.json"] = json.dumps(
        {"weight_map": {"a.w": "model-00002-of-00002.safetensors", "a.b": "model-00001-of-00002.safetensors",
                        "b.w": "model-00002-of-00002.safetensors"}}).encode()
    with open(os.path.join(d, "model.safetensors.index.json"), "wb") as fh:
        fh.write(bad["model.safetensors.index.json"])
    t.fails("inspect", d, words=("tensor 'a.w' is listed in",))
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as fh:
        json.dump({"weight_map": {"a.w": "../../etc/passwd"}}, fh)
    t.fails("inspect", d, words=("not a file name",))


# ---- GGUF, written here from the spec ----

def gstr(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gval(vtype, v):
    if vtype == 8:
        return gstr(v)
    if vtype == 9:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gval(et, x) for x in items)
    return struct.pack(SCALAR[vtype], v)


def gguf_bytes(kvs, tensors, alignment=32, version=3):
    """kvs: [(key, vtype, value)]; tensors: [(name, ne list, type id, data)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, vt, v in kvs:
        out += gstr(k) + struct.pack("<I", vt) + gval(vt, v)
    off = 0
    offsets = []
    for name, ne, ty, data in tensors:
        offsets.append(off)
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", ty, off)
        off += len(data) + (-len(data)) % alignment
    out += b"\0" * ((-len(out)) % alignment)
    for (_, _, _, data) in tensors:
        out += data + b"\0" * ((-len(data)) % alignment)
    return out


def sample_gguf():
    kvs = [("general.architecture", 8, "llama"),
           ("general.name", 8, "tiny"),
           ("llama.block_count", 4, 2),
           ("llama.rope.freq_base", 6, 10000.0),
           ("general.file_type", 4, 7),
           ("t.bool", 7, True),
           ("t.i64", 11, -5),
           ("t.f64", 12, 0.25),
           ("tokenizer.ggml.tokens", 9, (8, ["<unk>", "<s>", "</s>"] + ["tok%d" % i for i in range(30)])),
           ("tokenizer.ggml.scores", 9, (6, [0.0, -1.5])),
           ("t.nested", 9, (9, [(5, [1, 2]), (5, [3])]))]
    tensors = [("token_embd.weight", [4, 3], 0, struct.pack("<12f", *range(12))),
               ("blk.0.attn_q.weight", [64, 2], 8, bytes(range(136))),
               ("output_norm.weight", [5], 1, b"\x00\x3c" * 5)]
    return gguf_bytes(kvs, tensors)


def test_inspect_gguf(t):
    p = os.path.join(t.tmp, "tiny.gguf")
    with open(p, "wb") as fh:
        fh.write(sample_gguf())
    j = t.ok("inspect", p, "--json").json()
    check(j["format"] == "gguf" and j["version"] == 3 and j["alignment"] == 32, "header: %r" % j)
    check(j["tensor_count"] == 3 and j["parameter_count"] == 12 + 128 + 5, "counts: %r" % j)
    check(j["total_bytes"] == 48 + 136 + 10, "total_bytes %r" % j["total_bytes"])
    tn = {x["name"]: x for x in j["tensors"]}
    check(tn["blk.0.attn_q.weight"]["dtype"] == "Q8_0" and tn["blk.0.attn_q.weight"]["shape"] == [64, 2],
          "q8_0 tensor: %r" % tn["blk.0.attn_q.weight"])
    check(tn["token_embd.weight"]["dtype"] == "F32" and tn["token_embd.weight"]["shape"] == [4, 3], "f32 tensor")
    check(tn["output_norm.weight"]["dtype"] == "F16" and tn["output_norm.weight"]["bytes"] == 10, "f16 tensor")
    check(j["data_offset"] % 32 == 0 and tn["token_embd.weight"]["offset"] == j["data_offset"], "offsets: %r" % j)
    m = j["metadata"]
    check(m["general.architecture"] == {"type": "string", "value": "llama"}, "arch: %r" % m["general.architecture"])
    check(m["llama.block_count"] == {"type": "u32", "value": 2}, "u32: %r" % m["llama.block_count"])
    check(m["llama.rope.freq_base"]["value"] == 10000.0 and m["llama.rope.freq_base"]["type"] == "f32", "f32")
    check(m["t.bool"]["value"] is True and m["t.i64"]["value"] == -5 and m["t.f64"]["value"] == 0.25, "scalars")
    tok = m["tokenizer.ggml.tokens"]
    check(tok["type"] == "array" and tok["item_type"] == "string" and tok["count"] == 33, "tokens: %r" % tok)
    check(tok["items"][:3] == ["<unk>", "<s>", "</s>"] and len(tok["items"]) == 16, "token items: %r" % tok)
    check(m["tokenizer.ggml.scores"]["items"] == [0.0, -1.5], "scores: %r" % m["tokenizer.ggml.scores"])
    nested = m["t.nested"]
    check(nested["item_type"] == "array" and nested["items"][0]["items"] == [1, 2], "nested: %r" % nested)
    r = t.ok("inspect", p)
    check("gguf v3" in r.out and "Q8_0" in r.out and "array[string] of 33" in r.out, "text: %r" % r)
    # a GGUF in a repo
    t.emu([b64_repo("org/gguf", {"tiny-Q8_0.gguf": sample_gguf(), "README.md": b"hi\n"})])
    t.ok("pull", "org/gguf")
    j = t.ok("inspect", "org/gguf", "--json").json()
    check([c["path"] for c in j["checkpoints"]] == ["tiny-Q8_0.gguf"] and j["checkpoints"][0]["tensor_count"] == 3,
          "repo gguf: %r" % j)


def hostile_safetensors():
    ok = [("a", "F32", [2], b"\0" * 8)]
    good = st_bytes(ok)
    h = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return [
        ("short", b"\x01\0\0", "too short"),
        ("huge header", struct.pack("<Q", 1 << 40) + b"{}", "over the limit"),
        ("header past eof", struct.pack("<Q", 500) + b"{}", "past the end"),
        ("not utf8", struct.pack("<Q", 4) + b"{\xff}x", "UTF-8"),
        ("not json", struct.pack("<Q", 3) + b"{x}", "not valid JSON"),
        ("dup keys", struct.pack("<Q", 2 * len(h) - 1) + h[:-1] + b"," + h[1:] + b"\0" * 8, "duplicate"),
        ("past eof", good[:-4], "ends at 8 but the data is 4 bytes"),
        ("trailing", good + b"extra", "trailing bytes"),
        ("bad dtype", st_bytes([("a", "F31", [2], b"\0" * 8)]), "unknown dtype"),
        ("shape", st_bytes([("a", "F32", [3], b"\0" * 8)]), "needs 12 bytes"),
        ("negative", st_bytes([("a", "F32", [-2], b"\0" * 8)]), "non-negative"),
    ]


def test_inspect_hostile_files(t):
    for name, data, words in hostile_safetensors():
        p = os.path.join(t.tmp, "bad.safetensors")
        with open(p, "wb") as fh:
            fh.write(data)
        r = t.fails("inspect", p, words=(words,))
        check("bad.safetensors" in r.err and len(r.err.strip().splitlines()) == 1, "%s: one line naming the file: %r" % (name, r))
    g = sample_gguf()
    for name, data, words in [
            ("v1", g[:4] + struct.pack("<I", 1) + g[8:], "version 1"),
            ("magic", b"GGUX" + g[4:], "not a GGUF file"),
            ("truncated", g[:len(g) - 100], "past the end of the file"),
            ("kv count", g[:16] + struct.pack("<Q", 1 << 50) + g[24:], "cannot fit"),
            ("bad type", gguf_bytes([], [("t", [4], 4, b"\0" * 16)]), "unknown type id 4"),
            ("block", gguf_bytes([], [("t", [40], 8, b"\0" * 34)]), "not a multiple"),
            ("dup", gguf_bytes([("a", 4, 1), ("a", 4, 2)], []), "duplicate metadata key 'a'"),
            ("name", gguf_bytes([], [("x" * 64, [4], 0, b"\0" * 16)]), "at most 63"),
            ("dims", gguf_bytes([], [("t", [1, 1, 1, 1, 4], 0, b"\0" * 16)]), "5 dimensions")]:
        p = os.path.join(t.tmp, "bad.gguf")
        with open(p, "wb") as fh:
            fh.write(data)
        r = t.fails("inspect", p, words=(words,))
        check("bad.gguf" in r.err, "%s: names the file: %r" % (name, r))


def test_inspect_hostile_repo(t):
    """A malformed checkpoint in the store is named by its repo path, not its blob."""
    _, data, _ = hostile_safetensors()[7]
    t.emu([b64_repo("org/evil", {"model.safetensors": data})])
    t.ok("pull", "org/evil")
    r = t.fails("inspect", "org/evil", words=("trailing bytes",))
    check("'model.safetensors'" in r.err and "blobs" not in r.err, "names the repo file: %r" % r)
    # a shard the index names but the revision lacks
    files = sharded_files()
    del files["model-00002-of-00002.safetensors"]
    t.emu([b64_repo("org/halfsharded", files)])
    t.ok("pull", "org/halfsharded")
    r = t.fails("inspect", "org/halfsharded", words=("missing",))
    check("model-00002-of-00002.safetensors" in r.err and "blobs" not in r.err, "names the shard: %r" % r)
