"""Faults: throttling and 5xx at the HTTP layer, lost responses, a ticket source down for a whole run.

Faults are injected by the embedded AWS itself (``changeguard_tools.embedded.faults``): the caller gets
the error the real service sends, shaped for its protocol, so botocore's standard retry mode really
runs (its throttling and transient checks, backoff and retry quota). Only the sleeps are shortened
(``fast_retries``); the retry logic is botocore's own. A ``Stubber`` would sit above all of that.

The functions run through the harness with their template environment, which sets
``AWS_RETRY_MODE=standard`` and ``AWS_MAX_ATTEMPTS=5`` for the clients Powertools builds itself
(Parameters, Idempotency); the suite's own clients set the same in ``adapters/clients.py``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from changeguard_tools import fixtures
from changeguard_tools.embedded.faults import FaultInjector, fast_retries
from changeguard_tools.harness import Harness
from hardening.callrecorder import RECORDER, install_fresh
from hardening.conftest import (
    all_ledger_entries,
    ledger_entries,
    load_scenario_file,
    make_harness,
    published_alerts,
    scaled,
    trail_since,
)
from sample_events import load_event

SCENARIO_EVENTS = [step["event"] for step in load_scenario_file("10-correlation.yaml")[1] if "event" in step]
ROUNDS = scaled(20)  # distinct copies of the correlation scenario's changes (8 per round)
TICKETED = [  # changes that name a ticket: the ones a ticket-source outage leaves UNVERIFIED
    "correlate_change/01-approved-run-instances.json",
    "correlate_change/03-unapproved-ticket.json",
    "correlate_change/04-self-approved.json",
    "correlate_change/05-emergency-change.json",
]
OUTAGE_CHANGES = scaled(100)
AT = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LAMBDA_ATTEMPTS = 3  # an async invocation and Lambda's two retries


@pytest.fixture(autouse=True)
def _short_backoff() -> Iterator[None]:
    with fast_retries():
        yield


def variant(event: dict, k: int) -> dict:
    """A distinct change shaped like ``event`` (its eventID, and the Config item's join key, suffixed)."""
    copy = json.loads(json.dumps(event))
    if k == 0:
        return copy
    detail = copy["detail"]
    if "eventID" in detail:
        detail["eventID"] = f"{detail['eventID']}-r{k}"
    item = detail.get("configurationItem")
    if isinstance(item, dict):
        item["relatedEvents"] = [f"{e}-r{k}" for e in item.get("relatedEvents", [])]
        item["configurationStateId"] = f"{item.get('configurationStateId', 0)}{k}"
    copy["id"] = f"{copy['id'][:-6]}{k:06d}"
    return copy


def scenario_harness(aws) -> Harness:
    seed, _ = load_scenario_file("10-correlation.yaml")
    h = make_harness(aws, at=AT)
    fixtures.seed(h, seed)
    return h


def deliver(h: Harness, event: dict) -> tuple[list[str], int]:
    """Invoke what the rules route ``event`` to, as Lambda invokes an async target: a failed invocation
    is retried twice. Then the stream consumers run. (errors left after the retries, retries used)

    Faults can outlast botocore's retries: its retry quota (a token bucket per client) stops retrying
    once too many retries ended in errors, and the call fails at once. Lambda's own retries are what
    the suite relies on then, so the replay gives them too.
    """
    errors: list[str] = []
    retries = 0
    for function in h.route(event):
        for attempt in range(LAMBDA_ATTEMPTS):
            invocation = h.invoke(function, event)
            if invocation.error is None:
                break
            retries += attempt < LAMBDA_ATTEMPTS - 1
        else:
            errors.append(f"{function}: {invocation.error}")
    errors += [f"{i.function}: {i.error}" for i in h.pump_streams() if i.error]
    return errors, retries


def replay(h: Harness, rounds: int) -> tuple[list[str], list[tuple[str, str]], int]:
    """Every scenario change ``rounds`` times over, each delivered twice; (errors, alerts received, retries)."""
    errors: list[str] = []
    alerts: list[tuple[str, str]] = []
    retries = 0
    for k in range(rounds):
        for name in SCENARIO_EVENTS:
            event = variant(load_event(name), k)
            for delivery in (event, dict(event, id=event["id"][:-1] + "x")):
                failed, retried = deliver(h, delivery)
                errors += failed
                retries += retried
                alerts += [(a.function, a.subject) for a in h.drain_alerts()]
    return errors, alerts, retries


def ledger_facts(h: Harness) -> Counter:
    return Counter((e.change_id, e.entry, e.verdict, e.severity) for e in all_ledger_entries(h))


# -- the injector speaks each protocol as AWS does --------------------------------------------------------
PROTOCOL_CALLS = {
    "dynamodb": ("json 1.0", lambda c: c.list_tables()),
    "ssm": ("json 1.1", lambda c: c.describe_parameters()),
    "sqs": ("json, query-compatible", lambda c: c.list_queues()),
    "sns": ("query", lambda c: c.list_topics()),
    "sts": ("query", lambda c: c.get_caller_identity()),
    "ec2": ("ec2", lambda c: c.describe_instances()),
    "lambda": ("rest-json", lambda c: c.list_functions()),
    "s3": ("rest-xml", lambda c: c.list_buckets()),
    "codedeploy": ("smithy-rpc-v2-cbor", lambda c: c.list_applications()),
    "cloudwatch": ("smithy-rpc-v2-cbor", lambda c: c.describe_alarms()),
}


@pytest.mark.parametrize("kind", ["throttle", "500", "503"])
@pytest.mark.parametrize("service", sorted(PROTOCOL_CALLS))
def test_injected_throttling_and_5xx_are_retried_by_botocores_standard_mode_on_every_protocol(aws, service, kind):
    aws.faults.fail(kind, services=[service], times=2)
    response = PROTOCOL_CALLS[service][1](aws.client(service, max_attempts=3))
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert aws.faults.count(kind) == 2


def test_a_fault_that_outlasts_the_retries_surfaces_as_the_services_own_error(aws):
    aws.faults.fail("throttle", services=["dynamodb"])
    ddb = aws.client("dynamodb", max_attempts=3)
    with pytest.raises(ddb.exceptions.ProvisionedThroughputExceededException):
        ddb.list_tables()
    assert aws.faults.count() == 3  # botocore tried three times, then gave up


def test_every_nth_counts_the_calls_it_selects_and_alternates_the_kinds():
    injector = FaultInjector()
    rule = injector.every_nth(3, kinds=["throttle", "500"])
    view = _view("dynamodb", "GetItem")
    assert [rule.take(view) for _ in range(9)] == [None, None, "throttle", None, None, "500", None, None, "throttle"]


# -- every third call fails ---------------------------------------------------------------------------------
def test_every_third_aws_call_failing_loses_no_ledger_record_and_doubles_no_alert(aws):
    baseline = scenario_harness(aws)
    errors, expected_alerts, retries = replay(baseline, ROUNDS)
    assert errors == [] and retries == 0
    expected = ledger_facts(baseline)
    assert len(expected_alerts) >= 5 * ROUNDS  # the scenario's alerts, each round

    aws.reset()
    h = scenario_harness(aws)
    mark = len(aws.trail.records())
    aws.faults.every_nth(3, kinds=["throttle", "500", "503"])
    errors, alerts, retries = replay(h, ROUNDS)
    injected = aws.faults.count()
    aws.faults.clear()

    print(f"every third call failing: {injected} faults, {retries} Lambda retries, {len(alerts)} alerts, once each")
    assert errors == []  # nothing failed for good: botocore's retries, and Lambda's where those ran out
    assert retries <= injected // 10, (retries, injected)  # botocore absorbed nearly all of them
    assert injected >= 10 * ROUNDS  # every third call of the run failed once (about 35 per round)
    assert ledger_facts(h) == expected  # no record lost, none written twice
    assert Counter(alerts) == Counter(expected_alerts)  # each alert once, none lost, none doubled
    assert len(published_alerts(trail_since(aws, mark))) == len(expected_alerts)  # one Publish each


def test_duplicates_spending_the_ledgers_retry_quota_leave_ticket_reads_their_own_retries(aws):
    """botocore's standard mode keeps one retry quota per client (500 units; a retry after a 5xx costs 14,
    refunded only when it succeeds) and fails at the first error once the quota is spent. A duplicate
    delivery whose conditional put is retried ends in ``ConditionalCheckFailed``, so its units are never
    refunded: duplicates under faults spend the ledger client's quota. The ticket table's reads have a
    client, and a quota, of their own, so that spending it cannot turn the next change UNVERIFIED."""
    h = scenario_harness(aws)
    ledger, tickets = h.ctx.refs["ChangeLedgerTable"], h.ctx.refs["TicketTable"]
    approved = load_event("correlate_change/01-approved-run-instances.json")
    assert h.invoke("CorrelateChangeFunction", approved).result["verdict"] == "AUTHORIZED"

    # Every second ledger put fails once; each retried duplicate then costs the quota 14 units.
    aws.faults.every_nth(2, kinds=["500"], operations=["PutItem"], body_contains=ledger)
    failed_fast = []
    for k in range(60):
        duplicate = dict(approved, id=f"{approved['id'][:-6]}{k:06d}")
        invocation = h.invoke("CorrelateChangeFunction", duplicate)
        if invocation.error:
            failed_fast.append(invocation.error)
    aws.faults.clear()
    assert failed_fast, "the ledger client's retry quota was never spent: the premise does not hold"
    assert all("InternalServerError" in e for e in failed_fast)  # failed at the first fault, not retried

    reads = aws.faults.fail("503", operations=["Query"], body_contains=tickets, times=1)
    unapproved = load_event("correlate_change/03-unapproved-ticket.json")
    result = h.invoke("CorrelateChangeFunction", unapproved).result

    assert reads.injected == 1
    assert result["verdict"] == "NOT_APPROVED"  # the read was retried; not UNVERIFIED
    assert [e.verdict for e in ledger_entries(h, unapproved["detail"]["eventID"]) if e.entry == "VERDICT"] == [
        "NOT_APPROVED"
    ]


def test_powertools_parameters_and_idempotency_clients_retry_too(aws):
    """Their clients are built by Powertools, configured by the template's AWS_RETRY_MODE/AWS_MAX_ATTEMPTS."""
    h = scenario_harness(aws)
    assert h.functions["CorrelateChangeFunction"].environment["AWS_RETRY_MODE"] == "standard"
    assert int(h.functions["PublishAlertsFunction"].environment["AWS_MAX_ATTEMPTS"]) >= 3
    idempotency_table = h.ctx.refs["IdempotencyTable"]
    policy_reads = aws.faults.fail("throttle", operations=["GetParametersByPath"], times=2)
    idempotency = aws.faults.fail("500", operations=["PutItem"], body_contains=idempotency_table, times=2)

    result = h.process(load_event("correlate_change/02-console-no-ticket.json"))

    assert result["error"] is None
    assert policy_reads.injected == 2 and idempotency.injected == 2
    assert [a["verdict"] for o in result["outcomes"] for a in o["alerts"]] == ["NO_TICKET"]


# -- the hard case: the write commits, its response is lost -----------------------------------------------
@pytest.mark.parametrize(
    ("sample", "operation", "verdict", "alerts"),
    [
        ("correlate_change/02-console-no-ticket.json", "TransactWriteItems", "NO_TICKET", 1),
        ("correlate_change/01-approved-run-instances.json", "PutItem", "AUTHORIZED", 0),
    ],
)
def test_a_ledger_write_that_commits_but_loses_its_response_counts_as_success_and_alerts_once(
    aws, sample, operation, verdict, alerts
):
    h = scenario_harness(aws)
    event = load_event(sample)
    change_id = event["detail"]["eventID"]
    mark = len(aws.trail.records())
    drop = aws.faults.commit_then_drop(operation, body_contains=h.ctx.refs["ChangeLedgerTable"], where=_ledger_write)

    result = h.process(event)

    assert drop.injected == 1
    writes = [
        (r["eventName"], r.get("errorCode"))
        for r in trail_since(aws, mark)
        if r["eventName"] == operation and "CorrelateChangeFunction" in str(r["userIdentity"].get("arn"))
    ]
    # The write committed; botocore retried it, and the retry met the item it had written.
    assert writes[:2] == [(operation, None), (operation, _CONDITION_FAILED[operation])]
    [outcome] = [o for o in result["outcomes"] if o["function"] == "CorrelateChangeFunction"]
    assert outcome["verdict"] == verdict
    assert outcome["actions"] == ["recorded verdict"]  # success, not "duplicate delivery"
    assert result["error"] is None
    assert len(outcome["alerts"]) == alerts
    assert len([e for e in ledger_entries(h, change_id) if e.entry == "VERDICT"]) == 1
    h.pump_streams()
    assert h.drain_alerts() == []  # nothing more, ever


def test_a_lost_response_on_an_unverified_change_still_opens_the_outage_with_one_degraded_alert(aws):
    h = scenario_harness(aws)
    aws.faults.fail("503", operations=["Query"], body_contains=h.ctx.refs["TicketTable"])
    aws.faults.commit_then_drop("PutItem", body_contains=h.ctx.refs["ChangeLedgerTable"], where=_ledger_write)

    result = h.process(load_event("correlate_change/03-unapproved-ticket.json"))

    assert result["error"] is None
    assert aws.faults.count("drop") == 1
    [outcome] = result["outcomes"]
    assert outcome["verdict"] == "UNVERIFIED" and outcome["actions"] == ["recorded verdict"]
    assert [a["subject"] for a in outcome["alerts"]] == ["ChangeGuard degraded: ticket source 'dynamodb' unreachable"]


# -- the ticket source down for a whole run ---------------------------------------------------------------
def test_ticket_source_down_for_a_whole_run_gives_unverified_changes_one_degraded_alert_no_quarantine_then_all_reverified(
    aws,
):
    h = scenario_harness(aws)
    mark = len(aws.trail.records())
    down = aws.faults.fail("503", operations=["Query"], body_contains=h.ctx.refs["TicketTable"])
    changes = [variant(load_event(name), k) for k in range(OUTAGE_CHANGES // len(TICKETED) + 1) for name in TICKETED]
    changes = changes[:OUTAGE_CHANGES]

    verdicts: Counter = Counter()
    subjects: list[str] = []
    for event in changes:
        result = h.process(event)
        assert result["error"] is None, result["error"]
        for outcome in result["outcomes"]:
            if outcome["function"] == "CorrelateChangeFunction":
                verdicts[outcome["verdict"]] += 1
            subjects += [a["subject"] for a in outcome["alerts"]]
    # While down, the follow-up and the quarantine sweep run too: they must not add alerts or act.
    for schedule in ("FollowUpChangesFunction", "SweepQuarantineFunction"):
        result = h.run_schedule(schedule)
        assert result["error"] is None, result["error"]
        subjects += [a["subject"] for o in result["outcomes"] for a in o["alerts"]]

    assert verdicts == Counter({"UNVERIFIED": len(changes)})
    assert subjects == ["ChangeGuard degraded: ticket source 'dynamodb' unreachable"]
    assert down.injected >= len(changes)
    entries = all_ledger_entries(h)
    assert [e for e in entries if e.kind.value == "QUARANTINE"] == []
    quarantine_calls = {"PutFunctionConcurrency", "ModifyNetworkInterfaceAttribute", "PutBucketPolicy"}
    assert [r["eventName"] for r in trail_since(aws, mark) if r["eventName"] in quarantine_calls] == []

    aws.faults.remove(down)  # the ticket source is back
    recovered = h.run_schedule("FollowUpChangesFunction")
    assert recovered["error"] is None

    change_ids = {e["detail"]["eventID"] for e in changes}
    rechecks: dict = {}
    for e in sorted(all_ledger_entries(h), key=lambda e: e.entry):
        if e.entry.startswith("RECHECK#"):
            rechecks.setdefault(e.change_id, e)  # each change's first re-check
    assert set(rechecks) == change_ids  # every one re-verified
    assert {r.body["previous_verdict"] for r in rechecks.values()} == {"UNVERIFIED"}
    assert "UNVERIFIED" not in {r.verdict for r in rechecks.values()}
    kinds = Counter(
        a["subject"].split(":")[0] for o in recovered["outcomes"] for a in o["alerts"]
    )  # one recovery alert, and the re-judged changes' own alerts
    assert kinds["ChangeGuard recovered"] == 1
    assert h.run_schedule("FollowUpChangesFunction")["outcomes"][0]["alerts"] == []  # and nothing twice


_CONDITION_FAILED = {
    "TransactWriteItems": "TransactionCanceledException",
    "PutItem": "ConditionalCheckFailedException",
}


def _ledger_write(call) -> bool:
    """A conditional ledger write (the correlator's), not a read."""
    return b"attribute_not_exists" in call.body


def _view(service: str, operation: str):
    from changeguard_tools.embedded.faults import RequestView

    return RequestView(service, service, operation, "json", "AKIA", b"")


# -- the alert publisher: a publish that fails for good, then the stream's retry -----------------------------
PUBLISHER = "PublishAlertsFunction"


def _publisher_batches(h: Harness) -> list[tuple[dict, Any]]:
    """The stream batches the harness hands the publisher, with what it answered (kept, so the test can
    deliver a batch again as the event source mapping does with the records it reported failed)."""
    batches: list[tuple[dict, Any]] = []
    invoke = h.invoke

    def recording(function: str, event: object):
        answer = invoke(function, event)
        if function == PUBLISHER:
            batches.append((json.loads(json.dumps(event)), answer))
        return answer

    h.invoke = recording  # type: ignore[method-assign]
    return batches


def _idempotency_records(h: Harness) -> list[dict]:
    table = h.ctx.refs["IdempotencyTable"]
    return h.admin_client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]


def _publisher_calls(calls: Counter) -> Counter:
    return Counter(
        f"{c.service}:{c.operation}" for c, n in calls.items() for _ in range(n) if c.function == "publish_alerts"
    )


def test_a_failed_publish_deletes_its_idempotency_record_so_the_retry_publishes_exactly_once(aws):
    """SNS down past botocore's retries: Powertools Idempotency deletes the record it locked (the alert
    was not published), the batch fails, and the stream's retry publishes it once. A third delivery
    meets the completed record and publishes nothing."""
    install_fresh()  # when the call-recorder plugin is not registered, the hook starts here
    h = scenario_harness(aws)
    batches = _publisher_batches(h)
    sns_down = aws.faults.fail("500", services=["sns"], operations=["Publish"])
    mark = len(aws.trail.records())
    with RECORDER.scope() as failed_calls:
        result = h.process(load_event("correlate_change/02-console-no-ticket.json"))
    [(batch, answer)] = batches
    [record] = batch["Records"]
    alert_id = json.loads(record["dynamodb"]["NewImage"]["body"]["S"])["alert"]["alert_id"]
    assert sns_down.injected >= 1
    # Every record of the batch failed: Powertools fails the invocation, and the stream retries the batch.
    assert answer.error is not None and answer.error.startswith("BatchProcessingError: All records failed")
    assert result["error"] == f"{PUBLISHER}: {answer.error}"
    assert [a for o in result["outcomes"] for a in o["alerts"]] == []
    assert _idempotency_records(h) == []  # locked, then deleted when the publish failed
    assert _publisher_calls(failed_calls)["dynamodb:DeleteItem"] == 1
    assert published_alerts(trail_since(aws, mark)) == []

    aws.faults.remove(sns_down)
    retried = h.invoke(PUBLISHER, batch)  # the event source mapping delivers the failed record again
    assert retried.error is None and retried.result == {"batchItemFailures": []}
    [alert] = h.drain_alerts()
    assert alert.alert_id == alert_id and alert.verdict == "NO_TICKET"
    assert len(published_alerts(trail_since(aws, mark))) == 1
    [completed] = _idempotency_records(h)
    assert completed["status"]["S"] == "COMPLETED"

    mark = len(aws.trail.records())
    with RECORDER.scope() as duplicate_calls:
        again = h.invoke(PUBLISHER, batch)  # a duplicate delivery of the same stream record
    assert again.error is None and again.result == {"batchItemFailures": []}
    assert h.drain_alerts() == [] and published_alerts(trail_since(aws, mark)) == []
    # The conditional put that met the record got it back (ReturnValuesOnConditionCheckFailure=ALL_OLD,
    # as DynamoDB answers): no GetItem is needed, and the role does not allow one.
    assert _publisher_calls(duplicate_calls) == Counter({"dynamodb:PutItem": 1})


def test_a_publisher_that_dies_holding_the_lock_is_taken_over_by_the_streams_retry(aws):
    """A timeout kills the publisher after it locked the alert's idempotency record (here: SNS fails
    and so does the record's deletion, which leaves the same state). The lock lasts as long as that
    invocation could run (the Lambda context registered on the idempotency config); once it has
    passed, the stream's retry publishes the alert once instead of meeting the lock for 48 hours."""
    install_fresh()
    h = scenario_harness(aws)
    batches = _publisher_batches(h)
    h.remaining_ms = 300  # the invocation "times out" 0.3 s after it starts
    sns_down = aws.faults.fail("500", services=["sns"], operations=["Publish"])
    no_delete = aws.faults.fail("500", services=["dynamodb"], operations=["DeleteItem"])
    mark = len(aws.trail.records())
    h.process(load_event("correlate_change/02-console-no-ticket.json"))
    [(batch, answer)] = batches
    assert answer.error is not None and sns_down.injected >= 1 and no_delete.injected >= 1
    [stuck] = _idempotency_records(h)
    assert stuck["status"]["S"] == "INPROGRESS" and "in_progress_expiration" in stuck
    aws.faults.remove(sns_down)
    aws.faults.remove(no_delete)

    time.sleep(0.4)  # past the dead invocation's timeout
    h.remaining_ms = 30_000
    retried = h.invoke(PUBLISHER, batch)
    assert retried.error is None and retried.result == {"batchItemFailures": []}
    [alert] = h.drain_alerts()
    assert alert.verdict == "NO_TICKET"
    assert len(published_alerts(trail_since(aws, mark))) == 1
    [completed] = _idempotency_records(h)
    assert completed["status"]["S"] == "COMPLETED"
