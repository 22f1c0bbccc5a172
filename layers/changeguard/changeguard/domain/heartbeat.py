"""The heartbeat: a canary sent through the whole path, and an alert when one does not arrive (issue 8).

Every scheduled tick, ``send_heartbeat`` makes one harmless, recognisable write call: it writes the
tick's canary id to the heartbeat parameter (``ssm:PutParameter``, the id also in the description).
CloudTrail records the call and delivers it to EventBridge; the correlator's ``HeartbeatCanary`` rule
hands it to the correlator, which records ``ARRIVED#<id>`` in the ledger. If the trail stops logging,
the bus stops delivering, a rule is disabled or the correlator cannot write, the canary never arrives:
the next tick past the grace period finds it missing and opens one critical alert for the outage,
and a later canary that arrives closes it with a recovery alert.

All heartbeat facts live under one ledger key, :data:`HEARTBEAT_KEY`: ``SENT#<id>`` (the heartbeat),
``ARRIVED#<id>`` (the correlator), ``DOWN#<n>`` and ``UP#<n>`` (outages, numbered).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from changeguard.domain.ledger import LedgerEntry
from changeguard.models.cloudtrail import CloudTrailRecord

HEARTBEAT_KEY = "heartbeat"
CANARY_DESCRIPTION = "ChangeGuard heartbeat canary "
SENT, ARRIVED, DOWN, UP = "SENT#", "ARRIVED#", "DOWN#", "UP#"


def canary_id(tick: datetime) -> str:
    """The canary of a scheduled tick: its time, so a redelivered tick sends the same canary."""
    return tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canary_of(record: CloudTrailRecord, parameter_name: str, suite_role_prefixes: Iterable[str]) -> str | None:
    """The canary id when ``record`` is the heartbeat's own canary call, else ``None``.

    Only the suite's roles send canaries: anyone else writing the heartbeat parameter is changing
    the suite (self-protection judges that call like any other).
    """
    if record.eventSource != "ssm.amazonaws.com" or record.eventName != "PutParameter" or record.errorCode:
        return None
    params: dict[str, Any] = record.requestParameters or {}
    if params.get("name") != parameter_name:
        return None
    ctx = record.userIdentity.sessionContext
    issuer = ctx.sessionIssuer.arn if ctx and ctx.sessionIssuer else None
    if not issuer or not any(p and issuer.startswith(p) for p in suite_role_prefixes):
        return None
    description = params.get("description")
    if not isinstance(description, str) or not description.startswith(CANARY_DESCRIPTION):
        return None
    return description[len(CANARY_DESCRIPTION) :].strip() or None


class Finding(StrEnum):
    WAITING = "waiting"  # no canary is due yet (the first ticks)
    HEALTHY = "healthy"
    MISSING = "missing"  # the due canary has not arrived: a new outage
    STILL_MISSING = "still-missing"  # an outage already alerted
    RECOVERED = "recovered"  # a canary arrived again after an outage


class Assessment(BaseModel):
    """What the heartbeat concludes from its ledger entries at ``now``."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    finding: Finding
    canary: str | None = None  # the canary due (missing, or the one that arrived)
    sent_at: datetime | None = None
    outage: int = 0  # the outage number DOWN/UP are recorded under
    last_arrival: datetime | None = None

    @property
    def alerts(self) -> bool:
        return self.finding in (Finding.MISSING, Finding.RECOVERED)


def assess(entries: Iterable[LedgerEntry], now: datetime, grace: timedelta) -> Assessment:
    """Judge the path from the heartbeat's entries: has the latest canary that is due arrived?

    A canary is due once ``grace`` has passed since it was sent (CloudTrail delivers to EventBridge
    within minutes, best effort). The path works if that canary, or any sent after it, has arrived.
    """
    sent: dict[str, datetime] = {}
    arrived: dict[str, datetime] = {}
    downs = ups = 0
    for e in entries:
        if e.entry.startswith(SENT):
            sent[e.entry[len(SENT) :]] = e.event_time
        elif e.entry.startswith(ARRIVED):
            arrived[e.entry[len(ARRIVED) :]] = e.recorded_at
        elif e.entry.startswith(DOWN):
            downs += 1
        elif e.entry.startswith(UP):
            ups += 1
    last_arrival = max(arrived.values(), default=None)
    due = sorted(((at, c) for c, at in sent.items() if at <= now - grace), reverse=True)
    if not due:
        return Assessment(finding=Finding.WAITING, outage=downs, last_arrival=last_arrival)
    due_at, due_id = due[0]
    healthy = any(c in arrived for c, at in sent.items() if at >= due_at)
    is_open = downs > ups
    if healthy:
        finding = Finding.RECOVERED if is_open else Finding.HEALTHY
        return Assessment(finding=finding, canary=due_id, sent_at=due_at, outage=downs, last_arrival=last_arrival)
    if is_open:
        return Assessment(
            finding=Finding.STILL_MISSING, canary=due_id, sent_at=due_at, outage=downs, last_arrival=last_arrival
        )
    return Assessment(
        finding=Finding.MISSING, canary=due_id, sent_at=due_at, outage=downs + 1, last_arrival=last_arrival
    )
