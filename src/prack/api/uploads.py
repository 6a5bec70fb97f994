"""Large request bodies and `Expect: 100-continue`, on the API process's side
(the acceptor's side is spool.py; api.py hooks these in).

* ``GET /api/v2/requests/{id}/input``: the body of a request whose body was
  too large for the ring, from its spool file: 200 application/octet-stream
  with Content-Length, sent with sendfile(2) (pread + send where there is
  none) as the worker's socket takes it, never read whole into memory. 404
  for an unknown or answered request (or one whose body came inline), 410
  when its client has gone. For a request of the other generation (during an
  upgrade) the file is read from that generation's spool directory: the
  identifier names the file, and it exists only while its request is open.
* Parking: a record flagged RECF_INPUT_PENDING (Expect: 100-continue) is
  taken out of its ring like any other (QUEUED -> TAKEN), but instead of
  going to the worker it is parked, and F_INPUT tells its acceptor to send
  100 Continue and read the body. F_INPUT_DONE brings the body (or says it is
  spooled); the item then goes to the next pull, ahead of the rings, v1 and
  v2 alike. F_GONE (the client left meanwhile) drops it.
"""
from __future__ import annotations

import collections
import logging
import os

from prack.child.send import send_file
from prack.ipc import frames, slots, spool
from prack.ipc.slots import SLOT_TAKEN
from prack.protocol import http

log = logging.getLogger("prack.api")

INPUT_SUFFIX = "/input"
OCTETS = b"Content-Type: application/octet-stream\r\n"
# One sendfile call moves at most this much; a few per wake-up, so one
# fast worker reading a large body does not hold the loop.
SEND_CHUNK = 1 << 20
SENDS_PER_WAKE = 8


class Parked:
    """A request taken for a worker whose body its acceptor is reading."""

    __slots__ = ("ident", "acceptor", "slot", "key", "env", "body", "live", "started")

    def __init__(self, ident: str, acceptor: int, slot: int, key: int, env: bytes):
        self.ident = ident
        self.acceptor = acceptor
        self.slot = slot
        self.key = key
        self.env = env
        self.body = b""
        self.live = True
        self.started = False    # F_INPUT sent: its body is coming, or in


