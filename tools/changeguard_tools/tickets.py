"""``changeguard tickets``: manage the DynamoDB ticket table.

``approve`` records the caller's own STS identity (``GetCallerIdentity``), never a typed
name: an approval is only as good as the identity behind it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from changeguard.adapters.dynamodb import ticket_from_items, ticket_time
from changeguard.domain.errors import TicketUnreadableError
from changeguard.domain.tickets import Ticket


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        # isoformat keeps a fraction of a second if there is one: a window is never narrowed.
        return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


class TicketBookError(Exception):
    """An operator's request the ticket table cannot take; nothing was written."""


class TicketAlreadyExistsError(TicketBookError):
    def __str__(self) -> str:
        return f"ticket {self.args[0]} already exists (tickets are never overwritten)"


class TicketNotFoundError(TicketBookError, KeyError):
    def __str__(self) -> str:
        return f"no ticket {self.args[0]} in the ticket table"


class TicketInputError(TicketBookError, ValueError):
    pass


def _window_time(value: Any, name: str) -> datetime | None:
    """A window bound as the correlator will read it back, or ``TicketInputError``.

    Parsed with the ticket source's own rule (``ticket_time``: ISO 8601, UTC when no offset), so that
    nothing is stored that the correlator cannot read: an unreadable window makes the ticket
    unreadable, and every change under it UNVERIFIED with its own alert.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return ticket_time({name: {"S": str(value)}}, name)
    except TicketUnreadableError as exc:
        raise TicketInputError(
            f"{name.replace('_', '-')} {value!r} is not an ISO 8601 time (e.g. 2026-11-28T02:00:00Z)"
        ) from exc


class TicketBook:
    def __init__(self, table: str, ddb: Any, sts: Any | None = None) -> None:
        self.table = table
        self.ddb = ddb
        self.sts = sts

    def add(
        self,
        ticket_id: str,
        *,
        title: str = "",
        type: str = "normal",
        status: str = "open",
        requested_by: str | None = None,
        window_start: Any = None,
        window_end: Any = None,
        affected_resources: Iterable[str] = (),
        test_evidence: str | None = None,
        rollback_plan: str | None = None,
        closed_at: Any = None,
    ) -> None:
        """Write a new ticket; ``TicketInputError`` or ``TicketAlreadyExistsError`` write nothing."""
        start = _window_time(window_start, "window_start")
        end = _window_time(window_end, "window_end")
        if start and end and end < start:
            raise TicketInputError(f"window-end {_iso(end)} is before window-start {_iso(start)}")
        item: dict[str, Any] = {
            "ticket_id": {"S": ticket_id},
            "record": {"S": "TICKET"},
            "type": {"S": type},
            "status": {"S": status},
            "created_at": {"S": _now()},
        }
        optional = {
            "title": title,
            "requested_by": requested_by,
            "window_start": _iso(start) if start else None,
            "window_end": _iso(end) if end else None,
            "test_evidence": test_evidence,
            "rollback_plan": rollback_plan,
            "closed_at": _iso(closed_at) if closed_at else None,
        }
        item.update({k: {"S": str(v)} for k, v in optional.items() if v})
        resources = [str(r) for r in affected_resources]
        if resources:
            item["affected_resources"] = {"L": [{"S": r} for r in resources]}
        try:
            self.ddb.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(ticket_id)")
        except self.ddb.exceptions.ConditionalCheckFailedException as exc:
            raise TicketAlreadyExistsError(ticket_id) from exc

    def approve(self, ticket_id: str, *, approved_at: Any = None, approver: str | None = None) -> str:
        """Record an approval by the caller's verified identity; approving twice is a no-op.

        ``approver`` is for seeding fixtures only; the CLI always uses GetCallerIdentity.
        """
        if approver is None:
            if self.sts is None:
                raise ValueError("an STS client is needed to verify the approver")
            approver = str(self.sts.get_caller_identity()["Arn"])
        if self.get(ticket_id) is None:
            raise TicketNotFoundError(ticket_id)
        item = {
            "ticket_id": {"S": ticket_id},
            "record": {"S": f"APPROVAL#{approver}"},
            "approver": {"S": approver},
            "approved_at": {"S": _iso(approved_at) if approved_at else _now()},
        }
        # Approving twice is a no-op: the approval item already exists.
        with contextlib.suppress(self.ddb.exceptions.ConditionalCheckFailedException):
            self.ddb.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(ticket_id)")
        return approver

    def get(self, ticket_id: str) -> Ticket | None:
        resp = self.ddb.query(
            TableName=self.table,
            KeyConditionExpression="ticket_id = :t",
            ExpressionAttributeValues={":t": {"S": ticket_id}},
            ConsistentRead=True,
        )
        return ticket_from_items(resp.get("Items", []))

    def list(self) -> list[Ticket]:
        items: dict[str, list[dict[str, Any]]] = {}
        for page in self.ddb.get_paginator("scan").paginate(TableName=self.table):
            for item in page.get("Items", []):
                items.setdefault(item["ticket_id"]["S"], []).append(item)
        tickets = [ticket_from_items(v) for v in items.values()]
        return sorted((t for t in tickets if t), key=lambda t: t.ticket_id)
