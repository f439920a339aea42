"""The locust profiles of loadtest/bench/profiles.py, each run headless against a real gateway and mock.

One gateway (2 workers) in front of three mocks: `load` serves four models on two routes;
`drill` serves `drill-model` on a route with a 1 s request timeout, and is the backend the
failover drill stops (SIGSTOP) and continues (SIGCONT) mid-run; `slow` streams too slowly
for its route's 1 s timeout, so that the gateway ends each stream with an error event. The
two tests that expect failures check that the profiles' validation catches what it should. Each test runs
`python -m locust ... --headless --exit-code-on-error 1` as a subprocess and checks its exit
code, its `--csv` stats file and its `--json-file` (written at shutdown; the CSV is a
snapshot that locust rewrites every second and does not rewrite at shutdown, so its last
second is missing, failures included; the exit code and the JSON file are final).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Gateway, Mock, openai_backend, route, write_config
from tests.support import REPO

# Never import locust here: importing it monkey-patches threading and time with gevent in the
# whole pytest process, and other modules' threaded tests then hang. Only the subprocess imports it.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is not installed")

PROFILES = REPO / "loadtest" / "bench" / "profiles.py"
MODELS = ("mock-model", "mock-model-2", "mock-model-3", "mock-model-4")
DRILL_ROUTE = """\
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: drill, namespace: default}
spec:
  rules:
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: drill-model}]}]
      backendRefs: [{name: drill}]
      timeouts: {request: 1s}
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: slow-model}]}]
      backendRefs: [{name: slow}]
      timeouts: {request: 1s}
"""


class Setup:
    def __init__(self, gateway: Gateway, load: Mock, drill: Mock, slow: Mock):
        self.gateway, self.load, self.drill, self.slow = gateway, load, drill, slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    mocks: list[Mock] = []
    gw = None
    try:
        load = Mock("load", *(arg for m in MODELS for arg in ("--model", m)))
        mocks.append(load)
        drill = Mock("drill", "--model", "drill-model")
        mocks.append(drill)
        slow = Mock("slow", "--model", "slow-model", "--itl-ms", "300")  # 16 tokens: ~4.5 s a stream
        mocks.append(slow)
        config = (openai_backend("load", "127.0.0.1", load.port)
                  + openai_backend("drill", "127.0.0.1", drill.port)
                  + openai_backend("slow", "127.0.0.1", slow.port)
                  + route("chat-a", *MODELS[:2], backend="load") + "---\n"
                  + route("chat-b", *MODELS[2:], backend="load") + "---\n"
                  + DRILL_ROUTE)
        path = write_config(tmp_path_factory.mktemp("load-profiles") / "config.yaml", config)
        gw = Gateway("--config", str(path))
        yield Setup(gw, load, drill, slow)
    finally:
        if gw is not None:
            gw.stop()
            out = gw.proc.output()
            assert "Traceback" not in out, out
        for m in mocks:
            _continue_tree(m.proc.pid)  # never leave a stopped process behind
            m.stop()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _continue_tree(pid: int) -> None:
    for p in _tree(pid):
        try:
            os.kill(p, signal.SIGCONT)
        except ProcessLookupError:
            pass


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0]


class Run:
    """One finished locust run: its exit code, output and final stats by (method, name).

    The stats are the final ones locust prints with --json when it shuts down. Its CSV files are
    not used: they are snapshots rewritten once a second, so requests made after the last one are
    missing from them (a run that ends within a second has none at all)."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.output = proc.stdout + proc.stderr
        start = proc.stdout.find("[")
        entries, _ = json.JSONDecoder().raw_decode(proc.stdout[start:]) if start >= 0 else ([], 0)
        self.final = {(e["method"], e["name"]): e for e in entries}

    def describe(self) -> str:
        return f"exit code {self.returncode}\noutput:\n{self.output[-4000:]}"

    def requests(self, method: str, name: str) -> int:
        entry = self.final.get((method, name))
        return entry["num_requests"] if entry else 0

    def failures(self, method: str, name: str) -> int:
        entry = self.final.get((method, name))
        return entry["num_failures"] if entry else 0

    def assert_clean(self) -> None:
        """Exit code 0, requests in the final stats, and no failure."""
        assert self.returncode == 0, self.describe()
        assert sum(e["num_requests"] for e in self.final.values()) > 0, self.describe()
        assert sum(e["num_failures"] for e in self.final.values()) == 0, self.describe()


