"""The Grafana dashboard (k8s/grafana) and its renderer (loadtest/bench/dashboard.py)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.loadtest.bench import promql
from modelyard.loadtest.bench.dashboard import DASHBOARD, substitute

REPO = Path(__file__).resolve().parents[2]
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]


def defined_metrics() -> set[str]:
    """Metric names core/metrics.py creates, as they appear on /metrics."""
    source = (REPO / "core" / "metrics.py").read_text()
    names: set[str] = set()
    for kind, name in re.findall(r'\b(Counter|Gauge|Histogram|_histogram|CounterMetricFamily|GaugeMetricFamily)\(\s*'
                                 r'"([a-z_:][a-z0-9_:]*)"', source):
        if kind in ("Histogram", "_histogram"):
            names.update(name + s for s in HISTOGRAM_SUFFIXES)
        elif kind in ("Counter", "CounterMetricFamily"):
            names.add(name if name.endswith("_total") else name + "_total")
        else:
            names.add(name)
    return names


def test_dashboard_is_a_grafana_dashboard_with_the_variables() -> None:
    d = dashboard()
    assert 36 <= d["schemaVersion"] <= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"model", "route"} <= set(variables)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in d["panels"]]
    assert len(titles) == len(set(titles))
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]


def test_every_metric_the_queries_use_is_defined() -> None:
    defined = defined_metrics()
    assert "gen_ai_client_token_usage_sum" in defined and "modelyard_endpoint_ejections_total" in defined
    used: set[str] = set()
    for title, expr in exprs():
        names = promql.metric_names(promql.parse(substitute(expr, "1m")))
        assert names, title
        used |= names
    for v in dashboard()["templating"]["list"]:
        m = re.match(r"label_values\((\w+),", v.get("definition", ""))
        if m:
            used.add(m.group(1))
    assert not used - defined, f"not in core/metrics.py: {sorted(used - defined)}"


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    inf = math.inf
    assert promql.bucket_quantile(0.5, [(0.1, 0), (0.2, 10), (inf, 10)]) == pytest.approx(0.15)
    assert promql.bucket_quantile(0.5, [(0.1, 10), (inf, 10)]) == pytest.approx(0.05)  # lowest bucket from 0
    assert promql.bucket_quantile(0.99, [(0.1, 1), (0.2, 1), (inf, 10)]) == 0.2  # +Inf: the highest finite bound
    assert math.isnan(promql.bucket_quantile(0.5, [(0.1, 0), (inf, 0)]))


def test_rate_and_aggregation_over_samples() -> None:
    store = promql.Store()
    for i in range(11):  # 2/s on one series, 1/s on the other, scraped every second
        store.add(100.0 + i, [("x_total", {"route": "a", "status": "200"}, 2.0 * i),
                              ("x_total", {"route": "a", "status": "500"}, 1.0 * i)])
    ev = promql.Evaluator(store)
    by_status = ev.instant(promql.parse('sum by (status) (rate(x_total{route=~".*"}[5s]))'), 110.0)
    assert by_status == {(("status", "200"),): pytest.approx(2.0), (("status", "500"),): pytest.approx(1.0)}
    ratio = ev.instant(promql.parse('sum by (status) (rate(x_total{status!="200"}[5s])) '
                                    '/ ignoring(status) group_left sum(rate(x_total[5s]))'), 110.0)
    assert ratio == {(("status", "500"),): pytest.approx(1 / 3)}


def test_render_from_a_short_real_run(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "dashboard.png"
    result = subprocess.run([sys.executable, "-m", "modelyard.loadtest.bench.dashboard", "--seconds", "6", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    series = json.loads((tmp_path / "dashboard-series.json").read_text())
    assert [p["title"] for p in series["panels"]] == [p["title"] for p in dashboard()["panels"]]
    assert series["scrapes"] >= 5
    # The gateway's own counters and the GenAI histograms reach /metrics (all workers aggregated).
    for title in ("Requests/s by status", "Tokens/s by type", "Config generation and reload errors"):
        assert title not in series["empty_panels"], (title, result.stdout[-2000:])
