"""Seeds the fuzzers' corpora from the parser test corpus (tests/corpus).

    python fuzz/seed_corpus.py OUTDIR

writes OUTDIR/parser (request heads, valid and invalid), OUTDIR/chunked
(chunked bodies), OUTDIR/head (heads) and OUTDIR/python (heads, heads with chunked and
Content-Length bodies, two pipelined requests). Each file gets the leading
control bytes its harness reads first (see fuzz_*.c / fuzz_python.py).
Existing files are kept, so a corpus grown by earlier runs is reused. The
output directories are build products: never commit them (crash
reproducers belong in tests/corpus/fuzz/<harness>/, with a test).
"""
from __future__ import annotations

import hashlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
CRASHES = CORPUS / "fuzz"


def _put(d: pathlib.Path, data: bytes) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def seed(out: pathlib.Path) -> dict[str, int]:
    heads = [f.read_bytes() for sub in ("valid", "invalid")
             for f in sorted((CORPUS / sub).glob("*.http"))]
    bodies = [f.read_bytes() for f in sorted((CORPUS / "chunked").glob("*.body"))]
    chunked_head = (b"POST /upload?x=1 HTTP/1.1\r\nHost: example.com\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
    for h in heads:
        # max_headers selector: 100 (0xff) and 2 (0x02)
        _put(out / "parser", b"\xff" + h)
        _put(out / "parser", b"\x02" + h)
        _put(out / "python", b"\x00\x00" + h)
        # head: small output capacity (x8), max_body (x1000; 0xff: none)
        _put(out / "head", b"\x20\x01" + h)
        _put(out / "head", b"\xff\xff" + h)
    for b in bodies:
        _put(out / "chunked", b"\x00\x00" + b)
        _put(out / "chunked", b"\x07\x03" + b)
        _put(out / "python", b"\x00\x00" + chunked_head + b)
    _put(out / "python", b"\x00\x00POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
         b"helloGET /next HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n")
    _put(out / "python", b"\x00\x00GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
         b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")
    # Earlier crash reproducers, so every run re-checks them first.
    for kind in ("parser", "chunked", "head", "python"):
        for f in sorted((CRASHES / kind).glob("*")) if (CRASHES / kind).is_dir() else ():
            _put(out / kind, f.read_bytes())
    return {kind: len(list((out / kind).iterdir()))
            for kind in ("parser", "chunked", "head", "python")}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: seed_corpus.py OUTDIR")
    for kind, n in seed(pathlib.Path(sys.argv[1])).items():
        print(f"{kind}: {n} corpus files")
