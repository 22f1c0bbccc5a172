"""Required tags: which keys a resource must carry, which values count, and what a call did to them.

Every resource must say which change created it and who owns it. A blank value counts as
missing, and the change-ticket tag must hold a ticket id (``Policy.ticket_pattern``, whole
value). Tags a call carries in its request are judged first: tags reach the services' read
APIs late, so re-reading a resource right after its creation call would report it untagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict

from changeguard.domain.change import request_tags
from changeguard.domain.policy import Policy

# The suite's own tag keys. Values stay inside the character set every tagging API accepts
# (letters, digits, spaces and + - = . _ : / @), so S3 and Lambda take them too.
PREFIX = "changeguard:"
QUARANTINE_AFTER = "changeguard:quarantine-after"
QUARANTINE_REF = "changeguard:quarantine-ref"
EXEMPT = "changeguard:exempt"
MANAGED = "changeguard:managed"
CFN_STACK_NAME = "aws:cloudformation:stack-name"
SUITE_PATH = "/changeguard/"

_FALSE = frozenset({"false", "no", "0", "off"})


class _Own(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class TagEventKind(StrEnum):
    """What a call does to a resource's tags, which decides how its request is read."""

    CREATE = "create"  # the request's tags are the resource's first tags
    ADD = "add"  # the request's tags are added to the current ones
    REPLACE = "replace"  # the request's tags replace every current tag (S3 PutBucketTagging)
    REMOVE = "remove"  # the request names keys that go
    REMOVE_ALL = "remove_all"  # every tag goes (S3 DeleteBucketTagging)
    CHANGE = "change"  # another change to the resource; its current tags decide
    CONFIG = "config"  # an AWS Config evaluation; the resource's current tags decide
    SWEEP = "sweep"  # the scheduled sweep; the resource's current tags decide


# Calls that trigger tag enforcement, by CloudTrail eventName (data, not code). Creates of types
# that have no quarantine class still get judged and alerted on.
TAG_EVENTS: Mapping[str, TagEventKind] = {
    # creates
    "RunInstances": TagEventKind.CREATE,
    "CreateSecurityGroup": TagEventKind.CREATE,
    "CreateBucket": TagEventKind.CREATE,
    "CreateFunction20150331": TagEventKind.CREATE,
    "CreateDBInstance": TagEventKind.CREATE,
    "CreateTable": TagEventKind.CREATE,
    "CreateRole": TagEventKind.CREATE,
    # tags added (a marked resource may now comply: release)
    "CreateTags": TagEventKind.ADD,
    "TagResource": TagEventKind.ADD,
    "TagResource20170331v2": TagEventKind.ADD,
    "AddTagsToResource": TagEventKind.ADD,
    "TagRole": TagEventKind.ADD,
    "PutBucketTagging": TagEventKind.REPLACE,
    # tags removed
    "DeleteTags": TagEventKind.REMOVE,
    "UntagResource": TagEventKind.REMOVE,
    "UntagResource20170331v2": TagEventKind.REMOVE,
    "RemoveTagsFromResource": TagEventKind.REMOVE,
    "UntagRole": TagEventKind.REMOVE,
    "DeleteBucketTagging": TagEventKind.REMOVE_ALL,
    # other changes that make an untagged resource riskier
    "AuthorizeSecurityGroupIngress": TagEventKind.CHANGE,
}


class TagProblem(_Own):
    key: str
    problem: str  # "missing" or "invalid"
    detail: str


class TagEvaluation(_Own):
    """Whether a set of tags satisfies the required-tag policy, and every reason it does not."""

    compliant: bool
    problems: tuple[TagProblem, ...] = ()
    source: str = "current"  # which tags were judged: "request", "current" or "request+current"

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.problems if p.problem == "missing")

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(p.detail for p in self.problems)


def evaluate(tags: Mapping[str, str], policy: Policy, *, source: str = "current") -> TagEvaluation:
    """Judge ``tags`` against ``policy.required_tag_keys`` and the value rules."""
    problems: list[TagProblem] = []
    for key in policy.required_tag_keys:
        value = (tags.get(key) or "").strip()
        if not value:
            problems.append(TagProblem(key=key, problem="missing", detail=f"tag {key} is missing or blank"))
        elif key == policy.ticket_tag_key and not policy.ticket_pattern.fullmatch(value):
            problems.append(
                TagProblem(
                    key=key,
                    problem="invalid",
                    detail=f"tag {key}={value!r} is not a change ticket id ({policy.ticket_id_pattern})",
                )
            )
    return TagEvaluation(compliant=not problems, problems=tuple(problems), source=source)


