#!/bin/sh
# demo.sh - `make demo`: the main job end to end on loopback. Generates the
# tiny-llama sample, serves it from the hub emulator as demo-org/tiny-llama,
# then pulls, verifies, lists, checks out (hf-cache layout) and shows stats,
# into ./demo-store. Exits non-zero if any step fails.
set -u
cd "$(dirname "$0")/.." || exit 1
PY=/usr/bin/python3
REPO=demo-org/tiny-llama
STORE=demo-store
work=$(mktemp -d /tmp/hm-demo-XXXXXX) || exit 1
emu_pid=""

cleanup() {
	if [ -n "$emu_pid" ]; then
		kill "$emu_pid" 2>/dev/null
		wait "$emu_pid" 2>/dev/null
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

banner() {
	printf '\n==== %s\n' "$*"
}

step() {
	banner "$*"
	"$@"
	rc=$?
	if [ $rc -ne 0 ]; then
		printf 'demo: step failed (exit %d): %s\n' "$rc" "$*" >&2
		exit 1
	fi
}

[ -x ./hubmirror ] || { echo "demo: ./hubmirror is not built (run make)" >&2; exit 1; }

banner "generating the sample checkpoint"
$PY tests/sample/make_sample.py "$work/sample" || exit 1
ls -l "$work/sample" "$work/sample/original"

cat > "$work/config.json" <<EOF
{"repos": [{"type": "model", "id": "$REPO",
            "commits": [{"dir": "$work/sample", "refs": ["main"], "tags": ["v1.0"]}]}]}
EOF

banner "starting the hub emulator"
$PY tests/hubemu/hubemu.py --config "$work/config.json" --port 0 --cdn-port 0 \
	--ready-file "$work/ready.json" 2>"$work/emu.log" &
emu_pid=$!
i=0
while [ ! -f "$work/ready.json" ]; do
	i=$((i + 1))
	if [ $i -gt 200 ] || ! kill -0 "$emu_pid" 2>/dev/null; then
		echo "demo: the emulator did not start" >&2
		cat "$work/emu.log" >&2
		exit 1
	fi
	sleep 0.05
done
PORT=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$work/ready.json")
ENDPOINT=http://127.0.0.1:$PORT
echo "emulator at $ENDPOINT (pid $emu_pid)"

rm -rf "$STORE" 2>/dev/null || { chmod -R u+w "$STORE" && rm -rf "$STORE"; }
# A clean environment: no token or cache settings from the caller.
unset HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_TOKEN_PATH HF_ENDPOINT http_proxy https_proxy \
	HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY no_proxy
export HF_HOME="$work/hf-home"

step ./hubmirror pull $REPO --endpoint "$ENDPOINT" --store $STORE
step ./hubmirror verify --store $STORE
step ./hubmirror ls --store $STORE
step ./hubmirror ls $REPO --store $STORE
step ./hubmirror checkout $REPO --to $STORE/checkout --layout hf-cache --store $STORE
banner "checked out tree"
find $STORE/checkout | sort | head -40
step ./hubmirror stats --store $STORE

# The lab mirror: serve this store; a second machine (here: a second store)
# points its endpoint at it and pulls, byte-identical and verified.
banner "./hubmirror serve --store $STORE --listen 127.0.0.1:0"
./hubmirror serve --store $STORE --listen 127.0.0.1:0 --access-log "$work/access.log" \
	>"$work/serve.out" 2>"$work/serve.err" &
srv_pid=$!
i=0
while ! grep -q '^listening on ' "$work/serve.out" 2>/dev/null; do
	i=$((i + 1))
	if [ $i -gt 200 ] || ! kill -0 "$srv_pid" 2>/dev/null; then
		echo "demo: the server did not start" >&2
		cat "$work/serve.err" >&2
		exit 1
	fi
	sleep 0.05
done
MIRROR=$(sed -n 's/^listening on //p' "$work/serve.out")
echo "mirror at $MIRROR (pid $srv_pid)"
step ./hubmirror pull $REPO --endpoint "$MIRROR" --store $STORE/lab-machine
step ./hubmirror verify --store $STORE/lab-machine
# A lab machine provisioned from a manifest through the mirror, pinned by a lockfile.
printf '# the lab'"'"'s models\n%s\n' "$REPO" > "$work/models.txt"
step ./hubmirror sync "$work/models.txt" --endpoint "$MIRROR" --store $STORE/lab-machine \
	--to $STORE/lab-models --layout hf-cache
banner "the lockfile"
head -c 600 "$work/models.txt.lock"; echo
kill -TERM "$srv_pid"
wait "$srv_pid" || { echo "demo: the server did not stop cleanly" >&2; exit 1; }
# An air-gapped machine: an offline bundle, verified on import.
step ./hubmirror export $REPO -o "$work/bundle.tar.zst" --store $STORE
step ./hubmirror import "$work/bundle.tar.zst" --store $STORE/air-gapped
step ./hubmirror verify --store $STORE/air-gapped
banner "the mirror's access log"
cat "$work/access.log"
step ./hubmirror stats --store $STORE

# Formats and the engine: convert the sample to GGUF (stored content-addressed),
# then smoke-test both the original and the conversion with the bundled engine.
step ./hubmirror inspect $REPO --store $STORE
step ./hubmirror convert $REPO --to gguf --type q8_0 -o "$work/tiny-llama-q8_0.gguf" --store $STORE
step ./hubmirror inspect "$work/tiny-llama-q8_0.gguf"
step ./hubmirror run $REPO -p "Once upon a time" -n 16 --store $STORE
step ./hubmirror smoke "$work/tiny-llama-q8_0.gguf"
step ./hubmirror smoke $REPO --store $STORE

banner "demo ok"
exit 0
