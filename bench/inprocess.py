"""What the in-process path benchmarks share (acceptor_path.py, api_path.py):
warm up, optionally profile one pass, then time five passes of `rounds`
rounds, each round returning the seconds spent in the code under test."""
from __future__ import annotations

import cProfile
import pstats


def passes(round_once, rounds: int, per_round: int, profile: bool = False,
           warm: int = 30) -> list[float]:
    """Seconds per request of each of five passes (best first is min())."""
    for _ in range(warm):
        round_once()
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(rounds):
            round_once()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(22)
    return [sum(round_once() for _ in range(rounds)) / (rounds * per_round) for _ in range(5)]


def report(what: str, results: list[float]) -> str:
    return "%s: %.2f us (best of 5; all: %s)" % (
        what, min(results) * 1e6, " ".join("%.1f" % (p * 1e6) for p in results))
