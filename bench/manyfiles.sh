#!/bin/sh
# manyfiles.sh - a repo of many small files: 10,000 against 100,000 regular
# files (64-319 bytes each, 1,000 a folder) from a static hub served by a
# private nginx on loopback. For each size, on a fresh store:
#   pull (--connections 16), verify, ls REPO, checkout, export,
#   and the serve tree page (/api/models/REPO/tree/main?recursive=1, every page)
# and, on the same files, aria2c -j16 -i LIST. Every step must grow
# linearly: the time of 100,000 files is at most 12x that of 10,000; the
# peak RSS of the 100,000-file pull is at most 256 MiB. Prints a table
# (times, ratios, pull vs aria2c) and writes bench/out/manyfiles.json.
#
# Environment: WORK (default /tmp/hm-bench-many, removed unless KEEP=1),
# SMALL (10000), LARGE (100000), HUBMIRROR (./hubmirror), STRICT=1 to exit 1
# when a target is missed, ARIA2=0 to leave out aria2c (its 100,000-file run
# takes ten minutes or more; hubmirror's steps take about two). Not part of `make check`. Each step's CPU time
# (user + system) is reported too: on a shared machine the wall time of the
# many fsyncs depends on what else writes, the CPU time's ratio does not.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HM=${HUBMIRROR:-$ROOT/hubmirror}
WORK=${WORK:-/tmp/hm-bench-many}
KEEP=${KEEP:-0}
SMALL=${SMALL:-10000}
LARGE=${LARGE:-100000}
STRICT=${STRICT:-0}
ARIA2=${ARIA2:-1}
OUT=$ROOT/bench/out
PY=/usr/bin/python3
TIME=/usr/bin/time

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }

[ -x "$HM" ] || die "no hubmirror binary at '$HM': run 'make' first"
[ -x "$TIME" ] || die "missing $TIME (Debian: time)"
for t in nginx aria2c curl awk; do
	command -v "$t" >/dev/null 2>&1 || die "missing tool '$t' (Debian: nginx aria2 curl)"
