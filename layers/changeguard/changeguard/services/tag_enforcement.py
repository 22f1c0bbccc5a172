"""Tag enforcement: judge a resource's tags, then mark, quarantine or release it, and record why.

One engine, :class:`Enforcer`, carries out the decision for one resource; the event-driven
:class:`TagEnforcementService` (CloudTrail calls, Config rule verdicts) and the scheduled sweep
(:mod:`changeguard.services.quarantine_sweep`) both use it. Only the sweep quarantines: it runs
one at a time and its blast-radius cap counts per run, where events arrive in bursts and each
would have a cap of its own. Events mark, release and unmark (releasing only ever undoes).

Order of operations, chosen so that a crash at any point leaves something a retry converges:

* mark: ledger (MARK + alert), then the ``quarantine-after`` tag;
* quarantine: ledger first (QUARANTINE with the saved state: the intent), then the changes, then
  what they did (``#contained`` + alert, or ``#failed`` + alert), then the ``quarantine-ref`` tag.
  The saved state is never only in memory, and no alert says "quarantined" before it is;
* release: the restore first, then the ledger (RELEASE + alert), then the suite's tags go.

In observe mode nothing but the ledger is written: every step is reported as "would ...".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from changeguard.domain.alerts import Alert, alert_entry
from changeguard.domain.change import change_from_cloudtrail
from changeguard.domain.errors import CrossAccountAccessError, InvalidEventError, first_error
from changeguard.domain.ledger import KEY_END, EntryKind, LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.domain.quarantine import (
    CONTAINED,
    RECONTAINED,
    VERDICT_WEIGHT,
    Action,
    Budget,
    Decision,
    Episode,
    ReleaseResult,
    ResourceRef,
    TagVerdict,
    change_id_of,
    decide,
    entry_key,
    episode_of,
    ref_tag_value,
)
from changeguard.domain.resources import resource_arns, resource_type_of
from changeguard.domain.tags import (
    EXEMPT,
    QUARANTINE_AFTER,
    QUARANTINE_REF,
    TAG_EVENTS,
    TagEventKind,
    exempt_by_tag,
    exempt_principal,
    format_time,
    judge_tags,
    parse_time,
    removed_tags,
    requested_tags,
    suite_owned,
)
from changeguard.domain.verdicts import NOT_A_CHANGE, Severity
from changeguard.models.events import CLOUDTRAIL_API_CALL, CloudTrailEvent
from changeguard.models.tag_events import CONFIG_COMPLIANCE_CHANGE, ComplianceChangeEvent
from changeguard.ports import ActingScope, Clock, Ledger, TagReader
from changeguard.quarantine import QuarantineHandler, QuarantineSettings, Registry, ResourceState
from changeguard.services.acting import acting_in, not_acted_reason, report_denied
from changeguard.services.outcome import Outcome

#: What judging a created resource that has no quarantine class (``alert_only``) reads its tags
#: with: the Tagging API, and IAM for the one IAM type the rule routes here (``CreateRole``), which
#: the Tagging API does not answer for.
ALERT_ONLY_PERMISSIONS = ("tag:GetResources", "iam:ListRoleTags")

REMEDIATION = (
    "Tag it with every required tag ({keys}; {ticket_key} must be a change ticket id) and ChangeGuard"
    " releases it by itself; or tag it {exempt}=<reason> if it must stay untagged."
)


@dataclass(frozen=True)
class Trigger:
    """What made the suite look at a resource now."""

    key: str  # a stable id: the CloudTrail eventID, the Config evaluation, the sweep run
    kind: TagEventKind
    event_time: datetime
    source: str  # for people: "ec2:RunInstances by alice", "Config rule ...", "scheduled sweep"
    requested: Mapping[str, str] = field(default_factory=dict)
    removed: tuple[tuple[str, str | None], ...] = ()
    actor: str | None = None
    caller_exempt: str | None = None
    # The change (CloudTrail eventID) that made the resource non-compliant: the ledger's KPIs
    # count a change as untagged through ``body.change_id`` of its MARK/QUARANTINE facts.
    change_id: str | None = None


@dataclass
class ResourceResult:
    ref: ResourceRef
    verdict: TagVerdict
    actions: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    alert_ids: list[str] = field(default_factory=list)


class Enforcer:
    """Carries out the tag decision for one resource: ledger, alert, resource changes, tags."""

    def __init__(
        self,
        *,
        function: str,
        ledger: Ledger,
        suite_role_prefix: str = "",
        stack_name: str | None = None,
        scope: ActingScope | None = None,
    ) -> None:
        self.function = function
        self.ledger = ledger
        self.suite_role_prefix = suite_role_prefix
        self.stack_name = stack_name
        # issue 9: the quarantine classes act in each resource's own account; this says as whom.
        self.scope = scope

    def settings(self, policy: Policy) -> QuarantineSettings:
        return QuarantineSettings(
            suite_role_prefix=self.suite_role_prefix, break_glass_role_arns=policy.break_glass_role_arns
        )

    # -- the one entry point ------------------------------------------------------------------
    def converge(
        self,
        handler: QuarantineHandler,
        ref: ResourceRef,
        *,
        policy: Policy,
        now: datetime,
        trigger: Trigger,
        budget: Budget | None,
    ) -> ResourceResult:
        """The next step for one resource. ``budget`` None: this caller never quarantines."""
        try:
            return self._converge(handler, ref, policy=policy, now=now, trigger=trigger, budget=budget)
        except CrossAccountAccessError as exc:
            # Its account's role cannot be assumed: nothing is done to it (and nothing elsewhere).
            what = f"read, mark, quarantine or release {ref.short}"
            ids = report_denied(
                self.ledger,
                self.function,
                exc,
                what=what,
                cause=trigger.key,
                event_time=trigger.event_time,
                now=now,
                region=ref.region,
                resources=(ref.arn,),
            )
            return ResourceResult(ref, TagVerdict.SKIPPED, reasons=[not_acted_reason(exc, what)], alert_ids=ids)

    def _converge(
        self,
        handler: QuarantineHandler,
        ref: ResourceRef,
        *,
        policy: Policy,
        now: datetime,
        trigger: Trigger,
        budget: Budget | None,
    ) -> ResourceResult:
        state = handler.read(ref)
        if state is None:
            return ResourceResult(ref, TagVerdict.SKIPPED, reasons=[f"{ref.short} cannot be read: left alone"])
        own = suite_owned(ref.arn, state.name, state.tags, stack_name=self.stack_name)
        if own:
            return ResourceResult(ref, TagVerdict.SKIPPED, reasons=[f"{ref.short} is ChangeGuard's own ({own})"])
        entries = self.ledger.entries_for(ref.change_id)
        episode = episode_of(entries)
        marked_after = episode.marked_after or parse_time(state.tags.get(QUARANTINE_AFTER))
        evaluation, judged = judge_tags(
            trigger.kind, state.tags, policy, requested=trigger.requested, removed=trigger.removed
        )
        decision = decide(
            ref,
            evaluation,
            now=now,
            grace_hours=policy.quarantine_grace_hours,
            marked_after=marked_after,
            quarantined=episode.quarantined,
            exempt=exempt_by_tag(judged) or exempt_by_tag(state.tags),
            caller_exempt=trigger.caller_exempt,
        )
        result = ResourceResult(ref, decision.verdict, reasons=list(decision.reasons))
        step = _Step(self, handler, ref, state, policy, now, trigger, result)
        if decision.action is Action.MARK:
            step.mark(decision)
            if decision.due_now and budget is not None:
                step.quarantine(decision.model_copy(update={"action": Action.QUARANTINE}), budget)
        elif decision.action is Action.QUARANTINE and budget is not None:
            step.quarantine(decision, budget)
        elif decision.action is Action.QUARANTINE:
            result.reasons.append("due: the quarantine sweep contains it on its next run")
            step.keep(decision, episode, contain=False)
        elif decision.action is Action.RELEASE:
            step.release(decision, episode)
        elif decision.action is Action.UNMARK:
            # A release recorded while the sweep was still containing it closed the episode as NOOP, and
            # the containment came after: release from the saved state (a NOOP when nothing is contained).
            after = decision.quarantine_after
            contained = _entry(entries, entry_key(EntryKind.QUARANTINE, after)) if after is not None else None
            if contained is not None and not step.observe:
                step.release_late(decision, contained)
            step.unmark(decision)
        else:
            step.keep(decision, episode, contain=budget is not None)
        return result

    # -- ledger and alerts --------------------------------------------------------------------
    def record(
        self, fact: LedgerEntry, alert: Alert | None, also: tuple[LedgerEntry, ...] = ()
    ) -> tuple[bool, list[str]]:
        """Append the fact, ``also`` and the fact's alert in one transaction (the alert outbox)."""
        entries = [fact, *also]
        if alert is not None:
            entries.append(alert_entry(alert, fact.event_time, fact.recorded_at, suffix=fact.entry))
        new = self.ledger.append(entries)
        return new, ([alert.alert_id] if alert is not None and new else [])

    # -- the blast-radius cap, per run ---------------------------------------------------------
    @property
    def cap_change_id(self) -> str:
        return f"quarantine-cap:{self.function}"

    def budget(self, limit: int, trigger: Trigger) -> Budget:
        """The run's budget: ``limit`` less the quarantines its earlier attempts ledgered (``TAKEN#``).

        Lambda retries a failed asynchronous invocation twice with the same event, and the sweep's
        run (``trigger.key``) is named after that event: without this each retry would start afresh,
        and one scheduled run could quarantine three times the cap."""
        prefix = f"{TAKEN}{trigger.key}#"
        taken = self.ledger.entries_between(self.cap_change_id, prefix, prefix + KEY_END)
        return Budget(limit, used=len(taken))

    def taken(self, ref: ResourceRef, key: str, *, budget: Budget, now: datetime, trigger: Trigger) -> LedgerEntry:
        """That the run spent a place of its budget on ``ref``'s quarantine ``key``: written with that
        quarantine's intent, whose key it carries, so it exists exactly when the intent does and never
        makes the intent's write fail (observe mode's intent and enforce mode's are two)."""
        return LedgerEntry(
            change_id=self.cap_change_id,
            entry=f"{TAKEN}{trigger.key}#{ref.arn}#{key}",
            kind=EntryKind.QUARANTINE,
            function=self.function,
            event_time=trigger.event_time,
            recorded_at=now,
            verdict="CAP_TAKEN",
            account=ref.account,
            region=ref.region,
            body={"run": trigger.key, "resource": ref.arn, "limit": budget.limit},
        )

    def cap_hit(self, budget: Budget, *, now: datetime, trigger: Trigger, policy: Policy) -> tuple[str, list[str]]:
        """Ledger and alert the blast-radius cap: what was left unquarantined this run (once per run,
        its retries included: the key is the run's)."""
        change_id = self.cap_change_id
        key = f"CAP#{trigger.key}"
        observe = not policy.enforcing
        fact = LedgerEntry(
            change_id=change_id,
            entry=key,
            kind=EntryKind.QUARANTINE,
            function=self.function,
            event_time=trigger.event_time,
            recorded_at=now,
            verdict="CAP_HIT",
            severity=Severity.HIGH.value,
            body={"limit": budget.limit, "skipped": list(budget.skipped), "mode": policy.enforcement_mode.value},
        )
        would = "would have quarantined" if observe else "quarantined"
        alert = Alert(
            alert_id=Alert.make_id(f"{change_id}#{key}", self.function, "cap"),
            kind="cap",
            function=self.function,
            severity=Severity.HIGH,
            verdict="CAP_HIT",
            subject=f"Quarantine cap hit: {len(budget.skipped)} resource(s) left unquarantined ({trigger.source})",
            summary=(
                f"ChangeGuard {would} {budget.used} resource(s) in one run, its cap"
                f" (quarantine-max-resources = {budget.limit}), and stopped there. So many untagged"
                " resources at once usually means a broken pipeline or a policy change, not attackers:"
                " check before raising the cap."
            ),
            change_id=change_id,
            event_time=trigger.event_time,
            resources=tuple(budget.skipped),
            reasons=(f"cap of {budget.limit} quarantine(s) per run reached",),
            actions=(f"{would} {budget.used}", f"left {len(budget.skipped)} for a later run"),
            remediation="Tag the resources, or raise quarantine-max-resources in Parameter Store.",
            details={"limit": budget.limit, "skipped": len(budget.skipped), "mode": policy.enforcement_mode.value},
        )
        _, ids = self.record(fact, alert)
        return f"cap of {budget.limit} reached: {len(budget.skipped)} left unquarantined", ids


