"""Validate single ``passenger.toml`` values and locate keys' lines for error messages."""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from tui_passenger.config_model import ConfigError, EnvMap
from tui_passenger.listeners import BindAddress

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
    if isinstance(value, list):
        return "an array"
    return "a table" if isinstance(value, dict) else "a date/time"


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


def _counts(t: _Table, key: str, value: Any) -> tuple[int, ...]:
    """An array of positive, strictly increasing integers (request counts)."""
    if not isinstance(value, list):
        t.fail(key, f"expected an array of request counts, e.g. [100, 500], got {_show(value)}")
    counts: list[int] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            t.fail(key, f"request counts must be integers of at least 1, got {_show(item)}")
        if counts and item <= counts[-1]:
            t.fail(key, f"request counts must increase, got {counts[-1]} then {item}")
        counts.append(item)
    return tuple(counts)


def _fraction(t: _Table, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 < value <= 1:
        t.fail(key, f"expected a fraction above 0 and at most 1 (0.1 = 10%), got {_show(value)}")
    return float(value)


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


def _python(t: _Table, key: str, raw: Any) -> str:
    value = _string(t, key, raw)
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


def _account(t: _Table, key: str, raw: Any, database: str) -> str:
    """A user or group name that exists on this machine."""
    import grp
    import pwd

    value = _string(t, key, raw)
    try:
        (pwd.getpwnam if database == "pwd" else grp.getgrnam)(value)
    except KeyError:
        t.fail(key, f"no {'user' if database == 'pwd' else 'group'} {json.dumps(value)} on "
                    "this machine")
    return value


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


def _tcp_address(t: _Table, key: str, raw: Any) -> tuple[str, int]:
    """One TCP address, ``HOST:PORT`` (``[IPv6]:PORT``): the host and the port."""
    example = 'HOST:PORT, e.g. "0.0.0.0:9100" or "[::]:9100"'
    if isinstance(raw, list):
        t.fail(key, f"takes one address ({example}), not an array")
    value = _string(t, key, raw).strip()
    if value.startswith("unix:"):
        t.fail(key, f"must be a TCP address ({example}): it is for load balancers and "
               f"Prometheus, got {_show(value, False)}")
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or not host:
        t.fail(key, f"must be {example}, got {_show(value, False)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host or _network(host) is None:
            t.fail(key, f"{json.dumps(host)} in brackets is not an IPv6 address")
    elif ":" in host:
        t.fail(key, f'write an IPv6 address in brackets, e.g. "[{host}]:{port}"')
    elif _host(host) is None or (host.replace(".", "").isdigit() and _network(host) is None):
        t.fail(key, f"{json.dumps(host)} is not a host name or an IPv4 address")
    if int(port) > 65535:
        t.fail(key, f"port must be between 0 and 65535, got {port}")
    return host.lower(), int(port)


def _bind(text: str) -> str | None:
    address = BindAddress.parse(text)
    return None if address is None else str(address)


def _binds(t: _Table, key: str, value: Any) -> tuple[str, ...]:
    binds = _string_list(t, key, value, "addresses", _bind,
                         'an address: "HOST:PORT", "[IPv6]:PORT" or "unix:/PATH"')
    if not binds:
        t.fail(key, 'must list at least one address, e.g. ["127.0.0.1:3000"]')
    # A relative socket path is relative to the config file, like admin_socket.
    return tuple(f"unix:{os.path.normpath(t.base_dir / b[5:])}" if b.startswith("unix:")
                 else b for b in binds)


def _mode(t: _Table, key: str, value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value.strip()):
        return int(value, 8)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value  # TOML's own octal: 0o660
    t.fail(key, f'expected a file mode such as "0660", got {_show(value)}')


def _base_uri(t: _Table, key: str, raw: Any) -> str:
    value = _string(t, key, raw)
    if not value.startswith("/") or any(c in value for c in "?# \t"):
        t.fail(key, f'must be a path starting with "/", got {_show(value, False)}')
    return value.rstrip("/") or "/"


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _name(t: _Table, key: str, raw: Any) -> str:
    value = _string(t, key, raw)
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
    "max_request_queue_time": _seconds(),
    "start_timeout": _seconds(positive=True),
    "concurrency": _int(),
    "environment": _string,
    "user": lambda t, key, value: _account(t, key, value, "pwd"),
    "group": lambda t, key, value: _account(t, key, value, "grp"),
    "allow_root": _bool,
    "gc_freeze": _bool,
    "refork_after": _counts,
    "refork_max_unavailable": _fraction,
    "max_request_time": _seconds(),
    "pipeline_window": _seconds(),
    "worker_scheduling": _choice("batch", "normal"),
    "memory_limit": _int(),
    "restart_check_interval": _seconds(),
    "max_websockets": _int(),
    "websocket_ping_interval": _seconds(),
    "websocket_ping_timeout": _seconds(),
    "websocket_max_message_size": _int(),
    "websocket_idle_timeout": _seconds(),
}
_APP_ONLY: dict[str, Check] = {"hosts": _hosts, "base_uri": _base_uri, "default": _bool,
                               "watch": _bool}
_SERVER_ONLY: dict[str, Check] = {
    "address": _string,
    "port": _int(0, 65535),
    "admin_socket": _string,
    "bind": _binds,
    "bind_mode": _mode,
    "bind_group": lambda t, key, value: _account(t, key, value, "grp"),
    "max_pool_size": _int(1),
    "shutdown_timeout": _seconds(),
    "client_max_body_size": _int(1),
    "client_body_buffer_size": _int(0),
    "trusted_proxies": _networks,
    "access_log": _bool,
    "access_log_format": _choice("combined", "json"),
    "access_log_file": _string,
    "access_log_flush": _seconds(positive=True),
    "client_header_timeout": _seconds(positive=True),
    "client_body_timeout": _seconds(positive=True),
    "keepalive_timeout": _seconds(positive=True),
    "max_connections": _int(),
    "metrics_bind": _tcp_address,
    "limit_request_line": _int(64, 65536),
    "limit_request_field_size": _int(64, 65536),
    "limit_request_fields": _int(1, 1000),
}
INHERITABLE_KEYS = frozenset(_INHERITABLE)
APP_KEYS = INHERITABLE_KEYS | {"name", "root", "entry", *_APP_ONLY}
SERVER_KEYS = INHERITABLE_KEYS | set(_SERVER_ONLY)
