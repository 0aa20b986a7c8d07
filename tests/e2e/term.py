"""term.py - runs ./hubmirror in a real terminal (tmux, on a private socket)
for the tests of what a person sees: the progress bar, table widths."""

import os
import shlex
import subprocess
import time

import lib
from lib import check


class Tmux:
    """One tmux server of the test's own (socket in the test's temp dir),
    stopped by t.close() through kill-server even when the test fails."""

    count = 0

    def __init__(self, t, width, height=30):
        self.t = t
        # a socket of its own per instance: a new server on the socket of one
        # just killed can find it still going away ("server exited unexpectedly")
        Tmux.count += 1
        self.n = Tmux.count
        self.sock = os.path.join(t.tmp, "tmux-%d-%d.sock" % (width, self.n))
        self.width, self.height = width, height
        self.started = False
        t.procs.append(self)  # t.close() calls poll() then kill()

    # t.close() treats us like a Popen
    def poll(self):
        return 0 if not self.started else None

    def kill(self):
        self.tmux("kill-server", check_rc=False)
        self.started = False

    def wait(self):
        pass

    def tmux(self, *args, check_rc=True):
        p = subprocess.run(["tmux", "-S", self.sock] + list(args), capture_output=True, text=True,
                           timeout=30)
        if check_rc:
            check(p.returncode == 0, "tmux %s failed: %s" % (" ".join(args), p.stderr))
        return p.stdout

    def run(self, *args, env=None, store=True, endpoint=True):
        """Starts hubmirror ARGS in a new session of width x height."""
        argv = [lib.BIN] + self.t.argv(args, store, endpoint)
        full = self.t.environ(env)
        full.pop("TMUX", None)
        full["TERM"] = "xterm"
        full.pop("COLUMNS", None)
        exports = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in sorted(full.items())
                           if k.replace("_", "").isalnum())
        rcfile = os.path.join(self.t.tmp, "tmux-rc-%d-%d" % (self.width, self.n))
        cmd = "cd %s && env -i %s %s; echo $? > %s" % (shlex.quote(self.t.cwd), exports,
                                                      " ".join(shlex.quote(a) for a in argv),
                                                      shlex.quote(rcfile))
        self.rcfile = rcfile
        if os.path.exists(rcfile):
            os.unlink(rcfile)
        # A new tmux server can die before its client attaches ("server exited
        # unexpectedly", seen next to sanitized binaries on a loaded machine):
        # that is tmux starting, before hubmirror runs, so start another one
        # on a fresh socket. hubmirror's own exit is in rcfile whatever happens.
        for attempt in range(3):
            p = subprocess.run(["tmux", "-S", self.sock, "-f", "/dev/null", "new-session", "-d", "-x",
                                str(self.width), "-y", str(self.height), "sh", "-c", cmd + "; sleep 600"],
                               capture_output=True, text=True, timeout=30)
            if p.returncode == 0 or "server exited unexpectedly" not in p.stderr or attempt == 2:
                break
            self.tmux("kill-server", check_rc=False)
            Tmux.count += 1
            self.sock = os.path.join(self.t.tmp, "tmux-%d-%d.sock" % (self.width, Tmux.count))
        check(p.returncode == 0, "tmux new-session failed: %s" % p.stderr)
        self.started = True
        self.tmux("set-option", "-g", "history-limit", "5000")

    def done(self):
        return os.path.exists(self.rcfile) and open(self.rcfile).read().strip() != ""

    def wait_done(self, limit=90):
        t0 = time.time()
        while not self.done():
            check(time.time() - t0 < limit, "hubmirror still running in tmux after %ds:\n%s"
                  % (limit, self.screen()))
            time.sleep(0.1)
        return int(open(self.rcfile).read().strip())

    def screen(self):
        """The visible screen."""
        return self.tmux("capture-pane", "-p")

    def everything(self):
        """Scrollback and screen, one terminal row a line."""
        return self.tmux("capture-pane", "-p", "-S", "-", "-E", "-")

    def history_size(self):
        return int(self.tmux("display-message", "-p", "#{history_size}").strip() or 0)
