"""The request list the adapters are checked with, and the comparison."""
from __future__ import annotations

import http.client
import json

BOUNDARY = "prackboundary1234"
UPLOAD = bytes(range(256)) * 300


def _multipart() -> bytes:
    parts = [
        b"--%s\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n" % BOUNDARY.encode(),
        b"--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" % BOUNDARY.encode() + UPLOAD + b"\r\n",
        b"--%s--\r\n" % BOUNDARY.encode(),
    ]
    return b"".join(parts)


# (method, path, body, headers)
REQUESTS = [
    ("GET", "/", None, {}),
    ("GET", "/items/42?q=hello%20world", None, {}),
    ("GET", "/items/nope", None, {}),
    ("GET", "/no/such/page", None, {}),
    ("POST", "/echo-json", json.dumps({"a": [1, 2], "b": "é"}).encode(),
     {"Content-Type": "application/json"}),
    ("POST", "/form", b"name=Ada&tag=x&tag=y&sym=%26%3D", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("POST", "/upload", _multipart(), {"Content-Type": "multipart/form-data; boundary=" + BOUNDARY}),
    ("GET", "/cookies/set", None, {}),
    ("GET", "/cookies", None, {"Cookie": "a=1; b=two; c=three"}),
    ("GET", "/go", None, {}),
    ("GET", "/boom", None, {}),
    ("GET", "/forbidden", None, {}),
    ("PUT", "/method", b"x" * 1000, {"Content-Type": "text/plain"}),
    ("DELETE", "/method", None, {}),
    ("POST", "/", b"", {}),
    ("GET", "/path/a%20b/c", None, {}),
    ("GET", "/stream", None, {}),
    ("GET", "/empty", None, {}),
    ("HEAD", "/", None, {}),
]

# Framing and per-server fields; everything else must match.
_IGNORED = {"date", "server", "connection", "keep-alive", "transfer-encoding", "content-length"}


def fetch(port: int, method: str, path: str, body, headers) -> tuple[int, list, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        hdrs = resp.getheaders()
    finally:
        conn.close()
    length = [v for n, v in hdrs if n.lower() == "content-length"]
    if length and method != "HEAD":
        assert int(length[0]) == len(data)
    # Allow lists a set (its order varies with the process's hash seed).
    kept = sorted((n.lower(), ", ".join(sorted(v.split(", "))) if n.lower() == "allow" else v)
                  for n, v in hdrs if n.lower() not in _IGNORED)
    return resp.status, kept, data


def compare(prack_port: int, other_port: int, requests=REQUESTS) -> int:
    """Send each request to both servers; assert the same answers."""
    for method, path, body, headers in requests:
        got = fetch(prack_port, method, path, body, headers)
        want = fetch(other_port, method, path, body, headers)
        assert got == want, "%s %s:\n prack: %r\n other: %r" % (method, path, got, want)
    return len(requests)
