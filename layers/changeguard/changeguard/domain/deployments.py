"""Deployment guard decisions: what to stop, what to roll back, whether a deployment is healthy.

Pure: the service hands in what the adapters read (deployments, metric values, earlier stops, the
time) and carries out the decisions that come back. Each decision names the deployment, the
action, the trigger and the evidence, which is what the ledger records and the alert explains.

* **Alarm -> deployments.** A firing alarm concerns the deployment groups that watch it. Each
  in-flight deployment of those groups is stopped with automatic rollback, except rollbacks
  themselves (no ping-pong) and deployments that are not releases (EC2 Auto Scaling's and
  CodeDeploy's auto-updates, :data:`NOT_RELEASE_CREATORS`). When the group's latest release is not
  in flight and succeeded less than ``bake_minutes`` before the alarm fired, its predecessor's
  revision is redeployed: ``StopDeployment`` cannot stop a finished deployment.
* **Health.** Error rate above 1 % and p99 latency above twice the pre-deployment baseline (both
  configurable per group), from metric values the service fetched for the windows
  :func:`health_plan` names. A criterion without data is "not evaluable", never a breach.
* **Stop cap.** At most ``max_stops_per_app_hour`` stops and rollbacks per application in any
  hour, so a broken alarm cannot halt every release.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from changeguard.domain.errors import ChangeGuardError
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.partition import is_region

IN_FLIGHT = frozenset({"Created", "Queued", "InProgress", "Baking", "Ready"})
FINISHED = frozenset({"Succeeded", "Failed", "Stopped"})
#: ``creator`` values of deployments a rollback process made (``codeDeployRollback`` is the
#: documented one; the others are tolerated spellings and CloudFormation's own rollbacks).
ROLLBACK_CREATORS = frozenset({"codeDeployRollback", "autoRollback", "CloudFormationRollback"})
#: ``creator`` values of deployments that are not releases: CodeDeploy made them to put the group's
#: current revision on instances EC2 Auto Scaling launched (``autoscaling``) or is terminating
#: (``autoscalingTermination``), or on outdated instances (``CodeDeployAutoUpdate``). Nothing new
#: ships, so no gate or guard stops them: a failed scale-out deployment shuts its new instance down.
NOT_RELEASE_CREATORS = frozenset({"autoscaling", "autoscalingTermination", "CodeDeployAutoUpdate"})
#: Description prefix of the redeploys ChangeGuard creates. Only a claim: anyone allowed
#: ``CreateDeployment`` writes the description, so a redeploy is ChangeGuard's only when the ledger
#: says so (:func:`redeploy_mark`).
REDEPLOY_MARKER = "ChangeGuard rollback of "
#: How long the guard's ``ROLLBACK`` intent without its result stands for a redeploy under way: the
#: guard's timeout (60 s) and Lambda's two retries (1 and 2 min later), with room. Older, it is dead.
REDEPLOY_PENDING = timedelta(minutes=10)
#: Alarm tag naming the deployment groups an alarm guards: ``app/group`` (comma-separated for more).
GROUP_TAG = "changeguard:deployment-group"
#: Ledger verdict of a stopped or rolled-back deployment: a failed change (the change failure rate's numerator).
FAILED_CHANGE = "FAILED_CHANGE"
CAP_WINDOW = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DESCRIPTION_MAX = 256


class StopCapContentionError(ChangeGuardError):  # type: ignore[misc]  # mypy sees the import as Any
    """Concurrent stops kept taking the cap's next slot; retrying the event will succeed."""


class RedeployMarkPendingError(ChangeGuardError):  # type: ignore[misc]  # mypy sees the import as Any
    """The guard is still redeploying and has not marked its redeploy yet; retrying the event will tell."""


