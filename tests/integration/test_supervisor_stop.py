"""The supervisor's view of a worker process at shutdown (gateway/process/supervisor.py)."""

from __future__ import annotations

import os
import time

from modelyard.gateway.process.supervisor import _running


def test_a_worker_is_running_until_it_exits_zombie_or_reaped() -> None:
    assert _running(os.getpid())
    assert not _running(None)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    # Exited but not reaped yet (a zombie): already stopped, as when another thread reaps it.
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(pid)
    os.waitpid(pid, 0)
    assert not _running(pid)  # reaped: no such process
