"""The gateway's driver of detached graph flows: many at once, each on a thread of its own.

Every `POLL_S` (and at once when a flow ends) the driver takes as many flows as it has free slots — queued ones
first, then running ones whose driver's lease expired (flows/pickup.py) — and runs each controller on its own
thread, so a slow or stuck flow never delays another. The cap (`--max-flows`, `FLOWLEDGER_MAX_FLOWS`, default
8) bounds how many flows one gateway drives; beyond it a flow stays `queued` until a slot frees up (or another
gateway takes it). Each flow keeps its own `max_parallel` for its steps. Steps go to the runtime their step
names (the `launchers` map); a step whose runtime is not in it fails at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from flowledger.flows.controller import GraphController, StepLauncher
from flowledger.flows.ledger import Ledger
from flowledger.flows.pickup import pick_up
from flowledger.tasks.core.errors import FlowledgerError
from flowledger.tasks.core.states import Runtime

log = logging.getLogger(__name__)
POLL_S = 0.25
# How often each driven flow reads its steps' statuses: a step's end is noticed within this.
STEP_POLL_S = 0.05


class FlowDriver:
    def __init__(self, ledger: Ledger, launchers: Mapping[Runtime, StepLauncher], *, cap: int,
                 poll_s: float = POLL_S, step_poll_s: float = STEP_POLL_S) -> None:
        if cap < 1:
            raise ValueError("a flow driver needs room for at least one flow")
        self.ledger = ledger
        self.launchers = dict(launchers)
        self.cap = cap
        self.poll_s = poll_s
        self.step_poll_s = step_poll_s
        self._active: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="flows", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Take no new flow. The flows being driven see their steps stopped with the gateway's runtimes and end
        as any flow with a cancelled step does; a flow whose thread dies with the process first stays `running`
        under this driver's released lease, and the next gateway adopts it and finishes it."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def driving(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def poll(self) -> int:
        """Take and start what fits now; how many flows were started."""
        busy = self.driving()
        free = self.cap - len(busy)
        if free <= 0 or self._stopping.is_set():
            return 0
        controllers = pick_up(self.ledger, self.launchers, free, busy=busy, poll_interval=self.step_poll_s)
        for controller in controllers:
            self._spawn(controller)
        return len(controllers)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll()
            except FlowledgerError as exc:
                log.warning("flow pick-up failed: %s", exc.message)
            except Exception:  # the loop must outlive any one bad pass
                log.exception("flow pick-up failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _spawn(self, controller: GraphController) -> None:
        flow_id = controller.flow.flow_id
        thread = threading.Thread(target=self._drive, args=(controller,), name=f"flow-{flow_id[:8]}", daemon=True)
        with self._lock:
            self._active[flow_id] = thread
        log.info("flow %s: driving (%d of at most %d)", flow_id, len(self._active), self.cap)
        thread.start()

    def _drive(self, controller: GraphController) -> None:
        flow_id = controller.flow.flow_id
        try:
            flow = controller.run()
            log.info("flow %s ended %s", flow_id, flow.status.value)
        except FlowledgerError as exc:
            log.warning("flow %s: driving failed: %s", flow_id, exc.message)
        except Exception:
            log.exception("flow %s: driving failed", flow_id)
        finally:
            with self._lock:
                self._active.pop(flow_id, None)
            self._wake.set()  # a slot is free: take the next queued flow now
