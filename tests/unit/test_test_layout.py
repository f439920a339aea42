"""The test tree's layout rule: no file under tests/ imports a test module (tests.*.test_*); what tests
share lives in helper modules (tests/support.py, tests/resources.py, tests/k8s.py,
tests/integration/helpers.py, tests/unit/provider_support.py, tests/unit/translators/samples.py, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _package_of(path: Path) -> str:
    """The dotted name of the package a file under tests/ is in."""
    return ".".join(path.parent.relative_to(TESTS.parent).parts)


def _is_test_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "tests" and any(part.startswith("test_") for part in parts[1:])


def imported_test_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) for each test module that `source`, a module of `package`, imports."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                above = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(above + ([base] if base else []))
            # `from tests.unit import test_x` imports the test module itself.
            names = [base] if _is_test_module(base) else [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if _is_test_module(name)]
    return found


def test_the_checker_finds_every_form() -> None:
    source = ("import tests.unit.test_a\n"
              "from tests.unit.test_b import x\n"
              "from tests.unit import test_c\n"
              "from .test_d import y\n"
              "from . import test_e\n"
              "def f():\n    from tests.integration.test_f import z\n"
              "from tests.unit.provider_support import forward_one\n"
              "from tests.conftest import Gateway\n"
              "from tests.unit.translators import samples\n")
    assert [name for _, name in imported_test_modules(source, "tests.unit")] == [
        "tests.unit.test_a", "tests.unit.test_b", "tests.unit.test_c", "tests.unit.test_d", "tests.unit.test_e",
        "tests.integration.test_f"]


def test_no_test_module_imports_another() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 50 and TESTS / "unit" / "provider_support.py" in files
    offenders = [f"{path.relative_to(TESTS.parent)}:{line} imports {name}"
                 for path in files
                 for line, name in imported_test_modules(path.read_text(encoding="utf-8"), _package_of(path))]
    assert not offenders, "move what they share into a helper module:\n" + "\n".join(offenders)
