"""The proxies the benchmark compares, each started in front of the same mock backend.

A Target writes its own configuration into the run's work folder, starts its
process pinned to the proxy cores, and says which URL and model to load.
nginx, Envoy and LiteLLM are used only when already installed: the harness
installs nothing.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from modelyard.loadtest.bench.procs import Service, free_port, process_name

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO.parent / "shared" / "examples"
NRP_HOST = "qwen-vllm-inference.nrp-llm.svc.cluster.local:5000"
CHAT_PATH = "/v1/chat/completions"


@dataclass
class Running:
    service: Service
    url: str
    model: str
    worker_pids: list[int]


def modelyard_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelyard.gateway", *args]


def _backend(port: int) -> str:
    return textwrap.dedent(f"""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIServiceBackend
        metadata: {{name: mock, namespace: bench}}
        spec:
          schema: {{name: OpenAI}}
          backendRef: {{name: mock, kind: Backend, group: gateway.envoyproxy.io}}
        ---
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: Backend
        metadata: {{name: mock, namespace: bench}}
        spec:
          endpoints:
            - fqdn: {{hostname: 127.0.0.1, port: {port}}}
        ---
        """)


def models_config(mock_port: int, models: int) -> str:
    """One route with a rule per model (model-0 ... model-N-1), all to the mock."""
    rules = "".join(
        f"    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: model-{i}}}]}}]\n"
        "      backendRefs: [{name: mock}]\n"
        for i in range(models)
    )
    return _backend(mock_port) + ("apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\n"
                                  "metadata: {name: bench, namespace: bench}\nspec:\n  rules:\n" + rules)


class Target:
    name = ""
    label = ""

    def available(self) -> str | None:
        """None when the target can run here, else why not."""
        return None

    def start(self, cores: list[int], work: Path, mock_port: int) -> Running:
        raise NotImplementedError


class Direct(Target):
    name, label = "direct", "direct to the mock"

    def start(self, cores: list[int], work: Path, mock_port: int) -> Running:
        raise AssertionError("the harness measures direct calls against its own mock")


class Modelyard(Target):
    def __init__(self, name: str, label: str, models: int = 10, features: bool = False, workers: int = 1):
        self.name, self.label = name, label
        self.models, self.features, self.workers = models, features, workers

    def config_args(self, work: Path, mock_port: int) -> tuple[list[str], str]:
        """The gateway's configuration arguments for this variant, and the model to request."""
        if self.features:
            # The shared example, unchanged: credentials injected from a Secret, llmRequestCosts (so usage is
            # read from every answer and requested in every stream), metrics, and the access log to a file.
            return ["--config", str(EXAMPLES / "nrp-models-config"), "--resolve", f"{NRP_HOST}=127.0.0.1:{mock_port}",
                    "--access-log", str(work / f"{self.name}-access.log")], "qwen3"
        conf = work / f"{self.name}.yaml"
        conf.write_text(models_config(mock_port, self.models))
        # Accounting off, for the on/off ratio.
        return ["--access-log", "off", "--config", str(conf)], f"model-{self.models // 2}"

    def start(self, cores: list[int], work: Path, mock_port: int) -> Running:
        port, admin = free_port(), free_port()
        config, model = self.config_args(work, mock_port)
        args = ["run", "--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin),
                "--workers", str(self.workers), "--log-level", "warning", *config]
        svc = Service(self.name, modelyard_argv(*args), cores, work / f"{self.name}.log")
        svc.wait_port(port)
        _wait_workers(svc, self.workers)
        workers = [p for p in svc.pids() if "worker" in process_name(p)]
        return Running(svc, f"http://127.0.0.1:{port}{CHAT_PATH}", model, workers)


