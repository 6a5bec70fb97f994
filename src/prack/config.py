"""Prack configuration: one table of settings, everything else derived from it.

Every setting is declared exactly once, in ``SETTINGS`` below.  From that
table this module builds

* the msgspec Struct types that check a TOML file (unknown keys and wrongly
  typed values are refused) and the frozen ``Config`` object handed to the
  rest of the server,
* the environment variable names (``PRACK_<SECTION>_<KEY>``),
* the command-line flags (``prack.cli`` reads ``Setting.flags``),
* ``dump_toml()`` (the ``--check`` output), ``example_toml()``
  (examples/prack.toml) and ``markdown()`` (docs/configuration.md).

Values come from four layers, later ones winning: built-in defaults, the
TOML file, the environment, the command line.  Any bad value raises
``ConfigError`` with a one-line message that names where the value came
from, which setting it is, and what is wrong with it.

``python -m prack.config --markdown`` prints docs/configuration.md and
``python -m prack.config --example`` prints examples/prack.toml.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from prack.errors import ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "ENV_PREFIX",
    "CONFIG_ENV",
    "SECTIONS",
    "SETTINGS",
    "Setting",
    "dump_toml",
    "example_toml",
    "format_size",
    "load",
    "markdown",
    "parse_address",
    "parse_size",
]

ENV_PREFIX = "PRACK_"
#: Names the configuration file; read by the CLI, never by ``load()``.
CONFIG_ENV = "PRACK_CONFIG"

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_SIZE_RE = re.compile(r"\s*(\d+)\s*([kKmMgG]?)\s*")
_INT_RE = re.compile(r"\s*[+-]?\d+\s*")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# ---------------------------------------------------------------------------
# The declarations
# ---------------------------------------------------------------------------

#: Section name -> one-line description (used in the docs and example file).
SECTIONS: dict[str, str] = {
    "server": "The public HTTP listener and the acceptor processes.",
    "api": "The worker API that application workers pull requests from.",
    "limits": "Request size limits; a request over a limit gets the status shown.",
    "timeouts": "Timeouts, in seconds.",
    "static": "Static files served by the acceptors themselves, without a worker.",
    "websocket": "WebSocket connections a worker accepted (status 101).",
    "logging": "Logging.",
}


@dataclass(frozen=True)
class Setting:
    """One configuration setting.

    ``kind`` is one of ``address``, ``int``, ``str``, ``header`` (a string
    sent as an HTTP header value), ``size``, ``duration``, ``choice``,
    ``bool``.  ``min``/``max`` bound ints, sizes and durations
    (inclusive; a duration without an explicit ``min`` must be > 0).
    ``flags`` are the command-line option names (a bool setting gives one
    ``--on/--off`` pair).
    """

    section: str
    key: str
    kind: str
    default: Any
    help: str
    flags: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``section.key``, the name used in files, messages and flag dicts."""
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        """The environment variable that overrides this setting."""
        return f"{ENV_PREFIX}{self.section}_{self.key}".upper()

    @property
    def long_flag(self) -> str | None:
        """The first long option name, e.g. ``--bind`` (``--access-log``)."""
        for flag in self.flags:
            if flag.startswith("--"):
                return flag.split("/")[0]
        return None

    @property
    def kind_impl(self) -> _Kind:
        return _KINDS[self.kind]

    def check(self, value: Any) -> Any:
        """Validate an already typed (or, for sizes, suffixed) value and return
        the stored form.  Raises ValueError whose text is the reason."""
        return self.kind_impl.check(self, value)

    def from_text(self, text: str) -> Any:
        """Parse a value given as text (environment, command line)."""
        return self.check(self.kind_impl.parse_text(self, text))

    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        return self.kind_impl.expected(self)


