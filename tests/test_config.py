"""Configuration: defaults, layering, validation messages, generated text."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from prack import config
from prack.config import ConfigError, load
from prack.errors import PrackError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "prack.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def error_of(*args, **kwargs) -> str:
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as info:
        load(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- defaults -----------------------------------------------------------------


def test_defaults():
    cfg = load(env={})
    assert cfg.server.bind == "127.0.0.1:8080"
    assert cfg.server.backlog == 1024
    assert cfg.server.max_connections == 1024
    assert cfg.server.runtime_dir == ""
    assert cfg.server.server_header == "Prack"
    assert cfg.api.bind == "127.0.0.1:4242"
    assert cfg.api.poll_timeout == 5.0
    assert cfg.api.max_request_size == 32 * 1024 * 1024
    assert cfg.limits.max_body_size == 1024 * 1024
    assert cfg.limits.max_header_size == 32 * 1024
    assert cfg.limits.max_request_line == 8 * 1024
    assert cfg.limits.max_headers == 100
    assert cfg.limits.ring_size == 8 * 1024 * 1024
    assert cfg.timeouts.header_timeout == 60.0
    assert cfg.timeouts.body_timeout == 60.0
    assert cfg.timeouts.keepalive_timeout == 75.0
    assert cfg.timeouts.send_timeout == 60.0
    assert cfg.timeouts.queue_timeout == 30.0
    assert cfg.timeouts.response_timeout == 60.0
    assert cfg.timeouts.graceful_timeout == 30.0
    assert cfg.logging.level == "info"
    assert cfg.logging.access_log is False


def test_stored_types():
    cfg = load(env={})
    for s in config.SETTINGS:
        value = getattr(getattr(cfg, s.section), s.key)
        expected = {
            "address": str, "str": str, "header": str, "choice": str, "urlprefix": str,
            "int": int, "size": int, "duration": float, "bool": bool,
        }[s.kind]
        assert type(value) is expected, s.name


def test_config_is_frozen_and_picklable():
    cfg = load(env={})
    with pytest.raises(AttributeError):
        cfg.server.bind = "0.0.0.0:1"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert hash(cfg) == hash(load(env={}))


def test_acceptors_zero_resolves_to_cpu_count(monkeypatch):
    monkeypatch.setattr(config, "_cpu_count", lambda: 6)
    assert load(env={}).server.acceptors == 6
    monkeypatch.setattr(config, "_cpu_count", lambda: 1000)
    assert load(env={}).server.acceptors == 256
    assert load(env={}, flags={"server.acceptors": 3}).server.acceptors == 3


def test_acceptors_resolves_real_cpu_count():
    assert load(env={}).server.acceptors >= 1


def test_settings_table_is_consistent():
    names = [s.name for s in config.SETTINGS]
    assert len(names) == len(set(names))
    envs = [s.env for s in config.SETTINGS]
    assert len(envs) == len(set(envs))
    assert config.BY_NAME["limits.max_body_size"].env == "PRACK_LIMITS_MAX_BODY_SIZE"
    assert {s.section for s in config.SETTINGS} == set(config.SECTIONS)


# -- layering -----------------------------------------------------------------


def test_file_values(tmp_path):
    path = write(tmp_path, """
[server]
bind = "[::1]:9000"
acceptors = 2
server_header = ""

[limits]
max_body_size = "2M"
max_header_size = 16384
ring_size = "1g"

[timeouts]
header_timeout = 1.5
body_timeout = 7

