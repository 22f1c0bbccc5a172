"""The Jira ticket source against a local Jira speaking the documented REST and JSM approval APIs."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from changeguard.adapters.jira import JiraOptions, JiraTicketSource
from changeguard.domain.change import Actor, ActorKind, Change
from changeguard.domain.errors import ConfigurationError, TicketSourceUnavailableError
from changeguard.domain.policy import Policy
from changeguard.domain.tickets import TicketLookup, TicketRef, TicketRefSource, TicketStatus, TicketType
from changeguard.domain.verdicts import Verdict, judge
from changeguard.settings import Wiring
from changeguard_tools.ticket_servers import JiraServer, adf

USER, TOKEN = "changeguard@example.com", "jira-api-token"
BASIC = "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
T = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
INSTANCE = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"


@pytest.fixture
def jira():
    server = JiraServer(username=USER, password=TOKEN)
    server.start()
    yield server
    server.stop()


def source(server: JiraServer, *, auth=lambda refresh=False: BASIC, **options) -> JiraTicketSource:
    opts = JiraOptions.model_validate(server.options(**options))
    return JiraTicketSource(server.base_url, options=opts, auth=auth)


def seed_change(server: JiraServer, key: str = "CHG-2001", **kw) -> None:
    base = dict(
        summary="Resize payments workers",
        reporter="alice@example.com",
        window_start="2026-11-21T08:00:00Z",
        window_end="2026-11-21T12:00:00Z",
        affected_resources=[INSTANCE],
        test_evidence="https://ci.example.com/runs/1",
        rollback_plan="Resize back to m5.large",
    )
    base.update(kw)
    server.add_issue(key, **base)


def change(actor: Actor | None = None) -> Change:
    return Change(
        change_id="evt-jira",
        event_time=T,
        account="123456789012",
        region="us-east-1",
        service="ec2",
        action="ModifyInstanceAttribute",
        event_name="ModifyInstanceAttribute",
        resources=(INSTANCE,),
        actor=actor
        or Actor(
            arn="arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_1/alice@example.com",
            kind=ActorKind.SSO,
            session_name="alice@example.com",
            user_name="alice@example.com",
        ),
    )


def verdict(ticket, actor: Actor | None = None, policy: Policy | None = None):
    ref = TicketRef(ticket_id="CHG-2001", found_in=TicketRefSource.REQUEST_TAGS)
    return judge(change(actor), ref, TicketLookup(ticket=ticket), policy or Policy())


# -- approvals ------------------------------------------------------------------------------------
def test_approvers_who_approved_are_counted(jira):
    seed_change(jira)
    jira.add_approval("CHG-2001", [("bob@example.com", "approved"), ("carol@example.com", "approved")])
    ticket = source(jira).get("CHG-2001")
    assert ticket is not None and ticket.source == "jira"
    assert [a.approver for a in ticket.approvals] == ["bob@example.com", "carol@example.com"]
    assert all(a.aliases and a.approved_at == datetime(2026, 11, 20, 10, 0, tzinfo=UTC) for a in ticket.approvals)
    assert ticket.status is TicketStatus.APPROVED
    assert verdict(ticket).verdict is Verdict.AUTHORIZED


def test_pending_and_declined_approvers_do_not_count(jira):
    seed_change(jira)
    jira.add_approval("CHG-2001", [("bob@example.com", "approved"), ("carol@example.com", "pending")])
    ticket = source(jira).get("CHG-2001")
    assert ticket is not None and [a.approver for a in ticket.approvals] == ["bob@example.com"]
    assert ticket.status is TicketStatus.OPEN
    assert verdict(ticket).verdict is Verdict.NOT_APPROVED

    seed_change(jira, "CHG-2002")
    jira.add_approval("CHG-2002", [("bob@example.com", "approved"), ("carol@example.com", "declined")])
    declined = source(jira).get("CHG-2002")
    assert declined is not None and declined.status is TicketStatus.REJECTED
    assert any("is rejected" in r.detail for r in verdict(declined).reasons)


def test_a_request_declined_then_approved_in_a_new_round_is_approved_by_that_round_only(jira):
    seed_change(jira)
    jira.add_approval("CHG-2001", [("bob@example.com", "approved"), ("carol@example.com", "declined")])
    declined = source(jira).get("CHG-2001")
    assert declined is not None and declined.status is TicketStatus.REJECTED

    # Sent back through the workflow, the request gets a new approval round: that round decides.
    jira.add_approval("CHG-2001", [("dan@example.com", "approved"), ("erin@example.com", "approved")])
    approved = source(jira).get("CHG-2001")
    assert approved is not None and approved.status is TicketStatus.APPROVED
    # Bob approved the declined round: that approval is not part of the one that stands.
    assert [a.approver for a in approved.approvals] == ["dan@example.com", "erin@example.com"]

    jira.add_approval("CHG-2001", [("cab@example.com", "declined")], name="CAB approval")
    again = source(jira).get("CHG-2001")
    assert again is not None and again.status is TicketStatus.REJECTED


def test_a_request_still_waiting_on_an_approval_step_does_not_authorize(jira):
    seed_change(jira)
    jira.add_approval("CHG-2001", [("bob@example.com", "approved"), ("carol@example.com", "approved")])
    jira.add_approval("CHG-2001", [("cab@example.com", "pending")], name="CAB approval")
    waiting = source(jira).get("CHG-2001")
    assert waiting is not None and len(waiting.approvals) == 2 and waiting.approved_in_source is False
    judged = verdict(waiting)
    assert judged.verdict is Verdict.NOT_APPROVED
    assert [r.detail for r in judged.reasons] == ["CHG-2001 is not approved in jira (ticket status open)"]

    seed_change(jira, "CHG-2002")
    jira.add_approval("CHG-2002", [("bob@example.com", "approved")])
    jira.add_approval("CHG-2002", [("carol@example.com", "approved")], name="CAB approval")
    every_step = source(jira).get("CHG-2002")
    assert every_step is not None and every_step.approved_in_source is True
    assert verdict(every_step).verdict is Verdict.AUTHORIZED


def test_a_resolved_request_authorizes_what_was_done_before_its_resolution_not_after(jira):
    done = {"status": "Closed", "status_category": "done"}
    seed_change(jira, "CHG-2001", resolutiondate="2026-11-21T09:00:00Z", **done)
    seed_change(jira, "CHG-2002", resolutiondate="2026-11-21T11:00:00Z", **done)
    seed_change(jira, "CHG-2003", **done)  # done, with no resolution date
    for key in ("CHG-2001", "CHG-2002", "CHG-2003"):
        jira.add_approval(key, [("bob@example.com", "approved"), ("carol@example.com", "approved")])
    src = source(jira)
    before, after, unknown = (src.get(k) for k in ("CHG-2001", "CHG-2002", "CHG-2003"))
    assert before is not None and before.status is TicketStatus.CLOSED
    assert before.closed_at == datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    assert verdict(before).verdict is Verdict.NOT_APPROVED
    assert "was closed at 2026-11-21T09:00:00+00:00, before the change" in verdict(before).reasons[0].detail
    assert verdict(after).verdict is Verdict.AUTHORIZED
    assert "its close time is unknown" in verdict(unknown).reasons[0].detail
    issue_request = next(r for r in jira.requests if "/rest/api/3/issue/" in r.path)
    assert "resolutiondate" in issue_request.query["fields"].split(",")


def test_approvals_are_read_across_pages(jira):
    seed_change(jira)
    for n in range(55):  # the adapter asks for 50 per page
        jira.add_approval("CHG-2001", [(f"approver{n}@example.com", "approved")], name=f"step {n}")
    ticket = source(jira).get("CHG-2001")
    assert ticket is not None and len(ticket.approvals) == 55
    pages = [r.query.get("start") for r in jira.requests if r.path.endswith("/approval")]
    assert pages == ["0", "50"]


def test_an_issue_whose_approvals_answer_404_is_unverified_not_unapproved(jira):
    """Jira's 404 is also "you may not see it": approvals that cannot be read are unknown, not none."""
    seed_change(jira, service_request=False)
    ticket = source(jira).get("CHG-2001")
    assert ticket is not None and ticket.approvals == ()
    assert ticket.approvals_error is not None and "could not be read" in ticket.approvals_error
    judged = verdict(ticket)
    assert judged.verdict is Verdict.UNVERIFIED
    assert [r.detail for r in judged.reasons] == [f"approvals unverified: {ticket.approvals_error}"]