class _Own(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


Scalar = str | int | float | bool | None


# --- what the guard looks at ---------------------------------------------------------------------


class GroupRef(_Own):
    """One deployment group, ``application/group``."""

    application: str
    group: str

    @property
    def key(self) -> str:
        return f"{self.application}/{self.group}"

    @classmethod
    def parse(cls, value: str) -> GroupRef:
        application, sep, group = value.strip().partition("/")
        if not sep or not application or not group:
            raise ValueError(f"{value!r} is not application/group")
        return cls(application=application, group=group)


def groups_from_tag(value: str | None) -> tuple[GroupRef, ...]:
    """The groups an alarm's ``changeguard:deployment-group`` tag names (malformed items are skipped)."""
    refs: list[GroupRef] = []
    for item in re.split(r"[,\s]+", value or ""):
        if "/" in item:
            try:
                refs.append(GroupRef.parse(item))
            except ValueError:
                continue
    return tuple(refs)


class DeploymentGroup(_Own):
    """What the guard needs of a deployment group: the alarms CodeDeploy watches for it."""

    application: str
    group: str
    alarms: tuple[str, ...] = ()
    alarms_enabled: bool = False

    @property
    def ref(self) -> GroupRef:
        return GroupRef(application=self.application, group=self.group)


class RedeployMark(StrEnum):
    """What the ledger says of a deployment whose description carries :data:`REDEPLOY_MARKER`."""

    MARKED = "marked"  # the guard's mark (or its ROLLBACK#<id> result) names this deployment
    PENDING = "pending"  # the guard's redeploy of the claimed deployment is under way, its result not yet written
    UNMARKED = "unmarked"  # the ledger holds no such redeploy: the description is only a claim


class Deployment(_Own):
    """One CodeDeploy deployment, as ``GetDeployment`` describes it."""

    deployment_id: str
    application: str
    group: str
    status: str
    creator: str | None = None
    description: str | None = None
    revision: dict[str, Any] = Field(default_factory=dict)
    previous_revision: dict[str, Any] | None = None
    create_time: datetime | None = None
    start_time: datetime | None = None
    complete_time: datetime | None = None
    rollback_deployment_id: str | None = None
    rolled_back_from: str | None = None
    compute_platform: str | None = None
    #: Set by the service from the ledger when the description carries the marker.
    redeploy_mark: RedeployMark | None = None

    @property
    def ref(self) -> GroupRef:
        return GroupRef(application=self.application, group=self.group)

    @property
    def change_id(self) -> str:
        return change_id_of(self.deployment_id)

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT

    @property
    def started_at(self) -> datetime | None:
        return self.start_time or self.create_time


def change_id_of(deployment_id: str) -> str:
    """The ledger's change id of a deployment."""
    return f"codedeploy:{deployment_id}"


class AlarmSignal(_Own):
    """An alarm state change, whichever of the three shapes brought it."""

    alarm_name: str
    alarm_arn: str | None = None
    state: str
    previous_state: str | None = None
    reason: str | None = None
    reason_data: dict[str, Any] | None = None
    changed_at: datetime
    account: str
    region: str
    shape: Literal["eventbridge", "lambda-action", "sns"]
    event_id: str | None = None

    @property
    def firing(self) -> bool:
        return self.state == "ALARM"

    def evidence(self) -> dict[str, Scalar]:
        """The values the alarm decided on. Metric-math and anomaly alarms have no threshold."""
        out: dict[str, Scalar] = {"alarm": self.alarm_name, "alarm.state": self.state}
        data = self.reason_data or {}
        if isinstance(data.get("threshold"), int | float):
            out["alarm.threshold"] = float(data["threshold"])
        points = data.get("recentDatapoints")
        if isinstance(points, list) and points:
            out["alarm.recent_datapoints"] = ", ".join(
                f"{p:g}" if isinstance(p, int | float) else str(p) for p in points
            )
        if data.get("statistic"):
            out["alarm.statistic"] = str(data["statistic"])
        return out


def parse_reason_data(value: Any) -> dict[str, Any] | None:
    """``reasonData`` is a JSON string in every shape; a malformed one is dropped, not fatal."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


# --- rollbacks, tickets ------------------------------------------------------------------------


_TRUSTED = frozenset({RedeployMark.MARKED, RedeployMark.PENDING})


def claims_redeploy(description: str | None) -> bool:
    """Whether a description claims the deployment is ChangeGuard's redeploy (a claim, not a proof)."""
    return (description or "").startswith(REDEPLOY_MARKER)


def redeploy_mark(
    deployment_id: str, marks: Sequence[LedgerEntry], original: Sequence[LedgerEntry], now: datetime
) -> RedeployMark:
    """Whether the ledger holds the guard's redeploy ``deployment_id``, whose description claims it.

    ``marks`` are the ledger's entries under the deployment's bare id, where the guard marks its
    redeploy (``ROLLBACK#<function>``); ``original`` those under the change id of the deployment the
    description names, where the guard writes its ``ROLLBACK`` intent before ``CreateDeployment``
    and its ``ROLLBACK#<redeployId>`` result right after. An intent without a result, recent enough
    for the guard to be still at it, is PENDING: the redeploy's own events can arrive first.
    """
    if any(e.kind is EntryKind.ROLLBACK and e.entry.startswith("ROLLBACK#") for e in marks):
        return RedeployMark.MARKED
    results = [e for e in original if e.kind is EntryKind.ROLLBACK and e.entry.startswith("ROLLBACK#")]
    if any(e.entry == f"ROLLBACK#{deployment_id}" for e in results):
        return RedeployMark.MARKED
    intent = next((e for e in original if e.kind is EntryKind.ROLLBACK and e.entry == "ROLLBACK"), None)
    if intent is not None and not results and now - intent.recorded_at < REDEPLOY_PENDING:
        return RedeployMark.PENDING
    return RedeployMark.UNMARKED


def read_redeploy_mark(
    entries_for: Callable[[str], Sequence[LedgerEntry]], deployment_id: str, description: str | None, now: datetime
) -> RedeployMark | None:
    """:func:`redeploy_mark` from the ledger (``entries_for``), or None when the description claims
    nothing: the two entry lists it weighs, under the deployment and under the one it claims to roll back."""
    if not claims_redeploy(description):
        return None
    claimed = claimed_rollback_of(description)
    original = entries_for(change_id_of(claimed)) if claimed else []
    return redeploy_mark(deployment_id, entries_for(deployment_id), original, now)


def unmarked_redeploy(deployment_id: str) -> str:
    """Why a deployment whose description claims to be ChangeGuard's redeploy is judged as a release."""
    return (
        f"{deployment_id}'s description claims it is ChangeGuard's rollback ('{REDEPLOY_MARKER}...'), but the"
        " ledger holds no such redeploy: a description is not proof, it is judged as a release"
    )


def rollback_reason(deployment: Deployment) -> str | None:
    """Why ``deployment`` is a rollback (and must never be stopped), or None."""
    if deployment.rolled_back_from:
        return f"it rolls back {deployment.rolled_back_from} (rollbackInfo)"
    if deployment.creator in ROLLBACK_CREATORS:
        return f"a rollback process created it (creator {deployment.creator})"
    if claims_redeploy(deployment.description) and deployment.redeploy_mark in _TRUSTED:
        return "ChangeGuard created it to roll back a regression"
    return None


def marker_note(deployment: Deployment) -> str | None:
    """The note that ``deployment`` claims the marker without the ledger's mark, or None."""
    if claims_redeploy(deployment.description) and rollback_reason(deployment) is None:
        return unmarked_redeploy(deployment.deployment_id)
    return None


def is_rollback(deployment: Deployment) -> bool:
    return rollback_reason(deployment) is not None


def not_a_release(creator: str | None) -> str | None:
    """Why a deployment CodeDeploy created as ``creator`` is not a release, or None when it may be one.

    Such a deployment redeploys the group's current revision to new or outdated instances: it is
    never stopped, never failed, never taken for "the latest release" and takes no stop-cap slot.
    """
    if creator not in NOT_RELEASE_CREATORS:
        return None
    what = {
        "autoscaling": "EC2 Auto Scaling launched instances",
        "autoscalingTermination": "EC2 Auto Scaling is terminating instances",
        "CodeDeployAutoUpdate": "CodeDeploy found outdated instances",
    }[creator]
    return f"not a release: {what} and CodeDeploy deploys the group's current revision to them (creator {creator})"


def is_release(deployment: Deployment) -> bool:
    """A deployment that ships a revision: neither a rollback nor one that is not a release."""
    return not is_rollback(deployment) and not_a_release(deployment.creator) is None


_MARKED = re.compile(re.escape(REDEPLOY_MARKER) + r"(d-[A-Za-z0-9]+)")


def claimed_rollback_of(description: str | None) -> str | None:
    """The deployment a description's marker names (a claim, whatever the ledger says)."""
    match = _MARKED.match(description or "")
    return match.group(1) if match else None


def rollback_of(deployment: Deployment) -> str | None:
    """The deployment this one rolls back: CodeDeploy's ``rollbackInfo``, or ChangeGuard's marked redeploy."""
    if deployment.rolled_back_from:
        return deployment.rolled_back_from
    return claimed_rollback_of(deployment.description) if deployment.redeploy_mark in _TRUSTED else None


def redeploy_description(deployment: Deployment, ticket_id: str | None) -> str:
    """The description of ChangeGuard's redeploy: the marker, the deployment it undoes, the ticket."""
    text = f"{REDEPLOY_MARKER}{deployment.deployment_id}"
    if ticket_id:
        text += f" ({ticket_id})"
    text += ": regression inside the bake window; redeploying the last known good revision."
    return text[:_DESCRIPTION_MAX]


def find_ticket(
    deployment: Deployment,
    pattern: re.Pattern[str],
    *,
    tags: Iterable[Mapping[str, str]] = (),
    tag_key: str = "ChangeTicket",
) -> tuple[str, str] | None:
    """The deployment's change ticket and where it was found: description, revision, then tags."""
    for where, text in (
        ("description", deployment.description or ""),
        ("revision", json.dumps(deployment.revision, sort_keys=True) if deployment.revision else ""),
    ):
        match = pattern.search(text)
        if match:
            return match.group(0), where
    for tag_set in tags:
        match = pattern.search(tag_set.get(tag_key, ""))
        if match:
            return match.group(0), "tags"
    return None


# --- health --------------------------------------------------------------------------------------

_STAT = re.compile(r"^(SampleCount|Sum|Average|Minimum|Maximum|p\d{1,2}(\.\d+)?)$")


class MetricSpec(_Own):
    """One CloudWatch metric: namespace, name and its exact dimension set."""

    namespace: str
    name: str
    dimensions: dict[str, str] = Field(default_factory=dict)
    unit: str | None = None


class ErrorRateCriterion(_Own):
    """Sum(errors) / Sum(requests) over the window, in percent, must not exceed ``max_percent``."""

    errors: MetricSpec
    requests: MetricSpec
    max_percent: float = Field(default=1.0, gt=0)


class LatencyCriterion(_Own):
    """A latency percentile must not exceed ``max_baseline_ratio`` times its pre-deployment value."""

    metric: MetricSpec
    stat: str = "p99"
    max_baseline_ratio: float = Field(default=2.0, gt=0)

    @field_validator("stat")
    @classmethod
    def _known(cls, value: str) -> str:
        if not _STAT.match(value):
            raise ValueError(f"unsupported statistic {value!r}")
        return value


class HealthCriteria(_Own):
    """A deployment group's health criteria (the ``health-criteria`` parameter maps groups to these).

    Evaluated ``delay_minutes`` after the deployment starts and whenever an alarm fires, over the
    last ``window_minutes``; the latency baseline is the ``baseline_minutes`` before the start.
    ``delay_minutes`` 0 means as soon as the start's minute is over: the window is whole minutes.
    """

    delay_minutes: int = Field(default=5, ge=0)
    window_minutes: int = Field(default=5, ge=1)
    baseline_minutes: int = Field(default=60, ge=1)
    error_rate: ErrorRateCriterion | None = None
    latency: LatencyCriterion | None = None
    # Issue 9: where the group lives, account ids and region names; empty: every account and region
    # the health sweep visits. At organization scale this spares one ListDeployments a minute in
    # every other account-region.
    accounts: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()

    @field_validator("accounts")
    @classmethod
    def _account_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if not re.fullmatch(r"\d{12}", a)]
        if bad:
            raise ValueError(f"accounts must be 12-digit AWS account ids, not {bad}")
        return value

    @field_validator("regions")
    @classmethod
    def _region_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [r for r in value if not is_region(r)]
        if bad:
            raise ValueError(f"regions must be AWS region names, not {bad}")
        return value

    def lives_in(self, account: str, region: str) -> bool:
        """Whether the sweep looks for the group in ``account`` and ``region``."""
        return (not self.accounts or account in self.accounts) and (not self.regions or region in self.regions)


