"""Backpressure towards a client that reads slowly or not at all.

Granian's RSGI `send_bytes` does not wait for the client's socket: it puts the
bytes on an unbounded channel and returns at once, so a client that stops
reading would make the worker hold everything the upstream sends. The relay
therefore counts the body bytes it hands to Granian and, past MAX_UNACKED,
compares them with what Granian has written to the client's socket: the bytes
the client acknowledged (TCP_INFO `tcpi_bytes_acked`) plus those still in the
kernel's send queue (TIOCOUTQ), read from the client's socket, which is found
once per large stream among the worker's file descriptors. While more than
MAX_UNACKED bytes wait in Granian's channel the relay stops reading from the
upstream, whose own TCP window then closes: memory per stream stays bounded
end to end (the kernel's socket buffers are bounded by the kernel).

Small answers (every ordinary chat stream) never reach the first check and
cost one addition per chunk.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import termios

MAX_UNACKED = 4 << 20  # body bytes handed to Granian that it has not written to the client's socket yet
_TCP_INFO_LEN = 232
_BYTES_ACKED = struct.Struct("=Q")  # struct tcp_info: tcpi_bytes_acked is a u64 at offset 120
_BYTES_ACKED_AT = 120
_POLL_MIN, _POLL_MAX = 0.002, 0.1  # seconds between checks while the client's side is full
_OUTQ = struct.Struct("i")


class ClientGone(ConnectionError):
    """The client's connection closed while the relay waited for it."""


def _address(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _peer_of(fd: int) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """(local, peer) host and port of a TCP socket descriptor, without keeping it open."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        local, peer = sock.getsockname(), sock.getpeername()
        return (local[0], local[1]), (peer[0], peer[1])
    except OSError:
        return None
    finally:
        sock.close()  # closes only the duplicate


def _normal(addr: tuple[str, int]) -> tuple[str, int]:
    host = addr[0]
    return (host[7:] if host.startswith("::ffff:") else host), addr[1]


def find_client_socket(client: str, server: str) -> int:
    """The descriptor of the client's connection in this process, or -1."""
    peer, local = _address(client), _address(server)
    if peer is None:
        return -1
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return -1
    for name in names:
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
        except OSError:
            continue
        found = _peer_of(fd)
        if found is not None and _normal(found[1]) == peer and (local is None or found[0][1] == local[1]):
            return fd
    return -1


def _written(fd: int, peer: tuple[str, int]) -> int:
    """Bytes written to the client's socket so far (acknowledged, or queued in the kernel); -1 when
    the kernel does not tell; ClientGone when the connection is no longer there."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        raise ClientGone("the client's connection closed") from None
    try:
        if _normal(sock.getpeername()[:2]) != peer:  # the descriptor now belongs to another connection
            raise ClientGone("the client's connection closed")
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        queued = _OUTQ.unpack(fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except OSError:
        raise ClientGone("the client's connection closed") from None
    finally:
        sock.close()
    if len(info) < _BYTES_ACKED_AT + 8:
        return -1
    return _BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)[0] + queued


class ClientWindow:
    """Counts a response's body bytes and waits while too many wait in Granian's channel.

    The first check happens once MAX_UNACKED bytes were sent; the bytes sent before it are
    taken as written (the socket's counters also hold earlier responses on the connection),
    so at most 2 x MAX_UNACKED bytes of a stream are ever held by the worker.
    """

    __slots__ = ("scope", "sent", "check_at", "fd", "peer", "base_written", "base_sent")

    def __init__(self, scope: object):
        self.scope = scope
        self.sent = 0
        self.check_at = MAX_UNACKED
        self.fd = 0  # 0: not looked up yet; -1: not found (no backpressure possible)
        self.peer: tuple[str, int] = ("", 0)
        self.base_written = 0
        self.base_sent = 0

    async def wait(self) -> None:
        """Called when `sent` passed `check_at`: returns once the client has room again."""
        if self.fd == 0:
            scope = self.scope
            client, server = str(getattr(scope, "client", "")), str(getattr(scope, "server", ""))
            self.fd = find_client_socket(client, server)
            peer = _address(client)
            if self.fd < 0 or peer is None:
                self.fd, self.check_at = -1, 1 << 62
                return
            self.peer = peer
            self.base_written = _written(self.fd, peer)
            if self.base_written < 0:  # an old kernel without tcpi_bytes_acked
                self.fd, self.check_at = -1, 1 << 62
                return
            self.base_sent = self.sent
            self.check_at = self.sent + MAX_UNACKED
            return
        pause = _POLL_MIN
        while True:
            delivered = _written(self.fd, self.peer) - self.base_written + self.base_sent
            if self.sent - delivered <= MAX_UNACKED:
                self.check_at = delivered + MAX_UNACKED
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, _POLL_MAX)
