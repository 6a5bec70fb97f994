"""Large request bodies and `Expect: 100-continue`, on the acceptor's side.

A body up to `limits.inline_body_size` travels in the ring with its request.
A larger one (up to `limits.max_body_size`) is written, as it arrives, to a
spool file in `<runtime dir>/spool/` named by the request's identifier; the
environment then says where a worker reads it (``prack.input``: the API
process serves ``GET /api/v2/requests/{id}/input`` from that file, see
apiinput.py) and the ring record carries no body. Memory stays bounded by one
receive buffer per connection, whatever the body's size.

A request with `Expect: 100-continue` is queued as soon as its head is in,
flagged RECF_INPUT_PENDING, and no 100 is sent: a client does not upload into
a queue nobody serves. When a worker takes it, the API process parks the item
and sends F_INPUT; only then does the acceptor send `100 Continue`, read the
body (inline or spooled, with body_timeout and min_body_rate as for any
body), and answer F_INPUT_DONE. The API process then hands the item out, so
workers always see complete bodies.

The spool file goes when its request finishes or its client goes; an
acceptor removes what an earlier incarnation of it left (a kill -9) when it
starts, and the master removes the whole runtime directory at exit.

`AcceptorUploads` is mixed into the Acceptor, which calls these hooks from
its loop; everything about uploads stays here.
"""
from __future__ import annotations

import logging
import os
import selectors
import time

from prack.ipc import frames, slots
from prack.ipc.slots import SLOT_FREE, SLOT_GONE, SLOT_TAKEN
from prack.ipc.spool import INPUT_KEY, SpoolFile, clear_leftovers, input_path, spool_dir
from prack.protocol import environ

log = logging.getLogger("prack.acceptor")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Conn.input: where a request with a deferred body (Expect: 100-continue) is.
PARKED = 1       # queued with its head only; waiting for a worker (F_INPUT)
UPLOADING = 2    # 100 sent; its body is being read
DONE = 3         # the body is in; F_INPUT_DONE sent


