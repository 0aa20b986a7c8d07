#!/bin/sh
# run.sh - hubmirror pull against curl and aria2c on loopback, in one run.
#
# A static Hub (API JSON + files, made by bench/mkhub.py) is served by a
# private nginx: the hub on 127.0.0.1, LFS blobs through a 302 to a "CDN"
# server block on 127.0.0.2 (as the real Hub does), a throttled CDN on a
# third port. Cases:
#   1. one 2 GiB LFS file, unthrottled: hubmirror (verified) vs curl, aria2c
#   2. the same file at nginx limit_rate 20m per connection: 16 connections
#   3. 2,000 regular 16 KiB files: hubmirror --connections 16 vs aria2c -j16
#   4. hubmirror's peak RSS during case 1
# Each tool runs RUNS times per case (outputs deleted and `sync` between
# runs, page cache left alone); the median is reported. Prints a table and
# writes bench/out/results.json.
#
# Environment: WORK (default /tmp/hm-bench, removed unless KEEP=1),
# CACHE (default /tmp/hm-bench-cache: the random big file, kept across runs),
# RUNS (3), BIG_MIB (2048), NSMALL (2000), RATE (20m), HUBMIRROR (./hubmirror),
# STRICT=1 to exit 1 when a target is missed.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HM=${HUBMIRROR:-$ROOT/hubmirror}
WORK=${WORK:-/tmp/hm-bench}
CACHE=${CACHE:-/tmp/hm-bench-cache}
KEEP=${KEEP:-0}
RUNS=${RUNS:-3}
BIG_MIB=${BIG_MIB:-2048}
NSMALL=${NSMALL:-2000}
SMALL_SIZE=16384
RATE=${RATE:-20m}
STRICT=${STRICT:-0}
OUT=$ROOT/bench/out
PY=/usr/bin/python3
TIME=/usr/bin/time

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }

# ---------- tools ----------
[ -x "$HM" ] || die "no hubmirror binary at '$HM': run 'make' first"
if [ ! -x "$TIME" ]; then
	if [ "$(id -u)" = 0 ]; then
		apt-get install -y --no-install-recommends time >&2 || die "cannot install package 'time'"
	else
		die "missing $TIME: sudo apt-get install time"
	fi
fi
for t in nginx aria2c curl sha256sum awk sort seq; do
	command -v "$t" >/dev/null 2>&1 || die "missing tool '$t' (Debian: nginx aria2 curl coreutils)"
done
[ -x "$PY" ] || die "missing $PY"
case "$RUNS" in '' | *[!0-9]* | 0) die "RUNS must be a positive integer" ;; esac

