"""One gateway (2 workers) with real mock backends for the tests in tests/integration/proxy: the
configuration, a backend that closes every connection, and the fixtures that start them once for the
package."""

from __future__ import annotations

import json
import socket
import threading

import openai
import pytest

from tests.conftest import Gateway, Mock, assert_openai_error
from tests.support import free_port


CONFIG = """\
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: main, namespace: default}}
spec:
  rules:
    - matches: [{{headers: [{{name: x-ai-eg-model, value: chat-a}}]}}]
      backendRefs:
        - name: mock-a
          modelNameOverride: upstream-a
          headerMutation:
            set: [{{name: x-shared, value: route}}, {{name: x-route, value: r1}}]
            remove: [x-drop-me]
          bodyMutation:
            set: [{{path: service_tier, value: '"scale"'}}]
            remove: [user]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: plain}}]}}]
      backendRefs: [{{name: mock-a}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: streamer}}]}}]
      backendRefs: [{{name: mock-slow}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: slow}}]}}]
      backendRefs: [{{name: mock-a}}]
      timeouts: {{request: 1s}}
    - matches: [{{headers: [{{name: x-ai-eg-model, value: down}}]}}]
      backendRefs: [{{name: down}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: azure}}]}}]
      backendRefs: [{{name: azure}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: ghost}}]}}]
      backendRefs: [{{name: not-defined-yet}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: pair}}]}}]
      backendRefs: [{{name: pair}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: legacy}}]}}]
      backendRefs: [{{name: legacy}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: anthropic-key}}]}}]
      backendRefs: [{{name: anthropic-key}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: mutated}}]}}]
      backendRefs:
        - name: mutated
          bodyMutation:
            set: [{{path: service_tier, value: '"route"'}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: mutated-by-backend}}]}}]
      backendRefs: [{{name: mutated}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: reset}}]}}]
      backendRefs: [{{name: reset}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: dated}}]}}]
      backendRefs: [{{name: mock-a}}]
      modelsCreatedAt: "2025-01-02T03:04:05Z"
      modelsOwnedBy: team-dated
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: old-style, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  targetRefs: [{{name: gw, kind: Gateway, group: gateway.networking.k8s.io}}]
  rules:
    - matches: [{{headers: [{{name: x-ai-eg-model, value: old-style}}]}}]
      backendRefs: [{{name: mock-a}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: legacy, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: mock-a, kind: Backend, group: gateway.envoyproxy.io}}
  timeouts: {{request: 1s}}
  backendSecurityPolicyRef: {{name: legacy-key, kind: BackendSecurityPolicy, group: aigateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: legacy-key, namespace: default}}
spec:
  type: APIKey
  apiKey: {{secretRef: {{name: legacy-secret}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: legacy-secret, namespace: default}}
stringData: {{apiKey: {legacy_key}}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: anthropic-key, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: mock-a, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: anthropic-key, namespace: default}}
spec:
  type: AnthropicAPIKey
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: anthropic-key}}]
  anthropicAPIKey: {{secretRef: {{name: anthropic-secret}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: anthropic-secret, namespace: default}}
stringData: {{apiKey: {anthropic_key}}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: mutated, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: mock-a, kind: Backend, group: gateway.envoyproxy.io}}
  bodyMutation:
    set: [{{path: service_tier, value: '"backend"'}}, {{path: seed, value: "7"}}]
    remove: [user]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: reset, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: reset, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: reset, namespace: default}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {reset}}}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: limits, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  connection: {{bufferLimit: 64Ki}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: mock-a, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: mock-a, kind: Backend, group: gateway.envoyproxy.io}}
  headerMutation:
    set: [{{name: x-shared, value: backend}}, {{name: x-backend, value: b1}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: mock-slow, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: mock-slow, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: down, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: down, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: azure, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: mock-a, kind: Backend, group: gateway.envoyproxy.io}}
---
# A credential type that cannot authenticate the schema: the backend answers 501.
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: azure-aws, namespace: default}}
spec:
  type: AWSCredentials
  awsCredentials: {{region: us-east-1}}
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: azure}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: mock-a, namespace: default}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {a}}}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: mock-slow, namespace: default}}
spec:
  endpoints: [{{fqdn: {{hostname: slow.mock.test, port: 80}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: pair, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: pair, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: pair, namespace: default}}
spec:
  endpoints:
    - ip: {{address: 127.0.0.1, port: {a}}}
    - ip: {{address: 127.0.0.1, port: {slow}}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: down, namespace: default}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {down}}}}}]
"""


LEGACY_KEY = "sk-legacy-policy-ref"  # reached only through AIServiceBackend.backendSecurityPolicyRef
ANTHROPIC_KEY = "sk-ant-modelyard-test"


class Closer:
    """A TCP server that accepts each connection, reads the request head and closes without answering."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="closer")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                        data += chunk
                except OSError:
                    pass
                self.accepted += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="package")
def env(tmp_path_factory: pytest.TempPathFactory):
    mock_a = Mock("mock-a")
    mock_slow = Mock("mock-slow", "--itl-ms", "80", "--tokens", "8")
    closer = Closer()
    cfg = tmp_path_factory.mktemp("proxy") / "config.yaml"
    cfg.write_text(CONFIG.format(a=mock_a.port, slow=mock_slow.port, down=free_port(), reset=closer.port,
                                 legacy_key=LEGACY_KEY, anthropic_key=ANTHROPIC_KEY))
    gw = Gateway("--config", str(cfg), "--resolve", f"slow.mock.test:80=127.0.0.1:{mock_slow.port}")
    yield gw, mock_a, mock_slow, closer
    gw.stop()
    mock_a.stop()
    mock_slow.stop()
    closer.close()


@pytest.fixture
def client(env) -> openai.OpenAI:
    return openai.OpenAI(base_url=env[0].base_url, api_key="client-key", max_retries=0)


def error_of(body: bytes) -> dict:
    """The `error` object of an OpenAI-shaped error body, checked for its required fields."""
    return assert_openai_error(json.loads(body))
