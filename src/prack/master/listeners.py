"""Listening sockets, bound by the master before it forks.

Children inherit them through fork; an upgrade hands them to the new master
by file descriptor (prack.master.upgrade, PRACK_LISTEN_FDS). Unix sockets
(the acceptor links, worker.sock) are made owner-only.
"""
from __future__ import annotations

import os
import socket

from prack.config import parse_address
from prack.errors import StartupError


def bind_tcp(address: str, backlog: int, what: str) -> socket.socket:
    """A listening TCP socket on "HOST:PORT"; StartupError names the address."""
    host, port = parse_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV)
    except socket.gaierror as exc:
        raise StartupError("%s %s: cannot resolve %r: %s" % (what, address, host, exc.strerror))
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise StartupError("%s %s: cannot listen: %s" % (what, address, exc.strerror or exc))
    sock.setblocking(False)
    return sock


def bind_unix(path: str, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise StartupError("cannot listen on %s: %s" % (path, exc.strerror or exc))
    sock.setblocking(False)
    return sock


def address_of(sock: socket.socket) -> str:
    """"HOST:PORT" of a bound TCP socket (with the real port when 0 was asked)."""
    host, port = sock.getsockname()[:2]
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)
