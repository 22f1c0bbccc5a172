"""Every verdict, the precedence between them, severities and ticket-reference sources."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from changeguard.domain.change import Actor, ActorKind, Change
from changeguard.domain.policy import Policy
from changeguard.domain.tickets import (
    Approval,
    Ticket,
    TicketLookup,
    TicketRef,
    TicketRefSource,
    TicketStatus,
    TicketType,
)
from changeguard.domain.verdicts import PRECEDENCE, Severity, Verdict, judge
from changeguard.services.correlate import CorrelateService, find_ticket_ref
from fakes import FakeCalendar, FakeClock, FakeTagReader, FakeTicketSource, InMemoryLedger

T = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
BEFORE = T - timedelta(days=1)  # when the fixtures' approvals were given
SUITE = "arn:aws:iam::123456789012:role/changeguard/"
ALICE = Actor(
    arn="arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_1/alice@example.com",
    kind=ActorKind.SSO,
    session_issuer_arn="arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_1",
    session_name="alice@example.com",
    user_name="alice@example.com",
)
BOB = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Approver_2/bob@example.com"
CAROL = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Approver_2/carol@example.com"
ALICE_APPROVER = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Approver_2/alice@example.com"
INSTANCE = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123"


def change(**kw) -> Change:
    base = dict(
        change_id="evt-1",
        event_time=T,
        account="123456789012",
        region="us-east-1",
        service="ec2",
        action="RunInstances",
        event_name="RunInstances",
        resources=(INSTANCE,),
        actor=ALICE,
    )
    base.update(kw)
    return Change(**base)


def ticket(**kw) -> Ticket:
    base = dict(
        ticket_id="CHG-1001",
        approvals=(Approval(approver=BOB, approved_at=BEFORE), Approval(approver=CAROL, approved_at=BEFORE)),
        window_start=T - timedelta(hours=1),
        window_end=T + timedelta(hours=1),
        test_evidence="ci run 1",
        rollback_plan="terminate",
    )
    base.update(kw)
    return Ticket(**base)


REF = TicketRef(ticket_id="CHG-1001", found_in=TicketRefSource.REQUEST_TAGS)
POLICY = Policy()


def verdict_of(c=None, t=None, *, ref=REF, unavailable=False, policy=POLICY, closed=None):
    lookup = TicketLookup(ticket=t, unavailable=unavailable, error="boom" if unavailable else None)
    return judge(
        c or change(), ref, lookup if ref else None, policy, suite_role_prefixes=(SUITE,), calendar_closed=closed
    )


def test_authorized():
    j = verdict_of(t=ticket())
    assert j.verdict is Verdict.AUTHORIZED and not j.alerts and j.severity is Severity.INFO


def test_no_ticket():
    j = verdict_of(ref=None)
    assert j.verdict is Verdict.NO_TICKET and j.alerts and j.severity is Severity.HIGH


def test_unknown_ticket():
    assert verdict_of(t=None).verdict is Verdict.UNKNOWN_TICKET


def test_unverified_when_source_down():
    j = verdict_of(unavailable=True)
    assert j.verdict is Verdict.UNVERIFIED
    assert "boom" in j.reasons[0].detail


def test_not_approved_counts_independent_approvals_only():
    assert verdict_of(t=ticket(approvals=(Approval(approver=BOB),))).verdict is Verdict.NOT_APPROVED
    # the same person twice is one approval
    assert (
        verdict_of(t=ticket(approvals=(Approval(approver=BOB), Approval(approver=BOB)))).verdict is Verdict.NOT_APPROVED
    )


def test_rejected_ticket_is_not_approved():
    assert verdict_of(t=ticket(status="rejected")).verdict is Verdict.NOT_APPROVED


def test_approvals_given_after_the_change_are_not_prior_approval():
    """A late delivery, the follow-up's re-judgement and the reconcile sweep judge after the fact."""
    late = (Approval(approver=BOB, approved_at=T + timedelta(hours=1)), Approval(approver=CAROL, approved_at=BEFORE))
    j = verdict_of(t=ticket(approvals=late))
    assert j.verdict is Verdict.NOT_APPROVED
    assert "1 independent approval(s) before the change; 2 required (1 given after the change not counted)" in (
        j.reasons[0].detail
    )
    # An approval given at the very moment of the change precedes it.
    on_time = (Approval(approver=BOB, approved_at=T), Approval(approver=CAROL, approved_at=BEFORE))
    assert verdict_of(t=ticket(approvals=on_time)).verdict is Verdict.AUTHORIZED


