"""Run by a retried flow step (`python orphan_probe.py EFFECTS STEP`): appends `overlap STEP <run id>` to the
side-effect file for every earlier attempt of STEP whose process is still running, so a test can tell whether a
retry ever ran alongside the attempt it replaces. The test imports `alive` from here too."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def alive(pid: int, run_id: str) -> bool:
    """Whether `pid` is still the step process of `run_id` (not gone, not a zombie, not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and f"FLOWLEDGER_RUN_ID={run_id}".encode() in environ


def main(effects: Path, step: str) -> None:
    me = os.environ["FLOWLEDGER_RUN_ID"]
    earlier = [line.split() for line in effects.read_text().splitlines() if line.startswith(f"start {step} ")]
    with effects.open("a") as out:
        for _, _, run_id, pid in earlier:
            if run_id != me and alive(int(pid), run_id):
                out.write(f"overlap {step} {run_id}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
