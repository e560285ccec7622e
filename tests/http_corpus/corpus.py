"""The HTTP/1.1 request corpus (gunicorn's, see README.md) as cases, and how each is judged.

A case is the bytes a client sends on one connection. Valid cases must reach the app as the
expected requests (method, path, query, protocol, end-to-end header fields, body); invalid ones
must be refused (4xx, or the 5xx the RFC names) without reaching the app. ``VERDICTS`` lists
where tui-passenger's judgement differs from gunicorn's and why; ``SKIPPED`` the cases that only
make sense with a gunicorn option. Standard library only (the bench imports it too).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent / "gunicorn"
#: Added to an HTTP/1.1 request that has no Host (RFC 9112 3.2: such a request gets 400, and
#: tui-passenger routes on Host), so that a case is judged on what it is about.
ADDED_HOST = b"Host: corpus.test\r\n"
#: Hop-by-hop and framing fields: a proxy consumes or rewrites them (RFC 9110 7.6.1), so they
#: are not compared; nor are the forwarding fields a proxy adds.
NOT_COMPARED = frozenset({
    "HTTP_CONNECTION", "HTTP_KEEP_ALIVE", "HTTP_TRANSFER_ENCODING", "HTTP_TE", "HTTP_TRAILER",
    "HTTP_UPGRADE", "HTTP_PROXY_CONNECTION", "CONTENT_LENGTH", "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_X_REQUEST_ID", "HTTP_X_REAL_IP",
    "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_SSL", "HTTP_EXPECT"})

#: Valid (for gunicorn) cases that tui-passenger refuses on purpose, with the reason.
VERDICTS: dict[str, str] = {
    "valid/025": "RFC 9112 6.1: a transfer coding the server does not understand (gzip) "
                 "gets 501; decoding only the chunked layer would hand the app gzip bytes "
                 "as the plain body",
    "valid/025_line": "as valid/025 (Transfer-Encoding: gzip,chunked): 501",
    "valid/rfc9112_smuggle_gzip_chunked_01": "as valid/025 (gzip, chunked): 501",
    "valid/012": "a Content-Type trailer field: the content's format must be known before "
                 "the content (RFC 9110 6.5.1), so it is refused (400), never merged",
    "valid/031": "a method llhttp does not know (-BLARGH): 501 (RFC 9110 9.1)",
    "valid/031compat": "needs gunicorn's permit_unconventional_http_method: 400 here",
    "valid/031compat2": "needs gunicorn's permit_unconventional_http_method: 400 here",
    "valid/009": "Transfer-Encoding: identity (no longer a coding) and no chunked: RFC 9112 "
                 "6.3 says the body length cannot be determined, the server MUST answer 400",
    "valid/027": "raw non-ASCII bytes in the request target: not a URI (RFC 9112 3.2, "
                 "RFC 3986 2), refused by llhttp (400)",
    "valid/099": "Content-Length 17914 but 8599 bytes sent before the client closed: an "
                 "incomplete request (400), not one to serve with a cut body",
    "valid/028": "needs gunicorn's strip_header_spaces: whitespace before a colon is a 400 "
                 "(RFC 9112 5.1 MUST)",
    "valid/compat_obs_fold": "needs gunicorn's permit_obsolete_folding: obs-fold is refused "
                             "(RFC 9112 5.2 allows 400)",
    "valid/compat_obs_fold_huge": "needs gunicorn's permit_obsolete_folding: refused (400)",
    "valid/rfc9112_target_authority_connect_01": "CONNECT: a reverse proxy opens no tunnels "
                                                 "(405)",
    "valid/rfc9112_target_authority_ipv6_01": "CONNECT: a reverse proxy opens no tunnels (405)",
}
#: Cases gunicorn runs with its limits set differently from the defaults: run here with the
#: same keys of ``[server]`` set the same way (a server of their own).
LIMITS: dict[str, dict[str, int]] = {
    "valid/024": {"limit_request_line": 8200, "limit_request_field_size": 8210},
    "valid/026": {"limit_request_field_size": 8210},
    "invalid/011": {"limit_request_fields": 2},
    "invalid/012": {"limit_request_field_size": 98},
}

#: Cases that only make sense with a gunicorn option tui-passenger has no equivalent of (or
#: a limit below what it allows): not run.
SKIPPED: dict[str, str] = {
    "valid/040_compat": "needs gunicorn's header_map=dangerous (underscored fields reach the "
                        "app); they are always dropped here, as by gunicorn's default and nginx",
    "invalid/010": "needs limit_request_field_size = 10, below the smallest value allowed "
                   "here (64)",
    "invalid/013": "needs limit_request_field_size = 14 and permit_obsolete_folding",
    "invalid/019": "needs forwarded_allow_ips = '*': X-Forwarded-* from an untrusted client "
                   "are replaced here, not refused",
    "invalid/040": "needs gunicorn's header_map=refuse; underscored fields are dropped here",
    "invalid/chunked_07": "needs gunicorn's header_map=refuse; underscored fields are dropped "
                          "here",
    **{f"valid/pp_0{n}": "the PROXY protocol (gunicorn's proxy_protocol) is not HTTP"
       for n in (1, 2, 4, 5)},
}


@dataclass
class Case:
    """One corpus case: what the client sends, and what must come of it."""

    name: str
    data: bytes
    #: gunicorn's judgement: the case is a valid request (or several).
    valid: bool
    #: For a valid case: each request as the app must see it (see :func:`app_view`).
    expected: list[dict[str, Any]] = field(default_factory=list)
    #: For an invalid case: the error gunicorn raises.
    error: str = ""
    #: Why tui-passenger refuses a case gunicorn serves ("" when they agree).
    verdict: str = ""
    #: Why the case is not run ("" when it is).
    skip: str = ""
    #: The ``[server]`` limits it is run with (see LIMITS; empty: the defaults).
    limits: dict[str, int] = field(default_factory=dict)

    @property
    def refuse(self) -> bool:
        """The case must be refused (invalid, or refused on purpose)."""
        return not self.valid or bool(self.verdict)


class _Options:
    """Stands for gunicorn's Config in a case file: records ``cfg.set`` calls."""

    def __init__(self) -> None:
        self.set_calls: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> None:
        self.set_calls[key] = value


