"""The deployment guard service with in-memory fakes: what it records, alerts and does, and what it never does twice."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from changeguard.domain.deployments import (
    REDEPLOY_MARKER,
    Deployment,
    DeploymentGroup,
    ErrorRateCriterion,
    HealthCriteria,
    LatencyCriterion,
    MetricSpec,
    StopCapContentionError,
)
from changeguard.domain.errors import InvalidEventError
from changeguard.domain.kpis import Period, build_population
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.services.deployment_guard import DeploymentGuardService
from fakes import FakeClock, InMemoryLedger, ThreadScope
from sample_events import load_event

ALARM_AT = datetime(2026, 11, 24, 10, 4, 10, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 10, 4, 30, tzinfo=UTC)
START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
V15 = {"revisionType": "String", "string": {"content": "v15"}}
V16 = {"revisionType": "String", "string": {"content": "v16"}}
ALARM = "checkout-api-errors"
TAGGED = {"changeguard:deployment-group": "checkout/checkout-prod"}
ALARM_ARN = f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{ALARM}"
CRITERIA = HealthCriteria(
    error_rate=ErrorRateCriterion(
        errors=MetricSpec(namespace="AWS/Lambda", name="Errors"),
        requests=MetricSpec(namespace="AWS/Lambda", name="Invocations"),
    ),
    latency=LatencyCriterion(metric=MetricSpec(namespace="AWS/Lambda", name="Duration")),
)
HEALTHY = {"errors": [2.0], "requests": [1000.0], "latency": [130.0], "latency_baseline": [130.0]}
SICK = {"errors": [48.0], "requests": [1000.0], "latency": [400.0], "latency_baseline": [130.0]}


def dep(deployment_id: str, status: str = "InProgress", group: str = "checkout-prod", **kw: Any) -> Deployment:
    base: dict[str, Any] = {
        "deployment_id": deployment_id,
        "application": "checkout",
        "group": group,
        "status": status,
        "creator": "user",
        "description": "checkout-api v16 (CHG-2002)",
        "revision": V16,
        "create_time": START,
        "start_time": START,
    }
    base.update(kw)
    return Deployment(**base)


@dataclass
class Stopped:
    status: str
    already_completed: bool = False

    def describe(self) -> str:
        return "already completed" if self.already_completed else f"StopDeployment {self.status}"


class FakeCodeDeploy:
    def __init__(self, *deployments: Deployment, groups: list[DeploymentGroup] | None = None) -> None:
        self.deployments = {d.deployment_id: d for d in deployments}
        self.groups = groups or []
        self.tags: dict[str, dict[str, str]] = {}
        self.stops: list[str] = []
        self.redeploys: list[tuple[str, dict[str, Any], str]] = []

    def get_deployment(self, deployment_id: str) -> Deployment | None:
        return self.deployments.get(deployment_id)

    def list_in_flight(self, application: str, group: str) -> list[Deployment]:
        return [
            d for d in self.deployments.values() if (d.application, d.group) == (application, group) and d.in_flight
        ]

    def list_recent(self, application: str, group: str, since: datetime) -> list[Deployment]:
        return [
            d
            for d in self.deployments.values()
            if (d.application, d.group) == (application, group) and (d.create_time or since) >= since
        ]

    def groups_watching(self, alarm_name: str) -> list[DeploymentGroup]:
        return [g for g in self.groups if alarm_name in g.alarms]

    def tags_of(self, arn: str) -> dict[str, str]:
        return self.tags.get(arn, {})

    def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> Stopped:
        self.stops.append(deployment_id)
        d = self.deployments[deployment_id]
        if not d.in_flight:
            return Stopped("AlreadyCompleted", already_completed=True)
        rollback = f"d-RB{len(self.stops):07d}"
        self.deployments[deployment_id] = d.model_copy(update={"status": "Stopped", "rollback_deployment_id": rollback})
        self.deployments[rollback] = dep(
            rollback, creator="codeDeployRollback", rolled_back_from=deployment_id, revision=V15, description=None
        )
        return Stopped("Succeeded")

    def redeploy(self, application: str, group: str, revision: dict[str, Any], description: str) -> str:
        new = f"d-RD{len(self.redeploys) + 1:07d}"
        self.redeploys.append((new, revision, description))
        self.deployments[new] = dep(
            new, application=application, group=group, revision=revision, description=description, create_time=NOW
        )
        return new


class FakeCloudWatch:
    def __init__(self, states: dict[str, str] | None = None, metrics: dict[str, list[float]] | None = None) -> None:
        self.states = states if states is not None else {ALARM: "ALARM"}
        self.tags = {ALARM_ARN: dict(TAGGED)}
        self.metrics = metrics or {}
        self.windows: list[tuple[datetime, datetime]] = []

    def metric_values(self, queries: Any, window: Any) -> dict[str, list[float]]:
        self.windows.append((window.start, window.end))
        return {q.id: list(self.metrics.get(q.id, [])) for q in queries}

    def alarm_state(self, alarm_name: str) -> str | None:
        return self.states.get(alarm_name)

    def alarm_tags(self, alarm_arn: str) -> dict[str, str]:
        return self.tags.get(alarm_arn, {})


class Guard:
    """The service, its fakes, and the policy it reads (changeable per test)."""

    def __init__(
        self,
        *deployments: Deployment,
        mode: str = "enforce",
        codedeploy: FakeCodeDeploy | None = None,
        acting: dict[str, Any] | None = None,
        **policy: Any,
    ) -> None:
        self.codedeploy = codedeploy or FakeCodeDeploy(*deployments)
        self.cloudwatch = FakeCloudWatch(metrics=HEALTHY)
        self.ledger = InMemoryLedger()
        self.clock = FakeClock(NOW)
        self.policy = Policy(enforcement_mode=mode, health_criteria={"checkout/checkout-prod": CRITERIA}, **policy)
        self.service = DeploymentGuardService(
            function="guard_deployment",
            ledger=self.ledger,
            codedeploy=self.codedeploy,
            cloudwatch=self.cloudwatch,
            policy=lambda: self.policy,
            clock=self.clock,
            **(acting or {}),  # issue 9: scope, member_accounts, regions
        )

    def alarm(self, sample: str = "alarm-state-change.json", **changes: Any) -> Any:
        event = load_event(f"guard_deployment/{sample}")
        event.update(changes)
        return self.service.handle(event)

    def entries(self, change_id: str) -> dict[str, LedgerEntry]:
        return {e.entry: e for e in self.ledger.entries_for(change_id)}

    def alerts(self) -> list[LedgerEntry]:
        return self.ledger.kinds("ALERT")


# -- alarm -> stop ---------------------------------------------------------------------------------------
def test_enforce_stops_the_in_flight_deployment_records_intent_alert_and_result():
    guard = Guard(dep("d-CHK0000U1"))
    guard.cloudwatch.metrics = SICK
    outcome = guard.alarm()
    assert outcome.verdict == "STOPPED"
    assert guard.codedeploy.stops == ["d-CHK0000U1"]
    entries = guard.entries("codedeploy:d-CHK0000U1")
    # The intent is the decision, written before the call; the result is the fact (a failed change):
    # StopDeployment may find the deployment already finished.
    stop = entries["STOP"]
    assert stop.kind is EntryKind.DEPLOYMENT and stop.verdict == "STOP" and stop.ticket_id == "CHG-2002"
    assert stop.body["failed_change"] is False and stop.body["deployment_id"] == "d-CHK0000U1"
    assert stop.body["evidence"]["metric.error_rate_percent"] == 4.8
    result = entries["STOP#d-RB0000001"]
    assert result.kind is EntryKind.ROLLBACK and result.body["rollback_deployment_id"] == "d-RB0000001"
    assert result.verdict == "FAILED_CHANGE" and result.body["failed_change"] is True
    assert result.body["deployment_id"] == "d-CHK0000U1" and result.ticket_id == "CHG-2002"
    (alert_entry,) = guard.alerts()
    alert = alert_entry.body["alert"]
    assert alert["kind"] == "stop" and alert["severity"] == "high"
    assert alert["details"]["deployment_id"] == "d-CHK0000U1"
    assert alert["details"]["application"] == "checkout" and alert["details"]["deployment_group"] == "checkout-prod"
    assert alert["details"]["alarm.threshold"] == 10.0
    assert alert["details"]["metric.latency_ratio"] == pytest.approx(3.0769, rel=1e-3)
    assert any(r.startswith("alarm checkout-api-errors is in ALARM") for r in alert["reasons"])
    assert any(r.startswith("error rate 4.80% > 1%") for r in alert["reasons"])


def test_repeated_alarms_give_one_stop_and_one_alert():
    guard = Guard(dep("d-CHK0000U1"))
    guard.alarm()
    again = guard.alarm(id="another-delivery")
    guard.alarm("alarm-lambda-action.json")
    guard.alarm("alarm-sns.json")
    assert guard.codedeploy.stops == ["d-CHK0000U1"]
    assert len(guard.alerts()) == 1
    assert again.verdict == "NO_ACTION"
    assert "never stops a rollback" in again.actions[0]


def test_a_concurrent_delivery_that_already_stopped_it_is_not_repeated():
    guard = Guard(dep("d-CHK0000U1"))
    guard.alarm()
    # A second invocation read the deployment while it was still in flight.
    guard.codedeploy.deployments["d-CHK0000U1"] = dep("d-CHK0000U1")
    outcome = guard.alarm()
    assert outcome.duplicate
    assert guard.codedeploy.stops == ["d-CHK0000U1"]
    assert len(guard.alerts()) == 1


def test_a_retry_after_a_crash_between_intent_and_stop_finishes_the_stop():
    guard = Guard(dep("d-CHK0000U1"))

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("Lambda timed out")

    real_stop, guard.codedeploy.stop = guard.codedeploy.stop, crash  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        guard.alarm()
    assert "STOP" in guard.entries("codedeploy:d-CHK0000U1")
    guard.codedeploy.stop = real_stop  # type: ignore[method-assign]
    guard.clock.at += timedelta(minutes=1)  # Lambda retries a failed invocation a minute later (issue 8)
    outcome = guard.alarm()
    assert outcome.verdict == "STOPPED"
    assert guard.codedeploy.stops == ["d-CHK0000U1"]
    assert "STOP#d-RB0000001" in guard.entries("codedeploy:d-CHK0000U1")
    assert len(guard.alerts()) == 1


def test_observe_mode_reports_would_have_stopped_and_calls_nothing():
    guard = Guard(dep("d-CHK0000U1"), mode="observe")
    outcome = guard.alarm()
    assert outcome.verdict == "WOULD_STOP"
    assert "would have stopped d-CHK0000U1" in outcome.actions[0]
    assert guard.codedeploy.stops == [] and guard.codedeploy.redeploys == []
    entry = guard.entries("codedeploy:d-CHK0000U1")["WOULD_STOP"]
    assert entry.kind is EntryKind.DEPLOYMENT  # not a stop: the KPIs must not count it as one
    assert entry.verdict == "WOULD_STOP" and entry.body["failed_change"] is False
    (alert,) = guard.alerts()
    assert alert.body["alert"]["kind"] == "would-stop"
    assert alert.body["alert"]["subject"].startswith("Would have stopped deployment d-CHK0000U1")


def test_an_alarm_that_recovered_or_was_deleted_is_not_acted_on():
    guard = Guard(dep("d-CHK0000U1"))
    guard.cloudwatch.states[ALARM] = "OK"
    assert guard.alarm().verdict == "IGNORED"
    del guard.cloudwatch.states[ALARM]
    outcome = guard.alarm()
    assert outcome.verdict == "IGNORED" and "deleted" in outcome.reasons[0]
    assert guard.codedeploy.stops == [] and guard.ledger.items == {}


def test_a_transition_to_ok_is_ignored_without_reading_anything():
    guard = Guard(dep("d-CHK0000U1"))
    event = load_event("guard_deployment/alarm-lambda-action.json")
    event["alarmData"]["state"]["value"] = "OK"
    assert guard.service.handle(event).verdict == "IGNORED"
    assert guard.ledger.items == {}


def test_groups_come_from_the_alarm_configuration_as_well_as_the_tag():
    guard = Guard(dep("d-PAY0000B1", group="payments-prod"), dep("d-CHK0000U1"))
    guard.cloudwatch.tags = {}
    guard.codedeploy.groups = [DeploymentGroup(application="checkout", group="payments-prod", alarms=(ALARM,))]
    guard.alarm()
    assert guard.codedeploy.stops == ["d-PAY0000B1"]
    guard2 = Guard(dep("d-CHK0000U1"))
    guard2.cloudwatch.tags = {}
    assert guard2.alarm().verdict == "NO_ACTION"


# -- the cap -----------------------------------------------------------------------------------------------
def test_the_cap_stops_acting_and_alerts_critically():
    guard = Guard(dep("d-CHK00000A1", group="g1"), dep("d-CHK00000B1", group="g2"), max_stops_per_app_hour=1)
    guard.cloudwatch.tags = {ALARM_ARN: {"changeguard:deployment-group": "checkout/g1 checkout/g2"}}
    outcome = guard.alarm()
    assert outcome.verdict == "STOPPED"
    assert guard.codedeploy.stops == ["d-CHK00000A1"]
    capped = guard.entries("codedeploy:d-CHK00000B1")["STOP_CAPPED"]
    assert capped.kind is EntryKind.DEPLOYMENT and capped.severity == "critical"
    kinds = sorted(a.body["alert"]["kind"] for a in guard.alerts())
    assert kinds == ["stop", "stop-capped"]
    cap_alert = next(a.body["alert"] for a in guard.alerts() if a.body["alert"]["kind"] == "stop-capped")
    assert cap_alert["severity"] == "critical"
    assert "1 of 1 stops/rollbacks for checkout in the last hour: the cap is reached" in cap_alert["reasons"]
    # An hour later the slot is free again.
    guard.clock.at = NOW + timedelta(hours=1, minutes=1)
    guard.alarm()
    assert guard.codedeploy.stops == ["d-CHK00000A1", "d-CHK00000B1"]


def test_an_in_flight_scale_out_is_never_stopped_and_takes_no_cap_slot():
    scale_out = dep("d-ASG0000S1", creator="autoscaling", description=None)
    guard = Guard(scale_out, max_stops_per_app_hour=1)
    guard.cloudwatch.metrics = SICK

    outcome = guard.alarm()

    assert outcome.verdict == "NO_ACTION"
    assert guard.codedeploy.stops == [] and guard.alerts() == []
    assert any("left d-ASG0000S1 alone: never stops it: not a release" in a for a in outcome.actions)
    assert guard.entries("guard:stops:123456789012:us-east-1:checkout") == {}  # the cap is untouched
    # The one stop the cap allows is still there for a release.
    guard.codedeploy.deployments["d-CHK0000U1"] = dep("d-CHK0000U1")
    assert guard.alarm().verdict == "STOPPED"
    assert guard.codedeploy.stops == ["d-CHK0000U1"]


def test_a_slot_taken_concurrently_is_retried_with_the_next_one():
    guard = Guard(dep("d-CHK0000U1"))
    real_append = guard.ledger.append
    raced = []

    def racing_append(entries: Any) -> bool:
        if not raced and any(e.entry.startswith("SLOT#") for e in entries):
            raced.append(True)  # another stop of the same application takes slot 1 first
            slot = next(e for e in entries if e.entry.startswith("SLOT#"))
            real_append([slot.model_copy(update={"body": {"for_deployment": "d-OTHER"}})])
        return real_append(entries)

    guard.ledger.append = racing_append  # type: ignore[method-assign]
    assert guard.alarm().verdict == "STOPPED"
    slots = guard.entries("guard:stops:123456789012:us-east-1:checkout")
    assert sorted(slots) == ["SLOT#000001", "SLOT#000002"]
    assert slots["SLOT#000002"].body["for_deployment"] == "d-CHK0000U1"


def test_endless_contention_for_the_cap_raises_for_a_retry():
    guard = Guard(dep("d-CHK0000U1"))
    guard.ledger.append = lambda entries: False  # type: ignore[method-assign]
    with pytest.raises(StopCapContentionError):
        guard.alarm()


# -- the bake window --------------------------------------------------------------------------------------------
def baked_payments() -> list[Deployment]:
    done = ALARM_AT - timedelta(minutes=11)
    return [
        dep(
            "d-PAY0000B1",
            status="Succeeded",
            group="payments-prod",
            application="payments",
            description="payments v42",
            complete_time=done,
            create_time=done - timedelta(minutes=9),
            previous_revision=V15,
        ),
    ]


def payments_guard(mode: str = "enforce", **policy: Any) -> Guard:
    guard = Guard(*baked_payments(), mode=mode, **policy)
    guard.codedeploy.groups = [DeploymentGroup(application="payments", group="payments-prod", alarms=(ALARM,))]
    guard.codedeploy.tags = {
        "arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:payments/payments-prod": {"ChangeTicket": "CHG-2003"}
    }
    guard.cloudwatch.tags = {}
    return guard


def test_a_regression_inside_the_bake_window_redeploys_the_previous_revision_once():
    guard = payments_guard()
    outcome = guard.alarm()
    assert outcome.verdict == "ROLLED_BACK"
    ((new, revision, description),) = guard.codedeploy.redeploys
    assert revision == V15
    assert description.startswith(f"{REDEPLOY_MARKER}d-PAY0000B1 (CHG-2003)")
    entries = guard.entries("codedeploy:d-PAY0000B1")
    assert entries["ROLLBACK"].verdict == "FAILED_CHANGE" and entries["ROLLBACK"].ticket_id == "CHG-2003"
    assert entries[f"ROLLBACK#{new}"].body["redeploy_id"] == new
    # The change-calendar gate finds the redeploy marked as the suite's rollback under its bare id.
    assert [e.kind for e in guard.ledger.entries_for(new)] == [EntryKind.ROLLBACK]
    # Again (another shape of the same alarm): nothing twice, and the redeploy itself is never stopped.
    again = guard.alarm("alarm-sns.json")
    assert len(guard.codedeploy.redeploys) == 1 and guard.codedeploy.stops == []
    assert len(guard.alerts()) == 1
    assert again.duplicate
    assert any(a.startswith("duplicate: d-PAY0000B1 already handled") for a in again.actions)


def test_a_retry_after_a_crash_reuses_the_redeploy_it_already_created():
    guard = payments_guard()
    real = guard.ledger.append
    calls = []

    def lose_the_result(entries: Any) -> bool:
        calls.append([e.entry for e in entries])
        if any(e.entry.startswith("ROLLBACK#d-RD") for e in entries) and len(calls) < 4:
            raise TimeoutError("crashed before recording the redeploy")
        return real(entries)

    guard.ledger.append = lose_the_result  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        guard.alarm()
    guard.ledger.append = real  # type: ignore[method-assign]
    guard.clock.at += timedelta(minutes=1)  # Lambda retries a failed invocation a minute later (issue 8)
    # The redeploy is in flight now: the retry must find it, not create a second one.
    outcome = guard.alarm()
    assert len(guard.codedeploy.redeploys) == 1
    assert outcome.duplicate
    assert "ROLLBACK#d-RD0000001" in guard.entries("codedeploy:d-PAY0000B1")


def test_an_alarm_delivered_while_the_guard_is_still_marking_its_redeploy_does_not_stop_it():
    """The alarm arrives in three shapes at once: one delivery redeploys, another lists the redeploy
    in flight before the first has marked it in the ledger. Its intent says the redeploy is ours."""
    guard = payments_guard()
    real = guard.codedeploy.redeploy
    concurrent: list[Any] = []

    def create_then_another_delivery(*args: Any) -> str:
        new = real(*args)
        concurrent.append(guard.alarm("alarm-sns.json"))
        return new

    guard.codedeploy.redeploy = create_then_another_delivery  # type: ignore[method-assign]
    assert guard.alarm().verdict == "ROLLED_BACK"
    assert guard.codedeploy.stops == [] and len(guard.codedeploy.redeploys) == 1
    assert any("never stops a rollback" in a for a in concurrent[0].actions)


def test_a_deployment_that_only_claims_to_be_the_guards_redeploy_is_stopped_and_health_checked():
    """Anyone allowed CreateDeployment writes the description: only the ledger's mark makes a redeploy ours."""
    spoof = dep("d-SP00F0001", description=f"{REDEPLOY_MARKER}d-CHK0000U1 (CHG-2002): trust me")
    guard = Guard(spoof)
    outcome = guard.alarm()
    assert outcome.verdict == "STOPPED" and guard.codedeploy.stops == ["d-SP00F0001"]
    (alert,) = guard.alerts()
    assert any("claims it is ChangeGuard's rollback" in r for r in alert.body["alert"]["reasons"])

    swept = Guard(spoof)
    swept.cloudwatch.metrics = SICK
    swept.clock.at = START + timedelta(minutes=30)
    assert swept.service.handle(SWEEP).verdict == "STOPPED"
    assert swept.codedeploy.stops == ["d-SP00F0001"]
    assert swept.entries("codedeploy:d-SP00F0001")["HEALTH"].body["healthy"] is False


