"""End to end: the master dies (kill -9) and what a previous instance left
in the runtime directory.

When the master is SIGKILLed, its acceptors drain what they hold and the API
process keeps serving workers until the acceptors are gone: every client a
worker answers gets its answer. The last child out removes the runtime
directory and the pidfile. A later start removes the directory of an
instance killed whole, and never one a live server uses."""
from __future__ import annotations

import http.client
import os
import signal
import threading

from conftest import echo_app


def _ask(server, path: str, results: dict) -> None:
    c = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        c.request("GET", path)
        r = c.getresponse()
        results[path] = (r.status, r.read())
    except OSError as exc:
        results[path] = (None, repr(exc).encode())
    finally:
        c.close()


def test_master_kill9_answers_taken_requests_then_children_clean_up(
        start_server, worker_factory, tmp_path):
    pidfile = tmp_path / "prack.pid"
    s = start_server("--log-level", "debug", api_poll_timeout=1, acceptors=2,
                     server_pidfile=pidfile)
    assert pidfile.read_text() == "%d\n" % s.pid
    (made,) = os.listdir(s.runtime_dir)
    taken = threading.Semaphore(0)
    release = threading.Event()

    def app(env, body):
        taken.release()
        release.wait(30)
        return echo_app(env, body)

    n = 4
    for _ in range(n):
        worker_factory(s.api, app)
    results: dict = {}
    paths = ["/held/%d" % i for i in range(n)]
    clients = [threading.Thread(target=_ask, args=(s, path, results)) for path in paths]
    for t in clients:
        t.start()
    for _ in range(n):
        assert taken.acquire(timeout=10), "the workers never got every request"

    mark = s.log_mark()
    s.kill_master()
    # Every child has noticed before any worker answers.
    s.wait_log(r"API process: the master has gone; serving workers until the 2 linked",
               since=mark)
    for index in (0, 1):
        s.wait_log(r"acceptor %d: the master has gone; stopping" % index, since=mark)
    # A server starting meanwhile beside it leaves the draining children's
    # directory alone: they still hold its lock.
    other = start_server(acceptors=1, server_runtime_dir=s.runtime_dir)
    assert made in os.listdir(s.runtime_dir)
    assert not any("removing the runtime directory" in line for line in other.log)
    release.set()
    for t in clients:
        t.join(30)
    assert {path: results.get(path, (None,))[0] for path in paths} == \
        {path: 200 for path in paths}, results
    for path in paths:
        assert b'"PATH_INFO": "%s"' % path.encode() in results[path][1]

    s.wait_children_gone(30)
    s.wait_log(r"API process: the acceptors are gone; stopping", since=mark)
    s.wait_log(r"the master \(pid %d\) has gone and this is its last child: removed .*%s"
               % (s.pid, made), since=mark)
    assert made not in os.listdir(s.runtime_dir)
    assert not pidfile.exists()
    other.stop()
    assert os.listdir(s.runtime_dir) == []
    # The fixture checks that nothing is left in /dev/shm and no traceback.


def _kill_everything(server) -> None:
    children = server.children()
    assert children
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    server.kill_master()
    server.wait_children_gone(10)


def test_a_start_removes_the_runtime_directory_of_an_instance_killed_whole(
        start_server, tmp_path):
    pidfile = tmp_path / "prack.pid"
    first = start_server(acceptors=1, server_pidfile=pidfile)
    (stale,) = os.listdir(first.runtime_dir)
    stale = os.path.join(first.runtime_dir, stale)
    _kill_everything(first)
    assert os.path.exists(os.path.join(stale, "api.sock"))     # left behind
    assert pidfile.read_text() == "%d\n" % first.pid

    second = start_server(acceptors=1, server_pidfile=pidfile,
                          server_runtime_dir=first.runtime_dir)
    second.wait_log(r"removing the runtime directory %s: no process" % stale)
    second.wait_log(r"server.pidfile %s names pid %d, which is not a running Prack master"
                    % (pidfile, first.pid))
    assert not os.path.exists(stale)
    assert pidfile.read_text() == "%d\n" % second.pid
    assert len(os.listdir(first.runtime_dir)) == 1        # the second's own
    second.stop()
    assert os.listdir(first.runtime_dir) == []


def test_a_start_never_removes_a_live_servers_runtime_directory(start_server):
    first = start_server(acceptors=1)
    (live,) = os.listdir(first.runtime_dir)
    second = start_server(acceptors=1, server_runtime_dir=first.runtime_dir)
    assert sorted(os.listdir(first.runtime_dir)) != [live]      # both there
    assert live in os.listdir(first.runtime_dir)
    assert not any("removing the runtime directory" in line for line in second.log)
    for server in (first, second):
        c = server.api_client()
        c.request("GET", "/livez")
        assert c.getresponse().status == 200
    second.stop()
    assert os.listdir(first.runtime_dir) == [live]
    # A third start while the first runs: its directory is still in use.
    third = start_server(acceptors=1, server_runtime_dir=first.runtime_dir)
    assert live in os.listdir(first.runtime_dir)
    third.stop()
    assert os.listdir(first.runtime_dir) == [live]
