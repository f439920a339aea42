"""A "screenshot" of the Grafana dashboard, rendered from the dashboard's own queries over a real run.

    python -m modelyard.loadtest.bench.dashboard --out loadtest/results/latest/dashboard.png --seconds 60

There is no Grafana or Prometheus here, so this plays both parts:

1. starts two mock backends (`fast`: streams with a 30 ms first token and 5 ms
   between tokens; `quiet`: reports no token usage, streams with an 80 ms first
   token and 40 ms between tokens, and fails 3 % of requests) and
   `modelyard run --workers 2` on a config written to a temporary folder: two routes,
   five models, one with a priority-1 fallback, one split by weight, and
   `llmRequestCosts` on the chat route; everything on 127.0.0.1 free ports, stopped
   by process group at the end;
2. drives a mixed load for `--seconds`: chat, streamed chat and embeddings across
   the models, and a few unknown models (404). About a third of the way in it kills
   the `fast` backend and starts it again about 10 s later (retries, fallback,
   ejections); near the end it writes a broken config file, then replaces it with a
   valid one (a reload error, then a new generation);
3. scrapes the admin port's /metrics once a second;
4. evaluates every panel's PromQL from `k8s/grafana/modelyard-dashboard.json`
   over those samples with `loadtest.promql` (template variables at "All",
   `$__rate_interval` = `--window`), once per scrape;
5. draws the panels where the dashboard's gridPos puts them, with the same titles,
   in a Grafana-like dark style, and writes the PNG and the computed series as JSON
   (`<out stem>-series.json`, with the client's answer counts and the events).

`--save-scrapes FILE` keeps the raw scrapes; `--from-scrapes FILE` renders them
again without starting anything (to work on the drawing, or on the dashboard's
queries, without another run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

from modelyard.loadtest.bench import promql
from modelyard.loadtest.bench.procs import Service, free_port

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "k8s" / "grafana" / "modelyard-dashboard.json"
DEFAULT_OUT = REPO / "loadtest" / "results" / "latest" / "dashboard.png"

CHAT_MODELS = {"gpt-fast": 3, "llama-quiet": 2, "chat-large": 3, "chat-split": 2}  # model: weight
UNKNOWN_MODELS = ["gpt-9-ultra", "no-such-model", "claude-typo"]
TEAMS = ["search", "support", "research"]


# --- the system under test ----------------------------------------------------


def config_yaml(fast_port: int, quiet_port: int) -> str:
    def backend(name: str, port: int) -> str:
        return textwrap.dedent(f"""\
            apiVersion: aigateway.envoyproxy.io/v1alpha1
            kind: AIServiceBackend
            metadata: {{name: {name}, namespace: default}}
            spec:
              schema: {{name: OpenAI}}
              backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
            ---
            apiVersion: gateway.envoyproxy.io/v1alpha1
            kind: Backend
            metadata: {{name: {name}, namespace: default}}
            spec:
              endpoints: [{{fqdn: {{hostname: 127.0.0.1, port: {port}}}}}]
            ---
            """)

    def rule(model: str, refs: str) -> str:
        return (f"    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]\n"
                f"      backendRefs: {refs}\n")

    return (backend("fast", fast_port) + backend("quiet", quiet_port) + textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: chat, namespace: default}
        spec:
          llmRequestCosts:
            - {metadataKey: input_tokens, type: InputToken}
            - {metadataKey: output_tokens, type: OutputToken}
          rules:
        """) + rule("gpt-fast", "[{name: fast, modelNameOverride: fast-v2}]")
        + rule("llama-quiet", "[{name: quiet}]")
        + rule("chat-large", "[{name: fast, priority: 0}, {name: quiet, priority: 1}]")
        + rule("chat-split", "[{name: fast, weight: 70}, {name: quiet, weight: 30}]")
        + textwrap.dedent("""\
        ---
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: embeddings, namespace: default}
        spec:
          rules:
        """) + rule("embed-small", "[{name: fast}]"))