[logging]
level = "debug"
access_log = true
""")
    cfg = load(path, env={})
    assert cfg.server.bind == "[::1]:9000"
    assert cfg.server.acceptors == 2
    assert cfg.server.server_header == ""
    assert cfg.limits.max_body_size == 2 * 1024 * 1024
    assert cfg.limits.max_header_size == 16384
    assert cfg.limits.ring_size == 1 << 30
    assert cfg.timeouts.header_timeout == 1.5
    assert cfg.timeouts.body_timeout == 7.0
    assert isinstance(cfg.timeouts.body_timeout, float)
    assert cfg.logging.level == "debug"
    assert cfg.logging.access_log is True
    # untouched settings keep their defaults
    assert cfg.api.bind == "127.0.0.1:4242"


def test_empty_file_gives_defaults(tmp_path):
    assert load(write(tmp_path, ""), env={}) == load(env={})


def test_precedence_file_env_flags(tmp_path):
    path = write(tmp_path, '[server]\nbind = "127.0.0.1:1"\nbacklog = 10\nacceptors = 1\n')
    env = {"PRACK_SERVER_BIND": "127.0.0.1:2", "PRACK_SERVER_BACKLOG": "20"}
    cfg = load(path, env=env, flags={"server.bind": "127.0.0.1:3"})
    assert cfg.server.bind == "127.0.0.1:3"  # flag beats env and file
    assert cfg.server.backlog == 20  # env beats file
    assert cfg.server.acceptors == 1  # file beats default
    cfg = load(path, env=env)
    assert cfg.server.bind == "127.0.0.1:2"


def test_flags_none_means_not_given(tmp_path):
    path = write(tmp_path, '[server]\nbind = "127.0.0.1:1"\n')
    cfg = load(path, env={}, flags={"server.bind": None, "logging.access_log": None})
    assert cfg.server.bind == "127.0.0.1:1"
    assert cfg.logging.access_log is False


def test_flags_typed_and_text():
    cfg = load(env={}, flags={
        "server.acceptors": 4,
        "server.backlog": "12",
        "logging.access_log": True,
        "limits.max_body_size": "512k",
        "timeouts.send_timeout": "2.5",
        "api.poll_timeout": 0,
        "logging.level": "WARNING",
    })
    assert cfg.server.acceptors == 4
    assert cfg.server.backlog == 12
    assert cfg.logging.access_log is True
    assert cfg.limits.max_body_size == 512 * 1024
    assert cfg.timeouts.send_timeout == 2.5
    assert cfg.api.poll_timeout == 0.0
    assert cfg.logging.level == "warning"


def test_environment_values():
    env = {
        "PRACK_SERVER_ACCEPTORS": "5",
        "PRACK_API_MAX_REQUEST_SIZE": "64M",
        "PRACK_TIMEOUTS_QUEUE_TIMEOUT": "0.25",
        "PRACK_LOGGING_ACCESS_LOG": "yes",
        "PRACK_SERVER_RUNTIME_DIR": "/run/prack",
        "PRACK_CONFIG": "/nonexistent.toml",  # reserved for the CLI; ignored
        "PRACK_SOMETHING_ELSE": "x",  # not a section prefix; ignored
        "prack_server_bind": "nope",  # names are upper case
    }
    cfg = load(env=env)
    assert cfg.server.acceptors == 5
    assert cfg.api.max_request_size == 64 << 20
    assert cfg.timeouts.queue_timeout == 0.25
    assert cfg.logging.access_log is True
    assert cfg.server.runtime_dir == "/run/prack"
    assert cfg.server.bind == "127.0.0.1:8080"


def test_environment_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("PRACK_SERVER_BACKLOG", "77")
    assert load().server.backlog == 77


@pytest.mark.parametrize("text, expected", [
    (0, 0), (1536, 1536), ("1536", 1536), ("1k", 1024), ("1K", 1024),
    ("3m", 3 << 20), ("3M", 3 << 20), ("2g", 2 << 30), ("2G", 2 << 30),
    (" 4 k ", 4096),
])
def test_parse_size(text, expected):
    assert config.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "k", "1.5M", "1T", "-1", -1, "1 MB", True, 1.0])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        config.parse_size(text)


def test_format_size():
    assert config.format_size(1 << 20) == "1M"
    assert config.format_size(32 * 1024) == "32k"
    assert config.format_size(3 << 30) == "3G"
    assert config.format_size(1000) == "1000"
    assert config.format_size(0) == "0"


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("localhost:65535", ("localhost", 65535)),
    ("[::1]:8080", ("::1", 8080)),
    ("[::]:80", ("::", 80)),
    ("example.com:443", ("example.com", 443)),
])
def test_parse_address(text, expected):
    assert config.parse_address(text) == expected


@pytest.mark.parametrize("text", [
    "nope", "127.0.0.1", ":8080", "127.0.0.1:", "127.0.0.1:x", "1.2.3.4:65536",
    "::1:8080", "[::1:8080", "[nothost]:80", "300.1.1.1:80", "bad_host:80",
    "a b:80", "127.0.0.1:-1",
])
def test_parse_address_rejects(text):
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        config.parse_address(text)


# -- error messages -----------------------------------------------------------


def test_error_is_a_prack_error():
    assert issubclass(ConfigError, PrackError)


def test_bad_size_string(tmp_path):
    path = write(tmp_path, '[limits]\nmax_body_size = "lots"\n')
    assert error_of(path) == (
        f'{path}: limits.max_body_size: expected a size like 1048576 or "1M", got "lots"'
    )


def test_unknown_key_in_file(tmp_path):
    path = write(tmp_path, '[server]\nbnd = "127.0.0.1:1"\n')
    message = error_of(path)
    assert message.startswith(f"{path}: server.bnd: unknown setting")
    assert "server.bind" in message  # suggestion


def test_unknown_section_in_file(tmp_path):
    path = write(tmp_path, "[sever]\n")
    assert error_of(path).startswith(f"{path}: sever: unknown section")


def test_setting_outside_a_section(tmp_path):
    path = write(tmp_path, 'backlog = 5\n')
    message = error_of(path)
    assert message.startswith(f"{path}: backlog: unknown section")
    assert "server.backlog" in message


def test_section_not_a_table(tmp_path):
    path = write(tmp_path, "server = 3\n")
    assert error_of(path) == f"{path}: server: expected a table like [server], got 3"


def test_nested_table_is_unknown(tmp_path):
    path = write(tmp_path, "[server.extra]\n")
    assert error_of(path) == f"{path}: server.extra: unknown setting"


def test_wrong_type(tmp_path):
    path = write(tmp_path, '[server]\nacceptors = "3"\n')
    assert error_of(path) == (
        f'{path}: server.acceptors: expected an integer from 0 to 256, got "3"'
    )
    path = write(tmp_path, '[logging]\naccess_log = "yes"\n')
    assert error_of(path) == f'{path}: logging.access_log: expected true or false, got "yes"'
    path = write(tmp_path, "[server]\nbind = 8080\n")
    assert error_of(path) == f"{path}: server.bind: expected HOST:PORT, got 8080"
    path = write(tmp_path, "[limits]\nmax_body_size = 1.5\n")
    assert "limits.max_body_size: expected a size" in error_of(path)
    path = write(tmp_path, "[server]\nacceptors = true\n")
    assert error_of(path).endswith("server.acceptors: expected an integer from 0 to 256, got true")
    path = write(tmp_path, "[timeouts]\nsend_timeout = [1]\n")
    assert error_of(path).endswith("timeouts.send_timeout: expected a number of seconds greater than 0, got an array")


def test_out_of_range(tmp_path):
    path = write(tmp_path, "[server]\nacceptors = 300\n")
    assert error_of(path) == f"{path}: server.acceptors: expected an integer from 0 to 256, got 300"
    path = write(tmp_path, "[limits]\nmax_headers = 0\n")
    assert error_of(path).endswith("limits.max_headers: expected an integer from 1 to 1000, got 0")
    path = write(tmp_path, "[timeouts]\nheader_timeout = 0\n")
    assert error_of(path).endswith(
        "timeouts.header_timeout: expected a number of seconds greater than 0, got 0"
    )
    path = write(tmp_path, "[timeouts]\nheader_timeout = inf\n")
    assert "timeouts.header_timeout: expected" in error_of(path)
    path = write(tmp_path, "[api]\npoll_timeout = 301\n")
    assert error_of(path).endswith(
        "api.poll_timeout: expected a number of seconds from 0 to 300, got 301"
    )
    path = write(tmp_path, "[limits]\nmax_header_size = 100\n")
    assert error_of(path).endswith(
        "limits.max_header_size: expected a size of at least 1k, got 100"
    )
    path = write(tmp_path, "[limits]\nmax_request_line = 255\n")
    assert "limits.max_request_line: expected a size of at least 256, got 255" in error_of(path)


def test_bad_choice_and_header(tmp_path):
    path = write(tmp_path, '[logging]\nlevel = "loud"\n')
    assert error_of(path) == (
        f'{path}: logging.level: expected one of debug, info, warning, error, got "loud"'
    )
    path = write(tmp_path, '[server]\nserver_header = "a\\r\\nX-Evil: 1"\n')
    message = error_of(path)
    assert message.startswith(f"{path}: server.server_header: expected printable ASCII")
    assert "\r" not in message


def test_bad_address(tmp_path):
    path = write(tmp_path, '[api]\nbind = "nope"\n')
    assert error_of(path) == f'{path}: api.bind: expected HOST:PORT, got "nope"'
    path = write(tmp_path, '[server]\nbind = "127.0.0.1:70000"\n')
    assert error_of(path) == (
        f'{path}: server.bind: expected HOST:PORT with a port from 0 to 65535, '
        f'got "127.0.0.1:70000"'
    )
    assert error_of(flags={"server.bind": "nope"}) == '--bind: expected HOST:PORT, got "nope"'


def test_bad_toml(tmp_path):
    path = write(tmp_path, '[server]\nbacklog = 1\nbind = \n')
    message = error_of(path)
    assert message.startswith(f"{path}: line 3: invalid TOML: ")
    path = write(tmp_path, 'x = """abc')
    assert error_of(path).startswith(f"{path}: invalid TOML: ")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[server]\nserver_header = '\xe9'\n")
    assert error_of(str(path)) == f"{path}: line 2: invalid TOML: not UTF-8 text"


