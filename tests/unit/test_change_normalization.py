"""Normalizing CloudTrail records: actors, resources, request tags, read-only and failed calls."""

from __future__ import annotations

import pytest
from changeguard.domain.change import ActorKind, canonical_action, change_from_cloudtrail, request_tags
from changeguard.models.events import CloudTrailEvent
from sample_events import load_event


def change_of(name: str):
    event = CloudTrailEvent.model_validate(load_event(f"correlate_change/{name}"))
    return change_from_cloudtrail(event.detail, event.account, event.region)


def test_sso_user_is_a_human_sso_actor_with_the_user_name():
    change = change_of("01-approved-run-instances.json")
    assert change.actor.kind is ActorKind.SSO
    assert change.actor.user_name == "alice@example.com"
    assert change.actor.automation is False
    assert change.actor.session_issuer_arn.endswith("AWSReservedSSO_AdministratorAccess_a1b2c3d4e5f6a7b8")


def test_run_instances_resources_and_request_tags():
    change = change_of("01-approved-run-instances.json")
    assert change.resources == ("arn:aws:ec2:us-east-1:123456789012:instance/i-0a1b2c3d4e5f60718",)
    assert change.request_tags["ChangeTicket"] == "CHG-1001"
    assert change.service == "ec2" and change.action == "RunInstances"


def test_console_session_is_marked_console():
    change = change_of("02-console-no-ticket.json")
    assert change.actor.console is True
    assert change.resources == ("arn:aws:s3:::acme-reports-prod",)


def test_versioned_event_name_is_canonical():
    change = change_of("03-unapproved-ticket.json")
    assert change.event_name == "UpdateFunctionCode20150331v2"
    assert change.action == "UpdateFunctionCode"
    assert change.resources == ("arn:aws:lambda:us-east-1:123456789012:function:checkout-api",)
    assert change.actor.source_identity == "erin@example.com"
    assert change.actor.session_name == "CHG-1002"


def test_root_has_no_issuer_and_is_human():
    change = change_of("07-root-stop-logging.json")
    assert change.actor.kind is ActorKind.ROOT
    assert change.actor.session_issuer_arn is None
    assert change.actor.automation is False


def test_old_schema_without_read_only_is_a_write_and_iam_user_is_recognized():
    change = change_of("08-iam-user-old-schema.json")
    assert change.read_only is False and change.is_change
    assert change.actor.kind is ActorKind.IAM_USER and change.actor.user_name == "ci-legacy"
    assert change.resources == ("arn:aws:iam::123456789012:user/temp-contractor",)


def federated_bob() -> dict:
    """A call with GetFederationToken credentials: bob's token, asked for by the broker IAM user."""
    event = load_event("correlate_change/08-iam-user-old-schema.json")
    event["detail"]["userIdentity"] = {
        "type": "FederatedUser",
        "principalId": "123456789012:bob",
        "arn": "arn:aws:sts::123456789012:federated-user/bob",
        "accountId": "123456789012",
        "accessKeyId": "ASIAEXAMPLEFEDERATED",
        "sessionContext": {
            "sessionIssuer": {
                "type": "IAMUser",
                "principalId": "AIDAEXAMPLEBROKER",
                "arn": "arn:aws:iam::123456789012:user/token-broker",
                "accountId": "123456789012",
                "userName": "token-broker",
            },
            "attributes": {"creationDate": "2026-11-21T16:00:00Z", "mfaAuthenticated": "false"},
        },
    }
    return event


def test_a_federated_user_is_the_person_the_token_was_issued_for_not_its_broker():
    parsed = CloudTrailEvent.model_validate(federated_bob())
    actor = change_from_cloudtrail(parsed.detail, parsed.account, parsed.region).actor
    assert actor.kind is ActorKind.FEDERATED and actor.user_name == "bob"
    assert actor.session_issuer_arn == "arn:aws:iam::123456789012:user/token-broker"
    assert actor.display == "bob via arn:aws:iam::123456789012:user/token-broker"


def test_a_federated_user_without_an_arn_is_named_by_its_principal_id():
    event = federated_bob()
    del event["detail"]["userIdentity"]["arn"]
    parsed = CloudTrailEvent.model_validate(event)
    assert change_from_cloudtrail(parsed.detail, parsed.account, parsed.region).actor.user_name == "bob"


