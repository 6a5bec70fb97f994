"""Spool files: request bodies too large for the ring, on disk.

An acceptor writes a large body, as it arrives, to `<runtime dir>/spool/`
under the request's identifier (its characters 4-8 name the acceptor); the
API process serves it to a worker at ``prack.input``'s path; the file goes
when its request finishes or its client goes, and an acceptor clears what an
earlier incarnation of it left when it starts. Both processes name and find
the files through this module.
"""
from __future__ import annotations

import os

SPOOL_DIR = "spool"
INPUT_KEY = "prack.input"

def spool_dir(runtime_dir: str) -> str:
    return os.path.join(runtime_dir, SPOOL_DIR)


def input_path(identifier: str) -> str:
    """The worker API path a spooled body is read from."""
    return "/api/v2/requests/%s/input" % identifier


def clear_leftovers(directory: str, index: int) -> int:
    """Remove the spool files of acceptor `index` (an identifier's characters
    4-8 are its acceptor, in hex); the number removed."""
    mine = "%04x" % index
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if len(name) == 32 and name[4:8] == mine:
            try:
                os.unlink(os.path.join(directory, name))
                removed += 1
            except OSError:
                pass
    return removed


class SpoolFile:
    """One request body being written to disk. `write` is the reader's sink."""

    __slots__ = ("path", "fd", "size")

    def __init__(self, directory: str, identifier: str):
        self.path = os.path.join(directory, identifier)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                          | getattr(os, "O_CLOEXEC", 0), 0o600)
        self.size = 0

    def write(self, data) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                self.size += n
                view = view[n:]
        finally:
            view.release()

    def finish(self) -> None:
        """The body is complete: the file stays for the API process."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def remove(self) -> None:
        self.finish()
        try:
            os.unlink(self.path)
        except OSError:
            pass
