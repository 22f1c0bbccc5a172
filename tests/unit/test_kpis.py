"""KPI arithmetic on hand-computed ledgers, edge cases included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from changeguard.domain.change import Actor, ActorKind, Change
from changeguard.domain.errors import ConfigurationError
from changeguard.domain.kpis import (
    MAX_CUSTOM_DAYS,
    KpiTargets,
    Period,
    PeriodError,
    PeriodKind,
    build_population,
    compute_kpis,
    days_to_read,
    weekly_series,
)
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.domain.tickets import Approval, Ticket, TicketType
from changeguard.domain.verdicts import Judgement, Reason, Severity, Verdict

Q3 = Period.parse("2026-Q3")
T = datetime(2026, 8, 3, 12, 0, tzinfo=UTC)  # a Monday in 2026-Q3
ACCOUNT = "123456789012"
ALICE = Actor(arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin/alice", kind=ActorKind.ASSUMED_ROLE, session_name="alice")


def res(name: str) -> tuple[str, ...]:
    return (f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-{name}",)


def verdict(
    cid: str,
    v: Verdict | str,
    at: datetime,
    *,
    ticket: str | None = None,
    approvals: tuple[timedelta, ...] | None = None,
    emergency: bool = False,
    resources: tuple[str, ...] | None = None,
    recorded: datetime | None = None,
) -> LedgerEntry:
    """A VERDICT entry shaped as correlate_change writes it; ``approvals`` are offsets before the change."""
    value = v.value if isinstance(v, Verdict) else v
    change = Change(
        change_id=cid,
        event_time=at,
        account=ACCOUNT,
        region="us-east-1",
        service="ec2",
        action="RunInstances",
        event_name="RunInstances",
        resources=res(cid) if resources is None else resources,
        actor=ALICE,
    )
    reasons = [Reason(verdict=Verdict(value) if value in Verdict.__members__ else Verdict.NO_TICKET, detail=value)]
    if emergency and value != Verdict.EMERGENCY.value:
        reasons.append(Reason(verdict=Verdict.EMERGENCY, detail="emergency"))
    judgement = Judgement(
        verdict=Verdict(value) if value in Verdict.__members__ else Verdict.NO_TICKET,
        reasons=tuple(reasons),
        severity=Severity.INFO,
        ticket_id=ticket,
    )
    body = {
        "change": change.model_dump(mode="json"),
        "judgement": judgement.model_dump(mode="json") | {"verdict": value},
        "mode": "observe",
    }
    if approvals is not None:
        body["ticket"] = {
            "ticket_id": ticket,
            "type": "emergency" if emergency else "normal",
            "status": "approved",
            "approvals": [
                {"approver": f"approver-{i}", "approved_at": (at - off).isoformat()} for i, off in enumerate(approvals)
            ],
        }
    return LedgerEntry(
        change_id=cid,
        entry="VERDICT",
        kind=EntryKind.VERDICT,
        function="correlate_change",
        event_time=at,
        recorded_at=recorded or at + timedelta(minutes=1),
        verdict=value,
        severity="info",
        ticket_id=ticket,
        account=ACCOUNT,
        region="us-east-1",
        body=body,
    )


def fact(kind: EntryKind, cid: str, at: datetime, suffix: str = "", **body: object) -> LedgerEntry:
    return LedgerEntry(
        change_id=cid,
        entry=f"{kind.value}#{at.isoformat()}{suffix}",
        kind=kind,
        function="someone_else",
        event_time=at,
        recorded_at=at,
        body=dict(body),
    )


def deployment(
    did: str,
    started: datetime,
    finished: datetime | None,
    state: str = "SUCCESS",
    **extra: object,
) -> list[LedgerEntry]:
    """The deployment guard's entries: one at the start, one at the finish (if finished)."""
    out = [
        fact(
            EntryKind.DEPLOYMENT,
            did,
            started,
            "#START",
            deployment_id=did,
            state="START",
            started_at=started.isoformat(),
        )
    ]
    if finished is not None:
        out.append(
            fact(
                EntryKind.DEPLOYMENT,
                did,
                finished,
                f"#{state}",
                deployment_id=did,
                state=state,
                started_at=started.isoformat(),
                finished_at=finished.isoformat(),
                **extra,
            )
        )
    return out


