"""The x-ai-gateway-backend header: a client picks a backend where the route allows it."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest

from tests.conftest import Gateway, Mock, assert_openai_error, openai_backend, route, write_config
from tests.integration.helpers import serve

BACKEND = "x-ai-gateway-backend"


def annotated(name: str, scope: str, *models: str, backend: str, namespace: str = "default") -> str:
    text = route(name, *models, backend=backend, namespace=namespace)
    return text.replace(f"metadata: {{name: {name}, namespace: {namespace}}}", textwrap.dedent(f"""\
        metadata:
          name: {name}
          namespace: {namespace}
          annotations: {{modelyard.io/backend-header: {scope}}}""")) + "---\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[dict]:
    """Backends a, b, c in `default` and d in `other`.

    picky (rules scope): m-a -> a, m-b -> b.  wide (namespace scope): m-wide -> a.
    plain (no annotation): m-plain -> a.  remote (namespace scope, in `other`): m-d -> d.
    """
    folder = tmp_path_factory.mktemp("backend-header")
    mocks = {n: Mock(n) for n in ("a", "b", "c", "d")}
    text = "".join(openai_backend(n, "127.0.0.1", m.port) for n, m in mocks.items() if n != "d")
    text += openai_backend("d", "127.0.0.1", mocks["d"].port, namespace="other")
    text += annotated("picky", "rules", "m-a", backend="a") + annotated("picky2", "rules", "m-b", backend="b")
    text += annotated("wide", "namespace", "m-wide", backend="a")
    text += route("plain", "m-plain", backend="a") + "---\n"
    text += annotated("remote", "namespace", "m-d", backend="d", namespace="other")
    # picky's second rule lives in the same route so that both a and b are "its" backends.
    text = text.replace(annotated("picky2", "rules", "m-b", backend="b"), "")
    text = text.replace("      backendRefs: [{name: a}]\n---\n", "      backendRefs: [{name: a}]\n"
                        "    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: m-b}]}]\n"
                        "      backendRefs: [{name: b}]\n---\n", 1)
    cfg = write_config(folder / "routes.yaml", text)
    gw = Gateway("--config", str(cfg), workers=1)
    yield from serve(gw, mocks)


def chat(setup: dict, model: str, backend: str | None) -> tuple[int, dict, dict]:
    return setup["gw"].chat(model, headers={BACKEND: backend} if backend else None)


def test_every_response_names_the_backend_that_served_it(setup) -> None:
    status, headers, _ = chat(setup, "m-a", None)
    assert status == 200 and headers[BACKEND] == "default/a"


def test_allowed_backend_of_the_routes_rules(setup) -> None:
    setup["b"].clear()
    status, headers, body = chat(setup, "m-a", "b")
    assert status == 200 and headers[BACKEND] == "default/b", body
    assert setup["b"].chat_requests(), "the request reached b"
    status, headers, _ = chat(setup, "m-a", "default/b")  # namespace/name works too
    assert status == 200 and headers[BACKEND] == "default/b"


def test_allowed_by_namespace_scope(setup) -> None:
    status, headers, body = chat(setup, "m-wide", "c")
    assert status == 200 and headers[BACKEND] == "default/c", body
    status, headers, _ = chat(setup, "m-d", "d")
    assert status == 200 and headers[BACKEND] == "other/d"


def test_not_allowed_is_a_400_naming_the_allowed_backends(setup) -> None:
    status, _, body = chat(setup, "m-a", "c")  # c exists, but picky's rules do not use it
    assert status == 400
    err = assert_openai_error(body, "backend_not_allowed")
    assert "default/a, default/b" in err["message"] and "'c'" in err["message"]
    status, _, body = chat(setup, "m-wide", "other/d")  # another namespace is never in scope
    assert status == 400
    assert "other/d" in assert_openai_error(body, "backend_not_allowed")["message"]


def test_unknown_backend_is_a_400(setup) -> None:
    status, _, body = chat(setup, "m-a", "nope")
    assert status == 400
    assert "'nope'" in assert_openai_error(body, "backend_not_allowed")["message"]


def test_disabled_route_ignores_the_header(setup) -> None:
    setup["b"].clear()
    status, headers, _ = chat(setup, "m-plain", "b")
    assert status == 200 and headers[BACKEND] == "default/a"
    assert setup["b"].chat_requests() == []
    # The header itself never goes upstream.
    assert all(BACKEND not in r["headers"] for r in setup["a"].chat_requests())


def test_header_routes_a_model_no_rule_matches(setup) -> None:
    status, headers, _ = chat(setup, "some-other-model", "c")  # only `wide` allows c
    assert status == 200 and headers[BACKEND] == "default/c"
    status, _, body = chat(setup, "some-other-model", None)
    assert status == 404


def test_global_flag_enables_the_header_for_unannotated_routes(tmp_path, start_mock, start_gateway) -> None:
    a, b = start_mock("a"), start_mock("b")
    cfg = write_config(tmp_path / "r.yaml", openai_backend("a", "127.0.0.1", a.port)
                       + openai_backend("b", "127.0.0.1", b.port) + route("plain", "m", backend="a") + "---\n"
                       + annotated("closed", "'off'", "n", backend="b"))
    gw = start_gateway("--config", str(cfg), "--allow-backend-header", workers=1)
    status, headers, _ = gw.chat("m", headers={BACKEND: "a"})
    assert status == 200 and headers[BACKEND] == "default/a"
    status, _, body = gw.chat("m", headers={BACKEND: "b"})  # not among plain's rules
    assert status == 400 and "default/a" in assert_openai_error(body, "backend_not_allowed")["message"]
    status, headers, _ = gw.chat("n", headers={BACKEND: "a"})  # the route opted out
    assert status == 200 and headers[BACKEND] == "default/b"
