"""A maintenance pass in its own process, so its peak RSS is its own: prints one JSON line.

    python sweep_child.py URL STATE_DIR NOW_ISO

`FLB_PROFILE=FILE` profiles the pass with pyinstrument (when installed) and writes the text report to FILE.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from datetime import datetime

from flowledger import FrozenClock, Ledger


@contextlib.contextmanager
def profiled(path: str) -> Iterator[None]:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.002)
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        with open(path, "w") as out:
            out.write(profiler.output_text(show_all=False))


def main() -> None:
    url, state_dir, now = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3])
    with Ledger.open(state_dir=state_dir, database_url=url, clock=FrozenClock(now)) as ledger:
        baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        profile_to = os.environ.get("FLB_PROFILE")
        with profiled(profile_to) if profile_to else contextlib.nullcontext():
            start, cpu_start = time.perf_counter(), time.process_time()
            report = ledger.maintenance(apply=True)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tasks = report.to_json()["maintenance"]["tasks"]
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "peak_rss_kb": peak_kb, "baseline_rss_kb": baseline_kb,
                      "tasks": tasks}), flush=True)


if __name__ == "__main__":
    main()
