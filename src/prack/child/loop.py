"""The event loop shared by the two kinds of child process.

Acceptors and the API process each run one selector loop with the same
outline: signals only wake the loop (signal.set_wakeup_fd), a housekeeping
tick runs deadlines, a child whose master has gone stops by itself (the
acceptors at once, draining what they hold; the API process once they are
gone), and a graceful stop ends as soon as nothing is left in flight.
"""
from __future__ import annotations

import logging
import mmap
import os
import selectors
import signal
import socket
import time

log = logging.getLogger("prack.loop")


def _noop(signum, frame):
    """Signals only wake the loop through the wakeup fd."""


# A stop or retire signal that reached a child between its fork and serve():
# remembered here (the handler does nothing else) and acted on in serve().
early_signals: list[int] = []


def early_handler(signum, frame):
    early_signals.append(signum)


class Heartbeats:
    """One 8-byte word per child in an anonymous shared mapping made by the
    master before it forks: the child writes the monotonic time (the clock
    is system wide), the master reads it. No locks: a word is written whole."""

    SIZE = 8

    def __init__(self, nwords: int) -> None:
        self.mm = mmap.mmap(-1, nwords * self.SIZE)
        self.nwords = nwords
        self._view = memoryview(self.mm).cast("d")

    def set(self, index: int, when: float) -> None:
        self._view[index] = when

    def get(self, index: int) -> float:
        return self._view[index]

    def beater(self, index: int):
        view = self._view

        def beat(now: float) -> None:
            view[index] = now
        return beat


class ChildLoop:
    """Subclasses provide _on_event, _scan, _begin_stop, _drained, _finish."""

    tick = 1.0
    what = "child"

    def __init__(self, beat=None) -> None:
        """`beat(monotonic time)` tells the master this process is alive
        (its heartbeat word in shared memory); None in tests."""
        self.sel = selectors.DefaultSelector()
        self.stopping = False
        self.retiring = False
        self.draining = False       # SIGUSR1: the server is stopping (for /readyz)
        self.orphaned = False       # the master has gone (reparented)
        self.beat = beat
        self.stop_deadline = 0.0
        self.parent = os.getppid()
        self._paused: list = []     # listeners not watched until the next tick

    def serve(self, status_fd: int, ready: bytes) -> int:
        """Install the signal handling, report `ready` to the master, loop."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        # Only the master's SIGTERM stops a child. A terminal's Ctrl-C or
        # Ctrl-\ reaches the whole process group; the master alone acts on it
        # and drains the children in order.
        signal.signal(signal.SIGTERM, _noop)
        signal.signal(signal.SIGUSR2, _noop)
        signal.signal(signal.SIGUSR1, _noop)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGPIPE,
                    signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        self._wake_r = wake_r
        self._wake_w = wake_w
        self.sel.register(wake_r, selectors.EVENT_READ, self._on_signal)
        if self.beat is not None:
            self.beat(time.monotonic())
        os.write(status_fd, ready)
        if early_signals:
            self._act_on(bytes(early_signals))
            early_signals.clear()
        try:
            self._loop()
        finally:
            signal.set_wakeup_fd(-1)
        return 0

    def _loop(self) -> None:
        sel = self.sel
        on_event = self._on_event
        monotonic = time.monotonic
        next_scan = monotonic() + self.tick
        registered = sel.get_map()
        while True:
            for key, mask in sel.select(max(0.0, next_scan - monotonic())):
                # An earlier event of this batch may have closed (or
                # re-registered) this one's socket: skip its stale key. This
                # also keeps kqueue's separate read and write events for one
                # socket safe (CPython reports them as two entries).
                if registered.get(key.fd) is key:
                    on_event(key.data, mask)
            if self.stopping and self._drained():
                self._finish()
                return
            now = monotonic()
            if now >= next_scan:
                next_scan = now + self.tick
                if self.beat is not None:
                    self.beat(now)
                if self._paused and not self.stopping:
                    for listener, callback in self._paused:
                        self.sel.register(listener, selectors.EVENT_READ, callback)
                    self._paused.clear()
                if not self.stopping and not self.orphaned and os.getppid() != self.parent:
                    self.orphaned = True
                    self._on_orphaned()
                self._scan(now)
                self._housekeeping(now)
                if self.stopping and now >= self.stop_deadline:
                    self._finish()
                    return

    def _on_event(self, data, mask: int) -> None:
        data(mask)

    def _on_signal(self, mask: int) -> None:
        try:
            data = self._wake_r.recv(64)
        except BlockingIOError:
            return
        self._act_on(data)

    def _act_on(self, signums: bytes) -> None:
        if signal.SIGTERM in signums:
            if not self.stopping:
                self._begin_stop()
        elif signal.SIGUSR2 in signums and not self.stopping and not self.retiring:
            self.retiring = True
            self._begin_retire()
        if signal.SIGUSR1 in signums:
            self.draining = True

    def _pause_accepting(self, listener, callback, exc: OSError) -> None:
        """accept() failed for want of descriptors or memory. The listener
        stays readable, so stop watching it until the next tick, or the loop
        would spin (and log) without pause."""
        log.warning("%s: accept: %s; pausing accepts until the next tick", self.what,
                    exc.strerror or exc)
        self.sel.unregister(listener)
        self._paused.append((listener, callback))

    def _close_listener(self, listener) -> None:
        """Stop watching a listener (paused or not) and close it."""
        if any(lst is listener for lst, _ in self._paused):
            self._paused = [(lst, cb) for lst, cb in self._paused if lst is not listener]
        else:
            try:
                self.sel.unregister(listener)
            except (KeyError, ValueError):
                pass
        listener.close()

    # hooks
    def _scan(self, now: float) -> None:
        """Housekeeping: deadlines."""

    def _housekeeping(self, now: float) -> None:
        """More housekeeping after the deadlines (the API process's held posts)."""

    def _on_orphaned(self) -> None:
        """The master died: by default, a graceful stop (what the master
        would have asked for)."""
        log.warning("%s: the master has gone; stopping", self.what)
        self._begin_stop()

    def _begin_stop(self) -> None:
        self.stopping = True

    def _begin_retire(self) -> None:
        """An upgrade's old generation retires: by default a graceful stop
        (self.retiring tells the hooks it is one)."""
        self._begin_stop()

    def _drained(self) -> bool:
        return True

    def _finish(self) -> None:
        """Last act of a stop: drop whatever is left."""
