"""KPI reports from the ledger: read a period, enrich with approvals, compute, render.

The arithmetic is :mod:`changeguard.domain.kpis`; this module reads the ledger's by-day
index (plus the deployment look-back), asks the ticket source for approvals the verdicts did
not snapshot, and renders the result as CSV, JSON and text. The HTML rendering is
:mod:`changeguard.services.report_html`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from changeguard.adapters.dynamodb import item_to_entry, stored_hash
from changeguard.domain.digest import LedgerItemView, VerificationReport
from changeguard.domain.errors import TicketSourceUnavailableError
from changeguard.domain.kpis import (
    ChangeRecord,
    DeploymentRecord,
    Kpi,
    KpiTargets,
    Period,
    Population,
    WeekPoint,
    after_the_period,
    build_population,
    compute_kpis,
    days_to_read,
    missed,
    round1,
    weekly_series,
)
from changeguard.domain.ledger import LedgerEntry
from changeguard.domain.tickets import Ticket
from changeguard.ports import TicketSource


class LedgerDays(Protocol):
    """The by-day view of the ledger (``DynamoDBLedger`` is one)."""

    def items_on(self, day: str, verdict: str | None = None) -> list[dict[str, Any]]: ...


# -- reading -------------------------------------------------------------------------------------
def _s(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if isinstance(value, Mapping) and "S" in value else None


def item_view(item: Mapping[str, Any]) -> tuple[LedgerItemView, LedgerEntry | None]:
    """An item as verification sees it (hash recomputed from its content) and its entry, if it parses."""
    entry: LedgerEntry | None
    try:
        entry = item_to_entry(dict(item))
        content = entry.content_hash()
    except (KeyError, ValueError, TypeError):
        entry = None
        raw = json.dumps(item, sort_keys=True, default=str).encode()
        content = "unreadable:" + hashlib.sha256(raw).hexdigest()
    recorded = _s(item, "recorded_at")
    try:
        recorded_at = datetime.fromisoformat(recorded.replace("Z", "+00:00")) if recorded else None
    except ValueError:
        recorded_at = None
    view = LedgerItemView(
        change_id=_s(item, "change_id") or "?",
        entry=_s(item, "entry") or "?",
        content_hash=content,
        stored_hash=stored_hash(dict(item)),
        recorded_at=recorded_at,
    )
    return view, entry


@dataclass
class LedgerSnapshot:
    """What a report read: entries (period plus look-back) and, per day of the period, the item views."""

    period: Period
    entries: list[LedgerEntry] = field(default_factory=list)
    views: dict[date, list[LedgerItemView]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


def read_period(ledger: LedgerDays, period: Period) -> LedgerSnapshot:
    """One by-day query per day; items that no longer parse are kept (as views) and listed. Of the
    days after the period, only the entries :func:`after_the_period` keeps are read, but the whole
    day is kept as views: its ROLLBACK and STOP entries decide the period's figures, so the period's
    verification checks that day against its digest too."""
    snapshot = LedgerSnapshot(period=period)
    for day in days_to_read(period):
        views: list[LedgerItemView] = []
        for item in ledger.items_on(day.isoformat()):
            view, entry = item_view(item)
            views.append(view)
            if entry is None:
                snapshot.unreadable.append(view.key)
            elif day < period.end or after_the_period(entry):
                snapshot.entries.append(entry)
        if day >= period.start:  # the period's days, and the look-ahead day its figures read too
            snapshot.views[day] = views
    return snapshot


def tickets_for(entries: Iterable[LedgerEntry], source: TicketSource | None) -> tuple[dict[str, Ticket], list[str]]:
    """Tickets of the verdicts and deployments that carry no ticket snapshot (for their approvals)."""
    wanted = sorted(
        {
            e.ticket_id
            for e in entries
            if e.ticket_id and e.kind.value in ("VERDICT", "RECHECK", "DEPLOYMENT") and not e.body.get("ticket")
        }
    )
    found: dict[str, Ticket] = {}
    errors: list[str] = []
    if source is None:
        return found, ([f"no ticket source: approvals of {len(wanted)} ticket(s) unknown"] if wanted else [])
    for ticket_id in wanted:
        try:
            ticket = source.get(ticket_id)
        except TicketSourceUnavailableError as exc:
            errors.append(f"{ticket_id}: {exc}")
            continue
        if ticket is not None:
            found[ticket_id] = ticket
    return found, errors


@dataclass
class Report:
    """A period's KPI report: the population, the KPI table, the weekly series, digest verification."""

    period: Period
    generated_at: datetime
    population: Population
    kpis: tuple[Kpi, ...]
    weekly: list[WeekPoint]
    targets: KpiTargets
    verification: VerificationReport | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def missed(self) -> list[Kpi]:
        return missed(self.kpis)

    def kpi(self, name: str) -> Kpi:
        return next(k for k in self.kpis if k.name == name)


