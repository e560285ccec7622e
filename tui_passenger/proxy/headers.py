"""Header rules of the proxy: hop-by-hop removal (RFC 9110 §7.6.1), forwarding headers, and
the request head sent to a worker."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from tui_passenger.runtime import http_common, http_parser

if TYPE_CHECKING:
    from tui_passenger.proxy.request import Request

#: Hop-by-hop fields, dropped both ways: the workers' list (runtime/http_common.py), plus
#: Proxy-Connection, which only a proxy meets (old clients still send it).
HOP_BY_HOP = frozenset(name.encode("ascii") for name in http_common.HOP_BY_HOP) | {
    b"proxy-connection"}
# Fields the proxy itself sets towards the worker: client-sent copies are dropped.
INTERNAL_PREFIX = b"x-passenger-"
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
# The request is sent with its buffered body's real length; Expect was handled by the proxy.
REFRAMED = frozenset({b"content-length", b"expect"})
#: Request fields the proxy drops or rewrites (besides INTERNAL_PREFIX ones): a request with
#: none of them has its headers forwarded as they came.
REWRITTEN = HOP_BY_HOP | REFRAMED | FORWARDED | {b"x-request-id"}
#: Request fields whose value is one item, not a list (RFC 9110 5.3): a second field line
#: cannot be merged into the first, so the request is refused (400) rather than guessed at.
#: gunicorn refuses repeats of Host and Content-Type (and llhttp of Content-Length); the
#: others are RFC 9110's singletons that decide authentication, the resource, a range or a
#: condition. Informational ones (User-Agent, Referer, From, Date) stay tolerated. Each maps
#: to a bit, so the client tracks repeats in one int.
SINGLETONS = {name: 1 << bit for bit, name in enumerate((
    b"content-length", b"content-type", b"content-location", b"content-range",
    b"authorization", b"proxy-authorization", b"range", b"if-range", b"if-modified-since",
    b"if-unmodified-since", b"max-forwards"))}
#: The request fields the client connection looks at one by one (others are only checked
#: for the internal prefix); Host is counted apart (one per HTTP/1.1 request).
CHECKED = frozenset(REWRITTEN | SINGLETONS.keys() | {b"host"})
#: Fields refused (400) as chunked trailer fields: those that must be known before the
#: content (RFC 9110 6.5.1; the workers' parser refuses the same), the singletons, and the
#: ones the proxy sets itself. Other trailer fields are dropped: they are never merged into
#: the header section, and WSGI has no trailers.
FORBIDDEN_TRAILERS = frozenset(
    http_parser.FORBIDDEN_TRAILERS | HOP_BY_HOP | FORWARDED | SINGLETONS.keys()
    | {b"x-request-id", b"forwarded"})


def forwarding_headers(ip: str, address: bytes) -> bytes:
    """The forwarding fields for a direct (untrusted) client, ending in CRLF.

    The same for every request on a connection, so built once per connection;
    X-Forwarded-Host and X-Request-Id vary per request and are added apart. No
    X-Passenger-Scheme: a worker takes its absence for http.
    """
    peer = ip.encode()
    return (b"X-Forwarded-For: %b\r\nX-Forwarded-Proto: http\r\n"
            b"X-Passenger-Remote-Addr: %b\r\n" % (peer, address))


#: The forwarding fields for a peer on a Unix socket: it has no address to report (the
#: worker then gives the app REMOTE_ADDR 127.0.0.1, a peer on this machine).
UNIX_PEER_FORWARDING = b"X-Forwarded-Proto: http\r\n"


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Field names listed in Connection headers (they are hop-by-hop too)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


class Peer(Protocol):
    """The client end of a connection, as the forwarding headers describe it."""

    #: The client's IP address, and ``ip:port`` (``[v6]:port``) as sent to the worker.
    ip: str
    address: bytes
    #: The peer is one of trusted_proxies (its X-Forwarded-* and X-Request-Id are kept).
    trusted: bool
    #: :func:`forwarding_headers` of this peer, built once per connection.
    forwarding: bytes


def build_upstream_request(peer: Peer, request: Request, script_name: str,
                           request_id: bytes) -> bytes:
    """The request line and headers sent to the worker (the body follows them)."""
    raw = request.headers
    if request.plain and raw and not script_name and request.body is None:
        # The common case: nothing to drop or rewrite (the field lines are joined in C).
        return b"%b %b HTTP/1.1\r\n%b\r\n%bX-Forwarded-Host: %b\r\nX-Request-Id: %b\r\n\r\n" % (
            request.method.encode(), request.url, b"\r\n".join(map(b": ".join, raw)),
            peer.forwarding, request.host.encode("latin-1"), request_id)
    dropped = HOP_BY_HOP | REFRAMED | connection_tokens(raw)
    trusted = peer.trusted
    parts = [request.method.encode(), b" ", request.url, b" HTTP/1.1\r\n"]
    forwarded: dict[bytes, bytes] = {}
    for name, value in raw:
        lower = name.lower()
        if lower in dropped or lower.startswith(INTERNAL_PREFIX) or lower == b"x-request-id":
            continue
        if lower in FORWARDED:
            # Believed only from trusted proxies; otherwise replaced by ours.
            if trusted:
                previous = forwarded.get(lower)
                forwarded[lower] = previous + b", " + value if previous else value
            continue
        parts += (name, b": ", value, b"\r\n")
    ip = peer.ip.encode()
    chain = forwarded.get(b"x-forwarded-for")
    if ip:  # a Unix-socket peer (the local proxy) has no address to add to the chain
        chain = chain + b", " + ip if chain else ip
    if chain:
        parts += (b"X-Forwarded-For: ", chain, b"\r\n")
    scheme = forwarded.get(b"x-forwarded-proto") or b"http"
    parts += (b"X-Forwarded-Proto: ", scheme,
              b"\r\nX-Forwarded-Host: ",
              forwarded.get(b"x-forwarded-host") or request.host.encode("latin-1"),
              b"\r\nX-Request-Id: ", request_id, b"\r\n")
    if peer.address:
        parts += (b"X-Passenger-Remote-Addr: ", peer.address, b"\r\n")
    if scheme != b"http":  # a worker takes no X-Passenger-Scheme for http
        parts += (b"X-Passenger-Scheme: ", scheme, b"\r\n")
    if script_name:
        parts += (b"X-Passenger-Script-Name: ", script_name.encode("latin-1"), b"\r\n")
    if request.version != "1.1":
        # The worker connection stays HTTP/1.1 (keep-alive, chunked responses, which this
        # proxy reframes for the client); the app is told the version the client spoke.
        parts += (b"X-Passenger-Protocol: HTTP/", request.version.encode(), b"\r\n")
    body = request.body
    if body is not None:
        parts += (b"Content-Length: ", str(body.length).encode(), b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


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
