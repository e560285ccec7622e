"""Property-based tests for tui_passenger.config.parse_config.

Whatever the input, ``parse_config`` must return a :class:`Config` whose invariants hold or
raise :class:`ConfigError` whose message is one non-empty line starting with the file name;
never any other exception. Documents come from three sources: near-valid TOML built from the
real key sets (plus typos) with values of every TOML type, arbitrary text/bytes, and valid
configs (round trip) or valid configs with exactly one known defect (the message names it).

Bugs found this way are pinned as explicit examples in the tests at the bottom.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tui_passenger.config import (
    APP_KEYS,
    SERVER_KEYS,
    Config,
    ConfigError,
    parse_config,
)

CONFIG_NAME = "fuzz/passenger.toml"
SITE_MARK = "@SITE@"  # replaced by the site's absolute path after serialising

STRUCTURED = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow])
RAW = settings(max_examples=500, deadline=None, derandomize=True, database=None)
PINNED = settings(phases=[Phase.explicit], deadline=None, database=None)


# --- the site: app roots on disk ---------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``app1``/``app2`` (passenger_wsgi.py + app.py), ``noentry`` (empty), ``file.txt``."""
    base = tmp_path_factory.mktemp("fuzz-site")
    for name in ("app1", "app2"):
        (base / name).mkdir()
        (base / name / "passenger_wsgi.py").write_text("application = None\n")
        (base / name / "app.py").write_text("application = None\n")
    (base / "noentry").mkdir()
    (base / "file.txt").write_text("not a directory\n")
    return base


# --- a tiny TOML writer (tomli_w is not installed) ------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}
_BARE_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def toml_string(text: str) -> str:
    body = "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F
                                        else c) for c in text)
    return f'"{body}"'


def toml_key(key: str) -> str:
    return key if key and set(key) <= _BARE_KEY else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.date | dt.time):  # datetime is a date subclass
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_dumps(doc: dict[str, Any]) -> str:
    """Top-level tables become ``[name]``, lists of tables ``[[name]]``; deeper ones inline."""
    def is_tables(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(i, dict) for i in v)

    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict) and not is_tables(v)]
    for key, value in doc.items():
        for table, header in ([(value, f"[{toml_key(key)}]")] if isinstance(value, dict) else
                              [(t, f"[[{toml_key(key)}]]") for t in value] if is_tables(value)
                              else []):
            lines += ["", header, *(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def _nan_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "<nan>"
    if isinstance(value, list):
        return [_nan_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_safe(v) for k, v in value.items()}
    return value


# --- strategies ------------------------------------------------------------------------------

def _typos(key: str) -> set[str]:
    return {key[:-1], key + "s", key.replace("_", "-"), key.replace("_", ""), key.upper(),
            key.capitalize(), key[1:], key[:2] + key[1] + key[2:]}


ALL_KEYS = APP_KEYS | SERVER_KEYS
TYPOS = sorted({t for k in ALL_KEYS for t in _typos(k)} - ALL_KEYS - {"", "server", "app", "keys"})

WEIRD_STRINGS = ["", " ", "\t", "\x00", "a\x00b", "\x1b[31mred", "a\nb", "\r\n", "é", "日本語",
                 "\U0001f600", "\u2028", "\x7f", "~", ".", "..", "/", "x" * 300]
strings = st.text(max_size=12) | st.sampled_from(WEIRD_STRINGS)
ints = (st.integers(-3, 70000) | st.sampled_from([-(2**63), 2**63 - 1, 2**64, -(2**100)])
        | st.integers())
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [math.nan, math.inf, -math.inf, 0.0, -0.0, 0.5, 1e300])
dates = (st.dates() | st.times() | st.datetimes()
         | st.datetimes(timezones=st.just(dt.timezone.utc)))
scalars = ints | floats | st.booleans() | strings | dates
mixed = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=3),
    max_leaves=6,
)