def build_report(
    snapshot: LedgerSnapshot,
    *,
    targets: KpiTargets,
    tickets: Mapping[str, Ticket],
    generated_at: datetime,
    verification: VerificationReport | None = None,
    source: str = "",
    notes: Sequence[str] = (),
) -> Report:
    population = build_population(snapshot.entries, snapshot.period, tickets)
    extra = [f"{len(snapshot.unreadable)} ledger item(s) could not be read: {', '.join(snapshot.unreadable[:5])}"]
    return Report(
        period=snapshot.period,
        generated_at=generated_at,
        population=population,
        kpis=compute_kpis(population, targets),
        weekly=weekly_series(snapshot.entries, snapshot.period, targets, tickets),
        targets=targets,
        verification=verification,
        source=source,
        notes=[*notes, *(extra if snapshot.unreadable else [])],
    )


# -- renderings ----------------------------------------------------------------------------------
def iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A CSV cell. Text that a spreadsheet would run as a formula is quoted with ``'`` (CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if text.startswith(_FORMULA_START):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue().encode("utf-8")


def approvals_text(record: ChangeRecord | DeploymentRecord) -> str:
    return "; ".join(f"{a.approver} at {iso(a.approved_at) or '?'}" for a in record.approvals)


CHANGE_COLUMNS: tuple[tuple[str, Callable[[ChangeRecord], Any]], ...] = (
    ("change_id", lambda c: c.change_id),
    ("event_time", lambda c: c.event_time),
    ("recorded_at", lambda c: c.recorded_at),
    ("account", lambda c: c.account),
    ("region", lambda c: c.region),
    ("source", lambda c: c.source),
    ("service", lambda c: c.service),
    ("action", lambda c: c.action),
    ("resources", lambda c: " ".join(c.resources)),
    ("actor", lambda c: c.actor),
    ("actor_kind", lambda c: c.actor_kind),
    ("console", lambda c: c.console),
    ("automation", lambda c: c.automation),
    ("verdict", lambda c: c.verdict),
    ("first_verdict", lambda c: c.first_verdict),
    ("governed", lambda c: c.governed),
    ("unauthorized", lambda c: c.unauthorized),
    ("emergency", lambda c: c.emergency),
    ("severity", lambda c: c.severity),
    ("ticket_id", lambda c: c.ticket_id),
    ("with_ticket", lambda c: c.with_ticket),
    ("ticket_type", lambda c: c.ticket_type),
    ("ticket_status", lambda c: c.ticket_status),
    ("ticket_ref_source", lambda c: c.ticket_ref_source),
    ("approvals", approvals_text),
    ("approvals_known", lambda c: c.approvals_known),
    ("last_approval_before_change", lambda c: c.last_approval_before_change),
    ("approval_lead_hours", lambda c: c.approval_lead_hours),
    ("retro_approval_due", lambda c: c.retro_approval_due),
    ("reasons", lambda c: " | ".join(c.reasons)),
    ("control_tampering", lambda c: c.control_tampering),
    ("stopped", lambda c: c.stopped),
    ("rolled_back", lambda c: c.rolled_back),
    ("quarantined", lambda c: c.quarantined),
    ("released", lambda c: c.released),
    ("tag_compliant", lambda c: c.tag_compliant),
    ("follow_up", lambda c: " ".join(c.follow_up)),
    ("alert_ids", lambda c: " ".join(c.alert_ids)),
    ("mode", lambda c: c.mode),
    ("content_hash", lambda c: c.content_hash),
)

DEPLOYMENT_COLUMNS: tuple[tuple[str, Callable[[DeploymentRecord], Any]], ...] = (
    ("deployment_id", lambda d: d.deployment_id),
    ("change_id", lambda d: d.change_id),
    ("application", lambda d: d.application),
    ("deployment_group", lambda d: d.deployment_group),
    ("ticket_id", lambda d: d.ticket_id),
    ("approvals", approvals_text),
    ("started_at", lambda d: d.started_at),
    ("finished_at", lambda d: d.finished_at),
    ("state", lambda d: d.state),
    ("failed", lambda d: d.failed),
    ("stopped", lambda d: d.stopped),
    ("rolled_back", lambda d: d.rolled_back),
    ("rollback_of", lambda d: d.rollback_of),
    ("duration_minutes", lambda d: d.duration_minutes),
    ("not_release", lambda d: d.not_release),
)


