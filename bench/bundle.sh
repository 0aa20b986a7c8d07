#!/bin/sh
# bundle.sh - hubmirror export / import of a ~2 GiB model as .tar, against
# plain tar of the same blob files, in the same run.
#
# The model (SHARDS random shards totalling BIG_MIB MiB, plus two small
# files) is made once into CACHE, packed as a bundle by Python's tarfile and
# streamed into a fresh store with `hubmirror import -`. Then, RUNS times
# each (outputs deleted and `sync` between runs, page cache left warm):
#   export:  hubmirror export REPO -o X.tar   vs  tar -cf Y.tar <the blobs>
#   import:  hubmirror import X.tar (fresh store) vs tar -xf Y.tar (fresh dir)
# hubmirror import hashes every byte and fsyncs the blobs before it records
# anything; plain tar does neither, so `tar -xf + sync` is shown too (for
# information; the target compares with plain tar). Medians are reported;
# target: hubmirror within 1.5x of tar. Prints a table and writes
# bench/out/bundle.json.
#
# Environment: WORK (default /tmp/hm-bench-bundle, removed unless KEEP=1),
# CACHE (default /tmp/hm-bench-cache: the random shards, kept), RUNS (3),
# BIG_MIB (2048), SHARDS (4), HUBMIRROR (./hubmirror), STRICT=1 to exit 1
# when a target is missed.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HM=${HUBMIRROR:-$ROOT/hubmirror}
WORK=${WORK:-/tmp/hm-bench-bundle}
CACHE=${CACHE:-/tmp/hm-bench-cache}
KEEP=${KEEP:-0}
RUNS=${RUNS:-3}
BIG_MIB=${BIG_MIB:-2048}
SHARDS=${SHARDS:-4}
STRICT=${STRICT:-0}
OUT=$ROOT/bench/out
PY=/usr/bin/python3
REPO=bench-org/big-model

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }

[ -x "$HM" ] || die "no hubmirror binary at '$HM': run 'make' first"
for t in tar sha256sum head awk sort; do
	command -v "$t" >/dev/null 2>&1 || die "missing tool '$t'"
done
[ -x "$PY" ] || die "missing $PY"
case "$RUNS" in '' | *[!0-9]* | 0) die "RUNS must be a positive integer" ;; esac
case "$SHARDS" in '' | *[!0-9]* | 0) die "SHARDS must be a positive integer" ;; esac
case "$BIG_MIB" in '' | *[!0-9]* | 0) die "BIG_MIB must be a positive integer" ;; esac

