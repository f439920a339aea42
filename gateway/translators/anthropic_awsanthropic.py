"""Anthropic Messages client -> Claude on AWS Bedrock's InvokeModel (schema AWSAnthropic).

The AWSAnthropic provider (gateway/providers/aws_anthropic.py) sends it to POST
/model/{modelId}/invoke, or /invoke-with-response-stream for `stream: true`. The body is the
client's (anthropic_hosted.hosted_body): without `model` and `stream`, which Bedrock refuses as
extra inputs, with `anthropic_version: "bedrock-2023-05-31"`, the only value Bedrock takes (a
client's own is replaced; the backend's schema.version is not used), and with the flags of the
client's anthropic-beta header in `anthropic_beta` (request_with_headers).

Beta flags: Bedrock refuses the whole request (400) for a flag it does not know, and Anthropic
clients send flags only Anthropic's API knows (Claude Code sends several on every request). So only
the flags in BEDROCK_BETAS go from the header into the body (others are dropped), after renaming
those Bedrock knows under another name (BETA_ALIASES). The list is what Bedrock was found to take;
a flag missing from it is dropped until it is added. A client that writes `anthropic_beta` in its
body itself (Anthropic's Bedrock SDK does) keeps it as it wrote it.

Answers: a whole answer is Anthropic's message JSON, relayed as it is (its usage read for
accounting); a stream is Anthropic's events wrapped in event-stream messages
(anthropic_awsanthropic_stream.py), relayed as Anthropic's SSE. Errors: Bedrock's ({"message"})
in Anthropic's shape (anthropic_bedrock_answer.anthropic_error_from_bedrock).
"""

from __future__ import annotations

from typing import Any

from .anthropic_awsanthropic_stream import InvokeModelStream
from .anthropic_bedrock_answer import anthropic_error_from_bedrock
from .anthropic_hosted import AnthropicEvents, AnthropicToHosted, beta_flags, hosted_body
from .common import TranslationError, dumps

BEDROCK_VERSION = "bedrock-2023-05-31"
# The anthropic-beta flags Bedrock takes in anthropic_beta (prompt caching needs none on Bedrock).
BEDROCK_BETAS = frozenset({
    "computer-use-2024-10-22", "computer-use-2025-01-24", "context-1m-2025-08-07", "context-management-2025-06-27",
    "dev-full-thinking-2025-05-14", "fine-grained-tool-streaming-2025-05-14", "interleaved-thinking-2025-05-14",
    "mcp-client-2025-04-04", "mcp-client-2025-11-20", "model-context-window-exceeded-2025-08-26",
    "output-128k-2025-02-19", "pdfs-2024-09-25", "search-results-2025-06-09", "token-counting-2024-11-01",
    "token-efficient-tools-2025-02-19", "tool-search-tool-2025-10-19", "web-search-2025-03-05",
})
# Anthropic API flag -> the Bedrock flag for the same feature.
BETA_ALIASES = {"advanced-tool-use-2025-11-20": "tool-search-tool-2025-10-19"}

__all__ = ["BEDROCK_BETAS", "BEDROCK_VERSION", "AnthropicToAWSAnthropic", "bedrock_betas"]


def bedrock_betas(header: str | None) -> list[str]:
    """The flags of an anthropic-beta header that Bedrock takes, renamed as Bedrock names them."""
    out: list[str] = []
    for flag in beta_flags(header):
        flag = BETA_ALIASES.get(flag, flag)
        if flag in BEDROCK_BETAS and flag not in out:
            out.append(flag)
    return out


def invoke_body(body: dict[str, Any], betas: list[str]) -> bytes:
    """An Anthropic body as InvokeModel takes it."""
    if not isinstance(body.get("messages"), list):
        raise TranslationError("messages: must be a list")
    return dumps(hosted_body(body, BEDROCK_VERSION, False, betas))


class AnthropicToAWSAnthropic(AnthropicToHosted):
    def _body(self, body: dict[str, Any], betas: list[str]) -> bytes:
        return invoke_body(body, betas)

    def _betas(self, header: str | None) -> list[str]:
        return bedrock_betas(header)

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return anthropic_error_from_bedrock(status, body)

    def stream(self, include_usage: bool) -> InvokeModelStream:
        return InvokeModelStream(AnthropicEvents())  # Anthropic streams always carry usage
