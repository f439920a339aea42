"""Drawing the dashboard's panels: a Grafana-like dark PNG, each panel where its gridPos puts it.

`render` takes the panels as `dashboard.evaluate` answers them (titles, units, stacking and,
per target, the evaluation times and the series with their legends) and the run's events
(the `fast` outage is shaded, the broken config file is a dotted line).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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