class ApiInput:
    """Mixed into ApiServer (which provides rings, links, _lookup, _reply ...)."""

    parked = None      # (acceptor, slot, key) -> Parked
    ready = None       # deque of Parked whose body is in, handed out first
    unstarted = None   # deque of Parked whose client still waits for its 100
    started = 0        # parked items started (body coming or in) not handed out yet

    # -- parking ---------------------------------------------------------------

    def _park(self, generation: int, acceptor: int, slot: int, key: int, env) -> None:
        """A RECF_INPUT_PENDING record was just taken (its slot is TAKEN).
        Its upload starts when there is room (_start_uploads)."""
        if self.parked is None:
            self.parked = {}
            self.ready = collections.deque()
            self.unstarted = collections.deque()
        ident = slots.make_identifier(generation, acceptor, slot, key)
        item = Parked(ident, acceptor, slot, key, bytes(env))
        self.parked[(acceptor, slot, key)] = item
        self.unstarted.append(item)
        self._start_uploads()

    def _start_uploads(self) -> None:
        """F_INPUT (the client gets its 100 and uploads) for as many parked
        requests as there are worker connections to take them, counting
        those started and not handed out yet. Taking one Expect record
        takes the next ones behind it too (the rings are drained in order),
        so without this bound one pull made every such client upload at
        once, each body held here until a worker pulled it."""
        room = max(1, len(self.workers)) - self.started
        unstarted = self.unstarted
        while unstarted and (room > 0 or not unstarted[0].live):
            item = unstarted.popleft()
            link = self.links[item.acceptor]
            if not item.live or link is None:
                continue
            item.started = True
            self.started += 1
            room -= 1
            self._send_link(link, frames.stream_frame(frames.F_INPUT, item.slot, item.key))

    def _unstart(self, item: Parked) -> None:
        """The item left (handed out, or its client or acceptor went)."""
        item.live = False
        if item.started:
            item.started = False
            self.started -= 1

    def _on_input_frame(self, link, buf, start: int, end: int) -> bool:
        """F_INPUT_DONE or F_GONE from an acceptor; True when an item became
        ready (the waiting pulls should look)."""
        kind, slot, key, number, flags = frames.STREAM.unpack_from(buf, start)
        item = self.parked.get((link.index, slot, key)) if self.parked else None
        if item is None:
            return False
        if kind == frames.F_GONE or flags & frames.SF_ABORT:
            del self.parked[(link.index, slot, key)]
            self._unstart(item)
            item.body = item.env = b""
            self._start_uploads()
            return False
        env = self.decode_env(item.env)
        env["CONTENT_LENGTH"] = str(number)
        if flags & frames.SF_SPOOLED:
            env[spool.INPUT_KEY] = spool.input_path(item.ident)
        else:
            item.body = bytes(buf[start + frames.STREAM.size:end])
        item.env = self.msgpack_encode(env)     # as in the ring: what the builders take
        self.ready.append(item)
        return True

    def _take_ready(self, build):
        """build(...) for the first parked item whose body is in and whose
        client still waits, or None."""
        ready = self.ready
        while ready:
            item = ready.popleft()
            if not item.live:
                continue
            self.parked.pop((item.acceptor, item.slot, item.key), None)
            self._unstart(item)
            self._start_uploads()
            if (self.links[item.acceptor] is None or self.rings[item.acceptor].slot_load(
                    item.slot) != (item.key << 2) | SLOT_TAKEN):
                continue        # its client went, or its acceptor was replaced
            return build(item.ident, item.env, item.body)
        return None

    def _unpark_acceptor(self, index: int) -> None:
        """An acceptor's link dropped: what it was reading for us is lost."""
        if not self.parked:
            return
        for k in [k for k in self.parked if k[0] == index]:
            item = self.parked.pop(k)
            self._unstart(item)
            item.body = item.env = b""
        self._start_uploads()

    # -- GET /api/v2/requests/{id}/input ---------------------------------------------

    def _get_input(self, conn, req: http.Request, hold: bool = True) -> None:
        ident = req.path[len("/api/v2/requests/"):-len(INPUT_SUFFIX)]
        parsed = slots.parse_identifier(ident)
        if parsed is None:
            self._reply_error(conn, 400, "id: malformed")
            return
        target = self._elsewhere(parsed)
        if target is not None:          # the other generation's request
            directory = spool.spool_dir(target)
            missing = "id: unknown, answered, or its client has gone"
        else:
            if hold and self._unlinked(parsed):
                self._hold_until_linked(conn, parsed[1],
                                        lambda _: self._get_input(conn, req, False))
                return
            outcome, why = self._lookup(parsed)
            if outcome != "ok":
                self._reply_error(conn, 410 if outcome == "gone" else 404, why)
                return
            directory = spool.spool_dir(self.runtime_dir)
            missing = "id: this request's body was not spooled (it is in the request's body)"
        try:
            fd = os.open(os.path.join(directory, ident), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            self._reply_error(conn, 404, missing)
            return
        except OSError as exc:
            log.error("cannot open the spool file of %s: %s", ident, exc.strerror)
            self._reply_error(conn, 500, "cannot read the request body")
            return
        size = os.fstat(fd).st_size
        keep = conn.keep_alive and not self.stopping
        if not keep:
            conn.close_after = True
        head = http.response_head(200, OCTETS, size, keep, self.server)
        # conn.busy stays set until the file has gone: pipelined calls wait.
        conn.file = [fd, 0, size]
        self._write(conn, [head])

    def _send_input(self, conn) -> None:
        """Send the spool file after its head, as far as the socket takes it
        (a few rounds per wake-up, so one large input does not hold up the
        loop). Raises OSError when the worker has gone or the file shrank."""
        job = conn.file
        if not send_file(conn.sock, job, conn.out, SENDS_PER_WAKE, SEND_CHUNK):
            return                  # more on the next wake-up
        conn.file = None
        os.close(job[0])
        conn.busy = False
        if not conn.close_after:
            conn.reader.next()

    def _close_input(self, conn) -> None:
        if conn.file is not None:
            os.close(conn.file[0])
            conn.file = None
