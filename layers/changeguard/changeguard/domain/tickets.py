"""Change tickets as the domain sees them, whatever system they come from."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class _Own(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class TicketType(StrEnum):
    STANDARD = "standard"
    NORMAL = "normal"
    EMERGENCY = "emergency"


class TicketStatus(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    CLOSED = "closed"


class Approval(_Own):
    """One approval. ``approver`` is a verified identity (an STS ARN or the vendor's user id).

    ``aliases`` are the same person's other identities in the ticket system (Jira accountId
    and e-mail address, ServiceNow user name and e-mail), so segregation of duties can match
    whichever of them the actor or the identity map knows.
    """

    approver: str
    approver_name: str | None = None
    approved_at: datetime | None = None
    aliases: tuple[str, ...] = ()


class Ticket(_Own):
    ticket_id: str
    source: str = "dynamodb"
    type: TicketType = TicketType.NORMAL
    status: TicketStatus = TicketStatus.OPEN
    title: str | None = None
    requested_by: str | None = None
    approvals: tuple[Approval, ...] = ()
    window_start: datetime | None = None
    window_end: datetime | None = None
    affected_resources: tuple[str, ...] = ()
    test_evidence: str | None = None
    rollback_plan: str | None = None
    created_at: datetime | None = None
    #: The ticket system's own approval decision, where it keeps one (ServiceNow's ``approval``
    #: field, every JSM approval step approved): its approvers can have approved while the ticket
    #: still waits for another (a CAB member, the next step). None where the approvals are the only
    #: record of approval (the DynamoDB ticket table).
    approved_in_source: bool | None = None
    #: When a CLOSED ticket was closed (ServiceNow ``closed_at``, Jira ``resolutiondate``), if known.
    closed_at: datetime | None = None
    #: Why the ticket's approvals could not be read although the ticket could (JSM's approval API
    #: answering 404: no permission to view the request, or no service desk request): ``approvals``
    #: is then unknown, not empty.
    approvals_error: str | None = None

    @property
    def withdrawn(self) -> bool:
        """Rejected or cancelled: it authorizes nothing, and no approval on it counts."""
        return self.status in (TicketStatus.REJECTED, TicketStatus.CANCELLED)

    @property
    def is_emergency(self) -> bool:
        return self.type is TicketType.EMERGENCY


class TicketRefSource(StrEnum):
    """Where a ticket reference can be found, tried in a configurable order."""

    REQUEST_TAGS = "request_tags"
    SOURCE_IDENTITY = "source_identity"
    SESSION_NAME = "session_name"
    RESOURCE_TAG = "resource_tag"
    STACK_TAG = "stack_tag"


DEFAULT_REF_ORDER: tuple[TicketRefSource, ...] = tuple(TicketRefSource)


class TicketRef(_Own):
    ticket_id: str
    found_in: TicketRefSource


class TicketLookup(_Own):
    """The result of asking the ticket source: found, not found, or unreachable."""

    ticket: Ticket | None = None
    unavailable: bool = False
    error: str | None = None
    # The source answered, but this ticket could not be read (``TicketUnreadableError``).
    unreadable: bool = False
    checked: list[str] = Field(default_factory=list)


def find_ref(text: str | None, pattern: re.Pattern[str]) -> str | None:
    """The first ticket id in ``text`` (tag value, session name, source identity)."""
    if not text:
        return None
    match = pattern.search(text)
    return match.group(0) if match else None