ROOTS = ["app1", "app2", "./app1/", f"{SITE_MARK}/app2", "app1/../app2", "noentry", "missing",
         "file.txt", "app1/passenger_wsgi.py", "~", "~nosuchuser", "/", "", " ", "app1\x0b",
         "app1\x1b[2J", "/nonexistent/.."]
NAMES = ["web", "api", "a.b", "x-1", "Z_9", "-bad", "a b", "", "日本"]
SECONDS = floats | st.integers(-2, 100) | st.sampled_from([0, 0.0, 1, 30.5])
SMALL = st.integers(-2, 6)
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "name": st.sampled_from(NAMES) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,8}",
                                                   fullmatch=True),
    "root": st.sampled_from(ROOTS),
    "entry": st.sampled_from(["app:application", "app:create_app()", "passenger_wsgi.py",
                              "app.py", "missing.py", "app", ":x", " app:application ",
                              "\x00.py", "../app2/app.py", "/etc/passwd.py", "a\nb:c"]),
    "interface": st.sampled_from(["wsgi", "asgi", "auto", "cgi", "WSGI"]),
    "spawn_method": st.sampled_from(["smart", "direct", "fork"]),
    "env": st.dictionaries(strings, strings | mixed, max_size=3),
    "python": st.sampled_from([sys.executable, "python3", "no-such-python-xyz",
                               "/no/such/python", "./python", "/\x00", "\x00",
                               "x" * 300, "~/python"]),
    "min_instances": SMALL, "max_instances": SMALL, "max_requests": SMALL,
    "max_requests_jitter": SMALL, "max_request_queue_size": SMALL, "concurrency": SMALL,
    "pool_idle_time": SECONDS, "max_preloader_idle_time": SECONDS, "start_timeout": SECONDS,
    "shutdown_timeout": SECONDS, "max_request_time": SECONDS, "client_header_timeout": SECONDS,
    "pipeline_window": SECONDS, "max_request_queue_time": SECONDS,
    "worker_scheduling": st.sampled_from(["batch", "normal", "idle", "BATCH"]),
    "client_body_timeout": SECONDS, "keepalive_timeout": SECONDS,
    "memory_limit": SMALL, "max_connections": SMALL,
    "environment": st.sampled_from(["production", "development", "", " "]),
    "gc_freeze": st.booleans(), "access_log": st.booleans(), "default": st.booleans(),
    "refork_after": st.lists(st.integers(-1, 1000), max_size=4),
    "refork_max_unavailable": st.sampled_from([0.1, 0.5, 1, 0, 1.5, -0.1, math.nan]),
    "hosts": st.lists(st.sampled_from(["example.com", "*.example.com", "API.Example.COM",
                                       "http://x", "", "a..b", "xn--bcher-kva.de"]), max_size=3),
    "base_uri": st.sampled_from(["/", "/api", "/api/", "//", "api", "/a b", "/x?y", "/日本"]),
    "address": st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "localhost", ""]),
    "port": st.integers(-2, 65537) | st.sampled_from([0, 65535]),
    "admin_socket": st.sampled_from(["admin.sock", "/tmp/x.sock", "", "~/a.sock"]),
    "max_pool_size": SMALL,
    "client_max_body_size": st.integers(-1, 2**40),
    "client_body_buffer_size": st.integers(-1, 2**40),
    "trusted_proxies": st.lists(st.sampled_from(["10.0.0.0/8", "::1", "127.0.0.1",
                                                 "10.0.0.1/8", "bogus", ""]), max_size=3),
}


def value_for(key: str) -> st.SearchStrategy[Any]:
    plausible = PLAUSIBLE.get(key)
    if plausible is None:
        return mixed
    return st.one_of(plausible, plausible, plausible, mixed)  # ~3/4 plausible


