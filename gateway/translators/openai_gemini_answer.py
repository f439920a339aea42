"""OpenAI chat completions client -> Gemini generateContent on Vertex AI: the answer (whole, and errors)
in OpenAI's shape. The request mapping is described in openai_gemini.py.

- candidates[] -> choices[] (index: the candidate's own, else its position). A candidate's text parts
  are joined into `content`; its thought parts (`thought: true`, sent when includeThoughts is on)
  into `reasoning_content`, the field the Bedrock and Anthropic translators fill too; functionCall
  parts become tool_calls whose arguments are the JSON text of `args`. Gemini gives function calls no
  ids the client could use, so each gets `call_<hex>`, derived from the answer's id, the choice and
  the call's position: the same answer always gets the same ids.
- finishReason -> finish_reason (FINISH_REASONS); STOP with function calls is "tool_calls". A prompt
  blocked outright (promptFeedback.blockReason, no candidates) is one choice with empty content and
  finish_reason "content_filter".
- logprobsResult (responseLogprobs) -> choices[].logprobs.content[] {token, logprob, bytes,
  top_logprobs}.
- usageMetadata -> usage: prompt_tokens = promptTokenCount; completion_tokens = candidatesTokenCount
  + thoughtsTokenCount (OpenAI counts reasoning as completion); total_tokens = totalTokenCount;
  prompt_tokens_details.cached_tokens = cachedContentTokenCount (part of promptTokenCount);
  completion_tokens_details.reasoning_tokens = thoughtsTokenCount.
- id = responseId; created = createTime; model = modelVersion (the answer names the model version
  that served it; when it does not, the model is null, as for Bedrock: the gateway knows the model).
- errors: Google's {"error": {"code", "message", "status"}}, also inside a one-element list as Vertex
  sometimes sends it -> OpenAI's {"error": {"message", "type", "param", "code"}}, the HTTP status kept;
  type from the status (400 invalid_request_error, 401 authentication_error, 403 permission_error,
  429 rate_limit_error, 5xx server_error), code the Google status name (INVALID_ARGUMENT, ...),
  except RESOURCE_EXHAUSTED, OpenAI's "rate_limit_exceeded".
"""

from __future__ import annotations

import datetime
import hashlib
import re
import time
import uuid
from typing import Any

from modelyard.core.errors import openai_error
from modelyard.core.usage import Usage

from .common import dumps_str, loads

# Gemini finishReason -> OpenAI finish_reason; unknown and other reasons are "stop".
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}

# Google RPC status name -> HTTP status, for errors that come without one (inside a stream).
GOOGLE_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "ABORTED": 409, "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499, "UNKNOWN": 500, "INTERNAL": 500, "DATA_LOSS": 500, "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")

__all__ = ["FINISH_REASONS", "GOOGLE_STATUS", "build_response", "call_id", "created_of", "error_body",
           "error_from_google", "finish_reason", "google_error", "logprobs_of", "openai_usage", "usage_of"]


# ---------------------------------------------------------------- pieces shared with the stream


def finish_reason(reason: Any, calls: bool) -> str:
    mapped = FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"
    return "tool_calls" if calls and mapped == "stop" else mapped


def _count(meta: dict[str, Any], name: str) -> int:
    value = meta.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of(meta: dict[str, Any]) -> Usage:
    prompt = _count(meta, "promptTokenCount")
    thoughts = _count(meta, "thoughtsTokenCount")
    completion = _count(meta, "candidatesTokenCount") + thoughts
    total = _count(meta, "totalTokenCount") or prompt + completion
    return Usage(input_tokens=prompt, output_tokens=completion, total_tokens=total,
                 cached_input_tokens=_count(meta, "cachedContentTokenCount"), reasoning_tokens=thoughts)


def openai_usage(u: Usage) -> dict[str, Any]:
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}}


def call_id(completion_id: str, choice: int, n: int) -> str:
    """The id of the n-th function call of a choice: the same for the same answer, whole or streamed."""
    return "call_" + hashlib.blake2b(f"{completion_id}/{choice}/{n}".encode(), digest_size=12).hexdigest()


def tool_call(part: dict[str, Any], completion_id: str, choice: int, n: int) -> dict[str, Any]:
    fn = part["functionCall"]
    args = fn.get("args")
    return {"id": call_id(completion_id, choice, n), "type": "function",
            "function": {"name": fn.get("name") or "", "arguments": dumps_str(args if args is not None else {})}}


