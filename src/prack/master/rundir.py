"""A generation's runtime directory: made locked, swept when stale, and
removed by whoever of its processes leaves last.

The directory (``prack-<12 hex digits>``) holds the Unix sockets and the
spool of one generation. Its ``lock`` file carries an flock (LOCK_EX) taken
by the master before the directory gets its name: the master makes it as
``.prack-<hex>.new``, creates and locks ``lock`` inside, then renames it, so
a directory with the prack- name always has a holder or is stale.

Who holds the lock: the master, and every child it forks (fork shares the
open file description, hence the flock). An exec drops it (the descriptor is
close-on-exec): a successor master, or the master re-executed in place, makes
a directory of its own. So the lock stays taken as long as any process of
that generation lives, including children that drain after their master
died: a starting master never removes a directory that something still
uses.

* `make(base)`: a new, locked directory.
* `sweep(base)`: a starting master removes the sibling directories
  whose lock it can take (their whole generation is gone: kill -9 of
  everything, a crash, a reboot of a persistent directory). Directories
  without a lock file (made by an older version) and half-made ``.new`` ones
  are left alone: taking their lock would race a master making one.
* `leave(...)`: a child whose master died, at its exit. It closes its own
  copy of the lock and tries the lock through a new descriptor; only the last
  process of the generation gets it, and it removes the directory and the
  dead master's pidfile, as the master would have.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import re

from prack.master.notify import read_pid

log = logging.getLogger("prack.master")

LOCK_NAME = "lock"
_NAME = re.compile(r"prack-[0-9a-f]{12}\Z")


class RuntimeDir:
    """A runtime directory and the descriptor that holds its lock."""

    def __init__(self, path: str, lock_fd: int) -> None:
        self.path = path
        self.lock_fd = lock_fd

    def release(self) -> None:
        """The master's exit (after removing the directory)."""
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def make(base: str) -> RuntimeDir:
    """A new directory only we can use, in `base`, locked before it is named
    (OSError if it cannot be made)."""
    for _ in range(100):
        name = "prack-" + os.urandom(6).hex()
        path = os.path.join(base, name)
        staging = os.path.join(base, "." + name + ".new")
        try:
            os.mkdir(staging, 0o700)
        except FileExistsError:
            continue
        fd = -1
        try:
            fd = os.open(os.path.join(staging, LOCK_NAME),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "exists", path)
            os.rename(staging, path)
            return RuntimeDir(path, fd)
        except FileExistsError:
            _abandon(staging, fd)
            continue
        except BaseException:
            _abandon(staging, fd)
            raise
    raise FileExistsError(errno.EEXIST, "no unused name for a runtime directory", base)


def _abandon(staging: str, fd: int) -> None:
    rmtree(staging)
    if fd >= 0:
        os.close(fd)


def rmtree(path: str) -> None:
    import shutil   # at cleanup only (the children share the master's heap)

    shutil.rmtree(path, ignore_errors=True)


def _take(path: str) -> int:
    """A descriptor holding `path`'s lock, or -1 when a process of its
    generation still holds it (or it has no lock file, or is not ours)."""
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return -1
    return fd


def sweep(base: str) -> list[str]:
    """Remove the stale runtime directories in `base` (before a master makes
    its own there); the removed paths."""
    try:
        names = os.listdir(base)
    except OSError:
        return []
    removed = []
    for name in sorted(names):
        path = os.path.join(base, name)
        if not _NAME.match(name):
            continue
        fd = _take(path)
        if fd < 0:
            continue
        try:
            log.warning("removing the runtime directory %s: no process of the instance "
                        "that made it is left", path)
            rmtree(path)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def leave(path: str, lock_fd: int, pidfile: str, master_pid: int) -> None:
    """A child's exit after its master died: drop our hold on the lock; if
    no process of the generation is left, remove the directory and the
    pidfile names that still carry the dead master's PID."""
    if lock_fd >= 0:
        try:
            os.close(lock_fd)
        except OSError:
            pass
    fd = _take(path)
    if fd < 0:
        return      # another process of this generation leaves after us
    try:
        rmtree(path)
        removed = [path]
        if pidfile:
            for name in (pidfile, pidfile + ".oldbin"):
                if read_pid(name) == master_pid:
                    try:
                        os.unlink(name)
                        removed.append(name)
                    except OSError:
                        pass
        log.info("the master (pid %d) has gone and this is its last child: removed %s",
                 master_pid, ", ".join(removed))
    finally:
        os.close(fd)
