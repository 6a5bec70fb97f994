"""A generation of children: spawning them, draining them in two phases,
killing them.

A master has one generation of its own (its acceptors and its API process)
and, after a re-exec in place (PID 1), the previous image's children, which
it retires once its own are ready. Both stop the same way, written once in
`Generation.drain` and `Generation.advance`:

1. the acceptors are told to drain (they finish the requests they hold and
   need the API process to route the last answers); past graceful_timeout,
   the owner's `overdue` callable kills what it judges overdue;
2. once no acceptor is left, the API process gets SIGTERM and
   API_STOP_SECONDS to finish, then SIGKILL.

A child is forked with the master's signals blocked, sets the dispositions
it needs before unblocking them, runs its process object (built by the
master's `build` callable, in the child) and leaves with `os._exit`.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import time
from typing import Callable

from prack.child import loop

ACCEPTOR, API = "acceptor", "api"
MAX_ACCEPTORS = 256
API_BEAT = MAX_ACCEPTORS  # heartbeat word of the API process (acceptor i uses word i)
API_STOP_SECONDS = 5.0
KILL_RETRY = 1.0          # after a SIGKILL, when to send the next one

# Drain phases (None: not draining).
PHASE_ACCEPTORS, PHASE_API, PHASE_NOW = "acceptors", "api", "now"

# What a new child does with the master's signals until its loop installs
# its own handlers: stop and retire signals are kept for the loop; the
# master's controls mean nothing here.
_CHILD_DISPOSITIONS = (
    ((signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2), loop.early_handler),
    ((signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD), signal.SIG_DFL),
    ((signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU), signal.SIG_IGN),
)


class Child:
    __slots__ = ("role", "index", "pid", "started")

    def __init__(self, role, index, pid, started):
        self.role, self.index, self.pid, self.started = role, index, pid, started

    @property
    def ident(self) -> tuple[str, int]:
        return (self.role, self.index)

    @property
    def beat(self) -> int:
        """Its word in the heartbeat table."""
        return beat_word(self.role, self.index)


def beat_word(role: str, index: int) -> int:
    return index if role == ACCEPTOR else API_BEAT


class Generation:
    """The children of one generation, by PID, and the state of their drain."""

    def __init__(self, children=()) -> None:
        self.children: dict[int, Child] = {c.pid: c for c in children}
        self.phase: str | None = None
        self.deadline = 0.0
        self.overdue: Callable[[list[Child]], None] | None = None

    def __len__(self) -> int:
        return len(self.children)

    def __iter__(self):
        return iter(list(self.children.values()))

    def pop(self, pid: int) -> Child | None:
        return self.children.pop(pid, None)

    def of(self, role: str) -> list[Child]:
        return [c for c in self.children.values() if c.role == role]

    def has(self, role: str, index: int) -> bool:
        return any(c.role == role and c.index == index for c in self.children.values())

    @property
    def draining(self) -> bool:
        return self.phase is not None

    # -- spawn -----------------------------------------------------------------

    def spawn(self, role: str, index: int, blocked: frozenset,
              build: Callable[[str, int], object]) -> Child:
        """Fork a child that runs `build(role, index).run()`; OSError if the
        fork fails. `blocked` (the signals the master handles) stays blocked
        across fork(): until the child has its own dispositions, the master's
        handlers would run in it and write to the master's wake-up fd."""
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise
        if pid == 0:
            _child_main(role, index, mask, build)   # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child = Child(role, index, pid, time.monotonic())
        self.children[pid] = child
        return child

    # -- kill ------------------------------------------------------------------

    def kill(self, sig: int, role: str | None = None) -> None:
        for child in self.children.values():
            if role is None or child.role == role:
                kill(child.pid, sig)

    def wait_all(self) -> None:
        """Reap every child, however long it takes (after a SIGKILL: the
        master's last cleanup)."""
        for child in self.children.values():
            try:
                os.waitpid(child.pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()

    # -- the two-phase drain ---------------------------------------------------

    def drain(self, now: float, graceful_timeout: float, acceptor_signal: int,
              api_signal: int, overdue: Callable[[list[Child]], None]) -> None:
        """Phase one: signal the acceptors to drain (`acceptor_signal`) and
        the API process (`api_signal`: SIGUSR1 "draining", or SIGUSR2 "stop
        taking new workers" when retiring). Past graceful_timeout,
        `overdue(acceptors left)` is called (every KILL_RETRY seconds while
        any is left): it logs and kills what it judges overdue."""
        self.phase = PHASE_ACCEPTORS
        self.deadline = now + graceful_timeout
        self.overdue = overdue
        for child in self.children.values():
            kill(child.pid, acceptor_signal if child.role == ACCEPTOR else api_signal)

    def advance(self, now: float) -> bool:
        """Move the drain on; True once every child is gone."""
        if self.phase == PHASE_ACCEPTORS:
            left = self.of(ACCEPTOR)
            if not left:
                self.phase = PHASE_API
                self.deadline = now + API_STOP_SECONDS
                self.kill(signal.SIGTERM)
            elif now >= self.deadline:
                self.overdue(left)
                self.deadline = now + KILL_RETRY
        elif self.phase == PHASE_API and self.children and now >= self.deadline:
            self.kill(signal.SIGKILL)
            self.deadline = now + KILL_RETRY
        return not self.children

    def abort(self) -> None:
        """Stop now: SIGKILL everyone; the drain only waits for the reaps."""
        self.kill(signal.SIGKILL)
        self.phase = PHASE_NOW


def _child_main(role: str, index: int, mask, build) -> None:
    """The new child's first and last frame: never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signals, disposition in _CHILD_DISPOSITIONS:
            for sig in signals:
                signal.signal(sig, disposition)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # blocked ones arrive now
        code = build(role, index).run()
    except KeyboardInterrupt:
        code = 0
    except BaseException:
        logging.getLogger("prack." + role).exception("%s %d crashed", role, index)
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def kill(pid: int, sig: int) -> None:
    """os.kill, quiet when the process is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def describe_exit(status: int) -> str:
    """How a child ended, for the log ("exited with code 3", "was killed by
    SIGKILL (out of memory?)": the kernel's OOM killer sends SIGKILL)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        extra = " (out of memory?)" if sig == signal.SIGKILL else ""
        return "was killed by %s%s" % (name, extra)
    return "exited with code %d" % os.WEXITSTATUS(status)
