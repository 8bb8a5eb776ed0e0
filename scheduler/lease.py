"""A gateway lease kept fresh by a background thread (CONTRACT §6.7): while it is fresh, the runs it owns
count as live for every process that reads the database."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

from flowledger.flows.ledger import Ledger
from flowledger.scheduler import knobs
from flowledger.scheduler.submission import any_gateway
from flowledger.tasks.core.errors import FlowledgerError

log = logging.getLogger(__name__)


def new_gateway_id(prefix: str = "gw") -> str:
    host = socket.gethostname().split(".")[0][:20] or "host"
    return f"{prefix}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"[:64]


class LeaseKeeper:
    def __init__(self, ledger: Ledger, gateway_id: str, *, ttl: timedelta | None = None,
                 every: timedelta | None = None) -> None:
        self.ledger = ledger
        self.gateway_id = gateway_id
        self.ttl = ttl or knobs.lease_ttl()
        self.every = every or knobs.lease_renew_every()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self) -> None:
        self.ledger.runs.renew_lease(self.gateway_id, host=socket.gethostname(), pid=os.getpid(), ttl=self.ttl)

    def start(self) -> None:
        self.renew()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{self.gateway_id}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every.total_seconds()):
            try:
                self.renew()
            except FlowledgerError as exc:  # a blip must not kill the keeper; the next renewal retries
                log.warning("lease %s renewal failed: %s", self.gateway_id, exc.message)

    def stop(self, *, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if release:
            try:
                self.ledger.runs.release_lease(self.gateway_id)
            except FlowledgerError as exc:  # harmless: an unreleased lease expires on its own. Said at info level,
                # so a command whose storage failed prints its one error line and nothing beside it (issue 12 item 13)
                log.info("lease %s release failed (it will expire): %s", self.gateway_id, exc.message)


def gateway_running(ledger: Ledger) -> bool:
    """Whether some gateway (not an in-process `run`) holds a fresh lease and will claim queued work."""
    return any_gateway(ledger.runs.fresh_gateways())
