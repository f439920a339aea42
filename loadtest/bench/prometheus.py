"""A real Prometheus server (Debian's `prometheus` package) on 127.0.0.1, and its HTTP API.

The dashboard renderer starts one to scrape the gateway's admin /metrics and then asks it for
every panel's query over the run; the dashboard test asks it whether each query parses. The
server keeps its samples in a folder of its own (a temporary one, or one kept for later runs
with `--from-tsdb`), listens on a free port and is stopped by process group, like the services
under measurement.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelyard.loadtest.bench.procs import Service, free_port

JOB = "modelyard"


def binary() -> str | None:
    """The prometheus executable: PROMETHEUS if set, else the one on PATH (Debian: /usr/bin/prometheus)."""
    return os.environ.get("PROMETHEUS") or shutil.which("prometheus")


class QueryError(RuntimeError):
    """Prometheus refused a query (a parse error, a bad range); the message is its own."""


def scrape_config(targets: Sequence[str], interval_s: float) -> str:
    """prometheus.yml: one job scraping `targets` ("127.0.0.1:port") every `interval_s` (JSON is YAML)."""
    every = f"{max(1, round(interval_s * 1000))}ms"
    return json.dumps({
        "global": {"scrape_interval": every, "scrape_timeout": every, "evaluation_interval": "1m"},
        "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                            "static_configs": [{"targets": list(targets)}]}] if targets else [],
    }, indent=1) + "\n"


class Prometheus:
    """A Prometheus server started on `storage` (its TSDB folder), scraping `targets`; None: scrape nothing."""

    def __init__(self, storage: Path, targets: Sequence[str] = (), interval_s: float = 1.0,
                 cores: Sequence[int] | None = None, executable: str | None = None) -> None:
        exe = executable or binary()
        if exe is None:
            raise FileNotFoundError("prometheus is not installed (Debian: apt-get install prometheus)")
        storage.mkdir(parents=True, exist_ok=True)
        self.folder = storage
        self.config = storage / "prometheus.yml"
        self.config.write_text(scrape_config(targets, interval_s))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.service = Service("prometheus", [
            exe, f"--config.file={self.config}", f"--storage.tsdb.path={storage / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=30d",
            "--log.level=warn",
        ], cores if cores is not None else sorted(os.sched_getaffinity(0)), storage / "prometheus.log")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.service.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("prometheus did not get ready:\n" + self.log_tail())
            time.sleep(0.1)

    def log_tail(self, chars: int = 3000) -> str:
        log = self.service.log
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    def stop(self) -> None:
        self.service.stop()

    def __enter__(self) -> Prometheus:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- the HTTP API ---

    def api(self, endpoint: str, **params: Any) -> Any:
        """GET /api/v1/<endpoint>; its `data`, or QueryError with Prometheus's own message."""
        url = f"{self.base}/api/v1/{endpoint}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                answer = json.load(r)
        except urllib.error.HTTPError as e:  # 400/422: the query itself is wrong
            try:
                answer = json.load(e)
            except ValueError:
                raise QueryError(f"HTTP {e.code} for {endpoint} {params}") from None
        if answer.get("status") != "success":
            raise QueryError(f"{answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """An instant query: the vector's [{"metric": {...}, "value": [t, "v"]}] (a scalar as one unlabelled row)."""
        data = self.api("query", query=expr, time=f"{at:.3f}")
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """/api/v1/query_range: [{"metric": {...}, "values": [[t, "v"], ...]}]."""
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return data["result"]

    def wait_for_scrape_after(self, t: float, timeout: float = 30.0) -> None:
        """Until every target has a sample scraped at or after `t` (a scrape appends one `up` sample)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.query(f'timestamp(up{{job="{JOB}"}})', time.time())
            if rows and min(float(r["value"][1]) for r in rows) >= t:
                return
            time.sleep(0.2)
        raise RuntimeError(f"prometheus did not scrape within {timeout:g}s:\n" + self.log_tail())


def grid(start: float, end: float, step: float) -> list[float]:
    """The evaluation times of a range query, as Prometheus steps them: start, start + step, ... <= end."""
    return [start + i * step for i in range(int(math.floor((end - start) / step + 1e-9)) + 1)]


def aligned(result: list[dict[str, Any]], times: list[float]) -> list[tuple[dict[str, str], list[float | None]]]:
    """A range answer as (labels, one value per time); None where Prometheus had no (finite) value."""
    index = {round(t, 3): i for i, t in enumerate(times)}
    rows = []
    for row in result:
        values: list[float | None] = [None] * len(times)
        for t, v in row["values"]:
            i = index.get(round(float(t), 3))
            value = float(v)
            if i is not None and math.isfinite(value):
                values[i] = value
        rows.append((dict(row["metric"]), values))
    return rows