def test_missing_file(tmp_path):
    path = str(tmp_path / "missing.toml")
    assert error_of(path) == f"{path}: cannot read: No such file or directory"


def test_directory_as_file(tmp_path):
    assert error_of(str(tmp_path)).startswith(f"{tmp_path}: cannot read: ")


def test_environment_errors():
    assert error_of(env={"PRACK_SERVER_ACCEPTORS": "x"}) == (
        'environment PRACK_SERVER_ACCEPTORS: expected an integer from 0 to 256, got "x"'
    )
    assert error_of(env={"PRACK_SERVER_FOO": "1"}) == (
        "environment PRACK_SERVER_FOO: unknown setting"
    )
    assert error_of(env={"PRACK_SERVER_BACKLOGG": "1"}) == (
        "environment PRACK_SERVER_BACKLOGG: unknown setting "
        "(did you mean PRACK_SERVER_BACKLOG?)"
    )
    assert error_of(env={"PRACK_LOGGING_ACCESS_LOG": "maybe"}) == (
        'environment PRACK_LOGGING_ACCESS_LOG: expected true or false, got "maybe"'
    )
    assert error_of(env={"PRACK_LIMITS_MAX_BODY_SIZE": "1.5M"}) == (
        'environment PRACK_LIMITS_MAX_BODY_SIZE: expected a size like 1048576 or "1M", '
        'got "1.5M"'
    )
    assert error_of(env={"PRACK_TIMEOUTS_BODY_TIMEOUT": "nan"}).startswith(
        "environment PRACK_TIMEOUTS_BODY_TIMEOUT: expected a number of seconds"
    )


