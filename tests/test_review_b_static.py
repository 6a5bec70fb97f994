"""StaticFiles in process: what its caches keep under hostile paths."""
from __future__ import annotations

from prack import static


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
