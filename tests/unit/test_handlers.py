"""Shared handler wrappers: poison events are dead-lettered once, tracing loads only when enabled."""

from __future__ import annotations

import sys

import pytest
from changeguard.domain.errors import InvalidEventError
from changeguard.handlers import rejects_poison, traced


def test_rejected_event_returns_a_typed_result_and_is_dead_lettered(aws, monkeypatch):
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="failures")["QueueUrl"]
    monkeypatch.setenv("FAILURE_QUEUE_URL", url)
    from changeguard.adapters import clients

    clients.reset()

    @rejects_poison("demo_fn")
    def handler(event, context):
        raise InvalidEventError("detail.eventID missing")

    result = handler({"bad": True}, None)
    assert result["rejected"] is True
    assert result["error_type"] == "InvalidEventError"
    messages = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
    assert len(messages) == 1
    assert messages[0]["MessageAttributes"]["ErrorType"]["StringValue"] == "InvalidEventError"
    assert '"bad": true' in messages[0]["Body"]
    clients.reset()


def test_other_errors_propagate_so_lambda_retries_them():
    @rejects_poison("demo_fn")
    def handler(event, context):
        raise RuntimeError("throttled")

    with pytest.raises(RuntimeError, match="throttled"):
        handler({}, None)


def test_tracer_is_not_imported_when_tracing_is_disabled(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.delitem(sys.modules, "aws_lambda_powertools.tracing.tracer", raising=False)
    calls = []

    @traced
    def handler(event, context):
        calls.append(event)
        return "ok"

    assert handler({"n": 1}, None) == "ok"
    assert calls == [{"n": 1}]
    assert "aws_lambda_powertools.tracing.tracer" not in sys.modules
