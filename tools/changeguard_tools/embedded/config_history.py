"""AWS Config ``GetResourceConfigHistory`` over recorded configuration items.

moto's version returns the resource's current configuration, and only for the few types it can
describe: no history, no ``relatedEvents``, and ``laterTime``, ``earlierTime``, ``limit`` and
``chronologicalOrder`` ignored. The correlator reads an oversized item back with
``laterTime`` = its capture time and ``limit`` 1, which needs the history as AWS keeps it.

Items get into it as AWS Config records them, which the embedded AWS does not do on its own:
:func:`record` (the fixtures' ``config_items`` section) stores one, in the account and region given.
Per the API reference: items newest first unless ``chronologicalOrder`` is ``Forward``; ``laterTime``
defaults to now and ``earlierTime`` to the first item; ``limit`` is at most 100, 0 or none meaning
10; the response's ``configurationItems`` use the API's names (``accountId``, ``arn``). A resource
with no recorded item is left to moto's version (``ResourceNotDiscoveredException`` for one it does
not know). Pagination: ``nextToken`` is the index of the next item.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from moto.config.models import config_backends
from moto.config.responses import ConfigResponse
from moto.core.exceptions import JsonRESTError

from changeguard_tools.embedded.extensions import backend_state, operation, original_operation

__all__ = ["get_resource_config_history", "record"]

_DEFAULT_LIMIT = 10
_MAX_LIMIT = 100


def _history(backend: Any) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return backend_state(backend, "config_history", dict)


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def record(account: str, region: str, item: dict[str, Any]) -> None:
    """Record ``item`` (a configuration item in the notification's names or the API's) in the
    history of its resource, as AWS Config does when it captures one."""
    found = dict(item)
    if "awsAccountId" in found:
        found["accountId"] = found.pop("awsAccountId")
    if "ARN" in found:
        found["arn"] = found.pop("ARN")
    found.setdefault("accountId", account)
    found.setdefault("awsRegion", region)
    if "configurationStateId" in found:
        found["configurationStateId"] = str(found["configurationStateId"])
    found["configurationItemCaptureTime"] = _epoch(found["configurationItemCaptureTime"])
    for key in ("resourceCreationTime",):
        if key in found and found[key] is not None:
            found[key] = _epoch(found[key])
    items = _history(config_backends[account][region]).setdefault((found["resourceType"], found["resourceId"]), [])
    items.append(found)
    items.sort(key=lambda i: i["configurationItemCaptureTime"])


@operation(ConfigResponse, "GetResourceConfigHistory", replace=True)
def get_resource_config_history(self: Any) -> Any:
    params = json.loads(self.body or "{}")
    key = (params.get("resourceType"), params.get("resourceId"))
    items = _history(self.config_backend).get(key)  # type: ignore[arg-type]
    if not items:
        original = original_operation(ConfigResponse, "GetResourceConfigHistory")
        assert original is not None  # moto implements it
        return original(self)
    limit = params.get("limit") or _DEFAULT_LIMIT
    if not isinstance(limit, int) or not 0 < limit <= _MAX_LIMIT:
        raise JsonRESTError("InvalidLimitException", f"limit must be between 0 and {_MAX_LIMIT}")
    later = _epoch(params["laterTime"]) if params.get("laterTime") is not None else datetime.now(UTC).timestamp()
    earlier = _epoch(params["earlierTime"]) if params.get("earlierTime") is not None else float("-inf")
    if earlier > later:
        raise JsonRESTError("InvalidTimeRangeException", "earlierTime is later than laterTime")
    chosen = [i for i in items if earlier <= i["configurationItemCaptureTime"] <= later]
    if params.get("chronologicalOrder") != "Forward":
        chosen.reverse()
    start = int(params.get("nextToken") or 0)
    page = chosen[start : start + limit]
    body: dict[str, Any] = {"configurationItems": page}
    if start + limit < len(chosen):
        body["nextToken"] = str(start + limit)
    return json.dumps(body)