def test_approvals_hidden_from_changeguards_account_are_unverified(jira):
    seed_change(jira)
    jira.add_approval("CHG-2001", [("bob@example.com", "approved"), ("carol@example.com", "approved")])
    jira.fail(404, path="/approval")  # the request exists; the account may not view it
    ticket = source(jira).get("CHG-2001")
    assert ticket is not None and ticket.approvals_error is not None and ticket.approved_in_source is None
    assert verdict(ticket).verdict is Verdict.UNVERIFIED
    # A violation found without the approvals is one whatever they say, and keeps its verdict.
    seed_change(jira, "CHG-2002", window_start="2026-11-22T08:00:00Z", window_end="2026-11-22T12:00:00Z")
    later = source(jira).get("CHG-2002")
    judged = judge(
        change(), TicketRef(ticket_id="CHG-2002", found_in=TicketRefSource.REQUEST_TAGS), TicketLookup(ticket=later),
        Policy(),
    )  # fmt: skip
    assert judged.verdict is Verdict.OUTSIDE_TICKET_WINDOW
    assert judged.reasons[-1].detail.startswith("approvals unverified: jira: the approvals of CHG-2002")


def test_an_issue_that_cannot_be_read_is_unknown_and_the_reason_says_it_may_be_hidden(jira):
    ticket = source(jira).get("CHG-9999")
    assert ticket is None
    judged = verdict(ticket)
    assert judged.verdict is Verdict.UNKNOWN_TICKET and "may not see it" in judged.reasons[0].detail


