"""Handing the server to a new generation of itself (SIGUSR2, SIGHUP, SIGTTIN).

The contract between an old master and the new one it starts is a handful of
environment variables (read once, then removed from the environment):

``PRACK_LISTEN_FDS``  ``public:3,api:4``: the listening sockets, inherited
                      (the new master binds nothing it inherits).
``PRACK_UPGRADE_FD``  the write end of a pipe: the new master writes
                      ``ready <pid>`` once its acceptors and API process run,
                      or ``failed <reason>`` if it cannot start.
``PRACK_GENERATION``  the new generation number (old + 1, 1..65535 wrapping),
                      so identifiers of the two never collide.
``PRACK_ACCEPTORS``   the acceptor count to start with when it differs from
                      the configuration (SIGTTIN/SIGTTOU adjustments survive
                      a USR2 upgrade; SIGHUP goes back to the configuration).
``PRACK_PREDECESSOR_DIR`` the old generation's runtime directory: its API
                      process takes, on ``worker.sock``, the responses posted
                      here for its identifiers (prack.api.forward).
``PRACK_RETIRING_CHILDREN`` and ``PRACK_RETIRING_RUNTIME_DIR``: only for a
                      re-exec in place (PID 1): the old generation's children
                      (``pid:role:index,...``), which the new image retires
                      and reaps, and their runtime directory, removed after.

systemd socket activation (``LISTEN_FDS``/``LISTEN_PID``, optionally
``LISTEN_FDNAMES`` naming them ``public`` and ``api``; unnamed, the first is
the public socket and the second the API socket) is read the same way.

The old master's side of the hand-over is here too: `Successor` starts the
new master and reads what it reports on the pipe; `check_new_image` and
`exec_in_place` are the two steps of a re-exec in place. What the old
master does with the outcome (retire, or keep serving) is its supervision
loop's business (prack.master.arbiter).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time

from prack.config import parse_address

log = logging.getLogger("prack.master")

ENV_LISTEN_FDS = "PRACK_LISTEN_FDS"
ENV_UPGRADE_FD = "PRACK_UPGRADE_FD"
ENV_GENERATION = "PRACK_GENERATION"
ENV_ACCEPTORS = "PRACK_ACCEPTORS"
ENV_RETIRING_CHILDREN = "PRACK_RETIRING_CHILDREN"
ENV_RETIRING_DIR = "PRACK_RETIRING_RUNTIME_DIR"
ENV_PREDECESSOR_DIR = "PRACK_PREDECESSOR_DIR"
OUR_VARS = (ENV_LISTEN_FDS, ENV_UPGRADE_FD, ENV_GENERATION, ENV_ACCEPTORS,
            ENV_RETIRING_CHILDREN, ENV_RETIRING_DIR, ENV_PREDECESSOR_DIR)
SD_FIRST_FD = 3
UPGRADE_TIMEOUT = 60.0   # a new generation not ready by then has failed


class Inherited:
    """What a predecessor (or systemd) handed to this master."""

    def __init__(self) -> None:
        self.listeners: dict[str, socket.socket] = {}
        self.from_systemd = False
        self.upgrade_fd: int | None = None
        self.generation = 1
        self.acceptors: int | None = None
        self.retiring: list[tuple[int, str, int]] = []
        self.retiring_dir = ""
        self.predecessor_dir = ""

    @classmethod
    def from_environment(cls, environ=os.environ) -> "Inherited":
        self = cls()
        spec = environ.get(ENV_LISTEN_FDS, "")
        for item in filter(None, spec.split(",")):
            name, _, fd = item.partition(":")
            self.listeners[name] = _listener(int(fd))
        if environ.get("LISTEN_PID") == str(os.getpid()) and not self.listeners:
            count = int(environ.get("LISTEN_FDS", "0") or 0)
            names = environ.get("LISTEN_FDNAMES", "").split(":")
            for i in range(count):
                name = names[i] if i < len(names) and names[i] in ("public", "api") else \
                    ("public", "api")[i] if i < 2 else ""
                if name:
                    self.listeners[name] = _listener(SD_FIRST_FD + i)
                    self.from_systemd = True
        if environ.get(ENV_UPGRADE_FD):
            self.upgrade_fd = int(environ[ENV_UPGRADE_FD])
            os.set_inheritable(self.upgrade_fd, False)
        if environ.get(ENV_GENERATION):
            self.generation = int(environ[ENV_GENERATION])
        if environ.get(ENV_ACCEPTORS):
            self.acceptors = int(environ[ENV_ACCEPTORS])
        for item in filter(None, environ.get(ENV_RETIRING_CHILDREN, "").split(",")):
            pid, role, index = item.split(":")
            self.retiring.append((int(pid), role, int(index)))
        self.retiring_dir = environ.get(ENV_RETIRING_DIR, "")
        self.predecessor_dir = environ.get(ENV_PREDECESSOR_DIR, "") or self.retiring_dir
        if environ is os.environ:
            global _current
            _current = self
            # Consumed: never passed on by accident (to children, or to a
            # later successor, which gets its own values).
            for var in OUR_VARS + ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                os.environ.pop(var, None)
        return self

    def listener(self, name: str, address: str) -> socket.socket | None:
        """The inherited socket for `name`. From a predecessor, only if it
        still matches the configured port (a changed port means: bind the new
        one, drop the old); from systemd, always."""
        sock = self.listeners.pop(name, None)
        if sock is None:
            return None
        _, port = parse_address(address)
        if self.from_systemd:
            # The socket unit decides the address: ours is only a default.
            pass
        elif port and sock.family != socket.AF_UNIX and sock.getsockname()[1] != port:
            log.info("%s: the configured address %s differs from the inherited socket %s; "
                     "binding the new one", name, address, sock.getsockname())
            sock.close()
            return None
        sock.setblocking(False)
        return sock

    def close_unused(self) -> None:
        for sock in self.listeners.values():
            sock.close()
        self.listeners.clear()

    def report(self, message: str) -> None:
        """Tell the predecessor (`ready <pid>` / `failed <reason>`), once."""
        fd, self.upgrade_fd = self.upgrade_fd, None
        if fd is None:
            return
        try:
            os.write(fd, (message.replace("\n", " ") + "\n").encode())
        except OSError:
            pass
        finally:
            os.close(fd)


_current: Inherited | None = None


def inherited() -> Inherited:
    """What this process inherited (read from the environment once)."""
    return _current if _current is not None else Inherited.from_environment()


def _listener(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    return sock


def next_generation(generation: int) -> int:
    return generation % 0xFFFF + 1


def command() -> list[str]:
    """The command line that started this process (interpreter and script or
    -m module included): what a new generation runs. It names files, not
    code: the code on disk now is what starts."""
    return list(sys.orig_argv)


def successor_env(listeners: dict[str, socket.socket], generation: int,
                  acceptors: int | None, runtime_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OUR_VARS}
    env[ENV_PREDECESSOR_DIR] = runtime_dir
    env[ENV_LISTEN_FDS] = ",".join("%s:%d" % (name, sock.fileno())
                                   for name, sock in listeners.items())
    env[ENV_GENERATION] = str(generation)
    if acceptors is not None:
        env[ENV_ACCEPTORS] = str(acceptors)
    return env


def spawn(argv: list[str], env: dict[str, str], keep: list[int]) -> int:
    """Start `argv` with only `keep` (and stdio) inherited; its PID."""
    for fd in keep:
        os.set_inheritable(fd, True)
    try:
        return os.posix_spawn(sys.executable, argv, env)
    finally:
        for fd in keep:
            os.set_inheritable(fd, False)


def in_place(mode: str) -> bool:
    """Whether an upgrade execs over this process (server.reexec): PID 1,
    a container's init, cannot hand over to another PID (its exit would
    stop the container)."""
    return mode == "in-place" or (mode == "auto" and os.getpid() == 1)


class Successor:
    """A new generation being started by an upgrade: its PID and the read
    end of the pipe on which it reports ``ready <pid>`` or ``failed
    <reason>``."""
    __slots__ = ("pid", "pipe", "generation", "deadline", "buf", "reason", "why")

    READY, CLOSED = "ready", "closed"

    def __init__(self, pid, pipe, generation, deadline, why):
        self.pid, self.pipe, self.generation, self.deadline = pid, pipe, generation, deadline
        self.buf = b""
        self.reason = ""
        self.why = why

    @classmethod
    def start(cls, why: str, argv: list[str], env: dict[str, str],
              listeners: list[int], generation: int) -> "Successor":
        """Start `argv` as the new master, handing it `listeners` and the
        pipe's write end; OSError when it cannot be started."""
        pipe_r, pipe_w = os.pipe()
        env[ENV_UPGRADE_FD] = str(pipe_w)
        try:
            pid = spawn(argv, env, listeners + [pipe_w])
        except OSError:
            os.close(pipe_r)
            raise
        finally:
            os.close(pipe_w)
        os.set_blocking(pipe_r, False)
        return cls(pid, pipe_r, generation, time.monotonic() + UPGRADE_TIMEOUT, why)

    def read(self) -> str | None:
        """Read its reports: READY once it serves; CLOSED when it closed the
        pipe (it is exiting: the reap says how it ended; the caller stops
        watching the pipe and calls `close`); else None. A ``failed``
        reason is kept in `reason`."""
        try:
            data = os.read(self.pipe, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            return self.CLOSED
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            if text.startswith("ready "):
                return self.READY
            if text.startswith("failed "):
                self.reason = text[len("failed "):]
        return None

    def close(self) -> None:
        if self.pipe >= 0:
            os.close(self.pipe)
            self.pipe = -1


def check_new_image(argv: list[str], env: dict[str, str]) -> str | None:
    """Before a re-exec in place: run the new code and configuration with
    ``--check`` in a subprocess; None if they load, else why not."""
    import subprocess   # only here: its modules would weigh on every child's heap

    check_env = {k: v for k, v in env.items() if k not in OUR_VARS}
    try:
        out = subprocess.run(argv + ["--check"], executable=sys.executable, env=check_env,
                             stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, timeout=UPGRADE_TIMEOUT)
        if out.returncode == 0:
            return None
        return ([line for line in out.stderr.splitlines() if line.strip()] or
                ["exit status %d" % out.returncode])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)


def exec_in_place(argv: list[str], env: dict[str, str], listeners: list[int]) -> None:
    """Exec the new image over this process, `listeners` inherited. Returns
    only by raising OSError (the descriptors are private again)."""
    for handler in logging.getLogger("prack").handlers:
        handler.flush()
    for fd in listeners:
        os.set_inheritable(fd, True)
    try:
        os.execve(sys.executable, argv, env)
    except OSError:
        for fd in listeners:
            os.set_inheritable(fd, False)
        raise
