"""The ledger's by-day index, write-sharded (issue 9).

Domain: where an item goes (stable, spread). Adapter, against the embedded AWS with the table as
template.yaml declares it: readers get every item of a day in index order across shards and pages,
whatever order the shards answer in, and after a change of the shard count.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from changeguard.adapters.dynamodb import BY_DAY_INDEX, DynamoDBLedger, entry_to_item
from changeguard.domain.errors import ConfigurationError
from changeguard.domain.ledger import DEFAULT_DAY_SHARDS, DayShards, EntryKind, LedgerEntry, day_shard_of
from changeguard.factory import ledger as build_ledger
from changeguard.services.evidence import DigestService, DigestStore
from changeguard.settings import Wiring
from changeguard_tools.embedded import EmbeddedAWS
from changeguard_tools.ledger_cli import backfill_day_shards
from changeguard_tools.template import Template, resolve
from fakes import FakeClock, InMemoryLedger, MemoryBucket, ShardedDayIndex

DAY = "2026-11-21"
AT = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
VERDICTS = ("AUTHORIZED", "NO_TICKET", "EMERGENCY", None)


def entry(
    n: int, *, day_offset: int = 0, kind: EntryKind = EntryKind.VERDICT, entry_name: str = "VERDICT"
) -> LedgerEntry:
    at = AT + timedelta(days=day_offset, minutes=n % 1440, seconds=n // 1440)
    verdict = VERDICTS[n % len(VERDICTS)] if kind is EntryKind.VERDICT else None
    return LedgerEntry(
        change_id=f"evt-{n:05d}",
        entry=entry_name,
        kind=kind,
        function="correlate_change",
        event_time=at,
        recorded_at=at + timedelta(seconds=3),
        verdict=verdict,
        account="111122223333",
        body={"n": n},
    )


def key(item: dict[str, Any]) -> tuple[str, str]:
    return item["change_id"]["S"], item["entry"]["S"]


# -- where an item goes ----------------------------------------------------------------------------
def test_a_day_spreads_over_the_shards_and_every_entry_of_a_change_shares_one() -> None:
    entries = [entry(n) for n in range(800)]
    shards = Counter(e.day_shard(DEFAULT_DAY_SHARDS) for e in entries)
    assert set(shards) == {f"{DAY}#{s:02d}" for s in range(DEFAULT_DAY_SHARDS)}
    mean = len(entries) / DEFAULT_DAY_SHARDS
    assert max(shards.values()) < 1.5 * mean and min(shards.values()) > 0.5 * mean, shards
    alert = entry(7, kind=EntryKind.ALERT, entry_name="ALERT#x")
    assert alert.day_shard(DEFAULT_DAY_SHARDS) == entry(7).day_shard(DEFAULT_DAY_SHARDS)


def test_the_shard_of_an_item_is_the_same_in_every_process() -> None:
    """Not Python's salted ``hash()``: another process (another Lambda sandbox, a retry) agrees."""
    ids = [f"evt-{n:05d}" for n in range(50)]
    here = [day_shard_of(c, DEFAULT_DAY_SHARDS) for c in ids]
    code = (
        "from changeguard.domain.ledger import day_shard_of\n"
        f"print([day_shard_of(c, {DEFAULT_DAY_SHARDS}) for c in {ids!r}])"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == str(here)
    assert len(set(here)) > 1


@pytest.mark.parametrize("text", ["0", "101", "16,", "abc", "", "16;8", "-4"])
def test_a_malformed_shard_count_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError):
        DayShards.parse(text)
    wiring = Wiring(function_name="f", ledger_table_name="t", parameter_path="/p/", ledger_day_shards=text)
    with pytest.raises(ConfigurationError):
        build_ledger(wiring)


