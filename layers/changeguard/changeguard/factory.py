"""Building adapters from wiring: the one place that decides which implementation a port gets."""

from __future__ import annotations

from changeguard.adapters.dynamodb import DynamoDBLedger, DynamoDBTicketSource
from changeguard.domain.errors import ConfigurationError
from changeguard.domain.policy import Policy
from changeguard.ports import CalendarReader, TicketSource
from changeguard.settings import Wiring


def ledger(wiring: Wiring) -> DynamoDBLedger:
    return DynamoDBLedger(wiring.ledger_table_name)


def ticket_source(wiring: Wiring) -> TicketSource:
    if wiring.ticket_source == "dynamodb":
        if not wiring.ticket_table_name:
            raise ConfigurationError("TICKET_TABLE_NAME is required for the DynamoDB ticket source")
        return DynamoDBTicketSource(wiring.ticket_table_name)
    if wiring.ticket_source == "jira":
        from changeguard.adapters.jira import JiraTicketSource

        return JiraTicketSource.from_wiring(wiring)
    from changeguard.adapters.servicenow import ServiceNowTicketSource

    return ServiceNowTicketSource.from_wiring(wiring)


_calendars: dict[tuple[str, ...], object] = {}


def calendar_reader(policy: Policy) -> CalendarReader | None:
    """The Change Calendar reader for the policy's calendar names (cached while warm)."""
    names = policy.change_calendar_names
    if not names:
        return None
    from changeguard.adapters.ssm import SsmChangeCalendar

    found = _calendars.get(names)
    if not isinstance(found, SsmChangeCalendar):
        found = SsmChangeCalendar(names)
        _calendars[names] = found
    return found
