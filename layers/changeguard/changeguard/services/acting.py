"""Acting in the account an event came from (issue 9): the scope, and what a refused role leaves behind.

A central function acts in a member account through the role it assumes there
(``adapters.accounts``). When that role cannot be assumed (denied, missing, not configured), the
change still gets its verdict, nothing is done anywhere else instead, and the team is told, once a
day per account and function, that ChangeGuard could not act in that account: the ledger keeps the
fact under ``acting:<account>:<day>`` (entry ``DENIED#<function>``) with its alert, in one
conditional append, so a sweep over many resources of that account raises one alert, not one each.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from datetime import datetime

from changeguard.domain.alerts import Alert, alert_entry
from changeguard.domain.errors import CrossAccountAccessError
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.verdicts import Severity
from changeguard.ports import ActingScope, Ledger

NOT_ACTED = "NOT_ACTED"
ALERT_KIND = "cross-account"
#: AWS error codes that mean "not allowed here" once the role is assumed: IAM or a service control
#: policy denying the action or the region, or a region the account has not enabled (its STS
#: credentials are not valid there). A sweep reports these per account, not as a failure of the run.
REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnauthorizedException",
        "AuthFailure",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "OptInRequired",
    }
)


def refusal_of(
    exc: BaseException, scope: ActingScope | None, account: str | None, region: str | None
) -> CrossAccountAccessError | None:
    """``exc`` as a refused acting role when AWS answered one of :data:`REFUSED_CODES`, else None."""
    if isinstance(exc, CrossAccountAccessError):
        return exc
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    code = str(error.get("Code") or "") if isinstance(error, dict) else ""
    if code not in REFUSED_CODES:
        return None
    operation = str(getattr(exc, "operation_name", "") or "the call")
    where = f" in {region}" if region else ""
    return refused_in(scope, account, code, f"{operation}{where}")


def refused_in(scope: ActingScope | None, account: str | None, code: str, action: str) -> CrossAccountAccessError:
    """``action`` refused (``code``) in ``account`` (None: the function's own), as a refused acting
    role: the account, and the role the function acted as there."""
    owner = account or (scope.current_account() if scope is not None else None) or "this account"
    role = scope.acted_as(account).get("role") if scope is not None and account else None
    return CrossAccountAccessError(owner, role, code, action=action)


def acting_in(
    scope: ActingScope | None, account: str | None, region: str | None, reason: str
) -> AbstractContextManager[None]:
    """The scope's ``acting_in``, or nothing to do when the service was built without one (fakes)."""
    return scope.acting_in(account, region, reason) if scope is not None else nullcontext()


def acted_as(scope: ActingScope | None) -> dict[str, str]:
    """Who acts in the scope's account now (the ledger's evidence): the function's role, or the member
    role session."""
    if scope is None:
        return {"account": "", "identity": "function role"}
    return scope.acted_as(scope.current_account())


def not_acted_reason(exc: CrossAccountAccessError, what: str) -> str:
    if exc.action:
        return f"could not {what} in account {exc.account}: {exc.role_arn or 'its own role'} was refused {exc.action} ({exc.code})"
    return (
        f"could not {what} in account {exc.account}: {exc.code} assuming {exc.role_arn or 'no role (not configured)'}"
    )


def report_denied(
    ledger: Ledger,
    function: str,
    exc: CrossAccountAccessError,
    *,
    what: str,
    cause: str,
    event_time: datetime,
    now: datetime,
    region: str | None = None,
    resources: tuple[str, ...] = (),
) -> list[str]:
    """Ledger and alert, once per account, function and day, that ``what`` could not be done there.

    Returns the alert id when this call raised it (empty when today's alert already exists)."""
    day = now.strftime("%Y-%m-%d")
    change_id = f"acting:{exc.account}:{day}"
    alert = Alert(
        alert_id=Alert.make_id(change_id, function, ALERT_KIND),
        kind=ALERT_KIND,
        function=function,
        severity=Severity.HIGH,
        verdict=NOT_ACTED,
        subject=f"ChangeGuard cannot act in account {exc.account}: {exc.code}",
        summary=(
            f"{function} could not {what} in account {exc.account} ({cause}): "
            + (
                f"{exc.role_arn or 'its own role'} was refused {exc.action} ({exc.code})."
                if exc.action
                else f"assuming {exc.role_arn or 'its acting role'} failed with {exc.code}."
            )
            + " Nothing was done in that account"
            " and nothing elsewhere instead; the verdicts are recorded. Until the role can be assumed,"
            " ChangeGuard only reports that account's changes."
        ),
        change_id=change_id,
        event_time=event_time,
        account=exc.account,
        region=region,
        resource_type="iam:role",
        resources=(*((exc.role_arn,) if exc.role_arn else ()), *resources),
        reasons=(str(exc),),
        actions=("recorded the verdict; took no action in the account",),
        remediation=(
            "Deploy member/member-account.yaml to the account (its StackSet instance in the central region),"
            " check its trust policy (OrganizationId, ExternalId) and the central stack's OrganizationId."
        ),
        details={"account": exc.account, "role": exc.role_arn, "error": exc.code, "first_cause": cause},
    )
    fact = LedgerEntry(
        change_id=change_id,
        entry=f"DENIED#{function}",
        kind=EntryKind.OUTAGE,  # the role is unavailable, like a ticket source that cannot answer
        function=function,
        event_time=event_time,
        recorded_at=now,
        verdict=NOT_ACTED,
        severity=Severity.HIGH.value,
        account=exc.account,
        region=region,
        body={"role": exc.role_arn, "error": exc.code, "what": what, "first_cause": cause},
    )

    new = ledger.append([fact, alert_entry(alert, event_time, now)])
    return [alert.alert_id] if new else []


def report_refusal(
    ledger: Ledger,
    function: str,
    exc: CrossAccountAccessError,
    *,
    what: str,
    cause: str,
    now: datetime,
    region: str | None = None,
) -> tuple[str, list[str]]:
    """A sweep's refusal: the reason its outcome gives, and the day's alert (:func:`report_denied`)."""
    ids = report_denied(ledger, function, exc, what=what, cause=cause, event_time=now, now=now, region=region)
    return not_acted_reason(exc, what), ids