def kpis_of(entries, period=Q3, targets=None, tickets=None):
    population = build_population(entries, period, tickets)
    return population, {k.name: k for k in compute_kpis(population, targets)}


# -- no changes at all -----------------------------------------------------------------------------
def test_no_changes_at_all_gives_no_data_not_false_assurance():
    population, k = kpis_of([])
    assert population.changes == () and population.deployments == ()
    for name in (
        "change_success_rate",
        "change_failure_rate",
        "emergency_changes_pct",
        "rollback_rate",
        "changes_with_tickets_pct",
        "approval_lead_time_hours",
        "mean_time_to_deploy_minutes",
        "tag_compliance_pct",
    ):
        assert k[name].value is None, name
        assert k[name].met is None and k[name].status == "no data", name
    # Zero unauthorized changes is a fact, and it meets the target of 0.
    assert k["unauthorized_changes"].value == 0 and k["unauthorized_changes"].met is True
    assert all(sum(w.verdicts.values()) == 0 for w in weekly_series([], Q3))


# -- a hand-computed quarter -----------------------------------------------------------------------
H = timedelta(hours=1)


def quarter_ledger() -> list[LedgerEntry]:
    entries = [
        # Six authorized changes; lead times 2, 4, 6, 8, 10, 12 h (A1 had an older approval too).
        verdict("A1", Verdict.AUTHORIZED, T, ticket="CHG-1", approvals=(30 * H, 2 * H)),
        verdict("A2", Verdict.AUTHORIZED, T + 1 * H, ticket="CHG-2", approvals=(4 * H,)),
        verdict("A3", Verdict.AUTHORIZED, T + 2 * H, ticket="CHG-3", approvals=(6 * H,)),
        verdict("A4", Verdict.AUTHORIZED, T + 24 * H, ticket="CHG-4", approvals=(8 * H,)),
        verdict("A5", Verdict.AUTHORIZED, T + 7 * 24 * H, ticket="CHG-5", approvals=(10 * H,)),
        verdict("A6", Verdict.AUTHORIZED, T + 8 * 24 * H, ticket="CHG-6", approvals=(12 * H,)),
        # An emergency change, approved only afterwards (retroactively): no lead time.
        verdict("E1", Verdict.EMERGENCY, T + 3 * H, ticket="CHG-E", approvals=(-2 * H,), emergency=True),
        verdict("N1", Verdict.NO_TICKET, T + 4 * H),
        # Self-approved 1 h before: has a ticket, is unauthorized, lead time 1 h.
        verdict("S1", Verdict.SELF_APPROVED, T + 5 * H, ticket="CHG-S", approvals=(1 * H,)),
        # UNVERIFIED at first, re-checked to AUTHORIZED later: the recheck wins. No resources.
        verdict("U1", Verdict.UNVERIFIED, T + 6 * H, ticket="CHG-U", approvals=(5 * H,), resources=()),
        verdict("X1", Verdict.EXEMPT, T + 7 * H),
        # Outside the period on both sides: not counted.
        verdict("OLD", Verdict.NO_TICKET, Q3.start_at - timedelta(seconds=1)),
        verdict("NEW", Verdict.NO_TICKET, Q3.end_at),
        # Kinds the KPIs do not count.
        fact(EntryKind.CALENDAR, "calendar", T, state="CLOSED"),
        fact(EntryKind.OUTAGE, "outage:dynamodb", T, error="down"),
        # A6 marked for missing tags; N1 quarantined (an entry keyed by the resource, naming the change).
        fact(EntryKind.MARK, "A6", T + 9 * 24 * H),
        fact(EntryKind.QUARANTINE, "quarantine:i-N1", T + 5 * H, change_id="N1"),
        fact(EntryKind.RELEASE, "quarantine:i-N1", T + 30 * H, change_id="N1"),
    ]
    # The emergency follow-up's RECHECK: approved retroactively, the verdict stays EMERGENCY.
    retro = fact(EntryKind.RECHECK, "E1", T + 3 * H, "#1-retro-approved", result="retro-approved", verdict="EMERGENCY")
    entries.append(retro.model_copy(update={"verdict": "EMERGENCY", "recorded_at": T + 20 * H}))
    recheck = verdict("U1", Verdict.AUTHORIZED, T + 6 * H, ticket="CHG-U", approvals=(5 * H,), resources=())
    entries.append(
        recheck.model_copy(update={"entry": "RECHECK#1", "kind": EntryKind.RECHECK, "recorded_at": T + 40 * H})
    )
    # Deployments: D1 10 min and D2 20 min succeed; D3 fails; D4 is rolled back (and its rollback
    # deployment D4r is not a deployment of its own); D5 is stopped by the guard.
    d = T + 2 * 24 * H
    entries += deployment("D1", d, d + timedelta(minutes=10))
    entries += deployment("D2", d + H, d + H + timedelta(minutes=20))
    entries += deployment("D3", d + 2 * H, d + 2 * H + timedelta(minutes=5), "FAILURE")
    entries += deployment("D4", d + 3 * H, d + 3 * H + timedelta(minutes=7), "SUCCESS")
    entries.append(fact(EntryKind.ROLLBACK, "D4", d + 3 * H + timedelta(minutes=8), deployment_id="D4"))
    entries += deployment("D4r", d + 3 * H + timedelta(minutes=8), d + 4 * H, rollback_of="D4")
    entries += deployment("D5", d + 5 * H, d + 5 * H + timedelta(minutes=3), "STOP")
    entries.append(fact(EntryKind.STOP, "D5", d + 5 * H + timedelta(minutes=2), deployment_id="D5"))
    return entries


