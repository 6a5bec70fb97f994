"""A client connection of an acceptor, and every state it can be in.

Everything that changes a connection's state lives here: the request,
upload, streaming and WebSocket paths move a connection only by calling
the transition methods of `Conn`, and `TRANSITIONS` says, as data, which
event leads from which state to which (tests/acceptor/test_connection_states.py
holds the methods to the table, and checks that no other module assigns a
state).

    READING    reading a request head, or its body
    QUEUED     the request is in the ring; no worker has it yet
    TAKEN      a worker has it (the slot word says TAKEN)
    WRITING    an answer is being written
    STREAMING  a streamed answer (F_START, F_DATA ..., F_END) is being relayed
    WEBSOCKET  the connection carries a WebSocket
    LINGER     half-closed after its last answer, draining what the client sends
    CLOSED     gone

A request with `Expect: 100-continue` has a second, inner state, `input`:
PARKED (queued with its head only, waiting for a worker), UPLOADING (100
sent, its body being read, in READING), DONE (the body is in, TAKEN).

Transitions are plain method calls on the per-request path, with no check
of the state they leave: the table is what tests hold them to.
"""
from __future__ import annotations

from prack.child.connection import Connection

READING, QUEUED, TAKEN, WRITING, STREAMING, WEBSOCKET, LINGER, CLOSED = range(8)
NAMES = ("READING", "QUEUED", "TAKEN", "WRITING", "STREAMING", "WEBSOCKET", "LINGER",
         "CLOSED")

# A request whose worker holds, or may yet hold, its slot: its client going
# away is a withdrawal (the slot goes GONE, a worker holding it is told).
IN_FLIGHT = frozenset((QUEUED, TAKEN, STREAMING, WEBSOCKET))
# A request a worker's answer (F_RESPONSE, F_START) may still be for.
ANSWERABLE = frozenset((QUEUED, TAKEN))

# Conn.input: where a request with a deferred body (Expect: 100-continue) is.
PARKED = 1       # queued with its head only; waiting for a worker (F_INPUT)
UPLOADING = 2    # 100 sent; its body is being read
DONE = 3         # the body is in; F_INPUT_DONE sent

# state -> event (a Conn method) -> the state it leads to. Any state may close.
TRANSITIONS = {
    READING: {"queue": QUEUED, "answer": WRITING, "body_done": TAKEN},
    QUEUED: {"take": TAKEN, "answer": WRITING, "stream_start": STREAMING, "upgrade": WEBSOCKET,
             "upload": READING},
    TAKEN: {"answer": WRITING, "stream_start": STREAMING, "upgrade": WEBSOCKET, "upload": READING},
    WRITING: {"next_request": READING, "linger": LINGER},
    STREAMING: {"end_stream": WRITING},
    WEBSOCKET: {"linger": LINGER},
    LINGER: {},
    CLOSED: {},
}
for _events in TRANSITIONS.values():
    _events["close"] = CLOSED
del _events


class Conn(Connection):
    __slots__ = ("fd", "slot", "key", "state", "reader", "deadline", "keep_alive",
                 "version_minor", "method", "target", "remote_addr", "remote_port", "started",
                 "sent_continue", "lingered", "status", "sent", "body_since", "body_read",
                 "stream", "spool", "input", "input_keep", "ws", "env_remote")

    def __init__(self, sock, sel, slot: int, reader, addr, deadline: float) -> None:
        super().__init__(sock, sel)
        self.fd = sock.fileno()
        self.slot = slot
        self.key = 0
        self.state = READING
        self.reader = reader
        self.deadline = deadline
        self.keep_alive = False
        self.version_minor = 1
        self.method = ""
        self.target = ""
        self.started = 0.0
        self.sent_continue = False
        self.lingered = 0
        self.status = 0
        self.sent = 0
        self.body_since = 0.0     # when the current request's head completed
        self.body_read = 0        # body bytes received since then
        self.stream = None        # streams.Stream, while a streamed response is relayed
        self.spool = None         # spool.SpoolFile of a body too large for the ring
        self.input = 0            # a deferred body's progress (PARKED ...)
        self.input_keep = False
        self.ws = None            # a WebSocket upgrade's (key, protocols), then its WsSession
        self.env_remote = None    # REMOTE_ADDR and REMOTE_PORT as msgpack pairs, once made
        if isinstance(addr, tuple):
            self.remote_addr = addr[0]
            self.remote_port = str(addr[1])
        else:  # Unix-domain listener
            self.remote_addr = ""
            self.remote_port = ""

    # -- the request ---------------------------------------------------------------

    def queue(self, key: int) -> None:
        """READING -> QUEUED: its record is going into the ring as `key`."""
        self.key = key
        self.state = QUEUED

    def take(self, deadline: float) -> None:
        """QUEUED -> TAKEN: a worker has the request; it must answer by `deadline`."""
        self.state = TAKEN
        self.deadline = deadline

    def answer(self, status: int, keep: bool) -> None:
        """-> WRITING: an answer, ours or a worker's, is being written."""
        self.keep_alive = keep
        self.state = WRITING
        self.status = status

    def next_request(self, deadline: float) -> None:
        """WRITING -> READING: answered, kept alive; the next request must
        start by `deadline`."""
        self.state = READING
        self.reader.next()
        self.deadline = deadline

    def linger(self, deadline: float) -> None:
        """-> LINGER: half-closed; what the client still sends is drained
        until `deadline`."""
        self.state = LINGER
        self.reader.buf.clear()
        self.deadline = deadline

    def close(self) -> None:
        """-> CLOSED."""
        self.state = CLOSED
        self.release()
        self.stream = None
        self.ws = None

    # -- a deferred body (Expect: 100-continue) --------------------------------------

    def park(self, keep: bool) -> None:
        """Queued with its head only: the body is read once a worker takes
        it; `keep` is the request's own keep-alive, for after the answer."""
        self.input = PARKED
        self.input_keep = keep

    def upload(self, now: float, deadline: float) -> None:
        """QUEUED/TAKEN -> READING: a worker took the parked request; its
        body is read now, by `deadline`."""
        self.input = UPLOADING
        self.state = READING
        self.deadline = deadline
        self.body_since = now
        self.body_read = len(self.reader.buf)

    def body_done(self, keep: bool, deadline: float) -> None:
        """READING -> TAKEN: the deferred body is in; the worker answers by
        `deadline`."""
        self.input = DONE
        self.sent_continue = False      # for the connection's next request
        self.keep_alive = keep
        self.state = TAKEN
        self.deadline = deadline

    def drop_input(self) -> None:
        """The deferred body's request is over (answered, gone, or lost with
        the API process)."""
        self.input = 0

    # -- streams and WebSockets ----------------------------------------------------------

    def stream_start(self, stream, status: int, keep: bool) -> None:
        """QUEUED/TAKEN -> STREAMING."""
        self.stream = stream
        self.keep_alive = keep
        self.state = STREAMING
        self.status = status

    def end_stream(self) -> None:
        """STREAMING -> WRITING: the worker's F_END; what is buffered goes out."""
        self.stream = None
        self.state = WRITING

    def upgrade(self, session, deadline: float) -> None:
        """QUEUED/TAKEN -> WEBSOCKET: the handshake is being written."""
        self.ws = session
        self.state = WEBSOCKET
        self.status = 101
        self.keep_alive = False
        self.deadline = deadline
