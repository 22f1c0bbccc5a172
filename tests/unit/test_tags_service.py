"""The tag-enforcement and sweep services with in-memory fakes: what is ledgered, alerted and done, in which order."""

from __future__ import annotations

import copy
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from changeguard.domain.errors import InvalidEventError
from changeguard.domain.policy import Policy
from changeguard.domain.quarantine import ReleaseResult, ResourceRef
from changeguard.domain.tags import suite_owned
from changeguard.quarantine import QuarantineSettings, Registry, ReleaseOutcome, ResourceState
from changeguard.quarantine.ec2_instance import Ec2InstanceQuarantine
from changeguard.services.quarantine_sweep import QuarantineSweepService
from changeguard.services.tag_enforcement import Enforcer, TagEnforcementService
from fakes import FakeClock, FakeTagReader, InMemoryLedger, ThreadScope
from sample_events import load_event

NOW = datetime(2026, 11, 22, 9, 5, tzinfo=UTC)
SUITE = "arn:aws:iam::123456789012:role/changeguard/"
INSTANCE = "i-0e1f2a3b4c5d6e7f8"
ARN = f"arn:aws:ec2:us-east-1:123456789012:instance/{INSTANCE}"
CHANGE_ID = f"resource:{ARN}"
TAGS = {"ChangeTicket": "CHG-1001", "Environment": "prod", "Owner": "payments"}


class FakeInstances(Ec2InstanceQuarantine):
    """EC2 instance naming and id paths, with state in memory and every call recorded."""

    def __init__(self, ledger: InMemoryLedger) -> None:
        super().__init__()
        self.ledger = ledger
        self.resources: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.ledger_at_quarantine: list[str] = []
        self.failing: set[str] = set()  # instances whose containment fails (an SCP denies it, say)

    def add(self, instance_id: str = INSTANCE, tags: dict[str, str] | None = None, groups: str = "sg-web") -> None:
        self.resources[instance_id] = {"tags": dict(tags or {}), "groups": groups}

    def read(self, ref: ResourceRef) -> ResourceState | None:
        found = self.resources.get(ref.resource_id)
        if found is None:
            return None
        return ResourceState(ref=ref, tags=dict(found["tags"]), config={"groups": found["groups"]})

    def snapshot(self, ref: ResourceRef, state: ResourceState, settings: QuarantineSettings) -> dict[str, Any]:
        return {"groups": state.config["groups"]}

    def quarantine(self, ref, state, settings, saved=None):  # type: ignore[no-untyped-def]
        saved = saved if saved is not None else self.snapshot(ref, state, settings)
        if ref.resource_id in self.failing:
            raise RuntimeError(f"AccessDenied on {ref.resource_id}")
        if self.resources[ref.resource_id]["groups"] != "isolation":
            self.ledger_at_quarantine = [e for (_, e) in self.ledger.items]  # what was ledgered when it changed
            self.calls.append(("quarantine", ref.resource_id))
            self.resources[ref.resource_id]["groups"] = "isolation"
        return saved

    def release(self, ref: ResourceRef, saved: dict[str, Any], *, dry_run: bool = False) -> ReleaseOutcome:
        current = self.resources[ref.resource_id]["groups"]
        if current == saved["groups"]:
            return ReleaseOutcome(result=ReleaseResult.NOOP, detail="as before")
        if current != "isolation":
            return ReleaseOutcome(result=ReleaseResult.DRIFT, detail=f"groups are {current}")
        if not dry_run:
            self.calls.append(("release", ref.resource_id))
            self.resources[ref.resource_id]["groups"] = saved["groups"]
        return ReleaseOutcome(result=ReleaseResult.RESTORED, detail="restored", calls=(saved["groups"],))

    def set_tags(self, ref, tags):  # type: ignore[no-untyped-def]
        self.calls.append(("set_tags", ref.resource_id, *sorted(tags)))
        self.resources[ref.resource_id]["tags"].update(tags)

    def remove_tags(self, ref, keys):  # type: ignore[no-untyped-def]
        self.calls.append(("remove_tags", ref.resource_id, *sorted(keys)))
        for key in keys:
            self.resources[ref.resource_id]["tags"].pop(key, None)

    def mutations(self) -> list[tuple[str, ...]]:
        return list(self.calls)