def test_flag_errors():
    assert error_of(flags={"server.acceptors": "many"}) == (
        '--acceptors: expected an integer from 0 to 256, got "many"'
    )
    assert error_of(flags={"logging.level": "loud"}) == (
        '--log-level: expected one of debug, info, warning, error, got "loud"'
    )
    assert error_of(flags={"logging.access_log": "perhaps"}) == (
        '--access-log: expected true or false, got "perhaps"'
    )
    # settings without a command-line flag still work programmatically
    assert error_of(flags={"server.backlog": 0}) == (
        "option server.backlog: expected an integer from 1 to 65535, got 0"
    )
    assert error_of(flags={"server.nope": 1}) == "option server.nope: unknown setting"


def test_ring_size_rule(tmp_path):
    # 2 * (1M + 2 * 32k) + 64k = 2293760: the defaults leave room
    need = 2 * (1024 * 1024 + 2 * 32 * 1024) + 64 * 1024
    assert load(env={}, flags={"limits.ring_size": need}).limits.ring_size == need
    message = error_of(flags={"limits.ring_size": need - 1})
    assert message.startswith("option limits.ring_size: limits.ring_size: must be at least 2293760 bytes")
    assert message.endswith(f"got {need - 1} bytes")
    # the blame goes to the strongest source that took part
    path = write(tmp_path, '[limits]\nmax_body_size = "10M"\ninline_body_size = "10M"\n')
    message = error_of(path)
    assert message.startswith(f"{path}: limits.ring_size: must be at least 21168128 bytes")
    message = error_of(path, env={"PRACK_LIMITS_MAX_HEADER_SIZE": "64k"})
    assert message.startswith("environment PRACK_LIMITS_MAX_HEADER_SIZE: limits.ring_size:")
    # raising the ring fixes it
    cfg = load(path, env={"PRACK_LIMITS_RING_SIZE": "32M"})
    assert cfg.limits.ring_size == 32 << 20
    # only the bodies kept inline must fit: larger ones are spooled, so a
    # large max_body_size needs no larger ring
    cfg = load(env={}, flags={"limits.max_body_size": "200M"})
    assert cfg.limits.max_body_size == 200 << 20 and cfg.limits.ring_size == 8 << 20
    message = error_of(flags={"limits.max_body_size": "200M", "limits.inline_body_size": "8M"})
    assert message.startswith("option limits.")
    assert "limits.ring_size: must be at least 16973824 bytes" in message


