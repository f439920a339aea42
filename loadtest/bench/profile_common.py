"""What every locust profile of `profiles.py` shares: its command-line options, the checks of an
OpenAI-style answer, and the base user that builds and checks the requests.
"""

from __future__ import annotations

import json
from typing import Any

import gevent
from locust import FastHttpUser, events
from locust.env import Environment
from locust.exception import StopUser

DRILL_PID_ENV = "MODELYARD_DRILL_PID"
DEFAULT_MODEL = "mock-model"
DEFAULT_MODELS = "mock-model,mock-model-2,mock-model-3,mock-model-4"
DEFAULT_UNKNOWN_MODEL = "modelyard-loadtest-unknown-model"


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
    group.add_argument("--iterations", env_var="LOCUST_ITERATIONS", type=int, default=0,
                       help="requests each user makes before it stops; the run ends when every user has "
                            "(or at --run-time). Default 0: no limit")
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
    """`wait_time` of every profile, called after each task: `--wait-ms` (default 0, back-to-back
    requests); with `--iterations`, the user stops after that many tasks."""
    limit = int(_opt(user.environment, "iterations", 0))
    if limit > 0:
        user.iterations = getattr(user, "iterations", 0) + 1
        if user.iterations >= limit:
            _user_done(user.environment)
            raise StopUser()
    return max(0.0, float(_opt(user.environment, "wait_ms", 0.0))) / 1000.0


def _user_done(environment: Environment) -> None:
    """Once every user has made its `--iterations` requests, end the run as --run-time would (from a
    greenlet of its own: quitting stops every user, this one included)."""
    done = getattr(environment, "users_done", 0) + 1
    environment.users_done = done
    runner = environment.runner
    if runner is not None and done >= max(1, runner.target_user_count):
        gevent.spawn(runner.quit)


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
