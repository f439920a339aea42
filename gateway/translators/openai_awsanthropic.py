"""OpenAI chat completions client -> Claude on AWS Bedrock's InvokeModel (schema AWSAnthropic).

Composed of two translations: OpenAI's request to Anthropic's (openai_anthropic.build_request, with
every mapping decision described there), then Anthropic's body as InvokeModel takes it
(anthropic_awsanthropic.invoke_body: no model nor stream, Bedrock's anthropic_version). The
answer is Anthropic's, read by openai_anthropic's answer half; a stream is Anthropic's events in
Bedrock's event-stream wrapping, unwrapped (anthropic_awsanthropic_stream.InvokeModelStream) and
read by openai_anthropic's stream half. Errors are Bedrock's ({"message"}), in OpenAI's shape as
for Converse (openai_bedrock_answer.error_from_bedrock).
"""

from __future__ import annotations

from typing import Any

from .anthropic_awsanthropic import invoke_body
from .anthropic_awsanthropic_stream import InvokeModelStream
from .common import guarded
from .openai_anthropic import AnthropicStreamToOpenAI, OpenAIToAnthropic, build_request
from .openai_bedrock_answer import error_from_bedrock

__all__ = ["OpenAIToAWSAnthropic"]

class OpenAIToAWSAnthropic(OpenAIToAnthropic):
    """OpenAIToAnthropic (whose answer half it keeps) with InvokeModel's body, errors and stream."""

    def request(self, body: dict[str, Any], model: str) -> bytes:
        return invoke_body(guarded(build_request, body, model), [])

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return error_from_bedrock(status, body)

    def stream(self, include_usage: bool) -> InvokeModelStream:  # type: ignore[override]
        return InvokeModelStream(AnthropicStreamToOpenAI(include_usage))
