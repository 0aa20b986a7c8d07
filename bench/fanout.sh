#!/bin/sh
# fanout.sh - one mirror and N lab machines in network namespaces, every link
# shaped with tc tbf, provisioning one model: over BitTorrent (pull --p2p) and
# over plain HTTP from the mirror (pull), in one run. Reports per mode:
# (a) seconds until every node holds a verified copy, (b) bytes the mirror sent
# (its veth counter) / model size, (c) the ideal: model size / per-node rate.
# Not part of `make check`. Needs root (ip netns, tc).
#
#   sh bench/fanout.sh [NODES=16] [SIZE_MIB=1024] [RATE=100mbit] [FILES=8] [BURST=64kb] [MTU=1500]
#                      [MODES="single p2p http"] [SERVE_ARGS=...] [PULL_ARGS=...]
#   e.g. NODES=16 SIZE_MIB=128 sh bench/fanout.sh   (a quicker run)
#   TIMELINE=FILE writes FILE.MODE: every 2 s, seconds since the start, bytes
#   the mirror sent, bytes the lab nodes sent and bytes they received.
#   MODES="single p2p" leaves out the plain-HTTP lab (it takes NODES x the
#   single node's time); "p2p-superseed" adds a BitTorrent run whose mirror
#   super-seeds (serve --p2p-super-seed), for comparison. MIRROR_CAP: the mirror's --p2p-upload-rate in
#   bytes/s (default 3/4 of RATE; 0: none). SERVE_ARGS / PULL_ARGS add options to the mirror's
#   serve --p2p / the lab's pull --p2p (e.g. SERVE_ARGS="--p2p-upload-rate 20M").
#
# Everything lives in namespaces the script creates (hmf-br with the bridge,
# hmf-0 the mirror, hmf-1..N the lab), with addresses 10.77.0.0/24 inside
# them only; all of it is removed on exit, whatever happens.
set -eu
NODES=${NODES:-16}
SIZE_MIB=${SIZE_MIB:-1024}
RATE=${RATE:-100mbit}
BURST=${BURST:-64kb}
MTU=${MTU:-1500}
FILES=${FILES:-8}
MODES=${MODES:-single p2p http}
SERVE_ARGS=${SERVE_ARGS:-}
PULL_ARGS=${PULL_ARGS:-}
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
HM=${HM:-"$ROOT/hubmirror"}
W=$(mktemp -d /tmp/hm-fanout-XXXXXX)
REPO=lab-org/fanout-model
PIDS=""

# the hub emulator makes each file with Python's Random.randbytes, which
# stops below 256 MiB (2^31 bits)
[ $((SIZE_MIB / FILES)) -lt 256 ] || { echo "fanout.sh: SIZE_MIB / FILES must be under 256 (use more FILES)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "fanout.sh: needs root (ip netns, tc)" >&2; exit 1; }
[ -x "$HM" ] || { echo "fanout.sh: build first (make)" >&2; exit 1; }
command -v opentracker >/dev/null || { echo "fanout.sh: needs opentracker (mk/deps.sh bench)" >&2; exit 1; }

cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	sleep 0.5
	for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
	for i in $(seq 0 "$NODES"); do ip netns del "hmf-$i" 2>/dev/null || true; done
	ip netns del hmf-br 2>/dev/null || true
	[ -n "${KEEP:-}" ] && echo "fanout: kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECS WHAT CMD...: polls CMD until it succeeds; gives up after SECS
wait_for() {
	secs=$1 what=$2
	shift 2
	n=0
	until "$@"; do
		n=$((n + 1))
		[ "$n" -lt $((secs * 10)) ] || { echo "fanout: $what did not come up in $secs s" >&2; exit 1; }
		sleep 0.1
	done
}

rate_bps() { # 100mbit -> bytes/s
	echo "$1" | awk '{ v = $1 + 0; u = tolower($1); sub(/^[0-9.]+/, "", u);
		m = (u ~ /^g/) ? 1e9 : (u ~ /^m/) ? 1e6 : (u ~ /^k/) ? 1e3 : 1;
		if (u ~ /bit/) printf "%d\n", v * m / 8; else printf "%d\n", v * m }'
}

