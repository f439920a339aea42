"""The worker's copy of the credentials segment (core/credentials.py), and the auth hook that
sends a bearer token from it.

The worker's table timer calls `CREDENTIALS.refresh()`: one 8-byte load, and a copy of the map
only when the control process published a new one. A hook renders its header once per
credentials generation, so a request pays for a comparison, not for formatting.
"""

from __future__ import annotations

import logging
from typing import Any

from modelyard.core.credentials import CredentialsSegment
from modelyard.core.settings import current as current_settings
from modelyard.core.wire import HEADER_ENCODING, header_value_problem
from modelyard.gateway.providers.base import AuthHook

log = logging.getLogger("modelyard.worker")


class WorkerCredentials:
    """The credential values as last published; empty without a segment."""

    __slots__ = ("segment", "generation", "values")

    def __init__(self, segment: CredentialsSegment | None = None) -> None:
        self.segment = segment
        self.generation = 0
        self.values: dict[str, str] = {}

    def __repr__(self) -> str:  # never the values
        return f"WorkerCredentials(generation={self.generation}, keys={len(self.values)})"

    def recheck(self) -> bool:
        """For a hook that found no credential: look at the segment now rather than at the next tick
        (the control process may have just published it: a gateway's first credential, a policy a
        reload added). True when a newer map was copied. Costs one 8-byte load when nothing changed."""
        generation = self.generation
        self.refresh()
        return self.generation != generation

    def refresh(self) -> None:
        """Copy the published map if it changed (attaching on first use); a failure keeps the last copy."""
        try:
            if self.segment is None:
                path = current_settings().credentials
                if not path:
                    return
                self.segment = CredentialsSegment.attach(path)
            if self.segment.generation() != self.generation:
                self.generation, self.values = self.segment.read()
        except Exception as e:  # the message names no value
            log.error("could not read the credentials segment (%s); keeping generation %d", e, self.generation)


CREDENTIALS = WorkerCredentials()


def bearer_auth(mutation_lines: bytes, key: str, credentials: WorkerCredentials = CREDENTIALS) -> AuthHook:
    """`authorization: Bearer <token>` with the token published under `key`; None (a 401) while
    there is none, or none a header can carry."""
    rendered: list[Any] = [-1, None]  # (credentials generation, lines)

    def render() -> None:
        token = credentials.values.get(key)
        ok = token is not None and header_value_problem(token, None) is None
        lines = f"authorization: Bearer {token}\r\n".encode(HEADER_ENCODING) if ok else None
        rendered[:] = [credentials.generation, mutation_lines + lines if lines is not None else None]

    def hook(head: list[bytes], body: bytes, client: Any) -> bytes | None:
        if rendered[0] != credentials.generation:
            render()
        if rendered[1] is None and credentials.recheck():
            render()
        return rendered[1]
    return hook
