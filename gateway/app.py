"""The RSGI application every Granian worker runs: route, read, sniff, match, admit, forward.

Each request is one Exchange (gateway/accounting.py), recorded when it ends. Its path picks a
handler from the route table (gateway/routes.py); an error found on the way is raised as a
GatewayError and answered here, once, in the shape of the client's API (gateway/errors.py).

The routing table comes from shared memory (Settings.table names the segment).
A timer task checks its generation every 100 ms and swaps in a new
GenerationState; each request reads that reference once, so a reload never
changes a request midway.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

from granian.rsgi import ProtocolClosed

from modelyard.core.errors import GatewayError
from modelyard.core.shm import TableSegment
from modelyard.core.sniff import SniffError, check_model_name, sniff
from modelyard.core.table import MODEL_HEADER, TableFormatError, credential_headers, decode_table_in_steps
from modelyard.core import metrics
from modelyard.core import worker_registry
from modelyard.core.router import RuleRuntime
from modelyard.core.settings import current as current_settings
from modelyard.gateway.accounting import MAX_LOGGED, Accountant, Exchange, accountant_from_settings
from modelyard.gateway.admission import Admission, admission_for
from modelyard.gateway.errors import BACKEND_HEADER, JSON_HEADERS, answer_error, internal_error
from modelyard.gateway.passthrough import forward_count_tokens, forward_rerank, forward_tokenize, may_pass_through
from modelyard.gateway.providers.credentials import CREDENTIALS
from modelyard.gateway.proxy import Forwarding, Upstream, forward
from modelyard.gateway.routes import Route, build_routes, client_of, refusal
from modelyard.gateway.state import GenerationState, RefRuntime, RouteRuntime, attach_board

log = logging.getLogger("modelyard.worker")

POLL_INTERVAL = 0.1
FORMAT_REMINDER = 60.0  # seconds between repeats of the error about a table in another format
FLUSH_TICKS = 5  # metrics reach the shared files every half second
NOT_READY = "No configuration is loaded yet."


def malformed(scope: Any) -> GatewayError | None:
    """What makes a request unacceptable whatever its endpoint, or None."""
    hosts = len(scope.headers.get_all("host"))
    if hosts != 1 and scope.http_version == "1.1":
        # RFC 9112 3.2: exactly one Host; with none or two, the target is ambiguous.
        return GatewayError(400, "invalid_host",
                            f"An HTTP/1.1 request needs exactly one Host header; this one has {hosts}.")
    query = scope.query_string
    if query and not query.isascii():
        return GatewayError(400, "invalid_query",
                            "The query string has raw non-ASCII characters; percent-encode them (RFC 3986).")
    return None


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
        self.live: set[Exchange] = set()  # requests in flight, counted for the drain log line
        self.streams = 0
        self.load = memoryview(bytearray(16)).cast("q")
        self.failed_generation = 0  # the last published generation this worker could not apply
        self.format_error = ""  # why it could not: a table in another format, repeated until one it reads comes
        self.format_error_at = 0.0
        self.routes: dict[str, Route] = build_routes(self)
        self.admission: Admission | None = None  # None: no admission rules, the step is skipped

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
        self.admission = admission_for(table)
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
        route = self.routes.get(path)
        exchange = (Exchange(time.perf_counter(), route.operation, route.client) if route is not None
                    else Exchange(time.perf_counter(), "", client_of(path)))
        exchange.method, exchange.path = method, path
        try:
            try:
                if route is None or method != route.method:
                    raise self._refused(scope, exchange, route)
                problem = malformed(scope)
                if problem is not None:
                    raise problem
                await route.handler(scope, proto, exchange, route)
            except GatewayError as e:  # raised where it was found, answered here
                answer_error(proto, exchange, e)
        except ProtocolClosed:  # the client went away, typically mid-upload: not a failure of ours
            exchange.error = "client_disconnected"
            exchange.status = exchange.status or 499
            log.info("client %s closed the connection before %s %r was answered", scope.client, exchange.method,
                     exchange.path)
        except Exception as e:
            internal_error(proto, exchange, e)
        finally:
            assert self.accountant is not None
            self.accountant.record(exchange)

    def _refused(self, scope: Any, exchange: Exchange, route: Route | None) -> GatewayError:
        """Why a request outside the route table is refused: malformed (400), else 404 or 405."""
        method = exchange.method = exchange.method[:MAX_LOGGED]  # bounded: any method or path may come
        path = exchange.path = exchange.path[:MAX_LOGGED]
        return malformed(scope) or refusal(route, method, path)

    async def _count(self, scope: Any, proto: Any, exchange: Exchange, route: Route) -> None:
        """vLLM's /tokenize and Anthropic's /v1/messages/count_tokens: a backend that serves /tokenize
        answers it; otherwise the gateway's tokenizer does, in a thread (the first use loads it), on at
        most --max-count-bytes: the body is read past that only when a backend may answer instead."""
        path = route.path
        state = self.state
        cap = self.max_count_bytes
        limit = min(cap, state.body_limit) if state is not None else cap
        if state is not None and may_pass_through(state, path):
            limit = state.body_limit
        body = await self._read_body(scope, proto, limit)
        model = _sniffed_model(body)
        if state is not None and isinstance(model, str):  # without one, the default tokenizer answers here
            exchange.model = model
            if self.admission is not None:
                await self.admission(scope, exchange)
            forward = forward_tokenize if path == "/tokenize" else forward_count_tokens
            if await forward(self.upstream, state, scope, proto, body, exchange):
                return
        if len(body) > cap:
            raise GatewayError(413, "request_too_large", f"The request body is {len(body)} bytes; the gateway "
                               f"counts tokens in at most {cap} (--max-count-bytes).")
        assert self.accountant is not None
        counting = self.accountant.counting
        answer = counting.tokenize if path == "/tokenize" else counting.count_tokens
        try:
            status, data = await asyncio.get_running_loop().run_in_executor(None, answer, body)
        except Exception as e:  # the token service is restarting, or failed
            log.warning("token counting failed: %s", type(e).__name__)
            raise GatewayError(503, "tokenizer_unavailable", "Token counting is not available right now.") from None
        exchange.status = status
        proto.response_bytes(status, JSON_HEADERS, data)

    async def _rerank(self, scope: Any, proto: Any, exchange: Exchange, route: Route) -> None:
        state = self.state
        body = await self._read_body(scope, proto, state.body_limit if state is not None else 1 << 20)
        model = _sniffed_model(body)
        if not isinstance(model, str):
            raise GatewayError(400, "missing_model", "The request body has no string 'model' field.")
        exchange.model = model
        if state is not None and self.admission is not None:
            await self.admission(scope, exchange)
        if state is None or not await forward_rerank(self.upstream, state, scope, proto, body, exchange):
            raise GatewayError(404, "model_not_found", "No Cohere backend serves this model's rerank requests.")

    async def _models(self, scope: Any, proto: Any, exchange: Exchange, route: Route) -> None:
        state = self.state
        if state is None:
            raise GatewayError(503, "not_ready", NOT_READY)
        exchange.status = 200
        proto.response_bytes(200, JSON_HEADERS, state.anthropic_models_body if exchange.client == "anthropic"
                             else state.models_body)

    async def _read_body(self, scope: Any, proto: Any, limit: int) -> bytes:
        """The body, read whole (Content-Length: ProtocolClosed if the client leaves before the end)
        or chunk by chunk up to `limit`; GatewayError 413 over `limit`, 408 when it is too slow.
        Granian's body iterator ends with one empty chunk; when the client leaves mid-upload it
        yields an empty chunk for the error first, then that last one: an empty chunk followed by
        another is a cut upload (or request trailers, which no LLM API client sends), reported as
        ProtocolClosed like the Content-Length case. One coroutine: this runs for every request."""
        try:
            async with asyncio.timeout(self.body_timeout):
                length = scope.headers.get("content-length")
                if length is not None:
                    if length.isdigit() and int(length) > limit:
                        raise GatewayError(413, "request_too_large", f"The request body is {length} bytes; the "
                                           f"limit is {limit}.")
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
                        raise GatewayError(413, "request_too_large", f"The request body is over the {limit}-byte "
                                           "limit.")
                    parts.append(chunk)
                return b"".join(parts)
        except TimeoutError:
            # A client trickling its body would hold a connection (and its buffer) for ever.
            log.info("request body from %s not received within %gs; answered 408", scope.client, self.body_timeout)
            raise GatewayError(408, "request_timeout", f"The request body did not arrive within "
                               f"{self.body_timeout:g}s.", headers=(("connection", "close"),)) from None

    async def _proxy(self, scope: Any, proto: Any, exchange: Exchange, route: Route) -> None:
        state = self.state
        if state is None:
            raise GatewayError(503, "not_ready", NOT_READY)
        self.live.add(exchange)
        self.load[0] = len(self.live)
        try:
            body = await self._read_body(scope, proto, state.body_limit)
            forwarding = self._match(scope, proto, exchange, route.upstream, state, body)
            if self.admission is not None:
                await self.admission(scope, exchange)
            await forward(self.upstream, forwarding)
        finally:  # the top-level handler answers or logs what failed and records the exchange
            self.live.discard(exchange)
            self.streams -= exchange.stream
            self.load[0], self.load[1] = len(self.live), self.streams

    def _match(self, scope: Any, proto: Any, exchange: Exchange, operation: str, state: GenerationState,
               body: bytes) -> Forwarding:
        """The rule and backend for the request's model: the request, ready to forward."""
        headers = scope.headers
        try:
            sniffed = sniff(body)
            model = sniffed.model
            if model is None:
                model = headers.get(MODEL_HEADER)
                if model is not None:
                    check_model_name(model)  # the header's value goes upstream as it is
        except SniffError as e:
            raise GatewayError(400, e.code, str(e)) from None
        if model is None:
            raise GatewayError(400, "missing_model", "The request body has no 'model' field.")
        if not isinstance(model, str):
            raise GatewayError(400, "invalid_model", "The 'model' field must be a string.")
        exchange.model = model
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
                    exchange.route = runtime.name
                    raise GatewayError(400, "backend_not_allowed", f"Backend {wanted!r} may not be selected on "
                                       f"route {runtime.name}; allowed: {runtime.allowed}.")
                if rule is not None:  # the rule's own reference keeps its model override and mutations
                    fixed = _rule_ref(state, rule, fixed)
        if fixed is None:
            if rule is None:
                raise GatewayError(404, "model_not_found", _no_route_message(model, state))
            exchange.route = rule.rule.route
            if rule.error is not None:
                error = rule.error
                raise GatewayError(error.status, error.code, error.message)
            runtime = state.routes[rule.rule.route_index]
        assert runtime is not None
        exchange.route = runtime.name
        exchange.rule = rule.rule.name if rule is not None else ""
        exchange.costs = runtime.costs
        exchange.request_body = body
        accountant = self.accountant
        if accountant is not None and accountant.header_labels:  # without header labels, no call per request
            exchange.labels = accountant.header_label_values(headers)
        if sniffed.stream is True:  # as Forwarding sets it; counted for the drain log line until _proxy ends
            exchange.stream = True
            self.streams += 1
            self.load[1] = self.streams
        return Forwarding(scope, proto, exchange, state, runtime, rule, fixed, sniffed, operation)


def _sniffed_model(body: bytes) -> Any:
    """The body's model field, whatever its type (None without one); GatewayError 400 for a body
    the sniff refuses."""
    try:
        return sniff(body).model
    except SniffError as e:
        raise GatewayError(400, e.code, str(e)) from None


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
