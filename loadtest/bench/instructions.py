"""Instructions per request, counted by callgrind: the one figure a shared machine cannot move.

Wall-clock throughput on a VM shifts by ±10% with its neighbours, too much to
tell whether 10,000 models cost 3% more than 10. Callgrind counts the
instructions a worker executes (every thread of it: Granian's Rust side, the
Python proxy, the upstream client), the same on every run. The gateway runs
under valgrind; its counters are zeroed after a warm-up, a fixed number of
requests go through at concurrency 1, and the counters are dumped and divided;
three times, keeping the median.
The count leaves out cache misses, so it complements the throughput figures and
does not replace them.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from modelyard.loadtest.bench import loadgen
from modelyard.loadtest.bench.procs import Service, free_port

TOOLS = ("valgrind", "callgrind_control")
WINDOWS = 3


def unavailable() -> str | None:
    missing = [t for t in TOOLS if not shutil.which(t)]
    return f"{' and '.join(missing)} not on PATH (Debian: apt-get install valgrind)" if missing else None


def _worker_pids(admin: int, timeout: float = 600.0) -> list[int]:
    """The workers' PIDs as the admin port lists them (under valgrind, process titles do not change)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/config", timeout=30) as r:
                workers = json.load(r).get("workers") or []
            if workers:
                return [w["pid"] for w in workers]
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError("the gateway under valgrind listed no worker")


def _dumped_totals(out_dir: Path, pid: int, before: set[Path]) -> dict[str, int]:
    """Event totals of the dump callgrind_control just asked for (it is written asynchronously)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fresh = [p for p in out_dir.glob(f"callgrind.{pid}.*") if p not in before]
        for path in fresh:
            text = path.read_text(errors="replace")
            events = re.search(r"^events: (.*)$", text, re.M)
            totals = re.search(r"^(?:summary|totals): (.*)$", text, re.M)
            if events and totals:
                return dict(zip(events.group(1).split(), (int(x) for x in totals.group(1).split())))
        time.sleep(0.5)
    raise RuntimeError(f"callgrind wrote no dump for worker {pid}")


def count(name: str, gateway_args: list[str], model: str, requests: int, cores: list[int],
          work: Path) -> dict[str, Any]:
    """Instructions per chat request and per 20-chunk stream in the one worker of a gateway started
    with `gateway_args` (without host, ports or workers)."""
    out_dir = work / f"callgrind-{name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    port, admin = free_port(), free_port()
    argv = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--trace-children-skip-by-arg=*token_process*",
            f"--callgrind-out-file={out_dir}/callgrind.%p",
            sys.executable, "-m", "modelyard.gateway", "run", "--host", "127.0.0.1", "--port", str(port),
            "--admin-port", str(admin), "--workers", "1", "--log-level", "warning", *gateway_args]
    svc = Service(f"callgrind-{name}", argv, cores, work / f"callgrind-{name}.log")
    try:
        svc.wait_port(port, timeout=600)
        (worker,) = _worker_pids(admin)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        result: dict[str, Any] = {"requests": requests}
        for kind, stream in (("chat", False), ("stream", True)):
            body = loadgen.chat_body(model, stream)
            warm = loadgen.probe(url, body, model, requests=min(50, requests), warmup=0)
            if warm.failures:
                raise RuntimeError(f"{name} under valgrind answered wrongly: {warm.failures[0]}")
            per_window: list[float] = []
            failures = 0
            for window in range(WINDOWS):
                # Counted in windows, the median kept: a one-off event (a collection of the old
                # generation, a reload) lands in one window and does not move the figure.
                subprocess.run(["callgrind_control", "-z", str(worker)], check=True, capture_output=True, timeout=120)
                before = set(out_dir.glob(f"callgrind.{worker}.*"))
                res = loadgen.probe(url, body, model, requests=requests, warmup=0)
                failures += len(res.failures)
                subprocess.run(["callgrind_control", "-d", f"{kind}-{window}", str(worker)], check=True,
                               capture_output=True, timeout=120)
                per_window.append(_dumped_totals(out_dir, worker, before).get("Ir", 0) / requests)
            result[kind] = {"instructions": statistics.median(per_window), "windows": per_window,
                            "failures": failures}
        return result
    finally:
        svc.stop()
