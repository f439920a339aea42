"""The retry policy's arithmetic: which failures retry, the per-try deadline, backoff and budget (no processes)."""

from __future__ import annotations

from modelyard.core.table import RetryPolicy
from modelyard.gateway.retry import Retries, attempt_deadline, backoff_pause, retriable_status, retry_after


def test_which_statuses_retry() -> None:
    default = RetryPolicy()
    assert all(retriable_status(s, default) for s in (500, 502, 503, 504, 429))
    assert not retriable_status(404, default)
    gateway_only = RetryPolicy(any_5xx=False)
    assert retriable_status(503, gateway_only) and not retriable_status(500, gateway_only)
    listed = RetryPolicy(any_5xx=False, gateway_errors=False, statuses=(500, 409))
    assert retriable_status(500, listed) and retriable_status(409, listed)
    assert not retriable_status(502, listed) and not retriable_status(429, listed)


def test_retry_after_in_seconds_only() -> None:
    assert retry_after([(b"Retry-After", b"7")]) == 7.0
    assert retry_after([(b"retry-after", b"-3")]) == 0.0
    assert retry_after([(b"retry-after", b"Wed, 21 Oct 2015 07:28:00 GMT")]) is None
    assert retry_after([(b"content-type", b"application/json")]) is None


def test_an_attempt_ends_at_the_earliest_of_deadline_per_try_and_idle() -> None:
    assert attempt_deadline(100.0, None, 0.0, 0.0) is None
    assert attempt_deadline(100.0, 130.0, 0.0, 0.0) == 130.0
    assert attempt_deadline(100.0, 130.0, 5.0, 0.0) == 105.0
    assert attempt_deadline(100.0, 130.0, 5.0, 2.0) == 102.0
    assert attempt_deadline(100.0, None, 0.0, 40.0) == 140.0
    assert attempt_deadline(100.0, 101.0, 5.0, 2.0) == 101.0


def test_backoff_doubles_up_to_its_maximum_with_full_jitter_and_stops_at_the_deadline() -> None:
    top = lambda: 1.0  # noqa: E731  (the jitter at its largest)
    policy = RetryPolicy(backoff=0.1, backoff_max=0.3)
    assert [backoff_pause(policy, n, None, top) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
    assert backoff_pause(policy, 1, None, lambda: 0.5) == 0.05
    assert backoff_pause(policy, 3, 0.25, top) == 0.25  # never past the rule's deadline
    assert backoff_pause(policy, 3, -1.0, top) == 0.0
    assert backoff_pause(RetryPolicy(backoff=0.1), 4, None, top) == 0.1  # no maximum: the first pause caps it
    assert backoff_pause(RetryPolicy(), 3, None, top) == 0.0


def test_tries_per_priority_are_counted_until_that_priority_is_skipped() -> None:
    retries = Retries(RetryPolicy(per_priority=2))
    assert retries.spend(0) == frozenset()
    assert retries.spend(1) == frozenset()
    assert retries.spend(0) == {0}
    assert retries.spend(1) == {0, 1}
    unlimited = Retries(RetryPolicy())
    for _ in range(5):
        assert unlimited.spend(0) == frozenset()
