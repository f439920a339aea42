"""Which provider's API the mock backend speaks (``--api``), and the flags only those APIs read.

``openai`` (the default) is the plain OpenAI-compatible mock in ``loadtest.mock_backend``;
``anthropic`` serves the Anthropic Messages API (``loadtest.anthropic_wire``) and ``azure``
Azure OpenAI's deployment routes (``loadtest.azure_wire``). The settings here travel to the
Granian workers in their own environment variable, beside ``MockConfig``.
"""

from __future__ import annotations

import argparse
import os

import msgspec

ENV_VAR = "MODELYARD_MOCK_PROVIDER"
APIS = ("openai", "anthropic", "azure")
_TARGETS = {"anthropic": "modelyard.loadtest.mock.anthropic_wire:app", "azure": "modelyard.loadtest.mock.azure_wire:app"}


class ProviderConfig(msgspec.Struct, frozen=True):
    api: str = "openai"
    api_key: str | None = None  # None: any non-empty key is accepted
    cache_read: int = 0  # Anthropic usage.cache_read_input_tokens
    cache_creation: int = 0  # Anthropic usage.cache_creation_input_tokens
    error_after: int | None = None  # Anthropic: an `event: error` after this many stream deltas


def provider_config_from_env() -> ProviderConfig:
    raw = os.environ.get(ENV_VAR)
    return msgspec.json.decode(raw, type=ProviderConfig) if raw else ProviderConfig()


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def config_from_args(args: argparse.Namespace) -> ProviderConfig:
    return ProviderConfig(
        api=getattr(args, "api", None) or "openai",
        api_key=getattr(args, "api_key", None) or None,
        cache_read=getattr(args, "cache_read", 0) or 0,
        cache_creation=getattr(args, "cache_creation", 0) or 0,
        error_after=getattr(args, "error_after", None),
    )


def export(args: argparse.Namespace, default_target: str) -> str:
    """Hand the provider settings to the workers; the Granian app target for ``--api``."""
    config = config_from_args(args)
    os.environ[ENV_VAR] = msgspec.json.encode(config).decode()
    return _TARGETS.get(config.api, default_target)
