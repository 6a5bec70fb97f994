"""Run a PEP 3333 (WSGI) application as a Prack handler, unchanged.

The Prack environment already has the CGI keys WSGI wants; this adds the
`wsgi.*` keys and decodes PATH_INFO as PEP 3333 asks (percent-decoded, bytes
as latin-1). `wsgi.input` is the request's input (a large body is read from
Prack as the application reads it).

A list or tuple the application returns is one response, posted with the
others of the batch. Any other iterable (a generator, a file wrapper) is
streamed: its head leaves with the first non-empty chunk (PEP 3333) and each
chunk leaves as the application yields it, unless its declared
Content-Length is reached at once (the usual framework response of one
chunk), which makes it one response too.
"""
from __future__ import annotations

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
    env["wsgi.input"] = req.input
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
        result = None
        streamed = False
        try:
            result = self.app(environ_for(req), call.start_response)
            if isinstance(result, (list, tuple)):
                for chunk in result:
                    _check(call, chunk)
                    if chunk:
                        call.sent = True
                        call.chunks.append(chunk)
            else:
                rest = self._first(call, iter(result))
                if rest is not None:
                    streamed = True
                    return Response(int(call.status[:3]), list(call.headers),
                                    _Body(call, rest, result))
            _started(call)
            return Response(int(call.status[:3]), list(call.headers), b"".join(call.chunks))
        except Exception:
            log.exception("WSGI application failed on %s %s", req.env.get("REQUEST_METHOD"),
                          req.env.get("PATH_INFO"))
            return _INTERNAL_ERROR
        finally:
            if not streamed:
                _close(result)

    @staticmethod
    def _first(call: _Call, chunks):
        """Read until the head is final (the first non-empty chunk, PEP
        3333). The iterator when the rest is to be streamed; None when the
        body is complete: the iterable ended, or it reached its declared
        Content-Length and ends right after."""
        got = sum(map(len, call.chunks))
        for chunk in chunks:
            _check(call, chunk)
            if chunk:
                call.sent = True
                call.chunks.append(chunk)
                got += len(chunk)
                declared = _declared_length(call)
                if declared is None or got != declared:
                    return chunks
                for chunk in chunks:      # the declared length is here: the end?
                    _check(call, chunk)
                    if chunk:
                        call.chunks.append(chunk)
                        return chunks
                return None
        return None


class _Body:
    """A streamed WSGI body: what write() gave, then the iterable's chunks,
    as the SDK asks for them; close() closes the application's iterable."""
    __slots__ = ("call", "chunks", "result")

    def __init__(self, call: _Call, chunks, result):
        self.call = call
        self.chunks = chunks
        self.result = result

    def __iter__(self):
        call = self.call
        pending = call.chunks
        while True:
            while pending:
                yield pending.pop(0)
            try:
                chunk = next(self.chunks)
            except StopIteration:
                break
            _check(call, chunk)
            if chunk:
                pending.append(chunk)
        while pending:           # write() during the last step
            yield pending.pop(0)

    def close(self) -> None:
        _close(self.result)


def _check(call: _Call, chunk) -> None:
    if type(chunk) is not bytes:
        raise TypeError("the application yielded %s, not bytes" % type(chunk).__name__)
    if chunk and call.status is None:
        raise AssertionError("body before start_response()")


def _started(call: _Call) -> None:
    if call.status is None:
        raise AssertionError("the application never called start_response()")


def _declared_length(call: _Call) -> int | None:
    for name, value in call.headers or ():
        if name.lower() == "content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _close(result) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()