def test_the_configured_counts_reach_the_adapter() -> None:
    env = {"CHANGEGUARD_FUNCTION": "f", "LEDGER_TABLE_NAME": "t", "PARAMETER_PATH": "/p/", "LEDGER_DAY_SHARDS": "32,16"}
    built = build_ledger(Wiring.from_env(env))
    assert built.day_shards.write == 32 and len(built.day_shards.keys(DAY)) == 32
    assert build_ledger(Wiring.from_env({k: v for k, v in env.items() if k != "LEDGER_DAY_SHARDS"})).day_shards == (
        DayShards(counts=(DEFAULT_DAY_SHARDS,))
    )


def ledger_table(parameters: dict[str, str]) -> dict[str, Any]:
    """Its keys and indexes as CloudFormation would create them with these parameters."""
    template = Template()
    props = template.resources["ChangeLedgerTable"]["Properties"]
    names = ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes")
    return resolve({name: props[name] for name in names}, template.context(parameters))


@pytest.mark.parametrize("step", ["keep", "drop"])
def test_an_older_stack_upgrades_one_index_per_update(step: str) -> None:
    """CloudFormation adds or deletes one global secondary index per update, not both: from the
    old ByDay index, "keep" only adds ByDayShard, and then "drop" only deletes ByDay."""
    before = {"ByDay"}  # the ledger's only index until issue 9
    props = ledger_table({"LedgerByDayIndex": step})
    names = {i["IndexName"] for i in props["GlobalSecondaryIndexes"]}
    previous = before if step == "keep" else {"ByDayShard", "ByDay"}
    assert len(names ^ previous) == 1 and "ByDayShard" in names
    # Every defined attribute is a key of the table or of an index, and every key is defined.
    keys = {k["AttributeName"] for k in props["KeySchema"]} | {
        k["AttributeName"] for i in props["GlobalSecondaryIndexes"] for k in i["KeySchema"]
    }
    assert {a["AttributeName"] for a in props["AttributeDefinitions"]} == keys
    assert ledger_table({}) == ledger_table({"LedgerByDayIndex": "drop"})  # new stacks: sharded only


# -- the adapter against the embedded AWS ----------------------------------------------------------
@pytest.fixture
def table(aws: EmbeddedAWS) -> tuple[Any, str]:
    """The ledger table exactly as template.yaml declares its keys and indexes."""
    props = ledger_table({})
    ddb = aws.client("dynamodb")
    ddb.create_table(
        TableName="ledger",
        KeySchema=props["KeySchema"],
        AttributeDefinitions=props["AttributeDefinitions"],
        GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
        BillingMode="PAY_PER_REQUEST",
    )
    return ddb, "ledger"


def small_pages(ddb: Any, limit: int = 3) -> list[str]:
    """Make every Query return at most ``limit`` items (as a large day's 1 MB pages would) and
    record the shard each one asked for."""
    asked: list[str] = []
    lock = threading.Lock()

    def hook(params: dict[str, Any], **_: Any) -> None:
        if params.get("IndexName") == BY_DAY_INDEX:
            params["Limit"] = limit
            with lock:
                asked.append(params["ExpressionAttributeValues"][":d"]["S"])

    ddb.meta.events.register("provide-client-params.dynamodb.Query", hook)
    return asked


def write(ledger: DynamoDBLedger, entries: list[LedgerEntry]) -> None:
    for n, e in enumerate(entries):
        if n % 5 == 0:  # a verdict and its alert in one transaction, as the correlator writes them
            alert = e.model_copy(update={"entry": "ALERT#1", "kind": EntryKind.ALERT, "verdict": None})
            assert ledger.append([e, alert])
        else:
            assert ledger.append([e])


def stored(ddb: Any, table: str) -> list[dict[str, Any]]:
    return [i for p in ddb.get_paginator("scan").paginate(TableName=table) for i in p.get("Items", [])]


