"""The run the dashboard is rendered from: two mock backends and a gateway under a mixed load with chaos.

`System` starts two mock backends (`fast`: streams with a 30 ms first token and 5 ms between
tokens; `quiet`: reports no token usage, streams with an 80 ms first token and 40 ms between
tokens, and fails 3 % of requests) and `modelyard run --workers N` on a config written to a
temporary folder: two routes, five models, one with a priority-1 fallback, one split by weight,
and `llmRequestCosts` on the chat route; everything on 127.0.0.1 free ports, stopped by process
group at the end. `Run` drives a mixed load (chat, streamed chat and embeddings across the
models, and a few unknown models: 404); about a third of the way in it kills the `fast` backend
and starts it again about 10 s later (retries, fallback, ejections); near the end it writes a
broken config file, then replaces it with a valid one (a reload error, then a new generation).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

from modelyard.loadtest.bench.procs import Service, free_port

REPO = Path(__file__).resolve().parents[2]

CHAT_MODELS = {"gpt-fast": 3, "llama-quiet": 2, "chat-large": 3, "chat-split": 2}  # model: weight
UNKNOWN_MODELS = ["gpt-9-ultra", "no-such-model", "claude-typo"]
TEAMS = ["search", "support", "research"]


# --- the system under test ----------------------------------------------------


def config_yaml(fast_port: int, quiet_port: int) -> str:
    def backend(name: str, port: int) -> str:
        return textwrap.dedent(f"""\
            apiVersion: aigateway.envoyproxy.io/v1alpha1
            kind: AIServiceBackend
            metadata: {{name: {name}, namespace: default}}
            spec:
              schema: {{name: OpenAI}}
              backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
            ---
            apiVersion: gateway.envoyproxy.io/v1alpha1
            kind: Backend
            metadata: {{name: {name}, namespace: default}}
            spec:
              endpoints: [{{fqdn: {{hostname: 127.0.0.1, port: {port}}}}}]
            ---
            """)

    def rule(model: str, refs: str) -> str:
        return (f"    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]\n"
                f"      backendRefs: {refs}\n")

    return (backend("fast", fast_port) + backend("quiet", quiet_port) + textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: chat, namespace: default}
        spec:
          llmRequestCosts:
            - {metadataKey: input_tokens, type: InputToken}
            - {metadataKey: output_tokens, type: OutputToken}
          rules:
        """) + rule("gpt-fast", "[{name: fast, modelNameOverride: fast-v2}]")
        + rule("llama-quiet", "[{name: quiet}]")
        + rule("chat-large", "[{name: fast, priority: 0}, {name: quiet, priority: 1}]")
        + rule("chat-split", "[{name: fast, weight: 70}, {name: quiet, weight: 30}]")
        + textwrap.dedent("""\
        ---
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: embeddings, namespace: default}
        spec:
          rules:
        """) + rule("embed-small", "[{name: fast}]"))


