"""Encryption and logs (issue 8).

* The template encrypts with KMS (the suite's customer-managed key): every SNS topic, SQS queue,
  DynamoDB table, log group and function environment.
* Nothing a function logs at INFO carries a secret, a credential or a whole event: every function
  runs over its samples and schedules (and broken variants of them, whose rejection messages must
  not echo the input) with canary values planted in ``requestParameters``, in an unknown field of
  the event and in the places a validation error would quote; the function's own credentials are
  in its environment. None of them may appear in what it logs.
"""

from __future__ import annotations

import copy
import io
import logging
import re
from typing import Any

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from changeguard_tools.embedded import EmbeddedAWS
from changeguard_tools.template import Template, resolve
from hardening.drive import (
    SMALL_LEDGER,
    aws_environment,
    delivered_at_its_time,
    fresh,
    scenario_harness,
    triggers_of,
)

TEMPLATE = Template()
KEY = "ChangeGuardKey"
SECRET = "hardening-canary-secret-7f3a9c"
UNKNOWN_FIELD = "hardening-canary-event-41d8e2"


def _resources(kind: str) -> dict[str, Any]:
    return {lid: r for lid, r in TEMPLATE.resources.items() if r.get("Type") == kind}


def _refers_to_key(value: Any) -> bool:
    return KEY in repr(value)


@pytest.mark.parametrize("logical_id", sorted(_resources("AWS::SNS::Topic")))
def test_encryption_sns_topics_use_the_suite_key(logical_id: str) -> None:
    assert _refers_to_key(TEMPLATE.resources[logical_id]["Properties"].get("KmsMasterKeyId"))


@pytest.mark.parametrize("logical_id", sorted(_resources("AWS::SQS::Queue")))
def test_encryption_sqs_queues_use_the_suite_key(logical_id: str) -> None:
    assert _refers_to_key(TEMPLATE.resources[logical_id]["Properties"].get("KmsMasterKeyId"))  # CKV_AWS_27


@pytest.mark.parametrize("logical_id", sorted(_resources("AWS::DynamoDB::Table")))
def test_encryption_dynamodb_tables_use_the_suite_key(logical_id: str) -> None:
    sse = TEMPLATE.resources[logical_id]["Properties"].get("SSESpecification") or {}
    assert sse.get("SSEEnabled") is True and sse.get("SSEType") == "KMS", sse
    assert _refers_to_key(sse.get("KMSMasterKeyId")), sse


@pytest.mark.parametrize("logical_id", sorted(_resources("AWS::Logs::LogGroup")))
def test_encryption_log_groups_use_the_suite_key(logical_id: str) -> None:
    assert _refers_to_key(TEMPLATE.resources[logical_id]["Properties"].get("KmsKeyId"))


@pytest.mark.parametrize("logical_id", TEMPLATE.function_ids())
def test_encryption_function_environments_use_the_suite_key(logical_id: str) -> None:
    globals_ = TEMPLATE.raw.get("Globals", {}).get("Function", {})
    props = TEMPLATE.resources[logical_id]["Properties"]
    assert _refers_to_key(props.get("KmsKeyArn", globals_.get("KmsKeyArn")))


def test_encryption_the_suite_key_rotates() -> None:
    assert TEMPLATE.resources[KEY]["Properties"].get("EnableKeyRotation") is True


#: Where a resource names the KMS key that encrypts it (SQS, SNS, DynamoDB, S3, Logs, Lambda).
KEY_PROPERTIES = frozenset({"KmsMasterKeyId", "KMSMasterKeyId", "KMSMasterKeyID", "KmsKeyId", "KmsKeyArn"})