def test_a_scale_out_finished_in_the_bake_window_is_not_taken_for_the_latest_release():
    guard = payments_guard()
    release = guard.codedeploy.deployments["d-PAY0000B1"]
    assert release.complete_time is not None
    guard.codedeploy.deployments["d-ASG0000P1"] = release.model_copy(
        update={
            "deployment_id": "d-ASG0000P1",
            "creator": "autoscaling",
            "description": None,
            "create_time": release.complete_time + timedelta(minutes=2),
            "start_time": release.complete_time + timedelta(minutes=2),
            "complete_time": release.complete_time + timedelta(minutes=6),
            "previous_revision": V16,  # a scale-out deploys the release's own revision
        }
    )

    outcome = guard.alarm()

    assert outcome.verdict == "ROLLED_BACK"
    ((_, revision, description),) = guard.codedeploy.redeploys
    assert revision == V15 and description.startswith(f"{REDEPLOY_MARKER}d-PAY0000B1")
    assert "ROLLBACK" in guard.entries("codedeploy:d-PAY0000B1")
    assert guard.entries("codedeploy:d-ASG0000P1") == {}


def test_outside_the_bake_window_an_alarm_rolls_nothing_back():
    guard = payments_guard(bake_minutes=10)
    outcome = guard.alarm()
    assert outcome.verdict == "NO_ACTION" and guard.codedeploy.redeploys == []
    assert "bake window" in outcome.reasons[0]


