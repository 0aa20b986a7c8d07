#!/bin/sh
# convert.sh - `hubmirror convert` of a TinyLlama-1.1B-shaped checkpoint
# (dim 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632, vocab 32000; BF16
# safetensors, about 2.2 GB of random weights, no tokenizer) to F16 and to
# Q8_0 GGUF, against `cp` of the same safetensors file in the same run.
#
# Every tool runs RUNS times (outputs deleted between runs, page cache left
# warm: the source is read once first); the median is reported with the peak
# RSS of the conversions (getrusage of the child). Targets: F16 within 1.5x of cp,
# Q8_0 within 2.5x, peak RSS under 256 MiB. Prints a table and writes
# bench/out/convert.json.
#
# hubmirror's conversion includes what cp does not do: a check of every
# value against the source as it is converted, a read-back of the written
# header, and an fsync of the output (its disk writes are started as it is
# written). `cp+sync` (cp then sync of the file) is reported too for the
# durability part. A directory's conversion is not hashed unless asked
# (--sha256); a stored repo's always is (content addressing), so the
# `+sha256` rows give what a conversion into the store costs: a thread
# reads the file back behind the writer and hashes it.
# Environment: WORK (default /tmp/hm-bench-convert, removed unless KEEP=1),
# CACHE (default /tmp/hm-bench-cache: the generated checkpoint, kept),
# RUNS (3), HUBMIRROR (./hubmirror), STRICT=1 to exit 1 when a target is missed.
# To run it from `make bench`, add `sh "$ROOT/bench/convert.sh"` at the end of
# bench/run.sh (it needs nothing run.sh sets up).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HM=${HUBMIRROR:-$ROOT/hubmirror}
WORK=${WORK:-/tmp/hm-bench-convert}
CACHE=${CACHE:-/tmp/hm-bench-cache}
KEEP=${KEEP:-0}
RUNS=${RUNS:-3}
STRICT=${STRICT:-0}
OUT=$ROOT/bench/out
PY=/usr/bin/python3

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }

[ -x "$HM" ] || die "no $HM (run make)"
mkdir -p "$CACHE" "$OUT"
rm -rf "$WORK"
mkdir -p "$WORK"
[ "$KEEP" = 1 ] || trap 'rm -rf "$WORK"' EXIT

# the checkpoint (made once, kept in CACHE; bench/engine.sh shares it)
MODEL=$($PY "$ROOT/bench/engine_model.py" --weights-only "$CACHE") || die "cannot make the checkpoint in $CACHE"
SRC=$MODEL/model.safetensors
BYTES=$(stat -c %s "$SRC")
cat "$SRC" >/dev/null   # warm the page cache for every contender alike

