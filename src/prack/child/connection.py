"""One buffered non-blocking connection in a child's selector loop, as both
children keep them (an acceptor's clients; the API process's workers, its
acceptor links and its forwards to the other generation).

What is written waits in `out`, a list of buffers sent with sendmsg(2) as
far as the socket takes them; a file region (`file`) may follow it, sent
with sendfile(2). The connection is watched in the loop's selector for the
events in `events` (0: not registered), and it is its own selector data, so
the loop hands it back as is. What a child does once the buffer has drained,
or when the peer has gone, is the child's: `flush` only reports.

Handling a connection's bytes can lead back to the same handling (an answer
written at once asks for the next pipelined request): `drive` turns that
re-entry into another turn of one loop, so pipelined requests never nest
calls.
"""
from __future__ import annotations

import os
import selectors

from prack.child.send import send_file, send_pending

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Connection:
    """A socket, its pending output and the events it is watched for."""

    __slots__ = ("sock", "sel", "out", "events", "file", "processing", "again")

    # How much of `file` one flush sends: all the socket takes, by default.
    # A child that must not let one large file hold up its loop sends less.
    FILE_ROUNDS = 1 << 30
    FILE_CHUNK = 1 << 20

    def __init__(self, sock, sel: selectors.BaseSelector, events: int = EVENT_READ) -> None:
        self.sock = sock
        self.sel = sel
        self.out: list = []
        self.events = events
        self.file = None            # a file region to send after `out`: [fd, offset, remaining]
        self.processing = False     # drive() is running for this connection
        self.again = False          # ...and was asked for another turn
        if events:
            sel.register(sock, events, self)

    # -- output -----------------------------------------------------------------

    def add_output(self, buffers: list) -> bool:
        """Add buffers to the output; True when it was empty, so the caller
        flushes now (otherwise a flush is already waiting for the socket)."""
        out = self.out
        was_empty = not out
        out.extend(buffers)
        return was_empty

    def flush(self) -> int:
        """Send what waits, then the file region behind it, as far as the
        socket takes them. The number of bytes of `out` sent, or -1 when the
        peer has gone (or the file shrank): the caller closes."""
        out = self.out
        try:
            sent = send_pending(self.sock, out)
            job = self.file
            if job is not None and not out:
                if send_file(self.sock, job, out, self.FILE_ROUNDS, self.FILE_CHUNK):
                    self.file = None
                    os.close(job[0])
        except OSError:
            return -1
        return sent

    def sending(self) -> bool:
        """Whether output is still waiting for the socket."""
        return bool(self.out) or self.file is not None

    # -- input --------------------------------------------------------------------

    def receive(self, size: int = 65536):
        """Up to `size` bytes; None when nothing waits; b"" when the peer
        has gone, by a close or a reset alike (for a child that answers
        both the same way)."""
        try:
            return self.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    # -- the selector -------------------------------------------------------------

    def watch(self, events: int) -> None:
        """Be watched for `events` (0: not at all, for now)."""
        old = self.events
        if events == old:
            return
        self.events = events
        sock = self.sock
        if sock is None:
            return
        if not old:
            self.sel.register(sock, events, self)
        elif not events:
            self.sel.unregister(sock)
        else:
            self.sel.modify(sock, events, self)

    def want_writes(self) -> None:
        """Watch for writability too, while output waits: a full socket."""
        if not self.events & EVENT_WRITE:
            self.watch(self.events | EVENT_WRITE)

    def drop_writes(self) -> None:
        if self.events & EVENT_WRITE:
            self.watch(self.events & ~EVENT_WRITE)

    # -- handling -----------------------------------------------------------------

    def drive(self, step) -> None:
        """Run step(self) until it returns false and no call from inside it
        asked for another turn; a call made while it runs only asks. Stops
        once the connection is closed."""
        if self.processing:
            self.again = True
            return
        self.processing = True
        try:
            while True:
                self.again = False
                more = step(self)
                if not (more or self.again) or self.sock is None:
                    break
        finally:
            self.processing = False

    # -- the end ------------------------------------------------------------------

    def release(self) -> None:
        """Stop watching, close the socket and any file being sent, drop the
        output. Idempotent."""
        sock = self.sock
        if sock is None:
            return
        if self.events:
            self.sel.unregister(sock)
        sock.close()
        self.sock = None
        self.out = []
        job = self.file
        if job is not None:
            self.file = None
            os.close(job[0])