# -- custom fields --------------------------------------------------------------------------------
def test_window_scope_evidence_and_rollback_come_from_the_configured_custom_fields(jira):
    seed_change(jira)
    ticket = source(jira).get("CHG-2001")
    assert ticket is not None
    assert ticket.window_start == datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    assert ticket.window_end == datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert ticket.affected_resources == (INSTANCE,)
    # REST API v3 returns rich text as Atlassian Document Format; the adapter reads its text.
    issue_request = next(r for r in jira.requests if "/rest/api/3/issue/" in r.path)
    assert jira.field_ids.test_evidence in issue_request.query["fields"].split(",")
    assert ticket.test_evidence == "https://ci.example.com/runs/1"
    assert ticket.rollback_plan == "Resize back to m5.large"
    assert ticket.requested_by == "alice@example.com" and ticket.title == "Resize payments workers"


def test_api_v2_plain_text_fields_and_date_only_windows(jira):
    seed_change(jira, affected_resources=[INSTANCE, "arn:aws:s3:::reports"])
    jira.issues["CHG-2001"].fields[jira.field_ids.window_start] = "2026-11-21"
    jira.issues["CHG-2001"].fields[jira.field_ids.window_end] = "2026-11-21"
    ticket = source(jira, api_version="2").get("CHG-2001")
    assert ticket is not None
    assert any("/rest/api/2/issue/" in r.path for r in jira.requests)
    assert ticket.affected_resources == (INSTANCE, "arn:aws:s3:::reports")
    assert ticket.window_start == datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    assert ticket.window_end is not None and ticket.window_end.date() == T.date() and ticket.window_end.hour == 23


