"""Every mutating call the embedded AWS serves is recorded as CloudTrail would record it."""

from __future__ import annotations

import io
import re
import uuid
import zipfile
from typing import Any

import pytest
from botocore.exceptions import ClientError
from changeguard_tools.embedded import EmbeddedAWS, Trail
from changeguard_tools.embedded.cloudtrail import TrailRecordError

ACCOUNT = "123456789012"
ISO_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
DEFAULT_USER = {
    "type": "IAMUser",
    "principalId": "AKIAIOSFODNN7EXAMPLE",
    "arn": f"arn:aws:iam::{ACCOUNT}:user/moto",
    "accountId": ACCOUNT,
    "accessKeyId": "testing",
    "userName": "moto",
}
TRUST_POLICY = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
    '"Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":["sts:AssumeRole","sts:SetSourceIdentity"]}]}'
)


def only(aws: EmbeddedAWS, event_name: str) -> dict[str, Any]:
    """The one record of ``event_name`` in the trail."""
    found = [record for record in aws.trail.records() if record["eventName"] == event_name]
    assert len(found) == 1, [record["eventName"] for record in aws.trail.records()]
    return found[0]


def lambda_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    return buffer.getvalue()


def assumed_role_credentials(aws: EmbeddedAWS, role_name: str, source_identity: str | None) -> dict[str, Any]:
    role = aws.client("iam").create_role(RoleName=role_name, AssumeRolePolicyDocument=TRUST_POLICY)["Role"]
    extra = {"SourceIdentity": source_identity} if source_identity else {}
    assumed = aws.client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName="deployer", **extra)
    return {"role": role, **assumed}


def as_session(credentials: dict[str, Any]) -> dict[str, str]:
    return {
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"],
    }


# --- record shape ---------------------------------------------------------------------------------


def test_json_protocol_call_is_recorded_with_cloudtrail_fields(aws: EmbeddedAWS) -> None:
    aws.client("dynamodb").create_table(
        TableName="ledger",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    record = only(aws, "CreateTable")

    assert list(record) == [
        "eventVersion", "userIdentity", "eventTime", "eventSource", "eventName", "awsRegion",
        "sourceIPAddress", "userAgent", "requestParameters", "responseElements", "requestID",
        "eventID", "readOnly", "eventType", "managementEvent", "recipientAccountId", "eventCategory",
    ]  # fmt: skip
    assert record["eventVersion"] == "1.09"
    assert record["userIdentity"] == DEFAULT_USER
    assert ISO_SECONDS.match(record["eventTime"])
    assert record["eventSource"] == "dynamodb.amazonaws.com"
    assert record["awsRegion"] == "us-east-1"
    assert record["sourceIPAddress"] == "127.0.0.1"
    assert record["userAgent"].startswith("Boto3/")
    assert record["requestParameters"] == {
        "tableName": "ledger",
        "keySchema": [{"attributeName": "pk", "keyType": "HASH"}],
        "attributeDefinitions": [{"attributeName": "pk", "attributeType": "S"}],
        "billingMode": "PAY_PER_REQUEST",
    }
    assert record["responseElements"] is None
    assert record["requestID"]
    assert uuid.UUID(record["eventID"]).version == 4
    assert record["readOnly"] is False
    assert record["eventType"] == "AwsApiCall"
    assert record["managementEvent"] is True
    assert record["eventCategory"] == "Management"
    assert record["recipientAccountId"] == ACCOUNT


def test_region_comes_from_the_signature(aws: EmbeddedAWS) -> None:
    aws.client("ssm", region="eu-west-1").put_parameter(Name="/changeguard/mode", Value="enforce", Type="String")

    record = only(aws, "PutParameter")

    assert record["awsRegion"] == "eu-west-1"
    assert record["eventSource"] == "ssm.amazonaws.com"
    # botocore marks every parameter value sensitive, whatever its type.
    assert record["requestParameters"] == {
        "name": "/changeguard/mode",
        "value": "HIDDEN_DUE_TO_SECURITY_REASONS",
        "type": "String",
    }


def test_sensitive_parameters_are_hidden(aws: EmbeddedAWS) -> None:
    aws.client("ssm").put_parameter(Name="/changeguard/token", Value="s3cr3t", Type="SecureString")

    record = only(aws, "PutParameter")

    assert record["requestParameters"]["value"] == "HIDDEN_DUE_TO_SECURITY_REASONS"
    assert "s3cr3t" not in str(record)


@pytest.mark.parametrize(
    ("service", "call", "event_source", "event_name", "parameters"),
    [
        (
            "ec2",
            lambda c: c.create_security_group(GroupName="quarantine", Description="no traffic"),
            "ec2.amazonaws.com",
            "CreateSecurityGroup",
            {"groupName": "quarantine", "description": "no traffic"},
        ),
        (
            "sns",
            lambda c: c.create_topic(Name="alerts", Tags=[{"Key": "team", "Value": "sre"}]),
            "sns.amazonaws.com",
            "CreateTopic",
            {"name": "alerts", "tags": [{"key": "team", "value": "sre"}]},
        ),
        (
            "iam",
            lambda c: c.create_role(RoleName="deployer", AssumeRolePolicyDocument=TRUST_POLICY),
            "iam.amazonaws.com",
            "CreateRole",
            {"roleName": "deployer", "assumeRolePolicyDocument": TRUST_POLICY},
        ),
    ],
)
def test_query_protocol_calls_are_recorded(
    aws: EmbeddedAWS, service: str, call: Any, event_source: str, event_name: str, parameters: dict[str, Any]
) -> None:
    call(aws.client(service))

    record = only(aws, event_name)

    assert record["eventSource"] == event_source
    assert record["requestParameters"] == parameters
    assert record["eventCategory"] == "Management"


def test_rest_xml_call_is_matched_by_method_path_and_subresource(aws: EmbeddedAWS) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="evidence")
    s3.put_bucket_tagging(Bucket="evidence", Tagging={"TagSet": [{"Key": "owner", "Value": "sre"}]})
    s3.put_public_access_block(
        Bucket="evidence",
        PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True},
    )

    assert [record["eventName"] for record in aws.trail.records()] == [
        "CreateBucket",
        "PutBucketTagging",
        "PutPublicAccessBlock",
    ]
    tagging = only(aws, "PutBucketTagging")
    assert tagging["eventSource"] == "s3.amazonaws.com"
    assert tagging["requestParameters"]["bucketName"] == "evidence"
    assert tagging["requestParameters"]["tagging"] == ""
    assert tagging["requestParameters"]["Tagging"] == {"TagSet": [{"Key": "owner", "Value": "sre"}]}
    assert tagging["requestParameters"]["Host"].startswith("127.0.0.1:")


