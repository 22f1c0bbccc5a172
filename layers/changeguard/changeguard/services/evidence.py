"""The ledger's daily digests and the evidence pack auditors sample from.

* :class:`DigestService` (function ``write_digest``, daily): chains each settled day's item
  hashes to the previous day's digest and stores the digest in the evidence bucket.
* :class:`EvidenceService`: a period's evidence pack - the full change population as CSV, the
  unauthorized, emergency and rolled-back lists with their tickets and approvals, the KPI
  table, the result of verifying the period's items against their digests, and one
  self-contained HTML report - plus a manifest with the SHA-256 of every file.
* :class:`BuildEvidenceService` (function ``build_evidence``): the weekly and monthly KPI
  reports and the quarterly evidence pack, written to the evidence bucket; a missed KPI or a
  failed digest verification becomes an alert (through the ledger's outbox, as every alert).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from changeguard.domain.alerts import Alert, alert_entry
from changeguard.domain.digest import (
    LATE_LOOKBACK_DAYS,
    DailyDigest,
    DayStatus,
    DayVerification,
    LedgerItemView,
    VerificationReport,
    days_to_digest,
    make_digest,
    verify_period,
)
from changeguard.domain.errors import InvalidEventError, first_error
from changeguard.domain.kpis import KpiTargets, Period, PeriodError, PeriodKind
from changeguard.domain.verdicts import Severity
from changeguard.models.reports import Cadence, ReportRequest, ScheduledEvent
from changeguard.models.scheduled import SCHEDULED_EVENT, parse_scheduled
from changeguard.ports import Clock, Ledger, TicketSource
from changeguard.services.outcome import Outcome
from changeguard.services.report import (
    LedgerDays,
    LedgerSnapshot,
    Report,
    build_report,
    changes_csv,
    deployments_csv,
    iso,
    item_view,
    kpi_table_text,
    kpis_csv,
    kpis_json,
    read_period,
    rolled_back_csv,
    tickets_for,
    verification_csv,
)
from changeguard.services.report_html import render_html
from changeguard.settings import Wiring

DIGEST_PREFIX = "digests/"
#: Days one run of write_digest digests at most; a longer backlog continues on the next run.
DIGESTS_PER_RUN = 62


class ObjectStore(Protocol):
    """Where digests and packs are kept (``EvidenceBucket``; a local folder for the CLI)."""

    def put(self, key: str, body: bytes, content_type: str) -> None: ...


class DigestBucket(ObjectStore, Protocol):
    def put_if_absent(self, key: str, body: bytes, content_type: str) -> bool: ...

    def get(self, key: str) -> bytes | None: ...

    def keys(self, prefix: str) -> list[str]: ...


class UnreadableDigestError(ValueError):
    """A stored digest is not a digest any more (edited or corrupted)."""


# -- digests -------------------------------------------------------------------------------------
def digest_key(day: date) -> str:
    return f"{DIGEST_PREFIX}{day.isoformat()}.json"


class DigestStore:
    """Daily digests as ``digests/YYYY-MM-DD.json`` (lexicographic order is chronological)."""

    def __init__(self, bucket: DigestBucket) -> None:
        self.bucket = bucket

    def days(self) -> list[date]:
        out: list[date] = []
        for key in self.bucket.keys(DIGEST_PREFIX):
            name = key[len(DIGEST_PREFIX) :].removesuffix(".json")
            try:
                out.append(date.fromisoformat(name))
            except ValueError:
                continue
        return sorted(out)

    def load(self, day: date) -> DailyDigest | None:
        raw = self.bucket.get(digest_key(day))
        if raw is None:
            return None
        try:
            return DailyDigest.model_validate_json(raw)
        except ValidationError as exc:
            raise UnreadableDigestError(
                f"{digest_key(day)} is not a valid digest: {exc.error_count()} error(s)"
            ) from exc

    def save(self, digest: DailyDigest) -> bool:
        body = (digest.model_dump_json(indent=1) + "\n").encode()
        return self.bucket.put_if_absent(digest_key(digest.day), body, "application/json")


class DigestService:
    """Write the digest of every settled day not digested yet, oldest first, each chained to the last."""

    def __init__(self, *, function: str, ledger: LedgerDays, store: DigestStore, clock: Clock) -> None:
        self.function = function
        self.ledger = ledger
        self.store = store
        self.clock = clock

    def handle(self, event: Mapping[str, Any]) -> Outcome:
        """A schedule's time later than now is rejected: a digest is permanent (If-None-Match, Object Lock)."""
        scheduled = parse_scheduled(event, ScheduledEvent, now=self.clock.now())
        return self.run(scheduled.time)

    def run(self, at: datetime) -> Outcome:
        """Digest what is due at ``at`` (the schedule's time, so a retried run does the same work).

        Never a day not yet due by the clock: a digest of a day still open would be written once, for
        good, without the day's later items, which verification then only calls late (not covered).
        """
        existing = self.store.days()
        latest = existing[-1] if existing else None
        previous = self.store.load(latest) if latest else None
        actions: list[str] = []
        # Each day's items, read once per run: a day is its own digest's items, then the look-back
        # of the next LATE_LOOKBACK_DAYS digests (their late items: recorded on theirs, filed here).
        read: dict[date, list[LedgerItemView]] = {}
        for day in days_to_digest(latest, min(at, self.clock.now()), DIGESTS_PER_RUN):
            # The cut-off, before the items are read: an item recorded after it may be missing from
            # the digest (verification reports it late); one recorded well before it may not.
            cutoff = self.clock.now()
            since = day - timedelta(days=LATE_LOOKBACK_DAYS)
            for old in [d for d in read if d < since]:
                del read[old]
            for back in range(LATE_LOOKBACK_DAYS, -1, -1):
                wanted = day - timedelta(days=back)
                if wanted not in read:
                    read[wanted] = [item_view(item)[0] for item in self.ledger.items_on(wanted.isoformat())]
            earlier = {d: v for d, v in read.items() if d < day}
            digest = make_digest(day, read[day], previous, created_at=cutoff, earlier=earlier, late_since=since)
            if self.store.save(digest):
                actions.append(f"digested {day}: {digest.item_count} item(s), {digest.digest[:16]}")
            else:  # written meanwhile by an overlapping run: chain on the stored one
                stored = self.store.load(day)
                if stored is None:  # never chain on a digest that is not stored: the chain would break
                    raise RuntimeError(f"{digest_key(day)} was reported written by another run but cannot be read")
                digest = stored
                actions.append(f"{day} already digested")
            previous = digest
        return Outcome(function=self.function, actions=actions or ["nothing due"])


