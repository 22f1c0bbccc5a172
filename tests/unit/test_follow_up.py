"""The emergency follow-up: retroactive approvals, overdue deadlines, re-judging UNVERIFIED changes, outages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from changeguard.domain.change import Actor, ActorKind, Change
from changeguard.domain.errors import ConfigurationError, InvalidEventError
from changeguard.domain.follow_up import FollowUpResult, tracked_from
from changeguard.domain.kpis import Period, build_population
from changeguard.domain.ledger import EntryKind
from changeguard.domain.policy import Policy
from changeguard.domain.self_protection import SuiteResources
from changeguard.domain.tickets import Approval, Ticket, TicketStatus, TicketType
from changeguard.domain.verdicts import WINDOW_UNVERIFIED, Verdict
from changeguard.services.correlate import CorrelateService
from changeguard.services.follow_up import FollowUpService
from fakes import FakeCalendar, FakeClock, FakeTagReader, FakeTicketSource, InMemoryLedger
from sample_events import load_event

EVENT_TIME = datetime(2026, 11, 21, 23, 48, tzinfo=UTC)
DUE = EVENT_TIME + timedelta(hours=24)
ONCALL = Actor(
    arn="arn:aws:sts::123456789012:assumed-role/oncall-breakglass/frank@example.com",
    kind=ActorKind.ASSUMED_ROLE,
    session_issuer_arn="arn:aws:iam::123456789012:role/oncall-breakglass",
    session_name="frank@example.com",
    source_identity="frank@example.com",
)
DB = "arn:aws:rds:us-east-1:123456789012:db:orders-db"
BOB = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_ChangeApprover_1/bob@example.com"
CAROL = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_ChangeApprover_1/carol@example.com"
FRANK = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_ChangeApprover_1/frank@example.com"
SCHEDULED = load_event("follow_up_changes/scheduled.json")


def change(change_id: str = "evt-emergency", *, ticket: str = "CHG-1004", at: datetime = EVENT_TIME) -> Change:
    return Change(
        change_id=change_id,
        event_time=at,
        account="123456789012",
        region="us-east-1",
        service="rds",
        action="ModifyDBInstance",
        event_name="ModifyDBInstance",
        resources=(DB,),
        actor=ONCALL,
        request_tags={"ChangeTicket": ticket},
    )


def emergency(*approvers: str, at: datetime | None = None, **kw) -> Ticket:
    base = dict(
        ticket_id="CHG-1004",
        type=TicketType.EMERGENCY,
        title="orders-db out of storage",
        affected_resources=(DB,),
        approvals=tuple(Approval(approver=a, approved_at=at) for a in approvers),
    )
    base.update(kw)
    return Ticket(**base)


def normal(*approvers: str) -> Ticket:
    return Ticket(
        ticket_id="CHG-1004",
        approvals=tuple(Approval(approver=a, approved_at=EVENT_TIME - timedelta(hours=2)) for a in approvers),
        test_evidence="ci",
        rollback_plan="revert",
        window_start=EVENT_TIME - timedelta(hours=1),
        window_end=EVENT_TIME + timedelta(hours=1),
    )


class World:
    """The correlator and the follow-up sharing one ledger, one ticket source and one clock."""

    def __init__(
        self,
        *tickets: Ticket,
        policy: Policy | None = None,
        calendar_closed: bool | None = None,
        tags: FakeTagReader | None = None,
        suite: SuiteResources | None = None,
    ) -> None:
        self.ledger = InMemoryLedger()
        self.tags = tags = tags or FakeTagReader()
        self.tickets = FakeTicketSource(*tickets)
        self.clock = FakeClock(EVENT_TIME + timedelta(minutes=1))
        self.policy = policy or Policy()
        self.calendar = calendar = FakeCalendar(calendar_closed)
        self.correlator = CorrelateService(
            function="correlate_change",
            ledger=self.ledger,
            tickets=self.tickets,
            tags=tags,
            policy=lambda: self.policy,
            clock=self.clock,
            calendar=(lambda _p: calendar) if calendar_closed is not None else None,
            suite=suite,
        )
        self.follow_up = FollowUpService(
            function="follow_up_changes",
            ledger=self.ledger,
            tickets=self.tickets,
            policy=lambda: self.policy,
            clock=self.clock,
            calendar=(lambda _p: calendar) if calendar_closed is not None else None,
            tags=tags,
            suite=suite,
        )

    def correlate(self, c: Change | None = None):
        return self.correlator.evaluate(c or change())

    def run(self, at: datetime):
        self.clock.at = at
        return self.follow_up.handle(SCHEDULED)

    def set_ticket(self, ticket: Ticket) -> None:
        self.tickets.tickets[ticket.ticket_id] = ticket

    def rechecks(self, change_id: str = "evt-emergency"):
        return [e for e in self.ledger.entries_for(change_id) if e.kind is EntryKind.RECHECK]

    def alerts(self, function: str = "follow_up_changes"):
        return [e for e in self.ledger.kinds("ALERT") if e.function == function]


# -- emergency changes ----------------------------------------------------------------------------
def test_an_emergency_change_before_its_deadline_is_left_waiting():
    world = World(emergency())
    assert world.correlate().verdict == Verdict.EMERGENCY
    before = len(world.ledger.items)
    outcome = world.run(DUE - timedelta(minutes=1))
    assert len(world.ledger.items) == before
    assert outcome.alert_ids == [] and outcome.actions == ["nothing new (1 change(s) followed)"]


def test_overdue_writes_one_recheck_and_one_alert_and_a_second_run_writes_nothing():
    world = World(emergency())
    world.correlate()
    outcome = world.run(DUE + timedelta(minutes=1))
    [recheck] = world.rechecks()
    assert recheck.entry.startswith("RECHECK#") and recheck.body["result"] == "overdue"
    assert recheck.event_time == EVENT_TIME and recheck.recorded_at == DUE + timedelta(minutes=1)
    assert recheck.body["due"] == DUE.isoformat() and recheck.body["approvals"] == 0
    [alert] = world.alerts()
    assert alert.entry == "ALERT#follow_up_changes#overdue"
    assert alert.body["alert"]["kind"] == "overdue" and alert.body["alert"]["severity"] == "high"
    assert "CHG-1004" in alert.body["alert"]["subject"]
    assert outcome.alert_ids == ["evt-emergency/follow_up_changes/overdue"]

    items = dict(world.ledger.items)
    again = world.run(DUE + timedelta(hours=5))
    assert world.ledger.items == items
    assert again.alert_ids == []


def test_the_deadline_runs_from_the_event_time_not_from_processing():
    """The event arrived 20 h late; the approval is still due 24 h after the change itself."""
    world = World(emergency())
    world.clock.at = EVENT_TIME + timedelta(hours=20)
    world.correlate()
    world.run(DUE - timedelta(minutes=1))
    assert world.rechecks() == []
    world.run(DUE + timedelta(minutes=1))
    assert [r.body["result"] for r in world.rechecks()] == ["overdue"]


def test_the_deadline_is_tunable():
    world = World(emergency(), policy=Policy(emergency_approval_hours=2))
    world.correlate()
    world.run(EVENT_TIME + timedelta(hours=1, minutes=59))
    assert world.rechecks() == []
    world.run(EVENT_TIME + timedelta(hours=2, minutes=1))
    assert [r.body["result"] for r in world.rechecks()] == ["overdue"]


def test_a_retroactive_approval_is_recorded_when_it_arrives_and_ends_the_follow_up():
    world = World(emergency())
    world.correlate()
    world.run(EVENT_TIME + timedelta(hours=3))
    approved_at = EVENT_TIME + timedelta(hours=6)
    world.set_ticket(emergency(BOB, CAROL, at=approved_at, status=TicketStatus.APPROVED))
    outcome = world.run(EVENT_TIME + timedelta(hours=7))
    [recheck] = world.rechecks()
    assert recheck.body["result"] == "retro-approved" and recheck.body["late"] is False
    assert recheck.body["approvers"] == ["bob@example.com", "carol@example.com"]
    assert recheck.verdict == "EMERGENCY" and recheck.severity == "info"
    assert world.alerts() == [] and outcome.alert_ids == []
    world.run(DUE + timedelta(hours=1))  # past the deadline: approved already, nothing overdue
    assert len(world.rechecks()) == 1


def test_an_approval_after_the_deadline_is_recorded_late_with_no_second_alert():
    world = World(emergency())
    world.correlate()
    world.run(DUE + timedelta(minutes=5))
    world.set_ticket(emergency(BOB, CAROL, at=DUE + timedelta(hours=2)))
    world.run(DUE + timedelta(hours=3))
    results = [(r.body["result"], r.body.get("late")) for r in world.rechecks()]
    assert results == [("overdue", False), ("retro-approved", True)]
    assert len(world.alerts()) == 1


def test_self_approval_is_no_retroactive_approval():
    world = World(emergency())
    world.correlate()
    world.set_ticket(emergency(FRANK, BOB))  # frank made the change: one independent approval of two
    world.run(DUE + timedelta(minutes=1))
    [recheck] = world.rechecks()
    assert recheck.body["result"] == "overdue" and recheck.body["approvals"] == 1
    assert "1 of 2" in recheck.body["detail"]


def test_a_rejected_emergency_ticket_is_overdue_not_approved():
    world = World(emergency())
    world.correlate()
    world.set_ticket(emergency(BOB, CAROL, status=TicketStatus.REJECTED))
    world.run(DUE + timedelta(minutes=1))
    [recheck] = world.rechecks()
    assert recheck.body["result"] == "overdue" and "rejected" in recheck.body["detail"]


def test_approvers_approving_while_the_ticket_system_still_waits_is_no_retroactive_approval():
    world = World(emergency())
    world.correlate()
    world.set_ticket(
        emergency(BOB, CAROL, at=EVENT_TIME + timedelta(hours=1), approved_in_source=False, source="servicenow")
    )
    world.run(DUE + timedelta(minutes=1))
    [recheck] = world.rechecks()
    assert recheck.body["result"] == "overdue" and "the ticket is not approved in servicenow" in recheck.body["detail"]
    world.set_ticket(emergency(BOB, CAROL, at=EVENT_TIME + timedelta(hours=1), approved_in_source=True))
    world.run(DUE + timedelta(minutes=20))
    assert [r.body["result"] for r in world.rechecks()] == ["overdue", "retro-approved"]


def test_changes_older_than_the_look_back_window_are_not_followed():
    world = World(emergency(), policy=Policy(follow_up_lookback_days=2))
    world.correlate()
    world.run(EVENT_TIME + timedelta(days=3, hours=1))
    assert world.rechecks() == []
    world.policy = Policy(follow_up_lookback_days=7)
    world.run(EVENT_TIME + timedelta(days=3, hours=1))
    assert [r.body["result"] for r in world.rechecks()] == ["overdue"]


ENDS = EVENT_TIME + timedelta(days=7)  # follow-up-lookback-days (7) after the change


def test_an_emergency_change_still_unapproved_when_its_follow_up_ends_gets_one_expired_entry_and_alert():
    world = World(emergency())
    world.correlate()
    world.run(DUE + timedelta(minutes=1))
    world.run(ENDS - timedelta(minutes=1))
    assert [r.body["result"] for r in world.rechecks()] == ["overdue"]
    [overdue] = world.alerts()
    assert f"until {ENDS.isoformat()}" in " ".join(overdue.body["alert"]["actions"])

    outcome = world.run(ENDS + timedelta(minutes=14))
    _, expired = world.rechecks()
    assert expired.body["result"] == "expired" and expired.entry.endswith("#1-expired")
    assert (expired.verdict, expired.body["previous_verdict"]) == ("EMERGENCY", "EMERGENCY")
    assert expired.body["followed_until"] == ENDS.isoformat() and expired.severity == "high"
    assert "no retroactive approval of CHG-1004" in expired.body["detail"]
    alert = next(a for a in world.alerts() if a.entry == "ALERT#follow_up_changes#follow-up-expired")
    assert len(world.alerts()) == 2 and outcome.alert_ids == ["evt-emergency/follow_up_changes/follow-up-expired"]
    body = alert.body["alert"]
    assert body["subject"].startswith("FOLLOW-UP STOPPED: CHG-1004") and body["verdict"] == "EMERGENCY"
    assert "will not record an approval that arrives now" in body["remediation"]

    items = dict(world.ledger.items)
    world.set_ticket(emergency(BOB, CAROL, at=ENDS + timedelta(hours=1)))  # too late to be recorded
    for later in (ENDS + timedelta(minutes=29), ENDS + timedelta(hours=20), ENDS + timedelta(days=5)):
        again = world.run(later)
        assert again.alert_ids == []
    assert world.ledger.items == items


def test_a_change_is_given_up_by_a_run_up_to_a_day_after_its_follow_up_ended():
    """Runs that failed for most of a day still leave the change in view: one more day is read."""
    world = World(emergency())
    world.correlate()
    world.run(ENDS + timedelta(hours=23, minutes=59))
    assert [r.body["result"] for r in world.rechecks()] == ["overdue", "expired"]
    assert [r.entry.rsplit("#", 1)[-1] for r in world.rechecks()] == ["1-overdue", "2-expired"]


def test_an_unverified_change_whose_source_never_answers_is_given_up_saying_why():
    world = World(normal(BOB, CAROL))
    world.tickets.down = True
    assert world.correlate().verdict == Verdict.UNVERIFIED
    world.run(ENDS - timedelta(minutes=1))
    assert world.rechecks() == []
    outcome = world.run(ENDS + timedelta(minutes=1))
    [expired] = world.rechecks()
    assert expired.body["result"] == "expired" and expired.verdict == "UNVERIFIED"
    assert expired.body["detail"].endswith(
        "the follow-up stopped (last attempt: CHG-1004 not checked (connection refused))"
    )
    [alert] = [a for a in world.alerts() if a.entry == "ALERT#follow_up_changes#follow-up-expired"]
    assert alert.body["alert"]["subject"].startswith("FOLLOW-UP STOPPED: UNVERIFIED rds:ModifyDBInstance")
    assert "evt-emergency/follow_up_changes/follow-up-expired" in outcome.alert_ids

    world.tickets.down = False  # answering now changes nothing: the follow-up has stopped
    world.run(ENDS + timedelta(hours=2))
    assert [r.body["result"] for r in world.rechecks()] == ["expired"]
    assert tracked_from(world.ledger.entries_for("evt-emergency")).done


def test_an_expired_follow_up_shows_in_the_change_record():
    world = World(emergency())
    world.correlate()
    world.run(ENDS + timedelta(minutes=1))
    population = build_population(world.ledger.items.values(), Period.parse("2026-11"))
    [record] = population.changes
    assert (record.verdict, record.follow_up) == ("EMERGENCY", ("overdue", "expired"))


@pytest.mark.parametrize(("hours", "days"), [(168, 7), (200, 7), (24, 1)])
def test_an_approval_deadline_the_follow_up_would_not_reach_is_rejected(hours, days):
    with pytest.raises(ConfigurationError, match="must be less than follow-up-lookback-days"):
        Policy.from_parameters(
            {
                "/changeguard/prod/emergency-approval-hours": str(hours),
                "/changeguard/prod/follow-up-lookback-days": str(days),
            }
        )
    assert (
        Policy(emergency_approval_hours=days * 24 - 0.5, follow_up_lookback_days=days).follow_up_lookback_days == days
    )


# -- UNVERIFIED changes and outages ---------------------------------------------------------------
def test_unverified_changes_are_rejudged_once_the_source_answers_and_the_outage_closes():
    world = World(normal(BOB))  # one approval of two: NOT_APPROVED once it can be read
    world.tickets.down = True
    assert world.correlate().verdict == Verdict.UNVERIFIED
    assert world.correlate(change("evt-2")).verdict == Verdict.UNVERIFIED
    [degraded] = world.alerts("correlate_change")
    assert degraded.entry == "ALERT#correlate_change#degraded#000001"

    still_down = world.run(EVENT_TIME + timedelta(minutes=15))
    assert world.rechecks() == [] and still_down.alert_ids == []
    assert any("not checked" in r for r in still_down.reasons)

    world.tickets.down = False
    outcome = world.run(EVENT_TIME + timedelta(minutes=30))
    for change_id in ("evt-emergency", "evt-2"):
        [recheck] = world.rechecks(change_id)
        assert recheck.body["result"] == "re-judged" and recheck.verdict == "NOT_APPROVED"
        assert recheck.body["previous_verdict"] == "UNVERIFIED"
    kinds = sorted(a.body["alert"]["kind"] for a in world.alerts())
    assert kinds == ["recovered", "verdict", "verdict"]
    outage = [e.entry for e in world.ledger.entries_for("outage:fake") if e.kind is EntryKind.OUTAGE]
    assert outage == ["CLOSED#000001", "OPEN#000001"]
    assert "outage:fake/follow_up_changes/recovered-1" in outcome.alert_ids

    items = dict(world.ledger.items)
    world.run(EVENT_TIME + timedelta(minutes=45))
    assert world.ledger.items == items


def test_a_ticket_whose_approvals_cannot_be_read_is_unverified_alone_and_rejudged_once_they_can():
    unreadable = "jira: the approvals of CHG-1004 could not be read (the JSM approval API answered 404)"
    world = World(normal().model_copy(update={"approvals_error": unreadable}))
    assert world.correlate().verdict == Verdict.UNVERIFIED
    # Not an outage of the ticket source (which answered): no degraded alert, one alert for the change.
    assert world.ledger.entries_for("outage:fake") == []
    [alert] = world.alerts("correlate_change")
    assert alert.body["alert"]["kind"] == "verdict" and alert.verdict == "UNVERIFIED"
    assert f"approvals unverified: {unreadable}" in alert.body["alert"]["reasons"]
    assert "the ticket's approvals" in alert.body["alert"]["remediation"]

    still = world.run(EVENT_TIME + timedelta(minutes=15))
    assert world.rechecks() == [] and still.alert_ids == []  # nothing new while they stay unreadable

    world.set_ticket(normal(BOB, CAROL))
    world.run(EVENT_TIME + timedelta(minutes=30))
    [recheck] = world.rechecks()
    assert recheck.verdict == "AUTHORIZED" and recheck.body["previous_verdict"] == "UNVERIFIED"


def test_an_unreadable_ticket_is_unverified_alone_and_holds_up_no_other_ticket():
    """A ticket the source answers for but that cannot be read (a hand-edited status) is that
    ticket's matter: no outage is opened, its change alerts by itself, and the follow-up goes on
    reading the other tickets in the same run. Once the ticket is fixed, the change is judged."""
    world = World(emergency(ticket_id="CHG-2000"))
    world.tickets.unreadable.add("CHG-1004")
    assert world.correlate().verdict == Verdict.UNVERIFIED
    assert world.correlate(change("evt-2", ticket="CHG-2000")).verdict == Verdict.EMERGENCY
    assert world.ledger.entries_for("outage:fake") == []
    [alert] = [a for a in world.alerts("correlate_change") if a.change_id == "evt-emergency"]
    assert alert.body["alert"]["kind"] == "verdict" and alert.verdict == "UNVERIFIED"
    assert any(r.startswith("ticket unreadable: CHG-1004: ") for r in alert.body["alert"]["reasons"])

    world.set_ticket(emergency(BOB, CAROL, at=EVENT_TIME + timedelta(hours=2), ticket_id="CHG-2000"))
    calls = world.tickets.calls
    outcome = world.run(EVENT_TIME + timedelta(hours=3))
    assert world.tickets.calls == calls + 2  # both tickets asked: the unreadable one stopped nothing
    [approved] = world.rechecks("evt-2")
    assert approved.body["result"] == "retro-approved"
    assert world.rechecks() == [] and any("evt-emergency: CHG-1004 not checked" in r for r in outcome.reasons)
    assert world.ledger.entries_for("outage:fake") == []

    world.tickets.unreadable.clear()
    world.set_ticket(normal(BOB, CAROL))
    world.run(EVENT_TIME + timedelta(hours=4))
    [recheck] = world.rechecks()
    assert recheck.verdict == "AUTHORIZED" and recheck.body["previous_verdict"] == "UNVERIFIED"


def test_an_emergency_ticket_whose_approvals_cannot_be_read_is_overdue_saying_so():
    world = World(emergency())
    world.correlate()
    world.set_ticket(emergency(BOB, CAROL, at=EVENT_TIME, approvals_error="jira: the approvals could not be read"))
    world.run(DUE + timedelta(minutes=1))
    [recheck] = world.rechecks()
    assert recheck.body["result"] == "overdue" and "could not be read" in recheck.body["detail"]


@pytest.mark.parametrize(("tagged", "verdict", "alerted"), [(True, "AUTHORIZED", 0), (False, "NO_TICKET", 1)])
def test_tags_that_could_not_be_read_are_read_again_by_the_follow_up(tagged, verdict, alerted):
    untagged = change().model_copy(update={"request_tags": {}})  # its ticket, if any, is in its tags
    world = World(normal(BOB, CAROL), tags=FakeTagReader(unreadable={DB}))
    assert world.correlate(untagged).verdict == Verdict.UNVERIFIED
    assert world.ledger.entries_for("outage:fake") == []  # a tag read is no ticket-source outage
    assert [a.verdict for a in world.alerts("correlate_change")] == ["UNVERIFIED"]

    still = world.run(EVENT_TIME + timedelta(minutes=15))
    assert world.rechecks() == [] and still.alert_ids == []
    assert still.reasons == [f"evt-emergency: ticket reference not checked (the tags of {DB} could not be read)"]

    world.tags.unreadable.clear()
    world.tags.tags[DB] = {"ChangeTicket": "CHG-1004"} if tagged else {}
    outcome = world.run(EVENT_TIME + timedelta(minutes=30))
    [recheck] = world.rechecks()
    assert recheck.verdict == verdict and recheck.body["previous_verdict"] == "UNVERIFIED"
    assert recheck.body["detail"] == f"re-judged once the tags could be read: {verdict}"
    assert recheck.body["judgement"]["ticket_id"] == ("CHG-1004" if tagged else None)
    assert len(outcome.alert_ids) == alerted
    items = dict(world.ledger.items)
    world.run(EVENT_TIME + timedelta(minutes=45))
    assert world.ledger.items == items  # done: nothing more to record


def test_rejudged_as_authorized_gets_no_alert():
    world = World(normal(BOB, CAROL))
    world.tickets.down = True
    world.correlate()
    world.tickets.down = False
    world.run(EVENT_TIME + timedelta(minutes=30))
    [recheck] = world.rechecks()
    assert recheck.verdict == "AUTHORIZED"
    assert [a.body["alert"]["kind"] for a in world.alerts()] == ["recovered"]


def test_a_change_to_the_suite_rejudged_once_the_source_answers_is_still_tampering():
    """Judged again without the suite's resources, an approved ticket made it AUTHORIZED/info."""
    world = World(normal(BOB, CAROL), suite=SuiteResources.from_names(name_prefixes=("changeguard-prod-",)))
    fn = "arn:aws:lambda:us-east-1:123456789012:function:changeguard-prod-CorrelateChange"
    code = change().model_copy(update={"service": "lambda", "action": "UpdateFunctionCode", "resources": (fn,)})
    world.tickets.down = True
    first = world.correlate(code)
    assert first.verdict == Verdict.UNVERIFIED and first.severity == "critical"
    world.tickets.down = False
    world.run(EVENT_TIME + timedelta(minutes=30))
    [recheck] = world.rechecks()
    rejudged = tracked_from(world.ledger.entries_for("evt-emergency")).judgement
    assert recheck.verdict == "AUTHORIZED" and rejudged.control_tampering and recheck.severity == "critical"
    [alert] = [a for a in world.alerts() if a.body["alert"]["kind"] == "verdict"]
    assert alert.severity == "critical"


