"""The follow-up through the harness: wired as template.yaml wires it, on its schedule, alerts via SNS."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from aws_lambda_powertools.utilities import parameters
from changeguard.adapters.dynamodb import item_to_entry
from changeguard_tools.harness import FixedClock, Harness, quiet_stream
from changeguard_tools.template import Template
from changeguard_tools.ticket_servers import JiraServer
from changeguard_tools.tickets import TicketBook
from sample_events import load_event

FOLLOW_UP = "FollowUpChangesFunction"
EMERGENCY_EVENT = "correlate_change/05-emergency-change.json"  # orders-db, session CHG-1004, 2026-11-21T23:48Z
EVENT_TIME = datetime(2026, 11, 21, 23, 48, tzinfo=UTC)
DUE = EVENT_TIME + timedelta(hours=24)
CHANGE_ID = "0b4a1f6e-3c2d-4e5f-8a9b-000000000005"
APPROVER = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_ChangeApprover_5e6f7a8b9c0d1e2f/{}@example.com"


def harness(aws, **params) -> Harness:
    parameters.clear_caches()
    h = Harness(aws.endpoint_url, clock=FixedClock(EVENT_TIME + timedelta(minutes=2)), log_stream=quiet_stream(),
                parameters=params)  # fmt: skip
    h.provision()
    return h


def ledger(h: Harness, change_id: str):
    items = h.admin_client("dynamodb").query(
        TableName=h.ctx.refs["ChangeLedgerTable"],
        KeyConditionExpression="change_id = :c",
        ExpressionAttributeValues={":c": {"S": change_id}},
    )["Items"]
    return sorted((item_to_entry(i) for i in items), key=lambda e: e.entry)


def schedule(h: Harness, at: datetime) -> dict:
    h.clock.set(at)  # type: ignore[union-attr]
    h.refresh_clock()
    result = h.run_schedule(FOLLOW_UP)
    assert result["error"] is None, result["error"]
    return result


def alerts(result: dict) -> list[dict]:
    return [a for o in result["outcomes"] for a in o["alerts"]]


def test_the_template_schedules_the_follow_up_every_15_minutes():
    template = Template()
    ctx = template.context()
    for logical_id in template.resources:
        ctx.refs.setdefault(logical_id, f"{logical_id}-physical")
    spec = template.functions(ctx)[FOLLOW_UP]
    assert spec.schedules == ["Schedule"] and spec.rules == []
    event = spec.properties["Events"]["Schedule"]["Properties"]
    assert event["Schedule"] == "rate(15 minutes)"
    assert spec.environment["CHANGEGUARD_FUNCTION"] == "follow_up_changes"
    assert spec.properties["ReservedConcurrentExecutions"] == 1


def test_an_unapproved_emergency_change_alerts_once_when_overdue_then_records_the_late_approval(aws):
    h = harness(aws)
    book = TicketBook(h.ctx.refs["TicketTable"], h.admin_client("dynamodb"))
    book.add("CHG-1004", type="emergency", title="orders-db out of storage",
             affected_resources=["arn:aws:rds:us-east-1:123456789012:db:orders-db"])  # fmt: skip
    correlated = h.process(load_event(EMERGENCY_EVENT))
    assert correlated["outcomes"][0]["verdict"] == "EMERGENCY"

    waiting = schedule(h, DUE - timedelta(hours=1))
    assert alerts(waiting) == []
    assert [e.entry for e in ledger(h, CHANGE_ID) if e.entry.startswith("RECHECK#")] == []

    overdue = schedule(h, DUE + timedelta(minutes=15))
    [alert] = alerts(overdue)
    assert alert["severity"] == "high" and alert["subject"].startswith("OVERDUE: retroactive approval of CHG-1004")
    assert overdue["outcomes"][0]["function"] == FOLLOW_UP

    again = schedule(h, DUE + timedelta(minutes=30))
    assert alerts(again) == [] and again["outcomes"][0]["actions"] == ["nothing new (1 change(s) followed)"]

    book.approve("CHG-1004", approver=APPROVER.format("bob"), approved_at=DUE + timedelta(hours=1))
    book.approve("CHG-1004", approver=APPROVER.format("carol"), approved_at=DUE + timedelta(hours=2))
    approved = schedule(h, DUE + timedelta(hours=2, minutes=15))
    assert alerts(approved) == []
    rechecks = [e for e in ledger(h, CHANGE_ID) if e.entry.startswith("RECHECK#")]
    assert [(e.body["result"], e.body.get("late")) for e in rechecks] == [("overdue", False), ("retro-approved", True)]
    assert rechecks[1].body["approvers"] == ["bob@example.com", "carol@example.com"]
    assert all(e.function == "follow_up_changes" and e.event_time == EVENT_TIME for e in rechecks)


@pytest.fixture
def jira():
    with JiraServer(username="changeguard@example.com", password="api-token") as server:
        yield server


def test_jira_outage_unverified_then_rejudged_and_the_outage_closed(aws, jira):
    secret = aws.client("secretsmanager").create_secret(
        Name="changeguard/jira",
        SecretString=json.dumps({"email": "changeguard@example.com", "api_token": "api-token"}),
    )["ARN"]
    h = harness(
        aws,
        TicketSource="jira",
        TicketBaseUrl=jira.base_url,
        TicketSecretArn=secret,
        TicketSourceOptions=json.dumps(jira.options(timeout_seconds=0.5)),
    )
    jira.seed_ticket({"id": "CHG-1004", "type": "emergency", "title": "orders-db out of storage"})
    jira.refuse()

    down = h.process(load_event(EMERGENCY_EVENT))
    assert down["outcomes"][0]["verdict"] == "UNVERIFIED"
    assert [a["subject"] for a in alerts(down)] == ["ChangeGuard degraded: ticket source 'jira' unreachable"]

    jira.resume()
    recovered = schedule(h, EVENT_TIME + timedelta(minutes=15))
    subjects = sorted(a["subject"] for a in alerts(recovered))
    assert subjects[0].startswith("ChangeGuard recovered: ticket source 'jira'")
    assert subjects[1].startswith("EMERGENCY: rds:ModifyDBInstance on orders-db")
    [recheck] = [e for e in ledger(h, CHANGE_ID) if e.entry.startswith("RECHECK#")]
    assert recheck.verdict == "EMERGENCY" and recheck.body["previous_verdict"] == "UNVERIFIED"
    outage = [e.entry for e in ledger(h, "outage:jira") if not e.entry.startswith("ALERT#")]
    assert outage == ["CLOSED#000001", "OPEN#000001"]
    assert all(r.authorization and r.authorization.startswith("Basic ") for r in jira.requests)

    quiet = schedule(h, EVENT_TIME + timedelta(minutes=30))
    assert alerts(quiet) == []


def test_the_follow_up_scenario_alerts_once_when_the_emergency_change_is_overdue(aws, tmp_path):
    """events/scenario/15-follow-up.yaml, after the correlation scenario it follows up on."""
    import shutil

    from changeguard_tools import fixtures
    from changeguard_tools.demo import SCENARIO, load_scenario, run_step

    for name in ("10-correlation.yaml", "15-follow-up.yaml"):
        shutil.copy(SCENARIO / name, tmp_path / name)
    seed, steps = load_scenario(tmp_path)
    h = harness(aws)
    h.clock.set(datetime(2026, 11, 21, tzinfo=UTC))  # type: ignore[union-attr]
    fixtures.seed(h, seed)
    followed = []
    for step in steps:
        for _, result in run_step(h, aws, step):
            assert result["error"] is None, result["error"]
            if result["routed_to"] == [FOLLOW_UP]:
                followed.append([a["subject"] for a in alerts(result)])
    assert followed == [[], ["OVERDUE: retroactive approval of CHG-1004 for rds:ModifyDBInstance on orders-db"], []]
    assert h.clock.now() == datetime(2026, 11, 21, tzinfo=UTC)  # type: ignore[union-attr]


def _fixtures(name: str) -> dict:
    import yaml
    from changeguard_tools.demo import SCENARIO

    return yaml.safe_load((SCENARIO / name).read_text())["fixtures"]


def test_an_unreadable_calendar_leaves_changes_unverified_until_the_follow_up_reads_it_at_their_time(aws):
    """The calendar of the demo: closed except Saturdays 02:00-06:00 UTC (2026-11-21 is a Saturday)."""
    from changeguard_tools import fixtures
    from changeguard_tools.embedded.faults import fast_retries

    h = harness(aws)
    ticket = next(t for t in _fixtures("10-correlation.yaml")["tickets"] if t["id"] == "CHG-1001")
    calendars = _fixtures("20-calendar.yaml")["calendars"]
    fixtures.seed(
        h, {"tickets": [ticket], "calendars": calendars, "parameters": {"change-calendar-names": calendars[0]["name"]}}
    )
    inside = load_event("correlate_change/01-approved-run-instances.json")  # 03:10, in the window
    outside = json.loads(json.dumps(inside))
    outside["detail"]["eventID"] = outside["detail"]["eventID"][:-6] + "0000ff"
    outside["id"] = outside["id"][:-6] + "0000ff"
    outside["time"] = outside["detail"]["eventTime"] = "2026-11-21T09:10:00Z"  # the window has closed

    with fast_retries():
        down = aws.faults.fail("503", operations=["GetCalendarState"])
        judged = [h.process(inside), h.process(outside)]
        assert [r["outcomes"][0]["verdict"] for r in judged] == ["UNVERIFIED", "UNVERIFIED"]
        assert [a["subject"] for r in judged for a in alerts(r)] == [
            "ChangeGuard degraded: change calendar unreachable"
        ]
        waiting = schedule(h, datetime(2026, 11, 21, 10, 0, tzinfo=UTC))
        assert alerts(waiting) == []
        aws.faults.clear()
        assert down.injected > 0

    recovered = schedule(h, datetime(2026, 11, 21, 10, 15, tzinfo=UTC))
    subjects = sorted(a["subject"] for a in alerts(recovered))
    assert subjects[0] == "ChangeGuard recovered: change calendar answers again"
    assert subjects[1].startswith("OUTSIDE_CHANGE_WINDOW: ec2:RunInstances on instance/i-")
    assert len(subjects) == 2  # the change inside the window is authorized: no alert
    verdicts = {
        change_id: [e.verdict for e in ledger(h, change_id) if e.entry.startswith("RECHECK#")]
        for change_id in (inside["detail"]["eventID"], outside["detail"]["eventID"])
    }
    assert verdicts == {
        inside["detail"]["eventID"]: ["AUTHORIZED"],
        outside["detail"]["eventID"]: ["OUTSIDE_CHANGE_WINDOW"],
    }
    # Both were re-judged at 10:15, when the calendar is CLOSED: the one made at 03:10 came out
    # AUTHORIZED only because the follow-up asked the calendar about the change's own time.


def test_tags_that_could_not_be_read_leave_the_change_unverified_until_the_follow_up_reads_them(aws):
    """dave's console change to the reports bucket: its ticket is only in the bucket's tags."""
    from changeguard_tools import fixtures
    from changeguard_tools.embedded.faults import fast_retries

    h = harness(aws)
    ticket = next(t for t in _fixtures("10-correlation.yaml")["tickets"] if t["id"] == "CHG-1001")
    fixtures.seed(h, {"tickets": [ticket], "resource_tags": {"arn:aws:s3:::acme-reports-prod": {"ChangeTicket": "CHG-1001"}}})  # fmt: skip
    event = load_event("correlate_change/02-console-no-ticket.json")  # 2026-11-21T09:42:17Z
    change_id = event["detail"]["eventID"]

    with fast_retries():
        refused = aws.faults.fail("denied", operations=["GetResources"])
        judged = h.process(event)
        [outcome] = [o for o in judged["outcomes"] if o["function"] == "CorrelateChangeFunction"]
        assert outcome["verdict"] == "UNVERIFIED"
        [verdict] = [e for e in ledger(h, change_id) if e.entry == "VERDICT"]
        assert [r["detail"] for r in verdict.body["judgement"]["reasons"]] == [
            "ticket reference unverified: the tags of arn:aws:s3:::acme-reports-prod could not be read"
        ]
        # One alert for the change, no degraded alert: the ticket source was never the problem.
        [alert] = alerts(judged)
        assert alert["subject"].startswith("UNVERIFIED: s3:PutBucketPolicy on acme-reports-prod by dave@example.com")
        assert ledger(h, "outage:dynamodb") == []
        waiting = schedule(h, datetime(2026, 11, 21, 10, 0, tzinfo=UTC))
        assert alerts(waiting) == [] and [e for e in ledger(h, change_id) if e.entry.startswith("RECHECK#")] == []
        assert refused.injected >= 2  # the correlator's read and the follow-up's
        aws.faults.clear()

    recovered = schedule(h, datetime(2026, 11, 21, 10, 15, tzinfo=UTC))
    assert alerts(recovered) == []  # authorized: no alert
    [recheck] = [e for e in ledger(h, change_id) if e.entry.startswith("RECHECK#")]
    assert recheck.verdict == "AUTHORIZED" and recheck.body["previous_verdict"] == "UNVERIFIED"
    assert (recheck.body["judgement"]["ticket_id"], recheck.body["judgement"]["ticket_ref_source"]) == (
        "CHG-1001",
        "resource_tag",
    )
