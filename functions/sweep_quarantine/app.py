"""Sweep marked resources on a schedule: quarantine after the grace period, release when compliant."""

from __future__ import annotations

from changeguard import coldstart

coldstart.hold()  # issue 9: before the imports below, which build what the sandbox keeps

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from changeguard import factory
from changeguard.domain.clock import SystemClock
from changeguard.handlers import rejects_poison
from changeguard.quarantine import Registry
from changeguard.quarantine.finder import MarkedResourceFinder
from changeguard.services.quarantine_sweep import QuarantineSweepService
from changeguard.settings import Wiring, load_policy

FUNCTION = "sweep_quarantine"
logger = Logger()
metrics = Metrics()


@cache
def build_service() -> QuarantineSweepService:
    wiring = Wiring.from_env()
    accounts = factory.account_clients(wiring)  # issue 9: each resource in its own account
    return QuarantineSweepService(
        function=FUNCTION,
        enforcer=factory.enforcer(wiring, FUNCTION, accounts),
        registry=Registry(accounts=accounts),
        finder=MarkedResourceFinder(accounts=accounts),
        policy=lambda: load_policy(wiring.parameter_path),
        clock=SystemClock(),
        scope=accounts,
        member_accounts=wiring.member_account_ids,
        regions=wiring.sweep_regions,
    )


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="init")
@rejects_poison(FUNCTION)
def lambda_handler(
    event: dict[str, Any], context: Any, service: QuarantineSweepService | None = None
) -> dict[str, Any]:
    """Visit every marked resource once: quarantine, release, or leave it for its deadline."""
    outcome = (service or build_service()).handle(event)
    logger.info("swept", extra={"actions": len(outcome.actions), "alerts": len(outcome.alert_ids)})
    metrics.add_metric(name="QuarantineSweepActions", unit=MetricUnit.Count, value=len(outcome.actions))
    result: dict[str, Any] = outcome.model_dump(mode="json")
    return result


# What arrives without an EventBridge rule pattern (a Schedule): the contract tests validate samples against it.
INPUT_MODEL = "changeguard.models.scheduled.ScheduledEvent"
