"""The ``changeguard`` command: demo, invoke, replay, tickets."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from changeguard_tools.template import REPO_ROOT


def iso_time(value: str) -> datetime:
    """``--now``'s argparse type: an ISO 8601 time, UTC when it names no offset.

    Checked as the arguments are parsed, so a typo is a usage error (exit 2) before any work,
    never a ValueError traceback from deep in a run.
    """
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r} (e.g. 2026-11-21T10:00:00Z)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@contextlib.contextmanager
def embedded_endpoint(url: str | None) -> Iterator[str]:
    """An external endpoint if given, else a fresh embedded AWS for this run."""
    if url:
        yield url
        return
    from changeguard_tools.embedded.server import EmbeddedAWS

    aws = EmbeddedAWS()
    try:
        yield aws.start()
    finally:
        aws.stop()


def _harness(endpoint: str | None, args: argparse.Namespace, log_stream: TextIO) -> Any:
    from changeguard_tools.harness import FixedClock, Harness

    clock = FixedClock(args.now) if getattr(args, "now", None) else None
    overrides = {"EnforcementMode": args.mode} if getattr(args, "mode", None) else {}
    return Harness(endpoint, parameters=overrides, clock=clock, log_stream=log_stream)


def cmd_replay(args: argparse.Namespace) -> int:
    from changeguard_tools import fixtures
    from changeguard_tools.embedded.server import in_process_aws
    from changeguard_tools.replay import ReplayReport, read_items, replay

    out = sys.stdout
    sys.stdout = sys.stderr  # handlers' logs and metrics never reach the JSON stream
    try:
        # In-process: every call the handlers make is a real boto3 call answered by moto in this
        # thread, without the embedded server's HTTP round trip (most of a call's cost).
        with in_process_aws():
            harness = _harness(None, args, _log_stream(args))
            harness.provision()
            if args.fixtures:
                fixtures.seed(harness, fixtures.load(args.fixtures))
            if args.mode:
                harness.put_parameter("enforcement-mode", args.mode)
            report = ReplayReport()  # the clock starts once the stack is up
            for line, rules in replay(harness, read_items(args.paths)):
                report.add(line, rules)
                if args.summary:
                    continue
                if args.json:
                    out.write(json.dumps(line) + "\n")
                    out.flush()
                else:
                    _print_human(line, out)
        if args.report:
            Path(args.report).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        if args.summary and args.json:
            out.write(json.dumps(report.to_json()) + "\n")
        elif args.summary:
            report.write_text(out)
        else:
            report.write_text(sys.stderr)
    finally:
        sys.stdout = out
    return 0


def _log_stream(args: argparse.Namespace) -> TextIO:
    """Where handler logs go: stderr, or nowhere with ``--quiet`` (a load replay's logs are noise)."""
    if getattr(args, "quiet", False):
        return open(os.devnull, "w")
    return sys.stderr


def _print_human(line: dict[str, Any], out: TextIO) -> None:
    routed = ", ".join(line["routed_to"]) or "no rule matched"
    out.write(f"{line['source_file']}: {line.get('detail_type') or '-'} -> {routed}\n")
    for outcome in line["outcomes"]:
        out.write(f"    {outcome['function']}: {outcome['verdict'] or '-'} {'; '.join(outcome['actions'])}\n")
        for alert in outcome["alerts"]:
            out.write(f"      alert [{alert['severity']}] {alert['subject']}\n")
    if line.get("error"):
        out.write(f"    error: {line['error']}\n")


def cmd_invoke(args: argparse.Namespace) -> int:
    event_path = Path(args.event)
    event = json.loads(event_path.read_text()) if args.event != "-" else json.load(sys.stdin)
    url = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    out = sys.stdout
    sys.stdout = sys.stderr
    try:
        with embedded_endpoint(url) as endpoint:
            harness = _harness(endpoint, args, sys.stderr)
            harness.provision()
            function = harness_function(harness, args.function)
            inv = harness.invoke(function, event)
            harness.pump_streams()
            alerts = harness.drain_alerts()
            for alert in alerts:
                print(f"alert [{alert.severity}] {alert.subject}", file=sys.stderr)
            out.write(json.dumps(inv.result, indent=2, default=str) + "\n")
            if inv.error:
                print(f"error: {inv.error}", file=sys.stderr)
                return 1
    finally:
        sys.stdout = out
    return 0


def harness_function(harness: Any, name: str) -> str:
    """Accept the logical id (CorrelateChangeFunction) or the folder name (correlate_change)."""
    for logical_id, spec in harness.functions.items():
        if name in (logical_id, spec.name, spec.code_uri.name):
            return str(logical_id)
    raise SystemExit(f"unknown function {name!r}; known: {', '.join(harness.functions)}")


def cmd_demo(args: argparse.Namespace) -> int:
    from changeguard_tools.demo import run_demo

    return int(run_demo(out_dir=Path(args.out)))


def cmd_tickets(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from changeguard_tools.tickets import TicketBook, TicketBookError

    table = args.table or os.environ.get("TICKET_TABLE_NAME")
    if not table:
        raise SystemExit("give --table or set TICKET_TABLE_NAME (the stack's TicketTableName output)")
    try:
        book = TicketBook(table, boto3.client("dynamodb"), boto3.client("sts"))
        if args.action == "add":
            book.add(
                args.ticket_id,
                title=args.title or "",
                type=args.type,
                requested_by=args.requested_by,
                window_start=args.window_start,
                window_end=args.window_end,
                affected_resources=args.resource or (),
                test_evidence=args.test_evidence,
                rollback_plan=args.rollback_plan,
            )
            print(f"added {args.ticket_id}")
        elif args.action == "approve":
            who = book.approve(args.ticket_id)
            print(f"{args.ticket_id} approved by {who}")
        else:
            for ticket in book.list():
                approvers = ", ".join(a.approver for a in ticket.approvals) or "no approvals"
                print(f"{ticket.ticket_id}\t{ticket.type}\t{ticket.status}\t{ticket.title or ''}\t{approvers}")
    except (TicketBookError, ClientError, BotoCoreError) as exc:
        # An operator's mistake or AWS's refusal (AccessDenied, no such table, no credentials):
        # one line saying which, a non-zero exit, and no traceback.
        raise SystemExit(f"changeguard tickets {args.action}: error: {exc}") from exc
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="changeguard", description="ChangeGuard: SOC 2 change management on AWS")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the scripted scenario against an embedded AWS")
    demo.add_argument("--out", default=str(REPO_ROOT / "demo-out"), help="folder for the evidence pack and logs")
    demo.set_defaults(func=cmd_demo)

    invoke = sub.add_parser("invoke", help="Docker-free twin of `sam local invoke`")
    invoke.add_argument("function", help="logical id (CorrelateChangeFunction) or folder (correlate_change)")
    invoke.add_argument("-e", "--event", required=True, help="event JSON file, or - for stdin")
    invoke.add_argument("--endpoint-url", help="an external AWS endpoint (moto server, LocalStack, AWS)")
    invoke.add_argument("--mode", choices=["observe", "enforce"])
    invoke.add_argument("--now", type=iso_time, help="fix the clock (ISO 8601)")
    invoke.set_defaults(func=cmd_invoke)

    replay = sub.add_parser("replay", help="replay events through the template's rules to the handlers")
    replay.add_argument("paths", nargs="+", help="JSON files or directories (read recursively, in name order)")
    replay.add_argument("--json", action="store_true", help="one JSON object per input event on stdout")
    replay.add_argument("--fixtures", help="YAML/JSON fixtures to seed the embedded AWS with")
    replay.add_argument("--mode", choices=["observe", "enforce"], help="override the enforcement mode")
    replay.add_argument("--now", type=iso_time, help="fix the clock (ISO 8601)")
    replay.add_argument(
        "--summary", action="store_true", help="no line per event: one report of counters at the end (JSON with --json)"
    )
    replay.add_argument("--report", help="also write the report of counters (JSON) to this file")
    replay.add_argument("--quiet", action="store_true", help="discard the handlers' logs (default: stderr)")
    replay.set_defaults(func=cmd_replay)

    tickets = sub.add_parser("tickets", help="manage the DynamoDB ticket table")
    tickets.add_argument("--table", help="ticket table name (default: $TICKET_TABLE_NAME)")
    tsub = tickets.add_subparsers(dest="action", required=True)
    add = tsub.add_parser("add")
    add.add_argument("ticket_id")
    add.add_argument("--title")
    add.add_argument("--type", default="normal", choices=["normal", "standard", "emergency"])
    add.add_argument("--requested-by")
    add.add_argument("--window-start")
    add.add_argument("--window-end")
    add.add_argument("--resource", action="append", help="affected resource ARN (repeatable)")
    add.add_argument("--test-evidence")
    add.add_argument("--rollback-plan")
    approve = tsub.add_parser("approve", help="approve as the caller's own STS identity")
    approve.add_argument("ticket_id")
    tsub.add_parser("list")
    tickets.set_defaults(func=cmd_tickets)

    from changeguard_tools.reports_cli import add_commands  # issue 7: `report` and `evidence`

    add_commands(sub)
    from changeguard_tools.ledger_cli import add_commands as add_ledger_commands  # issue 9

    add_ledger_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from changeguard_tools.fixtures import FixtureError

    try:
        return int(args.func(args))
    except (FixtureError, FileNotFoundError, IsADirectoryError, json.JSONDecodeError) as exc:
        # An operator's mistake (a missing file, a malformed fixtures file): say so, no traceback.
        parser.exit(2, f"changeguard: error: {exc}\n")


if __name__ == "__main__":
    raise SystemExit(main())
