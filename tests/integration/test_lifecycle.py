"""The gateway as a set of processes: start-up failures, graceful shutdown, the admin port, and recovery.

`modelyard run` is a supervisor with a control process (config watcher and
admin server, process title "modelyard control") and Granian workers
("modelyard worker-N"). These tests start it for real on 127.0.0.1 and look at
it from outside: exit codes and output, HTTP, and /proc.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelyard.config.control import CONTROL_NICE
from tests.conftest import Gateway, Mock, openai_backend, route, write_config
from tests.support import Proc, free_port, http_request, modelyard, wait_for, wait_http

RELOAD_BOUND = 2.0  # seconds: the stated bound for a config change to be served



def api_key_policy(backend: str, key: str) -> str:
    """A BackendSecurityPolicy of type APIKey on `backend`, and the Secret holding `key`."""
    return textwrap.dedent(f"""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: BackendSecurityPolicy
        metadata: {{name: {backend}-key, namespace: default}}
        spec:
          type: APIKey
          targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {backend}}}]
          apiKey:
            secretRef: {{name: {backend}-secret, namespace: default}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: {backend}-secret, namespace: default}}
        type: Opaque
        stringData:
          apiKey: {key}
        ---
        """)



def run_gateway(*args: str) -> Proc:
    """`modelyard run` on 127.0.0.1 with two workers and `args`; the caller waits for it."""
    return Proc(modelyard("run", "--host", "127.0.0.1", "--workers", "2", *args))


def exit_code(proc: Proc, timeout: float = 30.0) -> int:
    code = proc.popen.wait(timeout)
    proc.stop()  # closes the log; nothing left to stop
    return code


# --- processes, from /proc -----------------------------------------------------------------------


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def workers(gw: Gateway) -> dict[int, str]:
    """Live worker processes of the gateway: pid -> process title ("modelyard worker-N")."""
    found = {p: title(p) for p in children(gw.proc.pid)}
    return {p: t for p, t in found.items() if t.startswith("modelyard worker-") and _running(p)}


def listening_workers(gw: Gateway) -> dict[int, str]:
    """Workers that hold a socket listening on the gateway's port."""
    inodes = {f"socket:[{f[9]}]" for f in _tcp_rows() if f[3] == "0A" and _port(f[1]) == gw.port}
    return {pid: t for pid, t in workers(gw).items() if _holds(pid, inodes)}


def exited(pid: int) -> bool:
    """Whether every thread of `pid` is gone (a zombie whose threads all exited holds no sockets)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    return tasks == [str(pid)] and not _running(pid)


def _tcp_rows() -> list[list[str]]:
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows += [line.split() for line in Path(table).read_text().splitlines()[1:]]
        except OSError:
            pass
    return rows


def _port(address: str) -> int:
    return int(address.rpartition(":")[2], 16)


def _holds(pid: int, inodes: set[str]) -> int:
    """How many of the sockets `inodes` process `pid` has open."""
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                n += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
            except OSError:
                pass
    except OSError:
        pass
    return n


def control_pid(gw: Gateway) -> int | None:
    pids = [p for p in children(gw.proc.pid) if title(p) == "modelyard control" and _running(p)]
    assert len(pids) <= 1, pids
    return pids[0] if pids else None


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def established_per_process(port: int, pids: list[int]) -> dict[int, int]:
    """How many established TCP connections to local `port` each process holds a socket of."""
    inodes = {f"socket:[{f[9]}]" for f in _tcp_rows() if f[3] == "01" and _port(f[1]) == port}
    return {pid: _holds(pid, inodes) for pid in pids}


def refused(port: int) -> bool:
    """Whether a connection to 127.0.0.1:`port` is refused (nothing listens there)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:  # e.g. a full backlog: something listens
        return False


# --- start-up failures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid config whose backend is never called (start-up fails before any request)."""
    return write_config(tmp_path_factory.mktemp("startup") / "gateway.yaml",
                        openai_backend("mock", "127.0.0.1", free_port()) + route("main", "alpha"))


def _holder(reuseport: bool) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


@pytest.mark.parametrize("which", ["listener", "admin"])
@pytest.mark.parametrize("reuseport", [True, False], ids=["so_reuseport", "plain"])
def test_port_taken_fails_startup_naming_the_port(conf_file: Path, which: str, reuseport: bool) -> None:
    holder = _holder(reuseport)
    try:
        taken = holder.getsockname()[1]
        port, admin = (taken, free_port()) if which == "listener" else (free_port(), taken)
        proc = run_gateway("--port", str(port), "--admin-port", str(admin), "--config", str(conf_file))
        code = exit_code(proc)
        output = proc.output()
        assert code == 1, output
        assert f"port {taken}" in output and "already in use" in output, output
        assert ("--port" if which == "listener" else "--admin-port") in output, output
        assert "Traceback" not in output, output
        assert "listening on" not in output, output
        # The holder still gets every connection: the gateway did not quietly share the port.
        with socket.create_connection(("127.0.0.1", taken), timeout=2):
            pass
        holder.settimeout(2)
        holder.accept()[0].close()
        if which == "listener":
            assert refused(admin), "the admin port stayed open after a failed start"
    finally:
        holder.close()


