#!/usr/bin/env python3
"""Turns a results file of bench/run.py into docs/benchmarks.md and PNG
plots under docs/img/. Figures are medians of the run's rounds with the
min-max spread, and ratios against each peer measured in the same run.

    python bench/report.py [bench/results/<date>.json]
"""
from __future__ import annotations

import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOCS = os.path.join(ROOT, "docs")
IMG = os.path.join(DOCS, "img")

INTRO = """\
# Benchmarks

Measured with `make bench` (`bench/run.py`, then `bench/report.py`), which
installs the peers, writes their configurations and hello apps itself and
runs every configuration on loopback, in turn, round-robin. The machine is
noisy (figures move 25-40 % between runs), so what counts are the **ratios
between configurations measured in the same run**; absolute numbers are only
for orientation. CPU is the user + system time of every process of the
configuration (server, proxies, app processes) over the run, read from
`/proc/PID/stat`, divided by the requests served. Memory is PSS from
`/proc/PID/smaps_rollup`.
"""


def fmt(x, scale=1.0, digits=0) -> str:
    if x is None:
        return "—"
    return "{:,.{}f}".format(x * scale, digits)


def spread(s: dict, scale=1.0, digits=0) -> str:
    if not s:
        return "—"
    return "%s (%s–%s)" % (fmt(s["median"], scale, digits), fmt(s["min"], scale, digits),
                           fmt(s["max"], scale, digits))


