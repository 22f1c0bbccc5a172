"""The reconciliation reads every account's and region's trail (issue 9), not only its own.

``LookupEvents`` answers for the account and region it is called in. Here write calls are made in
the central account's other region and in a member account's two regions, and none of their events
is delivered: the hourly sweep must find each of them there (through the member's read role) and
judge it with its own account and region. A member whose role cannot be assumed is named in the
outcome and alerted once, and the others are reconciled all the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from changeguard.domain.errors import CrossAccountAccessError, TrailAccessDeniedError
from changeguard.domain.policy import Policy
from changeguard.models.cloudtrail import CloudTrailRecord
from changeguard.services.outcome import Outcome
from changeguard.services.reconcile import ReconcileService
from hardening.conftest import all_ledger_entries, ledger_entries, make_harness, trail_since
from org.test_cross_account import CENTRAL, MEMBER, ORG, create_acting_role, member_clients

RECONCILE = "ReconcileChangesFunction"
OTHER_REGION = "eu-west-1"
REFUSING = "333333333333"


def _verdicts(h: Any) -> dict[str, tuple[str, str]]:
    return {e.change_id: (e.account, e.region) for e in all_ledger_entries(h) if e.entry == "VERDICT"}


def _writes(records: list[dict[str, Any]], account: str, region: str) -> set[str]:
    return {
        r["eventID"]
        for r in records
        if r["recipientAccountId"] == account
        and r["awsRegion"] == region
        and not r.get("errorCode")
        and r["eventName"] in ("CreateTopic", "CreateQueue")
    }


def test_missed_changes_of_member_accounts_and_other_regions_are_judged_where_they_happened(aws):
    h = make_harness(aws, OrganizationId=ORG, MemberAccountIds=f"{MEMBER},{REFUSING}", MemberRegions=OTHER_REGION)
    member = member_clients(aws.endpoint_url)
    member_there = member_clients(aws.endpoint_url, region=OTHER_REGION)
    create_acting_role(member, "changeguard-read-tags")
    aws.faults.fail("denied", operations=["AssumeRole"], body_contains=REFUSING)
    aws.record_read_only = True  # the lookups are recorded too: where, and as whom
    mark = len(aws.trail.records())

    # Write calls whose events never reach the correlator (nothing is delivered here).
    member("sns").create_topic(Name="member-topic")
    member_there("sqs").create_queue(QueueName="member-queue-eu")
    boto3.client("sns", region_name=OTHER_REGION).create_topic(Name="central-topic-eu")
    made = trail_since(aws, mark)
    expected = {
        (MEMBER, "us-east-1"): _writes(made, MEMBER, "us-east-1"),
        (MEMBER, OTHER_REGION): _writes(made, MEMBER, OTHER_REGION),
        (CENTRAL, OTHER_REGION): _writes(made, CENTRAL, OTHER_REGION),
    }
    assert all(len(ids) == 1 for ids in expected.values()), expected

    swept = h.invoke(RECONCILE, h.scheduled_event(RECONCILE))

    assert swept.error is None, swept.error
    verdicts = _verdicts(h)
    for (account, region), ids in expected.items():
        for change_id in ids:
            assert verdicts.get(change_id) == (account, region), (change_id, account, region)
    outcome = swept.result
    # The refusing member: named once per region, one alert for the day, the rest reconciled anyway.
    unread = [r for r in outcome["reasons"] if r.startswith("could not read the CloudTrail event history")]
    assert len(unread) == 2 and all(f"account {REFUSING}" in r for r in unread), outcome["reasons"]
    assert any(a.startswith("could not read 2 account-region(s)") for a in outcome["actions"]), outcome["actions"]
    assert [a.rsplit("/", 1)[1] for a in outcome["alert_ids"]].count("cross-account") == 1
    day = h.clock.now().strftime("%Y-%m-%d")
    assert "DENIED#reconcile_changes" in [e.entry for e in ledger_entries(h, f"acting:{REFUSING}:{day}")]

    # Read there through the member's read role, in a session naming the function, in both regions.
    assert _lookups(trail_since(aws, mark)) == {
        (CENTRAL, "us-east-1", "function role"),
        (CENTRAL, OTHER_REGION, "function role"),
        (MEMBER, "us-east-1", "changeguard-read-tags/reconcile_changes@"),
        (MEMBER, OTHER_REGION, "changeguard-read-tags/reconcile_changes@"),
    }

    # A second run finds nothing new and raises no second alert for the same day.
    entries = len(all_ledger_entries(h))
    again = h.invoke(RECONCILE, h.scheduled_event(RECONCILE))
    assert again.error is None, again.error
    assert again.result["actions"][0].startswith("judged 0 missed change(s)")
    assert again.result["alert_ids"] == []
    assert len(all_ledger_entries(h)) == entries


def test_without_member_accounts_listed_only_this_accounts_trail_is_read(aws):
    """The default: no MemberAccountIds, no MemberRegions - one account, one region, no AssumeRole."""
    h = make_harness(aws, OrganizationId=ORG)
    member = member_clients(aws.endpoint_url)
    create_acting_role(member, "changeguard-read-tags")
    aws.record_read_only = True
    mark = len(aws.trail.records())
    member("sns").create_topic(Name="member-topic")
    boto3.client("sns", region_name=OTHER_REGION).create_topic(Name="central-topic-eu")
    made = trail_since(aws, mark)

    swept = h.run_schedule(RECONCILE)

    assert swept["error"] is None, swept["error"]
    verdicts = _verdicts(h)
    assert not _writes(made, MEMBER, "us-east-1") & verdicts.keys()
    assert not _writes(made, CENTRAL, OTHER_REGION) & verdicts.keys()
    assert _lookups(trail_since(aws, mark)) == {(CENTRAL, "us-east-1", "function role")}


def _lookups(records: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(account, region, identity) of each LookupEvents call: the function's own role, or the member
    role's session (``<role>/<session name>`` up to the ``@``)."""
    found = set()
    for r in records:
        if r["eventName"] != "LookupEvents" or r.get("errorCode"):
            continue
        arn = r["userIdentity"]["arn"]
        who = (
            arn.split(":assumed-role/", 1)[1].split("@", 1)[0] + "@"
            if "/changeguard-read-tags/" in arn
            else "function role"
        )
        found.add((r["recipientAccountId"], r["awsRegion"], who))
    return found