class _Names(dict[str, Any]):
    """A case file's names: an unknown one (an error class of gunicorn) is its own name."""

    def __missing__(self, key: str) -> str:
        return key


def _uri(raw: str) -> dict[str, str]:
    # As gunicorn's test helper: "//x" is a path, not a network location.
    parts = urlsplit("." + raw) if raw.startswith("//") else urlsplit(raw)
    path = parts.path[1:] if raw.startswith("//") else parts.path
    return {"raw": raw, "path": path, "query": parts.query}


def _wire(text: bytes) -> bytes:
    """A case's bytes: gunicorn writes CRLF, NUL, LF, tab and \\xHH as escapes."""
    data = text.replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\0").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    return re.sub(rb"\\x([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)


def _read_expect(path: Path) -> Any:
    source = "\n".join(line for line in path.read_text("utf-8").splitlines()
                       if not line.startswith(("from ", "import ")))
    names = _Names(uri=_uri, Config=_Options, cfg=_Options())
    exec(compile(source, str(path), "exec"), {"__builtins__": __builtins__}, names)  # noqa: S102
    return names["request"]


def app_view(request: dict[str, Any]) -> dict[str, Any]:
    """What the echo app must report for one expected request of a valid case."""
    uri = request["uri"]
    headers: dict[str, str] = {}
    for name, value in request["headers"]:
        if "_" in name:
            continue  # ambiguous with "-": dropped before the app (as gunicorn does)
        key = name.replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        if key in NOT_COMPARED:
            continue
        headers[key] = headers[key] + "," + value if key in headers else value
    body = request["body"]
    return {
        "method": request["method"],
        "path": unquote(uri["path"], encoding="latin-1"),
        "query": uri["query"],
        "protocol": "HTTP/{}.{}".format(*request["version"]),
        "headers": headers,
        "body": body.decode("latin-1") if isinstance(body, bytes) else body,
    }


def compared(reply: dict[str, Any], added_host: bool) -> dict[str, Any]:
    """The echo app's reply with what is not compared left out."""
    headers = {k: v for k, v in reply["headers"].items() if k not in NOT_COMPARED}
    if added_host:
        headers.pop("HTTP_HOST", None)
    return {**reply, "headers": headers}


def _messages(data: bytes) -> list[int]:
    """Where the requests in ``data`` start (best effort: it stops at what it cannot read)."""
    starts, pos = [], 0
    while pos < len(data):
        while data.startswith(b"\r\n", pos):
            pos += 2
        end = data.find(b"\r\n\r\n", pos)
        if end < 0 or pos >= len(data):
            break
        starts.append(pos)
        head = data[pos:end].lower()
        pos = end + 4
        length = re.search(rb"\r\ncontent-length: *([0-9]+)", head)
        if re.search(rb"\r\ntransfer-encoding:[^\r]*chunked", head):
            while True:
                line_end = data.find(b"\r\n", pos)
                size = re.match(rb"[0-9a-f]+", data[pos:line_end].lower())
                if line_end < 0 or size is None:
                    return starts
                pos = line_end + 2 + int(size.group(), 16)
                if int(size.group(), 16) == 0:
                    trailer_end = data.find(b"\r\n\r\n", pos - 2)
                    if trailer_end < 0:
                        return starts
                    pos = trailer_end + 4
                    break
                pos += 2
        elif length is not None:
            pos += int(length.group(1))
    return starts


def _add_hosts(data: bytes) -> tuple[bytes, bool]:
    """``data`` with ADDED_HOST in each HTTP/1.1 request head that has no Host field."""
    added = False
    for start in reversed(_messages(data) or [0]):
        line_end = data.find(b"\r\n", start)
        head_end = data.find(b"\r\n\r\n", start)
        head = data[start:head_end if head_end >= 0 else len(data)].lower()
        if line_end > 0 and data[start:line_end].endswith(b" HTTP/1.1") \
                and b"\r\nhost:" not in head:
            data = data[:line_end + 2] + ADDED_HOST + data[line_end + 2:]
            added = True
    return data, added


def load() -> list[Case]:
    """Every case of the corpus, in name order, then :func:`rfc_cases`."""
    cases = []
    for kind in ("valid", "invalid"):
        for path in sorted((ROOT / kind).glob("*.http")):
            name = f"{kind}/{path.stem}"
            data, _ = _add_hosts(_wire(path.read_bytes()))
            expect = _read_expect(path.with_suffix(".expect"))
            case = Case(name, data, kind == "valid", verdict=VERDICTS.get(name, ""),
                        skip=SKIPPED.get(name, ""), limits=LIMITS.get(name, {}))
            if case.valid:
                case.expected = [app_view(r) for r in
                                 (expect if isinstance(expect, list) else [expect])]
            else:
                case.error = str(expect)
            cases.append(case)
    return cases + rfc_cases()


def _view(method: str, path: str, body: str = "", protocol: str = "HTTP/1.1",
          **headers: str) -> dict[str, Any]:
    path, _, query = path.partition("?")
    return {"method": method, "path": path, "query": query, "protocol": protocol,
            "headers": {"HTTP_HOST": "rfc.test", **headers}, "body": body}


_POST_CHUNKED = b"POST /upload HTTP/1.1\r\nHost: rfc.test\r\nTransfer-Encoding: chunked\r\n\r\n"
#: Cases written for tui-passenger (not from gunicorn), each with the RFC 9110/9112 text it
#: checks: (name, bytes, the requests the app must see, or None for a refusal).
RFC_CASES: list[tuple[str, bytes, list[dict[str, Any]] | None]] = [
    # 6.5.1: trailer fields are not merged into the header section.
    ("rfc/trailer-dropped", _POST_CHUNKED + b"5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n",
     [_view("POST", "/upload", "hello")]),
    # 7.1.1 (RFC 9112): chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    ("rfc/chunk-ext-bws-before", _POST_CHUNKED + b"5 ;name=value\r\nhello\r\n0\r\n\r\n",
     [_view("POST", "/upload", "hello")]),
    ("rfc/chunk-ext-bws-after", _POST_CHUNKED + b"5; name = value\r\nhello\r\n0\r\n\r\n",
     [_view("POST", "/upload", "hello")]),
    # 7 (RFC 9112): transfer coding names are case-insensitive.
    ("rfc/te-chunked-case", _POST_CHUNKED.replace(b"chunked", b"Chunked")
     + b"5\r\nhello\r\n0\r\n\r\n", [_view("POST", "/upload", "hello")]),
    # 8.6: Content-Length = 1*DIGIT (leading zeros allowed).
    ("rfc/content-length-leading-zeros", b"POST /p HTTP/1.1\r\nHost: rfc.test\r\n"
     b"Content-Length: 0005\r\n\r\nhello", [_view("POST", "/p", "hello")]),
    # 5.3: a list field sent on several lines is one comma-separated value.
    ("rfc/list-field-repeated", b"GET /l HTTP/1.1\r\nHost: rfc.test\r\nAccept: text/html\r\n"
     b"Accept: application/json\r\n\r\n",
     [_view("GET", "/l", HTTP_ACCEPT="text/html,application/json")]),
    # 5.5: leading and trailing whitespace is not part of a field value; empty values exist.
    ("rfc/field-value-whitespace", b"GET /w HTTP/1.1\r\nHost: rfc.test\r\nX-A:\t v w \t\r\n"
     b"X-Empty:\r\n\r\n", [_view("GET", "/w", HTTP_X_A="v w", HTTP_X_EMPTY="")]),
    # 2.2 (RFC 9112): a server SHOULD ignore an empty line before the request line.
    ("rfc/leading-empty-line", b"\r\nGET /e HTTP/1.1\r\nHost: rfc.test\r\n\r\n",
     [_view("GET", "/e")]),
    # 10.1.1: 100-continue is the server's business; the body still arrives.
    ("rfc/expect-100-continue", b"POST /x HTTP/1.1\r\nHost: rfc.test\r\nExpect: 100-continue"
     b"\r\nContent-Length: 5\r\n\r\nhello", [_view("POST", "/x", "hello")]),
    # 2.5 (RFC 9112): the app sees the version the client spoke.
    ("rfc/http10-version", b"GET /v HTTP/1.0\r\nHost: rfc.test\r\n\r\n",
     [_view("GET", "/v", protocol="HTTP/1.0")]),
    ("rfc/http10-keep-alive-pipelined", b"GET /1 HTTP/1.0\r\nHost: rfc.test\r\n"
     b"Connection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\nHost: rfc.test\r\n\r\n",
     [_view("GET", "/1", protocol="HTTP/1.0"), _view("GET", "/2", protocol="HTTP/1.0")]),
    # 3.2 (RFC 9112): a server MUST answer 400 to an HTTP/1.1 request without Host ...
    ("rfc/http11-without-host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", None),
    # ... and to one with more than one Host field line.
    ("rfc/two-hosts", b"GET / HTTP/1.1\r\nHost: rfc.test\r\nHost: evil.test\r\n\r\n", None),
    # 6.5.1: fields that must be known before the content are not accepted as trailers.
    ("rfc/trailer-host", _POST_CHUNKED + b"5\r\nhello\r\n0\r\nHost: evil.test\r\n\r\n",
     None),
    ("rfc/trailer-authorization", _POST_CHUNKED
     + b"5\r\nhello\r\n0\r\nAuthorization: Basic Zm9vOmJhcg==\r\n\r\n", None),
    # 5.3: a singleton field (not a list) on two lines cannot be combined.
    ("rfc/two-authorizations", b"GET /a HTTP/1.1\r\nHost: rfc.test\r\nAuthorization: Basic a"
     b"\r\nAuthorization: Basic b\r\n\r\n", None),
    ("rfc/two-content-types", b"POST /c HTTP/1.1\r\nHost: rfc.test\r\nContent-Type: a/b\r\n"
     b"Content-Type: c/d\r\nContent-Length: 0\r\n\r\n", None),
    # 7.1 (RFC 9112): a chunk size that overflows is no size.
    ("rfc/chunk-size-overflow", _POST_CHUNKED + b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
     None),
]


