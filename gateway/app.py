"""The RSGI application every Granian worker runs: read, sniff, match, pick, forward.

The routing table comes from shared memory (Settings.table names the segment).
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
import traceback
from collections.abc import Iterator
from typing import Any

from granian.rsgi import ProtocolClosed

from modelyard.core.shm import TableSegment
from modelyard.core.sniff import SniffError, check_model_name, sniff
from modelyard.core.table import MODEL_HEADER, TableFormatError, credential_headers, decode_table_in_steps
from modelyard.core import metrics
from modelyard.core import worker_registry
from modelyard.core.router import RuleRuntime
from modelyard.gateway.accounting import MAX_LOGGED, OPERATION_NAMES, Accountant, Outcome, accountant_from_settings
from modelyard.gateway.passthrough import forward_count_tokens, forward_rerank, forward_tokenize, may_pass_through
from modelyard.gateway.proxy import BACKEND_HEADER, JSON_HEADERS, Upstream, error_body, forward
from modelyard.gateway.providers.credentials import CREDENTIALS
from modelyard.core.settings import current as current_settings
from modelyard.gateway.state import ANTHROPIC_OPERATIONS, OPERATIONS, GenerationState, RefRuntime, RouteRuntime, attach_board

log = logging.getLogger("modelyard.worker")
CLOSE_HEADERS = [*JSON_HEADERS, ("connection", "close")]

POLL_INTERVAL = 0.1
FORMAT_REMINDER = 60.0  # seconds between repeats of the error about a table in another format
TOKEN_ENDPOINTS = ("/tokenize", "/v1/messages/count_tokens", "/anthropic/v1/messages/count_tokens")
MODELS_ENDPOINTS = ("/v1/models", "/anthropic/v1/models")
RERANK = "/cohere/v2/rerank"
MAX_FRAMES = 12  # of an unexpected error's stack, logged
FLUSH_TICKS = 5  # metrics reach the shared files every half second


def error_response(proto: Any, status: int, message: str, code: str, client: str = "openai") -> int:
    proto.response_bytes(status, JSON_HEADERS, error_body(client, status, message, code))
    return status


def client_error(o: Outcome, proto: Any, status: int, message: str, code: str) -> int:
    """An error in the shape of the API the request came in on, noted for the access log."""
    o.status, o.error = status, code
    return error_response(proto, status, message, code, o.client)


def malformed(scope: Any) -> tuple[str, str] | None:
    """What makes a request unacceptable whatever its endpoint: (message, code), or None."""
    hosts = len(scope.headers.get_all("host"))
    if hosts != 1 and scope.http_version == "1.1":
        # RFC 9112 3.2: exactly one Host; with none or two, the target is ambiguous.
        return (f"An HTTP/1.1 request needs exactly one Host header; this one has {hosts}.", "invalid_host")
    query = scope.query_string
    if query and not query.isascii():
        return ("The query string has raw non-ASCII characters; percent-encode them (RFC 3986).", "invalid_query")
    return None


def _where(e: BaseException) -> str:
    """Where an exception was raised, as `file:line function` frames, innermost last."""
    frames = traceback.extract_tb(e.__traceback__)[-MAX_FRAMES:]
    return " > ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in frames)


class GatewayApp:
    def __init__(self) -> None:
        self.state: GenerationState | None = None
        self.segment: TableSegment | None = None
        self.upstream = Upstream()
        self.board = None
        self.accountant: Accountant | None = None
        self.settings = settings = current_settings()
        self.body_timeout = settings.body_timeout or None
        self.max_count_bytes = settings.max_count_bytes
        self.live: set[Outcome] = set()  # requests in flight, counted for the drain log line
        self.streams = 0
        self.load = memoryview(bytearray(16)).cast("q")
        self.failed_generation = 0  # the last published generation this worker could not apply
        self.format_error = ""  # why it could not: a table in another format, repeated until one it reads comes
        self.format_error_at = 0.0

    # -- worker lifecycle (Granian RSGI hooks) -------------------------------------------------

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.upstream.start(loop)
        settings = self.settings
        self.board = attach_board(settings.health_board)
        self.load = worker_registry.load_counters(settings.workers_dir)
        self.accountant = accountant_from_settings(loop, settings)
        CREDENTIALS.refresh()
        if settings.table:
            self.segment = TableSegment.attach(settings.table)
            self._refresh()
        loop.create_task(self._watch_table())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        worker_registry.forget(self.settings.workers_dir)
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
        current = self.segment.generation()
        if current == self.failed_generation:
            if self.format_error and time.monotonic() - self.format_error_at >= FORMAT_REMINDER:
                self._log_format_error()
            return
        if self.state is not None and current == self.state.generation:
            return
        generation, data = self.segment.read()
        if generation == 0:
            return
        served = self.state.generation if self.state is not None else 0
        # No collection meanwhile: all that is built stays alive, a full collection over it would be
        # one long pause, and gc.freeze() below puts it out of the collector's sight for good.
        gc.disable()
        try:
            table = yield from decode_table_in_steps(data)
            state = GenerationState.__new__(GenerationState)
            yield from state.build(table, self.upstream.pools, self.board)
        except TableFormatError as e:  # the control process runs another version: no traceback helps
            self.failed_generation = generation
            self.format_error = f"cannot read routing table generation {generation}: {e}; still serving generation {served}"
            self._log_format_error()
            worker_registry.report(self.settings.workers_dir, served, failed=generation)
            return
        except Exception:  # keep serving the last table; say so once per generation, and to /readyz
            self.failed_generation = generation
            log.exception("could not apply routing table generation %d; still serving generation %d",
                          generation, served)
            worker_registry.report(self.settings.workers_dir, served, failed=generation)
            return
        finally:
            gc.enable()
        self.state = state
        self.format_error = ""
        state.keep_pools(self.upstream.pools)
        # The table's objects live until the next reload: out of the collector's sight, a full
        # collection costs the same with 10 models or 10,000.
        gc.freeze()
        if self.accountant is not None:
            self.accountant.known_models(set(state.model_list))
            self.accountant.withhold(credential_headers(table))
        worker_registry.report(self.settings.workers_dir, table.generation)

    def _log_format_error(self) -> None:
        log.error("%s", self.format_error)
        self.format_error_at = time.monotonic()

    async def _watch_table(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            ticks += 1
            if ticks % FLUSH_TICKS == 0:
                metrics.flush()
            CREDENTIALS.refresh()  # the tokens auth hooks send: re-read when the control process published

            if self.segment is None:
                continue
            try:
                # Requests run between the slices. One takes several turns of the loop (head, body,
                # answer), so a bare sleep(0) would hold it up by a slice per turn: each slice of
                # work is followed by a pause as long, in which the loop serves whatever is ready.
                # The build takes twice as long; no request waits behind more than about one slice.
                started = time.perf_counter()
                for _ in self._refreshing():
                    await asyncio.sleep(time.perf_counter() - started)
                    started = time.perf_counter()
            except Exception:  # a bad table must not take the worker down; keep serving the last one
                log.exception("could not load the published routing table; keeping the previous one")

    # -- requests ----------------------------------------------------------------------------

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        path = scope.path
        method = scope.method
        suffix = OPERATIONS.get(path)
        o = Outcome(time.perf_counter(), OPERATION_NAMES[suffix] if suffix is not None else "")
        o.method, o.path = method, path
        try:
            if suffix is not None and method == "POST":  # the hot path, without a detour
                await self._proxy(scope, proto, suffix, o)
            else:
                await self._dispatch(scope, proto, o, suffix)
        except ProtocolClosed:  # the client went away, typically mid-upload: not a failure of ours
            o.error = "client_disconnected"
            o.status = o.status or 499
            log.info("client %s closed the connection before %s %r was answered", scope.client, o.method, o.path)
        except Exception as e:
            self._unexpected(proto, o, e)
        finally:
            assert self.accountant is not None
            self.accountant.record(o)

    async def _dispatch(self, scope: Any, proto: Any, o: Outcome, suffix: str | None) -> None:
        """Every request but an OpenAI POST to a proxied endpoint."""
        method = o.method = o.method[:MAX_LOGGED]
        path = o.path = o.path[:MAX_LOGGED]  # bounded here: the hot path's is one of a few known ones
        if suffix is None:
            suffix = ANTHROPIC_OPERATIONS.get(path)
            if suffix is not None or path.startswith("/anthropic/") or path.endswith("/count_tokens"):
                o.client = "anthropic"
            if suffix is not None:
                o.operation = OPERATION_NAMES[suffix]
                if method == "POST":
                    await self._proxy(scope, proto, suffix, o)
                    return
        problem = malformed(scope)
        if problem is not None:
            client_error(o, proto, 400, *problem)
            return
        if suffix is not None:
            pass  # a proxied endpoint, with another method: 405
        elif path in MODELS_ENDPOINTS:
            o.operation = "models"
            if method == "GET":
                self._models(proto, o)
                return
        elif path in TOKEN_ENDPOINTS:
            o.operation = "tokenize" if path == "/tokenize" else "count_tokens"
            if method == "POST":
                await self._count(scope, proto, path, o)
                return
        elif path == RERANK:
            o.operation = "rerank"
            if method == "POST":
                await self._rerank(scope, proto, o)
                return
        else:
            client_error(o, proto, 404, f"Unknown endpoint {path!r}. This gateway serves /v1/chat/completions, "
                         "/v1/completions, /v1/embeddings, /v1/models, /v1/messages, /v1/messages/count_tokens, "
                         "/tokenize and /cohere/v2/rerank.", "unknown_endpoint")
            return
        client_error(o, proto, 405, f"Method {method!r} is not allowed on {path}.", "method_not_allowed")

    def _unexpected(self, proto: Any, o: Outcome, e: Exception) -> None:
        """A bug of ours, or a body nested deeper than a decoder after the sniff could follow:
        logged once, as one line without the request or the exception's text (either may hold
        what a client sent), and answered in the client's API shape unless an answer has begun."""
        if isinstance(e, RecursionError) and o.status == 0:
            client_error(o, proto, 400, "The request body is nested too deeply.", "invalid_json")
            return
        log.error("unexpected %s while serving %s %r, at %s", type(e).__name__, o.method, o.path, _where(e))
        status = o.status
        o.error = "internal_error"
        if status == 0:
            try:
                client_error(o, proto, 500, "The gateway failed unexpectedly; the error is logged.", "internal_error")
            except Exception:  # the response had started after all
                o.status = 500

    async def _count(self, scope: Any, proto: Any, path: str, o: Outcome) -> None:
        """vLLM's /tokenize and Anthropic's /v1/messages/count_tokens: a backend that serves /tokenize
        answers it; otherwise the gateway's tokenizer does, in a thread (the first use loads it), on at
        most --max-count-bytes: the body is read past that only when a backend may answer instead."""
        state = self.state
        cap = self.max_count_bytes
        limit = min(cap, state.body_limit) if state is not None else cap
        if state is not None and may_pass_through(state, path):
            limit = state.body_limit
        body = await self._read_body(scope, proto, limit, o.client, o)
        if body is None:
            if not o.status:
                o.status, o.error = 413, "request_too_large"
            return
        try:
            model = sniff(body).model
        except SniffError as e:
            client_error(o, proto, 400, str(e), e.code)
            return
        if state is not None and isinstance(model, str):  # without one, the default tokenizer answers here
            o.model = model
            forward = forward_tokenize if path == "/tokenize" else forward_count_tokens
            if await forward(self.upstream, state, scope, proto, body, o):
                return
        if len(body) > cap:
            client_error(o, proto, 413, f"The request body is {len(body)} bytes; the gateway counts tokens in at "
                         f"most {cap} (--max-count-bytes).", "request_too_large")
            return
        assert self.accountant is not None
        counting = self.accountant.counting
        answer = counting.tokenize if path == "/tokenize" else counting.count_tokens
        try:
            status, data = await asyncio.get_running_loop().run_in_executor(None, answer, body)
        except Exception as e:  # the token service is restarting, or failed
            log.warning("token counting failed: %s", type(e).__name__)
            status, o.error = 503, "tokenizer_unavailable"
            data = error_body(o.client, 503, "Token counting is not available right now.", "tokenizer_unavailable")
        o.status = status
        proto.response_bytes(status, JSON_HEADERS, data)

    async def _rerank(self, scope: Any, proto: Any, o: Outcome) -> None:
        state = self.state
        body = await self._read_body(scope, proto, state.body_limit if state is not None else 1 << 20, o.client, o)
        if body is None:
            if not o.status:
                o.status, o.error = 413, "request_too_large"
            return
        try:
            model = sniff(body).model
        except SniffError as e:
            client_error(o, proto, 400, str(e), e.code)
            return
        if not isinstance(model, str):
            client_error(o, proto, 400, "The request body has no string 'model' field.", "missing_model")
            return
        o.model = model
        if state is None or not await forward_rerank(self.upstream, state, scope, proto, body, o):
            client_error(o, proto, 404, "No Cohere backend serves this model's rerank requests.", "model_not_found")

    def _models(self, proto: Any, o: Outcome) -> None:
        state = self.state
        if state is None:
            client_error(o, proto, 503, "No configuration is loaded yet.", "not_ready")
            return
        o.status = 200
        proto.response_bytes(200, JSON_HEADERS, state.anthropic_models_body if o.client == "anthropic"
                             else state.models_body)

    async def _read_body(self, scope: Any, proto: Any, limit: int, client: str = "openai",
                         o: Outcome | None = None) -> bytes | None:
        """The request body, or None after answering 413 (over the limit) or 408 (too slow)."""
        try:
            async with asyncio.timeout(self.body_timeout):
                return await self._receive_body(scope, proto, limit, client)
        except TimeoutError:
            # A client trickling its body would hold a connection (and its buffer) for ever.
            log.info("request body from %s not received within %gs; answered 408", scope.client, self.body_timeout)
            if o is not None:
                o.status = 408
            proto.response_bytes(408, CLOSE_HEADERS, error_body(client, 408, "The request body did not arrive within "
                                                               f"{self.body_timeout:g}s.", "request_timeout"))
            return None

    async def _receive_body(self, scope: Any, proto: Any, limit: int, client: str) -> bytes | None:
        """The body, read whole (Content-Length: ProtocolClosed if the client leaves before the end)
        or chunk by chunk up to `limit`. Granian's body iterator ends with one empty chunk; when the
        client leaves mid-upload it yields an empty chunk for the error first, then that last one:
        an empty chunk followed by another is a cut upload (or request trailers, which no LLM API
        client sends), reported as ProtocolClosed like the Content-Length case."""
        length = scope.headers.get("content-length")
        if length is not None:
            if length.isdigit() and int(length) > limit:
                error_response(proto, 413, f"The request body is {length} bytes; the limit is {limit}.",
                               "request_too_large", client)
                return None
            return await proto()
        parts: list[bytes] = []
        size = 0
        ended = False
        async for chunk in proto:
            if ended:
                raise ProtocolClosed("the request body ended before its last chunk")
            ended = not chunk
            size += len(chunk)
            if size > limit:
                error_response(proto, 413, f"The request body is over the {limit}-byte limit.", "request_too_large",
                               client)
                return None
            parts.append(chunk)
        return b"".join(parts)

    async def _proxy(self, scope: Any, proto: Any, suffix: str, o: Outcome) -> None:
        problem = malformed(scope)
        if problem is not None:
            client_error(o, proto, 400, *problem)
            return
        state = self.state
        if state is None:
            client_error(o, proto, 503, "No configuration is loaded yet.", "not_ready")
            return
        self.live.add(o)
        self.load[0] = len(self.live)
        try:
            await self._route(scope, proto, suffix, state, o)
        finally:  # the top-level handler logs what failed and records the outcome
            self.live.discard(o)
            self.streams -= o.stream
            self.load[0], self.load[1] = len(self.live), self.streams

    async def _route(self, scope: Any, proto: Any, suffix: str, state: GenerationState, o: Outcome) -> None:
        body = await self._read_body(scope, proto, state.body_limit, o.client, o)
        if body is None:
            if not o.status:
                o.status, o.error = 413, "request_too_large"
            return
        headers = scope.headers
        try:
            sniffed = sniff(body)
            model = sniffed.model
            if model is None:
                model = headers.get(MODEL_HEADER)
                if model is not None:
                    check_model_name(model)  # the header's value goes upstream as it is
        except SniffError as e:
            client_error(o, proto, 400, str(e), e.code)
            return
        if model is None:
            client_error(o, proto, 400, "The request body has no 'model' field.", "missing_model")
            return
        if not isinstance(model, str):
            client_error(o, proto, 400, "The 'model' field must be a string.", "invalid_model")
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
                    client_error(
                        o, proto, 400, f"Backend {wanted!r} may not be selected on route {runtime.name}; "
                        f"allowed: {runtime.allowed}.", "backend_not_allowed")
                    return
                if rule is not None:  # the rule's own reference keeps its model override and mutations
                    fixed = _rule_ref(state, rule, fixed)
        if fixed is None:
            if rule is None:
                client_error(o, proto, 404, _no_route_message(model, state), "model_not_found")
                return
            o.route = rule.rule.route
            if rule.error is not None:
                err = rule.error
                client_error(o, proto, err.status, err.message, err.code)
                return
            runtime = state.routes[rule.rule.route_index]
        assert runtime is not None
        o.route = runtime.name
        o.rule = rule.rule.name if rule is not None else ""
        o.costs = runtime.costs
        o.request_body = body
        o.labels = self.accountant.header_label_values(headers) if self.accountant is not None else ()
        if sniffed.stream is True:  # as forward() sets it; counted for the drain log line until _proxy ends
            o.stream = True
            self.streams += 1
            self.load[1] = self.streams
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
