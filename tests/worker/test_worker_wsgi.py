"""The WSGI adapter: PEP 3333 semantics (checked with wsgiref.validate), and
a real Flask application behind Prack answering exactly as under werkzeug."""
from __future__ import annotations

import io
import sys
import wsgiref.validate

import pytest

from apps import flask_app
from apps.compare import compare, fetch
from apps.procs import WerkzeugServer, WorkerProcess
from prack.worker.sdk import Request, is_streamed
from prack.worker.wsgi import WSGIHandler, environ_for

ENV = {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/a%20b/%C3%A9",
       "QUERY_STRING": "x=1", "SERVER_NAME": "example.com", "SERVER_PORT": "80",
       "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5555",
       "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "5", "HTTP_HOST": "example.com",
       "rack.url_scheme": "http"}


def request(env=None, body=b"hello"):
    return Request("0" * 32, dict(env or ENV), body, 2e9)


def test_environ_follows_pep_3333():
    env = environ_for(request())
    assert env["PATH_INFO"] == "/a b/\xc3\xa9"             # unquoted, bytes as latin-1
    assert env["REQUEST_URI"] == "/a%20b/%C3%A9?x=1"
    assert env["wsgi.url_scheme"] == "http" and "rack.url_scheme" not in env
    assert env["wsgi.input"].read() == b"hello"
    assert env["wsgi.version"] == (1, 0) and env["wsgi.errors"] is sys.stderr


def test_validator_accepts_the_server_side():
    """wsgiref.validate checks the environ, start_response, write, the
    iterable and close() from both sides; any violation raises (-> 500)."""
    closed = []

    class Body:
        def __init__(self):
            self.parts = iter([b"a", b"", b"b"])

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.parts)

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        assert environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])) == b"hello"
        write = start_response("201 Created", [("Content-Type", "text/plain"), ("X-A", "1"),
                                               ("X-A", "2")])
        write(b"w")
        return Body()

    resp = WSGIHandler(wsgiref.validate.validator(app))(request())
    assert resp.status == 201
    assert resp.headers == [("Content-Type", "text/plain"), ("X-A", "1"), ("X-A", "2")]
    # Not a list: streamed, chunk by chunk as the SDK asks; close() after.
    assert is_streamed(resp.body) and closed == []
    assert list(resp.body) == [b"w", b"a", b"b"]
    resp.body.close()
    assert closed == [True]
    # Flask itself, under the validator, for a plain GET.
    env = dict(ENV, REQUEST_METHOD="GET", PATH_INFO="/items/3", CONTENT_LENGTH="0")
    resp = WSGIHandler(wsgiref.validate.validator(flask_app.app))(request(env, b""))
    assert resp.status == 200 and b'"id":3' in resp.body.replace(b" ", b"")


def test_start_response_with_exc_info_replaces_headers_before_the_body():
    def app(environ, start_response):
        start_response("200 OK", [("X-Stage", "first")])
        try:
            raise ValueError("late failure")
        except ValueError:
            start_response("503 Service Unavailable", [("X-Stage", "second")], sys.exc_info())
        return [b"sorry"]

    resp = WSGIHandler(app)(request())
    assert (resp.status, resp.headers, resp.body) == (503, [("X-Stage", "second")], b"sorry")


def test_exc_info_after_the_body_reraises_and_closes():
    """Once a chunk has left, the head is final: exc_info re-raises into the
    stream (which Prack aborts), and the iterable is closed."""
    closed = []

    class Body:
        def __init__(self, start_response):
            self.start_response = start_response

        def __iter__(self):
            yield b"partial"
            try:
                raise KeyError("x")
            except KeyError:
                self.start_response("500 Oops", [], sys.exc_info())
            yield b"never"

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body(start_response)

    resp = WSGIHandler(app)(request())
    assert resp.status == 200 and is_streamed(resp.body)
    chunks = iter(resp.body)
    assert next(chunks) == b"partial"
    with pytest.raises(KeyError):
        next(chunks)
    resp.body.close()
    assert closed == [True]


def test_which_bodies_stream():
    """Lists and tuples are one response; an iterable that ends before a
    non-empty chunk, or whose first chunk is its whole declared
    Content-Length and then ends, too; any other iterable streams (the first chunk is taken,
    the rest left to come)."""
    taken = []

    def gen(*chunks):
        for chunk in chunks:
            taken.append(chunk)
            yield chunk

    def app_for(body, headers=()):
        def app(environ, start_response):
            start_response("200 OK", list(headers))
            return body()
        return app

    whole = [(lambda: [b"a", b"b"], ()),
             (lambda: gen(b"", b"ab"), [("Content-Length", "2")]),
             (lambda: gen(b"ab"), [("Content-Length", "2")]),
             (lambda: iter([b""]), ())]
    for body, headers in whole:
        resp = WSGIHandler(app_for(body, headers))(request())
        assert resp.body in (b"ab", b""), resp
    taken.clear()
    resp = WSGIHandler(app_for(lambda: gen(b"a", b"b", b"c")))(request())
    assert is_streamed(resp.body) and taken == [b"a"]       # the rest not produced yet
    assert list(resp.body) == [b"a", b"b", b"c"]
    resp.body.close()
    resp = WSGIHandler(app_for(lambda: gen(b"a", b"b"), [("Content-Length", "2")]))(request())
    assert is_streamed(resp.body) and list(resp.body) == [b"a", b"b"]
    resp.body.close()


def test_start_response_inside_a_generator():
    """A generator application calls start_response on its first step."""
    def app(environ, start_response):
        start_response("202 Accepted", [("X-Late", "1")])
        yield b"one"
        yield b"two"

    resp = WSGIHandler(app)(request())
    assert (resp.status, resp.headers) == (202, [("X-Late", "1")])
    assert list(resp.body) == [b"one", b"two"]
    resp.body.close()


@pytest.mark.parametrize("app", [
    lambda env, sr: [b"body before start_response"],
    lambda env, sr: (sr("200 OK", []), sr("200 OK", []), [b""])[2],
    lambda env, sr: (sr("200 OK", []), ["text, not bytes"])[1],
    lambda env, sr: (sr("OK", []), [b""])[1],
    lambda env, sr: 1 / 0,
])
def test_broken_applications_get_500(app):
    resp = WSGIHandler(app)(request())
    assert resp.status == 500


def test_flask_behind_prack_matches_werkzeug(start_server):
    server = start_server()
    conventional = WerkzeugServer(flask_app.app)
    try:
        with WorkerProcess("--api", server.api, "--concurrency", "4", "--wait", "1",
                           "apps.flask_app:app") as worker:
            assert compare(server.port, conventional.port) >= 15
            assert worker.stop() == 0
    finally:
        conventional.close()
    assert any("Exception on /boom" in line for line in worker.log)   # Flask logged it
