#!/usr/bin/env python3
"""The HTTP/1.1 request corpus side by side: tui-passenger, gunicorn and Phusion Passenger.

Every system serves the echo app (``tests/apps/echo``, one worker process) on its own
loopback port; every case of ``tests/http_corpus`` (gunicorn's request corpus and RFC cases
of ours) is sent to each on a connection of its own, judged as the test suite judges it
(tests/http_corpus/corpus.py). Prints per system: invalid cases refused, valid cases served
correctly (as gunicorn's corpus classes them, and then the cases tui-passenger refuses on
purpose, with the RFC reason), and every difference. Not a load test: each case is sent once.

    python3 bench/http_corpus.py [--only tp,sync,passenger] [--json results.json] [-v]

Passenger runs with ``passenger start --engine=builtin`` when the ``passenger`` command is
there; otherwise it is skipped with a message. gunicorn comes with the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import PYTHON, Server, Skip, free_port  # noqa: E402
from tests.http_corpus.corpus import Case, exchange, judge, load  # noqa: E402

ECHO = ROOT / "tests" / "apps" / "echo"
NAMES = {"tp": "tui-passenger", "sync": "gunicorn (sync, defaults)",
         "passenger": "Passenger (builtin engine)"}


def make_server(key: str, work: Path) -> Server:
    """The system ``key`` serving the echo app with one worker (not started)."""
    port, log = free_port(), work / "server.log"
    if key == "tp":
        toml = work / "corpus.toml"
        toml.write_text(
            f'[server]\naddress = "127.0.0.1"\nport = {port}\nallow_root = true\n'
            f'access_log = false\nclient_header_timeout = 1\nclient_body_timeout = 1\n'
            f'admin_socket = {json.dumps(str(work / "admin.sock"))}\n\n'
            f'[[app]]\nname = "echo"\nroot = {json.dumps(str(ECHO))}\n'
            f'entry = "passenger_wsgi:application"\ninterface = "wsgi"\nmin_instances = 1\n')
        argv = [PYTHON, "-m", "tui_passenger", "--headless", "-c", str(toml), "--port",
                str(port), "--log-level", "warning"]
        return Server(key, argv, port, ROOT, log)
    if key == "sync":
        argv = [PYTHON, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "--chdir",
                str(ECHO), "passenger_wsgi:application"]
        return Server(key, argv, port, work, log)
    if shutil.which("passenger") is None:
        raise Skip("the passenger command is not installed (apt-get install passenger)")
    shutil.copy(ECHO / "passenger_wsgi.py", work / "passenger_wsgi.py")
    pid_file = work / "passenger.pid"
    argv = ["passenger", "start", "--engine=builtin", "--address", "127.0.0.1", "--port",
            str(port), "--min-instances", "1", "--max-pool-size", "1", "--spawn-method",
            "direct", "--app-type", "wsgi", "--startup-file", "passenger_wsgi.py",
            "--python", PYTHON, "--environment", "production", "--log-file",
            str(work / "passenger.log"), "--pid-file", str(pid_file),
            "--instance-registry-dir", str(work), "--no-friendly-error-pages",
            "--disable-turbocaching", "--disable-security-update-check",
            "--disable-anonymous-telemetry", "--no-install-runtime", "--no-compile-runtime",
            "--auto"]
    return Server(key, argv, port, work, log, marker=str(work),
                  stop_argv=["passenger", "stop", "--pid-file", str(pid_file)],
                  pid_file=pid_file, env={"TMPDIR": str(work)})


def run_cases(port: int, cases: list[Case]) -> dict[str, str]:
    """Case name -> "" (as asked) or what the system did instead."""
    return {case.name: judge(case, exchange(("127.0.0.1", port), case)) for case in cases}


def as_published(case: Case, port: int, problem: str) -> str:
    """A case tui-passenger refuses on purpose, judged as gunicorn's corpus classes it."""
    published = Case(case.name, case.data, case.valid, case.expected, case.error)
    return judge(published, exchange(("127.0.0.1", port), published)) if case.verdict \
        else problem


def report(results: dict[str, dict[str, str]], cases: list[Case],
           published: dict[str, dict[str, str]], verbose: bool) -> dict[str, dict[str, int]]:
    """Print the counts and the differences; returns the counts."""
    invalid = [c for c in cases if not c.valid]
    valid = [c for c in cases if c.valid and not c.verdict]
    refused_on_purpose = [c for c in cases if c.valid and c.verdict]
    counts = {}
    print(f"{len(cases)} cases run: {len(invalid)} invalid, {len(valid)} valid, "
          f"{len(refused_on_purpose)} valid for gunicorn that tui-passenger refuses on purpose")
    for key, outcome in results.items():
        row = {
            "invalid_refused": sum(not outcome[c.name] for c in invalid),
            "valid_served": sum(not outcome[c.name] for c in valid),
            "refused_on_purpose": sum(not outcome[c.name] for c in refused_on_purpose),
            "valid_served_as_published": sum(not published[key][c.name] for c in cases
                                             if c.valid),
        }
        counts[key] = row
        print(f"\n{NAMES[key]}\n"
              f"  invalid refused            {row['invalid_refused']:>3} / {len(invalid)}\n"
              f"  valid served correctly     {row['valid_served']:>3} / {len(valid)}\n"
              f"  RFC refusals (ours) agreed {row['refused_on_purpose']:>3} / "
              f"{len(refused_on_purpose)}\n"
              f"  gunicorn-valid served      {row['valid_served_as_published']:>3} / "
              f"{sum(c.valid for c in cases)} (gunicorn's classification)")
        for case in cases:
            if outcome[case.name] and (verbose or not case.verdict):
                print(f"    {case.name}: {outcome[case.name][:160]}")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="tp,sync,passenger")
    parser.add_argument("--json", help="write the counts and every outcome to this file")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also list the cases refused on purpose that a system served")
    args = parser.parse_args()
    cases = [c for c in load() if not c.skip]
    results: dict[str, dict[str, str]] = {}
    published: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="tp-corpus-") as tmp:
        for key in args.only.split(","):
            work = Path(tmp) / key
            work.mkdir()
            try:
                server = make_server(key, work)
            except Skip as exc:
                print(f"{NAMES[key]}: skipped: {exc}")
                continue
            server.start()
            try:
                server.wait_ready(90)
                results[key] = run_cases(server.port, cases)
                published[key] = {c.name: as_published(c, server.port, results[key][c.name])
                                  for c in cases}
            except Skip as exc:
                print(f"{NAMES[key]}: skipped: {exc}")
            finally:
                server.stop()
    counts = report(results, cases, published, args.verbose)
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "outcomes": results},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
