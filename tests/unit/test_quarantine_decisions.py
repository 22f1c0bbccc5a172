"""Graduated quarantine as pure decisions: mark, quarantine after the grace period, release; episodes; the cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.domain.quarantine import (
    Action,
    Budget,
    ResourceRef,
    TagVerdict,
    decide,
    entry_key,
    episode_of,
    parse_ref_tag,
    quarantine_deadline,
    ref_tag_value,
)
from changeguard.domain.tags import evaluate

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
REF = ResourceRef(
    type="ec2:instance",
    resource_id="i-0e1f2a3b4c5d6e7f8",
    arn="arn:aws:ec2:us-east-1:123456789012:instance/i-0e1f2a3b4c5d6e7f8",
    account="123456789012",
    region="us-east-1",
)
UNTAGGED = evaluate({}, Policy())
TAGGED = evaluate({"ChangeTicket": "CHG-1001", "Environment": "prod", "Owner": "payments"}, Policy())


def _decide(evaluation=UNTAGGED, *, marked_after=None, quarantined=False, grace=24.0, **kw):
    return decide(
        REF,
        evaluation,
        now=NOW,
        grace_hours=grace,
        marked_after=marked_after,
        quarantined=quarantined,
        **kw,
    )


def test_an_untagged_resource_is_marked_with_a_deadline_one_grace_period_away():
    decision = _decide()
    assert decision.action is Action.MARK and decision.verdict is TagVerdict.NON_COMPLIANT
    assert decision.quarantine_after == NOW + timedelta(hours=24)
    assert not decision.due_now
    assert any("quarantine after 2026-11-26T09:00:00Z" in r for r in decision.reasons)
    assert any("ChangeTicket" in r for r in decision.reasons)


def test_a_zero_grace_period_quarantines_at_once():
    decision = _decide(grace=0)
    assert decision.action is Action.MARK and decision.due_now and decision.quarantine_after == NOW


def test_a_marked_resource_waits_for_its_deadline_then_is_quarantined():
    waiting = _decide(marked_after=NOW + timedelta(minutes=1))
    assert waiting.action is Action.NONE and waiting.verdict is TagVerdict.NON_COMPLIANT
    due = _decide(marked_after=NOW)
    assert due.action is Action.QUARANTINE
    assert _decide(marked_after=NOW - timedelta(hours=3)).action is Action.QUARANTINE


def test_a_quarantined_resource_that_still_lacks_tags_stays_as_it_is():
    decision = _decide(marked_after=NOW - timedelta(days=1), quarantined=True)
    assert decision.action is Action.NONE and "already quarantined" in decision.reasons


@pytest.mark.parametrize(
    ("marked", "quarantined", "action"),
    [(False, False, Action.NONE), (True, False, Action.UNMARK), (True, True, Action.RELEASE)],
)
def test_compliance_releases_whatever_was_done(marked, quarantined, action):
    decision = _decide(TAGGED, marked_after=NOW if marked else None, quarantined=quarantined)
    assert decision.action is action and decision.verdict is TagVerdict.COMPLIANT


@pytest.mark.parametrize(
    ("marked", "quarantined", "action"),
    [(False, False, Action.NONE), (True, False, Action.UNMARK), (True, True, Action.RELEASE)],
)
def test_the_exempt_tag_ends_any_episode(marked, quarantined, action):
    decision = _decide(
        marked_after=NOW - timedelta(days=2) if marked else None,
        quarantined=quarantined,
        exempt="tagged changeguard:exempt",
    )
    assert decision.action is action and decision.verdict is TagVerdict.EXEMPT


def test_an_exempt_principal_never_starts_or_escalates_an_episode():
    assert _decide(caller_exempt="exempt principal p").action is Action.NONE
    assert _decide(marked_after=NOW - timedelta(hours=1), caller_exempt="exempt principal p").action is Action.NONE
    # ... but a release is always allowed
    released = _decide(TAGGED, marked_after=NOW, quarantined=True, caller_exempt="exempt principal p")
    assert released.action is Action.RELEASE


def test_the_deadline_has_whole_seconds():
    assert quarantine_deadline(NOW.replace(microsecond=123456), 1.5) == NOW + timedelta(hours=1, minutes=30)


def test_the_quarantine_ref_tag_points_at_the_ledger_entry_without_a_hash():
    key = entry_key(EntryKind.QUARANTINE, NOW)
    assert key == "QUARANTINE#2026-11-25T09:00:00Z"
    value = ref_tag_value(REF.change_id, key)
    assert "#" not in value and len(value) <= 256
    assert parse_ref_tag(value) == (REF.change_id, key)
    assert parse_ref_tag("something else") is None
    assert parse_ref_tag("resource:x@MARK@2026-11-25T09:00:00Z") is None


def _entry(key: str, body: dict | None = None) -> LedgerEntry:
    return LedgerEntry(
        change_id=REF.change_id,
        entry=key,
        kind=EntryKind(key.split("#", 1)[0]),
        function="enforce_tags",
        event_time=NOW,
        recorded_at=NOW,
        body=body or {},
    )


def test_the_episode_is_read_from_the_ledger():
    after = NOW + timedelta(hours=24)
    mark = _entry(entry_key(EntryKind.MARK, after))
    quarantine = _entry(entry_key(EntryKind.QUARANTINE, after), {"saved": {"interfaces": {"eni-1": ["sg-1"]}}})
    release = _entry(entry_key(EntryKind.RELEASE, after), {"result": "RESTORED"})
    assert episode_of([]).marked_after is None and not episode_of([]).quarantined
    marked = episode_of([mark])
    assert marked.marked_after == after and not marked.quarantined
    open_ = episode_of([mark, quarantine])
    assert open_.quarantined and open_.saved == {"interfaces": {"eni-1": ["sg-1"]}}
    assert open_.quarantine_entry == "QUARANTINE#2026-11-26T09:00:00Z"
    closed = episode_of([mark, quarantine, release])
    assert closed.marked_after is None and not closed.quarantined


def test_observe_reports_and_alerts_open_no_episode():
    after = NOW + timedelta(hours=24)
    entries = [
        _entry(entry_key(EntryKind.MARK, after, observe=True)),
        _entry(entry_key(EntryKind.QUARANTINE, after, observe=True), {"saved": {}}),
        _entry(f"ALERT#enforce_tags#mark#{entry_key(EntryKind.MARK, after)}"),
    ]
    episode = episode_of(entries)
    assert episode.marked_after is None and not episode.quarantined


def test_a_new_episode_after_a_closed_one():
    first, second = NOW, NOW + timedelta(days=3)
    entries = [
        _entry(entry_key(EntryKind.MARK, first)),
        _entry(entry_key(EntryKind.RELEASE, first)),
        _entry(entry_key(EntryKind.MARK, second)),
    ]
    assert episode_of(entries).marked_after == second


def _at(entry: LedgerEntry, recorded_at: datetime) -> LedgerEntry:
    return entry.model_copy(update={"recorded_at": recorded_at})


def test_a_release_closes_every_mark_recorded_before_it():
    """Two events at once can each mark, a second apart; the release names the latest only. A mark
    left open would be a deadline long past when the resource next loses a tag: no grace period."""
    first, second = NOW + timedelta(hours=24), NOW + timedelta(hours=24, seconds=1)
    entries = [
        _at(_entry(entry_key(EntryKind.MARK, first)), NOW),
        _at(_entry(entry_key(EntryKind.MARK, second)), NOW + timedelta(seconds=1)),
        _at(_entry(entry_key(EntryKind.RELEASE, second)), NOW + timedelta(hours=1)),
    ]
    assert episode_of(entries).marked_after is None
    later = NOW + timedelta(days=2, hours=24)
    assert (
        episode_of([*entries, _at(_entry(entry_key(EntryKind.MARK, later)), NOW + timedelta(days=2))]).marked_after
        == later
    )


def test_a_mark_recorded_after_a_release_is_open_even_with_an_earlier_deadline():
    """The grace period was shortened in between: the new episode's deadline is before the released
    one's, and it is open all the same (recording order decides, not the deadline)."""
    released, new = NOW + timedelta(hours=72), NOW + timedelta(hours=3)
    entries = [
        _at(_entry(entry_key(EntryKind.MARK, released)), NOW),
        _at(_entry(entry_key(EntryKind.RELEASE, released)), NOW + timedelta(hours=1)),
        _at(_entry(entry_key(EntryKind.MARK, new)), NOW + timedelta(hours=2)),
        _at(_entry(entry_key(EntryKind.QUARANTINE, new), {"saved": {"a": 1}}), NOW + timedelta(hours=3)),
    ]
    episode = episode_of(entries)
    assert episode.quarantined and episode.marked_after == new


def test_the_cap_counts_quarantines_and_remembers_what_it_skipped():
    budget = Budget(2)
    assert budget.take("a") and budget.take("b")
    assert not budget.take("c") and not budget.take("d")
    assert budget.hit and budget.used == 2 and budget.skipped == ["c", "d"]
    assert Budget(0).take("x") is False
