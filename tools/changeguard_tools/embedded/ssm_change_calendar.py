"""SSM Change Calendar for the embedded AWS: ``ChangeCalendar`` documents and ``GetCalendarState``.

Documents
---------
A change calendar is an SSM document of type ``ChangeCalendar`` in format ``TEXT`` whose content is
iCalendar 2.0. moto accepts only JSON and YAML documents, so ``CreateDocument`` and ``UpdateDocument``
are extended: a ``TEXT`` document is stored as it is (after checking that it is a calendar this
module can evaluate), and every other call goes to moto unchanged. ``GetDocument``,
``DescribeDocument``, ``ListDocuments`` and ``DeleteDocument`` are moto's own.

Evaluation (what AWS documents)
-------------------------------
* ``X-CALENDAR-TYPE:DEFAULT_OPEN`` - OPEN except during events; ``DEFAULT_CLOSED`` - CLOSED except
  during events. A calendar without the property is DEFAULT_OPEN, as the console creates it.
* Events are half-open: the state flips exactly at ``DTSTART`` and flips back exactly at ``DTEND``
  (or ``DTSTART`` + ``DURATION``). Overlapping or touching events form one block.
* ``RRULE``/``RDATE`` recurrences, ``EXDATE`` cancellations and ``RECURRENCE-ID`` overrides are
  expanded by the maintained ``recurring-ical-events`` library; ``TZID`` times follow their zone's
  daylight-saving rules (a Saturday 02:00 Europe/Berlin window is 01:00Z in winter and 00:00Z in
  summer). Floating times and all-day dates are read as UTC. ``STATUS:CANCELLED`` events are skipped.
* ``GetCalendarState(CalendarNames, AtTime)`` - ``AtTime`` defaults to now; several calendars are
  OPEN only if every one is open. ``NextTransitionTime`` is the next time the combined state
  changes, looked for up to :data:`MAX_HORIZON` ahead, and left out when there is none.
* Errors: an unknown name -> ``InvalidDocument``; a document that is not a calendar ->
  ``InvalidDocumentType``; content this evaluator cannot read -> ``UnsupportedCalendarException``;
  no names or an unreadable ``AtTime`` -> ``ValidationException``.

GetCalendarState reads the document's default version, as SSM does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import icalendar
import recurring_ical_events
from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult
from moto.ssm.exceptions import (
    DocumentAlreadyExists,
    DuplicateDocumentContent,
    InvalidDocument,
    InvalidDocumentContent,
    InvalidDocumentVersion,
    ValidationException,
)
from moto.ssm.models import Document, Documents, SimpleSystemManagerBackend, _validate_document_info, ssm_backends
from moto.ssm.responses import SimpleSystemManagerResponse

from changeguard_tools.embedded.extensions import operation, original_operation

__all__ = [
    "CALENDAR_DOCUMENT_TYPE",
    "MAX_HORIZON",
    "CalendarDocument",
    "CalendarError",
    "CalendarState",
    "ChangeCalendar",
    "combined_state",
    "parse_calendar",
]

CALENDAR_DOCUMENT_TYPE = "ChangeCalendar"
TEXT_FORMAT = "TEXT"
DEFAULT_OPEN = "DEFAULT_OPEN"
DEFAULT_CLOSED = "DEFAULT_CLOSED"
#: How far ahead the next transition is looked for (beyond it, ``NextTransitionTime`` is left out).
MAX_HORIZON = timedelta(days=366 * 2)
_FIRST_HORIZON = timedelta(days=35)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class CalendarError(ValueError):
    """The content is not an iCalendar change calendar this evaluator supports."""


# --- evaluation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A span during which a calendar's events run: ``[start, end)`` in UTC."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class ChangeCalendar:
    """A parsed change calendar."""

    name: str
    default_open: bool
    component: icalendar.Calendar

    def blocks(self, start: datetime, end: datetime) -> list[Block]:
        """Event spans overlapping ``[start, end)``, overlapping and touching ones merged."""
        try:
            occurrences = recurring_ical_events.of(self.component).between(start, end)
        except Exception as error:  # the library raises many types for malformed rules
            raise CalendarError(f"{self.name}: cannot expand the calendar's events: {error}") from error
        spans: list[Block] = []
        for event in occurrences:
            if str(event.get("STATUS", "")).upper() == "CANCELLED":
                continue
            span = _span(event)
            if span is not None and span.end > start and span.start < end:
                spans.append(span)
        spans.sort(key=lambda s: (s.start, s.end))
        merged: list[Block] = []
        for span in spans:
            if merged and span.start <= merged[-1].end:
                last = merged[-1]
                merged[-1] = Block(last.start, max(last.end, span.end))
            else:
                merged.append(span)
        return merged

    def is_open(self, at: datetime, blocks: Sequence[Block]) -> bool:
        in_event = any(b.start <= at < b.end for b in blocks)
        return in_event != self.default_open


@dataclass(frozen=True)
class CalendarState:
    """What ``GetCalendarState`` answers."""

    state: str
    at: datetime
    next_transition: datetime | None

    def response(self) -> dict[str, str]:
        body = {"State": self.state, "AtTime": self.at.strftime(_TIME_FORMAT)}
        if self.next_transition is not None:
            body["NextTransitionTime"] = self.next_transition.strftime(_TIME_FORMAT)
        return body


def parse_calendar(content: str, name: str = "calendar") -> ChangeCalendar:
    """Read a ChangeCalendar document's iCalendar content."""
    try:
        component = icalendar.Calendar.from_ical(content)
    except ValueError as error:
        raise CalendarError(f"{name}: not iCalendar content: {error}") from error
    if not isinstance(component, icalendar.Calendar):
        raise CalendarError(f"{name}: the content is not a VCALENDAR")
    kind = str(component.get("X-CALENDAR-TYPE", DEFAULT_OPEN)).strip().upper()
    if kind not in (DEFAULT_OPEN, DEFAULT_CLOSED):
        raise CalendarError(f"{name}: X-CALENDAR-TYPE must be {DEFAULT_OPEN} or {DEFAULT_CLOSED}, not {kind!r}")
    for event in component.walk("VEVENT"):
        if event.get("DTSTART") is None:
            raise CalendarError(f"{name}: an event has no DTSTART")
    calendar = ChangeCalendar(name=name, default_open=kind == DEFAULT_OPEN, component=component)
    calendar.blocks(datetime(2000, 1, 1, tzinfo=UTC), datetime(2000, 1, 2, tzinfo=UTC))  # rules expand
    return calendar