def test_a_hand_computed_quarter():
    population, k = kpis_of(quarter_ledger())
    assert {c.change_id for c in population.changes} == {
        "A1", "A2", "A3", "A4", "A5", "A6", "E1", "N1", "S1", "U1", "X1"
    }  # fmt: skip
    governed = 10  # all but X1 (EXEMPT)
    assert len(population.governed) == governed
    # Emergency: E1 of 10 governed.
    assert k["emergency_changes_pct"].value == pytest.approx(10.0)
    assert (k["emergency_changes_pct"].numerator, k["emergency_changes_pct"].denominator) == (1, governed)
    # With tickets: all governed but N1.
    assert k["changes_with_tickets_pct"].value == pytest.approx(90.0)
    # Unauthorized: N1 and S1. U1 was re-checked to AUTHORIZED, E1 is EMERGENCY.
    assert k["unauthorized_changes"].value == 2
    assert {c.change_id for c in population.unauthorized} == {"N1", "S1"}
    u1 = next(c for c in population.changes if c.change_id == "U1")
    assert (u1.first_verdict, u1.verdict) == ("UNVERIFIED", "AUTHORIZED")
    e1 = next(c for c in population.changes if c.change_id == "E1")
    assert (e1.verdict, e1.follow_up) == ("EMERGENCY", ("retro-approved",))
    # Lead time: (2 + 4 + 6 + 8 + 10 + 12 + 1 + 5) / 8; E1's retroactive approval does not count.
    assert k["approval_lead_time_hours"].value == pytest.approx(48 / 8)
    assert k["approval_lead_time_hours"].denominator == 8
    # Tag compliance: 9 governed changes touched a resource (not U1); A6 marked, N1 quarantined.
    assert k["tag_compliance_pct"].value == pytest.approx(100 * 7 / 9)
    # Deployments: D1..D5 (D4r is a rollback deployment); D3, D4, D5 failed; D4 rolled back.
    assert [d.deployment_id for d in population.deployments] == ["D1", "D2", "D3", "D4", "D5"]
    assert [d.deployment_id for d in population.rollback_deployments] == ["D4r"]
    assert k["change_failure_rate"].value == pytest.approx(60.0)
    assert (k["change_failure_rate"].numerator, k["change_failure_rate"].denominator) == (3, 5)
    assert k["change_success_rate"].value == pytest.approx(40.0)
    assert k["rollback_rate"].value == pytest.approx(20.0)
    # Mean time to deploy: the successful D1 (10 min) and D2 (20 min).
    assert k["mean_time_to_deploy_minutes"].value == pytest.approx(15.0)
    # Activity and flags on the changes.
    assert population.activity["STOP"] == 1 and population.activity["ROLLBACK"] == 1
    assert population.activity["QUARANTINE"] == 1 and population.activity["RELEASE"] == 1
    n1 = next(c for c in population.changes if c.change_id == "N1")
    assert n1.quarantined and n1.released and n1.tag_compliant is False
    # Default targets: only the lead time and the time to deploy are met.
    statuses = {name: kpi.status for name, kpi in k.items()}
    assert statuses == {
        "change_success_rate": "MISSED",
        "change_failure_rate": "info",
        "emergency_changes_pct": "MISSED",
        "rollback_rate": "MISSED",
        "changes_with_tickets_pct": "MISSED",
        "unauthorized_changes": "MISSED",
        "approval_lead_time_hours": "met",
        "mean_time_to_deploy_minutes": "met",
        "tag_compliance_pct": "MISSED",
    }


