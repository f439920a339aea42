"""The credential refresher: keeps every cloud credential the table needs fetched, fresh and
published in the credentials segment, in the control process, never on the request path.

- A source (one per BackendSecurityPolicy) is fetched when it first appears and whenever a reload
  changes it (its Secret, say); one a reload drops is unpublished at once.
- A credential that expires is fetched again before it does: half its lifetime before, at most five
  minutes before (a one-hour token at 55 minutes, a 30-second one at 15 seconds).
- A failed fetch is retried with backoff (1 s doubling to 60 s) and keeps the last credential
  until it expires; then the credential is unpublished, so its backends fail over, and it shows
  as expired on /config and in the metrics until a fetch succeeds.
- Every change is one publication of the whole map (core/credentials.py): workers see all of it or
  none of it.

Nothing here logs a credential; errors name the policy, the endpoint and the provider's error code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from modelyard.config.cloud_credentials.fetch import Fetched, TokenError
from modelyard.config.cloud_credentials.sources import Source
from modelyard.core.credentials import CredentialsError, CredentialsSegment

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger("modelyard.credentials")

EARLY_MAX = 300.0  # refresh at most this long before expiry...
EARLY_SHARE = 0.5  # ...and at most this share of the lifetime before it
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
FETCH_TIMEOUT = 60.0


class State:
    """One policy's credential and what the refresher knows about it."""

    __slots__ = ("source", "value", "expires_at", "fetched_at", "due", "failures", "last_error", "refreshes",
                 "errors", "task", "inherited")

    def __init__(self, source: Source):
        self.source = source
        self.value: str | None = None  # secret: never logged or shown
        self.expires_at: float | None = None
        self.fetched_at: float | None = None
        self.due = 0.0  # wall-clock time of the next fetch
        self.failures = 0  # consecutive
        self.last_error: str | None = None
        self.refreshes = 0
        self.errors = 0
        self.task: asyncio.Task[None] | None = None
        self.inherited = False  # value and expiry are the previous source's

    def view(self, now: float) -> dict[str, Any]:
        valid = self.value is not None
        status = "valid" if valid and not self.failures else "failing" if valid else \
            "expired" if self.fetched_at is not None else "failing" if self.failures else "pending"
        return {"type": type(self.source).__name__, "status": status, "expires_at": self.expires_at,
                "fetched_at": self.fetched_at, "next_refresh_at": self.due if self.task is None else now,
                "consecutive_failures": self.failures, "last_error": self.last_error}


def refresh_at(fetched: Fetched, now: float) -> float:
    """When to fetch a credential again (infinity: only when its source changes)."""
    if fetched.expires_at is None:
        return now + fetched.recheck if fetched.recheck is not None else float("inf")
    lifetime = max(fetched.expires_at - now, 0.0)
    return fetched.expires_at - min(EARLY_MAX, lifetime * EARLY_SHARE)