class System:
    """The two mocks and the gateway, as child processes in their own sessions."""

    def __init__(self, folder: Path, workers: int):
        self.folder = folder
        self.cores = sorted(os.sched_getaffinity(0))
        self.fast_port, self.quiet_port = free_port(), free_port()
        self.port, self.admin_port = free_port(), free_port()
        self.config_dir = folder / "config"
        self.config_dir.mkdir()
        (self.config_dir / "routes.yaml").write_text(config_yaml(self.fast_port, self.quiet_port))
        self.workers = workers
        self.services: dict[str, Service] = {}
        self.fast_starts = 0

    def _mock(self, name: str, port: int, *extra: str) -> Service:
        self.fast_starts += name == "fast"
        log = self.folder / f"{name}-{self.fast_starts if name == 'fast' else 1}.log"
        svc = Service(name, [sys.executable, "-m", "modelyard.gateway", "mock", "--port", str(port), "--name", name, *extra],
                      self.cores, log, env={"PYTHONUNBUFFERED": "1"}, cwd=str(REPO))
        self.services[name] = svc
        return svc

    def start_fast(self) -> Service:
        return self._mock("fast", self.fast_port, "--ttft-ms", "30", "--itl-ms", "5", "--tokens", "24")

    def start(self) -> None:
        fast = self.start_fast()
        quiet = self._mock("quiet", self.quiet_port, "--no-usage", "--latency-ms", "20", "--ttft-ms", "80",
                           "--itl-ms", "40", "--tokens", "10", "--error-rate", "0.03")
        gw = Service("gateway", [
            sys.executable, "-m", "modelyard.gateway", "run", "--host", "127.0.0.1", "--port", str(self.port),
            "--admin-port", str(self.admin_port), "--workers", str(self.workers), "--config", str(self.config_dir),
            "--metrics-header", "x-team=team", "--access-log", "off", "--grace", "2"],
            self.cores, self.folder / "gateway.log", env={"PYTHONUNBUFFERED": "1"}, cwd=str(REPO))
        self.services["gateway"] = gw
        fast.wait_port(self.fast_port, 30)
        quiet.wait_port(self.quiet_port, 30)
        gw.wait_port(self.admin_port, 60)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if gw.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not get ready:\n" + gw.log.read_text(errors="replace")[-3000:])
            time.sleep(0.1)

    def kill_fast(self) -> None:
        """The `fast` backend dies (SIGKILL to its own process group)."""
        svc = self.services["fast"]
        try:
            os.killpg(svc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        svc.proc.wait(10)

    def stop(self) -> None:
        for name in ("gateway", "fast", "quiet"):
            svc = self.services.get(name)
            if svc is not None:
                try:
                    svc.stop()
                except Exception as e:  # keep stopping the others
                    print(f"dashboard: could not stop {name}: {e}", file=sys.stderr)


# --- load, events and scrapes -----------------------------------------------


class Run:
    def __init__(self, system: System, seconds: float, users: int, seed: int):
        self.sys = system
        self.seconds = seconds
        self.users = users
        self.rng = random.Random(seed)
        self.scrapes: list[tuple[float, str]] = []
        self.events: list[dict[str, Any]] = []
        self.client: dict[str, int] = {}  # "kind status" -> count
        self.t0 = 0.0

    def _count(self, key: str) -> None:
        self.client[key] = self.client.get(key, 0) + 1

    async def request(self, session: Any) -> None:
        rng = self.rng
        r = rng.random()
        headers = {"x-team": rng.choice(TEAMS)}
        prompt = "Tell me about gateways. " * rng.randint(1, 12)
        if r < 0.04:
            kind, path = "unknown", "/v1/chat/completions"
            body: dict[str, Any] = {"model": rng.choice(UNKNOWN_MODELS), "messages": [{"role": "user", "content": prompt}]}
        elif r < 0.10:
            kind, path = "embeddings", "/v1/embeddings"
            body = {"model": "embed-small", "input": [prompt, prompt[:40]]}
        else:
            model = rng.choices(list(CHAT_MODELS), weights=list(CHAT_MODELS.values()))[0]
            stream = r < 0.55
            kind, path = ("stream" if stream else "chat"), "/v1/chat/completions"
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
            if stream and rng.random() < 0.7:
                body["stream_options"] = {"include_usage": True}
        url = f"http://127.0.0.1:{self.sys.port}{path}"
        try:
            async with session.post(url, json=body, headers=headers) as resp:
                await resp.read()
                self._count(f"{kind} {resp.status}")
        except Exception as e:  # a reset mid-stream, a timeout: counted, the load goes on
            self._count(f"{kind} {type(e).__name__}")

    async def user(self, session: Any, end: float) -> None:
        while time.time() < end:
            await self.request(session)
            await asyncio.sleep(self.rng.uniform(0.0, 0.03))

    async def scraper(self, session: Any, end: float) -> None:
        url = f"http://127.0.0.1:{self.sys.admin_port}/metrics"
        next_at = time.time()
        while next_at <= end + 0.5:
            t = time.time()
            try:
                async with session.get(url) as resp:
                    self.scrapes.append((t, await resp.text()))
            except Exception as e:
                print(f"dashboard: scrape failed: {e}", file=sys.stderr)
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - time.time()))

    def event(self, what: str) -> None:
        self.events.append({"t": time.time(), "what": what})
        print(f"dashboard: {time.time() - self.t0:5.1f}s {what}", flush=True)

    async def chaos(self) -> None:
        """Kill and restart `fast`; write a broken config file and remove it."""
        loop = asyncio.get_running_loop()
        s = self.seconds
        outage = min(10.0, s / 6)
        await asyncio.sleep(s * 0.35)
        await loop.run_in_executor(None, self.sys.kill_fast)
        self.event("backend fast killed")
        await asyncio.sleep(outage)
        svc = self.sys.start_fast()
        await loop.run_in_executor(None, svc.wait_port, self.sys.fast_port, 30)
        self.event("backend fast started again")
        await asyncio.sleep(max(0.0, s * 0.75 - (time.time() - self.t0)))
        broken = self.sys.config_dir / "broken.yaml"
        broken.write_text("apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\n"
                          "metadata: {name: broken, namespace: default}\nspec: {rules: [{backendRefs: 7}]}\n")
        self.event("broken config file written")
        await asyncio.sleep(min(4.0, s / 10))
        broken.unlink()
        (self.sys.config_dir / "extra.yaml").write_text(textwrap.dedent("""\
            apiVersion: aigateway.envoyproxy.io/v1alpha1
            kind: AIGatewayRoute
            metadata: {name: extra, namespace: default}
            spec:
              rules:
                - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: gpt-fast-canary}]}]
                  backendRefs: [{name: fast}]
            """))
        self.event("broken config file replaced by a valid one")

    async def main(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            self.t0 = time.time()
            end = self.t0 + self.seconds
            scraper = asyncio.create_task(self.scraper(session, end))
            chaos = asyncio.create_task(self.chaos())
            await asyncio.gather(*(self.user(session, end) for _ in range(self.users)))
            await asyncio.wait_for(chaos, timeout=30)
            await scraper


# --- evaluating the dashboard ---------------------------------------------------


def substitute(expr: str, window: str) -> str:
    """Template variables as Grafana sends them with every variable at All (allValue .*)."""
    for name in ("$__rate_interval", "${__rate_interval}", "$__interval", "${__interval}"):
        expr = expr.replace(name, window)
    for name in ("model", "route"):
        expr = expr.replace("${" + name + "}", ".*").replace("$" + name, ".*")
    return expr


def evaluate(dashboard: dict, store: promql.Store, window_s: float) -> list[dict[str, Any]]:
    """Each panel's targets evaluated at every scrape from the first full window on."""
    window = f"{window_s:g}s"
    ev = promql.Evaluator(store)
    times = [t + 1e-3 for t in store.scrape_times]  # as Prometheus would, from the first scrape on
    panels = []
    for p in dashboard["panels"]:
        if p.get("type") == "row":
            continue
        out = {"title": p["title"], "gridPos": p["gridPos"], "unit": p["fieldConfig"]["defaults"].get("unit", ""),
               "stack": p["fieldConfig"]["defaults"].get("custom", {}).get("stacking", {}).get("mode") == "normal",
               "targets": []}
        for target in p["targets"]:
            expr = substitute(target["expr"], window)
            node = promql.parse(expr)
            series: dict[promql.Labels, list[float | None]] = {}
            for i, t in enumerate(times):
                v = ev.instant(node, t)
                vec = v if isinstance(v, dict) else {(): v}
                for labels, value in vec.items():
                    series.setdefault(labels, [None] * len(times))[i] = \
                        None if math.isnan(value) or math.isinf(value) else value
            out["targets"].append({
                "refId": target["refId"], "expr": expr, "times": times,
                "series": [{"legend": promql.legend(target.get("legendFormat", ""), labels).strip()
                            or promql.legend("", labels),
                            "labels": dict(labels), "values": values}
                           for labels, values in sorted(series.items())],
            })
        panels.append(out)
    return panels


# --- drawing ---------------------------------------------------------------------

BG, PANEL, BORDER, TEXT, MUTED, GRID = "#111217", "#181b1f", "#2a2d33", "#d8d9da", "#8e8e99", "#2c3036"
PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
           "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477"]


