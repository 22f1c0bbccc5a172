"""Publish the alerts that other functions wrote to the ledger (DynamoDB stream → SNS)."""

from __future__ import annotations

from changeguard import coldstart

coldstart.hold()  # issue 9: before the imports below, which build what the sandbox keeps

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from changeguard.adapters.sns import SnsAlertPublisher
from changeguard.domain.alerts import Alert
from changeguard.domain.errors import InvalidEventError
from changeguard.handlers import dead_letter, rejects_poison
from changeguard.services.publish import PublishService
from changeguard.settings import Wiring

FUNCTION = "publish_alerts"
IDEMPOTENCY_SECONDS = 48 * 3600  # longer than any redelivery window (stream retries, replays)
logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def count(name: str, dimension: str, value: str) -> None:
    """One EMF metric with its own dimension (alerts of one batch differ in severity)."""
    with single_metric(name=name, unit=MetricUnit.Count, value=1) as metric:
        if metrics.service:
            metric.add_dimension(name="service", value=str(metrics.service))
        metric.add_dimension(name=dimension, value=value)


@cache
def idempotency_config() -> Any:
    """One config for the function's life: ``lambda_handler`` registers each invocation's context on it."""
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    return IdempotencyConfig(event_key_jmespath="alert_id", expires_after_seconds=IDEMPOTENCY_SECONDS)


@cache
def build_service() -> PublishService:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, idempotent_function

    wiring = Wiring.from_env()
    if not wiring.alert_topic_arn or not wiring.idempotency_table_name:
        from changeguard.domain.errors import ConfigurationError

        raise ConfigurationError("ALERT_TOPIC_ARN and IDEMPOTENCY_TABLE_NAME are required")
    publisher = SnsAlertPublisher(wiring.alert_topic_arn, chatbot_format=wiring.alert_format == "chatbot")
    from changeguard.adapters.clients import client

    # The shared client: Powertools' own would build a second boto3 session on the cold start (issue 9).
    persistence = DynamoDBPersistenceLayer(table_name=wiring.idempotency_table_name, boto3_client=client("dynamodb"))

    @idempotent_function(data_keyword_argument="alert", persistence_store=persistence, config=idempotency_config())
    def publish_once(alert: dict[str, Any]) -> str:
        parsed = Alert.model_validate(alert)
        message_id = publisher.publish(parsed)
        metrics.add_metric(name="AlertsPublished", unit=MetricUnit.Count, value=1)
        count("Alerts", "Severity", parsed.severity.value)
        return str(message_id)

    return PublishService(lambda alert: str(publish_once(alert=alert.model_dump(mode="json"))))


def record_handler(record: DynamoDBRecord) -> str:
    try:
        try:
            image = dict(record.dynamodb.new_image or {}) if record.dynamodb else {}
        except (TypeError, ValueError, LookupError, AttributeError) as exc:
            raise InvalidEventError(f"unreadable stream record: {exc}") from exc
        return str(build_service().handle_image(image))
    except InvalidEventError as exc:
        # issue 8: a malformed alert item never becomes valid. Dead-letter it now rather than
        # report it failed, which would make the stream retry it (and hold its shard) 100 times.
        logger.warning("rejected stream record", extra={"error": str(exc), "function": FUNCTION})
        count("ProcessingErrors", "Function", FUNCTION)
        return f"rejected: {dead_letter(record.raw_event, exc, FUNCTION)}"


@metrics.log_metrics
@logger.inject_lambda_context
@coldstart.released(after="first invocation")
@rejects_poison(FUNCTION, max_bytes=6 * 1024 * 1024)  # a stream batch: Lambda's payload limit
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Publish each new ALERT item of the batch once; report only the failed records for retry."""
    if not (
        isinstance(event, dict)
        and isinstance(event.get("Records"), list)
        and event["Records"]
        and all(isinstance(r, dict) for r in event["Records"])
    ):
        raise InvalidEventError("not a DynamoDB stream batch")  # issue 8: a poison event, not a retry
    # The lock an alert's idempotency record holds while it is published then lasts as long as this
    # invocation can: after a timeout (the process dies holding it), the stream's retry takes it over
    # instead of meeting IdempotencyAlreadyInProgressError until the record expires, 48 h on.
    idempotency_config().register_lambda_context(context)
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    for _ in response.get("batchItemFailures", []):
        count("ProcessingErrors", "Function", FUNCTION)
    return dict(response)


# What arrives without an EventBridge rule: the contract tests validate samples against it.
INPUT_MODEL = "aws_lambda_powertools.utilities.parser.models.DynamoDBStreamModel"
