"""The evidence pack, end to end: scenario events -> ledger -> daily digests -> evidence bucket.

What an auditor gets: the full change population as CSV, the unauthorized / emergency /
rolled-back lists with their tickets and approvals, the KPI table, the digest verification and
one HTML report; the scheduled function writes it to the evidence bucket and the CLI to a folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from changeguard.adapters.dynamodb import DynamoDBLedger
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard_tools import cli, fixtures
from changeguard_tools.demo import load_scenario
from changeguard_tools.harness import FixedClock, Harness, quiet_stream
from sample_events import load_event


@pytest.fixture(autouse=True)
def _leave_no_stack(aws):
    """moto's state is per process: empty it afterwards too, so a later test (the demo) can create the
    same stack in its own embedded AWS."""
    yield
    aws.reset()


DAY = datetime(2026, 11, 21, tzinfo=UTC)
PREFIX = "evidence/2026-Q4/"
NOVEMBER_OVER = datetime(2026, 12, 2, 3, 15, tzinfo=UTC)  # the daily digest run that covers November 30
CHANGES = {  # sample event -> the verdict correlate_change gives it with the scenario's tickets
    "01-approved-run-instances.json": "AUTHORIZED",
    "02-console-no-ticket.json": "NO_TICKET",
    "03-unapproved-ticket.json": "NOT_APPROVED",
    "04-self-approved.json": "SELF_APPROVED",
    "05-emergency-change.json": "EMERGENCY",
    "06-pipeline-exempt.json": "EXEMPT",
    "07-root-stop-logging.json": "NO_TICKET",
}


def _fact(kind: EntryKind, key: str, at: datetime, suffix: str, **body: object) -> LedgerEntry:
    return LedgerEntry(
        change_id=key,
        entry=f"{kind.value}#{at.isoformat()}{suffix}",
        kind=kind,
        function="guard_deployment",
        event_time=at,
        recorded_at=at,
        body=dict(body),
    )


def _deployment(did: str, start: datetime, minutes: int, state: str, **extra: object) -> list[LedgerEntry]:
    finish = start + timedelta(minutes=minutes)
    common = {
        "deployment_id": did,
        "application": "checkout",
        "deployment_group": "prod",
        "started_at": start.isoformat(),
    }
    return [
        _fact(EntryKind.DEPLOYMENT, f"deployment:{did}", start, "#START", state="START", **common),
        _fact(
            EntryKind.DEPLOYMENT,
            f"deployment:{did}",
            finish,
            f"#{state}",
            state=state,
            finished_at=finish.isoformat(),
            **common,
            **extra,
        ),
    ]


@pytest.fixture
def stack(aws):
    """The scenario's changes judged, plus the facts the deployment guard and quarantine would record."""
    harness = Harness(aws.endpoint_url, clock=FixedClock(DAY + timedelta(hours=18)), log_stream=quiet_stream())
    harness.provision()
    seed, _ = load_scenario()
    seed.pop("now", None)
    fixtures.seed(harness, seed)
    ids = {}
    for name, verdict in CHANGES.items():
        event = load_event(f"correlate_change/{name}")
        ids[name] = event["detail"]["eventID"]
        outcome = harness.process(event)["outcomes"][0]
        assert outcome["verdict"] == verdict, name
    ledger = DynamoDBLedger(harness.ctx.refs["ChangeLedgerTable"], ddb=harness.admin_client("dynamodb"))
    start = DAY + timedelta(hours=13)
    entries = _deployment("d-OK1", start, 12, "SUCCESS")
    entries += _deployment("d-BAD2", start + timedelta(hours=1), 6, "SUCCESS", rolled_back=True, ticket_id="CHG-1002")
    entries.append(
        _fact(
            EntryKind.ROLLBACK, "deployment:d-BAD2", start + timedelta(hours=1, minutes=6), "", deployment_id="d-BAD2"
        )
    )
    entries += _deployment("d-RB3", start + timedelta(hours=1, minutes=7), 4, "SUCCESS", rollback_of="d-BAD2")
    entries.append(
        _fact(
            EntryKind.QUARANTINE,
            "quarantine:acme-reports-prod",
            DAY + timedelta(hours=10),
            "",
            change_id=ids["02-console-no-ticket.json"],
        )
    )
    for e in entries:
        assert ledger.append([e])
    return harness, ids


