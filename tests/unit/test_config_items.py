"""Config items and the CloudTrail records of the calls behind them: one verdict per call, its CloudTrail's.

A Config item names the calls that caused it (``relatedEvents``), not who made them, and the default
bus delivers the two in any order. Whichever comes first, the call is judged from its CloudTrail
record; the Config item is ledgered beside it as evidence.
"""

from __future__ import annotations

import pytest
from changeguard.domain.change import NOT_CHANGE_RESOURCE_TYPES, NOT_RECORDED_STATUSES, config_event_source
from changeguard.domain.policy import Policy
from changeguard.services.correlate import CorrelateService
from changeguard_tools.template import Template
from fakes import FakeClock, FakeTagReader, FakeTicketSource, InMemoryLedger
from sample_events import load_event

SUITE = "arn:aws:iam::123456789012:role/changeguard/"
#: The event sources CloudTrailWriteCalls routes (template.yaml's default), as the correlator is given them.
SOURCES = tuple(Template().parameter_defaults()["CorrelatedEventSources"])


def service(correlated_sources: tuple[str, ...] = SOURCES) -> CorrelateService:
    return CorrelateService(
        function="correlate_change",
        ledger=InMemoryLedger(),
        tickets=FakeTicketSource(),
        tags=FakeTagReader(),
        policy=Policy,
        clock=FakeClock(),
        suite_role_prefixes=(SUITE,),
        correlated_sources=correlated_sources,
    )


def config_item_of(call: dict, resource_type: str, resource_id: str, arn: str, state: int = 1) -> dict:
    """The sample Config item, about ``resource_type``/``resource_id`` and caused by ``call``."""
    event = load_event("correlate_change/10-config-item-change.json")
    event["resources"] = [arn]
    item = event["detail"]["configurationItem"]
    item.update(
        relatedEvents=[call["detail"]["eventID"]],
        resourceType=resource_type,
        resourceId=resource_id,
        resourceName=resource_id,
        ARN=arn,
        configurationStateId=state,
    )
    return event


def verdicts(svc: CorrelateService) -> list:
    return svc.ledger.kinds("VERDICT")


ROOT_STOP_LOGGING = load_event("correlate_change/07-root-stop-logging.json")
TRAIL_ITEM = config_item_of(
    ROOT_STOP_LOGGING,
    "AWS::CloudTrail::Trail",
    "org-trail",
    "arn:aws:cloudtrail:us-east-1:123456789012:trail/org-trail",
)


@pytest.mark.parametrize("config_first", [True, False], ids=["config-first", "cloudtrail-first"])
def test_a_config_item_never_takes_the_place_of_its_calls_cloudtrail_verdict(config_first):
    """A root StopLogging keeps its actor and its tampering flag whichever event arrives first."""
    svc = service()
    order = [TRAIL_ITEM, ROOT_STOP_LOGGING] if config_first else [ROOT_STOP_LOGGING, TRAIL_ITEM]
    outcomes = [svc.handle(event) for event in order]

    assert not any(o.duplicate for o in outcomes)
    [verdict] = verdicts(svc)
    assert verdict.change_id == ROOT_STOP_LOGGING["detail"]["eventID"]
    change, judgement = verdict.body["change"], verdict.body["judgement"]
    assert change["source"] == "cloudtrail" and change["actor"]["kind"] == "root"
    assert judgement["control_tampering"] is True and verdict.severity == "critical"
    [observed] = svc.ledger.kinds("CONFIG")
    assert observed.change_id == verdict.change_id and observed.verdict is None
    assert observed.body["change"]["resources"] == [TRAIL_ITEM["resources"][0]]
    config_outcome = outcomes[0] if config_first else outcomes[1]
    assert config_outcome.verdict == "NOT_A_CHANGE" and config_outcome.actions == ["recorded the Config item"]


def test_the_config_item_of_a_no_ticket_console_change_adds_evidence_not_a_second_verdict():
    svc = service()
    config = svc.handle(load_event("correlate_change/10-config-item-change.json"))
    call = svc.handle(load_event("correlate_change/02-console-no-ticket.json"))
    assert call.verdict == "NO_TICKET" and not call.duplicate and call.alert_ids
    [verdict] = verdicts(svc)
    assert verdict.body["change"]["actor"]["arn"].endswith("/dave@example.com")
    again = svc.handle(load_event("correlate_change/10-config-item-change.json"))  # a duplicate delivery
    assert not config.duplicate and again.duplicate
    assert len(svc.ledger.kinds("CONFIG")) == 1 and len(verdicts(svc)) == 1