def one_in(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws (a mid-range value: Hypothesis favours the bounds)."""
    return draw(st.integers(0, n - 1)) == n // 2


@st.composite
def fuzz_table(draw: st.DrawFn, keys: frozenset[str], required: tuple[str, ...] = ()
               ) -> dict[str, Any]:
    chosen = [k for k in required if not one_in(draw, 10)]  # present ~90% of the time
    chosen += draw(st.lists(st.sampled_from(sorted(keys)), max_size=5, unique=True))
    if one_in(draw, 4):
        chosen.append(draw(st.sampled_from(TYPOS)))
    return {k: draw(value_for(k)) for k in dict.fromkeys(chosen)}


@st.composite
def fuzz_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if one_in(draw, 20):
        doc[draw(st.sampled_from(["port", "name", "servers", "apps", "extra"]))] = draw(mixed)
    if not one_in(draw, 4):
        doc["server"] = draw(fuzz_table(SERVER_KEYS))
    apps = draw(st.lists(fuzz_table(APP_KEYS, ("name", "root")), min_size=1, max_size=3))
    if one_in(draw, 30):
        doc["app"] = apps[0]  # [app] instead of [[app]]
    elif not one_in(draw, 30):
        doc["app"] = apps
    if one_in(draw, 10):
        doc["keys"] = draw(st.dictionaries(st.sampled_from(["quit", "help", "kill", "nope"]),
                                           strings | mixed, max_size=2))
    return doc


# --- the properties --------------------------------------------------------------------------

def parse(text: str, site: Path) -> Config | ConfigError:
    """Config or ConfigError; anything else propagates and fails the test."""
    try:
        return parse_config(text.replace(SITE_MARK, str(site)), path=CONFIG_NAME, base_dir=site)
    except ConfigError as err:
        return err


def check_error(err: ConfigError) -> str:
    message = str(err)
    assert message, "empty ConfigError message"
    assert "\n" not in message and "\r" not in message, f"multi-line message: {message!r}"
    assert message.startswith(CONFIG_NAME), f"message does not start with the path: {message!r}"
    return message


def check_config(config: Config, site: Path) -> None:
    assert isinstance(config, Config)
    server = config.server
    assert type(server.port) is int and 0 <= server.port <= 65535
    assert server.max_pool_size >= 1 and server.client_max_body_size >= 1
    assert server.client_body_buffer_size >= 0
    assert math.isfinite(server.shutdown_timeout) and server.shutdown_timeout >= 0
    assert server.address.strip()
    assert config.apps, "a Config without apps"
    names = [app.name for app in config.apps]
    assert len(names) == len(set(names)), f"duplicate app names {names}"
    assert sum(app.default for app in config.apps) <= 1
    routes = [(h, app.base_uri) for app in config.apps for h in app.hosts or ("",)]
    assert len(routes) == len(set(routes)), f"two apps on one route: {routes}"
    for app in config.apps:
        for key in ("min_instances", "max_instances", "max_requests", "max_requests_jitter",
                    "max_request_queue_size", "concurrency"):
            value = getattr(app, key)
            assert type(value) is int and value >= 0, (key, value)
        assert app.max_instances == 0 or app.max_instances >= app.min_instances
        assert app.base_uri.startswith("/")
        assert app.base_uri == "/" or not app.base_uri.endswith("/")
        for key in ("pool_idle_time", "max_preloader_idle_time", "start_timeout",
                    "max_request_queue_time"):
            value = getattr(app, key)
            assert type(value) is float and math.isfinite(value) and value >= 0, (key, value)
        assert app.start_timeout > 0
        assert app.interface in ("wsgi", "asgi", "auto")
        assert app.spawn_method in ("smart", "direct")
        assert app.root.is_absolute() and app.root.is_dir()
        if app.entry is None:
            assert (app.root / "passenger_wsgi.py").is_file()
        assert all(h == h.lower() and h for h in app.hosts)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in app.env.items())


@STRUCTURED
@given(doc=fuzz_docs())
def test_structured_fuzz_gives_config_or_one_line_error(site: Path, doc: dict[str, Any]) -> None:

    result = parse(toml_dumps(doc), site)
    if isinstance(result, ConfigError):
        check_error(result)
    else:
        check_config(result, site)


@RAW
@given(text=st.text())
def test_raw_text_gives_config_or_one_line_error(site: Path, text: str) -> None:
    result = parse(text, site)
    if isinstance(result, ConfigError):
        check_error(result)
    else:
        check_config(result, site)


@RAW
@given(data=st.binary())
def test_raw_bytes_give_config_or_one_line_error(site: Path, data: bytes) -> None:
    result = parse(data.decode("utf-8", errors="replace"), site)
    if isinstance(result, ConfigError):
        check_error(result)
    else:
        check_config(result, site)


TOKENS = ["[server]", "[[app]]", "[app]", "[keys]", "[app.env]", "\n", " = ", "=", '"', "'",
          '"""', "[", "]", "{", "}", ",", ".", "#", "name", "root", "port", "app1",
          '"app1"', '"web"', "1", "-1", "nan", "true", "1979-05-27", "\\u0000", "\t", "\r\n"]


