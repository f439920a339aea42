"""The mock's command line: ``modelyard mock`` and ``python -m modelyard.loadtest.mock``.

``--api`` picks the app the Granian workers serve: ``openai`` (the default; the OpenAI-compatible
mock in ``loadtest.mock.openai``), ``anthropic`` (the Messages API, ``loadtest.mock.anthropic``) or
``azure`` (Azure OpenAI's deployment routes and the Microsoft identity platform's token endpoint,
``loadtest.mock.azure``) or ``vertex`` (Google Vertex AI's Gemini, embedding and Anthropic routes
with Google's OAuth, STS and IAM token endpoints, ``loadtest.mock.vertex``). Nothing here imports
an app or Granian until ``run``, so the gateway's own command line stays quick to start.

The identity flags are read once here, before the workers start: ``--service-account`` key files
are reduced to their public keys and ``--oidc-jwks`` is fetched, so a bad file or an unreachable
issuer stops the mock at once; ``--azure-client-secret`` travels to the workers only as a digest,
and the key that signs the mock's own access tokens is drawn here for every worker to share.
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
    ENV_VAR,
    PROVIDER_ENV_VAR,
    MockConfig,
    ProviderConfig,
    ServiceAccountKey,
)

APP_TARGETS = {
    "openai": "modelyard.loadtest.mock.openai.app:app",
    "anthropic": "modelyard.loadtest.mock.anthropic.app:app",
    "azure": "modelyard.loadtest.mock.azure:app",
    "vertex": "modelyard.loadtest.mock.vertex.app:app",
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


def _add_provider_arguments(parser: argparse.ArgumentParser) -> None:
    """--api openai|anthropic|azure|vertex and the flags only those APIs read."""
    parser.add_argument("--api", choices=APIS, default="openai",
                        help="provider API to mock: openai (default), anthropic (POST /v1/messages), azure "
                             "(/openai/deployments/{name}/...?api-version=) or vertex "
                             "(/v1/projects/{p}/locations/{l}/publishers/{google,anthropic}/models/{m}:{method})")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="anthropic/azure: the only key accepted (default: any non-empty key)")
    parser.add_argument("--cache-read", type=_count, default=0, metavar="N",
                        help="anthropic: usage.cache_read_input_tokens to report; vertex: "
                             "usageMetadata.cachedContentTokenCount (default 0; x-mock-cache-read wins)")
    parser.add_argument("--cache-creation", type=_count, default=0, metavar="N",
                        help="anthropic: usage.cache_creation_input_tokens to report "
                             "(default 0; x-mock-cache-creation wins)")
    parser.add_argument("--error-after", type=_count, default=None, metavar="N",
                        help="anthropic: end streams with an overloaded_error event after N deltas "
                             "(default: never; x-mock-error-after wins)")
    _add_identity_arguments(parser)


def _add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    """The token endpoints of --api vertex (Google) and --api azure (Microsoft Entra ID)."""
    parser.add_argument("--token-lifetime", type=_positive, default=3600, metavar="SECONDS",
                        help="vertex/azure: lifetime of the access tokens the mock issues (default 3600)")
    parser.add_argument("--oidc-jwks", default=None, metavar="URL",
                        help="vertex/azure: JWKS of the trusted OIDC issuer whose tokens the STS exchange (vertex) "
                             "and client assertions (azure) accept; fetched at start (a file path works too)")
    parser.add_argument("--oidc-issuer", default=None, metavar="ISS",
                        help="vertex/azure: the iss those OIDC tokens must carry (default: any that verifies)")
    parser.add_argument("--oidc-audience", action="append", default=[], metavar="AUD",
                        help="vertex/azure: an aud accepted on those OIDC tokens (repeatable; default: "
                             "https://iam.googleapis.com/<the STS audience> on vertex, "
                             "api://AzureADTokenExchange on azure)")
    parser.add_argument("--project", default=None, metavar="ID",
                        help="vertex: the only project served (others 403; default: any)")
    parser.add_argument("--location", default=None, metavar="REGION",
                        help="vertex: the only location served (others 404; default: any)")
    parser.add_argument("--service-account", action="append", default=[], metavar="FILE",
                        help="vertex: a service-account JSON key file whose signed assertions POST /token accepts "
                             "(repeatable; only its public key is kept)")
    parser.add_argument("--service-account-public-key", action="append", default=[], metavar="PEM",
                        help="vertex: a PEM public key (file, or the PEM text) whose assertions POST /token "
                             "accepts from any issuer (repeatable)")
    parser.add_argument("--azure-tenant-id", default=None, metavar="TENANT",
                        help="azure: the tenant of POST /{tenant}/oauth2/v2.0/token (default: any)")
    parser.add_argument("--azure-client-id", default=None, metavar="ID",
                        help="azure: the one client_id the token endpoint knows (default: any)")
    parser.add_argument("--azure-client-secret", default=None, metavar="SECRET",
                        help="azure: that client's secret (default: no secret accepted, only client assertions)")


def _service_account(path: str) -> ServiceAccountKey:
    """The public half of a service-account JSON key file."""
    from modelyard.loadtest.mock.jwt_verify import public_key_from_pem, public_pem

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
    from modelyard.loadtest.mock.jwt_verify import public_key_from_pem, public_pem

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
    from modelyard.loadtest.mock.jwt_verify import fetch_jwks

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


def export(args: argparse.Namespace) -> str:
    """Hand both configs and the token key to the workers (environment variables); the Granian app
    target for ``--api``. ValueError/OSError when an identity flag's file or URL cannot be read."""
    from modelyard.loadtest.mock.tokens import TOKEN_KEY_ENV, new_key

    provider = provider_config_from_args(args)
    os.environ[ENV_VAR] = msgspec.json.encode(config_from_args(args)).decode()
    os.environ[PROVIDER_ENV_VAR] = msgspec.json.encode(provider).decode()
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
