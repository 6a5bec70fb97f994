"""``prack-worker``: run a WSGI or ASGI application behind Prack, unchanged.

    prack-worker [--interface wsgi|asgi] [--api URL]... [--concurrency N] module:app

Errors in the command line or in loading the application are one
``prack-worker: error: ...`` line and exit status 2.
"""
from __future__ import annotations

import enum
import importlib
import logging
import os
import sys
from typing import List, Optional

import typer

from prack import __version__
from prack.worker import sdk

PROG = "prack-worker"

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Run a WSGI or ASGI application as a Prack worker: pull requests "
    "from one or more Prack fronts and post the responses back.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Interface(str, enum.Enum):
    wsgi = "wsgi"
    asgi = "asgi"


class LoadError(Exception):
    pass


def load_app(spec: str):
    """`module:attribute` (attribute may be dotted) -> the object. The
    current directory is importable, as with other app servers."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LoadError("%r: expected module:app (e.g. myproject.web:app)" % spec)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        if getattr(exc, "name", None) and module_name.startswith(exc.name):
            raise LoadError("cannot import module %r: %s" % (module_name, exc)) from None
        raise
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError("module %r has no attribute %r" % (module_name, attr)) from None
    if not callable(obj):
        raise LoadError("%s is not callable" % spec)
    return obj


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit(0)


@app.command()
def main_command(
    target: str = typer.Argument(..., metavar="MODULE:APP",
                                 help="The application, e.g. myproject.web:app."),
    interface: Interface = typer.Option(Interface.wsgi, "--interface", "-i",
                                        help="The application's interface."),
    api: Optional[List[str]] = typer.Option(
        None, "--api", metavar="URL",
        help="A Prack front's worker API; repeat to pull from several fronts. "
        "Default: " + sdk.DEFAULT_FRONT),
    concurrency: int = typer.Option(8, "--concurrency", "-c", min=1, max=4096,
                                    help="Requests handled at once (threads)."),
    batch: int = typer.Option(64, "--batch", min=1, max=256,
                              help="Most requests a thread takes at once (it adapts below "
                                   "this to the handler's speed)."),
    wait: float = typer.Option(2.0, "--wait", min=0.1, max=300,
                               help="Seconds each long poll waits; bounds how long a stop takes."),
    max_backoff: float = typer.Option(2.0, "--max-backoff", min=0.05, max=300,
                                      help="Longest pause between retries of a front that is down."),
    max_streams: int = typer.Option(1000, "--max-streams", min=1, max=100000,
                                    help="Streamed responses and WebSockets open at once "
                                         "(each has a thread of its own)."),
    grace: float = typer.Option(30.0, "--grace", min=0, max=3600,
                                help="Seconds open streams and WebSockets get to end on a "
                                     "stop before they are aborted."),
    log_level: str = typer.Option("info", "--log-level",
                                  help="debug, info, warning or error."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        _fail("--log-level: expected debug, info, warning or error, got %r" % log_level)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=PROG + "[%(process)d]: %(levelname)s: %(message)s")
    try:
        application = load_app(target)
    except LoadError as exc:
        _fail(str(exc))
    fronts = api or [sdk.DEFAULT_FRONT]
    if interface is Interface.asgi:
        from prack.worker.asgi import ASGIHandler
        handler = ASGIHandler(application)
    else:
        from prack.worker.wsgi import WSGIHandler
        handler = WSGIHandler(application)
    try:
        worker = sdk.Worker(handler, fronts, concurrency, batch=batch, wait=wait,
                            max_backoff=max_backoff, max_streams=max_streams)
    except ValueError as exc:
        _fail(str(exc))
    start = getattr(handler, "start", None)
    if start is not None:
        try:
            start()
        except Exception as exc:
            _fail("the application failed to start: %s" % exc)
    try:
        code = sdk.run(worker, grace)
    finally:
        close = getattr(handler, "close", None)
        if close is not None:
            close()
    raise typer.Exit(code)


def _fail(message: str):
    typer.echo(f"{PROG}: error: {message}", err=True)
    raise typer.Exit(2)


def main() -> None:
    app(prog_name=PROG)


if __name__ == "__main__":
    main()
