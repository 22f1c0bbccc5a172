"""The deployment guard's pure decisions: rollbacks, tickets, health, alarm -> action, the stop cap."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from changeguard.domain.deployments import (
    REDEPLOY_MARKER,
    AlarmSignal,
    Deployment,
    ErrorRateCriterion,
    GroupRef,
    GuardAction,
    HealthCriteria,
    LatencyCriterion,
    MetricSpec,
    RedeployMark,
    aggregate,
    decide_on_alarm,
    decide_on_health,
    evaluate_health,
    find_ticket,
    groups_from_tag,
    health_plan,
    in_bake_window,
    is_release,
    is_rollback,
    last_good_revision,
    not_a_release,
    parse_health_criteria,
    parse_reason_data,
    redeploy_description,
    redeploy_mark,
    rollback_of,
    rollback_reason,
    stop_cap,
)
from changeguard.domain.errors import ConfigurationError
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.policy import Policy

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
V14 = {"revisionType": "String", "string": {"content": "v14"}}
V15 = {"revisionType": "String", "string": {"content": "v15"}}
V16 = {"revisionType": "String", "string": {"content": "v16"}}
PATTERN = re.compile(r"CHG-\d{4,}")


def dep(deployment_id: str, status: str = "InProgress", **kw: Any) -> Deployment:
    base: dict[str, Any] = {
        "deployment_id": deployment_id,
        "application": "checkout",
        "group": "prod",
        "status": status,
        "create_time": T0,
        "start_time": T0,
        "revision": V16,
    }
    base.update(kw)
    return Deployment(**base)


def alarm(state: str = "ALARM", at: datetime = T0 + timedelta(minutes=4), **kw: Any) -> AlarmSignal:
    base: dict[str, Any] = {
        "alarm_name": "checkout-errors",
        "alarm_arn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:checkout-errors",
        "state": state,
        "changed_at": at,
        "account": "123456789012",
        "region": "us-east-1",
        "shape": "eventbridge",
        "reason": "Threshold Crossed",
        "reason_data": {"threshold": 10.0, "recentDatapoints": [48.0], "statistic": "Sum"},
    }
    base.update(kw)
    return AlarmSignal(**base)


# -- groups, rollbacks, tickets ---------------------------------------------------------------------
def test_group_tag_names_one_or_more_groups_and_skips_malformed_items():
    refs = groups_from_tag("checkout/prod, payments/prod-eu  nonsense /x")
    assert [r.key for r in refs] == ["checkout/prod", "payments/prod-eu"]
    assert groups_from_tag(None) == ()
    with pytest.raises(ValueError, match="application/group"):
        GroupRef.parse("checkout")


@pytest.mark.parametrize(
    ("deployment", "why"),
    [
        (dep("d-1", rolled_back_from="d-0"), "rolls back d-0"),
        (dep("d-1", creator="codeDeployRollback"), "codeDeployRollback"),
        (
            dep("d-1", description=f"{REDEPLOY_MARKER}d-0: regression", redeploy_mark=RedeployMark.MARKED),
            "ChangeGuard created it",
        ),
    ],
)
def test_rollbacks_are_recognised_three_ways(deployment, why):
    assert why in (rollback_reason(deployment) or "")
    assert is_rollback(deployment)


@pytest.mark.parametrize("mark", [None, RedeployMark.UNMARKED])
def test_a_description_claiming_the_guards_redeploy_is_no_rollback_without_the_ledgers_mark(mark):
    """Anyone allowed CreateDeployment writes the description: the claim alone must not shield a release."""
    spoof = dep("d-1", description=f"{REDEPLOY_MARKER}d-0: regression", redeploy_mark=mark)
    assert rollback_reason(spoof) is None and rollback_of(spoof) is None and is_release(spoof)
    plan = health_plan(CRITERIA, T0, T0 + timedelta(minutes=5))
    assert plan is not None
    bad = evaluate_health(CRITERIA, plan, {"errors": [50], "requests": [1000]}, {})
    by_health = decide_on_health(spoof, bad, 5)
    [by_alarm] = decide_on_alarm(alarm(), [spoof], bake_minutes=30)
    for decision in (by_health, by_alarm):
        assert decision is not None and decision.action is GuardAction.STOP
        assert any("claims it is ChangeGuard's rollback" in r for r in decision.reasons)


def _fact(change_id: str, entry: str, at: datetime = T0, kind: EntryKind = EntryKind.ROLLBACK) -> LedgerEntry:
    return LedgerEntry(change_id=change_id, entry=entry, kind=kind, function="guard", event_time=at, recorded_at=at)


def test_the_ledger_says_whether_a_claimed_redeploy_is_the_guards():
    now = T0 + timedelta(minutes=1)
    mark = [_fact("d-NEW", "ROLLBACK#guard_deployment")]
    intent = _fact("codedeploy:d-0", "ROLLBACK")
    result = _fact("codedeploy:d-0", "ROLLBACK#d-NEW")
    assert redeploy_mark("d-NEW", mark, [], now) is RedeployMark.MARKED
    assert redeploy_mark("d-NEW", [], [intent, result], now) is RedeployMark.MARKED  # the bare mark not yet written
    # The guard wrote its intent before CreateDeployment and has not recorded the result yet.
    assert redeploy_mark("d-NEW", [], [intent], now) is RedeployMark.PENDING
    # Its result names another deployment: this one only claims to be it.
    assert redeploy_mark("d-SPOOF", [], [intent, result], now) is RedeployMark.UNMARKED
    # An intent long dead, an observe-mode "would have", or nothing at all is no proof either.
    assert redeploy_mark("d-NEW", [], [intent], now + timedelta(hours=1)) is RedeployMark.UNMARKED
    would = _fact("codedeploy:d-0", "WOULD_ROLL_BACK", kind=EntryKind.DEPLOYMENT)
    assert redeploy_mark("d-NEW", [], [would], now) is RedeployMark.UNMARKED
    assert redeploy_mark("d-NEW", [], [], now) is RedeployMark.UNMARKED


def test_an_ordinary_release_is_not_a_rollback():
    release = dep("d-1", creator="user", description="checkout v16 (CHG-2002)")
    assert rollback_reason(release) is None
    assert rollback_of(release) is None


@pytest.mark.parametrize("creator", ["autoscaling", "CodeDeployAutoUpdate", "autoscalingTermination"])
def test_auto_scaling_and_auto_update_deployments_are_not_releases(creator):
    deployment = dep("d-1", creator=creator)
    assert not is_release(deployment)
    assert not is_rollback(deployment)  # not a rollback either: the rollback rules are untouched
    assert f"creator {creator}" in (not_a_release(creator) or "")


@pytest.mark.parametrize("creator", ["user", "CloudFormation", None])
def test_deployments_people_make_are_releases(creator):
    assert not_a_release(creator) is None
    assert is_release(dep("d-1", creator=creator))


def test_rollback_of_reads_rollback_info_and_the_suites_marker():
    assert rollback_of(dep("d-2", rolled_back_from="d-1")) == "d-1"
    marked = dep(
        "d-2", description=redeploy_description(dep("d-ABC123456"), "CHG-2002"), redeploy_mark=RedeployMark.MARKED
    )
    assert rollback_of(marked) == "d-ABC123456"
    assert "CHG-2002" in (marked.description or "")


def test_ticket_is_found_in_description_then_revision_then_tags():
    assert find_ticket(dep("d-1", description="v16 (CHG-2002)"), PATTERN) == ("CHG-2002", "description")
    in_revision = dep("d-1", revision={"revisionType": "S3", "s3Location": {"key": "checkout-CHG-3001.zip"}})
    assert find_ticket(in_revision, PATTERN) == ("CHG-3001", "revision")
    tagged = dep("d-1", revision={})
    assert find_ticket(tagged, PATTERN, tags=[{}, {"ChangeTicket": "CHG-4001"}]) == ("CHG-4001", "tags")
    assert find_ticket(tagged, PATTERN, tags=[{"Owner": "x"}]) is None


def test_alarm_evidence_carries_the_deciding_values_and_tolerates_math_alarms():
    evidence = alarm().evidence()
    assert evidence["alarm.threshold"] == 10.0
    assert evidence["alarm.recent_datapoints"] == "48"
    math_alarm = alarm(reason_data={"recentDatapoints": [0.7]})  # metric math: no threshold
    assert "alarm.threshold" not in math_alarm.evidence()
    assert parse_reason_data("{not json") is None
    assert parse_reason_data('{"threshold": 1}') == {"threshold": 1}


# -- health -------------------------------------------------------------------------------------------
LAT = MetricSpec(namespace="AWS/Lambda", name="Duration", dimensions={"FunctionName": "checkout-api"})
CRITERIA = HealthCriteria(
    error_rate=ErrorRateCriterion(
        errors=MetricSpec(namespace="AWS/Lambda", name="Errors"),
        requests=MetricSpec(namespace="AWS/Lambda", name="Invocations"),
    ),
    latency=LatencyCriterion(metric=LAT),
)


def test_default_thresholds_are_the_documented_ones():
    assert CRITERIA.error_rate is not None and CRITERIA.error_rate.max_percent == 1.0
    assert CRITERIA.latency is not None and CRITERIA.latency.stat == "p99"
    assert CRITERIA.latency.max_baseline_ratio == 2.0
    assert CRITERIA.delay_minutes == 5


def test_health_plan_windows_are_the_last_minutes_and_the_hour_before_the_start():
    plan = health_plan(CRITERIA, T0 + timedelta(seconds=20), T0 + timedelta(minutes=6, seconds=30))
    assert plan is not None
    assert (plan.current.start, plan.current.end) == (T0 + timedelta(minutes=1), T0 + timedelta(minutes=6))
    assert plan.baseline is not None
    assert (plan.baseline.start, plan.baseline.end) == (T0 - timedelta(minutes=60), T0)
    assert [q.id for q in plan.current_queries] == ["errors", "requests", "latency"]
    assert [q.stat for q in plan.baseline_queries] == ["p99"]
    # A check right after the start is too early to say anything.
    assert health_plan(CRITERIA, T0, T0 + timedelta(seconds=50)) is None


def test_healthy_within_thresholds():
    plan = health_plan(CRITERIA, T0, T0 + timedelta(minutes=5))
    assert plan is not None
    report = evaluate_health(
        CRITERIA,
        plan,
        {"errors": [2, 2, 2, 2, 2], "requests": [1000] * 5, "latency": [130.0]},
        {"latency_baseline": [130.0]},
    )
    assert report.healthy and report.evaluated
    assert report.values["error_rate_percent"] == pytest.approx(0.2)
    assert report.values["latency_ratio"] == pytest.approx(1.0)


def test_unhealthy_names_each_breached_criterion_with_its_values():
    plan = health_plan(CRITERIA, T0, T0 + timedelta(minutes=5))
    assert plan is not None
    report = evaluate_health(
        CRITERIA, plan, {"errors": [240], "requests": [5000], "latency": [400.0]}, {"latency_baseline": [130.0]}
    )
    assert not report.healthy
    details = [f.detail for f in report.breaches]
    assert details[0].startswith("error rate 4.80% > 1%")
    assert "240 errors / 5000 requests" in details[0]
    assert "p99 latency 400 is 3.08x the pre-deployment 130" in details[1]
    assert report.evidence()["metric.error_rate_percent"] == 4.8


def test_the_boundary_is_not_a_breach():
    plan = health_plan(CRITERIA, T0, T0 + timedelta(minutes=5))
    assert plan is not None
    report = evaluate_health(
        CRITERIA, plan, {"errors": [10], "requests": [1000], "latency": [260.0]}, {"latency_baseline": [130.0]}
    )
    assert report.healthy  # exactly 1 % and exactly 2x


def test_no_data_is_not_evaluable_never_a_breach():
    plan = health_plan(CRITERIA, T0, T0 + timedelta(minutes=5))
    assert plan is not None
    report = evaluate_health(CRITERIA, plan, {"errors": [5]}, {})
    assert report.healthy and not report.evaluated
    assert {f.breached for f in report.findings} == {None}


def test_aggregate_sums_counts_and_takes_the_worst_percentile():
    assert aggregate("Sum", [1, 2, 3]) == 6
    assert aggregate("Average", [1, 3]) == 2
    assert aggregate("p99", [120, 180, 150]) == 180
    assert aggregate("Minimum", [4, 2]) == 2
    assert aggregate("p99", []) is None


def test_health_criteria_parameter_is_json_keyed_by_group():
    parsed = parse_health_criteria(
        '{"checkout/prod": {"delay_minutes": 2, "latency": {"metric": {"namespace": "N", "name": "M"}, "stat": "p95"}}}'
    )
    assert parsed["checkout/prod"].delay_minutes == 2
    assert parsed["checkout/prod"].latency is not None and parsed["checkout/prod"].latency.stat == "p95"
    assert parse_health_criteria("{}") == {}
    policy = Policy.from_parameters({"/changeguard/dev/health-criteria": '{"a/b": {}}'})
    assert "a/b" in policy.health_criteria
    for bad in (
        '{"nogroup": {}}',
        "{not json",
        '{"a/b": {"latency": {"metric": {"namespace": "N", "name": "M"}, "stat": "median"}}}',
        '{"a/b": {"unknown": 1}}',
        '{"a/b": {"accounts": ["2222"]}}',  # issue 9: where the group lives, checked
        '{"a/b": {"regions": ["../us-east-1"]}}',
    ):
        with pytest.raises(ConfigurationError):
            Policy.from_parameters({"/changeguard/dev/health-criteria": bad})


def test_criteria_say_where_their_group_lives_and_without_a_list_it_lives_everywhere():
    scoped = parse_health_criteria('{"a/b": {"accounts": ["222222222222"], "regions": ["eu-west-1"]}}')["a/b"]
    assert scoped.lives_in("222222222222", "eu-west-1")
    assert not scoped.lives_in("222222222222", "us-east-1")
    assert not scoped.lives_in("123456789012", "eu-west-1")
    anywhere = parse_health_criteria('{"a/b": {}}')["a/b"]
    assert anywhere.lives_in("123456789012", "ap-southeast-2")


def test_decide_on_health_stops_only_unhealthy_in_flight_releases():
    plan = health_plan(CRITERIA, T0, T0 + timedelta(minutes=5))
    assert plan is not None
    bad = evaluate_health(CRITERIA, plan, {"errors": [50], "requests": [1000]}, {})
    good = evaluate_health(CRITERIA, plan, {"errors": [1], "requests": [1000]}, {})
    decision = decide_on_health(dep("d-1"), bad, 5)
    assert decision is not None and decision.action is GuardAction.STOP
    assert decision.trigger == "health check 5 min after start"
    assert decision.reasons[0].startswith("error rate 5.00%")
    assert decide_on_health(dep("d-1"), good, 5) is None
    assert decide_on_health(dep("d-1", creator="codeDeployRollback"), bad, 5) is None
    assert decide_on_health(dep("d-1", creator="autoscaling"), bad, 5) is None
    assert decide_on_health(dep("d-1", status="Succeeded"), bad, 5) is None


# -- alarm -> decisions -----------------------------------------------------------------------------------
def test_a_firing_alarm_stops_in_flight_releases_and_spares_rollbacks():
    release = dep("d-REL", creator="user")
    rollback = dep(
        "d-RB", creator="codeDeployRollback", rolled_back_from="d-OLD", create_time=T0 + timedelta(minutes=1)
    )
    decisions = decide_on_alarm(alarm(), [release, rollback], bake_minutes=30)
    actions = {d.deployment.deployment_id: d.action for d in decisions}
    assert actions == {"d-REL": GuardAction.STOP, "d-RB": GuardAction.SKIP}
    stop = next(d for d in decisions if d.action is GuardAction.STOP)
    assert stop.trigger == "alarm checkout-errors"
    assert stop.evidence["alarm.threshold"] == 10.0
    assert "never stops a rollback" in next(d for d in decisions if d.action is GuardAction.SKIP).reasons[0]


def test_a_firing_alarm_never_stops_a_scale_out_deployment():
    release = dep("d-REL", creator="user")
    scale_out = dep("d-ASG", creator="autoscaling", create_time=T0 + timedelta(minutes=1))
    decisions = decide_on_alarm(alarm(), [release, scale_out], bake_minutes=30)
    actions = {d.deployment.deployment_id: d.action for d in decisions}
    assert actions == {"d-REL": GuardAction.STOP, "d-ASG": GuardAction.SKIP}
    skip = next(d for d in decisions if d.action is GuardAction.SKIP)
    assert skip.reasons[0].startswith("never stops it: not a release") and "creator autoscaling" in skip.reasons[0]


def test_a_scale_out_after_a_release_is_not_the_latest_release():
    """Rolling "back" over a scale-out would redeploy the bad release's own revision, or a healthy one."""
    done = T0 + timedelta(minutes=9)
    release = dep("d-REL", status="Succeeded", complete_time=done, previous_revision=V15)
    scale_out = dep(
        "d-ASG",
        status="Succeeded",
        creator="autoscaling",
        create_time=done + timedelta(minutes=2),
        start_time=done + timedelta(minutes=2),
        complete_time=done + timedelta(minutes=5),
        previous_revision=V16,
    )
    decisions = decide_on_alarm(alarm(at=done + timedelta(minutes=11)), [release, scale_out], bake_minutes=30)
    assert [(d.deployment.deployment_id, d.action, d.revision) for d in decisions] == [
        ("d-REL", GuardAction.REDEPLOY, V15)
    ]


