"""Cross-account acting roles (issue 9): the central functions act in the account an event came from.

Against the embedded AWS, whose STS maps a role session's credentials to the role's account: what a
test creates in the member account ``222222222222`` is visible only to that account's credentials,
and what the functions do there is recorded by the embedded CloudTrail under the member role's
session. The central stack runs in ``123456789012`` with an ``OrganizationId``, so its acting
functions have ``ACTING_ROLE_NAME`` and ``sts:AssumeRole`` on the member roles.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from changeguard.adapters.accounts import MAX_CLIENTS, REFRESH_MARGIN, AccountClients, ActingRole, session_name
from changeguard.adapters.tagging import AwsTagReader
from changeguard.domain.errors import CrossAccountAccessError, InvalidEventError
from changeguard_tools.embedded import codedeploy_deployments
from hardening.conftest import all_ledger_entries, ledger_entries, make_harness, trail_since
from sample_events import load_event

CENTRAL = "123456789012"
MEMBER = "222222222222"
ORG = "o-a1b2c3d4e5"
SUITE_PREFIX = f"arn:aws:iam::{CENTRAL}:role/changeguard/"
GUARD = "GuardDeploymentFunction"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


# -- helpers --------------------------------------------------------------------------------------
class CountingSts:
    """The embedded STS, counting the AssumeRole calls made through it."""

    def __init__(self, endpoint: str) -> None:
        self._sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1")
        self.assumed: list[dict[str, Any]] = []

    def assume_role(self, **params: Any) -> Any:
        self.assumed.append(params)
        return self._sts.assume_role(**params)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def member_clients(endpoint: str, account: str = MEMBER, region: str = "us-east-1") -> Any:
    """A factory of an operator's clients in ``account`` (a StackSet execution role session)."""
    sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/StackSetExecution", RoleSessionName="operator")[
        "Credentials"
    ]

    def make(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )

    return make


def provider(aws: Any, role_name: str | None = "changeguard-read-tags", **kwargs: Any) -> AccountClients:
    return AccountClients(
        function="correlate_change",
        role=ActingRole.from_wiring(SUITE_PREFIX, role_name),
        **kwargs,
    )