# -- the evidence pack ---------------------------------------------------------------------------
@dataclass
class EvidencePack:
    report: Report
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    def write(self, store: ObjectStore, prefix: str) -> list[str]:
        """Write every file under ``prefix``; the manifest last, so a complete manifest means a complete pack."""
        keys = []
        for name, (body, content_type) in sorted(self.files.items(), key=lambda kv: kv[0] == "manifest.json"):
            store.put(prefix + name, body, content_type)
            keys.append(prefix + name)
        return keys


_README = """ChangeGuard evidence pack {label} ({describe}, UTC)
Generated {generated} from {source}.

changes.csv              The full population of changes in the period (sample from this file).
unauthorized.csv         Governed changes whose verdict is not AUTHORIZED, EMERGENCY or UNVERIFIED,
                         with their tickets and approvals.
emergency.csv            Emergency changes, with their tickets, approvals and retro-approval deadlines.
rolled_back.csv          Deployments that were rolled back (or stopped and rolled back).
deployments.csv          Every deployment: counted (finished in the period), in flight, rollback deployments,
                         and those that are not releases (EC2 Auto Scaling's, CodeDeploy's auto-updates).
kpis.csv, kpis.json      The KPI table: value, target, status, numerator and denominator of each KPI.
digest-verification.*    The period's ledger items checked against the daily digest chain.
report.html              The same, as one self-contained page with charts (no network needed).
manifest.json            The SHA-256 of every file above.

Digest verification: {verification}
KPIs missed: {missed}
"""


