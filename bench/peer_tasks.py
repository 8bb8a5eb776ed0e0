"""One peer's durable unit of work, timed; runs in the peers' interpreter, never imports flowledger.

    python peer_tasks.py {dbos|prefect|huey} N WORKDIR   ->  {"peer", "n", "seconds", "version"}

Warm-up (server start, schema creation, first-call imports) happens before the clock starts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from importlib.metadata import version


def bench_dbos(n: int, workdir: str) -> float:
    from dbos import DBOS

    DBOS(config={"name": "flbench", "system_database_url": f"sqlite:///{workdir}/dbos.sqlite"})

    @DBOS.step()
    def step(i: int) -> int:
        return i

    @DBOS.workflow()
    def workflow(i: int) -> int:
        return step(i)

    DBOS.launch()
    workflow(-1)
    start = time.perf_counter()
    for i in range(n):
        workflow(i)
    elapsed = time.perf_counter() - start
    DBOS.destroy()
    return elapsed


def bench_prefect(n: int, workdir: str) -> float:
    # PREFECT_HOME is set by the caller before import, so the default SQLite database lands in workdir.
    from prefect import flow, task

    @task
    def step(i: int) -> int:
        return i

    @flow
    def one_step_flow(i: int) -> int:
        return step(i)

    one_step_flow(-1)  # starts the ephemeral API server and creates its database
    start = time.perf_counter()
    for i in range(n):
        one_step_flow(i)
    return time.perf_counter() - start


def bench_huey(n: int, workdir: str) -> float:
    from huey import SqliteHuey

    # Immediate mode runs the task in-process, but on the SQLite storage: the result is a durable write.
    huey = SqliteHuey(filename=f"{workdir}/huey.sqlite", immediate=True, immediate_use_memory=False)

    @huey.task()
    def step(i: int) -> int:
        return i

    step(-1).get()
    start = time.perf_counter()
    for i in range(n):
        step(i).get()
    return time.perf_counter() - start


def main() -> None:
    peer, n, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    logging.disable(logging.WARNING)
    fn = {"dbos": bench_dbos, "prefect": bench_prefect, "huey": bench_huey}[peer]
    seconds = fn(n, workdir)
    print(json.dumps({"peer": peer, "n": n, "seconds": seconds, "version": version(peer)}), flush=True)
    os._exit(0)  # peers leave non-daemon threads (servers, executors) behind; we have what we came for


if __name__ == "__main__":
    main()
