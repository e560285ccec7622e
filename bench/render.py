"""The benchmark report: figures from the JSON the bench scripts write, then REPORT.md.

``render(data, out)`` takes what ``bench/report.py`` collected (``load(out / "data")``):

- ``meta``: date, command, machine, versions, the steps run and how long they took;
- ``spawn``, ``memory``, ``faults``, ``soak``, ``large_pool``: the ``--json`` output of those
  scripts (the last two drawn by render_longrun.py);
- ``throughput``: ``{workers: throughput.py --json output}`` (render_throughput.py);

any section may instead be ``{"skipped": reason}`` or absent. Spawn and memory figures are
computed here, for whatever modes the JSON holds: medians, min–max, and ratios taken round by
round (each mode against the baseline measured in the same round), then their median.
Throughput figures come from throughput.py, which computes them the same way.

It writes REPORT.md, the charts (``charts.py``) and summary.json (the headline figures).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import render_longrun
import render_throughput

SECTIONS = ("spawn", "memory", "throughput", "faults", "soak", "large_pool")


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def load(data_dir: Path) -> dict[str, Any]:
    """Every ``*.json`` of ``data_dir``: ``throughput-N.json`` under ``throughput[N]``."""
    data: dict[str, Any] = {"throughput": {}}
    for path in sorted(data_dir.glob("*.json")):
        name = path.stem
        if name.startswith("throughput-"):
            data["throughput"][name.split("-", 1)[1]] = json.loads(path.read_text())
        else:
            data[name] = json.loads(path.read_text())
    return data


# ------------------------------------------------------------------------------ figures


def spread(values: Iterable[float]) -> dict[str, float]:
    """Median, min and max of ``values``."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def paired(top: list[float], bottom: list[float]) -> dict[str, float] | None:
    """top[i] / bottom[i] for every round i where both are positive: median, min–max."""
    ratios = [a / b for a, b in zip(top, bottom, strict=False) if a > 0 and b > 0]
    if not ratios:
        return None
    return {**spread(ratios), "rounds": len(ratios)}


def spawn_figures(spawn: dict[str, Any]) -> dict[str, Any]:
    """Per-worker latency (ms) of every mode; baseline / mode per round (how many times
    faster than the first mode, ``direct``)."""
    def ms(rounds: list[list[float]]) -> dict[str, float]:
        return {k: v * 1000 if k != "n" else v
                for k, v in spread(x for r in rounds for x in r).items()}

    modes = {mode: ms(rounds) for mode, rounds in spawn["modes"].items() if any(rounds)}
    measures = {name: ms(rounds) for name, rounds in spawn.get("measures", {}).items()
                if any(rounds)}
    names = list(modes)
    base = "direct" if "direct" in modes else names[0]
    per_round = {mode: [statistics.median(r) if r else 0.0 for r in spawn["modes"][mode]]
                 for mode in names}
    ratios = {mode: r for mode in names if mode != base
              if (r := paired(per_round[base], per_round[mode]))}
    return {"baseline": base, "modes": modes, "measures": measures, "ratios": ratios,
            "workers": spawn.get("workers"), "rounds": spawn.get("rounds"),
            "app": spawn.get("app")}


MEMORY_FIELDS = ("pss", "uss", "shared", "private_dirty", "rss", "preloader_pss",
                 "worker_pss", "spawn_s", "non_200")


def memory_figures(memory: dict[str, Any]) -> dict[str, Any]:
    """Per mode: medians over the rounds (MiB), PSS min–max; mode / baseline PSS per round.
    ``shared`` is PSS − USS: the share of pages shared with other processes."""
    modes: dict[str, dict[str, Any]] = {}
    for mode, rounds in memory["modes"].items():
        if not rounds:
            continue
        rows = [{**r, "shared": r["pss"] - r["uss"]} for r in rounds]
        modes[mode] = {f: statistics.median(r.get(f, 0.0) for r in rows) for f in MEMORY_FIELDS}
        modes[mode]["pss_spread"] = spread(r["pss"] for r in rows)
    base = "direct" if "direct" in modes else next(iter(modes))
    pss = {mode: [r["pss"] for r in memory["modes"][mode]] for mode in modes}
    ratios = {mode: r for mode in modes if mode != base if (r := paired(pss[mode], pss[base]))}
    return {"baseline": base, "modes": modes, "ratios": ratios, "workers": memory.get("workers"),
            "rounds": memory.get("rounds"), "app": memory.get("app"),
            "requests": memory.get("requests")}