class CredentialRefresher:
    def __init__(self, segment: CredentialsSegment | None, fetch: Callable[[Source], Awaitable[Fetched]],
                 clock: Callable[[], float] = time.time):
        self.segment = segment
        self.fetch = fetch
        self.clock = clock
        self.states: dict[str, State] = {}
        self._wake = asyncio.Event()
        self._published: dict[str, str] | None = None

    def update(self, sources: dict[str, Source]) -> None:
        """The sources of a newly published table: new or changed ones are fetched now."""
        for key in list(self.states):
            if key not in sources:
                self._cancel(self.states.pop(key))
        for key, source in sources.items():
            state = self.states.get(key)
            if state is None or state.source != source:
                fresh = self.states[key] = State(source)
                if state is not None:  # changed (a rotated Secret): the old credential serves until the
                    self._cancel(state)  # new one is fetched, or its first fetch fails
                    fresh.value, fresh.expires_at, fresh.inherited = state.value, state.expires_at, True
        self._publish()
        self._wake.set()

    def pending(self) -> list[str]:
        """The policies whose credential was never fetched nor failed to be (the first fetch is under way)."""
        return [key for key, s in sorted(self.states.items()) if s.fetched_at is None and not s.failures
                and s.value is None]

    def view(self) -> dict[str, Any]:
        now = self.clock()
        return {key: state.view(now) for key, state in sorted(self.states.items())}

    async def run(self) -> None:
        while True:
            now = self.clock()
            self._expire(now)
            for key, state in self.states.items():
                if state.task is None and state.due <= now:
                    state.task = asyncio.create_task(self._refresh(key, state))
            waits = [s.due for s in self.states.values() if s.task is None]
            waits += [s.expires_at for s in self.states.values() if s.expires_at is not None and s.value is not None]
            self._wake.clear()
            timeout = max(min(waits) - now, 0.0) if waits else None
            try:
                await asyncio.wait_for(self._wake.wait(), min(timeout, 3600.0) if timeout is not None else None)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        for state in self.states.values():
            self._cancel(state)

    def _cancel(self, state: State) -> None:
        if state.task is not None:
            state.task.cancel()
            state.task = None

    async def _refresh(self, key: str, state: State) -> None:
        try:
            fetched = await asyncio.wait_for(self.fetch(state.source), FETCH_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except (TokenError, asyncio.TimeoutError) as e:
            self._failed(key, state, str(e) or "the fetch took over a minute")
        except Exception as e:  # a bug or an unexpected library error: logged, retried, never fatal
            log.exception("fetching the credential of BackendSecurityPolicy %s failed", key)
            self._failed(key, state, f"unexpected {type(e).__name__}")
        else:
            if self.states.get(key) is state:
                now = self.clock()
                state.value, state.expires_at, state.fetched_at = fetched.value, fetched.expires_at, now
                state.inherited = False
                state.failures, state.last_error = 0, None
                state.refreshes += 1
                state.due = refresh_at(fetched, now)
                log.info("credential of BackendSecurityPolicy %s %s%s", key,
                         "refreshed" if state.refreshes > 1 else "fetched",
                         f"; valid for {fetched.expires_at - now:.0f}s" if fetched.expires_at is not None else "")
                self._publish()
        finally:
            if self.states.get(key) is state:
                state.task = None
                self._wake.set()

    def _failed(self, key: str, state: State, message: str) -> None:
        if self.states.get(key) is not state:
            return
        now = self.clock()
        state.failures += 1
        state.errors += 1
        state.last_error = message
        if state.inherited:  # the changed source does not work: the old credential is not its
            state.value, state.expires_at, state.inherited = None, None, False
            self._publish()
        delay = min(BACKOFF_FIRST * 2 ** (state.failures - 1), BACKOFF_MAX)
        state.due = now + delay
        if state.value is not None and state.expires_at is not None:
            state.due = min(state.due, max(state.expires_at, now))
        keeping = "; keeping the last credential" if state.value is not None else ""
        log.warning("credential of BackendSecurityPolicy %s could not be fetched: %s (attempt %d, next in %.0fs%s)",
                    key, message, state.failures, state.due - now, keeping)

    def _expire(self, now: float) -> None:
        changed = False
        for key, state in self.states.items():
            if state.value is not None and state.expires_at is not None and state.expires_at <= now:
                log.error("credential of BackendSecurityPolicy %s expired without a successful refresh; its "
                          "backends fail over until one succeeds", key)
                state.value = None
                changed = True
        if changed:
            self._publish()

    def _publish(self) -> None:
        values = {key: s.value for key, s in self.states.items() if s.value is not None}
        if values == self._published or self.segment is None:
            self._published = values
            return
        try:
            self.segment.publish(values)
            self._published = values
        except CredentialsError as e:  # names sizes only
            log.error("could not publish the credentials: %s", e)


class CredentialCollector:
    """The refresher's state as metrics at scrape time (policy names are configuration: bounded)."""

    __slots__ = ("refresher",)

    def __init__(self, refresher: CredentialRefresher | None):
        self.refresher = refresher

    def collect(self) -> Iterator[Metric]:
        # Imported here, never at module level: prometheus-client picks its multiprocess mode when it is
        # first imported, which must come after the supervisor sets PROMETHEUS_MULTIPROC_DIR.
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        valid = GaugeMetricFamily("modelyard_credential_valid",
                                  "1 while a BackendSecurityPolicy's cloud credential is published and unexpired.",
                                  labels=["policy", "type"])
        expiry = GaugeMetricFamily("modelyard_credential_expiry_timestamp_seconds",
                                   "When the published cloud credential expires (Unix time).", labels=["policy", "type"])
        refreshes = CounterMetricFamily("modelyard_credential_refreshes", "Cloud credential fetches, by result.",
                                        labels=["policy", "type", "result"])
        if self.refresher is not None:
            for key, state in sorted(self.refresher.states.items()):
                kind = type(state.source).__name__
                valid.add_metric([key, kind], 1.0 if state.value is not None else 0.0)
                if state.value is not None and state.expires_at is not None:
                    expiry.add_metric([key, kind], state.expires_at)
                refreshes.add_metric([key, kind, "ok"], state.refreshes)
                refreshes.add_metric([key, kind, "error"], state.errors)
        yield valid
        yield expiry
        yield refreshes
