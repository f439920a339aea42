"""The RSGI application every Granian worker runs: read, sniff, match, pick, forward.

The routing table comes from shared memory (MODELYARD_TABLE names the segment).
A timer task checks its generation every 100 ms and swaps in a new
GenerationState; each request reads that reference once, so a reload never
changes a request midway.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from core.errors import openai_error
from core.shm import TableSegment
from core.sniff import SniffError, sniff
from core.table import MODEL_HEADER, decode_table_in_steps
from gateway import metrics, worker_registry
from core.router import RuleRuntime
from gateway.accounting import OPERATION_NAMES, Accountant, Outcome, accountant_from_env
from gateway.passthrough import forward_count_tokens, forward_rerank, forward_tokenize
from gateway.proxy import BACKEND_HEADER, JSON_HEADERS, Upstream, error_body, forward
from gateway.state import ANTHROPIC_OPERATIONS, OPERATIONS, GenerationState, RefRuntime, RouteRuntime, attach_board

log = logging.getLogger("modelyard.worker")

POLL_INTERVAL = 0.1
TOKEN_ENDPOINTS = ("/tokenize", "/v1/messages/count_tokens", "/anthropic/v1/messages/count_tokens")
FLUSH_TICKS = 5  # metrics reach the shared files every half second


def error_response(proto: Any, status: int, message: str, code: str, client: str = "openai") -> int:
    proto.response_bytes(status, JSON_HEADERS, error_body(client, status, message, code))
    return status


def client_error(o: Outcome, proto: Any, status: int, message: str, code: str) -> int:
    """An error in the shape of the API the request came in on."""
    return error_response(proto, status, message, code, o.client)


class GatewayApp:
    def __init__(self) -> None:
        self.state: GenerationState | None = None
        self.segment: TableSegment | None = None
        self.upstream = Upstream()
        self.board = None
        self.accountant: Accountant | None = None

    # -- worker lifecycle (Granian RSGI hooks) -------------------------------------------------

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.upstream.start(loop)
        self.board = attach_board()
        self.accountant = accountant_from_env(loop)
        path = os.environ.get("MODELYARD_TABLE")
        if path:
            self.segment = TableSegment.attach(path)
            self._refresh()
        loop.create_task(self._watch_table())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        worker_registry.forget()
        metrics.flush()
        if self.accountant is not None and self.accountant.log is not None:
            self.accountant.log.flush()
        loop.run_until_complete(self.upstream.close())

    def _refresh(self) -> None:
        """Load the published table at once (at start, when there is nothing to serve yet)."""
        for _ in self._refreshing():
            pass

    def _refreshing(self) -> Iterator[None]:
        """Load the published table if it is new, pausing (yielding) every few milliseconds: a
        big table is built while the previous one keeps serving, and swapped in whole."""
        assert self.segment is not None
        if self.state is not None and self.segment.generation() == self.state.generation:
            return
        generation, data = self.segment.read()
        if generation == 0:
            return
        # No collection meanwhile: all that is built stays alive, a full collection over it would be
        # one long pause, and gc.freeze() below puts it out of the collector's sight for good.
        gc.disable()
        try:
            table = yield from decode_table_in_steps(data)
            state = GenerationState.__new__(GenerationState)
            yield from state.build(table, self.upstream.pools, self.board)
        finally:
            gc.enable()
        self.state = state
        state.keep_pools(self.upstream.pools)
        # The table's objects live until the next reload: out of the collector's sight, a full
        # collection costs the same with 10 models or 10,000.
        gc.freeze()
        if self.accountant is not None:
            self.accountant.known_models(set(state.model_list))
        worker_registry.report(table.generation)

    async def _watch_table(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            ticks += 1
            if ticks % FLUSH_TICKS == 0:
                metrics.flush()
            if self.segment is None:
                continue
            try:
                for _ in self._refreshing():
                    await asyncio.sleep(0)  # requests run between the slices
            except Exception:  # a bad table must not take the worker down; keep serving the last one
                log.exception("could not load the published routing table; keeping the previous one")

    # -- requests ----------------------------------------------------------------------------

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        path = scope.path
        suffix = OPERATIONS.get(path)
        if suffix is not None and scope.method == "POST":
            await self._proxy(scope, proto, suffix)
        elif path == "/v1/models" and scope.method == "GET":
            self._models(proto)
        elif path in ANTHROPIC_OPERATIONS and scope.method == "POST":
            await self._proxy(scope, proto, ANTHROPIC_OPERATIONS[path], "anthropic")
        elif path == "/anthropic/v1/models" and scope.method == "GET":
            self._models(proto, anthropic=True)
        elif path in TOKEN_ENDPOINTS and scope.method == "POST":
            await self._count(scope, proto, path)
        elif path == "/cohere/v2/rerank" and scope.method == "POST":
            await self._rerank(scope, proto)
        elif suffix is not None or path in ("/v1/models", "/anthropic/v1/models") or path in TOKEN_ENDPOINTS \
                or path in ANTHROPIC_OPERATIONS:
            error_response(proto, 405, f"Method {scope.method} is not allowed on {path}.", "method_not_allowed")
        else:
            error_response(proto, 404, f"Unknown endpoint {path}. This gateway serves /v1/chat/completions, "
                           "/v1/completions, /v1/embeddings, /v1/models, /v1/messages/count_tokens and /tokenize.",
                           "unknown_endpoint")

    async def _count(self, scope: Any, proto: Any, path: str) -> None:
        """vLLM's /tokenize and Anthropic's /v1/messages/count_tokens: a backend that serves /tokenize
        answers it; otherwise the gateway's tokenizer does, in a thread (the first use loads it)."""
        state = self.state
        body = await self._read_body(scope, proto, state.body_limit if state is not None else 1 << 20)
        if body is None:
            return
        if path == "/tokenize" and state is not None and await forward_tokenize(self.upstream, state, scope, proto,
                                                                                 body):
            return
        if path != "/tokenize" and state is not None and await forward_count_tokens(self.upstream, state, scope,
                                                                                     proto, body):
            return
        assert self.accountant is not None
        counting = self.accountant.counting
        answer = counting.tokenize if path == "/tokenize" else counting.count_tokens
        try:
            status, data = await asyncio.get_running_loop().run_in_executor(None, answer, body)
        except Exception as e:  # the token service is restarting, or failed
            log.warning("token counting failed: %s", e)
            status, data = 503, openai_error(503, "Token counting is not available right now.", "tokenizer_unavailable")
        proto.response_bytes(status, JSON_HEADERS, data)

    async def _rerank(self, scope: Any, proto: Any) -> None:
        state = self.state
        body = await self._read_body(scope, proto, state.body_limit if state is not None else 1 << 20)
        if body is None:
            return
        if state is None or not await forward_rerank(self.upstream, state, scope, proto, body):
            error_response(proto, 404, "No Cohere backend serves this model's rerank requests.", "model_not_found")

    def _models(self, proto: Any, anthropic: bool = False) -> None:
        state = self.state
        if state is None:
            error_response(proto, 503, "No configuration is loaded yet.", "not_ready", "anthropic" if anthropic else "openai")
            return
        proto.response_bytes(200, JSON_HEADERS, state.anthropic_models_body if anthropic else state.models_body)

    async def _read_body(self, scope: Any, proto: Any, limit: int, client: str = "openai") -> bytes | None:
        """The request body, or None (after answering 413) when it is over the limit."""
        length = scope.headers.get("content-length")
        if length is not None:
            if length.isdigit() and int(length) > limit:
                error_response(proto, 413, f"The request body is {length} bytes; the limit is {limit}.",
                               "request_too_large", client)
                return None
            return await proto()
        parts: list[bytes] = []
        size = 0
        async for chunk in proto:
            size += len(chunk)
            if size > limit:
                error_response(proto, 413, f"The request body is over the {limit}-byte limit.", "request_too_large",
                               client)
                return None
            parts.append(chunk)
        return b"".join(parts)

    async def _proxy(self, scope: Any, proto: Any, suffix: str, client: str = "openai") -> None:
        o = Outcome(time.perf_counter(), OPERATION_NAMES[suffix], client)
        state = self.state
        if state is None:
            error_response(proto, 503, "No configuration is loaded yet.", "not_ready", client)
            return
        try:
            await self._route(scope, proto, suffix, state, o)
        except Exception:  # a bug of ours: logged, and the client still gets an OpenAI-shaped error
            log.exception("unexpected error while proxying")
            if o.status == 0:
                o.status, o.error = 500, "internal_error"
                try:
                    client_error(o, proto, 500, "The gateway failed unexpectedly; the error is logged.",
                                 "internal_error")
                except Exception:  # a response had already started
                    pass
        finally:
            assert self.accountant is not None
            self.accountant.record(o)

    async def _route(self, scope: Any, proto: Any, suffix: str, state: GenerationState, o: Outcome) -> None:
        body = await self._read_body(scope, proto, state.body_limit, o.client)
        if body is None:
            o.status = 413
            return
        try:
            sniffed = sniff(body)
        except SniffError as e:
            o.status = client_error(o, proto, 400, str(e), e.code)
            return
        headers = scope.headers
        model = sniffed.model
        if model is None:
            model = headers.get(MODEL_HEADER)
            if model is None:
                o.status = client_error(o, proto, 400, "The request body has no 'model' field.", "missing_model")
                return
        elif not isinstance(model, str):
            o.status = client_error(o, proto, 400, "The 'model' field must be a string.", "invalid_model")
            return
        o.model = model
        rule = state.router.match(model, headers)
        wanted = headers.get(BACKEND_HEADER) if state.header_routes else None
        fixed = None
        runtime = None
        if wanted is not None:
            # The client picks the backend: allowed only where the matched route (or, for a model
            # no rule matches, the first route that takes the header) lists it.
            runtime = state.routes[rule.rule.route_index] if rule is not None else _route_allowing(state, wanted)
            if runtime is not None and runtime.by_header:
                fixed = runtime.by_header.get(wanted)
                if fixed is None:
                    o.route = runtime.name
                    o.status = error_response(
                        proto, 400, f"Backend {wanted!r} may not be selected on route {runtime.name}; "
                        f"allowed: {runtime.allowed}.", "backend_not_allowed")
                    return
                if rule is not None:  # the rule's own reference keeps its model override and mutations
                    fixed = _rule_ref(state, rule, fixed)
        if fixed is None:
            if rule is None:
                o.status = client_error(o, proto, 404, _no_route_message(model, state), "model_not_found")
                return
            o.route = rule.rule.route
            if rule.error is not None:
                err_status, code, message = rule.error
                o.status = client_error(o, proto, err_status, message, code)
                return
            runtime = state.routes[rule.rule.route_index]
        assert runtime is not None
        o.route = runtime.name
        o.rule = rule.rule.name if rule is not None else ""
        o.costs = runtime.costs
        o.request_body = body
        o.labels = self.accountant.header_label_values(headers) if self.accountant is not None else ()
        await forward(self.upstream, scope, proto, body, suffix, state, runtime, rule, fixed, sniffed, o)


def _route_allowing(state: GenerationState, wanted: str) -> RouteRuntime | None:
    for runtime in state.header_routes:
        if wanted in runtime.by_header:
            return runtime
    return None


def _rule_ref(state: GenerationState, rule: RuleRuntime, chosen: RefRuntime) -> RefRuntime:
    for ref in rule.rule.refs:
        runtime = state.refs[id(ref)]
        if runtime.backend is chosen.backend:
            return runtime
    return chosen


def _no_route_message(model: str, state: GenerationState) -> str:
    names = state.model_list
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    available = f"Available models: {shown}." if names else "No models are configured."
    return (f"No route matches model {model!r}. {available} To send every other model to one backend, "
            "add a rule without `matches` (a catch-all) to an AIGatewayRoute, or start the gateway with --backend URL.")


app = GatewayApp()
