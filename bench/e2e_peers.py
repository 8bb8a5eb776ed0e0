"""huey's consumer or Celery's worker running N instant commands end to end; runs in the peers' interpreter and
never imports flowledger.

    python e2e_peers.py {huey|celery} N {live|drain} WORKDIR   ->  {"peer", "n", "version", "submit_s", ...}

Each task runs `true` in a child process (what a flowledger `cli` task does), then appends its end time
(`time.time()`) to a Redis list; the framework stores its result as usual (huey: Redis; Celery: the Redis result
backend, RabbitMQ as the broker). Eight workers, like the gateway's eight parallel runs.
- live: the worker is up and warm (one task round-tripped), then N tasks are submitted from this process;
  `first_submit`, `submitted` and every end time are wall-clock seconds.
- drain: N tasks are submitted with no worker up, then the worker starts; the drain rate is taken between the
  first and the last end, so the worker's start-up is left out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from importlib.metadata import version

WORKERS = 8
REDIS = "redis://127.0.0.1:6379/0"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"
RUN_KEY = os.environ.get("FLB_E2E_KEY") or f"flb-e2e-{uuid.uuid4().hex[:8]}"


_redis: list[object] = []


def _finish() -> float:
    subprocess.run(["true"], check=True)
    if not _redis:
        import redis

        _redis.append(redis.Redis.from_url(REDIS))
    now = time.time()
    _redis[0].rpush(RUN_KEY, now)  # type: ignore[attr-defined]
    return now


def _apps() -> tuple[object, object]:
    """(huey app, its task) or (celery app, its task), chosen by FLB_E2E_PEER."""
    if os.environ.get("FLB_E2E_PEER") == "huey":
        from huey import RedisHuey

        huey = RedisHuey(RUN_KEY, url=REDIS)
        return huey, huey.task(name="finish")(_finish)
    from celery import Celery

    app = Celery(RUN_KEY, broker=AMQP, backend=REDIS)
    app.conf.update(task_default_queue=RUN_KEY, worker_hijack_root_logger=False, broker_connection_retry=False,
                    broker_connection_retry_on_startup=False, worker_prefetch_multiplier=4)
    return app, app.task(name="finish")(_finish)


if __name__ != "__main__":  # imported by the worker: the module-level names it loads
    app, finish = _apps()


def start_worker(peer: str, workdir: str) -> subprocess.Popen[bytes]:
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "FLB_E2E_PEER": peer, "FLB_E2E_KEY": RUN_KEY, "PYTHONPATH": here}
    if peer == "huey":
        argv = [sys.executable, "-m", "huey.bin.huey_consumer", "e2e_peers.app", "-w", str(WORKERS), "-k", "thread",
                "-q"]
    else:
        argv = [sys.executable, "-m", "celery", "-A", "e2e_peers:app", "worker", "-c", str(WORKERS), "-P",
                "prefork", "-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    log = open(os.path.join(workdir, f"{peer}.log"), "wb")  # noqa: SIM115 - lives as long as the worker
    return subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=log, start_new_session=True)


def wait_ends(n: int, timeout: float) -> list[float]:
    import redis

    r = redis.Redis.from_url(REDIS)
    deadline = time.monotonic() + timeout
    while r.llen(RUN_KEY) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {r.llen(RUN_KEY)} of {n} tasks ended within {timeout:.0f} s")
        time.sleep(0.01)
    ends = [float(x) for x in r.lrange(RUN_KEY, 0, -1)]
    r.delete(RUN_KEY)
    return ends


def main() -> None:
    peer, n, mode, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.environ["FLB_E2E_PEER"] = peer
    os.environ["FLB_E2E_KEY"] = RUN_KEY
    # The task as the worker knows it (module `e2e_peers`, not `__main__`): huey names a task by its module.
    import e2e_peers

    submit = e2e_peers.finish if peer == "huey" else e2e_peers.finish.delay  # type: ignore[attr-defined]
    worker = None
    try:
        if mode == "live":
            worker = start_worker(peer, workdir)
            submit()
            wait_ends(1, 120)  # warm: connected, forked, first task round-tripped
        first = time.time()
        for _ in range(n):
            submit()
        submitted = time.time()
        if worker is None:
            worker = start_worker(peer, workdir)
        ends = wait_ends(n, 600)
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
    print(json.dumps({"peer": peer, "n": n, "mode": mode, "version": version(peer), "first_submit": first,
                      "submitted": submitted, "first_end": min(ends), "last_end": max(ends)}))


if __name__ == "__main__":
    main()
