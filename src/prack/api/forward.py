"""Responses posted to the wrong generation's API process.

During an upgrade two API processes accept on the same worker port for a
moment (the new one starts before the old one stops accepting), and a worker
that opens a connection per call may post its response to either. An
identifier carries its generation, so the API process that receives a post
for the other generation passes it on, over a Unix socket in that
generation's runtime directory (`worker.sock`, which speaks the same worker
API), and relays the answer:

* the new generation knows its predecessor's runtime directory (the old
  master passes it down: PRACK_PREDECESSOR_DIR);
* the new master writes its own runtime directory into the predecessor's,
  as `successor`, before any of its identifiers exists; the old API process
  reads it when it first needs it.

A forward is one short HTTP/1.1 exchange (`Connection: close`) driven by the
API process's selector; it never blocks the loop. It is a buffered
connection of its own (child/connection.py), and its own selector data: the
loop calls it with the events.
"""
from __future__ import annotations

import logging
import os
import socket

from prack.child.connection import EVENT_READ, EVENT_WRITE, Connection

log = logging.getLogger("prack.api")

SOCKET_NAME = "worker.sock"
SUCCESSOR_FILE = "successor"
# The answer to a forwarded call is read up to this, plus four times the
# call's body (a v2 batch's results grow with it; an error names a field).
MAX_ANSWER = 1 << 16


def successor_dir(runtime_dir: str) -> str | None:
    try:
        with open(os.path.join(runtime_dir, SUCCESSOR_FILE)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def announce_successor(predecessor_dir: str, runtime_dir: str) -> None:
    path = os.path.join(predecessor_dir, SUCCESSOR_FILE)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(runtime_dir)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot tell the previous generation where responses for this one go "
                    "(%s): %s", path, exc.strerror)


class Forward(Connection):
    """One worker call on its way to the other generation's API process;
    `done(status, body)` gets the answer (502 when it could not be passed on)."""

    __slots__ = ("done", "inbuf", "limit")

    def __init__(self, sel, path: str, target: str, ctype: bytes, body: bytes, done,
                 method: bytes = b"POST") -> None:
        """POST `body` to `target` (a path of the worker API, with its query
        if any) over the Unix socket at `path` (or `method` it: a GET with
        an empty body); `ctype` is the whole Content-Type header line
        (and any other header lines the call needs, such as Accept)."""
        super().__init__(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), sel, 0)
        self.done = done
        self.inbuf = bytearray()
        self.limit = MAX_ANSWER + 4 * len(body)
        self.add_output([b"%s %s HTTP/1.1\r\nHost: prack\r\n%sConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n" % (method, target.encode("latin-1"),
                                                             ctype, len(body)), body])
        try:
            self.sock.setblocking(False)
            self.sock.connect(path)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._finish(410, b'{"error":"the client has gone (its generation has '
                              b'stopped: %s)"}' % str(exc.strerror).encode())
            return
        self.watch(EVENT_WRITE)

    def __call__(self, mask: int) -> None:
        if self.out:
            if self.flush() < 0:
                self._answer()          # nothing read: the other generation did not answer
            elif not self.out:
                self.watch(EVENT_READ)
            return
        data = self.receive()
        if data is None:
            return
        if data and len(self.inbuf) < self.limit:
            self.inbuf += data
            return
        self._answer()

    def _answer(self) -> None:
        head, sep, body = bytes(self.inbuf).partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        if not sep or len(parts) < 2 or not parts[1].isdigit():
            self._finish(502, b'{"error":"the other generation did not answer"}')
        else:
            self._finish(int(parts[1]), body)

    def _finish(self, status: int, body: bytes) -> None:
        self.release()
        self.done(status, body)
