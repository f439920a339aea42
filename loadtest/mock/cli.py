"""The mock's command line: ``modelyard mock`` and ``python -m modelyard.loadtest.mock``.

``--api`` picks the app the Granian workers serve: ``openai`` (the default; the OpenAI-compatible
mock in ``loadtest.mock.openai``), ``anthropic`` (the Messages API, ``loadtest.mock.anthropic``),
``azure`` (Azure OpenAI's deployment routes and the Microsoft identity platform's token endpoint,
``loadtest.mock.azure``), ``vertex`` (Google Vertex AI's Gemini, embedding and Anthropic routes with
Google's OAuth, STS and IAM token endpoints, ``loadtest.mock.vertex``), ``bedrock`` (AWS Bedrock
Runtime, SigV4-checked, with STS's AssumeRoleWithWebIdentity on the same port,
``loadtest.mock.bedrock``) or ``oidc`` (an OpenID Connect issuer of client-credentials tokens,
``loadtest.mock.oidc``). Nothing here imports an app or Granian until ``run``, so the gateway's own
command line stays quick to start.

The identity flags are shared: ``--token-lifetime`` is the lifetime of the tokens a mock issues
(vertex, azure, oidc), and ``--oidc-jwks``/``--oidc-issuer``/``--oidc-audience`` name the OIDC issuer
whose tokens a mock accepts in exchange (vertex's STS, azure's client assertions, bedrock's STS).
They are read once here, before the workers start: ``--service-account`` key files are reduced to
their public keys, ``--oidc-jwks`` is fetched, ``--aws-keys`` and ``--signing-key`` are read, so a bad
file or an unreachable issuer stops the mock at once; ``--azure-client-secret`` travels to the
workers only as a digest, and the key that signs the mock's own access tokens (and, unless
``--sts-secret`` is given, its STS credentials) is drawn here for every worker to share.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable, TypeVar

import msgspec

from modelyard.loadtest.mock.config import (
    APIS,
    AWS_KEYS_ENV_VAR,
    CLOUD_ENV_VAR,
    ENV_VAR,
    PROVIDER_ENV_VAR,
    CloudConfig,
    MockConfig,
    ProviderConfig,
    ServiceAccountKey,
)

APP_TARGETS = {
    "openai": "modelyard.loadtest.mock.openai.app:app",
    "anthropic": "modelyard.loadtest.mock.anthropic.app:app",
    "azure": "modelyard.loadtest.mock.azure:app",
    "vertex": "modelyard.loadtest.mock.vertex.app:app",
    "bedrock": "modelyard.loadtest.mock.bedrock.app:app",
    "oidc": "modelyard.loadtest.mock.oidc:app",
}

T = TypeVar("T")


def _checked(name: str, convert: Callable[[str], T], refuses: Callable[[T], bool], expected: str) -> Callable[[str], T]:
    """An argparse type: `convert`, then refuse a value `refuses` (argparse's messages call it `name`)."""
    def parse(text: str) -> T:
        value = convert(text)
        if refuses(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value
    parse.__name__ = name
    return parse


_fraction = _checked("_fraction", float, lambda v: not 0.0 <= v <= 1.0, "a fraction between 0 and 1")
_non_negative = _checked("_non_negative", float, lambda v: v < 0, "a non-negative number")
_error_status = _checked("_error_status", int, lambda v: not 400 <= v <= 599, "an HTTP error status 400..599")
_count = _checked("_count", int, lambda v: v < 0, "a non-negative integer")
_positive = _checked("_positive", int, lambda v: v < 1, "a positive integer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="model to serve (repeatable); others get 404 model_not_found. Default: any model")
    parser.add_argument("--latency-ms", type=_non_negative, default=0.0, metavar="N",
                        help="delay before a non-streaming response (default 0)")
    parser.add_argument("--ttft-ms", type=_non_negative, default=0.0, metavar="N",
                        help="delay before the first streamed chunk (default 0)")
    parser.add_argument("--itl-ms", type=_non_negative, default=0.0, metavar="N",
                        help="delay between streamed token chunks (default 0)")
    parser.add_argument("--tokens", type=int, default=16, metavar="N",
                        help="completion tokens per response (default 16)")
    parser.add_argument("--error-rate", type=_fraction, default=0.0, metavar="F",
                        help="fraction of requests answered 500 server_error (default 0)")
    parser.add_argument("--stall-rate", type=_fraction, default=0.0, metavar="F",
                        help="fraction of requests never answered (default 0)")
    parser.add_argument("--name", default="mock", help="value of the x-mock-name response header (default mock)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="Granian worker processes (default 1)")
    parser.add_argument("--tls-cert", default=None, metavar="PATH",
                        help="serve HTTPS with this certificate (default: plain HTTP)")
    parser.add_argument("--tls-key", default=None, metavar="PATH", help="private key for --tls-cert")
    parser.add_argument("--embedding-dim", type=int, default=8, metavar="N", help="embedding vector length (default 8)")
    parser.add_argument("--status", type=_error_status, default=None, metavar="N",
                        help="answer every chat/completions/embeddings POST with this error status (400..599; "
                             "default: answer normally)")
    parser.add_argument("--retry-after", type=_count, default=None, metavar="SECONDS",
                        help="retry-after header on --status answers and on every 429/503 (default: 1 on 429 only)")
    parser.add_argument("--hang", action="store_true",
                        help="never answer a chat/completions/embeddings POST (default: off)")
    parser.add_argument("--die-after", type=_count, default=None, metavar="N",
                        help="cut streamed responses after N token chunks (default: never; x-mock-die-after wins)")
    parser.add_argument("--tokenize", action="store_true", help="serve vLLM's POST /tokenize (at the root)")
    parser.add_argument("--no-usage", action="store_true",
                        help="report no token usage, in answers or streams (as some self-hosted servers do)")
    _add_provider_arguments(parser)
    _add_identity_arguments(parser)
    _add_vertex_arguments(parser)
    _add_azure_arguments(parser)
    _add_bedrock_arguments(parser)
    _add_oidc_arguments(parser)


def _add_provider_arguments(parser: argparse.ArgumentParser) -> None:
    """--api and the flags only some APIs read."""
    parser.add_argument("--api", choices=APIS, default="openai",
                        help="provider API to mock: openai (default), anthropic (POST /v1/messages), azure "
                             "(/openai/deployments/{name}/...?api-version=, and Entra ID's token endpoint), vertex "
                             "(/v1/projects/{p}/locations/{l}/publishers/{google,anthropic}/models/{m}:{method}, "
                             "behind Google's token endpoints), bedrock (AWS Bedrock Runtime, SigV4, and STS on "
                             "POST /) or oidc (an OpenID Connect issuer)")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="anthropic/azure: the only key accepted (default: any non-empty key)")
    parser.add_argument("--cache-read", type=_count, default=0, metavar="N",
                        help="anthropic/bedrock: cache-read input tokens to report; vertex: "
                             "usageMetadata.cachedContentTokenCount (default 0; x-mock-cache-read wins)")
    parser.add_argument("--cache-creation", type=_count, default=0, metavar="N",
                        help="anthropic/bedrock: cache-creation (write) input tokens to report "
                             "(default 0; x-mock-cache-creation wins)")
    parser.add_argument("--error-after", type=_count, default=None, metavar="N",
                        help="anthropic: end streams with an overloaded_error event after N deltas; bedrock: with "
                             "the --stream-error exception (default: never; x-mock-error-after wins)")


def _add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    """The tokens a mock issues, and the OIDC issuer whose tokens it accepts in exchange."""
    ident = parser.add_argument_group("identity (--api vertex, azure, bedrock, oidc)")
    ident.add_argument("--token-lifetime", type=_positive, default=3600, metavar="SECONDS",
                       help="vertex/azure/oidc: lifetime of the tokens the mock issues: Google's access tokens "
                            "(vertex), Entra ID's (azure), the issuer's RS256 tokens, their exp (oidc) (default 3600)")
    ident.add_argument("--oidc-jwks", default=None, metavar="URL|FILE",
                       help="vertex/azure/bedrock: JWKS of the trusted OIDC issuer whose tokens the STS exchange "
                            "(vertex), client assertions (azure) and STS AssumeRoleWithWebIdentity (bedrock) "
                            "accept, e.g. http://127.0.0.1:N/jwks of a --api oidc mock; fetched at start, a file "
                            "path works too (default: trust no issuer)")
    ident.add_argument("--oidc-issuer", default=None, metavar="ISS",
                       help="vertex/azure/bedrock: the iss those OIDC tokens must carry (default: any that verifies)")
    ident.add_argument("--oidc-audience", action="append", default=[], metavar="AUD",
                       help="vertex/azure/bedrock: an aud accepted on those OIDC tokens (repeatable; default: "
                            "https://iam.googleapis.com/<the STS audience> on vertex, api://AzureADTokenExchange "
                            "on azure, any on bedrock)")


def _add_vertex_arguments(parser: argparse.ArgumentParser) -> None:
    vertex = parser.add_argument_group("vertex (--api vertex)")
    vertex.add_argument("--project", default=None, metavar="ID",
                        help="the only project served (others 403; default: any)")
    vertex.add_argument("--location", default=None, metavar="REGION",
                        help="the only location served (others 404; default: any)")
    vertex.add_argument("--service-account", action="append", default=[], metavar="FILE",
                        help="a service-account JSON key file whose signed assertions POST /token accepts "
                             "(repeatable; only its public key is kept)")
    vertex.add_argument("--service-account-public-key", action="append", default=[], metavar="PEM",
                        help="a PEM public key (file, or the PEM text) whose assertions POST /token accepts from "
                             "any issuer (repeatable)")


def _add_azure_arguments(parser: argparse.ArgumentParser) -> None:
    azure = parser.add_argument_group("azure's Entra ID token endpoint (--api azure)")
    azure.add_argument("--azure-tenant-id", default=None, metavar="TENANT",
                       help="the tenant of POST /{tenant}/oauth2/v2.0/token (default: any)")
    azure.add_argument("--azure-client-id", default=None, metavar="ID",
                       help="the one client_id the token endpoint knows (default: any)")
    azure.add_argument("--azure-client-secret", default=None, metavar="SECRET",
                       help="that client's secret (default: no secret accepted, only client assertions)")


def _add_bedrock_arguments(parser: argparse.ArgumentParser) -> None:
    aws = parser.add_argument_group("bedrock (--api bedrock; STS on the same port)")
    aws.add_argument("--region", default="us-east-1",
                     help="the region signatures must be scoped to (default us-east-1)")
    aws.add_argument("--aws-access-key-id", action="append", default=[], metavar="AKID",
                     help="an accepted access key id (repeatable; paired in order with --aws-secret-access-key). "
                          "Default, with no keys given: AWS's documented example pair AKIAIOSFODNN7EXAMPLE")
    aws.add_argument("--aws-secret-access-key", action="append", default=[], metavar="SECRET",
                     help="the secret of the --aws-access-key-id at the same position")
    aws.add_argument("--aws-keys", default=None, metavar="FILE",
                     help='accepted key pairs, a JSON file: {"AKID": "secret", ...} or [{"access_key_id": ..., '
                          f'"secret_access_key": ...}}, ...] (also read from ${AWS_KEYS_ENV_VAR} as JSON text)')
    aws.add_argument("--sts-duration", type=_positive, default=None, metavar="SECONDS",
                     help="lifetime of the credentials STS issues (default: the requested DurationSeconds, "
                          "else 3600); short ones test refreshing")
    aws.add_argument("--sts-role", action="append", default=[], metavar="ARN",
                     help="a role STS lets assume (repeatable; default any well-formed role ARN); others get "
                          "AccessDenied")
    aws.add_argument("--sts-secret", default=None, metavar="TEXT",
                     help="HMAC key of STS-issued credentials, so a restarted mock accepts them (default: the "
                          "run's token key, $MODELYARD_MOCK_TOKEN_KEY when set, else random)")
    aws.add_argument("--stream-error", default="modelStreamErrorException", metavar="KIND",
                     choices=("modelStreamErrorException", "internalServerException", "throttlingException",
                              "validationException", "serviceUnavailableException", "modelTimeoutException"),
                     help="the exception event --error-after ends a stream with: modelStreamErrorException "
                          "(default), internalServerException, throttlingException, validationException, "
                          "serviceUnavailableException or modelTimeoutException (x-mock-stream-error wins)")
    aws.add_argument("--throttle-rate", type=_fraction, default=0.0, metavar="F",
                     help="fraction of model calls answered 429 ThrottlingException (default 0)")


def _add_oidc_arguments(parser: argparse.ArgumentParser) -> None:
    oidc = parser.add_argument_group("oidc (--api oidc; --token-lifetime sets its tokens' exp)")
    oidc.add_argument("--signing-key", default=None, metavar="PEM",
                      help="RSA private key (PEM file) that signs tokens (default: one generated at start)")
    oidc.add_argument("--client-id", default="mock-client", help="the client id accepted (default mock-client)")
    oidc.add_argument("--client-secret", default="mock-secret",
                      help="that client's secret (default mock-secret)")
    oidc.add_argument("--issuer", default=None, metavar="URL",
                      help="the issuer (iss) to announce and sign (default: the URL the mock is reached at)")


def _service_account(path: str) -> ServiceAccountKey:
    """The public half of a service-account JSON key file."""
    from modelyard.loadtest.mock.jwt import public_key_from_pem, public_pem

    info = json.loads(Path(path).read_text())
    if not isinstance(info, dict) or not isinstance(info.get("private_key"), str) \
            or not isinstance(info.get("client_email"), str):
        raise ValueError(f"{path}: not a service-account key file (no private_key or client_email)")
    key_id = info.get("private_key_id")
    token_uri = info.get("token_uri")
    return ServiceAccountKey(
        public_key_pem=public_pem(public_key_from_pem(info["private_key"])),
        email=info["client_email"],
        key_id=key_id if isinstance(key_id, str) and key_id else None,
        token_uri=token_uri if isinstance(token_uri, str) and token_uri else None,
    )


def _public_key(value: str) -> ServiceAccountKey:
    from modelyard.loadtest.mock.jwt import public_key_from_pem, public_pem

    pem = value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text()
    return ServiceAccountKey(public_key_pem=public_pem(public_key_from_pem(pem)))


def config_from_args(args: argparse.Namespace) -> MockConfig:
    return MockConfig(
        models=tuple(args.model or ()),
        latency_ms=args.latency_ms,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        tokens=max(0, args.tokens),
        error_rate=args.error_rate,
        stall_rate=args.stall_rate,
        name=args.name,
        embedding_dim=max(1, args.embedding_dim),
        status=args.status,
        retry_after=args.retry_after,
        hang=args.hang,
        die_after=args.die_after,
        no_usage=args.no_usage,
        tokenize=args.tokenize,
    )


def provider_config_from_args(args: argparse.Namespace) -> ProviderConfig:
    """The provider settings; reads the key files and fetches the JWKS (ValueError/OSError when it cannot)."""
    from modelyard.loadtest.mock.jwt import fetch_jwks

    jwks_source = getattr(args, "oidc_jwks", None)
    secret = getattr(args, "azure_client_secret", None)
    return ProviderConfig(
        api=getattr(args, "api", None) or "openai",
        api_key=getattr(args, "api_key", None) or None,
        cache_read=getattr(args, "cache_read", 0) or 0,
        cache_creation=getattr(args, "cache_creation", 0) or 0,
        error_after=getattr(args, "error_after", None),
        token_lifetime=getattr(args, "token_lifetime", 3600) or 3600,
        oidc_jwks=fetch_jwks(jwks_source) if jwks_source else None,
        oidc_issuer=getattr(args, "oidc_issuer", None) or None,
        oidc_audiences=tuple(getattr(args, "oidc_audience", None) or ()),
        project=getattr(args, "project", None) or None,
        location=getattr(args, "location", None) or None,
        service_accounts=(*(_service_account(p) for p in getattr(args, "service_account", None) or ()),
                          *(_public_key(v) for v in getattr(args, "service_account_public_key", None) or ())),
        azure_tenant_id=getattr(args, "azure_tenant_id", None) or None,
        azure_client_id=getattr(args, "azure_client_id", None) or None,
        azure_client_secret_sha256=hashlib.sha256(secret.encode()).hexdigest() if secret else None,
    )


def cloud_config_from_args(args: argparse.Namespace) -> CloudConfig:
    """The bedrock/oidc settings; reads --aws-keys and --signing-key, and generates the signing key
    not given. A ValueError names a flag that cannot be used (never a secret)."""
    api = getattr(args, "api", None) or "openai"
    if api not in ("bedrock", "oidc"):
        return CloudConfig()
    if api == "oidc":
        from modelyard.loadtest.mock.jwt import load_private_key, new_key, private_pem

        if args.signing_key:
            try:
                key = load_private_key(Path(args.signing_key).read_bytes())
            except (OSError, ValueError, TypeError) as e:
                raise ValueError(f"--signing-key {args.signing_key}: {e}") from None
        else:
            key = new_key()
        return CloudConfig(signing_key=private_pem(key), client_id=args.client_id, client_secret=args.client_secret,
                           issuer=args.issuer or None)
    return CloudConfig(
        region=args.region,
        aws_keys=_aws_keys(args),
        sts_secret=args.sts_secret or "",
        sts_duration=args.sts_duration,
        sts_roles=tuple(args.sts_role),
        stream_error=args.stream_error,
        throttle_rate=args.throttle_rate,
    )


def _aws_keys(args: argparse.Namespace) -> dict[str, str]:
    from modelyard.loadtest.mock.bedrock.keys import parse_key_file

    ids, secret_keys = args.aws_access_key_id, args.aws_secret_access_key
    if len(ids) != len(secret_keys):
        raise ValueError("give as many --aws-secret-access-key as --aws-access-key-id")
    keys = dict(zip(ids, secret_keys))
    sources = []
    if args.aws_keys:
        sources.append((f"--aws-keys {args.aws_keys}", Path(args.aws_keys)))
    if os.environ.get(AWS_KEYS_ENV_VAR):
        sources.append((AWS_KEYS_ENV_VAR, os.environ[AWS_KEYS_ENV_VAR]))
    for name, source in sources:
        try:
            keys.update(parse_key_file(source.read_text() if isinstance(source, Path) else source))
        except (OSError, ValueError, msgspec.DecodeError) as e:
            raise ValueError(f"{name}: {type(e).__name__}: not a readable JSON set of key pairs") from None
    return keys


def export(args: argparse.Namespace) -> str:
    """Hand the configs and the token key to the workers (environment variables); the Granian app
    target for ``--api``. ValueError/OSError when an identity flag's file or URL cannot be read."""
    from modelyard.loadtest.mock.tokens import TOKEN_KEY_ENV, new_key

    provider = provider_config_from_args(args)
    os.environ[ENV_VAR] = msgspec.json.encode(config_from_args(args)).decode()
    os.environ[PROVIDER_ENV_VAR] = msgspec.json.encode(provider).decode()
    os.environ[CLOUD_ENV_VAR] = msgspec.json.encode(cloud_config_from_args(args)).decode()
    os.environ.setdefault(TOKEN_KEY_ENV, new_key())  # one given in the environment is shared by design
    try:
        bytes.fromhex(os.environ[TOKEN_KEY_ENV])
    except ValueError:
        raise ValueError(f"{TOKEN_KEY_ENV} must be hex digits") from None
    return APP_TARGETS.get(provider.api, APP_TARGETS["openai"])


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; Granian's supervisor handles SIGINT/SIGTERM."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    if bool(args.tls_cert) != bool(args.tls_key):
        print("mock: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        target = export(args)
    except (OSError, ValueError) as e:
        print(f"mock: {e}", file=sys.stderr)
        return 2
    tls = bool(args.tls_cert)
    server = Server(
        target,
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        workers=max(1, args.workers),
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        backlog=4096,
        log_level=LogLevels.warning,
        ssl_cert=Path(args.tls_cert) if tls else None,
        ssl_key=Path(args.tls_key) if tls else None,
    )
    print(f"mock listening on {'https' if tls else 'http'}://{args.host}:{args.port}", flush=True)
    server.serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelyard.loadtest.mock", description="Mock OpenAI-compatible LLM backend"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
