"""Seeding the embedded AWS from a fixtures file (YAML or JSON).

Schema (every section optional)::

    parameters:            # tunable policy, written to Parameter Store (name -> value)
      enforcement-mode: enforce
      exempt-principal-arns: arn:aws:iam::123456789012:role/pipeline-deployer
    tickets:               # the DynamoDB ticket table
      - id: CHG-1001
        type: normal       # normal | standard | emergency
        status: open       # open | approved | rejected | cancelled | closed
        title: Launch payments workers
        requested_by: alice@example.com
        window: {start: 2026-11-21T00:00:00Z, end: 2026-11-22T00:00:00Z}
        affected_resources: [arn:aws:ec2:us-east-1:123456789012:instance/*]
        test_evidence: https://ci.example.com/runs/1
        rollback_plan: terminate the instances
        approvals:
          - {approver: "arn:aws:sts::123456789012:assumed-role/Approver/bob@example.com", at: 2026-11-20T10:00:00Z}
    stacks:                # CloudFormation stacks whose tags carry a ticket
      - {name: checkout-service, tags: {ChangeTicket: CHG-1001}}
    resource_tags:         # current tags of resources, by ARN (Resource Groups Tagging API)
      arn:aws:s3:::acme-reports-prod: {Environment: prod}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from changeguard_tools.harness import Harness
from changeguard_tools.tickets import TicketBook

_EMPTY_TEMPLATE = '{"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}'


class FixtureError(ValueError):
    """The fixtures file does not follow the documented schema."""


def load(path: str | Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise FixtureError(f"{path}: expected a mapping at the top level")
    unknown = set(data) - {"parameters", "tickets", "stacks", "resource_tags", "calendars", "resources", "now", "mode"}
    if unknown:
        raise FixtureError(f"{path}: unknown sections {sorted(unknown)}")
    return data


def seed(harness: Harness, data: dict[str, Any]) -> None:
    for name, value in (data.get("parameters") or {}).items():
        harness.put_parameter(str(name), str(value))
    table = harness.ctx.refs.get("TicketTable")
    if data.get("tickets") and table:
        book = TicketBook(str(table), harness.admin_client("dynamodb"))
        for spec in data["tickets"]:
            window = spec.get("window") or {}
            book.add(
                str(spec["id"]),
                title=str(spec.get("title", "")),
                type=str(spec.get("type", "normal")),
                status=str(spec.get("status", "open")),
                requested_by=spec.get("requested_by"),
                window_start=window.get("start"),
                window_end=window.get("end"),
                affected_resources=spec.get("affected_resources") or (),
                test_evidence=spec.get("test_evidence"),
                rollback_plan=spec.get("rollback_plan"),
            )
            for approval in spec.get("approvals") or ():
                book.approve(str(spec["id"]), approver=str(approval["approver"]), approved_at=approval.get("at"))
    cfn = harness.admin_client("cloudformation")
    for stack in data.get("stacks") or ():
        cfn.create_stack(
            StackName=str(stack["name"]),
            TemplateBody=_EMPTY_TEMPLATE,
            Tags=[{"Key": str(k), "Value": str(v)} for k, v in (stack.get("tags") or {}).items()],
        )
    for arn, tags in (data.get("resource_tags") or {}).items():
        _tag(harness, str(arn), {str(k): str(v) for k, v in tags.items()})


def _tag(harness: Harness, arn: str, tags: dict[str, str]) -> None:
    """Create the resource if needed and tag it, through the owning service's own API."""
    if arn.startswith("arn:aws:s3:::"):
        s3 = harness.admin_client("s3")
        bucket = arn.split(":::", 1)[1]
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
        return
    raise FixtureError(f"resource_tags: cannot create {arn} (supported: S3 buckets)")