def test_weekly_series_adds_up_to_the_period():
    entries = quarter_ledger()
    population, _ = kpis_of(entries)
    weeks = weekly_series(entries, Q3)
    assert weeks[0].start == Q3.start and weeks[-1].end == Q3.end
    assert sum(sum(w.verdicts.values()) for w in weeks) == len(population.changes)
    by_week = {w.label: w for w in weeks}
    assert sum(by_week["2026-W32"].verdicts.values()) == 9  # Monday 3 August to Sunday 9 August
    assert by_week["2026-W33"].verdicts == {"AUTHORIZED": 2}


# -- every change a rollback -----------------------------------------------------------------------
def test_every_deployment_rolled_back():
    d = T
    entries: list[LedgerEntry] = []
    for i in range(3):
        start = d + i * H
        entries += deployment(f"D{i}", start, start + timedelta(minutes=6), "SUCCESS", rolled_back=True)
        entries += deployment(
            f"D{i}r", start + timedelta(minutes=7), start + timedelta(minutes=15), rollback_of=f"D{i}"
        )
        # Two rollback decisions for one deployment (duplicate root causes) still count once.
        entries.append(fact(EntryKind.ROLLBACK, f"D{i}", start + timedelta(minutes=6), deployment_id=f"D{i}"))
        entries.append(fact(EntryKind.ROLLBACK, f"D{i}", start + timedelta(minutes=6), "#again", deployment_id=f"D{i}"))
    population, k = kpis_of(entries)
    assert len(population.deployments) == 3 and len(population.rollback_deployments) == 3
    assert k["rollback_rate"].value == 100.0 and (k["rollback_rate"].numerator, k["rollback_rate"].denominator) == (
        3,
        3,
    )
    assert k["change_success_rate"].value == 0.0 and k["change_success_rate"].met is False
    assert k["change_failure_rate"].value == 100.0
    assert k["mean_time_to_deploy_minutes"].value is None  # no successful deployment to time
    # No change was judged: the change KPIs have no data, and nothing is unauthorized.
    assert k["changes_with_tickets_pct"].value is None and k["unauthorized_changes"].value == 0


def test_a_deployment_rolled_back_through_its_rollback_deployment_only():
    entries = deployment("D1", T, T + timedelta(minutes=5)) + deployment(
        "D2", T + timedelta(minutes=6), T + timedelta(minutes=9), rollback_of="D1"
    )
    _, k = kpis_of(entries)
    assert k["rollback_rate"].value == 100.0 and k["rollback_rate"].denominator == 1