def plot_hello(res: dict, path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = res["hello"]["summary"]
    names = list(summary)
    conns = sorted({c for s in summary.values() for c in s}, key=int)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(conns))
    for i, c in enumerate(conns):
        med = [summary[n][c]["requests_per_s"].get("median", 0) for n in names]
        lo = [m - summary[n][c]["requests_per_s"].get("min", m) for n, m in zip(names, med)]
        hi = [summary[n][c]["requests_per_s"].get("max", m) - m for n, m in zip(names, med)]
        xs = [x + i * width for x in range(len(names))]
        axes[0].bar(xs, med, width, yerr=[lo, hi], label="%s connections" % c, capsize=2)
        cpu = [summary[n][c]["cpu_us_per_request"].get("median", 0) for n in names]
        axes[1].bar(xs, cpu, width, label="%s connections" % c)
    for ax, title in ((axes[0], "requests/s (median, min–max)"),
                      (axes[1], "server-side CPU µs per request (log)")):
        ax.set_xticks([x + width * (len(conns) - 1) / 2 for x in range(len(names))])
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_sizes(res: dict, path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = res["sizes"]
    labels = list(sizes)
    names = list(next(iter(sizes.values())))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in names:
        ax.plot(labels, [sizes[l][name]["requests_per_s"].get("median") for l in labels],
                marker="o", label=name)
    ax.set_yscale("log")
    ax.set_title("echo, requests/s by body size (log)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _median(d: dict, *keys):
    for k in keys:
        d = (d or {}).get(k)
    return (d or {}).get("median") if isinstance(d, dict) else None


def targets(res: dict) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, goal, met) for each target of the benchmarks issue
    this run has figures for."""
    rows = []
    hello = res.get("hello", {}).get("summary", {})
    ratios = res.get("hello", {}).get("ratios", {})
    for conns in ("32", "256"):
        for peer in ("mongrel2", "uvicorn-2"):
            r = ratios.get("prack-v2", {}).get(conns, {}).get(peer, {}).get("throughput")
            if r is not None:
                rows.append(("v2 hello vs %s, %s connections" % (peer, conns), "%.2f×" % r,
                             "≥ 1.0×", r >= 1.0))
        r = ratios.get("prack-v1", {}).get(conns, {}).get("gunicorn", {}).get("throughput")
        if r is not None:
            rows.append(("v1 hello vs gunicorn sync, %s connections" % conns, "%.2f×" % r,
                         "≥ 2.0×", r >= 2.0))
        cpu = _median(hello, "prack-v2", conns, "cpu_us_per_request")
        if cpu is not None:
            rows.append(("CPU per request, v2, %s connections" % conns, "%.0f µs" % cpu,
                         "≤ 50 µs", cpu <= 50))
    st = res.get("static", {}).get("ratio_vs_nginx")
    if st is not None:
        rows.append(("static file vs nginx (one process each)", "%.2f×" % st, "≥ 0.5×",
                     st >= 0.5))
    mem = res.get("memory")
    if mem:
        rows.append(("idle PSS of the tree", "%.1f MB" % (mem["idle_pss"] / 1e6), "≤ 25 MB",
                     mem["idle_pss"] <= 25e6))
        per = mem["bytes_per_idle_connection"]
        rows.append(("per idle keep-alive connection", "%.0f B" % per, "≤ 2 KiB", per <= 2048))
    lat = res.get("latency", {}).get("configs", {}).get("prack-v2")
    if lat and lat.get("p99"):
        p99 = lat["p99"]["median"]
        rows.append(("p99 at half of saturation", "%.2f ms" % (p99 * 1e3), "≤ 2 ms",
                     p99 <= 0.002))
    return rows


def render(res: dict) -> str:
    out = [INTRO]
    m = res["machine"]
    out.append("## This run\n")
    out.append("- Date: %s; machine: %s, %d cores, Linux %s, Python %s" % (
        res["date"], m["cpu"], m["cores"], m.get("kernel", "?"), m["python"]))
    out.append("- Versions: " + ", ".join("%s %s" % kv for kv in res["versions"].items()))
    st = res["settings"]
    out.append("- %s; %d rounds of %g s per configuration and connection count\n" % (
        st["client"], st["rounds"], st["seconds"]))
    out.append("| configuration | what |\n|---|---|")
    for name, c in res["configs"].items():
        out.append("| %s | %s |" % (name, c["what"]))
    out.append("")
    rows = targets(res)
    if rows:
        out.append("## Targets\n")
        out.append("| target | this run | goal | met |\n|---|---|---|---|")
        for name, got, goal, met in rows:
            out.append("| %s | %s | %s | %s |" % (name, got, goal, "yes" if met else "**no**"))
        out.append("")
        analysis = os.path.join(HERE, "analysis.md")
        if os.path.exists(analysis):
            with open(analysis) as f:
                out.append(f.read().rstrip() + "\n")
    if "hello" in res:
        h = res["hello"]["summary"]
        out.append("## Hello, end to end\n")
        out.append("`200 text/plain \"Hello, World!\"`, keep-alive. Median (min–max) of the "
                   "rounds.\n")
        out.append("| configuration | connections | requests/s | CPU µs/request | p50 ms | "
                   "p99 ms | errors |")
        out.append("|---|---|---|---|---|---|---|")
        for name, per in h.items():
            for c, s in per.items():
                out.append("| %s | %s | %s | %s | %s | %s | %d |" % (
                    name, c, spread(s["requests_per_s"]), spread(s["cpu_us_per_request"], 1, 1),
                    fmt(s["p50"].get("median"), 1e3, 2), fmt(s["p99"].get("median"), 1e3, 2),
                    s["errors"]))
        if plot_hello(res, os.path.join(IMG, "bench-hello.png")):
            out.append("\n![hello requests/s and CPU per request](img/bench-hello.png)\n")
        out.append("### Ratios (same run)\n")
        out.append("Throughput: Prack's median requests/s over the peer's. CPU efficiency: "
                   "the peer's CPU per request over Prack's. Above 1.0, Prack is ahead.\n")
        for mine, per in res["hello"]["ratios"].items():
            out.append("| %s vs | connections | throughput | CPU efficiency |" % mine)
            out.append("|---|---|---|---|")
            for c, row in per.items():
                for peer, r in row.items():
                    out.append("| %s | %s | %s | %s |" % (peer, c, fmt(r["throughput"], 1, 2),
                                                         fmt(r["cpu_efficiency"], 1, 2)))
            out.append("")
    if "memory" in res:
        mm = res["memory"]
        out.append("## Memory\n")
        out.append("PSS of Prack's own tree (master, acceptors, API process; workers not "
                   "counted): %d processes.\n" % mm["processes"])
        out.append("| state | PSS |\n|---|---|")
        out.append("| idle after start | %s MB |" % fmt(mm["idle_pss"], 1e-6, 1))
        out.append("| after a load run | %s MB |" % fmt(mm["after_load_pss"], 1e-6, 1))
        out.append("| holding %d idle keep-alive connections | %s MB |" % (
            mm["idle_connections"], fmt(mm["with_idle_connections_pss"], 1e-6, 1)))
        out.append("| per idle connection | %s bytes |\n" % fmt(mm["bytes_per_idle_connection"]))
    if "latency" in res:
        lat = res["latency"]
        out.append("## Latency at a fixed rate\n")
        out.append("Offered %s req/s over %d connections (half of Prack's saturation, %s "
                   "req/s), paced by wrk's `delay()` per connection.\n" % (
                       fmt(lat["offered_rate"]), lat["connections"],
                       fmt(lat["prack_saturation"])))
        out.append("| configuration | achieved req/s | p50 ms | p99 ms | p99.9 ms |")
        out.append("|---|---|---|---|---|")
        for name, s in lat["configs"].items():
            out.append("| %s | %s | %s | %s | %s |" % (
                name, fmt(s["requests_per_s"].get("median")),
                fmt(s["p50"].get("median"), 1e3, 2), fmt(s["p99"].get("median"), 1e3, 2),
                fmt(s["p99_9"].get("median"), 1e3, 2)))
        out.append("")
    if "sizes" in res:
        out.append("## Body sizes (echo)\n")
        out.append("POST of the given size; the app answers with the same bytes. 32 "
                   "connections.\n")
        out.append("| body | configuration | requests/s | MiB/s both ways | CPU µs/request |")
        out.append("|---|---|---|---|---|")
        for label, per in res["sizes"].items():
            for name, s in per.items():
                out.append("| %s | %s | %s | %s | %s |" % (
                    label, name, spread(s["requests_per_s"]), fmt(s["mib_per_s"].get("median"),
                                                                  1, 1),
                    fmt(s["cpu_us_per_request"].get("median"), 1, 0)))
        if plot_sizes(res, os.path.join(IMG, "bench-sizes.png")):
            out.append("\n![requests/s by body size](img/bench-sizes.png)\n")
    if "static" in res:
        st = res["static"]
        out.append("## Front only: a static file\n")
        out.append("A 1 KiB HTML file, 32 keep-alive connections, one serving process each: "
                   "Prack's acceptor (`[static]`, no worker) and one nginx worker.\n")
        out.append("| configuration | requests/s | CPU µs/request | p99 ms |\n|---|---|---|---|")
        for name, s in st.items():
            if name == "ratio_vs_nginx":
                continue
            out.append("| %s | %s | %s | %s |" % (name, spread(s["requests_per_s"]),
                                                 fmt(s["cpu_us_per_request"].get("median"), 1, 1),
                                                 fmt(s["p99"].get("median"), 1e3, 2)))
        out.append("\nPrack / nginx: **%s×**\n" % fmt(st.get("ratio_vs_nginx"), 1, 2))
    if "parser" in res:
        p, r = res["parser"], res["ring"]
        out.append("## Micro\n")
        out.append("| what | Prack | peer | ratio |\n|---|---|---|---|")
        out.append("| parse a browser request (ns) | %s (C) / %s (whole reader) | %s (httptools) "
                   "| %s× / %s× |" % (fmt(p["prack_c_ns"]), fmt(p["prack_reader_ns"]),
                                     fmt(p.get("httptools_ns")),
                                     fmt(p.get("ratio_c_vs_httptools"), 1, 2),
                                     fmt(p.get("ratio_reader_vs_httptools"), 1, 2)))
        out.append("| ring, %d-byte records between two processes (records/s) | %s | %s "
                   "(plain copy) | %s |\n" % (r["record_bytes"], fmt(r["records_per_s"]),
                                              fmt(r["copy_per_s"]),
                                              fmt(r["ratio_ring_vs_copy"], 1, 2)))
    history = os.path.join(HERE, "history.md")
    if os.path.exists(history):
        with open(history) as f:
            out.append(f.read().rstrip())
    return "\n".join(out) + "\n"


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else sorted(
        glob.glob(os.path.join(HERE, "results", "[0-9]*.json")))[-1]
    with open(path) as f:
        res = json.load(f)
    os.makedirs(IMG, exist_ok=True)
    text = render(res)
    with open(os.path.join(DOCS, "benchmarks.md"), "w") as f:
        f.write(text)
    print("docs/benchmarks.md written from", os.path.relpath(path, ROOT))


if __name__ == "__main__":
    main()