def test_an_approval_without_a_time_is_not_prior_approval():
    untimed = (Approval(approver=BOB), Approval(approver=CAROL, approved_at=BEFORE))
    j = verdict_of(t=ticket(approvals=untimed))
    assert j.verdict is Verdict.NOT_APPROVED and "(1 without a time not counted)" in j.reasons[0].detail


def test_a_self_approval_given_after_the_change_is_still_self_approval():
    after = T + timedelta(hours=1)
    approvals = (
        Approval(approver=ALICE_APPROVER, approved_at=after),
        Approval(approver=BOB, approved_at=BEFORE),
        Approval(approver=CAROL, approved_at=BEFORE),
    )
    assert verdict_of(t=ticket(approvals=approvals)).verdict is Verdict.SELF_APPROVED


def test_an_emergency_ticket_approved_after_the_change_stays_an_emergency():
    late = tuple(Approval(approver=a, approved_at=T + timedelta(hours=2)) for a in (BOB, CAROL))
    j = verdict_of(t=ticket(type=TicketType.EMERGENCY, approvals=late))
    assert j.verdict is Verdict.EMERGENCY and j.retro_approval_due == T + timedelta(hours=24)


def test_approvers_do_not_authorize_a_ticket_its_own_system_has_not_approved():
    j = verdict_of(t=ticket(source="servicenow", approved_in_source=False))
    assert j.verdict is Verdict.NOT_APPROVED
    assert [r.detail for r in j.reasons] == ["CHG-1001 is not approved in servicenow (ticket status open)"]
    assert verdict_of(t=ticket(source="servicenow", approved_in_source=True)).verdict is Verdict.AUTHORIZED
    # The DynamoDB table keeps no decision of its own: its approval records are the approval.
    assert verdict_of(t=ticket(approved_in_source=None)).verdict is Verdict.AUTHORIZED


def test_a_closed_ticket_authorizes_no_change_after_it_was_closed():
    closed = {"status": TicketStatus.CLOSED}
    assert verdict_of(t=ticket(closed_at=T + timedelta(minutes=5), **closed)).verdict is Verdict.AUTHORIZED
    before = verdict_of(t=ticket(closed_at=T - timedelta(minutes=5), **closed))
    assert before.verdict is Verdict.NOT_APPROVED and "before the change" in before.reasons[0].detail
    unknown = verdict_of(t=ticket(**closed))
    assert unknown.verdict is Verdict.NOT_APPROVED
    assert unknown.reasons[0].detail == (
        "CHG-1001 is closed and its close time is unknown: a closed ticket authorizes no later change"
    )
    emergency = verdict_of(t=ticket(type=TicketType.EMERGENCY, closed_at=T - timedelta(hours=1), **closed))
    assert emergency.verdict is Verdict.NOT_APPROVED


def test_a_standard_ticket_is_not_pre_approved():
    """Standard changes need the approvals a normal one needs (README, "Ticket sources")."""
    j = verdict_of(t=ticket(type=TicketType.STANDARD, approvals=(), approved_in_source=True))
    assert j.verdict is Verdict.NOT_APPROVED and "0 independent approval(s)" in j.reasons[0].detail


def test_self_approved_beats_not_approved():
    j = verdict_of(t=ticket(approvals=(Approval(approver=ALICE_APPROVER), Approval(approver=BOB))))
    assert j.verdict is Verdict.SELF_APPROVED
    assert {r.verdict for r in j.reasons} >= {Verdict.SELF_APPROVED, Verdict.NOT_APPROVED}


def test_self_approval_through_identity_mapping():
    policy = Policy(identity_map={"approver-alice-jira-id": "alice@example.com"})
    j = verdict_of(
        t=ticket(
            approvals=(Approval(approver="approver-alice-jira-id"), Approval(approver=BOB), Approval(approver=CAROL))
        ),
        policy=policy,
    )
    assert j.verdict is Verdict.SELF_APPROVED


@pytest.mark.parametrize("missing", ["test_evidence", "rollback_plan"])
def test_incomplete_ticket(missing):
    j = verdict_of(t=ticket(**{missing: "  "}))
    assert j.verdict is Verdict.INCOMPLETE_TICKET


def test_outside_ticket_window_is_judged_at_event_time():
    late = change(event_time=T + timedelta(hours=3))
    assert verdict_of(late, ticket()).verdict is Verdict.OUTSIDE_TICKET_WINDOW
    assert verdict_of(change(), ticket()).verdict is Verdict.AUTHORIZED


