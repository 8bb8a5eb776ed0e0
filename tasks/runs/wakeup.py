"""Waking a gateway when work is queued, instead of leaving the work for its next poll.

Each gateway listens on a Linux abstract Unix datagram socket named after its gateway id
(`\\0flowledger-wake/<gateway id>`): nothing on disk to clean up, the name vanishes with the process, and no
path-length limit from a deep state directory. A submitter, once its task is committed, sends one empty
datagram to every gateway whose lease is fresh (the ids it reads from `gateway_leases`); a gateway on another
host has no such socket here, so the send fails quietly and that gateway finds the work at its next poll, as
every gateway did before. The datagram carries nothing: it only cuts a poll short, so the claim that follows is
the same transaction, with the same exactly-once guarantee, as a claim after a poll. Losing a wake-up (a full
socket buffer, a platform without abstract sockets) costs at most one poll interval, never work.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)
PREFIX = b"\0flowledger-wake/"
# Abstract socket names are a Linux feature; elsewhere nothing listens and nothing is sent.
SUPPORTED = sys.platform.startswith("linux")


def _address(gateway_id: str) -> bytes:
    return PREFIX + gateway_id.encode("utf-8", "replace")[:90]


def wake(gateway_ids: Iterable[str]) -> int:
    """Send one wake-up to each gateway listening on this host; how many were reached. Never raises."""
    if not SUPPORTED:
        return 0
    reached = 0
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for gateway_id in gateway_ids:
            try:
                sock.sendto(b"", _address(gateway_id))
                reached += 1
            except OSError:  # not on this host, gone, or its buffer is full: it polls anyway
                continue
    return reached


class WakeListener:
    """A thread that calls `on_wake()` for each datagram sent to `gateway_id`'s address."""

    def __init__(self, gateway_id: str, on_wake: Callable[[], None]) -> None:
        self.gateway_id = gateway_id
        self.on_wake = on_wake
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def start(self) -> bool:
        """Bind and start listening; False (and the gateway just polls) when the address cannot be bound."""
        if not SUPPORTED:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(_address(self.gateway_id))
        except OSError as exc:
            sock.close()
            log.warning("no queue wake-ups for %s (%s): polling only", self.gateway_id, exc)
            return False
        sock.settimeout(0.5)  # how soon stop() is noticed; wake-ups themselves arrive at once
        self._sock = sock
        self._thread = threading.Thread(target=self._listen, name="queue-wake", daemon=True)
        self._thread.start()
        return True

    def _listen(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stopping.is_set():
            try:
                sock.recv(16)
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            self.on_wake()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
