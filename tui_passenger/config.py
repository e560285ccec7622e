"""Load ``passenger.toml`` into frozen, validated dataclasses.

Every problem raises :class:`ConfigError`, whose ``str()`` is one line naming the file, line,
table and key: ``passenger.toml:14: [[app]] #2 ("api"): spawn_method: must be ...``.

Per-app settings (:data:`INHERITABLE_KEYS`) written in ``[server]`` are defaults for every
``[[app]]`` that does not set them; ``env`` tables are merged (the app's variables win).
Two apps conflict when they share a ``base_uri`` and either both have no ``hosts`` or both
list the same host pattern; apps that differ only in how specific their hosts are do not.

The dataclasses live in :mod:`tui_passenger.config_model` and the per-value checks in
:mod:`tui_passenger.config_checks`; the public names are all importable from here.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tui_passenger.config_checks import (
    _APP_ONLY,
    _INHERITABLE,
    _NAME_RE,
    _SERVER_ONLY,
    APP_KEYS,
    INHERITABLE_KEYS,
    SERVER_KEYS,
    _choice,
    _int,
    _key,
    _Locator,
    _name,
    _show,
    _string,
    _Table,
)
from tui_passenger.config_model import AppConfig, Config, ConfigError, EnvMap, ServerConfig

__all__ = [
    "APP_KEYS", "INHERITABLE_KEYS", "SERVER_KEYS", "AppConfig", "Config", "ConfigError",
    "EnvMap", "ServerConfig", "apply_overrides", "load_config", "parse_config",
]

DEFAULT_STARTUP_FILE = "passenger_wsgi.py"
_STRING_SOURCE = "<string>"
_ENTRY_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\(\))?")


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the configuration file at ``path``."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except FileNotFoundError:
        raise ConfigError("config file not found", path=name) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", path=name) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})", path=name,
                          line=line) from None
    return parse_config(text, path=name)


def parse_config(text: str, *, path: str | os.PathLike[str] = _STRING_SOURCE,
                 base_dir: Path | None = None) -> Config:
    """Validate TOML ``text``; relative paths are taken from ``base_dir`` (default: its dir)."""
    name = os.fspath(path)
    from_string = name == _STRING_SOURCE
    if base_dir is None:
        base_dir = Path.cwd() if from_string else Path(os.path.abspath(name)).parent
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise _syntax_error(str(exc), name, text) from None
    top = _Table(name, _Locator(text), Path(os.path.abspath(base_dir)), None, ())
    for key in [k for k in data if k not in ("server", "app", "keys")]:
        close = difflib.get_close_matches(key, ["server", "app", "keys"], n=1)
        hint = (f"did you mean [{close[0]}]?" if close else "it belongs in [server]"
                if key in SERVER_KEYS else "it belongs in an [[app]] table" if key in APP_KEYS
                else "only [server] and [[app]] tables may be at the top level")
        top.fail(key, f"unknown top-level key {_key(key)} ({hint})", key_in_detail=True)
    server, defaults = _parse_server(top, data.get("server", {}))
    apps_raw = data.get("app", [])
    if isinstance(apps_raw, dict):
        dataclasses.replace(top, label="[app]", loc=("app",)).fail(
            None, "write each app as an [[app]] table (an array of tables), not [app]")
    if not isinstance(apps_raw, list):
        top.fail("app", f"must be [[app]] tables, got {_show(apps_raw)}")
    if not apps_raw:
        raise ConfigError("no [[app]] tables: nothing to serve", path=name)
    apps = tuple(_parse_app(top, i, raw, defaults) for i, raw in enumerate(apps_raw))
    _check_apps(top, apps)
    keys = _keys(dataclasses.replace(top, label="[keys]", loc=("keys",)), data.get("keys", {}))
    return Config(None if from_string else Path(os.path.abspath(name)), server, apps, keys)


#: Dashboard actions whose key can be remapped in ``[keys]``.
KEY_ACTIONS = frozenset({
    "scale_up", "scale_down", "kill", "spawn_method", "restart", "refork", "pause", "filter",
    "sort", "detail_tab", "theme", "help", "quit", "detach", "fold", "unfold",
    "stack",
})


def _keys(t: _Table, raw: Any) -> EnvMap:
    if not isinstance(raw, dict):
        t.fail(None, f"[keys] must be a table of action = \"key\", got {_show(raw)}")
    t.check_keys(raw, KEY_ACTIONS, (frozenset(), ""))
    for action, key in raw.items():
        if not isinstance(key, str) or not key.strip():
            t.fail(action, f'expected a key name such as "f5" or "ctrl+k", got {_show(key)}')
    return EnvMap(raw)


def _syntax_error(message: str, path: str, text: str) -> ConfigError:
    line = column = None
    if match := re.search(r"\s*\(at line (\d+), column (\d+)\)$", message):
        line, column = int(match[1]), int(match[2])
        message = message[: match.start()]
    elif match := re.search(r"\s*\(at end of document\)$", message):
        line = text.count("\n") + 1 if text else None
        message = message[: match.start()] + " at end of file"
    return ConfigError(f"TOML syntax error: {message}", path=path, line=line, column=column)


def _parse_server(top: _Table, raw: Any) -> tuple[ServerConfig, dict[str, Any]]:
    t = dataclasses.replace(top, label="[server]", loc=("server",))
    if not isinstance(raw, dict):
        t.fail(None, f"must be a single [server] table, got {_show(raw)}")
    t.check_keys(raw, SERVER_KEYS, (APP_KEYS, "an [[app]] table"))
    values = {k: check(t, k, raw[k]) for k, check in _SERVER_ONLY.items() if k in raw}
    if "admin_socket" in values:
        values["admin_socket"] = os.path.normpath(t.base_dir / values["admin_socket"])
    if "access_log_file" in values:
        values["access_log_file"] = os.path.normpath(t.base_dir / values["access_log_file"])
    if "bind" in values and ("address" in raw or "port" in raw):
        t.fail("bind", "give either bind or address and port, not both (bind lists every "
               'address, e.g. ["127.0.0.1:3000", "unix:/run/tui-passenger/http.sock"])')
    defaults = {k: check(t, k, raw[k]) for k, check in _INHERITABLE.items() if k in raw}
    _check_instances(t, defaults, {})
    return ServerConfig(**values), defaults


def _check_instances(t: _Table, values: Mapping[str, Any], own: Mapping[str, Any]) -> None:
    low, high = values.get("min_instances", 1), values.get("max_instances", 0)
    if 0 < high < low:
        if "min_instances" in own and "max_instances" not in own:
            t.fail("min_instances", f"must be at most max_instances ({high}), got {low}")
        t.fail("max_instances", f"must be 0 (no limit) or at least min_instances ({low}), "
               f"got {high}")


def _parse_app(top: _Table, index: int, raw: Any, defaults: dict[str, Any]) -> AppConfig:
    t = dataclasses.replace(top, label=f"[[app]] #{index + 1}", loc=("app", index))
    if not isinstance(raw, dict):
        t.fail(None, f"expected a table, got {_show(raw)}")
    if isinstance(raw.get("name"), str) and _NAME_RE.fullmatch(raw["name"]):
        t.label = f"{t.label} ({json.dumps(raw['name'])})"
    t.check_keys(raw, APP_KEYS, (SERVER_KEYS, "[server]"))
    for key in ("name", "root"):
        if key not in raw:
            t.fail(key, "missing (every [[app]] needs a name and a root)", or_header=True)
    name = _name(t, "name", raw["name"])
    try:
        root = (t.base_dir / os.path.expanduser(_string(t, "root", raw["root"]))).resolve()
        usable = root.is_dir()
    except (OSError, ValueError) as exc:  # NUL byte, name too long, ...
        t.fail("root", f"not a usable directory path: {exc}")
    if not usable:
        t.fail("root", f"{root} {'is not a directory' if root.exists() else 'does not exist'}")
    values = {**defaults, "entry": _entry(t, root, raw.get("entry"))}
    for key, check in (_INHERITABLE | _APP_ONLY).items():
        if key in raw:
            values[key] = check(t, key, raw[key])
    if "env" in defaults and "env" in raw:
        values["env"] = EnvMap({**defaults["env"], **values["env"]})
    _check_instances(t, values, raw)
    return AppConfig(name=name, root=root, **values)


def _entry(t: _Table, root: Path, raw: Any) -> str | None:
    if raw is None:
        if not (root / DEFAULT_STARTUP_FILE).is_file():
            t.fail("entry", f"no entry given and {root / DEFAULT_STARTUP_FILE} does not exist",
                   or_header=True)
        return None
    value = _string(t, "entry", raw).strip()
    if value.endswith(".py"):
        try:
            exists = (root / value).is_file()
        except (OSError, ValueError) as exc:
            t.fail("entry", f"not a usable file name: {exc}")
        if not exists:
            t.fail("entry", f"startup file {root / value} does not exist")
    elif not _ENTRY_RE.fullmatch(value):
        t.fail("entry", 'must be "module:callable" (e.g. "app:application" or '
               f'"app:create_app()") or a .py startup file, got {_show(value, False)}')
    return value


def _check_apps(top: _Table, apps: tuple[AppConfig, ...]) -> None:
    """Cross-app rules: unique names, at most one default, no two apps on the same route."""
    def fail(i: int, key: str, detail: str) -> NoReturn:
        label = f"[[app]] #{i + 1} ({json.dumps(apps[i].name)})"
        dataclasses.replace(top, label=label, loc=("app", i)).fail(key, detail, or_header=True)

    def where(i: int, key: str) -> str:
        line = top.locator.find(("app", i, key), 2)
        at = f" at line {line}" if line else ""
        return f"[[app]] #{i + 1} ({json.dumps(apps[i].name)}){at}"

    names: dict[str, int] = {}
    default: int | None = None
    routes: dict[tuple[str, str], int] = {}
    for i, app in enumerate(apps):
        if app.name in names:
            fail(i, "name", f"duplicate app name {json.dumps(app.name)}, also used by "
                 f"{where(names[app.name], 'name')}")
        names[app.name] = i
        if app.default:
            if default is not None:
                fail(i, "default", f"only one app may be the default, and "
                     f"{where(default, 'default')} already is")
            default = i
        for host in app.hosts or ("",):
            other = routes.setdefault((host, app.base_uri), i)
            if other != i:
                on = f" for host {json.dumps(host)}" if host else " (neither sets hosts)"
                fail(i, "base_uri", f"apps {json.dumps(apps[other].name)} and "
                     f"{json.dumps(app.name)} both take base_uri {json.dumps(app.base_uri)}{on}")


def apply_overrides(config: Config, *, port: int | None = None, address: str | None = None,
                    spawn_method: str | None = None) -> Config:
    """``config`` with command-line flags applied; ``spawn_method`` applies to every app."""
    cli = _Table(None, _Locator(""), Path.cwd(), "command line", ())
    server = config.server
    if server.bind and (port is not None or address is not None):
        cli.fail("--port" if port is not None else "--address",
                 "the config's [server] bind says where to listen; change it there")
    if port is not None:
        server = dataclasses.replace(server, port=_int(0, 65535)(cli, "--port", port))
    if address is not None:
        server = dataclasses.replace(server, address=_string(cli, "--address", address))
    apps = config.apps
    if spawn_method is not None:
        method = _choice("smart", "direct")(cli, "--spawn-method", spawn_method)
        apps = tuple(dataclasses.replace(app, spawn_method=method) for app in apps)
    return dataclasses.replace(config, server=server, apps=apps)