def create_acting_role(member: Any, name: str) -> str:
    """The role member/member-account.yaml creates (its trust policy is tested in test_member_template)."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{CENTRAL}:root"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = member("iam").create_role(RoleName=name, Path="/changeguard/", AssumeRolePolicyDocument=json.dumps(trust))
    return str(role["Role"]["Arn"])


def seed_checkout(clients: Any, account: str, deployment_id: str) -> None:
    """checkout/checkout-prod watched by alarm checkout-api-errors (in ALARM), with ``deployment_id`` in flight."""
    cloudwatch = clients("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName="checkout-api-errors",
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Dimensions=[{"Name": "FunctionName", "Value": "checkout-api"}],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=10.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    cloudwatch.set_alarm_state(AlarmName="checkout-api-errors", StateValue="ALARM", StateReason="Threshold Crossed")
    codedeploy = clients("codedeploy")
    codedeploy.create_application(applicationName="checkout", computePlatform="Lambda")
    codedeploy.create_deployment_group(
        applicationName="checkout",
        deploymentGroupName="checkout-prod",
        serviceRoleArn=f"arn:aws:iam::{account}:role/codedeploy-service-role",
        alarmConfiguration={"enabled": True, "alarms": [{"name": "checkout-api-errors"}]},
    )
    codedeploy_deployments.create_deployment(
        "checkout",
        "checkout-prod",
        {"revisionType": "String", "string": {"content": "checkout-api v16"}},
        deployment_id=deployment_id,
        description="checkout-api v16 (CHG-2002)",
        created=T0,
        timeline=[(T0, "InProgress"), (T0 + timedelta(minutes=30), "Succeeded")],
        account_id=account,
    )


def alarm_event(account: str) -> dict[str, Any]:
    event = load_event("guard_deployment/alarm-state-change.json")
    event["account"] = account
    event["resources"] = [f"arn:aws:cloudwatch:us-east-1:{account}:alarm:checkout-api-errors"]
    if "alarmArn" in event["detail"]:
        event["detail"]["alarmArn"] = event["resources"][0]
    return event


def guard_harness(aws: Any) -> Any:
    h = make_harness(aws, at=T0 + timedelta(minutes=4, seconds=30), OrganizationId=ORG)
    codedeploy_deployments.use_clock(h.clock.now)
    h.put_parameter("enforcement-mode", "enforce")
    return h


def status(clients: Any, deployment_id: str) -> str:
    return str(clients("codedeploy").get_deployment(deploymentId=deployment_id)["deploymentInfo"]["status"])


def refuse_member_role(aws: Any) -> None:
    """IAM refuses the member role (the harness's own sessions for the functions are not touched)."""
    aws.faults.fail("denied", operations=["AssumeRole"], body_contains="changeguard-stop-deployments")


def member_role_attempts(aws: Any) -> int:
    return int(aws.faults.count(operation="AssumeRole"))


# -- the provider -----------------------------------------------------------------------------------
def test_the_same_account_uses_the_functions_own_clients_and_makes_no_sts_call(aws):
    sts = CountingSts(aws.endpoint_url)
    accounts = provider(aws, sts=sts)
    from changeguard.adapters import clients

    with accounts.acting_in(CENTRAL, "us-east-1", "evt-1"):  # its own region: the shared client
        assert accounts.client("codedeploy") is clients.client("codedeploy")
    with accounts.acting_in(CENTRAL, "eu-west-1", "evt-2"):  # its own credentials, where the event came from
        assert accounts.client("codedeploy") is clients.client("codedeploy", "eu-west-1")
    with accounts.acting_in(CENTRAL, "not a region", "evt-3"):  # never a region an event made up
        assert accounts.client("codedeploy") is clients.client("codedeploy")
    assert accounts.client("codedeploy") is clients.client("codedeploy")  # no scope: its own account
    assert sts.assumed == []
    assert accounts.acted_as(CENTRAL) == {"account": CENTRAL, "identity": "function role"}


def test_another_account_is_reached_through_its_role_with_a_session_naming_the_function_and_event(aws):
    member = member_clients(aws.endpoint_url)
    member("ec2").create_security_group(GroupName="only-in-member", Description="x")
    sts = CountingSts(aws.endpoint_url)
    accounts = provider(aws, sts=sts)

    with accounts.acting_in(MEMBER, "us-east-1", "0b4a1f6e-3c2d-4e5f-8a9b-000000000002"):
        names = {g["GroupName"] for g in accounts.client("ec2").describe_security_groups()["SecurityGroups"]}
    assert "only-in-member" in names
    own = {g["GroupName"] for g in boto3.client("ec2").describe_security_groups()["SecurityGroups"]}
    assert "only-in-member" not in own  # the central account's credentials do not see it
    (call,) = sts.assumed
    assert call["RoleArn"] == f"arn:aws:iam::{MEMBER}:role/changeguard/changeguard-read-tags"
    assert call["RoleSessionName"] == "correlate_change@0b4a1f6e-3c2d-4e5f-8a9b-000000000002"
    assert "ExternalId" not in call
    acted = accounts.acted_as(MEMBER)
    assert acted["role"] == call["RoleArn"]
    assert acted["session"].endswith(
        "assumed-role/changeguard-read-tags/correlate_change@0b4a1f6e-3c2d-4e5f-8a9b-000000000002"
    )


def test_credentials_are_cached_across_events_and_renewed_before_they_expire(aws):
    sts = CountingSts(aws.endpoint_url)
    clock = Clock()
    accounts = provider(aws, sts=sts, clock=clock)

    with accounts.acting_in(MEMBER, "us-east-1", "event-1"):
        first = accounts.client("ec2")
    with accounts.acting_in(MEMBER, "us-east-1", "event-2"):
        assert accounts.client("ec2") is first  # warm: the same session and client
        accounts.client("codedeploy")  # another service, same session
    assert len(sts.assumed) == 1

    clock.now += 3600 - REFRESH_MARGIN - 1  # still inside the session, short of the margin
    with accounts.acting_in(MEMBER, "us-east-1", "event-3"):
        assert accounts.client("ec2") is first
    assert len(sts.assumed) == 1

    clock.now += 2  # within REFRESH_MARGIN of the expiry: renewed before it lapses
    with accounts.acting_in(MEMBER, "us-east-1", "event-4"):
        renewed = accounts.client("ec2")
    assert renewed is not first
    assert [c["RoleSessionName"] for c in sts.assumed] == ["correlate_change@event-1", "correlate_change@event-4"]


def test_a_sweep_over_many_accounts_keeps_a_bounded_number_of_clients(aws, monkeypatch):
    """A client holds about 200 KB: visiting 1,500 account-regions must not keep one for each."""
    from changeguard.adapters import clients as shared

    made: list[weakref.ref[Any]] = []
    real = shared.new_client

    def tracked(service: str, region: str | None, credentials: dict[str, str]) -> Any:
        client = real(service, region, credentials)
        made.append(weakref.ref(client))
        return client

    monkeypatch.setattr(shared, "new_client", tracked)
    sts = CountingSts(aws.endpoint_url)
    accounts = provider(aws, sts=sts)
    members = [f"{300000000000 + n:012d}" for n in range(MAX_CLIENTS + 40)]

    with accounts.acting_in(members[0], "us-east-1", "sweep"):
        first = accounts.client("cloudtrail")
    for account in members[1:]:
        with accounts.acting_in(account, "us-east-1", "sweep"):
            accounts.client("cloudtrail")
        with accounts.acting_in(members[0], "us-east-1", "sweep"):
            assert accounts.client("cloudtrail") is first  # used all along: never the one dropped
    gc.collect()

    assert len(made) == len(members)  # every other pair's client was made once
    alive = [ref for ref in made if ref() is not None]
    assert len(alive) <= MAX_CLIENTS, f"{len(alive)} clients kept for {len(members)} accounts"
    assert len(sts.assumed) == len(members)  # sessions (small) are still kept: one AssumeRole each

    with accounts.acting_in(members[1], "us-east-1", "sweep"):
        accounts.client("cloudtrail")  # dropped long ago: made again from the kept session
    assert len(made) == len(members) + 1
    assert len(sts.assumed) == len(members)


class _GatheringSts(CountingSts):
    """AssumeRole calls wait for ``parties`` of them to be in flight at once (or fail the test)."""

    def __init__(self, endpoint: str, parties: int, hold: float = 0.0) -> None:
        super().__init__(endpoint)
        self.barrier = threading.Barrier(parties, timeout=10) if parties > 1 else None
        self.hold = hold
        self._lock = threading.Lock()

    def assume_role(self, **params: Any) -> Any:
        with self._lock:
            self.assumed.append(params)
        if self.barrier is not None:
            self.barrier.wait()  # BrokenBarrierError when the calls are made one at a time
        time.sleep(self.hold)
        return self._sts.assume_role(**params)


def test_roles_of_different_accounts_are_assumed_side_by_side_and_each_once(aws):
    """A sweep's threads must not queue behind one AssumeRole at a time (500 accounts an hour)."""
    members = [f"{400000000000 + n:012d}" for n in range(6)]
    sts = _GatheringSts(aws.endpoint_url, parties=len(members))
    accounts = provider(aws, sts=sts)

    def act(account: str) -> Any:
        with accounts.acting_in(account, "us-east-1", "sweep"):
            return accounts.client("cloudtrail")

    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        made = list(pool.map(act, members))
    assert len(made) == len(members) and len(sts.assumed) == len(members)

    # Threads acting in the same account at once: one AssumeRole, one session for all of them.
    same = _GatheringSts(aws.endpoint_url, parties=1, hold=0.2)
    shared = provider(aws, sts=same)

    def act_in_member(_: int) -> str:
        with shared.acting_in(MEMBER, "us-east-1", "sweep"):
            shared.client("cloudtrail")
        return shared.acted_as(MEMBER)["session"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        sessions = set(pool.map(act_in_member, range(6)))
    assert len(same.assumed) == 1 and len(sessions) == 1


def test_an_external_id_is_passed_when_configured(aws):
    sts = CountingSts(aws.endpoint_url)
    accounts = AccountClients(
        function="sweep_quarantine",
        role=ActingRole.from_wiring(SUITE_PREFIX, "changeguard-quarantine", "ext-123"),
        sts=sts,
    )
    with accounts.acting_in(MEMBER, None, "sweep"):
        accounts.client("ec2")
    assert sts.assumed[0]["ExternalId"] == "ext-123"


def test_a_refused_role_is_a_typed_error_remembered_for_a_while_not_retried_per_call(aws):
    sts = CountingSts(aws.endpoint_url)
    clock = Clock()
    accounts = provider(aws, sts=sts, clock=clock)
    aws.faults.fail("denied", operations=["AssumeRole"])

    for _ in range(3):
        with pytest.raises(CrossAccountAccessError) as caught, accounts.acting_in(MEMBER, None, "e"):
            accounts.client("ec2")
        assert caught.value.code == "AccessDenied"
        assert caught.value.account == MEMBER
    assert len(sts.assumed) == 1  # one refused call, then the remembered refusal

    aws.faults.clear()
    clock.now += 61
    with accounts.acting_in(MEMBER, None, "e"):
        accounts.client("ec2")  # the role works again: a new try after the back-off
    assert len(sts.assumed) == 2


def test_without_a_configured_role_another_account_is_refused_never_acted_on_at_home(aws):
    accounts = provider(aws, role_name=None, sts=CountingSts(aws.endpoint_url))
    with pytest.raises(CrossAccountAccessError) as caught, accounts.acting_in(MEMBER, None, "e"):
        accounts.client("codedeploy")
    assert caught.value.code == "NotConfigured"
    with pytest.raises(InvalidEventError), accounts.acting_in("not-an-account", None, "e"):
        accounts.client("codedeploy")
    with pytest.raises(InvalidEventError), accounts.acting_in(MEMBER, "../../evil", "e"):
        accounts.client("codedeploy")


def test_session_names_fit_sts_rules():
    name = session_name("guard_deployment", "alarm: checkout/api errors" + "x" * 80)
    assert len(name) == 64
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+=,.@-")


# -- tag reads ----------------------------------------------------------------------------------------
def test_tags_of_a_member_resource_are_read_with_the_member_role_and_cached_per_account(aws):
    member = member_clients(aws.endpoint_url)
    group = member("ec2").create_security_group(GroupName="tagged", Description="x")["GroupId"]
    member("ec2").create_tags(Resources=[group], Tags=[{"Key": "ChangeTicket", "Value": "CHG-4242"}])
    arn = f"arn:aws:ec2:us-east-1:{MEMBER}:security-group/{group}"
    sts = CountingSts(aws.endpoint_url)
    accounts = provider(aws, sts=sts)
    reader = AwsTagReader(accounts=accounts)

    with accounts.acting_in(MEMBER, "us-east-1", "evt"):
        assert reader.tags_of(arn) == {"ChangeTicket": "CHG-4242"}
        assert reader.tags_of(arn) == {"ChangeTicket": "CHG-4242"}  # cached
    assert [c["RoleArn"] for c in sts.assumed] == [f"arn:aws:iam::{MEMBER}:role/changeguard/changeguard-read-tags"]
    # The same ARN asked in the central account is another key: the member's tags are not returned.
    assert reader.tags_of(arn) == {}


def test_iam_roles_users_and_policies_tags_are_read_from_iam_here_and_in_a_member_account(aws):
    """The Tagging API does not cover IAM users and roles: it leaves them out of its answer, and
    a role's ticket tag would never be found (every IAM change without another ticket: NO_TICKET)."""
    member = member_clients(aws.endpoint_url)
    iam = member("iam")
    trust = json.dumps({"Version": "2012-10-17", "Statement": []})
    iam.create_role(
        RoleName="checkout-api-role",
        Path="/service/",
        AssumeRolePolicyDocument=trust,
        Tags=[{"Key": "ChangeTicket", "Value": "CHG-5150"}],
    )
    iam.create_user(UserName="deployer", Tags=[{"Key": "ChangeTicket", "Value": "CHG-5151"}])
    policy = iam.create_policy(
        PolicyName="reports-read",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
        ),
        Tags=[{"Key": "ChangeTicket", "Value": "CHG-5152"}],
    )["Policy"]["Arn"]
    boto3.client("iam").create_role(RoleName="checkout-api-role", AssumeRolePolicyDocument=trust)  # at home: untagged
    accounts = provider(aws, sts=CountingSts(aws.endpoint_url))
    reader = AwsTagReader(accounts=accounts)

    with accounts.acting_in(MEMBER, "eu-west-1", "evt"):
        # Events name a role or user without its path: found by name.
        assert reader.tags_of(f"arn:aws:iam::{MEMBER}:role/checkout-api-role") == {"ChangeTicket": "CHG-5150"}
        assert reader.tags_of(f"arn:aws:iam::{MEMBER}:user/deployer") == {"ChangeTicket": "CHG-5151"}
        assert reader.tags_of(policy) == {"ChangeTicket": "CHG-5152"}
        assert reader.tags_of(f"arn:aws:iam::{MEMBER}:role/deleted-since") == {}
    assert reader.tags_of(f"arn:aws:iam::{CENTRAL}:role/checkout-api-role") == {}


def test_a_tag_cache_entry_expires(aws):
    group = boto3.client("ec2").create_security_group(GroupName="retagged", Description="x")["GroupId"]
    arn = f"arn:aws:ec2:us-east-1:{CENTRAL}:security-group/{group}"
    reader = AwsTagReader(max_age=0.0)
    assert reader.tags_of(arn) == {}
    boto3.client("ec2").create_tags(Resources=[group], Tags=[{"Key": "Owner", "Value": "ops"}])
    assert reader.tags_of(arn) == {"Owner": "ops"}  # not frozen for the container's lifetime


def test_a_refused_read_tags_role_reads_as_unreadable(aws):
    aws.faults.fail("denied", operations=["AssumeRole"])
    accounts = provider(aws, sts=CountingSts(aws.endpoint_url))
    reader = AwsTagReader(accounts=accounts)
    with accounts.acting_in(MEMBER, "us-east-1", "evt"):
        assert reader.tags_of(f"arn:aws:ec2:us-east-1:{MEMBER}:instance/i-0123456789abcdef0") is None
    assert reader.denied is not None and reader.denied.account == MEMBER


# -- the deployment guard through the harness ---------------------------------------------------------
def test_an_alarm_in_a_member_account_stops_that_accounts_deployment_not_the_central_one(aws):
    h = guard_harness(aws)
    member = member_clients(aws.endpoint_url)
    role = create_acting_role(member, "changeguard-stop-deployments")
    seed_checkout(member, MEMBER, "d-MEMB000U1")
    seed_checkout(h.admin_client, CENTRAL, "d-CENT000U1")  # the same names at home, also in flight
    mark = len(aws.trail.records())

    inv = h.invoke(GUARD, alarm_event(MEMBER))

    assert inv.error is None, inv.error
    assert inv.result["verdict"] == "STOPPED", inv.result
    assert status(member, "d-MEMB000U1") == "Stopped"
    assert status(h.admin_client, "d-CENT000U1") == "InProgress"
    records = trail_since(aws, mark)
    stops = [r for r in records if r["eventName"] == "StopDeployment"]
    assert [(s["requestParameters"]["deploymentId"], s["recipientAccountId"]) for s in stops] == [
        ("d-MEMB000U1", MEMBER)
    ]
    who = stops[0]["userIdentity"]
    assert (
        who["arn"]
        == f"arn:aws:sts::{MEMBER}:assumed-role/changeguard-stop-deployments/guard_deployment@checkout-api-errors"
    )
    assert who["sessionContext"]["sessionIssuer"]["arn"] == role
    (stop,) = [e for e in ledger_entries(h, "codedeploy:d-MEMB000U1") if e.entry.startswith("STOP#")]
    assert stop.body["acted_as"]["account"] == MEMBER
    assert stop.body["acted_as"]["role"] == role
    assert stop.body["acted_as"]["session"].endswith(
        "changeguard-stop-deployments/guard_deployment@checkout-api-errors"
    )
    assert ledger_entries(h, "codedeploy:d-CENT000U1") == []


def test_the_health_sweep_checks_a_group_where_it_lives_and_names_one_that_lives_nowhere(aws):
    """ListDeployments refuses an application the account does not have: a group with health
    criteria lives in a few accounts and regions, and the sweep visits them all."""
    h = make_harness(
        aws, at=T0 + timedelta(minutes=6), OrganizationId=ORG, MemberAccountIds=MEMBER, MemberRegions="eu-west-1"
    )
    codedeploy_deployments.use_clock(h.clock.now)
    member = member_clients(aws.endpoint_url)
    create_acting_role(member, "changeguard-stop-deployments")
    seed_checkout(member, MEMBER, "d-MEMB000H1")  # only there: not in this account, nor in eu-west-1
    h.put_parameter("health-criteria", json.dumps({"checkout/checkout-prod": {}, "inventory/prod": {}}))

    swept = h.invoke(GUARD, h.scheduled_event(GUARD))

    assert swept.error is None, swept.error
    [health] = [e for e in ledger_entries(h, "codedeploy:d-MEMB000H1") if e.entry == "HEALTH"]
    assert (health.account, health.region) == (MEMBER, "us-east-1")
    reasons = swept.result["reasons"]
    assert "health-criteria names inventory/prod, a deployment group none of the 4 account-region(s) checked has" in (
        reasons
    )
    assert not [r for r in reasons if "names checkout/checkout-prod" in r]

    # Criteria that say where the group lives: the sweep asks CodeDeploy there only.
    where = {"accounts": [MEMBER], "regions": ["us-east-1"]}
    h.put_parameter("health-criteria", json.dumps({"checkout/checkout-prod": where, "inventory/prod": where}))
    aws.record_read_only = True
    mark = len(aws.trail.records())
    h.clock.set(h.clock.now() + timedelta(minutes=1))
    again = h.invoke(GUARD, h.scheduled_event(GUARD))
    assert again.error is None, again.error
    listed = [
        (r["recipientAccountId"], r["awsRegion"], r["requestParameters"]["applicationName"])
        for r in trail_since(aws, mark)
        if r["eventName"] == "ListDeployments"
    ]
    assert sorted(listed) == [(MEMBER, "us-east-1", "checkout"), (MEMBER, "us-east-1", "inventory")]
    assert (
        f"health-criteria names inventory/prod, a deployment group none of the 4 account-region(s) checked has"
        f" among those it lists (accounts {MEMBER}; regions us-east-1)"
    ) in again.result["reasons"]


@pytest.mark.parametrize("fault", ["denied", "500"])
def test_a_region_that_refuses_or_fails_the_health_sweep_leaves_the_others_checked(aws, fault):
    """An SCP denying a region, or a region not enabled, answers AccessDeniedException once the role
    is assumed: reported once a day. Any other failure fails the run, after the other pairs."""
    h = make_harness(
        aws, at=T0 + timedelta(minutes=6), OrganizationId=ORG, MemberAccountIds=MEMBER, MemberRegions="eu-west-1"
    )
    codedeploy_deployments.use_clock(h.clock.now)
    member = member_clients(aws.endpoint_url)
    create_acting_role(member, "changeguard-stop-deployments")
    seed_checkout(member, MEMBER, "d-MEMB000H2")
    h.put_parameter("health-criteria", json.dumps({"checkout/checkout-prod": {}}))
    aws.faults.fail(fault, operations=["ListDeployments"], where=lambda call: call.region == "eu-west-1")

    swept = h.invoke(GUARD, h.scheduled_event(GUARD))

    assert [e.entry for e in ledger_entries(h, "codedeploy:d-MEMB000H2") if e.entry == "HEALTH"] == ["HEALTH"]
    if fault == "denied":
        assert swept.error is None, swept.error
        refused = [r for r in swept.result["reasons"] if "was refused ListDeployments in eu-west-1" in r]
        assert len(refused) == 2, swept.result  # this account's and the member's
    else:
        assert swept.error is not None and "InternalFailure" in swept.error


def test_the_stop_cap_counts_an_application_per_account_and_region(aws):
    """A name is unique in one account and region: a bad release of the same application in two
    accounts must be stoppable in both, whatever the cap."""
    h = guard_harness(aws)
    h.put_parameter("max-stops-per-app-hour", "1")
    member = member_clients(aws.endpoint_url)
    create_acting_role(member, "changeguard-stop-deployments")
    seed_checkout(member, MEMBER, "d-MEMB000C1")
    seed_checkout(h.admin_client, CENTRAL, "d-CENT000C1")

    there = h.invoke(GUARD, alarm_event(MEMBER))
    here = h.invoke(GUARD, alarm_event(CENTRAL))

    assert (there.error, here.error) == (None, None)
    assert (there.result["verdict"], here.result["verdict"]) == ("STOPPED", "STOPPED")
    assert (status(member, "d-MEMB000C1"), status(h.admin_client, "d-CENT000C1")) == ("Stopped", "Stopped")
    day = [e for e in all_ledger_entries(h) if e.change_id.startswith("guard:stops:")]
    assert sorted(e.change_id for e in day) == [
        f"guard:stops:{CENTRAL}:us-east-1:checkout",
        f"guard:stops:{MEMBER}:us-east-1:checkout",
    ]


def test_an_alarm_in_the_central_account_acts_at_home_without_sts(aws):
    h = guard_harness(aws)
    seed_checkout(h.admin_client, CENTRAL, "d-CENT000U1")
    refuse_member_role(aws)  # any AssumeRole of the member role would fail, and be counted

    inv = h.invoke(GUARD, alarm_event(CENTRAL))

    assert inv.result["verdict"] == "STOPPED", inv.result
    assert status(h.admin_client, "d-CENT000U1") == "Stopped"
    assert member_role_attempts(aws) == 0
    (stop,) = [e for e in ledger_entries(h, "codedeploy:d-CENT000U1") if e.entry.startswith("STOP#")]
    assert stop.body["acted_as"] == {"account": CENTRAL, "identity": "function role"}


def test_a_refused_member_role_leaves_a_verdict_and_one_alert_and_touches_nothing_at_home(aws):
    h = guard_harness(aws)
    member = member_clients(aws.endpoint_url)
    seed_checkout(member, MEMBER, "d-MEMB000U1")
    seed_checkout(h.admin_client, CENTRAL, "d-CENT000U1")
    refuse_member_role(aws)
    mark = len(aws.trail.records())

    first = h.invoke(GUARD, alarm_event(MEMBER))
    again = h.invoke(GUARD, alarm_event(MEMBER))  # the alarm fires again: no second try, no second alert

    assert first.error is None and again.error is None, (first.error, again.error)
    assert first.result["verdict"] == "NOT_ACTED"
    assert "could not check alarm checkout-api-errors" in first.result["reasons"][0]
    assert "AccessDenied" in first.result["reasons"][0]
    assert len(first.result["alert_ids"]) == 1 and again.result["alert_ids"] == []
    assert status(member, "d-MEMB000U1") == "InProgress"
    assert status(h.admin_client, "d-CENT000U1") == "InProgress"  # not acted on in the wrong account
    records = trail_since(aws, mark)
    assert [r for r in records if r["eventName"] in ("StopDeployment", "CreateDeployment")] == []
    assert member_role_attempts(aws) == 1  # no retry storm: the refusal is remembered
    day = h.clock.now().strftime("%Y-%m-%d")
    entries = ledger_entries(h, f"acting:{MEMBER}:{day}")
    assert [e.entry for e in entries] == ["ALERT#guard_deployment#cross-account", "DENIED#guard_deployment"]
    alert = entries[0].body["alert"]
    assert alert["account"] == MEMBER and alert["severity"] == "high"
    assert "cannot act in account 222222222222" in alert["subject"]


# -- quarantine: marked and contained in the resource's own account ---------------------------------
def world_open_group(clients: Any) -> str:
    ec2 = clients("ec2")
    group = str(ec2.create_security_group(GroupName="web-open", Description="opened to the world")["GroupId"])
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        ],
    )
    return group