def test_approvals_given_while_the_source_was_down_do_not_authorize_the_change_when_rejudged():
    world = World(normal())
    world.tickets.down = True
    world.correlate()
    after = EVENT_TIME + timedelta(minutes=10)
    world.set_ticket(normal(BOB, CAROL).model_copy(
        update={"approvals": tuple(Approval(approver=a, approved_at=after) for a in (BOB, CAROL))}
    ))  # fmt: skip
    world.tickets.down = False
    world.run(EVENT_TIME + timedelta(minutes=30))
    [recheck] = world.rechecks()
    assert recheck.verdict == "NOT_APPROVED"
    assert "0 independent approval(s) before the change" in " ".join(
        r["detail"] for r in recheck.body["judgement"]["reasons"]
    )


def test_rejudged_as_an_overdue_emergency_is_followed_in_the_same_run():
    world = World(emergency())
    world.tickets.down = True
    world.correlate()
    world.tickets.down = False
    world.run(DUE + timedelta(hours=1))
    assert [(r.body["result"], r.verdict) for r in world.rechecks()] == [
        ("re-judged", "EMERGENCY"),
        ("overdue", "EMERGENCY"),
    ]
    tracked = tracked_from(world.ledger.entries_for("evt-emergency"))
    assert tracked is not None and tracked.verdict is Verdict.EMERGENCY
    assert tracked.results == (FollowUpResult.REJUDGED, FollowUpResult.OVERDUE)
    items = dict(world.ledger.items)
    world.run(DUE + timedelta(hours=2))
    assert world.ledger.items == items


