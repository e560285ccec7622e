"""Load ``passenger.toml`` into frozen, validated dataclasses.

Every problem raises :class:`ConfigError`, whose ``str()`` is one line naming the file, line,
table and key: ``passenger.toml:14: [[app]] #2 ("api"): spawn_method: must be ...``.

Per-app settings (:data:`INHERITABLE_KEYS`) written in ``[server]`` are defaults for every
``[[app]]`` that does not set them; ``env`` tables are merged (the app's variables win).
Two apps conflict when they share a ``base_uri`` and either both have no ``hosts`` or both
list the same host pattern; apps that differ only in how specific their hosts are do not.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "APP_KEYS", "INHERITABLE_KEYS", "SERVER_KEYS", "AppConfig", "Config", "ConfigError",
    "EnvMap", "ServerConfig", "apply_overrides", "load_config", "parse_config",
]

DEFAULT_CONCURRENCY = {"wsgi": 1, "asgi": 100}
DEFAULT_STARTUP_FILE = "passenger_wsgi.py"
_STRING_SOURCE = "<string>"


class ConfigError(Exception):
    """An invalid configuration; ``str()`` is a single human-readable line."""

    def __init__(self, detail: str, *, path: str | None = None, table: str | None = None,
                 key: str | None = None, line: int | None = None, column: int | None = None,
                 key_in_detail: bool = False) -> None:
        self.detail, self.path, self.table, self.key = detail, path, table, key
        self.line, self.column = line, column
        where = (path or "") + "".join(f":{n}" for n in (line, column) if n and path)
        parts = [where, table, None if key_in_detail else key, detail]
        message = ": ".join(p for p in parts if p)
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class EnvMap(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping (an app's environment variables)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __eq__(self, other: object) -> bool:
        return dict(self._data) == dict(other) if isinstance(other, Mapping) else NotImplemented

    def __repr__(self) -> str:
        return f"EnvMap({self._data!r})"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The ``[server]`` table: where to listen and pool-wide limits."""

    address: str = "127.0.0.1"
    port: int = 3000
    admin_socket: str | None = None
    max_pool_size: int = 6
    shutdown_timeout: float = 30.0
    #: Largest request body accepted (bytes); larger → 413.
    client_max_body_size: int = 1024 * 1024 * 1024
    #: Request bodies above this many bytes are spooled to a temporary file.
    client_body_buffer_size: int = 1024 * 1024
    #: Peers (addresses or CIDR networks) whose X-Forwarded-* headers are kept.
    trusted_proxies: tuple[str, ...] = ()
    #: One log line per request on the ``tui_passenger.access`` logger.
    access_log: bool = True


@dataclass(frozen=True, slots=True)
class AppConfig:
    """One ``[[app]]`` table, with ``[server]`` defaults already applied."""

    name: str
    root: Path
    entry: str | None = None
    interface: str = "auto"
    env: EnvMap = EnvMap()
    python: str = sys.executable
    spawn_method: str = "smart"
    min_instances: int = 1
    max_instances: int = 0
    pool_idle_time: float = 300.0
    max_preloader_idle_time: float = 300.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_request_queue_size: int = 100
    start_timeout: float = 90.0
    concurrency: int = 0
    environment: str = "production"
    #: Smart spawning: gc.collect() + gc.freeze() in the preloader before each fork.
    gc_freeze: bool = True
    hosts: tuple[str, ...] = ()
    base_uri: str = "/"
    default: bool = False

    def effective_concurrency(self, interface: str) -> int:
        """Requests one worker takes at once, given the detected ``"wsgi"``/``"asgi"``."""
        if interface not in DEFAULT_CONCURRENCY:
            raise ValueError(f"interface must be 'wsgi' or 'asgi', got {interface!r}")
        return self.concurrency or DEFAULT_CONCURRENCY[interface]