class AcceptorUploads:
    """Mixed into Acceptor (which provides ring, slots, _dispatch, _fail,
    _write, _send_api, ...)."""

    spool_dir = ""

    def _uploads_start(self) -> None:
        """At the start of each incarnation: the spool directory exists and
        holds nothing of an earlier one of this acceptor."""
        self.spool_dir = spool_dir(os.path.dirname(self.api_path))
        try:
            os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            log.warning("acceptor %d: cannot create %s: %s", self.index, self.spool_dir,
                        exc.strerror)
        n = clear_leftovers(self.spool_dir, self.index)
        if n:
            log.info("acceptor %d: removed %d spool file(s) left by its previous "
                     "incarnation", self.index, n)

    def _identifier(self, conn) -> str:
        if not conn.key:
            conn.key = self.rand.getrandbits(62) or 1
        return slots.make_identifier(self.generation, self.index, conn.slot, conn.key)

    # -- spooling ---------------------------------------------------------------

    def _spool_body(self, conn) -> bool:
        """The reader has more body than is kept inline: send it to a spool
        file from now on. False when that failed (the client is answered)."""
        if conn.reader.wants_continue and not conn.sent_continue:
            return True         # deferred first: the body is read after F_INPUT
        try:
            sp = SpoolFile(self.spool_dir, self._identifier(conn))
        except OSError as exc:
            log.error("acceptor %d: cannot create a spool file in %s: %s", self.index,
                      self.spool_dir, exc.strerror)
            self._fail(conn, 503, "cannot store the request body")
            return False
        conn.spool = sp
        try:
            conn.reader.set_sink(sp.write)
        except OSError as exc:
            return self._spool_failed(conn, exc)
        return True

    def _spool_failed(self, conn, exc: OSError) -> bool:
        log.error("acceptor %d: cannot write a spool file in %s: %s", self.index,
                  self.spool_dir, exc.strerror)
        self._fail(conn, 503, "cannot store the request body")
        return False

    def _spooled_env(self, conn) -> bytes:
        """A request whose body was spooled: the environment says where it
        is, in the msgpack pair this returns."""
        conn.spool.finish()
        return environ.msgpack_pairs({INPUT_KEY: input_path(self._identifier(conn))})

    # -- Expect: 100-continue ---------------------------------------------------------

    def _defer_input(self, conn, req) -> bool:
        """A request head with Expect: 100-continue: queue it now, with its
        body still to come. False when it is not deferred (a static file:
        the old way, 100 at once)."""
        if self.static is not None and self.static.wants(req.path):
            return False
        from prack.acceptor.process import QUEUED
        # Until its body is read, any answer (a 503 for a full queue, a 504
        # from it) ends the connection: the client may or may not send the
        # body it announced (RFC 9110 10.1.1).
        keep = req.keep_alive
        req.keep_alive = False
        self._dispatch(conn, req, slots.RECF_INPUT_PENDING)
        conn.sent_continue = True     # (it is sent when F_INPUT comes)
        if conn.state == QUEUED:      # the push worked (else it was answered)
            conn.input = PARKED
            conn.input_keep = keep
        return True

    def _on_input(self, buf, start: int) -> None:
        """F_INPUT: a worker took the request; let its client send the body."""
        _, slot, key, _, _ = frames.STREAM.unpack_from(buf, start)
        from prack.acceptor.process import QUEUED, READING, TAKEN
        conn = self.slots[slot] if slot < self.nslots else None
        if (conn is None or conn.key != key or conn.input != PARKED
                or conn.state not in (QUEUED, TAKEN)):
            return          # gone, or already answered (a 504 being written)
        now = time.monotonic()
        conn.input = UPLOADING
        conn.state = READING
        conn.deadline = conn.body_since = now
        conn.deadline += self.t_body
        conn.body_read = len(conn.reader.buf)
        self._write(conn, [CONTINUE])
        if conn.sock is None:
            return
        if not conn.events & selectors.EVENT_READ:
            self._set_events(conn, conn.events | selectors.EVENT_READ)
        if conn.reader.buf:
            self._process(conn)

    def _input_done(self, conn, req) -> None:
        """The deferred body is in: tell the API process, which hands the
        request out now."""
        sp = conn.spool
        if sp is not None:
            sp.finish()
            frame = frames.stream_frame(frames.F_INPUT_DONE, conn.slot, conn.key,
                                      req.content_length or 0, frames.SF_SPOOLED)
        else:
            frame = frames.stream_frame(frames.F_INPUT_DONE, conn.slot, conn.key,
                                      len(req.body), 0, req.body)
        from prack.acceptor.process import TAKEN
        conn.input = DONE
        conn.sent_continue = False      # for the connection's next request
        conn.keep_alive = conn.input_keep and not self.stopping
        conn.state = TAKEN
        conn.deadline = time.monotonic() + self.t_response
        self._send_api(frame)

    # -- the end of a request ----------------------------------------------------------

    def _upload_end(self, conn) -> None:
        """The request is answered or its connection closes: its spool file
        goes, and a request the API process may still hold is withdrawn."""
        sp = conn.spool
        if sp is not None:
            conn.spool = None
            sp.remove()
        if not conn.input:
            return
        conn.input = 0
        key = conn.key
        word = self.ring.slot_load(conn.slot)
        if word >> 2 == key and word & 3 != SLOT_FREE:
            # Not answered by a worker: whatever holds it drops it.
            self.ring.slot_store(conn.slot, (key << 2) | SLOT_GONE)
            self._send_api(frames.stream_frame(frames.F_GONE, conn.slot, key))

    def _uploads_api_lost(self) -> None:
        """The API process died: a request it had parked, or whose body was
        being read for it, cannot be handed out by the next one (the record
        has left the ring). Its client gets 503 and may retry."""
        ring = self.ring
        for conn in list(self.conns.values()):
            if conn.input == UPLOADING or (
                    conn.input == PARKED
                    and ring.slot_load(conn.slot) == (conn.key << 2) | SLOT_TAKEN):
                ring.slot_store(conn.slot, (conn.key << 2) | SLOT_GONE)
                conn.input = 0
                self._fail(conn, 503, "the server restarted while this request waited")
