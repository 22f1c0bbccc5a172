"""Who is who, for segregation of duties: the approver and the actor must be different people.

Identities from different systems are compared as *people*: an STS ARN, an IAM user name, an
SSO user name (usually an e-mail address), a Jira accountId or e-mail address, a ServiceNow
user name or e-mail. Two identities are the same person when they are equal (case-insensitive)
after the configurable ``identity_map`` (Policy) has mapped each to its canonical name. Nothing
is guessed beyond that: an e-mail's local part is never matched against an IAM user name, since a
wrong guess could hide a self-approval behind someone else's name or invent one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from changeguard.domain.change import Actor
from changeguard.domain.tickets import Approval


def _norm(value: str) -> str:
    return value.strip().lower()


def _lowered(mapping: Mapping[str, str]) -> dict[str, str]:
    return {_norm(k): _norm(v) for k, v in mapping.items()}


def person_of(identity: str, mapping: Mapping[str, str]) -> str:
    """The person behind an identity string (ARN, SSO user name, e-mail, IAM user name, vendor id).

    ``mapping`` (configurable) wins; otherwise STS assumed-role ARNs resolve to their
    session name (SSO sessions are named after the user, usually an e-mail address),
    STS federated-user ARNs (GetFederationToken) to the federated user's name and IAM
    user ARNs to the user name.
    """
    lowered = _lowered(mapping)
    ident = _norm(identity)
    if ident in lowered:
        return lowered[ident]
    if ident.startswith("arn:"):
        resource = ident.split(":", 5)[-1]
        if (resource.startswith("assumed-role/") and resource.count("/") >= 2) or resource.startswith(
            ("user/", "federated-user/")
        ):
            ident = resource.rsplit("/", 1)[1]
        elif resource == "root":
            ident = "root@" + identity.split(":")[4]
    return lowered.get(ident, ident)


def actor_people(actor: Actor, mapping: Mapping[str, str]) -> set[str]:
    """Every person the actor could be (its ARN, its session, its user name, its source identity).

    The role that issued a session is not a person, so its ARN is left out; an automation
    session's name (often a pipeline execution id) is left out for the same reason.
    """
    people: set[str] = set()
    for ident in (actor.arn, actor.user_name, actor.source_identity):
        if ident:
            people.add(person_of(ident, mapping))
    if actor.session_name and not actor.automation:
        people.add(person_of(actor.session_name, mapping))
    return people


def approver_identities(approval: Approval | str) -> tuple[str, ...]:
    """Every identity an approval is known by: the approver and the vendor aliases."""
    if isinstance(approval, str):
        return (approval,)
    return tuple(i for i in (approval.approver, *approval.aliases) if i and i.strip())


def approver_person(approval: Approval | str, mapping: Mapping[str, str]) -> str:
    """The one person behind an approval, for counting distinct approvers.

    An identity the map names wins (operators map opaque ids such as Jira accountIds);
    otherwise the primary identity (an e-mail address where the vendor gives one) decides.
    """
    lowered = _lowered(mapping)
    identities = approver_identities(approval)
    for ident in identities:
        if _norm(ident) in lowered:
            return lowered[_norm(ident)]
    return person_of(identities[0], mapping) if identities else ""


def _is_actor(approval: Approval | str, mine: set[str], mapping: Mapping[str, str]) -> bool:
    if approver_person(approval, mapping) in mine:
        return True
    return any(person_of(ident, mapping) in mine for ident in approver_identities(approval))


def is_self_approved(actor: Actor, approvers: Iterable[Approval | str], mapping: Mapping[str, str]) -> bool:
    """True when any identity of any approver is a person the actor could be."""
    mine = actor_people(actor, mapping)
    return any(_is_actor(a, mine, mapping) for a in approvers)


def independent_approvers(actor: Actor, approvers: Iterable[Approval | str], mapping: Mapping[str, str]) -> set[str]:
    """The distinct people, other than the actor, who approved (what ``required_approvals`` counts)."""
    mine = actor_people(actor, mapping)
    return {approver_person(a, mapping) for a in approvers if not _is_actor(a, mine, mapping)}