def judge_tags(
    kind: TagEventKind,
    current: Mapping[str, str],
    policy: Policy,
    *,
    requested: Mapping[str, str] | None = None,
    removed: Iterable[tuple[str, str | None]] = (),
) -> tuple[TagEvaluation, dict[str, str]]:
    """The evaluation and the tags it judged: the request first, then the resource's current tags.

    ``removed`` lists (key, value) pairs; a value means "only if the tag has that value" (EC2
    DeleteTags semantics).
    """
    requested = dict(requested or {})
    if kind is TagEventKind.CREATE and requested:
        first = evaluate(requested, policy, source="request")
        if first.compliant:
            return first, requested
        merged = {**current, **requested}
        return evaluate(merged, policy, source="request+current"), merged
    if kind is TagEventKind.ADD and requested:
        merged = {**current, **requested}
        return evaluate(merged, policy, source="request+current"), merged
    if kind is TagEventKind.REPLACE:
        return evaluate(requested, policy, source="request"), requested
    if kind is TagEventKind.REMOVE_ALL:
        return evaluate({}, policy, source="request"), {}
    if kind is TagEventKind.REMOVE:
        left = dict(current)
        for key, value in removed:
            if key in left and (value is None or left[key] == value):
                del left[key]
        return evaluate(left, policy, source="request+current"), left
    return evaluate(current, policy), dict(current)


def requested_tags(parameters: Mapping[str, Any] | None, resource_type: str | None = None) -> dict[str, str]:
    """Tags a create or tag call carries (``request_tags``, plus the SDK-style ``tagSpecifications``).

    ``resource_type`` (an EC2 ``TagSpecification`` type: "instance", "security-group") keeps only the
    specifications that tag that type: a RunInstances call's "volume" tags go on its volumes, never
    on the instance, so they must not make the instance compliant.
    """
    tags = request_tags(dict(parameters) if parameters else None, resource_type)
    for spec in (parameters or {}).get("tagSpecifications") or []:
        if isinstance(spec, Mapping):
            named = spec.get("resourceType", spec.get("ResourceType"))
            if resource_type is None or not isinstance(named, str) or named == resource_type:
                tags.update(request_tags({"tags": spec.get("tags", spec.get("Tags"))}))
    return tags


def removed_tags(parameters: Mapping[str, Any] | None) -> list[tuple[str, str | None]]:
    """(key, value-or-None) pairs a tag-removal call names, in every shape the services use."""
    if not parameters:
        return []
    found: list[tuple[str, str | None]] = []
    for key in ("tagKeys", "TagKeys", "keys"):
        value = parameters.get(key)
        if isinstance(value, list):
            found += [(str(k), None) for k in value if isinstance(k, str)]
    for key in ("tagSet", "tags", "Tags"):
        value = parameters.get(key)
        if isinstance(value, Mapping):
            value = value.get("items", [])
        if isinstance(value, list):
            for item in value:
                if not isinstance(item, Mapping):
                    continue
                name = item.get("key", item.get("Key"))
                tag_value = item.get("value", item.get("Value"))
                if isinstance(name, str):
                    found.append((name, str(tag_value) if tag_value not in (None, "") else None))
    return found


def exempt_by_tag(tags: Mapping[str, str]) -> str | None:
    """Why the resource is exempt by its ``changeguard:exempt`` tag, or None."""
    value = tags.get(EXEMPT)
    if value is None or value.strip().lower() in _FALSE:
        return None
    return f"tagged {EXEMPT}={value}" if value.strip() else f"tagged {EXEMPT}"


def exempt_principal(principal_arns: Iterable[str], policy: Policy) -> str | None:
    """Why the caller is exempt (``exempt_principal_arns``, wildcards allowed), or None."""
    for arn in principal_arns:
        for pattern in policy.exempt_principal_arns:
            if fnmatchcase(arn, pattern):
                return f"exempt principal {arn} (matches {pattern})"
    return None


def suite_owned(
    arn: str,
    name: str | None,
    tags: Mapping[str, str],
    *,
    stack_name: str | None,
) -> str | None:
    """Why the resource is the suite's own (never quarantined), or None."""
    if (tags.get(MANAGED) or "").strip().lower() == "true":
        return f"tagged {MANAGED}=true"
    if stack_name and tags.get(CFN_STACK_NAME) == stack_name:
        return f"created by the {stack_name} stack"
    if f":role{SUITE_PATH}" in arn:
        return f"under the suite's role path {SUITE_PATH}"
    for candidate in (name, arn.rsplit(":", 1)[-1].rsplit("/", 1)[-1]):
        if not candidate:
            continue
        if candidate.startswith("changeguard-") or (stack_name and candidate.startswith(f"{stack_name}-")):
            return f"named {candidate} (the suite's own)"
    return None


def format_time(moment: datetime) -> str:
    """``2026-11-22T03:00:00Z``: second precision, UTC, tag-safe."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """A ``quarantine-after`` value, or None when absent or unreadable (it is then ignored)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
