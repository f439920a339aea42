"""The failover drill of `profiles.py`: a backend stopped and continued mid-run, and the profile that
counts the errors it costs (`FailoverDrillUser`; the guide is in `profiles.py`'s docstring).

With `MODELYARD_DRILL_PID` set, a greenlet SIGSTOPs that process and its descendants
`--drill-after` seconds into the test and SIGCONTs them `--drill-down` seconds later; whatever it
stopped is continued on test stop, on quitting and at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import time
from collections import Counter
from typing import Any

import gevent
from locust import events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from modelyard.loadtest.bench.profile_common import DRILL_PID_ENV, _fire, _json, _OpenAIUser, _openai_error, _opt, _short

log = logging.getLogger("modelyard.profiles")

FAILOVER_STATUSES = frozenset({502, 503, 504})


class _Drill:
    """The state of this node's drill for the current test."""

    def __init__(self) -> None:
        self.greenlet: gevent.Greenlet | None = None
        self.stopped: list[int] = []
        self.reset()

    def reset(self) -> None:
        self.pid: int | None = None  # None: a manual drill, the whole run is the window
        self.window_start = 0.0  # time.time() of the planned or actual SIGSTOP
        self.up_at = 0.0  # time.time() of the planned or actual SIGCONT
        self.grace = 5.0
        self.expected: Counter[int] = Counter()
        self.recovery_ms: float | None = None

    def in_window(self, started: float, ended: float) -> bool:
        if self.pid is None:
            return True
        return started <= self.up_at + self.grace and ended >= self.window_start

    def resume(self) -> None:
        """SIGCONT whatever this node stopped (idempotent)."""
        pids, self.stopped = self.stopped, []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            except OSError as e:
                log.error("failover drill: could not continue PID %d: %s", pid, e)
        if pids:
            self.up_at = time.time()
            log.warning("failover drill: SIGCONT sent to %s", pids)


DRILL = _Drill()
atexit.register(DRILL.resume)


def _process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, parents first."""
    try:
        import psutil  # a dependency of Locust
    except ImportError:
        return [pid]
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _run_drill(pid: int, after: float, down: float) -> None:
    try:
        gevent.sleep(after)
        tree = _process_tree(pid)
        if not tree:
            log.error("failover drill: no process with PID %d; no drill", pid)
            return
        DRILL.window_start = time.time()
        for p in tree:
            try:
                os.kill(p, signal.SIGSTOP)
                DRILL.stopped.append(p)
            except ProcessLookupError:
                pass
        log.warning("failover drill: SIGSTOP sent to %s for %gs", DRILL.stopped, down)
        gevent.sleep(down)
    finally:
        DRILL.resume()


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw: Any) -> None:
    _stop_drill()
    DRILL.reset()
    raw = os.environ.get(DRILL_PID_ENV, "").strip()
    if not raw:
        return
    try:
        pid = int(raw)
    except ValueError:
        log.error("failover drill: %s=%r is not a PID; no drill", DRILL_PID_ENV, raw)
        return
    after = float(_opt(environment, "drill_after", 3.0))
    down = float(_opt(environment, "drill_down", 3.0))
    DRILL.pid = pid
    DRILL.grace = float(_opt(environment, "drill_grace", 5.0))
    DRILL.window_start = time.time() + after
    DRILL.up_at = DRILL.window_start + down
    if isinstance(environment.runner, WorkerRunner):
        return  # the master (or a local runner) sends the signals
    DRILL.greenlet = gevent.spawn(_run_drill, pid, after, down)


def _stop_drill() -> None:
    if DRILL.greenlet is not None:
        DRILL.greenlet.kill(block=True, timeout=5)
        DRILL.greenlet = None
    DRILL.resume()


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kw: Any) -> None:
    _stop_drill()
    if DRILL.pid is not None or DRILL.expected:
        recovery = f"{DRILL.recovery_ms:.0f} ms" if DRILL.recovery_ms is not None else "not seen"
        log.info("failover drill: %d expected errors %s; recovery after the restart: %s",
                 sum(DRILL.expected.values()), dict(DRILL.expected), recovery)


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kw: Any) -> None:
    _stop_drill()


class FailoverDrillUser(_OpenAIUser):
    """ChatUser's requests; during the drill window 502/503/504 OpenAI errors count as `failover-errors`."""

    @task
    def chat_through_the_drill(self) -> None:
        started = time.time()
        with self.client.post(self.path, json=self.body(self.model), headers=self.headers,
                              name="/v1/chat/completions", catch_response=True) as resp:
            ended = time.time()
            status = resp.status_code
            if status in FAILOVER_STATUSES:
                err = _openai_error(_json(resp))
                if err is None:
                    resp.failure(f"a {status} without an OpenAI-style error body: {_short(resp)}")
                elif not DRILL.in_window(started, ended):
                    resp.failure(f"{status} {err.get('code')} outside the drill window: {err.get('message')}")
                else:
                    DRILL.expected[status] += 1
                    resp.request_meta["name"] = "failover-errors"
                    resp.success()
                return
            problem = self.check_completion(resp)
            if problem:
                resp.failure(problem)
                return
            resp.success()
        if DRILL.pid is not None and DRILL.recovery_ms is None and not DRILL.stopped and started >= DRILL.up_at:
            DRILL.recovery_ms = (ended - DRILL.up_at) * 1000
            _fire(self.environment, "DRILL", "recovery", DRILL.recovery_ms)
