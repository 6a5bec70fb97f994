"""End to end: API v1 (and v2 JSON) take the posts the original Prack's
clients send (issue 14). Each test has a worker post exactly one JSON shape,
written as that language writes it (Ruby's Base64.encode64, PHP's
json_encode of an integer and chunk_split), and checks the client's
response byte for byte. The worker sends a Date header and the server sends
no Server header, so the whole response is known in advance.

The Ruby and PHP workers run the installed runtimes; a missing one fails
the test, naming what to install (as tests/e2e/test_polyglot.py does).
"""
from __future__ import annotations

import base64
import json
import socket
import subprocess

import pytest

from test_api import api, pull
from test_polyglot import EXAMPLES_BY_ID, require

DATE = "Tue, 08 Dec 2026 01:00:00 GMT"
ID = "@ID@"          # where a posted text gets the pulled identifier


@pytest.fixture(scope="module")
def srv_settings() -> dict:
    return {"acceptors": 1, "api_poll_timeout": 5, "server_server_header": ""}


def ask(server, path: str = "/x") -> socket.socket:
    """A client with its request sent (Connection: close: the response ends
    at EOF, so every byte of it is compared)."""
    c = socket.create_connection((server.host, server.port), timeout=20)
    c.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    return c


def received(c: socket.socket) -> bytes:
    data = b""
    with c:
        while True:
            chunk = c.recv(65536)
            if not chunk:
                return data
            data += chunk


def expected(status: bytes, lines: list[bytes], body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nDate: " + DATE.encode() + b"\r\n"
            + b"".join(line + b"\r\n" for line in lines)
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)


def post_text(server, text: str, path: str = "/api/v1/response",
              ctype: str = "application/json"):
    """Pull the waiting request and post `text` (its @ID@ replaced) as is."""
    job = pull(server)
    ident = job["identifier"]
    return api(server, "POST", path, text.replace(ID, ident).encode(),
               {"Content-Type": ctype})


PAYLOAD = b"The quick brown fox jumps over the lazy dog.\n" * 4 + b"\x00\xfb\xff"


def b64_lines(data: bytes, width: int, end: str) -> str:
    text = base64.b64encode(data).decode()
    return "".join(text[i:i + width] + end for i in range(0, len(text), width))


# -- bodies -------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    pytest.param(base64.encodebytes(PAYLOAD).decode(), id="mime-76-lf"),   # Perl, Python
    pytest.param(b64_lines(PAYLOAD, 60, "\n"), id="ruby-encode64-60-lf"),
    pytest.param(b64_lines(PAYLOAD, 76, "\r\n"), id="php-chunk-split-crlf"),
    pytest.param(base64.b64encode(PAYLOAD).decode().rstrip("="), id="no-padding"),
    pytest.param(base64.urlsafe_b64encode(PAYLOAD).decode(), id="url-safe"),
    pytest.param(base64.b64encode(PAYLOAD).decode(), id="one-line"),
])
def test_body_shapes(srv, body):
    c = ask(srv)
    text = '{"identifier":"@ID@","code":200,"headers":{"Date":%s},"body":%s}' % (
        json.dumps(DATE), json.dumps(body))
    status, _, answer = post_text(srv, text)
    assert (status, answer) == (200, {"message": "thank you"})
    assert received(c) == expected(b"200 OK", [], PAYLOAD)


# -- codes and header values ------------------------------------------------------------

HEAD = '"Date":"%s"' % DATE


