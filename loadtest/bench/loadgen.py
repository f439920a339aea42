"""Load for the benchmark: wrk for throughput, an in-process prober for latency at concurrency 1.

wrk (Debian's package) is a C load generator, so it is not the bottleneck. When
it is missing, a built-in asyncio generator on the same HTTP/1.1 client as the
gateway stands in (much slower, and the report says so). The prober sends one
request at a time on one keep-alive connection and times the response head,
the first body bytes (time to first token for a stream) and the end.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MESSAGES = [{"role": "user", "content": "Say hello to the benchmark."}]


def chat_body(model: str, stream: bool, pad_bytes: int = 0) -> bytes:
    messages = MESSAGES if not pad_bytes else [{"role": "user", "content": "x" * pad_bytes}]
    return json.dumps({"model": model, "messages": messages, "stream": stream, "max_tokens": 20}).encode()


@dataclass
class LoadResult:
    rps: float
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    errors: int = 0  # non-2xx answers plus socket errors
    tool: str = "wrk"


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNIT[m.group(2)] if m else 0.0


FORCE_PYTHON = False  # set by `modelyard bench --load-tool python`


def have_wrk() -> bool:
    return not FORCE_PYTHON and shutil.which("wrk") is not None


def _lua(body: bytes, model: str, delay_ms: float) -> str:
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(body.decode())}",
        'wrk.headers["Content-Type"] = "application/json"',
        # Envoy routes by this header (its AI filter would set it from the body); the others ignore it.
        f'wrk.headers["x-ai-eg-model"] = {json.dumps(model)}',
    ]
    if delay_ms:
        lines.append(f"function delay() return {delay_ms:g} end")
    return "\n".join(lines) + "\n"


def wrk(url: str, body: bytes, model: str, connections: int, seconds: float, workdir: Path,
        delay_ms: float = 0.0, cores: list[int] | None = None) -> LoadResult:
    script = workdir / f"wrk-{abs(hash((body, delay_ms)))}.lua"
    script.write_text(_lua(body, model, delay_ms))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url]
    if cores:
        argv = ["taskset", "-c", ",".join(map(str, cores)), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    if rps is None:
        raise RuntimeError(f"wrk printed no result for {url}:\n{out}")
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return LoadResult(float(rps.group(1)), _ms(pct.get("50", "")), _ms(pct.get("90", "")), _ms(pct.get("99", "")),
                      int(total.group(1)) if total else 0, errors)


def python_load(url: str, body: bytes, model: str, connections: int, seconds: float,
                delay_ms: float = 0.0) -> LoadResult:
    """The stand-in for wrk: `connections` keep-alive loops for `seconds`."""
    return asyncio.run(_python_load(url, body, connections, seconds, delay_ms))


async def _python_load(url: str, body: bytes, connections: int, seconds: float, delay_ms: float) -> LoadResult:
    from modelyard.gateway.http1 import Pool, UpstreamError

    host, port, path = _split(url)
    pool = Pool(host, port, None, None, asyncio.get_running_loop())
    head = _head(path, host, port, len(body))
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal errors
        conn = await pool.connect()
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                conn.send(head, body)
                status = await conn.response()
                await conn.read_all(1 << 30)
            except UpstreamError:
                errors += 1
                conn = await pool.connect()
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            if status >= 300:
                errors += 1
            if delay_ms:
                await asyncio.sleep(delay_ms / 1000)
        conn.abort()

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    p50, p90, p99 = _percentiles(latencies, (50, 90, 99))
    return LoadResult(len(latencies) / elapsed, p50, p90, p99, len(latencies), errors, tool="python")


def load(url: str, body: bytes, model: str, connections: int, seconds: float, workdir: Path,
         delay_ms: float = 0.0) -> LoadResult:
    if have_wrk():
        return wrk(url, body, model, connections, seconds, workdir, delay_ms)
    return python_load(url, body, model, connections, seconds, delay_ms)


def _split(url: str) -> tuple[str, int, str]:
    m = re.fullmatch(r"http://([^/:]+):(\d+)(/.*)", url)
    if m is None:
        raise ValueError(f"not a plain http URL: {url}")
    return m.group(1), int(m.group(2)), m.group(3)


def _head(path: str, host: str, port: int, length: int, model: str = "") -> bytes:
    extra = f"x-ai-eg-model: {model}\r\n" if model else ""
    return (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n{extra}"
            f"content-length: {length}\r\n\r\n").encode()


def _percentiles(values: list[float], points: tuple[int, ...]) -> list[float]:
    if not values:
        return [0.0 for _ in points]
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] for p in points]


@dataclass
class ProbeResult:
    """Per-request times in ms at concurrency 1: total, and to the first body bytes (TTFT for streams)."""

    total: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        t50, t99 = _percentiles(self.total, (50, 99))
        f50, f99 = _percentiles(self.first, (50, 99))
        return {"p50_ms": t50, "p99_ms": t99, "first_p50_ms": f50, "first_p99_ms": f99, "n": len(self.total)}


def probe(url: str, body: bytes, model: str, requests: int, warmup: int = 50) -> ProbeResult:
    return asyncio.run(_probe(url, body, model, requests, warmup))


async def _probe(url: str, body: bytes, model: str, requests: int, warmup: int) -> ProbeResult:
    from modelyard.gateway.http1 import Pool, UpstreamError

    host, port, path = _split(url)
    pool = Pool(host, port, None, None, asyncio.get_running_loop())
    head = _head(path, host, port, len(body), model)
    result = ProbeResult()
    conn = await pool.connect()
    for i in range(warmup + requests):
        t0 = time.perf_counter()
        try:
            conn.send(head, body)
            status = await conn.response()
            first = await conn.read_chunk()
            t1 = time.perf_counter()
            rest = await conn.read_all(1 << 30)
        except UpstreamError as e:
            result.failures.append(str(e))
            conn = await pool.connect()
            continue
        t2 = time.perf_counter()
        if status != 200 or not first:
            result.failures.append(f"status {status}: {(first or b'')[:200]!r}")
        elif b'"stream": true' in body and not (first + rest).rstrip().endswith(b"data: [DONE]"):
            result.failures.append("stream did not end with data: [DONE]")
        if not conn.keep_alive:
            conn.abort()
            conn = await pool.connect()
        if i >= warmup:
            result.total.append((t2 - t0) * 1000)
            result.first.append((t1 - t0) * 1000)
    conn.abort()
    return result
