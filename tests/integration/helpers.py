"""Helpers shared by the integration tests: the gateway's processes and sockets as seen from /proc,
and config files replaced the way editors do."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Gateway, Mock
from tests.support import Proc, modelyard

def serve(gw: Gateway, mocks: dict[str, Mock]) -> Iterator[dict]:
    """A fixture's body (`yield from serve(...)`): {"gw": gw, **mocks}, then the gateway and mocks stopped."""
    try:
        yield {"gw": gw, **mocks}
    finally:
        gw.stop()
        for m in mocks.values():
            m.stop()


def module_mock(name: str, *extra: str) -> Callable[[], Iterator[Mock]]:
    """The module-scoped fixture `mock = module_mock(...)`: one mock backend `name` (with the mock's
    flags `extra`) that the module's tests share, stopped after them."""
    @pytest.fixture(scope="module")
    def mock() -> Iterator[Mock]:
        m = Mock(name, *extra)
        yield m
        m.stop()
    return mock


def replace_atomically(path: Path, text: str) -> None:
    """Write a temporary file beside `path` and rename it over `path`, as editors and kubelet do."""
    tmp = path.with_name(f".{path.name}.tmp-{time.monotonic_ns()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the gateway's processes, from /proc ------------------------------------------------------------


def run_gateway(*args: str) -> Proc:
    """`modelyard run` on 127.0.0.1 with two workers and `args`; the caller waits for it."""
    return Proc(modelyard("run", "--host", "127.0.0.1", "--workers", "2", *args))


def exit_code(proc: Proc, timeout: float = 30.0) -> int:
    code = proc.popen.wait(timeout)
    proc.stop()  # closes the log; nothing left to stop
    return code


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
    return {p: t for p, t in found.items() if t.startswith("modelyard worker-") and running(p)}


def listening_workers(gw: Gateway) -> dict[int, str]:
    """Workers that hold a socket listening on the gateway's port."""
    inodes = {f"socket:[{f[9]}]" for f in tcp_rows() if f[3] == "0A" and _port(f[1]) == gw.port}
    return {pid: t for pid, t in workers(gw).items() if _holds(pid, inodes)}


def exited(pid: int) -> bool:
    """Whether every thread of `pid` is gone (a zombie whose threads all exited holds no sockets)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    return tasks == [str(pid)] and not running(pid)


def tcp_rows() -> list[list[str]]:
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
    pids = [p for p in children(gw.proc.pid) if title(p) == "modelyard control" and running(p)]
    assert len(pids) <= 1, pids
    return pids[0] if pids else None


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def established_per_process(port: int, pids: list[int]) -> dict[int, int]:
    """How many established TCP connections to local `port` each process holds a socket of."""
    inodes = {f"socket:[{f[9]}]" for f in tcp_rows() if f[3] == "01" and _port(f[1]) == port}
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
