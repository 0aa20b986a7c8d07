"""test_torch_gguf.py - PyTorch checkpoints (pytorch_model.bin, sharded sets)
converted straight to GGUF by `hubmirror convert --to gguf`, `pull --convert`
and sync's convert=: the output must be byte for byte the GGUF of the
equivalent safetensors checkpoint.

The checkpoints are written here without torch, laid out as torch.save
lays them out: a zip of stored entries under "archive/" (data.pkl, pickle
protocol 2 opcode for opcode as torch writes it (test_torch.pickle_p2),
byteorder, data/<key>, version, .data/serialization_id), each entry's data
aligned to 64 bytes by an "FB" padding extra field as PyTorch's writer
does; variants unaligned and zip64. Hostile files (code in the pickle, zip
path tricks, lying sizes and offsets, overlapping entries, compressed
storages, bad CRCs, truncation) must fail naming the file and the problem,
leave nothing behind and never run anything."""

import collections
import json
import os
import pickle
import shutil
import struct
import subprocess
import zlib

import numpy as np

import lib
from lib import check
import test_convert as tc
import test_torch as tt

TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")


# ---- a zip writer that lays entries out like torch.save -----------------------

def zip_bytes(entries, align=64, zip64=False, cd_patch=None, cd_extra=()):
    """entries: [(name, data)] or [(name, data, method)] -> zip bytes.
    Data starts on a multiple of align (an "FB" extra field pads the local
    header). zip64: every size and offset in zip64 extra fields and records.
    cd_patch(i, fields) may change a central directory entry's fields;
    cd_extra: more central directory entries [(name, local header offset,
    size, crc)] pointing anywhere."""
    out = bytearray()
    cd = []
    for e in entries:
        name, data = e[0].encode(), e[1]
        method = e[2] if len(e) > 2 else 0
        crc = zlib.crc32(data) & 0xffffffff
        stored = data
        if method == 8:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            stored = c.compress(data) + c.flush()
        off = len(out)
        z64 = struct.pack("<HHQQ", 1, 16, len(data), len(stored)) if zip64 else b""
        extra = z64
        if align > 1:
            pad = (-(off + 30 + len(name) + len(extra) + 4)) % align
            extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        sizes = (0xffffffff, 0xffffffff) if zip64 else (len(stored), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034b50, 45 if zip64 else 20, 0, method, 0, 0x21, crc,
                           sizes[0], sizes[1], len(name), len(extra)) + name + extra
        out += stored
        cd.append({"name": name, "method": method, "crc": crc, "csize": len(stored), "usize": len(data),
                   "off": off})
    for name, off, size, crc in cd_extra:
        cd.append({"name": name.encode(), "method": 0, "crc": crc, "csize": size, "usize": size, "off": off})
    cd_off = len(out)
    for i, f in enumerate(cd):
        if cd_patch:
            cd_patch(i, f)
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, f["usize"], f["csize"], f["off"])
            fields = (0xffffffff, 0xffffffff, 0xffffffff)
        else:
            extra = b""
            fields = (f["csize"], f["usize"], f["off"])
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45 if zip64 else 20, 45 if zip64 else 20, 0,
                           f["method"], 0, 0x21, f["crc"], fields[0], fields[1], len(f["name"]), len(extra), 0, 0,
                           0, 0, fields[2]) + f["name"] + extra
    cd_size = len(out) - cd_off
    n = len(cd)
    if zip64:
        z64_at = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, n, n, cd_size, cd_off)
        out += struct.pack("<IIQI", 0x07064b50, 0, z64_at, 1)
        out += struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 0xffff, 0xffff, 0xffffffff, 0xffffffff, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, n, n, cd_size, cd_off, 0)
    return bytes(out)


def torch_entries(pkl, storages, prefix="archive"):
    """torch.save's entries: data.pkl, byteorder, data/<key>..., version, serialization id."""
    ents = [(prefix + "/data.pkl", pkl), (prefix + "/byteorder", b"little")]
    ents += [(prefix + "/data/" + k, storages[k]) for k in sorted(storages, key=lambda k: (len(k), k))]
    ents += [(prefix + "/version", b"3\n"), (prefix + "/.data/serialization_id", b"0123456789")]
    return ents