def test_the_failure_rate_denominator_is_deployments_not_incidents():
    # One failed deployment out of four; three alerts (incidents) about it change nothing.
    entries: list[LedgerEntry] = []
    for i in range(4):
        start = T + i * H
        entries += deployment(f"D{i}", start, start + timedelta(minutes=5), "FAILURE" if i == 0 else "SUCCESS")
    entries += [
        fact(EntryKind.ALERT, "D0", T + timedelta(minutes=6), f"#{n}", alert={"alert_id": f"a{n}"}) for n in range(3)
    ]
    _, k = kpis_of(entries)
    assert (k["change_failure_rate"].numerator, k["change_failure_rate"].denominator) == (1, 4)
    assert k["change_failure_rate"].value == 25.0 and k["change_success_rate"].value == 75.0


@pytest.mark.parametrize("marked", ["creator", "not_release"])
def test_deployments_that_are_not_releases_are_listed_apart_never_counted(marked: str):
    # A failed scale-out (EC2 Auto Scaling's deployment of the current revision) is an instance that
    # did not come up, not a failed change: neither in the failure rate nor in flight.
    why = {"not_release": "not a release: EC2 Auto Scaling launched instances"} if marked == "not_release" else {}
    scale_out = {"creator": "autoscaling", **why}
    entries = deployment("D1", T, T + timedelta(minutes=5))
    entries += deployment("S1", T + H, T + H + timedelta(minutes=3), "FAILURE", **scale_out)
    running = deployment("S2", T + 2 * H, None)
    running[0] = running[0].model_copy(update={"body": {**running[0].body, **scale_out}})
    entries += running
    population, k = kpis_of(entries)
    assert [d.deployment_id for d in population.deployments] == ["D1"]
    assert [d.deployment_id for d in population.not_releases] == ["S1"]
    assert population.in_flight == ()
    assert (k["change_failure_rate"].numerator, k["change_failure_rate"].denominator) == (0, 1)


# -- a period boundary in the middle of a deployment -----------------------------------------------
def test_a_deployment_across_the_period_boundary_counts_once_in_the_later_period():
    start = Q3.start_at - timedelta(minutes=10)  # 2026-06-30T23:50Z, in Q2
    entries = deployment("D1", start, start + timedelta(minutes=30))  # finishes 2026-07-01T00:20Z, in Q3
    q2 = Period.parse("2026-Q2")
    pop2, k2 = kpis_of(entries, q2)
    assert pop2.deployments == () and [d.deployment_id for d in pop2.in_flight] == ["D1"]
    assert k2["change_success_rate"].value is None
    assert "1 in flight" in k2["change_success_rate"].note
    pop3, k3 = kpis_of(entries, Q3)
    assert [d.deployment_id for d in pop3.deployments] == ["D1"] and pop3.in_flight == ()
    # Its whole duration counts, the part before the period too: 30 min, which misses "< 30 min".
    assert k3["mean_time_to_deploy_minutes"].value == pytest.approx(30.0)
    assert k3["mean_time_to_deploy_minutes"].met is False
    # The report's reader looks back far enough to see the start entry.
    assert start.date() in set(days_to_read(Q3))


@pytest.mark.parametrize("late", ["START", "READY", "SUCCESS"])
def test_a_state_delivered_after_the_failure_does_not_undo_it(late: str):
    # EventBridge does not order events and retries them: the FAILURE is recorded first, then the
    # deployment's START (or a stray SUCCESS) is delivered and recorded a minute later.
    start, end = T, T + timedelta(minutes=5)
    failure, _ = reversed(deployment("D7", start, end, "FAILURE"))
    stray = fact(
        EntryKind.DEPLOYMENT,
        "D7",
        start,
        f"#{late}",
        deployment_id="D7",
        state=late,
        started_at=start.isoformat(),
    ).model_copy(update={"recorded_at": end + timedelta(minutes=1)})
    population, k = kpis_of([failure, stray])
    (d,) = population.deployments
    assert d.state == "FAILURE" and d.failed and not d.succeeded
    assert k["change_failure_rate"].value == 100.0
    assert k["mean_time_to_deploy_minutes"].denominator == 0


