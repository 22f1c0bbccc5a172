"""Enforce the change calendar on deployments, pipeline runs and stack changes; announce window changes."""

from __future__ import annotations

from changeguard import coldstart

coldstart.hold()  # issue 9: before the imports below, which build what the sandbox keeps

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from changeguard import factory
from changeguard.adapters.cloudformation import CloudFormationStacks
from changeguard.adapters.codedeploy import CodeDeployDeployments
from changeguard.adapters.codepipeline import CodePipelineExecutions
from changeguard.domain.clock import SystemClock
from changeguard.domain.partition import parse_role_prefix
from changeguard.handlers import rejects_poison
from changeguard.services.calendar_gate import CalendarGateService
from changeguard.settings import Wiring, load_policy

FUNCTION = "gate_change_window"
logger = Logger()
metrics = Metrics()


@cache
def build_service() -> CalendarGateService:
    wiring = Wiring.from_env()
    accounts = factory.account_clients(wiring)  # issue 9: act in the change's account
    return CalendarGateService(
        function=FUNCTION,
        ledger=factory.ledger(wiring),
        tickets=factory.ticket_source(wiring),
        policy=lambda: load_policy(wiring.parameter_path),
        clock=SystemClock(),
        calendar=factory.calendar_gate_reader,
        deployments=CodeDeployDeployments(accounts=accounts),
        pipelines=CodePipelineExecutions(accounts=accounts),
        stacks=CloudFormationStacks(accounts=accounts),
        suite_role_prefixes=(wiring.suite_role_prefix,) if wiring.suite_role_prefix else (),
        scope=accounts,
        # A calendar named plainly in change-calendar-names is this account's and region's.
        home=(own[1] if (own := parse_role_prefix(wiring.suite_role_prefix)) else None, wiring.aws_region),
    )


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="first invocation")
@rejects_poison(FUNCTION)
def lambda_handler(event: dict[str, Any], context: Any, service: CalendarGateService | None = None) -> dict[str, Any]:
    """Judge one deployment start, pipeline start or stack call against the change calendar."""
    outcome = (service or build_service()).handle(event)
    logger.info("gated", extra={"change_id": outcome.change_id, "verdict": outcome.verdict, "actions": outcome.actions})
    if outcome.verdict and not outcome.duplicate:
        metrics.add_dimension(name="Verdict", value=outcome.verdict)
        metrics.add_metric(name="GatedChanges", unit=MetricUnit.Count, value=1)
    result: dict[str, Any] = outcome.model_dump(mode="json")
    return result
