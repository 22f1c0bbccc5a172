"""Enforce required tags: mark untagged resources, quarantine them after the grace period, release them."""

from __future__ import annotations

from changeguard import coldstart

coldstart.hold()  # issue 9: before the imports below, which build what the sandbox keeps

from functools import cache, partial
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from changeguard import factory
from changeguard.adapters.tagging import AwsTagReader
from changeguard.domain.clock import SystemClock
from changeguard.handlers import rejects_poison
from changeguard.quarantine import Registry
from changeguard.services.tag_enforcement import TagEnforcementService
from changeguard.settings import Wiring, load_policy

FUNCTION = "enforce_tags"
logger = Logger()
metrics = Metrics()


@cache
def build_service() -> TagEnforcementService:
    wiring = Wiring.from_env()
    accounts = factory.account_clients(wiring)  # issue 9: each resource in its own account
    return TagEnforcementService(
        function=FUNCTION,
        enforcer=factory.enforcer(wiring, FUNCTION, accounts),
        registry=Registry(accounts=accounts),
        tags=partial(AwsTagReader, accounts=accounts),  # a fresh reader per event: its cache must not outlive it
        policy=lambda: load_policy(wiring.parameter_path),
        clock=SystemClock(),
        suite_role_prefixes=(wiring.suite_role_prefix,) if wiring.suite_role_prefix else (),
        scope=accounts,
    )


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="first invocation")
@rejects_poison(FUNCTION)
def lambda_handler(event: dict[str, Any], context: Any, service: TagEnforcementService | None = None) -> dict[str, Any]:
    """Judge the tags of the resources one CloudTrail call or Config verdict names, and act on them."""
    outcome = (service or build_service()).handle(event)
    logger.info("enforced tags", extra={"change_id": outcome.change_id, "verdict": outcome.verdict})
    if outcome.verdict:
        metrics.add_dimension(name="Verdict", value=outcome.verdict)
        metrics.add_metric(name="TagDecisions", unit=MetricUnit.Count, value=1)
    result: dict[str, Any] = outcome.model_dump(mode="json")
    return result