class _Step:
    """One resource's step, with everything it needs at hand."""

    def __init__(
        self,
        enforcer: Enforcer,
        handler: QuarantineHandler,
        ref: ResourceRef,
        state: ResourceState,
        policy: Policy,
        now: datetime,
        trigger: Trigger,
        result: ResourceResult,
    ) -> None:
        self.e = enforcer
        self.handler = handler
        self.ref = ref
        self.state = state
        self.policy = policy
        self.now = now
        self.trigger = trigger
        self.result = result
        self.observe = not policy.enforcing

    # -- mark ---------------------------------------------------------------------------------
    def mark(self, decision: Decision) -> None:
        after = decision.quarantine_after
        assert after is not None
        when = format_time(after)
        key = entry_key(EntryKind.MARK, self.trigger.event_time if self.observe else after, observe=self.observe)
        verb = "would mark" if self.observe else "marked"
        alert = self.alert(
            "mark",
            decision,
            key,
            severity=Severity.MEDIUM,
            subject=f"{'Would mark' if self.observe else 'Marked'} untagged {self.ref.short}: quarantine after {when}",
            summary=(
                f"{self.ref.short} does not carry the required tags ({self.trigger.source})."
                f" Unless it is tagged by {when}, ChangeGuard will {self.handler.describes}."
            ),
            actions=(f"{verb} {QUARANTINE_AFTER}={when}",),
            details={"quarantine_after": when},
        )
        fact = self.fact(EntryKind.MARK, key, decision, {"quarantine_after": when})
        new, ids = self.e.record(fact, alert)
        self.result.alert_ids += ids
        if self.observe:
            self.result.actions.append(
                f"{verb} {self.ref.short} (quarantine after {when})" if new else "already reported"
            )
            return
        self.handler.set_tags(self.ref, {QUARANTINE_AFTER: when})  # also after a duplicate: converge
        self.result.actions.append(f"marked {self.ref.short}: quarantine after {when}")

    # -- quarantine ---------------------------------------------------------------------------
    def quarantine(self, decision: Decision, budget: Budget) -> None:
        after = decision.quarantine_after
        assert after is not None
        if not budget.take(self.ref.arn):
            self.result.actions.append(f"cap reached: {self.ref.short} not quarantined this run")
            return
        settings = self.e.settings(self.policy)
        saved = self.handler.snapshot(self.ref, self.state, settings)
        key = entry_key(EntryKind.QUARANTINE, after, observe=self.observe)
        alert = self.quarantine_alert(decision, key)
        body = {"saved": saved, "describes": self.handler.describes}
        # The place it took in the run's budget, written with the intent: a retry of the run counts it.
        taken = (self.e.taken(self.ref, key, budget=budget, now=self.now, trigger=self.trigger),)
        if self.observe:
            new, ids = self.e.record(self.fact(EntryKind.QUARANTINE, key, decision, body), alert, taken)
            self.result.alert_ids += ids
            if not new:
                # Observe mode leaves the resource as it is, so every run decides this again: a
                # report already made must not fill the run's cap and hide the resources after it.
                budget.give_back()
            self.result.actions.append(f"would quarantine {self.ref.short}" if new else "already reported")
            return
        # The saved state first (what makes it undoable), as an intent: that it was contained, or not,
        # is a fact of its own, with the alert, once the calls are done.
        body["step"] = "saved before containing; QUARANTINE#<time>#contained or #failed says how it went"
        new, _ = self.e.record(self.fact(EntryKind.QUARANTINE, key, decision, body), None, taken)
        if not new:
            budget.give_back()  # the run (or attempt) that wrote the intent counted its place
            self.result.actions.append(f"{self.ref.short}: another run is quarantining it")
            return
        self.contain(decision, key, saved, settings, alert)
        if self.released_meanwhile(decision, after, Episode(quarantine_entry=key, saved=saved)):
            return
        self.handler.set_tags(
            self.ref, {QUARANTINE_AFTER: format_time(after), QUARANTINE_REF: ref_tag_value(self.ref.change_id, key)}
        )
        self.result.actions.append(f"quarantined {self.ref.short}: {self.handler.describes}")

    def quarantine_alert(self, decision: Decision, key: str) -> Alert:
        after = decision.quarantine_after
        assert after is not None
        verb = "would quarantine" if self.observe else "quarantined"
        notes = self.handler.notes
        return self.alert(
            "quarantine",
            decision,
            key,
            severity=Severity.HIGH,
            subject=f"{'Would quarantine' if self.observe else 'Quarantined'} untagged {self.ref.short}",
            summary=(
                f"{self.ref.short} was still missing required tags after its grace period"
                f" (ended {format_time(after)}). ChangeGuard {'would' if self.observe else 'did'}"
                f" {self.handler.describes}. {' '.join(notes)}"
            ),
            actions=(f"{verb}: {self.handler.describes}", "saved the original state in the change ledger"),
            details={"quarantine_after": format_time(after), "ledger_ref": ref_tag_value(self.ref.change_id, key)},
        )

    def contain(
        self,
        decision: Decision,
        key: str,
        saved: dict[str, Any],
        settings: QuarantineSettings,
        alert: Alert | None,
        *,
        recorded: bool = False,
    ) -> None:
        """Contain it, then ledger what happened: ``<key>#contained`` with the quarantine alert, or
        ``<key>#failed`` with a HIGH alert and the error, which then propagates (the next sweep
        retries). Each at most once per episode: a retry or a re-containment adds nothing, and
        when ``#contained`` is ``recorded`` already (every later sweep) it is not written again."""
        alert = alert or self.quarantine_alert(decision, key)
        try:
            self.handler.quarantine(self.ref, self.state, settings, saved)
        except Exception as exc:
            failed = f"{key}#{FAILED_SUFFIX}"
            error = f"{type(exc).__name__}: {exc}"
            failure = self.alert(
                "quarantine",
                decision,
                failed,
                severity=Severity.HIGH,
                subject=f"Could not quarantine untagged {self.ref.short}",
                summary=(
                    f"{self.ref.short} is still missing required tags after its grace period, and ChangeGuard"
                    f" could not {self.handler.describes}: {error}. It is NOT contained; the next sweep tries again."
                ),
                actions=(f"tried to {self.handler.describes}: failed",),
                details={"error": error, "ledger_ref": ref_tag_value(self.ref.change_id, key)},
            )
            body = {"error": error, "quarantine_entry": key}
            _, ids = self.e.record(self.fact(EntryKind.QUARANTINE, failed, decision, body, verdict="FAILED"), failure)
            self.result.alert_ids += ids
            raise
        if recorded:
            return
        done = f"{key}#{CONTAINED_SUFFIX}"
        body = {"describes": self.handler.describes, "quarantine_entry": key}
        _, ids = self.e.record(self.fact(EntryKind.QUARANTINE, done, decision, body), alert)
        self.result.alert_ids += ids

    def released_meanwhile(self, decision: Decision, after: datetime, episode: Episode) -> bool:
        """After containing: whether a release of this episode was recorded in between (it saw the
        resource not yet contained, so it restored nothing); if so, release it now."""
        released = entry_key(EntryKind.RELEASE, after)
        if _entry(self.e.ledger.entries_for(self.ref.change_id), released) is None:
            return False
        late = decision.model_copy(
            update={
                "verdict": TagVerdict.COMPLIANT,
                "action": Action.RELEASE,
                "reasons": (f"its release ({released}) was recorded while ChangeGuard was containing it",),
            }
        )
        self.release(late, episode, late=True)
        self.result.verdict = late.verdict
        self.drop_tags([QUARANTINE_AFTER, QUARANTINE_REF])
        return True

    def release_late(self, decision: Decision, quarantine: LedgerEntry) -> None:
        """Release an episode already closed in the ledger, whose containment came after its release."""
        saved = quarantine.body.get("saved")
        episode = Episode(quarantine_entry=quarantine.entry, saved=saved if isinstance(saved, dict) else {})
        self.release(decision, episode, late=True)

    # -- release ------------------------------------------------------------------------------
    def release(self, decision: Decision, episode: Episode, *, late: bool = False) -> None:
        """``late``: the episode's RELEASE is already recorded (NOOP, before the containment): this
        release is recorded beside it, unless it too finds nothing to restore."""
        assert episode.quarantine_entry is not None
        after = parse_time(episode.quarantine_entry.split("#", 1)[1])
        assert after is not None
        outcome = self.handler.release(self.ref, dict(episode.saved or {}), dry_run=self.observe)
        if late and outcome.result is ReleaseResult.NOOP:
            return
        key = entry_key(EntryKind.RELEASE, after, observe=self.observe) + (f"#{LATE_SUFFIX}" if late else "")
        drift = outcome.result is ReleaseResult.DRIFT
        why = decision.reasons[0] if decision.reasons else decision.verdict.value
        if drift:
            subject = f"DRIFT: {self.ref.short} changed while quarantined; not restored"
            summary = (
                f"{self.ref.short} now complies ({why}), but {outcome.detail}. ChangeGuard overwrote"
                " nothing. Its original state is in the change ledger: restore it by hand if it is still wanted."
            )
        else:
            verb = "Would release" if self.observe else "Released"
            subject = f"{verb} {self.ref.short}: {outcome.result.value.lower()}"
            summary = f"{self.ref.short} complies ({why}). {outcome.detail}."
        alert = self.alert(
            "drift" if drift else "release",
            decision,
            key,
            severity=Severity.HIGH if drift else Severity.INFO,
            subject=subject,
            summary=summary,
            actions=(f"{'would release' if self.observe else 'release'}: {outcome.result.value}", *outcome.calls),
            details={
                "result": outcome.result.value,
                "ledger_ref": ref_tag_value(self.ref.change_id, episode.quarantine_entry),
            },
        )
        fact = self.fact(
            EntryKind.RELEASE,
            key,
            decision,
            {
                "result": outcome.result.value,
                "detail": outcome.detail,
                "calls": list(outcome.calls),
                "quarantine_entry": episode.quarantine_entry,
            },
            verdict=outcome.result.value,
        )
        _new, ids = self.e.record(fact, alert)
        self.result.alert_ids += ids
        if self.observe:
            self.result.actions.append(f"would release {self.ref.short}: {outcome.result.value}")
            return
        self.drop_tags([QUARANTINE_AFTER, QUARANTINE_REF])
        if drift:
            self.result.actions.append(f"DRIFT on {self.ref.short}: {outcome.detail}; nothing overwritten")
        else:
            restored = f": {'; '.join(outcome.calls)}" if outcome.calls else ""
            self.result.actions.append(
                f"released {self.ref.short}: {outcome.result.value} ({outcome.detail}{restored})"
            )

    def unmark(self, decision: Decision) -> None:
        after = decision.quarantine_after
        assert after is not None
        key = entry_key(EntryKind.RELEASE, after, observe=self.observe)
        why = decision.reasons[0] if decision.reasons else decision.verdict.value
        verb = "would remove" if self.observe else "removed"
        alert = self.alert(
            "release",
            decision,
            key,
            severity=Severity.INFO,
            subject=f"{'Would unmark' if self.observe else 'Unmarked'} {self.ref.short}: it complies before its deadline",
            summary=f"{self.ref.short} complies ({why}); it was never quarantined.",
            actions=(f"{verb} {QUARANTINE_AFTER}",),
            details={"result": ReleaseResult.NOOP.value, "quarantine_after": format_time(after)},
        )
        fact = self.fact(
            EntryKind.RELEASE,
            key,
            decision,
            {"result": ReleaseResult.NOOP.value, "detail": "mark removed; nothing was quarantined"},
            verdict=ReleaseResult.NOOP.value,
        )
        _, ids = self.e.record(fact, alert)
        self.result.alert_ids += ids
        if self.observe:
            self.result.actions.append(f"would unmark {self.ref.short}")
            return
        self.drop_tags([QUARANTINE_AFTER, QUARANTINE_REF])  # also after a duplicate: converge
        self.result.actions.append(f"unmarked {self.ref.short}")

    # -- nothing to decide: keep the episode's bookkeeping and containment in place ----------
    def keep(self, decision: Decision, episode: Episode, *, contain: bool) -> None:
        if self.observe or decision.verdict is not TagVerdict.NON_COMPLIANT:
            return
        after = decision.quarantine_after
        wanted: dict[str, str] = {}
        if after is not None and self.state.tags.get(QUARANTINE_AFTER) != format_time(after):
            wanted[QUARANTINE_AFTER] = format_time(after)
        entry = episode.quarantine_entry
        if entry is not None:
            if contain:
                # Still non-compliant and quarantined: converge to the quarantined state (an interrupted
                # quarantine finishes; a containment someone undid comes back). The saved state stays;
                # what someone changed meanwhile is ledgered before it is overwritten.
                settings = self.e.settings(self.policy)
                episode = self.record_overwritten(decision, episode, settings)
                self.contain(
                    decision, entry, dict(episode.saved or {}), settings, None, recorded=episode.contained_recorded
                )
                assert after is not None
                if self.released_meanwhile(decision, after, episode):
                    return
            pointer = ref_tag_value(self.ref.change_id, entry)
            if self.state.tags.get(QUARANTINE_REF) != pointer:
                wanted[QUARANTINE_REF] = pointer
        if wanted:
            self.handler.set_tags(self.ref, wanted)
            self.result.actions.append(f"restored ChangeGuard's tags on {self.ref.short}")

    def record_overwritten(self, decision: Decision, episode: Episode, settings: QuarantineSettings) -> Episode:
        """Before re-containing a resource changed while quarantined (a release would report DRIFT):
        ledger its current state, which re-containment overwrites, with a HIGH alert. What it gained
        that the saved state lacks (an interface attached meanwhile) joins the saved state, so a
        release restores that too. Returns the episode with the saved state to use."""
        assert episode.quarantine_entry is not None
        probe = self.handler.release(self.ref, dict(episode.saved or {}), dry_run=True)
        if probe.result is not ReleaseResult.DRIFT:
            return episode
        current = self.handler.snapshot(self.ref, self.state, settings)
        saved = {
            k: {**current[k], **v} if isinstance(v, dict) and isinstance(current.get(k), dict) else v
            for k, v in dict(episode.saved or {}).items()
        }
        config = json.dumps(self.state.config, sort_keys=True, default=str)
        key = f"{episode.quarantine_entry}#{RECONTAINED}{hashlib.sha256(config.encode()).hexdigest()[:16]}"
        alert = self.alert(
            "drift",
            decision,
            key,
            severity=Severity.HIGH,
            subject=f"DRIFT: {self.ref.short} changed while quarantined; contained again",
            summary=(
                f"{self.ref.short} still lacks required tags, and {probe.detail}. ChangeGuard recorded its"
                f" current state in the change ledger ({key}) before containing it again: nothing it"
                " overwrote is lost. A release restores the saved state; restore later changes by hand."
            ),
            actions=(
                "recorded the state it overwrites in the change ledger",
                f"contain again: {self.handler.describes}",
            ),
            details={"detail": probe.detail, "ledger_ref": ref_tag_value(self.ref.change_id, episode.quarantine_entry)},
        )
        body = {
            "overwritten": dict(self.state.config),
            "detail": probe.detail,
            "saved": saved,
            "quarantine_entry": episode.quarantine_entry,
        }
        _, ids = self.e.record(self.fact(EntryKind.QUARANTINE, key, decision, body, verdict="DRIFT"), alert)
        self.result.alert_ids += ids
        self.result.actions.append(f"DRIFT on {self.ref.short}: {probe.detail}; ledgered, then contained again")
        return episode.model_copy(update={"saved": saved})

    # -- helpers ------------------------------------------------------------------------------
    def drop_tags(self, keys: list[str]) -> None:
        present = [k for k in keys if k in self.state.tags]
        if present:
            self.handler.remove_tags(self.ref, present)

    def fact(
        self,
        kind: EntryKind,
        key: str,
        decision: Decision,
        body: dict[str, Any],
        *,
        verdict: str | None = None,
    ) -> LedgerEntry:
        if self.e.scope is not None:
            body = {**body, "acted_as": self.e.scope.acted_as(self.ref.account)}  # issue 9: audit evidence
        return build_fact(self.e.function, self.policy, self.trigger, self.now, kind, key, decision, body, verdict)

    def alert(
        self,
        kind: str,
        decision: Decision,
        key: str,
        *,
        severity: Severity,
        subject: str,
        summary: str,
        actions: Iterable[str],
        details: Mapping[str, str | int | float | bool | None],
    ) -> Alert:
        return build_alert(
            self.e.function,
            self.policy,
            self.trigger,
            kind,
            decision,
            key,
            severity=severity,
            subject=subject,
            summary=summary,
            actions=actions,
            details=details,
        )


