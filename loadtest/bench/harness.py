"""`modelyard bench`: Modelyard against a direct call, nginx, Envoy and LiteLLM, in one run, as ratios.

Every target proxies the same mock backend. The proxy under test is pinned to
its own core(s); the mock and the load generator share the others. For each
target and for non-streaming and 20-chunk streaming chat it measures:
- max throughput, and throughput per proxy core from the proxy's own CPU time;
- latency at concurrency 1 (p50, p99) and time to first byte of a stream;
- latency and TTFT at a fixed moderate load;
- peak RSS per worker.
Modelyard runs several ways: features off (10 models), 10,000 models, and the
shared nrp-models-config example (credentials from a Secret, metrics), and with
1, 2, 4 and 8 workers where the machine has the cores.

Results go to a folder (results.json, report.md, PNG plots). `--quick` makes
every measurement last about half a second: CI uses it to check that every target
answers correctly and the report is produced.
"""

from __future__ import annotations

import argparse
import statistics
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from modelyard.loadtest.bench import instructions

from modelyard.loadtest.bench import loadgen

from modelyard.loadtest.bench import report
from modelyard.loadtest.bench.procs import Service, free_port, peak_rss_mb
from modelyard.loadtest.bench.targets import LiteLLM, Modelyard, Envoy, Nginx, Running, Target, modelyard_argv

