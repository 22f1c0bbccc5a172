"""DynamoDB Streams under ``mock_aws``: botocore sends calls that name a stream to the account-based
endpoint (``<account>.streams-ddb.<region>.amazonaws.com``), which moto alone does not route."""

from __future__ import annotations

import re

import boto3
from changeguard_tools.embedded import install
from changeguard_tools.embedded.dynamodbstreams_endpoint import ACCOUNT_ENDPOINT
from moto import mock_aws

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def test_stream_calls_reach_moto_through_the_account_based_endpoint():
    install()
    hosts: list[str] = []
    with mock_aws():
        ddb = boto3.client("dynamodb", **CREDENTIALS)
        streams = boto3.client("dynamodbstreams", **CREDENTIALS)
        streams.meta.events.register("before-send", lambda request, **_: hosts.append(request.url))
        arn = ddb.create_table(
            TableName="ledger",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )["TableDescription"]["LatestStreamArn"]
        ddb.put_item(TableName="ledger", Item={"pk": {"S": "change-1"}})

        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]

    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in records] == ["change-1"]
    assert "streams-ddb" in hosts[0], hosts[0]  # the endpoint the patch exists for
    assert all(re.match(ACCOUNT_ENDPOINT, url) for url in hosts[:2])


def test_get_records_answers_as_moto_s_own_serializer_does(aws):
    """The fast GetRecords returns what moto's generic serializer returned, as botocore parses it."""
    from changeguard_tools.embedded.dynamodbstreams_records import get_records
    from changeguard_tools.embedded.extensions import add_operation, original_operation, remove_operation
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    ddb, streams = aws.client("dynamodb"), aws.client("dynamodbstreams")
    arn = ddb.create_table(
        TableName="ledger",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]["LatestStreamArn"]
    item = {
        "pk": {"S": "change-1"},
        "n": {"N": "12.5"},
        "b": {"B": b"\x00\x01"},
        "l": {"L": [{"S": "x"}, {"BOOL": True}, {"NULL": True}]},
        "m": {"M": {"ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2"]}}},
    }
    ddb.put_item(TableName="ledger", Item=item)
    ddb.put_item(TableName="ledger", Item={**item, "n": {"N": "13"}})
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]

    ours = streams.get_records(ShardIterator=iterator, Limit=10)
    assert original_operation(DynamoDBStreamsHandler, "GetRecords") is not None
    remove_operation(DynamoDBStreamsHandler, "GetRecords")  # moto's own, for comparison
    try:
        motos = streams.get_records(ShardIterator=iterator, Limit=10)
    finally:
        add_operation(DynamoDBStreamsHandler, "GetRecords", get_records, replace=True)

    assert len(ours["Records"]) == 2
    assert [r["dynamodb"]["OldImage"]["n"] for r in ours["Records"][1:]] == [{"N": "12.5"}]
    for key in ("Records", "NextShardIterator"):
        assert type(ours[key]) is type(motos[key])
    for mine, theirs in zip(ours["Records"], motos["Records"], strict=True):
        # AWS: "rounded down to the closest second" (moto's serializer kept milliseconds)
        assert mine["dynamodb"].pop("ApproximateCreationDateTime") == theirs["dynamodb"].pop(
            "ApproximateCreationDateTime"
        ).replace(microsecond=0)
        assert mine == theirs
