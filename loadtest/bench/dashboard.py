"""A "screenshot" of the Grafana dashboard: its own queries, answered by a real Prometheus over a real run.

    python -m modelyard.loadtest.bench.dashboard --out loadtest/results/latest/dashboard.png --seconds 60

There is no Grafana here, so this plays its part; Prometheus is the real one (Debian's
`prometheus` package, `make tools` installs it):

1. starts two mock backends and `modelyard run --workers 2` (see `dashboard_run`), and a
   Prometheus server scraping the gateway's admin /metrics every second; everything on
   127.0.0.1 free ports, stopped by process group at the end;
2. drives a mixed load for `--seconds`, with a backend killed and restarted and a broken config
   file written and replaced (see `dashboard_run`);
3. asks Prometheus (/api/v1/query_range, one step per second over the run) for every panel's
   PromQL from `k8s/grafana/modelyard-dashboard.json`, with the template variables at "All"
   and `$__rate_interval` = `--window`;
4. draws the panels where the dashboard's gridPos puts them, with the same titles, in a
   Grafana-like dark style (see `dashboard_render`), and writes the PNG and the answered series
   as JSON (`<out stem>-series.json`, with the client's answer counts and the events).

`--save-tsdb DIR` keeps Prometheus's storage (and the run's events) in DIR; `--from-tsdb DIR`
starts Prometheus on it again and renders without starting anything else (to work on the
drawing, or on the dashboard's queries, without another run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelyard.loadtest.bench.dashboard_render import render
from modelyard.loadtest.bench.dashboard_run import REPO, Run, System
from modelyard.loadtest.bench.prometheus import JOB, Prometheus, aligned, grid

DASHBOARD = REPO / "k8s" / "grafana" / "modelyard-dashboard.json"
DEFAULT_OUT = REPO / "loadtest" / "results" / "latest" / "dashboard.png"
SCRAPE_S = 1.0  # Prometheus's scrape interval, and the step of every range query
RUN_FILE = "run.json"  # beside Prometheus's storage: the run's times, events and answer counts


# --- evaluating the dashboard ---------------------------------------------------


def substitute(expr: str, window: str) -> str:
    """Template variables as Grafana sends them with every variable at All (allValue .*)."""
    for name in ("$__rate_interval", "${__rate_interval}", "$__interval", "${__interval}"):
        expr = expr.replace(name, window)
    for name in ("model", "route"):
        expr = expr.replace("${" + name + "}", ".*").replace("$" + name, ".*")
    return expr


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: {{label}} replaced by the series' value of it; without one, the labels."""
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__") + "}"
    return re.sub(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def panel_targets(dashboard: dict) -> list[tuple[dict, list[dict]]]:
    """(panel, its targets) for every panel that draws something (rows draw nothing)."""
    return [(p, p["targets"]) for p in dashboard["panels"] if p.get("type") != "row"]


def evaluate(dashboard: dict, prom: Prometheus, window_s: float, start: float, end: float) -> list[dict[str, Any]]:
    """Each panel's targets as Prometheus answers them, one step per scrape interval from start to end."""
    window = f"{window_s:g}s"
    times = grid(start, end, SCRAPE_S)
    panels = []
    for p, targets in panel_targets(dashboard):
        defaults = p["fieldConfig"]["defaults"]
        out = {"title": p["title"], "gridPos": p["gridPos"], "unit": defaults.get("unit", ""),
               "stack": defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal", "targets": []}
        for target in targets:
            expr = substitute(target["expr"], window)
            rows = sorted(aligned(prom.query_range(expr, times[0], times[-1], SCRAPE_S), times),
                          key=lambda row: sorted(row[0].items()))
            out["targets"].append({
                "refId": target["refId"], "expr": expr, "times": times,
                "series": [{"legend": legend(target.get("legendFormat", ""), labels).strip() or legend("", labels),
                            "labels": labels, "values": values} for labels, values in rows],
            })
        panels.append(out)
    return panels


def scrape_count(prom: Prometheus, start: float, end: float) -> int:
    """How many times Prometheus scraped the gateway between start and end."""
    rows = prom.query(f'count_over_time(up{{job="{JOB}"}}[{math.ceil(end - start) + 1}s])', end)
    return int(float(rows[0]["value"][1])) if rows else 0


# --- the run ----------------------------------------------------------------------


def live_run(args: argparse.Namespace, dashboard: dict, window: float, tmp: Path) -> tuple[dict, list[dict]]:
    """Start everything, drive the load, ask Prometheus; (the run's record, the answered panels)."""
    system = System(tmp, args.workers)
    storage = args.save_tsdb or tmp / "prometheus"
    prom: Prometheus | None = None
    try:
        system.start()
        prom = Prometheus(storage, [f"127.0.0.1:{system.admin_port}"], SCRAPE_S, system.cores)
        prom.wait_ready()
        prom.wait_for_scrape_after(0)
        run = Run(system, args.seconds, args.users, args.seed)
        asyncio.run(run.main())
        # The last samples: a scrape that began after the load ended.
        end = time.time()
        prom.wait_for_scrape_after(end)
        record = {"seconds": args.seconds, "workers": args.workers, "start": math.floor(run.t0), "end": end,
                  "events": run.events, "client": run.client}
        record["scrapes"] = scrape_count(prom, record["start"], end)
        panels = evaluate(dashboard, prom, window, record["start"], end)
        if args.save_tsdb:
            (storage / RUN_FILE).write_text(json.dumps(record, indent=1) + "\n")
        return record, panels
    except BaseException:
        logs = [(name, svc.log) for name, svc in system.services.items()]
        logs += [("prometheus", prom.service.log)] if prom is not None else []
        for name, log in logs:
            if log.exists():
                print(f"--- {name} log (tail) ---\n{log.read_text(errors='replace')[-1500:]}", file=sys.stderr)
        raise
    finally:
        if prom is not None:
            prom.stop()
        system.stop()


def saved_run(args: argparse.Namespace, dashboard: dict, window: float) -> tuple[dict, list[dict]]:
    """Prometheus started again on a --save-tsdb folder, scraping nothing: the same run answered again."""
    record = json.loads((args.from_tsdb / RUN_FILE).read_text())
    with Prometheus(args.from_tsdb) as prom:
        return record, evaluate(dashboard, prom, window, record["start"], record["end"])


# --- the command -----------------------------------------------------------------


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def write_series(path: Path, dashboard_path: Path, record: dict, window: float, panels: list[dict],
                 empty: list[str]) -> None:
    path.write_text(json.dumps({
        "dashboard": _shown(dashboard_path), "seconds": record["seconds"], "window_s": window,
        "scrapes": record["scrapes"], "client": dict(sorted(record["client"].items())), "events": record["events"],
        "empty_panels": empty,
        "panels": [{
            "title": p["title"], "unit": p["unit"],
            "targets": [{"refId": t["refId"], "expr": t["expr"], "times": [round(x, 3) for x in t["times"]],
                         "series": [{"legend": s["legend"], "labels": s["labels"],
                                     "values": [None if v is None else round(v, 6) for v in s["values"]]}
                                    for s in t["series"]]} for t in p["targets"]],
        } for p in panels],
    }, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelyard.loadtest.bench.dashboard",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the PNG to write (default {DEFAULT_OUT})")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to drive load (default 60)")
    parser.add_argument("--window", type=float, default=None,
                        help="seconds substituted for $__rate_interval (default 10, less for short runs, at least 4)")
    parser.add_argument("--users", type=int, default=8, help="concurrent client loops (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="the Grafana dashboard JSON")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--save-tsdb", type=Path, metavar="DIR",
                        help="keep Prometheus's storage and the run's events in DIR (default: a temporary folder)")
    parser.add_argument("--from-tsdb", type=Path, metavar="DIR",
                        help="render from a --save-tsdb folder instead of running anything")
    args = parser.parse_args(argv)
    dashboard = json.loads(args.dashboard.read_text())
    if args.from_tsdb:
        args.seconds = json.loads((args.from_tsdb / RUN_FILE).read_text())["seconds"]
    # Grafana's $__rate_interval is at least four scrape intervals: a rate needs two samples in its window.
    window = args.window or min(10.0, max(4 * SCRAPE_S, round(args.seconds / 3)))

    if args.from_tsdb:
        record, panels = saved_run(args, dashboard, window)
    else:
        with tempfile.TemporaryDirectory(prefix="modelyard-dashboard-") as tmp:
            record, panels = live_run(args, dashboard, window, Path(tmp))
    total = sum(record["client"].values())
    subtitle = (
        f"Rendered by loadtest/bench/dashboard.py from the dashboard's queries, answered by Prometheus over metrics "
        f"scraped from a real run — not a Grafana screenshot ({_shown(args.dashboard)}).\n"
        f"modelyard run --workers {record['workers']} + 2 mock backends · {record['seconds']:g} s mixed load "
        f"({total} requests) · /metrics scraped every {SCRAPE_S:g} s · $__rate_interval = {window:g}s · "
        f"model, route = All\n"
        f"Shaded: backend \"fast\" down (killed, then restarted); dotted: a broken config file written, then replaced "
        f"by a valid one. Times in UTC."
    )
    render(panels, args.out, f"{dashboard.get('title', 'Modelyard')} dashboard", subtitle, record["events"])
    empty = [p["title"] for p in panels
             if not any(v is not None for t in p["targets"] for s in t["series"] for v in s["values"])]
    series_path = args.out.with_name(args.out.stem + "-series.json")
    write_series(series_path, args.dashboard, record, window, panels, empty)
    print(f"dashboard: {total} requests, {record['scrapes']} scrapes; client answers: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(record["client"].items())))
    for title in empty:
        print(f"dashboard: panel {title!r} has no data", file=sys.stderr)
    print(f"dashboard: wrote {args.out} and {series_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