def _objects(harness: Harness, prefix: str) -> dict[str, bytes]:
    s3 = harness.admin_client("s3")
    bucket = harness.ctx.refs["EvidenceBucket"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {k[len(prefix) :]: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def _digest_through(harness: Harness, at: datetime) -> None:
    harness.clock.set(at)
    harness.refresh_clock()
    result = harness.run_schedule("WriteDigestFunction")
    assert result["error"] is None, result


def test_the_quarterly_schedule_writes_the_evidence_pack(stack):
    harness, ids = stack
    _digest_through(harness, datetime(2026, 11, 23, 3, 15, tzinfo=UTC))  # the daily runs: the chain starts
    _digest_through(harness, datetime(2027, 1, 3, 3, 15, tzinfo=UTC))  # ...and catches up to 2027-01-01
    harness.clock.set(datetime(2027, 1, 3, 6, 0, tzinfo=UTC))
    harness.refresh_clock()
    result = harness.run_schedule("BuildEvidenceFunction", "QuarterlyEvidencePack")
    assert result["error"] is None, result
    (outcome,) = result["outcomes"]
    assert any(a.startswith("wrote ") and PREFIX in a for a in outcome["actions"])
    files = _objects(harness, PREFIX)
    expected = {
        "changes.csv", "unauthorized.csv", "emergency.csv", "rolled_back.csv", "deployments.csv", "kpis.csv",
        "kpis.json", "kpis.txt", "digest-verification.json", "digest-verification.csv", "report.html", "README.txt",
        "manifest.json",
    }  # fmt: skip
    assert set(files) == expected

    # The manifest names every other file with its SHA-256.
    manifest = json.loads(files["manifest.json"])
    assert manifest["period"] == "2026-Q4" and set(manifest["files"]) == expected - {"manifest.json"}
    for name, meta in manifest["files"].items():
        assert hashlib.sha256(files[name]).hexdigest() == meta["sha256"], name

    # The full population, which auditors sample from.
    changes = {r["change_id"]: r for r in _rows(files["changes.csv"])}
    assert {ids[n]: v for n, v in CHANGES.items()} == {cid: r["verdict"] for cid, r in changes.items()}
    approved = changes[ids["01-approved-run-instances.json"]]
    assert approved["ticket_id"] == "CHG-1001" and "bob@example.com" in approved["approvals"]
    assert "carol@example.com" in approved["approvals"] and approved["approval_lead_hours"]
    bucket_change = changes[ids["02-console-no-ticket.json"]]
    assert bucket_change["quarantined"] == "TRUE" and bucket_change["tag_compliant"] == "FALSE"

    # The lists, with their tickets and approvals.
    unauthorized = {r["change_id"]: r for r in _rows(files["unauthorized.csv"])}
    assert set(unauthorized) == {
        ids[n]
        for n in (
            "02-console-no-ticket.json",
            "03-unapproved-ticket.json",
            "04-self-approved.json",
            "07-root-stop-logging.json",
        )
    }
    unapproved = unauthorized[ids["03-unapproved-ticket.json"]]
    assert unapproved["ticket_id"] == "CHG-1002" and "carol@example.com" in unapproved["approvals"]
    assert "1 independent approval" in unapproved["reasons"]
    (emergency,) = _rows(files["emergency.csv"])
    assert emergency["change_id"] == ids["05-emergency-change.json"] and emergency["ticket_id"] == "CHG-1004"
    assert emergency["ticket_type"] == "emergency" and emergency["retro_approval_due"]
    (rolled_back,) = _rows(files["rolled_back.csv"])
    assert rolled_back["deployment_id"] == "d-BAD2" and rolled_back["ticket_id"] == "CHG-1002"
    assert "carol@example.com" in rolled_back["approvals"]

    # The KPI table.
    kpis = {r["name"]: r for r in _rows(files["kpis.csv"])}
    assert kpis["unauthorized_changes"]["value"] == "4" and kpis["unauthorized_changes"]["status"] == "MISSED"
    assert kpis["rollback_rate"]["value"] == "50" and (
        kpis["rollback_rate"]["numerator"],
        kpis["rollback_rate"]["denominator"],
    ) == ("1", "2")
    assert kpis["change_success_rate"]["value"] == "50" and kpis["mean_time_to_deploy_minutes"]["value"] == "12"
    assert kpis["changes_with_tickets_pct"]["value"] == "66.7"  # 4 of the 6 governed changes
    # Tag compliance: the quarantined bucket is non-compliant (tag enforcement may mark others).
    checked = [r for r in changes.values() if r["governed"] == "TRUE" and r["tag_compliant"]]
    noncompliant = [r["change_id"] for r in checked if r["tag_compliant"] == "FALSE"]
    assert ids["02-console-no-ticket.json"] in noncompliant
    expected_pct = round(100 * (len(checked) - len(noncompliant)) / len(checked), 1)
    assert float(kpis["tag_compliance_pct"]["value"]) == expected_pct

    # The digests verify, and say what they covered.
    verification = json.loads(files["digest-verification.json"])
    assert verification["ok"] is True, verification["summary"]
    day = next(d for d in verification["days"] if d["day"] == "2026-11-21")
    assert day["status"] == "verified" and day["items_in_digest"] == day["items_in_ledger"] >= 7 + 7

    # The report page, self-contained.
    html = files["report.html"].decode()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert 'data-chart="changes-by-week"' in html and 'data-kpi="unauthorized_changes">4<' in html

    # Missed KPI targets became one alert, through the ledger's outbox, like every alert.
    alerts = outcome["alerts"]
    assert len(alerts) == 1 and alerts[0]["subject"].startswith("2026-Q4 change KPIs missed")
    assert alerts[0]["severity"] == "high"
    again = harness.run_schedule("BuildEvidenceFunction", "QuarterlyEvidencePack")
    assert (
        again["outcomes"][0]["alerts"] == []
        and "already recorded for this report: kpi-missed" in again["outcomes"][0]["actions"]
    )


def test_tampering_shows_in_the_next_report_and_alerts(stack):
    harness, ids = stack
    _digest_through(harness, datetime(2026, 11, 23, 3, 15, tzinfo=UTC))
    _digest_through(harness, NOVEMBER_OVER)  # a month's report is asked for once the month is over
    ddb = harness.admin_client("dynamodb")
    table = harness.ctx.refs["ChangeLedgerTable"]
    key = {"change_id": {"S": ids["03-unapproved-ticket.json"]}, "entry": {"S": "VERDICT"}}
    item = ddb.get_item(TableName=table, Key=key)["Item"]
    item["verdict"] = {"S": "AUTHORIZED"}  # someone "fixes" a verdict in place
    ddb.put_item(TableName=table, Item=item)

    result = harness.invoke("BuildEvidenceFunction", {"report": "monthly", "period": "2026-11"})
    assert result.error is None, result.error
    assert result.result["change_id"] == "report:monthly:2026-11"
    files = _objects(harness, "reports/monthly/2026-11/")
    verification = json.loads(files["digest-verification.json"])
    assert verification["ok"] is False
    day = next(d for d in verification["days"] if d["day"] == "2026-11-21")
    assert day["status"] == "tampered" and day["altered"] == [f"{ids['03-unapproved-ticket.json']}|VERDICT"]
    harness.pump_streams()
    alerts = {a.kind: a for a in harness.drain_alerts()}
    assert alerts["ledger-integrity"].severity == "critical"
    assert "kpi-missed" in alerts


def test_a_rerun_that_finds_tampering_alerts_although_the_report_alerted_before(stack):
    """Each alert of a report is its own conditional put: the scheduled run's kpi-missed alert must not
    swallow the ledger-integrity alert of an on-demand re-run that finds the ledger altered."""
    harness, ids = stack
    _digest_through(harness, datetime(2026, 11, 23, 3, 15, tzinfo=UTC))
    _digest_through(harness, NOVEMBER_OVER)
    request = {"report": "monthly", "period": "2026-11"}
    first = harness.invoke("BuildEvidenceFunction", request)
    assert first.error is None and first.result["alert_ids"] == ["report:monthly:2026-11/build_evidence/kpi-missed"]
    harness.pump_streams()
    assert [a.kind for a in harness.drain_alerts()] == ["kpi-missed"]

    ddb = harness.admin_client("dynamodb")
    table = harness.ctx.refs["ChangeLedgerTable"]
    key = {"change_id": {"S": ids["03-unapproved-ticket.json"]}, "entry": {"S": "VERDICT"}}
    item = ddb.get_item(TableName=table, Key=key)["Item"]
    item["verdict"] = {"S": "AUTHORIZED"}
    ddb.put_item(TableName=table, Item=item)

    again = harness.invoke("BuildEvidenceFunction", request)
    assert again.error is None, again.error
    assert again.result["alert_ids"] == ["report:monthly:2026-11/build_evidence/ledger-integrity"]
    assert "already recorded for this report: kpi-missed" in again.result["actions"]
    harness.pump_streams()
    assert [(a.kind, a.severity) for a in harness.drain_alerts()] == [("ledger-integrity", "critical")]


def test_a_bad_request_is_rejected_without_side_effects(aws):
    harness = Harness(aws.endpoint_url, clock=FixedClock(DAY), log_stream=quiet_stream())
    harness.provision()
    result = harness.invoke("BuildEvidenceFunction", {"report": "quarterly", "period": "2026-Q5"})
    assert result.error and "InvalidEventError" in result.error
    for request in (  # near the ends of Python's dates (OverflowError before), and a range of centuries
        {"report": "custom", "from": "2026-01-01", "to": "9999-12-31"},
        {"report": "quarterly", "period": "9999-12-31"},
        {"report": "weekly", "period": "9999-W52"},
        {"report": "custom", "from": "0001-01-01", "to": "9999-12-30"},
        # Not over yet (the clock is 2026-11-21): its alerts would take the real report's keys.
        {"report": "monthly", "period": "2026-11"},
        {"report": "custom", "from": "2026-11-01", "to": "2026-11-21"},
    ):
        result = harness.invoke("BuildEvidenceFunction", request)
        assert result.error and "InvalidEventError" in result.error, (request, result.error)
    assert _objects(harness, "evidence/") == {} and _objects(harness, "reports/") == {}


def test_a_digest_schedule_stamped_in_the_future_is_rejected_without_side_effects(aws):
    """An invoke by hand with a later ``time`` would write permanent digests of days not over yet."""
    harness = Harness(aws.endpoint_url, clock=FixedClock(DAY), log_stream=quiet_stream())
    harness.provision()
    event = load_event("write_digest/daily-digest.json") | {"time": "2027-01-23T03:15:00Z"}
    result = harness.invoke("WriteDigestFunction", event)
    assert result.error and "InvalidEventError" in result.error
    assert _objects(harness, "digests/") == {}


def test_the_cli_writes_the_pack_to_a_folder_and_prints_the_kpis(stack, tmp_path, capsys):
    harness, ids = stack
    _digest_through(harness, datetime(2026, 11, 23, 3, 15, tzinfo=UTC))
    refs = harness.ctx.refs
    common = [
        "--table",
        refs["ChangeLedgerTable"],
        "--bucket",
        refs["EvidenceBucket"],
        "--ticket-table",
        refs["TicketTable"],
    ]
    common += ["--now", "2026-11-23T04:00:00Z"]
    assert cli.main(["evidence", "--period", "2026-Q4", "--out", str(tmp_path), *common]) == 0
    out = capsys.readouterr().out
    assert "KPIs for 2026-Q4" in out and "Unauthorized changes" in out and "Ledger digests: OK" in out
    folder = tmp_path / "2026-Q4"
    assert (folder / "report.html").exists() and (folder / "manifest.json").exists()
    rows = list(csv.DictReader((folder / "changes.csv").open()))
    assert {r["change_id"] for r in rows} == set(ids.values())

    assert cli.main(["report", "--from", "2026-11-01", "--to", "2026-11-30", "--strict", *common]) == 2
    out = capsys.readouterr().out
    assert "KPIs for 2026-11-01..2026-11-30" in out and "MISSED" in out
    assert cli.main(["report", "--from", "2026-11-01", "--to", "2026-11-30", "--json", *common]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changes"] == 7 and len(data["unauthorized"]) == 4


def test_deleting_a_re_judgement_recorded_after_the_period_shows_in_the_report(stack):
    """A follow-up's RECHECK lands on its change's day, long digested: the digest of the day it was
    recorded (here after the month) covers it, so deleting it is tampering, not a quiet verdict change."""
    harness, ids = stack
    _digest_through(harness, datetime(2026, 11, 23, 3, 15, tzinfo=UTC))
    table = harness.ctx.refs["ChangeLedgerTable"]
    ledger = DynamoDBLedger(table, ddb=harness.admin_client("dynamodb"))
    change_id = ids["05-emergency-change.json"]
    verdict = next(e for e in ledger.entries_for(change_id) if e.kind is EntryKind.VERDICT)
    recorded = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    recheck = LedgerEntry(
        change_id=change_id,
        entry=f"RECHECK#{recorded.isoformat()}#1-overdue",
        kind=EntryKind.RECHECK,
        function="follow_up_changes",
        event_time=verdict.event_time,  # as the follow-up files it: on the change's day
        recorded_at=recorded,
        verdict="NO_TICKET",
        body={"result": "overdue", "previous_verdict": "EMERGENCY"},
    )
    assert ledger.append([recheck])
    _digest_through(harness, datetime(2026, 12, 3, 3, 15, tzinfo=UTC))
    digest = json.loads(_objects(harness, "digests/")["2026-12-01.json"])
    assert [f"{i['change_id']}|{i['entry']}" for i in digest["late"]] == [f"{change_id}|{recheck.entry}"]

    request = {"report": "monthly", "period": "2026-11"}
    first = harness.invoke("BuildEvidenceFunction", request)
    assert first.error is None, first.error
    verification = json.loads(_objects(harness, "reports/monthly/2026-11/")["digest-verification.json"])
    day = next(d for d in verification["days"] if d["day"] == "2026-11-21")
    assert day["status"] == "verified", day  # covered by 1 Dec's digest, so not merely late

    harness.admin_client("dynamodb").delete_item(
        TableName=table, Key={"change_id": {"S": change_id}, "entry": {"S": recheck.entry}}
    )
    again = harness.invoke("BuildEvidenceFunction", request)
    assert again.error is None, again.error
    verification = json.loads(_objects(harness, "reports/monthly/2026-11/")["digest-verification.json"])
    assert verification["ok"] is False
    day = next(d for d in verification["days"] if d["day"] == "2026-11-21")
    assert day["status"] == "tampered" and day["missing"] == [f"{change_id}|{recheck.entry}"]
    assert again.result["alert_ids"] == ["report:monthly:2026-11/build_evidence/ledger-integrity"]