def test_broken_config_fails_startup_listing_every_error(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    routes = write_config(conf / "routes.yaml", """\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: bad-route, namespace: team-a}
        spec:
          rules:
            - matches: [{headers: [{type: Prefix, name: x-ai-eg-model, value: alpha}]}]
              backendRefs: [{name: be, weigth: 3}]
        ---
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: regex-route, namespace: team-a}
        spec:
          rules:
            - matches: [{headers: [{type: RegularExpression, name: x-team, value: "("}]}]
              backendRefs: [{name: be}]
        """)
    backends = write_config(conf / "backends.yaml", """\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIServiceBackend
        metadata: {name: be, namespace: team-a}
        spec:
          schema: {name: OpenAi}
        """)
    secret = write_config(conf / "secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: s\n")
    port, admin = free_port(), free_port()
    proc = run_gateway("--port", str(port), "--admin-port", str(admin), "--config", str(conf))
    code = exit_code(proc)
    output = proc.output()
    assert code == 1, output
    expected = [
        (routes, "AIGatewayRoute/team-a/bad-route", "spec.rules[0].matches[0].headers[0].type"),
        (routes, "AIGatewayRoute/team-a/bad-route", "spec.rules[0].backendRefs[0].weigth"),
        (routes, "AIGatewayRoute/team-a/regex-route", "spec.rules[0].matches[0].headers[0].value"),
        (backends, "AIServiceBackend/team-a/be", "spec.schema.name"),
        (backends, "AIServiceBackend/team-a/be", "spec.backendRef"),
        (secret, "", "line 4"),
    ]
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    for file, obj, field in expected:
        assert any(str(file) in line and obj in line and field in line for line in lines), (file, obj, field, output)
    assert len(lines) == len(expected), output
    assert f"{len(expected)} error(s)" in output, output
    assert "Traceback" not in output, output
    assert refused(port) and refused(admin)


# --- graceful shutdown ---------------------------------------------------------------------------


def test_sigterm_lets_a_streaming_request_finish(tmp_path: Path, start_mock, start_gateway) -> None:
    tokens = 20
    mock = start_mock("slow", "--itl-ms", "100")  # a stream of `tokens` tokens lasts ~2 s
    conf = write_config(tmp_path / "gateway.yaml",
                        openai_backend("mock", "127.0.0.1", mock.port) + route("main", "slow"))
    gw = start_gateway("--config", str(conf))
    # /readyz needs one worker accepting; a SIGTERM while the other still starts is another test.
    assert wait_for(lambda: len(listening_workers(gw)) == 2, timeout=10.0), workers(gw)

    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                 headers={"content-type": "application/json", "x-mock-tokens": str(tokens)})
    resp = conn.getresponse()
    assert resp.status == 200
    first = resp.readline()  # the stream has started: the request is in flight
    assert first.startswith(b"data: "), first

    os.kill(gw.proc.pid, signal.SIGTERM)
    # Draining: no new connections, while the stream goes on.
    assert wait_for(lambda: refused(gw.port), timeout=2.0), ("accepting after SIGTERM", listening_workers(gw))
    rest = resp.read()
    conn.close()

    events = [e for e in (first + rest).decode().split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]", events[-3:]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all("error" not in c for c in chunks), chunks
    content = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert len([t for t in content if t]) == tokens, content
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop", chunks[-2:]

    code = gw.proc.popen.wait(15)
    output = gw.proc.output()
    assert code == 0, output
    assert "Traceback" not in output, output
    # One line when draining starts, with what is in flight, and one when it ends; no kill warning.
    assert "draining: 1 request(s) in flight, 1 of them streams" in output, output
    assert re.search(r"drained and stopped in \d+\.\ds", output), output
    assert "refused to gracefully stop" not in output, output
    assert refused(gw.port), "the data-plane port still accepts connections after exit"
    assert refused(gw.admin_port), "the admin port still accepts connections after exit"
    # No worker or control process outlives the supervisor.
    assert wait_for(lambda: not any(_running(p) for p in _session(gw.proc.pid)), timeout=5.0), _session(gw.proc.pid)


def test_sigterm_while_a_worker_is_starting(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "gateway.yaml",
                        openai_backend("mock", "127.0.0.1", free_port()) + route("main", "alpha"))
    gw = Gateway("--config", str(conf), "--grace", "3")
    try:
        old = wait_for(lambda: len(w := listening_workers(gw)) == 2 and w, timeout=10.0)
        assert old, workers(gw)
        # A worker dies and Granian forks a replacement at once: SIGTERM the gateway while it starts.
        os.kill(min(old), signal.SIGKILL)
        new = wait_for(lambda: [p for p in workers(gw) if p not in old], timeout=10.0, interval=0.002)
        assert new, workers(gw)
        os.kill(gw.proc.pid, signal.SIGTERM)
        # Nothing is in flight: every worker stops at once and nothing accepts connections any more.
        assert wait_for(lambda: refused(gw.port), timeout=2.0), ("still accepting after SIGTERM", listening_workers(gw))
        code = gw.proc.popen.wait(30)
    finally:
        gw.stop()
    output = gw.proc.output()
    assert code == 0, output
    assert "refused to gracefully stop" not in output, output
    assert "draining: 0 request(s) in flight, 0 of them streams" in output, output