#: The prefix of the ``quarantine-cap:<function>`` entries that count a run's quarantines
#: (``TAKEN#<run>#<arn>#<its QUARANTINE key>``), so that the run's retries share its cap.
TAKEN = "TAKEN#"
#: The suffixes of the facts that say how a quarantine went (``QUARANTINE#<time>`` is its intent).
CONTAINED_SUFFIX = CONTAINED
FAILED_SUFFIX = "failed"
#: The suffix of a RELEASE recorded after the episode's first one: the containment came after it.
LATE_SUFFIX = "after-containment"


def _ec2_kind(arn: str) -> str | None:
    """An EC2 ARN's resource kind (``volume`` in ``...:volume/vol-1``): its tag specifications' type."""
    parts = arn.split(":", 5)
    if len(parts) < 6 or parts[2] != "ec2":
        return None
    return parts[5].split("/", 1)[0]


def _entry(entries: Iterable[LedgerEntry], key: str) -> LedgerEntry | None:
    return next((e for e in entries if e.entry == key), None)


def build_fact(
    function: str,
    policy: Policy,
    trigger: Trigger,
    now: datetime,
    kind: EntryKind,
    key: str,
    decision: Decision,
    body: dict[str, Any],
    verdict: str | None = None,
) -> LedgerEntry:
    """A ledger fact about one resource (change id ``resource:<arn>``)."""
    ref = decision.ref
    return LedgerEntry(
        change_id=ref.change_id,
        entry=key,
        kind=kind,
        function=function,
        event_time=trigger.event_time,
        recorded_at=now,
        verdict=verdict or decision.verdict.value,
        account=ref.account,
        region=ref.region,
        body={
            **body,
            "resource": ref.model_dump(mode="json"),
            "trigger": {"key": trigger.key, "kind": trigger.kind.value, "source": trigger.source},
            **({"change_id": trigger.change_id} if trigger.change_id else {}),
            "reasons": list(decision.reasons),
            "missing": list(decision.evaluation.missing) if decision.evaluation else [],
            "mode": policy.enforcement_mode.value,
        },
    )


