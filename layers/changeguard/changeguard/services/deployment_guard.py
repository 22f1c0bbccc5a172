"""The deployment guard: stop unhealthy deployments, roll back regressions found in the bake window.

Triggers (all wired in template.yaml):

* an alarm going to ALARM, in any of its three shapes (EventBridge rule, the alarm's Lambda
  action, the alarm topic's SNS subscription);
* CodeDeploy "Deployment State-change Notification" START, SUCCESS, FAILURE, STOP: recorded
  in the ledger under the deployment's change id (``codedeploy:<deploymentId>``);
* the health-check sweep (a schedule): every in-flight release of a group with health
  criteria is checked once, ``delay_minutes`` after it started. A sweep rather than a one-off
  schedule per START: CodeDeploy delivers its events best effort, ``ListDeployments`` does not
  miss one, and there is no schedule to create, clean up or pass a role to.

Order of work, so that retries converge and nothing happens twice: decide; write the intent
(the STOP/ROLLBACK entry, its cap slot and, for a rollback, its ALERT) in one conditional append;
then act; then record what the action produced. A repeated alarm finds the deployment already
stopped (not in flight) or its intent entry already written; a retry after a crash finds the intent
and finishes the action. Observe mode writes the intent as "would have" and makes no call to CodeDeploy.

A stop's intent is a decision, not a stop: the deployment may finish between the listing and
``StopDeployment`` (an all-at-once release reaching Succeeded, or CodeDeploy's own alarm monitoring
stopping it first), and CodeDeploy then answers ``DeploymentAlreadyCompletedException``. So the
stop's fact (``STOP#...``, a failed change) and its alert are written with the result; a deployment
found finished gets ``STOP#already-completed`` instead, its cap slot back, and, when it succeeded
inside the bake window, the alarm's decision again: the bake-window redeploy.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from changeguard.domain.alerts import Alert, alert_entry
from changeguard.domain.clock import deadline
from changeguard.domain.deployments import (
    FAILED_CHANGE,
    GROUP_TAG,
    AlarmSignal,
    CapCheck,
    Deployment,
    DeploymentGroup,
    GroupRef,
    GuardAction,
    GuardDecision,
    HealthCriteria,
    HealthReport,
    MetricQuery,
    StopCapContentionError,
    TimeWindow,
    change_id_of,
    claimed_rollback_of,
    decide_on_alarm,
    decide_on_health,
    evaluate_health,
    find_ticket,
    groups_from_tag,
    health_plan,
    is_release,
    marker_note,
    not_a_release,
    parse_reason_data,
    read_redeploy_mark,
    redeploy_description,
    rollback_of,
    rollback_reason,
    stop_cap,
)
from changeguard.domain.errors import InvalidEventError, first_error
from changeguard.domain.ledger import EntryKind, LedgerEntry, utc
from changeguard.domain.partition import partition_of
from changeguard.domain.policy import Policy
from changeguard.domain.verdicts import Severity
from changeguard.models.deployments import (
    ALARM_STATE_CHANGE,
    DEPLOYMENT_STATE_CHANGE,
    AlarmActionPayload,
    AlarmStateChangeEvent,
    DeploymentStateChangeEvent,
    SnsAlarmMessage,
    SnsEvent,
)
from changeguard.models.scheduled import SCHEDULED_EVENT, ScheduledEvent
from changeguard.ports import ActingScope, Clock, Ledger
from changeguard.services.acting import NOT_ACTED, acted_as, acting_in, refusal_of, report_refusal
from changeguard.services.outcome import Outcome

#: How far back to look for a group's latest deployment when an alarm fires (beyond the bake window).
HISTORY = timedelta(days=1)
#: issue 9: account-regions the health sweep checks at once (each is a few CodeDeploy and
#: CloudWatch calls), and how long before its timeout it starts no new one.
SWEEP_WORKERS = 8
SWEEP_DEADLINE_MARGIN = 10.0
MAX_SKIPPED_LISTED = 20
_CAP_ATTEMPTS = 5
#: How long an invocation that wrote an intent may still be carrying it out: the function's Timeout in
#: template.yaml (60 s). Lambda retries a failed invocation a minute or more later (issue 8).
ATTEMPT_TIMEOUT = timedelta(seconds=60)
_RECOVERY_LOOKBACK = timedelta(days=1)
#: A finished deployment's status as the state its CodeDeploy state-change event carries (what the KPIs read).
_FINAL_STATES = {"Succeeded": "SUCCESS", "Failed": "FAILURE", "Stopped": "STOP"}

# Outcome verdicts, most significant first (the merged outcome of several decisions shows the first).
STOPPED = "STOPPED"
ROLLED_BACK = "ROLLED_BACK"
CAPPED = "CAPPED"
NO_ROLLBACK = "NO_ROLLBACK"
WOULD_STOP = "WOULD_STOP"
WOULD_ROLL_BACK = "WOULD_ROLL_BACK"
UNHEALTHY = "UNHEALTHY"
HEALTHY = "HEALTHY"
RECORDED = "RECORDED"
NO_ACTION = "NO_ACTION"
IGNORED = "IGNORED"
_PRECEDENCE = (
    STOPPED,
    ROLLED_BACK,
    CAPPED,
    NO_ROLLBACK,
    NOT_ACTED,
    WOULD_STOP,
    WOULD_ROLL_BACK,
    UNHEALTHY,
    HEALTHY,
    RECORDED,
    NO_ACTION,
    IGNORED,
)


class StopOutcome(Protocol):
    """What ``StopDeployment`` answered (``adapters.codedeploy.StopResult``)."""

    status: str
    already_completed: bool

    def describe(self) -> str: ...


def _scope_of(criteria: HealthCriteria) -> str:
    """`` (it lists accounts ..., regions ...)`` when the criteria say where the group lives."""
    parts = [f"accounts {', '.join(criteria.accounts)}"] if criteria.accounts else []
    parts += [f"regions {', '.join(criteria.regions)}"] if criteria.regions else []
    return f" among those it lists ({'; '.join(parts)})" if parts else ""


class GuardedCodeDeploy(Protocol):
    """CodeDeploy as the guard uses it (``adapters.codedeploy.CodeDeployGuard``)."""

    def get_deployment(self, deployment_id: str) -> Deployment | None: ...

    def list_in_flight(self, application: str, group: str) -> list[Deployment] | None:
        """``None``: no such application or group in the account and region in scope."""

    def list_recent(self, application: str, group: str, since: datetime) -> list[Deployment] | None: ...

    def groups_watching(self, alarm_name: str) -> list[DeploymentGroup]: ...

    def tags_of(self, arn: str) -> dict[str, str]: ...

    def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> StopOutcome: ...

    def redeploy(self, application: str, group: str, revision: dict[str, Any], description: str) -> str: ...


class AlarmsAndMetrics(Protocol):
    """CloudWatch as the guard uses it (``adapters.cloudwatch.CloudWatchReader``)."""

    def metric_values(self, queries: Sequence[MetricQuery], window: TimeWindow) -> dict[str, list[float]]: ...

    def alarm_state(self, alarm_name: str) -> str | None: ...

    def alarm_tags(self, alarm_arn: str) -> dict[str, str]: ...


def _region_of(arn: str | None) -> str | None:
    parts = (arn or "").split(":")
    return parts[3] if len(parts) > 5 and parts[3] else None


def _account_of(arn: str | None) -> str | None:
    parts = (arn or "").split(":")
    return parts[4] if len(parts) > 5 and parts[4] else None


def _parse(model: type[BaseModel], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise InvalidEventError(f"not a {model.__name__}: {first_error(exc)}") from exc


def alarm_signals(event: Mapping[str, Any]) -> list[AlarmSignal]:
    """The alarm state changes in any of the three shapes an alarm reaches Lambda in."""
    if "Records" in event:
        sns: SnsEvent = _parse(SnsEvent, event)
        signals = []
        for record in sns.Records:
            try:
                message = SnsAlarmMessage.model_validate(json.loads(record.Sns.Message))
            except (ValueError, ValidationError) as exc:
                raise InvalidEventError(f"SNS message {record.Sns.MessageId} is not a CloudWatch alarm") from exc
            arn = message.AlarmArn
            signals.append(
                AlarmSignal(
                    alarm_name=message.AlarmName,
                    alarm_arn=arn,
                    state=message.NewStateValue,
                    previous_state=message.OldStateValue,
                    reason=message.NewStateReason,
                    reason_data=_trigger_data(message.Trigger),
                    changed_at=utc(message.StateChangeTime),
                    account=message.AWSAccountId or _account_of(arn) or _account_of(record.Sns.TopicArn) or "",
                    region=_region_of(arn) or _region_of(record.Sns.TopicArn) or "",
                    shape="sns",
                    event_id=record.Sns.MessageId,
                )
            )
        return signals
    if "alarmData" in event:
        action: AlarmActionPayload = _parse(AlarmActionPayload, event)
        data = action.alarmData
        return [
            AlarmSignal(
                alarm_name=data.alarmName,
                alarm_arn=action.alarmArn,
                state=data.state.value,
                previous_state=data.previousState.value if data.previousState else None,
                reason=data.state.reason,
                reason_data=parse_reason_data(data.state.reasonData),
                changed_at=utc(data.state.timestamp or action.time),
                account=action.accountId,
                region=action.region,
                shape="lambda-action",
                event_id=f"{action.alarmArn}@{action.time.isoformat()}",
            )
        ]
    change: AlarmStateChangeEvent = _parse(AlarmStateChangeEvent, event)
    data = change.detail
    arn = next((r for r in change.resources if ":alarm:" in r), None)
    return [
        AlarmSignal(
            alarm_name=data.alarmName,
            alarm_arn=arn,
            state=data.state.value,
            previous_state=data.previousState.value if data.previousState else None,
            reason=data.state.reason,
            reason_data=parse_reason_data(data.state.reasonData),
            changed_at=utc(data.state.timestamp or change.time),
            account=change.account,
            region=change.region,
            shape="eventbridge",
            event_id=change.id,
        )
    ]


def _trigger_data(trigger: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The SNS shape has no ``reasonData``; its ``Trigger`` gives the threshold and statistic."""
    if not trigger:
        return None
    data: dict[str, Any] = {}
    if isinstance(trigger.get("Threshold"), int | float):
        data["threshold"] = trigger["Threshold"]
    if trigger.get("Statistic") or trigger.get("ExtendedStatistic"):
        data["statistic"] = trigger.get("ExtendedStatistic") or trigger.get("Statistic")
    return data or None