def ingress_event(account: str, group: str) -> dict[str, Any]:
    text = json.dumps(load_event("enforce_tags/05-authorize-ingress-world.json"))
    text = text.replace("sg-0d9e8f7a6b5c4d3e2", group).replace("123456789012", account)
    return dict(json.loads(text))


def world_open(clients: Any, group: str) -> bool:
    (found,) = clients("ec2").describe_security_groups(GroupIds=[group])["SecurityGroups"]
    return any(r.get("CidrIp") == "0.0.0.0/0" for p in found["IpPermissions"] for r in p.get("IpRanges", []))


def test_an_untagged_member_resource_is_marked_and_quarantined_in_its_own_account(aws):
    h = make_harness(aws, at=T0, OrganizationId=ORG, MemberAccountIds=MEMBER)
    h.put_parameter("enforcement-mode", "enforce")
    h.put_parameter("quarantine-grace-hours", "0")
    member = member_clients(aws.endpoint_url)
    role = create_acting_role(member, "changeguard-quarantine")
    group = world_open_group(member)
    arn = f"arn:aws:ec2:us-east-1:{MEMBER}:security-group/{group}"
    mark = len(aws.trail.records())

    marked = h.invoke("EnforceTagsFunction", ingress_event(MEMBER, group))
    swept = h.invoke("SweepQuarantineFunction", h.scheduled_event("SweepQuarantineFunction"))

    assert marked.error is None and swept.error is None, (marked.error, swept.error)
    assert marked.result["verdict"] == "NON_COMPLIANT", marked.result
    assert not world_open(member, group)  # contained where it lives
    tags = {t["Key"]: t["Value"] for t in member("ec2").describe_tags()["Tags"] if t["ResourceId"] == group}
    assert "changeguard:quarantine-ref" in tags
    with pytest.raises(Exception, match="InvalidGroup"):
        boto3.client("ec2").describe_security_groups(GroupIds=[group])  # nothing of it at home
    changed = [
        r
        for r in trail_since(aws, mark)
        if r["eventName"] in ("CreateTags", "RevokeSecurityGroupIngress") and not r.get("errorCode")
    ]
    assert {r["recipientAccountId"] for r in changed} == {MEMBER}
    sessions = {r["userIdentity"]["arn"].split("/", 2)[2].split("@")[0] for r in changed}
    assert sessions == {"enforce_tags", "sweep_quarantine"}
    assert {r["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] for r in changed} == {role}
    quarantined = [e for e in ledger_entries(h, f"resource:{arn}") if e.entry.startswith("QUARANTINE#")]
    assert quarantined and all(e.body["acted_as"]["account"] == MEMBER for e in quarantined)
    assert quarantined[0].body["acted_as"]["role"] == role


@pytest.mark.parametrize("fault", ["denied", "500"])
def test_a_region_that_refuses_or_fails_the_search_leaves_the_sweep_quarantining_elsewhere(aws, fault):
    """After AssumeRole, an SCP denying a region (or a region the account has not enabled) answers
    AccessDeniedException there: reported, and one account-region must not stop the organization's
    sweep. Any other failure fails the run, after the regions that answered were swept."""
    h = make_harness(aws, at=T0, OrganizationId=ORG, MemberAccountIds=MEMBER, MemberRegions="eu-west-1")
    h.put_parameter("enforcement-mode", "enforce")
    h.put_parameter("quarantine-grace-hours", "0")
    member = member_clients(aws.endpoint_url)
    create_acting_role(member, "changeguard-quarantine")
    group = world_open_group(member)
    assert h.invoke("EnforceTagsFunction", ingress_event(MEMBER, group)).error is None
    aws.faults.fail(fault, operations=["GetResources"], where=lambda call: call.region == "eu-west-1")

    swept = h.invoke("SweepQuarantineFunction", h.scheduled_event("SweepQuarantineFunction"))

    assert not world_open(member, group)  # contained in the region that answered
    if fault == "denied":
        assert swept.error is None, swept.error
        refused = [r for r in swept.result["actions"] if "was refused GetResources in eu-west-1" in r]
        assert len(refused) == 2, swept.result  # this account's and the member's, each named
        assert aws.faults.count(operation="GetResources") == 2
    else:
        assert swept.error is not None and "InternalFailure" in swept.error  # the retry and the alarm follow


def test_a_refused_quarantine_role_skips_the_resource_and_alerts_once(aws):
    h = make_harness(aws, at=T0, OrganizationId=ORG)
    h.put_parameter("enforcement-mode", "enforce")
    member = member_clients(aws.endpoint_url)
    group = world_open_group(member)
    aws.faults.fail("denied", operations=["AssumeRole"], body_contains="changeguard-quarantine")

    inv = h.invoke("EnforceTagsFunction", ingress_event(MEMBER, group))

    assert inv.error is None, inv.error
    assert inv.result["verdict"] == "SKIPPED", inv.result
    assert any("could not read, mark, quarantine or release" in r for r in inv.result["reasons"])
    assert len(inv.result["alert_ids"]) == 1
    assert world_open(member, group)  # untouched, and nothing done at home instead
    assert [e.entry for e in ledger_entries(h, f"resource:arn:aws:ec2:us-east-1:{MEMBER}:security-group/{group}")] == []
    day = h.clock.now().strftime("%Y-%m-%d")
    assert "DENIED#enforce_tags" in [e.entry for e in ledger_entries(h, f"acting:{MEMBER}:{day}")]


# -- the correlator: a ticket reference in a member resource's current tags ------------------------
def test_the_correlator_reads_a_member_resources_tags_there(aws):
    h = make_harness(aws, at=datetime(2026, 11, 21, 9, 45, tzinfo=UTC), OrganizationId=ORG)
    member = member_clients(aws.endpoint_url)
    create_acting_role(member, "changeguard-read-tags")
    member("s3").create_bucket(Bucket="acme-reports-prod")
    member("s3").put_bucket_tagging(
        Bucket="acme-reports-prod", Tagging={"TagSet": [{"Key": "ChangeTicket", "Value": "CHG-7777"}]}
    )
    event = json.loads(json.dumps(load_event("correlate_change/02-console-no-ticket.json")).replace(CENTRAL, MEMBER))

    inv = h.invoke("CorrelateChangeFunction", event)

    assert inv.error is None, inv.error
    # The bucket's tag names CHG-7777, which the ticket table does not hold: found in the member
    # account (at home there is no such bucket, and the verdict would be NO_TICKET).
    assert inv.result["verdict"] == "UNKNOWN_TICKET", inv.result
    # The same call made at home (another event id) finds no bucket tag there.
    home = load_event("correlate_change/02-console-no-ticket.json")
    home["detail"]["eventID"] = "0b4a1f6e-3c2d-4e5f-8a9b-0000000000aa"
    assert h.invoke("CorrelateChangeFunction", home).result["verdict"] == "NO_TICKET"


# -- the change-calendar gate: a deployment started in a member account while the window is closed --
def test_a_member_deployment_outside_the_change_window_is_stopped_in_its_account(aws):
    from changeguard_tools import fixtures

    now = datetime(2026, 11, 21, 9, 16, tzinfo=UTC)  # a Saturday, outside the 02:00-06:00 window
    h = make_harness(aws, at=now, OrganizationId=ORG)
    codedeploy_deployments.use_clock(h.clock.now)
    calendar = {"name": "window", "type": "DEFAULT_CLOSED", "events": [{"summary": "weekly", "start": "2026-11-07T02:00:00Z", "end": "2026-11-07T06:00:00Z", "rrule": "FREQ=WEEKLY;BYDAY=SA"}]}  # fmt: skip
    fixtures.seed(h, {"calendars": [calendar]})
    h.put_parameter("change-calendar-names", "window")
    h.put_parameter("enforcement-mode", "enforce")
    member = member_clients(aws.endpoint_url)
    role = create_acting_role(member, "changeguard-stop-deployments")
    codedeploy = member("codedeploy")
    codedeploy.create_application(applicationName="payments-api", computePlatform="Server")
    codedeploy.create_deployment_group(
        applicationName="payments-api",
        deploymentGroupName="payments-prod",
        serviceRoleArn=f"arn:aws:iam::{MEMBER}:role/codedeploy-service-role",
    )
    started = datetime(2026, 11, 21, 9, 15, tzinfo=UTC)
    codedeploy_deployments.create_deployment(
        "payments-api",
        "payments-prod",
        {"revisionType": "String", "string": {"content": "payments-api v7"}},
        deployment_id="d-MEMB0GATE",
        created=started,
        timeline=[(started, "InProgress")],
        account_id=MEMBER,
    )
    event = codedeploy_deployments.state_change_event("d-MEMB0GATE", "START", account_id=MEMBER, region="us-east-1")
    assert event["account"] == MEMBER

    inv = h.invoke("GateChangeWindowFunction", event)

    assert inv.error is None, inv.error
    assert inv.result["verdict"] == "OUTSIDE_CHANGE_WINDOW", inv.result
    assert member("codedeploy").get_deployment(deploymentId="d-MEMB0GATE")["deploymentInfo"]["status"] == "Stopped"
    # The stop's result (after its decision, ``CALENDAR``) says where it was made, and as whom.
    (gate,) = [e for e in ledger_entries(h, "codedeploy:d-MEMB0GATE") if e.entry == "CALENDAR#result"]
    assert gate.body["acted_as"]["account"] == MEMBER and gate.body["acted_as"]["role"] == role


def test_a_refused_stop_role_still_records_the_gates_verdict_and_says_what_was_not_done(aws):
    from changeguard_tools import fixtures

    now = datetime(2026, 11, 21, 9, 16, tzinfo=UTC)
    h = make_harness(aws, at=now, OrganizationId=ORG)
    codedeploy_deployments.use_clock(h.clock.now)
    calendar = {"name": "window", "type": "DEFAULT_CLOSED", "events": [{"summary": "weekly", "start": "2026-11-07T02:00:00Z", "end": "2026-11-07T06:00:00Z", "rrule": "FREQ=WEEKLY;BYDAY=SA"}]}  # fmt: skip
    fixtures.seed(h, {"calendars": [calendar]})
    h.put_parameter("change-calendar-names", "window")
    h.put_parameter("enforcement-mode", "enforce")
    refuse_member_role(aws)
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")
    event = json.loads(json.dumps(event).replace(CENTRAL, MEMBER))
    mark = len(aws.trail.records())

    inv = h.invoke("GateChangeWindowFunction", event)

    assert inv.error is None, inv.error
    assert inv.result["verdict"] == "OUTSIDE_CHANGE_WINDOW", inv.result  # the verdict, all the same
    assert inv.result["actions"][0].startswith(
        f"could not stop deployment d-4UTS1DE01 (payments-api/payments-prod) in account {MEMBER}: AccessDenied"
    )
    assert len(inv.result["alert_ids"]) == 2  # the window alert, and the cross-account one
    assert [r for r in trail_since(aws, mark) if r["eventName"] == "StopDeployment"] == []
    (gate,) = [e for e in ledger_entries(h, "codedeploy:d-4UTS1DE01") if e.entry.startswith("CALENDAR")]
    assert gate.body["decision"]["action"] == "alert"  # no stop was made: the record must not claim one
    (window,) = [e.body["alert"] for e in ledger_entries(h, "codedeploy:d-4UTS1DE01") if e.kind.value == "ALERT"]
    assert window["subject"].startswith(f"Change window CLOSED: NOT stopped (access refused in {MEMBER})")
    assert gate.body["acted_as"] == {
        "account": MEMBER,
        "role": f"arn:aws:iam::{MEMBER}:role/changeguard/changeguard-stop-deployments",
        "error": "AccessDenied",
    }


def test_a_refused_read_tags_role_keeps_the_verdict_and_alerts_that_the_account_is_unread(aws):
    h = make_harness(aws, at=datetime(2026, 11, 21, 9, 45, tzinfo=UTC), OrganizationId=ORG)
    aws.faults.fail("denied", operations=["AssumeRole"], body_contains="changeguard-read-tags")
    event = json.loads(json.dumps(load_event("correlate_change/02-console-no-ticket.json")).replace(CENTRAL, MEMBER))

    inv = h.invoke("CorrelateChangeFunction", event)

    assert inv.error is None, inv.error
    assert inv.result["verdict"] == "UNVERIFIED", inv.result  # its ticket tag unread: not NO_TICKET
    assert any(
        r.startswith(f"could not read resource and stack tags (ticket references) in account {MEMBER}")
        for r in inv.result["reasons"]
    )
    kinds = sorted(a.rsplit("/", 1)[1] for a in inv.result["alert_ids"])
    assert kinds == ["cross-account", "verdict"]


# -- this account's other regions: forwarded here, acted on where the resource lives -----------------
OTHER_REGION = "eu-west-1"


def in_region(event: dict[str, Any], region: str) -> dict[str, Any]:
    return dict(json.loads(json.dumps(event).replace("us-east-1", region)))


def test_an_untagged_resource_in_another_region_of_this_account_is_marked_and_quarantined_there(aws):
    """MemberRegions: the sweep visits each listed region too, where the marks of that region's
    resources are (marks and the Tagging API that finds them are regional)."""
    h = make_harness(aws, at=T0, MemberRegions=OTHER_REGION)
    h.put_parameter("enforcement-mode", "enforce")
    h.put_parameter("quarantine-grace-hours", "0")

    def there(service: str) -> Any:
        return boto3.client(service, region_name=OTHER_REGION)

    group = world_open_group(there)
    mark = len(aws.trail.records())

    marked = h.invoke("EnforceTagsFunction", in_region(ingress_event(CENTRAL, group), OTHER_REGION))
    swept = h.invoke("SweepQuarantineFunction", h.scheduled_event("SweepQuarantineFunction"))

    assert marked.error is None and swept.error is None, (marked.error, swept.error)
    assert marked.result["verdict"] == "NON_COMPLIANT", marked.result
    assert not world_open(there, group)  # contained in its own region by the sweep
    changed = [
        r
        for r in trail_since(aws, mark)
        if r["eventName"] in ("CreateTags", "RevokeSecurityGroupIngress") and not r.get("errorCode")
    ]
    assert {r["awsRegion"] for r in changed} == {OTHER_REGION}
    by = {(r["eventName"], r["userIdentity"]["arn"].rsplit("/", 1)[-1]) for r in changed}
    assert ("RevokeSecurityGroupIngress", "changeguard-local-SweepQuarantineFunction") in by
    arn = f"arn:aws:ec2:{OTHER_REGION}:{CENTRAL}:security-group/{group}"
    assert [e for e in ledger_entries(h, f"resource:{arn}") if e.entry.startswith("QUARANTINE#")]


def test_the_correlator_reads_the_tags_of_a_resource_in_another_region_of_this_account_there(aws):
    h = make_harness(aws, at=datetime(2026, 11, 21, 9, 45, tzinfo=UTC))
    ec2 = boto3.client("ec2", region_name=OTHER_REGION)
    instance = ec2.run_instances(
        ImageId="ami-0abcdef1234567890",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "ChangeTicket", "Value": "CHG-7777"}]}],
    )["Instances"][0]["InstanceId"]
    event = in_region(load_event("correlate_change/02-console-no-ticket.json"), OTHER_REGION)
    detail = event["detail"]
    detail.update(
        eventSource="ec2.amazonaws.com",
        eventName="StopInstances",
        requestParameters={"instancesSet": {"items": [{"instanceId": instance}]}},
        responseElements=None,
    )
    detail.pop("resources", None)

    inv = h.invoke("CorrelateChangeFunction", event)

    assert inv.error is None, inv.error
    # The instance's tag names CHG-7777, which the ticket table does not hold: read in its region
    # (in this region there is no such instance, and the verdict would be NO_TICKET).
    assert inv.result["verdict"] == "UNKNOWN_TICKET", inv.result
