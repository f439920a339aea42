"""Cutting a client connection mid-response, which RSGI itself cannot do."""

from __future__ import annotations

import asyncio
import os
import socket
import stat


async def _abort_connection(client: str) -> None:
    """Cut the TCP connection to ``client`` ("host:port") under Granian's feet.

    RSGI has no abort: a handler that returns or raises still gets a clean
    chunked terminator. So find this worker's socket whose peer is the client
    and shut it down; the peer then sees EOF in the middle of the body, like a
    crashed backend. The short sleep lets Granian flush the chunks already sent.
    """
    await asyncio.sleep(0.02)
    host, _, port = client.rpartition(":")
    peer = (host.strip("[]"), int(port))
    for fd in _socket_fds():
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                name = sock.getpeername()
                if (_plain_host(name[0]), name[1]) == peer:
                    sock.shutdown(socket.SHUT_RDWR)  # acts on the shared socket, not just our dup
                    return
        except (OSError, ValueError):
            continue


def _plain_host(host: str) -> str:
    return host[7:] if host.startswith("::ffff:") else host


def _socket_fds() -> list[int]:
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no procfs (macOS): probe the usual range
        names = [str(i) for i in range(3, 4096)]
    fds = []
    for name in names:
        try:
            if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                fds.append(int(name))
        except OSError:
            continue
    return fds
