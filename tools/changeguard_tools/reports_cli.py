"""``changeguard report`` and ``changeguard evidence``: KPI reports and evidence packs from the ledger.

Both read a deployed ledger (``--table`` or ``$LEDGER_TABLE_NAME``) with the caller's AWS
credentials, and verify it against the daily digests in the evidence bucket when one is given
(``--bucket`` or ``$EVIDENCE_BUCKET_NAME``; the stack's ``EvidenceBucketName`` output)::

    changeguard report --from 2026-11-01 --to 2026-11-30
    changeguard evidence --period 2026-Q3 --out audit/     # default folder: evidence-out/

The demo calls :func:`demo_evidence` to end with its scenario's KPI table and evidence pack.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from changeguard.adapters.dynamodb import DynamoDBLedger, DynamoDBTicketSource
from changeguard.adapters.s3 import EvidenceBucket
from changeguard.domain.digest import SETTLE
from changeguard.domain.errors import ConfigurationError
from changeguard.domain.kpis import KpiTargets, Period, PeriodError
from changeguard.domain.ledger import DayShards, utc
from changeguard.services.evidence import DigestStore, EvidencePack, EvidenceService, LocalFolder
from changeguard.services.report import kpi_table_text, kpis_json

from changeguard_tools.cli import iso_time
from changeguard_tools.ledger_cli import day_shards_arg


class _Clock:
    """The wall clock, or the fixed time of ``--now`` (which days count as settled for the digests)."""

    def __init__(self, at: datetime | None = None) -> None:
        self.at = utc(at) if at else None

    def now(self) -> datetime:
        return self.at or datetime.now(UTC)


def _client(service: str, endpoint_url: str | None) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=endpoint_url) if endpoint_url else boto3.client(service)


def _targets(value: str | None) -> KpiTargets:
    if not value:
        return KpiTargets()
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return KpiTargets.from_overrides(json.loads(text))
    except (ValueError, ConfigurationError) as exc:
        raise SystemExit(f"changeguard: --targets: {exc}") from exc


def _service(args: argparse.Namespace) -> EvidenceService:
    table = args.table or os.environ.get("LEDGER_TABLE_NAME")
    if not table:
        raise SystemExit("give --table or set LEDGER_TABLE_NAME (the stack's ChangeLedgerTableName output)")
    endpoint = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    ddb = _client("dynamodb", endpoint)
    bucket_name = args.bucket or os.environ.get("EVIDENCE_BUCKET_NAME")
    digests = None
    source = f"ledger table {table}"
    if bucket_name:
        owner = args.bucket_owner or str(_client("sts", endpoint).get_caller_identity()["Account"])
        bucket = EvidenceBucket(bucket_name, owner, s3=_client("s3", endpoint))
        digests = DigestStore(bucket)
        source += f", digests in {bucket.location}"
    ticket_table = args.ticket_table or os.environ.get("TICKET_TABLE_NAME")
    tickets = DynamoDBTicketSource(ticket_table, ddb=ddb) if ticket_table else None
    targets = _targets(args.targets)
    return EvidenceService(
        ledger=DynamoDBLedger(table, ddb=ddb, day_shards=day_shards_arg(args.day_shards)),
        digests=digests,
        tickets=tickets,
        targets=lambda: targets,
        clock=_Clock(args.now),
        source=source,
    )


def _period(args: argparse.Namespace) -> Period:
    try:
        if getattr(args, "period", None):
            return Period.parse(args.period)
        return Period.between(date.fromisoformat(args.from_), date.fromisoformat(args.to))
    except (PeriodError, ValueError) as exc:
        raise SystemExit(f"changeguard: {exc}") from exc


def _refuse_stale(target: Path, overwrite: bool) -> None:
    """Refuse a folder that holds an earlier pack, unless ``--overwrite`` says to replace it.

    Written over file by file, an earlier pack's files that the new one does not have (its
    ``digest-verification.*`` when the new run has no ``--bucket``) would stay beside the new
    ``changes.csv``, outside the new manifest: an auditor would read a verification of another
    population.
    """
    if target.exists() and not target.is_dir():
        raise SystemExit(f"changeguard: {target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise SystemExit(
            f"changeguard: {target} is not empty (an earlier pack?): give --overwrite to replace it, or another --out"
        )


def _write(pack: EvidencePack, folder: Path, *, overwrite: bool = False) -> Path:
    """Write the pack to ``<folder>/<period>/``, which then holds this pack's files and no others.

    The pack is built in a staging folder beside it and renamed into place, so that a failed
    write leaves the earlier pack as it was, not half replaced.
    """
    target = folder / pack.report.period.label
    _refuse_stale(target, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the pack keeps the umask's permissions, not mkdtemp's 0700.
    staging = folder / f".{target.name}.{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        pack.write(LocalFolder(staging), "")
        if target.exists():
            earlier = folder / f".{target.name}.{uuid.uuid4().hex}.old"
            target.rename(earlier)
            try:
                staging.rename(target)
            except OSError:
                earlier.rename(target)
                raise
            shutil.rmtree(earlier)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _build(args: argparse.Namespace, period: Period) -> EvidencePack:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return _service(args).build(period)
    except (ClientError, BotoCoreError) as exc:  # a wrong table or bucket name, no credentials: say so
        raise SystemExit(f"changeguard: {exc}") from exc


def cmd_report(args: argparse.Namespace) -> int:
    period = _period(args)
    if args.out:  # before reading the ledger: a refusal should cost nothing
        _refuse_stale(Path(args.out) / period.label, args.overwrite)
    pack = _build(args, period)
    report = pack.report
    out: TextIO = sys.stdout
    if args.json:
        out.write(kpis_json(report).decode())
    else:
        out.write(kpi_table_text(report) + "\n")
        if report.verification is not None:
            out.write(f"Ledger digests: {report.verification.summary}\n")
    if args.out:
        folder = _write(pack, Path(args.out), overwrite=args.overwrite)
        print(f"report written to {folder}/ (report.html, kpis.csv, changes.csv, ...)", file=sys.stderr)
    return 2 if args.strict and report.missed else 0


def cmd_evidence(args: argparse.Namespace) -> int:
    period = _period(args)
    _refuse_stale(Path(args.out) / period.label, args.overwrite)  # before reading the ledger
    pack = _build(args, period)
    folder = _write(pack, Path(args.out), overwrite=args.overwrite)
    report = pack.report
    sys.stdout.write(kpi_table_text(report) + "\n\n")
    sys.stdout.write(f"Evidence pack {period.label} written to {folder}/: {', '.join(sorted(pack.files))}\n")
    verification = report.verification
    sys.stdout.write(f"Ledger digests: {verification.summary if verification else 'not verified (no --bucket)'}\n")
    return 1 if verification is not None and not verification.ok else 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", help="ledger table (default: $LEDGER_TABLE_NAME)")
    parser.add_argument("--bucket", help="evidence bucket with the daily digests (default: $EVIDENCE_BUCKET_NAME)")
    parser.add_argument("--bucket-owner", help="account that must own the bucket (default: the caller's)")
    parser.add_argument("--ticket-table", help="DynamoDB ticket table, for approvals (default: $TICKET_TABLE_NAME)")
    parser.add_argument("--targets", help='KPI targets as JSON ({"change_success_rate": 97}) or @file.json')
    parser.add_argument("--endpoint-url", help="an AWS endpoint other than AWS's (an embedded AWS, LocalStack)")
    parser.add_argument("--now", type=iso_time, help="verify the digests as of this time (ISO 8601; default: now)")
    parser.add_argument(
        "--day-shards", help="the stack's LedgerDayShards, e.g. 32,16 (default: $LEDGER_DAY_SHARDS, else 16)"
    )


def add_commands(sub: Any) -> None:
    """Register ``report`` and ``evidence`` on the ``changeguard`` command's subparsers."""
    report = sub.add_parser("report", help="KPI report of a period, computed from the ledger")
    report.add_argument("--from", dest="from_", required=True, metavar="DATE", help="first day (YYYY-MM-DD, UTC)")
    report.add_argument("--to", required=True, metavar="DATE", help="last day, included (YYYY-MM-DD, UTC)")
    report.add_argument("--out", help="also write the report (HTML, CSV, JSON) to this folder")
    report.add_argument("--overwrite", action="store_true", help="replace <out>/<period>/ if it holds files")
    report.add_argument("--json", action="store_true", help="print kpis.json instead of the table")
    report.add_argument("--strict", action="store_true", help="exit 2 when a KPI misses its target")
    _common(report)
    report.set_defaults(func=cmd_report)

    evidence = sub.add_parser("evidence", help="write a period's evidence pack to a local folder")
    evidence.add_argument("--period", required=True, help="2026-Q3, 2026-11, 2026-W47, 2026 or 2026-11-01..2026-11-30")
    evidence.add_argument("--out", default="evidence-out", help="folder; the pack goes to <out>/<period>/")
    evidence.add_argument(
        "--overwrite", action="store_true", help="replace <out>/<period>/ if it holds files (else refused)"
    )
    _common(evidence)
    evidence.set_defaults(func=cmd_evidence)