def combined_state(calendars: Sequence[ChangeCalendar], at: datetime) -> CalendarState:
    """The state of several calendars at ``at`` (OPEN only if all are open) and its next change."""
    if not calendars:
        raise ValueError("at least one calendar is needed")
    at = _to_utc(at)
    horizon = _FIRST_HORIZON
    while True:
        end = at + horizon
        blocks = [cal.blocks(at, end) for cal in calendars]
        now_open = all(cal.is_open(at, b) for cal, b in zip(calendars, blocks, strict=True))
        boundaries = sorted({t for bs in blocks for b in bs for t in (b.start, b.end) if at < t < end})
        for moment in boundaries:
            if all(cal.is_open(moment, b) for cal, b in zip(calendars, blocks, strict=True)) != now_open:
                return CalendarState("OPEN" if now_open else "CLOSED", at, moment)
        if horizon >= MAX_HORIZON:
            return CalendarState("OPEN" if now_open else "CLOSED", at, None)
        horizon = min(horizon * 4, MAX_HORIZON)


def _span(event: Any) -> Block | None:
    start = event.start
    try:
        end = event.end
    except (icalendar.error.IncompleteComponent, KeyError, ValueError):
        end = None
    if end is None:  # RFC 5545: a date lasts a day; a date-time with no end lasts no time
        end = start + timedelta(days=1) if not isinstance(start, datetime) else start
    begin, finish = _to_utc(start), _to_utc(end)
    return Block(begin, finish) if finish > begin else None


