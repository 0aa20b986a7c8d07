#!/bin/sh
# ui.sh - times the web pages of `hubmirror serve` on a big store: REPOS
# repositories (default 10,000), each with one revision of 4 files, and
# SERVED served-file rows (default 200,000) bulk-inserted into a fresh
# store's index.db. Not part of `make check` (no timing thresholds there).
# Prints, per page, the best and median of RUNS requests (curl's total time,
# the server warm: the first request of each page is not counted), and the
# very first request of the home page (cold: the repo list, the served
# counts and the store's usage read from the index; later requests reuse
# them until the index changes, or for 2 s (served) and 30 s (usage)).
#   sh bench/ui.sh [REPOS] [SERVED]     (RUNS=9; KEEP=1 keeps the store)
set -eu
cd "$(dirname "$0")/.."
REPOS=${1:-10000}
SERVED=${2:-200000}
RUNS=${RUNS:-9}
PY=${PYTHON:-/usr/bin/python3}
[ -x ./hubmirror ] || make -s hubmirror
DIR=$(mktemp -d "${TMPDIR:-/tmp}/hubmirror-ui-bench-XXXXXX")
PID=
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT INT TERM
S=$DIR/store
cp ./hubmirror "$DIR/hubmirror"
H=$DIR/hubmirror
"$H" du --store "$S" >/dev/null          # creates the store at the current schema

"$PY" - "$S" "$REPOS" "$SERVED" <<'PYEOF'
import hashlib, os, random, sqlite3, sys, time
store, nrepos, nserved = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(7)
con = sqlite3.connect(os.path.join(store, "index.db"))
con.execute("PRAGMA synchronous = OFF")
now = int(time.time())
# a few hundred distinct blobs shared by the repos (what deduplication sees)
blobs = []
for i in range(400):
    data = b"blob %d\n" % i
    sha = hashlib.sha256(data).hexdigest()
    path = os.path.join(store, "blobs", "sha256", sha[:2], sha)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    blobs.append((sha, len(data)))
con.executemany("INSERT INTO blobs (sha256, size, added_at) VALUES (?, ?, ?)", [(s, n, now) for s, n in blobs])
names = []
for i in range(nrepos):
    kind = "dataset" if i % 10 == 9 else "model"
    name = "org%d/%s-%05d" % (i % 97, "data" if kind == "dataset" else "model", i)
    names.append((kind, name))
    rid = con.execute("INSERT INTO repos (type, name) VALUES (?, ?)", (kind, name)).lastrowid
    commit = hashlib.sha1(name.encode()).hexdigest()
    vid = con.execute("INSERT INTO revisions (repo_id, commit_sha, pulled_at) VALUES (?, ?, ?)",
                      (rid, commit, now - rnd.randrange(86400 * 90))).lastrowid
    con.execute("INSERT INTO refs (repo_id, name, commit_sha, updated_at) VALUES (?, 'main', ?, ?)", (rid, commit, now))
    for path in ("config.json", "tokenizer.json", "model.safetensors", "README.md"):
        sha, n = blobs[rnd.randrange(len(blobs))]
        con.execute("INSERT INTO files (revision_id, path, size, sha256, git_oid, lfs) VALUES (?, ?, ?, ?, '', 0)",
                    (vid, path, n, sha))
rows = []
for i in range(nserved):
    kind, name = names[int(rnd.paretovariate(1.2)) % len(names)]
    rows.append(("file", "GET", kind, name, "main", "model.safetensors", 200, 1000, 0.01, "10.0.0.%d" % (i % 50),
                 "hit", now - rnd.randrange(86400 * 30)))
con.executemany("INSERT INTO served (kind, method, repo_type, repo, revision, path, status, bytes, seconds, client,"
                " cache, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
con.commit()
PYEOF

"$H" stats --store "$S" >/dev/null       # packs the statistics cache once, as any first report does
"$H" serve --store "$S" --listen 127.0.0.1:0 -q >"$DIR/out" 2>"$DIR/err" &
PID=$!
i=0
until grep -q listening "$DIR/out" 2>/dev/null; do
	i=$((i + 1)); [ $i -lt 200 ] || { cat "$DIR/err"; exit 1; }; sleep 0.05
done
URL=$(sed -n 's/^listening on //p' "$DIR/out")
echo "store: $REPOS repos, $SERVED served rows; $URL; best / median of $RUNS (seconds)"
page() {
	curl -s -o /dev/null "$URL$1"
	for _ in $(seq "$RUNS"); do curl -s -o /dev/null -w '%{time_total}\n' "$URL$1"; done | sort -n |
		awk -v p="$1" '{v[NR]=$1} END {printf "%-44s %.4f  %.4f\n", p, v[1], v[int((NR+1)/2)]}'
}
printf "%-44s %.4f  (right after start: waits for the warm-up read of the store)\n" "/ (cold)" \
	"$(curl -s -o /dev/null -w '%{time_total}' "$URL/")"
page "/"
page "/?page=100"
page "/?q=model-0999"
page "/?sort=served"
page "/?sort=size&type=dataset"
page "/ui/repo/model/org0/model-00000"
page "/ui/stats"
page "/ui/chart.svg?k=days"
page "/ui/activity?refresh=0"
