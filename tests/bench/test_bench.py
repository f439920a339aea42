"""The benchmark harness in quick mode: every target it can run answers correctly and the report is written.

Throughput is not asserted here (a shared CI machine measures nothing reliably);
the harness itself refuses a target that answers wrongly, and fails when any
request under load fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.loadtest.bench import instructions
from modelyard.loadtest.bench.targets import Modelyard
from tests.support import REPO

EXPECTED = ["direct", "modelyard", "modelyard-10k", "modelyard-features"]


def test_bench_quick_mode_measures_every_target_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "modelyard.gateway", "bench", "--quick", "--out", str(out), "--scaling", "1,2"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((out / "results.json").read_text())

    expected = EXPECTED + [name for name, tool in (("nginx", "nginx"), ("envoy", "envoy"), ("litellm", "litellm"))
                           if shutil.which(tool)]
    assert sorted(results["targets"]) == sorted(expected), results["skipped"]
    scaled = [f"scaling-{w}" for w in results["scaling"]]
    # Each answered a chat and a stream correctly before any load.
    assert sorted(results["checks"]) == sorted([*expected, *scaled])
    for name, target in results["targets"].items():
        for kind in ("chat", "stream"):
            assert target[kind]["max"]["rps"] > 0, (name, kind)
            assert target[kind]["max"]["errors"] == 0, (name, kind, target[kind]["max"])
            assert target[kind]["c1"]["n"] > 0, (name, kind)
        if name.startswith("modelyard"):
            assert 0 < target["rss_mb"] < 1024, target["rss_mb"]
            assert target["chat"]["max"]["per_core"] > 0
    assert results["scaling"]["1"]["rps"] > 0
    # With as many workers as cores, the workers share them with the load: measured, and marked so.
    cores = len(os.sched_getaffinity(0))
    assert ("2" in results["scaling"]) == (cores >= 2) and ("scaling-2" in results["skipped"]) == (cores < 2)
    assert results["scaling"]["1"]["shared"] == (cores < 2)
    if "2" in results["scaling"]:
        assert results["scaling"]["2"]["shared"] == (cores < 3) and results["scaling"]["2"]["per_core"] > 0

    report = (out / "report.md").read_text()
    for label in ("direct to the mock", "Modelyard, 1 worker, 10 models", "10,000 models", "nrp-models-config"):
        assert label in report
    assert "## Goals" in report and "| workers |" in report
    if "nginx" in results["targets"]:
        assert "× nginx" in report and "nginx (proxy_pass" in report
    for plot in ("throughput.png", "latency.png", "scaling.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
        assert f"]({plot})" in report


def test_bench_without_wrk_uses_its_built_in_load_generator(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "modelyard.gateway", "bench", "--quick", "--out", str(out), "--load-tool", "python",
         "--targets", "direct,modelyard", "--scaling", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["load_tool"].startswith("python")
    assert sorted(results["targets"]) == ["direct", "modelyard"]
    assert all(t[k]["max"]["tool"] == "python" and t[k]["max"]["requests"] > 0
               for t in results["targets"].values() for k in ("chat", "stream"))
    assert "Load generator: python" in (out / "report.md").read_text()


@pytest.mark.skipif(instructions.unavailable() is not None, reason="valgrind is not installed")
def test_instructions_per_request_are_counted_under_callgrind(tmp_path: Path, start_mock) -> None:
    # The same count the full benchmark makes, over a few requests: the worker runs under valgrind,
    # answers correctly, and its instructions per request come back from callgrind's dump.
    mock = start_mock()
    target = Modelyard("modelyard", "Modelyard, 1 worker, 10 models")
    config, model = target.config_args(tmp_path, mock.port)
    counted = instructions.count("modelyard", config, model, 20, sorted(os.sched_getaffinity(0)), tmp_path)
    for kind in ("chat", "stream"):
        assert counted[kind]["failures"] == 0, counted
        # Tens of thousands at the least (HTTP parsing both ways, routing, the upstream call); far
        # from the per-process start-up cost that a dump of the wrong process or thread would show.
        assert 20_000 < counted[kind]["instructions"] < 20_000_000, counted
    assert counted["stream"]["instructions"] > counted["chat"]["instructions"]  # 20 chunks relayed and scanned


def test_failures_under_load_are_reported_and_only_modelyards_fail_the_run() -> None:
    from modelyard.loadtest.bench import harness as bench
    from modelyard.loadtest.bench import report

    # The committed full run: LiteLLM dropped streams under load there, Modelyard nothing.
    results = json.loads((REPO / "loadtest/results/latest/results.json").read_text())
    failed = report.failures(results)
    assert set(failed) == {"litellm"} and failed["litellm"]["stream"] > 0
    assert not bench.fails_run(failed)
    assert "Requests that failed under load (all rounds): LiteLLM proxy:" in report.markdown(results, [])

    results["targets"]["modelyard-10k"]["chat"]["moderate"]["errors"] = 2
    failed = report.failures(results)
    assert failed["modelyard-10k"] == {"chat": 2} and bench.fails_run(failed)