SETTINGS: tuple[Setting, ...] = (
    # -- server ------------------------------------------------------------
    Setting(
        "server", "bind", "address", "127.0.0.1:8080",
        "Address of the public HTTP listener, HOST:PORT (IPv6 as [::1]:8080; "
        "port 0 picks any free port).",
        flags=("-b", "--bind"),
    ),
    Setting(
        "server", "acceptors", "int", 0,
        "Number of acceptor processes; 0 means one per CPU available.",
        flags=("-a", "--acceptors"), min=0, max=256,
    ),
    Setting(
        "server", "backlog", "int", 1024,
        "Listen backlog of the public socket: where new connections wait "
        "while every acceptor is at max_connections.",
        min=1, max=65535,
    ),
    Setting(
        "server", "max_connections", "int", 1024,
        "Open client connections allowed per acceptor; a full acceptor "
        "stops accepting, so another one takes new connections, and with "
        "every acceptor full they wait in the listen backlog.",
        min=1, max=1_000_000,
    ),
    Setting(
        "server", "runtime_dir", "str", "",
        "Directory for sockets and shared-memory bookkeeping; empty means a "
        "fresh private directory under $XDG_RUNTIME_DIR or the system temp "
        "directory, removed at exit.",
    ),
    Setting(
        "server", "server_header", "header", "Prack",
        "Value of the Server response header; empty leaves the header out.",
    ),
    Setting(
        "server", "pidfile", "str", "",
        "File the master writes its PID to once ready (empty: none). During "
        "a USR2 upgrade it is never missing: it names the old master until the "
        "new one, once ready, renames its own over it; the old master's PID is "
        "also in <pidfile>.oldbin meanwhile. Each is removed by its master at exit.",
        flags=("--pidfile",),
    ),
    Setting(
        "server", "heartbeat_timeout", "duration", 30.0,
        "A child process that has not run its event loop for this long is "
        "considered hung: the master kills it (SIGKILL) and starts another. "
        "Children beat about once a second, so keep it well above that.",
        min=2, max=3600,
    ),
    Setting(
        "server", "reexec", "choice", "auto",
        "How SIGUSR2/SIGHUP start the new generation: spawn (a new master "
        "process, which reports ready before the old one retires), in-place "
        "(the master execs itself and keeps its PID: for a container's init "
        "behind tini, or a service manager that must keep tracking one PID), "
        "auto (in-place when the master is PID 1, else spawn).",
        choices=("auto", "spawn", "in-place"),
    ),
    # -- api -------------------------------------------------------------
    Setting(
        "api", "bind", "address", "127.0.0.1:4242",
        "Address of the worker API listener, HOST:PORT.",
        flags=("--api-bind",),
    ),
    Setting(
        "api", "poll_timeout", "duration", 5.0,
        "How long GET /api/v1/request waits for a request before answering "
        "empty; 0 answers at once.",
        min=0, max=300,
    ),
    Setting(
        "api", "idle_timeout", "duration", 0.0,
        "A worker connection on the API port with no call in progress for "
        "this long is closed (workers reconnect, as HTTP keep-alive clients "
        "do); a long poll in progress is never idle. 0 means 2 * "
        "poll_timeout + 60 (70 seconds with the defaults).",
        min=0, max=86400,
    ),
    Setting(
        "api", "max_connections", "int", 1024,
        "Worker connections one API process keeps open. Near it, the "
        "longest-idle ones (never one with a call in progress) are closed to "
        "make room; with none idle, new connections wait in the listen "
        "backlog. The API process raises its open-file limit to fit, and "
        "keeps fewer when the hard limit is lower.",
        min=16, max=1_000_000,
    ),
    Setting(
        "api", "max_request_size", "size", "32M",
        "Largest request body the API accepts from a worker (a posted response "
        "carries its body base64-encoded inside JSON).",
        min=1024,
    ),
    # -- limits ----------------------------------------------------------
    Setting(
        "limits", "max_body_size", "size", "1M",
        "Largest request body accepted; larger gets 413 (before the body is "
        "read when Content-Length says so).",
        min=0,
    ),
    Setting(
        "limits", "inline_body_size", "size", "1M",
        "Largest request body carried in the shared-memory ring with its "
        "request. A larger one (up to max_body_size) is written to a spool "
        "file in the runtime directory as it arrives, and workers read it "
        "with GET /api/v2/requests/{id}/input.",
        min=0,
    ),
    Setting(
        "limits", "max_header_size", "size", "32k",
        "Largest request head (request line plus header fields); larger "
        "gets 431.",
        min=1024,
    ),
    Setting(
        "limits", "max_request_line", "size", "8k",
        "Longest request line; longer gets 414.",
        min=256,
    ),
    Setting(
        "limits", "max_headers", "int", 100,
        "Most header fields in one request; more gets 431.",
        min=1, max=1000,
    ),
    Setting(
        "limits", "max_response_header_size", "size", "64k",
        "Largest header section a worker may give a response (its fields as "
        "Prack writes them, one \"Name: value\" line each, after the fields "
        "Prack drops); larger: the client gets 502 and the worker 400. It "
        "plays the part of nginx's proxy_buffer_size: one response head "
        "taken from upstream.",
        min=1024,
    ),
    Setting(
        "limits", "max_pipelined", "int", 16,
        "Complete requests a connection may have waiting behind the one in "
        "flight (HTTP/1.1 pipelining); beyond it, or beyond max_header_size "
        "buffered bytes, the acceptor stops reading that connection until its "
        "turn comes.",
        min=1, max=1000,
    ),
    Setting(
        "limits", "stream_buffer", "size", "256k",
        "Bytes of a streamed response an acceptor holds for a client that "
        "reads slower than the worker writes; past it, the worker's next "
        "chunk is acknowledged only as the client catches up.",
        min=4096,
    ),
    Setting(
        "limits", "ring_size", "size", "8M",
        "Shared-memory ring per acceptor; must be at least "
        "2 * (min(max_body_size, inline_body_size) + 2 * max_header_size) + 64k.",
        min=65536,
    ),
    # -- timeouts --------------------------------------------------------
    Setting(
        "timeouts", "header_timeout", "duration", 60.0,
        "Time allowed to receive a complete request head.",
    ),
    Setting(
        "timeouts", "body_timeout", "duration", 60.0,
        "Time allowed between two reads of a request body.",
    ),
    Setting(
        "timeouts", "min_body_rate", "size", "1k",
        "Slowest average rate, in bytes per second, at which a request body "
        "may arrive once it has been arriving for 5 seconds; a slower client "
        "gets 408. 0 turns the check off (body_timeout still applies).",
        min=0,
    ),
    Setting(
        "timeouts", "keepalive_timeout", "duration", 75.0,
        "How long an idle keep-alive connection is kept open.",
    ),
    Setting(
        "timeouts", "send_timeout", "duration", 60.0,
        "Time allowed between two writes to a slow client.",
    ),
    Setting(
        "timeouts", "queue_timeout", "duration", 30.0,
        "A request no worker pulled within this time gets 504.",
    ),
    Setting(
        "timeouts", "response_timeout", "duration", 60.0,
        "A pulled request whose response has not arrived within this time "
        "gets 504.",
    ),
    Setting(
        "timeouts", "stream_idle_timeout", "duration", 300.0,
        "A streamed response (or server-sent events) whose worker sends "
        "nothing for this long is cut off: the client's response ends "
        "incomplete and the worker's next call gets 410. Keep-alive "
        "comments do not count as activity. A WebSocket whose worker "
        "fetches none of the events waiting for it (limits.stream_buffer "
        "full) for this long is closed with 1011.",
        min=1, max=86400,
    ),
    Setting(
        "timeouts", "stream_max_duration", "duration", 3600.0,
        "Longest a streamed response may last from its head; then it is cut "
        "off as for stream_idle_timeout. 0 means no limit. Streams are "
        "exempt from response_timeout once their head is sent.",
        min=0, max=604800,
    ),
    Setting(
        "timeouts", "sse_keepalive", "duration", 15.0,
        "A text/event-stream response silent for this long gets a comment "
        "line (a lone colon), which keeps proxies and clients from timing "
        "it out. 0 turns it off.",
        min=0, max=3600,
    ),
    Setting(
        "timeouts", "graceful_timeout", "duration", 30.0,
        "How long a graceful stop waits for requests in flight.",
    ),
    # -- static ----------------------------------------------------------
    Setting(
        "static", "root", "str", "",
        "Directory whose files the acceptors serve themselves under "
        "static.prefix (sendfile, ETag/Last-Modified, 304, Range); empty "
        "turns static serving off and every request goes to the workers.",
    ),
    Setting(
        "static", "prefix", "urlprefix", "/static/",
        "URL path prefix mapped to static.root; requests under it never "
        "reach a worker.",
    ),
    Setting(
        "static", "index", "str", "index.html",
        "File served for a request naming a directory (with a trailing "
        "slash); empty means a directory gives 404.",
    ),
    Setting(
        "static", "cache_control", "header", "",
        "Cache-Control value sent with static files; empty sends none.",
    ),
    # -- websocket -------------------------------------------------------
    Setting(
        "websocket", "max_message_size", "size", "1M",
        "Largest message a client may send, after reassembling its "
        "fragments; a larger one closes the connection with code 1009.",
        min=125,
    ),
    Setting(
        "websocket", "ping_interval", "duration", 30.0,
        "A WebSocket silent for this long gets a ping from Prack; a client "
        "that then stays silent as long again is dropped (the worker gets "
        "a close event with code 1006). 0 turns pings off.",
        min=0, max=3600,
    ),
    # -- logging ---------------------------------------------------------
    Setting(
        "logging", "level", "choice", "info",
        "Least severe log level written.",
        flags=("--log-level",), choices=("debug", "info", "warning", "error"),
    ),
    Setting(
        "logging", "access_log", "bool", False,
        "Write one log line per request.",
        flags=("--access-log/--no-access-log",),
    ),
)

