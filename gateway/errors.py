"""Answering errors, once: a GatewayError raised where an error is found is answered here in
the shape of the client's API; anything else is a bug of ours, logged where it happened.

A client that goes away is neither: CLIENT_GONE lists what the relay and Granian raise then,
so that only those are recorded as `client_disconnected`.
"""

from __future__ import annotations

import logging
import os
import traceback
from typing import Any

from granian.rsgi import ProtocolClosed, ProtocolError

from modelyard.core.errors import GatewayError
from modelyard.gateway.accounting import Exchange

log = logging.getLogger("modelyard.worker")

JSON_HEADERS = [("content-type", "application/json")]
BACKEND_HEADER = "x-ai-gateway-backend"
# Granian's transport once the client closed (ProtocolClosed, ProtocolError), and the relay's
# ClientGone (a ConnectionError) when the client's socket went away while it waited.
CLIENT_GONE = (ProtocolClosed, ProtocolError, ConnectionError)
INTERNAL_ERROR_MESSAGE = "The gateway failed unexpectedly; the error is logged."
MAX_FRAMES = 12  # of an unexpected error's stack, logged


def answer_error(proto: Any, exchange: Exchange, error: GatewayError) -> None:
    """Answer `error` in the shape of the client's API and note it for the access log."""
    exchange.status, exchange.error = error.status, error.code
    headers = JSON_HEADERS
    if error.backend:
        exchange.backend = error.backend
        headers = [*headers, (BACKEND_HEADER, error.backend)]
    if error.headers:
        headers = [*headers, *error.headers]
    proto.response_bytes(error.status, headers, error.body(exchange.client))


def where(e: BaseException) -> str:
    """Where an exception was raised, as `file:line function` frames, innermost last."""
    frames = traceback.extract_tb(e.__traceback__)[-MAX_FRAMES:]
    return " > ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in frames)


def log_unexpected(e: BaseException, exchange: Exchange) -> None:
    """A bug of ours, logged once with its traceback as one line of frames: without the request
    or the exception's text, either of which may hold what a client sent (a prompt, a key)."""
    log.error("unexpected %s while serving %s %r, at %s", type(e).__name__, exchange.method, exchange.path, where(e))


def internal_error(proto: Any, exchange: Exchange, e: Exception) -> None:
    """Log an unexpected error and answer 500 in the client's shape, unless an answer has begun
    (then the status stays what the client got, and the error is noted for the access log)."""
    if isinstance(e, RecursionError) and exchange.status == 0:
        # A body nested deeper than a decoder after the sniff could follow: the client's error.
        answer_error(proto, exchange, GatewayError(400, "invalid_json", "The request body is nested too deeply."))
        return
    log_unexpected(e, exchange)
    if exchange.status == 0:
        try:
            answer_error(proto, exchange, GatewayError(500, "internal_error", INTERNAL_ERROR_MESSAGE))
            return
        except Exception:  # the response had started after all
            exchange.status = 500
    exchange.error = "internal_error"

