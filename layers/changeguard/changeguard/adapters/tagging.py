"""Current tags of resources (Resource Groups Tagging API) and of CloudFormation stacks."""

from __future__ import annotations

from typing import Any

from changeguard.adapters.clients import client


class AwsTagReader:
    def __init__(self, tagging: Any | None = None, cloudformation: Any | None = None) -> None:
        self._tagging = tagging
        self._cfn = cloudformation
        self._cache: dict[str, dict[str, str] | None] = {}

    def tags_of(self, arn: str) -> dict[str, str] | None:
        if arn in self._cache:
            return self._cache[arn]
        from botocore.exceptions import ClientError

        tagging = self._tagging or client("resourcegroupstaggingapi")
        try:
            resp = tagging.get_resources(ResourceARNList=[arn])
        except ClientError:
            return None
        tags: dict[str, str] = {}
        for mapping in resp.get("ResourceTagMappingList", []):
            if mapping.get("ResourceARN") == arn:
                tags = {t["Key"]: t.get("Value", "") for t in mapping.get("Tags", [])}
        self._cache[arn] = tags
        return tags

    def stack_tags(self, stack: str) -> dict[str, str] | None:
        key = f"stack:{stack}"
        if key in self._cache:
            return self._cache[key]
        from botocore.exceptions import ClientError

        cfn = self._cfn or client("cloudformation")
        try:
            stacks = cfn.describe_stacks(StackName=stack).get("Stacks", [])
        except ClientError:
            return None
        tags = {t["Key"]: t.get("Value", "") for t in (stacks[0].get("Tags", []) if stacks else [])}
        self._cache[key] = tags
        return tags