@pytest.mark.parametrize("text, status, lines", [
    pytest.param('{"identifier":"@ID@","code":"201","headers":{%s},"body":"b2s="}' % HEAD,
                 b"201 Created", [], id="code-as-string"),
    pytest.param('{"identifier":"@ID@","code":200,"headers":{%s,"X-Count":35,'
                 '"X-Ratio":1.5,"X-On":true,"X-Off":false},"body":"b2s="}' % HEAD,
                 b"200 OK", [b"X-Count: 35", b"X-Ratio: 1.5", b"X-On: true", b"X-Off: false"],
                 id="numbers-and-booleans"),
    pytest.param('{"identifier":"@ID@","code":200,"headers":{%s,"X-Gone":null,'
                 '"X-Kept":"yes"},"body":"b2s="}' % HEAD,
                 b"200 OK", [b"X-Kept: yes"], id="null-drops-one-field"),
    pytest.param('{"identifier":"@ID@","code":200,"headers":{%s,"X-Many":["a",2,true]},'
                 '"body":"b2s="}' % HEAD,
                 b"200 OK", [b"X-Many: a", b"X-Many: 2", b"X-Many: true"], id="array-of-scalars"),
    pytest.param('{"identifier":"@ID@","code":200,"headers":{%s,"x-MiXeD-case":"v"},'
                 '"body":"b2s="}' % HEAD,
                 b"200 OK", [b"x-MiXeD-case: v"], id="keys-keep-their-case"),
    pytest.param('{"identifier":"@ID@","code":200,"headers":{%s,"Content-length":35},'
                 '"body":"b2s="}' % HEAD,
                 b"200 OK", [], id="integer-content-length-replaced"),
])
def test_code_and_header_shapes(srv, text, status, lines):
    c = ask(srv)
    assert post_text(srv, text)[0] == 200
    assert received(c) == expected(status, lines, b"ok")


def test_post_on_the_pull_path_is_as_lenient(srv):
    """The original protocol posts to /api/v1/request."""
    c = ask(srv)
    text = '{"identifier":"@ID@","code":"200","headers":{%s,"X-N":7},"body":"b2s\\n"}' % HEAD
    assert post_text(srv, text, "/api/v1/request")[0] == 200
    assert received(c) == expected(b"200 OK", [b"X-N: 7"], b"ok")


@pytest.mark.parametrize("headers", [
    '{%s,"X-Count":35,"X-Gone":null,"X-On":true}' % HEAD,
    '[["Date","%s"],["X-Count",35],["X-Gone",null],["X-On",true]]' % DATE,
])
def test_v2_json_takes_the_same_values(srv, headers):
    c = ask(srv)
    ident = pull_v2(srv)
    text = '{"responses":[{"id":"%s","status":"200","headers":%s,"body":"b2s="}]}' % (
        ident, headers)
    status, _, answer = api(srv, "POST", "/api/v2/responses", text.encode(),
                            {"Content-Type": "application/json"})
    assert (status, answer) == (200, {"results": [{"id": ident, "status": "ok"}]})
    assert received(c) == expected(b"200 OK", [b"X-Count: 35", b"X-On: true"], b"ok")


def test_v2_json_stream_head_takes_the_same_values(srv):
    c = ask(srv)
    ident = pull_v2(srv)
    base = "/api/v2/requests/%s/" % ident
    head = '{"status":"200","headers":{%s,"X-N":5,"X-Gone":null,"X-On":false}}' % HEAD
    status, _, answer = api(srv, "POST", base + "head", head.encode(),
                            {"Content-Type": "application/json"})
    assert (status, answer) == (200, {"result": "ok"})
    assert api(srv, "POST", base + "body", b"chunk", {"Content-Type": "application/octet-stream"})[0] == 200
    assert api(srv, "POST", base + "end", b"{}", {"Content-Type": "application/json"})[0] == 200
    assert received(c) == (b"HTTP/1.1 200 OK\r\nDate: " + DATE.encode() + b"\r\nX-N: 5\r\n"
                           b"X-On: false\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
                           b"\r\n5\r\nchunk\r\n0\r\n\r\n")


def pull_v2(server) -> str:
    status, _, batch = api(server, "GET", "/api/v2/requests?max=1")
    assert status == 200 and len(batch["requests"]) == 1, batch
    return batch["requests"][0]["id"]


# -- still refused ---------------------------------------------------------------------

