"""Follow up EMERGENCY and UNVERIFIED changes on a schedule: retroactive approvals, overdue deadlines, outages."""

from __future__ import annotations

from changeguard import coldstart

coldstart.hold()  # issue 9: before the imports below, which build what the sandbox keeps

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from changeguard import factory
from changeguard.adapters.tagging import AwsTagReader
from changeguard.domain.clock import SystemClock
from changeguard.handlers import rejects_poison
from changeguard.services.follow_up import FollowUpService
from changeguard.settings import Wiring, load_policy

FUNCTION = "follow_up_changes"
logger = Logger()
metrics = Metrics()


@cache
def build_service() -> FollowUpService:
    wiring = Wiring.from_env()
    accounts = factory.account_clients(wiring)  # tags are read again in the change's account
    return FollowUpService(
        function=FUNCTION,
        ledger=factory.ledger(wiring),
        tickets=factory.ticket_source(wiring),
        policy=lambda: load_policy(wiring.parameter_path),
        clock=SystemClock(),
        suite_role_prefixes=(wiring.suite_role_prefix,) if wiring.suite_role_prefix else (),
        calendar=factory.calendar_reader,
        tags=AwsTagReader(accounts=accounts),
        scope=accounts,
        suite=factory.suite_resources(wiring),  # issue 8: a change to the suite stays tampering when re-judged
    )


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="init")
@rejects_poison(FUNCTION)
def lambda_handler(event: dict[str, Any], context: Any, service: FollowUpService | None = None) -> dict[str, Any]:
    """Re-check the followed changes of the look-back window and record what changed."""
    outcome = (service or build_service()).handle(event)
    logger.info("followed up", extra={"actions": len(outcome.actions), "alerts": len(outcome.alert_ids)})
    metrics.add_metric(name="FollowUpAlerts", unit=MetricUnit.Count, value=len(outcome.alert_ids))
    result: dict[str, Any] = outcome.model_dump(mode="json")
    return result


# What arrives without an EventBridge rule pattern (a Schedule): the contract tests validate samples against it.
INPUT_MODEL = "aws_lambda_powertools.utilities.parser.models.EventBridgeModel"