def test_window_bounds_are_inclusive():
    assert verdict_of(change(event_time=T + timedelta(hours=1)), ticket()).verdict is Verdict.AUTHORIZED
    assert verdict_of(change(event_time=T - timedelta(hours=1)), ticket()).verdict is Verdict.AUTHORIZED


def test_outside_change_window_when_calendar_closed():
    j = verdict_of(t=ticket(), closed=True)
    assert j.verdict is Verdict.OUTSIDE_CHANGE_WINDOW and j.severity is Severity.HIGH


def test_out_of_scope():
    j = verdict_of(t=ticket(affected_resources=("arn:aws:ec2:us-east-1:123456789012:instance/i-other",)))
    assert j.verdict is Verdict.OUT_OF_SCOPE
    assert verdict_of(t=ticket(affected_resources=("arn:aws:ec2:*:*:instance/*",))).verdict is Verdict.AUTHORIZED
    assert verdict_of(t=ticket(affected_resources=("i-0123",))).verdict is Verdict.AUTHORIZED


def test_emergency_sets_retro_deadline_from_event_time():
    j = verdict_of(t=ticket(type=TicketType.EMERGENCY, approvals=(), test_evidence=None, rollback_plan=None))
    assert j.verdict is Verdict.EMERGENCY
    assert j.retro_approval_due == T + timedelta(hours=24)
    assert j.alerts and j.severity is Severity.LOW


def test_emergency_is_allowed_outside_the_calendar():
    j = verdict_of(t=ticket(type=TicketType.EMERGENCY, approvals=()), closed=True)
    assert j.verdict is Verdict.EMERGENCY


def test_exempt_principals_service_linked_and_suite_roles():
    pipeline = Actor(
        arn="arn:aws:sts::123456789012:assumed-role/pipeline/1",
        kind=ActorKind.ASSUMED_ROLE,
        session_issuer_arn="arn:aws:iam::123456789012:role/pipeline",
    )
    policy = Policy(exempt_principal_arns=("arn:aws:iam::*:role/pipeline",))
    assert verdict_of(change(actor=pipeline), None, ref=None, policy=policy).verdict is Verdict.EXEMPT
    linked = Actor(
        arn="x",
        kind=ActorKind.ASSUMED_ROLE,
        session_issuer_arn="arn:aws:iam::123456789012:role/aws-service-role/ops.apigateway.amazonaws.com/AWSServiceRoleForAPIGateway",
    )
    assert verdict_of(change(actor=linked), None, ref=None).verdict is Verdict.EXEMPT
    suite = Actor(arn="y", kind=ActorKind.ASSUMED_ROLE, session_issuer_arn=SUITE + "changeguard-local-X")
    assert verdict_of(change(actor=suite), None, ref=None).verdict is Verdict.EXEMPT


def test_root_is_never_exempt_and_always_critical():
    root = Actor(arn="arn:aws:iam::123456789012:root", kind=ActorKind.ROOT, account_id="123456789012")
    policy = Policy(exempt_principal_arns=("*",))
    j = verdict_of(change(actor=root), ticket(), policy=policy)
    assert j.verdict is Verdict.AUTHORIZED and j.severity is Severity.CRITICAL and j.alerts


def test_control_tampering_alerts_even_when_authorized():
    j = verdict_of(
        change(service="cloudtrail", action="StopLogging", event_name="StopLogging", resources=()),
        ticket(affected_resources=()),
    )
    assert j.control_tampering and j.severity is Severity.CRITICAL and j.alerts


def test_iam_change_without_ticket_is_critical():
    assert verdict_of(change(service="iam", action="CreateUser"), ref=None).severity is Severity.CRITICAL


def test_precedence_order_is_the_documented_one():
    assert [v.value for v in PRECEDENCE] == [
        "EXEMPT",
        "UNVERIFIED",
        "NO_TICKET",
        "UNKNOWN_TICKET",
        "SELF_APPROVED",
        "NOT_APPROVED",
        "INCOMPLETE_TICKET",
        "OUTSIDE_TICKET_WINDOW",
        "OUTSIDE_CHANGE_WINDOW",
        "OUT_OF_SCOPE",
        "EMERGENCY",
        "AUTHORIZED",
    ]


def test_every_reason_is_kept():
    t = ticket(approvals=(Approval(approver=BOB),), test_evidence=None, affected_resources=("other",))
    j = verdict_of(change(event_time=T + timedelta(days=2)), t, closed=True)
    assert j.verdict is Verdict.NOT_APPROVED
    assert {r.verdict for r in j.reasons} == {
        Verdict.NOT_APPROVED,
        Verdict.INCOMPLETE_TICKET,
        Verdict.OUTSIDE_TICKET_WINDOW,
        Verdict.OUTSIDE_CHANGE_WINDOW,
        Verdict.OUT_OF_SCOPE,
    }


