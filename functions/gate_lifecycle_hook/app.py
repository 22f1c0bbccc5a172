"""A CodeDeploy lifecycle hook that fails the deployment while the change calendar is closed."""

from __future__ import annotations

from changeguard import coldstart

coldstart.hold()  # issue 9: before the imports below, which build what the sandbox keeps

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from changeguard import factory
from changeguard.adapters.codedeploy import CodeDeployDeployments
from changeguard.domain.clock import SystemClock
from changeguard.handlers import rejects_poison
from changeguard.services.calendar_gate import LifecycleHookService
from changeguard.settings import Wiring, load_policy

FUNCTION = "gate_lifecycle_hook"
# Invoked by CodeDeploy directly (no rule): samples in events/gate_lifecycle_hook/ validate against this.
INPUT_MODEL = "changeguard.models.change_events.LifecycleHookInvocation"
logger = Logger()
metrics = Metrics()


@cache
def build_service() -> LifecycleHookService:
    wiring = Wiring.from_env()
    return LifecycleHookService(
        function=FUNCTION,
        ledger=factory.ledger(wiring),
        tickets=factory.ticket_source(wiring),
        policy=lambda: load_policy(wiring.parameter_path),
        clock=SystemClock(),
        calendar=factory.calendar_gate_reader,
        deployments=CodeDeployDeployments(),
    )


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="first invocation")
@rejects_poison(FUNCTION)
def lambda_handler(event: dict[str, Any], context: Any, service: LifecycleHookService | None = None) -> dict[str, Any]:
    """Report Succeeded or Failed for one BeforeInstall/BeforeAllowTraffic hook invocation."""
    function_arn = getattr(context, "invoked_function_arn", None)
    outcome = (service or build_service()).handle(event, function_arn=function_arn)
    logger.info("hook", extra={"change_id": outcome.change_id, "verdict": outcome.verdict, "actions": outcome.actions})
    if outcome.verdict and not outcome.duplicate:
        metrics.add_dimension(name="Verdict", value=outcome.verdict)
        metrics.add_metric(name="LifecycleHooks", unit=MetricUnit.Count, value=1)
    result: dict[str, Any] = outcome.model_dump(mode="json")
    return result
