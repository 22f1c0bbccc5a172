"""The KPI report as one self-contained HTML page: inline CSS and SVG charts, no script, no network.

It opens from a file or an e-mail attachment, and prints. A Content-Security-Policy forbids
every fetch, so the page cannot leak by loading anything. Every number a reader (or a test)
may want to check is in an element with a ``data-`` attribute: ``data-kpi="<name>"`` for KPI
values, ``data-verdict-count="<VERDICT>"`` for the verdict table, ``data-stat="<name>"`` for
the headline counts, and rows of the lists carry ``data-change-id``/``data-deployment-id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from changeguard.domain.digest import DayStatus, VerificationReport
from changeguard.domain.kpis import LABELS, TREND_KPIS, ChangeRecord, DeploymentRecord, Kpi, WeekPoint
from changeguard.domain.verdicts import Verdict
from changeguard.services.report import Report, approvals_text, iso

VERDICT_COLORS: dict[str, str] = {
    Verdict.AUTHORIZED.value: "#2e7d32",
    Verdict.EXEMPT.value: "#90a4ae",
    Verdict.EMERGENCY.value: "#f9a825",
    Verdict.UNVERIFIED.value: "#8e24aa",
    Verdict.NO_TICKET.value: "#c62828",
    Verdict.UNKNOWN_TICKET.value: "#ad1457",
    Verdict.SELF_APPROVED.value: "#d84315",
    Verdict.NOT_APPROVED.value: "#e53935",
    Verdict.INCOMPLETE_TICKET.value: "#ef6c00",
    Verdict.OUTSIDE_TICKET_WINDOW.value: "#6d4c41",
    Verdict.OUTSIDE_CHANGE_WINDOW.value: "#4e342e",
    Verdict.OUT_OF_SCOPE.value: "#1565c0",
}
OTHER_COLOR = "#546e7a"
TREND_COLORS: dict[str, str] = {
    "change_success_rate": "#1b5e20",
    "changes_with_tickets_pct": "#0d47a1",
    "tag_compliance_pct": "#00838f",
    "emergency_changes_pct": "#ff6f00",
    "rollback_rate": "#b71c1c",
}
_VERDICT_ORDER = [v.value for v in reversed(list(Verdict))]  # AUTHORIZED at the bottom of each bar

# Text colours stay clear of the chart palettes, so a screenshot's chart colours come from the charts.
_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1c2733;margin:0;background:#fff}
main{max-width:1200px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:2px solid #e3e8ee;padding-bottom:4px}
.meta{color:#52606d;margin:0 0 16px}
.tiles{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.tile{border:1px solid #d9e2ec;border-radius:8px;padding:10px 16px;min-width:150px;background:#f5f7fa}
.tile b{display:block;font-size:26px}.tile.bad b{color:#b00020}.tile.good b{color:#2f6f3e}
.charts{display:flex;gap:24px;flex-wrap:wrap}
figure{margin:0;border:1px solid #d9e2ec;border-radius:8px;padding:8px 12px;background:#fff;max-width:546px}
figcaption{font-weight:600;margin-bottom:4px}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{border-bottom:1px solid #e3e8ee;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f0f4f8;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.missed td{background:#fdecea}tr.missed td.status{color:#b00020;font-weight:700}
tr.met td.status{color:#2f6f3e;font-weight:600}
.small{font-size:12px;color:#52606d}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.ok{color:#2f6f3e;font-weight:700}.bad{color:#b00020;font-weight:700}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
@media print{.charts{display:block}figure{break-inside:avoid;margin-bottom:12px}}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _number(kpi: Kpi) -> str:
    """The bare number of a KPI as it is displayed (one decimal; counts whole)."""
    if kpi.value is None:
        return "n/a"
    if kpi.unit == "count":
        return str(round(kpi.value))
    return f"{kpi.value:.1f}"


def _unit(kpi: Kpi) -> str:
    if kpi.value is None or kpi.unit == "count":
        return ""
    return "%" if kpi.unit == "%" else f" {kpi.unit}"


def _tick_step(value: int) -> int:
    """A round step so that four steps cover ``value`` (1, 2, 5, 10, 20, 50, ...)."""
    step = 1
    while step * 4 < value:
        for factor in (2, 5 / 2, 2):  # 1 -> 2 -> 5 -> 10
            step = int(step * factor)
            if step * 4 >= value:
                break
    return step


def changes_chart(weeks: Sequence[WeekPoint], width: int = 520, height: int = 280) -> str:
    """Stacked bars: changes per week, one colour per verdict."""
    left, right, top, bottom = 44, 12, 12, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(w.verdicts.values()) for w in weeks]
    step = _tick_step(max(totals, default=0) or 1)
    y_max = 4 * step
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="Changes per week by verdict" data-chart="changes-by-week">'
    ]
    for i in range(5):
        value = step * i
        y = top + plot_h - plot_h * value / y_max
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e8ee"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#52606d">{value}</text>'
        )
    slot = plot_w / max(len(weeks), 1)
    bar_w = max(min(slot * 0.7, 48), 4)
    for index, week in enumerate(weeks):
        x = left + slot * index + (slot - bar_w) / 2
        y = top + plot_h
        ordered = sorted(
            week.verdicts.items(), key=lambda kv: _VERDICT_ORDER.index(kv[0]) if kv[0] in _VERDICT_ORDER else -1
        )
        for verdict, count in ordered:
            if count <= 0:
                continue
            h = plot_h * count / y_max
            y -= h
            color = VERDICT_COLORS.get(verdict, OTHER_COLOR)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{color}"'
                f' data-week="{_e(week.label)}" data-verdict="{_e(verdict)}" data-count="{count}">'
                f"<title>{_e(week.label)}: {count} {_e(verdict)}</title></rect>"
            )
        label = week.label.split("-", 1)[-1]
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle"'
            f' fill="#52606d">{_e(label)}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#52606d"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" font-size="11" text-anchor="middle" fill="#52606d">ISO week</text>'
        "</svg>"
    )
    return "".join(parts)


def trends_chart(weeks: Sequence[WeekPoint], width: int = 520, height: int = 280) -> str:
    """Lines: the percentage KPIs week by week (a week without data leaves a gap)."""
    left, right, top, bottom = 44, 12, 12, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    slot = plot_w / max(len(weeks), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="KPI trends" data-chart="kpi-trends">'
    ]
    for value in (0, 25, 50, 75, 100):
        y = top + plot_h - plot_h * value / 100
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e8ee"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#52606d">{value}%</text>'
        )
    for index, week in enumerate(weeks):
        x = left + slot * index + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle" fill="#52606d">'
            f"{_e(week.label.split('-', 1)[-1])}</text>"
        )
    for name in TREND_KPIS:
        color = TREND_COLORS[name]
        segment: list[str] = []
        segments: list[list[str]] = []
        for index, week in enumerate(weeks):
            point = week.kpis.get(name)
            if point is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            x = left + slot * index + slot / 2
            y = top + plot_h - plot_h * max(0.0, min(point, 100.0)) / 100
            segment.append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}" data-kpi-point="{name}"'
                f' data-week="{_e(week.label)}" data-value="{point:.1f}"><title>{_e(LABELS[name])}'
                f" {_e(week.label)}: {point:.1f}%</title></circle>"
            )
        if segment:
            segments.append(segment)
        for points in segments:
            if len(points) > 1:
                parts.append(
                    f'<polyline points="{" ".join(points)}" fill="none" stroke="{color}" stroke-width="3"'
                    f' data-kpi-line="{name}"/>'
                )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#52606d"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" font-size="11" text-anchor="middle" fill="#52606d">ISO week</text>'
        "</svg>"
    )
    return "".join(parts)


def _legend(items: Iterable[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{c}"></i>{_e(label)}</span>' for label, c in items)
        + "</div>"
    )


def _kpi_table(kpis: Sequence[Kpi]) -> str:
    rows = []
    for k in kpis:
        css = "missed" if k.met is False else ("met" if k.met else "")
        fraction = (
            f"{k.numerator:.1f} / {k.denominator}"
            if isinstance(k.numerator, float) and not float(k.numerator).is_integer()
            else (
                f"{k.numerator:.0f} / {k.denominator}" if k.numerator is not None and k.denominator is not None else ""
            )
        )
        rows.append(
            f'<tr class="{css}" data-kpi-row="{_e(k.name)}"><td>{_e(k.label)}</td>'
            f'<td class="num"><span data-kpi="{_e(k.name)}">{_number(k)}</span>{_e(_unit(k))}</td>'
            f'<td class="num">{_e(k.target_display)}</td><td class="status">{_e(k.status)}</td>'
            f'<td class="num">{_e(fraction)}</td><td class="small">{_e(k.note)}</td></tr>'
        )
    return (
        "<table><thead><tr><th>KPI</th><th>Value</th><th>Target</th><th>Status</th><th>Computed from</th>"
        "<th>Definition</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _change_rows(changes: Sequence[ChangeRecord], list_name: str) -> str:
    if not changes:
        return f'<p class="small" data-list="{list_name}" data-rows="0">None in this period.</p>'
    rows = "".join(
        f'<tr data-change-id="{_e(c.change_id)}"><td class="mono">{_e(c.change_id)}</td><td>{_e(iso(c.event_time))}</td>'
        f"<td>{_e(c.account)}</td><td>{_e(f'{c.service}:{c.action}')}</td><td class='mono'>{_e(' '.join(c.resources))}</td>"
        f"<td class='mono'>{_e(c.actor)}</td><td>{_e(c.verdict)}</td><td>{_e(c.ticket_id or 'none')}</td>"
        f"<td class='small'>{_e(approvals_text(c) or ('unknown' if not c.approvals_known else 'none'))}</td>"
        f"<td class='small'>{_e(' | '.join(c.reasons))}</td></tr>"
        for c in changes
    )
    return (
        f'<table data-list="{list_name}" data-rows="{len(changes)}"><thead><tr><th>Change</th><th>When (UTC)</th>'
        "<th>Account</th><th>Call</th><th>Resources</th><th>Who</th><th>Verdict</th><th>Ticket</th><th>Approvals</th>"
        "<th>Why</th></tr></thead><tbody>" + rows + "</tbody></table>"
    )


def _deployment_rows(deployments: Sequence[DeploymentRecord], list_name: str) -> str:
    if not deployments:
        return f'<p class="small" data-list="{list_name}" data-rows="0">None in this period.</p>'
    rows = "".join(
        f'<tr data-deployment-id="{_e(d.deployment_id)}"><td class="mono">{_e(d.deployment_id)}</td>'
        f"<td>{_e(d.application)}</td><td>{_e(d.deployment_group)}</td><td>{_e(iso(d.started_at))}</td>"
        f"<td>{_e(iso(d.finished_at))}</td><td>{_e(d.state)}</td><td>{_e(d.ticket_id or 'none')}</td>"
        f"<td class='small'>{_e(approvals_text(d))}</td></tr>"
        for d in deployments
    )
    return (
        f'<table data-list="{list_name}" data-rows="{len(deployments)}"><thead><tr><th>Deployment</th><th>Application</th>'
        "<th>Group</th><th>Started</th><th>Finished</th><th>State</th><th>Ticket</th><th>Approvals</th></tr></thead>"
        "<tbody>" + rows + "</tbody></table>"
    )


def _verification(verification: VerificationReport | None) -> str:
    if verification is None:
        return '<p data-stat="digest-status">Not verified: no digest store was available.</p>'
    css = "ok" if verification.ok else "bad"
    counts = "".join(
        f'<tr><td>{_e(s.value.replace("_", " "))}</td><td class="num" data-digest-days="{s.value}">'
        f"{verification.count(s)}</td></tr>"
        for s in DayStatus
    )
    interesting = [
        d for d in verification.days if d.status not in (DayStatus.VERIFIED, DayStatus.BEFORE_CHAIN, DayStatus.PENDING)
    ]
    details = "".join(
        f"<tr><td>{d.day.isoformat()}</td><td>{_e(d.status.value)}</td><td class='mono'>"
        f"{_e(' '.join(d.missing)) or '-'}</td><td class='mono'>{_e(' '.join(d.altered)) or '-'}</td>"
        f"<td class='mono'>{_e(' '.join(d.inserted)) or '-'}</td><td class='mono'>{_e(' '.join(d.late)) or '-'}</td>"
        f"<td class='small'>{_e(' | '.join(d.problems))}</td></tr>"
        for d in interesting
    )
    chain = verification.chain_start.isoformat() if verification.chain_start else "no digest yet"
    out = (
        f'<p>Result: <span class="{css}" data-stat="digest-status">{"OK" if verification.ok else "FAILED"}</span> '
        f"- {_e(verification.summary)}. Chain started {chain}; checked {_e(iso(verification.checked_at))}.</p>"
        f"<table style='width:auto'><thead><tr><th>Days</th><th>Count</th></tr></thead><tbody>{counts}</tbody></table>"
    )
    if details:
        out += (
            "<table><thead><tr><th>Day</th><th>Status</th><th>Missing</th><th>Altered</th><th>Inserted</th>"
            f"<th>Late</th><th>Problems</th></tr></thead><tbody>{details}</tbody></table>"
        )
    return out


def render_html(report: Report) -> str:
    """The report page. Deterministic: the same report renders to the same bytes."""
    pop = report.population
    counts = pop.verdict_counts()
    missed_count = len(report.missed)
    verdict_rows = "".join(
        f'<tr><td><i style="display:inline-block;width:10px;height:10px;background:'
        f'{VERDICT_COLORS.get(v, OTHER_COLOR)}"></i> {_e(v)}</td>'
        f'<td class="num" data-verdict-count="{_e(v)}">{n}</td></tr>'
        for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    present = [v for v in reversed(_VERDICT_ORDER) if counts.get(v)] + [v for v in counts if v not in _VERDICT_ORDER]
    activity = "".join(
        f'<tr><td>{_e(k)}</td><td class="num" data-activity="{_e(k)}">{n}</td></tr>' for k, n in pop.activity.items()
    )
    severities = "".join(
        f'<tr><td>{_e(k)}</td><td class="num" data-alerts="{_e(k)}">{n}</td></tr>'
        for k, n in pop.alerts_by_severity.items()
    )
    tiles = [
        ("changes", "Changes", len(pop.changes), ""),
        ("governed", "Governed changes", len(pop.governed), ""),
        ("unauthorized", "Unauthorized", len(pop.unauthorized), "bad" if pop.unauthorized else "good"),
        ("deployments", "Deployments", len(pop.deployments), ""),
        ("missed", "KPIs missed", missed_count, "bad" if missed_count else "good"),
    ]
    tiles_html = "".join(
        f'<div class="tile {css}"><b data-stat="{key}">{value}</b>{_e(label)}</div>' for key, label, value, css in tiles
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in report.notes)
    title = f"ChangeGuard change-management report {report.period.label}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>Change-management report: {_e(report.period.label)}</h1>
<p class="meta">Period <span data-stat="period-from">{report.period.start.isoformat()}</span> to
<span data-stat="period-to">{report.period.last_day.isoformat()}</span> (UTC, inclusive) - generated
{_e(iso(report.generated_at))} from {_e(report.source or "the change ledger")}</p>
<section class="tiles">{tiles_html}</section>
<section class="charts">
<figure><figcaption>Changes per week by verdict</figcaption>{changes_chart(report.weekly)}
{_legend((v, VERDICT_COLORS.get(v, OTHER_COLOR)) for v in present)}</figure>
<figure><figcaption>KPI trends (weekly, %)</figcaption>{trends_chart(report.weekly)}
{_legend((LABELS[n], TREND_COLORS[n]) for n in TREND_KPIS)}</figure>
</section>
<h2>KPIs against targets</h2>
{_kpi_table(report.kpis)}
<h2>Changes by verdict</h2>
<table style="width:auto"><thead><tr><th>Verdict</th><th>Changes</th></tr></thead><tbody>{verdict_rows}
<tr><th>Total</th><th class="num" data-stat="changes-total">{len(pop.changes)}</th></tr></tbody></table>
<h2>Unauthorized changes (<span data-stat="unauthorized-count">{len(pop.unauthorized)}</span>)</h2>
{_change_rows(pop.unauthorized, "unauthorized")}
<h2>Emergency changes (<span data-stat="emergency-count">{len(pop.emergency)}</span>)</h2>
{_change_rows(pop.emergency, "emergency")}
<h2>Rolled-back deployments (<span data-stat="rolled-back-count">{len(pop.rolled_back)}</span>)</h2>
{_deployment_rows(pop.rolled_back, "rolled-back")}
<h2>Ledger integrity (daily digests)</h2>
{_verification(report.verification)}
<h2>Activity in the period</h2>
<table style="width:auto"><thead><tr><th>Ledger entries by kind</th><th>Count</th></tr></thead><tbody>{activity}</tbody></table>
<table style="width:auto"><thead><tr><th>Alerts by severity</th><th>Count</th></tr></thead><tbody>{severities}</tbody></table>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<p class="small">Definitions: governed changes exclude EXEMPT verdicts; unauthorized = governed changes whose verdict is
not AUTHORIZED, EMERGENCY or UNVERIFIED; the change failure rate's denominator is deployments (finished in the period),
not incidents. The full population is in changes.csv; every file of this pack is listed with its SHA-256 in
manifest.json.</p>
</main></body></html>
"""
