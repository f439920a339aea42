"""The retry policy of a route, applied to one request: which failures are retried, how many
tries the request has left, and how long to wait before the next one.

The policy itself (core/table.RetryPolicy) is decided per table generation; a Retries
object is made only once a request's first attempt failed, so an answer at the first try
allocates nothing here.
"""

from __future__ import annotations

import random
from typing import Callable

from modelyard.core.table import RetryPolicy


def retriable_status(status: int, policy: RetryPolicy) -> bool:
    """Whether an upstream answer with this status (5xx, or 429) is tried again elsewhere."""
    if status >= 500:
        return policy.any_5xx or (policy.gateway_errors and status in (502, 503, 504)) or status in policy.statuses
    return status in policy.statuses


def retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    """A 429's Retry-After in seconds: how long the health board keeps the endpoint aside."""
    for name, value in headers:
        if name.lower() == b"retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None  # an HTTP date: no hint
    return None


def attempt_deadline(now: float, deadline: float | None, per_try: float, idle: float) -> float | None:
    """When one attempt gives up waiting for its first response byte: the earliest of the rule's
    deadline, the per-try timeout and, for a stream, the stream idle timeout (0: none)."""
    limit = deadline
    for span in (per_try, idle):
        if span:
            t = now + span
            limit = t if limit is None or t < limit else limit
    return limit


def backoff_pause(policy: RetryPolicy, retries: int, remaining: float | None,
                  rand: Callable[[], float] = random.random) -> float:
    """The pause before retry number `retries` (1 for the first): full jitter over an exponential
    bound, capped by backoff_max and by the time left before the rule's deadline (`remaining`)."""
    if not policy.backoff:
        return 0.0
    pause = rand() * min(policy.backoff * (2 ** (retries - 1)), policy.backoff_max or policy.backoff)
    if remaining is not None:
        pause = min(pause, max(0.0, remaining))
    return pause


class Retries:
    """What one request has spent of its route's retry budget."""

    __slots__ = ("policy", "per_priority", "skip")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.per_priority: dict[int, int] = {}
        self.skip: frozenset[int] = frozenset()  # priorities with no tries left

    def spend(self, priority: int) -> frozenset[int]:
        """Count a failed try at `priority`; the priorities the next choice must skip."""
        limit = self.policy.per_priority
        if limit:
            n = self.per_priority[priority] = self.per_priority.get(priority, 0) + 1
            if n >= limit:
                self.skip = self.skip | {priority}
        return self.skip
