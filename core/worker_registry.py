"""Which routing-table generation each worker serves, for the admin port.

Each worker writes its generation to a file named after its PID in the run
directory's `workers/` folder when it adopts a new table (rare, off the request
path; the folder is Settings.workers_dir, "" for none). The admin server lists live PIDs only, so a worker that died and was
respawned shows up once. A reload is complete, for every client, once all
workers report the watcher's generation.
"""

from __future__ import annotations

import mmap
import os

def report(folder: str, generation: int, failed: int = 0) -> None:
    """The generation this worker serves and, if any, a newer one it failed to apply."""
    if not folder:
        return
    pid = os.getpid()
    tmp = os.path.join(folder, f".{pid}.tmp")
    with open(tmp, "w") as f:
        f.write(f"{generation} {failed}" if failed else str(generation))
    os.replace(tmp, os.path.join(folder, str(pid)))


def load_counters(folder: str) -> memoryview:
    """This worker's [requests, streams] in flight: two int64 in a shared file (`load.PID`), so that
    the supervisor reads exact numbers when draining starts, for the price of a memory store."""
    if not folder:
        return memoryview(bytearray(16)).cast("q")
    path = os.path.join(folder, f"load.{os.getpid()}")
    with open(path, "w+b") as f:
        f.truncate(16)
        return memoryview(mmap.mmap(f.fileno(), 16)).cast("q")


def load(folder: str) -> tuple[int, int]:
    """Requests and streams in flight in the live workers."""
    requests = streams = 0
    for name in os.listdir(folder):
        pid = name.removeprefix("load.")
        if pid == name or not pid.isdigit() or not _alive(int(pid)):
            continue
        try:
            with open(os.path.join(folder, name), "rb") as f:
                r, s = memoryview(f.read(16)).cast("q")
        except (OSError, TypeError, ValueError):
            continue
        requests, streams = requests + r, streams + s
    return requests, streams


def forget(folder: str) -> None:
    if folder:
        for name in (str(os.getpid()), f"load.{os.getpid()}"):
            try:
                os.unlink(os.path.join(folder, name))
            except FileNotFoundError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_workers(folder: str) -> list[dict[str, int]]:
    """[{pid, generation[, failed]}] of the workers alive now, by PID."""
    found: list[dict[str, int]] = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return found
    for name in names:
        if not name.isdigit() or not _alive(int(name)):
            continue
        try:
            with open(os.path.join(folder, name)) as f:
                fields = [int(x) for x in f.read().split()] or [0]
            found.append({"pid": int(name), "generation": fields[0], **({"failed": fields[1]} if fields[1:] else {})})
        except (FileNotFoundError, ValueError):
            continue
    return sorted(found, key=lambda w: w["pid"])