def _si(v: float) -> str:
    a = abs(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if a >= div:
            return f"{v / div:.3g} {suffix}"
    return f"{v:.3g}" if a >= 0.01 or v == 0 else f"{v:.2g}"


def fmt_value(v: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{v * 100:.3g}%"
    if unit == "s":
        if v == 0:
            return "0 s"
        if abs(v) < 1e-3:
            return f"{v * 1e6:.3g} µs"
        if abs(v) < 1:
            return f"{v * 1e3:.3g} ms"
        return f"{v:.3g} s"
    if unit == "reqps":
        return f"{_si(v)} req/s"
    return _si(v)


def render(panels: list[dict[str, Any]], out: Path, title: str, subtitle: str, events: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_px, col_px, header_px, width_px, gap = 34, 80, 104, 1920, 8
    height_px = header_px + rows * unit_px + 16
    dpi = 100
    fig = plt.figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, facecolor=BG)
    fig.text(16 / width_px, 1 - 26 / height_px, title, color=TEXT, fontsize=17, fontweight="bold", va="center")
    fig.text(16 / width_px, 1 - 44 / height_px, subtitle.replace("$", r"\$"), color=MUTED, fontsize=9.5, va="top",
             linespacing=1.5)
    kill = [e["t"] for e in events if e["what"] == "backend fast killed"]
    back = [e["t"] for e in events if e["what"] == "backend fast started again"]
    broken = [e["t"] for e in events if e["what"].startswith("broken config")]
    tz = UTC

    def dt(t: float) -> datetime:
        return datetime.fromtimestamp(t, tz)

    def box(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """gridPos units to figure fractions (left, bottom, width, height) of the panel's box."""
        left = (x * col_px + gap / 2) / width_px
        top = (header_px + y * unit_px + gap / 2) / height_px
        return left, 1 - top - (h * unit_px - gap) / height_px, (w * col_px - gap) / width_px, (h * unit_px - gap) / height_px

    for p in panels:
        g = p["gridPos"]
        left, bottom, w, h = box(g["x"], g["y"], g["w"], g["h"])
        fig.patches.append(FancyBboxPatch((left, bottom), w, h, boxstyle="round,pad=0,rounding_size=0.003",
                                          transform=fig.transFigure, facecolor=PANEL, edgecolor=BORDER, lw=1,
                                          zorder=-1))
        fig.text(left + 10 / width_px, bottom + h - 15 / height_px, p["title"], color=TEXT, fontsize=11,
                 fontweight="bold", va="center")
        series = [(s, t["times"]) for t in p["targets"] for s in t["series"]]
        n_legend = len(series)
        legend_rows = max(1, math.ceil(n_legend / max(1, int(g["w"] * col_px / 230))))
        legend_px = 8 + 16 * legend_rows
        ax = fig.add_axes((left + 62 / width_px, bottom + (legend_px + 22) / height_px,
                           w - 74 / width_px, h - (legend_px + 22 + 32) / height_px))
        ax.set_facecolor(PANEL)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(colors=MUTED, labelsize=8, length=0)
        ax.grid(True, color=GRID, lw=0.6)
        ax.set_axisbelow(True)
        unit = p["unit"]
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, unit=unit: fmt_value(v, unit)))
        ax.yaxis.set_major_locator(MaxNLocator(5, integer=unit == "short" and "generation" in p["title"].lower()))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=tz))
        ax.xaxis.set_major_locator(MaxNLocator(7))
        all_times = [t for t in p["targets"][0]["times"]] if p["targets"] else []
        if all_times:
            ax.set_xlim(dt(all_times[0]), dt(all_times[-1]))
        for t0 in kill:
            t1 = next((b for b in back if b > t0), all_times[-1] if all_times else t0)
            ax.axvspan(dt(t0), dt(t1), color="#E24D42", alpha=0.07, lw=0)
        for t in broken:
            ax.axvline(dt(t), color="#8e8e99", lw=0.8, ls=":")
        handles = []
        stack_base: list[float] | None = None
        top = 0.0
        for i, (s, times) in enumerate(series):
            color = PALETTE[i % len(PALETTE)]
            xs = [dt(t) for t in times]
            ys = [math.nan if v is None else v for v in s["values"]]
            if p["stack"]:
                base = stack_base or [0.0] * len(ys)
                ys = [b + (0.0 if math.isnan(v) else v) for b, v in zip(base, ys)]
                ax.fill_between(xs, base, ys, color=color, alpha=0.25, lw=0)
                stack_base = ys
            else:
                ax.fill_between(xs, 0, ys, color=color, alpha=0.10, lw=0)
            (line,) = ax.plot(xs, ys, color=color, lw=1.3)
            line.set_label(s["legend"])
            handles.append(line)
            finite = [v for v in ys if not math.isnan(v)]
            top = max([top, *finite])
        if not any(v is not None for s, _ in series for v in s["values"]):
            ax.text(0.5, 0.5, "No data", color=MUTED, fontsize=12, ha="center", va="center", transform=ax.transAxes)
            ax.set_ylim(0, 1)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: ""))
        else:
            ax.set_ylim(0, top * 1.12 if top > 0 else 1)
        if handles:
            cols = max(1, min(n_legend, int(g["w"] * col_px / 230)))
            leg = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(-62 / (w * width_px), -0.04 - 8 / (ax.get_position().height * height_px)),
                            ncol=cols, frameon=False, fontsize=8.5, handlelength=1.2, handletextpad=0.5,
                            columnspacing=1.4, labelcolor=TEXT, borderaxespad=0)
            for lh in leg.get_lines():
                lh.set_linewidth(3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor=BG, dpi=dpi)
    plt.close(fig)


