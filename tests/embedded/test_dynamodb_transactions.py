"""TransactWriteItems all or nothing, as DynamoDB does it, without moto's copies of the tables.

A cancelled transaction leaves the table and its stream as they were: readers keep their iterators,
and nothing the transaction wrote is visible or streamed.
"""

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


def _create(ddb) -> str:
    return ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )["TableDescription"]["LatestStreamArn"]


def _iterator(streams, arn: str) -> str:
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    return streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]


def test_a_stream_iterator_survives_a_cancelled_transaction(aws):
    ddb, streams = aws.client("dynamodb"), aws.client("dynamodbstreams")
    iterator = _iterator(streams, _create(ddb))

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


def _keys(records: list[dict]) -> list[tuple[str, str]]:
    return [(r["dynamodb"]["Keys"]["pk"]["S"], r["dynamodb"]["Keys"]["sk"]["S"]) for r in records]


def test_cancellation_reasons_follow_the_actions_and_nothing_is_written(aws):
    ddb, streams = aws.client("dynamodb"), aws.client("dynamodbstreams")
    iterator = _iterator(streams, _create(ddb))
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "change-1"}, "sk": {"S": "VERDICT"}, "v": {"S": "first"}})
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "change-0"}, "sk": {"S": "VERDICT"}})
    duplicate = _put("change-1")
    duplicate["Put"]["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    check = {
        "ConditionCheck": {
            "TableName": TABLE,
            "Key": {"pk": {"S": "change-0"}, "sk": {"S": "VERDICT"}},
            "ConditionExpression": "attribute_exists(pk)",
        }
    }

    with pytest.raises(ClientError) as raised:
        ddb.transact_write_items(TransactItems=[_put("change-2"), duplicate, check])

    error = raised.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    reasons = error["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed", "None"]
    assert reasons[1]["Item"]["v"] == {"S": "first"}
    assert ddb.scan(TableName=TABLE)["Count"] == 2
    streamed = _keys(streams.get_records(ShardIterator=iterator)["Records"])
    assert streamed == [("change-1", "VERDICT"), ("change-0", "VERDICT")]


def test_a_write_that_fails_while_applied_undoes_the_writes_before_it(aws):
    ddb, streams = aws.client("dynamodb"), aws.client("dynamodbstreams")
    iterator = _iterator(streams, _create(ddb))
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "counter"}, "sk": {"S": "N"}, "n": {"S": "not a number"}})
    replace = {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "counter"}, "sk": {"S": "OTHER"}}}}
    # The condition holds; the update itself cannot apply (a string plus a number).
    bad_update = {
        "Update": {
            "TableName": TABLE,
            "Key": {"pk": {"S": "counter"}, "sk": {"S": "N"}},
            "UpdateExpression": "SET n = n + :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
            "ConditionExpression": "attribute_exists(pk)",
        }
    }

    with pytest.raises(ClientError):
        ddb.transact_write_items(TransactItems=[_put("change-9"), replace, bad_update])

    items = {(i["pk"]["S"], i["sk"]["S"]): i for i in ddb.scan(TableName=TABLE)["Items"]}
    assert list(items) == [("counter", "N")]
    assert items[("counter", "N")]["n"] == {"S": "not a number"}
    assert _keys(streams.get_records(ShardIterator=iterator)["Records"]) == [("counter", "N")]


def test_transactions_keep_the_table_object_rather_than_a_copy(aws):
    from moto.dynamodb.models import dynamodb_backends

    ddb = aws.client("dynamodb")
    _create(ddb)
    table = dynamodb_backends[aws.account_id]["us-east-1"].tables[TABLE]

    ddb.transact_write_items(TransactItems=[_put("change-1")])
    with pytest.raises(ClientError, match="TransactionCanceled"):
        ddb.transact_write_items(TransactItems=[_put("change-2"), _put("change-1")])

    assert dynamodb_backends[aws.account_id]["us-east-1"].tables[TABLE] is table
    assert len(table.stream_shard.items) == 1


def test_two_actions_on_one_item_reject_the_request(aws):
    ddb = aws.client("dynamodb")
    _create(ddb)
    with pytest.raises(ClientError, match="multiple operations on one item"):
        ddb.transact_write_items(TransactItems=[_put("change-1"), _put("change-1")])
    assert ddb.scan(TableName=TABLE)["Count"] == 0