# -- ticket reference sources, first hit wins in the configured order --------------------------------


def service(
    policy: Policy = POLICY, tags=None, stacks=None, tickets=(), calendar=None, unreadable=None
) -> CorrelateService:
    return CorrelateService(
        function="correlate_change",
        ledger=InMemoryLedger(),
        tickets=FakeTicketSource(*tickets),
        tags=FakeTagReader(tags, stacks, unreadable),
        policy=lambda: policy,
        clock=FakeClock(),
        suite_role_prefixes=(SUITE,),
        calendar=(lambda p: calendar) if calendar else None,
    )


def actor_with(session_name=None, source_identity=None, invoked_by=None):
    return Actor(
        arn=f"arn:aws:sts::1:assumed-role/deployer/{session_name or 'x'}",
        kind=ActorKind.ASSUMED_ROLE,
        session_issuer_arn="arn:aws:iam::1:role/deployer",
        session_name=session_name,
        source_identity=source_identity,
        invoked_by=invoked_by,
    )


def ticket_ref(svc: CorrelateService, c: Change, policy: Policy) -> TicketRef | None:
    """The reference the correlator finds for ``c``, reading tags through ``svc``'s reader."""
    return find_ticket_ref(c, policy, svc.tags)[0]


@pytest.mark.parametrize(
    ("source", "kwargs", "expected"),
    [
        (TicketRefSource.REQUEST_TAGS, {"request_tags": {"ChangeTicket": "CHG-2001"}}, "CHG-2001"),
        (TicketRefSource.SOURCE_IDENTITY, {"actor": actor_with(source_identity="CHG-2002")}, "CHG-2002"),
        (TicketRefSource.SESSION_NAME, {"actor": actor_with(session_name="deploy-CHG-2003")}, "CHG-2003"),
    ],
)
def test_ticket_ref_from_the_event(source, kwargs, expected):
    ref = ticket_ref(service(), change(**kwargs), POLICY)
    assert ref == TicketRef(ticket_id=expected, found_in=source)


def test_ticket_ref_from_the_resource_current_tag():
    svc = service(tags={INSTANCE: {"ChangeTicket": "CHG-2004"}})
    assert ticket_ref(svc, change(), POLICY) == TicketRef(ticket_id="CHG-2004", found_in=TicketRefSource.RESOURCE_TAG)


def test_ticket_ref_from_the_stack_for_calls_invoked_by_cloudformation():
    svc = service(stacks={"checkout": {"ChangeTicket": "CHG-2005"}})
    c = change(
        actor=actor_with(invoked_by="cloudformation.amazonaws.com"),
        request_tags={"aws:cloudformation:stack-name": "checkout"},
    )
    assert ticket_ref(svc, c, POLICY) == TicketRef(ticket_id="CHG-2005", found_in=TicketRefSource.STACK_TAG)
    # not invoked by CloudFormation: the stack tag is not consulted
    assert ticket_ref(svc, change(request_tags={"aws:cloudformation:stack-name": "checkout"}), POLICY) is None


def test_first_hit_wins_and_order_is_configurable():
    c = change(request_tags={"ChangeTicket": "CHG-3001"}, actor=actor_with(session_name="CHG-3002"))
    assert ticket_ref(service(), c, POLICY).ticket_id == "CHG-3001"
    reordered = Policy(ticket_ref_order="session_name,request_tags")
    assert ticket_ref(service(reordered), c, reordered).ticket_id == "CHG-3002"


def test_ticket_pattern_is_configurable():
    snow = Policy(ticket_id_pattern=r"CHG\d{7}")
    c = change(request_tags={"ChangeTicket": "CHG0001234"})
    assert ticket_ref(service(snow), c, snow).ticket_id == "CHG0001234"
    assert ticket_ref(service(), c, POLICY) is None


def test_tags_that_cannot_be_read_leave_the_change_unverified_not_without_a_ticket():
    svc = service(unreadable={INSTANCE})
    outcome = svc.evaluate(change())
    assert outcome.verdict == "UNVERIFIED"
    assert outcome.reasons == [f"ticket reference unverified: the tags of {INSTANCE} could not be read"]
    # Not an outage of the ticket source (never asked): no degraded alert; the change alerts alone.
    assert svc.ledger.entries_for("outage:fake") == [] and svc.tickets.calls == 0
    [alert] = svc.ledger.kinds("ALERT")
    assert alert.body["alert"]["kind"] == "verdict" and alert.severity == "medium"
    assert "the resource's or stack's tags" in alert.body["alert"]["remediation"]


