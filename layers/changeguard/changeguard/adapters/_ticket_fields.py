"""Reading ticket fields as the vendors return them: strings, select options, lists, Atlassian
Document Format (rich text in Jira's REST API v3), ISO and ServiceNow date-times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from typing import Any

from changeguard.domain.errors import TicketUnreadableError

_SPLIT = re.compile(r"[\s,;]+")


def adf_text(node: Any) -> str:
    """The plain text of an Atlassian Document Format node (paragraphs become lines)."""
    if isinstance(node, list):
        return "\n".join(t for t in (adf_text(n) for n in node) if t)
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    if node.get("type") in ("inlineCard", "blockCard"):
        return str((node.get("attrs") or {}).get("url", ""))
    children = node.get("content")
    if not isinstance(children, list):
        return ""
    sep = "" if node.get("type") == "paragraph" else "\n"
    return sep.join(t for t in (adf_text(n) for n in children) if t)


def text_of(value: Any) -> str | None:
    """A field's text: plain strings, select options (``value``/``name``), ADF documents, lists."""
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, str | int | float):
        text = str(value).strip()
        return text or None
    if isinstance(value, dict):
        if value.get("type") == "doc":
            return text_of(adf_text(value))
        for key in ("value", "name", "displayName", "display_value", "url"):
            if key in value:
                return text_of(value[key])
        return None
    if isinstance(value, list):
        parts = [t for t in (text_of(v) for v in value) if t]
        return "\n".join(parts) or None
    return None


def items_of(value: Any) -> tuple[str, ...]:
    """A list field's items (multi-selects, labels), or a text field split on commas and whitespace."""
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            out.extend(items_of(item))
        return tuple(out)
    text = text_of(value)
    return tuple(p for p in _SPLIT.split(text) if p) if text else ()


def parse_time(value: Any, what: str, *, end_of_day: bool = False) -> datetime | None:
    """ISO 8601 (Jira ``2026-11-21T08:00:00.000+0000``), ServiceNow ``2026-11-21 08:00:00`` (UTC),
    or a date (a window's end date covers the whole day). Unreadable is an error, never "no window"."""
    text = text_of(value)
    if not text:
        return None
    try:
        if len(text) == 10:
            day = datetime.fromisoformat(text).date()
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            return moment + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else moment
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise TicketUnreadableError(f"{what}: unreadable date-time {text!r}") from exc
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
