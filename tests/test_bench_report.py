"""The benchmark report (bench/report.py): rendered from a small JSON fixture, and one real
``--quick`` run end to end (the CI smoke test: the report and charts are produced and the
numbers are sane, not that they reach any target)."""

from __future__ import annotations

import importlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHARTS = ("spawn.png", "memory.png", "throughput.png")


@pytest.fixture
def render(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("render")


def assert_png(path: Path) -> None:
    """A real PNG that matplotlib can read back, of a readable size."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    height, width = imread(path).shape[:2]
    assert width >= 400 and height >= 300, (path, width, height)


def assert_sane(rows: list[dict]) -> None:
    assert rows
    for row in rows:
        assert math.isfinite(row["median"]) and row["median"] > 0, row
        assert row["min"] <= row["median"] <= row["max"], row
        assert row["rounds"] >= 1, row


def spawn_rounds(seconds: float) -> list[list[float]]:
    return [[seconds, seconds * 1.1], [seconds * 0.9, seconds]]


def memory_round(pss: float, uss: float) -> dict[str, float]:
    return {"pss": pss, "uss": uss, "private_dirty": uss * 0.9, "rss": pss * 1.5,
            "preloader_pss": 30.0, "worker_pss": (pss - 30) / 2, "spawn_s": 0.8, "non_200": 0}


def throughput_run(workers: int) -> dict:
    """throughput.py's JSON: a WSGI and an ASGI scenario (c=16), Passenger skipped."""
    def summary(rps: float) -> dict:
        return {"ok_rounds": 2, "failed_rounds": 0, "rps_median": rps, "rps_min": rps * 0.9,
                "rps_max": rps * 1.1, "p50_ms": 1.0, "p50_min": 0.9, "p50_max": 1.1,
                "p99_ms": 3.0, "p99_min": 2.5, "p99_max": 3.5, "cpu_median": 0.5,
                "cpu_total": 0.5, "cpu_min": 0.4, "cpu_max": 0.6, "non_2xx": 0,
                "socket_errors": 0}

    ratio = {"rps": 1.5, "rps_min": 1.4, "rps_max": 1.6, "p50": 0.7, "p99": 0.9, "rounds": 2,
             "cpu_total": 0.6, "cpu_min": 0.5, "cpu_max": 0.7, "of": "tp"}

    def scenario(app: str, name: str, systems: dict, summaries: dict, ratios: dict,
                 status: dict) -> dict:
        return {"app": app, "app_name": name, "connections": 16, "workers": workers,
                "duration": 1.0, "rounds_requested": 2, "systems": systems, "status": status,
                "summary": summaries, "ratios_vs_tp": ratios,
                "ratio_dashboard_vs_headless": {}}

    return {
        "params": {"duration": "1.0", "rounds": "2", "workers": str(workers)},
        "workers": workers,
        "scenarios": [
            scenario("hello", "hello WSGI",
                     {"tp": "tui-passenger", "sync": "gunicorn sync", "passenger": "passenger"},
                     {"tp": summary(12000), "sync": summary(8000)}, {"sync": ratio},
                     {"tp": "ok", "sync": "ok",
                      "passenger": "skipped: 'passenger' not installed"}),
            scenario("asgi", "hello ASGI", {"tp": "tui-passenger", "uvicorn": "uvicorn"},
                     {"tp": summary(15000), "uvicorn": summary(30000)},
                     {"uvicorn": {**ratio, "rps": 0.5, "rps_min": 0.45, "rps_max": 0.55}},
                     {"tp": "ok", "uvicorn": "ok"})],
        "latency_c1": {},
    }


def fixture_data() -> dict:
    """What report.py collects, small; spawn and memory have a third mode ("refork") that
    neither the renderer nor the charts know by name."""
    return {
        "meta": {"date": "2024-01-01 00:00 UTC", "command": "python3 dev.py bench report",
                 "quick": True, "elapsed_s": 100.0, "machine": {"cpu": "test CPU"},
                 "steps": [{"name": "spawn", "command": "bench/spawn.py", "elapsed_s": 5.0,
                            "result": "exit code 0"}]},
        "spawn": {"app": "heavy", "workers": 2, "rounds": 2, "unit": "s",
                  "modes": {"direct": spawn_rounds(0.6), "smart": spawn_rounds(0.005),
                            "refork": spawn_rounds(0.004)},
                  "measures": {"smart scale 1→8": [[0.02], [0.03]]}},
        "memory": {"app": "heavy", "workers": 2, "rounds": 2, "requests": 100, "unit": "MiB",
                   "modes": {"direct": [memory_round(160, 143), memory_round(161, 144)],
                             "smart": [memory_round(113, 43), memory_round(112, 42)],
                             "refork": [memory_round(100, 35), memory_round(101, 36)]}},
        "throughput": {"2": throughput_run(2), "4": throughput_run(4)},
        "faults": {"seconds": 2.0, "rows": [
            {"key": "kill", "scenario": "kill -9 worker", "requests": 1000, "failures": 0,
             "recovery": "med 10 ms, max 11 ms", "notes": "4 kills", "elapsed_s": 2.0}]},
    }


def test_report_renders_from_json(render: ModuleType, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data = fixture_data()
    for name in ("meta", "spawn", "memory", "faults"):
        render.write_json(data_dir / f"{name}.json", data[name])
    for workers, run in data["throughput"].items():
        render.write_json(data_dir / f"throughput-{workers}.json", run)

    summary = render.render(render.load(data_dir), tmp_path)

    report = (tmp_path / "REPORT.md").read_text()
    for chart in CHARTS:
        assert f"]({chart})" in report
        assert_png(tmp_path / chart)
    assert_sane(summary["rows"])
    labels = [row["label"] for row in summary["rows"]]
    assert any("direct / refork" in label for label in labels)  # a new mode needs no change
    assert any("refork / direct" in label for label in labels)
    assert "| refork |" in report
    spawn = next(r for r in summary["rows"] if "direct / smart" in r["label"])
    # per round: median(0.6, 0.66) / median(0.005, 0.0055), the same in both rounds
    assert spawn["median"] == pytest.approx(120)
    assert any("hello ASGI c=16: tui-passenger / uvicorn" in label for label in labels)
    assert any(label.startswith("req/s at 4 workers") for label in labels)
    assert any(label.startswith("CPU per 2xx answer at 2 workers") for label in labels)
    assert any("passenger (2 workers, hello WSGI): skipped: 'passenger' not installed" in note
               for note in summary["skipped"])
    assert "| 2xx req/s |" in report and "CPU-s/10k" in report
    assert "## Machine" in report and "test CPU" in report
    assert json.loads((tmp_path / "summary.json").read_text())["rows"] == summary["rows"]


def test_a_skipped_section_gives_its_reason(render: ModuleType, tmp_path: Path) -> None:
    data = fixture_data()
    data["throughput"] = {"2": {"skipped": "wrk is not installed"}}
    del data["memory"]
    summary = render.render(data, tmp_path)
    report = (tmp_path / "REPORT.md").read_text()
    assert "throughput at 2 workers: wrk is not installed" in summary["skipped"]
    assert "memory: not run" in summary["skipped"]
    assert not (tmp_path / "throughput.png").exists() and "throughput.png" not in report
    assert_png(tmp_path / "spawn.png")


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_quick_report_end_to_end(tmp_path: Path) -> None:
    """``bench/report.py --quick`` for real (a few minutes), into a temporary directory."""
    done = subprocess.run([sys.executable, str(BENCH / "report.py"), "--quick", "--out",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=640)
    output = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, output

    summary = json.loads((tmp_path / "summary.json").read_text())
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Summary" in report and "## Machine" in report, output
    sections = {row["section"] for row in summary["rows"]}
    assert {"spawn", "memory"} <= sections, summary
    assert_sane(summary["rows"])
    for chart in ("spawn.png", "memory.png"):
        assert_png(tmp_path / chart)
        assert f"]({chart})" in report
    assert len(summary["faults"]) >= 8, summary["faults"]
    # failures -1: the scenario itself broke (see bench/faults.py)
    assert all(row["requests"] > 0 and row["failures"] >= 0 for row in summary["faults"]), \
        summary["faults"]
    assert "## Soak" in report and "## Large pool" in report, output
    if shutil.which("wrk") is not None:  # both load with wrk; verdicts are not judged here
        assert summary["soak"]["requests"] > 0, summary
        assert summary["large_pool"]["workers"] >= 1, summary

    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed and the report could not install it "
                    "(apt-get install wrk): the throughput section was not measured")
    for workers in (2, 4):
        ratios = [row["label"] for row in summary["rows"]
                  if row["label"].startswith(f"req/s at {workers} workers")]
        assert any("hello WSGI c=16: tui-passenger / gunicorn sync" in label
                   for label in ratios), summary
        assert any("hello ASGI c=16: tui-passenger / uvicorn" in label
                   for label in ratios), summary
    assert_png(tmp_path / "throughput.png")
    assert "](throughput.png)" in report
