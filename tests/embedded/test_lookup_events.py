"""CloudTrail LookupEvents over the calls the embedded AWS served, as AWS documents it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from changeguard_tools.embedded import EmbeddedAWS

ACCOUNT = "123456789012"
TRUST_POLICY = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
    '"Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}'
)
NOW = datetime.now(UTC).replace(microsecond=0)


def fed_record(name: str, at: datetime, **overrides: Any) -> dict[str, Any]:
    """A management-event record as a harness would feed it into the trail."""
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "userName": "moto", "accessKeyId": "testing"},
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "sns.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "eventID": str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    record.update(overrides)
    return record


def names(response: dict[str, Any]) -> list[str]:
    return [event["EventName"] for event in response["Events"]]


@pytest.fixture
def cloudtrail(aws: EmbeddedAWS) -> Any:
    return aws.client("cloudtrail")


def test_returns_served_management_events_newest_first(aws: EmbeddedAWS, cloudtrail: Any) -> None:
    sns = aws.client("sns")
    for name in ("first", "second", "third"):
        sns.create_topic(Name=name)
    sns.publish(TopicArn=f"arn:aws:sns:us-east-1:{ACCOUNT}:first", Message="data event")

    response = cloudtrail.lookup_events()

    # Publish is a data event: recorded, but not in the event history LookupEvents reads.
    assert [json.loads(event["CloudTrailEvent"])["requestParameters"]["name"] for event in response["Events"]] == [
        "third",
        "second",
        "first",
    ]
    assert "NextToken" not in response
    event = response["Events"][0]
    record = json.loads(event["CloudTrailEvent"])
    assert record == aws.trail.records()[2]
    assert event["EventId"] == record["eventID"]
    assert event["EventName"] == "CreateTopic"
    assert event["EventSource"] == "sns.amazonaws.com"
    assert event["ReadOnly"] == "false"
    assert event["AccessKeyId"] == "testing"
    assert event["Username"] == "moto"
    assert event["Resources"] == [{"ResourceType": "AWS::SNS::Topic", "ResourceName": "third"}]
    assert abs(event["EventTime"] - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("EventName", "PutFunctionConcurrency20171031", ["PutFunctionConcurrency20171031"]),
        ("EventSource", "iam.amazonaws.com", ["CreateRole"]),
        ("ResourceType", "AWS::Lambda::Function", ["PutFunctionConcurrency20171031", "CreateFunction20150331"]),
        ("ResourceName", "checkout", ["PutFunctionConcurrency20171031", "CreateFunction20150331"]),
        ("Username", "moto", ["CreateFunction20150331", "CreateRole"]),
        ("Username", "release-bot", ["PutFunctionConcurrency20171031"]),
        ("ReadOnly", "false", ["PutFunctionConcurrency20171031", "CreateFunction20150331", "CreateRole"]),
        ("ReadOnly", "true", []),
    ],
)
def test_filters_on_one_lookup_attribute(
    aws: EmbeddedAWS, cloudtrail: Any, key: str, value: str, expected: list[str]
) -> None:
    role = aws.client("iam").create_role(RoleName="checkout-runtime", AssumeRolePolicyDocument=TRUST_POLICY)["Role"]
    aws.client("lambda").create_function(
        FunctionName="checkout",
        Runtime="python3.12",
        Role=role["Arn"],
        Handler="app.lambda_handler",
        Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
    )
    session = aws.client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName="release-bot")["Credentials"]
    aws.client(
        "lambda",
        aws_access_key_id=session["AccessKeyId"],
        aws_secret_access_key=session["SecretAccessKey"],
        aws_session_token=session["SessionToken"],
    ).put_function_concurrency(FunctionName="checkout", ReservedConcurrentExecutions=0)

    response = cloudtrail.lookup_events(LookupAttributes=[{"AttributeKey": key, "AttributeValue": value}])

    assert names(response) == expected


def test_filters_on_event_id_and_access_key(aws: EmbeddedAWS, cloudtrail: Any) -> None:
    aws.client("sns").create_topic(Name="alerts")
    aws.client("sns").create_topic(Name="other")
    wanted = aws.trail.records()[0]

    by_id = cloudtrail.lookup_events(
        LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": wanted["eventID"]}]
    )
    by_key = cloudtrail.lookup_events(LookupAttributes=[{"AttributeKey": "AccessKeyId", "AttributeValue": "testing"}])
    by_other_key = cloudtrail.lookup_events(
        LookupAttributes=[{"AttributeKey": "AccessKeyId", "AttributeValue": "AKIAOTHER"}]
    )

    assert [event["EventId"] for event in by_id["Events"]] == [wanted["eventID"]]
    assert len(by_key["Events"]) == 2
    assert by_other_key["Events"] == []


def test_only_one_lookup_attribute_is_allowed(cloudtrail: Any) -> None:
    with pytest.raises(ClientError) as raised:
        cloudtrail.lookup_events(
            LookupAttributes=[
                {"AttributeKey": "EventName", "AttributeValue": "CreateTopic"},
                {"AttributeKey": "EventSource", "AttributeValue": "sns.amazonaws.com"},
            ]
        )
    assert raised.value.response["Error"]["Code"] == "InvalidLookupAttributesException"


def test_time_range_is_inclusive(aws: EmbeddedAWS, cloudtrail: Any) -> None:
    for hours_ago in (3, 2, 1):
        aws.trail.put(fed_record(f"Change{hours_ago}", NOW - timedelta(hours=hours_ago)))

    response = cloudtrail.lookup_events(StartTime=NOW - timedelta(hours=2), EndTime=NOW - timedelta(hours=1))
    since = cloudtrail.lookup_events(StartTime=NOW - timedelta(hours=2))
    until = cloudtrail.lookup_events(EndTime=NOW - timedelta(hours=3))

    assert names(response) == ["Change1", "Change2"]
    assert names(since) == ["Change1", "Change2"]
    assert names(until) == ["Change3"]


def test_start_after_end_is_an_invalid_time_range(cloudtrail: Any) -> None:
    with pytest.raises(ClientError) as raised:
        cloudtrail.lookup_events(StartTime=NOW, EndTime=NOW - timedelta(seconds=1))
    assert raised.value.response["Error"]["Code"] == "InvalidTimeRangeException"


def test_looks_back_ninety_days_only(aws: EmbeddedAWS, cloudtrail: Any) -> None:
    aws.trail.put(fed_record("TooOld", NOW - timedelta(days=91)))
    aws.trail.put(fed_record("Recent", NOW - timedelta(days=89)))

    assert names(cloudtrail.lookup_events()) == ["Recent"]


def test_only_the_callers_account_and_region(aws: EmbeddedAWS, cloudtrail: Any) -> None:
    aws.client("sns", region="eu-west-1").create_topic(Name="elsewhere")
    aws.trail.put(fed_record("OtherAccount", NOW, recipientAccountId="210987654321"))
    aws.client("sns").create_topic(Name="here")

    assert names(cloudtrail.lookup_events()) == ["CreateTopic"]
    assert names(aws.client("cloudtrail", region="eu-west-1").lookup_events()) == ["CreateTopic"]


def test_pages_newest_first_without_gaps_or_repeats(aws: EmbeddedAWS, cloudtrail: Any) -> None:
    for minute in range(7):
        aws.trail.put(fed_record(f"Change{minute}", NOW - timedelta(minutes=10 - minute)))

    pages: list[list[str]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"MaxResults": 3}
        if token:
            kwargs["NextToken"] = token
        response = cloudtrail.lookup_events(**kwargs)
        pages.append(names(response))
        token = response.get("NextToken")
        if not token:
            break

    assert pages == [["Change6", "Change5", "Change4"], ["Change3", "Change2", "Change1"], ["Change0"]]


def test_records_arriving_between_pages_do_not_shift_later_pages(aws: EmbeddedAWS, cloudtrail: Any) -> None:
    for minute in range(4):
        aws.trail.put(fed_record(f"Change{minute}", NOW - timedelta(minutes=10 - minute)))
    first = cloudtrail.lookup_events(MaxResults=2)

    aws.trail.put(fed_record("Newer", NOW))
    second = cloudtrail.lookup_events(MaxResults=2, NextToken=first["NextToken"])

    assert names(first) == ["Change3", "Change2"]
    assert names(second) == ["Change1", "Change0"]


def test_botocore_paginator_walks_every_page(aws: EmbeddedAWS, cloudtrail: Any) -> None:
    for minute in range(120):
        aws.trail.put(fed_record("CreateTopic", NOW - timedelta(seconds=minute)))

    pages = list(cloudtrail.get_paginator("lookup_events").paginate())

    assert [len(page["Events"]) for page in pages] == [50, 50, 20]


def test_next_token_is_bound_to_its_query(aws: EmbeddedAWS, cloudtrail: Any) -> None:
    for minute in range(3):
        aws.trail.put(fed_record("CreateTopic", NOW - timedelta(minutes=minute)))
    token = cloudtrail.lookup_events(MaxResults=1)["NextToken"]

    with pytest.raises(ClientError) as other_query:
        cloudtrail.lookup_events(
            MaxResults=1,
            NextToken=token,
            LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateTopic"}],
        )
    with pytest.raises(ClientError) as garbage:
        cloudtrail.lookup_events(NextToken="not-a-token")

    assert other_query.value.response["Error"]["Code"] == "InvalidNextTokenException"
    assert garbage.value.response["Error"]["Code"] == "InvalidNextTokenException"


@pytest.mark.parametrize("max_results", [0, 51])
def test_max_results_is_one_to_fifty(aws: EmbeddedAWS, max_results: int) -> None:
    # botocore would refuse 0 itself; turn its validation off to see the service's answer.
    from botocore.config import Config

    cloudtrail = aws.client("cloudtrail", config=Config(parameter_validation=False))

    with pytest.raises(ClientError) as raised:
        cloudtrail.lookup_events(MaxResults=max_results)
    assert raised.value.response["Error"]["Code"] == "InvalidMaxResultsException"


def test_lookup_events_is_not_itself_recorded(aws: EmbeddedAWS, cloudtrail: Any) -> None:
    cloudtrail.lookup_events()

    assert aws.trail.records() == []
