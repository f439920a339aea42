"""The Grafana dashboard (k8s/grafana) and its renderer (loadtest/bench/dashboard.py), against a real Prometheus."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.loadtest.bench import prometheus
from modelyard.loadtest.bench.dashboard import DASHBOARD, legend, substitute
from modelyard.loadtest.bench.prometheus import Prometheus

REPO = Path(__file__).resolve().parents[2]
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
needs_prometheus = pytest.mark.skipif(
    prometheus.binary() is None,
    reason="the prometheus binary is not installed (Debian: apt-get install prometheus; `make tools` does it)")


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


_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                       "and", "or", "unless", "inf", "nan"})


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers outside strings, label matchers, ranges and
    label lists, that are neither functions (followed by "(") nor keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    return {m.group(1) for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", expr)
            if m.group(2) is None and m.group(1).lower() not in _KEYWORDS}


@pytest.fixture(scope="module")
def idle_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A Prometheus that scrapes nothing: it parses and evaluates queries over no data."""
    if prometheus.binary() is None:
        pytest.skip("the prometheus binary is not installed (Debian: apt-get install prometheus)")
    with Prometheus(tmp_path_factory.mktemp("prometheus")) as prom:
        yield prom


def backfilled(folder: Path, samples: list[str]) -> Prometheus:
    """A Prometheus started on blocks that promtool made from OpenMetrics lines (`name{labels} value time`)."""
    source = folder / "samples.om"
    source.write_text("\n".join([*samples, "# EOF"]) + "\n")
    promtool = Path(prometheus.binary() or "prometheus").with_name("promtool")
    subprocess.run([str(promtool), "tsdb", "create-blocks-from", "openmetrics", str(source), str(folder / "data")],
                   check=True, capture_output=True, timeout=60)
    return Prometheus(folder)


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
    assert metric_names('sum by (le) (rate(a_bucket{x=~"$m"}[5m])) / ignoring(x) group_left sum(b)') == {"a_bucket", "b"}
    used: set[str] = set()
    for title, expr in exprs():
        names = metric_names(substitute(expr, "1m"))
        assert names, title
        used |= names
    for v in dashboard()["templating"]["list"]:
        m = re.match(r"label_values\((\w+),", v.get("definition", ""))
        if m:
            used.add(m.group(1))
    assert not used - defined, f"not in core/metrics.py: {sorted(used - defined)}"


@needs_prometheus
def test_every_query_parses_in_prometheus(idle_prometheus: Prometheus) -> None:
    for title, expr in exprs():
        idle_prometheus.query(substitute(expr, "10s"), time.time())  # QueryError on a parse error
    with pytest.raises(prometheus.QueryError, match="parse error"):
        idle_prometheus.query("sum by (status (rate(x[1m]))", time.time())


@needs_prometheus
def test_histogram_quantile_interpolates_like_prometheus(tmp_path: Path) -> None:
    t = int(time.time()) - 3600
    cases = {"a": [("0.1", 0), ("0.2", 10), ("+Inf", 10)], "b": [("0.1", 10), ("+Inf", 10)],
             "c": [("0.1", 1), ("0.2", 1), ("+Inf", 10)], "d": [("0.1", 0), ("+Inf", 0)]}
    samples = [f'q_bucket{{case="{case}",le="{le}"}} {count} {t}' for case, buckets in cases.items()
               for le, count in buckets]
    with backfilled(tmp_path, samples) as prom:
        def quantile(q: float, case: str) -> float:
            rows = prom.query(f'histogram_quantile({q}, q_bucket{{case="{case}"}})', t)
            return float(rows[0]["value"][1])

        assert quantile(0.5, "a") == pytest.approx(0.15)
        assert quantile(0.5, "b") == pytest.approx(0.05)  # lowest bucket from 0
        assert quantile(0.99, "c") == 0.2  # +Inf: the highest finite bound
        assert math.isnan(quantile(0.5, "d"))


@needs_prometheus
def test_rate_and_aggregation_over_samples(tmp_path: Path) -> None:
    t = int(time.time()) - 3600
    samples = ["# TYPE x counter"]
    for i in range(11):  # 2/s on one series, 1/s on the other, scraped every second
        samples += [f'x_total{{route="a",status="200"}} {2.0 * i} {t + i}',
                    f'x_total{{route="a",status="500"}} {1.0 * i} {t + i}']
    with backfilled(tmp_path, samples) as prom:
        by_status = prom.query('sum by (status) (rate(x_total{route=~".*"}[5s]))', t + 10)
        assert {r["metric"]["status"]: float(r["value"][1]) for r in by_status} == {
            "200": pytest.approx(2.0), "500": pytest.approx(1.0)}
        ratio = prom.query('sum by (status) (rate(x_total{status!="200"}[5s])) '
                           '/ ignoring(status) group_left sum(rate(x_total[5s]))', t + 10)
        assert [(r["metric"], float(r["value"][1])) for r in ratio] == [({"status": "500"}, pytest.approx(1 / 3))]


def test_range_answers_align_on_the_step_grid() -> None:
    times = prometheus.grid(100.0, 103.5, 1.0)
    assert times == [100.0, 101.0, 102.0, 103.0]
    rows = prometheus.aligned([{"metric": {"status": "200"}, "values": [[101, "2"], [103, "NaN"]]}], times)
    assert rows == [({"status": "200"}, [None, 2.0, None, None])]
    assert legend("{{backend}} {{endpoint}} ejected", {"backend": "b", "endpoint": "e"}) == "b e ejected"
    assert legend("", {"__name__": "x", "status": "200"}) == '{status="200"}'


@needs_prometheus
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
    # Every panel's every query, as Prometheus answered it over the run, has data.
    for p in series["panels"]:
        for t in p["targets"]:
            assert any(v is not None for s in t["series"] for v in s["values"]), (p["title"], t["expr"])
