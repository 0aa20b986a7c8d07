#!/bin/sh
# engine.sh - `hubmirror run` (the bundled engine) against llama.cpp
# (node-llama-cpp 3.21.1, tests/js-gguf) on the same GGUF files, in one run.
#
# Model: TinyLlama-1.1B's shape (dim 2048, 22 layers, 32 heads, 4 KV heads,
# FFN 5632, vocab 32000), random BF16 weights (bench/convert.sh's checkpoint,
# shared through CACHE) and a synthetic 32000-token SentencePiece-style BPE
# tokenizer (bench/engine_model.py), converted by `hubmirror convert` to Q8_0
# and to F16 GGUF. For each file and each of two prompts: PROMPT (31 tokens
# with BOS) and PROMPT repeated LONG_REPEAT (17) times (512 tokens with BOS),
# 64 greedy tokens, THREADS (2) threads, context 2048 (hubmirror's default
# for this config) on both sides.
#
# Method:
#   hubmirror: `hubmirror run X.gguf -p PROMPT -n 64 --threads 2 --json`, one
#     process per run; from its timings: prompt tok/s = prompt_tps (prompt
#     tokens, BOS included, run as batches through each layer, and the
#     logits of the last), generation tok/s =
#     (tokens - 1) / gen_s: gen_s holds tokens - 1 forwards (the first token
#     comes from the prompt's logits), so this counts forwards per second the
#     way llama.cpp's side is counted (the JSON's gen_tps, tokens / gen_s, is
#     recorded too). Peak RSS: getrusage(RUSAGE_CHILDREN) of a Python wrapper.
#   llama.cpp: bench/engine_llama.mjs, one process per run, loads the GGUF
#     (mmap), makes a context and times LlamaContextSequence.evaluate's token
#     iterator with performance.now: prompt = call to first token (the whole
#     prompt in one batch + first sampling), generation = first to 64th token
#     (63 single-token evaluations), tok/s = 63 / that.
#   Each side runs RUNS (3) times, the two alternating run by run; medians
#   are reported. Page cache warm (the GGUF is read once before the first run
#   of either side). The load average is recorded, with a warning when it was
#   over the CPU count + 1 (other work on the machine makes the numbers noisy).
#
# Targets: prompt and generation tok/s at least 1.0x llama.cpp's; peak RSS of
# hubmirror run at most the GGUF size + its KV cache (F32, 2 x layers x ctx x
# kv_dim x 4 bytes, allocated lazily: untouched pages cost nothing) + 64 MiB.
# Prints a table and writes bench/out/engine.json.
#
# Disk: about 3.4 GB in WORK (both GGUFs), plus the 2.2 GB checkpoint in CACHE
# the first time.
#
# Environment: WORK (default /tmp/hm-bench-engine, removed unless KEEP=1),
# CACHE (default /tmp/hm-bench-cache, kept), RUNS (3), THREADS (2), TOKENS
# (64), PROMPT, LONG_REPEAT (17; 0: the short prompt only), TYPES ("q8_0 f16"), HUBMIRROR (./hubmirror), JS_GGUF
# (tests/js-gguf, with node_modules: `npm ci` there once), STRICT=1 to exit 1
# when a target is missed. To run it from `make bench`, add
# `sh "$ROOT/bench/engine.sh"` at the end of bench/run.sh.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HM=${HUBMIRROR:-$ROOT/hubmirror}
WORK=${WORK:-/tmp/hm-bench-engine}
CACHE=${CACHE:-/tmp/hm-bench-cache}
KEEP=${KEEP:-0}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
TOKENS=${TOKENS:-64}
TYPES=${TYPES:-q8_0 f16}
PROMPT=${PROMPT:-The quick brown fox jumps over the lazy dog again.}
LONG_REPEAT=${LONG_REPEAT:-17}
LONG=$(i=0; p=$PROMPT; while [ $((i += 1)) -lt "$LONG_REPEAT" ]; do p="$p $PROMPT"; done; echo "$p")
PLENS=short
[ "$LONG_REPEAT" -gt 1 ] && PLENS="short long"
STRICT=${STRICT:-0}
JS=${JS_GGUF:-$ROOT/tests/js-gguf}
CTX=2048
OUT=$ROOT/bench/out
PY=/usr/bin/python3

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }

