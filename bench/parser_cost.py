"""What parsing one proxied request costs a worker: httptools against the pure-Python parser.

In-process, one core, no sockets: the request heads are the ones the front proxy sends a
worker (see proxy/headers.py), fed to each parser with the servers' own head collection
(``HeadCollector``) and target parsing, one request per feed as on a keep-alive connection.
Prints microseconds per request (best of ``--rounds``) and the ratio.

    .venv/bin/python bench/parser_cost.py [--requests 100000] [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tui_passenger.runtime import http_common as hc  # noqa: E402
from tui_passenger.runtime import http_parser  # noqa: E402

#: What the proxy sends a worker for a browser-like GET, and for a small JSON POST.
REQUESTS = {
    "GET": (b"GET /api/items?page=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 "
            b"(X11; Linux x86_64) Firefox/120.0\r\nAccept: text/html,application/xhtml+xml\r\n"
            b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\n"
            b"Cookie: session=0123456789abcdef\r\nX-Forwarded-For: 10.0.0.7\r\n"
            b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\n"
            b"X-Request-Id: 3f2a9c1e5b7d4a60\r\nX-Passenger-Remote-Addr: 10.0.0.7:51234\r\n\r\n"),
    "POST": (b"POST /api/items HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/json"
             b"\r\nX-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: "
             b"example.com\r\nX-Request-Id: 3f2a9c1e5b7d4a61\r\nX-Passenger-Remote-Addr: "
             b"10.0.0.7:51234\r\nContent-Length: 26\r\n\r\n{\"name\": \"x\", \"count\": 12}"),
}


class Collector(hc.HeadCollector):
    """The head collection the servers do, and what they ask the parser per request."""

    def __init__(self, module: Any) -> None:
        self.peer = (hc.DEFAULT_REMOTE_ADDR, hc.DEFAULT_REMOTE_PORT)
        self.host_cache = hc.NO_HOST
        self.parser = module.HttpRequestParser(self)
        self.body = b""

    def on_headers_complete(self) -> None:
        self.target = self.parse_target()
        self.version = self.parser.get_http_version()
        self.keep = self.parser.should_keep_alive()
        self.server_address()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.body = b""


def cost(module: Any, data: bytes, requests: int, rounds: int) -> float:
    """Best microseconds per request over ``rounds`` runs of ``requests`` feeds."""
    best = float("inf")
    for _ in range(rounds):
        feed = Collector(module).parser.feed_data
        started = time.process_time()  # CPU time: the machine may be busy
        for _ in range(requests):
            feed(data)
        best = min(best, (time.process_time() - started) / requests * 1e6)
    return best


def main() -> int:
    """Measure and print the table (and write JSON when asked)."""
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--requests", type=int, default=100_000)
    args.add_argument("--rounds", type=int, default=5)
    args.add_argument("--json", type=Path)
    options = args.parse_args()
    import httptools

    results: dict[str, dict[str, float]] = {}
    print(f"python {sys.version.split()[0]}, httptools {httptools.__version__}, "
          f"{options.requests} requests x {options.rounds} rounds (best)")
    print(f"{'request':8} {'httptools us':>13} {'python us':>10} {'ratio':>6}")
    for name, data in REQUESTS.items():
        fast = cost(httptools, data, options.requests, options.rounds)
        pure = cost(http_parser, data, options.requests, options.rounds)
        results[name] = {"httptools_us": fast, "python_us": pure}
        print(f"{name:8} {fast:13.2f} {pure:10.2f} {pure / fast:6.2f}")
    if options.json:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
