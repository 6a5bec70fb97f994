"""Helpers for test_parser.py and test_chunked.py.

- corpus loading (tests/corpus/, format described in corpus/make_corpus.py);
- cffi wrappers around prk_parse_request / prk_decode_chunked that place the
  input right before a PROT_NONE page, so reading or writing one byte past
  `len` crashes the test run instead of passing silently;
- small reference implementations of the same rules, written from the RFC
  text in a different style (recursive descent, Python sets), used to
  cross-check the C code on mutated inputs.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import pathlib
from dataclasses import dataclass

from prack._native import ffi, lib

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
DEFAULT_MAX_HEADERS = 100

CODES: dict[str, int] = {n: getattr(lib, n) for n in dir(lib)
                         if n.startswith("PRK_E_")}
CODES["PRK_INCOMPLETE"] = lib.PRK_INCOMPLETE
CODE_NAMES = {v: k for k, v in CODES.items()}
HEAD_ERRORS = sorted(n for n in CODES if n.startswith("PRK_E_")
                     and not n.startswith("PRK_E_CHUNK") and n != "PRK_E_TRAILER")
CHUNK_ERRORS = sorted(n for n in CODES if n.startswith("PRK_E_CHUNK")
                      or n == "PRK_E_TRAILER")
# Not exported through the cffi cdef; test_chunked checks them against
# parser.h.
PRK_CHUNK_MAX_EXT = 4096
PRK_CHUNK_MAX_TRAILER = 8192
FORMS = {"ORIGIN": lib.PRK_FORM_ORIGIN, "ABSOLUTE": lib.PRK_FORM_ABSOLUTE,
         "AUTHORITY": lib.PRK_FORM_AUTHORITY, "ASTERISK": lib.PRK_FORM_ASTERISK}
FORM_NAMES = {v: k for k, v in FORMS.items()}
L1 = "latin-1"


def name_of(rc: int) -> str | int:
    """PRK_* name for results <= 0, the byte count otherwise."""
    return CODE_NAMES.get(rc, rc) if rc <= 0 else rc


# --------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    exp: dict

    def __str__(self) -> str:  # used as the pytest id
        return self.name


def load(kind: str) -> list[Case]:
    suffix = ".body" if kind == "chunked" else ".http"
    cases = []
    for f in sorted((CORPUS / kind).glob("*" + suffix)):
        exp = json.loads(f.with_suffix(".json").read_text("ascii"))
        cases.append(Case(f.stem, f.read_bytes(), exp))
    return cases


# --------------------------------------------------------------------------
# guard page
# --------------------------------------------------------------------------
class GuardedBuffer:
    """A writable region immediately followed by a PROT_NONE page."""

    def __init__(self, size: int = 1 << 16) -> None:
        page = mmap.PAGESIZE
        self.size = -(-size // page) * page
        self.map = mmap.mmap(-1, self.size + page)
        self.base = ffi.from_buffer(self.map)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.mprotect.restype = ctypes.c_int
        addr = int(ffi.cast("uintptr_t", self.base)) + self.size
        if libc.mprotect(addr, page, 0) != 0:  # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect failed")

    def place(self, data: bytes):
        """Copy data so that it ends at the guard page; return a char *."""
        n = len(data)
        if n > self.size:
            raise ValueError("input larger than the guarded region")
        start = self.size - n
        self.map[start:self.size] = data
        return self.base + start

    def bytes_at(self, ptr, n: int) -> bytes:
        return ffi.buffer(ptr, n)[:]


GUARD = GuardedBuffer()


# --------------------------------------------------------------------------
# cffi wrappers
# --------------------------------------------------------------------------
_REQ = ffi.new("prk_request *")
_HDRS: dict[int, object] = {}


def _headers_array(max_headers: int):
    arr = _HDRS.get(max_headers)
    if arr is None:
        arr = _HDRS[max_headers] = ffi.new("prk_header[]", max(max_headers, 1))
    return arr


def parse_rc(data: bytes, max_headers: int = DEFAULT_MAX_HEADERS) -> int:
    """Only the return code (fast path for prefix loops)."""
    return lib.prk_parse_request(GUARD.place(data), len(data), _REQ,
                                 _headers_array(max_headers), max_headers)


def parse(data: bytes, max_headers: int = DEFAULT_MAX_HEADERS):
    """(rc, fields) where fields is a dict shaped like the valid/*.json files
    (without head_len), or None when rc <= 0."""
    hdrs = _headers_array(max_headers)
    rc = lib.prk_parse_request(GUARD.place(data), len(data), _REQ, hdrs,
                               max_headers)
    if rc <= 0:
        return rc, None
    r = _REQ

    def s(off: int, n: int) -> str:
        assert 0 <= off and off + n <= rc, "slice outside the head"
        return data[off:off + n].decode(L1)

    assert r.num_headers <= max_headers
    return rc, {
        "method": s(r.method_off, r.method_len),
        "target": s(r.target_off, r.target_len),
        "form": FORM_NAMES[r.target_form],
        "version": [r.version_major, r.version_minor],
        "headers": [[s(h.name_off, h.name_len), s(h.value_off, h.value_len)]
                    for h in (hdrs[i] for i in range(r.num_headers))],
    }


@dataclass
class ChunkResult:
    rc: int                 # final return code (consumed count or PRK_*)
    decoded: bytes          # concatenation of every call's decoded output
    consumed: int           # total input bytes consumed over all calls
    leftover: bytes         # input bytes after the body (complete bodies)


def decode_pieces(pieces: list[bytes]) -> ChunkResult:
    """Feed pieces one after the other to one decoder, as a connection
    would. Checks on the way that bytes after the body are left untouched
    and that every call's output length is sane."""
    dec = ffi.new("prk_chunked *")
    out_len = ffi.new("size_t *")
    decoded = []
    consumed = 0
    for i, piece in enumerate(pieces):
        buf = GUARD.place(piece)
        rc = lib.prk_decode_chunked(dec, buf, len(piece), out_len)
        n = out_len[0]
        if rc >= 0:
            assert rc <= len(piece) and n <= rc, (rc, n, len(piece))
            decoded.append(GUARD.bytes_at(buf, n))
            tail = GUARD.bytes_at(buf + rc, len(piece) - rc)
            assert tail == piece[rc:], "bytes after the body were modified"
            return ChunkResult(rc, b"".join(decoded), consumed + rc,
                               tail + b"".join(pieces[i + 1:]))
        if rc == lib.PRK_INCOMPLETE:
            assert n <= len(piece)
            decoded.append(GUARD.bytes_at(buf, n))
            consumed += len(piece)
            continue
        assert n == 0
        return ChunkResult(rc, b"".join(decoded), consumed, b"")
    return ChunkResult(lib.PRK_INCOMPLETE, b"".join(decoded), consumed, b"")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(cuts)
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


# --------------------------------------------------------------------------
# reference implementations
# --------------------------------------------------------------------------
ALPHA = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
DIGIT = set(b"0123456789")
TCHAR = ALPHA | DIGIT | set(b"!#$%&'*+-.^_`|~")          # RFC 9110 5.6.2
VCHAR = set(range(0x21, 0x7F))                            # RFC 5234 B.1
OBS_TEXT = set(range(0x80, 0x100))                        # RFC 9110 5.5
WS = set(b" \t")
FIELD_VCHAR = VCHAR | OBS_TEXT | WS                       # field-value bytes
HEXDIG = DIGIT | set(b"abcdefABCDEF")
SCHEME = ALPHA | DIGIT | set(b"+-.")                      # RFC 3986 3.1
QDTEXT = WS | {0x21} | set(range(0x23, 0x5C)) | set(range(0x5D, 0x7F)) | OBS_TEXT
CR, LF, SP = 13, 10, 32


class _Stop(Exception):
    def __init__(self, code: str) -> None:
        self.code = code


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.d, self.i = data, 0

    def peek(self, k: int = 0) -> int:
        if self.i + k >= len(self.d):
            raise _Stop("PRK_INCOMPLETE")
        return self.d[self.i + k]

    def take_while(self, allowed: set) -> bytes:
        j = self.i
        while j < len(self.d) and self.d[j] in allowed:
            j += 1
        out, self.i = self.d[self.i:j], j
        return out

    def crlf(self) -> None:
        """At a CR or LF that must start a CRLF."""
        if self.peek() == LF:
            raise _Stop("PRK_E_BARE_LF")
        if self.peek(1) != LF:
            raise _Stop("PRK_E_BARE_CR")
        self.i += 2


def form_of(target: bytes) -> str:
    if target[:1] == b"/":
        return "ORIGIN"
    if target == b"*":
        return "ASTERISK"
    if target[:1] and target[0] in ALPHA:
        k = 1
        while k < len(target) and target[k] in SCHEME:
            k += 1
        if target[k:k + 3] == b"://":
            return "ABSOLUTE"
    return "AUTHORITY"


def ref_parse(data: bytes, max_headers: int = DEFAULT_MAX_HEADERS):
    """Same contract as parse(): (rc, fields or None), rc by name for errors."""
    r = _Reader(data)
    try:
        while r.peek() in (CR, LF):               # RFC 9112 2.2
            r.crlf()
        method = r.take_while(TCHAR)
        c = r.peek()
        if c in (CR, LF):
            raise _Stop("PRK_E_BAD_REQUEST_LINE")
        if c != SP:
            raise _Stop("PRK_E_BAD_METHOD")
        if not method:
            raise _Stop("PRK_E_BAD_REQUEST_LINE")
        r.i += 1
        target = r.take_while(VCHAR)
        c = r.peek()
        if c in (CR, LF):
            raise _Stop("PRK_E_BAD_REQUEST_LINE")
        if c != SP:
            raise _Stop("PRK_E_BAD_TARGET")
        if not target:
            raise _Stop("PRK_E_BAD_REQUEST_LINE")
        r.i += 1
        if r.peek() == SP:
            raise _Stop("PRK_E_BAD_REQUEST_LINE")
        for k, want in enumerate(b"HTTP/#.#"):
            c = r.peek(k)
            if not (c in DIGIT if want == ord("#") else c == want):
                raise _Stop("PRK_E_BAD_VERSION")
        version = [data[r.i + 5] - 48, data[r.i + 7] - 48]
        r.i += 8
        c = r.peek()
        if c not in (CR, LF):
            raise _Stop("PRK_E_BAD_REQUEST_LINE" if c == SP else "PRK_E_BAD_VERSION")
        r.crlf()
        headers = []
        while r.peek() not in (CR, LF):
            if r.peek() in WS:
                raise _Stop("PRK_E_OBS_FOLD")
            if len(headers) >= max_headers:
                raise _Stop("PRK_E_TOO_MANY_HEADERS")
            name = r.take_while(TCHAR)
            c = r.peek()
            if c != ord(":") or not name:
                if name and c in WS:
                    r.take_while(WS)
                    if r.peek() == ord(":"):
                        raise _Stop("PRK_E_WS_BEFORE_COLON")
                raise _Stop("PRK_E_BAD_HEADER_NAME")
            r.i += 1
            value = r.take_while(FIELD_VCHAR)
            if r.peek() not in (CR, LF):
                raise _Stop("PRK_E_BAD_HEADER_VALUE")
            r.crlf()
            headers.append([name.decode(L1), value.strip(b" \t").decode(L1)])
        r.crlf()
    except _Stop as stop:
        return stop.code, None
    return r.i, {"method": method.decode(L1), "target": target.decode(L1),
                 "form": form_of(target), "version": version, "headers": headers}


def ref_decode_chunked(data: bytes):
    """(rc, decoded) for the whole input: rc is the consumed count, or a
    PRK_* name. Recursive descent over RFC 9112 7.1 with the limits of
    parser.h (16 hex digits, 2^63-1, PRK_CHUNK_MAX_EXT/TRAILER)."""
    r = _Reader(data)
    out = []

    def expect(ch: int, code: str) -> None:
        if r.peek() != ch:
            raise _Stop(code)
        r.i += 1

    def ext_part(start: int) -> None:
        # counts every byte of the extension region (not the CR)
        if r.i - start > PRK_CHUNK_MAX_EXT:
            raise _Stop("PRK_E_CHUNK_EXT")

    def chunk_ext(start: int) -> None:
        """*( BWS ";" BWS name [ BWS "=" BWS value ] ), r at the first byte
        after the size; stops with r at the CR."""
        while True:
            ws_start = r.i
            r.take_while(WS)
            ext_part(start)
            c = r.peek()
            if c == CR and r.i == ws_start:
                return
            if c != ord(";"):
                raise _Stop("PRK_E_CHUNK_EXT")
            r.i += 1
            r.take_while(WS)
            ext_part(start)
            if not r.take_while(TCHAR):
                r.peek()
                raise _Stop("PRK_E_CHUNK_EXT")
            ext_part(start)
            save = r.i
            r.take_while(WS)
            ext_part(start)
            if r.peek() != ord("="):
                r.i = save
                continue
            r.i += 1
            r.take_while(WS)
            ext_part(start)
            if r.peek() == ord('"'):
                r.i += 1
                while True:
                    ext_part(start)
                    c = r.peek()
                    r.i += 1
                    ext_part(start)
                    if c == ord('"'):
                        break
                    if c == ord("\\"):
                        if r.peek() not in FIELD_VCHAR:
                            r.i += 1
                            ext_part(start)
                            raise _Stop("PRK_E_CHUNK_EXT")
                        r.i += 1
                    elif c not in QDTEXT:
                        raise _Stop("PRK_E_CHUNK_EXT")
                ext_part(start)
            else:
                if not r.take_while((VCHAR | OBS_TEXT) - {ord(";"), ord('"')}):
                    r.peek()
                    raise _Stop("PRK_E_CHUNK_EXT")
                ext_part(start)

    try:
        while True:
            digits = r.take_while(HEXDIG)
            if len(digits) > 16:
                raise _Stop("PRK_E_CHUNK_SIZE")
            if not digits or int(digits, 16) > 2**63 - 1:
                r.peek()
                raise _Stop("PRK_E_CHUNK_SIZE")
            size = int(digits, 16)
            c = r.peek()
            if c == CR:
                r.i += 1
                expect(LF, "PRK_E_CHUNK_SIZE")
            elif c in WS or c == ord(";"):
                chunk_ext(r.i)
                r.i += 1
                expect(LF, "PRK_E_CHUNK_EXT")
            else:
                raise _Stop("PRK_E_CHUNK_SIZE")
            if size == 0:
                break
            piece = data[r.i:r.i + size]
            out.append(piece)
            r.i += len(piece)
            if len(piece) < size:
                raise _Stop("PRK_E_INCOMPLETE_DATA")
            expect(CR, "PRK_E_CHUNK_DATA_END")
            expect(LF, "PRK_E_CHUNK_DATA_END")
        start = r.i

        def tbyte() -> int:
            c = r.peek()
            r.i += 1
            if r.i - start > PRK_CHUNK_MAX_TRAILER:
                raise _Stop("PRK_E_TRAILER")
            return c

        while True:
            c = tbyte()
            if c == CR:
                if tbyte() != LF:
                    raise _Stop("PRK_E_TRAILER")
                return r.i, b"".join(out)
            if c not in TCHAR:
                raise _Stop("PRK_E_TRAILER")
            while (c := tbyte()) in TCHAR:
                pass
            if c != ord(":"):
                raise _Stop("PRK_E_TRAILER")
            while (c := tbyte()) in FIELD_VCHAR:
                pass
            if c != CR or tbyte() != LF:
                raise _Stop("PRK_E_TRAILER")
    except _Stop as stop:
        code = stop.code
        if code == "PRK_E_INCOMPLETE_DATA":
            code = "PRK_INCOMPLETE"
        return code, b"".join(out)
