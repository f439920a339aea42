"""The token service's wire format, shared by the service (control plane) and its callers (workers):
each frame is a 4-byte little-endian length and a msgpack array, both ways."""

from __future__ import annotations

import struct

import msgspec

FRAME_LEN = struct.Struct("<I")
encode = msgspec.msgpack.encode
decode = msgspec.msgpack.decode


class TokenServiceError(RuntimeError):
    pass