class System:
    """The two mocks and the gateway, as child processes in their own sessions."""

    def __init__(self, folder: Path, workers: int):
        self.folder = folder
        self.cores = sorted(os.sched_getaffinity(0))
        self.fast_port, self.quiet_port = free_port(), free_port()
        self.port, self.admin_port = free_port(), free_port()
        self.config_dir = folder / "config"
        self.config_dir.mkdir()
        (self.config_dir / "routes.yaml").write_text(config_yaml(self.fast_port, self.quiet_port))
        self.workers = workers
        self.services: dict[str, Service] = {}
        self.fast_starts = 0

    def _mock(self, name: str, port: int, *extra: str) -> Service:
        self.fast_starts += name == "fast"
        log = self.folder / f"{name}-{self.fast_starts if name == 'fast' else 1}.log"
        svc = Service(name, [sys.executable, "-m", "modelyard.gateway", "mock", "--port", str(port), "--name", name, *extra],
                      self.cores, log, env={"PYTHONUNBUFFERED": "1"}, cwd=str(REPO))
        self.services[name] = svc
        return svc

    def start_fast(self) -> Service:
        return self._mock("fast", self.fast_port, "--ttft-ms", "30", "--itl-ms", "5", "--tokens", "24")

    def start(self) -> None:
        fast = self.start_fast()
        quiet = self._mock("quiet", self.quiet_port, "--no-usage", "--latency-ms", "20", "--ttft-ms", "80",
                           "--itl-ms", "40", "--tokens", "10", "--error-rate", "0.03")
        gw = Service("gateway", [
            sys.executable, "-m", "modelyard.gateway", "run", "--host", "127.0.0.1", "--port", str(self.port),
            "--admin-port", str(self.admin_port), "--workers", str(self.workers), "--config", str(self.config_dir),
            "--metrics-header", "x-team=team", "--access-log", "off", "--grace", "2"],
            self.cores, self.folder / "gateway.log", env={"PYTHONUNBUFFERED": "1"}, cwd=str(REPO))
        self.services["gateway"] = gw
        fast.wait_port(self.fast_port, 30)
        quiet.wait_port(self.quiet_port, 30)
        gw.wait_port(self.admin_port, 60)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if gw.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not get ready:\n" + gw.log.read_text(errors="replace")[-3000:])
            time.sleep(0.1)

    def retried(self) -> bool:
        """Whether the gateway's /metrics shows a retry yet."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as r:
                return any(line.startswith("modelyard_retries_total{") and not line.endswith(" 0.0")
                           for line in r.read().decode().splitlines())
        except OSError:
            return False

    def kill_fast(self) -> None:
        """The `fast` backend dies (SIGKILL to its own process group)."""
        svc = self.services["fast"]
        try:
            os.killpg(svc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        svc.proc.wait(10)

    def stop(self) -> None:
        for name in ("gateway", "fast", "quiet"):
            svc = self.services.get(name)
            if svc is not None:
                try:
                    svc.stop()
                except Exception as e:  # keep stopping the others
                    print(f"dashboard: could not stop {name}: {e}", file=sys.stderr)


# --- load and events ---------------------------------------------------------


class Run:
    """The client side: `users` request loops for `seconds`, the chaos events, and the answers counted."""

    def __init__(self, system: System, seconds: float, users: int, seed: int):
        self.sys = system
        self.seconds = seconds
        self.users = users
        self.rng = random.Random(seed)
        self.events: list[dict[str, Any]] = []
        self.client: dict[str, int] = {}  # "kind status" -> count
        self.t0 = 0.0
        self.t_end = 0.0

    def _count(self, key: str) -> None:
        self.client[key] = self.client.get(key, 0) + 1

    async def request(self, session: Any) -> None:
        rng = self.rng
        r = rng.random()
        headers = {"x-team": rng.choice(TEAMS)}
        prompt = "Tell me about gateways. " * rng.randint(1, 12)
        if r < 0.04:
            kind, path = "unknown", "/v1/chat/completions"
            body: dict[str, Any] = {"model": rng.choice(UNKNOWN_MODELS), "messages": [{"role": "user", "content": prompt}]}
        elif r < 0.10:
            kind, path = "embeddings", "/v1/embeddings"
            body = {"model": "embed-small", "input": [prompt, prompt[:40]]}
        else:
            model = rng.choices(list(CHAT_MODELS), weights=list(CHAT_MODELS.values()))[0]
            stream = r < 0.55
            kind, path = ("stream" if stream else "chat"), "/v1/chat/completions"
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
            if stream and rng.random() < 0.7:
                body["stream_options"] = {"include_usage": True}
        url = f"http://127.0.0.1:{self.sys.port}{path}"
        try:
            async with session.post(url, json=body, headers=headers) as resp:
                await resp.read()
                self._count(f"{kind} {resp.status}")
        except Exception as e:  # a reset mid-stream, a timeout: counted, the load goes on
            self._count(f"{kind} {type(e).__name__}")

    async def user(self, session: Any, end: float) -> None:
        while time.time() < end:
            await self.request(session)
            await asyncio.sleep(self.rng.uniform(0.0, 0.03))

    def event(self, what: str) -> None:
        self.events.append({"t": time.time(), "what": what})
        print(f"dashboard: {time.time() - self.t0:5.1f}s {what}", flush=True)

    async def chaos(self) -> None:
        """Kill and restart `fast`; write a broken config file and remove it."""
        loop = asyncio.get_running_loop()
        s = self.seconds
        outage = min(10.0, s / 6)
        await asyncio.sleep(s * 0.35)
        await loop.run_in_executor(None, self.sys.kill_fast)
        self.event("backend fast killed")
        await asyncio.sleep(outage)
        # The outage lasts until the gateway has retried at least once (a slow, shared machine may
        # send no request to `fast` in a short outage), so the retries panel always has its data.
        deadline = time.time() + 15.0
        while time.time() < deadline and not await loop.run_in_executor(None, self.sys.retried):
            await asyncio.sleep(0.2)
        svc = self.sys.start_fast()
        await loop.run_in_executor(None, svc.wait_port, self.sys.fast_port, 30)
        self.event("backend fast started again")
        await asyncio.sleep(max(0.0, s * 0.75 - (time.time() - self.t0)))
        broken = self.sys.config_dir / "broken.yaml"
        broken.write_text("apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\n"
                          "metadata: {name: broken, namespace: default}\nspec: {rules: [{backendRefs: 7}]}\n")
        self.event("broken config file written")
        await asyncio.sleep(min(4.0, s / 10))
        broken.unlink()
        (self.sys.config_dir / "extra.yaml").write_text(textwrap.dedent("""\
            apiVersion: aigateway.envoyproxy.io/v1alpha1
            kind: AIGatewayRoute
            metadata: {name: extra, namespace: default}
            spec:
              rules:
                - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: gpt-fast-canary}]}]
                  backendRefs: [{name: fast}]
            """))
        self.event("broken config file replaced by a valid one")

    async def main(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            self.t0 = time.time()
            end = self.t0 + self.seconds
            chaos = asyncio.create_task(self.chaos())
            await asyncio.gather(*(self.user(session, end) for _ in range(self.users)))
            await asyncio.wait_for(chaos, timeout=30)
            self.t_end = time.time()
