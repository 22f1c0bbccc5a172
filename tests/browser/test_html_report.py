"""The HTML report in headless Chromium: not blank, charts drawn, numbers as rendered match the CSV.

Needs Debian's ``chromium`` (``apt-get install -y chromium``); skipped, with the reason, without it.
The screenshot is decoded with the standard library (zlib) and checked pixel by pixel; the numbers
are read from the DOM as the browser built it (``--dump-dom``), not from the file we wrote.
"""

from __future__ import annotations

import csv
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from statistics import fmean

import pytest
from changeguard.adapters.dynamodb import entry_to_item
from changeguard.domain.change import Actor, ActorKind, Change
from changeguard.domain.kpis import KpiTargets, Period
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.verdicts import Judgement, Reason, Severity, Verdict
from changeguard.services.evidence import DigestService, DigestStore, EvidenceService, LocalFolder
from changeguard.services.report_html import TREND_COLORS, VERDICT_COLORS
from fakes import FakeClock, MemoryBucket, ShardedDayIndex

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PERIOD = Period.parse("2026-Q3")
START = datetime(2026, 7, 6, 9, 0, tzinfo=UTC)  # Monday of 2026-W28
H = timedelta(hours=1)


# -- a quarter of ledger -------------------------------------------------------------------------
def _verdict(n: int, verdict: Verdict, at: datetime, ticket: str | None, lead: timedelta | None) -> LedgerEntry:
    change = Change(
        change_id=f"evt-{n:03d}",
        event_time=at,
        account="123456789012",
        region="us-east-1",
        service="lambda",
        action="UpdateFunctionCode",
        event_name="UpdateFunctionCode20150331v2",
        resources=(f"arn:aws:lambda:us-east-1:123456789012:function:svc-{n % 7}",),
        actor=Actor(arn=f"arn:aws:sts::123456789012:assumed-role/dev/user{n % 5}", kind=ActorKind.ASSUMED_ROLE),
    )
    judgement = Judgement(
        verdict=verdict,
        reasons=(Reason(verdict=verdict, detail=f"{verdict.value} case {n}"),),
        severity=Severity.LOW,
        ticket_id=ticket,
    )
    body: dict = {
        "change": change.model_dump(mode="json"),
        "judgement": judgement.model_dump(mode="json"),
        "mode": "enforce",
    }
    if ticket and lead is not None:
        body["ticket"] = {
            "ticket_id": ticket,
            "type": "emergency" if verdict is Verdict.EMERGENCY else "normal",
            "status": "approved",
            "approvals": [{"approver": f"approver{n % 3}@example.com", "approved_at": (at - lead).isoformat()}],
        }
    return LedgerEntry(
        change_id=change.change_id,
        entry="VERDICT",
        kind=EntryKind.VERDICT,
        function="correlate_change",
        event_time=at,
        recorded_at=at + timedelta(minutes=2),
        verdict=verdict.value,
        severity="low",
        ticket_id=ticket,
        account=change.account,
        region=change.region,
        body=body,
    )


def _ledger() -> list[LedgerEntry]:
    """Twelve weeks of changes whose mix shifts from week to week, and some deployments."""
    cycle = [
        Verdict.AUTHORIZED, Verdict.AUTHORIZED, Verdict.AUTHORIZED, Verdict.NO_TICKET, Verdict.AUTHORIZED,
        Verdict.EMERGENCY, Verdict.EXEMPT, Verdict.NOT_APPROVED, Verdict.AUTHORIZED, Verdict.SELF_APPROVED,
    ]  # fmt: skip
    entries: list[LedgerEntry] = []
    n = 0
    for week in range(12):
        for i in range(3 + week % 4):
            verdict = cycle[(week * 3 + i) % len(cycle)]
            at = START + timedelta(days=7 * week + i % 5, hours=i)
            ticket = None if verdict in (Verdict.NO_TICKET, Verdict.EXEMPT) else f"CHG-{2000 + n}"
            entries.append(_verdict(n, verdict, at, ticket, timedelta(hours=2 + n % 9)))
            n += 1
        start = START + timedelta(days=7 * week + 2, hours=5)
        did = f"d-{week:02d}"
        finish = start + timedelta(minutes=8 + week)
        state = "FAILURE" if week % 5 == 4 else "SUCCESS"
        for at, body in (
            (start, {"deployment_id": did, "state": "START", "started_at": start.isoformat()}),
            (
                finish,
                {
                    "deployment_id": did,
                    "state": state,
                    "started_at": start.isoformat(),
                    "finished_at": finish.isoformat(),
                    "rolled_back": week % 6 == 5,
                },
            ),
        ):
            entries.append(
                LedgerEntry(change_id=f"deployment:{did}", entry=f"DEPLOYMENT#{body['state']}", kind=EntryKind.DEPLOYMENT,
                            function="guard_deployment", event_time=at, recorded_at=at, body=body)
            )  # fmt: skip
    return entries


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory) -> Path:
    days = ShardedDayIndex(entry_to_item(e) for e in _ledger())
    store = DigestStore(MemoryBucket())
    digests = DigestService(
        function="write_digest", ledger=days, store=store, clock=FakeClock(datetime(2026, 7, 1, tzinfo=UTC))
    )
    digests.run(datetime(2026, 7, 2, 3, 0, tzinfo=UTC))  # the chain starts before the quarter
    digests.clock = FakeClock(datetime(2026, 10, 3, 3, 15, tzinfo=UTC))
    while digests.run(datetime(2026, 10, 3, 3, 15, tzinfo=UTC)).actions != ["nothing due"]:
        pass  # a long backlog takes more than one run
    service = EvidenceService(
        ledger=days,
        digests=store,
        tickets=None,
        targets=KpiTargets,
        clock=FakeClock(datetime(2026, 10, 3, 6, 0, tzinfo=UTC)),
        source="a hand-made ledger",
    )
    pack = service.build(PERIOD)
    assert pack.report.verification is not None and pack.report.verification.ok
    root = tmp_path_factory.mktemp("pack")
    pack.write(LocalFolder(root), "")
    return root


