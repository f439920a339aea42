"""Admission: whether a request may go upstream at all (client authentication, rate limits,
quotas). It runs once per request, after the request is routed (its model, route and rule are
in the exchange) and before the first upstream attempt, and refuses by raising GatewayError.

Nothing is configured yet: admission_for gives None for every table, and the app then skips
the step outright, so a gateway without admission rules pays one attribute test per request.
"""

from __future__ import annotations

from typing import Any, Protocol

from modelyard.core.table import Table
from modelyard.gateway.accounting import Exchange


class Admission(Protocol):
    async def __call__(self, scope: Any, exchange: Exchange) -> None:
        """Return to admit the request; raise GatewayError (401, 403, 429, ...) to refuse it."""


def admission_for(table: Table) -> Admission | None:
    """The admission step a routing table asks for; None when it has no admission rules."""
    return None
