"""``responseElements`` for the create calls whose new resource id only the response holds.

The recorder writes ``responseElements: null`` for every call. CloudTrail fills it for calls
that create something, and for ``RunInstances``, ``CreateSecurityGroup`` and Lambda's
``CreateFunction`` it is the only place the new resource's id appears, so an untagged instance
launched against the embedded AWS could not be found from its event. This patch fills it for
those calls (and only when they succeeded), in CloudTrail's shape:

* EC2 (query protocol): the XML response as nested objects, lists as ``{"items": [...]}``,
  e.g. ``responseElements.instancesSet.items[0].instanceId``;
* Lambda (REST JSON): the function configuration's scalar fields, named lowerCamelCase
  (``functionName``, ``functionArn``, ...).

The table below says which calls get them (data, not code).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import Any

from changeguard_tools.embedded.cloudtrail import CloudTrailRecorder
from changeguard_tools.embedded.extensions import installer, wrap_method


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ec2_value(element: ET.Element) -> Any:
    children = list(element)
    if not children:
        text = (element.text or "").strip()
        return {"true": True, "false": False}.get(text, text)
    if all(_local(c.tag) == "item" for c in children):
        return {"items": [_ec2_value(c) for c in children]}
    return {_local(c.tag): _ec2_value(c) for c in children}


def ec2_elements(content: bytes) -> dict[str, Any] | None:
    """CloudTrail's ``responseElements`` of an EC2 query-protocol response."""
    try:
        root = ET.fromstring(content)  # noqa: S314 - the embedded AWS's own response
    except ET.ParseError:
        return None
    value = _ec2_value(root)
    return value if isinstance(value, dict) else None


def lambda_elements(content: bytes) -> dict[str, Any] | None:
    """CloudTrail's ``responseElements`` of Lambda's CreateFunction: the configuration's scalars."""
    try:
        document = json.loads(content or b"{}")
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    return {
        key[:1].lower() + key[1:]: value
        for key, value in document.items()
        if isinstance(value, str | int | float | bool)
    }


#: Which calls get ``responseElements``, by eventSource and eventName.
RESPONSE_ELEMENTS: Mapping[str, Mapping[str, Callable[[bytes], dict[str, Any] | None]]] = {
    "ec2.amazonaws.com": {"RunInstances": ec2_elements, "CreateSecurityGroup": ec2_elements},
    "lambda.amazonaws.com": {"CreateFunction20150331": lambda_elements},
}


def _with_response_elements(original: Callable[..., Any]) -> Callable[..., Any]:
    def _record(self: Any, record: dict[str, Any], status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        build = RESPONSE_ELEMENTS.get(str(record.get("eventSource")), {}).get(str(record.get("eventName")))
        if build is not None and status < 400 and record.get("responseElements") is None:
            record["responseElements"] = build(content)
        original(self, record, status, headers, content)

    return _record


installer(lambda: wrap_method(CloudTrailRecorder, "_record", _with_response_elements))
