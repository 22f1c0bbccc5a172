"""The ServiceNow ticket source against a local ServiceNow speaking the documented Table API."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from changeguard.adapters.servicenow import ServiceNowOptions, ServiceNowTicketSource
from changeguard.domain.change import Actor, ActorKind, Change
from changeguard.domain.errors import TicketSourceUnavailableError, TicketUnreadableError
from changeguard.domain.policy import Policy
from changeguard.domain.tickets import TicketLookup, TicketRef, TicketRefSource, TicketStatus, TicketType
from changeguard.domain.verdicts import Verdict, judge
from changeguard.settings import Wiring
from changeguard_tools.ticket_servers import ServiceNowServer

TOKEN = "servicenow-oauth-token"
T = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
BUCKET = "arn:aws:s3:::acme-reports-prod"
AFFECTED = "u_affected_resources"


@pytest.fixture
def snow():
    server = ServiceNowServer(token=TOKEN, username="svc.changeguard", password="pw")
    server.start()
    yield server
    server.stop()


def source(
    server: ServiceNowServer, *, auth=lambda refresh=False: f"Bearer {TOKEN}", **options
) -> ServiceNowTicketSource:
    opts = ServiceNowOptions.model_validate({"affected_resources": AFFECTED, **options})
    return ServiceNowTicketSource(server.base_url, options=opts, auth=auth)


def seed(server: ServiceNowServer, number: str = "CHG0030001", **kw) -> str:
    base = dict(
        short_description="Tighten the reports bucket policy",
        requested_by="alice@example.com",
        start_date="2026-11-21T08:00:00Z",
        end_date="2026-11-21T12:00:00Z",
        test_plan="Policy simulator run https://ci.example.com/runs/7",
        backout_plan="Restore the previous policy version",
        state="-2",
        approval="approved",
        extra={AFFECTED: BUCKET},
    )
    base.update(kw)
    return server.add_change(number, **base)


def verdict(ticket, actor: Actor | None = None, number: str = "CHG0030001"):
    actor = actor or Actor(
        arn="arn:aws:iam::123456789012:user/alice", kind=ActorKind.IAM_USER, user_name="alice", console=True
    )
    c = Change(
        change_id="evt-snow",
        event_time=T,
        account="123456789012",
        region="us-east-1",
        service="s3",
        action="PutBucketPolicy",
        event_name="PutBucketPolicy",
        resources=(BUCKET,),
        actor=actor,
    )
    ref = TicketRef(ticket_id=number, found_in=TicketRefSource.RESOURCE_TAG)
    return judge(c, ref, TicketLookup(ticket=ticket), Policy(ticket_id_pattern=r"CHG\d{7}"))


def test_approved_approvers_are_counted_with_user_name_and_email(snow):
    seed(snow)
    snow.add_approver("CHG0030001", "bob.jones@example.com")
    snow.add_approver("CHG0030001", "carol.white@example.com")
    snow.add_approver("CHG0030001", "dave.king@example.com", state="requested")
    snow.add_approver("CHG0030001", "erin.cole@example.com", state="rejected")
    ticket = source(snow).get("CHG0030001")
    assert ticket is not None and ticket.source == "servicenow"
    assert [(a.approver, a.aliases) for a in ticket.approvals] == [
        ("bob.jones@example.com", ("bob.jones",)),
        ("carol.white@example.com", ("carol.white",)),
    ]
    assert ticket.approvals[0].approved_at == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert ticket.status is TicketStatus.APPROVED
    approvals_call = next(r for r in snow.requests if r.path.endswith("/sysapproval_approver"))
    assert approvals_call.query["sysparm_query"].endswith("^state=approved")
    assert "approver.user_name" in approvals_call.query["sysparm_fields"]
    assert verdict(ticket).verdict is Verdict.AUTHORIZED


def test_one_approval_of_two_required_is_not_approved(snow):
    seed(snow, approval="requested", state="-3")
    snow.add_approver("CHG0030001", "bob.jones@example.com")
    ticket = source(snow).get("CHG0030001")
    assert ticket is not None and len(ticket.approvals) == 1 and ticket.status is TicketStatus.OPEN
    assert verdict(ticket).verdict is Verdict.NOT_APPROVED


@pytest.mark.parametrize(
    ("state", "approval"),
    [
        ("-3", "requested"),  # Authorize: a CAB approver has not answered yet
        ("-5", "not requested"),  # New: approval never asked for
    ],
)
def test_approved_approvers_do_not_authorize_a_change_its_own_approval_has_not_granted(snow, state, approval):
    seed(snow, state=state, approval=approval)
    snow.add_approver("CHG0030001", "bob.jones@example.com")
    snow.add_approver("CHG0030001", "carol.white@example.com")
    snow.add_approver("CHG0030001", "cab.member@example.com", state="requested")
    ticket = source(snow).get("CHG0030001")
    assert ticket is not None and len(ticket.approvals) == 2 and ticket.approved_in_source is False
    judged = verdict(ticket)
    assert judged.verdict is Verdict.NOT_APPROVED
    assert "CHG0030001 is not approved in servicenow (ticket status open)" in [r.detail for r in judged.reasons]


def test_a_closed_change_authorizes_what_was_done_before_it_was_closed_not_after(snow):
    seed(snow, state="3", extra={AFFECTED: BUCKET, "closed_at": "2026-11-21 09:00:00"})
    seed(snow, "CHG0030002", state="3", extra={AFFECTED: BUCKET, "closed_at": "2026-11-21 11:00:00"})
    seed(snow, "CHG0030003", state="3")  # closed, its close time not recorded
    for number in ("CHG0030001", "CHG0030002", "CHG0030003"):
        snow.add_approver(number, "bob.jones@example.com")
        snow.add_approver(number, "carol.white@example.com")
    src = source(snow)
    closed_before, closed_after, unknown = (src.get(n) for n in ("CHG0030001", "CHG0030002", "CHG0030003"))
    assert closed_before is not None and closed_before.status is TicketStatus.CLOSED
    assert closed_before.closed_at == datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    judged = verdict(closed_before)
    assert judged.verdict is Verdict.NOT_APPROVED
    assert "CHG0030001 was closed at 2026-11-21T09:00:00+00:00, before the change" in judged.reasons[0].detail
    assert verdict(closed_after, number="CHG0030002").verdict is Verdict.AUTHORIZED
    judged = verdict(unknown, number="CHG0030003")
    assert judged.verdict is Verdict.NOT_APPROVED and "its close time is unknown" in judged.reasons[0].detail
    change_call = next(r for r in snow.requests if r.path.endswith("/change_request"))
    assert "closed_at" in change_call.query["sysparm_fields"].split(",")


def test_rejected_and_cancelled_changes(snow):
    seed(snow, approval="rejected", state="-5")
    seed(snow, "CHG0030002", approval="requested", state="4")
    src = source(snow)
    rejected, cancelled = src.get("CHG0030001"), src.get("CHG0030002")
    assert rejected is not None and rejected.status is TicketStatus.REJECTED
    assert cancelled is not None and cancelled.status is TicketStatus.CANCELLED
    assert verdict(rejected).verdict is Verdict.NOT_APPROVED


def test_window_scope_test_plan_and_backout_plan(snow):
    seed(snow)
    ticket = source(snow).get("CHG0030001")
    assert ticket is not None
    assert (ticket.window_start, ticket.window_end) == (
        datetime(2026, 11, 21, 8, 0, tzinfo=UTC),
        datetime(2026, 11, 21, 12, 0, tzinfo=UTC),
    )
    assert ticket.affected_resources == (BUCKET,)
    assert ticket.test_evidence and ticket.rollback_plan
    assert ticket.requested_by == "alice@example.com"


def test_outside_window_out_of_scope_and_incomplete(snow):
    seed(snow, start_date="2026-11-22T08:00:00Z", end_date="2026-11-22T09:00:00Z")
    seed(snow, "CHG0030002", extra={AFFECTED: "arn:aws:s3:::someone-elses-bucket"})
    seed(snow, "CHG0030003", backout_plan="")
    for number in ("CHG0030001", "CHG0030002", "CHG0030003"):
        snow.add_approver(number, "bob.jones@example.com")
        snow.add_approver(number, "carol.white@example.com")
    src = source(snow)
    assert verdict(src.get("CHG0030001")).verdict is Verdict.OUTSIDE_TICKET_WINDOW
    assert verdict(src.get("CHG0030002"), number="CHG0030002").verdict is Verdict.OUT_OF_SCOPE
    incomplete = src.get("CHG0030003")
    assert incomplete is not None and incomplete.rollback_plan is None
    assert verdict(incomplete, number="CHG0030003").verdict is Verdict.INCOMPLETE_TICKET


def test_configured_columns_are_used(snow):
    seed(snow, extra={AFFECTED: BUCKET, "u_evidence": "https://qa.example.com/7"}, test_plan="")
    ticket = source(snow, test_evidence="u_evidence").get("CHG0030001")
    assert ticket is not None and ticket.test_evidence == "https://qa.example.com/7"


def test_emergency_type(snow):
    seed(snow, type="emergency", approval="requested")
    ticket = source(snow).get("CHG0030001")
    assert ticket is not None and ticket.type is TicketType.EMERGENCY
    assert verdict(ticket).verdict is Verdict.EMERGENCY
    seed(snow, "CHG0030002", type="standard")
    standard = source(snow).get("CHG0030002")
    assert standard is not None and standard.type is TicketType.STANDARD


def test_unknown_change_is_none(snow):
    assert source(snow).get("CHG0039999") is None
    assert not any(r.path.endswith("/sysapproval_approver") for r in snow.requests)


def test_query_syntax_in_an_id_never_reaches_servicenow(snow):
    seed(snow)
    src = source(snow)
    # `^OR` would add a condition matching every change request: someone else's approved ticket.
    for bad in ("CHG0030002^ORnumberISNOTEMPTY", "CHG0030002^NQnumber=CHG0030001", "CHG003 0001"):
        assert src.get(bad) is None
    assert snow.requests == []


def test_a_change_with_an_unreadable_date_is_that_tickets_error_not_an_outage(snow):
    """ServiceNow answered: only this change cannot be read, so the correlator opens no outage and
    the follow-up goes on with other tickets (``TicketUnreadableError``)."""
    seed(snow, extra={AFFECTED: BUCKET, "end_date": "next Tuesday"})  # as a custom form might store it
    with pytest.raises(TicketUnreadableError, match="unreadable date-time 'next Tuesday'"):
        source(snow).get("CHG0030001")


@pytest.mark.parametrize("status", [500, 503, 400])
def test_errors_make_the_source_unavailable(snow, status):
    seed(snow)
    snow.fail(status)
    with pytest.raises(TicketSourceUnavailableError, match=str(status)) as caught:
        source(snow).get("CHG0030001")
    assert not isinstance(caught.value, TicketUnreadableError)  # the source is down, not one ticket


def test_a_failure_on_the_approvals_call_is_unavailable_not_unapproved(snow):
    seed(snow)
    snow.add_approver("CHG0030001", "bob.jones@example.com")
    snow.fail(503, path="/sysapproval_approver")
    with pytest.raises(TicketSourceUnavailableError, match="503"):
        source(snow).get("CHG0030001")
    assert [r.path for r in snow.requests] == ["/api/now/table/change_request", "/api/now/table/sysapproval_approver"]


def test_slow_and_refused(snow):
    seed(snow)
    snow.slow(3.0)
    started = time.monotonic()
    with pytest.raises(TicketSourceUnavailableError):
        source(snow, timeout_seconds=0.5).get("CHG0030001")
    assert time.monotonic() - started < 1.5
    snow.clear_faults()
    snow.refuse()
    with pytest.raises(TicketSourceUnavailableError, match="unreachable"):
        source(snow).get("CHG0030001")
    snow.resume()
    assert source(snow).get("CHG0030001") is not None


def test_basic_credentials_from_secrets_manager(snow, aws):
    seed(snow)
    arn = aws.client("secretsmanager").create_secret(
        Name="changeguard/servicenow", SecretString=json.dumps({"username": "svc.changeguard", "password": "pw"})
    )["ARN"]
    wiring = Wiring(
        function_name="correlate_change",
        ledger_table_name="ledger",
        parameter_path="/changeguard/dev/",
        ticket_source="servicenow",
        ticket_base_url=snow.base_url,
        ticket_secret_arn=arn,
        ticket_source_options=json.dumps({"affected_resources": AFFECTED}),
    )
    ticket = ServiceNowTicketSource.from_wiring(wiring).get("CHG0030001")
    assert ticket is not None and ticket.affected_resources == (BUCKET,)
    assert snow.requests[0].authorization and snow.requests[0].authorization.startswith("Basic ")


def test_no_credentials_is_unavailable(snow):
    seed(snow)
    with pytest.raises(TicketSourceUnavailableError, match="401"):
        ServiceNowTicketSource(snow.base_url).get("CHG0030001")