def render_pack(report: Report) -> dict[str, tuple[bytes, str]]:
    pop = report.population
    files: dict[str, tuple[bytes, str]] = {
        "changes.csv": (changes_csv(pop.changes), "text/csv"),
        "unauthorized.csv": (changes_csv(pop.unauthorized), "text/csv"),
        "emergency.csv": (changes_csv(pop.emergency), "text/csv"),
        "rolled_back.csv": (rolled_back_csv(pop), "text/csv"),
        "deployments.csv": (deployments_csv(pop), "text/csv"),
        "kpis.csv": (kpis_csv(report.kpis), "text/csv"),
        "kpis.json": (kpis_json(report), "application/json"),
        "kpis.txt": ((kpi_table_text(report) + "\n").encode(), "text/plain; charset=utf-8"),
        "report.html": (render_html(report).encode(), "text/html; charset=utf-8"),
    }
    verification = report.verification
    if verification is not None:
        data = verification.model_dump(mode="json") | {"ok": verification.ok, "summary": verification.summary}
        files["digest-verification.json"] = ((json.dumps(data, indent=1) + "\n").encode(), "application/json")
        files["digest-verification.csv"] = (verification_csv(verification), "text/csv")
    files["README.txt"] = (
        _README.format(
            label=report.period.label,
            describe=report.period.describe,
            generated=iso(report.generated_at),
            source=report.source or "the change ledger",
            verification=verification.summary if verification else "not verified (no digest store)",
            missed=", ".join(k.label for k in report.missed) or "none",
        ).encode(),
        "text/plain; charset=utf-8",
    )
    manifest = {
        "period": report.period.label,
        "from": report.period.start.isoformat(),
        "to": report.period.last_day.isoformat(),
        "generated_at": iso(report.generated_at),
        "source": report.source,
        "changes": len(pop.changes),
        "kpis_missed": [k.name for k in report.missed],
        "digest_verification": verification.summary if verification else None,
        "digest_verification_ok": verification.ok if verification else None,
        "files": {
            name: {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
            for name, (body, _) in sorted(files.items())
        },
    }
    files["manifest.json"] = ((json.dumps(manifest, indent=1) + "\n").encode(), "application/json")
    return files


class EvidenceService:
    """Builds a period's report and evidence pack from the ledger (and the digests, when there are any)."""

    def __init__(
        self,
        *,
        ledger: LedgerDays,
        digests: DigestStore | None,
        tickets: TicketSource | None,
        targets: Callable[[], KpiTargets],
        clock: Clock,
        source: str = "",
    ) -> None:
        self.ledger = ledger
        self.digests = digests
        self.tickets = tickets
        self.targets = targets
        self.clock = clock
        self.source = source

    def build(self, period: Period) -> EvidencePack:
        now = self.clock.now()
        snapshot = read_period(self.ledger, period)
        tickets, errors = tickets_for(snapshot.entries, self.tickets)
        verification = self.verify(snapshot, now) if self.digests is not None else None
        notes = [f"ticket source: {e}" for e in errors]
        report = build_report(
            snapshot,
            targets=self.targets(),
            tickets=tickets,
            generated_at=now,
            verification=verification,
            source=self.source,
            notes=notes,
        )
        return EvidencePack(report=report, files=render_pack(report))

    def verify(self, snapshot: LedgerSnapshot, now: datetime) -> VerificationReport:
        """The period's items against their digests (and each digest against the one before)."""
        assert self.digests is not None
        period = snapshot.period
        stored = set(self.digests.days())
        # The digests after the period: their late sections cover the period's items recorded on their days.
        after: list[date] = []
        for n in range(1, LATE_LOOKBACK_DAYS + 1):
            if period.last_day >= date.max - timedelta(days=n):
                break
            after.append(period.last_day + timedelta(days=n))
        wanted = [period.start - timedelta(days=1), *period.days(), *after]
        digests: dict[date, DailyDigest] = {}
        unreadable: dict[date, str] = {}
        for day in wanted:
            if day not in stored:
                continue
            try:
                found = self.digests.load(day)
            except UnreadableDigestError as exc:
                unreadable[day] = str(exc)
                continue
            if found is not None:
                digests[day] = found
        # The look-ahead day too, once it is digested: its ROLLBACK and STOP entries decide the
        # period's change failure rate (``after_the_period``), so deleting one must fail this period's
        # verification, not only the next period's. Before its digest is written (the weekly and
        # monthly reports run before it, on that day) nothing can cover them; it is left out rather
        # than called undigested, which would fail a ledger nobody touched.
        lookahead = sorted(d for d in snapshot.views if d >= period.end and d in digests)
        report = verify_period(
            period.label,
            [*period.days(), *lookahead],
            digests,
            snapshot.views,
            chain_start=min(stored) if stored else None,
            now=now,
        )
        if not unreadable:
            return report
        days = tuple(
            DayVerification(day=d.day, status=DayStatus.TAMPERED, problems=(unreadable[d.day],))
            if d.day in unreadable
            else d
            for d in report.days
        )
        return report.model_copy(update={"days": days})


class LocalFolder:
    """An ``ObjectStore`` on disk (the CLI's ``--out``): keys are paths below ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def put(self, key: str, body: bytes, content_type: str) -> None:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{key!r} would be written outside {self.root}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


# -- the scheduled function ----------------------------------------------------------------------
_PREVIOUS: Mapping[str, PeriodKind] = {
    "weekly": PeriodKind.WEEK,
    "monthly": PeriodKind.MONTH,
    "quarterly": PeriodKind.QUARTER,
}


def pack_prefix(cadence: Cadence, period: Period) -> str:
    """Quarterly packs are *the* evidence; the weekly and monthly ones are KPI reports."""
    if cadence == "quarterly":
        return f"evidence/{period.label}/"
    return f"reports/{cadence}/{period.label}/"


def request_of(event: Any, now: datetime) -> tuple[Cadence, Period]:
    """Which report an event asks for: a schedule (the last complete period) or an explicit request.

    A schedule's time later than ``now``, and an explicit request for a period that ends after
    ``now``, are rejected: either would report on a period not over yet, and its alerts' keys (one
    alert per report and kind) would then swallow the real report's alerts when that period ends.
    A preview of the running period is the CLI's ``changeguard report``, which records no alert.
    """
    if not isinstance(event, Mapping):
        raise InvalidEventError("event is not a JSON object")
    try:
        if event.get("detail-type") == SCHEDULED_EVENT:
            scheduled = parse_scheduled(event, ScheduledEvent, now=now)
            cadence = scheduled.cadence()
            if cadence is None or cadence == "custom":
                raise InvalidEventError(f"rule {scheduled.rule_name!r} names no weekly, monthly or quarterly report")
            return cadence, Period.previous(_PREVIOUS[cadence], scheduled.time)
        request = ReportRequest.model_validate(event)
        if request.period:
            period = Period.parse(request.period)
        elif request.from_ and request.to:
            period = Period.between(request.from_, request.to)
        elif request.report in _PREVIOUS:
            raise InvalidEventError("an on-demand report needs 'period' or 'from' and 'to'")
        else:
            raise InvalidEventError("a custom report needs 'from' and 'to'")
    except ValidationError as exc:
        raise InvalidEventError(f"not a report request: {first_error(exc)}") from exc
    except PeriodError as exc:
        raise InvalidEventError(f"not a report request: {exc}") from exc
    if period.end_at > now:
        raise InvalidEventError(
            f"period {period.label} ends at {period.end_at.isoformat()}, after now ({now.isoformat()}): it is not"
            " over, and its report's alerts would take the place of the real report's; preview it with"
            " `changeguard report`, which records no alert"
        )
    return request.report, period


class BuildEvidenceService:
    """Build the report a schedule (or an operator) asks for, write it to the evidence bucket, alert on it."""

    def __init__(
        self,
        *,
        function: str,
        evidence: EvidenceService,
        bucket: ObjectStore,
        location: str,
        ledger: Ledger,
        clock: Clock,
        account: str | None = None,
        region: str | None = None,
    ) -> None:
        self.function = function
        self.evidence = evidence
        self.bucket = bucket
        self.location = location
        self.ledger = ledger
        self.clock = clock
        self.account = account
        self.region = region

    def handle(self, event: Any) -> Outcome:
        cadence, period = request_of(event, self.clock.now())
        if self.region is None and isinstance(event.get("region"), str):
            self.region = event["region"]
        self.evidence.clock = self.clock
        pack = self.evidence.build(period)
        prefix = pack_prefix(cadence, period)
        keys = pack.write(self.bucket, prefix)
        report = pack.report
        where = f"{self.location}/{prefix}"
        actions = [f"wrote {len(keys)} file(s) to {where}"]
        alerts = self.alerts(cadence, report, f"{where}report.html")
        # Each alert is its own conditional put: the alerts of one report are independent facts, and a
        # re-run that finds something new (tampering, after the scheduled run's kpi-missed) must record
        # it although an earlier alert of the same report is already in the ledger.
        now = self.clock.now()
        new = [a for a in alerts if self.ledger.append([alert_entry(a, now, now)])]
        alert_ids = [a.alert_id for a in new]
        if new:
            actions.append(f"alerted: {', '.join(a.kind for a in new)}")
        if old := [a for a in alerts if a not in new]:
            actions.append(f"already recorded for this report: {', '.join(a.kind for a in old)}")
        return Outcome(
            function=self.function,
            change_id=f"report:{cadence}:{period.label}",
            actions=actions,
            reasons=[f"{k.label}: {k.display} (target {k.target_display})" for k in report.missed],
            alert_ids=alert_ids,
        )

    def alerts(self, cadence: Cadence, report: Report, html: str) -> list[Alert]:
        """One alert per report and kind: missed KPI targets, and a failed digest verification."""
        change_id = f"report:{cadence}:{report.period.label}"
        common: dict[str, Any] = {
            "change_id": change_id,
            "function": self.function,
            "event_time": self.clock.now(),
            "account": self.account,
            "region": self.region,
            "resource_type": "report",
            "resources": (html,),
        }
        out: list[Alert] = []
        if report.missed:
            labels = ", ".join(k.label for k in report.missed)
            out.append(
                Alert(
                    alert_id=Alert.make_id(change_id, self.function, "kpi-missed"),
                    kind="kpi-missed",
                    severity=Severity.HIGH if report.population.unauthorized else Severity.MEDIUM,
                    subject=f"{report.period.label} change KPIs missed: {labels}",
                    summary=(
                        f"The {cadence} change-management report for {report.period.describe} missed"
                        f" {len(report.missed)} of {sum(1 for k in report.kpis if k.target is not None)} targets."
                    ),
                    reasons=tuple(f"{k.label}: {k.display} (target {k.target_display})" for k in report.missed),
                    actions=(f"wrote the report to {html}",),
                    remediation=(
                        "Open the report, follow up each unauthorized and emergency change with its owner,"
                        " and record the outcome on the ticket. Targets are tunable (kpi-targets parameter)."
                    ),
                    **common,
                )
            )
        verification = report.verification
        if verification is not None and not verification.ok:
            bad = [d for d in verification.days if not d.status.ok]
            tampered = [d for d in bad if d.status is DayStatus.TAMPERED]
            out.append(
                Alert(
                    alert_id=Alert.make_id(change_id, self.function, "ledger-integrity"),
                    kind="ledger-integrity",
                    severity=Severity.CRITICAL if tampered else Severity.HIGH,
                    subject=f"Ledger digest verification failed for {report.period.label}: {len(bad)} day(s)",
                    summary=(
                        "Ledger items no longer match their daily digests, or settled days have no digest."
                        " The change ledger may have been altered."
                    ),
                    reasons=tuple(_day_reason(d) for d in bad[:20]),
                    actions=(f"wrote the verification to {html.rsplit('/', 1)[0]}/digest-verification.json",),
                    remediation=(
                        "Compare the listed items with the digests in the evidence bucket (their earlier versions"
                        " are kept), find who wrote to the ledger table (CloudTrail data events), and run"
                        " write_digest for undigested days."
                    ),
                    **common,
                )
            )
        return out


def _day_reason(day: DayVerification) -> str:
    parts = [f"{day.day}: {day.status.value}"]
    for name in ("missing", "altered", "inserted"):
        keys: Sequence[str] = getattr(day, name)
        if keys:
            parts.append(f"{len(keys)} {name}")
    parts.extend(day.problems[:2])
    return "; ".join(parts)


class EvidenceWiring(Wiring):
    """The digest and evidence functions' wiring: the evidence bucket and the account that must own it."""

    evidence_bucket_name: str
    evidence_bucket_owner: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EvidenceWiring:
        wiring = super().from_env(env)
        assert isinstance(wiring, EvidenceWiring)
        return wiring