def test_each_config_item_of_one_call_is_recorded():
    """One call can change several resources (an instance, its volume, its interface): one entry each."""
    svc = service()
    call = load_event("correlate_change/01-approved-run-instances.json")
    for resource_type, resource_id in (("AWS::EC2::Instance", "i-1"), ("AWS::EC2::Volume", "vol-1")):
        svc.handle(config_item_of(call, resource_type, resource_id, f"arn:aws:ec2:::{resource_id}"))
    assert len(svc.ledger.kinds("CONFIG")) == 2 and verdicts(svc) == []


def test_a_config_item_without_related_events_is_judged_itself():
    """A change CloudTrail did not see: the Config item is its only record."""
    svc = service()
    event = load_event("correlate_change/10-config-item-change.json")
    event["detail"]["configurationItem"]["relatedEvents"] = []
    outcome = svc.handle(event)
    [verdict] = verdicts(svc)
    assert outcome.verdict == "NO_TICKET" and verdict.body["change"]["source"] == "config"
    assert verdict.change_id.startswith("config:AWS::S3::Bucket:acme-reports-prod:")


def test_a_config_item_of_a_service_the_cloudtrail_rule_does_not_route_is_judged_itself():
    """Its call never reaches the correlator (nor the reconciliation sweep): nothing else judges it."""
    svc = service()
    call = load_event("correlate_change/01-approved-run-instances.json")
    arn = "arn:aws:ecs:us-east-1:123456789012:service/prod/checkout"
    outcome = svc.handle(config_item_of(call, "AWS::ECS::Service", "checkout", arn))
    [verdict] = verdicts(svc)
    assert outcome.verdict == "NO_TICKET" and verdict.body["change"]["resources"] == [arn]
    assert svc.ledger.kinds("CONFIG") == []


def test_without_the_routed_sources_every_related_call_is_left_to_its_cloudtrail_record():
    svc = service(correlated_sources=())
    call = load_event("correlate_change/01-approved-run-instances.json")
    svc.handle(config_item_of(call, "AWS::ECS::Service", "checkout", "arn:aws:ecs:::service/checkout"))
    assert verdicts(svc) == [] and len(svc.ledger.kinds("CONFIG")) == 1


@pytest.mark.parametrize(
    ("resource_type", "source"),
    [
        ("AWS::EC2::SecurityGroup", "ec2.amazonaws.com"),
        ("AWS::S3::Bucket", "s3.amazonaws.com"),
        ("AWS::CloudTrail::Trail", "cloudtrail.amazonaws.com"),
        ("AWS::ElasticLoadBalancingV2::LoadBalancer", "elasticloadbalancing.amazonaws.com"),
        ("AWS::ElasticLoadBalancing::LoadBalancer", "elasticloadbalancing.amazonaws.com"),
        ("AWS::CloudWatch::Alarm", "monitoring.amazonaws.com"),
        ("AWS::StepFunctions::StateMachine", "states.amazonaws.com"),
        ("AWS::ECS::Service", "ecs.amazonaws.com"),
        # The eventSource the EventBridge events reference gives each service's CloudTrail events.
        ("AWS::EFS::FileSystem", "elasticfilesystem.amazonaws.com"),
        ("AWS::KinesisFirehose::DeliveryStream", "firehose.amazonaws.com"),
        ("AWS::Cognito::UserPool", "cognito-idp.amazonaws.com"),
        ("AWS::Cognito::IdentityPool", "cognito-identity.amazonaws.com"),
        ("AWS::EMR::SecurityConfiguration", "elasticmapreduce.amazonaws.com"),
        ("AWS::NetworkFirewall::Firewall", "network-firewall.amazonaws.com"),
        ("AWS::KinesisAnalyticsV2::Application", "kinesisanalytics.amazonaws.com"),
        ("AWS::Macie::Session", "macie2.amazonaws.com"),
        ("AWS::EventSchemas::Registry", "schemas.amazonaws.com"),
        ("AWS::Pinpoint::App", "pinpoint.amazonaws.com"),  # not mobiletargeting: Pinpoint's CloudTrail examples
        ("AWS::AmazonMQ::Broker", "mq.amazonaws.com"),
        ("AWS::ACMPCA::CertificateAuthority", "acm-pca.amazonaws.com"),
        ("AWS::OpenSearchServerless::Collection", "aoss.amazonaws.com"),
        ("AWS::RedshiftServerless::Workgroup", "redshift-serverless.amazonaws.com"),
        ("AWS::ECR::PublicRepository", "ecr-public.amazonaws.com"),
        ("AWS::ECR::Repository", "ecr.amazonaws.com"),
        (None, None),
        ("NotAType", None),
    ],
)
def test_the_api_of_a_config_resource_type(resource_type, source):
    assert config_event_source(resource_type) == source


