"""What the EC2 resource types share: prefixed ids, ``arn:<partition>:ec2:<region>:<account>:<kind>/<id>``
ARNs, the CloudTrail paths of tagged ids, and tags through CreateTags and DeleteTags."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from changeguard.domain.partition import partition_of
from changeguard.domain.quarantine import ResourceRef
from changeguard.quarantine.base import QuarantineHandler

#: Where CreateTags and DeleteTags name their resources (both CloudTrail shapes).
TAG_PATHS = ("requestParameters.resourcesSet.items[].resourceId", "requestParameters.resources[]")


class Ec2Resource(QuarantineHandler):
    """Naming and tagging for one EC2 resource kind; subclasses quarantine it."""

    event_source = "ec2.amazonaws.com"
    service = "ec2"
    #: The resource part of the ARN before the id (``instance``, ``security-group``).
    arn_kind: ClassVar[str]
    #: What every id of the kind starts with (``i-``, ``sg-``).
    id_prefix: ClassVar[str]

    # -- naming -------------------------------------------------------------------------------
    def normalize_id(self, value: str) -> str | None:
        if value.startswith("arn:"):
            resource = value.split(":", 5)[-1]
            value = resource.split("/", 1)[1] if resource.startswith(f"{self.arn_kind}/") else ""
        return value if value.startswith(self.id_prefix) else None

    def arn(self, resource_id: str, account: str, region: str) -> str:
        return f"arn:{partition_of(region)}:ec2:{region}:{account}:{self.arn_kind}/{resource_id}"

    def owns_arn(self, arn: str) -> bool:
        return arn.startswith("arn:aws") and ":ec2:" in arn and f":{self.arn_kind}/" in arn

    # -- tags ---------------------------------------------------------------------------------
    def set_tags(self, ref: ResourceRef, tags: Mapping[str, str]) -> None:
        self.api(ref).create_tags(Resources=[ref.resource_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    def remove_tags(self, ref: ResourceRef, keys: list[str]) -> None:
        if keys:
            self.api(ref).delete_tags(Resources=[ref.resource_id], Tags=[{"Key": k} for k in keys])
