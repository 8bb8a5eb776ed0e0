"""Waking a gateway when work is queued, instead of leaving the work for its next poll.

Each gateway listens on a Linux abstract Unix datagram socket: one of `SLOTS` names derived from its database
(`\0flowledger-wake/<hash of the database>/<slot>`), the first slot no other gateway of that database on this
host holds. Nothing is on disk to clean up, a name vanishes with its process, and a deep state directory puts no
limit on it. A submitter, once its task is committed, sends one empty datagram to every slot of its database:
`SLOTS` system calls and no database read. A gateway on another host (several gateways on one PostgreSQL
database) has no socket here, nor does one past the `SLOTS`-th on a host, nor one that names its database
differently (`localhost` for `127.0.0.1`): those find the work at their next poll, as every gateway did before.
The datagram carries nothing: it only cuts a poll short, so the claim that follows is the same transaction, with
the same exactly-once guarantee, as a claim after a poll. Losing a wake-up (a full socket buffer, a platform
without abstract sockets) costs at most one poll interval, never work.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: the lean SQLite door (flows/lean_writes.py) wakes gateways without SQLAlchemy
    from sqlalchemy.engine import URL

log = logging.getLogger(__name__)
PREFIX = b"\0flowledger-wake/"
# Abstract socket names are a Linux feature; elsewhere nothing listens and nothing is sent.
SUPPORTED = sys.platform.startswith("linux")


# Gateways of one database on one host that can be woken; more than this poll.
SLOTS = 16


def database_identity(url: URL) -> str:
    """What names a database the same way in the submitter and the gateway: a SQLite file's real path, else the
    server's host, port and database name (never the password)."""
    if url.get_backend_name() == "sqlite":
        return sqlite_identity(url.database or "")
    return f"{url.get_backend_name()}://{url.host or ''}:{url.port or ''}/{url.database or ''}"


def sqlite_identity(database: str) -> str:
    """`database_identity` of a SQLite URL whose database part is `database` (as the URL spells it)."""
    return "sqlite:" + os.path.realpath(database)


def _address(identity: str, slot: int) -> bytes:
    return PREFIX + f"{hashlib.sha256(identity.encode()).hexdigest()[:24]}/{slot}".encode()


def wake(identity: str) -> int:
    """Send one wake-up to every gateway of this database listening on this host; how many were reached. Never
    raises."""
    if not SUPPORTED:
        return 0
    reached = 0
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for slot in range(SLOTS):
            try:
                sock.sendto(b"", _address(identity, slot))
                reached += 1
            except OSError:  # nobody holds that slot, or its buffer is full: it polls anyway
                continue
    return reached


class WakeListener:
    """A thread that calls `on_wake()` for each datagram sent to the database named `identity`."""

    def __init__(self, identity: str, on_wake: Callable[[], None]) -> None:
        self.identity = identity
        self.on_wake = on_wake
        self.slot: int | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def start(self) -> bool:
        """Bind the first free slot and start listening; False (and the gateway just polls) when none is free."""
        if not SUPPORTED:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for slot in range(SLOTS):
            try:
                sock.bind(_address(self.identity, slot))
            except OSError:  # another gateway of this database holds it
                continue
            self.slot = slot
            break
        else:
            sock.close()
            log.warning("no queue wake-ups: all %d slots of this database are taken; polling only", SLOTS)
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
            if self._stopping.is_set():
                return
            self.on_wake()

    def stop(self) -> None:
        self._stopping.set()
        if self.slot is not None:  # one datagram to ourselves ends the wait in recv() now, not after its timeout
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(b"", _address(self.identity, self.slot))
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self.slot = None
