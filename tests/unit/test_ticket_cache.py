"""The ticket lookup cache every source shares: short-lived, misses cached too, unsafe ids never sent."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from changeguard.adapters import cache as cache_module
from changeguard.adapters.cache import CachedTicketSource, TtlCache
from changeguard.adapters.dynamodb import TICKET_CACHE_SECONDS, DynamoDBTicketSource
from changeguard.domain.errors import TicketUnreadableError
from changeguard.domain.tickets import Ticket
from fakes import create_ticket_table
from moto import mock_aws


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cache_module.time, "monotonic", fake)
    return fake


class CountingSource(CachedTicketSource):
    name = "counting"

    def __init__(self, answers: dict[str, Ticket | None], seconds: float = 5.0) -> None:
        super().__init__(seconds)
        self.answers = answers
        self.fetched: list[str] = []

    def _fetch(self, ticket_id: str) -> Ticket | None:
        self.fetched.append(ticket_id)
        return self.answers.get(ticket_id)

    def _accepts(self, ticket_id: str) -> bool:
        return ticket_id.isalnum()


def test_ttl_cache_tells_a_cached_none_from_a_miss_and_forgets_after_its_lifetime(clock: Clock) -> None:
    cache = TtlCache(seconds=5)
    assert cache.get("k") == (False, None)
    cache.put("k", None)
    assert cache.get("k") == (True, None)
    clock.now += 5.5
    assert cache.get("k") == (False, None)


def test_a_ticket_is_read_once_while_cached_and_again_after_the_lifetime(clock: Clock) -> None:
    source = CountingSource({"CHG1": Ticket(ticket_id="CHG1", source="counting")})
    first = source.get("CHG1")
    assert first is not None and first.ticket_id == "CHG1"
    assert source.get("CHG1") == first
    assert source.fetched == ["CHG1"]
    clock.now += 6
    source.get("CHG1")
    assert source.fetched == ["CHG1", "CHG1"]


def test_a_missing_ticket_is_cached_as_missing_and_clear_cache_forgets_it(clock: Clock) -> None:
    source = CountingSource({})
    assert source.get("CHG2") is None
    assert source.get("CHG2") is None
    assert source.fetched == ["CHG2"]
    source.clear_cache()
    source.get("CHG2")
    assert source.fetched == ["CHG2", "CHG2"]


def test_an_id_the_source_does_not_accept_is_not_found_without_a_call(clock: Clock) -> None:
    source = CountingSource({"CHG1^OR": Ticket(ticket_id="CHG1^OR", source="counting")})
    assert source.get("CHG1^OR") is None
    assert source.fetched == []


@mock_aws
def test_dynamodb_tickets_see_an_approval_recorded_after_the_cache_lifetime(clock: Clock) -> None:
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    create_ticket_table(ddb)
    ddb.put_item(TableName="tickets", Item={"ticket_id": {"S": "CHG9"}, "record": {"S": "TICKET"}})
    source = DynamoDBTicketSource("tickets", ddb=ddb)
    before = source.get("CHG9")
    assert before is not None and before.approvals == ()
    ddb.put_item(
        TableName="tickets",
        Item={"ticket_id": {"S": "CHG9"}, "record": {"S": "APPROVAL#1"}, "approver": {"S": "arn:aws:sts::1:x/alice"}},
    )
    cached = source.get("CHG9")
    assert cached is not None and cached.approvals == ()
    clock.now += TICKET_CACHE_SECONDS + 0.1
    after = source.get("CHG9")
    assert after is not None and [a.approver for a in after.approvals] == ["arn:aws:sts::1:x/alice"]


@mock_aws
def test_dynamodb_ticket_times_without_an_offset_are_utc_and_unreadable_ones_an_error(clock: Clock) -> None:
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    create_ticket_table(ddb)
    ddb.put_item(
        TableName="tickets",
        Item={"ticket_id": {"S": "CHG7"}, "record": {"S": "TICKET"}, "window_start": {"S": "2026-11-21T08:00:00"}},
    )
    ddb.put_item(
        TableName="tickets",
        Item={
            "ticket_id": {"S": "CHG7"},
            "record": {"S": "APPROVAL#1"},
            "approver": {"S": "alice"},
            "approved_at": {"S": "2026-11-21T07:30:00"},
        },
    )
    ticket = DynamoDBTicketSource("tickets", ddb=ddb).get("CHG7")
    assert ticket is not None and ticket.window_start == datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    assert ticket.approvals[0].approved_at == datetime(2026, 11, 21, 7, 30, tzinfo=UTC)
    ddb.put_item(
        TableName="tickets",
        Item={"ticket_id": {"S": "CHG8"}, "record": {"S": "TICKET"}, "window_end": {"S": "tomorrow evening"}},
    )
    with pytest.raises(TicketUnreadableError, match="window_end is not an ISO 8601 time"):
        DynamoDBTicketSource("tickets", ddb=ddb).get("CHG8")


@mock_aws
@pytest.mark.parametrize(
    ("head", "approval"),
    [
        ({"status": {"S": "Approved"}}, None),  # hand-written: the enum is lower case
        ({"type": {"S": "in-progress"}}, None),
        ({}, {"approver": {"N": "7"}}),  # an approver that is not a string
    ],
    ids=["status", "type", "approver"],
)
def test_a_hand_edited_ticket_item_is_that_tickets_error_not_a_crash(
    clock: Clock, head: dict[str, object], approval: dict[str, object] | None
) -> None:
    """A bare ValueError would crash the correlator (no verdict) and every reconciliation run. The
    ticket's own error (the table answered: no outage) makes the change UNVERIFIED by itself,
    judged again once the item is fixed."""
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    create_ticket_table(ddb)
    ddb.put_item(TableName="tickets", Item={"ticket_id": {"S": "CHG9"}, "record": {"S": "TICKET"}, **head})
    if approval is not None:
        ddb.put_item(TableName="tickets", Item={"ticket_id": {"S": "CHG9"}, "record": {"S": "APPROVAL#1"}, **approval})
    with pytest.raises(TicketUnreadableError, match="ticket table: not a ticket item"):
        DynamoDBTicketSource("tickets", ddb=ddb).get("CHG9")