def parse_health_criteria(value: Any) -> dict[str, HealthCriteria]:
    """The ``health-criteria`` parameter: JSON mapping ``application/group`` to :class:`HealthCriteria`."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() and value.strip().lower() not in ("none", "-") else {}
    if not isinstance(value, Mapping):
        raise ValueError("health-criteria must be a JSON object of application/group -> criteria")
    out: dict[str, HealthCriteria] = {}
    for key, spec in value.items():
        ref = GroupRef.parse(str(key))
        out[ref.key] = spec if isinstance(spec, HealthCriteria) else HealthCriteria.model_validate(spec)
    return out


class TimeWindow(_Own):
    start: datetime
    end: datetime

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())

    def describe(self) -> str:
        return f"{self.start.strftime('%H:%M')}-{self.end.strftime('%H:%M')} UTC"


class MetricQuery(_Own):
    """One value to fetch: the statistic of a metric over a window."""

    id: str
    metric: MetricSpec
    stat: str


class HealthPlan(_Own):
    """What to fetch to judge a deployment's health: the current window and the baseline before the start."""

    current: TimeWindow
    baseline: TimeWindow | None = None
    current_queries: tuple[MetricQuery, ...] = ()
    baseline_queries: tuple[MetricQuery, ...] = ()


def _floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def health_plan(criteria: HealthCriteria, started_at: datetime, now: datetime) -> HealthPlan | None:
    """The windows and queries for a health check at ``now``; None when less than a minute has passed."""
    end = _floor_minute(now)
    start = max(_floor_minute(started_at), end - timedelta(minutes=criteria.window_minutes))
    if (end - start) < timedelta(minutes=1):
        return None
    current: list[MetricQuery] = []
    baseline: list[MetricQuery] = []
    if criteria.error_rate:
        current.append(MetricQuery(id="errors", metric=criteria.error_rate.errors, stat="Sum"))
        current.append(MetricQuery(id="requests", metric=criteria.error_rate.requests, stat="Sum"))
    base_window: TimeWindow | None = None
    if criteria.latency:
        current.append(MetricQuery(id="latency", metric=criteria.latency.metric, stat=criteria.latency.stat))
        base_end = _floor_minute(started_at)
        base_window = TimeWindow(start=base_end - timedelta(minutes=criteria.baseline_minutes), end=base_end)
        baseline.append(MetricQuery(id="latency_baseline", metric=criteria.latency.metric, stat=criteria.latency.stat))
    return HealthPlan(
        current=TimeWindow(start=start, end=end),
        baseline=base_window,
        current_queries=tuple(current),
        baseline_queries=tuple(baseline),
    )


