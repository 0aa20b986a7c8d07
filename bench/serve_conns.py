#!/usr/bin/python3
"""serve_conns.py - memory of a server holding many idle keep-alive
connections, for bench/serve.sh. Reads VmRSS/VmHWM/Threads of PID from
/proc while idle, with N connections open (each has completed one request
and is kept alive), and after they are closed. Every connection is used
twice (once before and once after the measurement), which proves that all N
were open at once. Prints one JSON object on stdout.

Usage: serve_conns.py HOST PORT PID N PATH
"""
import json
import resource
import socket
import sys
import time


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])  # KiB
            elif k == "Threads":
                out[k] = int(v)
    return out


def read_response(s):
    """reads one HTTP/1.1 response with Content-Length; returns the status"""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise IOError("connection closed before the response headers")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
        if k.strip().lower() == b"connection" and v.strip().lower() == b"close":
            raise IOError("server answered 'Connection: close'")
    if length is None:
        raise IOError("response without Content-Length")
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise IOError("connection closed mid-body")
        body += chunk
    return status


def settle(pid, secs=1.5):
    time.sleep(secs)
    return proc_status(pid)


def main():
    host, port, pid, n, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: serve_conns.py\r\n\r\n" % (path, host, port)).encode()
    res = {"n": n}
    res["idle"] = settle(pid, 0.5)
    socks = []
    t0 = time.time()
    for i in range(n):
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(req)
        socks.append(s)
    bad = 0
    for s in socks:
        if read_response(s) != 200:
            bad += 1
    res["open_seconds"] = round(time.time() - t0, 3)
    res["open"] = settle(pid)
    # second request on every connection: all N were alive at once
    for s in socks:
        s.sendall(req)
    for s in socks:
        if read_response(s) != 200:
            bad += 1
    res["non_200"] = bad
    for s in socks:
        s.close()
    res["closed"] = settle(pid, 3)
    print(json.dumps(res))


if __name__ == "__main__":
    try:
        main()
    except (OSError, IOError, ValueError) as e:
        print("serve_conns.py: %s" % e, file=sys.stderr)
        sys.exit(1)