def test_window_outside_and_scope_miss_are_judged(jira):
    seed_change(jira, window_start="2026-11-22T08:00:00Z", window_end="2026-11-22T12:00:00Z")
    jira.add_approval("CHG-2001", [("bob@example.com", "approved"), ("carol@example.com", "approved")])
    assert verdict(source(jira).get("CHG-2001")).verdict is Verdict.OUTSIDE_TICKET_WINDOW
    seed_change(jira, "CHG-2002", affected_resources=["arn:aws:ec2:us-east-1:123456789012:instance/i-other"])
    jira.add_approval("CHG-2002", [("bob@example.com", "approved"), ("carol@example.com", "approved")])
    assert verdict(source(jira).get("CHG-2002")).verdict is Verdict.OUT_OF_SCOPE


def test_missing_test_evidence_or_rollback_plan_is_incomplete(jira):
    seed_change(jira, test_evidence=None)
    jira.add_approval("CHG-2001", [("bob@example.com", "approved"), ("carol@example.com", "approved")])
    ticket = source(jira).get("CHG-2001")
    assert ticket is not None and ticket.test_evidence is None and ticket.rollback_plan
    assert verdict(ticket).verdict is Verdict.INCOMPLETE_TICKET
    # Without the fields configured at all, no ticket is complete: fail closed.
    bare = JiraTicketSource(jira.base_url, options=JiraOptions(), auth=lambda refresh=False: BASIC).get("CHG-2001")
    assert bare is not None and bare.test_evidence is None and bare.rollback_plan is None


def test_adf_rich_text_with_several_paragraphs_is_read_as_lines(jira):
    seed_change(jira)
    jira.issues["CHG-2001"].fields[jira.field_ids.rollback_plan] = adf("Step 1: stop\nStep 2: restore")
    ticket = source(jira).get("CHG-2001")
    assert ticket is not None and ticket.rollback_plan == "Step 1: stop\nStep 2: restore"


# -- emergency ------------------------------------------------------------------------------------
def test_emergency_from_the_change_type_field_or_the_issue_type(jira):
    seed_change(jira, change_type="Emergency")
    seed_change(jira, "CHG-2002", change_type=None, issue_type="Emergency Change")
    seed_change(jira, "CHG-2003", change_type="Standard")
    src = source(jira)
    first, second, third = src.get("CHG-2001"), src.get("CHG-2002"), src.get("CHG-2003")
    assert first is not None and first.type is TicketType.EMERGENCY
    assert second is not None and second.type is TicketType.EMERGENCY
    assert third is not None and third.type is TicketType.STANDARD
    assert verdict(first).verdict is Verdict.EMERGENCY


def test_the_emergency_value_is_configurable(jira):
    seed_change(jira, change_type="Expedited")
    ticket = source(jira, emergency_values=["Expedited"]).get("CHG-2001")
    assert ticket is not None and ticket.is_emergency


# -- not found, outages, credentials --------------------------------------------------------------
def test_unknown_ticket_is_none(jira):
    assert source(jira).get("CHG-9999") is None
    assert verdict(None).verdict is Verdict.UNKNOWN_TICKET


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_make_the_source_unavailable(jira, status):
    seed_change(jira)
    jira.fail(status)
    with pytest.raises(TicketSourceUnavailableError, match=str(status)):
        source(jira).get("CHG-2001")


def test_a_slow_answer_times_out_within_the_timeout(jira):
    seed_change(jira)
    jira.slow(3.0)
    started = time.monotonic()
    with pytest.raises(TicketSourceUnavailableError, match=r"unreachable|too slow"):
        source(jira, timeout_seconds=0.5).get("CHG-2001")
    assert time.monotonic() - started < 1.5


