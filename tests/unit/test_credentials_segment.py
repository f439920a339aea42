"""The credentials segment (core/credentials.py) and the worker's copy of it, read by auth hooks."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from modelyard.core.credentials import HEADER_SIZE, CredentialsError, CredentialsSegment
from modelyard.core.mapped import SEQ as _SEQ
from modelyard.core.mapped import SEQ_AT as _SEQ_AT
from modelyard.core.settings import SETTINGS_ENV, Settings
from modelyard.gateway.providers.credentials import WorkerCredentials, bearer_auth

SECRET = "sk-do-not-log-me"


@pytest.fixture
def segment(tmp_path: Path):
    seg = CredentialsSegment.create(str(tmp_path))
    yield seg
    seg.close()
    seg.unlink()


def test_round_trip_and_generation(segment: CredentialsSegment) -> None:
    assert segment.generation() == 0 and segment.read() == (0, {})
    assert segment.publish({"default/a": SECRET, "default/b": "t2"}) == 1
    reader = CredentialsSegment.attach(segment.path)
    assert reader.generation() == 1
    assert reader.read() == (1, {"default/a": SECRET, "default/b": "t2"})
    assert segment.publish({}) == 2
    assert reader.read() == (2, {})
    with pytest.raises(CredentialsError):
        reader.publish({"x": "y"})  # attached read-only


def test_a_reader_that_attaches_late_sees_the_last_map(segment: CredentialsSegment) -> None:
    for k in range(3):
        segment.publish({"default/a": f"token-{k}"})
    late = CredentialsSegment.attach(segment.path)
    assert late.read() == (3, {"default/a": "token-2"})


def test_a_torn_read_is_retried_until_the_writer_is_done(segment: CredentialsSegment) -> None:
    segment.publish({"default/a": "old"})
    mm = segment._mm
    seq = _SEQ.unpack_from(mm, _SEQ_AT)[0]
    _SEQ.pack_into(mm, _SEQ_AT, seq + 1)  # a writer midway: the reader must not take what is there

    def finish() -> None:
        time.sleep(0.05)
        _SEQ.pack_into(mm, _SEQ_AT, seq)

    writer = threading.Thread(target=finish)
    started = time.monotonic()
    writer.start()
    assert segment.read() == (1, {"default/a": "old"})
    assert time.monotonic() - started >= 0.04
    writer.join()
    # A map whose bytes do not match its checksum is not taken either: retried, then refused.
    mm[HEADER_SIZE] ^= 0xFF
    with pytest.raises(CredentialsError) as e:
        segment.read(timeout=0.02)
    assert SECRET not in str(e.value)
    mm[HEADER_SIZE] ^= 0xFF
    assert segment.read() == (1, {"default/a": "old"})


def test_size_is_bounded_and_an_oversized_map_changes_nothing(tmp_path: Path) -> None:
    seg = CredentialsSegment.create(str(tmp_path), capacity=64)
    try:
        seg.publish({"default/a": SECRET})
        with pytest.raises(CredentialsError) as e:
            seg.publish({"default/a": SECRET * 10})
        assert SECRET not in str(e.value) and "64" in str(e.value)
        assert seg.read() == (1, {"default/a": SECRET})
        assert SECRET not in repr(seg)
    finally:
        seg.close()
        seg.unlink()


def test_the_worker_copy_refreshes_on_a_new_generation_and_hooks_send_the_token(
        segment: CredentialsSegment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTINGS_ENV, Settings(credentials=segment.path).encode())
    worker = WorkerCredentials()
    hook = bearer_auth(b"x-edit: 1\r\n", "default/a", worker)
    worker.refresh()
    assert hook([], b"", {}) is None  # nothing published: the request gets a 401
    segment.publish({"default/a": "token-1"})
    worker.refresh()
    assert hook([], b"", {}) == b"x-edit: 1\r\nauthorization: Bearer token-1\r\n"
    segment.publish({"default/a": "token-2"})
    assert hook([], b"", {}) == b"x-edit: 1\r\nauthorization: Bearer token-1\r\n"  # until the timer's refresh
    worker.refresh()
    assert worker.generation == 2 and hook([], b"", {}) == b"x-edit: 1\r\nauthorization: Bearer token-2\r\n"
    segment.publish({"default/a": "bad\r\nx: y"})  # no header can carry it
    worker.refresh()
    assert hook([], b"", {}) is None
    assert "token" not in repr(worker)


def test_the_worker_copy_without_a_segment_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    worker = WorkerCredentials()
    worker.refresh()
    assert (worker.generation, worker.values) == (0, {})



def test_a_hook_that_finds_no_credential_looks_at_the_segment_at_once(
        segment: CredentialsSegment, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first credential the control process publishes is used by the next request, not after the
    worker's next tick: between the two, a request would get a 401 the gateway could have avoided."""
    monkeypatch.setenv(SETTINGS_ENV, Settings(credentials=segment.path).encode())
    worker = WorkerCredentials()
    hook = bearer_auth(b"", "default/a", worker)
    assert hook([], b"", {}) is None
    segment.publish({"default/a": "first"})
    assert hook([], b"", {}) == b"authorization: Bearer first\r\n"  # no worker.refresh() in between
    assert not worker.recheck()  # nothing newer: one 8-byte load, no copy
