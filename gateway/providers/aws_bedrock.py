"""AWS Bedrock's Converse API: schema "AWSBedrock", every attempt signed with SigV4.

Paths: OpenAI chat completions and Anthropic messages go to `{prefix}/model/{modelId}/converse`, or
`/converse-stream` when the client asked for a stream; OpenAI embeddings to `/model/{modelId}/invoke`.
modelId is the request's model after modelNameOverride, percent-encoded with every reserved
character escaped (`us.anthropic.claude-3-5-sonnet-20241022-v2:0` goes as `...-v2%3A0`, an
inference-profile ARN's '/' as %2F): the proxy inserts it between the two parts upstream_path
returns, as it does Azure's deployment, and takes stream_tail's second part for a stream.

Credentials: the worker's copy of the credentials segment (providers/credentials.py), under the
key its AWSCredentials policy names (Backend.cloud.key, the policy's "namespace/name"), holds one
JSON object as text:

    {"access_key_id": "AKIA...", "secret_access_key": "...", "session_token": "..." | null,
     "region": "us-east-1"}

session_token is optional (static IAM user keys have none) and is sent as x-amz-security-token;
The signing region is the policy's `region` (Backend.cloud.region), else the entry's, else the one
the endpoint's host names (bedrock-runtime.<region>.amazonaws.com). The control process's
credential refresher (config/cloud_credentials/) publishes the entry; until it has, and while it
cannot be read, the hook returns None and the client gets a 401.

The hook signs (botocore's SigV4Auth, service "bedrock") the attempt's method, path with its query,
Host and body as they go out: the signed headers are host and the x-amz-* headers botocore adds.
The other headers (the client's, the backendRef's edits) travel unsigned, which SigV4 allows, so a
header edit never invalidates a signature. Signing costs one canonical request and four HMACs per
attempt, in this provider only: other providers' hooks are unchanged.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

if TYPE_CHECKING:
    from botocore.credentials import Credentials

from modelyard.core.table import Backend, CredentialOverride
from modelyard.core.wire import HEADER_ENCODING, header_value_problem
from modelyard.gateway.providers.base import AuthHook, Provider, UpstreamRequest
from modelyard.gateway.providers.credentials import CREDENTIALS, WorkerCredentials
from modelyard.gateway.translators import Translator
from modelyard.gateway.translators.anthropic_bedrock import AnthropicToBedrock
from modelyard.gateway.translators.openai_bedrock import OpenAIToBedrock
from modelyard.gateway.translators.openai_bedrock_embeddings import OpenAIToBedrockEmbeddings

# botocore's signer logs the canonical request at DEBUG, and with it x-amz-security-token's value: a
# worker never lets that logger go below INFO, whatever level the rest of logging runs at.
logging.getLogger("botocore.auth").setLevel(logging.INFO)

EVENT_STREAM_TYPE = "application/vnd.amazon.eventstream"  # ConverseStream's content-type
SERVICE = "bedrock"  # the SigV4 signing name of bedrock-runtime
# The headers the hook adds, in the order it adds them; a client's own are never forwarded.
SIGNED_HEADERS = ("authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token")
# bedrock-runtime.us-east-1.amazonaws.com, bedrock-runtime-fips.us-gov-west-1.amazonaws.com, ...
_REGION_IN_HOST = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?(?::\d+)?$")


class AWSKeys(msgspec.Struct, frozen=True):
    """One published credentials entry (the JSON object above). Its repr names no secret."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    region: str | None = None

    def __repr__(self) -> str:
        return (f"AWSKeys(access_key_id={self.access_key_id[:4]}..., session_token="
                f"{'set' if self.session_token else 'none'}, region={self.region!r})")

    __str__ = __repr__


_decode_keys = msgspec.json.Decoder(AWSKeys)


def parse_keys(value: str | None) -> AWSKeys | None:
    """The entry as published, or None when it is missing or malformed (the error names no value)."""
    if value is None:
        return None
    try:
        keys = _decode_keys.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not keys.access_key_id or not keys.secret_access_key:
        return None
    return keys


def region_of_host(host: str) -> str | None:
    match = _REGION_IN_HOST.match(host.lower())
    return match.group(1) if match else None


class _Signer:
    """The botocore pieces for one credentials entry, built once per credentials generation."""

    __slots__ = ("credentials", "region")

    def __init__(self, keys: AWSKeys, region: str | None = None):
        # botocore is imported once AWS keys are published, not with every worker (a fifth of its start-up).
        from botocore.credentials import Credentials

        self.credentials = Credentials(keys.access_key_id, keys.secret_access_key, keys.session_token or None)
        self.region = region or keys.region or None

    def __repr__(self) -> str:
        return f"_Signer(region={self.region!r})"


