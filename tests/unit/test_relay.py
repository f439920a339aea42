"""Relaying a stream: a client that goes away is a disconnect; a bug of ours midway is not (no processes)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from granian.rsgi import ProtocolClosed

from modelyard.core.sniff import Sniffed
from modelyard.gateway.accounting import Exchange
from modelyard.gateway.proxy import Attempt
from modelyard.gateway.relay import CLIENT_CLOSED, relay_answer


class _Conn:
    """An upstream answer: an event stream of the given chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.status = 200
        self.headers = [(b"content-type", b"text/event-stream")]
        self.chunks = chunks
        self.aborted = False

    async def read_chunk(self) -> bytes | None:
        return self.chunks.pop(0) if self.chunks else None

    def abort(self) -> None:
        self.aborted = True


class _Transport:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.sent: list[bytes] = []

    async def send_bytes(self, data: bytes) -> None:
        if self.fail and self.sent:
            raise ProtocolClosed("the client closed the connection")
        self.sent.append(data)


class _Proto:
    def __init__(self, transport: _Transport) -> None:
        self.transport = transport

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> _Transport:
        return self.transport


class _BuggyStream:
    """A stream translator that fails on the second event with a message holding client data."""

    usage = None
    model = None

    def __init__(self) -> None:
        self.events = 0

    def feed(self, chunk: bytes) -> bytes:
        self.events += 1
        if self.events > 1:
            raise KeyError("sk-secret from the client's prompt")
        return chunk

    def end(self) -> bytes:
        return b""


class _Translator:
    def stream(self, wants_usage: bool) -> _BuggyStream:
        return _BuggyStream()


def _relay(translator: Any, transport: _Transport, conn: _Conn) -> Exchange:
    exchange = Exchange(0.0, "chat")
    exchange.method, exchange.path = "POST", "/v1/chat/completions"
    fwd = SimpleNamespace(exchange=exchange, proto=_Proto(transport), scope=SimpleNamespace(client="", server=""),
                          sniffed=Sniffed(), forced=False, idle=0.0, operation="/chat/completions")
    ref = SimpleNamespace(backend=SimpleNamespace(name="default/b", translators={("openai", "/chat/completions"): translator}),
                          timeout=None)
    target = SimpleNamespace(where="backend default/b (127.0.0.1:9)")
    result = Attempt(conn, b"data: {}\n\n", True)  # type: ignore[arg-type]
    asyncio.run(relay_answer(fwd, result, ref, target))  # type: ignore[arg-type]
    return exchange


def test_a_translator_bug_mid_stream_is_logged_with_its_traceback_not_called_a_disconnect(caplog) -> None:
    transport = _Transport(fail=False)
    conn = _Conn([b"data: {}\n\n", b"data: [DONE]\n\n"])
    with caplog.at_level("INFO", logger="modelyard.worker"):
        exchange = _relay(_Translator(), transport, conn)
    assert (exchange.status, exchange.error) == (500, "internal_error")
    assert conn.aborted
    # The client got the first event, then an error event in its API's shape.
    assert transport.sent[0] == b"data: {}\n\n"
    event = json.loads(transport.sent[-1].removeprefix(b"data: "))
    assert event["error"]["code"] == "internal_error"
    (record,) = caplog.records
    text = record.getMessage()
    assert record.levelname == "ERROR" and "KeyError" in text
    assert "feed" in text and "relay.py" in text  # the traceback's frames, down to the translator's
    assert "sk-secret" not in text and "\n" not in text


@pytest.mark.parametrize("translated", [False, True])
def test_a_client_that_goes_away_mid_stream_is_a_disconnect_and_not_logged_as_an_error(translated: bool,
                                                                                        caplog) -> None:
    transport = _Transport(fail=True)
    conn = _Conn([b"data: {}\n\n", b"data: [DONE]\n\n"])

    class _Fine(_Translator):
        def stream(self, wants_usage: bool) -> Any:
            stream = _BuggyStream()
            stream.feed = lambda chunk: chunk  # type: ignore[method-assign]
            return stream

    with caplog.at_level("INFO", logger="modelyard.worker"):
        exchange = _relay(_Fine() if translated else None, transport, conn)
    assert (exchange.status, exchange.error) == (CLIENT_CLOSED, "client_disconnected")
    assert conn.aborted and not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_translator_bug_in_a_whole_answer_is_answered_500_in_shape(caplog) -> None:
    from modelyard.gateway.errors import internal_error

    class _Whole(_Conn):
        async def read_all(self, limit: int) -> bytes:
            return b'{"id": "x"}'

    class _BuggyWhole:
        def response(self, data: bytes) -> Any:
            raise KeyError("sk-secret")

    class _Answers(_Proto):
        def __init__(self, transport: _Transport) -> None:
            super().__init__(transport)
            self.answers: list[tuple[int, bytes]] = []

        def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.answers.append((status, body))

    conn = _Whole([])
    conn.headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    exchange = Exchange(0.0, "chat", "anthropic")
    proto = _Answers(_Transport(fail=False))
    fwd = SimpleNamespace(exchange=exchange, proto=proto, scope=None, sniffed=Sniffed(), forced=False, idle=0.0,
                          operation="/messages")
    ref = SimpleNamespace(backend=SimpleNamespace(name="b", translators={("anthropic", "/messages"): _BuggyWhole()}),
                          timeout=None)
    with pytest.raises(KeyError) as info:
        asyncio.run(relay_answer(fwd, Attempt(conn), ref, SimpleNamespace(where="b")))  # type: ignore[arg-type]
    assert exchange.status == 0  # nothing was answered yet: the top level answers it
    with caplog.at_level("INFO", logger="modelyard.worker"):
        internal_error(proto, exchange, info.value)
    ((status, body),) = proto.answers
    assert status == 500 and json.loads(body)["error"]["type"] == "api_error"
    assert (exchange.status, exchange.error) == (500, "internal_error")
    assert [r.levelname for r in caplog.records] == ["ERROR"]
