#!/bin/sh
# fanout.sh - one mirror and N lab machines in network namespaces, every link
# shaped with tc tbf, provisioning one model: over BitTorrent (pull --p2p) and
# over plain HTTP from the mirror (pull), in one run. Reports per mode:
# (a) seconds until every node holds a verified copy, (b) bytes the mirror sent
# (its veth counter) / model size, (c) the ideal: model size / per-node rate.
# Not part of `make check`. Needs root (ip netns, tc).
#
#   sh bench/fanout.sh [NODES=16] [SIZE_MIB=1024] [RATE=100mbit] [FILES=4]
#   e.g. NODES=16 SIZE_MIB=128 sh bench/fanout.sh   (a quicker run)
#
# Everything lives in namespaces the script creates (hmf-br with the bridge,
# hmf-0 the mirror, hmf-1..N the lab), with addresses 10.77.0.0/24 inside
# them only; all of it is removed on exit, whatever happens.
set -eu
NODES=${NODES:-16}
SIZE_MIB=${SIZE_MIB:-1024}
RATE=${RATE:-100mbit}
FILES=${FILES:-4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HM="$ROOT/hubmirror"
W=$(mktemp -d /tmp/hm-fanout-XXXXXX)
REPO=lab-org/fanout-model
PIDS=""

[ "$(id -u)" = 0 ] || { echo "fanout.sh: needs root (ip netns, tc)" >&2; exit 1; }
[ -x "$HM" ] || { echo "fanout.sh: build first (make)" >&2; exit 1; }
command -v opentracker >/dev/null || { echo "fanout.sh: needs opentracker (mk/deps.sh bench)" >&2; exit 1; }

cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	sleep 0.5
	for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
	for i in $(seq 0 "$NODES"); do ip netns del "hmf-$i" 2>/dev/null || true; done
	ip netns del hmf-br 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT INT TERM

rate_bps() { # 100mbit -> bytes/s
	echo "$1" | awk '{ v = $1 + 0; u = tolower($1); sub(/^[0-9.]+/, "", u);
		m = (u ~ /^g/) ? 1e9 : (u ~ /^m/) ? 1e6 : (u ~ /^k/) ? 1e3 : 1;
		if (u ~ /bit/) printf "%d\n", v * m / 8; else printf "%d\n", v * m }'
}

# ---- the network: a bridge in its own namespace, one veth per node ----
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
	# the node's uplink and downlink, each RATE
	ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$RATE" burst 64kb latency 50ms
	ip netns exec hmf-br tc qdisc add dev "p$i" root tbf rate "$RATE" burst 64kb latency 50ms
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
while [ ! -s "$W/emu/ready.json" ]; do sleep 0.1; done
EMU=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$W/emu/ready.json")
echo "fanout: filling the mirror's store with $SIZE_MIB MiB in $FILES files ..." >&2
ip netns exec hmf-0 "$HM" pull "$REPO" --store "$W/mirror" --endpoint "$EMU" -q
MODEL=$(du -sb "$W/mirror/blobs" | cut -f1)
ip netns exec hmf-0 "$HM" serve --store "$W/mirror" --listen "$MIRROR:8080" --p2p --p2p-port 6881 \
	--tracker-listen "$MIRROR:6969" >"$W/serve.out" 2>"$W/serve.err" &
PIDS="$PIDS $!"
while ! grep -q listening "$W/serve.out" 2>/dev/null; do sleep 0.1; done
# the torrents are made once, on first request: make them before timing
ip netns exec hmf-0 curl -s "http://$MIRROR:8080/api/models/$REPO/torrents/main" >/dev/null

tx() { ip netns exec hmf-0 cat /sys/class/net/eth0/statistics/tx_bytes; }

# run MODE NODES_N EXTRA...: every lab node pulls at once; prints "seconds mirror_bytes"
run() {
	mode=$1 n=$2
	shift 2
	before=$(tx)
	t0=$(date +%s.%N)
	lp=""
	for i in $(seq 1 "$n"); do
		rm -rf "$W/lab$i"
		( ip netns exec "hmf-$i" "$HM" pull "$REPO" --store "$W/lab$i" --endpoint "http://$MIRROR:8080" "$@" \
			>"$W/lab$i.out" 2>"$W/lab$i.err"; echo $? >"$W/lab$i.rc" ) &
		lp="$lp $!"
		PIDS="$PIDS $!"
	done
	# a node is done when its pull printed its summary (verified, in its store)
	while :; do
		done_n=0
		for i in $(seq 1 "$n"); do
			if grep -q '^pulled' "$W/lab$i.out" 2>/dev/null; then
				[ -e "$W/lab$i.t" ] || date +%s.%N >"$W/lab$i.t"
				done_n=$((done_n + 1))
			elif [ -s "$W/lab$i.rc" ]; then
				echo "fanout: lab $i ($mode) failed: $(tail -2 "$W/lab$i.err")" >&2
				exit 1
			fi
		done
		[ "$done_n" = "$n" ] && break
		sleep 0.2
	done
	last=$(cat "$W"/lab*.t | sort -n | tail -1)
	sent=$(( $(tx) - before ))
	for i in $(seq 1 "$n"); do
		ip netns exec "hmf-$i" "$HM" verify --store "$W/lab$i" -q || { echo "fanout: lab $i: verify failed" >&2; exit 1; }
	done
	wait $lp 2>/dev/null || true
	rm -f "$W"/lab*.t "$W"/lab*.rc
	echo "$(echo "$last - $t0" | bc) $sent"
}

BPS=$(rate_bps "$RATE")
IDEAL=$(echo "scale=1; $MODEL / $BPS" | bc)
echo "fanout: one node alone over HTTP ..." >&2
set -- $(run single 1)
T1=$1
echo "fanout: $NODES nodes over BitTorrent (pull --p2p) ..." >&2
set -- $(run p2p "$NODES" --p2p --seed-time 30)
TP=$1 SP=$2
echo "fanout: $NODES nodes over plain HTTP ..." >&2
set -- $(run http "$NODES")
TH=$1 SH=$2

printf '\nfan-out of %s (%d files, %d bytes) to %d lab nodes, every link %s\n' "$REPO" "$FILES" "$MODEL" "$NODES" "$RATE"
printf '%-28s %12s %16s %14s\n' "mode" "all done (s)" "mirror sent/size" "x single node"
printf '%-28s %12.1f %16s %14s\n' "ideal (size / node rate)" "$IDEAL" "-" "-"
printf '%-28s %12.1f %16s %14s\n' "1 node, HTTP" "$T1" "-" "1.00"
printf '%-28s %12.1f %16.2f %14.2f\n' "$NODES nodes, BitTorrent" "$TP" "$(echo "scale=4; $SP / $MODEL" | bc)" "$(echo "scale=4; $TP / $T1" | bc)"
printf '%-28s %12.1f %16.2f %14.2f\n' "$NODES nodes, HTTP" "$TH" "$(echo "scale=4; $SH / $MODEL" | bc)" "$(echo "scale=4; $TH / $T1" | bc)"