def test_without_a_known_good_revision_the_guard_alerts_instead():
    guard = payments_guard()
    guard.codedeploy.deployments["d-PAY0000B1"] = guard.codedeploy.deployments["d-PAY0000B1"].model_copy(
        update={"previous_revision": None}
    )
    outcome = guard.alarm()
    assert outcome.verdict == "NO_ROLLBACK" and guard.codedeploy.redeploys == []
    (alert,) = guard.alerts()
    assert alert.body["alert"]["kind"] == "no-rollback"


def test_observe_mode_would_roll_back():
    guard = payments_guard(mode="observe")
    assert guard.alarm().verdict == "WOULD_ROLL_BACK"
    assert guard.codedeploy.redeploys == []


# -- the health sweep ------------------------------------------------------------------------------------------
SWEEP = {
    "version": "0",
    "id": "5c6d7e8f-0000-4000-8000-000000000001",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-11-24T10:06:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/HealthSweep"],
    "detail": {},
}


def test_the_sweep_waits_for_the_delay_then_checks_once():
    guard = Guard(dep("d-CHK0000H1"))
    guard.clock.at = START + timedelta(minutes=4)
    assert guard.service.handle(SWEEP).actions == ["no deployment due for a health check"]
    guard.clock.at = START + timedelta(minutes=5, seconds=30)
    outcome = guard.service.handle(SWEEP)
    assert outcome.verdict == "HEALTHY"
    health = guard.entries("codedeploy:d-CHK0000H1")["HEALTH"]
    assert health.body["healthy"] is True and health.body["values"]["error_rate_percent"] == pytest.approx(0.2)
    assert guard.cloudwatch.windows == [
        (START, START + timedelta(minutes=5)),
        (START - timedelta(hours=1), START),
    ]
    guard.clock.at = START + timedelta(minutes=6)
    assert guard.service.handle(SWEEP).verdict is None  # already checked
    assert guard.codedeploy.stops == []


