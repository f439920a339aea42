"""The distribution installs every package folder under the `modelyard.` namespace, and nothing at
the top of site-packages that another distribution could also own (`config`, `core`)."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP = ("gateway", "core", "config", "loadtest")


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_installed_under_the_namespace() -> None:
    listed = set(_setuptools()["packages"])
    found = {"modelyard." + ".".join(init.parent.relative_to(REPO).parts)
             for top in TOP for init in (REPO / top).rglob("__init__.py") if "__pycache__" not in init.parts}
    assert found == listed, f"missing from pyproject.toml: {sorted(found - listed)}; stale: {sorted(listed - found)}"
    assert all(name.startswith("modelyard.") for name in listed)


def test_the_namespace_maps_onto_the_top_level_folders() -> None:
    assert _setuptools()["package-dir"] == {f"modelyard.{top}": top for top in TOP}


def test_the_console_script_and_module_entry_points_resolve() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    module, _, func = project["scripts"]["modelyard"].partition(":")
    assert callable(getattr(importlib.import_module(module), func))
    assert (REPO / "gateway" / "__main__.py").read_text().count("modelyard.gateway.process.cli") == 1
    assert list((REPO / "config" / "demo").glob("*.yaml")), "the demo config ships as package data"