def test_a_scale_out_in_flight_does_not_hide_a_regression_in_the_bake_window():
    done = T0 + timedelta(minutes=9)
    release = dep("d-REL", status="Succeeded", complete_time=done, previous_revision=V15)
    scale_out = dep("d-ASG", creator="CodeDeployAutoUpdate", create_time=done + timedelta(minutes=2))
    decisions = decide_on_alarm(alarm(at=done + timedelta(minutes=4)), [release, scale_out], bake_minutes=30)
    assert [(d.deployment.deployment_id, d.action) for d in decisions] == [
        ("d-ASG", GuardAction.SKIP),
        ("d-REL", GuardAction.REDEPLOY),
    ]


def test_an_alarm_that_is_not_in_alarm_decides_nothing():
    assert decide_on_alarm(alarm(state="OK"), [dep("d-1")], bake_minutes=30) == []


def test_a_regression_inside_the_bake_window_redeploys_the_previous_revision():
    done = T0 + timedelta(minutes=9)
    baked = dep("d-NEW", status="Succeeded", complete_time=done, previous_revision=V15)
    older = dep("d-OLD", status="Succeeded", create_time=T0 - timedelta(days=1), complete_time=T0 - timedelta(hours=23))
    decisions = decide_on_alarm(alarm(at=done + timedelta(minutes=11)), [older, baked], bake_minutes=30)
    assert len(decisions) == 1
    redeploy = decisions[0]
    assert redeploy.action is GuardAction.REDEPLOY
    assert redeploy.deployment.deployment_id == "d-NEW"
    assert redeploy.revision == V15
    assert "succeeded 11 min before the alarm fired, inside the 30 min bake window" in redeploy.reasons[1]


