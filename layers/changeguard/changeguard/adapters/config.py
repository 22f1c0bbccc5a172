"""AWS Config's recorded history: the full item behind an oversized change notification.

An item too large for an SNS notification reaches EventBridge as a summary (messageType
``OversizedConfigurationItemChangeNotification``) without its ``relatedEvents`` and tags, which the
correlator needs. ``GetResourceConfigHistory`` returns the items, newest first by default; with
``laterTime`` the item's capture time and ``limit`` 1 it returns that item, as AWS's Config rule kit
(RDK) reads oversized items. One call per oversized event, in the account and region the item was
recorded in (``adapters.accounts``: the read-tags role in a member account); more only when Config
answers a page without the item and with a ``nextToken`` (see ``MAX_PAGES``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from changeguard.adapters.clients import acting_client
from changeguard.domain.errors import ConfigItemUnavailableError
from changeguard.models.events import ConfigurationItem

if TYPE_CHECKING:
    from changeguard.adapters.accounts import AccountClients


#: The most ``GetResourceConfigHistory`` pages one read follows. The API reference: "Each call to the
#: API is limited to span a duration of seven days. It is likely that the number of records returned
#: is smaller than the specified limit. In such cases, you can make another call, using the
#: nextToken." A page with no item and a ``nextToken`` is therefore not an empty history. Past this
#: bound the read is unfinished, not empty: ``ConfigItemUnavailableError`` (retried), never None
#: (which rejects the event as naming an item Config does not hold).
MAX_PAGES = 10


class AwsConfigHistory:
    def __init__(self, client: Any | None = None, accounts: AccountClients | None = None) -> None:
        self._client = client
        self._accounts = accounts

    def item_at(self, resource_type: str, resource_id: str, captured: datetime) -> ConfigurationItem | None:
        """The item captured last at or before ``captured``; None when Config has none recorded."""
        from botocore.exceptions import BotoCoreError, ClientError

        config = self._client or acting_client("config", self._accounts)
        request: dict[str, Any] = {
            "resourceType": resource_type,
            "resourceId": resource_id,
            "laterTime": captured,
            "limit": 1,
        }
        for _ in range(MAX_PAGES):
            try:
                resp = config.get_resource_config_history(**request)
            except ClientError as exc:
                code = str((exc.response.get("Error") or {}).get("Code") or "ClientError")
                # A resource Config never recorded, or a type it does not know: no item by that name.
                if code in ("ResourceNotDiscoveredException", "ValidationException"):
                    return None
                raise ConfigItemUnavailableError(f"config:GetResourceConfigHistory refused ({code})") from exc
            except BotoCoreError as exc:
                raise ConfigItemUnavailableError(
                    f"config:GetResourceConfigHistory failed ({type(exc).__name__})"
                ) from exc
            items = resp.get("configurationItems") or []
            if items:
                return item_of(items[0])  # newest first: the newest at or before ``captured``
            token = resp.get("nextToken")
            if not token:
                return None
            request["nextToken"] = token
        raise ConfigItemUnavailableError(
            f"config:GetResourceConfigHistory gave {MAX_PAGES} pages without an item and still a nextToken"
        )


def item_of(found: dict[str, Any]) -> ConfigurationItem:
    """The API's ``ConfigurationItem`` in the notification's names (``accountId`` is ``awsAccountId``
    there, ``arn`` is ``ARN``); the rest is named alike."""
    return ConfigurationItem.model_validate(
        {
            **{k: v for k, v in found.items() if k not in ("accountId", "arn")},
            "awsAccountId": found.get("accountId"),
            "ARN": found.get("arn"),
        }
    )
