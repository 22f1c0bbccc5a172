"""SSM Change Calendar in the embedded AWS: ChangeCalendar documents and GetCalendarState's edges.

Every answer comes through boto3 from the embedded AWS, as the gate's adapter gets it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from changeguard_tools.embedded import EmbeddedAWS


def ical(kind: str, *events: str, extra: str = "") -> str:
    lines = [
        "BEGIN:VCALENDAR",
        "PRODID:-//AWS//Change Calendar 1.0//EN",
        "VERSION:2.0",
        f"X-CALENDAR-TYPE:{kind}",
        "X-WR-CALDESC:test calendar",
        *([extra] if extra else []),
    ]
    for n, body in enumerate(events):
        lines += ["BEGIN:VEVENT", f"UID:event-{n}", "DTSTAMP:20260101T000000Z", f"SUMMARY:event {n}", *body.split("\n")]
        lines.append("END:VEVENT")
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


#: DEFAULT_CLOSED, open every Saturday 02:00-06:00 UTC, except on 2026-11-14 (EXDATE).
WEEKLY_WINDOW = ical(
    "DEFAULT_CLOSED",
    "DTSTART:20261107T020000Z\nDTEND:20261107T060000Z\nRRULE:FREQ=WEEKLY;BYDAY=SA\nEXDATE:20261114T020000Z",
)


@pytest.fixture
def ssm(aws: EmbeddedAWS) -> Any:
    return aws.client("ssm")


def create(ssm: Any, name: str, content: str) -> None:
    ssm.create_document(Name=name, Content=content, DocumentType="ChangeCalendar", DocumentFormat="TEXT")


def state(ssm: Any, names: list[str], at: str | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"CalendarNames": names}
    if at is not None:
        args["AtTime"] = at
    answer = ssm.get_calendar_state(**args)
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


def test_a_change_calendar_document_is_kept_as_text(ssm: Any) -> None:
    description = ssm.create_document(
        Name="prod-window", Content=WEEKLY_WINDOW, DocumentType="ChangeCalendar", DocumentFormat="TEXT"
    )["DocumentDescription"]

    assert description["DocumentType"] == "ChangeCalendar"
    assert description["DocumentFormat"] == "TEXT"
    assert ssm.describe_document(Name="prod-window")["Document"]["DocumentFormat"] == "TEXT"


def test_text_documents_must_be_valid_change_calendars(ssm: Any) -> None:
    with pytest.raises(ClientError) as not_ical:
        ssm.create_document(
            Name="broken", Content="not a calendar", DocumentType="ChangeCalendar", DocumentFormat="TEXT"
        )
    with pytest.raises(ClientError) as not_calendar:
        ssm.create_document(Name="cmd", Content=WEEKLY_WINDOW, DocumentType="Command", DocumentFormat="TEXT")

    assert not_ical.value.response["Error"]["Code"] == "InvalidDocumentContent"
    assert not_calendar.value.response["Error"]["Code"] == "ValidationException"


def test_exactly_at_the_start_of_a_window_it_is_open_until_its_end(ssm: Any) -> None:
    create(ssm, "prod-window", WEEKLY_WINDOW)

    assert state(ssm, ["prod-window"], "2026-11-21T02:00:00Z") == {
        "State": "OPEN",
        "AtTime": "2026-11-21T02:00:00Z",
        "NextTransitionTime": "2026-11-21T06:00:00Z",
    }
    assert state(ssm, ["prod-window"], "2026-11-21T01:59:59Z")["State"] == "CLOSED"


def test_exactly_at_the_end_of_a_window_it_is_closed_until_the_next_one(ssm: Any) -> None:
    create(ssm, "prod-window", WEEKLY_WINDOW)

    assert state(ssm, ["prod-window"], "2026-11-21T05:59:59Z")["State"] == "OPEN"
    assert state(ssm, ["prod-window"], "2026-11-21T06:00:00Z") == {
        "State": "CLOSED",
        "AtTime": "2026-11-21T06:00:00Z",
        "NextTransitionTime": "2026-11-28T02:00:00Z",
    }


def test_a_cancelled_occurrence_of_a_recurring_window_stays_closed(ssm: Any) -> None:
    create(ssm, "prod-window", WEEKLY_WINDOW)

    # 2026-11-14 02:00Z is the EXDATE: closed, and the next opening skips to the week after.
    assert state(ssm, ["prod-window"], "2026-11-14T03:00:00Z") == {
        "State": "CLOSED",
        "AtTime": "2026-11-14T03:00:00Z",
        "NextTransitionTime": "2026-11-21T02:00:00Z",
    }
    assert state(ssm, ["prod-window"], "2026-11-07T03:00:00Z")["State"] == "OPEN"


def test_a_local_time_window_follows_daylight_saving_time(ssm: Any) -> None:
    # Sundays 01:00-05:00 New York time. US DST starts on 2026-03-08 at 02:00 local: that day's
    # window is 06:00Z-09:00Z (three hours); the week before 06:00Z-10:00Z; the week after 05:00Z-09:00Z.
    create(
        ssm,
        "ny-window",
        ical(
            "DEFAULT_CLOSED",
            "DTSTART;TZID=America/New_York:20260301T010000\n"
            "DTEND;TZID=America/New_York:20260301T050000\n"
            "RRULE:FREQ=WEEKLY;BYDAY=SU",
        ),
    )

    assert state(ssm, ["ny-window"], "2026-03-01T09:30:00Z") == {
        "State": "OPEN",
        "AtTime": "2026-03-01T09:30:00Z",
        "NextTransitionTime": "2026-03-01T10:00:00Z",
    }
    assert state(ssm, ["ny-window"], "2026-03-08T06:00:00Z")["NextTransitionTime"] == "2026-03-08T09:00:00Z"
    assert state(ssm, ["ny-window"], "2026-03-08T09:30:00Z") == {
        "State": "CLOSED",
        "AtTime": "2026-03-08T09:30:00Z",
        "NextTransitionTime": "2026-03-15T05:00:00Z",
    }
    # DST ends on 2026-11-01: 01:00 EDT is 05:00Z, 05:00 EST is 10:00Z.
    assert state(ssm, ["ny-window"], "2026-11-01T05:00:00Z")["NextTransitionTime"] == "2026-11-01T10:00:00Z"


def test_overlapping_and_back_to_back_events_form_one_closed_block(ssm: Any) -> None:
    create(
        ssm,
        "freezes",
        ical(
            "DEFAULT_OPEN",
            "DTSTART:20261124T100000Z\nDTEND:20261124T120000Z",
            "DTSTART:20261124T110000Z\nDTEND:20261124T140000Z",
            "DTSTART:20261124T140000Z\nDTEND:20261124T150000Z",
        ),
    )

    assert state(ssm, ["freezes"], "2026-11-24T09:00:00Z")["NextTransitionTime"] == "2026-11-24T10:00:00Z"
    assert state(ssm, ["freezes"], "2026-11-24T11:30:00Z") == {
        "State": "CLOSED",
        "AtTime": "2026-11-24T11:30:00Z",
        "NextTransitionTime": "2026-11-24T15:00:00Z",
    }
    assert state(ssm, ["freezes"], "2026-11-24T15:00:00Z")["State"] == "OPEN"


def test_several_calendars_are_open_only_when_all_are_and_transition_together(ssm: Any) -> None:
    create(ssm, "prod-window", WEEKLY_WINDOW)
    # A one-hour freeze inside Saturday's window.
    create(ssm, "freeze", ical("DEFAULT_OPEN", "DTSTART:20261121T040000Z\nDTEND:20261121T050000Z"))
    both = ["prod-window", "arn:aws:ssm:us-east-1:123456789012:document/freeze"]

    assert state(ssm, both, "2026-11-21T03:00:00Z") == {
        "State": "OPEN",
        "AtTime": "2026-11-21T03:00:00Z",
        "NextTransitionTime": "2026-11-21T04:00:00Z",
    }
    assert state(ssm, both, "2026-11-21T04:30:00Z")["NextTransitionTime"] == "2026-11-21T05:00:00Z"
    assert state(ssm, both, "2026-11-21T04:30:00Z")["State"] == "CLOSED"
    assert state(ssm, both, "2026-11-21T05:30:00Z")["NextTransitionTime"] == "2026-11-21T06:00:00Z"
    # Closed by the window calendar alone: the freeze calendar being open changes nothing.
    assert state(ssm, both, "2026-11-21T07:00:00Z")["NextTransitionTime"] == "2026-11-28T02:00:00Z"


def test_at_time_defaults_to_now(ssm: Any) -> None:
    create(ssm, "always-open", ical("DEFAULT_OPEN"))

    answer = state(ssm, ["always-open"])

    at = datetime.fromisoformat(answer["AtTime"].replace("Z", "+00:00"))
    assert abs(at - datetime.now(UTC)) < timedelta(minutes=1)
    assert answer["State"] == "OPEN"
    assert "NextTransitionTime" not in answer  # nothing scheduled


def test_a_missing_calendar_and_a_non_calendar_document_are_errors(ssm: Any) -> None:
    ssm.create_document(
        Name="runbook",
        Content='{"schemaVersion": "2.2", "mainSteps": []}',
        DocumentType="Command",
        DocumentFormat="JSON",
    )
    create(ssm, "prod-window", WEEKLY_WINDOW)

    with pytest.raises(ClientError) as missing:
        ssm.get_calendar_state(CalendarNames=["prod-window", "no-such-calendar"])
    with pytest.raises(ClientError) as wrong_type:
        ssm.get_calendar_state(CalendarNames=["runbook"])

    assert missing.value.response["Error"]["Code"] == "InvalidDocument"
    assert wrong_type.value.response["Error"]["Code"] == "InvalidDocumentType"


def test_an_updated_calendar_takes_effect(ssm: Any) -> None:
    create(ssm, "prod-window", WEEKLY_WINDOW)
    freeze_all_day = ical("DEFAULT_OPEN", "DTSTART:20261121T000000Z\nDTEND:20261122T000000Z")

    ssm.update_document(Name="prod-window", Content=freeze_all_day, DocumentVersion="$LATEST", DocumentFormat="TEXT")
    ssm.update_document_default_version(Name="prod-window", DocumentVersion="2")

    assert state(ssm, ["prod-window"], "2026-11-21T03:00:00Z")["State"] == "CLOSED"
