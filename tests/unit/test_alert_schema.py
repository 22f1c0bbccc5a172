"""The one alert schema: a short subject, a body a person can act on, the full JSON, Chatbot's format."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from changeguard.adapters.sns import FILTER_ATTRIBUTES, SnsAlertPublisher, message_attributes
from changeguard.domain.alerts import SUBJECT_MAX, Alert
from changeguard.domain.change import Actor, ActorKind, Change
from changeguard.domain.verdicts import Judgement, Reason, Severity, Verdict
from changeguard.services.correlate import verdict_alert

AT = datetime(2026, 11, 21, 9, 42, 17, tzinfo=UTC)
BUCKET = "arn:aws:s3:::acme-reports-prod"
DAVE = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_PowerUser_0f9e/dave@example.com"


def alert(**kw) -> Alert:
    base = dict(
        alert_id=Alert.make_id("evt-2", "quarantine_resource", "quarantine"),
        kind="quarantine",
        function="quarantine_resource",
        severity=Severity.HIGH,
        verdict="NO_TICKET",
        subject="Quarantined s3 bucket acme-reports-prod: changed without a ticket by dave",
        summary="dave@example.com changed the bucket policy of acme-reports-prod in the console.",
        change_id="evt-2",
        event_time=AT,
        account="123456789012",
        region="us-east-1",
        resource_type="s3:bucket",
        resources=(BUCKET,),
        actor=DAVE,
        ticket_id=None,
        reasons=("no change ticket reference found",),
        actions=("blocked public access on acme-reports-prod", "recorded the quarantine in the ledger"),
        remediation="Raise a change ticket and tag the bucket ChangeTicket=<id>.",
        release="changeguard release evt-2 (or tag the bucket with an approved ticket)",
    )
    base.update(kw)
    return Alert(**base)


def test_the_body_says_what_who_when_ticket_verdict_why_what_was_done_and_how_to_fix_or_release():
    text = alert(ticket_id="CHG-1009").body_text()
    assert f"What changed : {BUCKET} (s3:bucket)" in text
    assert f"Who          : {DAVE}" in text
    assert "When         : 2026-11-21 09:42:17 UTC" in text
    assert "Where        : account 123456789012, region us-east-1" in text
    assert "Ticket       : CHG-1009" in text
    assert "Verdict      : NO_TICKET (severity high)" in text
    assert "Why:\n  - no change ticket reference found" in text
    assert "What ChangeGuard did:\n  - blocked public access on acme-reports-prod\n  - recorded the quarantine" in text
    assert "How to fix: Raise a change ticket" in text
    assert "How to release: changeguard release evt-2" in text
    assert "Change id: evt-2" in text and "Alert id: evt-2/quarantine_resource/quarantine" in text
    assert text.startswith("[HIGH] Quarantined s3 bucket")
    # Plain text, not the JSON (that is what the Cloud Custodian-style base64 blobs get wrong).
    assert '"alert_id"' not in text
    with pytest.raises(ValueError):
        json.loads(text)


def test_without_a_ticket_or_a_fix_the_body_says_so():
    text = alert(ticket_id=None, remediation=None, release=None, actions=()).body_text()
    assert "Ticket       : none" in text
    assert "How to fix: no action needed" in text and "How to release" not in text
    assert "  - recorded it" in text


@pytest.mark.parametrize(
    "subject",
    [
        "x" * 500,
        "NO_TICKET: iam:AttachRolePolicy on " + "very-long-role-name-" * 10,
        "line one\nline two\r\n\tand a tab",
        "Änderung ohne Ticket: s3 Bucket « acme » by José 🚨",
    ],
)
def test_the_subject_is_at_most_100_printable_ascii_characters_on_one_line(subject):
    fitted = alert(subject=subject).subject
    assert 0 < len(fitted) <= SUBJECT_MAX
    assert all(32 <= ord(c) < 127 for c in fitted)
    if len(" ".join(subject.split())) > SUBJECT_MAX:
        assert fitted.endswith("...")


def test_every_verdict_alert_fits_the_schema():
    actor = Actor(
        arn=DAVE, kind=ActorKind.SSO, session_name="dave@example.com", user_name="dave@example.com", console=True
    )
    change = Change(
        change_id="evt-2",
        event_time=AT,
        account="123456789012",
        region="us-east-1",
        service="s3",
        action="PutBucketPolicy",
        event_name="PutBucketPolicy",
        resources=(BUCKET,),
        actor=actor,
    )
    for verdict in Verdict:
        judgement = Judgement(
            verdict=verdict, reasons=(Reason(verdict=verdict, detail=f"because {verdict}"),), severity=Severity.HIGH
        )
        made = verdict_alert(change, judgement, "correlate_change")
        assert len(made.subject) <= SUBJECT_MAX
        text = made.body_text()
        for needle in (
            "What changed",
            "Who",
            "When",
            "Ticket",
            f"Verdict      : {verdict.value}",
            "Why:",
            "What ChangeGuard did:",
            "How to fix:",
        ):
            assert needle in text, (verdict, needle)


def test_json_round_trips_and_carries_the_version():
    made = alert()
    data = json.loads(made.to_json())
    assert data["schema_version"] == "1"
    assert Alert.model_validate(data) == made
    with pytest.raises(ValueError):
        Alert.model_validate(data | {"unexpected": 1})


def test_one_alert_per_change_function_and_kind():
    ids = {
        Alert.make_id("evt-1", "correlate_change", "verdict"),
        Alert.make_id("evt-1", "correlate_change", "verdict"),
        Alert.make_id("evt-1", "quarantine_resource", "quarantine"),
        Alert.make_id("evt-1", "correlate_change", "degraded-1"),
    }
    assert len(ids) == 3


def test_the_chatbot_format_follows_the_custom_notification_schema():
    made = alert()
    payload = json.loads(made.chatbot_payload())
    assert payload["version"] == "1.0" and payload["source"] == "custom" and payload["id"] == made.alert_id
    content, metadata = payload["content"], payload["metadata"]
    assert content["textType"] == "client-markdown"
    assert made.subject in content["title"] and "HIGH" in content["title"]
    assert "What changed" in content["description"] and len(content["description"]) <= 3010
    assert content["nextSteps"] == [f"Fix: {made.remediation}", f"Release: {made.release}"]
    assert metadata["threadId"] == "evt-2" and metadata["eventType"] == "quarantine"
    assert metadata["relatedResources"] == [BUCKET]
    # additionalContext values must be strings; the full alert travels as JSON text.
    assert all(isinstance(v, str) for v in metadata["additionalContext"].values())
    assert Alert.from_chatbot(payload) == made


def test_message_attributes_are_what_filter_policies_match():
    attrs = message_attributes(alert(verdict=None, resource_type=None))
    assert set(FILTER_ATTRIBUTES) <= set(attrs)
    assert {k: v["StringValue"] for k, v in attrs.items()} == {
        "severity": "high",
        "verdict": "NONE",
        "account": "123456789012",
        "region": "us-east-1",
        "resource_type": "unknown",
        "function": "quarantine_resource",
        "kind": "quarantine",
        "dedupe_id": "evt-2/quarantine_resource/quarantine",
        "schema_version": "1",
    }
    assert all(v["DataType"] == "String" and v["StringValue"] for v in attrs.values())


class RecordingSns:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def publish(self, **kwargs):
        self.calls.append(kwargs)
        return {"MessageId": "m-1"}


def delivered(message: dict[str, str], protocol: str) -> str:
    """What SNS sends a ``protocol`` subscriber of a ``MessageStructure=json`` message: the protocol's
    own key, else ``default`` (SNS Publish, MessageStructure)."""
    return message.get(protocol, message["default"])


@pytest.mark.parametrize("chatbot", [False, True])
def test_one_publish_people_get_the_text_machines_the_json(chatbot):
    sns = RecordingSns()
    made = alert()
    SnsAlertPublisher("arn:aws:sns:us-east-1:123456789012:alerts", chatbot_format=chatbot, sns=sns).publish(made)
    (call,) = sns.calls
    assert call["MessageStructure"] == "json" and call["Subject"] == made.subject
    message = json.loads(call["Message"])
    assert delivered(message, "email") == made.body_text()
    assert json.loads(delivered(message, "email-json")) == json.loads(made.to_json())
    machine = json.loads(delivered(message, "sqs"))
    assert (Alert.from_chatbot(machine) if chatbot else Alert.model_validate(machine)) == made
    renderings = {delivered(message, p) for p in ("default", "sqs", "lambda", "http", "https")}
    assert renderings == {message["default"]}
    # Each rendering is sent once: a key equal to ``default`` would only make the message larger.
    assert all(v != message["default"] for k, v in message.items() if k != "default")


@pytest.mark.parametrize("chatbot", [False, True])
def test_an_alert_about_thousands_of_resources_still_fits_one_sns_message(chatbot):
    sns = RecordingSns()
    many = tuple(f"arn:aws:ec2:us-east-1:123456789012:instance/i-{n:017x}" for n in range(3000))
    made = alert(resources=many, reasons=tuple(f"reason {n}" for n in range(400)))
    SnsAlertPublisher("arn:aws:sns:us-east-1:123456789012:alerts", chatbot_format=chatbot, sns=sns).publish(made)
    (call,) = sns.calls
    attributes = sum(len(k) + len(v["DataType"]) + len(v["StringValue"]) for k, v in call["MessageAttributes"].items())
    assert len(call["Message"].encode()) + attributes <= 262_144  # SNS's limit, attributes included
    message = json.loads(call["Message"])
    machine = json.loads(delivered(message, "sqs"))
    sent = Alert.from_chatbot(machine) if chatbot else Alert.model_validate(machine)
    assert sent.alert_id == made.alert_id and sent.subject == made.subject and sent.severity == made.severity
    kept = sent.resources[:-1]
    assert 0 < len(kept) < len(many) and kept == many[: len(kept)]
    assert sent.resources[-1] == f"... and {len(many) - len(kept)} more resources (the ledger has them all)"
    assert sent.details["resources_total"] == 3000
    assert "... and" in delivered(message, "email") and many[0] in delivered(message, "email")


def test_an_alert_that_fits_is_sent_whole():
    sns = RecordingSns()
    many = tuple(f"arn:aws:s3:::bucket-{n}" for n in range(200))
    made = alert(resources=many)
    SnsAlertPublisher("arn:aws:sns:us-east-1:123456789012:alerts", sns=sns).publish(made)
    (call,) = sns.calls
    assert Alert.model_validate_json(json.loads(call["Message"])["default"]) == made