def test_an_unhealthy_check_stops_the_deployment_in_the_same_append():
    guard = Guard(dep("d-CHK0000U1"))
    guard.cloudwatch.metrics = SICK
    guard.clock.at = START + timedelta(minutes=5)
    outcome = guard.service.handle(SWEEP)
    assert outcome.verdict == "STOPPED"
    assert guard.codedeploy.stops == ["d-CHK0000U1"]
    entries = guard.entries("codedeploy:d-CHK0000U1")
    assert entries["HEALTH"].verdict == "UNHEALTHY"
    assert entries["STOP"].body["trigger"] == "health check 5 min after start"
    alert = guard.alerts()[0].body["alert"]
    assert (
        alert["subject"] == "Stopping deployment d-CHK0000U1 (checkout/checkout-prod): health check 5 min after start"
    )
    assert alert["details"]["metric.latency_p99"] == 400.0


def sweep_minutes(guard: Guard, *minutes: int) -> None:
    for minute in minutes:
        guard.clock.at = START + timedelta(minutes=minute, seconds=10)
        guard.service.handle(SWEEP)


def stop_throttled_once_after_the_check() -> Guard:
    """A sick deployment whose health check ledgers HEALTH with the STOP intent (one append), and
    whose StopDeployment then fails, and the run with it."""
    guard = Guard(dep("d-CHK0000U1"))
    guard.cloudwatch.metrics = SICK

    def throttled(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("StopDeployment throttled")

    real_stop, guard.codedeploy.stop = guard.codedeploy.stop, throttled  # type: ignore[method-assign]
    guard.clock.at = START + timedelta(minutes=5, seconds=10)
    with pytest.raises(TimeoutError):
        guard.service.handle(SWEEP)
    assert {"HEALTH", "STOP"} <= set(guard.entries("codedeploy:d-CHK0000U1"))
    guard.codedeploy.stop = real_stop  # type: ignore[method-assign]
    return guard


def test_a_stop_the_health_check_ledgered_but_could_not_make_is_finished_by_a_later_sweep():
    # Lambda's retries of the failed run, and later sweeps, all find HEALTH: the stop must still be made.
    guard = stop_throttled_once_after_the_check()

    guard.clock.at = START + timedelta(minutes=5, seconds=40)  # the attempt may still be running
    assert guard.service.handle(SWEEP).duplicate and guard.codedeploy.stops == []
    guard.clock.at = START + timedelta(minutes=6, seconds=10)  # Lambda's first retry of the failed run
    outcome = guard.service.handle(SWEEP)
    sweep_minutes(guard, 7, 8, 9)

    assert outcome.verdict == "STOPPED" and guard.codedeploy.stops == ["d-CHK0000U1"]
    entries = guard.entries("codedeploy:d-CHK0000U1")
    assert "STOP#d-RB0000001" in entries
    (alert,) = guard.alerts()  # the stop's alert, with the check's reasons and values
    assert alert.body["alert"]["subject"].endswith("health check 5 min after start")
    assert alert.body["alert"]["details"]["metric.latency_p99"] == 400.0
    assert len(guard.cloudwatch.windows) == 2  # the one check: its recorded verdict is not re-judged


def test_a_stop_without_result_on_a_checked_deployment_is_left_alone_in_observe_mode():
    guard = stop_throttled_once_after_the_check()
    guard.policy = Policy(enforcement_mode="observe", health_criteria=guard.policy.health_criteria)

    sweep_minutes(guard, 7, 8)  # the operator switched to observe: nothing is stopped, nothing new decided

    assert guard.codedeploy.stops == [] and set(guard.entries("codedeploy:d-CHK0000U1")) == {"HEALTH", "STOP"}


def test_a_health_check_after_an_observe_mode_alarm_is_recorded_once_and_not_repeated():
    # The alarm decided first (WOULD_STOP); the check then reaches the same decision, already
    # ledgered. Its verdict is still part of the deployment's record, and the sweep is done with it.
    guard = Guard(dep("d-CHK0000U1"), mode="observe")
    guard.clock.at = START + timedelta(minutes=2)
    assert guard.alarm().verdict == "WOULD_STOP"
    guard.cloudwatch.metrics = SICK
    guard.cloudwatch.windows.clear()

    guard.clock.at = START + timedelta(minutes=5, seconds=10)
    outcome = guard.service.handle(SWEEP)

    assert outcome.verdict == "WOULD_STOP" and outcome.duplicate  # the alarm's decision, not a second one
    assert "recorded HEALTH (UNHEALTHY) for codedeploy:d-CHK0000U1" in outcome.actions
    health = guard.entries("codedeploy:d-CHK0000U1")["HEALTH"]
    assert health.verdict == "UNHEALTHY" and health.body["evaluated"] is True
    assert len(guard.alerts()) == 1  # the alarm's "would have stopped", nothing more
    sweep_minutes(guard, *range(6, 15))  # observe mode stops nothing: it stays in flight
    assert len(guard.cloudwatch.windows) == 2  # one current and one baseline window: checked once


def test_a_health_check_while_the_alarms_stop_is_pending_is_recorded_and_stops_nothing_twice():
    class PendingStop(FakeCodeDeploy):
        def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> Stopped:
            self.stops.append(deployment_id)
            return Stopped("Pending")  # accepted: the deployment stays InProgress for a while

    guard = Guard(codedeploy=PendingStop(dep("d-CHK0000U1")))
    guard.clock.at = START + timedelta(minutes=2)
    assert guard.alarm().verdict == "STOPPED"
    guard.cloudwatch.metrics = SICK

    sweep_minutes(guard, 5, 6, 7)

    entries = guard.entries("codedeploy:d-CHK0000U1")
    assert entries["HEALTH"].verdict == "UNHEALTHY" and "STOP#pending" in entries
    assert guard.codedeploy.stops == ["d-CHK0000U1"]
    assert len(guard.cloudwatch.windows) == 2 + 2  # the alarm's evaluation and the one health check


def test_a_health_check_of_a_deployment_the_cap_already_spared_is_recorded():
    guard = Guard(dep("d-CHK00000A1"), dep("d-CHK00000B1"), max_stops_per_app_hour=1)
    guard.clock.at = START + timedelta(minutes=2)
    guard.alarm()
    assert guard.codedeploy.stops == ["d-CHK00000A1"]
    assert "STOP_CAPPED" in guard.entries("codedeploy:d-CHK00000B1")
    guard.cloudwatch.metrics = SICK

    sweep_minutes(guard, 5, 6)

    spared = guard.entries("codedeploy:d-CHK00000B1")
    assert spared["HEALTH"].verdict == "UNHEALTHY"
    assert guard.codedeploy.stops == ["d-CHK00000A1"]
    assert sorted(a.body["alert"]["kind"] for a in guard.alerts()) == ["stop", "stop-capped"]


def test_a_zero_delay_is_checked_once_a_whole_minute_of_metrics_exists():
    guard = Guard(dep("d-CHK0000U1"))
    guard.policy = guard.policy.model_copy(
        update={"health_criteria": {"checkout/checkout-prod": CRITERIA.model_copy(update={"delay_minutes": 0})}}
    )
    guard.cloudwatch.metrics = SICK

    guard.clock.at = START + timedelta(seconds=30)  # due, but the deployment's first minute is not over
    early = guard.service.handle(SWEEP)

    assert early.verdict is None and guard.cloudwatch.windows == []
    assert guard.entries("codedeploy:d-CHK0000U1") == {}  # no empty HEALTH that would end its checks
    guard.clock.at = START + timedelta(seconds=90)
    assert guard.service.handle(SWEEP).verdict == "STOPPED"
    health = guard.entries("codedeploy:d-CHK0000U1")["HEALTH"]
    assert health.verdict == "UNHEALTHY" and health.body["evaluated"] is True
    assert guard.cloudwatch.windows[0] == (START, START + timedelta(minutes=1))
    assert guard.codedeploy.stops == ["d-CHK0000U1"]


def test_the_sweep_never_checks_rollbacks_or_groups_without_criteria():
    guard = Guard(
        dep("d-RB0000009", creator="codeDeployRollback", rolled_back_from="d-X"),
        dep("d-OTHER0001", group="no-criteria"),
    )
    guard.cloudwatch.metrics = SICK
    guard.clock.at = START + timedelta(minutes=30)
    assert guard.service.handle(SWEEP).verdict is None
    assert guard.codedeploy.stops == []


@pytest.mark.parametrize("creator", ["autoscaling", "CodeDeployAutoUpdate"])
def test_the_sweep_never_checks_a_deployment_that_is_not_a_release(creator):
    guard = Guard(dep("d-ASG0000S1", creator=creator, description=None))
    guard.cloudwatch.metrics = SICK
    guard.clock.at = START + timedelta(minutes=30)
    assert guard.service.handle(SWEEP).verdict is None
    assert guard.codedeploy.stops == [] and guard.entries("codedeploy:d-ASG0000S1") == {}
    assert guard.entries("guard:stops:123456789012:us-east-1:checkout") == {}


class FinishesFirst(FakeCodeDeploy):
    """Lists the release in flight; by the time StopDeployment arrives it has finished with ``status``."""

    def __init__(self, *deployments: Deployment, status: str = "Succeeded") -> None:
        super().__init__(*deployments)
        self.finish_as = status

    def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> Stopped:
        d = self.deployments[deployment_id]
        if d.in_flight:
            done = {"status": self.finish_as, "complete_time": NOW - timedelta(seconds=5)}
            self.deployments[deployment_id] = d.model_copy(update=done)
        return super().stop(deployment_id, auto_rollback=auto_rollback)


def race_guard(status: str) -> Guard:
    previous = dep(
        "d-CHK0000P0",
        status="Succeeded",
        revision=V15,
        create_time=START - timedelta(days=1),
        start_time=START - timedelta(days=1),
        complete_time=START - timedelta(hours=20),
    )
    return Guard(codedeploy=FinishesFirst(previous, dep("d-CHK0000U1", previous_revision=V15), status=status))


def guard_facts(guard: Guard, deployment_id: str) -> list[LedgerEntry]:
    """The STOP and ROLLBACK facts the KPIs count for the deployment (its change id or naming it)."""
    return [
        e
        for e in guard.ledger.items.values()
        if e.kind in (EntryKind.STOP, EntryKind.ROLLBACK)
        and (e.change_id == f"codedeploy:{deployment_id}" or e.body.get("deployment_id") == deployment_id)
    ]


def test_a_release_that_succeeded_before_the_stop_is_not_a_stop_and_is_rolled_back_in_the_bake_window():
    """CodeDeploy answers DeploymentAlreadyCompletedException: nothing was stopped. The alarm decides
    again and the bake-window redeploy applies; no guard stop, no "stopping" alert, the slot given back."""
    guard = race_guard("Succeeded")
    outcome = guard.alarm()
    assert outcome.verdict == "ROLLED_BACK"
    ((new, revision, _),) = guard.codedeploy.redeploys
    assert revision == V15
    entries = guard.entries("codedeploy:d-CHK0000U1")
    result = entries["STOP#already-completed"]
    assert result.kind is EntryKind.DEPLOYMENT and result.verdict is None
    assert result.body["status_after"] == "Succeeded" and result.body["failed_change"] is False
    assert [e.entry for e in guard_facts(guard, "d-CHK0000U1") if e.kind is EntryKind.STOP] == []
    assert entries["ROLLBACK"].verdict == "FAILED_CHANGE" and entries[f"ROLLBACK#{new}"].body["redeploy_id"] == new
    # The alerts say what happened: a rollback, never a stop.
    alerts = [a.body["alert"] for a in guard.alerts()]
    assert [a["kind"] for a in alerts] == ["rollback"]
    assert not any("stopping" in (a["subject"] + a["summary"]).lower() for a in alerts)
    # The stop's slot is given back; the redeploy took the next one.
    cap = guard.entries("guard:stops:123456789012:us-east-1:checkout")
    assert sorted(cap) == ["SLOT#000001", "SLOT#000001#released", "SLOT#000002"]
    assert guard.service._cap("checkout", guard.policy, "123456789012", "us-east-1").used == 1
    # The KPIs: rolled back (a failed change), not stopped.
    period = Period.parse("2026-11-24")
    (record,) = [
        d for d in build_population(guard.ledger.items.values(), period).deployments if d.deployment_id == "d-CHK0000U1"
    ]
    assert record.rolled_back and not record.stopped
    # The alarm again: nothing twice.
    assert guard.alarm("alarm-sns.json").duplicate
    assert len(guard.codedeploy.redeploys) == 1 and len(guard.alerts()) == 1


def test_a_deployment_codedeploy_stopped_first_is_a_failed_change_but_not_the_guards_stop():
    guard = race_guard("Stopped")
    outcome = guard.alarm()
    assert outcome.verdict == "NO_ACTION" and guard.codedeploy.redeploys == []
    result = guard.entries("codedeploy:d-CHK0000U1")["STOP#already-completed"]
    assert result.kind is EntryKind.DEPLOYMENT and result.verdict == "FAILED_CHANGE"
    assert result.body["state"] == "STOP" and result.body["stopped_by_guard"] is False
    assert "by CodeDeploy" in result.body["result"]
    assert guard_facts(guard, "d-CHK0000U1") == []
    (alert,) = [a.body["alert"] for a in guard.alerts()]
    assert alert["kind"] == "already-completed" and alert["subject"].startswith("Deployment d-CHK0000U1")
    assert "stopped by CodeDeploy" in alert["subject"] and "stopping" not in alert["summary"].lower()
    assert guard.service._cap("checkout", guard.policy, "123456789012", "us-east-1").used == 0
    period = Period.parse("2026-11-24")
    (record,) = [
        d for d in build_population(guard.ledger.items.values(), period).deployments if d.deployment_id == "d-CHK0000U1"
    ]
    assert record.failed and not record.stopped and not record.rolled_back


def test_a_release_the_health_check_finds_succeeded_before_its_stop_is_alerted_not_recorded_as_stopped():
    """The health check has no bake window: nothing is redeployed, and the alert says nothing was stopped."""
    guard = race_guard("Succeeded")
    guard.cloudwatch.metrics = SICK
    guard.clock.at = START + timedelta(minutes=5)
    outcome = guard.service.handle(SWEEP)
    assert outcome.verdict == "NO_ACTION" and guard.codedeploy.redeploys == []
    assert guard.entries("codedeploy:d-CHK0000U1")["STOP#already-completed"].body["status_after"] == "Succeeded"
    assert guard_facts(guard, "d-CHK0000U1") == []
    (alert,) = [a.body["alert"] for a in guard.alerts()]
    assert alert["kind"] == "already-completed" and alert["severity"] == "high"
    assert alert["subject"].startswith(
        "Deployment d-CHK0000U1 (checkout/checkout-prod) had already succeeded: not stopped"
    )
    assert "roll back by hand" in alert["remediation"]


class StopAnswering(FakeCodeDeploy):
    """``StopDeployment`` answering ``status`` with no rollback deployment id yet: ``Pending`` (accepted,
    not carried out yet) or ``Forced`` (a valid value the API reference does not describe)."""

    def __init__(self, status: str, *deployments: Deployment) -> None:
        super().__init__(*deployments)
        self.status = status

    def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> Stopped:
        self.stops.append(deployment_id)
        return Stopped(self.status)


def test_a_pending_stop_is_recorded_as_pending_not_as_a_stop_without_rollback():
    guard = Guard(codedeploy=StopAnswering("Pending", dep("d-CHK0000U1")))
    guard.cloudwatch.metrics = SICK
    outcome = guard.alarm()
    assert outcome.verdict == "STOPPED" and guard.codedeploy.stops == ["d-CHK0000U1"]
    entries = guard.entries("codedeploy:d-CHK0000U1")
    assert "STOP#no-rollback" not in entries
    result = entries["STOP#pending"]
    assert result.kind is EntryKind.STOP and result.body["stop_status"] == "Pending"
    assert result.body["rollback_deployment_id"] is None
    assert "no rollback" not in result.body["result"]
    assert "starts the rollback deployment when it completes" in result.body["result"]
    # A redelivered alarm finds the stop done: no second StopDeployment.
    assert guard.alarm().duplicate and guard.codedeploy.stops == ["d-CHK0000U1"]


def test_a_stop_status_other_than_pending_or_succeeded_is_recorded_as_unknown_not_as_no_rollback():
    guard = Guard(codedeploy=StopAnswering("Forced", dep("d-CHK0000U1")))
    guard.cloudwatch.metrics = SICK
    outcome = guard.alarm()
    assert outcome.verdict == "STOPPED" and guard.codedeploy.stops == ["d-CHK0000U1"]
    entries = guard.entries("codedeploy:d-CHK0000U1")
    assert "STOP#no-rollback" not in entries
    result = entries["STOP#unknown"]
    assert result.kind is EntryKind.STOP and result.verdict == "FAILED_CHANGE"
    assert result.body["stop_status"] == "Forced" and "no rollback" not in result.body["result"]
    assert "'Forced'" in result.body["result"]
    # A redelivered alarm finds the stop done: no second StopDeployment.
    assert guard.alarm().duplicate and guard.codedeploy.stops == ["d-CHK0000U1"]


# -- CodeDeploy state changes ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sample", "state", "failed"),
    [
        ("deployment-start.json", "START", False),
        ("deployment-success.json", "SUCCESS", False),
        ("deployment-failure.json", "FAILURE", True),
        ("deployment-stop.json", "STOP", True),
    ],
)
def test_each_state_is_recorded_with_what_the_kpis_read(sample, state, failed):
    event = load_event(f"guard_deployment/{sample}")
    deployment_id = event["detail"]["deploymentId"]
    finished = None if state == "START" else START + timedelta(minutes=9)
    guard = Guard(
        dep(
            deployment_id,
            status={"START": "InProgress", "SUCCESS": "Succeeded", "FAILURE": "Failed", "STOP": "Stopped"}[state],
            complete_time=finished,
            rollback_deployment_id="d-RB0000001" if state == "STOP" else None,
        )
    )
    outcome = guard.service.handle(event)
    assert outcome.verdict == "RECORDED" and not outcome.duplicate
    entry = guard.entries(f"codedeploy:{deployment_id}")[f"DEPLOYMENT#{state}"]
    assert entry.kind is EntryKind.DEPLOYMENT
    assert entry.verdict == ("FAILED_CHANGE" if failed else None)
    body = entry.body
    assert (body["deployment_id"], body["state"], body["application"]) == (deployment_id, state, "checkout")
    assert body["started_at"] == START.isoformat()
    assert body["finished_at"] == (finished.isoformat() if finished else None)
    assert body["rolled_back"] is (state == "STOP")
    assert entry.ticket_id == "CHG-2002"
    assert guard.service.handle(event).duplicate