def aggregate(stat: str, values: Sequence[float]) -> float | None:
    """One value from the per-period values of a window. Percentiles take the worst period."""
    if not values:
        return None
    if stat in ("Sum", "SampleCount"):
        return float(sum(values))
    if stat == "Average":
        return float(sum(values)) / len(values)
    if stat == "Minimum":
        return float(min(values))
    return float(max(values))  # Maximum, and percentiles: conservative across periods


class Finding(_Own):
    """One criterion's result. ``breached`` is None when there was no data to judge."""

    criterion: str
    breached: bool | None
    detail: str
    value: float | None = None
    limit: float | None = None


class HealthReport(_Own):
    findings: tuple[Finding, ...] = ()
    values: dict[str, float | None] = Field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not any(f.breached for f in self.findings)

    @property
    def evaluated(self) -> bool:
        return any(f.breached is not None for f in self.findings)

    @property
    def breaches(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.breached)

    def evidence(self) -> dict[str, Scalar]:
        return {f"metric.{k}": (round(v, 4) if v is not None else None) for k, v in self.values.items()}


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def evaluate_health(
    criteria: HealthCriteria,
    plan: HealthPlan,
    current: Mapping[str, Sequence[float]],
    baseline: Mapping[str, Sequence[float]],
) -> HealthReport:
    """Judge the fetched per-period values against the criteria."""
    values: dict[str, float | None] = {}
    findings: list[Finding] = []
    window = plan.current.describe()
    if criteria.error_rate:
        errors = aggregate("Sum", current.get("errors", ()))
        requests = aggregate("Sum", current.get("requests", ()))
        values["errors"] = errors
        values["requests"] = requests
        limit = criteria.error_rate.max_percent
        if not requests:
            findings.append(Finding(criterion="error_rate", breached=None, detail=f"no requests {window}", limit=limit))
            values["error_rate_percent"] = None
        else:
            rate = 100.0 * (errors or 0.0) / requests
            values["error_rate_percent"] = rate
            breached = rate > limit
            findings.append(
                Finding(
                    criterion="error_rate",
                    breached=breached,
                    value=rate,
                    limit=limit,
                    detail=(
                        f"error rate {rate:.2f}% {'>' if breached else '<='} {limit:g}%"
                        f" ({_fmt(errors or 0.0)} errors / {_fmt(requests)} requests, {window})"
                    ),
                )
            )
    if criteria.latency:
        stat = criteria.latency.stat
        now_value = aggregate(stat, current.get("latency", ()))
        base_value = aggregate(stat, baseline.get("latency_baseline", ()))
        values[f"latency_{stat}"] = now_value
        values[f"latency_{stat}_baseline"] = base_value
        ratio_limit = criteria.latency.max_baseline_ratio
        if now_value is None or not base_value:
            missing = "current value" if now_value is None else "pre-deployment baseline"
            findings.append(
                Finding(criterion="latency", breached=None, detail=f"{stat} latency: no {missing}", limit=ratio_limit)
            )
            values["latency_ratio"] = None
        else:
            ratio = now_value / base_value
            values["latency_ratio"] = ratio
            breached = ratio > ratio_limit
            findings.append(
                Finding(
                    criterion="latency",
                    breached=breached,
                    value=ratio,
                    limit=ratio_limit,
                    detail=(
                        f"{stat} latency {_fmt(now_value)} is {ratio:.2f}x the pre-deployment {_fmt(base_value)}"
                        f" ({'>' if breached else '<='} {ratio_limit:g}x, {window})"
                    ),
                )
            )
    return HealthReport(findings=tuple(findings), values=values)