def test_readers_get_every_item_of_the_day_in_index_order_across_shards_and_pages(table) -> None:
    ddb, name = table
    ledger = DynamoDBLedger(name, ddb)
    write(
        ledger,
        [entry(n) for n in range(120)] + [entry(1000 + 10 * n + d, day_offset=d) for n in range(5) for d in (-1, 1)],
    )
    items = stored(ddb, name)
    today = sorted((i for i in items if i["day"]["S"] == DAY), key=lambda i: i["index_key"]["S"])
    assert len({i["day_shard"]["S"] for i in today}) == DEFAULT_DAY_SHARDS  # the day is spread
    for i in items:  # each item sits in the shard its change hashes to
        assert i["day_shard"]["S"] == f"{i['day']['S']}#{day_shard_of(i['change_id']['S'], DEFAULT_DAY_SHARDS):02d}"

    asked = small_pages(ddb)
    read = ledger.items_on(DAY)
    # Exactly what the single ByDay partition answered before: the day's items in index_key order.
    assert [key(i) for i in read] == [key(i) for i in today] and len(read) == 120 + 24
    assert set(asked) == set(DayShards().keys(DAY)) and len(asked) > 2 * DEFAULT_DAY_SHARDS  # pages followed
    assert [e.change_id for e in ledger.entries_on(DAY)] == [i["change_id"]["S"] for i in today]

    emergency = ledger.entries_on(DAY, "EMERGENCY")
    assert [e.change_id for e in emergency] == [
        i["change_id"]["S"] for i in today if i.get("verdict", {}).get("S") == "EMERGENCY"
    ]
    assert len(emergency) == 30 and {e.kind for e in emergency} == {EntryKind.VERDICT}


class ShuffledShards:
    """The same client, but each shard's first page answers after a random delay: the shards
    complete in a different order on every run."""

    def __init__(self, ddb: Any, seed: int) -> None:
        self._ddb = ddb
        self._rng = random.Random(seed)
        self._delays: dict[str, float] = {}
        self._lock = threading.Lock()
        self.finished: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ddb, name)

    def get_paginator(self, operation: str) -> Any:
        real = self._ddb.get_paginator(operation)
        outer = self

        class Paginator:
            def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
                shard = kwargs["ExpressionAttributeValues"][":d"]["S"]
                with outer._lock:
                    delay = outer._delays.setdefault(shard, outer._rng.uniform(0, 0.03))
                time.sleep(delay)
                yield from real.paginate(**kwargs)
                with outer._lock:
                    outer.finished.append(shard)

        return Paginator()


def test_the_digest_is_the_same_whatever_order_the_shards_answer_in(table) -> None:
    ddb, name = table
    write(DynamoDBLedger(name, ddb), [entry(n) for n in range(60)])
    clock = FakeClock(datetime(2026, 11, 23, 4, 0, tzinfo=UTC))
    results, orders = [], []
    for seed in (1, 2, 3):
        shuffled = ShuffledShards(ddb, seed)
        ledger = DynamoDBLedger(name, shuffled)
        bucket = MemoryBucket()
        DigestService(function="write_digest", ledger=ledger, store=DigestStore(bucket), clock=clock).run(clock.at)
        results.append((ledger.items_on(DAY), bucket.objects[f"digests/{DAY}.json"]))
        orders.append(tuple(shuffled.finished[:DEFAULT_DAY_SHARDS]))
    assert len(set(orders)) > 1  # the shards really did answer in different orders
    assert results[0] == results[1] == results[2]
    # ... and it is the digest of the day's items in index order, as one unsharded read gave them.
    one_shard = ShardedDayIndex(stored(ddb, name), DayShards(counts=(DEFAULT_DAY_SHARDS,)))
    assert results[0][0] == one_shard.items_on(DAY)


