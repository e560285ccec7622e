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
    """Per app (a row of panels): 2xx req/s on the left and CPU-s per 10k 2xx answers on the
    right, one bar group per system, a bar per worker count and concurrency (medians, min–max
    as error bars)."""
    apps: dict[str, list[dict[str, Any]]] = {}
    for scenario in s.get("scenarios", []):
        apps.setdefault(scenario["app_name"], []).append(scenario)
    if not apps:
        return None
    tallest = max(len(scenario["systems"]) for group in apps.values() for scenario in group)
    fig, axes = plt.subplots(len(apps), 2, squeeze=False,
                             figsize=(14, max(4.0, 0.9 * tallest) * len(apps)))
    for (app, group), (left, right) in zip(apps.items(), axes, strict=True):
        keys = list(dict.fromkeys(k for sc in group for k in sc["systems"]))
        names = {k: n for sc in group for k, n in sc["systems"].items()}
        height = 0.8 / len(group)
        for i, scenario in enumerate(group):
            ys = [j + (i - (len(group) - 1) / 2) * height for j in range(len(keys))]
            rows = [scenario["summary"].get(k, {}) for k in keys]
            label = f"{scenario['workers']} workers, c={scenario['connections']}"
            colour = plt.get_cmap("tab10")(i % 10)
            for ax, field in ((left, "rps"), (right, "cpu")):
                med = [r.get(f"{field}_median", 0.0) if r.get("ok_rounds") else 0.0
                       for r in rows]
                lows = [r.get(f"{field}_min", m) if r.get("ok_rounds") else 0.0
                        for r, m in zip(rows, med, strict=True)]
                highs = [r.get(f"{field}_max", m) if r.get("ok_rounds") else 0.0
                         for r, m in zip(rows, med, strict=True)]
                ax.barh(ys, med, height, xerr=_errors(med, lows, highs), capsize=2,
                        color=colour, label=label)
        for ax, what in ((left, "2xx req/s (higher is better)"),
                         (right, "CPU-s per 10k 2xx answers (lower is better)")):
            ax.set_yticks(range(len(keys)), [names[k] for k in keys])
            ax.invert_yaxis()
            ax.set_title(f"{app}: {what}")
            ax.grid(axis="x", alpha=0.3)
        right.set_yticklabels([])
        left.legend(loc="lower right", fontsize="small")
        cpu_top = sorted(r.get("cpu_median", 0.0) for sc in group
                         for r in sc["summary"].values() if r.get("ok_rounds"))
        if cpu_top and cpu_top[-1] > 4 * cpu_top[len(cpu_top) // 2]:
            right.set_xlim(0, 4 * cpu_top[len(cpu_top) // 2])  # one collapse would hide all
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
