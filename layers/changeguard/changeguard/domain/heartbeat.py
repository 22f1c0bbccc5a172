"""The heartbeat: a canary sent through the whole path, and an alert when one does not arrive (issue 8).

Every scheduled tick, ``send_heartbeat`` makes one harmless, recognisable write call: it writes the
tick's canary id to the heartbeat parameter (``ssm:PutParameter``, the id also in the description).
CloudTrail records the call and delivers it to EventBridge; the correlator's ``HeartbeatCanary`` rule
hands it to the correlator, which records ``ARRIVED#<id>`` in the ledger. If the trail stops logging,
the bus stops delivering, the ``HeartbeatCanary`` rule is disabled or the correlator cannot write, the
canary never arrives: the next tick past the grace period finds it missing and opens one critical
alert for the outage, and a later canary that arrives closes it with a recovery alert.

The canary is a suite call, which the rules carrying everyone else's changes drop: it cannot show
that one of those is disabled, deleted or stripped of its target. Each tick reads them instead
(:func:`assess_rules`, below). A rule whose pattern was narrowed still delivers something, and the
``PutRule`` that narrowed it may be the very event it no longer matches: each tick also fingerprints
the pattern it read and alerts once when it differs from the last one recorded
(:func:`assess_patterns`).

All heartbeat facts live under one ledger key, :data:`HEARTBEAT_KEY`: ``SENT#<id>`` (the heartbeat),
``ARRIVED#<id>`` (the correlator), ``DOWN#<n>`` and ``UP#<n>`` (outages, numbered).
"""

from __future__ import annotations

import hashlib
import json
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


# -- the rules that carry changes -------------------------------------------------------------------
# The canary proves only the path it takes: CloudTrail, the bus, its own ``HeartbeatCanary`` rule and
# the correlator. The suite's own calls never match the rules that carry everyone else's changes
# (``CloudTrailWriteCalls`` drops them), so a canary cannot travel through those: each tick reads them
# instead, and a rule that would no longer deliver opens an outage of its own, one alert when it
# breaks and one when it is repaired.

#: The ledger key of the watched rules' outages, ``DOWN#<label>#<n>`` and ``UP#<label>#<n>``, and of
#: their pattern baselines, ``PATTERN#<label>#<n>``.
RULES_KEY = "heartbeat:rules"
#: The ``State`` values in which EventBridge matches events against a rule (DescribeRule): ENABLED
#: matches every event but read-only management events from CloudTrail, and
#: ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS matches those too. DISABLED matches nothing.
MATCHING_STATES = frozenset({"ENABLED", "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"})


class WatchedRule(BaseModel):
    """A rule the heartbeat reads each tick: its stable ``label``, its name, the function it must target."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    label: str
    name: str
    target: str

    @classmethod
    def parse(cls, text: str) -> WatchedRule:
        """``<label>:<rule name>:<target ARN>``, as the template writes them (names hold no colon)."""
        label, sep, rest = text.partition(":")
        name, sep2, target = rest.partition(":")
        if not (sep and sep2 and label and name and target.startswith("arn:")):
            raise ValueError(f"a watched rule is <label>:<rule name>:<target ARN>, got {text!r}")
        return cls(label=label, name=name, target=target)

    @property
    def function(self) -> str:
        """The name of the function the rule must target (the last part of :attr:`target`)."""
        return self.target.rsplit(":", 1)[-1]


class RuleReading(BaseModel):
    """What EventBridge says of a watched rule: its ``State`` (None: no such rule) and its targets' ARNs."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    rule: WatchedRule
    state: str | None
    targets: tuple[str, ...] = ()
    #: ``EventPattern`` as DescribeRule returns it (a JSON string; None for a rule with a schedule only).
    pattern: str | None = None

    @property
    def fingerprint(self) -> str | None:
        """The pattern's fingerprint (:func:`pattern_fingerprint`); None for a deleted rule: it has none."""
        return None if self.state is None else pattern_fingerprint(self.pattern)

    @property
    def fault(self) -> str | None:
        """Why the rule no longer delivers to its function, or None when it does."""
        if self.state is None:
            return "does not exist (deleted)"
        if self.state not in MATCHING_STATES:
            return f"is {self.state}: EventBridge matches no event against it"
        if self.rule.target not in self.targets:
            return f"no longer targets {self.rule.target}"
        return None


class RuleFinding(StrEnum):
    HEALTHY = "healthy"
    BROKEN = "broken"  # a new outage of the rule
    STILL_BROKEN = "still-broken"  # an outage already alerted
    REPAIRED = "repaired"  # the rule delivers again after an outage


