"""Measuring tools for the benchmarks: a wrk run, and the CPU time and
proportional memory (PSS) of a whole process tree, read from /proc."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

TICK = os.sysconf("SC_CLK_TCK")


def tree(roots: list[int]) -> list[int]:
    """The given PIDs and all their descendants alive now."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """user + system CPU seconds of each live PID."""
    out = {}
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two cpu_seconds() readings, counting PIDs
    that appeared in between from zero."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def pss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


# Appended to every wrk script: exact percentiles (wrk's --latency table
# stops at 99%), in microseconds.
_DONE_LUA = """
done = function(summary, latency, requests)
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("PCT %g %d\\n", p, latency:percentile(p)))
  end
  io.write(string.format("ERR %d %d %d %d %d\\n", summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout))
end
"""


def wrk(url: str, connections: int, seconds: float, lua: str = "", threads: int = 1) -> dict:
    """Run wrk (optionally with a Lua request script); requests/s, latency
    percentiles in seconds, and the count of errors and non-2xx/3xx answers."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua + _DONE_LUA)
        script = f.name
    try:
        cmd = [exe, "-t%d" % threads, "-c%d" % connections, "-d%ds" % max(1, round(seconds)),
               "--timeout", "10s", "-s", script, url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(script)
    text = out.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rps is None:
        raise RuntimeError("wrk failed: %s %s" % (text, out.stderr))
    result = {"requests_per_s": float(rps.group(1))}
    total = re.search(r"(\d+) requests in", text)
    if total:
        result["requests"] = int(total.group(1))
    for pct, usec in re.findall(r"^PCT ([\d.]+) (\d+)$", text, re.M):
        result["p" + pct.replace(".", "_")] = int(usec) / 1e6
    err = re.search(r"^ERR (\d+) (\d+) (\d+) (\d+) (\d+)$", text, re.M)
    result["errors"] = sum(map(int, err.groups())) if err else None
    return result