# --- decisions -----------------------------------------------------------------------------------


class GuardAction(StrEnum):
    STOP = "stop"
    REDEPLOY = "redeploy"
    SKIP = "skip"


class GuardDecision(_Own):
    """What to do with one deployment, why, and the values that decided it."""

    action: GuardAction
    deployment: Deployment
    trigger: str
    reasons: tuple[str, ...]
    evidence: dict[str, Scalar] = Field(default_factory=dict)
    revision: dict[str, Any] | None = None
    health: HealthReport | None = None

    @property
    def change_id(self) -> str:
        return self.deployment.change_id

    def with_health(self, report: HealthReport | None) -> GuardDecision:
        """The decision with a health report added to its evidence and reasons."""
        if report is None:
            return self
        extra = tuple(f.detail for f in report.findings)
        return self.model_copy(
            update={
                "health": report,
                "evidence": {**self.evidence, **report.evidence()},
                "reasons": self.reasons + tuple(r for r in extra if r not in self.reasons),
            }
        )


def in_bake_window(deployment: Deployment, at: datetime, bake_minutes: int) -> bool:
    """Whether ``deployment`` succeeded less than ``bake_minutes`` before ``at`` (or after it).

    An alarm that fired before the deployment even started says nothing about it.
    """
    if deployment.status != "Succeeded" or deployment.complete_time is None:
        return False
    started = deployment.started_at
    if started is not None and at < started:
        return False
    return at - deployment.complete_time < timedelta(minutes=bake_minutes)