def test_outside_the_bake_window_nothing_is_rolled_back():
    done = T0
    baked = dep("d-NEW", status="Succeeded", complete_time=done, previous_revision=V15)
    assert decide_on_alarm(alarm(at=done + timedelta(minutes=30)), [baked], bake_minutes=30) == []
    assert in_bake_window(baked, done + timedelta(minutes=29, seconds=59), 30)
    rolled_out = dep("d-NEW", status="Succeeded", complete_time=T0 + timedelta(minutes=9))
    assert in_bake_window(rolled_out, T0 + timedelta(minutes=8), 30)  # fired while it was still rolling out
    assert not in_bake_window(rolled_out, T0 - timedelta(minutes=1), 30)  # fired before it started
    assert not in_bake_window(dep("d-X", status="Failed", complete_time=done), done, 30)


def test_only_the_latest_release_is_rolled_back_and_not_while_a_newer_one_runs():
    done = T0
    baked = dep("d-NEW", status="Succeeded", complete_time=done, previous_revision=V15)
    newer = dep("d-NEWER", create_time=T0 + timedelta(minutes=5))
    decisions = decide_on_alarm(alarm(at=done + timedelta(minutes=6)), [baked, newer], bake_minutes=30)
    assert [(d.deployment.deployment_id, d.action) for d in decisions] == [("d-NEWER", GuardAction.STOP)]