def test_a_closed_calendar_at_the_time_of_the_change_still_counts_when_rejudged():
    world = World(normal(BOB, CAROL), calendar_closed=True)
    world.tickets.down = True
    world.correlate()
    world.tickets.down = False
    world.run(EVENT_TIME + timedelta(minutes=30))
    [recheck] = world.rechecks()
    assert recheck.verdict == "OUTSIDE_CHANGE_WINDOW"


def test_a_second_outage_after_recovery_gets_its_own_alert():
    world = World(normal(BOB, CAROL))
    world.tickets.down = True
    world.correlate()
    world.tickets.down = False
    world.run(EVENT_TIME + timedelta(minutes=30))
    world.tickets.down = True
    world.correlate(change("evt-3"))
    degraded = sorted(a.entry for a in world.alerts("correlate_change"))
    assert degraded == ["ALERT#correlate_change#degraded#000001", "ALERT#correlate_change#degraded#000002"]


def test_the_follow_up_opens_an_outage_it_notices_first_and_the_correlator_does_not_repeat_it():
    world = World(emergency())
    world.correlate()
    world.tickets.down = True
    world.run(EVENT_TIME + timedelta(hours=1))
    [opened] = [e for e in world.ledger.entries_for("outage:fake") if e.entry.startswith("OPEN#")]
    assert opened.function == "follow_up_changes"
    assert [a.body["alert"]["kind"] for a in world.alerts()] == ["degraded"]
    world.correlate(change("evt-4"))
    assert [a for a in world.alerts("correlate_change") if a.body["alert"]["kind"] == "degraded"] == []
    world.run(EVENT_TIME + timedelta(hours=2))  # still down: no second alert
    assert len(world.alerts()) == 1


