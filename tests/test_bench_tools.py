"""The in-process hot-path benchmarks drive the real acceptor and API
process code; run them briefly so they do not rot (each checks that every
client got its answer and every batch was pulled whole)."""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script, args, pattern", [
    ("acceptor_path.py", ["--rounds", "20"], r"acceptor, per request: [\d.]+ us"),
    ("api_path.py", ["--rounds", "20", "--batch", "4"],
     r"API process, batches of 4, per request: [\d.]+ us"),
])
def test_hot_path_benchmarks_run(script, args, pattern):
    # The prack this interpreter imports: the installed one under `make
    # test`, the tree's own with PYTHONPATH=src.
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script)] + args,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(pattern, out.stdout), out.stdout