#: A Config resource type of each service CloudTrailWriteCalls routes by default.
ROUTED_TYPES = {
    "ec2.amazonaws.com": "AWS::EC2::Instance",
    "s3.amazonaws.com": "AWS::S3::Bucket",
    "iam.amazonaws.com": "AWS::IAM::Role",
    "lambda.amazonaws.com": "AWS::Lambda::Function",
    "rds.amazonaws.com": "AWS::RDS::DBInstance",
    "cloudformation.amazonaws.com": "AWS::CloudFormation::Stack",
    "kms.amazonaws.com": "AWS::KMS::Key",
    "dynamodb.amazonaws.com": "AWS::DynamoDB::Table",
    "cloudtrail.amazonaws.com": "AWS::CloudTrail::Trail",
    "config.amazonaws.com": "AWS::Config::ConfigurationRecorder",
    "guardduty.amazonaws.com": "AWS::GuardDuty::Detector",
    "securityhub.amazonaws.com": "AWS::SecurityHub::Hub",
    "sns.amazonaws.com": "AWS::SNS::Topic",
    "sqs.amazonaws.com": "AWS::SQS::Queue",
    "events.amazonaws.com": "AWS::Events::Rule",
    "ssm.amazonaws.com": "AWS::SSM::Document",
    "elasticloadbalancing.amazonaws.com": "AWS::ElasticLoadBalancingV2::LoadBalancer",
}


def test_every_default_routed_source_is_the_api_of_its_config_resource_types():
    """A routed source that no Config type maps to would let that service's Config items take the place
    of their calls' CloudTrail verdicts. A source added to the default needs its type here."""
    assert sorted(ROUTED_TYPES) == sorted(SOURCES)
    assert {source: config_event_source(t) for source, t in ROUTED_TYPES.items()} == {s: s for s in ROUTED_TYPES}


def test_a_config_item_of_a_routed_efs_call_is_evidence_not_a_verdict():
    """EFS mapped to efs.amazonaws.com: with elasticfilesystem routed, its Config item was judged (no actor)."""
    svc = service((*SOURCES, "elasticfilesystem.amazonaws.com"))
    call = load_event("correlate_change/01-approved-run-instances.json")
    arn = "arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/fs-0123456789abcdef0"
    svc.handle(config_item_of(call, "AWS::EFS::FileSystem", "fs-0123456789abcdef0", arn))
    assert verdicts(svc) == [] and len(svc.ledger.kinds("CONFIG")) == 1


# -- oversized items: a summary on the bus, the item read back from Config's history -------------------
OVERSIZED = "correlate_change/13-oversized-config-item.json"


class FakeConfigHistory:
    """Config's recorded history: (type, id) -> items, oldest first; counts the calls."""

    def __init__(self, *items: dict) -> None:
        from changeguard.models.events import ConfigurationItem

        self.items = [ConfigurationItem.model_validate(i) for i in items]
        self.calls: list[tuple] = []

    def item_at(self, resource_type, resource_id, captured):
        self.calls.append((resource_type, resource_id, captured))
        found = [
            i
            for i in self.items
            if (i.resourceType, i.resourceId) == (resource_type, resource_id)
            and i.configurationItemCaptureTime <= captured
        ]
        return found[-1] if found else None


def full_item_of(event: dict, **changes) -> dict:
    """The item behind an oversized notification, as Config's history holds it."""
    summary = event["detail"]["configurationItemSummary"]
    keys = ("resourceType", "resourceId", "resourceName", "ARN", "awsAccountId", "awsRegion")
    item = {k: summary[k] for k in keys}
    item.update(
        configurationItemCaptureTime=summary["configurationItemCaptureTime"],
        configurationStateId=str(summary["configurationStateId"]),
        configurationItemStatus="OK",
        relatedEvents=[],
        tags={"Environment": "prod"},
    )
    item.update(changes)
    return item


def oversized_service(history: FakeConfigHistory) -> CorrelateService:
    svc = service()
    svc.config_history = history
    return svc