# -- Chromium ------------------------------------------------------------------------------------
def _chromium(tmp: Path, *args: str) -> bytes:
    if not CHROMIUM:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium); CI installs it")
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout


def _png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes) with zlib alone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6), (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            upper_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else upper_left)) & 0xFF
        pixels.extend(tuple(line[x : x + 3]) for x in range(0, stride, channels))  # type: ignore[misc]
        previous = line
    return width, height, pixels


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return int(hex_color[1:3], 16), int(hex_color[3:5], 16), int(hex_color[5:7], 16)


def _near(counts: Counter, color: tuple[int, int, int], tolerance: int = 6) -> int:
    return sum(n for c, n in counts.items() if all(abs(a - b) <= tolerance for a, b in zip(c, color, strict=True)))


class _Dom(HTMLParser):
    """Collects the ``data-`` values the report exposes, with the text the browser put in them."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[dict[str, str]] = []
        self.kpi: dict[str, str] = {}
        self.stat: dict[str, str] = {}
        self.verdicts: dict[str, str] = {}
        self.rects: list[dict[str, str]] = []
        self.points: list[dict[str, str]] = []
        self.lines: list[str] = []
        self.rows: dict[str, list[str]] = {}
        self.list_names: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "rect" and "data-verdict" in a:
            self.rects.append(a)
        if tag == "circle" and "data-kpi-point" in a:
            self.points.append(a)
        if tag == "polyline" and "data-kpi-line" in a:
            self.lines.append(a["data-kpi-line"])
        if "data-list" in a:
            self.list_names.append(a["data-list"])
            self.rows.setdefault(a["data-list"], [])
        if tag == "tr" and "data-change-id" in a and self.list_names:
            self.rows[self.list_names[-1]].append(a["data-change-id"])
        if tag in ("br", "meta", "line", "circle", "rect", "polyline", "i"):
            return
        self.stack.append({**a, "_text": ""})

    def handle_endtag(self, tag):
        if tag in ("br", "meta", "line", "circle", "rect", "polyline", "i") or not self.stack:
            return
        node = self.stack.pop()
        text = node["_text"].strip()
        if self.stack:
            self.stack[-1]["_text"] += node["_text"]
        for attr, target in (("data-kpi", self.kpi), ("data-stat", self.stat), ("data-verdict-count", self.verdicts)):
            if attr in node:
                target[node[attr]] = text
        if tag == "table" and self.list_names and node.get("data-list") == self.list_names[-1]:
            self.list_names.pop()

    def handle_data(self, data):
        if self.stack:
            self.stack[-1]["_text"] += data


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def rendered(pack_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chromium")
    url = (pack_dir / "report.html").as_uri()
    shot = tmp / "report.png"
    _chromium(tmp, "--window-size=1280,1500", f"--screenshot={shot}", url)
    dom = _chromium(tmp, "--virtual-time-budget=2000", "--dump-dom", url).decode()
    return shot.read_bytes(), dom


def test_the_screenshot_is_not_blank_and_the_charts_are_drawn(pack_dir, rendered):
    png, _ = rendered
    width, height, pixels = _png_pixels(png)
    assert (width, height) == (1280, 1500)
    counts = Counter(pixels)
    white = counts[(255, 255, 255)]
    assert white < 0.97 * len(pixels), "the page is (nearly) blank"
    assert len(counts) > 200, "too few colours for a page with text and charts"
    # Bars: every verdict of the period has its colour drawn over far more pixels than its
    # 10x10 legend square and table marker could account for.
    verdicts = Counter(r["verdict"] for r in _csv(pack_dir / "changes.csv"))
    assert len(verdicts) >= 5
    for verdict in verdicts:
        drawn = _near(counts, _rgb(VERDICT_COLORS[verdict]))
        assert drawn > 600, (verdict, drawn)
    for verdict in set(VERDICT_COLORS) - set(verdicts):
        assert _near(counts, _rgb(VERDICT_COLORS[verdict]), 2) < 250, verdict  # not drawn: no bar
    # Trend lines: each weekly KPI line is longer than its legend square.
    for name, color in TREND_COLORS.items():
        drawn = _near(counts, _rgb(color), 10)
        assert drawn > 300, (name, drawn)


def test_the_numbers_the_browser_rendered_match_the_csv(pack_dir, rendered):
    _, html = rendered
    dom = _Dom()
    dom.feed(html)
    changes = _csv(pack_dir / "changes.csv")
    governed = [r for r in changes if r["governed"] == "TRUE"]
    kpis = {r["name"]: r for r in _csv(pack_dir / "kpis.csv")}

    # Headline counts and the verdict table.
    assert int(dom.stat["changes"]) == int(dom.stat["changes-total"]) == len(changes)
    assert int(dom.stat["governed"]) == len(governed)
    assert {v: int(n) for v, n in dom.verdicts.items()} == dict(Counter(r["verdict"] for r in changes))
    # The bars add up to the population, week by week and verdict by verdict.
    assert sum(int(r["data-count"]) for r in dom.rects) == len(changes)
    by_verdict: Counter = Counter()
    for r in dom.rects:
        by_verdict[r["data-verdict"]] += int(r["data-count"])
    assert dict(by_verdict) == dict(Counter(r["verdict"] for r in changes))
    assert set(dom.lines) == set(TREND_COLORS)

    # The lists: the same changes as the CSV files.
    unauthorized = _csv(pack_dir / "unauthorized.csv")
    assert {r["change_id"] for r in unauthorized} == {r["change_id"] for r in changes if r["unauthorized"] == "TRUE"}
    assert sorted(dom.rows["unauthorized"]) == sorted(r["change_id"] for r in unauthorized)
    assert int(dom.stat["unauthorized-count"]) == len(unauthorized) == int(dom.kpi["unauthorized_changes"])
    emergency = _csv(pack_dir / "emergency.csv")
    assert sorted(dom.rows["emergency"]) == sorted(r["change_id"] for r in emergency)

    # Each KPI as rendered equals the value recomputed from the population CSVs (and kpis.csv).
    def pct(part: list, whole: list) -> float:
        return round(100 * len(part) / len(whole), 1)

    expected = {
        "changes_with_tickets_pct": pct([r for r in governed if r["with_ticket"] == "TRUE"], governed),
        "emergency_changes_pct": pct([r for r in governed if r["emergency"] == "TRUE"], governed),
        "tag_compliance_pct": pct(
            [r for r in governed if r["tag_compliant"] == "TRUE"], [r for r in governed if r["tag_compliant"]]
        ),
        "approval_lead_time_hours": round(
            fmean(
                float(r["approval_lead_hours"])
                for r in governed
                if r["with_ticket"] == "TRUE" and r["approval_lead_hours"]
            ),
            1,
        ),
    }
    deployments = [r for r in _csv(pack_dir / "deployments.csv") if r["category"] == "counted"]
    failed = [r for r in deployments if r["failed"] == "TRUE"]
    expected["change_success_rate"] = round(100 - 100 * len(failed) / len(deployments), 1)
    expected["rollback_rate"] = pct([r for r in deployments if r["rolled_back"] == "TRUE"], deployments)
    ok = [r for r in deployments if r["failed"] == "FALSE"]
    expected["mean_time_to_deploy_minutes"] = round(fmean(float(r["duration_minutes"]) for r in ok), 1)
    for name, value in expected.items():
        assert float(dom.kpi[name]) == pytest.approx(value, abs=0.05), name
        assert float(kpis[name]["value"]) == pytest.approx(value, abs=0.05), name
    assert dom.stat["digest-status"] == "OK"
    assert dom.stat["period-from"] == "2026-07-01" and dom.stat["period-to"] == "2026-09-30"
    # Every week of the quarter has a bar slot; weeks' KPI points carry the values drawn.
    assert {p["data-kpi-point"] for p in dom.points} == set(TREND_COLORS)
    assert date.fromisoformat(dom.stat["period-to"]) == PERIOD.last_day
