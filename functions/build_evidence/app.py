"""Write the weekly and monthly KPI reports and the quarterly evidence pack to the evidence bucket."""

from __future__ import annotations

from changeguard import coldstart

coldstart.hold()  # issue 9: before the imports below, which build what the sandbox keeps

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from changeguard import factory
from changeguard.adapters.s3 import EvidenceBucket
from changeguard.domain.clock import SystemClock
from changeguard.domain.kpis import KpiTargets
from changeguard.handlers import rejects_poison
from changeguard.services.evidence import BuildEvidenceService, DigestStore, EvidenceService, EvidenceWiring
from changeguard.settings import load_policy

FUNCTION = "build_evidence"
logger = Logger()
metrics = Metrics()


@cache
def build_service() -> BuildEvidenceService:
    wiring = EvidenceWiring.from_env()
    bucket = EvidenceBucket(wiring.evidence_bucket_name, wiring.evidence_bucket_owner)
    ledger = factory.ledger(wiring)
    clock = SystemClock()
    evidence = EvidenceService(
        ledger=ledger,
        digests=DigestStore(bucket),
        tickets=factory.ticket_source(wiring),
        targets=lambda: KpiTargets.from_overrides(load_policy(wiring.parameter_path).kpi_targets),
        clock=clock,
        source=f"ledger table {wiring.ledger_table_name}, digests in {bucket.location}",
    )
    return BuildEvidenceService(
        function=FUNCTION,
        evidence=evidence,
        bucket=bucket,
        location=bucket.location,
        ledger=ledger,
        clock=clock,
        account=wiring.evidence_bucket_owner,
    )


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="init")
@rejects_poison(FUNCTION)
def lambda_handler(event: dict[str, Any], context: Any, service: BuildEvidenceService | None = None) -> dict[str, Any]:
    """Build the report the schedule (or an operator's request) asks for and alert on missed targets."""
    outcome = (service or build_service()).handle(event)
    logger.info("report", extra={"report": outcome.change_id, "actions": outcome.actions, "missed": outcome.reasons})
    metrics.add_metric(name="KpisMissed", unit=MetricUnit.Count, value=len(outcome.reasons))
    result: dict[str, Any] = outcome.model_dump(mode="json")
    return result


# What arrives without an EventBridge rule pattern (Schedules): the contract tests validate samples against it.
INPUT_MODEL = "changeguard.models.reports.ScheduledEvent"
