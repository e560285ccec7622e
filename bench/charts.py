"""PNG charts of the benchmark report (matplotlib, Agg backend: no display needed).

Each function takes the figures of one section (``render.figures``) and draws every mode or
system it finds there, so a new spawn or memory mode shows up without a change here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PRIVATE, SHARED = "#d9534f", "#5b9bd5"  # the dashboard's private / shared memory colours
WORKER_COLOURS = ["#5b9bd5", "#ed7d31", "#70ad47", "#7f6084"]
DPI = 120


def _errors(medians: list[float], lows: list[float], highs: list[float]) -> list[list[float]]:
    """matplotlib's yerr from min–max around each median."""
    return [[m - lo for m, lo in zip(medians, lows, strict=True)],
            [hi - m for m, hi in zip(medians, highs, strict=True)]]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def spawn_chart(s: dict[str, Any], path: Path) -> Path:
    """Median per-worker spawn latency per mode, min–max as error bars, values labelled."""
    modes = list(s["modes"])
    med = [s["modes"][m]["median"] for m in modes]
    lows, highs = [s["modes"][m]["min"] for m in modes], [s["modes"][m]["max"] for m in modes]
    fig, ax = plt.subplots(figsize=(7, 0.9 * len(modes) + 1.8))
    ax.barh(modes, med, xerr=_errors(med, lows, highs), color=WORKER_COLOURS[: len(modes)],
            capsize=4)
    for y, (value, high) in enumerate(zip(med, highs, strict=True)):
        ax.annotate(f"{value:.1f} ms", (high, y), xytext=(6, 0), textcoords="offset points",
                    va="center")
    ax.invert_yaxis()
    ax.set_xlabel("ms, request → ready (median; bars: min–max)")
    ax.set_title(f"Spawn latency per worker, sample_apps/{s['app']}")
    ax.set_xlim(0, max(highs) * 1.25)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def memory_chart(s: dict[str, Any], path: Path) -> Path:
    """Total PSS per mode, stacked: private (USS) below, shared (PSS − USS) on top."""
    modes = list(s["modes"])
    private = [s["modes"][m]["uss"] for m in modes]
    shared = [s["modes"][m]["shared"] for m in modes]
    total = [p + sh for p, sh in zip(private, shared, strict=True)]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(modes) + 2), 4.5))
    ax.bar(modes, private, color=PRIVATE, label="private (USS)")
    ax.bar(modes, shared, bottom=private, color=SHARED, label="shared (PSS − USS)")
    for i, value in enumerate(total):
        ax.annotate(f"{value:.0f} MiB", (i, value), xytext=(0, 4), textcoords="offset points",
                    ha="center")
    ax.set_ylabel("MiB (median over rounds)")
    ax.set_ylim(0, max(total) * 1.3)
    ax.set_title(f"PSS of {s['workers']} workers + preloader, sample_apps/{s['app']}")
    ax.legend(loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def throughput_chart(s: dict[str, Any], path: Path) -> Path | None:
    """req/s and p99 per system, one bar per worker count, min–max as error bars."""
    runs = {w: r for w, r in s["runs"].items() if "summary" in r}
    keys = [k for k in s["systems"]
            if any(r["summary"].get(k, {}).get("ok_rounds") for r in runs.values())]
    if not keys:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(keys) + 2), 8),
                                      sharex=True)
    width = 0.8 / len(runs)
    tallest = {top: 0.0, bottom: 0.0}
    for i, (workers, run) in enumerate(runs.items()):
        rows = [run["summary"].get(k, {}) for k in keys]
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(keys))]
        colour = WORKER_COLOURS[i % len(WORKER_COLOURS)]
        for ax, field, low, high in ((top, "rps_median", "rps_min", "rps_max"),
                                     (bottom, "p99_ms", "p99_min", "p99_max")):
            med = [r.get(field, 0.0) if r.get("ok_rounds") else 0.0 for r in rows]
            lows = [r.get(low, m) if r.get("ok_rounds") else 0.0 for r, m in zip(rows, med,
                                                                                 strict=True)]
            highs = [r.get(high, m) if r.get("ok_rounds") else 0.0 for r, m in zip(rows, med,
                                                                                   strict=True)]
            ax.bar(xs, med, width, yerr=_errors(med, lows, highs), capsize=3, color=colour,
                   label=f"{workers} workers")
            tallest[ax] = max(tallest[ax], *highs)
    top.set_ylabel("req/s (median)")
    top.set_title("Hello world: throughput (higher is better)")
    bottom.set_ylabel("p99 latency, ms (median)")
    bottom.set_title("p99 latency (lower is better)")
    bottom.set_xticks(range(len(keys)), [s["systems"][k] for k in keys], rotation=20,
                      ha="right")
    asgi = [i for i, k in enumerate(keys) if k in s.get("asgi", ())]
    for ax in (top, bottom):
        ax.set_ylim(0, tallest[ax] * 1.3)  # room for the legend above the bars
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left")
        if asgi and len(asgi) < len(keys):  # the ASGI systems come last: a line before them
            ax.axvline(min(asgi) - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.annotate("ASGI →", (min(asgi) - 0.5, 1), xycoords=("data", "axes fraction"),
                        xytext=(4, -14), textcoords="offset points", color="grey")
    return _save(fig, path)


def draw_all(figs: dict[str, Any], out: Path) -> dict[str, str]:
    """Every chart whose section has figures; returns {section: file name}."""
    made = {}
    for name, draw in (("spawn", spawn_chart), ("memory", memory_chart),
                       ("throughput", throughput_chart)):
        section = figs.get(name, {})
        if "skipped" in section or not section:
            continue
        if (name != "throughput" and not section.get("modes")):
            continue
        if draw(section, out / f"{name}.png"):
            made[name] = f"{name}.png"
    return made