@RAW
@given(parts=st.lists(st.sampled_from(TOKENS) | st.text(max_size=3), max_size=40))
def test_token_soup_gives_config_or_one_line_error(site: Path, parts: list[str]) -> None:
    text = '[[app]]\nname = "web"\nroot = "app1"\n' + "".join(parts)
    result = parse(text, site)
    if isinstance(result, ConfigError):
        check_error(result)
    else:
        check_config(result, site)


@STRUCTURED
@given(doc=mixed.filter(lambda v: isinstance(v, dict)) | fuzz_docs())
def test_toml_writer_round_trips(doc: dict[str, Any]) -> None:
    """The writer the other tests rely on produces the TOML it means to."""
    assert _nan_safe(tomllib.loads(toml_dumps(doc))) == _nan_safe(doc)


# --- valid configs: round trip ---------------------------------------------------------------

NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}", fullmatch=True)
BASE_URI = st.from_regex(r"/(?:[a-z0-9_.-]{1,6}/?){0,2}", fullmatch=True)
HOST = st.from_regex(r"(?:\*\.)?[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?\.(?:com|org|IO)",
                     fullmatch=True)
ENV = st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: "=" not in s and
                                                             "\x00" not in s),
                      st.text(max_size=8).filter(lambda s: "\x00" not in s), max_size=3)
PROXY = st.sampled_from(["10.0.0.0/8", "127.0.0.1", "::1", "192.168.1.7/24"])


@st.composite
def instances(draw: st.DrawFn) -> dict[str, int]:
    low = draw(st.integers(0, 4))
    high = draw(st.sampled_from([0, low, low + 1, low + 5]))
    return {"min_instances": low, "max_instances": high}