def test_an_open_outage_with_nothing_to_recheck_is_closed_by_a_probe():
    world = World()
    world.tickets.down = True
    world.correlate(change("evt-5", ticket="CHG-7777"))
    world.ledger.items = {k: v for k, v in world.ledger.items.items() if k[0] != "evt-5"}  # aged out of the window
    world.tickets.down = False
    world.run(EVENT_TIME + timedelta(minutes=30))
    assert [e.entry for e in world.ledger.entries_for("outage:fake") if e.kind is EntryKind.OUTAGE] == [
        "CLOSED#000001",
        "OPEN#000001",
    ]
    assert world.tickets.calls >= 2  # the correlator's failed lookup and the probe


# -- the trigger ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "event",
    [
        {},
        "not an object",
        load_event("correlate_change/05-emergency-change.json"),
        {**SCHEDULED, "source": "aws.ec2"},
    ],
)
def test_only_scheduled_events_are_accepted(event):
    world = World()
    with pytest.raises(InvalidEventError):
        world.follow_up.handle(event)
    assert world.ledger.appends == 0


def test_a_source_that_fails_is_asked_once_per_run_not_once_per_ticket():
    world = World(*(emergency(ticket_id=f"CHG-20{n:02d}") for n in range(5)))
    for n in range(5):
        assert world.correlate(change(f"evt-{n}", ticket=f"CHG-20{n:02d}")).verdict == Verdict.EMERGENCY
    world.tickets.down = True
    calls = world.tickets.calls
    outcome = world.run(DUE + timedelta(hours=1))
    assert world.tickets.calls == calls + 1
    assert len([r for r in outcome.reasons if "not checked" in r]) == 5


