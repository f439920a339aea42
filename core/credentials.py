"""The credentials segment: credential values the control process publishes for the workers, beside
the routing table (core/shm.py) and the health board (core/health.py), in one mapped file.

Tokens that change under a running table (cloud access tokens, refreshed before they expire) cannot
live in the table, which is rendered once per generation: they live here, as a msgpack map from a
key (a backend's name) to its current value, under a generation counter. Workers poll the counter
with the table's timer, off the hot path, and copy the map when it moved; auth hooks read the copy.

Layout: a 64-byte header (magic, sequence, generation, length, crc32, capacity), then one area of
`capacity` bytes. The single writer makes the sequence odd, writes the map and the header fields,
and makes it even again; a reader accepts a copy only if the sequence was even and unchanged
around it and the checksum matches, else it tries again: no reader sees a torn map.

The values are secrets: nothing here logs them, and errors name sizes and paths only.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import time
import zlib

import msgspec

from modelyard.core.table import Table

MAGIC = b"MYARDCR1"
HEADER = struct.Struct("<8sQQQIQ")  # magic, sequence, generation, length, crc32, capacity
HEADER_SIZE = 64
_SEQ = struct.Struct("<Q")
_SEQ_AT = 8
_GEN_AT = 16
DEFAULT_CAPACITY = 1 << 20  # bytes of msgpack: tens of thousands of tokens

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[str, str])


class CredentialsError(RuntimeError):
    pass


class CredentialsSegment:
    def __init__(self, path: str, mm: mmap.mmap, writable: bool):
        self.path = path
        self._mm = mm
        self._writable = writable
        self.capacity = HEADER.unpack_from(mm, 0)[5]

    def __repr__(self) -> str:  # never the values
        return f"CredentialsSegment({self.path!r})"

    @classmethod
    def create(cls, directory: str | None = None, capacity: int = DEFAULT_CAPACITY,
               path: str | None = None) -> CredentialsSegment:
        """A new segment at `path` (mode 0600), else a fresh name in `directory`."""
        if path is None:
            fd, path = tempfile.mkstemp(prefix="modelyard-credentials-", dir=directory)  # mode 0600
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, HEADER_SIZE + capacity)
            mm = mmap.mmap(fd, HEADER_SIZE + capacity)
        finally:
            os.close(fd)
        HEADER.pack_into(mm, 0, MAGIC, 0, 0, 0, 0, capacity)
        return cls(path, mm, writable=True)

    @classmethod
    def attach(cls, path: str, writable: bool = False) -> CredentialsSegment:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
        finally:
            os.close(fd)
        if mm[:8] != MAGIC:
            raise CredentialsError(f"{path} is not a credentials segment")
        return cls(path, mm, writable)

    def generation(self) -> int:
        """The generation of the published map (0: nothing yet): one 8-byte load, for polling."""
        return _SEQ.unpack_from(self._mm, _GEN_AT)[0]

    def publish(self, values: dict[str, str]) -> int:
        """Replace the map; its new generation. Refused (and nothing changes) when it does not fit."""
        if not self._writable:
            raise CredentialsError("credentials segment attached read-only")
        payload = _encoder.encode(values)
        if len(payload) > self.capacity:
            raise CredentialsError(f"{len(values)} credentials take {len(payload)} bytes, over the segment's "
                                   f"{self.capacity}")
        mm = self._mm
        _, seq, generation, _, _, capacity = HEADER.unpack_from(mm, 0)
        _SEQ.pack_into(mm, _SEQ_AT, seq + 1)  # odd: being written
        mm[HEADER_SIZE:HEADER_SIZE + len(payload)] = payload
        HEADER.pack_into(mm, 0, MAGIC, seq + 1, generation + 1, len(payload), zlib.crc32(payload), capacity)
        _SEQ.pack_into(mm, _SEQ_AT, seq + 2)
        return generation + 1

    def read(self, timeout: float = 1.0) -> tuple[int, dict[str, str]]:
        """(generation, map) as last published; (0, {}) before the first publication."""
        mm = self._mm
        deadline = time.monotonic() + timeout
        while True:
            _, seq, generation, length, crc, _ = HEADER.unpack_from(mm, 0)
            if not seq & 1:
                data = mm[HEADER_SIZE:HEADER_SIZE + length]
                if _SEQ.unpack_from(mm, _SEQ_AT)[0] == seq and zlib.crc32(data) == crc:
                    return generation, _decoder.decode(data) if length else {}
            if time.monotonic() > deadline:
                raise CredentialsError("could not read a consistent credentials map")
            time.sleep(0.0005)

    def close(self) -> None:
        self._mm.close()

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def table_credentials(table: Table) -> dict[str, str]:
    """The credential values a table's backends use today, by backend name: the configured API
    key's header value. Refreshed tokens will be published under the same keys."""
    return {b.name: b.auth_headers[0][1] for b in table.backends if b.auth_headers}
