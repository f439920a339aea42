"""The OpenAI-compatible mock under its first name: ``python -m modelyard.loadtest.mock.backend``.

The mock now lives in ``loadtest.mock.cli`` (the command line), ``loadtest.mock.config`` and
``loadtest.mock.openai`` (the app); this module keeps the old entry point and names working.
``python -m modelyard.loadtest.mock`` is the same command.
"""

from __future__ import annotations

from modelyard.loadtest.mock.cli import add_arguments, config_from_args, main, run
from modelyard.loadtest.mock.config import ENV_VAR, MockConfig, config_from_env
from modelyard.loadtest.mock.openai.app import MockApp, app

__all__ = ["ENV_VAR", "MockApp", "MockConfig", "add_arguments", "app", "config_from_args", "config_from_env", "main",
           "run"]

if __name__ == "__main__":
    raise SystemExit(main())