def created_of(answer: dict[str, Any]) -> int | None:
    """createTime ("2025-05-01T12:00:00.123456Z", UTC) as Unix seconds; None when absent or unreadable."""
    stamp = answer.get("createTime")
    match = _TIME.match(stamp) if isinstance(stamp, str) else None
    if match is None:
        return None
    try:
        return int(datetime.datetime.fromisoformat(match.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp())
    except ValueError:
        return None


def _token(c: Any) -> dict[str, Any]:
    token = c.get("token") if isinstance(c.get("token"), str) else ""
    logprob = c.get("logProbability")
    return {"token": token, "logprob": float(logprob) if isinstance(logprob, (int, float)) else 0.0,
            "bytes": list(token.encode())}


def logprobs_of(result: Any) -> dict[str, Any] | None:
    """A candidate's logprobsResult -> OpenAI's choice logprobs."""
    if not isinstance(result, dict) or not isinstance(result.get("chosenCandidates"), list):
        return None
    tops = result.get("topCandidates") if isinstance(result.get("topCandidates"), list) else []
    content = []
    for i, chosen in enumerate(result["chosenCandidates"]):
        if not isinstance(chosen, dict):
            continue
        entry = _token(chosen)
        top = tops[i].get("candidates") if i < len(tops) and isinstance(tops[i], dict) else None
        entry["top_logprobs"] = [_token(c) for c in top if isinstance(c, dict)] if isinstance(top, list) else []
        content.append(entry)
    return {"content": content, "refusal": None}


def parts_of(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def text_of_part(part: dict[str, Any]) -> str | None:
    text = part.get("text")
    return text if isinstance(text, str) else None


# ---------------------------------------------------------------- response


def build_response(answer: dict[str, Any], created: int | None = None,
                   completion_id: str | None = None) -> tuple[dict[str, Any], Usage | None]:
    rid = answer.get("responseId")
    cid = rid if isinstance(rid, str) and rid else completion_id or f"chatcmpl-{uuid.uuid4().hex}"
    candidates = answer.get("candidates")
    choices = []
    for pos, cand in enumerate(candidates if isinstance(candidates, list) else []):
        if not isinstance(cand, dict):
            continue
        index = cand["index"] if isinstance(cand.get("index"), int) else pos
        text: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in parts_of(cand):
            if isinstance(part.get("functionCall"), dict):
                calls.append(tool_call(part, cid, index, len(calls)))
            elif (t := text_of_part(part)) is not None:
                (thoughts if part.get("thought") is True else text).append(t)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": index, "message": message, "logprobs": logprobs_of(cand.get("logprobsResult")),
                        "finish_reason": finish_reason(cand.get("finishReason"), bool(calls))})
    if not choices:  # the prompt was blocked (promptFeedback.blockReason), or nothing came back
        feedback = answer.get("promptFeedback")
        blocked = isinstance(feedback, dict) and bool(feedback.get("blockReason"))
        choices.append({"index": 0, "message": {"role": "assistant", "content": ""}, "logprobs": None,
                        "finish_reason": "content_filter" if blocked else "stop"})
    meta = answer.get("usageMetadata")
    usage = usage_of(meta) if isinstance(meta, dict) else None
    version = answer.get("modelVersion")
    stamp = created_of(answer)
    out: dict[str, Any] = {
        "id": cid, "object": "chat.completion",
        "created": stamp if stamp is not None else int(time.time()) if created is None else created,
        "model": version if isinstance(version, str) and version else None, "choices": choices,
    }
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return out, usage


# ---------------------------------------------------------------- errors


def google_error(parsed: Any) -> dict[str, Any] | None:
    """The {"code", "message", "status"} object of a Google error body, bare or list-wrapped."""
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return parsed["error"]
    return None


def error_body(status: int, err: dict[str, Any] | None, fallback: str) -> bytes:
    """OpenAI's error body for a Google error object (or for `fallback` text when there is none)."""
    message = err.get("message") if err is not None else None
    if not isinstance(message, str) or not message:
        message = fallback or f"upstream answered {status}"
    name = err.get("status") if err is not None else None
    name = name if isinstance(name, str) and name else None
    code = "rate_limit_exceeded" if name == "RESOURCE_EXHAUSTED" or (name is None and status == 429) else name
    return openai_error(status, message, code)


def error_from_google(status: int, body: bytes) -> tuple[int, bytes]:
    """A Vertex AI error answer -> OpenAI's error shape, its HTTP status kept."""
    err = google_error(loads(body))
    return status, error_body(status, err, body.decode("utf-8", "replace").strip())


def status_of(err: dict[str, Any]) -> int:
    """The HTTP status of a Google error object met inside a stream (its code, else its status name)."""
    code = err.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return GOOGLE_STATUS.get(err.get("status"), 500) if isinstance(err.get("status"), str) else 500