# -- the demo's ending ---------------------------------------------------------------------------
def _quarter_of(day: date) -> Period:
    return Period.parse(f"{day.year}-Q{(day.month - 1) // 3 + 1}")


def demo_evidence(harness: Any, out_dir: Path, out: TextIO) -> Period | None:
    """After the scenario: digest its days (the scheduled function), then print the KPI table of the
    scenario's quarter and write its evidence pack to ``<out_dir>/evidence/<quarter>/``."""
    ddb = harness.admin_client("dynamodb")
    table = str(harness.ctx.refs["ChangeLedgerTable"])
    days = sorted(
        {
            date.fromisoformat(item["day"]["S"])
            for page in ddb.get_paginator("scan").paginate(
                TableName=table, ProjectionExpression="#d", ExpressionAttributeNames={"#d": "day"}
            )
            for item in page.get("Items", [])
        }
    )
    if not days:
        out.write("No ledger entries: no KPI table, no evidence pack.\n\n")
        return None
    # Let the scenario's last day settle, then run the daily digest as its schedule would.
    settled = (
        utc(datetime(days[-1].year, days[-1].month, days[-1].day)) + timedelta(days=1) + SETTLE + timedelta(hours=1)
    )
    if harness.clock.now() < settled:
        harness.clock.set(settled)
        harness.refresh_clock()
    digest = harness.run_schedule("WriteDigestFunction")
    if digest["error"]:
        raise RuntimeError(f"the daily digest failed: {digest['error']}")
    bucket = EvidenceBucket(str(harness.ctx.refs["EvidenceBucket"]), harness.ctx.account, s3=harness.admin_client("s3"))
    shards = DayShards.parse(str(harness.functions["WriteDigestFunction"].environment["LEDGER_DAY_SHARDS"]))
    service = EvidenceService(
        ledger=DynamoDBLedger(table, ddb=ddb, day_shards=shards),
        digests=DigestStore(bucket),
        tickets=DynamoDBTicketSource(str(harness.ctx.refs["TicketTable"]), ddb=ddb),
        targets=KpiTargets,
        clock=harness.clock,
        source=f"the demo's ledger ({table}), digests in {bucket.location}",
    )
    period = _quarter_of(days[-1])
    pack = service.build(period)
    folder = _write(pack, out_dir / "evidence", overwrite=True)  # the demo's own output, rebuilt each run
    shown = os.path.relpath(folder) if folder.is_absolute() and Path.cwd() in folder.parents else str(folder)
    verification = pack.report.verification
    out.write(kpi_table_text(pack.report) + "\n\n")
    out.write(f"Evidence pack for {period.label} written to {shown}/ ({len(pack.files)} files: report.html,")
    out.write(
        " changes.csv, unauthorized.csv, emergency.csv, rolled_back.csv, kpis.csv, digest-verification.json, ...)\n"
    )
    out.write(f"Ledger digests: {verification.summary if verification else 'not verified'}\n\n")
    return period
