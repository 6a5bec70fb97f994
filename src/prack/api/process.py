"""API process: serves the worker REST API and moves requests and responses.

It takes a record out of a ring only when a worker is waiting for one (so a
request that no worker has pulled stays in shared memory, where a restarted
API process finds it), and routes each posted response, by the connection
identifier, to the acceptor that holds the client, over that acceptor's Unix
socket. It speaks HTTP with the same sans-IO reader as the acceptors.

This module is the process itself: the loop, the worker connections, the
acceptor links and the three routing tables. The features are collaborators
built here, each owning its state and registering its handlers in those
tables:

    routes          path -> {method: handler(conn, req)}
    id_routes       /api/v2/requests/{id}/<verb>: verb -> {method: handler(conn, req)}
    link_handlers   frame kind -> handler(link, buf, start, end), every frame
                    from an acceptor; True when waiting pulls should look again

pulls (waiters, taking records), posts (delivering answers, holding calls
until their acceptor links), streams, websockets, uploads and lifecycle.
Which idle worker connections to close (api.idle_timeout, and room at
api.max_connections) is decided by `idle` (api/idle.py); the loop closes them.
"""
from __future__ import annotations

import logging
import os
import socket
import time

import msgspec

from prack.api.checks import GONE, JSON_TYPE, MSGPACK_TYPE, OK, UNKNOWN, V2_PREFIX, Codec
from prack.api.checks import sends_msgpack, wants_msgpack
from prack.api.idle import IdleWorkers
from prack.api.lifecycle import Lifecycle
from prack.api.posts import HeldCalls, Posts
from prack.api.pulls import Pulls
from prack.api.streams import Streams, StreamTable
from prack.api.uploads import Uploads
from prack.api.websockets import WebSockets
from prack.child.accept import accept_connections
from prack.child.connection import EVENT_READ, EVENT_WRITE, Connection
from prack.child.limits import raise_fd_limit
from prack.child.loop import ChildLoop
from prack.ipc import frames, slots
from prack.ipc.slots import SLOT_GONE, SLOT_TAKEN
from prack.protocol import http, messages

log = logging.getLogger("prack.api")

# Descriptors kept for what is not a worker connection: listeners, acceptor
# links (two per acceptor), the selector, the signal pair, spooled bodies
# being sent, calls forwarded to the other generation, log files.
FD_RESERVE = 64

_monotonic = time.monotonic


class Link(Connection):
    """The Unix-socket connection from one acceptor, watched for reading
    from the start."""
    __slots__ = ("index", "inbuf")

    def __init__(self, sock, sel):
        super().__init__(sock, sel)
        self.index = -1
        self.inbuf = bytearray()


class WorkerConn(Connection):
    """A worker's connection, watched for reading from the start."""
    __slots__ = ("reader", "waiting", "deadline", "keep_alive", "busy", "close_after", "head",
                 "batch", "msgpack", "results", "last", "born")

    # A spooled body goes out with sendfile, at most this much per call and
    # a few calls per wake-up, so one fast worker reading a large body does
    # not hold the loop.
    FILE_ROUNDS = 8
    FILE_CHUNK = 1 << 20

    def __init__(self, sock, sel, reader):
        super().__init__(sock, sel)
        self.born = _monotonic()
        self.last = 0.0            # bytes last read or a call last seen in progress
                                   # (0: nothing read yet)
        self.reader = reader
        self.waiting = False
        self.deadline = 0.0
        self.keep_alive = True
        self.busy = False          # a request of this connection is being answered
        self.close_after = False
        self.head = False          # the request being answered is a HEAD: no body
        self.batch = 0             # the waiting pull: 0 for v1, else v2's `max`
        self.msgpack = False       # answer this v2 call in msgpack
        self.results = None        # a post-and-pull: its encoded ResultBatch, until the
                                   # batch of requests goes out with it


