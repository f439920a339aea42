"""The control process's credential refresher: fetches each policy's credential, refreshes it
before it expires, keeps the last one through failed refreshes until it expires, and publishes
every change to the credentials segment the workers read."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from modelyard.config.cloud_credentials.fetch import Fetched, TokenError
from modelyard.config.cloud_credentials.refresher import (
    BACKOFF_MAX, CredentialCollector, CredentialRefresher, refresh_at,
)
from modelyard.config.cloud_credentials.sources import AWSDefaultChain, AzureClientSecret
from modelyard.core.credentials import CredentialsSegment


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Script:
    """A fetch that answers from a list: a (value, lifetime) pair, or an exception."""

    def __init__(self, clock: Clock, *answers: object):
        self.clock, self.answers, self.calls = clock, list(answers), 0

    async def __call__(self, source: object) -> Fetched:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        value, lifetime = answer  # type: ignore[misc]
        return Fetched(value, self.clock.now + lifetime if lifetime is not None else None)


SOURCE = AzureClientSecret("tenant", "app", "client-secret-value")


def _segment(tmp_path: Path) -> CredentialsSegment:
    return CredentialsSegment.create(str(tmp_path))


async def _step(refresher: CredentialRefresher, key: str = "ns/pol") -> None:
    await refresher._refresh(key, refresher.states[key])


def test_refresh_comes_half_a_lifetime_early_and_at_most_five_minutes_early() -> None:
    assert refresh_at(Fetched("t", 1030.0), 1000.0) == 1015.0
    assert refresh_at(Fetched("t", 1000.0 + 3600), 1000.0) == 1000.0 + 3300
    assert refresh_at(Fetched("t", None), 1000.0) == float("inf")  # static keys: only when the source changes
    assert refresh_at(Fetched("t", None, recheck=300.0), 1000.0) == 1300.0


def test_a_fetched_token_is_published_and_refreshed_before_it_expires(tmp_path: Path) -> None:
    clock, segment = Clock(), _segment(tmp_path)
    fetch = Script(clock, ("token-1", 3600), ("token-2", 3600))
    refresher = CredentialRefresher(segment, fetch, clock)
    refresher.update({"ns/pol": SOURCE})
    assert refresher.pending() == ["ns/pol"]
    asyncio.run(_step(refresher))
    first, values = segment.read()
    assert values == {"ns/pol": "token-1"}
    state = refresher.states["ns/pol"]
    assert state.due == clock.now + 3300 and refresher.pending() == []
    clock.now += 3300
    asyncio.run(_step(refresher))
    assert segment.read() == (first + 1, {"ns/pol": "token-2"})


def test_a_failed_refresh_keeps_the_last_token_until_it_expires_then_unpublishes_it(tmp_path: Path) -> None:
    clock, segment = Clock(), _segment(tmp_path)
    fetch = Script(clock, ("token-1", 100), *[TokenError("the token endpoint refused the request")] * 10)
    refresher = CredentialRefresher(segment, fetch, clock)
    refresher.update({"ns/pol": SOURCE})
    asyncio.run(_step(refresher))
    expires = clock.now + 100
    clock.now += 50
    asyncio.run(_step(refresher))
    state = refresher.states["ns/pol"]
    assert segment.read()[1] == {"ns/pol": "token-1"}  # kept
    assert state.failures == 1 and state.due == clock.now + 1.0  # backoff starts at a second
    view = refresher.view()["ns/pol"]
    assert view["status"] == "failing" and view["last_error"] == "the token endpoint refused the request"
    for _ in range(8):
        asyncio.run(_step(refresher))
    assert state.due <= expires  # the backoff never waits past the expiry
    assert state.due - clock.now <= BACKOFF_MAX
    clock.now = expires
    refresher._expire(clock.now)
    assert segment.read()[1] == {}  # its backends now fail over
    assert refresher.view()["ns/pol"]["status"] == "expired"


def test_a_changed_source_serves_the_old_credential_until_its_own_is_fetched_or_fails(tmp_path: Path) -> None:
    clock, segment = Clock(), _segment(tmp_path)
    fetch = Script(clock, ("old", 3600), TokenError("new secret refused"))
    refresher = CredentialRefresher(segment, fetch, clock)
    refresher.update({"ns/pol": SOURCE})
    asyncio.run(_step(refresher))
    refresher.update({"ns/pol": AzureClientSecret("tenant", "app", "rotated")})
    assert segment.read()[1] == {"ns/pol": "old"} and refresher.pending() == []
    asyncio.run(_step(refresher))
    assert segment.read()[1] == {}


def test_a_source_the_configuration_drops_is_unpublished_at_once(tmp_path: Path) -> None:
    clock, segment = Clock(), _segment(tmp_path)
    refresher = CredentialRefresher(segment, Script(clock, ("a", None), ("b", None)), clock)
    refresher.update({"ns/a": SOURCE, "ns/b": AWSDefaultChain("us-east-1")})
    asyncio.run(_step(refresher, "ns/a"))
    asyncio.run(_step(refresher, "ns/b"))
    assert segment.read()[1] == {"ns/a": "a", "ns/b": "b"}
    refresher.update({"ns/b": AWSDefaultChain("us-east-1")})  # unchanged: not fetched again
    assert segment.read()[1] == {"ns/b": "b"} and refresher.states["ns/b"].value == "b"


def test_an_unexpected_error_is_logged_and_retried_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    refresher = CredentialRefresher(_segment(tmp_path), Script(clock, KeyError("bug")), clock)
    refresher.update({"ns/pol": SOURCE})
    asyncio.run(_step(refresher))
    assert refresher.states["ns/pol"].last_error == "unexpected KeyError"
    assert "Traceback" in caplog.text  # a bug shows where it is


def test_run_refreshes_short_lived_tokens_by_itself(tmp_path: Path) -> None:
    segment = _segment(tmp_path)
    seen: list[str] = []

    async def main() -> None:
        done = asyncio.Event()

        async def fetch(source: object) -> Fetched:
            seen.append(f"t{len(seen)}")
            if len(seen) == 3:
                done.set()
            return Fetched(seen[-1], time.time() + 0.2)

        refresher = CredentialRefresher(segment, fetch)
        refresher.update({"ns/pol": SOURCE})
        task = asyncio.create_task(refresher.run())
        await asyncio.wait_for(done.wait(), 30)  # a hang guard, not a speed limit
        task.cancel()
        await refresher.close()

    asyncio.run(main())
    assert seen[:3] == ["t0", "t1", "t2"]
    assert segment.read()[1]["ns/pol"] in ("t1", "t2")


def test_metrics_and_the_status_view_never_show_a_credential(tmp_path: Path) -> None:
    clock = Clock()
    refresher = CredentialRefresher(_segment(tmp_path), Script(clock, ("very-secret-token", 600)), clock)
    refresher.update({"ns/pol": SOURCE})
    asyncio.run(_step(refresher))
    metrics = list(CredentialCollector(refresher).collect())
    samples = {(m.name, tuple(sorted(s.labels.items()))): s.value for m in metrics for s in m.samples}
    assert samples[("modelyard_credential_valid", (("policy", "ns/pol"), ("type", "AzureClientSecret")))] == 1.0
    assert samples[("modelyard_credential_expiry_timestamp_seconds",
                    (("policy", "ns/pol"), ("type", "AzureClientSecret")))] == clock.now + 600
    text = json.dumps(refresher.view()) + repr(samples) + repr(refresher.states["ns/pol"].source)
    assert "very-secret-token" not in text and "client-secret-value" not in text
