"""What the Vertex mock answers for Gemini: GenerateContentResponse bodies, their stream chunks,
token counts and text embeddings.

Answers are deterministic, as in the other mocks: the text is ``tok0 tok1 ...`` (``--tokens`` or
``x-mock-tokens``), cut at ``maxOutputTokens`` (finishReason ``MAX_TOKENS``) or before the first
stop sequence (``STOP``). With function declarations, the answer is a ``functionCall`` part when
the last user turn names a function or mentions "weather", or when ``toolConfig`` forces a call
(mode ``ANY``); its ``args`` follow the declared schema. ``responseMimeType: application/json``
answers a JSON text that follows ``responseSchema`` (or ``responseJsonSchema``). A
``thinkingConfig`` turns thinking on (``thoughtsTokenCount``; a ``thought`` part with
``includeThoughts``). Token counts are rough estimates (a token per 4 characters, 258 per image
or file, as Gemini counts an image).
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import msgspec

from modelyard.loadtest.mock.anthropic.answers import _split_json, _text_pieces, example_value
from modelyard.loadtest.mock.openai.wire import _vector_floats
from modelyard.loadtest.mock.vertex.errors import field_violations, invalid_argument
from modelyard.loadtest.mock.vertex.validate import function_declarations
from modelyard.loadtest.mock.wire import _choose_tool, _encode

_MEDIA_TOKENS = 258  # what Gemini counts for an image
_THOUGHT_PIECES = ("Mock ", "reasoning ", "step.")
_SAFETY = [
    {"category": category, "probability": "NEGLIGIBLE", "probabilityScore": 0.05,
     "severity": "HARM_SEVERITY_NEGLIGIBLE", "severityScore": 0.04}
    for category in ("HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_DANGEROUS_CONTENT", "HARM_CATEGORY_HARASSMENT",
                     "HARM_CATEGORY_SEXUALLY_EXPLICIT")
]
TRAFFIC = {"trafficType": "ON_DEMAND"}

EMBEDDING_TASK_TYPES = frozenset({
    "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION", "CLUSTERING",
    "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY",
})
EMBEDDING_MAX_INSTANCES = 250
EMBEDDING_MAX_TOKENS = 2048


def response_id() -> str:
    """Vertex's responseId: a short base64url-looking string."""
    return os.urandom(16).hex()[:22]


def create_time() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}Z"


