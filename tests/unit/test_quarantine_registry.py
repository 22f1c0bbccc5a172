"""The quarantine registry against template.yaml and the sample events.

Walks every registered class: the template must grant both functions every permission the class
declares, route every CloudTrail event the class reads ids from, and each class must find its ids
in the sample events. Adding a type (RDS, say) fails here until the template and a sample say so.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

import pytest
from changeguard.domain.tags import TAG_EVENTS
from changeguard.quarantine import REGISTRY, Registry
from changeguard.quarantine.finder import PERMISSIONS as FINDER_PERMISSIONS
from changeguard.services.tag_enforcement import ALERT_ONLY_PERMISSIONS
from changeguard_tools.template import Template
from sample_events import load_event

TEMPLATE = Template()
CTX = TEMPLATE.context()
for _logical in TEMPLATE.resources:
    CTX.refs.setdefault(_logical, f"{_logical}-physical")
    CTX.attrs.setdefault((_logical, "Arn"), f"arn:aws:test:::{_logical}")
FUNCTIONS = TEMPLATE.functions(CTX)
ENFORCE, SWEEP = "EnforceTagsFunction", "SweepQuarantineFunction"
REGISTRY_INSTANCE = Registry()


def _statements(logical_id: str) -> list[dict[str, Any]]:
    from changeguard_tools.template import resolve

    found: list[dict[str, Any]] = []
    for policy in FUNCTIONS[logical_id].policies:
        statements = resolve(policy, CTX).get("Statement", []) if isinstance(policy, dict) else []
        found += [s for s in statements if isinstance(s, dict)]
    return found


def _allowed(logical_id: str) -> set[str]:
    actions: set[str] = set()
    for statement in _statements(logical_id):
        if statement.get("Effect") == "Allow":
            value = statement.get("Action", [])
            actions.update([value] if isinstance(value, str) else value)
    return actions


def _grants(allowed: set[str], action: str) -> bool:
    return any(fnmatchcase(action, pattern) for pattern in allowed)


def test_the_registry_has_the_four_types_of_the_issue():
    assert sorted(REGISTRY) == ["ec2:instance", "ec2:security-group", "lambda:function", "s3:bucket"]


@pytest.mark.parametrize("type_name", sorted(REGISTRY))
def test_the_sweep_is_granted_every_permission_a_class_declares(type_name):
    allowed = _allowed(SWEEP)
    missing = [p for p in REGISTRY[type_name].permissions if not _grants(allowed, p)]
    assert not missing, f"{SWEEP} lacks {missing} that {type_name} calls"


@pytest.mark.parametrize("type_name", sorted(REGISTRY))
def test_enforce_tags_may_tag_and_release_but_never_contain(type_name):
    cls = REGISTRY[type_name]
    allowed = _allowed(ENFORCE)
    missing = [p for p in cls.permissions if p not in cls.containment_only and not _grants(allowed, p)]
    assert not missing, f"{ENFORCE} lacks {missing} that releasing a {type_name} needs"
    containing = [p for p in cls.containment_only if _grants(allowed, p)]
    assert not containing, f"{ENFORCE} may quarantine ({containing}): only the capped sweep may"


def test_the_sweep_may_find_marked_resources():
    assert all(_grants(_allowed(SWEEP), p) for p in FINDER_PERMISSIONS)


@pytest.mark.parametrize("function", [ENFORCE, SWEEP])
def test_no_function_is_granted_what_no_class_needs(function):
    needed = (REGISTRY_INSTANCE.permissions() if function == SWEEP else REGISTRY_INSTANCE.release_permissions()) | set(
        FINDER_PERMISSIONS
    )
    if function == ENFORCE:  # it also judges created resources no class quarantines (alert only)
        needed |= set(ALERT_ONLY_PERMISSIONS)
    suite = {
        "dynamodb:Query",
        "dynamodb:PutItem",
        "ssm:GetParametersByPath",
        "sqs:SendMessage",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    extra = _allowed(function) - needed - suite
    assert not extra, f"{function} is granted {extra}, which no quarantine class calls"


def test_every_event_a_class_reads_ids_from_reaches_enforce_tags():
    rule = next(r for r in FUNCTIONS[ENFORCE].rules if r.name == "CloudTrailTagCalls")
    routed = set(rule.pattern["detail"]["eventName"])
    sources = set(rule.pattern["detail"]["eventSource"])
    for handler in REGISTRY_INSTANCE.handlers.values():
        assert handler.event_source in sources, handler.type
        assert set(handler.id_paths) <= routed, f"{handler.type}: {set(handler.id_paths) - routed} not in the rule"
    # ... and every routed call is one the service knows what to do with.
    assert routed <= set(TAG_EVENTS)


def test_the_rule_drops_the_suites_own_calls():
    rule = next(r for r in FUNCTIONS[ENFORCE].rules if r.name == "CloudTrailTagCalls")
    issuer = rule.pattern["detail"]["userIdentity"]["$or"][0]["sessionContext"]["sessionIssuer"]["arn"][0]
    assert issuer == {"anything-but": {"prefix": "arn:aws:iam::123456789012:role/changeguard/"}}


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("01-run-instances-untagged.json", [("ec2:instance", "i-0e1f2a3b4c5d6e7f8")]),
        ("02-create-bucket.json", [("s3:bucket", "acme-scratch-exports")]),
        ("03-create-function.json", [("lambda:function", "orders-report")]),
        ("04-create-security-group.json", [("ec2:security-group", "sg-0d9e8f7a6b5c4d3e2")]),
        ("05-authorize-ingress-world.json", [("ec2:security-group", "sg-0d9e8f7a6b5c4d3e2")]),
        ("06-delete-tags.json", [("ec2:instance", "i-0e1f2a3b4c5d6e7f8")]),
        ("07-untag-function.json", [("lambda:function", "orders-report")]),
        ("08-create-tags-release.json", [("ec2:instance", "i-0e1f2a3b4c5d6e7f8")]),
        ("09-delete-bucket-tagging.json", [("s3:bucket", "acme-reports-prod")]),
        ("11-create-db-instance.json", []),  # no quarantine class: alert only
    ],
)
def test_each_class_finds_its_ids_in_the_samples(sample, expected):
    detail = load_event(f"enforce_tags/{sample}")["detail"]
    found = [(h.type, rid) for h, rid in REGISTRY_INSTANCE.targets(detail["eventSource"], detail["eventName"], detail)]
    assert found == expected


def test_tag_calls_name_instances_and_groups_apart():
    record = {"requestParameters": {"resources": ["i-1", "sg-2", "vol-3"]}}
    found = {(h.type, rid) for h, rid in REGISTRY_INSTANCE.targets("ec2.amazonaws.com", "CreateTags", record)}
    assert found == {("ec2:instance", "i-1"), ("ec2:security-group", "sg-2")}


@pytest.mark.parametrize(
    ("arn", "type_name", "resource_id"),
    [
        ("arn:aws:ec2:us-east-1:123456789012:instance/i-1", "ec2:instance", "i-1"),
        ("arn:aws:ec2:us-east-1:123456789012:security-group/sg-1", "ec2:security-group", "sg-1"),
        ("arn:aws:s3:::acme-reports", "s3:bucket", "acme-reports"),
        ("arn:aws:lambda:us-east-1:123456789012:function:orders:live", "lambda:function", "orders"),
    ],
)
def test_arns_name_their_type_and_id(arn, type_name, resource_id):
    handler = REGISTRY_INSTANCE.for_arn(arn)
    assert handler is not None and handler.type == type_name
    ref = handler.ref_from_arn(arn, "123456789012", "us-east-1")
    assert ref is not None and ref.resource_id == resource_id
    assert REGISTRY_INSTANCE.for_arn("arn:aws:s3:::acme-reports/some/object") is None
    assert REGISTRY_INSTANCE.for_arn("arn:aws:rds:us-east-1:123456789012:db:orders") is None


def test_config_resource_types_map_to_classes():
    assert REGISTRY_INSTANCE.for_config_type("AWS::EC2::Instance").type == "ec2:instance"
    assert REGISTRY_INSTANCE.for_config_type("AWS::S3::Bucket").type == "s3:bucket"
    assert REGISTRY_INSTANCE.for_config_type("AWS::RDS::DBInstance") is None


def test_the_optional_config_rule_checks_the_registered_types():
    rule = TEMPLATE.resources["RequiredTagsConfigRule"]
    assert rule["Condition"] == "DeploysRequiredTagsConfigRule"
    assert rule["Properties"]["Source"] == {"Owner": "AWS", "SourceIdentifier": "REQUIRED_TAGS"}
    assert set(rule["Properties"]["Scope"]["ComplianceResourceTypes"]) == {
        h.config_type for h in REGISTRY_INSTANCE.handlers.values()
    }
    assert CTX.conditions["DeploysRequiredTagsConfigRule"] is False  # off by default
