"""API process: serves the worker REST API and moves requests and responses.

It takes a record out of a ring only when a worker is waiting for one (so a
request that no worker has pulled stays in shared memory, where a restarted
API process finds it), and routes each posted response, by the connection
identifier, to the acceptor that holds the client, over that acceptor's Unix
socket. It speaks HTTP with the same sans-IO reader as the acceptors.
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import selectors
import socket
import time

import msgspec

from prack.api.checks import BadParameter, BadResponse, query_params
from prack.api.checks import check_response_cached as _check_response_cached
from prack.api.checks import describe as _describe
from prack.api.checks import printable as _printable
from prack.api.lifecycle import ApiLifecycle
from prack.api.streams import ApiStreams
from prack.api.uploads import ApiInput
from prack.api.websockets import ApiWebSockets
from prack.child.loop import ChildLoop
from prack.child.send import send_pending
from prack.ipc import frames, slots
from prack.ipc.slots import SLOT_FREE, SLOT_GONE, SLOT_QUEUED, SLOT_TAKEN
from prack.protocol import http, messages

log = logging.getLogger("prack.api")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
NO_REQUESTS = b'{"error":"There are no requests pending"}'
THANK_YOU = b'{"message":"thank you"}'
JSON_TYPE = b"Content-Type: application/json\r\n"
MSGPACK_TYPE = b"Content-Type: application/msgpack\r\n"
# API v2 batches: at most this many requests per pull whatever `max` asks,
# and no more once the batch holds this many bytes of environments and bodies
# (one large upload is still handed out alone).
MAX_BATCH = 256
BATCH_BYTES = 4 << 20
V2_PREFIX = "/api/v2/requests/"

# Outcomes of delivering one posted response (v2 names them per item).
OK, GONE, UNKNOWN, INVALID = "ok", "gone", "unknown", "invalid"


class Link:
    """The Unix-socket connection from one acceptor."""
    __slots__ = ("sock", "index", "inbuf", "out", "events")

    def __init__(self, sock):
        self.sock = sock
        self.events = selectors.EVENT_READ
        self.index = -1
        self.inbuf = bytearray()
        self.out: list = []


class WorkerConn:
    __slots__ = ("sock", "reader", "out", "events", "waiting", "deadline", "keep_alive",
                 "busy", "close_after", "head", "processing", "batch", "msgpack", "file",
                 "results")

    def __init__(self, sock, reader):
        self.sock = sock
        self.reader = reader
        self.out: list = []
        self.events = selectors.EVENT_READ
        self.waiting = False
        self.deadline = 0.0
        self.keep_alive = True
        self.busy = False          # a request of this connection is being answered
        self.close_after = False
        self.head = False          # the request being answered is a HEAD: no body
        self.processing = False    # _process is running for this connection
        self.batch = 0             # the waiting pull: 0 for v1, else v2's `max`
        self.msgpack = False       # answer this v2 call in msgpack
        self.file = None           # a spooled body being sent: [fd, offset, remaining]
        self.results = None        # a post-and-pull: its encoded ResultBatch, until the
                                   # batch of requests goes out with it


class ApiServer(ApiWebSockets, ApiStreams, ApiInput, ApiLifecycle, ChildLoop):
    what = "API process"

    def __init__(self, cfg, generation: int, listener: socket.socket,
                 link_listener: socket.socket, segment, status_fd: int):
        super().__init__()
        self.cfg = cfg
        self.generation = generation
        self.listener = listener
        self.link_listener = link_listener
        self.segment = segment
        self.rings = [segment.ring(i) for i in range(segment.nrings)]
        self.nslots = segment.nslots
        self.status_fd = status_fd
        lim = cfg.limits
        self.limits = http.Limits(cfg.api.max_request_size, lim.max_header_size,
                                  lim.max_request_line, lim.max_headers)
        self.poll_timeout = cfg.api.poll_timeout
        self.pull_params: dict[str, tuple[int, float]] = {}
        self.server = cfg.server.server_header.encode("latin-1")
        # What a worker connection may buffer behind a call in progress.
        self.pipeline_cap = cfg.api.max_request_size + lim.max_header_size
        self.tick = min(0.5, max(0.05, self.poll_timeout / 4 if self.poll_timeout else 0.5))
        self.links: list[Link | None] = [None] * segment.nrings
        self.workers: dict[int, WorkerConn] = {}
        self.waiters: collections.deque[WorkerConn] = collections.deque()
        self.rr = 0
        self.response_timeout = cfg.timeouts.response_timeout
        self.encode = msgspec.json.Encoder().encode
        self.decode_response = msgspec.json.Decoder(messages.PostedResponse).decode
        self.msgpack_encode = msgspec.msgpack.Encoder().encode
        self.codecs = {False: _Codec(msgspec.json, self.encode),
                       True: _Codec(msgspec.msgpack, self.msgpack_encode)}
        # Ring records hold the environment as the acceptor encoded it, msgpack.
        self.decode_env = msgspec.msgpack.Decoder(dict[str, str]).decode
        # path -> {method: handler(conn, req)}; the Allow header of a 405
        # lists the keys. New endpoints are one entry here.
        self.routes = {
            "/api/v1/request": {"GET": self._pull_v1, "POST": self._post_v1},
            "/api/v1/response": {"POST": self._post_v1},
            "/api/v2/requests": {"GET": self._pull_v2},
            "/api/v2/responses": {"POST": self._post_v2},
            "/livez": {"GET": self._health, "HEAD": self._health},
            "/readyz": {"GET": self._health, "HEAD": self._health},
        }
        # /api/v2/requests/{id}/<action> -> {method: handler(conn, req)}
        self.id_routes = {"error": {"POST": self._post_error_v2},
                          "input": {"GET": self._get_input}}
        # Frames from the acceptors other than WAKE and HELLO:
        # type -> handler(link, buffer, start, end)
        self.link_handlers = {}
        self._init_streams()
        # A request's client went: its stream, its state polls and a parked
        # upload all learn it. Handlers return True when pulls should look again.
        self.link_handlers[frames.F_GONE] = self._on_gone_frame
        self.link_handlers[frames.F_INPUT_DONE] = self._on_input_frame

    # -- setup -------------------------------------------------------------------

    def run(self) -> int:
        for lst in (self.listener, self.link_listener):
            lst.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, self._on_accept_worker)
        self.sel.register(self.link_listener, selectors.EVENT_READ, self._on_accept_link)
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
                and not self._ws_unfetched())

    def _begin_stop(self) -> None:
        self.stopping = True
        self.stop_deadline = time.monotonic() + 2.0
        self._close_listener(self.listener)
        while self.waiters:
            conn = self.waiters.popleft()
            if conn.waiting and conn.sock is not None:
                conn.waiting = False
                if conn.results is not None:
                    # A post-and-pull: its answers went through, so it is
                    # answered 200 with its results and no requests.
                    self._reply_empty(conn)
                else:
                    self._reply_error(conn, 503, "the server is shutting down")
        # The acceptors have stopped first: their WebSockets ended with a
        # close event (1001) that a worker may not have fetched yet, on a
        # connection idle between two events calls. Those connections stay
        # open for it (until the stop deadline); else idle ones close now.
        unfetched = self._ws_unfetched()
        log.debug("API process stopping (%d WebSocket ends not yet fetched)", unfetched)
        if not unfetched:
            for conn in list(self.workers.values()):
                if not conn.busy and not conn.out:
                    self._close_worker(conn)

    # -- acceptor links ------------------------------------------------------------

    def _on_accept_link(self, mask) -> None:
        while True:
            try:
                sock, _ = self.link_listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._pause_accepting(self.link_listener, self._on_accept_link, exc)
                return
            sock.setblocking(False)
            link = Link(sock)
            self.sel.register(sock, selectors.EVENT_READ, link)

    def _on_link(self, link: Link, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_link(link)
            if link.sock is None:
                return
        if not mask & selectors.EVENT_READ:
            return
        try:
            data = link.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_link(link)
            return
        buf = link.inbuf
        buf += data
        consumed = 0
        woken = False
        for start, end in frames.complete_frames(buf):
            consumed = end
            kind = buf[start]
            if kind == frames.F_WAKE:
                woken = True
            elif kind in self.link_handlers:
                woken = self.link_handlers[kind](link, buf, start, end) or woken
            elif kind == frames.F_HELLO:
                _, index, generation, pid = frames.HELLO.unpack_from(buf, start)
                if index < len(self.links) and generation == self.generation:
                    old = self.links[index]
                    if old is not None and old is not link:
                        self._drop_link(old)
                    link.index = index
                    self.links[index] = link
                    log.debug("acceptor %d (pid %d) linked", index, pid)
                    self._replay_held(index)
                    woken = True
        del buf[:consumed]
        if woken:
            self._dispatch_waiters()

    def _on_gone_frame(self, link: Link, buf, start: int, end: int) -> bool:
        self._on_gone(link, buf, start, end)
        return self._on_input_frame(link, buf, start, end)

    def _drop_link(self, link: Link) -> None:
        if link.sock is None:
            return
        self.sel.unregister(link.sock)
        link.sock.close()
        link.sock = None
        if 0 <= link.index < len(self.links) and self.links[link.index] is link:
            self.links[link.index] = None
            self._streams_lost(link.index)
            self._unpark_acceptor(link.index)

    def _send_link(self, link: Link, buffers: list) -> None:
        # At once: a worker's post is answered only after its frames are in
        # the acceptor's socket, so an API process killed in between loses
        # no answer that a worker was told was delivered.
        was_empty = not link.out
        link.out.extend(buffers)
        if was_empty:
            self._flush_link(link)

    def _flush_link(self, link: Link) -> None:
        try:
            send_pending(link.sock, link.out)
        except OSError:
            self._drop_link(link)
            return
        # Watch for writability only while something waits (one epoll_ctl
        # per change, not per frame).
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if link.out else 0)
        if want != link.events:
            link.events = want
            self.sel.modify(link.sock, want, link)

    # -- taking requests out of the rings ---------------------------------------------

    def _take(self, build):
        """build(identifier, environment view (msgpack), body view) for the next
        request still wanted, or None. A record is consumed only here, when a
        worker is waiting for it; successive calls visit the rings in turn."""
        if self.unstarted:  # parked uploads: room for more now?
            self._start_uploads()
        if self.ready:      # parked requests whose body is in go first
            data = self._take_ready(build)
            if data is not None:
                return data
        rings = self.rings
        n = len(rings)
        unpack = slots.RECORD.unpack_from
        rsize = slots.RECORD.size
        links = self.links
        for i in range(n):
            idx = (self.rr + i) % n
            if links[idx] is None:
                # Its answer could not be routed: wait for the acceptor's
                # HELLO (after an API restart it reconnects), which wakes us.
                continue
            ring = rings[idx]
            while True:
                view = ring.peek()
                if view is None:
                    break
                generation, acceptor, slot, key, _queued, env_len, body_len, flags = unpack(view)
                if ring.slot_cas(slot, (key << 2) | SLOT_QUEUED, (key << 2) | SLOT_TAKEN):
                    env_end = rsize + env_len
                    if flags & slots.RECF_INPUT_PENDING:
                        # Its body is read once a worker wants it: park it.
                        try:
                            self._park(generation, acceptor, slot, key, view[rsize:env_end])
                        finally:
                            view.release()
                            ring.release()
                        continue
                    try:
                        data = build(slots.make_identifier(generation, acceptor, slot, key),
                                     view[rsize:env_end], view[env_end:env_end + body_len])
                    finally:
                        view.release()
                        ring.release()
                    self.rr = idx + 1
                    return data
                # Withdrawn: the client left or its deadline passed. Drop it.
                view.release()
                ring.release()
        return None

    def _v1_item(self, ident: str, env, body) -> bytes:
        return self.encode(messages.PulledRequest(ident, self.decode_env(env), body))

    def _v2_json_item(self, ident: str, env, body) -> bytes:
        return self.encode(messages.RequestItem(ident, self.decode_env(env), body,
                                            time.time() + self.response_timeout))

    def _v2_msgpack_item(self, ident: str, env, body) -> bytes:
        # The environment is spliced in as the acceptor encoded it; the body
        # goes as raw bytes, straight from shared memory.
        return self.msgpack_encode(messages.RequestItem(ident, msgspec.Raw(env), body,
                                                    time.time() + self.response_timeout))

    def _take_for(self, conn: WorkerConn) -> bytes | None:
        """The answer to a waiting pull, if any request is there for it."""
        if not conn.batch:
            return self._take(self._v1_item)
        if conn.msgpack:
            return self._take_msgpack(conn.batch)
        build = self._v2_msgpack_item if conn.msgpack else self._v2_json_item
        parts = []
        size = 0
        while len(parts) < conn.batch and size < BATCH_BYTES:
            item = self._take(build)
            if item is None:
                break
            parts.append(item)
            size += len(item)
        if not parts:
            return None
        if conn.msgpack:
            return messages.msgpack_request_batch(parts)
        return b'{"requests":[' + b",".join(parts) + b"]}"

    def _take_msgpack(self, want: int) -> bytes | None:
        """A v2 msgpack batch of up to `want` requests. Runs of queued
        requests are claimed and written by C (Ring.take_v2: no Python per
        request), one ring after another from self.rr; parked requests and
        the records C leaves to us (a deferred body, a very large one) go
        through _take."""
        parts = []
        count = size = 0
        rings = self.rings
        links = self.links
        n = len(rings)
        while count < want and size < BATCH_BYTES:
            if not self.unstarted and not self.ready:
                deadline = time.time() + self.response_timeout
                got = 0
                for i in range(n):
                    idx = (self.rr + i) % n
                    if links[idx] is None:
                        continue        # see _take: its answers could not be routed
                    data, got = rings[idx].take_v2(want - count, BATCH_BYTES - size, deadline)
                    if got:
                        self.rr = idx + 1
                        parts.append(data)
                        count += got
                        size += len(data)
                        break
                if got:
                    continue
            item = self._take(self._v2_msgpack_item)
            if item is None:
                break
            parts.append(item)
            count += 1
            size += len(item)
        if not count:
            return None
        return messages.msgpack_request_batch(parts, count)

    def _dispatch_waiters(self) -> None:
        waiters = self.waiters
        rings = self.rings
        while waiters:
            conn = waiters[0]
            if not conn.waiting or conn.sock is None:
                waiters.popleft()
                continue
            data = self._take_for(conn)
            if data is None:
                # Declare ourselves asleep on every ring, then look once more:
                # a producer that published meanwhile saw no flag, so no wake-up
                # would come for its record.
                asleep = True
                for ring, link in zip(rings, self.links):
                    if link is not None and not ring.sleep():
                        asleep = False
                if asleep:
                    return
                continue
            waiters.popleft()
            conn.waiting = False
            self._reply_batch(conn, data)
        for ring in rings:
            ring.wake()

    # -- worker connections ------------------------------------------------------------

    def _on_accept_worker(self, mask) -> None:
        self._accept_workers(self.listener, self._on_accept_worker)

    def _accept_workers(self, listener, callback) -> None:
        """Accept worker connections on the worker port or on worker.sock."""
        for _ in range(64):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(listener, callback, exc)
                else:
                    log.warning("API process: accept: %s", exc)
                return
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = WorkerConn(sock, http.RequestReader(self.limits))
            self.workers[sock.fileno()] = conn
            self.sel.register(sock, selectors.EVENT_READ, conn)

    def _on_worker(self, conn: WorkerConn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_worker(conn)
            if conn.sock is None:
                return
            if not conn.out and not conn.busy and conn.reader.buf:
                self._process(conn)     # calls that waited for the answers to drain
        if not mask & selectors.EVENT_READ:
            return
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_worker(conn)
            return
        conn.reader.feed(data)
        if not conn.busy and not conn.out:
            self._process(conn)
        if ((conn.busy or conn.out) and conn.sock is not None
                and len(conn.reader.buf) > self.pipeline_cap):
            # Bytes pipelined behind a call still in progress (a long poll,
            # a held or forwarded post) or an answer the worker has not read
            # yet: keep one more request's worth, then stop reading until
            # the answer goes out (TCP pushes back).
            self._watch(conn, conn.events & ~selectors.EVENT_READ)

    def _process(self, conn: WorkerConn) -> None:
        """Handle buffered requests one after another. A loop, not recursion:
        _reply asks for the next request while we are still in here, and a
        worker may pipeline thousands of calls."""
        if conn.processing:
            return      # called back from _reply: the loop below goes on
        conn.processing = True
        try:
            while self._process_one(conn):
                pass
        finally:
            conn.processing = False

    def _process_one(self, conn: WorkerConn) -> bool:
        """Read and route one request; True when it was answered at once and
        more bytes are buffered."""
        reader = conn.reader
        try:
            req = reader.maybe_read_request()
        except http.ProtocolError as exc:
            conn.keep_alive = False
            conn.busy = True
            conn.head = exc.head
            self._reply(conn, exc.status, self.encode(messages.Error(exc.message)))
            return False
        if req is None:
            if reader.wants_continue:
                reader.wants_continue = False
                self._write(conn, [CONTINUE])
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
            self._reply(conn, 404, b'{"error":"no such endpoint"}')
            return
        conn.batch = 0
        conn.results = None
        conn.msgpack = path.startswith("/api/v2/") and _wants_msgpack(req)
        handler = methods.get(req.method)
        if handler is None:
            allow = ", ".join(methods)
            self._reply(conn, 405, self._codec(conn).encode(messages.Error("use " + allow)),
                        b"Allow: %s\r\n" % allow.encode(), self._ctype(conn))
            return
        handler(conn, req)

    def _codec(self, conn: WorkerConn) -> "_Codec":
        return self.codecs[conn.msgpack]

    @staticmethod
    def _ctype(conn: WorkerConn) -> bytes:
        return MSGPACK_TYPE if conn.msgpack else JSON_TYPE

    def _reply_error(self, conn: WorkerConn, status: int, message: str) -> None:
        """{"error": message} in the call's encoding."""
        self._reply(conn, status, self._codec(conn).encode(messages.Error(message)),
                    ctype=self._ctype(conn))

    # -- pulls -------------------------------------------------------------------------

    def _pull_v1(self, conn: WorkerConn, req: http.Request) -> None:
        self._pull(conn, self.poll_timeout)

    def _pull_v2(self, conn: WorkerConn, req: http.Request) -> None:
        params = self._batch_params(conn, req)
        if params is not None:
            conn.batch, wait = params
            self._pull(conn, wait)

    def _batch_params(self, conn: WorkerConn, req: http.Request) -> tuple[int, float] | None:
        """(max, wait) of a v2 pull or post-and-pull, or None once a bad
        parameter has been answered 400. A worker asks with the same few
        query strings again and again: valid ones are parsed once
        (parse_qsl is about 5 µs a call)."""
        params = self.pull_params.get(req.query)
        if params is None:
            try:
                params = _batch_params(req.query, self.poll_timeout)
            except BadParameter as exc:
                self._reply_error(conn, 400, str(exc))
                return None
            if len(self.pull_params) >= 256:
                self.pull_params.clear()
            self.pull_params[req.query] = params
        return params

    def _pull(self, conn: WorkerConn, wait: float) -> None:
        if conn.sock is None:
            # Gone while its post was held or forwarded: take nothing for it.
            return
        if self.stopping:
            if conn.results is not None:
                self._reply_empty(conn)     # its results, and no requests
            else:
                self._reply_error(conn, 503, "the server is shutting down")
            return
        if wait <= 0:
            data = self._take_for(conn)
            if data is None:
                self._reply_empty(conn)
            else:
                self._reply_batch(conn, data)
            return
        conn.waiting = True
        conn.deadline = time.monotonic() + wait
        self.waiters.append(conn)
        self._dispatch_waiters()

    def _reply_batch(self, conn: WorkerConn, data: bytes) -> None:
        """A v1 request or a v2 batch (after a post-and-pull's results)."""
        results = conn.results
        if results is not None:
            conn.results = None
            data = _results_and_requests(results, data, conn.msgpack)
        self._reply(conn, 200, data, ctype=self._ctype(conn))

    def _reply_empty(self, conn: WorkerConn) -> None:
        """Nothing arrived in time: v1 says 404, v2 an empty batch."""
        if conn.batch:
            self._reply_batch(conn, self._codec(conn).empty_batch)
        else:
            self._reply(conn, 404, NO_REQUESTS)

    # -- responses ---------------------------------------------------------------------

    def _post_v1(self, conn: WorkerConn, req: http.Request) -> None:
        self._post_v1_body(conn, req.body)

    def _post_v1_body(self, conn: WorkerConn, body: bytes, hold: bool = True) -> None:
        out: dict = {}
        try:
            msg = self.decode_response(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            parsed = slots.parse_identifier(_identifier_of(body, _decode_ident))
            target = self._elsewhere(parsed) if parsed is not None else None
            if target is not None:      # there, it gets the same 400 and its client a 502
                self._forward(target, "/api/v1/response", JSON_TYPE, body,
                              lambda status, answer: self._reply(conn, status, answer))
                return
            if parsed is not None and self._known(parsed):
                self._answer_502(*parsed[1:], out)
            self._send_frames(out)
            self._reply(conn, 400, self.encode(messages.Error(_describe(exc))))
            return
        parsed = slots.parse_identifier(msg.identifier)
        if parsed is not None:
            target = self._elsewhere(parsed)
            if target is not None:      # the other generation's request
                self._forward(target, "/api/v1/response", JSON_TYPE, body,
                              lambda status, answer: self._reply(conn, status, answer))
                return
            if hold and self._unlinked(parsed):
                self._hold_until_linked(conn, parsed[1],
                                        lambda _: self._post_v1_body(conn, body, False))
                return
        outcome, reason = self._deliver(parsed, msg.code, msg.headers, msg.body,
                                        "code", out)
        self._send_frames(out)
        if outcome is OK:
            self._reply(conn, 200, THANK_YOU)
        elif outcome is GONE:
            self._reply(conn, 410, self.encode(messages.Error(reason)))
        elif outcome is UNKNOWN:
            self._reply(conn, 404, self.encode(messages.Error(reason)))
        else:
            self._reply(conn, 400, self.encode(messages.Error(reason)))

    def _post_v2(self, conn: WorkerConn, req: http.Request, hold: bool = True,
                 deadline: float | None = None) -> None:
        """POST /api/v2/responses; with `max` or `wait` in the query (a
        post-and-pull) the results go out together with the next batch of
        requests, pulled as GET /api/v2/requests does once every answer has
        been delivered (held or forwarded ones included)."""
        params = None
        if req.query:
            params = self._batch_params(conn, req)
            if params is None:          # 400: nothing delivered, nothing pulled
                return
        codec = self._codec_in(req)
        try:
            batch = codec.decode_batch(req.body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._reply_error(conn, 400, _describe(exc, codec))
            return
        # Each item is decoded once; only an unreadable one is read again
        # for its identifier (its client then gets a 502).
        entries = []            # (raw, item or None, identifier, parsed, error)
        for raw in batch.responses:
            try:
                item = codec.decode_item(raw)
                ident, error = item.id, None
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                item, error = None, exc
                ident = _identifier_of(raw, codec.decode_id)
            entries.append((raw, item, ident, slots.parse_identifier(ident), error))
        if hold:
            for entry in entries:
                parsed = entry[3]
                if parsed is not None and self._unlinked(parsed):
                    # Nothing is delivered before the whole batch is replayed
                    # (which holds again while another acceptor is missing).
                    self._hold_until_linked(
                        conn, parsed[1],
                        lambda until: self._post_v2(conn, req, until is not None, until),
                        deadline)
                    return
        out: dict = {}
        results: list = []
        foreign: dict = {}      # runtime dir of the other generation -> [(index, id, raw)]
        for raw, item, ident, parsed, error in entries:
            target = self._elsewhere(parsed) if parsed is not None else None
            if target is not None:
                foreign.setdefault(target, []).append((len(results), ident, raw))
                results.append(None)
                continue
            if item is None:
                if parsed is not None and self._known(parsed):
                    self._answer_502(*parsed[1:], out)
                results.append(messages.ItemResult(ident if type(ident) is str else "", INVALID,
                                               _describe(error, codec)))
                continue
            outcome, reason = self._deliver(parsed, item.status, item.headers, item.body,
                                            "status", out)
            results.append(messages.ItemResult(item.id, outcome, reason))
        self._send_frames(out)
        if not foreign:
            self._reply_results(conn, results, params)
            return
        # Items for the other generation go there as one batch each; the
        # answer to this call waits for theirs.
        pending = [len(foreign)]
        for target, items in foreign.items():
            def done(status: int, answer: bytes, items=items) -> None:
                got = []
                if status == 200:
                    try:
                        got = codec.decode_results(answer).results
                    except (msgspec.ValidationError, msgspec.DecodeError):
                        got = []
                for k, (index, ident, _) in enumerate(items):
                    results[index] = got[k] if k < len(got) else messages.ItemResult(
                        ident, UNKNOWN, "identifier: its generation did not answer")
                pending[0] -= 1
                if not pending[0]:
                    self._reply_results(conn, results, params)
            self._forward(target, "/api/v2/responses", codec.ctype,
                          codec.encode(messages.ResponseBatch([raw for _, _, raw in items])), done)

    def _reply_results(self, conn: WorkerConn, results: list,
                       params: tuple[int, float] | None = None) -> None:
        """The results of a post; with `params` (max, wait), a pull follows
        and they wait for its batch."""
        encoded = self._codec(conn).encode(messages.ResultBatch(results))
        if params is None:
            self._reply(conn, 200, encoded, ctype=self._ctype(conn))
            return
        conn.results = encoded
        conn.batch, wait = params
        self._pull(conn, wait)

    def _post_error_v2(self, conn: WorkerConn, req: http.Request, hold: bool = True) -> None:
        """A worker gives up on a request: its client gets 502 and the
        worker's reason goes to the log."""
        codec = self._codec_in(req)
        ident = req.path[len(V2_PREFIX):-len("/error")]
        reason = ""
        bad = None
        if req.body:
            try:
                reason = codec.decode_error(req.body).error
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                bad = _describe(exc, codec)
        parsed = slots.parse_identifier(ident)
        if parsed is None:
            self._reply_error(conn, 400, "id: malformed")
            return
        target = self._elsewhere(parsed)
        if target is not None:          # the other generation's request
            # Its answer is relayed as is: ask for the encoding this call's
            # answer must have, which may differ from the body's.
            accept = b"Accept: application/%s\r\n" % (b"msgpack" if conn.msgpack else b"json")
            self._forward(target, req.path, codec.ctype + accept, req.body,
                          lambda status, answer: self._reply(conn, status, answer,
                                                             ctype=self._ctype(conn)))
            return
        if hold and self._unlinked(parsed):
            self._hold_until_linked(conn, parsed[1],
                                    lambda _: self._post_error_v2(conn, req, False))
            return
        outcome, why = self._lookup(parsed)
        if outcome is not OK:
            self._reply_error(conn, 410 if outcome is GONE else 404, why)
            return
        out: dict = {}
        if not self._answer_502(*parsed[1:], out):
            self._reply_error(conn, 410, "the client has gone")
            return
        self._send_frames(out)
        log.warning("worker reported an error for request %s: %s", ident,
                    _printable(reason) if bad is None else "(unreadable report: %s)" % bad)
        if bad is not None:
            self._reply_error(conn, 400, bad)
        else:
            self._reply(conn, 200, self._codec(conn).encode(messages.Message("reported")),
                        ctype=self._ctype(conn))

    def _codec_in(self, req: http.Request) -> "_Codec":
        """The codec of a v2 request body: msgpack when its Content-Type says so."""
        for name, value in req.headers:
            if name == b"content-type":
                return self.codecs[value.split(b";")[0].strip().lower() == b"application/msgpack"]
        return self.codecs[False]

    def _lookup(self, parsed) -> tuple[str, str | None]:
        """Whether the request named by a parsed identifier waits for an answer."""
        if not self._known(parsed):
            return UNKNOWN, "identifier: unknown"
        _, acceptor, slot, key = parsed
        word = self.rings[acceptor].slot_load(slot)
        if word >> 2 != key or word & 3 in (SLOT_FREE, SLOT_QUEUED):
            return UNKNOWN, "identifier: unknown or already answered"
        if word & 3 == SLOT_GONE or self.links[acceptor] is None:
            return GONE, "the client has gone"
        return OK, None

    def _deliver(self, parsed, code, headers, body, field: str,
                 out: dict) -> tuple[str, str | None]:
        """Validate one posted response (its identifier already parsed, None
        when malformed) and queue its RESPONSE frame in `out` (link ->
        buffers); (outcome, reason). Shared by v1 and v2."""
        if parsed is None:
            return INVALID, "identifier: malformed"
        outcome, reason = self._lookup(parsed)
        if outcome is not OK:
            return outcome, reason
        _, acceptor, slot, key = parsed
        if (acceptor, slot, key) in self.streams:
            # Its head went out already: the stream ends as failed.
            self._answer_502(acceptor, slot, key, out)
            return INVALID, ("status: the head of a streamed response was sent already "
                             "(end it with POST /api/v2/requests/{id}/end)")
        try:
            status, flags, block, declared = _check_response_cached(code, headers, field)
        except BadResponse as exc:
            self._answer_502(acceptor, slot, key, out)
            log.warning("worker posted an invalid response: %s", exc)
            return INVALID, str(exc)
        if not self.rings[acceptor].slot_cas(slot, (key << 2) | SLOT_TAKEN,
                                             (key << 2) | SLOT_FREE):
            # The acceptor gave up on it this very moment.
            return GONE, "the client has gone"
        link = self.links[acceptor]
        out.setdefault(link, []).extend(
            frames.response_frame(slot, key, status, flags, block, body or b"", declared))
        return OK, None

    def _send_frames(self, out: dict) -> None:
        """One send per acceptor for everything a call answered."""
        for link, buffers in out.items():
            if link.sock is not None:
                self._send_link(link, buffers)

    def _unlinked(self, parsed) -> bool:
        """A request a worker holds, of an acceptor not linked (yet) to this
        API process: a new API process whose acceptors are reconnecting."""
        if not self._known(parsed):
            return False
        _, acceptor, slot, key = parsed
        return (self.links[acceptor] is None
                and self.rings[acceptor].slot_load(slot) == (key << 2) | SLOT_TAKEN)

    def _known(self, parsed: tuple[int, int, int, int]) -> bool:
        """The identifier names a slot of this generation's rings."""
        generation, acceptor, slot, _ = parsed
        return generation == self.generation and acceptor < len(self.rings) and slot < self.nslots

    def _answer_502(self, acceptor: int, slot: int, key: int, out: dict) -> bool:
        """The worker's answer is unusable: if the request is still waiting
        for it, its client gets a 502 now (nothing hangs). The frame is
        queued in `out` (link -> buffers); True when it was."""
        if (acceptor, slot, key) in self.streams:   # streaming: ended incomplete
            return self._abort_stream((acceptor, slot, key), out)
        link = self.links[acceptor]
        if link is not None and self.rings[acceptor].slot_cas(
                slot, (key << 2) | SLOT_TAKEN, (key << 2) | SLOT_FREE):
            out.setdefault(link, []).extend(
                frames.response_frame(slot, key, 502, frames.RF_ERROR, b"", b""))
            return True
        return False

    # -- writing to workers ----------------------------------------------------------

    def _reply(self, conn: WorkerConn, status: int, body: bytes, extra: bytes = b"",
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
                self._process(conn)

    def _write(self, conn: WorkerConn, buffers: list) -> None:
        was_empty = not conn.out
        conn.out.extend(buffers)
        if was_empty:
            self._flush_worker(conn)

    def _flush_worker(self, conn: WorkerConn) -> None:
        out = conn.out
        try:
            send_pending(conn.sock, out)
            if conn.file is not None and not out:
                self._send_input(conn)
        except OSError:
            self._close_worker(conn)
            return
        sending = out or conn.file is not None
        self._watch(conn, selectors.EVENT_READ | (selectors.EVENT_WRITE if sending else 0))
        if not sending and conn.close_after:
            self._close_worker(conn)

    def _watch(self, conn: WorkerConn, want: int) -> None:
        """Watch a worker connection for `want` (0: not at all, for now)."""
        if want != conn.events:
            if not conn.events:
                self.sel.register(conn.sock, want, conn)
            elif not want:
                self.sel.unregister(conn.sock)
            else:
                self.sel.modify(conn.sock, want, conn)
            conn.events = want

    def _close_worker(self, conn: WorkerConn) -> None:
        if conn.sock is None:
            return
        conn.waiting = False
        self._close_input(conn)
        if conn.events:
            self.sel.unregister(conn.sock)
        del self.workers[conn.sock.fileno()]
        conn.sock.close()
        conn.sock = None

    def _scan(self, now: float) -> None:
        self._scan_streams(now)
        # An expired waiter stays in the deque; when the same connection
        # polls again it is appended once more. Answer each one once, and
        # drop the stale entries before answering (which may poll again).
        expired = []
        for conn in self.waiters:
            if conn.waiting and now >= conn.deadline:
                conn.waiting = False
                expired.append(conn)
        if expired:
            self.waiters = collections.deque(c for c in self.waiters if c.waiting)
            for conn in expired:
                self._reply_empty(conn)


class _IdentOnly(msgspec.Struct):
    identifier: str


class _IdOnly(msgspec.Struct):
    id: str


_decode_ident = msgspec.json.Decoder(_IdentOnly).decode


class _Codec:
    """Encoding of v2 calls: JSON (bodies base64) or msgpack (raw bytes)."""

    def __init__(self, module, encode):
        self.name = "msgpack" if module is msgspec.msgpack else "JSON"
        self.encode = encode
        self.decode_batch = module.Decoder(messages.ResponseBatch).decode
        self.decode_item = module.Decoder(messages.ResponseItem).decode
        self.decode_id = module.Decoder(_IdOnly).decode
        self.decode_error = module.Decoder(messages.Error).decode
        self.decode_results = module.Decoder(messages.ResultBatch).decode
        self.ctype = MSGPACK_TYPE if module is msgspec.msgpack else JSON_TYPE
        self.empty_batch = encode(messages.RequestBatch([]))


def _identifier_of(body, decode) -> str | None:
    try:
        msg = decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return getattr(msg, "identifier", None) or getattr(msg, "id", None)


def _wants_msgpack(req: http.Request) -> bool:
    """msgpack when the worker accepts it or, without Accept, sends it."""
    ctype = None
    for name, value in req.headers:
        if name == b"accept":
            return b"application/msgpack" in value.lower()
        if name == b"content-type":
            ctype = value
    return ctype is not None and ctype.split(b";")[0].strip().lower() == b"application/msgpack"


def _results_and_requests(results: bytes, batch: bytes, msgpack: bool) -> bytes:
    """One {"results", "requests"} map (messages.ResultsAndRequests) out of an
    encoded ResultBatch and an encoded RequestBatch, each a one-key map:
    their entries are joined, the requests not encoded again."""
    if msgpack:         # fixmap of 1 -> fixmap of 2
        return b"\x82" + results[1:] + batch[1:]
    return results[:-1] + b"," + batch[1:]


def _batch_params(query: str, poll_timeout: float) -> tuple[int, float]:
    """(max, wait) of GET /api/v2/requests; wait is capped by poll_timeout."""
    wait, batch = query_params(query, poll_timeout, poll_timeout, 1, MAX_BATCH)
    return batch, wait