#: ``"section.key"`` -> Setting
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
#: ``"PRACK_SECTION_KEY"`` -> Setting
BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}


# ---------------------------------------------------------------------------
# Value helpers
# ---------------------------------------------------------------------------


def _show(value: Any) -> str:
    """Render a value the user gave, the way they would write it in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def _num(x: float) -> str:
    """A bound for messages: 5 rather than 5.0."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def format_size(n: int) -> str:
    """Bytes in the shortest exact suffixed form: 1048576 -> "1M"."""
    for suffix in ("G", "M", "k"):
        unit = _UNITS[suffix.lower()]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def _bytes(n: int) -> str:
    """``8388608 bytes (8M)`` or ``1000 bytes``, for messages."""
    short = format_size(n)
    return f"{n} bytes ({short})" if short != str(n) else f"{n} bytes"


def parse_size(value: int | str) -> int:
    """``1048576``, ``"1048576"``, ``"1M"``, ``"32k"`` -> bytes (1k = 1024).
    Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("negative size")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2).lower()]
    raise ValueError("not a size")


_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ``("127.0.0.1", 8080)``; ``"[::1]:80"`` ->
    ``("::1", 80)``.  Port 0 means any free port.  Raises ValueError whose
    text is a reason fit for a ConfigError message."""
    if not isinstance(text, str):
        raise ValueError(f"expected HOST:PORT, got {_show(text)}")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {_show(text)}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(
            f"expected HOST:PORT with a port from 0 to 65535, got {_show(text)}"
        )
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(
                f"expected HOST:PORT with a valid IPv6 address in brackets, "
                f"got {_show(text)}"
            ) from None
        return host[1:-1], port
    if ":" in host:
        raise ValueError(
            f"expected HOST:PORT with an IPv6 host in brackets like [::1]:8080, "
            f"got {_show(text)}"
        )
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"expected HOST:PORT with a valid IPv4 address, got {_show(text)}"
            ) from None
    elif not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(
            f"expected HOST:PORT with a valid host name, got {_show(text)}"
        )
    return host, port


