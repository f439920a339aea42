"""The supervisor behind `modelyard run`: segment, control process, then Granian workers.

Order matters: the shared segment and the metrics directory exist before any
child starts; the control process must compile the configuration before a
worker is spawned; the listening port is checked first, since Granian binds
with SO_REUSEPORT and would otherwise quietly share a port another server holds.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

from core.health import HEALTH_ENV, HealthBoard
from core.tokenizer import TOKENIZERS_ENV, counter_env_value
from gateway.token_service import TOKENS_SOCKET_ENV
from gateway.worker_env import ACCESS_LOG_ENV, HEADER_LABELS_ENV
from core.shm import TableSegment, default_dir
from gateway.control import FirstLoad, RunOptions, control_main, setup_logging
from gateway.worker_registry import WORKERS_DIR_ENV

DEFAULT_PORT = 1975


class StartupError(RuntimeError):
    pass


def port_free(host: str, port: int) -> bool:
    """Whether `port` can be bound exclusively (no SO_REUSEPORT, so any holder makes it fail)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _require_port(host: str, port: int, what: str) -> None:
    if not port_free(host, port):
        raise StartupError(f"{what} port {port} on {host} is already in use; stop the other server "
                           f"or choose another port with --{'admin-port' if what == 'admin' else 'port'}")


class ControlProcess:
    """Runs control_main in a child, and starts it again if it dies while the gateway runs."""

    def __init__(self, opts: RunOptions):
        self.opts = opts
        self.ctx = multiprocessing.get_context("fork")
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.port: int | None = None
        self.stopping = threading.Event()

    def first_load(self) -> FirstLoad:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_control_entry, args=(self.opts, child), name="modelyard-control")
        self.proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(120):
            raise StartupError("the config watcher did not report within 120 s")
        try:
            return parent.recv()
        except EOFError:
            raise StartupError("the config watcher exited before loading the configuration") from None

    def confirm(self, port: int) -> None:
        self.port = port
        self._conn.send(port)
        self._conn.close()
        threading.Thread(target=self._keep_alive, daemon=True, name="control-monitor").start()

    def _keep_alive(self) -> None:
        while not self.stopping.is_set():
            assert self.proc is not None
            self.proc.join(0.5)
            if self.proc.exitcode is None or self.stopping.is_set():
                continue
            time.sleep(0.5)
            if self.stopping.is_set():
                return
            print(f"modelyard: config watcher exited ({self.proc.exitcode}); restarting it", file=sys.stderr)
            self.proc = self.ctx.Process(target=_control_entry, args=(self.opts, None, self.port),
                                         name="modelyard-control")
            self.proc.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.proc is not None and self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()


def _control_entry(opts: RunOptions, conn, port: int | None = None) -> None:  # type: ignore[no-untyped-def]
    sys.exit(control_main(opts, conn, port))


def run(opts: RunOptions) -> int:
    setup_logging(opts.log_level)
    run_dir = tempfile.mkdtemp(prefix="modelyard-run-", dir=default_dir())
    for sub, env in (("metrics", "PROMETHEUS_MULTIPROC_DIR"), ("workers", WORKERS_DIR_ENV)):
        os.mkdir(os.path.join(run_dir, sub))
        os.environ[env] = os.path.join(run_dir, sub)
    segment = TableSegment.create()
    os.environ["MODELYARD_TABLE"] = segment.path
    os.environ[HEALTH_ENV] = HealthBoard.create(run_dir).path  # removed with the run directory
    # What the workers account and log, set before they are forked.
    os.environ[ACCESS_LOG_ENV] = opts.access_log
    os.environ[HEADER_LABELS_ENV] = json.dumps(opts.header_labels)
    os.environ[TOKENIZERS_ENV] = counter_env_value(opts.tokenizers)
    os.environ[TOKENS_SOCKET_ENV] = os.path.join(run_dir, "tokens.sock")  # served by the control process
    opts.table_path = segment.path
    control = ControlProcess(opts)
    try:
        _require_port(opts.host, opts.admin_port, "admin")
        first = control.first_load()
        for w in first.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if not first.ok:
            for e in first.errors:
                print(f"error: {e}", file=sys.stderr)
            raise StartupError(f"the configuration has {len(first.errors)} error(s); nothing was started")
        port = opts.port or first.listen_port or DEFAULT_PORT
        _require_port(opts.host, port, "listener")
        control.confirm(port)
        _banner(opts, first, port)
        return _serve_workers(opts, port, control)
    except StartupError as e:
        print(f"modelyard: {e}", file=sys.stderr)
        return 1
    finally:
        control.stop()
        segment.close()
        segment.unlink()
        shutil.rmtree(run_dir, ignore_errors=True)


def _banner(opts: RunOptions, first: FirstLoad, port: int) -> None:
    sources = ", ".join(opts.config) if opts.config else "no files"
    print(f"modelyard: loaded {sources} (routing table generation {first.generation})")
    if opts.backend:
        print(f"modelyard: default backend {opts.backend} ({opts.backend_source})")
    for line in first.summary:
        print(f"  {line}")
    shown = "127.0.0.1" if opts.host in ("0.0.0.0", "::") else opts.host
    print(f"modelyard: listening on http://{shown}:{port} ({opts.workers} worker{'s' if opts.workers != 1 else ''}); "
          f"admin on http://{shown}:{opts.admin_port} (/healthz /readyz /metrics /config)", flush=True)


def _serve_workers(opts: RunOptions, port: int, control: ControlProcess) -> int:
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    class _Server(Server):  # type: ignore[misc, valid-type]
        def signal_handler_interrupt(self, *args: object, **kwargs: object) -> None:
            if os.getpid() != self.pid:
                # A worker forked from here runs this copy until it installs its own
                # handlers; still starting, it has nothing in flight and simply ends.
                os._exit(0)
            control.stopping.set()  # shutting down: a control process that exits now stays down
            super().signal_handler_interrupt(*args, **kwargs)

    server = _Server(
        "gateway.app:app",
        address=opts.host,
        port=port,
        interface=Interfaces.RSGI,
        workers=opts.workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        log_level=LogLevels.warning,
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=max(1, int(opts.grace)),
        process_name="modelyard",
    )
    server.serve()
    return 0
