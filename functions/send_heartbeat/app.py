"""Send a heartbeat canary through CloudTrail, EventBridge and the correlator; alert when one is missing."""

from __future__ import annotations

from changeguard import coldstart

coldstart.hold()  # issue 9: before the imports below, which build what the sandbox keeps

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from changeguard import factory
from changeguard.adapters.eventbridge import EventBridgeRules
from changeguard.adapters.ssm import SsmParameterWriter
from changeguard.domain.clock import SystemClock
from changeguard.domain.errors import ConfigurationError
from changeguard.domain.heartbeat import WatchedRule
from changeguard.handlers import rejects_poison
from changeguard.services.heartbeat import HeartbeatService
from changeguard.settings import Wiring, load_policy

FUNCTION = "send_heartbeat"
logger = Logger()
metrics = Metrics()


@cache
def build_service() -> HeartbeatService:
    wiring = Wiring.from_env()
    if not wiring.heartbeat_parameter_name:
        raise ConfigurationError("HEARTBEAT_PARAMETER_NAME is required")
    try:
        watched = tuple(WatchedRule.parse(text) for text in wiring.heartbeat_watched_rules)
    except ValueError as exc:
        raise ConfigurationError(f"HEARTBEAT_WATCHED_RULES: {exc}") from exc
    if not watched:  # the canary alone proves only its own rule
        raise ConfigurationError("HEARTBEAT_WATCHED_RULES is required")
    return HeartbeatService(
        function=FUNCTION,
        ledger=factory.ledger(wiring),
        parameters=SsmParameterWriter(),
        parameter_name=wiring.heartbeat_parameter_name,
        policy=lambda: load_policy(wiring.parameter_path),
        clock=SystemClock(),
        rules=EventBridgeRules(),
        watched=watched,
    )


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="init")
@rejects_poison(FUNCTION)
def lambda_handler(event: dict[str, Any], context: Any, service: HeartbeatService | None = None) -> dict[str, Any]:
    """Judge the last canaries, then send this tick's."""
    outcome = (service or build_service()).handle(event)
    logger.info("heartbeat", extra={"finding": outcome.reasons[0] if outcome.reasons else None})
    metrics.add_metric(name="HeartbeatAlerts", unit=MetricUnit.Count, value=len(outcome.alert_ids))
    result: dict[str, Any] = outcome.model_dump(mode="json")
    return result


# What arrives without an EventBridge rule pattern (a Schedule): the contract tests validate samples against it.
INPUT_MODEL = "aws_lambda_powertools.utilities.parser.models.EventBridgeModel"
