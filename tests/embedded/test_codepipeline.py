"""CodePipeline in the embedded AWS: executions run until stopped, and StopPipelineExecution."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from changeguard_tools.embedded import EmbeddedAWS
from changeguard_tools.embedded import codepipeline_executions as embedded_pipelines
from changeguard_tools.embedded.codepipeline_executions import finish_execution


def create_pipeline(aws: EmbeddedAWS, name: str = "checkout-pipeline") -> Any:
    cp = aws.client("codepipeline")
    embedded_pipelines.create_pipeline(aws.client("iam"), cp, name, "checkout-api", "prod")
    return cp


def execution(cp: Any, name: str, execution_id: str) -> dict[str, Any]:
    found: dict[str, Any] = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution_id)[
        "pipelineExecution"
    ]
    return found


def test_a_started_execution_is_in_progress_until_it_finishes(aws: EmbeddedAWS) -> None:
    cp = create_pipeline(aws)

    execution_id = cp.start_pipeline_execution(name="checkout-pipeline")["pipelineExecutionId"]

    assert execution(cp, "checkout-pipeline", execution_id)["status"] == "InProgress"
    finish_execution(aws.account_id, "us-east-1", "checkout-pipeline", execution_id)
    assert execution(cp, "checkout-pipeline", execution_id)["status"] == "Succeeded"


def test_stop_and_abandon_stops_the_execution_with_its_reason(aws: EmbeddedAWS) -> None:
    cp = create_pipeline(aws)
    execution_id = cp.start_pipeline_execution(name="checkout-pipeline")["pipelineExecutionId"]

    answer = cp.stop_pipeline_execution(
        pipelineName="checkout-pipeline", pipelineExecutionId=execution_id, abandon=True, reason="window closed"
    )

    assert answer["pipelineExecutionId"] == execution_id
    found = execution(cp, "checkout-pipeline", execution_id)
    assert found["status"] == "Stopped"
    assert found["statusSummary"] == "window closed"
    [summary] = cp.list_pipeline_executions(pipelineName="checkout-pipeline")["pipelineExecutionSummaries"]
    assert summary["stopTrigger"] == {"reason": "window closed"}
    assert any(r["eventName"] == "StopPipelineExecution" for r in aws.trail.records())


def test_stop_and_wait_is_stopping_and_cannot_be_asked_twice(aws: EmbeddedAWS) -> None:
    cp = create_pipeline(aws)
    execution_id = cp.start_pipeline_execution(name="checkout-pipeline")["pipelineExecutionId"]

    cp.stop_pipeline_execution(pipelineName="checkout-pipeline", pipelineExecutionId=execution_id)
    with pytest.raises(ClientError) as twice:
        cp.stop_pipeline_execution(pipelineName="checkout-pipeline", pipelineExecutionId=execution_id)
    cp.stop_pipeline_execution(pipelineName="checkout-pipeline", pipelineExecutionId=execution_id, abandon=True)

    assert twice.value.response["Error"]["Code"] == "DuplicatedStopRequestException"
    assert execution(cp, "checkout-pipeline", execution_id)["status"] == "Stopped"


def test_a_finished_execution_cannot_be_stopped(aws: EmbeddedAWS) -> None:
    cp = create_pipeline(aws)
    execution_id = cp.start_pipeline_execution(name="checkout-pipeline")["pipelineExecutionId"]
    finish_execution(aws.account_id, "us-east-1", "checkout-pipeline", execution_id, "Failed")

    with pytest.raises(ClientError) as finished:
        cp.stop_pipeline_execution(pipelineName="checkout-pipeline", pipelineExecutionId=execution_id, abandon=True)

    assert finished.value.response["Error"]["Code"] == "PipelineExecutionNotStoppableException"


@pytest.mark.parametrize(
    ("pipeline", "execution_id", "code"),
    [
        ("no-such-pipeline", "3f9b6c2a-1d4e-4a5b-9c8d-7e6f5a4b3c21", "PipelineNotFoundException"),
        ("checkout-pipeline", "3f9b6c2a-1d4e-4a5b-9c8d-7e6f5a4b3c21", "PipelineExecutionNotFoundException"),
    ],
)
def test_unknown_pipelines_and_executions_are_errors(
    aws: EmbeddedAWS, pipeline: str, execution_id: str, code: str
) -> None:
    cp = create_pipeline(aws)

    with pytest.raises(ClientError) as missing:
        cp.stop_pipeline_execution(pipelineName=pipeline, pipelineExecutionId=execution_id, abandon=True)

    assert missing.value.response["Error"]["Code"] == code


def test_a_reason_longer_than_200_characters_is_rejected(aws: EmbeddedAWS) -> None:
    cp = create_pipeline(aws)
    execution_id = cp.start_pipeline_execution(name="checkout-pipeline")["pipelineExecutionId"]

    with pytest.raises(ClientError) as too_long:
        cp.stop_pipeline_execution(
            pipelineName="checkout-pipeline", pipelineExecutionId=execution_id, abandon=True, reason="x" * 201
        )

    assert too_long.value.response["Error"]["Code"] == "ValidationException"
    assert execution(cp, "checkout-pipeline", execution_id)["status"] == "InProgress"
