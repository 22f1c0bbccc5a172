"""Typed errors raised by domain code and adapters."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class ChangeGuardError(Exception):
    """Base of every error ChangeGuard raises on purpose."""


class InvalidEventError(ChangeGuardError):
    """The event is not one this function accepts. Retrying it cannot help (a poison event)."""


class ConfigItemUnavailableError(ChangeGuardError):
    """Config did not answer for an oversized item's history (refused, throttled past the retries):
    retry the invocation; Lambda's retries and then the failure destination keep the event."""


class TicketSourceUnavailableError(ChangeGuardError):
    """The ticket system could not be reached or answered with a server error."""


class TicketUnreadableError(TicketSourceUnavailableError):
    """The ticket system answered, but the one ticket it returned cannot be read: a hand-edited
    status, an unreadable time, a record without its id. The change is UNVERIFIED by itself until
    the ticket is fixed; the source is not down, so no outage is opened and other tickets are still
    read. A subclass, so that whatever handles an unavailable source also handles it."""


class ConfigurationError(ChangeGuardError):
    """Settings or tunable policy are missing or malformed."""


class CalendarUnavailableError(ChangeGuardError):
    """The change calendar could not be read (missing document, SSM error)."""


class LedgerUnavailableError(ChangeGuardError):
    """The ledger did not answer in full (throttled past the retries): retry the whole invocation."""


class CrossAccountAccessError(ChangeGuardError):
    """The function could not act in another account: its role there could not be assumed.

    Carries the account, the role and AWS's error code (``AccessDenied``, ``NoSuchEntity``, ...), so
    the services can ledger and alert "not done in that account" instead of acting in the wrong one.
    """

    def __init__(
        self, account: str, role_arn: str | None, code: str, detail: str = "", *, action: str | None = None
    ) -> None:
        self.account = account
        self.role_arn = role_arn
        self.code = code
        #: Set when the role was assumed but refused this action (a member stack older than the suite).
        self.action = action
        where = f"role {role_arn}" if role_arn else "no acting role is configured"
        if action:
            where = f"{role_arn or 'its own role'} was refused {action}"
        super().__init__(f"cannot act in account {account}: {where} ({code}){': ' + detail if detail else ''}")


class TrailAccessDeniedError(ChangeGuardError):
    """CloudTrail refused ``LookupEvents`` (the role lacks it, or a policy denies the region)."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        super().__init__(f"cloudtrail:LookupEvents refused ({code}){': ' + detail if detail else ''}")


class QuarantineIncompleteError(ChangeGuardError):
    """Containment was applied but the resource is still not contained (checked by describing it again):
    for instance a security group rule changed between the read and the revoke stays open."""


def first_error(exc: ValidationError) -> str:
    """pydantic's findings in one line: ``<n> error(s); first at '<field>': <message>``.

    Never ``str(exc)``: pydantic quotes the input there, and an event may carry secrets (issue 8).
    Only the location and message of the first finding are kept, with neither the input nor a URL.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if not errors:
        return "invalid"
    where = ".".join(str(part) for part in errors[0]["loc"]) or "<root>"
    return f"{len(errors)} error(s); first at '{where}': {errors[0]['msg']}"
