"""SNS: publish an alert readable by people (e-mail) and by machines (SQS, Lambda, HTTPS)."""

from __future__ import annotations

import json
from typing import Any

from changeguard.adapters.clients import client
from changeguard.domain.alerts import Alert

#: What subscription filter policies match on (README: "Alerts"), with SNS's default
#: ``FilterPolicyScope`` of ``MessageAttributes``: the body differs per protocol, attributes do not.
FILTER_ATTRIBUTES = ("severity", "verdict", "account", "region", "resource_type", "function", "kind")
#: SNS takes at most 262,144 bytes per message, attributes included: the renderings must fit in
#: less, with room for the attributes and the JSON escaping of the renderings.
MESSAGE_BUDGET = 240_000
_LONG_TEXT = 2_000  # characters a free-text field keeps when even the cut lists do not fit


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

    def message(self, alert: Alert) -> str:
        """The SNS message: a rendering per protocol. E-mail gets the plain text, every other protocol
        the ``default`` (the JSON, or the Chatbot notification); a protocol without a key of its own
        receives ``default``, so only renderings that differ from it are sent."""
        machine = alert.chatbot_payload() if self.chatbot_format else alert.to_json()
        renderings = {"default": machine, "email": alert.body_text()}
        if self.chatbot_format:
            renderings["email-json"] = alert.to_json()
        return json.dumps(renderings)

    def fitted(self, alert: Alert) -> tuple[Alert, str]:
        """``alert`` and its message, cut to fit one SNS message when it is too large (a tag call on
        hundreds of resources, a sweep that skipped many). The longest lists keep their first items
        and say how many more there were; the ledger keeps the whole alert under its change id."""
        message = self.message(alert)
        keep = max(len(alert.resources), len(alert.reasons), len(alert.actions), len(alert.details))
        cut = alert
        while len(message.encode()) > MESSAGE_BUDGET and keep > 1:
            keep //= 2
            cut = _cut(alert, keep)
            message = self.message(cut)
        if len(message.encode()) > MESSAGE_BUDGET:
            cut = _cut(alert, 1, text=_LONG_TEXT)
            message = self.message(cut)
        return cut, message

    def publish(self, alert: Alert) -> str:
        sns = self._sns or client("sns")
        alert, message = self.fitted(alert)
        resp = sns.publish(
            TopicArn=self.topic_arn,
            Subject=alert.subject,
            Message=message,
            MessageStructure="json",
            MessageAttributes=message_attributes(alert),
        )
        return str(resp["MessageId"])


def _cut(alert: Alert, keep: int, *, text: int | None = None) -> Alert:
    """``alert`` with at most ``keep`` resources, reasons, actions and details (and free text of at
    most ``text`` characters), each cut list ending with how many were left out."""

    def short(value: str | None) -> str | None:
        if value is None or text is None or len(value) <= text:
            return value
        return value[: text - 3] + "..."

    def first(items: tuple[str, ...], what: str) -> tuple[str, ...]:
        if len(items) <= keep:
            return tuple(short(i) or "" for i in items)
        left = len(items) - keep
        return (*(short(i) or "" for i in items[:keep]), f"... and {left} more {what} (the ledger has them all)")

    details = dict(sorted(alert.details.items())[:keep])
    details = {k: short(v) if isinstance(v, str) else v for k, v in details.items()}
    if len(alert.details) > keep:
        details["details_left_out"] = len(alert.details) - keep
    if len(alert.resources) > keep:
        details["resources_total"] = len(alert.resources)
    return alert.model_copy(
        update={
            "summary": short(alert.summary) or "",
            "resources": first(alert.resources, "resources"),
            "reasons": first(alert.reasons, "reasons"),
            "actions": first(alert.actions, "actions"),
            "remediation": short(alert.remediation),
            "release": short(alert.release),
            "details": details,
        }
    )
