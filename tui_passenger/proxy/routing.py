"""Pick the app for a request by host (exact or ``*.example.com``) and path prefix."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")
U = TypeVar("U")


def request_path(url: bytes) -> str:
    """The decoded path of a request target (no query), for routing."""
    path = url.partition(b"?")[0].decode("latin-1")
    if not path.startswith("/"):  # absolute form: http://host/path
        after_scheme = path.partition("//")[2]
        path = "/" + after_scheme.partition("/")[2]
    return unquote(path) if "%" in path else path


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

    #: Hosts remembered with their candidate routes (they come from clients: bounded).
    CACHE_SIZE = 1024

    def __init__(self, routes: Iterable[tuple[tuple[str, ...], str, bool, T]]) -> None:
        # (hosts, base_uri, is_default, target)
        self._routes = sorted(routes, key=lambda r: -len(r[1]))
        self._defaults = [r for r in self._routes if r[2]]
        self._by_host: dict[str, tuple[tuple[str, T], ...]] = {}

    def candidates(self, host: str | None) -> tuple[tuple[str, T], ...]:
        """(base_uri, target) of the routes ``host`` may take, best first; defaults last."""
        key = host or ""
        found = self._by_host.get(key)
        if found is None:
            name = normalise_host(host)
            scored = [(score, base_uri, target) for hosts, base_uri, _, target in self._routes
                      if (score := host_matches(hosts, name)) >= 0]
            # Stable: on a tie (same host score and base_uri length) the first route wins.
            scored.sort(key=lambda r: (-r[0], -len(r[1])))
            found = tuple((base_uri, target) for _, base_uri, target in scored) + tuple(
                (base_uri, target) for _, base_uri, _, target in self._defaults)
            if len(self._by_host) >= self.CACHE_SIZE:
                self._by_host.clear()
            self._by_host[key] = found
        return found

    def route(self, host: str | None, url: U, path_of: Callable[[U], str]
              ) -> tuple[T, str] | None:
        """The target and its SCRIPT_NAME, or None (404).

        ``path_of(url)`` is called (once) only when a candidate has a base_uri other than "/".
        """
        path: str | None = None
        found = self._by_host.get(host or "")  # the candidates, without a call when known
        for base_uri, target in self.candidates(host) if found is None else found:
            if base_uri == "/":
                return target, ""
            if path is None:
                path = path_of(url)
            script_name = split_path(base_uri, path)
            if script_name is not None:
                return target, script_name
        return None