def test_an_oversized_config_item_is_judged_from_the_item_read_back_with_one_call():
    """A change only Config saw, on a resource too large for a notification: judged like any item."""
    event = load_event(OVERSIZED)
    history = FakeConfigHistory(full_item_of(event))
    svc = oversized_service(history)
    outcome = svc.handle(event)
    [verdict] = verdicts(svc)
    summary = event["detail"]["configurationItemSummary"]
    assert outcome.verdict == "NO_TICKET" and verdict.body["change"]["source"] == "config"
    assert verdict.change_id == f"config:AWS::EC2::SecurityGroup:sg-0a1b2c3d4e5f60718:{summary['configurationStateId']}"
    assert verdict.body["change"]["resources"] == [summary["ARN"]]
    assert verdict.body["change"]["request_tags"] == {"Environment": "prod"}
    assert len(history.calls) == 1  # issue 9: one read per event


def test_the_oversized_item_of_a_routed_call_is_evidence_beside_its_cloudtrail_verdict():
    """Its relatedEvents, which only the full item carries, join it to the call: a CONFIG entry."""
    call = load_event("correlate_change/01-approved-run-instances.json")
    event = load_event(OVERSIZED)
    history = FakeConfigHistory(full_item_of(event, relatedEvents=[call["detail"]["eventID"]]))
    svc = oversized_service(history)
    outcome = svc.handle(event)
    assert outcome.verdict == "NOT_A_CHANGE" and outcome.actions == ["recorded the Config item"]
    [observed] = svc.ledger.kinds("CONFIG")
    assert observed.change_id == call["detail"]["eventID"] and verdicts(svc) == []
    summary = event["detail"]["configurationItemSummary"]
    assert observed.entry == f"CONFIG#AWS::EC2::SecurityGroup#sg-0a1b2c3d4e5f60718#{summary['configurationStateId']}"


def test_an_oversized_item_the_history_does_not_hold_is_rejected_not_judged_from_its_summary():
    """The summary has no relatedEvents: judging it could give a call a second verdict. Config records
    an item before it notifies, so an item missing from the history (or an older one in its place) is
    bad input, dead-lettered with a typed error."""
    from changeguard.domain.errors import InvalidEventError

    event = load_event(OVERSIZED)
    older = full_item_of(event, configurationStateId="1", configurationItemCaptureTime="2026-11-20T10:00:00Z")
    for history in (FakeConfigHistory(), FakeConfigHistory(older)):
        svc = oversized_service(history)
        with pytest.raises(InvalidEventError, match="Config's history has no item 1"):
            svc.handle(event)
        assert svc.ledger.kinds("VERDICT") == [] and svc.ledger.kinds("CONFIG") == []


def test_an_oversized_notification_without_its_summary_is_bad_input_with_no_read():
    from changeguard.domain.errors import InvalidEventError

    event = load_event(OVERSIZED)
    del event["detail"]["configurationItemSummary"]
    history = FakeConfigHistory()
    with pytest.raises(InvalidEventError):
        oversized_service(history).handle(event)
    for field, value in (("resourceType", "not a type"), ("configurationStateId", None)):
        event = load_event(OVERSIZED)
        event["detail"]["configurationItemSummary"][field] = value
        with pytest.raises(InvalidEventError):
            oversized_service(history).handle(event)
    assert history.calls == []


def test_a_config_that_does_not_answer_for_an_oversized_item_is_retried():
    """Not bad input: the invocation fails, and Lambda's retries then the failure destination keep it."""
    from changeguard.domain.errors import ConfigItemUnavailableError, InvalidEventError

    class Down:
        def item_at(self, *args):
            raise ConfigItemUnavailableError("config:GetResourceConfigHistory refused (ThrottlingException)")

    svc = service()
    svc.config_history = Down()
    with pytest.raises(ConfigItemUnavailableError) as exc:
        svc.handle(load_event(OVERSIZED))
    assert not isinstance(exc.value, InvalidEventError) and svc.ledger.kinds("VERDICT") == []


