"""CodePipeline: read a pipeline execution and stop it (abandoning in-progress actions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from changeguard.adapters.clients import acting_client
from changeguard.domain.calendar import PipelineFacts, StopAnswer

if TYPE_CHECKING:
    from changeguard.adapters.accounts import AccountClients

REASON_MAX = 200  # StopPipelineExecution rejects longer reasons


class CodePipelineExecutions:
    def __init__(self, codepipeline: Any | None = None, accounts: AccountClients | None = None) -> None:
        self._codepipeline = codepipeline
        # issue 9: without an injected client, calls go to the account the service is acting in.
        self._accounts = accounts

    @property
    def codepipeline(self) -> Any:
        return self._codepipeline or acting_client("codepipeline", self._accounts)

    def get(self, pipeline: str, execution_id: str) -> PipelineFacts | None:
        """The execution as it is now (``GetPipelineExecution``), or None when it does not exist."""
        cp = self.codepipeline
        try:
            found = cp.get_pipeline_execution(pipelineName=pipeline, pipelineExecutionId=execution_id)
        except (cp.exceptions.PipelineNotFoundException, cp.exceptions.PipelineExecutionNotFoundException):
            return None
        info = found["pipelineExecution"]
        trigger = info.get("trigger") or {}
        variables = {
            str(v.get("name")): str(v.get("resolvedValue", "")) for v in info.get("variables") or [] if v.get("name")
        }
        summaries = tuple(
            str(r["revisionSummary"]) for r in info.get("artifactRevisions") or [] if r.get("revisionSummary")
        )
        return PipelineFacts(
            pipeline=pipeline,
            execution_id=execution_id,
            status=str(info.get("status") or "Unknown"),
            trigger_type=trigger.get("triggerType"),
            trigger_detail=trigger.get("triggerDetail"),
            execution_type=info.get("executionType"),
            variables=variables,
            revision_summaries=summaries,
        )

    def stop(self, pipeline: str, execution_id: str, reason: str) -> StopAnswer:
        """``StopPipelineExecution`` with ``abandon``; an execution no longer running counts as done."""
        cp = self.codepipeline
        try:
            cp.stop_pipeline_execution(
                pipelineName=pipeline,
                pipelineExecutionId=execution_id,
                abandon=True,
                reason=reason[:REASON_MAX],
            )
        except (cp.exceptions.PipelineExecutionNotStoppableException, cp.exceptions.DuplicatedStopRequestException):
            return StopAnswer(text="already stopped or finished: nothing to stop", already_completed=True)
        return StopAnswer(text="StopPipelineExecution (abandon) accepted")
