"""Telling the outside world about the master: the pidfile and sd_notify.

Pidfile (`server.pidfile`): written atomically (a temporary file renamed over
it) once the master is ready. During a USR2 upgrade the old master renames it
to `<pidfile>.oldbin` before starting the new generation, the new master
writes `<pidfile>` when it is ready, and the old master removes its `.oldbin`
when it exits; if the upgrade fails, the old master renames it back. So
`kill -USR2 $(cat prack.pid)` always reaches the master that serves. A file
is only ever removed by the process whose PID it holds.

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


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path) if path else ""

    def write(self) -> None:
        if not self.path:
            return
        tmp = "%s.%d.tmp" % (self.path, os.getpid())
        try:
            with open(tmp, "w") as f:
                f.write("%d\n" % os.getpid())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("server.pidfile %s: cannot write: %s", self.path, exc.strerror)
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _move(self, src: str, dst: str) -> None:
        if _read_pid(src) == os.getpid():
            try:
                os.replace(src, dst)
            except OSError as exc:
                log.warning("server.pidfile: cannot rename %s: %s", src, exc.strerror)

    def to_old(self) -> None:
        """An upgrade starts: ours becomes <pidfile>.oldbin."""
        if self.path:
            self._move(self.path, self.path + OLD_SUFFIX)

    def from_old(self) -> None:
        """The upgrade failed: <pidfile>.oldbin is <pidfile> again."""
        if self.path:
            self._move(self.path + OLD_SUFFIX, self.path)

    def remove(self) -> None:
        """At exit: remove whichever of the two names holds our PID."""
        if not self.path:
            return
        for path in (self.path, self.path + OLD_SUFFIX):
            if _read_pid(path) == os.getpid():
                try:
                    os.unlink(path)
                except OSError:
                    pass
