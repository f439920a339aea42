"""The settings the supervisor hands to every process, and the names of the shared segments."""

from __future__ import annotations

import json
import os

import msgspec
import pytest

from modelyard.core import segments
from modelyard.core.settings import DEFAULT_MAX_COUNT_BYTES, SETTINGS_ENV, Settings, SettingsError, current


def test_no_variable_means_the_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.table, settings.health_board, settings.workers_dir, settings.tokens_socket) == ("", "", "", "")
    assert settings.access_log == "-" and settings.header_labels == () and settings.tokenizers == ()
    assert settings.max_count_bytes == DEFAULT_MAX_COUNT_BYTES and settings.body_timeout == 0.0
    assert settings.log_level == "info"
    assert Settings.from_env({SETTINGS_ENV: ""}) == Settings()
    assert Settings.from_env({SETTINGS_ENV: "{}"}) == Settings()


def test_every_field_survives_the_round_trip() -> None:
    settings = Settings(table="/dev/shm/r/table", health_board="/dev/shm/r/health", workers_dir="/dev/shm/r/workers",
                        tokens_socket="/dev/shm/r/tokens.sock", credentials="/dev/shm/r/credentials",
                        access_log="/var/log/access.jsonl",
                        header_labels=(("x-tenant-id", "tenant"),), tokenizers=(("qwen*", "builtin:qwen3.6"),),
                        max_count_bytes=1024, body_timeout=2.5, log_level="debug")
    defaults = Settings()
    unchanged = [f.name for f in msgspec.structs.fields(Settings) if getattr(settings, f.name) == getattr(defaults, f.name)]
    assert unchanged == [], "give every field a value other than its default here"
    assert Settings.from_env({SETTINGS_ENV: settings.encode()}) == settings
    assert json.loads(settings.encode())["header_labels"] == [["x-tenant-id", "tenant"]]


@pytest.mark.parametrize("raw, names", [
    ('{"max_count_bytes": 0}', "max_count_bytes"),
    ('{"body_timeout": -1}', "body_timeout"),
    ('{"max_count_bytes": "big"}', "max_count_bytes"),
    ('{"header_labels": [["only-a-header"]]}', "header_labels"),
    ('{"tabel": "/dev/shm/x"}', "tabel"),
    ("{not json", SETTINGS_ENV),
])
def test_a_bad_value_is_a_clear_error(raw: str, names: str) -> None:
    with pytest.raises(SettingsError, match=SETTINGS_ENV) as info:
        Settings.from_env({SETTINGS_ENV: raw})
    assert names in str(info.value)


def test_current_decodes_once_and_follows_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTINGS_ENV, Settings(access_log="off").encode())
    first = current()
    assert first.access_log == "off" and current() is first
    Settings(access_log="-", body_timeout=3.0).export()
    assert current().body_timeout == 3.0
    assert os.environ[SETTINGS_ENV] == Settings(access_log="-", body_timeout=3.0).encode()


def test_every_shared_segment_is_named_in_the_run_directory() -> None:
    paths = segments.run_paths("/dev/shm/modelyard-run-x")
    named = [p for name, p in msgspec.structs.asdict(paths).items() if name != "run_dir"]
    assert len(set(named)) == len(named) == 6
    assert all(os.path.dirname(p) == "/dev/shm/modelyard-run-x" for p in named)
    assert (paths.table, paths.health_board, paths.workers, paths.credentials) == (
        "/dev/shm/modelyard-run-x/table", "/dev/shm/modelyard-run-x/health", "/dev/shm/modelyard-run-x/workers",
        "/dev/shm/modelyard-run-x/credentials")
    assert segments.CREDENTIALS == "credentials"  # reserved for the credentials segment
