"""The access log's lines: the two formats, and a batch of buffered rows formatted at once.

Standard library only: the access log writer process (:mod:`tui_passenger.logwriter`)
imports this (and the process title helper), nothing else of the package. The formats::

    combined: IP - - [01/Dec/2026:16:45:00 +0000] "GET /path HTTP/1.1" 200 1234 \\
              "https://example.com/" "curl/8.5.0" app=NAME 0.52ms id=ID
    json:     {"time": "2026-12-01T16:45:00Z", "ip": "IP", "method": "GET", "url": "/path",
               "version": "1.1", "status": 200, "bytes": 1234, "referer": "",
               "user_agent": "curl/8.5.0", "app": "NAME", "ms": 0.52, "id": "ID"}

(each on one line.) A request the proxy refused before reading its request line whole
(a malformed one, a client too slow, a connection over ``max_connections``) has the request
``"-"`` (combined) or an empty method, url and version (json), app and id ``-``. Bytes are
those of the response body sent to the client (0 for a HEAD request), as nginx's
``$body_bytes_sent``; a referer or user-agent the request has not is ``-`` (combined) or
``""`` (json), as nginx writes an empty one. The client connection picks the two out of
the head as it checks it (a row carries them, not every field of the request).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from itertools import chain, repeat
from operator import mul

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
COMBINED = '%s - - [%s] "%s %s HTTP/%s" %d %d "%s" "%s" app=%s %.2fms id=%s\n'
#: The same, with the request line as one field: for a batch holding a refused request
#: whose request line was never read whole (its method is ""), written ``"-"`` as nginx does.
COMBINED_LINE = '%s - - [%s] "%s" %d %d "%s" "%s" app=%s %.2fms id=%s\n'
JSON = ('{"time": "%s", "ip": "%s", "method": "%s", "url": "%s", "version": "%s", '
        '"status": %d, "bytes": %d, "referer": "%s", "user_agent": "%s", "app": "%s", '
        '"ms": %.2f, "id": "%s"}\n')
#: One buffered line: time.time(), ip, method, url, version, status, body bytes sent,
#: referer, user-agent (b"" for none), app, seconds, id.
Row = tuple[float, str, str, bytes, str, int, int, bytes, bytes, str, float, bytes]


def _escape_combined(text: str) -> str:
    """``"``, ``\\``, unprintable and non-ASCII bytes as ``\\xHH`` (as nginx does)."""
    return "".join(c if c.isprintable() and c.isascii() and c not in '"\\'
                   else f"\\x{ord(c):02X}"
                   for c in text)


def _escape_combined_id(text: str) -> str:
    return _escape_combined(text).replace(" ", "\\x20")


def _escape_json(text: str) -> str:
    return json.dumps(text)[1:-1]


def _plain_combined_url(text: str) -> bool:
    return text.isascii() and text.isprintable() and "\\" not in text


def _plain_combined_id(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _plain_json(text: str) -> bool:
    return text.isprintable() and "\\" not in text


#: Per format, for the url and the id: the separator no value kept as it is contains, what
#: else such a value must be, and the escape of the others (see _decode_all).
_FIELD_RULES: dict[bool, tuple[tuple[str, Callable[[str], bool], Callable[[str], str]], ...]] = {
    False: (('"', _plain_combined_url, _escape_combined),
            (" ", _plain_combined_id, _escape_combined_id)),
    True: (('"', _plain_json, _escape_json), ('"', _plain_json, _escape_json)),
}


def _decode_all(values: Sequence[bytes], sep: str, plain: Callable[[str], bool],
                escape: Callable[[str], str]) -> list[str]:
    """The ``values`` decoded (latin-1), each escaped unless ``plain`` and free of ``sep``.

    Checked for the whole batch at once, joined by ``sep``, in the common case where no
    value needs escaping; one by one otherwise.
    """
    text = sep.encode("latin-1").join(values).decode("latin-1")
    if plain(text) and text.count(sep) == len(values) - 1:
        return text.split(sep)
    return [value if plain(value) and sep not in value else escape(value)
            for value in (raw.decode("latin-1") for raw in values)]


def referer_and_agent(fields: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """The Referer and User-Agent among a request's header fields (the last of each), b""
    for one it has not (for a refused request, whose head was not checked whole)."""
    referer = agent = b""
    for name, value in fields:
        lower = name.lower()
        if lower == b"referer":
            referer = value
        elif lower == b"user-agent":
            agent = value
    return referer, agent


def format_rows(rows: Sequence[Row], json_format: bool) -> str:
    """The lines of ``rows``, in order (one ``%`` for them all)."""
    (times, ips, methods, urls, versions, statuses, sent, referers, agents, apps, elapsed,
     ids) = zip(*rows, strict=True)
    seconds = list(map(int, times))
    stamp = _json_stamp if json_format else _combined_stamp
    stamps = map({second: stamp(second) for second in set(seconds)}.__getitem__, seconds)
    url_rule, id_rule = _FIELD_RULES[json_format]
    texts = _decode_all(urls, *url_rule)
    missing = b"" if json_format else b"-"  # for an empty field, or none
    referer_texts = _decode_all([value or missing for value in referers], *url_rule)
    agent_texts = _decode_all([value or missing for value in agents], *url_rule)
    id_texts = _decode_all(ids, *id_rule)
    ms = map(mul, elapsed, repeat(1000))
    first, then = (stamps, ips) if json_format else (ips, stamps)
    line = JSON if json_format else COMBINED
    if json_format or "" not in methods:
        values = zip(first, then, methods, texts, versions, statuses, sent, referer_texts,
                     agent_texts, apps, ms, id_texts, strict=True)
    else:
        line = COMBINED_LINE
        requests = [f"{method} {text} HTTP/{version}" if method else "-"
                    for method, text, version in zip(methods, texts, versions, strict=True)]
        values = zip(first, then, requests, statuses, sent, referer_texts, agent_texts, apps,
                     ms, id_texts, strict=True)
    return (line * len(rows)) % tuple(chain.from_iterable(values))


def _json_stamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def _combined_stamp(second: int) -> str:
    t = time.gmtime(second)
    return (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")