def last_good_revision(deployment: Deployment, history: Sequence[Deployment]) -> dict[str, Any] | None:
    """The revision to go back to: the one deployed before ``deployment`` succeeded.

    CodeDeploy's ``previousRevision`` says it; failing that, the latest deployment of the group
    that succeeded before ``deployment`` was created.
    """
    if deployment.previous_revision:
        return deployment.previous_revision
    created = deployment.create_time
    earlier = [
        d
        for d in history
        if d.deployment_id != deployment.deployment_id
        and d.status == "Succeeded"
        and d.complete_time is not None
        and d.revision
        and (created is None or d.complete_time <= created)
    ]
    latest = max(earlier, key=lambda d: d.complete_time or _EPOCH, default=None)
    return latest.revision if latest else None


def _created(d: Deployment) -> datetime:
    return d.create_time or d.start_time or _EPOCH


def decide_on_alarm(
    alarm: AlarmSignal,
    deployments: Sequence[Deployment],
    *,
    bake_minutes: int,
) -> list[GuardDecision]:
    """What a firing alarm means for one deployment group, given its recent deployments.

    ``deployments`` holds the group's in-flight deployments and those created recently (enough to
    see the latest one and its predecessor).
    """
    if not alarm.firing:
        return []
    trigger = f"alarm {alarm.alarm_name}"
    fired = f"alarm {alarm.alarm_name} is in ALARM" + (f": {alarm.reason}" if alarm.reason else "")
    evidence = alarm.evidence()
    decisions: list[GuardDecision] = []
    in_flight = [d for d in deployments if d.in_flight]
    for d in sorted(in_flight, key=_created):
        why = rollback_reason(d)
        scaling = not_a_release(d.creator)
        if why or scaling:
            decisions.append(
                GuardDecision(
                    action=GuardAction.SKIP,
                    deployment=d,
                    trigger=trigger,
                    reasons=(f"never stops a rollback: {why}" if why else f"never stops it: {scaling}",),
                    evidence=evidence,
                )
            )
        else:
            note = marker_note(d)
            decisions.append(
                GuardDecision(
                    action=GuardAction.STOP,
                    deployment=d,
                    trigger=trigger,
                    reasons=(fired, note) if note else (fired,),
                    evidence=evidence,
                )
            )
    # A scale-out that finished after the release is not "the latest release": the release is.
    releases = [d for d in deployments if is_release(d)]
    latest = max(releases, key=_created, default=None)
    if latest is None or latest.in_flight or not in_bake_window(latest, alarm.changed_at, bake_minutes):
        return decisions
    assert latest.complete_time is not None  # in_bake_window checked it
    minutes = max(0.0, (alarm.changed_at - latest.complete_time).total_seconds() / 60.0)
    baked = (
        f"{latest.deployment_id} succeeded {minutes:.0f} min before the alarm fired,"
        f" inside the {bake_minutes} min bake window"
    )
    revision = last_good_revision(latest, deployments)
    decisions.append(
        GuardDecision(
            action=GuardAction.REDEPLOY,
            deployment=latest,
            trigger=trigger,
            reasons=(fired, baked)
            + tuple(n for n in (marker_note(latest),) if n)
            + (() if revision else ("no earlier successful revision is known: nothing to roll back to",)),
            evidence={**evidence, "bake.minutes_since_success": round(minutes, 1)},
            revision=revision,
        )
    )
    return decisions