@st.composite
def valid_docs(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 3))
    names = draw(st.lists(NAME, min_size=n, max_size=n, unique=True))
    uris = draw(st.lists(BASE_URI, min_size=n, max_size=n,
                         unique_by=lambda u: u.rstrip("/") or "/"))
    server: dict[str, Any] = {"port": draw(st.integers(0, 65535))}
    if draw(st.booleans()):
        server["address"] = draw(st.sampled_from(["0.0.0.0", "::", "127.0.0.1", "localhost"]))
    if draw(st.booleans()):
        server["trusted_proxies"] = draw(st.lists(PROXY, max_size=3))
    if draw(st.booleans()):
        server.update(draw(instances()))
    if draw(st.booleans()):
        server["spawn_method"] = draw(st.sampled_from(["smart", "direct"]))
    if draw(st.booleans()):
        server["env"] = draw(ENV)
    if draw(st.booleans()):
        server["start_timeout"] = draw(st.floats(0.001, 1e6) | st.integers(1, 1000))
    default = draw(st.none() | st.integers(0, n - 1))
    apps = []
    for i in range(n):
        app: dict[str, Any] = {"name": names[i],
                               "root": draw(st.sampled_from(["app1", "app2", "./app1/",
                                                             f"{SITE_MARK}/app2"]))}
        if draw(st.booleans()):
            app["entry"] = draw(st.sampled_from(["app:application", "app.py",
                                                 "passenger_wsgi.py", "app:create_app()"]))
        if draw(st.booleans()) or uris[i] != "/":
            app["base_uri"] = uris[i]
        if draw(st.booleans()):
            app["hosts"] = draw(st.lists(HOST, max_size=3))
        if draw(st.booleans()):
            app.update(draw(instances()))
        if draw(st.booleans()):
            app["spawn_method"] = draw(st.sampled_from(["smart", "direct"]))
        if draw(st.booleans()):
            app["env"] = draw(ENV)
        if draw(st.booleans()):
            app["python"] = sys.executable
        if default == i:
            app["default"] = True
        apps.append(app)
    return {"server": server, "app": apps}  # base_uris are unique: no two apps share a route


@STRUCTURED
@given(doc=valid_docs())
def test_valid_config_round_trips(site: Path, doc: dict[str, Any]) -> None:
    result = parse(toml_dumps(doc), site)
    assert isinstance(result, Config), f"valid config rejected: {result}"
    check_config(result, site)
    server = doc["server"]
    assert result.server.port == server["port"]
    assert result.server.address == server.get("address", "127.0.0.1")
    assert result.server.trusted_proxies == tuple(dict.fromkeys(
        str(ipaddress.ip_network(p, strict=False)) for p in server.get("trusted_proxies", [])))
    assert [a.name for a in result.apps] == [a["name"] for a in doc["app"]]
    for raw, app in zip(doc["app"], result.apps, strict=True):
        assert result.app(raw["name"]) is app
        assert app.root == Path(raw["root"].replace(SITE_MARK, str(site))
                                if raw["root"].startswith(SITE_MARK)
                                else site / raw["root"]).resolve()
        assert app.entry == raw.get("entry")
        assert app.base_uri == (raw.get("base_uri", "/").rstrip("/") or "/")
        assert app.hosts == tuple(dict.fromkeys(h.lower() for h in raw.get("hosts", [])))
        for key, fallback in (("min_instances", 1), ("max_instances", 0),
                              ("spawn_method", "smart"), ("start_timeout", 90.0)):
            assert getattr(app, key) == raw.get(key, server.get(key, fallback)), key
        assert dict(app.env) == {**server.get("env", {}), **raw.get("env", {})}
        assert app.default == raw.get("default", False)
        assert app.python == (os.path.normpath(raw["python"]) if "python" in raw
                              else sys.executable)


# --- valid configs with exactly one defect: the message names the key ------------------------

