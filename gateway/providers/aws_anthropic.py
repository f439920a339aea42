"""Claude on AWS Bedrock through InvokeModel, in Anthropic's own Messages shapes: schema "AWSAnthropic".

Paths: `{prefix}/model/{modelId}/invoke`, or `/invoke-with-response-stream` when the client asked
for a stream; modelId is the request's model after modelNameOverride, percent-encoded with every
reserved character escaped, as for AWSBedrock (the proxy inserts it between the two parts
upstream_path returns, and takes stream_tail's second part for a stream). Anthropic clients'
messages and OpenAI clients' chat completions both go there: InvokeModel takes Anthropic's body.

Translators: Anthropic clients' bodies go as they are but for Bedrock's changes, and their answers
come back as they are, a stream unwrapped from Bedrock's event-stream framing into Anthropic's SSE
(translators/anthropic_awsanthropic.py); OpenAI clients' go through the OpenAI -> Anthropic
translation first (translators/openai_awsanthropic.py). The client's anthropic-beta header is
moved into the body (the flags Bedrock takes): the header itself does not go upstream.

Auth: SigV4, signed as for AWSBedrock (aws_bedrock.sigv4_auth) with the AWS keys published under the
backend's AWSCredentials policy (Backend.cloud.key) and its region.
"""

from __future__ import annotations

from typing import ClassVar

from modelyard.gateway.providers.aws_bedrock import EVENT_STREAM_TYPE, SIGNED_HEADERS, AWSBedrock
from modelyard.gateway.translators import Translator
from modelyard.gateway.translators.anthropic_awsanthropic import AnthropicToAWSAnthropic
from modelyard.gateway.translators.openai_awsanthropic import OpenAIToAWSAnthropic


class AWSAnthropic(AWSBedrock):
    schema = "AWSAnthropic"
    metric_name = "aws.bedrock"
    # Chat completions and messages: InvokeModel has no completions or embeddings for Claude.
    paths: ClassVar[dict[str, str]] = {"/chat/completions": "/invoke", "/messages": "/invoke"}
    stream_paths: ClassVar[dict[str, str]] = {"/chat/completions": "/invoke-with-response-stream",
                                              "/messages": "/invoke-with-response-stream"}
    translators: ClassVar[dict[str, Translator | None]] = {"openai": OpenAIToAWSAnthropic(),
                                                           "anthropic": AnthropicToAWSAnthropic()}
    operation_translators: ClassVar[dict[tuple[str, str], Translator | None]] = {}
    owned_headers = frozenset((*SIGNED_HEADERS, "anthropic-beta"))
    stream_content_types = (EVENT_STREAM_TYPE,)  # InvokeModelWithResponseStream's answer
    # upstream_path, stream_tail and auth (SigV4) are AWSBedrock's.
