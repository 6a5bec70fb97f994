"""prack-server command line."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

import prack
from prack import cli, config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def runner(monkeypatch):
    for name in list(os.environ):
        if name.startswith("PRACK_"):
            monkeypatch.delenv(name)
    return CliRunner()


@pytest.fixture
def fake_master(monkeypatch):
    """Stand in for prack.master.arbiter so the CLI can be run without a server."""
    import prack.master
    calls = []
    module = types.ModuleType("prack.master.arbiter")

    def run(cfg, *, config_path):
        calls.append((cfg, config_path))
        return module.exit_code

    module.run = run
    module.exit_code = 0
    monkeypatch.setitem(sys.modules, "prack.master.arbiter", module)
    monkeypatch.setattr(prack.master, "arbiter", module, raising=False)
    module.calls = calls
    return module


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PRACK_")}
    # The prack this test process imported (installed, or built in place):
    # --check imports the whole server, C core included.
    full_env["PYTHONPATH"] = os.path.dirname(os.path.dirname(prack.__file__))
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "prack.cli", *args],
        capture_output=True, text=True, env=full_env, timeout=60,
    )


def test_check_prints_effective_config(runner):
    result = runner.invoke(cli.app, [
        "--check", "-b", "127.0.0.1:9000", "-a", "3", "--api-bind", "[::1]:5000",
        "--log-level", "debug", "--access-log",
    ])
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.stdout)
    assert data["server"]["bind"] == "127.0.0.1:9000"
    assert data["server"]["acceptors"] == 3
    assert data["api"]["bind"] == "[::1]:5000"
    assert data["logging"]["level"] == "debug"
    assert data["logging"]["access_log"] is True
    assert data["limits"]["max_body_size"] == 1 << 20
    assert result.stderr == ""


def test_check_long_flags_and_negated_bool(runner, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[logging]\naccess_log = true\n")
    result = runner.invoke(cli.app, [
        "--config", str(path), "--check", "--bind", "127.0.0.1:1",
        "--acceptors", "2", "--no-access-log",
    ])
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.stdout)
    assert data["server"]["bind"] == "127.0.0.1:1"
    assert data["server"]["acceptors"] == 2
    assert data["logging"]["access_log"] is False


def test_check_output_loads_back(runner, tmp_path):
    result = runner.invoke(cli.app, ["--check", "-a", "4"])
    path = tmp_path / "dump.toml"
    path.write_text(result.stdout)
    assert config.load(str(path), env={}) == config.load(env={}, flags={"server.acceptors": 4})


def test_config_file_from_environment(runner, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[server]\nbacklog = 7\n")
    result = runner.invoke(cli.app, ["--check"], env={"PRACK_CONFIG": str(path)})
    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.stdout)["server"]["backlog"] == 7


def test_environment_overrides_file_and_flags_override_environment(runner, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[server]\nbind = "127.0.0.1:1"\nbacklog = 5\n')
    result = runner.invoke(
        cli.app, ["-c", str(path), "--check", "-b", "127.0.0.1:3"],
        env={"PRACK_SERVER_BIND": "127.0.0.1:2", "PRACK_SERVER_BACKLOG": "6"},
    )
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.stdout)
    assert data["server"]["bind"] == "127.0.0.1:3"
    assert data["server"]["backlog"] == 6


def test_bad_file_exits_2_with_one_line(runner, tmp_path):
    path = tmp_path / "prack.toml"
    path.write_text('[limits]\nmax_body_size = "lots"\n')
    result = runner.invoke(cli.app, ["-c", str(path), "--check"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f'prack-server: error: {path}: limits.max_body_size: '
        f'expected a size like 1048576 or "1M", got "lots"\n'
    )


def test_bad_flag_value_exits_2(runner):
    result = runner.invoke(cli.app, ["--check", "-b", "nope"])
    assert result.exit_code == 2
    assert result.stderr == 'prack-server: error: --bind: expected HOST:PORT, got "nope"\n'
    result = runner.invoke(cli.app, ["--check", "-a", "x"])
    assert result.exit_code == 2
    assert "--acceptors: expected an integer from 0 to 256" in result.stderr


def test_bad_environment_exits_2(runner):
    result = runner.invoke(cli.app, ["--check"], env={"PRACK_SERVER_FOO": "1"})
    assert result.exit_code == 2
    assert result.stderr == "prack-server: error: environment PRACK_SERVER_FOO: unknown setting\n"


def test_help_lists_generated_flags(runner):
    result = runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for s in config.SETTINGS:
        for flag in s.flags:
            for part in flag.split("/"):
                assert part in result.stdout, part
    for flag in ("-c", "--config", "--check", "--version", "PRACK_CONFIG"):
        assert flag in result.stdout
    assert "[::1]:8080" in result.stdout  # help text is not eaten as markup


def test_version(runner):
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"prack-server {prack.__version__}"


def test_unknown_option_is_a_usage_error(runner):
    result = runner.invoke(cli.app, ["--bogus"])
    assert result.exit_code == 2
    assert "--bogus" in result.stderr


def test_runs_master_with_config(runner, fake_master, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[server]\nbacklog = 9\n")
    fake_master.exit_code = 0
    result = runner.invoke(cli.app, ["-c", str(path), "-a", "2"])
    assert result.exit_code == 0, result.output
    [(cfg, config_path)] = fake_master.calls
    assert config_path == str(path)
    assert cfg.server.backlog == 9
    assert cfg.server.acceptors == 2


def test_master_exit_code_is_passed_on(runner, fake_master):
    fake_master.exit_code = 3
    result = runner.invoke(cli.app, [])
    assert result.exit_code == 3
    [(cfg, config_path)] = fake_master.calls
    assert config_path is None
    assert cfg == config.load(env={})


def test_master_prack_error_exits_2(runner, fake_master):
    from prack.errors import StartupError

    def run(cfg, *, config_path):
        raise StartupError("server.bind: 127.0.0.1:8080: Address already in use")

    fake_master.run = run
    result = runner.invoke(cli.app, [])
    assert result.exit_code == 2
    assert result.stderr == (
        "prack-server: error: server.bind: 127.0.0.1:8080: Address already in use\n"
    )


def test_check_does_not_start_master(runner, fake_master):
    result = runner.invoke(cli.app, ["--check"])
    assert result.exit_code == 0
    assert fake_master.calls == []


def test_python_m_check(tmp_path):
    out = run_module("--check", "-b", "127.0.0.1:9000", "-a", "3", "--api-bind", "127.0.0.1:9001")
    assert out.returncode == 0, out.stderr
    data = tomllib.loads(out.stdout)
    assert data["server"]["bind"] == "127.0.0.1:9000"
    assert data["server"]["acceptors"] == 3
    assert data["api"]["bind"] == "127.0.0.1:9001"


def test_python_m_bad_file_no_traceback(tmp_path):
    path = tmp_path / "prack.toml"
    path.write_text("[server]\nbnd = 1\n")
    out = run_module("-c", str(path))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"prack-server: error: {path}: server.bnd: unknown setting")
    assert out.stdout == ""


def test_python_m_missing_file_and_bad_toml(tmp_path):
    missing = tmp_path / "missing.toml"
    out = run_module("-c", str(missing), "--check")
    assert out.returncode == 2
    assert out.stderr == (
        f"prack-server: error: {missing}: cannot read: No such file or directory\n"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    out = run_module("--check", env={"PRACK_CONFIG": str(bad)})
    assert out.returncode == 2
    assert out.stderr.startswith(f"prack-server: error: {bad}: line 1: invalid TOML: ")
    assert "Traceback" not in out.stderr


def test_main_function(monkeypatch, capsys):
    for name in list(os.environ):
        if name.startswith("PRACK_"):
            monkeypatch.delenv(name)
    with pytest.raises(SystemExit) as info:
        cli.main(["--check", "-a", "1"])
    assert info.value.code == 0
    assert tomllib.loads(capsys.readouterr().out)["server"]["acceptors"] == 1
    with pytest.raises(SystemExit) as info:
        cli.main(["--check", "-a", "999"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("prack-server: error: --acceptors:")


def test_python_m_runtime_dir_that_cannot_hold_ours_no_traceback(tmp_path):
    """server.runtime_dir exists but no directory can be made in it: one
    line naming the key and the reason (mkdtemp's error was a traceback)."""
    if os.geteuid() == 0:
        base = "/proc"          # root may write anywhere else
    else:
        base = str(tmp_path / "ro")
        os.mkdir(base, 0o500)
    out = run_module("-b", "127.0.0.1:0", "--api-bind", "127.0.0.1:0", "-a", "1",
                     env={"PRACK_SERVER_RUNTIME_DIR": base})
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines()[-1].startswith(
        "prack-server: error: server.runtime_dir %s: " % base), out.stderr


def test_python_m_serves_from_a_reexecuted_image(tmp_path):
    """main() hands the parsed command line to the image it re-executes in
    PRACK_PARSED_ARGS; a bad hand-over is one error line, and the handed-over
    options are the ones used (here: a bad bind address, reported by config)."""
    out = run_module(env={cli.ENV_PARSED: "{"})
    assert out.returncode == 2
    assert out.stderr.startswith(f"prack-server: error: {cli.ENV_PARSED}: ")
    assert len(out.stderr.splitlines()) == 1
    out = run_module("-b", "nope")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("prack-server: error: --bind: ")
    assert "Traceback" not in out.stderr
