"""docs/security.md names every limit and timeout a client can run into.

The list comes from prack.config.SETTINGS (every `limits.*`, `timeouts.*`
and `websocket.*` setting, and `server.max_connections`), so a new setting that is not
described in security.md fails here; each one's row must also give the
current default (as written in the config, or as a number of bytes/seconds).
"""
from __future__ import annotations

import pathlib
import re

import pytest

from prack.config import SETTINGS

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "security.md"
GUARDED = [s for s in SETTINGS
           if s.section in ("limits", "timeouts", "websocket")
           or s.name == "server.max_connections"]


def test_the_list_is_not_empty():
    names = {s.name for s in GUARDED}
    assert {"limits.max_body_size", "timeouts.header_timeout",
            "server.max_connections"} <= names


def _spellings(setting) -> set[str]:
    """Ways the default may be written: "1M", 1048576, 60 (for 60.0)."""
    out = {str(setting.default)}
    for value in (setting.default, setting.check(setting.default)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        out.add(str(value))
    return out


@pytest.mark.parametrize("setting", GUARDED, ids=lambda s: s.name)
def test_setting_is_in_the_limits_table_with_its_default(setting):
    rows = [line for line in DOC.read_text("utf-8").splitlines()
            if line.startswith(f"| `{setting.name}` |")]
    assert rows, f"docs/security.md has no table row for {setting.name}"
    default_cell = rows[0].split("|")[2]
    words = set(re.findall(r"[0-9.]+[kMG]?", default_cell))
    assert words & _spellings(setting), (
        f"{setting.name}: default {setting.default!r} not in its security.md row: {rows[0]}")
