"""A double-buffered, seqlock-guarded segment of shared memory holding one published blob.

Layout: a 64-byte header, then two slots of equal capacity. The single writer
(the config watcher) fills the slot readers are not using, then rewrites the
header under a sequence counter that is odd while the header changes. Readers
copy the active slot and accept it only if the counter did not move meanwhile
and the checksum matches, so they never see a half-written table. Reading the
generation alone is one 8-byte load: workers poll it off the hot path.

The file and its seqlock are core/mapped.py's.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import zlib

from modelyard.core.mapped import SEQ, SEQ_AT, SeqlockSegment, attach_file, create_file

MAGIC = b"MYARDTB1"
HEADER = struct.Struct("<8sQQIIQQ")  # magic, seq, generation, slot, crc32, length, slot capacity
HEADER_SIZE = 64
DEFAULT_CAPACITY = 64 * 1024 * 1024  # per slot; tmpfs pages cost nothing until written


class SegmentError(RuntimeError):
    pass


def default_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


class TableSegment(SeqlockSegment):
    def __init__(self, path: str, mm: mmap.mmap, writable: bool):
        super().__init__(path, mm)
        self._writable = writable
        self.capacity = HEADER.unpack_from(mm, 0)[6]

    @classmethod
    def create(cls, path: str | None = None, capacity: int = DEFAULT_CAPACITY) -> TableSegment:
        path, mm = create_file(path, default_dir(), "modelyard-table-", HEADER_SIZE + 2 * capacity)
        HEADER.pack_into(mm, 0, MAGIC, 0, 0, 0, 0, 0, capacity)
        return cls(path, mm, writable=True)

    @classmethod
    def attach(cls, path: str, writable: bool = False) -> TableSegment:
        return cls(path, attach_file(path, MAGIC, writable, SegmentError, "routing-table segment"), writable)

    def publish(self, payload: bytes, generation: int) -> None:
        if not self._writable:
            raise SegmentError("segment attached read-only")
        if len(payload) > self.capacity:
            raise SegmentError(f"routing table of {len(payload)} bytes exceeds the segment's {self.capacity}-byte slots")
        mm = self._mm
        _, seq, _, slot, _, _, cap = HEADER.unpack_from(mm, 0)
        target = 1 - slot if seq else 0
        start = HEADER_SIZE + target * cap
        mm[start:start + len(payload)] = payload
        SEQ.pack_into(mm, SEQ_AT, seq + 1)  # odd: header in flux
        HEADER.pack_into(mm, 0, MAGIC, seq + 1, generation, target, zlib.crc32(payload), len(payload), cap)
        SEQ.pack_into(mm, SEQ_AT, seq + 2)

    def read(self, timeout: float = 1.0) -> tuple[int, bytes]:
        """(generation, payload) of the published blob; generation 0 means nothing yet."""
        return self._retry(self._try_read, timeout, SegmentError, "could not read a consistent routing table")

    def _try_read(self) -> tuple[int, bytes] | None:
        mm = self._mm
        _, seq, gen, slot, crc, length, cap = HEADER.unpack_from(mm, 0)
        if seq & 1:
            return None
        start = HEADER_SIZE + slot * cap
        data = mm[start:start + length]
        return (gen, data) if self._unchanged(seq) and zlib.crc32(data) == crc else None
