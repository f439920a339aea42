"""The credentials segment: credential values the control process publishes for the workers, beside
the routing table (core/shm.py) and the health board (core/health.py), in one mapped file.

Tokens that change under a running table (cloud access tokens, refreshed before they expire) cannot
live in the table, which is rendered once per generation: they live here, as a msgpack map from a
key (a backend's name) to its current value, under a generation counter. Its writer is the control
process's credential refresher (the next step); until then the segment stays empty, at generation 0. Workers poll the counter
with the table's timer, off the hot path, and copy the map when it moved; auth hooks read the copy.

Layout: a 64-byte header (magic, sequence, generation, length, crc32, capacity), then one area of
`capacity` bytes. The single writer makes the sequence odd, writes the map and the header fields,
and makes it even again; a reader accepts a copy only if the sequence was even and unchanged
around it and the checksum matches, else it tries again: no reader sees a torn map.

The values are secrets: nothing here logs them, and errors name sizes and paths only.
"""

from __future__ import annotations

import mmap
import struct
import zlib

import msgspec

from modelyard.core.mapped import SEQ, SEQ_AT, SeqlockSegment, attach_file, create_file

MAGIC = b"MYARDCR1"
HEADER = struct.Struct("<8sQQQIQ")  # magic, sequence, generation, length, crc32, capacity
HEADER_SIZE = 64
DEFAULT_CAPACITY = 1 << 20  # bytes of msgpack: tens of thousands of tokens

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[str, str])


class CredentialsError(RuntimeError):
    pass


class CredentialsSegment(SeqlockSegment):
    def __init__(self, path: str, mm: mmap.mmap, writable: bool):
        super().__init__(path, mm)
        self._writable = writable
        self.capacity = HEADER.unpack_from(mm, 0)[5]

    def __repr__(self) -> str:  # never the values
        return f"CredentialsSegment({self.path!r})"

    @classmethod
    def create(cls, directory: str | None = None, capacity: int = DEFAULT_CAPACITY,
               path: str | None = None) -> CredentialsSegment:
        """A new segment at `path` (mode 0600), else a fresh name in `directory`."""
        path, mm = create_file(path, directory, "modelyard-credentials-", HEADER_SIZE + capacity)
        HEADER.pack_into(mm, 0, MAGIC, 0, 0, 0, 0, capacity)
        return cls(path, mm, writable=True)

    @classmethod
    def attach(cls, path: str, writable: bool = False) -> CredentialsSegment:
        return cls(path, attach_file(path, MAGIC, writable, CredentialsError, "credentials segment"), writable)

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
        SEQ.pack_into(mm, SEQ_AT, seq + 1)  # odd: being written
        mm[HEADER_SIZE:HEADER_SIZE + len(payload)] = payload
        HEADER.pack_into(mm, 0, MAGIC, seq + 1, generation + 1, len(payload), zlib.crc32(payload), capacity)
        SEQ.pack_into(mm, SEQ_AT, seq + 2)
        return generation + 1

    def read(self, timeout: float = 1.0) -> tuple[int, dict[str, str]]:
        """(generation, map) as last published; (0, {}) before the first publication."""
        return self._retry(self._try_read, timeout, CredentialsError, "could not read a consistent credentials map")

    def _try_read(self) -> tuple[int, dict[str, str]] | None:
        _, seq, generation, length, crc, _ = HEADER.unpack_from(self._mm, 0)
        if seq & 1:
            return None
        data = self._mm[HEADER_SIZE:HEADER_SIZE + length]
        if not self._unchanged(seq) or zlib.crc32(data) != crc:
            return None
        return generation, _decoder.decode(data) if length else {}