def state_dict(tensors, tie=None, view=None):
    """tensors: {name: (dtype, shape, bytes)} -> (data.pkl, {key: bytes}).
    tie=(a, b): b is a view of a's storage (tied weights). view: that
    tensor sits 16 elements into a bigger storage (a storage_offset)."""
    items, storages, numels = [], {}, {}
    keys = {}
    for i, (name, (dt, shape, b)) in enumerate(tensors.items()):
        es = tt.DT[dt][2]
        if tie and name == tie[1]:
            key = keys[tie[0]]
            items.append((name, tt.T(dt, shape, key)))
            continue
        key = str(i)
        keys[name] = key
        off = 0
        if name == view:
            off = 16
            b = bytes(range(16 * es)) + b + b"\x07" * (3 * es)
        storages[key] = b
        numels[key] = len(b) // es
        items.append((name, tt.T(dt, shape, key, offset=off)))
    return tt.pickle_p2(items, numels), storages


def write_bin(path, tensors, align=64, zip64=False, **kw):
    pkl, st = state_dict(tensors, **kw)
    with open(path, "wb") as fh:
        fh.write(zip_bytes(torch_entries(pkl, st), align=align, zip64=zip64))


def model_files(src, dst):
    """dst/ gets src's files but its weights."""
    os.makedirs(dst)
    for f in os.listdir(src):
        if not f.endswith(".safetensors") and not f.endswith(".index.json") and os.path.isfile(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), dst)


def sample_tensors():
    return tt.read_st(os.path.join(lib.sample_dir(), "model.safetensors"))[0]


