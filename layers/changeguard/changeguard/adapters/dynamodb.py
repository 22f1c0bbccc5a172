"""DynamoDB: the append-only change ledger and the default ticket table."""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from changeguard.adapters.cache import CachedTicketSource
from changeguard.adapters.clients import client
from changeguard.domain.errors import (
    LedgerUnavailableError,
    TicketSourceUnavailableError,
    TicketUnreadableError,
    first_error,
)
from changeguard.domain.ledger import DEFAULT_DAY_SHARDS, DayShards, EntryKind, LedgerEntry
from changeguard.domain.tickets import Approval, Ticket, TicketStatus, TicketType

# issue 9: keyed by ``day_shard`` (``YYYY-MM-DD#NN``) + ``index_key``. A new name, because
# CloudFormation cannot change an index's keys in place: an upgrade adds it, then drops ``ByDay``.
BY_DAY_INDEX = "ByDayShard"
# Shards queried at once: a small pool, all on the one cached client, under botocore's default
# of 10 pooled connections per client (more would wait for a connection, not go faster).
_READ_WORKERS = 8
TICKET_CACHE_SECONDS = 5.0
_BATCH_GET_MAX = 100  # BatchGetItem's limit per request
_BATCH_GET_ROUNDS = 8  # unprocessed keys (throttling) are asked again, then it is an error
_NOT_EXISTS = "attribute_not_exists(change_id)"


def _s(value: str | None) -> dict[str, str] | None:
    return {"S": value} if value else None


def entry_to_item(entry: LedgerEntry, day_shards: int = DEFAULT_DAY_SHARDS) -> dict[str, Any]:
    """The stored item. ``day_shard`` is not part of the content hash: it says where the item is
    indexed, not what it records."""
    item: dict[str, Any] = {
        "change_id": {"S": entry.change_id},
        "entry": {"S": entry.entry},
        "kind": {"S": entry.kind.value},
        "function": {"S": entry.function},
        "event_time": {"S": entry.event_time.isoformat()},
        "recorded_at": {"S": entry.recorded_at.isoformat()},
        "day": {"S": entry.day},
        "day_shard": {"S": entry.day_shard(day_shards)},
        "index_key": {"S": entry.index_key},
        "body": {"S": json.dumps(entry.body, sort_keys=True, separators=(",", ":"), default=str)},
        "content_hash": {"S": entry.content_hash()},
    }
    for name in ("verdict", "severity", "ticket_id", "account", "region"):
        value = _s(getattr(entry, name))
        if value:
            item[name] = value
    return item


def item_to_entry(item: dict[str, Any]) -> LedgerEntry:
    def s(name: str) -> str | None:
        value = item.get(name)
        return value["S"] if value else None

    return LedgerEntry(
        change_id=item["change_id"]["S"],
        entry=item["entry"]["S"],
        kind=EntryKind(item["kind"]["S"]),
        function=item["function"]["S"],
        event_time=datetime.fromisoformat(item["event_time"]["S"]),
        recorded_at=datetime.fromisoformat(item["recorded_at"]["S"]),
        verdict=s("verdict"),
        severity=s("severity"),
        ticket_id=s("ticket_id"),
        account=s("account"),
        region=s("region"),
        body=json.loads(item["body"]["S"]),
    )


def stored_hash(item: dict[str, Any]) -> str | None:
    value = item.get("content_hash")
    return value["S"] if value else None


