"""Seeding the embedded AWS from a fixtures file (YAML or JSON).

Schema (every section optional)::

    parameters:            # tunable policy, written to Parameter Store (name -> value)
      enforcement-mode: enforce
      exempt-principal-arns: arn:aws:iam::123456789012:role/pipeline-deployer
    tickets:               # the DynamoDB ticket table
      - id: CHG-1001
        type: normal       # normal | standard | emergency
        status: open       # open | approved | rejected | cancelled | closed
        closed_at: null    # a closed ticket's close time (unknown: it authorizes no change)
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
    config_items:          # AWS Config's recorded history (GetResourceConfigHistory), as it records them
      - {resourceType: AWS::EC2::SecurityGroup, resourceId: sg-1, awsAccountId: "123456789012",
         awsRegion: us-east-1, configurationItemCaptureTime: 2026-11-21T10:15:01Z,
         configurationStateId: "1", configurationItemStatus: OK, relatedEvents: [], tags: {}}

Deployment guard (issue 5)::

    alarms:                # CloudWatch alarms (PutMetricAlarm), with their tags
      - name: checkout-api-errors
        namespace: AWS/Lambda
        metric: Errors
        dimensions: {FunctionName: checkout-api}
        statistic: Sum     # or a percentile such as p99
        period: 60
        threshold: 10
        comparison: GreaterThanThreshold
        tags: {"changeguard:deployment-group": checkout/checkout-prod}
    codedeploy:            # applications, deployment groups and deployments with explicit ids
      - application: checkout
        compute_platform: Lambda
        groups:
          - name: checkout-prod
            alarms: [checkout-api-errors]      # the group's alarm configuration
            tags: {ChangeTicket: CHG-2001}
            deployments:   # each appears at `created` and plays its timeline on the scenario clock
              - id: d-CHK0000H1
                revision: {revisionType: String, string: {content: "checkout-api v15"}}
                description: checkout-api v15 (CHG-2001)
                creator: user    # DeploymentCreator (default); autoscaling for a scale-out
                created: 2026-11-24T09:00:00Z
                timeline: {InProgress: 2026-11-24T09:00:00Z, Succeeded: 2026-11-24T09:12:00Z}
    metrics:               # PutMetricData: the same values every `every` seconds in [from, to)
      - namespace: AWS/Lambda
        name: Duration
        dimensions: {FunctionName: checkout-api}
        unit: Milliseconds
        from: 2026-11-24T08:00:00Z
        to: 2026-11-24T10:00:00Z
        every: 60
        values: [95, 110, 130, 240]
        counts: [60, 30, 9, 1]

Change-calendar gate (issue 4)::

    calendars:             # SSM ChangeCalendar documents (CreateDocument, DocumentFormat TEXT)
      - name: prod-window
        type: DEFAULT_CLOSED   # DEFAULT_OPEN: closed during its events; DEFAULT_CLOSED: open during them
        events:
          - summary: Weekly change window
            start: 2026-11-07T02:00:00Z
            end: 2026-11-07T06:00:00Z
            rrule: FREQ=WEEKLY;BYDAY=SA        # optional recurrence
            exdates: [2026-11-14T02:00:00Z]     # optional cancelled occurrences
      - name: imported
        content: "BEGIN:VCALENDAR..."          # or the iCalendar text as it is
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta  # issue 5
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
    known = {"parameters", "tickets", "stacks", "resource_tags", "calendars", "resources", "now", "mode"}
    known |= {"config_items"}  # oversized Config items are read back from the history
    known |= {"alarms", "codedeploy", "metrics"}  # issue 5: deployment guard
    unknown = set(data) - known
    if unknown:
        raise FixtureError(f"{path}: unknown sections {sorted(unknown)}")
    return data


def seed(harness: Harness, data: dict[str, Any]) -> None:
    for name, value in (data.get("parameters") or {}).items():
        harness.put_parameter(str(name), str(value))
    _seed_deployment_guard(harness, data)  # issue 5
    _seed_calendars(harness, data.get("calendars") or ())  # issue 4
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
                closed_at=spec.get("closed_at"),
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
    if data.get("config_items"):
        from changeguard_tools.embedded import config_history

        for item in data["config_items"]:
            config_history.record(str(item["awsAccountId"]), str(item["awsRegion"]), dict(item))


def _tag(harness: Harness, arn: str, tags: dict[str, str]) -> None:
    """Create the resource if needed and tag it, through the owning service's own API."""
    if arn.startswith("arn:aws:s3:::"):
        s3 = harness.admin_client("s3")
        bucket = arn.split(":::", 1)[1]
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
        return
    raise FixtureError(f"resource_tags: cannot create {arn} (supported: S3 buckets)")


# -- deployment guard (issue 5) -------------------------------------------------------------------


