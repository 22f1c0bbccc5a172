"""The interfaces between domain decisions and the systems that carry them out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: importing the ports builds no models on a cold start (issue 9)
    from changeguard.domain.alerts import Alert
    from changeguard.domain.calendar import CalendarReading, DeploymentFacts, PipelineFacts, StackFacts
    from changeguard.domain.errors import CrossAccountAccessError
    from changeguard.domain.heartbeat import RuleReading, WatchedRule
    from changeguard.domain.ledger import LedgerEntry
    from changeguard.domain.tickets import Ticket
    from changeguard.models.cloudtrail import CloudTrailRecord, UnparsedTrailEvent
    from changeguard.models.events import ConfigurationItem


class Clock(Protocol):
    def now(self) -> datetime: ...


class TicketSource(Protocol):
    """A ticket system. Raises ``TicketSourceUnavailableError`` when it cannot answer."""

    name: str

    def get(self, ticket_id: str) -> Ticket | None: ...


class Ledger(Protocol):
    def append(self, entries: Sequence[LedgerEntry]) -> bool:
        """Write all entries or none. False when the first already existed (a duplicate)."""
        ...

    def entries_for(self, change_id: str) -> list[LedgerEntry]: ...

    def entries_between(
        self, change_id: str, low: str, high: str, *, newest_first: bool = False, limit: int | None = None
    ) -> list[LedgerEntry]:
        """The entries of ``change_id`` whose key is from ``low`` to ``high`` (both included), in key
        order (reversed with ``newest_first``), at most ``limit``: a read of part of a partition."""
        ...

    def entries_on(self, day: str, verdict: str | None = None) -> list[LedgerEntry]: ...


class TagReader(Protocol):
    def tags_of(self, arn: str) -> dict[str, str] | None:
        """Current tags (``{}``: none, or the resource is gone), or None when they cannot be read."""
        ...

    def stack_tags(self, stack: str) -> dict[str, str] | None:
        """A stack's tags (``{}``: none, or no such stack), or None when they cannot be read."""
        ...


class ConfigHistory(Protocol):
    def item_at(self, resource_type: str, resource_id: str, captured: datetime) -> ConfigurationItem | None:
        """The resource's configuration item captured last at or before ``captured`` (None: none recorded).

        Raises ``ConfigItemUnavailableError`` when Config does not answer."""
        ...


class AlertPublisher(Protocol):
    def publish(self, alert: Alert) -> str: ...


class CalendarReader(Protocol):
    def is_closed(self, at: datetime) -> bool | None:
        """True when CLOSED at ``at``, False when OPEN, None when no calendar is configured."""
        ...


# -- change-calendar gate (issue 4) ---------------------------------------------------------------
class CalendarGateReader(Protocol):
    """The combined state of the configured change calendars at a moment; UNKNOWN when unreadable."""

    names: tuple[str, ...]

    def reading_at(self, at: datetime) -> CalendarReading: ...


class DeploymentControl(Protocol):
    """CodeDeploy as the gate uses it (``adapters.codedeploy.CodeDeployDeployments``)."""

    def get(self, deployment_id: str) -> DeploymentFacts | None: ...

    def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> StopOutcome: ...

    def put_hook_status(self, deployment_id: str, execution_id: str, status: str) -> bool: ...


class StopOutcome(Protocol):
    """A stop or cancel's answer; ``already_completed``: the target had finished, the call took no effect."""

    @property
    def already_completed(self) -> bool: ...

    def describe(self) -> str: ...


class PipelineControl(Protocol):
    def get(self, pipeline: str, execution_id: str) -> PipelineFacts | None: ...

    def stop(self, pipeline: str, execution_id: str, reason: str) -> StopOutcome: ...


class StackControl(Protocol):
    def get(self, stack: str) -> StackFacts | None: ...

    def stack_of_change_set(self, change_set: str, stack: str | None = None) -> str | None: ...

    def cancel_update(self, stack: str) -> StopOutcome: ...


# -- hardening (issue 8) --------------------------------------------------------------------------
class TrailReader(Protocol):
    """CloudTrail's durable record of write calls (``adapters.cloudtrail.CloudTrailLookup``)."""

    def write_events(
        self, start: datetime, end: datetime | None = None
    ) -> Iterator[CloudTrailRecord | UnparsedTrailEvent]: ...


class LedgerKeys(Protocol):
    """Which ledger keys exist, many at a time (``adapters.dynamodb.DynamoDBLedger.existing``)."""

    def existing(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]: ...


class ParameterWriter(Protocol):
    """Writes one String parameter (``adapters.ssm.SsmParameterWriter``): the heartbeat's canary."""

    def put(self, name: str, value: str, description: str) -> None: ...


class RuleReader(Protocol):
    """A rule's state, pattern and targets as EventBridge has them (``adapters.eventbridge.EventBridgeRules``)."""

    def read(self, rule: WatchedRule) -> RuleReading: ...


# -- cross-account acting roles (issue 9) ---------------------------------------------------------
class ActingScope(Protocol):
    """Where the acting adapters' calls go (``adapters.accounts.AccountClients``).

    Inside ``acting_in(account, region, reason)`` the account-aware adapters call AWS in that account
    (the function's own credentials for its own account, the member role otherwise); ``acted_as``
    says, for the ledger, which identity that was.
    """

    def acting_in(self, account: str | None, region: str | None, reason: str) -> AbstractContextManager[None]: ...

    def acted_as(self, account: str | None) -> dict[str, str]: ...

    def current_account(self) -> str | None: ...

    def refused(self, account: str | None) -> CrossAccountAccessError | None:
        """The refusal of ``account``'s role, while it is remembered (None: not refused, or at home)."""
        ...
