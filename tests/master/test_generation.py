"""A generation of children: spawn, the two-phase drain, kill."""
from __future__ import annotations

import os
import signal

import pytest

from prack.master import generation
from prack.master.generation import ACCEPTOR, API, Child, Generation


@pytest.fixture
def sent(monkeypatch):
    """The signals the generation sends, instead of sending them."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(generation, "kill", lambda pid, sig: sent.append((pid, sig)))
    return sent


def test_the_drain_takes_the_acceptors_first_then_the_api_process(sent):
    gen = Generation([Child(ACCEPTOR, 0, 101, 0.0), Child(ACCEPTOR, 1, 102, 0.0),
                      Child(API, 0, 103, 0.0)])
    overdue: list[list[int]] = []
    gen.drain(0.0, 10.0, acceptor_signal=signal.SIGTERM, api_signal=signal.SIGUSR1,
              overdue=lambda left: overdue.append([c.pid for c in left]))
    assert sent == [(101, signal.SIGTERM), (102, signal.SIGTERM), (103, signal.SIGUSR1)]
    assert gen.phase == generation.PHASE_ACCEPTORS
    sent.clear()
    gen.pop(101)
    assert not gen.advance(5.0) and sent == [] and overdue == []
    # graceful_timeout passed: the owner decides (here: it only records)...
    assert not gen.advance(10.0) and overdue == [[102]]
    # ...and is asked again a second later while any acceptor is left.
    assert not gen.advance(10.5) and overdue == [[102]]
    assert not gen.advance(11.0) and overdue == [[102], [102]]
    gen.pop(102)
    # No acceptor left: the API process gets SIGTERM and API_STOP_SECONDS.
    assert not gen.advance(11.2)
    assert gen.phase == generation.PHASE_API and sent == [(103, signal.SIGTERM)]
    sent.clear()
    assert not gen.advance(11.2 + generation.API_STOP_SECONDS - 0.1) and sent == []
    assert not gen.advance(11.2 + generation.API_STOP_SECONDS)
    assert sent == [(103, signal.SIGKILL)]
    gen.pop(103)
    assert gen.advance(20.0)


def test_a_generation_without_acceptors_drains_at_once(sent):
    gen = Generation([Child(API, 0, 103, 0.0)])
    gen.drain(0.0, 10.0, signal.SIGUSR2, signal.SIGUSR2, overdue=lambda left: None)
    assert not gen.advance(0.0)
    assert sent == [(103, signal.SIGUSR2), (103, signal.SIGTERM)]
    gen.pop(103)
    assert gen.advance(0.1)
    assert Generation().advance(0.0)        # not draining, and nobody left


def test_abort_kills_everyone_and_waits_for_the_reaps(sent):
    gen = Generation([Child(ACCEPTOR, 0, 101, 0.0), Child(API, 0, 103, 0.0)])
    gen.abort()
    assert sorted(sent) == [(101, signal.SIGKILL), (103, signal.SIGKILL)]
    assert not gen.advance(100.0) and len(sent) == 2
    gen.pop(101)
    gen.pop(103)
    assert gen.advance(100.0)


class _Exits:
    def __init__(self, outcome):
        self.outcome = outcome

    def run(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize("outcome, code", [(7, 7), (RuntimeError("boom"), 1),
                                           (KeyboardInterrupt(), 0)])
def test_a_spawned_child_runs_what_build_made_and_exits_with_its_code(outcome, code):
    gen = Generation()
    built = []

    def build(role, index):
        built.append((role, index))    # in the child: the parent never sees it
        return _Exits(outcome)

    child = gen.spawn(ACCEPTOR, 3, frozenset({signal.SIGUSR1}), build)
    assert gen.children == {child.pid: child} and child.ident == (ACCEPTOR, 3)
    assert built == []
    _, status = os.waitpid(child.pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == code


def test_exits_are_described_for_the_log():
    assert generation.describe_exit(3 << 8) == "exited with code 3"
    assert generation.describe_exit(signal.SIGKILL) == "was killed by SIGKILL (out of memory?)"
    assert generation.describe_exit(signal.SIGSEGV) == "was killed by SIGSEGV"
