"""Building adapters from wiring: the one place that decides which implementation a port gets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from changeguard.adapters.dynamodb import DynamoDBLedger, DynamoDBTicketSource
from changeguard.domain.errors import ConfigurationError
from changeguard.domain.ledger import DayShards
from changeguard.domain.policy import Policy
from changeguard.ports import CalendarGateReader, CalendarReader, TicketSource
from changeguard.settings import Wiring

if TYPE_CHECKING:
    from changeguard.adapters.accounts import AccountClients
    from changeguard.domain.self_protection import SuiteResources
    from changeguard.services.tag_enforcement import Enforcer


def ledger(wiring: Wiring) -> DynamoDBLedger:
    return DynamoDBLedger(wiring.ledger_table_name, day_shards=DayShards.parse(wiring.ledger_day_shards))


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


# -- change-calendar gate (issue 4) ---------------------------------------------------------------
def calendar_gate_reader(policy: Policy) -> CalendarGateReader | None:
    """The same cached Change Calendar reader, as the gate reads it (state, next transition)."""
    from changeguard.adapters.ssm import SsmChangeCalendar

    found = calendar_reader(policy)
    return found if isinstance(found, SsmChangeCalendar) else None


# -- hardening (issue 8) --------------------------------------------------------------------------
def suite_resources(wiring: Wiring) -> SuiteResources:
    """The suite's own resources (self-protection), from the names the template gives them."""
    from changeguard.domain.self_protection import SuiteResources

    prefixes = list(wiring.suite_resource_prefixes)
    if wiring.stack_name:
        prefixes.append(f"{wiring.stack_name}-")
    return SuiteResources.from_names(name_prefixes=prefixes, stack_name=wiring.stack_name)


# -- cross-account acting roles (issue 9) ---------------------------------------------------------
def account_clients(wiring: Wiring) -> AccountClients:
    """Clients in the account an event came from: own credentials at home, the acting role elsewhere."""
    from changeguard.adapters.accounts import AccountClients, ActingRole

    if wiring.acting_role_name is None and not wiring.suite_role_prefix:
        # No wiring to tell the own account from others (local tools): every call stays at home.
        return AccountClients(function=wiring.function_name, role=None)
    role = ActingRole.from_wiring(wiring.suite_role_prefix, wiring.acting_role_name, wiring.acting_external_id)
    return AccountClients(function=wiring.function_name, role=role)


# -- tag enforcement and quarantine (issue 6) -----------------------------------------------------
def enforcer(wiring: Wiring, function: str, accounts: AccountClients) -> Enforcer:
    """What carries out a tag decision, the same for the event function and the sweep."""
    from changeguard.services.tag_enforcement import Enforcer

    return Enforcer(
        function=function,
        ledger=ledger(wiring),
        suite_role_prefix=wiring.suite_role_prefix,
        stack_name=wiring.stack_name,
        scope=accounts,
    )