def decide_on_health(deployment: Deployment, report: HealthReport, delay_minutes: int) -> GuardDecision | None:
    """Stop an in-flight deployment whose health check breached a criterion."""
    if report.healthy or not deployment.in_flight or not is_release(deployment):
        return None
    return GuardDecision(
        action=GuardAction.STOP,
        deployment=deployment,
        trigger=f"health check {delay_minutes} min after start",
        reasons=tuple(f.detail for f in report.breaches) + tuple(n for n in (marker_note(deployment),) if n),
        evidence=report.evidence(),
        health=report,
    )


# --- the stop cap --------------------------------------------------------------------------------


class CapCheck(_Own):
    """Whether one more stop is allowed, and the slot it takes in the application's sequence."""

    allowed: bool
    slot: int
    used: int
    limit: int

    def describe(self, application: str) -> str:
        if self.allowed:
            return (
                f"{self.used + 1} of {self.limit} stops/rollbacks for {application} in the last hour, this one included"
            )
        return f"{self.used} of {self.limit} stops/rollbacks for {application} in the last hour: the cap is reached"


def stop_cap(
    slots: Mapping[int, datetime],
    now: datetime,
    limit: int,
    window: timedelta = CAP_WINDOW,
    released: Collection[int] = (),
) -> CapCheck:
    """Stops and rollbacks of one application take numbered slots; at most ``limit`` in any ``window``.

    The next slot number serialises concurrent stops (only one writer gets it); the count of
    slots taken inside the window is the cap. A ``released`` slot (a stop that found the deployment
    already finished, so stopped nothing) keeps its number taken but is not counted.
    """
    used = sum(1 for n, at in slots.items() if n not in released and now - window < at <= now + timedelta(minutes=1))
    return CapCheck(allowed=used < limit, slot=max(slots, default=0) + 1, used=used, limit=limit)
