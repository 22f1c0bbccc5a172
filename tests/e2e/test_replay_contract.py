"""`changeguard replay --json` is a contract scripts rely on: one JSON object per input, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"source_file", "event_id", "detail_type", "routed_to", "outcomes", "error"}
OUTCOME_KEYS = {"function", "verdict", "actions", "alerts"}
SEVERITIES = {"critical", "high", "medium", "low", "info"}

OLD_SCHEMA = {  # AWS's 2014 documentation sample: eventVersion 1.0x, no readOnly, no eventID
    "eventVersion": "1.02",
    "userIdentity": {
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLE",
        "arn": "arn:aws:iam::111122223333:user/Alice",
        "accountId": "111122223333",
        "accessKeyId": "AKIAEXAMPLE",
        "userName": "Alice",
    },
    "eventTime": "2014-03-06T21:22:54Z",
    "eventSource": "ec2.amazonaws.com",
    "eventName": "StartInstances",
    "awsRegion": "us-east-2",
    "sourceIPAddress": "205.251.233.176",
    "userAgent": "ec2-api-tools 1.6.12.2",
    "requestParameters": {"instancesSet": {"items": [{"instanceId": "i-ebeaf9e2"}]}},
    "responseElements": {"instancesSet": {"items": [{"instanceId": "i-ebeaf9e2"}]}},
}
READ_ONLY = {
    "eventVersion": "1.08",
    "eventID": "ro-1",
    "eventType": "AwsApiCall",
    "readOnly": True,
    "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/Admin/bob"},
    "eventTime": "2024-01-01T00:00:00Z",
    "eventSource": "s3.amazonaws.com",
    "eventName": "ListBuckets",
    "awsRegion": "us-east-1",
}
SIGN_IN = {
    "eventVersion": "1.08",
    "eventID": "si-1",
    "eventType": "AwsConsoleSignIn",
    "userIdentity": {"type": "Root", "arn": "arn:aws:iam::111122223333:root", "accountId": "111122223333"},
    "eventTime": "2024-01-01T00:00:00Z",
    "eventSource": "signin.amazonaws.com",
    "eventName": "ConsoleLogin",
    "awsRegion": "us-east-1",
    "responseElements": {"ConsoleLogin": "Success"},
}
VERSIONED = {
    "eventVersion": "1.09",
    "eventID": "v-1",
    "eventType": "AwsApiCall",
    "readOnly": False,
    "userIdentity": {
        "type": "AssumedRole",
        "arn": "arn:aws:sts::111122223333:assumed-role/dev/carl",
        "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::111122223333:role/dev"}},
    },
    "eventTime": "2024-01-01T00:00:00Z",
    "eventSource": "lambda.amazonaws.com",
    "eventName": "UpdateFunctionCode20150331v2",
    "awsRegion": "eu-west-1",
    "requestParameters": {"functionName": "api"},
    "someFutureField": {"nested": [1, 2]},
}
INVOKED_BY = {
    "eventVersion": "1.09",
    "eventID": "ib-1",
    "eventType": "AwsApiCall",
    "userIdentity": {"type": "AWSService", "invokedBy": "autoscaling.amazonaws.com"},
    "eventTime": "2024-01-01T00:00:00Z",
    "eventSource": "ec2.amazonaws.com",
    "eventName": "RunInstances",
    "awsRegion": "us-east-1",
    "readOnly": False,
}


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "a-log.json").write_text(json.dumps({"Records": [OLD_SCHEMA, READ_ONLY, SIGN_IN, 42]}))
    (folder / "b-bare-list.json").write_text(json.dumps([VERSIONED, INVOKED_BY, {"hello": "world"}]))
    (folder / "c-broken.json").write_text("not json {")
    (folder / "d-envelope.json").write_text((ROOT / "events/correlate_change/02-console-no-ticket.json").read_text())
    return subprocess.run(
        [sys.executable, "-m", "changeguard_tools.cli", "replay", "--json", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )


def test_exit_status_zero_and_no_traceback(replay):
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert "Traceback" not in replay.stdout


def test_one_object_per_input_event_and_nothing_else(replay):
    lines = replay.stdout.splitlines()
    objects = [json.loads(line) for line in lines]
    assert len(objects) == 4 + 3 + 1 + 1
    for obj in objects:
        assert set(obj) == KEYS
        for outcome in obj["outcomes"]:
            assert set(outcome) == OUTCOME_KEYS
            for alert in outcome["alerts"]:
                assert set(alert) == {"subject", "severity", "verdict"} and alert["severity"] in SEVERITIES


def test_write_calls_get_verdicts_and_others_are_clean(replay):
    objects = [json.loads(line) for line in replay.stdout.splitlines()]
    by_file = [(o["source_file"].rsplit("/", 1)[1], o) for o in objects]
    old, read_only, sign_in, number = (o for f, o in by_file if f == "a-log.json")
    # Account 111122223333 is no configured member: its resources' tags (where a ticket may be) cannot
    # be read, so the call is UNVERIFIED, not NO_TICKET, and the account is reported as unread.
    assert old["routed_to"] == ["CorrelateChangeFunction"] and old["outcomes"][0]["verdict"] == "UNVERIFIED"
    subjects = [a["subject"] for a in old["outcomes"][0]["alerts"]]
    assert any(s.startswith("ChangeGuard cannot act in account 111122223333") for s in subjects), subjects
    assert old["error"] is None
    assert read_only["routed_to"] == [] and read_only["error"] is None
    assert sign_in["detail_type"] == "AWS Console Sign In via CloudTrail" and sign_in["routed_to"] == []
    assert number["error"] and number["event_id"] is None
    versioned, invoked, hello = (o for f, o in by_file if f == "b-bare-list.json")
    assert versioned["outcomes"][0]["verdict"] == "NO_TICKET"
    assert invoked["outcomes"][0]["verdict"] == "EXEMPT" and invoked["outcomes"][0]["alerts"] == []
    assert hello["error"] and hello["routed_to"] == []
    broken = next(o for f, o in by_file if f == "c-broken.json")
    assert broken["error"].startswith("not JSON")
    envelope = next(o for f, o in by_file if f == "d-envelope.json")
    assert envelope["event_id"] == "b1a7c3e2-0d4f-4b9a-8e1c-1a2b3c4d5e02"
    alerts = envelope["outcomes"][0]["alerts"]
    assert len(alerts) == 1 and alerts[0]["verdict"] == "NO_TICKET" and alerts[0]["severity"] == "high"


def test_envelope_ids_are_derived_deterministically(replay, tmp_path):
    from changeguard_tools.replay import wrap_record

    first = wrap_record(VERSIONED)
    assert first["id"] == wrap_record(dict(VERSIONED))["id"]
    assert first["source"] == "aws.lambda" and first["detail-type"] == "AWS API Call via CloudTrail"
    assert wrap_record(SIGN_IN)["detail-type"] == "AWS Console Sign In via CloudTrail"


def test_a_trail_bucket_synced_as_cloudtrail_delivers_it_is_replayed(tmp_path):
    """CloudTrail delivers gzip ``.json.gz`` log files; a folder of them must not replay 0 events in silence."""
    import gzip

    logs = tmp_path / "AWSLogs" / "111122223333" / "CloudTrail" / "eu-west-1" / "2024" / "01" / "01"
    logs.mkdir(parents=True)
    name = "111122223333_CloudTrail_eu-west-1_20240101T0005Z_Mu0KsOhtH1ar15ZZ.json.gz"
    (logs / name).write_bytes(gzip.compress(json.dumps({"Records": [VERSIONED, READ_ONLY]}).encode()))
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "changeguard_tools.cli",
            "replay",
            "--json",
            str(tmp_path / "AWSLogs"),
            str(tmp_path / "empty"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    versioned, read_only, empty = (json.loads(line) for line in proc.stdout.splitlines())
    assert versioned["source_file"].endswith(name) and versioned["outcomes"][0]["verdict"] == "NO_TICKET"
    assert read_only["routed_to"] == [] and read_only["error"] is None
    assert empty["source_file"] == str(tmp_path / "empty") and "nothing to replay" in empty["error"]
    assert "replayed 3 event(s)" in proc.stderr and "1 error(s)" in proc.stderr