def _time(value: Any) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _seed_deployment_guard(harness: Harness, data: dict[str, Any]) -> None:
    """Alarms, CodeDeploy applications/groups/deployments and metric data (schema above).

    Deployments are seeded in this process's embedded AWS with their ids and timelines, and the
    embedded CodeDeploy then runs on the harness clock, so ``clock`` steps play the timelines.
    """
    if not any(data.get(k) for k in ("alarms", "codedeploy", "metrics")):
        return
    from changeguard_tools.embedded import codedeploy_deployments

    account, region = harness.ctx.account, harness.ctx.region
    if harness.clock is not None:
        codedeploy_deployments.use_clock(harness.clock.now)
    cloudwatch = harness.admin_client("cloudwatch")
    for alarm in data.get("alarms") or ():
        stat = str(alarm.get("statistic", "Sum"))
        cloudwatch.put_metric_alarm(
            AlarmName=str(alarm["name"]),
            Namespace=str(alarm["namespace"]),
            MetricName=str(alarm["metric"]),
            Dimensions=[{"Name": str(k), "Value": str(v)} for k, v in (alarm.get("dimensions") or {}).items()],
            **({"ExtendedStatistic": stat} if stat.startswith("p") else {"Statistic": stat}),
            Period=int(alarm.get("period", 60)),
            EvaluationPeriods=int(alarm.get("evaluation_periods", 1)),
            Threshold=float(alarm["threshold"]),
            ComparisonOperator=str(alarm.get("comparison", "GreaterThanThreshold")),
            Tags=[{"Key": str(k), "Value": str(v)} for k, v in (alarm.get("tags") or {}).items()],
        )
    codedeploy = harness.admin_client("codedeploy")
    for app in data.get("codedeploy") or ():
        application = str(app["application"])
        codedeploy.create_application(
            applicationName=application, computePlatform=str(app.get("compute_platform", "Lambda"))
        )
        for group in app.get("groups") or ():
            alarms = [{"name": str(a)} for a in group.get("alarms") or ()]
            codedeploy.create_deployment_group(
                applicationName=application,
                deploymentGroupName=str(group["name"]),
                serviceRoleArn=f"arn:aws:iam::{account}:role/codedeploy-service-role",
                alarmConfiguration={"enabled": bool(alarms), "alarms": alarms},
                tags=[{"Key": str(k), "Value": str(v)} for k, v in (group.get("tags") or {}).items()],
            )
            for spec in group.get("deployments") or ():
                codedeploy_deployments.create_deployment(
                    application,
                    str(group["name"]),
                    spec.get("revision"),
                    deployment_id=str(spec["id"]),
                    description=spec.get("description"),
                    creator=str(spec.get("creator", "user")),
                    created=_time(spec["created"]),
                    timeline=[(_time(at), str(status)) for status, at in (spec.get("timeline") or {}).items()],
                    account_id=account,
                    region=region,
                )
    for series in data.get("metrics") or ():
        start, end = _time(series["from"]), _time(series["to"])
        step = timedelta(seconds=int(series.get("every", 60)))
        datum: dict[str, Any] = {
            "MetricName": str(series["name"]),
            "Dimensions": [{"Name": str(k), "Value": str(v)} for k, v in (series.get("dimensions") or {}).items()],
            "Values": [float(v) for v in series["values"]],
            **({"Counts": [float(c) for c in series["counts"]]} if series.get("counts") else {}),
            **({"Unit": str(series["unit"])} if series.get("unit") else {}),
        }
        points = []
        at = start
        while at < end:
            points.append({**datum, "Timestamp": at})
            at += step
        for first in range(0, len(points), 500):
            cloudwatch.put_metric_data(Namespace=str(series["namespace"]), MetricData=points[first : first + 500])


# -- change-calendar gate (issue 4) ---------------------------------------------------------------


def _ical_time(value: Any) -> str:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def calendar_content(spec: dict[str, Any]) -> str:
    """The iCalendar text of a ``calendars:`` entry (its ``content`` when given)."""
    if spec.get("content"):
        return str(spec["content"])
    kind = str(spec.get("type", "DEFAULT_OPEN")).upper()
    if kind not in ("DEFAULT_OPEN", "DEFAULT_CLOSED"):
        raise FixtureError(f"calendars: {spec.get('name')}: type must be DEFAULT_OPEN or DEFAULT_CLOSED")
    lines = ["BEGIN:VCALENDAR", "PRODID:-//ChangeGuard//fixtures//EN", "VERSION:2.0", f"X-CALENDAR-TYPE:{kind}"]
    for number, event in enumerate(spec.get("events") or (), 1):
        lines += [
            "BEGIN:VEVENT",
            f"UID:{spec['name']}-{number}",
            "DTSTAMP:20260101T000000Z",
            f"SUMMARY:{event.get('summary', f'event {number}')}",
            f"DTSTART:{_ical_time(event['start'])}",
            f"DTEND:{_ical_time(event['end'])}",
        ]
        if event.get("rrule"):
            lines.append(f"RRULE:{event['rrule']}")
        lines += [f"EXDATE:{_ical_time(at)}" for at in event.get("exdates") or ()]
        lines.append("END:VEVENT")
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def _seed_calendars(harness: Harness, calendars: Any) -> None:
    ssm = harness.admin_client("ssm")
    for spec in calendars:
        ssm.create_document(
            Name=str(spec["name"]),
            Content=calendar_content(spec),
            DocumentType="ChangeCalendar",
            DocumentFormat="TEXT",
        )
