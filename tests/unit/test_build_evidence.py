"""build_evidence's service with in-memory fakes: what a report run writes to the ledger, and what it rejects."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from changeguard.adapters.dynamodb import entry_to_item
from changeguard.domain.errors import InvalidEventError
from changeguard.domain.kpis import KpiTargets
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.services.evidence import (
    BuildEvidenceService,
    DigestService,
    DigestStore,
    EvidenceService,
    request_of,
)
from fakes import FakeClock, InMemoryLedger, MemoryBucket, ShardedDayIndex, verdict_entry

AT = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
REPORTED = datetime(2026, 12, 5, 3, 15, tzinfo=UTC)  # November is settled and digested


def verdict(cid: str, value: str, **body: object) -> LedgerEntry:
    return verdict_entry(cid, value, at=AT, **body)


def service(index: ShardedDayIndex, alerts: InMemoryLedger) -> BuildEvidenceService:
    store = DigestStore(MemoryBucket())
    clock = FakeClock(REPORTED)
    digests = DigestService(function="write_digest", ledger=index, store=store, clock=clock)
    digests.run(datetime(2026, 11, 23, 3, 15, tzinfo=UTC))  # the chain starts (its first days before AT)
    digests.run(REPORTED)  # ...and catches up through the end of November
    evidence = EvidenceService(ledger=index, digests=store, tickets=None, targets=KpiTargets, clock=clock)
    return BuildEvidenceService(
        function="build_evidence",
        evidence=evidence,
        bucket=MemoryBucket(),
        location="s3://b",
        ledger=alerts,
        clock=clock,
    )


def test_each_alert_of_a_report_is_recorded_on_its_own():
    """A re-run that finds tampering records its ledger-integrity alert next to the earlier kpi-missed one."""
    index = ShardedDayIndex([entry_to_item(verdict("c-1", "NO_TICKET")), entry_to_item(verdict("c-2", "AUTHORIZED"))])
    alerts = InMemoryLedger()
    build = service(index, alerts)
    request = {"report": "monthly", "period": "2026-11"}
    first = build.handle(request)
    assert first.alert_ids == ["report:monthly:2026-11/build_evidence/kpi-missed"]

    edited = entry_to_item(verdict("c-1", "NO_TICKET"))
    edited["body"]["S"] = json.dumps(json.loads(edited["body"]["S"]) | {"note": "edited"})
    for partition in index.partitions.values():
        partition[:] = [edited if i["change_id"]["S"] == "c-1" else i for i in partition]

    second = build.handle(request)
    assert second.alert_ids == ["report:monthly:2026-11/build_evidence/ledger-integrity"]
    assert "alerted: ledger-integrity" in second.actions
    assert "already recorded for this report: kpi-missed" in second.actions
    assert {e.entry for e in alerts.items.values()} == {
        "ALERT#build_evidence#kpi-missed",
        "ALERT#build_evidence#ledger-integrity",
    }
    third = build.handle(request)
    assert third.alert_ids == []
    assert "already recorded for this report: kpi-missed, ledger-integrity" in third.actions


def test_a_report_schedule_stamped_in_the_future_is_rejected_before_anything_is_written():
    """It would report on a period not over yet, and its alert keys would swallow the real report's alerts."""
    index = ShardedDayIndex([entry_to_item(verdict("c-1", "NO_TICKET"))])
    alerts = InMemoryLedger()
    build = service(index, alerts)
    event = {
        "version": "0",
        "id": "7c8d9e0f-1a2b-4c3d-9e8f-0a1b2c3d4e02",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2027-01-01T06:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/changeguard-dev-monthly-kpi-report"],
        "detail": {},
    }
    with pytest.raises(InvalidEventError, match="after now"):
        build.handle(event)
    assert isinstance(build.bucket, MemoryBucket) and build.bucket.objects == {} and alerts.items == {}
    outcome = build.handle(event | {"time": "2026-12-01T06:00:00Z"})  # the real monthly run for November
    assert outcome.change_id == "report:monthly:2026-11"