# -- the service alone: a region whose trail refuses the lookup (an SCP, an old member stack) --------
class _Scope:
    def __init__(self) -> None:
        self.current: tuple[str | None, str | None] = (None, None)

    def acting_in(self, account: str | None, region: str | None, reason: str) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def scope() -> Any:
            before, self.current = self.current, (account, region)
            try:
                yield
            finally:
                self.current = before

        return scope()

    def acted_as(self, account: str | None) -> dict[str, str]:
        return {"account": account or CENTRAL, "role": f"arn:aws:iam::{account}:role/changeguard/changeguard-read-tags"}

    def current_account(self) -> str | None:
        return self.current[0] or CENTRAL

    def refused(self, account: str | None) -> CrossAccountAccessError | None:
        return None


class _Trail:
    """Reads nothing, and refuses the lookup in one (account, region)."""

    def __init__(self, scope: _Scope, refuse: tuple[str | None, str]) -> None:
        self.scope, self.refuse, self.read = scope, refuse, []

    def write_events(self, start: datetime, end: datetime | None = None) -> Any:
        self.read.append(self.scope.current)
        if self.scope.current == self.refuse:
            raise TrailAccessDeniedError("AccessDeniedException", "explicit deny in a service control policy")
        return iter(())


class _Ledger:
    def __init__(self) -> None:
        self.appended: list[list[Any]] = []

    def append(self, entries: list[Any]) -> bool:
        self.appended.append(entries)
        return True

    def existing(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        return set()


class _Correlate:
    def __init__(self) -> None:
        self.ledger = _Ledger()
        self.clock: Any = None

    def evaluate(self, change: Any) -> Outcome:  # pragma: no cover - nothing is read here
        raise AssertionError("no change to judge")


class _Clock:
    def now(self) -> datetime:
        return datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("refused_account", [None, MEMBER])
def test_a_region_refusing_the_lookup_is_reported_and_the_other_regions_are_still_read(refused_account):
    scope = _Scope()
    trail = _Trail(scope, (refused_account, OTHER_REGION))
    correlate = _Correlate()
    service = ReconcileService(
        function="reconcile_changes",
        correlate=correlate,  # type: ignore[arg-type]
        trail=trail,
        keys=correlate.ledger,
        policy=lambda: Policy(),
        clock=_Clock(),
        event_sources=["aws.sns"],
        scope=scope,
        member_accounts=(MEMBER,),
        regions=(OTHER_REGION, "ap-southeast-2"),
    )

    outcome = service.run("us-east-1")

    visited = [(a, r) for a in (None, MEMBER) for r in ("us-east-1", OTHER_REGION, "ap-southeast-2")]
    assert trail.read == visited  # every pair, the refused one included, none twice
    owner = refused_account or CENTRAL
    [reason] = [r for r in outcome.reasons if r.startswith("could not read")]
    assert reason.startswith(f"could not read the CloudTrail event history of {OTHER_REGION} in account {owner}")
    assert "was refused cloudtrail:LookupEvents" in reason and "AccessDeniedException" in reason
    [[fact, alert]] = correlate.ledger.appended
    assert fact.entry == "DENIED#reconcile_changes" and fact.region == OTHER_REGION
    assert "was refused cloudtrail:LookupEvents" in alert.body["alert"]["summary"]
    assert outcome.alert_ids and outcome.actions[1].startswith("could not read 1 account-region(s)")


def test_a_record_read_through_a_member_role_becomes_a_change_of_that_account_and_region():
    record = CloudTrailRecord.model_validate(
        {
            "eventVersion": "1.09",
            "eventID": "5f0d6a2e-7b7c-4c36-9a43-2c4b8f0e1a11",
            "eventTime": "2026-11-27T07:00:00Z",
            "eventSource": "sns.amazonaws.com",
            "eventName": "CreateTopic",
            "awsRegion": OTHER_REGION,
            "recipientAccountId": MEMBER,
            "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{MEMBER}:user/alice", "accountId": MEMBER},
        }
    )
    change = ReconcileService.change_of(record)
    assert (change.account, change.region) == (MEMBER, OTHER_REGION)
