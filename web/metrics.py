"""`GET /metrics`: the ledger's pressure as Prometheus gauges, read fresh on every scrape.

The numbers are `status --json`'s: `flowledger_tasks{status,runtime}` sums to its `tasks.by_status` (per status)
and `tasks.by_runtime` (per runtime), `flowledger_audit_findings{severity}` is its `audit` warnings and errors.
A custom collector (not module-level gauges) so nothing global is built at import and each app has its own
registry.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flowledger.flows import health
from flowledger.tasks.core.states import Runtime, TaskStatus
from flowledger.tasks.health.findings import Severity
from flowledger.web.source import LedgerSource

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LedgerCollector(Collector):
    def __init__(self, source: LedgerSource) -> None:
        self.source = source

    def describe(self) -> list[Metric]:
        return []  # nothing to read at registration: scrapes read the database

    def collect(self) -> Iterator[Metric]:
        ledger = self.source.get()
        report = health.status(ledger)
        tasks = GaugeMetricFamily("flowledger_tasks", "Tasks by reconciled status and runtime (status --json).",
                                  labels=["status", "runtime"])
        pairs = report.tasks.by_status_runtime
        for status in TaskStatus:
            for runtime in Runtime:
                tasks.add_metric([status.value, runtime.value], pairs.get((status.value, runtime.value), 0))
        yield tasks
        flow_gauge = GaugeMetricFamily("flowledger_flows", "Flows by status (status --json flows.by_status).",
                                       labels=["status"])
        for name, count in (report.flows or {}).get("by_status", {}).items():
            flow_gauge.add_metric([name], count)
        yield flow_gauge
        audit = GaugeMetricFamily("flowledger_audit_findings",
                                  "Actionable audit findings by severity (status --json audit).",
                                  labels=["severity"])
        audit.add_metric([Severity.WARN.value], report.audit["warnings"])
        audit.add_metric([Severity.ERROR.value], report.audit["errors"])
        yield audit


def registry_for(source: LedgerSource) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(source))
    return registry


def scrape(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
