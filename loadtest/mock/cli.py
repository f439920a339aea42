"""The mock's command line: ``modelyard mock`` and ``python -m modelyard.loadtest.mock``.

``--api`` picks the app the Granian workers serve: ``openai`` (the default; the OpenAI-compatible
mock in ``loadtest.mock.openai``), ``anthropic`` (the Messages API, ``loadtest.mock.anthropic``) or
``azure`` (Azure OpenAI's deployment routes, ``loadtest.mock.azure``). Nothing here imports an app
or Granian until ``run``, so the gateway's own command line stays quick to start.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, TypeVar

import msgspec

from modelyard.loadtest.mock.config import APIS, ENV_VAR, PROVIDER_ENV_VAR, MockConfig, ProviderConfig

APP_TARGETS = {
    "openai": "modelyard.loadtest.mock.openai.app:app",
    "anthropic": "modelyard.loadtest.mock.anthropic.app:app",
    "azure": "modelyard.loadtest.mock.azure:app",
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
    """--api openai|anthropic|azure and the flags only those APIs read."""
    parser.add_argument("--api", choices=APIS, default="openai",
                        help="provider API to mock: openai (default), anthropic (POST /v1/messages) or azure "
                             "(/openai/deployments/{name}/...?api-version=)")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="anthropic/azure: the only key accepted (default: any non-empty key)")
    parser.add_argument("--cache-read", type=_count, default=0, metavar="N",
                        help="anthropic: usage.cache_read_input_tokens to report (default 0; x-mock-cache-read wins)")
    parser.add_argument("--cache-creation", type=_count, default=0, metavar="N",
                        help="anthropic: usage.cache_creation_input_tokens to report "
                             "(default 0; x-mock-cache-creation wins)")
    parser.add_argument("--error-after", type=_count, default=None, metavar="N",
                        help="anthropic: end streams with an overloaded_error event after N deltas "
                             "(default: never; x-mock-error-after wins)")


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
    return ProviderConfig(
        api=getattr(args, "api", None) or "openai",
        api_key=getattr(args, "api_key", None) or None,
        cache_read=getattr(args, "cache_read", 0) or 0,
        cache_creation=getattr(args, "cache_creation", 0) or 0,
        error_after=getattr(args, "error_after", None),
    )


def export(args: argparse.Namespace) -> str:
    """Hand both configs to the workers (environment variables); the Granian app target for ``--api``."""
    os.environ[ENV_VAR] = msgspec.json.encode(config_from_args(args)).decode()
    provider = provider_config_from_args(args)
    os.environ[PROVIDER_ENV_VAR] = msgspec.json.encode(provider).decode()
    return APP_TARGETS.get(provider.api, APP_TARGETS["openai"])


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; Granian's supervisor handles SIGINT/SIGTERM."""
    from pathlib import Path

    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    if bool(args.tls_cert) != bool(args.tls_key):
        print("mock: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    target = export(args)
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
