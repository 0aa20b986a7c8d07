#!/usr/bin/python3
"""s3_bench.py - hubmirror on an S3 store (a one-node Ceph RGW on loopback,
memstore) against the plain S3 tools, in one run (driven by bench/s3.sh):

  1. `hubmirror pull` of one BIG_MIB file from a static hub (nginx) into the bucket
     (download, verify, multipart upload with digest checks) versus
     `s3cmd put` of the same file already on disk. Target: <= 1.3x the time.
  2. CLIENTS clients each downloading the file through `hubmirror serve`'s 302
     (curl -L: resolve on serve, bytes from RGW) versus the same CLIENTS GETs of
     a presigned URL straight from RGW. Target: >= 0.9x the aggregate MiB/s.
  3. peak RSS of the pull and of serve (during case 2).
Median of RUNS runs for each timing. Prints a table, writes bench/out/s3.json.
Environment: BIG_MIB (1024), CLIENTS (16), RUNS (3), CACHE (/tmp/hm-bench-cache),
WORK (/tmp/hm-s3-bench, removed unless KEEP=1), STRICT=1 (exit 1 on a missed target).
"""
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import ceph_lib  # noqa: E402

HM = os.environ.get("HUBMIRROR", os.path.join(ROOT, "hubmirror"))
BIG_MIB = int(os.environ.get("BIG_MIB", "1024"))
CLIENTS = int(os.environ.get("CLIENTS", "16"))
RUNS = int(os.environ.get("RUNS", "3"))
CACHE = os.environ.get("CACHE", "/tmp/hm-bench-cache")
WORK = os.environ.get("WORK", "/tmp/hm-s3-bench")
KEEP = os.environ.get("KEEP") == "1"
STRICT = os.environ.get("STRICT") == "1"
BUCKET = "bench"
REPO = "bench/big"


def say(msg):
    sys.stderr.write("bench/s3: %s\n" % msg)
    sys.stderr.flush()


def big_file():
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, "s3-big-%d.bin" % BIG_MIB)
    if not os.path.exists(path) or os.path.getsize(path) != BIG_MIB << 20:
        say("writing %d MiB of random bytes to %s" % (BIG_MIB, path))
        with open(path + ".tmp", "wb") as fh:
            for _ in range(BIG_MIB):
                fh.write(os.urandom(1 << 20))
        os.rename(path + ".tmp", path)
    return path


def big_sha256(path):
    cached = path + ".sha256"
    if os.path.exists(cached) and os.path.getmtime(cached) >= os.path.getmtime(path):
        return open(cached).read().strip()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    open(cached, "w").write(h.hexdigest())
    return h.hexdigest()


def run_rss(argv, env):
    """Runs argv; returns (seconds, peak RSS in MiB, returncode, stderr tail)."""
    t0 = time.time()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = []
    th = threading.Thread(target=lambda: err.append(p.stderr.read()))
    th.start()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    th.join()
    return time.time() - t0, ru.ru_maxrss / 1024.0, p.returncode, (err[0] if err else b"")[-1000:].decode(errors="replace")


def vmhwm(pid):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def fanout(urls, follow):
    """CLIENTS curls at once; returns aggregate MiB/s."""
    t0 = time.time()
    procs = [subprocess.Popen(["curl", "-sf", "-o", "/dev/null"] + (["-L"] if follow else []) + [u])
             for u in urls]
    rcs = [p.wait() for p in procs]
    dt = time.time() - t0
    if any(rcs):
        raise SystemExit("bench/s3: a client failed (exit codes %s)" % rcs)
    return len(urls) * BIG_MIB / dt