def test_a_failed_scale_out_deployment_is_recorded_but_not_a_failed_change():
    event = load_event("guard_deployment/deployment-failure.json")
    deployment_id = event["detail"]["deploymentId"]
    guard = Guard(
        dep(deployment_id, status="Failed", creator="autoscaling", complete_time=START + timedelta(minutes=4))
    )
    assert guard.service.handle(event).verdict == "RECORDED"
    entry = guard.entries(f"codedeploy:{deployment_id}")["DEPLOYMENT#FAILURE"]
    assert entry.verdict is None and entry.body["failed_change"] is False
    assert entry.body["not_release"].startswith("not a release: EC2 Auto Scaling launched instances")
    assert guard.alerts() == []


def test_a_failed_rollback_is_a_critical_alert_and_marked_as_a_rollback():
    event = load_event("guard_deployment/deployment-failure.json")
    guard = Guard(dep("d-CHK0000F1", status="Failed", creator="codeDeployRollback", rolled_back_from="d-CHK0000U1"))
    guard.service.handle(event)
    entry = guard.entries("codedeploy:d-CHK0000F1")["DEPLOYMENT#FAILURE"]
    assert entry.body["rollback_of"] == "d-CHK0000U1"
    (alert,) = guard.alerts()
    assert alert.body["alert"]["kind"] == "rollback-failed" and alert.body["alert"]["severity"] == "critical"


