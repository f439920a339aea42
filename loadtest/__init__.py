"""Load-testing tools: the mock OpenAI-compatible backend and benchmark helpers."""
