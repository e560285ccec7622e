"""The throughput section of the benchmark report (REPORT.md, summary rows, skip notes).

Input: ``{workers: throughput.py --json output}``. Each output holds ``scenarios``: one per app
and concurrency (systems, their summaries, tui-passenger/other ratios taken per round). An
older output without ``scenarios`` (one app pair at one concurrency) is read as one scenario.
"""

from __future__ import annotations

from typing import Any


def _legacy(run: dict[str, Any], workers: str) -> list[dict[str, Any]]:
    """A throughput.py output from before the scenarios, as one scenario."""
    params = run.get("params", {})
    systems = run.get("systems") or {k: k for k in [*run.get("status", {}),
                                                     *run.get("summary", {})]}
    return [{"app": "hello", "app_name": "hello world", "workers": int(workers),
             "connections": int(params.get("connections", 16)),
             "duration": float(params.get("duration", 0)),
             "rounds_requested": int(params.get("rounds", 0)), "systems": systems,
             "status": run.get("status", {}), "summary": run.get("summary", {}),
             "ratios_vs_tp": run.get("ratios_vs_tp", {}),
             "ratio_dashboard_vs_headless": run.get("ratio_dashboard_vs_headless", {})}]


def throughput_figures(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every scenario of every worker count (in worker order), the system names, the worker
    counts that were skipped and the c=1 proxy-vs-worker figures."""
    ordered = dict(sorted(runs.items(), key=lambda kv: int(kv[0])))
    scenarios: list[dict[str, Any]] = []
    systems: dict[str, str] = {}
    skipped: dict[str, str] = {}
    c1: dict[str, dict[str, Any]] = {}
    for workers, run in ordered.items():
        if "skipped" in run:
            skipped[workers] = run["skipped"]
            continue
        found = run["scenarios"] if "scenarios" in run else _legacy(run, workers)
        for scenario in found:
            scenario.setdefault("workers", int(workers))
            systems.update(scenario.get("systems", {}))
        scenarios += found
        if run.get("latency_c1"):
            c1[workers] = run["latency_c1"]
    if not scenarios and not skipped:
        return {"skipped": "no throughput results"}
    return {"runs": ordered, "scenarios": scenarios, "systems": systems,
            "skipped_workers": skipped, "c1": c1}


def where(s: dict[str, Any]) -> str:
    """'2 workers, hello WSGI c=16'."""
    return f"{s['workers']} workers, {s['app_name']} c={s['connections']}"


def summary_rows(t: dict[str, Any]) -> list[dict[str, Any]]:
    """Per scenario: tui-passenger / each other system in 2xx req/s, then CPU per request
    where it was measured, and dashboard / headless."""
    rows = []
    for s in t["scenarios"]:
        names = s.get("systems", {})
        for base, r in s.get("ratios_vs_tp", {}).items():
            pair = f"{names.get(r['of'], r['of'])} / {names.get(base, base)}"
            rows.append({"section": "throughput", "label": f"req/s at {where(s)}: {pair}",
                         "median": r["rps"], "min": r.get("rps_min", r["rps"]),
                         "max": r.get("rps_max", r["rps"]), "rounds": r["rounds"]})
            if r.get("cpu_total"):
                rows.append({"section": "throughput",
                             "label": f"CPU per 2xx answer at {where(s)}: {pair}",
                             "median": r["cpu_total"], "min": r["cpu_min"],
                             "max": r["cpu_max"], "rounds": r["rounds"]})
        dash = s.get("ratio_dashboard_vs_headless") or {}
        if dash:
            rows.append({"section": "throughput",
                         "label": f"req/s at {where(s)}: dashboard open / headless",
                         "median": dash["rps"], "min": dash.get("rps_min", dash["rps"]),
                         "max": dash.get("rps_max", dash["rps"]), "rounds": dash["rounds"]})
    return rows


def skipped_notes(t: dict[str, Any]) -> list[str]:
    """One line per worker count or system (per app) that was skipped or failed, with why."""
    notes = [f"throughput at {w} workers: {why}"
             for w, why in t.get("skipped_workers", {}).items()]
    seen = set()
    for s in t["scenarios"]:
        for key, status in s.get("status", {}).items():
            ok_rounds = s.get("summary", {}).get(key, {}).get("ok_rounds", 0)
            if status != "ok" or not ok_rounds:
                why = status if status != "ok" else f"no round measured at c={s['connections']}"
                name = s.get("systems", {}).get(key, key)
                note = f"{name} ({s['workers']} workers, {s['app_name']}): {why}"
                if note not in seen:
                    seen.add(note)
                    notes.append(note)
    return notes


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    right = ["---" if not i else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(right) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _systems_table(s: dict[str, Any]) -> str:
    rows = []
    for key, name in s.get("systems", {}).items():
        m = s.get("summary", {}).get(key)
        if not m or not m.get("ok_rounds"):
            rows.append([name, "—", "—", "—", "—", "—", "—", "—",
                         s.get("status", {}).get(key, "failed")])
            continue
        cpu = (f"{m['cpu_total']:.2f} ({m.get('cpu_min', m['cpu_total']):.2f}–"
               f"{m.get('cpu_max', m['cpu_total']):.2f})" if m.get("cpu_total") else "—")
        rows.append([name, f"{m['rps_median']:.0f}", f"{m['rps_min']:.0f}–{m['rps_max']:.0f}",
                     f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}", cpu,
                     m.get("non_2xx", 0), m.get("socket_errors", 0),
                     f"{m['ok_rounds']}/{m['ok_rounds'] + m['failed_rounds']}"])
    return _table(["system", "2xx req/s", "min–max", "p50 ms", "p99 ms",
                   "CPU-s/10k (min–max)", "non-2xx", "socket errors", "rounds"], rows)


def _ratios_table(s: dict[str, Any]) -> str:
    names = s.get("systems", {})
    pairs = []
    for base, r in s.get("ratios_vs_tp", {}).items():
        cpu = (f"×{r['cpu_total']:.2f} ({r['cpu_min']:.2f}–{r['cpu_max']:.2f})"
               if r.get("cpu_total") else "—")
        pairs.append([f"{names.get(r['of'], r['of'])} / {names.get(base, base)}",
                      f"×{r['rps']:.2f}", f"{r.get('rps_min', r['rps']):.2f}–"
                      f"{r.get('rps_max', r['rps']):.2f}", cpu, f"×{r['p50']:.2f}",
                      f"×{r.get('p99', 0):.2f}", r["rounds"]])
    if dash := s.get("ratio_dashboard_vs_headless"):
        pairs.append([f"{names.get('tpdash', 'tpdash')} / {names.get('tp', 'tp')}",
                      f"×{dash['rps']:.2f}", f"{dash.get('rps_min', dash['rps']):.2f}–"
                      f"{dash.get('rps_max', dash['rps']):.2f}", "—", f"×{dash['p50']:.2f}",
                      f"×{dash.get('p99', 0):.2f}", dash["rounds"]])
    return _table(["pair", "2xx req/s", "min–max", "CPU per request", "p50", "p99",
                   "rounds"], pairs)


def _overview(t: dict[str, Any]) -> str:
    """One table: per system and scenario, 2xx req/s and CPU-s/10k (medians)."""
    cols = t["scenarios"]
    rows = []
    for key, name in t["systems"].items():
        cells = []
        for s in cols:
            m = s.get("summary", {}).get(key)
            if key not in s.get("systems", {}):
                cells.append("")
            elif not m or not m.get("ok_rounds"):
                cells.append("—")
            else:
                cpu = f" · {m['cpu_total']:.2f}" if m.get("cpu_total") else ""
                cells.append(f"{m['rps_median']:.0f}{cpu}")
        rows.append([name, *cells])
    heads = [f"{s['workers']}w {s['app_name']} c={s['connections']}" for s in cols]
    return _table(["system", *heads], rows)


def throughput_section(t: dict[str, Any]) -> str:
    """The section: how it was measured, an overview, then per scenario its tables."""
    if "skipped" in t:
        return f"## Throughput\n\nSkipped: {t['skipped']}"
    head = ("## Throughput\n\nEvery system on its defaults (tui-passenger with its access log "
            "on; `tui-passenger, access log off` is the second row), with the same number of "
            "worker processes: hello WSGI, hello ASGI and a Django page (ORM query + "
            "template, ~20 KB, SQLite), each served by the systems of its interface. `wrk -t1 "
            "-cN --latency` on the same machine, one system at a time, the order rotated "
            "every round. req/s counts only 2xx answers; p50/p99 are over every answer; "
            "CPU-s/10k is CPU seconds (user + system, every process of the system, from "
            "/proc) per 10,000 2xx answers. Ratios are tui-passenger / the other system, "
            "taken per round, then the median (min–max over the rounds).")
    parts = [head]
    if t["scenarios"]:
        parts += ["Overview (2xx req/s · CPU-s/10k, medians):", _overview(t),
                  "![2xx req/s and CPU per request per system](throughput.png)"]
    for s in t["scenarios"]:
        parts += [f"### {where(s)}", _systems_table(s)]
        if s.get("ratios_vs_tp") or s.get("ratio_dashboard_vs_headless"):
            parts += ["Ratios, median of the per-round ratios:", _ratios_table(s)]
    for workers, c1 in t.get("c1", {}).items():
        if "added_p50_ms" in c1:
            parts.append(
                f"c=1 sequential keep-alive GETs at {workers} workers: p50 "
                f"{c1['proxy_tcp_python']['p50_ms']:.3f} ms through the proxy, "
                f"{c1['worker_unix_python']['p50_ms']:.3f} ms straight to a worker's socket: "
                f"the proxy adds {c1['added_p50_ms'] * 1000:.0f} µs.")
    for workers, why in t.get("skipped_workers", {}).items():
        parts.append(f"{workers} workers: skipped: {why}")
    return "\n\n".join(parts)
