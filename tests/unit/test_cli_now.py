"""`--now` (replay, invoke, report, evidence): a time that is not ISO 8601 is a usage error up front.

Before, it was a ValueError traceback from deep in the run (after the embedded AWS was started).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from changeguard_tools import cli

COMMANDS = [
    ["replay", "events/correlate_change/02-console-no-ticket.json"],
    ["invoke", "correlate_change", "-e", "events/correlate_change/02-console-no-ticket.json"],
    ["report", "--from", "2026-11-01", "--to", "2026-11-30", "--table", "t"],
    ["evidence", "--period", "2026-11", "--table", "t"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_now_that_is_not_a_time_is_a_usage_error_without_traceback(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "--now", "tomorrow"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --now: not an ISO 8601 time: 'tomorrow'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-21T10:00:00Z", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21T10:00:00", datetime(2026, 11, 21, 10, tzinfo=UTC)),  # no offset: UTC
        ("2026-11-21T11:00:00+01:00", datetime(2026, 11, 21, 11, tzinfo=timezone(timedelta(hours=1)))),
    ],
)
def test_a_now_is_read_as_an_aware_time(command, value, expected):
    now = cli.build_parser().parse_args([*command, "--now", value]).now
    assert now == expected and now.tzinfo is not None