def test_rest_json_call_is_recorded_with_lambdas_dated_event_name(aws: EmbeddedAWS) -> None:
    role = aws.client("iam").create_role(RoleName="checkout", AssumeRolePolicyDocument=TRUST_POLICY)
    lambda_client = aws.client("lambda")
    lambda_client.create_function(
        FunctionName="checkout",
        Runtime="python3.12",
        Role=role["Role"]["Arn"],
        Handler="app.lambda_handler",
        Code={"ZipFile": lambda_zip()},
        Environment={"Variables": {"API_KEY": "not-for-the-trail"}},
    )
    lambda_client.put_function_concurrency(FunctionName="checkout", ReservedConcurrentExecutions=0)

    created = only(aws, "CreateFunction20150331")
    throttled = only(aws, "PutFunctionConcurrency20171031")

    assert throttled["eventSource"] == "lambda.amazonaws.com"
    assert throttled["requestParameters"] == {"functionName": "checkout", "reservedConcurrentExecutions": 0}
    assert created["requestParameters"]["code"] == {}  # the zip file is left out
    assert "not-for-the-trail" not in str(created)


def test_object_level_calls_are_data_events(aws: EmbeddedAWS) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="evidence")
    s3.put_object(Bucket="evidence", Key="2026/ledger.json", Body=b"{}")

    record = only(aws, "PutObject")

    assert record["eventCategory"] == "Data"
    assert record["managementEvent"] is False
    assert record["requestParameters"]["key"] == "2026/ledger.json"


