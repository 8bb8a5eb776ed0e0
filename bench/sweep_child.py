"""A maintenance pass in its own process, so its peak RSS is its own: prints one JSON line.

    python sweep_child.py URL STATE_DIR NOW_ISO
"""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import datetime

from flowledger import FrozenClock, Ledger


def main() -> None:
    url, state_dir, now = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3])
    with Ledger.open(state_dir=state_dir, database_url=url, clock=FrozenClock(now)) as ledger:
        baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        report = ledger.maintenance(apply=True)
        seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tasks = report.to_json()["maintenance"]["tasks"]
    print(json.dumps({"seconds": seconds, "peak_rss_kb": peak_kb, "baseline_rss_kb": baseline_kb,
                      "tasks": tasks}), flush=True)


if __name__ == "__main__":
    main()
