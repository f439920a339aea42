"""A double-buffered, seqlock-guarded segment of shared memory holding one published blob.

Layout: a 64-byte header, then two slots of equal capacity. The single writer
(the config watcher) fills the slot readers are not using, then rewrites the
header under a sequence counter that is odd while the header changes. Readers
copy the active slot and accept it only if the counter did not move meanwhile
and the checksum matches, so they never see a half-written table. Reading the
generation alone is one 8-byte load: workers poll it off the hot path.

The segment is a plain file mapped with mmap (in /dev/shm where it exists), not
multiprocessing.shared_memory, whose resource tracker would unlink the segment
when any worker that attached to it exits.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import time
import zlib

MAGIC = b"MYARDTB1"
HEADER = struct.Struct("<8sQQIIQQ")  # magic, seq, generation, slot, crc32, length, slot capacity
HEADER_SIZE = 64
_SEQ = struct.Struct("<Q")
_SEQ_OFFSET = 8
_GEN_OFFSET = 16
DEFAULT_CAPACITY = 64 * 1024 * 1024  # per slot; tmpfs pages cost nothing until written


class SegmentError(RuntimeError):
    pass


def default_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


class TableSegment:
    def __init__(self, path: str, mm: mmap.mmap, writable: bool):
        self.path = path
        self._mm = mm
        self._writable = writable
        self.capacity = HEADER.unpack_from(mm, 0)[6]

    @classmethod
    def create(cls, path: str | None = None, capacity: int = DEFAULT_CAPACITY) -> TableSegment:
        if path is None:
            fd, path = tempfile.mkstemp(prefix="modelyard-table-", dir=default_dir())
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, HEADER_SIZE + 2 * capacity)
            mm = mmap.mmap(fd, HEADER_SIZE + 2 * capacity)
        finally:
            os.close(fd)
        HEADER.pack_into(mm, 0, MAGIC, 0, 0, 0, 0, 0, capacity)
        return cls(path, mm, writable=True)

    @classmethod
    def attach(cls, path: str, writable: bool = False) -> TableSegment:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
        finally:
            os.close(fd)
        if mm[:8] != MAGIC:
            raise SegmentError(f"{path} is not a routing-table segment")
        return cls(path, mm, writable)

    def generation(self) -> int:
        return _SEQ.unpack_from(self._mm, _GEN_OFFSET)[0]

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
        _SEQ.pack_into(mm, _SEQ_OFFSET, seq + 1)  # odd: header in flux
        HEADER.pack_into(mm, 0, MAGIC, seq + 1, generation, target, zlib.crc32(payload), len(payload), cap)
        _SEQ.pack_into(mm, _SEQ_OFFSET, seq + 2)

    def read(self, timeout: float = 1.0) -> tuple[int, bytes]:
        """(generation, payload) of the published blob; generation 0 means nothing yet."""
        mm = self._mm
        deadline = time.monotonic() + timeout
        while True:
            _, seq, gen, slot, crc, length, cap = HEADER.unpack_from(mm, 0)
            if not seq & 1:
                start = HEADER_SIZE + slot * cap
                data = mm[start:start + length]
                if _SEQ.unpack_from(mm, _SEQ_OFFSET)[0] == seq and zlib.crc32(data) == crc:
                    return gen, data
            if time.monotonic() > deadline:
                raise SegmentError("could not read a consistent routing table")
            time.sleep(0.0005)

    def close(self) -> None:
        self._mm.close()

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
