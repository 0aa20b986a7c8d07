#!/bin/sh
# stats.sh - times `hubmirror stats` and `du` on a large history: ROWS
# downloads rows (default 1,000,000) and ROWS/10 served rows bulk-inserted into
# a fresh store's index.db. Not part of `make check` (no timing thresholds
# there); prints one line per command: best and median of RUNS runs.
# The rows go into the tables only (the triggers of schema v6 run as for any
# insert); the first `stats` packs them into the statistics cache, the way a
# store migrated from v5 gets it, and is timed on its own line.
#   sh bench/stats.sh [ROWS]        (RUNS=5; KEEP=1 keeps the store and prints
#                                    where; STORE=DIR times an existing one)
set -eu
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
RUNS=${RUNS:-5}
PY=${PYTHON:-/usr/bin/python3}
[ -x ./hubmirror ] || make -s hubmirror
DIR=$(mktemp -d "${TMPDIR:-/tmp}/hubmirror-stats-bench-XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "keeping $DIR"; else trap 'rm -rf "$DIR"' EXIT; fi
S=${STORE:-$DIR/store}
cp ./hubmirror "$DIR/hubmirror"          # a rebuild while this runs is harmless
H=$DIR/hubmirror
if [ -n "${STORE:-}" ]; then
	"$H" du --store "$S" >/dev/null  # migrates an older store
else
"$H" du --store "$S" >/dev/null          # creates the store at the current schema

"$PY" - "$S/index.db" "$ROWS" <<'PYEOF'
import os, random, sqlite3, sys, time
db, rows = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
con = sqlite3.connect(db)
con.execute("PRAGMA synchronous = OFF")
t0 = time.time()
repos = ["org%d/model-%d" % (i % 37, i) for i in range(500)]
files = ["model-%05d-of-00050.safetensors" % i for i in range(50)] + ["config.json", "tokenizer.json"]
ends = ["huggingface.co", "cdn-lfs.hf.co", "cas-bridge.xethub.hf.co", "mirror.lab:8080"]
day0 = 1704067200  # 2024-01-01
year = 365 * 86400
# History as pulls write it: each pull appends the rows of some files of one
# repo from one endpoint, in time order over a year. SHUFFLE=1 scatters every
# row instead (the worst case for the per-key look-ups).
shuffle = os.environ.get("SHUFFLE") == "1"
def dl():
    i = 0
    while i < rows:
        repo, end, t = rnd.choice(repos), rnd.choice(ends), day0 + i * year // rows
        typ = "dataset" if rnd.random() < 0.1 else "model"
        for path in rnd.sample(files, rnd.randint(1, len(files))):
            if i == rows:
                break
            if shuffle:
                repo, end, t = rnd.choice(repos), rnd.choice(ends), day0 + rnd.randrange(year)
            size = rnd.choice((1 << 10, 1 << 20, 1 << 26, 5 << 30))
            failed = rnd.random() < 0.01
            yield (typ, repo, "c" * 40, path, "%064x" % i, size, size // 3 if failed else size,
                   size / rnd.uniform(1e6, 5e8), 8, rnd.choice((0, 0, 0, 1, 3)),
                   "failed" if failed else "ok", "reset" if failed else None, end, t)
            i += 1
def sv():
    for i in range(rows // 10):
        size = rnd.choice((1 << 10, 1 << 20, 1 << 26))
        yield ("file", "GET", "model", rnd.choice(repos), "main", rnd.choice(files),
               rnd.choice((200, 200, 200, 206, 404)), size, size / rnd.uniform(1e7, 1e9),
               "10.0.%d.%d" % (rnd.randrange(4), rnd.randrange(250)), rnd.choice(("hit", "hit", "miss")),
               day0 + i * 10 * year // rows)
# indexes are built once after the bulk insert (much faster than row by row)
idx = con.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                  " AND tbl_name IN ('downloads', 'served')").fetchall()
for (sql,) in idx:
    con.execute("DROP INDEX " + sql.split()[2])
with con:
    con.executemany("INSERT INTO downloads(repo_type, repo, revision, path, sha256, size, bytes, seconds,"
                    " connections, retries, result, error, endpoint, started_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", dl())
    con.executemany("INSERT INTO served(kind, method, repo_type, repo, revision, path, status, bytes,"
                    " seconds, client, cache, started_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", sv())
for (sql,) in idx:
    con.execute(sql)
con.execute("ANALYZE")
con.close()
print("generated %d downloads rows and %d served rows in %.1f s" % (rows, rows // 10, time.time() - t0))
PYEOF
fi
uptime
ls -l "$S/index.db" | awk '{printf "index.db: %.0f MiB\n", $5 / 1048576}'
"$PY" - "$H" "$S" <<'PYEOF'
import subprocess, sys, time
t0 = time.perf_counter()
subprocess.run([sys.argv[1], "stats", "--store", sys.argv[2]], check=True, stdout=subprocess.DEVNULL)
print("first stats (packs what no chunk holds yet)  wall %6.3f s" % (time.perf_counter() - t0))
PYEOF
ls -l "$S/index.db" | awk '{printf "index.db with the cache: %.0f MiB\n", $5 / 1048576}'

bench() {
	"$PY" - "$RUNS" "$@" <<'PYEOF'
import resource, subprocess, sys, time
runs, argv = int(sys.argv[1]), sys.argv[2:]
wall, cpu = [], []
for _ in range(runs):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
wall.sort()
cpu.sort()
name = " ".join(a for a in argv[1:] if "/" not in a or a.endswith(".svg")).replace("--store", "").strip()
print("%-44s wall best %6.3f s  median %6.3f s   cpu median %6.3f s" % (name, wall[0], wall[len(wall) // 2],
                                                                       cpu[len(cpu) // 2]))
PYEOF
}
bench $H stats --store "$S"
bench $H stats --by day --store "$S"
bench $H stats --by file --store "$S"
bench $H stats --by endpoint --store "$S"
bench $H stats --json --store "$S"
bench $H stats --json --top 0 --store "$S"
bench $H stats --csv --store "$S"
bench $H stats --by file --csv --top 0 --store "$S"
bench $H stats --since 2024-06-01 --until 2024-06-30 --store "$S"
bench $H stats --since 2024-06-01 --until 2024-06-30 --json --store "$S"
bench $H stats --repo org1/model-1 --store "$S"
bench $H stats --repo org1/model-1 --since 2024-06-01 --until 2024-06-30 --by file --store "$S"
bench $H stats --by day --chart "$DIR/chart.svg" --store "$S"
bench $H du --store "$S"