def build_alert(
    function: str,
    policy: Policy,
    trigger: Trigger,
    kind: str,
    decision: Decision,
    key: str,
    *,
    severity: Severity,
    subject: str,
    summary: str,
    actions: Iterable[str],
    details: Mapping[str, str | int | float | bool | None],
) -> Alert:
    """The alert about a ledger fact: one per fact and kind (the fact's key is in its id)."""
    ref = decision.ref
    keys = ", ".join(policy.required_tag_keys)
    return Alert(
        alert_id=Alert.make_id(f"{ref.change_id}#{key}", function, kind),
        kind=kind,
        function=function,
        severity=severity,
        verdict=decision.verdict.value,
        subject=subject,
        summary=summary,
        change_id=ref.change_id,
        event_time=trigger.event_time,
        account=ref.account,
        region=ref.region,
        resource_type=ref.type,
        resources=(ref.arn,),
        actor=trigger.actor,
        reasons=decision.reasons,
        actions=tuple(actions),
        remediation=REMEDIATION.format(keys=keys, ticket_key=policy.ticket_tag_key, exempt=EXEMPT),
        details={**details, "mode": policy.enforcement_mode.value, "trigger": trigger.source},
    )


def weightiest(verdicts: Iterable[TagVerdict]) -> TagVerdict | None:
    present = set(verdicts)
    return next((v for v in VERDICT_WEIGHT if v in present), None)


