"""ServiceNow as a ticket source, through the Table API (two documented calls, cached per invocation).

* ``GET /api/now/table/change_request?sysparm_query=number=CHG0000001`` - the change: ``type``
  (emergency), ``state``, ``approval`` (its own decision), ``closed_at``, ``start_date``/``end_date``,
  ``test_plan``, ``backout_plan`` and, where configured, a field listing the affected resources.
* ``GET /api/now/table/sysapproval_approver?sysparm_query=sysapproval=<sys_id>^state=approved`` -
  who approved, dot-walked to the approver's ``user_name`` and ``email``.

Values come back as stored (``sysparm_display_value=false``): date-times in UTC as
``2026-11-21 08:00:00``, ``state`` as its number, references as sys_ids.
"""

from __future__ import annotations

import re
from typing import Any

from changeguard.adapters._ticket_fields import items_of, parse_time, text_of
from changeguard.adapters.http import HttpSourceOptions, HttpTicketSource
from changeguard.domain.errors import TicketSourceUnavailableError, TicketUnreadableError
from changeguard.domain.tickets import Approval, Ticket, TicketStatus, TicketType

_SYS_ID = re.compile(r"[0-9a-f]{32}")
# change_request.state (Washington DC and later): -5 New, -4 Assess, -3 Authorize, -2 Scheduled,
# -1 Implement, 0 Review, 3 Closed, 4 Canceled.
_CLOSED_STATES = frozenset({"3", "closed"})
_CANCELLED_STATES = frozenset({"4", "canceled", "cancelled"})
APPROVER_FIELDS = "approver.user_name,approver.email,approver.name,state,sys_updated_on"


class ServiceNowOptions(HttpSourceOptions):
    """``TICKET_SOURCE_OPTIONS`` for ServiceNow (JSON): column names of ``change_request``.

    The defaults are the out-of-the-box columns; ``affected_resources`` names a column (often a
    custom ``u_...`` one) that lists resource ARNs, separated by commas or new lines.
    """

    window_start: str = "start_date"
    window_end: str = "end_date"
    test_evidence: str = "test_plan"
    rollback_plan: str = "backout_plan"
    affected_resources: str | None = None
    emergency_types: tuple[str, ...] = ("emergency",)
    standard_types: tuple[str, ...] = ("standard",)

    @property
    def change_fields(self) -> str:
        names = [
            "sys_id",
            "number",
            "type",
            "state",
            "approval",
            "short_description",
            "requested_by.user_name",
            "requested_by.email",
            "sys_created_on",
            "closed_at",
            self.window_start,
            self.window_end,
            self.test_evidence,
            self.rollback_plan,
        ]
        if self.affected_resources:
            names.append(self.affected_resources)
        return ",".join(dict.fromkeys(names))


class ServiceNowTicketSource(HttpTicketSource[ServiceNowOptions]):
    """Tickets are change requests (``CHG0000001``); approvers are ``sysapproval_approver`` records."""

    name = "servicenow"
    label = "ServiceNow"
    options_model = ServiceNowOptions

    def _fetch(self, number: str) -> Ticket | None:
        body = self.http.get(
            "/api/now/table/change_request",
            {
                "sysparm_query": f"number={number}",
                "sysparm_fields": self.options.change_fields,
                "sysparm_exclude_reference_link": "true",
                "sysparm_display_value": "false",
                "sysparm_limit": "1",
            },
        )
        records = _result(body, "change_request")
        if not records:
            return None
        record = records[0]
        sys_id = str(record.get("sys_id", ""))
        if _SYS_ID.fullmatch(sys_id) is None:
            raise TicketUnreadableError(f"servicenow: change {number} has no valid sys_id")
        return self._ticket(number, record, self._approvals(sys_id))

    def _approvals(self, sys_id: str) -> tuple[Approval, ...]:
        body = self.http.get(
            "/api/now/table/sysapproval_approver",
            {
                "sysparm_query": f"sysapproval={sys_id}^state=approved",
                "sysparm_fields": APPROVER_FIELDS,
                "sysparm_exclude_reference_link": "true",
                "sysparm_display_value": "false",
                "sysparm_limit": "100",
            },
        )
        out: list[Approval] = []
        for row in _result(body, "sysapproval_approver"):
            if str(row.get("state", "")).lower() != "approved":
                continue  # the query filters already; a record that says otherwise does not count
            identities = [
                str(row[k]).strip() for k in ("approver.email", "approver.user_name") if row.get(k) not in (None, "")
            ]
            if not identities:
                continue
            # The record has no column for the decision's time: sys_updated_on (its last update) is
            # never earlier than the decision, so an approval edited since looks later, never earlier.
            out.append(
                Approval(
                    approver=identities[0],
                    approver_name=text_of(row.get("approver.name")),
                    approved_at=parse_time(row.get("sys_updated_on"), "approval sys_updated_on"),
                    aliases=tuple(dict.fromkeys(identities[1:])),
                )
            )
        return tuple(out)

    def _ticket(self, number: str, record: dict[str, Any], approvals: tuple[Approval, ...]) -> Ticket:
        opts = self.options
        change_type = (text_of(record.get("type")) or "").lower()
        if change_type in {t.lower() for t in opts.emergency_types}:
            kind = TicketType.EMERGENCY
        elif change_type in {t.lower() for t in opts.standard_types}:
            kind = TicketType.STANDARD
        else:
            kind = TicketType.NORMAL
        state = (text_of(record.get("state")) or "").lower()
        approval = (text_of(record.get("approval")) or "").lower()
        if approval == "rejected":
            status = TicketStatus.REJECTED
        elif state in _CANCELLED_STATES:
            status = TicketStatus.CANCELLED
        elif state in _CLOSED_STATES:
            status = TicketStatus.CLOSED
        elif approval == "approved":
            status = TicketStatus.APPROVED
        else:
            status = TicketStatus.OPEN
        return Ticket(
            ticket_id=text_of(record.get("number")) or number,
            source=self.name,
            type=kind,
            status=status,
            title=text_of(record.get("short_description")),
            requested_by=text_of(record.get("requested_by.email")) or text_of(record.get("requested_by.user_name")),
            approvals=approvals,
            window_start=parse_time(record.get(opts.window_start), f"{number} {opts.window_start}"),
            window_end=parse_time(record.get(opts.window_end), f"{number} {opts.window_end}", end_of_day=True),
            affected_resources=items_of(record.get(opts.affected_resources)) if opts.affected_resources else (),
            test_evidence=text_of(record.get(opts.test_evidence)),
            rollback_plan=text_of(record.get(opts.rollback_plan)),
            created_at=parse_time(record.get("sys_created_on"), f"{number} sys_created_on"),
            # approval: not requested, requested, approved, rejected (the change's own decision).
            approved_in_source=approval == "approved",
            closed_at=parse_time(record.get("closed_at"), f"{number} closed_at"),
        )


def _result(body: Any, table: str) -> list[dict[str, Any]]:
    """The Table API's ``{"result": [...]}``; a 404 (no such table or record) is an empty result."""
    if body is None:
        return []
    result = body.get("result") if isinstance(body, dict) else None
    if not isinstance(result, list):
        raise TicketSourceUnavailableError(f"servicenow: unexpected {table} body")
    return [r for r in result if isinstance(r, dict)]