def main():
    for tool in ("curl", "s3cmd", "nginx"):
        if not shutil.which(tool):
            raise SystemExit("bench/s3: missing tool '%s' (mk/deps.sh test installs it)" % tool)
    missing = ceph_lib.missing_binaries()
    if missing:
        raise SystemExit("bench/s3: missing %s (apt-get install ceph-mon ceph-osd radosgw ceph-common s3cmd)" % missing)
    if not os.access(HM, os.X_OK):
        raise SystemExit("bench/s3: no hubmirror binary at %s: run make" % HM)
    src = big_file()
    load0 = os.getloadavg()
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    emu = srv = None
    res = {}
    # memstore keeps everything in RAM: room for every copy the runs write
    mem = (2 * BIG_MIB + 512) << 20
    with ceph_lib.Ceph(WORK, memstore_bytes=mem) as ceph:
        conf = ceph.s3cmd_conf(os.path.join(WORK, "s3cfg"))
        ceph.s3cmd(conf, "mb", "s3://%s" % BUCKET)
        env = dict(os.environ)
        for k, v in ceph.env().items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        env["XDG_CACHE_HOME"] = os.path.join(WORK, "xdg")
        # the hub: static files under nginx (bench/mkhub.py, as bench/run.sh), no Python in the data path
        sha = big_sha256(src)
        ports = [ceph_lib._free_port() for _ in range(3)]
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "mkhub.py"), WORK, src, sha, "1", "16",
                        str(ports[0]), str(ports[1]), str(ports[2]), "20m"], check=True, stdout=subprocess.DEVNULL)
        ngx = os.path.join(WORK, "nginx")
        emu = subprocess.Popen(["nginx", "-p", ngx, "-c", os.path.join(ngx, "nginx.conf"), "-e",
                                os.path.join(ngx, "error.log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        hub = "http://127.0.0.1:%d" % ports[0]
        for _ in range(100):
            try:
                urllib.request.urlopen(hub + "/api/models/%s/revision/main" % REPO, timeout=2)
                break
            except Exception:
                time.sleep(0.1)
        try:
            # ---- 1: pull into the bucket vs s3cmd put ----
            pull_t, put_t, pull_rss = [], [], []
            for r in range(RUNS):
                prefix = "s3://%s/run%d" % (BUCKET, r)
                e = dict(env, HUBMIRROR_S3_CACHE=os.path.join(WORK, "cache-%d" % r))
                dt, rss, rc, err = run_rss([HM, "pull", REPO, "--store", prefix, "--endpoint", hub, "-q"], e)
                if rc:
                    raise SystemExit("bench/s3: pull failed: %s" % err)
                pull_t.append(dt)
                pull_rss.append(rss)
                t0 = time.time()
                ceph.s3cmd(conf, "put", "--no-progress", src, "s3://%s/s3cmd/big-%d.bin" % (BUCKET, r), timeout=3600)
                put_t.append(time.time() - t0)
                say("run %d: pull %.1fs (peak RSS %.0f MiB), s3cmd put %.1fs" % (r + 1, dt, rss, put_t[-1]))
                # keep RGW's memory for the next run: drop what this run stored
                ceph.s3cmd(conf, "del", "s3://%s/s3cmd/big-%d.bin" % (BUCKET, r))
                if r + 1 < RUNS:
                    ceph.s3cmd(conf, "del", "--recursive", "--force", "%s/" % prefix)
                ceph.gc()  # deleted data stays in RADOS (memstore: RAM) until RGW's gc runs
            res["pull_s"] = statistics.median(pull_t)
            res["s3cmd_put_s"] = statistics.median(put_t)
            res["pull_rss_mib"] = max(pull_rss)
            # ---- 2: CLIENTS downloads through serve's 302 vs straight from RGW ----
            store = "s3://%s/run%d" % (BUCKET, RUNS - 1)
            e = dict(env, HUBMIRROR_S3_CACHE=os.path.join(WORK, "cache-serve"))
            out = open(os.path.join(WORK, "serve.out"), "w+")
            srv = subprocess.Popen([HM, "serve", "--store", store, "--listen", "127.0.0.1:0", "-q"], env=e,
                                   stdout=out, stderr=subprocess.DEVNULL)
            url = None
            for _ in range(300):
                out.seek(0)
                line = out.readline()
                if line.startswith("listening on "):
                    url = line.split()[-1]
                    break
                time.sleep(0.1)
            if not url:
                raise SystemExit("bench/s3: serve did not start")
            resolve = "%s/%s/resolve/main/big.bin" % (url, REPO)
            via, direct = [], []
            for r in range(RUNS):
                # the same GETs of a presigned URL, straight from RGW
                req = urllib.request.Request(resolve, method="GET")

                class NoRedirect(urllib.request.HTTPRedirectHandler):
                    def redirect_request(self, *a, **kw):
                        return None
                try:
                    urllib.request.build_opener(NoRedirect).open(req, timeout=30)
                    raise SystemExit("bench/s3: serve did not redirect")
                except urllib.error.HTTPError as ex:
                    loc = ex.headers["Location"]
                # alternating which goes first, so a machine that gets busier is not one side's loss
                if r % 2:
                    via.append(fanout([resolve] * CLIENTS, True))
                    direct.append(fanout([loc] * CLIENTS, False))
                else:
                    direct.append(fanout([loc] * CLIENTS, False))
                    via.append(fanout([resolve] * CLIENTS, True))
                say("run %d: %d clients via serve %.0f MiB/s, straight from RGW %.0f MiB/s"
                    % (r + 1, CLIENTS, via[-1], direct[-1]))
            res["via_serve_mibs"] = statistics.median(via)
            res["direct_mibs"] = statistics.median(direct)
            res["serve_rss_mib"] = vmhwm(srv.pid)
        finally:
            if srv:
                srv.terminate()
                srv.wait()
            if emu:
                emu.terminate()
                emu.wait()
    r1 = res["pull_s"] / res["s3cmd_put_s"]
    r2 = res["via_serve_mibs"] / res["direct_mibs"]
    ok1, ok2 = r1 <= 1.3, r2 >= 0.9
    print("hubmirror S3 benchmark: %s, %d CPUs, Ceph RGW %s (memstore) on loopback, median of %d runs"
          % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), os.cpu_count(),
             subprocess.run(["radosgw", "--version"], capture_output=True, text=True).stdout.split()[2]
             if shutil.which("radosgw") else "?", RUNS))
    fmt = "%-52s %12s %22s %7s %8s %s"
    load1 = os.getloadavg()
    print("load average (1 min) before %.1f, after %.1f" % (load0[0], load1[0]))
    print(fmt % ("case", "hubmirror", "peer", "ratio", "target", ""))
    print(fmt % ("1 pull %d MiB into the bucket (s)" % BIG_MIB, "%.1f" % res["pull_s"],
                 "s3cmd put %.1f" % res["s3cmd_put_s"], "%.2f" % r1, "<= 1.3", "ok" if ok1 else "MISSED"))
    print(fmt % ("2 %d clients x %d MiB via serve 302 (MiB/s)" % (CLIENTS, BIG_MIB), "%.0f" % res["via_serve_mibs"],
                 "RGW direct %.0f" % res["direct_mibs"], "%.2f" % r2, ">= 0.9", "ok" if ok2 else "MISSED"))
    print(fmt % ("3 peak RSS: pull / serve (MiB)", "%.0f / %.0f" % (res["pull_rss_mib"], res["serve_rss_mib"]),
                 "-", "-", "-", "info"))
    print("  case 1: hubmirror's time includes downloading the file from the hub (nginx, loopback)")
    print("  and verifying it; s3cmd uploads a file already on disk. Clients, RGW and hubmirror share the CPUs.")
    os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
    res.update({"pull_ratio": r1, "serve_ratio": r2, "big_mib": BIG_MIB, "clients": CLIENTS, "runs": RUNS,
                "load_before": load0[0], "load_after": load1[0],
                "parallel": int(os.environ.get("HUBMIRROR_S3_PARALLEL") or 4)})
    json.dump(res, open(os.path.join(ROOT, "bench", "out", "s3.json"), "w"), indent=1)
    if not KEEP:
        shutil.rmtree(WORK, ignore_errors=True)
    if STRICT and not (ok1 and ok2):
        sys.exit(1)


def on_term(*_):
    raise KeyboardInterrupt  # unwinds through Ceph's context manager: daemons stopped


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, on_term)
    main()
