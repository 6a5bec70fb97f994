"""The master's supervision: binds, forks, supervises, stops.

`Master.run()` is a short loop: wait for a signal, a child's status line, the
upgrade pipe or a timer; reap children; respawn the dead ones (with backoff if
they keep dying) and kill the hung ones (no heartbeat). Signal handlers do
nothing but wake the loop (signal.set_wakeup_fd); the loop then calls one
`handle_<signal>` method per signal, from the `_HANDLERS` table:
SIGTERM/SIGINT/SIGQUIT drain gracefully; SIGUSR2/SIGHUP hand the server to a
new generation of itself (prack.master.upgrade) and retire once it reports
ready; SIGTTIN/SIGTTOU add or remove an acceptor. The children of a
generation, their spawning and their two-phase drain are
prack.master.generation's.

Cleanup holds on every exit path: the shared-memory segment's name is
unlinked as soon as it is mapped (children inherit the mapping through fork),
so nothing can stay in /dev/shm even if a process is SIGKILLed; the runtime
directory is removed in a `finally`, or, when the master itself is killed,
by the last of its children to exit (prack.master.rundir).
"""
from __future__ import annotations

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
from prack.master import upgrade
from prack.master import listeners
from prack.acceptor.process import Acceptor
from prack.api.process import ApiServer
from prack.errors import StartupError
from prack.master.generation import (ACCEPTOR, API, MAX_ACCEPTORS, PHASE_ACCEPTORS, Child,
                                     Generation, beat_word, describe_exit, kill)
from prack.master.notify import Pidfile, sd_notify
from prack.master import rundir
from prack.child import loop
from prack.ipc.ring import Segment

log = logging.getLogger("prack.master")

_STOP = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT", signal.SIGQUIT: "SIGQUIT"}
QUICK_DEATH = 2.0     # a child that dies sooner than this counts as crash-looping
KEEPS_DYING = 3       # quick deaths in a row: logged as an error; no stand-in during a stop
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
    return Master(cfg, config_path, upgrade.inherited()).run()


def _make_runtime_dir(configured: str) -> rundir.RuntimeDir:
    """This generation's private directory (its Unix sockets), locked for
    the generation's life (prack.master.rundir): in server.runtime_dir if set, else
    in $XDG_RUNTIME_DIR if writable, else in TMPDIR or /tmp. What a previous
    instance left there, and no live process still uses, goes first."""
    if configured:
        try:
            os.makedirs(configured, mode=0o700, exist_ok=True)
            rundir.sweep(configured)
            return rundir.make(configured)
        except OSError as exc:
            raise StartupError("server.runtime_dir %s: %s"
                               % (configured, exc.strerror or exc))
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.access(base, os.W_OK):
        base = os.environ.get("TMPDIR") or "/tmp"
    try:
        rundir.sweep(base)
        return rundir.make(base)
    except OSError as exc:
        raise StartupError("cannot create a runtime directory (set server.runtime_dir): "
                           "%s" % (exc.strerror or exc))


class _ChildRun:
    """A child's process object, and what it does at its exit when its
    master died meanwhile: the last process of the generation removes the
    runtime directory and the pidfile (prack.master.rundir.leave)."""

    def __init__(self, child, runtime_dir: rundir.RuntimeDir, pidfile: str,
                 master_pid: int) -> None:
        self.child = child
        self.runtime_dir = runtime_dir
        self.pidfile = pidfile
        self.master_pid = master_pid

    def run(self) -> int:
        try:
            return self.child.run()
        finally:
            if os.getppid() != self.master_pid:
                rundir.leave(self.runtime_dir.path, self.runtime_dir.lock_fd,
                             self.pidfile, self.master_pid)


def _noop(signum, frame):
    """Handlers only wake the loop (the wakeup fd carries the signal number)."""


