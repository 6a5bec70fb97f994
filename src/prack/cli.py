"""``prack-server``: the command line.

The options for individual settings are not written here: they are made from
``prack.config.SETTINGS`` (every setting that declares ``flags``).  This is
the only module that ends the process: a PrackError becomes one
``prack-server: error: ...`` line on stderr and exit status 2.

typer parses the command line, but the server does not run in the image that
imported it: ``main()`` re-executes the same command (same PID, same argv)
with the parsed options in ``PRACK_PARSED_ARGS``, and that image loads the
configuration and runs the master without importing typer.  Every child the
master forks shares the master's heap, and typer with what it imports
(pydantic, when installed) is most of it; see bench/analysis.md.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import traceback
from typing import Any, Optional

from prack import __version__, config

from prack.master import upgrade
from prack.errors import PrackError

PROG = "prack-server"

#: main()'s hand-over to the image that serves: ``{"config": path or null,
#: "flags": {setting name: value}}``, read once and removed.
ENV_PARSED = "PRACK_PARSED_ARGS"


def _param_name(setting: config.Setting) -> str:
    return f"set_{setting.section}_{setting.key}"


#: command-function parameter name -> setting, for settings with flags
_FLAG_PARAMS: dict[str, config.Setting] = {
    _param_name(s): s for s in config.SETTINGS if s.flags
}

#: set by main() when the command line it parses is this process's own, so
#: that serving can re-execute it (the typer app called directly, as the
#: tests do, serves in place)
_reexec = False


def _show_version(value: bool) -> None:
    import typer

    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit(0)


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return 2


def _serve(config_path: Optional[str], check: bool, flags: dict[str, Any]) -> int:
    """Load the configuration and run the master (``check``: print the
    effective configuration instead); the exit status, errors reported."""
    # Read (and removed from the environment) before anything can fail: a
    # new generation started by an upgrade reports its failure to the old
    # master through the inherited pipe.
    try:
        inherited = None if check else upgrade.Inherited.from_environment()
    except (OSError, ValueError) as e:
        return _error("inherited descriptors (%s): %s" % (upgrade.ENV_LISTEN_FDS, e))
    try:
        cfg = config.load(config_path, flags=flags)
        # Imported before --check returns: an upgrade's check (PID 1 re-exec)
        # then also proves that the new code imports.
        from prack.master import arbiter as master

        if check:
            sys.stdout.write(config.dump_toml(cfg))
            sys.stdout.flush()
            return 0
        return int(master.run(cfg, config_path=config_path) or 0)
    except PrackError as e:
        if inherited is not None:
            inherited.report("failed " + str(e))
        return _error(str(e))
    except Exception as e:  # noqa: BLE001 - new code that does not even import
        if inherited is None or inherited.upgrade_fd is None:
            raise
        # A new generation started by an upgrade: one line for the log and
        # for the old master, which keeps serving.
        where = traceback.extract_tb(e.__traceback__)[-1]
        reason = "%s: %s (%s:%d)" % (type(e).__name__, e, where.filename, where.lineno)
        inherited.report("failed " + reason)
        print(f"{PROG}: error: cannot start: {reason}", file=sys.stderr, flush=True)
        return 1


def _run(config_path: Optional[str], check: bool, **given: Any) -> None:
    import typer

    flags = {
        _FLAG_PARAMS[name].name: value
        for name, value in given.items()
        if value is not None
    }
    if _reexec and not check:
        os.environ[ENV_PARSED] = json.dumps({"config": config_path, "flags": flags})
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execv(sys.executable, sys.orig_argv)
        except OSError:
            # Serve from this image then: heavier, but serving.
            del os.environ[ENV_PARSED]
    raise typer.Exit(_serve(config_path, check, flags))


def _build_command() -> Any:
    import typer

    params = [
        inspect.Parameter(
            "config_path",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[str],
            default=typer.Option(
                None,
                "-c",
                "--config",
                envvar=config.CONFIG_ENV,
                show_envvar=True,
                metavar="FILE",
                help="TOML configuration file.",
            ),
        ),
        inspect.Parameter(
            "check",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=bool,
            default=typer.Option(
                False,
                "--check",
                help="Validate the configuration, print the effective "
                "configuration as TOML and exit.",
            ),
        ),
        inspect.Parameter(
            "version",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[bool],
            default=typer.Option(
                None,
                "--version",
                callback=_show_version,
                is_eager=True,
                help="Print the version and exit.",
            ),
        ),
    ]
    for name, s in _FLAG_PARAMS.items():
        is_bool = s.kind == "bool"
        if s.kind == "choice":
            metavar = "[" + "|".join(s.choices) + "]"
        else:
            metavar = s.kind_impl.metavar
        option = typer.Option(
            None,
            *s.flags,
            help=f"{s.help} [{s.name}, env {s.env}]",
            metavar=None if is_bool else metavar,
            show_default=False,
        )
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Optional[bool] if is_bool else Optional[str],
                default=option,
            )
        )

    def serve(**kwargs: Any) -> None:
        kwargs.pop("version", None)
        _run(kwargs.pop("config_path"), kwargs.pop("check"), **kwargs)

    serve.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    serve.__annotations__ = {p.name: p.annotation for p in params}
    serve.__annotations__["return"] = None
    serve.__doc__ = (
        "Run the Prack server.  Settings come from defaults, the TOML file, "
        "PRACK_<SECTION>_<KEY> environment variables and these flags, later "
        "ones winning; see docs/configuration.md."
    )
    return serve


def _make_app() -> Any:
    import typer

    app = typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        help="Pull-based HTTP front server: clients speak HTTP to the acceptors, "
        "app workers pull the requests over the worker API.",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.command()(_build_command())
    return app


def __getattr__(name: str) -> Any:
    # ``prack.cli.app``, the typer application, is made (and typer imported)
    # on first use: the image that serves never needs it.
    if name == "app":
        app = globals()["app"] = _make_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: parse ``argv`` (default: this process's
    own command line, which serving then re-executes) and run."""
    global _reexec
    parsed = os.environ.pop(ENV_PARSED, None)
    if parsed is not None and argv is None:
        # The image main() re-executed: the command line is parsed already.
        try:
            given = json.loads(parsed)
            config_path, flags = given["config"], given["flags"]
            if not isinstance(flags, dict) or not isinstance(config_path, (str, type(None))):
                raise TypeError("expected a config path and a flags object")
        except (ValueError, KeyError, TypeError) as e:
            sys.exit(_error("%s: %s" % (ENV_PARSED, e)))
        try:
            sys.exit(_serve(config_path, False, flags))
        except KeyboardInterrupt:
            # Ctrl-C before the master's handlers are in place, as click
            # answers it while typer runs.
            print("Aborted!", file=sys.stderr)
            sys.exit(1)
    _reexec = argv is None
    __getattr__("app")(args=argv, prog_name=PROG)


if __name__ == "__main__":
    main()