class RuleAssessment(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    reading: RuleReading
    finding: RuleFinding
    outage: int  # the outage number DOWN/UP are recorded under

    @property
    def alerts(self) -> bool:
        return self.finding in (RuleFinding.BROKEN, RuleFinding.REPAIRED)

    @property
    def entry(self) -> str:
        """The ledger entry this assessment records (``DOWN#``/``UP#``), when it alerts."""
        marker = DOWN if self.finding is RuleFinding.BROKEN else UP
        return f"{marker}{self.reading.rule.label}#{self.outage:06d}"


def assess_rules(readings: Iterable[RuleReading], entries: Iterable[LedgerEntry]) -> list[RuleAssessment]:
    """Judge each watched rule against its outages in the ledger (the entries of :data:`RULES_KEY`)."""
    recorded = [e.entry for e in entries]
    out: list[RuleAssessment] = []
    for reading in readings:
        label = reading.rule.label
        downs = sum(1 for e in recorded if e.startswith(f"{DOWN}{label}#"))
        ups = sum(1 for e in recorded if e.startswith(f"{UP}{label}#"))
        is_open = downs > ups
        if reading.fault is None:
            finding, outage = (RuleFinding.REPAIRED if is_open else RuleFinding.HEALTHY), downs
        elif is_open:
            finding, outage = RuleFinding.STILL_BROKEN, downs
        else:
            finding, outage = RuleFinding.BROKEN, downs + 1
        out.append(RuleAssessment(reading=reading, finding=finding, outage=outage))
    return out


# -- the patterns of those rules ----------------------------------------------------------------------
# A rule can stay enabled and keep its target while matching less: ``PutRule`` with a pattern that
# excludes one principal, or ``events.amazonaws.com`` so the ``PutRule`` itself is never judged.
# Each tick fingerprints the pattern DescribeRule returned and compares it with the last fingerprint
# recorded for that rule: ``PATTERN#<label>#<n>`` under :data:`RULES_KEY`, numbered like the outages,
# so a pattern changed and changed back is two changes, each recorded (and alerted) once.

PATTERN = "PATTERN#"


def pattern_fingerprint(pattern: str | None) -> str:
    """sha256 of the pattern's canonical JSON (keys sorted, no spaces): the same pattern written with
    other spacing or key order is the same pattern. A rule without a pattern hashes ``null``."""
    canonical = json.dumps(None if pattern is None else json.loads(pattern), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class PatternFinding(StrEnum):
    FIRST = "first"  # no fingerprint recorded yet: this one becomes the baseline, no alert
    SAME = "same"
    CHANGED = "changed"  # differs from the baseline: recorded as the new one, one alert
    UNREAD = "unread"  # the rule is deleted: an outage already says so, there is no pattern to compare


class PatternAssessment(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    reading: RuleReading
    finding: PatternFinding
    number: int  # the number of the baseline recorded (FIRST, CHANGED: the one to record)
    previous: str | None = None  # the baseline's fingerprint before this reading

    @property
    def alerts(self) -> bool:
        return self.finding is PatternFinding.CHANGED

    @property
    def records(self) -> bool:
        return self.finding in (PatternFinding.FIRST, PatternFinding.CHANGED)

    @property
    def entry(self) -> str:
        """The ledger entry of the baseline this assessment records."""
        return f"{PATTERN}{self.reading.rule.label}#{self.number:06d}"


def assess_patterns(readings: Iterable[RuleReading], entries: Iterable[LedgerEntry]) -> list[PatternAssessment]:
    """Compare each rule's pattern with its last recorded fingerprint (the entries of :data:`RULES_KEY`)."""
    baselines: dict[str, tuple[str, str]] = {}  # label -> (newest PATTERN# entry, its fingerprint)
    for e in entries:
        if not e.entry.startswith(PATTERN):
            continue
        label = e.entry[len(PATTERN) :].rsplit("#", 1)[0]
        if label not in baselines or e.entry > baselines[label][0]:  # numbers are zero-padded
            baselines[label] = (e.entry, str(e.body.get("fingerprint")))
    out: list[PatternAssessment] = []
    for reading in readings:
        label = reading.rule.label
        last = baselines.get(label)
        number = int(last[0].rsplit("#", 1)[1]) if last else 0
        previous = last[1] if last else None
        fingerprint = reading.fingerprint
        if fingerprint is None:
            finding = PatternFinding.UNREAD
        elif previous is None:
            finding, number = PatternFinding.FIRST, number + 1
        elif fingerprint == previous:
            finding = PatternFinding.SAME
        else:
            finding, number = PatternFinding.CHANGED, number + 1
        out.append(PatternAssessment(reading=reading, finding=finding, number=number, previous=previous))
    return out
