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

from prack import __version__

log = logging.getLogger("prack.api")

HEALTH_PATHS = frozenset({"/livez", "/readyz"})


class ApiLifecycle:
    """Mixed into ApiServer (which provides _reply, listener, links...)."""

    def _health(self, conn, req) -> None:
        if req.method not in ("GET", "HEAD"):
            self._reply(conn, 405, b'{"error":"use GET"}', b"Allow: GET, HEAD\r\n")
            return
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