class World:
    def __init__(self, sweep: dict[str, Any] | None = None, **policy: Any) -> None:
        self.ledger = InMemoryLedger()
        self.clock = FakeClock(NOW)
        self.policy = Policy(enforcement_mode="enforce", **policy)
        self.instances = FakeInstances(self.ledger)
        self.registry = Registry()
        self.registry.handlers = {"ec2:instance": self.instances}
        self.tag_reader = FakeTagReader()
        enforcer = Enforcer(function="enforce_tags", ledger=self.ledger, suite_role_prefix=SUITE, stack_name="cg")
        self.service = TagEnforcementService(
            function="enforce_tags",
            enforcer=enforcer,
            registry=self.registry,
            tags=lambda: self.tag_reader,
            policy=lambda: self.policy,
            clock=self.clock,
            suite_role_prefixes=(SUITE,),
        )
        self.sweeper = QuarantineSweepService(
            function="sweep_quarantine",
            enforcer=Enforcer(function="sweep_quarantine", ledger=self.ledger, suite_role_prefix=SUITE),
            registry=self.registry,
            policy=lambda: self.policy,
            clock=self.clock,
            **{"finder": self, **(sweep or {})},  # issue 9: another finder, scope, members, regions
        )

    def marked(self) -> list[tuple[str, dict[str, str]]]:
        return [
            (f"arn:aws:ec2:us-east-1:123456789012:instance/{i}", dict(r["tags"]))
            for i, r in self.instances.resources.items()
            if "changeguard:quarantine-after" in r["tags"]
        ]

    def entries(self, change_id: str = CHANGE_ID) -> list[str]:
        return [e.entry for e in self.ledger.entries_for(change_id)]

    def scheduled(self) -> dict[str, Any]:
        """The schedule's event for a run now: each run of the schedule has its own ``time``."""
        event = load_event("sweep_quarantine/scheduled.json")
        event["time"] = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        return event

    def sweep(self) -> Any:
        return self.sweeper.handle(self.scheduled())


def run_instances() -> dict[str, Any]:
    return load_event("enforce_tags/01-run-instances-untagged.json")


def create_tags(tags: dict[str, str] | None = None) -> dict[str, Any]:
    event = load_event("enforce_tags/08-create-tags-release.json")
    if tags is not None:
        event["detail"]["requestParameters"]["tagSet"]["items"] = [{"key": k, "value": v} for k, v in tags.items()]
    return event


# -- marking -----------------------------------------------------------------------------------------


def test_an_untagged_launch_is_marked_ledger_first_then_tagged():
    w = World()
    w.instances.add(tags={"Name": "orders-debug"})
    outcome = w.service.handle(run_instances())
    after = "2026-11-23T09:05:00Z"
    assert outcome.verdict == "NON_COMPLIANT"
    assert outcome.change_id == "4d3c2b1a-0e9f-4a8b-9c7d-6e0000000001"
    assert w.entries() == [f"ALERT#enforce_tags#mark#MARK#{after}", f"MARK#{after}"]
    mark = next(e for e in w.ledger.entries_for(CHANGE_ID) if e.entry == f"MARK#{after}")
    assert mark.body["change_id"] == outcome.change_id  # the KPIs count the change as untagged
    assert set(mark.body["missing"]) == {"ChangeTicket", "Environment", "Owner"}
    assert w.instances.resources[INSTANCE]["tags"]["changeguard:quarantine-after"] == after
    assert len(outcome.alert_ids) == 1 and outcome.alert_ids[0].endswith("/enforce_tags/mark")


def test_the_same_event_again_changes_nothing():
    w = World()
    w.instances.add()
    w.service.handle(run_instances())
    calls, entries = w.instances.mutations(), w.entries()
    again = w.service.handle(run_instances())
    assert w.instances.mutations() == calls and w.entries() == entries
    assert again.alert_ids == [] and again.actions == []


def test_a_compliant_launch_is_left_alone_without_reading_twice():
    w = World()
    w.instances.add(tags=TAGS)
    event = run_instances()
    event["detail"]["requestParameters"]["tagSpecificationSet"]["items"][0]["tags"] = [
        {"key": k, "value": v} for k, v in TAGS.items()
    ]
    outcome = w.service.handle(event)
    assert outcome.verdict == "COMPLIANT" and w.instances.mutations() == [] and w.entries() == []


def test_a_launch_with_the_required_tags_on_its_volumes_only_is_marked():
    """A RunInstances call's "volume" tag specification tags the volumes, not the instance: EC2 put
    none of those tags on the instance, so it must be marked (the sweep visits only marked ones)."""
    w = World()
    w.instances.add(tags={"Name": "orders-debug"})  # what EC2 put on the instance
    event = run_instances()
    event["detail"]["requestParameters"]["tagSpecificationSet"]["items"].append(
        {"resourceType": "volume", "tags": [{"key": k, "value": v} for k, v in TAGS.items()]}
    )
    outcome = w.service.handle(event)
    assert outcome.verdict == "NON_COMPLIANT", outcome.reasons
    assert "changeguard:quarantine-after" in w.instances.resources[INSTANCE]["tags"]


