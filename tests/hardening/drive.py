"""Driving every function the template declares, generically (issue 8).

The hardening tests never name a function: they read ``template.yaml`` (through the harness) and
``events/<function folder>/*.json``, so a function added later is covered as soon as it has its
template entry and its samples.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import pytest
from changeguard_tools import fixtures
from changeguard_tools.demo import load_scenario, run_step
from changeguard_tools.embedded import EmbeddedAWS, codedeploy_deployments
from changeguard_tools.harness import FixedClock, Harness
from changeguard_tools.template import REPO_ROOT, FunctionSpec

EVENTS = REPO_ROOT / "events"


class Discard(io.TextIOBase):
    """Where handler logs go when nobody reads them. Never closed: Powertools' logger keeps the
    stream of the first harness in the process for good, so a closed one would break later tests."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


DISCARD = Discard()


def samples_of(spec: FunctionSpec) -> list[Path]:
    """The function's sample events (``events/<folder>/*.json``), in name order."""
    return sorted((EVENTS / spec.code_uri.name).glob("*.json"))


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def fresh(event: Any) -> Any:
    """The same event under new ids, so it takes the first-delivery path rather than the duplicate one."""
    out = copy.deepcopy(event)
    if isinstance(out, dict):
        if "id" in out:
            out["id"] = str(uuid.uuid4())
        detail = out.get("detail")
        if isinstance(detail, dict) and "eventID" in detail:
            detail["eventID"] = str(uuid.uuid4())
    return out


def scheduled_triggers(harness: Harness, logical_id: str) -> list[dict[str, Any]]:
    """The "Scheduled Event" of each of the function's schedules."""
    spec = harness.functions[logical_id]
    return [harness.scheduled_event(logical_id, rule) for rule in spec.schedules]


def triggers_of(harness: Harness, logical_id: str) -> list[Any]:
    """Every event the function is known to receive: its samples, then its schedules' events."""
    spec = harness.functions[logical_id]
    return [load(p) for p in samples_of(spec)] + scheduled_triggers(harness, logical_id)


@contextlib.contextmanager
def aws_environment(embedded: EmbeddedAWS) -> Iterator[EmbeddedAWS]:
    """What the ``aws`` fixture does, for fixtures of a wider scope: reset, and boto3 pointed at it."""
    embedded.reset()
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("AWS_ENDPOINT_URL_") or name in (
                "AWS_PROFILE",
                "AWS_SESSION_TOKEN",
                "AWS_SECURITY_TOKEN",
            ):
                mp.delenv(name)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_ENDPOINT_URL", embedded.endpoint_url)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_MAX_ATTEMPTS", str(embedded.max_attempts))
        try:
            yield embedded
        finally:
            codedeploy_deployments.use_clock(None)
            _clear_parameter_cache()


def _clear_parameter_cache() -> None:
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()  # type: ignore[no-untyped-call]


#: The stack the hardening drives run: two ledger day shards, not the default sixteen. The readers of
#: a period (follow-up, evidence, digest) query every shard of every day, so sixteen make each drive
#: several times slower (the logs drive: 122 s -> 30 s) and prove nothing more about bad input, IAM,
#: logs or loops; two still take the sharded paths. The shard logic has its own tests
#: (tests/unit/test_ledger_day_shards.py).
SMALL_LEDGER = {"LedgerDayShards": "2"}


def scenario_harness(
    endpoint_url: str | None,
    log_stream: TextIO | None = None,
    without: tuple[str, ...] = (),
    parameters: dict[str, str] | None = None,
) -> tuple[Harness, list[dict[str, Any]]]:
    """A provisioned stack (with these template ``parameters``) seeded with the demo scenario's
    fixtures (less the ``without`` sections: the metric series take seconds to seed), and the
    scenario's steps."""
    seed, steps = load_scenario()
    for section in without:
        seed.pop(section, None)
    start = datetime.fromisoformat(str(seed.pop("now", "2026-11-21T00:00:00Z")).replace("Z", "+00:00"))
    harness = Harness(endpoint_url, parameters=parameters, clock=FixedClock(start), log_stream=log_stream or DISCARD)
    harness.provision()
    _clear_parameter_cache()
    fixtures.seed(harness, seed)
    return harness, steps