BAD_VALUES: dict[str, list[Any]] = {
    "port": [-1, 65536, "80", 80.0, True],
    "address": ["", "  ", 1, []],
    "admin_socket": ["", 5],
    "max_pool_size": [0, -1, "6"],
    "shutdown_timeout": [-1, math.nan, math.inf, "30", False],
    "client_max_body_size": [0, 1.5],
    "client_body_buffer_size": [-1, "1M"],
    "trusted_proxies": ["10.0.0.0/8", ["bogus"], [1], [""]],
    "access_log": [1, "yes"],
    "access_log_format": ["common", "JSON", 1, ""],
    "access_log_file": ["", " ", 5, True],
    "access_log_flush": [0, -1, math.nan, "1s", True],
    "max_request_time": [-1, math.nan, "5"],
    "pipeline_window": [-0.01, math.inf, "10ms", True],
    "worker_scheduling": ["idle", "fifo", 1, ""],
    "memory_limit": [-1, 1.5, "300"],
    "client_header_timeout": [0, -1, math.inf],
    "client_body_timeout": [0, "60"],
    "keepalive_timeout": [0, False],
    "max_connections": [-1, 2.5],
    "interface": ["cgi", 1, ""],
    "env": [5, {"A": 1}, {"": "x"}, {"A=B": "x"}, {"A": "a\x00b"}, {"A": {"B": "c"}}],
    "python": ["no-such-python-xyz", "/no/such/python", "", 3],
    "spawn_method": ["fork", ["smart"]],
    "min_instances": [-1, 1.0, "1"],
    "max_instances": [-1, True],
    "pool_idle_time": [-0.5, math.nan, dt.date(2020, 1, 1)],
    "max_preloader_idle_time": [-1, -math.inf],
    "max_requests": [-1, 2.5],
    "max_requests_jitter": [-5],
    "max_request_queue_size": [-1, "100"],
    "max_request_queue_time": [-1, -0.5, math.nan, math.inf, "10", True],
    "start_timeout": [0, 0.0, -1, math.inf],
    "concurrency": [-1, "8"],
    "environment": ["", " ", 7],
    "gc_freeze": [0, "false"],
    "refork_after": [100, [0], [100, 50], [100, 100], ["100"], [True], [1.5]],
    "user": ["no-such-user-xyz", "", 0],
    "group": ["no-such-group-xyz", "", 0],
    "allow_root": [1, "yes"],
    "refork_max_unavailable": [0, 1.5, -0.1, math.nan, "10%", True],
    "hosts": ["example.com", ["http://example.com"], [1], ["a b"], [""]],
    "base_uri": ["api", "/a b", "/x?y", "/x#y", "", 5],
    "default": ["yes", 1],
    "name": ["", "-x", "a b", "日本", 5, "a/b"],
    "root": ["missing", "file.txt", 5, "", []],
    "entry": ["missing.py", "not an entry", "app:", 5, ""],
    "bind": [5, "127.0.0.1:3000", [], [5], ["nohost"], ["unix:"], ["1.2.3.4:99999"]],
    "bind_mode": ["0999", "rw", 0o1000, -1, True],
    "bind_group": ["no-such-group-xyz", "", 0],
    "metrics_bind": ["9100", "unix:/tmp/m.sock", ["0.0.0.0:9100"], "host:99999", 5],
    "restart_check_interval": [-1, "2", math.nan, True],
    "watch": ["yes", 1],
    "max_websockets": [-1, 1.5, "100", True],
    "websocket_ping_interval": [-1, math.nan, "20", True],
    "websocket_ping_timeout": [-0.5, math.inf, "20s"],
    "websocket_max_message_size": [-1, 2.5, "16M"],
    "websocket_idle_timeout": [-1, math.nan, "60", False],
    "limit_request_line": [0, 63, 65537, "4094", True],
    "limit_request_field_size": [10, 100000, 8190.0],
    "limit_request_fields": [0, 1001, "100"],
}
APP_ONLY = sorted(APP_KEYS - SERVER_KEYS)
SERVER_ONLY = sorted(SERVER_KEYS - APP_KEYS)


