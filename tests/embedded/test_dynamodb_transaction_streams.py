"""A cancelled TransactWriteItems leaves the table's stream as it was: readers keep their iterators."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

TABLE = "ledger"


def _put(key: str, sk: str = "VERDICT") -> dict:
    return {
        "Put": {
            "TableName": TABLE,
            "Item": {"pk": {"S": key}, "sk": {"S": sk}},
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


def test_a_stream_iterator_survives_a_cancelled_transaction(aws):
    ddb, streams = aws.client("dynamodb"), aws.client("dynamodbstreams")
    arn = ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )["TableDescription"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]

    ddb.transact_write_items(TransactItems=[_put("change-1"), _put("change-1", "ALERT")])
    first = streams.get_records(ShardIterator=iterator)
    assert [r["dynamodb"]["Keys"]["sk"]["S"] for r in first["Records"]] == ["VERDICT", "ALERT"]

    # A duplicate: the second put succeeds first, then the first one's condition fails.
    with pytest.raises(ClientError, match="TransactionCanceled"):
        ddb.transact_write_items(TransactItems=[_put("change-2"), _put("change-1")])
    assert "Item" not in ddb.get_item(TableName=TABLE, Key={"pk": {"S": "change-2"}, "sk": {"S": "VERDICT"}})

    ddb.transact_write_items(TransactItems=[_put("change-3"), _put("change-3", "ALERT")])
    later = streams.get_records(ShardIterator=first["NextShardIterator"])
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in later["Records"]] == ["change-3", "change-3"]
