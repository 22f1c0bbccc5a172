"""What reaches the deployment guard: CodeDeploy state changes and CloudWatch alarms in three shapes.

An alarm reaches Lambda as

* an EventBridge "CloudWatch Alarm State Change" (``detail.state.value``, ``detail.previousState``);
* the alarm's own Lambda action: ``{"source": "aws.cloudwatch", "alarmArn", "accountId", "time",
  "region", "alarmData": {...}}``, where ``alarmData`` has the same fields as the EventBridge
  ``detail``;
* an SNS notification: ``Records[].Sns.Message`` is the alarm as a JSON string with its own
  field names (``AlarmName``, ``NewStateValue``, ``StateChangeTime``, ``Trigger``; ``Region`` is
  the region's display name, so the region comes from ``AlarmArn``).

All three are AWS-owned: unknown fields are ignored. CloudWatch writes times as
``2023-08-04T12:36:15.490+0000``, which pydantic parses.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from changeguard.models.cloudtrail import OptionalRegion, Region
from changeguard.models.envelope import Envelope

ALARM_STATE_CHANGE = "CloudWatch Alarm State Change"
DEPLOYMENT_STATE_CHANGE = "CodeDeploy Deployment State-change Notification"
#: CloudWatch alarm names are 1 to 255 characters (PutMetricAlarm): an empty one is no alarm to read.
AlarmNameText = Annotated[str, Field(min_length=1, max_length=255)]


class _AwsOwned(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore", populate_by_name=True)


class AlarmState(_AwsOwned):
    value: str
    reason: str | None = None
    reasonData: str | None = None
    timestamp: datetime | None = None

    @field_validator("reasonData", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # Always a JSON string in AWS's payloads; tolerate an object from hand-written events.
        return json.dumps(value) if isinstance(value, dict) else value


class AlarmData(_AwsOwned):
    """``detail`` of the EventBridge event and ``alarmData`` of the Lambda action: the same fields."""

    alarmName: AlarmNameText
    state: AlarmState
    previousState: AlarmState | None = None
    configuration: dict[str, Any] | None = None


class AlarmStateChangeEvent(Envelope):
    """EventBridge "CloudWatch Alarm State Change"; ``resources[0]`` is the alarm's ARN."""

    detail: AlarmData  # type: ignore[assignment]


class AlarmActionPayload(_AwsOwned):
    """What an alarm's Lambda action sends (principal ``lambda.alarms.cloudwatch.amazonaws.com``)."""

    source: str
    alarmArn: str
    accountId: str
    time: datetime
    region: Region
    alarmData: AlarmData


class SnsAlarmMessage(_AwsOwned):
    """The alarm as CloudWatch publishes it to an SNS topic (the JSON inside ``Sns.Message``)."""

    AlarmName: AlarmNameText
    AlarmArn: str | None = None
    AlarmDescription: str | None = None
    AWSAccountId: str | None = None
    NewStateValue: str
    NewStateReason: str | None = None
    StateChangeTime: datetime
    OldStateValue: str | None = None
    Region: str | None = None
    Trigger: dict[str, Any] | None = None


class SnsMessage(_AwsOwned):
    Type: str | None = None
    MessageId: str
    TopicArn: str
    Subject: str | None = None
    Message: str
    Timestamp: datetime | None = None


class SnsRecord(_AwsOwned):
    EventSource: str | None = None
    EventSubscriptionArn: str | None = None
    Sns: SnsMessage


class SnsEvent(_AwsOwned):
    """Lambda's event for an SNS subscription (one record per message in practice)."""

    Records: list[SnsRecord] = Field(min_length=1)


class AlarmSnsEvent(SnsEvent):
    """The alarm topic's SNS event: every message must be a CloudWatch alarm."""

    @model_validator(mode="after")
    def _alarm_messages(self) -> AlarmSnsEvent:
        for record in self.Records:
            SnsAlarmMessage.model_validate_json(record.Sns.Message)
        return self


class DirectInvocation(RootModel[AlarmActionPayload | AlarmSnsEvent]):
    """What reaches the guard other than through a rule: an alarm's Lambda action or its SNS topic."""


class DeploymentStateDetail(_AwsOwned):
    deploymentId: str
    application: str
    deploymentGroup: str
    state: str
    region: OptionalRegion = None
    instanceGroupId: str | None = None


class DeploymentStateChangeEvent(Envelope):
    """EventBridge "CodeDeploy Deployment State-change Notification" (START, SUCCESS, FAILURE, STOP, READY)."""

    detail: DeploymentStateDetail  # type: ignore[assignment]