def rfc_cases() -> list[Case]:
    """:data:`RFC_CASES` as cases (no Host is added to these)."""
    return [Case(name, data, expected is not None, expected=expected or [],
                 error="" if expected is not None else "refused by RFC 9110/9112")
            for name, data, expected in RFC_CASES]


def added_host(case: Case) -> bool:
    """Whether a Host field was added to the case's bytes."""
    return ADDED_HOST in case.data


# --- talking to a server ------------------------------------------------------------------


def exchange(address: tuple[str, int], case: Case, quiet: float = 3.0) -> bytes:
    """Send a case on a connection of its own; read until the answers it asks for are in
    (one for a refusal), the server closes, or nothing comes for ``quiet`` seconds."""
    want = 1 if case.refuse else len(case.expected)
    reply = b""
    with socket.create_connection(address, timeout=quiet) as sock:
        with contextlib.suppress(OSError):  # the server may refuse before it all arrived
            sock.sendall(case.data)
        with contextlib.suppress(OSError):  # quiet for too long, or reset
            while len(responses(reply, ended=False)) < want and (chunk := sock.recv(65536)):
                reply += chunk
    return reply


def responses(data: bytes, ended: bool = True) -> list[tuple[int, bytes]]:
    """(status, body) of the complete responses in ``data`` (Content-Length or chunked; one
    whose body ends with the connection only when ``ended``)."""
    out = []
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0 or not data.startswith(b"HTTP/"):
            return out
        head = data[:head_end].lower()
        status = int(head.split(b" ", 2)[1])
        rest = data[head_end + 4:]
        length = re.search(rb"\r\ncontent-length: *([0-9]+)", head)
        if status < 200:  # an interim response (100 Continue): no body, not counted
            data = rest
            continue
        if length is not None:
            size = int(length.group(1))
            if len(rest) < size:
                return out
            body, data = rest[:size], rest[size:]
        elif b"chunked" in head:
            body = b""
            while True:
                line_end = rest.find(b"\r\n")
                if line_end < 0:
                    return out
                size = int(rest[:line_end].split(b";")[0], 16)
                if len(rest) < line_end + 4 + size:
                    return out
                body, rest = body + rest[line_end + 2:line_end + 2 + size], \
                    rest[line_end + 4 + size:]
                if not size:
                    break
            data = rest
        elif ended:
            body, data = rest, b""
        else:
            return out
        out.append((status, body))