done
case "$SMALL$LARGE" in *[!0-9]*) die "SMALL and LARGE must be integers" ;; esac
case "$WORK" in /*/*) ;; *) die "WORK must be an absolute path below / (got '$WORK')" ;; esac
if [ -e "$WORK" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ] && [ ! -f "$WORK/.hm-bench" ]; then
	die "'$WORK' exists and was not made by bench/manyfiles.sh: refusing to wipe it"
fi
chmod -R u+w "$WORK" 2>/dev/null || true
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT" && : >"$WORK/.hm-bench" || die "cannot create '$WORK'"
cp "$HM" "$WORK/hubmirror" || die "cannot copy '$HM'"
HM=$WORK/hubmirror

NGINX_PID="" SERVE_PID=""
cleanup() {
	for p in $NGINX_PID $SERVE_PID; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	if [ "$KEEP" = 1 ]; then
		say "kept $WORK"
	else
		chmod -R u+w "$WORK" 2>/dev/null || true
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HUB_PORT=$(free_port)
HUB=http://127.0.0.1:$HUB_PORT
say "laying out $SMALL and $LARGE files under $WORK"
$PY "$ROOT/bench/mkmany.py" "$WORK" "$HUB_PORT" "$SMALL" "$LARGE" || die "mkmany.py failed"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" >>"$WORK/nginx/error.log" 2>&1 &
NGINX_PID=$!
i=0
until curl -sf -o /dev/null "$HUB/api/models/bench/many$SMALL/revision/main"; do
	i=$((i + 1))
	if [ "$i" -gt 50 ] || ! kill -0 "$NGINX_PID" 2>/dev/null; then
		cat "$WORK/nginx/error.log" >&2
		die "nginx did not come up"
	fi
	sleep 0.1
done

SAMPLES=$WORK/samples.tsv
: >"$SAMPLES"
# timed N STEP CMD...: wall seconds and peak RSS (KiB) of CMD into SAMPLES
timed() {
	n=$1 step=$2
	shift 2
	sync
	if ! "$TIME" -f '%e %M %U %S' -o "$WORK/time" "$@" >"$WORK/cmd.out" 2>&1; then
		tail -5 "$WORK/cmd.out" >&2
		die "$step of $n files failed: $*"
	fi
	set -- $(tail -n 1 "$WORK/time")
	cpu=$(awk "BEGIN { print $3 + $4 }")
	printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$step" "$1" "$2" "$cpu" >>"$SAMPLES"
	say "  $n files: $step ${1}s (CPU ${cpu}s), peak RSS $(($2 / 1024)) MiB"
}

for n in "$SMALL" "$LARGE"; do
	repo=bench/many$n store=$WORK/store$n
	say "$n files"
	timed "$n" pull "$HM" pull "$repo" --connections 16 --endpoint "$HUB" --store "$store" -q
	timed "$n" verify "$HM" verify "$repo" --store "$store"
	timed "$n" ls "$HM" ls "$repo" --store "$store"
	lines=$(wc -l <"$WORK/cmd.out")
	[ "$lines" -ge "$n" ] || die "ls $repo printed $lines lines for $n files"
	timed "$n" checkout "$HM" checkout "$repo" --to "$WORK/co$n" --store "$store"
	[ "$(find "$WORK/co$n" -type f | wc -l)" = "$n" ] || die "checkout of $n files is incomplete"
	rm -rf "$WORK/co$n"
	timed "$n" export "$HM" export "$repo" -o "$WORK/x$n.tar" --store "$store"
	rm -f "$WORK/x$n.tar"
	sport=$(free_port)
	"$HM" serve --listen "127.0.0.1:$sport" --store "$store" >"$WORK/serve.log" 2>&1 &
	SERVE_PID=$!
	i=0
	until curl -sf -o /dev/null "http://127.0.0.1:$sport/api/models/$repo/revision/main"; do
		i=$((i + 1))
		[ "$i" -le 100 ] && kill -0 "$SERVE_PID" 2>/dev/null || die "serve did not come up: $(cat "$WORK/serve.log")"
		sleep 0.1
	done
	timed "$n" tree $PY - "http://127.0.0.1:$sport/api/models/$repo/tree/main?recursive=1" "$n" <<'PYEOF'
import json, re, sys, urllib.request
url, want, got = sys.argv[1], int(sys.argv[2]), 0
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
while url:
    with opener.open(url, timeout=600) as r:
        got += sum(1 for e in json.loads(r.read()) if e.get("type") == "file")
        m = re.search(r'<([^>]+)>;\s*rel="next"', r.headers.get("Link") or "")
        url = m.group(1) if m else None
sys.exit(0 if got == want else "tree pages listed %d of %d files" % (got, want))
PYEOF
	kill "$SERVE_PID" 2>/dev/null || true
	wait "$SERVE_PID" 2>/dev/null || true
	SERVE_PID=""
	chmod -R u+w "$store" && rm -rf "$store"
	[ "$ARIA2" = 0 ] && continue
	timed "$n" aria2c aria2c -q -j16 --allow-overwrite=true --auto-file-renaming=false \
		--console-log-level=error -i "$WORK/many$n.aria2" -d "$WORK/dl$n"
	[ "$(find "$WORK/dl$n" -type f | wc -l)" = "$n" ] || die "aria2c did not write $n files"
	rm -rf "$WORK/dl$n"
done

$PY - "$SAMPLES" "$SMALL" "$LARGE" "$OUT/manyfiles.json" "$STRICT" <<'PYEOF'
import json, os, sys
samples, small, large, out, strict = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
t, rss, cpu = {}, {}, {}
for line in open(samples):
    n, step, s, kib, c = line.split()
    t[(n, step)] = float(s)
    rss[(n, step)] = int(kib)
    cpu[(n, step)] = float(c)
scale = int(large) / int(small)
limit = 12.0 * scale / 10
rows, fails = [], []
print("many small files: %s vs %s (%d CPUs, load %s)" % (small, large, os.cpu_count(),
      open("/proc/loadavg").read().split()[0]))
print("%-10s %10s %10s %8s %8s %12s  %-5s %10s" % ("step", small + " s", large + " s", "ratio", "target",
                                                  "RSS " + large, "pass", "CPU ratio"))
for step in ("pull", "verify", "ls", "checkout", "export", "tree", "aria2c"):
    if (large, step) not in t:
        continue
    a, b = t[(small, step)], t[(large, step)]
    ratio = b / a if a > 0 else float("inf")
    ok = ratio <= limit or b < 1.0
    if step == "aria2c":
        ok = True
    r_mib = rss[(large, step)] / 1024
    if step == "pull" and r_mib > 256:
        ok = False
    if not ok:
        fails.append(step)
    ca, cb = cpu[(small, step)], cpu[(large, step)]
    cratio = cb / ca if ca > 0 else float("inf")
    rows.append({"step": step, "small_s": a, "large_s": b, "ratio": ratio, "peak_rss_large_mib": r_mib,
                 "small_cpu_s": ca, "large_cpu_s": cb, "cpu_ratio": cratio})
    print("%-10s %10.2f %10.2f %8.2f %8s %8.0f MiB  %-5s %10.2f" % (step, a, b, ratio,
          "-" if step == "aria2c" else "<= %.0f" % limit, r_mib, "info" if step == "aria2c" else
          ("pass" if ok else "FAIL"), cratio))
for n in (small, large) if (small, "aria2c") in t else ():
    print("pull vs aria2c -j16, %s files: %.2f s vs %.2f s, ratio %.2f" % (n, t[(n, "pull")], t[(n, "aria2c")],
          t[(n, "pull")] / t[(n, "aria2c")]))
print("(peak RSS target for the %s-file pull: <= 256 MiB; a step under 1 s at %s files passes)" % (large, large))
json.dump({"small": int(small), "large": int(large), "rows": rows,
           "pull_vs_aria2c": {n: t[(n, "pull")] / t[(n, "aria2c")] for n in (small, large) if (n, "aria2c") in t},
           "failed": fails},
          open(out, "w"), indent=2)
if fails:
    print("targets missed: %s" % ", ".join(fails))
    if strict:
        sys.exit(1)
PYEOF