def _to_utc(value: datetime | date) -> datetime:
    if not isinstance(value, datetime):
        value = datetime.combine(value, time.min)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_at_time(value: Any, now: datetime | None = None) -> datetime:
    """``AtTime`` as AWS reads it (ISO 8601; no zone means UTC); now when absent."""
    if value in (None, ""):
        return (now or datetime.now(UTC)).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError as error:
        raise ValidationException(f"AtTime {value!r} is not an ISO 8601 time") from error
    return _to_utc(moment)


# --- documents ------------------------------------------------------------------------------------


class CalendarDocument(Document):  # type: ignore[misc]
    """A ``TEXT`` ChangeCalendar document (moto's ``Document`` parses only JSON and YAML)."""

    def __init__(
        self,
        *,
        account_id: str,
        name: str,
        version_name: str | None,
        content: str,
        document_type: str,
        target_type: str | None,
        requires: list[dict[str, str]] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        document_version: str = "1",
    ) -> None:
        from moto.core.utils import utcnow

        self.name = name
        self.version_name = version_name
        self.content = content
        self.document_type = document_type
        self.document_format = TEXT_FORMAT
        self.requires = requires or []
        self.attachments = attachments or []
        self.target_type = target_type
        self.status = "Active"
        self.document_version = document_version
        self.owner = account_id
        self.created_date = utcnow()
        self.content_json: dict[str, Any] = {}
        self.schema_version = "2.0"
        self.description = None
        self.outputs = None
        self.files = None
        self.platform_types: list[str] = []
        self.parameter_list: list[dict[str, Any]] = []


def _checked_calendar(name: str, document_type: str | None, content: Any) -> None:
    if document_type != CALENDAR_DOCUMENT_TYPE:
        raise ValidationException(f"Invalid document format {TEXT_FORMAT} for document type {document_type}")
    if not isinstance(content, str) or not content.strip():
        raise ValidationException("Content is required")
    try:
        parse_calendar(content, name)
    except CalendarError as error:
        raise InvalidDocumentContent(f"The content for the document is not valid. {error}") from error


def _create_calendar(self: Any) -> ActionResult:
    backend: SimpleSystemManagerBackend = self.ssm_backend
    name = str(self._get_param("Name") or "")
    content = self._get_param("Content")
    document_type = self._get_param("DocumentType")
    tags = self._get_param("Tags")
    _checked_calendar(name, document_type, content)
    # moto's own checks of the name and type; the format was checked above.
    _validate_document_info(content=content, name=name, document_type=document_type, document_format="JSON")
    if backend._documents.get(name):
        raise DocumentAlreadyExists("The specified document already exists.")
    document = CalendarDocument(
        account_id=backend.account_id,
        name=name,
        version_name=self._get_param("VersionName"),
        content=content,
        document_type=str(document_type),
        target_type=self._get_param("TargetType"),
        requires=self._get_param("Requires"),
        attachments=self._get_param("Attachments"),
    )
    documents = Documents(document)
    backend._documents[name] = documents
    if tags:
        backend.add_tags_to_resource("Document", name, {t["Key"]: t["Value"] for t in tags})
    return ActionResult({"DocumentDescription": documents.describe(tags=tags)})


def _update_calendar(self: Any) -> ActionResult:
    backend: SimpleSystemManagerBackend = self.ssm_backend
    name = str(self._get_param("Name") or "")
    content = self._get_param("Content")
    documents = backend._documents.get(name)
    if not documents:
        raise InvalidDocument("The specified document does not exist.")
    current = documents.get_default_version()
    _checked_calendar(name, current.document_type, content)
    version = self._get_param("DocumentVersion")
    if version not in (None, "$LATEST", documents.latest_version):
        raise InvalidDocumentVersion("The document version is not valid or does not exist.")
    if any(d.content == content for d in documents.versions.values()):
        raise DuplicateDocumentContent(
            "The content of the association document matches another document. "
            "Change the content of the document and try again."
        )
    new_version = str(int(documents.latest_version) + 1)
    documents.add_new_version(
        CalendarDocument(
            account_id=backend.account_id,
            name=name,
            version_name=self._get_param("VersionName"),
            content=content,
            document_type=current.document_type,
            target_type=self._get_param("TargetType") or current.target_type,
            requires=current.requires,
            attachments=self._get_param("Attachments"),
            document_version=new_version,
        )
    )
    tags = backend._get_documents_tags(name)
    return ActionResult({"DocumentDescription": documents.describe(document_version=new_version, tags=tags)})


