"""Typed errors raised by domain code and adapters."""


class ChangeGuardError(Exception):
    """Base of every error ChangeGuard raises on purpose."""


class InvalidEventError(ChangeGuardError):
    """The event is not one this function accepts. Retrying it cannot help (a poison event)."""


class TicketSourceUnavailableError(ChangeGuardError):
    """The ticket system could not be reached or answered with a server error."""


class ConfigurationError(ChangeGuardError):
    """Settings or tunable policy are missing or malformed."""


class CalendarUnavailableError(ChangeGuardError):
    """The change calendar could not be read (missing document, SSM error)."""


class LedgerUnavailableError(ChangeGuardError):
    """The ledger did not answer in full (throttled past the retries): retry the whole invocation."""
