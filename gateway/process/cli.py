"""The `modelyard` command: run, check, mock and demo."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

DEFAULT_ADMIN_PORT = 1064
OLLAMA_URL = "http://127.0.0.1:11434/v1"
_RESOLVE = re.compile(r"^(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d+)=(?P<addr>\[[^\]]+\]|[^=]+):(?P<to>\d+)$")


def _resolve_arg(text: str) -> tuple[str, str]:
    m = _RESOLVE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT=ADDR:PORT, got {text!r}")
    return f"{m['host'].strip('[]')}:{m['port']}", f"{m['addr'].strip('[]')}:{m['to']}"


def _header_label(text: str) -> tuple[str, str]:
    from modelyard.core.settings import header_label_arg
    try:
        return header_label_arg(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _tokenizer_arg(text: str) -> tuple[str, str]:
    from modelyard.core.tokenizer import parse_tokenizer_arg
    try:
        return parse_tokenizer_arg(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError("must be between 0 and 86400 seconds")
    return value


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def version() -> str:
    """The installed distribution's version, else (a source tree without install) pyproject.toml's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("modelyard")
    except PackageNotFoundError:
        pass
    try:
        import tomllib
        with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"]) + "+source"
    except (OSError, KeyError, ValueError):
        return "unknown"


RUN_EXAMPLES = """examples:
  modelyard run --backend http://127.0.0.1:11434/v1    # every model to one backend, no config
  modelyard run --config /etc/modelyard --workers 4     # a directory of YAML, watched for edits
  modelyard run -c config/demo --resolve mock.demo.internal:8000=127.0.0.1:8000  # modelyard mock's port
  OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=sk-... modelyard run
"""

CHECK_EXAMPLES = """examples:
  modelyard check config/demo                   # exit 0 and a line per route, or exit 1 and every error
  modelyard check /etc/modelyard extra-routes.yaml
"""

MOCK_EXAMPLES = """examples:
  modelyard mock --port 8000 --model demo-chat --ttft-ms 200 --itl-ms 20
  modelyard mock --port 8001 --status 429 --retry-after 2   # a rate-limited backend
  modelyard mock --port 8002 --api anthropic --api-key sk-test --cache-read 100
  modelyard mock --port 8003 --api bedrock --sts-duration 30 --oidc-jwks http://127.0.0.1:8004/jwks
"""


