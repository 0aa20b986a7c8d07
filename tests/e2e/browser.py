"""browser.py - headless Chromium driven over the DevTools protocol, with the
standard library only (a small WebSocket client). The test starts it, and it
is stopped by PID when the test ends (it is in t.procs). A Page records what
a real browser saw: console messages and exceptions, every request it made,
JavaScript dialogs; it evaluates expressions and takes screenshots."""

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import lib
from lib import check, Fail


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    # make check installs it (mk/deps.sh test); when run alone, try the same
    subprocess.run(["sh", os.path.join(lib.ROOT, "mk", "deps.sh"), "test"], capture_output=True, timeout=900)
    p = shutil.which("chromium")
    check(p, "chromium is not installed and could not be installed (no network or no root?):"
             " run 'sudo apt-get install -y chromium'")
    return p


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, masked
    from the client, fragmented or not from the server."""

    def __init__(self, host, port, path, timeout=60):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           % (path, host, port, key)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.sock.recv(4096)
            if not d:
                raise Fail("DevTools closed the WebSocket handshake")
            buf += d
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        check(b" 101 " in head.split(b"\r\n")[0], "DevTools handshake: %r" % head[:200])

    def send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        hdr = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                               bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                               bytes([0x80 | 127]) + struct.pack(">Q", n))
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
        self.sock.sendall(hdr + mask + masked)

    def _read(self, n):
        chunks, have = [self.buf], len(self.buf)
        while have < n:
            d = self.sock.recv(1 << 18)
            if not d:
                raise Fail("DevTools closed the connection")
            chunks.append(d)
            have += len(d)
        data = b"".join(chunks)
        out, self.buf = data[:n], data[n:]
        return out

    def recv(self):
        msg = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7f
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
            op = b0 & 0x0f
            if op == 8:
                raise Fail("DevTools closed the WebSocket")
            if op in (9, 10):
                continue
            msg += payload
            if b0 & 0x80:
                return msg.decode("utf-8")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Browser:
    """One headless Chromium with one tab."""

    def __init__(self, t, wait=60):
        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=t.tmp)
        self.log_path = os.path.join(self.profile, "stderr")
        argv = [chromium_binary(), "--headless=new", "--remote-debugging-port=0", "--user-data-dir=" + self.profile,
                "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--no-proxy-server",
                "--password-store=basic", "--use-mock-keychain", "about:blank"]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                         env=t.environ({}))
        t.procs.append(self.proc)
        t.browser = self
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + wait
        while True:
            if os.path.exists(port_file):
                lines = open(port_file).read().split("\n")
                if len(lines) >= 2 and lines[1]:
                    break
            if self.proc.poll() is not None or time.time() > deadline:
                raise Fail("chromium did not start (rc %s): %s" % (self.proc.poll(), self.stderr()[-2000:]))
            time.sleep(0.05)
        self.ws = WebSocket("127.0.0.1", int(lines[0]), lines[1])
        self.next_id = 0
        self.events = []
        self.sid = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.sid = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for m in ("Page.enable", "Runtime.enable", "Network.enable", "Log.enable"):
            self.call(m)

    def stderr(self):
        return lib.read(self.log_path).decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.ws.close()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _event(self, m):
        self.events.append(m)
        if m.get("method") == "Page.javascriptDialogOpening":
            # never leave a page blocked on a dialog; the test fails on it anyway
            self._send("Page.handleJavaScriptDialog", {"accept": False})

    def _send(self, method, params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.sid and not method.startswith("Target."):
            msg["sessionId"] = self.sid
        self.ws.send(json.dumps(msg))
        return self.next_id

    def call(self, method, **params):
        want = self._send(method, params)
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == want:
                if "error" in m:
                    raise Fail("DevTools %s: %s" % (method, m["error"]))
                return m.get("result", {})
            if "method" in m:
                self._event(m)

    def pump(self, until, timeout=30):
        """Reads events until until(event) is true."""
        deadline = time.time() + timeout
        for m in self.events:
            if until(m):
                return m
        while time.time() < deadline:
            self.ws.sock.settimeout(max(0.1, deadline - time.time()))
            try:
                m = json.loads(self.ws.recv())
            except socket.timeout:
                break
            finally:
                self.ws.sock.settimeout(60)
            if "method" in m:
                self._event(m)
                if until(m):
                    return m
        raise Fail("timed out waiting in the browser; events: %s" % [e.get("method") for e in self.events][-30:])

    def settle(self, seconds=0.3):
        """Reads the events of the next moments (late console messages, requests)."""
        try:
            self.pump(lambda m: False, timeout=seconds)
        except Fail:
            pass

    def viewport(self, width, height, mobile=False):
        self.size = (width, height)
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=mobile)

    def scripts(self, on):
        self.call("Emulation.setScriptExecutionDisabled", value=not on)

    def headers(self, hs):
        self.call("Network.setExtraHTTPHeaders", headers=hs)

    def load(self, url, timeout=30):
        """Navigates and waits for the load event; returns the main document's status."""
        self.events = []
        self.call("Page.navigate", url=url)
        self.pump(lambda m: m.get("method") == "Page.loadEventFired", timeout)
        self.settle()
        for m in self.events:
            if m.get("method") == "Network.responseReceived" and m["params"].get("type") == "Document":
                return m["params"]["response"]["status"]
        return None

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise Fail("evaluating %r: %s" % (expr[:200], r["exceptionDetails"]))
        return r["result"].get("value")

    def screenshot(self, path, scale=1.0):
        """The viewport as a PNG; scale < 1 makes it smaller (quicker to check)."""
        params = {"format": "png"}
        if scale != 1.0 and getattr(self, "size", None):
            params["clip"] = {"x": 0, "y": 0, "width": self.size[0], "height": self.size[1], "scale": scale}
        data = self.call("Page.captureScreenshot", **params)["data"]
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))
        return path

    # ---- what the page did ----
    def problems(self):
        """Console errors and warnings, uncaught exceptions, browser log errors."""
        out = []
        for m in self.events:
            meth, p = m.get("method"), m.get("params", {})
            if meth == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append("console.%s: %s" % (p["type"], [a.get("value") for a in p.get("args", [])]))
            elif meth == "Runtime.exceptionThrown":
                out.append("exception: %s" % p.get("exceptionDetails", {}).get("text"))
            elif meth == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
                out.append("log %s: %s %s" % (p["entry"]["level"], p["entry"].get("text"), p["entry"].get("url", "")))
        return out

    def requests(self):
        return [m["params"]["request"]["url"] for m in self.events if m.get("method") == "Network.requestWillBeSent"]

    def dialogs(self):
        return [m["params"].get("message") for m in self.events if m.get("method") == "Page.javascriptDialogOpening"]