STREAM_CHUNKS = 20  # tokens per response: 20 content chunks per stream


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="loadtest/results/latest", metavar="DIR",
                        help="where the report goes (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="about half a second per measurement, for CI (default: off)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of each throughput run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="connections for the throughput runs (default 32)")
    parser.add_argument("--moderate-rps", type=float, default=500.0,
                        help="request rate of the fixed moderate load, spread over 4 connections (default 500)")
    parser.add_argument("--probe-requests", type=int, default=2000,
                        help="requests for each concurrency-1 probe (default 2000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each measurement per target; the report keeps each figure's median, since "
                             "a shared machine's noise moves single runs by ±10%% (default 3; 1 with --quick)")
    parser.add_argument("--targets", default="direct,modelyard,modelyard-10k,modelyard-features,nginx,envoy,litellm",
                        help="comma-separated subset to run (default: all: %(default)s)")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                        help="instead of the comparison: hold Modelyard at 70%% of its max throughput this long "
                             "and record its workers' RSS (writes soak.json and soak.md; default 0: no soak)")
    parser.add_argument("--load-tool", choices=["auto", "wrk", "python"], default="auto",
                        help="auto (the default): wrk when installed, else the built-in generator")
    parser.add_argument("--scaling", default="1,2,4,8", help="worker counts for the scaling runs (default 1,2,4,8)")
    parser.add_argument("--instructions", type=int, default=300, metavar="REQUESTS",
                        help="count a Modelyard worker's instructions per request under callgrind over this many "
                             "requests of each kind, for each Modelyard variant (0: skip; needs valgrind; "
                             "not in --quick mode; default 300)")


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _split_cores(cores: list[int], proxy: int) -> tuple[list[int], list[int]] | None:
    """(proxy cores, load+mock cores); None when the machine lacks the cores to keep them apart."""
    if len(cores) < 2:
        return (cores, cores) if proxy == 1 else None
    if proxy >= len(cores):
        return None
    return cores[:proxy], cores[proxy:]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("modelyard", "granian", "httptools", "msgspec", "uvloop", "aiohttp", "prometheus-client"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    for tool, argv in (("wrk", ["wrk", "-v"]), ("nginx", ["nginx", "-v"]), ("envoy", ["envoy", "--version"]),
                       ("litellm", ["litellm", "--version"])):
        if shutil.which(argv[0]):
            try:
                res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                text = (res.stdout + res.stderr).strip().splitlines()
                out[tool] = text[0][:100] if text else "?"
            except (OSError, subprocess.TimeoutExpired):
                out[tool] = "?"
    return out


def _machine(cores: list[int]) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": len(cores), "kernel": platform.release(), "host": platform.node()}


_SUMMED = ("errors", "requests")  # counts: every run's failures must show, not the median run's


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median across repeated runs (counts summed, labels from the first run)."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if key in _SUMMED:
            out[key] = sum(numbers)
        elif numbers and not isinstance(first, str):
            out[key] = statistics.median(numbers)
        else:
            out[key] = first
    return out


def combine_rounds(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A target's figures over its rounds: each figure's median, failures summed, RSS at its worst."""
    out: dict[str, Any] = {"label": label, "runs": len(runs)}
    for kind in ("chat", "stream"):
        out[kind] = {part: median_of([r[kind][part] for r in runs]) for part in ("max", "c1", "moderate")}
    if "rss_mb" in runs[0]:
        out["rss_mb"] = max(r["rss_mb"] for r in runs)
    if "mock_cost" in runs[0]:
        out["mock_cost"] = median_of([r["mock_cost"] for r in runs])
    return out


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.quick = args.quick
        self.seconds = 0.5 if args.quick else args.seconds
        self.probe_n = 50 if args.quick else args.probe_requests
        self.repeat = 1 if args.quick else max(1, getattr(args, "repeat", 1))
        self.work = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
        self.cores = _cores()
        self.results: dict[str, Any] = {"targets": {}, "skipped": {}, "scaling": {}, "checks": [],
                                        "instructions": {}}

    # -- one measured target -------------------------------------------------------------------

    def _check(self, name: str, url: str, model: str) -> None:
        """One request of each kind must come back right before any load is put on the target."""
        for stream in (False, True):
            res = loadgen.probe(url, loadgen.chat_body(model, stream), model, requests=3, warmup=0)
            if res.failures:
                raise RuntimeError(f"{name} answered wrongly ({'stream' if stream else 'chat'}): {res.failures[0]}")
        if name not in self.results["checks"]:
            self.results["checks"].append(name)

    def _throughput(self, svc: Service | None, url: str, model: str, stream: bool,
                    connections: int | None = None) -> dict[str, Any]:
        body = loadgen.chat_body(model, stream)
        before = svc.cpu_seconds() if svc else 0.0
        t0 = time.monotonic()
        res = loadgen.load(url, body, model, connections or self.args.connections, self.seconds, self.work)
        wall = time.monotonic() - t0
        used = (svc.cpu_seconds() - before) / wall if svc else 0.0
        return {"rps": res.rps, "cpu_cores": used, "per_core": res.rps / used if used > 0.01 else None,
                "p50_ms": res.p50_ms, "p99_ms": res.p99_ms, "requests": res.requests, "errors": res.errors,
                "tool": res.tool}

    def _moderate(self, url: str, model: str, stream: bool) -> dict[str, Any]:
        """Latency at a fixed moderate load: 4 connections each pausing between requests, plus a c=1 probe."""
        connections = 4
        delay_ms = max(0.0, connections * 1000.0 / self.args.moderate_rps)
        body = loadgen.chat_body(model, stream)
        out: dict[str, Any] = {}

        def background() -> None:
            out["load"] = loadgen.load(url, body, model, connections, self.seconds + 1, self.work, delay_ms)

        t = threading.Thread(target=background)
        t.start()
        time.sleep(0.3)
        probe = loadgen.probe(url, body, model, requests=max(50, self.probe_n // 4), warmup=10)
        t.join()
        load: loadgen.LoadResult = out["load"]
        return {"rps": load.rps, "p50_ms": load.p50_ms, "p99_ms": load.p99_ms, "errors": load.errors + len(probe.failures),
                **{f"probe_{k}": v for k, v in probe.summary().items()}}

    def measure_once(self, name: str, running: Running | None, url: str, model: str) -> dict[str, Any]:
        """One round's figures for a target: each kind's max throughput, c=1 probe and moderate load."""
        svc = running.service if running else None
        self._check(name, url, model)
        entry: dict[str, Any] = {}
        for kind, stream in (("chat", False), ("stream", True)):
            probe = loadgen.probe(url, loadgen.chat_body(model, stream), model, self.probe_n)
            if probe.failures:
                raise RuntimeError(f"{name}: {len(probe.failures)} probe failures, first: {probe.failures[0]}")
            entry[kind] = {
                "max": self._throughput(svc, url, model, stream),
                "c1": probe.summary(),
                "moderate": self._moderate(url, model, stream),
            }
        if running is not None:
            entry["rss_mb"] = max((peak_rss_mb(p) for p in running.worker_pids), default=0.0)
        return entry

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
        split = _split_cores(self.cores, 1)
        assert split is not None
        proxy_cores, load_cores = split
        os.sched_setaffinity(0, load_cores)  # the harness and its probes stay off the proxy's core
        self.results.update(machine=_machine(self.cores), versions=_versions(), proxy_cores=proxy_cores, load_cores=load_cores,
                            command=" ".join(["modelyard bench", *sys.argv[2:]]), quick=self.quick, repeat=self.repeat,
                            load_tool="wrk" if loadgen.have_wrk() else "python (wrk not installed)",
                            started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
        mock_port = free_port()
        mock = Service("mock", modelyard_argv("mock", "--port", str(mock_port), "--tokens", str(STREAM_CHUNKS)),
                       load_cores, self.work / "mock.log")
        try:
            mock.wait_port(mock_port)
            direct_url = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
            catalogue: list[Target] = [
                Modelyard("modelyard", "Modelyard, 1 worker, 10 models"),
                Modelyard("modelyard-10k", "Modelyard, 1 worker, 10,000 models", models=10_000),
                Modelyard("modelyard-features",
                          "Modelyard, 1 worker, nrp-models-config (credentials, costs, access log, metrics)",
                          features=True),
                Nginx(), Envoy(), LiteLLM(),
            ]
            targets: list[Target] = []
            for target in (t for t in catalogue if t.name in wanted):
                why = target.available()
                if why:
                    print(f"bench: skipping {target.name}: {why}", flush=True)
                    self.results["skipped"][target.name] = why
                else:
                    targets.append(target)
            # Rounds: every target once per round, back to back, so that the ratios the goals are
            # judged on compare figures taken minutes apart, not the length of the whole run.
            rounds: list[dict[str, dict[str, Any]]] = []
            for n in range(self.repeat):
                this: dict[str, dict[str, Any]] = {}
                if "direct" in wanted:
                    print(f"bench: round {n + 1}/{self.repeat}: direct to the mock", flush=True)
                    this["direct"] = self.measure_once("direct", None, direct_url, "model-5")
                    # The mock's own cost, for the report: its CPU per request at full load.
                    this["direct"]["mock_cost"] = self._throughput(mock, direct_url, "model-5", False)
                for target in list(targets):
                    print(f"bench: round {n + 1}/{self.repeat}: {target.label}", flush=True)
                    try:
                        running = target.start(proxy_cores, self.work, mock_port)
                    except RuntimeError as e:
                        if target.name.startswith("modelyard"):
                            raise
                        print(f"bench: {target.name} did not start: {e}", flush=True)  # another project's problem
                        self.results["skipped"][target.name] = f"did not start: {str(e).splitlines()[0]}"
                        targets.remove(target)
                        continue
                    try:
                        this[target.name] = self.measure_once(target.name, running, running.url, running.model)
                    finally:
                        running.service.stop()
                rounds.append(this)
            self.results["rounds"] = rounds
            labels = {"direct": "direct to the mock", **{t.name: t.label for t in catalogue}}
            for name, label in labels.items():
                runs = [r[name] for r in rounds if name in r]
                if runs:
                    self.results["targets"][name] = combine_rounds(label, runs)
            self._instructions([t for t in targets if isinstance(t, Modelyard)], mock_port, load_cores)
            self._scaling(args, mock_port)
        finally:
            mock.stop()
        self.results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        return self.results

    def _instructions(self, targets: list[Modelyard], mock_port: int, cores: list[int]) -> None:
        requests = 0 if self.quick else self.args.instructions
        if not requests or not targets:
            return
        why = instructions.unavailable()
        if why:
            self.results["skipped"]["instructions"] = why
            return
        for target in targets:
            # Valgrind runs one thread at a time and counts, not times: any core will do.
            print(f"bench: instructions per request under callgrind: {target.label}", flush=True)
            config, model = target.config_args(self.work, mock_port)
            self.results["instructions"][target.name] = {
                "label": target.label, **instructions.count(target.name, config, model, requests, cores, self.work)}

    def _scaling(self, args: argparse.Namespace, mock_port: int) -> None:
        for workers in (int(w) for w in args.scaling.split(",") if w.strip()):
            split = _split_cores(self.cores, workers)
            if split is None:
                if workers > len(self.cores):
                    self.results["skipped"][f"scaling-{workers}"] = (
                        f"{workers} workers need more than {len(self.cores)} cores to keep load and mock apart")
                    continue
                # As many workers as cores: they share them with the load generator and the mock. The
                # throughput means little then, but the throughput per core (from the workers' own CPU
                # time) still shows whether workers cost more together than alone.
                split = (self.cores, self.cores)
            proxy_cores, load_cores = split
            shared = bool(set(proxy_cores) & set(load_cores))
            print(f"bench: scaling, {workers} worker(s) on cores {proxy_cores}"
                  f"{' (shared with load and mock)' if shared else ''}", flush=True)
            target = Modelyard(f"scaling-{workers}", f"Modelyard, {workers} workers", workers=workers)
            running = target.start(proxy_cores, self.work, mock_port)
            try:
                self._check(target.name, running.url, running.model)
                result = self._throughput(running.service, running.url, running.model, False,
                                          connections=max(args.connections, 32 * workers))
                self.results["scaling"][str(workers)] = {**result, "proxy_cores": proxy_cores, "shared": shared}
            finally:
                running.service.stop()


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """RSS of one Modelyard worker held at 70% of its measured max throughput for `args.soak` seconds."""
    from modelyard.loadtest.bench.procs import rss_mb

    cores = _cores()
    split = _split_cores(cores, 1)
    assert split is not None
    proxy_cores, load_cores = split
    os.sched_setaffinity(0, load_cores)
    work = Path(tempfile.mkdtemp(prefix="modelyard-soak-"))
    mock_port = free_port()
    mock = Service("mock", modelyard_argv("mock", "--port", str(mock_port), "--tokens", str(STREAM_CHUNKS)),
                   load_cores, work / "mock.log")
    try:
        mock.wait_port(mock_port)
        running = Modelyard("soak", "Modelyard, 1 worker, nrp-models-config", features=True).start(
            proxy_cores, work, mock_port)
        try:
            body = loadgen.chat_body(running.model, False)
            peak = loadgen.load(running.url, body, running.model, args.connections, 10, work)
            connections = 16
            target_rps = 0.7 * peak.rps
            # wrk's delay() paces each connection: the time per request is the delay plus the latency.
            delay_ms = max(0.0, connections * 1000.0 / target_rps - peak.p50_ms * 0.5)
            samples: list[tuple[float, float]] = []
            out: dict[str, Any] = {}
            t = threading.Thread(target=lambda: out.setdefault(
                "load", loadgen.load(running.url, body, running.model, connections, args.soak, work, delay_ms)))
            t0 = time.monotonic()
            t.start()
            while t.is_alive():
                samples.append((time.monotonic() - t0, max(rss_mb(p) for p in running.worker_pids)))
                t.join(10)
            load: loadgen.LoadResult = out["load"]
            first = samples[min(len(samples) - 1, 3)][1]  # after warm-up
            last = samples[-1][1]
            return {"seconds": args.soak, "max_rps": peak.rps, "target_rps": target_rps, "rps": load.rps,
                    "errors": load.errors, "rss_after_warmup_mb": first, "rss_end_mb": last,
                    "rss_max_mb": max(r for _, r in samples), "growth": (last - first) / first if first else None,
                    "samples": samples, "machine": _machine(cores), "versions": _versions()}
        finally:
            running.service.stop()
    finally:
        mock.stop()
        shutil.rmtree(work, ignore_errors=True)


def _stop_on_sigterm() -> None:
    # SIGTERM unwinds like Ctrl-C, so every started proxy and mock is stopped by its finally block.
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(args: argparse.Namespace) -> int:
    _stop_on_sigterm()
    loadgen.FORCE_PYTHON = args.load_tool == "python"
    if args.load_tool == "wrk" and not loadgen.have_wrk():
        print("bench: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 1
    if args.soak:
        result = soak(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "soak.json").write_text(json.dumps(result, indent=2))
        (out / "soak.md").write_text(
            f"# RSS soak\n\nModelyard, 1 worker, nrp-models-config, {result['seconds']:g} s at "
            f"{result['rps']:,.0f} req/s (70% of the {result['max_rps']:,.0f} req/s measured first), "
            f"{result['errors']} errors.\n\nWorker RSS: {result['rss_after_warmup_mb']:.1f} MB after warm-up, "
            f"{result['rss_end_mb']:.1f} MB at the end (max {result['rss_max_mb']:.1f} MB), "
            f"growth {100 * (result['growth'] or 0):+.1f}%.\n")
        print((out / "soak.md").read_text())
        return 0 if result["errors"] == 0 else 1
    bench = Bench(args)
    try:
        results = bench.run()
    except RuntimeError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    report.write(results, out)
    print(f"bench: report in {out / 'report.md'}")
    errors = report.failures(results)
    if errors:
        print(f"bench: requests failed during load: {errors}", file=sys.stderr)
    return 1 if fails_run(errors) else 0


def fails_run(failures: dict[str, dict[str, int]]) -> bool:
    """Another project's failures under load are reported; only Modelyard's fail the run."""
    return any(name.startswith("modelyard") for name in failures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m modelyard.loadtest.bench.harness")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