def test_a_stack_whose_tags_cannot_be_read_leaves_the_change_unverified():
    c = change(
        actor=actor_with(invoked_by="cloudformation.amazonaws.com"),
        request_tags={"aws:cloudformation:stack-name": "checkout"},
    )
    outcome = service(unreadable={"checkout"}).evaluate(c)
    assert outcome.verdict == "UNVERIFIED" and "the tags of stack checkout could not be read" in outcome.reasons[0]


def test_a_ticket_found_elsewhere_is_judged_whatever_the_tags():
    svc = service(unreadable={INSTANCE}, tickets=[ticket()])
    assert svc.evaluate(change(request_tags={"ChangeTicket": "CHG-1001"})).verdict == "AUTHORIZED"


def test_a_resource_deleted_since_has_no_ticket_tag_and_no_ticket():
    assert service(tags={}).evaluate(change()).verdict == "NO_TICKET"  # its tags read as none


def test_service_records_once_and_alerts_once():
    svc = service(tickets=[ticket(approvals=())])
    c = change(request_tags={"ChangeTicket": "CHG-1001"})
    first = svc.evaluate(c)
    second = svc.evaluate(c)
    assert first.verdict == "NOT_APPROVED" and not first.duplicate and first.alert_ids
    assert second.duplicate and not second.alert_ids
    ledger = svc.ledger
    assert len(ledger.kinds("VERDICT")) == 1 and len(ledger.kinds("ALERT")) == 1


def test_authorized_change_writes_no_alert():
    svc = service(tickets=[ticket()])
    out = svc.evaluate(change(request_tags={"ChangeTicket": "CHG-1001"}))
    assert out.verdict == "AUTHORIZED" and svc.ledger.kinds("ALERT") == []


def test_unverified_changes_share_one_degraded_alert_per_outage():
    svc = service()
    svc.tickets = FakeTicketSource(down=True)
    for i in range(5):
        out = svc.evaluate(change(change_id=f"e{i}", request_tags={"ChangeTicket": "CHG-1001"}))
        assert out.verdict == "UNVERIFIED"
    alerts = svc.ledger.kinds("ALERT")
    assert len(alerts) == 1 and alerts[0].body["alert"]["kind"] == "degraded"
    assert len(svc.ledger.kinds("VERDICT")) == 5


def test_root_use_alerts_even_while_an_outage_covers_unverified_changes():
    """Root use is critical whatever the verdict (README): the outage's one degraded alert names
    the first change, not the root user's, so a root change during it alerts by itself."""
    svc = service()
    svc.tickets = FakeTicketSource(down=True)
    svc.evaluate(change(change_id="e0", request_tags={"ChangeTicket": "CHG-1001"}))  # opens the outage
    root = Actor(arn="arn:aws:iam::123456789012:root", kind=ActorKind.ROOT, account_id="123456789012")
    out = svc.evaluate(change(change_id="e-root", actor=root, request_tags={"ChangeTicket": "CHG-1001"}))
    assert out.verdict == "UNVERIFIED" and out.severity == "critical"
    [alert] = [a for a in svc.ledger.kinds("ALERT") if a.change_id == "e-root"]
    assert alert.body["alert"]["kind"] == "verdict" and alert.severity == "critical"
    assert out.alert_ids == [alert.body["alert"]["alert_id"]]


def test_calendar_consulted_at_event_time_for_manual_changes_only():
    cal = FakeCalendar(closed=True)
    svc = service(tickets=[ticket()], calendar=cal)
    out = svc.evaluate(change(request_tags={"ChangeTicket": "CHG-1001"}))
    assert out.verdict == "OUTSIDE_CHANGE_WINDOW" and cal.asked == [T]
    auto = actor_with(session_name="bot", invoked_by="codepipeline.amazonaws.com")  # gated where it started
    svc.evaluate(change(change_id="e2", actor=auto.model_copy(update={"automation": True})))
    assert cal.asked == [T]


def test_suite_own_calls_are_ignored_without_ledger_writes():
    svc = service()
    suite_actor = Actor(
        arn="arn:aws:sts::123456789012:assumed-role/x/y",
        kind=ActorKind.ASSUMED_ROLE,
        session_issuer_arn=SUITE + "cg-role",
    )
    out = svc.evaluate(change(actor=suite_actor))
    assert out.verdict == "NOT_A_CHANGE" and svc.ledger.items == {}
