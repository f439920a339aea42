"""The admin app in-process (no gateway processes): /readyz before and after a table, with the data
port accepting or not."""

from __future__ import annotations

import asyncio
import socket

from tests.support import free_port


def test_readyz_answers_503_until_a_table_is_loaded_and_workers_accept() -> None:
    """The admin app on its own: a watcher that has loaded nothing, then one table; a data port open or not."""
    from aiohttp import test_utils

    from modelyard.config.compiler import CompileOptions
    from modelyard.config.watcher import ConfigWatcher
    from modelyard.config.admin import ListenerProbe, build_admin_app

    async def readyz(app) -> tuple[int, str]:  # type: ignore[no-untyped-def]
        async with test_utils.TestClient(test_utils.TestServer(app)) as client:
            resp = await client.get("/readyz")
            return resp.status, await resp.text()

    watcher = ConfigWatcher([], CompileOptions(), None)
    with socket.create_server(("127.0.0.1", 0)) as listener:  # stands in for workers accepting connections
        accepting = ListenerProbe("127.0.0.1", listener.getsockname()[1])
        status, text = asyncio.run(readyz(build_admin_app(watcher, accepting)))
        assert status == 503 and "no routing table" in text, (status, text)

        assert watcher.reload() and watcher.generation == 1  # an empty configuration compiles
        status, text = asyncio.run(readyz(build_admin_app(watcher, accepting)))
        assert status == 200 and "generation 1" in text, (status, text)

    status, text = asyncio.run(readyz(build_admin_app(watcher, ListenerProbe("127.0.0.1", free_port()))))
    assert status == 503 and "not accepting" in text, (status, text)
