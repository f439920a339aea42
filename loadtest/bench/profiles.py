"""Locust load profiles for any OpenAI-compatible gateway (Modelyard or another).

Every profile sends ``POST /v1/chat/completions`` to the ``--host`` base URL
(``http://127.0.0.1:1975``; a host that already ends in ``/v1`` gets
``/chat/completions``). Pick profiles by user class name on the command line
(several may be named; with none, Locust runs all of them), or with the
``LOCUST_USER_CLASSES`` environment variable.

Profiles
========

``ChatUser``
    Non-streaming chat completions. A request succeeds on status 200 with a JSON
    body whose ``choices[0].message.content`` is a string.

``StreamingChatUser``
    ``"stream": true``; reads the server-sent events as they arrive. Besides the
    whole request (named ``/v1/chat/completions stream``, its time is the whole
    stream) it records two custom metrics of request type ``SSE``: ``ttft``, the
    time to the first chunk that carries content, and ``inter-chunk``, one entry
    for each gap between consecutive ``data:`` events after that. A stream
    succeeds when it is a 200, ends with ``data: [DONE]`` and carries no error
    event (neither ``event: error`` nor a ``data:`` object with an ``error`` key).

``MixedModelsUser``
    Spreads requests evenly over the models of ``--models`` plus one model that
    no route serves (``--unknown-model``). Each known model is its own stats row.
    For the unknown model an OpenAI-style 404 (``{"error": {..., "code":
    "model_not_found"}}``) counts as a SUCCESS and a 200 as a FAILURE (the gateway
    served a model it should not know). A gateway with a catch-all default backend
    (``modelyard run --backend URL``) forwards every model, so run this profile
    against a config without one, or pass ``--unknown-model ""`` to leave that
    model out.

``LongPromptUser``
    Non-streaming requests whose JSON body is about ``--prompt-kb`` KiB (default
    100), the size of a long document or a long chat history.

``FailoverDrillUser``
    The requests of ``ChatUser`` during a drill in which a backend is stopped and
    started again mid-run. While the drill window is open, a 502, 503 or 504 with
    an OpenAI-style error body is what the gateway should answer; such a response
    counts as a success under the name ``failover-errors`` (so its count is the
    number of requests the outage cost). Outside the window it is a failure, as is
    any answer that is not OpenAI-shaped (a connection error, an HTML page, a 500).
    The first request that starts after the backend came back and gets a 200 is
    recorded once as request type ``DRILL``, name ``recovery``, its time being the
    milliseconds from the restart to that answer.

    Automatic drill: set ``MODELYARD_DRILL_PID`` to the PID of the backend process.
    At the start of the test a background greenlet waits ``--drill-after`` seconds
    (default 3), sends SIGSTOP to that process and to all its descendants (for the
    bundled mock or any Granian/uvicorn/gunicorn server, the supervisor and its
    workers), waits ``--drill-down`` seconds (default 3), and sends SIGCONT. The
    stopped backend still accepts connections (the kernel queues them) but never
    answers, so the gateway answers each request with its timeout error (504; give
    the route a short ``timeouts: {request: 1s}``) or, once passive health ejects
    the backend, 502/503. The window during which those errors are expected runs
    from the SIGSTOP to ``--drill-grace`` seconds (default 5) after the SIGCONT;
    a request counts as in the window when its lifetime overlaps it. If Locust
    stops or quits mid-drill the backend is continued at once (on test stop, on
    quitting and at exit; a SIGKILLed Locust cannot do that: then run
    ``kill -CONT <pid>`` yourself). In distributed runs set the variable on the
    master and the workers: the master sends the signals, every node computes the
    window from its own start time.

    Manual drill: without ``MODELYARD_DRILL_PID`` the whole run is the window:
    stop and restart the backend yourself (``kill -STOP``/``kill -CONT``, or stop
    its service and start it again) while the profile runs, and read the
    ``failover-errors`` row and the failures afterwards.

Options (also settable as environment variables, shown in brackets)
===================================================================

``--model NAME`` [LOCUST_MODEL]            model of ChatUser, StreamingChatUser, LongPromptUser and
                                           FailoverDrillUser (default ``mock-model``)
``--models A,B,C`` [LOCUST_MODELS]         models of MixedModelsUser
                                           (default ``mock-model,mock-model-2,mock-model-3,mock-model-4``)
``--unknown-model NAME`` [LOCUST_UNKNOWN_MODEL]  the model MixedModelsUser expects a 404 for
                                           (default ``modelyard-loadtest-unknown-model``; empty: none)
``--prompt-kb N`` [LOCUST_PROMPT_KB]       request body size of LongPromptUser in KiB (default 100)
``--max-tokens N`` [LOCUST_MAX_TOKENS]     ``max_tokens`` to send (default 0: none sent)
``--api-key KEY`` [LOCUST_API_KEY]         sent as ``Authorization: Bearer KEY`` (default: none)
``--wait-ms N`` [LOCUST_WAIT_MS]           pause between a user's requests in ms (default 0)
``--drill-after S``, ``--drill-down S``, ``--drill-grace S``  the automatic drill's timing (3, 3, 5)

Commands
========

Start a gateway, e.g. ``make demo`` or
``modelyard mock --port 8000 &`` then ``modelyard run --backend http://127.0.0.1:8000/v1``.

Headless, one profile, 20 users for 30 s, summary at the end::

    locust -f loadtest/bench/profiles.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:1975 ChatUser
    locust -f loadtest/bench/profiles.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:1975 StreamingChatUser
    locust -f loadtest/bench/profiles.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:1975 \\
        --models demo-chat,demo-split --unknown-model no-such-model MixedModelsUser
    locust -f loadtest/bench/profiles.py --headless -u 8 -r 8 -t 30s --host http://127.0.0.1:1975 \\
        --prompt-kb 100 LongPromptUser

Against ``make demo`` add ``--model demo-chat``. For a pass/fail run (CI) add
``--only-summary --exit-code-on-error 1 --csv out`` (writes ``out_stats.csv``,
``out_failures.csv``, ...; the exit code is 1 when any request failed). Locust rewrites
those CSV files every second but not at shutdown, so they can miss the last second,
failures included: gate on the exit code, and add ``--json-file out`` for final numbers
(``out.json``).

The failover drill, automatic. ``BACKEND_PID`` is the backend's PID: ``$!`` right after
starting it in the background, or for the bundled mock on port 8000 (its Granian
supervisor renames itself) ``pgrep -o -f 'granian rsgi 127.0.0.1:8000'``. Give the
drilled route a short timeout (``timeouts: {request: 1s}``) so that stalled requests
end within the window::

    MODELYARD_DRILL_PID=$BACKEND_PID locust -f loadtest/bench/profiles.py --headless -u 10 -r 10 -t 20s \\
        --host http://127.0.0.1:1975 --drill-after 5 --drill-down 5 FailoverDrillUser

Several profiles at once, weighted by their ``weight`` (all 1)::

    locust -f loadtest/bench/profiles.py --headless -u 40 -r 40 -t 1m --host http://127.0.0.1:1975 \\
        ChatUser StreamingChatUser MixedModelsUser

Web UI: ``locust -f loadtest/bench/profiles.py --host http://127.0.0.1:1975 ChatUser`` (name
the profiles to run; without names every profile runs, or add ``--class-picker`` to
choose them in the page), then open http://127.0.0.1:8089, set the users and the
ramp, and press Start. The options above (``--model``, ``--prompt-kb``, ...) appear
in the page's custom parameters and can be changed there for each run.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import signal
import time
import uuid
from collections import Counter
from typing import Any

import gevent
from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

log = logging.getLogger("modelyard.profiles")

DRILL_PID_ENV = "MODELYARD_DRILL_PID"
DEFAULT_MODEL = "mock-model"
DEFAULT_MODELS = "mock-model,mock-model-2,mock-model-3,mock-model-4"
DEFAULT_UNKNOWN_MODEL = "modelyard-loadtest-unknown-model"
FAILOVER_STATUSES = frozenset({502, 503, 504})


# --- options ------------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    # parser.add_argument, not a group's: only the former puts the option in the web UI.
    group = parser
    group.add_argument("--model", env_var="LOCUST_MODEL", default=DEFAULT_MODEL,
                       help=f"model for the single-model profiles (default {DEFAULT_MODEL})")
    group.add_argument("--models", env_var="LOCUST_MODELS", default=DEFAULT_MODELS,
                       help=f"comma-separated models for MixedModelsUser (default {DEFAULT_MODELS})")
    group.add_argument("--unknown-model", env_var="LOCUST_UNKNOWN_MODEL", default=DEFAULT_UNKNOWN_MODEL,
                       help="a model no route serves; MixedModelsUser expects 404 model_not_found for it "
                            "(empty: leave it out)")
    group.add_argument("--prompt-kb", env_var="LOCUST_PROMPT_KB", type=float, default=100.0,
                       help="request body size of LongPromptUser in KiB (default 100)")
    group.add_argument("--max-tokens", env_var="LOCUST_MAX_TOKENS", type=int, default=0,
                       help="max_tokens to send (default 0: not sent)")
    group.add_argument("--api-key", env_var="LOCUST_API_KEY", default="", is_secret=True,
                       help="sent as Authorization: Bearer KEY (default: no header)")
    group.add_argument("--wait-ms", env_var="LOCUST_WAIT_MS", type=float, default=0.0,
                       help="pause between a user's requests in milliseconds (default 0)")
    group.add_argument("--drill-after", env_var="LOCUST_DRILL_AFTER", type=float, default=3.0,
                       help=f"with {DRILL_PID_ENV}: seconds from the test start to SIGSTOP (default 3)")
    group.add_argument("--drill-down", env_var="LOCUST_DRILL_DOWN", type=float, default=3.0,
                       help=f"with {DRILL_PID_ENV}: seconds the backend stays stopped (default 3)")
    group.add_argument("--drill-grace", env_var="LOCUST_DRILL_GRACE", type=float, default=5.0,
                       help="seconds after SIGCONT during which 502/503/504 are still expected (default 5)")


def _opt(environment: Environment, name: str, default: Any) -> Any:
    """An option's value; the default when the profiles run without Locust's parser (as a library)."""
    options = getattr(environment, "parsed_options", None)
    value = getattr(options, name, None) if options is not None else None
    return default if value is None else value


def _configured_wait(user: FastHttpUser) -> float:
    """`wait_time` of every profile: `--wait-ms` (default 0, back-to-back requests)."""
    return max(0.0, float(_opt(user.environment, "wait_ms", 0.0))) / 1000.0


def _openai_error(body: Any) -> dict | None:
    """The `error` object of an OpenAI-style error body, or None if the body is not one."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        if isinstance(err.get("message"), str) and "code" in err:
            return err
    return None


