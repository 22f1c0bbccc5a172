"""Stop unhealthy deployments with rollback and roll back regressions found in the bake window."""

from __future__ import annotations

from changeguard import coldstart

coldstart.hold()  # issue 9: before the imports below, which build what the sandbox keeps

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from changeguard import factory
from changeguard.adapters.cloudwatch import CloudWatchReader
from changeguard.adapters.codedeploy import CodeDeployGuard
from changeguard.domain.clock import SystemClock
from changeguard.handlers import rejects_poison, time_left_of
from changeguard.services.deployment_guard import DeploymentGuardService
from changeguard.settings import Wiring, load_policy

FUNCTION = "guard_deployment"
# Payloads that arrive without a rule (the alarm's Lambda action, the alarm topic) - checked by the contract tests.
INPUT_MODEL = "changeguard.models.deployments.DirectInvocation"
ACTED = frozenset({"STOPPED", "ROLLED_BACK", "CAPPED", "WOULD_STOP", "WOULD_ROLL_BACK"})
logger = Logger()
metrics = Metrics()


@cache
def build_service() -> DeploymentGuardService:
    wiring = Wiring.from_env()
    accounts = factory.account_clients(wiring)  # issue 9: act in the alarm's or deployment's account
    return DeploymentGuardService(
        function=FUNCTION,
        ledger=factory.ledger(wiring),
        codedeploy=CodeDeployGuard(accounts=accounts),
        cloudwatch=CloudWatchReader(accounts=accounts),
        policy=lambda: load_policy(wiring.parameter_path),
        clock=SystemClock(),
        scope=accounts,
        member_accounts=wiring.member_account_ids,  # issue 9: the health sweep visits them too
        regions=wiring.sweep_regions,
    )


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="init")
@rejects_poison(FUNCTION)
def lambda_handler(event: Any, context: Any, service: DeploymentGuardService | None = None) -> dict[str, Any]:
    """Handle one alarm (any of its three shapes), CodeDeploy state change or health-check sweep."""
    outcome = (service or build_service()).handle(event, time_left_of(context))
    logger.info("guarded", extra={"change_id": outcome.change_id, "verdict": outcome.verdict})
    if outcome.verdict in ACTED and not outcome.duplicate:
        metrics.add_dimension(name="Action", value=outcome.verdict or "")
        metrics.add_metric(name="DeploymentsGuarded", unit=MetricUnit.Count, value=1)
    result: dict[str, Any] = outcome.model_dump(mode="json")
    return result