def test_a_succeeded_rollback_is_never_rolled_back_again():
    done = T0
    rollback = dep("d-RB", status="Succeeded", complete_time=done, creator="codeDeployRollback", rolled_back_from="d-X")
    stopped = dep(
        "d-X", status="Stopped", complete_time=done - timedelta(minutes=5), create_time=T0 - timedelta(minutes=20)
    )
    assert decide_on_alarm(alarm(at=done + timedelta(minutes=2)), [stopped, rollback], bake_minutes=30) == []


def test_last_good_revision_falls_back_to_the_group_history():
    baked = dep("d-NEW", status="Succeeded", complete_time=T0 + timedelta(minutes=9))
    history = [
        dep(
            "d-V14",
            status="Succeeded",
            revision=V14,
            create_time=T0 - timedelta(days=2),
            complete_time=T0 - timedelta(days=2),
        ),
        dep(
            "d-V15",
            status="Succeeded",
            revision=V15,
            create_time=T0 - timedelta(days=1),
            complete_time=T0 - timedelta(days=1),
        ),
        dep(
            "d-FAIL",
            status="Failed",
            revision=V16,
            create_time=T0 - timedelta(hours=1),
            complete_time=T0 - timedelta(hours=1),
        ),
        baked,
    ]
    assert last_good_revision(baked, history) == V15
    assert last_good_revision(baked, [baked]) is None
    decisions = decide_on_alarm(alarm(at=T0 + timedelta(minutes=12)), [baked], bake_minutes=30)
    assert decisions[0].action is GuardAction.REDEPLOY and decisions[0].revision is None
    assert "nothing to roll back to" in decisions[0].reasons[-1]


# -- the stop cap -------------------------------------------------------------------------------------------
def test_stop_cap_counts_the_last_hour_and_numbers_the_next_slot():
    now = T0
    assert stop_cap({}, now, 3).model_dump() == {"allowed": True, "slot": 1, "used": 0, "limit": 3}
    slots = {1: now - timedelta(minutes=90), 2: now - timedelta(minutes=40), 3: now - timedelta(minutes=10)}
    cap = stop_cap(slots, now, 2)
    assert (cap.allowed, cap.used, cap.slot) == (False, 2, 4)
    assert stop_cap(slots, now + timedelta(minutes=21), 2).allowed  # the 09:20 stop left the window
    assert cap.describe("checkout") == "2 of 2 stops/rollbacks for checkout in the last hour: the cap is reached"
    assert stop_cap({}, now, 3).describe("checkout").startswith("1 of 3 stops/rollbacks for checkout")
