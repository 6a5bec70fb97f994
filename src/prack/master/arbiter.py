"""The master: binds, forks, supervises, upgrades, stops.

`Master.run()` is a short loop: wait for a signal, a child's status line, the
upgrade pipe or a timer; reap children; respawn the dead ones (with backoff if
they keep dying) and kill the hung ones (no heartbeat); on SIGTERM/SIGINT/
SIGQUIT drain gracefully; on SIGUSR2/SIGHUP hand the server to a new
generation of itself (prack.upgrade) and retire once it reports ready; on
SIGTTIN/SIGTTOU add or remove an acceptor. Signal handlers do nothing but wake
the loop (signal.set_wakeup_fd); all the work happens in the loop.

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
import signal
import socket
import sys
import time

# Imported here, before any fork, so the children share these pages.
from prack import __version__
from prack.api import forward
from prack.child import loop
from prack.master import upgrade
from prack.master import listeners
from prack.acceptor.process import Acceptor
from prack.api.process import ApiServer
from prack.errors import StartupError
from prack.master.notify import Pidfile, sd_notify
from prack.ipc.ring import Segment

log = logging.getLogger("prack.master")

ACCEPTOR, API = "acceptor", "api"
_STOP = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT", signal.SIGQUIT: "SIGQUIT"}
_CONTROL = (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU)
API_STOP_SECONDS = 5.0
QUICK_DEATH = 2.0     # a child that dies sooner than this counts as crash-looping
MAX_BACKOFF = 10.0
UPGRADE_TIMEOUT = 60.0   # a new generation not ready by then has failed
MAX_ACCEPTORS = 256
API_BEAT = MAX_ACCEPTORS  # heartbeat word of the API process (acceptor i uses word i)
# Blocked across fork(): until a child has its own handlers, the master's
# would run in it and write to the master's wake-up fd.
_HANDLED = frozenset({*_STOP, signal.SIGCHLD, *_CONTROL, signal.SIGUSR1})


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
    return Master(cfg, config_path, upgrade.inherited()).run()


# tempfile and shutil are not imported here: their modules (and bz2, lzma,
# fnmatch...) would be in the heap every child shares.

def _mkdtemp(base: str | None) -> str:
    """A new directory only we can use, in `base` (None: TMPDIR or /tmp)."""
    base = base or os.environ.get("TMPDIR") or "/tmp"
    for _ in range(100):
        path = os.path.join(base, "prack-" + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused name for a runtime directory", base)


def _rmtree(path: str) -> None:
    import shutil   # at cleanup only

    shutil.rmtree(path, ignore_errors=True)


def _noop(signum, frame):
    """Handlers only wake the loop (the wakeup fd carries the signal number)."""


class Child:
    __slots__ = ("role", "index", "pid", "started")

    def __init__(self, role, index, pid, started):
        self.role, self.index, self.pid, self.started = role, index, pid, started


class Successor:
    """A new generation being started by an upgrade."""
    __slots__ = ("pid", "pipe", "generation", "deadline", "buf", "reason", "why")

    def __init__(self, pid, pipe, generation, deadline, why):
        self.pid, self.pipe, self.generation, self.deadline = pid, pipe, generation, deadline
        self.buf = b""
        self.reason = ""
        self.why = why


class Master:
    def __init__(self, cfg, config_path: str | None, inherited: upgrade.Inherited):
        self.cfg = cfg
        self.config_path = config_path
        self.inherited = inherited
        self.generation = inherited.generation
        self.acceptors = inherited.acceptors or cfg.server.acceptors
        if not 1 <= self.acceptors <= MAX_ACCEPTORS:
            raise StartupError("%s=%d: expected 1 to %d acceptors"
                               % (upgrade.ENV_ACCEPTORS, self.acceptors, MAX_ACCEPTORS))
        self.children: dict[int, Child] = {}
        self.failures: dict[tuple[str, int], int] = {}
        self.respawn_at: dict[tuple[str, int], float] = {}
        self.ready: set[tuple[str, int]] = set()
        self.announced = False
        self.stopping = False
        self.retire = False           # this stop hands over to a successor
        self.stop_asked = False       # a stop signal came while retiring
        self.stop_phase = None
        self.stop_deadline = 0.0
        self.successor: Successor | None = None
        self.successor_pid = 0        # the generation we retired for
        # A re-exec in place (PID 1) inherits the old generation's children:
        # they retire once ours are ready, and are reaped here.
        now = time.monotonic()
        self.old = {pid: Child(role, index, pid, now) for pid, role, index in inherited.retiring}
        self.old_dir = inherited.retiring_dir
        self.old_phase = "waiting" if self.old else None
        self.old_deadline = 0.0
        self.listener = self.api_listener = self.link_listener = self.forward_listener = None
        self.segment = None
        self.runtime_dir = None
        self.own_runtime_dir = False
        self.sel = None
        self.pidfile = Pidfile(cfg.server.pidfile)
        self.heartbeats = loop.Heartbeats(MAX_ACCEPTORS + 1)
        self.hb_timeout = cfg.server.heartbeat_timeout
        self.hb_next = 0.0

    # -- lifecycle ---------------------------------------------------------------

    def run(self) -> int:
        try:
            self._setup()
            self._spawn_all()
            self._loop()
            return 0
        except BaseException as exc:
            if isinstance(exc, StartupError):
                self.inherited.report("failed " + str(exc))
            raise
        finally:
            self._cleanup()

    def _setup(self) -> None:
        cfg = self.cfg
        inh = self.inherited
        self.listener = (inh.listener("public", cfg.server.bind)
                         or listeners.bind_tcp(cfg.server.bind, cfg.server.backlog, "server.bind"))
        self.api_listener = (inh.listener("api", cfg.api.bind)
                             or listeners.bind_tcp(cfg.api.bind, cfg.server.backlog, "api.bind"))
        inh.close_unused()
        if cfg.server.runtime_dir:
            base = cfg.server.runtime_dir
            try:
                os.makedirs(base, mode=0o700, exist_ok=True)
                self.runtime_dir = _mkdtemp(base)
            except OSError as exc:
                raise StartupError("server.runtime_dir %s: %s" % (base, exc.strerror or exc))
        else:
            base = os.environ.get("XDG_RUNTIME_DIR")
            if not base or not os.access(base, os.W_OK):
                base = None
            try:
                self.runtime_dir = _mkdtemp(base)
            except OSError as exc:
                raise StartupError("cannot create a runtime directory (set server.runtime_dir): "
                                   "%s" % (exc.strerror or exc))
        self.own_runtime_dir = True
        self.link_path = os.path.join(self.runtime_dir, "api.sock")
        self.link_listener = listeners.bind_unix(self.link_path, 128)
        self.forward_listener = listeners.bind_unix(
            os.path.join(self.runtime_dir, forward.SOCKET_NAME), 128)
        if inh.predecessor_dir:
            forward.announce_successor(inh.predecessor_dir, self.runtime_dir)
        try:
            self.segment = Segment.create(self.acceptors, cfg.server.max_connections,
                                          cfg.limits.ring_size)
        except OSError as exc:
            raise StartupError("cannot create the shared-memory segment: %s" % exc)
        self.status_r, self.status_w = os.pipe()
        os.set_blocking(self.status_r, False)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (*_STOP, signal.SIGCHLD, *_CONTROL):
            signal.signal(sig, _noop)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # Blocked by a predecessor's exec in place: delivered now, to the loop.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_signal)
        self.sel.register(self.status_r, selectors.EVENT_READ, self._on_status)
        self.status_buf = b""
        if self.old:
            log.info("generation %d (re-executed in place) takes over %d children of the "
                     "previous generation; they retire once this one is ready",
                     self.generation, len(self.old))
            self._reap()    # any that ended while we were exec'ing

    def _cleanup(self) -> None:
        everyone = list(self.children.values()) + list(self.old.values())
        if everyone:
            for child in everyone:
                _kill(child.pid, signal.SIGKILL)
            for child in everyone:
                try:
                    os.waitpid(child.pid, 0)
                except ChildProcessError:
                    pass
            self.children.clear()
            self.old.clear()
        if self.successor is not None:
            _kill(self.successor.pid, signal.SIGTERM)
            if self.successor.pipe >= 0:
                os.close(self.successor.pipe)
            self.successor = None
        started = self.sel is not None
        if started:
            signal.set_wakeup_fd(-1)
            self.sel.close()
        for sock in (self.listener, self.api_listener, self.link_listener,
                     self.forward_listener):
            if sock is not None:
                sock.close()
        if self.segment is not None:
            self.segment.close()
        if self.runtime_dir and self.own_runtime_dir:
            _rmtree(self.runtime_dir)
        if self.old_dir:
            _rmtree(self.old_dir)
        self.pidfile.remove()
        if started:     # a startup error is reported by the CLI, in one line
            if self.retire:
                log.info("generation %d retired; pid %d serves", self.generation,
                         self.successor_pid)
            else:
                log.info("stopped")

    def _loop(self) -> None:
        while True:
            timeout = self._next_timeout()
            for key, mask in self.sel.select(timeout):
                key.data(mask)
            self._reap()
            now = time.monotonic()
            if self.old_phase is not None:
                self._old_progress(now)
            if self.successor is not None and now >= self.successor.deadline:
                _kill(self.successor.pid, signal.SIGTERM)
                self._upgrade_failed("not ready within %.0fs (stopped it)" % UPGRADE_TIMEOUT)
            if self.stopping:
                if self._stop_progress(now) and self.old_phase is None:
                    return
            else:
                self._respawn_due(now)
                if now >= self.hb_next:
                    self._check_heartbeats(now)

    def _next_timeout(self) -> float | None:
        times = list(self.respawn_at.values())
        if self.stopping:
            times.append(self.stop_deadline)
        else:
            times.append(self.hb_next)
        if self.successor is not None:
            times.append(self.successor.deadline)
        if self.old_phase not in (None, "waiting"):
            times.append(self.old_deadline)
        return max(0.0, min(times) - time.monotonic())

    # -- children ------------------------------------------------------------------

    def _spawn_all(self) -> None:
        # Children then leave the objects the master made alone in their
        # collections, so those pages stay shared (copy-on-write).
        gc.freeze()
        for i in range(self.acceptors):
            self._spawn(ACCEPTOR, i)
        self._spawn(API, 0)

    def _spawn(self, role: str, index: int) -> None:
        beat = index if role == ACCEPTOR else API_BEAT
        self.heartbeats.set(beat, time.monotonic())    # a full timeout to start
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            # Out of processes or memory (a container's pids limit): the
            # others keep serving, and this one is tried again later.
            _, delay = self._respawn_later((role, index), True)
            log.error("%s %d: cannot start it: fork: %s; trying again in %.1fs",
                      role, index, exc.strerror or exc, delay)
            return
        if pid == 0:
            self._child_main(role, index, beat, mask)   # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.children[pid] = Child(role, index, pid, time.monotonic())

    def _child_main(self, role: str, index: int, beat: int, mask) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            # Stop and retire signals that come before the loop runs are
            # kept for it; the master's own controls mean nothing here.
            for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(sig, loop.early_handler)
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
                signal.signal(sig, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # blocked ones arrive now
            self.sel.close()
            self.wake_r.close()
            self.wake_w.close()
            os.close(self.status_r)
            if self.successor is not None:
                os.close(self.successor.pipe)
            if role == ACCEPTOR:
                self.api_listener.close()
                self.link_listener.close()
                self.forward_listener.close()
                child = Acceptor(self.cfg, index, self.generation, self.listener, self.segment,
                                 self.link_path, self.status_w)
            else:
                if self.listener is not None:   # closed when a stop began
                    self.listener.close()
                child = ApiServer(self.cfg, self.generation, self.api_listener,
                                  self.link_listener, self.segment, self.status_w)
                child.forward_listener = self.forward_listener
                child.runtime_dir = self.runtime_dir
                child.predecessor_dir = self.inherited.predecessor_dir
            child.beat = self.heartbeats.beater(beat)
            code = child.run()
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
                ident = (ACCEPTOR, int(line[1:]))
            elif line == b"P":
                ident = (API, 0)
            else:
                continue
            self.ready.add(ident)
            if self.announced:
                pids = [c.pid for c in self.children.values() if (c.role, c.index) == ident]
                log.info("%s %d is back (pid %s)", ident[0], ident[1],
                         pids[-1] if pids else "?")
        if (not self.announced and not self.stopping
                and len(self.ready) >= self.acceptors + 1):
            self._announce()

    def _announce(self) -> None:
        self.announced = True
        log.info("ready: public=http://%s api=http://%s acceptors=%d pid=%d generation=%d "
                 "version=%s", listeners.address_of(self.listener),
                 listeners.address_of(self.api_listener), self.acceptors, os.getpid(),
                 self.generation, __version__)
        self.pidfile.write()
        sd_notify("READY=1\nMAINPID=%d\nSTATUS=generation %d serving" % (os.getpid(),
                                                                           self.generation))
        self.inherited.report("ready %d" % os.getpid())
        if self.old_phase == "waiting":
            self._retire_old()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._child_exited(child, status)
                continue
            child = self.old.pop(pid, None)
            if child is not None:
                log.debug("previous generation's %s %d (pid %d) %s", child.role, child.index,
                          pid, _describe_status(status))
            elif self.successor is not None and pid == self.successor.pid:
                reason = "it %s before it was ready" % _describe_status(status)
                if self.successor.reason:
                    reason += ": " + self.successor.reason
                self._upgrade_failed(reason)
            elif pid == self.successor_pid:
                # We retire for it and cannot take the listeners back: say so
                # loudly (a supervisor must restart the server).
                log.error("the new generation's master (pid %d) %s while generation %d "
                          "retires", pid, _describe_status(status), self.generation)
            # else: not ours (PID 1 duty): just reaped

    def _child_exited(self, child: Child, status: int) -> None:
        ident = (child.role, child.index)
        self.ready.discard(ident)
        how = _describe_status(status)
        if self.stopping:
            quick = time.monotonic() - child.started < QUICK_DEATH
            failures = self.failures.get(ident, 0) + 1 if quick else 0
            self.failures[ident] = failures
            if (child.role == API and self.stop_phase == "acceptors" and not self.retire
                    and failures < 3):
                # The draining acceptors need an API process for the answers
                # to the requests they still hold: replace it (told at once
                # that the server is stopping), unless it keeps dying.
                log.warning("%s %d (pid %d) %s during the stop; restarting it for the "
                            "requests in flight", child.role, child.index, child.pid, how)
                self._spawn(API, 0)
                self._kill_all_of(API, signal.SIGUSR1)
            else:
                log.debug("%s %d (pid %d) %s", child.role, child.index, child.pid, how)
            return
        if child.role == ACCEPTOR and child.index >= self.acceptors:
            log.info("acceptor %d (pid %d) %s (removed by SIGTTOU)", child.index, child.pid, how)
            return
        lived = time.monotonic() - child.started
        failures, delay = self._respawn_later(ident, lived < QUICK_DEATH)
        if failures >= 3:
            log.error("%s %d (pid %d) %s; it keeps dying, restarting in %.1fs",
                      child.role, child.index, child.pid, how, delay)
        else:
            log.warning("%s %d (pid %d) %s; restarting", child.role, child.index, child.pid, how)

    def _respawn_later(self, ident: tuple[str, int], failed: bool) -> tuple[int, float]:
        """Schedule a respawn: at once, or with backoff after repeated
        failures; (failures in a row, delay)."""
        failures = self.failures.get(ident, 0) + 1 if failed else 0
        self.failures[ident] = failures
        delay = 0.0 if failures == 0 else min(MAX_BACKOFF, 0.1 * 2 ** (failures - 1))
        self.respawn_at[ident] = time.monotonic() + delay
        return failures, delay

    def _respawn_due(self, now: float) -> None:
        for ident, when in list(self.respawn_at.items()):
            if now >= when:
                del self.respawn_at[ident]
                self._spawn(*ident)

    def _check_heartbeats(self, now: float) -> None:
        """A child whose loop has not run for heartbeat_timeout is hung (a
        deadlock, a stuck system call, SIGSTOP): kill it; the reap respawns it."""
        self.hb_next = now + min(1.0, self.hb_timeout / 4)
        for child in self.children.values():
            beat = child.index if child.role == ACCEPTOR else API_BEAT
            silent = now - self.heartbeats.get(beat)
            if silent > self.hb_timeout:
                log.error("%s %d (pid %d) sent no heartbeat for %.1fs (hung?); killing it",
                          child.role, child.index, child.pid, silent)
                self.heartbeats.set(beat, now)     # once, until it is reaped
                _kill(child.pid, signal.SIGKILL)

    # -- signals -------------------------------------------------------------------

    def _on_signal(self, mask) -> None:
        try:
            data = self.wake_r.recv(256)
        except BlockingIOError:
            return
        self._act_on(data)

    def _act_on(self, data: bytes) -> None:
        # Stop signals first: one that came with SIGUSR2 must not be lost to
        # an exec in place (and an upgrade after it would be stopped anyway).
        for signum in sorted(data, key=lambda signum: signum not in _STOP):
            if signum in _STOP:
                if self.stopping and (not self.retire or self.stop_asked):
                    log.warning("%s again: stopping now", _STOP[signum])
                    self._kill_all(signal.SIGKILL)
                    for child in self.old.values():
                        _kill(child.pid, signal.SIGKILL)
                    self.stop_phase = "now"
                elif self.stopping:
                    log.info("%s: this generation is already retiring (another one "
                             "stops it at once)", _STOP[signum])
                    self.stop_asked = True
                else:
                    log.info("%s: graceful stop (up to %.3gs)", _STOP[signum],
                             self.cfg.timeouts.graceful_timeout)
                    self._begin_stop()
            elif signum == signal.SIGUSR2:
                self._start_upgrade("SIGUSR2", keep_count=True)
            elif signum == signal.SIGHUP:
                self._start_upgrade("SIGHUP", keep_count=False)
            elif signum == signal.SIGTTIN:
                self._more_acceptors()
            elif signum == signal.SIGTTOU:
                self._fewer_acceptors()

    def _begin_stop(self, retire: bool = False) -> None:
        """Acceptors drain first (they need the API process to route their last
        responses); the API process stops once they are gone. Retiring, the
        API process is told at once (it stops taking new worker connections,
        which go to the new generation, but serves those it has)."""
        self.stopping = True
        self.retire = retire
        self.respawn_at.clear()
        if self.successor is not None:
            _kill(self.successor.pid, signal.SIGTERM)
            self._upgrade_failed("this generation is stopping (stopped it)")
        if not retire:
            sd_notify("STOPPING=1")
        # Stop listening: the acceptors close their copies, and a connection
        # the kernel completed on ours would wait for an accept() that never
        # comes. Closed everywhere, new clients are refused at once (or, when
        # retiring, accepted by the new generation, which holds the socket).
        self.listener.close()
        self.listener = None
        if retire:
            self.api_listener.close()
            self.api_listener = None
        self.stop_phase = "acceptors"
        self.stop_deadline = time.monotonic() + self.cfg.timeouts.graceful_timeout
        for child in self.children.values():
            if child.role == ACCEPTOR:
                _kill(child.pid, signal.SIGUSR2 if retire else signal.SIGTERM)
            else:   # retire: stop taking workers; stop: /readyz says draining
                _kill(child.pid, signal.SIGUSR2 if retire else signal.SIGUSR1)
        if self.old_phase == "waiting":
            # Re-executed in place and not ready yet: the previous
            # generation's children still serve; they stop with us.
            self._retire_old()

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

    def _kill_all_of(self, role: str, sig: int) -> None:
        for child in self.children.values():
            if child.role == role:
                _kill(child.pid, sig)

    # -- scaling -------------------------------------------------------------------

    def _more_acceptors(self) -> None:
        if self.stopping:
            return
        n = self.acceptors
        if n >= MAX_ACCEPTORS:
            log.warning("SIGTTIN: already %d acceptors, the most allowed", n)
        elif any(c.role == ACCEPTOR and c.index == n for c in self.children.values()):
            log.warning("SIGTTIN: acceptor %d is still stopping; try again when it is gone", n)
        elif n < self.segment.nrings:
            self.acceptors = n + 1
            self.failures.pop((ACCEPTOR, n), None)
            self._spawn(ACCEPTOR, n)
            log.info("SIGTTIN: acceptor %d added (%d acceptors)", n, n + 1)
        else:
            # The rings are fixed when the segment is made: a new generation
            # with one more is how the count grows without dropping anything.
            log.info("SIGTTIN: no spare ring for acceptor %d; starting a new generation "
                     "with %d acceptors", n, n + 1)
            self._start_upgrade("SIGTTIN", keep_count=True, acceptors=n + 1)

    def _fewer_acceptors(self) -> None:
        if self.stopping:
            return
        if self.acceptors <= 1:
            log.warning("SIGTTOU: one acceptor is the fewest; ignored")
            return
        self.acceptors -= 1
        n = self.acceptors
        self.respawn_at.pop((ACCEPTOR, n), None)
        self.ready.discard((ACCEPTOR, n))
        for child in self.children.values():
            if child.role == ACCEPTOR and child.index == n:
                _kill(child.pid, signal.SIGTERM)
        log.info("SIGTTOU: stopping acceptor %d gracefully (%d acceptors left)", n, n)

    # -- upgrades --------------------------------------------------------------------

    def _start_upgrade(self, why: str, keep_count: bool, acceptors: int | None = None) -> None:
        if self.stopping:
            log.warning("%s: ignored, this generation is stopping", why)
            return
        if self.successor is not None:
            log.warning("%s: ignored, generation %d (pid %d) is already starting", why,
                        self.successor.generation, self.successor.pid)
            return
        if not self.announced:
            log.warning("%s: ignored, this generation is not ready yet", why)
            return
        if self.old_phase is not None:
            log.warning("%s: ignored, the previous generation is still retiring", why)
            return
        generation = upgrade.next_generation(self.generation)
        if acceptors is None and keep_count and self.acceptors != self.cfg.server.acceptors:
            acceptors = self.acceptors
        env = upgrade.successor_env({"public": self.listener, "api": self.api_listener},
                                    generation, acceptors, self.runtime_dir)
        argv = upgrade.command()
        mode = self.cfg.server.reexec
        if mode == "in-place" or (mode == "auto" and os.getpid() == 1):
            self._reexec_in_place(why, argv, env)
            return
        pipe_r, pipe_w = os.pipe()
        env[upgrade.ENV_UPGRADE_FD] = str(pipe_w)
        try:
            pid = upgrade.spawn(argv, env, [self.listener.fileno(), self.api_listener.fileno(),
                                            pipe_w])
        except OSError as exc:
            os.close(pipe_r)
            log.error("%s: upgrade failed: cannot start %s: %s; generation %d keeps serving",
                      why, argv[0], exc, self.generation)
            return
        finally:
            os.close(pipe_w)
        os.set_blocking(pipe_r, False)
        self.successor = Successor(pid, pipe_r, generation,
                                   time.monotonic() + UPGRADE_TIMEOUT, why)
        self.sel.register(pipe_r, selectors.EVENT_READ, self._on_successor)
        self.pidfile.to_old()
        sd_notify("RELOADING=1")
        log.info("%s: starting generation %d (pid %d): %s", why, generation, pid,
                 " ".join(argv))

    def _on_successor(self, mask) -> None:
        succ = self.successor
        try:
            data = os.read(succ.pipe, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # It is exiting (or closed the pipe it was given): the reap
            # reports how it ended; the deadline still bounds the wait.
            self.sel.unregister(succ.pipe)
            os.close(succ.pipe)
            succ.pipe = -1
            return
        succ.buf += data
        *lines, succ.buf = succ.buf.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            if text.startswith("ready "):
                self._upgrade_ready(succ)
                return
            if text.startswith("failed "):
                succ.reason = text[len("failed "):]

    def _forget_successor(self) -> Successor:
        succ, self.successor = self.successor, None
        if succ.pipe >= 0:
            self.sel.unregister(succ.pipe)
            os.close(succ.pipe)
        return succ

    def _upgrade_ready(self, succ: Successor) -> None:
        self._forget_successor()
        self.successor_pid = succ.pid
        log.info("%s: generation %d (pid %d) is ready; generation %d (pid %d) retires",
                 succ.why, succ.generation, succ.pid, self.generation, os.getpid())
        self._begin_stop(retire=True)

    def _upgrade_failed(self, reason: str) -> None:
        if self.successor is None:
            return
        succ = self._forget_successor()
        log.error("%s: upgrade failed: generation %d (pid %d): %s; generation %d keeps serving",
                  succ.why, succ.generation, succ.pid, reason, self.generation)
        self.pidfile.from_old()
        if not self.stopping:
            sd_notify("READY=1")

    def _reexec_in_place(self, why: str, argv: list[str], env: dict[str, str]) -> None:
        """PID 1 (a container's init) cannot hand over to another PID: its
        exit would stop the container (server.reexec = "in-place" asks for
        the same elsewhere). Check the new code and configuration
        in a subprocess first, then exec over ourselves; the children stay
        ours and are retired by the new image once its own are ready."""
        import subprocess   # only here: its modules would weigh on every child's heap

        check_env = {k: v for k, v in env.items() if k not in upgrade.OUR_VARS}
        try:
            out = subprocess.run(argv + ["--check"], executable=sys.executable, env=check_env,
                                 stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, timeout=UPGRADE_TIMEOUT)
            failed = out.returncode != 0
            reason = ([line for line in out.stderr.splitlines() if line.strip()] or
                      ["exit status %d" % out.returncode])[-1]
        except (OSError, subprocess.TimeoutExpired) as exc:
            failed, reason = True, str(exc)
        if failed:
            log.error("%s: upgrade failed: the new generation does not load: %s; "
                      "generation %d keeps serving", why, reason, self.generation)
            return
        # From here to the new image's _setup, signals stay pending (blocked
        # across the exec, which keeps both the mask and pending signals):
        # until it has handlers, their default action would kill us (or, as
        # PID 1, drop them). Those that came during the check are still
        # unread on the wake-up socket, which the exec closes: a stop among
        # them wins over the exec.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            late = self.wake_r.recv(256)
        except BlockingIOError:
            late = b""
        if any(signum in _STOP for signum in late):
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            log.info("%s: a stop signal came during the check; not re-executing", why)
            self._act_on(late)
            return
        env[upgrade.ENV_RETIRING_CHILDREN] = ",".join(
            "%d:%s:%d" % (c.pid, c.role, c.index) for c in self.children.values())
        env[upgrade.ENV_RETIRING_DIR] = self.runtime_dir
        sd_notify("RELOADING=1")
        log.info("%s: re-executing in place (pid %d stays): generation %d: %s", why,
                 os.getpid(), int(env[upgrade.ENV_GENERATION]), " ".join(argv))
        for handler in logging.getLogger("prack").handlers:
            handler.flush()
        keep = [self.listener.fileno(), self.api_listener.fileno()]
        for fd in keep:
            os.set_inheritable(fd, True)
        try:
            signal.set_wakeup_fd(-1)
            os.execve(sys.executable, argv, env)
        except OSError as exc:
            signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for fd in keep:
                os.set_inheritable(fd, False)
            log.error("%s: upgrade failed: exec %s: %s; generation %d keeps serving", why,
                      sys.executable, exc, self.generation)

    def _retire_old(self) -> None:
        log.info("generation %d is %s; retiring the previous generation's %d children",
                 self.generation, "stopping" if self.stopping else "ready", len(self.old))
        self.old_phase = "acceptors"
        self.old_deadline = time.monotonic() + self.cfg.timeouts.graceful_timeout
        for child in self.old.values():
            _kill(child.pid, signal.SIGUSR2)

    def _old_progress(self, now: float) -> None:
        if self.old_phase == "waiting":
            return
        if self.old_phase == "acceptors":
            if not any(c.role == ACCEPTOR for c in self.old.values()):
                self.old_phase = "api"
                self.old_deadline = now + API_STOP_SECONDS
                for child in self.old.values():
                    _kill(child.pid, signal.SIGTERM)
            elif now >= self.old_deadline:
                log.warning("graceful_timeout passed; killing the previous generation")
                for child in self.old.values():
                    _kill(child.pid, signal.SIGKILL)
                self.old_deadline = now + 1.0
        elif self.old and now >= self.old_deadline:
            for child in self.old.values():
                _kill(child.pid, signal.SIGKILL)
            self.old_deadline = now + 1.0
        if not self.old:
            if self.old_dir:
                _rmtree(self.old_dir)
                self.old_dir = ""
            log.info("the previous generation has retired")
            self.old_phase = None


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
