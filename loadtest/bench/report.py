"""The benchmark report: a markdown table of ratios, the goals they meet, and PNG plots."""

from __future__ import annotations

from pathlib import Path
import statistics
from collections.abc import Callable
from typing import Any

ORDER = ["direct", "modelyard", "modelyard-10k", "modelyard-features", "nginx", "envoy", "litellm"]


def _f(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _per_core(results: dict[str, Any], name: str, kind: str) -> float | None:
    t = results["targets"].get(name)
    return t[kind]["max"]["per_core"] if t else None


def _added(results: dict[str, Any], name: str, kind: str, section: str, key: str) -> float | None:
    t, d = results["targets"].get(name), results["targets"].get("direct")
    if not t or not d:
        return None
    return t[kind][section][key] - d[kind][section][key]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _ours(results: dict[str, Any], kind: str) -> float | None:
    """Modelyard with its features on, or without them when that target did not run."""
    return _per_core(results, "modelyard-features", kind) or _per_core(results, "modelyard", kind)


def _worst_rss(results: dict[str, Any]) -> float | None:
    rss = [t.get("rss_mb") for n, t in results["targets"].items() if n.startswith("modelyard")]
    return max((r for r in rss if r), default=None)


# (goal, its figure from one set of targets, the test it must pass or None, digits, unit, how rounds combine)
GOALS: list[tuple[str, Callable[[dict[str, Any]], float | None], Callable[[float], bool] | None, int, str, str]] = [
    ("non-streaming: per-core throughput with features on ≥ 0.2 × nginx",
     lambda r: _ratio(_ours(r, "chat"), _per_core(r, "nginx", "chat")), lambda v: v >= 0.2, 2, "", "median"),
    ("20-chunk streams: per-core throughput with features on ≥ 0.25 × nginx",
     lambda r: _ratio(_ours(r, "stream"), _per_core(r, "nginx", "stream")), lambda v: v >= 0.25, 2, "", "median"),
    ("added latency at c=1: p50 ≤ 0.25 ms",
     lambda r: _added(r, "modelyard", "chat", "c1", "p50_ms"), lambda v: v <= 0.25, 3, " ms", "median"),
    ("added latency at c=1: p99 ≤ 1 ms",
     lambda r: _added(r, "modelyard", "chat", "c1", "p99_ms"), lambda v: v <= 1.0, 3, " ms", "median"),
    ("added TTFT at moderate load: p99 ≤ 1 ms",
     lambda r: _added(r, "modelyard", "stream", "moderate", "probe_first_p99_ms"), lambda v: v <= 1.0, 3, " ms",
     "median"),
    ("chat: ≥ 50 × LiteLLM per core",
     lambda r: _ratio(_ours(r, "chat"), _per_core(r, "litellm", "chat")), lambda v: v >= 50, 1, "", "median"),
    ("stream: ≥ 50 × LiteLLM per core",
     lambda r: _ratio(_ours(r, "stream"), _per_core(r, "litellm", "stream")), lambda v: v >= 50, 1, "", "median"),
    ("chat: what accounting costs (costs, usage, access log on ÷ off, per core)",
     lambda r: _ratio(_per_core(r, "modelyard-features", "chat"), _per_core(r, "modelyard", "chat")), None, 2, "",
     "median"),
    ("stream: what accounting costs (costs, usage, access log on ÷ off, per core)",
     lambda r: _ratio(_per_core(r, "modelyard-features", "stream"), _per_core(r, "modelyard", "stream")), None, 2,
     "", "median"),
    ("10,000 models within 5% of 10 (per core)",
     lambda r: _ratio(_per_core(r, "modelyard-10k", "chat"), _per_core(r, "modelyard", "chat")),
     lambda v: v >= 0.95, 3, "", "median"),
    ("peak RSS per worker < 100 MB", _worst_rss, lambda v: v < 100, 1, " MB", "max"),
]


def instruction_goals(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    counted = results.get("instructions") or {}
    ten, many = counted.get("modelyard"), counted.get("modelyard-10k")
    if not ten or not many:
        return []
    r = many["chat"]["instructions"] / ten["chat"]["instructions"]
    return [("10,000 models within 5% of 10 (instructions per request, callgrind)", _f(r, 3), r <= 1.05)]


def goals(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met?) for the performance targets; None where this run could not tell.

    Each goal's figure is taken within every round (all targets measured back to back)
    and the median over rounds is judged, so a ratio never compares a quiet minute of
    one target with a noisy minute of another; the rounds' own figures are listed.
    """
    rounds = results.get("rounds") or [results["targets"]]
    out: list[tuple[str, str, bool | None]] = []
    for text, figure, test, digits, unit, combine in GOALS:
        values = [v for v in (figure({"targets": targets}) for targets in rounds) if v is not None]
        if not values:
            out.append((text, "–", None))
            continue
        value = max(values) if combine == "max" else statistics.median(values)
        shown = f"{_f(value, digits)}{unit}"
        if len(values) > 1:
            shown += f" ({', '.join(_f(v, digits) for v in values)})"
        out.append((text, shown, None if test is None else test(value)))
    for text, shown, met in instruction_goals(results):
        out.append((text, shown, met))
    return out


def failures(results: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Requests that failed under load, by target and kind, over all rounds."""
    out: dict[str, dict[str, int]] = {}
    for name, t in results["targets"].items():
        for kind in ("chat", "stream"):
            n = t[kind]["max"]["errors"] + t[kind]["moderate"]["errors"]
            if n:
                out.setdefault(name, {})[kind] = n
    return out


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    m, v = results["machine"], results["versions"]
    lines = [
        "# Modelyard benchmark", "",
        f"{results['started']} on {m['cpu'] or 'an unnamed CPU'}, {m['cores']} cores, Linux {m['kernel']}. "
        f"Proxy pinned to core(s) {results['proxy_cores']}; mock and load generator on {results['load_cores']}. "
        f"Load generator: {results['load_tool']}.{' Quick mode: about half a second per measurement, not for comparison.' if results['quick'] else ''}",
        "", f"Command: `{results['command']}`", "",
        f"The run went through every target {results.get('repeat', 1)} time(s), in rounds. Each figure is the "
        "median over the rounds; failed requests are summed over all of them.", "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), "",
        "## Throughput and added latency", "",
        "Per core = requests/s divided by the cores the proxy's processes used (their CPU time over the wall clock). "
        "Added = the target minus direct-to-mock, at concurrency 1 and at a fixed moderate load.", "",
        "| target | chat req/s | cores used | chat req/s per core | × nginx | streams/s per core | × nginx "
        "| added p50 / p99 at c=1 (ms) | added TTFT p50 / p99 at c=1 (ms) | added p99 / TTFT p99 at moderate load (ms) "
        "| peak RSS per worker (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    nginx_chat, nginx_stream = _per_core(results, "nginx", "chat"), _per_core(results, "nginx", "stream")
    for name in ORDER + sorted(set(results["targets"]) - set(ORDER)):
        t = results["targets"].get(name)
        if t is None:
            continue
        chat, stream = t["chat"], t["stream"]
        direct = name == "direct"
        pc, spc = chat["max"]["per_core"], stream["max"]["per_core"]
        added = "–" if direct else (f"{_f(_added(results, name, 'chat', 'c1', 'p50_ms'), 3)} / "
                                    f"{_f(_added(results, name, 'chat', 'c1', 'p99_ms'), 3)}")
        ttft = "–" if direct else (f"{_f(_added(results, name, 'stream', 'c1', 'first_p50_ms'), 3)} / "
                                   f"{_f(_added(results, name, 'stream', 'c1', 'first_p99_ms'), 3)}")
        moderate = "–" if direct else (f"{_f(_added(results, name, 'chat', 'moderate', 'probe_p99_ms'), 3)} / "
                                       f"{_f(_added(results, name, 'stream', 'moderate', 'probe_first_p99_ms'), 3)}")
        lines.append(
            f"| {t['label']} | {_f(chat['max']['rps'])} | {_f(chat['max']['cpu_cores'], 2) if not direct else '–'} "
            f"| {_f(pc)} | {_f(pc / nginx_chat, 2) if pc and nginx_chat else '–'} "
            f"| {_f(spc)} | {_f(spc / nginx_stream, 2) if spc and nginx_stream else '–'} "
            f"| {added} | {ttft} | {moderate} | {_f(t.get('rss_mb'), 1)} |")
    direct = results["targets"].get("direct")
    if direct and "mock_cost" in direct:
        mc = direct["mock_cost"]
        lines += ["", f"The mock itself served {_f(mc['rps'])} req/s direct using {_f(mc['cpu_cores'], 2)} cores "
                  f"({_f(mc['per_core'])} req/s per core), beside the load generator on the same core(s)."]
    failed = failures(results)
    if failed:
        lines += ["", "Requests that failed under load (all rounds): " + "; ".join(
            f"{results['targets'][n]['label']}: " + ", ".join(f"{c} {k}" for k, c in kinds.items())
            for n, kinds in failed.items()) + "."]
    lines += ["", "## Goals", "", "Each goal is judged on the median of its figure within each round (listed in "
              "brackets), every round measuring all targets back to back.", "",
              "| goal | measured | met |", "|---|---:|:---:|"]
    for goal, measured, met in goals(results):
        lines.append(f"| {goal} | {measured} | {'–' if met is None else ('yes' if met else 'no')} |")
    counted = results.get("instructions") or {}
    if counted:
        base = counted.get("modelyard")
        lines += ["", "## Instructions per request (callgrind)", "",
                  "Every thread of the one worker, counted under valgrind over "
                  f"{next(iter(counted.values()))['requests']} requests of each kind at concurrency 1 after a "
                  "warm-up: the same on every run, whatever the machine's neighbours do. Cache misses are not "
                  "counted.", "",
                  "| target | per chat request | × 10 models | per 20-chunk stream | × 10 models |",
                  "|---|---:|---:|---:|---:|"]
        for c in counted.values():
            rel = [_f(c[k]["instructions"] / base[k]["instructions"], 3) if base else "–" for k in ("chat", "stream")]
            lines.append(f"| {c['label']} | {_f(c['chat']['instructions'])} | {rel[0]} "
                         f"| {_f(c['stream']['instructions'])} | {rel[1]} |")
    if results["scaling"]:
        lines += ["", "## Worker scaling (non-streaming chat)", "",
                  "Where a run's workers had to share their cores with the load generator and the mock, its "
                  "req/s is bounded by them; its req/s per core (from the workers' own CPU time) still shows "
                  "whether workers cost more together than alone.", "",
                  "| workers | proxy cores | shared with load and mock | req/s | cores used | req/s per core |",
                  "|---:|---|:---:|---:|---:|---:|"]
        for w, s in sorted(results["scaling"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {w} | {s['proxy_cores']} | {'yes' if s.get('shared') else 'no'} | {_f(s['rps'])} "
                         f"| {_f(s['cpu_cores'], 2)} | {_f(s['per_core'])} |")
    if results["skipped"]:
        lines += ["", "## Not measured in this run", ""]
        lines += [f"- {name}: {why}" for name, why in results["skipped"].items()]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = [n for n in ORDER + sorted(set(results["targets"]) - set(ORDER)) if n in results["targets"] and n != "direct"]
    made = []
    if names:
        fig, ax = plt.subplots(figsize=(8, 4))
        xs = range(len(names))
        for offset, kind, label in ((-0.2, "chat", "non-streaming chat"), (0.2, "stream", "20-chunk streams")):
            ax.bar([x + offset for x in xs], [_per_core(results, n, kind) or 0 for n in names], width=0.4, label=label)
        ax.set_xticks(list(xs), names, rotation=20, ha="right")
        ax.set_ylabel("requests/s per proxy core")
        ax.set_title("Throughput per core")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=110)
        plt.close(fig)
        made.append("throughput.png")

        fig, ax = plt.subplots(figsize=(8, 4))
        keys = (("c1", "p50_ms", "c=1 p50"), ("c1", "p99_ms", "c=1 p99"), ("moderate", "probe_p99_ms", "moderate p99"))
        for i, (section, key, label) in enumerate(keys):
            vals = [max(0.0, _added(results, n, "chat", section, key) or 0.0) for n in names]
            ax.bar([x + (i - 1) * 0.27 for x in xs], vals, width=0.27, label=label)
        ax.set_xticks(list(xs), names, rotation=20, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("added latency over direct (ms, log)")
        ax.set_title("Added latency, non-streaming chat")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        made.append("latency.png")
    if results["scaling"]:
        items = sorted(results["scaling"].items(), key=lambda kv: int(kv[0]))
        fig, ax = plt.subplots(figsize=(6, 4))
        workers = [int(w) for w, _ in items]
        ax.plot(workers, [s["rps"] for _, s in items], marker="o", label="req/s")
        ax.plot(workers, [s["per_core"] or 0 for _, s in items], marker="s", linestyle="--", label="req/s per core")
        for w, (_, s) in zip(workers, items):
            if s.get("shared"):
                ax.annotate("cores shared\nwith load", (w, s["rps"]), textcoords="offset points", xytext=(0, 8),
                            ha="center", fontsize=8)
        ax.set_xticks(workers)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("workers")
        ax.set_ylabel("requests/s")
        ax.set_title("Worker scaling, non-streaming chat")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "scaling.png", dpi=110)
        plt.close(fig)
        made.append("scaling.png")
    return made


def write(results: dict[str, Any], out: Path) -> None:
    plots = plot(results, out)
    (out / "report.md").write_text(markdown(results, plots))
