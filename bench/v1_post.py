"""In-process timing of API v1's post reading as api/posts.py does it: the
strict msgspec reading, the lenient second reading when that refuses the
body (a tree without it refuses MIME-style bodies), then
check_response_cached; per post, best of 7, for a single-line ("clean") and
a MIME-style ("mime", 76-character lines) body of three sizes.

    PYTHONPATH=src python bench/v1_post.py
"""
from __future__ import annotations

import base64
import json
import timeit

import msgspec

from prack.protocol import messages
from prack.api import checks
decode = msgspec.json.Decoder(messages.PostedResponse).decode
reread = getattr(messages, "reread_posted_response", None)

def post(doc):
    try:
        m = decode(doc)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        if reread is None:
            return None
        m = reread(doc, exc)
    checks.check_response_cached(m.code, m.headers, "code")
    return m

ID = "0" * 32
for size in (13, 1024, 65536):
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    shapes = {"clean": base64.b64encode(body).decode(),
              "mime": base64.encodebytes(body).decode()}
    for name, text in shapes.items():
        doc = json.dumps({"identifier": ID, "code": 200,
                          "headers": {"Content-Type": "text/plain"}, "body": text}).encode()
        if post(doc) is None:
            print("%-6s %6d B: refused" % (name, size)); continue
        n = max(200, 200000 // max(size, 100))
        t = min(timeit.repeat(lambda: post(doc), number=n, repeat=7)) / n * 1e6
        print("%-6s %6d B: %8.2f us" % (name, size, t))