def run_locust(gw: Gateway, tmp_path: Path, *args: str, seconds: int = 60, users: int = 4, iterations: int = 8,
               env: dict[str, str] | None = None) -> Run:
    """Run the profiles headless; locust prints its final stats as JSON, then its tables and error report.
    Each user makes `iterations` requests and the run ends (`seconds` only caps it): a count, not a
    time window, so a busy machine gets the same requests, later. 0: run for `seconds`."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("LOCUST_", "OPENAI_", "MODELYARD_DRILL"))}
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "locust", "-f", str(PROFILES), "--headless",
           "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
           "--host", f"http://127.0.0.1:{gw.port}", "--only-summary", "--exit-code-on-error", "1",
           "--json",
           *(("--iterations", str(iterations)) if iterations else ()), *args]
    # cwd is the test's folder so that no locust.conf or pyproject.toml around changes the options.
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=seconds + 45)
    return Run(proc)


def test_chat_user(setup: Setup, tmp_path: Path) -> None:
    run = run_locust(setup.gateway, tmp_path, "ChatUser")
    run.assert_clean()
    assert run.requests("POST", "/v1/chat/completions") > 0, run.describe()


def test_streaming_chat_user_records_ttft_and_inter_chunk(setup: Setup, tmp_path: Path) -> None:
    run = run_locust(setup.gateway, tmp_path, "StreamingChatUser")
    run.assert_clean()
    streams = run.requests("POST", "/v1/chat/completions stream")
    assert streams > 0, run.describe()
    assert ("SSE", "ttft") in run.final, run.describe()
    assert run.requests("SSE", "ttft") >= streams, run.describe()  # also those cut off at the end
    # The mock sends 16 content chunks and a final one: 16 gaps per stream.
    assert run.requests("SSE", "inter-chunk") >= 16 * streams, run.describe()


def test_streaming_chat_user_fails_on_an_error_event(setup: Setup, tmp_path: Path) -> None:
    # The slow route's 1 s timeout cuts every stream short; the gateway ends it with an error event.
    run = run_locust(setup.gateway, tmp_path, "--model", "slow-model", "StreamingChatUser", users=2, iterations=2)
    assert run.returncode == 1, run.describe()
    name = "/v1/chat/completions stream"
    assert 0 < run.requests("POST", name) == run.failures("POST", name), run.describe()
    report = run.output.partition("Error report")[2]
    assert "error event in the stream" in report and "upstream_timeout" in report, run.describe()


def test_mixed_models_user_counts_404_for_the_unknown_model_as_success(setup: Setup, tmp_path: Path) -> None:
    run = run_locust(setup.gateway, tmp_path, "--models", ",".join(MODELS),
                     "--unknown-model", "no-such-model", "MixedModelsUser")
    run.assert_clean()
    for model in MODELS:
        assert run.requests("POST", f"/v1/chat/completions model={model}") > 0, (model, run.describe())
    assert run.requests("POST", "/v1/chat/completions unknown model") > 0, run.describe()


def test_mixed_models_user_fails_when_the_unknown_model_is_served(setup: Setup, tmp_path: Path) -> None:
    # A model the gateway does serve, posing as the unknown one: its 200s must be failures.
    run = run_locust(setup.gateway, tmp_path, "--models", MODELS[0], "--unknown-model", MODELS[1],
                     "MixedModelsUser", users=2, iterations=4)
    assert run.returncode == 1, run.describe()
    unknown = "/v1/chat/completions unknown model"
    assert 0 < run.requests("POST", unknown) == run.failures("POST", unknown), run.describe()
    assert run.requests("POST", f"/v1/chat/completions model={MODELS[0]}") > 0, run.describe()
    assert run.failures("POST", f"/v1/chat/completions model={MODELS[0]}") == 0, run.describe()
    assert "was served (200)" in run.output.partition("Error report")[2], run.describe()


def test_long_prompt_user(setup: Setup, tmp_path: Path) -> None:
    run = run_locust(setup.gateway, tmp_path, "--prompt-kb", "100", "LongPromptUser")
    run.assert_clean()
    entry = run.final[("POST", "/v1/chat/completions 100KB prompt")]
    assert entry["num_requests"] > 0, run.describe()


def test_failover_drill_stops_and_continues_the_backend(setup: Setup, tmp_path: Path) -> None:
    pid = setup.drill.proc.pid
    assert len(_tree(pid)) >= 2, "expected the Granian supervisor and its worker"
    try:
        run = run_locust(setup.gateway, tmp_path, "--model", "drill-model",
                         "--drill-after", "1", "--drill-down", "2", "FailoverDrillUser",
                         seconds=6, iterations=0, env={"MODELYARD_DRILL_PID": str(pid)})
    finally:
        _continue_tree(pid)
    run.assert_clean()
    assert "SIGSTOP sent to" in run.output and "SIGCONT sent to" in run.output, run.describe()
    # Every process of the backend was running again when locust ended.
    assert all(_state(p) != "T" for p in _tree(pid)), run.describe()
    # The outage cost requests: the gateway answered them with its 1 s timeout (504), counted as expected.
    assert run.requests("POST", "failover-errors") > 0, run.describe()
    # And traffic came back after the restart.
    assert run.requests("DRILL", "recovery") == 1, run.describe()
    assert run.requests("POST", "/v1/chat/completions") > 0, run.describe()
