"""Goal 1's peer column: our listing commands at a million records beside `dbos workflow list` on a DBOS system
database of comparable size and `python -c pass`, interleaved sample by sample in one run (wall and CPU).

    python bench/peer_listing.py --data DIR --dbos PATH/TO/dbos [--dbos-records 1000000] [--repeat 5]

`--data DIR` is a SQLite ledger seeded by bench/listings.py (`--data DIR`: 1 M tasks, 100 k flows, one active
task in ten stale and unbacked). `--dbos` is the `dbos` console script of an interpreter with DBOS installed (a
peers venv; flowledger never imports it). The DBOS database (SQLite, kept in DIR/dbos-N.sqlite and reused) is made
by DBOS itself (20 workflows run through `DBOS.launch()`, so its schema and migrations are its own), then filled
by SQL to N workflows like the seeded ones: 80 % SUCCESS, 10 % ERROR, 10 % PENDING, each with its input row and
(when ended) its output row, created 0.1 s apart. `dbos workflow list` shows its default page (10 workflows).
Each round runs every command once, in the same order; medians and ranges are printed with the load average.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from clilat import flowledger_argv

_DBOS_APP = ("from dbos import DBOS\n"
             "DBOS(config={{'name': 'bench', 'system_database_url': {url!r}}})\n"
             "@DBOS.workflow()\ndef wf(i: int) -> int:\n    return i\n"
             "DBOS.launch()\n[wf(i) for i in range(20)]\nDBOS.destroy()\n")
_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n)
INSERT INTO workflow_status (workflow_uuid, status, name, executor_id, created_at, updated_at, application_version,
    application_id, recovery_attempts, priority, serialization, was_forked_from, rate_limited, completed_at,
    attributes, is_debounced, application_name, creator_xid)
SELECT lower(hex(randomblob(16))),
       CASE i % 10 WHEN 0 THEN 'ERROR' WHEN 1 THEN 'PENDING' ELSE 'SUCCESS' END, 'wf', 'local',
       :t0 + i * 100, :t0 + i * 100, 'DEFAULT_VERSION-bench', '', 1, 0, 'py_pickle', 0, 0,
       CASE i % 10 WHEN 1 THEN NULL ELSE :t0 + i * 100 END, 'null', 0, 'bench', lower(hex(randomblob(16)))
FROM n
"""


def dbos_database(dbos: Path, data: Path, records: int) -> str:
    """The URL of a DBOS SQLite system database holding `records` workflows (made once, then reused)."""
    path = data / f"dbos-{records}.sqlite"
    url = f"sqlite:///{path}"
    if path.exists():
        return url
    python = dbos.with_name("python")
    subprocess.run([str(python), "-c", _DBOS_APP.format(url=url)], check=True, capture_output=True, timeout=300)
    conn = sqlite3.connect(path)
    with conn:
        missing = records - conn.execute("SELECT count(*) FROM workflow_status").fetchone()[0]
        conn.execute(_FILL, {"n": missing, "t0": int(time.time() * 1000) - records * 100})
        conn.execute("INSERT INTO workflow_input (workflow_uuid, inputs, retention_timestamp) SELECT workflow_uuid, "
                     "'gASVGwAAAAAAAAB9lCiMBGFyZ3OUSwCFlIwGa3dhcmdzlH2UdS4=', created_at FROM workflow_status "
                     "WHERE workflow_uuid NOT IN (SELECT workflow_uuid FROM workflow_input)")
        conn.execute("INSERT INTO workflow_output (workflow_uuid, output, retention_timestamp) SELECT "
                     "workflow_uuid, 'gARLAC4=', created_at FROM workflow_status WHERE status != 'PENDING' AND "
                     "workflow_uuid NOT IN (SELECT workflow_uuid FROM workflow_output)")
    conn.close()
    return url


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall s, CPU s = user + sys of the child and what it waited for) of one run; raises when it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[-3:]} exit {proc.returncode}: {err.strip()[-300:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a ledger seeded by bench/listings.py --data")
    parser.add_argument("--dbos", type=Path, required=True, help="the dbos console script (a peers venv)")
    parser.add_argument("--dbos-records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ledger = args.data
    url = f"sqlite:///{ledger / 'runs.sqlite'}"
    began = time.perf_counter()
    dbos_url = dbos_database(args.dbos, ledger, args.dbos_records)
    print(f"DBOS system database {dbos_url}: {args.dbos_records:,} workflows "
          f"(ready in {time.perf_counter() - began:.0f} s)", flush=True)
    with sqlite3.connect(f"file:{ledger / 'runs.sqlite'}?mode=ro", uri=True) as conn:
        task_id = conn.execute("SELECT task_id FROM task_runs ORDER BY seq DESC LIMIT 1").fetchone()[0]
        counted = conn.execute("SELECT count(*) FROM task_runs").fetchone()[0]
    ours = [*flowledger_argv(), "--state-dir", str(ledger), "--database-url", url]
    commands: list[tuple[str, list[str]]] = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("dbos workflow list", [str(args.dbos), "workflow", "list", "--sys-db-url", dbos_url]),
        ("tasks list --json", [*ours, "tasks", "list", "--json"]),
        ("tasks list", [*ours, "tasks", "list"]),
        ("tasks show <13-char prefix>", [*ours, "tasks", "show", task_id[:13]]),
        ("tasks flow list", [*ours, "tasks", "flow", "list"]),
        ("status", [*ours, "status"]),
    ]
    walls: dict[str, list[float]] = {name: [] for name, _ in commands}
    cpus: dict[str, list[float]] = {name: [] for name, _ in commands}
    loads = []
    for _ in range(args.repeat):
        loads.append(os.getloadavg()[0])
        for name, argv in commands:
            wall, cpu = timed(argv)
            walls[name].append(wall)
            cpus[name].append(cpu)
    print(f"ledger: {counted:,} tasks; {args.repeat} rounds, load average {min(loads):.1f}–{max(loads):.1f}")
    print(f"  {'command':<30} {'wall median':>12} {'wall range':>16} {'CPU median':>11} {'CPU range':>14}")
    for name, _ in commands:
        w, c = walls[name], cpus[name]
        print(f"  {name:<30} {statistics.median(w) * 1000:9.0f} ms {min(w) * 1000:6.0f}–{max(w) * 1000:<6.0f} ms"
              f" {statistics.median(c) * 1000:8.0f} ms {min(c) * 1000:5.0f}–{max(c) * 1000:<5.0f} ms")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
