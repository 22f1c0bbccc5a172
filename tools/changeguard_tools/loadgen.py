"""Generated CloudTrail records for load replays: mixed services, identities and outcomes.

Most records are what a busy account produces (read-only calls, data events, failed calls, the
suite's own calls, exempt pipelines, authorized changes); 5 % are violations (no ticket). Records are
written in files of ``per_file`` records, so a replay streams them a file at a time.

Every record has a label saying what it is (:data:`LABELS`), written in input order to
``labels.csv`` next to the records (``eventID,label``; not JSON, so a replay of the folder does not
read it), and :data:`FIXTURES` is the account the labels assume: the pipeline role exempt, and
CHG-1001 approved by two people other than its implementer, complete, with a window covering
every record. A replay seeded with them judges each label's records as :data:`EXPECTED_VERDICT`
says; comparing the two is how a load run shows the violations are still caught.
"""

from __future__ import annotations

import csv
import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"
SUITE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/changeguard/changeguard-dev-CorrelateChangeFunctionRole-X"
PIPELINE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/pipeline-deployer"

_WRITES: list[tuple[str, str, dict[str, Any]]] = [
    ("ec2.amazonaws.com", "RunInstances", {"instanceType": "t3.micro"}),
    ("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", {"groupId": "sg-0123456789abcdef0"}),
    ("s3.amazonaws.com", "PutBucketPolicy", {"bucketName": "acme-data"}),
    ("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", {"functionName": "checkout-api"}),
    (
        "iam.amazonaws.com",
        "AttachRolePolicy",
        {"roleName": "app", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
    ),
    ("rds.amazonaws.com", "ModifyDBInstance", {"dBInstanceIdentifier": "orders-db"}),
    ("kms.amazonaws.com", "DisableKeyRotation", {"keyId": "1234abcd-12ab-34cd-56ef-1234567890ab"}),
    ("dynamodb.amazonaws.com", "UpdateTable", {"tableName": "orders"}),
]
#: What a record is; the first four never reach a function (the rules drop them at the bus).
LABELS = ("read-only", "data", "failed", "suite", "violation", "exempt", "authorized")
DROPPED_AT_THE_BUS = frozenset({"read-only", "data", "failed", "suite"})
#: The correlator's verdict for each label that reaches it, given :data:`FIXTURES`.
EXPECTED_VERDICT = {"violation": "NO_TICKET", "exempt": "EXEMPT", "authorized": "AUTHORIZED"}
LABELS_FILE = "labels.csv"
START = datetime(2026, 11, 21, tzinfo=UTC)
_APPROVER = f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_ChangeApprover_5e6f7a8b9c0d1e2f"
#: Fixtures (schema: :mod:`changeguard_tools.fixtures`) for records from :data:`START` on, up to 30 days.
FIXTURES: dict[str, Any] = {
    "parameters": {"exempt-principal-arns": PIPELINE_ROLE},
    "tickets": [
        {
            "id": "CHG-1001",
            "type": "normal",
            "title": "Load replay: routine changes",
            "requested_by": "alice@example.com",
            "window": {"start": "2026-11-20T00:00:00Z", "end": "2026-12-21T00:00:00Z"},
            "test_evidence": "https://ci.example.com/load/runs/1",
            "rollback_plan": "Revert the change.",
            "approvals": [
                {"approver": f"{_APPROVER}/bob@example.com", "at": "2026-11-19T10:00:00Z"},
                {"approver": f"{_APPROVER}/carol@example.com", "at": "2026-11-19T11:00:00Z"},
            ],
        }
    ],
}

_READS = [
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("s3.amazonaws.com", "ListBuckets"),
    ("iam.amazonaws.com", "GetRole"),
    ("lambda.amazonaws.com", "GetFunction20150331v2"),
    ("athena.amazonaws.com", "StartQueryExecution"),  # out of scope service
]
#: Object-level calls, logged by trails with data events: no configuration changes.
_DATA: list[tuple[str, str, dict[str, Any]]] = [
    ("s3.amazonaws.com", "PutObject", {"bucketName": "acme-data", "key": "orders/1.json"}),
    ("dynamodb.amazonaws.com", "PutItem", {"tableName": "orders"}),
    ("lambda.amazonaws.com", "Invoke", {"functionName": "checkout-api"}),
    ("sns.amazonaws.com", "Publish", {"topicArn": f"arn:aws:sns:us-east-1:{ACCOUNT}:orders"}),
    ("sqs.amazonaws.com", "SendMessage", {"queueUrl": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/orders"}),
]


def _identity(kind: str, session: str) -> dict[str, Any]:
    if kind == "suite":
        return {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/x/{session}",
            "accountId": ACCOUNT,
            "sessionContext": {"sessionIssuer": {"type": "Role", "arn": SUITE_ROLE, "accountId": ACCOUNT}},
        }
    if kind == "pipeline":
        return {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/pipeline-deployer/{session}",
            "accountId": ACCOUNT,
            "sessionContext": {"sessionIssuer": {"type": "Role", "arn": PIPELINE_ROLE}},
        }
    if kind == "iam_user":
        return {
            "type": "IAMUser",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/{session}",
            "accountId": ACCOUNT,
            "userName": session,
        }
    role = "AWSReservedSSO_Admin_0123456789abcdef"
    return {
        "type": "AssumedRole",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
        "accountId": ACCOUNT,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "arn": f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/{role}",
            }
        },
    }


def record(rng: random.Random, index: int, start: datetime) -> tuple[dict[str, Any], str]:
    """One record and its label (:data:`LABELS`)."""
    roll = rng.random()
    when = (start + timedelta(seconds=index)).strftime("%Y-%m-%dT%H:%M:%SZ")
    base: dict[str, Any] = {
        "eventVersion": "1.09",
        "eventTime": when,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15.30",
        "eventID": str(uuid.UUID(int=rng.getrandbits(128))),
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "eventCategory": "Management",
        "recipientAccountId": ACCOUNT,
    }
    if roll < 0.40:  # read-only traffic: dropped at the bus
        source, name = rng.choice(_READS)
        base.update(
            eventSource=source, eventName=name, readOnly=True, userIdentity=_identity("sso", "reader@example.com")
        )
        return base, "read-only"
    if roll < 0.45:  # data events (writes to objects, not to configuration): dropped at the bus
        source, name, params = rng.choice(_DATA)
        base.update(
            eventSource=source,
            eventName=name,
            readOnly=False,
            managementEvent=False,
            eventCategory="Data",
            requestParameters=params,
            userIdentity=_identity("sso", "alice@example.com"),
        )
        return base, "data"
    if roll < 0.55:  # failed calls: dropped at the bus
        source, name, params = rng.choice(_WRITES)
        base.update(
            eventSource=source,
            eventName=name,
            readOnly=False,
            errorCode="AccessDenied",
            requestParameters=params,
            userIdentity=_identity("sso", "intruder@example.com"),
        )
        return base, "failed"
    if roll < 0.65:  # the suite's own calls: dropped at the bus
        source, name, params = rng.choice(_WRITES)
        base.update(
            eventSource=source,
            eventName=name,
            readOnly=False,
            requestParameters=params,
            userIdentity=_identity("suite", "changeguard"),
        )
        return base, "suite"
    source, name, template_params = rng.choice(_WRITES)
    params = dict(template_params)
    if roll < 0.70:  # 5 %: violations, no ticket anywhere
        identity = _identity(rng.choice(["sso", "iam_user"]), rng.choice(["dave@example.com", "legacy-ci"]))
        label = "violation"
    elif roll < 0.85:
        identity = _identity("pipeline", f"run-{index}")
        label = "exempt"
    else:
        identity = _identity("sso", "alice@example.com")
        params["tags"] = {"ChangeTicket": "CHG-1001"}
        label = "authorized"
    base.update(eventSource=source, eventName=name, readOnly=False, requestParameters=params, userIdentity=identity)
    return base, label


def write_records(folder: Path, count: int, per_file: int = 1000, seed: int = 7) -> tuple[int, int]:
    """Write ``count`` records as CloudTrail log files and their labels to ``labels.csv``.

    Returns (records, expected to reach a function). One file's records are in memory at a time.
    """
    rng = random.Random(seed)
    routed = 0
    with (folder / LABELS_FILE).open("w", newline="") as labels_file:
        labels = csv.writer(labels_file)
        for file_index, first in enumerate(range(0, count, per_file)):
            batch = []
            for i in range(first, min(count, first + per_file)):
                rec, label = record(rng, i, START)
                routed += label not in DROPPED_AT_THE_BUS
                labels.writerow((rec["eventID"], label))
                batch.append(rec)
            (folder / f"trail-{file_index:05d}.json").write_text(json.dumps({"Records": batch}))
    return count, routed


def read_labels(folder: Path) -> Iterator[tuple[str, str]]:
    """``(eventID, label)`` in input order, read as they are needed."""
    with (folder / LABELS_FILE).open(newline="") as labels_file:
        for row in csv.reader(labels_file):
            yield row[0], row[1]