BIG_BYTES=$((BIG_MIB * 1048576))
mkdir -p "$CACHE" "$OUT"
# wipe only a work dir this script made (it leaves a marker file)
case "$WORK" in /*/*) ;; *) die "WORK must be an absolute path below / (got '$WORK')" ;; esac
if [ -e "$WORK" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ] && [ ! -f "$WORK/.hm-bench" ]; then
	die "'$WORK' exists and was not made by bench/run.sh: refusing to wipe it"
fi
rm -rf "$WORK"
mkdir -p "$WORK" && : >"$WORK/.hm-bench" || die "cannot create '$WORK'"

# snapshot the binary: a rebuild in the tree mid-run must not break the bench
cp "$HM" "$WORK/hubmirror" || die "cannot copy '$HM'"
HM=$WORK/hubmirror

# ---------- cleanup ----------
NGINX_PID=""
cleanup() {
	if [ -n "$NGINX_PID" ]; then
		kill "$NGINX_PID" 2>/dev/null || true
		wait "$NGINX_PID" 2>/dev/null || true
	fi
	if [ "$KEEP" = 1 ]; then
		say "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------- disk ----------
need_kib=$((BIG_MIB * 1024 * 2 + 262144))
[ -f "$CACHE/big-${BIG_MIB}MiB.bin" ] || need_kib=$((need_kib + BIG_MIB * 1024))
avail_kib=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
[ "$avail_kib" -ge "$need_kib" ] ||
	die "not enough disk under '$WORK' ($((avail_kib / 1024)) MiB free, $((need_kib / 1024)) MiB needed); set WORK/CACHE"

# ---------- data ----------
BIG=$CACHE/big-${BIG_MIB}MiB.bin
if [ ! -f "$BIG" ] || [ "$(stat -c %s "$BIG")" != "$BIG_BYTES" ]; then
	say "generating $BIG ($BIG_MIB MiB of random data, once)"
	head -c "$BIG_BYTES" /dev/urandom >"$BIG.tmp" && mv "$BIG.tmp" "$BIG" || die "cannot write '$BIG'"
fi

now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

# sha256sum of the big file: the verification cost (the file is page-cached)
cat "$BIG" >/dev/null
t0=$(now)
BIG_SHA=$(sha256sum "$BIG" | awk '{print $1}')
t1=$(now)
SHA_SECS=$(secs "$t0" "$t1")
say "sha256sum of $BIG_MIB MiB: ${SHA_SECS}s"
OSSL_SECS=null
if command -v openssl >/dev/null 2>&1; then
	t0=$(now)
	openssl dgst -sha256 "$BIG" >/dev/null
	t1=$(now)
	OSSL_SECS=$(secs "$t0" "$t1")
	say "openssl dgst -sha256 of $BIG_MIB MiB: ${OSSL_SECS}s"
fi

ports=$($PY -c '
import socket
ss = []
for host in ("127.0.0.1", "127.0.0.2", "127.0.0.2"):
    s = socket.socket(); s.bind((host, 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))')
set -- $ports
HUB_PORT=$1 CDN_PORT=$2 SLOW_PORT=$3
HUB=http://127.0.0.1:$HUB_PORT

say "laying out the static hub under $WORK"
$PY "$ROOT/bench/mkhub.py" "$WORK" "$BIG" "$BIG_SHA" "$NSMALL" "$SMALL_SIZE" \
	"$HUB_PORT" "$CDN_PORT" "$SLOW_PORT" "$RATE" || die "mkhub.py failed"
BIG_URL=$(cat "$WORK/big.url")
SLOW_URL=$(cat "$WORK/big-slow.url")

# ---------- nginx ----------
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -t \
	>"$WORK/nginx-t.log" 2>&1 || { cat "$WORK/nginx-t.log" >&2; die "bad nginx config"; }
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
	>>"$WORK/nginx/error.log" 2>&1 &
NGINX_PID=$!
i=0
until curl -sf -o /dev/null "$HUB/api/models/bench/big/revision/main" &&
	curl -sf -o /dev/null -r 0-0 "http://127.0.0.2:$SLOW_PORT/lfs/$BIG_SHA"; do
	i=$((i + 1))
	if [ "$i" -gt 50 ] || ! kill -0 "$NGINX_PID" 2>/dev/null; then
		cat "$WORK/nginx/error.log" >&2
		die "nginx did not come up"
	fi
	sleep 0.1
done
say "nginx up: hub $HUB, cdn 127.0.0.2:$CDN_PORT, throttled cdn 127.0.0.2:$SLOW_PORT ($RATE/conn)"

# ---------- measuring ----------
SAMPLES=$WORK/samples.tsv
: >"$SAMPLES"
DL=$WORK/dl
STORE=$WORK/store

# timed CASE TOOL RUN CMD...: runs CMD under /usr/bin/time, records wall
# seconds and peak RSS (KiB); a failing command ends the benchmark.
timed() {
	c=$1 tool=$2 run=$3
	shift 3
	t0=$(now)
	if ! "$TIME" -f %M -o "$WORK/rss" "$@" >"$WORK/cmd.out" 2>&1; then
		cat "$WORK/cmd.out" >&2
		die "case $c: $tool failed (run $run): $*"
	fi
	t1=$(now)
	T=$(secs "$t0" "$t1")
	RSS=$(tail -n 1 "$WORK/rss")
	printf '%s\t%s\t%s\t%s\t%s\n' "$c" "$tool" "$run" "$T" "$RSS" >>"$SAMPLES"
	say "  case $c run $run: $tool ${T}s, peak RSS $((RSS / 1024)) MiB"
}

# median CASE TOOL [max]: median seconds (or the max RSS in KiB)
median() {
	if [ "${3:-}" = rss ]; then
		awk -F'\t' -v c="$1" -v t="$2" '$1 == c && $2 == t && $5 > m { m = $5 } END { print m + 0 }' "$SAMPLES"
		return
	fi
	awk -F'\t' -v c="$1" -v t="$2" '$1 == c && $2 == t { print $4 }' "$SAMPLES" | sort -n |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

blob_path() { echo "$STORE/blobs/sha256/$(echo "$1" | cut -c1-2)/$1"; }

check_big_blob() { # RUN: the blob is in the store with the right size (and digest, run 1)
	b=$(blob_path "$BIG_SHA")
	[ -f "$b" ] || die "hubmirror exited 0 but blob $BIG_SHA is not in the store"
	[ "$(stat -c %s "$b")" = "$BIG_BYTES" ] || die "hubmirror's blob has the wrong size"
	if [ "$1" = 1 ]; then
		[ "$(sha256sum "$b" | awk '{print $1}')" = "$BIG_SHA" ] || die "hubmirror's blob has the wrong sha256"
	fi
}

check_file() { # FILE SIZE
	[ -f "$1" ] && [ "$(stat -c %s "$1")" = "$2" ] || die "download '$1' is missing or has the wrong size"
}

reset() { rm -rf "$STORE" "$DL"; mkdir -p "$DL"; sync; }

ARIA="aria2c -q --allow-overwrite=true --auto-file-renaming=false --console-log-level=error"

say "case 1: one $BIG_MIB MiB LFS file, unthrottled ($RUNS runs each, median)"
for r in $(seq 1 "$RUNS"); do
	reset
	timed 1 hubmirror "$r" "$HM" pull bench/big --endpoint "$HUB" --store "$STORE" -q
	check_big_blob "$r"
	reset
	timed 1 curl "$r" curl -sf -L -o "$DL/big.bin" "$BIG_URL"
	check_file "$DL/big.bin" "$BIG_BYTES"
	reset
	timed 1 aria2c "$r" $ARIA -x16 -s16 -d "$DL" -o big.bin "$BIG_URL"
	check_file "$DL/big.bin" "$BIG_BYTES"
done

say "case 2: the same file at limit_rate $RATE per connection, 16 connections"
for r in $(seq 1 "$RUNS"); do
	reset
	timed 2 hubmirror "$r" "$HM" pull bench/big-slow --connections 16 --endpoint "$HUB" --store "$STORE" -q
	check_big_blob 0
	reset
	timed 2 aria2c "$r" $ARIA -x16 -s16 -k1M -d "$DL" -o big.bin "$SLOW_URL"
	check_file "$DL/big.bin" "$BIG_BYTES"
done

say "case 3: $NSMALL regular files of $SMALL_SIZE bytes"
for r in $(seq 1 "$RUNS"); do
	reset
	timed 3 hubmirror "$r" "$HM" pull bench/small --connections 16 --endpoint "$HUB" --store "$STORE" -q
	missing=0
	while read -r s; do
		[ -f "$(blob_path "$s")" ] || missing=$((missing + 1))
	done <"$WORK/small.sha256"
	[ "$missing" = 0 ] || die "hubmirror exited 0 but $missing of $NSMALL small blobs are missing"
	reset
	timed 3 aria2c "$r" $ARIA -j16 -i "$WORK/small.aria2" -d "$DL"
	n=$(find "$DL" -type f -name '*.bin' | wc -l)
	[ "$n" = "$NSMALL" ] || die "aria2c wrote $n of $NSMALL files"
done
reset

# ---------- results ----------
hm1=$(median 1 hubmirror) curl1=$(median 1 curl) ar1=$(median 1 aria2c)
hm2=$(median 2 hubmirror) ar2=$(median 2 aria2c)
hm3=$(median 3 hubmirror) ar3=$(median 3 aria2c)
rss1=$(median 1 hubmirror rss) rss2=$(median 2 hubmirror rss) rss3=$(median 3 hubmirror rss)
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
mibs() { awk -v s="$1" -v b="$BIG_BYTES" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }
tp_hm2=$(mibs "$hm2") tp_ar2=$(mibs "$ar2")
r1c=$(calc "$hm1 / $curl1") r1a=$(calc "$hm1 / $ar1")
VERIFY_SECS=$SHA_SECS VERIFY_TOOL=sha256sum
[ "$OSSL_SECS" = null ] || VERIFY_SECS=$OSSL_SECS VERIFY_TOOL=openssl
r1s=$(calc "$hm1 / ($curl1 + $VERIFY_SECS)")
r2=$(calc "$tp_hm2 / $tp_ar2") r3=$(calc "$hm3 / $ar3")
rss1_mib=$(calc "$rss1 / 1024")
pf() { awk "BEGIN { print ($1) ? \"pass\" : \"FAIL\" }"; }
p1=$(pf "$r1c <= 1.3") p2=$(pf "$r2 >= 1.0") p3=$(pf "$r3 <= 1.0") p4=$(pf "$rss1_mib <= 64")

echo
echo "hubmirror benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, loopback nginx, median of $RUNS runs each (outputs deleted + sync between runs, page cache warm)"
fmt='%-42s | %-12s | %-22s | %-6s | %-8s | %s\n'
printf "$fmt" "case" "hubmirror" "peer" "ratio" "target" "pass/fail"
printf "$fmt" "------------------------------------------" "------------" "----------------------" "------" "--------" "---------"
printf "$fmt" "1 ${BIG_MIB} MiB LFS file, unthrottled (s)" "${hm1}" "curl ${curl1}" "$r1c" "<= 1.3" "$p1"
printf "$fmt" "1 ${BIG_MIB} MiB LFS file, unthrottled (s)" "${hm1}" "aria2c -x16 ${ar1}" "$r1a" "-" "info"
printf "$fmt" "1 ... vs curl, then $VERIFY_TOOL (s)" "${hm1}" "curl+verify $(calc "$curl1 + $VERIFY_SECS")" "$r1s" "-" "info"
printf "$fmt" "2 limit_rate $RATE/conn, 16 conns (MiB/s)" "${tp_hm2}" "aria2c -k1M ${tp_ar2}" "$r2" ">= 1.0" "$p2"
printf "$fmt" "3 $NSMALL x 16 KiB files, 16 conns (s)" "${hm3}" "aria2c -j16 ${ar3}" "$r3" "<= 1.0" "$p3"
printf "$fmt" "4 peak RSS during case 1 (MiB)" "${rss1_mib}" "-" "-" "<= 64" "$p4"
ossl=""
[ "$OSSL_SECS" = null ] || ossl=", openssl dgst -sha256 ${OSSL_SECS}s ($(mibs "$OSSL_SECS") MiB/s)"
echo "context: sha256sum of the ${BIG_MIB} MiB file ${SHA_SECS}s ($(mibs "$SHA_SECS") MiB/s)$ossl;" \
	"hubmirror peak RSS case 2 $((rss2 / 1024)) MiB, case 3 $((rss3 / 1024)) MiB;" \
	"case 1 throughput hubmirror $(mibs "$hm1") MiB/s, curl $(mibs "$curl1") MiB/s, aria2c $(mibs "$ar1") MiB/s"
echo "note: hubmirror hashes and fsyncs what it stores; curl and aria2c neither verify nor fsync"

{
	printf '{\n  "date": "%s",\n  "cpus": %s,\n  "runs": %s,\n  "statistic": "median",\n' \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$RUNS"
	printf '  "big_bytes": %s,\n  "small_files": %s,\n  "small_bytes": %s,\n  "rate": "%s",\n' \
		"$BIG_BYTES" "$NSMALL" "$SMALL_SIZE" "$RATE"
	printf '  "sha256sum_seconds": %s,\n  "openssl_sha256_seconds": %s,\n' "$SHA_SECS" "$OSSL_SECS"
	printf '  "cases": [\n'
	printf '    {"case": 1, "name": "big_unthrottled", "unit": "s", "hubmirror": %s, "curl": %s, "aria2c": %s, "ratio_vs_curl": %s, "ratio_vs_aria2c": %s, "target": "ratio_vs_curl <= 1.3", "pass": %s},\n' \
		"$hm1" "$curl1" "$ar1" "$r1c" "$r1a" "$([ "$p1" = pass ] && echo true || echo false)"
	printf '    {"case": 2, "name": "big_throttled", "unit": "MiB/s", "hubmirror": %s, "aria2c": %s, "hubmirror_s": %s, "aria2c_s": %s, "ratio": %s, "target": "ratio >= 1.0", "pass": %s},\n' \
		"$tp_hm2" "$tp_ar2" "$hm2" "$ar2" "$r2" "$([ "$p2" = pass ] && echo true || echo false)"
	printf '    {"case": 3, "name": "small_files", "unit": "s", "hubmirror": %s, "aria2c": %s, "ratio": %s, "target": "ratio <= 1.0", "pass": %s},\n' \
		"$hm3" "$ar3" "$r3" "$([ "$p3" = pass ] && echo true || echo false)"
	printf '    {"case": 4, "name": "peak_rss_case1", "unit": "MiB", "hubmirror": %s, "target": "<= 64", "pass": %s}\n' \
		"$rss1_mib" "$([ "$p4" = pass ] && echo true || echo false)"
	printf '  ],\n  "samples": [\n'
	awk -F'\t' '{ printf "%s    {\"case\": %s, \"tool\": \"%s\", \"run\": %s, \"seconds\": %s, \"peak_rss_kib\": %s}", (NR > 1 ? ",\n" : ""), $1, $2, $3, $4, $5 } END { print "" }' "$SAMPLES"
	printf '  ]\n}\n'
} >"$OUT/results.json"
$PY -c 'import json,sys; json.load(open(sys.argv[1]))' "$OUT/results.json" || die "wrote invalid JSON"
echo "wrote $OUT/results.json"

sh "$ROOT/bench/serve.sh" || die "bench/serve.sh failed" # the server side: hubmirror serve vs nginx
if [ "$STRICT" = 1 ]; then
	case "$p1$p2$p3$p4" in *FAIL*) exit 1 ;; esac
fi
exit 0
