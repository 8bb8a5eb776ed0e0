"""The 1 M-record sweep before and after a change, side by side in one run (issue 18, goal 4).

    python bench/sweep_ab.py prepare --dir /tmp/perf-sweep --before /tmp/perf-sweep/base [--records N] [--postgres URL]
    python bench/sweep_ab.py run --dir /tmp/perf-sweep --before /tmp/perf-sweep/base [--rounds 2] [--postgres URL]

`--before` is a folder holding an export of the code before the change as `flowledger/` (for example
`git archive main | tar -x -C BASE/flowledger`); the maintenance child runs with it first on PYTHONPATH. The data
set (bench/sweep.py's mix) is seeded once by the code before, kept under `--dir` and copied for every pass (on
PostgreSQL: `CREATE DATABASE … TEMPLATE`); the code after gets its own template, opened once by it so that its
schema migrations are not part of the timed pass. Passes alternate before / after, each with the concurrent
writer of bench/sweep.py. Prints one JSON line per pass and a table of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import sweep
from measure import helper

# A fixed "now", so a template seeded once is due / stale / retained the same way in every later run.
NOW = datetime.fromisoformat("2026-12-01T12:00:00+00:00")
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _env(code: Path | None) -> dict[str, str] | None:
    return None if code is None else {"PYTHONPATH": str(code)}


def _pg_url(admin: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(admin).set(database=name).render_as_string(hide_password=False)


def _pg_admin_exec(admin: str, *statements: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def _in_child(code: Path | None, *args: str) -> None:
    """Run this script's `seed` / `open` command with the given code first on the path."""
    env = {**os.environ, **(_env(code) or {})}
    subprocess.run([sys.executable, os.path.abspath(__file__), *args], check=True, env=env)


def prepare(root: Path, before: Path, records: int, pg_admin: str | None, pg_prefix: str = "perfsweep") -> None:
    sqlite_dir = root / "sqlite"
    before_db, after_db = sqlite_dir / "before.db", sqlite_dir / "after.db"
    if not before_db.exists():
        _in_child(before, "seed", f"sqlite:///{before_db}", str(sqlite_dir / "state-before"), str(records))
    if not after_db.exists():
        sweep.copy_sqlite(before_db, after_db)
        _in_child(None, "open", f"sqlite:///{after_db}", str(sqlite_dir / "state-after"))
    if pg_admin:
        tpl_before, tpl_after = f"{pg_prefix}_before_{records}", f"{pg_prefix}_after_{records}"
        if not _pg_exists(pg_admin, tpl_before):
            _pg_admin_exec(pg_admin, f'CREATE DATABASE "{tpl_before}"')
            _in_child(before, "seed", _pg_url(pg_admin, tpl_before), str(root / "pg-state-before"), str(records))
        if not _pg_exists(pg_admin, tpl_after):
            _pg_admin_exec(pg_admin, f'CREATE DATABASE "{tpl_after}" TEMPLATE "{tpl_before}"')
            _in_child(None, "open", _pg_url(pg_admin, tpl_after), str(root / "pg-state-after"))


def _pg_exists(admin: str, name: str) -> bool:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin)
    with engine.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
    engine.dispose()
    return found is not None


def one_pass(root: Path, variant: str, code: Path | None, engine: str, records: int,
             pg_admin: str | None, pg_prefix: str = "perfsweep") -> dict[str, Any]:
    data = "before" if variant == "before" else "after"  # every other variant runs on the migrated schema
    if engine == "sqlite":
        work = root / "work"
        shutil.rmtree(work, ignore_errors=True)
        target = work / "ledger.db"
        sweep.copy_sqlite(root / "sqlite" / f"{data}.db", target)
        url, state = f"sqlite:///{target}", work / "state"
        got = sweep.sweep_with_writer(url, state, NOW, timeout=1800, env=_env(code))
        shutil.rmtree(work, ignore_errors=True)
    else:
        assert pg_admin is not None
        name = f"{pg_prefix}_run_{os.getpid()}"
        _pg_admin_exec(pg_admin, f'DROP DATABASE IF EXISTS "{name}"',
                       f'CREATE DATABASE "{name}" TEMPLATE "{pg_prefix}_{data}_{records}"')
        try:
            got = sweep.sweep_with_writer(_pg_url(pg_admin, name), root / f"pg-state-{data}", NOW,
                                          timeout=1800, env=_env(code))
        finally:
            _pg_admin_exec(pg_admin, f'DROP DATABASE IF EXISTS "{name}"')
    result, writer = got["sweep"] or {}, got["writer"]
    return {"engine": engine, "variant": variant, "seconds": result.get("seconds"), "cpu_s": result.get("cpu_s"),
            "reason": got["reason"],
            "tasks": result.get("tasks"), "peak_rss_mb": (result.get("peak_rss_kb") or 0) / 1024,
            "writer_max_ms": writer.get("max_wait_s", 0) * 1000, "writer_p99_ms": writer.get("p99_wait_s", 0) * 1000,
            "writer_max_lock_ms": writer.get("max_lock_wait_s", 0) * 1000, "writes": writer.get("writes"),
            "load": os.getloadavg()[0]}


