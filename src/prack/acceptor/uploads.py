"""Large request bodies and `Expect: 100-continue`, on the acceptor's side.

A body up to `limits.inline_body_size` travels in the ring with its request.
A larger one (up to `limits.max_body_size`) is written, as it arrives, to a
spool file in `<runtime dir>/spool/` named by the request's identifier; the
environment then says where a worker reads it (``prack.input``: the API
process serves ``GET /api/v2/requests/{id}/input`` from that file, see
api/uploads.py) and the ring record carries no body. Memory stays bounded by one
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

`Uploads` is the acceptor's collaborator for all of this: it registers the
F_INPUT handler and what the API link's loss means for a deferred body;
the request path calls it when a body outgrows the ring, when a head asks
for 100-continue, and when a request with either ends.
"""
from __future__ import annotations

import logging
import os
import time

from prack.acceptor.connection import ANSWERABLE, PARKED, QUEUED, UPLOADING
from prack.child.connection import EVENT_READ
from prack.ipc import frames, slots
from prack.ipc.slots import SLOT_GONE, SLOT_QUEUED, SLOT_TAKEN
from prack.ipc.spool import INPUT_KEY, SpoolFile, clear_leftovers, input_path, spool_dir
from prack.protocol import environ, http

log = logging.getLogger("prack.acceptor")


class Uploads:
    """The spool directory and a deferred body's way; the state of a
    request's body is in its Conn (spool, input)."""

    def __init__(self, acc) -> None:
        self.acc = acc
        self.responses = acc.responses
        self.ring = acc.ring
        self.index = acc.index
        self.t_body = acc.t_body
        self.t_response = acc.t_response
        self.spool_dir = spool_dir(os.path.dirname(acc.api_path))
        acc.frame_handlers[frames.F_INPUT] = self.on_input
        acc.link_lost.append(self.link_lost)

    def start(self) -> None:
        """At the start of each incarnation: the spool directory exists and
        holds nothing of an earlier one of this acceptor."""
        try:
            os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            log.warning("acceptor %d: cannot create %s: %s", self.index, self.spool_dir,
                        exc.strerror)
        n = clear_leftovers(self.spool_dir, self.index)
        if n:
            log.info("acceptor %d: removed %d spool file(s) left by its previous "
                     "incarnation", self.index, n)

    def identifier(self, conn) -> str:
        if not conn.key:
            conn.key = self.acc.rand.getrandbits(62) or 1
        return slots.make_identifier(self.acc.generation, self.index, conn.slot, conn.key)

    # -- spooling ---------------------------------------------------------------

    def spool_body(self, conn) -> bool:
        """The reader has more body than is kept inline: send it to a spool
        file from now on. False when that failed (the client is answered)."""
        if conn.reader.wants_continue and not conn.sent_continue:
            return True         # deferred first: the body is read after F_INPUT
        try:
            sp = SpoolFile(self.spool_dir, self.identifier(conn))
        except OSError as exc:
            log.error("acceptor %d: cannot create a spool file in %s: %s", self.index,
                      self.spool_dir, exc.strerror)
            self.responses.fail(conn, 503, "cannot store the request body")
            return False
        conn.spool = sp
        try:
            conn.reader.set_sink(sp.write)
        except OSError as exc:
            return self.spool_failed(conn, exc)
        return True

    def spool_failed(self, conn, exc: OSError) -> bool:
        log.error("acceptor %d: cannot write a spool file in %s: %s", self.index,
                  self.spool_dir, exc.strerror)
        self.responses.fail(conn, 503, "cannot store the request body")
        return False

    def spooled_env(self, conn) -> bytes:
        """A request whose body was spooled: the environment says where it
        is, in the msgpack pair this returns."""
        conn.spool.finish()
        return environ.msgpack_pairs({INPUT_KEY: input_path(self.identifier(conn))})

    # -- Expect: 100-continue ---------------------------------------------------------

    def defer(self, conn, req) -> bool:
        """A request head with Expect: 100-continue: queue it now, with its
        body still to come. False when it is not deferred (a static file:
        the old way, 100 at once)."""
        acc = self.acc
        if acc.static is not None and acc.static.wants(req.path):
            return False
        # Until its body is read, any answer (a 503 for a full queue, a 504
        # from it) ends the connection: the client may or may not send the
        # body it announced (RFC 9110 10.1.1).
        keep = req.keep_alive
        req.keep_alive = False
        acc.dispatch(conn, req, slots.RECF_INPUT_PENDING)
        conn.sent_continue = True     # (it is sent when F_INPUT comes)
        if conn.state == QUEUED:      # the push worked (else it was answered)
            conn.park(keep)
        return True

    def on_input(self, buf, start: int, end: int) -> None:
        """F_INPUT: a worker took the request; let its client send the body."""
        _, slot, key, _, _ = frames.STREAM.unpack_from(buf, start)
        acc = self.acc
        conn = acc.slots[slot] if slot < acc.nslots else None
        if (conn is None or conn.key != key or conn.input != PARKED
                or conn.state not in ANSWERABLE):
            return          # gone, or already answered (a 504 being written)
        now = time.monotonic()
        conn.upload(now, now + self.t_body)
        self.responses.write(conn, [http.CONTINUE])
        if conn.sock is None:
            return
        if not conn.events & EVENT_READ:
            conn.watch(conn.events | EVENT_READ)
        if conn.reader.buf:
            acc.process(conn)

    def input_done(self, conn, req) -> None:
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
        conn.body_done(conn.input_keep and not self.acc.stopping,
                       time.monotonic() + self.t_response)
        self.acc.send_api(frame)

    # -- the end of a request ----------------------------------------------------------

    def end(self, conn) -> None:
        """The request is answered or its connection closes: its spool file
        goes, and a request the API process may still hold is withdrawn."""
        sp = conn.spool
        if sp is not None:
            conn.spool = None
            sp.remove()
        if not conn.input:
            return
        conn.drop_input()
        key = conn.key
        ring = self.ring
        # Not answered by a worker: whatever holds it drops it.
        if (ring.move(conn.slot, key, SLOT_QUEUED, SLOT_GONE)
                or ring.move(conn.slot, key, SLOT_TAKEN, SLOT_GONE)
                or ring.holds(conn.slot, key, SLOT_GONE)):
            self.acc.send_api(frames.stream_frame(frames.F_GONE, conn.slot, key))

    def link_lost(self) -> None:
        """The API process died: a request it had parked, or whose body was
        being read for it, cannot be handed out by the next one (the record
        has left the ring). Its client gets 503 and may retry."""
        ring = self.ring
        for conn in list(self.acc.conns.values()):
            if conn.input == UPLOADING or (
                    conn.input == PARKED and ring.holds(conn.slot, conn.key, SLOT_TAKEN)):
                ring.mark(conn.slot, conn.key, SLOT_GONE)
                conn.drop_input()
                self.responses.fail(conn, 503, "the server restarted while this request waited")