class DynamoDBLedger:
    """Conditional puts only: a duplicate delivery is a no-op, later facts are new items.

    Several entries (a verdict and its alert) go in one transaction, so the alert exists
    exactly when the verdict does; the alert publisher reads them from the table's stream.
    """

    def __init__(self, table_name: str, ddb: Any | None = None, day_shards: DayShards | None = None) -> None:
        self.table_name = table_name
        self._ddb = ddb
        self.day_shards = day_shards or DayShards()

    @property
    def ddb(self) -> Any:
        if self._ddb is None:
            self._ddb = client("dynamodb")
        return self._ddb

    def _item(self, entry: LedgerEntry) -> dict[str, Any]:
        return entry_to_item(entry, self.day_shards.write)

    def append(self, entries: Sequence[LedgerEntry]) -> bool:
        if not entries:
            return False
        if len(entries) == 1:
            try:
                self.ddb.put_item(
                    TableName=self.table_name,
                    Item=self._item(entries[0]),
                    ConditionExpression=_NOT_EXISTS,
                )
            except self.ddb.exceptions.ConditionalCheckFailedException as exc:
                return self._ours_after_retry(exc, entries)
            return True
        try:
            self.ddb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": self._item(e),
                            "ConditionExpression": _NOT_EXISTS,
                        }
                    }
                    for e in entries
                ]
            )
        except self.ddb.exceptions.TransactionCanceledException as exc:
            codes = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if "ConditionalCheckFailed" in codes:
                # Already written: by a duplicate delivery, or by our own earlier attempt whose
                # response was lost. Either way the facts are recorded.
                return self._ours_after_retry(exc, entries)
            raise
        return True

    def _ours_after_retry(self, exc: Any, entries: Sequence[LedgerEntry]) -> bool:
        """Whether a write that met its condition on a *retry* found our own first attempt (issue 8).

        The first attempt can commit and lose its response; botocore then retries, and the retry
        meets the item it wrote. That is this call's success, not a duplicate delivery: the caller
        must go on as the writer (open the outage it found, report the alert it wrote). It is ours
        when botocore retried and every stored item has exactly our content (same ``recorded_at``:
        a redelivery is judged at another moment). Any doubt answers False: the facts are recorded.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        if not exc.response.get("ResponseMetadata", {}).get("RetryAttempts"):
            return False
        stored: dict[tuple[str, str], str | None] = {}
        try:
            for change_id in dict.fromkeys(e.change_id for e in entries):
                pages = self.ddb.get_paginator("query").paginate(
                    TableName=self.table_name,
                    KeyConditionExpression="change_id = :c",
                    ExpressionAttributeValues={":c": {"S": change_id}},
                    ProjectionExpression="#e, content_hash",
                    ExpressionAttributeNames={"#e": "entry"},
                    ConsistentRead=True,
                )
                stored.update({(change_id, i["entry"]["S"]): stored_hash(i) for p in pages for i in p.get("Items", [])})
        except (ClientError, BotoCoreError):
            return False  # cannot tell (no read permission, say): a duplicate, as before
        return all(stored.get((e.change_id, e.entry)) == e.content_hash() for e in entries)

    def existing(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which ``(change_id, entry)`` keys are in the ledger (BatchGetItem, 100 keys a request).

        The reconciliation sweep asks this of every write call of the look-back window (issue 8):
        one request per hundred calls instead of one query per call.
        """
        found: set[tuple[str, str]] = set()
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _BATCH_GET_MAX):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [
                        {"change_id": {"S": c}, "entry": {"S": e}} for c, e in unique[start : start + _BATCH_GET_MAX]
                    ],
                    "ProjectionExpression": "change_id, #e",
                    "ExpressionAttributeNames": {"#e": "entry"},
                    "ConsistentRead": True,
                }
            }
            for _ in range(_BATCH_GET_ROUNDS):
                resp = self.ddb.batch_get_item(RequestItems=request)
                found.update(
                    (i["change_id"]["S"], i["entry"]["S"]) for i in resp.get("Responses", {}).get(self.table_name, [])
                )
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                raise LedgerUnavailableError(
                    f"{self.table_name}: keys still unprocessed after {_BATCH_GET_ROUNDS} rounds"
                )
        return found

    def entries_for(self, change_id: str) -> list[LedgerEntry]:
        pages = self.ddb.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="change_id = :c",
            ExpressionAttributeValues={":c": {"S": change_id}},
            ConsistentRead=True,
        )
        return [item_to_entry(i) for page in pages for i in page.get("Items", [])]

    def entries_between(
        self, change_id: str, low: str, high: str, *, newest_first: bool = False, limit: int | None = None
    ) -> list[LedgerEntry]:
        """One key range of a partition (``BETWEEN`` includes both ends; strings compare as UTF-8
        bytes). With ``limit`` one page is enough: a key condition alone filters nothing out, so
        ``Limit`` items read are the items returned."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "change_id = :c AND #e BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#e": "entry"},
            "ExpressionAttributeValues": {":c": {"S": change_id}, ":lo": {"S": low}, ":hi": {"S": high}},
            "ConsistentRead": True,
            "ScanIndexForward": not newest_first,
        }
        if limit is not None:
            request["Limit"] = limit
        found: list[LedgerEntry] = []
        while True:
            page = self.ddb.query(**request)
            found.extend(item_to_entry(i) for i in page.get("Items", []))
            if (limit is not None and len(found) >= limit) or "LastEvaluatedKey" not in page:
                return found[:limit] if limit is not None else found
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def entries_on(self, day: str, verdict: str | None = None) -> list[LedgerEntry]:
        return [item_to_entry(i) for i in self.items_on(day, verdict)]

    def items_on(self, day: str, verdict: str | None = None) -> list[dict[str, Any]]:
        """Raw items of one day, in ``index_key`` order, for reports and digests (issue 9).

        The day is spread over shards (:class:`DayShards`): every shard of every shard count in use
        is queried, each to its last page, and the sorted answers merged. The order is the index's
        own, whatever order the shards answer in, so digests and reports are deterministic.
        """
        ddb = self.ddb  # the one cached client (thread-safe), created before any worker uses it
        keys = self.day_shards.keys(day)
        if len(keys) == 1:
            shards = [self._shard_items(ddb, keys[0], verdict)]
        else:
            with ThreadPoolExecutor(max_workers=min(_READ_WORKERS, len(keys))) as pool:
                shards = list(pool.map(lambda key: self._shard_items(ddb, key, verdict), keys))
        return list(heapq.merge(*shards, key=_index_key))

    def _shard_items(self, ddb: Any, day_shard: str, verdict: str | None) -> list[dict[str, Any]]:
        expr = "day_shard = :d"
        values: dict[str, Any] = {":d": {"S": day_shard}}
        if verdict:
            expr += " AND begins_with(index_key, :v)"
            values[":v"] = {"S": f"{verdict}#"}
        pages = ddb.get_paginator("query").paginate(
            TableName=self.table_name,
            IndexName=BY_DAY_INDEX,
            KeyConditionExpression=expr,
            ExpressionAttributeValues=values,
        )
        return [i for page in pages for i in page.get("Items", [])]


def _index_key(item: dict[str, Any]) -> str:
    # DynamoDB orders string keys by their UTF-8 bytes, which is Python's code-point order.
    return str(item["index_key"]["S"])


def ticket_time(item: dict[str, Any], name: str) -> datetime | None:
    """A ticket item's time: ISO 8601, UTC when it names no offset (as the other sources read theirs).

    Operators may write the ticket table by hand: a naive time compared with an aware one would
    fail every report that reads it, and an unreadable one is the source's error, not "no time".
    """
    value = item.get(name, {}).get("S")
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise TicketUnreadableError(f"ticket table: {name} is not an ISO 8601 time: {value!r}") from exc
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _str(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value.get("S") if value else None


class DynamoDBTicketSource(CachedTicketSource):
    """The default ticket source: one item per ticket plus one item per approval.

    Approval items carry ``approver`` (the approver's verified STS identity); the table's
    resource policy lets only the approvers role write items with that attribute. Lookups are
    cached for a few seconds (one invocation, give or take): approvals recorded after that are
    seen by the next change, never hidden by a warm container.
    """

    name = "dynamodb"

    def __init__(self, table_name: str, ddb: Any | None = None) -> None:
        super().__init__(TICKET_CACHE_SECONDS)
        self.table_name = table_name
        self._ddb = ddb

    @property
    def ddb(self) -> Any:
        if self._ddb is None:  # its own retry quota: see adapters.clients.client
            self._ddb = client("dynamodb", purpose="tickets")
        return self._ddb

    def _fetch(self, ticket_id: str) -> Ticket | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.ddb.query(
                TableName=self.table_name,
                KeyConditionExpression="ticket_id = :t",
                ExpressionAttributeValues={":t": {"S": ticket_id}},
                ConsistentRead=True,
            )
        except (ClientError, BotoCoreError) as exc:
            raise TicketSourceUnavailableError(f"ticket table {self.table_name}: {exc}") from exc
        return ticket_from_items(resp.get("Items", []))


def ticket_from_items(items: list[dict[str, Any]]) -> Ticket | None:
    """The ticket the table's items describe, None without a ``TICKET`` item.

    The table is written by people as well as by ``changeguard tickets``: an item that does not
    read as a ticket (a status outside the enum, such as "Approved", an approver that is not a
    string) is that ticket's error, raised as ``TicketUnreadableError``, never a crash. The change
    is then recorded UNVERIFIED by itself (the table answered: no outage is opened) and judged again
    once the item is fixed, as for an unreadable time (``ticket_time``).
    """
    try:
        return _ticket_from_items(items)
    except ValidationError as exc:
        raise TicketUnreadableError(f"ticket table: not a ticket item: {first_error(exc)}") from exc
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise TicketUnreadableError(f"ticket table: not a ticket item: {type(exc).__name__}: {exc}") from exc


def _ticket_from_items(items: list[dict[str, Any]]) -> Ticket | None:
    head = next((i for i in items if i.get("record", {}).get("S") == "TICKET"), None)
    if head is None:
        return None
    approvals = tuple(
        Approval(
            approver=i["approver"]["S"],
            approver_name=_str(i, "approver_name"),
            approved_at=ticket_time(i, "approved_at"),
        )
        for i in items
        if i.get("record", {}).get("S", "").startswith("APPROVAL#") and "approver" in i
    )
    resources = head.get("affected_resources", {})
    affected = tuple(resources.get("SS") or [r["S"] for r in resources.get("L", []) if "S" in r])
    return Ticket(
        ticket_id=head["ticket_id"]["S"],
        source="dynamodb",
        type=TicketType(_str(head, "type") or "normal"),
        status=TicketStatus(_str(head, "status") or "open"),
        title=_str(head, "title"),
        requested_by=_str(head, "requested_by"),
        approvals=approvals,
        window_start=ticket_time(head, "window_start"),
        window_end=ticket_time(head, "window_end"),
        affected_resources=affected,
        test_evidence=_str(head, "test_evidence"),
        rollback_plan=_str(head, "rollback_plan"),
        created_at=ticket_time(head, "created_at"),
        closed_at=ticket_time(head, "closed_at"),
    )
