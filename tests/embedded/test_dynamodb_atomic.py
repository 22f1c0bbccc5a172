"""DynamoDB conditional writes are atomic under concurrency, through the threaded HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from changeguard_tools.embedded import EmbeddedAWS, dynamodb_atomic
from moto import mock_aws
from moto.dynamodb.models.table import Table

TABLE = "ledger"
THREADS = 50


def _create_table(client: Any) -> None:
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _conditional_put(client: Any, writer: int) -> str:
    try:
        client.put_item(
            TableName=TABLE,
            Item={"pk": {"S": "change-1"}, "writer": {"N": str(writer)}},
            ConditionExpression="attribute_not_exists(pk)",
        )
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    return "ok"


def _race(client: Any, writers: int) -> list[str]:
    """Start ``writers`` conditional puts of the same key at once; return their outcomes."""
    start = threading.Barrier(writers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def write(writer: int) -> None:
        start.wait()
        outcome = _conditional_put(client, writer)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.fixture
def dynamodb(aws: EmbeddedAWS) -> Any:
    client = aws.client("dynamodb", config=Config(max_pool_connections=THREADS))
    _create_table(client)
    return client


@pytest.fixture
def rendezvous(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make the first two puts, once each has read the item, wait for each other (briefly).

    moto's ``Table.put_item`` reads the current item (``Table.get_item``), evaluates the condition
    on it, then writes. If two puts can both read before either writes, they meet here, the
    returned event is set, and both see no item. If they cannot, the first waits 0.5 s in vain.
    """
    met = threading.Event()
    barrier = threading.Barrier(2)
    arrived = [0]
    guard = threading.Lock()
    original_put: Callable[..., Any] = Table.put_item
    inside_put = threading.local()

    def put_item(self: Table, *args: Any, **kwargs: Any) -> Any:
        inside_put.active = True
        try:
            return original_put(self, *args, **kwargs)
        finally:
            inside_put.active = False

    original_get: Callable[..., Any] = Table.get_item

    def get_item(self: Table, *args: Any, **kwargs: Any) -> Any:
        current = original_get(self, *args, **kwargs)
        if getattr(inside_put, "active", False):
            with guard:
                arrived[0] += 1
                mine = arrived[0]
            if mine <= 2:
                # Having read the item, wait for the other of the first two puts to have read it
                # too; a lock around put_item makes this time out instead.
                try:
                    barrier.wait(timeout=0.5)
                except threading.BrokenBarrierError:
                    pass
                else:
                    met.set()
        return current

    monkeypatch.setattr(Table, "put_item", put_item)
    monkeypatch.setattr(Table, "get_item", get_item)
    return met


def test_fifty_concurrent_conditional_puts_exactly_one_succeeds(dynamodb: Any) -> None:
    outcomes = _race(dynamodb, THREADS)

    assert outcomes.count("ok") == 1
    assert outcomes.count("ConditionalCheckFailedException") == THREADS - 1
    item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "change-1"}})["Item"]
    assert item["pk"] == {"S": "change-1"}


def test_without_the_patch_two_conditional_puts_can_both_succeed(dynamodb: Any, rendezvous: threading.Event) -> None:
    dynamodb_atomic.unpatch()
    try:
        assert not dynamodb_atomic.is_patched()
        outcomes = _race(dynamodb, 2)
    finally:
        dynamodb_atomic.patch()

    # Both evaluated attribute_not_exists(pk) before either wrote: moto alone is not atomic.
    assert rendezvous.is_set()
    assert outcomes == ["ok", "ok"]


def test_with_the_patch_condition_checks_never_overlap(dynamodb: Any, rendezvous: threading.Event) -> None:
    assert dynamodb_atomic.is_patched()

    outcomes = _race(dynamodb, 2)

    assert not rendezvous.is_set()
    assert sorted(outcomes) == ["ConditionalCheckFailedException", "ok"]


def test_lock_is_held_while_moto_writes(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    held_during_write: list[bool] = []
    original_put: Callable[..., Any] = Table.put_item

    def put_item(self: Table, *args: Any, **kwargs: Any) -> Any:
        held_during_write.append(_held_by_another_thread())
        return original_put(self, *args, **kwargs)

    monkeypatch.setattr(Table, "put_item", put_item)

    assert _conditional_put(dynamodb, 1) == "ok"
    assert held_during_write == [True]


def test_lock_also_applies_under_mock_aws(monkeypatch: pytest.MonkeyPatch, embedded_aws: EmbeddedAWS) -> None:
    # mock_aws intercepts botocore in-process: keep boto3 away from the embedded server's endpoint.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    held_during_write: list[bool] = []
    original_put: Callable[..., Any] = Table.put_item

    def put_item(self: Table, *args: Any, **kwargs: Any) -> Any:
        held_during_write.append(_held_by_another_thread())
        return original_put(self, *args, **kwargs)

    monkeypatch.setattr(Table, "put_item", put_item)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        _create_table(client)
        assert _conditional_put(client, 1) == "ok"
        assert _conditional_put(client, 2) == "ConditionalCheckFailedException"

    assert held_during_write == [True, True]


def _held_by_another_thread() -> bool:
    """Whether ``dynamodb_atomic.LOCK`` is held, seen from a thread that does not hold it."""
    result: list[bool] = []

    def probe() -> None:
        acquired = dynamodb_atomic.LOCK.acquire(blocking=False)
        if acquired:
            dynamodb_atomic.LOCK.release()
        result.append(not acquired)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]
