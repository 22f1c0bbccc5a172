"""Who is who, for segregation of duties: the approver and the actor must be different people."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from changeguard.domain.change import Actor


def _norm(value: str) -> str:
    return value.strip().lower()


def person_of(identity: str, mapping: Mapping[str, str]) -> str:
    """The person behind an identity string (ARN, SSO user name, e-mail, IAM user name).

    ``mapping`` (configurable) wins; otherwise STS assumed-role ARNs resolve to their
    session name (SSO sessions are named after the user, usually an e-mail address)
    and IAM user ARNs to the user name.
    """
    lowered = {_norm(k): _norm(v) for k, v in mapping.items()}
    ident = _norm(identity)
    if ident in lowered:
        return lowered[ident]
    if ident.startswith("arn:"):
        resource = ident.split(":", 5)[-1]
        if (resource.startswith("assumed-role/") and resource.count("/") >= 2) or resource.startswith("user/"):
            ident = resource.rsplit("/", 1)[1]
        elif resource == "root":
            ident = "root@" + identity.split(":")[4]
    return lowered.get(ident, ident)


def actor_people(actor: Actor, mapping: Mapping[str, str]) -> set[str]:
    """Every person the actor could be (its ARN, its session, its user name, its source identity)."""
    people: set[str] = set()
    for ident in (actor.arn, actor.session_issuer_arn and None, actor.user_name, actor.source_identity):
        if ident:
            people.add(person_of(ident, mapping))
    if actor.session_name and not actor.automation:
        people.add(person_of(actor.session_name, mapping))
    return people


def is_self_approved(actor: Actor, approvers: Iterable[str], mapping: Mapping[str, str]) -> bool:
    mine = actor_people(actor, mapping)
    return any(person_of(a, mapping) in mine for a in approvers)