def test_failed_calls_are_recorded_with_their_error(aws: EmbeddedAWS) -> None:
    s3 = aws.client("s3")
    with pytest.raises(ClientError):
        s3.put_bucket_tagging(Bucket="missing", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    dynamodb = aws.client("dynamodb")
    with pytest.raises(ClientError):
        dynamodb.delete_table(TableName="missing")

    s3_failure = only(aws, "PutBucketTagging")
    dynamodb_failure = only(aws, "DeleteTable")

    assert s3_failure["errorCode"] == "NoSuchBucket"
    assert s3_failure["errorMessage"]
    assert list(s3_failure).index("errorCode") == list(s3_failure).index("userAgent") + 1
    assert dynamodb_failure["errorCode"] == "ResourceNotFoundException"


def test_read_only_calls_are_not_recorded_unless_asked(aws: EmbeddedAWS) -> None:
    s3 = aws.client("s3")
    s3.list_buckets()
    aws.client("ssm").describe_parameters()
    aws.client("ec2").describe_instances()
    aws.client("cloudtrail").lookup_events()
    assert aws.trail.records() == []

    aws.record_read_only = True
    s3.list_buckets()

    record = only(aws, "ListBuckets")
    assert record["readOnly"] is True


# --- identity -------------------------------------------------------------------------------------


def test_assumed_role_identity_with_source_identity(aws: EmbeddedAWS) -> None:
    assumed = assumed_role_credentials(aws, "deployer", source_identity="alice@example.com")
    assert assumed["SourceIdentity"] == "alice@example.com"

    aws.client("s3").create_bucket(Bucket="evidence")
    as_deployer = aws.client("s3", **as_session(assumed["Credentials"]))
    as_deployer.put_bucket_tagging(Bucket="evidence", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})

    identity = only(aws, "PutBucketTagging")["userIdentity"]
    role = assumed["role"]
    assert identity["type"] == "AssumedRole"
    assert identity["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/deployer"
    assert identity["principalId"] == f"{role['RoleId']}:deployer"
    assert identity["accountId"] == ACCOUNT
    assert identity["accessKeyId"] == assumed["Credentials"]["AccessKeyId"]
    assert identity["sessionContext"]["sessionIssuer"] == {
        "type": "Role",
        "principalId": role["RoleId"],
        "arn": role["Arn"],
        "accountId": ACCOUNT,
        "userName": "deployer",
    }
    assert identity["sessionContext"]["sourceIdentity"] == "alice@example.com"
    assert ISO_SECONDS.match(identity["sessionContext"]["attributes"]["creationDate"])


def test_source_identity_carries_through_a_role_chain(aws: EmbeddedAWS) -> None:
    first = assumed_role_credentials(aws, "deployer", source_identity="alice@example.com")
    second_role = aws.client("iam").create_role(RoleName="remediator", AssumeRolePolicyDocument=TRUST_POLICY)
    chained = aws.client("sts", **as_session(first["Credentials"])).assume_role(
        RoleArn=second_role["Role"]["Arn"], RoleSessionName="chained"
    )

    aws.client("sns", **as_session(chained["Credentials"])).create_topic(Name="alerts")

    identity = only(aws, "CreateTopic")["userIdentity"]
    assert identity["sessionContext"]["sessionIssuer"]["userName"] == "remediator"
    assert identity["sessionContext"]["sourceIdentity"] == "alice@example.com"


def test_assumed_role_without_source_identity_has_none(aws: EmbeddedAWS) -> None:
    assumed = assumed_role_credentials(aws, "deployer", source_identity=None)

    aws.client("sns", **as_session(assumed["Credentials"])).create_topic(Name="alerts")

    assert "sourceIdentity" not in only(aws, "CreateTopic")["userIdentity"]["sessionContext"]


def test_iam_user_identity(aws: EmbeddedAWS) -> None:
    iam = aws.client("iam")
    user = iam.create_user(UserName="alice")["User"]
    key = iam.create_access_key(UserName="alice")["AccessKey"]

    aws.client("sns", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]).create_topic(
        Name="alerts"
    )

    assert only(aws, "CreateTopic")["userIdentity"] == {
        "type": "IAMUser",
        "principalId": user["UserId"],
        "arn": user["Arn"],
        "accountId": ACCOUNT,
        "accessKeyId": key["AccessKeyId"],
        "userName": "alice",
    }


# --- the trail ------------------------------------------------------------------------------------


def test_subscribers_see_each_record_before_the_call_returns(aws: EmbeddedAWS) -> None:
    seen: list[str] = []
    unsubscribe = aws.trail.subscribe(lambda record: seen.append(record["eventName"]))
    try:
        aws.client("sns").create_topic(Name="alerts")
        assert seen == ["CreateTopic"]
    finally:
        unsubscribe()

    aws.client("sns").create_topic(Name="other")
    assert seen == ["CreateTopic"]


def test_a_failing_subscriber_does_not_break_the_call_but_is_reported(aws: EmbeddedAWS) -> None:
    def broken(record: dict[str, Any]) -> None:
        raise RuntimeError("harness bug")

    unsubscribe = aws.trail.subscribe(broken)
    try:
        topic = aws.client("sns").create_topic(Name="alerts")
    finally:
        unsubscribe()

    assert topic["TopicArn"].endswith(":alerts")
    assert only(aws, "CreateTopic")
    assert len(aws.errors) == 1
    assert isinstance(aws.errors[0], ExceptionGroup)
    aws.errors.clear()  # reported and seen: the fixture would otherwise fail the test


def test_trail_keeps_only_the_newest_records() -> None:
    trail = Trail(max_records=3)
    for index in range(5):
        trail.put(
            {
                "eventID": str(index),
                "eventTime": f"2026-01-01T00:00:0{index}Z",
                "eventName": "CreateTopic",
                "eventSource": "sns.amazonaws.com",
            }
        )

    assert [record["eventID"] for record in trail.records()] == ["2", "3", "4"]
    assert len(trail) == 3
    trail.clear()
    assert trail.records() == []


def test_trail_refuses_records_without_cloudtrail_essentials() -> None:
    with pytest.raises(TrailRecordError, match="eventTime"):
        Trail().put({"eventID": "1", "eventName": "CreateTopic", "eventSource": "sns.amazonaws.com"})
    with pytest.raises(TrailRecordError, match="ISO 8601"):
        Trail().put(
            {"eventID": "1", "eventTime": "yesterday", "eventName": "CreateTopic", "eventSource": "sns.amazonaws.com"}
        )
