"""Large request bodies and `Expect: 100-continue`, on the API process's side
(the acceptor reads and spools them; ipc/spool.py names the files).

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

from prack.api.checks import GONE, OK, V2_PREFIX
from prack.ipc import frames, slots, spool
from prack.ipc.slots import SLOT_TAKEN
from prack.protocol import http

log = logging.getLogger("prack.api")

INPUT_SUFFIX = "/input"
OCTETS = b"Content-Type: application/octet-stream\r\n"


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


class Uploads:
    """Parked requests and spooled bodies of `process` (the ApiServer)."""

    def __init__(self, process) -> None:
        self.process = process
        self.parked: dict[tuple[int, int, int], Parked] = {}
        self.ready: collections.deque[Parked] = collections.deque()      # body in: first out
        self.unstarted: collections.deque[Parked] = collections.deque()  # client awaits its 100
        self.started = 0   # parked items started (body coming or in) not handed out yet
        process.id_routes["input"] = {"GET": self.get_input}
        process.link_handlers[frames.F_INPUT_DONE] = self._on_input_done

    # -- parking ---------------------------------------------------------------

    def park(self, generation: int, acceptor: int, slot: int, key: int, env) -> None:
        """A RECF_INPUT_PENDING record was just taken (its slot is TAKEN).
        Its upload starts when there is room (start)."""
        ident = slots.make_identifier(generation, acceptor, slot, key)
        item = Parked(ident, acceptor, slot, key, bytes(env))
        self.parked[(acceptor, slot, key)] = item
        self.unstarted.append(item)
        self.start()

    def start(self) -> None:
        """F_INPUT (the client gets its 100 and uploads) for as many parked
        requests as there are worker connections to take them, counting
        those started and not handed out yet. Taking one Expect record
        takes the next ones behind it too (the rings are drained in order),
        so without this bound one pull made every such client upload at
        once, each body held here until a worker pulled it."""
        p = self.process
        room = max(1, len(p.workers)) - self.started
        unstarted = self.unstarted
        while unstarted and (room > 0 or not unstarted[0].live):
            item = unstarted.popleft()
            link = p.links[item.acceptor]
            if not item.live or link is None:
                continue
            item.started = True
            self.started += 1
            room -= 1
            p.send_link(link, frames.stream_frame(frames.F_INPUT, item.slot, item.key))

    def _unstart(self, item: Parked) -> None:
        """The item left (handed out, or its client or acceptor went)."""
        item.live = False
        if item.started:
            item.started = False
            self.started -= 1

    def _drop(self, item: Parked) -> None:
        del self.parked[(item.acceptor, item.slot, item.key)]
        self._unstart(item)
        item.body = item.env = b""

    def _on_input_done(self, link, buf, start: int, end: int) -> bool:
        """F_INPUT_DONE: True when an item became ready (the waiting pulls
        should look)."""
        _, slot, key, number, flags = frames.STREAM.unpack_from(buf, start)
        item = self.parked.get((link.index, slot, key))
        if item is None:
            return False
        if flags & frames.SF_ABORT:
            self._drop(item)
            self.start()
            return False
        p = self.process
        env = p.decode_env(item.env)
        env["CONTENT_LENGTH"] = str(number)
        if flags & frames.SF_SPOOLED:
            env[spool.INPUT_KEY] = spool.input_path(item.ident)
        else:
            item.body = bytes(buf[start + frames.STREAM.size:end])
        item.env = p.msgpack_encode(env)     # as in the ring: what the builders take
        self.ready.append(item)
        return True

    def client_gone(self, acceptor: int, slot: int, key: int) -> None:
        """F_GONE: the client of a parked request left."""
        item = self.parked.get((acceptor, slot, key))
        if item is not None:
            self._drop(item)
            self.start()

    def take_ready(self, build):
        """build(...) for the first parked item whose body is in and whose
        client still waits, or None."""
        p = self.process
        ready = self.ready
        while ready:
            item = ready.popleft()
            if not item.live:
                continue
            self.parked.pop((item.acceptor, item.slot, item.key), None)
            self._unstart(item)
            self.start()
            if (p.links[item.acceptor] is None or not p.rings[item.acceptor].holds(
                    item.slot, item.key, SLOT_TAKEN)):
                continue        # its client went, or its acceptor was replaced
            return build(item.ident, item.env, item.body)
        return None

    def lost(self, index: int) -> None:
        """An acceptor's link dropped: what it was reading for us is lost."""
        if not self.parked:
            return
        for k in [k for k in self.parked if k[0] == index]:
            item = self.parked.pop(k)
            self._unstart(item)
            item.body = item.env = b""
        self.start()

    # -- GET /api/v2/requests/{id}/input ---------------------------------------------

    def get_input(self, conn, req: http.Request, hold: bool = True) -> None:
        p = self.process
        ident = req.path[len(V2_PREFIX):-len(INPUT_SUFFIX)]
        parsed = slots.parse_identifier(ident)
        if parsed is None:
            p.reply_error(conn, 400, "id: malformed")
            return
        target = p.lifecycle.elsewhere(parsed)
        if target is not None:          # the other generation's request
            directory = spool.spool_dir(target)
            missing = "id: unknown, answered, or its client has gone"
        else:
            if hold and p.unlinked(parsed):
                p.held.hold(conn, parsed[1], lambda _: self.get_input(conn, req, False))
                return
            outcome, why = p.lookup(parsed)
            if outcome is not OK:
                p.reply_error(conn, 410 if outcome is GONE else 404, why)
                return
            directory = spool.spool_dir(p.runtime_dir)
            missing = "id: this request's body was not spooled (it is in the request's body)"
        try:
            fd = os.open(os.path.join(directory, ident), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            p.reply_error(conn, 404, missing)
            return
        except OSError as exc:
            log.error("cannot open the spool file of %s: %s", ident, exc.strerror)
            p.reply_error(conn, 500, "cannot read the request body")
            return
        p.reply_file(conn, OCTETS, fd, os.fstat(fd).st_size)
