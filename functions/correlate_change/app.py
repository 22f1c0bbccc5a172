"""Correlate every infrastructure change with its change ticket and record a verdict."""

from __future__ import annotations

from changeguard import coldstart

coldstart.hold()  # issue 9: before the imports below, which build what the sandbox keeps

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from changeguard import factory
from changeguard.adapters.config import AwsConfigHistory
from changeguard.adapters.tagging import AwsTagReader
from changeguard.domain.clock import SystemClock
from changeguard.handlers import rejects_poison
from changeguard.services.correlate import CorrelateService
from changeguard.settings import Wiring, load_policy

FUNCTION = "correlate_change"
logger = Logger()
metrics = Metrics()


@cache
def build_service() -> CorrelateService:
    wiring = Wiring.from_env()
    accounts = factory.account_clients(wiring)  # issue 9: tags are read in the change's account
    return CorrelateService(
        function=FUNCTION,
        ledger=factory.ledger(wiring),
        tickets=factory.ticket_source(wiring),
        tags=AwsTagReader(accounts=accounts),
        policy=lambda: load_policy(wiring.parameter_path),
        clock=SystemClock(),
        suite_role_prefixes=(wiring.suite_role_prefix,) if wiring.suite_role_prefix else (),
        calendar=factory.calendar_reader,
        suite=factory.suite_resources(wiring),  # issue 8: changes to the suite are tampering
        heartbeat_parameter=wiring.heartbeat_parameter_name,  # issue 8: the heartbeat's canaries
        scope=accounts,
        correlated_sources=wiring.correlated_event_sources,  # Config items of their calls only observe
        config_history=AwsConfigHistory(accounts=accounts),  # oversized items, read in their account
    )


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="first invocation")
@rejects_poison(FUNCTION)
def lambda_handler(event: dict[str, Any], context: Any, service: CorrelateService | None = None) -> dict[str, Any]:
    """Judge one CloudTrail call or Config item and ledger the verdict."""
    outcome = (service or build_service()).handle(event)
    logger.info("judged", extra={"change_id": outcome.change_id, "verdict": outcome.verdict})
    if outcome.verdict and not outcome.duplicate:
        metrics.add_dimension(name="Verdict", value=outcome.verdict)
        metrics.add_metric(name="Changes", unit=MetricUnit.Count, value=1)
    result: dict[str, Any] = outcome.model_dump(mode="json")
    return result
