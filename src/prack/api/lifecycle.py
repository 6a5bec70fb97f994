"""The API process's part in supervision and upgrades, kept apart from the
worker API itself.

* ``GET /livez``: the process answers at all; the body says which code and
  which generation answers (``version``, ``generation``, the master's
  ``pid``), so an operator (and the upgrade tests) can see a deploy land.
* ``GET /readyz``: 200 while this generation takes work; 503 while it
  drains (retiring after an upgrade, or stopping) or before any acceptor
  has linked to it.
* retiring (SIGUSR2 during an upgrade): stop accepting worker connections
  (the new generation's API process accepts on the same inherited
  listener) but keep serving the workers already connected, so requests
  still queued in this generation's rings are handed out and answered. The
  master sends SIGTERM once this generation's acceptors are gone; the usual
  stop then closes the worker connections and they reconnect to the new
  generation.
* the other generation: during an upgrade a worker may call the wrong
  generation's API process; `elsewhere` tells whose an identifier is, and
  `forward`/`relay` pass the call on (see forward.py).
"""
from __future__ import annotations

import logging
import os

from prack import __version__
from prack.api import forward

log = logging.getLogger("prack.api")


class Lifecycle:
    """Health, retiring, and the way to the other generation, for `process`
    (the ApiServer)."""

    def __init__(self, process) -> None:
        self.process = process
        process.routes.update({
            "/livez": {"GET": self.health, "HEAD": self.health},
            "/readyz": {"GET": self.health, "HEAD": self.health},
        })

    def health(self, conn, req) -> None:
        """GET or HEAD (the routes table answers other methods 405)."""
        p = self.process
        if req.path == "/livez":
            body = p.encode({"status": "alive", "version": __version__,
                             "generation": p.generation, "pid": os.getppid(),
                             "api_pid": os.getpid()})
            p.reply(conn, 200, body)
            return
        if p.stopping or p.retiring or p.draining:
            p.reply(conn, 503, b'{"status":"draining"}')
        elif not any(link is not None for link in p.links):
            p.reply(conn, 503, b'{"status":"starting"}')
        else:
            p.reply(conn, 200, b'{"status":"ready"}')

    def retire(self) -> None:
        """SIGUSR2: the process stops accepting worker connections (its
        listener is the new generation's now) and says so."""
        p = self.process
        log.info("API process (generation %d): retiring; serving the %d connected "
                 "worker(s) until this generation's acceptors are done",
                 p.generation, len(p.workers))

    # -- the other generation -------------------------------------------------------

    def elsewhere(self, parsed) -> str | None:
        """The runtime directory of the generation an identifier belongs to,
        when that is the previous or the next one (during an upgrade)."""
        p = self.process
        generation = parsed[0]
        if generation == (p.generation - 2) % 0xFFFF + 1:
            return p.predecessor_dir or None
        if generation == p.generation % 0xFFFF + 1 and p.runtime_dir:
            return forward.successor_dir(p.runtime_dir)
        return None

    def forward(self, target: str, path: str, ctype: bytes, body: bytes, done,
                method: bytes = b"POST") -> None:
        """Pass a worker's call on to the API process of the generation in
        `target`; `done(status, answer)` gets its answer."""
        forward.Forward(self.process.sel, os.path.join(target, forward.SOCKET_NAME), path,
                        ctype, body, done, method)

    def relay(self, conn, target: str, path: str, ctype: bytes, body: bytes,
              method: bytes = b"POST", done=None) -> None:
        """Forward a v2 call and answer `conn` with what the other
        generation answered, as is (or hand it to `done(status, answer)`).
        It is asked for the encoding this call's answer must have, which
        may differ from the body's."""
        p = self.process
        accept = b"Accept: application/%s\r\n" % (b"msgpack" if conn.msgpack else b"json")
        if done is None:
            def done(status: int, answer: bytes) -> None:
                p.reply(conn, status, answer, ctype=p.ctype(conn))
        self.forward(target, path, ctype + accept, body, done, method)
