"""test_torch.py - PyTorch checkpoints (torch.save zip files, sharded sets)
converted to safetensors by the library (fmt_pt_to_safetensors, through a
small driver compiled here against libhubmirror.a; and through `hubmirror
convert --to safetensors` once that command exists).

The checkpoints are made here without torch: a zip (stdlib zipfile, stored
entries under "archive/") holding data.pkl, data/<key> and version, where
data.pkl is either assembled byte by byte with struct, opcode for opcode as
torch.save (pickle protocol 2) writes it, or produced by the stdlib pickler
over stand-in torch classes (protocol 4: frames, MEMOIZE, STACK_GLOBAL).
Outputs are read back by a safetensors parser written here. Hostile files
must fail naming the file and the problem, and never run anything."""

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import types
import zipfile

import lib
from lib import check

ROOT = lib.ROOT

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "formats/torch.h"
int main(int argc, char **argv)
{
	struct hm_ctx ctx = {0};
	struct fmt_pt_convert_opts o = {0};
	struct fmt_pt_convert_result r;
	if (argc < 3)
		return 2;
	if (argc > 3)
		o.max_shard_size = strtoull(argv[3], NULL, 10);
	if (fmt_pt_to_safetensors(&ctx, argv[1], argv[2], &o, &r)) {
		fprintf(stderr, "error: %s\n", ctx.errmsg);
		return 1;
	}
	printf("{\"tensors\": %zu, \"shards\": %zu, \"bytes\": %llu}\n", r.tensors, r.shards,
	       (unsigned long long)r.bytes);
	return 0;
}
"""


def driver(t):
    """The C driver, built once per test against libhubmirror.a."""
    return lib.build_driver(t, "pt-driver", DRIVER)


def convert(t, src, out, max_shard=None):
    args = [driver(t), src, out] + ([str(max_shard)] if max_shard else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


# ---- tensors ----

DT = {  # dtype: (torch storage, struct code, element size)
    "F32": ("FloatStorage", "f", 4), "F64": ("DoubleStorage", "d", 8), "F16": ("HalfStorage", "e", 2),
    "BF16": ("BFloat16Storage", None, 2), "I64": ("LongStorage", "q", 8), "I32": ("IntStorage", "i", 4),
    "I16": ("ShortStorage", "h", 2), "I8": ("CharStorage", "b", 1), "U8": ("ByteStorage", "B", 1),
    "BOOL": ("BoolStorage", "?", 1),
}


def values(dtype, n, seed):
    """n little-endian elements of dtype."""
    if dtype == "BF16":
        return b"".join(struct.pack("<f", (i + seed) * 0.25 - 3)[2:] for i in range(n))
    code = DT[dtype][1]
    if dtype in ("F32", "F64", "F16"):
        vals = [(i + seed) * 0.5 - 7 for i in range(n)]
    elif dtype == "BOOL":
        vals = [(i + seed) % 3 == 0 for i in range(n)]
    elif dtype == "U8":
        vals = [(i * 7 + seed) % 256 for i in range(n)]
    elif dtype == "I8":
        vals = [(i * 7 + seed) % 256 - 128 for i in range(n)]
    else:
        vals = [(i * 104729 + seed) * (-1 if i % 2 else 1) % (1 << (8 * DT[dtype][2] - 2)) for i in range(n)]
    return struct.pack("<%d%s" % (n, code), *vals)


class T:
    """A tensor: a view (offset in elements, shape, row-major) of a storage."""

    def __init__(self, dtype, shape, key, offset=0, stride=None):
        self.dtype, self.shape, self.key, self.offset = dtype, list(shape), key, offset
        self.stride = stride if stride is not None else row_major(shape)

    def nelem(self):
        n = 1
        for d in self.shape:
            n *= d
        return n


def row_major(shape):
    out, acc = [], 1
    for d in reversed(shape):
        out.insert(0, acc)
        acc *= d
    return out


# ---- data.pkl, assembled as torch.save (protocol 2) writes it ----

class P2:
    def __init__(self):
        self.b = bytearray(b"\x80\x02")
        self.memo = {}

    def put(self, key=None):
        idx = len(self.memo)
        self.memo[key if key is not None else ("anon", idx)] = idx
        self.b += b"q" + bytes([idx]) if idx < 256 else b"r" + struct.pack("<I", idx)

    def get(self, key):
        idx = self.memo[key]
        self.b += b"h" + bytes([idx]) if idx < 256 else b"j" + struct.pack("<I", idx)

    def glob(self, mod, name):
        k = ("g", mod, name)
        if k in self.memo:
            return self.get(k)
        self.b += b"c" + mod.encode() + b"\n" + name.encode() + b"\n"
        self.put(k)

    def s(self, text, memo=True):
        k = ("s", text)
        if memo and k in self.memo:
            return self.get(k)
        raw = text.encode()
        self.b += b"X" + struct.pack("<I", len(raw)) + raw
        self.put(k if memo else None)

    def i(self, v):
        if 0 <= v < 256:
            self.b += b"K" + bytes([v])
        elif 0 <= v < 65536:
            self.b += b"M" + struct.pack("<H", v)
        elif -2**31 <= v < 2**31:
            self.b += b"J" + struct.pack("<i", v)
        else:
            raw = v.to_bytes(8, "little", signed=True)
            self.b += b"\x8a\x08" + raw

    def tup(self, items):
        if not items:
            self.b += b")"
            return
        if len(items) <= 3:
            for v in items:
                self.i(v)
            self.b += bytes([0x84 + len(items)])
        else:
            self.b += b"("
            for v in items:
                self.i(v)
            self.b += b"t"
        self.put()

    def odict_new(self):
        self.glob("collections", "OrderedDict")
        self.b += b")R"
        self.put()

    def tensor(self, t, numel):
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.b += b"("                                # args
        self.b += b"("                                # persistent id
        self.s("storage")
        self.glob("torch", DT[t.dtype][0])
        self.s(t.key, memo=False)
        self.s("cpu")
        self.i(numel)
        self.b += b"t"
        self.put()
        self.b += b"Q"                                # BINPERSID
        self.i(t.offset)
        self.tup(t.shape)
        self.tup(t.stride)
        self.b += b"\x89"                             # requires_grad=False
        self.odict_new()                              # backward_hooks
        self.b += b"t"
        self.put()
        self.b += b"R"
        self.put()


def pickle_p2(tensors, numels, metadata=True):
    """tensors: [(name, T)]; numels: key -> storage elements."""
    p = P2()
    p.odict_new()
    if len(tensors) == 1:
        name, t = tensors[0]
        p.s(name, memo=False)
        p.tensor(t, numels[t.key])
        p.b += b"s"
    elif tensors:
        for start in range(0, len(tensors), 1000):   # pickle batches SETITEMS by 1000
            p.b += b"("
            for name, t in tensors[start:start + 1000]:
                p.s(name, memo=False)
                p.tensor(t, numels[t.key])
            p.b += b"u"
    if metadata:                                      # state_dict()._metadata through BUILD
        p.b += b"}"
        p.put()
        p.s("_metadata")
        p.odict_new()
        p.s("")
        p.b += b"}"
        p.put()
        p.s("version")
        p.i(1)
        p.b += b"ss"
        p.b += b"s"
        p.b += b"b"
    p.b += b"."
    return bytes(p.b)


class CheckUnpickler(pickle.Unpickler):
    """Python's own unpickler over stand-ins: checks the assembled bytes are a real pickle."""

    def find_class(self, mod, name):
        if (mod, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (mod, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda st, off, size, stride, rg, hooks: (st, off, list(size), list(stride))
        if mod == "torch" and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError("global %s.%s" % (mod, name))

    def persistent_load(self, pid):
        return pid


def python_view(pkl):
    return CheckUnpickler(io.BytesIO(pkl)).load()


# ---- data.pkl by the stdlib pickler over stand-ins of torch's classes ----

def fake_torch():
    """Modules named like torch's, holding stand-ins the pickler can name."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*a):
        raise AssertionError("never called")

    def _rebuild_parameter(*a):
        raise AssertionError("never called")

    for fn in (_rebuild_tensor_v2, _rebuild_parameter):
        fn.__module__ = utils.__name__
        fn.__qualname__ = fn.__name__
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    utils._rebuild_parameter = _rebuild_parameter
    for st, _, _ in DT.values():
        setattr(torch, st, type(st, (), {"__module__": "torch"}))
    torch._utils = utils
    sys.modules.setdefault("torch", torch)
    sys.modules.setdefault("torch._utils", utils)
    return sys.modules["torch"], sys.modules["torch._utils"]


class Storage:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


class FakeTensor:
    def __init__(self, t, storage, param=False):
        self.t, self.storage, self.param = t, storage, param

    def __reduce_ex__(self, proto):
        torch, utils = fake_torch()
        args = (self.storage, self.t.offset, tuple(self.t.shape), tuple(self.t.stride), False,
                collections.OrderedDict())
        if self.param:
            return (utils._rebuild_parameter, (Plain(utils._rebuild_tensor_v2, args), False, collections.OrderedDict()))
        return (utils._rebuild_tensor_v2, args)


class Plain:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce_ex__(self, proto):
        return (self.fn, self.args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            torch, _ = fake_torch()
            return ("storage", getattr(torch, DT[obj.dtype][0]), obj.key, "cpu", obj.numel)
        return None


def pickle_std(tensors, numels, protocol=4, container=dict, params=()):
    fake_torch()
    storages = {}
    d = container()
    for name, t in tensors:
        st = storages.setdefault(t.key, Storage(t.dtype, t.key, numels[t.key]))
        d[name] = FakeTensor(t, st, param=name in params)
    bio = io.BytesIO()
    TorchPickler(bio, protocol=protocol).dump(d)
    return bio.getvalue()


# ---- the zip ----

def storages_for(tensors, seed=1):
    """Storage bytes big enough for every view of it: key -> (dtype, bytes)."""
    need = {}
    for _, t in tensors:
        end = t.offset + t.nelem()
        dt, n = need.get(t.key, (t.dtype, 0))
        need[t.key] = (dt, max(n, end))
    return {k: (dt, values(dt, n, seed + i)) for i, (k, (dt, n)) in enumerate(sorted(need.items()))}


def write_zip(path, pkl, storages, prefix="archive", extra=(), order=None, compress=None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(prefix + "/data.pkl", pkl)
        z.writestr(prefix + "/byteorder", "little")
        for k in (order or sorted(storages)):
            info = zipfile.ZipInfo(prefix + "/data/" + k)
            info.compress_type = compress or zipfile.ZIP_STORED
            z.writestr(info, storages[k][1])
        z.writestr(prefix + "/version", "3\n")
        z.writestr(prefix + "/.data/serialization_id", "1234567890")
        for name, data in extra:
            z.writestr(name, data)


def make_checkpoint(path, tensors, pickler="p2", **kw):
    st = storages_for(tensors)
    numels = {k: len(b) // DT[dt][2] for k, (dt, b) in st.items()}
    pkl = pickle_p2(tensors, numels) if pickler == "p2" else pickle_std(tensors, numels, **kw)
    write_zip(path, pkl, st)
    return {name: st[t.key][1][t.offset * DT[t.dtype][2]:(t.offset + t.nelem()) * DT[t.dtype][2]]
            for name, t in tensors}


# ---- reading safetensors back ----

def read_st(path):
    with open(path, "rb") as fh:
        data = fh.read()
    n = struct.unpack("<Q", data[:8])[0]
    h = json.loads(data[8:8 + n])
    meta = h.pop("__metadata__", None)
    out, ends = {}, []
    for name, e in h.items():
        a, b = e["data_offsets"]
        out[name] = (e["dtype"], e["shape"], data[8 + n + a:8 + n + b])
        ends.append((a, b))
    ends.sort()
    pos = 0
    for a, b in ends:
        check(a == pos, "%s: data does not tile (%d vs %d)" % (path, a, pos))
        pos = b
    check(8 + n + pos == len(data), "%s: trailing bytes" % path)
    return out, meta


def check_output(out_dir, tensors, expect, shards=1):
    if shards == 1:
        check(not os.path.exists(os.path.join(out_dir, "model.safetensors.index.json")), "unexpected index")
        got, meta = read_st(os.path.join(out_dir, "model.safetensors"))
        check(meta == {"format": "pt"}, "metadata %r" % meta)
    else:
        with open(os.path.join(out_dir, "model.safetensors.index.json")) as fh:
            idx = json.load(fh)
        files = sorted(set(idx["weight_map"].values()))
        check(files == ["model-%05d-of-%05d.safetensors" % (i + 1, shards) for i in range(shards)], "shards %r" % files)
        got = {}
        for f in files:
            part, meta = read_st(os.path.join(out_dir, f))
            check(meta == {"format": "pt"}, "metadata %r" % meta)
            for name in part:
                check(idx["weight_map"][name] == f, "%s listed under %s" % (name, idx["weight_map"].get(name)))
            got.update(part)
        check(idx["metadata"]["total_size"] == sum(len(b) for b in expect.values()), "total_size")
        check(not os.path.exists(os.path.join(out_dir, "model.safetensors")), "stray model.safetensors")
    check(set(got) == {n for n, _ in tensors}, "names %r" % (set(got) ^ {n for n, _ in tensors}))
    for name, t in tensors:
        dt, shape, data = got[name]
        check(dt == t.dtype, "%s dtype %s vs %s" % (name, dt, t.dtype))
        check(shape == t.shape, "%s shape %r vs %r" % (name, shape, t.shape))
        check(data == expect[name], "%s: bytes differ" % name)


def every_dtype():
    ts = []
    for i, dt in enumerate(DT):
        ts.append(("layer.%d.%s" % (i, dt.lower()), T(dt, [3, 5], str(i))))
    return ts


# ---- tests ----

def test_torch_convert_protocol2(t):
    tensors = every_dtype() + [
        ("embed.weight", T("F32", [7, 4], "100")),
        ("lm_head.weight", T("F32", [7, 4], "100")),          # tied: the same storage and view
        ("embed.row3", T("F32", [4], "100", offset=12)),     # a view inside it
        ("scalar", T("F64", [], "101")),
        ("empty", T("F16", [0, 3], "102")),
        ("unit.dims", T("BF16", [1, 6, 1], "103", stride=[99, 1, 7])),  # size-1 dims may carry any stride
    ]
    src = os.path.join(t.tmp, "pytorch_model.bin")
    expect = make_checkpoint(src, tensors)
    # the assembled pickle is what Python's unpickler reads as a state dict
    with zipfile.ZipFile(src) as z:
        view = python_view(z.read("archive/data.pkl"))
    check(isinstance(view, collections.OrderedDict) and list(view) == [n for n, _ in tensors], "python view keys")
    for name, tt in tensors:
        pid, off, size, stride = view[name]
        check(pid[0] == "storage" and pid[1] == DT[tt.dtype][0] and pid[2] == tt.key, "pid %r" % (pid,))
        check((off, size, stride) == (tt.offset, tt.shape, tt.stride), "%s view %r" % (name, view[name]))
    check(view._metadata == {"": {"version": 1}}, "metadata %r" % getattr(view, "_metadata", None))
    out = os.path.join(t.tmp, "out")
    p = convert(t, src, out)
    check(p.returncode == 0, "convert failed: %s" % p.stderr)
    r = json.loads(p.stdout)
    check(r["tensors"] == len(tensors) and r["shards"] == 1, "result %r" % r)
    check(r["bytes"] == sum(len(b) for b in expect.values()), "bytes %r" % r)
    check_output(out, tensors, expect)
    # the directory form finds pytorch_model.bin too
    out2 = os.path.join(t.tmp, "out2")
    p = convert(t, t.tmp, out2)
    check(p.returncode == 0, "convert of the directory failed: %s" % p.stderr)
    check_output(out2, tensors, expect)


def test_torch_convert_stdlib_pickler(t):
    tensors = [("a.weight", T("F32", [4, 6], "0")), ("a.bias", T("F32", [6], "1")),
               ("b.weight", T("I64", [2, 2, 2], "2")), ("c", T("BF16", [5], "0", offset=3))]
    for proto in (2, 3, 4, 5):
        for container in (dict, collections.OrderedDict):
            src = os.path.join(t.tmp, "p%d-%s.bin" % (proto, container.__name__))
            expect = make_checkpoint(src, [tensors[0], tensors[1], tensors[2]], pickler="std", protocol=proto,
                                     container=container, params=("a.bias",))
            out = os.path.join(t.tmp, "out-%d-%s" % (proto, container.__name__))
            p = convert(t, src, out)
            check(p.returncode == 0, "protocol %d %s: %s" % (proto, container.__name__, p.stderr))
            check_output(out, tensors[:3], expect)


def test_torch_convert_sharded_source_and_output(t):
    shards = [[("model.layers.%d.w" % i, T("F16", [8, 8], str(i))) for i in range(3)],
              [("model.layers.%d.w" % i, T("F16", [8, 8], str(i))) for i in range(3, 5)] +
              [("model.norm.weight", T("F32", [8], "9"))]]
    src = os.path.join(t.tmp, "src")
    os.makedirs(src)
    expect, wm = {}, {}
    for i, ts in enumerate(shards):
        name = "pytorch_model-%05d-of-%05d.bin" % (i + 1, len(shards))
        expect.update(make_checkpoint(os.path.join(src, name), ts))
        for n, _ in ts:
            wm[n] = name
    with open(os.path.join(src, "pytorch_model.bin.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": sum(len(b) for b in expect.values())}, "weight_map": wm}, fh)
    alltensors = shards[0] + shards[1]
    # one output file by default
    out = os.path.join(t.tmp, "one")
    p = convert(t, src, out)
    check(p.returncode == 0, "convert failed: %s" % p.stderr)
    check_output(out, alltensors, expect)
    # at most 300 bytes a file: 128-byte tensors, two a file, the norm joins the last
    out = os.path.join(t.tmp, "many")
    p = convert(t, os.path.join(src, "pytorch_model.bin.index.json"), out, max_shard=300)
    check(p.returncode == 0, "convert failed: %s" % p.stderr)
    check(json.loads(p.stdout)["shards"] == 3, "result %s" % p.stdout)
    check_output(out, alltensors, expect, shards=3)
    # an index naming a tensor its shard lacks
    wm["ghost"] = "pytorch_model-00001-of-00002.bin"
    with open(os.path.join(src, "pytorch_model.bin.index.json"), "w") as fh:
        json.dump({"weight_map": wm}, fh)
    p = convert(t, src, os.path.join(t.tmp, "bad"))
    check(p.returncode == 1 and "'ghost'" in p.stderr, "ghost: %s" % p.stderr)
    del wm["ghost"]
    wm["model.norm.weight"] = "../../etc/passwd"
    with open(os.path.join(src, "pytorch_model.bin.index.json"), "w") as fh:
        json.dump({"weight_map": wm}, fh)
    p = convert(t, src, os.path.join(t.tmp, "bad"))
    check(p.returncode == 1 and "unsafe shard name" in p.stderr, "traversal: %s" % p.stderr)


def test_torch_many_tensors(t):
    """Over 256 memo entries (LONG_BINPUT/LONG_BINGET) and several SETITEMS batches."""
    tensors = [("t.%04d" % i, T("I32", [3], str(i))) for i in range(1100)]
    src = os.path.join(t.tmp, "pytorch_model.bin")
    expect = make_checkpoint(src, tensors)
    out = os.path.join(t.tmp, "out")
    p = convert(t, src, out)
    check(p.returncode == 0, "convert failed: %s" % p.stderr)
    check_output(out, tensors, expect)


# ---- hostile files ----

def refused(t, path, needle, name=None):
    out = os.path.join(t.tmp, "out-" + os.path.basename(path))
    p = convert(t, path, out)
    check(p.returncode == 1, "%s: exit %d, %s" % (path, p.returncode, p.stdout + p.stderr))
    check("AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr)
    check(needle in p.stderr, "%s: wanted %r in %r" % (path, needle, p.stderr))
    check((name or path) in p.stderr, "message does not name %s: %r" % (name or path, p.stderr))
    left = os.listdir(out) if os.path.exists(out) else []
    check(not left, "output left behind: %r" % left)


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def test_torch_refuses_code(t):
    import builtins
    marker = os.path.join(t.tmp, "pwned")
    st = {"0": ("F32", values("F32", 4, 1))}
    payloads = [
        ("os-system", Evil(os.system, "touch " + marker), "refusing to load global 'posix.system'"),
        ("eval", Evil(builtins.eval, "open(%r, 'w')" % marker), "refusing to load global 'builtins.eval'"),
        ("popen", Evil(subprocess.Popen, ["touch", marker]), "Popen' (only tensors and dicts are allowed)"),
        ("exec", Evil(builtins.exec, "open(%r, 'w')" % marker), "refusing to load global 'builtins.exec'"),
    ]
    for proto in (2, 4):
        for name, obj, needle in payloads:
            if proto < 3:  # the pickler writes Python 2's module name
                needle = needle.replace("'builtins.", "'__builtin__.")
            path = os.path.join(t.tmp, "%s-%d.bin" % (name, proto))
            pkl = pickle.dumps(collections.OrderedDict([("w", obj)]), protocol=proto)
            write_zip(path, pkl, st)
            refused(t, path, needle)
            refused(t, path, "(only tensors and dicts are allowed)")
            # the whole pickle being the call
            write_zip(path, pickle.dumps(obj, protocol=proto), st)
            refused(t, path, needle)
    check(not os.path.exists(marker), "a payload ran")


def good_pickle():
    tensors = [("w", T("F32", [2, 3], "0"))]
    return pickle_p2(tensors, {"0": 6}), {"0": ("F32", values("F32", 6, 1))}


def test_torch_refuses_malformed(t):
    pkl, st = good_pickle()
    cases = []

    def case(name, pkl_bytes, needle, storages=None, **kw):
        path = os.path.join(t.tmp, name + ".bin")
        write_zip(path, pkl_bytes, storages if storages is not None else st, **kw)
        cases.append((path, needle))

    case("unknown-opcode", pkl[:2] + b"\xff" + pkl[2:], "unsupported pickle opcode 0xff")
    case("inst-opcode", b"\x80\x02(iposix\nsystem\nX\x01\x00\x00\x00x.", "unsupported pickle opcode 0x69")
    case("truncated", pkl[:len(pkl) // 2], "truncated")
    case("memo-range", b"\x80\x02h\x05.", "memo index 5 out of range")
    case("long-memo", b"\x80\x02Nr\xff\xff\xff\x7f.", "out of order")
    case("huge-string", b"\x80\x02X\xff\xff\xff\xff" + b"a" * 16, "string of 4294967295 bytes")
    case("huge-string8", b"\x80\x04\x8d" + b"\xff" * 8 + b"a" * 16, "only 16 left")
    case("deep", b"\x80\x02" + b"(" * 10000 + b".", "nested deeper")
    offs = [("w", T("F32", [2, 3], "0", offset=1))]
    case("offset-past", pickle_p2(offs, {"0": 6}), "runs past its storage")
    case("offset-past-entry", pickle_p2(offs, {"0": 7}), "holds 24 bytes")
    nc = [("w", T("F32", [2, 3], "0", stride=[1, 2]))]
    case("non-contiguous", pickle_p2(nc, {"0": 6}), "tensor 'w' is not contiguous")
    case("missing-storage", pkl, "needs storage 'data/0', which is missing", storages={})
    case("traversal", pkl, "unsafe or unexpected name", extra=[("archive/../../escape", b"x")])
    case("two-prefixes", pkl, "is outside 'archive/'", extra=[("other/data.pkl", b"x")])
    bomb = {"0": ("F32", b"\0" * (8 << 20))}
    bp = pickle_p2([("w", T("F32", [2 << 20], "0"))], {"0": 2 << 20})
    case("bomb", bp, "compressed checkpoints are not supported", storages=bomb, compress=zipfile.ZIP_DEFLATED)
    case("not-a-dict", b"\x80\x02]q\x00.", "holds a list, not a dict of tensors")
    case("int-value", b"\x80\x02}q\x00(X\x01\x00\x00\x00wK\x01u.", "entry 'w' is a int, not a tensor")
    for path, needle in cases:
        refused(t, path, needle)
    # not zips at all
    legacy = os.path.join(t.tmp, "legacy.bin")
    with open(legacy, "wb") as fh:
        fh.write(pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + b"junk")
    refused(t, legacy, "legacy (pre-1.6) torch.save format")
    junk = os.path.join(t.tmp, "junk.bin")
    with open(junk, "wb") as fh:
        fh.write(b"PK\x03\x04" + os.urandom(200))
    refused(t, junk, "reading the archive")
    # a corrupted storage byte: the zip CRC catches it
    path = os.path.join(t.tmp, "crc.bin")
    write_zip(path, pkl, st)
    data = bytearray(open(path, "rb").read())
    at = data.find(st["0"][1])
    data[at + 5] ^= 0xFF
    with open(path, "wb") as fh:
        fh.write(data)
    refused(t, path, "CRC")
    # big-endian archives
    path = os.path.join(t.tmp, "big.bin")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "big")
        z.writestr("archive/data/0", st["0"][1])
    refused(t, path, "byte order 'big'")


def test_torch_via_hubmirror_convert(t):
    """`hubmirror convert SRC --to safetensors`, once cmd/convert.c wires it."""
    h = subprocess.run([lib.BIN, "convert", "--help"], capture_output=True, text=True)
    if h.returncode != 0 or "safetensors" not in h.stdout + h.stderr:
        return  # the command is not there yet
    tensors = every_dtype()
    src = os.path.join(t.tmp, "model")
    os.makedirs(src)
    expect = make_checkpoint(os.path.join(src, "pytorch_model.bin"), tensors)
    out = os.path.join(t.tmp, "out")
    p = subprocess.run([lib.BIN, "convert", src, "--to", "safetensors", "-o", out, "--store", t.store],
                       capture_output=True, text=True)
    check(p.returncode == 0, "hubmirror convert: %s" % p.stderr)
    check_output(out, tensors, expect)
