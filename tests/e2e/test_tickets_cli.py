"""`changeguard tickets` against the embedded AWS: bad input is a clear error that writes nothing.

Whatever `tickets add` stores, the correlator's ticket source must read back: an unreadable window
makes the ticket unreadable, and every change under it UNVERIFIED with its own alert.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from changeguard.adapters.dynamodb import DynamoDBTicketSource
from changeguard_tools import cli
from changeguard_tools.embedded import EmbeddedAWS
from fakes import create_ticket_table

TABLE = "changeguard-dev-tickets"


@pytest.fixture
def ddb(aws: EmbeddedAWS) -> Any:
    client = aws.client("dynamodb")
    create_ticket_table(client, TABLE)
    return client


def tickets(*args: str) -> int:
    return cli.main(["tickets", "--table", TABLE, *args])


def error_of(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run a command that must fail: its message, checked to be one line with no traceback."""
    with pytest.raises(SystemExit) as exc:
        tickets(*args)
    assert exc.value.code not in (0, None)
    message = str(exc.value.code)
    assert "Traceback" not in message + capsys.readouterr().err
    return message


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (["--window-start", "2026-11-28 2am"], "window-start '2026-11-28 2am' is not an ISO 8601 time"),
        (["--window-end", "next tuesday"], "window-end 'next tuesday' is not an ISO 8601 time"),
        (
            ["--window-start", "2026-11-28T06:00:00Z", "--window-end", "2026-11-28T02:00:00Z"],
            "window-end 2026-11-28T02:00:00Z is before window-start 2026-11-28T06:00:00Z",
        ),
    ],
)
def test_a_window_the_correlator_could_not_use_is_rejected_and_nothing_written(ddb, capsys, window, expected):
    assert expected in error_of(capsys, "add", "CHG-1001", "--title", "Resize orders-db", *window)
    assert ddb.scan(TableName=TABLE)["Items"] == []


def test_a_window_is_stored_as_the_correlator_reads_it(ddb):
    """No offset means UTC (the ticket source's rule); another offset is stored converted to UTC."""
    assert (
        tickets("add", "CHG-1002", "--window-start", "2026-11-28 02:00", "--window-end", "2026-11-28T07:00+01:00") == 0
    )
    ticket = DynamoDBTicketSource(TABLE, ddb=ddb).get("CHG-1002")
    assert ticket is not None
    assert ticket.window_start == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    assert ticket.window_end == datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    [item] = ddb.scan(TableName=TABLE)["Items"]
    assert (item["window_start"]["S"], item["window_end"]["S"]) == ("2026-11-28T02:00:00Z", "2026-11-28T06:00:00Z")


def test_adding_an_existing_ticket_is_a_clear_error_and_leaves_it_as_it_was(ddb, capsys):
    assert tickets("add", "CHG-1003", "--title", "first") == 0
    assert "ticket CHG-1003 already exists" in error_of(capsys, "add", "CHG-1003", "--title", "second")
    [item] = ddb.scan(TableName=TABLE)["Items"]
    assert item["title"]["S"] == "first"


def test_approving_an_unknown_ticket_is_a_clear_error_and_writes_nothing(ddb, capsys):
    assert "no ticket CHG-9999 in the ticket table" in error_of(capsys, "approve", "CHG-9999")
    assert ddb.scan(TableName=TABLE)["Items"] == []


def test_an_aws_refusal_is_a_clear_error(aws, capsys):
    """No such table (a wrong --table): AWS's own message, no traceback."""
    message = error_of(capsys, "list")
    assert "ResourceNotFoundException" in message
