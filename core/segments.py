"""Where a running gateway's shared segments live: one run directory, in /dev/shm where it exists.

The supervisor makes the directory and hands the paths to every process in Settings
(core.settings); nothing else builds these names. Removing the directory removes them all.
"""

from __future__ import annotations

import os

import msgspec

RUN_DIR_PREFIX = "modelyard-run-"

TABLE = "table"  # the routing table (core.shm.TableSegment): the control process writes, workers read
HEALTH_BOARD = "health"  # passive health of endpoints (core.health.HealthBoard): every process writes
WORKERS = "workers"  # folder: each worker's generation and load (core.worker_registry)
METRICS = "metrics"  # folder: prometheus-client's multiprocess files (PROMETHEUS_MULTIPROC_DIR)
TOKENS_SOCKET = "tokens.sock"  # the tokens process's Unix socket (config.token_process)
# Reserved for the credentials segment (core/credentials.py, the providers change): take this name.
CREDENTIALS = "credentials"


class RunPaths(msgspec.Struct, frozen=True):
    run_dir: str
    table: str
    health_board: str
    workers: str
    metrics: str
    tokens_socket: str
    credentials: str


def run_paths(run_dir: str) -> RunPaths:
    def at(name: str) -> str:
        return os.path.join(run_dir, name)

    return RunPaths(run_dir, at(TABLE), at(HEALTH_BOARD), at(WORKERS), at(METRICS), at(TOKENS_SOCKET), at(CREDENTIALS))