[ -x "$HM" ] || die "no hubmirror binary at '$HM': run 'make' first"
[ -x "$PY" ] || die "missing $PY"
command -v node >/dev/null 2>&1 || die "missing node (Node.js >= 18) for llama.cpp's side"
[ -f "$JS/node_modules/node-llama-cpp/package.json" ] ||
	die "no node-llama-cpp in $JS/node_modules: run 'npm ci' in tests/js-gguf"
case "$RUNS" in '' | *[!0-9]* | 0) die "RUNS must be a positive integer" ;; esac
case "$TOKENS" in '' | *[!0-9]* | 0 | 1) die "TOKENS must be an integer > 1" ;; esac

case "$WORK" in /*/*) ;; *) die "WORK must be an absolute path below / (got '$WORK')" ;; esac
if [ -e "$WORK" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ] && [ ! -f "$WORK/.hm-bench" ]; then
	die "'$WORK' exists and was not made by bench/engine.sh: refusing to wipe it"
fi
rm -rf "$WORK"
mkdir -p "$WORK" "$CACHE" "$OUT" && : >"$WORK/.hm-bench" || die "cannot create '$WORK'"
if [ "$KEEP" = 1 ]; then
	trap 'say "kept $WORK"' EXIT
else
	trap 'rm -rf "$WORK"' EXIT
fi

# disk: 1.2 GB (Q8_0) + 2.2 GB (F16) in WORK, 2.2 GB in CACHE once
need=3600000
[ -f "$CACHE/tinyllama-shape-bf16/.done" ] || need=$((need + 2300000))
avail=$(df -Pk "$WORK" | awk 'NR == 2 {print $4}')
[ "$avail" -ge "$need" ] || die "$WORK has $((avail / 1024)) MiB free, needs about $((need / 1024)) MiB"

# snapshot the binary: a rebuild in the tree mid-run must not break the bench
cp "$HM" "$WORK/hubmirror" || die "cannot copy '$HM'"
HM=$WORK/hubmirror

MODEL=$($PY "$ROOT/bench/engine_model.py" "$CACHE") || die "cannot make the model in $CACHE"

for t in $TYPES; do
	say "converting to $t"
	"$HM" --store "$WORK/store" -q convert "$MODEL" --to gguf --type "$t" -o "$WORK/m-$t.gguf" --json \
		>"$WORK/convert.$t.json" || die "convert --type $t failed"
done

# hmrun TYPE I LEN: one `hubmirror run`, JSON to $WORK/hm.TYPE.I.json, peak
# RSS (KiB) to $WORK/hm.TYPE.I.rss (TYPE here is "q8_0.short" and so on)
hmrun() {
	$PY - "$WORK/hm.$1.$2" "$HM" run "$WORK/m-${1%.*}.gguf" -p "$3" -n "$TOKENS" --threads "$THREADS" --json <<'EOF'
import resource, subprocess, sys
base, cmd = sys.argv[1], sys.argv[2:]
with open(base + ".json", "wb") as out, open(base + ".err", "wb") as err:
    rc = subprocess.call(cmd, stdout=out, stderr=err)
open(base + ".rss", "w").write("%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)
EOF
}

LOAD0=$(cut -d' ' -f1 /proc/loadavg)
CASES=""
for ty in $TYPES; do
	cat "$WORK/m-$ty.gguf" >/dev/null # warm the page cache for both sides alike
	for pl in $PLENS; do
	t=$ty.$pl
	CASES="$CASES $t"
	text=$PROMPT
	[ "$pl" = long ] && text=$LONG
	for i in $(seq "$RUNS"); do
		# the two sides alternate, run by run, so that a change in the
		# machine's load mid-bench falls on both
		hmrun "$t" "$i" "$text" || { cat "$WORK/hm.$t.$i.err" >&2; die "hubmirror run ($t) failed"; }
		node "$ROOT/bench/engine_llama.mjs" "$text" "$TOKENS" "$THREADS" 1 "$CTX" "$WORK/m-$ty.gguf" \
			>"$WORK/llama.$t.$i.json" 2>"$WORK/llama.$t.$i.err" ||
			{ cat "$WORK/llama.$t.$i.err" >&2; die "node-llama-cpp ($t) failed"; }
		say "$t run $i: $($PY -c '
import json, sys
j, l = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
t, r = j["timings"], l["runs"][0]
print("hubmirror prompt %.2f gen %.2f tok/s, llama.cpp prompt %.2f gen %.2f tok/s (%d prompt tokens, load %s)" % (
    t["prompt_tps"], (len(j["tokens"]) - 1) / t["gen_s"], l["prompt_tokens"] / r["prompt_s"],
    (r["ntok"] - 1) / r["gen_s"], j["prompt_tokens"], open("/proc/loadavg").read().split()[0]))' \
			"$WORK/hm.$t.$i.json" "$WORK/llama.$t.$i.json")"
	done
	done
done
LOAD1=$(cut -d' ' -f1 /proc/loadavg)

$PY - "$WORK" "$OUT/engine.json" "$RUNS" "$THREADS" "$TOKENS" "$CTX" "$PROMPT" "$STRICT" "$LOAD0" "$LOAD1" $CASES <<'EOF'
import glob, json, os, statistics, sys
work, out, runs, threads, ntok, ctx, prompt, strict, load0, load1 = sys.argv[1:11]
types = sys.argv[11:]
runs, threads, ntok, ctx = int(runs), int(threads), int(ntok), int(ctx)
L, KVD = 22, 4 * 64
kv_bytes = 2 * L * ctx * KVD * 4
MiB = 1048576.0
med = statistics.median
res = {"model": "TinyLlama-1.1B shape (random BF16 weights, synthetic 32000-token BPE)",
       "prompt": prompt, "threads": threads, "tokens": ntok, "ctx": ctx, "runs": runs, "cpus": os.cpu_count(),
       "loadavg_start": float(load0), "loadavg_end": float(load1),
       "method": {"hubmirror": "hubmirror run --json: prompt_tps; generation (tokens-1)/gen_s; peak RSS getrusage",
                  "llama.cpp": "node-llama-cpp evaluate(): prompt = call to first token (one batch + first sample); "
                               "generation = (N-1)/(first to Nth token); one node process per run"},
       "cases": {}}
rows, miss = [], []
for t in types:
    hm = [json.load(open("%s/hm.%s.%d.json" % (work, t, i))) for i in range(1, runs + 1)]
    rss = max(int(open("%s/hm.%s.%d.rss" % (work, t, i)).read()) for i in range(1, runs + 1))
    lr = [json.load(open("%s/llama.%s.%d.json" % (work, t, i))) for i in range(1, runs + 1)]
    ll = {"prompt_tokens": lr[0]["prompt_tokens"], "load_s": med(x["load_s"] for x in lr),
          "max_rss_kib": max(x["max_rss_kib"] for x in lr), "runs": [x["runs"][0] for x in lr]}
    size = os.path.getsize("%s/m-%s.gguf" % (work, t.split(".")[0]))
    hm_gen = med((len(j["tokens"]) - 1) / j["timings"]["gen_s"] for j in hm)
    hm_gen_json = med(j["timings"]["gen_tps"] for j in hm)
    hm_pp = med(j["timings"]["prompt_tps"] for j in hm)
    hm_load = med(j["timings"]["load_s"] for j in hm)
    ll_gen = med((r["ntok"] - 1) / r["gen_s"] for r in ll["runs"])
    ll_pp = med(ll["prompt_tokens"] / r["prompt_s"] for r in ll["runs"])
    rss_target = size + kv_bytes + 64 * MiB
    c = {"gguf_bytes": size, "kv_cache_bytes": kv_bytes,
         "hubmirror": {"gen_tps": hm_gen, "gen_tps_json": hm_gen_json, "prompt_tps": hm_pp, "load_s": hm_load,
                       "prompt_tokens": hm[0]["prompt_tokens"], "generated": [len(j["tokens"]) for j in hm],
                       "peak_rss_bytes": rss * 1024, "simd": hm[0].get("simd"), "threads": hm[0].get("threads"),
                       "gen_tps_runs": [(len(j["tokens"]) - 1) / j["timings"]["gen_s"] for j in hm],
                       "prompt_tps_runs": [j["timings"]["prompt_tps"] for j in hm]},
         "llama_cpp": {"gen_tps": ll_gen, "prompt_tps": ll_pp, "load_s": ll["load_s"],
                       "prompt_tokens": ll["prompt_tokens"], "generated": [r["ntok"] for r in ll["runs"]],
                       "node_max_rss_bytes": ll["max_rss_kib"] * 1024,
                       "gen_tps_runs": [(r["ntok"] - 1) / r["gen_s"] for r in ll["runs"]],
                       "prompt_tps_runs": [ll["prompt_tokens"] / r["prompt_s"] for r in ll["runs"]]},
         "gen_ratio": hm_gen / ll_gen, "gen_target": 1.0, "prompt_ratio": hm_pp / ll_pp, "prompt_target": 1.0,
         "rss_target_bytes": rss_target,
         # greedy tokens the two agree on before the first difference (random
         # weights give near ties: a difference is no error by itself)
         "same_prefix_tokens": next((k for k, (a, b) in enumerate(zip(hm[0]["tokens"], ll["runs"][0]["tokens"]))
                                     if a != b), min(len(hm[0]["tokens"]), len(ll["runs"][0]["tokens"])))}
    c["gen_pass"] = c["gen_ratio"] >= 1.0
    c["prompt_pass"] = c["prompt_ratio"] >= 1.0
    c["rss_pass"] = rss * 1024 <= rss_target
    res["cases"][t] = c
    if not c["gen_pass"]:
        miss.append(t + " generation")
    if not c["prompt_pass"]:
        miss.append(t + " prompt")
    if not c["rss_pass"]:
        miss.append(t + " RSS")
    T = "%s %d-tok" % (t.split(".")[0].upper(), hm[0]["prompt_tokens"])
    rows.append(("%s generation tok/s" % T, "%.2f" % hm_gen, "%.2f" % ll_gen, "%.2f" % c["gen_ratio"], ">= 1.00x",
                 "pass" if c["gen_pass"] else "FAIL"))
    rows.append(("%s prompt tok/s" % T, "%.2f" % hm_pp, "%.2f" % ll_pp, "%.2f" % c["prompt_ratio"], ">= 1.00x",
                 "pass" if c["prompt_pass"] else "FAIL"))
    rows.append(("%s peak RSS MiB" % T, "%.0f" % (rss / 1024.0), "%.0f*" % (ll["max_rss_kib"] / 1024.0),
                 "%.2f" % (rss * 1024 / size), "<= %.0f" % (rss_target / MiB), "pass" if c["rss_pass"] else "FAIL"))
    # no target: what the weights cost before the first token (hubmirror: model
    # open and state, the weights moved into huge-page memory; llama.cpp: loadModel)
    rows.append(("%s load s" % T, "%.2f" % hm_load, "%.2f" % ll["load_s"],
                 "%.2f" % (hm_load / ll["load_s"]) if ll["load_s"] > 0 else "-", "-", "info"))
res["missed"] = miss
json.dump(res, open(out, "w"), indent=2)
w = [max(len(r[i]) for r in rows + [("case", "hubmirror", "llama.cpp", "ratio", "target", "result")]) for i in range(6)]
fmt = "%-*s | %*s | %*s | %*s | %-*s | %s"
print(fmt % (w[0], "case", w[1], "hubmirror", w[2], "llama.cpp", w[3], "ratio", w[4], "target", "result"))
for r in rows:
    print(fmt % (w[0], r[0], w[1], r[1], w[2], r[2], w[3], r[3], w[4], r[4], r[5]))
c0 = res["cases"][types[0]]
print("%d threads, prompts of %s tokens (BOS included; llama.cpp %s), %d generated, median of %d runs, ctx %d."
      % (threads, "/".join(str(c["hubmirror"]["prompt_tokens"]) for c in res["cases"].values()),
         "/".join(str(c["llama_cpp"]["prompt_tokens"]) for c in res["cases"].values()), ntok, runs, ctx))
print("generation = forwards/s after the first token on both sides ((N-1)/time); prompt: both sides run it as")
print("batches (time to the first token). RSS ratio is peak RSS / GGUF size; its target is the")
print("GGUF + hubmirror's F32 KV cache (%.0f MiB at ctx %d) + 64 MiB. * node's whole-process max RSS (node-llama-cpp)."
      % (kv_bytes / MiB, ctx))
# the bench's own THREADS threads (and the conversions before the first
# sample) count in the 1-minute load average: warn past the CPUs + 1
if max(float(load0), float(load1)) > os.cpu_count() + 1:
    print("WARNING: load average %s at the start, %s at the end, on %d CPUs: other work shared the CPUs and the"
          " numbers are noisy (llama.cpp's spinning threads suffer most)" % (load0, load1, os.cpu_count()))
if miss:
    print("targets missed: %s" % ", ".join(miss))
sys.exit(1 if miss and strict == "1" else 0)
EOF