def test_a_start_delivered_after_the_success_keeps_it_finished():
    start, end = T, T + timedelta(minutes=5)
    _, success = deployment("D8", start, end)
    stray = fact(EntryKind.DEPLOYMENT, "D8", start, "#START", deployment_id="D8", state="START").model_copy(
        update={"recorded_at": end + timedelta(minutes=1)}
    )
    population, k = kpis_of([success, stray])
    (d,) = population.deployments
    assert d.state == "SUCCESS" and d.succeeded
    assert k["mean_time_to_deploy_minutes"].value == pytest.approx(5.0)


def test_a_deployment_still_running_at_the_end_is_in_flight_not_counted():
    entries = deployment("D9", Q3.end_at - timedelta(minutes=5), None)
    population, k = kpis_of(entries)
    assert population.deployments == () and [d.deployment_id for d in population.in_flight] == ["D9"]
    assert k["change_success_rate"].denominator == 0


def test_changes_at_the_boundaries_belong_to_one_period_only():
    first = verdict("first", Verdict.AUTHORIZED, Q3.start_at, ticket="CHG-1", approvals=(H,))
    last = verdict("last", Verdict.AUTHORIZED, Q3.end_at - timedelta(microseconds=1), ticket="CHG-1", approvals=(H,))
    after = verdict("after", Verdict.AUTHORIZED, Q3.end_at, ticket="CHG-1", approvals=(H,))
    q3, _ = kpis_of([first, last, after])
    q4, _ = kpis_of([first, last, after], Period.parse("2026-Q4"))
    assert [c.change_id for c in q3.changes] == ["first", "last"]
    assert [c.change_id for c in q4.changes] == ["after"]


# -- robustness ------------------------------------------------------------------------------------
def test_an_unknown_verdict_counts_as_unauthorized():
    population, k = kpis_of([verdict("Z1", "SOMETHING_NEW", T)])
    assert population.changes[0].verdict == "SOMETHING_NEW"
    assert k["unauthorized_changes"].value == 1


def test_approvals_come_from_the_ticket_source_when_the_verdict_has_no_snapshot():
    entry = verdict("A1", Verdict.AUTHORIZED, T, ticket="CHG-9")
    ticket = Ticket(
        ticket_id="CHG-9",
        type=TicketType.NORMAL,
        approvals=(Approval(approver="bob", approved_at=T - 3 * H), Approval(approver="carol", approved_at=T + H)),
    )
    population, k = kpis_of([entry], tickets={"CHG-9": ticket})
    assert population.changes[0].approvals_known
    assert k["approval_lead_time_hours"].value == pytest.approx(3.0)
    population, k = kpis_of([entry])
    assert not population.changes[0].approvals_known and k["approval_lead_time_hours"].value is None


# -- targets ---------------------------------------------------------------------------------------
def test_targets_are_configurable_and_unknown_names_rejected():
    entries = quarter_ledger()
    _, k = kpis_of(entries, targets=KpiTargets.from_overrides({"emergency_changes_pct": 15, "unauthorized_changes": 2}))
    assert k["emergency_changes_pct"].met is True and k["emergency_changes_pct"].target == 15
    assert k["unauthorized_changes"].met is True
    with pytest.raises(ConfigurationError):
        KpiTargets.from_overrides({"emergency_change_pct": 15})
    policy = Policy.from_parameters({"/changeguard/dev/kpi-targets": '{"rollback_rate": 5}'})
    assert KpiTargets.from_overrides(policy.kpi_targets).rollback_rate == 5
    with pytest.raises(ConfigurationError):
        Policy.from_parameters({"/changeguard/dev/kpi-targets": '{"rollbak_rate": 5}'})
    assert Policy.from_parameters({"/changeguard/dev/kpi-targets": "{}"}).kpi_targets == {}


