"""Builds and runs the fuzz harnesses one after the other (`make fuzz`).

    python fuzz/run.py [--seconds N] [--only parser,chunked,head,python] [--out DIR]

- parser, chunked, head: libFuzzer harnesses (fuzz_parser.c, fuzz_chunked.c,
  fuzz_head.c) compiled with clang -fsanitize=fuzzer,address,undefined
  together with src/prack/_native/parser.c (and head.c);
- python: the atheris harness (fuzz_python.py) through prack.http and
  prack.protocol.environ to the worker's environment. It imports the `prack` of the
  interpreter running this script (the Makefile uses .venv's).

Each harness runs for --seconds (default 60) with one job, seeded from
tests/corpus (seed_corpus.py); corpora, logs and crash files go to
build/fuzz/ (not committed). At the end a table gives, per harness, the
seconds, total executions, execs/s and crashes; it is also written to
build/fuzz/results.json. Exit status 1 when a harness crashed: its input is
in build/fuzz/crashes/, to be turned into a tests/corpus case and a test.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
NATIVE = ROOT / "src" / "prack" / "_native"
CFLAGS = ["-g", "-O1", "-std=c11", "-fno-omit-frame-pointer",
          "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
          "-I", str(NATIVE)]
HARNESSES = ("parser", "chunked", "head", "python")
C_HARNESSES = ("parser", "chunked", "head")
ENV = {"ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1",
       "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}


def clang() -> str:
    for name in ("clang", "clang-16", "clang-15", "clang-14"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("fuzz: clang not found (Debian: apt-get install clang); "
             "`make fuzz` installs it when run as root")


def build(out: pathlib.Path) -> None:
    cc = clang()
    (out / "bin").mkdir(parents=True, exist_ok=True)
    for name in C_HARNESSES:
        sources = [str(NATIVE / "parser.c")] + ([str(NATIVE / "head.c")] if name == "head" else [])
        cmd = [cc, *CFLAGS, str(HERE / f"fuzz_{name}.c"), *sources,
               "-o", str(out / "bin" / f"fuzz_{name}")]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


def run_one(name: str, seconds: int, out: pathlib.Path) -> dict:
    corpus = out / "corpus" / name
    crashes = out / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    if name == "python":
        cmd = [sys.executable, str(HERE / "fuzz_python.py")]
    else:
        cmd = [str(out / "bin" / f"fuzz_{name}"), f"-dict={HERE / 'http.dict'}"]
    cmd += [str(corpus), f"-max_total_time={seconds}", "-print_final_stats=1",
            "-timeout=10", "-rss_limit_mb=2048", "-max_len=65536",
            f"-artifact_prefix={crashes}/{name}-"]
    if name == "python":
        cmd.append(f"-dict={HERE / 'http.dict'}")
    log_path = out / f"{name}.log"
    print(f"+ {' '.join(cmd)}  (log: {log_path})", flush=True)
    env = dict(os.environ, **ENV)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    elapsed = time.monotonic() - started
    text = log_path.read_text("latin-1")
    execs = _stat(text, "number_of_executed_units")
    if execs is None:  # killed before the final stats: last status line
        found = re.findall(r"#(\d+)\s+(?:pulse|NEW|REDUCE|DONE)", text)
        execs = int(found[-1]) if found else 0
    new_crashes = sorted(str(p) for p in set(crashes.iterdir()) - before)
    return {"harness": name, "seconds": round(elapsed, 1), "execs": execs,
            "execs_per_s": round(execs / elapsed) if elapsed else 0,
            "crashes": new_crashes, "exit": rc,
            "corpus_files": len(list(corpus.iterdir()))}


def _stat(text: str, key: str) -> int | None:
    m = re.findall(rf"stat::{key}:\s*(\d+)", text)
    return int(m[-1]) if m else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--only", default=",".join(HARNESSES))
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "build" / "fuzz")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in HARNESSES:
            ap.error(f"unknown harness {n!r} (choose from {', '.join(HARNESSES)})")
    sys.path.insert(0, str(HERE))
    from seed_corpus import seed
    for kind, n in seed(args.out / "corpus").items():
        print(f"corpus {kind}: {n} files")
    if set(C_HARNESSES) & set(names):
        build(args.out)
    results = [run_one(n, args.seconds, args.out) for n in names]
    print(f"\n{'harness':<10}{'seconds':>9}{'execs':>14}{'execs/s':>10}  crashes")
    for r in results:
        print(f"{r['harness']:<10}{r['seconds']:>9}{r['execs']:>14}{r['execs_per_s']:>10}"
              f"  {len(r['crashes'])}{' ' + ', '.join(r['crashes']) if r['crashes'] else ''}")
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    bad = [r for r in results if r["crashes"] or r["exit"] != 0]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
