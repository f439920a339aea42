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
    from gateway.worker_env import header_label_arg
    try:
        return header_label_arg(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _tokenizer_arg(text: str) -> tuple[str, str]:
    from core.tokenizer import parse_tokenizer_arg
    try:
        return parse_tokenizer_arg(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelyard", description="An AI gateway for Envoy AI Gateway resources.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the gateway")
    run.add_argument("--config", "-c", action="append", default=[], metavar="PATH",
                     help="a YAML file or a directory of them (repeatable); watched for changes")
    run.add_argument("--backend", metavar="URL",
                     help="a default OpenAI-compatible backend for every model no rule matches "
                          "(with no --config: for every model), e.g. http://127.0.0.1:11434/v1")
    run.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    run.add_argument("--port", type=int, help="data-plane port (default: the Gateway listener's port, else 1975)")
    run.add_argument("--admin-port", type=int, default=DEFAULT_ADMIN_PORT, help="admin port (default 1064)")
    run.add_argument("--workers", type=_positive, default=default_workers(),
                     help="worker processes (default: the number of usable cores)")
    run.add_argument("--resolve", action="append", default=[], type=_resolve_arg, metavar="HOST:PORT=ADDR:PORT",
                     help="connect to ADDR:PORT wherever a backend names HOST:PORT (repeatable), like curl's option")
    run.add_argument("--retries", type=int, default=2, metavar="N",
                     help="retries per request on the next eligible backend (default 2; a route may say otherwise)")
    run.add_argument("--allow-backend-header", action="store_true",
                     help="let clients pick a backend with x-ai-gateway-backend: NAME, among those the "
                          "matched route's rules reference (routes may opt in or out by annotation)")
    run.add_argument("--access-log", default="-", metavar="PATH",
                     help="one JSON line per request: - for stdout (default), a file, or off")
    run.add_argument("--metrics-header", action="append", default=[], type=_header_label, metavar="HEADER[=LABEL]",
                     help="add a request header's value as a label of the gen_ai_* metrics (repeatable), "
                          "e.g. x-tenant-id=tenant")
    run.add_argument("--tokenizer", action="append", default=[], type=_tokenizer_arg, metavar="PATTERN=PATH",
                     help="count tokens for models matching PATTERN (a glob) with this tokenizer.json or model "
                          "folder, when a backend reports no usage (repeatable; default: a Qwen tokenizer)")
    run.add_argument("--grace", type=float, default=30.0, help="seconds to drain in-flight requests on SIGTERM")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser("check", help="validate configuration without starting anything")
    check.add_argument("paths", nargs="+", metavar="PATH")

    from loadtest import mock_backend

    mock = sub.add_parser("mock", help="start the mock OpenAI-compatible backend")
    mock_backend.add_arguments(mock)

    from loadtest import bench

    bench_cmd = sub.add_parser("bench", help="benchmark against direct calls, nginx, Envoy and LiteLLM")
    bench.add_arguments(bench_cmd)

    demo = sub.add_parser("demo", help="start the bundled mock backend and the gateway on a demo config")
    demo.add_argument("--port", type=int, default=1975)
    demo.add_argument("--admin-port", type=int, default=DEFAULT_ADMIN_PORT)
    demo.add_argument("--workers", type=_positive, default=min(2, default_workers()))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "check":
        return cmd_check(args.paths)
    if args.command == "bench":
        from loadtest import bench
        return bench.main(args)
    if args.command == "mock":
        from loadtest import mock_backend
        return mock_backend.run(args)
    return cmd_demo(args)


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.control import RunOptions
    from gateway.supervisor import run

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
        from config.backends import backend_from_url
        try:
            backend_from_url(backend, None)
        except ValueError as e:
            print(f"modelyard: {e}", file=sys.stderr)
            return 2
    opts = RunOptions(
        config=list(args.config), backend=backend, api_key=api_key, host=args.host, port=args.port,
        admin_port=args.admin_port, workers=args.workers, resolve=dict(args.resolve), grace=args.grace,
        retries=max(0, args.retries), allow_backend_header=args.allow_backend_header,
        access_log=args.access_log, header_labels=list(args.metrics_header), tokenizers=list(args.tokenizer),
        log_level=args.log_level, backend_source=source if backend else "",
    )
    return run(opts)


def cmd_check(paths: list[str]) -> int:
    from config.compiler import compile_table
    from config.diagnostics import Diagnostics
    from config.loader import load_paths

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

    from gateway.control import RunOptions
    from gateway.supervisor import run

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        mock_port = s.getsockname()[1]
    mock = subprocess.Popen([sys.executable, "-m", "gateway", "mock", "--port", str(mock_port), "--name", "demo-mock",
                             "--ttft-ms", "50", "--itl-ms", "20"])
    demo_dir = Path(__file__).resolve().parent.parent / "config" / "demo"
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
