"""The heartbeat hook: run the configured command and/or webhook once per pending wake (SPEC §3: completing a
task triggers an immediate heartbeat wake). Without a hook, wakes wait in `heartbeat_wakes` for the gateway."""

from __future__ import annotations

import logging
import subprocess

from flowledger.tasks.core.childenv import child_environment
from flowledger.tasks.core.config import Config
from flowledger.tasks.core.service import TaskService
from flowledger.tasks.sessions.events import claim_wake, pending_wakes

log = logging.getLogger(__name__)


def fire_heartbeat_wakes(service: TaskService, config: Config) -> int:
    """Fire every pending wake this process wins the claim for; returns how many fired."""
    heartbeat = config.heartbeat
    if heartbeat is None or (heartbeat.command is None and heartbeat.webhook is None):
        return 0
    import httpx  # only with a hook configured: a read-only command never pays for it

    with service.db.read() as conn:
        wakes = pending_wakes(conn)
    fired = 0
    for wake in wakes:
        if not _claim(service, wake.wake_id):
            continue  # another process fires this one
        fired += 1
        env = child_environment({"FLOWLEDGER_SESSION_KEY": wake.session_key, "FLOWLEDGER_WAKE_REASON": wake.reason})
        try:
            if heartbeat.command is not None:
                subprocess.run(list(heartbeat.command), env=env, timeout=heartbeat.timeout_s, check=False,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if heartbeat.webhook is not None:
                httpx.post(heartbeat.webhook.reveal(), json={"session_key": wake.session_key, "reason": wake.reason},
                           timeout=heartbeat.timeout_s)
        except (OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
            log.warning("heartbeat hook for session %s failed: %s", wake.session_key, type(exc).__name__)
    return fired


def _claim(service: TaskService, wake_id: int) -> bool:
    now = service.clock.now()
    return service.db.transact(lambda conn: claim_wake(conn, wake_id, now))