def _keys_named(value: Any, under_key_property: bool = False) -> set[str]:
    """Logical ids of the resources that ``value`` names (Ref or GetAtt) under a key property."""
    if isinstance(value, dict):
        if under_key_property and "Ref" in value:
            return {str(value["Ref"])}
        if under_key_property and "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return {str(target[0] if isinstance(target, list) else str(target).split(".", 1)[0])}
        return set().union(*(_keys_named(v, under_key_property or k in KEY_PROPERTIES) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(_keys_named(v, under_key_property) for v in value))
    return set()


def _retained(logical_id: str) -> bool:
    resource = TEMPLATE.resources[logical_id]
    return resource.get("DeletionPolicy") == "Retain" and resource.get("UpdateReplacePolicy") == "Retain"


RETAINED = sorted(lid for lid in TEMPLATE.resources if _retained(lid) and _keys_named(TEMPLATE.resources[lid]))


def test_encryption_the_retained_resources_are_found() -> None:
    assert {"ChangeLedgerTable", "TicketTable", "EvidenceBucket"} <= set(RETAINED), RETAINED


@pytest.mark.parametrize("logical_id", RETAINED)
def test_encryption_the_key_of_every_retained_resource_is_retained_too(logical_id: str) -> None:
    """Data kept when the stack goes must stay readable: its key must not be scheduled for deletion.

    A KMS key removed from a stack is scheduled for deletion ("AWS::KMS::Key", PendingWindowInDays)
    and what it encrypted is unrecoverable once it is gone.
    """
    for key in _keys_named(TEMPLATE.resources[logical_id]):
        assert key in TEMPLATE.resources, f"{logical_id} names {key}, which the template does not define"
        assert _retained(key), f"{logical_id} is retained but its key {key} is deleted with the stack"


def test_encryption_the_suite_key_keeps_the_longest_deletion_window_and_its_alias() -> None:
    assert TEMPLATE.resources[KEY]["Properties"].get("PendingWindowInDays") == 30
    aliases = [lid for lid, r in _resources("AWS::KMS::Alias").items() if KEY in repr(r["Properties"]["TargetKeyId"])]
    assert aliases and all(_retained(lid) for lid in aliases), aliases


def test_encryption_cloudwatch_logs_may_use_the_key_for_this_accounts_log_groups_only() -> None:
    """Without the key policy allowing logs.<region>.amazonaws.com, creating the log groups fails.

    "Encrypt log data in CloudWatch Logs using AWS KMS": the key policy must allow the regional
    CloudWatch Logs principal kms:Encrypt*, Decrypt*, ReEncrypt*, GenerateDataKey* and Describe*,
    scoped with kms:EncryptionContext:aws:logs:arn. moto does not enforce key policies, so only this
    test sees it.
    """
    users = [lid for lid, r in _resources("AWS::Logs::LogGroup").items() if _refers_to_key(r["Properties"])]
    assert users, "no log group uses the suite key: the test would prove nothing"
    ctx = TEMPLATE.context()
    policy = resolve(TEMPLATE.resources[KEY]["Properties"]["KeyPolicy"], ctx)
    service = f"logs.{ctx.region}.amazonaws.com"
    log_groups = f"arn:aws:logs:{ctx.region}:{ctx.account}:log-group:*"
    needed = {"kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"}
    granted = [
        st
        for st in policy["Statement"]
        if st["Effect"] == "Allow" and service in _as_list((st.get("Principal") or {}).get("Service"))
    ]
    assert granted, f"the key policy does not allow {service}"
    for st in granted:
        assert needed <= set(_as_list(st["Action"])), st["Action"]
        assert st.get("Condition") == {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}}, st


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


@pytest.mark.parametrize("logical_id", sorted(_resources("AWS::Logs::LogGroup")))
def test_logs_the_log_groups_outlive_the_stack(logical_id: str) -> None:
    """The functions' logs are audit evidence kept LogRetentionDays (a year): deleting the stack must not erase them."""
    assert _retained(logical_id)
    assert TEMPLATE.resources[logical_id]["Properties"].get("RetentionInDays") == {"Ref": "LogRetentionDays"}
    assert "LogGroupName" not in TEMPLATE.resources[logical_id]["Properties"]  # a new stack makes its own


