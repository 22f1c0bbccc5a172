"""Every hour, judge the write calls CloudTrail recorded that the correlator never received."""

from __future__ import annotations

from changeguard import coldstart

coldstart.hold()  # issue 9: before the imports below, which build what the sandbox keeps

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from changeguard import factory
from changeguard.adapters.cloudtrail import CloudTrailLookup
from changeguard.adapters.tagging import AwsTagReader
from changeguard.domain.clock import SystemClock
from changeguard.handlers import rejects_poison, time_left_of
from changeguard.services.correlate import CorrelateService
from changeguard.services.reconcile import ReconcileService
from changeguard.settings import Wiring, load_policy

FUNCTION = "reconcile_changes"
logger = Logger()
metrics = Metrics()


@cache
def build_service() -> ReconcileService:
    wiring = Wiring.from_env()
    clock = SystemClock()
    prefixes = (wiring.suite_role_prefix,) if wiring.suite_role_prefix else ()
    ledger = factory.ledger(wiring)
    accounts = factory.account_clients(wiring)  # issue 9: each account's trail, and its tags, there
    correlate = CorrelateService(
        function=FUNCTION,
        ledger=ledger,
        tickets=factory.ticket_source(wiring),
        tags=AwsTagReader(accounts=accounts),
        policy=lambda: load_policy(wiring.parameter_path),
        clock=clock,
        suite_role_prefixes=prefixes,
        calendar=factory.calendar_reader,
        suite=factory.suite_resources(wiring),
        scope=accounts,
    )
    return ReconcileService(
        function=FUNCTION,
        correlate=correlate,
        trail=CloudTrailLookup(accounts=accounts),
        keys=ledger,
        policy=lambda: load_policy(wiring.parameter_path),
        clock=clock,
        event_sources=list(wiring.correlated_event_sources),
        suite_role_prefixes=prefixes,
        scope=accounts,
        member_accounts=wiring.member_account_ids,
        regions=wiring.sweep_regions,
        readers=wiring.reconcile_readers,
    )


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="init")
@rejects_poison(FUNCTION)
def lambda_handler(event: dict[str, Any], context: Any, service: ReconcileService | None = None) -> dict[str, Any]:
    """Judge the missed write calls of the look-back window and ledger their verdicts."""
    svc = service or build_service()
    outcome = svc.handle(event, time_left=time_left_of(context))
    logger.info("reconciled", extra={"missed": svc.last_missed, "alerts": len(outcome.alert_ids)})
    metrics.add_metric(name="MissedChanges", unit=MetricUnit.Count, value=svc.last_missed)
    result: dict[str, Any] = outcome.model_dump(mode="json")
    return result


# What arrives without an EventBridge rule pattern (a Schedule): the contract tests validate samples against it.
INPUT_MODEL = "aws_lambda_powertools.utilities.parser.models.EventBridgeModel"