def judge(case: Case, reply: bytes) -> str:
    """"" when the server did what the case asks, else what it did instead."""
    answers = responses(reply)
    echoes = []
    for status, body in answers:
        with contextlib.suppress(ValueError):  # not JSON: not the echo app's answer
            echoes.append((status, json.loads(body)))
    if case.refuse:
        if echoes:
            return f"the app was reached: {echoes[0][1].get('method')} {echoes[0][1].get('path')}"
        if not answers:
            return f"no answer ({reply[:60]!r})"
        status = answers[0][0]
        # 501: what RFC 9110 9.1 and RFC 9112 6.1 name for a method or a transfer coding
        # the server does not implement (a refusal too: the app is never reached).
        allowed = 400 <= status < 500 or status == 501
        return "" if allowed else f"answered {status}"
    want = case.expected
    if len(echoes) < len(want):
        first = answers[len(echoes)][0] if len(answers) > len(echoes) else None
        return f"{len(echoes)} of {len(want)} requests served (then {first or reply[-60:]!r})"
    host = added_host(case)
    for n, (expected, (status, got)) in enumerate(zip(want, echoes, strict=False)):
        got = compared(got, host)
        if status != 200 or got != expected:
            diff = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
            return f"request {n + 1}: got/expected {diff}"
    return ""
