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


def sqlite_writer(path: str) -> Callable[[int], None]:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_probe (id INTEGER PRIMARY KEY, at BIGINT NOT NULL)")

    def write(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO bench_probe (id, at) VALUES (?, ?)", (i, time.time_ns()))
        conn.execute("COMMIT")

    return write


def postgres_writer(dsn: str) -> Callable[[int], None]:
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_probe (id BIGINT PRIMARY KEY, at BIGINT NOT NULL)")
    conn.autocommit = False

    def write(i: int) -> None:
        with conn.transaction():
            conn.execute("INSERT INTO bench_probe (id, at) VALUES (%s, %s)", (i, time.time_ns()))

    return write


def main() -> None:
    target, ready, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    write = sqlite_writer(target[len("sqlite:///"):]) if target.startswith("sqlite:///") else postgres_writer(target)
    waits: list[float] = []
    i = 0
    open(ready, "w").close()
    while not os.path.exists(stop):
        start = time.perf_counter()
        write(i)
        waits.append(time.perf_counter() - start)
        i += 1
        time.sleep(0.002)  # an application writes now and then, not flat out
    waits.sort()
    p99 = waits[int(len(waits) * 0.99)] if waits else 0.0
    print(json.dumps({"writes": len(waits), "max_wait_s": waits[-1] if waits else 0.0, "p99_wait_s": p99}),
          flush=True)


if __name__ == "__main__":
    main()