def test_invoked_by_cloudformation_is_automation_and_reads_x_amz_tagging():
    change = change_of("09-invoked-by-cloudformation.json")
    assert change.actor.invoked_by == "cloudformation.amazonaws.com"
    assert change.actor.automation is True
    assert change.request_tags == {"aws:cloudformation:stack-name": "checkout-service"}


def test_old_records_infer_read_only_from_the_event_name():
    event = load_event("correlate_change/08-iam-user-old-schema.json")
    event["detail"]["eventName"] = "ListUsers"
    parsed = CloudTrailEvent.model_validate(event)
    change = change_from_cloudtrail(parsed.detail, parsed.account, parsed.region)
    assert change.read_only is True and not change.is_change


def test_failed_calls_are_not_changes():
    event = load_event("correlate_change/01-approved-run-instances.json")
    event["detail"]["errorCode"] = "Client.UnauthorizedOperation"
    parsed = CloudTrailEvent.model_validate(event)
    assert not change_from_cloudtrail(parsed.detail, parsed.account, parsed.region).is_change


@pytest.mark.parametrize(
    ("category", "management"),
    [("Data", False), ("NetworkActivity", False), ("Data", None), (None, False), (None, "false")],
)
def test_data_and_network_activity_events_are_not_changes(category, management):
    """A trail with data events sends object-level calls (S3 PutObject, Lambda Invoke...) to EventBridge."""
    event = load_event("correlate_change/02-console-no-ticket.json")
    detail = event["detail"]
    detail["eventName"] = "PutObject"
    for key, value in (("eventCategory", category), ("managementEvent", management)):
        if value is None:
            detail.pop(key, None)
        else:
            detail[key] = value
    parsed = CloudTrailEvent.model_validate(event)
    change = change_from_cloudtrail(parsed.detail, parsed.account, parsed.region)
    assert change.data_event and not change.is_change


def test_management_events_and_records_older_than_event_categories_are_changes():
    assert change_of("02-console-no-ticket.json").is_change  # eventCategory Management
    change = change_of("08-iam-user-old-schema.json")  # neither eventCategory nor managementEvent
    assert not change.data_event and change.is_change


def test_unknown_extra_keys_and_json_string_parameters_are_tolerated():
    event = load_event("correlate_change/03-unapproved-ticket.json")
    event["detail"]["brandNewField"] = {"x": 1}
    event["detail"]["requestParameters"] = '{"functionName": "checkout-api"}'
    parsed = CloudTrailEvent.model_validate(event)
    change = change_from_cloudtrail(parsed.detail, parsed.account, parsed.region)
    assert "arn:aws:lambda:us-east-1:123456789012:function:checkout-api" in change.resources


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CreateFunction20150331", "CreateFunction"),
        ("UpdateFunctionCode20150331v2", "UpdateFunctionCode"),
        ("PutFunctionConcurrency20171031", "PutFunctionConcurrency"),
        ("RunInstances", "RunInstances"),
    ],
)
def test_canonical_action(name, expected):
    assert canonical_action(name) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"tagSpecificationSet": {"items": [{"resourceType": "instance", "tags": [{"key": "A", "value": "1"}]}]}},
            {"A": "1"},
        ),
        ({"tags": {"ChangeTicket": "CHG-1"}}, {"ChangeTicket": "CHG-1"}),  # Lambda
        ({"tags": [{"key": "Owner", "value": "x"}]}, {"Owner": "x"}),  # IAM
        ({"Tagging": {"TagSet": {"Tag": [{"Key": "K", "Value": "V"}]}}}, {"K": "V"}),  # S3 PutBucketTagging
        ({"Tagging": {"TagSet": {"Tag": {"Key": "K", "Value": "V"}}}}, {"K": "V"}),  # single tag as object
        ({"tagSet": {"items": [{"key": "Env", "value": "prod"}]}}, {"Env": "prod"}),  # EC2 CreateTags
        ({"x-amz-tagging": "a=1&b=2"}, {"a": "1", "b": "2"}),
        ({"tags": "not-a-structure"}, {}),
        (None, {}),
    ],
)
def test_request_tags_shapes(params, expected):
    assert request_tags(params) == expected