def test_default_targets_are_the_issues():
    t = KpiTargets()
    assert (t.change_success_rate, t.emergency_changes_pct, t.rollback_rate) == (95, 2, 2)
    assert (t.changes_with_tickets_pct, t.approval_lead_time_hours, t.mean_time_to_deploy_minutes) == (100, 48, 30)
    assert (t.tag_compliance_pct, t.unauthorized_changes) == (100, 0)


# -- periods ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind", "start", "end"),
    [
        ("2026-Q3", PeriodKind.QUARTER, date(2026, 7, 1), date(2026, 10, 1)),
        ("2026-Q4", PeriodKind.QUARTER, date(2026, 10, 1), date(2027, 1, 1)),
        ("2026-11", PeriodKind.MONTH, date(2026, 11, 1), date(2026, 12, 1)),
        ("2026-12", PeriodKind.MONTH, date(2026, 12, 1), date(2027, 1, 1)),
        ("2026-W47", PeriodKind.WEEK, date(2026, 11, 16), date(2026, 11, 23)),
        ("2026", PeriodKind.YEAR, date(2026, 1, 1), date(2027, 1, 1)),
        ("2026-11-21", PeriodKind.DAY, date(2026, 11, 21), date(2026, 11, 22)),
        ("2026-11-01..2026-11-30", PeriodKind.CUSTOM, date(2026, 11, 1), date(2026, 12, 1)),
    ],
)
def test_periods_parse(text, kind, start, end):
    period = Period.parse(text)
    assert (period.kind, period.start, period.end) == (kind, start, end)


@pytest.mark.parametrize("text", ["2026-Q5", "2026-13", "Q3", "2026-11-30..2026-11-01", ""])
def test_bad_periods_are_rejected(text):
    with pytest.raises(PeriodError):
        Period.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31",  # its end, the next day, is no date (OverflowError, not a ValueError)
        "9999-W52",  # ends in year 10000
        "2026-01-01..9999-12-31",
        "0001-01-01",  # a report reads DEPLOYMENT_LOOKBACK before the period
        "0001-01",
        "2025-01-01..2026-02-05",  # 401 days: longer than MAX_CUSTOM_DAYS
    ],
)
def test_periods_out_of_range_or_too_long_are_typed_rejections(text):
    with pytest.raises(PeriodError):
        Period.parse(text)


def test_a_custom_period_covers_a_soc2_type_ii_year_with_room_to_spare():
    assert MAX_CUSTOM_DAYS == 400
    assert Period.between(date(2025, 1, 1), date(2026, 2, 4)).days()[-1] == date(2026, 2, 4)  # 400 days
    with pytest.raises(PeriodError, match="at most 400"):
        Period.between(date(2025, 1, 1), date(2026, 2, 5))
    with pytest.raises(PeriodError):
        Period.previous(PeriodKind.QUARTER, datetime(1, 2, 1, tzinfo=UTC))  # before year 1: no date


def test_the_previous_complete_period():
    monday = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    assert Period.previous(PeriodKind.WEEK, monday).label == "2026-W47"
    assert Period.previous(PeriodKind.MONTH, datetime(2026, 12, 1, 5, 30, tzinfo=UTC)).label == "2026-11"
    assert Period.previous(PeriodKind.QUARTER, datetime(2027, 1, 3, 6, 0, tzinfo=UTC)).label == "2026-Q4"
    assert Period.previous(PeriodKind.QUARTER, datetime(2026, 10, 3, 6, 0, tzinfo=UTC)).label == "2026-Q3"