case "$WORK" in /*/*) ;; *) die "WORK must be an absolute path below / (got '$WORK')" ;; esac
if [ -e "$WORK" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ] && [ ! -f "$WORK/.hm-bench" ]; then
	die "'$WORK' exists and was not made by bench/bundle.sh: refusing to wipe it"
fi
chmod -R u+w "$WORK" 2>/dev/null || true
rm -rf "$WORK"
mkdir -p "$WORK" "$CACHE" "$OUT" && : >"$WORK/.hm-bench" || die "cannot create '$WORK'"
cp "$HM" "$WORK/hubmirror" || die "cannot copy '$HM'"
HM=$WORK/hubmirror

cleanup() {
	if [ "$KEEP" = 1 ]; then
		say "kept $WORK"
	else
		chmod -R u+w "$WORK" 2>/dev/null || true
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- the model ----------
SHARD_MIB=$((BIG_MIB / SHARDS))
MODEL=$CACHE/bundle-model-$BIG_MIB-$SHARDS
if [ ! -f "$MODEL/.done" ]; then
	say "making a $BIG_MIB MiB model in $SHARDS shards under $MODEL (once)"
	rm -rf "$MODEL"
	mkdir -p "$MODEL"
	i=1
	while [ "$i" -le "$SHARDS" ]; do
		head -c $((SHARD_MIB * 1048576)) /dev/urandom >"$MODEL/model-$i-of-$SHARDS.safetensors"
		i=$((i + 1))
	done
	printf '{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}\n' >"$MODEL/config.json"
	head -c 2000000 /dev/urandom | od -An -tx1 | head -c 1500000 >"$MODEL/tokenizer.json"
	: >"$MODEL/.done"
fi

STORE=$WORK/store
say "loading the model into $STORE"
# a bundle made by Python's tarfile, streamed into import
"$PY" - "$MODEL" "$REPO" <<'EOF' | "$HM" --store "$STORE" -q import - || die "cannot load the model"
import hashlib, io, json, os, sys, tarfile, time
src, repo = sys.argv[1], sys.argv[2]
files = []
for name in sorted(os.listdir(src)):
    if name.startswith("."):
        continue
    p = os.path.join(src, name)
    h, g = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % os.path.getsize(p))
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            g.update(chunk)
    lfs = name.endswith(".safetensors")
    files.append({"path": name, "size": os.path.getsize(p), "sha256": h.hexdigest(),
                  "git_oid": "" if lfs else g.hexdigest(), "lfs": lfs})
m = {"format": "hubmirror-bundle", "version": 1, "created_at": int(time.time()),
     "repos": [{"type": "model", "id": repo, "revision": hashlib.sha1(repo.encode()).hexdigest(),
                "refs": ["main"], "files": files}]}
out = sys.stdout.buffer
with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
    data = json.dumps(m).encode()
    ti = tarfile.TarInfo("hubmirror-bundle.json")
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))
    for f in files:
        ti = tarfile.TarInfo("blobs/sha256/" + f["sha256"])
        ti.size = f["size"]
        with open(os.path.join(src, f["path"]), "rb") as fh:
            tf.addfile(ti, fh)
EOF

# the same blob files for tar, relative to blobs/sha256
BLOBS=$(cd "$STORE/blobs/sha256" && find . -type f | sed 's|^\./||' | sort)
NBLOBS=$(echo "$BLOBS" | wc -l)
BYTES=$(cd "$STORE/blobs/sha256" && cat $BLOBS | wc -c)
say "$NBLOBS blobs, $BYTES bytes; warming the page cache"
(cd "$STORE/blobs/sha256" && cat $BLOBS >/dev/null)

now() { date +%s.%N; }
# median of the numbers on stdin
median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
# timed CMD...: runs CMD, appends its seconds to $TIMES_FILE
timed() {
	t0=$(now)
	"$@" || die "failed: $*"
	t1=$(now)
	awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", b - a}' >>"$TIMES_FILE"
}

X=$WORK/X.tar
Y=$WORK/Y.tar
for kind in hm_export tar_c hm_import tar_x tar_x_sync; do : >"$WORK/times.$kind"; done
r=1
while [ "$r" -le "$RUNS" ]; do
	say "run $r of $RUNS"
	rm -f "$X"; sync
	TIMES_FILE=$WORK/times.hm_export timed "$HM" --store "$STORE" -q export "$REPO" -o "$X"
	rm -f "$Y"; sync
	TIMES_FILE=$WORK/times.tar_c timed tar -cf "$Y" -C "$STORE/blobs/sha256" $BLOBS
	chmod -R u+w "$WORK/imp" 2>/dev/null || true
	rm -rf "$WORK/imp"; sync
	TIMES_FILE=$WORK/times.hm_import timed "$HM" --store "$WORK/imp" -q import "$X"
	rm -rf "$WORK/ext"; mkdir -p "$WORK/ext"; sync
	TIMES_FILE=$WORK/times.tar_x timed tar -xf "$Y" -C "$WORK/ext"
	chmod -R u+w "$WORK/ext" 2>/dev/null || true
	rm -rf "$WORK/ext"; mkdir -p "$WORK/ext"; sync
	TIMES_FILE=$WORK/times.tar_x_sync timed sh -c 'tar -xf "$1" -C "$2" && sync' sh "$Y" "$WORK/ext"
	r=$((r + 1))
done
"$HM" --store "$WORK/imp" -q verify >/dev/null || die "the imported store does not verify"

med() { median <"$WORK/times.$1"; }
E_HM=$(med hm_export); E_TAR=$(med tar_c); I_HM=$(med hm_import); I_TAR=$(med tar_x); I_TARS=$(med tar_x_sync)
XS=$(wc -c <"$X"); YS=$(wc -c <"$Y")

rc=0
"$PY" - "$OUT/bundle.json" "$BYTES" "$NBLOBS" "$RUNS" "$E_HM" "$E_TAR" "$I_HM" "$I_TAR" "$I_TARS" "$XS" "$YS" <<'EOF' || rc=$?
import json, sys
out, nbytes, nblobs, runs, e_hm, e_tar, i_hm, i_tar, i_tars, xs, ys = sys.argv[1:]
nbytes, nblobs, runs, xs, ys = int(nbytes), int(nblobs), int(runs), int(xs), int(ys)
e_hm, e_tar, i_hm, i_tar, i_tars = map(float, (e_hm, e_tar, i_hm, i_tar, i_tars))
def rate(s): return nbytes / s / 1048576 if s > 0 else 0
rows = [
    ("export (.tar)", e_hm, e_tar),
    ("import (.tar)", i_hm, i_tar),
]
print("\nhubmirror export/import vs tar: %d blobs, %.2f GiB, median of %d run(s)" % (nblobs, nbytes / 2**30, runs))
print("%-16s %12s %12s %8s %8s" % ("case", "hubmirror s", "tar s", "ratio", "target"))
res = {"bytes": nbytes, "blobs": nblobs, "runs": runs, "archive_bytes": {"hubmirror": xs, "tar": ys}, "cases": {}}
ok = True
for name, hm, tar in rows:
    ratio = hm / tar if tar > 0 else float("inf")
    good = ratio <= 1.5
    ok &= good
    print("%-16s %12.2f %12.2f %7.2fx %8s  (%.0f vs %.0f MiB/s)" % (name, hm, tar, ratio, "ok" if good else "MISSED",
                                                                  rate(hm), rate(tar)))
    res["cases"][name.split()[0]] = {"hubmirror_s": hm, "tar_s": tar, "ratio": round(ratio, 3),
                                     "target": 1.5, "met": good}
print("%-16s %12s %12.2f %8s %8s  (tar -xf, then sync: for information)" % ("import+sync", "", i_tars, "", ""))
print("archives: hubmirror %d bytes, tar %d bytes" % (xs, ys))
res["cases"]["import"]["tar_then_sync_s"] = i_tars
res["met"] = ok
with open(out, "w") as fh:
    json.dump(res, fh, indent=2)
print("wrote %s" % out)
sys.exit(0 if ok else 3)
EOF
[ "$rc" = 0 ] || [ "$STRICT" != 1 ] || exit 1
exit 0
