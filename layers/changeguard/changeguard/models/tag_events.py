"""What tag enforcement receives: AWS Config rule verdicts, and the sweep's "Scheduled Event"."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from changeguard.models.cloudtrail import OptionalRegion
from changeguard.models.envelope import Envelope

CONFIG_COMPLIANCE_CHANGE = "Config Rules Compliance Change"


class _AwsOwned(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore", populate_by_name=True)


class EvaluationResultQualifier(_AwsOwned):
    configRuleName: str | None = None
    resourceType: str | None = None
    resourceId: str | None = None


class EvaluationResultIdentifier(_AwsOwned):
    evaluationResultQualifier: EvaluationResultQualifier | None = None
    orderingTimestamp: datetime | None = None


class EvaluationResult(_AwsOwned):
    evaluationResultIdentifier: EvaluationResultIdentifier | None = None
    complianceType: str | None = None
    resultRecordedTime: datetime | None = None
    configRuleInvokedTime: datetime | None = None
    annotation: str | None = None


class ComplianceChangeDetail(_AwsOwned):
    resourceId: str
    resourceType: str
    awsRegion: OptionalRegion = None
    awsAccountId: str | None = None
    configRuleName: str | None = None

    configRuleARN: str | None = None
    messageType: str | None = None
    newEvaluationResult: EvaluationResult | None = None
    oldEvaluationResult: EvaluationResult | None = None
    notificationCreationTime: datetime | None = None
    recordVersion: str | None = None

    @property
    def compliance(self) -> str:
        return (self.newEvaluationResult.complianceType if self.newEvaluationResult else None) or "UNKNOWN"


class ComplianceChangeEvent(Envelope):
    detail: ComplianceChangeDetail  # type: ignore[assignment]