# timed NAME CMD... : runs CMD, appends its wall seconds to $WORK/NAME.s and
# its peak RSS (KiB) to $WORK/NAME.rss; its output goes to $WORK/log.NAME
timed() {
	name=$1
	shift
	$PY - "$WORK" "$name" "$@" <<'EOF' || { cat "$WORK/log.$name" >&2; die "$name failed"; }
import resource, subprocess, sys, time
work, name, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
t0 = time.monotonic()
with open("%s/log.%s" % (work, name), "wb") as log:
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
dt = time.monotonic() - t0
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open("%s/%s.s" % (work, name), "a").write("%f\n" % dt)
open("%s/%s.rss" % (work, name), "a").write("%d\n" % rss)
sys.exit(rc)
EOF
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for i in $(seq "$RUNS"); do
	rm -f "$WORK"/out.*
	sync
	timed cp cp "$SRC" "$WORK/out.cp"
	rm -f "$WORK/out.cp"
	sync
	timed cpsync sh -c 'cp "$1" "$2" && sync "$2"' sh "$SRC" "$WORK/out.cp"
	for t in f16 q8_0; do
		for h in "" sha; do
			rm -f "$WORK"/out.*
			sync
			timed "$t$h" "$HM" --store "$WORK/store" convert "$MODEL" --type "$t" -o "$WORK/out.$t.gguf" \
				--json ${h:+--sha256}
			cp "$WORK/log.$t$h" "$WORK/json.$t$h"
		done
	done
	say "run $i: cp $(tail -1 "$WORK/cp.s")s, cp+sync $(tail -1 "$WORK/cpsync.s")s, f16 $(tail -1 "$WORK/f16.s")s" \
	    "(+sha256 $(tail -1 "$WORK/f16sha.s")s), q8_0 $(tail -1 "$WORK/q8_0.s")s (+sha256 $(tail -1 "$WORK/q8_0sha.s")s)"
done

CP=$(median <"$WORK/cp.s")
CPS=$(median <"$WORK/cpsync.s")
NPROC=$(nproc)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
$PY - "$OUT/convert.json" "$BYTES" "$CP" "$CPS" "$NPROC" "$WORK" "$STRICT" "$LOAD" <<'EOF'
import json, statistics, sys
out, size = sys.argv[1], int(sys.argv[2])
cp, cps = float(sys.argv[3]), float(sys.argv[4])
nproc, work, strict, load = int(sys.argv[5]), sys.argv[6], sys.argv[7] == "1", sys.argv[8]
r = {"model": "TinyLlama-1.1B shape, BF16 safetensors (random weights)", "source_bytes": size, "cpus": nproc,
     "load_average_after": load, "cp_s": cp, "cp_sync_s": cps, "rss_target_mib": 256}
targets = {"f16": 1.5, "q8_0": 2.5}
for case in ("f16", "f16sha", "q8_0", "q8_0sha"):
    secs = [float(x) for x in open("%s/%s.s" % (work, case))]
    rss = max(int(x) for x in open("%s/%s.rss" % (work, case)))
    j = json.load(open("%s/json.%s" % (work, case)))
    t = statistics.median(secs)
    # the disk and page cache of a shared machine drift between runs: each
    # run's ratio is taken against the cp of the same run, and their median
    # is the headline (the ratio of medians is kept too)
    cps_runs = [float(x) for x in open("%s/cp.s" % work)]
    cpsync_runs = [float(x) for x in open("%s/cpsync.s" % work)]
    per_run = [a / b for a, b in zip(secs, cps_runs)]
    # a conservative baseline too: the faster of cp and cp+sync in the run
    # (cp+sync does more than cp: when it is faster, cp's time was noise)
    per_run_best = [a / min(b, c) for a, b, c in zip(secs, cps_runs, cpsync_runs)]
    r[case] = {"seconds": t, "runs": secs, "ratio_vs_cp": statistics.median(per_run), "ratio_of_medians": t / cp,
               "ratios_per_run": per_run, "ratio_vs_best_cp": statistics.median(per_run_best),
               "best_cp_per_run": [min(b, c) for b, c in zip(cps_runs, cpsync_runs)], "ratio_vs_cp_sync": t / cps,
               "target": targets[case.replace("sha", "")], "peak_rss_mib": rss / 1024,
               "sha256": j.get("sha256") is not None, "output_bytes": j["size"]}
json.dump(r, open(out, "w"), indent=2)
print("%-14s %8s %8s %9s %10s %10s" % ("case", "seconds", "vs cp*", "vs best**", "vs cp+sync", "peak RSS"))
print("%-14s %8.2f %8s %9s %10s %10s" % ("cp", cp, "1.00", "", "", ""))
print("%-14s %8.2f %8s %9s %10s %10s" % ("cp+sync", cps, "%.2f" % (cps / cp), "", "1.00", ""))
for k, label in (("f16", "f16"), ("f16sha", "f16 +sha256"), ("q8_0", "q8_0"), ("q8_0sha", "q8_0 +sha256")):
    x = r[k]
    print("%-14s %8.2f %8.2f %9.2f %10.2f %6.0f MiB   (target %.1fx of cp)" % (
        label, x["seconds"], x["ratio_vs_cp"], x["ratio_vs_best_cp"], x["ratio_vs_cp_sync"], x["peak_rss_mib"],
        x["target"]))
print("(%d CPUs, load average after the run %s; medians of %d runs; * median of each run's ratio to"
      " that run's cp; ** the same against the faster of that run's cp and cp+sync; cp runs: %s;"
      " cp+sync runs: %s)" % (nproc, load, len(cps_runs), " ".join("%.2f" % x for x in cps_runs),
                             " ".join("%.2f" % x for x in cpsync_runs)))
miss = [k for k in ("f16", "q8_0") if r[k]["ratio_vs_best_cp"] > r[k]["target"] or r[k]["peak_rss_mib"] >= 256]
if miss:
    print("targets missed: %s" % ", ".join(miss))
sys.exit(1 if miss and strict else 0)
EOF
