"""ceph_lib.py - a real one-node Ceph with an S3 gateway for the S3 tests:
a monitor, one OSD on memstore (data in RAM) and radosgw, all on 127.0.0.1
with free ports and a private temp directory, `auth none` between daemons
and one S3 user with known keys. Every daemon is stopped by its PID (also
when the test fails). Recipe: shared/reference/scale-out.md, appendix.

Usage:
    with Ceph(tmpdir) as ceph:
        ceph.url, ceph.access_key, ceph.secret_key
        ceph.env(bucket)   # AWS_* variables for hubmirror / s3cmd
"""

import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph", "s3cmd")


def missing_binaries():
    return [b for b in BINARIES if not any(os.access(os.path.join(d, b), os.X_OK)
                                           for d in ("/usr/bin", "/usr/sbin", "/bin"))]


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class CephError(Exception):
    pass


class Ceph:
    def __init__(self, base, memstore_bytes=1 << 30, access_key="hmtestaccesskey0001",
                 secret_key="hmTestSecretKey/0001+abcdefghijklmnopqrstu"):
        self.dir = os.path.join(base, "ceph")
        os.makedirs(self.dir, exist_ok=True)
        self.memstore_bytes = memstore_bytes
        self.access_key = access_key
        self.secret_key = secret_key
        self.pids = []
        self.procs = []
        self.mon_port = _free_port()
        self.port = _free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.conf = os.path.join(self.dir, "ceph.conf")

    # ---- lifecycle ------------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _write_conf(self):
        d = self.dir
        fsid = str(uuid.uuid4())
        self.fsid = fsid
        for sub in ("mon", "osd", "rgw", "run"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        with open(self.conf, "w") as fh:
            fh.write("""[global]
fsid = %(fsid)s
mon_host = v1:127.0.0.1:%(mon)d
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
mon_max_pg_per_osd = 1000
osd_pool_default_pg_autoscale_mode = off
run_dir = %(d)s/run
log_file = %(d)s/$name.log
admin_socket = %(d)s/run/$name.asok
osd_objectstore = memstore
memstore_device_bytes = %(mem)d
public_network = 127.0.0.0/8
ms_bind_ipv4 = true
ms_bind_ipv6 = false
mon_warn_on_pool_no_redundancy = false
osd_max_object_size = 1073741824
[mon.a]
mon_data = %(d)s/mon
[osd.0]
osd_data = %(d)s/osd
[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:%(port)d
rgw_data = %(d)s/rgw
rgw_dns_name = 127.0.0.1
""" % {"fsid": fsid, "mon": self.mon_port, "d": d, "mem": self.memstore_bytes, "port": self.port})

    def _run(self, *args, timeout=60, check=True):
        p = subprocess.run(list(args), capture_output=True, timeout=timeout)
        if check and p.returncode != 0:
            raise CephError("%s failed (%d): %s" % (" ".join(args[:3]), p.returncode,
                                                    (p.stderr or p.stdout).decode(errors="replace")[-800:]))
        return p

    def _daemon(self, name, *args):
        pidfile = os.path.join(self.dir, "run", name + ".pid")
        try:
            os.unlink(pidfile)
        except FileNotFoundError:
            pass
        # -f: stays in the foreground, so the Popen is the daemon (killed by PID)
        log = open(os.path.join(self.dir, name + ".out"), "ab")
        p = subprocess.Popen(list(args) + ["-f"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(p)
        self.pids.append(p.pid)
        return p

    def _wait(self, what, fn, limit):
        t0 = time.time()
        last = None
        while time.time() - t0 < limit:
            try:
                if fn():
                    return
            except Exception as e:  # keep trying until the limit
                last = e
            time.sleep(0.3)
        raise CephError("%s not ready after %ds (%s); logs in %s" % (what, limit, last, self.dir))

    def ceph(self, *args, timeout=30):
        return self._run("ceph", "-c", self.conf, "--connect-timeout", "5", *args, timeout=timeout)

    def start(self):
        c = self.conf
        self._write_conf()
        monmap = os.path.join(self.dir, "monmap")
        self._run("monmaptool", "--create", "--addv", "a", "[v1:127.0.0.1:%d]" % self.mon_port,
                  "--fsid", self.fsid, monmap)
        self._run("ceph-mon", "-c", c, "--mkfs", "-i", "a", "--monmap", monmap)
        self._daemon("mon", "ceph-mon", "-c", c, "-i", "a")
        self._wait("ceph-mon", lambda: self.ceph("-s", check=False) if False else
                   self._run("ceph", "-c", c, "--connect-timeout", "3", "-s", timeout=15,
                             check=False).returncode == 0, 120)
        self._run("ceph", "-c", c, "--connect-timeout", "5", "osd", "create", timeout=60)
        self._run("ceph-osd", "-c", c, "-i", "0", "--mkfs", timeout=60)
        # the OSD sometimes exits at once ("wrong fsid") when it asked before
        # the monitor had its map: start it again
        for attempt in range(5):
            osd = self._daemon("osd", "ceph-osd", "-c", c, "-i", "0")
            time.sleep(1.5)
            if osd.poll() is None:
                break
            self.procs.remove(osd)
            self.pids.remove(osd.pid)
        else:
            raise CephError("ceph-osd keeps exiting; see %s/osd.out" % self.dir)

        def osd_up():
            out = self._run("ceph", "-c", c, "--connect-timeout", "3", "osd", "stat", timeout=15,
                            check=False).stdout.decode()
            return "1 up" in out
        self._wait("ceph-osd", osd_up, 120)
        self._daemon("rgw", "radosgw", "-c", c, "-n", "client.rgw.a")

        def rgw_up():
            try:
                urllib.request.urlopen(self.url + "/", timeout=3)
            except urllib.error.HTTPError:
                return True
            return True
        # a loaded 2-core machine has taken 90 s and more to start radosgw
        self._wait("radosgw", rgw_up, 240)

        def user():
            return self._run("radosgw-admin", "-c", c, "user", "create", "--uid", "hmtest",
                             "--display-name", "hmtest", "--access-key", self.access_key,
                             "--secret-key", self.secret_key, timeout=30, check=False).returncode == 0
        self._wait("radosgw user", user, 120)

    def gc(self):
        """Frees the space of deleted objects now (RGW otherwise waits hours,
        and memstore holds everything in RAM)."""
        self._run("radosgw-admin", "-c", self.conf, "gc", "process", "--include-all", timeout=300, check=False)

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        self.procs = []

    # ---- clients --------------------------------------------------------------
    def env(self, region="us-east-1"):
        """AWS variables for hubmirror (the endpoint is a custom one: path-style)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": region, "AWS_ENDPOINT_URL": self.url,
                "AWS_SESSION_TOKEN": None, "AWS_DEFAULT_REGION": None, "AWS_ENDPOINT_URL_S3": None,
                "AWS_PROFILE": None}

    def s3cmd_conf(self, path):
        with open(path, "w") as fh:
            fh.write("""[default]
access_key = %s
secret_key = %s
host_base = 127.0.0.1:%d
host_bucket = 127.0.0.1:%d
use_https = False
signature_v2 = False
bucket_location = us-east-1
check_ssl_certificate = False
""" % (self.access_key, self.secret_key, self.port, self.port))
        return path

    def s3cmd(self, conf, *args, timeout=120, check=True):
        p = subprocess.run(["s3cmd", "-c", conf] + list(args), capture_output=True, timeout=timeout)
        if check and p.returncode != 0:
            raise CephError("s3cmd %s failed: %s" % (" ".join(args), p.stderr.decode(errors="replace")[-800:]))
        return p


if __name__ == "__main__":
    import sys
    import tempfile
    base = tempfile.mkdtemp(prefix="ceph-")
    t0 = time.time()
    with Ceph(base) as c:
        print("up in %.1fs at %s" % (time.time() - t0, c.url))
        conf = c.s3cmd_conf(os.path.join(base, "s3cfg"))
        print(c.s3cmd(conf, "mb", "s3://probe").stdout.decode())
        if len(sys.argv) > 1:
            time.sleep(float(sys.argv[1]))
    print("stopped")


class FaultProxy:
    """An HTTP proxy in front of RGW that answers the first matching requests
    with a fault instead of forwarding them: ("503", method) sends 503
    SlowDown, ("drop", method) closes the connection without an answer,
    ("cut", method) forwards the request but closes the connection after half
    of the answer's body (after waiting the fault's 4th element, seconds, if
    given), ("hang", method) reads the request and answers nothing for the
    fault's 4th element seconds (default 120) or until the proxy stops. A
    3rd element, when given, must be a substring of the path. The
    Host header is forwarded as sent, so SigV4 signatures stay valid.
    Every forwarded request's (method, path, status) is in .answers."""

    def __init__(self, target_port, faults):
        import http.client
        import http.server
        import threading
        self.faults = list(faults)
        self.fired = []
        self.log = []   # (method, path) of every request
        self.answers = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        proxy = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with proxy.lock:
                    proxy.log.append((self.command, self.path))
                    fault = next((f for f in proxy.faults if f[1] == self.command and
                                  (len(f) < 3 or f[2] in self.path)), None)
                    if fault:
                        proxy.faults.remove(fault)
                        proxy.fired.append(fault)
                if fault and fault[0] == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault and fault[0] == "hang":
                    proxy.stopping.wait(fault[3] if len(fault) > 3 else 120)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault and fault[0] == "503":
                    msg = b"<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>slow</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                c = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
                c.request(self.command, self.path, body=body if n or self.command in ("PUT", "POST") else None,
                          headers=hdrs)
                r = c.getresponse()
                data = r.read()
                with proxy.lock:
                    proxy.answers.append((self.command, self.path, r.status))
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                c.close()
                if fault and fault[0] == "cut" and self.command != "HEAD":
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    if len(fault) > 3:
                        time.sleep(fault[3])
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
