"""Token counting for all workers in one place: the tokens process, over a Unix socket.

A loaded tokenizer takes ~150 MB (Qwen's vocabulary), so one copy serves every
worker instead of one per worker, and its CPU time is spent outside the
processes that proxy. Counting is needed only when a backend reports no usage
and for the /tokenize and count_tokens endpoints, so the round trip is off the
common path. Frames are a 4-byte length and a msgpack array, both ways.

The service runs in its own process (modelyard.config.token_process), a child of the
control process, which owns the listening socket: a tokenizer that crashes or
runs out of memory takes only the counting down, and callers wait in the
socket's backlog while a fresh process starts. At most MAX_CALLS calls run at
once; the others wait on their sockets, their bodies unread. Past RECYCLE_RSS
the process finishes its calls in flight and exits, and the control process
starts a fresh one: that returns what the allocator kept.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modelyard.core import token_endpoints, token_estimate
from modelyard.core.token_frames import FRAME_LEN as _LEN
from modelyard.core.token_frames import TokenServiceError
from modelyard.core.token_frames import decode as _decode, encode as _encode

MAX_CALLS = 2  # calls encoding at once: each may hold a few times its input (up to --max-count-bytes)
RECYCLE_RSS = 1 << 30  # bytes: past this the tokens process exits after its calls in flight, and is replaced
_TRIM_AFTER = 1 << 20  # bytes of a call after which freed memory is handed back to the OS
_PAGE = os.sysconf("SC_PAGE_SIZE")



# -- the service (tokens process) ---------------------------------------------------------------


def _handle(counter: Any, call: list[Any]) -> Any:
    from modelyard.core.settings import current as current_settings

    op = call[0]
    if op == "tokenize":
        return list(token_endpoints.tokenize(counter, call[1]))
    if op == "count_tokens":
        return list(token_endpoints.count_tokens(counter, call[1]))
    if op == "estimate":  # model, request body, answer bytes, stream, operation
        usage = token_estimate.count_usage(counter, call[1], call[2], call[3], call[4], call[5], current_settings().max_count_bytes)
        return [usage.input_tokens, usage.output_tokens]
    raise TokenServiceError(f"unknown call {op!r}")


def _answer(counter: Any, frame: bytes) -> bytes:
    """One call's reply frame; runs in a pool thread (the tokenizers release the GIL)."""
    try:
        reply = [True, _handle(counter, _decode(frame))]
    except Exception as e:  # the caller logs it; the service goes on
        reply = [False, f"{type(e).__name__}: {e}"]
    data = _encode(reply)
    del reply
    if len(frame) + len(data) > _TRIM_AFTER:
        _trim()
    return _LEN.pack(len(data)) + data


def _trim() -> None:
    """Give freed heap back to the OS: glibc keeps it otherwise, and RSS would stay at the peak."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def rss() -> int:
    """This process's resident set, in bytes."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE



async def serve(listener: socket.socket, counter: Any, max_calls: int = MAX_CALLS,
                recycle_rss: int = RECYCLE_RSS) -> None:
    """Answer counting calls on `listener` until this process's RSS passes `recycle_rss`; returns
    once the calls in flight are answered (connections then close, and callers retry elsewhere)."""
    pool = ThreadPoolExecutor(max_calls, thread_name_prefix="tokens")
    slots = asyncio.Semaphore(max_calls)
    recycle = asyncio.Event()
    writers: set[asyncio.StreamWriter] = set()
    loop = asyncio.get_running_loop()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            while True:
                size = _LEN.unpack(await reader.readexactly(_LEN.size))[0]
                async with slots:  # the body is read only once a slot is free: waiting calls cost nothing here
                    if recycle.is_set():
                        return
                    reply = await loop.run_in_executor(pool, _answer, counter, await reader.readexactly(size))
                    writer.write(reply)
                    del reply
                    await writer.drain()
                    if rss() > recycle_rss:
                        recycle.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_unix_server(connection, sock=listener)
    await recycle.wait()
    server.close()  # the control process's copy of the socket keeps the backlog for the next process
    for _ in range(max_calls):  # the calls in flight finish
        await slots.acquire()
    for writer in list(writers):
        writer.close()
    pool.shutdown(wait=False)