def _json(resp: Any) -> Any:
    try:
        return json.loads(resp.content or b"")
    except (ValueError, TypeError):
        return None


def _short(resp: Any, limit: int = 300) -> str:
    try:
        text = (resp.content or b"")[:limit].decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - a broken connection has no content to show
        text = ""
    error = getattr(resp, "error", None)
    return f"status {resp.status_code}: {text or error!r}"


def _fire(environment: Environment, request_type: str, name: str, ms: float, exception: Exception | None = None) -> None:
    environment.events.request.fire(request_type=request_type, name=name, response_time=ms,
                                    response_length=0, exception=exception, context={})


# --- the shared base ----------------------------------------------------------------------------


class _OpenAIUser(FastHttpUser):
    """Common request building; not a profile by itself."""

    abstract = True
    wait_time = _configured_wait
    network_timeout = 120.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        base = (self.host or "").rstrip("/")
        self.client.base_url = base
        self.path = "/chat/completions" if base.endswith("/v1") else "/v1/chat/completions"
        self.model = str(_opt(self.environment, "model", DEFAULT_MODEL))
        key = str(_opt(self.environment, "api_key", ""))
        self.headers = {"authorization": f"Bearer {key}"} if key else {}

    def body(self, model: str, content: str = "Say hello in one short sentence.", **extra: Any) -> dict:
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
        max_tokens = int(_opt(self.environment, "max_tokens", 0))
        if max_tokens > 0:
            body["max_tokens"] = max_tokens
        return body

    def check_completion(self, resp: Any) -> str | None:
        """Why a non-streaming answer is not a valid chat completion, or None if it is."""
        if resp.status_code != 200:
            return f"expected 200, got {_short(resp)}"
        body = _json(resp)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return f"no choices[0].message.content in the body: {_short(resp)}"
        if not isinstance(content, str):
            return f"choices[0].message.content is not a string: {content!r}"
        return None

    def chat(self, model: str, name: str, body: dict | None = None, data: str | None = None) -> None:
        """One non-streaming completion that must come back valid."""
        kw: dict[str, Any] = {"data": data, "headers": {**self.headers, "content-type": "application/json"}} \
            if data is not None else {"json": body if body is not None else self.body(model), "headers": self.headers}
        with self.client.post(self.path, name=name, catch_response=True, **kw) as resp:
            problem = self.check_completion(resp)
            if problem:
                resp.failure(problem)
            else:
                resp.success()


