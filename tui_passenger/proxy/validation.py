"""Checks of a request head that llhttp lets through but HTTP/1.1 (RFC 9110, 9112) forbids.

Each returns None, or the status and reason of the refusal (the client connection answers
it with one of the proxy's own pages; the app never sees the request).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from tui_passenger.proxy.request import Request

Problem = tuple[int, str] | None


def head_problem(request: Request, hosts: int, chunked: bool) -> Problem:
    """Version, Host, framing and request-target checks of a parsed head."""
    version = request.version
    if version == "1.1":
        if hosts != 1:
            return 400, f"an HTTP/1.1 request needs exactly one Host header (got {hosts})"
    elif version == "1.0":
        if chunked:
            return 400, "Transfer-Encoding in an HTTP/1.0 request"
        if hosts > 1:
            return 400, f"repeated Host header field (got {hosts})"
    else:
        return 400, f"HTTP/{version} is not supported"
    if request.method == "CONNECT":
        return 405, "CONNECT is not supported (this is not a forward proxy)"
    url = request.url
    if url[:1] != b"/":
        if url != b"*":
            return target_problem(url)
        if request.method != "OPTIONS":
            return 400, "the asterisk-form target is only for OPTIONS"
    return None


#: A request line that is well formed but for a method llhttp does not know: a token
#: (RFC 9110 9.1), a target, an HTTP version.
_METHOD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}) [^ \x00-\x20\x7f]+ "
                     rb"HTTP/\d\.\d\r\n")


def parse_problem(exc: httptools.HttpParserError, start: bytes | None) -> tuple[int, str]:
    """The answer to a request llhttp refused; ``start``: the bytes the request began with,
    when known. A well-formed method llhttp does not know is 501 (RFC 9110 9.1: the server
    does not implement it); anything else is 400."""
    if isinstance(exc, httptools.HttpParserInvalidMethodError) and start is not None \
            and (method := _METHOD.match(start)):
        name = method[1].decode("latin-1")
        return 501, f"method {name} is not implemented"
    return 400, f"malformed request: {exc}"


def target_problem(url: bytes) -> Problem:
    """An absolute-form target (RFC 9112 3.2.2) must be an http(s) URI with a host."""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        parsed = None
    if parsed is None or parsed.schema not in (b"http", b"https") or not parsed.host:
        return 400, f"invalid request target {url[:200].decode('latin-1')!r}"
    return None


def codings_problem(codings: bytes) -> Problem:
    """Transfer codings other than a lone chunked: chunked must come last, once (else the
    body has no reliable end: 400, RFC 9112 6.3), and only chunked (and the no-op identity)
    is decoded here (others: 501, RFC 9112 6.1)."""
    names = [coding.strip(b" \t").lower() for coding in codings.split(b",")]
    if names[-1] != b"chunked" or names.count(b"chunked") > 1:
        return 400, (f"Transfer-Encoding {codings.decode('latin-1')!r}: chunked must be the "
                     "final coding, once")
    for name in names:
        if name not in (b"chunked", b"identity"):
            return 501, f"transfer coding {name.decode('latin-1')!r} is not implemented"
    return None