# ---- the network: a bridge in its own namespace, one veth per node ----
# namespaces an earlier run could not remove (killed with -9) are ours
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^hmf-/ { print $1 }'); do ip netns del "$ns" 2>/dev/null || true; done
ip netns add hmf-br
ip netns exec hmf-br ip link add br0 type bridge
ip netns exec hmf-br ip link set br0 up
ip netns exec hmf-br ip link set lo up
for i in $(seq 0 "$NODES"); do
	ns=hmf-$i
	ip netns add "$ns"
	ip netns exec "$ns" ip link set lo up
	ip link add "hmf$i" netns "$ns" type veth peer name "p$i" netns hmf-br
	ip netns exec "$ns" ip link set "hmf$i" name eth0
	ip netns exec "$ns" ip addr add "10.77.0.$((i + 1))/24" dev eth0
	ip netns exec "$ns" ip link set eth0 up
	ip netns exec hmf-br ip link set "p$i" master br0 up
	ip netns exec "$ns" ip link set eth0 mtu "$MTU"
	ip netns exec hmf-br ip link set "p$i" mtu "$MTU"
	# the node's uplink and downlink, each RATE
	ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$RATE" burst "$BURST" latency 50ms
	ip netns exec hmf-br tc qdisc add dev "p$i" root tbf rate "$RATE" burst "$BURST" latency 50ms
done
MIRROR=10.77.0.1

# ---- the mirror: a store filled from the hub emulator, then serve --p2p ----
mkdir -p "$W/emu"
python3 - "$W/emu/config.json" "$REPO" "$SIZE_MIB" "$FILES" <<'EOF'
import json, sys
path, repo, size_mib, nfiles = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
each = size_mib * (1 << 20) // nfiles
files = {"model-%05d-of-%05d.safetensors" % (i + 1, nfiles): {"random": each, "seed": 100 + i} for i in range(nfiles)}
files["config.json"] = '{"model_type": "llama"}\n'
json.dump({"tokens": [], "repos": [{"type": "model", "id": repo, "commits": [{"files": files, "refs": ["main"]}]}]},
          open(path, "w"))
EOF
ip netns exec hmf-0 python3 "$ROOT/tests/hubemu/hubemu.py" --config "$W/emu/config.json" --port 0 --cdn-port 0 \
	--ready-file "$W/emu/ready.json" >"$W/emu/log" 2>&1 &
PIDS="$PIDS $!"
wait_for 60 "the hub emulator ($(tail -1 "$W/emu/log" 2>/dev/null))" test -s "$W/emu/ready.json"
EMU=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$W/emu/ready.json")
echo "fanout: filling the mirror's store with $SIZE_MIB MiB in $FILES files ..." >&2
ip netns exec hmf-0 "$HM" pull "$REPO" --store "$W/mirror" --endpoint "$EMU" -q
MODEL=$(du -sb "$W/mirror/blobs" | cut -f1)
# start_serve N [ENV=VALUE]: (re)starts the mirror's serve --p2p, the Nth
# time on fresh peer and tracker ports (no waiting for the old ones to close)
SERVE_PID=""
start_serve() {
	n=$1
	shift
	if [ -n "$SERVE_PID" ]; then
		kill "$SERVE_PID" 2>/dev/null || true
		wait "$SERVE_PID" 2>/dev/null || true
	fi
	: >"$W/serve.out"
	ip netns exec hmf-0 env "$@" "$HM" serve --store "$W/mirror" --listen "$MIRROR:$((8080 + n))" --p2p \
		--p2p-port $((6881 + n)) --tracker-listen "$MIRROR:$((6969 + n))" $CAP_ARGS ${SS_ARGS:-} $SERVE_ARGS \
		>"$W/serve.out" 2>>"$W/serve.err" &
	SERVE_PID=$!
	PIDS="$PIDS $!"
	URL="http://$MIRROR:$((8080 + n))"
	wait_for 60 "serve --p2p" grep -q listening "$W/serve.out"
	# the torrents are made once, on first request: make them before timing
	ip netns exec hmf-0 curl -s "$URL/api/models/$REPO/torrents/main" >/dev/null
}
# the mirror's upload cap: MIRROR_CAP bytes/s, by default 3/4 of a node's rate
CAP=${MIRROR_CAP:-$(echo "$(rate_bps "$RATE") * 3 / 4" | bc)}
CAP_ARGS=""
[ "$CAP" = 0 ] || CAP_ARGS="--p2p-upload-rate $CAP"
start_serve 0 HM_BENCH=1