# --- the profiles -------------------------------------------------------------------------------


class ChatUser(_OpenAIUser):
    """Non-streaming chat completions to `--model`; 200 with choices[0].message.content."""

    @task
    def chat_completion(self) -> None:
        self.chat(self.model, "/v1/chat/completions")


class StreamingChatUser(_OpenAIUser):
    """Streaming chat completions; records `ttft` and `inter-chunk` (request type SSE)."""

    @task
    def streaming_chat_completion(self) -> None:
        headers = {**self.headers, "accept": "text/event-stream", "accept-encoding": "identity"}
        body = self.body(self.model, stream=True)
        start = time.perf_counter()
        with self.client.post(self.path, json=body, headers=headers, name="/v1/chat/completions stream",
                              stream=True, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"expected 200, got {_short(resp)}")
                return
            problem, size = self._read_stream(resp, start)
            resp.request_meta["response_time"] = (time.perf_counter() - start) * 1000
            resp.request_meta["response_length"] = size
            if problem:
                resp.failure(problem)
            else:
                resp.success()

    def _read_stream(self, resp: Any, start: float) -> tuple[str | None, int]:
        """Read the SSE body line by line as it arrives; (why it is invalid or None, bytes read)."""
        # geventhttpclient's read(n) waits for n bytes, which would batch events and hide the
        # real timing; readline() returns each line as soon as it is complete.
        raw = resp._response  # FastResponse keeps the socket response here
        size = 0
        first_token: float | None = None
        last_event: float | None = None
        done = False
        error_event = False
        try:
            while True:
                line = raw.readline(b"\n")
                if not line:
                    break
                size += len(line)
                now = time.perf_counter()
                text = line.strip()
                if text.startswith(b"event:") and text[6:].strip() == b"error":
                    error_event = True
                    continue
                if not text.startswith(b"data:"):
                    continue
                payload = text[5:].strip()
                if done:
                    return f"data after [DONE]: {payload[:200]!r}", size
                if payload == b"[DONE]":
                    done = True
                    continue
                try:
                    event = json.loads(payload)
                except ValueError:
                    return f"a data event is not JSON: {payload[:200]!r}", size
                if error_event or (isinstance(event, dict) and "error" in event):
                    return f"error event in the stream: {payload[:300]!r}", size
                if first_token is None:
                    if _has_content(event):
                        first_token = now
                        _fire(self.environment, "SSE", "ttft", (now - start) * 1000)
                else:
                    _fire(self.environment, "SSE", "inter-chunk", (now - last_event) * 1000)  # type: ignore[operator]
                last_event = now
        except Exception as e:  # noqa: BLE001 - a broken stream is a failed request, not a crash
            return f"stream broke off: {e!r}", size
        if error_event:
            return "error event in the stream", size
        if not done:
            return "the stream ended without data: [DONE]", size
        return None, size


