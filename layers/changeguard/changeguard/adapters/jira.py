"""Jira Service Management as a ticket source.

Two documented calls per ticket (cached within an invocation):

* ``GET /rest/api/{3|2}/issue/{key}?fields=...`` - the change: type, status, reporter, when it
  was resolved (``resolutiondate``) and the custom fields named in configuration (scheduled
  window, affected resources, test evidence, rollback plan, change type). Field ids differ per
  site (``customfield_10061``...), hence configuration (``TICKET_SOURCE_OPTIONS``, see
  :class:`JiraOptions`).
* ``GET /rest/servicedeskapi/request/{key}/approval`` - the approvals, each with its approvers and
  their ``approverDecision``; only approvers who decided ``approved`` count, and the request is
  approved only when every approval's ``finalDecision`` is ``approved``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Literal

from changeguard.adapters._ticket_fields import items_of, parse_time, text_of
from changeguard.adapters.http import HttpSourceOptions, HttpTicketSource
from changeguard.domain.errors import TicketSourceUnavailableError
from changeguard.domain.tickets import Approval, Ticket, TicketStatus, TicketType

MAX_APPROVAL_PAGES = 10


class JiraOptions(HttpSourceOptions):
    """``TICKET_SOURCE_OPTIONS`` for Jira (JSON). Values are Jira field ids, e.g.
    ``{"window_start": "customfield_10061", "window_end": "customfield_10062",
    "affected_resources": "customfield_10070", "test_evidence": "customfield_10071",
    "rollback_plan": "customfield_10072", "change_type": "customfield_10005"}``.

    A field left unset is absent from every ticket: without test evidence and rollback plan
    fields every change is INCOMPLETE_TICKET, which is the point.
    """

    api_version: Literal["2", "3"] = "3"
    window_start: str | None = None
    window_end: str | None = None
    affected_resources: str | None = None
    test_evidence: str | None = None
    rollback_plan: str | None = None
    change_type: str | None = None
    emergency_values: tuple[str, ...] = ("Emergency",)
    standard_values: tuple[str, ...] = ("Standard",)
    emergency_issue_types: tuple[str, ...] = ("Emergency Change",)
    rejected_statuses: tuple[str, ...] = ("Declined", "Rejected")
    cancelled_statuses: tuple[str, ...] = ("Canceled", "Cancelled")

    @property
    def custom_fields(self) -> tuple[str, ...]:
        named = (
            self.window_start,
            self.window_end,
            self.affected_resources,
            self.test_evidence,
            self.rollback_plan,
            self.change_type,
        )
        return tuple(dict.fromkeys(f for f in named if f))


def _lower(values: tuple[str, ...]) -> set[str]:
    return {v.strip().lower() for v in values}


class JiraTicketSource(HttpTicketSource[JiraOptions]):
    """Tickets are Jira issues (``CHG-1234``, ``OPS-77``); approvals come from JSM's approval API."""

    name = "jira"
    label = "Jira"
    options_model = JiraOptions

    # -- the two calls ---------------------------------------------------------------------------
    def _fetch(self, key: str) -> Ticket | None:
        quoted = urllib.parse.quote(key, safe="")
        fields = ",".join(
            ("summary", "status", "issuetype", "reporter", "created", "resolutiondate", *self.options.custom_fields)
        )
        issue = self.http.get(f"/rest/api/{self.options.api_version}/issue/{quoted}", {"fields": fields})
        if issue is None:
            return None
        if not isinstance(issue, dict) or not isinstance(issue.get("fields"), dict):
            raise TicketSourceUnavailableError(f"jira: unexpected issue body for {key}")
        approvals, declined, all_approved = self._approvals(quoted)
        if approvals is None:
            # Jira answers 404 both for "no such request" and for "you may not see it": the issue
            # was readable, so its approvals are unknown, not absent.
            error = (
                f"jira: the approvals of {key} could not be read (the JSM approval API answered 404:"
                " ChangeGuard's account may not view the request, or the issue is no service desk request)"
            )
            return self._ticket(key, issue["fields"], (), declined=False, all_approved=False, approvals_error=error)
        return self._ticket(key, issue["fields"], approvals, declined=declined, all_approved=all_approved)

    def _approvals(self, quoted_key: str) -> tuple[tuple[Approval, ...] | None, bool, bool]:
        """The approvers who approved, whether the request stands declined, whether it is approved;
        ``None`` for the approvers when the approval API answers 404.

        The API lists every approval step the request has been through. A declined step sends it
        back through its workflow, and the approval it then gets is a new round of steps: a decline
        counts while it is the request's last decision, and only the steps after the last decline
        (the current round) approve it, with their approvers.
        """
        steps: list[tuple[str, list[Approval]]] = []
        start = 0
        for _ in range(MAX_APPROVAL_PAGES):
            page = self.http.get(
                f"/rest/servicedeskapi/request/{quoted_key}/approval", {"start": str(start), "limit": "50"}
            )
            if page is None:
                return None, False, False
            values = page.get("values") if isinstance(page, dict) else None
            if not isinstance(values, list):
                raise TicketSourceUnavailableError("jira: unexpected approvals body")
            for approval in values:
                if not isinstance(approval, dict):
                    continue
                steps.append((str(approval.get("finalDecision") or "pending").lower(), _approved_by(approval)))
            if page.get("isLastPage", True) or not values:
                break
            start += len(values)
        if steps and steps[-1][0] == "declined":
            return tuple(a for a in steps[-1][1]), True, False
        last_decline = max((i for i, (decision, _) in enumerate(steps) if decision == "declined"), default=-1)
        current = steps[last_decline + 1 :]
        found = tuple(a for _, approvers in current for a in approvers)
        all_approved = bool(current) and all(decision == "approved" for decision, _ in current)
        return found, False, all_approved

    # -- mapping -------------------------------------------------------------------------------
    def _ticket(
        self,
        key: str,
        fields: dict[str, Any],
        approvals: tuple[Approval, ...],
        *,
        declined: bool,
        all_approved: bool,
        approvals_error: str | None = None,
    ) -> Ticket:
        opts = self.options

        def field(name: str | None) -> Any:
            return fields.get(name) if name else None

        issue_type = (text_of(fields.get("issuetype")) or "").lower()
        change_type = (text_of(field(opts.change_type)) or "").lower()
        if issue_type in _lower(opts.emergency_issue_types) or change_type in _lower(opts.emergency_values):
            kind = TicketType.EMERGENCY
        elif change_type in _lower(opts.standard_values):
            kind = TicketType.STANDARD
        else:
            kind = TicketType.NORMAL
        status_field = _dict(fields.get("status"))
        status_name = (text_of(status_field.get("name")) or "").lower()
        category = str(_dict(status_field.get("statusCategory")).get("key", "")).lower()
        if status_name in _lower(opts.rejected_statuses) or declined:
            status = TicketStatus.REJECTED
        elif status_name in _lower(opts.cancelled_statuses):
            status = TicketStatus.CANCELLED
        elif category == "done":
            status = TicketStatus.CLOSED
        elif all_approved:
            status = TicketStatus.APPROVED
        else:
            status = TicketStatus.OPEN
        reporter = _dict(fields.get("reporter"))
        return Ticket(
            ticket_id=key,
            source=self.name,
            type=kind,
            status=status,
            title=text_of(fields.get("summary")),
            requested_by=text_of(reporter.get("emailAddress")) or text_of(reporter.get("accountId")),
            approvals=approvals,
            window_start=parse_time(field(opts.window_start), f"{key} {opts.window_start}"),
            window_end=parse_time(field(opts.window_end), f"{key} {opts.window_end}", end_of_day=True),
            affected_resources=items_of(field(opts.affected_resources)),
            test_evidence=text_of(field(opts.test_evidence)),
            rollback_plan=text_of(field(opts.rollback_plan)),
            created_at=parse_time(fields.get("created"), f"{key} created"),
            approved_in_source=None if approvals_error else all_approved,
            approvals_error=approvals_error,
            closed_at=parse_time(fields.get("resolutiondate"), f"{key} resolutiondate"),
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _approved_by(approval: dict[str, Any]) -> list[Approval]:
    """One ``Approval`` per approver whose own decision is ``approved``.

    Its time is the step's ``completedDate`` (JSM gives no time per approver): never earlier than
    the approver's decision, and absent while the step is pending, so such an approval is not yet
    counted as given before a change."""
    completed = approval.get("completedDate")
    at = parse_time(completed.get("iso8601"), "approval completedDate") if isinstance(completed, dict) else None
    out: list[Approval] = []
    for entry in approval.get("approvers") or []:
        if not isinstance(entry, dict) or str(entry.get("approverDecision", "")).lower() != "approved":
            continue
        user = _dict(entry.get("approver"))
        # Cloud: accountId (+ emailAddress when the profile shows it); Data Center: name/key.
        identities = [
            str(user[k]).strip() for k in ("emailAddress", "accountId", "name", "key") if user.get(k) not in (None, "")
        ]
        if not identities:
            continue
        out.append(
            Approval(
                approver=identities[0],
                approver_name=text_of(user.get("displayName")),
                approved_at=at,
                aliases=tuple(dict.fromkeys(identities[1:])),
            )
        )
    return out
