"""`changeguard invoke` (the Docker-free twin of `sam local invoke`) and replay's options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVENT = ROOT / "events" / "correlate_change" / "02-console-no-ticket.json"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "changeguard_tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
        env=env,
    )


def test_invoke_runs_the_handler_with_the_template_wiring_against_an_embedded_aws():
    proc = run_cli("invoke", "CorrelateChangeFunction", "-e", str(EVENT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["function"] == "correlate_change"
    assert result["verdict"] == "NO_TICKET"
    assert result["actions"] == ["recorded verdict"]
    assert "alert [high] NO_TICKET" in proc.stderr  # the subscriber received it


def test_invoke_accepts_the_function_folder_name():
    proc = run_cli("invoke", "correlate_change", "-e", str(EVENT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["verdict"] == "NO_TICKET"


def test_invoke_against_an_external_endpoint(embedded_aws):
    """--endpoint-url: any endpoint (here a separate embedded AWS standing in for a moto server)."""
    embedded_aws.reset()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = run_cli(
        "invoke", "CorrelateChangeFunction", "-e", str(EVENT), "--endpoint-url", embedded_aws.endpoint_url, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["verdict"] == "NO_TICKET"
    ddb = embedded_aws.client("dynamodb")
    tables = ddb.list_tables()["TableNames"]
    ledger = next(t for t in tables if "ChangeLedgerTable" in t)
    items = ddb.scan(TableName=ledger)["Items"]
    assert {i["entry"]["S"] for i in items} == {"VERDICT", "ALERT#correlate_change#verdict"}


def test_invoke_unknown_function_is_a_clear_error():
    proc = run_cli("invoke", "NoSuchFunction", "-e", str(EVENT))
    assert proc.returncode != 0
    assert "unknown function 'NoSuchFunction'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def fixtures_file(tmp_path):
    path = tmp_path / "fixtures.yaml"
    path.write_text(
        "tickets:\n"
        "  - id: CHG-4242\n"
        "    window: {start: '2026-11-21T00:00:00Z', end: '2026-11-22T00:00:00Z'}\n"
        "    test_evidence: ci\n"
        "    rollback_plan: revert\n"
        "    approvals:\n"
        "      - {approver: 'arn:aws:sts::123456789012:assumed-role/A/bob@example.com', at: '2026-11-20T10:00:00Z'}\n"
        "      - {approver: 'arn:aws:sts::123456789012:assumed-role/A/carol@example.com', at: '2026-11-20T11:00:00Z'}\n"
    )
    return path


def test_replay_fixtures_seed_the_ticket_source(tmp_path, fixtures_file):
    event = json.loads((ROOT / "events/correlate_change/01-approved-run-instances.json").read_text())
    tags = event["detail"]["requestParameters"]["tagSpecificationSet"]["items"][0]["tags"]
    tags[0]["value"] = "CHG-4242"
    (tmp_path / "event.json").write_text(json.dumps(event))
    with_fixtures = run_cli("replay", "--json", "--fixtures", str(fixtures_file), str(tmp_path / "event.json"))
    without = run_cli("replay", "--json", str(tmp_path / "event.json"))
    assert json.loads(with_fixtures.stdout)["outcomes"][0]["verdict"] == "AUTHORIZED"
    assert json.loads(without.stdout)["outcomes"][0]["verdict"] == "UNKNOWN_TICKET"


def test_replay_rejects_a_malformed_fixtures_file_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("surprise: 1\n")
    proc = run_cli("replay", "--json", "--fixtures", str(bad), str(EVENT))
    assert proc.returncode != 0
    assert "unknown sections" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_replay_summary_is_one_report_of_counters(tmp_path):
    from changeguard_tools.loadgen import FIXTURES, write_records

    trail = tmp_path / "trail"
    trail.mkdir()
    total, expected = write_records(trail, 40, per_file=20)
    (tmp_path / "fixtures.json").write_text(json.dumps(FIXTURES))
    report_file = tmp_path / "report.json"
    proc = run_cli(
        "replay", "--summary", "--json", "--quiet", "--fixtures", str(tmp_path / "fixtures.json"),
        "--report", str(report_file), str(trail),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    [line] = proc.stdout.splitlines()  # no line per event: the report only
    report = json.loads(line)
    assert report["events"] == total and report["reached_a_function"] == expected
    assert report["by_rule"]["CorrelateChangeFunction.CloudTrailWriteCalls"] == expected
    assert sum(n for k, n in report["verdicts"].items() if k.startswith("CorrelateChangeFunction")) == expected
    assert report["errors"] == 0 and report["events_per_s"] > 0
    assert json.loads(report_file.read_text())["events"] == total
