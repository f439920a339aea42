"""Calling a mock's RSGI app in this process: a scope and protocol as Granian hands them over (the
path percent-decoded, the headers a multi-valued mapping), and the answer they record."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import unquote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class Headers:
    def __init__(self, pairs: list[tuple[str, str]]):
        self._pairs = [(k.lower(), v) for k, v in pairs]

    def get(self, name: str, default: Any = None) -> Any:
        return next((v for k, v in self._pairs if k == name.lower()), default)

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self._pairs if k == name.lower()]

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def keys(self) -> list[str]:
        return [k for k, _ in self._pairs]


class Scope:
    def __init__(self, method: str, url: str, headers: list[tuple[str, str]]):
        parts = urlsplit(url)
        self.method, self.path, self.query_string = method, unquote(parts.path), parts.query
        self.headers = Headers(headers)
        self.scheme, self.authority, self.client = "http", None, "127.0.0.1:50000"


class Answer:
    """What the app answered: status, headers (lower-cased names) and body (a stream's writes joined)."""

    def __init__(self, body: bytes):
        self._request_body = body
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.writes: list[bytes] = []

    async def __call__(self) -> bytes:
        return self._request_body

    def response_bytes(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.status, self.headers, self.body = status, {k.lower(): v for k, v in headers}, data

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Answer:
        self.status, self.headers = status, {k.lower(): v for k, v in headers}
        return self

    async def send_bytes(self, data: bytes) -> None:
        self.writes.append(data)
        self.body += data

    def json(self) -> Any:
        return json.loads(self.body)


def call(app: Any, method: str, url: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> Answer:
    """One request to ``app``; ``url`` as the client sent it (percent-encoded), e.g. ``/model/m%3A0/converse``."""
    answer = Answer(body)
    asyncio.run(app.__rsgi__(Scope(method, url, headers or []), answer))
    return answer


def signed_headers(method: str, url: str, body: bytes, key: str, secret: str, token: str | None = None,
                   region: str = "us-east-1", extra: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The headers botocore's SigV4 adds for this request (service bedrock), host 127.0.0.1:8000."""
    request = AWSRequest(method=method, url="http://127.0.0.1:8000" + url, data=body,
                         headers={"host": "127.0.0.1:8000", "content-type": "application/json", **(extra or {})})
    SigV4Auth(Credentials(key, secret, token), "bedrock", region).add_auth(request)
    return [(k.lower(), v) for k, v in request.headers.items()]
