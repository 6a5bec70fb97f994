"""The master: binds, forks, supervises, stops.

`Master.run()` is a short loop: wait for a signal, a child's status line or a
timer; reap children; respawn the dead ones (with backoff if they keep dying);
on SIGTERM/SIGINT/SIGQUIT drain gracefully. Signal handlers do nothing but
wake the loop (signal.set_wakeup_fd); all the work happens in the loop.

Cleanup holds on every exit path: the shared-memory segment's name is
unlinked as soon as it is mapped (children inherit the mapping through fork),
so nothing can stay in /dev/shm even if a process is SIGKILLed; the runtime
directory is removed in a `finally`.
"""
from __future__ import annotations

import errno
import gc
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time

# Imported here, before any fork, so the children share these pages.
from prack import sockets
from prack.acceptor import Acceptor
from prack.api import ApiServer
from prack.errors import StartupError
from prack.ring import Segment

log = logging.getLogger("prack.master")

ACCEPTOR, API = "acceptor", "api"
_STOP = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT", signal.SIGQUIT: "SIGQUIT"}
_LATER = (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU)
API_STOP_SECONDS = 5.0
QUICK_DEATH = 2.0     # a child that dies sooner than this counts as crash-looping
MAX_BACKOFF = 10.0


def setup_logging(cfg) -> None:
    level = getattr(logging, cfg.logging.level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger("prack")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if cfg.logging.access_log:
        logging.getLogger("prack.access").setLevel(logging.INFO)


def run(cfg, *, config_path: str | None = None) -> int:
    """Run the server until it is stopped; the exit code for the CLI."""
    setup_logging(cfg)
    return Master(cfg, config_path).run()


def _noop(signum, frame):
    """Handlers only wake the loop (the wakeup fd carries the signal number)."""


class Child:
    __slots__ = ("role", "index", "pid", "started")

    def __init__(self, role, index, pid, started):
        self.role, self.index, self.pid, self.started = role, index, pid, started


class Master:
    def __init__(self, cfg, config_path: str | None):
        self.cfg = cfg
        self.config_path = config_path
        self.generation = 1
        self.children: dict[int, Child] = {}
        self.failures: dict[tuple[str, int], int] = {}
        self.respawn_at: dict[tuple[str, int], float] = {}
        self.ready: set[tuple[str, int]] = set()
        self.announced = False
        self.stopping = False
        self.stop_phase = None
        self.stop_deadline = 0.0
        self.listener = self.api_listener = self.link_listener = None
        self.segment = None
        self.runtime_dir = None
        self.own_runtime_dir = False
        self.sel = None

    # -- lifecycle ---------------------------------------------------------------

    def run(self) -> int:
        try:
            self._setup()
            self._spawn_all()
            self._loop()
            return 0
        finally:
            self._cleanup()

    def _setup(self) -> None:
        cfg = self.cfg
        self.listener = sockets.bind_tcp(cfg.server.bind, cfg.server.backlog, "server.bind")
        self.api_listener = sockets.bind_tcp(cfg.api.bind, cfg.server.backlog, "api.bind")
        if cfg.server.runtime_dir:
            self.runtime_dir = cfg.server.runtime_dir
            try:
                os.makedirs(self.runtime_dir, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StartupError("server.runtime_dir %s: %s" % (self.runtime_dir, exc.strerror))
            self.runtime_dir = tempfile.mkdtemp(prefix="prack-", dir=self.runtime_dir)
        else:
            base = os.environ.get("XDG_RUNTIME_DIR")
            if not base or not os.access(base, os.W_OK):
                base = None
            self.runtime_dir = tempfile.mkdtemp(prefix="prack-", dir=base)
        self.own_runtime_dir = True
        self.link_path = os.path.join(self.runtime_dir, "api.sock")
        self.link_listener = sockets.bind_unix(self.link_path, 128)
        try:
            self.segment = Segment.create(cfg.server.acceptors, cfg.server.max_connections,
                                          cfg.limits.ring_size)
        except OSError as exc:
            raise StartupError("cannot create the shared-memory segment: %s" % exc)
        self.status_r, self.status_w = os.pipe()
        os.set_blocking(self.status_r, False)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (*_STOP, signal.SIGCHLD, *_LATER):
            signal.signal(sig, _noop)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_signal)
        self.sel.register(self.status_r, selectors.EVENT_READ, self._on_status)
        self.status_buf = b""

    def _cleanup(self) -> None:
        if self.children:
            for child in self.children.values():
                _kill(child.pid, signal.SIGKILL)
            for pid in list(self.children):
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            self.children.clear()
        started = self.sel is not None
        if started:
            signal.set_wakeup_fd(-1)
            self.sel.close()
        for sock in (self.listener, self.api_listener, self.link_listener):
            if sock is not None:
                sock.close()
        if self.segment is not None:
            self.segment.close()
        if self.runtime_dir and self.own_runtime_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
        if started:     # a startup error is reported by the CLI, in one line
            log.info("stopped")

    def _loop(self) -> None:
        while True:
            timeout = self._next_timeout()
            for key, mask in self.sel.select(timeout):
                key.data(mask)
            self._reap()
            now = time.monotonic()
            if self.stopping:
                if self._stop_progress(now):
                    return
            else:
                self._respawn_due(now)

    def _next_timeout(self) -> float | None:
        times = list(self.respawn_at.values())
        if self.stopping:
            times.append(self.stop_deadline)
        if not times:
            return None
        return max(0.0, min(times) - time.monotonic())

    # -- children ------------------------------------------------------------------

    def _spawn_all(self) -> None:
        # Children then leave the objects the master made alone in their
        # collections, so those pages stay shared (copy-on-write).
        gc.freeze()
        for i in range(self.cfg.server.acceptors):
            self._spawn(ACCEPTOR, i)
        self._spawn(API, 0)

    def _spawn(self, role: str, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            self._child_main(role, index)   # never returns
        self.children[pid] = Child(role, index, pid, time.monotonic())

    def _child_main(self, role: str, index: int) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (*_STOP, signal.SIGCHLD, *_LATER):
                signal.signal(sig, signal.SIG_DFL)
            self.sel.close()
            self.wake_r.close()
            self.wake_w.close()
            os.close(self.status_r)
            if role == ACCEPTOR:
                self.api_listener.close()
                self.link_listener.close()
                code = Acceptor(self.cfg, index, self.generation, self.listener, self.segment,
                                self.link_path, self.status_w).run()
            else:
                self.listener.close()
                code = ApiServer(self.cfg, self.generation, self.api_listener,
                                 self.link_listener, self.segment, self.status_w).run()
        except KeyboardInterrupt:
            code = 0
        except BaseException:
            logging.getLogger("prack." + role).exception("%s %d crashed", role, index)
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)

    def _on_status(self, mask) -> None:
        try:
            data = os.read(self.status_r, 4096)
        except BlockingIOError:
            return
        self.status_buf += data
        *lines, self.status_buf = self.status_buf.split(b"\n")
        for line in lines:
            if line.startswith(b"A"):
                self.ready.add((ACCEPTOR, int(line[1:])))
            elif line == b"P":
                self.ready.add((API, 0))
        if (not self.announced and not self.stopping
                and len(self.ready) == self.cfg.server.acceptors + 1):
            self.announced = True
            log.info("ready: public=http://%s api=http://%s acceptors=%d pid=%d",
                     sockets.address_of(self.listener), sockets.address_of(self.api_listener),
                     self.cfg.server.acceptors, os.getpid())

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue   # not ours (PID 1 duty): just reaped
            self._child_exited(child, status)

    def _child_exited(self, child: Child, status: int) -> None:
        ident = (child.role, child.index)
        self.ready.discard(ident)
        how = _describe_status(status)
        if self.stopping:
            log.debug("%s %d (pid %d) %s", child.role, child.index, child.pid, how)
            return
        lived = time.monotonic() - child.started
        failures = self.failures.get(ident, 0) + 1 if lived < QUICK_DEATH else 0
        self.failures[ident] = failures
        delay = 0.0 if failures == 0 else min(MAX_BACKOFF, 0.1 * 2 ** (failures - 1))
        if failures >= 3:
            log.error("%s %d (pid %d) %s; it keeps dying, restarting in %.1fs",
                      child.role, child.index, child.pid, how, delay)
        else:
            log.warning("%s %d (pid %d) %s; restarting", child.role, child.index, child.pid, how)
        self.respawn_at[ident] = time.monotonic() + delay

    def _respawn_due(self, now: float) -> None:
        for ident, when in list(self.respawn_at.items()):
            if now >= when:
                del self.respawn_at[ident]
                self._spawn(*ident)

    # -- signals -------------------------------------------------------------------

    def _on_signal(self, mask) -> None:
        try:
            data = self.wake_r.recv(256)
        except BlockingIOError:
            return
        for signum in data:
            if signum in _STOP:
                if self.stopping:
                    log.warning("%s again: stopping now", _STOP[signum])
                    self._kill_all(signal.SIGKILL)
                    self.stop_phase = "now"
                else:
                    log.info("%s: graceful stop (up to %.3gs)", _STOP[signum],
                             self.cfg.timeouts.graceful_timeout)
                    self._begin_stop()
            elif signum in _LATER:
                log.warning("signal %s is not supported yet; ignored",
                            signal.Signals(signum).name)

    def _begin_stop(self) -> None:
        """Acceptors drain first (they need the API process to route their last
        responses); the API process stops once they are gone."""
        self.stopping = True
        self.respawn_at.clear()
        # Stop listening: the acceptors close their copies, and a connection
        # the kernel completed on ours would wait for an accept() that never
        # comes. Closed everywhere, new clients are refused at once.
        self.listener.close()
        self.stop_phase = "acceptors"
        self.stop_deadline = time.monotonic() + self.cfg.timeouts.graceful_timeout
        for child in self.children.values():
            if child.role == ACCEPTOR:
                _kill(child.pid, signal.SIGTERM)

    def _stop_progress(self, now: float) -> bool:
        """Advance the graceful stop; True when every child is gone."""
        if self.stop_phase == "acceptors":
            left = [c for c in self.children.values() if c.role == ACCEPTOR]
            if left and now >= self.stop_deadline:
                log.warning("graceful_timeout passed; killing %d acceptor(s)", len(left))
                for child in left:
                    _kill(child.pid, signal.SIGKILL)
                self.stop_deadline = now + 1.0
                return False
            if not left:
                self.stop_phase = "api"
                self.stop_deadline = now + API_STOP_SECONDS
                for child in self.children.values():
                    _kill(child.pid, signal.SIGTERM)
        elif self.stop_phase == "api" and self.children and now >= self.stop_deadline:
            self._kill_all(signal.SIGKILL)
            self.stop_deadline = now + 1.0
        return not self.children

    def _kill_all(self, sig: int) -> None:
        for child in self.children.values():
            _kill(child.pid, sig)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        extra = " (out of memory?)" if sig == signal.SIGKILL else ""
        return "was killed by %s%s" % (name, extra)
    return "exited with code %d" % os.WEXITSTATUS(status)