# -- an unreadable change calendar ------------------------------------------------------------------
def _window_reasons(outcome) -> list[str]:
    return [r for r in outcome.reasons if r.startswith(WINDOW_UNVERIFIED)]


def test_an_unreadable_calendar_leaves_what_would_be_authorized_unverified_with_one_degraded_alert():
    world = World(normal(BOB, CAROL), calendar_closed=False)
    world.calendar.down = True
    first, second = world.correlate(), world.correlate(change("evt-2"))

    assert first.verdict == second.verdict == Verdict.UNVERIFIED  # not "open": the window is unknown
    assert _window_reasons(first) and "AccessDeniedException" in _window_reasons(first)[0]
    [degraded] = world.alerts("correlate_change")
    assert degraded.body["alert"]["subject"] == "ChangeGuard degraded: change calendar unreachable"
    assert degraded.change_id == "outage:change-calendar"
    assert world.ledger.entries_for("outage:dynamodb") == []  # the tickets answered


def test_a_violation_is_not_held_back_by_an_unreadable_calendar():
    world = World(normal(BOB), calendar_closed=False)  # one approval of the two required
    world.calendar.down = True
    outcome = world.correlate()

    assert outcome.verdict == Verdict.NOT_APPROVED and not _window_reasons(outcome)
    alerts = sorted(a.entry for a in world.alerts("correlate_change"))
    assert alerts == ["ALERT#correlate_change#degraded#000001", "ALERT#correlate_change#verdict"]


