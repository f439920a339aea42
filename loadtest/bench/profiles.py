"""Locust load profiles for any OpenAI-compatible gateway (Modelyard or another).

Every profile sends ``POST /v1/chat/completions`` to the ``--host`` base URL
(``http://127.0.0.1:1975``; a host that already ends in ``/v1`` gets
``/chat/completions``). Pick profiles by user class name on the command line
(several may be named; with none, Locust runs all of them), or with the
``LOCUST_USER_CLASSES`` environment variable. The shared options and base user are in
``profile_common.py`` and the failover drill in ``failover_drill.py``, imported from the
installed ``modelyard`` package (``make install`` or ``pip install -e .``).

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
``--iterations N`` [LOCUST_ITERATIONS]     requests per user, then the run ends (default 0: until --run-time)
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

import itertools
import json
import random
import time
import uuid
from typing import Any

from locust import task

from modelyard.loadtest.bench.failover_drill import FailoverDrillUser
from modelyard.loadtest.bench.profile_common import (
    DEFAULT_MODELS,
    DEFAULT_UNKNOWN_MODEL,
    _fire,
    _json,
    _OpenAIUser,
    _openai_error,
    _opt,
    _short,
)

__all__ = ["ChatUser", "FailoverDrillUser", "LongPromptUser", "MixedModelsUser", "StreamingChatUser"]


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
        # In turn from a random start, not at random: any user that makes len(choices) requests has
        # asked for every model, the unknown one included.
        start = random.randrange(len(self.choices))
        self.turns = itertools.cycle(self.choices[start:] + self.choices[:start])

    @task
    def chat_some_model(self) -> None:
        model = next(self.turns)
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