def outcome_of(function: str, change_id: str, results: list[ResourceResult], extra_actions: list[str]) -> Outcome:
    verdict = weightiest(r.verdict for r in results)
    return Outcome(
        function=function,
        change_id=change_id,
        verdict=verdict.value if verdict else None,
        actions=[a for r in results for a in r.actions] + extra_actions,
        reasons=[f"{r.ref.short}: {reason}" for r in results for reason in r.reasons],
        alert_ids=[a for r in results for a in r.alert_ids],
    )


class TagEnforcementService:
    """CloudTrail create/tag calls and Config verdicts in; marks, quarantines and releases out."""

    def __init__(
        self,
        *,
        function: str,
        enforcer: Enforcer,
        registry: Registry,
        tags: Callable[[], TagReader],
        policy: Callable[[], Policy],
        clock: Clock,
        suite_role_prefixes: tuple[str, ...] = (),
        scope: ActingScope | None = None,
    ) -> None:
        self.scope = scope  # issue 9: tags of unregistered types are read in the resource's account
        self.function = function
        self.enforcer = enforcer
        self.registry = registry
        self.tags = tags
        self.policy = policy
        self.clock = clock
        self.suite_role_prefixes = tuple(p for p in suite_role_prefixes if p)

    def handle(self, event: Mapping[str, Any]) -> Outcome:
        if not isinstance(event, Mapping):
            raise InvalidEventError("event is not a JSON object")
        detail_type = event.get("detail-type")
        try:
            if detail_type == CONFIG_COMPLIANCE_CHANGE:
                return self.config_verdict(ComplianceChangeEvent.model_validate(event))
            if detail_type != CLOUDTRAIL_API_CALL:
                raise InvalidEventError(f"unexpected detail-type {detail_type!r}")
            return self.api_call(CloudTrailEvent.model_validate(event))
        except ValidationError as exc:
            raise InvalidEventError(f"not a CloudTrail call or Config verdict: {first_error(exc)}") from exc

    # -- CloudTrail ---------------------------------------------------------------------------
    def api_call(self, event: CloudTrailEvent) -> Outcome:
        record = event.detail
        change = change_from_cloudtrail(record, event.account, event.region)
        event_id = change.change_id
        if not change.is_change:
            return Outcome(function=self.function, change_id=event_id, verdict=NOT_A_CHANGE)
        if any(a.startswith(self.suite_role_prefixes) for a in change.actor.principal_arns if self.suite_role_prefixes):
            # The rule already drops the suite's own calls (its tags, its quarantines); checked again
            # here so a mis-edited rule cannot start a loop.
            return Outcome(
                function=self.function,
                change_id=event_id,
                verdict=NOT_A_CHANGE,
                reasons=["ChangeGuard's own call"],
            )
        kind = TAG_EVENTS.get(record.eventName)
        if kind is None:
            return Outcome(
                function=self.function,
                change_id=event_id,
                verdict=NOT_A_CHANGE,
                reasons=[f"{record.eventName} does not change tags or create resources"],
            )
        policy = self.policy()
        now = self.clock.now()
        trigger = Trigger(
            key=event_id,
            kind=kind,
            event_time=change.event_time,
            source=f"{change.service}:{record.eventName} by {change.actor.display}",
            removed=tuple(removed_tags(record.requestParameters)) if kind is TagEventKind.REMOVE else (),
            actor=change.actor.arn or change.actor.display,
            caller_exempt=exempt_principal(change.actor.principal_arns, policy),
            change_id=event_id,
        )
        raw = record.model_dump(mode="json", exclude_none=True)

        def for_type(resource_type: str | None) -> Trigger:
            """The trigger with the tags the call puts on resources of ``resource_type`` only."""
            if kind not in (TagEventKind.CREATE, TagEventKind.ADD, TagEventKind.REPLACE):
                return trigger
            return replace(trigger, requested=requested_tags(record.requestParameters, resource_type))

        results: list[ResourceResult] = []
        covered: set[str] = set()
        for handler, resource_id in self.registry.targets(record.eventSource, record.eventName, raw):
            ref = handler.ref(resource_id, change.account, change.region)
            covered.add(ref.arn)
            results.append(
                self.enforcer.converge(
                    handler, ref, policy=policy, now=now, trigger=for_type(handler.tag_spec_type), budget=None
                )
            )
        if kind is TagEventKind.CREATE:
            for arn in resource_arns(record.eventSource, record.eventName, raw, change.region, change.account):
                if arn not in covered and self.registry.for_arn(arn) is None:
                    results.append(
                        self.alert_only(arn, change.account, change.region, policy, now, for_type(_ec2_kind(arn)))
                    )
        extra = [] if results else ["no resource of a known type in the call"]
        return outcome_of(self.function, event_id, results, extra)

    def alert_only(
        self, arn: str, account: str, region: str, policy: Policy, now: datetime, trigger: Trigger
    ) -> ResourceResult:
        """A created resource of a type with no quarantine class: judge it and alert, nothing more."""
        type_name = resource_type_of(arn)
        ref = ResourceRef(
            type=type_name,
            resource_id=arn.rsplit(":", 1)[-1].rsplit("/", 1)[-1],
            arn=arn,
            account=account,
            region=region,
        )
        with acting_in(self.scope, account, region, trigger.key):
            current = self.tags().tags_of(arn)
        if current is None:
            return ResourceResult(ref, TagVerdict.SKIPPED, reasons=[f"{ref.short} cannot be read: left alone"])
        own = suite_owned(arn, None, current, stack_name=self.enforcer.stack_name)
        if own:
            return ResourceResult(ref, TagVerdict.SKIPPED, reasons=[f"{ref.short} is ChangeGuard's own ({own})"])
        evaluation, judged = judge_tags(trigger.kind, current, policy, requested=trigger.requested)
        exempt = exempt_by_tag(judged) or trigger.caller_exempt
        if exempt:
            return ResourceResult(ref, TagVerdict.EXEMPT, reasons=[exempt])
        if evaluation.compliant:
            return ResourceResult(ref, TagVerdict.COMPLIANT, reasons=["carries every required tag"])
        key = f"{EntryKind.MARK.value}#{format_time(trigger.event_time)}#alert-only"
        decision = Decision(
            ref=ref,
            verdict=TagVerdict.NON_COMPLIANT,
            action=Action.NONE,
            reasons=(*evaluation.reasons, f"no quarantine is registered for {type_name}: alert only"),
            evaluation=evaluation,
        )
        result = ResourceResult(ref, TagVerdict.NON_COMPLIANT, reasons=list(decision.reasons))
        alert = build_alert(
            self.function,
            policy,
            trigger,
            "mark",
            decision,
            key,
            severity=Severity.MEDIUM,
            subject=f"Untagged {ref.short} (alert only: no quarantine for {type_name})",
            summary=f"{ref.short} does not carry the required tags ({trigger.source}).",
            actions=("recorded it in the change ledger",),
            details={},
        )
        fact = build_fact(self.function, policy, trigger, now, EntryKind.MARK, key, decision, {"quarantinable": False})
        new, ids = self.enforcer.record(fact, alert)
        result.alert_ids += ids
        result.actions.append(f"alerted on {ref.short} (no quarantine registered)" if new else "already reported")
        return result

    # -- AWS Config ---------------------------------------------------------------------------
    def config_verdict(self, event: ComplianceChangeEvent) -> Outcome:
        detail = event.detail
        key = f"config:{detail.configRuleName}:{detail.resourceType}:{detail.resourceId}"
        handler = self.registry.for_config_type(detail.resourceType)
        resource_id = handler.normalize_id(detail.resourceId) if handler else None
        if handler is None or resource_id is None:
            return Outcome(
                function=self.function,
                change_id=key,
                verdict=TagVerdict.SKIPPED.value,
                reasons=[f"no quarantine is registered for {detail.resourceType}"],
            )
        policy = self.policy()
        now = self.clock.now()
        when = detail.notificationCreationTime or event.time
        trigger = Trigger(
            key=f"{key}:{format_time(when)}",
            kind=TagEventKind.CONFIG,
            event_time=when,
            source=f"Config rule {detail.configRuleName}: {detail.compliance}",
        )
        ref = handler.ref(resource_id, detail.awsAccountId or event.account, detail.awsRegion or event.region)
        result = self.enforcer.converge(handler, ref, policy=policy, now=now, trigger=trigger, budget=None)
        return outcome_of(self.function, change_id_of(ref.arn), [result], [])