def _tokens_of(text: str) -> int:
    return -(-len(text) // 4)


def prompt_usage(req: dict[str, Any]) -> tuple[int, int, int]:
    """(text tokens, media tokens, billable characters) of contents, system instruction and tools."""
    chars = media = 0
    contents = list(req.get("contents") or ())
    if "systemInstruction" in req:
        contents.append(req["systemInstruction"])
    for content in contents:
        for part in content.get("parts") or ():
            if "text" in part:
                chars += len(part["text"])
            elif "inlineData" in part or "fileData" in part:
                media += 1
            elif "functionCall" in part:
                chars += len(part["functionCall"].get("name", "")) + len(_encode(part["functionCall"].get("args")))
            elif "functionResponse" in part:
                chars += len(_encode(part["functionResponse"].get("response")))
    for tool in req.get("tools") or ():
        chars += len(_encode(tool))
    return max(1, -(-chars // 4)), media * _MEDIA_TOKENS, chars


def _last_user_text(contents: list[dict[str, Any]]) -> str:
    last = contents[-1]
    if (last.get("role") or "user") != "user":
        return ""
    return " ".join(p["text"] for p in last.get("parts") or () if "text" in p)


def pick_function(req: dict[str, Any]) -> dict[str, Any] | None:
    """The function declaration the answer calls, if any (the mocks' shared tool convention)."""
    declarations = function_declarations(req)
    calling = (req.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = calling.get("mode", "AUTO")
    if not declarations or mode == "NONE":
        return None
    allowed = calling.get("allowedFunctionNames")
    if allowed:
        declarations = [d for d in declarations if d["name"] in allowed]
    chosen = _choose_tool([d["name"] for d in declarations], _last_user_text(req["contents"]),
                          mode in ("ANY", "VALIDATED"))
    return None if chosen is None else declarations[chosen]


def _json_answer(config: dict[str, Any], text: str) -> str:
    """The JSON text of a structured answer, following responseSchema / responseJsonSchema."""
    schema = config.get("responseSchema") or config.get("responseJsonSchema")
    if config.get("responseMimeType") == "text/x.enum":
        values = schema.get("enum") if isinstance(schema, dict) else None
        return str(values[0]) if isinstance(values, list) and values else text
    if schema is None:
        return _encode({"response": text}).decode()
    return _encode(example_value(schema)).decode()


def thinking_on(config: dict[str, Any]) -> bool:
    thinking = config.get("thinkingConfig")
    if thinking is None:
        return False
    return thinking.get("thinkingBudget", -1) != 0


class Plan(msgspec.Struct):
    """One candidate's answer: streamed chunks of parts, the finish reason and token counts."""

    chunks: list[list[dict[str, Any]]]
    finish: str
    output_tokens: int
    thought_tokens: int

    def parts(self) -> list[dict[str, Any]]:
        """The whole answer's parts: consecutive text pieces of one kind joined."""
        merged: list[dict[str, Any]] = []
        for chunk in self.chunks:
            for part in chunk:
                if merged and "text" in part and "text" in merged[-1] and \
                        part.get("thought") == merged[-1].get("thought"):
                    merged[-1] = {**merged[-1], "text": merged[-1]["text"] + part["text"]}
                else:
                    merged.append(part)
        return merged


def plan(req: dict[str, Any], tokens: int) -> Plan:
    """The answer to a validated request, ``tokens`` being the text length asked for (before limits)."""
    config = req.get("generationConfig") or {}
    chunks: list[list[dict[str, Any]]] = []
    thought_tokens = 0
    if thinking_on(config):
        thought_tokens = len(_THOUGHT_PIECES)
        if (config.get("thinkingConfig") or {}).get("includeThoughts"):
            chunks += [[{"text": piece, "thought": True}] for piece in _THOUGHT_PIECES]
    function = pick_function(req)
    if function is not None:
        schema = function.get("parameters") or function.get("parametersJsonSchema")
        args = example_value(schema) if schema else {}
        call = {"name": function["name"], "args": args if isinstance(args, dict) else {}}
        chunks.append([{"functionCall": call}])
        return Plan(chunks, "STOP", 10 + _tokens_of(_encode(call).decode()), thought_tokens)
    limit = config.get("maxOutputTokens")
    n, finish = (limit, "MAX_TOKENS") if limit is not None and limit < tokens else (tokens, "STOP")
    pieces, _ = _text_pieces(n, config.get("stopSequences"))
    output = len(pieces)
    if config.get("responseMimeType") in ("application/json", "text/x.enum"):
        text = _json_answer(config, "".join(pieces))
        pieces, finish, output = _split_json(text), "STOP", _tokens_of(text)
    chunks += [[{"text": piece}] for piece in pieces]
    return Plan(chunks, finish, output, thought_tokens)


def usage_metadata(prompt: int, media: int, output: int, thoughts: int, cached: int) -> dict[str, Any]:
    prompt_details = [{"modality": "TEXT", "tokenCount": prompt}]
    if media:
        prompt_details.append({"modality": "IMAGE", "tokenCount": media})
    usage: dict[str, Any] = {
        "promptTokenCount": prompt + media,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + media + output + thoughts,
        **TRAFFIC,
        "promptTokensDetails": prompt_details,
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": output}],
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if cached:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    return usage


def candidate(index: int, parts: list[dict[str, Any]], finish: str | None, whole: bool) -> dict[str, Any]:
    """One candidate; proto3 JSON leaves out index 0. Safety ratings and finishReason come with the end."""
    out: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if finish is not None:
        out["finishReason"] = finish
        if whole:
            out["avgLogprobs"] = -0.0625
        out["safetyRatings"] = _SAFETY
    if index:
        out["index"] = index
    return out


def response(candidates: list[dict[str, Any]], usage: dict[str, Any] | None, model: str, rid: str,
             created: str) -> dict[str, Any]:
    out: dict[str, Any] = {"candidates": candidates}
    if usage is not None:
        out["usageMetadata"] = usage
    out["modelVersion"] = model
    out["createTime"] = created
    out["responseId"] = rid
    return out


def sse_frame(chunk: dict[str, Any]) -> bytes:
    """One streamGenerateContent?alt=sse event, framed as Vertex frames it: ``data: {...}`` and CRLF CRLF."""
    return b"data: " + _encode(chunk) + b"\r\n\r\n"


# --- countTokens and embeddings -----------------------------------------------------


def count_tokens(req: dict[str, Any]) -> dict[str, Any]:
    prompt, media, chars = prompt_usage(req)
    details = [{"modality": "TEXT", "tokenCount": prompt}]
    if media:
        details.append({"modality": "IMAGE", "tokenCount": media})
    return {"totalTokens": prompt + media, "totalBillableCharacters": chars, "promptTokensDetails": details}


class EmbeddingInstance(msgspec.Struct, frozen=True):
    content: str
    tokens: int
    truncated: bool


def parse_predict(body: Any) -> tuple[list[EmbeddingInstance], int | None]:
    """A text-embedding :predict body checked: its instances and the outputDimensionality asked for."""
    if not isinstance(body, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    unknown = [key for key in body if key not in ("instances", "parameters")]
    if unknown:
        raise field_violations([("", f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
                                for key in unknown])
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise invalid_argument("Unable to submit request because it has no instances. Add at least one instance "
                               "with a content field and try again.")
    if len(instances) > EMBEDDING_MAX_INSTANCES:
        raise invalid_argument(f"Unable to submit request because it has {len(instances)} instances but the model "
                               f"supports at most {EMBEDDING_MAX_INSTANCES} per request.")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise invalid_argument("Unable to submit request because parameters must be an object.")
    auto_truncate = params.get("autoTruncate", params.get("auto_truncate", True))
    dim = params.get("outputDimensionality", params.get("output_dimensionality"))
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise invalid_argument(f"Unable to submit request because outputDimensionality {_encode(dim).decode()} is "
                               "not a positive integer.")
    out = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or not isinstance(instance.get("content"), str):
            raise invalid_argument(f"Unable to submit request because instances[{i}] has no content string.")
        task = instance.get("task_type", instance.get("taskType"))
        if task is not None and task not in EMBEDDING_TASK_TYPES:
            raise invalid_argument(f"Unable to submit request because instances[{i}] has an unsupported task_type "
                                   f"{_encode(task).decode()}; supported: {', '.join(sorted(EMBEDDING_TASK_TYPES))}.")
        if "title" in instance and task != "RETRIEVAL_DOCUMENT":
            raise invalid_argument(f"Unable to submit request because instances[{i}] has a title, which is only "
                                   "valid with task_type RETRIEVAL_DOCUMENT.")
        tokens = max(1, _tokens_of(instance["content"]))
        if tokens > EMBEDDING_MAX_TOKENS:
            if auto_truncate is False:
                raise invalid_argument(f"Unable to submit request because the input token count is {tokens} but the "
                                       f"model supports up to {EMBEDDING_MAX_TOKENS}. Reduce the input token count "
                                       "and try again, or set autoTruncate.")
            out.append(EmbeddingInstance(instance["content"], EMBEDDING_MAX_TOKENS, True))
        else:
            out.append(EmbeddingInstance(instance["content"], tokens, False))
    return out, dim


def predictions(instances: list[EmbeddingInstance], dim: int) -> dict[str, Any]:
    return {
        "predictions": [
            {"embeddings": {"values": _vector_floats(i.content.encode(), dim),
                            "statistics": {"truncated": i.truncated, "token_count": i.tokens}}}
            for i in instances
        ],
        "metadata": {"billableCharacterCount": sum(len(i.content) for i in instances)},
    }