@dataclass(frozen=True, slots=True)
class Config:
    """A whole configuration file: the server settings and the apps, in file order."""

    path: Path | None
    server: ServerConfig
    apps: tuple[AppConfig, ...]
    #: Dashboard key remapping: action id → key (the ``[keys]`` table).
    keys: EnvMap = dataclasses.field(default_factory=lambda: EnvMap({}))

    def app(self, name: str) -> AppConfig:
        """The app called ``name``; KeyError if there is none."""
        for app in self.apps:
            if app.name == name:
                return app
        raise KeyError(name)


_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART_RE = re.compile(_PART)

Loc = tuple[str | int, ...]


def _split_dotted(text: str) -> list[str]:
    parts = [m.group() for m in _PART_RE.finditer(text)]
    return [json.loads(p) if p[0] == '"' else p.strip("'") for p in parts]


class _Locator:
    """Maps table/key paths such as ``("app", 1, "env", "KEY")`` to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self._lines: dict[Loc, int] = {}
        try:
            self._scan(text)
        except Exception:  # a best-effort aid: never let it break error reporting
            self._lines.clear()

    def _scan(self, text: str) -> None:
        counts: dict[tuple[str, ...], int] = {}
        table: Loc = ()
        in_string: str | None = None

        def resolve(names: list[str]) -> list[str | int]:
            out: list[str | int] = []
            for i, name in enumerate(names):
                out.append(name)
                if tuple(names[: i + 1]) in counts:
                    out.append(counts[tuple(names[: i + 1])] - 1)
            return out

        for number, line in enumerate(text.splitlines(), start=1):
            if in_string:
                in_string = None if in_string in line else in_string
            elif header := _HEADER_RE.match(line):
                names = _split_dotted(header.group(2))
                if header.group(1) == "[[":
                    counts[tuple(names)] = counts.get(tuple(names), 0) + 1
                table = tuple(resolve(names))
                for end in range(1, len(table) + 1):  # parents too: [a.b] also locates [a]
                    self._lines.setdefault(table[:end], number)
            elif key := _KEY_LINE_RE.match(line):
                names = _split_dotted(key.group(1))
                for end in range(1, len(names) + 1):
                    self._lines.setdefault(table + tuple(names[:end]), number)
                value = line[key.end():].lstrip()
                if value[:3] in ('"""', "'''") and value[:3] not in value[3:]:
                    in_string = value[:3]  # a multi-line string starts: skip to its end

    def find(self, loc: Loc, min_len: int | None = None) -> int | None:
        """Line of ``loc`` or, failing that, of its parents down to ``min_len`` elements."""
        stop = len(loc) if min_len is None else min_len
        for end in range(len(loc), stop - 1, -1):
            if loc[:end] in self._lines:
                return self._lines[loc[:end]]
        return None


@dataclass
class _Table:
    """A table being validated: knows how to describe and locate its errors."""

    path: str | None
    locator: _Locator
    base_dir: Path
    label: str | None
    loc: Loc

    def fail(self, key: str | None, detail: str, *, sub: Loc = (), key_in_detail: bool = False,
             or_header: bool = False) -> NoReturn:
        """Raise a ConfigError about ``key`` (the table itself when None) at its line if known.

        ``or_header`` falls back to the table header's line when the key is not written there.
        """
        loc = (*self.loc, *(() if key is None else (key, *sub)))
        line = self.locator.find(loc, len(self.loc) + (0 if key is None or or_header else 1))
        shown = key if key is None or not sub else ".".join([key, *map(str, sub)])
        raise ConfigError(detail, path=self.path, table=self.label, key=shown, line=line,
                          key_in_detail=key_in_detail)

    def check_keys(self, data: Mapping[str, Any], allowed: frozenset[str],
                   elsewhere: tuple[frozenset[str], str]) -> None:
        """Reject keys not in ``allowed``, saying where they belong or what was meant."""
        for key in [k for k in data if k not in allowed]:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = (f" (it belongs in {elsewhere[1]})" if key in elsewhere[0] else
                    f" (did you mean {_key(close[0])}?)" if close else "")
            self.fail(key, f"unknown key {_key(key)}{hint}", key_in_detail=True)