def changes_csv(changes: Iterable[ChangeRecord]) -> bytes:
    return to_csv([n for n, _ in CHANGE_COLUMNS], ([f(c) for _, f in CHANGE_COLUMNS] for c in changes))


def deployments_csv(population: Population) -> bytes:
    rows = [(d, "counted") for d in population.deployments]
    rows += [(d, "in_flight") for d in population.in_flight]
    rows += [(d, "rollback_deployment") for d in population.rollback_deployments]
    rows += [(d, "not_a_release") for d in population.not_releases]
    header = ["category", *(n for n, _ in DEPLOYMENT_COLUMNS)]
    return to_csv(header, ([cat, *(f(d) for _, f in DEPLOYMENT_COLUMNS)] for d, cat in rows))


def rolled_back_csv(population: Population) -> bytes:
    return to_csv(
        [n for n, _ in DEPLOYMENT_COLUMNS], ([f(d) for _, f in DEPLOYMENT_COLUMNS] for d in population.rolled_back)
    )


KPI_COLUMNS = (
    "name",
    "label",
    "value",
    "display",
    "unit",
    "target",
    "comparison",
    "status",
    "numerator",
    "denominator",
    "note",
)


def kpi_rows(kpis: Iterable[Kpi]) -> list[list[Any]]:
    return [
        [
            k.name,
            k.label,
            round1(k.value),
            k.display,
            k.unit,
            k.target,
            k.comparison,
            k.status,
            k.numerator,
            k.denominator,
            k.note,
        ]
        for k in kpis
    ]


def _kpi_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.1f}"
    return value


def kpis_csv(kpis: Iterable[Kpi]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(KPI_COLUMNS)
    for row in kpi_rows(kpis):
        writer.writerow([_kpi_cell(v) for v in row])
    return buf.getvalue().encode("utf-8")


def kpis_json(report: Report) -> bytes:
    data = {
        "period": report.period.label,
        "from": report.period.start.isoformat(),
        "to": report.period.last_day.isoformat(),
        "generated_at": iso(report.generated_at),
        "source": report.source,
        "targets": report.targets.model_dump(),
        "kpis": [k.model_dump(mode="json") | {"status": k.status} for k in report.kpis],
        "missed": [k.name for k in report.missed],
        "changes": len(report.population.changes),
        "governed_changes": len(report.population.governed),
        "verdicts": dict(sorted(report.population.verdict_counts().items())),
        "deployments": len(report.population.deployments),
        "deployments_in_flight": len(report.population.in_flight),
        "activity": report.population.activity,
        "alerts_by_severity": report.population.alerts_by_severity,
        "unauthorized": [c.change_id for c in report.population.unauthorized],
        "weekly": [w.model_dump(mode="json") for w in report.weekly],
        "digest_verification": report.verification.summary if report.verification else None,
        "notes": report.notes,
    }
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()


def verification_csv(verification: VerificationReport) -> bytes:
    header = (
        "day",
        "status",
        "digest",
        "items_in_digest",
        "items_in_ledger",
        "missing",
        "altered",
        "inserted",
        "late",
        "problems",
    )
    rows = (
        [
            d.day.isoformat(),
            d.status.value,
            d.digest,
            d.items_in_digest,
            d.items_in_ledger,
            " ".join(d.missing),
            " ".join(d.altered),
            " ".join(d.inserted),
            " ".join(d.late),
            " | ".join(d.problems),
        ]
        for d in verification.days
    )
    return to_csv(header, rows)


def kpi_table_text(report: Report) -> str:
    """The KPI table as the CLI and the demo print it."""
    header = f"{'KPI':<38} {'Value':>10}  {'Target':<10} Status"
    lines = [
        f"KPIs for {report.period.label} ({report.period.describe}), from the ledger:",
        header,
        "-" * len(header),
    ]
    for k in report.kpis:
        lines.append(f"{k.label:<38} {k.display:>10}  {k.target_display:<10} {k.status}")
    pop = report.population
    counts = ", ".join(f"{n} {v}" for v, n in sorted(pop.verdict_counts().items())) or "none"
    lines.append("")
    lines.append(
        f"{len(pop.changes)} change(s) ({len(pop.governed)} governed): {counts};"
        f" {len(pop.deployments)} deployment(s), {len(pop.in_flight)} in flight."
    )
    if pop.unauthorized:
        lines.append("Unauthorized: " + ", ".join(f"{c.change_id} ({c.verdict})" for c in pop.unauthorized))
    if report.missed:
        lines.append("Missed targets: " + ", ".join(k.label for k in report.missed))
    return "\n".join(lines)
