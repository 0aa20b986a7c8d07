#!/bin/sh
# serve.sh - `hubmirror serve` against nginx on loopback, in one run.
#
# A store is filled by pulling from the static bench hub (bench/mkhub.py +
# a private nginx, as bench/run.sh does): one 1 GiB LFS file and a repo of
# NFILES small files. Then, with that hub stopped:
#   1. 16 concurrent curl clients each download the 1 GiB blob from
#      hubmirror serve, and from nginx serving the very same file (its root
#      is the store's blob directory); aggregate MiB/s, median of RUNS runs
#   2. API under wrk -t2 -c32 -d10s --latency: repo info and the recursive
#      tree (NFILES files), requests/s and p50/p99 latency; nginx serving the
#      same bytes as a static file is shown as a ceiling
#   3. RSS of a fresh server (--max-connections 2048): idle, with 1,000 idle
#      keep-alive connections open (bench/serve_conns.py), after they close
# Prints a table and writes bench/out/serve.json. Clients and servers share
# the machine's CPUs (loopback): on a small machine the clients' own CPU
# cost is in every figure, for hubmirror and nginx alike.
#
# Environment: SERVE_WORK (default /tmp/hm-serve-bench, removed unless
# KEEP=1), CACHE (default /tmp/hm-bench-cache: the random big file, kept),
# RUNS (3), BIG_MIB (1024), CLIENTS (16), NFILES (500), DURATION (10s),
# NCONN (1000), HUBMIRROR (./hubmirror), STRICT=1 to exit 1 on a missed target.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HM=${HUBMIRROR:-$ROOT/hubmirror}
WORK=${SERVE_WORK:-/tmp/hm-serve-bench}
CACHE=${CACHE:-/tmp/hm-bench-cache}
KEEP=${KEEP:-0}
RUNS=${RUNS:-3}
BIG_MIB=${BIG_MIB:-1024}
CLIENTS=${CLIENTS:-16}
NFILES=${NFILES:-500}
FILE_SIZE=2048
DURATION=${DURATION:-10s}
NCONN=${NCONN:-1000}
STRICT=${STRICT:-0}
OUT=$ROOT/bench/out
PY=/usr/bin/python3

die() { echo "bench/serve: $*" >&2; exit 1; }
say() { echo "bench/serve: $*" >&2; }

# ---------- tools ----------
[ -x "$HM" ] || die "no hubmirror binary at '$HM': run 'make' first"
if ! command -v wrk >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ]; then
		apt-get install -y --no-install-recommends wrk >&2 || die "cannot install package 'wrk'"
	else
		die "missing tool 'wrk': sudo apt-get install wrk"
	fi
fi
for t in nginx wrk curl sha256sum awk sort seq; do
	command -v "$t" >/dev/null 2>&1 || die "missing tool '$t' (Debian: nginx wrk curl coreutils)"
done
[ -x "$PY" ] || die "missing $PY"
for v in RUNS BIG_MIB CLIENTS NFILES NCONN; do
	eval "x=\$$v"
	case "$x" in '' | *[!0-9]* | 0) die "$v must be a positive integer" ;; esac
done