def test_an_on_demand_report_of_a_period_not_over_is_rejected_before_anything_is_written():
    """A preview of December on the 10th would record December's kpi-missed alert; the scheduled run on
    January 1st, which sees the whole month, would then find it "already recorded" and alert no one."""
    index = ShardedDayIndex([entry_to_item(verdict("c-1", "NO_TICKET"))])
    alerts = InMemoryLedger()
    build = service(index, alerts)  # the clock: 2026-12-05
    for request in (
        {"report": "monthly", "period": "2026-12"},
        {"report": "quarterly", "period": "2026-Q4"},
        {"report": "custom", "from": "2026-11-01", "to": "2026-12-05"},  # to is inclusive: ends on the 6th
    ):
        with pytest.raises(InvalidEventError, match="after now"):
            build.handle(request)
    assert isinstance(build.bucket, MemoryBucket) and build.bucket.objects == {} and alerts.items == {}
    # A period that ended, even just now, is reported.
    ended = build.handle({"report": "custom", "from": "2026-11-01", "to": "2026-12-04"})
    assert ended.change_id == "report:custom:2026-11-01..2026-12-04"
    assert (
        request_of({"report": "monthly", "period": "2026-11"}, datetime(2026, 12, 1, tzinfo=UTC))[1].label == "2026-11"
    )


@pytest.mark.parametrize(
    "request_",
    [
        {"report": "custom", "from": "2026-01-01", "to": "9999-12-31"},
        {"report": "custom", "from": "0001-01-01", "to": "9999-12-30"},
        {"report": "quarterly", "period": "9999-12-31"},
        {"report": "weekly", "period": "9999-W52"},
    ],
)
def test_a_report_request_out_of_range_is_a_typed_rejection(request_):
    """Near the ends of Python's dates a period's arithmetic raised OverflowError, which is no ValueError."""
    with pytest.raises(InvalidEventError, match="not a report request"):
        request_of(request_, REPORTED)


BAKE_START = datetime(2026, 11, 30, 23, 40, tzinfo=UTC)
BAKE_DONE = datetime(2026, 11, 30, 23, 50, tzinfo=UTC)
BAKE_ALARM = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)  # in the bake window, after midnight


def deployment_state(state: str, at: datetime, **body: object) -> LedgerEntry:
    return LedgerEntry(
        change_id="codedeploy:d-1",
        entry=f"DEPLOYMENT#{state}",
        kind=EntryKind.DEPLOYMENT,
        function="deployment_guard",
        event_time=at,
        recorded_at=at,
        body={"deployment_id": "d-1", "state": state, "started_at": BAKE_START.isoformat(), **body},
    )


def bake_rollback() -> LedgerEntry:
    """The guard's bake-window decision, filed at the time it was made (the next day)."""
    return LedgerEntry(
        change_id="codedeploy:d-1",
        entry="ROLLBACK",
        kind=EntryKind.ROLLBACK,
        function="deployment_guard",
        event_time=BAKE_ALARM,
        recorded_at=BAKE_ALARM,
        verdict="FAILED_CHANGE",
        body={"deployment_id": "d-1", "failed_change": True, "action": "ROLLBACK"},
    )


