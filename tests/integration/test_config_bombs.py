"""Hostile or broken configuration: refused promptly and clearly, by `modelyard check` and by a
running gateway, which logs the failed reload and keeps serving its previous table.

Each case is a file (or links) added to a folder that otherwise holds a good configuration.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelyard.config.loader import MAX_DEPTH, MAX_FILE_BYTES
from tests.conftest import Gateway, Mock, openai_backend, route
from tests.support import REPO, http_request, modelyard, wait_for

CHECK_TIMEOUT = 60  # a hang fails the test instead of stalling the run


def _laughs() -> str:
    """'Billion laughs': 9 levels of 10 aliases each, a few KB that expand to 10^9 values."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


KIND = """\
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoutes
metadata: {name: typo}
spec: {rules: []}
"""
VERSION = KIND.replace("v1alpha1", "v1beta2").replace("AIGatewayRoutes", "AIGatewayRoute")
RECURSIVE = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: loop}\ndata: &self {again: *self}\n"
DEEP = "a: " + "[" * (MAX_DEPTH + 50) + "]" * (MAX_DEPTH + 50) + "\n"
BIG = "# padding\n" * (MAX_FILE_BYTES // 10 + 1)


@dataclass(frozen=True)
class Bad:
    """A file that makes the configuration fail, and what the error says."""
    name: str
    text: str
    message: str


BAD = [
    Bad("kind", KIND,
        "unknown kind AIGatewayRoutes in API group aigateway.envoyproxy.io (did you mean AIGatewayRoute?)"),
    Bad("version", VERSION, "unknown version v1beta2 of API group aigateway.envoyproxy.io (did you mean v1beta1?)"),
    Bad("laughs", _laughs(), "once YAML aliases are expanded"),
    Bad("recursive", RECURSIVE, "recursive YAML alias"),
    Bad("deep", DEEP, f"nested more than {MAX_DEPTH} levels deep"),
    Bad("big", BIG, f"the limit is {MAX_FILE_BYTES}"),
]


def _two_links_to_folder(folder: Path) -> list[Path]:
    links = [folder / "again", folder / "and-again"]
    for link in links:
        link.symlink_to(folder, target_is_directory=True)
    return links


def _link_to_parent(folder: Path) -> list[Path]:
    (sub := folder / "sub").mkdir(exist_ok=True)
    (link := sub / "up").symlink_to("../..", target_is_directory=True)  # the parent of the watched folder
    return [link, sub]


LOOPS: dict[str, Callable[[Path], list[Path]]] = {"two-links": _two_links_to_folder, "parent": _link_to_parent}


def _check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(modelyard("check", str(folder)), capture_output=True, text=True, timeout=CHECK_TIMEOUT,
                          cwd=str(REPO))


def _good(folder: Path, port: int) -> None:
    (folder / "good.yaml").write_text(openai_backend("mock", "127.0.0.1", port) + route("r", "m1"))


def _remove(paths: list[Path]) -> None:
    for p in paths:  # links first, then the folders that held them
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            p.rmdir()


# --- modelyard check ------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_check_refuses(bad: Bad, tmp_path: Path) -> None:
    _good(tmp_path, 9)
    (tmp_path / "bad.yaml").write_text(bad.text)
    done = _check(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.yaml" in errors[0] and bad.message in errors[0], done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_check_reads_through_symlink_loops_once(loop: str, tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    _good(folder, 9)
    LOOPS[loop](folder)
    done = _check(folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "which is read already; not followed" in done.stdout
    assert "ok: 1 file(s)" in done.stdout, done.stdout


# --- a running gateway watching the folder --------------------------------------------


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    mock = Mock("bombs-mock")
    folder = tmp_path_factory.mktemp("bombs") / "conf"
    folder.mkdir()
    _good(folder, mock.port)
    gw = Gateway("--config", str(folder), workers=1)
    yield gw, folder
    code = gw.stop()
    mock.stop()
    assert code == 0, gw.proc.output()
    assert "Traceback" not in gw.proc.output()


def _serves_previous_table(gw: Gateway, generation: int) -> None:
    assert http_request(gw.admin_port, "GET", "/healthz", timeout=5)[0] == 200
    assert gw.config()["generation"] == generation
    status, _, body = gw.chat("m1")
    assert status == 200, body


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_gateway_keeps_serving_after_a_bad_reload(bad: Bad, watched: tuple[Gateway, Path]) -> None:
    gw, folder = watched
    generation = gw.config()["generation"]
    path = folder / "bad.yaml"
    path.write_text(bad.text)
    try:
        assert wait_for(lambda: any(bad.message in e for e in gw.config()["errors"]), timeout=30), gw.proc.output()
        assert f"still serving generation {generation}" in gw.proc.output()
        _serves_previous_table(gw, generation)
    finally:
        path.unlink()
    assert wait_for(lambda: not gw.config()["errors"], timeout=30)  # fixed: the same table, no new generation
    _serves_previous_table(gw, generation)


@pytest.mark.parametrize("loop", LOOPS)
def test_gateway_reloads_through_symlink_loops(loop: str, watched: tuple[Gateway, Path]) -> None:
    # Links alone change no file the gateway reads; a change made while they are there is
    # picked up, each file read once, and the loop is a warning.
    gw, folder = watched
    generation = gw.config()["generation"]
    made = LOOPS[loop](folder)
    extra = folder / "extra.yaml"
    try:
        extra.write_text(route("r2", "m2"))
        assert wait_for(lambda: gw.config()["generation"] > generation, timeout=30), gw.proc.output()
        assert wait_for(gw.in_sync, timeout=30)
        assert "which is read already; not followed" in gw.proc.output()
        assert gw.config()["errors"] == []
        assert http_request(gw.admin_port, "GET", "/healthz", timeout=5)[0] == 200
        assert gw.chat("m2")[0] == 200
    finally:
        _remove([extra, *made])
    assert wait_for(lambda: "m2" not in gw.config()["models"], timeout=30)
    assert wait_for(gw.in_sync, timeout=30)
    assert gw.chat("m1")[0] == 200
