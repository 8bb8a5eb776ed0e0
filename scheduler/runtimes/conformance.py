"""Each runtime satisfies `RuntimeImpl` (base.py): mypy --strict checks the assignment below, so a runtime that
drifts from the interface fails the type check rather than hanging a step at run time. Nothing imports this module;
it exists to be type-checked (and, imported, it costs nothing but the runtimes' own imports)."""

from __future__ import annotations

from flowledger.scheduler.runtimes.acp import AcpRuntime
from flowledger.scheduler.runtimes.base import RuntimeImpl
from flowledger.scheduler.runtimes.cli import CliRuntime
from flowledger.scheduler.runtimes.cron import CronRunner
from flowledger.scheduler.runtimes.subagent import SubagentRuntime


def every_runtime(cli: CliRuntime, subagent: SubagentRuntime, acp: AcpRuntime, cron: CronRunner
                  ) -> tuple[RuntimeImpl, ...]:
    return (cli, subagent, acp, cron)
