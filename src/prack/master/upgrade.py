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
                      here for its identifiers (prack.forward).
``PRACK_RETIRING_CHILDREN`` and ``PRACK_RETIRING_RUNTIME_DIR``: only for a
                      re-exec in place (PID 1): the old generation's children
                      (``pid:role:index,...``), which the new image retires
                      and reaps, and their runtime directory, removed after.

systemd socket activation (``LISTEN_FDS``/``LISTEN_PID``, optionally
``LISTEN_FDNAMES`` naming them ``public`` and ``api``; unnamed, the first is
the public socket and the second the API socket) is read the same way.
"""
from __future__ import annotations

import logging
import os
import socket
import sys

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