def run(root: Path, before: Path, rounds: int, records: int, pg_admin: str | None, engines: list[str],
        variants: list[str], pg_prefix: str = "perfsweep") -> None:
    passes: list[dict[str, Any]] = []
    codes: dict[str, Path | None] = {"before": before, "after": None}
    for spec in variants:
        if "=" in spec:
            name, path = spec.split("=", 1)
            codes[name] = Path(path)
    names = [spec.split("=", 1)[0] for spec in variants]
    for engine in engines:
        for _ in range(rounds):
            for variant in names:
                got = one_pass(root, variant, codes[variant], engine, records, pg_admin, pg_prefix)
                print(json.dumps(got), flush=True)
                passes.append(got)
    print(f"\n{'engine':<8} {'variant':<7} {'pass s (each)':<24} {'cpu s':<20} {'writer max ms':<22} "
          f"{'writer p99 ms':<18} load")
    for engine in engines:
        for variant in names:
            mine = [p for p in passes if p["engine"] == engine and p["variant"] == variant and p["seconds"]]
            if not mine:
                continue
            secs = ", ".join(f"{p['seconds']:.1f}" for p in mine)
            worst = ", ".join(f"{p['writer_max_ms']:.0f}" for p in mine)
            p99 = ", ".join(f"{p['writer_p99_ms']:.0f}" for p in mine)
            load = ", ".join(f"{p['load']:.1f}" for p in mine)
            cpu = ", ".join(f"{p['cpu_s'] or 0:.1f}" for p in mine)
            print(f"{engine:<8} {variant:<7} {secs:<24} {cpu:<20} {worst:<22} {p99:<18} {load}")
            print(f"{'':<8} {'':<7} median {statistics.median(p['seconds'] for p in mine):.1f} s; "
                  f"tasks {mine[-1]['tasks']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("prepare", "run"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--dir", type=Path, required=True)
        cmd.add_argument("--before", type=Path, required=True)
        cmd.add_argument("--records", type=int, default=1_000_000)
        cmd.add_argument("--postgres", default=None, help=f"admin URL, e.g. {PG_DEFAULT}")
        cmd.add_argument("--pg-prefix", default="perfsweep",
                         help="name prefix of the PostgreSQL templates and pass databases (one per engineer)")
        if name == "run":
            cmd.add_argument("--rounds", type=int, default=2)
            cmd.add_argument("--engine", action="append", choices=["sqlite", "postgres"])
            cmd.add_argument("--variant", action="append",
                             help="before, after (this worktree) or NAME=PATH (another export, after's data)")
    seed = sub.add_parser("seed")
    seed.add_argument("url")
    seed.add_argument("state")
    seed.add_argument("records", type=int)
    opened = sub.add_parser("open")
    opened.add_argument("url")
    opened.add_argument("state")
    args = parser.parse_args()
    if args.command == "seed":
        started = time.perf_counter()
        seconds = sweep.seed(args.url, Path(args.state), args.records, NOW)
        print(f"seeded {args.records:,} in {seconds:.0f} s ({time.perf_counter() - started:.0f} s)", flush=True)
    elif args.command == "open":
        from flowledger import FrozenClock, Ledger

        with Ledger.open(state_dir=Path(args.state), database_url=args.url, clock=FrozenClock(NOW)):
            pass
    elif args.command == "prepare":
        prepare(args.dir, args.before, args.records, args.postgres, args.pg_prefix)
    else:
        engines = args.engine or (["sqlite", "postgres"] if args.postgres else ["sqlite"])
        run(args.dir, args.before, args.rounds, args.records, args.postgres, engines,
            args.variant or ["before", "after"], args.pg_prefix)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(helper("sweep_ab.py")))
    main()
