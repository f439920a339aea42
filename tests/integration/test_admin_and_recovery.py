"""One running gateway: the admin port, secrets kept out of it, metrics across workers, and the
supervisor replacing a killed worker or control process.

`modelyard run` is a supervisor with a control process (config watcher and
admin server, process title "modelyard control") and Granian workers
("modelyard worker-N"). These tests start it for real on 127.0.0.1 and look at
it from outside: exit codes and output, HTTP, and /proc.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelyard.config.control import CONTROL_NICE
from tests.conftest import Gateway, Mock, openai_backend, route, write_config
from tests.integration.helpers import (
    children,
    control_pid,
    established_per_process,
    exited,
    listening_workers,
    module_mock,
    title,
    workers,
)
from tests.resources import api_key_policy
from tests.support import http_request, wait_for, wait_http

RELOAD_BOUND = 2.0  # seconds: the stated bound for a config change to be served


API_KEY = "sk-modelyard-" + secrets.token_hex(12)


mock = module_mock("life-mock")


@pytest.fixture(scope="module")
def conf_dir(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> Path:
    d = tmp_path_factory.mktemp("life")
    write_config(d / "backends.yaml", openai_backend("mock", "127.0.0.1", mock.port) + api_key_policy("mock", API_KEY))
    write_config(d / "routes.yaml", route("main", "alpha"))
    return d


@pytest.fixture(scope="module")
def gw(conf_dir: Path) -> Iterator[Gateway]:
    g = Gateway("--config", str(conf_dir), "--log-level", "debug")
    yield g
    code = g.stop()
    output = g.proc.output()
    assert API_KEY not in output
    assert code == 0, output


def test_admin_endpoints(gw: Gateway, mock: Mock) -> None:
    status, _, body = http_request(gw.admin_port, "GET", "/healthz")
    assert status == 200
    status, _, body = http_request(gw.admin_port, "GET", "/readyz")
    assert status == 200 and b"ready" in body

    view = gw.config()
    assert view["generation"] >= 1
    assert view["errors"] == []
    # Both workers report the table they serve (a reload is complete once they all agree).
    assert wait_for(gw.in_sync, timeout=10.0), gw.config()
    assert len({w["pid"] for w in gw.config()["workers"]}) == 2
    assert [r["name"] for r in view["routes"]] == ["default/main"]
    assert view["models"] == ["alpha"]
    (backend,) = view["backends"]
    assert backend["name"] == "default/mock"
    assert backend["endpoints"] == [f"127.0.0.1:{mock.port}"]
    assert backend["credentials"] is True
    raw_config = http_request(gw.admin_port, "GET", "/config")[2].decode()
    assert API_KEY not in raw_config


def test_api_key_goes_upstream_and_nowhere_else(gw: Gateway, mock: Mock) -> None:
    mock.clear()
    client = openai.OpenAI(base_url=gw.base_url, api_key="client-key", max_retries=0)
    reply = client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    (received,) = mock.requests()
    assert received["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert "client-key" not in json.dumps(received["headers"])

    for path in ("/config", "/metrics", "/healthz", "/readyz"):
        assert API_KEY not in http_request(gw.admin_port, "GET", path)[2].decode(), path
    status, _, body = gw.post("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert status == 404 and API_KEY.encode() not in body
    assert API_KEY not in gw.proc.output()


def requests_total(gw: Gateway) -> dict[tuple[str, str, str], float]:
    text = http_request(gw.admin_port, "GET", "/metrics")[2].decode()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "modelyard_requests":
            for s in family.samples:
                if s.name == "modelyard_requests_total":
                    out[(s.labels["route"], s.labels["backend"], s.labels["status"])] = s.value
    return out


def test_metrics_aggregate_both_workers(gw: Gateway) -> None:
    key = ("default/main", "default/mock", "200")
    time.sleep(1.0)  # earlier requests reach the metrics within the workers' half-second flush
    before = requests_total(gw).get(key, 0.0)
    pids = wait_for(lambda: len(w := listening_workers(gw)) == 2 and list(w), timeout=10.0)
    assert pids, workers(gw)

    # Rounds of concurrent slow requests, each on its own connection, until both workers have
    # been seen holding some (from /proc); then the counter must include every one of them.
    seen = dict.fromkeys(pids, 0)
    statuses: list[int] = []
    with ThreadPoolExecutor(12) as pool:
        for _ in range(5):
            futures = [pool.submit(lambda: gw.chat("alpha", headers={"x-mock-delay-ms": "300"})[0]) for _ in range(12)]
            while not all(f.done() for f in futures):
                for pid, n in established_per_process(gw.port, pids).items():
                    seen[pid] += n
            statuses += [f.result() for f in futures]
            if all(seen.values()):
                break
    assert all(seen.values()), f"one worker took every connection: {seen}"
    assert statuses == [200] * len(statuses)

    # Workers write their metrics every half second.
    after = wait_for(lambda: (a := requests_total(gw)).get(key, 0.0) - before >= len(statuses) and a, timeout=30.0)
    assert after and after[key] - before == len(statuses), requests_total(gw)

    # An unknown model is counted, but never becomes a label value.
    assert gw.chat("no-such-model-xyz")[0] == 404
    assert "no-such-model-xyz" not in http_request(gw.admin_port, "GET", "/metrics")[2].decode()
    assert wait_for(lambda: requests_total(gw).get(("", "", "404"), 0) >= 1, timeout=30.0)


def duration_histogram(gw: Gateway, route: str = "default/main", backend: str = "default/mock") -> dict[str, float]:
    """modelyard_request_duration_seconds for one route and backend: bucket `le` (or count, sum) -> value."""
    text = http_request(gw.admin_port, "GET", "/metrics")[2].decode()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "modelyard_request_duration_seconds":
            assert family.type == "histogram"
            for s in family.samples:
                if s.labels.get("route") == route and s.labels.get("backend") == backend:
                    out[s.labels.get("le") or s.name.rpartition("_")[2]] = s.value
    return out


def test_metrics_duration_histogram_by_route_and_backend(gw: Gateway) -> None:
    time.sleep(1.0)  # earlier requests reach the metrics within the workers' half-second flush
    before = duration_histogram(gw)
    status, _, body = gw.chat("alpha", headers={"x-mock-delay-ms": "300"})
    assert status == 200, body
    # Observed when the answer is complete, so possibly just after the client has it.
    after = wait_for(lambda: (h := duration_histogram(gw)).get("count", 0) > before.get("count", 0) and h, timeout=30.0)
    assert after, duration_histogram(gw)
    assert after["count"] - before.get("count", 0) == 1
    assert after["+Inf"] == after["count"]
    assert after["sum"] - before.get("sum", 0) >= 0.29
    assert after["0.25"] == before.get("0.25", 0)  # 300 ms: not in the 250 ms bucket


def test_killed_worker_is_replaced(gw: Gateway, mock: Mock) -> None:
    # /readyz needs one worker accepting; wait until both hold their listening socket.
    original = wait_for(lambda: len(w := listening_workers(gw)) == 2 and w, timeout=10.0)
    assert original and sorted(original.values()) == ["modelyard worker-1", "modelyard worker-2"], workers(gw)
    statuses: list[int] = []

    def replaced(pid: int) -> dict[int, str] | None:
        statuses.append(gw.chat("alpha")[0])
        w = listening_workers(gw)
        return w if len(w) == 2 and pid not in w else None

    for pid in sorted(original):
        os.kill(pid, signal.SIGKILL)
        # Each Granian worker has its own SO_REUSEPORT socket: connections the kernel queued on the
        # dying worker's socket are reset (unless net.ipv4.tcp_migrate_req=1). Requests start once
        # every thread of it is gone; from then on the other worker must answer them all.
        assert wait_for(lambda pid=pid: exited(pid), timeout=10.0), f"worker {pid} did not exit"
        now = wait_for(lambda pid=pid: replaced(pid), timeout=15.0)
        assert now, (workers(gw), gw.proc.output())
        assert sorted(now.values()) == ["modelyard worker-1", "modelyard worker-2"], now
    assert statuses and set(statuses) == {200}, statuses
    current = listening_workers(gw)
    assert not set(current) & set(original), (current, original)  # both workers are replacements
    # The admin port lists the replacements, not the dead, each on the current table.
    assert wait_for(lambda: {w["pid"] for w in gw.config()["workers"]} == set(current), timeout=10.0), gw.config()
    assert gw.in_sync()

    # The replacements serve the routing table (each request on a new connection, either worker).
    mock.clear()
    for _ in range(10):
        status, _, body = gw.chat("alpha")
        assert status == 200, body
    assert len(mock.requests()) == 10
    assert gw.chat("nope")[0] == 404
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    assert [m.id for m in client.models.list()] == ["alpha"]
    assert gw.proc.alive()


def _nice(pid: int, tid: int | None = None) -> int:
    stat = Path(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[16])  # field 19 of proc(5)


def test_control_process_yields_the_cpu_to_the_workers(gw: Gateway) -> None:
    # The control plane shares the workers' cores; a reload's compile or a tokenizer load must not
    # stall requests, so it runs niced, every thread of it, and the workers do not.
    control = control_pid(gw)
    assert control is not None
    # A /tokenize no backend serves is answered by the token service's threads in the control's child.
    status, _, _ = http_request(gw.port, "POST", "/tokenize", {"model": "alpha", "prompt": "hi"})
    assert status == 200
    tokens = [p for p in children(control) if title(p) == "modelyard tokens"]
    assert len(tokens) == 1, tokens
    for pid in (control, tokens[0]):
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        assert {_nice(pid, t) for t in threads} == {CONTROL_NICE}
    assert len(os.listdir(f"/proc/{tokens[0]}/task")) > 1
    workers = [w["pid"] for w in gw.config()["workers"]]
    assert workers and all(_nice(w) == 0 for w in workers)


def test_killed_control_process_is_restarted(gw: Gateway, conf_dir: Path) -> None:
    old = control_pid(gw)
    assert old is not None
    generation = gw.config()["generation"]
    os.kill(old, signal.SIGKILL)

    # Requests do not need the control process.
    assert gw.chat("alpha")[0] == 200
    new = wait_for(lambda: (p := control_pid(gw)) is not None and p != old and p, timeout=10.0)
    assert new, gw.proc.output()
    wait_http(gw.admin_port, "/readyz", timeout=10.0, proc=gw.proc)
    assert gw.config()["generation"] >= generation  # the numbering goes on

    # The restarted watcher applies a later edit.
    write_config(conf_dir / "routes.yaml", route("main", "alpha", "after-restart"))
    served = wait_for(lambda: all(gw.chat("after-restart")[0] == 200 for _ in range(6)), timeout=RELOAD_BOUND)
    assert served, gw.config()
    assert gw.config()["models"] == ["alpha", "after-restart"]
    assert "config watcher exited" in gw.proc.output()
    assert control_pid(gw) == new
