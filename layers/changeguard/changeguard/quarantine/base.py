"""What every quarantine class declares and does, and the registry it joins.

A class per resource type, as in Cloud Custodian's registry:

* ``type`` (``ec2:instance``), ``config_type`` (``AWS::EC2::Instance``), ``event_source``;
* ``permissions``: every IAM action its code calls (a test checks the template grants them), and
  ``containment_only``: those only ``quarantine()`` calls. Only the scheduled sweep quarantines, so
  the event-driven function's role is granted ``permissions`` minus ``containment_only``;
* ``id_paths``: where its id sits in each CloudTrail event, by eventName (data, not code);
* ``read()``: describe it; None when it cannot be read, and then the suite never acts on it;
* ``snapshot()``: the state quarantine will save (written to the ledger before any change);
* ``quarantine()``: contain it, returning the saved state; a second call changes nothing;
* ``release(saved)``: restore exactly what was saved when the resource is as quarantine left
  it (RESTORED), report NOOP when it already is as before, and DRIFT, overwriting nothing, when
  someone changed it in between.

Adding a type (RDS, say) is one module with one class in this package plus one sample event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from changeguard.adapters.clients import acting_client
from changeguard.domain.quarantine import ReleaseResult, ResourceRef
from changeguard.domain.resources import walk

if TYPE_CHECKING:
    from changeguard.adapters.accounts import AccountClients


class ResourceState(BaseModel):
    """What ``read()`` saw: the resource's tags and the configuration quarantine changes."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    ref: ResourceRef
    name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)


class ReleaseOutcome(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    result: ReleaseResult
    detail: str
    calls: tuple[str, ...] = ()


class QuarantineSettings(BaseModel):
    """What quarantine needs beyond the resource: who must never be locked out."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    suite_role_prefix: str = ""  # arn:aws:iam::<account>:role/changeguard/
    break_glass_role_arns: tuple[str, ...] = ()


class QuarantineHandler(ABC):
    """One resource type's quarantine. Subclasses are registered with :func:`register`."""

    type: ClassVar[str]
    config_type: ClassVar[str]
    event_source: ClassVar[str]
    service: ClassVar[str]  # boto3 service name
    permissions: ClassVar[tuple[str, ...]]
    containment_only: ClassVar[tuple[str, ...]] = ()
    id_paths: ClassVar[Mapping[str, tuple[str, ...]]]
    #: The ``resourceType`` of the EC2 tag specifications that tag this type, None for other services:
    #: only those tags of a create call count as the resource's own.
    tag_spec_type: ClassVar[str | None] = None
    #: One line for people: what quarantine does to this type.
    describes: ClassVar[str]
    #: What the alert must tell people about this type's quarantine.
    notes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, api: Any | None = None, accounts: AccountClients | None = None) -> None:
        self._api = api
        self._accounts = accounts

    def api(self, ref: ResourceRef | None = None) -> Any:
        """The injected client, else the one for the resource's account and region (issue 9: a member
        account's resource through the function's acting role there, never the central account's)."""
        if self._api is not None:
            return self._api
        return acting_client(
            self.service,
            self._accounts,
            account=ref.account if ref is not None else None,
            region=(ref.region or None) if ref is not None else None,
        )

    # -- naming -------------------------------------------------------------------------------
    @abstractmethod
    def normalize_id(self, value: str) -> str | None:
        """The resource id in ``value`` (an id or an ARN), or None when it is not this type's."""

    @abstractmethod
    def arn(self, resource_id: str, account: str, region: str) -> str: ...

    @abstractmethod
    def owns_arn(self, arn: str) -> bool:
        """Whether ``arn`` names a resource of this type."""

    def ref(self, resource_id: str, account: str, region: str) -> ResourceRef:
        return ResourceRef(
            type=self.type,
            resource_id=resource_id,
            arn=self.arn(resource_id, account, region),
            account=account,
            region=region,
        )

    def ref_from_arn(self, arn: str, account: str, region: str) -> ResourceRef | None:
        if not self.owns_arn(arn):
            return None
        resource_id = self.normalize_id(arn)
        if resource_id is None:
            return None
        parts = arn.split(":", 5)
        return self.ref(resource_id, parts[4] or account, parts[3] or region)

    def ids_in(self, event_name: str, record: Mapping[str, Any]) -> list[str]:
        """Ids of this type a CloudTrail record names, through ``id_paths`` (order kept)."""
        found: dict[str, None] = {}
        for path in self.id_paths.get(event_name, ()):
            for value in walk(record, path):
                if isinstance(value, str) and value:
                    resource_id = self.normalize_id(value)
                    if resource_id:
                        found[resource_id] = None
        return list(found)

    # -- reading and acting -------------------------------------------------------------------
    @abstractmethod
    def read(self, ref: ResourceRef) -> ResourceState | None:
        """Describe the resource; None when it cannot be read (gone, denied, malformed)."""

    @abstractmethod
    def snapshot(self, ref: ResourceRef, state: ResourceState, settings: QuarantineSettings) -> dict[str, Any]:
        """The state to save (pure: no calls). Includes what quarantine will leave behind."""

    @abstractmethod
    def quarantine(
        self,
        ref: ResourceRef,
        state: ResourceState,
        settings: QuarantineSettings,
        saved: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Contain the resource and return the saved state (``saved`` when the ledger has it)."""

    @abstractmethod
    def release(self, ref: ResourceRef, saved: dict[str, Any], *, dry_run: bool = False) -> ReleaseOutcome:
        """Restore ``saved`` if the resource is as quarantine left it; never overwrite drift."""

    @abstractmethod
    def set_tags(self, ref: ResourceRef, tags: Mapping[str, str]) -> None: ...

    @abstractmethod
    def remove_tags(self, ref: ResourceRef, keys: list[str]) -> None: ...


REGISTRY: dict[str, type[QuarantineHandler]] = {}
H = TypeVar("H", bound=type[QuarantineHandler])


def register(cls: H) -> H:
    """Add a quarantine class to the registry under its ``type``."""
    existing = REGISTRY.get(cls.type)
    if existing is not None and existing is not cls:
        raise ValueError(f"quarantine type {cls.type} is registered twice ({existing.__name__}, {cls.__name__})")
    REGISTRY[cls.type] = cls
    return cls


def error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code", ""))
