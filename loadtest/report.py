"""The benchmark report: a markdown table of ratios, the goals they meet, and PNG plots."""

from __future__ import annotations

from pathlib import Path
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


def goals(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met?) for the performance targets; None where this run could not tell."""
    out: list[tuple[str, str, bool | None]] = []

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    for kind, need, what in (("chat", 0.2, "non-streaming"), ("stream", 0.25, "20-chunk streams")):
        r = ratio(_per_core(results, "modelyard-features", kind) or _per_core(results, "modelyard", kind),
                  _per_core(results, "nginx", kind))
        out.append((f"{what}: per-core throughput with features on ≥ {need} × nginx", _f(r, 2),
                    None if r is None else r >= need))
    p50 = _added(results, "modelyard", "chat", "c1", "p50_ms")
    p99 = _added(results, "modelyard", "chat", "c1", "p99_ms")
    out.append(("added latency at c=1: p50 ≤ 0.25 ms", f"{_f(p50, 3)} ms", None if p50 is None else p50 <= 0.25))
    out.append(("added latency at c=1: p99 ≤ 1 ms", f"{_f(p99, 3)} ms", None if p99 is None else p99 <= 1.0))
    ttft = _added(results, "modelyard", "stream", "moderate", "probe_first_p99_ms")
    out.append(("added TTFT at moderate load: p99 ≤ 1 ms", f"{_f(ttft, 3)} ms", None if ttft is None else ttft <= 1.0))
    for kind in ("chat", "stream"):
        r = ratio(_per_core(results, "modelyard-features", kind) or _per_core(results, "modelyard", kind),
                  _per_core(results, "litellm", kind))
        out.append((f"{kind}: ≥ 50 × LiteLLM per core", _f(r, 1), None if r is None else r >= 50))
    for kind in ("chat", "stream"):
        r = ratio(_per_core(results, "modelyard-features", kind), _per_core(results, "modelyard", kind))
        out.append((f"{kind}: what accounting costs (costs, usage, access log on ÷ off, per core)", _f(r, 2), None))
    r = ratio(_per_core(results, "modelyard-10k", "chat"), _per_core(results, "modelyard", "chat"))
    out.append(("10,000 models within 5% of 10 (per core)", _f(r, 3), None if r is None else r >= 0.95))
    rss = [t.get("rss_mb") for n, t in results["targets"].items() if n.startswith("modelyard")]
    worst = max((r for r in rss if r), default=None)
    out.append(("peak RSS per worker < 100 MB", f"{_f(worst, 1)} MB", None if worst is None else worst < 100))
    return out


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    m, v = results["machine"], results["versions"]
    lines = [
        "# Modelyard benchmark", "",
        f"{results['started']} on {m['cpu'] or 'an unnamed CPU'}, {m['cores']} cores, Linux {m['kernel']}. "
        f"Proxy pinned to core(s) {results['proxy_cores']}; mock and load generator on {results['load_cores']}. "
        f"Load generator: {results['load_tool']}.{' Quick mode: about a second per measurement, not for comparison.' if results['quick'] else ''}",
        "", f"Command: `{results['command']}`", "",
        f"Each figure is the median of {results.get('repeat', 1)} run(s) of its measurement; failed requests are "
        "summed over all of them.", "",
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
    lines += ["", "## Goals", "", "| goal | measured | met |", "|---|---:|:---:|"]
    for goal, measured, met in goals(results):
        lines.append(f"| {goal} | {measured} | {'–' if met is None else ('yes' if met else 'no')} |")
    if results["scaling"]:
        lines += ["", "## Worker scaling (non-streaming chat)", "", "| workers | proxy cores | req/s | cores used | req/s per core |",
                  "|---:|---|---:|---:|---:|"]
        for w, s in sorted(results["scaling"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {w} | {s['proxy_cores']} | {_f(s['rps'])} | {_f(s['cpu_cores'], 2)} | {_f(s['per_core'])} |")
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
        ax.plot([int(w) for w, _ in items], [s["rps"] for _, s in items], marker="o", label="req/s")
        ax.set_xlabel("workers")
        ax.set_ylabel("requests/s")
        ax.set_title("Worker scaling, non-streaming chat")
        fig.tight_layout()
        fig.savefig(out / "scaling.png", dpi=110)
        plt.close(fig)
        made.append("scaling.png")
    return made


def write(results: dict[str, Any], out: Path) -> None:
    plots = plot(results, out)
    (out / "report.md").write_text(markdown(results, plots))