@operation(SimpleSystemManagerResponse, "CreateDocument", replace=True)
def create_document(self: Any) -> Any:
    """``CreateDocument``, accepting ``TEXT`` ChangeCalendar documents."""
    if self._get_param("DocumentFormat") == TEXT_FORMAT:
        return _create_calendar(self)
    original = original_operation(SimpleSystemManagerResponse, "CreateDocument")
    assert original is not None  # moto implements CreateDocument
    return original(self)


@operation(SimpleSystemManagerResponse, "GetDocument", replace=True)
def get_document(self: Any) -> Any:
    """``GetDocument``: a calendar comes back as its iCalendar text (moto would convert it to JSON)."""
    documents = self.ssm_backend._documents.get(self._get_param("Name"))
    if documents is not None:
        document = documents.find(self._get_param("DocumentVersion"), self._get_param("VersionName"))
        if isinstance(document, CalendarDocument):
            if self._get_param("DocumentFormat") not in (None, TEXT_FORMAT):
                raise ValidationException(f"Invalid document format {self._get_param('DocumentFormat')}")
            return ActionResult(self.ssm_backend._generate_document_information(document, TEXT_FORMAT))
    original = original_operation(SimpleSystemManagerResponse, "GetDocument")
    assert original is not None  # moto implements GetDocument
    return original(self)


@operation(SimpleSystemManagerResponse, "UpdateDocument", replace=True)
def update_document(self: Any) -> Any:
    """``UpdateDocument``, accepting ``TEXT`` ChangeCalendar documents."""
    if self._get_param("DocumentFormat") == TEXT_FORMAT:
        return _update_calendar(self)
    original = original_operation(SimpleSystemManagerResponse, "UpdateDocument")
    assert original is not None  # moto implements UpdateDocument
    return original(self)


# --- GetCalendarState -----------------------------------------------------------------------------


def _backend_for(reference: str, account_id: str, region: str) -> tuple[SimpleSystemManagerBackend, str]:
    """The backend holding a calendar named by name or ARN (``arn:aws:ssm:<region>:<account>:document/<name>``)."""
    if reference.startswith("arn:"):
        parts = reference.split(":", 5)
        if len(parts) == 6 and parts[5].startswith("document/"):
            return ssm_backends[parts[4] or account_id][parts[3] or region], parts[5].split("/", 1)[1]
        raise InvalidDocument(f"{reference} is not an SSM document ARN")
    return ssm_backends[account_id][region], reference


def load_calendars(names: Iterable[str], account_id: str, region: str) -> list[ChangeCalendar]:
    """The calendars behind ``names``, with AWS's errors for missing or unsupported ones."""
    calendars: list[ChangeCalendar] = []
    for reference in names:
        backend, name = _backend_for(str(reference), account_id, region)
        documents = backend._documents.get(name)
        if not documents:
            raise InvalidDocument(f"The specified document {name} does not exist.")
        document = documents.get_default_version()
        if document.document_type != CALENDAR_DOCUMENT_TYPE:
            raise JsonRESTError(
                "InvalidDocumentType",
                f"{name} is a {document.document_type} document; GetCalendarState needs a ChangeCalendar.",
            )
        try:
            calendars.append(parse_calendar(str(document.content), name))
        except CalendarError as error:
            raise JsonRESTError("UnsupportedCalendarException", str(error)) from error
    return calendars


@operation(SimpleSystemManagerResponse, "GetCalendarState")
def get_calendar_state(self: Any) -> str:
    """``GetCalendarState`` evaluated from the calendars' iCalendar content."""
    params = json.loads(self.body or "{}")
    names = params.get("CalendarNames") or []
    if not isinstance(names, list) or not names:
        raise ValidationException("CalendarNames must name at least one calendar")
    at = parse_at_time(params.get("AtTime"))
    calendars = load_calendars(names, self.current_account, self.region)
    try:
        state = combined_state(calendars, at)
    except CalendarError as error:
        raise JsonRESTError("UnsupportedCalendarException", str(error)) from error
    return json.dumps(state.response())
