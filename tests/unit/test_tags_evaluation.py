"""Required-tag evaluation: which tags count, which values count, and what each kind of call did to them."""

from __future__ import annotations

import pytest
from changeguard.domain.change import request_tags
from changeguard.domain.policy import Policy
from changeguard.domain.tags import (
    TAG_EVENTS,
    TagEventKind,
    evaluate,
    exempt_by_tag,
    exempt_principal,
    format_time,
    judge_tags,
    parse_time,
    removed_tags,
    requested_tags,
    suite_owned,
)

POLICY = Policy()
GOOD = {"ChangeTicket": "CHG-1001", "Environment": "prod", "Owner": "payments"}


def test_every_required_tag_with_a_ticket_id_complies():
    result = evaluate(GOOD, POLICY)
    assert result.compliant and result.problems == ()


@pytest.mark.parametrize(
    ("tags", "missing", "invalid"),
    [
        ({}, ["ChangeTicket", "Environment", "Owner"], []),
        ({**GOOD, "Owner": ""}, ["Owner"], []),
        ({**GOOD, "Owner": "   "}, ["Owner"], []),  # blank counts as missing
        ({**GOOD, "ChangeTicket": "TBD"}, [], ["ChangeTicket"]),
        ({**GOOD, "ChangeTicket": "see CHG-1001"}, [], ["ChangeTicket"]),  # the whole value is the id
        ({**GOOD, "ChangeTicket": "CHG-12"}, [], ["ChangeTicket"]),  # CHG-\d{4,}
        (
            {"changeticket": "CHG-1001", "Environment": "prod", "Owner": "x"},
            ["ChangeTicket"],
            [],
        ),  # keys are case-sensitive
    ],
)
def test_missing_blank_and_invalid_values(tags, missing, invalid):
    result = evaluate(tags, POLICY)
    assert not result.compliant
    assert list(result.missing) == missing
    assert [p.key for p in result.problems if p.problem == "invalid"] == invalid
    assert len(result.reasons) == len(missing) + len(invalid)


def test_required_keys_and_ticket_pattern_come_from_the_policy():
    policy = Policy(required_tag_keys=("CostCenter",), ticket_id_pattern=r"[A-Z]+-\d+")
    assert evaluate({"CostCenter": "42"}, policy).compliant
    assert not evaluate(GOOD, policy).compliant
    jira = Policy(ticket_id_pattern=r"[A-Z]+-\d+")
    assert evaluate({**GOOD, "ChangeTicket": "OPS-7"}, jira).compliant


def test_a_create_is_judged_on_its_request_tags_first():
    # Read too early, the resource shows no tags yet; the request says it is tagged: compliant.
    result, judged = judge_tags(TagEventKind.CREATE, {}, POLICY, requested=GOOD)
    assert result.compliant and result.source == "request" and judged == GOOD


def test_a_create_missing_tags_in_its_request_is_judged_with_its_current_tags_too():
    # Terraform tags right after creating: the request lacks Owner, the resource has it by now.
    result, judged = judge_tags(
        TagEventKind.CREATE, {"Owner": "payments"}, POLICY, requested={"ChangeTicket": "CHG-1001", "Environment": "dev"}
    )
    assert result.compliant and result.source == "request+current"
    assert judged["Owner"] == "payments"
    result, _ = judge_tags(TagEventKind.CREATE, {}, POLICY, requested={"Name": "x"})
    assert not result.compliant


def test_added_tags_are_judged_with_the_current_ones():
    result, _ = judge_tags(
        TagEventKind.ADD, {"Owner": "payments"}, POLICY, requested={"ChangeTicket": "CHG-1001", "Environment": "prod"}
    )
    assert result.compliant


def test_put_bucket_tagging_replaces_every_tag():
    result, judged = judge_tags(TagEventKind.REPLACE, GOOD, POLICY, requested={"Owner": "payments"})
    assert not result.compliant and judged == {"Owner": "payments"}


def test_removed_keys_are_judged_gone_even_if_the_read_still_shows_them():
    result, judged = judge_tags(TagEventKind.REMOVE, GOOD, POLICY, removed=[("Owner", None)])
    assert not result.compliant and "Owner" not in judged


def test_a_delete_with_a_value_only_removes_a_matching_tag():
    kept, _ = judge_tags(TagEventKind.REMOVE, GOOD, POLICY, removed=[("Owner", "someone-else")])
    assert kept.compliant
    gone, _ = judge_tags(TagEventKind.REMOVE, GOOD, POLICY, removed=[("Owner", "payments")])
    assert not gone.compliant


def test_delete_bucket_tagging_removes_everything():
    result, judged = judge_tags(TagEventKind.REMOVE_ALL, GOOD, POLICY)
    assert not result.compliant and judged == {}


@pytest.mark.parametrize("kind", [TagEventKind.CHANGE, TagEventKind.CONFIG, TagEventKind.SWEEP])
def test_other_triggers_judge_the_current_tags(kind):
    assert judge_tags(kind, GOOD, POLICY, requested={})[0].compliant
    assert not judge_tags(kind, {}, POLICY, requested=GOOD)[0].compliant


