"""``changeguard ledger backfill-day-shards``: index items written before the by-day index was sharded.

Issue 9 replaced the ledger's ``ByDay`` index (keyed by ``day``) with ``ByDayShard`` (keyed by
``day_shard``). Items written before carry no ``day_shard``, so the new index does not hold them and
reports, digests and the follow-up would not see them. This operator command, run once the update
with ``LedgerByDayIndex=keep`` has made ``ByDayShard`` ACTIVE (README, "Organization scale"), with the
caller's own AWS credentials, gives each such item its ``day_shard`` with
``UpdateItem``. It adds only that attribute, under a condition (the item exists and has none yet),
so it can be re-run and never touches what an item records: ``content_hash`` covers the entry, not
where it is indexed. The stream filter of ``publish_alerts`` passes only ``INSERT`` records, so the
updates publish nothing again.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

from changeguard.domain.ledger import DayShards, day_shard_key, day_shard_of


@dataclass
class BackfillResult:
    scanned: int = 0
    updated: int = 0
    skipped: int = 0  # set meanwhile by a writer or another run, or deleted


def backfill_day_shards(ddb: Any, table: str, day_shards: DayShards, *, dry_run: bool = False) -> BackfillResult:
    """Give every ledger item without ``day_shard`` the shard of the current write count."""
    result = BackfillResult()
    pages = ddb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression="attribute_not_exists(day_shard) AND attribute_exists(#d)",
        ProjectionExpression="change_id, #e, #d",
        ExpressionAttributeNames={"#e": "entry", "#d": "day"},
    )
    for page in pages:
        for item in page.get("Items", []):
            result.scanned += 1
            change_id = item["change_id"]["S"]
            shard = day_shard_key(item["day"]["S"], day_shard_of(change_id, day_shards.write))
            if dry_run:
                continue
            try:
                ddb.update_item(
                    TableName=table,
                    Key={"change_id": item["change_id"], "entry": item["entry"]},
                    UpdateExpression="SET day_shard = :s",
                    ConditionExpression="attribute_exists(change_id) AND attribute_not_exists(day_shard)",
                    ExpressionAttributeValues={":s": {"S": shard}},
                )
            except ddb.exceptions.ConditionalCheckFailedException:
                result.skipped += 1
                continue
            result.updated += 1
    return result


def day_shards_arg(value: str | None) -> DayShards:
    """``--day-shards``, else ``$LEDGER_DAY_SHARDS``, else the default; malformed: exit with the reason."""
    from changeguard.domain.errors import ConfigurationError

    text = value or os.environ.get("LEDGER_DAY_SHARDS")
    try:
        return DayShards.parse(text) if text else DayShards()
    except ConfigurationError as exc:
        raise SystemExit(f"changeguard: --day-shards: {exc}") from exc


def cmd_backfill(args: argparse.Namespace) -> int:
    import boto3

    table = args.table or os.environ.get("LEDGER_TABLE_NAME")
    if not table:
        raise SystemExit("give --table or set LEDGER_TABLE_NAME (the stack's ChangeLedgerTableName output)")
    shards = day_shards_arg(args.day_shards)
    endpoint = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    ddb = boto3.client("dynamodb", endpoint_url=endpoint) if endpoint else boto3.client("dynamodb")
    result = backfill_day_shards(ddb, table, shards, dry_run=args.dry_run)
    verb = "would index" if args.dry_run else "indexed"
    count = result.scanned if args.dry_run else result.updated
    sys.stdout.write(
        f"{table}: {result.scanned} item(s) without day_shard, {verb} {count} over {shards.write} shard(s)"
        f"{f', {result.skipped} changed meanwhile' if result.skipped else ''}\n"
    )
    return 0


def add_commands(sub: Any) -> None:
    """Register ``ledger backfill-day-shards`` on the ``changeguard`` command's subparsers."""
    ledger = sub.add_parser("ledger", help="maintain the change ledger table")
    lsub = ledger.add_subparsers(dest="action", required=True)
    backfill = lsub.add_parser("backfill-day-shards", help="index items written before the by-day index was sharded")
    backfill.add_argument("--table", help="ledger table (default: $LEDGER_TABLE_NAME)")
    backfill.add_argument("--day-shards", help="the stack's LedgerDayShards (default: $LEDGER_DAY_SHARDS, else 16)")
    backfill.add_argument("--endpoint-url", help="an AWS endpoint other than AWS's (an embedded AWS, LocalStack)")
    backfill.add_argument("--dry-run", action="store_true", help="count the items, change nothing")
    backfill.set_defaults(func=cmd_backfill)
