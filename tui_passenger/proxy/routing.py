"""Pick the app for a request by host (exact or ``*.example.com``) and path prefix."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


def normalise_host(host: str | None) -> str:
    """Lower-case host without port (``[v6]:port`` aware)."""
    if not host:
        return ""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_matches(patterns: tuple[str, ...], host: str) -> int:
    """How well ``host`` matches: 2 exact, 1 wildcard, 0 no host rule, -1 no match."""
    if not patterns:
        return 0
    best = -1
    for pattern in patterns:
        if pattern == host:
            return 2
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
            best = 1
    return best


def split_path(base_uri: str, path: str) -> str | None:
    """The SCRIPT_NAME for ``path`` under ``base_uri``, or None if it is not under it."""
    if base_uri == "/":
        return ""
    if path == base_uri or path.startswith(base_uri + "/"):
        return base_uri
    return None


class Router(Generic[T]):
    """Routes (host, path) to a target: most specific host first, then longest base_uri."""

    def __init__(self, routes: Iterable[tuple[tuple[str, ...], str, bool, T]]) -> None:
        # (hosts, base_uri, is_default, target)
        self._routes = sorted(routes, key=lambda r: -len(r[1]))
        self._defaults = [r for r in self._routes if r[2]]

    def route(self, host: str | None, path: str) -> tuple[T, str] | None:
        """The target and its SCRIPT_NAME, or None (404)."""
        host = normalise_host(host)
        best: tuple[int, int, T, str] | None = None
        for hosts, base_uri, _, target in self._routes:
            score = host_matches(hosts, host)
            if score < 0:
                continue
            script_name = split_path(base_uri, path)
            if script_name is None:
                continue
            key = (score, len(base_uri))
            if best is None or key > best[:2]:
                best = (score, len(base_uri), target, script_name)
        if best is not None:
            return best[2], best[3]
        for _, base_uri, _, target in self._defaults:
            script_name = split_path(base_uri, path)
            if script_name is not None:
                return target, script_name
        return None