def test_observe_mode_reports_would_mark_and_changes_nothing():
    w = World()
    w.policy = Policy(enforcement_mode="observe")
    w.instances.add()
    outcome = w.service.handle(run_instances())
    assert outcome.verdict == "NON_COMPLIANT"
    assert outcome.actions == ["would mark ec2:instance i-0e1f2a3b4c5d6e7f8 (quarantine after 2026-11-23T09:05:00Z)"]
    assert w.instances.mutations() == []
    assert "MARK#2026-11-22T09:02:11Z#observe" in w.entries()  # keyed by the event: a redelivery is a duplicate
    w.service.handle(run_instances())
    assert len([e for e in w.entries() if e.startswith("MARK#")]) == 1


# -- what is never acted on ---------------------------------------------------------------------------


def test_the_suites_own_calls_are_ignored_without_a_read():
    w = World()
    w.instances.add()
    event = run_instances()
    event["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] = SUITE + "cg-EnforceTagsFunctionRole-1"
    outcome = w.service.handle(event)
    assert outcome.verdict == "NOT_A_CHANGE" and outcome.reasons == ["ChangeGuard's own call"]
    assert w.entries() == [] and w.instances.mutations() == []


def test_failed_calls_are_not_changes():
    w = World()
    w.instances.add()
    event = run_instances()
    event["detail"]["errorCode"] = "Client.UnauthorizedOperation"
    assert w.service.handle(event).verdict == "NOT_A_CHANGE"
    assert w.entries() == []


def test_an_exempt_principals_launch_is_not_marked():
    w = World(
        exempt_principal_arns=(
            "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_PowerUser*",
        )
    )
    w.instances.add()
    outcome = w.service.handle(run_instances())
    assert outcome.verdict == "EXEMPT" and "exempt principal" in outcome.reasons[0]
    assert w.entries() == [] and w.instances.mutations() == []


def test_the_exempt_tag_in_the_request_is_honoured():
    w = World()
    w.instances.add()
    event = run_instances()
    event["detail"]["requestParameters"]["tagSpecificationSet"]["items"][0]["tags"].append(
        {"key": "changeguard:exempt", "value": "load test"}
    )
    outcome = w.service.handle(event)
    assert outcome.verdict == "EXEMPT" and w.instances.mutations() == []


def test_a_resource_that_cannot_be_read_is_never_acted_on():
    w = World()  # no instance: describe fails
    outcome = w.service.handle(run_instances())
    assert outcome.verdict == "SKIPPED" and "cannot be read" in outcome.reasons[0]
    assert w.entries() == []


def test_the_suites_own_resources_are_never_acted_on():
    w = World()
    w.instances.add(tags={"changeguard:managed": "true"})
    outcome = w.service.handle(run_instances())
    assert outcome.verdict == "SKIPPED" and "ChangeGuard's own" in outcome.reasons[0]
    assert w.instances.mutations() == []


def test_a_name_tag_does_not_make_an_instance_the_suites_own():
    """An instance's name is its Name tag, which its owner may set: Name=changeguard-... must not make
    it the suite's own, which no event nor sweep would ever quarantine or release."""
    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    handler = Ec2InstanceQuarantine(api=client)
    instance = {
        "InstanceId": INSTANCE,
        "State": {"Name": "running"},
        "VpcId": "vpc-1",
        "Tags": [{"Key": "Name", "Value": "changeguard-not-really"}],
        "NetworkInterfaces": [],
    }
    with Stubber(client) as stub:
        stub.add_response(
            "describe_instances", {"Reservations": [{"Instances": [instance]}]}, {"InstanceIds": [INSTANCE]}
        )
        state = handler.read(handler.ref(INSTANCE, "123456789012", "us-east-1"))
    assert state is not None and state.tags == {"Name": "changeguard-not-really"}
    assert suite_owned(ARN, state.name, state.tags, stack_name="cg") is None


@pytest.mark.parametrize(
    "event",
    [
        [],
        {"detail-type": "AWS API Call via CloudTrail", "detail": {"eventName": "RunInstances"}},
        {**load_event("enforce_tags/01-run-instances-untagged.json"), "detail-type": "Something Else"},
        {**load_event("enforce_tags/10-config-non-compliant.json"), "detail": {"configRuleName": "x"}},
    ],
)
def test_bad_input_is_a_typed_error_with_no_side_effects(event):
    w = World()
    w.instances.add()
    with pytest.raises(InvalidEventError):
        w.service.handle(event)
    assert w.entries() == [] and w.instances.mutations() == []


# -- quarantine and release --------------------------------------------------------------------------


def test_with_no_grace_period_the_next_sweep_quarantines_and_the_saved_state_is_ledgered_first():
    w = World(quarantine_grace_hours=0)
    w.instances.add(groups="sg-web")
    marked = w.service.handle(run_instances())
    # An event never quarantines (the cap is per sweep run, and events come in bursts): it marks it due now.
    assert w.instances.resources[INSTANCE]["groups"] == "sg-web"
    assert w.instances.resources[INSTANCE]["tags"]["changeguard:quarantine-after"] == "2026-11-22T09:05:00Z"
    assert [a.rsplit("/", 1)[1] for a in marked.alert_ids] == ["mark"]
    again = w.service.handle(run_instances())
    assert "due: the quarantine sweep contains it on its next run" in again.reasons[-1]
    assert w.instances.resources[INSTANCE]["groups"] == "sg-web"

    swept = w.sweep()
    key = "QUARANTINE#2026-11-22T09:05:00Z"
    assert key in w.instances.ledger_at_quarantine  # written before anything changed
    [entry] = [e for e in w.ledger.entries_for(CHANGE_ID) if e.entry == key]
    assert entry.body["saved"] == {"groups": "sg-web"}
    tags = w.instances.resources[INSTANCE]["tags"]
    assert tags["changeguard:quarantine-ref"] == f"{CHANGE_ID}@QUARANTINE@2026-11-22T09:05:00Z"
    assert w.instances.resources[INSTANCE]["groups"] == "isolation"
    assert [a.rsplit("/", 1)[1] for a in swept.alert_ids] == ["quarantine"]


def quarantined_world() -> World:
    w = World()
    w.instances.add(groups="sg-web")
    w.service.handle(run_instances())
    w.clock.at = NOW + timedelta(hours=25)
    w.sweep()
    assert w.instances.resources[INSTANCE]["groups"] == "isolation"
    return w


def test_a_later_sweep_of_a_quarantined_resource_writes_nothing_to_the_ledger():
    """Its containment is recorded once (``#contained``): a sweep that finds it still contained and
    untagged checks it again, and writes no fact (a refused conditional write still costs capacity)."""
    w = quarantined_world()
    appended: list[list[str]] = []
    append = w.ledger.append

    def recording(entries, *args, **kwargs):
        appended.append([e.entry for e in entries])
        return append(entries, *args, **kwargs)

    w.ledger.append = recording  # type: ignore[method-assign]
    w.clock.at = NOW + timedelta(hours=26)
    w.sweep()
    assert w.instances.resources[INSTANCE]["groups"] == "isolation"
    assert appended == []


def test_the_sweep_quarantines_after_the_grace_period_and_only_once():
    w = World()
    w.instances.add(groups="sg-web")
    w.service.handle(run_instances())
    w.clock.at = NOW + timedelta(hours=23)
    early = w.sweep()
    assert w.instances.resources[INSTANCE]["groups"] == "sg-web" and early.actions == []
    w.clock.at = NOW + timedelta(hours=25)
    swept = w.sweep()
    assert swept.verdict is None and swept.actions[0].startswith("quarantined ec2:instance")
    calls = w.instances.mutations()
    again = w.sweep()
    assert w.instances.mutations() == calls and again.alert_ids == []


def test_tagging_releases_with_the_saved_state_and_removes_the_suites_tags():
    w = quarantined_world()
    outcome = w.service.handle(create_tags(TAGS))
    assert outcome.verdict == "COMPLIANT"
    assert w.instances.resources[INSTANCE]["groups"] == "sg-web"
    assert not any(k.startswith("changeguard:") for k in w.instances.resources[INSTANCE]["tags"])
    [release] = [e for e in w.ledger.entries_for(CHANGE_ID) if e.entry.startswith("RELEASE#")]
    assert release.entry == "RELEASE#2026-11-23T09:05:00Z" and release.body["result"] == "RESTORED"
    assert outcome.alert_ids[0].endswith("/enforce_tags/release")


def test_a_changed_resource_is_reported_as_drift_and_nothing_is_overwritten():
    w = quarantined_world()
    w.instances.resources[INSTANCE]["groups"] = "sg-someone-elses"
    before = w.instances.mutations()
    outcome = w.service.handle(create_tags(TAGS))
    assert w.instances.resources[INSTANCE]["groups"] == "sg-someone-elses"
    assert [c for c in w.instances.mutations()[len(before) :] if c[0] != "remove_tags"] == []
    [release] = [e for e in w.ledger.entries_for(CHANGE_ID) if e.entry.startswith("RELEASE#")]
    assert release.verdict == "DRIFT" and release.body["result"] == "DRIFT"
    assert outcome.alert_ids[0].endswith("/enforce_tags/drift")


def test_an_interrupted_quarantine_is_finished_from_the_ledgers_saved_state():
    w = quarantined_world()
    # As if the run had crashed after ledgering: the resource is back as it was, tags lost.
    w.instances.resources[INSTANCE].update(groups="sg-web", tags={})
    w.service.handle(load_event("enforce_tags/06-delete-tags.json"))  # an event puts the tags back ...
    assert w.instances.resources[INSTANCE]["groups"] == "sg-web"  # ... but never contains anything
    assert "changeguard:quarantine-ref" in w.instances.resources[INSTANCE]["tags"]
    w.sweep()
    assert w.instances.resources[INSTANCE]["groups"] == "isolation"
    # ... and the saved state is still the original one, so a release restores sg-web.
    w.service.handle(create_tags(TAGS))
    assert w.instances.resources[INSTANCE]["groups"] == "sg-web"


def test_a_mark_is_dropped_when_the_resource_complies_in_time():
    w = World()
    w.instances.add()
    w.service.handle(run_instances())
    outcome = w.service.handle(create_tags(TAGS))
    assert outcome.actions == ["unmarked ec2:instance i-0e1f2a3b4c5d6e7f8"]
    assert "changeguard:quarantine-after" not in w.instances.resources[INSTANCE]["tags"]
    assert "RELEASE#2026-11-23T09:05:00Z" in w.entries()


def test_two_events_marking_at_once_leave_no_stale_mark_after_the_release():
    """RunInstances and the owner's CreateTags a second later, handled at once: both read an empty
    ledger and both mark. After the release, losing a tag again starts a new grace period: the earlier
    mark, which the release did not name, must not make the resource due at once."""
    w = World()
    w.instances.add(tags={})
    other = copy.copy(w.service)
    other.clock = FakeClock(NOW + timedelta(seconds=1))
    both_read = threading.Barrier(2, timeout=5)
    real = w.ledger.entries_for

    def entries_for(change_id: str) -> Any:
        found = real(change_id)
        if threading.current_thread().name.startswith("event"):
            both_read.wait()  # neither writes before both have read
        return found

    w.ledger.entries_for = entries_for  # type: ignore[method-assign]
    threads = [
        threading.Thread(target=w.service.handle, args=(run_instances(),), name="event-1"),
        threading.Thread(target=other.handle, args=(create_tags({"Name": "orders-debug"}),), name="event-2"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    w.ledger.entries_for = real  # type: ignore[method-assign]
    assert len([e for e in w.entries() if e.startswith("MARK#")]) == 2  # the race this guards against

    w.clock.at = NOW + timedelta(hours=1)  # the owner tags it in time
    w.instances.resources[INSTANCE]["tags"].update(TAGS)
    w.service.handle(create_tags(TAGS))
    w.clock.at = NOW + timedelta(days=2)  # and later removes the Owner tag
    w.instances.resources[INSTANCE]["tags"].pop("Owner")
    w.service.handle(load_event("enforce_tags/06-delete-tags.json"))
    assert w.instances.resources[INSTANCE]["tags"]["changeguard:quarantine-after"] == "2026-11-25T09:05:00Z"
    w.clock.at = NOW + timedelta(days=2, minutes=15)
    w.sweep()
    assert w.instances.resources[INSTANCE]["groups"] == "sg-web"  # a new grace period, not quarantined


def test_removing_the_mark_tag_does_not_restart_the_grace_period():
    w = World()
    w.instances.add()
    w.service.handle(run_instances())
    w.instances.resources[INSTANCE]["tags"].pop("changeguard:quarantine-after")
    w.clock.at = NOW + timedelta(hours=2)
    event = load_event("enforce_tags/06-delete-tags.json")
    event["detail"]["requestParameters"]["tagSet"]["items"] = [{"key": "changeguard:quarantine-after"}]
    w.service.handle(event)
    assert w.instances.resources[INSTANCE]["tags"]["changeguard:quarantine-after"] == "2026-11-23T09:05:00Z"


# -- the cap -----------------------------------------------------------------------------------------


def test_the_cap_stops_quarantining_and_alerts_once():
    w = World(quarantine_max_resources=2)
    ids = [f"i-00000000000000{n:03d}" for n in range(3)]
    for instance_id in ids:
        w.instances.add(instance_id)
    event = run_instances()
    event["detail"]["responseElements"]["instancesSet"]["items"] = [{"instanceId": i} for i in ids]
    w.service.handle(event)
    w.clock.at = NOW + timedelta(hours=25)
    swept = w.sweep()
    isolated = [i for i in ids if w.instances.resources[i]["groups"] == "isolation"]
    assert len(isolated) == 2
    assert any(a.startswith("cap of 2 reached: 1 left unquarantined") for a in swept.actions)
    [cap] = [
        e
        for e in w.ledger.items.values()
        if e.change_id == "quarantine-cap:sweep_quarantine" and e.entry.startswith("CAP#")
    ]
    assert cap.body["skipped"] == [f"arn:aws:ec2:us-east-1:123456789012:instance/{set(ids).difference(isolated).pop()}"]
    assert any(a.endswith("/sweep_quarantine/cap") for a in swept.alert_ids)
    w.clock.at = NOW + timedelta(hours=26)
    w.sweep()  # the next run takes the rest
    assert all(w.instances.resources[i]["groups"] == "isolation" for i in ids)


def test_in_observe_mode_a_resource_already_reported_takes_no_place_in_a_later_runs_cap():
    """Resources marked in enforce mode, then the mode turned back to observe (as an operator does when
    something looks wrong): observe mode changes nothing on them, so every run decides to quarantine
    them again, and each "would quarantine" after the first is a duplicate. A duplicate must not use
    the run's budget: with a cap of 2 and three marked resources, the second run reports the third
    and hits no cap. Otherwise the same two would fill every run's cap, the third would never be
    reported, and the cap would be alerted (HIGH) every 15 minutes."""
    w = World(quarantine_max_resources=2)
    ids = [f"i-00000000000000{n:03d}" for n in range(3)]
    for instance_id in ids:
        w.instances.add(instance_id)
    event = run_instances()
    event["detail"]["responseElements"]["instancesSet"]["items"] = [{"instanceId": i} for i in ids]
    w.service.handle(event)  # marked, in enforce mode
    w.policy = Policy(enforcement_mode="observe", quarantine_max_resources=2)
    w.clock.at = NOW + timedelta(hours=25)
    first = w.sweep()
    assert any(a.startswith("cap of 2 reached: 1 left unquarantined") for a in first.actions)
    w.clock.at = NOW + timedelta(hours=25, minutes=15)
    second = w.sweep()
    assert not any(a.startswith("cap of") for a in second.actions), second.actions
    reported = {
        e.body["resource"]
        for e in w.ledger.items.values()
        if e.change_id == "quarantine-cap:sweep_quarantine" and e.entry.startswith("TAKEN#")
    }
    assert reported == {f"arn:aws:ec2:us-east-1:123456789012:instance/{i}" for i in ids}
    caps = [k for (c, k) in w.ledger.items if c == "quarantine-cap:sweep_quarantine" and k.startswith("CAP#")]
    assert len(caps) == 1
    assert all(w.instances.resources[i]["groups"] != "isolation" for i in ids)  # observe: nothing touched


def test_lambdas_retries_of_a_failed_sweep_quarantine_no_more_than_the_cap_in_all():
    """A sweep that cannot contain one resource fails, and Lambda retries the same scheduled event
    twice (1, then 2 minutes later). The cap is per scheduled run: the retries count what the run
    quarantined before (ledgered with each quarantine), so they quarantine nothing more, and the
    cap is alerted once. The next scheduled run (another ``time``) goes on."""
    w = World(quarantine_max_resources=2)
    ids = ["i-00000000000000bad", "i-00000000000000002", "i-00000000000000003"]
    for instance_id in ids:
        w.instances.add(instance_id)
    w.instances.failing.add(ids[0])
    event = run_instances()
    event["detail"]["responseElements"]["instancesSet"]["items"] = [{"instanceId": i} for i in ids]
    w.service.handle(event)
    w.clock.at = NOW + timedelta(hours=25)
    scheduled = w.scheduled()
    for delay in (0, 1, 3):  # the invocation, then Lambda's two retries of the same event
        w.clock.at = NOW + timedelta(hours=25, minutes=delay)
        with pytest.raises(RuntimeError, match="AccessDenied"):
            w.sweeper.handle(scheduled)
        isolated = [i for i in ids if w.instances.resources[i]["groups"] == "isolation"]
        assert isolated == [ids[1]], f"after {delay} min"  # i-...bad took the other place, and failed
    caps = [k for (c, k) in w.ledger.items if c == "quarantine-cap:sweep_quarantine" and k.startswith("CAP#")]
    assert len(caps) == 1
    alerts = [k for (c, k) in w.ledger.items if c == "quarantine-cap:sweep_quarantine" and k.startswith("ALERT#")]
    assert len(alerts) == 1
    w.clock.at = NOW + timedelta(hours=25, minutes=15)
    with pytest.raises(RuntimeError, match="AccessDenied"):
        w.sweep()  # the next run: the rest, and i-...bad still fails (it is retried, not forgotten)
    assert [i for i in ids if w.instances.resources[i]["groups"] == "isolation"] == ids[1:]


# -- other triggers ----------------------------------------------------------------------------------


def test_a_config_non_compliant_verdict_marks_the_resource():
    w = World()
    w.instances.add()
    outcome = w.service.handle(load_event("enforce_tags/10-config-non-compliant.json"))
    assert outcome.verdict == "NON_COMPLIANT" and outcome.change_id == CHANGE_ID
    assert "MARK#2026-11-23T09:05:00Z" in w.entries()


def test_a_config_verdict_on_a_type_without_quarantine_is_skipped():
    w = World()
    event = load_event("enforce_tags/10-config-non-compliant.json")
    event["detail"]["resourceType"] = "AWS::RDS::DBInstance"
    assert w.service.handle(event).verdict == "SKIPPED"


def test_a_type_without_a_quarantine_class_is_judged_and_alerted_only():
    w = World()
    db = "arn:aws:rds:us-east-1:123456789012:db:orders-replica"
    w.tag_reader.tags[db] = {"Environment": "prod"}
    outcome = w.service.handle(load_event("enforce_tags/11-create-db-instance.json"))
    assert outcome.verdict == "NON_COMPLIANT"
    assert w.entries(f"resource:{db}") == [
        "ALERT#enforce_tags#mark#MARK#2026-11-22T11:05:27Z#alert-only",
        "MARK#2026-11-22T11:05:27Z#alert-only",
    ]
    w.tag_reader.tags[db] = TAGS
    event = copy.deepcopy(load_event("enforce_tags/11-create-db-instance.json"))
    event["detail"]["eventID"] = "another"
    assert w.service.handle(event).verdict == "COMPLIANT"


def test_the_sweep_rejects_anything_but_a_scheduled_event():
    w = World()
    with pytest.raises(InvalidEventError):
        w.sweeper.handle(run_instances())
    with pytest.raises(InvalidEventError):
        w.sweeper.handle("not an event")  # type: ignore[arg-type]


# -- issue 9: finding marks in many accounts and regions ------------------------------------------------
class _PairFinder:
    def __init__(self, scope: ThreadScope) -> None:
        import threading

        self.scope, self.searched, self.active, self.most_at_once = scope, [], 0, 0
        self._lock = threading.Lock()

    def marked(self) -> list[tuple[str, dict[str, str]]]:
        import time

        with self._lock:
            self.searched.append(self.scope.current)
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        time.sleep(0.02)  # a Tagging API round trip
        with self._lock:
            self.active -= 1
        return []


def test_marks_are_searched_in_every_account_and_region_side_by_side_and_a_refusal_is_reported_once():
    members = (*(f"2222222222{i:02d}" for i in range(6)), "333333333333")
    scope = ThreadScope(refused="333333333333")
    finder = _PairFinder(scope)
    world = World(sweep={"finder": finder, "scope": scope, "member_accounts": members, "regions": ("eu-west-1",)})

    outcome = world.sweep()

    expected = {(a, r) for a in (None, *members[:-1]) for r in ("us-east-1", "eu-west-1")}
    assert sorted(finder.searched, key=str) == sorted(expected, key=str)  # each once; the refused never
    assert finder.most_at_once > 1
    refused = [a for a in outcome.actions if "333333333333" in a]
    assert len(refused) == 1 and refused[0].startswith("could not find marked resources in account 333333333333")
    assert len(outcome.alert_ids) == 1


# -- a release racing the sweep's containment --------------------------------------------------------


def _release_during(w: World, step: str) -> None:
    """The owner tags the instance, and enforce_tags releases it, while the sweep is at ``step``."""
    inner = getattr(w.instances, step)

    def racing(ref, state, settings, saved=None):  # type: ignore[no-untyped-def]
        if not w.instances.calls or w.instances.calls[-1] != ("raced",):
            w.instances.calls.append(("raced",))
            w.instances.resources[INSTANCE]["tags"].update(TAGS)
            w.service.handle(create_tags(TAGS))
        return inner(ref, state, settings, saved)

    setattr(w.instances, step, racing)


def assert_released_after_containment(w) -> None:
    """The instance has its own groups back, none of the suite's tags, and the ledger a real release
    recorded after the containment (next to the NOOP the racing release wrote)."""
    assert w.instances.resources[INSTANCE]["groups"] == "sg-web"
    assert not any(k.startswith("changeguard:") for k in w.instances.resources[INSTANCE]["tags"])
    late = [
        e
        for e in w.ledger.entries_for(CHANGE_ID)
        if e.entry.startswith("RELEASE#") and e.entry.endswith("#after-containment")
    ]
    assert [e.body["result"] for e in late] == ["RESTORED"]


def test_a_release_recorded_while_the_sweep_contains_it_is_followed_by_a_real_release():
    w = World()
    w.instances.add(groups="sg-web")
    w.service.handle(run_instances())
    w.clock.at = NOW + timedelta(hours=25)
    _release_during(w, "quarantine")  # after QUARANTINE is ledgered, before the groups change
    swept = w.sweep()
    assert w.instances.resources[INSTANCE]["groups"] == "sg-web"
    assert not any(k.startswith("changeguard:") for k in w.instances.resources[INSTANCE]["tags"])
    releases = {e.entry: e.body["result"] for e in w.ledger.entries_for(CHANGE_ID) if e.entry.startswith("RELEASE#")}
    assert releases == {
        "RELEASE#2026-11-23T09:05:00Z": "NOOP",  # what enforce_tags saw: not contained yet
        "RELEASE#2026-11-23T09:05:00Z#after-containment": "RESTORED",  # what happened after
    }
    assert any(a.endswith("/sweep_quarantine/release") for a in swept.alert_ids)


def test_a_release_recorded_while_the_sweep_contains_it_again_is_followed_by_a_real_release():
    w = quarantined_world()
    w.instances.resources[INSTANCE]["groups"] = "sg-web"  # someone undid the containment
    w.clock.at = NOW + timedelta(hours=26)
    _release_during(w, "quarantine")  # the sweep read it non-compliant; the release lands before it re-contains
    w.sweep()
    assert_released_after_containment(w)


def test_a_compliant_resource_still_contained_after_its_release_is_released_by_the_next_sweep():
    w = quarantined_world()
    # A release that read it just before the containment and was ledgered just after (NOOP), tags kept.
    w.instances.resources[INSTANCE]["tags"].update(TAGS)
    w.ledger.append(
        [
            e.model_copy(update={"entry": "RELEASE#2026-11-23T09:05:00Z", "body": {"result": "NOOP"}})
            for e in w.ledger.entries_for(CHANGE_ID)
            if e.entry == "QUARANTINE#2026-11-23T09:05:00Z"
        ]
    )
    w.clock.at = NOW + timedelta(hours=26)
    w.sweep()
    assert_released_after_containment(w)
    calls = w.instances.mutations()
    w.clock.at = NOW + timedelta(hours=27)
    w.service.handle(create_tags(TAGS))
    w.sweep()
    assert w.instances.mutations() == calls  # nothing done twice


def test_a_containment_that_fails_is_ledgered_and_alerted_as_failed_not_as_done():
    w = World()
    w.instances.add(groups="sg-web")
    w.service.handle(run_instances())
    w.clock.at = NOW + timedelta(hours=25)
    inner = w.instances.quarantine

    def denied(ref, state, settings, saved=None):  # type: ignore[no-untyped-def]
        raise PermissionError("AccessDenied: ec2:ModifyNetworkInterfaceAttribute")

    w.instances.quarantine = denied  # type: ignore[method-assign]
    with pytest.raises(PermissionError):
        w.sweep()

    def alerts() -> list[str]:
        return [
            str(e.body["alert"]["subject"]) for e in w.ledger.entries_for(CHANGE_ID) if e.entry.startswith("ALERT#")
        ]

    key = "QUARANTINE#2026-11-23T09:05:00Z"
    assert w.instances.resources[INSTANCE]["groups"] == "sg-web"
    assert {e for e in w.entries() if e.startswith("QUARANTINE#")} == {key, f"{key}#failed"}  # the saved state kept
    assert alerts()[1:] == [f"Could not quarantine untagged ec2:instance {INSTANCE}"]  # after the mark's
    with pytest.raises(PermissionError):
        w.sweep()  # still failing: nothing new to say
    assert len(alerts()) == 2
    w.instances.quarantine = inner  # type: ignore[method-assign]
    w.clock.at = NOW + timedelta(hours=26)
    w.sweep()  # the next run contains it, and only now says so
    assert w.instances.resources[INSTANCE]["groups"] == "isolation"
    assert f"{key}#contained" in w.entries()
    assert f"Quarantined untagged ec2:instance {INSTANCE}" in alerts()
    w.sweep()
    assert len(alerts()) == 3