def sigv4_auth(mutation_lines: bytes, key: str, service: str = SERVICE,
               credentials: WorkerCredentials = CREDENTIALS, region: str | None = None) -> AuthHook:
    """SigV4 over each attempt with the AWS keys published under `key`; the backendRef's header
    edits first. None (a 401) while no usable entry is published, or no region is known."""
    cached: list[Any] = [-1, None]  # (credentials generation, _Signer | None)

    def load() -> None:
        keys = parse_keys(credentials.values.get(key))
        cached[:] = [credentials.generation, _Signer(keys, region) if keys is not None else None]

    def hook(head: list[bytes], body: bytes, client: Any) -> bytes | None:
        if cached[0] != credentials.generation:
            load()
        if cached[1] is None and credentials.recheck():  # published since the last tick?
            load()
        signer: _Signer | None = cached[1]
        if signer is None:
            return None
        lines = sign(UpstreamRequest(head, body), signer.credentials, signer.region, service)
        return None if lines is None else mutation_lines + lines
    return hook


def sign(request: UpstreamRequest, credentials: Credentials, region: str | None, service: str = SERVICE) -> bytes | None:
    """The SigV4 header lines for one request as it goes out; None without a host or a region."""
    host = next((value for name, value in request.headers if name.lower() == b"host"), None)
    if not host:
        return None
    host_text = host.decode("latin-1")
    region = region or region_of_host(host_text)
    if region is None:
        return None
    # The scheme is not signed; https keeps botocore signing the payload's hash (as it always does).
    from botocore.auth import SigV4Auth  # loaded by _Signer already: a dictionary lookup per attempt
    from botocore.awsrequest import AWSRequest

    aws = AWSRequest(method=request.method.decode("ascii"), url=f"https://{host_text}{request.path.decode('ascii')}",
                     headers={"host": host_text}, data=request.body)
    SigV4Auth(credentials, service, region).add_auth(aws)
    out = []
    for name in SIGNED_HEADERS:
        value = aws.headers.get(name)
        if value is not None:
            if header_value_problem(value, None) is not None:  # a session token a header cannot carry
                return None
            out.append(f"{name}: {value}\r\n")
    return "".join(out).encode(HEADER_ENCODING)


class AWSBedrock(Provider):
    schema = "AWSBedrock"
    metric_name = "aws.bedrock"
    # Chat (OpenAI's completions, Anthropic's messages) through Converse; embeddings through InvokeModel,
    # whose body is the model's own (Titan's, Cohere's: translators/openai_bedrock_embeddings.py).
    # Converse has no text completions.
    paths: ClassVar[dict[str, str]] = {"/chat/completions": "/converse", "/messages": "/converse",
                                       "/embeddings": "/invoke"}
    stream_paths: ClassVar[dict[str, str]] = {"/chat/completions": "/converse-stream", "/messages": "/converse-stream"}
    translators: ClassVar[dict[str, Translator | None]] = {"openai": OpenAIToBedrock(), "anthropic": AnthropicToBedrock()}
    operation_translators: ClassVar[dict[tuple[str, str], Translator | None]] = {
        ("openai", "/embeddings"): OpenAIToBedrockEmbeddings()}
    # The signature's headers; an Anthropic client's anthropic-beta flags travel in the body instead.
    owned_headers = frozenset((*SIGNED_HEADERS, "anthropic-beta"))
    # ConverseStream's answer; the translators turn it into the client's SSE.
    stream_content_types = (EVENT_STREAM_TYPE,)

    def upstream_path(self, backend: Backend, operation: str) -> tuple[bytes, bytes | None] | None:
        tail = self.paths.get(operation)
        return None if tail is None else (f"{backend.prefix}/model/".encode("latin-1"), tail.encode("latin-1"))

    def auth(self, backend: Backend, mutation_lines: bytes, auth_lines: bytes,
             override: CredentialOverride | None) -> AuthHook:
        # No API keys and no client keys: the published AWS keys sign every attempt.
        cloud = backend.cloud
        if cloud is None:  # no AWSCredentials policy: the keys published under the backend's own name
            return sigv4_auth(mutation_lines, backend.name)
        return sigv4_auth(mutation_lines, cloud.key, region=cloud.region or None)
