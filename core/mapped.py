"""Plain files mapped into memory that the control process and the workers share: the routing table
(core/shm.py), the health board (core/health.py) and the credentials (core/credentials.py).

Each is a plain file mapped with mmap (in /dev/shm where it exists), not multiprocessing.shared_memory,
whose resource tracker would unlink the segment when any worker that attached to it exits. Every
segment begins with 8 bytes of magic; the seqlock-guarded ones (table, credentials) follow them with
their sequence counter and their generation, each one 8-byte word.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import time
from typing import Callable, TypeVar

SEQ = struct.Struct("<Q")
SEQ_AT = 8  # the sequence counter: odd while a writer changes the segment
GEN_AT = 16  # the generation of what is published: one 8-byte load, for polling

T = TypeVar("T")


def create_file(path: str | None, directory: str | None, prefix: str, size: int) -> tuple[str, mmap.mmap]:
    """A new file of `size` bytes (mode 0600) at `path`, else a fresh name in `directory`, and its mapping."""
    if path is None:
        fd, path = tempfile.mkstemp(prefix=prefix, dir=directory)  # mode 0600
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        return path, mmap.mmap(fd, size)
    finally:
        os.close(fd)


def attach_file(path: str, magic: bytes, writable: bool, error: type[Exception], what: str) -> mmap.mmap:
    """The mapping of an existing segment; `error` when it does not begin with `magic`."""
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
    finally:
        os.close(fd)
    if mm[:8] != magic:
        mm.close()
        raise error(f"{path} is not a {what}")
    return mm


class MappedSegment:
    """A mapped file: its path and mapping, closed and removed the same way for every segment."""

    def __init__(self, path: str, mm: mmap.mmap):
        self.path = path
        self._mm = mm

    def close(self) -> None:
        self._mm.close()

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class SeqlockSegment(MappedSegment):
    """A segment one writer republishes under a sequence counter; readers retry a torn copy."""

    def generation(self) -> int:
        """The generation of what is published (0: nothing yet)."""
        return SEQ.unpack_from(self._mm, GEN_AT)[0]

    def _unchanged(self, seq: int) -> bool:
        """True when the sequence counter still reads `seq`: no writer came between."""
        return SEQ.unpack_from(self._mm, SEQ_AT)[0] == seq

    @staticmethod
    def _retry(attempt: Callable[[], T | None], timeout: float, error: type[Exception], message: str) -> T:
        """The first result of `attempt` that is not None (a consistent copy); `error` after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            got = attempt()
            if got is not None:
                return got
            if time.monotonic() > deadline:
                raise error(message)
            time.sleep(0.0005)