def _has_content(event: Any) -> bool:
    try:
        choice = event["choices"][0]
    except (KeyError, IndexError, TypeError):
        return False
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls")
                or choice.get("text"))


class MixedModelsUser(_OpenAIUser):
    """Requests spread over `--models` and one unknown model (404 model_not_found is a success)."""

    def on_start(self) -> None:
        super().on_start()
        self.models = [m.strip() for m in str(_opt(self.environment, "models", DEFAULT_MODELS)).split(",") if m.strip()]
        self.unknown = str(_opt(self.environment, "unknown_model", DEFAULT_UNKNOWN_MODEL)).strip()
        self.choices = [*self.models, *([None] if self.unknown else [])]
        if not self.choices:
            self.choices = [self.model]
            self.models = [self.model]

    @task
    def chat_some_model(self) -> None:
        model = random.choice(self.choices)
        if model is not None:
            self.chat(model, f"/v1/chat/completions model={model}")
            return
        with self.client.post(self.path, json=self.body(self.unknown), headers=self.headers,
                              name="/v1/chat/completions unknown model", catch_response=True) as resp:
            err = _openai_error(_json(resp))
            if resp.status_code == 404 and err is not None and err.get("code") == "model_not_found":
                resp.success()
            elif resp.status_code == 200:
                resp.failure(f"the unknown model {self.unknown!r} was served (200) instead of 404 model_not_found")
            else:
                resp.failure(f"expected 404 model_not_found for {self.unknown!r}, got {_short(resp)}")


