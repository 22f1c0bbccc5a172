"""The heartbeat reads a bounded part of its ledger partition, however long it has been running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from changeguard.domain.heartbeat import ARRIVED, DOWN, HEARTBEAT_KEY, SENT, UP, canary_id
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.services.heartbeat import HeartbeatService
from fakes import FakeClock, InMemoryLedger

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TICK = timedelta(minutes=15)
DAYS = 60  # about 11,500 entries: what two months of ticks leave in the partition


class Parameters:
    def __init__(self) -> None:
        self.puts: list[str] = []

    def put(self, name: str, value: str, description: str) -> None:
        self.puts.append(value)


def entry(key: str, at: datetime) -> LedgerEntry:
    return LedgerEntry(
        change_id=HEARTBEAT_KEY,
        entry=key,
        kind=EntryKind.HEARTBEAT,
        function="send_heartbeat",
        event_time=at,
        recorded_at=at,
    )


def history(ledger: InMemoryLedger, *, lost_after: datetime | None = None) -> None:
    """DAYS of ticks before NOW, every canary arrived (but those sent at or after ``lost_after``),
    and two outages long closed."""
    at = NOW - timedelta(days=DAYS)
    facts = [entry(f"{m}{n:06d}", at) for n in (1, 2) for m in (DOWN, UP)]
    while at < NOW:
        facts.append(entry(f"{SENT}{canary_id(at)}", at))
        if lost_after is None or at < lost_after:
            facts.append(entry(f"{ARRIVED}{canary_id(at)}", at + timedelta(minutes=2)))
        at += TICK
    assert ledger.append(facts)
    ledger.read = 0


def service(ledger: InMemoryLedger, parameters: Parameters) -> HeartbeatService:
    return HeartbeatService(
        function="send_heartbeat",
        ledger=ledger,
        parameters=parameters,
        parameter_name="/changeguard/heartbeat/prod",
        policy=lambda: Policy(heartbeat_grace_minutes=30),
        clock=FakeClock(NOW),
    )


def test_a_healthy_tick_reads_a_handful_of_entries_not_the_whole_partition():
    ledger, parameters = InMemoryLedger(), Parameters()
    history(ledger)
    outcome = service(ledger, parameters).tick(NOW)
    assert outcome.reasons == ["canary 2026-11-22T11:30:00Z arrived"]
    assert parameters.puts == ["2026-11-22T12:00:00Z"]
    assert ledger.read <= 12, ledger.read  # the due canary, those since and their arrivals, 4 outage facts


def test_a_missing_canary_is_found_and_alerted_once_from_the_same_bounded_read():
    ledger, parameters = InMemoryLedger(), Parameters()
    history(ledger, lost_after=NOW - timedelta(minutes=45))
    outcome = service(ledger, parameters).tick(NOW)
    assert outcome.reasons == ["canary 2026-11-22T11:30:00Z did not arrive within 30 minutes"]
    assert outcome.actions[0] == "heartbeat outage #3 opened"
    [alert] = [e for e in ledger.entries_for(HEARTBEAT_KEY) if e.entry.startswith("ALERT#")]
    assert alert.body["alert"]["details"]["last_arrival"] == "2026-11-22T11:02:00+00:00"
    ledger.read = 0
    again = service(ledger, parameters).tick(NOW + timedelta(seconds=5))
    assert again.reasons == ["canary 2026-11-22T11:30:00Z did not arrive either (outage #3)"]
    assert again.alert_ids == []
    assert ledger.read <= 12, ledger.read


# -- the adapter's key-range read against the embedded AWS -------------------------------------------
def test_the_dynamodb_ledger_reads_one_key_range_in_either_order_across_pages(aws):
    from changeguard.adapters.dynamodb import DynamoDBLedger
    from changeguard.domain.ledger import KEY_END

    ddb = aws.client("dynamodb")
    ddb.create_table(
        TableName="ledger",
        KeySchema=[{"AttributeName": "change_id", "KeyType": "HASH"}, {"AttributeName": "entry", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "change_id", "AttributeType": "S"},
            {"AttributeName": "entry", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    ledger = DynamoDBLedger("ledger", ddb)
    ticks = [NOW - TICK * n for n in range(10, 0, -1)]
    for at in ticks:
        assert ledger.append([entry(f"{SENT}{canary_id(at)}", at)])
        assert ledger.append([entry(f"{ARRIVED}{canary_id(at)}", at)])
    assert ledger.append([entry(f"{UP}000001", NOW), entry(f"{DOWN}000001", NOW)])

    def pages_of_three(params, **_):
        params["Limit"] = min(params.get("Limit", 3), 3)

    ddb.meta.events.register("provide-client-params.dynamodb.Query", pages_of_three)
    since = canary_id(ticks[3])
    sent = ledger.entries_between(HEARTBEAT_KEY, f"{SENT}{since}", f"{SENT}{KEY_END}")
    assert [e.entry for e in sent] == [f"{SENT}{canary_id(at)}" for at in ticks[3:]]  # 7 items, 3 pages
    newest = ledger.entries_between(HEARTBEAT_KEY, ARRIVED, f"{ARRIVED}{KEY_END}", newest_first=True, limit=1)
    assert [e.entry for e in newest] == [f"{ARRIVED}{canary_id(ticks[-1])}"]
    due = ledger.entries_between(HEARTBEAT_KEY, SENT, f"{SENT}{canary_id(ticks[4])}", newest_first=True, limit=2)
    assert [e.entry for e in due] == [f"{SENT}{canary_id(ticks[4])}", f"{SENT}{canary_id(ticks[3])}"]
    assert [e.entry for e in ledger.entries_between(HEARTBEAT_KEY, DOWN, f"{DOWN}{KEY_END}")] == [f"{DOWN}000001"]


def test_a_tick_stamped_in_the_future_is_rejected_before_it_sends_or_records_anything():
    """A tick's time is its canary's id: a future one would be a canary no run is due to check yet."""
    import pytest
    from changeguard.domain.errors import InvalidEventError

    ledger, parameters = InMemoryLedger(), Parameters()
    history(ledger)
    before = dict(ledger.items)
    event = {
        "version": "0",
        "id": "0d1e2f30-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": canary_id(NOW + timedelta(days=1)),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/changeguard-dev-heartbeat"],
        "detail": {},
    }
    with pytest.raises(InvalidEventError, match="after now"):
        service(ledger, parameters).handle(event)
    assert parameters.puts == [] and ledger.items == before
    assert service(ledger, parameters).handle(event | {"time": canary_id(NOW)}).actions == [
        f"sent canary {canary_id(NOW)}"
    ]