def test_a_rollback_in_the_bake_window_after_the_period_fails_the_release_of_the_period():
    """A release that succeeds at 23:50 on the month's last day and whose alarm fires at 00:05 is rolled
    back by the guard, which files the ROLLBACK on the next day. The month counts the deployment (it
    finished then), so the month's report reads that day's ROLLBACK and STOP entries, and nothing else."""
    from changeguard.domain.kpis import Period

    alarm = BAKE_ALARM

    next_day = verdict("c-2", "NO_TICKET").model_copy(update={"event_time": alarm, "recorded_at": alarm})
    recheck = LedgerEntry(
        change_id="c-1",
        entry="RECHECK#2026-12-01",
        kind=EntryKind.RECHECK,
        function="follow_up",
        event_time=alarm,
        recorded_at=alarm,
        verdict="AUTHORIZED",
        body={"result": "approved late"},
    )
    entries = [
        verdict("c-1", "NO_TICKET"),
        deployment_state("START", BAKE_START),
        deployment_state("SUCCESS", BAKE_DONE, finished_at=BAKE_DONE.isoformat()),
        bake_rollback(),
        next_day,
        recheck,
    ]
    index = ShardedDayIndex(entry_to_item(e) for e in entries)

    def report(period: str, at: datetime):
        evidence = EvidenceService(ledger=index, digests=None, tickets=None, targets=KpiTargets, clock=FakeClock(at))
        return evidence.build(Period.parse(period)).report

    november = report("2026-11", REPORTED)
    (d,) = november.population.deployments
    assert d.deployment_id == "d-1" and d.rolled_back and d.failed
    assert november.kpi("change_failure_rate").value == 100.0
    # Nothing else of December 1st counts in November: not its change, not its recheck of c-1.
    assert [(c.change_id, c.verdict) for c in november.population.changes] == [("c-1", "NO_TICKET")]
    assert "RECHECK" not in november.population.activity
    december = report("2026-12", datetime(2027, 1, 5, tzinfo=UTC))
    assert december.population.deployments == ()  # counted once, in the month it finished
    assert [c.change_id for c in december.population.changes] == ["c-2"]


def test_deleting_a_look_ahead_rollback_fails_the_verification_of_the_period_it_decides():
    """The next day's ROLLBACK fails a release of the period (above), so the period's verification
    checks that day against its digest once it is written: deleting the ROLLBACK afterwards turns the
    failure into a success, and the pack that shows the changed figure must not say the ledger is OK.
    Before that day's digest exists (the weekly and monthly runs come first), it is left out, never
    called undigested."""
    from changeguard.domain.kpis import Period

    index = ShardedDayIndex(
        entry_to_item(e)
        for e in [
            verdict("c-1", "AUTHORIZED"),
            deployment_state("START", BAKE_START),
            deployment_state("SUCCESS", BAKE_DONE),
            bake_rollback(),
        ]
    )
    bucket = MemoryBucket()

    def digest_at(at: datetime) -> None:
        DigestService(function="write_digest", ledger=index, store=DigestStore(bucket), clock=FakeClock(at)).run(at)

    def report(at: datetime):
        evidence = EvidenceService(
            ledger=index, digests=DigestStore(bucket), tickets=None, targets=KpiTargets, clock=FakeClock(at)
        )
        return evidence.build(Period.parse("2026-11")).report

    digest_at(datetime(2026, 11, 3, 3, 15, tzinfo=UTC))
    digest_at(datetime(2026, 12, 2, 3, 15, tzinfo=UTC))  # through 30 Nov; 1 Dec is not digested yet
    early = report(datetime(2026, 12, 2, 5, 30, tzinfo=UTC))  # a run before 1 Dec is digested
    assert early.verification.ok and date(2026, 12, 1) not in {d.day for d in early.verification.days}
    digest_at(datetime(2026, 12, 3, 3, 15, tzinfo=UTC))  # 1 Dec
    at = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
    honest = report(at)
    assert honest.kpi("change_failure_rate").value == 100.0 and honest.verification.ok
    for partition in index.partitions.values():  # someone deletes 1 Dec's ROLLBACK
        partition[:] = [i for i in partition if i["entry"]["S"] != "ROLLBACK"]
    forged = report(at)
    assert forged.kpi("change_failure_rate").value == 0.0
    assert not forged.verification.ok, forged.verification.summary
    [day] = [d for d in forged.verification.days if d.day == date(2026, 12, 1)]
    assert day.missing == ("codedeploy:d-1|ROLLBACK",)