def test_a_success_records_when_its_bake_window_ends():
    guard = Guard(dep("d-CHK0000H1", status="Succeeded", complete_time=START + timedelta(minutes=12)), bake_minutes=30)
    guard.service.handle(load_event("guard_deployment/deployment-success.json"))
    body = guard.entries("codedeploy:d-CHK0000H1")["DEPLOYMENT#SUCCESS"].body
    assert body["bake_window_ends"] == (START + timedelta(minutes=42)).isoformat()


def test_the_ticket_comes_from_group_tags_when_the_description_has_none():
    guard = Guard(dep("d-CHK0000H1", description="checkout-api v15"))
    guard.codedeploy.tags["arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:checkout/checkout-prod"] = {
        "ChangeTicket": "CHG-7777"
    }
    guard.service.handle(load_event("guard_deployment/deployment-start.json"))
    assert guard.entries("codedeploy:d-CHK0000H1")["DEPLOYMENT#START"].ticket_id == "CHG-7777"


def test_an_event_for_an_unknown_deployment_is_still_recorded():
    guard = Guard()
    guard.service.handle(load_event("guard_deployment/deployment-start.json"))
    assert guard.entries("codedeploy:d-CHK0000H1")["DEPLOYMENT#START"].body["deployment_found"] is False


@pytest.mark.parametrize(
    "event",
    [
        [],
        {"detail-type": "Something Else", "detail": {}},
        {"detail-type": "CodeDeploy Deployment State-change Notification"},
    ],
)
def test_bad_input_is_a_typed_error_with_no_side_effects(event):
    guard = Guard(dep("d-CHK0000U1"))
    with pytest.raises(InvalidEventError):
        guard.service.handle(event)
    assert guard.ledger.items == {} and guard.codedeploy.stops == []