tx() { ip netns exec hmf-0 cat /sys/class/net/eth0/statistics/tx_bytes; }

# run MODE NODES_N EXTRA...: every lab node pulls at once; prints "seconds mirror_bytes"
run() {
	mode=$1 n=$2
	shift 2
	before=$(tx)
	cpu0=$(head -1 /proc/stat)
	t0=$(date +%s.%N)
	tl=""
	if [ -n "${TIMELINE:-}" ]; then
		# every 2 s: seconds, bytes the mirror sent, bytes the lab sent, bytes the lab received
		ip netns exec hmf-br sh -c 'while :; do
			m=$(cat /sys/class/net/p0/statistics/rx_bytes); ls=0; lr=0
			for d in /sys/class/net/p*; do
				[ "${d##*/}" = p0 ] && continue
				ls=$((ls + $(cat $d/statistics/rx_bytes))); lr=$((lr + $(cat $d/statistics/tx_bytes)))
			done
			echo "$(date +%s.%N) $m $ls $lr"; sleep 2; done' >"$TIMELINE.$mode.raw" 2>/dev/null &
		tl=$!
	fi
	lp=""
	for i in $(seq 1 "$n"); do
		rm -rf "$W/lab$i"
		( ip netns exec "hmf-$i" "$HM" pull "$REPO" --store "$W/lab$i" --endpoint "$URL" "$@" \
			>"$W/lab$i.out" 2>"$W/lab$i.err"; echo $? >"$W/lab$i.rc" ) &
		lp="$lp $!"
		PIDS="$PIDS $!"
	done
	# a node is done when its pull printed its summary (verified, in its store);
	# one grep a round for all of them (a process per node and round cost the
	# 2-core machine that runs the whole lab more than the swarm's bookkeeping)
	outs="" ids=""
	for i in $(seq 1 "$n"); do outs="$outs $W/lab$i.out" ids="$ids $i"; done
	while :; do
		done_list=" $(grep -l '^pulled' $outs 2>/dev/null | tr '\n' ' ')"
		done_n=0
		for i in $ids; do
			case "$done_list" in
			*" $W/lab$i.out "*)
				[ -e "$W/lab$i.t" ] || date +%s.%N >"$W/lab$i.t"
				done_n=$((done_n + 1)) ;;
			*)
				# (a pull that exited 0 printed its summary: the next round sees it)
				if [ -s "$W/lab$i.rc" ] && [ "$(cat "$W/lab$i.rc")" != 0 ]; then
					echo "fanout: lab $i ($mode) failed: $(tail -2 "$W/lab$i.err")" >&2
					exit 1
				fi ;;
			esac
		done
		[ "$done_n" = "$n" ] && break
		sleep 0.2
	done
	last=$(cat "$W"/lab*.t | sort -n | tail -1)
	sent=$(( $(tx) - before ))
	if [ -n "$tl" ]; then
		kill "$tl" 2>/dev/null || true
		awk -v t0="$t0" 'NR == 1 { m0 = $2; s0 = $3; r0 = $4 } { printf "%.1f %.0f %.0f %.0f\n", $1 - t0, $2 - m0, $3 - s0, $4 - r0 }' \
			"$TIMELINE.$mode.raw" >"$TIMELINE.$mode" && rm -f "$TIMELINE.$mode.raw"
	fi
	# how busy the machine was: a run that left no CPU idle measured the
	# machine (veths, bridge, tbf, 16 clients on its cores), not the swarm
	echo "$cpu0
