"""The reconciliation sweep's filter: the write calls the correlator's rule would have delivered (issue 8).

CloudTrail delivers to EventBridge best effort, so some changes never reach the correlator. The
sweep reads the durable record (CloudTrail ``LookupEvents``) and judges every write call missing
from the ledger. It must pick exactly the calls the ``CloudTrailWriteCalls`` rule passes, or it
would judge what the live path ignores (or miss what it judges): the same five conditions, as data
here and as a pattern in template.yaml (a test checks that the two agree).
"""

from __future__ import annotations

from collections.abc import Iterable

from changeguard.domain.change import DATA_EVENT_CATEGORIES
from changeguard.models.cloudtrail import CloudTrailRecord

#: The detail-type "AWS API Call via CloudTrail" is EventBridge's name for these records.
API_CALL_EVENT_TYPES = frozenset({"AwsApiCall"})


def is_correlated_write(
    record: CloudTrailRecord, event_sources: Iterable[str], suite_role_prefixes: Iterable[str]
) -> bool:
    """Whether the correlator's rule passes ``record``: an API call of a correlated source, not
    failed, not read-only (or from an old schema without ``readOnly``), not a data or network-activity
    event (old schemas have no ``eventCategory``), not by the suite's own roles."""
    if record.eventType is not None and record.eventType not in API_CALL_EVENT_TYPES:
        return False
    if record.eventCategory in DATA_EVENT_CATEGORIES:
        return False
    if record.eventSource not in set(event_sources) or record.errorCode is not None or record.readOnly:
        return False
    ctx = record.userIdentity.sessionContext
    issuer = ctx.sessionIssuer.arn if ctx and ctx.sessionIssuer else None
    return not (issuer and any(p and issuer.startswith(p) for p in suite_role_prefixes))