def test_request_tags_in_every_shape():
    cloudtrail = {
        "tagSpecificationSet": {"items": [{"resourceType": "instance", "tags": [{"key": "Owner", "value": "a"}]}]}
    }
    sdk = {"tagSpecifications": [{"resourceType": "instance", "tags": [{"key": "Owner", "value": "b"}]}]}
    lambda_map = {"tags": {"Owner": "c"}}
    assert requested_tags(cloudtrail) == {"Owner": "a"}
    assert requested_tags(sdk) == {"Owner": "b"}
    assert requested_tags(lambda_map) == {"Owner": "c"}
    assert requested_tags(None) == {}


def test_request_tags_of_one_resource_type_leave_the_other_types_specifications_out():
    """An EC2 create can tag several resource types, one specification each: a resource's own tags are
    those of its type's specification. Without a type (the correlator's ticket lookup), all count."""
    instance = [{"key": "Name", "value": "web"}]
    volume = [{"key": "Owner", "value": "a"}]
    cloudtrail = {
        "tagSpecificationSet": {
            "items": [{"resourceType": "instance", "tags": instance}, {"resourceType": "volume", "tags": volume}]
        }
    }
    sdk = {
        "tagSpecifications": [
            {"resourceType": "instance", "tags": instance},
            {"resourceType": "volume", "tags": volume},
        ]
    }
    for parameters in (cloudtrail, sdk):
        assert requested_tags(parameters, "instance") == {"Name": "web"}
        assert requested_tags(parameters, "volume") == {"Owner": "a"}
        assert requested_tags(parameters) == {"Name": "web", "Owner": "a"}
    assert request_tags(cloudtrail, "security-group") == {}
    assert request_tags(cloudtrail) == {"Name": "web", "Owner": "a"}


def test_removed_tags_in_every_shape():
    assert removed_tags({"tagSet": {"items": [{"key": "Owner"}, {"key": "Environment", "value": "prod"}]}}) == [
        ("Owner", None),
        ("Environment", "prod"),
    ]
    assert removed_tags({"resources": ["i-1"], "tags": [{"key": "Owner"}]}) == [("Owner", None)]
    assert removed_tags({"resource": "arn:aws:lambda:...", "tagKeys": ["Owner", "Environment"]}) == [
        ("Owner", None),
        ("Environment", None),
    ]
    assert removed_tags(None) == []


def test_the_trigger_table_classifies_create_add_and_remove_calls():
    assert TAG_EVENTS["RunInstances"] is TagEventKind.CREATE
    assert TAG_EVENTS["CreateFunction20150331"] is TagEventKind.CREATE
    assert TAG_EVENTS["CreateTags"] is TagEventKind.ADD
    assert TAG_EVENTS["PutBucketTagging"] is TagEventKind.REPLACE
    assert TAG_EVENTS["UntagResource20170331v2"] is TagEventKind.REMOVE
    assert TAG_EVENTS["DeleteBucketTagging"] is TagEventKind.REMOVE_ALL


def test_the_exempt_tag_unless_it_says_false():
    assert (
        exempt_by_tag({"changeguard:exempt": "load test until Friday"})
        == "tagged changeguard:exempt=load test until Friday"
    )
    assert exempt_by_tag({"changeguard:exempt": ""}) == "tagged changeguard:exempt"
    assert exempt_by_tag({"changeguard:exempt": "false"}) is None
    assert exempt_by_tag({"changeguard:exempt": "No"}) is None
    assert exempt_by_tag({}) is None


def test_exempt_principals_match_with_wildcards():
    policy = Policy(exempt_principal_arns=("arn:aws:iam::123456789012:role/pipeline-*",))
    assert exempt_principal(["arn:aws:iam::123456789012:role/pipeline-deployer"], policy)
    assert exempt_principal(["arn:aws:iam::123456789012:role/dev"], policy) is None
    assert exempt_principal(["arn:aws:iam::123456789012:role/pipeline-deployer"], POLICY) is None


@pytest.mark.parametrize(
    ("arn", "name", "tags", "own"),
    [
        ("arn:aws:ec2:us-east-1:1:security-group/sg-1", "changeguard-isolation-vpc-1", {}, True),
        ("arn:aws:ec2:us-east-1:1:instance/i-1", None, {"changeguard:managed": "true"}, True),
        ("arn:aws:lambda:us-east-1:1:function:cg-EnforceTagsFunction-AB12", None, {}, True),
        ("arn:aws:lambda:us-east-1:1:function:anything", None, {"aws:cloudformation:stack-name": "cg"}, True),
        ("arn:aws:iam::1:role/changeguard/cg-EnforceTagsFunctionRole", None, {}, True),
        ("arn:aws:ec2:us-east-1:1:instance/i-1", None, {"changeguard:managed": "false"}, False),
        ("arn:aws:lambda:us-east-1:1:function:orders-report", None, {"aws:cloudformation:stack-name": "orders"}, False),
        ("arn:aws:s3:::cg-evidence-1a2b", "cg-evidence-1a2b", {}, True),  # named after the stack
        ("arn:aws:s3:::cgx-reports", "cgx-reports", {}, False),
    ],
)
def test_the_suites_own_resources(arn, name, tags, own):
    assert bool(suite_owned(arn, name, tags, stack_name="cg")) is own


def test_times_are_written_as_tag_safe_utc_seconds():
    moment = parse_time("2026-11-26T09:00:00Z")
    assert moment is not None and format_time(moment) == "2026-11-26T09:00:00Z"
    assert parse_time("2026-11-26T10:00:00+01:00") == moment
    assert parse_time("tomorrow") is None and parse_time(None) is None