# --- the command -----------------------------------------------------------------


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelyard.loadtest.bench.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the PNG to write (default {DEFAULT_OUT})")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to drive load (default 60)")
    parser.add_argument("--window", type=float, default=None,
                        help="seconds substituted for $__rate_interval (default 10, less for short runs)")
    parser.add_argument("--users", type=int, default=8, help="concurrent client loops (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="the Grafana dashboard JSON")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--save-scrapes", type=Path, metavar="PATH",
                        help="also write every raw /metrics scrape, with its time, as JSON lines")
    parser.add_argument("--from-scrapes", type=Path, metavar="PATH",
                        help="render from scrapes saved with --save-scrapes instead of running anything")
    args = parser.parse_args(argv)
    dashboard = json.loads(args.dashboard.read_text())

    if args.from_scrapes:
        lines = [json.loads(x) for x in args.from_scrapes.read_text().splitlines() if x.strip()]
        meta, rows = lines[0], lines[1:]
        args.seconds, args.workers = meta["seconds"], meta["workers"]
        run = Run(None, args.seconds, args.users, args.seed)  # type: ignore[arg-type]
        run.scrapes = [(r["t"], r["text"]) for r in rows]
        run.events, run.client = meta["events"], meta["client"]
    else:
        with tempfile.TemporaryDirectory(prefix="modelyard-dashboard-") as tmp:
            system = System(Path(tmp), args.workers)
            try:
                system.start()
                run = Run(system, args.seconds, args.users, args.seed)
                asyncio.run(run.main())
            except BaseException:
                for name in ("gateway", "fast", "quiet"):
                    svc = system.services.get(name)
                    if svc is not None and svc.log.exists():
                        print(f"--- {name} log (tail) ---\n{svc.log.read_text(errors='replace')[-1500:]}",
                              file=sys.stderr)
                raise
            finally:
                system.stop()
        if args.save_scrapes:
            with args.save_scrapes.open("w") as f:
                f.write(json.dumps({"seconds": args.seconds, "workers": args.workers, "events": run.events,
                                    "client": run.client}) + "\n")
                for t, text in run.scrapes:
                    f.write(json.dumps({"t": t, "text": text}) + "\n")
    window = args.window or min(10.0, max(2.0, round(args.seconds / 3)))

    store = promql.Store()
    for t, text in run.scrapes:
        store.add_text(t, text)
    panels = evaluate(dashboard, store, window)
    total = sum(run.client.values())
    subtitle = (
        f"Rendered by loadtest/bench/dashboard.py from the dashboard's queries over metrics scraped from a real run — "
        f"not a Grafana screenshot ({_shown(args.dashboard)}).\n"
        f"modelyard run --workers {args.workers} + 2 mock backends · {args.seconds:g} s mixed load "
        f"({total} requests) · /metrics scraped every 1 s · $__rate_interval = {window:g}s · model, route = All\n"
        f"Shaded: backend \"fast\" down (killed, then restarted); dotted: a broken config file written, then replaced "
        f"by a valid one. Times in UTC."
    )
    render(panels, args.out, f"{dashboard.get('title', 'Modelyard')} dashboard", subtitle, run.events)
    empty = [p["title"] for p in panels
             if not any(v is not None for t in p["targets"] for s in t["series"] for v in s["values"])]
    series_path = args.out.with_name(args.out.stem + "-series.json")
    series_path.write_text(json.dumps({
        "dashboard": _shown(args.dashboard), "seconds": args.seconds, "window_s": window, "scrapes": len(run.scrapes),
        "client": dict(sorted(run.client.items())), "events": run.events, "empty_panels": empty,
        "panels": [{
            "title": p["title"], "unit": p["unit"],
            "targets": [{"refId": t["refId"], "expr": t["expr"], "times": [round(x, 3) for x in t["times"]],
                         "series": [{"legend": s["legend"], "labels": s["labels"],
                                     "values": [None if v is None else round(v, 6) for v in s["values"]]}
                                    for s in t["series"]]} for t in p["targets"]],
        } for p in panels],
    }, indent=1) + "\n")
    print(f"dashboard: {total} requests, {len(run.scrapes)} scrapes; client answers: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(run.client.items())))
    for title in empty:
        print(f"dashboard: panel {title!r} has no data", file=sys.stderr)
    print(f"dashboard: wrote {args.out} and {series_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