def to_dtype(a, dt):
    """float32 numpy array -> bytes of dt (BF16 truncated, which any value is)."""
    if dt == "F32":
        return a.astype("<f4").tobytes()
    if dt == "F16":
        return a.astype("<f2").tobytes()
    return (a.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()


def convert(t, d, qtype, out, **kw):
    return t.ok("convert", d, "--type", qtype, "-o", out, "--json", "--sha256", **kw).json()


# ---- tests -------------------------------------------------------------------

def test_torch_gguf_same_bytes_as_safetensors(t):
    """The sample model as pytorch_model.bin: every type gives the very bytes
    the safetensors original gives; also unaligned and zip64 layouts."""
    base = lib.sample_dir()
    ten = sample_tensors()
    pt = os.path.join(t.tmp, "pt", "sample")
    model_files(base, pt)
    # a view at a storage offset inside a bigger storage
    write_bin(os.path.join(pt, "pytorch_model.bin"), ten, view="model.layers.0.self_attn.q_proj.weight")
    for qtype in TYPES:
        a = convert(t, base, qtype, os.path.join(t.tmp, "st-%s.gguf" % qtype))
        b = convert(t, pt, qtype, os.path.join(t.tmp, "pt-%s.gguf" % qtype))
        check(a["sha256"] == b["sha256"] and a["size"] == b["size"],
              "%s: .bin gives other bytes than safetensors: %r vs %r" % (qtype, b, a))
        check(b["tensors"] == a["tensors"] == 21 and b["max_abs_error"] == a["max_abs_error"], "%r" % b)
        check(lib.read(os.path.join(t.tmp, "st-%s.gguf" % qtype)) == lib.read(os.path.join(t.tmp, "pt-%s.gguf" % qtype)),
              "%s: files differ" % qtype)
    ref = lib.sha256_file(os.path.join(t.tmp, "st-q8_0.gguf"))
    for align, z64 in ((1, False), (1, True), (64, True)):
        os.remove(os.path.join(pt, "pytorch_model.bin"))
        write_bin(os.path.join(pt, "pytorch_model.bin"), ten, align=align, zip64=z64)
        j = convert(t, pt, "q8_0", os.path.join(t.tmp, "layout.gguf"))
        check(j["sha256"] == ref, "align %d zip64 %s: other bytes" % (align, z64))
    check(not [f for f in os.listdir(t.tmp) if "unverified" in f], "temp files left")


def test_torch_gguf_sharded_tied_mixed_dtypes(t):
    """Two .bin shards with an index, BF16/F16/F32 tensors, tied embeddings
    (lm_head a view of the embedding's storage, as torch.save writes tied
    weights): the same bytes as the safetensors equivalent."""
    base = lib.sample_dir()
    src = tc.st_read(os.path.join(base, "model.safetensors"))
    mixed = {}
    for i, (k, v) in enumerate(sorted(src.items())):
        dt = "F32" if k.endswith("norm.weight") else ("BF16" if i % 2 else "F16")
        mixed[k] = (dt, list(v.shape), to_dtype(v, dt))
    mixed["lm_head.weight"] = mixed["model.embed_tokens.weight"]
    cfg = json.load(open(os.path.join(base, "config.json")))
    cfg["tie_word_embeddings"] = True
    st, pt = os.path.join(t.tmp, "st", "mixed"), os.path.join(t.tmp, "pt", "mixed")
    for d in (st, pt):
        model_files(base, d)
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    tc.write_st(os.path.join(st, "model.safetensors"), {k: v for k, v in mixed.items() if k != "lm_head.weight"})
    names = sorted(mixed)
    shards = {"pytorch_model-00001-of-00002.bin": names[:len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    # both tied names in one shard (torch saves shared storages once per file)
    for f, ks in shards.items():
        if "model.embed_tokens.weight" in ks and "lm_head.weight" not in ks:
            ks.append("lm_head.weight")
        elif "lm_head.weight" in ks and "model.embed_tokens.weight" not in ks:
            ks.remove("lm_head.weight")
            [o for o in shards.values() if o is not ks][0].append("lm_head.weight")
    wm = {}
    for f, ks in shards.items():
        part = collections.OrderedDict((k, mixed[k]) for k in ks)
        tie = ("model.embed_tokens.weight", "lm_head.weight") if "lm_head.weight" in part else None
        if tie:
            part.move_to_end("lm_head.weight")
        write_bin(os.path.join(pt, f), part, tie=tie)
        wm.update({k: f for k in ks})
    json.dump({"metadata": {"total_size": 0}, "weight_map": wm},
              open(os.path.join(pt, "pytorch_model.bin.index.json"), "w"))
    for qtype in ("f16", "bf16", "q4_0"):
        a = convert(t, st, qtype, os.path.join(t.tmp, "a.gguf"))
        b = convert(t, pt, qtype, os.path.join(t.tmp, "b.gguf"))
        check(a["sha256"] == b["sha256"], "%s: sharded .bin differs from safetensors" % qtype)
        check(b["tensors"] == 20, "tied: no output.weight (%r)" % b)
    # safetensors win when a model has both (the .bin here is junk)
    with open(os.path.join(st, "pytorch_model.bin"), "wb") as fh:
        fh.write(b"PK\x03\x04" + b"\0" * 100)
    c = convert(t, st, "q4_0", os.path.join(t.tmp, "c.gguf"))
    check(c["sha256"] == a["sha256"], "safetensors not preferred")
    # an index naming a missing shard
    os.remove(os.path.join(pt, "pytorch_model-00002-of-00002.bin"))
    r = t.fails("convert", pt, "-o", os.path.join(t.tmp, "x.gguf"), words=("missing",))
    check("pytorch_model-00002-of-00002.bin" in r.err, "names the shard: %r" % r)


def test_torch_gguf_pull_convert_and_sync(t):
    """A hub repo with only pytorch_model.bin: pull --convert --smoke and
    sync convert= store the same GGUF as its safetensors twin."""
    base = lib.sample_dir()
    pt = os.path.join(t.tmp, "pt", "torch-only")
    st = os.path.join(t.tmp, "st", "torch-only")
    model_files(base, pt)
    write_bin(os.path.join(pt, "pytorch_model.bin"), sample_tensors())
    shutil.copytree(base, st)
    t.emu([lib.sample_repo("org/torch-only", commits=[{"dir": pt, "refs": ["main"]}])])
    want = {q: convert(t, st, q, os.path.join(t.tmp, "want-%s.gguf" % q))["sha256"] for q in ("q8_0", "f16")}
    r = t.ok("pull", "org/torch-only", "--convert", "q8_0", "--smoke", "--json")
    check("smoke PASS" in r.err, "smoke: %r" % r)
    arts = t.db("SELECT sha256, options FROM artifacts")
    check(len(arts) == 1 and arts[0]["sha256"] == want["q8_0"], "pull --convert stored %r, want %s" % (arts, want))
    j = t.ok("convert", "org/torch-only", "--type", "q8_0", "--json").json()
    check(j["cached"] is True and j["sha256"] == want["q8_0"], "cache hit %r" % j)
    m = os.path.join(t.tmp, "models.txt")
    with open(m, "w") as fh:
        fh.write("org/torch-only convert=f16 smoke=yes\n")
    r = t.hm("sync", m, "--json", endpoint=t.endpoint)
    check(r.rc == 0, "sync: %r" % r)
    x = r.json()["models"][0]
    check(x["status"] == "smoke passed" and "converted" in x["detail"], "sync status %r" % x)
    shas = {a["sha256"] for a in t.db("SELECT sha256 FROM artifacts")}
    check(shas == set(want.values()), "stored %r, want %r" % (shas, want))
    # the engine runs the .bin checkpoint itself, as it runs the safetensors
    r = t.ok("pull", "org/torch-only", "--smoke")
    check("smoke PASS" in r.err, "pull --smoke of the checkpoint: %r" % r)
    a = t.ok("smoke", st, "--json").json()
    b = t.ok("smoke", pt, "--json").json()
    check(a["pass"] and b["pass"] and a["text"] == b["text"] and b["format"] == "pytorch", "smoke %r vs %r" % (b, a))
    lib.check_store_consistent(t.store)


def big_checkpoint(d):
    """A Llama-shaped F16 pytorch_model.bin of about 320 MB, and its config."""
    rng = np.random.default_rng(5)
    hidden, ff, vocab, layers = 1024, 2816, 65536, 2
    ten = collections.OrderedDict()

    def w(name, *shape):
        a = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype("<f2")
        ten[name] = ("F16", list(shape), a.tobytes())

    w("model.embed_tokens.weight", vocab, hidden)
    for i in range(layers):
        p = "model.layers.%d." % i
        ten[p + "input_layernorm.weight"] = ("F32", [hidden], np.ones(hidden, "<f4").tobytes())
        ten[p + "post_attention_layernorm.weight"] = ("F32", [hidden], np.ones(hidden, "<f4").tobytes())
        for n in ("q", "k", "v", "o"):
            w(p + "self_attn.%s_proj.weight" % n, hidden, hidden)
        w(p + "mlp.gate_proj.weight", ff, hidden)
        w(p + "mlp.up_proj.weight", ff, hidden)
        w(p + "mlp.down_proj.weight", hidden, ff)
    ten["model.norm.weight"] = ("F32", [hidden], np.ones(hidden, "<f4").tobytes())
    w("lm_head.weight", vocab, hidden)
    os.makedirs(d)
    json.dump({"architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "intermediate_size": ff,
               "num_hidden_layers": layers, "num_attention_heads": 16, "num_key_value_heads": 16,
               "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
               "vocab_size": vocab}, open(os.path.join(d, "config.json"), "w"))
    write_bin(os.path.join(d, "pytorch_model.bin"), ten)


def test_torch_gguf_memory_bounded(t):
    """A ~320 MB checkpoint converts with a peak RSS far under its size."""
    d = os.path.join(t.tmp, "big")
    # made by another process: a child forked from a big parent would
    # inherit the parent's peak in its ru_maxrss
    subprocess.run([lib.PY, os.path.abspath(__file__), "big", d], check=True, timeout=120)
    size = os.path.getsize(os.path.join(d, "pytorch_model.bin"))
    out = os.path.join(t.tmp, "big.gguf")
    argv = t.argv(["convert", d, "--type", "q8_0", "-o", out, "-q"])
    p = subprocess.Popen([lib.BIN] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=t.environ())
    err = p.stderr.read().decode()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = 0
    check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "convert failed: %s" % err)
    rss = ru.ru_maxrss * 1024
    check(size > 300e6 and rss < 128 << 20, "peak RSS %.0f MiB converting %.0f MB" % (rss / 2**20, size / 1e6))
    kv, _, tensors, _ = tc.gguf_read(out)
    check(len(tensors) == 3 + 9 * 2 and tensors["token_embd.weight"][1] == 8, "output")


test_torch_gguf_memory_bounded.timeout = 300


# ---- hostile files -------------------------------------------------------------

def hostile_dir(t, name, data):
    d = os.path.join(t.tmp, name)
    model_files(lib.sample_dir(), d)
    with open(os.path.join(d, "pytorch_model.bin"), "wb") as fh:
        fh.write(data)
    return d


def refused(t, name, data, words, named=True):
    d = hostile_dir(t, name, data)
    out = os.path.join(t.tmp, name + ".gguf")
    r = t.fails("convert", d, "-o", out, words=words)
    if os.environ.get("HM_SHOW_ERRORS"):
        print("%-10s %s" % (name, r.err.strip()))
    check(not named or os.path.join(d, "pytorch_model.bin") in r.err, "%s: the file is not named: %r" % (name, r.err))
    check(not os.path.exists(out) and not [f for f in os.listdir(t.tmp) if "unverified" in f],
          "%s: output left behind" % name)
    return r


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def test_torch_gguf_hostile(t):
    ten = sample_tensors()
    pkl, st = state_dict(ten)
    good = torch_entries(pkl, st)
    marker = os.path.join(t.tmp, "pwned")

    # code in the pickle never runs
    evil = pickle.dumps(collections.OrderedDict([("model.norm.weight", Evil(os.system, "touch " + marker))]),
                        protocol=2)
    refused(t, "system", zip_bytes(torch_entries(evil, st)), ("refusing to load global",))
    check(not os.path.exists(marker), "the payload ran")
    # zip path tricks
    refused(t, "traversal", zip_bytes(good + [("archive/../../escape", b"x")]), ("unsafe",))
    refused(t, "absolute", zip_bytes(good + [("/etc/cron.d/x", b"x")]), ("unsafe",))
    # a storage compressed (torch never does): a clear error with the way out
    comp = [(n, d, 8) if n == "archive/data/3" else (n, d) for n, d in good]
    r = refused(t, "deflated", zip_bytes(comp), ("compressed",))
    check("--to safetensors" in r.err, "no way out offered: %r" % r.err)
    # a flipped byte in a storage: the CRC
    data = bytearray(zip_bytes(good))
    at = data.find(st["5"][:64])
    data[at + 100] ^= 0x40
    refused(t, "crc", bytes(data), ("CRC",))
    # truncated, at several places
    whole = zip_bytes(good)
    for cut in (len(whole) // 3, len(whole) - 30, len(whole) - 1):
        refused(t, "cut%d" % cut, whole[:cut], ("truncated", "end of central directory", "reading the archive",
                                                  "ends early", "damaged", "cut short"))

    # the central directory lies about a size, or where an entry is
    def bigger(i, f):
        if f["name"] == b"archive/data/4":
            f["csize"] += 4096
            f["usize"] += 4096
    refused(t, "size", zip_bytes(good, cd_patch=bigger), ("bytes", "storage", "past", "declares", "overlaps"))

    def moved(i, f):
        if f["name"] == b"archive/data/4":
            f["off"] += 64
    refused(t, "offset", zip_bytes(good, cd_patch=moved), ("local header", "reading the archive", "disagrees"))

    def far(i, f):
        if f["name"] == b"archive/data/4":
            f["off"] = 0xfffffff0
    refused(t, "far", zip_bytes(good, cd_patch=far), ("local header", "reading the archive", "outside"))
    # a second entry whose bytes lie inside another's (a zip-bomb trick)
    inner = zip_bytes([("archive/data/zz", b"\0" * 64)], align=1)
    lh_len = 30 + len("archive/data/zz")
    host = [(n, d) for n, d in good] + [("archive/pad", inner[:lh_len + 64])]
    plain = zip_bytes(host, align=1)
    pad_at = plain.find(inner[:lh_len + 64])
    refused(t, "overlap", zip_bytes(host, align=1, cd_extra=[("archive/data/zz", pad_at, 64, zlib.crc32(b"\0" * 64))]),
            ("overlap", "reading the archive", "appears twice", "damaged"))
    # the pickle's view runs past its storage
    items = [(n, tt.T(dt, shape, str(i), offset=1 if n == "model.norm.weight" else 0))
             for i, (n, (dt, shape, _)) in enumerate(ten.items())]
    numels = {str(i): len(b) // 4 for i, (_, (_, _, b)) in enumerate(ten.items())}
    refused(t, "view", zip_bytes(torch_entries(tt.pickle_p2(items, numels), st)), ("runs past",))
    # a weight of a type the converter does not take
    items = [(n, tt.T("I32" if n == "model.norm.weight" else dt, shape, str(i)))
             for i, (n, (dt, shape, _)) in enumerate(ten.items())]
    refused(t, "int", zip_bytes(torch_entries(tt.pickle_p2(items, numels), st)), ("dtype",), named=False)
    # not a zip, and the legacy format
    refused(t, "junk", b"PK\x03\x04" + os.urandom(300), ("reading the archive", "damaged", "zip"))
    refused(t, "legacy", pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + b"junk", ("legacy",))


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "big":
        big_checkpoint(sys.argv[2])
