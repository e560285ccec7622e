"""One ``wrk`` run, parsed: req/s counting only the 2xx answers, latency percentiles, the
non-2xx answers and socket errors as figures (a run with 503s is a measurement, not a
failure: at c=256 a queue cap shows up as a low 2xx rate).

wrk counts every response in ``Requests/sec``; its ``Non-2xx or 3xx responses`` line counts
the answers with a status ≥ 400 (the apps measured never answer 1xx or 3xx: the readiness
check wants a 200), so 2xx = requests − that count. A Lua ``response()`` hook would count
statuses exactly but makes wrk parse every header into a Lua table, which on a 2-core box
takes CPU from the server being measured.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class Run:
    """One wrk run: 2xx throughput, latency percentiles (ms), errors, and what went wrong."""

    rps: float  # 2xx answers per second
    p50_ms: float
    p99_ms: float
    requests: int  # every answer
    non_2xx: int
    socket_errors: int
    problem: str = ""
    ok_requests: int = 0  # 2xx answers
    rps_all: float = 0.0  # every answer per second (what wrk prints)
    #: CPU seconds per 10k 2xx answers during the run: the first process (the manager, for
    #: tui-passenger) and every process of the system together (0 when not measured).
    cpu_first: float = 0.0
    cpu_total: float = 0.0

    @property
    def ok(self) -> bool:
        """Measured: wrk ran, the server lived, and at least one 2xx answer came back."""
        return not self.problem

    @property
    def clean(self) -> bool:
        """No non-2xx answer and no socket error."""
        return self.ok and not self.non_2xx and not self.socket_errors


def to_ms(value: str) -> float:
    """``'812.00us'`` / ``'1.20ms'`` / ``'2.01s'`` → milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value.strip())
    if not match:
        raise ValueError(f"unknown wrk time {value!r}")
    return float(match[1]) * _UNITS[match[2]]


def tail_text(text: str) -> str:
    return " | ".join(text.strip().splitlines()[-3:])


def parse_wrk(text: str) -> Run:
    """Parse ``wrk --latency`` output; a run without any 2xx answer is not ok."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    if not (rps and p50 and p99 and total):
        return Run(0, 0, 0, 0, 0, 0, f"could not parse wrk output: {tail_text(text)}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    requests, non_2xx = int(total[1]), int(bad[1]) if bad else 0
    good = requests - non_2xx
    rps_all = float(rps[1])
    socket_errors = sum(int(g) for g in errs.groups()) if errs else 0
    problem = "" if good > 0 else "no 2xx answer"
    return Run(rps_all * good / requests if requests else 0.0, to_ms(p50[1]), to_ms(p99[1]),
               requests, non_2xx, socket_errors, problem, ok_requests=good, rps_all=rps_all)


#: What a browser sends with a page request (wrk alone sends only Host): for measuring
#: what a server does per header field (an access log's referer and user-agent, cookies).
BROWSER_HEADERS = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Referer: https://www.example.com/articles/2026/12/some-article?utm_source=news",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.9,fr;q=0.8",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Cookie: session=" + "a" * 40 + "; csrftoken=" + "b" * 64 + "; _ga=GA1.1." + "1" * 20
    + "; prefs=" + "c" * 300,
    "Sec-Fetch-Dest: document",
    "Sec-Fetch-Mode: navigate",
    "Upgrade-Insecure-Requests: 1",
)


def wrk(port: int, connections: int, duration: float, timeout: float | None = None,
        headers: tuple[str, ...] = ()) -> Run:
    """One ``wrk --latency`` run against 127.0.0.1:port (bounded by a timeout);
    ``timeout``: wrk's per-request timeout (its default is 2 s); ``headers``: added to
    every request."""
    # one wrk thread (-t1 ≤ -c always holds): on a small box the servers need the cores more
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency",
            *([f"--timeout={timeout:g}s"] if timeout else []),
            *(arg for header in headers for arg in ("-H", header)),
            f"http://127.0.0.1:{port}/"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=duration + (timeout or 2) + 30)
    except subprocess.TimeoutExpired:
        return Run(0, 0, 0, 0, 0, 0, "wrk did not finish in time")
    return parse_wrk(done.stdout + done.stderr)