def figures(data: dict[str, Any]) -> dict[str, Any]:
    """Every section's figures, or its skip reason (``{"skipped": ...}``)."""
    out: dict[str, Any] = {}
    makers = {"spawn": spawn_figures, "memory": memory_figures,
              "throughput": render_throughput.throughput_figures, "faults": lambda d: d,
              "soak": lambda d: d, "large_pool": lambda d: d}
    for name in SECTIONS:
        section = data.get(name)
        if not section:
            out[name] = {"skipped": "not run"}
        elif "skipped" in section:
            out[name] = section
        else:
            out[name] = makers[name](section)
    return out


def summary_rows(figs: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline ratios: what the summary table (and summary.json) shows."""
    rows = []
    spawn, memory, tput = figs["spawn"], figs["memory"], figs["throughput"]
    if "skipped" not in spawn:
        for mode, r in spawn["ratios"].items():
            rows.append({"section": "spawn", "label": f"per-worker spawn latency, "
                         f"{spawn['baseline']} / {mode} (how many times faster)", **r})
    if "skipped" not in memory:
        for mode, r in memory["ratios"].items():
            rows.append({"section": "memory", "label": f"PSS of {memory['workers']} workers, "
                         f"{mode} / {memory['baseline']}", **r})
    if "skipped" not in tput:
        rows += render_throughput.summary_rows(tput)
    return rows


def skipped_notes(figs: dict[str, Any]) -> list[str]:
    """One line per section, system or worker count that was skipped or failed, with why."""
    notes = [f"{name}: {figs[name]['skipped']}" for name in SECTIONS if "skipped" in figs[name]]
    tput = figs["throughput"]
    if "scenarios" in tput:
        notes += render_throughput.skipped_notes(tput)
    return notes


# ----------------------------------------------------------------------------- markdown


def table(headers: list[str], rows: list[list[Any]], numeric: bool = True) -> str:
    """A Markdown table; ``numeric``: every column but the first right-aligned."""
    right = ["---:" if i and numeric else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(right) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def x(r: dict[str, float]) -> str:
    return f"×{r['median']:.2f}"


def rng(r: dict[str, float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(r['min'])}–{fmt.format(r['max'])}"


def machine_section(meta: dict[str, Any]) -> str:
    m = meta.get("machine", {})
    rows = [[k, str(v)] for k, v in m.items()]
    return "## Machine\n\n" + table(["", ""], rows, numeric=False)


def spawn_section(s: dict[str, Any]) -> str:
    if "skipped" in s:
        return f"## Spawn latency\n\nSkipped: {s['skipped']}"
    head = (f"## Spawn latency\n\nApp `sample_apps/{s['app']}`, {s['workers']} workers spawned "
            f"one after another per mode and round, {s['rounds']} rounds, the mode order "
            "reversed every other round; request → ready (the worker answered one request), ms.")
    modes = table(["mode", "median ms", "min–max ms", "workers spawned"],
                  [[m, f"{r['median']:.1f}", rng(r, "{:.1f}"), r["n"]]
                   for m, r in s["modes"].items()])
    ratios = table([f"{s['baseline']} / mode", "median of per-round ratios", "min–max",
                    "rounds"],
                   [[m, x(r), rng(r), r["rounds"]] for m, r in s["ratios"].items()])
    measures = table(["other measure", "median ms", "min–max ms", "n"],
                     [[m, f"{r['median']:.1f}", rng(r, "{:.1f}"), r["n"]]
                      for m, r in s["measures"].items()])
    return "\n\n".join([head, modes, ratios, measures, "![spawn latency](spawn.png)"])


def memory_section(s: dict[str, Any]) -> str:
    if "skipped" in s:
        return f"## Memory\n\nSkipped: {s['skipped']}"
    head = (f"## Memory\n\n{s['workers']} workers of `sample_apps/{s['app']}` after "
            f"{s['requests']} warm-up requests; totals over the workers and the preloader "
            f"(MiB), medians of {s['rounds']} rounds, the mode order reversed every other "
            "round. Private is USS (private clean + dirty); shared is PSS − USS, this group's "
            "share of the pages it shares.")
    rows = []
    for mode, r in s["modes"].items():
        rows.append([mode, f"{r['pss']:.1f}", rng(r["pss_spread"], "{:.1f}"), f"{r['uss']:.1f}",
                     f"{r['shared']:.1f}", f"{r['preloader_pss']:.1f}", f"{r['worker_pss']:.1f}",
                     f"{r['private_dirty']:.1f}", f"{r['rss']:.1f}", f"{r['spawn_s']:.1f}",
                     f"{r['non_200']:.0f}"])
    modes = table(["mode", "PSS total", "min–max", "private", "shared", "preloader PSS",
                   "PSS/worker", "private dirty", "RSS total", "start s", "non-200"], rows)
    ratios = table([f"mode / {s['baseline']} PSS", "median of per-round ratios", "min–max",
                    "rounds"],
                   [[m, x(r), rng(r), r["rounds"]] for m, r in s["ratios"].items()])
    return "\n\n".join([head, modes, ratios, "![memory per mode](memory.png)"])


def faults_section(s: dict[str, Any]) -> str:
    if "skipped" in s:
        return f"## Faults\n\nSkipped: {s['skipped']}"
    head = (f"## Faults\n\nEach scenario once, {s['seconds']:g} s long, under load "
            "(4 keep-alive clients); recovery: from the fault until the pool is back to its "
            "live count (median and max over the faults injected).")
    rows = [[r["scenario"], r["requests"], r["failures"], r["recovery"], r["notes"]]
            for r in s["rows"]]
    return "\n\n".join([head, table(["scenario", "requests", "failures", "recovery", "notes"],
                                    rows, numeric=False)])


def markdown(meta: dict[str, Any], figs: dict[str, Any], rows: list[dict[str, Any]],
             notes: list[str]) -> str:
    kind = "quick run (smoke test: few rounds, short runs)" if meta.get("quick") else "full run"
    head = (f"# Benchmark report\n\n{meta.get('date', '?')}, {kind}, "
            f"{meta.get('elapsed_s', 0) / 60:.1f} min: `{meta.get('command', '?')}`\n\n"
            "Every figure is a median over rounds in which the systems under test alternate; "
            "min–max is the spread over those rounds. Ratios are taken pair by pair, within "
            "each round, then their median. Compare ratios within this report, not absolute "
            "figures across machines.")
    summary = table(["figure", "median", "min–max", "rounds"],
                    [[r["label"], x(r), rng(r), r["rounds"]] for r in rows])
    parts = [head, "## Summary", summary]
    if notes:
        parts.append("Skipped or failed:\n\n" + "\n".join(f"- {n}" for n in notes))
    parts += [machine_section(meta), spawn_section(figs["spawn"]),
              memory_section(figs["memory"]),
              render_throughput.throughput_section(figs["throughput"]),
              faults_section(figs["faults"]), render_longrun.soak_section(figs["soak"]),
              render_longrun.large_pool_section(figs["large_pool"])]
    steps = meta.get("steps", [])
    if steps:
        parts.append("## How it was run\n\n" + table(
            ["step", "command", "took s", "result"],
            [[st["name"], f"`{st['command']}`", f"{st['elapsed_s']:.0f}", st["result"]]
             for st in steps], numeric=False))
    return "\n\n".join(parts) + "\n"


def render(data: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write REPORT.md, the PNG charts and summary.json into ``out``; return the summary."""
    import charts  # matplotlib: imported only once the bench extra is sure to be there

    meta = data.get("meta", {})
    figs = figures(data)
    rows = summary_rows(figs)
    notes = skipped_notes(figs)
    out.mkdir(parents=True, exist_ok=True)
    made = charts.draw_all(figs, out)
    text = markdown(meta, figs, rows, notes)
    for name in ("spawn", "memory", "throughput"):
        if name not in made:  # no chart: drop its image link
            text = "\n".join(line for line in text.splitlines()
                             if f"]({name}.png)" not in line) + "\n"
    (out / "REPORT.md").write_text(text)
    summary = {"date": meta.get("date"), "quick": meta.get("quick"), "rows": rows,
               "skipped": notes, "charts": sorted(made.values()),
               "faults": [{k: r[k] for k in ("scenario", "requests", "failures")}
                          for r in figs["faults"].get("rows", [])],
               **render_longrun.verdicts(figs)}
    write_json(out / "summary.json", summary)
    return summary
