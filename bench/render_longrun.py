"""The soak and large-pool sections of the benchmark report (bench/soak.py and
bench/large_pool.py ``--json`` output): a table of figures and the verdict's checks."""

from __future__ import annotations

from typing import Any


def _checks(checks: dict[str, bool]) -> str:
    return "\n".join(f"- {'PASS' if ok else '**FAIL**'}: {name}" for name, ok in checks.items())


def soak_section(s: dict[str, Any]) -> str:
    """Requests, RSS and fds of the manager, drift, errors, and the verdict."""
    if "skipped" in s:
        return f"## Soak\n\nSkipped: {s['skipped']}"
    p = s.get("params", {})
    head = (f"## Soak\n\nHeadless tui-passenger on its defaults (hello WSGI, "
            f"{p.get('workers', 2)} workers, access log on), `wrk -t1 -c{p.get('connections')}` "
            f"in windows of {float(p.get('window', 0)):g} s back to back: "
            f"{s['requests']:,} requests in {s.get('elapsed_s', 0) / 60:.1f} min, the first "
            f"{s['warmup_windows']} window(s) the warm-up.")
    rows = [
        ("manager RSS, start → after warm-up → end",
         f"{s['rss_start_mb']:.1f} → {s['rss_after_warmup_mb']:.1f} → {s['rss_end_mb']:.1f} MiB"
         f" (growth {s['rss_growth_mb']:+.2f} MiB, max {s['rss_max_mb']:.1f})"),
        ("manager open fds between windows", ", ".join(map(str, s["fds_between_windows"]))),
        ("manager open fds, max under load", str(s["fds_max_under_load"])),
        ("p50, first → last windows", f"{s['p50_first_ms']:.2f} → {s['p50_last_ms']:.2f} ms"),
        ("p99, first → last windows", f"{s['p99_first_ms']:.2f} → {s['p99_last_ms']:.2f} ms"),
        ("manager CPU-s/10k, first → last windows",
         f"{s['manager_cpu_first']:.2f} → {s['manager_cpu_last']:.2f} (×{s['cpu_drift']:.2f})"),
        ("socket errors / non-2xx answers", f"{s['socket_errors']} / {s['non_2xx']}"),
        ("manager RSS per million requests (median of the windows)", _rss_by_million(s)),
    ]
    table = "| figure | value |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    verdict = f"Verdict: **{'PASS' if s['ok'] else 'FAIL'}**\n\n{_checks(s['checks'])}"
    return "\n\n".join([head, table, verdict])


def _rss_by_million(s: dict[str, Any]) -> str:
    """'0–1M 48.5, 1–2M 50.0, …' MiB: a leak climbs, an allocator's high-water mark levels."""
    buckets: dict[int, list[float]] = {}
    for w in s.get("windows", []):
        buckets.setdefault(int(w["total"] // 1_000_000), []).append(w["rss_mb"])
    return ", ".join(f"{m}–{m + 1}M {sorted(v)[len(v) // 2]:.1f}"
                     for m, v in sorted(buckets.items())) + " MiB" if buckets else "—"


def large_pool_section(s: dict[str, Any]) -> str:
    """Time to all ready, PSS, the 1,000-connection run, and the verdict."""
    if "skipped" in s:
        return f"## Large pool\n\nSkipped: {s['skipped']}"
    head = (f"## Large pool\n\n{s['workers']} smart workers of `sample_apps/heavy`, then "
            f"`wrk -t1 -c{s['connections']} -d{float(s['duration']):g}s` keep-alive "
            "connections.")
    rows = [
        ("all workers ready after", f"{s['all_ready_s']:.1f} s (first answer "
                                    f"{s['first_answer_s']:.1f} s)"),
        ("PSS total (workers + preloader + manager)",
         f"{s['pss_total_mb']:.0f} MiB ({s['pss_per_worker_mb']:.1f} MiB per worker, "
         f"preloader {s['pss_preloader_mb']:.0f}, manager {s['pss_manager_mb']:.0f})"),
        ("answers, 2xx req/s", f"{s['requests']:,}, {s['rps']:.0f}"),
        ("p50 / p99", f"{s['p50_ms']:.0f} / {s['p99_ms']:.0f} ms"),
        ("socket errors / non-2xx answers", f"{s['socket_errors']} / {s['non_2xx']}"),
    ]
    table = "| figure | value |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    verdict = f"Verdict: **{'PASS' if s['ok'] else 'FAIL'}**\n\n{_checks(s['checks'])}"
    return "\n\n".join([head, table, verdict])


def verdicts(figs: dict[str, Any]) -> dict[str, Any]:
    """For summary.json: each section's verdict and its headline figures."""
    out: dict[str, Any] = {}
    soak, pool = figs.get("soak", {}), figs.get("large_pool", {})
    if soak and "skipped" not in soak:
        out["soak"] = {k: soak[k] for k in ("ok", "requests", "rss_growth_mb", "socket_errors",
                                            "non_2xx", "cpu_drift")}
    if pool and "skipped" not in pool:
        out["large_pool"] = {k: pool[k] for k in ("ok", "workers", "all_ready_s",
                                                  "pss_total_mb", "socket_errors", "non_2xx")}
    return out