def merge(function: str, outcomes: Sequence[Outcome]) -> Outcome:
    """One outcome for an invocation that acted on several deployments."""
    if len(outcomes) == 1:
        return outcomes[0]
    verdicts = [o.verdict for o in outcomes if o.verdict]
    verdict = next((v for v in _PRECEDENCE if v in verdicts), verdicts[0] if verdicts else None)
    severities = [o.severity for o in outcomes if o.severity]
    order = [s.value for s in Severity]
    return Outcome(
        function=function,
        change_id=next((o.change_id for o in outcomes if o.change_id and o.verdict == verdict), None),
        verdict=verdict,
        severity=min(severities, key=order.index) if severities else None,
        actions=[a for o in outcomes for a in o.actions],
        reasons=[r for o in outcomes for r in o.reasons],
        # Nothing new happened: every outcome is a duplicate or a decision to do nothing.
        duplicate=any(o.duplicate for o in outcomes)
        and all(o.duplicate or o.verdict in (NO_ACTION, IGNORED, None) for o in outcomes),
        alert_ids=[a for o in outcomes for a in o.alert_ids],
    )


class DeploymentGuardService:
    """Parse -> decide (``domain.deployments``) -> act through CodeDeploy -> ledger (with alerts)."""

    def __init__(
        self,
        *,
        function: str,
        ledger: Ledger,
        codedeploy: GuardedCodeDeploy,
        cloudwatch: AlarmsAndMetrics,
        policy: Callable[[], Policy],
        clock: Clock,
        scope: ActingScope | None = None,
        member_accounts: tuple[str, ...] = (),
        regions: tuple[str, ...] = (),
        sweep_workers: int = SWEEP_WORKERS,
    ) -> None:
        self.sweep_workers = max(1, sweep_workers)
        self.function = function
        self.ledger = ledger
        self.codedeploy = codedeploy
        self.cloudwatch = cloudwatch
        self.policy = policy
        self.clock = clock
        # issue 9: CodeDeploy and CloudWatch calls go to the account (and region) the alarm or the
        # deployment is in, through the member role there. The health sweep visits its own account
        # and each of ``member_accounts``, in its own region and each of ``regions``: a member's
        # deployment whose alarm event went missing is still checked.
        self.scope = scope
        self.member_accounts = tuple(a for a in member_accounts if a)
        self.regions = tuple(r for r in regions if r)
        self._tickets: dict[str, str | None] = {}

    # -- entry point ------------------------------------------------------------------------------
    def handle(self, event: Any, time_left: Callable[[], float] | None = None) -> Outcome:
        """One alarm, CodeDeploy state change or health sweep. ``time_left``: seconds until the
        invocation times out (Lambda's context), so that a sweep over many accounts ends in time."""
        if not isinstance(event, Mapping):
            raise InvalidEventError("event is not a JSON object")
        self._tickets.clear()  # tags and descriptions are read once per invocation
        detail_type = event.get("detail-type")
        if detail_type == DEPLOYMENT_STATE_CHANGE:
            change = _parse(DeploymentStateChangeEvent, event)
            return self.in_account(
                change.account,
                change.region,
                change.detail.deploymentId,
                "read deployment " + change.detail.deploymentId,
                lambda: self.on_deployment_state(change),
            )
        if detail_type == SCHEDULED_EVENT:
            return self.sweep(_parse(ScheduledEvent, event), time_left)
        if detail_type == ALARM_STATE_CHANGE or "alarmData" in event or "Records" in event:
            return merge(
                self.function,
                [
                    self.in_account(
                        s.account,
                        s.region,
                        s.alarm_name,
                        f"check alarm {s.alarm_name} and stop the deployments it watches",
                        partial(self.on_alarm, s),
                    )
                    for s in alarm_signals(event)
                ],
            )
        raise InvalidEventError(f"the deployment guard does not handle {detail_type or 'this'!r} events")

    def in_account(self, account: str, region: str, reason: str, what: str, act: Callable[[], Outcome]) -> Outcome:
        """``act`` with CodeDeploy and CloudWatch in ``account``; a refused acting role is reported, not raised."""
        try:
            with acting_in(self.scope, account, region, reason):
                return act()
        except Exception as exc:
            # Refused there (the role, an SCP denying the region, a region the account has not
            # enabled): reported once a day per account, the other accounts still handled.
            refused = refusal_of(exc, self.scope, account, region)
            if refused is None:
                raise
            why, alert_ids = report_refusal(
                self.ledger, self.function, refused, what=what, cause=reason, now=self.clock.now(), region=region
            )
            return self._outcome(NOT_ACTED, reasons=[why], alert_ids=alert_ids)

    # -- alarms -----------------------------------------------------------------------------------
    def on_alarm(self, alarm: AlarmSignal) -> Outcome:
        if not alarm.firing:
            return self._outcome(IGNORED, reasons=[f"alarm {alarm.alarm_name} went to {alarm.state}, not ALARM"])
        # Re-read before acting: a late, repeated or replayed delivery of an alarm that has since
        # recovered must not stop today's deployments.
        current = self.cloudwatch.alarm_state(alarm.alarm_name)
        if current != "ALARM":
            return self._outcome(
                IGNORED,
                reasons=[f"alarm {alarm.alarm_name} is {current or 'deleted'} now: nothing to act on"],
            )
        policy = self.policy()
        groups = self.watching_groups(alarm)
        if not groups:
            return self._outcome(NO_ACTION, reasons=[f"no deployment group watches alarm {alarm.alarm_name}"])
        now = self.clock.now()
        since = now - timedelta(minutes=policy.bake_minutes) - HISTORY
        outcomes: list[Outcome] = []
        for ref in groups:
            recent = self.codedeploy.list_recent(ref.application, ref.group, since)
            if recent is None:
                # Only a group tag can name one that does not exist: a typo must not keep the
                # alarm's other groups from being stopped.
                outcomes.append(
                    self._outcome(
                        NO_ACTION,
                        reasons=[f"{ref.key}: no such deployment group here (the alarm's {GROUP_TAG} tag names it)"],
                    )
                )
                continue
            known = {d.deployment_id: d for d in recent}
            known.update({d.deployment_id: d for d in self.codedeploy.list_in_flight(ref.application, ref.group) or []})
            decisions = decide_on_alarm(alarm, self.marked(list(known.values())), bake_minutes=policy.bake_minutes)
            if not decisions:
                outcomes.append(
                    self._outcome(
                        NO_ACTION,
                        reasons=[
                            f"{ref.key}: nothing in flight and nothing inside the {policy.bake_minutes} min bake window"
                        ],
                    )
                )
            for decision in decisions:
                if decision.action is not GuardAction.SKIP:
                    decision = decision.with_health(self.health_of(decision.deployment, policy, now))
                again = partial(self._decide_again, alarm, policy, since)
                outcomes.append(self.carry_out(decision, policy, alarm.account, alarm.region, again=again))
        return merge(self.function, outcomes)

    def _decide_again(
        self, alarm: AlarmSignal, policy: Policy, since: datetime, finished: Deployment
    ) -> GuardDecision | None:
        """The alarm's redeploy decision for a deployment ``StopDeployment`` found finished and Succeeded.

        It finished after the listing: for the alarm it is now the latest release, succeeded inside
        the bake window, and redeploying the last known good revision is the way back."""
        known = {
            d.deployment_id: d for d in self.codedeploy.list_recent(finished.application, finished.group, since) or []
        }
        known[finished.deployment_id] = finished
        for decision in decide_on_alarm(alarm, self.marked(list(known.values())), bake_minutes=policy.bake_minutes):
            if decision.action is GuardAction.REDEPLOY and decision.deployment.deployment_id == finished.deployment_id:
                return decision
        return None

    def watching_groups(self, alarm: AlarmSignal) -> list[GroupRef]:
        """Groups whose alarm configuration lists the alarm, and those its group tag names."""
        refs = {g.ref.key: g.ref for g in self.codedeploy.groups_watching(alarm.alarm_name)}
        if alarm.alarm_arn:
            for ref in groups_from_tag(self.cloudwatch.alarm_tags(alarm.alarm_arn).get(GROUP_TAG)):
                refs.setdefault(ref.key, ref)
        return list(refs.values())

    def marked(self, deployments: Sequence[Deployment]) -> list[Deployment]:
        """The deployments, with what the ledger says of those whose description claims to be the
        guard's redeploy: anyone may write that description, and only a marked one is never stopped."""
        now = self.clock.now()
        out = []
        for d in deployments:
            mark = read_redeploy_mark(self.ledger.entries_for, d.deployment_id, d.description, now)
            out.append(d if mark is None else d.model_copy(update={"redeploy_mark": mark}))
        return out

    # -- health -----------------------------------------------------------------------------------
    def health_of(self, deployment: Deployment, policy: Policy, now: datetime) -> HealthReport | None:
        criteria = policy.health_criteria.get(deployment.ref.key)
        started = deployment.started_at
        if criteria is None or started is None:
            return None
        return self.evaluate(criteria, started, now)

    def evaluate(self, criteria: HealthCriteria, started: datetime, now: datetime) -> HealthReport | None:
        plan = health_plan(criteria, started, now)
        if plan is None:
            return None
        current = self.cloudwatch.metric_values(plan.current_queries, plan.current)
        baseline = self.cloudwatch.metric_values(plan.baseline_queries, plan.baseline) if plan.baseline else {}
        return evaluate_health(criteria, plan, current, baseline)

    def sweep(self, event: ScheduledEvent, time_left: Callable[[], float] | None = None) -> Outcome:
        """Check each in-flight deployment of a group with criteria once, ``delay_minutes`` after its start.

        In every account and region it visits, several at a time: its own first, then the members'
        in an order that changes every run, so that a run ending at its deadline does not leave the
        same accounts unchecked each minute. A member whose role is refused is reported once a day
        and the others are still checked."""
        policy = self.policy()
        if not policy.health_criteria:
            return self._outcome(None, actions=["no deployment due for a health check"])
        now = self.clock.now()
        run = f"health-sweep:{now.strftime('%Y%m%dT%H%M')}"
        regions = tuple(dict.fromkeys((event.region, *self.regions)))
        own = [(event.account, region) for region in regions]
        members = [(a, r) for a in self.member_accounts if a != event.account for r in regions]
        random.Random(run).shuffle(members)  # an order, not a secret
        pairs = own + members
        expired = deadline(time_left, SWEEP_DEADLINE_MARGIN)
        present: set[str] = set()  # the groups with criteria that exist where the sweep looked

        failures: list[BaseException] = []

        def visit(pair: tuple[str, str]) -> Outcome | None:
            if expired():
                return None  # not started: reported below, visited first by chance in a later run
            account, region = pair
            try:
                return self.in_account(
                    account,
                    region,
                    run,
                    f"check deployments' health in {region}",
                    partial(self._sweep_here, policy, now, account, region, present),
                )
            except Exception as exc:  # noqa: BLE001 - one pair's failure must not cost the others theirs
                failures.append(exc)
                return self._outcome(None, reasons=[f"could not check account {account}, {region}: {exc}"])

        with ThreadPoolExecutor(max_workers=min(self.sweep_workers, len(pairs)), thread_name_prefix="health") as pool:
            found = list(pool.map(visit, pairs))
        if failures:
            # Every other pair was checked and what it needed done is done and ledgered; the run
            # still fails, so the retry, the failure queue and the Errors alarm tell the operators.
            raise failures[0]
        outcomes = [o for o in found if o is not None and (o.verdict is not None or o.actions or o.reasons)]
        skipped = [pair for pair, o in zip(pairs, found, strict=True) if o is None]
        absent = sorted(set(policy.health_criteria) - present)
        if absent and len(skipped) < len(pairs):
            # A name no account-region has: a typo in health-criteria, or a group deleted. Said every
            # run, so the operator sees why its deployments are never checked.
            checked = len(pairs) - len(skipped)
            outcomes.append(
                self._outcome(
                    None,
                    reasons=[
                        f"health-criteria names {key}, a deployment group none of the {checked} account-region(s)"
                        f" checked has{_scope_of(policy.health_criteria[key])}"
                        for key in absent
                    ],
                )
            )
        if skipped:
            outcomes.append(
                self._outcome(
                    None,
                    actions=[f"reached its deadline before {len(skipped)} account-region(s); a later run checks them"],
                    reasons=[f"not checked this run: account {a}, {r}" for a, r in skipped[:MAX_SKIPPED_LISTED]],
                )
            )
        if not outcomes:
            return self._outcome(None, actions=["no deployment due for a health check"])
        return merge(self.function, outcomes)

    def _sweep_here(self, policy: Policy, now: datetime, account: str, region: str, present: set[str]) -> Outcome:
        """The sweep in the account and region in scope (``present`` collects the groups found here)."""
        outcomes: list[Outcome] = []
        for key, criteria in sorted(policy.health_criteria.items()):
            if not criteria.lives_in(account, region):
                continue
            ref = GroupRef.parse(key)
            in_flight = self.codedeploy.list_in_flight(ref.application, ref.group)
            if in_flight is None:
                continue  # the group lives in other accounts or regions
            present.add(key)
            for deployment in self.marked(in_flight):
                started = deployment.started_at
                # Rollbacks and Auto Scaling's deployments of the current revision are not judged.
                if not is_release(deployment) or started is None:
                    continue
                if now < started + timedelta(minutes=criteria.delay_minutes):
                    continue
                entries = self.ledger.entries_for(deployment.change_id)
                if any(e.entry == "HEALTH" for e in entries):
                    finished = self._finish_stop(deployment, policy, entries, account, region)
                    if finished is not None:
                        outcomes.append(finished)
                    continue
                outcomes.append(self.check(deployment, criteria, policy, now, account, region))
        if not outcomes:
            return self._outcome(None)
        return merge(self.function, outcomes)

    def _finish_stop(
        self, deployment: Deployment, policy: Policy, entries: Sequence[LedgerEntry], account: str, region: str
    ) -> Outcome | None:
        """A checked deployment's ``STOP`` intent that has no result (``STOP#...``) yet: finished, or None.

        A health check writes ``HEALTH`` in the same append as the stop it leads to. Should
        ``StopDeployment`` then fail (throttled, or the invocation timed out), the run fails, and
        Lambda runs the same scheduled event twice more, one and then two minutes later ("How Lambda
        handles errors and retries with asynchronous invocation", Lambda developer guide); the next
        sweeps run every minute. Each of them finds ``HEALTH``: skipping the deployment would leave
        the ledgered stop unmade while the unhealthy release rolls on. So it is still due, and is
        finished here from the decision ledgered with the intent, without asking CloudWatch again:
        ``_resume`` leaves an intent younger than ``ATTEMPT_TIMEOUT`` to the attempt that may still be
        making it, and finishes an older one. The same holds for an alarm's stop whose retries all
        failed after a check was recorded on its own. Uses the entries the sweep has just read, so a
        checked deployment costs no extra call. Only while enforcing, like ``carry_out``: in observe
        mode nothing is stopped. A ``ROLLBACK`` intent is never on an in-flight deployment (it
        redeploys over one that succeeded), and the sweep lists only those."""
        if not policy.enforcing:
            return None
        intent = next((e for e in entries if e.entry == "STOP"), None)
        if intent is None or any(e.entry.startswith("STOP#") for e in entries):
            return None
        body = intent.body
        health = body.get("health")
        decision = GuardDecision(
            action=GuardAction.STOP,
            deployment=deployment,
            trigger=str(body.get("trigger") or "an earlier decision"),
            reasons=tuple(body.get("reasons") or ()),
            evidence=dict(body.get("evidence") or {}),
            health=HealthReport.model_validate(health) if health else None,
        )
        return self._resume(decision, policy, "STOP", entries, account, region)

    def check(
        self, deployment: Deployment, criteria: HealthCriteria, policy: Policy, now: datetime, account: str, region: str
    ) -> Outcome:
        started = deployment.started_at or now
        report = self.evaluate(criteria, started, now)
        if report is None:
            # No whole minute of metrics since the start yet (``delay_minutes`` 0, the sweep in the
            # minute the deployment started; a regular-resolution metric's shortest period is 60 s,
            # MetricStat API reference). An empty HEALTH entry would end its checks before they
            # began: nothing is written, and the next sweep, a minute later, has a whole minute
            # (``health_plan`` returns None only while now and the start share their minute).
            return self._outcome(
                None,
                change_id=deployment.change_id,
                actions=[f"health check of {deployment.deployment_id}: less than a minute of metrics, next sweep"],
            )
        entry = LedgerEntry(
            change_id=deployment.change_id,
            entry="HEALTH",
            kind=EntryKind.DEPLOYMENT,
            function=self.function,
            event_time=now,
            recorded_at=now,
            verdict=HEALTHY if report.healthy else UNHEALTHY,
            ticket_id=self.ticket_of(deployment, policy, account, region),
            account=account,
            region=region,
            body={
                "deployment_id": deployment.deployment_id,
                "check": f"{criteria.delay_minutes} min after start",
                "healthy": report.healthy,
                "evaluated": report.evaluated,
                "findings": [f.model_dump(mode="json") for f in report.findings],
                "values": report.values,
                "application": deployment.application,
                "deployment_group": deployment.group,
            },
        )
        decision = decide_on_health(deployment, report, criteria.delay_minutes)
        if decision is None:
            new = self.ledger.append([entry])
            verdict = HEALTHY if report.evaluated else NO_ACTION
            detail = "; ".join(f.detail for f in report.findings) or "no health criteria could be evaluated"
            return self._outcome(
                verdict,
                change_id=deployment.change_id,
                actions=[f"health check of {deployment.deployment_id}: {'healthy' if report.healthy else 'unhealthy'}"],
                reasons=[detail],
                duplicate=not new,
            )
        return self.carry_out(decision, policy, account, region, extra=[entry])

    # -- CodeDeploy state changes -----------------------------------------------------------------
    def on_deployment_state(self, event: DeploymentStateChangeEvent) -> Outcome:
        detail = event.detail
        policy = self.policy()
        found = self.codedeploy.get_deployment(detail.deploymentId)
        deployment = self.marked([found])[0] if found else None
        now = self.clock.now()
        change_id = change_id_of(detail.deploymentId)
        rollback = rollback_reason(deployment) if deployment else None
        note = marker_note(deployment) if deployment else None  # claims to be our redeploy, unmarked
        ticket = self.ticket_of(deployment, policy, event.account, event.region) if deployment else None
        # A deployment EC2 Auto Scaling or CodeDeploy's auto-update made ships nothing new: when it
        # fails, an instance failed to come up, not a change. Recorded, never a failed change.
        not_release = not_a_release(deployment.creator) if deployment else None
        failed = detail.state in ("FAILURE", "STOP") and not_release is None
        # The field names are what the KPI reports read (domain/kpis.py): one deployment's facts
        # are grouped by ``deployment_id``; ``rollback_of`` marks a rollback and ``not_release`` a
        # deployment that is not a release: neither is counted.
        body: dict[str, Any] = {
            "deployment_id": detail.deploymentId,
            "state": detail.state,
            "application": detail.application,
            "deployment_group": detail.deploymentGroup,
            "deployment_found": deployment is not None,
            "rollback": rollback,
            "failed_change": failed,
        }
        if deployment is not None:
            started = deployment.started_at
            body.update(
                {
                    "status": deployment.status,
                    "creator": deployment.creator,
                    "description": deployment.description,
                    "revision": deployment.revision,
                    "rollback_of": rollback_of(deployment),
                    "not_release": not_release,
                    "rolled_back": bool(deployment.rollback_deployment_id),
                    "rollback_deployment_id": deployment.rollback_deployment_id,
                    "started_at": started.isoformat() if started else None,
                    "finished_at": deployment.complete_time.isoformat()
                    if deployment.complete_time and detail.state != "START"
                    else None,
                }
            )
            if detail.state == "SUCCESS" and deployment.complete_time:
                bake_end = deployment.complete_time + timedelta(minutes=policy.bake_minutes)
                body["bake_window_ends"] = bake_end.isoformat()
        entries = [
            LedgerEntry(
                change_id=change_id,
                entry=f"DEPLOYMENT#{detail.state}",
                kind=EntryKind.DEPLOYMENT,
                function=self.function,
                event_time=utc(event.time),
                recorded_at=now,
                verdict=FAILED_CHANGE if failed else None,
                ticket_id=ticket,
                account=event.account,
                region=event.region,
                body=body,
            )
        ]
        alert_ids: list[str] = []
        if detail.state == "FAILURE" and rollback:
            alert = Alert(
                alert_id=Alert.make_id(change_id, self.function, "rollback-failed"),
                kind="rollback-failed",
                function=self.function,
                severity=Severity.CRITICAL,
                verdict=FAILED_CHANGE,
                subject=f"Rollback deployment {detail.deploymentId} FAILED ({detail.application}/{detail.deploymentGroup})",
                summary=(
                    f"Rollback deployment {detail.deploymentId} of {detail.application}/{detail.deploymentGroup}"
                    f" failed: {rollback}. The group may be running a bad revision."
                ),
                change_id=change_id,
                event_time=event.time,
                account=event.account,
                region=event.region,
                resource_type="codedeploy:deploymentgroup",
                resources=(self._group_arn(detail.application, detail.deploymentGroup, event.account, event.region),),
                ticket_id=ticket,
                reasons=(f"CodeDeploy reported FAILURE for {detail.deploymentId}",),
                actions=("recorded the failure in the change ledger",),
                remediation="Redeploy a known good revision by hand and investigate why the rollback failed.",
                details={"deployment_id": detail.deploymentId, "application": detail.application},
            )
            entries.append(alert_entry(alert, event.time, now))
            alert_ids.append(alert.alert_id)
        new = self.ledger.append(entries)
        what = f"{detail.state} of {detail.deploymentId} ({detail.application}/{detail.deploymentGroup})"
        return self._outcome(
            RECORDED,
            change_id=change_id,
            actions=[f"recorded {what}" + (f", ticket {ticket}" if ticket else "")]
            if new
            else ["duplicate delivery: already recorded"],
            reasons=[f"a rollback: {rollback}"] if rollback else [note] if note else [],
            duplicate=not new,
            alert_ids=alert_ids if new else [],
        )

    # -- carrying out a decision ------------------------------------------------------------------
    def carry_out(
        self,
        decision: GuardDecision,
        policy: Policy,
        account: str,
        region: str,
        extra: Sequence[LedgerEntry] = (),
        again: Callable[[Deployment], GuardDecision | None] | None = None,
    ) -> Outcome:
        """Write the intent, then act. ``again``: the trigger's decision for the deployment should
        ``StopDeployment`` find it finished (an alarm's bake-window redeploy), or None."""
        d = decision.deployment
        if decision.action is GuardAction.SKIP:
            return self._outcome(
                NO_ACTION,
                change_id=d.change_id,
                actions=[
                    f"left {d.deployment_id} alone: {decision.reasons[0]}"
                    if decision.reasons
                    else f"left {d.deployment_id} alone"
                ],
                reasons=list(decision.reasons),
            )
        if decision.action is GuardAction.REDEPLOY and decision.revision is None:
            return self._no_rollback(decision, policy, account, region, extra)
        stop = decision.action is GuardAction.STOP
        if not policy.enforcing:
            intent = "WOULD_STOP" if stop else "WOULD_ROLL_BACK"
        else:
            intent = "STOP" if stop else "ROLLBACK"
        entries = self.ledger.entries_for(d.change_id)
        if any(e.entry == intent for e in entries):
            resumed = self._resume(decision, policy, intent, entries, account, region, again)
            return self._record_extra(resumed, extra)
        for _ in range(_CAP_ATTEMPTS):
            cap = self._cap(d.application, policy, account, region)
            if not cap.allowed:
                return self._capped(decision, policy, cap, account, region, extra)
            # A stop's alert is written with its result: only StopDeployment's answer tells whether
            # there was anything to stop.
            alert = [] if intent == "STOP" else [self._alert(decision, policy, intent, cap, account, region)]
            appended = self.ledger.append(
                [
                    *extra,
                    self._intent_entry(decision, policy, intent, cap, account, region),
                    self._slot_entry(decision, policy, cap, account, region),
                    *(alert_entry(a, self.clock.now(), self.clock.now()) for a in alert),
                ]
            )
            if appended:
                return self._act(decision, policy, intent, cap, account, region, duplicate=False, again=again)
            entries = self.ledger.entries_for(d.change_id)
            if any(e.entry == intent for e in entries):  # a concurrent delivery wrote it first
                resumed = self._resume(decision, policy, intent, entries, account, region, again)
                return self._record_extra(resumed, extra)
        raise StopCapContentionError(f"could not take a stop slot for {d.application}")

    def _record_extra(self, outcome: Outcome, extra: Sequence[LedgerEntry]) -> Outcome:
        """``extra`` on its own, once the decision it came with turned out to be ledgered already.

        ``extra`` is a health check's ``HEALTH`` entry, written with the decision it led to so that a
        crash cannot leave the check recorded without the decision it led to. A stop whose call failed
        after that append is made by a later sweep (``_finish_stop``). When that decision was
        already there (an alarm decided first: ``STOP``, ``WOULD_STOP``, ``STOP_CAPPED``), the joint
        append fails on the existing entry and takes ``HEALTH`` down with it (``TransactWriteItems``:
        "either all of them succeed, or all of them fail", API reference): the check's
        verdict would be missing from the record, and the sweep, which checks a deployment until it
        has a ``HEALTH`` entry, would query its metrics again every minute. The entry's own key
        keeps this append idempotent; the outcome stays what the decision's was (nothing new done)."""
        if not extra or not self.ledger.append(list(extra)):
            return outcome
        recorded = [f"recorded {e.entry} ({e.verdict or 'no verdict'}) for {e.change_id}" for e in extra]
        return outcome.model_copy(update={"actions": [*outcome.actions, *recorded]})

    def _act(
        self,
        decision: GuardDecision,
        policy: Policy,
        intent: str,
        cap: CapCheck | None,
        account: str,
        region: str,
        *,
        duplicate: bool,
        again: Callable[[Deployment], GuardDecision | None] | None = None,
    ) -> Outcome:
        d = decision.deployment
        verdict = {"STOP": STOPPED, "ROLLBACK": ROLLED_BACK, "WOULD_STOP": WOULD_STOP}.get(intent, WOULD_ROLL_BACK)
        alert_ids = [] if duplicate else [Alert.make_id(d.change_id, self.function, _alert_kind(intent))]
        reasons = list(decision.reasons) + ([cap.describe(d.application)] if cap else [])
        if intent == "STOP":
            return self._stop(decision, policy, reasons, account, region, resumed=duplicate, again=again)
        if intent == "WOULD_STOP":
            actions = [f"would have stopped {d.deployment_id} ({d.ref.key}) with automatic rollback (observe mode)"]
        elif intent == "WOULD_ROLL_BACK":
            actions = [
                f"would have redeployed the last known good revision of {d.ref.key} over {d.deployment_id} (observe mode)"
            ]
        else:
            actions = [self._redeploy(decision, policy, account, region)]
        return self._outcome(
            verdict,
            change_id=d.change_id,
            severity=Severity.HIGH.value if policy.enforcing else Severity.MEDIUM.value,
            actions=actions,
            reasons=reasons,
            duplicate=duplicate,
            alert_ids=alert_ids,
        )

    def _resume(
        self,
        decision: GuardDecision,
        policy: Policy,
        intent: str,
        entries: Sequence[LedgerEntry],
        account: str,
        region: str,
        again: Callable[[Deployment], GuardDecision | None] | None = None,
    ) -> Outcome:
        """The intent is already ledgered (a repeated alarm, a redelivery, or a retry after a crash)."""
        d = decision.deployment
        done = [e for e in entries if e.entry.startswith(f"{intent}#")]
        if done or intent.startswith("WOULD_"):
            what = done[0].body.get("result", "done") if done else "reported"
            verdict = {"STOP": STOPPED, "ROLLBACK": ROLLED_BACK, "WOULD_STOP": WOULD_STOP}.get(intent, WOULD_ROLL_BACK)
            return self._outcome(
                NO_ACTION if done and done[0].body.get("already_completed") else verdict,
                change_id=d.change_id,
                actions=[f"duplicate: {d.deployment_id} already handled ({what})"],
                reasons=list(decision.reasons),
                duplicate=True,
            )
        # Intent without result. A concurrent delivery wrote it and may be acting right now: acting
        # too would be a second StopDeployment/CreateDeployment (issue 8). Once the writer's timeout
        # has passed, it stopped short of acting (a crash, retried by Lambda a minute later): finish it.
        written = max((e.recorded_at for e in entries if e.entry == intent), default=None)
        if written is not None and self.clock.now() - written < ATTEMPT_TIMEOUT:
            return self._outcome(
                {"STOP": STOPPED, "ROLLBACK": ROLLED_BACK}.get(intent, NO_ACTION),
                change_id=d.change_id,
                actions=[f"duplicate: {d.deployment_id} is being handled by a concurrent delivery"],
                reasons=list(decision.reasons),
                duplicate=True,
            )
        return self._act(decision, policy, intent, None, account, region, duplicate=True, again=again)

    def _stop(
        self,
        decision: GuardDecision,
        policy: Policy,
        reasons: list[str],
        account: str,
        region: str,
        *,
        resumed: bool,
        again: Callable[[Deployment], GuardDecision | None] | None,
    ) -> Outcome:
        """``StopDeployment``, then its fact and its alert in one append (or, when it had already
        finished, what happened instead)."""
        d = decision.deployment
        result = self.codedeploy.stop(d.deployment_id, auto_rollback=True)
        after = self.codedeploy.get_deployment(d.deployment_id)
        if result.already_completed:
            return self._already_completed(decision, policy, reasons, account, region, after, resumed, again)
        rollback_id = after.rollback_deployment_id if after else None
        # ``Pending``: the stop has been accepted, not carried out. CodeDeploy creates the rollback
        # deployment once it completes, so none exists yet; the rollback's own state changes are
        # ledgered when they arrive (``rollback_of``), and the KPIs count the stop as a rollback then.
        pending = not rollback_id and result.status == "Pending"
        # The API reference lists Pending | Succeeded | Forced and describes only the first two. Only
        # after ``Succeeded`` does a missing rollback id mean CodeDeploy created none; any other
        # answer is recorded as what it is, and a rollback's own state changes are ledgered when
        # they arrive (``rollback_of``).
        unknown = not rollback_id and result.status not in ("Pending", "Succeeded")
        text = f"stopped {d.deployment_id} ({d.ref.key}) with automatic rollback: {result.describe()}"
        if rollback_id:
            text += f"; rollback deployment {rollback_id}"
        elif pending:
            text += "; the stop is in progress and CodeDeploy starts the rollback deployment when it completes"
        elif unknown:
            text += (
                f"; StopDeployment answered status {result.status!r}, which this code does not know:"
                " whether CodeDeploy rolls back is not known yet"
            )
        else:
            text += "; CodeDeploy created no rollback deployment"
        outcome = rollback_id or ("pending" if pending else "unknown" if unknown else "no-rollback")
        now = self.clock.now()
        alert = self._alert(decision, policy, "STOP", None, account, region)
        new = self.ledger.append(
            [
                LedgerEntry(
                    change_id=d.change_id,
                    entry=f"STOP#{outcome}",
                    kind=EntryKind.ROLLBACK if rollback_id else EntryKind.STOP,
                    function=self.function,
                    event_time=now,
                    recorded_at=now,
                    verdict=FAILED_CHANGE,
                    ticket_id=self.ticket_of(d, policy, account, region),
                    account=account,
                    region=region,
                    body={
                        "result": text,
                        "deployment_id": d.deployment_id,
                        "failed_change": True,
                        "stop_status": result.status,
                        "already_completed": False,
                        "rollback_deployment_id": rollback_id,
                        "status_after": after.status if after else None,
                        # issue 9: where the stop was made, and as whom (audit evidence).
                        "acted_as": acted_as(self.scope),
                    },
                ),
                alert_entry(alert, now, now),
            ]
        )
        return self._outcome(
            STOPPED,
            change_id=d.change_id,
            severity=Severity.HIGH.value,
            actions=[text],
            reasons=reasons,
            duplicate=resumed or not new,
            alert_ids=[alert.alert_id] if new else [],
        )

    def _already_completed(
        self,
        decision: GuardDecision,
        policy: Policy,
        reasons: list[str],
        account: str,
        region: str,
        after: Deployment | None,
        resumed: bool,
        again: Callable[[Deployment], GuardDecision | None] | None,
    ) -> Outcome:
        """``StopDeployment`` answered ``DeploymentAlreadyCompletedException`` ("The deployment is already
        complete", API reference): nothing was stopped. The stop's cap slot is given back; the
        deployment's own status says what happened. Succeeded: it finished between the listing and
        the call, and the trigger decides again (an alarm's bake-window redeploy). Stopped or Failed:
        CodeDeploy ended it first (its alarm monitoring, a failure or another StopDeployment): a failed
        change, but not the guard's stop."""
        d = decision.deployment
        status = after.status if after else None
        redo = again(after) if again and after is not None and status == "Succeeded" else None
        intent = next((e for e in self.ledger.entries_for(d.change_id) if e.entry == "STOP"), None)
        slot = ((intent.body.get("cap") or {}) if intent else {}).get("slot")
        state = _FINAL_STATES.get(status or "")
        failed = state in ("STOP", "FAILURE")
        if status == "Succeeded":
            text = (
                f"{d.deployment_id} ({d.ref.key}) had already succeeded when StopDeployment was called: nothing stopped"
            )
        elif failed:
            by = (
                "by CodeDeploy, another StopDeployment, or this guard's earlier attempt that did not record its result"
                if resumed
                else "by CodeDeploy (its alarm monitoring or a failure) or another StopDeployment"
            )
            text = f"{d.deployment_id} ({d.ref.key}) was already {status} ({by}): ChangeGuard stopped nothing"
        else:
            text = f"{d.deployment_id} ({d.ref.key}) had already finished ({status or 'not found'}): nothing stopped"
        now = self.clock.now()
        entries = [
            LedgerEntry(
                change_id=d.change_id,
                entry="STOP#already-completed",
                kind=EntryKind.DEPLOYMENT,
                function=self.function,
                event_time=now,
                recorded_at=now,
                verdict=FAILED_CHANGE if failed else None,
                ticket_id=self.ticket_of(d, policy, account, region),
                account=account,
                region=region,
                body={
                    "result": text,
                    "deployment_id": d.deployment_id,
                    "application": d.application,
                    "deployment_group": d.group,
                    "stop_status": "AlreadyCompleted",
                    "already_completed": True,
                    "status_after": status,
                    "failed_change": failed,
                    "stopped_by_guard": False,
                    **({"state": state} if state else {}),
                    **(
                        {"finished_at": after.complete_time.isoformat()}
                        if state and after is not None and after.complete_time
                        else {}
                    ),
                    "redeploy_decided": redo is not None,
                    "released_slot": slot,
                    "acted_as": acted_as(self.scope),
                },
            )
        ]
        if isinstance(slot, int):
            entries.append(self._slot_release(decision, policy, slot, account, region))
        alert = None
        if redo is None:
            alert = self._alert(decision, policy, "ALREADY_COMPLETED", None, account, region, status=status)
            entries.append(alert_entry(alert, now, now))
        new = self.ledger.append(entries)
        outcome = self._outcome(
            NO_ACTION,
            change_id=d.change_id,
            actions=[text],
            reasons=reasons,
            duplicate=resumed or not new,
            alert_ids=[alert.alert_id] if alert and new else [],
        )
        if redo is None:
            return outcome
        # A crash before this point is retried: the alarm then decides the redeploy directly.
        return merge(
            self.function, [outcome, self.carry_out(redo.with_health(decision.health), policy, account, region)]
        )

    def _redeploy(self, decision: GuardDecision, policy: Policy, account: str, region: str) -> str:
        d = decision.deployment
        assert decision.revision is not None
        ticket = self.ticket_of(d, policy, account, region)
        description = redeploy_description(d, ticket)
        now = self.clock.now()
        # A retry after a crash may find the redeploy already created: reuse it, never create two.
        existing = [
            r
            for r in self.codedeploy.list_recent(d.application, d.group, now - _RECOVERY_LOOKBACK) or []
            if claimed_rollback_of(r.description) == d.deployment_id
        ]
        new_id = (
            existing[0].deployment_id
            if existing
            else self.codedeploy.redeploy(d.application, d.group, decision.revision, description)
        )
        text = f"redeployed the last known good revision of {d.ref.key} over {d.deployment_id}: deployment {new_id}"
        self.ledger.append(
            [
                LedgerEntry(
                    change_id=d.change_id,
                    entry=f"ROLLBACK#{new_id}",
                    kind=EntryKind.ROLLBACK,
                    function=self.function,
                    event_time=now,
                    recorded_at=now,
                    ticket_id=ticket,
                    body={
                        "result": text,
                        "redeploy_id": new_id,
                        "revision": decision.revision,
                        "acted_as": acted_as(self.scope),  # issue 9: where, and as whom
                    },
                ),
            ]
        )
        # The change-calendar gate keys deployments by their bare id and never stops one the suite
        # marked as a rollback there: mark the redeploy so a closed window does not stop it.
        self.ledger.append(
            [
                LedgerEntry(
                    change_id=new_id,
                    entry=f"ROLLBACK#{self.function}",
                    kind=EntryKind.ROLLBACK,
                    function=self.function,
                    event_time=now,
                    recorded_at=now,
                    ticket_id=ticket,
                    body={"rollback_of": d.deployment_id, "ledger_change_id": d.change_id},
                )
            ]
        )
        return text

    def _capped(
        self,
        decision: GuardDecision,
        policy: Policy,
        cap: CapCheck,
        account: str,
        region: str,
        extra: Sequence[LedgerEntry],
    ) -> Outcome:
        d = decision.deployment
        intent = "STOP_CAPPED" if decision.action is GuardAction.STOP else "ROLLBACK_CAPPED"
        now = self.clock.now()
        alert = self._alert(decision, policy, intent, cap, account, region)
        new = self.ledger.append(
            [*extra, self._intent_entry(decision, policy, intent, cap, account, region), alert_entry(alert, now, now)]
        )
        outcome = self._outcome(
            CAPPED,
            change_id=d.change_id,
            severity=Severity.CRITICAL.value,
            actions=[
                f"did NOT {'stop' if intent == 'STOP_CAPPED' else 'roll back'} {d.deployment_id}: stop cap reached"
            ],
            reasons=[*decision.reasons, cap.describe(d.application)],
            duplicate=not new,
            alert_ids=[alert.alert_id] if new else [],
        )
        return outcome if new else self._record_extra(outcome, extra)

    def _no_rollback(
        self, decision: GuardDecision, policy: Policy, account: str, region: str, extra: Sequence[LedgerEntry]
    ) -> Outcome:
        d = decision.deployment
        now = self.clock.now()
        alert = self._alert(decision, policy, "NO_ROLLBACK", None, account, region)
        new = self.ledger.append(
            [
                *extra,
                self._intent_entry(decision, policy, "NO_ROLLBACK", None, account, region),
                alert_entry(alert, now, now),
            ]
        )
        outcome = self._outcome(
            NO_ROLLBACK,
            change_id=d.change_id,
            severity=Severity.HIGH.value,
            actions=[f"could not roll back {d.deployment_id}: no known good revision"],
            reasons=list(decision.reasons),
            duplicate=not new,
            alert_ids=[alert.alert_id] if new else [],
        )
        return outcome if new else self._record_extra(outcome, extra)

    # -- the cap ----------------------------------------------------------------------------------
    @staticmethod
    def _cap_key(application: str, policy: Policy, account: str, region: str) -> str:
        # Per application where it lives: a name is unique in one account and region only, and a
        # release that reaches many accounts at once must be stoppable in each. Observe mode counts
        # its "would have" stops apart: switching to enforce starts afresh.
        return f"guard:stops:{account}:{region}:{application}" + ("" if policy.enforcing else ":observe")

    def _cap(self, application: str, policy: Policy, account: str, region: str) -> CapCheck:
        slots: dict[int, datetime] = {}
        released: set[int] = set()
        for e in self.ledger.entries_for(self._cap_key(application, policy, account, region)):
            parts = e.entry.split("#")
            if parts[0] == "SLOT" and len(parts) == 2:
                slots[int(parts[1])] = e.event_time
            elif parts[0] == "SLOT" and parts[2:] == ["released"]:
                released.add(int(parts[1]))
        return stop_cap(slots, self.clock.now(), policy.max_stops_per_app_hour, released=released)

    def _slot_release(
        self, decision: GuardDecision, policy: Policy, slot: int, account: str, region: str
    ) -> LedgerEntry:
        """Gives back a stop's slot: the stop found the deployment already finished and stopped nothing."""
        body = {"for_deployment": decision.deployment.deployment_id, "released": True}
        return self._slot(decision, policy, account, region, f"SLOT#{slot:06d}#released", EntryKind.STOP, body)

    def _slot_entry(
        self, decision: GuardDecision, policy: Policy, cap: CapCheck, account: str, region: str
    ) -> LedgerEntry:
        kind = EntryKind.STOP if decision.action is GuardAction.STOP else EntryKind.ROLLBACK
        body = {
            "for_deployment": decision.deployment.deployment_id,
            "action": decision.action.value,
            "mode": policy.enforcement_mode.value,
        }
        return self._slot(decision, policy, account, region, f"SLOT#{cap.slot:06d}", kind, body)

    def _slot(
        self,
        decision: GuardDecision,
        policy: Policy,
        account: str,
        region: str,
        entry: str,
        kind: EntryKind,
        body: dict[str, Any],
    ) -> LedgerEntry:
        # ``for_deployment``, not ``deployment_id``: a slot is bookkeeping, not the stop itself.
        now = self.clock.now()
        return LedgerEntry(
            change_id=self._cap_key(decision.deployment.application, policy, account, region),
            entry=entry,
            kind=kind,
            function=self.function,
            event_time=now,
            recorded_at=now,
            body=body,
        )

    # -- ledger and alert shapes ------------------------------------------------------------------
    def ticket_of(self, deployment: Deployment, policy: Policy, account: str | None, region: str | None) -> str | None:
        """The change ticket from the description, the revision, then the group's and application's tags."""
        if deployment.deployment_id in self._tickets:
            return self._tickets[deployment.deployment_id]
        found = find_ticket(deployment, policy.ticket_pattern)
        if found is None and account and region:
            tags = (
                self.codedeploy.tags_of(self._group_arn(deployment.application, deployment.group, account, region)),
                self.codedeploy.tags_of(
                    f"arn:{partition_of(region)}:codedeploy:{region}:{account}:application:{deployment.application}"
                ),
            )
            found = find_ticket(deployment, policy.ticket_pattern, tags=tags, tag_key=policy.ticket_tag_key)
        ticket = found[0] if found else None
        if account and region:
            self._tickets[deployment.deployment_id] = ticket
        return ticket

    @staticmethod
    def _group_arn(application: str, group: str, account: str, region: str) -> str:
        return f"arn:{partition_of(region)}:codedeploy:{region}:{account}:deploymentgroup:{application}/{group}"

    def _intent_entry(
        self,
        decision: GuardDecision,
        policy: Policy,
        intent: str,
        cap: CapCheck | None,
        account: str,
        region: str,
    ) -> LedgerEntry:
        d = decision.deployment
        now = self.clock.now()
        enforced = intent in ("STOP", "ROLLBACK")
        # Only a stop or rollback that happens is a STOP/ROLLBACK fact; "would have", capped and
        # impossible ones are decisions about the deployment (and never count as failed changes).
        # So is a stop's intent: StopDeployment may find the deployment already finished, and the
        # stop's result entry (``STOP#...``) is the fact. A redeploy always creates a deployment.
        failed = intent == "ROLLBACK"
        kind = EntryKind.ROLLBACK if failed else EntryKind.DEPLOYMENT
        return LedgerEntry(
            change_id=d.change_id,
            entry=intent,
            kind=kind,
            function=self.function,
            event_time=now,
            recorded_at=now,
            verdict=FAILED_CHANGE if failed else intent,
            severity=(Severity.CRITICAL if "CAPPED" in intent else Severity.HIGH).value,
            ticket_id=self.ticket_of(d, policy, account, region),
            account=account,
            region=region,
            body={
                "action": decision.action.value,
                "mode": policy.enforcement_mode.value,
                "enforced": enforced,
                "failed_change": failed,
                "deployment_id": d.deployment_id,
                "application": d.application,
                "deployment_group": d.group,
                "status": d.status,
                "trigger": decision.trigger,
                "reasons": list(decision.reasons),
                "evidence": decision.evidence,
                "revision": decision.revision,
                "cap": cap.model_dump(mode="json") if cap else None,
                "health": decision.health.model_dump(mode="json") if decision.health else None,
            },
        )

    def _alert(
        self,
        decision: GuardDecision,
        policy: Policy,
        intent: str,
        cap: CapCheck | None,
        account: str,
        region: str,
        status: str | None = None,
    ) -> Alert:
        """``status``: for ALREADY_COMPLETED, the status the deployment had finished with."""
        d = decision.deployment
        where = f"{d.application}/{d.group}"
        ended = "succeeded" if status == "Succeeded" else f"finished ({status or 'status unknown'})"
        if status in ("Stopped", "Failed"):
            ended = f"{status.lower()} by CodeDeploy"
        subject, summary, actions, severity = {
            "STOP": (
                f"Stopping deployment {d.deployment_id} ({where}): {decision.trigger}",
                f"ChangeGuard is stopping deployment {d.deployment_id} of {where} with automatic rollback.",
                ("StopDeployment with autoRollbackEnabled=true: CodeDeploy redeploys the last good revision",),
                Severity.HIGH,
            ),
            "WOULD_STOP": (
                f"Would have stopped deployment {d.deployment_id} ({where}): {decision.trigger}",
                f"Observe mode: ChangeGuard would have stopped deployment {d.deployment_id} of {where}.",
                ("nothing (observe mode): would have stopped the deployment with automatic rollback",),
                Severity.MEDIUM,
            ),
            "ROLLBACK": (
                f"Rolling back {d.deployment_id} ({where}): regression in the bake window",
                f"ChangeGuard is redeploying the last known good revision of {where} over {d.deployment_id}.",
                ("CreateDeployment of the last known good revision (the deployment cannot be stopped: it finished)",),
                Severity.HIGH,
            ),
            "WOULD_ROLL_BACK": (
                f"Would have rolled back {d.deployment_id} ({where}): regression in the bake window",
                f"Observe mode: ChangeGuard would have redeployed the last known good revision over {d.deployment_id}.",
                ("nothing (observe mode): would have redeployed the last known good revision",),
                Severity.MEDIUM,
            ),
            "STOP_CAPPED": (
                f"Stop cap reached for {d.application}: {d.deployment_id} NOT stopped",
                f"Deployment {d.deployment_id} of {where} should be stopped, but the stop cap is reached.",
                ("nothing: the stop cap protects releases from a broken alarm",),
                Severity.CRITICAL,
            ),
            "ROLLBACK_CAPPED": (
                f"Stop cap reached for {d.application}: {d.deployment_id} NOT rolled back",
                f"Deployment {d.deployment_id} of {where} should be rolled back, but the stop cap is reached.",
                ("nothing: the stop cap protects releases from a broken alarm",),
                Severity.CRITICAL,
            ),
            "ALREADY_COMPLETED": (
                f"Deployment {d.deployment_id} ({where}) had already {ended}: not stopped ({decision.trigger})",
                f"ChangeGuard decided to stop deployment {d.deployment_id} of {where}, but CodeDeploy reported it"
                f" already complete ({status or 'status unknown'}): ChangeGuard stopped nothing.",
                ("StopDeployment: DeploymentAlreadyCompletedException (nothing to stop)",),
                Severity.HIGH if status == "Succeeded" else Severity.MEDIUM,
            ),
            "NO_ROLLBACK": (
                f"Regression after {d.deployment_id} ({where}): nothing to roll back to",
                f"{d.deployment_id} regressed inside the bake window and no earlier successful revision is known.",
                ("nothing: no known good revision",),
                Severity.HIGH,
            ),
        }[intent]
        remediation = {
            "STOP_CAPPED": "Check the alarm and the deployment; stop it by hand if it is unhealthy. Raise"
            " max-stops-per-app-hour only if the stops were right.",
            "ROLLBACK_CAPPED": "Check the alarm; roll back by hand if the release is bad.",
            "NO_ROLLBACK": "Roll forward with a fix, or deploy a known good revision by hand.",
            "ALREADY_COMPLETED": "Check the release: roll back by hand if it is bad."
            if status == "Succeeded"
            else "Check that CodeDeploy's rollback (if the group rolls back automatically) restored the last good revision.",
        }.get(intent, "Fix the release under its change ticket; the ledger records this as a failed change.")
        details: dict[str, str | int | float | bool | None] = {
            "deployment_id": d.deployment_id,
            "application": d.application,
            "deployment_group": d.group,
            "trigger": decision.trigger,
            "reason": decision.reasons[0] if decision.reasons else None,
            "mode": policy.enforcement_mode.value,
            **decision.evidence,
        }
        if cap:
            details.update({"cap.used": cap.used, "cap.limit": cap.limit})
        ticket = self.ticket_of(d, policy, account, region)
        return Alert(
            alert_id=Alert.make_id(d.change_id, self.function, _alert_kind(intent)),
            kind=_alert_kind(intent),
            function=self.function,
            severity=severity,
            verdict=FAILED_CHANGE if intent in ("STOP", "ROLLBACK") or status in ("Stopped", "Failed") else intent,
            subject=subject,
            summary=summary + (f" Change ticket {ticket}." if ticket else " No change ticket found."),
            change_id=d.change_id,
            event_time=self.clock.now(),
            account=account,
            region=region,
            resource_type="codedeploy:deploymentgroup",
            resources=(self._group_arn(d.application, d.group, account, region),),
            ticket_id=ticket,
            reasons=decision.reasons + ((cap.describe(d.application),) if cap else ()),
            actions=actions,
            remediation=remediation,
            details=details,
        )

    def _outcome(
        self,
        verdict: str | None,
        *,
        change_id: str | None = None,
        severity: str | None = None,
        actions: Sequence[str] = (),
        reasons: Sequence[str] = (),
        duplicate: bool = False,
        alert_ids: Sequence[str] = (),
    ) -> Outcome:
        return Outcome(
            function=self.function,
            change_id=change_id,
            verdict=verdict,
            severity=severity,
            actions=list(actions),
            reasons=list(reasons),
            duplicate=duplicate,
            alert_ids=list(alert_ids),
        )


def _alert_kind(intent: str) -> str:
    """One alert per deployment and kind: the alert id's last part."""
    return intent.lower().replace("_", "-")
