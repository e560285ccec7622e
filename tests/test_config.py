"""Tests for tui_passenger.config: parsing, defaults, and one-line error messages."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

from tui_passenger.config import (
    APP_KEYS,
    INHERITABLE_KEYS,
    SERVER_KEYS,
    AppConfig,
    Config,
    ConfigError,
    ServerConfig,
    apply_overrides,
    load_config,
    parse_config,
)


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    """A directory with two app roots, each holding a passenger_wsgi.py."""
    for name in ("hello", "api"):
        (tmp_path / "apps" / name).mkdir(parents=True)
        (tmp_path / "apps" / name / "passenger_wsgi.py").write_text("application = None\n")
    return tmp_path


def write(directory: Path, text: str, name: str = "passenger.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def error_for(directory: Path, text: str) -> ConfigError:
    """Load ``text`` from a file and return the ConfigError it must raise."""
    with pytest.raises(ConfigError) as info:
        load_config(write(directory, text))
    err = info.value
    assert "\n" not in str(err)
    return err


TWO_APPS = """\
[server]
port = 3000

[[app]]
name = "hello"
root = "apps/hello"

[[app]]
name = "api"
root = "apps/api"
base_uri = "/api"
"""


def test_full_file_round_trip(site: Path) -> None:
    (site / "apps" / "api" / "api.py").write_text("def create_app(): ...\n")
    path = write(site, """\
[server]
address = "0.0.0.0"
port = 8080
admin_socket = "run/admin.sock"
max_pool_size = 12
shutdown_timeout = 5.5

[[app]]
name = "api"
root = "apps/api"
entry = "api:create_app()"
interface = "asgi"
env = { DEBUG = "1", "QUOTED KEY" = "x" }
python = "python3"
spawn_method = "direct"
min_instances = 2
max_instances = 4
pool_idle_time = 60
max_preloader_idle_time = 0
max_requests = 1000
max_requests_jitter = 50
max_request_queue_size = 0
max_request_queue_time = 2.5
start_timeout = 10.5
concurrency = 8
environment = "staging"
hosts = ["API.Example.com", "*.example.org"]
base_uri = "/api/"
default = true
""")
    config = load_config(path)
    assert config.path == path
    assert config.server == ServerConfig(
        address="0.0.0.0", port=8080, admin_socket=str(site / "run" / "admin.sock"),
        max_pool_size=12, shutdown_timeout=5.5,
    )
    app = config.app("api")
    assert app.root == (site / "apps" / "api").resolve()
    assert app.entry == "api:create_app()"
    assert app.interface == "asgi"
    assert dict(app.env) == {"DEBUG": "1", "QUOTED KEY": "x"}
    assert os.path.isabs(app.python) and os.access(app.python, os.X_OK)
    assert (app.spawn_method, app.min_instances, app.max_instances) == ("direct", 2, 4)
    assert app.pool_idle_time == 60.0 and isinstance(app.pool_idle_time, float)
    assert app.max_preloader_idle_time == 0.0
    assert (app.max_requests, app.max_requests_jitter, app.max_request_queue_size) == (1000, 50, 0)
    assert app.max_request_queue_time == 2.5
    assert app.start_timeout == 10.5 and app.concurrency == 8
    assert app.environment == "staging"
    assert app.hosts == ("api.example.com", "*.example.org")
    assert app.base_uri == "/api"
    assert app.default is True
    assert app.effective_concurrency("asgi") == 8


def test_defaults(site: Path) -> None:
    config = load_config(write(site, '[[app]]\nname = "hello"\nroot = "apps/hello"\n'))
    assert config.server == ServerConfig()
    assert config.server.port == 3000 and config.server.address == "127.0.0.1"
    app = config.apps[0]
    assert app == AppConfig(name="hello", root=(site / "apps" / "hello").resolve())
    assert app.entry is None
    assert app.python == sys.executable
    assert (app.interface, app.spawn_method, app.environment) == ("auto", "smart", "production")
    assert (app.min_instances, app.max_instances, app.max_request_queue_size) == (1, 0, 10000)
    assert app.max_request_queue_time == 10.0
    assert (app.pool_idle_time, app.start_timeout, app.concurrency) == (300.0, 90.0, 0)
    assert dict(app.env) == {} and app.hosts == () and app.base_uri == "/"
    assert app.effective_concurrency("wsgi") == 1
    assert app.effective_concurrency("asgi") == 100
    with pytest.raises(ValueError):
        app.effective_concurrency("auto")


def test_config_objects_are_frozen_and_hashable(site: Path) -> None:
    config = load_config(write(site, TWO_APPS))
    assert hash(config) == hash(load_config(site / "passenger.toml"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.apps[0].name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.apps[0].env["X"] = "1"  # type: ignore[index]
    with pytest.raises(KeyError):
        config.app("nope")
    assert [a.name for a in config.apps] == ["hello", "api"]
    assert isinstance(config, Config)


def test_key_sets() -> None:
    assert all(isinstance(k, frozenset) for k in (APP_KEYS, SERVER_KEYS, INHERITABLE_KEYS))
    assert "port" in SERVER_KEYS and "spawn_method" in SERVER_KEYS
    assert "name" in APP_KEYS and "port" not in APP_KEYS
    assert not {"name", "root", "entry", "hosts", "base_uri", "default"} & INHERITABLE_KEYS
    assert INHERITABLE_KEYS <= SERVER_KEYS and INHERITABLE_KEYS <= APP_KEYS


def test_server_defaults_are_inherited_and_overridden(site: Path) -> None:
    config = load_config(write(site, """\