def test_an_emergency_change_needs_no_window_and_is_not_held_back():
    world = World(emergency(), calendar_closed=True)
    world.calendar.down = True
    assert world.correlate().verdict == Verdict.EMERGENCY


@pytest.mark.parametrize(
    ("closed", "verdict", "alerted"), [(True, "OUTSIDE_CHANGE_WINDOW", 1), (False, "AUTHORIZED", 0)]
)
def test_the_follow_up_judges_the_window_at_the_changes_own_time_once_the_calendar_answers(closed, verdict, alerted):
    world = World(normal(BOB, CAROL), calendar_closed=closed)
    world.calendar.down = True
    world.correlate()
    waiting = world.run(EVENT_TIME + timedelta(minutes=15))
    assert world.rechecks() == [] and any("change window not checked" in r for r in waiting.reasons)

    world.calendar.down = False
    world.calendar.asked.clear()
    later = EVENT_TIME + timedelta(hours=3)
    world.run(later)

    [recheck] = world.rechecks()
    assert recheck.verdict == verdict and recheck.body["previous_verdict"] == "UNVERIFIED"
    assert "change calendar answered" in recheck.body["detail"]
    assert world.calendar.asked[0] == EVENT_TIME  # the change's time, not the run's
    rejudged = [a for a in world.alerts() if a.body["alert"]["kind"] == "verdict"]
    assert len(rejudged) == alerted
    [recovered] = [a for a in world.alerts() if a.body["alert"]["kind"] == "recovered"]
    assert recovered.body["alert"]["subject"] == "ChangeGuard recovered: change calendar answers again"
    outage = [e.entry for e in world.ledger.entries_for("outage:change-calendar") if not e.entry.startswith("ALERT")]
    assert outage == ["CLOSED#000001", "OPEN#000001"]
    items = dict(world.ledger.items)
    world.run(later + timedelta(minutes=15))
    assert world.ledger.items == items  # nothing new: judged once, closed once


def test_a_calendar_that_answers_with_no_change_waiting_still_closes_its_outage():
    world = World(normal(BOB), calendar_closed=False)
    world.calendar.down = True
    world.correlate()  # NOT_APPROVED: nothing to re-judge, but the outage is open
    world.calendar.down = False
    outcome = world.run(EVENT_TIME + timedelta(minutes=15))
    assert "outage:change-calendar: outage #1 closed" in outcome.actions
