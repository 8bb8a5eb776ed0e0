"""The harness is both a library for these tests and a script the worker processes run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# FLOWLEDGER_STRESS=1 switches every harness to its long, by-hand mode.
STRESS = os.environ.get("FLOWLEDGER_STRESS", "") not in {"", "0"}
