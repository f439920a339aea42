"""Passive health of upstream endpoints, shared by every worker through one mapped file.

Each endpoint the routing table names owns a fixed 64-byte slot, assigned by the
config watcher and kept across reloads (the slot stores a digest of its key, so
a restarted watcher finds the same slots again). Workers record the outcome of
each attempt; an endpoint that fails `consecutive` times in a row is ejected for
base x (number of recent ejections), capped, as in Envoy's outlier detection.

Slots are updated without locks: a lost increment when two workers fail the
same endpoint at the same instant only delays an ejection by one failure, and
every field is an aligned 4- or 8-byte word, so no reader sees a torn value.
Times are CLOCK_MONOTONIC, which all processes on the machine share.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
import time
from dataclasses import dataclass

from modelyard.core.mapped import MappedSegment, attach_file, create_file
from modelyard.core.table import OutlierPolicy

MAGIC = b"MYARDHB1"
HEADER_SIZE = 64
SLOT_SIZE = 64
DEFAULT_SLOTS = 65536  # 4 MiB of tmpfs, touched only where used
NO_SLOT = -1

# digest, consecutive failures, ejections (multiplier), total ejections, ejected until, last failure, last status
_SLOT = struct.Struct("<16sIIQddI")
_FAILS = struct.Struct("<I")
_UNTIL = struct.Struct("<d")
_FAILS_AT = 16
_UNTIL_AT = 32

@dataclass(frozen=True)
class SlotState:
    failures: int
    ejections: int
    total_ejections: int
    ejected_for: float  # seconds left, 0 when serving
    last_status: int


def digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


class HealthBoard(MappedSegment):
    def __init__(self, path: str, mm: mmap.mmap):
        super().__init__(path, mm)
        self.slots = (len(mm) - HEADER_SIZE) // SLOT_SIZE

    @classmethod
    def create(cls, directory: str | None = None, slots: int = DEFAULT_SLOTS, path: str | None = None) -> HealthBoard:
        """A new board at `path`, else a fresh name in `directory`."""
        path, mm = create_file(path, directory, "modelyard-health-", HEADER_SIZE + slots * SLOT_SIZE)
        mm[:8] = MAGIC
        return cls(path, mm)

    @classmethod
    def attach(cls, path: str) -> HealthBoard:
        return cls(path, attach_file(path, MAGIC, True, ValueError, "health board"))

    def _at(self, slot: int) -> int:
        return HEADER_SIZE + slot * SLOT_SIZE

    # -- the data plane: cheap reads, writes only when something changes ---------------------

    def ejected(self, slot: int, now: float) -> bool:
        return slot >= 0 and _UNTIL.unpack_from(self._mm, self._at(slot) + _UNTIL_AT)[0] > now

    def success(self, slot: int) -> None:
        if slot < 0:
            return
        at = self._at(slot) + _FAILS_AT
        if _FAILS.unpack_from(self._mm, at)[0]:
            _FAILS.pack_into(self._mm, at, 0)

    def failure(self, slot: int, status: int, outlier: OutlierPolicy, now: float, eject_for: float | None = None) -> bool:
        """Record a failed attempt; True when it ejected the endpoint.

        `eject_for` (a 429's Retry-After) ejects at once for that long.
        """
        if slot < 0:
            return False
        mm = self._mm
        at = self._at(slot)
        key, fails, ejections, total, until, last_failure, _ = _SLOT.unpack_from(mm, at)
        fails += 1
        eject = eject_for is not None or fails >= outlier.consecutive
        if eject and until <= now:
            if ejections and now - until > outlier.base * ejections:
                ejections = 0  # healthy for as long as it was last out: start from the base again
            ejections += 1
            total += 1
            span = eject_for if eject_for is not None else outlier.base * ejections
            until = now + min(span, outlier.max)
            fails = 0
        else:
            eject = False
        _SLOT.pack_into(mm, at, key, fails, ejections, total, until, now, status)
        return eject

    # -- the control plane --------------------------------------------------------------------

    def assign(self, keys: list[str]) -> dict[str, int]:
        """Slots for `keys`: the slot already holding a key's digest, else a free one (open addressing)."""
        out: dict[str, int] = {}
        mm = self._mm
        empty = bytes(16)
        for key in keys:
            d = digest(key)
            start = int.from_bytes(d[:8], "little") % self.slots
            for probe in range(self.slots):
                slot = (start + probe) % self.slots
                at = self._at(slot)
                held = bytes(mm[at:at + 16])
                if held == d:
                    break
                if held == empty:
                    mm[at:at + 16] = d
                    break
            else:
                slot = NO_SLOT  # full: the endpoint is served without health tracking
            out[key] = slot
        return out

    def state(self, slot: int, now: float | None = None) -> SlotState:
        now = time.monotonic() if now is None else now
        _, fails, ejections, total, until, _, status = _SLOT.unpack_from(self._mm, self._at(slot))
        return SlotState(fails, ejections, total, max(0.0, until - now), status)
