"""The gateway as a set of processes starting and stopping: start-up failures, graceful shutdown,
and `modelyard demo`.

`modelyard run` is a supervisor with a control process (config watcher and
admin server, process title "modelyard control") and Granian workers
("modelyard worker-N"). These tests start it for real on 127.0.0.1 and look at
it from outside: exit codes and output, HTTP, and /proc.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Gateway, openai_backend, route, write_config
from tests.integration.helpers import exit_code, listening_workers, refused, run_gateway, running, title, workers
from tests.support import Proc, free_port, http_request, modelyard, wait_for, wait_http


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
    assert wait_for(lambda: refused(gw.port), timeout=30.0), ("accepting after SIGTERM", listening_workers(gw))
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
    assert "refused to gracefully stop" not in output and "did not stop within" not in output, output
    assert refused(gw.port), "the data-plane port still accepts connections after exit"
    assert refused(gw.admin_port), "the admin port still accepts connections after exit"
    # No worker or control process outlives the supervisor.
    assert wait_for(lambda: not any(running(p) for p in _session(gw.proc.pid)), timeout=30.0), _session(gw.proc.pid)


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
        assert wait_for(lambda: refused(gw.port), timeout=30.0), ("still accepting after SIGTERM", listening_workers(gw))
        code = gw.proc.popen.wait(30)
    finally:
        gw.stop()
    output = gw.proc.output()
    assert code == 0, output
    assert "refused to gracefully stop" not in output and "did not stop within" not in output, output
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
        found = wait_for(lambda: re.search(r"a mock LLM on 127\.0\.0\.1:(\d+)", demo.output()), timeout=30.0)
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

        processes = [p for p in _session(demo.pid) if running(p)]
        mocks = [p for p in processes if "mock_backend" in title(p) or f"127.0.0.1:{found[1]}" in title(p)]
        assert mocks, {p: title(p) for p in processes}
        os.kill(demo.pid, signal.SIGTERM)
        code = demo.popen.wait(30)
        output = demo.output()
        assert code == 0, output
        assert "Traceback" not in output, output
        # The mock the demo started went with it (checked before Proc.stop kills the process group).
        assert wait_for(lambda: not any(running(p) for p in processes), timeout=30.0), \
            {p: title(p) for p in processes if running(p)}
        assert wait_for(lambda: not any(running(p) for p in _session(demo.pid)), timeout=30.0), _session(demo.pid)
    finally:
        demo.stop()


def test_the_process_shell_does_not_import_prometheus_client_before_its_multiprocess_folder_is_set() -> None:
    """prometheus-client picks process-local or multiprocess values when first imported: imported by
    the supervisor before it sets PROMETHEUS_MULTIPROC_DIR, every worker's metrics would stay in
    the worker, and /metrics would show none of them."""
    import subprocess
    import sys

    code = ("import sys, modelyard.gateway.process.cli, modelyard.gateway.process.supervisor, "
            "modelyard.config.control; print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
