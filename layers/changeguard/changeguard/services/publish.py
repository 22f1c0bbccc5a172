"""Publishing alerts from the ledger's stream: the outbox that makes "exactly one alert" hold.

Functions never publish directly. They write an ALERT entry in the same transaction as
the fact it is about; the ledger table's stream hands it to this publisher, which publishes
each alert id once (Powertools Idempotency guards against stream redelivery).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from changeguard.domain.alerts import Alert
from changeguard.domain.errors import InvalidEventError


def alert_from_image(image: dict[str, Any]) -> Alert:
    """The alert carried by a deserialized ledger item image."""
    if image.get("kind") != "ALERT":
        raise InvalidEventError("ledger item is not an alert")
    try:
        body = json.loads(str(image["body"]))
        return Alert.model_validate(body["alert"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidEventError(f"malformed alert item: {exc}") from exc


class PublishService:
    def __init__(self, publish_once: Callable[[Alert], str]) -> None:
        self.publish_once = publish_once

    def handle_image(self, image: dict[str, Any]) -> str:
        return self.publish_once(alert_from_image(image))
