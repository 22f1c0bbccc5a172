"""moto's model objects live as long as a backend holds them, not for the life of the process."""

from __future__ import annotations

import gc

import pytest
from botocore.exceptions import ClientError
from moto.dynamodb.models.dynamo_type import Item


def _live_items() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is Item)


def test_refused_conditional_puts_leave_no_items_behind(aws):
    ddb = aws.client("dynamodb")
    ddb.create_table(
        TableName="ledger",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    item = {"pk": {"S": "change-1"}, "verdict": {"S": "NO_TICKET"}}
    ddb.put_item(TableName="ledger", Item=item)
    before = _live_items()

    for _ in range(50):  # duplicate deliveries: moto builds an Item for each, then refuses it
        with pytest.raises(ClientError, match="ConditionalCheckFailed"):
            ddb.put_item(TableName="ledger", Item=item, ConditionExpression="attribute_not_exists(pk)")

    assert _live_items() - before < 5
    assert Item.instances_tracked == []
    assert ddb.get_item(TableName="ledger", Key={"pk": {"S": "change-1"}})["Item"] == item