def test_logs_powertools_never_logs_the_event_and_logs_at_info() -> None:
    env = TEMPLATE.raw["Globals"]["Function"]["Environment"]["Variables"]
    assert str(env.get("POWERTOOLS_LOGGER_LOG_EVENT")).lower() == "false"
    assert env.get("POWERTOOLS_LOG_LEVEL") == "INFO"
    for logical_id in TEMPLATE.function_ids():
        variables = (TEMPLATE.resources[logical_id]["Properties"].get("Environment") or {}).get("Variables") or {}
        assert str(variables.get("POWERTOOLS_LOGGER_LOG_EVENT", "false")).lower() == "false", logical_id
        assert variables.get("POWERTOOLS_LOG_LEVEL", "INFO") == "INFO", logical_id


def planted(event: Any) -> list[Any]:
    """The event with the canaries planted, and broken variants whose errors could quote them."""
    if not isinstance(event, dict):
        return []
    out: list[Any] = []
    base = copy.deepcopy(event)
    base[UNKNOWN_FIELD] = {"password": SECRET}
    detail = base.get("detail")
    if isinstance(detail, dict):
        params = detail.get("requestParameters")
        if isinstance(params, dict):
            params["password"] = SECRET
            params["authToken"] = {"value": SECRET}
        detail.setdefault("additionalEventData", {})["secret"] = SECRET
    out.append(base)
    # Broken where a validation error would quote the input. (The envelope's routing labels,
    # source and detail-type, may be named in a rejection: they are labels, never secrets.)
    for key in ("time", "id", "account"):
        broken = copy.deepcopy(base)
        broken[key] = SECRET
        out.append(broken)
    if isinstance(detail, dict):
        for key in ("eventTime", "eventSource", "userIdentity", "state", "deploymentId"):
            broken = copy.deepcopy(base)
            broken["detail"][key] = {"not": SECRET} if key == "eventTime" else [SECRET]
            out.append(broken)
    if isinstance(base.get("Records"), list):
        broken = copy.deepcopy(base)
        broken["Records"] = [{"eventName": SECRET, "dynamodb": SECRET}]
        out.append(broken)
    return out


@pytest.fixture(scope="module")
def logged(embedded_aws: EmbeddedAWS) -> Any:
    """Everything every function logged while run over its planted events, and its credentials."""
    stream = io.StringIO()
    # Powertools' logger writes to the stream of the first harness in the process, which may be
    # another test's: listen on the logger itself, formatted as Powertools formats it.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LambdaPowertoolsFormatter())
    service_logger = logging.getLogger(
        str(TEMPLATE.raw["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"])
    )
    service_logger.addHandler(handler)
    try:
        return _run_planted(embedded_aws, stream)
    finally:
        service_logger.removeHandler(handler)


def _run_planted(embedded_aws: EmbeddedAWS, stream: io.StringIO) -> Any:
    with aws_environment(embedded_aws) as aws:
        harness, _ = scenario_harness(aws.endpoint_url, log_stream=stream, parameters=SMALL_LEDGER)
        harness.put_parameter("enforcement-mode", "enforce")
        credentials: set[str] = set()
        for logical_id in harness.functions:
            env = harness.function_environment(logical_id)
            credentials |= {env["AWS_SECRET_ACCESS_KEY"], env["AWS_SESSION_TOKEN"]}
            for event in triggers_of(harness, logical_id):
                for variant in planted(fresh(event)):
                    with delivered_at_its_time(harness, variant):
                        harness.invoke(logical_id, variant)
        harness.pump_streams()
    return stream.getvalue(), credentials


def test_logs_show_no_secret_no_credential_and_no_whole_event(logged: Any) -> None:
    text, credentials = logged
    assert text.count("\n") > 50, "the functions logged almost nothing: the test would prove nothing"
    assert SECRET not in text, _around(text, SECRET)
    assert UNKNOWN_FIELD not in text, "an event was logged whole:\n" + _around(text, UNKNOWN_FIELD)
    for credential in credentials:
        assert credential not in text, "a credential of a function's role is in its logs"
    assert not re.search(r'"level":\s*"DEBUG"', text), "DEBUG records were emitted at INFO"


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return text[max(0, at - 600) : at + 200]
