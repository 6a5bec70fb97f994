"""The API process's part in supervision and upgrades, kept apart from the
worker API itself (api.py hooks these in with two lines).

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
"""
from __future__ import annotations

import logging
import os
import selectors
import time

from prack import __version__
from prack.api import forward

log = logging.getLogger("prack.api")

HOLD_SECONDS = 3.0     # how long a post waits for its acceptor to (re)link


class ApiLifecycle:
    """Mixed into ApiServer (which provides _reply, listener, links...).
    The master sets, before run(): `forward_listener` (this generation's
    worker.sock), `runtime_dir` and `predecessor_dir`."""

    forward_listener = None
    runtime_dir = ""
    predecessor_dir = ""
    held = None        # acceptor index -> [(conn, replay, deadline)]

    # -- posts that arrive before their acceptor has linked ------------------------
    # A new API process (the old one died) is linked to each acceptor only
    # once that acceptor has reconnected and said HELLO, a few milliseconds
    # after the restart. A worker that re-posts its answer at once (its POST
    # died with the old process) must not be told "gone" meanwhile: the post
    # waits, up to HOLD_SECONDS, and is handled again when the link is there:
    # `replay(deadline)` runs the call once more; it may hold again until the
    # same deadline (a batch naming another acceptor still missing), and at
    # the deadline `replay(None)` runs it without holding (a link still
    # missing then means "gone").

    def _hold_until_linked(self, conn, acceptor: int, replay,
                           deadline: float | None = None) -> None:
        if self.held is None:
            self.held = {}
        self.held.setdefault(acceptor, []).append(
            (conn, replay, deadline or time.monotonic() + HOLD_SECONDS))

    def _replay_held(self, acceptor: int) -> None:
        if not self.held:
            return
        for conn, replay, deadline in self.held.pop(acceptor, ()):
            if conn.sock is not None:
                replay(deadline)

    def _housekeeping(self, now: float) -> None:
        if not self.held:
            return
        for acceptor, posts in list(self.held.items()):
            keep = [p for p in posts if p[2] > now and p[0].sock is not None]
            if keep:
                self.held[acceptor] = keep
            else:
                del self.held[acceptor]
            for conn, replay, deadline in posts:
                if deadline <= now and conn.sock is not None:
                    replay(None)

    def serve(self, status_fd: int, ready: bytes) -> int:
        if self.forward_listener is not None:
            self.forward_listener.setblocking(False)
            self.sel.register(self.forward_listener, selectors.EVENT_READ,
                              self._on_accept_forwarded)
        return super().serve(status_fd, ready)

    def _on_accept_forwarded(self, mask) -> None:
        """A post passed on by the other generation's API process: served
        like any worker connection."""
        self._accept_workers(self.forward_listener, self._on_accept_forwarded)

    def _elsewhere(self, parsed) -> str | None:
        """The runtime directory of the generation an identifier belongs to,
        when that is the previous or the next one (during an upgrade)."""
        generation = parsed[0]
        if generation == (self.generation - 2) % 0xFFFF + 1:
            return self.predecessor_dir or None
        if generation == self.generation % 0xFFFF + 1 and self.runtime_dir:
            return forward.successor_dir(self.runtime_dir)
        return None

    def _forward(self, target: str, path: str, ctype: bytes, body: bytes, done,
                 method: bytes = b"POST") -> None:
        """Pass a worker's call on to the API process of the generation in
        `target`; `done(status, answer)` gets its answer."""
        forward.Forward(self.sel, os.path.join(target, forward.SOCKET_NAME), path, ctype,
                        body, done, method)

    def _health(self, conn, req) -> None:
        """GET or HEAD (the routes table answers other methods 405)."""
        if req.path == "/livez":
            body = self.encode({"status": "alive", "version": __version__,
                                "generation": self.generation, "pid": os.getppid(),
                                "api_pid": os.getpid()})
            self._reply(conn, 200, body)
            return
        if self.stopping or self.retiring or self.draining:
            self._reply(conn, 503, b'{"status":"draining"}')
        elif not any(link is not None for link in self.links):
            self._reply(conn, 503, b'{"status":"starting"}')
        else:
            self._reply(conn, 200, b'{"status":"ready"}')

    def _begin_retire(self) -> None:
        log.info("API process (generation %d): retiring; serving the %d connected "
                 "worker(s) until this generation's acceptors are done",
                 self.generation, len(self.workers))
        self._close_listener(self.listener)