def build_parser() -> argparse.ArgumentParser:
    from modelyard.core.settings import DEFAULT_MAX_COUNT_BYTES

    parser = argparse.ArgumentParser(
        prog="modelyard", description="An AI gateway for Envoy AI Gateway resources.",
        epilog="Run `modelyard COMMAND --help` for a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"modelyard {version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    raw = argparse.RawDescriptionHelpFormatter
    run = sub.add_parser("run", help="start the gateway", description="Start the gateway.",
                         epilog=RUN_EXAMPLES, formatter_class=raw)
    run.add_argument("--config", "-c", action="append", default=[], metavar="PATH",
                     help="a YAML file or a directory of them (repeatable); watched for changes (default: none, "
                          "see --backend)")
    run.add_argument("--backend", metavar="URL",
                     help="a default OpenAI-compatible backend for every model no rule matches "
                          "(with no --config: for every model). Default: none with --config; without it "
                          "$OPENAI_BASE_URL (sending $OPENAI_API_KEY), else a local Ollama at " + OLLAMA_URL)
    run.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    run.add_argument("--port", type=int, help="data-plane port (default: the Gateway listener's port, else 1975)")
    run.add_argument("--admin-host", default="127.0.0.1",
                     help="address the admin port listens on (default 127.0.0.1; 0.0.0.0 for probes from outside)")
    run.add_argument("--admin-port", type=int, default=DEFAULT_ADMIN_PORT,
                     help="port of /healthz, /readyz, /metrics and /config (default %(default)s)")
    run.add_argument("--workers", type=_positive, default=default_workers(),
                     help="worker processes (default: the number of usable cores)")
    run.add_argument("--resolve", action="append", default=[], type=_resolve_arg, metavar="HOST:PORT=ADDR:PORT",
                     help="connect to ADDR:PORT wherever a backend names HOST:PORT (repeatable), like curl's option "
                          "(default: none)")
    run.add_argument("--retries", type=int, default=2, metavar="N",
                     help="retries per request on the next eligible backend (default 2; a route may say otherwise)")
    run.add_argument("--allow-backend-header", action="store_true",
                     help="let clients pick a backend with x-ai-gateway-backend: NAME, among those the "
                          "matched route's rules reference (default: off; routes may opt in or out by annotation)")
    run.add_argument("--access-log", default="-", metavar="PATH",
                     help="one JSON line per request: - for stdout (default), a file, or off")
    run.add_argument("--metrics-header", action="append", default=[], type=_header_label, metavar="HEADER[=LABEL]",
                     help="add a request header's value as a label of the gen_ai_* metrics (repeatable), "
                          "e.g. x-tenant-id=tenant (default: none)")
    run.add_argument("--tokenizer", action="append", default=[], type=_tokenizer_arg, metavar="PATTERN=PATH",
                     help="count tokens for models matching PATTERN (a glob) with this tokenizer.json or model "
                          "folder, when a backend reports no usage (repeatable; default: a Qwen tokenizer)")
    run.add_argument("--max-count-bytes", type=_positive, default=DEFAULT_MAX_COUNT_BYTES, metavar="BYTES",
                     help="largest request body that /tokenize and /v1/messages/count_tokens count in the gateway "
                          "(413 over it; passed through to a backend that serves them, as is); also the characters "
                          "a usage estimate counts before extrapolating the rest (default %(default)s = 4 MiB, about a "
                          "million tokens of English)")
    run.add_argument("--max-connections", type=_positive, metavar="N",
                     help="concurrent client connections per instance, idle keep-alives and streams alike (default: "
                          "a ClientTrafficPolicy's connection.connectionLimit.value, else 16384; set at start)")
    run.add_argument("--header-timeout", type=_seconds, metavar="SECONDS",
                     help="close a connection that has not sent a complete request head within this time, idle "
                          "keep-alive connections included (default: the smaller of a ClientTrafficPolicy's "
                          "timeout.http.requestReceivedTimeout and idleTimeout, else 30; set at start)")
    run.add_argument("--body-timeout", type=_seconds, metavar="SECONDS",
                     help="answer 408 to a request whose body has not arrived within this time (default: a "
                          "ClientTrafficPolicy's timeout.http.requestReceivedTimeout, else 60; 0: none; set at start)")
    run.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                     help="seconds to let in-flight requests and streams finish on SIGTERM (default 30)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                     help="least severe log messages shown (default info)")

    check = sub.add_parser("check", help="validate configuration without starting anything",
                           description="Validate configuration without starting anything.",
                           epilog=CHECK_EXAMPLES, formatter_class=raw)
    check.add_argument("paths", nargs="+", metavar="PATH",
                       help="a YAML file or a directory of them, as for run --config (at least one)")

    from modelyard.loadtest.mock import cli as mock_cli

    mock = sub.add_parser("mock", help="start the mock OpenAI-compatible backend",
                          description="Start the mock OpenAI-compatible (or Anthropic, Azure, Vertex AI or\n"
                                      "Bedrock) backend, or OIDC issuer, that the tests and benchmarks use.",
                          epilog=MOCK_EXAMPLES, formatter_class=raw)
    mock_cli.add_arguments(mock)

    from modelyard.loadtest.bench import harness as bench

    bench_cmd = sub.add_parser("bench", help="benchmark against direct calls, nginx, Envoy and LiteLLM")
    bench.add_arguments(bench_cmd)

    demo = sub.add_parser("demo", help="start the bundled mock backend and the gateway on a demo config")
    demo.add_argument("--port", type=int, default=1975, help="the gateway's data-plane port (default 1975)")
    demo.add_argument("--admin-port", type=int, default=DEFAULT_ADMIN_PORT,
                      help="the gateway's admin port (default %(default)s)")
    demo.add_argument("--workers", type=_positive, default=min(2, default_workers()),
                      help="gateway worker processes (default 2, or 1 on a single core)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "check":
        return cmd_check(args.paths)
    if args.command == "bench":
        from modelyard.loadtest.bench import harness as bench
        return bench.main(args)
    if args.command == "mock":
        from modelyard.loadtest.mock import cli as mock_cli
        return mock_cli.run(args)
    return cmd_demo(args)


def cmd_run(args: argparse.Namespace) -> int:
    from modelyard.config.control import RunOptions
    from modelyard.gateway.process.supervisor import run

    backend, api_key, source = args.backend, None, "--backend"
    if not args.config and not backend:
        backend = os.environ.get("OPENAI_BASE_URL")
        api_key = os.environ.get("OPENAI_API_KEY")
        source = "OPENAI_BASE_URL" + (", API key from OPENAI_API_KEY" if api_key else "")
        if not backend:
            backend, source = OLLAMA_URL, "no --config, --backend or OPENAI_BASE_URL given: a local Ollama"
    elif backend:
        api_key = os.environ.get("OPENAI_API_KEY") if not args.config else None
        source += ", API key from OPENAI_API_KEY" if api_key else ""
    if backend:
        from modelyard.config.backends import backend_from_url
        try:
            backend_from_url(backend, api_key)
        except ValueError as e:
            print(f"modelyard: {e}", file=sys.stderr)
            return 2
    opts = RunOptions(
        config=list(args.config), backend=backend, api_key=api_key, host=args.host, port=args.port,
        admin_host=args.admin_host, admin_port=args.admin_port, workers=args.workers, resolve=dict(args.resolve),
        grace=args.grace, max_connections=args.max_connections, header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        retries=max(0, args.retries), allow_backend_header=args.allow_backend_header,
        access_log=args.access_log, header_labels=list(args.metrics_header), tokenizers=list(args.tokenizer),
        max_count_bytes=args.max_count_bytes, log_level=args.log_level, backend_source=source if backend else "",
    )
    return run(opts)


def cmd_check(paths: list[str]) -> int:
    from modelyard.config.compiler import compile_table
    from modelyard.config.diagnostics import Diagnostics
    from modelyard.config.loader import load_paths

    diags = Diagnostics()
    loaded = load_paths(paths, diags, set())
    compiled = compile_table(loaded.resources, diags)
    for n in diags.notes:
        print(f"note: {n}")
    for w in diags.warnings:
        print(f"warning: {w}")
    if diags.errors:
        for e in diags.errors:
            print(f"error: {e}")
        print(f"{len(diags.errors)} error(s) in {', '.join(paths)}")
        return 1
    for line in compiled.summary:
        print(line)
    print(f"ok: {len(loaded.files)} file(s), {len(loaded.resources)} object(s), {len(compiled.table.rules)} rule(s)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The mock backend on a free port, and the gateway on the bundled demo config resolved onto it."""
    import socket
    import subprocess

    from modelyard.config.control import RunOptions
    from modelyard.gateway.process.supervisor import StartupError, require_port, run

    try:  # before the "Try:" block, which would otherwise promise a port another server holds
        require_port("127.0.0.1", args.port, "listener")
        require_port("127.0.0.1", args.admin_port, "admin")
    except StartupError as e:
        print(f"modelyard: {e}", file=sys.stderr)
        return 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        mock_port = s.getsockname()[1]
    mock = subprocess.Popen([sys.executable, "-m", "modelyard.gateway", "mock", "--port", str(mock_port), "--name", "demo-mock",
                             "--ttft-ms", "50", "--itl-ms", "20"])
    demo_dir = Path(__file__).resolve().parents[2] / "config" / "demo"
    print(f"""
modelyard demo: a mock LLM on 127.0.0.1:{mock_port}, the gateway on 127.0.0.1:{args.port}. Try:

  curl -s localhost:{args.port}/v1/models
  curl -s localhost:{args.port}/v1/chat/completions -H 'content-type: application/json' \\
       -d '{{"model": "demo-chat", "messages": [{{"role": "user", "content": "hello"}}]}}'
  curl -sN localhost:{args.port}/v1/chat/completions -H 'content-type: application/json' \\
       -d '{{"model": "demo-chat", "stream": true, "messages": [{{"role": "user", "content": "hello"}}]}}'
  curl -s localhost:{args.admin_port}/config

Press Ctrl-C to stop.
""", flush=True)
    try:
        return run(RunOptions(
            config=[str(demo_dir)], backend=None, api_key=None, host="127.0.0.1", port=args.port,
            admin_port=args.admin_port, workers=args.workers,
            resolve={"mock.demo.internal:8000": f"127.0.0.1:{mock_port}"},
        ))
    finally:
        mock.terminate()
        mock.wait(10)


if __name__ == "__main__":
    sys.exit(main())
