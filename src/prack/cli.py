"""``prack-server``: the command line.

The options for individual settings are not written here: they are made from
``prack.config.SETTINGS`` (every setting that declares ``flags``).  This is
the only module that ends the process: a PrackError becomes one
``prack-server: error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import inspect
import traceback
from typing import Any, Optional

import typer

from prack import __version__, config, upgrade
from prack.errors import PrackError

PROG = "prack-server"

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Pull-based HTTP front server: clients speak HTTP to the acceptors, "
    "app workers pull the requests over the worker API.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _param_name(setting: config.Setting) -> str:
    return f"set_{setting.section}_{setting.key}"


#: command-function parameter name -> setting, for settings with flags
_FLAG_PARAMS: dict[str, config.Setting] = {
    _param_name(s): s for s in config.SETTINGS if s.flags
}


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit(0)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"{PROG}: error: {message}", err=True)
    return typer.Exit(2)


def _run(config_path: Optional[str], check: bool, **given: Any) -> None:
    flags = {
        _FLAG_PARAMS[name].name: value
        for name, value in given.items()
        if value is not None
    }
    # Read (and removed from the environment) before anything can fail: a
    # new generation started by an upgrade reports its failure to the old
    # master through the inherited pipe.
    try:
        inherited = None if check else upgrade.Inherited.from_environment()
    except (OSError, ValueError) as e:
        raise _fail("inherited descriptors (%s): %s" % (upgrade.ENV_LISTEN_FDS, e)) from None
    try:
        cfg = config.load(config_path, flags=flags)
        # Imported before --check returns: an upgrade's check (PID 1 re-exec)
        # then also proves that the new code imports.
        from prack import master

        if check:
            typer.echo(config.dump_toml(cfg), nl=False)
            return
        code = master.run(cfg, config_path=config_path)
    except PrackError as e:
        if inherited is not None:
            inherited.report("failed " + str(e))
        raise _fail(str(e)) from None
    except Exception as e:  # noqa: BLE001 - new code that does not even import
        if inherited is None or inherited.upgrade_fd is None:
            raise
        # A new generation started by an upgrade: one line for the log and
        # for the old master, which keeps serving.
        where = traceback.extract_tb(e.__traceback__)[-1]
        reason = "%s: %s (%s:%d)" % (type(e).__name__, e, where.filename, where.lineno)
        inherited.report("failed " + reason)
        typer.echo(f"{PROG}: error: cannot start: {reason}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(int(code or 0))


def _build_command() -> Any:
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


app.command()(_build_command())


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: parse ``argv`` (default sys.argv) and run."""
    app(args=argv, prog_name=PROG)


if __name__ == "__main__":
    main()
