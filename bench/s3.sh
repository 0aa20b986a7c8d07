#!/bin/sh
# s3.sh - hubmirror on an S3 store (a one-node Ceph RGW on loopback) against
# s3cmd and RGW itself, in one run (not part of `make check`):
#   1. pull of a BIG_MIB (1024) MiB file into the bucket vs `s3cmd put` of it
#      (target <= 1.3x the time);
#   2. CLIENTS (16) downloads through serve's 302s vs the same GETs of a
#      presigned URL straight from RGW (target >= 0.9x the aggregate MiB/s);
#   3. peak RSS of pull and serve.
# memstore keeps the data in RAM: about 2 x BIG_MIB + 512 MiB.
# Environment: BIG_MIB, CLIENTS, RUNS (3), CACHE, WORK, KEEP=1, STRICT=1.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/mk/deps.sh" test
exec /usr/bin/python3 "$ROOT/bench/s3_bench.py" "$@"