# -- issue 9: the health sweep in member accounts and other regions ------------------------------------
MEMBER_ACCOUNT = "222222222222"
REFUSING_ACCOUNT = "333333333333"


class PlacedCodeDeploy(FakeCodeDeploy):
    """Deployments that live in one (account, region) each: listed only there."""

    def __init__(self, scope: ThreadScope, placed: dict[str, tuple[str, str]], *deployments: Deployment) -> None:
        super().__init__(*deployments)
        self.scope, self.placed = scope, placed
        self.stopped_in: list[tuple[str, tuple[str | None, str | None]]] = []

    def list_in_flight(self, application: str, group: str) -> list[Deployment]:
        here = self.scope.current
        return [d for d in super().list_in_flight(application, group) if self.placed.get(d.deployment_id) == here]

    def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> Stopped:
        self.stopped_in.append((deployment_id, self.scope.current))
        return super().stop(deployment_id, auto_rollback=auto_rollback)


def test_the_health_sweep_checks_member_accounts_and_other_regions_and_reports_a_refused_role():
    scope = ThreadScope(refused=REFUSING_ACCOUNT)
    placed = {"d-HOME00001": ("123456789012", "us-east-1"), "d-MEMBEU001": (MEMBER_ACCOUNT, "eu-west-1")}
    guard = Guard(
        codedeploy=PlacedCodeDeploy(scope, placed, dep("d-HOME00001"), dep("d-MEMBEU001")),
        acting={"scope": scope, "member_accounts": (MEMBER_ACCOUNT, REFUSING_ACCOUNT), "regions": ("eu-west-1",)},
    )
    guard.cloudwatch.metrics = SICK
    guard.clock.at = START + timedelta(minutes=5)

    outcome = guard.service.handle(SWEEP)

    # Every account and region once (several at a time); the refused member is never entered.
    assert sorted(scope.visited) == [
        ("123456789012", "eu-west-1"),
        ("123456789012", "us-east-1"),
        (MEMBER_ACCOUNT, "eu-west-1"),
        (MEMBER_ACCOUNT, "us-east-1"),
    ]
    # Each unhealthy deployment is stopped where it runs, and its entries say where that is.
    assert sorted(guard.codedeploy.stopped_in) == [
        ("d-HOME00001", ("123456789012", "us-east-1")),
        ("d-MEMBEU001", (MEMBER_ACCOUNT, "eu-west-1")),
    ]
    health = guard.entries("codedeploy:d-MEMBEU001")["HEALTH"]
    assert (health.account, health.region, health.verdict) == (MEMBER_ACCOUNT, "eu-west-1", "UNHEALTHY")
    assert outcome.verdict == "STOPPED"
    refused = [r for r in outcome.reasons if f"account {REFUSING_ACCOUNT}" in r]
    assert len(refused) == 2 and all(r.startswith("could not check deployments' health in") for r in refused)
    denied = [e for e in guard.ledger.kinds("OUTAGE") if e.change_id.startswith(f"acting:{REFUSING_ACCOUNT}:")]
    assert len(denied) == 1  # one fact (and one alert) for the day, however many regions were refused


