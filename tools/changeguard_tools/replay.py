"""Reading events for replay: files, directories, CloudTrail log documents and bare records.

A contract scripts rely on: one result per input event, in input order, never a traceback.
Files are read one at a time, so memory follows the largest file, not the whole input.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ACCOUNT = "123456789012"
_NAMESPACE = uuid.UUID("6f1c2b0e-8a53-4c4e-9a0e-3f1f6c3a1d55")
DETAIL_TYPES = {
    "AwsApiCall": "AWS API Call via CloudTrail",
    "AwsConsoleSignIn": "AWS Console Sign In via CloudTrail",
    "AwsServiceEvent": "AWS Service Event via CloudTrail",
    "AwsConsoleAction": "AWS Console Action via CloudTrail",
}


@dataclass
class Item:
    """One input: an event to process, or the reason the input is not one."""

    source_file: str
    event: dict[str, Any] | None = None
    error: str | None = None


def is_eventbridge_event(value: Any) -> bool:
    return isinstance(value, Mapping) and "detail-type" in value and "source" in value and "detail" in value


def is_cloudtrail_record(value: Any) -> bool:
    return isinstance(value, Mapping) and "eventSource" in value and "eventName" in value


def wrap_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope EventBridge gives a CloudTrail record (deterministic id from ``eventID``)."""
    event_source = str(record.get("eventSource", ""))
    identity = record.get("userIdentity") if isinstance(record.get("userIdentity"), Mapping) else {}
    account = record.get("recipientAccountId") or (identity or {}).get("accountId") or DEFAULT_ACCOUNT
    event_id = str(record.get("eventID") or json.dumps(record, sort_keys=True, default=str))
    return {
        "version": "0",
        "id": str(uuid.uuid5(_NAMESPACE, event_id)),
        "detail-type": DETAIL_TYPES.get(str(record.get("eventType", "AwsApiCall")), "AWS API Call via CloudTrail"),
        "source": "aws." + event_source.split(".", 1)[0] if event_source else "aws.unknown",
        "account": str(account),
        "time": str(record.get("eventTime", "1970-01-01T00:00:00Z")),
        "region": str(record.get("awsRegion", "us-east-1")),
        "resources": [],
        "detail": dict(record),
    }


def _items_of(document: Any, source_file: str) -> Iterator[Item]:
    if isinstance(document, Mapping) and isinstance(document.get("Records"), list):
        document = document["Records"]
    values: Iterable[Any] = document if isinstance(document, list) else [document]
    for value in values:
        if is_eventbridge_event(value):
            yield Item(source_file, event=dict(value))
        elif is_cloudtrail_record(value):
            yield Item(source_file, event=wrap_record(value))
        else:
            kind = type(value).__name__
            yield Item(source_file, error=f"not an EventBridge event or CloudTrail record ({kind})")


def files_of(paths: Iterable[str | Path]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.json") if p.is_file())
        else:
            yield path


def read_items(paths: Iterable[str | Path]) -> Iterator[Item]:
    """Every input event, in name order, one file in memory at a time."""
    for path in files_of(paths):
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            yield Item(name, error=f"cannot read: {exc}")
            continue
        try:
            document = json.loads(text)
        except ValueError as exc:
            yield Item(name, error=f"not JSON: {exc}")
            continue
        yield from _items_of(document, name)