def _session(sid: int) -> list[int]:
    """Processes of session `sid` (the gateway leads its own: Proc starts it with start_new_session)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[3]) == sid:
                out.append(int(entry.name))
    return out


# --- modelyard demo --------------------------------------------------------------------------------


def test_demo_serves_demo_chat_and_stops_its_mock_on_sigterm() -> None:
    port, admin = free_port(), free_port()
    demo = Proc(modelyard("demo", "--port", str(port), "--admin-port", str(admin)))
    try:
        wait_http(admin, "/readyz", proc=demo, timeout=30)
        found = wait_for(lambda: re.search(r"a mock LLM on 127\.0\.0\.1:(\d+)", demo.output()), timeout=5.0)
        assert found, demo.output()
        wait_http(int(found[1]), "/health", proc=demo, timeout=20)
        status, headers, body = http_request(port, "POST", "/v1/chat/completions",
                                             {"model": "demo-chat", "messages": [{"role": "user", "content": "hello"}]})
        assert status == 200, body
        assert json.loads(body)["model"] == "mock-chat-v1"  # the demo rule's modelNameOverride
        assert headers["x-ai-gateway-backend"] == "default/mock" and headers["x-mock-name"] == "demo-mock"
        # A second demo on the same ports says so before promising them in its "Try:" block.
        again = subprocess.run(modelyard("demo", "--port", str(port), "--admin-port", str(admin)),
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1, again.stdout + again.stderr
        assert f"listener port {port} on 127.0.0.1 is already in use" in again.stderr
        assert "Try:" not in again.stdout, again.stdout

        processes = [p for p in _session(demo.pid) if _running(p)]
        mocks = [p for p in processes if "mock_backend" in title(p) or f"127.0.0.1:{found[1]}" in title(p)]
        assert mocks, {p: title(p) for p in processes}
        os.kill(demo.pid, signal.SIGTERM)
        code = demo.popen.wait(30)
        output = demo.output()
        assert code == 0, output
        assert "Traceback" not in output, output
        # The mock the demo started went with it (checked before Proc.stop kills the process group).
        assert wait_for(lambda: not any(_running(p) for p in processes), timeout=5.0), \
            {p: title(p) for p in processes if _running(p)}
        assert wait_for(lambda: not any(_running(p) for p in _session(demo.pid)), timeout=5.0), _session(demo.pid)
    finally:
        demo.stop()


# --- one running gateway: admin port, secrets, worker and control recovery -------------------------


API_KEY = "sk-modelyard-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def mock() -> Iterator[Mock]:
    m = Mock("life-mock")
    yield m
    m.stop()


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


def test_readyz_answers_503_until_a_table_is_loaded_and_workers_accept() -> None:
    """The admin app on its own: a watcher that has loaded nothing, then one table; a data port open or not."""
    from aiohttp import test_utils

    from modelyard.config.compiler import CompileOptions
    from modelyard.config.watcher import ConfigWatcher
    from modelyard.config.admin import ListenerProbe, build_admin_app

    async def readyz(app) -> tuple[int, str]:  # type: ignore[no-untyped-def]
        async with test_utils.TestClient(test_utils.TestServer(app)) as client:
            resp = await client.get("/readyz")
            return resp.status, await resp.text()

    watcher = ConfigWatcher([], CompileOptions(), None)
    with socket.create_server(("127.0.0.1", 0)) as listener:  # stands in for workers accepting connections
        accepting = ListenerProbe("127.0.0.1", listener.getsockname()[1])
        status, text = asyncio.run(readyz(build_admin_app(watcher, accepting)))
        assert status == 503 and "no routing table" in text, (status, text)

        assert watcher.reload() and watcher.generation == 1  # an empty configuration compiles
        status, text = asyncio.run(readyz(build_admin_app(watcher, accepting)))
        assert status == 200 and "generation 1" in text, (status, text)

    status, text = asyncio.run(readyz(build_admin_app(watcher, ListenerProbe("127.0.0.1", free_port()))))
    assert status == 503 and "not accepting" in text, (status, text)


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
    after = wait_for(lambda: (a := requests_total(gw)).get(key, 0.0) - before >= len(statuses) and a, timeout=5.0)
    assert after and after[key] - before == len(statuses), requests_total(gw)

    # An unknown model is counted, but never becomes a label value.
    assert gw.chat("no-such-model-xyz")[0] == 404
    assert "no-such-model-xyz" not in http_request(gw.admin_port, "GET", "/metrics")[2].decode()
    assert wait_for(lambda: requests_total(gw).get(("", "", "404"), 0) >= 1, timeout=5.0)


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
    after = wait_for(lambda: (h := duration_histogram(gw)).get("count", 0) > before.get("count", 0) and h, timeout=5.0)
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
