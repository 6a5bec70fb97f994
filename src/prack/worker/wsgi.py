"""Run a PEP 3333 (WSGI) application as a Prack handler, unchanged.

The Prack environment already has the CGI keys WSGI wants; this adds the
`wsgi.*` keys, decodes PATH_INFO as PEP 3333 asks (percent-decoded, bytes
as latin-1), and collects the body the application returns or writes.
Prack does not stream, so the whole body is gathered before it is posted.
"""
from __future__ import annotations

import io
import logging
import sys
import urllib.parse

from prack.worker.sdk import Request, Response

log = logging.getLogger("prack.worker")

_INTERNAL_ERROR = Response(500, [("Content-Type", "text/plain; charset=utf-8")],
                           b"Internal Server Error\n")


def environ_for(req: Request) -> dict:
    """The WSGI environ of a Prack request."""
    env = dict(req.env)
    scheme = env.pop("rack.url_scheme", "http")
    raw_path = env.get("PATH_INFO", "")
    query = env.get("QUERY_STRING", "")
    env["REQUEST_URI"] = raw_path + ("?" + query if query else "")
    env["RAW_URI"] = env["REQUEST_URI"]
    env["PATH_INFO"] = urllib.parse.unquote_to_bytes(raw_path).decode("latin-1")
    env["wsgi.version"] = (1, 0)
    env["wsgi.url_scheme"] = scheme
    env["wsgi.input"] = io.BytesIO(req.body)
    env["wsgi.input_terminated"] = True
    env["wsgi.errors"] = sys.stderr
    env["wsgi.multithread"] = True
    env["wsgi.multiprocess"] = True
    env["wsgi.run_once"] = False
    env["prack.id"] = req.id
    env["prack.deadline"] = req.deadline
    return env


class _Call:
    """start_response for one call (PEP 3333 semantics, exc_info included)."""
    __slots__ = ("status", "headers", "sent", "chunks")

    def __init__(self):
        self.status = None
        self.headers = None
        self.sent = False      # a body byte exists: headers are final
        self.chunks: list[bytes] = []

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called twice without exc_info")
        if type(status) is not str or len(status) < 4 or not status[:3].isdigit() \
                or status[3] != " ":
            raise ValueError("status must look like '200 OK', got %r" % (status,))
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if type(data) is not bytes:
            raise TypeError("write() expects bytes, got %s" % type(data).__name__)
        if data:
            self.sent = True
            self.chunks.append(data)


class WSGIHandler:
    """handler(Request) -> Response around a WSGI application."""

    def __init__(self, app):
        self.app = app

    def __call__(self, req: Request) -> Response:
        call = _Call()
        try:
            result = self.app(environ_for(req), call.start_response)
            try:
                for chunk in result:
                    if type(chunk) is not bytes:
                        raise TypeError("the application yielded %s, not bytes"
                                        % type(chunk).__name__)
                    if chunk:
                        if call.status is None:
                            raise AssertionError("body before start_response()")
                        call.sent = True
                        call.chunks.append(chunk)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if call.status is None:
                raise AssertionError("the application never called start_response()")
        except Exception:
            log.exception("WSGI application failed on %s %s", req.env.get("REQUEST_METHOD"),
                          req.env.get("PATH_INFO"))
            return _INTERNAL_ERROR
        return Response(int(call.status[:3]), list(call.headers), b"".join(call.chunks))
