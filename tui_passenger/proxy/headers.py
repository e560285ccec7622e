"""Header rules of the proxy: hop-by-hop removal (RFC 9110 §7.6.1), forwarding headers."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

# Hop-by-hop fields (RFC 9110 §7.6.1), plus Proxy-Connection which old clients still send.
HOP_BY_HOP = frozenset({
    b"connection", b"proxy-connection", b"keep-alive", b"te", b"transfer-encoding", b"upgrade",
    b"trailer",
})
# Fields the proxy itself sets towards the worker: client-sent copies are dropped.
INTERNAL_PREFIX = b"x-passenger-"
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
# The request is sent with its buffered body's real length; Expect was handled by the proxy.
REFRAMED = frozenset({b"content-length", b"expect"})
#: Request fields the proxy drops or rewrites (besides INTERNAL_PREFIX ones): a request with
#: none of them has its headers forwarded as they came.
REWRITTEN = HOP_BY_HOP | REFRAMED | FORWARDED | {b"x-request-id"}


def forwarding_headers(ip: str, address: bytes) -> bytes:
    """The forwarding fields for a direct (untrusted) client, ending in CRLF.

    The same for every request on a connection, so built once per connection;
    X-Forwarded-Host and X-Request-Id vary per request and are added apart. No
    X-Passenger-Scheme: a worker takes its absence for http.
    """
    peer = ip.encode()
    return (b"X-Forwarded-For: %b\r\nX-Forwarded-Proto: http\r\n"
            b"X-Passenger-Remote-Addr: %b\r\n" % (peer, address))


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Field names listed in Connection headers (they are hop-by-hop too)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


class TrustedProxies:
    """Addresses whose X-Forwarded-* headers are believed."""

    __slots__ = ("_networks",)

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(e, strict=False) for e in entries]

    def __contains__(self, address: str | None) -> bool:
        if not address or not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)