BIG_BYTES=$((BIG_MIB * 1048576))
mkdir -p "$CACHE" "$OUT"
case "$WORK" in /*/*) ;; *) die "SERVE_WORK must be an absolute path below / (got '$WORK')" ;; esac
if [ -e "$WORK" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ] && [ ! -f "$WORK/.hm-serve-bench" ]; then
	die "'$WORK' exists and was not made by bench/serve.sh: refusing to wipe it"
fi
rm -rf "$WORK"
mkdir -p "$WORK" && : >"$WORK/.hm-serve-bench" || die "cannot create '$WORK'"
cp "$HM" "$WORK/hubmirror" || die "cannot copy '$HM'"
HM=$WORK/hubmirror

# ---------- cleanup ----------
PIDS=""
stop() { # PID: SIGTERM, wait, then SIGKILL if it lingers
	[ -n "$1" ] || return 0
	kill "$1" 2>/dev/null || return 0
	i=0
	while kill -0 "$1" 2>/dev/null && [ "$i" -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if kill -0 "$1" 2>/dev/null; then
		say "pid $1 ignored SIGTERM for 5s: killing it"
		kill -9 "$1" 2>/dev/null || true
	fi
	wait "$1" 2>/dev/null || true
}
cleanup() {
	for p in $PIDS; do stop "$p"; done
	if [ "$KEEP" = 1 ]; then
		say "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
forget() { # PID: stopped, no longer cleaned up
	n=""
	for p in $PIDS; do [ "$p" = "$1" ] || n="$n $p"; done
	PIDS=$n
}

# ---------- disk ----------
need_kib=$((BIG_MIB * 1024 + 262144))
[ -f "$CACHE/big-${BIG_MIB}MiB.bin" ] || need_kib=$((need_kib + BIG_MIB * 1024))
avail_kib=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
[ "$avail_kib" -ge "$need_kib" ] ||
	die "not enough disk under '$WORK' ($((avail_kib / 1024)) MiB free, $((need_kib / 1024)) MiB needed)"

# ---------- data ----------
BIG=$CACHE/big-${BIG_MIB}MiB.bin
if [ ! -f "$BIG" ] || [ "$(stat -c %s "$BIG")" != "$BIG_BYTES" ]; then
	say "generating $BIG ($BIG_MIB MiB of random data, once)"
	head -c "$BIG_BYTES" /dev/urandom >"$BIG.tmp" && mv "$BIG.tmp" "$BIG" || die "cannot write '$BIG'"
fi
if command -v openssl >/dev/null 2>&1; then
	BIG_SHA=$(openssl dgst -sha256 -r "$BIG" | awk '{print $1}')
else
	BIG_SHA=$(sha256sum "$BIG" | awk '{print $1}')
fi

ports=$($PY -c '
import socket
ss = []
for host in ("127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.1"):
    s = socket.socket(); s.bind((host, 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))')
set -- $ports
HUB_PORT=$1 CDN_PORT=$2 SLOW_PORT=$3 NGX_PORT=$4
HUB=http://127.0.0.1:$HUB_PORT
NGX=http://127.0.0.1:$NGX_PORT

# start_nginx NAME CONF PROBE_URL: sets NPID
start_nginx() {
	nginx -p "$WORK/$1" -c "$2" -e "$WORK/$1/error.log" -t >"$WORK/$1-t.log" 2>&1 ||
		{ cat "$WORK/$1-t.log" >&2; die "bad nginx config '$2'"; }
	nginx -p "$WORK/$1" -c "$2" -e "$WORK/$1/error.log" >>"$WORK/$1/error.log" 2>&1 &
	NPID=$!
	PIDS="$PIDS $NPID"
	i=0
	until curl -sf -o /dev/null -r 0-0 "$3"; do
		i=$((i + 1))
		if [ "$i" -gt 50 ] || ! kill -0 "$NPID" 2>/dev/null; then
			cat "$WORK/$1/error.log" >&2
			die "nginx ($1) did not come up"
		fi
		sleep 0.1
	done
}

# start_hm NAME ARGS...: runs hubmirror serve, sets HPID and HURL
start_hm() {
	name=$1
	shift
	"$HM" --store "$STORE" serve --listen 127.0.0.1:0 "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
	HPID=$!
	PIDS="$PIDS $HPID"
	i=0
	HURL=""
	while [ -z "$HURL" ]; do
		HURL=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$WORK/$name.out" | head -n 1)
		[ -n "$HURL" ] && break
		i=$((i + 1))
		if [ "$i" -gt 100 ] || ! kill -0 "$HPID" 2>/dev/null; then
			cat "$WORK/$name.out" "$WORK/$name.err" >&2
			die "hubmirror serve ($name) did not print 'listening on URL' within 10s"
		fi
		sleep 0.1
	done
}

alive() { # PID WHAT [NAME]: the server must still be running
	kill -0 "$1" 2>/dev/null || {
		wait "$1" 2>/dev/null && rc=0 || rc=$?
		[ -f "$WORK/${3:-hm}.err" ] && tail -n 20 "$WORK/${3:-hm}.err" >&2
		die "$2 died during the benchmark (exit status $rc)"
	}
}

# ---------- fill the store from the bench hub ----------
say "laying out the static hub ($BIG_MIB MiB file, $NFILES x $FILE_SIZE B files) under $WORK"
$PY "$ROOT/bench/mkhub.py" "$WORK" "$BIG" "$BIG_SHA" "$NFILES" "$FILE_SIZE" \
	"$HUB_PORT" "$CDN_PORT" "$SLOW_PORT" 20m || die "mkhub.py failed"
start_nginx nginx "$WORK/nginx/nginx.conf" "$HUB/api/models/bench/big/revision/main"
HUB_NPID=$NPID
STORE=$WORK/store
say "pulling bench/big and bench/small into $STORE"
"$HM" pull bench/big --endpoint "$HUB" --store "$STORE" -q >"$WORK/pull.log" 2>&1 ||
	{ cat "$WORK/pull.log" >&2; die "hubmirror pull bench/big failed"; }
"$HM" pull bench/small --connections 16 --endpoint "$HUB" --store "$STORE" -q >"$WORK/pull.log" 2>&1 ||
	{ cat "$WORK/pull.log" >&2; die "hubmirror pull bench/small failed"; }
stop "$HUB_NPID"
forget "$HUB_NPID"
BLOB_DIR=$STORE/blobs/sha256
BLOB=$BLOB_DIR/$(echo "$BIG_SHA" | cut -c1-2)/$BIG_SHA
[ -f "$BLOB" ] && [ "$(stat -c %s "$BLOB")" = "$BIG_BYTES" ] || die "blob '$BLOB' missing after the pull"

# ---------- the servers ----------
start_hm hm --access-log "$WORK/hm-access.log"
HM_PID=$HPID HM_URL=$HURL
say "hubmirror serve up at $HM_URL (pid $HM_PID)"
INFO_PATH=/api/models/bench/small
TREE_PATH="/api/models/bench/small/tree/main?recursive=true"
FILE_PATH=/bench/big/resolve/main/big.bin
mkdir -p "$WORK/static" "$WORK/ngx/tmp"
curl -sf -o "$WORK/static/info.json" "$HM_URL$INFO_PATH" || die "GET $INFO_PATH from hubmirror serve failed"
curl -sf -o "$WORK/static/tree.json" "$HM_URL$TREE_PATH" || die "GET $TREE_PATH from hubmirror serve failed"
ntree=$($PY -c 'import json,sys; print(sum(e["type"] == "file" for e in json.load(open(sys.argv[1]))))' "$WORK/static/tree.json") ||
	die "the tree is not JSON"
[ "$ntree" = "$NFILES" ] || die "the tree lists $ntree files, expected $NFILES"

user=""
[ "$(id -u)" = 0 ] && user="user root root;"
cat >"$WORK/ngx/nginx.conf" <<EOF
# generated by bench/serve.sh: the peer, serving the store's blobs as-is
$user
worker_processes auto;
pid $WORK/ngx/nginx.pid;
error_log $WORK/ngx/error.log warn;
daemon off;
events { worker_connections 2048; }
http {
    access_log $WORK/ngx-access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/ngx/tmp/body;
    proxy_temp_path $WORK/ngx/tmp/proxy;
    fastcgi_temp_path $WORK/ngx/tmp/fastcgi;
    uwsgi_temp_path $WORK/ngx/tmp/uwsgi;
    scgi_temp_path $WORK/ngx/tmp/scgi;
    types { }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGX_PORT;
        location /blobs/ { alias $BLOB_DIR/; }
        location /static/ { alias $WORK/static/; default_type application/json; }
    }
}
EOF
NGX_FILE=$NGX/blobs/$(echo "$BIG_SHA" | cut -c1-2)/$BIG_SHA
start_nginx ngx "$WORK/ngx/nginx.conf" "$NGX_FILE"
NGX_PID=$NPID
say "nginx up at $NGX (pid $NGX_PID, root $BLOB_DIR)"

# ---------- correctness first ----------
say "checking what hubmirror serves: full file sha256, a byte range"
cat "$BLOB" >/dev/null
got=$(curl -sf "$HM_URL$FILE_PATH" | sha256sum | awk '{print $1}')
[ "$got" = "$BIG_SHA" ] || die "GET $FILE_PATH: sha256 $got, expected $BIG_SHA"
curl -sf -r 1000000-1000099 -o "$WORK/range.hm" "$HM_URL$FILE_PATH" || die "range GET failed"
dd if="$BLOB" of="$WORK/range.want" bs=100 skip=10000 count=1 status=none
cmp -s "$WORK/range.hm" "$WORK/range.want" || die "range GET 1000000-1000099 returned the wrong bytes"

# ---------- case 1 ----------
SAMPLES=$WORK/samples.tsv
: >"$SAMPLES"
now() { date +%s%N; }
# fanout TOOL RUN URL: CLIENTS parallel curls of URL, records aggregate MiB/s
fanout() {
	rm -f "$WORK"/fan.*
	cpids=""
	t0=$(now)
	for k in $(seq 1 "$CLIENTS"); do
		curl -s -o /dev/null -w '%{http_code} %{size_download}\n' "$3" >"$WORK/fan.$k" 2>&1 &
		cpids="$cpids $!"
	done
	for p in $cpids; do wait "$p" || true; done # the servers are children too: no bare wait
	t1=$(now)
	for k in $(seq 1 "$CLIENTS"); do
		read -r code size <"$WORK/fan.$k" || true
		[ "${code:-}" = 200 ] && [ "${size:-}" = "$BIG_BYTES" ] ||
			die "case 1: $1 run $2: client $k got '$(cat "$WORK/fan.$k")' (want '200 $BIG_BYTES')"
	done
	mibs=$(awk -v a="$t0" -v b="$t1" -v n="$CLIENTS" -v s="$BIG_BYTES" 'BEGIN { printf "%.1f", n * s / 1048576 / ((b - a) / 1e9) }')
	printf '1\t%s\t%s\t%s\n' "$1" "$2" "$mibs" >>"$SAMPLES"
	say "  case 1 run $2: $1 $mibs MiB/s ($(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')s)"
}
median() { # CASE TOOL
	awk -F'\t' -v c="$1" -v t="$2" '$1 == c && $2 == t { print $4 }' "$SAMPLES" | sort -n |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

say "case 1: $CLIENTS clients x $BIG_MIB MiB, hubmirror serve vs nginx ($RUNS runs each, alternating, median)"
for r in $(seq 1 "$RUNS"); do
	fanout hubmirror "$r" "$HM_URL$FILE_PATH"
	alive "$HM_PID" "hubmirror serve"
	fanout nginx "$r" "$NGX_FILE"
done

# ---------- case 2 ----------
# wrk_run NAME URL: sets RPS P50 P99 (ms); fails on errors or non-2xx answers
wrk_run() {
	wrk -t2 -c32 -d"$DURATION" --latency "$2" >"$WORK/wrk.$1" 2>&1 || { cat "$WORK/wrk.$1" >&2; die "wrk $1 failed"; }
	if grep -q -e 'Non-2xx' -e 'Socket errors' "$WORK/wrk.$1"; then
		cat "$WORK/wrk.$1" >&2
		die "wrk $1: errors or non-2xx answers"
	fi
	RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$WORK/wrk.$1")
	ms() { awk -v p="$1" '$1 == p {
		v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
		f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
		printf "%.2f", v * f }' "$WORK/wrk.$2"; }
	P50=$(ms 50% "$1") P99=$(ms 99% "$1")
	[ -n "$RPS" ] && [ -n "$P50" ] && [ -n "$P99" ] || { cat "$WORK/wrk.$1" >&2; die "cannot parse wrk output for $1"; }
	say "  $1: $RPS req/s, p50 ${P50} ms, p99 ${P99} ms"
}
say "case 2: API under wrk -t2 -c32 -d$DURATION ($NFILES-file repo; info $(stat -c %s "$WORK/static/info.json") B, tree $(stat -c %s "$WORK/static/tree.json") B)"
wrk_run hm-info "$HM_URL$INFO_PATH"
I_RPS=$RPS I_P50=$P50 I_P99=$P99
alive "$HM_PID" "hubmirror serve"
wrk_run hm-tree "$HM_URL$TREE_PATH"
T_RPS=$RPS T_P50=$P50 T_P99=$P99
alive "$HM_PID" "hubmirror serve"
wrk_run ngx-info "$NGX/static/info.json"
NI_RPS=$RPS NI_P50=$P50 NI_P99=$P99
wrk_run ngx-tree "$NGX/static/tree.json"
NT_RPS=$RPS NT_P50=$P50 NT_P99=$P99

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
LOADED_HWM=$(status_kib "$HM_PID" VmHWM)
LOADED_RSS=$(status_kib "$HM_PID" VmRSS)
stop "$HM_PID"
forget "$HM_PID"
stop "$NGX_PID"
forget "$NGX_PID"

# ---------- case 3 ----------
say "case 3: RSS of a fresh server, idle / $NCONN idle keep-alive connections / after they close"
ulimit -n 8192 2>/dev/null || ulimit -n 4096 2>/dev/null || true
start_hm hm3 --max-connections 2048 --access-log "$WORK/hm3-access.log"
HM3_PID=$HPID
hp=${HURL#http://}
$PY "$ROOT/bench/serve_conns.py" "${hp%:*}" "${hp##*:}" "$HM3_PID" "$NCONN" "$INFO_PATH" >"$WORK/conns.json" 2>"$WORK/conns.err" || {
	cat "$WORK/conns.err" >&2
	alive "$HM3_PID" "hubmirror serve (case 3)" hm3
	die "serve_conns.py failed with $NCONN connections"
}
alive "$HM3_PID" "hubmirror serve (case 3)" hm3
stop "$HM3_PID"
forget "$HM3_PID"
set -- $($PY -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["idle"]["VmRSS"], r["open"]["VmRSS"], r["closed"]["VmRSS"], r["closed"]["VmHWM"],
      r["idle"]["Threads"], r["open"]["Threads"], r["closed"]["Threads"], r["non_200"], r["open_seconds"])' "$WORK/conns.json")
M_IDLE=$1 M_OPEN=$2 M_CLOSED=$3 M_HWM=$4 TH_IDLE=$5 TH_OPEN=$6 TH_CLOSED=$7 M_BAD=$8 M_SECS=$9
[ "$M_BAD" = 0 ] || die "case 3: $M_BAD of $((NCONN * 2)) requests on the idle connections did not answer 200"

# ---------- results ----------
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
pf() { awk "BEGIN { print ($1) ? \"pass\" : \"FAIL\" }"; }
hm1=$(median 1 hubmirror) ngx1=$(median 1 nginx)
r1=$(calc "$hm1 / $ngx1")
ri=$(calc "$I_RPS / $NI_RPS") rt=$(calc "$T_RPS / $NT_RPS")
m_idle=$(mib "$M_IDLE") m_open=$(mib "$M_OPEN") m_closed=$(mib "$M_CLOSED") m_hwm=$(mib "$M_HWM")
per_conn=$(awk -v a="$M_IDLE" -v b="$M_OPEN" -v n="$NCONN" 'BEGIN { printf "%.1f", (b - a) / n }')
# targets: the throughput within 10% of nginx; memory bounded: <= 128 MiB
# with NCONN connections (MHD's per-connection memory cap is 64 KiB, stacks
# are 256 KiB but touched only a few pages deep), and back within 32 MiB of
# idle once they close
p1=$(pf "$r1 >= 0.9") p3=$(pf "$m_open <= 128") p4=$(pf "$m_closed <= $m_idle + 32")

echo
echo "hubmirror serve benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, loopback, nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') peer"
fmt='%-44s | %-16s | %-22s | %-6s | %-14s | %s\n'
printf "$fmt" "case" "hubmirror" "peer" "ratio" "target" "pass/fail"
printf "$fmt" "--------------------------------------------" "----------------" "----------------------" "------" "--------------" "---------"
printf "$fmt" "1 $CLIENTS x $BIG_MIB MiB blob, aggregate (MiB/s)" "$hm1" "nginx $ngx1" "$r1" ">= 0.9" "$p1"
printf "$fmt" "2 repo info, wrk -c32 (req/s)" "$I_RPS" "nginx static $NI_RPS" "$ri" "-" "info"
printf "$fmt" "2 repo info p50 / p99 (ms)" "$I_P50 / $I_P99" "$NI_P50 / $NI_P99" "-" "-" "info"
printf "$fmt" "2 tree, $NFILES files, wrk -c32 (req/s)" "$T_RPS" "nginx static $NT_RPS" "$rt" "-" "info"
printf "$fmt" "2 tree p50 / p99 (ms)" "$T_P50 / $T_P99" "$NT_P50 / $NT_P99" "-" "-" "info"
printf "$fmt" "3 RSS idle (MiB)" "$m_idle" "-" "-" "-" "info"
printf "$fmt" "3 RSS, $NCONN idle keep-alive conns (MiB)" "$m_open" "-" "-" "<= 128" "$p3"
printf "$fmt" "3 RSS after they close (MiB)" "$m_closed" "-" "-" "<= idle + 32" "$p4"
echo "context: case 1 median of $RUNS runs, curl -o /dev/null clients on the same $(nproc) CPUs as the server (client CPU is in both figures);" \
	"case 2 nginx serves the same bytes as static files (a ceiling, not a peer);" \
	"case 3: $per_conn KiB per connection, threads $TH_IDLE -> $TH_OPEN -> $TH_CLOSED, VmHWM $m_hwm MiB, $NCONN connections opened in ${M_SECS}s;" \
	"server after cases 1-2: VmRSS $(mib "$LOADED_RSS") MiB, VmHWM $(mib "$LOADED_HWM") MiB"

jb() { [ "$1" = pass ] && echo true || echo false; }
{
	printf '{\n  "date": "%s",\n  "cpus": %s,\n  "runs": %s,\n  "statistic": "median",\n' \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$RUNS"
	printf '  "big_bytes": %s,\n  "clients": %s,\n  "tree_files": %s,\n  "wrk": "-t2 -c32 -d%s --latency",\n  "connections": %s,\n' \
		"$BIG_BYTES" "$CLIENTS" "$NFILES" "$DURATION" "$NCONN"
	printf '  "cases": [\n'
	printf '    {"case": 1, "name": "fanout_download", "unit": "MiB/s", "hubmirror": %s, "nginx": %s, "ratio": %s, "target": "ratio >= 0.9", "pass": %s},\n' \
		"$hm1" "$ngx1" "$r1" "$(jb "$p1")"
	printf '    {"case": 2, "name": "api_repo_info", "hubmirror": {"rps": %s, "p50_ms": %s, "p99_ms": %s}, "nginx_static": {"rps": %s, "p50_ms": %s, "p99_ms": %s}, "ratio": %s},\n' \
		"$I_RPS" "$I_P50" "$I_P99" "$NI_RPS" "$NI_P50" "$NI_P99" "$ri"
	printf '    {"case": 2, "name": "api_tree", "hubmirror": {"rps": %s, "p50_ms": %s, "p99_ms": %s}, "nginx_static": {"rps": %s, "p50_ms": %s, "p99_ms": %s}, "ratio": %s},\n' \
		"$T_RPS" "$T_P50" "$T_P99" "$NT_RPS" "$NT_P50" "$NT_P99" "$rt"
	printf '    {"case": 3, "name": "rss_idle_connections", "unit": "MiB", "idle": %s, "open": %s, "closed": %s, "hwm": %s, "kib_per_connection": %s, "threads": [%s, %s, %s], "target": "open <= 128 and closed <= idle + 32", "pass": %s}\n' \
		"$m_idle" "$m_open" "$m_closed" "$m_hwm" "$per_conn" "$TH_IDLE" "$TH_OPEN" "$TH_CLOSED" "$([ "$p3$p4" = passpass ] && echo true || echo false)"
	printf '  ],\n  "samples": [\n'
	awk -F'\t' '{ printf "%s    {\"case\": %s, \"server\": \"%s\", \"run\": %s, \"mib_s\": %s}", (NR > 1 ? ",\n" : ""), $1, $2, $3, $4 } END { print "" }' "$SAMPLES"
	printf '  ]\n}\n'
} >"$OUT/serve.json"
$PY -c 'import json,sys; json.load(open(sys.argv[1]))' "$OUT/serve.json" || die "wrote invalid JSON"
echo "wrote $OUT/serve.json"

if [ "$STRICT" = 1 ]; then
	case "$p1$p3$p4" in *FAIL*) exit 1 ;; esac
fi
exit 0
