"""SNS: publish an alert readable by people (e-mail) and by machines (SQS, Lambda, HTTPS)."""

from __future__ import annotations

import json
from typing import Any

from changeguard.adapters.clients import client
from changeguard.domain.alerts import Alert

#: What subscription filter policies match on (README: "Alerts"), with SNS's default
#: ``FilterPolicyScope`` of ``MessageAttributes``: the body differs per protocol, attributes do not.
FILTER_ATTRIBUTES = ("severity", "verdict", "account", "region", "resource_type", "function", "kind")


def message_attributes(alert: Alert) -> dict[str, dict[str, str]]:
    """Attributes subscribers filter on, plus ``dedupe_id`` (SNS may deliver a message twice).

    Every value is a non-empty string (SNS rejects empty attribute values): a missing value is
    ``NONE`` for the verdict and ``unknown`` otherwise, so a policy can still match it.
    """
    values = {
        "severity": alert.severity.value,
        "verdict": alert.verdict or "NONE",
        "account": alert.account or "unknown",
        "region": alert.region or "unknown",
        "resource_type": alert.resource_type or "unknown",
        "function": alert.function,
        "kind": alert.kind,
        "dedupe_id": alert.alert_id,
        "schema_version": alert.schema_version,
    }
    return {k: {"DataType": "String", "StringValue": v} for k, v in values.items()}


class SnsAlertPublisher:
    """Publishes one alert as one SNS message: e-mail gets the plain text, machines the JSON
    (or the AWS Chatbot custom notification when ``chatbot_format``)."""

    def __init__(self, topic_arn: str, *, chatbot_format: bool = False, sns: Any | None = None) -> None:
        self.topic_arn = topic_arn
        self.chatbot_format = chatbot_format
        self._sns = sns

    def publish(self, alert: Alert) -> str:
        sns = self._sns or client("sns")
        machine = alert.chatbot_payload() if self.chatbot_format else alert.to_json()
        # One message, a rendering per protocol: e-mail gets the plain text, machines the JSON.
        message = {
            "default": machine,
            "email": alert.body_text(),
            "email-json": alert.to_json(),
            "sqs": machine,
            "lambda": machine,
            "http": machine,
            "https": machine,
        }
        resp = sns.publish(
            TopicArn=self.topic_arn,
            Subject=alert.subject,
            Message=json.dumps(message),
            MessageStructure="json",
            MessageAttributes=message_attributes(alert),
        )
        return str(resp["MessageId"])