# -- generated text -----------------------------------------------------------


def test_dump_toml_round_trip(tmp_path):
    cfg = load(env={}, flags={
        "server.bind": "[::1]:0",
        "server.acceptors": 3,
        "server.server_header": 'Pr"ack\\1',
        "server.runtime_dir": "/tmp/x y",
        "limits.max_body_size": "3k",
        "timeouts.header_timeout": 0.125,
        "logging.access_log": True,
        "logging.level": "error",
    })
    text = config.dump_toml(cfg)
    data = tomllib.loads(text)
    assert list(data) == list(config.SECTIONS)
    assert data["limits"]["max_body_size"] == 3072
    assert data["timeouts"]["header_timeout"] == 0.125
    assert load(write(tmp_path, text), env={}) == cfg
    default = load(env={})
    assert load(write(tmp_path, config.dump_toml(default)), env={}) == default


def test_dump_has_every_setting():
    data = tomllib.loads(config.dump_toml(load(env={})))
    assert sum(len(t) for t in data.values()) == len(config.SETTINGS)


def test_config_docs_match_declarations():
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert text == config.markdown(), (
        "docs/configuration.md is stale: run "
        "`python -m prack.config --markdown > docs/configuration.md`"
    )


def test_markdown_mentions_every_setting():
    text = config.markdown()
    for s in config.SETTINGS:
        assert f"`{s.key}`" in text and f"`{s.env}`" in text
        assert s.help in text
    assert "`-b`, `--bind`" in text


def test_example_file_matches_declarations():
    path = ROOT / "examples" / "prack.toml"
    assert path.read_text() == config.example_toml(), (
        "examples/prack.toml is stale: run "
        "`python -m prack.config --example > examples/prack.toml`"
    )
    assert load(str(path), env={}) == load(env={})


def test_module_main_prints_markdown():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run(
        [sys.executable, "-m", "prack.config", "--markdown"],
        capture_output=True, text=True, env=env, check=True,
    )
    assert out.stdout == config.markdown()
    bad = subprocess.run(
        [sys.executable, "-m", "prack.config", "--nope"],
        capture_output=True, text=True, env=env,
    )
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_config_struct_rejects_unknown_fields():
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"server": {"nope": 1}}, config.Config)


@pytest.mark.parametrize("prefix", ["static/", "/static", "/a b/", "/a?b/", "/x#/"])
def test_static_prefix_must_be_a_slashed_url_path(prefix):
    with pytest.raises(ConfigError, match="starts and ends with /"):
        load(env={"PRACK_STATIC_PREFIX": prefix})


def test_static_root_must_be_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="static.root: .* is not a directory"):
        load(env={"PRACK_STATIC_ROOT": str(f)})
    with pytest.raises(ConfigError, match="static.root: .* does not exist"):
        load(env={"PRACK_STATIC_ROOT": str(tmp_path / "nope")})
    assert load(env={"PRACK_STATIC_ROOT": str(tmp_path)}).static.root == str(tmp_path)


def test_api_idle_timeout_defaults_to_twice_the_poll_timeout_and_a_margin():
    assert config.load(env={}).api.idle_timeout == 2 * 5.0 + 60
    assert config.load(env={"PRACK_API_POLL_TIMEOUT": "30"}).api.idle_timeout == 120.0
    assert config.load(env={"PRACK_API_IDLE_TIMEOUT": "5"}).api.idle_timeout == 5.0


def test_api_connection_settings_refuse_bad_values_naming_them(tmp_path):
    path = tmp_path / "prack.toml"
    path.write_text("[api]\nmax_connections = 5\n")
    with pytest.raises(ConfigError, match=r"api\.max_connections: expected an integer from 16"):
        config.load(str(path), env={})
    path.write_text("[api]\nidle_timeout = -1\n")
    with pytest.raises(ConfigError, match=r"api\.idle_timeout: expected a number of seconds"):
        config.load(str(path), env={})
