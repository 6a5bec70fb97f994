"""Sending on non-blocking sockets, shared by both kinds of child process:
a list of buffers through sendmsg(2), and a file region through sendfile(2)
(pread + send where there is none).
"""
from __future__ import annotations

import os
import socket


def drop_sent(out: list, n: int) -> None:
    """Remove n sent bytes from the front of a list of buffers (for sendmsg).
    Empty buffers at the front go too: left there, a flush loop would send
    nothing forever."""
    i = 0
    while i < len(out):
        size = len(out[i])
        if n < size:
            if n:
                out[i] = memoryview(out[i])[n:]
            break
        n -= size
        i += 1
    del out[:i]


def send_pending(sock: socket.socket, out: list) -> int:
    """Send as much of the buffer list `out` as the socket takes now, removing
    what was sent. Returns (the number of bytes sent) when `out` is empty or
    the socket would block; raises OSError when the peer is gone."""
    total = 0
    while out:
        try:
            n = sock.sendmsg(out[:64])      # at most IOV_MAX-friendly batches
        except (BlockingIOError, InterruptedError):
            return total
        drop_sent(out, n)
        total += n
    return total


# sendfile(2) where the platform has it (Linux, BSD, macOS); else pread + send.
_sendfile = getattr(os, "sendfile", None)


def send_file(sock: socket.socket, job: list, out: list, rounds: int = 1 << 30,
              chunk: int = 1 << 20) -> bool:
    """Send a file region job = [fd, offset, remaining] on a non-blocking
    socket, for at most `rounds` calls of up to `chunk` bytes; `out` is the
    connection's buffer list, used by the pread fallback. True when the
    region has gone out (the caller closes fd); False when the socket is
    full or the rounds are spent. Raises OSError when the peer has gone or
    the file shrank."""
    fd = job[0]
    for _ in range(rounds):
        if not job[2]:
            return True
        if _sendfile is not None:
            try:
                n = _sendfile(sock.fileno(), fd, job[1], min(job[2], chunk))
            except (BlockingIOError, InterruptedError):
                return False
        else:
            data = os.pread(fd, min(job[2], 65536), job[1])
            n = len(data)
            if n:
                out.append(data)
        if n == 0:
            raise OSError("file shrank while being sent")
        job[1] += n
        job[2] -= n
        if out:                     # the pread fallback: send what was read
            send_pending(sock, out)
            if out:
                return False
    return not job[2]
