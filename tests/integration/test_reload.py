"""Hot reload: a watched directory or file changes, and the gateway serves the new configuration within 2 s.

One gateway watches a temporary directory for most tests (module scope, so it
starts once); each test uses its own files and models, and the `dir_gw` fixture
puts the directory back to its baseline afterwards. Further gateways watch a
single file that is replaced atomically (temp file + rename, as editors do) and
a Kubernetes ConfigMap volume layout whose `..data` symlink is swapped.

"Served" means every worker serves it: each worker polls the shared table on its
own ~100 ms timer, so a change counts once several requests in a row (each on a
new connection, which either worker may accept) give the new answer.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import Gateway, Mock, assert_openai_error, openai_backend, route, write_config
from tests.integration.helpers import module_mock, replace_atomically
from tests.support import wait_for

RELOAD_BOUND = 2.0  # seconds: the stated bound for a change to be served
STABLE_REQUESTS = 8


def status_of(gw: Gateway, model: str) -> int:
    return gw.chat(model)[0]


def served_within(gw: Gateway, model: str, status: int, timeout: float = RELOAD_BOUND) -> bool:
    """Whether `model` answers `status` within `timeout` seconds of now, from every worker.

    Each worker picks up a new table on its own timer (~100 ms), so the answer
    counts once every worker reports the watcher's generation (admin /config),
    and then several requests in a row, each on a new connection, agree.
    """
    return bool(wait_for(lambda: gw.in_sync() and all(status_of(gw, model) == status for _ in range(STABLE_REQUESTS)),
                         timeout=timeout))


def model_ids(gw: Gateway) -> set[str]:
    return {m.id for m in gw.client().models.list()}



# --- a gateway watching a directory ---------------------------------------------------------------

BASE_ROUTES = route("main", "alpha")



mock = module_mock("reload-mock")


@pytest.fixture(scope="module")
def conf_dir(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> Path:
    d = tmp_path_factory.mktemp("conf")
    write_config(d / "backends.yaml", openai_backend("mock", "127.0.0.1", mock.port))
    write_config(d / "routes.yaml", BASE_ROUTES)
    return d


@pytest.fixture(scope="module")
def gw(conf_dir: Path) -> Iterator[Gateway]:
    g = Gateway("--config", str(conf_dir))
    yield g
    code = g.stop()
    output = g.proc.output()
    assert code == 0, output
    assert "Traceback" not in output, output


@pytest.fixture
def dir_gw(gw: Gateway, conf_dir: Path) -> Iterator[Gateway]:
    """The directory gateway, serving the baseline; `routes.yaml` is put back after the test."""
    assert status_of(gw, "alpha") == 200
    yield gw
    for f in conf_dir.iterdir():  # what a failed test left behind
        if f.name not in ("backends.yaml", "routes.yaml"):
            f.unlink()
    routes = conf_dir / "routes.yaml"
    if routes.read_text() != BASE_ROUTES:
        write_config(routes, BASE_ROUTES)
    # Settled: the watcher loaded the baseline without errors, and every worker serves it.
    assert wait_for(lambda: (v := gw.config())["errors"] == [] and v["models"] == ["alpha"], timeout=30.0), gw.config()
    assert wait_for(lambda: all(model_ids(gw) == {"alpha"} for _ in range(STABLE_REQUESTS)), timeout=30.0)


def test_rule_added_to_a_watched_file_is_served(dir_gw: Gateway, conf_dir: Path, mock: Mock) -> None:
    gw = dir_gw
    status, _, body = gw.chat("beta")
    assert status == 404
    assert_openai_error(body, "model_not_found")
    assert "beta" not in model_ids(gw)
    generation = gw.config()["generation"]

    write_config(conf_dir / "routes.yaml", route("main", "alpha", "beta"))
    assert served_within(gw, "beta", 200), gw.config()

    mock.clear()
    status, hdrs, body = gw.chat("beta")
    assert status == 200, body
    assert hdrs["x-ai-gateway-backend"] == "default/mock"
    assert [r["body"]["model"] for r in mock.requests()] == ["beta"]
    assert status_of(gw, "alpha") == 200
    assert gw.config()["generation"] > generation
    assert {"alpha", "beta"} <= model_ids(gw)


def test_rule_removed_then_file_deleted_stops_being_served(dir_gw: Gateway, conf_dir: Path) -> None:
    gw = dir_gw
    extra = conf_dir / "extra.yaml"
    write_config(extra, route("extra", "gamma", "delta"))
    assert served_within(gw, "gamma", 200) and served_within(gw, "delta", 200)
    assert {"gamma", "delta"} <= model_ids(gw)

    # One rule removed: its model answers 404 with an OpenAI error; the other rule still serves.
    write_config(extra, route("extra", "delta"))
    assert served_within(gw, "gamma", 404), gw.config()
    status, _, body = gw.chat("gamma")
    assert status == 404
    err = assert_openai_error(body, "model_not_found")
    assert "gamma" in err["message"]
    assert status_of(gw, "delta") == 200
    models = model_ids(gw)
    assert "gamma" not in models and "delta" in models

    # The whole file deleted: its routes go with it.
    extra.unlink()
    assert served_within(gw, "delta", 404), gw.config()
    assert_openai_error(gw.chat("delta")[2], "model_not_found")
    assert "delta" not in model_ids(gw)
    assert "default/extra" not in {r["name"] for r in gw.config()["routes"]}
    assert status_of(gw, "alpha") == 200


def test_deleted_object_makes_the_rule_answer_503_naming_it(dir_gw: Gateway, conf_dir: Path, mock: Mock) -> None:
    gw = dir_gw
    solo = conf_dir / "solo.yaml"
    write_config(solo, openai_backend("solo", "127.0.0.1", mock.port)
                 + route("solo-route", "solo-model", backend="solo"))
    assert served_within(gw, "solo-model", 200), gw.config()

    # Remove only the AIServiceBackend document: the route now points at nothing.
    docs = solo.read_text().split("---\n")
    assert "kind: AIServiceBackend" in docs[0]
    write_config(solo, "---\n".join(docs[1:]))
    assert served_within(gw, "solo-model", 503), gw.config()
    status, _, body = gw.chat("solo-model")
    assert status == 503
    err = assert_openai_error(body, "backend_not_found")
    assert "AIServiceBackend default/solo" in err["message"], err
    # A dangling reference is a warning, not an error: the rest of the config keeps loading.
    assert gw.config()["errors"] == []
    assert "solo-model" in model_ids(gw)
    assert status_of(gw, "alpha") == 200

    solo.unlink()
    assert served_within(gw, "solo-model", 404)


@pytest.mark.parametrize("missing", ["AIServiceBackend", "Backend"])
def test_missing_object_answers_503_naming_it_until_it_is_added(dir_gw: Gateway, conf_dir: Path, mock: Mock,
                                                              missing: str) -> None:
    gw = dir_gw
    late = conf_dir / "late.yaml"
    model = f"late-{missing.lower()}"
    service_backend, backend, _ = openai_backend("late", "127.0.0.1", mock.port).split("---\n")
    present, absent = (backend, service_backend) if missing == "AIServiceBackend" else (service_backend, backend)
    rules = route("late-route", model, backend="late")
    write_config(late, present + "---\n" + rules)
    assert served_within(gw, model, 503), gw.config()
    status, _, body = gw.chat(model)
    assert status == 503
    err = assert_openai_error(body, "backend_not_found")
    assert re.search(rf"(?<![A-Za-z]){missing} default/late\b", err["message"]), err
    assert gw.config()["errors"] == []
    assert model in model_ids(gw)

    # The object appears in the watched file: the rule serves, with no restart.
    write_config(late, present + "---\n" + absent + "---\n" + rules)
    assert served_within(gw, model, 200), gw.config()
    mock.clear()
    status, hdrs, body = gw.chat(model)
    assert status == 200, body
    assert hdrs["x-ai-gateway-backend"] == "default/late"
    assert [r["body"]["model"] for r in mock.chat_requests()] == [model]


@pytest.mark.parametrize("broken, names, fixed", [
    pytest.param("spec:\n  rules: [unclosed\n", ["invalid YAML", "line 3"], "fixed-yaml", id="invalid-yaml"),
    pytest.param(route("main", "alpha", ref_extra=", weigth: 5"),
                 ["AIGatewayRoute/default/main", "spec.rules[0].backendRefs[0].weigth", "unknown field 'weigth'"],
                 "fixed-field", id="unknown-field"),
])
def test_broken_edit_keeps_last_good_config(dir_gw: Gateway, conf_dir: Path, broken: str, names: list[str],
                                            fixed: str) -> None:
    gw = dir_gw
    routes = conf_dir / "routes.yaml"
    before = gw.config()
    assert before["errors"] == []
    generation = before["generation"]

    write_config(routes, broken)
    view = wait_for(lambda: (v := gw.config())["errors"] and v, timeout=RELOAD_BOUND)
    assert view, gw.config()
    errors = view["errors"]
    assert any(str(routes) in e and all(n in e for n in names) for e in errors), errors
    assert view["generation"] == generation
    # The last good table keeps serving, in both workers (each request is a new connection).
    for _ in range(6):
        assert status_of(gw, "alpha") == 200
    assert "alpha" in model_ids(gw)
    view = gw.config()
    assert view["errors"] and view["generation"] == generation

    # Fixing the file clears the errors and serves the new configuration.
    assert status_of(gw, fixed) == 404
    write_config(routes, route("main", "alpha", fixed, ref_extra=", weight: 5"))
    assert served_within(gw, fixed, 200), gw.config()
    view = gw.config()
    assert view["errors"] == []
    assert view["generation"] > generation
    assert status_of(gw, "alpha") == 200
    assert model_ids(gw) == {"alpha", fixed}


def test_models_list_follows_the_configuration(dir_gw: Gateway, conf_dir: Path) -> None:
    gw = dir_gw
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    first = client.models.list()
    assert [m.id for m in first.data] == ["alpha"]
    assert first.data[0].object == "model"

    listed = conf_dir / "listed.yaml"
    write_config(listed, route("listed", "m-one", "m-two"))
    assert wait_for(lambda: model_ids(gw) == {"alpha", "m-one", "m-two"}, timeout=RELOAD_BOUND), gw.config()
    write_config(listed, route("listed", "m-two"))
    assert wait_for(lambda: model_ids(gw) == {"alpha", "m-two"}, timeout=RELOAD_BOUND), gw.config()
    listed.unlink()
    assert wait_for(lambda: model_ids(gw) == {"alpha"}, timeout=RELOAD_BOUND), gw.config()


def test_same_size_edit_within_one_mtime_tick(dir_gw: Gateway, conf_dir: Path) -> None:
    gw = dir_gw
    f = conf_dir / "tick.yaml"
    write_config(f, route("tick", "tick-aaaa"))
    assert served_within(gw, "tick-aaaa", 200), gw.config()
    before = f.stat()
    write_config(f, route("tick", "tick-bbbb"))
    # What a filesystem with coarse timestamps shows for a second write within one tick.
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = f.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert served_within(gw, "tick-bbbb", 200), gw.config()


# --- a gateway watching one file ------------------------------------------------------------------


def test_watched_file_replaced_atomically(tmp_path: Path, mock: Mock) -> None:
    conf = tmp_path / "gateway.yaml"
    backends = openai_backend("mock", "127.0.0.1", mock.port)
    write_config(conf, backends + route("main", "alpha"))
    gw = Gateway("--config", str(conf))
    try:
        assert status_of(gw, "alpha") == 200
        assert status_of(gw, "file-beta") == 404

        replace_atomically(conf, backends + route("main", "alpha", "file-beta"))
        assert served_within(gw, "file-beta", 200), gw.config()
        assert {"alpha", "file-beta"} <= model_ids(gw)

        # And again: the watch survives the first rename (the old inode is gone).
        replace_atomically(conf, backends + route("main", "file-gamma"))
        assert served_within(gw, "file-gamma", 200), gw.config()
        assert served_within(gw, "alpha", 404)
        assert model_ids(gw) == {"file-gamma"}
        # An atomic replacement with broken content is reported and changes nothing.
        generation = gw.config()["generation"]
        replace_atomically(conf, "kind: [\n")
        view = wait_for(lambda: (v := gw.config())["errors"] and v, timeout=RELOAD_BOUND)
        assert view and str(conf) in view["errors"][0], gw.config()
        assert view["generation"] == generation
        assert status_of(gw, "file-gamma") == 200
    finally:
        code = gw.stop()
    assert code == 0, gw.proc.output()
    assert "Traceback" not in gw.proc.output()


@pytest.mark.parametrize("watch", ["file", "dir"])
def test_configmap_volume_symlink_swap(tmp_path: Path, mock: Mock, watch: str) -> None:
    """A ConfigMap volume: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>/; kubelet swaps ..data."""
    vol = tmp_path / "vol"
    vol.mkdir()
    backends = openai_backend("mock", "127.0.0.1", mock.port)

    def publish(version: int, text: str) -> None:
        old = (vol / "..data").resolve() if (vol / "..data").exists() else None
        data = vol / f"..2026_01_01_00_00_0{version}.000000000"
        data.mkdir()
        (data / "config.yaml").write_text(text)
        link = vol / "..data_tmp"
        link.symlink_to(data.name)
        os.replace(link, vol / "..data")
        if old is not None:  # as kubelet does, the previous version goes
            shutil.rmtree(old)

    publish(1, backends + route("main", "cm-one"))
    (vol / "config.yaml").symlink_to("..data/config.yaml")
    gw = Gateway("--config", str(vol / "config.yaml" if watch == "file" else vol))
    try:
        assert status_of(gw, "cm-one") == 200
        publish(2, backends + route("main", "cm-two"))
        assert served_within(gw, "cm-two", 200), gw.config()
        assert status_of(gw, "cm-one") == 404
        assert model_ids(gw) == {"cm-two"}
        publish(3, backends + route("main", "cm-three"))
        assert served_within(gw, "cm-three", 200), gw.config()
        assert model_ids(gw) == {"cm-three"}
        assert gw.config()["errors"] == []
    finally:
        code = gw.stop()
    assert code == 0, gw.proc.output()
    assert "Traceback" not in gw.proc.output()