@pytest.mark.parametrize("headers, field", [
    ('{"X-A":"a\\rb"}', "headers.X-A"),
    ('{"X-A":[1,"a\\u0000b"]}', "headers.X-A"),
    ('{"Bad Name":null}', "not a valid header name"),
    ('{"X-A":{"n":1}}', "headers.X-A"),
    ('{"X-A":[[1]]}', "headers.X-A"),
])
def test_unsafe_values_still_refused(srv, headers, field):
    c = ask(srv)
    status, _, answer = post_text(
        srv, '{"identifier":"@ID@","code":200,"headers":%s,"body":"b2s"}' % headers)
    assert status == 400 and field in answer["error"], answer
    assert received(c).startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


@pytest.mark.parametrize("code", ['"1000"', "199", '"2OO"', "true"])
def test_bad_codes_still_refused(srv, code):
    c = ask(srv)
    status, _, answer = post_text(
        srv, '{"identifier":"@ID@","code":%s,"body":"b2s\\n"}' % code)
    assert status == 400 and answer["error"].startswith("code"), answer
    assert received(c).startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


def test_bad_base64_refused_naming_the_body(srv):
    c = ask(srv)
    status, _, answer = post_text(srv, '{"identifier":"@ID@","code":200,"body":"b2s$\\n"}')
    assert status == 400 and answer["error"].startswith("body: invalid base64"), answer
    assert received(c).startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


def test_missing_identifier_refused(srv):
    status, _, answer = api(srv, "POST", "/api/v1/response",
                            b'{"code":200,"body":"b2s\\n"}', {"Content-Type": "application/json"})
    assert status == 400 and "identifier" in answer["error"], answer


# -- workers in the languages that need the leniency --------------------------------------

RUBY = r'''
require "base64"
require "json"
require "net/http"

uri = URI(ARGV[0])
Net::HTTP.start(uri.hostname, uri.port) do |http|
  job = JSON.parse(http.request(Net::HTTP::Get.new("/api/v1/request")).body)
  body = "Hello from Ruby, in lines of sixty base64 characters.\n" * 3
  post = Net::HTTP::Post.new("/api/v1/response", "Content-Type" => "application/json")
  post.body = JSON.generate({
    "identifier" => job["identifier"], "code" => 200,
    "headers" => {"Date" => ARGV[1], "Content-Type" => "text/plain"},
    "body" => Base64.encode64(body)})
  res = http.request(post)
  print res.code, " ", res.body
end
'''

PHP = r'''<?php
$api = $argv[1];
$job = json_decode(file_get_contents("$api/api/v1/request"), true);
$body = str_repeat("Hello from PHP, chunk_split.\n", 3);
$post = json_encode([
    "identifier" => $job["identifier"], "code" => 200,
    "headers" => ["Date" => $argv[2], "Content-length" => strlen($body), "X-Cached" => false],
    "body" => chunk_split(base64_encode($body))]);
$ctx = stream_context_create(["http" => ["method" => "POST", "ignore_errors" => true,
    "header" => "Content-Type: application/json\r\n", "content" => $post]]);
$answer = file_get_contents("$api/api/v1/response", false, $ctx);
echo explode(" ", $http_response_header[0])[1], " ", $answer;
'''


def run_worker(server, argv: list[str]) -> str:
    out = subprocess.run(argv + [server.api, DATE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_ruby_worker_posting_encode64(srv, tmp_path):
    require(EXAMPLES_BY_ID["ruby"])
    script = tmp_path / "worker.rb"
    script.write_text(RUBY)
    c = ask(srv)
    assert run_worker(srv, ["ruby", str(script)]) == '200 {"message":"thank you"}'
    body = b"Hello from Ruby, in lines of sixty base64 characters.\n" * 3
    assert received(c) == expected(b"200 OK", [b"Content-Type: text/plain"], body)


def test_php_worker_posting_an_integer_content_length(srv, tmp_path):
    require(EXAMPLES_BY_ID["php"])
    script = tmp_path / "worker.php"
    script.write_text(PHP)
    c = ask(srv)
    assert run_worker(srv, ["php", str(script)]) == '200 {"message":"thank you"}'
    body = b"Hello from PHP, chunk_split.\n" * 3
    assert received(c) == expected(b"200 OK", [b"X-Cached: false"], body)