def _wait_workers(svc: Service, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum("worker" in process_name(p) for p in svc.pids()) >= n:
            time.sleep(0.3)
            return
        time.sleep(0.1)


class Nginx(Target):
    name, label = "nginx", "nginx (proxy_pass, upstream keep-alive)"

    def available(self) -> str | None:
        return None if shutil.which("nginx") else "nginx is not on PATH"

    def start(self, cores: list[int], work: Path, mock_port: int) -> Running:
        port = free_port()
        prefix = work / "nginx"
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(textwrap.dedent(f"""\
            worker_processes 1;
            daemon off;
            pid {prefix}/nginx.pid;
            error_log {prefix}/logs/error.log warn;
            events {{ worker_connections 4096; }}
            http {{
              access_log off;
              client_body_temp_path {prefix}/body;
              proxy_temp_path {prefix}/proxy;
              fastcgi_temp_path {prefix}/fastcgi;
              uwsgi_temp_path {prefix}/uwsgi;
              scgi_temp_path {prefix}/scgi;
              client_max_body_size 4m;
              client_body_buffer_size 1m;
              upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 256; }}
              server {{
                listen 127.0.0.1:{port} reuseport;
                location / {{
                  proxy_pass http://mock;
                  proxy_http_version 1.1;
                  proxy_set_header Connection "";
                  proxy_buffering off;
                }}
              }}
            }}
            """))
        svc = Service(self.name, ["nginx", "-p", str(prefix), "-c", str(conf)], cores, work / "nginx.log")
        svc.wait_port(port)
        workers = [p for p in svc.pids() if "worker process" in process_name(p)]
        return Running(svc, f"http://127.0.0.1:{port}{CHAT_PATH}", "model-5", workers)


class Envoy(Target):
    name, label = "envoy", "Envoy (static config, routes by x-ai-eg-model)"

    def available(self) -> str | None:
        return None if shutil.which("envoy") else "no envoy binary on PATH"

    @staticmethod
    def config(port: int, admin: int, mock_port: int, model: str = "model-5") -> str:
        """A static bootstrap: one listener whose route matches the model header, one cluster (the mock)."""
        return textwrap.dedent(f"""\
            admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
            static_resources:
              listeners:
              - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
                filter_chains:
                - filters:
                  - name: envoy.filters.network.http_connection_manager
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                      stat_prefix: bench
                      http_filters:
                      - name: envoy.filters.http.router
                        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
                      route_config:
                        virtual_hosts:
                        - name: all
                          domains: ["*"]
                          routes:
                          - match: {{prefix: "/", headers: [{{name: x-ai-eg-model, string_match: {{exact: {model}}}}}]}}
                            route: {{cluster: mock, timeout: 60s}}
              clusters:
              - name: mock
                type: STATIC
                load_assignment:
                  cluster_name: mock
                  endpoints:
                  - lb_endpoints:
                    - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {mock_port}}}}}}}
            """)

    def start(self, cores: list[int], work: Path, mock_port: int) -> Running:
        port, admin = free_port(), free_port()
        conf = work / "envoy.yaml"
        conf.write_text(self.config(port, admin, mock_port))
        svc = Service(self.name, ["envoy", "-c", str(conf), "--concurrency", "1", "--log-level", "warn"], cores,
                      work / "envoy.log")
        svc.wait_port(port)
        return Running(svc, f"http://127.0.0.1:{port}{CHAT_PATH}", "model-5", svc.pids())


class LiteLLM(Target):
    name, label = "litellm", "LiteLLM proxy"

    def available(self) -> str | None:
        return None if shutil.which("litellm") else "no litellm on PATH (pip install 'litellm[proxy]')"

    def start(self, cores: list[int], work: Path, mock_port: int) -> Running:
        port = free_port()
        conf = work / "litellm.yaml"
        conf.write_text(textwrap.dedent(f"""\
            model_list:
              - model_name: model-5
                litellm_params:
                  model: openai/model-5
                  api_base: http://127.0.0.1:{mock_port}/v1
                  api_key: bench
            litellm_settings:
              telemetry: false
            """))
        svc = Service(self.name, ["litellm", "--config", str(conf), "--host", "127.0.0.1", "--port", str(port),
                                  "--num_workers", "1"], cores, work / "litellm.log",
                      env={"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True",
                           # A loopback-only benchmark: no master key, so no auth header in the load.
                           "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"})
        svc.wait_port(port, timeout=180)
        return Running(svc, f"http://127.0.0.1:{port}{CHAT_PATH}", "model-5", svc.pids())