class Respawns:
    """The respawn policy: a dead child starts again at once; one that keeps
    dying young (within QUICK_DEATH of its start), or cannot be forked,
    waits 0.1s, then twice as long each time, up to MAX_BACKOFF."""

    def __init__(self) -> None:
        self.failures: dict[tuple[str, int], int] = {}   # quick deaths in a row
        self.at: dict[tuple[str, int], float] = {}       # when each is due

    def count(self, ident: tuple[str, int], failed: bool) -> int:
        """Record one more death (`failed`: a quick one); failures in a row."""
        failures = self.failures.get(ident, 0) + 1 if failed else 0
        self.failures[ident] = failures
        return failures

    def schedule(self, ident: tuple[str, int], failed: bool) -> tuple[int, float]:
        """Schedule a respawn; (failures in a row, delay)."""
        failures = self.count(ident, failed)
        delay = 0.0 if failures == 0 else min(MAX_BACKOFF, 0.1 * 2 ** (failures - 1))
        self.at[ident] = time.monotonic() + delay
        return failures, delay

    def due(self, now: float) -> list[tuple[str, int]]:
        """The respawns due by `now`, taken off the schedule."""
        due = [ident for ident, when in self.at.items() if now >= when]
        for ident in due:
            del self.at[ident]
        return due

    def cancel(self, ident: tuple[str, int]) -> None:
        self.at.pop(ident, None)

    def cancel_all(self) -> None:
        self.at.clear()

    def forget(self, ident: tuple[str, int]) -> None:
        """A new child in that place starts with a clean record."""
        self.failures.pop(ident, None)