def _key(name: str) -> str:
    return f"'{name}'" if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _show(value: Any, typed: bool = True) -> str:
    """A value as TOML would spell it, with its type if ``typed``: ``true (boolean)``."""
    if isinstance(value, str):
        text = json.dumps(value)
        text = text if len(text) <= 60 else text[:56] + '..."'
        return f"{text} (string)" if typed else text
    if isinstance(value, bool):
        return f"{str(value).lower()} (boolean)" if typed else str(value).lower()
    if isinstance(value, int | float):
        kind = "integer" if isinstance(value, int) else "float"
        return f"{value} ({kind})" if typed else str(value)
    return {list: "an array", dict: "a table"}.get(type(value), "a date/time")


Check = Callable[[_Table, str, Any], Any]


def _int(low: int = 0, high: int | None = None) -> Check:
    def check(t: _Table, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            t.fail(key, f"expected an integer, got {_show(value)}")
        if value < low or (high is not None and value > high):
            rng = f"between {low} and {high}" if high is not None else f"at least {low}"
            t.fail(key, f"must be {rng}, got {value}")
        return value
    return check


def _seconds(positive: bool = False) -> Check:
    def check(t: _Table, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            t.fail(key, f"expected a number of seconds, got {_show(value)}")
        if not math.isfinite(value):
            t.fail(key, f"must be a finite number of seconds, got {value}")
        if value < 0 or (positive and value == 0):
            t.fail(key, f"must be {'greater than' if positive else 'at least'} 0, got {value}")
        return float(value)
    return check


def _string(t: _Table, key: str, value: Any) -> str:
    if not isinstance(value, str):
        t.fail(key, f"expected a string, got {_show(value)}")
    if not value.strip():
        t.fail(key, "must not be empty")
    return value


def _choice(*options: str) -> Check:
    def check(t: _Table, key: str, value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            wanted = ", ".join(map(json.dumps, options[:-1])) + f" or {json.dumps(options[-1])}"
            t.fail(key, f"must be {wanted}, got {_show(value, not isinstance(value, str))}")
        return value
    return check


def _bool(t: _Table, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        t.fail(key, f"expected true or false, got {_show(value)}")
    return value


def _env(t: _Table, key: str, value: Any) -> EnvMap:
    if not isinstance(value, dict):
        t.fail(key, f"expected a table of strings, got {_show(value)}")
    for name, item in value.items():
        if not isinstance(item, str):
            t.fail(key, f"expected a string, got {_show(item)}", sub=(name,))
        if not name or "=" in name or "\0" in name + item:
            t.fail(key, "names must be non-empty and without '=', and nothing may contain NUL",
                   sub=(name,))
    return EnvMap(value)


def _python(t: _Table, key: str, value: Any) -> str:
    value = _string(t, key, value)
    if "/" not in value:
        found = shutil.which(value)
        if found is None:
            t.fail(key, f"{json.dumps(value)} not found on PATH")
        return found
    path = os.path.normpath(t.base_dir / os.path.expanduser(value))
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        t.fail(key, f"{path} does not exist or is not executable")
    return path


_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST_RE = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")


def _string_list(t: _Table, key: str, value: Any, what: str,
                 normalise: Callable[[str], str | None], problem: str) -> tuple[str, ...]:
    """An array of strings, each normalised (None = invalid: ``problem`` says why)."""
    if not isinstance(value, list):
        t.fail(key, f"expected an array of {what}, got {_show(value)}")
    items: list[str] = []
    for item in value:
        if not isinstance(item, str):
            t.fail(key, f"expected {what} (strings), got {_show(item)}")
        normal = normalise(item.strip())
        if normal is None:
            t.fail(key, f"{json.dumps(item)} is not {problem}")
        if normal not in items:
            items.append(normal)
    return tuple(items)


def _host(text: str) -> str | None:
    host = text.lower()
    return host if _HOST_RE.fullmatch(host) else None


def _network(text: str) -> str | None:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


def _hosts(t: _Table, key: str, value: Any) -> tuple[str, ...]:
    return _string_list(t, key, value, "host names", _host,
                        'a host name or "*." + host name (give no scheme, port or path)')


def _networks(t: _Table, key: str, value: Any) -> tuple[str, ...]:
    return _string_list(t, key, value, "addresses or networks", _network,
                        "an IP address or network (e.g. 10.0.0.0/8)")


def _base_uri(t: _Table, key: str, value: Any) -> str:
    value = _string(t, key, value)
    if not value.startswith("/") or any(c in value for c in "?# \t"):
        t.fail(key, f'must be a path starting with "/", got {_show(value, False)}')
    return value.rstrip("/") or "/"


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _name(t: _Table, key: str, value: Any) -> str:
    value = _string(t, key, value)
    if not _NAME_RE.fullmatch(value):
        t.fail(key, "must be letters, digits, '_', '.' or '-' (starting with a letter or digit), "
               f"got {_show(value, False)}")
    return value


# Per-app settings that [server] may also give as defaults. Defaults live on the dataclasses.
_INHERITABLE: dict[str, Check] = {
    "interface": _choice("wsgi", "asgi", "auto"),
    "env": _env,
    "python": _python,
    "spawn_method": _choice("smart", "direct"),
    "min_instances": _int(),
    "max_instances": _int(),
    "pool_idle_time": _seconds(),
    "max_preloader_idle_time": _seconds(),
    "max_requests": _int(),
    "max_requests_jitter": _int(),
    "max_request_queue_size": _int(),
    "start_timeout": _seconds(positive=True),
    "concurrency": _int(),
    "environment": _string,
    "gc_freeze": _bool,
}
_APP_ONLY: dict[str, Check] = {"hosts": _hosts, "base_uri": _base_uri, "default": _bool}
_SERVER_ONLY: dict[str, Check] = {
    "address": _string,
    "port": _int(0, 65535),
    "admin_socket": _string,
    "max_pool_size": _int(1),
    "shutdown_timeout": _seconds(),
    "client_max_body_size": _int(1),
    "client_body_buffer_size": _int(0),
    "trusted_proxies": _networks,
    "access_log": _bool,
}
INHERITABLE_KEYS = frozenset(_INHERITABLE)
APP_KEYS = INHERITABLE_KEYS | {"name", "root", "entry", *_APP_ONLY}
SERVER_KEYS = INHERITABLE_KEYS | set(_SERVER_ONLY)
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
    "scale_up", "scale_down", "kill", "spawn_method", "restart", "pause", "filter", "sort",
    "detail_tab", "theme", "help", "quit",
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
    root = (t.base_dir / os.path.expanduser(_string(t, "root", raw["root"]))).resolve()
    if not root.is_dir():
        t.fail("root", f"{root} {'is not a directory' if root.exists() else 'does not exist'}")
    values = {**defaults, "entry": _entry(t, root, raw.get("entry"))}
    for key, check in (_INHERITABLE | _APP_ONLY).items():
        if key in raw:
            values[key] = check(t, key, raw[key])
    if "env" in defaults and "env" in raw:
        values["env"] = EnvMap({**defaults["env"], **values["env"]})
    _check_instances(t, values, raw)
    return AppConfig(name=name, root=root, **values)


def _entry(t: _Table, root: Path, value: Any) -> str | None:
    if value is None:
        if not (root / DEFAULT_STARTUP_FILE).is_file():
            t.fail("entry", f"no entry given and {root / DEFAULT_STARTUP_FILE} does not exist",
                   or_header=True)
        return None
    value = _string(t, "entry", value).strip()
    if value.endswith(".py"):
        if not (root / value).is_file():
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
    if port is not None:
        server = dataclasses.replace(server, port=_int(0, 65535)(cli, "--port", port))
    if address is not None:
        server = dataclasses.replace(server, address=_string(cli, "--address", address))
    apps = config.apps
    if spawn_method is not None:
        method = _choice("smart", "direct")(cli, "--spawn-method", spawn_method)
        apps = tuple(dataclasses.replace(app, spawn_method=method) for app in apps)
    return dataclasses.replace(config, server=server, apps=apps)