$(head -1 /proc/stat)" | awk '{ t = 0; for (i = 2; i <= NF; i++) t += $i; tot[NR] = t; idle[NR] = $5 + $6;
		usr[NR] = $2 + $3; sys[NR] = $4; sirq[NR] = $7 + $8 }
		END { d = tot[2] - tot[1]; if (d > 0) printf "fanout: %s: CPU %.0f%% idle, %.0f%% user, %.0f%% system, %.0f%% irq\n", m,
			100 * (idle[2] - idle[1]) / d, 100 * (usr[2] - usr[1]) / d, 100 * (sys[2] - sys[1]) / d,
			100 * (sirq[2] - sirq[1]) / d }' m="$mode" >&2
	for i in $(seq 1 "$n"); do
		ip netns exec "hmf-$i" "$HM" verify --store "$W/lab$i" -q || { echo "fanout: lab $i: verify failed" >&2; exit 1; }
	done
	# every node holds a copy: the lingering seeders have nobody left to serve
	for p in $lp; do pkill -TERM -P "$p" 2>/dev/null || true; done
	wait $lp 2>/dev/null || true
	rm -f "$W"/lab*.t "$W"/lab*.rc
	echo "$(echo "$last - $t0" | bc) $sent"
}

BPS=$(rate_bps "$RATE")
IDEAL=$(echo "scale=1; $MODEL / $BPS" | bc)
T1=0 TH=- SH=- ROWS=""
k=0
for m in $MODES; do
	case $m in
	single)
		echo "fanout: one node alone over HTTP ..." >&2
		set -- $(run single 1)
		T1=$1 ;;
	p2p|p2p-superseed)
		k=$((k + 1))
		SS_ARGS=""
		[ "$m" = p2p ] || SS_ARGS=--p2p-super-seed
		start_serve "$k" HM_BENCH=1
		echo "fanout: $NODES nodes over BitTorrent (pull --p2p, mirror: $m) ..." >&2
		set -- $(run "$m" "$NODES" --p2p --seed-time 60 $PULL_ARGS)
		ROWS="$ROWS $m:$1:$2" ;;
	http)
		echo "fanout: $NODES nodes over plain HTTP ..." >&2
		set -- $(run http "$NODES")
		TH=$1 SH=$2 ;;
	*) echo "fanout: unknown mode '$m'" >&2; exit 2 ;;
	esac
done

ratio() { [ "$1" = - ] && echo - || echo "scale=2; $1 / $2" | bc; }
xs() { [ "$1" = - ] || [ "$T1" = 0 ] && echo - || echo "scale=2; $1 / $T1" | bc; }
printf '\nfan-out of %s (%d files, %d bytes) to %d lab nodes, every link %s, mirror cap %s B/s\n' "$REPO" "$FILES" \
	"$MODEL" "$NODES" "$RATE" "$CAP"
printf '%-28s %12s %16s %14s\n' "mode" "all done (s)" "mirror sent/size" "x single node"
printf '%-28s %12s %16s %14s\n' "ideal (size / node rate)" "$IDEAL" "-" "-"
printf '%-28s %12s %16s %14s\n' "1 node, HTTP" "$T1" "-" "1.00"
for r in $ROWS; do
	name=${r%%:*} rest=${r#*:}
	printf '%-28s %12s %16s %14s\n' "$NODES nodes, $name" "${rest%%:*}" "$(ratio "${rest#*:}" "$MODEL")" \
		"$(xs "${rest%%:*}")"
done
printf '%-28s %12s %16s %14s\n' "$NODES nodes, HTTP" "$TH" "$(ratio "$SH" "$MODEL")" "$(xs "$TH")"
