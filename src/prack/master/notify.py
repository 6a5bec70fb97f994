"""Telling the outside world about the master: the pidfile and sd_notify.

Pidfile (`server.pidfile`): written atomically (a temporary file renamed over
it) once the master is ready. `<pidfile>` exists at every moment from then
until the last master stops, upgrades included: when a USR2 upgrade starts,
the old master writes its PID to `<pidfile>.oldbin` too and leaves
`<pidfile>` as it is (it still serves); the new master, once ready, renames
its own file over `<pidfile>` (one atomic step, never a missing name); the
old master removes its `.oldbin` when it exits. If the upgrade fails, the old
master's `<pidfile>` is still right (rewritten if the new master had got to
replace it) and its `.oldbin` goes. So `kill -USR2 $(cat prack.pid)` always
reaches the master that serves, and a script reading the file never finds it
missing. A file is only ever removed by the process whose PID it holds.

sd_notify: when `NOTIFY_SOCKET` is set (systemd `Type=notify`), the master
sends `READY=1` and `MAINPID=<pid>` when ready, `RELOADING=1` when an upgrade
starts and `STOPPING=1` when a stop begins. A new generation's master sends
its own `MAINPID` (the unit needs `NotifyAccess=all`).
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("prack.master")

OLD_SUFFIX = ".oldbin"


def sd_notify(message: str) -> bool:
    """Send one datagram to $NOTIFY_SOCKET; False when it is not set or the
    send failed (logged once per failure, never raised)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]      # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify %r to %s: %s", message.split("\n")[0], path, exc)
        return False


def read_pid(path: str) -> int | None:
    """The PID a pidfile holds, or None when it cannot be read."""
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path) if path else ""

    def write(self) -> None:
        if self.path:
            self._write(self.path)

    def _write(self, path: str) -> None:
        """Our PID in `path`, atomically: a reader finds the old content or
        the new, never a missing or half-written file."""
        tmp = "%s.%d.tmp" % (path, os.getpid())
        try:
            with open(tmp, "w") as f:
                f.write("%d\n" % os.getpid())
            os.replace(tmp, path)
        except OSError as exc:
            log.error("server.pidfile %s: cannot write: %s", path, exc.strerror)
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def replace_stale(self) -> None:
        """At start: a pidfile naming a process that is gone, or that is no
        Prack master (its PID reused), was left by an instance that did not
        stop cleanly: say so and remove it (ours is written once ready). A
        live master's stays: it is the one an upgrade hands over from."""
        if not self.path:
            return
        pid = read_pid(self.path)
        if not pid or pid == os.getpid() or _is_prack(pid):
            return
        log.warning("server.pidfile %s names pid %d, which is not a running Prack "
                    "master (left by an instance that did not stop); replacing it",
                    self.path, pid)
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def to_old(self) -> None:
        """An upgrade starts: our PID in <pidfile>.oldbin as well. <pidfile>
        stays ours (we serve until the new master is ready), and the new
        master's rename over it replaces it without a gap; renaming it away
        here would leave no pidfile until then."""
        if self.path and read_pid(self.path) == os.getpid():
            self._write(self.path + OLD_SUFFIX)

    def from_old(self) -> None:
        """The upgrade failed: <pidfile> names us (again, should the new
        master have written it before failing) and our .oldbin goes."""
        if not self.path:
            return
        old = self.path + OLD_SUFFIX
        if read_pid(old) != os.getpid():
            return          # no upgrade of ours left it (or not ours to fix)
        if read_pid(self.path) != os.getpid():
            self._write(self.path)
        _unlink_if_ours(old)

    def remove(self) -> None:
        """At exit: remove whichever of the two names holds our PID."""
        if not self.path:
            return
        for path in (self.path, self.path + OLD_SUFFIX):
            _unlink_if_ours(path)


def _unlink_if_ours(path: str) -> None:
    if read_pid(path) == os.getpid():
        try:
            os.unlink(path)
        except OSError:
            pass


def _is_prack(pid: int) -> bool:
    """Whether `pid` is alive and (where /proc tells) runs Prack."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"prack" in f.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")   # no /proc: alive is all we know
    except OSError:
        return True