class Master:
    """One generation's master: its children (`own`), the previous
    generation's after an exec in place (`old`), the successor an upgrade
    starts, and the loop that supervises them."""

    def __init__(self, cfg, config_path: str | None, inherited: upgrade.Inherited):
        self.cfg = cfg
        self.config_path = config_path
        self.inherited = inherited
        self.generation = inherited.generation
        self.acceptors = inherited.acceptors or cfg.server.acceptors
        if not 1 <= self.acceptors <= MAX_ACCEPTORS:
            raise StartupError("%s=%d: expected 1 to %d acceptors"
                               % (upgrade.ENV_ACCEPTORS, self.acceptors, MAX_ACCEPTORS))
        self.own = Generation()
        self.respawns = Respawns()
        self.ready: set[tuple[str, int]] = set()
        self.announced = False
        self.stopping = False
        self.retire = False           # this stop hands over to a successor
        self.stop_asked = False       # a stop signal came while retiring
        self.successor: upgrade.Successor | None = None
        self.successor_pid = 0        # the generation we retired for
        # A re-exec in place (PID 1) inherits the old generation's children:
        # they retire once ours are ready, and are reaped here. None when
        # there are none, or once they have retired.
        self.old: Generation | None = None
        if inherited.retiring:
            now = time.monotonic()
            self.old = Generation(Child(role, index, pid, now)
                                  for pid, role, index in inherited.retiring)
        self.old_dir = inherited.retiring_dir
        self.listener = self.api_listener = self.link_listener = self.forward_listener = None
        self.segment = None
        self.runtime_dir = None
        self.rundir: rundir.RuntimeDir | None = None
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
        self.pidfile.replace_stale()
        self.rundir = _make_runtime_dir(cfg.server.runtime_dir)
        self.runtime_dir = self.rundir.path
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
        for sig in self._HANDLERS:
            signal.signal(sig, _noop)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # Blocked by a predecessor's exec in place: delivered now, to the loop.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_signal)
        self.sel.register(self.status_r, selectors.EVENT_READ, self._on_status)
        self.status_buf = b""
        if self.old is not None:
            log.info("generation %d (re-executed in place) takes over %d children of the "
                     "previous generation; they retire once this one is ready",
                     self.generation, len(self.old))
            self._reap()    # any that ended while we were exec'ing

    def _cleanup(self) -> None:
        generations = [g for g in (self.own, self.old) if g is not None and len(g)]
        for gen in generations:
            gen.kill(signal.SIGKILL)
        for gen in generations:
            gen.wait_all()
        if self.successor is not None:
            kill(self.successor.pid, signal.SIGTERM)
            self.successor.close()
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
            rundir.rmtree(self.runtime_dir)
        if self.rundir is not None:
            self.rundir.release()
        if self.old_dir:
            rundir.rmtree(self.old_dir)
        self.pidfile.remove()
        if started:     # a startup error is reported by the CLI, in one line
            if self.retire:
                log.info("generation %d retired; pid %d serves", self.generation,
                         self.successor_pid)
            else:
                log.info("stopped")

    def _loop(self) -> None:
        registered = self.sel.get_map()
        while True:
            timeout = self._next_timeout()
            for key, mask in self.sel.select(timeout):
                # An earlier event of this batch may have closed this one's
                # file (a stop forgets the successor and its pipe): skip its
                # stale key, as the children's loop does.
                if registered.get(key.fd) is key:
                    key.data(mask)
            self._reap()
            now = time.monotonic()
            if self.old is not None and self.old.draining and self.old.advance(now):
                self._old_retired()
            if self.successor is not None and now >= self.successor.deadline:
                kill(self.successor.pid, signal.SIGTERM)
                self._upgrade_failed("not ready within %.0fs (stopped it)"
                                     % upgrade.UPGRADE_TIMEOUT)
            if self.stopping:
                if self.own.advance(now) and self.old is None:
                    return
            else:
                self._spawn_due(now)
                if now >= self.hb_next:
                    self._check_heartbeats(now)

    def _next_timeout(self) -> float | None:
        times = list(self.respawns.at.values())
        times.append(self.own.deadline if self.stopping else self.hb_next)
        if self.successor is not None:
            times.append(self.successor.deadline)
        if self.old is not None and self.old.draining:
            times.append(self.old.deadline)
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
        self.heartbeats.set(beat_word(role, index), time.monotonic())  # a full timeout to start
        try:
            self.own.spawn(role, index, _HANDLED, self._child_run)
        except OSError as exc:
            # Out of processes or memory (a container's pids limit): the
            # others keep serving, and this one is tried again later.
            _, delay = self.respawns.schedule((role, index), True)
            log.error("%s %d: cannot start it: fork: %s; trying again in %.1fs",
                      role, index, exc.strerror or exc, delay)

    def _child_process(self, role: str, index: int):
        """In a new child (Generation.spawn): drop what only the master
        uses and build the role's process from what the master made."""
        self.sel.close()
        self.wake_r.close()
        self.wake_w.close()
        os.close(self.status_r)
        if self.successor is not None:
            self.successor.close()      # unless it closed at its end of file
        beat = self.heartbeats.beater(beat_word(role, index))
        if role == ACCEPTOR:
            self.api_listener.close()
            self.link_listener.close()
            self.forward_listener.close()
            child = Acceptor(self.cfg, index, self.generation, self.listener, self.segment,
                             self.link_path, self.status_w, beat=beat)
        else:
            if self.listener is not None:   # closed when a stop began
                self.listener.close()
            child = ApiServer(self.cfg, self.generation, self.api_listener,
                              self.link_listener, self.segment, self.status_w,
                              forward_listener=self.forward_listener,
                              runtime_dir=self.runtime_dir,
                              predecessor_dir=self.inherited.predecessor_dir, beat=beat)
        return child

    def _child_run(self, role: str, index: int) -> _ChildRun:
        """In a new child: its process object, and the cleanup it owes a
        dead master. The child keeps its copy of the runtime directory's
        lock: while it lives (draining after its master died, say), no
        starting master may remove the directory."""
        return _ChildRun(self._child_process(role, index), self.rundir, self.pidfile.path,
                         os.getppid())

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
                pids = [c.pid for c in self.own if c.ident == ident]
                log.info("%s %d is back (pid %s)", ident[0], ident[1],
                         pids[-1] if pids else "?")
        if (not self.announced and not self.stopping
                and len(self.ready) >= self.acceptors + 1):
            self._announce()

    def _announce(self) -> None:
        self.announced = True
        # The pidfile first: a script that waits for the ready line and then
        # reads the pidfile must find it.
        self.pidfile.write()
        log.info("ready: public=http://%s api=http://%s acceptors=%d pid=%d generation=%d "
                 "version=%s", listeners.address_of(self.listener),
                 listeners.address_of(self.api_listener), self.acceptors, os.getpid(),
                 self.generation, __version__)
        sd_notify("READY=1\nMAINPID=%d\nSTATUS=generation %d serving" % (os.getpid(),
                                                                           self.generation))
        self.inherited.report("ready %d" % os.getpid())
        if self.old is not None and not self.old.draining:
            self._retire_old()

    # -- reap and respawn ------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped(pid, status)

    def _reaped(self, pid: int, status: int) -> None:
        """Whose process it was decides what its end means."""
        child = self.own.pop(pid)
        if child is not None:
            self._child_exited(child, status)
            return
        child = self.old.pop(pid) if self.old is not None else None
        if child is not None:
            log.debug("previous generation's %s %d (pid %d) %s", child.role, child.index,
                      pid, describe_exit(status))
        elif self.successor is not None and pid == self.successor.pid:
            reason = "it %s before it was ready" % describe_exit(status)
            if self.successor.reason:
                reason += ": " + self.successor.reason
            self._upgrade_failed(reason)
        elif pid == self.successor_pid:
            # We retire for it and cannot take the listeners back: say so
            # loudly (a supervisor must restart the server).
            log.error("the new generation's master (pid %d) %s while generation %d "
                      "retires", pid, describe_exit(status), self.generation)
        # else: not ours (PID 1 duty): just reaped

    def _child_exited(self, child: Child, status: int) -> None:
        """One of ours ended: respawn it (with backoff if it keeps dying
        young), unless we are stopping or SIGTTOU removed its place."""
        ident = child.ident
        self.ready.discard(ident)
        how = describe_exit(status)
        quick = time.monotonic() - child.started < QUICK_DEATH
        if self.stopping:
            failures = self.respawns.count(ident, quick)
            if (child.role == API and self.own.phase == PHASE_ACCEPTORS and not self.retire
                    and failures < KEEPS_DYING):
                # The draining acceptors need an API process for the answers
                # to the requests they still hold: replace it (told at once
                # that the server is stopping), unless it keeps dying.
                log.warning("%s %d (pid %d) %s during the stop; restarting it for the "
                            "requests in flight", child.role, child.index, child.pid, how)
                self._spawn(API, 0)
                self.own.kill(signal.SIGUSR1, API)
            else:
                log.debug("%s %d (pid %d) %s", child.role, child.index, child.pid, how)
            return
        if child.role == ACCEPTOR and child.index >= self.acceptors:
            log.info("acceptor %d (pid %d) %s (removed by SIGTTOU)", child.index, child.pid, how)
            return
        failures, delay = self.respawns.schedule(ident, quick)
        if failures >= KEEPS_DYING:
            log.error("%s %d (pid %d) %s; it keeps dying, restarting in %.1fs",
                      child.role, child.index, child.pid, how, delay)
        else:
            log.warning("%s %d (pid %d) %s; restarting", child.role, child.index, child.pid, how)

    def _spawn_due(self, now: float) -> None:
        for ident in self.respawns.due(now):
            self._spawn(*ident)

    def _check_heartbeats(self, now: float) -> None:
        """A child whose loop has not run for heartbeat_timeout is hung (a
        deadlock, a stuck system call, SIGSTOP): kill it; the reap respawns it."""
        self.hb_next = now + min(1.0, self.hb_timeout / 4)
        for child in self.own:
            silent = now - self.heartbeats.get(child.beat)
            if silent > self.hb_timeout:
                log.error("%s %d (pid %d) sent no heartbeat for %.1fs (hung?); killing it",
                          child.role, child.index, child.pid, silent)
                self.heartbeats.set(child.beat, now)     # once, until it is reaped
                kill(child.pid, signal.SIGKILL)

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
            handler = self._HANDLERS.get(signum)
            if handler is not None:
                handler(self)

    def handle_term(self) -> None:
        self._stop_signal(signal.SIGTERM)

    def handle_int(self) -> None:
        self._stop_signal(signal.SIGINT)

    def handle_quit(self) -> None:
        self._stop_signal(signal.SIGQUIT)

    def handle_usr2(self) -> None:
        """Upgrade: a new generation with this one's acceptor count."""
        self._start_upgrade("SIGUSR2", keep_count=True)

    def handle_hup(self) -> None:
        """Reload: a new generation with the configured acceptor count."""
        self._start_upgrade("SIGHUP", keep_count=False)

    def handle_ttin(self) -> None:
        """One more acceptor (a new generation when no ring is spare)."""
        if self.stopping:
            return
        n = self.acceptors
        if n >= MAX_ACCEPTORS:
            log.warning("SIGTTIN: already %d acceptors, the most allowed", n)
        elif self.own.has(ACCEPTOR, n):
            log.warning("SIGTTIN: acceptor %d is still stopping; try again when it is gone", n)
        elif n < self.segment.nrings:
            self.acceptors = n + 1
            self.respawns.forget((ACCEPTOR, n))
            self._spawn(ACCEPTOR, n)
            log.info("SIGTTIN: acceptor %d added (%d acceptors)", n, n + 1)
        else:
            # The rings are fixed when the segment is made: a new generation
            # with one more is how the count grows without dropping anything.
            log.info("SIGTTIN: no spare ring for acceptor %d; starting a new generation "
                     "with %d acceptors", n, n + 1)
            self._start_upgrade("SIGTTIN", keep_count=True, acceptors=n + 1)

    def handle_ttou(self) -> None:
        """One acceptor fewer: the last one drains and is not respawned."""
        if self.stopping:
            return
        if self.acceptors <= 1:
            log.warning("SIGTTOU: one acceptor is the fewest; ignored")
            return
        self.acceptors -= 1
        n = self.acceptors
        self.respawns.cancel((ACCEPTOR, n))
        self.ready.discard((ACCEPTOR, n))
        for child in self.own:
            if child.ident == (ACCEPTOR, n):
                kill(child.pid, signal.SIGTERM)
        log.info("SIGTTOU: stopping acceptor %d gracefully (%d acceptors left)", n, n)

    def handle_chld(self) -> None:
        """Nothing to do here: the loop reaps after every wake-up, whatever
        woke it (SIGCHLDs coalesce; those that ended while this image was
        being exec'd in place are reaped by _setup)."""

    _HANDLERS = {
        signal.SIGTERM: handle_term,
        signal.SIGINT: handle_int,
        signal.SIGQUIT: handle_quit,
        signal.SIGUSR2: handle_usr2,
        signal.SIGHUP: handle_hup,
        signal.SIGTTIN: handle_ttin,
        signal.SIGTTOU: handle_ttou,
        signal.SIGCHLD: handle_chld,
    }

    # -- stopping ------------------------------------------------------------------

    def _stop_signal(self, signum: int) -> None:
        """SIGTERM, SIGINT and SIGQUIT alike: a graceful stop; a second one
        stops at once (retiring, the first one is only noted: a new
        generation serves, and it stops once its requests are done)."""
        name = _STOP[signum]
        if self.stopping and (not self.retire or self.stop_asked):
            log.warning("%s again: stopping now", name)
            self.own.abort()
            if self.old is not None:
                self.old.kill(signal.SIGKILL)
        elif self.stopping:
            log.info("%s: this generation is already retiring (another one "
                     "stops it at once)", name)
            self.stop_asked = True
        else:
            log.info("%s: graceful stop (up to %.3gs)", name,
                     self.cfg.timeouts.graceful_timeout)
            self._begin_stop()

    def _begin_stop(self, retire: bool = False) -> None:
        """Acceptors drain first (they need the API process to route their last
        responses); the API process stops once they are gone. Retiring, the
        API process is told at once (it stops taking new worker connections,
        which go to the new generation, but serves those it has)."""
        self.stopping = True
        self.retire = retire
        self.respawns.cancel_all()
        if self.successor is not None:
            kill(self.successor.pid, signal.SIGTERM)
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
        # Retire: stop taking workers; stop: /readyz says draining.
        self.own.drain(time.monotonic(), self.cfg.timeouts.graceful_timeout,
                       acceptor_signal=signal.SIGUSR2 if retire else signal.SIGTERM,
                       api_signal=signal.SIGUSR2 if retire else signal.SIGUSR1,
                       overdue=self._own_overdue)
        if self.old is not None and not self.old.draining:
            # Re-executed in place and not ready yet: the previous
            # generation's children still serve; they stop with us.
            self._retire_old()

    def _own_overdue(self, left: list[Child]) -> None:
        # Only the acceptors: the API process still gets its SIGTERM and
        # time to finish once they are gone.
        log.warning("graceful_timeout passed; killing %d acceptor(s)", len(left))
        for child in left:
            kill(child.pid, signal.SIGKILL)

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
        if self.old is not None:
            log.warning("%s: ignored, the previous generation is still retiring", why)
            return
        generation = upgrade.next_generation(self.generation)
        if acceptors is None and keep_count and self.acceptors != self.cfg.server.acceptors:
            acceptors = self.acceptors
        env = upgrade.successor_env({"public": self.listener, "api": self.api_listener},
                                    generation, acceptors, self.runtime_dir)
        argv = upgrade.command()
        if upgrade.in_place(self.cfg.server.reexec):
            self._reexec_in_place(why, argv, env)
            return
        try:
            succ = upgrade.Successor.start(why, argv, env, [self.listener.fileno(),
                                                            self.api_listener.fileno()],
                                           generation)
        except OSError as exc:
            log.error("%s: upgrade failed: cannot start %s: %s; generation %d keeps serving",
                      why, argv[0], exc, self.generation)
            return
        self.successor = succ
        self.sel.register(succ.pipe, selectors.EVENT_READ, self._on_successor)
        self.pidfile.to_old()
        sd_notify("RELOADING=1")
        log.info("%s: starting generation %d (pid %d): %s", why, generation, succ.pid,
                 " ".join(argv))

    def _on_successor(self, mask) -> None:
        succ = self.successor
        event = succ.read()
        if event == succ.CLOSED:
            # It is exiting (or closed the pipe it was given): the reap
            # reports how it ended; the deadline still bounds the wait.
            self.sel.unregister(succ.pipe)
            succ.close()
        elif event == succ.READY:
            self._upgrade_ready(succ)

    def _forget_successor(self) -> upgrade.Successor:
        succ, self.successor = self.successor, None
        if succ.pipe >= 0:
            self.sel.unregister(succ.pipe)
            succ.close()
        return succ

    def _upgrade_ready(self, succ: upgrade.Successor) -> None:
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
        reason = upgrade.check_new_image(argv, env)
        if reason is not None:
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
            "%d:%s:%d" % (c.pid, c.role, c.index) for c in self.own)
        env[upgrade.ENV_RETIRING_DIR] = self.runtime_dir
        sd_notify("RELOADING=1")
        log.info("%s: re-executing in place (pid %d stays): generation %d: %s", why,
                 os.getpid(), int(env[upgrade.ENV_GENERATION]), " ".join(argv))
        signal.set_wakeup_fd(-1)
        try:
            upgrade.exec_in_place(argv, env, [self.listener.fileno(),
                                              self.api_listener.fileno()])
        except OSError as exc:
            signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            log.error("%s: upgrade failed: exec %s: %s; generation %d keeps serving", why,
                      sys.executable, exc, self.generation)

    # -- the previous generation (after a re-exec in place) ------------------------

    def _retire_old(self) -> None:
        log.info("generation %d is %s; retiring the previous generation's %d children",
                 self.generation, "stopping" if self.stopping else "ready", len(self.old))
        self.old.drain(time.monotonic(), self.cfg.timeouts.graceful_timeout,
                       acceptor_signal=signal.SIGUSR2, api_signal=signal.SIGUSR2,
                       overdue=self._old_overdue)

    def _old_overdue(self, left: list[Child]) -> None:
        log.warning("graceful_timeout passed; killing the previous generation")
        self.old.kill(signal.SIGKILL)

    def _old_retired(self) -> None:
        if self.old_dir:
            rundir.rmtree(self.old_dir)
            self.old_dir = ""
        log.info("the previous generation has retired")
        self.old = None


# Blocked across fork() (until a child has its own dispositions, the
# master's handlers would run in it and write to the master's wake-up fd; a
# SIGUSR1 meant for it would kill it) and across an exec in place (until the
# new image has its handlers).
_HANDLED = frozenset({*Master._HANDLERS, signal.SIGUSR1})