def test_the_deployment_guards_entries_as_it_files_them():
    """Stops filed under the deployment's change id, slot bookkeeping, and a redeployment marker."""

    def dep(did: str, at: datetime, state: str, **body: object) -> LedgerEntry:
        e = fact(EntryKind.DEPLOYMENT, f"codedeploy:{did}", at, f"#{state}", deployment_id=did, state=state, **body)
        return e.model_copy(update={"entry": f"DEPLOYMENT#{state}"})

    s1, s2 = T, T + H
    entries = [
        dep("d-1", s1, "START", started_at=s1.isoformat()),
        dep(
            "d-1",
            s1 + 9 * timedelta(minutes=1),
            "STOP",
            started_at=s1.isoformat(),
            finished_at=(s1 + 9 * timedelta(minutes=1)).isoformat(),
        ),
        # The stop itself, filed under the deployment's change id without naming it in the body.
        fact(EntryKind.ROLLBACK, "codedeploy:d-1", s1 + 8 * timedelta(minutes=1), "#STOP", result="stopped"),
        # The stop cap's slot: bookkeeping for the application, about no deployment in particular.
        fact(EntryKind.STOP, "cap:checkout", s1, "#SLOT", for_deployment="d-1"),
        dep("d-2", s2, "START", started_at=s2.isoformat()),
        dep(
            "d-2",
            s2 + 5 * timedelta(minutes=1),
            "SUCCESS",
            started_at=s2.isoformat(),
            finished_at=(s2 + 5 * timedelta(minutes=1)).isoformat(),
        ),
        dep("d-3", s2, "START", started_at=s2.isoformat()),
        dep(
            "d-3",
            s2 + 4 * timedelta(minutes=1),
            "SUCCESS",
            started_at=s2.isoformat(),
            finished_at=(s2 + 4 * timedelta(minutes=1)).isoformat(),
        ),
        # The guard redeployed the last good revision as d-3 over d-2: d-3 is the remedy.
        fact(EntryKind.ROLLBACK, "d-3", s2 + 6 * timedelta(minutes=1), "#guard", rollback_of="d-2"),
    ]
    population, k = kpis_of(entries)
    assert [d.deployment_id for d in population.deployments] == ["d-1", "d-2"]
    assert [d.deployment_id for d in population.rollback_deployments] == ["d-3"]
    d1, d2 = population.deployments
    assert d1.rolled_back and d1.failed and d2.rolled_back and d2.failed
    assert k["rollback_rate"].value == 100.0 and k["change_failure_rate"].denominator == 2


def test_a_change_is_quarantined_only_once_its_resource_was_contained():
    """The tag enforcer writes the quarantine's intent before its calls, then ``#contained`` or ``#failed``;
    observe mode writes ``#observe``. Only containment makes the change's ``quarantined`` flag true,
    and every one of them still counts the change as not tag-compliant."""
    step = "saved before containing; QUARANTINE#<time>#contained or #failed says how it went"
    at = T + 5 * H
    entries = [verdict(cid, Verdict.NO_TICKET, T + i * H) for i, cid in enumerate(("C1", "F1", "P1", "O1", "R1"))]
    entries += [
        # C1: intent, then contained.
        fact(EntryKind.QUARANTINE, "resource:i-C1", at, change_id="C1", step=step),
        fact(EntryKind.QUARANTINE, "resource:i-C1", at, "#contained", change_id="C1"),
        # F1: intent, then the calls failed.
        fact(EntryKind.QUARANTINE, "resource:i-F1", at, change_id="F1", step=step),
        fact(EntryKind.QUARANTINE, "resource:i-F1", at, "#failed", change_id="F1", error="AccessDenied"),
        # P1: an intent with no outcome yet (the run is still containing it, or died).
        fact(EntryKind.QUARANTINE, "resource:i-P1", at, change_id="P1", step=step),
        # O1: observe mode reports what it would have done.
        fact(EntryKind.QUARANTINE, "resource:i-O1", at, "#observe", change_id="O1"),
        # R1: contained again after its owner changed it.
        fact(EntryKind.QUARANTINE, "resource:i-R1", at, "#recontained-0123456789abcdef", change_id="R1"),
    ]
    population, _ = kpis_of(entries)
    by_id = {c.change_id: c for c in population.changes}
    assert {cid for cid, c in by_id.items() if c.quarantined} == {"C1", "R1"}
    assert all(c.tag_compliant is False for c in by_id.values())
    assert by_id["F1"].marked and by_id["P1"].marked and by_id["O1"].marked
