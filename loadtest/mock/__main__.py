"""``python -m modelyard.loadtest.mock --port 8000``: the mock backend (``modelyard mock`` without the gateway)."""

from modelyard.loadtest.mock.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