def test_a_changed_shard_count_still_reads_the_items_written_before(table) -> None:
    ddb, name = table
    before = [entry(n) for n in range(40)]
    after = [entry(n) for n in range(40, 80)]
    write(DynamoDBLedger(name, ddb, DayShards.parse("16")), before)
    # Fewer shards now: new items go to shards 0..3, old ones stay where they are (up to 15).
    ledger = DynamoDBLedger(name, ddb, DayShards.parse("4,16"))
    write(ledger, after)
    expected = sorted(stored(ddb, name), key=lambda i: i["index_key"]["S"])
    assert {i["day_shard"]["S"] for i in expected if i["change_id"]["S"] >= "evt-00040"} <= set(
        DayShards.parse("4").keys(DAY)
    )
    assert [key(i) for i in ledger.items_on(DAY)] == [key(i) for i in expected]
    # Forgetting the old count would lose items: the history in the configuration is what keeps them.
    assert len(DynamoDBLedger(name, ddb, DayShards.parse("4")).items_on(DAY)) < len(expected)
    # More shards later: the old items are in shards the new count covers anyway.
    assert [key(i) for i in DynamoDBLedger(name, ddb, DayShards.parse("32,4,16")).items_on(DAY)] == [
        key(i) for i in expected
    ]


def test_items_written_before_the_sharded_index_are_backfilled_once(table) -> None:
    ddb, name = table
    entries = [entry(n) for n in range(30)]
    for e in entries:  # as the ledger stored them before issue 9: no day_shard
        item = entry_to_item(e)
        del item["day_shard"]
        ddb.put_item(TableName=name, Item=item)
    ledger = DynamoDBLedger(name, ddb)
    assert ledger.items_on(DAY) == []  # invisible to the new index
    for n in range(30, 35):  # and some written since
        assert ledger.append([entry(n)])

    assert backfill_day_shards(ddb, name, DayShards(), dry_run=True).updated == 0
    assert len(ledger.items_on(DAY)) == 5  # a dry run changes nothing
    result = backfill_day_shards(ddb, name, DayShards())
    assert (result.scanned, result.updated) == (30, 30)
    by_key = {key(i): i for i in stored(ddb, name)}
    for e in entries:  # the content is untouched: its stored hash still matches
        item = by_key[(e.change_id, e.entry)]
        assert item["content_hash"]["S"] == e.content_hash() and item["day_shard"]["S"] == e.day_shard(16)
    expected = sorted(entries + [entry(n) for n in range(30, 35)], key=lambda e: e.index_key)
    assert [e.change_id for e in ledger.entries_on(DAY)] == [e.change_id for e in expected]
    assert backfill_day_shards(ddb, name, DayShards()).scanned == 0  # re-running does nothing


def test_the_in_memory_ledger_reads_a_day_like_the_index() -> None:
    fake = InMemoryLedger(DayShards.parse("16"))
    entries = [entry(n) for n in range(40)] + [entry(1, day_offset=1)]
    for e in entries:
        fake.append([e])
    fake.day_shards = DayShards.parse("4,16")
    assert fake.entries_on(DAY) == sorted(entries[:40], key=lambda e: e.index_key)
    fake.day_shards = DayShards.parse("4")
    assert len(fake.entries_on(DAY)) < 40


def test_the_backfill_command_reports_what_it_did_and_rejects_a_bad_count(table, capsys) -> None:
    from changeguard_tools.cli import main

    ddb, name = table
    for n in range(3):
        item = entry_to_item(entry(n))
        del item["day_shard"]
        ddb.put_item(TableName=name, Item=item)
    assert main(["ledger", "backfill-day-shards", "--table", name, "--day-shards", "8,16"]) == 0
    assert "3 item(s) without day_shard, indexed 3 over 8 shard(s)" in capsys.readouterr().out
    assert len(DynamoDBLedger(name, ddb, DayShards.parse("8,16")).items_on(DAY)) == 3
    with pytest.raises(SystemExit, match="day-shards"):
        main(["ledger", "backfill-day-shards", "--table", name, "--day-shards", "0"])
    with pytest.raises(SystemExit, match="day-shards"):
        main(["report", "--from", DAY, "--to", DAY, "--table", name, "--day-shards", "x"])
