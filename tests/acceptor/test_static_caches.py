"""StaticFiles in process: what its caches keep under hostile paths."""
from __future__ import annotations

from prack.acceptor import static


def test_path_cache_stays_small_under_unique_long_paths(tmp_path):
    """Every request path under the prefix is resolved and cached for a
    second, existing or not. New 8 KiB paths (max_request_line) per request
    must not make an acceptor hold tens of megabytes."""
    (tmp_path / "a.txt").write_bytes(b"a")
    files = static.StaticFiles(str(tmp_path), "/static/")
    assert files.answer("GET", "/static/a.txt", []).status == 200
    for i in range(static.CACHE_ENTRIES - 1):
        ans = files.answer("GET", "/static/%05d" % i + "b" * 8000, [])
        assert ans.status == 404
    held = sum(len(k) + len(v[1] or b"") for k, v in files._paths.items())
    assert held < 2 << 20


def test_a_file_swapped_for_a_fifo_does_not_block(tmp_path, monkeypatch):
    """Between the stat that saw a small regular file and the read of its
    bytes, the name may come to point at a FIFO. Opening that must not block
    the acceptor (O_NONBLOCK, as for every other open here): 404."""
    import os
    import threading

    fifo = tmp_path / "swapped"
    os.mkfifo(fifo)
    files = static.StaticFiles(str(tmp_path), "/static/")
    real_stat = os.stat
    regular = os.stat_result((0o100644, 1, 1, 1, 0, 0, 5, 0, 0, 0))

    def stat_then_swap(path, *a, **kw):       # what the first stat saw
        if os.fsdecode(path) == str(fifo):
            return regular
        return real_stat(path, *a, **kw)
    monkeypatch.setattr(static.os, "stat", stat_then_swap)
    result = []
    t = threading.Thread(target=lambda: result.append(files.answer("GET", "/static/swapped", [])),
                         daemon=True)
    t.start()
    t.join(3)
    monkeypatch.undo()
    blocked = t.is_alive()
    if blocked:                               # stuck in open(): release it
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
    assert not blocked
    assert result and result[0].status == 404


def test_a_plain_repeat_is_answered_from_the_ready_cache_until_the_file_changes(tmp_path):
    """A small file asked for again without validators or ranges comes from
    the one-step cache, which the stat of every request keeps honest: a
    change of content, size or inode (a file renamed over it) shows at once,
    and a conditional request still gets its own answer."""
    import os

    f = tmp_path / "a.txt"
    f.write_bytes(b"one")
    files = static.StaticFiles(str(tmp_path), "/static/")
    first = files.answer("GET", "/static/a.txt", [])
    assert (first.status, first.body) == (200, b"one")
    assert files.answer("GET", "/static/a.txt", [(b"host", b"x")]) is first
    assert files.answer("HEAD", "/static/a.txt", []) is first   # the acceptor drops the body

    etag = first.header_block.split(b"ETag: ")[1].split(b"\r\n")[0]
    assert files.answer("GET", "/static/a.txt", [(b"if-none-match", etag)]).status == 304
    ranged = files.answer("GET", "/static/a.txt", [(b"range", b"bytes=1-")])
    assert (ranged.status, ranged.body) == (206, b"ne")

    f.write_bytes(b"three")                           # new size
    assert files.answer("GET", "/static/a.txt", []).body == b"three"
    st = os.stat(f)
    g = tmp_path / "b.tmp"
    g.write_bytes(b"THREE")                           # same size and time, new inode
    os.utime(g, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(g, f)
    assert files.answer("GET", "/static/a.txt", []).body == b"THREE"
    f.unlink()
    assert files.answer("GET", "/static/a.txt", []).status == 404


def test_the_ready_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(static, "CACHE_ENTRIES", 8)
    for i in range(20):
        (tmp_path / ("%d.txt" % i)).write_bytes(b"x")
    files = static.StaticFiles(str(tmp_path), "/static/")
    for i in range(20):
        assert files.answer("GET", "/static/%d.txt" % i, []).status == 200
        assert len(files._ready) <= 8
