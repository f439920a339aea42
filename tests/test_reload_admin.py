"""The admin port answers while the control process reloads a 10,000-rule configuration.

Reading, parsing and compiling a reload run away from the event loop that serves
/healthz, /readyz and /metrics, so a kubelet's probes do not time out during one.
Every poll must answer within a generous timeout; the worst gap is printed, not asserted.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.targets import models_config
from tests.conftest import Gateway, Mock
from tests.support import http_request, wait_for

RULES = 10_000
POLL_EVERY = 0.05
POLL_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def mock() -> Iterator[Mock]:
    m = Mock("reload-admin-mock")
    yield m
    m.stop()


class HealthPoller:
    """/healthz every POLL_EVERY seconds from a thread, each answer's latency (or error) kept."""

    def __init__(self, admin_port: int):
        self.port = admin_port
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                status, _, _ = http_request(self.port, "GET", "/healthz", timeout=POLL_TIMEOUT)
                if status != 200:
                    self.failures.append(f"status {status}")
            except OSError as e:
                self.failures.append(repr(e))
            self.latencies.append(time.monotonic() - start)
            self._stop.wait(POLL_EVERY)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _generation_after(gw: Gateway, generation: int) -> bool:
    return gw.config(60)["generation"] > generation


def test_healthz_answers_during_a_10000_rule_reload(tmp_path: Path, mock: Mock) -> None:
    conf = tmp_path / "models.yaml"
    conf.write_text(models_config(mock.port, 10))
    gw = Gateway("--config", str(tmp_path), workers=1)
    poller = None
    try:
        generation = gw.config()["generation"]
        poller = HealthPoller(gw.admin_port)
        time.sleep(0.3)
        _replace(conf, models_config(mock.port, RULES))
        assert wait_for(lambda: _generation_after(gw, generation), timeout=120, interval=0.2), gw.proc.output()
        time.sleep(0.3)
        poller.close()
        print(f"/healthz during the reload: {len(poller.latencies)} polls, worst {max(poller.latencies) * 1000:.0f} ms")
        assert not poller.failures, poller.failures
        assert len(gw.config()["models"]) == RULES
    finally:
        if poller is not None:
            poller.close()
        code = gw.stop()
    assert code == 0, gw.proc.output()


def test_a_change_during_a_long_reload_wins(tmp_path: Path, mock: Mock) -> None:
    conf = tmp_path / "models.yaml"
    conf.write_text(models_config(mock.port, 10))
    gw = Gateway("--config", str(tmp_path), workers=1)
    try:
        generation = gw.config()["generation"]
        _replace(conf, models_config(mock.port, RULES))
        time.sleep(0.3)  # the long reload is under way (or about to be): this change comes during it
        _replace(conf, models_config(mock.port, 3))
        expected = ["model-0", "model-1", "model-2"]
        assert wait_for(lambda: sorted(gw.config(60)["models"]) == expected, timeout=120, interval=0.2), \
            gw.proc.output()
        assert gw.config()["generation"] > generation
        time.sleep(1.5)  # nothing older is published after it
        assert sorted(gw.config()["models"]) == expected
        assert wait_for(gw.in_sync, timeout=30)
        assert gw.chat("model-2")[0] == 200
        assert gw.chat("model-3")[0] == 404
    finally:
        code = gw.stop()
    assert code == 0, gw.proc.output()
