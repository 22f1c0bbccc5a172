"""Chain each settled day of the change ledger to the day before, in the evidence bucket (daily)."""

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
from changeguard.handlers import rejects_poison
from changeguard.services.evidence import DigestService, DigestStore, EvidenceWiring

FUNCTION = "write_digest"
logger = Logger()
metrics = Metrics()


@cache
def build_service() -> DigestService:
    wiring = EvidenceWiring.from_env()
    bucket = EvidenceBucket(wiring.evidence_bucket_name, wiring.evidence_bucket_owner)
    return DigestService(
        function=FUNCTION, ledger=factory.ledger(wiring), store=DigestStore(bucket), clock=SystemClock()
    )


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="init")
@rejects_poison(FUNCTION)
def lambda_handler(event: dict[str, Any], context: Any, service: DigestService | None = None) -> dict[str, Any]:
    """Write the digest of every settled day that has none yet, oldest first."""
    outcome = (service or build_service()).handle(event)
    written = sum(1 for a in outcome.actions if a.startswith("digested "))
    logger.info("digests", extra={"actions": outcome.actions})
    metrics.add_metric(name="DigestDaysWritten", unit=MetricUnit.Count, value=written)
    result: dict[str, Any] = outcome.model_dump(mode="json")
    return result


# What arrives without an EventBridge rule pattern (a Schedule): the contract tests validate samples against it.
INPUT_MODEL = "changeguard.models.reports.ScheduledEvent"