class ApiServer(ChildLoop):
    what = "API process"

    def __init__(self, cfg, generation: int, listener: socket.socket,
                 link_listener: socket.socket, segment, status_fd: int,
                 forward_listener=None, runtime_dir: str = "",
                 predecessor_dir: str = "", beat=None):
        """`forward_listener` is this generation's worker.sock (calls passed
        on by the other generation), `runtime_dir` this generation's runtime
        directory and `predecessor_dir` the previous generation's, if any;
        `beat` is the heartbeat (child/loop.py)."""
        super().__init__(beat)
        self.cfg = cfg
        self.generation = generation
        self.listener = listener
        self.link_listener = link_listener
        self.forward_listener = forward_listener
        self.runtime_dir = runtime_dir
        self.predecessor_dir = predecessor_dir
        self.segment = segment
        self.rings = [segment.ring(i) for i in range(segment.nrings)]
        self.nslots = segment.nslots
        self.status_fd = status_fd
        lim = cfg.limits
        self.limits = http.Limits(cfg.api.max_request_size, lim.max_header_size,
                                  lim.max_request_line, lim.max_headers)
        self.poll_timeout = cfg.api.poll_timeout
        self.server = cfg.server.server_header.encode("latin-1")
        # What a worker connection may buffer behind a call in progress.
        self.pipeline_cap = cfg.api.max_request_size + lim.max_header_size
        self.tick = min(0.5, max(0.05, self.poll_timeout / 4 if self.poll_timeout else 0.5))
        self.links: list[Link | None] = [None] * segment.nrings
        self.workers: dict[int, WorkerConn] = {}
        # The cap is fitted to the open-file limit in run().
        self.idle = IdleWorkers(cfg.api.idle_timeout, cfg.api.max_connections)
        self.response_timeout = cfg.timeouts.response_timeout
        self.orphan_deadline = 0.0    # the master died: stop by then at the latest
        # The two encodings of v2 calls, by "answer in msgpack".
        self.codecs = {False: Codec(msgspec.json), True: Codec(msgspec.msgpack)}
        self.encode = self.codecs[False].encode
        self.msgpack_encode = self.codecs[True].encode
        # Ring records hold the environment as the acceptor encoded it, msgpack.
        self.decode_env = msgspec.msgpack.Decoder(dict[str, str]).decode
        # The routing tables (see the module's docstring); the Allow header
        # of a 405 lists a path's methods.
        self.routes: dict = {}
        self.id_routes: dict = {}
        self.link_handlers = {frames.F_WAKE: self._on_wake, frames.F_HELLO: self._on_hello,
                              frames.F_GONE: self._on_gone}
        # The features, each registering its handlers in the tables above.
        self.held = HeldCalls()
        self.lifecycle = Lifecycle(self)
        self.uploads = Uploads(self)
        self.pulls = Pulls(self, self.uploads)
        table = StreamTable(self)
        self.websockets = WebSockets(self, table)
        self.streams = Streams(self, table, self.websockets)
        self.posts = Posts(self, self.pulls, self.streams)

    # -- setup -------------------------------------------------------------------

    def run(self) -> int:
        wanted = self.cfg.api.max_connections
        reserve = FD_RESERVE + 2 * len(self.rings)
        cap = min(wanted, raise_fd_limit(wanted + reserve) - reserve)
        if cap < wanted:
            cap = max(16, cap)
            log.info("API process: the open-file limit allows %d worker connections "
                     "(api.max_connections is %d)", cap, wanted)
            self.idle = IdleWorkers(self.cfg.api.idle_timeout, cap)
        for lst in (self.listener, self.link_listener):
            lst.setblocking(False)
        self.sel.register(self.listener, EVENT_READ, self._on_accept_worker)
        self.sel.register(self.link_listener, EVENT_READ, self._on_accept_link)
        if self.forward_listener is not None:
            self.forward_listener.setblocking(False)
            self.sel.register(self.forward_listener, EVENT_READ, self._on_accept_forwarded)
        log.debug("API process ready (pid %d)", os.getpid())
        return self.serve(self.status_fd, b"P\n")

    def _on_event(self, data, mask: int) -> None:
        cls = data.__class__
        if cls is WorkerConn:
            self._on_worker(data, mask)
        elif cls is Link:
            self._on_link(data, mask)
        else:
            data(mask)

    def _drained(self) -> bool:
        return (not any(w.busy or w.out for w in self.workers.values())
                and not self.websockets.unfetched())

    def _begin_stop(self) -> None:
        self.stopping = True
        self.stop_deadline = time.monotonic() + 2.0
        self._close_listener(self.listener)
        self.pulls.stop()
        # The acceptors have stopped first: their WebSockets ended with a
        # close event (1001) that a worker may not have fetched yet, on a
        # connection idle between two events calls. Those connections stay
        # open for it (until the stop deadline); else idle ones close now.
        unfetched = self.websockets.unfetched()
        log.debug("API process stopping (%d WebSocket ends not yet fetched)", unfetched)
        if not unfetched:
            for conn in list(self.workers.values()):
                if not conn.busy and not conn.out:
                    self._close_worker(conn)

    def _on_orphaned(self) -> None:
        """The master died. Its acceptors drain what they hold (each stops
        gracefully on its own); answers for those requests still come from
        workers through us, so keep serving them (listener included), and
        stop once every acceptor link has closed, or after graceful_timeout."""
        self.draining = True        # /readyz: 503
        self.orphan_deadline = time.monotonic() + self.cfg.timeouts.graceful_timeout
        log.warning("API process: the master has gone; serving workers until the %d "
                    "linked acceptor(s) have drained", sum(l is not None for l in self.links))

    def _begin_retire(self) -> None:
        self.lifecycle.retire()
        self._close_listener(self.listener)

    def _scan(self, now: float) -> None:
        self.streams.scan(now)
        self.websockets.scan(now)
        self.pulls.expire(now)
        for conn in self.idle.expired(self.workers.values(), now):
            self._close_worker(conn)

    def _housekeeping(self, now: float) -> None:
        self.held.expire(now)
        if self.orphaned and not self.stopping:
            if not any(link is not None for link in self.links):
                log.warning("API process: the acceptors are gone; stopping")
                self._begin_stop()
            elif now >= self.orphan_deadline:
                log.warning("API process: graceful_timeout passed with acceptors still "
                            "linked; stopping")
                self._begin_stop()

    # -- acceptor links ------------------------------------------------------------

    def _on_accept_link(self, mask) -> None:
        # Any failure but one connection's own pauses accepting links until
        # the next tick, descriptors or memory exhausted or not.
        accept_connections(self.link_listener, self._take_link, self._pause_links,
                           failed=self._pause_links)

    def _take_link(self, sock: socket.socket, addr) -> bool:
        sock.setblocking(False)
        Link(sock, self.sel)
        return True

    def _pause_links(self, exc: OSError) -> None:
        self._pause_accepting(self.link_listener, self._on_accept_link, exc)

    def _on_link(self, link: Link, mask: int) -> None:
        if mask & EVENT_WRITE:
            self._flush_link(link)
            if link.sock is None:
                return
        if not mask & EVENT_READ:
            return
        data = link.receive()
        if data is None:
            return
        if not data:
            self._drop_link(link)
            return
        buf = link.inbuf
        buf += data
        consumed = 0
        woken = False
        handlers = self.link_handlers
        for start, end in frames.complete_frames(buf):
            consumed = end
            handler = handlers.get(buf[start])
            if handler is not None and handler(link, buf, start, end):
                woken = True
        del buf[:consumed]
        if woken:
            self.pulls.dispatch()

    def _on_wake(self, link: Link, buf, start: int, end: int) -> bool:
        """F_WAKE: the acceptor's ring has records and we had said we slept."""
        return True

    def _on_hello(self, link: Link, buf, start: int, end: int) -> bool:
        """F_HELLO: an acceptor (re)links; calls held for it go on now."""
        _, index, generation, pid = frames.HELLO.unpack_from(buf, start)
        if index >= len(self.links) or generation != self.generation:
            return False
        old = self.links[index]
        if old is not None and old is not link:
            self._drop_link(old)
        link.index = index
        self.links[index] = link
        log.debug("acceptor %d (pid %d) linked", index, pid)
        self.held.replay(index)
        return True

    def _on_gone(self, link: Link, buf, start: int, end: int) -> bool:
        """F_GONE: a request's client went. Its stream, its state polls and
        a parked upload all learn it."""
        _, slot, key, _number, _flags = frames.STREAM.unpack_from(buf, start)
        self.streams.client_gone((link.index, slot, key))
        self.uploads.client_gone(link.index, slot, key)
        return False

    def _drop_link(self, link: Link) -> None:
        if link.sock is None:
            return
        link.release()
        if 0 <= link.index < len(self.links) and self.links[link.index] is link:
            self.links[link.index] = None
            self.streams.lost(link.index)
            self.uploads.lost(link.index)

    def send_link(self, link: Link, buffers: list) -> None:
        # At once: a worker's post is answered only after its frames are in
        # the acceptor's socket, so an API process killed in between loses
        # no answer that a worker was told was delivered.
        if link.add_output(buffers):
            self._flush_link(link)

    def send_frames(self, out: dict) -> None:
        """One send per acceptor for everything a call answered (`out`:
        link -> buffers)."""
        for link, buffers in out.items():
            if link.sock is not None:
                self.send_link(link, buffers)

    def _flush_link(self, link: Link) -> None:
        if link.flush() < 0:
            self._drop_link(link)
            return
        # Watch for writability only while something waits (one epoll_ctl
        # per change, not per frame).
        link.watch(EVENT_READ | (EVENT_WRITE if link.out else 0))

    # -- the requests named by identifiers -----------------------------------------------

    def known(self, parsed: tuple[int, int, int, int]) -> bool:
        """The identifier names a slot of this generation's rings."""
        generation, acceptor, slot, _ = parsed
        return generation == self.generation and acceptor < len(self.rings) and slot < self.nslots

    def lookup(self, parsed) -> tuple[str, str | None]:
        """Whether the request named by a parsed identifier waits for an answer."""
        if not self.known(parsed):
            return UNKNOWN, "identifier: unknown"
        _, acceptor, slot, key = parsed
        ring = self.rings[acceptor]
        if ring.holds(slot, key, SLOT_TAKEN):
            if self.links[acceptor] is None:
                return GONE, "the client has gone"
            return OK, None
        if ring.holds(slot, key, SLOT_GONE):
            return GONE, "the client has gone"
        return UNKNOWN, "identifier: unknown or already answered"

    def unlinked(self, parsed) -> bool:
        """A request a worker holds, of an acceptor not linked (yet) to this
        API process: a new API process whose acceptors are reconnecting."""
        if not self.known(parsed):
            return False
        _, acceptor, slot, key = parsed
        return self.links[acceptor] is None and self.rings[acceptor].holds(slot, key, SLOT_TAKEN)

    def resolve(self, conn: WorkerConn, req: http.Request, replay,
                forwardable: bool = True):
        """Resolve the identifier of a /api/v2/requests/{id}/... call: the
        parsed identifier when the request is this process's and waits for
        an answer; else the call has been answered (or relayed to the other
        generation, or held until its acceptor links: `replay()` runs it
        again then; None: do not hold) and None is returned."""
        parsed = slots.parse_identifier(req.path[len(V2_PREFIX):].partition("/")[0])
        if parsed is None:
            self.reply_error(conn, 400, "id: malformed")
            return None
        target = self.lifecycle.elsewhere(parsed)
        if target is not None:
            if not forwardable:
                self.reply_error(conn, 404, "identifier: of another generation; ask the "
                                 "front it came from")
                return None
            self.lifecycle.relay(conn, target, req.path, self.codec_in(req).ctype, req.body)
            return None
        if replay is not None and self.unlinked(parsed):
            self.held.hold(conn, parsed[1], lambda _: replay())
            return None
        outcome, why = self.lookup(parsed)
        if outcome is not OK:
            self.reply_error(conn, 410 if outcome is GONE else 404, why)
            return None
        return parsed

    def fail(self, acceptor: int, slot: int, key: int, out: dict) -> bool:
        """The client of a taken request gets Prack's 502 now, if it still
        waits (TAKEN -> FREE); its frame is queued in `out` (link ->
        buffers). True when it was."""
        link = self.links[acceptor]
        if link is not None and self.rings[acceptor].move(slot, key, SLOT_TAKEN, slots.SLOT_FREE):
            out.setdefault(link, []).extend(
                frames.response_frame(slot, key, 502, frames.RF_ERROR, b"", b""))
            return True
        return False

    # -- worker connections ------------------------------------------------------------

    def _on_accept_worker(self, mask) -> None:
        self._accept_workers(self.listener, self._on_accept_worker)

    def _on_accept_forwarded(self, mask) -> None:
        """A call passed on by the other generation's API process: served
        like any worker connection."""
        self._accept_workers(self.forward_listener, self._on_accept_forwarded)

    def _accept_workers(self, listener, callback) -> None:
        """Accept worker connections on the worker port or on worker.sock,
        as many as there is room for under the cap (closing idle ones to
        make room)."""
        room = self.idle.cap - len(self.workers)
        if room <= 0:
            if not self._make_room(listener, callback):
                return
            room = self.idle.cap - len(self.workers)
        accept_connections(listener, self._take_worker,
                           lambda exc: self._out_of_descriptors(listener, callback, exc),
                           batch=min(64, room), failed=self._accept_failed)

    def _out_of_descriptors(self, listener, callback, exc: OSError) -> None:
        """Out of descriptors below our cap (something else holds them):
        idle connections give theirs back first, and accepting pauses until
        the next tick."""
        for conn in self.idle.make_room(self.workers.values()):
            self._close_worker(conn)
        self._pause_accepting(listener, callback, exc)

    def _make_room(self, listener, callback) -> bool:
        """At the cap: close the longest-idle connections; with none idle,
        stop accepting until the next tick (new connections wait in the
        listen backlog). True when there is room now."""
        victims = self.idle.make_room(self.workers.values())
        for conn in victims:
            self._close_worker(conn)
        if victims:
            log.debug("API process: closed %d idle worker connections to make room",
                      len(victims))
            return True
        log.warning("API process: %d worker connections, none idle (api.max_connections); "
                    "pausing accepts until the next tick", len(self.workers))
        self.sel.unregister(listener)
        self._paused.append((listener, callback))
        return False

    def _take_worker(self, sock: socket.socket, addr) -> bool:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = WorkerConn(sock, self.sel, http.RequestReader(self.limits))
        self.workers[sock.fileno()] = conn
        return True

    @staticmethod
    def _accept_failed(exc: OSError) -> None:
        """accept() failed otherwise: said, and this wake-up ends (the
        listener stays watched)."""
        log.warning("API process: accept: %s", exc)

    def _on_worker(self, conn: WorkerConn, mask: int) -> None:
        if mask & EVENT_WRITE:
            self._flush_worker(conn)
            if conn.sock is None:
                return
            if not conn.out and not conn.busy and conn.reader.buf:
                # Calls that waited for the answers to drain.
                conn.drive(self._process_one)
        if not mask & EVENT_READ:
            return
        data = conn.receive()
        if data is None:
            return
        if not data:
            self._close_worker(conn)
            return
        conn.last = _monotonic()
        conn.reader.feed(data)
        if not conn.busy and not conn.out:
            conn.drive(self._process_one)
        if ((conn.busy or conn.out) and conn.sock is not None
                and len(conn.reader.buf) > self.pipeline_cap):
            # Bytes pipelined behind a call still in progress (a long poll,
            # a held or forwarded post) or an answer the worker has not read
            # yet: keep one more request's worth, then stop reading until
            # the answer goes out (TCP pushes back).
            conn.watch(conn.events & ~EVENT_READ)

    def _process_one(self, conn: WorkerConn) -> bool:
        """Read and route one request; True when it was answered at once and
        more bytes are buffered. Run by conn.drive, so buffered requests are
        handled one after another in one loop, not by recursion: reply asks
        for the next request while this one is still being routed, and a
        worker may pipeline thousands of calls."""
        reader = conn.reader
        try:
            req = reader.maybe_read_request()
        except http.ProtocolError as exc:
            conn.keep_alive = False
            conn.busy = True
            conn.head = exc.head
            self.reply(conn, exc.status, self.encode(messages.Error(exc.message)))
            return False
        if req is None:
            if reader.wants_continue:
                reader.wants_continue = False
                self._write(conn, [http.CONTINUE])
            return False
        conn.busy = True
        conn.keep_alive = req.keep_alive and not self.stopping
        conn.head = req.method == "HEAD"
        self._route(conn, req)
        return (not conn.busy and conn.sock is not None and not conn.close_after
                and not conn.out and bool(reader.buf))

    def _route(self, conn: WorkerConn, req: http.Request) -> None:
        path = req.path
        methods = self.routes.get(path)
        if methods is None and path.startswith(V2_PREFIX):
            methods = self.id_routes.get(path[len(V2_PREFIX):].partition("/")[2])
        if methods is None:
            conn.batch = 0
            conn.msgpack = False
            self.reply(conn, 404, b'{"error":"no such endpoint"}')
            return
        conn.batch = 0
        conn.results = None
        conn.msgpack = path.startswith("/api/v2/") and wants_msgpack(req.headers)
        handler = methods.get(req.method)
        if handler is None:
            allow = ", ".join(methods)
            self.reply(conn, 405, self.codec(conn).encode(messages.Error("use " + allow)),
                       b"Allow: %s\r\n" % allow.encode(), self.ctype(conn))
            return
        handler(conn, req)

    # -- writing to workers ----------------------------------------------------------

    def codec(self, conn: WorkerConn) -> Codec:
        """The encoding this call is answered in."""
        return self.codecs[conn.msgpack]

    def codec_in(self, req: http.Request) -> Codec:
        """The encoding of a v2 call's body: msgpack when its Content-Type says so."""
        return self.codecs[sends_msgpack(req.headers)]

    @staticmethod
    def ctype(conn: WorkerConn) -> bytes:
        return MSGPACK_TYPE if conn.msgpack else JSON_TYPE

    def reply_error(self, conn: WorkerConn, status: int, message: str) -> None:
        """{"error": message} in the call's encoding."""
        self.reply(conn, status, self.codec(conn).encode(messages.Error(message)),
                   ctype=self.ctype(conn))

    def reply_ok(self, conn: WorkerConn) -> None:
        """{"result": "ok"} in the call's encoding."""
        self.reply(conn, 200, self.codec(conn).encode({"result": "ok"}), ctype=self.ctype(conn))

    def reply(self, conn: WorkerConn, status: int, body: bytes, extra: bytes = b"",
              ctype: bytes = JSON_TYPE) -> None:
        if conn.sock is None:
            return
        keep = conn.keep_alive and not self.stopping
        if not keep:
            conn.close_after = True
        head = http.response_head(status, ctype + extra, len(body), keep, self.server)
        conn.busy = False
        # Head and body leave in one sendmsg: a pulled request's JSON (up to
        # max_body_size, base64) is not copied once more to join them.
        self._write(conn, [head] if conn.head else [head, body])
        if conn.sock is not None and not conn.close_after:
            conn.reader.next()
            # The next pipelined call waits until this answer has left: a
            # worker that does not read cannot pull request after request
            # into our memory (and away from the workers that do read).
            if conn.reader.buf and not conn.out:
                conn.drive(self._process_one)

    def reply_file(self, conn: WorkerConn, ctype: bytes, fd: int, size: int) -> None:
        """200 with the `size` bytes of the open file `fd` (which is ours to
        close), sent as the worker's socket takes them, never read whole
        into memory."""
        keep = conn.keep_alive and not self.stopping
        if not keep:
            conn.close_after = True
        head = http.response_head(200, ctype, size, keep, self.server)
        # conn.busy stays set until the file has gone: pipelined calls wait.
        conn.file = [fd, 0, size]
        self._write(conn, [head])

    def _write(self, conn: WorkerConn, buffers: list) -> None:
        if conn.add_output(buffers):
            self._flush_worker(conn)

    def _flush_worker(self, conn: WorkerConn) -> None:
        # The file (a spooled body, a few rounds per wake-up) goes out after
        # its head; conn.file becomes None once all of it has.
        file = conn.file
        if conn.flush() < 0:
            self._close_worker(conn)
            return
        if file is not None and conn.file is None:
            conn.busy = False       # pipelined calls waited for the file
            if not conn.close_after:
                conn.reader.next()
        sending = conn.out or conn.file is not None
        conn.watch(EVENT_READ | (EVENT_WRITE if sending else 0))
        if not sending and conn.close_after:
            self._close_worker(conn)

    def _close_worker(self, conn: WorkerConn) -> None:
        if conn.sock is None:
            return
        conn.waiting = False
        del self.workers[conn.sock.fileno()]
        conn.release()