# -- items that record an evaluation or an inventory, not a change ----------------------------------
def compliance_item(resource_type: str) -> dict:
    """A Config item of ``resource_type`` as Config records a rule's result: no call behind it."""
    event = load_event("correlate_change/10-config-item-change.json")
    target = "AWS::S3::Bucket/acme-reports-prod"
    arn = f"arn:aws:config:us-east-1:123456789012:resource-compliance/{target}"
    event["resources"] = [arn]
    event["detail"]["configurationItemDiff"] = {
        "changedProperties": {
            "Configuration.ComplianceType": {
                "previousValue": "COMPLIANT",
                "updatedValue": "NON_COMPLIANT",
                "changeType": "UPDATE",
            }
        },
        "changeType": "UPDATE",
    }
    event["detail"]["configurationItem"].update(
        relatedEvents=[], resourceType=resource_type, resourceId=target, resourceName=None, ARN=arn, tags={}
    )
    return event


@pytest.mark.parametrize("resource_type", sorted(NOT_CHANGE_RESOURCE_TYPES))
def test_an_item_recording_an_evaluation_or_an_inventory_is_not_a_change(resource_type):
    """With all types recorded, every compliance flip of every Config rule is such an item, with no
    relatedEvents: judged, each was a NO_TICKET verdict, a high alert and an "unauthorized change"."""
    svc = service()
    outcome = svc.handle(compliance_item(resource_type))
    assert outcome.verdict == "NOT_A_CHANGE" and not outcome.alert_ids
    assert svc.ledger.kinds("VERDICT") == [] and svc.ledger.kinds("ALERT") == []


@pytest.mark.parametrize("resource_type", sorted(NOT_CHANGE_RESOURCE_TYPES))
def test_an_oversized_evaluation_is_not_read_back_nor_judged(resource_type):
    """A conformance pack's result lists every rule of the pack, and can be too large for a notification."""
    event = load_event(OVERSIZED)
    event["detail"]["configurationItemSummary"].update(resourceType=resource_type, resourceId="conformance-pack-1")
    history = FakeConfigHistory()
    svc = oversized_service(history)
    assert svc.handle(event).verdict == "NOT_A_CHANGE"
    assert history.calls == [] and svc.ledger.kinds("VERDICT") == []


def test_a_change_of_a_config_rule_itself_is_still_judged():
    """Only the evaluation records are dropped: a change to a Config rule (AWS::Config::ConfigRule) is a change."""
    svc = service()
    assert svc.handle(compliance_item("AWS::Config::ConfigRule")).verdict == "NO_TICKET"
    assert len(svc.ledger.kinds("VERDICT")) == 1


# -- items of types the recorder does not record: neither their discovery nor their deletion --------
def not_recorded_item(status: str) -> dict:
    """An ENI's item with the recorder excluding AWS::EC2::NetworkInterface: no configuration, no call."""
    event = load_event("correlate_change/10-config-item-change.json")
    arn = "arn:aws:ec2:us-east-1:123456789012:network-interface/eni-0abc1234def567890"
    event["resources"] = [arn]
    event["detail"]["configurationItemDiff"] = None
    event["detail"]["configurationItem"].update(
        relatedEvents=[],
        resourceType="AWS::EC2::NetworkInterface",
        resourceId="eni-0abc1234def567890",
        resourceName=None,
        ARN=arn,
        configurationItemStatus=status,
        tags={},
        configuration=None,
    )
    return event


@pytest.mark.parametrize("status", sorted(NOT_RECORDED_STATUSES))
def test_an_item_of_a_type_not_recorded_is_not_a_change_created_or_deleted(status):
    """A deletion was judged (NO_TICKET, an alert, no actor) while the creation was skipped."""
    svc = service()
    outcome = svc.handle(not_recorded_item(status))
    assert outcome.verdict == "NOT_A_CHANGE" and not outcome.alert_ids
    assert svc.ledger.kinds("VERDICT") == [] and svc.ledger.kinds("ALERT") == []


@pytest.mark.parametrize("status", sorted(NOT_RECORDED_STATUSES))
def test_an_oversized_summary_of_a_type_not_recorded_is_not_read_back(status):
    """The history holds no item of a type not recorded: the read found nothing and dead-lettered it."""
    event = load_event(OVERSIZED)
    event["detail"]["configurationItemSummary"]["configurationItemStatus"] = status
    history = FakeConfigHistory()
    svc = oversized_service(history)
    assert svc.handle(event).verdict == "NOT_A_CHANGE"
    assert history.calls == [] and svc.ledger.kinds("VERDICT") == []


def test_a_recorded_deletion_is_still_judged():
    svc = service()
    assert svc.handle(not_recorded_item("ResourceDeleted")).verdict == "NO_TICKET"
    assert len(svc.ledger.kinds("VERDICT")) == 1
