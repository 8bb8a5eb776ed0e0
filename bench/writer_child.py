"""A concurrent writer: one small write transaction in a loop until STOP_FILE appears; prints one JSON line.

    python writer_child.py URL READY_FILE STOP_FILE

Each transaction's wall time is what an application write waited while the sweep held the database.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable


def sqlite_writer(path: str) -> Callable[[int], float]:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_probe (id INTEGER PRIMARY KEY, at BIGINT NOT NULL)")

    def write(i: int) -> float:
        conn.execute("BEGIN IMMEDIATE")
        locked = time.perf_counter()
        conn.execute("INSERT INTO bench_probe (id, at) VALUES (?, ?)", (i, time.time_ns()))
        conn.execute("COMMIT")
        return locked

    return write


def postgres_writer(dsn: str) -> Callable[[int], float]:
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_probe (id BIGINT PRIMARY KEY, at BIGINT NOT NULL)")
    conn.autocommit = False

    def write(i: int) -> float:
        with conn.transaction():
            conn.execute("INSERT INTO bench_probe (id, at) VALUES (%s, %s)", (i, time.time_ns()))
            locked = time.perf_counter()
        return locked

    return write


def main() -> None:
    target, ready, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    write = sqlite_writer(target[len("sqlite:///"):]) if target.startswith("sqlite:///") else postgres_writer(target)
    waits: list[float] = []
    lock_waits: list[float] = []  # SQLite: the BEGIN IMMEDIATE alone, i.e. waiting for another writer
    # What the write took once it held the lock: its commit, and any WAL checkpoint that commit ran (SQLite runs
    # it in whichever connection's commit crosses the threshold, so a writer can pay for the sweep's pages).
    commits: list[float] = []
    i = 0
    open(ready, "w").close()
    while not os.path.exists(stop):
        start = time.perf_counter()
        locked = write(i)
        waits.append(time.perf_counter() - start)
        if os.environ.get("FLB_SLOW_LOG") and waits[-1] > float(os.environ.get("FLB_SLOW_MS", "80")) / 1000:
            with open(os.environ["FLB_SLOW_LOG"], "a") as log:
                log.write(json.dumps({"slow_at": round(time.time() - waits[-1], 3), "ms": round(waits[-1] * 1000),
                                      "lock_ms": round((locked - start) * 1000)}) + "\n")
        lock_waits.append(locked - start)
        commits.append(waits[-1] - lock_waits[-1])
        i += 1
        time.sleep(0.002)  # an application writes now and then, not flat out
    waits.sort()
    p99 = waits[int(len(waits) * 0.99)] if waits else 0.0
    print(json.dumps({"writes": len(waits), "max_wait_s": waits[-1] if waits else 0.0, "p99_wait_s": p99,
                      "max_lock_wait_s": max(lock_waits, default=0.0),
                      "max_commit_s": max(commits, default=0.0),
                      "over_100ms": sum(1 for w in waits if w > 0.1)}), flush=True)


if __name__ == "__main__":
    main()
