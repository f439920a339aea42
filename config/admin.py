"""The admin port: /healthz, /readyz, /metrics and /config (never a secret)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from modelyard.config.cloud_credentials.refresher import CredentialCollector, CredentialRefresher
from modelyard.config.watcher import ConfigWatcher
from modelyard.core.health import HealthBoard
from modelyard.core import metrics
from modelyard.core.settings import current as current_settings
from modelyard.core.worker_registry import live_workers


def config_view(watcher: ConfigWatcher, refresher: CredentialRefresher | None = None) -> dict[str, Any]:
    """What /config shows: the active table's shape, with credentials reduced to a yes/no, and each
    cloud credential's state (never its value)."""
    table = watcher.table
    view: dict[str, Any] = {
        "generation": watcher.generation,
        "loaded_at": watcher.loaded_at,
        "last_attempt_at": watcher.last_attempt_at,
        "sources": watcher.paths,
        "summary": watcher.summary,
        "errors": [str(e) for e in watcher.errors],
        "warnings": [str(w) for w in watcher.warnings],
        "workers": live_workers(current_settings().workers_dir),
    }
    if table is not None:
        view["routes"] = [{"name": r.name, "rules": r.rules, "costs": [c.metadata_key for c in r.costs]} for r in table.routes]
        view["models"] = [m.id for m in table.models]
        view["backends"] = [
            {
                "name": b.name,
                "schema": b.schema,
                "endpoints": [f"{e.host}:{e.port}" for e in b.endpoints],
                "health": [endpoint_health(watcher.health, e.health) for e in b.endpoints],
                "tls": b.tls is not None,
                "credentials": bool(b.auth_headers) or b.cloud is not None,
                "credential_policy": b.cloud.key if b.cloud is not None else None,
                "error": b.error.message if b.error else None,
            }
            for b in table.backends
        ]
        view["body_limit"] = table.body_limit
    if refresher is not None:
        view["cloud_credentials"] = refresher.view()
    return view


def endpoint_health(board: HealthBoard | None, slot: int) -> dict[str, Any]:
    """An endpoint's passive-health state: serving or ejected, and why."""
    if board is None or slot < 0:
        return {"state": "serving", "tracked": False}
    s = board.state(slot)
    return {
        "state": "ejected" if s.ejected_for > 0 else "serving",
        "ejected_for_s": round(s.ejected_for, 3),
        "consecutive_failures": s.failures,
        "ejections": s.total_ejections,
        "last_failure_status": s.last_status or None,
    }


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger for the admin port, less the traceback it logs for every request a
    client garbled (which aiohttp answers with a 400 itself): one INFO line each instead. An error
    in a handler of ours is still logged as one."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.logger.info("admin port: malformed request refused (%s)", type(exc_info).__name__)
        else:
            self.logger.error(msg, *args, exc_info=exc_info, **kw)


ADMIN_SERVER_LOG = _ServerLog(logging.getLogger("modelyard.admin"), {})


class ListenerProbe:
    """Whether the data-plane port accepts connections, checked at most once a second."""

    def __init__(self, host: str, port: int):
        self.host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        self.port = port
        self._at = 0.0
        self._ok = False

    async def ok(self) -> bool:
        if time.monotonic() - self._at < 1.0 and self._ok:
            return True
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 1.0)
            writer.close()
            self._ok = True
        except (OSError, asyncio.TimeoutError):
            self._ok = False
        self._at = time.monotonic()
        return self._ok


def build_admin_app(watcher: ConfigWatcher, probe: ListenerProbe,
                    refresher: CredentialRefresher | None = None) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if watcher.generation == 0:
            return web.Response(status=503, text="no routing table loaded yet\n")
        if not await probe.ok():
            return web.Response(status=503, text="workers are not accepting connections yet\n")
        pending = refresher.pending() if refresher is not None else []
        if pending:  # until each cloud credential was fetched once (or failed to be), its backends answer 401
            return web.Response(status=503, text=f"fetching the cloud credentials of {', '.join(pending)}\n")
        failed = [w for w in live_workers(current_settings().workers_dir) if w.get("failed") == watcher.generation]
        if failed:
            served = failed[0]["generation"]
            return web.Response(status=503, text=f"{len(failed)} worker(s) could not apply generation "
                                f"{watcher.generation} (see their log) and serve generation {served}\n")
        return web.Response(text=f"ready (generation {watcher.generation})\n")

    async def metrics_handler(_: web.Request) -> web.Response:
        collectors = (metrics.EndpointHealthCollector(watcher.table, watcher.health), CredentialCollector(refresher))
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.render, *collectors)
        return web.Response(body=body, headers={"content-type": "text/plain; version=0.0.4; charset=utf-8"})

    async def config(_: web.Request) -> web.Response:
        return web.json_response(config_view(watcher, refresher))

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/config", config)
    return app