class LongPromptUser(_OpenAIUser):
    """Non-streaming requests with a JSON body of about `--prompt-kb` KiB (default 100)."""

    def on_start(self) -> None:
        super().on_start()
        kb = float(_opt(self.environment, "prompt_kb", 100.0))
        self.kb = kb
        self.target = max(1, int(kb * 1024))
        self.stats_name = f"/v1/chat/completions {kb:g}KB prompt"
        sentence = "The quick brown fox jumps over the lazy dog while the gateway routes every request. "
        self.filler = (sentence * (self.target // len(sentence) + 2))

    def _data(self) -> str:
        # A fresh prefix per request so no cache along the way can answer it; padded to the target size.
        prefix = f"[{uuid.uuid4().hex}] Summarise this document in one sentence.\n\n"
        base = json.dumps(self.body(self.model, prefix), separators=(",", ":"))
        room = max(0, self.target - len(base))
        return json.dumps(self.body(self.model, prefix + self.filler[:room]), separators=(",", ":"))

    @task
    def long_prompt(self) -> None:
        self.chat(self.model, self.stats_name, data=self._data())


# --- the failover drill -------------------------------------------------------------------------


class _Drill:
    """The state of this node's drill for the current test."""

    def __init__(self) -> None:
        self.greenlet: gevent.Greenlet | None = None
        self.stopped: list[int] = []
        self.reset()

    def reset(self) -> None:
        self.pid: int | None = None  # None: a manual drill, the whole run is the window
        self.window_start = 0.0  # time.time() of the planned or actual SIGSTOP
        self.up_at = 0.0  # time.time() of the planned or actual SIGCONT
        self.grace = 5.0
        self.expected: Counter[int] = Counter()
        self.recovery_ms: float | None = None

    def in_window(self, started: float, ended: float) -> bool:
        if self.pid is None:
            return True
        return started <= self.up_at + self.grace and ended >= self.window_start

    def resume(self) -> None:
        """SIGCONT whatever this node stopped (idempotent)."""
        pids, self.stopped = self.stopped, []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            except OSError as e:
                log.error("failover drill: could not continue PID %d: %s", pid, e)
        if pids:
            self.up_at = time.time()
            log.warning("failover drill: SIGCONT sent to %s", pids)


DRILL = _Drill()
atexit.register(DRILL.resume)


def _process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, parents first."""
    try:
        import psutil  # a dependency of Locust
    except ImportError:
        return [pid]
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _run_drill(pid: int, after: float, down: float) -> None:
    try:
        gevent.sleep(after)
        tree = _process_tree(pid)
        if not tree:
            log.error("failover drill: no process with PID %d; no drill", pid)
            return
        DRILL.window_start = time.time()
        for p in tree:
            try:
                os.kill(p, signal.SIGSTOP)
                DRILL.stopped.append(p)
            except ProcessLookupError:
                pass
        log.warning("failover drill: SIGSTOP sent to %s for %gs", DRILL.stopped, down)
        gevent.sleep(down)
    finally:
        DRILL.resume()


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw: Any) -> None:
    _stop_drill()
    DRILL.reset()
    raw = os.environ.get(DRILL_PID_ENV, "").strip()
    if not raw:
        return
    try:
        pid = int(raw)
    except ValueError:
        log.error("failover drill: %s=%r is not a PID; no drill", DRILL_PID_ENV, raw)
        return
    after = float(_opt(environment, "drill_after", 3.0))
    down = float(_opt(environment, "drill_down", 3.0))
    DRILL.pid = pid
    DRILL.grace = float(_opt(environment, "drill_grace", 5.0))
    DRILL.window_start = time.time() + after
    DRILL.up_at = DRILL.window_start + down
    if isinstance(environment.runner, WorkerRunner):
        return  # the master (or a local runner) sends the signals
    DRILL.greenlet = gevent.spawn(_run_drill, pid, after, down)


def _stop_drill() -> None:
    if DRILL.greenlet is not None:
        DRILL.greenlet.kill(block=True, timeout=5)
        DRILL.greenlet = None
    DRILL.resume()


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kw: Any) -> None:
    _stop_drill()
    if DRILL.pid is not None or DRILL.expected:
        recovery = f"{DRILL.recovery_ms:.0f} ms" if DRILL.recovery_ms is not None else "not seen"
        log.info("failover drill: %d expected errors %s; recovery after the restart: %s",
                 sum(DRILL.expected.values()), dict(DRILL.expected), recovery)


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kw: Any) -> None:
    _stop_drill()


class FailoverDrillUser(_OpenAIUser):
    """ChatUser's requests; during the drill window 502/503/504 OpenAI errors count as `failover-errors`."""

    @task
    def chat_through_the_drill(self) -> None:
        started = time.time()
        with self.client.post(self.path, json=self.body(self.model), headers=self.headers,
                              name="/v1/chat/completions", catch_response=True) as resp:
            ended = time.time()
            status = resp.status_code
            if status in FAILOVER_STATUSES:
                err = _openai_error(_json(resp))
                if err is None:
                    resp.failure(f"a {status} without an OpenAI-style error body: {_short(resp)}")
                elif not DRILL.in_window(started, ended):
                    resp.failure(f"{status} {err.get('code')} outside the drill window: {err.get('message')}")
                else:
                    DRILL.expected[status] += 1
                    resp.request_meta["name"] = "failover-errors"
                    resp.success()
                return
            problem = self.check_completion(resp)
            if problem:
                resp.failure(problem)
                return
            resp.success()
        if DRILL.pid is not None and DRILL.recovery_ms is None and not DRILL.stopped and started >= DRILL.up_at:
            DRILL.recovery_ms = (ended - DRILL.up_at) * 1000
            _fire(self.environment, "DRILL", "recovery", DRILL.recovery_ms)