def run_scenario(harness: Harness, aws: EmbeddedAWS, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every step of the demo scenario; the results of the events they produced."""
    saved: dict[str, str] = {}
    results: list[dict[str, Any]] = []
    for step in steps:
        results.extend(result for _, result in run_step(harness, aws, step, saved))
    return results


# -- driving every path: what the least-privilege and log tests run ----------------------------------

#: How to make one untagged resource of each type the quarantine registry knows, as an operator
#: would (demo-scenario ``aws`` steps, in order). A type the registry gains without a line here fails
#: ``test_least_privilege_every_quarantine_type_is_driven``.
#:
#: The security group is opened to the world (SSH from 0.0.0.0/0 and ::/0), the case quarantine is
#: for: only then does a read of it call ec2:DescribeSecurityGroupRules (for the revoked rules' IDs
#: and tags), so a group with no such rule would leave that permission granted but never called.
CREATE_UNTAGGED: dict[str, list[dict[str, Any]]] = {
    "AWS::EC2::SecurityGroup": [
        {
            "service": "ec2",
            "operation": "create_security_group",
            "params": {"GroupName": "hardening-untagged", "Description": "untagged"},
            "save": {"sg": "GroupId"},
        },
        {
            "service": "ec2",
            "operation": "authorize_security_group_ingress",
            "params": {
                "GroupId": "${sg}",
                "IpPermissions": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "ssh from anywhere"}],
                        "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
                    }
                ],
            },
        },
    ],
    "AWS::EC2::Instance": [
        {
            "service": "ec2",
            "operation": "run_instances",
            "params": {"ImageId": "ami-0abcdef1234567890", "InstanceType": "t3.micro", "MinCount": 1, "MaxCount": 1},
            "save": {"instance": "Instances.0.InstanceId"},
        }
    ],
    "AWS::S3::Bucket": [
        {
            "service": "s3",
            "operation": "create_bucket",
            "params": {"Bucket": "hardening-untagged-bucket"},
            "save": {"bucket": "Location"},
        }
    ],
    "AWS::Lambda::Function": [
        {
            "service": "lambda",
            "operation": "create_function",
            "params": {
                "FunctionName": "hardening-untagged-fn",
                "Runtime": "python3.12",
                "Role": "arn:aws:iam::123456789012:role/hardening-untagged-fn",
                "Handler": "app.handler",
                "Code": {"ZipFile": "${zip}"},
            },
            "save": {"function_arn": "FunctionArn"},
        }
    ],
}


def _tag_step(config_type: str, tags: dict[str, str]) -> dict[str, Any]:
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    if config_type == "AWS::EC2::SecurityGroup":
        return {"service": "ec2", "operation": "create_tags", "params": {"Resources": ["${sg}"], "Tags": tag_list}}
    if config_type == "AWS::EC2::Instance":
        return {
            "service": "ec2",
            "operation": "create_tags",
            "params": {"Resources": ["${instance}"], "Tags": tag_list},
        }
    if config_type == "AWS::S3::Bucket":
        return {
            "service": "s3",
            "operation": "put_bucket_tagging",
            "params": {"Bucket": "hardening-untagged-bucket", "Tagging": {"TagSet": tag_list}},
        }
    return {"service": "lambda", "operation": "tag_resource", "params": {"Resource": "${function_arn}", "Tags": tags}}


def _zip_literal() -> str:
    import base64
    import io as _io
    import zipfile

    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return None\n")
    return base64.b64encode(buf.getvalue()).decode()


def _aws_step(harness: Harness, aws: EmbeddedAWS, call: dict[str, Any], saved: dict[str, str]) -> None:
    call = json.loads(json.dumps(call))
    if call["operation"] == "create_function":
        import base64

        call["params"]["Code"]["ZipFile"] = base64.b64decode(_zip_literal())
        harness.admin_client("iam").create_role(
            RoleName=call["params"]["Role"].rsplit("/", 1)[-1],
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ]
                }
            ),
        )
        client = harness.admin_client(call["service"])
        before = len(aws.trail.records())
        response = client.create_function(**call["params"])
        saved["function_arn"] = response["FunctionArn"]
        from changeguard_tools.replay import wrap_record

        for record in aws.trail.records()[before:]:
            harness.process(wrap_record(record))
        return
    run_step(harness, aws, {"aws": call}, saved)


def quarantine_types() -> set[str]:
    from changeguard.quarantine import Registry

    return {h.config_type for h in Registry().handlers.values()}


def quarantine_lifecycle(harness: Harness, aws: EmbeddedAWS) -> None:
    """In enforce mode: untagged resources of every registered type are marked, quarantined when
    their grace period ends, and released once tagged (the scheduled functions run at each stage)."""
    assert harness.clock is not None
    harness.put_parameter("enforcement-mode", "enforce")
    harness.put_parameter("quarantine-grace-hours", "1")
    saved: dict[str, str] = {}
    types = sorted(quarantine_types() & set(CREATE_UNTAGGED))
    for config_type in types:
        for step in CREATE_UNTAGGED[config_type]:
            _aws_step(harness, aws, step, saved)
    harness.clock.set(harness.clock.now() + timedelta(hours=2))
    harness.refresh_clock()
    run_every_schedule(harness)
    required = [k.strip() for k in str(harness.ctx.parameters.get("RequiredTagKeys", "")).split(",") if k.strip()]
    for config_type in types:
        _aws_step(harness, aws, _tag_step(config_type, {k: "CHG-1001" for k in required}), saved)
    run_every_schedule(harness)


def run_every_schedule(harness: Harness) -> None:
    for logical_id, spec in harness.functions.items():
        for rule in spec.schedules:
            _clear_parameter_cache()
            harness.run_schedule(logical_id, rule)


@contextlib.contextmanager
def delivered_at_its_time(harness: Harness, event: Any) -> Iterator[None]:
    """EventBridge delivers a Scheduled Event at or after its ``time``, and the functions that act on
    that time reject one ahead of their clock: for a sample dated after the harness clock (the
    monthly report of 2026-12-01, the quarterly pack of 2027-01-03), the clock moves to its time for
    the invocation, and back, so that the sample drives what a real delivery would."""
    at = None
    if isinstance(event, dict) and event.get("detail-type") == "Scheduled Event":
        with contextlib.suppress(TypeError, ValueError):
            at = datetime.fromisoformat(str(event.get("time")).replace("Z", "+00:00"))
    clock = harness.clock
    before = clock.now() if clock is not None else None
    if at is None or clock is None or before is None or at <= before:
        yield
        return
    clock.set(at)
    try:
        yield
    finally:
        clock.set(before)


def every_trigger_once(harness: Harness) -> None:
    """Every sample and schedule event of every function, once, each function with a cold cache."""
    for logical_id in harness.functions:
        for event in triggers_of(harness, logical_id):
            _clear_parameter_cache()
            with delivered_at_its_time(harness, event):
                harness.invoke(logical_id, fresh(event))
    harness.pump_streams()


def closed_calendar(harness: Harness) -> None:
    """A change calendar that is closed at every moment, enforced from now on."""
    name = "hardening-always-closed"
    content = "\n".join(
        [
            "BEGIN:VCALENDAR",
            "PRODID:-//ChangeGuard//hardening//EN",
            "VERSION:2.0",
            "X-CALENDAR-TYPE:DEFAULT_CLOSED",
            "END:VCALENDAR",
            "",
        ]
    )
    harness.admin_client("ssm").create_document(
        Name=name, Content=content, DocumentType="ChangeCalendar", DocumentFormat="TEXT"
    )
    harness.put_parameter("change-calendar-names", name)


def drive_everything(harness: Harness, aws: EmbeddedAWS, steps: list[dict[str, Any]]) -> None:
    """The demo scenario; every trigger in observe mode, in enforce mode, and in enforce mode with
    the change calendar closed; the quarantine lifecycle of every registered resource type; and one
    poison event per function (the dead-letter path)."""
    run_scenario(harness, aws, steps)
    for mode in ("observe", "enforce"):
        harness.put_parameter("enforcement-mode", mode)
        every_trigger_once(harness)
    closed_calendar(harness)
    every_trigger_once(harness)
    quarantine_lifecycle(harness, aws)
    for logical_id in harness.functions:
        harness.invoke(logical_id, {"detail-type": ["not", "an", "event"]})
    harness.pump_streams()
