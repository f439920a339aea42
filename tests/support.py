"""Helpers shared by the tests: real processes on 127.0.0.1 stopped by PID, plain HTTP requests,
waiting for a condition, and realistic text to count tokens of."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO.parent / "shared" / "examples"
if not EXAMPLES.is_dir():  # a checkout with shared/ inside it
    EXAMPLES = REPO / "shared" / "examples"


# Under pytest-xdist each worker takes its ports from a range of its own, below the kernel's
# ephemeral range: two workers never pick the same port between a check and its use, and no
# kernel-chosen port (a client's, or a port-0 server's) can take one either.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_PORT_SLICE = 4000
_next_port = itertools.count()


def free_port() -> int:
    if not _XDIST_WORKER:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    base = 12000 + int(_XDIST_WORKER.removeprefix("gw") or 0) * _PORT_SLICE
    for _ in range(_PORT_SLICE):
        port = base + next(_next_port) % _PORT_SLICE
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}..{base + _PORT_SLICE}")


class Proc:
    """A child process with its output captured to a file, stopped by PID."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None):
        self.args = list(args)
        full_env = dict(os.environ)
        full_env.pop("OPENAI_BASE_URL", None)
        full_env.pop("OPENAI_API_KEY", None)
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        self.log_path = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"modelyard-test-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=str(REPO),
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Reap anything the process group left behind.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        return self.popen.returncode


def modelyard(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelyard.gateway", *args]


def http_request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
    timeout: float = 10.0, raw: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP/1.1 request; returns (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    hdrs = {"content-type": "application/json", **(headers or {})}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_http(port: int, path: str = "/", timeout: float = 20.0, proc: Proc | None = None, status: int | None = 200) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | str = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"process exited early ({proc.popen.returncode}):\n{proc.output()}")
        try:
            code, _, _ = http_request(port, "GET", path, timeout=2)
            if status is None or code == status:
                return
            last = f"status {code}"
        except OSError as e:
            last = e
        time.sleep(0.05)
    out = proc.output() if proc else ""
    raise TimeoutError(f"127.0.0.1:{port}{path} not ready: {last}\n{out}")


def wait_for(pred, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """pred() once it is truthy; its last value after `timeout` seconds. The timeout is a guard
    against a hang on a loaded machine (the suite runs in parallel), never a speed limit."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(interval)


class HealthPoller:
    """/healthz on an admin port every `every` seconds from a thread until closed: each poll's
    latency kept, and each that failed or did not answer 200 within `timeout` as a failure."""

    def __init__(self, port: int, every: float = 0.1, timeout: float = 10.0):
        self.port, self.every, self.timeout = port, every, timeout
        self.answers = 0
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                status = http_request(self.port, "GET", "/healthz", timeout=self.timeout)[0]
                if status == 200:
                    self.answers += 1
                else:
                    self.failures.append(f"status {status}")
            except OSError as e:
                self.failures.append(repr(e))
            self.latencies.append(time.monotonic() - start)
            self._stop.wait(self.every)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)


def realistic_text(size: int, seed: int = 7) -> str:
    """Prose, code and markup from this repository, shuffled by line: about `size` characters."""
    lines = [line for p in ("README.md", "core/tokenizer.py", "gateway/app.py", "core/token_endpoints.py")
             for line in (REPO / p).read_text().splitlines(keepends=True)]
    rng = random.Random(seed)
    out: list[str] = []
    n = 0
    while n < size:
        line = rng.choice(lines)
        out.append(line)
        n += len(line)
    return "".join(out)[:size]


@contextmanager
def worker_on_segment(tmp_path: Path, monkeypatch: Any, first_table: bytes) -> Iterator[tuple[Any, Any, Any]]:
    """(app, segment, loop): a GatewayApp as a worker process holds it, on a new table segment that
    publishes `first_table` as generation 1 (the test calls app.__rsgi_init__(loop)). Afterwards its
    tasks are cancelled, the loop closed, the worker unregistered and the segment closed."""
    import asyncio

    from modelyard.core import worker_registry
    from modelyard.core.settings import SETTINGS_ENV, Settings
    from modelyard.core.shm import TableSegment
    from modelyard.gateway.app import GatewayApp

    segment = TableSegment.create(str(tmp_path / "table"), capacity=1 << 16)
    (tmp_path / "workers").mkdir()
    settings = Settings(table=segment.path, workers_dir=str(tmp_path / "workers"))
    monkeypatch.setenv(SETTINGS_ENV, settings.encode())
    segment.publish(first_table, 1)
    loop = asyncio.new_event_loop()
    try:
        yield GatewayApp(), segment, loop
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        worker_registry.forget(settings.workers_dir)
        segment.close()