# ---------------------------------------------------------------------------
# Kinds: how each sort of value is typed, parsed, checked and shown
# ---------------------------------------------------------------------------


class _Kind:
    #: type accepted in a TOML file (before checking)
    raw_type: Any = str
    #: name in the docs' type column
    doc_name = "string"
    #: metavar on the command line
    metavar = "TEXT"

    def stored_type(self, s: Setting) -> Any:
        return self.raw_type

    def parse_text(self, s: Setting, text: str) -> Any:
        return text

    def check(self, s: Setting, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(self.fail(s, value))
        return value

    def expected(self, s: Setting) -> str:
        return "a string"

    def fail(self, s: Setting, value: Any) -> str:
        return f"expected {s.expected()}, got {_show(value)}"

    def doc_type(self, s: Setting) -> str:
        return self.doc_name

    def show_default(self, s: Setting) -> str:
        """The declared default as one would write it in TOML."""
        return _show(s.default)

    def to_toml(self, s: Setting, value: Any) -> str:
        return _show(value)


class _Str(_Kind):
    def check(self, s: Setting, value: Any) -> Any:
        value = super().check(s, value)
        if "\0" in value:
            raise ValueError(f"expected a string without NUL, got {_show(value)}")
        return value


class _Header(_Kind):
    """Text sent verbatim as an HTTP header value."""

    def check(self, s: Setting, value: Any) -> Any:
        value = super().check(s, value)
        if not all(c == "\t" or " " <= c <= "~" for c in value):
            raise ValueError(self.fail(s, value))
        return value

    def expected(self, s: Setting) -> str:
        return "printable ASCII text without CR, LF or other control characters"

    def doc_type(self, s: Setting) -> str:
        return "string, printable ASCII"


class _UrlPrefix(_Kind):
    """A URL path prefix such as /static/: starts and ends with a slash."""

    def check(self, s: Setting, value: Any) -> Any:
        value = super().check(s, value)
        if not (value.startswith("/") and value.endswith("/")
                and all("!" <= c <= "~" and c not in "?#" for c in value)):
            raise ValueError(self.fail(s, value))
        return value

    def expected(self, s: Setting) -> str:
        return "a URL path that starts and ends with / (no spaces, ? or #)"

    def doc_type(self, s: Setting) -> str:
        return "URL path prefix"


class _Address(_Kind):
    doc_name = "address"
    metavar = "HOST:PORT"

    def expected(self, s: Setting) -> str:
        return "HOST:PORT"

    def check(self, s: Setting, value: Any) -> Any:
        parse_address(value)
        return value


class _Int(_Kind):
    raw_type = int
    doc_name = "integer"
    metavar = "N"

    def stored_type(self, s: Setting) -> Any:
        return Annotated[int, msgspec.Meta(ge=s.min, le=s.max)]

    def parse_text(self, s: Setting, text: str) -> Any:
        return int(text) if _INT_RE.fullmatch(text) else text

    def check(self, s: Setting, value: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (s.min is not None and value < s.min)
            or (s.max is not None and value > s.max)
        ):
            raise ValueError(self.fail(s, value))
        return value

    def expected(self, s: Setting) -> str:
        return f"an integer from {_num(s.min)} to {_num(s.max)}"

    def doc_type(self, s: Setting) -> str:
        return f"integer, {_num(s.min)}–{_num(s.max)}"


class _Size(_Kind):
    raw_type = int | str
    doc_name = "size"
    metavar = "SIZE"

    def stored_type(self, s: Setting) -> Any:
        return Annotated[int, msgspec.Meta(ge=s.min or 0)]

    def check(self, s: Setting, value: Any) -> Any:
        try:
            n = parse_size(value)
        except ValueError:
            raise ValueError(self.fail(s, value)) from None
        if s.min and n < s.min:
            raise ValueError(
                f"expected a size of at least {format_size(int(s.min))}, "
                f"got {_show(value)}"
            )
        return n

    def expected(self, s: Setting) -> str:
        return 'a size like 1048576 or "1M"'

    def doc_type(self, s: Setting) -> str:
        if s.min:
            return f"size, at least {format_size(int(s.min))}"
        return "size"

    def to_toml(self, s: Setting, value: Any) -> str:
        return str(value)


class _Duration(_Kind):
    raw_type = float
    doc_name = "duration"
    metavar = "SECONDS"

    def stored_type(self, s: Setting) -> Any:
        if s.min is None:
            return Annotated[float, msgspec.Meta(gt=0)]
        return Annotated[float, msgspec.Meta(ge=s.min, le=s.max)]

    def parse_text(self, s: Setting, text: str) -> Any:
        try:
            return float(text)
        except ValueError:
            return text

    def check(self, s: Setting, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(self.fail(s, value))
        seconds = float(value)
        if s.min is None:
            ok = seconds > 0
        else:
            ok = s.min <= seconds and (s.max is None or seconds <= s.max)
        if not ok or not math.isfinite(seconds):
            raise ValueError(self.fail(s, value))
        return seconds

    def expected(self, s: Setting) -> str:
        if s.min is None:
            return "a number of seconds greater than 0"
        return f"a number of seconds from {_num(s.min)} to {_num(s.max)}"

    def doc_type(self, s: Setting) -> str:
        if s.min is None:
            return "duration, > 0"
        return f"duration, {_num(s.min)}–{_num(s.max)}"

    def show_default(self, s: Setting) -> str:
        return _num(s.default)

    def to_toml(self, s: Setting, value: Any) -> str:
        return _num(value)


class _Choice(_Kind):
    doc_name = "choice"

    def stored_type(self, s: Setting) -> Any:
        return Literal[s.choices]

    def check(self, s: Setting, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in s.choices:
            return value.lower()
        raise ValueError(self.fail(s, value))

    def expected(self, s: Setting) -> str:
        return "one of " + ", ".join(s.choices)

    def doc_type(self, s: Setting) -> str:
        return "one of " + ", ".join(f"`{c}`" for c in s.choices)


class _Bool(_Kind):
    raw_type = bool
    doc_name = "boolean"

    def parse_text(self, s: Setting, text: str) -> Any:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        return text

    def check(self, s: Setting, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError(self.fail(s, value))
        return value

    def expected(self, s: Setting) -> str:
        return "true or false"


_KINDS: dict[str, _Kind] = {
    "address": _Address(),
    "int": _Int(),
    "str": _Str(),
    "header": _Header(),
    "urlprefix": _UrlPrefix(),
    "size": _Size(),
    "duration": _Duration(),
    "choice": _Choice(),
    "bool": _Bool(),
}


def _validate_table() -> None:
    seen_flags: set[str] = set()
    for s in SETTINGS:
        assert s.section in SECTIONS, s.name
        assert s.kind in _KINDS, s.name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", s.key), s.name
        s.check(s.default)  # every default must pass its own check
        for flag in s.flags:
            for part in flag.split("/"):
                assert part not in seen_flags, part
                seen_flags.add(part)
    assert len(BY_NAME) == len(SETTINGS) and len(BY_ENV) == len(SETTINGS)


_validate_table()


# ---------------------------------------------------------------------------
# Struct types derived from the table
# ---------------------------------------------------------------------------


def _section_settings(section: str) -> list[Setting]:
    return [s for s in SETTINGS if s.section == section]


def _struct_name(section: str) -> str:
    return section.capitalize() + "Config"


def _build_types() -> tuple[type, type]:
    file_sections = []
    config_sections = []
    for section in SECTIONS:
        settings = _section_settings(section)
        # What a file may contain: every key optional, loosely typed.
        file_cls = msgspec.defstruct(
            "_File" + _struct_name(section),
            [(s.key, s.kind_impl.raw_type | msgspec.UnsetType, msgspec.UNSET)
             for s in settings],
            forbid_unknown_fields=True,
            frozen=True,
            module=__name__,
        )
        # What the server sees: every key present, in its stored form.
        cfg_cls = msgspec.defstruct(
            _struct_name(section),
            [(s.key, s.kind_impl.stored_type(s), s.check(s.default))
             for s in settings],
            forbid_unknown_fields=True,
            frozen=True,
            kw_only=True,
            module=__name__,
        )
        cfg_cls.__doc__ = f"[{section}] {SECTIONS[section]}"
        globals()[file_cls.__name__] = file_cls
        globals()[cfg_cls.__name__] = cfg_cls
        file_sections.append((section, file_cls | msgspec.UnsetType, msgspec.UNSET))
        config_sections.append((section, cfg_cls))
    file_model = msgspec.defstruct(
        "_FileModel", file_sections, forbid_unknown_fields=True, frozen=True,
        module=__name__,
    )
    config = msgspec.defstruct(
        "Config", config_sections, forbid_unknown_fields=True, frozen=True,
        kw_only=True, module=__name__,
    )
    config.__doc__ = (
        "The effective configuration: one attribute per section "
        "(cfg.server.bind, cfg.limits.max_body_size, ...). Sizes are int "
        "bytes, durations float seconds."
    )
    return file_model, config


_FileModel, Config = _build_types()


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _suggest(word: str, known: dict[str, str]) -> str:
    """`` (did you mean X?)`` when ``word`` is close to a key of ``known``
    (which maps the words to compare to the names to show), else ``""``."""
    import difflib  # errors only: the server's processes do not carry it

    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.7)
    return f" (did you mean {known[close[0]]}?)" if close else ""


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: invalid TOML: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if m:
            reason = msg[: m.start()]
            raise ConfigError(
                f"{path}: line {m.group(1)}: invalid TOML: {reason} "
                f"(column {m.group(2)})"
            ) from None
        msg = re.sub(r"\s*\(at end of document\)$", " at end of file", msg)
        raise ConfigError(f"{path}: invalid TOML: {msg}") from None


def _file_values(path: str) -> dict[str, Any]:
    """Read and structurally validate a TOML file.  Returns the values it
    gives, keyed by setting name, not yet checked."""
    raw = _read_file(path)
    try:
        parsed = msgspec.convert(raw, _FileModel)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{path}: {_translate(str(e), raw)}") from None
    out: dict[str, Any] = {}
    for section in SECTIONS:
        table = getattr(parsed, section)
        if table is msgspec.UNSET:
            continue
        for s in _section_settings(section):
            value = getattr(table, s.key)
            if value is not msgspec.UNSET:
                # Keep what the user wrote (msgspec turns 5 into 5.0).
                out[s.name] = raw[section][s.key]
    return out


def _translate(msg: str, raw: dict[str, Any]) -> str:
    """Turn a msgspec ValidationError text into ``key: reason``."""
    m = re.fullmatch(r"(.*?)(?: - at `\$((?:\.\w+)*)`)?", msg, re.S)
    text, path = m.group(1), (m.group(2) or "").lstrip(".")
    parts = path.split(".") if path else []
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", text)
    if unknown:
        field = unknown.group(1)
        if not parts:
            in_section = [s.name for s in SETTINGS if s.key == field]
            if in_section:
                return (f"{field}: unknown section (settings belong in a "
                        f"section, e.g. {in_section[0]})")
            return f"{field}: unknown section{_suggest(field, {k: k for k in SECTIONS})}"
        keys = {s.key: s.name for s in _section_settings(parts[0])}
        return f"{parts[0]}.{field}: unknown setting{_suggest(field, keys)}"
    if len(parts) == 1:
        return f"{parts[0]}: expected a table like [{parts[0]}], got {_show(raw[parts[0]])}"
    if len(parts) == 2 and ".".join(parts) in BY_NAME:
        s = BY_NAME[".".join(parts)]
        value = raw[parts[0]][parts[1]]
        try:
            s.check(value)
        except ValueError as err:
            return f"{s.name}: {err}"
        return f"{s.name}: {s.kind_impl.fail(s, value)}"
    return text[:1].lower() + text[1:]  # pragma: no cover - defensive


# Source ranks, in precedence order, for blaming cross-setting errors.
_FILE, _ENV, _FLAG = 1, 2, 3


def _apply(
    values: dict[str, Any],
    origin: dict[str, tuple[int, str]],
    name: str,
    raw: Any,
    *,
    rank: int,
    source: str,
    where: str,
    text: bool,
) -> None:
    """Check one value and record it.  ``source`` names where it came from
    (a file path, ``environment VAR``, ``--flag``); ``where`` is the message
    prefix for errors about it."""
    s = BY_NAME[name]
    try:
        if text and isinstance(raw, str):
            values[name] = s.from_text(raw)
        else:
            values[name] = s.check(raw)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    origin[name] = (rank, source)


def _flag_source(s: Setting) -> str:
    return s.long_flag or f"option {s.name}"


def _cpu_count() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n)


def load(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> Config:
    """Build the effective configuration.

    Layers, later ones winning: defaults, the TOML file at ``path`` (none if
    None), the environment ``env`` (``os.environ`` if None; only
    ``PRACK_<SECTION>_<KEY>`` names count, ``PRACK_CONFIG`` is ignored),
    ``flags`` (keyed ``"section.key"``; values typed or text; None means not
    given).  ``server.acceptors = 0`` is resolved to the CPU count,
    ``api.idle_timeout = 0`` to 2 * ``api.poll_timeout`` + 60.

    Raises ConfigError with a one-line message.
    """
    values: dict[str, Any] = {s.name: s.check(s.default) for s in SETTINGS}
    origin: dict[str, tuple[int, str]] = {}

    if path is not None:
        for name, raw in _file_values(path).items():
            _apply(values, origin, name, raw, rank=_FILE, source=path,
                   where=f"{path}: {name}", text=False)

    environ = os.environ if env is None else env
    section_prefixes = tuple(f"{ENV_PREFIX}{sec.upper()}_" for sec in SECTIONS)
    for var in sorted(environ):
        if var == CONFIG_ENV or not var.startswith(section_prefixes):
            continue
        s = BY_ENV.get(var)
        if s is None:
            section, _, key = var[len(ENV_PREFIX):].lower().partition("_")
            keys = {x.key: x.env for x in _section_settings(section)}
            raise ConfigError(
                f"environment {var}: unknown setting{_suggest(key, keys)}"
            )
        source = f"environment {var}"
        _apply(values, origin, s.name, environ[var], rank=_ENV, source=source,
               where=source, text=True)

    for name, raw in (flags or {}).items():
        s = BY_NAME.get(name)
        if s is None:
            raise ConfigError(f"option {name}: unknown setting")
        if raw is None:
            continue
        source = _flag_source(s)
        _apply(values, origin, name, raw, rank=_FLAG, source=source,
               where=source, text=True)

    _cross_check(values, origin)

    if values["api.idle_timeout"] == 0:
        values["api.idle_timeout"] = 2 * values["api.poll_timeout"] + 60.0
    if values["server.acceptors"] == 0:
        values["server.acceptors"] = min(_cpu_count(), int(BY_NAME["server.acceptors"].max))

    nested: dict[str, dict[str, Any]] = {sec: {} for sec in SECTIONS}
    for s in SETTINGS:
        nested[s.section][s.key] = values[s.name]
    try:
        return msgspec.convert(nested, Config)
    except msgspec.ValidationError as e:  # pragma: no cover - checks above agree
        raise ConfigError(f"configuration: {_translate(str(e), nested)}") from None


def _cross_check(
    values: dict[str, Any], origin: dict[str, tuple[int, str]]
) -> None:
    body = min(values["limits.max_body_size"], values["limits.inline_body_size"])
    head = values["limits.max_header_size"]
    ring = values["limits.ring_size"]
    need = 2 * (body + 2 * head) + 65536
    if ring < need:
        # Blame the strongest source that set one of the settings involved.
        involved = ("limits.ring_size", "limits.max_body_size",
                    "limits.inline_body_size", "limits.max_header_size")
        given = [origin[n] for n in involved if n in origin]
        source = max(given)[1] if given else "defaults"
        raise ConfigError(
            f"{source}: limits.ring_size: must be at least {_bytes(need)} for "
            f"these limits (2 * (min(max_body_size, inline_body_size) + "
            f"2 * max_header_size) + 64k), "
            f"got {_bytes(ring)}"
        )
    root = values["static.root"]
    if root and not os.path.isdir(root):
        source = origin.get("static.root", (0, "defaults"))[1]
        why = "does not exist" if not os.path.exists(root) else "is not a directory"
        raise ConfigError(f"{source}: static.root: {root!r} {why}")


# ---------------------------------------------------------------------------
# Output: TOML dump, example file, Markdown reference
# ---------------------------------------------------------------------------


def dump_toml(cfg: Config) -> str:
    """The effective configuration as TOML (sizes in bytes, durations in
    seconds); ``load()`` of the result gives an equal Config."""
    lines: list[str] = []
    for section in SECTIONS:
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        table = getattr(cfg, section)
        for s in _section_settings(section):
            lines.append(f"{s.key} = {s.kind_impl.to_toml(s, getattr(table, s.key))}")
    return "\n".join(lines) + "\n"


def _wrap_comment(text: str, width: int = 78) -> list[str]:
    import textwrap  # --example only

    return ["# " + line for line in textwrap.wrap(text, width - 2)]


def example_toml() -> str:
    """The text of examples/prack.toml: every setting at its default, with
    its description as a comment."""
    lines = [
        "# Prack configuration, every setting at its default value.",
        "# Sizes: bytes, or a string with a k/M/G suffix (1k = 1024).",
        "# Durations: seconds.  Environment variables PRACK_<SECTION>_<KEY> and",
        "# command-line flags override this file; see docs/configuration.md.",
    ]
    for section in SECTIONS:
        lines += ["", *_wrap_comment(SECTIONS[section]), f"[{section}]"]
        for s in _section_settings(section):
            lines += _wrap_comment(s.help)
            lines.append(f"{s.key} = {s.kind_impl.show_default(s)}")
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The text of docs/configuration.md."""
    out = [
        "# Configuration",
        "",
        "<!-- Generated by `python -m prack.config --markdown`; do not edit. -->",
        "",
        "Prack reads its settings from four layers, each overriding the one "
        "before: built-in defaults, a TOML file (`prack-server -c FILE`, or "
        f"the file named by `{CONFIG_ENV}`), environment variables named "
        f"`{ENV_PREFIX}<SECTION>_<KEY>` (for example `PRACK_SERVER_BIND`), and "
        "command-line flags. Unknown keys and unknown "
        f"`{ENV_PREFIX}<SECTION>_*` variables are errors. Sizes are a number "
        'of bytes or a string with a `k`, `M` or `G` suffix (`"32k"`, `"1M"`; '
        "binary, so 1k = 1024). Durations are seconds, integer or fractional. "
        "Booleans in the environment are `true`/`false` (also `1`/`0`, "
        "`yes`/`no`, `on`/`off`). `prack-server --check` prints the effective "
        "configuration as TOML and exits; `examples/prack.toml` lists every "
        "setting at its default.",
    ]
    for section in SECTIONS:
        out += [
            "",
            f"## [{section}]",
            "",
            SECTIONS[section],
            "",
            "| Key | Type | Default | Environment | Flag | Description |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for s in _section_settings(section):
            flags = ", ".join(
                f"`{part}`" for f in s.flags for part in f.split("/")
            ) or "—"
            cells = [
                f"`{s.key}`",
                s.kind_impl.doc_type(s),
                f"`{s.kind_impl.show_default(s)}`",
                f"`{s.env}`",
                flags,
                s.help,
            ]
            out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def _main(argv: list[str]) -> int:
    if argv == ["--markdown"]:
        sys.stdout.write(markdown())
        return 0
    if argv == ["--example"]:
        sys.stdout.write(example_toml())
        return 0
    sys.stderr.write("usage: python -m prack.config --markdown | --example\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
