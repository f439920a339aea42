"""The command line a newcomer meets, parsed in-process: help on every option, examples in
run/check/mock help, and the version of a source tree."""

import argparse
import importlib.metadata

import pytest

from modelyard.gateway.process import cli
from tests.support import REPO


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


def test_every_subcommand_is_walked():
    assert {"run", "check", "mock", "bench", "demo"} <= set(_subparsers())


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_option_has_help_that_states_its_default(command):
    parser = _subparsers()[command]
    for action in _options(parser):
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip() and action.help is not argparse.SUPPRESS, \
            f"modelyard {command} {name}: no help text"
        default = action.default
        if default not in (None, False, [], argparse.SUPPRESS) and action.option_strings:
            assert "default" in action.help.lower(), f"modelyard {command} {name}: help does not say its default"
    parser.format_help()  # every %(...)s in a help string expands


@pytest.mark.parametrize("command", ["run", "check", "mock"])
def test_help_ends_with_examples(command):
    text = _subparsers()[command].format_help()
    examples = text[text.index("\nexamples:\n"):].splitlines()[2:]
    commands = [line for line in examples if f"modelyard {command}" in line]
    assert 2 <= len(commands) <= 4, text
    assert all(line.startswith("  ") for line in examples if line.strip()), "examples keep their layout"


def test_examples_parse():
    parser = cli.build_parser()
    for text in (cli.RUN_EXAMPLES, cli.CHECK_EXAMPLES, cli.MOCK_EXAMPLES):
        for line in text.splitlines()[1:]:
            argv = line.split("#")[0].split()
            argv = argv[argv.index("modelyard") + 1:]
            parser.parse_args(argv)


def test_version_in_a_source_tree_without_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    import tomllib
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert cli.version() == f"{expected}+source"
