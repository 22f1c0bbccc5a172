"""Wiring from environment variables (set by template.yaml) and tunable policy from Parameter Store."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from changeguard.domain.errors import ConfigurationError
from changeguard.domain.policy import Policy

POLICY_MAX_AGE_SECONDS = 60


class Wiring(BaseModel):
    """What the template wires in with ``!Ref``/``!GetAtt``. Read once, when the service is built."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    function_name: str
    ledger_table_name: str
    parameter_path: str
    # issue 9: shard counts of the ledger's by-day index, the one writers use first (domain.ledger.DayShards).
    ledger_day_shards: str = "16"
    suite_role_prefix: str = ""
    ticket_table_name: str | None = None
    ticket_source: Literal["dynamodb", "jira", "servicenow"] = "dynamodb"
    ticket_base_url: str | None = None
    ticket_secret_arn: str | None = None
    # JSON: field ids and type names of the Jira/ServiceNow ticket source (adapters/jira.py, servicenow.py).
    ticket_source_options: str | None = None
    alert_topic_arn: str | None = None
    alert_format: Literal["standard", "chatbot"] = "standard"
    idempotency_table_name: str | None = None
    # The stack's own name (issue 6: quarantine never acts on the stack's own resources).
    stack_name: str | None = None
    environment: Literal["dev", "staging", "prod"] = "dev"
    # -- hardening (issue 8) -------------------------------------------------------------------
    # Comma-separated name prefixes of the suite's resources (self-protection: domain/self_protection.py).
    suite_resource_prefixes: tuple[str, ...] = ()
    # Comma-separated CloudTrail event sources the correlator's rule passes (the reconciliation sweep;
    # the correlator: Config items of those calls are not judged, their CloudTrail records are).
    correlated_event_sources: tuple[str, ...] = ()
    # The parameter the heartbeat writes as its canary (domain/heartbeat.py).
    heartbeat_parameter_name: str | None = None
    # Comma-separated ``<label>:<rule name>:<target ARN>`` of the rules that carry changes, which the
    # heartbeat reads every tick (domain/heartbeat.py: the canary never takes them).
    heartbeat_watched_rules: tuple[str, ...] = ()
    # -- cross-account acting roles (issue 9) ------------------------------------------------
    # The member-account role this function assumes to act where an event came from (adapters/
    # accounts.py); unset: a single-account deployment, which acts in no other account.
    acting_role_name: str | None = None
    # The function's own region: Lambda sets AWS_REGION (where a calendar named plainly is read).
    aws_region: str | None = None
    # The member roles' sts:ExternalId, when the member stacks set one.
    acting_external_id: str | None = None
    # Comma-separated member accounts whose marked resources the quarantine sweep also visits.
    member_account_ids: tuple[str, ...] = ()
    # Comma-separated other regions whose marked resources the quarantine sweep also visits (each
    # account's, this one's included): where member stacks forward events from.
    sweep_regions: tuple[str, ...] = ()
    # Account-regions whose CloudTrail event history the reconciliation reads at once (LookupEvents
    # allows 2 requests a second in each): the README's sizing says when to raise it.
    reconcile_readers: int = Field(default=8, ge=1, le=32)

    # The lists above arrive comma-separated, as the template's parameters hold them.
    _lists = field_validator(
        "suite_resource_prefixes",
        "correlated_event_sources",
        "heartbeat_watched_rules",
        "member_account_ids",
        "sweep_regions",
        mode="before",
    )(lambda value: tuple(p.strip() for p in value.split(",") if p.strip()) if isinstance(value, str) else value)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Wiring:
        source = os.environ if env is None else env
        names = {name: name.upper() for name in cls.model_fields}
        names["function_name"] = "CHANGEGUARD_FUNCTION"
        data = {field: source[env] for field, env in names.items() if source.get(env) not in (None, "")}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigurationError(f"function wiring is incomplete: {exc}") from exc


def load_policy(parameter_path: str) -> Policy:
    """Tunable policy from Parameter Store (one GetParametersByPath, cached while warm).

    Powertools' SSM provider gets the suite's shared client: left alone it builds a second boto3
    session of its own, which loads botocore's data files again on every cold start (issue 9).
    """
    from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
    from aws_lambda_powertools.utilities.parameters.ssm import SSMProvider, get_parameters

    if "ssm" not in DEFAULT_PROVIDERS:
        from changeguard.adapters.clients import client

        DEFAULT_PROVIDERS["ssm"] = SSMProvider(boto3_client=client("ssm"))
    values = get_parameters(parameter_path, max_age=POLICY_MAX_AGE_SECONDS)
    return Policy.from_parameters({str(k): str(v) for k, v in values.items()})