@st.composite
def one_defect(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid doc with one defect, and the key the error must name."""
    doc = draw(valid_docs())
    server, apps = doc["server"], doc["app"]
    i = draw(st.integers(0, len(apps) - 1))
    kind = draw(st.sampled_from(["typo-server", "typo-app", "misplaced", "bad-server",
                                 "bad-app", "top-level", "duplicate", "two-defaults",
                                 "same-route", "min-over-max", "no-entry"]))
    if kind in ("typo-server", "typo-app"):
        keys = SERVER_KEYS if kind == "typo-server" else APP_KEYS
        key = draw(st.sampled_from(sorted({t for k in keys for t in _typos(k)}
                                          - ALL_KEYS - {""})))
        (server if kind == "typo-server" else apps[i])[key] = draw(mixed)
        return doc, key
    if kind == "misplaced":
        if draw(st.booleans()):
            key = draw(st.sampled_from(SERVER_ONLY))
            apps[i][key] = draw(st.sampled_from(BAD_VALUES.get(key, [1])))
        else:
            key = draw(st.sampled_from(APP_ONLY))
            server[key] = draw(st.sampled_from(BAD_VALUES.get(key, [1])))
        return doc, key
    if kind == "bad-server":
        key = draw(st.sampled_from(sorted(SERVER_KEYS)))
        server[key] = draw(st.sampled_from(BAD_VALUES[key]))
        return doc, key
    if kind == "bad-app":
        key = draw(st.sampled_from(sorted(APP_KEYS)))
        apps[i][key] = draw(st.sampled_from(BAD_VALUES[key]))
        return doc, key
    if kind == "top-level":
        key = draw(st.sampled_from(sorted(ALL_KEYS) + ["servers", "apps", "extra"]))
        doc = {key: draw(mixed), **doc}
        return doc, key
    if kind == "min-over-max":
        apps[i].update(min_instances=3, max_instances=2)
        return doc, "max_instances"
    if kind == "no-entry":
        apps[i]["root"] = "noentry"
        apps[i].pop("entry", None)
        return doc, "entry"
    assume(len(apps) > 1)
    j = draw(st.integers(0, len(apps) - 1).filter(lambda j: j != i))
    if kind == "duplicate":
        apps[j]["name"] = apps[i]["name"]
        return doc, "name"
    if kind == "two-defaults":
        for app in apps:
            app.pop("default", None)
        apps[i]["default"] = apps[j]["default"] = True
        return doc, "default"
    apps[j]["base_uri"] = apps[i].get("base_uri", "/")  # same-route
    apps[j]["hosts"] = list(apps[i].get("hosts", []))
    return doc, "base_uri"


def names_key(err: ConfigError, key: str) -> bool:
    """``err`` is about ``key`` and says so: ``...: key: ...`` or ``unknown key 'key'``."""
    message = str(err)
    if err.key is not None and err.key.split(".")[0] != key:
        return False
    return f": {key}" in message or f"'{key}'" in message or f'"{key}"' in message


@STRUCTURED
@given(case=one_defect())
def test_single_defect_error_names_the_key(site: Path, case: tuple[dict[str, Any], str]) -> None:
    doc, key = case
    result = parse(toml_dumps(doc), site)
    assert isinstance(result, ConfigError), f"defect in {key!r} accepted"
    check_error(result)
    assert names_key(result, key), f"message does not name {key!r}: {result}"


# --- known bugs, pinned (do not fix here: see the report) ------------------------------------

def _app_doc(**app: str) -> str:
    return toml_dumps({"app": [{"name": "web", "root": "app1", **app}]})


@PINNED
@given(text=st.text())
@example(text=_app_doc(root="\x00"))
def test_nul_in_root_is_a_config_error(site: Path, text: str) -> None:
    result = parse(text, site)
    assert isinstance(result, ConfigError)
    check_error(result)


@PINNED
@given(text=st.text())
@example(text=_app_doc(root="x" * 256))
def test_overlong_root_is_a_config_error(site: Path, text: str) -> None:
    result = parse(text, site)
    assert isinstance(result, ConfigError)
    check_error(result)


@PINNED
@given(text=st.text())
@example(text=_app_doc(entry="x" * 253 + ".py"))
def test_overlong_entry_is_a_config_error(site: Path, text: str) -> None:
    result = parse(text, site)
    assert isinstance(result, ConfigError)
    check_error(result)


@PINNED
@given(text=st.text())
@example(text=_app_doc(root="app1\u2028"))
def test_message_stays_one_line_whatever_the_path(site: Path, text: str) -> None:
    result = parse(text, site)
    assert isinstance(result, ConfigError)
    assert len(str(result).splitlines()) == 1, repr(str(result))