def test_a_refused_connection_is_unavailable_and_the_server_can_come_back(jira):
    seed_change(jira)
    jira.refuse()
    src = source(jira)
    started = time.monotonic()
    with pytest.raises(TicketSourceUnavailableError, match="unreachable"):
        src.get("CHG-2001")
    assert time.monotonic() - started < 2.0
    jira.resume()
    assert src.get("CHG-2001") is not None  # failures are not cached


def test_wrong_credentials_refetch_once_then_fail(jira):
    seed_change(jira)
    asked: list[bool] = []

    def stale(refresh: bool = False) -> str:
        asked.append(refresh)
        return "Basic " + base64.b64encode(b"someone:expired").decode()

    with pytest.raises(TicketSourceUnavailableError, match="401"):
        source(jira, auth=stale).get("CHG-2001")
    assert asked == [False, True]


def test_a_rotated_secret_is_picked_up_on_401(jira):
    seed_change(jira)

    def rotating(refresh: bool = False) -> str:
        return BASIC if refresh else "Basic " + base64.b64encode(b"old:secret").decode()

    assert source(jira, auth=rotating).get("CHG-2001") is not None


def test_lookups_are_cached_within_an_invocation(jira):
    seed_change(jira)
    src = source(jira)
    src.get("CHG-2001")
    src.get("CHG-2001")
    src.get("CHG-9999")
    src.get("CHG-9999")
    assert len([r for r in jira.requests if "/issue/" in r.path]) == 2
    src.clear_cache()
    src.get("CHG-2001")
    assert len([r for r in jira.requests if "/issue/" in r.path]) == 3


def test_ids_that_are_not_ticket_keys_never_reach_jira(jira):
    src = source(jira)
    for bad in ("../../rest/api/3/myself", "CHG-1 OR 1=1", "CHG-1?x=1", ""):
        assert src.get(bad) is None
    assert jira.requests == []


def test_plain_http_is_refused_except_on_the_loopback_interface():
    with pytest.raises(ConfigurationError, match="https"):
        JiraTicketSource("http://jira.example.com")
    JiraTicketSource("https://example.atlassian.net")


def test_from_wiring_reads_credentials_from_secrets_manager(jira, aws):
    sm = aws.client("secretsmanager")
    arn = sm.create_secret(Name="changeguard/jira", SecretString=json.dumps({"email": USER, "api_token": TOKEN}))["ARN"]
    seed_change(jira)
    wiring = Wiring(
        function_name="correlate_change",
        ledger_table_name="ledger",
        parameter_path="/changeguard/dev/",
        ticket_source="jira",
        ticket_base_url=jira.base_url,
        ticket_secret_arn=arn,
        ticket_source_options=json.dumps(jira.options()),
    )
    ticket = JiraTicketSource.from_wiring(wiring).get("CHG-2001")
    assert ticket is not None and jira.requests[0].authorization == BASIC

    broken = sm.create_secret(Name="changeguard/broken", SecretString=json.dumps({"user": "x"}))["ARN"]
    with pytest.raises(TicketSourceUnavailableError, match="secret"):
        JiraTicketSource.from_wiring(wiring.model_copy(update={"ticket_secret_arn": broken})).get("CHG-2002")
    missing = arn.replace("changeguard/jira", "changeguard/nothing")
    with pytest.raises(TicketSourceUnavailableError, match="credentials unavailable"):
        JiraTicketSource.from_wiring(wiring.model_copy(update={"ticket_secret_arn": missing})).get("CHG-2003")


def test_from_wiring_rejects_unknown_options():
    wiring = Wiring(
        function_name="f",
        ledger_table_name="l",
        parameter_path="/p/",
        ticket_source="jira",
        ticket_base_url="https://example.atlassian.net",
        ticket_source_options='{"window_begin": "customfield_1"}',
    )
    with pytest.raises(ConfigurationError, match="TICKET_SOURCE_OPTIONS"):
        JiraTicketSource.from_wiring(wiring)