[server]
spawn_method = "direct"
max_requests = 500
max_request_queue_time = 0
environment = "staging"
env = { SHARED = "s", WHO = "server" }

[[app]]
name = "hello"
root = "apps/hello"

[[app]]
name = "api"
root = "apps/api"
base_uri = "/api"
spawn_method = "smart"
environment = "production"

[app.env]
WHO = "api"
"""))
    hello, api = config.apps
    assert (hello.spawn_method, hello.max_requests, hello.environment) == (
        "direct", 500, "staging")
    assert (api.spawn_method, api.max_requests, api.environment) == ("smart", 500, "production")
    assert dict(hello.env) == {"SHARED": "s", "WHO": "server"}
    assert dict(api.env) == {"SHARED": "s", "WHO": "api"}
    assert hello.max_request_queue_time == api.max_request_queue_time == 0.0


def test_relative_root_is_resolved_against_config_dir(
    site: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    path = write(site, TWO_APPS)
    monkeypatch.chdir(elsewhere)
    config = load_config(os.path.relpath(path, elsewhere))
    assert config.apps[0].root == (site / "apps" / "hello").resolve()
    assert config.apps[0].root.is_absolute()


def test_parse_config_base_dir(site: Path) -> None:
    config = parse_config('[[app]]\nname = "a"\nroot = "apps/api"\n', base_dir=site)
    assert config.path is None
    assert config.apps[0].root == (site / "apps" / "api").resolve()
    with pytest.raises(ConfigError) as info:
        parse_config('[[app]]\nname = "a"\nroot = "nowhere"\n', base_dir=site)
    assert str(info.value).startswith("<string>:3: [[app]] #1 (\"a\"): root:")


@pytest.mark.parametrize("entry", ["app:application", "pkg.mod:factory.make()", "m:create_app()"])
def test_entry_module_forms(site: Path, entry: str) -> None:
    text = f'[[app]]\nname = "a"\nroot = "apps/api"\nentry = "{entry}"\n'
    assert load_config(write(site, text)).apps[0].entry == entry


def test_entry_startup_file(site: Path) -> None:
    (site / "apps" / "api" / "main_wsgi.py").write_text("application = None\n")
    text = '[[app]]\nname = "a"\nroot = "apps/api"\nentry = "main_wsgi.py"\n'
    app = load_config(write(site, text)).apps[0]
    assert app.entry == "main_wsgi.py"
    err = error_for(site, text.replace("main_wsgi.py", "missing.py"))
    assert err.key == "entry" and err.line == 4
    assert "missing.py does not exist" in str(err)


def test_entry_default_requires_passenger_wsgi(site: Path) -> None:
    (site / "apps" / "bare").mkdir()
    err = error_for(site, '[server]\n\n[[app]]\nname = "bare"\nroot = "apps/bare"\n')
    message = str(err)
    assert message.startswith(f'{site / "passenger.toml"}:3: [[app]] #1 ("bare"): entry: no entry')
    assert str(site / "apps" / "bare" / "passenger_wsgi.py") + " does not exist" in message


def test_bad_entry_string(site: Path) -> None:
    err = error_for(site, '[[app]]\nname = "a"\nroot = "apps/api"\nentry = "app.application"\n')
    assert err.key == "entry" and err.line == 4 and "module:callable" in str(err)


def test_syntax_error_has_line_and_column(site: Path) -> None:
    err = error_for(site, '[server]\nport = 3000\naddress = "x\n')
    assert str(err).startswith(f"{site / 'passenger.toml'}:3:13: TOML syntax error: ")
    assert "TOML syntax error" in str(err)
    assert "(at line" not in str(err)
    assert err.line == 3 and err.column is not None
    assert err.path == str(site / "passenger.toml")


def test_error_names_path_as_given(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(site, "[server]\nport = \n")
    monkeypatch.chdir(site)
    with pytest.raises(ConfigError) as info:
        load_config("passenger.toml")
    assert str(info.value).startswith("passenger.toml:2:")
    assert info.value.path == "passenger.toml"


def test_unknown_server_key_suggests(site: Path) -> None:
    err = error_for(site, "[server]\nport = 1\n\n\nmax_pool = 3\n" + TWO_APPS.split("\n", 2)[2])
    assert str(err).endswith(
        "passenger.toml:5: [server]: unknown key 'max_pool' (did you mean 'max_pool_size'?)")
    assert (err.table, err.key, err.line) == ("[server]", "max_pool", 5)


def test_unknown_app_key_suggests(site: Path) -> None:
    err = error_for(site, TWO_APPS + 'spwan_method = "smart"\n')
    assert str(err).endswith(
        "passenger.toml:12: [[app]] #2 (\"api\"): unknown key 'spwan_method' "
        "(did you mean 'spawn_method'?)")
    assert err.table == '[[app]] #2 ("api")'


def test_unknown_top_level_key(site: Path) -> None:
    err = error_for(site, "port = 80\n" + TWO_APPS)
    assert str(err).endswith(":1: unknown top-level key 'port' (it belongs in [server])")
    err = error_for(site, "[sever]\nport = 80\n" + TWO_APPS)
    assert str(err).endswith(":1: unknown top-level key 'sever' (did you mean [server]?)")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("port = true", "port: expected an integer, got true (boolean)"),
        ('port = "3000"', 'port: expected an integer, got "3000" (string)'),
        ("address = 127", "address: expected a string, got 127 (integer)"),
        (
            "shutdown_timeout = false",
            "shutdown_timeout: expected a number of seconds, got false (boolean)",
        ),
        ("max_pool_size = 1.5", "max_pool_size: expected an integer, got 1.5 (float)"),
    ],
)
def test_wrong_types_in_server(site: Path, line: str, expected: str) -> None:
    err = error_for(site, f"[server]\n{line}\n" + TWO_APPS.split("\n", 2)[2])
    assert str(err) == f"{site / 'passenger.toml'}:2: [server]: {expected}"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("max_request_queue_time = -1",
         "max_request_queue_time: must be at least 0, got -1"),
        ('max_request_queue_time = "10s"',
         'max_request_queue_time: expected a number of seconds, got "10s" (string)'),
        ("max_request_queue_time = inf",
         "max_request_queue_time: must be a finite number of seconds, got inf"),
    ],
)
def test_bad_max_request_queue_time(site: Path, line: str, expected: str) -> None:
    err = error_for(site, TWO_APPS + line + "\n")
    assert str(err).endswith(f':12: [[app]] #2 ("api"): {expected}')
    assert (err.key, err.line) == ("max_request_queue_time", 12)
    err = error_for(site, f"[server]\n{line}\n" + TWO_APPS.split("\n", 2)[2])
    assert str(err) == f"{site / 'passenger.toml'}:2: [server]: {expected}"


def test_wrong_types_in_app(site: Path) -> None:
    err = error_for(site, TWO_APPS + "min_instances = true\n")
    assert str(err).endswith(
        ':12: [[app]] #2 ("api"): min_instances: expected an integer, got true (boolean)')
    err = error_for(site, TWO_APPS + "environment = 3\n")
    assert err.key == "environment" and err.line == 12 and "expected a string" in str(err)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("refork_after = 100", "expected an array of request counts, e.g. [100, 500], got 100"),
        ("refork_after = [0]", "request counts must be integers of at least 1, got 0 (integer)"),
        ("refork_after = [500, 100]", "request counts must increase, got 500 then 100"),
        ('refork_after = ["100"]', 'must be integers of at least 1, got "100" (string)'),
        ("refork_max_unavailable = 0", "expected a fraction above 0 and at most 1 (0.1 = 10%)"),
        ('refork_max_unavailable = "10%"', 'at most 1 (0.1 = 10%), got "10%" (string)'),
    ],
)
def test_refork_settings(site: Path, line: str, expected: str) -> None:
    err = error_for(site, TWO_APPS + line + "\n")
    assert err.line == 12 and err.key == line.split()[0] and expected in str(err), str(err)
    config = parse_config(TWO_APPS + "refork_after = [100, 500]\nrefork_max_unavailable = 0.25\n",
                          path=str(site / "passenger.toml"), base_dir=site)
    assert config.apps[1].refork_after == (100, 500)
    assert config.apps[1].refork_max_unavailable == 0.25
    assert config.apps[0].refork_after == () and config.apps[0].refork_max_unavailable == 0.1


def test_non_string_env_value(site: Path) -> None:
    err = error_for(site, TWO_APPS + "\n[app.env]\nOK = \"1\"\nPORT = 80\n")
    assert str(err).endswith(':15: [[app]] #2 ("api"): env.PORT: expected a string, got 80 '
                             "(integer)")
    err = error_for(site, TWO_APPS + "env = { A = true }\n")
    assert err.line == 12 and err.key == "env.A"


def test_bad_enum_value(site: Path) -> None:
    err = error_for(site, TWO_APPS + 'spawn_method = "fast"\n')
    assert str(err).endswith(
        ':12: [[app]] #2 ("api"): spawn_method: must be "smart" or "direct", got "fast"')
    err = error_for(site, TWO_APPS + 'interface = "cgi"\n')
    assert 'must be "wsgi", "asgi" or "auto", got "cgi"' in str(err)


@pytest.mark.parametrize(
    ("line", "key", "fragment"),
    [
        ("port = 70000", "port", "between 0 and 65535, got 70000"),
        ("port = -1", "port", "between 0 and 65535"),
        ("max_pool_size = 0", "max_pool_size", "at least 1"),
        ("shutdown_timeout = -1", "shutdown_timeout", "at least 0"),
        ("start_timeout = 0", "start_timeout", "greater than 0"),
        ("pool_idle_time = nan", "pool_idle_time", "finite"),
        ("max_requests = -5", "max_requests", "at least 0"),
        ("limit_request_line = 10", "limit_request_line", "between 64 and 65536, got 10"),
        ("limit_request_field_size = 100000", "limit_request_field_size",
         "between 64 and 65536, got 100000"),
        ("limit_request_fields = 0", "limit_request_fields", "between 1 and 1000, got 0"),
    ],
)
def test_out_of_range(site: Path, line: str, key: str, fragment: str) -> None:
    err = error_for(site, f"[server]\n{line}\n" + TWO_APPS.split("\n", 2)[2])
    assert (err.key, err.line, err.table) == (key, 2, "[server]")
    assert fragment in str(err)


def test_max_instances_below_min_instances(site: Path) -> None:
    err = error_for(site, TWO_APPS + "min_instances = 3\nmax_instances = 2\n")
    assert str(err).endswith(
        ':13: [[app]] #2 ("api"): max_instances: must be 0 (no limit) or at least '
        "min_instances (3), got 2")
    text = TWO_APPS.replace("port = 3000", "max_instances = 2") + "min_instances = 3\n"
    err = error_for(site, text)
    assert (err.key, err.line) == ("min_instances", 12)
    assert load_config(write(site, TWO_APPS + "min_instances = 3\nmax_instances = 0\n"))


def test_duplicate_app_names(site: Path) -> None:
    err = error_for(site, TWO_APPS.replace('name = "api"', 'name = "hello"'))
    assert str(err).endswith(':9: [[app]] #2 ("hello"): name: duplicate app name "hello", '
                             'also used by [[app]] #1 ("hello") at line 5')


def test_two_default_apps(site: Path) -> None:
    text = TWO_APPS.replace('root = "apps/hello"', 'root = "apps/hello"\ndefault = true')
    err = error_for(site, text + "default = true\n")
    assert err.key == "default" and err.line == 13
    assert '[[app]] #1 ("hello") at line 7 already is' in str(err)


def test_same_route_is_an_error(site: Path) -> None:
    err = error_for(site, TWO_APPS.replace('base_uri = "/api"', 'base_uri = "/"'))
    assert err.line == 11 and err.key == "base_uri"
    assert "apps \"hello\" and \"api\" both take base_uri \"/\"" in str(err)
    text = TWO_APPS.replace('root = "apps/hello"', 'root = "apps/hello"\nhosts = ["a.com"]')
    text = text.replace('base_uri = "/api"', 'hosts = ["b.com", "A.com"]')
    err = error_for(site, text)
    assert 'for host "a.com"' in str(err) and err.line == 9  # the [[app]] header
    ok = text.replace('"b.com", "A.com"', '"*.a.com"')
    assert [a.hosts for a in load_config(write(site, ok)).apps] == [("a.com",), ("*.a.com",)]


def test_line_locator_handles_quotes_multiline_strings_and_dotted_keys(site: Path) -> None:
    text = TWO_APPS + 'environment = """\n[[app]]\nspawn_method = 1\n"""\n"spawn_method" = "x"\n'
    err = error_for(site, text)
    assert (err.key, err.line) == ("spawn_method", 16)
    text = TWO_APPS.replace("port = 3000", "environment = \"a'''b\"") + 'env.A = "1"\nenv.B = 2\n'
    err = error_for(site, text)
    assert (err.key, err.line, err.table) == ("env.B", 13, '[[app]] #2 ("api")')
    err = error_for(site, "[sever.sub]\nx = 1\n" + TWO_APPS)
    assert err.line == 1 and "did you mean [server]?" in str(err)


def test_app_instead_of_array_of_tables(site: Path) -> None:
    err = error_for(site, '[server]\n[app]\nname = "hello"\nroot = "apps/hello"\n')
    assert err.line == 2 and "[[app]]" in str(err)


def test_no_apps(site: Path) -> None:
    err = error_for(site, "[server]\nport = 1\n")
    assert str(err) == f"{site / 'passenger.toml'}: no [[app]] tables: nothing to serve"


def test_missing_root(site: Path) -> None:
    err = error_for(site, TWO_APPS.replace("apps/api", "apps/nope"))
    assert err.key == "root" and err.line == 10
    assert str(site / "apps" / "nope") + " does not exist" in str(err)
    (site / "file").write_text("")
    err = error_for(site, TWO_APPS.replace("apps/api", "file"))
    assert "is not a directory" in str(err)


def test_missing_name_points_at_header(site: Path) -> None:
    err = error_for(site, TWO_APPS.replace('name = "api"\n', ""))
    assert (err.key, err.line, err.table) == ("name", 8, "[[app]] #2")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: config file not found"
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "passenger.toml"
    path.write_bytes(b"[server]\naddress = \"\xff\"\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 2 and "UTF-8" in str(info.value)


def test_python_lookup(site: Path) -> None:
    text = TWO_APPS + 'python = "{}"\n'
    assert load_config(write(site, text.format("python3"))).apps[1].python.startswith("/")
    err = error_for(site, text.format("no-such-python-xyz"))
    assert err.key == "python" and "not found on PATH" in str(err)
    err = error_for(site, text.format("venv/bin/python"))
    assert str(site / "venv" / "bin" / "python") in str(err)


def test_hosts_and_base_uri_validation(site: Path) -> None:
    for bad in ('["http://a.com"]', '["a.com:80"]', '["a..com"]', '"a.com"', "[1]"):
        err = error_for(site, TWO_APPS + f"hosts = {bad}\n")
        assert err.key == "hosts" and err.line == 12
    err = error_for(site, TWO_APPS.replace('"/api"', '"api"'))
    assert err.key == "base_uri" and 'starting with "/"' in str(err)


def test_apply_overrides(site: Path) -> None:
    config = load_config(write(site, TWO_APPS))
    changed = apply_overrides(config, port=0, address="0.0.0.0", spawn_method="direct")
    assert (changed.server.port, changed.server.address) == (0, "0.0.0.0")
    assert {a.spawn_method for a in changed.apps} == {"direct"}
    assert {a.spawn_method for a in config.apps} == {"smart"}
    assert apply_overrides(config) == config
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, spawn_method="fork")
    err = info.value
    assert (err.table, err.key) == ("command line", "--spawn-method")
    assert 'command line: --spawn-method: must be "smart" or "direct", got "fork"' in str(err)
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, port=99999)
    assert info.value.key == "--port"


BROKEN = [
    "",
    "[server]\n",
    "[server",
    "x = 1",
    "[[server]]\nport = 1\n",
    "server = 5\n",
    "app = 5\n",
    "app = [1, 2]\n",
    "[app]\nname = 'a'\nroot = '.'\n",
    "[[app]]\n",
    "[[app]]\nname = 'a'\n",
    "[[app]]\nroot = 'apps/hello'\n",
    "[[app]]\nname = 5\nroot = 'apps/hello'\n",
    "[[app]]\nname = '-bad'\nroot = 'apps/hello'\n",
    "[[app]]\nname = 'a b'\nroot = 'apps/hello'\n",
    "[[app]]\nname = 'a'\nroot = 5\n",
    "[[app]]\nname = 'a'\nroot = ''\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\nentry = ''\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\nentry = ':x'\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\nentry = 5\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\nenv = 'A=1'\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\nenv = { A = [1] }\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\nhosts = [[]]\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\ndefault = 1\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\nstart_timeout = inf\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\npool_idle_time = 1979-05-27\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\nconcurrency = -1\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\n[app.env]\nA = 1\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\n[app.extra]\nA = 1\n",
    "[server]\nadmin_socket = ''\n[[app]]\nname = 'a'\nroot = 'apps/hello'\n",
    "[server]\nname = 'x'\n[[app]]\nname = 'a'\nroot = 'apps/hello'\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\nbase_uri = ''\n",
    '[[app]]\nname = "a"\nroot = "apps/hello"\n"weird\\nkey" = 1\n',
    "[[app]]\nname = 'a'\nroot = '''\napps/nope'''\n",
    "[[app]]\nname = 'a'\nroot = 'apps/hello'\nmin_instances = 2\nmax_instances = 1\n",
    "\ufeff[[app]]\nname = 'a'\nroot = 'apps/nope'\n",
    "a = [" * 2000,
]


@pytest.mark.parametrize("text", BROKEN)
def test_broken_documents_raise_config_error(site: Path, text: str) -> None:
    try:
        load_config(write(site, text))
    except ConfigError as err:
        message = str(err)
        assert message and "\n" not in message and "Traceback" not in message
        assert message.startswith(str(site / "passenger.toml"))
    else:
        pytest.fail(f"no ConfigError for {text!r}")