def test_a_health_sweep_near_its_deadline_starts_no_new_account_and_says_which_it_left():
    scope = ThreadScope()
    members = tuple(f"2222222222{i:02d}" for i in range(12))
    calls = {"n": 0}
    lock = threading.Lock()

    def time_left() -> float:  # 60 s at the start; 5 s once three account-regions have begun
        with lock:
            calls["n"] += 1
            return 60.0 if calls["n"] <= 4 else 5.0

    guard = Guard(
        codedeploy=PlacedCodeDeploy(scope, {}),
        acting={"scope": scope, "member_accounts": members, "regions": (), "sweep_workers": 1},
    )
    outcome = guard.service.handle(SWEEP, time_left)

    assert len(scope.visited) == 3  # the first call sets the margin (10 s); three starts found time
    assert ("123456789012", "us-east-1") in scope.visited  # its own account is visited first
    assert any(a.startswith("reached its deadline before 10 account-region(s)") for a in outcome.actions)
    assert len([r for r in outcome.reasons if r.startswith("not checked this run: account 2222222222")]) == 10


def test_the_members_order_changes_from_run_to_run_and_is_the_same_within_one():
    scope = ThreadScope()
    members = tuple(f"2222222222{i:02d}" for i in range(12))
    guard = Guard(
        codedeploy=PlacedCodeDeploy(scope, {}),
        acting={"scope": scope, "member_accounts": members, "regions": (), "sweep_workers": 1},
    )
    orders = []
    for minute in (0, 0, 1):
        scope.visited.clear()
        guard.clock.at = START + timedelta(minutes=minute)
        guard.service.handle(SWEEP)
        orders.append([account for account, _ in scope.visited])
    assert all(order[0] == "123456789012" for order in orders)  # its own account first, always
    assert orders[0] == orders[1]  # a repeated delivery of the same minute's schedule: the same order
    assert orders[0] != orders[2] and sorted(orders[0]) == sorted(orders[2])  # the next minute: another
