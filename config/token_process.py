"""The tokens process: the token service (modelyard.config.token_service) in a child of the control process.

The control process binds the Unix socket and hands the listening descriptor to the child, so
workers' connections wait in its backlog, not fail, while a child starts. A child that dies is
started again (a log line; backoff while it keeps dying young); one that recycled itself (RSS
over RECYCLE_RSS) is replaced at once. The child dies with the control process (PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys

# The child's settings (tokenizers, log level, --max-count-bytes) come in MODELYARD_SETTINGS, inherited;
# these two are its handshake with the control process that spawned it.
FD_ENV = "MODELYARD_TOKENS_FD"  # the inherited listening socket
PARENT_ENV = "MODELYARD_TOKENS_PARENT"  # the control process's pid: without it, the child exits
RECYCLE_RSS_ENV = "MODELYARD_TOKENS_RECYCLE_RSS"  # bytes; overrides token_service.RECYCLE_RSS (tests)
RECYCLED = 75  # the child's exit status after recycling itself
MIN_BACKOFF, MAX_BACKOFF = 0.2, 10.0  # seconds before restarting a child that died
STABLE = 30.0  # seconds a child must live for its death to reset the backoff
STOP_WAIT = 3.0  # seconds a stopped child gets before SIGKILL
TITLE = "modelyard tokens"

log = logging.getLogger("modelyard.tokens")


class TokenProcess:
    """Control-process side: owns the socket at `path`, keeps a tokens process serving it."""

    def __init__(self, path: str):
        self.path = path
        if os.path.exists(path):
            os.unlink(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(socket.SOMAXCONN)
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep_running())

    async def _spawn(self) -> asyncio.subprocess.Process:
        fd = self.listener.fileno()
        env = {**os.environ, FD_ENV: str(fd), PARENT_ENV: str(os.getpid()),
               "MALLOC_ARENA_MAX": "2"}  # glibc's per-thread arenas would each keep freed memory
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "modelyard.config.token_process", env=env,
                                                    pass_fds=(fd,), stdin=asyncio.subprocess.DEVNULL)

    async def _keep_running(self) -> None:
        loop = asyncio.get_running_loop()
        delay = MIN_BACKOFF
        while True:
            started = loop.time()
            self.proc = await self._spawn()
            code = await self.proc.wait()
            if code == RECYCLED:
                log.info("tokens process %d recycled itself (RSS over its bound); starting a fresh one", self.proc.pid)
                delay = MIN_BACKOFF
                continue
            delay = MIN_BACKOFF if loop.time() - started > STABLE else min(2 * delay, MAX_BACKOFF)
            how = f"signal {-code}" if code < 0 else f"status {code}"
            log.warning("tokens process %d exited (%s); restarting it in %.1fs", self.proc.pid, how, delay)
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_WAIT)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the control process dies, however it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent check below and the control's stop remain
        pass
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)


def main() -> int:
    """Entry point of the tokens process (python -m modelyard.config.token_process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us in order
    parent = int(os.environ.get(PARENT_ENV) or 0)
    if not parent:
        print("modelyard tokens: started outside a control process", file=sys.stderr)
        return 2
    _die_with_parent(parent)
    import setproctitle

    setproctitle.setproctitle(TITLE)
    from modelyard.core.settings import current as current_settings
    from modelyard.core.tokenizer import TokenCounter
    from modelyard.config.token_service import RECYCLE_RSS, serve

    settings = current_settings()
    level = settings.log_level.upper()  # not modelyard.config.control's helper: it imports aiohttp
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    listener = socket.socket(fileno=int(os.environ[FD_ENV]))
    recycle_rss = int(os.environ.get(RECYCLE_RSS_ENV) or RECYCLE_RSS)
    asyncio.run(serve(listener, TokenCounter(settings.tokenizers), recycle_rss=recycle_rss))
    log.info("tokens process %d: RSS over its bound; exiting after its calls in flight", os.getpid())
    return RECYCLED


if __name__ == "__main__":
    sys.exit(main())
